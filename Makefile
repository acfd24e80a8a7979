# Two commands do everything on a fresh machine:
#   make serve   install what the server needs and start it on 127.0.0.1:8000
#   make test    install what the tests need and run lint, type checks and the tests
#   (make test-long runs the long variants of the tests)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
HOST ?= 127.0.0.1
PORT ?= 8000
VENDOR := app/static/vendor/msgpack.min.js
CHROMIUM := /usr/bin/chromium
NFT := /usr/sbin/nft
HAPROXY := /usr/sbin/haproxy
COMPOSE := /usr/bin/docker-compose
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve test test-long lint typecheck bench clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.serve-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml constraints.txt | $(PY)
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@ $(VENV)/.serve-installed

# The browser player's msgpack decoder, from the npm registry at the version package-lock.json pins.
$(VENDOR): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(dir $@)
	cp node_modules/@msgpack/msgpack/dist.umd/msgpack.min.js $@

# Debian's Chromium for the browser test (driven by Playwright, which downloads no browser).
$(CHROMIUM):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium

# iproute2 and nftables for the shaped-network test (namespaces, veth, tbf, random loss).
$(NFT):
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends iproute2 nftables

# HAProxy for the scale-out topology test; docker-compose (1.29, no engine needed) to validate
# docker-compose.yml.
$(HAPROXY) $(COMPOSE) &:
	$(SUDO) apt-get update
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends haproxy docker-compose

serve: $(VENV)/.serve-installed $(VENDOR)
	$(PY) -m app serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.test-installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.test-installed
	$(PY) -m mypy

test: lint typecheck $(VENDOR) $(CHROMIUM) $(NFT) $(HAPROXY) $(COMPOSE)
	$(PY) -m pytest

# The long variants (tests marked `long`), left out of `make test`.
test-long: lint typecheck $(VENDOR) $(CHROMIUM) $(NFT) $(HAPROXY) $(COMPOSE)
	$(PY) -m pytest -m long

bench: $(VENV)/.serve-installed
	$(PY) -m app bench engine

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache node_modules app/static/vendor

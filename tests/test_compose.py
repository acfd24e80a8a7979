"""The container deployment, checked without Docker.

``docker-compose.yml`` is validated by Debian's ``docker-compose`` 1.29, whose ``config`` needs
no Docker engine; deliberately broken copies must be rejected with a reason. HAProxy's config is
checked by ``haproxy -c`` inside an empty network namespace: the config names ``tts``, which only
Docker's DNS resolves, and the lookup must not leave this machine. Every image is pinned.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
SERVICES = {"tts", "haproxy", "otel-collector", "jaeger", "prometheus"}
# A tag naming major.minor.patch (v optional, any suffix), or a digest.
VERSION_TAG = re.compile(r":v?\d+\.\d+\.\d+[\w.-]*$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def tool(name: str) -> str:
    """The program's path; fails (not skips) when missing: ``make test`` installs it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make test`, which installs Debian's {name} package "
            f"(apt-get install --no-install-recommends {name})"
        )
    return path


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    # No DOCKER_* or COMPOSE_* variables: they would point docker-compose elsewhere.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    """``docker-compose`` on ``file``, with paths in it relative to the repository."""
    return run([tool("docker-compose"), "--project-directory", str(ROOT), "-f", str(file), *args])


def is_pinned(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]  # not a registry's host:port
    return bool(DIGEST.search(image) or VERSION_TAG.search(last))


def test_compose_file_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_compose_services() -> None:
    result = compose("config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == SERVICES


def _rename_replicas(text: str) -> str:
    return _replace(text, "      replicas: 3\n", "      replicass: 3\n")


def _bad_port(text: str) -> str:
    return _replace(text, '"8080:8080"', '"80a80:8080"')


def _missing_dependency(text: str) -> str:
    return _replace(text, "    depends_on:\n      - tts\n", "    depends_on:\n      - tts-gone\n")


def _unknown_service_key(text: str) -> str:
    return _replace(text, "    build: .\n", "    build: .\n    imagee: kokoro-stream:0.1.0\n")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"docker-compose.yml changed: {old!r} is gone; update this test"
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (_rename_replicas, "services.tts.deploy value 'replicass'"),
        (_unknown_service_key, "Unsupported config option for services.tts: 'imagee'"),
        (_bad_port, "services.haproxy.ports contains an invalid type"),
        (_missing_dependency, "depends on service 'tts-gone' which is undefined"),
    ],
    ids=["unknown-deploy-key", "unknown-service-key", "bad-port", "missing-dependency"],
)
def test_broken_compose_file_is_rejected(
    tmp_path: Path, breakage: Callable[[str], str], reason: str
) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(breakage(COMPOSE_FILE.read_text()))
    result = compose("config", "-q", file=broken)
    assert result.returncode != 0
    assert reason in result.stderr, result.stderr


def test_compose_structure() -> None:
    yaml = pytest.importorskip("yaml")
    result = compose("config")
    assert result.returncode == 0, result.stderr
    config: Any = yaml.safe_load(result.stdout)
    services: dict[str, Any] = config["services"]
    tts = services["tts"]
    assert "ports" not in tts, "replicas must publish no host port, or --scale collides"
    assert tts["deploy"]["replicas"] >= 2
    assert tts["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert tts["stop_grace_period"] == "30s"  # beyond KOKORO_SHUTDOWN_GRACE_S plus 10 s
    haproxy = services["haproxy"]
    published = {str(port) for port in haproxy["ports"]}
    assert any("8080" in port for port in published), published
    assert any("8404" in port for port in published), published
    assert any(v.endswith("/usr/local/etc/haproxy/haproxy.cfg:ro") for v in haproxy["volumes"])


def test_images_are_pinned() -> None:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    images = re.findall(r"^ {4}image: (\S+)$", result.stdout, flags=re.MULTILINE)
    built = re.findall(r"^ {4}build:", result.stdout, flags=re.MULTILINE)
    assert len(images) + len(built) == len(SERVICES), result.stdout
    stages: set[str] = set()
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, flags=re.IGNORECASE)
        if match:
            if match[1] not in stages:
                images.append(match[1])
            if match[2]:
                stages.add(match[2])
    assert len(images) > len(SERVICES) - len(built)
    unpinned = [image for image in images if not is_pinned(image)]
    assert not unpinned, f"images without a version tag or digest: {unpinned}"


@pytest.mark.parametrize(
    "image",
    ["python", "python:latest", "python:3.11", "python:3.11-slim", "prom/prometheus:v2"],
)
def test_pin_check_rejects(image: str) -> None:
    assert not is_pinned(image)


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    """``haproxy -c`` in a network namespace of its own, where ``tts`` fails to resolve at
    once instead of being asked of the machine's DNS server."""
    isolate = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-rn"]
    return run([*isolate, tool("haproxy"), "-c", "-f", str(config)])


def test_haproxy_config_is_valid() -> None:
    result = haproxy_check(HAPROXY_CFG)
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout
    # Outside Docker the resolver and the name `tts` are unreachable; anything else is a fault.
    expected = (
        "could not resolve address 'tts'",
        "resolvers 'docker': can't connect socket",
    )
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "[WARNING]" in line and not any(text in line for text in expected)
    ]
    assert not warnings, "\n".join(warnings)
    assert "[ALERT]" not in result.stderr, result.stderr


def test_broken_haproxy_config_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "haproxy.cfg"
    text = HAPROXY_CFG.read_text()
    assert "balance leastconn" in text
    broken.write_text(text.replace("balance leastconn", "balance leastconnn"))
    result = haproxy_check(broken)
    assert result.returncode != 0
    assert "balance only supports" in result.stderr, result.stderr

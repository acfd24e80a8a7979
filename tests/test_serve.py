"""The real server process, spoken to over HTTP on loopback, as ``make serve`` runs it."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf

from app.local_server import free_port
from app.plan_loader import STRATEGY_FILE
from app.quality import Transcriber, words_of
from app.settings import Settings

pytestmark = [pytest.mark.model, pytest.mark.speech]


@contextmanager
def running_server(cache_dir: Path, log_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``python -m app serve`` as a child process; yields its URL and its ``/ready`` body."""
    port = free_port()
    env = {**os.environ, "KOKORO_CACHE_DIR": str(cache_dir)}
    env.pop("KOKORO_PLAN", None)  # the default: benchmark the plans, or reuse the cached choice
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:  # an external process: readiness can only be polled
            assert process.poll() is None, log_path.read_text()
            try:
                response = httpx.get(f"{base}/ready", timeout=2)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield base, response.json()
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log_path.read_text()
        assert "Application shutdown complete" in log_path.read_text()


@pytest.fixture(scope="module")
def first_start(
    settings: Settings, synthesizer: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The first start on this cache: no cached plan choice, so the plans are benchmarked."""
    (settings.cache_dir / STRATEGY_FILE).unlink(missing_ok=True)
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(settings.cache_dir, log_path) as started:
        yield started


@pytest.fixture(scope="module")
def server(first_start: tuple[str, dict[str, Any]]) -> str:
    return first_start[0]


def test_a_second_start_reuses_the_benchmarked_plan(
    settings: Settings, first_start: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    _, first = first_start
    assert first["plan_source"] == "benchmark"
    stored = (settings.cache_dir / STRATEGY_FILE).stat().st_mtime_ns
    with running_server(settings.cache_dir, tmp_path / "second.log") as (base, second):
        assert second["plan_source"] == "cache"
        assert second["plan"] == first["plan"]
        loaded = second["startup_seconds"]
        assert loaded["model"] > 0 and loaded["sessions"] > 0, "a cached plan loads its sessions"
        report = httpx.get(f"{base}/v1/stats", timeout=5).json()["plan"]
        assert {score["plan"] for score in report["scores"]} >= {"cpu:1x2", "cpu:2x1"}
    assert (settings.cache_dir / STRATEGY_FILE).stat().st_mtime_ns == stored, "no new benchmark"
    choosing = first["startup_seconds"]["plan"], second["startup_seconds"]["plan"]
    print(f"choosing the plan: {choosing[0]:.2f} s benchmarked, {choosing[1]:.3f} s cached")
    assert choosing[1] < 0.1 * choosing[0]


def test_curl_request_from_the_readme(server: str, transcriber: Transcriber) -> None:
    text = "Hello there, this is a test."
    response = httpx.post(
        f"{server}/v1/audio/speech", json={"input": text, "voice": "jf_alpha"}, timeout=60
    )
    assert response.status_code == 200
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 24_000 and audio.ndim == 1
    assert words_of(transcriber.transcribe(audio)) == words_of(text)


def test_the_startup_profile_is_served(first_start: tuple[str, dict[str, Any]]) -> None:
    base, ready = first_start
    status = httpx.get(f"{base}/v1/status", timeout=5).json()
    assert status["status"] == "ready" and status["plan"] == ready["plan"]
    phases = status["startup_seconds"]
    assert set(phases) == {"plan", "model", "sessions", "warm_up"}
    assert phases["plan"] > 0 and phases["warm_up"] > 0
    # 0 when the plan benchmark's own sessions serve (their loading counts as "plan").
    assert phases["model"] >= 0 and phases["sessions"] >= 0
    assert phases == ready["startup_seconds"]

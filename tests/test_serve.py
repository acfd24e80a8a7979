"""The real server process, spoken to over HTTP on loopback, as ``make serve`` runs it."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import soundfile as sf

from app.settings import Settings
from tests.speech import Transcriber, words_of

pytestmark = [pytest.mark.model, pytest.mark.speech]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(
    settings: Settings, synthesizer: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "KOKORO_CACHE_DIR": str(settings.cache_dir)}
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:  # an external process: readiness can only be polled
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log_path.read_text()
        assert "Application shutdown complete" in log_path.read_text()


def test_curl_request_from_the_readme(server: str, transcriber: Transcriber) -> None:
    text = "Hello there, this is a test."
    response = httpx.post(
        f"{server}/v1/audio/speech", json={"input": text, "voice": "jf_alpha"}, timeout=60
    )
    assert response.status_code == 200
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 24_000 and audio.ndim == 1
    assert words_of(transcriber.transcribe(audio)) == words_of(text)

"""SIGTERM on the real server (its own process): it stops listening, lets streams finish for the
grace period, ends the rest with ``done`` (reason ``shutdown``), closes with 1001 and exits."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from app import wire
from app.local_server import LOOPBACK, free_port, settings_args, start_server, wait_ready
from app.settings import Settings
from tests.live import Client, speak

pytestmark = pytest.mark.model

GRACE_S = 6.0
EXIT_WITHIN_S = GRACE_S + 30.0
"""The stated bound: the grace, then the pipeline's own drain (at most 10 s) and the exit."""
KEY = "shutdown-test-key-5b1e"
FINISHING = "Quetzalcoatl juggles marmalade in the garden. Then he sits down for tea."
LINGERING = "This stream never ends."


def wait_listener_closed(port: int, timeout_s: float = 30.0) -> None:
    """Poll until connecting is refused: the server has stopped listening (another process:
    there is nothing to wait on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.02)
    raise AssertionError("the server kept listening after SIGTERM")


async def close_code(client: Client) -> int | None:
    """Read until the server closes the connection; its close code."""
    try:
        while True:
            await client.receive_one()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def test_sigterm_finishes_streams_ends_the_rest_and_logs_no_text_or_key(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKORO_SHUTDOWN_GRACE_S", str(GRACE_S))
    monkeypatch.setenv("KOKORO_API_KEY", KEY)
    monkeypatch.setenv("KOKORO_MAX_ACTIVE_STREAMS", "4")  # both streams in, whatever is measured
    port, log_path = free_port(), tmp_path / "server.log"
    args = [*settings_args(settings), "--plan", "cpu:1x2"]
    process = start_server(port, log_path, args, log_level="debug")
    try:
        await _exercise(port, process, log_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    logged = log_path.read_text()
    assert "Application shutdown complete" in logged and "drained 3 connections" in logged
    for secret in ("Quetzalcoatl", "marmalade", "never ends", KEY):
        assert secret not in logged, f"{secret!r} was logged"


async def _exercise(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    base = f"http://{LOOPBACK}:{port}"
    await asyncio.to_thread(wait_ready, base, process, log_path)
    key = {"Authorization": f"Bearer {KEY}"}
    url = base.replace("http", "ws") + "/v1/stream"
    async with connect(
        url, subprotocols=[Subprotocol("tts.v1"), Subprotocol("bearer.wrong")]
    ) as ws:
        assert wire.decode_server(await ws.recv(decode=False))["code"] == "unauthorized"
    finishing = await Client.connect(base, report_played=True, additional_headers=key)
    lingering = await Client.connect(base, report_played=True, additional_headers=key)
    late = await Client.connect(base, additional_headers=key)
    await speak(finishing, "f", FINISHING)
    await lingering.start("l")
    await lingering.send(type="text", stream="l", text=LINGERING, flush=True)
    for client, name in ((finishing, "f"), (lingering, "l")):
        while client.streams[name].first_audio_at() is None:
            await client.receive_one()

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(wait_listener_closed, port)
    await late.start("x")
    refusal = await late.next_error()
    assert (refusal["code"], refusal["stream"]) == ("shutting_down", "x")
    assert refusal["retry_after_ms"] > 0

    await finishing.until_done("f")
    await lingering.until_done("l")
    ended_after = time.monotonic() - signalled
    reasons = [client.streams[name].done for client, name in ((finishing, "f"), (lingering, "l"))]
    assert [done["reason"] if done else None for done in reasons] == ["complete", "shutdown"]
    assert ended_after >= GRACE_S - 0.5, "the open stream had the whole grace period"
    for client in (finishing, lingering):
        for log in client.streams.values():
            log.assert_contiguous()
    codes = [await close_code(client) for client in (finishing, lingering, late)]
    assert codes == [1001, 1001, 1001]
    for client in (finishing, lingering, late):
        fatal = [error for error in client.errors if error.get("fatal")]
        assert [error["code"] for error in fatal] == ["shutting_down"]
    exit_status = await asyncio.to_thread(process.wait, EXIT_WITHIN_S)
    assert exit_status in (0, -signal.SIGTERM)

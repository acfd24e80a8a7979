"""``python -m app serve`` as a child process on a free loopback port, for benchmarks and load
tests that must measure the real server (its own process, event loop and cores), not one
embedded in the measuring process.

Every function here blocks (process start, HTTP polling, waiting for exit): call them from a
worker thread when an event loop is running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from app.settings import Settings

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def settings_args(settings: Settings) -> list[str]:
    """``serve`` flags that give the child the model, voices, cache and threads of ``settings``."""
    args = ["--threads", str(settings.intra_op_threads), "--cache-dir", str(settings.cache_dir)]
    if settings.model_path:
        args += ["--model", str(settings.model_path)]
    if settings.voices_path:
        args += ["--voices", str(settings.voices_path)]
    return args


def start_server(
    port: int,
    log_path: Path,
    args: Sequence[str] = (),
    host: str = LOOPBACK,
    prefix: Sequence[str] = (),
    *,
    log_level: str = "info",
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the server with this process's environment and ``env`` over it; its output goes to
    ``log_path``. ``prefix`` runs it through another command (which must ``exec`` it)."""
    command = [
        *prefix,
        *(sys.executable, "-m", "app", "--log-level", log_level, "serve"),
        *("--host", host, "--port", str(port), *args),
    ]
    with log_path.open("wb") as log:
        environment = {**os.environ, **(env or {})}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)


def wait_ready(
    base: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 120.0
) -> None:
    """Poll ``/ready`` until it answers 200 (another process: there is nothing to wait on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not become ready in {timeout_s:g} s")


def stop_server(
    process: subprocess.Popen[bytes],
    timeout_s: float = 30.0,
    stop_signal: signal.Signals = signal.SIGINT,
) -> int:
    """Ask the server to shut down gracefully; kill it if it has not exited within
    ``timeout_s``. Returns its exit status."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(stop_signal)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()

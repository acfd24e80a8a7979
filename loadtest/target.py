"""The server under test: one given with ``--server``, or a child process started here (so the
run measures the real server process, with this process's environment) and stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.client import TTSClient
from app.local_server import LOOPBACK, free_port, start_server, stop_server, wait_ready

READY_TIMEOUT_S = 300.0
"""A first start on a machine benchmarks the provider plans (about a minute on 2 cores)."""
LOG_NAME = "server.log"
BENCH_INTERVAL_VAR = "KOKORO_BENCH_INTERVAL_S"
"""A spawned server runs no scheduled benchmark unless this is set: the benchmark starts once
the server has been idle for a while, which is exactly when the raw engine loop runs here, and
it would slow that measurement and leave its arena peak in the server's RSS."""


@dataclass(frozen=True, slots=True)
class Target:
    base: str
    """``http://HOST:PORT``."""
    spawned: bool
    pid: int | None = None
    log_path: Path | None = None

    @property
    def stream_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/v1/stream"


@contextlib.asynccontextmanager
async def target_server(server: str | None, out_dir: Path) -> AsyncIterator[Target]:
    """The given server, or a spawned one that is ready when this yields."""
    if server is not None:
        yield Target(server.rstrip("/"), spawned=False)
        return
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    log_path = out_dir / LOG_NAME
    quiet = {BENCH_INTERVAL_VAR: os.environ.get(BENCH_INTERVAL_VAR, "0")}
    process = await asyncio.to_thread(start_server, port, log_path, env=quiet)
    try:
        await asyncio.to_thread(wait_ready, base, process, log_path, READY_TIMEOUT_S)
        yield Target(base, spawned=True, pid=process.pid, log_path=log_path)
    finally:
        await asyncio.to_thread(stop_server, process)


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server says about itself before the run."""

    ready: dict[str, Any]
    """The ``/ready`` body (startup timings, ``plan``)."""
    limits: dict[str, Any]
    """The WebSocket ``ready`` message's ``limits``."""
    voices: list[str] = field(default_factory=list)

    @property
    def plan(self) -> str | None:
        plan = self.ready.get("plan")
        return plan if isinstance(plan, str) else None

    @property
    def capacity(self) -> int | None:
        """The advertised ``max_active_streams``, if any."""
        return _positive_int(self.limits.get("max_active_streams"))


async def probe(http: httpx.AsyncClient, target: Target) -> ServerInfo:
    """Check the server is ready and read its plan and limits (one short connection)."""
    response = await http.get(f"{target.base}/ready")
    if response.status_code != 200:
        raise RuntimeError(f"{target.base}/ready answered {response.status_code}: {response.text}")
    body = response.json()
    async with TTSClient.connect(target.stream_url) as client:
        limits = client.ready.get("limits")
        voices = client.ready.get("voices")
    return ServerInfo(
        ready=body if isinstance(body, dict) else {},
        limits=dict(limits) if isinstance(limits, dict) else {},
        voices=[str(name) for name in voices] if isinstance(voices, list) else [],
    )

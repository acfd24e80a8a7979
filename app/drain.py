"""Graceful shutdown of the streaming side: take no new work, let streams in progress finish
for a grace period, then end the rest with ``done`` so no client is left guessing.

The uvicorn server (``app.uvicorn_server``) runs ``Drain.run`` after it stops listening and
before it closes the sockets that remain.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from app.errors import ShuttingDownError

logger = logging.getLogger(__name__)

SHUTDOWN_REASON = "shutdown"
"""The ``done`` reason of a stream ended by the shutdown."""
RECONNECT_AFTER_MS = 1000
"""Retry hint of a refusal while shutting down: another replica, or this one restarted."""


class Drainable(Protocol):
    """A connection, as the drain sees it."""

    async def wait_idle(self) -> None:
        """Return once the connection has no open stream."""

    async def end(self, reason: str) -> None:
        """End every open stream with ``done`` (``reason``) and close the connection."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    connections: int
    finished_in_grace: bool
    seconds: float


class Drain:
    """Knows the open connections; once started, refuses new connections and streams."""

    def __init__(self) -> None:
        self.started = False
        self._members: set[Drainable] = set()

    def join(self, member: Drainable) -> None:
        self._members.add(member)

    def leave(self, member: Drainable) -> None:
        self._members.discard(member)

    def check(self, stream: str | None = None) -> None:
        """Raise ``ShuttingDownError`` once the drain has started."""
        if self.started:
            raise ShuttingDownError(
                "the server is shutting down; reconnect and retry after retry_after_ms",
                retry_after_ms=RECONNECT_AFTER_MS,
                stream=stream,
            )

    async def run(self, grace_s: float) -> DrainReport:
        """Wait up to ``grace_s`` for every connection to have no stream, then end them all."""
        self.started = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        members = list(self._members)
        logger.info("shutting down: %d connections, %.0f s grace", len(members), grace_s)
        finished = True
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*(member.wait_idle() for member in members))
        except TimeoutError:
            finished = False
        await asyncio.gather(*(member.end(SHUTDOWN_REASON) for member in list(self._members)))
        report = DrainReport(len(members), finished, loop.time() - started)
        logger.info(
            "drained %d connections in %.2f s (%s)",
            report.connections,
            report.seconds,
            "streams finished" if finished else "grace ran out: open streams ended",
        )
        return report

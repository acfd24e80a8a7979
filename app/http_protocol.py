"""uvicorn's connection protocols with two changes: a deadline for each request's head, and no
error logged for a WebSocket handshake the server refused on purpose.

- h11 has no timeout for a request's head, so a client that connects and then sends nothing, or
  a header byte now and then, holds the connection (and the process's file descriptors) for as
  long as it likes: 40 such sockets stayed open for 75 s and more in a probe. ``HeadDeadline``
  closes a connection whose request head has not fully arrived ``head_timeout_s`` after it was
  opened or after its previous response. A WebSocket's handshake is such a head, so it is
  covered too; once upgraded, the socket's pings and the gateway's timeouts take over.
- uvicorn's websockets protocol logs "ASGI callable returned without completing handshake." at
  ERROR after every denial response (a refused Host or Origin), because it never marks the
  handshake as done (uvicorn pull request 3138). ``QuietDenials`` marks it, so a refused client
  costs one WARNING line (``app.refusal_log``) and no ERROR.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.refusal_log import REFUSALS

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent


class HeadDeadline(H11Protocol):
    """``H11Protocol`` that closes a connection whose request head is late."""

    head_timeout_s: ClassVar[float] = 5.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the peer broke the rules)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head is due within the deadline too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_timeout_s, self._late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        peer = get_remote_addr(self.transport)
        REFUSALS.refused(
            "closed a connection from %s: no request head within %g s",
            peer[0] if peer else "unknown",
            self.head_timeout_s,
        )
        self.transport.close()


def head_deadline(timeout_s: float) -> type[HeadDeadline]:
    """The HTTP protocol class to give uvicorn: ``HeadDeadline`` with ``timeout_s``."""
    if not timeout_s > 0:
        raise ValueError(f"the request head timeout must be > 0 s, got {timeout_s}")
    return type("HeadDeadline", (HeadDeadline,), {"head_timeout_s": timeout_s})


class QuietDenials(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` that counts a sent denial response as the handshake's end."""

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True

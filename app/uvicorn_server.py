"""The uvicorn server: WebSocket settings taken from ``Settings``, and a shutdown that drains.

uvicorn's own shutdown closes every WebSocket at once (close code 1012), cutting streams off
mid-word. ``GracefulServer`` first stops listening, then lets ``app.drain`` finish or end the
streams with ``done``, and only then lets uvicorn close what is left.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette

from app import log_redaction
from app.http_protocol import QuietDenials, head_deadline
from app.service import Service
from app.settings import Settings


def uvicorn_config(app: Starlette, settings: Settings, **options: Any) -> uvicorn.Config:
    """Message size, pings, compression and the request head's deadline from ``settings``
    (``app.http_protocol``); ``options`` go to uvicorn. The logging uvicorn configures gets
    ``app.log_redaction``'s filter."""
    config = uvicorn.Config(
        app,
        http=head_deadline(settings.request_timeout_s),
        ws=QuietDenials,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,  # audio does not compress; compression leaks content
        ws_ping_interval=settings.ping_interval_s or None,
        ws_ping_timeout=settings.ping_timeout_s or None,
        **options,
    )
    log_redaction.install()
    return config


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that drains the streaming connections before closing them."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # stop accepting first, so no client joins the drain
            server.close()
        for sock in sockets or []:
            sock.close()
        await self.service.drain.run(self.service.settings.shutdown_grace_s)
        await super().shutdown(sockets)

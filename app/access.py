"""Who may use the server: a browser Origin allow-list and an optional API key.

Both are checked here, in front of every route, before a handler runs or a socket is accepted.

- Origin: a browser sends the page's origin with every WebSocket handshake and cross-site
  request, and nothing else stops another site's page from opening a socket to a server on the
  user's LAN (CORS does not apply to WebSockets). Requests without an Origin (servers, scripts,
  curl) and same-origin pages (the built-in player) pass; other origins only if listed. A
  refused WebSocket gets HTTP 403 before accept.
- API key (optional): servers send ``Authorization: Bearer <key>``. Browsers cannot set headers
  on a WebSocket, so they offer ``bearer.<key>`` as a second subprotocol beside ``tts.v1``; only
  ``tts.v1`` is echoed back. A socket without the key is accepted only to be told why
  (``unauthorized``, fatal) and closed with 1008, because a browser never sees the HTTP status
  of a refused handshake. The health, readiness and metrics endpoints and the player's files stay
  open (they carry no user text); the admin API has its own token.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import wire

BEARER_SUBPROTOCOL_PREFIX = "bearer."
CLOSE_POLICY = 1008
OPEN_PATHS = ("/health", "/ready", "/metrics")
"""Exact paths that need no API key (load balancers and Prometheus call them)."""
OPEN_PREFIXES = ("/static/", "/v1/admin/")
"""Path prefixes that need no API key: the player's files; the admin API (its own token)."""
ANY_ORIGIN = "*"


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """What ``AccessMiddleware`` enforces."""

    api_key: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    """Origins (``scheme://host[:port]``) allowed besides the server's own; ``*`` allows all."""

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """No Origin (not a browser), the server's own origin, or a listed one."""
        if origin is None or ANY_ORIGIN in self.allowed_origins:
            return True
        if normalize_origin(origin) in self.allowed_origins:
            return True
        return host is not None and urlsplit(origin).netloc.lower() == host.lower()

    def key_accepted(self, headers: Headers, subprotocols: Iterable[str] = ()) -> bool:
        """Without a configured key, always; else the bearer header or subprotocol matches."""
        if self.api_key is None:
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        offered = [given] if scheme.lower() == "bearer" else []
        offered += [
            protocol[len(BEARER_SUBPROTOCOL_PREFIX) :]
            for protocol in subprotocols
            if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX)
        ]
        expected = self.api_key.encode()
        return any(hmac.compare_digest(token.encode(), expected) for token in offered)


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def parse_origins(value: str) -> frozenset[str]:
    """A comma-separated allow-list; each entry must be ``*`` or ``scheme://host[:port]``."""
    origins = set()
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry != ANY_ORIGIN:
            parts = urlsplit(entry)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
            ):
                raise ValueError(f"an allowed origin is scheme://host[:port], got {entry!r}")
        origins.add(normalize_origin(entry))
    return frozenset(origins)


def _needs_key(path: str) -> bool:
    return path != "/" and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


class AccessMiddleware:
    """ASGI middleware applying an ``AccessPolicy`` to HTTP requests and WebSockets."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin_ok = self.policy.origin_allowed(headers.get("origin"), headers.get("host"))
        needs_key = _needs_key(scope["path"])
        subprotocols: list[str] = scope.get("subprotocols") or []
        key_ok = not needs_key or self.policy.key_accepted(headers, subprotocols)
        if origin_ok and key_ok:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await _http_refusal(origin_ok)(scope, receive, send)
        elif not origin_ok:
            await WebSocket(scope, receive, send).send_denial_response(_http_refusal(False))
        else:
            await _refuse_socket(WebSocket(scope, receive, send), subprotocols)


def _http_refusal(origin_ok: bool) -> JSONResponse:
    if not origin_ok:
        code, status, message = "origin_not_allowed", 403, "this origin may not use the server"
        headers = None
    else:
        code, status = "unauthorized", 401
        message = "send the API key as 'Authorization: Bearer <key>'"
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def _refuse_socket(websocket: WebSocket, subprotocols: list[str]) -> None:
    """Accept only to say why, then close with 1008 (policy)."""
    await websocket.accept(wire.SUBPROTOCOL if wire.SUBPROTOCOL in subprotocols else None)
    message = "send the API key as 'Authorization: Bearer <key>' or a 'bearer.<key>' subprotocol"
    await websocket.send_bytes(wire.error("unauthorized", message, fatal=True))
    await websocket.close(CLOSE_POLICY)

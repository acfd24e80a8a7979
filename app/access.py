"""Who may use the server: a Host allow-list, a browser Origin allow-list and an optional API key.

All three are checked here, in front of every route, before a handler runs or a socket is
accepted.

- Host: a page on another site can make a visitor's browser talk to a server on their machine
  or LAN by DNS rebinding: its own name (``evil.example``) is made to resolve to the server's
  address, so the browser treats the server as that site, sends ``Host: evil.example`` and
  ``Origin: http://evil.example``, and lets the page read the answers. The server answers only
  to names it knows: ``localhost`` (and ``*.localhost``), any IP address literal (an address is
  not a name that can be rebound, and a page on another origin that uses it is refused by its
  Origin), the name it was told to listen on, and ``KOKORO_ALLOWED_HOSTS``. ``*`` turns the
  check off. A request without ``Host`` (HTTP/1.0 health checks) is no browser and passes.
- Origin: a browser sends the page's origin with every WebSocket handshake and cross-site
  request, and nothing else stops another site's page from opening a socket to a server on the
  user's LAN (CORS does not apply to WebSockets). Requests without an Origin (servers, scripts,
  curl) and same-origin pages (the built-in player: same scheme, host and port as the request)
  pass; other origins only if listed. A refused WebSocket gets HTTP 403 before accept.
- API key (optional): servers send ``Authorization: Bearer <key>``. Browsers cannot set headers
  on a WebSocket, so they offer ``bearer.<key>`` as a second subprotocol beside ``tts.v1``; only
  ``tts.v1`` is echoed back. A socket without the key is accepted only to be told why
  (``unauthorized``, fatal) and closed with 1008, because a browser never sees the HTTP status
  of a refused handshake. The health, readiness and metrics endpoints and the player's files stay
  open (they carry no user text); the admin API has its own token.

Starlette's ``TrustedHostMiddleware`` is not used: it cuts the port off at the first colon, so
it cannot read an IPv6 Host (``[::1]:8000``).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from app import wire
from app.errors import excerpt
from app.refusal_log import REFUSALS

BEARER_SUBPROTOCOL_PREFIX = "bearer."
CLOSE_POLICY = 1008
OPEN_PATHS = ("/health", "/ready", "/metrics")
"""Exact paths that need no API key (load balancers and Prometheus call them)."""
OPEN_PREFIXES = ("/static/", "/v1/admin/")
"""Path prefixes that need no API key: the player's files; the admin API (its own token)."""
ANY = "*"
ANY_ORIGIN = ANY
DEFAULT_PORTS = {"http": 80, "https": 443}
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
"""Listening addresses that are no name a client uses."""
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")

Origin = tuple[str, str, int]
"""An origin as browsers compare them: scheme, host, port."""


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lower case and
    without a trailing dot; None when it is not a valid Host."""
    if not host or any(char in host for char in "/?#@\\ "):
        return None
    try:
        parts = urlsplit("//" + host)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    name = parts.hostname
    return name.rstrip(".") if name else None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_of(url: str) -> Origin | None:
    """``scheme://host[:port]`` as (scheme, host, port), the default port filled in; None for
    anything else (``null``, a path, another scheme)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS[parts.scheme]


def request_origin(scheme: str, host: str | None) -> Origin | None:
    """The origin a request was made to: its scheme (``ws`` counts as ``http``) and Host."""
    if host is None:
        return None
    web = "https" if scheme in ("https", "wss") else "http"
    return origin_of(f"{web}://{host}")


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """What ``AccessMiddleware`` enforces."""

    api_key: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    """Origins allowed besides the server's own, as ``parse_origins`` spells them; ``*`` allows
    all."""
    allowed_hosts: frozenset[str] = frozenset()
    """Host names answered besides loopback names and addresses (``*.example.com``: its
    subdomains; ``*``: any Host)."""

    def host_allowed(self, host: str | None) -> bool:
        """No Host (not a browser), a loopback name, an address, or a listed name."""
        if host is None or ANY in self.allowed_hosts:
            return True
        name = host_name(host)
        if name is None:
            return False
        if name == "localhost" or name.endswith(".localhost") or _is_address(name):
            return True
        if name in self.allowed_hosts:
            return True
        return any(
            pattern.startswith("*.") and name.endswith(pattern[1:])
            for pattern in self.allowed_hosts
        )

    def origin_allowed(self, origin: str | None, host: str | None, scheme: str = "http") -> bool:
        """No Origin (not a browser), the server's own origin (same scheme, host and port as the
        request), or a listed one."""
        if origin is None or ANY_ORIGIN in self.allowed_origins:
            return True
        given = origin_of(origin)
        if given is None:
            return False
        return given == request_origin(scheme, host) or spelled(given) in self.allowed_origins

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


def spelled(origin: Origin) -> str:
    """One spelling per origin, ``scheme://host:port`` with the port always given: the form
    the allow-list is kept in, so that a lookup compares scheme, host and port."""
    scheme, host, port = origin
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def parse_origins(value: str) -> frozenset[str]:
    """A comma-separated allow-list; each entry must be ``*`` or ``scheme://host[:port]``."""
    origins = set()
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry == ANY_ORIGIN:
            origins.add(ANY_ORIGIN)
            continue
        origin = origin_of(entry)
        if origin is None:
            raise ValueError(f"an allowed origin is scheme://host[:port], got {entry!r}")
        origins.add(spelled(origin))
    return frozenset(origins)


def parse_hosts(value: str) -> frozenset[str]:
    """A comma-separated list of host names (no scheme, no port): ``tts.example.com``,
    ``*.example.com`` for every subdomain, an address, or ``*`` for any Host."""
    hosts = set()
    for entry in (part.strip().lower().rstrip(".") for part in value.split(",")):
        if not entry:
            continue
        plain = entry.removeprefix("[").removesuffix("]")
        if entry != ANY and not _HOST_NAME.fullmatch(entry) and not _is_address(plain):
            raise ValueError(f"an allowed host is a name like tts.example.com, got {entry!r}")
        hosts.add(plain if _is_address(plain) else entry)
    return frozenset(hosts)


def listening_name(address: str) -> frozenset[str]:
    """The host name the server listens on, as a Host allow-list entry (none for a wildcard
    address, which is no name a client uses)."""
    name = address.strip().lower().removeprefix("[").removesuffix("]")
    return frozenset() if name in WILDCARD_ADDRESSES else frozenset({name})


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
        host = headers.get("host")
        refusal: JSONResponse | None = None
        if not self.policy.host_allowed(host):
            refusal = _refusal(400, "host_not_allowed", "this server does not answer to that Host")
            why = f"Host {excerpt(host or '')}"
        elif not self.policy.origin_allowed(headers.get("origin"), host, scope["scheme"]):
            refusal = _refusal(403, "origin_not_allowed", "this origin may not use the server")
            why = f"Origin {excerpt(headers.get('origin', ''))}"
        if refusal is not None:
            _log_refusal(scope, why)
            if scope["type"] == "http":
                await refusal(scope, receive, send)
            else:
                await WebSocket(scope, receive, send).send_denial_response(refusal)
            return
        subprotocols: list[str] = scope.get("subprotocols") or []
        if not _needs_key(scope["path"]) or self.policy.key_accepted(headers, subprotocols):
            await self.app(scope, receive, send)
            return
        _log_refusal(scope, "no valid API key")
        if scope["type"] == "http":
            message = "send the API key as 'Authorization: Bearer <key>'"
            await _refusal(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
        else:
            await _refuse_socket(WebSocket(scope, receive, send), subprotocols)


def _refusal(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _log_refusal(scope: Scope, why: str) -> None:
    client = scope.get("client")
    REFUSALS.refused(
        "refused %s %s from %s: %s",
        "WebSocket" if scope["type"] == "websocket" else scope.get("method", "HTTP"),
        excerpt(scope["path"]),
        client[0] if client else "unknown",
        why,
    )


async def _refuse_socket(websocket: WebSocket, subprotocols: list[str]) -> None:
    """Accept only to say why, then close with 1008 (policy)."""
    await websocket.accept(wire.SUBPROTOCOL if wire.SUBPROTOCOL in subprotocols else None)
    message = "send the API key as 'Authorization: Bearer <key>' or a 'bearer.<key>' subprotocol"
    await websocket.send_bytes(wire.error("unauthorized", message, fatal=True))
    await websocket.close(CLOSE_POLICY)

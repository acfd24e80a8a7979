"""What an HTTP request's client can make the server do: read a body, and wait for a result.

- ``read_body``: a body is read whole before it is parsed, so its size bounds what the client
  makes the server hold and parse. It is refused (413) when its ``Content-Length`` says it is
  over ``max_bytes``, before a byte of it is read, or as soon as that many have arrived without
  one; and when it has not all arrived within ``timeout_s`` (408), so a client that trickles it
  cannot hold the handler.
- ``unless_disconnected``: synthesis for a client that has gone is wasted work that holds a
  slot other clients wait for. The work runs beside a watch on the connection and is cancelled
  as soon as the client disconnects (``Synthesizer.speak`` then terminates its model call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

T = TypeVar("T")


class BodyRefused(Exception):
    """The body was not accepted: ``status``, a stable ``code`` and a ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def read_body(request: Request, *, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body; ``BodyRefused`` (413, 408) or starlette's ``ClientDisconnect``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(None, max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        message = f"the request body did not arrive within {timeout_s:g} s"
        raise BodyRefused(408, "request_timeout", message) from None
    return b"".join(chunks)


def _too_large(size: int | None, max_bytes: int) -> BodyRefused:
    detail = f"is {size} bytes" if size is not None else "is longer"
    return BodyRefused(
        413, "body_too_large", f"the request body {detail}; the limit is {max_bytes} bytes"
    )


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone (after the body, ``receive`` waits for just that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, cancelled if the client disconnects first (then ``ClientDisconnect``).

    Call it once the body has been read: the watch consumes whatever ``receive`` yields."""
    job = asyncio.create_task(work)
    watch = asyncio.create_task(_disconnected(request.receive))
    try:
        await asyncio.wait([job, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        job.cancel()  # no-op when it is done
        await asyncio.wait([job, watch])  # neither outlives this call
    if job.cancelled():
        raise ClientDisconnect()
    return job.result()

"""Reading a request body within bounds, and dropping work whose client has gone (fake ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from actors.testing import assert_no_leaked_tasks
from app.http_request import BodyRefused, read_body, unless_disconnected

Receive = Callable[[], Awaitable[Message]]


def request(receive: Receive, content_length: int | None = None) -> Request:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def chunks(*parts: bytes, then: Message | None = None, complete: bool = False) -> Receive:
    """A client sending ``parts`` of a body (the last one ends it if ``complete``), then
    ``then`` (``None``: nothing more, ever)."""
    queue = [
        {"type": "http.request", "body": part, "more_body": not (complete and last)}
        for last, part in ((index == len(parts) - 1, part) for index, part in enumerate(parts))
    ]
    forever = asyncio.Event()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is not None:
            return then
        await forever.wait()
        raise AssertionError("unreachable")

    return receive


async def never_called() -> Message:
    raise AssertionError("the body was read")


async def test_a_body_declared_too_large_is_refused_before_it_is_read() -> None:
    with pytest.raises(BodyRefused) as refused:
        await read_body(request(never_called, 10_000_000), max_bytes=65536, timeout_s=5)
    assert (refused.value.status, refused.value.code) == (413, "body_too_large")
    assert "10000000 bytes" in refused.value.message


async def test_a_body_that_grows_too_large_is_refused_at_the_limit() -> None:
    receive = chunks(*[b"x" * 1000] * 100)
    with pytest.raises(BodyRefused) as refused:
        await read_body(request(receive), max_bytes=4096, timeout_s=5)
    assert refused.value.status == 413
    body = await read_body(request(chunks(b"{", b"}", complete=True)), max_bytes=4096, timeout_s=5)
    assert body == b"{}"


async def test_a_trickled_body_is_refused_when_the_timeout_passes() -> None:
    with pytest.raises(BodyRefused) as refused:
        await read_body(request(chunks(b'{"in', then=None), 100), max_bytes=4096, timeout_s=0.05)
    assert (refused.value.status, refused.value.code) == (408, "request_timeout")


async def test_a_client_leaving_mid_body_is_a_disconnect() -> None:
    receive = chunks(b'{"in', then={"type": "http.disconnect"})
    with pytest.raises(ClientDisconnect):
        await read_body(request(receive, 100), max_bytes=4096, timeout_s=5)


async def test_work_is_cancelled_when_the_client_disconnects() -> None:
    left = asyncio.Event()
    cancelled = asyncio.Event()

    async def receive() -> Message:
        await left.wait()
        return {"type": "http.disconnect"}

    async def synthesis() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    with assert_no_leaked_tasks():
        waiting = asyncio.create_task(unless_disconnected(request(receive), synthesis()))
        await asyncio.sleep(0)
        left.set()
        with pytest.raises(ClientDisconnect):
            await waiting
    assert cancelled.is_set()


async def test_work_that_finishes_first_returns_its_result() -> None:
    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def synthesis() -> str:
        return "audio"

    with assert_no_leaked_tasks():
        assert await unless_disconnected(request(receive), synthesis()) == "audio"

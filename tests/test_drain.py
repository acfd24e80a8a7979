"""The shutdown drain with stand-in connections (the real server's is in test_shutdown)."""

from __future__ import annotations

import asyncio

import pytest

from app.drain import SHUTDOWN_REASON, Drain
from app.errors import ShuttingDownError


class Member:
    """A connection whose streams finish when ``finish`` is set."""

    def __init__(self, finish: asyncio.Event) -> None:
        self.finish = finish
        self.ended_with: str | None = None

    async def wait_idle(self) -> None:
        await self.finish.wait()

    async def end(self, reason: str) -> None:
        self.ended_with = reason


async def test_streams_that_finish_in_the_grace_end_it_early() -> None:
    drain, finish = Drain(), asyncio.Event()
    members = [Member(finish), Member(finish)]
    for member in members:
        drain.join(member)
    running = asyncio.create_task(drain.run(grace_s=60))
    await asyncio.sleep(0)  # let the drain start
    assert drain.started and not running.done()
    with pytest.raises(ShuttingDownError) as refused:
        drain.check("new")
    assert refused.value.stream == "new" and refused.value.retry_after_ms > 0
    finish.set()
    report = await running
    assert report.finished_in_grace and report.connections == 2
    assert [member.ended_with for member in members] == [SHUTDOWN_REASON] * 2


async def test_a_stream_that_outlasts_the_grace_is_ended() -> None:
    drain = Drain()
    stuck = Member(asyncio.Event())
    drain.join(stuck)
    report = await drain.run(grace_s=0.05)
    assert not report.finished_in_grace and stuck.ended_with == SHUTDOWN_REASON


async def test_a_connection_that_left_is_not_ended() -> None:
    drain, finish = Drain(), asyncio.Event()
    gone = Member(finish)
    drain.join(gone)
    drain.leave(gone)
    drain.check()  # not started: no refusal
    report = await drain.run(grace_s=1)
    assert report.connections == 0 and gone.ended_with is None

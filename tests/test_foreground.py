"""User work accounting (``app.foreground``) and overlapping model calls (``actors.occupancy``)."""

from __future__ import annotations

import asyncio
import time

from actors.occupancy import CallOccupancy
from app.foreground import Foreground


async def test_listeners_hear_each_new_item_once() -> None:
    foreground = Foreground()
    heard: list[bool] = []
    foreground.subscribe(lambda: heard.append(foreground.busy))
    foreground.enter("a")
    foreground.enter("a")  # idempotent
    foreground.enter("b")
    assert heard == [True, True]
    foreground.leave("a")
    assert foreground.busy
    foreground.leave("b")
    foreground.leave("b")
    assert not foreground.busy


async def test_wait_quiet_waits_for_the_quiet_period_after_the_last_item() -> None:
    foreground = Foreground()
    with foreground.active("stream"):
        waiting = asyncio.create_task(foreground.wait_quiet(0.2))
        await asyncio.sleep(0)
        assert not waiting.done(), "work in progress"
    left_at = time.monotonic()
    await waiting
    assert time.monotonic() - left_at >= 0.2


async def test_work_arriving_during_the_quiet_period_restarts_it() -> None:
    foreground = Foreground()
    foreground.enter("first")
    foreground.leave("first")
    waiting = asyncio.create_task(foreground.wait_quiet(0.15))
    await asyncio.sleep(0.1)
    with foreground.active("second"):
        await asyncio.sleep(0)
    left_at = time.monotonic()
    await waiting
    assert time.monotonic() - left_at >= 0.15


def test_a_call_is_solo_only_if_no_other_call_overlapped_it() -> None:
    occupancy = CallOccupancy()
    alone = occupancy.begin()
    assert occupancy.end(alone)
    first = occupancy.begin()
    second = occupancy.begin()  # overlaps the first, which is still running
    assert not occupancy.end(first)
    third = occupancy.begin()  # overlaps the second only
    assert not occupancy.end(second)
    assert not occupancy.end(third)
    assert occupancy.end(occupancy.begin())

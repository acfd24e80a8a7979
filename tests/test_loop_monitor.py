"""The event loop lag probe: its figures from a fake clock, then a real stall it must see."""

from __future__ import annotations

import asyncio
import time

from app.loop_monitor import LoopMonitor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lags_are_kept_for_the_window_and_the_worst_since_start() -> None:
    clock = FakeClock()
    observed: list[float] = []
    monitor = LoopMonitor(interval_s=0.05, window_s=10.0, observe=observed.append, clock=clock)
    monitor.record(2.0)
    clock.now = 5.0
    monitor.record(0.01)
    monitor.record(-0.001)  # a timer that fired early counts as no lag
    assert monitor.recent_max_s() == 2.0
    clock.now = 11.0
    assert monitor.recent_max_s() == 0.01, "the 2 s stall left the window"
    assert (monitor.max_s, monitor.last_s, monitor.samples) == (2.0, 0.0, 3)
    assert observed == [2.0, 0.01, 0.0]
    stats = monitor.stats()
    assert (stats["max_lag_ms"], stats["max_lag_ms_1m"], stats["interval_ms"]) == (2000.0, 10.0, 50)


async def test_a_blocking_call_on_the_loop_shows_as_lag() -> None:
    sampled = asyncio.Event()
    monitor = LoopMonitor(interval_s=0.01, observe=lambda lag: sampled.set())
    probe = asyncio.create_task(monitor.run())
    try:
        await sampled.wait()  # the probe runs
        sampled.clear()
        time.sleep(0.3)  # noqa: ASYNC251 - the fault under test: a blocking call on the loop
        await sampled.wait()
    finally:
        probe.cancel()
        await asyncio.wait([probe])
    assert monitor.max_s >= 0.25, monitor.stats()

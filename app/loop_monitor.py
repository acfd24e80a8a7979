"""How late the event loop runs: the server's own responsiveness, measured all the time.

Everything the server does for its clients (reading messages, pacing audio, answering ``/ready``)
runs on one asyncio event loop, so anything that holds it (a blocking call, a loop over an
unbounded count) delays every client at once. ``LoopMonitor.run`` sleeps ``interval_s`` over and
over and records how much later than asked each sleep ended: the lag a timer, a message or a
request met at that moment. ``GET /v1/stats`` reports the last, the worst of the last minute and
the worst since the server became ready (loading the model holds the interpreter for seconds
at a time, which says nothing about serving); Prometheus gets every sample
(``kokoro_event_loop_lag_seconds``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

INTERVAL_S = 0.05
"""How often the loop is probed (20 times a second: a stall of 50 ms or more is always seen)."""
WINDOW_S = 60.0
"""How far back ``recent_max_s`` looks."""


class LoopMonitor:
    """Probes the running event loop's lag (see the module docstring)."""

    def __init__(
        self,
        interval_s: float = INTERVAL_S,
        window_s: float = WINDOW_S,
        *,
        observe: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``observe`` gets every lag sample (the Prometheus histogram)."""
        if interval_s <= 0 or window_s < interval_s:
            raise ValueError("need interval_s > 0 and window_s >= interval_s")
        self.interval_s = interval_s
        self.window_s = window_s
        self._observe = observe
        self._clock = clock
        self._recent: deque[tuple[float, float]] = deque(maxlen=int(window_s / interval_s) + 1)
        self.last_s = 0.0
        self.max_s = 0.0
        self.samples = 0

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            asked = self._clock()
            await asyncio.sleep(self.interval_s)
            self.record(self._clock() - asked - self.interval_s)

    def record(self, lag_s: float) -> None:
        """One probe ended ``lag_s`` seconds later than asked."""
        lag_s = max(0.0, lag_s)
        self.last_s = lag_s
        self.max_s = max(self.max_s, lag_s)
        self.samples += 1
        self._recent.append((self._clock(), lag_s))
        if self._observe is not None:
            self._observe(lag_s)

    def restart_max(self) -> None:
        """Count ``max_s`` from now on (the service does this once it is ready)."""
        self.max_s = 0.0

    def recent_max_s(self) -> float:
        """The worst lag of the last ``window_s`` seconds."""
        since = self._clock() - self.window_s
        return max((lag for at, lag in self._recent if at >= since), default=0.0)

    def stats(self) -> dict[str, Any]:
        return {
            "interval_ms": round(self.interval_s * 1000),
            "lag_ms": round(self.last_s * 1000, 1),
            "max_lag_ms_1m": round(self.recent_max_s() * 1000, 1),
            "max_lag_ms": round(self.max_s * 1000, 1),
            "samples": self.samples,
        }

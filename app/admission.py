"""Admission control: how many streams may be synthesizing at once, and what happens to more.

A stream costs compute from its ``start`` until its last segment has been synthesized (its end
received and every segment made); after that it only plays out audio already made. While a
stream is synthesizing, its client plays one second of audio per second, so it needs the
sessions to produce at least that. The sessions together produce ``throughput`` audio seconds
per wall second (measured by the scheduler from recent jobs), so

    capacity = max(1, floor(throughput * utilization))

streams may synthesize at once; ``utilization`` below 1 keeps headroom for the bursts of new
streams' first segments and for measurement noise.

Throughput is not the only limit: a segment runs whole on one session, so a stream's next
segment can wait behind another stream's, and early in a stream (well under a second of audio
buffered) that wait is an underrun. So a session takes a second stream only where the longest
segment (``segment_seconds``: the segmenter's character cap at the measured seconds per
character) takes less than ``segment_wait_s``, and more as it gets faster:

    per_session = 1 + floor(segment_wait_s / segment_seconds)
    capacity = min(capacity, sessions * per_session)

On a CPU (a 300-character segment takes 2-3 s here) that is one stream per session; on an
accelerator that makes the same segment in 0.1 s, throughput decides.
A fixed ``max_streams`` overrides the measurement. A whole-text (HTTP) request holds a slot
like a stream while it is synthesized. A stream beyond capacity is refused with
``busy`` and a ``retry_after_ms`` (or, with ``wait_s`` set, waits up to that long, first come
first served, for a slot).

``retry_after_ms`` estimates when a slot will free for the refused client: each holder says
when its own slot frees (``frees_in``: its queued work, its client's playback, and for a stream
not yet ended its idle deadline, see ``Pipeline``), and the client needs the first of them, or
a later one when others are waiting before it or capacity is below the holders. It is a hint
for the client's backoff, clamped to 0.1-60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from actors.messages import StreamKey
from app.errors import BusyError
from app.memory_pressure import MemoryMonitor

MIN_RETRY_MS = 100
MAX_RETRY_MS = 60_000
PAUSED_RETRY_MS = 2000
"""Retry hint while admission is paused (a plan swap builds and warms in 2-8 s here)."""
REQUEST_SESSION = "http"
"""The session name of whole-text (HTTP) requests' slots; a connection's is 12 hex digits."""
MAX_PER_SESSION = 1_000_000
"""No limit per session (throughput decides)."""
MEMORY_RETRY_MS = 3000
"""Retry hint under memory pressure: the level drops 2 s after usage does, at the earliest."""


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    max_streams: int = 0
    """Streams synthesizing at once; 0 derives it from the measured throughput."""
    utilization: float = 0.6
    """Share of the measured throughput that admitted streams may use (with ``max_streams=0``).

    Below 1 because a new stream's first segments must come faster than real time, and for
    measurement noise. On the reference machine (one session, about 2.3 audio s/s) two streams
    synthesizing at once (0.87 of it) had underruns in 5 of 6 streams, one stream (0.43) none.
    When the same machine measured 3.4 audio s/s, 0.6 alone admitted two, and they had underruns
    too: the wait behind another stream's segment, which ``segment_wait_s`` bounds."""
    segment_wait_s: float = 1.0
    """How long a stream's segment may wait behind another stream's longest segment on the same
    session (see the module docstring)."""
    wait_s: float = 0.0
    """How long a stream beyond capacity waits for a slot before ``busy``; 0 refuses at once."""

    def __post_init__(self) -> None:
        if self.max_streams < 0:
            raise ValueError("max_streams must be >= 0 (0 means: from measured throughput)")
        if not 0 < self.utilization <= 2:
            raise ValueError("utilization must be in (0, 2]")
        if self.segment_wait_s < 0:
            raise ValueError("segment_wait_s must be >= 0")
        if self.wait_s < 0:
            raise ValueError("wait_s must be >= 0")


class Admission:
    """Counts synthesizing streams against capacity; refuses or queues the rest."""

    def __init__(
        self,
        policy: AdmissionPolicy,
        *,
        throughput: Callable[[], float],
        workers: Callable[[], int],
        frees_in: Callable[[StreamKey], float],
        segment_seconds: Callable[[], float] | None = None,
        memory: MemoryMonitor | None = None,
    ) -> None:
        """``frees_in``: seconds until a holder's slot is likely to free; ``segment_seconds``:
        how long the longest segment takes on one session (None: no limit per session);
        ``memory``: under pressure it lowers capacity and refuses new streams."""
        self.policy = policy
        self._memory = memory
        self._throughput = throughput
        self._workers = workers
        self._frees_in = frees_in
        self._segment_seconds = segment_seconds
        self._generating: set[StreamKey] = set()
        self._waiters: deque[tuple[StreamKey, asyncio.Future[None]]] = deque()
        self.admitted = 0
        self.refused = 0
        self.waited = 0
        self._paused: str | None = None

    def capacity(self) -> int:
        if self.policy.max_streams:
            capacity = self.policy.max_streams
        else:
            capacity = max(1, math.floor(self._throughput() * self.policy.utilization + 1e-9))
            capacity = min(capacity, self.per_session_limit() * max(1, self._workers()))
        return self._memory.capacity(capacity) if self._memory is not None else capacity

    def per_session_limit(self) -> int:
        """Streams one session may synthesize at once without a segment waiting longer than
        ``segment_wait_s`` behind another stream's (see the module docstring)."""
        if self._segment_seconds is None:
            return MAX_PER_SESSION
        longest = self._segment_seconds()
        if longest <= 0:
            return MAX_PER_SESSION
        return min(MAX_PER_SESSION, 1 + math.floor(self.policy.segment_wait_s / longest + 1e-9))

    @property
    def generating(self) -> int:
        return len(self._generating)

    def _has_room(self) -> bool:
        return self._paused is None and len(self._generating) < self.capacity()

    @contextlib.contextmanager
    def paused(self, reason: str) -> Iterator[None]:
        """Admit no new stream meanwhile (streams already admitted go on), e.g. while a plan
        swap builds and warms sessions: a stream's first segments, which must come faster than
        real time, would compete with that work for the cores."""
        self._paused = reason
        try:
            yield
        finally:
            self._paused = None
            self._grant()

    async def admit(self, key: StreamKey) -> None:
        """Count ``key`` as synthesizing, waiting for a slot if configured; else ``BusyError``.

        Low memory refuses at once: waiting would hold the client for seconds the hold before
        recovery (``memory_pressure``) makes certain to pass anyway."""
        low_memory = self._memory.refusal() if self._memory is not None else None
        if low_memory is not None:
            self._refuse(key, low_memory)
        if not self._waiters and self._has_room():
            self._take(key)
            return
        if self.policy.wait_s <= 0:
            self._refuse(key)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (key, future)
        self._waiters.append(waiter)
        self.waited += 1
        try:
            async with asyncio.timeout(self.policy.wait_s):
                await asyncio.shield(future)
        except TimeoutError:
            pass
        except BaseException:  # the connection went away while waiting
            if future.done():
                self.release(key)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            future.cancel()  # no-op once admitted; a late grant now skips this waiter
        if not (future.done() and not future.cancelled()):
            self._refuse(key)

    def release(self, key: StreamKey) -> None:
        """The stream finished synthesizing, or ended: its slot is free (idempotent)."""
        if key in self._generating:
            self._generating.remove(key)
            self._grant()

    def refresh(self) -> None:
        """Capacity may have grown (new measurements): let waiters in."""
        self._grant()

    def _take(self, key: StreamKey) -> None:
        self._generating.add(key)
        self.admitted += 1

    def _grant(self) -> None:
        while self._waiters and self._has_room():
            key, future = self._waiters.popleft()
            if future.done():
                continue
            self._take(key)
            future.set_result(None)

    def _refuse(self, key: StreamKey, low_memory: str | None = None) -> NoReturn:
        self.refused += 1
        if low_memory is not None:
            why, retry_ms = low_memory, MEMORY_RETRY_MS
        elif self._paused is not None:
            why, retry_ms = f"new streams wait while {self._paused}", PAUSED_RETRY_MS
        else:
            why = f"the server is at capacity ({self.capacity()} streams synthesizing)"
            retry_ms = self.retry_after_ms()
        raise BusyError(
            f"{why}; retry after retry_after_ms", retry_after_ms=retry_ms, stream=key.stream
        )

    def retry_after_ms(self) -> int:
        """When a slot is likely to free (see the module docstring)."""
        if self._paused is not None:
            return PAUSED_RETRY_MS
        frees = sorted(self._frees_in(key) for key in self._generating)
        if not frees:
            return MIN_RETRY_MS
        # Slots to free before one is ours: the holders over capacity, then the waiters' own.
        before = max(0, len(frees) - self.capacity()) + len(self._waiters)
        estimate_ms = frees[min(before, len(frees) - 1)] * 1000
        return int(min(MAX_RETRY_MS, max(MIN_RETRY_MS, estimate_ms)))

    def stats(self) -> dict[str, Any]:
        return {
            "capacity_streams": self.capacity(),
            "generating_streams": len(self._generating),
            "generating_requests": sum(k.session == REQUEST_SESSION for k in self._generating),
            "waiting_streams": len(self._waiters),
            "admitted_total": self.admitted,
            "refused_total": self.refused,
            "waited_total": self.waited,
            "throughput_audio_per_s": round(self._throughput(), 3),
            "utilization": self.policy.utilization,
            "per_session_limit": self.per_session_limit(),
            "max_streams": self.policy.max_streams or None,
            "wait_ms": round(self.policy.wait_s * 1000),
            "paused": self._paused,
        }

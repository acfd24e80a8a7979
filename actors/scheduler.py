"""The scheduler: one for the server, ordering inference jobs across streams by deadline.

A stream's next segment is due when its client would run out of audio: for a new stream that is
now, for a stream whose client holds ``lead`` seconds of audio it is ``lead`` seconds from the
last report. Idle inference actors always take the job with the earliest deadline, so a new
stream's first words overtake the tail of a long one.

A stream has at most one job in flight, and a stream whose chunker reports enough audio ahead of
its client (``StreamDemand``) is not served at all until it reports otherwise: a slow or paused
client costs neither compute nor memory. Enough means ``max_lead_seconds``, or more when the
stream's longest queued segment would take longer than that to synthesize: its lead must then
cover ``LEAD_SAFETY`` times that segment's estimated generation time (from the seconds per
character that completed jobs took), or the client would run dry while it is made.

Fallback: when a worker fails a job (``WorkerFailed``), the job goes back to the front of its
stream's queue and runs on the next idle worker; the failed worker stays out of the idle pool
until it reports ``WorkerIdle`` after a successful health probe. A job that has failed
``max_attempts`` times is given up: its stream gets a ``SegmentFailed``. So is every waiting
job when a health probe fails while no worker is healthy: nothing could run it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from actors.base import Actor
from actors.inference import InferenceActor
from actors.messages import (
    CancelStream,
    SegmentFailed,
    SegmentJob,
    StreamDemand,
    StreamKey,
    WorkerFailed,
    WorkerIdle,
    WorkerProbeFailed,
)

LEAD_SAFETY = 1.5
"""Lead to keep, as a multiple of the longest queued segment's estimated generation time."""
INITIAL_SECONDS_PER_CHAR = 0.03
"""Generation seconds per character before any job has been timed (RTF ~0.45 at ~15 chars/s)."""


@dataclass(slots=True)
class _StreamQueue:
    jobs: deque[SegmentJob] = field(default_factory=deque)
    lead_seconds: float = 0.0
    lead_at: float = 0.0
    in_flight: bool = False

    @property
    def deadline(self) -> float:
        return self.lead_at + self.lead_seconds


class Scheduler(Actor[SegmentJob]):
    """Earliest-deadline-first dispatch of segment jobs to idle inference actors."""

    def __init__(
        self,
        workers: Sequence[InferenceActor],
        *,
        max_lead_seconds: float = 2.0,
        mailbox_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
        max_attempts: int = 3,
        give_up: Callable[[SegmentFailed], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(name="scheduler", mailbox_size=mailbox_size)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.retries = 0
        self.given_up = 0
        self._give_up = give_up
        self._workers = {worker.name: worker for worker in workers}
        self._out: set[str] = set()
        self.seconds_per_char = INITIAL_SECONDS_PER_CHAR
        self._idle: deque[str] = deque(self._workers)
        self._busy: dict[str, StreamKey] = {}
        self._streams: dict[StreamKey, _StreamQueue] = {}
        self.max_lead_seconds = max_lead_seconds
        self._clock = clock

    @property
    def queued_jobs(self) -> int:
        return sum(len(state.jobs) for state in self._streams.values())

    def _stream(self, key: StreamKey) -> _StreamQueue:
        state = self._streams.get(key)
        if state is None:
            state = self._streams[key] = _StreamQueue(lead_at=self._clock())
        return state

    async def handle(self, job: SegmentJob) -> None:
        state = self._stream(job.key)
        if not state.jobs and not state.in_flight and state.lead_seconds == 0.0:
            state.lead_at = job.received_at
        state.jobs.append(replace(job, queued_at=self._clock()))
        await self._dispatch()

    async def handle_control(self, message: object) -> None:
        if isinstance(message, WorkerIdle):
            if message.chars > 0:
                cost = message.gen_seconds / message.chars
                self.seconds_per_char += 0.3 * (cost - self.seconds_per_char)
            key = self._busy.pop(message.worker, None)
            if key is not None and key in self._streams:
                self._streams[key].in_flight = False
            self._out.discard(message.worker)
            if message.worker not in self._idle:
                self._idle.append(message.worker)
        elif isinstance(message, WorkerFailed):
            self._out.add(message.worker)
            await self._retry(message)
        elif isinstance(message, WorkerProbeFailed):
            if self._out >= set(self._workers):
                await self._give_up_waiting("no inference session is healthy")
        elif isinstance(message, StreamDemand):
            state = self._stream(message.key)
            state.lead_seconds, state.lead_at = message.lead_seconds, message.at
        elif isinstance(message, CancelStream):  # also sent when a stream ends normally
            self._streams.pop(message.key, None)
            # A job of the cancelled stream still running must not, when its worker reports
            # idle, free a new stream that reuses the key.
            for name in [name for name, key in self._busy.items() if key == message.key]:
                del self._busy[name]
            for worker in self._workers.values():
                worker.abort(message.key)
        await self._dispatch()

    def _lead_wanted(self, state: _StreamQueue) -> float:
        """Serve the stream while its lead is below this (see the module docstring)."""
        longest = max(len(job.segment.text) for job in state.jobs)
        return max(self.max_lead_seconds, LEAD_SAFETY * self.seconds_per_char * longest)

    async def _retry(self, failed: WorkerFailed) -> None:
        """Put a failed job back at the front of its stream's queue, or give it up."""
        key = self._busy.pop(failed.worker, None)
        state = self._streams.get(failed.job.key)
        if state is None or key != failed.job.key:
            return  # the stream was cancelled or ended meanwhile
        state.in_flight = False
        attempt = failed.job.attempt + 1
        if attempt < self.max_attempts:
            self.retries += 1
            state.jobs.appendleft(replace(failed.job, attempt=attempt, queued_at=self._clock()))
            return
        self.given_up += 1
        if self._give_up is not None:
            message = f"synthesis failed {attempt} times; last: {failed.reason}"
            await self._give_up(SegmentFailed(failed.job, "inference_failed", message))
        del self._streams[failed.job.key]

    async def _give_up_waiting(self, reason: str) -> None:
        """Fail every stream that has a job waiting: no worker could run it."""
        for key, state in list(self._streams.items()):
            if not state.jobs:
                continue
            job = state.jobs.popleft()
            state.jobs.clear()
            self.given_up += 1
            if self._give_up is not None:
                await self._give_up(SegmentFailed(job, "inference_failed", reason))
            del self._streams[key]

    @property
    def idle_workers(self) -> list[str]:
        return list(self._idle)

    def _next(self) -> tuple[StreamKey, _StreamQueue] | None:
        eligible = [
            (state.deadline, key, state)
            for key, state in self._streams.items()
            if state.jobs and not state.in_flight and state.lead_seconds < self._lead_wanted(state)
        ]
        if not eligible:
            return None
        _, key, state = min(eligible, key=lambda item: (item[0], item[1]))
        return key, state

    async def _dispatch(self) -> None:
        while self._idle:
            picked = self._next()
            if picked is None:
                return
            key, state = picked
            job = state.jobs.popleft()
            state.in_flight = True
            worker = self._workers[self._idle.popleft()]
            self._busy[worker.name] = key
            worker.send_nowait(replace(job, deadline=state.deadline))

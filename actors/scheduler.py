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

Work ahead: when a worker would otherwise sit idle because every stream holds enough lead, it
takes the next job of the stream with the least lead anyway, as long as that stream holds less
than ``work_ahead_seconds``. Spare compute becomes buffered audio, which keeps the sessions busy
at saturation and lets streams finish their synthesis (and free their admission slot) early. Such
a job is speculative: when a stream's job becomes due and no worker is idle, a speculative job is
preempted (aborted through ``InferenceActor.abort``, whose True guarantees no audio is delivered)
and goes back to the front of its stream's queue.

Throughput: each worker's recent audio seconds per generation second (over its last
``RATE_WINDOW`` jobs) summed over healthy workers is what the sessions can produce per wall
second; admission control turns it into a number of streams. Only jobs during which no healthy
worker sat idle count: sessions sharing the cores are slower than one running alone, and
capacity is about the shared case. Until such jobs exist, a worker's rate is the
seed it was given.

Replacing workers (a provider-plan swap): ``ReplaceWorkers`` adds the new workers to the idle
pool at once and retires the old ones: they take no new job, and each is reported to
``retired`` as soon as it holds none (at once if idle, else when its running job ends).

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
INITIAL_AUDIO_PER_CHAR = 0.067
"""Audio seconds per character before any job has been timed (~15 characters a second)."""
RATE_WINDOW = 32
"""Jobs per worker over which its audio-per-generation-second rate is measured."""


@dataclass(frozen=True, slots=True)
class ReplaceWorkers:
    """Control message: serve with ``add`` from now on; retire the workers named in ``retire``."""

    add: tuple[InferenceActor, ...]
    retire: frozenset[str]
    initial_rate: float
    """Per-worker rate assumed for the new workers until their jobs are timed."""


@dataclass(slots=True)
class _Running:
    job: SegmentJob
    speculative: bool
    saturated: bool = True
    """No healthy worker has sat idle while the job ran."""


@dataclass(slots=True)
class _Rate:
    """A worker's recent output: audio seconds over generation seconds of its last jobs."""

    seed: float
    jobs: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def add(self, audio_seconds: float, gen_seconds: float) -> None:
        self.jobs.append((audio_seconds, gen_seconds))

    @property
    def value(self) -> float:
        gen = sum(job[1] for job in self.jobs)
        return sum(job[0] for job in self.jobs) / gen if gen > 0 else self.seed


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
        work_ahead_seconds: float = 0.0,
        initial_rate: float = 2.0,
        measured: Callable[[], None] | None = None,
        retired: Callable[[str], None] | None = None,
    ) -> None:
        """``initial_rate``: audio seconds per generation second assumed per worker until its
        own jobs have been timed (the provider benchmark's figure, where there is one);
        ``measured`` is called after each timed job (throughput may have changed)."""
        super().__init__(name="scheduler", mailbox_size=mailbox_size)
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.retries = 0
        self.given_up = 0
        self.preemptions = 0
        self.work_ahead_seconds = work_ahead_seconds
        self._measured = measured
        self._retired = retired
        self._retiring: set[str] = set()
        self._give_up = give_up
        self._workers = {worker.name: worker for worker in workers}
        self._out: set[str] = set()
        self.seconds_per_char = INITIAL_SECONDS_PER_CHAR
        self.audio_per_char = INITIAL_AUDIO_PER_CHAR
        self._rates = {name: _Rate(initial_rate) for name in self._workers}
        self._idle: deque[str] = deque(self._workers)
        self._busy: dict[str, _Running] = {}
        self._preempted: set[str] = set()
        """Workers whose speculative job was aborted and that have not reported idle yet."""
        self._streams: dict[StreamKey, _StreamQueue] = {}
        self.max_lead_seconds = max_lead_seconds
        self._clock = clock

    @property
    def queued_jobs(self) -> int:
        return sum(len(state.jobs) for state in self._streams.values())

    def throughput(self) -> float:
        """Audio seconds the healthy workers produce per wall second when all are busy."""
        return sum(
            rate.value
            for name, rate in self._rates.items()
            if name not in self._out and name not in self._retiring
        )

    @property
    def healthy_workers(self) -> int:
        return len(set(self._workers) - self._out - self._retiring)

    def remaining_chars(self, key: StreamKey) -> int:
        """Characters of the stream's queued and running jobs."""
        state = self._streams.get(key)
        if state is None:
            return 0
        chars = sum(len(job.segment.text) for job in state.jobs)
        chars += sum(len(run.job.segment.text) for run in self._busy.values() if run.job.key == key)
        return chars

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
                if message.audio_seconds > 0:
                    spoken = message.audio_seconds / message.chars
                    self.audio_per_char += 0.3 * (spoken - self.audio_per_char)
            running = self._busy.pop(message.worker, None)
            timed = message.audio_seconds > 0 and message.worker in self._rates
            if timed and running is not None and running.saturated:
                self._rates[message.worker].add(message.audio_seconds, message.gen_seconds)
                if self._measured is not None:
                    self._measured()
            if running is not None and running.job.key in self._streams:
                self._streams[running.job.key].in_flight = False
            self._preempted.discard(message.worker)
            self._out.discard(message.worker)
            if message.worker in self._retiring:
                self._retire_now(message.worker)
            elif message.worker in self._workers and message.worker not in self._idle:
                self._idle.append(message.worker)
        elif isinstance(message, WorkerFailed):
            self._out.add(message.worker)
            await self._retry(message)
            if message.worker in self._retiring:
                self._retire_now(message.worker)
        elif isinstance(message, ReplaceWorkers):
            self._replace(message)
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
            for name in [name for name, run in self._busy.items() if run.job.key == message.key]:
                del self._busy[name]
            for worker in self._workers.values():
                worker.abort(message.key)
        await self._dispatch()

    def _replace(self, message: ReplaceWorkers) -> None:
        for worker in message.add:
            self._workers[worker.name] = worker
            self._rates[worker.name] = _Rate(message.initial_rate)
            self._idle.append(worker.name)
        for name in message.retire & set(self._workers):
            self._retiring.add(name)
            if name in self._idle:
                self._idle.remove(name)
            if name not in self._busy and name not in self._preempted:
                self._retire_now(name)  # idle, or out of rotation: holds no job

    def _retire_now(self, name: str) -> None:
        self._retiring.discard(name)
        self._workers.pop(name, None)
        self._rates.pop(name, None)
        self._out.discard(name)
        if self._retired is not None:
            self._retired(name)

    def _lead_wanted(self, state: _StreamQueue) -> float:
        """Serve the stream while its lead is below this (see the module docstring)."""
        longest = max(len(job.segment.text) for job in state.jobs)
        return max(self.max_lead_seconds, LEAD_SAFETY * self.seconds_per_char * longest)

    async def _retry(self, failed: WorkerFailed) -> None:
        """Put a failed job back at the front of its stream's queue, or give it up."""
        running = self._busy.pop(failed.worker, None)
        state = self._streams.get(failed.job.key)
        if state is None or running is None or running.job.key != failed.job.key:
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

    def _due(self) -> list[tuple[float, StreamKey, _StreamQueue]]:
        """Streams whose next job should run now (lead below what they need), by deadline."""
        return sorted(
            (
                (state.deadline, key, state)
                for key, state in self._streams.items()
                if state.jobs
                and not state.in_flight
                and state.lead_seconds < self._lead_wanted(state)
            ),
            key=lambda item: (item[0], item[1]),
        )

    def _ahead(self) -> tuple[StreamKey, _StreamQueue] | None:
        """The stream a spare worker should work ahead for: least lead, under the cap."""
        now = self._clock()
        eligible = [
            (state.deadline, key, state)
            for key, state in self._streams.items()
            if state.jobs and not state.in_flight and state.deadline - now < self.work_ahead_seconds
        ]
        if not eligible:
            return None
        _, key, state = min(eligible, key=lambda item: (item[0], item[1]))
        return key, state

    def _start(self, key: StreamKey, state: _StreamQueue, *, speculative: bool) -> None:
        job = replace(state.jobs.popleft(), deadline=state.deadline)
        state.in_flight = True
        worker = self._workers[self._idle.popleft()]
        self._busy[worker.name] = _Running(job, speculative)
        worker.send_nowait(job)

    def _preempt(self, wanted: int) -> None:
        """Abort speculative jobs until ``wanted`` workers are on their way to idle."""
        for name, running in list(self._busy.items()):
            if len(self._preempted) >= wanted:
                return
            if not running.speculative or not self._workers[name].abort(running.job.key):
                continue  # a job that already finished reports idle by itself
            del self._busy[name]
            self._preempted.add(name)
            self.preemptions += 1
            state = self._streams.get(running.job.key)
            if state is not None:
                state.in_flight = False
                state.jobs.appendleft(replace(running.job, queued_at=self._clock()))

    async def _dispatch(self) -> None:
        self._fill()
        if self._idle:  # a session runs alone: the others' jobs are not measuring saturation
            for running in self._busy.values():
                running.saturated = False

    def _fill(self) -> None:
        due = self._due()
        while due and self._idle:
            _, key, state = due.pop(0)
            self._start(key, state, speculative=False)
        if due:
            self._preempt(len(due))
            return
        while self._idle and self.work_ahead_seconds > 0:
            picked = self._ahead()
            if picked is None:
                return
            self._start(*picked, speculative=True)

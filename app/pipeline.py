"""The server-wide half of the streaming pipeline: scheduler, inference actors, metrics.

Per-stream actors (segmenter, chunker) belong to their WebSocket connection; they reach the
shared actors through this object, which also routes each segment's audio back to the chunker of
the stream it belongs to (a stream that was cancelled meanwhile simply gets nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.base import ActorClosed
from actors.chunker import StreamChunker
from actors.inference import InferenceActor
from actors.messages import (
    CancelStream,
    SegmentAudio,
    SegmentFailed,
    SegmentGenerated,
    StreamKey,
    WorkerFailed,
    WorkerIdle,
    WorkerProbeFailed,
)
from actors.metrics import MetricsActor
from actors.occupancy import CallOccupancy
from actors.scheduler import ReplaceWorkers, Scheduler
from actors.segmentation import SegmenterPolicy
from actors.supervisor import Supervisor
from app.admission import REQUEST_SESSION, Admission, AdmissionPolicy
from app.foreground import Foreground
from app.memory_pressure import MemoryMonitor
from app.process import rss_bytes
from app.prometheus_metrics import PrometheusMetrics
from app.providers import short_name
from app.tts.engine import SAMPLE_RATE, Engine
from app.tts.synthesizer import Synthesizer

MAX_SEGMENT_CHARS = SegmenterPolicy().max_chars
"""The longest segment the segmenter cuts: admission's measure of a session's longest wait."""


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """How inference failures are handled (see ``actors.inference``)."""

    timeout_s: float = 30.0
    probe_after_s: float = 5.0
    probe_max_s: float = 60.0
    """Longest wait between probes (the wait doubles after each failed probe)."""
    max_attempts: int = 3


class Pipeline:
    """Owns the shared actors and the registry of live streams' chunkers."""

    def __init__(
        self,
        synthesizer: Synthesizer,
        *,
        max_lead_seconds: float,
        fallback: FallbackPolicy = FallbackPolicy(),
        probe_voice: str = "jm_kumo",
        admission: AdmissionPolicy | None = None,
        work_ahead_seconds: float = 0.0,
        initial_rate: float = 2.0,
        prometheus: PrometheusMetrics | None = None,
        foreground: Foreground | None = None,
        memory: MemoryMonitor | None = None,
    ) -> None:
        """``initial_rate``: audio seconds per generation second assumed for each session until
        its own jobs are timed (see ``actors.scheduler``); ``prometheus``: where the metrics
        actor exports to (the service's, which outlives pipelines); ``foreground``: where
        streams are counted as user work (the service's, which background work watches);
        ``memory``: the memory monitor admission obeys."""
        self.synthesizer = synthesizer
        self.foreground = foreground or Foreground()
        self.occupancy = CallOccupancy()
        self.metrics = MetricsActor(prometheus=prometheus)
        self._fallback = fallback
        self._probe_voice = probe_voice
        self._serial = 0
        self.workers = [self._new_worker(engine) for engine in synthesizer.engines]
        self.scheduler = Scheduler(
            self.workers,
            max_lead_seconds=max_lead_seconds,
            max_attempts=fallback.max_attempts,
            give_up=self._deliver,
            work_ahead_seconds=work_ahead_seconds,
            initial_rate=initial_rate,
            measured=self._throughput_measured,
            retired=self._worker_retired,
        )
        self.admission = Admission(
            admission or AdmissionPolicy(),
            throughput=self.scheduler.throughput,
            workers=lambda: self.scheduler.healthy_workers,
            frees_in=self._frees_in,
            segment_seconds=lambda: MAX_SEGMENT_CHARS * self.scheduler.seconds_per_char,
            memory=memory,
        )
        self.max_lead_seconds = max_lead_seconds
        self._chunkers: dict[StreamKey, StreamChunker] = {}
        self._frees_at: dict[StreamKey, Callable[[], float | None]] = {}
        self._requests: dict[StreamKey, tuple[float, float]] = {}
        """Whole-text requests holding a slot: when each started, its estimated seconds."""
        self._request_serial = itertools.count(1)
        self._supervisor: Supervisor | None = None
        self._retired: dict[str, asyncio.Event] = {}

    def _new_worker(self, engine: Engine) -> InferenceActor:
        """An inference actor for one session; names are never reused (``inference:cpu-3``)."""
        name = f"inference:{short_name(engine.providers[0])}-{self._serial}"
        self._serial += 1
        fallback = self._fallback
        return InferenceActor(
            name,
            self.synthesizer,
            self._deliver,
            self._worker_idle,
            engine=engine,
            on_failed=self._worker_failed,
            timeout_s=fallback.timeout_s,
            probe_after_s=fallback.probe_after_s,
            probe_max_s=fallback.probe_max_s,
            probe_voice=self._probe_voice,
            occupancy=self.occupancy,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Pipeline]:
        """Start metrics, inference actors and scheduler; stop them in reverse order."""
        async with Supervisor(name="pipeline", drain_timeout=5.0) as supervisor:
            await supervisor.start(self.metrics)
            for worker in self.workers:
                await supervisor.start(worker)
            await supervisor.start(self.scheduler)
            self._supervisor = supervisor
            try:
                yield self
            finally:
                self._supervisor = None

    async def replace_engines(self, engines: Sequence[Engine], initial_rate: float) -> float:
        """Serve with new (warmed) sessions from now on; wait until the old ones are idle.

        New jobs go to the new workers at once; a job already running on an old worker finishes
        there and its audio is delivered as usual, so no stream loses or repeats a sample.
        Returns the seconds spent draining the old workers.
        """
        if self._supervisor is None:
            raise RuntimeError("the pipeline is not running")
        added = [self._new_worker(engine) for engine in engines]
        for worker in added:
            await self._supervisor.start(worker)
        old = self.workers
        events = {worker.name: asyncio.Event() for worker in old}
        self._retired.update(events)
        self.workers = added
        started = time.perf_counter()
        self.scheduler.control(
            ReplaceWorkers(tuple(added), frozenset(events), initial_rate=initial_rate)
        )
        await asyncio.gather(*(event.wait() for event in events.values()))
        drained = time.perf_counter() - started
        for worker in old:
            await self._supervisor.stop_actor(worker, drain_timeout=1.0)
            self._retired.pop(worker.name, None)
        return drained

    def _worker_retired(self, name: str) -> None:
        event = self._retired.get(name)
        if event is not None:
            event.set()

    @property
    def active_streams(self) -> int:
        return len(self._chunkers)

    def stats(self) -> dict[str, Any]:
        """Metrics aggregates plus the live state of queues and streams."""
        streams = {
            str(key): {
                "buffered_ms": round(chunker.unsent_samples() / SAMPLE_RATE * 1000, 1),
                "client_lead_ms": round(chunker.client_lead_seconds() * 1000, 1),
                "frame_ms": chunker.sizer.frame_ms,
                "sent_samples": chunker.sent_samples,
            }
            for key, chunker in self._chunkers.items()
        }
        return {
            **self.metrics.snapshot(),
            "scheduler": {
                "queued_jobs": self.scheduler.queued_jobs,
                "mailbox_depth": self.scheduler.mailbox_depth,
                "retries": self.scheduler.retries,
                "given_up": self.scheduler.given_up,
                "preemptions": self.scheduler.preemptions,
                "work_ahead_ms": round(self.scheduler.work_ahead_seconds * 1000),
            },
            "admission": self.admission.stats(),
            "process": {"rss_bytes": rss_bytes()},
            "inference": {worker.name: worker.stats() for worker in self.workers},
            "live_streams": streams,
        }

    def _frees_in(self, key: StreamKey) -> float:
        """Seconds until ``key``'s admission slot is likely to free.

        A whole-text request: its estimate less the time it has run. A stream: its queued work
        at the measured seconds per character, stretched by the streams sharing each session;
        but its last segment is made only once its client's playback has come within the lead
        the scheduler allows (``work_ahead_seconds``, at least ``max_lead_seconds``) of it, so no
        sooner than its unplayed and queued audio less that lead; and a stream not yet ended
        frees no sooner than its end, at the latest its idle deadline."""
        now = time.monotonic()
        if key in self._requests:
            started, estimate = self._requests[key]
            return max(0.0, estimate - (now - started))
        scheduler = self.scheduler
        sharing = max(1.0, self.admission.generating / max(1, scheduler.healthy_workers))
        chars = scheduler.remaining_chars(key)
        work = chars * scheduler.seconds_per_char * sharing
        chunker = self._chunkers.get(key)
        unplayed = chunker.lead_seconds() if chunker is not None else 0.0
        queued_audio = chars * scheduler.audio_per_char
        allowed = max(self.max_lead_seconds, scheduler.work_ahead_seconds)
        frees = max(work, unplayed + queued_audio - allowed)
        frees_at = self._frees_at.get(key)
        deadline = frees_at() if frees_at is not None else None
        return frees if deadline is None else max(frees, deadline - now)

    @contextlib.asynccontextmanager
    async def whole_text(self, characters: int) -> AsyncIterator[None]:
        """Hold an admission slot while a whole-text (HTTP) request is synthesized.

        Such a request keeps a session as busy as a synthesizing stream does, so it counts
        against the same capacity: beyond it, ``BusyError`` (or a wait, by the policy), and
        streams already admitted keep their share of the sessions."""
        key = StreamKey(REQUEST_SESSION, f"request-{next(self._request_serial)}")
        self._requests[key] = (time.monotonic(), characters * self.scheduler.seconds_per_char)
        try:
            await self.admit(key)
            try:
                yield
            finally:
                self.admission.release(key)
                self.foreground.leave(key)
        finally:
            del self._requests[key]

    async def admit(self, key: StreamKey) -> None:
        """Count ``key`` as user work, then take an admission slot (``BusyError`` if none)."""
        self.foreground.enter(key)
        try:
            await self.admission.admit(key)
        except BaseException:
            self.foreground.leave(key)
            raise

    def register(
        self,
        key: StreamKey,
        chunker: StreamChunker,
        frees_at: Callable[[], float | None] | None = None,
    ) -> None:
        """A stream's chunker, to route its audio to; ``frees_at`` says until when (monotonic)
        the stream may still get text, None once it has ended (for the retry hint)."""
        self._chunkers[key] = chunker
        if frees_at is not None:
            self._frees_at[key] = frees_at

    def generated(self, key: StreamKey) -> None:
        """The stream's synthesis is complete: its admission slot is free."""
        self.admission.release(key)

    def release(self, key: StreamKey) -> None:
        """Forget a stream and drop whatever the scheduler still holds for it."""
        self._chunkers.pop(key, None)
        self._frees_at.pop(key, None)
        self.admission.release(key)
        self.foreground.leave(key)
        with contextlib.suppress(ActorClosed):
            self.scheduler.control(CancelStream(key))

    def _throughput_measured(self) -> None:
        self.admission.refresh()  # capacity may have grown

    def _worker_idle(self, idle: WorkerIdle) -> None:
        with contextlib.suppress(ActorClosed):
            self.scheduler.control(idle)

    def _worker_failed(self, failed: WorkerFailed | WorkerProbeFailed) -> None:
        with contextlib.suppress(ActorClosed):
            self.scheduler.control(failed)

    async def _deliver(self, outcome: SegmentAudio | SegmentFailed) -> None:
        key = outcome.job.key
        if isinstance(outcome, SegmentAudio) and not outcome.first_part:
            self.metrics.observe(
                SegmentGenerated(
                    key,
                    outcome.job.segment.index,
                    outcome.gen_seconds,
                    outcome.queue_seconds,
                    len(outcome.audio) / SAMPLE_RATE,
                    outcome.provider,
                    outcome.engine_seconds,
                    outcome.solo,
                )
            )
        chunker = self._chunkers.get(key)
        if chunker is not None:
            with contextlib.suppress(ActorClosed):
                await chunker.send(outcome)

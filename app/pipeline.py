"""The server-wide half of the streaming pipeline: scheduler, inference actors, metrics.

Per-stream actors (segmenter, chunker) belong to their WebSocket connection; they reach the
shared actors through this object, which also routes each segment's audio back to the chunker of
the stream it belongs to (a stream that was cancelled meanwhile simply gets nothing).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
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
from actors.scheduler import Scheduler
from actors.supervisor import Supervisor
from app.providers import short_name
from app.tts.engine import SAMPLE_RATE
from app.tts.synthesizer import Synthesizer


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
    ) -> None:
        self.synthesizer = synthesizer
        self.metrics = MetricsActor()
        self.workers = [
            InferenceActor(
                f"inference:{short_name(engine.providers[0])}-{index}",
                synthesizer,
                self._deliver,
                self._worker_idle,
                engine=engine,
                on_failed=self._worker_failed,
                timeout_s=fallback.timeout_s,
                probe_after_s=fallback.probe_after_s,
                probe_max_s=fallback.probe_max_s,
                probe_voice=probe_voice,
            )
            for index, engine in enumerate(synthesizer.engines)
        ]
        self.scheduler = Scheduler(
            self.workers,
            max_lead_seconds=max_lead_seconds,
            max_attempts=fallback.max_attempts,
            give_up=self._deliver,
        )
        self.max_lead_seconds = max_lead_seconds
        self._chunkers: dict[StreamKey, StreamChunker] = {}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Pipeline]:
        """Start metrics, inference actors and scheduler; stop them in reverse order."""
        async with Supervisor(name="pipeline", drain_timeout=5.0) as supervisor:
            await supervisor.start(self.metrics)
            for worker in self.workers:
                await supervisor.start(worker)
            await supervisor.start(self.scheduler)
            yield self

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
            },
            "inference": {worker.name: worker.stats() for worker in self.workers},
            "live_streams": streams,
        }

    def register(self, key: StreamKey, chunker: StreamChunker) -> None:
        self._chunkers[key] = chunker

    def release(self, key: StreamKey) -> None:
        """Forget a stream and drop whatever the scheduler still holds for it."""
        self._chunkers.pop(key, None)
        with contextlib.suppress(ActorClosed):
            self.scheduler.control(CancelStream(key))

    def _worker_idle(self, idle: WorkerIdle) -> None:
        with contextlib.suppress(ActorClosed):
            self.scheduler.control(idle)

    def _worker_failed(self, failed: WorkerFailed | WorkerProbeFailed) -> None:
        with contextlib.suppress(ActorClosed):
            self.scheduler.control(failed)

    async def _deliver(self, outcome: SegmentAudio | SegmentFailed) -> None:
        key = outcome.job.key
        if isinstance(outcome, SegmentAudio):
            self.metrics.observe(
                SegmentGenerated(
                    key,
                    outcome.job.segment.index,
                    outcome.gen_seconds,
                    outcome.queue_seconds,
                    len(outcome.audio) / SAMPLE_RATE,
                    outcome.provider,
                )
            )
        chunker = self._chunkers.get(key)
        if chunker is not None:
            with contextlib.suppress(ActorClosed):
                await chunker.send(outcome)

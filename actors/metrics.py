"""The metrics actor: observes pipeline events without ever slowing the audio path.

Producers call ``observe`` (never blocks: when the mailbox is full the event is counted as
dropped). The actor keeps recent per-stream figures (time to first audio, real-time factor) and
segment generation times, and serves aggregates for ``GET /v1/stats``.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter, deque
from typing import Any

from actors.base import Actor, ActorClosed, MailboxFull
from actors.messages import Event, SegmentGenerated, StreamFinished, StreamKey, StreamStarted
from app.degradation import LiveDegradation
from app.prometheus_metrics import PrometheusMetrics

logger = logging.getLogger(__name__)

RECENT = 500


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


class MetricsActor(Actor[Event]):
    """Aggregates stream and segment events."""

    def __init__(
        self, mailbox_size: int = 1024, prometheus: PrometheusMetrics | None = None
    ) -> None:
        super().__init__(name="metrics", mailbox_size=mailbox_size)
        self.prometheus = prometheus or PrometheusMetrics()
        self.dropped = 0
        self.active = 0
        self.started = 0
        self.finished: Counter[str] = Counter()
        self._ttfa: deque[float] = deque(maxlen=RECENT)
        self._rtf: deque[float] = deque(maxlen=RECENT)
        self._gen: deque[float] = deque(maxlen=RECENT)
        self._queue_wait: deque[float] = deque(maxlen=RECENT)
        self.providers: Counter[str] = Counter()
        self.segments_total = 0
        self.audio_seconds_total = 0.0
        self.gen_seconds_total = 0.0
        self.live = LiveDegradation()
        self._first_audio: dict[StreamKey, float] = {}
        self._degraded: set[str] = set()

    def observe(self, event: Event) -> None:
        """Record an event later; never blocks and never raises."""
        try:
            self.send_nowait(event)
        except (MailboxFull, ActorClosed):
            self.dropped += 1

    async def handle(self, message: Event) -> None:
        self._export(message)
        if isinstance(message, StreamStarted):
            self.started += 1
            self.active += 1
        elif isinstance(message, SegmentGenerated):
            self._gen.append(message.gen_seconds)
            self._queue_wait.append(message.queue_seconds)
            self.providers[message.provider] += 1
            self.segments_total += 1
            self.audio_seconds_total += message.audio_seconds
            self.gen_seconds_total += message.gen_seconds
            self.live.segment(message.engine_seconds, message.audio_seconds, solo=message.solo)
            if message.segment == 0:
                self._first_audio[message.key] = message.audio_seconds
                if len(self._first_audio) > RECENT:  # finished events were dropped: forget
                    del self._first_audio[next(iter(self._first_audio))]
        elif isinstance(message, StreamFinished):
            self.active -= 1
            self.finished[message.reason] += 1
            if message.ttfa_seconds is not None:
                self._ttfa.append(message.ttfa_seconds)
            if message.rtf is not None:
                self._rtf.append(message.rtf)
            first_audio = self._first_audio.pop(message.key, None)
            if message.ttfa_seconds is not None and first_audio is not None:
                self.live.stream(message.ttfa_seconds, first_audio)
            self._log_degradation()

    def _log_degradation(self) -> None:
        """Log when a live signal turns degraded, and when it recovers."""
        for verdict in self.live.verdicts():
            if verdict.degraded and verdict.signal not in self._degraded:
                self._degraded.add(verdict.signal)
                logger.warning(
                    "live %s degraded: %.2fx the benchmark's prediction (limit %.2fx, %d samples)",
                    verdict.signal,
                    verdict.ratio,
                    verdict.limit,
                    verdict.samples,
                )
            elif not verdict.degraded and verdict.signal in self._degraded:
                self._degraded.discard(verdict.signal)
                logger.info(
                    "live %s back within %.2fx of the benchmark", verdict.signal, verdict.limit
                )

    def _export(self, message: Event) -> None:
        """The event's share of the Prometheus metrics."""
        prometheus = self.prometheus
        if isinstance(message, StreamStarted):
            prometheus.streams_started.inc()
        elif isinstance(message, SegmentGenerated):
            prometheus.segment_generation.labels(message.provider).observe(message.gen_seconds)
            prometheus.queue_wait.observe(message.queue_seconds)
            prometheus.audio_generated.labels(message.provider).inc(message.audio_seconds)
        elif isinstance(message, StreamFinished):
            prometheus.streams_finished.labels(message.reason).inc()
            if message.ttfa_seconds is not None:
                prometheus.ttfa.observe(message.ttfa_seconds)
            if message.rtf is not None:
                prometheus.stream_rtf.observe(message.rtf)

    def frame_sent(self, payload_bytes: int) -> None:
        """A chunker wrote an audio frame (called directly: a counter never blocks)."""
        self.prometheus.frames_sent.inc()
        self.prometheus.audio_bytes_sent.inc(payload_bytes)

    def client_reported(self, new_underruns: int, lead_seconds: float) -> None:
        """A client's ``played`` report, as the chunker understood it."""
        if new_underruns > 0:
            self.prometheus.client_underruns.inc(new_underruns)
        self.prometheus.client_lead.observe(max(0.0, lead_seconds))

    def snapshot(self) -> dict[str, Any]:
        def quantiles(values: deque[float]) -> dict[str, float | None]:
            recent = list(values)
            return {"p50": _ms(_percentile(recent, 0.5)), "p95": _ms(_percentile(recent, 0.95))}

        return {
            "streams": {
                "active": self.active,
                "started": self.started,
                "finished": dict(self.finished),
            },
            "ttfa_ms": quantiles(self._ttfa),
            "rtf_mean": round(statistics.fmean(self._rtf), 4) if self._rtf else None,
            "segment_gen_ms": quantiles(self._gen),
            "queue_wait_ms": quantiles(self._queue_wait),
            "segments_by_provider": dict(self.providers),
            "generated": {
                "segments_total": self.segments_total,
                "audio_seconds_total": round(self.audio_seconds_total, 3),
                "gen_seconds_total": round(self.gen_seconds_total, 3),
            },
            "live_degradation": [verdict.to_json() for verdict in self.live.verdicts()],
            "events_dropped": self.dropped,
            "window": RECENT,
        }

"""Audio delivered to the clients over time: the throughput as the users saw it.

Used when the server does not report its generated totals, and as a cross-check when it does
(flow control keeps delivery within ``max_lead_ms`` of playback, so over a step the two agree
up to the audio buffered at its edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class AudioMeter:
    """Audio seconds received, summed in ``bucket_s`` buckets of arrival time."""

    bucket_s: float = 0.25
    buckets: dict[int, float] = field(default_factory=dict)

    def add(self, t: float, audio_seconds: float) -> None:
        key = math.floor(t / self.bucket_s)
        self.buckets[key] = self.buckets.get(key, 0.0) + audio_seconds

    def between(self, start: float, end: float) -> float:
        """Audio received in ``[start, end)``, to the bucket."""
        first = math.floor(start / self.bucket_s)
        last = math.floor(end / self.bucket_s)
        return sum(value for key, value in self.buckets.items() if first <= key < last)

    def rate(self, start: float, end: float) -> float | None:
        """Audio seconds received per wall second over ``[start, end)``."""
        return self.between(start, end) / (end - start) if end > start else None

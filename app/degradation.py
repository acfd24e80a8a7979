"""Live degradation: is production synthesis slower than the engine benchmark says it should be?

The benchmark's rows give a cost model, ``engine seconds = per_call + per_audio x audio
seconds``, fitted by least squares (a model call renders fixed padding, so short segments cost
more per audio second; a single RTF would call every short segment slow). Production is judged
against what the model predicts for the same audio:

- RTF: the median, over the last ``segment_window`` segments that ran alone on the CPU (no
  other model call overlapping theirs, as in the benchmark), of actual over predicted engine
  time. Degraded above ``1 + regression.FLOOR`` (1.15), the benchmark regression rule's floor.
- TTFA: the 95th percentile, over the last ``stream_window`` streams, of time to first audio over
  the predicted engine time of the stream's first segment. Degraded above ``TTFA_LIMIT`` (1.5):
  on an idle server the ratio is about 1.05 (phonemizing and sending); 1.5 leaves room for a
  first segment to queue behind part of another, not for a stalled pipeline.

Nothing is judged before ``min_samples`` observations or without a benchmark run in the serving
environment.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.regression import FLOOR

RTF_LIMIT = 1 + FLOOR
TTFA_LIMIT = 1.5
SEGMENT_WINDOW = 200
STREAM_WINDOW = 50
MIN_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class CostModel:
    """Predicted engine seconds for one model call producing ``audio_seconds``."""

    per_call_seconds: float
    per_audio_second: float

    @classmethod
    def fit(cls, rows: Iterable[Mapping[str, Any]]) -> CostModel:
        """Least squares over benchmark rows (``calls``, ``audio_seconds``,
        ``gen_seconds_median``); both coefficients kept non-negative."""
        data = [
            (float(r["calls"]), float(r["audio_seconds"]), float(r["gen_seconds_median"]))
            for r in rows
        ]
        if not data:
            raise ValueError("no benchmark rows to fit")
        calls = np.array([[c, a] for c, a, _ in data])
        gen = np.array([g for _, _, g in data])
        if len(data) >= 2:
            (per_call, per_audio), *_ = np.linalg.lstsq(calls, gen, rcond=None)
            if per_call >= 0 and per_audio >= 0:
                return cls(float(per_call), float(per_audio))
        # One row, or a negative intercept: proportional to audio alone.
        total_audio = sum(a for _, a, _ in data)
        return cls(0.0, sum(g for _, _, g in data) / total_audio)

    def predict(self, audio_seconds: float, calls: int = 1) -> float:
        return self.per_call_seconds * calls + self.per_audio_second * audio_seconds


@dataclass(frozen=True, slots=True)
class LiveVerdict:
    signal: str
    """``rtf`` or ``ttfa``."""
    samples: int
    ratio: float | None
    """Observed over predicted (the statistic the rule names); None until judged."""
    limit: float
    degraded: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "samples": self.samples,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "limit": self.limit,
            "degraded": self.degraded,
        }


class LiveDegradation:
    """Recent production observations, judged against the current cost model."""

    def __init__(
        self,
        *,
        segment_window: int = SEGMENT_WINDOW,
        stream_window: int = STREAM_WINDOW,
        min_samples: int = MIN_SAMPLES,
    ) -> None:
        self.baseline: CostModel | None = None
        self.min_samples = min_samples
        self._segments: deque[tuple[float, float]] = deque(maxlen=segment_window)
        self._streams: deque[tuple[float, float]] = deque(maxlen=stream_window)

    def segment(self, engine_seconds: float, audio_seconds: float, *, solo: bool) -> None:
        """A segment's model call; only calls that had the CPU to themselves are compared."""
        if solo and audio_seconds > 0 and engine_seconds > 0:
            self._segments.append((engine_seconds, audio_seconds))

    def stream(self, ttfa_seconds: float, first_segment_audio_seconds: float) -> None:
        if first_segment_audio_seconds > 0:
            self._streams.append((ttfa_seconds, first_segment_audio_seconds))

    def rtf(self) -> LiveVerdict:
        ratios = self._ratios(self._segments)
        if ratios is None:
            return LiveVerdict("rtf", len(self._segments), None, RTF_LIMIT, degraded=False)
        ratio = statistics.median(ratios)
        return LiveVerdict("rtf", len(ratios), ratio, RTF_LIMIT, degraded=ratio > RTF_LIMIT)

    def ttfa(self) -> LiveVerdict:
        ratios = self._ratios(self._streams)
        if ratios is None:
            return LiveVerdict("ttfa", len(self._streams), None, TTFA_LIMIT, degraded=False)
        ratio = statistics.quantiles(ratios, n=20, method="inclusive")[-1]
        return LiveVerdict("ttfa", len(ratios), ratio, TTFA_LIMIT, degraded=ratio > TTFA_LIMIT)

    def verdicts(self) -> list[LiveVerdict]:
        return [self.rtf(), self.ttfa()]

    def _ratios(self, observed: deque[tuple[float, float]]) -> list[float] | None:
        model = self.baseline
        if model is None or len(observed) < self.min_samples:
            return None
        return [seconds / model.predict(audio) for seconds, audio in observed]

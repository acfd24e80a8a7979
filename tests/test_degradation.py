"""The live degradation rule (``app.degradation``)."""

from __future__ import annotations

import pytest

from app.degradation import MIN_SAMPLES, RTF_LIMIT, TTFA_LIMIT, CostModel, LiveDegradation


def row(calls: int, audio: float, gen: float) -> dict[str, float]:
    return {"calls": calls, "audio_seconds": audio, "gen_seconds_median": gen}


def test_the_cost_model_recovers_a_per_call_and_a_per_audio_second_cost() -> None:
    rows = [row(1, a, 0.3 + 0.4 * a) for a in (0.5, 2.5, 7.0)] + [row(2, 15.0, 0.6 + 6.0)]
    model = CostModel.fit(rows)
    assert model.per_call_seconds == pytest.approx(0.3)
    assert model.per_audio_second == pytest.approx(0.4)
    assert model.predict(5.0) == pytest.approx(2.3)


def test_one_row_or_a_negative_intercept_falls_back_to_a_proportional_model() -> None:
    assert CostModel.fit([row(1, 2.0, 1.0)]) == CostModel(0.0, 0.5)
    model = CostModel.fit([row(1, 1.0, 0.1), row(1, 2.0, 1.0)])  # slope 0.9, intercept -0.8
    assert model.per_call_seconds == 0.0 and model.per_audio_second == pytest.approx(1.1 / 3)
    with pytest.raises(ValueError, match="no benchmark rows"):
        CostModel.fit([])


def test_nothing_is_judged_without_a_baseline_or_before_enough_samples() -> None:
    live = LiveDegradation()
    for _ in range(MIN_SAMPLES):
        live.segment(5.0, 1.0, solo=True)
    assert live.rtf().ratio is None and not live.rtf().degraded, "no baseline yet"
    live = LiveDegradation()
    live.baseline = CostModel(0.0, 0.5)
    for _ in range(MIN_SAMPLES - 1):
        live.segment(5.0, 1.0, solo=True)
    assert live.rtf().ratio is None
    live.segment(5.0, 1.0, solo=True)
    assert live.rtf().degraded and live.rtf().ratio == pytest.approx(10.0)


def test_rtf_uses_the_median_of_solo_calls_and_the_regression_floor() -> None:
    live = LiveDegradation(min_samples=5)
    live.baseline = CostModel(0.1, 0.4)
    for ratio in (1.0, 1.05, 1.1, 1.12, 3.0):  # one outlier does not move the median
        live.segment(0.5 * ratio, 1.0, solo=True)
    for _ in range(10):
        live.segment(5.0, 1.0, solo=False)  # shared the CPU: not comparable with the benchmark
    verdict = live.rtf()
    assert verdict.samples == 5 and verdict.ratio == pytest.approx(1.1)
    assert not verdict.degraded and verdict.limit == RTF_LIMIT
    for _ in range(6):
        live.segment(0.5 * 1.2, 1.0, solo=True)
    assert live.rtf().degraded


def test_ttfa_uses_the_95th_percentile_against_the_first_segment() -> None:
    live = LiveDegradation(min_samples=20)
    live.baseline = CostModel(0.1, 0.4)  # a 1 s first segment: 0.5 s
    for _ in range(19):
        live.stream(0.52, 1.0)
    live.stream(2.0, 1.0)  # one slow start in twenty stays above the 95th percentile
    verdict = live.ttfa()
    assert verdict.ratio is not None and verdict.ratio < TTFA_LIMIT and not verdict.degraded
    for _ in range(3):
        live.stream(2.0, 1.0)
    assert live.ttfa().degraded

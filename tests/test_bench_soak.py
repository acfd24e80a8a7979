"""The soak benchmark's request mix and verdict (its real run is ``python -m app bench soak``)."""

from __future__ import annotations

from collections import Counter

import pytest

from app.bench_soak import GROWTH_LIMIT, MIX, SoakLog, report, requests_in_order


def test_the_mix_cycles_texts_and_alternates_routes() -> None:
    pairs = list(requests_in_order(500))
    assert len(pairs) == 500
    assert Counter(route for route, _ in pairs) == {"stream": 250, "http": 250}
    texts = Counter(name for _, name in pairs)
    assert texts["paragraph"] == 50 and texts["one_word"] == 200
    assert {name for route, name in pairs if route == "http"} == set(MIX)  # every length by both


def test_growth_is_the_last_tenth_median_over_the_warm_up() -> None:
    mb = 1 << 20
    steady = SoakLog(baseline_rss=1000 * mb, rss=[1000 * mb] * 90 + [1030 * mb] * 10)
    assert steady.growth() == pytest.approx(0.03)
    verdict = report(steady, 10.0, 2)
    assert verdict["passed"] and verdict["growth"] == pytest.approx(0.03)
    assert list(verdict["rss_mb_after_request"]) == [str(n) for n in range(10, 101, 10)]
    leaking = SoakLog(baseline_rss=1000 * mb, rss=[(1000 + n) * mb for n in range(100)])
    assert leaking.growth() > GROWTH_LIMIT and not report(leaking, 10.0, 2)["passed"]
    failed = SoakLog(baseline_rss=1000 * mb, rss=[1000 * mb] * 10, failures=["http one_word: 500"])
    assert not report(failed, 10.0, 2)["passed"]

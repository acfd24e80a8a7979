"""The memory settings change what they claim to (each measured in a fresh process)."""

from __future__ import annotations

import pytest

from app.bench_memory import measure_in_child
from app.settings import Settings

pytestmark = pytest.mark.model


def test_arena_shrinkage_returns_a_long_calls_memory(settings: Settings) -> None:
    """Without shrinkage the arena keeps the peak of the paragraph's call; with it, the memory
    left after the calls falls back to what it was before them. (Loading's own peak is left
    out: assembling the model into a fresh cache peaks far higher than any call.)"""
    kept = measure_in_child(settings, 510, shrinkage=False, runs=1)
    shrunk = measure_in_child(settings, 510, shrinkage=True, runs=1)
    print(f"kept: {kept}\nshrunk: {shrunk}")
    assert shrunk["rss_after_calls_mb"] < 0.75 * kept["rss_after_calls_mb"]
    assert shrunk["rss_after_calls_mb"] < 1.2 * shrunk["rss_before_calls_mb"]
    assert kept["peak_rss_calls_mb"] > 1.5 * kept["rss_before_calls_mb"], "the call's peak is real"


def test_the_token_cap_lowers_the_peak(settings: Settings) -> None:
    """The peak while synthesizing (loading the model can peak higher than a short call)."""
    whole = measure_in_child(settings, 510, shrinkage=True, runs=1)
    capped = measure_in_child(settings, 128, shrinkage=True, runs=1)
    print(f"whole: {whole}\ncapped: {capped}")
    assert whole["calls"] == 1 and capped["calls"] >= 3
    assert capped["peak_rss_calls_mb"] < 0.8 * whole["peak_rss_calls_mb"]

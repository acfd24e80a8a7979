"""Provider plan selection: fingerprint, benchmark, choice rule and the on-disk cache.

The benchmark runs on fake engines whose work is a short sleep (which releases the GIL, like ONNX
Runtime does), so parallel sessions really overlap; the cache's clock is a fake one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from app.providers import CPU, ProviderPlan
from app.strategy import (
    CALIBRATION_TEXTS,
    CHOICE_RULE,
    CalibrationItem,
    PlanScore,
    StrategyCache,
    StrategyResult,
    benchmark_plan,
    benchmark_plans,
    calibration_items,
    choose,
    fingerprint_components,
    fingerprint_key,
    select_plan,
)
from app.tts.engine import SAMPLE_RATE
from app.tts.synthesizer import Synthesizer

PLANS = (ProviderPlan(CPU, 1, 2), ProviderPlan(CPU, 2, 1))
BASE: dict[str, Any] = {
    "model_sha256": "a" * 64,
    "candidates": PLANS,
    "available_providers": ("CPUExecutionProvider", "AzureExecutionProvider"),
    "cores": 2,
    "cpu_model": "Example CPU 3000",
    "environ": {"HOME": "/root", "PATH": "/bin", "OMP_NUM_THREADS": "2"},
    "ort_version": "1.32.0",
    "voice": "jm_kumo",
}


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class FakeSynthesis:
    audio: npt.NDArray[np.float32]
    gen_seconds: float


class FakeEngine:
    """Sleeps ``seconds_per_token`` per token and returns 10 ms of audio per token."""

    def __init__(self, seconds_per_token: float = 0.0002) -> None:
        self.seconds_per_token = seconds_per_token
        self.calls: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def synthesize(
        self, tokens: Sequence[int], style: npt.NDArray[np.float32], speed: float
    ) -> FakeSynthesis:
        with self._lock:  # one session runs one call at a time, like an ONNX Runtime actor
            began = time.perf_counter()
            time.sleep(self.seconds_per_token * len(tokens))
            self.calls.append(len(tokens))
            audio = np.zeros(len(tokens) * SAMPLE_RATE // 100, dtype=np.float32)
            return FakeSynthesis(audio, time.perf_counter() - began)


def fake_items() -> list[CalibrationItem]:
    style = np.zeros((1, 256), dtype=np.float32)
    return [
        CalibrationItem(text, tuple(range(1, 1 + 5 * len(text.split()))), style)
        for text in CALIBRATION_TEXTS
    ]


def score(name: str, first_segment_ms: float, throughput: float) -> PlanScore:
    plan = ProviderPlan.parse(name)
    return PlanScore(
        plan=name,
        sessions=plan.sessions,
        threads=plan.threads,
        first_segment_ms=first_segment_ms,
        throughput=throughput,
        rtf=round(1 / throughput, 4),
    )


def result(components: dict[str, str], created_at: float) -> StrategyResult:
    scores = (score("cpu:1x2", 100.0, 8.0), score("cpu:2x1", 120.0, 12.0))
    return StrategyResult(
        key=fingerprint_key(components),
        components=components,
        created_at=created_at,
        scores=scores,
        chosen="cpu:2x1",
        rule=CHOICE_RULE,
        benchmark_seconds=12.5,
    )


# --- fingerprint -------------------------------------------------------------------------------


def with_env(name: str, value: str) -> dict[str, Any]:
    return {**BASE, "environ": {**BASE["environ"], name: value}}


CHANGES: dict[str, tuple[dict[str, Any], str]] = {
    "model hash": ({**BASE, "model_sha256": "b" * 64}, "model_sha256"),
    "onnxruntime version": ({**BASE, "ort_version": "1.33.0"}, "onnxruntime"),
    "available providers": (
        {**BASE, "available_providers": ("CPUExecutionProvider", "CUDAExecutionProvider")},
        "providers",
    ),
    "candidate plans": ({**BASE, "candidates": PLANS[:1]}, "plans"),
    "cpu model": ({**BASE, "cpu_model": "Other CPU 9000"}, "cpu_model"),
    "cores": ({**BASE, "cores": 4}, "cores"),
    "OMP_NUM_THREADS": (with_env("OMP_NUM_THREADS", "1"), "env"),
    "OMP_WAIT_POLICY": (with_env("OMP_WAIT_POLICY", "PASSIVE"), "env"),
    "MKL_NUM_THREADS": (with_env("MKL_NUM_THREADS", "1"), "env"),
    "OPENBLAS_NUM_THREADS": (with_env("OPENBLAS_NUM_THREADS", "1"), "env"),
    "CUDA_VISIBLE_DEVICES": (with_env("CUDA_VISIBLE_DEVICES", "0"), "env"),
    "ORT_ variable": (with_env("ORT_DISABLE_SPINNING", "1"), "env"),
    "KOKORO_SPIN_WAIT": (with_env("KOKORO_SPIN_WAIT", "off"), "env"),
    "KOKORO_ARENA_SHRINKAGE": (with_env("KOKORO_ARENA_SHRINKAGE", "on"), "env"),
    "KOKORO_FIRST_SEGMENT": (with_env("KOKORO_FIRST_SEGMENT", "windowed"), "env"),
    "calibration voice": ({**BASE, "voice": "af_heart"}, "calibration"),
    "calibration texts": (
        {**BASE, "calibration_texts": (*CALIBRATION_TEXTS[:3], "A different long sentence.")},
        "calibration",
    ),
    "schema": ({**BASE, "schema": "2"}, "schema"),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_each_component_changes_the_key(change: str) -> None:
    changed_args, component = CHANGES[change]
    before = fingerprint_components(**BASE)
    after = fingerprint_components(**changed_args)
    assert [name for name in before if before[name] != after[name]] == [component]
    assert fingerprint_key(before) != fingerprint_key(after)


@pytest.mark.parametrize("name", ["HOME", "PATH", "LANG", "ORTX"])
def test_irrelevant_environment_does_not_change_the_key(name: str) -> None:
    before = fingerprint_components(**BASE)
    after = fingerprint_components(**with_env(name, "/somewhere/else"))
    assert before == after
    assert fingerprint_key(before) == fingerprint_key(after)


def test_components_are_canonical_strings() -> None:
    components = fingerprint_components(
        **{**BASE, "environ": {"ORT_B": "2", "OMP_NUM_THREADS": "2", "ORT_A": "1", "HOME": "/"}}
    )
    assert components["env"] == "OMP_NUM_THREADS=2;ORT_A=1;ORT_B=2"
    assert components["providers"] == "AzureExecutionProvider,CPUExecutionProvider"
    assert components["plans"] == "cpu:1x2,cpu:2x1"
    assert components["cores"] == "2"
    assert all(isinstance(value, str) for value in components.values())
    reordered = dict(reversed(list(components.items())))
    assert fingerprint_key(reordered) == fingerprint_key(components)


# --- choice rule -------------------------------------------------------------------------------


def test_much_more_throughput_loses_beyond_the_latency_tolerance() -> None:
    fast = score("cpu:1x4", 100.0, 5.0)
    wide = score("cpu:4x1", 126.0, 20.0)
    assert choose([wide, fast]) == fast


def test_throughput_wins_within_the_latency_tolerance() -> None:
    fast = score("cpu:1x4", 100.0, 5.0)
    wide = score("cpu:4x1", 125.0, 6.0)
    beyond = score("cpu:2x2", 130.0, 50.0)
    assert choose([fast, beyond, wide]) == wide


def test_ties_go_to_lower_latency_then_to_the_name() -> None:
    a = score("cpu:2x2", 110.0, 8.0)
    b = score("cpu:4x1", 105.0, 8.0)
    assert choose([a, b]) == b
    c = score("cpu:1x4", 105.0, 8.0)
    assert choose([a, b, c]) == c


def test_choose_needs_scores() -> None:
    with pytest.raises(ValueError, match="no plan scores"):
        choose([])


def test_rule_text_states_the_tolerance_and_why() -> None:
    assert "1.25x" in CHOICE_RULE
    assert "25%" in CHOICE_RULE
    assert "throughput" in CHOICE_RULE


# --- benchmark ---------------------------------------------------------------------------------


def test_two_sessions_give_about_twice_the_throughput() -> None:
    items = fake_items()
    one = benchmark_plan(ProviderPlan(CPU, 1, 2), [FakeEngine()], items, repeats=1, rounds=2)
    two = benchmark_plan(
        ProviderPlan(CPU, 2, 1), [FakeEngine(), FakeEngine()], items, repeats=1, rounds=2
    )
    assert two.throughput / one.throughput > 1.5
    assert two.rtf == pytest.approx(1 / two.throughput, rel=1e-3)
    assert (two.plan, two.sessions, two.threads) == ("cpu:2x1", 2, 1)


def test_first_segment_uses_the_shortest_item_on_one_session() -> None:
    items = fake_items()
    engines = [FakeEngine(), FakeEngine()]
    measured = benchmark_plan(ProviderPlan(CPU, 2, 1), engines, items, repeats=3, rounds=1)
    lengths = sorted(len(item.tokens) for item in items)
    shortest, longest = lengths[0], lengths[-1]
    # warm-up (shortest) on each engine, then the 3 latency runs (shortest) on the first only
    assert engines[0].calls[:4] == [shortest, shortest, shortest, shortest]
    assert engines[1].calls[:1] == [shortest]
    assert longest in engines[0].calls[4:] + engines[1].calls[1:]
    # every item ran once more for throughput, spread over both sessions
    throughput_calls = engines[0].calls[4:] + engines[1].calls[1:]
    assert sorted(throughput_calls) == lengths
    assert len(engines[0].calls[4:]) >= 1 and len(engines[1].calls[1:]) >= 1
    assert measured.first_segment_ms >= shortest * 0.0002 * 1000


def test_benchmark_plan_checks_the_engine_count() -> None:
    with pytest.raises(ValueError, match="needs 2 engines"):
        benchmark_plan(ProviderPlan(CPU, 2, 1), [FakeEngine()], fake_items())


def test_benchmark_plans_skips_plans_that_cannot_open(caplog: pytest.LogCaptureFixture) -> None:
    opened: list[list[FakeEngine]] = []

    def open_engines(plan: ProviderPlan) -> list[FakeEngine]:
        if plan.provider != CPU:
            raise RuntimeError("no GPU")
        engines = [FakeEngine() for _ in range(plan.sessions)]
        opened.append(engines)
        return engines

    def close_engines(engines: list[FakeEngine]) -> None:
        for engine in engines:
            engine.closed = True

    candidates = [*PLANS, ProviderPlan("CUDAExecutionProvider", 1, 1)]
    with caplog.at_level(logging.WARNING, logger="app.strategy"):
        scores = benchmark_plans(
            candidates, open_engines, close_engines, fake_items(), repeats=1, rounds=1
        )
    assert [item.plan for item in scores] == ["cpu:1x2", "cpu:2x1"]
    assert len(opened) == 2
    assert all(engine.closed for engines in opened for engine in engines)
    assert "cuda:1x1 skipped" in caplog.text


def test_benchmark_plans_closes_engines_when_the_benchmark_fails() -> None:
    closed: list[int] = []

    class Broken(FakeEngine):
        def synthesize(
            self, tokens: Sequence[int], style: npt.NDArray[np.float32], speed: float
        ) -> FakeSynthesis:
            raise RuntimeError("inference failed")

    def close_engines(engines: list[Broken]) -> None:
        closed.append(len(engines))

    with pytest.raises(RuntimeError, match="inference failed"):
        benchmark_plans(PLANS[:1], lambda plan: [Broken()], close_engines, fake_items())
    assert closed == [1]


def test_benchmark_plans_fails_when_no_plan_opens() -> None:
    def open_engines(plan: ProviderPlan) -> list[FakeEngine]:
        raise OSError("cannot open")

    with pytest.raises(RuntimeError, match="no provider plan could be opened"):
        benchmark_plans(PLANS, open_engines, lambda engines: None, fake_items())


def test_benchmark_leaves_no_threads_behind() -> None:
    before = set(threading.enumerate())
    benchmark_plan(
        ProviderPlan(CPU, 2, 1), [FakeEngine(), FakeEngine()], fake_items(), repeats=1, rounds=1
    )
    assert set(threading.enumerate()) <= before


# --- result and cache --------------------------------------------------------------------------


@pytest.fixture
def components() -> dict[str, str]:
    return fingerprint_components(**BASE)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> StrategyCache:
    return StrategyCache(tmp_path / "cache" / "strategy.json", ttl_seconds=3600, clock=clock)


def test_result_round_trips_through_json(components: dict[str, str]) -> None:
    original = result(components, 123.0)
    assert StrategyResult.from_json(json.loads(json.dumps(original.to_json()))) == original
    assert original.chosen_plan == ProviderPlan(CPU, 2, 1)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: [],
        lambda data: {**data, "extra": 1},
        lambda data: {name: value for name, value in data.items() if name != "rule"},
        lambda data: {**data, "created_at": "yesterday"},
        lambda data: {**data, "created_at": True},
        lambda data: {**data, "components": {"cores": 2}},
        lambda data: {**data, "scores": []},
        lambda data: {**data, "scores": [{"plan": "cpu:1x2"}]},
        lambda data: {**data, "chosen": "cpu:8x1"},
        lambda data: {**data, "key": "0" * 64},
        lambda data: {**data, "scores": [{**data["scores"][0], "plan": "tpu:1x1"}]},
        lambda data: {**data, "scores": [{**data["scores"][0], "sessions": 3}]},
    ],
)
def test_from_json_rejects_malformed_content(
    components: dict[str, str], corrupt: Callable[[dict[str, Any]], object]
) -> None:
    with pytest.raises(ValueError):
        StrategyResult.from_json(corrupt(result(components, 0.0).to_json()))


def test_cache_hit_returns_an_equal_result(
    cache: StrategyCache, clock: FakeClock, components: dict[str, str]
) -> None:
    stored = result(components, clock.now)
    cache.store(stored)
    clock.now += 3599
    assert cache.load(stored.key) == stored


def test_cache_misses(
    cache: StrategyCache,
    clock: FakeClock,
    components: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored = result(components, clock.now)
    key = stored.key
    with caplog.at_level(logging.INFO, logger="app.strategy"):
        assert cache.load(key) is None
        assert "no cache" in caplog.text

        cache.path.parent.mkdir(parents=True)
        cache.path.write_text("{not json")
        assert cache.load(key) is None
        assert "corrupt" in caplog.text

        caplog.clear()
        cache.path.write_text(json.dumps({"key": key, "chosen": "cpu:1x2"}))
        assert cache.load(key) is None
        assert "corrupt" in caplog.text

        cache.store(stored)
        changed = fingerprint_components(**{**BASE, "cores": 8, "cpu_model": "Other"})
        assert cache.load(fingerprint_key(changed), components=changed) is None
        assert "fingerprint changed: cores, cpu_model" in caplog.text

        clock.now += 3601
        assert cache.load(key) is None
        assert "expired (age 3601 s > ttl 3600 s)" in caplog.text


def test_store_is_atomic_and_replaces(
    cache: StrategyCache, clock: FakeClock, components: dict[str, str]
) -> None:
    cache.store(result(components, clock.now))
    newer = replace(result(components, clock.now + 10), chosen="cpu:1x2")
    cache.store(newer)
    assert [path.name for path in cache.path.parent.iterdir()] == [cache.path.name]
    assert StrategyResult.from_json(json.loads(cache.path.read_text())) == newer


def test_ttl_must_be_positive(tmp_path: Path) -> None:
    for ttl in (0.0, -1.0):
        with pytest.raises(ValueError, match="ttl_seconds must be > 0"):
            StrategyCache(tmp_path / "strategy.json", ttl_seconds=ttl)


class CountingBenchmark:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> list[PlanScore]:
        self.calls += 1
        return [score("cpu:1x2", 100.0, 8.0), score("cpu:2x1", 120.0, 12.0)]


def test_select_plan_miss_benchmarks_stores_and_then_hits(
    cache: StrategyCache, clock: FakeClock, components: dict[str, str]
) -> None:
    benchmark = CountingBenchmark()
    first, hit = select_plan(
        cache=cache, components=components, candidates=PLANS, run_benchmark=benchmark, clock=clock
    )
    assert (hit, benchmark.calls, first.chosen, first.rule) == (False, 1, "cpu:2x1", CHOICE_RULE)
    assert first.created_at == clock.now
    assert cache.path.is_file()

    clock.now += 60
    second, hit = select_plan(
        cache=cache, components=components, candidates=PLANS, run_benchmark=benchmark, clock=clock
    )
    assert (hit, benchmark.calls, second) == (True, 1, first)


def test_select_plan_rebenchmarks_on_request(
    cache: StrategyCache, clock: FakeClock, components: dict[str, str]
) -> None:
    cache.store(result(components, clock.now))
    benchmark = CountingBenchmark()
    _, hit = select_plan(
        cache=cache,
        components=components,
        candidates=PLANS,
        run_benchmark=benchmark,
        rebenchmark=True,
        clock=clock,
    )
    assert (hit, benchmark.calls) == (False, 1)


def test_select_plan_survives_an_unwritable_cache(
    tmp_path: Path, clock: FakeClock, components: dict[str, str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = StrategyCache(blocker / "strategy.json", ttl_seconds=60, clock=clock)
    chosen, hit = select_plan(
        cache=cache,
        components=components,
        candidates=PLANS,
        run_benchmark=CountingBenchmark(),
        clock=clock,
    )
    assert (chosen.chosen, hit) == ("cpu:2x1", False)


# --- real model --------------------------------------------------------------------------------


@pytest.mark.model
def test_calibration_items_with_the_real_model(synthesizer: Synthesizer) -> None:
    items = calibration_items(synthesizer, "jm_kumo")
    assert [item.text for item in items] == list(CALIBRATION_TEXTS)
    lengths = [len(item.tokens) for item in items]
    assert lengths == sorted(lengths)
    assert len(set(lengths)) == 4
    assert all(item.style.shape == (1, 256) for item in items)
    assert all(item.style.dtype == np.float32 for item in items)

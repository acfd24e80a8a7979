"""The regression rule (``app.regression``) and the benchmark history (``app.bench_history``)."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import httpx
import pytest

from app.bench import BenchRow, record_run
from app.bench_history import HISTORY_FILE, BenchHistory, fingerprint
from app.cli import describe_verdict
from app.regression import FLOOR, MIN_RUNS, judge
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server


def noisy(rng: random.Random, level: float = 0.5, noise: float = 0.07) -> float:
    """A run's figure on a shared machine: within +-7% (a run is a median over texts and
    repetitions, steadier than the +-10% of single calls)."""
    return level * (1 + rng.uniform(-noise, noise))


def test_repeated_runs_without_a_change_raise_no_alarm() -> None:
    rng = random.Random(7)
    history: list[float] = []
    alarms = 0
    for _ in range(500):
        value = noisy(rng)
        alarms += judge(value, history).regression
        history.append(value)
    assert alarms == 0


def test_a_30_percent_slowdown_is_flagged_at_once() -> None:
    rng = random.Random(11)
    history = [noisy(rng) for _ in range(10)]
    flagged = 0
    for _ in range(20):
        value = noisy(rng) * 1.3
        flagged += judge(value, history).regression
        history.append(value)
    verdict = judge(0.5 * 1.3, [noisy(rng) for _ in range(10)])
    assert verdict.regression and verdict.change is not None and verdict.change > FLOOR
    assert 1 <= flagged <= 10, "a lasting change becomes the baseline"


def test_a_30_percent_slowdown_is_flagged_on_its_first_run_whatever_the_noise_draw() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        history = [noisy(rng) for _ in range(10)]
        assert judge(noisy(rng) * 1.3, history).regression, seed


def test_nothing_is_judged_before_enough_runs() -> None:
    assert not judge(100.0, [1.0] * (MIN_RUNS - 1)).regression
    verdict = judge(1.0 * (1 + FLOOR) + 0.01, [1.0] * MIN_RUNS)
    assert verdict.regression and verdict.tolerance == FLOOR


def test_the_history_compares_runs_of_one_environment_only(tmp_path: Path) -> None:
    history = BenchHistory(tmp_path / HISTORY_FILE)
    here, there = {"cpu": "A", "threads": 2}, {"cpu": "B", "threads": 2}
    assert fingerprint(here) != fingerprint(there)
    for value in (0.50, 0.52, 0.49):
        history.record("engine", "rtf_median", value, here)
    slow_elsewhere = history.record("engine", "rtf_median", 0.9, there)
    assert slow_elsewhere.verdict.baseline is None, "another machine has no baseline yet"
    slow_here = history.record("engine", "rtf_median", 0.7, here, {"short": 0.7})
    assert slow_here.verdict.regression and slow_here.verdict.baseline == 0.50
    newest = history.recent(2)
    assert [run.id for run in newest] == [slow_here.id, slow_elsewhere.id]
    assert newest[0].details == {"short": 0.7}
    assert [run.id for run in history.recent(regressions_only=True)] == [slow_here.id]


@pytest.mark.model
async def test_the_server_lists_runs_and_regressions(
    settings: Settings, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    own = Settings(cache_dir=tmp_path, max_active_streams=1)
    history = BenchHistory(tmp_path / HISTORY_FILE)
    for value in (0.5, 0.5, 0.5, 0.9):
        history.record("engine", "rtf_median", value, {"cpu": "A"})
    with live_server(own, synthesizer) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            body = (await http.get("/v1/benchmarks")).json()
    assert len(body["runs"]) == 4 and body["runs"][0]["value"] == 0.9
    (flagged,) = body["regressions"]
    assert flagged["regression"] and flagged["change"] == pytest.approx(0.8)
    assert "median" in body["rule"]


def test_a_benchmark_run_is_recorded_with_its_rows_and_judged(tmp_path: Path) -> None:
    history = BenchHistory(tmp_path / HISTORY_FILE)
    machine = {"cpu": "test", "cores": 2, "intra_op_threads": 2}

    def rows(rtf: float) -> list[BenchRow]:
        return [
            BenchRow("short", 9, 40, 1, 2.5, 2.5 * rtf, 2.5 * rtf, rtf),
            BenchRow("sentence", 20, 120, 1, 7.0, 7.0 * rtf * 0.9, 7.0 * rtf, rtf * 0.9),
        ]

    said = [describe_verdict(record_run(history, rows(rtf), machine)) for rtf in (0.5, 0.51, 0.49)]
    assert all("too few earlier runs" in line for line in said)
    flagged = record_run(history, rows(0.65), machine)
    assert flagged.verdict.regression
    assert "REGRESSION" in describe_verdict(flagged) and "change +30" in describe_verdict(flagged)
    latest = history.latest("engine", "rtf_median", machine)
    assert latest is not None and latest.id == flagged.id
    assert [row["name"] for row in latest.details["rows"]] == ["short", "sentence"]
    assert latest.verdict.value == pytest.approx(statistics.median([0.65, 0.585]))
    assert history.latest("engine", "rtf_median", {**machine, "cores": 4}) is None

"""The load generator: statistics, report and retry rule on synthetic records (fast, no model),
and one short ramp against a spawned server (real model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import SAMPLE_RATE, PlaybackClock, ServerError
from app.settings import Settings
from loadtest.cli import config_from_args
from loadtest.config import LoadConfig
from loadtest.meter import AudioMeter
from loadtest.plots import PLOTS, write_plots
from loadtest.ramp import Ramp, default_steps, parse_steps
from loadtest.raw_loop import segment_texts
from loadtest.records import RawResult, StatsSample, StepWindow, StreamRecord
from loadtest.refusals import MAX_RETRY_WAIT_S, retry_wait_s, until_admitted
from loadtest.report import LoadReport, build_report, render_markdown
from loadtest.run import run_load_test
from loadtest.sampler import parse_sample
from loadtest.stats import percentile, step_rows, summarize
from loadtest.target import target_server
from loadtest.texts import CORPUS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WINDOWS = (StepWindow(0, 1, 0.0, 10.0), StepWindow(1, 2, 10.0, 20.0))


def stream(step: int, **fields: Any) -> StreamRecord:
    base: dict[str, Any] = {
        "user": 0,
        "step": step,
        "name": "u0-1",
        "mode": "whole",
        "text_index": 0,
        "started_at": WINDOWS[step].start + 1,
        "ended_at": WINDOWS[step].start + 5,
        "outcome": "complete",
        "audio_seconds": 4.0,
    }
    return StreamRecord(**{**base, **fields})


def samples() -> list[StatsSample]:
    """One a second: 1 audio s/s in the first step, 2 in the second."""
    series = []
    audio = 0.0
    for t in range(21):
        series.append(
            StatsSample(
                t=float(t),
                audio_seconds_total=audio,
                generating_streams=1 if t < 10 else 2,
                refused_total=0 if t <= 12 else 3,
                rss_bytes=(200 + t) * 2**20,
            )
        )
        audio += 1.0 if t < 10 else 2.0
    return series


STREAMS = [
    stream(0, client_ttfa_ms=100.0, server_ttfa_ms=80.0),
    stream(0, client_ttfa_ms=300.0, server_ttfa_ms=90.0),
    stream(1, client_ttfa_ms=200.0, server_ttfa_ms=150.0, underruns=2),
    stream(1, client_ttfa_ms=400.0, server_ttfa_ms=160.0, refusal_times=(11.0, 12.5)),
    stream(1, outcome="error", error="ServerError: internal: boom"),
    stream(1, outcome="refused", refusal_times=(15.0, 19.0, 21.0)),
]


# --- statistics --------------------------------------------------------------------------------


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, 101)


def test_step_rows_aggregate_streams_and_stats_samples() -> None:
    first, second = step_rows(WINDOWS, STREAMS, samples(), AudioMeter(), raw_throughput=2.5)

    assert (first.users, first.started, first.completed, first.failed) == (1, 2, 2, 0)
    assert first.client_ttfa_p50_ms == pytest.approx(200.0)
    assert first.client_ttfa_p99_ms == pytest.approx(298.0)
    assert first.server_ttfa_p50_ms == pytest.approx(85.0)
    assert first.throughput_audio_per_s == pytest.approx(1.0)
    assert first.throughput_source == "server"
    assert first.ratio_to_raw == pytest.approx(0.4)
    assert first.mean_generating_streams == pytest.approx(12 / 11)  # t = 0..10, both ends in
    assert first.peak_rss_mb == pytest.approx(210.0)
    assert (first.refusals, first.underruns) == (0, 0)

    assert (second.started, second.completed, second.failed, second.gave_up) == (3, 2, 1, 1)
    assert second.refusals == 4  # 11.0, 12.5, 15.0 and 19.0 fall in [10, 20); 21.0 does not
    assert second.server_refusals == 3
    assert (second.underruns, second.streams_with_underruns) == (2, 1)
    assert second.client_ttfa_p50_ms == pytest.approx(300.0)
    assert second.throughput_audio_per_s == pytest.approx(2.0)
    assert second.ratio_to_raw == pytest.approx(0.8)
    assert second.audio_seconds == pytest.approx(8.0)


def test_without_server_totals_the_delivered_audio_is_the_throughput() -> None:
    meter = AudioMeter()
    for tenth in range(100):  # 1.5 audio s/s for the first ten seconds
        meter.add(tenth / 10, 0.15)
    bare = [StatsSample(t=float(t)) for t in range(21)]
    first, second = step_rows(WINDOWS, STREAMS, bare, meter, raw_throughput=None)
    assert first.throughput_source == "delivered"
    assert first.throughput_audio_per_s == pytest.approx(1.5)
    assert first.ratio_to_raw is None
    assert first.mean_generating_streams is None and first.peak_rss_mb is None
    assert second.throughput_audio_per_s == pytest.approx(0.0)


def test_summary_finds_the_clean_steps_the_refusals_and_the_saturation_ratio() -> None:
    rows = step_rows(WINDOWS, STREAMS, samples(), AudioMeter(), raw_throughput=2.5)
    summary = summarize(rows, STREAMS, capacity=1, raw_throughput=2.5)
    assert summary.highest_clean_users == 1  # the two-user step had underruns
    assert summary.beyond_capacity == ((2, 4),)
    assert summary.beyond_capacity_refused is True
    assert summary.saturation_throughput == pytest.approx(2.0)
    assert summary.saturation_users == 2
    assert summary.saturation_ratio == pytest.approx(0.8)
    assert (summary.streams, summary.completed, summary.failed) == (5, 4, 1)

    unknown = summarize(rows, STREAMS, capacity=None, raw_throughput=None)
    assert unknown.beyond_capacity == () and unknown.beyond_capacity_refused is None
    assert unknown.saturation_ratio is None


def test_stats_are_read_defensively() -> None:
    full = {
        "generated": {"segments_total": 7, "audio_seconds_total": 12.5, "gen_seconds_total": 4},
        "admission": {
            "capacity_streams": 2,
            "generating_streams": 1,
            "refused_total": 4,
            "throughput_audio_per_s": 2.25,
        },
        "process": {"rss_bytes": 123},
    }
    sample = parse_sample(1.0, full, rss_fallback=999)
    assert sample == StatsSample(1.0, 12.5, 7, 4.0, 2, 1, 4, 2.25, 123)
    assert parse_sample(2.0, {}, rss_fallback=999) == StatsSample(2.0, rss_bytes=999)
    odd = {"generated": [1], "admission": {"capacity_streams": True, "refused_total": "3"}}
    assert parse_sample(3.0, odd) == StatsSample(3.0)


def test_the_meter_sums_audio_by_arrival_time() -> None:
    meter = AudioMeter(bucket_s=0.5)
    meter.add(0.1, 1.0)
    meter.add(0.6, 2.0)
    meter.add(1.2, 4.0)
    assert meter.between(0.0, 1.0) == pytest.approx(3.0)
    assert meter.between(0.5, 1.5) == pytest.approx(6.0)
    assert meter.rate(0.0, 2.0) == pytest.approx(3.5)
    assert meter.rate(1.0, 1.0) is None


# --- ramp and configuration --------------------------------------------------------------------


def test_the_ramp_splits_the_duration_and_adds_users_past_the_capacity() -> None:
    assert default_steps(2) == (1, 2, 3, 4)
    assert default_steps(3) == (1, 2, 3, 4, 5)
    assert default_steps(None) == (1, 2, 3, 4)
    assert parse_steps("1, 2,4") == (1, 2, 4)
    for bad in ("", "0,1", "a"):
        with pytest.raises(ValueError, match="steps"):
            parse_steps(bad)
    ramp = Ramp.even((1, 3), 20.0)
    assert ramp.windows == (StepWindow(0, 1, 0.0, 10.0), StepWindow(1, 3, 10.0, 20.0))
    assert (ramp.end, ramp.users) == (20.0, 3)
    assert ramp.step_at(9.9) == ramp.windows[0]
    assert ramp.step_at(20.0) is None
    assert ramp.next_active(2, 0.0) == ramp.windows[1]  # the third user joins in step 2
    assert ramp.next_active(0, 20.0) is None


def test_command_line() -> None:
    config = config_from_args(["--duration", "24", "--steps", "1,2", "--no-raw", "--out", "x"])
    assert (config.duration_s, config.steps, config.raw, config.out) == (
        24.0,
        (1, 2),
        False,
        Path("x"),
    )
    assert config.word_share == 0.5 and config.voice is None and config.server is None
    assert config_from_args([]).out.parent == Path("loadtest/results")
    with pytest.raises(SystemExit):
        config_from_args(["--word-share", "1.5"])


def test_the_corpus_is_varied_and_segments_as_the_server_cuts_it() -> None:
    assert len(CORPUS) >= 12
    assert any(any(ch.isdigit() for ch in text) for text in CORPUS)
    assert any('"' in text for text in CORPUS)
    for text in CORPUS:
        segments = segment_texts(text)
        assert len(segments) >= 3
        assert len(segments[0].split()) <= 2
        assert "".join(segments).replace(" ", "") == text.replace(" ", "")


# --- refusals ------------------------------------------------------------------------------------


def busy(retry_after_ms: object = 200) -> ServerError:
    return ServerError(
        {
            "type": "error",
            "code": "busy",
            "fatal": False,
            "message": "at capacity",
            "retry_after_ms": retry_after_ms,
        }
    )


def test_retry_waits_follow_the_server_with_a_cap() -> None:
    assert retry_wait_s(busy(250).details) == pytest.approx(0.25)
    assert retry_wait_s(busy(60_000).details) == MAX_RETRY_WAIT_S
    assert retry_wait_s(busy(None).details) == 1.0
    assert retry_wait_s(busy(True).details) == 1.0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


async def test_a_refused_start_is_retried_after_the_servers_wait() -> None:
    time = FakeTime()
    refusals: list[float] = []
    answers: list[ServerError | str] = [busy(300), busy(9000), "done"]

    async def attempt(number: int) -> str:
        answer = answers[number]
        if isinstance(answer, ServerError):
            raise answer
        return answer

    result = await until_admitted(
        attempt, give_up_at=60.0, clock=time.clock, sleep=time.sleep, on_refusal=refusals.append
    )
    assert result == "done"
    assert time.waits == [pytest.approx(0.3), MAX_RETRY_WAIT_S]
    assert refusals == [0.0, pytest.approx(0.3)]


async def test_refusals_until_the_ramp_ends_give_up_and_other_errors_propagate() -> None:
    time = FakeTime()
    refusals: list[float] = []

    async def always_busy(number: int) -> str:
        raise busy(2000)

    result = await until_admitted(
        always_busy, give_up_at=5.0, clock=time.clock, sleep=time.sleep, on_refusal=refusals.append
    )
    assert result is None
    assert refusals == [0.0, 2.0, 4.0]  # the third would retry at 6.0, past the end...
    assert time.waits == [2.0, 2.0, 1.0]  # ...so it waits for the end instead

    async def broken(number: int) -> str:
        raise ServerError({"code": "internal", "message": "boom"})

    with pytest.raises(ServerError, match="internal"):
        await until_admitted(
            broken, give_up_at=5.0, clock=time.clock, sleep=time.sleep, on_refusal=refusals.append
        )


def test_the_player_model_says_how_much_is_left_to_hear() -> None:
    now = [0.0]
    player = PlaybackClock(clock=lambda: now[0])
    player.add(SAMPLE_RATE)  # one second: enough to start without a plan
    now[0] = 0.4
    assert player.remaining_s() == pytest.approx(0.6)

    held = PlaybackClock(clock=lambda: now[0])
    held.add(2400)  # 100 ms, under the pre-roll
    held.plan(1000, 2400)  # slow first segment: hold 1.75 - 0.1 + 0.12 s after the first audio
    assert held.remaining_s() == pytest.approx(1.77 + 0.1)


# --- report --------------------------------------------------------------------------------------


def report(raw: RawResult | None = None) -> LoadReport:
    return build_report(
        created="2025-01-01T00:00:00+00:00",
        config=LoadConfig(out=Path("out"), steps=(1, 2)).to_json(),
        machine={"cpu": "Test CPU", "cores": 2},
        server={"base": "http://127.0.0.1:1", "spawned": True, "plan": "cpu:1x2"},
        capacity=1,
        raw=raw or RawResult("cpu:1x2", 2.5, items=40, texts=4, rounds=1, seconds=30.0),
        windows=WINDOWS,
        streams=STREAMS,
        samples=samples(),
        meter=AudioMeter(),
    )


def test_the_markdown_has_the_step_table_and_the_summary() -> None:
    text = render_markdown(report(), ["ttfa.png"])
    assert "| users | started | completed | failed | refusals |" in text
    assert "| 1 | 2 | 2 | 0 | 0 | 200 / 290 / 298 | 85 | 0 (0) | 1.00 | 0.40 | 1.1 | 210 |" in text
    assert "| 2 | 3 | 2 | 1 | 4 | 300 / 390 / 398 | 155 | 2 (1) | 2.00 | 0.80 | 2.0 | 220 |" in text
    assert "Advertised capacity: 1 streams" in text
    assert "Highest step without underruns: 1 users" in text
    assert "Steps beyond capacity got refusals: yes, every one (2 users: 4)" in text
    assert "Saturation throughput: 2.00 audio s/s (at 2 users)" in text
    assert "raw engine loop: 2.50 audio s/s; saturation / raw = 0.80" in text
    assert "Stream error: ServerError: internal: boom" in text
    assert "![ttfa](ttfa.png)" in text


def test_the_baseline_is_the_mean_of_the_loop_before_and_after_the_ramp() -> None:
    before = RawResult("cpu:1x2", 3.2, items=40, texts=4, rounds=1, seconds=30.0)
    after = RawResult("cpu:1x2", 2.8, items=40, texts=4, rounds=1, seconds=34.0)
    mean = RawResult.mean_of(before, after)
    assert mean.throughput_audio_per_s == pytest.approx(3.0) and mean.passes == (3.2, 2.8)
    failed = RawResult("cpu:1x2", None, error="OSError: gone")
    assert RawResult.mean_of(before, failed).throughput_audio_per_s == pytest.approx(3.2)
    text = render_markdown(report(mean), [])
    assert "raw engine loop: 3.00 audio s/s (mean of 3.20 before and 2.80 after the ramp)" in text


def test_the_plots_are_written_as_png(tmp_path: Path) -> None:
    paths = write_plots(report(), tmp_path)
    assert [path.name for path in paths] == list(PLOTS)
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plots_without_data_are_still_written(tmp_path: Path) -> None:
    empty = build_report(
        created="now",
        config={},
        machine={},
        server={},
        capacity=None,
        raw=None,
        windows=WINDOWS,
        streams=[],
        samples=[],
        meter=AudioMeter(),
    )
    for path in write_plots(empty, tmp_path):
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert "Saturation throughput: 0.00" in render_markdown(empty)


# --- end to end ----------------------------------------------------------------------------------

SHORT_TEXTS = (
    "The train leaves at 6:40 tonight. Please be on time.",
    '"Where are my keys?" asked Tom. They were in the door.',
    "Add two eggs, a cup of milk, and a pinch of salt. Stir well.",
)


@pytest.mark.model
@pytest.mark.timeout(240)
async def test_a_short_ramp_against_a_spawned_server(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKORO_CACHE_DIR", str(settings.cache_dir))
    monkeypatch.setenv("KOKORO_PLAN", "cpu:1x2")  # no plan benchmark on this fresh cache
    out = tmp_path / "run"
    config = LoadConfig(
        out=out, duration_s=24, steps=(1, 2), texts=SHORT_TEXTS, raw_texts=1, drain_timeout_s=30
    )
    result = await run_load_test(config)

    for name in ("report.json", "report.md", "server.log", *PLOTS):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "report.json").read_text())
    assert [step["users"] for step in data["steps"]] == [1, 2]
    assert all(step["throughput_audio_per_s"] > 0 for step in data["steps"])
    assert data["raw"]["throughput_audio_per_s"] > 0
    admitted = [s for s in result.streams if s.outcome != "refused"]
    assert len(admitted) >= 3
    for record in admitted:  # a gap, a repeat or a short count would have been an error
        assert record.outcome == "complete", record
        assert record.audio_seconds > 0 and record.client_ttfa_ms is not None
    assert {record.mode for record in admitted} <= {"whole", "words"}
    assert "| users | started |" in (out / "report.md").read_text()


@pytest.mark.model
async def test_a_spawned_server_runs_no_scheduled_benchmark(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKORO_CACHE_DIR", str(settings.cache_dir))
    monkeypatch.setenv("KOKORO_PLAN", "cpu:1x2")
    monkeypatch.delenv("KOKORO_BENCH_INTERVAL_S", raising=False)
    async with target_server(None, tmp_path) as target, httpx.AsyncClient() as http:
        benchmarks = (await http.get(f"{target.base}/v1/benchmarks")).json()
    assert benchmarks["scheduled"]["interval_s"] == 0, "it would compete with the raw loop"

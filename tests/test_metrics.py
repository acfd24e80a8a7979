"""The metrics actor (``actors.metrics``): counts, percentiles, rtf, a never-blocking observe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from actors.messages import Event, SegmentGenerated, StreamFinished, StreamKey, StreamStarted
from actors.metrics import RECENT, MetricsActor
from actors.supervisor import Supervisor
from actors.testing import assert_no_leaked_tasks
from app.degradation import CostModel, LiveDegradation

A = StreamKey("session", "a")
B = StreamKey("session", "b")
C = StreamKey("session", "c")


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    with assert_no_leaked_tasks():
        yield


async def observed(events: Sequence[Event], actor: MetricsActor | None = None) -> MetricsActor:
    """Run a metrics actor, observe ``events``, and stop it once it handled them all."""
    metrics = actor if actor is not None else MetricsActor()
    async with Supervisor(name="test") as sup:
        await sup.start(metrics)
        for event in events:
            metrics.observe(event)
        await sup.stop_actor(metrics)  # drains the mailbox first
    return metrics


def finished(
    key: StreamKey,
    reason: str = "complete",
    ttfa: float | None = 0.2,
    gen: float = 1.0,
    audio: float = 4.0,
) -> StreamFinished:
    return StreamFinished(key, reason, round(audio * 24_000), ttfa, gen, audio)


def generated(
    key: StreamKey, gen: float, queue: float = 0.0, provider: str = "CPU"
) -> SegmentGenerated:
    return SegmentGenerated(key, 0, gen, queue, 1.0, provider)


async def test_empty_snapshot() -> None:
    snapshot = MetricsActor().snapshot()
    assert snapshot == {
        "streams": {"active": 0, "started": 0, "finished": {}},
        "ttfa_ms": {"p50": None, "p95": None},
        "rtf_mean": None,
        "segment_gen_ms": {"p50": None, "p95": None},
        "queue_wait_ms": {"p50": None, "p95": None},
        "segments_by_provider": {},
        "generated": {"segments_total": 0, "audio_seconds_total": 0.0, "gen_seconds_total": 0.0},
        "live_degradation": [
            {"signal": "rtf", "samples": 0, "ratio": None, "limit": 1.15, "degraded": False},
            {"signal": "ttfa", "samples": 0, "ratio": None, "limit": 1.5, "degraded": False},
        ],
        "events_dropped": 0,
        "window": RECENT,
    }


async def test_stream_and_segment_events_are_counted() -> None:
    metrics = await observed(
        [
            StreamStarted(A, 0.0),
            StreamStarted(B, 0.1),
            StreamStarted(C, 0.2),
            generated(A, 0.1, provider="CUDAExecutionProvider"),
            generated(A, 0.2, provider="CUDAExecutionProvider"),
            generated(B, 0.3, provider="CPUExecutionProvider"),
            finished(A, "complete"),
            finished(B, "cancelled"),
        ]
    )
    snapshot = metrics.snapshot()
    assert snapshot["streams"] == {
        "active": 1,
        "started": 3,
        "finished": {"complete": 1, "cancelled": 1},
    }
    assert snapshot["segments_by_provider"] == {
        "CUDAExecutionProvider": 2,
        "CPUExecutionProvider": 1,
    }
    assert snapshot["generated"] == {
        "segments_total": 3,
        "audio_seconds_total": 3.0,
        "gen_seconds_total": 0.6,
    }
    assert snapshot["events_dropped"] == 0


async def test_percentiles() -> None:
    # Generation times of 1..101 ms, observed in a scrambled order.
    gens = [i / 1000 for i in range(1, 102)]
    order = sorted(range(101), key=lambda i: (i * 37) % 101)
    metrics = await observed([generated(A, gens[i], queue=gens[i] / 10) for i in order])
    snapshot = metrics.snapshot()
    assert snapshot["segment_gen_ms"] == {"p50": 51.0, "p95": 96.0}
    assert snapshot["queue_wait_ms"] == {"p50": 5.1, "p95": 9.6}


async def test_percentiles_of_one_value() -> None:
    metrics = await observed([finished(A, ttfa=0.1234)])
    assert metrics.snapshot()["ttfa_ms"] == {"p50": 123.4, "p95": 123.4}


async def test_ttfa_and_rtf_skip_streams_without_audio() -> None:
    metrics = await observed(
        [
            finished(A, ttfa=0.2, gen=1.0, audio=4.0),  # rtf 0.25
            finished(B, ttfa=0.4, gen=3.0, audio=4.0),  # rtf 0.75
            finished(C, "error", ttfa=None, gen=0.5, audio=0.0),  # no audio: no ttfa, no rtf
        ]
    )
    snapshot = metrics.snapshot()
    assert snapshot["rtf_mean"] == 0.5
    assert snapshot["ttfa_ms"] == {"p50": 200.0, "p95": 400.0}  # the lower of two is p50
    assert snapshot["streams"]["finished"] == {"complete": 2, "error": 1}


async def test_rtf_mean_is_rounded() -> None:
    metrics = await observed([finished(A, gen=1.0, audio=3.0), finished(B, gen=1.0, audio=3.0)])
    assert metrics.snapshot()["rtf_mean"] == 0.3333


async def test_only_recent_figures_count() -> None:
    old = [generated(A, 10.0) for _ in range(100)]
    recent = [generated(A, 0.001) for _ in range(RECENT)]
    metrics = await observed(old + recent, MetricsActor(mailbox_size=RECENT + 100))
    assert metrics.snapshot()["segment_gen_ms"] == {"p50": 1.0, "p95": 1.0}
    assert metrics.snapshot()["segments_by_provider"] == {"CPU": RECENT + 100}


def test_observe_never_blocks_and_counts_drops() -> None:
    metrics = MetricsActor(mailbox_size=3)  # not running: nothing empties the mailbox
    for _ in range(10):
        metrics.observe(StreamStarted(A))
    assert metrics.dropped == 7
    assert metrics.mailbox_depth == 3
    assert metrics.snapshot()["events_dropped"] == 7


async def test_queued_events_still_count_after_drops() -> None:
    metrics = MetricsActor(mailbox_size=2)
    for key in (A, B, C):
        metrics.observe(StreamStarted(key))
    assert metrics.dropped == 1
    await observed([], metrics)
    snapshot = metrics.snapshot()
    assert snapshot["streams"]["started"] == 2
    assert snapshot["events_dropped"] == 1


async def test_observe_after_stop_is_a_drop() -> None:
    metrics = await observed([StreamStarted(A)])
    metrics.observe(StreamStarted(B))  # the actor is closed: counted, not raised
    assert metrics.dropped == 1
    assert metrics.snapshot()["streams"]["started"] == 1


async def test_segments_and_streams_feed_the_live_degradation_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Engine time twice the prediction turns the RTF signal degraded (and it is logged);
    calls that shared the CPU do not count; TTFA is judged against the first segment."""
    actor = MetricsActor()
    actor.live = LiveDegradation(min_samples=4)
    actor.live.baseline = CostModel(per_call_seconds=0.1, per_audio_second=0.4)  # 1 s audio: 0.5 s
    keys = [StreamKey("c", f"s{i}") for i in range(4)]
    events: list[Event] = []
    for key in keys:
        events += [
            StreamStarted(key, 0.0),
            SegmentGenerated(key, 0, 1.1, 0.0, 1.0, "CPU", engine_seconds=1.0, solo=True),
            SegmentGenerated(key, 1, 9.0, 0.0, 1.0, "CPU", engine_seconds=9.0, solo=False),
            finished(key, "complete", ttfa=0.55),
        ]
    with caplog.at_level("WARNING", logger="actors.metrics"):
        metrics = await observed(events, actor)
    rtf, ttfa = metrics.live.verdicts()
    assert rtf.samples == 4 and rtf.ratio == pytest.approx(2.0) and rtf.degraded
    assert ttfa.samples == 4 and ttfa.ratio == pytest.approx(1.1) and not ttfa.degraded
    assert [r.getMessage() for r in caplog.records if "degraded" in r.getMessage()] == [
        "live rtf degraded: 2.00x the benchmark's prediction (limit 1.15x, 4 samples)"
    ]

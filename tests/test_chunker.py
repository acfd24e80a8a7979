"""The stream chunker (``actors.chunker``) with a fake socket, fake scheduler and fake clock.

The chunker runs under a ``Supervisor``; what it sends is decoded with ``wire.decode_server``.
Waits are driven by the chunker's own callbacks (an event set on every send, demand report and
finish), never by sleeping; the chunker's pacing waits are kept tiny by a small frame size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
import pytest

from actors.audio import (
    Encoding,
    FrameSizer,
    Samples,
    encode_samples,
    shape_segment,
)
from actors.chunker import StreamChunker
from actors.messages import (
    EndMarker,
    FlushMarker,
    SegmentAudio,
    SegmentFailed,
    SegmentJob,
    StreamDemand,
    StreamFinished,
    StreamKey,
)
from actors.metrics import MetricsActor
from actors.segmentation import Boundary, TextSegment
from actors.supervisor import Supervisor
from actors.testing import assert_no_leaked_tasks
from app import wire
from app.prometheus_metrics import PrometheusMetrics
from app.tts.engine import SAMPLE_RATE

KEY = StreamKey("session-1", "s1")
NO_PACING = 1_000.0  # max_lead_seconds that never holds audio back
WAIT = 5.0  # seconds a test waits for the chunker before failing

Message = dict[str, Any]


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    with assert_no_leaked_tasks():
        yield


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeClient:
    """The chunker's outside world: the socket, the scheduler's demand lane, the gateway."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.demands: list[StreamDemand] = []
        self.results: list[StreamFinished] = []
        self._changed = asyncio.Event()

    async def send(self, data: bytes) -> None:
        self.messages.append(wire.decode_server(data))
        self._changed.set()

    def demand(self, report: StreamDemand) -> None:
        self.demands.append(report)
        self._changed.set()

    def finished(self, result: StreamFinished) -> None:
        self.results.append(result)
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate`` holds; it is checked after every callback of the chunker."""
        async with asyncio.timeout(WAIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_done(self) -> Message:
        await self.wait_until(lambda: any(m["type"] == "done" for m in self.messages))
        return self.of_type("done")[-1]

    def of_type(self, mtype: str) -> list[Message]:
        return [m for m in self.messages if m["type"] == mtype]

    def frames(self) -> list[Message]:
        return self.of_type("audio")


def make_chunker(
    client: FakeClient,
    clock: FakeClock,
    *,
    max_lead_seconds: float = NO_PACING,
    frame_sizer: FrameSizer | None = None,
    encoding: Encoding = "pcm_s16le",
    metrics: MetricsActor | None = None,
) -> StreamChunker:
    return StreamChunker(
        KEY,
        send=client.send,
        demand=client.demand,
        finished=client.finished,
        metrics=metrics,
        encoding=encoding,
        frame_sizer=frame_sizer,
        max_lead_seconds=max_lead_seconds,
        clock=clock,
    )


def sine(seconds: float, freq: float = 200.0, amplitude: float = 0.3) -> Samples:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def model_audio(speech_seconds: float = 1.0, freq: float = 200.0) -> Samples:
    """A model call's output: 0.3 s of silence, the "speech", 0.6 s of silence."""
    silence = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([silence, sine(speech_seconds, freq), silence, silence])


def segment_job(
    index: int, boundary: Boundary = "sentence", final: bool = False, received_at: float = 0.0
) -> SegmentJob:
    text = f"Segment number {index}."
    segment = TextSegment(
        index=index,
        text=text,
        char_start=100 * index,
        char_end=100 * index + len(text),
        boundary=boundary,
        final=final,
    )
    return SegmentJob(KEY, segment, voice="af_heart", speed=1.0, received_at=received_at)


def segment_audio(
    index: int,
    audio: Samples,
    *,
    boundary: Boundary = "sentence",
    final: bool = False,
    received_at: float = 0.0,
    gen_seconds: float = 0.25,
) -> SegmentAudio:
    return SegmentAudio(
        job=segment_job(index, boundary, final, received_at),
        audio=audio,
        gen_seconds=gen_seconds,
        queue_seconds=0.0,
        provider="FakeExecutionProvider",
    )


def three_segments() -> list[SegmentAudio]:
    return [
        segment_audio(0, model_audio(0.5, 200.0), boundary="clause"),
        segment_audio(1, model_audio(1.0, 300.0), boundary="sentence"),
        segment_audio(2, model_audio(0.7, 250.0), boundary="word", final=True),
    ]


def shaped(audio: SegmentAudio) -> Samples:
    segment = audio.job.segment
    return shape_segment(audio.audio, segment.boundary, final=segment.final)


def frame_samples(frame: Message) -> int:
    return len(frame["data"]) // (2 if frame["encoding"] == "pcm_s16le" else 4)


def check_frames(client: FakeClient, segments: Sequence[SegmentAudio]) -> None:
    """Gap-free seq and pos, frames in segment order, a ``segment`` after each segment's frames."""
    frames = client.frames()
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    pos = 0
    for frame in frames:
        assert frame_samples(frame) > 0
        assert frame["pos"] == pos
        assert frame["stream"] == KEY.stream
        assert frame["sample_rate"] == SAMPLE_RATE
        pos += frame_samples(frame)
    # Per segment: its frames, then its segment message, before anything of the next segment.
    story = [(m["type"], m["seg"]) for m in client.messages if m["type"] in ("audio", "segment")]
    expected: list[tuple[str, int]] = []
    for audio in segments:
        index = audio.job.segment.index
        count = sum(1 for f in frames if f["seg"] == index)
        expected += [("audio", index)] * count + [("segment", index)]
    assert story == expected
    done = {m["seg"]: m for m in client.of_type("segment")}
    for audio in segments:
        segment = audio.job.segment
        message = done[segment.index]
        sent = sum(frame_samples(f) for f in frames if f["seg"] == segment.index)
        assert message["samples"] == sent == len(shaped(audio))
        assert (message["text"], message["char_start"], message["char_end"]) == (
            segment.text,
            segment.char_start,
            segment.char_end,
        )
        assert message["provider"] == "FakeExecutionProvider"
        assert message["gen_ms"] == round(audio.gen_seconds * 1000, 1)


# --- framing, order and completion -----------------------------------------------------------


@pytest.mark.parametrize("encoding", ["pcm_s16le", "f32le"])
async def test_frames_are_contiguous_in_order_and_sample_exact(encoding: Encoding) -> None:
    client, clock = FakeClient(), FakeClock(1.0)
    chunker = make_chunker(client, clock, encoding=encoding)
    segments = three_segments()
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        for audio in segments:
            await chunker.send(audio)
        await chunker.send(EndMarker(segments=3))
        done = await client.wait_done()

    check_frames(client, segments)
    assert {f["encoding"] for f in client.frames()} == {encoding}
    pcm = b"".join(f["data"] for f in client.frames())
    expected = encode_samples(np.concatenate([shaped(a) for a in segments]), encoding)
    assert pcm == expected
    total = sum(frame_samples(f) for f in client.frames())
    assert done["reason"] == "complete"
    assert done["samples"] == total == chunker.sent_samples
    assert client.messages[-1] is done
    assert len(client.results) == 1
    assert client.results[0].reason == "complete"
    assert client.results[0].samples == total


async def test_done_reports_ttfa_and_rtf() -> None:
    client, clock = FakeClient(), FakeClock(10.0)
    chunker = make_chunker(client, clock)
    audio = segment_audio(0, model_audio(1.0), final=True, received_at=9.25, gen_seconds=0.5)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(audio)
        await chunker.send(EndMarker(segments=1))
        done = await client.wait_done()
    samples = len(shaped(audio))
    assert done["samples"] == samples
    assert done["ttfa_ms"] == 750.0  # first frame at 10.0, text at 9.25
    assert done["rtf"] == round(0.5 / (samples / SAMPLE_RATE), 4)
    assert client.results[0].ttfa_seconds == pytest.approx(0.75)


async def test_an_end_for_want_of_text_finishes_with_its_reason() -> None:
    client, clock = FakeClient(), FakeClock(0.0)
    chunker = make_chunker(client, clock)
    audio = segment_audio(0, model_audio(0.5), final=True)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(audio)
        await chunker.send(EndMarker(segments=1, reason="timeout"))
        done = await client.wait_done()
    assert (done["reason"], done["samples"]) == ("timeout", len(shaped(audio)))
    assert client.results[0].reason == "timeout"


async def test_played_reports_are_clamped_to_what_was_sent() -> None:
    """A client's report may not move the stream, or the metrics every stream shares, beyond
    what the server sent it: at most one underrun per frame, no position past the last sample,
    no more buffered than unplayed."""
    client, clock = FakeClient(), FakeClock(0.0)
    prometheus = PrometheusMetrics()
    chunker = make_chunker(client, clock, metrics=MetricsActor(prometheus=prometheus))
    audio = segment_audio(0, model_audio(0.5), final=True)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(audio)
        await chunker.send(EndMarker(segments=1))
        await client.wait_done()
        frames = len(client.frames())
        chunker.on_played(2**64 - 1, 2**64 - 1, buffered_ms=1e308)
        assert prometheus.registry.get_sample_value("kokoro_client_underruns_total") == frames
        assert chunker.played_samples() == chunker.sent_samples
        chunker.on_played(-(2**63), 2**64 - 1, buffered_ms=-1.0)
        assert prometheus.registry.get_sample_value("kokoro_client_underruns_total") == frames, (
            "no underrun counted twice"
        )
        assert chunker.played_samples() == 0
        assert chunker.client_lead_seconds() == pytest.approx(chunker.sent_samples / SAMPLE_RATE)


async def test_a_client_that_stops_playing_what_it_holds_is_stalled() -> None:
    client, clock = FakeClient(), FakeClock(0.0)
    chunker = make_chunker(client, clock)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(segment_audio(0, model_audio(1.0)))  # more to come: no end yet
        await client.wait_until(lambda: chunker.unsent_samples() == 0 and chunker.sent_samples > 0)
        assert chunker.stalled_since() is None, "no report: real-time playback is assumed"
        chunker.on_played(1000, 0)
        clock.now = 1.0
        chunker.on_played(1000, 0)
        assert chunker.stalled_since() == 0.0, "the same position again: stalled since 0"
        clock.now = 2.0
        chunker.on_played(2000, 0)
        assert chunker.stalled_since() == 2.0, "it moved on at 2"
        chunker.on_played(chunker.sent_samples, 0)
        assert chunker.stalled_since() is None, "it played all it got: the server is behind"
        chunker.on_played(2000, 0)
        await chunker.send(EndMarker(segments=1))
        await client.wait_done()
        assert chunker.stalled_since() is None, "synthesis is complete: no slot held"


async def test_segments_out_of_order_are_sent_in_order() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    first, second = three_segments()[:2]
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(second)
        await chunker.send(FlushMarker("probe", after_segment=-1))
        await client.wait_until(lambda: bool(client.of_type("flushed")))
        # Segment 1 has been handled, but nothing of it may go before segment 0.
        assert client.frames() == []
        await chunker.send(first)
        await chunker.send(EndMarker(segments=2))
        done = await client.wait_done()
    check_frames(client, [first, second])
    assert done["samples"] == len(shaped(first)) + len(shaped(second))


async def test_flush_is_acknowledged_after_its_segments() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    segments = three_segments()
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        # Flushes come in order (the segmenter numbers them by the segments cut so far).
        await chunker.send(FlushMarker("at-once", after_segment=-1))
        await client.wait_until(lambda: bool(client.of_type("flushed")))
        await chunker.send(FlushMarker(7, after_segment=1))
        await chunker.send(FlushMarker(None, after_segment=2))
        for audio in segments:
            await chunker.send(audio)
        await chunker.send(EndMarker(segments=3))
        await client.wait_done()

    check_frames(client, segments)
    kinds = [(m["type"], m.get("seg"), m.get("id")) for m in client.messages if m["type"] != "flow"]
    flushed = [m["id"] for m in client.of_type("flushed")]
    assert flushed == ["at-once", 7, None]
    assert kinds[0] == ("flushed", None, "at-once")  # nothing to wait for
    # Flush 7 goes right after segment 1 is complete, before segment 2's first frame.
    at = kinds.index(("flushed", None, 7))
    assert kinds[at - 1] == ("segment", 1, None)
    assert kinds[at + 1] == ("audio", 2, None)
    # The last flush goes after the last segment, before done.
    assert kinds[-3:] == [("segment", 2, None), ("flushed", None, None), ("done", None, None)]


async def test_flush_for_a_missing_segment_waits_for_it() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    first, second = three_segments()[:2]
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(first)
        await chunker.send(FlushMarker("probe", after_segment=0))
        await chunker.send(FlushMarker("second", after_segment=1))
        await client.wait_until(lambda: bool(client.of_type("flushed")))
        assert [m["id"] for m in client.of_type("flushed")] == ["probe"]
        await chunker.send(second)
        await chunker.send(EndMarker(segments=2))
        await client.wait_done()
    assert [m["id"] for m in client.of_type("flushed")] == ["probe", "second"]


async def test_end_without_segments_is_done_at_once() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(EndMarker(segments=0))
        done = await client.wait_done()
    assert client.messages == [done]
    assert (done["reason"], done["samples"], done["ttfa_ms"], done["rtf"]) == (
        "complete",
        0,
        None,
        None,
    )
    assert len(client.results) == 1


async def test_silent_segment_keeps_the_stream_consistent() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    silent = segment_audio(1, np.zeros(SAMPLE_RATE, dtype=np.float32))
    segments = [segment_audio(0, model_audio(0.5)), silent, segment_audio(2, model_audio(0.5))]
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        for audio in segments:
            await chunker.send(audio)
        await chunker.send(EndMarker(segments=3))
        done = await client.wait_done()
    check_frames(client, segments)  # also: no empty audio frame for the silent segment
    assert not any(f["seg"] == 1 for f in client.frames())
    assert {m["seg"]: m["samples"] for m in client.of_type("segment")}[1] == 0
    assert done["samples"] == len(shaped(segments[0])) + len(shaped(segments[2]))


async def test_segment_failure_sends_error_then_done() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(SegmentFailed(segment_job(0), "synthesis_failed", "the model broke"))
        done = await client.wait_done()
        # Later input does not end the stream a second time.
        await chunker.send(segment_audio(0, model_audio(0.2)))
        await chunker.send(EndMarker(segments=1))
    assert [m["type"] for m in client.messages] == ["error", "done"]
    error = client.messages[0]
    assert (error["code"], error["message"], error["stream"], error["fatal"]) == (
        "synthesis_failed",
        "the model broke",
        KEY.stream,
        False,
    )
    assert (done["reason"], done["samples"]) == ("error", 0)
    assert len(client.results) == 1
    assert client.results[0].reason == "error"


async def test_failure_after_audio_reports_what_was_sent() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    first = segment_audio(0, model_audio(0.5))
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(first)
        await client.wait_until(lambda: bool(client.of_type("segment")))
        await chunker.send(SegmentFailed(segment_job(1), "internal", "boom"))
        done = await client.wait_done()
    assert [m["type"] for m in client.messages[-2:]] == ["error", "done"]
    assert done["reason"] == "error"
    assert done["samples"] == len(shaped(first)) == sum(map(frame_samples, client.frames()))
    assert len(client.results) == 1


# --- frame sizes ---------------------------------------------------------------------------------


async def test_fixed_frame_size() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock, frame_sizer=FrameSizer.fixed_at(100))
    segments = three_segments()
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        chunker.on_played(0, 0)  # reports do not change a fixed size either
        for audio in segments:
            await chunker.send(audio)
        await chunker.send(EndMarker(segments=3))
        await client.wait_done()
    check_frames(client, segments)
    assert client.of_type("flow") == []
    for audio in segments:
        index = audio.job.segment.index
        sizes = [frame_samples(f) for f in client.frames() if f["seg"] == index]
        assert all(size == 2400 for size in sizes[:-1])
        assert 0 < sizes[-1] <= 2400
        assert len(sizes) == -(-len(shaped(audio)) // 2400)


async def test_flow_is_sent_when_the_frame_size_changes() -> None:
    client, clock = FakeClient(), FakeClock()
    sizer = FrameSizer(min_ms=20, start_ms=40, max_ms=80, comfortable_lead_ms=1000)
    chunker = make_chunker(client, clock, frame_sizer=sizer)
    audio = segment_audio(0, model_audio(2.0), final=True)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(audio)
        await chunker.send(EndMarker(segments=1))
        await client.wait_done()

    flows = client.of_type("flow")
    # The frozen clock means nothing is played: the lead is all that was sent. It starts low
    # (40 ms -> 20 ms) and passes a second later on (20 -> 40 -> 80 ms).
    assert [(f["frame_ms"], f["reason"]) for f in flows] == [
        (20, "low_lead"),
        (40, "lead"),
        (80, "lead"),
    ]
    assert all(f["stream"] == KEY.stream for f in flows)
    # Every frame has the size announced before it (the first: start_ms), but the last.
    frame_ms = 40
    last_seq = client.frames()[-1]["seq"]
    for message in client.messages:
        if message["type"] == "flow":
            frame_ms = message["frame_ms"]
        elif message["type"] == "audio" and message["seq"] != last_seq:
            assert frame_samples(message) == SAMPLE_RATE * frame_ms // 1000
    # A flow follows the frame that changed the size, and reports the lead after it.
    first_flow = client.messages.index(flows[0])
    assert client.messages[first_flow - 1]["seq"] == 0
    assert flows[0]["lead_ms"] == 40.0


# --- pacing ---------------------------------------------------------------------------------


def at_limit(chunker: StreamChunker) -> Callable[[], bool]:
    """The chunker holds the rest back: the client has ``max_lead_seconds`` of audio."""
    return lambda: chunker.client_lead_seconds() >= chunker.max_lead_seconds


def sent_more(client: FakeClient, chunker: StreamChunker, than: int) -> Callable[[], bool]:
    """The chunker sent more than ``than`` samples and is held back again, or it is done."""

    def predicate() -> bool:
        if client.of_type("done"):
            return True
        return chunker.sent_samples > than and at_limit(chunker)()

    return predicate


async def test_pacing_follows_played_reports() -> None:
    client, clock = FakeClient(), FakeClock(0.0)
    max_lead = 0.2
    chunker = make_chunker(client, clock, max_lead_seconds=max_lead)
    audio = segment_audio(0, model_audio(1.0), final=True)
    total = len(shaped(audio))
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        chunker.on_played(0, 0)  # at t=0 the client has played nothing
        await chunker.send(audio)
        await chunker.send(EndMarker(segments=1))

        await client.wait_until(at_limit(chunker))
        frame = chunker.sizer.frame_samples()
        held = chunker.sent_samples
        assert max_lead * SAMPLE_RATE <= held <= max_lead * SAMPLE_RATE + frame
        # It stays there while time stands still: it keeps telling the scheduler it is ahead.
        reports = len(client.demands)
        await client.wait_until(lambda: len(client.demands) >= reports + 2)
        assert chunker.sent_samples == held
        report = client.demands[-1]
        assert report.key == KEY
        assert report.at == 0.0
        assert report.lead_seconds == pytest.approx(total / SAMPLE_RATE)  # nothing played yet

        # 0.1 s later the client says it played 0.1 s: 0.1 s more may go.
        clock.now = 0.1
        chunker.on_played(2400, 0)
        await client.wait_until(sent_more(client, chunker, than=held))
        assert chunker.sent_samples <= 2400 + max_lead * SAMPLE_RATE + frame
        assert client.of_type("done") == []

        # Keep playing until everything went out.
        while not client.of_type("done"):
            clock.now += 0.5
            chunker.on_played(chunker.sent_samples, 0)
            await client.wait_until(sent_more(client, chunker, than=chunker.sent_samples))
        done = client.of_type("done")[0]
    assert done["samples"] == total
    check_frames(client, [audio])


async def test_pacing_assumes_real_time_playback_without_reports() -> None:
    client, clock = FakeClient(), FakeClock(0.0)
    max_lead = 0.2
    chunker = make_chunker(client, clock, max_lead_seconds=max_lead)
    audio = segment_audio(0, model_audio(1.0), final=True)
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(audio)
        await chunker.send(EndMarker(segments=1))
        await client.wait_until(at_limit(chunker))
        frame = chunker.sizer.frame_samples()
        held = chunker.sent_samples
        assert held <= max_lead * SAMPLE_RATE + frame

        # Time passes: the client is assumed to have played 0.3 s since the first frame.
        clock.now = 0.3
        await client.wait_until(sent_more(client, chunker, than=held))
        assert chunker.sent_samples <= (0.3 + max_lead) * SAMPLE_RATE + frame
        assert client.of_type("done") == []

        clock.now = 100.0
        done = await client.wait_done()
    assert done["samples"] == len(shaped(audio))
    check_frames(client, [audio])


async def test_demand_reports_the_lead_ahead() -> None:
    client, clock = FakeClient(), FakeClock(3.0)
    chunker = make_chunker(client, clock)
    audio = segment_audio(0, model_audio(1.0))
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(audio)
        await chunker.send(FlushMarker("x", after_segment=0))
        await client.wait_until(lambda: bool(client.of_type("flushed")))
        await client.wait_until(lambda: bool(client.demands))
    report = client.demands[-1]
    assert report.key == KEY
    assert report.at == 3.0
    # With a frozen clock nothing was played: everything sent is still ahead of the client.
    assert report.lead_seconds == pytest.approx(len(shaped(audio)) / SAMPLE_RATE)

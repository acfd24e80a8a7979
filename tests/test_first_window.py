"""A stream's first segment started from a first window of frames (``first_segment=windowed``).

Pure parts (the window plan, the chunker's two-part segment, the first-sentence policy) run with
fakes; the engine's halves and the live server run the real model.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator

import numpy as np
import numpy.typing as npt
import pytest

from actors.audio import FADE, shape_span, speech_span
from actors.inference import InferenceActor
from actors.messages import (
    EndMarker,
    SegmentAudio,
    SegmentFailed,
    SegmentJob,
    StreamKey,
    WorkerIdle,
)
from actors.segmentation import Boundary, Segmenter, SegmenterPolicy, TextSegment
from actors.supervisor import Supervisor
from actors.testing import assert_no_leaked_tasks
from app.settings import Settings
from app.tts import synthesizer as synthesizer_module
from app.tts.engine import TIMED_FRAMES, Engine
from app.tts.first_window import (
    LOOKAHEAD_FRAMES,
    MIN_FIRST_FRAMES,
    first_window_frames,
)
from app.tts.graph_edits import SAMPLES_PER_FRAME
from app.tts.synthesizer import Synthesizer
from tests.live import Client, StreamLog, live_server, speak
from tests.test_chunker import (
    FakeClient,
    FakeClock,
    check_frames,
    frame_samples,
    make_chunker,
    model_audio,
    segment_audio,
    shaped,
)

# --- the window plan --------------------------------------------------------------------------


def test_the_first_window_covers_the_whole_decode_or_there_is_none() -> None:
    assert first_window_frames(400, None) is None  # speed not measured yet
    fast = first_window_frames(400, 0.001)
    assert fast == MIN_FIRST_FRAMES  # the whole decode (0.4 s) is shorter than the minimum
    slower = first_window_frames(400, 0.004)  # 1.6 s to decode the whole segment
    assert slower is not None and slower > MIN_FIRST_FRAMES
    # Its audio, less the trimmed lead silence, outlasts the whole decode with the margin.
    assert slower * 0.025 - 0.3 >= 1.25 * 1.6 > (slower - 1) * 0.025 - 0.3
    assert first_window_frames(400, 0.02) is None  # too slow: the window would be most of it
    assert first_window_frames(MIN_FIRST_FRAMES + LOOKAHEAD_FRAMES, 0.001) is None  # too short


# --- the first sentence as the first segment ---------------------------------------------------

SENTENCE = (
    "The old lighthouse keeper climbed the narrow stairs every single evening, long before "
    "the first winter storm finally arrived."
)


def test_the_first_sentence_policy_does_not_cut_the_first_segment_at_a_clause() -> None:
    text = SENTENCE + " It was cold."
    short = Segmenter().feed(text)
    assert short[0].text == "The old"
    whole = Segmenter(SegmenterPolicy.whole_first_sentence())
    segments = whole.feed(text) + whole.end()
    assert [s.text for s in segments] == [SENTENCE, "It was cold."]


# --- the chunker's two-part segment ------------------------------------------------------------


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    with assert_no_leaked_tasks():
        yield


WINDOW = 24_000  # the first window: 1 s of the model call


def two_parts(final: bool = True) -> tuple[SegmentAudio, SegmentAudio]:
    """A segment's first window and its whole audio, whose first second differs a little."""
    whole = segment_audio(0, model_audio(2.0, 220.0), final=final, gen_seconds=1.0)
    window = whole.audio[:WINDOW] * np.float32(0.9)
    first = dataclasses.replace(whole, audio=window, gen_seconds=0.3, first_part=True)
    return first, whole


def expected_samples(
    first: npt.NDArray[np.float32],
    whole: npt.NDArray[np.float32],
    boundary: Boundary,
    *,
    final: bool,
) -> npt.NDArray[np.float32]:
    """What a stream plays of a segment: the window's samples, then the whole's, cut where the
    window's speech starts and the joined audio's ends."""
    joined = np.concatenate([first, whole[len(first) :]])
    start, end = speech_span(first), speech_span(joined)
    assert start is not None and end is not None
    return shape_span(joined, (start[0], end[1]), boundary, final=final)


async def stream_alone(base: str, text: str) -> StreamLog:
    """``text`` as the only text of one stream on its own connection, until ``done``."""
    client = await Client.connect(base)
    try:
        await speak(client, "s", text)
        await client.until_done("s")
    finally:
        await client.close()
    return client.streams["s"]


async def test_a_first_window_goes_out_before_the_rest_and_the_rest_continues_it() -> None:
    client, clock = FakeClient(), FakeClock(5.0)
    chunker = make_chunker(client, clock)
    first, whole = two_parts()
    lead = speech_span(first.audio)
    assert lead is not None
    window_samples = WINDOW - lead[0]
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(first)
        await client.wait_until(lambda: chunker.sent_samples == window_samples)
        assert client.of_type("segment") == []  # the segment is not complete yet
        await chunker.send(dataclasses.replace(first))  # a retry's duplicate window: ignored
        await chunker.send(whole)
        await chunker.send(EndMarker(segments=1))
        done = await client.wait_done()
    check_frames(client, [whole])
    pcm = (
        np.concatenate([np.frombuffer(f["data"], dtype="<i2") for f in client.frames()]).astype(
            np.float32
        )
        / 32767
    )
    cut = whole.job.segment
    expected = expected_samples(first.audio, whole.audio, cut.boundary, final=cut.final)
    assert len(pcm) == len(expected) == done["samples"]
    np.testing.assert_allclose(pcm, expected, atol=1.5 / 32767)
    # The window's samples, not the whole call's, are the segment's first second.
    assert not np.allclose(expected[FADE:window_samples], shaped(whole)[FADE:window_samples])
    (segment,) = client.of_type("segment")
    assert segment["samples"] == len(expected)
    assert segment["gen_ms"] == 1000.0  # the whole job's time, counted once
    assert client.results[0].gen_seconds == 1.0


async def test_a_first_window_for_a_segment_not_due_next_is_ignored() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    first, whole = two_parts()
    early = dataclasses.replace(
        first,
        job=dataclasses.replace(first.job, segment=dataclasses.replace(first.job.segment, index=1)),
    )
    zero = segment_audio(0, model_audio(0.5), boundary="clause")
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(early)  # segment 0 is not here: its window cannot go out
        await chunker.send(zero)
        later = dataclasses.replace(whole, job=early.job)
        await chunker.send(later)
        await chunker.send(EndMarker(segments=2))
        await client.wait_done()
    check_frames(client, [zero, later])
    total = sum(frame_samples(f) for f in client.frames())
    assert total == len(shaped(zero)) + len(shaped(later))


async def test_a_silent_first_window_waits_for_the_whole_segment() -> None:
    client, clock = FakeClient(), FakeClock()
    chunker = make_chunker(client, clock)
    first, whole = two_parts()
    silent = dataclasses.replace(first, audio=np.zeros(WINDOW, dtype=np.float32))
    async with Supervisor(name="test") as sup:
        await sup.start(chunker)
        await chunker.send(silent)
        await chunker.send(whole)
        await chunker.send(EndMarker(segments=1))
        done = await client.wait_done()
    assert done["samples"] == len(shaped(whole))


# --- the engine's halves, on the real model ----------------------------------------------------


@pytest.fixture(scope="module")
def windowed(synthesizer: Synthesizer) -> Iterator[Synthesizer]:
    """The session synthesizer's model and voices on a windowed engine."""
    config = dataclasses.replace(synthesizer.engine.config, windowed=True)
    engine = Engine(config)
    try:
        yield Synthesizer(engine, synthesizer.voices, synthesizer.phonemizer, synthesizer.tokenizer)
    finally:
        engine.close()


@pytest.mark.model
def test_the_windowed_engine_renders_the_whole_graphs_samples(
    synthesizer: Synthesizer, windowed: Synthesizer
) -> None:
    tokens = synthesizer.plan(SENTENCE)[0].tokens
    style = synthesizer.voices.style("jm_kumo", len(tokens))
    whole = synthesizer.engine.synthesize(tokens, style, 1.0)
    halves = windowed.engine.synthesize(tokens, style, 1.0)
    np.testing.assert_array_equal(halves.audio, whole.audio)
    assert halves.durations is not None and whole.durations is not None
    np.testing.assert_array_equal(halves.durations, whole.durations)


@pytest.mark.model
def test_an_engine_times_its_calls_per_frame_after_the_first(synthesizer: Synthesizer) -> None:
    engine = Engine(synthesizer.engine.config)
    try:
        tokens = synthesizer.plan(SENTENCE)[0].tokens
        style = synthesizer.voices.style("jm_kumo", len(tokens))
        engine.synthesize(tokens, style, 1.0)
        assert engine.seconds_per_frame is None  # the first call pays first-run costs
        timed = engine.synthesize(tokens, style, 1.0)
        assert timed.durations is not None
        frames = int(timed.durations.sum())
        assert engine.seconds_per_frame == pytest.approx(timed.gen_seconds / frames)
        short = engine.synthesize(tokens[:1], style, 1.0)
        assert short.durations is not None and short.durations.sum() < TIMED_FRAMES
        assert engine.seconds_per_frame == pytest.approx(timed.gen_seconds / frames)  # untimed
    finally:
        engine.close()


@pytest.mark.model
def test_a_first_window_then_the_whole_segment(
    synthesizer: Synthesizer, windowed: Synthesizer
) -> None:
    reference = synthesizer.render(SENTENCE, "jm_kumo", 1.0, timestamps=True)
    engine = windowed.engine
    engine.seconds_per_frame = 0.001  # as if fast: the shortest first window
    head, rest = windowed.render_first_window(SENTENCE, "jm_kumo", 1.0, timestamps=True)
    assert rest is not None
    assert len(head.audio) == MIN_FIRST_FRAMES * SAMPLES_PER_FRAME
    assert head.words == reference.words  # timed from the text side, before the rest
    first = head.audio
    assert not np.array_equal(first, reference.audio[: len(first)])  # decoded on its own
    whole = rest()
    # The window's samples, then the whole call's from the window's end.
    np.testing.assert_array_equal(whole.audio[: len(first)], first)
    np.testing.assert_array_equal(whole.audio[len(first) :], reference.audio[len(first) :])
    assert whole.gen_seconds > head.gen_seconds


@pytest.mark.model
def test_no_first_window_where_it_would_not_help(
    synthesizer: Synthesizer, windowed: Synthesizer
) -> None:
    engine = windowed.engine
    engine.seconds_per_frame = None  # speed not known yet
    whole, rest = windowed.render_first_window(SENTENCE, "jm_kumo", 1.0)
    assert rest is None
    np.testing.assert_array_equal(whole.audio, synthesizer.render(SENTENCE, "jm_kumo", 1.0).audio)
    engine.seconds_per_frame = 0.001
    _, rest = windowed.render_first_window("Hello there.", "jm_kumo", 1.0)
    assert rest is None  # too short a segment


# --- the streaming server ----------------------------------------------------------------------

STREAM_TEXT = SENTENCE + " It was cold."


def stream_segments(log: StreamLog) -> dict[int, npt.NDArray[np.float32]]:
    """Each segment's samples as the client received them."""
    samples = log.samples()
    starts = {int(f["seg"]): int(f["pos"]) for f in reversed(log.audio)}
    lengths = {int(m["seg"]): int(m["samples"]) for m in log.of_type("segment")}
    return {seg: samples[starts[seg] : starts[seg] + lengths[seg]] for seg in lengths}


@pytest.mark.model
async def test_a_windowed_first_sentence_streams_before_it_is_decoded(
    settings: Settings, windowed: Synthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window plan follows the machine's speed; pinned here so the audio can be reproduced.
    monkeypatch.setattr(synthesizer_module, "first_window_frames", lambda *_: MIN_FIRST_FRAMES)
    served = dataclasses.replace(settings, first_segment="windowed")
    with live_server(served, windowed) as base:
        log = await stream_alone(base, STREAM_TEXT)
    log.assert_contiguous()
    segments = log.of_type("segment")
    assert [m["text"] for m in segments] == [SENTENCE, "It was cold."]
    done = log.done
    assert done is not None and done["reason"] == "complete"
    # First audio went out before the first segment's model work was done.
    assert done["ttfa_ms"] < segments[0]["gen_ms"]
    head, rest = windowed.render_first_window(SENTENCE, "jm_kumo", 1.0)
    assert rest is not None
    expected = expected_samples(head.audio, rest().audio, "sentence", final=False)
    received = stream_segments(log)[0]
    assert len(received) == len(expected)
    np.testing.assert_allclose(received, expected, atol=2 / 32767)


@pytest.mark.model
async def test_a_whole_first_sentence_without_windows_streams_after_it_is_decoded(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    served = dataclasses.replace(settings, first_segment="sentence")
    with live_server(served, synthesizer) as base:
        log = await stream_alone(base, STREAM_TEXT)
    segments = log.of_type("segment")
    assert [m["text"] for m in segments] == [SENTENCE, "It was cold."]
    done = log.done
    assert done is not None and done["ttfa_ms"] >= segments[0]["gen_ms"]


@pytest.mark.model
async def test_the_inference_actor_delivers_the_window_then_the_whole_and_stops_aborting(
    windowed: Synthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthesizer_module, "first_window_frames", lambda *_: MIN_FIRST_FRAMES)
    key = StreamKey("session", "s")
    delivered: list[SegmentAudio | SegmentFailed] = []
    aborts: list[bool] = []
    idle: list[WorkerIdle] = []
    both = asyncio.Event()

    async def deliver(outcome: SegmentAudio | SegmentFailed) -> None:
        delivered.append(outcome)
        if isinstance(outcome, SegmentAudio) and outcome.first_part:
            aborts.append(actor.abort(key))  # its first samples are out: too late to abort
        if len(delivered) == 2:
            both.set()

    actor = InferenceActor("inference:test", windowed, deliver, idle.append)
    segment = TextSegment(0, SENTENCE, 0, len(SENTENCE), "sentence", final=True)
    job = SegmentJob(key, segment, "jm_kumo", 1.0, received_at=0.0, first_window=True)
    async with Supervisor(name="test") as supervisor:
        await supervisor.start(actor)
        await actor.send(job)
        async with asyncio.timeout(120):
            await both.wait()
    first, whole = delivered
    assert isinstance(first, SegmentAudio) and isinstance(whole, SegmentAudio)
    assert (first.first_part, whole.first_part) == (True, False)
    assert aborts == [False]
    assert len(first.audio) == MIN_FIRST_FRAMES * SAMPLES_PER_FRAME
    reference = windowed.render(SENTENCE, "jm_kumo", 1.0)
    window = len(first.audio)
    np.testing.assert_array_equal(whole.audio[:window], first.audio)
    np.testing.assert_array_equal(whole.audio[window:], reference.audio[window:])
    assert whole.gen_seconds > first.gen_seconds
    assert [(report.chars, report.audio_seconds > 0) for report in idle] == [(len(SENTENCE), True)]

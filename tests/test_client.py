"""The Python streaming client, against the real server and with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from app.client import (
    AudioFrame,
    Event,
    PlaybackClock,
    ServerError,
    StreamGapError,
    TTSClient,
    _StreamState,
)
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_playback_starts_after_preroll_and_counts_underruns() -> None:
    clock = FakeClock()
    playback = PlaybackClock(preroll_ms=100, clock=clock, adaptive_start=False)
    playback.add(1200)  # 50 ms: not enough to start
    clock.now = 1.0
    assert playback.played() == 0
    playback.add(1200)  # 100 ms buffered: starts now
    clock.now = 1.05
    assert playback.played() == 1200
    assert playback.buffered_ms() == pytest.approx(50)
    clock.now = 2.0  # ran dry long ago
    assert playback.played() == 2400
    playback.add(2400)
    assert playback.underruns == 1


def test_adaptive_start_waits_for_the_plan_and_holds_on_a_slow_server() -> None:
    clock = FakeClock()
    playback = PlaybackClock(preroll_ms=100, clock=clock)
    playback.add(12_000)  # the whole first segment: 500 ms
    clock.now = 0.2
    assert playback.played() == 0, "no start before the plan"
    playback.plan(first_gen_ms=600, first_samples=12_000)  # planned for 1.05 s after the first
    assert playback.start_hold_s == pytest.approx(0.65)  # 1.05 - 0.5 s of audio + 0.1 s pre-roll
    clock.now = 0.64
    assert playback.played() == 0
    clock.now = 0.75
    assert playback.played() == pytest.approx(2400, abs=1)  # started at 0.65 s

    fast = PlaybackClock(preroll_ms=100, clock=clock)
    clock.now = 1.0
    fast.add(12_000)
    fast.plan(first_gen_ms=200, first_samples=12_000)  # 0.35 s: due before 0.5 - 0.1 s
    assert fast.start_hold_s == 0
    clock.now = 1.1
    assert fast.played() == pytest.approx(2400, abs=1)

    no_plan = PlaybackClock(preroll_ms=100, clock=clock)
    no_plan.add(12_000)
    clock.now = 1.5
    assert no_plan.played() == 0
    no_plan.add(12_000)  # 1 s buffered: start without a plan
    clock.now = 1.6
    assert no_plan.played() == pytest.approx(2400, abs=1)


def test_a_missing_frame_raises() -> None:
    state = _StreamState()
    frame = {"seq": 0, "pos": 0, "seg": 0, "data": b"\x00\x00" * 10}
    TTSClient._check_frame("s", state, frame)
    with pytest.raises(StreamGapError):
        TTSClient._check_frame("s", state, {**frame, "seq": 2, "pos": 10})


@pytest.fixture(scope="module")
def server(settings: Settings, synthesizer: Synthesizer) -> Iterator[str]:
    with live_server(settings, synthesizer) as base:
        yield base.replace("http", "ws") + "/v1/stream"


@pytest.mark.model
async def test_speaks_a_string_and_an_async_iterator(server: str) -> None:
    async def words() -> AsyncIterator[str]:
        for word in [
            "Streaming",
            "from",
            "a",
            "language",
            "model,",
            "one",
            "token",
            "at",
            "a",
            "time.",
        ]:
            yield word + " "

    async with TTSClient.connect(server) as client:
        assert client.ready["type"] == "ready"
        for text in ("Hello there, my friend.", words()):
            frames: list[AudioFrame] = []
            events: list[Event] = []
            async for item in client.speak(text, voice="jf_alpha", preroll_ms=200):
                if isinstance(item, AudioFrame):
                    frames.append(item)
                else:
                    events.append(item)
            done = events[-1]
            assert done.type == "done" and done.fields["reason"] == "complete"
            audio = np.concatenate([frame.samples for frame in frames])
            assert len(audio) == done.fields["samples"] > 24_000
            assert any(event.type == "segment" for event in events)


@pytest.mark.model
async def test_asks_for_word_timings_and_yields_them_before_their_audio(server: str) -> None:
    async with TTSClient.connect(server) as client:
        items = [item async for item in client.speak("Good morning, my friend.", timestamps=True)]
    kinds = ["audio" if isinstance(item, AudioFrame) else item.type for item in items]
    assert kinds.index("words") < kinds.index("audio")
    words = [item for item in items if isinstance(item, Event) and item.type == "words"]
    assert [item[0] for event in words for item in event.fields["items"]] == [
        "Good",
        "morning",
        "my",
        "friend",
    ]


@pytest.mark.model
async def test_server_errors_raise(server: str) -> None:
    async with TTSClient.connect(server) as client:
        with pytest.raises(ServerError) as raised:
            async for _ in client.speak("Hi.", voice="zz_nobody"):
                pass
        assert raised.value.code == "unknown_voice"

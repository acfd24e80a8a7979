"""Inference failures mid-stream: retry on another session, circuit breaker, probe back in.

A wrapper around a real engine raises or hangs on chosen calls (fault injection); the other
session is a plain real engine. Streams must complete with exactly the audio a fault-free run
gives (synthesis is deterministic across sessions and thread counts).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, cast

import httpx
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from actors.audio import encode_samples, shape_segment
from actors.segmentation import Segmenter
from app.settings import Settings
from app.tts.engine import Engine, Synthesis
from app.tts.synthesizer import Synthesizer
from tests.engine_wrappers import EngineWrapper
from tests.live import Client, live_server

pytestmark = pytest.mark.model

PARAGRAPH = (
    "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the great "
    "lens, trimmed the wick, and watched the ships pass far out at sea."
)


class FaultyEngine(EngineWrapper):
    """A real engine that raises on some calls and hangs (until released) on others."""

    def __init__(self, inner: Engine, *, raise_on: set[int], hang_on: set[int]) -> None:
        super().__init__(inner)
        self.raise_on = raise_on
        self.hang_on = hang_on
        self.calls = 0
        self.release = threading.Event()
        self.succeeded_after_release = threading.Event()

    def synthesize(
        self,
        tokens: Sequence[int],
        style: npt.NDArray[np.float32],
        speed: float,
        run_options: ort.RunOptions | None = None,
    ) -> Synthesis:
        self.calls += 1
        if self.calls in self.raise_on:
            raise RuntimeError(f"injected failure on call {self.calls}")
        if self.calls in self.hang_on:
            self.release.wait(timeout=60)  # a provider stuck in a driver call
        result = self.inner.synthesize(tokens, style, speed, run_options)
        if self.release.is_set():
            self.succeeded_after_release.set()
        return result

    def close(self) -> None:
        self.release.set()


@pytest.fixture(scope="module")
def engines(synthesizer: Synthesizer) -> Iterator[tuple[Engine, Engine]]:
    """Two one-thread sessions: the plan cpu:2x1 (more threads than cores would crawl)."""
    config = replace(synthesizer.engine.config, intra_op_threads=1)
    first, second = Engine(config), Engine(config)
    yield first, second
    first.close()
    second.close()


def with_engines(synthesizer: Synthesizer, *engines: Any) -> Synthesizer:
    first, *rest = engines
    return Synthesizer(
        first,
        synthesizer.voices,
        synthesizer.phonemizer,
        synthesizer.tokenizer,
        more_engines=rest,
    )


def expected_pcm(synthesizer: Synthesizer, text: str) -> bytes:
    segmenter = Segmenter()
    segments = segmenter.feed(text) + segmenter.end()
    pieces = [
        shape_segment(synthesizer.render(s.text, "jm_kumo", 1.0).audio, s.boundary, final=s.final)
        for s in segments
    ]
    return encode_samples(np.concatenate(pieces), "pcm_s16le")


async def speak_all(base: str, streams: list[str]) -> Client:
    client = await Client.connect(base, report_played=True)
    for name in streams:
        await client.start(name, voice="jm_kumo")
        await client.send(type="text", stream=name, text=PARAGRAPH)
        await client.send(type="end", stream=name)
    await client.until_done(*streams)
    await client.close()
    return client


def inference_stats(base: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base}/v1/stats", timeout=5).json()
    return stats


async def test_failing_and_hanging_session_is_bypassed_and_probed_back(
    settings: Settings, synthesizer: Synthesizer, engines: tuple[Engine, Engine]
) -> None:
    reference = expected_pcm(synthesizer, PARAGRAPH)
    # Call 1 is the server's warm-up; 3 raises, 6 hangs past the 5 s inference timeout (a
    # normal call here takes at most about 2 s).
    faulty = FaultyEngine(engines[0], raise_on={3}, hang_on={6})
    served = with_engines(synthesizer, cast(Engine, faulty), engines[1])
    fast_fallback = replace(settings, inference_timeout_s=5.0, probe_after_s=0.2)
    try:
        with live_server(fast_fallback, served) as base:
            client = await speak_all(base, ["a", "b", "c"])
            for name in ["a", "b", "c"]:
                log = client.streams[name]
                log.assert_contiguous()
                assert log.done is not None and log.done["reason"] == "complete", log.done
                assert log.pcm() == reference, f"stream {name}: sample-exact audio"
            stats = inference_stats(base)
            assert stats["scheduler"]["retries"] == 2
            assert stats["scheduler"]["given_up"] == 0
            first = stats["inference"]["inference:cpu-0"]
            assert first["failures"] == 2
            assert first["recoveries"] >= 1, "probed back in after the raise"
            assert first["health"] == "out", "still stuck in the hung call"

            faulty.release.set()  # the stuck call returns; the queued probe now succeeds
            await asyncio.to_thread(faulty.succeeded_after_release.wait, 30)
            for _ in range(200):  # the next probe is due within probe_max_s (2.4 s)
                if inference_stats(base)["inference"]["inference:cpu-0"]["health"] == "ok":
                    break
                await asyncio.sleep(0.05)
            back = inference_stats(base)["inference"]["inference:cpu-0"]
            assert back["health"] == "ok" and back["recoveries"] == 2

            again = await speak_all(base, ["d"])
            assert again.streams["d"].pcm() == reference
    finally:
        faulty.release.set()


async def test_a_job_that_fails_everywhere_ends_its_stream_with_an_error(
    settings: Settings, synthesizer: Synthesizer, engines: tuple[Engine, Engine]
) -> None:
    always = FaultyEngine(engines[0], raise_on=set(range(2, 1000)), hang_on=set())
    served = with_engines(synthesizer, cast(Engine, always))
    quick = replace(settings, probe_after_s=0.05)
    with live_server(quick, served) as base:
        client = await Client.connect(base)
        await client.start("x", voice="jm_kumo")
        await client.send(type="text", stream="x", text="Hello there.")
        await client.send(type="end", stream="x")
        error = await client.next_error()
        assert error["code"] == "inference_failed"
        await client.until_done("x")
        assert client.streams["x"].done is not None
        assert client.streams["x"].done["reason"] == "error"
        await client.close()
        assert inference_stats(base)["scheduler"]["given_up"] == 1

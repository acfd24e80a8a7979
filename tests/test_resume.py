"""Resumable streams: a stream picked up on a new connection loses and repeats no sample."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import pytest

from app.client import AudioFrame, Event, Reconnect, TTSClient
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_server, speak
from tests.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.model

TEXT = (
    "The lighthouse keeper climbed the stairs every evening. He lit the lamp, wound the clock, "
    "and wrote a line in the log: wind from the west, a ship passing, the sea calm. Then he sat "
    "by the window and waited for the morning."
)


@pytest.fixture(scope="module")
def server(settings: Settings, synthesizer: Synthesizer) -> Iterator[str]:
    with live_server(settings, synthesizer) as base:
        yield base


async def _whole_stream(base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An uninterrupted stream of TEXT: its audio frames and segment messages."""
    client = await Client.connect(base, report_played=True)
    try:
        await speak(client, "whole", TEXT)
        await client.until_done("whole")
        log = client.streams["whole"]
        log.assert_contiguous()
        return log.audio, log.of_type("segment")
    finally:
        await client.close()


def _pcm(frames: list[dict[str, Any]]) -> bytes:
    return b"".join(frame["data"] for frame in frames)


async def test_a_stream_resumed_mid_segment_continues_sample_exact(server: str) -> None:
    frames, segments = await _whole_stream(server)
    assert len(segments) >= 4
    k = 2  # resume inside the third segment, halfway through its frames
    in_k = [i for i, frame in enumerate(frames) if frame["seg"] == k]
    assert len(in_k) >= 2
    cut = in_k[len(in_k) // 2]
    seg_start = frames[in_k[0]]["pos"]
    chars = segments[k - 1]["char_end"]

    client = await Client.connect(server, report_played=True)
    try:
        resume = {
            "seg": k,
            "seq": frames[cut]["seq"],
            "pos": seg_start,
            "chars": chars,
            "skip": frames[cut]["pos"] - seg_start,
        }
        await client.start("again", resume=resume)
        await client.send(type="text", stream="again", text=TEXT[chars:])
        await client.send(type="end", stream="again")
        await client.until_done("again")
    finally:
        await client.close()
    log = client.streams["again"]
    resumed = log.audio
    assert (resumed[0]["seq"], resumed[0]["pos"], resumed[0]["seg"]) == (
        frames[cut]["seq"],
        frames[cut]["pos"],
        k,
    )
    for before, after in itertools.pairwise(resumed):
        assert after["seq"] == before["seq"] + 1
        assert after["pos"] == before["pos"] + len(before["data"]) // 2
    # The same segments, at the same places in the text, and the very same samples.
    assert [(s["seg"], s["char_start"], s["char_end"], s["samples"]) for s in segments[k:]] == [
        (s["seg"], s["char_start"], s["char_end"], s["samples"]) for s in log.of_type("segment")
    ]
    assert _pcm(resumed) == _pcm(frames[cut:])
    done = log.done
    assert done is not None and done["reason"] == "complete"
    assert done["samples"] == frames[-1]["pos"] + len(frames[-1]["data"]) // 2


async def test_a_resume_from_the_wrong_segment_is_not_sample_exact(server: str) -> None:
    """The check above has teeth: resumed one segment early, the audio differs."""
    frames, segments = await _whole_stream(server)
    k = 2
    seg_start = next(frame["pos"] for frame in frames if frame["seg"] == k)
    client = await Client.connect(server, report_played=True)
    try:
        resume = {"seg": k - 1, "seq": 0, "pos": seg_start, "chars": segments[k - 1]["char_end"]}
        await client.start("early", resume=resume)
        await client.send(type="text", stream="early", text=TEXT[resume["chars"] :])
        await client.send(type="end", stream="early")
        await client.until_done("early")
    finally:
        await client.close()
    tail = _pcm(frames)[seg_start * 2 :]
    assert _pcm(client.streams["early"].audio) != tail


class CuttingClient(TTSClient):
    """Cuts its own connection (at the proxy) right after receiving a chosen frame; what was
    already on its way (in socket buffers) is lost, as when a link dies."""

    proxy: CuttableProxy | None = None
    cut_after: Callable[[dict[str, Any]], bool] = staticmethod(lambda message: False)
    _cut: object = None

    async def _route(self, message: dict[str, Any]) -> None:
        if self.ws is self._cut:
            return
        await super()._route(message)
        if self.proxy is not None and message.get("type") == "audio" and self.cut_after(message):
            self.proxy.cut()
            self.proxy = None
            self._cut = self.ws


async def _listen(client: TTSClient) -> tuple[npt.NDArray[np.float32], list[Event]]:
    frames: list[AudioFrame] = []
    events: list[Event] = []
    async for item in client.speak(TEXT, voice="jm_kumo"):
        if isinstance(item, AudioFrame):
            frames.append(item)
        else:
            events.append(item)
    return np.concatenate([frame.samples for frame in frames]), events


async def test_the_client_reconnects_and_resumes_by_itself(server: str) -> None:
    url = urlsplit(server)
    assert url.hostname is not None and url.port is not None
    async with CuttableProxy(url.hostname, url.port).running() as proxy:
        ws_url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
        async with TTSClient.connect(ws_url) as plain:
            whole, whole_events = await _listen(plain)
        segments = [event.fields for event in whole_events if event.type == "segment"]
        third_start = segments[0]["samples"] + segments[1]["samples"]
        middle = third_start + segments[2]["samples"] // 2
        async with CuttingClient.connect(ws_url) as client:
            assert isinstance(client, CuttingClient)
            client.proxy = proxy
            client.cut_after = lambda message: message["seg"] == 2 and message["pos"] >= middle
            heard, events = await _listen(client)
            assert client.reconnects == 1
    assert proxy.connections == 3
    kinds = [event.type for event in events]
    assert kinds.count("resumed") == 1 and kinds[-1] == "done"
    done = events[-1].fields
    assert done["reason"] == "complete" and done["client_resumes"] == 1
    resumed = events[kinds.index("resumed")].fields
    assert resumed["seg"] == 2 and resumed["skip"] > 0  # mid-segment
    assert np.array_equal(heard, whole)


async def test_without_reconnect_a_drop_fails_the_stream(server: str) -> None:
    url = urlsplit(server)
    assert url.hostname is not None and url.port is not None
    async with CuttableProxy(url.hostname, url.port).running() as proxy:
        ws_url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
        async with CuttingClient.connect(ws_url, reconnect=None) as client:
            assert isinstance(client, CuttingClient)
            client.proxy = proxy
            client.cut_after = lambda message: message["seg"] == 1
            with pytest.raises(ConnectionError):
                await _listen(client)
    assert proxy.connections == 1


async def test_the_client_gives_up_when_no_server_answers(server: str) -> None:
    url = urlsplit(server)
    assert url.hostname is not None and url.port is not None
    proxy = CuttableProxy(url.hostname, url.port)
    async with proxy.running():
        ws_url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
        policy = Reconnect(attempts=3, first_wait_s=0.01)
        async with CuttingClient.connect(ws_url, reconnect=policy) as client:
            assert isinstance(client, CuttingClient)
            proxy.target = ("127.0.0.1", 9)  # the discard port: nothing listens there
            client.proxy = proxy
            client.cut_after = lambda message: message["seg"] == 1
            with pytest.raises(ConnectionError):
                await _listen(client)
            assert client.reconnects == 0

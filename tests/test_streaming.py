"""The streaming pipeline end to end: real model, real uvicorn, real WebSocket on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from actors.audio import encode_samples, shape_segment
from actors.segmentation import Segmenter
from app.quality import Transcriber, word_error_rate
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_server

pytestmark = pytest.mark.model

PARAGRAPH = (
    "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the great "
    "lens, trimmed the wick, and watched the ships pass far out at sea. Nobody in the village "
    "remembered when he had arrived, but everybody knew the sound of his boots on the iron "
    "steps. On stormy nights the beam swept across the water until dawn."
)
SHORT = "Good morning, how are you today?"


@pytest.fixture(scope="module")
def server(settings: Settings, synthesizer: Synthesizer) -> Iterator[str]:
    with live_server(settings, synthesizer) as base:
        yield base


async def speak(client: Client, stream: str, text: str, **options: Any) -> None:
    await client.start(stream, voice="jf_alpha", **options)
    await client.send(type="text", stream=stream, text=text)
    await client.send(type="end", stream=stream)


async def test_streamed_audio_equals_offline_synthesis_of_its_segments(
    server: str, synthesizer: Synthesizer
) -> None:
    client = await Client.connect(server, report_played=True)
    await speak(client, "p", PARAGRAPH)
    await client.until_done("p")
    await client.close()
    log = client.streams["p"]
    log.assert_contiguous()
    assert log.done is not None and log.done["reason"] == "complete"

    segmenter = Segmenter()
    segments = segmenter.feed(PARAGRAPH) + segmenter.end()
    sent = [(m["seg"], m["text"], m["char_start"], m["char_end"]) for m in log.of_type("segment")]
    assert sent == [(s.index, s.text, s.char_start, s.char_end) for s in segments]
    assert len(segments) >= 3
    pieces = [
        shape_segment(synthesizer.render(s.text, "jf_alpha", 1.0).audio, s.boundary, final=s.final)
        for s in segments
    ]
    assert log.pcm() == encode_samples(np.concatenate(pieces), "pcm_s16le")


async def test_first_audio_comes_long_before_the_first_sentence_is_synthesized(
    server: str, synthesizer: Synthesizer
) -> None:
    first_sentence = PARAGRAPH.split(". ", maxsplit=1)[0] + "."
    whole_sentence_seconds = synthesizer.render(first_sentence, "jf_alpha", 1.0).gen_seconds
    client = await Client.connect(server, report_played=True)
    log = await client.start("p", voice="jf_alpha")
    sent_at = time.monotonic()
    await client.send(type="text", stream="p", text=PARAGRAPH)
    await client.send(type="end", stream="p")
    await client.until_done("p")
    await client.close()
    first_audio = log.first_audio_at()
    assert first_audio is not None
    ttfa = first_audio - sent_at
    ratio = ttfa / whole_sentence_seconds
    print(f"client TTFA {ttfa * 1000:.0f} ms, whole first sentence {whole_sentence_seconds:.2f} s")
    assert ratio <= 0.4, f"TTFA {ttfa:.3f} s is {ratio:.2f}x the first sentence's engine time"
    assert log.done is not None and 0 < log.done["ttfa_ms"] <= ttfa * 1000 + 50


@pytest.mark.speech
async def test_text_fed_word_by_word_is_spoken_correctly(
    server: str, transcriber: Transcriber
) -> None:
    client = await Client.connect(server)
    log = await client.start("w")  # the default voice (see test_intelligibility for the others)
    words = PARAGRAPH.split(" ")
    for index, word in enumerate(words):
        piece = word if index == 0 else " " + word
        await client.send(type="text", stream="w", text=piece)
        await asyncio.sleep(0.05)  # the input pattern under test: a word every 50 ms
    await client.send(type="end", stream="w")
    await client.until_done("w")
    await client.close()
    log.assert_contiguous()
    hypothesis = transcriber.transcribe(log.samples())
    wer = word_error_rate([PARAGRAPH], [hypothesis])
    print(f"WER {wer:.3f}: {hypothesis}")
    assert wer <= 0.10, hypothesis


async def _long_goes_on_after(client: Client, new_first: float) -> None:
    """The long stream is not done and sends a segment after the new stream's first audio;
    then it is cancelled (its minute of playback proves nothing more)."""
    long_log = client.streams["long"]
    assert long_log.done is None, "the long stream was still speaking"
    while not any(
        m["type"] == "segment" and at > new_first
        for m, at in zip(long_log.messages, long_log.arrivals, strict=True)
    ):
        await client.receive_one()
    await client.send(type="cancel", stream="long")
    await client.until_done("long")


async def test_a_new_stream_overtakes_a_long_one_on_one_connection(server: str) -> None:
    client = await Client.connect(server)
    await speak(client, "long", " ".join([PARAGRAPH] * 2))
    while client.streams["long"].first_audio_at() is None:
        await client.receive_one()
    await speak(client, "new", SHORT)
    await client.until_done("new")
    new_first = client.streams["new"].first_audio_at()
    assert new_first is not None
    await _long_goes_on_after(client, new_first)
    await client.close()


async def test_a_new_stream_overtakes_a_long_one_on_two_connections(server: str) -> None:
    first = await Client.connect(server)
    second = await Client.connect(server)
    await speak(first, "long", " ".join([PARAGRAPH] * 2))
    while first.streams["long"].first_audio_at() is None:
        await first.receive_one()
    await speak(second, "new", SHORT)
    receiving = asyncio.create_task(first.until_done("long"))  # keep reading the long one
    await second.until_done("new")
    receiving.cancel()
    await asyncio.wait([receiving])
    new_first = second.streams["new"].first_audio_at()
    assert new_first is not None
    await _long_goes_on_after(first, new_first)
    await first.close()
    await second.close()


async def test_cancel_ends_the_stream_promptly_and_spares_the_others(server: str) -> None:
    client = await Client.connect(server, report_played=True)
    await speak(client, "victim", " ".join([PARAGRAPH] * 2))
    await speak(client, "bystander", PARAGRAPH)
    victim = client.streams["victim"]
    while len(victim.audio) < 5:
        await client.receive_one()
    cancelled_at = time.monotonic()
    await client.send(type="cancel", stream="victim")
    await client.until_done("victim")
    latency = victim.arrivals[-1] - cancelled_at
    await client.until_done("bystander")
    await client.close()
    assert victim.done is not None and victim.done["reason"] == "cancelled"
    assert victim.messages[-1]["type"] == "done", "nothing after done"
    bystander = client.streams["bystander"]
    bystander.assert_contiguous()
    assert bystander.done is not None and bystander.done["reason"] == "complete"
    longest_segment_ms = max(m["gen_ms"] for m in bystander.of_type("segment"))
    print(f"cancel answered in {latency * 1000:.0f} ms")
    assert latency * 1000 < longest_segment_ms


async def test_a_slow_reader_keeps_server_buffering_bounded(
    server: str, settings: Settings
) -> None:
    sock = socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # No keepalive pings: behind a deliberately full socket their answers would time out.
    client = await Client.connect(server, sock=sock, max_queue=1, ping_interval=None)
    await speak(client, "slow", PARAGRAPH)
    log = client.streams["slow"]
    peak_buffered_ms = 0.0
    async with httpx.AsyncClient(base_url=server) as http:
        while log.done is None:
            message = await client.receive_one()
            if message["type"] == "audio":
                await asyncio.sleep(len(message["data"]) / 2 / 24_000)  # play it in real time
                stats = (await http.get("/v1/stats")).json()["live_streams"]
                for name, figures in stats.items():
                    if name.endswith("/slow"):
                        peak_buffered_ms = max(peak_buffered_ms, figures["buffered_ms"])
    await client.close()
    log.assert_contiguous()
    longest_segment_ms = max(m["samples"] for m in log.of_type("segment")) / 24
    bound = max(settings.max_lead_ms, settings.work_ahead_ms) + longest_segment_ms
    print(f"peak server-side buffer {peak_buffered_ms:.0f} ms (bound {bound:.0f} ms)")
    assert peak_buffered_ms <= bound
    frame_sizes = [m["frame_ms"] for m in log.of_type("flow")]
    assert frame_sizes and max(frame_sizes) > 40, frame_sizes


async def test_bad_input_gets_error_frames_and_hurts_nobody(server: str) -> None:
    client = await Client.connect(server, report_played=True)
    await speak(client, "ok", SHORT)
    bad: list[tuple[Any, str]] = [
        (b"\xc1 not msgpack", "bad_message"),
        ("a text frame", "bad_message"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "start"}, "bad_message"),
        ({"type": "text", "stream": "ok"}, "bad_message"),
        ({"type": "start", "stream": "x", "voice": "af_nobody"}, "unknown_voice"),
        ({"type": "text", "stream": "nowhere", "text": "hi"}, "unknown_stream"),
        ({"type": "start", "stream": "ok"}, "stream_exists"),
    ]
    for payload, code in bad:
        if isinstance(payload, dict):
            await client.send(**payload)
        else:
            await client.ws.send(payload)
        error = await client.next_error()
        assert error["code"] == code, (payload, error)
        assert error["message"] and not error.get("fatal")
    await client.start("big", voice="jf_alpha")
    await client.send(type="text", stream="big", text="word " * 4001)
    assert (await client.next_error())["code"] == "text_too_long"
    await client.send(type="cancel", stream="big")
    for index in range(client.ready["limits"]["max_streams"] - 1):
        await client.start(f"s{index}", voice="jf_alpha")
    await client.start("one-too-many", voice="jf_alpha")
    assert (await client.next_error())["code"] == "too_many_streams"
    await client.until_done("ok")
    client.streams["ok"].assert_contiguous()
    assert client.streams["ok"].done is not None
    assert client.streams["ok"].done["reason"] == "complete"

    other = await Client.connect(server)
    await speak(other, "fine", SHORT)
    await other.until_done("fine")
    assert other.streams["fine"].done is not None
    await other.close()
    await client.close()


async def test_a_disconnect_frees_the_streams_work(server: str) -> None:
    client = await Client.connect(server)
    await speak(client, "gone", " ".join([PARAGRAPH] * 3))
    while client.streams["gone"].first_audio_at() is None:
        await client.receive_one()
    await client.close()
    async with httpx.AsyncClient(base_url=server) as http:
        for _ in range(200):  # the server notices the disconnect on its own loop: poll
            stats = (await http.get("/v1/stats")).json()
            if not stats["live_streams"] and stats["scheduler"]["queued_jobs"] == 0:
                break
            await asyncio.sleep(0.05)
    assert stats["live_streams"] == {}
    assert stats["scheduler"]["queued_jobs"] == 0
    assert stats["streams"]["active"] == 0

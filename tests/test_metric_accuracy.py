"""The server's time to first audio and real-time factor agree with independent measurements.

TTFA: the server measures from receiving the message that completed a stream's first segment
to writing its first audio frame; a client on loopback measures from just before sending that
message to receiving the frame. The two must agree within 5% or 10 ms, whichever is larger.
RTF: ``done.rtf`` must agree within 5% with the sum of the segments' ``gen_ms`` over the audio
the client received.

The client waits for a ``pong`` after ``start``: the server reads a connection's messages one
after the other, so a text sent right behind ``start`` waits in the socket while the stream's
actors start (a few ms, 14 ms for a connection's first stream here), and the server's clock
starts when it reads the text.
"""

from __future__ import annotations

import time

import pytest

from app.settings import Settings
from app.tts.engine import SAMPLE_RATE
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_server

pytestmark = pytest.mark.model

WRITE_RETURN_SLACK_MS = 1.0

TEXTS = (
    "Good morning, how are you today?",
    "The old lighthouse keeper climbed the stairs every evening at dusk.",
    "Streaming speech lets a voice agent answer in a fraction of a second.",
)


async def test_server_ttfa_and_rtf_agree_with_the_client(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    rows = []
    with live_server(settings, synthesizer) as base:
        client = await Client.connect(base, report_played=True)
        for index, text in enumerate(TEXTS):
            name = f"s{index}"
            log = await client.start(name)
            await client.send(type="ping", t=index)
            while not any(m["type"] == "pong" and m["t"] == index for m in client.other):
                await client.receive_one()
            sent_at = time.monotonic()
            await client.send(type="text", stream=name, text=text, flush=True)
            await client.send(type="end", stream=name)
            await client.until_done(name)
            first_audio = log.first_audio_at()
            assert first_audio is not None and log.done is not None
            client_ms = (first_audio - sent_at) * 1000
            segments = log.of_type("segment")
            gen_s = sum(m["gen_ms"] for m in segments) / 1000
            audio_s = sum(len(m["data"]) // 2 for m in log.audio) / SAMPLE_RATE
            rows.append((client_ms, log.done["ttfa_ms"], gen_s / audio_s, log.done["rtf"]))
        await client.close()
    for client_ms, server_ms, rtf, server_rtf in rows:
        print(
            f"TTFA client {client_ms:.1f} ms, server {server_ms:.1f} ms; "
            f"RTF independent {rtf:.4f}, server {server_rtf:.4f}"
        )
        assert abs(client_ms - server_ms) <= max(0.05 * client_ms, 10.0)
        # The server stamps the frame after its write returns; on loopback the client's thread
        # can stamp the arrival a fraction of a millisecond before that.
        assert server_ms <= client_ms + WRITE_RETURN_SLACK_MS, "the server's interval lies inside"
        assert server_rtf == pytest.approx(rtf, rel=0.05)

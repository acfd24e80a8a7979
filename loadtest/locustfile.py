"""Locust users that speak over the WebSocket.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000

Locust has no WebSocket user, so each user holds one ``websocket-client`` connection (plain
sockets, which Locust's gevent makes cooperative) and reports one request per stream:

- response time: time to first audio, from sending the stream's first text to its first audio
  frame (as the client sees it);
- failure: an ``error`` (``busy`` included: a refused stream did not speak), a gap in the audio
  (``seq`` or ``pos`` not contiguous), or an underrun of real-time playback after first audio.

Each user is a listener: it plays the audio in real time (``app.client.PlaybackClock``, with
``played`` reports every 250 ms driving the server's flow control), waits until it has heard
the end, then speaks the next text after a pause. Half the streams (``KOKORO_LOCUST_WORD_SHARE``)
send their text word by word, as a language model would. ``KOKORO_API_KEY`` is sent as the
bearer key when set.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import gevent
import msgpack
import websocket
from locust import User, between, task

from app.client import PlaybackClock
from loadtest.texts import CORPUS

REPORT_EVERY_S = 0.25
WORD_INTERVAL_S = 0.08
RECEIVE_TIMEOUT_S = 60.0


class StreamFailure(Exception):
    """Why a stream counts as failed (the message is what Locust groups failures by)."""


def _pack(**message: Any) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


class SpeakingUser(User):
    """One WebSocket connection; one stream at a time, heard to its end."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        if not self.host:
            raise StreamFailure("give the server as --host http://HOST:PORT")
        url = self.host.replace("http", "ws", 1).rstrip("/") + "/v1/stream"
        key = os.environ.get("KOKORO_API_KEY")
        self.ws = websocket.create_connection(
            url,
            subprotocols=["tts.v1"],
            header=[f"Authorization: Bearer {key}"] if key else [],
            enable_multithread=True,  # the word sender and the receiver share the socket
            timeout=RECEIVE_TIMEOUT_S,
        )
        ready = msgpack.unpackb(self.ws.recv())
        if ready.get("type") != "ready":
            raise StreamFailure(f"no ready: {ready}")
        self.word_share = float(os.environ.get("KOKORO_LOCUST_WORD_SHARE", "0.5"))
        self.streams = 0

    def on_stop(self) -> None:
        self.ws.close()

    @task
    def speak(self) -> None:
        self.streams += 1
        name = f"s{self.streams}"
        text = random.choice(CORPUS)
        by_words = random.random() < self.word_share
        request = "speak words" if by_words else "speak whole"
        sent_at = time.perf_counter()
        self.ws.send_binary(_pack(type="start", stream=name))
        if by_words:
            sender = gevent.spawn(self._send_words, name, text)
        else:
            self.ws.send_binary(_pack(type="text", stream=name, text=text))
            self.ws.send_binary(_pack(type="end", stream=name))
            sender = None
        ttfa_ms: float | None = None
        received_bytes = 0
        failure: StreamFailure | None = None
        try:
            ttfa_ms, received_bytes, clock = self._receive(name, sent_at)
            if clock.underruns:
                failure = StreamFailure(f"{clock.underruns} underruns after first audio")
            self._listen_to_the_end(clock)
        except StreamFailure as error:
            failure = error
            self.ws.send_binary(_pack(type="cancel", stream=name))
            self._drain(name)
        finally:
            if sender is not None:
                sender.kill()
        elapsed_ms = (time.perf_counter() - sent_at) * 1000
        self.environment.events.request.fire(
            request_type="WS",
            name=request,
            response_time=ttfa_ms if ttfa_ms is not None else elapsed_ms,
            response_length=received_bytes,
            exception=failure,
            context={"stream": name},
        )

    def _send_words(self, name: str, text: str) -> None:
        words = text.split(" ")
        for index, word in enumerate(words):
            last = index == len(words) - 1
            self.ws.send_binary(_pack(type="text", stream=name, text=word + ("" if last else " ")))
            gevent.sleep(WORD_INTERVAL_S)
        self.ws.send_binary(_pack(type="end", stream=name))

    def _receive(self, name: str, sent_at: float) -> tuple[float | None, int, PlaybackClock]:
        """Until ``done``: check the frames, play them, report playback."""
        clock = PlaybackClock()
        ttfa_ms: float | None = None
        expected_seq = expected_pos = received_bytes = 0
        next_report = time.monotonic()
        while True:
            message = msgpack.unpackb(self.ws.recv())
            kind = message.get("type")
            if message.get("stream") not in (name, None):
                continue
            if kind == "audio":
                samples = len(message["data"]) // 2
                if (message["seq"], message["pos"]) != (expected_seq, expected_pos):
                    raise StreamFailure(f"gap: frame {message['seq']} at {message['pos']}")
                expected_seq, expected_pos = expected_seq + 1, expected_pos + samples
                received_bytes += len(message["data"])
                if ttfa_ms is None:
                    ttfa_ms = (time.perf_counter() - sent_at) * 1000
                clock.add(samples)
            elif kind == "segment" and message["seg"] == 0:
                clock.plan(message["gen_ms"], message["samples"])
            elif kind == "error":
                raise StreamFailure(f"error {message['code']}")
            elif kind == "done":
                if message["reason"] != "complete":
                    raise StreamFailure(f"done: {message['reason']}")
                if message["samples"] != expected_pos:
                    raise StreamFailure("done counts other samples than were received")
                return ttfa_ms, received_bytes, clock
            if time.monotonic() >= next_report:
                self._report(name, clock)
                next_report = time.monotonic() + REPORT_EVERY_S

    @staticmethod
    def _listen_to_the_end(clock: PlaybackClock) -> None:
        """A listener hears the rest before speaking again (the stream is over: no reports)."""
        gevent.sleep(clock.remaining_s())

    def _report(self, name: str, clock: PlaybackClock) -> None:
        self.ws.send_binary(
            _pack(
                type="played",
                stream=name,
                samples=clock.played(),
                underruns=clock.underruns,
                buffered_ms=round(clock.buffered_ms()),
            )
        )

    def _drain(self, name: str) -> None:
        """After a failure: read until the stream's ``done`` (or an error without a stream)."""
        deadline = time.monotonic() + RECEIVE_TIMEOUT_S
        while time.monotonic() < deadline:
            message = msgpack.unpackb(self.ws.recv())
            if message.get("stream") == name and message.get("type") in ("done", "error"):
                return

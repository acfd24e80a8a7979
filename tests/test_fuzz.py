"""Protocol fuzzing against the real server: generated and mutated client messages.

Each message is followed by a ``ping`` so its answers can be told apart: everything the server
sends before the matching ``pong`` answers that message (or is a stream's own output). The
oracle for bad messages is the wire decoder itself, run here: a message it refuses must be
answered by an ``error`` with the same stable code. Nothing may crash, hang or be fatal, and a
stream on another connection speaks on, whole, throughout.

``make test`` sends 10,000 messages; ``make test-long`` 100,000.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from app import wire
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server

pytestmark = pytest.mark.model

MESSAGES_PER_EXAMPLE = 20
ANSWER_TIMEOUT_S = 60.0
"""No hang: every message is answered well within this (the server may be synthesizing)."""
SERVER_TYPES = {"ready", "audio", "segment", "flow", "flushed", "done", "error", "pong"}
SENTENCE = "The river flows on. "
SENTENCE_EVERY_S = 2.0
"""The bystander's pace: its text stays far under the stream's limit even in the long run."""
VOICES = ["jf_alpha", "jm_kumo", "af_nobody", "jf_alpha:0.5+jm_kumo:0.5", "jf_alpha:x", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
stream_names = st.sampled_from(["a", "b", "c", "", "x" * 65]) | values
fields: dict[str, st.SearchStrategy[Any]] = {
    "stream": stream_names,
    "text": st.text(max_size=60) | values,
    "voice": st.sampled_from(VOICES) | values,
    "speed": st.floats(min_value=0, max_value=5) | values,
    "encoding": st.sampled_from(["pcm_s16le", "f32le", "opus", "mp3"]) | values,
    "sample_rate": st.sampled_from([24000, 16000]) | values,
    "frame_ms": st.integers(min_value=-5, max_value=2000) | values,
    "lang": st.sampled_from(["en-us", "ja", "../etc"]) | values,
    "timestamps": st.sampled_from(["none", "word", "all"]) | values,
    "flush": values,
    "id": values,
    "samples": st.integers(min_value=-10, max_value=2**40) | values,
    "buffered_ms": values,
    "underruns": values,
    "t": values,
}
maps = st.fixed_dictionaries(
    {"type": st.sampled_from([*wire.CLIENT_TYPES, "dance"]) | values},
    optional=fields,
)
packed = maps.map(lambda message: bytes(msgpack.packb(message, use_bin_type=True)))
flips = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4)


def _mutate(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for where, byte in changes:
        buffer[where % len(buffer)] = byte
    return bytes(buffer)


frames: st.SearchStrategy[bytes | str] = st.one_of(
    packed,
    st.builds(_mutate, packed, flips),
    st.binary(max_size=200),
    st.text(max_size=100),
    st.lists(values, max_size=3).map(lambda items: bytes(msgpack.packb(items))),
)


def expected_code(frame: bytes | str, max_bytes: int) -> str | None:
    """The code the wire decoder gives the frame here, or None if it decodes."""
    try:
        wire.decode_client(frame, max_bytes=max_bytes)
    except wire.ProtocolError as error:
        return error.code
    return None


def answers_until_pong(ws: ClientConnection, token: str) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        raw = ws.recv(timeout=max(0.0, deadline - time.monotonic()), decode=False)
        message = wire.decode_server(raw)
        assert message["type"] in SERVER_TYPES, message
        if message == {"type": "pong", "t": token}:
            return answers
        answers.append(message)


@contextmanager
def bystander(base: str) -> Iterator[dict[str, Any]]:
    """A stream on its own connection, fed a sentence at a time while the fuzzing runs."""
    outcome: dict[str, Any] = {"frames": [], "done": None, "errors": []}
    stop = threading.Event()

    def speak() -> None:
        url = base.replace("http", "ws") + "/v1/stream"
        with connect(
            url,
            subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
            max_size=2**22,
            ping_interval=None,
        ) as ws:
            ws.recv()

            def send(**message: Any) -> None:
                ws.send(msgpack.packb(message, use_bin_type=True))

            send(type="start", stream="calm")
            send(type="text", stream="calm", text=SENTENCE, flush=True)
            last_sent = time.monotonic()
            ended = False
            while True:
                if stop.is_set() and not ended:
                    send(type="end", stream="calm")
                    ended = True
                elif not ended and time.monotonic() - last_sent >= SENTENCE_EVERY_S:
                    send(type="text", stream="calm", text=SENTENCE, flush=True)
                    last_sent = time.monotonic()
                while True:  # drain what has come, reporting it played
                    try:
                        message = wire.decode_server(ws.recv(timeout=0.5, decode=False))
                    except TimeoutError:
                        break
                    if message["type"] == "audio":
                        outcome["frames"].append(message)
                        played = message["pos"] + len(message["data"]) // 2
                        send(type="played", stream="calm", samples=played)
                    elif message["type"] == "error":
                        outcome["errors"].append(message)
                    elif message["type"] == "done":
                        outcome["done"] = message
                        return

    thread = threading.Thread(target=speak, name="bystander")
    thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the bystander stream never finished"


def run_fuzz(settings: Settings, synthesizer: Synthesizer, examples: int) -> None:
    fuzzed = dataclasses.replace(
        settings,
        max_messages_per_s=1_000_000,
        idle_timeout_s=600,
        max_active_streams=2,
        ping_interval_s=0,  # keepalive pings draw from `random`, which Hypothesis forbids
    )
    max_bytes = fuzzed.max_message_bytes
    sent = 0
    with live_server(fuzzed, synthesizer) as base, bystander(base) as calm:
        url = base.replace("http", "ws") + "/v1/stream"

        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(frames, min_size=MESSAGES_PER_EXAMPLE, max_size=MESSAGES_PER_EXAMPLE))
        def one_connection(batch: list[bytes | str]) -> None:
            nonlocal sent
            with connect(url, max_size=2**22, ping_interval=None) as ws:
                assert wire.decode_server(ws.recv(decode=False))["type"] == "ready"
                for index, frame in enumerate(batch):
                    ws.send(frame)
                    token = f"after-{index}"
                    ws.send(msgpack.packb({"type": "ping", "t": token}))
                    answers = answers_until_pong(ws, token)
                    errors = [answer for answer in answers if answer["type"] == "error"]
                    for error in errors:
                        assert error["code"] in wire.ERROR_CODES, error
                        assert isinstance(error["message"], str) and error["message"]
                        assert not error["fatal"], error
                    code = expected_code(frame, max_bytes)
                    if code is not None:
                        assert code in [error["code"] for error in errors], (frame, answers)
                    sent += 1

        one_connection()
    assert sent >= examples * MESSAGES_PER_EXAMPLE
    frames_heard = calm["frames"]
    assert calm["errors"] == [] and calm["done"] is not None
    assert calm["done"]["reason"] == "complete"
    assert [frame["seq"] for frame in frames_heard] == list(range(len(frames_heard)))
    assert calm["done"]["samples"] == sum(len(frame["data"]) // 2 for frame in frames_heard)
    print(f"{sent} fuzzed messages; the bystander heard {len(frames_heard)} frames")


def test_ten_thousand_fuzzed_messages(settings: Settings, synthesizer: Synthesizer) -> None:
    run_fuzz(settings, synthesizer, examples=10_000 // MESSAGES_PER_EXAMPLE)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_a_hundred_thousand_fuzzed_messages(settings: Settings, synthesizer: Synthesizer) -> None:
    run_fuzz(settings, synthesizer, examples=100_000 // MESSAGES_PER_EXAMPLE)

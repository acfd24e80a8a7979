"""Protocol fuzzing against the real server: generated and mutated client messages.

Each message is followed by a ``ping`` so its answers can be told apart: everything the server
sends before the matching ``pong`` answers that message (or is a stream's own output). The
oracle for bad messages is the wire decoder itself, run here: a message it refuses must be
answered by an ``error`` with the same stable code. Nothing may crash, hang or be fatal, a
stream on another connection speaks on, whole, throughout, and the work a message costs is
bounded: each is answered within ``ANSWER_BOUND_S`` and the server's event loop never lags by
``LAG_BOUND_S`` (its own probe, ``app.loop_monitor``). Numbers are drawn with their extremes
(0, -1, 2**31 - 1, 2**63 - 1, 2**64 - 1, huge floats, NaN), and a second test sends every
numeric field of every message at each of them.

``make test`` sends 10,000 messages; ``make test-long`` 100,000.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from app import wire
from app.settings import Settings
from tests.live import bystander, server_process

pytestmark = pytest.mark.model

MESSAGES_PER_EXAMPLE = 20
ANSWER_TIMEOUT_S = 60.0
"""How long a test waits for an answer before it calls the server hung."""
ANSWER_BOUND_S = 1.0
"""Every message is answered within this: the work one message triggers is bounded."""
LAG_BOUND_S = 0.5
"""The server's event loop never runs this late while it is fuzzed."""
EXTREMES: list[Any] = [
    *(0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1),
    *(0.5, -0.0, 1e-308, 5e-324, 1e308, -1e308, math.inf, -math.inf, math.nan),
]
"""The values every numeric field is tried at."""
SERVER_TYPES = {"ready", "audio", "segment", "flow", "flushed", "done", "error", "pong"}
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
extremes = st.sampled_from(EXTREMES)
resume_fields = ("seg", "seq", "pos", "chars", "skip")
resumes = st.fixed_dictionaries(
    {}, optional={name: st.integers(0, 50) | extremes | values for name in resume_fields}
)
stream_names = st.sampled_from(["a", "b", "c", "", "x" * 65]) | values
fields: dict[str, st.SearchStrategy[Any]] = {
    "stream": stream_names,
    "text": st.text(max_size=60) | values,
    "voice": st.sampled_from(VOICES) | values,
    "speed": st.floats(min_value=0, max_value=5) | extremes | values,
    "encoding": st.sampled_from(["pcm_s16le", "f32le", "opus", "mp3"]) | values,
    "sample_rate": st.sampled_from([24000, 16000]) | extremes | values,
    "frame_ms": st.integers(min_value=-5, max_value=2000) | extremes | values,
    "lang": st.sampled_from(["en-us", "ja", "../etc"]) | values,
    "timestamps": st.sampled_from(["none", "word", "all"]) | values,
    "resume": resumes | values,
    "flush": values,
    "id": extremes | values,
    "samples": st.integers(min_value=-10, max_value=2**40) | extremes | values,
    "buffered_ms": extremes | values,
    "underruns": extremes | values,
    "t": extremes | values,
}
NUMERIC_FIELDS: list[tuple[str, str]] = [
    *(("start", name) for name in ("speed", "sample_rate", "frame_ms")),
    *(("start", f"resume.{name}") for name in resume_fields),
    *(("played", name) for name in ("samples", "buffered_ms", "underruns")),
    ("flush", "id"),
    ("ping", "t"),
]
"""Every numeric field of every client message (``resume.x``: inside ``start``'s map)."""
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


SLOWEST_ANSWER_S = [0.0]
"""The longest any message of this module waited for its answers (for the report)."""


def exchange(ws: ClientConnection, frame: bytes | str, token: str) -> list[dict[str, Any]]:
    """Send ``frame`` and a ping; its answers, which must all come within ``ANSWER_BOUND_S``."""
    sent_at = time.monotonic()
    ws.send(frame)
    ws.send(msgpack.packb({"type": "ping", "t": token}))
    answers = answers_until_pong(ws, token)
    took = time.monotonic() - sent_at
    SLOWEST_ANSWER_S[0] = max(SLOWEST_ANSWER_S[0], took)
    assert took < ANSWER_BOUND_S, f"answered after {took:.2f} s: {frame!r:.200}"
    return answers


@pytest.fixture(scope="module")
def fuzzed(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server process for the module (its event loop is measured, so it must not share a
    process and a garbage collector with the tests), without the limits that would refuse
    fuzzing itself."""
    unlimited = {
        "KOKORO_MAX_MESSAGES_PER_S": "1000000",
        "KOKORO_IDLE_TIMEOUT_S": "600",
        "KOKORO_MAX_ACTIVE_STREAMS": "2",
    }
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    with server_process(settings, log, unlimited) as base:
        yield base


def loop_lag(base: str) -> dict[str, Any]:
    """The server's event loop figures (``app.loop_monitor``), from ``/v1/stats``."""
    lag: dict[str, Any] = httpx.get(f"{base}/v1/stats", timeout=10).json()["event_loop"]
    return lag


def test_every_numeric_field_at_its_extremes_is_answered_at_once(fuzzed: str) -> None:
    base = fuzzed
    url = base.replace("http", "ws") + "/v1/stream"
    tried = 0
    with bystander(base) as calm, connect(url, max_size=2**22, ping_interval=None) as ws:
        assert wire.decode_server(ws.recv(decode=False))["type"] == "ready"
        exchange(ws, msgpack.packb({"type": "start", "stream": "open"}), "open")
        exchange(ws, msgpack.packb({"type": "text", "stream": "open", "text": "Hi. "}), "text")
        for kind, name in NUMERIC_FIELDS:
            for value in EXTREMES:
                message: dict[str, Any] = {
                    "type": kind,
                    "stream": "open" if kind != "start" else "x",
                }
                if kind == "played":
                    message["samples"] = 0
                if name.startswith("resume."):
                    resume = dict.fromkeys(resume_fields, 0)
                    resume[name.removeprefix("resume.")] = value
                    message["resume"] = resume
                else:
                    message[name] = value
                answers = exchange(ws, msgpack.packb(message), f"{kind}.{name}={value!r}")
                tried += 1
                if kind == "start" and not any(a["type"] == "error" for a in answers):
                    exchange(ws, msgpack.packb({"type": "cancel", "stream": "x"}), "cancel")
        exchange(ws, msgpack.packb({"type": "end", "stream": "open"}), "end")
    calm.assert_heard_whole()
    assert tried == len(NUMERIC_FIELDS) * len(EXTREMES)
    lag = loop_lag(base)
    assert lag["max_lag_ms"] < LAG_BOUND_S * 1000, lag


def run_fuzz(base: str, examples: int) -> None:
    max_bytes = Settings().max_message_bytes
    sent = 0
    with bystander(base) as calm:
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
                    answers = exchange(ws, frame, f"after-{index}")
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
    calm.assert_heard_whole()
    lag = loop_lag(base)
    print(
        f"{sent} fuzzed messages, slowest answer {SLOWEST_ANSWER_S[0] * 1000:.1f} ms; "
        f"the bystander heard {len(calm.frames)} frames; event loop {lag}"
    )
    assert lag["max_lag_ms"] < LAG_BOUND_S * 1000, lag


def test_ten_thousand_fuzzed_messages(fuzzed: str) -> None:
    run_fuzz(fuzzed, examples=10_000 // MESSAGES_PER_EXAMPLE)


@pytest.mark.long
@pytest.mark.timeout(3600)
def test_a_hundred_thousand_fuzzed_messages(fuzzed: str) -> None:
    run_fuzz(fuzzed, examples=100_000 // MESSAGES_PER_EXAMPLE)

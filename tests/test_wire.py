"""The msgpack wire format: round trips, every refusal with its stable code, and a seeded fuzz.

``decode_client`` faces untrusted bytes, so besides the table of invalid messages the fuzz checks
that it only ever returns a message or raises ``ProtocolError``, with msgpack's C extension and
with its pure-Python fallback (which recurses, so deep nesting must not escape as RecursionError).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import msgpack
import msgpack.fallback
import pytest

from app import wire
from app.wire import (
    Cancel,
    ClientMessage,
    End,
    Flush,
    Ping,
    Played,
    ProtocolError,
    Resume,
    Start,
    Text,
    decode_client,
    decode_server,
    encode_client,
)

MAX = 64 * 1024
CODES = {wire.BAD_MESSAGE, wire.UNKNOWN_TYPE, wire.TOO_BIG}


def pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def refused(data: bytes | bytearray | memoryview | str, max_bytes: int = MAX) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client(data, max_bytes=max_bytes)
    return info.value


@pytest.fixture(params=["c", "fallback"])
def unpacker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test against the C unpacker and the pure-Python one (used where C can't be built)."""
    if request.param == "fallback":
        monkeypatch.setattr(msgpack, "unpackb", msgpack.fallback.unpackb)
    else:
        assert msgpack.unpackb is not msgpack.fallback.unpackb, "C extension not loaded"
    yield request.param


# ------------------------------------------------------------------------------ round trips

CLIENT_MESSAGES: list[ClientMessage] = [
    Start(stream="s1"),
    Start(
        stream="s1",
        voice="af_bella:0.6,af_sky:0.4",
        speed=1.25,
        lang="ja",
        encoding="f32le",
        sample_rate=24000,
        frame_ms=40,
        timestamps="word",
    ),
    Start(stream="s1", resume=Resume(seg=3, seq=57, pos=96_000, chars=41, skip=4800)),
    Start(stream="s1", resume=Resume(seg=0, seq=0, pos=0, chars=0)),
    Text(stream="s1", text="Hello, wörld! "),
    Text(stream="s1", text="", flush=True),
    Flush(stream="s1", flush_id="f-1"),
    Flush(stream="s1", flush_id=7),
    Flush(stream="s1"),
    End(stream="s1"),
    Cancel(stream="ストリーム"),
    Played(stream="s1", samples=48000, buffered_ms=180.5, underruns=2),
    Played(stream="s1", samples=0),
    Ping(t=123456789),
    Ping(t=1.5),
    Ping(t="abc"),
    Ping(),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=repr)
def test_client_round_trip(message: ClientMessage) -> None:
    assert decode_client(encode_client(message), max_bytes=MAX) == message


def test_client_wire_keys_and_defaults() -> None:
    flush = decode_server(encode_client(Flush(stream="a", flush_id=3)))
    assert flush == {"type": "flush", "stream": "a", "id": 3}
    start = decode_client(pack({"type": "start", "stream": "a"}), max_bytes=MAX)
    assert start == Start(stream="a", voice=None, speed=1.0, lang="en-us", frame_ms=None)
    # nil counts as absent for optional fields (a JavaScript undefined encodes as nil)
    nils = {"type": "start", "stream": "a", "voice": None, "speed": None, "frame_ms": None}
    assert decode_client(pack(nils), max_bytes=MAX) == start


def test_int_speed_becomes_float_and_unknown_keys_are_ignored() -> None:
    data = pack({"type": "start", "stream": "a", "speed": 2, "future": {"x": [1, 2]}, "z": None})
    start = decode_client(data, max_bytes=MAX)
    assert isinstance(start, Start)
    assert start.speed == 2.0
    assert isinstance(start.speed, float)


def test_bytes_like_input_is_accepted() -> None:
    data = encode_client(Text(stream="s", text="hi"))
    assert decode_client(bytearray(data), max_bytes=MAX) == Text(stream="s", text="hi")
    assert decode_client(memoryview(data), max_bytes=MAX) == Text(stream="s", text="hi")


def test_server_messages_round_trip() -> None:
    pcm = bytes(range(256)) * 4
    cases: list[tuple[bytes, dict[str, Any]]] = [
        (
            wire.ready("sess", {"max_streams": 4}, ["pcm_s16le", "f32le"], ["af_bella"]),
            {
                "type": "ready",
                "v": 1,
                "session": "sess",
                "limits": {"max_streams": 4},
                "encodings": ["pcm_s16le", "f32le"],
                "voices": ["af_bella"],
            },
        ),
        (
            wire.audio("s", 3, 1, 9600, "pcm_s16le", 24000, pcm),
            {
                "type": "audio",
                "stream": "s",
                "seq": 3,
                "seg": 1,
                "pos": 9600,
                "encoding": "pcm_s16le",
                "sample_rate": 24000,
                "data": pcm,
            },
        ),
        (
            wire.segment("s", 1, "Hello.", 0, 6, 24000, 85.5, "cpu"),
            {
                "type": "segment",
                "stream": "s",
                "seg": 1,
                "text": "Hello.",
                "char_start": 0,
                "char_end": 6,
                "samples": 24000,
                "gen_ms": 85.5,
                "provider": "cpu",
            },
        ),
        (
            wire.words("s", 1, [("Hello", 0, 7200, 0, 5)]),
            {"type": "words", "stream": "s", "seg": 1, "items": [["Hello", 0, 7200, 0, 5]]},
        ),
        (
            wire.flow("s", 200, 1500.0, "lead"),
            {"type": "flow", "stream": "s", "frame_ms": 200, "lead_ms": 1500.0, "reason": "lead"},
        ),
        (wire.flushed("s", "f-1"), {"type": "flushed", "stream": "s", "id": "f-1"}),
        (
            wire.done("s", "complete", 48000, 120.5, 0.2),
            {
                "type": "done",
                "stream": "s",
                "reason": "complete",
                "samples": 48000,
                "ttfa_ms": 120.5,
                "rtf": 0.2,
            },
        ),
        (
            wire.done("s", "cancelled", 0, None, None),
            {
                "type": "done",
                "stream": "s",
                "reason": "cancelled",
                "samples": 0,
                "ttfa_ms": None,
                "rtf": None,
            },
        ),
        (
            wire.error("busy", "try later", stream="s", fatal=True, retry_after_ms=500),
            {
                "type": "error",
                "code": "busy",
                "message": "try later",
                "stream": "s",
                "fatal": True,
                "retry_after_ms": 500,
            },
        ),
        (
            wire.error("bad_message", "nope"),
            {"type": "error", "code": "bad_message", "message": "nope", "fatal": False},
        ),
        (wire.pong(1.5), {"type": "pong", "t": 1.5}),
        (wire.pong("x"), {"type": "pong", "t": "x"}),
    ]
    for encoded, expected in cases:
        assert isinstance(encoded, bytes)
        assert decode_server(encoded) == expected


def test_audio_data_is_bin_not_str() -> None:
    frame = wire.audio("s", 0, 0, 0, "pcm_s16le", 24000, memoryview(b"\x00\x01" * 10))
    assert b"\xc4\x14" + b"\x00\x01" * 10 in frame  # bin 8 header, 20 bytes
    assert decode_server(frame)["data"] == b"\x00\x01" * 10


def test_done_rejects_unknown_reason() -> None:
    with pytest.raises(ValueError, match="done reason"):
        wire.done("s", "finished", 0, None, None)


def test_protocol_error_to_wire() -> None:
    err = refused(pack({"type": "text", "stream": "s9", "text": None}))
    assert decode_server(err.to_wire()) == {
        "type": "error",
        "code": "bad_message",
        "message": err.message,
        "stream": "s9",
        "fatal": False,
    }


def test_decode_server_refuses_non_maps() -> None:
    with pytest.raises(ProtocolError):
        decode_server(pack([1, 2]))
    with pytest.raises(ProtocolError):
        decode_server(b"\xc1")


# ------------------------------------------------------------------------------ refusals

_LONG_ID = "x" * 65
_BAD = wire.BAD_MESSAGE

INVALID: list[tuple[str, bytes | str, str, str | None]] = [
    # (case, frame, code, stream reported in the error)
    ("text frame", "{'type': 'ping'}", _BAD, None),
    ("empty", b"", _BAD, None),
    ("not msgpack", b"\xc1", _BAD, None),
    ("truncated", pack({"type": "text", "stream": "s", "text": "hello"})[:-2], _BAD, None),
    ("extra data", pack({"type": "ping"}) + b"\x00", _BAD, None),
    ("invalid utf-8 value", b"\x82\xa4type\xa4ping\xa1t\xa2\xff\xfe", _BAD, None),
    ("invalid utf-8 key", b"\x81\xa2\xff\xfe\x01", _BAD, None),
    ("array", pack(["ping"]), _BAD, None),
    ("int", pack(5), _BAD, None),
    ("nil", pack(None), _BAD, None),
    ("int key", pack({"type": "ping", 1: 2}), _BAD, None),
    ("bin key", pack({b"type": "ping"}), _BAD, None),
    ("map key", b"\x81\x81\xa1a\x01\x01", _BAD, None),
    ("no type", pack({"stream": "s"}), _BAD, "s"),
    ("int type", pack({"type": 1, "stream": "s"}), _BAD, "s"),
    ("bin type", pack({"type": b"ping"}), _BAD, None),
    ("unknown type", pack({"type": "speak", "stream": "s"}), wire.UNKNOWN_TYPE, "s"),
    ("type is case-sensitive", pack({"type": "PING"}), wire.UNKNOWN_TYPE, None),
    ("missing stream", pack({"type": "end"}), _BAD, None),
    ("int stream", pack({"type": "end", "stream": 5}), _BAD, None),
    ("nil stream", pack({"type": "end", "stream": None}), _BAD, None),
    ("empty stream", pack({"type": "cancel", "stream": ""}), _BAD, None),
    ("long stream", pack({"type": "cancel", "stream": _LONG_ID}), _BAD, None),
    ("control char stream", pack({"type": "cancel", "stream": "a\nb"}), _BAD, None),
    ("nul stream", pack({"type": "cancel", "stream": "a\x00"}), _BAD, None),
    ("bidi stream", pack({"type": "cancel", "stream": "a\u202eb"}), _BAD, None),
    ("missing text", pack({"type": "text", "stream": "s"}), _BAD, "s"),
    ("nil text", pack({"type": "text", "stream": "s", "text": None}), _BAD, "s"),
    ("bin text", pack({"type": "text", "stream": "s", "text": b"hi"}), _BAD, "s"),
    ("int flush", pack({"type": "text", "stream": "s", "text": "a", "flush": 1}), _BAD, "s"),
    ("string speed", pack({"type": "start", "stream": "s", "speed": "fast"}), _BAD, "s"),
    ("bool speed", pack({"type": "start", "stream": "s", "speed": True}), _BAD, "s"),
    ("slow speed", pack({"type": "start", "stream": "s", "speed": 0.2}), _BAD, "s"),
    ("fast speed", pack({"type": "start", "stream": "s", "speed": 4.01}), _BAD, "s"),
    ("nan speed", pack({"type": "start", "stream": "s", "speed": math.nan}), _BAD, "s"),
    ("inf speed", pack({"type": "start", "stream": "s", "speed": math.inf}), _BAD, "s"),
    ("int voice", pack({"type": "start", "stream": "s", "voice": 3}), _BAD, "s"),
    ("int lang", pack({"type": "start", "stream": "s", "lang": 1}), _BAD, "s"),
    ("odd lang", pack({"type": "start", "stream": "s", "lang": "en us"}), _BAD, "s"),
    ("empty lang", pack({"type": "start", "stream": "s", "lang": ""}), _BAD, "s"),
    ("opus", pack({"type": "start", "stream": "s", "encoding": "opus"}), _BAD, "s"),
    ("int encoding", pack({"type": "start", "stream": "s", "encoding": 1}), _BAD, "s"),
    ("16 kHz", pack({"type": "start", "stream": "s", "sample_rate": 16000}), _BAD, "s"),
    ("float rate", pack({"type": "start", "stream": "s", "sample_rate": 24000.0}), _BAD, "s"),
    ("small frame", pack({"type": "start", "stream": "s", "frame_ms": 9}), _BAD, "s"),
    ("big frame", pack({"type": "start", "stream": "s", "frame_ms": 1001}), _BAD, "s"),
    ("float frame", pack({"type": "start", "stream": "s", "frame_ms": 20.0}), _BAD, "s"),
    ("bool frame", pack({"type": "start", "stream": "s", "frame_ms": True}), _BAD, "s"),
    ("timestamps", pack({"type": "start", "stream": "s", "timestamps": "char"}), _BAD, "s"),
    ("float flush id", pack({"type": "flush", "stream": "s", "id": 1.5}), _BAD, "s"),
    ("bool flush id", pack({"type": "flush", "stream": "s", "id": False}), _BAD, "s"),
    ("list flush id", pack({"type": "flush", "stream": "s", "id": [1]}), _BAD, "s"),
    ("missing samples", pack({"type": "played", "stream": "s"}), _BAD, "s"),
    ("nil samples", pack({"type": "played", "stream": "s", "samples": None}), _BAD, "s"),
    ("negative samples", pack({"type": "played", "stream": "s", "samples": -1}), _BAD, "s"),
    ("float samples", pack({"type": "played", "stream": "s", "samples": 1.0}), _BAD, "s"),
    (
        "negative buffered",
        pack({"type": "played", "stream": "s", "samples": 1, "buffered_ms": -1.0}),
        _BAD,
        "s",
    ),
    (
        "string buffered",
        pack({"type": "played", "stream": "s", "samples": 1, "buffered_ms": "1"}),
        _BAD,
        "s",
    ),
    (
        "negative underruns",
        pack({"type": "played", "stream": "s", "samples": 1, "underruns": -1}),
        _BAD,
        "s",
    ),
    ("list t", pack({"type": "ping", "t": [1]}), _BAD, None),
    ("bool t", pack({"type": "ping", "t": True}), _BAD, None),
    ("bin t", pack({"type": "ping", "t": b"x"}), _BAD, None),
    ("ext t", pack({"type": "ping", "t": msgpack.ExtType(5, b"x")}), _BAD, None),
    (
        "timestamp speed",
        b"\x83\xa4type\xa5start\xa6stream\xa1s\xa5speed\xd6\xff\0\0\0\1",
        _BAD,
        "s",
    ),
    ("bad timestamp", b"\x81\xa1x\xd7\xff" + b"\xff" * 8, _BAD, None),
    ("huge array header", b"\xdd\xff\xff\xff\xff", _BAD, None),
    ("huge str header", b"\xdb\xff\xff\xff\xff", _BAD, None),
    ("huge map header", b"\xdf\xff\xff\xff\xff", _BAD, None),
    ("resume not a map", pack({"type": "start", "stream": "s", "resume": 3}), _BAD, "s"),
    (
        "resume without seq",
        pack({"type": "start", "stream": "s", "resume": {"seg": 1, "pos": 0, "chars": 0}}),
        _BAD,
        "s",
    ),
    (
        "negative resume skip",
        pack(
            {
                "type": "start",
                "stream": "s",
                "resume": {"seg": 1, "seq": 2, "pos": 0, "chars": 0, "skip": -1},
            }
        ),
        _BAD,
        "s",
    ),
    (
        "float resume pos",
        pack(
            {
                "type": "start",
                "stream": "s",
                "resume": {"seg": 1, "seq": 2, "pos": 1.0, "chars": 0},
            }
        ),
        _BAD,
        "s",
    ),
]


@pytest.mark.parametrize(
    ("frame", "code", "stream"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_messages_are_refused(
    unpacker: str, frame: bytes | str, code: str, stream: str | None
) -> None:
    err = refused(frame)
    assert (err.code, err.stream, err.fatal) == (code, stream, False)
    assert err.message


def test_error_messages_do_not_echo_content() -> None:
    secret = "my-secret-token"
    for frame in (
        pack({"type": secret}),
        pack({"type": "start", "stream": "s", "encoding": secret}),
        pack({"type": "text", "stream": "s", "text": secret.encode()}),
    ):
        assert secret not in refused(frame).message


def test_unknown_ext_in_unknown_key_is_ignored() -> None:
    data = pack({"type": "end", "stream": "s", "x": msgpack.ExtType(5, b"abc")})
    assert decode_client(data, max_bytes=MAX) == End(stream="s")


def test_too_big_is_refused_before_unpacking(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpacked an oversized frame")

    frame = encode_client(Text(stream="s", text="x" * 200))
    assert decode_client(frame, max_bytes=len(frame)) == Text(stream="s", text="x" * 200)
    monkeypatch.setattr(msgpack, "unpackb", explode)
    for data in (frame, bytearray(frame), memoryview(frame), b"\xc1" * 1000):
        err = refused(data, max_bytes=len(frame) - 1)
        assert (err.code, err.stream) == (wire.TOO_BIG, None)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x91" * 100_000 + b"\xc0",
        b"\x81\xa1a" * 100_000 + b"\xc0",
        b"\x82" + pack({"type": "ping"})[1:] + b"\xa1x" + b"\x91" * 100_000 + b"\xc0",
        b"\xdc\x00\x01" * 50_000 + b"\xc0",
    ],
    ids=["arrays", "maps", "under-unknown-key", "array16"],
)
def test_deep_nesting_is_bad_message(unpacker: str, frame: bytes) -> None:
    # msgpack 1.2.4: the C unpacker stops at 1024 levels with StackError (a ValueError); the
    # fallback catches RecursionError and raises StackError. Either way: bad_message.
    err = refused(frame, max_bytes=len(frame))
    assert err.code == wire.BAD_MESSAGE


def test_moderate_nesting_under_unknown_key_is_ignored(unpacker: str) -> None:
    # three entries: type, t and an unknown key "x" holding 200 nested arrays
    data = b"\x83" + pack({"type": "ping", "t": 1})[1:] + b"\xa1x" + b"\x91" * 200 + b"\xc0"
    assert decode_client(data, max_bytes=MAX) == Ping(t=1)


# ------------------------------------------------------------------------------ fuzz


def _check(data: bytes, max_bytes: int = 4096) -> None:
    """The fuzz property: a valid, re-encodable message or a ProtocolError with a known code."""
    try:
        message = decode_client(data, max_bytes=max_bytes)
    except ProtocolError as err:
        assert err.code in CODES
        assert err.stream is None or isinstance(err.stream, str)
        return
    assert isinstance(message, ClientMessage)
    if isinstance(message, Ping) and isinstance(message.t, float) and math.isnan(message.t):
        return
    assert decode_client(encode_client(message), max_bytes=MAX) == message


_SEEDS: list[bytes] = [encode_client(message) for message in CLIENT_MESSAGES] + [
    pack({"type": "start", "stream": "s", "speed": 0.25, "frame_ms": 1000, "extra": [1, {}]}),
    pack({"type": "played", "stream": "s", "samples": 2**40, "buffered_ms": 0}),
    pack({"type": "text", "stream": "s" * 64, "text": "ünïcödé " * 8, "flush": False}),
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and buf:  # flip bytes
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # overwrite with an interesting byte
            buf[rng.randrange(len(buf))] = rng.choice(
                [0x00, 0x7F, 0x80, 0x8F, 0x90, 0xC0, 0xC1, 0xC3, 0xC4, 0xD9, 0xDC, 0xDE, 0xFF]
            )
        elif op == 2:  # truncate
            del buf[rng.randint(0, len(buf)) :]
        elif op == 3:  # splice with another seed
            other = rng.choice(_SEEDS)
            cut, cut_other = rng.randint(0, len(buf)), rng.randint(0, len(other))
            buf = buf[:cut] + other[cut_other:]
        else:  # insert random bytes
            at = rng.randint(0, len(buf))
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(buf)


def test_fuzz_random_bytes(unpacker: str) -> None:
    rng = random.Random(20240601)
    prefixes = [b"", b"\x81", b"\x82\xa4type", b"\x83\xa4type\xa5start", b"\xde\x00\x02", b"\x91"]
    for _ in range(5000):
        data = rng.choice(prefixes) + rng.randbytes(rng.choice([0, 1, 2, 4, 8, 16, 64, 300]))
        _check(data)


def test_fuzz_mutated_messages(unpacker: str) -> None:
    rng = random.Random(7)
    for _ in range(5000):
        _check(_mutate(rng, rng.choice(_SEEDS)))


_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 9, 10, 24000, 2**63, -(2**63), 0.0, 0.25, 4.0, 4.5, -0.0,
    math.nan, math.inf, "", "s", "start", "text", "word", "f32le", "x" * 65, "a\x00",
    b"bin", [], [1, [2]], {}, {"k": 1}, {1: 2}, msgpack.ExtType(1, b"x"),
]  # fmt: skip
_KEYS = [
    *("type", "stream", "text", "flush", "id", "speed", "voice", "lang", "encoding"),
    *("sample_rate", "frame_ms", "timestamps", "samples", "buffered_ms", "underruns", "t"),
]


def test_fuzz_structured_mutations(unpacker: str) -> None:
    """Well-formed msgpack with fields dropped, retyped or added, to exercise validation."""
    rng = random.Random(11)
    valid = 0
    for _ in range(3000):
        body = msgpack.unpackb(rng.choice(_SEEDS))
        for _ in range(rng.randint(1, 2)):
            key = rng.choice([*body, *_KEYS])
            if rng.random() < 0.2:
                body.pop(key, None)
            else:
                body[key] = rng.choice(_VALUES)
        data = pack(body)
        _check(data)
        try:
            decode_client(data, max_bytes=4096)
            valid += 1
        except ProtocolError:
            pass
    assert 100 < valid < 2900  # both paths were exercised


def test_fuzz_small_limit_gives_too_big() -> None:
    rng = random.Random(3)
    for _ in range(500):
        data = _mutate(rng, rng.choice(_SEEDS))
        _check(data, max_bytes=16)
        if len(data) > 16:
            assert refused(data, max_bytes=16).code == wire.TOO_BIG


def test_seed_table_is_valid() -> None:
    for seed in _SEEDS:
        assert isinstance(decode_client(seed, max_bytes=MAX), ClientMessage)

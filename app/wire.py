"""The msgpack wire format of the streaming protocol, version 1 (``GET /v1/stream``, ``tts.v1``).

Every WebSocket frame, both ways, is one binary message holding one msgpack map with a string
``type`` key; keys are snake_case and audio rides as msgpack ``bin``. This module only turns bytes
into validated client messages and server messages into bytes; it knows nothing of sessions,
scheduling or synthesis.

``decode_client`` is the single door for untrusted input: whatever bytes arrive, it returns one of
the frozen message dataclasses or raises ``ProtocolError`` with a stable code (``too_big``,
``bad_message``, ``unknown_type``), never anything else, so the connection handler can answer with
an ``error`` frame and carry on. Error messages name fields and expectations, never echo the
client's content (the stream id excepted, so the client knows which stream was refused).

The functions named after server message types (``ready``, ``audio``, ...) build server frames;
``encode_client`` and ``decode_server`` are the mirror image, for clients, load tests and tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, assert_never

import msgpack

from app.errors import TTSError

PROTOCOL_VERSION: Final = 1
SUBPROTOCOL: Final = "tts.v1"

# Stable error codes produced by this module (the server adds its own, e.g. unknown_voice).
BAD_MESSAGE: Final = "bad_message"
UNKNOWN_TYPE: Final = "unknown_type"
TOO_BIG: Final = "too_big"

ENCODINGS: Final = ("pcm_s16le", "f32le")
SAMPLE_RATE: Final = 24000
TIMESTAMP_MODES: Final = ("none", "word")
DONE_REASONS: Final = ("complete", "cancelled", "error", "timeout", "shutdown")
ERROR_CODES: Final = frozenset(
    {
        "bad_message",
        "too_big",
        "unknown_type",
        "unknown_voice",
        "bad_voice",
        "unknown_stream",
        "stream_exists",
        "stream_ended",
        "too_many_streams",
        "text_too_long",
        "rate_limited",
        "idle_timeout",
        "unauthorized",
        "not_ready",
        "busy",
        "shutting_down",
        "inference_failed",
        "internal",
        "timestamps_unavailable",
    }
)
"""Every ``error`` code the WebSocket sends (docs/protocol.md says when); clients may rely on
them."""
MIN_SPEED: Final = 0.25
MAX_SPEED: Final = 4.0
MIN_FRAME_MS: Final = 10
MAX_FRAME_MS: Final = 1000
MAX_STREAM_ID_CHARS: Final = 64
MAX_LANG_CHARS: Final = 32
MAX_RESUME_VALUE: Final = 2**31 - 1
"""Bound on ``resume``'s counters (about a day of audio in samples)."""
_LANG_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class ProtocolError(TTSError):
    """A client frame that cannot be accepted; ``code`` is stable, ``message`` says what to fix."""

    http_status = 400

    def __init__(
        self, code: str, message: str, stream: str | None = None, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.stream = stream
        self.fatal = fatal

    def to_wire(self) -> bytes:
        """The ``error`` frame that reports this error to the client."""
        return error(self.code, self.message, stream=self.stream, fatal=self.fatal)


# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a resumed stream picks up an earlier one (wire: ``start``'s ``resume`` map).

    The client sends the earlier stream's text again from ``chars`` on (the ``char_end`` of the
    last complete segment it received, 0 if none). Numbering continues: the first frame has
    ``seq``, segment ``seg`` (the first incomplete one) begins at sample ``pos``, and its first
    ``skip`` samples, which the client already has, are not sent again.
    """

    seg: int
    seq: int
    pos: int
    chars: int
    skip: int = 0

    @property
    def first_pos(self) -> int:
        """The ``pos`` of the first frame the resumed stream sends."""
        return self.pos + self.skip


@dataclass(frozen=True, slots=True)
class Start:
    """Open a stream; ``voice=None`` is the server's default voice, ``frame_ms=None`` adaptive."""

    stream: str
    voice: str | None = None
    speed: float = 1.0
    lang: str = "en-us"
    encoding: str = "pcm_s16le"
    sample_rate: int = SAMPLE_RATE
    frame_ms: int | None = None
    timestamps: str = "none"
    resume: Resume | None = None


@dataclass(frozen=True, slots=True)
class Text:
    """Append text to a stream (possibly a few characters at a time); ``flush`` synthesizes now."""

    stream: str
    text: str
    flush: bool = False


@dataclass(frozen=True, slots=True)
class Flush:
    """Synthesize what is buffered; ``flushed`` answers with ``flush_id`` (wire key ``id``)."""

    stream: str
    flush_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class End:
    """No more text: finish what is buffered, then ``done``."""

    stream: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop at once: drop queued text and audio, then ``done`` with reason ``cancelled``."""

    stream: str


@dataclass(frozen=True, slots=True)
class Played:
    """Playback report: samples heard so far; drives flow-control credit."""

    stream: str
    samples: int
    buffered_ms: float | None = None
    underruns: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Echo request; ``t`` is an int, float, str or None and comes back unchanged in ``pong``."""

    t: Any = None


ClientMessage: TypeAlias = Start | Text | Flush | End | Cancel | Played | Ping


def _is_int(value: object) -> bool:
    """msgpack booleans decode to ``bool``, a subclass of ``int``: they must not pass as numbers."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float)


def _valid_stream_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_STREAM_ID_CHARS
        and value.isprintable()  # no control, format or line-separator characters
    )


class _Fields:
    """Typed access to one decoded map; every failure is a ``bad_message`` tagged with the stream.

    For optional fields ``nil`` counts as absent (a JavaScript ``undefined`` encodes as ``nil``).
    """

    __slots__ = ("_map", "stream_id")

    def __init__(self, obj: Mapping[str, Any], stream_id: str | None) -> None:
        self._map = obj
        self.stream_id = stream_id

    def fail(self, message: str) -> ProtocolError:
        return ProtocolError(BAD_MESSAGE, message, stream=self.stream_id)

    def stream(self) -> str:
        if "stream" not in self._map:
            raise self.fail("missing field 'stream'")
        if self.stream_id is None:
            raise self.fail(
                f"'stream' must be a string of 1 to {MAX_STREAM_ID_CHARS} printable characters"
            )
        return self.stream_id

    def raw(self, key: str, required: bool = False) -> Any:
        """The value as decoded (``None`` when absent), or a failure when required and absent."""
        value = self._map.get(key)
        if required and key not in self._map:
            raise self.fail(f"missing field '{key}'")
        return value

    def text(self, key: str) -> str:
        value = self.raw(key, required=True)
        if not isinstance(value, str):
            raise self.fail(f"'{key}' must be a string")
        return value

    def opt_str(self, key: str) -> str | None:
        value = self.raw(key, required=False)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"'{key}' must be a string")
        return value

    def choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        value = self.raw(key, required=False)
        if value is None:
            return default
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(f"'{key}' must be one of: {', '.join(allowed)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(f"'{key}' must be a boolean")
        return value

    def integer(self, key: str, low: int | None = None, high: int | None = None) -> int | None:
        """An optional int within ``[low, high]``; floats are refused, not truncated."""
        value = self.raw(key, required=False)
        if value is None:
            return None
        if not _is_int(value):
            raise self.fail(f"'{key}' must be an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(f"'{key}' must be {_range_text(low, high)}")
        return int(value)

    def required_int(self, key: str, low: int | None = None, high: int | None = None) -> int:
        self.raw(key, required=True)
        value = self.integer(key, low, high)
        if value is None:
            raise self.fail(f"'{key}' must be an integer")
        return value

    def number(self, key: str, low: float, high: float | None = None) -> float | None:
        """An optional finite int or float within ``[low, high]``, returned as float."""
        value = self.raw(key, required=False)
        if value is None:
            return None
        if not _is_number(value):
            raise self.fail(f"'{key}' must be a number")
        number = float(value)
        if not (math.isfinite(number) and number >= low and (high is None or number <= high)):
            raise self.fail(f"'{key}' must be {_range_text(low, high)}")
        return number


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"at least {low}"
    return f"at most {high}"


def _parse_start(f: _Fields) -> Start:
    stream = f.stream()
    lang = f.opt_str("lang")
    if lang is None:
        lang = "en-us"
    elif not (0 < len(lang) <= MAX_LANG_CHARS and set(lang) <= _LANG_CHARS):
        raise f.fail("'lang' must be a language code such as 'en-us'")
    speed = f.number("speed", MIN_SPEED, MAX_SPEED)
    sample_rate = f.integer("sample_rate")
    if sample_rate is not None and sample_rate != SAMPLE_RATE:
        raise f.fail(f"'sample_rate' must be {SAMPLE_RATE}")
    return Start(
        stream=stream,
        voice=f.opt_str("voice"),
        speed=1.0 if speed is None else speed,
        lang=lang,
        encoding=f.choice("encoding", "pcm_s16le", ENCODINGS),
        sample_rate=SAMPLE_RATE,
        frame_ms=f.integer("frame_ms", MIN_FRAME_MS, MAX_FRAME_MS),
        timestamps=f.choice("timestamps", "none", TIMESTAMP_MODES),
        resume=_parse_resume(f),
    )


def _parse_resume(f: _Fields) -> Resume | None:
    value = f.raw("resume")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise f.fail("'resume' must be a map with 'seg', 'seq', 'pos', 'chars' and 'skip'")
    fields = _Fields(value, f.stream_id)
    try:
        resume = Resume(
            seg=fields.required_int("seg", 0, MAX_RESUME_VALUE),
            seq=fields.required_int("seq", 0, MAX_RESUME_VALUE),
            pos=fields.required_int("pos", 0, MAX_RESUME_VALUE),
            chars=fields.required_int("chars", 0, MAX_RESUME_VALUE),
            skip=fields.integer("skip", 0, MAX_RESUME_VALUE) or 0,
        )
    except ProtocolError as error:
        raise f.fail(f"in 'resume': {error.message}") from None
    # What a stream can have produced: each segment has a character, each frame a sample.
    if resume.seg > resume.chars:
        raise f.fail("in 'resume': 'seg' cannot exceed 'chars' (a segment has a character)")
    if resume.first_pos > MAX_RESUME_VALUE:
        raise f.fail(f"in 'resume': 'pos' + 'skip' must be at most {MAX_RESUME_VALUE}")
    if resume.seq > resume.first_pos:
        raise f.fail("in 'resume': 'seq' cannot exceed 'pos' + 'skip' (a frame has a sample)")
    return resume


def _parse_text(f: _Fields) -> Text:
    return Text(stream=f.stream(), text=f.text("text"), flush=f.boolean("flush", False))


def _parse_flush(f: _Fields) -> Flush:
    stream = f.stream()
    flush_id = f.raw("id", required=False)
    if flush_id is not None and not (isinstance(flush_id, str) or _is_int(flush_id)):
        raise f.fail("'id' must be a string or an integer")
    return Flush(stream=stream, flush_id=flush_id)


def _parse_played(f: _Fields) -> Played:
    return Played(
        stream=f.stream(),
        samples=f.required_int("samples", low=0),
        buffered_ms=f.number("buffered_ms", 0.0),
        underruns=f.integer("underruns", low=0),
    )


def _parse_ping(f: _Fields) -> Ping:
    t = f.raw("t", required=False)
    if t is not None and not (_is_number(t) or isinstance(t, str)):
        raise f.fail("'t' must be a number or a string")
    return Ping(t=t)


_PARSERS: Final[dict[str, Callable[[_Fields], ClientMessage]]] = {
    "start": _parse_start,
    "text": _parse_text,
    "flush": _parse_flush,
    "end": lambda f: End(stream=f.stream()),
    "cancel": lambda f: Cancel(stream=f.stream()),
    "played": _parse_played,
    "ping": _parse_ping,
}
CLIENT_TYPES: Final = tuple(_PARSERS)


def _unpack(data: bytes, what: str) -> Any:
    """msgpack with every length bounded by the input size; any failure is ``bad_message``.

    msgpack 1.2.4's C unpacker has a fixed 1024-level stack and raises ``StackError`` (a
    ``ValueError``) beyond it; the pure-Python fallback turns ``RecursionError`` into
    ``StackError`` too. Invalid UTF-8 raises ``UnicodeDecodeError``, bad timestamps ``ValueError``,
    and the docs warn other exceptions are possible, so everything is caught here.
    """
    limit = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=limit,
            max_map_len=limit,
            max_ext_len=limit,
        )
    except (RecursionError, msgpack.StackError):
        raise ProtocolError(BAD_MESSAGE, f"{what} is nested too deeply") from None
    except Exception:  # untrusted input: any unpack failure is the client's
        raise ProtocolError(BAD_MESSAGE, f"{what} is not a valid msgpack message") from None


def decode_client(data: bytes | bytearray | memoryview | str, *, max_bytes: int) -> ClientMessage:
    """Decode and validate one client frame, raising only ``ProtocolError`` whatever the input."""
    if isinstance(data, str):
        raise ProtocolError(BAD_MESSAGE, "send binary msgpack frames, not text frames")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(BAD_MESSAGE, "frame must be bytes")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > max_bytes:
        raise ProtocolError(TOO_BIG, f"message is {size} bytes; the limit is {max_bytes}")
    obj = _unpack(bytes(data), "frame")
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_MESSAGE, "frame must be a msgpack map")
    if not all(isinstance(key, str) for key in obj):
        raise ProtocolError(BAD_MESSAGE, "map keys must be strings")
    raw_stream = obj.get("stream")
    fields = _Fields(obj, raw_stream if _valid_stream_id(raw_stream) else None)
    mtype = obj.get("type")
    if not isinstance(mtype, str):
        raise fields.fail("message needs a string 'type'")
    parser = _PARSERS.get(mtype)
    if parser is None:
        raise ProtocolError(
            UNKNOWN_TYPE,
            f"unknown message type; expected one of: {', '.join(CLIENT_TYPES)}",
            stream=fields.stream_id,
        )
    return parser(fields)


def _pack(message: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def encode_client(message: ClientMessage) -> bytes:
    """The wire form of a client message (``None`` fields are omitted), for clients and tests."""
    match message:
        case Start():
            body: dict[str, Any] = {
                "type": "start",
                "stream": message.stream,
                "voice": message.voice,
                "speed": message.speed,
                "lang": message.lang,
                "encoding": message.encoding,
                "sample_rate": message.sample_rate,
                "frame_ms": message.frame_ms,
                "timestamps": message.timestamps,
                "resume": None if message.resume is None else resume_fields(message.resume),
            }
        case Text():
            body = {
                "type": "text",
                "stream": message.stream,
                "text": message.text,
                "flush": message.flush,
            }
        case Flush():
            body = {"type": "flush", "stream": message.stream, "id": message.flush_id}
        case End():
            body = {"type": "end", "stream": message.stream}
        case Cancel():
            body = {"type": "cancel", "stream": message.stream}
        case Played():
            body = {
                "type": "played",
                "stream": message.stream,
                "samples": message.samples,
                "buffered_ms": message.buffered_ms,
                "underruns": message.underruns,
            }
        case Ping():
            body = {"type": "ping", "t": message.t}
        case _:
            assert_never(message)
    return _pack({key: value for key, value in body.items() if value is not None})


def resume_fields(resume: Resume) -> dict[str, int]:
    """``start``'s ``resume`` map."""
    return {
        "seg": resume.seg,
        "seq": resume.seq,
        "pos": resume.pos,
        "chars": resume.chars,
        "skip": resume.skip,
    }


# --------------------------------------------------------------------------- server -> client


def ready(
    session: str,
    limits: Mapping[str, Any],
    encodings: Sequence[str],
    voices: Sequence[str],
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """Sent on connect: protocol version (wire key ``v``), limits and what the server offers."""
    return _pack(
        {
            "type": "ready",
            "v": version,
            "session": session,
            "limits": dict(limits),
            "encodings": list(encodings),
            "voices": list(voices),
        }
    )


def audio(  # noqa: PLR0917 - positional signature shared with callers
    stream: str,
    seq: int,
    seg: int,
    pos: int,
    encoding: str,
    sample_rate: int,
    data: bytes | bytearray | memoryview,
) -> bytes:
    """One audio frame; ``data`` goes out as msgpack ``bin`` (no base64)."""
    return _pack(
        {
            "type": "audio",
            "stream": stream,
            "seq": seq,
            "seg": seg,
            "pos": pos,
            "encoding": encoding,
            "sample_rate": sample_rate,
            "data": data,
        }
    )


def segment(  # noqa: PLR0917 - positional signature shared with callers
    stream: str,
    seg: int,
    text: str,
    char_start: int,
    char_end: int,
    samples: int,
    gen_ms: float,
    provider: str,
) -> bytes:
    """A segment's audio is complete; char offsets index the stream's text."""
    return _pack(
        {
            "type": "segment",
            "stream": stream,
            "seg": seg,
            "text": text,
            "char_start": char_start,
            "char_end": char_end,
            "samples": samples,
            "gen_ms": gen_ms,
            "provider": provider,
        }
    )


def words(stream: str, seg: int, items: Sequence[tuple[str, int, int, int, int]]) -> bytes:
    """Word timings, items ``[word, start_sample, end_sample, char_start, char_end]``."""
    return _pack(
        {"type": "words", "stream": stream, "seg": seg, "items": [list(item) for item in items]}
    )


def flow(stream: str, frame_ms: int, lead_ms: float, reason: str) -> bytes:
    """The frame size now in use, the client's lead, and why the size changed."""
    return _pack(
        {
            "type": "flow",
            "stream": stream,
            "frame_ms": frame_ms,
            "lead_ms": lead_ms,
            "reason": reason,
        }
    )


def flushed(stream: str, flush_id: str | int | None) -> bytes:
    """The audio of a ``flush`` is out; echoes its id (wire key ``id``)."""
    return _pack({"type": "flushed", "stream": stream, "id": flush_id})


def done(stream: str, reason: str, samples: int, ttfa_ms: float | None, rtf: float | None) -> bytes:
    """Last message of a stream; ``ttfa_ms``/``rtf`` are ``nil`` when no audio was made."""
    if reason not in DONE_REASONS:
        raise ValueError(f"done reason must be one of {DONE_REASONS}, not {reason!r}")
    return _pack(
        {
            "type": "done",
            "stream": stream,
            "reason": reason,
            "samples": samples,
            "ttfa_ms": ttfa_ms,
            "rtf": rtf,
        }
    )


def error(
    code: str,
    message: str,
    stream: str | None = None,
    fatal: bool = False,
    retry_after_ms: int | None = None,
) -> bytes:
    """An error with a stable code; ``stream`` and ``retry_after_ms`` are omitted when ``None``."""
    body: dict[str, Any] = {"type": "error", "code": code, "message": message, "fatal": fatal}
    if stream is not None:
        body["stream"] = stream
    if retry_after_ms is not None:
        body["retry_after_ms"] = retry_after_ms
    return _pack(body)


def pong(t: Any) -> bytes:
    """Answer to ``ping``, echoing ``t``."""
    return _pack({"type": "pong", "t": t})


def decode_server(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Unpack a server frame into a plain dict (for clients and tests); bins come back as bytes."""
    obj = _unpack(bytes(data), "server frame")
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(BAD_MESSAGE, "server frame must be a map with a string 'type'")
    return obj

"""An asyncio client for the streaming protocol v1.

```python
async with TTSClient.connect("ws://127.0.0.1:8000/v1/stream") as client:
    async for item in client.speak("Hello there!", voice="jm_kumo"):
        if isinstance(item, AudioFrame):
            play(item.samples)
```

The client checks that every stream's frames arrive without gaps (``seq``) and contiguous
(``pos``), raising ``StreamGapError`` otherwise. Each stream keeps a model of a real player (a
jitter buffer that starts after a pre-roll and plays in real time) and reports its position with
``played`` messages, so the server's flow control sees a real consumer. Text may be a string or an
async iterator of pieces (for example tokens from a language model). When the connection drops,
the client dials again and resumes its open streams where they stopped (``Reconnect``; see
"Resumable streams" in docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from app import wire
from app.stream_record import StreamRecord

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
_CLOSED = "_connection_closed"


class StreamGapError(Exception):
    """A frame was missing or out of place: audio would have been lost or repeated."""


class ServerError(Exception):
    """The server answered a stream with an ``error`` frame."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')}: {message.get('message')}")
        self.code: str = str(message.get("code"))
        self.details = message


@dataclass(frozen=True, slots=True)
class AudioFrame:
    stream: str
    seq: int
    seg: int
    pos: int
    samples: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Event:
    """Any other message for the stream (``words``, ``segment``, ``flow``, ``flushed``,
    ``done``)."""

    type: str
    fields: dict[str, Any]


NEXT_GEN_RATIO = 1.75
"""When the second segment should be in, in first-segment generation times: the server's
segments grow by 1.5x, and 0.25 more keeps the third segment in time too when it is slower
than the growth says (measured: a number spelled out, "14" -> "fourteen", made it arrive
40-110 ms after the audio before it ran out with 1.5)."""
PLAN_WAIT_S = 1.0
"""Without a plan, the first start waits for no more than this much buffered audio."""


@dataclass(slots=True)
class PlaybackClock:
    """A player's position: starts once ``preroll_ms`` are buffered, then plays in real time.

    When the buffer runs dry it counts an underrun and waits for ``preroll_ms`` again. With
    ``adaptive_start`` the first start also waits for ``plan`` (see there), as the browser
    player does.
    """

    preroll_ms: float = 120.0
    clock: Callable[[], float] = time.monotonic
    adaptive_start: bool = True
    received: int = 0
    underruns: int = 0
    _played_before: int = 0
    _started_at: float | None = None
    _ever_started: bool = False
    _first_audio_at: float | None = None
    _planned: bool = False
    _not_before: float = 0.0

    def add(self, samples: int) -> None:
        self._settle()
        if self._first_audio_at is None:
            self._first_audio_at = self.clock()
        self.received += samples
        self._maybe_start()

    def plan(self, first_gen_ms: float, first_samples: int) -> None:
        """The first segment is complete: hold the first start until the second is likely in.

        The server starts the second segment when the first is done, so it should be ready
        about ``NEXT_GEN_RATIO`` x the first one's generation time after the first audio.
        Playback starts late enough that a pre-roll's worth of the first segment is left then:
        no wait on a fast server, a little more latency instead of a stutter on a slow one.
        """
        if self._planned:
            return
        self._planned = True
        hold = (
            NEXT_GEN_RATIO * first_gen_ms / 1000
            - first_samples / SAMPLE_RATE
            + self.preroll_ms / 1000
        )
        if self._first_audio_at is not None and hold > 0:
            self._not_before = self._first_audio_at + hold
        self._maybe_start()

    @property
    def start_hold_s(self) -> float:
        """How long after the first audio the first start was held (0 when not held)."""
        if self._first_audio_at is None:
            return 0.0
        return max(0.0, self._not_before - self._first_audio_at)

    def _maybe_start(self) -> None:
        if self._started_at is not None:
            return
        buffered = self._buffered()
        if buffered < self.preroll_ms * SAMPLE_RATE / 1000:
            return
        first = not self._ever_started
        waiting = first and self.adaptive_start and not self._planned
        if waiting and buffered < PLAN_WAIT_S * SAMPLE_RATE:
            return
        self._started_at = max(self.clock(), self._not_before) if first else self.clock()
        self._ever_started = True

    def _buffered(self) -> int:
        return self.received - self.played()

    def _elapsed(self) -> int:
        assert self._started_at is not None
        return max(0, int((self.clock() - self._started_at) * SAMPLE_RATE))

    def _settle(self) -> None:
        """Notice an underrun that happened since the last look."""
        if self._started_at is None:
            return
        if self._played_before + self._elapsed() >= self.received:
            self._played_before = self.received
            self._started_at = None
            self.underruns += 1

    def played(self) -> int:
        if self._started_at is None:
            return self._played_before
        return min(self._played_before + self._elapsed(), self.received)

    def buffered_ms(self) -> float:
        return (self.received - self.played()) * 1000 / SAMPLE_RATE

    def remaining_s(self) -> float:
        """Seconds until everything received has been heard, if no more audio comes: what a
        real-time listener still has to sit through after ``done``. A player that has not
        started yet starts now (or at its held start), as a real one would at the end."""
        hold = 0.0
        if self._started_at is None and not self._ever_started:
            hold = max(0.0, self._not_before - self.clock())
        return hold + (self.received - self.played()) / SAMPLE_RATE


async def _aiter(pieces: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(pieces, AsyncIterable):
        async for piece in pieces:
            yield piece
    else:
        for piece in pieces:
            yield piece


@dataclass(frozen=True, slots=True)
class NetworkShape:
    """Imitate a poor network on the receiving side: messages are handed over no faster than
    ``max_kbps`` allows, each ``latency_ms`` late plus up to ``jitter_ms`` of random delay.
    Reading slowly fills the socket buffers, so the server sees a slow client, as it would."""

    max_kbps: float | None = None
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.max_kbps is not None or self.latency_ms > 0 or self.jitter_ms > 0


class _Shaper:
    def __init__(self, shape: NetworkShape) -> None:
        self.shape = shape
        self._random = random.Random(shape.seed)
        self._free_at = 0.0

    async def deliver(self, size: int) -> None:
        """Wait until a message of ``size`` bytes that arrived now may be handed over."""
        now = time.monotonic()
        shape = self.shape
        due = now + (shape.latency_ms + self._random.uniform(0, shape.jitter_ms)) / 1000
        if shape.max_kbps:
            due = max(due, max(self._free_at, now) + size * 8 / (shape.max_kbps * 1000))
            self._free_at = due
        await asyncio.sleep(max(0.0, due - now))  # the imitated network's delay itself


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a client rides out a dropped connection: it dials the same URL again (through a load
    balancer that may be another server) and resumes every open stream where it stopped."""

    attempts: int = 30
    """Connection attempts per drop; then the open streams fail with ``ConnectionError``."""
    first_wait_s: float = 0.1
    """Wait after the first failed attempt (the first attempt is immediate); it doubles..."""
    max_wait_s: float = 2.0
    """...up to this."""
    answer_timeout_s: float = 30.0
    """How long a resuming ``start`` may wait for the server to take it."""


RETRY_CODES = frozenset({"busy", "shutting_down", "not_ready"})
"""Answers to a resuming ``start`` that mean "try again later" (or elsewhere)."""


@dataclass(slots=True)
class _StreamState:
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(1024))
    playback: PlaybackClock = field(default_factory=PlaybackClock)
    next_seq: int = 0
    next_pos: int = 0
    record: StreamRecord = field(default_factory=lambda: StreamRecord(start={}))
    resuming: bool = False
    """The stream is not open on the current connection (yet): text waits in ``record``."""
    refusal: dict[str, Any] | None = None
    finished: bool = False
    """``done`` arrived: nothing to resume."""


Dial = Callable[[], Awaitable[tuple[ClientConnection, dict[str, Any]]]]


class TTSClient:
    """One WebSocket connection, redialled when it drops; several streams may run on it."""

    def __init__(
        self,
        ws: ClientConnection,
        ready: dict[str, Any],
        shape: NetworkShape | None = None,
        *,
        dial: Dial | None = None,
        reconnect: Reconnect | None = None,
    ) -> None:
        """``dial`` opens a new connection; with it and ``reconnect`` the client resumes."""
        self.ws = ws
        self.ready = ready
        self._shaper = _Shaper(shape) if shape is not None and shape.active else None
        self._streams: dict[str, _StreamState] = {}
        self._ids = itertools.count(1)
        self._dial = dial
        self._reconnect = reconnect if dial is not None else None
        self._send_lock = asyncio.Lock()
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._resumers: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._connected.set()
        self._gone = False
        self.reconnects = 0
        """Connections made after the first."""

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        shape: NetworkShape | None = None,
        reconnect: Reconnect | None = Reconnect(),
    ) -> AsyncIterator[TTSClient]:
        """Connect to ``url``; with ``reconnect`` (the default) a dropped connection is dialled
        again and its streams resumed; ``None`` lets them fail with ``ConnectionError``."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None

        async def dial() -> tuple[ClientConnection, dict[str, Any]]:
            ws = await connect(
                url,
                subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
                additional_headers=headers,
                max_size=2**22,
                max_queue=4 if shape is not None and shape.active else 16,
            )
            try:
                ready = wire.decode_server(await ws.recv(decode=False))
                if ready.get("type") != "ready":
                    raise ServerError(ready)
            except BaseException:
                await ws.close()
                raise
            return ws, ready

        ws, ready = await dial()
        client = cls(ws, ready, shape, dial=dial, reconnect=reconnect)
        try:
            async with asyncio.TaskGroup() as group:
                client._group = group
                reader = group.create_task(client._read())
                try:
                    yield client
                finally:
                    reader.cancel()
                    for task in client._resumers:
                        task.cancel()
        finally:
            await client.ws.close()

    async def _send(self, **message: Any) -> None:
        await self.ws.send(msgpack.packb(message, use_bin_type=True))

    async def _send_for(self, state: _StreamState, **message: Any) -> None:
        """Note a stream's message in its record and send it, unless the stream is being resumed
        (the resume replays its text and end from the record). A send on a connection that just
        dropped is dropped too: the reader notices the drop and resumes. Noting and sending
        happen under one lock with the resume's replay, so no text is sent twice or lost."""
        async with self._send_lock:
            state.record.sent(message)
            if state.resuming:
                return
            with contextlib.suppress(ConnectionClosed):
                await self._send(**message)

    # --- reading and reconnecting ----------------------------------------------------------

    async def _read(self) -> None:
        """Route incoming messages to their streams; after a drop, reconnect and resume."""
        while True:
            await self._read_connection(self.ws)
            if not await self._reestablish():
                break
        self._gone = True
        for state in self._streams.values():  # wake every waiting stream: nothing more comes
            with contextlib.suppress(asyncio.QueueFull):
                state.queue.put_nowait({"type": _CLOSED})

    async def _read_connection(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                if isinstance(raw, str):
                    continue
                if self._shaper is not None:
                    await self._shaper.deliver(len(raw))
                await self._route(wire.decode_server(raw))

    async def _route(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "pong":
            answered = self._pongs.pop(str(message.get("t")), None)
            if answered is not None and not answered.done():
                answered.set_result(None)
            return
        state = self._streams.get(str(message.get("stream")))
        if state is None:
            return
        if state.resuming:
            if kind == "error":  # the answer to a resuming start
                state.refusal = message
            return
        if kind == "done" and message.get("reason") == "shutdown" and self._reconnect:
            state.resuming = True  # the server is stopping: resume elsewhere once it closes
            return
        if kind == "done":
            state.finished = True
        state.record.received(message)
        await state.queue.put(message)

    async def _reestablish(self) -> bool:
        """Dial again and resume every open stream; False when giving up (or not resuming)."""
        policy = self._reconnect
        if policy is None or self._dial is None or not self._open_streams():
            return False
        self._connected.clear()
        async with self._send_lock:
            for state in self._open_streams():
                state.resuming = True
        for task in self._resumers:
            task.cancel()
        self._pongs.clear()
        wait = policy.first_wait_s
        for attempt in range(policy.attempts):
            if attempt:
                await asyncio.sleep(wait)  # back off between attempts
                wait = min(2 * wait, policy.max_wait_s)
            try:
                ws, ready = await self._dial()
            except (OSError, TimeoutError, WebSocketException, ServerError) as error:
                logger.info("reconnect attempt %d failed: %s", attempt + 1, error)
                continue
            await self.ws.close()
            self.ws, self.ready = ws, ready
            self.reconnects += 1
            assert self._group is not None
            for name, state in self._streams.items():
                if state.resuming and not state.finished:
                    task = self._group.create_task(self._resume(name, state, policy))
                    self._resumers.add(task)
                    task.add_done_callback(self._resumers.discard)
            self._connected.set()
            return True
        return False

    def _open_streams(self) -> list[_StreamState]:
        return [state for state in self._streams.values() if not state.finished]

    async def _resume(self, name: str, state: _StreamState, policy: Reconnect) -> None:
        """Open the stream again where it stopped, then resend its text (and end)."""
        refusals = 0
        try:
            while True:
                token = f"resume:{next(self._ids)}"
                answered = self._pongs[token] = asyncio.get_running_loop().create_future()
                state.refusal = None
                async with self._send_lock:
                    await self._send(**state.record.resume_start())
                    await self._send(type="ping", t=token)  # answered once the start is handled
                await asyncio.wait_for(answered, policy.answer_timeout_s)
                refusal = state.refusal
                if refusal is None:
                    break
                if refusal.get("code") not in RETRY_CODES:
                    state.resuming = False
                    await state.queue.put(refusal)  # the stream's reader raises it
                    return
                refusals += 1
                await asyncio.sleep(float(refusal.get("retry_after_ms") or 1000) / 1000)
            async with self._send_lock:
                state.resuming = False
                state.record.resumes += 1
                resume = state.record.resume()
                text = state.record.text_to_resend()
                if text:
                    await self._send(type="text", stream=name, text=text)
                if state.record.ended:
                    await self._send(type="end", stream=name)
            await state.queue.put(
                {
                    "type": "resumed",
                    "stream": name,
                    "refusals": refusals,  # busy or shutting_down answers before this one
                    **wire.resume_fields(resume),
                }
            )
        except ConnectionClosed:
            return  # dropped again: the reader resumes the stream on the next connection
        except TimeoutError:
            await state.queue.put({"type": _CLOSED})

    async def speak(
        self,
        text: str | AsyncIterable[str],
        *,
        voice: str | None = None,
        speed: float = 1.0,
        stream: str | None = None,
        report_every: float = 0.2,
        preroll_ms: float = 120.0,
        timestamps: bool = False,
    ) -> AsyncIterator[AudioFrame | Event]:
        """Start a stream, feed it ``text``, and yield its frames and events until ``done``.

        With ``timestamps`` each segment's ``words`` event comes just before its audio.

        After a reconnect the stream goes on where it stopped (an ``Event`` of type
        ``resumed`` says so); frames stay contiguous, nothing is repeated."""
        name = stream or f"s{next(self._ids)}"
        if name in self._streams:
            raise ValueError(f"stream {name!r} is already running on this connection")
        await self._connected.wait()  # not while reconnecting
        if self._gone:
            raise ConnectionError("the connection is closed")
        start: dict[str, Any] = {"type": "start", "stream": name, "speed": speed}
        if voice:
            start["voice"] = voice
        if timestamps:
            start["timestamps"] = "word"
        state = self._streams[name] = _StreamState(
            playback=PlaybackClock(preroll_ms), record=StreamRecord(start)
        )
        try:
            await self._send_for(state, **start)
            # Owned here and always awaited below (a TaskGroup cannot span a generator's yields).
            feeder = asyncio.create_task(self._feed(name, state, text))
            reporter = asyncio.create_task(self._report(name, state, report_every))
            try:
                async for item in self._receive(name, state):
                    failure = feeder.exception() if feeder.done() else None
                    if failure is not None:  # the text source failed: stop this stream
                        raise failure
                    yield item
            finally:
                feeder.cancel()
                reporter.cancel()
                await asyncio.wait([feeder, reporter])
        finally:
            del self._streams[name]

    async def _feed(self, name: str, state: _StreamState, text: str | AsyncIterable[str]) -> None:
        pieces = [text] if isinstance(text, str) else text
        async for piece in _aiter(pieces):
            await self._send_for(state, type="text", stream=name, text=piece)
        await self._send_for(state, type="end", stream=name)

    async def cancel(self, stream: str) -> None:
        state = self._streams.get(stream)
        if state is not None:
            state.finished = True  # nothing to resume
        with contextlib.suppress(ConnectionClosed):
            await self._send(type="cancel", stream=stream)

    async def _report(self, name: str, state: _StreamState, every: float) -> None:
        while True:
            await asyncio.sleep(every)  # the reporting period itself, not a synchronisation
            playback = state.playback
            await self._send_for(
                state,
                type="played",
                stream=name,
                samples=playback.played(),
                buffered_ms=round(playback.buffered_ms(), 1),
                underruns=playback.underruns,
            )

    async def _receive(self, name: str, state: _StreamState) -> AsyncIterator[AudioFrame | Event]:
        while True:
            message = await state.queue.get()
            kind = message["type"]
            if kind == "error":
                raise ServerError(message)
            if kind == "audio":
                yield self._check_frame(name, state, message)
                continue
            if kind == _CLOSED:
                raise ConnectionError("the connection closed before the stream was done")
            complete = kind == "done" and message.get("reason") in ("complete", "timeout")
            if complete and message.get("samples") != state.next_pos:
                raise StreamGapError(
                    f"{name}: done reports {message.get('samples')} samples, "
                    f"received {state.next_pos}"
                )
            if kind == "segment" and message.get("seg") == 0:
                state.playback.plan(float(message["gen_ms"]), int(message["samples"]))
            if kind == "done":  # add what the modelled player saw
                message = {
                    **message,
                    "client_underruns": state.playback.underruns,
                    "client_start_hold_ms": round(state.playback.start_hold_s * 1000, 1),
                    "client_remaining_ms": round(state.playback.remaining_s() * 1000, 1),
                    "client_resumes": state.record.resumes,
                }
            yield Event(kind, message)
            if kind == "done":
                return

    @staticmethod
    def _check_frame(name: str, state: _StreamState, message: dict[str, Any]) -> AudioFrame:
        if message["seq"] != state.next_seq or message["pos"] != state.next_pos:
            raise StreamGapError(
                f"{name}: expected seq {state.next_seq} at pos {state.next_pos}, "
                f"got seq {message['seq']} at pos {message['pos']}"
            )
        data = message["data"]
        if message.get("encoding") == "f32le":
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        else:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0
        state.next_seq += 1
        state.next_pos += len(samples)
        state.playback.add(len(samples))
        return AudioFrame(name, message["seq"], message["seg"], message["pos"], samples)

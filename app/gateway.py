"""The WebSocket gateway: protocol v1 on ``/v1/stream``.

One ``Connection`` per socket. It decodes client messages (``app.wire``), runs each stream's
segmenter and chunker actors under the connection's own supervisor, and serialises every write to
the socket. Bad input is answered with an ``error`` frame and never ends the connection's other
streams; a disconnect cancels the connection's streams and frees their work. Messages beyond the
connection's rate (``app.rate_limit``) and streams beyond its own or its client address's limit
are refused the same way. Clocks run between messages: a connection without streams is
closed after ``idle_timeout_s``, and a stream without text, or whose client stopped playing
what it holds, for ``stream_idle_s`` is ended (``app.open_stream``). At shutdown
(``app.drain``) new streams are refused, open ones may finish for a grace period, and the rest
end with ``done`` (reason ``shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import cast

from starlette.websockets import WebSocket, WebSocketDisconnect

from actors.audio import ENCODINGS, Encoding, FrameSizer
from actors.chunker import StreamChunker, done_message
from actors.messages import EndIn, FlushIn, StreamFinished, StreamKey, StreamStarted, TextIn
from actors.segmentation import SegmenterPolicy
from actors.segmenter import SegmenterActor
from actors.supervisor import Supervisor
from app import wire
from app.client_streams import ClientStreams
from app.drain import RECONNECT_AFTER_MS, Drain
from app.errors import TTSError
from app.open_stream import OpenStream, next_deadline
from app.pipeline import Pipeline
from app.rate_limit import MessageGate
from app.service import Service
from app.settings import Settings
from app.tracing import Tracing

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_OVERLOADED = 1013


class Connection:
    """One client socket, carrying up to ``max_streams_per_connection`` streams."""

    def __init__(
        self,
        websocket: WebSocket,
        pipeline: Pipeline,
        settings: Settings,
        tracing: Tracing,
        *,
        client_streams: ClientStreams,
        drain: Drain,
    ) -> None:
        """``client_streams`` and ``drain`` are shared by all connections (the service's)."""
        self.websocket = websocket
        self.pipeline = pipeline
        self.settings = settings
        self.address = websocket.client.host if websocket.client else "unknown"
        self.client_streams = client_streams
        self.drain = drain
        self._gate = MessageGate(settings.max_messages_per_s, settings.max_message_bytes)
        self._idle = asyncio.Event()
        self._idle.set()
        self.session = uuid.uuid4().hex[:12]
        self.tracing = tracing
        self._span = self.tracing.connection(self.session)
        self._streams: dict[str, OpenStream] = {}
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._finished: asyncio.Queue[StreamKey] = asyncio.Queue(
            maxsize=settings.max_streams_per_connection + 1
        )
        self._supervisor: Supervisor | None = None
        self._segmenter_policy = (
            SegmenterPolicy()
            if settings.first_segment == "short"
            else SegmenterPolicy.whole_first_sentence()
        )

    # --- writing ---------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write one binary frame; after a disconnect, writes are dropped silently."""
        if self._closed:
            return
        async with self._write_lock:
            try:
                await self.websocket.send_bytes(data)
            except (OSError, RuntimeError, WebSocketDisconnect):
                self._closed = True

    # --- lifecycle -------------------------------------------------------------------------

    def limits(self) -> dict[str, float | int]:
        return {
            "max_active_streams": self.pipeline.admission.capacity(),
            "max_streams": self.settings.max_streams_per_connection,
            "max_text_chars": self.settings.max_stream_chars,
            "max_message_bytes": self.settings.max_message_bytes,
            "idle_timeout_s": self.settings.idle_timeout_s,
            "stream_idle_s": self.settings.stream_idle_s,
            "max_lead_ms": self.settings.max_lead_ms,
        }

    async def run(self) -> None:
        await self.send(
            wire.ready(
                self.session,
                self.limits(),
                list(ENCODINGS),
                self.pipeline.synthesizer.voices.names,
            )
        )
        async with Supervisor(name=f"connection:{self.session}", drain_timeout=2.0) as sup:
            self._supervisor = sup
            reaper = asyncio.create_task(self._reap_finished(), name=f"reaper:{self.session}")
            self.drain.join(self)
            try:
                await self._receive_loop()
            finally:
                self.drain.leave(self)
                self._closed = True
                reaper.cancel()
                await asyncio.wait([reaper])
                for stream in list(self._streams.values()):
                    await self._drop(stream)
                self._span.end()

    async def wait_idle(self) -> None:
        """Return once no stream is open (for the shutdown drain)."""
        await self._idle.wait()

    async def end(self, reason: str) -> None:
        """Shutdown: end each open stream with ``done`` (``reason``), say why, close (1001)."""
        for stream in list(self._streams.values()):
            result = await self._drop(stream, reason)
            if result is not None:
                await self.send(done_message(result))
        await self.send(
            wire.error(
                "shutting_down",
                "the server is shutting down; reconnect",
                fatal=True,
                retry_after_ms=RECONNECT_AFTER_MS,
            )
        )
        self._closed = True
        with contextlib.suppress(Exception):
            await self.websocket.close(CLOSE_GOING_AWAY)

    async def _receive_loop(self) -> None:
        """Messages until the client leaves. Between them, the clocks: a connection without
        streams is closed after ``idle_timeout_s``; a stream without text, or whose client
        stopped playing, for ``stream_idle_s`` is ended (``_run_stream_clocks``)."""
        while True:
            await self._run_stream_clocks()
            deadline = next_deadline(self._streams.values())
            if deadline is not None:
                timeout: float | None = max(0.0, deadline - time.monotonic())
            else:
                timeout = None if self._streams else self.settings.idle_timeout_s
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout=timeout)
            except TimeoutError:
                if self._streams:
                    continue
                await self.send(wire.error("idle_timeout", "no activity", fatal=True))
                with contextlib.suppress(Exception):
                    await self.websocket.close(CLOSE_NORMAL)
                return
            if message["type"] == "websocket.disconnect":
                return
            received_at = time.monotonic()
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            try:
                await self._dispatch(self._gate.decode(data, self._streams), received_at)
            except TTSError as error:
                stream = getattr(error, "stream", None)
                retry_after_ms = getattr(error, "retry_after_ms", None)
                await self.send(
                    wire.error(
                        error.code, error.message, stream=stream, retry_after_ms=retry_after_ms
                    )
                )

    async def _run_stream_clocks(self) -> None:
        """End the streams whose clocks ran out (``app.open_stream``), ``done`` reason
        ``timeout``: one without text as its ``end`` would (its text is spoken), one whose
        client stopped playing as a ``cancel`` would."""
        now = time.monotonic()
        for stream in list(self._streams.values()):
            stalled = stream.stall_deadline()
            if stalled is not None and stalled <= now:
                result = await self._drop(stream, "timeout")
                if result is not None:
                    await self.send(done_message(result))
            elif stream.idle_expired(now):
                stream.ended = True
                await stream.segmenter.send(EndIn(now, reason="timeout"))

    # --- messages --------------------------------------------------------------------------

    def _stream(self, name: str) -> OpenStream:
        stream = self._streams.get(name)
        if stream is None:
            raise wire.ProtocolError("unknown_stream", f"no open stream {name!r}", stream=name)
        return stream

    async def _dispatch(self, message: wire.ClientMessage, received_at: float) -> None:
        if isinstance(message, wire.Start):
            await self._start(message, received_at)
        elif isinstance(message, wire.Text):
            stream = self._open_stream(message.stream)
            if stream.chars + len(message.text) > self.settings.max_stream_chars:
                raise wire.ProtocolError(
                    "text_too_long",
                    f"a stream carries at most {self.settings.max_stream_chars} characters",
                    stream=message.stream,
                )
            stream.chars += len(message.text)
            if message.flush or not message.text.isspace():  # whitespace alone holds nothing
                stream.heard(received_at)
            await stream.segmenter.send(TextIn(message.text, received_at))
            if message.flush:
                await stream.segmenter.send(FlushIn(None, received_at))
        elif isinstance(message, wire.Flush):
            stream = self._open_stream(message.stream)
            stream.heard(received_at)
            await stream.segmenter.send(FlushIn(message.flush_id, received_at))
        elif isinstance(message, wire.End):
            stream = self._open_stream(message.stream)
            stream.ended = True
            await stream.segmenter.send(EndIn(received_at))
        elif isinstance(message, wire.Cancel):
            await self._cancel(self._stream(message.stream))
        elif isinstance(message, wire.Played):
            chunker = self._stream(message.stream).chunker
            chunker.on_played(message.samples, message.underruns, message.buffered_ms)
        else:
            await self.send(wire.pong(message.t))

    def _open_stream(self, name: str) -> OpenStream:
        stream = self._stream(name)
        if stream.ended:
            raise wire.ProtocolError(
                "stream_ended",
                f"stream {name!r} has ended (by 'end', or after {self.settings.stream_idle_s:g} s "
                "without text)",
                stream=name,
            )
        return stream

    async def _start(self, message: wire.Start, received_at: float) -> None:
        if message.stream in self._streams:
            raise wire.ProtocolError(
                "stream_exists", f"stream {message.stream!r} is already open", stream=message.stream
            )
        if len(self._streams) >= self.settings.max_streams_per_connection:
            raise wire.ProtocolError(
                "too_many_streams",
                f"at most {self.settings.max_streams_per_connection} streams per connection",
                stream=message.stream,
            )
        self.drain.check(message.stream)
        if message.resume is not None and message.resume.chars > self.settings.max_stream_chars:
            raise wire.ProtocolError(
                wire.BAD_MESSAGE,
                f"'resume' is beyond the longest stream ({self.settings.max_stream_chars} "
                "characters)",
                stream=message.stream,
            )
        voice = message.voice or self.settings.default_voice
        try:
            self.pipeline.synthesizer.voices.check(voice)
            if message.timestamps == "word":
                self.pipeline.synthesizer.check_timestamps()
        except TTSError as error:
            raise wire.ProtocolError(error.code, error.message, stream=message.stream) from None
        self.client_streams.open(self.address, message.stream)
        key = StreamKey(self.session, message.stream)
        try:
            await self.pipeline.admit(key)  # BusyError beyond capacity
            try:
                await self._open(key, message, voice)
            except BaseException:
                self.pipeline.release(key)
                raise
        except BaseException:
            self.client_streams.close(self.address)
            raise
        self._idle.clear()
        self.pipeline.metrics.observe(StreamStarted(key, received_at))

    async def _open(self, key: StreamKey, message: wire.Start, voice: str) -> None:
        """Start the stream's segmenter and chunker and register it with the pipeline."""
        sizer = FrameSizer.fixed_at(message.frame_ms) if message.frame_ms else FrameSizer()
        trace = self.tracing.stream(self._span, key, voice, message.encoding)
        chunker = StreamChunker(
            key,
            send=self.send,
            demand=self.pipeline.scheduler.control,
            finished=self._on_finished,
            generated=self.pipeline.generated,
            metrics=self.pipeline.metrics,
            trace=trace,
            encoding=cast(Encoding, message.encoding),  # validated by the wire decoder
            frame_sizer=sizer,
            max_lead_seconds=self.pipeline.max_lead_seconds,
            resume=message.resume,
        )
        resume = message.resume
        segmenter = SegmenterActor(
            key,
            voice=voice,
            speed=message.speed,
            submit=self.pipeline.scheduler.send,
            mark=chunker.send,
            first_index=0 if resume is None else resume.seg,
            char_offset=0 if resume is None else resume.chars,
            timestamps=message.timestamps == "word",
            policy=self._segmenter_policy,
            first_window=self.settings.first_segment == "windowed" and resume is None,
        )
        assert self._supervisor is not None
        try:
            await self._supervisor.start(chunker)
            await self._supervisor.start(segmenter)
        except BaseException:
            trace.end(None)
            raise
        idle_s = self.settings.stream_idle_s
        stream = OpenStream(
            key,
            segmenter,
            chunker,
            trace,
            idle_s=idle_s,
            idle_deadline=time.monotonic() + idle_s,
            chars=0 if resume is None else resume.chars,  # the limit counts the whole stream
        )
        self.pipeline.register(key, chunker, frees_at=stream.frees_at)
        self._streams[message.stream] = stream

    def _on_finished(self, result: StreamFinished) -> None:
        """The chunker sent ``done``: observe it and let the reaper free the stream."""
        self.pipeline.metrics.observe(result)
        self._finished.put_nowait(result.key)

    async def _reap_finished(self) -> None:
        while True:
            key = await self._finished.get()
            stream = self._streams.get(key.stream)
            if stream is not None and stream.key == key:
                await self._drop(stream)

    async def _drop(self, stream: OpenStream, reason: str = "cancelled") -> StreamFinished | None:
        """Stop a stream's actors at once and forget it (no ``done`` is sent here).

        Returns the stream's figures, counted with ``reason``, if it had not finished by itself
        (and None if another caller dropped it first).
        """
        if self._streams.get(stream.key.stream) is not stream:
            return None
        del self._streams[stream.key.stream]
        self.client_streams.close(self.address)
        if not self._streams:
            self._idle.set()
        stream.segmenter.stop(drain=False)
        stream.chunker.stop(drain=False)
        try:
            if self._supervisor is not None:
                await self._supervisor.stop_actor(stream.segmenter)
                await self._supervisor.stop_actor(stream.chunker)
        finally:  # last, and even if interrupted: nothing of the stream reaches it after this
            self.pipeline.release(stream.key)
        if stream.chunker.result is not None:
            stream.trace.end(stream.chunker.result)
            return None
        result = stream.chunker.summary(reason)
        stream.trace.end(result)
        self.pipeline.metrics.observe(result)
        return result

    async def _cancel(self, stream: OpenStream) -> None:
        result = await self._drop(stream)
        if result is not None:  # not already finished on its own
            await self.send(done_message(result))


async def stream_endpoint(websocket: WebSocket) -> None:
    """``GET /v1/stream``: accept, speak protocol v1 until the client leaves."""
    service: Service = websocket.app.state.service
    offered = websocket.scope.get("subprotocols") or []
    subprotocol = wire.SUBPROTOCOL if wire.SUBPROTOCOL in offered else None
    await websocket.accept(subprotocol=subprotocol)
    try:
        service.drain.check()
        pipeline = service.pipeline
    except TTSError as error:
        await websocket.send_bytes(
            wire.error(error.code, error.message, fatal=True, retry_after_ms=1000)
        )
        await websocket.close(CLOSE_OVERLOADED)
        return
    await Connection(
        websocket,
        pipeline,
        service.settings,
        service.tracing,
        client_streams=service.client_streams,
        drain=service.drain,
    ).run()

"""The audio chunker: one per stream, from segment audio to paced, adaptive frames.

It shapes each segment (``actors.audio.shape_segment``), keeps segments in order, and sends the
audio as frames that never cross a segment boundary, with gap-free ``seq`` and sample positions.
Frames are paced against a model of the client's playback: at most ``max_lead_seconds`` of audio
is sent ahead of what the client has played (from its ``played`` reports, or, without reports,
assuming real-time playback from the first frame). The chunker tells the scheduler how much audio
the stream holds ahead (``StreamDemand``), so a stream that is far ahead stops being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from actors.audio import (
    Encoding,
    FrameSizer,
    Samples,
    encode_samples,
    shape_head,
    shape_span,
    speech_span,
)
from actors.base import Actor
from actors.messages import (
    EndMarker,
    FlushMarker,
    SegmentAudio,
    SegmentFailed,
    StreamDemand,
    StreamFinished,
    StreamKey,
)
from actors.metrics import MetricsActor
from app import wire
from app.tracing import StreamTrace
from app.tts.engine import SAMPLE_RATE
from app.tts.word_timing import WordTiming

logger = logging.getLogger(__name__)

ChunkerInput = SegmentAudio | SegmentFailed | FlushMarker | EndMarker
SendBytes = Callable[[bytes], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    """A shaped segment waiting to be (fully) sent."""

    audio: SegmentAudio
    samples: Samples
    arrived_at: float
    span: tuple[int, int] | None
    """What shaping kept of the model call's audio (``speech_span``)."""
    offset: int = 0
    started: bool = False
    """Its first frame (or its words) went out."""
    complete: bool = True
    """False while only the segment's first window is here (``SegmentAudio.first_part``)."""


class StreamChunker(Actor[ChunkerInput]):
    """Frames, paces and sends one stream's audio; ends the stream with ``done``."""

    def __init__(
        self,
        key: StreamKey,
        *,
        send: SendBytes,
        demand: Callable[[StreamDemand], None],
        finished: Callable[[StreamFinished], None],
        generated: Callable[[StreamKey], None] | None = None,
        metrics: MetricsActor | None = None,
        trace: StreamTrace | None = None,
        encoding: Encoding = "pcm_s16le",
        frame_sizer: FrameSizer | None = None,
        max_lead_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        resume: wire.Resume | None = None,
    ) -> None:
        """With ``resume`` the stream continues an earlier one's numbering (``wire.Resume``)."""
        super().__init__(name=f"chunker:{key}", mailbox_size=8)
        self.key = key
        self._send = send
        self._demand = demand
        self._finished = finished
        self._generated = generated
        self._metrics = metrics
        self._trace = trace
        self.generation_complete = False
        """Every segment's audio has arrived: the stream needs no more synthesis."""
        self.encoding = encoding
        self.sizer = frame_sizer or FrameSizer()
        self.max_lead_seconds = max_lead_seconds
        self._clock = clock
        self._ready: dict[int, SegmentAudio] = {}
        self._queue: deque[_Pending] = deque()
        self._skip = 0 if resume is None else resume.skip
        """Samples of the first segment the client already has (when resumed)."""
        self._first_segment = 0 if resume is None else resume.seg
        self._next_segment = self._first_segment
        self._flushes: list[FlushMarker] = []
        self._end: EndMarker | None = None
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.seq = 0 if resume is None else resume.seq
        self._first_seq = self.seq
        self._origin = 0 if resume is None else resume.first_pos
        """The ``pos`` of this stream's first frame (not 0 when resumed)."""
        self.sent_samples = self._origin
        """The stream's position: the ``pos`` of the next frame."""
        self.first_sent_at: float | None = None
        self.first_received_at: float | None = None
        self._played: tuple[int, float] | None = None
        self._advanced_at = 0.0
        """When the client's reported position last moved on."""
        self._underruns = 0
        self._gen_seconds = 0.0
        self._flow_pending = False
        self.result: StreamFinished | None = None

    # --- inputs ----------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._pump = asyncio.create_task(self._run_pump(), name=f"pump:{self.key}")

    async def on_stop(self) -> None:
        await self._stop_pump()

    async def _stop_pump(self) -> None:
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
            await asyncio.wait([self._pump])

    async def handle(self, message: ChunkerInput) -> None:
        if isinstance(message, SegmentAudio):
            if message.job.segment.index == self._first_segment:
                self.first_received_at = message.job.received_at
            if message.first_part:
                self._open_segment(message)
            else:
                self._ready[message.job.segment.index] = message
            while self._next_segment in self._ready:
                audio = self._ready.pop(self._next_segment)
                opened = self._queue[-1] if self._queue else None
                if opened is not None and not opened.complete:
                    self._complete_segment(opened, audio)
                else:
                    self._queue.append(self._shaped(audio))
                self._gen_seconds += audio.gen_seconds
                self._next_segment += 1
        elif isinstance(message, SegmentFailed):
            await self._stop_pump()
            await self._fail(message.code, message.message)
            return
        elif isinstance(message, FlushMarker):
            self._flushes.append(message)
        else:
            self._end = message
        self._check_generated()
        self._wake.set()

    def _shaped(self, audio: SegmentAudio) -> _Pending:
        segment = audio.job.segment
        span = speech_span(audio.audio)
        shaped = shape_span(audio.audio, span, segment.boundary, final=segment.final)
        pending = _Pending(audio, shaped, self._clock(), span)
        if segment.index == self._first_segment:
            pending.offset = min(self._skip, len(shaped))
        return pending

    def _open_segment(self, part: SegmentAudio) -> None:
        """The next segment's first window: its samples may go out before the rest is decoded.

        Taken only for the segment due next and only once (a retried job delivers its first
        window again), and only when it holds speech (its lead trim is then known)."""
        index = part.job.segment.index
        opened = self._queue[-1] if self._queue else None
        if index != self._next_segment or (opened is not None and not opened.complete):
            return
        if index == self._first_segment and self._skip:
            return  # resumed inside it: the whole segment's audio is what the client had
        span = speech_span(part.audio)
        if span is None:
            return
        kept = (span[0], max([len(part.audio), *(word.end for word in part.words)]))
        head = shape_head(part.audio, span[0])
        self._queue.append(_Pending(part, head, self._clock(), kept, complete=False))

    def _complete_segment(self, opened: _Pending, audio: SegmentAudio) -> None:
        """The whole segment's audio for a segment whose first window is out: keep the window's
        samples, continue with the whole decode's from the window's end, and shape the end.
        The shaped samples begin with exactly those already sent (same cut, same fade-in)."""
        window = len(opened.audio.audio)
        joined = np.concatenate([opened.audio.audio, audio.audio[window:]])
        start = opened.span[0] if opened.span is not None else 0
        whole = speech_span(joined)
        end = max(whole[1] if whole is not None else len(joined), start + opened.offset)
        segment = audio.job.segment
        shaped = shape_span(joined, (start, end), segment.boundary, final=segment.final)
        opened.audio, opened.samples, opened.span = audio, shaped, (start, end)
        opened.complete = True

    def _check_generated(self) -> None:
        end = self._end
        if self.generation_complete or end is None or self._next_segment < end.segments:
            return
        self.generation_complete = True
        if self._generated is not None:
            self._generated(self.key)

    def on_played(
        self, samples: int, underruns: int | None, buffered_ms: float | None = None
    ) -> None:
        """A ``played`` report from the client: truth about its playback position.

        Each figure is clamped to what the server sent, so no report can move the stream or the
        shared metrics beyond it: the position to the samples sent, the underruns to the frames
        sent (a player's buffer runs dry at most once per frame it got), the buffered audio to
        what is unplayed."""
        now = self._clock()
        position = min(max(samples, self._origin), self.sent_samples)
        if self._played is None or position > self._played[0]:
            self._advanced_at = now
        self._played = (position, now)
        new_underruns = 0
        if underruns is not None:
            reported = min(underruns, self.seq - self._first_seq)
            new_underruns = max(0, reported - self._underruns)
            self._underruns = max(self._underruns, reported)
        underrun = new_underruns > 0
        lead_ms = self.client_lead_seconds() * 1000
        if self._metrics is not None:
            self._metrics.client_reported(new_underruns, lead_ms / 1000)
        in_flight_ms = (
            None if buffered_ms is None else lead_ms - min(max(buffered_ms, 0.0), lead_ms)
        )
        if self.sizer.on_lead(lead_ms, underrun, in_flight_ms):
            self._flow_pending = True
        self._wake.set()

    # --- playback model --------------------------------------------------------------------

    def played_samples(self) -> int:
        """Samples the client has played by now (reported, or assumed real time)."""
        now = self._clock()
        if self._played is not None:
            samples, at = self._played
            estimate = samples + (now - at) * SAMPLE_RATE
        elif self.first_sent_at is not None:
            estimate = self._origin + (now - self.first_sent_at) * SAMPLE_RATE
        else:
            estimate = self._origin
        return int(min(estimate, self.sent_samples))

    def stalled_since(self) -> float | None:
        """When the client stopped playing audio it holds, while the stream still needs
        synthesis (so holds a slot): its reports since then repeat a position short of what it
        was sent. None while it plays, has played all it got, or reports nothing (then real-time
        playback is assumed)."""
        if self._played is None or self.generation_complete:
            return None
        return self._advanced_at if self._played[0] < self.sent_samples else None

    def client_lead_seconds(self) -> float:
        """Audio sent but not yet played: what the client holds in its buffer."""
        return (self.sent_samples - self.played_samples()) / SAMPLE_RATE

    def unsent_samples(self) -> int:
        return sum(len(p.samples) - p.offset for p in self._queue)

    def lead_seconds(self) -> float:
        """All audio ahead of the client's playback, sent or still here."""
        return self.client_lead_seconds() + self.unsent_samples() / SAMPLE_RATE

    # --- the pump --------------------------------------------------------------------------

    async def _run_pump(self) -> None:
        """Send frames as they may go; a failure ends the stream with an error frame."""
        try:
            await self._pump_loop()
        except Exception as error:
            logger.exception("stream %s failed while sending", self.key)
            await self._fail("internal", f"sending audio failed: {error}")

    async def _fail(self, code: str, message: str) -> None:
        if self.result is None:
            await self._send(wire.error(code, message, stream=self.key.stream, fatal=False))
            await self._finish("error")

    async def _pump_loop(self) -> None:
        while True:
            await self._wait_for_wake(self._demand_recheck_seconds())
            if self._flow_pending:
                self._flow_pending = False
                await self._send_flow()
            await self._send_ready_frames()
            self._report_demand()
            await self._acknowledge_flushes()
            if self._all_sent():
                assert self._end is not None
                await self._finish(self._end.reason)
                return

    async def _send_ready_frames(self) -> None:
        while self._queue:
            lead = self.client_lead_seconds()
            if lead >= self.max_lead_seconds:
                self._report_demand()
                await self._wait_for_wake(lead - self.max_lead_seconds + self.sizer.frame_ms / 1000)
                continue
            pending = self._queue[0]
            if not pending.complete and pending.offset >= len(pending.samples):
                return  # the first window is out; the rest of the segment is being decoded
            if not pending.started:
                pending.started = True
                await self._send_words(pending)
            count = min(self.sizer.frame_samples(), len(pending.samples) - pending.offset)
            frame = pending.samples[pending.offset : pending.offset + count]
            if count:  # a silent segment shapes to nothing: no empty audio frame for it
                await self._send_frame(pending.audio, frame)
            pending.offset += count
            if pending.complete and pending.offset >= len(pending.samples):
                self._queue.popleft()
                await self._send_segment_done(pending)
                await self._acknowledge_flushes()

    async def _send_frame(self, audio: SegmentAudio, frame: Samples) -> None:
        message = wire.audio(
            self.key.stream,
            self.seq,
            audio.job.segment.index,
            self.sent_samples,
            self.encoding,
            SAMPLE_RATE,
            payload := encode_samples(frame, self.encoding),
        )
        started = self._clock()
        await self._send(message)
        if self._metrics is not None:
            self._metrics.frame_sent(len(payload))
        if self.first_sent_at is None:
            self.first_sent_at = self._clock()
        self.seq += 1
        self.sent_samples += len(frame)
        changed = self.sizer.on_send(self._clock() - started)
        if self._played is None:
            changed = self.sizer.on_lead(self.client_lead_seconds() * 1000, False) or changed
        if changed or self._flow_pending:
            self._flow_pending = False
            await self._send_flow()

    async def _send_words(self, pending: _Pending) -> None:
        """The segment's word timings, just ahead of its first frame (when it has words)."""
        audio, span = pending.audio, pending.span
        if not audio.words or span is None:
            return
        segment = audio.job.segment
        origin = self.sent_samples - pending.offset  # the segment's first sample on the stream
        items = [word_on_stream(word, span, origin, segment.char_start) for word in audio.words]
        await self._send(wire.words(self.key.stream, segment.index, items))

    async def _send_flow(self) -> None:
        lead_ms = round(self.client_lead_seconds() * 1000, 1)
        await self._send(
            wire.flow(self.key.stream, self.sizer.frame_ms, lead_ms, self.sizer.reason)
        )

    async def _send_segment_done(self, pending: _Pending) -> None:
        if self._trace is not None:
            self._trace.segment(pending.audio, pending.arrived_at, self._clock())
        segment = pending.audio.job.segment
        await self._send(
            wire.segment(
                self.key.stream,
                segment.index,
                segment.text,
                segment.char_start,
                segment.char_end,
                len(pending.samples),
                round(pending.audio.gen_seconds * 1000, 1),
                pending.audio.provider,
            )
        )

    async def _wait_for_wake(self, at_most: float | None) -> None:
        """Until something arrives (audio, a report, a marker), or ``at_most`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=at_most)
        self._wake.clear()

    def _demand_recheck_seconds(self) -> float | None:
        """While the stream holds too much audio to be served, when to tell the scheduler again.

        The scheduler holds a stream that reported a lead above ``max_lead_seconds``; as the
        client plays, the lead shrinks without any message arriving here, so the chunker wakes
        itself when it should have fallen below the bound and reports it.
        """
        if self._all_sent():
            return None
        excess = self.lead_seconds() - self.max_lead_seconds
        return excess + 0.01 if excess >= 0 else None

    def _report_demand(self) -> None:
        self._demand(StreamDemand(self.key, self.lead_seconds(), self._clock()))

    async def _acknowledge_flushes(self) -> None:
        sent_through = self._next_segment - sum(p.complete for p in self._queue) - 1
        while self._flushes and self._flushes[0].after_segment <= sent_through:
            marker = self._flushes.pop(0)
            await self._send(wire.flushed(self.key.stream, marker.flush_id))

    def _all_sent(self) -> bool:
        end = self._end
        return end is not None and not self._queue and self._next_segment >= end.segments

    def ttfa_seconds(self) -> float | None:
        if self.first_sent_at is None or self.first_received_at is None:
            return None
        return self.first_sent_at - self.first_received_at

    def summary(self, reason: str) -> StreamFinished:
        """The stream's figures so far, as they go into ``done`` and the metrics."""
        return StreamFinished(
            self.key,
            reason,
            self.sent_samples,
            self.ttfa_seconds(),
            self._gen_seconds,
            (self.sent_samples - self._origin) / SAMPLE_RATE,
        )

    async def _finish(self, reason: str) -> None:
        self.result = self.summary(reason)
        await self._send(done_message(self.result))
        self._finished(self.result)


def done_message(result: StreamFinished) -> bytes:
    """The wire ``done`` frame for a finished stream."""
    ttfa, rtf = result.ttfa_seconds, result.rtf
    return wire.done(
        result.key.stream,
        result.reason,
        result.samples,
        None if ttfa is None else round(ttfa * 1000, 1),
        None if rtf is None else round(rtf, 4),
    )


def word_on_stream(
    word: WordTiming, span: tuple[int, int], origin: int, char_offset: int
) -> tuple[str, int, int, int, int]:
    """A word timed on its model call's audio, placed on the stream's timeline.

    ``span`` is the part of the call that shaping kept (``speech_span``), ``origin`` the
    stream position of the segment's first sample, ``char_offset`` the segment's start in the
    stream's text. Times inside trimmed silence are clamped to the kept speech."""
    cut, kept = span[0], span[1] - span[0]
    start = origin + min(max(word.start - cut, 0), kept)
    end = origin + min(max(word.end - cut, 0), kept)
    return (word.text, start, end, word.char_start + char_offset, word.char_end + char_offset)

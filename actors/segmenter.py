"""The text segmenter actor: one per stream, text pieces in, segment jobs out.

The cutting rules live in ``actors.segmentation`` (pure and synchronous); this actor stamps each
segment with the arrival time of the message that completed it (where time to first audio starts),
hands jobs to the scheduler and tells the stream's chunker about flushes and the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.base import Actor
from actors.messages import EndIn, EndMarker, FlushIn, FlushMarker, SegmentJob, StreamKey, TextIn
from actors.segmentation import Segmenter, SegmenterPolicy, TextSegment

SegmenterInput = TextIn | FlushIn | EndIn


class SegmenterActor(Actor[SegmenterInput]):
    """Feeds one stream's text through a ``Segmenter`` and submits what it cuts."""

    def __init__(
        self,
        key: StreamKey,
        *,
        voice: str,
        speed: float,
        submit: Callable[[SegmentJob], Awaitable[None]],
        mark: Callable[[FlushMarker | EndMarker], Awaitable[None]],
        policy: SegmenterPolicy | None = None,
        mailbox_size: int = 64,
        first_index: int = 0,
        char_offset: int = 0,
        timestamps: bool = False,
        first_window: bool = False,
    ) -> None:
        """``first_index`` and ``char_offset`` resume a stream (see ``Segmenter``);
        ``timestamps`` asks for each segment's word timings; ``first_window`` for segment 0's
        audio to start from a first window (``SegmentJob.first_window``)."""
        super().__init__(name=f"segmenter:{key}", mailbox_size=mailbox_size)
        self.key = key
        self.voice = voice
        self.speed = speed
        self.timestamps = timestamps
        self.first_window = first_window
        self._submit = submit
        self._mark = mark
        self.segmenter = Segmenter(
            policy or SegmenterPolicy(), first_index=first_index, char_offset=char_offset
        )
        self.segments = first_index
        """Index of the next segment (segments before a resume point count)."""

    async def _emit(self, segments: list[TextSegment], received_at: float) -> None:
        for segment in segments:
            job = SegmentJob(
                self.key,
                segment,
                self.voice,
                self.speed,
                received_at,
                timestamps=self.timestamps,
                first_window=self.first_window and segment.index == 0,
            )
            await self._submit(job)
            self.segments += 1

    async def handle(self, message: SegmenterInput) -> None:
        if isinstance(message, TextIn):
            await self._emit(self.segmenter.feed(message.text), message.received_at)
        elif isinstance(message, FlushIn):
            await self._emit(self.segmenter.flush(), message.received_at)
            await self._mark(FlushMarker(message.flush_id, self.segments - 1))
        else:
            await self._emit(self.segmenter.end(), message.received_at)
            await self._mark(EndMarker(self.segments, message.reason))

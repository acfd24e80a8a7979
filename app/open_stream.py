"""A stream open on a WebSocket connection: its actors, its trace, the text it has carried, and
the clock that ends it when its text stops.

A stream holds a synthesis slot from its ``start`` until its last segment is made. The last
segment cannot be made before the stream has ended, nor (as synthesis is paced by playback)
before its client has played to within the work-ahead lead of it. So a stream that never gets
its ``end``, or whose client stops playing and says so in its ``played`` reports, would hold its
slot for as long as its connection lives. Two clocks of ``KOKORO_STREAM_IDLE_S`` stop that:

- idle: from the ``start``, restarted by every ``text`` that is not only whitespace and every
  ``flush``; when it runs out the connection ends the stream as ``end`` would (its text is
  spoken) and ``done`` says ``timeout``;
- stalled: from the moment the client's reported position stopped moving while it held audio
  not yet played (``StreamChunker.stalled_since``) and the stream still needed synthesis; when
  it runs out the stream is dropped like a ``cancel``, and ``done`` says ``timeout``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from actors.chunker import StreamChunker
from actors.messages import StreamKey
from actors.segmenter import SegmenterActor
from app.tracing import StreamTrace


@dataclass(slots=True)
class OpenStream:
    key: StreamKey
    segmenter: SegmenterActor
    chunker: StreamChunker
    trace: StreamTrace
    idle_s: float
    """How long the stream may go without text before it is ended."""
    idle_deadline: float
    """When (monotonic) it is ended unless text comes first."""
    chars: int = 0
    """Characters the stream has carried (a resumed stream's count starts at its resume point)."""
    ended: bool = False

    def heard(self, at: float) -> None:
        """Text or a flush arrived at ``at``: the idle clock starts again."""
        self.idle_deadline = at + self.idle_s

    def idle_expired(self, now: float) -> bool:
        """The stream may still get text, and has had none for ``idle_s``."""
        return not self.ended and self.idle_deadline <= now

    def stall_deadline(self) -> float | None:
        """When the stream is dropped unless its client plays on (None: it is not stalled)."""
        since = self.chunker.stalled_since()
        return None if since is None else since + self.idle_s

    def next_deadline(self) -> float | None:
        """The first of its clocks to run out (None: neither runs)."""
        deadlines = [self.stall_deadline(), None if self.ended else self.idle_deadline]
        return min((deadline for deadline in deadlines if deadline is not None), default=None)

    def frees_at(self) -> float | None:
        """The idle deadline while the stream may still get text; None once it has ended."""
        return None if self.ended else self.idle_deadline


def next_deadline(streams: Iterable[OpenStream]) -> float | None:
    """The first deadline of any stream's clocks (None: no clock runs)."""
    deadlines = (stream.next_deadline() for stream in streams)
    return min((deadline for deadline in deadlines if deadline is not None), default=None)

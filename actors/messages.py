"""Every message the pipeline's actors exchange: frozen, slotted dataclasses.

Three kinds: control messages (travel on an actor's control lane and never wait behind data),
data messages (text, segment jobs, audio) and events (observations for the metrics actor).
These are internal; the wire format lives in ``app.wire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from actors.segmentation import TextSegment
from app.tts.word_timing import WordTiming


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    """A stream is named by the client, unique within its connection."""

    session: str
    stream: str

    def __str__(self) -> str:
        return f"{self.session}/{self.stream}"


# --- control ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CancelStream:
    """Drop the stream's queued work and abort its in-flight inference where possible."""

    key: StreamKey


@dataclass(frozen=True, slots=True)
class WorkerIdle:
    """An inference actor finished its job and can take another.

    After a synthesized job it also says what the job cost (``gen_seconds`` for ``chars``
    characters, giving ``audio_seconds``): the scheduler estimates from it how long queued
    segments will take and how much audio the sessions can produce per second.
    """

    worker: str
    gen_seconds: float = 0.0
    chars: int = 0
    audio_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    """An inference actor's engine raised or timed out on ``job``. None of the job's audio was
    delivered, so the job can run again elsewhere. The actor is out of rotation until a health
    probe succeeds; it then sends ``WorkerIdle``."""

    worker: str
    job: SegmentJob
    reason: str


@dataclass(frozen=True, slots=True)
class WorkerProbeFailed:
    """A failed inference actor's health probe failed too: it stays out of rotation."""

    worker: str


@dataclass(frozen=True, slots=True)
class StreamDemand:
    """The stream's client is running low (or not): re-evaluate whether its next job may run.

    ``lead_seconds`` is the audio the client holds ahead of playback at ``at`` (monotonic).
    """

    key: StreamKey
    lead_seconds: float
    at: float


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextIn:
    text: str
    received_at: float


@dataclass(frozen=True, slots=True)
class FlushIn:
    flush_id: str | int | None
    received_at: float


@dataclass(frozen=True, slots=True)
class EndIn:
    """No more text: speak the rest. ``reason`` is the one ``done`` gives once it is all sent:
    ``complete`` for the client's ``end``, ``timeout`` for a stream that went without text too
    long."""

    received_at: float
    reason: str = "complete"


@dataclass(frozen=True, slots=True)
class SegmentJob:
    """One segment to synthesize. ``received_at`` is when the text that completed it arrived."""

    key: StreamKey
    segment: TextSegment
    voice: str
    speed: float
    received_at: float
    deadline: float = 0.0
    queued_at: float = 0.0
    attempt: int = 0
    """0 for the first try; a job whose worker failed is retried with ``attempt + 1``."""
    timestamps: bool = False
    """Time the segment's words (``SegmentAudio.words``)."""
    first_window: bool = False
    """Start its audio from a first window of frames where the engine can
    (``Synthesizer.render_first_window``): the segment arrives in two ``SegmentAudio``."""


@dataclass(frozen=True, slots=True, eq=False)
class SegmentAudio:
    """A segment's raw model audio and what it cost."""

    job: SegmentJob
    audio: npt.NDArray[np.float32]
    gen_seconds: float
    queue_seconds: float
    provider: str
    engine_seconds: float = 0.0
    """The model call's share of ``gen_seconds`` (the rest: normalising and phonemizing)."""
    solo: bool = False
    """No other model call of the pipeline ran at any moment of this one."""
    words: tuple[WordTiming, ...] = ()
    """With ``job.timestamps``: samples index ``audio``, chars the segment's text."""
    first_part: bool = False
    """The first window's audio: the segment's first samples. The whole segment's audio follows
    in another ``SegmentAudio`` that begins with them (a retried job's may begin with its own
    window: the stream keeps the one it started with)."""


@dataclass(frozen=True, slots=True)
class SegmentFailed:
    job: SegmentJob
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class FlushMarker:
    """Acknowledge ``flush_id`` once every segment up to ``after_segment`` has been sent."""

    flush_id: str | int | None
    after_segment: int


@dataclass(frozen=True, slots=True)
class EndMarker:
    """The stream has no more text; ``segments`` is how many segments it produced in all, and
    ``reason`` the one its ``done`` gives (``EndIn.reason``)."""

    segments: int
    reason: str = "complete"


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentGenerated:
    key: StreamKey
    segment: int
    gen_seconds: float
    queue_seconds: float
    audio_seconds: float
    provider: str
    engine_seconds: float = 0.0
    solo: bool = False


@dataclass(frozen=True, slots=True)
class StreamFinished:
    key: StreamKey
    reason: str
    samples: int
    """The stream's final position: samples sent, plus those before its resume point."""
    ttfa_seconds: float | None
    gen_seconds: float
    audio_seconds: float
    """Audio this stream sent itself."""

    @property
    def rtf(self) -> float | None:
        return self.gen_seconds / self.audio_seconds if self.audio_seconds > 0 else None


@dataclass(frozen=True, slots=True)
class StreamStarted:
    key: StreamKey
    at: float = field(default=0.0)


Event = SegmentGenerated | StreamFinished | StreamStarted

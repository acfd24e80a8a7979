"""Turning one model call's audio into a stream's continuous audio, and that into frames.

Every Kokoro call renders about 0.27 s of silence before the speech and 0.4-0.7 s after it.
Joined as they come, segments would sound like separate utterances. ``shape_segment`` trims that
silence (keeping a short margin and a fade, so there is no click) and appends a pause sized by the
punctuation that ended the segment. The function is pure and deterministic, so a streamed stream
can be reproduced sample for sample offline.

``FrameSizer`` decides how long each frame is: short while the client has little audio buffered
(the first frame leaves at once, an underrun recovers fast), longer when the client is
comfortably ahead or the socket drains slowly, to cut per-message overhead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.audio_formats import to_pcm16
from app.tts.engine import SAMPLE_RATE

Samples = npt.NDArray[np.float32]
Encoding = Literal["pcm_s16le", "f32le"]
ENCODINGS: tuple[Encoding, ...] = ("pcm_s16le", "f32le")
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "f32le": 4}

SILENCE_DBFS = -60.0
"""A 10 ms window quieter than this (RMS) counts as silence when trimming."""
WINDOW = SAMPLE_RATE // 100
LEAD_MARGIN = SAMPLE_RATE * 20 // 1000
TAIL_MARGIN = SAMPLE_RATE * 40 // 1000
FADE = SAMPLE_RATE * 5 // 1000
PAUSE_MS = {"sentence": 320, "clause": 160, "word": 0}
"""Silence appended after a segment, by what ended it (none after the stream's last segment)."""


def _speech_bounds(audio: Samples) -> tuple[int, int] | None:
    """First and last sample of the 10 ms windows louder than ``SILENCE_DBFS``."""
    count = len(audio) // WINDOW
    if count == 0:
        return None
    windows = audio[: count * WINDOW].reshape(count, WINDOW).astype(np.float64)
    rms = np.sqrt(np.mean(windows * windows, axis=1))
    loud = np.flatnonzero(rms > 10 ** (SILENCE_DBFS / 20))
    if len(loud) == 0:
        return None
    return int(loud[0]) * WINDOW, (int(loud[-1]) + 1) * WINDOW


def speech_span(audio: Samples) -> tuple[int, int] | None:
    """The part of a model call's audio that ``shape_segment`` keeps (None: all silence).

    A sample ``i`` of the call is sample ``i - start`` of the shaped segment."""
    bounds = _speech_bounds(audio)
    if bounds is None:
        return None
    return max(bounds[0] - LEAD_MARGIN, 0), min(bounds[1] + TAIL_MARGIN, len(audio))


def shape_segment(audio: Samples, boundary: str, *, final: bool) -> Samples:
    """Trim the model's silence, fade the cut edges, and append the pause for ``boundary``."""
    return shape_span(audio, speech_span(audio), boundary, final=final)


def shape_span(
    audio: Samples, span: tuple[int, int] | None, boundary: str, *, final: bool
) -> Samples:
    """``shape_segment`` for a caller that has ``speech_span(audio)`` already."""
    if span is None:
        return np.zeros(0, dtype=np.float32)
    start, end = span
    speech = shape_head(audio[:end], start)
    fade = min(FADE, len(speech) // 2)
    if fade:
        speech[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    pause = 0 if final else PAUSE_MS.get(boundary, 0) * SAMPLE_RATE // 1000
    return np.concatenate([speech, np.zeros(pause, dtype=np.float32)])


def shape_head(audio: Samples, start: int) -> Samples:
    """``audio`` cut at ``start`` and faded in, nothing done at its end: the first samples of a
    segment whose end is not here yet (``shape_span`` of the whole begins with the same samples
    when the head is at least two fades long)."""
    speech = audio[start:].astype(np.float32, copy=True)
    fade = min(FADE, len(speech) // 2)
    if fade:
        speech[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
    return speech


def encode_samples(samples: Samples, encoding: Encoding) -> bytes:
    """Little-endian 16-bit PCM (clipped) or 32-bit float bytes."""
    if encoding == "f32le":
        return samples.astype("<f4").tobytes()
    return to_pcm16(samples).tobytes()


@dataclass(slots=True)
class FrameSizer:
    """Adaptive frame duration: small at start and after underruns, larger when safely ahead."""

    min_ms: int = 20
    start_ms: int = 40
    max_ms: int = 200
    comfortable_lead_ms: float = 1000.0
    slow_send_ratio: float = 0.5
    """A send that takes longer than this share of the frame's duration means a slow socket."""
    fixed: bool = False
    frame_ms: int = 0
    reason: str = "start"
    backlog_ms: float = 500.0
    """Audio in the network (sent, not yet in the client's buffer) above which the link is slow."""
    congested: bool = False
    """The last frame took long to write: the socket, not the client's buffer, limits."""
    backlogged: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.min_ms <= self.start_ms <= self.max_ms:
            raise ValueError("frame sizes must satisfy 0 < min_ms <= start_ms <= max_ms")
        self.frame_ms = self.start_ms

    @classmethod
    def fixed_at(cls, frame_ms: int) -> FrameSizer:
        """A client that asked for a frame size gets exactly that."""
        return cls(min_ms=frame_ms, start_ms=frame_ms, max_ms=frame_ms, fixed=True)

    def frame_samples(self) -> int:
        return SAMPLE_RATE * self.frame_ms // 1000

    def _set(self, frame_ms: int, reason: str) -> bool:
        frame_ms = max(self.min_ms, min(self.max_ms, frame_ms))
        if self.fixed or frame_ms == self.frame_ms:
            return False
        self.frame_ms, self.reason = frame_ms, reason
        return True

    def on_lead(self, lead_ms: float, underrun: bool, in_flight_ms: float | None = None) -> bool:
        """Adapt to the client's buffer; True when the frame size changed.

        ``lead_ms`` is audio sent but not yet played; ``in_flight_ms``, where the client
        reports its own buffer, is the part of it still in the network. A backlog there, or a
        socket that drains slowly, means the link is the bottleneck: frames then grow, since
        smaller ones would only add overhead to a link that is already too slow.
        """
        self.backlogged = in_flight_ms is not None and in_flight_ms > self.backlog_ms
        if self.backlogged:
            return self._set(self.frame_ms * 2, "slow_network")
        if self.congested:
            return False
        if underrun:
            return self._set(self.min_ms, "underrun")
        if lead_ms >= self.comfortable_lead_ms:
            return self._set(self.frame_ms * 2, "lead")
        if lead_ms < self.comfortable_lead_ms / 4:
            return self._set(self.frame_ms // 2, "low_lead")
        return False

    def on_send(self, send_seconds: float) -> bool:
        """A socket that drains slowly gets bigger frames (fewer, larger writes)."""
        self.congested = send_seconds > self.slow_send_ratio * self.frame_ms / 1000
        if self.congested:
            return self._set(self.frame_ms * 2, "slow_socket")
        return False

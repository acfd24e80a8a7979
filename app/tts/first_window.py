"""How much of a segment to decode first, so its audio can start before the whole is decoded.

A windowed engine (``EngineConfig.windowed``) runs the text side once, decodes a first window
of frames and hands its audio on, then decodes the whole segment and continues from the first
window's end. ``python -m app bench windowed`` measured why the whole: every norm in the decoder
takes its statistics over the frames it is given, so a rest decoded from fewer frames (even
with 60 frames of context before it, or in several windows) sounds further from the whole call
than the voice's neighbouring style row, while a short first window followed by the whole
stays well within it.

The first window must last until the whole decode is done, or the listener hears a gap: its
audio, less the lead silence the chunker trims, must cover the whole segment's decode at the
engine's recent speed (``Engine.seconds_per_frame``), with a margin. With ``r`` the decode's
seconds per second of audio, that is ``1.25 r`` of the segment (plus the lead): a slow engine or
a short segment leaves too little to gain, and the segment is decoded whole.
"""

from __future__ import annotations

import math

FRAME_SECONDS = 0.025
"""One frame: 600 samples at 24 kHz."""
MIN_FIRST_FRAMES = 60
"""The shortest first window (1.5 s): shorter ones measured further from the whole call."""
LOOKAHEAD_FRAMES = 20
"""Frames decoded past the first window's end and dropped, so its last frames hear what follows."""
LEAD_SECONDS = 0.3
"""Silence the model renders before speech, which the chunker trims (about 0.27 s)."""
MARGIN = 1.25
"""The first window covers this many times the whole decode's expected time."""
MAX_SHARE = 0.75
"""Beyond this share of the segment's frames, a first window saves too little: decode it whole."""


def first_window_frames(frames: int, seconds_per_frame: float | None) -> int | None:
    """Frames the first window keeps for a ``frames``-frame segment, or None to decode it whole
    (also when the engine's speed is not known yet)."""
    if seconds_per_frame is None or frames <= 0:
        return None
    whole_decode = seconds_per_frame * frames
    needed = math.ceil((MARGIN * whole_decode + LEAD_SECONDS) / FRAME_SECONDS)
    first = max(MIN_FIRST_FRAMES, needed)
    if first + LOOKAHEAD_FRAMES > MAX_SHARE * frames:
        return None
    return first

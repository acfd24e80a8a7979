"""Encoding float32 audio into the response formats of ``POST /v1/audio/speech``."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soundfile as sf


@dataclass(frozen=True, slots=True)
class AudioFormat:
    name: str
    media_type: str
    container: str | None
    """libsndfile container; ``None`` means raw little-endian 16-bit PCM without a header."""
    subtype: str | None


FORMATS: dict[str, AudioFormat] = {
    fmt.name: fmt
    for fmt in (
        AudioFormat("wav", "audio/wav", "WAV", "PCM_16"),
        AudioFormat("pcm", "audio/pcm", None, None),
        AudioFormat("flac", "audio/flac", "FLAC", "PCM_16"),
        AudioFormat("mp3", "audio/mpeg", "MP3", "MPEG_LAYER_III"),
        AudioFormat("opus", "audio/ogg", "OGG", "OPUS"),
    )
}


def to_pcm16(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    """Float samples in [-1, 1] to 16-bit integers, clipping what lies outside."""
    scaled = np.clip(audio, -1.0, 1.0) * 32767.0
    return np.round(scaled).astype("<i2")


def encode(audio: npt.NDArray[np.float32], sample_rate: int, format_name: str) -> bytes:
    """Encode mono float32 audio into one of ``FORMATS``."""
    fmt = FORMATS[format_name]
    if fmt.container is None:
        return to_pcm16(audio).tobytes()
    buffer = io.BytesIO()
    # 16-bit containers get the same samples as "pcm"; lossy codecs take the float signal.
    samples = to_pcm16(audio) if fmt.subtype == "PCM_16" else audio
    sf.write(buffer, samples, sample_rate, format=fmt.container, subtype=fmt.subtype)
    return buffer.getvalue()

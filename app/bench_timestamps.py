"""``python -m app bench timestamps``: word timings against Whisper's.

Synthesizes a fixed set of sentences with every chosen voice, asks Whisper tiny.en (faster-whisper,
``word_timestamps=True``) where it hears each word, and reports how far apart the two are:
the median absolute difference of word starts and ends, the signed median (a constant offset
shows there), and the same per voice. Whisper's own timings are estimates (its cross-attention
alignment, at 20 ms steps, and it puts the first word's start at the audio's start), so this
measures agreement, not error against ground truth. Needs the ``quality`` extra.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.bench import machine_facts
from app.quality import Transcriber, boundary_errors, signed_boundary_errors
from app.settings import Settings
from app.tts.engine import SAMPLE_RATE
from app.tts.synthesizer import Synthesizer

SENTENCES = (
    "The old lighthouse keeper climbed the stairs every evening before the storm arrived.",
    "She opened the window and listened to the rain falling on the quiet street below.",
    "Our engineers measured the delay twice, and both results agreed within a few milliseconds.",
    "A small boat drifted slowly across the harbor while the gulls circled overhead.",
    "Please remember to bring your notebook, a pencil, and something warm to drink.",
    "The museum opens at nine in the morning and closes early on Sundays.",
    "He reached the summit just as the sun rose over the distant mountains.",
    "Reading the instructions carefully would have saved them several hours of work.",
)


def timed_words(
    synthesizer: Synthesizer, sentence: str, voice: str
) -> tuple[list[tuple[str, float, float]], Any]:
    """Our words (text, start s, end s) for ``sentence`` and the audio they time."""
    result = synthesizer.render(sentence, voice, 1.0, timestamps=True)
    words = [(w.text, w.start / SAMPLE_RATE, w.end / SAMPLE_RATE) for w in result.words]
    return words, result.audio


def measure(
    synthesizer: Synthesizer,
    transcriber: Transcriber,
    voices: Sequence[str],
    sentences: Sequence[str] = SENTENCES,
) -> dict[str, Any]:
    """Per voice and overall: boundaries compared, median |difference| and signed median (ms)."""
    per_voice: dict[str, Any] = {}
    all_abs: list[float] = []
    all_signed: list[float] = []
    for voice in voices:
        absolute: list[float] = []
        signed: list[float] = []
        for sentence in sentences:
            ours, audio = timed_words(synthesizer, sentence, voice)
            heard = transcriber.word_times(audio)
            absolute += boundary_errors(ours, heard)
            signed += signed_boundary_errors(ours, heard)
        per_voice[voice] = _summary(absolute, signed)
        all_abs += absolute
        all_signed += signed
    return {"voices": per_voice, "all": _summary(all_abs, all_signed)}


def _summary(absolute: list[float], signed: list[float]) -> dict[str, Any]:
    return {
        "boundaries": len(absolute),
        "median_abs_ms": round(statistics.median(absolute) * 1000, 1) if absolute else None,
        "median_signed_ms": round(statistics.median(signed) * 1000, 1) if signed else None,
    }


def run_timestamps_bench(
    settings: Settings, voices: Sequence[str], json_path: Path | None
) -> dict[str, Any]:
    synthesizer = Synthesizer.load(settings)
    try:
        for voice in voices:
            synthesizer.voices.check(voice)
        report = measure(synthesizer, Transcriber(), voices)
        report["machine"] = machine_facts(synthesizer)
    finally:
        synthesizer.close()
    report["sentences"] = len(SENTENCES)
    for name, row in [*report["voices"].items(), ("all", report["all"])]:
        print(
            f"{name:>10}: {row['boundaries']} word boundaries, median |ours - Whisper| "
            f"{row['median_abs_ms']} ms, signed median {row['median_signed_ms']} ms"
        )
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report

"""Does the audio say the text? Whisper tiny.en transcribes the real model's speech."""

from __future__ import annotations

import pytest

from app.tts.synthesizer import Synthesizer
from tests.speech import Transcriber, word_error_rate

pytestmark = [pytest.mark.model, pytest.mark.speech]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Dr. Smith paid $3.50 for a cup of coffee on Main Street.",
    "Can you tell me where the nearest train station is?",
    "The meeting starts at 10:30 and should take about 45 minutes.",
    "Mr. Jones sold 1,250 tickets, which is 20% more than last year.",
    "I think we should leave now, e.g. before the traffic gets worse.",
    "My grandmother was born in 1948 in a small village by the sea.",
    "Please remember to water the plants while I am away.",
    (
        "Although the journey had been long and the weather had been terrible for most of the "
        "week, the travellers arrived at the old stone farmhouse in good spirits, and after a warm "
        "supper by the fire they talked late into the night about the mountains they hoped to "
        "climb, the rivers they planned to cross, and the friends they would meet along the way, "
        "while outside the wind kept howling around the chimney and the rain drummed steadily "
        "against the small windows of the kitchen, where the cat slept soundly on a wooden chair "
        "next to the stove, dreaming of the long and lazy summer days that were still to come."
    ),
]


def test_speech_matches_the_text(synthesizer: Synthesizer, transcriber: Transcriber) -> None:
    long_plan = synthesizer.plan(SENTENCES[-1])
    assert len(long_plan) >= 2, "the long sentence exceeds the model's window and is split"
    hypotheses = []
    for text in SENTENCES:
        result = synthesizer.speak_blocking(text, "jf_alpha")
        hypotheses.append(transcriber.transcribe(result.audio))
    wer = word_error_rate(SENTENCES, hypotheses)
    report = "\n".join(
        f"  {ref!r}\n  -> {hyp!r}" for ref, hyp in zip(SENTENCES, hypotheses, strict=True)
    )
    print(f"WER {wer:.3f}\n{report}")
    assert wer <= 0.10, f"WER {wer:.3f}\n{report}"

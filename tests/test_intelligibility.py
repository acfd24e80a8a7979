"""Does the audio say the text? Whisper tiny.en transcribes the real model's speech."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from actors.audio import shape_segment
from actors.segmentation import Segmenter
from app.quality import Transcriber, word_error_rate
from app.settings import Settings
from app.tts.synthesizer import Synthesizer

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


PARAGRAPHS = [
    "He cleaned the great lens, trimmed the wick, and watched the ships pass far out at sea. "
    "Nobody in the village remembered when he had arrived, but everybody knew the sound of his "
    "boots on the iron steps.",
    "Our train leaves at nine in the morning, so please pack your bags tonight. Bring a warm "
    "coat, two pairs of boots and enough snacks for the long ride north.",
    "Extraordinary circumstances required immediate attention from the committee, which met on "
    "Thursday afternoon to discuss the unexpected budget shortfall.",
]


def streamed(synthesizer: Synthesizer, text: str, voice: str) -> npt.NDArray[np.float32]:
    """What a stream fed word by word plays: the server's cuts, one model call each, joined."""
    segmenter = Segmenter()
    segments = [cut for word in text.split(" ") for cut in segmenter.feed(word + " ")]
    segments += segmenter.end()
    pieces = []
    for segment in segments:
        (chunk,) = synthesizer.plan(segment.text)
        style = synthesizer.voices.style(voice, len(chunk.tokens))
        audio = synthesizer.engine.synthesize(chunk.tokens, style, 1.0).audio
        pieces.append(shape_segment(audio, segment.boundary, final=segment.final))
    return np.concatenate(pieces)


def test_the_default_voice_is_the_most_intelligible_when_streamed(
    settings: Settings, synthesizer: Synthesizer, transcriber: Transcriber
) -> None:
    """Why ``jm_kumo`` is the default: streamed in short segments, the embedded voices differ a
    lot in how well a recogniser understands them."""
    rates = {}
    for voice in synthesizer.voices.names:
        heard = [transcriber.transcribe(streamed(synthesizer, p, voice)) for p in PARAGRAPHS]
        rates[voice] = word_error_rate(PARAGRAPHS, heard)
    print("streamed WER by voice:", {voice: round(rate, 3) for voice, rate in rates.items()})
    default = settings.default_voice
    assert rates[default] == min(rates.values()), rates
    assert rates[default] <= 0.05, rates

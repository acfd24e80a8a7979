"""The engine and the whole-text synthesizer on the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.errors import EmptyTextError, UnknownVoiceError
from app.tts.engine import SAMPLE_RATE, Aborted, Engine, EngineConfig
from app.tts.synthesizer import Synthesizer
from app.tts.voices import VoiceBank

pytestmark = pytest.mark.model

SENTENCE = "The weather is lovely today, so we are going to the beach."


def test_session_options_are_explicit(synthesizer: Synthesizer) -> None:
    options = synthesizer.engine.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert synthesizer.engine.providers == ["CPUExecutionProvider"]


def test_thread_setting_reaches_the_session(synthesizer: Synthesizer) -> None:
    engine = Engine(EngineConfig(synthesizer.engine.config.model_path, intra_op_threads=1))
    try:
        assert engine.session.get_session_options().intra_op_num_threads == 1
    finally:
        engine.close()


def test_synthesis_is_deterministic_float32_audio(synthesizer: Synthesizer) -> None:
    first = synthesizer.speak_blocking(SENTENCE, "jf_alpha")
    second = synthesizer.speak_blocking(SENTENCE, "jf_alpha")
    assert first.audio.dtype == np.float32 and first.audio.ndim == 1
    assert 2.0 < first.audio_seconds < 8.0
    assert 0.01 < float(np.sqrt(np.mean(first.audio**2))) < 0.5, "audible, not clipped noise"
    np.testing.assert_array_equal(first.audio, second.audio)
    assert first.rtf > 0


def test_speed_changes_duration(synthesizer: Synthesizer) -> None:
    normal = synthesizer.speak_blocking(SENTENCE, "jf_alpha", 1.0)
    fast = synthesizer.speak_blocking(SENTENCE, "jf_alpha", 1.5)
    assert fast.audio_seconds < 0.8 * normal.audio_seconds
    with pytest.raises(ValueError, match="speed"):
        synthesizer.speak_blocking(SENTENCE, "jf_alpha", 0.0)


def test_blend_differs_from_both_parents_and_is_deterministic(synthesizer: Synthesizer) -> None:
    alpha = synthesizer.speak_blocking(SENTENCE, "jf_alpha").audio
    kumo = synthesizer.speak_blocking(SENTENCE, "jm_kumo").audio
    blend_spec = "jf_alpha:0.5+jm_kumo:0.5"
    blend = synthesizer.speak_blocking(SENTENCE, blend_spec).audio
    again = synthesizer.speak_blocking(SENTENCE, blend_spec).audio
    np.testing.assert_array_equal(blend, again)
    for parent in (alpha, kumo):
        n = min(len(parent), len(blend))
        assert len(parent) != len(blend) or not np.allclose(parent[:n], blend[:n], atol=1e-3)


def test_long_text_is_split_into_several_calls(synthesizer: Synthesizer) -> None:
    text = " ".join([SENTENCE] * 12)
    chunks = synthesizer.plan(text)
    assert len(chunks) >= 2
    assert all(len(chunk.tokens) <= 510 for chunk in chunks)


def test_too_many_tokens_for_one_call_is_refused(synthesizer: Synthesizer) -> None:
    style = synthesizer.voices.style("jf_alpha", 510)
    with pytest.raises(ValueError, match=r"1\.\.510 tokens"):
        synthesizer.engine.synthesize([50] * 511, style, 1.0)


def test_errors_before_work(synthesizer: Synthesizer) -> None:
    with pytest.raises(UnknownVoiceError):
        synthesizer.speak_blocking(SENTENCE, "zz_nobody")
    with pytest.raises(EmptyTextError):
        synthesizer.speak_blocking(" <br/> ", "jf_alpha")


def test_sample_rate_is_24k() -> None:
    assert SAMPLE_RATE == 24_000


def test_user_voices_file_speaks_like_the_voice_it_holds(
    synthesizer: Synthesizer, tmp_path: Path
) -> None:
    path = tmp_path / "voices-v1.0.bin"
    with path.open("wb") as handle:
        np.savez(handle, af_custom=synthesizer.voices.pack("jm_kumo"))
    user = Synthesizer(
        synthesizer.engine, VoiceBank.load(path), synthesizer.phonemizer, synthesizer.tokenizer
    )
    mine = user.speak_blocking("Good evening.", "af_custom").audio
    np.testing.assert_array_equal(
        mine, synthesizer.speak_blocking("Good evening.", "jm_kumo").audio
    )
    with pytest.raises(UnknownVoiceError, match="valid voices: af_custom"):
        user.speak_blocking("Good evening.", "jm_kumo")


def test_a_terminated_run_raises_aborted(synthesizer: Synthesizer) -> None:
    options = ort.RunOptions()
    options.terminate = True
    style = synthesizer.voices.style("jf_alpha", 10)
    with pytest.raises(Aborted):
        synthesizer.engine.synthesize([50] * 10, style, 1.0, options)
    assert len(synthesizer.engine.synthesize([50] * 10, style, 1.0).audio) > 0

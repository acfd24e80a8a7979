"""The engine and the whole-text synthesizer on the real model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from actors.audio import shape_segment
from app.errors import EmptyTextError, UnknownVoiceError
from app.settings import Settings
from app.tts.engine import (
    ALLOW_SPINNING,
    ARENA_SHRINKAGE,
    SAMPLE_RATE,
    Aborted,
    Engine,
    EngineConfig,
    tail_caps,
    with_shrinkage,
)
from app.tts.graph_edits import SAMPLES_PER_FRAME, add_duration_cap, has_duration_cap
from app.tts.synthesizer import Synthesizer
from app.tts.variants import SHIPPED, VariantStore
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


def test_spin_wait_off_reaches_the_session_and_changes_no_sample(
    synthesizer: Synthesizer,
) -> None:
    model_path = synthesizer.engine.config.model_path
    resting = Engine(EngineConfig(model_path, spin_wait=False))
    try:
        options = resting.session.get_session_options()
        assert options.get_session_config_entry(ALLOW_SPINNING) == "0"
        default = synthesizer.engine.session.get_session_options()
        with pytest.raises(RuntimeError, match="does not have configuration"):
            default.get_session_config_entry(ALLOW_SPINNING)  # ONNX Runtime's default: spin
        tokens = synthesizer.plan(SENTENCE)[0].tokens
        style = synthesizer.voices.style("jm_kumo", len(tokens))
        np.testing.assert_array_equal(
            resting.synthesize(tokens, style, 1.0).audio,
            synthesizer.engine.synthesize(tokens, style, 1.0).audio,
        )
    finally:
        resting.close()


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


def test_the_duration_edit_changes_no_sample(synthesizer: Synthesizer, settings: Settings) -> None:
    """On the shipped graph (the default variant is saved with the edit already in it)."""
    shipped = VariantStore(settings.cache_dir).ensure(SHIPPED)
    engine = Engine(replace(synthesizer.engine.config, model_path=shipped))
    assert engine.has_durations and engine.config.tail_frames is None
    unedited = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    tokens = synthesizer.plan(SENTENCE)[0].tokens
    style = synthesizer.voices.style("jf_alpha", len(tokens))
    feed = {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": style.reshape(1, -1),
        "speed": np.array([1.0], dtype=np.float32),
    }
    (reference,) = unedited.run(["audio"], feed)
    edited = engine.synthesize(tokens, style, 1.0)
    np.testing.assert_array_equal(edited.audio, reference.reshape(-1))
    assert edited.durations is not None and len(edited.durations) == len(tokens) + 2
    assert len(edited.audio) == int(edited.durations.sum()) * SAMPLES_PER_FRAME


@pytest.mark.parametrize("text", ["He cleaned the great lens,", SENTENCE])
def test_tail_cap_cuts_the_closing_pause_not_the_speech(
    synthesizer: Synthesizer, text: str
) -> None:
    full_engine = synthesizer.engine
    capped_engine = Engine(replace(full_engine.config, tail_frames=5))
    try:
        tokens = synthesizer.plan(text)[0].tokens
        style = synthesizer.voices.style("jf_alpha", len(tokens))
        capped = capped_engine.synthesize(tokens, style, 1.0)
        full = full_engine.synthesize(tokens, style, 1.0)
    finally:
        capped_engine.close()
    assert full.durations is not None and capped.durations is not None
    caps = tail_caps(tokens, full_engine.config.pause_tokens, 5)[0]
    np.testing.assert_array_equal(capped.durations, np.minimum(full.durations, caps))
    assert capped.durations.sum() < full.durations.sum(), "the closing pause is shorter"
    assert len(capped.audio) == int(capped.durations.sum()) * SAMPLES_PER_FRAME
    heard_capped = shape_segment(capped.audio, "word", final=True)
    heard_full = shape_segment(full.audio, "word", final=True)
    assert abs(len(heard_capped) - len(heard_full)) / SAMPLE_RATE < 0.06, "the speech is kept"


def test_duration_cap_edit_is_idempotent_and_skips_foreign_graphs(
    synthesizer: Synthesizer,
) -> None:
    model = onnx.load(str(synthesizer.engine.config.model_path))
    assert not has_duration_cap(model)
    assert add_duration_cap(model)
    nodes = len(model.graph.node)
    assert add_duration_cap(model) and len(model.graph.node) == nodes
    identity = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "identity",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    assert not add_duration_cap(identity)
    assert not has_duration_cap(identity)


def test_tail_caps_cover_the_end_pad_and_trailing_pauses() -> None:
    caps = tail_caps([50, 16, 60, 3, 16], frozenset({3, 16}), 4)
    assert caps.shape == (1, 7)
    assert list(caps[0]) == [np.inf, np.inf, np.inf, np.inf, 4, 4, 4]
    word_cut = tail_caps([50, 16, 60], frozenset({3, 16}), 4)
    assert np.isinf(word_cut).all(), "the last sound is drawn out over the end pad: no cap"


def test_arena_shrinkage_is_set_once_per_run_options(capfd: pytest.CaptureFixture[str]) -> None:
    twice = ort.RunOptions()
    twice.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
    twice.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
    assert "already exists" in capfd.readouterr().err  # what setting it again costs
    options = with_shrinkage(with_shrinkage(ort.RunOptions()))
    assert options.get_run_config_entry(ARENA_SHRINKAGE) == "cpu:0"
    assert "already exists" not in capfd.readouterr().err

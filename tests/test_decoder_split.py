"""The graph split for windowed decoding: exact halves, continuous phase, window plans."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.settings import Settings
from app.tts.decoder_split import (
    ASR,
    ENERGY,
    F0,
    PHASE_OFFSET,
    SplitError,
    SplitGraph,
    Window,
    decoder_feed,
    join,
    phase_offset,
    split_graph,
    windows,
)
from app.tts.engine import session_options
from app.tts.synthesizer import Synthesizer

# --- pure --------------------------------------------------------------------------------------


def test_windows_cover_every_frame_once_with_context_inside_the_segment() -> None:
    plan = windows(100, first=10, size=40, context=15)
    assert [(w.start, w.end) for w in plan] == [(0, 10), (10, 50), (50, 90), (90, 100)]
    assert [(w.decode_start, w.decode_end) for w in plan] == [
        (0, 25),
        (0, 65),
        (35, 100),
        (75, 100),
    ]
    short_first = windows(100, first=10, size=1000, context=1000, first_context=5)
    assert [(w.decode_start, w.decode_end) for w in short_first] == [(0, 15), (0, 100)]
    with pytest.raises(ValueError, match="first >= 1"):
        windows(100, first=0, size=40, context=0)


def test_a_window_keeps_its_own_frames_of_the_decoded_audio() -> None:
    decoded = np.arange(30 * 600, dtype=np.float32)  # frames 5..35 decoded
    kept = Window(start=10, end=20, decode_start=5, decode_end=35).keep(decoded)
    assert len(kept) == 10 * 600 and kept[0] == 5 * 600


def test_a_window_fades_in_over_the_previous_windows_lookahead() -> None:
    plan = windows(6, first=2, size=4, context=0, first_context=1)  # [0, 3) then [2, 6)
    first = np.full(3 * 600, 1.0, dtype=np.float32)
    second = np.full(4 * 600, 3.0, dtype=np.float32)
    butted = join([first, second], plan)
    np.testing.assert_array_equal(butted, np.r_[np.full(1200, 1.0), np.full(2400, 3.0)])
    faded = join([first, second], plan, fade_frames=5)  # only 1 frame of lookahead to use
    assert len(faded) == 6 * 600
    ramp = faded[1200:1800]
    assert 1.0 < ramp[0] < ramp[-1] < 3.0 and np.all(np.diff(ramp) > 0)
    np.testing.assert_array_equal(faded[1800:], np.full(1800, 3.0))


def test_the_phase_offset_is_the_sum_so_far_modulo_one_source_period() -> None:
    f0 = np.full((1, 10), 240.0, dtype=np.float32)  # 240 Hz: 0.01 cycles per step of h = 1
    offset = phase_offset(f0, 4)
    assert offset.shape == (1, 1, 9)
    summed = 4 * 240.0 * np.arange(1, 10) / 24_000  # 0.04 for h = 1
    expected = summed - np.floor(summed * 300) / 300
    np.testing.assert_allclose(offset.reshape(-1), expected, atol=1e-7)
    assert np.all(offset >= 0) and np.all(offset < 1 / 300)
    assert not phase_offset(f0, 0).any()


def test_a_graph_without_kokoros_tensors_is_refused() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    with pytest.raises(SplitError, match="not the shipped Kokoro graph"):
        split_graph(onnx.helper.make_model(graph))


# --- the model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def halves(synthesizer: Synthesizer) -> Iterator[tuple[SplitGraph, ort.SessionOptions]]:
    config = synthesizer.engine.config
    yield split_graph(onnx.load(str(config.model_path))), session_options(config)


def _session(model: onnx.ModelProto, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


@pytest.mark.model
def test_the_halves_reproduce_the_whole_graph_and_windows_keep_the_phase(
    synthesizer: Synthesizer, settings: Settings, halves: tuple[SplitGraph, ort.SessionOptions]
) -> None:
    split, options = halves
    for model in (split.text, split.decoder):
        onnx.checker.check_model(model)
    assert PHASE_OFFSET in [item.name for item in split.decoder.graph.input]
    text, decoder = _session(split.text, options), _session(split.decoder, options)
    (chunk,) = synthesizer.plan("The harbor lights came on one by one as the ferry docked.")
    style = np.asarray(
        synthesizer.voices.style(settings.default_voice, len(chunk.tokens)), dtype=np.float32
    ).reshape(1, -1)
    feed = {
        "tokens": np.array([[0, *chunk.tokens, 0]], dtype=np.int64),
        "style": style,
        "speed": np.array([1.0], dtype=np.float32),
    }
    whole = synthesizer.engine.synthesize(chunk.tokens, style, 1.0).audio
    asr, f0, energy = text.run([ASR, F0, ENERGY], feed)
    frames = int(asr.shape[2])
    everything = Window(0, frames, 0, frames)
    audio = decoder.run(["audio"], decoder_feed(asr, f0, energy, style, everything))[0]
    np.testing.assert_array_equal(audio, whole)  # bit for bit
    # The second half decoded alone: with the phase carried over it is closer to the whole
    # call's audio than with the harmonic source restarted at zero.
    half = Window(frames // 2, frames, frames // 2 - 20, frames)
    carried = decoder_feed(asr, f0, energy, style, half)
    restarted = {**carried, PHASE_OFFSET: np.zeros_like(carried[PHASE_OFFSET])}
    reference = half.keep(whole[half.decode_start * 600 :])

    def error(window_feed: dict[str, np.ndarray]) -> float:
        kept = half.keep(decoder.run(["audio"], window_feed)[0])
        return float(np.sum((kept - reference) ** 2))

    print(f"carried {error(carried):.3f}, restarted {error(restarted):.3f}")
    assert error(carried) < 0.5 * error(restarted)

"""Graph edits that make model variants (``app.tts.variant_edits``).

Small synthetic graphs check each rewrite exactly; the real model checks that every edit keeps
the audio of real sentences. Tolerances come from measurements: the int8 graph quantizes its
activations on the fly, so any change, even scaling the STFT's input by 1 + 1e-7, moves its
waveform to 21-24 dB SNR (correlation ~0.996, log-mel within ~0.7 dB); edits of the int8 graph
are held to that floor. The float graph is stable (its Snake rewrite is at 113 dB).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from app.settings import default_cache_dir
from app.tts.engine import EngineConfig, session_options
from app.tts.model_store import ensure_default_model
from app.tts.phonemes import Phonemizer, Tokenizer, load_vocab
from app.tts.variant_edits import (
    cheaper_snake,
    dequantize,
    fp16_weights,
    snakes,
    stft_as_conv,
)
from app.tts.voices import VoiceBank

Audio = npt.NDArray[np.float32]
Feed = dict[str, npt.NDArray[np.generic]]

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello there, how are you today?",
)
VOICE = "jf_alpha"
QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM"}


def _session(model: onnx.ModelProto, threads: int = 2) -> ort.InferenceSession:
    options = session_options(EngineConfig(Path("variant.onnx"), intra_op_threads=threads))
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _run(model: onnx.ModelProto, feed: Feed) -> npt.NDArray[np.float32]:
    return np.asarray(_session(model, threads=1).run(None, feed)[0], dtype=np.float32)


def _graph_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: dict[str, list[int | str]],
    initializers: Mapping[str, npt.NDArray[np.generic]],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "synthetic",
        inputs,
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
            for name, shape in outputs.items()
        ],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    return model


# --- synthetic graphs -----------------------------------------------------------------------


def _snake_model(alpha: npt.NDArray[np.float32]) -> onnx.ModelProto:
    """x -> Snake (as the export writes it: Mul, Sin, Pow 2, Mul 1/a, Add) -> y."""
    nodes = [
        helper.make_node("Mul", ["alpha", "x"], ["ax"]),
        helper.make_node("Sin", ["ax"], ["sine"]),
        helper.make_node("Pow", ["sine", "two"], ["square"]),
        helper.make_node("Mul", ["inverse", "square"], ["weighted"]),
        helper.make_node("Add", ["x", "weighted"], ["y"]),
    ]
    channels = alpha.shape[1]
    initializers: dict[str, npt.NDArray[np.generic]] = {
        "alpha": alpha,
        "inverse": (1.0 / (alpha + 1e-9)).astype(np.float32),
        "two": np.array(2.0, np.float32),
    }
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, "time"])
    return _graph_model(nodes, [x], {"y": [1, channels, "time"]}, initializers)


@pytest.mark.parametrize(("degree", "error"), [(3, 8e-5), (4, 1.7e-6), (5, 3e-7)])
def test_cheaper_snake_matches_the_activation(degree: int, error: float) -> None:
    # the model's alphas span -0.026..2.33 (1/a up to 1e4); its inputs -60..60
    alpha = np.array([-0.026, 0.0005, 0.3, 1.0, 2.33], np.float32).reshape(1, -1, 1)
    inverse = 1.0 / (alpha.astype(np.float64) + 1e-9)
    model = _snake_model(alpha)
    before = model.SerializeToString()
    x = np.linspace(-60.0, 60.0, 5 * 40001, dtype=np.float32).reshape(1, 5, -1)

    edited = cheaper_snake(model, degree=degree)

    assert model.SerializeToString() == before, "the input model must not change"
    assert snakes(model) == ["y"]
    assert not any(node.op_type in {"Sin", "Cos"} for node in edited.graph.node)
    original, rewritten = _run(model, {"x": x}), _run(edited, {"x": x})
    exact = x.astype(np.float64) + inverse * np.sin(alpha * x.astype(np.float64)) ** 2
    # sin^2 is off by at most ``error`` (times 1/a), plus float32 rounding of outputs up to 98
    tolerance = 1.5 * error * np.abs(inverse) + 1e-6 * np.abs(exact) + 1e-5
    assert np.all(np.abs(rewritten - exact) < tolerance)
    assert np.all(np.abs(rewritten - original) < tolerance + 4e-6 * np.abs(exact))
    # near 0 the error is relative: a = 0.0005 (1/a = 2000) is not magnified 2000 times
    assert np.abs(rewritten - exact)[0, 1].max() < 1e-4


def test_cheaper_snake_magic_rounding_and_errors() -> None:
    alpha = np.array([0.7, 1.9], np.float32).reshape(1, -1, 1)
    model = _snake_model(alpha)
    x = np.linspace(-20.0, 20.0, 2 * 1001, dtype=np.float32).reshape(1, 2, -1)
    edited = cheaper_snake(model, rounding="magic", degree=4)
    assert np.abs(_run(edited, {"x": x}) - _run(model, {"x": x})).max() < 5e-5
    with pytest.raises(ValueError, match="rounding"):
        cheaper_snake(model, rounding="floor")
    with pytest.raises(ValueError, match="no Snake"):
        cheaper_snake(edited)


def _stft_model(*, split_parts: bool) -> onnx.ModelProto:
    """signal [1, L] -> STFT (n_fft 20, hop 5, Hann) -> either the model's Transpose + Gather
    of real and imaginary parts, or the raw [1, frames, bins, 2] output."""
    nodes = [helper.make_node("STFT", ["signal", "step", "window", "length"], ["spectrum"])]
    outputs: dict[str, list[int | str]] = {"spectrum": [1, "frames", 11, 2]}
    if split_parts:
        nodes += [
            helper.make_node("Transpose", ["spectrum"], ["bins_first"], perm=[0, 2, 1, 3]),
            helper.make_node("Gather", ["bins_first", "zero"], ["real"], axis=3),
            helper.make_node("Gather", ["bins_first", "one"], ["imag"], axis=3),
        ]
        outputs = {"real": [1, 11, "frames"], "imag": [1, 11, "frames"]}
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(20) / 20)).astype(np.float32)
    initializers: dict[str, npt.NDArray[np.generic]] = {
        "step": np.array(5, np.int64),
        "window": window,
        "length": np.array(20, np.int64),
        "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64),
    }
    signal = helper.make_tensor_value_info("signal", TensorProto.FLOAT, [1, "samples"])
    return _graph_model(nodes, [signal], outputs, initializers)


@pytest.mark.parametrize("split_parts", [True, False])
@pytest.mark.parametrize("measured", [True, False])
def test_stft_as_conv_matches_the_stft(split_parts: bool, measured: bool) -> None:
    model = _stft_model(split_parts=split_parts)
    signal = np.sin(np.arange(4000) * 0.07).astype(np.float32)[None, :] * 0.3
    edited = stft_as_conv(model, measured=measured)
    assert not any(node.op_type == "STFT" for node in edited.graph.node)
    assert [item.name for item in edited.graph.output] == [item.name for item in model.graph.output]
    session, reference = _session(edited), _session(model)
    for got, want in zip(
        session.run(None, {"signal": signal}), reference.run(None, {"signal": signal}), strict=True
    ):
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 2e-6  # the STFT op's own rounding is ~1e-6


def test_stft_as_conv_without_stft_fails() -> None:
    with pytest.raises(ValueError, match="no STFT"):
        stft_as_conv(_snake_model(np.ones((1, 2, 1), np.float32)))


def _tiny_float_model(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Conv (with bias) -> MatMul -> bidirectional LSTM, float32; and its weight names."""
    channels, hidden = 8, 6
    initializers: dict[str, npt.NDArray[np.generic]] = {
        "conv_w": (rng.standard_normal((channels, channels, 3)) * 0.3).astype(np.float32),
        "conv_b": rng.standard_normal(channels).astype(np.float32),
        "mm_w": (rng.standard_normal((channels, channels)) * 0.3).astype(np.float32),
        "lstm_w": (rng.standard_normal((2, 4 * hidden, channels)) * 0.3).astype(np.float32),
        "lstm_r": (rng.standard_normal((2, 4 * hidden, hidden)) * 0.3).astype(np.float32),
        "lstm_b": (rng.standard_normal((2, 8 * hidden)) * 0.1).astype(np.float32),
        "sequence": np.array([-1, 1, channels], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1], kernel_shape=[3]),
        helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["ct", "mm_w"], ["m"]),
        helper.make_node("Reshape", ["m", "sequence"], ["steps"]),
        helper.make_node(
            "LSTM",
            ["steps", "lstm_w", "lstm_r", "lstm_b"],
            ["y"],
            hidden_size=hidden,
            direction="bidirectional",
        ),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 12])
    names = {"Conv": "conv_w", "MatMul": "mm_w", "LSTM": "lstm_w"}
    return _graph_model(nodes, [x], {"y": [12, 2, 1, hidden]}, initializers), names


def test_dequantize_restores_ort_quantized_weights() -> None:
    rng = np.random.default_rng(3)
    model, _names = _tiny_float_model(rng)
    with tempfile.TemporaryDirectory() as work:
        source, target = Path(work, "float.onnx"), Path(work, "int8.onnx")
        onnx.save(model, str(source))
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
        quantized = onnx.load(str(target))
    assert {node.op_type for node in quantized.graph.node} >= QUANTIZED_OPS

    restored = dequantize(quantized)

    assert not QUANTIZED_OPS & {node.op_type for node in restored.graph.node}
    weights = {item.name: numpy_helper.to_array(item) for item in restored.graph.initializer}
    floats = {item.name: numpy_helper.to_array(item) for item in model.graph.initializer}
    by_op = {node.op_type: node for node in restored.graph.node}
    pairs = [
        (weights[by_op["Conv"].input[1]], floats["conv_w"]),
        (weights[by_op["MatMul"].input[1]], floats["mm_w"]),
        (weights[by_op["LSTM"].input[1]], floats["lstm_w"]),  # back in ONNX's [D, 4H, in]
        (weights[by_op["LSTM"].input[2]], floats["lstm_r"]),
    ]
    for got, want in pairs:
        assert got.shape == want.shape
        step = np.abs(want).max() / 127  # int8 symmetric; per channel is finer still
        assert np.abs(got - want).max() <= 0.51 * step
    x = rng.standard_normal((1, 8, 12)).astype(np.float32)
    reference = _run(model, {"x": x})
    assert np.abs(_run(restored, {"x": x}) - reference).max() < 0.05 * np.abs(reference).max()


# --- the real model ------------------------------------------------------------------------


def _log_mel(audio: Audio, rate: int = 24_000) -> npt.NDArray[np.float64]:
    """80-band log-mel power in dB, 10 ms hop."""
    size, hop, bands = 1024, 240, 80
    padded = np.pad(audio.astype(np.float64), size // 2)
    count = 1 + (len(padded) - size) // hop
    frames = np.stack([padded[i * hop : i * hop + size] for i in range(count)]) * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mels = np.linspace(2595 * np.log10(1 + 50 / 700), 2595 * np.log10(1 + rate / 2 / 700), 82)
    edges = 700 * (10 ** (mels / 2595) - 1)
    frequencies = np.fft.rfftfreq(size, 1 / rate)
    bank = np.stack(
        [
            np.clip(
                np.minimum((frequencies - low) / (mid - low), (high - frequencies) / (high - mid)),
                0,
                None,
            )
            for low, mid, high in zip(edges[:-2], edges[1:-1], edges[2:], strict=True)
        ]
    )
    decibels: npt.NDArray[np.float64] = 10 * np.log10(np.maximum(power @ bank.T, 1e-8))
    return decibels[:, :bands]


def log_mel_distance(a: Audio, b: Audio) -> float:
    """Mean |dB| difference of the log-mel frames along the best (DTW) alignment, floored 80 dB
    below the peak. Same voice and words: ~0.5-2 dB; another voice: 6-8 dB."""
    first, second = _log_mel(a), _log_mel(b)
    floor = max(first.max(), second.max()) - 80
    first, second = np.maximum(first, floor), np.maximum(second, floor)
    cost = np.abs(first[:, None, :] - second[None, :, :]).mean(axis=2)
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    steps = np.zeros((rows + 1, columns + 1))
    total[0, 0] = 0.0
    for i in range(1, rows + 1):
        for j in range(1, columns + 1):
            options = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            best = int(np.argmin(options))
            previous = ((i - 1, j - 1), (i - 1, j), (i, j - 1))[best]
            total[i, j] = cost[i - 1, j - 1] + options[best]
            steps[i, j] = steps[previous] + 1
    return float(total[rows, columns] / steps[rows, columns])


def correlation(a: Audio, b: Audio) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@dataclass(frozen=True)
class Kokoro:
    """The shipped int8 graph, real inputs and its audio for them."""

    model: onnx.ModelProto
    feeds: tuple[Feed, ...]
    audio: tuple[Audio, ...]

    def render(self, model: onnx.ModelProto, count: int = 1) -> list[Audio]:
        session = _session(model)
        return [
            np.asarray(session.run(None, feed)[0], dtype=np.float32).reshape(-1)
            for feed in self.feeds[:count]
        ]


@pytest.fixture(scope="module")
def kokoro() -> Kokoro:
    model = onnx.load(str(ensure_default_model(default_cache_dir())))
    phonemizer, tokenizer, voices = Phonemizer("en-us"), Tokenizer(load_vocab()), VoiceBank.load()
    feeds: list[Feed] = []
    for sentence in SENTENCES:
        tokens = tokenizer.encode(phonemizer.phonemize([sentence])[0])
        feeds.append(
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": voices.style(VOICE, len(tokens)),
                "speed": np.array([1.0], dtype=np.float32),
            }
        )
    session = _session(model)
    audio = tuple(
        np.asarray(session.run(None, feed)[0], dtype=np.float32).reshape(-1) for feed in feeds
    )
    return Kokoro(model, tuple(feeds), audio)


@pytest.fixture(scope="module")
def float_model(kokoro: Kokoro) -> onnx.ModelProto:
    return dequantize(kokoro.model)


@pytest.fixture(scope="module")
def float_audio(kokoro: Kokoro, float_model: onnx.ModelProto) -> Audio:
    return kokoro.render(float_model)[0]


def _assert_near_int8_floor(got: Audio, want: Audio) -> None:
    """Same length and, within the int8 graph's own sensitivity, the same audio."""
    assert got.shape == want.shape
    assert correlation(got, want) > 0.99  # measured 0.996-0.998
    assert log_mel_distance(got, want) < 1.2  # measured 0.54-0.77 dB


def _phase_and_magnitude(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the generator's STFT phase and magnitude as extra outputs (found by
    structure: the Where that reads Atan's output, and the Sqrt next to it)."""
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    nodes = list(tapped.graph.node)
    atan = next(node for node in nodes if node.op_type == "Atan")
    phase = next(n for n in nodes if n.op_type == "Where" and atan.output[0] in n.input)
    concat = next(n for n in nodes if n.op_type == "Concat" and phase.output[0] in n.input)
    magnitude = next(name for name in concat.input if name != phase.output[0])
    for name in (phase.output[0], magnitude):
        tapped.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return tapped


@pytest.mark.model
def test_stft_as_conv_on_the_model(kokoro: Kokoro) -> None:
    edited = stft_as_conv(kokoro.model)
    assert not any(node.op_type == "STFT" for node in edited.graph.node)
    for got, want in zip(kokoro.render(edited, 2), kokoro.audio, strict=True):
        _assert_near_int8_floor(got, want)
    # the phase, not just the magnitude: atan2's +-pi at DC and Nyquist follows the STFT op
    feed = kokoro.feeds[0]
    _, phase, magnitude = _session(_phase_and_magnitude(edited)).run(None, feed)
    _, phase_0, magnitude_0 = _session(_phase_and_magnitude(kokoro.model)).run(None, feed)
    assert np.abs(magnitude - magnitude_0).max() < 1e-5
    jumps = np.abs(phase - phase_0) > 1.0
    assert jumps.mean() < 1e-3  # measured 0.03%; the exact DFT basis alone: 1.1%
    assert np.abs(np.where(jumps, 0, phase - phase_0)[magnitude_0 > 1e-3]).max() < 1e-3


@pytest.mark.model
def test_cheaper_snake_on_the_model(kokoro: Kokoro) -> None:
    found = snakes(kokoro.model)
    assert len(found) == 48
    edited = cheaper_snake(kokoro.model)
    assert sum(node.op_type == "Sin" for node in edited.graph.node) == 3  # not Snakes
    for got, want in zip(kokoro.render(edited, 2), kokoro.audio, strict=True):
        _assert_near_int8_floor(got, want)


@pytest.mark.model
def test_dequantize_is_the_float_reference(
    kokoro: Kokoro, float_model: onnx.ModelProto, float_audio: Audio
) -> None:
    ops = {node.op_type for node in float_model.graph.node}
    assert not ops & QUANTIZED_OPS
    assert {"MatMul", "Conv", "LSTM"} <= ops
    assert not any(
        item.data_type in (TensorProto.INT8, TensorProto.UINT8)
        for item in float_model.graph.initializer
    )
    assert 300e6 < float_model.ByteSize() < 350e6  # 82M float32 weights, shared ones once
    # durations round differently without activation quantization: lengths differ by a frame
    # or two; what is said, and how, stays (another voice is 6-8 dB away)
    want = kokoro.audio[0]
    assert abs(len(float_audio) - len(want)) <= 0.05 * len(want)
    assert log_mel_distance(float_audio, want) < 3.0  # measured 1.4-2.0 dB


@pytest.mark.model
def test_fp16_weights(kokoro: Kokoro, float_model: onnx.ModelProto, float_audio: Audio) -> None:
    half = fp16_weights(float_model)
    assert half.ByteSize() < 0.52 * float_model.ByteSize()
    got = kokoro.render(half)[0]
    assert got.shape == float_audio.shape
    assert correlation(got, float_audio) > 0.99  # measured 0.995-0.999
    assert log_mel_distance(got, float_audio) < 0.6  # measured 0.17-0.26 dB
    # the int8 graph: only the generator's three float weights qualify
    int8_half = fp16_weights(kokoro.model)
    assert int8_half.ByteSize() < kokoro.model.ByteSize() - 5e6
    _assert_near_int8_floor(kokoro.render(int8_half)[0], kokoro.audio[0])


@pytest.mark.model
def test_edits_compose(float_model: onnx.ModelProto, float_audio: Audio, kokoro: Kokoro) -> None:
    composed = stft_as_conv(cheaper_snake(float_model))
    got = kokoro.render(composed)[0]
    assert got.shape == float_audio.shape
    assert correlation(got, float_audio) > 0.9999  # float graph: measured 40 dB SNR
    assert log_mel_distance(got, float_audio) < 0.2
    # fp16 storage first: the other edits read weights through its Casts
    layered = cheaper_snake(stft_as_conv(dequantize(fp16_weights(kokoro.model))))
    assert not any(node.op_type in {"STFT", "ConvInteger"} for node in layered.graph.node)

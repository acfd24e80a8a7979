"""Kokoro split in two: the text side once per segment, the decoder on windows of frames.

The text side (PL-BERT, duration, pitch and energy prediction) takes about 4% of a call; the
decoder and its iSTFTNet vocoder take the rest. Decoding the frames in windows could start audio
long before a long segment's last frame is computed. ``split_graph`` cuts the graph at the
decoder's inputs (``asr`` features, ``F0``, ``N`` and the style) with ``onnx.utils.Extractor``;
run back to back, the two halves reproduce the whole graph's audio exactly.

Phase. The vocoder's harmonic source is ``sin(2 pi * cumsum(f0 * h / 24000) * 300)`` over the
segment's pitch steps (two per 600-sample frame, harmonics h = 1..9). A window decoded alone
would restart that sum at zero, so the edit adds a ``phase_offset`` input to the sum and
``phase_offset`` computes it from the pitch before the window: the source stays continuous.

What windowing cannot reproduce (measured by ``python -m app bench windowed``): every AdaIN
layer of the decoder normalises its input over the whole segment (54 instance norms, 44 of them
in the vocoder), and the int8 graphs quantize each layer's input with a range taken over the
whole segment. A window sees only its own frames, so its statistics, and its sound, differ.
``with_norm_inputs`` turns those statistics into inputs, to show that they are the cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
import onnx.utils
from onnx import TensorProto, helper

from app.tts.graph_edits import DURATION_CAP_INPUT, DURATIONS_OUTPUT, has_duration_cap

ASR = "/encoder/MatMul_1_output_0"
"""The text encoder's features aligned to frames (1, 512, frames)."""
F0 = "/encoder/Reshape_output_0"
"""Predicted pitch, two steps per frame (1, 2 * frames)."""
ENERGY = "/encoder/Reshape_1_output_0"
"""Predicted energy, two steps per frame (1, 2 * frames)."""
PHASE_OFFSET = "phase_offset"
HARMONICS = 9
SAMPLE_RATE = 24_000
SAMPLES_PER_STEP = 300
SAMPLES_PER_FRAME = 600


class SplitError(ValueError):
    """The graph does not have the shipped Kokoro graph's tensors."""


@dataclass(frozen=True, slots=True)
class SplitGraph:
    text: onnx.ModelProto
    """tokens, style, speed (and ``duration_cap``) -> asr, F0, N (and ``durations``, when the
    graph has the duration edit, ``graph_edits``)."""
    decoder: onnx.ModelProto
    """asr, F0, N, style, phase_offset -> audio."""


def _sine_cumsum(graph: onnx.GraphProto) -> onnx.NodeProto:
    for node in graph.node:
        if node.op_type == "CumSum" and "sin_gen" in node.name:
            found: onnx.NodeProto = node
            return found
    raise SplitError("no harmonic-source CumSum in the decoder")


def split_graph(model: onnx.ModelProto) -> SplitGraph:
    """The text side and the decoder (with the ``phase_offset`` input), checked by onnx."""
    produced = {output for node in model.graph.node for output in node.output}
    missing = [name for name in (ASR, F0, ENERGY) if name not in produced]
    if missing:
        raise SplitError(f"the graph has no tensor {missing[0]!r}: not the shipped Kokoro graph")
    extractor = onnx.utils.Extractor(model)
    inputs = ["tokens", "style", "speed"]
    outputs = [ASR, F0, ENERGY]
    if has_duration_cap(model):  # the duration edit: its input and output join the text side
        inputs.append(DURATION_CAP_INPUT)
        outputs.append(DURATIONS_OUTPUT)
    text = extractor.extract_model(inputs, outputs)
    decoder = extractor.extract_model([ASR, F0, ENERGY, "style"], ["audio"])
    graph = decoder.graph
    cumsum = _sine_cumsum(graph)
    summed = cumsum.output[0]
    shifted = f"{summed}_shifted"
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name == summed:
                node.input[position] = shifted
    index = list(graph.node).index(cumsum)
    graph.node.insert(
        index + 1, helper.make_node("Add", [summed, PHASE_OFFSET], [shifted], name="/PhaseOffset")
    )
    graph.input.append(
        helper.make_tensor_value_info(PHASE_OFFSET, TensorProto.FLOAT, [1, 1, HARMONICS])
    )
    onnx.checker.check_model(text)
    onnx.checker.check_model(decoder)
    return SplitGraph(text, decoder)


def phase_offset(f0: npt.NDArray[np.float32], first_step: int) -> npt.NDArray[np.float32]:
    """What the harmonic source's sum has reached before pitch step ``first_step``.

    Reduced modulo one period of the source (1/300 in the sum's units) in float64, so a long
    segment loses no precision."""
    harmonics = np.arange(1, HARMONICS + 1, dtype=np.float64)
    total = float(np.asarray(f0, dtype=np.float64).reshape(-1)[:first_step].sum())
    summed = total * harmonics / SAMPLE_RATE
    reduced = summed - np.floor(summed * SAMPLES_PER_STEP) / SAMPLES_PER_STEP
    return reduced.astype(np.float32).reshape(1, 1, HARMONICS)


def norm_statistics(decoder: onnx.ModelProto) -> list[str]:
    """The decoder's instance-norm means and variances (its ``ReduceMean`` outputs)."""
    return [node.output[0] for node in decoder.graph.node if node.op_type == "ReduceMean"]


def with_norm_outputs(decoder: onnx.ModelProto) -> onnx.ModelProto:
    """The decoder, also returning every norm statistic (after the audio)."""
    edited = onnx.ModelProto()
    edited.CopyFrom(decoder)
    for k, name in enumerate(norm_statistics(decoder)):
        edited.graph.output.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, f"channels{k}", 1])
        )
    return edited


def with_norm_inputs(decoder: onnx.ModelProto) -> onnx.ModelProto:
    """The decoder taking every norm statistic as an input instead of computing it."""
    names = set(norm_statistics(decoder))
    edited = onnx.ModelProto()
    edited.CopyFrom(decoder)
    kept = [
        node
        for node in edited.graph.node
        if not (node.op_type == "ReduceMean" and node.output[0] in names)
    ]
    del edited.graph.node[:]
    edited.graph.node.extend(kept)
    for k, name in enumerate(norm_statistics(decoder)):
        edited.graph.input.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, f"channels{k}", 1])
        )
    return edited


@dataclass(frozen=True, slots=True)
class Window:
    """Frames ``[start, end)`` are kept; ``[start - left, end + right)`` are decoded."""

    start: int
    end: int
    decode_start: int
    decode_end: int

    @classmethod
    def whole(cls, frames: int) -> Window:
        """All of a ``frames``-frame segment, decoded at once."""
        return cls(0, frames, 0, frames)

    def keep(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        first = (self.start - self.decode_start) * SAMPLES_PER_FRAME
        return audio[first : first + (self.end - self.start) * SAMPLES_PER_FRAME]


def windows(
    frames: int, first: int, size: int, context: int, first_context: int | None = None
) -> list[Window]:
    """A short first window (first audio), then ``size``-frame windows, each decoded with
    ``context`` frames on both sides where the segment has them (``first_context`` after the
    first window, if given)."""
    lookahead = context if first_context is None else first_context
    if first < 1 or size < 1 or context < 0 or lookahead < 0:
        raise ValueError("need first >= 1, size >= 1 and contexts >= 0")
    planned: list[Window] = []
    start = 0
    while start < frames:
        end = min(frames, start + (first if start == 0 else size))
        around = lookahead if start == 0 else context
        planned.append(Window(start, end, max(0, start - around), min(frames, end + around)))
        start = end
    return planned


def decoder_feed(
    asr: npt.NDArray[np.float32],
    f0: npt.NDArray[np.float32],
    energy: npt.NDArray[np.float32],
    style: npt.NDArray[np.float32],
    window: Window,
) -> dict[str, npt.NDArray[np.float32]]:
    """The decoder's inputs for one window, the phase offset included."""
    a, b = window.decode_start, window.decode_end
    return {
        ASR: asr[:, :, a:b],
        F0: f0[:, 2 * a : 2 * b],
        ENERGY: energy[:, 2 * a : 2 * b],
        "style": style,
        PHASE_OFFSET: phase_offset(f0, 2 * a),
    }


def join(
    decoded: Sequence[npt.NDArray[np.float32]], plan: Sequence[Window], fade_frames: int = 0
) -> npt.NDArray[np.float32]:
    """The windows' kept audio end to end. With ``fade_frames``, each window fades in over the
    audio the previous window decoded past its end (its lookahead), up to that many frames:
    the join then has no step where the two windows' normalisations differ."""
    pieces: list[npt.NDArray[np.float32]] = []
    for index, (audio, window) in enumerate(zip(decoded, plan, strict=True)):
        kept = window.keep(audio).copy()
        if index and fade_frames:
            before, previous = decoded[index - 1], plan[index - 1]
            overlap = min(
                fade_frames, previous.decode_end - previous.end, window.end - window.start
            )
            count = overlap * SAMPLES_PER_FRAME
            if count:
                tail_start = (previous.end - previous.decode_start) * SAMPLES_PER_FRAME
                tail = before[tail_start : tail_start + count]
                ramp = (np.arange(count, dtype=np.float32) + 0.5) / count
                kept[:count] = tail * (1 - ramp) + kept[:count] * ramp
        pieces.append(kept)
    return np.concatenate(pieces)

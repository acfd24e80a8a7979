"""Reproducible edits of the Kokoro graph, applied in memory before a session is built.

Durations. Kokoro predicts a duration (in frames of 600 samples, 25 ms) for every token and
renders that many frames. The edit inserts ``durations = Min(durations, duration_cap)`` right
after the predictor's rounding and clipping, with ``duration_cap`` a new float input [1, T]
(infinity: no change), and exposes ``durations`` as a second output (frames per token; the audio
is exactly ``sum(durations) * 600`` samples). Word timings come from them, and the cap can cut
the pause rendered for a segment's closing punctuation (``engine.tail_caps``).

Not worth capping: the start pad's ~12 frames (capped, the decoder garbles the first word) and
the end pad of a segment cut between words (the model draws the last sound out over it).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

DURATION_CAP_INPUT = "duration_cap"
DURATIONS_OUTPUT = "durations"
SAMPLES_PER_FRAME = 600


def _duration_clip(graph: onnx.GraphProto) -> onnx.NodeProto | None:
    """The predictor's ``Clip(Round(Div(sum, speed)), min=1)`` node, found by its structure."""
    producers = {output: node for node in graph.node for output in node.output}
    for node in graph.node:
        if node.op_type != "Clip" or not node.input:
            continue
        rounding = producers.get(node.input[0])
        if rounding is None or rounding.op_type != "Round":
            continue
        division = producers.get(rounding.input[0])
        if division is not None and division.op_type == "Div" and "speed" in division.input:
            found: onnx.NodeProto = node
            return found
    return None


def has_duration_cap(model: onnx.ModelProto) -> bool:
    return any(item.name == DURATION_CAP_INPUT for item in model.graph.input)


def add_duration_cap(model: onnx.ModelProto) -> bool:
    """Add the ``duration_cap`` input and ``durations`` output in place (idempotent).

    Returns False, leaving the model untouched, when the graph has no recognisable duration
    step (a user's graph exported differently).
    """
    if has_duration_cap(model):
        return True
    graph = model.graph
    clip = _duration_clip(graph)
    if clip is None:
        return False
    clipped = clip.output[0]
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name == clipped:
                node.input[position] = DURATIONS_OUTPUT
    index = list(graph.node).index(clip)
    cap = helper.make_node(
        "Min", [clipped, DURATION_CAP_INPUT], [DURATIONS_OUTPUT], name="/encoder/DurationCap"
    )
    graph.node.insert(index + 1, cap)
    graph.input.append(
        helper.make_tensor_value_info(DURATION_CAP_INPUT, TensorProto.FLOAT, [1, "tokens_len"])
    )
    graph.output.append(
        helper.make_tensor_value_info(DURATIONS_OUTPUT, TensorProto.FLOAT, [1, "tokens_len"])
    )
    onnx.checker.check_model(model)
    return True

"""Model variants of the Kokoro graph, made by pure in-memory ONNX edits.

Every public function takes an ``onnx.ModelProto``, leaves it untouched and returns an edited
copy that passes ``onnx.checker.check_model``. Nodes are found by their structure, never by
their names, and the edits compose (``stft_as_conv(cheaper_snake(dequantize(model)))``).

- ``dequantize``: the float32 reference of the int8 dynamic-quantized export.
- ``fp16_weights``: large float weights stored as float16, cast back to float32 at load.
- ``stft_as_conv``: the generator's STFT op as one strided Conv.
- ``cheaper_snake``: the Snake activation without ONNX Runtime's single-threaded ``Sin``
  (``snakes`` lists the activations it finds).

``fp16_weights`` is best applied last, but the others read constants through its Casts.
Comparing audio: the int8 graph is chaotic under tiny changes (scaling the STFT's input by
1 + 1e-7 already gives 21-22 dB SNR), so exactness is judged on the float graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FloatArray = npt.NDArray[np.float32]


# --- graph plumbing -------------------------------------------------------------------------


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


class _Index:
    """Producers, consumers and constants of a graph (rebuilt after each structural edit)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {item.name: item for item in graph.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for output in node.output:
                self.producers[output] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = {item.name for item in graph.output}
        self.names = (
            set(self.initializers)
            | set(self.producers)
            | {item.name for item in graph.input}
            | {node.name for node in graph.node}
        )

    def constant(self, name: str) -> npt.NDArray[np.generic] | None:
        """The value of an initializer or Constant node output, else None."""
        if name in self.initializers:
            value: npt.NDArray[np.generic] = numpy_helper.to_array(self.initializers[name])
            return value
        node = self.producers.get(name)
        if node is not None and node.op_type == "Cast" and not node.domain:
            # an initializer stored in another type (fp16_weights), read as its cast
            source = node.input[0] if node.input[0] in self.initializers else None
            if source is not None:
                target = helper.tensor_dtype_to_np_dtype(int(_attributes(node)["to"]))
                cast: npt.NDArray[np.generic] = numpy_helper.to_array(
                    self.initializers[source]
                ).astype(target)
                return cast
        if node is not None and node.op_type == "Constant" and not node.domain:
            for attribute in node.attribute:
                if attribute.name == "value":
                    stored: npt.NDArray[np.generic] = numpy_helper.to_array(attribute.t)
                    return stored
        return None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        """The one node reading ``name``, if it is not also a graph output."""
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or name in self.outputs:
            return None
        return readers[0]

    def fresh(self, base: str) -> str:
        """A tensor or node name not used in the graph yet."""
        name, number = base, 0
        while name in self.names:
            number += 1
            name = f"{base}_{number}"
        self.names.add(name)
        return name

    def add_initializer(self, base: str, value: npt.NDArray[np.generic]) -> str:
        name = self.fresh(base)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name


def _subgraph_inputs(node: onnx.NodeProto) -> Iterator[str]:
    """Names read inside a node's subgraphs (If/Loop/Scan bodies), which outer pruning must keep."""
    for attribute in node.attribute:
        graphs = list(attribute.graphs)
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        for graph in graphs:
            for inner in graph.node:
                yield from inner.input
                yield from _subgraph_inputs(inner)


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nobody reads (one backward pass over the topologically sorted
    nodes), then unused initializers and the value_info of tensors no longer produced."""
    used = {item.name for item in graph.output}
    live: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(output in used for output in node.output if output):
            live.append(node)
            used.update(node.input)
            used.update(_subgraph_inputs(node))
    if len(live) != len(graph.node):
        live.reverse()
        del graph.node[:]
        graph.node.extend(live)
    kept = [item for item in graph.initializer if item.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
    produced = {output for node in graph.node for output in node.output}
    infos = [item for item in graph.value_info if item.name in produced]
    if len(infos) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(infos)


def _rebuild(graph: onnx.GraphProto, replacements: dict[int, list[onnx.NodeProto]]) -> None:
    """Rewrite the node list in one pass: a node whose ``id`` is a key is replaced by the
    listed nodes (none: removed). The caller holds the node objects, so ids stay valid."""
    nodes = [new for node in graph.node for new in replacements.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {item.name: helper.get_attribute_value(item) for item in node.attribute}


def _finish(model: onnx.ModelProto) -> onnx.ModelProto:
    _prune(model.graph)
    onnx.checker.check_model(model)
    return model


# --- STFT as a strided Conv ----------------------------------------------------------------


def _dft_basis(window: FloatArray, bins: int) -> FloatArray:
    """[2 * bins, 1, n] Conv kernel: windowed cos rows (real part), then -sin rows (imaginary).

    Angles are reduced exactly (``k * n mod N``) so that the DC and Nyquist sine rows are
    exactly zero, as the mathematics says."""
    size = len(window)
    k = np.arange(bins)[:, None]
    n = np.arange(size)[None, :]
    turns = (k * n) % size
    angle = 2.0 * np.pi * turns / size
    cosine = np.cos(angle)
    sine = np.sin(angle)
    sine[(2 * turns) % size == 0] = 0.0
    cosine[(4 * turns) % size == size] = 0.0
    weights = window.astype(np.float64)[None, :]
    basis = np.concatenate([cosine * weights, -sine * weights])
    return basis.astype(np.float32)[:, None, :]


def _measured_basis(window: FloatArray, size: int, onesided: int) -> FloatArray:
    """The DFT basis as ONNX Runtime's STFT kernel computes it: its response to unit impulses.

    Same layout as ``_dft_basis``. It differs from the exact basis by ~1e-6 (the kernel's FFT
    twiddle rounding), which is what decides the phase at DC and Nyquist (see
    ``stft_as_conv``)."""
    graph = helper.make_graph(
        [helper.make_node("STFT", ["x", "step", "window", "length"], ["y"], onesided=onesided)],
        "stft_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size * size, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.array(size, np.int64), "step"),
            numpy_helper.from_array(window.astype(np.float32), "window"),
            numpy_helper.from_array(np.array(size, np.int64), "length"),
        ],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    impulses = np.eye(size, dtype=np.float32).reshape(1, size * size, 1)
    response = np.asarray(session.run(None, {"x": impulses})[0])[0]  # [frame = n, bin, re/im]
    basis = np.concatenate([response[:, :, 0].T, response[:, :, 1].T])
    return np.ascontiguousarray(basis, dtype=np.float32)[:, None, :]


def stft_as_conv(model: onnx.ModelProto, *, measured: bool = True) -> onnx.ModelProto:
    """Replace the generator's STFT op by one strided Conv whose kernel is the windowed DFT
    basis (real rows, then imaginary rows); magnitude and phase downstream are unchanged.

    Why: ORT's STFT kernel runs a Bluestein FFT per frame of this short transform (n_fft 20,
    hop 5): 40 ms of a 1.4 s call for a 3.8 s sentence, where the Conv and Split take 0.7 ms.
    Whole calls, 2 threads, interleaved: median 0.97-0.98x the original's time.

    The phase. Downstream, the exporter's atan2 is ``atan(im / re)`` corrected by ``Where``
    nodes: an exactly-zero imaginary part with a negative real part gives -pi, where
    ``torch.atan2`` gives +pi. The STFT op never gives exact zeros at DC and Nyquist: its FFT
    rounding leaves ~1e-7 that is a fixed linear function of the frame (mostly positive at DC,
    mostly negative at Nyquist), and that sign picks +pi or -pi, a 2 pi jump in the noise
    convolution's input. The exact basis (``measured=False``) has exact zeros there, so it adds a
    1e-30 bias to those two imaginary rows (+ at DC, - at Nyquist: the op's usual sign), which
    keeps the magnitude; the int8 graph's audio is then 20 dB from the original's (10 dB without
    the bias). ``measured=True`` (the default) takes the kernel from the STFT op's own response
    to impulses, rounding included, and lands at 21-24 dB: the int8 graph's own floor (scaling
    the STFT's input by 1 + 1e-7 gives 21-22 dB, its dynamic quantization amplifies any change).
    """
    edited = _copy(model)
    graph = edited.graph
    stfts = [node for node in graph.node if node.op_type == "STFT" and not node.domain]
    if not stfts:
        raise ValueError("the graph has no STFT node")
    index = _Index(graph)
    replacements: dict[int, list[onnx.NodeProto]] = {}
    for stft in stfts:
        replacements[id(stft)] = _stft_conv_nodes(index, stft, replacements, measured=measured)
    _rebuild(graph, replacements)
    return _finish(edited)


def _stft_conv_nodes(
    index: _Index,
    stft: onnx.NodeProto,
    replacements: dict[int, list[onnx.NodeProto]],
    *,
    measured: bool,
) -> list[onnx.NodeProto]:
    """The nodes that stand for ``stft``; readers they make redundant go in ``replacements``
    as removed."""
    inputs = [*stft.input, "", "", ""][:4]
    signal, step_name, window_name, length_name = inputs
    step = index.constant(step_name) if step_name else None
    if step is None:
        raise ValueError("STFT frame_step is not a constant")
    window = index.constant(window_name) if window_name else None
    length = index.constant(length_name) if length_name else None
    if window is None and length is None:
        raise ValueError("STFT needs a constant window or frame_length")
    size = int(length) if length is not None else len(np.asarray(window))
    window_values = (
        np.asarray(window, dtype=np.float32) if window is not None else np.ones(size, np.float32)
    )
    if window_values.shape != (size,):
        raise ValueError(f"STFT window of shape {window_values.shape} for frame length {size}")
    onesided = int(_attributes(stft).get("onesided", 1))
    bins = size // 2 + 1 if onesided else size
    bias = np.zeros(2 * bins, dtype=np.float32)
    if measured:
        basis = _measured_basis(window_values, size, onesided)
    else:
        basis = _dft_basis(window_values, bins)
        bias[bins] = 1e-30  # DC imaginary part: phase +pi for a negative real part
        if size % 2 == 0 and size // 2 < bins:
            bias[bins + size // 2] = -1e-30  # Nyquist: phase -pi
    prefix = stft.name or "STFT"
    weight_name = index.add_initializer(f"{prefix}_dft_basis", basis)
    conv_inputs = [weight_name]
    if bias.any():
        conv_inputs.append(index.add_initializer(f"{prefix}_dft_bias", bias))
    shape_name = index.add_initializer(f"{prefix}_signal_shape", np.array([0, 1, -1], np.int64))
    framed = index.fresh(f"{prefix}_signal_ncl")
    spectrum = index.fresh(f"{prefix}_conv_output")
    nodes = [
        helper.make_node("Reshape", [signal, shape_name], [framed], name=index.fresh(framed)),
        helper.make_node(
            "Conv",
            [framed, *conv_inputs],
            [spectrum],
            name=index.fresh(f"{prefix}_as_conv"),
            kernel_shape=[size],
            strides=[int(step)],
            pads=[0, 0],
        ),
    ]
    return nodes + _spectrum_consumers(index, stft, spectrum, bins, replacements)


def _part_readers(index: _Index, stft: onnx.NodeProto) -> list[tuple[onnx.NodeProto, int]] | None:
    """The usual readers of the STFT output: one ``Transpose(perm=[0, 2, 1, 3])`` read only by
    ``Gather`` nodes taking index 0 (real) or 1 (imaginary) of the last axis; else None."""
    transpose = index.only_consumer(stft.output[0])
    if transpose is None or transpose.op_type != "Transpose":
        return None
    if list(_attributes(transpose).get("perm", [])) != [0, 2, 1, 3]:
        return None
    if transpose.output[0] in index.outputs:
        return None
    picks: list[tuple[onnx.NodeProto, int]] = []
    for reader in index.consumers.get(transpose.output[0], []):
        if reader.op_type != "Gather" or _attributes(reader).get("axis", 0) not in (3, -1):
            return None
        value = index.constant(reader.input[1])
        if value is None or value.ndim != 0 or int(value) not in (0, 1, -1, -2):
            return None
        picks.append((reader, int(value) % 2))
    return picks or None


def _spectrum_consumers(
    index: _Index,
    stft: onnx.NodeProto,
    spectrum: str,
    bins: int,
    replacements: dict[int, list[onnx.NodeProto]],
) -> list[onnx.NodeProto]:
    """Nodes that give the STFT's readers what they read, from the Conv's [B, 2*bins, frames].

    The usual readers (see ``_part_readers``) get the two halves of the Conv output directly;
    anything else gets a tensor shaped exactly like the STFT output ([B, frames, bins, 2])."""
    prefix = stft.name or "STFT"
    picks = _part_readers(index, stft)
    if picks is None:
        shape = index.add_initializer(
            f"{prefix}_complex_shape", np.array([0, 2, bins, -1], np.int64)
        )
        stacked = index.fresh(f"{prefix}_stacked")
        return [
            helper.make_node("Reshape", [spectrum, shape], [stacked], name=index.fresh(stacked)),
            helper.make_node(
                "Transpose",
                [stacked],
                [stft.output[0]],
                name=index.fresh(f"{prefix}_complex"),
                perm=[0, 3, 2, 1],
            ),
        ]
    named: dict[int, str] = {}
    copies: list[onnx.NodeProto] = []
    for reader, which in picks:
        if which in named:
            copies.append(
                helper.make_node(
                    "Identity", [named[which]], [reader.output[0]], name=index.fresh(prefix)
                )
            )
        else:
            named[which] = reader.output[0]
        replacements[id(reader)] = []
    transpose = index.producers[picks[0][0].input[0]]
    replacements[id(transpose)] = []
    parts = [
        named.get(0) or index.fresh(f"{prefix}_real"),
        named.get(1) or index.fresh(f"{prefix}_imag"),
    ]
    sizes = index.add_initializer(f"{prefix}_split", np.array([bins, bins], np.int64))
    split = helper.make_node(
        "Split", [spectrum, sizes], parts, name=index.fresh(f"{prefix}_split"), axis=1
    )
    return [split, *copies]


# --- Snake without Sin -----------------------------------------------------------------------

_ROUNDING_MAGIC = np.array(1.5 * 2**23, dtype=np.float32)
"""Adding then subtracting 1.5 * 2^23 rounds a float32 to the nearest integer (|u| < 2^22)."""


def _sin2_coefficients(degree: int) -> npt.NDArray[np.float64]:
    """c_0..c_degree with sin^2(pi f) ~= g * sum(c_i g^i), g = f^2, for |f| <= 1/2.

    Chebyshev interpolation of the smooth sin^2(pi sqrt(g)) / g on [0, 1/4]."""
    nodes = 0.125 + 0.125 * np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    values = np.sin(np.pi * np.sqrt(nodes)) ** 2 / nodes
    fit = np.polynomial.Chebyshev.fit(nodes, values, degree, domain=[0.0, 0.25])
    return np.asarray(fit.convert(kind=np.polynomial.Polynomial).coef, dtype=np.float64)


@dataclass(frozen=True)
class _Snake:
    """One ``x + inverse * sin(alpha * x) ** 2`` in the graph (``alpha``, ``inverse`` constant).

    ``nodes``: Mul(alpha, x), Sin, Pow(2) or Mul(s, s), Mul(inverse), Add(x)."""

    x: str
    alpha: FloatArray
    inverse: FloatArray
    nodes: tuple[onnx.NodeProto, ...]

    @property
    def output(self) -> str:
        return str(self.nodes[-1].output[0])

    @property
    def name(self) -> str:
        return str(self.nodes[1].name or self.output)


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The other input of a two-input node that reads ``name``."""
    if len(node.input) != 2 or name not in node.input:
        return None
    return str(node.input[1] if node.input[0] == name else node.input[0])


def _float_constant(index: _Index, name: str | None) -> FloatArray | None:
    value = index.constant(name) if name else None
    if value is None or value.dtype != np.float32:
        return None
    return np.asarray(value, dtype=np.float32)


def _is_square(index: _Index, node: onnx.NodeProto | None, of: str) -> bool:
    """``Pow(of, 2)`` or ``Mul(of, of)``."""
    if node is None:
        return False
    if node.op_type == "Mul":
        return list(node.input) == [of, of]
    if node.op_type != "Pow" or node.input[0] != of:
        return False
    exponent = index.constant(node.input[1])
    return exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0


def _snake_at(index: _Index, sine: onnx.NodeProto) -> _Snake | None:
    """The Snake around a ``Sin`` node, matched by structure, or None."""
    scaled = index.producers.get(sine.input[0])
    square = index.only_consumer(sine.output[0])
    if scaled is None or scaled.op_type != "Mul" or index.only_consumer(sine.input[0]) is None:
        return None
    if square is None or not _is_square(index, square, sine.output[0]):
        return None
    weighted = index.only_consumer(square.output[0])
    if weighted is None or weighted.op_type != "Mul":
        return None
    add = index.only_consumer(weighted.output[0])
    if add is None or add.op_type != "Add":
        return None
    x = _other(add, weighted.output[0])
    inverse = _float_constant(index, _other(weighted, square.output[0]))
    alpha = _float_constant(index, _other(scaled, x) if x is not None else None)
    if x is None or inverse is None or alpha is None:
        return None
    return _Snake(x, alpha, inverse, (scaled, sine, square, weighted, add))


def snakes(model: onnx.ModelProto) -> list[str]:
    """Output names of the Snake activations ``cheaper_snake`` would rewrite."""
    index = _Index(model.graph)
    found = (_snake_at(index, node) for node in model.graph.node if node.op_type == "Sin")
    return [snake.output for snake in found if snake is not None]


def cheaper_snake(
    model: onnx.ModelProto, *, degree: int = 3, rounding: str = "round"
) -> onnx.ModelProto:
    """Compute every Snake activation ``x + (1/a) sin^2(a x)`` without ``Sin``.

    Why: ORT's ``Sin`` kernel runs on one thread; in the Snakes it is ~12% of a call. The
    rewrite reduces ``u = x * a / pi`` to ``f = u - Round(u)`` in [-1/2, 1/2] (sin^2 has period
    pi) and evaluates ``sin^2(pi f)`` as ``g * P(g)``, ``g = f^2``, ``P`` of degree ``degree``
    in Horner steps with ``1/a`` folded into per-channel coefficients: ``2 * degree + 6``
    elementwise Mul/Add/Sub/Round passes, all on every intra-op thread, instead of four passes
    and a single-threaded ``Sin``.

    Measured on the model's 48 Snakes with their real inputs (74.7M values for a 3.8 s
    sentence; original 217 ms at 2 threads, 252 ms at 1): degree 3 takes 0.75x at 2 threads
    (0.95x at 1), degree 4 0.84x (1.17x), degree 2 0.67x (0.83x). Largest activation error
    against the original graph: 6.3e-4 (degree 3; relative 1.5e-4), 1.2e-5 (4), 7.6e-6 (5;
    the original's own float32 error is 3.6e-6); the float32 reference's audio stays 84 dB
    (degree 3), 113 dB (4) and 53 dB (2) from its ``Sin`` version's. The error of ``g * P(g)``
    is relative near 0, so a tiny ``a`` (1/a reaches 1e4 here) does not magnify it.

    ``rounding="magic"`` rounds with ``(u + 1.5 * 2^23) - 1.5 * 2^23`` (two passes instead of
    ``Round``'s one, about as fast; exact for |a x| < 1.3e7).
    """
    if degree < 1:
        raise ValueError(f"degree must be at least 1, got {degree}")
    if rounding not in ("magic", "round"):
        raise ValueError(f"rounding must be 'magic' or 'round', got {rounding!r}")
    edited = _copy(model)
    graph = edited.graph
    index = _Index(graph)
    found = [_snake_at(index, node) for node in graph.node if node.op_type == "Sin"]
    matches = [snake for snake in found if snake is not None]
    if not matches:
        raise ValueError("the graph has no Snake activation")
    coefficients = _sin2_coefficients(degree)
    magic = index.add_initializer("snake_rounding_magic", _ROUNDING_MAGIC)
    replacements: dict[int, list[onnx.NodeProto]] = {}
    for snake in matches:
        for node in snake.nodes[:-1]:
            replacements[id(node)] = []
        replacements[id(snake.nodes[-1])] = _polynomial_snake(
            index, snake, coefficients, magic=magic if rounding == "magic" else None
        )
    _rebuild(graph, replacements)
    return _finish(edited)


def _polynomial_snake(
    index: _Index,
    snake: _Snake,
    coefficients: npt.NDArray[np.float64],
    *,
    magic: str | None,
) -> list[onnx.NodeProto]:
    """The nodes computing ``snake.output`` from ``snake.x`` without ``Sin``."""
    nodes: list[onnx.NodeProto] = []
    prefix = f"{snake.name}_polynomial"

    def step(op: str, inputs: list[str], label: str, output: str | None = None) -> str:
        name = output or index.fresh(f"{prefix}/{label}")
        nodes.append(helper.make_node(op, inputs, [name], name=index.fresh(f"{prefix}/{label}")))
        return name

    alpha = snake.alpha.astype(np.float64)
    inverse = snake.inverse.astype(np.float64)
    turns = index.add_initializer(f"{prefix}/alpha_over_pi", (alpha / np.pi).astype(np.float32))
    u = step("Mul", [snake.x, turns], "turns")
    if magic is not None:
        nearest = step("Sub", [step("Add", [u, magic], "shifted"), magic], "nearest")
    else:
        nearest = step("Round", [u], "nearest")
    f = step("Sub", [u, nearest], "fraction")
    g = step("Mul", [f, f], "fraction_squared")
    scaled = [
        index.add_initializer(f"{prefix}/c{i}", (c * inverse).astype(np.float32))
        for i, c in enumerate(coefficients)
    ]
    p = step("Mul", [g, scaled[-1]], f"horner{len(scaled) - 1}")
    for i in range(len(scaled) - 2, -1, -1):
        p = step("Mul", [step("Add", [p, scaled[i]], f"plus_c{i}"), g], f"horner{i}")
    step("Add", [snake.x, p], "out", output=snake.output)
    return nodes


# --- float32 reference -------------------------------------------------------------------------

_QUANTIZED_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM")


def _dequantized(
    quantized: npt.NDArray[np.generic],
    zero_point: npt.NDArray[np.generic] | None,
    scale: FloatArray,
    axis: int,
) -> FloatArray:
    """``(q - zero_point) * scale``; a per-channel zero point or scale runs along ``axis``."""

    def along(value: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        if value.size == 1:
            return value.reshape(())
        shape = [1] * quantized.ndim
        shape[axis] = value.size
        return value.reshape(shape)

    # (q - zero_point) is a small integer, exact in float32, so one float32 product is the
    # correctly rounded result (as in float64, then rounded)
    centred = quantized.astype(np.float32)
    if zero_point is not None:
        centred -= along(zero_point).astype(np.float32)
    result: FloatArray = centred * along(scale).astype(np.float32)
    return result


class _IntegerProduct:
    """``DynamicQuantizeLinear(x) -> MatMulInteger/ConvInteger(W) [-> Add(int bias)] -> Cast
    -> Mul(x_scale * w_scale)``: the float product it stands for."""

    def __init__(self, index: _Index, node: onnx.NodeProto) -> None:
        self.node = node
        quantize = index.producers.get(node.input[0])
        if quantize is None or quantize.op_type != "DynamicQuantizeLinear":
            raise ValueError(f"{node.op_type} {node.name}: input is not dynamically quantized")
        if len(node.input) < 3 or node.input[2] != quantize.output[2]:
            raise ValueError(f"{node.op_type} {node.name}: unexpected input zero point")
        self.x = quantize.input[0]
        weights = index.constant(node.input[1])
        if weights is None:
            raise ValueError(f"{node.op_type} {node.name}: weights are not constant")
        self.weights = weights
        self.zero_point = index.constant(node.input[3]) if len(node.input) > 3 else None
        if len(node.input) > 3 and node.input[3] and self.zero_point is None:
            raise ValueError(f"{node.op_type} {node.name}: weight zero point is not constant")
        following = index.only_consumer(node.output[0])
        self.bias: str | None = None
        if following is not None and following.op_type == "Add":
            self.bias = _quantized_bias(index, _other(following, node.output[0]))
            following = index.only_consumer(following.output[0])
        if following is None or following.op_type != "Cast":
            raise ValueError(f"{node.op_type} {node.name}: no Cast after the integer product")
        rescale = index.only_consumer(following.output[0])
        if rescale is None or rescale.op_type != "Mul":
            raise ValueError(f"{node.op_type} {node.name}: no rescaling Mul")
        self.output = rescale.output[0]
        self.last = rescale
        scales = index.producers.get(_other(rescale, following.output[0]) or "")
        scale_name = _other(scales, quantize.output[1]) if scales is not None else None
        weight_scale = _float_constant(index, scale_name)
        if scales is None or scales.op_type != "Mul" or scale_name is None or weight_scale is None:
            raise ValueError(f"{node.op_type} {node.name}: weight scale not found")
        self.scale = weight_scale
        self.key = (
            node.op_type,
            node.input[1],
            node.input[3] if len(node.input) > 3 else "",
            scale_name,
        )

    def float_node(
        self, index: _Index, weights_cache: dict[tuple[str, ...], str]
    ) -> onnx.NodeProto:
        """The float MatMul/Conv; weights shared by several nodes (ALBERT's repeated layer) are
        dequantized once."""
        node = self.node
        matmul = node.op_type == "MatMulInteger"
        weights = weights_cache.get(self.key)
        if weights is None:
            values = _dequantized(
                self.weights, self.zero_point, self.scale, axis=-1 if matmul else 0
            )
            weights = index.add_initializer(f"{node.input[1]}_float", values)
            weights_cache[self.key] = weights
        if matmul:
            return helper.make_node(
                "MatMul", [self.x, weights], [self.output], name=index.fresh(f"{node.name}_float")
            )
        inputs = [self.x, weights] + ([self.bias] if self.bias is not None else [])
        return helper.make_node(
            "Conv",
            inputs,
            [self.output],
            name=index.fresh(f"{node.name}_float"),
            **_attributes(node),
        )


def _quantized_bias(index: _Index, name: str | None) -> str:
    """The float bias behind ``Reshape(Cast(Floor(Div(bias, x_scale * w_scale))))``, 1-D."""
    node = index.producers.get(name or "")
    while node is not None and node.op_type in ("Reshape", "Cast", "Floor", "Round"):
        node = index.producers.get(node.input[0])
    bias = _float_constant(index, node.input[0]) if node is not None else None
    if node is None or node.op_type != "Div" or bias is None:
        raise ValueError(f"integer bias {name} is not a quantized float constant")
    if bias.ndim == 1:
        return str(node.input[0])
    return index.add_initializer(f"{node.input[0]}_1d", bias.reshape(-1))


def _float_lstm(index: _Index, node: onnx.NodeProto) -> onnx.NodeProto:
    """``DynamicQuantizeLSTM`` as a float ``LSTM``: its W [D, input, 4H] and R [D, H, 4H]
    are dequantized and transposed to ONNX's [D, 4H, input] and [D, 4H, H]."""
    inputs = [*node.input, *[""] * 12][:12]
    float_inputs = list(inputs[:8])
    for position, (weights_name, scale_name, zero_name) in {
        1: (inputs[1], inputs[8], inputs[9]),
        2: (inputs[2], inputs[10], inputs[11]),
    }.items():
        weights = index.constant(weights_name)
        scale = _float_constant(index, scale_name)
        zero = index.constant(zero_name) if zero_name else None
        if weights is None or scale is None or weights.ndim != 3:
            raise ValueError(f"DynamicQuantizeLSTM {node.name}: weights or scales not constant")
        directions = weights.shape[0]
        # per direction [D] or per gate channel [D, 4H], along the last axis of [D, in, 4H]
        centred = weights.astype(np.float32)
        if zero is not None:
            centred -= zero.astype(np.float32).reshape(directions, 1, -1)
        values = (centred * scale.reshape(directions, 1, -1)).transpose(0, 2, 1)
        float_inputs[position] = index.add_initializer(
            f"{weights_name}_float", np.ascontiguousarray(values)
        )
    while float_inputs and not float_inputs[-1]:
        float_inputs.pop()
    return helper.make_node(
        "LSTM",
        float_inputs,
        list(node.output),
        name=index.fresh(f"{node.name}_float"),
        **_attributes(node),
    )


def _float_gather(index: _Index, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """``DequantizeLinear(Gather(table_q, ids))`` with a per-tensor scale as
    ``Gather(table, ids)``, or None."""
    gather = index.producers.get(node.input[0])
    if gather is None or gather.op_type != "Gather" or index.only_consumer(node.input[0]) is None:
        return None
    table = index.constant(gather.input[0])
    scale = _float_constant(index, node.input[1])
    zero = index.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if table is None or scale is None or scale.size != 1 or (zero is not None and zero.size != 1):
        return None
    values = _dequantized(table, zero, scale, axis=0)
    name = index.add_initializer(f"{gather.input[0]}_float", values)
    return helper.make_node(
        "Gather",
        [name, gather.input[1]],
        [node.output[0]],
        name=index.fresh(f"{gather.name}_float"),
        **_attributes(gather),
    )


def dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float32 reference of the int8 dynamic-quantized export.

    Why: the int8 graph quantizes every activation on the fly (``DynamicQuantizeLinear``),
    which makes its output jump under ulp-sized changes of any input; the float graph is the
    stable reference to measure other edits against (and the base for fp32/fp16 variants).
    Measured: 326 MB; 1.11x the int8 graph's time (2 threads); durations round differently,
    so audio lengths differ by a frame or two and the log-mel spectra (aligned) by 1.4-2 dB.

    Each ``DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> [Add(int bias)] -> Cast ->
    Mul(scale)`` chain becomes one float ``MatMul`` / ``Conv`` (with the float bias) on the
    un-quantized input, weights ``(w - zero_point) * scale`` per tensor or per channel as
    stored; ``DynamicQuantizeLSTM`` becomes ``LSTM``; quantized embedding tables read by
    ``Gather -> DequantizeLinear`` are stored in float. Unused nodes and initializers go.
    """
    edited = _copy(model)
    graph = edited.graph
    index = _Index(graph)
    replacements: dict[int, list[onnx.NodeProto]] = {}
    weights_cache: dict[tuple[str, ...], str] = {}
    for node in graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger") and not node.domain:
            product = _IntegerProduct(index, node)
            replacements[id(product.last)] = [product.float_node(index, weights_cache)]
        elif node.op_type == "DynamicQuantizeLSTM":
            replacements[id(node)] = [_float_lstm(index, node)]
        elif node.op_type == "DequantizeLinear" and not node.domain:
            gather = _float_gather(index, node)
            if gather is not None:
                replacements[id(node)] = [gather]
    _rebuild(graph, replacements)
    _prune(graph)
    left = [node.op_type for node in graph.node if node.op_type in _QUANTIZED_OPS]
    if left:
        raise ValueError(f"quantized nodes left after dequantizing: {sorted(set(left))}")
    onnx.checker.check_model(edited)
    return edited


# --- float16 storage ---------------------------------------------------------------------------

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def fp16_weights(model: onnx.ModelProto, *, min_elements: int = 16384) -> onnx.ModelProto:
    """Store every float32 weight tensor (2-D or more, at least ``min_elements`` values) as
    float16, read through a ``Cast`` back to float32.

    Why: it halves the weights on disk and in transfer (the float32 reference: 326 -> 163 MB;
    in the int8 graph only the generator's three float convolution weights qualify, 12 MB).
    ORT folds the Casts when it builds the session, so the computation stays float32 (this CPU
    has no float16 arithmetic) and as fast (measured 0.98-1.0x). Vectors and small tensors
    (biases, per-channel scales, LSTM biases, Snake alphas, the STFT basis) keep full
    precision, and so does any tensor with values beyond float16's range. Audio of the float
    reference: 20-27 dB SNR, log-mel within 0.26 dB, same length.
    """
    edited = _copy(model)
    graph = edited.graph
    index = _Index(graph)
    interface = {item.name for item in graph.input} | index.outputs
    casts: list[onnx.NodeProto] = []
    kept: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        if (
            tensor.data_type != TensorProto.FLOAT
            or tensor.name in interface
            or len(tensor.dims) < 2
            or math.prod(tensor.dims) < min_elements
        ):
            kept.append(tensor)
            continue
        values = numpy_helper.to_array(tensor)
        if not np.all(np.abs(values) <= _FLOAT16_MAX):
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(
            values.astype(np.float16), index.fresh(f"{tensor.name}_fp16")
        )
        kept.append(half)
        casts.append(
            helper.make_node(
                "Cast",
                [half.name],
                [tensor.name],
                name=index.fresh(f"{tensor.name}_to_float"),
                to=TensorProto.FLOAT,
            )
        )
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return _finish(edited)

"""Model variants: graphs derived from the shipped int8 model by reproducible edits.

Each variant is a recipe: a base (the shipped graph or another variant) and an edit. Building
writes ``<cache>/variants/<name>.onnx`` atomically with a manifest entry (recipe version, the
base's SHA-256, the file's SHA-256), after ``onnx.checker`` and an ONNX Runtime load. A variant
is rebuilt when its recipe version or its base changes, and its hash is verified on every load,
like the shipped model's. ``docs/variants.md`` has the measured report and the quality gate;
``DEFAULT_VARIANT`` is the fastest variant that passed it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from tqdm import tqdm

from app.errors import ModelFileError
from app.providers import CPU
from app.tts.chunking import Chunker
from app.tts.graph_edits import add_duration_cap
from app.tts.model_store import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SHA256,
    atomic_output,
    check_user_model,
    ensure_default_model,
    sha256_of,
)
from app.tts.normalize import normalize
from app.tts.phonemes import Phonemizer, Tokenizer, load_vocab
from app.tts.variant_edits import cheaper_snake, dequantize, fp16_weights, stft_as_conv
from app.tts.voices import VoiceBank

logger = logging.getLogger(__name__)

SHIPPED = "int8"
DEFAULT_VARIANT = "int8-fast"
"""The variant the server loads unless told otherwise: the fastest that passed the quality gate
in the report of docs/variants.md (3% less model time than the shipped graph, which is within
this machine's noise: the passing variants measured 0.94x to 1.03x)."""
VARIANTS_DIR = "variants"
MANIFEST = "manifest.json"

CALIBRATION_SENTENCES = (
    "Hello.",
    "The quick brown fox jumps over the lazy dog.",
    "Streaming speech synthesis lets a voice agent answer in a fraction of a second.",
    "Could you tell me how to get to the railway station from here?",
    "In 1969, two astronauts walked on the Moon while millions watched on television.",
    "Please remember to bring your passport, your ticket, and a warm coat.",
    "On a clear morning in early spring, the old harbour town woke slowly, and fishermen "
    "checked their nets while the bakery on the corner filled the street with the smell of "
    "fresh bread.",
    "Wow! That was unexpected; nobody thought the little team would win the final.",
)
"""Real sentences for static quantization's activation ranges (never random tokens): short and
long, questions, numbers, exclamations."""
CALIBRATION_VOICES = ("jm_kumo", "jf_alpha")


@dataclass(frozen=True, slots=True)
class Calibration:
    """Model inputs from real phonemized sentences and real voice styles."""

    feeds: tuple[dict[str, np.ndarray[Any, Any]], ...]


Edit = Callable[[onnx.ModelProto, Path, Calibration | None], onnx.ModelProto]


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    summary: str
    base: str | None
    """The variant it is built from; None for the shipped graph itself."""
    edit: Edit | None
    """None with a base: the base's file, served with other engine settings."""
    version: int = 1
    """Bump when the edit changes: built files of an older version are rebuilt."""
    needs_calibration: bool = False
    tail_frames: int | None = None
    """Engine setting: cap (25 ms frames) on the pause rendered after a segment's last word."""
    cpu_only: bool = False
    """Saved with ONNX Runtime's CPU fusions: an accelerator plan serves its base instead."""


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a line per tensor on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def _graph_edit(function: Callable[[onnx.ModelProto], onnx.ModelProto]) -> Edit:
    return lambda model, _work, _calibration: function(model)


def _dynamic(op_types: Sequence[str]) -> Edit:
    """ONNX Runtime's dynamic quantization, per channel, of the float reference."""

    def edit(
        model: onnx.ModelProto, work: Path, _calibration: Calibration | None
    ) -> onnx.ModelProto:
        target = work / "quantized.onnx"
        with _quiet_quantizer():
            quantize_dynamic(
                model,
                target,
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types),
                extra_options={"MatMulConstBOnly": True},
            )
        return onnx.load(str(target))

    return edit


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, calibration: Calibration) -> None:
        self._feeds = iter(calibration.feeds)

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        return next(self._feeds, None)


def _static_qdq(
    model: onnx.ModelProto, work: Path, calibration: Calibration | None
) -> onnx.ModelProto:
    """Static QDQ quantization, per channel, with activation ranges from real sentences."""
    if calibration is None:
        raise ValueError("static quantization needs calibration inputs")
    source, target = work / "float.onnx", work / "quantized.onnx"
    onnx.save(model, str(source))
    with _quiet_quantizer():
        quantize_static(
            source,
            target,
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Conv"],
            extra_options={"MatMulConstBOnly": True},
        )
    return onnx.load(str(target))


def _ort_optimized(
    model: onnx.ModelProto, work: Path, _calibration: Calibration | None
) -> onnx.ModelProto:
    """The graph as ONNX Runtime's CPU provider optimizes it at the ``extended`` level (fusions,
    constant folding), saved so that a session skips that work at load; the duration edit is
    applied first, since the fusions change the nodes it looks for. Layout optimizations
    (``all``) still run at load: they depend on the CPU and are not saved."""
    add_duration_cap(model)
    target = work / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(target))


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(SHIPPED, "the shipped graph: int8 dynamic quantization, per tensor", None, None),
        Variant(
            "fp32", "weights dequantized, float MatMul/Conv/LSTM", SHIPPED, _graph_edit(dequantize)
        ),
        Variant(
            "int8-pc-matmul",
            "fp32 re-quantized: int8 dynamic, per channel, MatMul only",
            "fp32",
            _dynamic(["MatMul"]),
        ),
        Variant(
            "int8-pc",
            "fp32 re-quantized: int8 dynamic, per channel, MatMul and Conv",
            "fp32",
            _dynamic(["MatMul", "Conv"]),
        ),
        Variant(
            "int8-qdq",
            "fp32 re-quantized: int8 static QDQ, per channel, calibrated on real sentences",
            "fp32",
            _static_qdq,
            needs_calibration=True,
        ),
        Variant("fp16", "fp32 with weights stored as float16", "fp32", _graph_edit(fp16_weights)),
        Variant(
            "int8-stft-conv",
            "shipped graph, STFT computed as one strided Conv",
            SHIPPED,
            _graph_edit(stft_as_conv),
        ),
        Variant(
            "int8-snake",
            "shipped graph, Snake activation without the single-threaded Sin",
            SHIPPED,
            _graph_edit(cheaper_snake),
        ),
        Variant(
            "int8-fast",
            "shipped graph with both: STFT as Conv and the cheaper Snake",
            "int8-snake",
            _graph_edit(stft_as_conv),
        ),
        Variant(
            "int8-fast-trim",
            "int8-fast with the pause after a segment's last word capped at 125 ms",
            "int8-fast",
            None,
            tail_frames=5,
        ),
        Variant(
            "int8-ort",
            "shipped graph saved as ONNX Runtime optimizes it (CPU only): faster session load",
            SHIPPED,
            _ort_optimized,
            cpu_only=True,
        ),
        Variant(
            "int8-fast-ort",
            "int8-fast saved as ONNX Runtime optimizes it (CPU only): faster session load",
            "int8-fast",
            _ort_optimized,
            cpu_only=True,
        ),
    )
}


def tail_frames_of(variant: str | None) -> int | None:
    """The engine's ``tail_frames`` for a served variant (None: a user's model)."""
    return _lookup(variant).tail_frames if variant else None


def _lookup(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ModelFileError(
            f"unknown model variant {name!r}; known: {', '.join(VARIANTS)}"
        ) from None


def _chain(name: str) -> list[Variant]:
    """The recipes from the shipped graph to ``name``, in build order."""
    chain = [_lookup(name)]
    while chain[-1].base is not None:
        chain.append(_lookup(chain[-1].base))
    return chain[::-1]


class VariantStore:
    """Built variants in ``<cache>/variants``, with a manifest of what each was built from."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.directory = cache_dir / VARIANTS_DIR

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.onnx"

    def manifest(self) -> dict[str, dict[str, Any]]:
        try:
            loaded: dict[str, dict[str, Any]] = json.loads((self.directory / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    def _record(self, name: str, entry: dict[str, Any]) -> None:
        manifest = self.manifest()
        manifest[name] = entry
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.directory / MANIFEST) as out:
            out.write(json.dumps(manifest, indent=2).encode())

    def sha256(self, name: str) -> str:
        """The expected hash of a variant's file (the shipped graph's is known)."""
        variant = _lookup(name)
        if variant.base is None:
            return DEFAULT_MODEL_SHA256
        if variant.edit is None:
            return self.sha256(variant.base)
        return str(self.manifest()[name]["sha256"])

    def is_current(self, name: str) -> bool:
        """Every edit on the way to ``name`` is built with its current recipe from its base's
        current bytes, and its file is intact."""
        return all(self._is_fresh(v) for v in _chain(name) if v.edit is not None)

    def _is_fresh(self, variant: Variant) -> bool:
        """This edit's own file is intact and built from its base's current hash (the base is
        checked on its own, once, by the caller walking the chain)."""
        assert variant.base is not None
        entry = self.manifest().get(variant.name)
        path = self.path(variant.name)
        return (
            entry is not None
            and entry.get("version") == variant.version
            and entry.get("base_sha256") == self.sha256(variant.base)
            and path.is_file()
            and sha256_of(path) == entry.get("sha256")
        )

    def ensure(self, name: str, *, progress: bool = False) -> Path:
        """The variant's file, building it (and its bases) if missing or stale; each file on
        the chain is hashed once."""
        for variant in _chain(name):
            if variant.base is None:
                ensure_default_model(self.cache_dir)
            elif variant.edit is not None and not self._is_fresh(variant):
                self._build(variant, progress=progress)
        return self._built_file(name)

    def _built_file(self, name: str) -> Path:
        """Where an already ensured variant's graph is, without checking it again."""
        variant = _lookup(name)
        while variant.edit is None and variant.base is not None:
            variant = _lookup(variant.base)
        if variant.base is None:
            return self.cache_dir / DEFAULT_MODEL_NAME
        return self.path(variant.name)

    def _build(self, variant: Variant, *, progress: bool) -> None:
        assert variant.base is not None and variant.edit is not None
        base_path = self._built_file(variant.base)  # ensured earlier on the chain
        logger.info("building model variant %s from %s", variant.name, variant.base)
        started = time.perf_counter()
        steps = tqdm(total=4, desc=variant.name, unit="step", disable=not progress, leave=True)
        with steps, tempfile.TemporaryDirectory(prefix="kokoro-variant-") as work:
            steps.set_postfix_str("load")
            model = onnx.load(str(base_path))
            steps.update()
            calibration = calibration_inputs() if variant.needs_calibration else None
            steps.set_postfix_str("edit")
            edited = variant.edit(model, Path(work), calibration)
            steps.update()
            steps.set_postfix_str("check")
            data = _checked(edited, variant.name, Path(work))
            steps.update()
            steps.set_postfix_str("write")
            with atomic_output(self.path(variant.name)) as out:
                out.write(data)
            steps.update()
        self._record(
            variant.name,
            {
                "version": variant.version,
                "base": variant.base,
                "base_sha256": self.sha256(variant.base),
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "build_seconds": round(time.perf_counter() - started, 1),
                "onnxruntime": ort.__version__,
                "onnx": onnx.__version__,
            },
        )


def _checked(model: onnx.ModelProto, name: str, work: Path) -> bytes:
    """Serialized after ``onnx.checker`` and an ONNX Runtime load (a file over 2 GB is checked
    by path, which protobuf requires)."""
    data: bytes = model.SerializeToString()
    path = work / "checked.onnx"
    path.write_bytes(data)
    try:
        onnx.checker.check_model(str(path), full_check=False)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnx and onnxruntime raise several unrelated types
        raise ModelFileError(f"variant {name} failed its checks: {error}") from None
    return data


def calibration_inputs() -> Calibration:
    """Feeds for the raw graph (no duration edit) from ``CALIBRATION_SENTENCES`` spoken by
    ``CALIBRATION_VOICES``."""

    voices = VoiceBank.load(None)
    chunker = Chunker(Phonemizer("en-us").phonemize, Tokenizer(load_vocab()).encode)
    feeds: list[dict[str, np.ndarray[Any, Any]]] = []
    for text in CALIBRATION_SENTENCES:
        for chunk in chunker.split(normalize(text).text):
            for voice in CALIBRATION_VOICES:
                feeds.append(
                    {
                        "tokens": np.array([[0, *chunk.tokens, 0]], dtype=np.int64),
                        "style": voices.style(voice, len(chunk.tokens)).reshape(1, -1),
                        "speed": np.ones(1, dtype=np.float32),
                    }
                )
    return Calibration(tuple(feeds))


def variant_of(user_path: Path | None, variant: str, provider: str = CPU) -> str | None:
    """The variant served: the chosen or default one (its base where it is CPU-only and the
    provider is not the CPU); None for a user's own model."""
    if user_path is not None:
        return None
    chosen = _lookup(variant or DEFAULT_VARIANT)
    if chosen.cpu_only and provider != CPU and chosen.base is not None:
        return chosen.base
    return chosen.name


def resolve_model(
    user_path: Path | None, cache_dir: Path, variant: str = "", provider: str = CPU
) -> Path:
    """The model to load: the user's file if given, else the chosen (or default) variant of
    the embedded model for ``provider``, built on first use."""
    if user_path is not None:
        if variant:
            raise ModelFileError(
                "variants are built from the embedded model; do not combine a variant with "
                "your own model file"
            )
        return check_user_model(user_path)
    served = variant_of(None, variant, provider)
    assert served is not None
    if served != (variant or DEFAULT_VARIANT):
        logger.info(
            "variant %s is CPU-only; %s serves %s", variant or DEFAULT_VARIANT, provider, served
        )
    return VariantStore(cache_dir).ensure(served)


def iter_built(
    cache_dir: Path, names: Sequence[str], *, progress: bool
) -> Iterator[tuple[str, Path]]:
    """Build (if needed) and yield each named variant's file."""
    store = VariantStore(cache_dir)
    for name in names:
        yield name, store.ensure(name, progress=progress)

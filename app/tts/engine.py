"""The inference engine: the one place that owns an ONNX Runtime session.

``Engine`` turns (tokens, style, speed) into float32 audio at 24 kHz. Its session options are
explicit (threads, graph optimisation, providers) rather than ONNX Runtime's defaults, and every
call runs on the engine's own worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.errors import ModelFileError
from app.tts.chunking import MAX_TOKENS

SAMPLE_RATE = 24_000
PAD_TOKEN = 0
REQUIRED_INPUTS = ("tokens", "style", "speed")

Audio = npt.NDArray[np.float32]
T = TypeVar("T")

_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How to build the session."""

    model_path: Path
    intra_op_threads: int = 2
    graph_optimization: str = "all"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


@dataclass(frozen=True, slots=True)
class Synthesis:
    """One model call's audio and how long it took."""

    audio: Audio
    gen_seconds: float

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def session_options(config: EngineConfig) -> ort.SessionOptions:
    """Explicit session options: sequential execution, fixed thread count, chosen optimisation."""
    if config.intra_op_threads < 0:
        raise ValueError(f"intra_op_threads must be >= 0, got {config.intra_op_threads}")
    if config.graph_optimization not in _OPTIMIZATION_LEVELS:
        raise ValueError(
            f"graph_optimization must be one of {sorted(_OPTIMIZATION_LEVELS)}, "
            f"got {config.graph_optimization!r}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[config.graph_optimization]
    options.log_severity_level = 3
    return options


def _open_session(config: EngineConfig) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(
            str(config.model_path), session_options(config), providers=list(config.providers)
        )
    except Exception as error:  # onnxruntime raises several unrelated types for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ModelFileError(
            f"cannot load model {config.model_path}: not a valid ONNX model ({first_line[:200]})"
        ) from None
    names = {item.name for item in session.get_inputs()}
    missing = [name for name in REQUIRED_INPUTS if name not in names]
    if missing:
        raise ModelFileError(
            f"model {config.model_path} is not a Kokoro graph: missing inputs {missing} "
            f"(has {sorted(names)})"
        )
    return session


class Aborted(Exception):
    """An inference call was terminated on request (its stream was cancelled)."""


class Engine:
    """One ONNX Runtime session and the single worker thread that runs it."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._session = _open_session(config)
        self._output = self._session.get_outputs()[0].name
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kokoro-engine"
        )

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    def synthesize(
        self,
        tokens: Sequence[int],
        style: npt.NDArray[np.float32],
        speed: float,
        run_options: ort.RunOptions | None = None,
    ) -> Synthesis:
        """Blocking inference; call it through ``call`` so it runs on the engine's thread.

        Setting ``run_options.terminate`` from another thread aborts the call (``Aborted``).
        """
        if not 1 <= len(tokens) <= MAX_TOKENS:
            raise ValueError(f"a model call takes 1..{MAX_TOKENS} tokens, got {len(tokens)}")
        feed = {
            "tokens": np.array([[PAD_TOKEN, *tokens, PAD_TOKEN]], dtype=np.int64),
            "style": np.asarray(style, dtype=np.float32).reshape(1, -1),
            "speed": np.array([speed], dtype=np.float32),
        }
        started = time.perf_counter()
        try:
            (audio,) = self._session.run([self._output], feed, run_options)
        except Exception:
            if run_options is not None and run_options.terminate:
                raise Aborted("inference was aborted") from None
            raise
        elapsed = time.perf_counter() - started
        return Synthesis(np.asarray(audio, dtype=np.float32).reshape(-1), elapsed)

    async def call(self, function: Callable[[], T]) -> T:
        """Run blocking work (inference and what feeds it) on the engine's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

"""The inference engine: the one place that owns an ONNX Runtime session.

``Engine`` turns (tokens, style, speed) into float32 audio at 24 kHz. Its session options are
explicit (threads, graph optimisation, providers) rather than ONNX Runtime's defaults, and every
call runs on the engine's own worker thread, never on the event loop.

The graph is loaded with the duration edit (``graph_edits``) when it applies, so each call also
reports its per-token durations, and ``tail_frames`` can cap the pause rendered for a segment's
closing punctuation. The cap is off by default: on streamed paragraphs it saved 3% of the
compute, and because the model's pitch and energy predictor reads the frames in both directions,
it changes the prosody of the whole segment slightly (Whisper heard 2 of 150 words differently
with ``jf_alpha``, none with ``jm_kumo``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from app.errors import ModelFileError
from app.tts.chunking import MAX_TOKENS
from app.tts.decoder_split import ASR, ENERGY, F0, SplitError, Window, decoder_feed, split_graph
from app.tts.graph_edits import (
    DURATION_CAP_INPUT,
    DURATIONS_OUTPUT,
    add_duration_cap,
    has_duration_cap,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
PAD_TOKEN = 0
REQUIRED_INPUTS = ("tokens", "style", "speed")

Audio = npt.NDArray[np.float32]
T = TypeVar("T")

ALLOW_SPINNING = "session.intra_op.allow_spinning"

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
    tail_frames: int | None = None
    """Cap (in 25 ms frames) on each trailing pause token and the end pad after them; None (the
    default) renders them in full. 5 frames (125 ms) keep the speech's release."""
    pause_tokens: frozenset[int] = frozenset()
    """Token ids that are silence (punctuation, space): trailing ones are capped."""
    spin_wait: bool = True
    """Let ONNX Runtime's intra-op threads spin while waiting for work (its default). Spinning
    saves a little latency on an idle machine, but the spinning threads take CPU from everything
    else on it: at saturation on 2 cores (a server, its clients and a load generator), the
    server made 0.86 of the raw loop's audio per engine-second with spinning and 1.04 without
    (docs/benchmarks.md)."""
    windowed: bool = False
    """Run the graph in two halves (``decoder_split``): the text side, then the decoder, so a
    segment's first frames can be decoded on their own (``Engine.text_side``, ``decode``).
    The halves together give the whole graph's samples; the graph needs the duration edit."""
    arena_shrinkage: bool = False
    """Return the CPU arena's free memory to the system after every call. A long call grows the
    arena to its peak and the arena otherwise keeps it. Measured (``bench memory``): 377 MB
    resident after the calls instead of 535-924 MB, but up to 11% slower when calls follow each
    other (each allocates its arena again)."""


@dataclass(frozen=True, slots=True)
class Synthesis:
    """One model call's audio and how long it took."""

    audio: Audio
    gen_seconds: float
    durations: npt.NDArray[np.int64] | None = None
    """Frames per token, pads included (None if the graph does not expose them)."""

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
    if not config.spin_wait:
        options.add_session_config_entry(ALLOW_SPINNING, "0")
    return options


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else repr(error))[:200]


def _edited_graph(path: Path) -> bytes | None:
    """The graph with the duration cap, serialised; None if it does not apply."""
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises its own DecodeError, among others
        raise ModelFileError(
            f"cannot load model {path}: not a valid ONNX model ({_first_line(error)})"
        ) from None
    if has_duration_cap(model):
        return None  # edited when it was built (a variant): ONNX Runtime reads the file itself
    try:
        applied = add_duration_cap(model)
    except Exception as error:  # onnx.checker rejects the edited graph
        logger.warning("model %s: duration cap not applied (%s)", path, _first_line(error))
        return None
    if not applied:
        logger.info("model %s has no recognisable duration step; no duration cap", path)
        return None
    serialised: bytes = model.SerializeToString()
    return serialised


def load_graph(path: Path) -> str | bytes:
    """What ONNX Runtime loads: the edited graph's bytes, or the path if the edit does not apply.

    Loading and editing takes about 0.4 s: several sessions of one graph share one load
    (``open_engines``)."""
    return _edited_graph(path) or str(path)


def _open_session(config: EngineConfig, source: str | bytes) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(
            source, session_options(config), providers=list(config.providers)
        )
    except Exception as error:  # onnxruntime raises several unrelated types for bad files
        raise ModelFileError(
            f"cannot load model {config.model_path}: not a valid ONNX model ({_first_line(error)})"
        ) from None
    names = {item.name for item in session.get_inputs()}
    missing = [name for name in REQUIRED_INPUTS if name not in names]
    if missing:
        raise ModelFileError(
            f"model {config.model_path} is not a Kokoro graph: missing inputs {missing} "
            f"(has {sorted(names)})"
        )
    return session


ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"


def with_shrinkage(run_options: ort.RunOptions) -> ort.RunOptions:
    """``run_options`` with arena shrinkage, set once (ONNX Runtime logs a warning each time an
    entry is set again, and one job's options serve several runs)."""
    try:
        run_options.get_run_config_entry(ARENA_SHRINKAGE)
    except RuntimeError:  # not set yet
        run_options.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
    return run_options


TIMED_FRAMES = 40
"""Calls shorter than this (1 s of audio) do not update ``Engine.seconds_per_frame``."""
TIMING_WEIGHT = 0.3
"""Weight of the newest call in ``Engine.seconds_per_frame``."""


class Aborted(Exception):
    """An inference call was terminated on request (its stream was cancelled)."""


def tail_caps(
    tokens: Sequence[int], pause_tokens: frozenset[int], tail_frames: int
) -> npt.NDArray[np.float32]:
    """The ``duration_cap`` input: ``tail_frames`` for the trailing pause tokens and the end pad
    after them, no cap (infinity) elsewhere.

    A segment cut between words has no trailing pause: there the model draws the last sound out
    over the end pad's frames, so nothing is capped.
    """
    caps = np.full((1, len(tokens) + 2), np.inf, dtype=np.float32)
    position = len(tokens) - 1
    while position >= 0 and tokens[position] in pause_tokens:
        caps[0, position + 1] = tail_frames
        position -= 1
    if position < len(tokens) - 1:
        caps[0, -1] = tail_frames
    return caps


@dataclass(frozen=True, slots=True)
class TextSide:
    """The text side's outputs for one call: the decoder's inputs and the durations."""

    asr: npt.NDArray[np.float32]
    f0: npt.NDArray[np.float32]
    energy: npt.NDArray[np.float32]
    style: npt.NDArray[np.float32]
    durations: npt.NDArray[np.int64]
    gen_seconds: float

    @property
    def frames(self) -> int:
        return int(self.asr.shape[2])


def _split_sessions(
    config: EngineConfig, source: str | bytes
) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """The text-side and decoder sessions of the (duration-edited) graph."""
    model = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    if not has_duration_cap(model):
        raise ModelFileError(
            f"model {config.model_path}: windowed decoding needs the duration edit, which does "
            "not apply to this graph"
        )
    try:
        split = split_graph(model)
    except SplitError as error:
        raise ModelFileError(f"model {config.model_path}: {error}") from None
    options = session_options(config)
    providers = list(config.providers)
    text = ort.InferenceSession(split.text.SerializeToString(), options, providers=providers)
    decoder = ort.InferenceSession(split.decoder.SerializeToString(), options, providers=providers)
    return text, decoder


class Engine:
    """One ONNX Runtime session (two with ``config.windowed``) and the single worker thread that
    runs it."""

    def __init__(self, config: EngineConfig, graph: str | bytes | None = None) -> None:
        """``graph`` is ``load_graph(config.model_path)`` when the caller already has it."""
        if config.tail_frames is not None and config.tail_frames < 1:
            raise ValueError(f"tail_frames must be >= 1 or None, got {config.tail_frames}")
        self.config = config
        source = graph if graph is not None else load_graph(config.model_path)
        self._text_session: ort.InferenceSession | None = None
        if config.windowed:
            self._text_session, self._session = _split_sessions(config, source)
            inputs = self._text_session.get_inputs()
            self._output = "audio"
        else:
            self._session = _open_session(config, source)
            inputs = self._session.get_inputs()
            self._output = self._session.get_outputs()[0].name
        names = {item.name for item in inputs}
        self.has_durations = DURATION_CAP_INPUT in names
        """The edit applied: calls report durations and ``tail_frames`` takes effect."""
        style_shape = next(i.shape for i in inputs if i.name == "style")
        self._style_width = style_shape[-1] if isinstance(style_shape[-1], int) else 256
        self._outputs = [self._output, DURATIONS_OUTPUT] if self.has_durations else [self._output]
        self.seconds_per_frame: float | None = None
        """Recent calls' time per 25 ms frame (a moving average over calls of at least
        ``TIMED_FRAMES`` frames, the session's first call left out: it pays ONNX Runtime's
        first-run costs): how long a segment's decode will take."""
        self._warm = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kokoro-engine"
        )
        self.shrink_arena = config.arena_shrinkage
        """Give the arena's free memory back after each call (the memory monitor turns it on
        under pressure; ``config.arena_shrinkage`` keeps it on)."""
        self.arena_dirty = False
        """A call ran without shrinking since the last release: the arena may hold its peak."""

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def session(self) -> ort.InferenceSession:
        """The session that renders audio (the decoder's, when windowed)."""
        return self._session

    @property
    def windowed(self) -> bool:
        return self._text_session is not None

    def _feed(
        self, tokens: Sequence[int], style: npt.NDArray[np.float32], speed: float
    ) -> dict[str, npt.NDArray[np.float32] | npt.NDArray[np.int64]]:
        if not 1 <= len(tokens) <= MAX_TOKENS:
            raise ValueError(f"a model call takes 1..{MAX_TOKENS} tokens, got {len(tokens)}")
        feed: dict[str, npt.NDArray[np.float32] | npt.NDArray[np.int64]] = {
            "tokens": np.array([[PAD_TOKEN, *tokens, PAD_TOKEN]], dtype=np.int64),
            "style": np.asarray(style, dtype=np.float32).reshape(1, -1),
            "speed": np.array([speed], dtype=np.float32),
        }
        if self.has_durations:
            tail = self.config.tail_frames
            feed[DURATION_CAP_INPUT] = (
                tail_caps(tokens, self.config.pause_tokens, tail)
                if tail is not None
                else np.full((1, len(tokens) + 2), np.inf, dtype=np.float32)
            )
        return feed

    def _run(
        self,
        session: ort.InferenceSession,
        outputs: list[str],
        feed: Mapping[str, npt.NDArray[Any]],
        run_options: ort.RunOptions | None,
    ) -> list[npt.NDArray[Any]]:
        """One session run, aborted (``Aborted``) when ``run_options.terminate`` is set."""
        shrink = self.shrink_arena
        if shrink:
            run_options = with_shrinkage(run_options or ort.RunOptions())
        try:
            results: list[npt.NDArray[Any]] = session.run(outputs, dict(feed), run_options)
        except Exception:
            if run_options is not None and run_options.terminate:
                raise Aborted("inference was aborted") from None
            raise
        self.arena_dirty = not shrink
        return results

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
        if self.windowed:
            started = time.perf_counter()
            side = self.text_side(tokens, style, speed, run_options)
            samples = self.decode(side, Window.whole(side.frames), run_options)
            elapsed = time.perf_counter() - started
            self.record_speed(side.frames, elapsed)
            return Synthesis(samples, elapsed, side.durations)
        feed = self._feed(tokens, style, speed)
        started = time.perf_counter()
        results = self._run(self._session, self._outputs, feed, run_options)
        elapsed = time.perf_counter() - started
        audio = np.asarray(results[0], dtype=np.float32).reshape(-1)
        durations = (
            np.asarray(results[1]).reshape(-1).astype(np.int64) if self.has_durations else None
        )
        if durations is not None:
            self.record_speed(int(durations.sum()), elapsed)
        return Synthesis(audio, elapsed, durations)

    def text_side(
        self,
        tokens: Sequence[int],
        style: npt.NDArray[np.float32],
        speed: float,
        run_options: ort.RunOptions | None = None,
    ) -> TextSide:
        """The text side of a windowed engine's call (blocking, on the engine's thread)."""
        if self._text_session is None:
            raise RuntimeError("the engine is not windowed")
        feed = self._feed(tokens, style, speed)
        started = time.perf_counter()
        asr, f0, energy, durations = self._run(
            self._text_session, [ASR, F0, ENERGY, DURATIONS_OUTPUT], feed, run_options
        )
        return TextSide(
            np.asarray(asr, dtype=np.float32),
            np.asarray(f0, dtype=np.float32),
            np.asarray(energy, dtype=np.float32),
            np.asarray(feed["style"], dtype=np.float32),
            np.asarray(durations).reshape(-1).astype(np.int64),
            time.perf_counter() - started,
        )

    def decode(
        self, side: TextSide, window: Window, run_options: ort.RunOptions | None = None
    ) -> Audio:
        """A window's kept audio, decoded from ``side`` (blocking, on the engine's thread)."""
        feed = decoder_feed(side.asr, side.f0, side.energy, side.style, window)
        (audio,) = self._run(self._session, [self._output], feed, run_options)
        return window.keep(np.asarray(audio, dtype=np.float32).reshape(-1))

    def record_speed(self, frames: int, seconds: float) -> None:
        """A ``frames``-frame call took ``seconds``: update ``seconds_per_frame``."""
        if not self._warm:
            self._warm = True
            return
        if frames < TIMED_FRAMES:
            return  # a short call's fixed costs would inflate the figure
        measured = seconds / frames
        previous = self.seconds_per_frame
        self.seconds_per_frame = (
            measured if previous is None else previous + TIMING_WEIGHT * (measured - previous)
        )

    def release_arena(self) -> None:
        """Give the arena's free memory back now: a one-token call with shrinkage (0.15 s
        here; after a 248-token call resident memory went from 729 to 371 MB)."""
        options = ort.RunOptions()
        options.add_run_config_entry(ARENA_SHRINKAGE, "cpu:0")
        self.synthesize([PAD_TOKEN], np.zeros(self._style_width, dtype=np.float32), 1.0, options)
        self.arena_dirty = False

    async def call(self, function: Callable[[], T]) -> T:
        """Run blocking work (inference and what feeds it) on the engine's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function)

    def close(self, *, cancel_pending: bool = True) -> None:
        """Stop the engine's thread after the call it is running (and, unless
        ``cancel_pending``, after the calls queued behind it)."""
        self._executor.shutdown(wait=True, cancel_futures=cancel_pending)


def open_engines(config: EngineConfig, count: int) -> list[Engine]:
    """``count`` sessions of one graph (loaded and edited once); all closed if one fails."""
    graph = load_graph(config.model_path)
    engines: list[Engine] = []
    try:
        for _ in range(count):
            engines.append(Engine(config, graph))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines

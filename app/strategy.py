"""Choosing the provider plan at startup, and remembering the choice.

A provider plan (``app.providers``) says how inference is laid out: N ONNX Runtime sessions with
T intra-op threads each. Which plan is best depends on the machine, so it is measured rather than
guessed: every candidate plan synthesizes a fixed calibration set and gets two numbers,

* ``first_segment_ms``: how long one session takes for the shortest calibration sentence while
  the others are idle, i.e. how long a new stream waits for its first audio on a quiet server;
* ``throughput``: audio seconds produced per wall-clock second while every session is busy, i.e.
  how many real-time streams the server can carry.

``choose`` trades them off with the rule in ``CHOICE_RULE``.

Measuring takes seconds to minutes, so the result is cached on disk. The cache key is a
fingerprint of everything that changes the answer (model file, ONNX Runtime version, available
providers, candidate plans, CPU, usable cores, the threading environment variables, the
calibration set, the result format); a changed fingerprint or an expired entry means a new
benchmark. A cache that cannot be read is treated as missing, never as an error: the server can
always benchmark again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.bench import cpu_model as read_cpu_model
from app.providers import CPU, ProviderPlan, usable_cores
from app.tts.engine import SAMPLE_RATE, Engine, EngineConfig, load_graph
from app.tts.model_store import sha256_of
from app.tts.synthesizer import Synthesizer

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
"""Version of the cached result's format and of the measurement method; bump it when either
changes so old results are not reused."""

LATENCY_TOLERANCE = 1.25
"""How much worse than the best first-segment latency a plan may be and still be chosen."""

CHOICE_RULE = (
    "Among the plans whose first-segment latency is at most 1.25x the lowest, take the one with "
    "the highest throughput (audio seconds per wall-clock second with every session busy); ties "
    "go to the lower latency, then to the plan name. The server carries many real-time streams at "
    "once, so throughput is its capacity, but every new stream waits for its first segment, so up "
    "to 25% worse first-audio latency is accepted in exchange for more capacity."
)

CALIBRATION_TEXTS: tuple[str, ...] = (
    "Good morning, everyone.",
    "The train to the coast leaves from platform four every hour.",
    "When the storm finally passed, the whole village came out to clear the fallen branches "
    "from the narrow roads.",
    "Our library opens at nine on weekdays and at ten on weekends, and visitors can borrow up "
    "to six books at a time, reserve a quiet room for study, or join the reading group that "
    "meets in the garden on the first Thursday of every month.",
)
"""Four sentences of about 3, 10, 20 and 40 words: the shortest is what a new stream's first
segment looks like, the set together is a mix of segment lengths for throughput."""

CALIBRATION_SPEED = 1.0

RELEVANT_ENV = frozenset(
    {
        "OMP_NUM_THREADS",
        "OMP_WAIT_POLICY",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
        "KOKORO_SPIN_WAIT",
        "KOKORO_ARENA_SHRINKAGE",
        "KOKORO_FIRST_SEGMENT",  # windowed: each session is the graph's two halves
    }
)
"""Environment variables that change inference speed (besides every ``ORT_*`` one)."""
RELEVANT_ENV_PREFIX = "ORT_"


# --- fingerprint -------------------------------------------------------------------------------


def relevant_environment(environ: Mapping[str, str]) -> str:
    """The speed-relevant environment variables as ``NAME=value`` sorted and joined by ``;``.

    Only these go into the fingerprint: anything else (HOME, PATH, ...) would invalidate the
    cache for no reason.
    """
    names = sorted(
        name for name in environ if name in RELEVANT_ENV or name.startswith(RELEVANT_ENV_PREFIX)
    )
    return ";".join(f"{name}={environ[name]}" for name in names)


def calibration_digest(voice: str, texts: Sequence[str] = CALIBRATION_TEXTS) -> str:
    """SHA-256 of the calibration set: other texts or another voice measure something else."""
    canonical = json.dumps({"texts": list(texts), "voice": voice}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint_components(
    *,
    model_sha256: str,
    candidates: Sequence[ProviderPlan],
    available_providers: Sequence[str],
    cores: int,
    cpu_model: str,
    environ: Mapping[str, str],
    ort_version: str,
    voice: str,
    calibration_texts: Sequence[str] = CALIBRATION_TEXTS,
    schema: str = SCHEMA_VERSION,
) -> dict[str, str]:
    """Everything that changes which plan wins, one named string each (pure).

    Kept as separate components rather than one hash so a cache miss can say what changed.
    """
    return {
        "model_sha256": model_sha256,
        "onnxruntime": ort_version,
        "providers": ",".join(sorted(available_providers)),
        "plans": ",".join(plan.name for plan in candidates),
        "cpu_model": cpu_model,
        "cores": str(cores),
        "env": relevant_environment(environ),
        "calibration": calibration_digest(voice, calibration_texts),
        "schema": schema,
    }


def current_components(
    model_path: Path,
    model_sha256: str | None,
    candidates: Sequence[ProviderPlan],
    voice: str,
) -> dict[str, str]:
    """The fingerprint components of this process on this machine.

    ``model_sha256`` may be passed when already known (the model store verifies the default
    model's hash), since hashing the file costs a read of it.
    """
    return fingerprint_components(
        model_sha256=model_sha256 if model_sha256 is not None else sha256_of(model_path),
        candidates=candidates,
        available_providers=ort.get_available_providers(),
        cores=usable_cores(),
        cpu_model=read_cpu_model(),
        environ=os.environ,
        ort_version=ort.__version__,
        voice=voice,
    )


def fingerprint_key(components: Mapping[str, str]) -> str:
    """SHA-256 hex of the components' canonical JSON: the cache key."""
    canonical = json.dumps(dict(components), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- benchmark ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CalibrationItem:
    """One calibration sentence, phonemized, with its voice's style row."""

    text: str
    tokens: tuple[int, ...]
    style: npt.NDArray[np.float32]


class SynthesisLike(Protocol):
    @property
    def audio(self) -> npt.NDArray[np.float32]: ...

    @property
    def gen_seconds(self) -> float: ...


class EngineLike(Protocol):
    """What the benchmark needs from an engine (``app.tts.engine.Engine`` is one)."""

    def synthesize(
        self, tokens: Sequence[int], style: npt.NDArray[np.float32], speed: float
    ) -> SynthesisLike: ...


E = TypeVar("E", bound=EngineLike)


@dataclass(frozen=True, slots=True)
class PlanScore:
    """One plan's measurements."""

    plan: str
    """The plan's name, e.g. ``cpu:2x1``."""
    sessions: int
    threads: int
    first_segment_ms: float
    """Median wall time of the shortest calibration item on one session, the others idle."""
    throughput: float
    """Audio seconds per wall-clock second with every session busy."""
    rtf: float
    """Wall seconds per audio second at saturation (1 / throughput)."""


def calibration_items(synthesizer: Synthesizer, voice: str) -> list[CalibrationItem]:
    """The calibration texts as model calls, through the same normalise/phonemize path as
    requests, so the benchmark measures what the server will run."""
    items = []
    for text in CALIBRATION_TEXTS:
        chunks = synthesizer.plan(text)
        if len(chunks) != 1:
            raise ValueError(f"calibration text {text!r} needs {len(chunks)} model calls, not 1")
        tokens = chunks[0].tokens
        items.append(CalibrationItem(text, tokens, synthesizer.voices.style(voice, len(tokens))))
    return items


def _audio_seconds(result: SynthesisLike) -> float:
    return len(result.audio) / SAMPLE_RATE


def saturated_throughput(
    engines: Sequence[EngineLike], items: Sequence[CalibrationItem], rounds: int
) -> float:
    """Audio seconds per wall second, each engine on its own thread pulling from one queue.

    Jobs are queued longest first so the sessions finish together: a long job left for the end
    would leave the other sessions idle and understate plans with many sessions.
    """
    jobs: queue.SimpleQueue[CalibrationItem] = queue.SimpleQueue()
    for item in sorted(list(items) * rounds, key=lambda item: len(item.tokens), reverse=True):
        jobs.put(item)
    start = threading.Barrier(len(engines) + 1, timeout=60)

    def work(engine: EngineLike) -> float:
        start.wait()
        produced = 0.0
        while True:
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                return produced
            produced += _audio_seconds(
                engine.synthesize(item.tokens, item.style, CALIBRATION_SPEED)
            )

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(engines), thread_name_prefix="plan-bench"
    ) as pool:
        futures = [pool.submit(work, engine) for engine in engines]
        start.wait()
        began = time.perf_counter()
        audio = sum(future.result() for future in futures)
        wall = time.perf_counter() - began
    return audio / wall if wall > 0 else math.inf


def benchmark_plan(
    plan: ProviderPlan,
    engines: Sequence[EngineLike],
    items: Sequence[CalibrationItem],
    *,
    repeats: int = 3,
    rounds: int = 2,
) -> PlanScore:
    """Measure one plan whose ``plan.sessions`` engines are open.

    Each engine first runs the shortest item once, unmeasured and all engines at once, so ONNX
    Runtime's first-run costs (kernel selection, first allocations) do not count against it. A
    short warm-up keeps the benchmark, which runs on a first start, short.
    """
    if len(engines) != plan.sessions:
        raise ValueError(f"plan {plan.name} needs {plan.sessions} engines, got {len(engines)}")
    if not items:
        raise ValueError("no calibration items")
    if repeats < 1 or rounds < 1:
        raise ValueError("repeats and rounds must be >= 1")
    shortest = min(items, key=lambda item: len(item.tokens))
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(engines), thread_name_prefix="plan-warm-up"
    ) as pool:
        warm_ups = [
            pool.submit(engine.synthesize, shortest.tokens, shortest.style, CALIBRATION_SPEED)
            for engine in engines
        ]
        for warm_up in warm_ups:
            warm_up.result()
    latencies = []
    for _ in range(repeats):
        began = time.perf_counter()
        engines[0].synthesize(shortest.tokens, shortest.style, CALIBRATION_SPEED)
        latencies.append(time.perf_counter() - began)
    throughput = saturated_throughput(engines, items, rounds)
    return PlanScore(
        plan=plan.name,
        sessions=plan.sessions,
        threads=plan.threads,
        first_segment_ms=round(statistics.median(latencies) * 1000, 3),
        throughput=round(throughput, 4),
        rtf=round(1 / throughput, 6) if throughput > 0 else math.inf,
    )


def benchmark_plans(
    candidates: Sequence[ProviderPlan],
    open_engines: Callable[[ProviderPlan], list[E]],
    close_engines: Callable[[list[E]], None],
    items: Sequence[CalibrationItem],
    *,
    repeats: int = 3,
    rounds: int = 2,
) -> list[PlanScore]:
    """Benchmark every candidate in turn, with only its engines open.

    A plan whose engines cannot be opened (a provider that is listed but has no device) is
    skipped with a warning; only if none opens is it an error.
    """
    scores = []
    for plan in candidates:
        try:
            engines = open_engines(plan)
        except Exception as error:
            logger.warning(
                "provider plan %s skipped: cannot open its sessions (%s)", plan.name, error
            )
            continue
        try:
            score = benchmark_plan(plan, engines, items, repeats=repeats, rounds=rounds)
        finally:
            close_engines(engines)
        logger.info(
            "provider plan %s: first segment %.1f ms, throughput %.2f audio s/s",
            score.plan,
            score.first_segment_ms,
            score.throughput,
        )
        scores.append(score)
    if not scores:
        names = ", ".join(plan.name for plan in candidates) or "none"
        raise RuntimeError(f"no provider plan could be opened (tried {names})")
    return scores


def open_plan_engines(plan: ProviderPlan, base: EngineConfig) -> list[Engine]:
    """``plan.sessions`` engines like ``base`` but with the plan's provider and threads.

    ONNX Runtime falls back to the CPU when an accelerator cannot start; that is reported as a
    failure here, or the accelerator plan would silently measure the CPU.
    """
    providers = (plan.provider,) if plan.provider == CPU else (plan.provider, CPU)
    config = dataclasses.replace(base, intra_op_threads=plan.threads, providers=providers)
    engines: list[Engine] = []
    graph = load_graph(config.model_path)
    try:
        for _ in range(plan.sessions):
            engine = Engine(config, graph)
            engines.append(engine)
            if engine.providers[:1] != [plan.provider]:
                raise RuntimeError(
                    f"{plan.provider} is not usable (session runs on {engine.providers})"
                )
    except BaseException:
        close_plan_engines(engines)
        raise
    return engines


def close_plan_engines(engines: Sequence[Engine]) -> None:
    for engine in engines:
        engine.close()


# --- choice ------------------------------------------------------------------------------------


def choose(scores: Sequence[PlanScore]) -> PlanScore:
    """The plan ``CHOICE_RULE`` picks.

    Among the plans whose ``first_segment_ms`` is at most 1.25x the lowest, the highest
    ``throughput`` wins; ties go to the lower latency, then to the name. The server carries many
    real-time streams (throughput is capacity) but each new stream waits for its first segment
    (latency), so up to 25% worse first-audio latency is accepted for more capacity.
    """
    if not scores:
        raise ValueError("no plan scores to choose from")
    best_latency = min(score.first_segment_ms for score in scores)
    eligible = [s for s in scores if s.first_segment_ms <= LATENCY_TOLERANCE * best_latency]
    return min(eligible, key=lambda s: (-s.throughput, s.first_segment_ms, s.plan))


# --- result and cache --------------------------------------------------------------------------


def _string(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string")
    return value


def _number(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name!r} must be a number")
    return float(value)


def _integer(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name!r} must be an integer")
    return value


def _exact_keys(data: object, names: Sequence[str], what: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    if set(data) != set(names):
        raise ValueError(f"{what} must have exactly the keys {sorted(names)}, got {sorted(data)}")
    return data


_SCORE_FIELDS = tuple(field.name for field in dataclasses.fields(PlanScore))


def _score_from_json(data: object) -> PlanScore:
    fields = _exact_keys(data, _SCORE_FIELDS, "a plan score")
    plan = ProviderPlan.parse(_string(fields, "plan"))
    score = PlanScore(
        plan=_string(fields, "plan"),
        sessions=_integer(fields, "sessions"),
        threads=_integer(fields, "threads"),
        first_segment_ms=_number(fields, "first_segment_ms"),
        throughput=_number(fields, "throughput"),
        rtf=_number(fields, "rtf"),
    )
    if (score.sessions, score.threads) != (plan.sessions, plan.threads):
        raise ValueError(f"plan score {score.plan} has sessions/threads that do not match it")
    return score


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """A benchmark's outcome: what was measured, on what, and which plan won."""

    key: str
    components: dict[str, str]
    created_at: float
    """Unix time the benchmark finished."""
    scores: tuple[PlanScore, ...]
    chosen: str
    """The chosen plan's name."""
    rule: str
    benchmark_seconds: float

    @property
    def chosen_plan(self) -> ProviderPlan:
        return ProviderPlan.parse(self.chosen)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the cache file's content)."""
        return {
            "key": self.key,
            "components": dict(self.components),
            "created_at": self.created_at,
            "scores": [dataclasses.asdict(score) for score in self.scores],
            "chosen": self.chosen,
            "rule": self.rule,
            "benchmark_seconds": self.benchmark_seconds,
        }

    @classmethod
    def from_json(cls, data: object) -> StrategyResult:
        """The inverse of ``to_json``; ``ValueError`` on anything malformed (it reads files)."""
        names = [field.name for field in dataclasses.fields(cls)]
        fields = _exact_keys(data, names, "a strategy result")
        components = fields["components"]
        if not isinstance(components, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in components.items()
        ):
            raise ValueError("'components' must map strings to strings")
        raw_scores = fields["scores"]
        if not isinstance(raw_scores, list) or not raw_scores:
            raise ValueError("'scores' must be a non-empty list")
        scores = tuple(_score_from_json(score) for score in raw_scores)
        chosen = _string(fields, "chosen")
        if chosen not in {score.plan for score in scores}:
            raise ValueError(f"chosen plan {chosen!r} is not among the scored plans")
        key = _string(fields, "key")
        if key != fingerprint_key(components):
            raise ValueError("'key' is not the fingerprint of 'components'")
        return cls(
            key=key,
            components=dict(components),
            created_at=_number(fields, "created_at"),
            scores=scores,
            chosen=chosen,
            rule=_string(fields, "rule"),
            benchmark_seconds=_number(fields, "benchmark_seconds"),
        )


class StrategyCache:
    """One JSON file holding the last benchmark's result, valid for ``ttl_seconds``.

    The TTL bounds how long a result survives changes the fingerprint cannot see (firmware, a
    noisy neighbour during the benchmark, thermal limits).
    """

    def __init__(
        self, path: Path, ttl_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        if not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        self.path = path
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def load(
        self, key: str, *, components: Mapping[str, str] | None = None
    ) -> StrategyResult | None:
        """The cached result for ``key``, or None (logged with the reason) when there is none.

        ``components`` (the current ones) only serve the log message: which of them changed.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            logger.info("provider plan cache %s: no cache", self.path)
            return None
        except (OSError, UnicodeDecodeError) as error:
            logger.info("provider plan cache %s: unreadable (%s)", self.path, error)
            return None
        try:
            result = StrategyResult.from_json(json.loads(text))
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            logger.info("provider plan cache %s: corrupt (%s)", self.path, error)
            return None
        if result.key != key:
            changed = (
                sorted(
                    name
                    for name in set(components) | set(result.components)
                    if components.get(name) != result.components.get(name)
                )
                if components is not None
                else []
            )
            logger.info(
                "provider plan cache %s: fingerprint changed: %s",
                self.path,
                ", ".join(changed) or "unknown components",
            )
            return None
        age = self.clock() - result.created_at
        if age > self.ttl_seconds:
            logger.info(
                "provider plan cache %s: expired (age %.0f s > ttl %.0f s)",
                self.path,
                age,
                self.ttl_seconds,
            )
            return None
        if age < 0:
            logger.info("provider plan cache %s: created in the future (clock moved)", self.path)
            return None
        return result

    def store(self, result: StrategyResult) -> None:
        """Write the result atomically: a reader sees the old file or the new one, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, tmp_name = tempfile.mkstemp(
            prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent
        )
        tmp = Path(tmp_name)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                json.dump(result.to_json(), out, indent=2, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)


def select_plan(
    *,
    cache: StrategyCache,
    components: dict[str, str],
    candidates: Sequence[ProviderPlan],
    run_benchmark: Callable[[], list[PlanScore]],
    rebenchmark: bool = False,
    clock: Callable[[], float] = time.time,
) -> tuple[StrategyResult, bool]:
    """The plan to run with and whether it came from the cache.

    A valid cached result for these components is reused unless ``rebenchmark``; otherwise the
    benchmark runs, ``choose`` picks, and the result is stored. A cache that cannot be written
    costs a benchmark at the next start, not this start.
    """
    names = {plan.name for plan in candidates}
    if not names:
        raise ValueError("no candidate provider plans")
    key = fingerprint_key(components)
    if not rebenchmark:
        cached = cache.load(key, components=components)
        if cached is not None and cached.chosen in names:
            logger.info("provider plan %s (cached benchmark)", cached.chosen)
            return cached, True
    logger.info("benchmarking %d provider plans: %s", len(names), ", ".join(sorted(names)))
    began = time.perf_counter()
    scores = run_benchmark()
    elapsed = time.perf_counter() - began
    chosen = choose(scores)
    result = StrategyResult(
        key=key,
        components=dict(components),
        created_at=clock(),
        scores=tuple(scores),
        chosen=chosen.plan,
        rule=CHOICE_RULE,
        benchmark_seconds=round(elapsed, 3),
    )
    logger.info("provider plan %s chosen after %.1f s of benchmarking", chosen.plan, elapsed)
    try:
        cache.store(result)
    except OSError as error:
        logger.warning("provider plan cache %s not written (%s)", cache.path, error)
    return result, False

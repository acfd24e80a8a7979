"""The service's lifecycle: load the synthesizer, warm it up, run the pipeline, report readiness.

The server listens from the first moment (``/health`` answers at once) while the model loads and
warms in the background; ``/ready`` turns 200 only when a synthesis has run end to end and the
streaming pipeline's actors are running.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping

from app.admission import AdmissionPolicy
from app.bench import EngineBenchmark
from app.bench_history import HISTORY_FILE, BenchHistory
from app.client_streams import ClientStreams
from app.degradation import CostModel
from app.drain import Drain
from app.errors import NotReadyError, TTSError
from app.foreground import Foreground
from app.loop_monitor import LoopMonitor
from app.memory_pressure import MemoryMonitor, PressureActions
from app.pipeline import FallbackPolicy, Pipeline
from app.plan_loader import PlanChoice, load_for_serving
from app.plan_swap import PlanSwapper, warm_engines
from app.process import trim_heap
from app.prometheus_metrics import PrometheusMetrics
from app.providers import short_name
from app.scheduled_bench import BenchTarget, ScheduledBenchmark
from app.settings import Settings
from app.tracing import Tracing
from app.tts.engine import Engine
from app.tts.synthesizer import Synthesizer

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"


class Service:
    """Holds the synthesizer, the pipeline and the phase; shared by all request handlers."""

    def __init__(
        self,
        settings: Settings,
        synthesizer: Synthesizer | None = None,
        on_fatal: Callable[[str], None] | None = None,
        plan_choice: PlanChoice | None = None,
        *,
        startup_seconds: Mapping[str, float] | None = None,
        tracing: Tracing | None = None,
        benchmark: EngineBenchmark | None = None,
    ) -> None:
        """``benchmark``: what the scheduled benchmark runs (default: the CLI's definition)."""
        self.settings = settings
        self._synthesizer = synthesizer
        self._owns_synthesizer = synthesizer is None
        self._on_fatal = on_fatal
        self.phase = Phase.LOADING
        self.error: str | None = None
        self.startup_seconds: dict[str, float] = dict(startup_seconds or {})
        """How long each startup phase took: ``plan`` (benchmark or cache), ``model`` (assembly
        and verification), ``sessions`` (creation), ``warm_up``; logged when ready."""
        self.request_slots = asyncio.Semaphore(settings.max_queued_requests)
        self._settled = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._pipeline: Pipeline | None = None
        self.plan_choice = plan_choice
        if plan_choice is not None:
            self.startup_seconds["plan"] = plan_choice.seconds
        self.swapper = PlanSwapper(self)
        self.tracing = tracing or Tracing.from_env(include_text=settings.trace_text)
        self.prometheus = PrometheusMetrics()
        self.prometheus.watch(lambda: self._pipeline)
        self.foreground = Foreground()
        self._benchmark_definition = benchmark or EngineBenchmark()
        self.benchmark: ScheduledBenchmark | None = None
        self.memory = MemoryMonitor(settings.memory_limit_mb << 20)
        self.memory.actions = PressureActions(
            shrink=self._shrink_arenas, release_idle=self._release_arenas
        )
        self.prometheus.watch_memory(self.memory)
        self.prometheus.watch_benchmark(lambda: self.benchmark.last if self.benchmark else None)
        self.drain = Drain()
        self.client_streams = ClientStreams(settings.max_streams_per_client)
        self.loop_monitor = LoopMonitor(observe=self.prometheus.loop_lag.observe)

    @property
    def synthesizer(self) -> Synthesizer:
        """The ready synthesizer, or ``NotReadyError`` while loading, warming or failed."""
        if self.phase is not Phase.READY or self._synthesizer is None:
            detail = f": {self.error}" if self.error else ""
            raise NotReadyError(f"the model is {self.phase.value}{detail}")
        return self._synthesizer

    @property
    def pipeline(self) -> Pipeline:
        """The running streaming pipeline, or ``NotReadyError``."""
        if self.phase is not Phase.READY or self._pipeline is None:
            raise NotReadyError(f"the streaming pipeline is {self.phase.value}")
        return self._pipeline

    async def run(self) -> None:
        """Load and warm, run the pipeline until ``shutdown``, then stop its actors in order."""
        warmed = await self._load_and_warm()
        if warmed is None:
            return
        synthesizer, initial_rate = warmed
        fallback = FallbackPolicy(
            timeout_s=self.settings.inference_timeout_s,
            probe_after_s=self.settings.probe_after_s,
            probe_max_s=12 * self.settings.probe_after_s,
        )
        admission = AdmissionPolicy(
            max_streams=self.settings.max_active_streams,
            utilization=self.settings.admission_utilization,
            wait_s=self.settings.admission_wait_ms / 1000,
        )
        pipeline = Pipeline(
            synthesizer,
            max_lead_seconds=self.settings.max_lead_ms / 1000,
            fallback=fallback,
            probe_voice=self.settings.default_voice,
            admission=admission,
            work_ahead_seconds=self.settings.work_ahead_ms / 1000,
            initial_rate=initial_rate,
            prometheus=self.prometheus,
            foreground=self.foreground,
            memory=self.memory,
        )
        try:
            async with pipeline.running():
                self._pipeline = pipeline
                self.benchmark = self._scheduled_benchmark(pipeline)
                await self.benchmark.load_baseline()
                self.phase = Phase.READY
                self.loop_monitor.restart_max()
                self._settled.set()
                logger.info(
                    "ready: %s",
                    ", ".join(f"{name} {sec:.2f} s" for name, sec in self.startup_seconds.items()),
                )
                async with asyncio.TaskGroup() as group:
                    background = [
                        group.create_task(self.benchmark.run(), name="benchmark"),
                        group.create_task(self.memory.run(), name="memory-monitor"),
                    ]
                    await self._shutdown.wait()
                    for task in background:
                        task.cancel()
        except Exception as error:
            logger.exception("the streaming pipeline crashed")
            self._fail(f"the streaming pipeline crashed: {error!r}")
        finally:
            self._pipeline = None

    def _scheduled_benchmark(self, pipeline: Pipeline) -> ScheduledBenchmark:
        def target() -> BenchTarget:
            return BenchTarget(pipeline.synthesizer, pipeline.workers[0].engine, pipeline.occupancy)

        def baseline(model: CostModel) -> None:
            pipeline.metrics.live.baseline = model

        return ScheduledBenchmark(
            self._benchmark_definition,
            target=target,
            foreground=self.foreground,
            history=BenchHistory(self.settings.cache_dir / HISTORY_FILE),
            voice=self.settings.default_voice,
            interval_s=self.settings.bench_interval_s,
            quiet_s=self.settings.bench_quiet_s,
            prometheus=self.prometheus,
            baseline=baseline,
        )

    def _engines(self) -> list[Engine]:
        pipeline = self._pipeline
        return [worker.engine for worker in pipeline.workers] if pipeline is not None else []

    def _shrink_arenas(self, on: bool) -> None:
        """Memory pressure turns arena shrinkage on; its end restores the configured choice."""
        for engine in self._engines():
            engine.shrink_arena = on or self.settings.arena_shrinkage

    async def _release_arenas(self) -> None:
        """Under memory pressure: sessions (new ones after a swap too) shrink after each call,
        and any whose arena still holds an earlier call's peak gives it back now, down to the
        system (``trim_heap``)."""
        released = False
        for engine in self._engines():
            engine.shrink_arena = True
            if engine.arena_dirty:
                await engine.call(engine.release_arena)
                released = True
        if released:
            await asyncio.to_thread(trim_heap)

    def shutdown(self) -> None:
        """Ask ``run`` to stop the pipeline and return."""
        self._shutdown.set()

    async def _load_and_warm(self) -> tuple[Synthesizer, float] | None:
        """The warm synthesizer and the audio seconds per second to assume for each session
        until its jobs are timed: the plan benchmark's figure, else the warm-up's."""
        try:
            if self._synthesizer is None:
                loaded, choice = await asyncio.to_thread(load_for_serving, self.settings)
                self._synthesizer, self.plan_choice = loaded, choice
                self.startup_seconds["plan"] = choice.seconds
                self.startup_seconds.update(choice.load_phases(loaded))
            self.phase = Phase.WARMING
            started = time.perf_counter()
            synthesizer = self._synthesizer
            voice = self.settings.default_voice
            warm_rate = await warm_engines(synthesizer, synthesizer.engines, voice)
            initial_rate = self._benchmarked_rate() or warm_rate
            await asyncio.to_thread(trim_heap)  # what loading the model freed
            self.startup_seconds["warm_up"] = time.perf_counter() - started
        except TTSError as error:
            self._fail(error.message)
            return None
        except Exception as error:
            logger.exception("startup failed")
            self._fail(f"startup failed: {error!r}")
            return None
        return synthesizer, initial_rate

    @property
    def plan_name(self) -> str:
        """The serving plan, e.g. ``cpu:1x2``."""
        if self.plan_choice is not None:
            return self.plan_choice.plan
        synthesizer = self._synthesizer
        if synthesizer is None:
            return "none"
        engine = synthesizer.engine
        threads = engine.config.intra_op_threads
        return f"{short_name(engine.providers[0])}:{len(synthesizer.engines)}x{threads}"

    def plan_swapped(self, plan: str, seconds: float) -> None:
        self.plan_choice = PlanChoice(plan, "swap", seconds)

    def _benchmarked_rate(self) -> float | None:
        """Per-session audio seconds per second from the plan benchmark, if it ran."""
        choice = self.plan_choice
        if choice is None:
            return None
        for score in choice.scores:
            if score.plan == choice.plan:
                return score.throughput / score.sessions
        return None

    def _fail(self, message: str) -> None:
        self.phase = Phase.FAILED
        self.error = message
        self._settled.set()
        logger.error("%s", message)
        if self._on_fatal is not None:
            self._on_fatal(message)

    async def wait_settled(self) -> Phase:
        """Wait until startup has either finished (ready) or failed."""
        await self._settled.wait()
        return self.phase

    def close(self) -> None:
        """Flush traces; close the synthesizer if this service loaded it (a caller's own stays
        open)."""
        self.tracing.shutdown()
        if self._owns_synthesizer and self._synthesizer is not None:
            self._synthesizer.close()

"""The engine benchmark, run by the server itself while nobody is using it.

Every ``interval_s`` the server runs ``app.bench.EngineBenchmark`` (the definition the CLI uses)
on the first inference session, one text synthesis at a time. A step starts only after the
server has been quiet (no stream, no HTTP synthesis, no plan swap) for ``quiet_s``. When user
work arrives, the running step's model call is terminated (``RunOptions.terminate``, which
onnxruntime checks between graph nodes), so a new stream waits for at most a few operators of
benchmark work; the step is repeated at the next quiet moment and the run goes on from there.
A finished run is recorded in the benchmark history and judged by ``app.regression``; a
regression is logged and exported, and the run's rows become the live degradation baseline.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import onnxruntime as ort

from actors.occupancy import CallOccupancy
from app.bench import (
    ENGINE_BENCHMARK,
    RTF_METRIC,
    BenchTally,
    EngineBenchmark,
    environment,
    record_run,
)
from app.bench_history import BenchHistory, RecordedRun
from app.degradation import CostModel
from app.foreground import Foreground
from app.prometheus_metrics import PrometheusMetrics
from app.tts.engine import Aborted, Engine
from app.tts.synthesizer import SpeechResult, Synthesizer

logger = logging.getLogger(__name__)

CALL_LOG = 256


@dataclass(frozen=True, slots=True)
class BenchTarget:
    """Where the benchmark runs: the serving synthesizer and its first session."""

    synthesizer: Synthesizer
    engine: Engine
    occupancy: CallOccupancy


@dataclass(frozen=True, slots=True)
class BenchCall:
    """One benchmark model call, for inspection: when it ran and whether it was cut short."""

    started: float
    ended: float
    aborted: bool


class ScheduledBenchmark:
    """Runs the engine benchmark periodically on an idle server."""

    def __init__(
        self,
        definition: EngineBenchmark,
        *,
        target: Callable[[], BenchTarget],
        foreground: Foreground,
        history: BenchHistory,
        voice: str,
        interval_s: float,
        quiet_s: float,
        prometheus: PrometheusMetrics | None = None,
        baseline: Callable[[CostModel], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``baseline`` receives the cost model of each recorded run (and of the newest earlier
        run in the same environment, from ``load_baseline``)."""
        if interval_s < 0 or quiet_s < 0:
            raise ValueError("need interval_s >= 0 (0: never scheduled) and quiet_s >= 0")
        self.definition = definition
        self.interval_s = interval_s
        self.quiet_s = quiet_s
        self.voice = voice
        self._target = target
        self._foreground = foreground
        self._history = history
        self._prometheus = prometheus
        self._baseline = baseline
        self._clock = clock
        self._options: ort.RunOptions | None = None
        self.calls: deque[BenchCall] = deque(maxlen=CALL_LOG)
        self.completed = 0
        self.yields = 0
        self.failures = 0
        self.last: RecordedRun | None = None
        self.next_due: float = clock()
        self.in_call = asyncio.Event()
        self._recorded = asyncio.Condition()
        foreground.subscribe(self._yield)

    def _yield(self) -> None:
        """User work arrived: cut the running model call short."""
        if self._options is not None:
            self._options.terminate = True

    async def load_baseline(self) -> None:
        """Hand the newest recorded run in the serving environment to ``baseline``."""
        target = self._target()
        facts = environment(self.definition, target.synthesizer, target.engine, self.voice)
        try:
            run = await asyncio.to_thread(self._history.latest, ENGINE_BENCHMARK, RTF_METRIC, facts)
        except sqlite3.Error as error:  # a damaged history must not keep the server down
            logger.warning("cannot read the benchmark history %s: %s", self._history.path, error)
            return
        if run is not None:
            self._hand_over(run)

    async def run(self) -> None:
        """Run the benchmark every ``interval_s``, forever (at once if it is 0: off); a failed
        run is logged and skipped."""
        while self.interval_s > 0:
            delay = self.next_due - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.run_once()
            except Exception:
                self.failures += 1
                if self._prometheus is not None:
                    self._prometheus.benchmark_runs.labels("failed").inc()
                logger.exception(
                    "the scheduled benchmark failed; next try in %g s", self.interval_s
                )
            self.next_due = self._clock() + self.interval_s

    async def run_once(self) -> RecordedRun:
        """One whole run, step by step at quiet moments; recorded and judged at the end."""
        tally = BenchTally(self.definition)
        steps = self.definition.steps()
        target = self._target()
        index = 0
        while index < len(steps):
            await self._foreground.wait_quiet(self.quiet_s)
            if self._target().engine is not target.engine:  # the plan was swapped
                tally, index, target = BenchTally(self.definition), 0, self._target()
                continue
            step = steps[index]
            result = await self._call(target, step.text)
            if result is None:
                continue  # yielded: repeat the step when quiet again
            tally.add(step, result)
            index += 1
        rows = tally.rows()
        facts = environment(self.definition, target.synthesizer, target.engine, self.voice)
        run = await asyncio.to_thread(record_run, self._history, rows, facts)
        self._hand_over(run)
        self.completed += 1
        if self._prometheus is not None:
            regression = run.verdict.regression
            self._prometheus.benchmark_runs.labels("regression" if regression else "ok").inc()
        self._log(run)
        async with self._recorded:
            self._recorded.notify_all()
        return run

    async def _call(self, target: BenchTarget, text: str) -> SpeechResult | None:
        """One synthesis on the target session, or None if user work cut it short."""
        options = ort.RunOptions()
        self._options = options
        self.in_call.set()
        started = self._clock()
        ticket = target.occupancy.begin()
        render = partial(target.synthesizer.render, text, self.voice, 1.0, options, target.engine)
        try:
            return await target.engine.call(render)
        except asyncio.CancelledError:  # the server stops: do not keep the session busy
            options.terminate = True
            raise
        except Aborted:
            self.yields += 1
            if self._prometheus is not None:
                self._prometheus.benchmark_yields.inc()
            return None
        finally:
            target.occupancy.end(ticket)
            self._options = None
            self.in_call.clear()
            self.calls.append(BenchCall(started, self._clock(), options.terminate))

    def _hand_over(self, run: RecordedRun) -> None:
        self.last = run
        rows = run.details.get("rows")
        if self._baseline is not None and rows:
            self._baseline(CostModel.fit(rows))

    def _log(self, run: RecordedRun) -> None:
        verdict = run.verdict
        if verdict.regression:
            logger.warning(
                "benchmark regression: median RTF %.4f is %+.1f%% against the baseline %.4f "
                "(tolerance %.0f%%)",
                verdict.value,
                100 * (verdict.change or 0.0),
                verdict.baseline,
                100 * (verdict.tolerance or 0.0),
            )
        else:
            logger.info("scheduled benchmark: median RTF %.4f", verdict.value)

    async def wait_runs(self, count: int) -> None:
        """Wait until ``count`` runs have been recorded."""
        async with self._recorded:
            await self._recorded.wait_for(lambda: self.completed >= count)

    def status(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "quiet_s": self.quiet_s,
            "definition": self.definition.describe(),
            "runs_completed": self.completed,
            "runs_failed": self.failures,
            "yields": self.yields,
            "running_call": self.in_call.is_set(),
            "next_due_in_s": round(max(0.0, self.next_due - self._clock()), 1),
            "last": None if self.last is None else self.last.to_json(),
        }

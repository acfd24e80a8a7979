"""Switching the provider plan of a running server (hot swap).

The new plan's sessions are built and warmed while the old ones keep serving. New streams are
not admitted meanwhile (``busy`` with a 2 s retry hint): their first segments, which must come
faster than real time, would compete with that work for the cores. Then new jobs go to the new
sessions and each old session finishes the job it is running (its audio is delivered like any
other), after which it is stopped and closed. Streams see neither a gap nor a repeated
sample: a segment is synthesized whole on one session or the other, and CPU plans of one model
produce identical samples whatever their thread count (tested). If building or warming the new
sessions fails, the old plan keeps serving and the error is reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from app.errors import BadPlanError, SwapFailedError, SwapInProgressError
from app.providers import ProviderPlan
from app.strategy import close_plan_engines, open_plan_engines
from app.tts.engine import Engine
from app.tts.synthesizer import Synthesizer

if TYPE_CHECKING:
    from app.service import Service

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SwapReport:
    previous: str
    plan: str
    build_seconds: float
    warm_seconds: float
    drain_seconds: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


async def warm_engines(synthesizer: Synthesizer, engines: Sequence[Engine], voice: str) -> float:
    """Warm every session, each on its own thread; returns the audio seconds per second of the
    slowest warm-up: a conservative per-session rate (a short text, with first-run costs) that
    the scheduler replaces with measurements once segments have run with every session busy."""
    results = await asyncio.gather(
        *(engine.call(partial(synthesizer.warm_up, voice, engine)) for engine in engines)
    )
    return min(1 / result.rtf for result in results)


class PlanSwapper:
    """One swap at a time for a service."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._lock = asyncio.Lock()

    async def swap(self, plan_text: str) -> SwapReport:
        try:
            plan = ProviderPlan.parse(plan_text)
        except ValueError as error:
            raise BadPlanError(str(error)) from None
        if self._lock.locked():
            raise SwapInProgressError("another plan swap is in progress; retry when it is done")
        async with self._lock:
            return await self._swap(plan)

    async def _swap(self, plan: ProviderPlan) -> SwapReport:
        service = self._service
        pipeline = service.pipeline  # NotReadyError unless serving
        synthesizer = pipeline.synthesizer
        previous = service.plan_name
        started = time.perf_counter()
        logger.info("plan swap %s -> %s: building sessions", previous, plan.name)
        swapping = f"the provider plan changes to {plan.name}"
        with pipeline.admission.paused(swapping), pipeline.foreground.active(swapping):
            try:
                engines = await asyncio.to_thread(
                    open_plan_engines, plan, synthesizer.engine.config
                )
            except Exception as error:
                raise SwapFailedError(f"cannot build {plan.name}: {error}") from None
            built = time.perf_counter()
            try:
                rate = await warm_engines(synthesizer, engines, service.settings.default_voice)
            except Exception as error:
                await asyncio.to_thread(close_plan_engines, engines)
                raise SwapFailedError(f"cannot warm {plan.name}: {error}") from None
            warmed = time.perf_counter()
        old_engines = synthesizer.replace_engines(engines)
        drain_seconds = await pipeline.replace_engines(engines, rate)
        await asyncio.to_thread(_close_quietly, old_engines)
        report = SwapReport(
            previous=previous,
            plan=plan.name,
            build_seconds=built - started,
            warm_seconds=warmed - built,
            drain_seconds=drain_seconds,
            seconds=time.perf_counter() - started,
        )
        service.plan_swapped(plan.name, report.seconds)
        logger.info("plan swap done: %s", report.to_json())
        return report


def _close_quietly(engines: Sequence[Engine]) -> None:
    """Close old sessions after the calls already queued on them (whole-text requests)."""
    for engine in engines:
        engine.close(cancel_pending=False)

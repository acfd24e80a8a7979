"""Loading the synthesizer for serving: a configured provider plan, or the benchmarked best.

With ``plan = "auto"`` the candidates for this machine are benchmarked once and the choice is
cached (``app.strategy``); later starts with the same fingerprint reuse it and skip the
benchmark. A configured plan (``--plan cpu:2x1``) skips all of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import onnxruntime as ort

from app.providers import ProviderPlan, candidate_plans, usable_cores
from app.settings import Settings
from app.strategy import (
    CHOICE_RULE,
    PlanScore,
    StrategyCache,
    benchmark_plans,
    calibration_items,
    close_plan_engines,
    current_components,
    open_plan_engines,
    select_plan,
)
from app.tts.synthesizer import Synthesizer
from app.tts.variants import VariantStore, resolve_model, variant_of

logger = logging.getLogger(__name__)

STRATEGY_FILE = "strategy.json"


@dataclass(frozen=True, slots=True)
class PlanChoice:
    """Which plan serves, and how it was chosen."""

    plan: str
    source: str
    """``configured``, ``cache`` or ``benchmark``."""
    seconds: float
    """Time spent choosing (fingerprint, cache lookup and any benchmark)."""
    scores: tuple[PlanScore, ...] = ()
    rule: str = ""
    reused_sessions: bool = False
    """The plan benchmark's own sessions serve: their loading counts in ``seconds``."""

    def load_phases(self, synthesizer: Synthesizer) -> dict[str, float]:
        """Startup phases after choosing: ``model`` and ``sessions`` (0 when already counted)."""
        if self.reused_sessions:
            return {"model": 0.0, "sessions": 0.0}
        return dict(synthesizer.load_seconds)


def load_for_serving(settings: Settings) -> tuple[Synthesizer, PlanChoice]:
    """Blocking: choose the plan, then build the synthesizer with its sessions."""
    started = time.perf_counter()
    if settings.plan != "auto":
        plan = ProviderPlan.parse(settings.plan)
        choice = PlanChoice(plan.name, "configured", 0.0)
        return Synthesizer.load(settings, plan), choice
    model_path = resolve_model(settings.model_path, settings.cache_dir, settings.variant)
    variant = variant_of(settings.model_path, settings.variant)
    known_hash = VariantStore(settings.cache_dir).sha256(variant) if variant else None
    candidates = candidate_plans(ort.get_available_providers(), usable_cores())
    components = current_components(model_path, known_hash, candidates, settings.default_voice)
    cache = StrategyCache(settings.cache_dir / STRATEGY_FILE, settings.strategy_ttl_s)
    benchmarked: list[Synthesizer] = []

    def run_benchmark() -> list[PlanScore]:
        synthesizer = Synthesizer.load(settings, candidates[0])
        benchmarked.append(synthesizer)
        items = calibration_items(synthesizer, settings.default_voice)
        config = synthesizer.engine.config
        logger.info("benchmarking provider plans: %s", ", ".join(p.name for p in candidates))
        return benchmark_plans(
            candidates,
            lambda plan: open_plan_engines(plan, config),
            close_plan_engines,
            items,
            repeats=2,
            rounds=1,
        )

    result, hit = select_plan(
        cache=cache,
        components=components,
        candidates=candidates,
        run_benchmark=run_benchmark,
        rebenchmark=settings.rebenchmark,
    )
    plan = result.chosen_plan
    choice = PlanChoice(
        plan.name,
        "cache" if hit else "benchmark",
        time.perf_counter() - started,
        result.scores,
        CHOICE_RULE,
    )
    logger.info("provider plan %s (%s, %.2f s)", plan.name, choice.source, choice.seconds)
    if benchmarked and plan == candidates[0]:  # the benchmark's own sessions serve
        return benchmarked[0], replace(choice, reused_sessions=True)
    for synthesizer in benchmarked:
        synthesizer.close()
    return Synthesizer.load(settings, plan), choice

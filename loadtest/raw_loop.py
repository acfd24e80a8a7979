"""The raw engine loop: the ceiling the server's throughput is judged against.

The same plan's sessions, built the way the server builds them (``Synthesizer.load`` with the
plan ``/ready`` reports, the model and voices of this process's environment), saturated with the
very segments the server's segmenter cuts from the corpus, every session on its own thread
pulling from one queue (``app.strategy.saturated_throughput``). No sockets, actors, flow control
or scheduling: what the server delivers at saturation over this is its efficiency.

It runs in this process while the server is idle (before the ramp), on a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from actors.segmentation import Segmenter
from app.bench import machine_facts
from app.providers import CPU, ProviderPlan
from app.settings import Settings
from app.strategy import CALIBRATION_SPEED, CalibrationItem, saturated_throughput
from app.tts.synthesizer import Synthesizer
from loadtest.records import RawResult


def segment_texts(text: str) -> list[str]:
    """The segments the server cuts ``text`` into (default policy; the same however the text
    arrives, whole or word by word)."""
    segmenter = Segmenter()
    segments = segmenter.feed(text)
    segments += segmenter.end()
    return [segment.text for segment in segments]


def corpus_items(
    synthesizer: Synthesizer, texts: Sequence[str], voice: str
) -> list[CalibrationItem]:
    """Every model call the server makes for ``texts``: each segment, planned (normalised,
    phonemised, split to the window) as the inference actor plans it."""
    items = []
    for text in texts:
        for segment in segment_texts(text):
            for chunk in synthesizer.plan(segment):
                style = synthesizer.voices.style(voice, len(chunk.tokens))
                items.append(CalibrationItem(segment, chunk.tokens, style))
    return items


def resolve_plan(plan: str | None, settings: Settings) -> ProviderPlan:
    """The server's plan as ``/ready`` reports it; without one, what ``Synthesizer.load``
    opens without a plan."""
    if plan:
        return ProviderPlan.parse(plan)
    return ProviderPlan(CPU, 1, settings.intra_op_threads or 1)


def measure_raw(
    plan_name: str | None,
    texts: Sequence[str],
    voice: str | None,
    rounds: int,
) -> tuple[RawResult, dict[str, Any]]:
    """Blocking: load, warm up every session once, time ``rounds`` passes over the items.

    Returns the result and the machine facts of the loaded sessions.
    """
    settings = Settings.from_env()
    plan = resolve_plan(plan_name, settings)
    synthesizer = Synthesizer.load(settings, plan)
    try:
        items = corpus_items(synthesizer, texts, voice or settings.default_voice)
        shortest = min(items, key=lambda item: len(item.tokens))
        for engine in synthesizer.engines:  # first-run costs are not the steady state
            engine.synthesize(shortest.tokens, shortest.style, CALIBRATION_SPEED)
        began = time.perf_counter()
        throughput = saturated_throughput(synthesizer.engines, items, rounds)
        seconds = time.perf_counter() - began
        facts = machine_facts(synthesizer)
    finally:
        synthesizer.close()
    result = RawResult(plan.name, throughput, len(items), len(texts), rounds, seconds)
    return result, facts


async def raw_throughput(
    plan_name: str | None, texts: Sequence[str], voice: str | None, rounds: int
) -> tuple[RawResult, dict[str, Any]]:
    """``measure_raw`` on a worker thread; a failure (say, a model this process cannot find)
    is reported in the result instead of stopping the run."""
    try:
        return await asyncio.to_thread(measure_raw, plan_name, texts, voice, rounds)
    except Exception as error:  # the run goes on without a baseline, and says why
        return RawResult(plan_name or "unknown", None, error=f"{type(error).__name__}: {error}"), {}

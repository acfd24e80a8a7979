"""``python -m app bench memory``: memory and speed of a long text under each memory setting.

A configuration is a token cap (``KOKORO_MAX_SEGMENT_TOKENS``) and whether the arena is shrunk
after each call (``KOKORO_ARENA_SHRINKAGE``). Each is measured in a fresh process, so that its
memory figures are its own: load the model, warm up, synthesize the engine benchmark's
paragraph ``runs`` times; then report peak resident memory (``ru_maxrss``, loading included),
the peak during the calls alone (Linux: ``VmHWM`` reset after warm-up) and the resident memory
left after the calls. Configurations are measured round-robin ``rounds`` times, so a
slow spell of the machine does not land on one of them only; the report gives medians.
"""

from __future__ import annotations

import itertools
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from app.bench import BENCH_TEXTS
from app.local_server import settings_args
from app.process import peak_rss_bytes, reset_peak_rss, rss_bytes
from app.settings import Settings
from app.tts.synthesizer import Synthesizer

TEXT = BENCH_TEXTS["paragraph"]
MEASURED = (
    "gen_seconds",
    "rtf",
    "peak_rss_mb",
    "rss_after_load_mb",
    "rss_before_calls_mb",
    "peak_rss_calls_mb",
    "rss_after_calls_mb",
)
"""Figures the report gives as medians (the others do not vary between processes)."""


def measure(settings: Settings, runs: int) -> dict[str, Any]:
    """In this process: load with ``settings``, warm up, time ``runs`` syntheses of the text."""
    synthesizer = Synthesizer.load(settings)
    try:
        loaded_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        synthesizer.warm_up(settings.default_voice)
        before_calls = rss_bytes()
        reset = reset_peak_rss()
        times, calls, longest, audio = [], 0, 0, 0.0
        for _ in range(runs):
            result = synthesizer.speak_blocking(TEXT, settings.default_voice)
            times.append(result.gen_seconds)
            calls, audio = len(result.chunks), result.audio_seconds
            longest = max(len(chunk.tokens) for chunk in result.chunks)
        after_calls = rss_bytes()
        calls_peak = peak_rss_bytes() if reset else None
    finally:
        synthesizer.close()
    return {
        "cap": settings.max_segment_tokens,
        "arena_shrinkage": settings.arena_shrinkage,
        "calls": calls,
        "longest_call_tokens": longest,
        "audio_seconds": round(audio, 3),
        "gen_seconds": round(statistics.median(times), 4),
        "rtf": round(statistics.median(times) / audio, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_load_mb": round(loaded_kib / 1024, 1),
        "rss_before_calls_mb": round(before_calls / 2**20, 1),
        "peak_rss_calls_mb": None if calls_peak is None else round(calls_peak / 2**20, 1),
        "rss_after_calls_mb": round(after_calls / 2**20, 1),
    }


def measure_in_child(settings: Settings, cap: int, shrinkage: bool, runs: int) -> dict[str, Any]:
    """``measure`` in a fresh ``python -m app bench memory --child`` process."""
    command = [
        sys.executable,
        "-m",
        "app",
        "bench",
        "memory",
        "--child",
        str(cap),
        "--shrinkage",
        "on" if shrinkage else "off",
        "--runs",
        str(runs),
        *settings_args(settings),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    sample: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return sample


def run_memory_bench(
    settings: Settings, caps: list[int], shrinkages: list[bool], rounds: int, runs: int
) -> list[dict[str, Any]]:
    """Measure every configuration ``rounds`` times; print and return the medians."""
    configs = list(itertools.product(caps, shrinkages))
    samples: dict[tuple[int, bool], list[dict[str, Any]]] = {config: [] for config in configs}
    for round_index in range(rounds):
        for cap, shrinkage in configs:
            sample = measure_in_child(settings, cap, shrinkage, runs)
            samples[cap, shrinkage].append(sample)
            print(f"round {round_index + 1}: {sample}", file=sys.stderr)
    report = [
        {
            **rows[0],
            **{key: _median(row[key] for row in rows) for key in MEASURED},
            "rounds": rounds,
        }
        for rows in samples.values()
    ]
    print(
        f"{'cap':>5} {'shrink':>6} {'calls':>5} {'longest':>7} {'gen s':>7} {'RTF':>6} "
        f"{'peak MB':>8} {'calls peak MB':>13} {'after MB':>8}"
    )
    for row in report:
        print(
            f"{row['cap']:>5} {'on' if row['arena_shrinkage'] else 'off':>6} {row['calls']:>5} "
            f"{row['longest_call_tokens']:>7} {row['gen_seconds']:>7.3f} {row['rtf']:>6.3f} "
            f"{row['peak_rss_mb']:>8.1f} {row['peak_rss_calls_mb'] or 0:>13.1f} "
            f"{row['rss_after_calls_mb']:>8.1f}"
        )
    print(json.dumps(report, indent=2))
    return report


def _median(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def child(settings: Settings, cap: int, shrinkage: bool, runs: int) -> None:
    configured = replace(settings, max_segment_tokens=cap, arena_shrinkage=shrinkage)
    print(json.dumps(measure(configured, runs)))

"""``python -m app bench memory``: peak memory and speed of a long text under each token cap.

Each cap (``KOKORO_MAX_SEGMENT_TOKENS``) is measured in a fresh process, so that its peak
resident memory (``ru_maxrss``) is its own: load the model, warm up, synthesize the engine
benchmark's paragraph ``runs`` times. Caps are measured round-robin ``rounds`` times, so a slow
spell of the machine does not land on one cap only; the report gives each cap's median.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
from dataclasses import replace
from typing import Any

from app.bench import BENCH_TEXTS
from app.local_server import settings_args
from app.settings import Settings
from app.tts.synthesizer import Synthesizer

TEXT = BENCH_TEXTS["paragraph"]


def measure(settings: Settings, runs: int) -> dict[str, Any]:
    """In this process: load with ``settings``, warm up, time ``runs`` syntheses of the text."""
    synthesizer = Synthesizer.load(settings)
    try:
        loaded_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        synthesizer.warm_up(settings.default_voice)
        times, calls, longest, audio = [], 0, 0, 0.0
        for _ in range(runs):
            result = synthesizer.speak_blocking(TEXT, settings.default_voice)
            times.append(result.gen_seconds)
            calls, audio = len(result.chunks), result.audio_seconds
            longest = max(len(chunk.tokens) for chunk in result.chunks)
    finally:
        synthesizer.close()
    return {
        "cap": settings.max_segment_tokens,
        "calls": calls,
        "longest_call_tokens": longest,
        "audio_seconds": round(audio, 3),
        "gen_seconds": round(statistics.median(times), 4),
        "rtf": round(statistics.median(times) / audio, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_load_mb": round(loaded_kib / 1024, 1),
    }


def run_memory_bench(
    settings: Settings, caps: list[int], rounds: int, runs: int
) -> list[dict[str, Any]]:
    """Measure every cap ``rounds`` times in fresh processes; print and return the medians."""
    samples: dict[int, list[dict[str, Any]]] = {cap: [] for cap in caps}
    for round_index in range(rounds):
        for cap in caps:
            command = [
                sys.executable,
                "-m",
                "app",
                "bench",
                "memory",
                "--child",
                str(cap),
                "--runs",
                str(runs),
                *settings_args(settings),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            sample = json.loads(done.stdout.strip().splitlines()[-1])
            samples[cap].append(sample)
            print(f"round {round_index + 1}: {sample}", file=sys.stderr)
    report = []
    for cap in caps:
        rows = samples[cap]
        report.append(
            {
                **rows[0],
                **{
                    key: statistics.median(row[key] for row in rows)
                    for key in ("gen_seconds", "rtf", "peak_rss_mb", "rss_after_load_mb")
                },
                "rounds": rounds,
            }
        )
    header = f"{'cap':>5} {'calls':>5} {'longest':>7} {'gen s':>7} {'RTF':>6} {'peak RSS MB':>11}"
    print(header)
    for row in report:
        print(
            f"{row['cap']:>5} {row['calls']:>5} {row['longest_call_tokens']:>7} "
            f"{row['gen_seconds']:>7.3f} {row['rtf']:>6.3f} {row['peak_rss_mb']:>11.1f}"
        )
    print(json.dumps(report, indent=2))
    return report


def child(settings: Settings, cap: int, runs: int) -> None:
    print(json.dumps(measure(replace(settings, max_segment_tokens=cap), runs)))

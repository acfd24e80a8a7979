"""The engine benchmark: raw synthesis speed of one session.

For a fixed set of texts, each is synthesized once to warm up, then ``runs`` more times; the
median generation time, the audio length and their ratio (the real-time factor, RTF) are
reported. ``python -m app bench engine`` runs it back to back; the server runs the same
definition step by step while it is idle (``app.scheduled_bench``). Both record the median RTF
in the benchmark history, where ``app.regression`` judges it. It is also the baseline the
streaming server is compared to.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from app.bench_history import BenchHistory, RecordedRun
from app.tts.engine import Engine
from app.tts.synthesizer import SpeechResult, Synthesizer

ENGINE_BENCHMARK = "engine"
RTF_METRIC = "rtf_median"
DEFAULT_RUNS = 3

BENCH_TEXTS: dict[str, str] = {
    "one_word": "Hello.",
    "short": "The quick brown fox jumps over the lazy dog.",
    "sentence": (
        "Streaming speech synthesis lets a voice agent answer in a fraction of a second, "
        "long before the whole reply has been written."
    ),
    "paragraph": (
        "On a clear morning in early spring, the old harbour town woke slowly. Fishermen "
        "checked their nets while the bakery on the corner filled the street with the smell "
        "of fresh bread. By nine o'clock the market was busy with people buying fruit, fish "
        "and flowers, and the ferry to the island left exactly on time."
    ),
}


@dataclass(frozen=True, slots=True)
class BenchRow:
    name: str
    words: int
    tokens: int
    calls: int
    audio_seconds: float
    gen_seconds_median: float
    gen_seconds_min: float
    rtf: float


@dataclass(frozen=True, slots=True)
class BenchStep:
    """One synthesis of one text; run 0 is its warm-up and is not timed."""

    name: str
    text: str
    run: int


@dataclass(frozen=True, slots=True)
class EngineBenchmark:
    """The engine benchmark, one definition for ``python -m app bench engine`` and the server's
    scheduled runs: each text synthesized once to warm up, then ``runs`` timed times."""

    texts: Mapping[str, str] = field(default_factory=lambda: dict(BENCH_TEXTS))
    runs: int = DEFAULT_RUNS

    def __post_init__(self) -> None:
        if self.runs < 1 or not self.texts:
            raise ValueError("a benchmark needs at least one text and one timed run")

    def describe(self) -> dict[str, Any]:
        """What the benchmark does; part of its history's environment fingerprint."""
        return {"texts": dict(self.texts), "runs": self.runs}

    def steps(self) -> list[BenchStep]:
        """Round by round over the texts: a slow spell of a few seconds (other tenants of a
        shared machine) then costs each text one run, which its median ignores, instead of
        every run of one text."""
        return [
            BenchStep(name, text, run)
            for run in range(self.runs + 1)
            for name, text in self.texts.items()
        ]


class BenchTally:
    """The timed results of a benchmark's steps, turned into one row per text."""

    def __init__(self, definition: EngineBenchmark) -> None:
        self.definition = definition
        self._times: dict[str, list[float]] = {name: [] for name in definition.texts}
        self._last: dict[str, SpeechResult] = {}

    def add(self, step: BenchStep, result: SpeechResult) -> None:
        if step.run == 0:
            return
        self._times[step.name].append(result.gen_seconds)
        self._last[step.name] = result

    def rows(self) -> list[BenchRow]:
        rows = []
        for name, text in self.definition.texts.items():
            times, last = self._times[name], self._last[name]
            chunks, audio_seconds = last.chunks, last.audio_seconds
            median = statistics.median(times)
            rows.append(
                BenchRow(
                    name=name,
                    words=len(text.split()),
                    tokens=sum(len(chunk.tokens) for chunk in chunks),
                    calls=len(chunks),
                    audio_seconds=round(audio_seconds, 3),
                    gen_seconds_median=round(median, 4),
                    gen_seconds_min=round(min(times), 4),
                    rtf=round(median / audio_seconds, 4),
                )
            )
        return rows


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where available."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_facts(synthesizer: Synthesizer, engine: Engine | None = None) -> dict[str, Any]:
    engine = engine or synthesizer.engine
    config = engine.config
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": engine.providers,
        "intra_op_threads": config.intra_op_threads,
        "model": str(config.model_path),
    }


def environment(
    definition: EngineBenchmark, synthesizer: Synthesizer, engine: Engine, voice: str
) -> dict[str, Any]:
    """Everything a run's figure depends on: runs compare only within one environment."""
    return {
        **machine_facts(synthesizer, engine),
        "benchmark": definition.describe(),
        "voice": voice,
    }


def bench_engine(
    synthesizer: Synthesizer, definition: EngineBenchmark, voice: str
) -> list[BenchRow]:
    """Run every step back to back on the first session."""
    tally = BenchTally(definition)
    for step in definition.steps():
        tally.add(step, synthesizer.render(step.text, voice, 1.0))
    return tally.rows()


def record_run(
    history: BenchHistory, rows: list[BenchRow], environment: Mapping[str, Any]
) -> RecordedRun:
    """Add a run to the history: its figure is the median of the texts' RTFs; the rows go into
    the details (the live degradation check fits its cost model to them)."""
    value = statistics.median(row.rtf for row in rows)
    details = {"rows": [asdict(row) for row in rows]}
    return history.record(ENGINE_BENCHMARK, RTF_METRIC, value, environment, details)


def format_table(rows: list[BenchRow]) -> str:
    header = (
        f"{'text':<10} {'words':>5} {'tokens':>6} {'audio s':>8} {'gen s (med)':>11} {'RTF':>6}"
    )
    lines = [header, "-" * len(header)]
    lines += [
        f"{r.name:<10} {r.words:>5} {r.tokens:>6} {r.audio_seconds:>8.2f} "
        f"{r.gen_seconds_median:>11.3f} {r.rtf:>6.3f}"
        for r in rows
    ]
    return "\n".join(lines)


def run_engine_bench(
    synthesizer: Synthesizer, definition: EngineBenchmark, voice: str, json_path: Path | None
) -> tuple[dict[str, Any], list[BenchRow]]:
    """Run the benchmark, print the table and the JSON report; optionally save the JSON."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = bench_engine(synthesizer, definition, voice)
    report = {
        "benchmark": ENGINE_BENCHMARK,
        "started": started,
        "runs": definition.runs,
        "voice": voice,
        "machine": machine_facts(synthesizer),
        "results": [asdict(row) for row in rows],
    }
    print(format_table(rows))
    text = json.dumps(report, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
        print(f"saved {json_path}", file=sys.stderr)
    return report, rows

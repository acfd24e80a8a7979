"""``python -m app bench engine``: raw synthesis speed of the configured session.

For a fixed set of texts, each is planned once (normalise, phonemise, split), synthesized once to
warm up, then ``runs`` more times; the median generation time, the audio length and their ratio
(the real-time factor, RTF) are reported. This is the baseline the streaming server is compared to.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from app.tts.synthesizer import Synthesizer

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


def cpu_model() -> str:
    """The CPU's marketing name, from /proc/cpuinfo where available."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_facts(synthesizer: Synthesizer) -> dict[str, Any]:
    config = synthesizer.engine.config
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": synthesizer.engine.providers,
        "intra_op_threads": config.intra_op_threads,
        "model": str(config.model_path),
    }


def bench_engine(synthesizer: Synthesizer, voice: str, runs: int) -> list[BenchRow]:
    rows = []
    for name, text in BENCH_TEXTS.items():
        chunks = synthesizer.plan(text)
        synthesizer.speak_blocking(text, voice)
        times = []
        audio_seconds = 0.0
        for _ in range(runs):
            result = synthesizer.speak_blocking(text, voice)
            times.append(result.gen_seconds)
            audio_seconds = result.audio_seconds
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
    synthesizer: Synthesizer, voice: str, runs: int, json_path: Path | None
) -> dict[str, Any]:
    """Run the benchmark, print the table and the JSON report; optionally save the JSON."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = bench_engine(synthesizer, voice, runs)
    report = {
        "benchmark": "engine",
        "started": started,
        "runs": runs,
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
    return report

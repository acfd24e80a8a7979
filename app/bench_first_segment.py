"""``python -m app bench first-segment``: streamed first audio of a whole sentence, per mode.

For each ``KOKORO_FIRST_SEGMENT`` mode (``short``, ``sentence``, ``windowed``) it starts the
server as a child process with that mode and the given plan, streams a warm-up sentence (not
counted), then ``rounds`` rounds of three ~20-word sentences, each sent at once as the only text
of its stream, one stream at a time. Per stream: the client's time to first audio (from sending
the text to the first audio frame), the server's TTFA, the first segment's words and model time,
and the underruns the Python client's player model would have had (``bench_stream``'s replay).
The modes' TTFA ratios come from one run of this command.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
from pathlib import Path
from typing import Any

from app.bench import machine_facts
from app.bench_stream import stream_once
from app.bench_windowed import SENTENCES
from app.local_server import (
    LOOPBACK,
    free_port,
    settings_args,
    start_server,
    stop_server,
    wait_ready,
)
from app.settings import FIRST_SEGMENTS, Settings
from app.tts.synthesizer import Synthesizer

WARM_UP = "A short sentence to warm the server up before anything is timed."


async def _run_mode(url: str, rounds: int) -> list[dict[str, Any]]:
    await stream_once(url, [WARM_UP], 0.0)
    runs = []
    for _ in range(rounds):
        for sentence in SENTENCES:
            run = await stream_once(url, [sentence], 0.0)
            first = run["segments"][0]
            runs.append(
                {
                    "words": len(sentence.split()),
                    "client_ttfa_ms": round(run["client_ttfa_s"] * 1000, 1),
                    "server_ttfa_ms": run["done"]["ttfa_ms"],
                    "first_segment_words": len(first["text"].split()),
                    "first_segment_gen_ms": first["gen_ms"],
                    "started_before_decoded": run["done"]["ttfa_ms"] < first["gen_ms"],
                    "segments": len(run["segments"]),
                    "underruns": run["underruns"],
                    "rtf": run["done"]["rtf"],
                }
            )
    return runs


def _serve_mode(settings: Settings, mode: str, plan: str, rounds: int) -> list[dict[str, Any]]:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-first-segment-{mode}-{port}.log"
    args = [*settings_args(settings), "--plan", plan]
    process = start_server(port, log_path, args, env={"KOKORO_FIRST_SEGMENT": mode})
    try:
        wait_ready(base, process, log_path)
        return asyncio.run(_run_mode(base.replace("http", "ws") + "/v1/stream", rounds))
    finally:
        stop_server(process, stop_signal=signal.SIGTERM)


def run_first_segment_bench(
    settings: Settings, rounds: int, plan: str, json_path: Path | None
) -> dict[str, Any]:
    modes = {mode: _serve_mode(settings, mode, plan, rounds) for mode in FIRST_SEGMENTS}
    synthesizer = Synthesizer.load(settings)
    try:
        machine = machine_facts(synthesizer)
    finally:
        synthesizer.close()
    summary = {}
    for mode, runs in modes.items():
        summary[mode] = {
            "client_ttfa_ms_p50": statistics.median(run["client_ttfa_ms"] for run in runs),
            "client_ttfa_ms_max": max(run["client_ttfa_ms"] for run in runs),
            "server_ttfa_ms_p50": statistics.median(run["server_ttfa_ms"] for run in runs),
            "first_segment_words_p50": statistics.median(
                run["first_segment_words"] for run in runs
            ),
            "first_segment_gen_ms_p50": statistics.median(
                run["first_segment_gen_ms"] for run in runs
            ),
            "started_before_decoded": sum(run["started_before_decoded"] for run in runs),
            "streams": len(runs),
            "underruns": sum(run["underruns"] for run in runs),
            "streams_with_underruns": sum(run["underruns"] > 0 for run in runs),
            "rtf_p50": statistics.median(run["rtf"] for run in runs),
        }
    windowed = summary["windowed"]["client_ttfa_ms_p50"]
    report = {
        "benchmark": "first-segment",
        "rounds": rounds,
        "plan": plan,
        "machine": machine,
        "summary": summary,
        "windowed_over_sentence": round(windowed / summary["sentence"]["client_ttfa_ms_p50"], 3),
        "windowed_over_short": round(windowed / summary["short"]["client_ttfa_ms_p50"], 3),
        "streams": modes,
    }
    _print(report)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _print(report: dict[str, Any]) -> None:
    print(f"plan {report['plan']}, {report['rounds']} rounds of {len(SENTENCES)} sentences")
    print(
        "mode      client TTFA p50 / max ms  server p50  1st segment words  its model ms  "
        "audio before decoded  underruns (streams)  RTF"
    )
    for mode, row in report["summary"].items():
        print(
            f"{mode:9} {row['client_ttfa_ms_p50']:8.1f} / {row['client_ttfa_ms_max']:8.1f}"
            f"  {row['server_ttfa_ms_p50']:10.1f}  {row['first_segment_words_p50']:17}"
            f"  {row['first_segment_gen_ms_p50']:12.1f}"
            f"  {row['started_before_decoded']:>13} of {row['streams']:<4}"
            f"  {row['underruns']:9} ({row['streams_with_underruns']})  {row['rtf_p50']}"
        )
    print(
        f"windowed / sentence: {report['windowed_over_sentence']}, "
        f"windowed / short: {report['windowed_over_short']}"
    )

"""``python -m app bench stream``: streamed time to first audio against raw engine time.

Starts the server as a child process on a free loopback port, waits for ``/ready``, then runs
``rounds`` rounds of three streamed requests over a real WebSocket: a short sentence, a 60-word
paragraph sent at once, and the same paragraph fed word by word (one word every 50 ms). For each
it records the client-measured time to first audio (from sending the first text to receiving the
first audio frame), the server-reported TTFA and RTF from ``done``. After stopping the server
(so nothing competes for the cores), it times the raw engine on the paragraph's first segment and
on its whole first sentence, and reports the ratio the streaming design is judged by.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
from websockets.asyncio.client import connect

from app import wire
from app.bench import machine_facts
from app.client import PlaybackClock
from app.local_server import (
    LOOPBACK,
    free_port,
    settings_args,
    start_server,
    stop_server,
    wait_ready,
)
from app.settings import Settings
from app.tts.synthesizer import Synthesizer

SHORT = "Good morning, how are you today?"
PARAGRAPH = (
    "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the great "
    "lens, trimmed the wick, and watched the ships pass far out at sea. Nobody in the village "
    "remembered when he had arrived, but everybody knew the sound of his boots on the iron "
    "steps. On stormy nights the beam swept across the water until dawn, and the fishermen "
    "slept a little easier."
)
WORD_GAP_SECONDS = 0.05


async def stream_once(url: str, pieces: Sequence[str], gap: float) -> dict[str, Any]:
    """One stream on its own connection; returns client TTFA, server figures, segments."""
    async with connect(url, subprotocols=[wire.SUBPROTOCOL], max_size=2**22) as ws:  # type: ignore[list-item]
        wire.decode_server(await ws.recv(decode=False))

        async def pack(**message: Any) -> None:
            await ws.send(msgpack.packb(message, use_bin_type=True))

        await pack(type="start", stream="s")
        sent_at = time.monotonic()

        async def feed() -> None:
            for index, piece in enumerate(pieces):
                if index and gap:
                    await asyncio.sleep(gap)
                await pack(type="text", stream="s", text=piece)
            await pack(type="end", stream="s")

        first_audio: float | None = None
        events: list[tuple[float, dict[str, Any]]] = []
        segments: list[dict[str, Any]] = []
        async with asyncio.TaskGroup() as group:
            group.create_task(feed())
            while True:
                message = wire.decode_server(await ws.recv(decode=False))
                arrived = time.monotonic() - sent_at
                if message["type"] == "audio":
                    first_audio = arrived if first_audio is None else first_audio
                    events.append((arrived, message))
                elif message["type"] == "segment":
                    segments.append(message)
                    events.append((arrived, message))
                elif message["type"] == "error":
                    raise RuntimeError(f"server error: {message}")
                elif message["type"] == "done":
                    done = message
                    break
    underruns, hold = replay_player(events)
    return {
        "client_ttfa_s": first_audio,
        "done": done,
        "segments": segments,
        "underruns": underruns,
        "start_hold_s": hold,
    }


class _ReplayClock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def replay_player(events: Sequence[tuple[float, dict[str, Any]]]) -> tuple[int, float]:
    """Underruns the Python client's player model (120 ms pre-roll, adaptive start) would have
    had with these arrival times, and how long it held the start after the first audio."""
    clock = _ReplayClock()
    player = PlaybackClock(clock=clock)
    for arrived, message in events:
        clock.now = arrived
        if message["type"] == "audio":
            player.add(len(message["data"]) // 2)
        elif message["seg"] == 0:
            player.plan(float(message["gen_ms"]), int(message["samples"]))
    return player.underruns, player.start_hold_s


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


async def _run_rounds(url: str, rounds: int) -> dict[str, list[dict[str, Any]]]:
    words = PARAGRAPH.split(" ")
    cases = {
        "short": ([SHORT], 0.0),
        "paragraph": ([PARAGRAPH], 0.0),
        "word_by_word": ([words[0], *(" " + word for word in words[1:])], WORD_GAP_SECONDS),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    await stream_once(url, [SHORT], 0.0)  # warm the connection path; not counted
    for _ in range(rounds):
        for name, (pieces, gap) in cases.items():
            results[name].append(await stream_once(url, pieces, gap))
    return results


def run_stream_bench(settings: Settings, rounds: int, json_path: Path | None) -> dict[str, Any]:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-stream-{port}.log"
    process = start_server(port, log_path, settings_args(settings))
    try:
        wait_ready(base, process, log_path)
        results = asyncio.run(_run_rounds(base.replace("http", "ws") + "/v1/stream", rounds))
    finally:
        stop_server(process, stop_signal=signal.SIGTERM)

    first_segment = results["paragraph"][0]["segments"][0]["text"]
    first_sentence = PARAGRAPH.split(". ", maxsplit=1)[0] + "."
    synthesizer = Synthesizer.load(settings)
    try:
        synthesizer.render(first_sentence, settings.default_voice, 1.0)  # warm-up
        engine_runs = max(rounds, 3)
        segment_times = [
            synthesizer.render(first_segment, settings.default_voice, 1.0).gen_seconds
            for _ in range(engine_runs)
        ]
        sentence_times = [
            synthesizer.render(first_sentence, settings.default_voice, 1.0).gen_seconds
            for _ in range(engine_runs)
        ]
        machine = machine_facts(synthesizer)
    finally:
        synthesizer.close()

    summary: dict[str, Any] = {}
    for name, runs in results.items():
        client = [run["client_ttfa_s"] for run in runs]
        server = [run["done"]["ttfa_ms"] / 1000 for run in runs]
        summary[name] = {
            "client_ttfa_s": {"p50": _median(client), "p95": round(max(client), 4)},
            "server_ttfa_s": {"p50": _median(server), "p95": round(max(server), 4)},
            "rtf": _median([run["done"]["rtf"] for run in runs]),
            "underruns_max": max(run["underruns"] for run in runs),
            "start_hold_ms_p50": round(_median([run["start_hold_s"] for run in runs]) * 1000),
            "segments": len(runs[0]["segments"]),
        }
    paragraph_ttfa = summary["paragraph"]["client_ttfa_s"]["p50"]
    report = {
        "benchmark": "stream",
        "rounds": rounds,
        "machine": machine,
        "streams": summary,
        "engine": {
            "first_segment_text": first_segment,
            "first_segment_s": _median(segment_times),
            "first_sentence_text": first_sentence,
            "first_sentence_s": _median(sentence_times),
        },
        "paragraph_ttfa_over_first_sentence": round(paragraph_ttfa / _median(sentence_times), 3),
    }
    _print_table(report)
    text = json.dumps(report, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
    return report


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"{'stream':<14} {'client TTFA p50/p95 ms':>23} {'server TTFA p50 ms':>19} {'RTF':>6}"
        f" {'underruns':>9} {'hold ms':>7}"
    )
    for name, figures in report["streams"].items():
        client = figures["client_ttfa_s"]
        print(
            f"{name:<14} {client['p50'] * 1000:>11.0f} / {client['p95'] * 1000:<9.0f} "
            f"{figures['server_ttfa_s']['p50'] * 1000:>19.0f} {figures['rtf']:>6.3f}"
            f" {figures['underruns_max']:>9} {figures['start_hold_ms_p50']:>7}"
        )
    engine = report["engine"]
    print(
        f"engine: first segment {engine['first_segment_text']!r} "
        f"{engine['first_segment_s'] * 1000:.0f} ms; whole first sentence "
        f"{engine['first_sentence_s'] * 1000:.0f} ms"
    )
    print(
        "paragraph client TTFA / whole-first-sentence engine time = "
        f"{report['paragraph_ttfa_over_first_sentence']:.3f}"
    )

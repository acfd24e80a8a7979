"""``python -m app bench soak``: does the server's memory hold over hundreds of requests?

The server runs as a child process (its memory is its own). A warm-up sends every text of the
mix once by each route, so the inference arena has grown to the longest call's size and every
code path has run; the resident memory after it is the baseline. Then ``requests`` requests
follow, ``concurrency`` at a time, cycling through a mix that is mostly short (as a voice agent's
replies are) with a long paragraph every tenth request, alternately as a WebSocket stream (played
in real time by the project's client) and as an HTTP synthesis. After each request the server's
resident memory is read from ``/v1/stats``.

Verdict: growth is the median of the last tenth of the readings over the baseline. A leak grows
with the number of requests; a larger arena after an unusually long call does not (the warm-up
has already made the longest one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.bench import BENCH_TEXTS
from app.client import AudioFrame, TTSClient
from app.local_server import free_port, settings_args, start_server, stop_server, wait_ready
from app.settings import Settings

MIX = (
    ["one_word"] * 4 + ["short"] * 3 + ["sentence"] * 2 + ["paragraph"]
)  # a tenth long, four tenths a word or two
ROUTES = ("stream", "http")
GROWTH_LIMIT = 0.05


@dataclass(slots=True)
class SoakLog:
    """What happened: resident memory after each request, and failures."""

    baseline_rss: int = 0
    rss: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    requests: int = 0

    def growth(self) -> float:
        tail = self.rss[-max(1, len(self.rss) // 10) :]
        return statistics.median(tail) / self.baseline_rss - 1


def requests_in_order(count: int) -> Iterator[tuple[str, str]]:
    """(route, text name) pairs: the mix cycled, the route alternating."""
    pairs = zip(itertools.cycle(ROUTES), itertools.cycle(MIX), strict=False)
    return itertools.islice(pairs, count)


async def _one(base: str, http: httpx.AsyncClient, route: str, name: str, log: SoakLog) -> None:
    text = BENCH_TEXTS[name]
    try:
        if route == "http":
            response = await http.post(
                "/v1/audio/speech", json={"input": text, "response_format": "pcm"}
            )
            if response.status_code != 200:
                log.failures.append(f"http {name}: {response.status_code} {response.text[:200]}")
            else:
                log.audio_seconds += float(response.headers["X-Audio-Seconds"])
        else:
            url = base.replace("http", "ws", 1) + "/v1/stream"
            samples = 0
            async with TTSClient.connect(url) as client:
                async for item in client.speak(text):
                    if isinstance(item, AudioFrame):
                        samples += len(item.samples)
            log.audio_seconds += samples / 24_000
    except Exception as error:  # a soak reports every failure and goes on
        log.failures.append(f"{route} {name}: {error!r}")
    log.requests += 1
    log.rss.append((await http.get("/v1/stats")).json()["process"]["rss_bytes"])


async def soak(base: str, requests: int, concurrency: int, log: SoakLog) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        for route in ROUTES:  # warm-up: every text by every route
            for name in sorted(set(MIX)):
                await _one(base, http, route, name, log)
        log.baseline_rss = log.rss[-1]
        log.rss.clear()
        log.requests, log.audio_seconds = 0, 0.0
        work = iter(requests_in_order(requests))

        async def worker() -> None:
            for route, name in work:
                await _one(base, http, route, name, log)
                if log.requests % 50 == 0:
                    print(
                        f"{log.requests}/{requests} requests, rss {log.rss[-1] >> 20} MB, "
                        f"{len(log.failures)} failures",
                        flush=True,
                    )

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())


def report(log: SoakLog, seconds: float, concurrency: int) -> dict[str, Any]:
    mb = 1 << 20
    tenth = max(1, len(log.rss) // 10)
    checkpoints = {
        str(index + 1): round(log.rss[index] / mb, 1)
        for index in range(tenth - 1, len(log.rss), tenth)
    }
    growth = log.growth()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "requests": log.requests,
        "concurrency": concurrency,
        "failures": log.failures,
        "audio_seconds": round(log.audio_seconds, 1),
        "wall_seconds": round(seconds, 1),
        "baseline_rss_mb": round(log.baseline_rss / mb, 1),
        "rss_mb_after_request": checkpoints,
        "max_rss_mb": round(max(log.rss) / mb, 1),
        "growth": round(growth, 4),
        "passed": growth < GROWTH_LIMIT and not log.failures,
    }


def run_soak_bench(
    settings: Settings, requests: int, concurrency: int, json_path: Path | None
) -> bool:
    """Start a server, soak it, print the report; True if memory held and nothing failed."""
    port = free_port()
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kokoro-soak-{port}.log"
    env_before = os.environ.get("KOKORO_MAX_ACTIVE_STREAMS")
    os.environ["KOKORO_MAX_ACTIVE_STREAMS"] = str(concurrency)  # admission is not under test
    try:
        server = start_server(port, log_path, [*settings_args(settings), "--plan", settings.plan])
    finally:
        if env_before is None:
            os.environ.pop("KOKORO_MAX_ACTIVE_STREAMS")
        else:
            os.environ["KOKORO_MAX_ACTIVE_STREAMS"] = env_before
    base = f"http://127.0.0.1:{port}"
    log = SoakLog()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        wait_ready(base, server, log_path, timeout_s=600)
        started = time.perf_counter()
        asyncio.run(soak(base, requests, concurrency, log))
        seconds = time.perf_counter() - started
    finally:
        stop_server(server)
    result = report(log, seconds, concurrency)
    print(_markdown(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return bool(result["passed"])


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Soak: {result['requests']} requests, {result['concurrency']} at a time, "
        f"{result['audio_seconds']} s of audio in {result['wall_seconds']} s "
        f"({result['machine']})",
        "",
        "| after request | resident MB |",
        "|---|---|",
        f"| warm-up | {result['baseline_rss_mb']} |",
        *(f"| {index} | {mb} |" for index, mb in result["rss_mb_after_request"].items()),
        "",
        f"max {result['max_rss_mb']} MB; growth (median of the last tenth over the warm-up) "
        f"{result['growth']:+.2%}, limit {GROWTH_LIMIT:.0%}; failures: {len(result['failures'])}",
    ]
    lines += [f"- {failure}" for failure in result["failures"][:20]]
    return "\n".join(lines)

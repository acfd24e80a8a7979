"""The server's own view, once a second: ``GET /v1/stats`` as a time series.

Every field is read defensively: a server that does not report it (an older build, or one still
being extended) gives ``None``, and the report says so instead of failing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from loadtest.records import StatsSample

RssProbe = Callable[[], Awaitable[int | None]]


def _section(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


def _float(section: Mapping[str, Any], key: str) -> float | None:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(section: Mapping[str, Any], key: str) -> int | None:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def parse_sample(t: float, body: Mapping[str, Any], rss_fallback: int | None = None) -> StatsSample:
    """One ``/v1/stats`` body as a sample; ``rss_fallback`` fills in a missing
    ``process.rss_bytes``."""
    generated = _section(body, "generated")
    admission = _section(body, "admission")
    rss = _int(_section(body, "process"), "rss_bytes")
    return StatsSample(
        t=t,
        audio_seconds_total=_float(generated, "audio_seconds_total"),
        segments_total=_int(generated, "segments_total"),
        gen_seconds_total=_float(generated, "gen_seconds_total"),
        capacity_streams=_int(admission, "capacity_streams"),
        generating_streams=_int(admission, "generating_streams"),
        refused_total=_int(admission, "refused_total"),
        throughput_audio_per_s=_float(admission, "throughput_audio_per_s"),
        rss_bytes=rss if rss is not None else rss_fallback,
    )


def read_rss_bytes(pid: int) -> int | None:
    """Resident memory of a local process from ``/proc`` (blocking; Linux only)."""
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def local_rss_probe(pid: int) -> RssProbe:
    """Reads a spawned server's memory on a worker thread, for servers that do not report it."""

    async def probe() -> int | None:
        return await asyncio.to_thread(read_rss_bytes, pid)

    return probe


class StatsSampler:
    """Polls ``/v1/stats`` every ``interval_s`` until cancelled; a failed poll is counted and
    skipped (the series shows the gap)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base: str,
        clock: Callable[[], float],
        *,
        interval_s: float = 1.0,
        rss_probe: RssProbe | None = None,
    ) -> None:
        self.http = http
        self.url = f"{base}/v1/stats"
        self.clock = clock
        self.interval_s = interval_s
        self.rss_probe = rss_probe
        self.samples: list[StatsSample] = []
        self.failures = 0

    async def poll(self) -> None:
        t = self.clock()
        try:
            response = await self.http.get(self.url, timeout=max(self.interval_s, 2.0))
            body = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            body = None
        if not isinstance(body, Mapping):
            self.failures += 1
            return
        fallback = None
        if self.rss_probe is not None and _int(_section(body, "process"), "rss_bytes") is None:
            fallback = await self.rss_probe()
        self.samples.append(parse_sample(t, body, fallback))

    async def run(self) -> None:
        """Poll on a fixed grid (a slow poll skips ticks rather than drifting)."""
        start = self.clock()
        tick = 0
        while True:
            await self.poll()
            elapsed = self.clock() - start
            tick = max(tick + 1, int(elapsed / self.interval_s) + 1)
            await asyncio.sleep(max(0.0, start + tick * self.interval_s - self.clock()))

"""One load test from start to report: the server (given or spawned), its limits, the raw engine
loop while it is idle, the ramp of users with the stats sampler beside it, then the files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loadtest.config import LoadConfig
from loadtest.machine import machine_facts
from loadtest.plots import write_plots
from loadtest.ramp import Ramp, default_steps
from loadtest.raw_loop import raw_throughput
from loadtest.records import RawResult
from loadtest.report import LoadReport, build_report, write_report
from loadtest.sampler import StatsSampler, local_rss_probe
from loadtest.target import ServerInfo, Target, probe, target_server
from loadtest.users import RunLog, UserSetup, drive_users

logger = logging.getLogger(__name__)


def _clock_from_now() -> Callable[[], float]:
    """Seconds since now: the ramp's time base."""
    origin = time.monotonic()
    return lambda: time.monotonic() - origin


async def _announce_steps(ramp: Ramp, clock: Callable[[], float]) -> None:
    """Progress on the log as each step begins (the ramp's timetable, not a synchronisation)."""
    for window in ramp.windows:
        await asyncio.sleep(max(0.0, window.start - clock()))
        logger.info(
            "step %d/%d: %d users for %.0f s",
            window.index + 1,
            len(ramp.windows),
            window.users,
            window.seconds,
        )


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a helper task and wait for it; a crash in it is a bug and surfaces."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error


def _server_facts(target: Target, info: ServerInfo) -> dict[str, Any]:
    return {
        "base": target.base,
        "spawned": target.spawned,
        "log": str(target.log_path) if target.log_path else None,
        "plan": info.plan,
        "capacity": info.capacity,
        "limits": info.limits,
        "ready": info.ready,
        "voices": info.voices,
    }


async def _ramp(
    config: LoadConfig, http: httpx.AsyncClient, target: Target, ramp: Ramp
) -> tuple[RunLog, StatsSampler]:
    log = RunLog(clock=_clock_from_now())
    probe_rss = local_rss_probe(target.pid) if target.pid is not None else None
    sampler = StatsSampler(http, target.base, log.clock, rss_probe=probe_rss)
    setup = UserSetup(
        url=target.stream_url,
        texts=config.texts,
        word_share=config.word_share,
        word_interval_s=config.word_interval_ms / 1000,
        voice=config.voice,
        seed=config.seed,
    )
    sampling = asyncio.create_task(sampler.run(), name="stats-sampler")
    announcing = asyncio.create_task(_announce_steps(ramp, log.clock), name="step-announcer")
    try:
        await drive_users(ramp, setup, log, config.drain_timeout_s)
    finally:
        await _stop(announcing)
        await _stop(sampling)
    return log, sampler


async def run_load_test(config: LoadConfig) -> LoadReport:
    """Run the whole test and write its files into ``config.out``; returns the report."""
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    await asyncio.to_thread(config.out.mkdir, parents=True, exist_ok=True)
    machine = await asyncio.to_thread(machine_facts)
    raw: RawResult | None = None
    async with (
        httpx.AsyncClient(timeout=10) as http,
        target_server(config.server, config.out) as target,
    ):
        info = await probe(http, target)
        logger.info("server %s ready: plan %s, capacity %s", target.base, info.plan, info.capacity)
        if config.raw:
            logger.info("raw engine loop over %d texts", config.raw_texts)
            texts = config.texts[: config.raw_texts]
            raw, facts = await raw_throughput(info.plan, texts, config.voice, config.raw_rounds)
            machine = {**machine, **facts}
            logger.info("raw engine loop: %s audio s/s", raw.throughput_audio_per_s)
        ramp = Ramp.even(config.steps or default_steps(info.capacity), config.duration_s)
        log, sampler = await _ramp(config, http, target, ramp)
        if raw is not None and raw.throughput_audio_per_s is not None:
            logger.info("raw engine loop again, after the ramp")
            texts = config.texts[: config.raw_texts]
            after, _ = await raw_throughput(info.plan, texts, config.voice, config.raw_rounds)
            logger.info(
                "raw engine loop after the ramp: %s audio s/s", after.throughput_audio_per_s
            )
            raw = RawResult.mean_of(raw, after)
    report = build_report(
        created=created,
        config=config.to_json(),
        machine=machine,
        server=_server_facts(target, info),
        capacity=info.capacity,
        raw=raw,
        windows=ramp.windows,
        streams=log.streams,
        samples=sampler.samples,
        meter=log.meter,
        connect_failures=log.connect_failures,
        stats_failures=sampler.failures,
    )
    await asyncio.to_thread(write_files, report, config.out)
    return report


def write_files(report: LoadReport, out_dir: Path) -> list[Path]:
    """Blocking: the plots, then the JSON and Markdown that link them."""
    plots = write_plots(report, out_dir)
    return [*write_report(report, out_dir, [path.name for path in plots]), *plots]

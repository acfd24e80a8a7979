"""The memory monitor: levels, the actions each one takes, and a real server under a cgroup limit
that refuses new streams instead of being killed."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from actors.messages import StreamKey
from app.admission import MEMORY_RETRY_MS, Admission, AdmissionPolicy
from app.errors import BusyError
from app.local_server import free_port, settings_args, start_server, stop_server, wait_ready
from app.memory_pressure import (
    RECOVERY_HOLD_S,
    MemoryMonitor,
    MemoryReading,
    PressureLevel,
    read_memory,
)
from app.process import rss_bytes, trim_heap
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.cgroups import MemoryCgroup
from tests.live import Client, live_server, speak

LIMIT = 1000


class FakeMemory:
    """Readings and a clock the test sets (fault injection: real pressure is tested below)."""

    def __init__(self) -> None:
        self.used = 0
        self.now = 0.0

    def read(self) -> MemoryReading:
        return MemoryReading(self.used, LIMIT, "fake")

    def clock(self) -> float:
        return self.now


@pytest.fixture
def memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture
def monitor(memory: FakeMemory) -> MemoryMonitor:
    return MemoryMonitor(read=memory.read, clock=memory.clock)


def test_levels_rise_at_once_and_fall_only_after_the_hold(
    memory: FakeMemory, monitor: MemoryMonitor
) -> None:
    shrinking: list[bool] = []
    monitor.actions.shrink = shrinking.append
    memory.used = 500
    assert monitor.update() is PressureLevel.NORMAL
    memory.used = 720
    assert monitor.update() is PressureLevel.SHRINK
    memory.used = 950
    assert monitor.update() is PressureLevel.REFUSE
    assert shrinking == [True, True]
    memory.used = 860  # below 90% but within the 5-point margin: no recovery clock
    memory.now += 10
    assert monitor.update() is PressureLevel.REFUSE
    memory.used = 400  # a gap between calls: the level holds
    assert monitor.update() is PressureLevel.REFUSE
    memory.now += RECOVERY_HOLD_S / 2
    memory.used = 940  # the next call grows the arena again: the hold starts over
    assert monitor.update() is PressureLevel.REFUSE
    memory.used = 400
    monitor.update()
    memory.now += RECOVERY_HOLD_S / 2
    assert monitor.update() is PressureLevel.REFUSE
    memory.now += RECOVERY_HOLD_S / 2
    assert monitor.update() is PressureLevel.NORMAL
    assert shrinking == [True, True, False]
    assert monitor.entered == {"normal": 0, "shrink": 1, "throttle": 0, "refuse": 1}
    assert monitor.peak_ratio == pytest.approx(0.95)


async def test_admission_halves_capacity_then_refuses_new_streams(
    memory: FakeMemory, monitor: MemoryMonitor
) -> None:
    admission = Admission(
        AdmissionPolicy(max_streams=4),
        throughput=lambda: 1.0,
        workers=lambda: 1,
        frees_in=lambda key: 1.0,
        memory=monitor,
    )
    keys = [StreamKey("connection", name) for name in "abcd"]
    memory.used = 100
    await admission.admit(keys[0])
    assert admission.capacity() == 4
    memory.used = 850
    memory.now += 1  # past the freshness window: admission reads memory again
    await admission.admit(keys[1])  # throttled: capacity 2, one slot left
    assert admission.capacity() == 2
    with pytest.raises(BusyError, match="capacity"):
        await admission.admit(keys[2])
    memory.used = 990
    memory.now += 1
    admission.release(keys[1])
    with pytest.raises(BusyError, match="memory is low") as refused:
        await admission.admit(keys[2])
    assert refused.value.retry_after_ms == MEMORY_RETRY_MS
    assert admission.generating == 1  # the stream already admitted goes on
    assert admission.refused == 2 and monitor.refused == 1


def test_a_configured_limit_is_read_against_this_process_resident_memory() -> None:
    resident = rss_bytes()
    tight = read_memory(configured_limit_bytes=resident // 2)
    assert tight is not None and tight.source == "configured" and tight.ratio > 1.5
    assert MemoryMonitor(resident // 2).update() is PressureLevel.REFUSE
    roomy = read_memory(configured_limit_bytes=1 << 50)
    assert roomy is None or roomy.source != "configured"
    assert MemoryMonitor(1 << 50).update() is PressureLevel.NORMAL
    assert MemoryMonitor(0).stats()["configured_limit_bytes"] is None


LONG_SENTENCE = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the dark "
    "forest where nobody can find it again, not even the hunters with their dogs and lanterns "
    "who searched all night long until the sun came up over the quiet hills."
)


@pytest.mark.model
def test_releasing_an_idle_arena_gives_its_peak_back(synthesizer: Synthesizer) -> None:
    engine = synthesizer.engines[0]
    engine.shrink_arena = False
    try:
        synthesizer.speak_blocking("Hello.", "jm_kumo")
        engine.release_arena()
        small = rss_bytes()
        synthesizer.speak_blocking(LONG_SENTENCE, "jm_kumo")
        assert engine.arena_dirty
        grown = rss_bytes()
        engine.release_arena()
        released = rss_bytes()
        assert not engine.arena_dirty
        engine.shrink_arena = True
        synthesizer.speak_blocking(LONG_SENTENCE, "jm_kumo")
        assert not engine.arena_dirty  # the call gave its memory back itself
        shrunk_after_call = rss_bytes()
    finally:
        engine.shrink_arena = synthesizer.engines[0].config.arena_shrinkage
    assert grown - small > 150 << 20, (small >> 20, grown >> 20)
    assert released - small < (grown - small) / 3, (small >> 20, grown >> 20, released >> 20)
    assert shrunk_after_call - small < (grown - small) / 3


def test_trimming_the_heap_hands_freed_blocks_back() -> None:
    """Blocks freed below the heap's top stay resident until the heap is trimmed."""
    trim_heap()  # what earlier tests freed must not serve these blocks without faulting pages
    before = rss_bytes()
    blocks: list[bytearray | None] = [bytearray(50_000) for _ in range(4000)]  # 200 MB in the heap
    top = blocks[-1]  # the last block stays in use: the heap cannot shrink from its end
    for index in range(len(blocks) - 1):
        blocks[index] = None
    freed = rss_bytes()
    assert trim_heap()
    trimmed = rss_bytes()
    assert top is not None
    assert freed - before > 150 << 20, "the freed blocks were still resident"
    assert freed - trimmed > 150 << 20, f"{freed >> 20} MB before the trim, {trimmed >> 20} after"


class PeakSampler:
    """The cgroup's largest working set while it runs (sampled every 10 ms in a thread)."""

    def __init__(self, cgroup: MemoryCgroup) -> None:
        self._cgroup = cgroup
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._cgroup.working_set())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    group = MemoryCgroup()
    yield group
    group.remove()


async def until_level(
    http: httpx.AsyncClient, level: str, timeout_s: float, limit: int | None = None
) -> None:
    """Poll the server's level (another process: there is nothing to wait on)."""
    async with asyncio.timeout(timeout_s):
        while True:
            memory = (await http.get("/v1/stats")).json()["memory"]
            if memory["level"] == level and limit in (None, memory["limit_bytes"]):
                return
            await asyncio.sleep(0.05)


@pytest.fixture
def server_in_cgroup(
    settings: Settings, cgroup: MemoryCgroup, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``python -m app serve`` inside ``cgroup`` from its first instruction; admission allows
    4 streams, so that only memory can refuse the second."""
    port, log = free_port(), tmp_path / "server.log"
    enter_cgroup = ["sh", "-c", f'echo $$ > {cgroup.procs} && exec "$@"', "sh"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KOKORO_PLAN", "cpu:1x2")
        patch.setenv("KOKORO_MAX_ACTIVE_STREAMS", "4")
        server = start_server(port, log, settings_args(settings), prefix=enter_cgroup)
    try:
        yield f"http://127.0.0.1:{port}", server, log
    finally:
        stop_server(server)


@pytest.mark.model
async def test_under_a_tight_cgroup_limit_new_streams_are_refused_and_nobody_is_killed(
    server_in_cgroup: tuple[str, subprocess.Popen[bytes], Path], cgroup: MemoryCgroup
) -> None:
    """One long stream measures the cgroup's peak working set; the limit is then set 6% above
    that peak, which is past the refuse level (90%)."""
    base, server, log = server_in_cgroup
    await asyncio.to_thread(wait_ready, base, server, log)
    async with httpx.AsyncClient(base_url=base) as http:
        probe = await Client.connect(base, report_played=True)
        with PeakSampler(cgroup) as sampler:
            await speak(probe, "probe", LONG_SENTENCE)
            await probe.until_done("probe")
        await probe.close()
        limit = int(sampler.peak / 0.94) // 4096 * 4096  # the kernel keeps whole pages
        cgroup.set_limit(limit)
        await until_level(http, "normal", timeout_s=30, limit=limit)  # idle arena released

        speaker = await Client.connect(base, report_played=True)
        newcomer = await Client.connect(base, report_played=True)
        async with asyncio.TaskGroup() as group:
            speaking = group.create_task(speak_until_done(speaker, "long", LONG_SENTENCE))
            await until_level(http, "refuse", timeout_s=120)
            await speak(newcomer, "late", "Good morning.")
            refused = await newcomer.next_error()
            assert not speaking.done()
        await until_level(http, "normal", timeout_s=30)
        await speak(newcomer, "after", "Good morning.")
        await newcomer.until_done("after")
        stats = (await http.get("/v1/stats")).json()["memory"]
        metrics = (await http.get("/metrics")).text
        await speaker.close()
        await newcomer.close()
    assert server.poll() is None, log.read_text()
    assert cgroup.oom_kills() == 0
    assert refused["code"] == "busy" and "memory is low" in refused["message"], refused
    assert refused["retry_after_ms"] == MEMORY_RETRY_MS
    long, first = speaker.streams["long"], probe.streams["probe"]
    assert long.done is not None and long.done["reason"] == "complete"
    long.assert_contiguous()
    assert np.array_equal(long.samples(), first.samples())  # nothing lost, nothing changed
    after = newcomer.streams["after"]
    assert after.done is not None and after.done["reason"] == "complete"
    assert stats["source"] == "cgroup" and stats["limit_bytes"] == limit
    assert stats["entered_total"]["refuse"] >= 1 and stats["refused_total"] >= 1
    assert "kokoro_memory_refusals_total" in metrics
    assert 'kokoro_memory_pressure_entered_total{level="refuse"}' in metrics


async def speak_until_done(client: Client, stream: str, text: str) -> None:
    await speak(client, stream, text)
    await client.until_done(stream)


async def test_the_poll_loop_releases_idle_arenas_while_under_pressure(
    memory: FakeMemory,
) -> None:
    released = asyncio.Event()
    monitor = MemoryMonitor(read=memory.read, clock=memory.clock)

    async def release_idle() -> None:
        released.set()

    monitor.actions.release_idle = release_idle
    memory.used = 750
    async with asyncio.TaskGroup() as group:
        polling = group.create_task(monitor.run(poll_s=0))
        await released.wait()
        polling.cancel()
    assert monitor.level is PressureLevel.SHRINK


@pytest.mark.model
async def test_a_configured_limit_below_use_refuses_streams_and_http_requests(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    """``KOKORO_MEMORY_LIMIT_MB`` far below what the process holds: nothing new is taken on."""
    with live_server(replace(settings, memory_limit_mb=1), synthesizer) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            speech = await http.post("/v1/audio/speech", json={"input": "Hello."})
            stats = (await http.get("/v1/stats")).json()["memory"]
        client = await Client.connect(base)
        await speak(client, "a", "Hello.")
        refused = await client.next_error()
        await client.close()
    assert speech.status_code == 503 and speech.json()["error"]["code"] == "busy"
    assert "memory is low" in speech.json()["error"]["message"]
    assert speech.headers["Retry-After"] == "3"
    assert refused["code"] == "busy" and "memory is low" in refused["message"]
    assert stats["source"] == "configured" and stats["level"] == "refuse"

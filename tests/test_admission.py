"""Admission control (``app.admission``) with stand-in measurements: no model, no timing."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace

import httpx
import pytest

from actors.messages import StreamKey
from app.admission import (
    MAX_RETRY_MS,
    MIN_RETRY_MS,
    PAUSED_RETRY_MS,
    Admission,
    AdmissionPolicy,
)
from app.errors import BusyError
from app.providers import CPU
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from app.tts.variants import variant_of
from tests.live import Client, live_server, speak


def key(name: str) -> StreamKey:
    return StreamKey("session", name)


class Measured:
    """What the scheduler would report."""

    def __init__(
        self, throughput: float = 2.3, workers: int = 1, segment_seconds: float | None = None
    ) -> None:
        self.throughput = throughput
        self.workers = workers
        self.frees_in: dict[StreamKey, float] = {}
        """Seconds until each holder's slot frees (the pipeline's estimate)."""
        self.segment_seconds = segment_seconds

    def admission(self, policy: AdmissionPolicy) -> Admission:
        segment = self.segment_seconds
        return Admission(
            policy,
            throughput=lambda: self.throughput,
            workers=lambda: self.workers,
            frees_in=lambda k: self.frees_in.get(k, 0.0),
            segment_seconds=None if segment is None else (lambda: segment),
        )


@pytest.mark.parametrize(
    ("throughput", "utilization", "capacity"),
    [(2.3, 0.9, 2), (2.3, 0.4, 1), (2.3, 1.0, 2), (10.0, 0.9, 9), (10.0, 0.5, 5), (0.3, 0.9, 1)],
)
def test_capacity_is_the_usable_share_of_measured_throughput(
    throughput: float, utilization: float, capacity: int
) -> None:
    admission = Measured(throughput).admission(AdmissionPolicy(utilization=utilization))
    assert admission.capacity() == capacity


@pytest.mark.parametrize(
    ("segment_s", "workers", "capacity"),
    [(3.0, 1, 1), (3.0, 2, 2), (0.9, 1, 2), (0.45, 1, 3), (0.1, 1, 6), (0.0, 1, 6)],
)
def test_a_session_takes_more_streams_only_when_its_longest_segment_is_short(
    segment_s: float, workers: int, capacity: int
) -> None:
    measured = Measured(throughput=10.0, workers=workers, segment_seconds=segment_s)
    admission = measured.admission(AdmissionPolicy(utilization=0.6, segment_wait_s=1.0))
    assert admission.capacity() == capacity  # throughput alone would admit 6


def test_without_a_wait_allowance_each_session_takes_one_stream() -> None:
    def capacity(segment_wait_s: float) -> int:
        measured = Measured(throughput=10.0, workers=2, segment_seconds=0.2)
        return measured.admission(AdmissionPolicy(segment_wait_s=segment_wait_s)).capacity()

    assert (capacity(0.0), capacity(0.2), capacity(1.0)) == (2, 4, 6)


def test_a_fixed_limit_overrides_the_measurement() -> None:
    admission = Measured(throughput=10.0).admission(AdmissionPolicy(max_streams=3))
    assert admission.capacity() == 3


def test_capacity_follows_the_measurement_as_it_changes() -> None:
    measured = Measured(throughput=1.5)
    admission = measured.admission(AdmissionPolicy(utilization=0.9))
    assert admission.capacity() == 1
    measured.throughput = 4.5
    assert admission.capacity() == 4


@pytest.mark.parametrize(
    "policy",
    [
        {"max_streams": -1},
        {"utilization": 0.0},
        {"utilization": 3.0},
        {"wait_s": -1.0},
        {"segment_wait_s": -1.0},
    ],
)
def test_bad_policies_are_rejected(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdmissionPolicy(**policy)  # type: ignore[arg-type]


async def test_streams_beyond_capacity_are_refused_busy_until_a_slot_frees() -> None:
    admission = Measured(throughput=2.3).admission(AdmissionPolicy(utilization=0.9))
    await admission.admit(key("a"))
    await admission.admit(key("b"))
    with pytest.raises(BusyError) as refused:
        await admission.admit(key("c"))
    assert refused.value.code == "busy"
    assert refused.value.stream == "c"
    assert MIN_RETRY_MS <= refused.value.retry_after_ms <= MAX_RETRY_MS
    assert (admission.generating, admission.refused) == (2, 1)
    admission.release(key("a"))
    admission.release(key("a"))  # idempotent: a stream is released when made and when dropped
    await admission.admit(key("c"))
    assert admission.generating == 2
    with pytest.raises(BusyError):
        await admission.admit(key("d"))


def test_retry_after_is_when_the_first_slot_frees() -> None:
    measured = Measured(throughput=2.3, workers=1)
    admission = measured.admission(AdmissionPolicy(max_streams=2))
    measured.frees_in = {key("a"): 6.0, key("b"): 3.0}
    admission._take(key("a"))
    admission._take(key("b"))
    assert admission.retry_after_ms() == 3000, "b frees its slot first"
    measured.frees_in = {key("a"): 100.0, key("b"): 100.0}
    assert admission.retry_after_ms() == MAX_RETRY_MS
    measured.frees_in = {}
    assert admission.retry_after_ms() == MIN_RETRY_MS


async def test_retry_after_counts_the_slots_that_must_free_first() -> None:
    measured = Measured(throughput=2.3, workers=1)
    admission = measured.admission(AdmissionPolicy(max_streams=2, wait_s=30.0))
    measured.frees_in = {key("a"): 6.0, key("b"): 3.0}
    await admission.admit(key("a"))
    await admission.admit(key("b"))
    waiting = asyncio.create_task(admission.admit(key("c")))
    await asyncio.sleep(0)  # c now waits for b's slot
    assert admission.retry_after_ms() == 6000, "the next client after c gets a's slot"
    admission.release(key("b"))
    await waiting
    admission.policy = dataclasses.replace(admission.policy, max_streams=1)  # capacity shrank
    measured.frees_in = {key("a"): 6.0, key("c"): 2.0}
    assert admission.retry_after_ms() == 6000, "both holders must free for one slot"


async def test_with_a_wait_a_stream_beyond_capacity_gets_the_next_free_slot() -> None:
    admission = Measured().admission(AdmissionPolicy(max_streams=1, wait_s=30.0))
    await admission.admit(key("a"))
    second = asyncio.create_task(admission.admit(key("b")))
    third = asyncio.create_task(admission.admit(key("c")))
    await asyncio.sleep(0)  # both are now waiting, b first
    assert not second.done() and not third.done()
    admission.release(key("a"))
    await second
    assert not third.done(), "first come, first served"
    admission.release(key("b"))
    await third
    assert (admission.generating, admission.refused, admission.waited) == (1, 0, 2)


async def test_a_wait_that_runs_out_is_answered_busy() -> None:
    admission = Measured().admission(AdmissionPolicy(max_streams=1, wait_s=0.01))
    await admission.admit(key("a"))
    with pytest.raises(BusyError):
        await admission.admit(key("b"))
    assert (admission.generating, admission.refused) == (1, 1)
    admission.release(key("a"))
    await admission.admit(key("c"))  # the expired waiter holds no slot


async def test_a_waiter_that_goes_away_takes_no_slot() -> None:
    admission = Measured().admission(AdmissionPolicy(max_streams=1, wait_s=30.0))
    await admission.admit(key("a"))
    waiting = asyncio.create_task(admission.admit(key("b")))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    admission.release(key("a"))
    assert admission.generating == 0
    await admission.admit(key("c"))


async def test_grown_capacity_lets_waiters_in() -> None:
    measured = Measured(throughput=1.2)
    admission = measured.admission(AdmissionPolicy(utilization=0.9, wait_s=30.0))
    await admission.admit(key("a"))
    waiting = asyncio.create_task(admission.admit(key("b")))
    await asyncio.sleep(0)
    measured.throughput = 2.5
    admission.refresh()
    await waiting
    assert admission.generating == 2


# --- through the gateway, on the real model ---------------------------------------------------

PARAGRAPH = (
    "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the great "
    "lens, trimmed the wick, and watched the ships pass far out at sea."
)
SHORT = "Good morning, how are you today?"


@pytest.mark.model
async def test_a_stream_beyond_capacity_is_answered_busy_and_hurts_nobody(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    with live_server(replace(settings, max_active_streams=1), synthesizer) as base:
        client = await Client.connect(base, report_played=True)
        assert client.ready["limits"]["max_active_streams"] == 1
        await speak(client, "a", PARAGRAPH)
        await speak(client, "b", SHORT)
        busy = await client.next_error()
        assert busy["code"] == "busy" and busy["stream"] == "b" and not busy["fatal"]
        assert MIN_RETRY_MS <= busy["retry_after_ms"] <= MAX_RETRY_MS
        await client.until_done("a")
        await speak(client, "b", SHORT)  # a has been synthesized: its slot is free
        await client.until_done("b")
        async with httpx.AsyncClient(base_url=base) as http:
            admission = (await http.get("/v1/stats")).json()["admission"]
        await client.close()
    for name in ("a", "b"):
        log = client.streams[name]
        log.assert_contiguous()
        assert log.done is not None and log.done["reason"] == "complete"
    assert admission["capacity_streams"] == 1
    assert admission["refused_total"] == 1 and admission["admitted_total"] == 2


@pytest.mark.model
async def test_whole_text_requests_and_streams_share_the_capacity(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    with live_server(replace(settings, max_active_streams=1), synthesizer) as base:
        client = await Client.connect(base)
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            await speak(client, "a", PARAGRAPH)
            await client.receive_one()  # a is admitted and under way
            refused = await http.post("/v1/audio/speech", json={"input": SHORT})
            await client.until_done("a")
            request = asyncio.create_task(http.post("/v1/audio/speech", json={"input": PARAGRAPH}))
            while (await http.get("/v1/stats")).json()["admission"]["generating_requests"] < 1:
                assert not request.done(), "the request was synthesized without a slot"
            await speak(client, "b", SHORT)
            busy = await client.next_error()
            answered = await request
            admission = (await http.get("/v1/stats")).json()["admission"]
        await client.close()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "busy"
    retry_ms = refused.json()["error"]["retry_after_ms"]
    assert MIN_RETRY_MS <= retry_ms <= MAX_RETRY_MS
    assert int(refused.headers["retry-after"]) == max(1, -(-retry_ms // 1000))
    assert busy["code"] == "busy" and busy["stream"] == "b"
    assert answered.status_code == 200 and float(answered.headers["x-audio-seconds"]) > 5
    log = client.streams["a"]
    log.assert_contiguous()
    assert log.done is not None and log.done["reason"] == "complete"
    assert (admission["admitted_total"], admission["refused_total"]) == (2, 2)
    assert admission["generating_requests"] == 0 and admission["generating_streams"] == 0


@pytest.mark.model
async def test_with_a_wait_the_stream_beyond_capacity_starts_when_a_slot_frees(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    limited = replace(settings, max_active_streams=1, admission_wait_ms=60_000)
    with live_server(limited, synthesizer) as base:
        first = await Client.connect(base, report_played=True)
        second = await Client.connect(base, report_played=True)
        await speak(first, "a", PARAGRAPH)
        await first.receive_one()  # a is admitted and under way
        await speak(second, "b", SHORT)
        await asyncio.gather(first.until_done("a"), second.until_done("b"))
        async with httpx.AsyncClient(base_url=base) as http:
            admission = (await http.get("/v1/stats")).json()["admission"]
        await first.close()
        await second.close()
    assert not first.errors and not second.errors
    a, b = first.streams["a"], second.streams["b"]
    b_first_audio = b.first_audio_at()
    last_segment = max(i for i, m in enumerate(a.messages) if m["type"] == "segment")
    # b is admitted when a's synthesis completes, so its first audio (a segment's synthesis
    # later) comes after a's last segment, whose frames go out as soon as it is made.
    assert b_first_audio is not None and b_first_audio > a.arrivals[last_segment]
    assert admission["waited_total"] == 1 and admission["refused_total"] == 0


@pytest.mark.model
async def test_the_settings_reach_the_scheduler_and_admission(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    configured = replace(
        settings,
        max_active_streams=0,
        admission_utilization=0.5,
        admission_wait_ms=1500,
        work_ahead_ms=12_000,
    )
    with live_server(configured, synthesizer) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            stats = (await http.get("/v1/stats")).json()
            ready = (await http.get("/ready")).json()
    admission = stats["admission"]
    assert stats["scheduler"]["work_ahead_ms"] == 12_000
    assert (admission["utilization"], admission["wait_ms"], admission["max_streams"]) == (
        0.5,
        1500,
        None,
    )
    measured = admission["throughput_audio_per_s"]
    sessions = len(stats["inference"])
    by_throughput = max(1, int(measured * 0.5 + 1e-9))
    by_sessions = admission["per_session_limit"] * sessions
    assert admission["capacity_streams"] == min(by_throughput, by_sessions)
    assert ready["capacity"]["max_active_streams"] == admission["capacity_streams"]
    served = {"provider": CPU, "variant": variant_of(settings.model_path, settings.variant)}
    assert stats["models"] == [{**served, "file": synthesizer.engine.config.model_path.name}]


async def test_while_paused_no_stream_is_admitted_and_waiters_get_in_after() -> None:
    admission = Measured(throughput=10.0).admission(AdmissionPolicy(wait_s=30.0))
    with admission.paused("the plan changes"):
        waiting = asyncio.create_task(admission.admit(key("a")))
        await asyncio.sleep(0)
        assert not waiting.done() and admission.stats()["paused"] == "the plan changes"
    await waiting
    refusing = Measured(throughput=10.0).admission(AdmissionPolicy())
    with refusing.paused("the plan changes"), pytest.raises(BusyError) as refused:
        await refusing.admit(key("b"))
    assert "the plan changes" in refused.value.message
    assert refused.value.retry_after_ms == PAUSED_RETRY_MS
    await refusing.admit(key("b"))

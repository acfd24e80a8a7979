"""``GET /metrics``: the Prometheus metrics, recorded from events and read live."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.messages import SegmentGenerated, StreamFinished, StreamKey, StreamStarted
from actors.metrics import MetricsActor
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_server
from tests.test_metrics import observed

A = StreamKey("session", "a")
B = StreamKey("session", "b")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_events_fill_the_histograms_and_counters() -> None:
    actor = MetricsActor()
    await observed(
        [
            StreamStarted(A, 0.0),
            StreamStarted(B, 0.0),
            SegmentGenerated(A, 0, 0.25, 0.01, 1.5, "CPUExecutionProvider"),
            SegmentGenerated(A, 1, 0.5, 0.02, 2.5, "CPUExecutionProvider"),
            StreamFinished(A, "complete", 96_000, 0.3, 0.75, 4.0),
            StreamFinished(B, "cancelled", 0, None, 0.0, 0.0),
        ],
        actor,
    )
    actor.frame_sent(1920)
    actor.frame_sent(960)
    actor.client_reported(2, 0.4)
    actor.client_reported(0, 1.2)
    got = samples(actor.prometheus.exposition().decode())
    cpu = (("provider", "CPUExecutionProvider"),)
    assert got[("kokoro_streams_started_total", ())] == 2
    assert got[("kokoro_streams_finished_total", (("reason", "complete"),))] == 1
    assert got[("kokoro_streams_finished_total", (("reason", "cancelled"),))] == 1
    assert got[("kokoro_ttfa_seconds_count", ())] == 1, "a stream without audio has no TTFA"
    assert got[("kokoro_ttfa_seconds_sum", ())] == pytest.approx(0.3)
    assert got[("kokoro_stream_rtf_sum", ())] == pytest.approx(0.75 / 4.0)
    assert got[("kokoro_segment_generation_seconds_count", cpu)] == 2
    assert got[("kokoro_segment_generation_seconds_sum", cpu)] == pytest.approx(0.75)
    assert got[("kokoro_audio_generated_seconds_total", cpu)] == pytest.approx(4.0)
    assert got[("kokoro_segment_queue_wait_seconds_count", ())] == 2
    assert got[("kokoro_frames_sent_total", ())] == 2
    assert got[("kokoro_audio_sent_bytes_total", ())] == 2880
    assert got[("kokoro_client_underruns_total", ())] == 2
    assert got[("kokoro_client_lead_seconds_count", ())] == 2
    assert got[("process_resident_memory_bytes", ())] > 0


@pytest.mark.model
async def test_metrics_after_a_few_streams(settings: Settings, synthesizer: Synthesizer) -> None:
    with live_server(settings, synthesizer) as base:
        client = await Client.connect(base, report_played=True)
        for name in ("one", "two", "three"):
            await client.start(name)
            await client.send(type="text", stream=name, text="Good morning, how are you?")
            await client.send(type="end", stream=name)
        await client.until_done("one", "two", "three")
        await client.close()
        async with httpx.AsyncClient(base_url=base) as http:
            response = await http.get("/metrics")
            stats = (await http.get("/v1/stats")).json()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)
    frames = sum(len(log.audio) for log in client.streams.values())
    assert got[("kokoro_ttfa_seconds_count", ())] == 3
    assert got[("kokoro_streams_finished_total", (("reason", "complete"),))] == 3
    assert got[("kokoro_frames_sent_total", ())] == frames
    sent_bytes = sum(len(m["data"]) for log in client.streams.values() for m in log.audio)
    assert got[("kokoro_audio_sent_bytes_total", ())] == sent_bytes
    # One report per frame, less those that arrived after their stream had ended.
    assert 0 < got[("kokoro_client_lead_seconds_count", ())] <= frames
    admission = stats["admission"]
    assert got[("kokoro_capacity_streams", ())] == admission["capacity_streams"]
    assert got[("kokoro_admissions_refused_total", ())] == admission["refused_total"]
    assert got[("kokoro_active_streams", ())] == 0
    sessions = [key for key in got if key[0] == "kokoro_inference_session_healthy"]
    assert sessions and all(got[key] == 1 for key in sessions)
    assert got[("process_resident_memory_bytes", ())] > 0

"""Hot swap of the provider plan (``app.plan_swap``) on a live server with the real model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace

import httpx
import numpy as np
import pytest

from actors.audio import encode_samples, shape_segment
from actors.segmentation import Segmenter
from app.cli import main
from app.providers import ProviderPlan
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import Client, StreamLog, live_server

pytestmark = pytest.mark.model

TOKEN = "test-admin-token"
PARAGRAPHS = {
    "lighthouse": (
        "The old lighthouse keeper climbed the stairs every evening at dusk. He cleaned the "
        "great lens, trimmed the wick, and watched the ships pass far out at sea."
    ),
    "harbour": (
        "On a clear morning in early spring, the old harbour town woke slowly. Fishermen "
        "checked their nets while the bakery on the corner filled the street with bread."
    ),
}
VOICE = "jm_kumo"


@pytest.fixture(scope="module")
def own_synthesizer(settings: Settings) -> Iterator[Synthesizer]:
    """This module swaps sessions: it must not close the ones other modules share."""
    synthesizer = Synthesizer.load(settings, ProviderPlan.parse("cpu:1x2"))
    yield synthesizer
    synthesizer.close()


def offline_pcm(synthesizer: Synthesizer, text: str) -> bytes:
    segmenter = Segmenter()
    segments = segmenter.feed(text) + segmenter.end()
    pieces = [
        shape_segment(synthesizer.render(s.text, VOICE, 1.0).audio, s.boundary, final=s.final)
        for s in segments
    ]
    return encode_samples(np.concatenate(pieces), "pcm_s16le")


async def test_the_admin_api_is_off_without_a_token_and_checks_it(
    settings: Settings, own_synthesizer: Synthesizer
) -> None:
    with live_server(settings, own_synthesizer) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            off = await http.post("/v1/admin/plan", json={"plan": "cpu:2x1"})
    assert off.status_code == 403 and off.json()["error"]["code"] == "admin_disabled"
    with live_server(replace(settings, admin_token=TOKEN), own_synthesizer) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            anonymous = await http.post("/v1/admin/plan", json={"plan": "cpu:2x1"})
            wrong = await http.post(
                "/v1/admin/plan", json={"plan": "cpu:2x1"}, headers={"Authorization": "Bearer x"}
            )
            auth = {"Authorization": f"Bearer {TOKEN}"}
            bad_plan = await http.post("/v1/admin/plan", json={"plan": "cpu:two"}, headers=auth)
            bad_body = await http.post("/v1/admin/plan", content=b"[", headers=auth)
            ready = (await http.get("/ready")).json()
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert bad_plan.status_code == 400 and bad_plan.json()["error"]["code"] == "bad_plan"
    assert bad_body.status_code == 400 and bad_body.json()["error"]["code"] == "bad_request"
    assert ready["status"] == "ready", "refused requests change nothing"


async def test_swapping_plans_mid_stream_loses_and_repeats_no_sample(
    settings: Settings, own_synthesizer: Synthesizer
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with live_server(replace(settings, admin_token=TOKEN), own_synthesizer) as base:
        clients = [await Client.connect(base) for _ in PARAGRAPHS]  # real-time clients
        for client, (name, text) in zip(clients, PARAGRAPHS.items(), strict=True):
            await client.start(name, voice=VOICE)
            await client.send(type="text", stream=name, text=text)
            await client.send(type="end", stream=name)
        for client, name in zip(clients, PARAGRAPHS, strict=True):
            while client.streams[name].first_audio_at() is None:
                await client.receive_one()
        receiving = [
            asyncio.create_task(client.until_done(name))
            for client, name in zip(clients, PARAGRAPHS, strict=True)
        ]
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            to_two = await http.post("/v1/admin/plan", json={"plan": "cpu:2x1"}, headers=auth)
            assert not all(task.done() for task in receiving), "the swap ran while streaming"
            back = await http.post("/v1/admin/plan", json={"plan": "cpu:1x2"}, headers=auth)
            await asyncio.gather(*receiving)
            ready = (await http.get("/ready")).json()
            workers = (await http.get("/v1/stats")).json()["inference"]
            speech = await http.post("/v1/audio/speech", json={"input": "Still here."})
        for client in clients:
            await client.close()
    assert to_two.status_code == 200, to_two.text
    assert to_two.json()["previous"] == "cpu:1x2" and to_two.json()["plan"] == "cpu:2x1"
    assert back.status_code == 200 and back.json()["previous"] == "cpu:2x1"
    assert ready["plan"] == "cpu:1x2" and ready["plan_source"] == "swap"
    assert list(workers) == ["inference:cpu-3"], "sessions 0 (1x2) and 1-2 (2x1) are gone"
    assert speech.status_code == 200, "whole-text requests use the new sessions"
    for client, (name, text) in zip(clients, PARAGRAPHS.items(), strict=True):
        log: StreamLog = client.streams[name]
        log.assert_contiguous()
        assert log.done is not None and log.done["reason"] == "complete"
        assert log.pcm() == offline_pcm(own_synthesizer, text), name


async def test_the_cli_switches_the_plan_and_reports_refusals(
    settings: Settings, own_synthesizer: Synthesizer, capsys: pytest.CaptureFixture[str]
) -> None:
    with live_server(replace(settings, admin_token=TOKEN), own_synthesizer) as base:
        wrong = await asyncio.to_thread(
            main, ["plan", "cpu:1x1", "--server", base, "--token", "nope"]
        )
        refused = capsys.readouterr().err
        status = await asyncio.to_thread(
            main, ["plan", "cpu:1x1", "--server", base, "--token", TOKEN]
        )
        report = json.loads(capsys.readouterr().out)
        async with httpx.AsyncClient(base_url=base) as http:
            ready = (await http.get("/ready")).json()
    assert wrong == 2 and "401 unauthorized" in refused
    assert status == 0 and report["plan"] == "cpu:1x1"
    assert ready["plan"] == "cpu:1x1"

"""A cancel storm: thousands of start/cancel pairs on one connection, half of them with text
already queued for synthesis. Every pair is answered, nothing is left behind, and a normal
stream afterwards is whole."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest

from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_service, speak

pytestmark = pytest.mark.model

PAIRS = 2000
SENTENCE = "A storm of starts and cancels must leave nothing behind."


async def test_thousands_of_start_cancel_pairs_leave_nothing_behind(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    stormy = dataclasses.replace(settings, max_messages_per_s=1_000_000)
    with live_service(stormy, synthesizer) as (base, service):
        client = await Client.connect(base, report_played=True)

        async def storm() -> None:
            for index in range(PAIRS):
                name = f"s{index}"
                await client.start(name)
                if index % 2:
                    await client.send(type="text", stream=name, text=SENTENCE, flush=True)
                await client.send(type="cancel", stream=name)
            await client.send(type="ping", t="last")

        async def answers() -> None:
            while (await client.receive_one()) != {"type": "pong", "t": "last"}:
                pass

        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            group.create_task(storm())
            group.create_task(answers())
        seconds = time.monotonic() - started
        reasons = [log.done["reason"] if log.done else None for log in client.streams.values()]
        assert client.errors == []
        assert reasons == ["cancelled"] * PAIRS, "every start answered by its done"
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(200):  # in-flight model calls finish on their own threads: poll
                stats = (await http.get("/v1/stats")).json()
                if stats["scheduler"]["queued_jobs"] == 0 and not stats["live_streams"]:
                    break
                await asyncio.sleep(0.05)
        assert stats["live_streams"] == {} and stats["scheduler"]["queued_jobs"] == 0
        assert stats["admission"]["generating_streams"] == 0
        assert service.client_streams.count("127.0.0.1") == 0

        await speak(client, "after", SENTENCE)
        await client.until_done("after")
        after = client.streams["after"]
        after.assert_contiguous()
        assert after.done is not None and after.done["reason"] == "complete"
        await client.close()
    print(f"{PAIRS} start/cancel pairs answered in {seconds:.1f} s")

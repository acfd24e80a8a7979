"""The HAProxy agent: the free share of streaming capacity, ``down`` while loading, ``drain``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from app.capacity_agent import agent_reply
from app.local_server import free_port
from app.service import Service
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_service

CAPACITY = 4


async def ask(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return (await reader.read()).decode("ascii")
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture(scope="module")
def served(settings: Settings, synthesizer: Synthesizer) -> Iterator[tuple[str, int, Service]]:
    port = free_port()
    agent = dataclasses.replace(settings, agent_port=port, max_active_streams=CAPACITY)
    with live_service(agent, synthesizer) as (base, service):
        yield base, port, service


@pytest.mark.model
async def test_the_weight_is_the_free_share_of_capacity(
    served: tuple[str, int, Service],
) -> None:
    base, port, _ = served
    assert await ask(port) == "up ready 100%\n"
    client = await Client.connect(base)  # reports no playback: the stream stays generating
    try:
        await client.start("held")
        await client.send(type="text", stream="held", text="A sentence long enough to hold. " * 8)
        await client.receive_one()  # a message for the stream: its start was taken
        assert await ask(port) == f"up ready {round(100 * (CAPACITY - 1) / CAPACITY)}%\n"
        await client.send(type="cancel", stream="held")
        await client.until_done("held")
    finally:
        await client.close()


def test_loading_is_down_and_draining_is_drain(settings: Settings) -> None:
    service = Service(settings)
    assert agent_reply(service) == "down\n"
    service.drain.started = True
    assert agent_reply(service) == "drain\n"


def test_the_agent_is_off_by_default_and_the_port_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().agent_port == 0
    monkeypatch.setenv("KOKORO_AGENT_PORT", "8001")
    assert Settings.from_env().agent_port == 8001
    monkeypatch.setenv("KOKORO_AGENT_PORT", "70000")
    with pytest.raises(ValueError, match="KOKORO_AGENT_PORT"):
        Settings.from_env()

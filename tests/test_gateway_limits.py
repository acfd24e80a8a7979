"""Connection limits, in process through Starlette's TestClient (the real pipeline and model)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from starlette.websockets import WebSocketDisconnect

from app import wire
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import in_process_client

pytestmark = pytest.mark.model


def pack(**message: Any) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def test_a_message_over_the_size_limit_is_refused(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    small = dataclasses.replace(settings, max_message_bytes=1024)
    with (
        in_process_client(small, synthesizer) as client,
        client.websocket_connect("/v1/stream") as ws,
    ):
        ready = wire.decode_server(ws.receive_bytes())
        assert ready["limits"]["max_message_bytes"] == 1024
        ws.send_bytes(pack(type="text", stream="a", text="x" * 2000))
        error = wire.decode_server(ws.receive_bytes())
        assert error["code"] == "too_big"
        ws.send_bytes(pack(type="ping", t=7))
        assert wire.decode_server(ws.receive_bytes()) == {"type": "pong", "t": 7}


def test_an_idle_connection_is_closed(settings: Settings, synthesizer: Synthesizer) -> None:
    quick = dataclasses.replace(settings, idle_timeout_s=0.2)
    with (
        in_process_client(quick, synthesizer) as client,
        client.websocket_connect("/v1/stream") as ws,
    ):
        wire.decode_server(ws.receive_bytes())
        error = wire.decode_server(ws.receive_bytes())  # nothing sent: the timeout fires
        assert error["code"] == "idle_timeout" and error["fatal"] is True
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
        assert closed.value.code == 1000


def test_stream_limit_and_subprotocol(settings: Settings, synthesizer: Synthesizer) -> None:
    two = dataclasses.replace(settings, max_streams_per_connection=2)
    with (
        in_process_client(two, synthesizer) as client,
        client.websocket_connect("/v1/stream", subprotocols=["tts.v1"]) as ws,
    ):
        assert ws.accepted_subprotocol == "tts.v1"
        assert wire.decode_server(ws.receive_bytes())["limits"]["max_streams"] == 2
        for name in ("a", "b", "c"):
            ws.send_bytes(pack(type="start", stream=name))
        error = wire.decode_server(ws.receive_bytes())
        assert (error["code"], error["stream"]) == ("too_many_streams", "c")


def test_messages_beyond_the_rate_are_refused_and_dropped(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    slow = dataclasses.replace(settings, max_messages_per_s=5)
    with (
        in_process_client(slow, synthesizer) as client,
        client.websocket_connect("/v1/stream") as ws,
    ):
        wire.decode_server(ws.receive_bytes())
        for t in range(30):
            ws.send_bytes(pack(type="ping", t=t))
        answers = [wire.decode_server(ws.receive_bytes()) for _ in range(30)]
    pongs = [answer["t"] for answer in answers if answer["type"] == "pong"]
    refusals = [answer for answer in answers if answer["type"] == "error"]
    assert pongs[:5] == [0, 1, 2, 3, 4], "a burst of up to the rate passes"
    assert len(pongs) < 30 and len(pongs) + len(refusals) == 30
    assert {error["code"] for error in refusals} == {"rate_limited"}


def test_streams_are_limited_per_client_address_over_its_connections(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    two = dataclasses.replace(settings, max_streams_per_client=2)
    with (
        in_process_client(two, synthesizer) as client,
        client.websocket_connect("/v1/stream") as first,
        client.websocket_connect("/v1/stream") as second,
    ):
        for ws in (first, second):
            wire.decode_server(ws.receive_bytes())
        first.send_bytes(pack(type="start", stream="a"))
        second.send_bytes(pack(type="start", stream="b"))
        second.send_bytes(pack(type="start", stream="c"))
        error = wire.decode_server(second.receive_bytes())
        assert (error["code"], error["stream"]) == ("too_many_streams", "c")
        assert "client address" in error["message"]
        first.send_bytes(pack(type="cancel", stream="a"))
        assert wire.decode_server(first.receive_bytes())["type"] == "done"
        second.send_bytes(pack(type="start", stream="c"))
        second.send_bytes(pack(type="ping", t=1))
        assert wire.decode_server(second.receive_bytes()) == {"type": "pong", "t": 1}, (
            "the freed slot admits c"
        )

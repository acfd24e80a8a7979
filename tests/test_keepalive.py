"""The WebSocket transport of the real uvicorn server: pings drop a peer that stops answering
long before the idle timeout would notice it, and permessage-deflate is never negotiated."""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect

from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server

pytestmark = pytest.mark.model

PING, CLOSE, BINARY = 0x9, 0x8, 0x2


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame a server sent."""
    frames = []
    while len(data) >= 2:
        opcode, length, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, at = int.from_bytes(data[2:4]), 4
        elif length == 127:
            length, at = int.from_bytes(data[2:10]), 10
        frames.append((opcode, data[at : at + length]))
        data = data[at + length :]
    return frames


def test_a_peer_that_stops_answering_pings_is_dropped(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    pinging = dataclasses.replace(
        settings, ping_interval_s=0.3, ping_timeout_s=0.3, idle_timeout_s=600
    )
    with live_server(pinging, synthesizer) as base:
        address = urlsplit(base)
        assert address.hostname is not None and address.port is not None
        with socket.create_connection((address.hostname, address.port), timeout=60) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (
                    "GET /v1/stream HTTP/1.1\r\n"
                    f"Host: {address.netloc}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            received = b""
            while chunk := sock.recv(65536):  # never answers a ping; ends when the server closes
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    opcodes = [opcode for opcode, _ in server_frames(body)]
    assert opcodes[0] == BINARY, "ready"
    assert PING in opcodes, "the server pinged"
    assert opcodes[-1] == CLOSE
    close_payload = server_frames(body)[-1][1]
    assert int.from_bytes(close_payload[:2]) == 1011, close_payload  # keepalive ping timeout


async def test_compression_is_refused_even_when_offered(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    with live_server(settings, synthesizer) as base:
        url = base.replace("http", "ws") + "/v1/stream"
        async with connect(url, compression="deflate") as ws:  # the client offers it
            offered = ws.request.headers.get("Sec-WebSocket-Extensions") if ws.request else None
            answered = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
    assert offered is not None and "permessage-deflate" in offered
    assert answered is None, "audio does not compress, and compression leaks text"

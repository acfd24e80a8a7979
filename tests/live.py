"""A real server on loopback for integration tests, and a small protocol-v1 test client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import numpy.typing as npt
from starlette.testclient import TestClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.sync.client import connect as sync_connect

from app import wire
from app.bench import EngineBenchmark
from app.local_server import (
    LOOPBACK,
    free_port,
    settings_args,
    start_server,
    stop_server,
    wait_ready,
)
from app.server import create_app
from app.service import Phase, Service
from app.settings import Settings
from app.tracing import Tracing
from app.tts.synthesizer import Synthesizer
from app.uvicorn_server import GracefulServer, uvicorn_config


@contextmanager
def server_process(
    settings: Settings,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    host: str = LOOPBACK,
) -> Iterator[str]:
    """``python -m app serve`` as a child process with the model, voices and cache of
    ``settings``, the tests' one-session plan and ``env`` over this environment; yields its
    ``http://127.0.0.1:PORT`` (``host`` ``::`` listens on both loopbacks). Its log goes to
    ``log_path``."""
    port = free_port()
    args = [*settings_args(settings), "--plan", "cpu:1x2"]
    process = start_server(port, log_path, args, host=host, env=env)
    base = f"http://{LOOPBACK}:{port}"
    try:
        wait_ready(base, process, log_path)
        yield base
    finally:
        stop_server(process)


@contextmanager
def live_server(
    settings: Settings,
    synthesizer: Synthesizer,
    tracing: Tracing | None = None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """Run uvicorn with the given synthesizer in a thread; yields ``http://HOST:PORT``."""
    with live_service(settings, synthesizer, tracing, host=host) as (base, _):
        yield base


@contextmanager
def live_service(
    settings: Settings,
    synthesizer: Synthesizer,
    tracing: Tracing | None = None,
    benchmark: EngineBenchmark | None = None,
    host: str = "127.0.0.1",
) -> Iterator[tuple[str, Service]]:
    """``live_server`` that also yields the server's ``Service``, to inspect (it runs on the
    server thread's event loop: read it, do not await it). It listens on ``host`` only; ``::``
    listens on both loopbacks (and every other address), the yielded URL is 127.0.0.1's."""
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on sockets it
    # can tell are TCP, and with it on a second small frame waits ~40 ms for the first's ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    app = create_app(settings, synthesizer, tracing=tracing, benchmark=benchmark)
    server = GracefulServer(uvicorn_config(app, settings, log_level="warning"), app.state.service)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://{LOOPBACK if family == socket.AF_INET6 else host}:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:  # another thread's event loop: readiness can only be polled
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        yield base, app.state.service
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class StreamLog:
    """Everything one stream received, with client-side arrival times."""

    name: str
    started_at: float = 0.0
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)

    @property
    def audio(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "audio"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def done(self) -> dict[str, Any] | None:
        found = self.of_type("done")
        return found[0] if found else None

    def first_audio_at(self) -> float | None:
        for message, at in zip(self.messages, self.arrivals, strict=True):
            if message["type"] == "audio":
                return at
        return None

    def pcm(self) -> bytes:
        return b"".join(m["data"] for m in self.audio)

    def samples(self) -> npt.NDArray[np.float32]:
        return np.frombuffer(self.pcm(), dtype="<i2").astype(np.float32) / 32767.0

    def assert_contiguous(self) -> None:
        frames = self.audio
        assert [m["seq"] for m in frames] == list(range(len(frames)))
        position = 0
        for message in frames:
            assert message["pos"] == position
            position += len(message["data"]) // 2
        done = self.done
        assert done is not None and done["samples"] == position


class Client:
    """A protocol-v1 connection that files incoming messages by stream."""

    def __init__(self, ws: ClientConnection, ready: dict[str, Any], report_played: bool) -> None:
        self.ws = ws
        self.ready = ready
        self.report_played = report_played
        """Report every received frame as played at once, like a client that saves to a file
        rather than playing in real time: the server then sends as fast as it synthesizes."""
        self.streams: dict[str, StreamLog] = {}
        self.errors: list[dict[str, Any]] = []
        self.other: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, base: str, *, report_played: bool = False, **kwargs: Any) -> Client:
        ws = await connect(
            base.replace("http", "ws") + "/v1/stream",
            subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
            max_size=2**22,
            **kwargs,
        )
        ready = wire.decode_server(await ws.recv(decode=False))
        assert ready["type"] == "ready"
        return cls(ws, ready, report_played)

    async def send(self, **message: Any) -> None:
        await self.ws.send(msgpack.packb(message, use_bin_type=True))

    async def start(self, stream: str, **options: Any) -> StreamLog:
        log = self.streams[stream] = StreamLog(stream, started_at=time.monotonic())
        await self.send(type="start", stream=stream, **options)
        return log

    async def receive_one(self) -> dict[str, Any]:
        message = wire.decode_server(await self.ws.recv(decode=False))
        stream = message.get("stream")
        if message["type"] == "error":
            self.errors.append(message)
        if stream in self.streams and message["type"] != "error":
            self.streams[stream].messages.append(message)
            self.streams[stream].arrivals.append(time.monotonic())
            if self.report_played and message["type"] == "audio":
                played = message["pos"] + len(message["data"]) // 2
                await self.send(type="played", stream=stream, samples=played)
        elif message["type"] != "error":
            self.other.append(message)
        return message

    async def until_done(self, *streams: str) -> None:
        while any(self.streams[name].done is None for name in streams):
            await self.receive_one()

    async def next_error(self) -> dict[str, Any]:
        count = len(self.errors)
        while len(self.errors) == count:
            await self.receive_one()
        return self.errors[-1]

    async def close(self) -> None:
        await self.ws.close()


async def speak(client: Client, stream: str, text: str, **options: Any) -> None:
    """Start a stream, send all of its text and end it (the server's defaults otherwise)."""
    await client.start(stream, **options)
    await client.send(type="text", stream=stream, text=text)
    await client.send(type="end", stream=stream)


@contextmanager
def in_process_client(settings: Settings, synthesizer: Synthesizer) -> Iterator[TestClient]:
    """The app in this process behind Starlette's TestClient, once its service is ready."""
    with TestClient(create_app(settings, synthesizer)) as client:
        service: Service = client.app.state.service  # type: ignore[attr-defined]
        assert client.portal is not None
        assert client.portal.call(service.wait_settled) is Phase.READY
        yield client


BYSTANDER_SENTENCE = "The river flows on. "


@dataclass
class BystanderLog:
    """What the bystander stream heard."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None

    def assert_heard_whole(self) -> None:
        """It ended normally, without an error, with every frame in order and no gap."""
        assert self.errors == [] and self.done is not None, (self.errors, self.done)
        assert self.done["reason"] == "complete", self.done
        assert [frame["seq"] for frame in self.frames] == list(range(len(self.frames)))
        position = 0
        for frame in self.frames:
            assert frame["pos"] == position
            position += len(frame["data"]) // 2
        assert self.done["samples"] == position > 0


@contextmanager
def bystander(base: str, every_s: float = 2.0, **headers: str) -> Iterator[BystanderLog]:
    """A stream on its own connection, fed a sentence every ``every_s`` seconds (with a flush)
    and played as it comes, while the test does something else; ended on leaving."""
    outcome = BystanderLog()
    stop = threading.Event()

    def speak() -> None:
        url = base.replace("http", "ws") + "/v1/stream"
        with sync_connect(
            url,
            subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
            max_size=2**22,
            ping_interval=None,
            additional_headers=headers,
        ) as ws:
            ws.recv()

            def send(**message: Any) -> None:
                ws.send(msgpack.packb(message, use_bin_type=True))

            send(type="start", stream="calm")
            send(type="text", stream="calm", text=BYSTANDER_SENTENCE, flush=True)
            last_sent = time.monotonic()
            ended = False
            while True:
                now = time.monotonic()
                if stop.is_set() and not ended:
                    send(type="end", stream="calm")
                    ended = True
                elif not ended and now - last_sent >= every_s:
                    send(type="text", stream="calm", text=BYSTANDER_SENTENCE, flush=True)
                    last_sent = now
                due = every_s / 4 if ended else last_sent + every_s - time.monotonic()
                try:  # what has come, reported played, until the next sentence is due
                    message = wire.decode_server(ws.recv(timeout=max(0.01, due), decode=False))
                except TimeoutError:
                    continue
                if message["type"] == "audio":
                    outcome.frames.append(message)
                    played = message["pos"] + len(message["data"]) // 2
                    send(type="played", stream="calm", samples=played)
                elif message["type"] == "error":
                    outcome.errors.append(message)
                elif message["type"] == "done":
                    outcome.done = message
                    return

    thread = threading.Thread(target=speak, name="bystander")
    thread.start()
    try:
        yield outcome
    finally:
        stop.set()
        thread.join(timeout=120)
        assert not thread.is_alive(), "the bystander stream never finished"


@dataclass
class ReadyWatch:
    """``/ready``'s answer times, polled every ``every_s`` from another thread."""

    slowest_s: float = 0.0
    polls: int = 0
    failures: list[str] = field(default_factory=list)


@contextmanager
def watch_ready(base: str, every_s: float = 0.1) -> Iterator[ReadyWatch]:
    """Poll ``/ready`` while the block runs; a poll that fails or is not 200 is recorded."""
    watch = ReadyWatch()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=5.0) as http:
            while not stop.wait(every_s):
                started = time.monotonic()
                try:
                    status = http.get(f"{base}/ready").status_code
                except httpx.HTTPError as error:
                    watch.failures.append(repr(error))
                    continue
                watch.slowest_s = max(watch.slowest_s, time.monotonic() - started)
                watch.polls += 1
                if status != 200:
                    watch.failures.append(f"status {status}")

    thread = threading.Thread(target=poll, name="ready-watch")
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=30)

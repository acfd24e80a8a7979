"""Hostile clients against a real server process: no client may stall or monopolize it.

Each class of attack a probe of the server found is tried here in more than one form, as a
client would send it over the wire: work a message triggers on the event loop (resume points,
counts), resources a client holds (a silent stream, an ``end`` behind the rate limit, an HTTP
client that leaves mid-synthesis, a request head that never ends), what a request makes the
server parse (bodies, voice strings, spoken length), which Host and Origin it answers, and what
a client's reports can do to metrics and hints. Every case must get a clear answer within
``ANSWER_S``; throughout, ``/ready`` answers within ``READY_S`` (polled from another thread),
the server's event loop never lags ``LAG_S`` and a stream on another connection plays on,
whole (the last test checks both). Each case's answer and time go into a report printed at the
end (``pytest -s tests/test_hostile.py``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from app import wire
from app.settings import Settings
from tests.live import BystanderLog, ReadyWatch, bystander, server_process, watch_ready
from tests.test_prometheus import samples

pytestmark = pytest.mark.model

ANSWER_S = 1.0
READY_S = 0.5
LAG_S = 0.5
STREAM_IDLE_S = 3.0
REQUEST_TIMEOUT_S = 1.0
CAPACITY = 3
"""Streams synthesizing at once: the bystander and two of a case's."""
MAX_INT32 = 2**31 - 1
SERVER_ENV = {
    "KOKORO_STREAM_IDLE_S": str(STREAM_IDLE_S),
    "KOKORO_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
    "KOKORO_MAX_ACTIVE_STREAMS": str(CAPACITY),
}


class Report:
    """Every case tried, with the server's answer and how long it took."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float]] = []

    def add(self, case: str, answer: str, seconds: float, bound: float = ANSWER_S) -> None:
        self.rows.append((case, answer, seconds))
        assert seconds < bound, f"{case}: {answer} after {seconds:.2f} s"

    def table(self) -> str:
        lines = ["| case | answer | seconds |", "|---|---|---:|"]
        lines += [f"| {case} | {answer} | {seconds:.3f} |" for case, answer, seconds in self.rows]
        return "\n".join(lines)


class Hostile:
    """The server under attack, the bystander and the watch on ``/ready``."""

    def __init__(self, base: str, log: Path, calm: BystanderLog, ready: ReadyWatch) -> None:
        self.base = base
        self.port = int(base.rsplit(":", 1)[1])
        self.log = log
        self.calm = calm
        self.ready = ready
        self.report = Report()

    @contextlib.contextmanager
    def ws(self, host: str = "127.0.0.1", **headers: str) -> Iterator[ClientConnection]:
        """A protocol-v1 connection, ready read; ``host`` names the server in the URL (and so in
        the Host header) while the socket goes to loopback."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        with connect(
            f"ws://{host}:{self.port}/v1/stream",
            sock=sock,
            subprotocols=[wire.SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=headers,
            max_size=2**22,
            open_timeout=ANSWER_S,
        ) as ws:
            assert wire.decode_server(ws.recv(decode=False))["type"] == "ready"
            yield ws

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/v1/stats", timeout=10).json()
        return body

    def metric(self, name: str) -> float:
        """An unlabelled sample of the server's ``/metrics``."""
        return samples(httpx.get(f"{self.base}/metrics", timeout=10).text)[(name, ())]

    def raw(self, head: bytes, body: bytes = b"") -> socket.socket:
        """A raw HTTP connection that has sent ``head`` (and ``body``), for what no client
        library would send."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(head + body)
        return sock


def pack(**message: Any) -> bytes:
    return bytes(msgpack.packb(message, use_bin_type=True))


def exchange(
    ws: ClientConnection, message: bytes, token: str
) -> tuple[list[dict[str, Any]], float]:
    """Send ``message`` and a ping; everything before the pong, and how long it took."""
    sent_at = time.monotonic()
    ws.send(message)
    ws.send(pack(type="ping", t=token))
    answers: list[dict[str, Any]] = []
    while True:
        answer = wire.decode_server(ws.recv(timeout=30, decode=False))
        if answer == {"type": "pong", "t": token}:
            return answers, time.monotonic() - sent_at
        answers.append(answer)


def until_done(ws: ClientConnection, stream: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every message of ``stream`` up to its ``done``."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not messages or messages[-1]["type"] != "done":
        message = wire.decode_server(ws.recv(timeout=deadline - time.monotonic(), decode=False))
        if message.get("stream") == stream:
            messages.append(message)
    return messages


def http_answer(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, Any], float]:
    """Read one HTTP response from a raw socket: status, JSON body, seconds it took."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body), time.monotonic() - started


@pytest.fixture(scope="module")
def hostile(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """One server process, a bystander stream and a watch on ``/ready`` for the module."""
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with (
        server_process(settings, log, SERVER_ENV) as base,
        watch_ready(base) as ready,
        bystander(base, every_s=1.0) as calm,
    ):
        target = Hostile(base, log, calm, ready)
        yield target
    print("\n" + target.report.table())
    calm.assert_heard_whole()


# --- bounded work per message ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "resume"),
    [
        ("seg 2^31-1", {"seg": MAX_INT32, "seq": 0, "pos": 0, "chars": 0}),
        ("seg and chars 2^31-1", {"seg": MAX_INT32, "seq": 0, "pos": 0, "chars": MAX_INT32}),
        ("seg and chars 10^6", {"seg": 10**6, "seq": 0, "pos": 0, "chars": 10**6}),
        ("pos + skip past 2^31-1", {"seg": 0, "seq": 0, "pos": MAX_INT32, "chars": 0, "skip": 9}),
        ("seq beyond pos", {"seg": 0, "seq": 5000, "pos": 10, "chars": 0}),
    ],
)
def test_a_resume_point_no_stream_could_reach_is_refused_at_once(
    hostile: Hostile, case: str, resume: dict[str, int]
) -> None:
    with hostile.ws() as ws:
        answers, seconds = exchange(ws, pack(type="start", stream="x", resume=resume), case)
    (error,) = answers
    assert (error["code"], error["stream"]) == ("bad_message", "x")
    assert "resume" in error["message"]
    hostile.report.add(f"resume {case}", f"`bad_message`: {error['message']}", seconds)


def test_a_far_resume_point_within_the_limits_costs_no_more_than_a_near_one(
    hostile: Hostile,
) -> None:
    resume = {"seg": 10_000, "seq": 7, "pos": 240_000, "chars": 10_000}
    with hostile.ws() as ws:
        answers, seconds = exchange(ws, pack(type="start", stream="far", resume=resume), "far")
        assert answers == []
        ws.send(pack(type="text", stream="far", text="Hello there.", flush=False))
        ws.send(pack(type="end", stream="far"))
        messages = until_done(ws, "far")
    frames = [m for m in messages if m["type"] == "audio"]
    assert frames and {m["seg"] for m in frames} == {10_000}
    assert (frames[0]["seq"], frames[0]["pos"]) == (7, 240_000)
    assert messages[-1]["reason"] == "complete"
    hostile.report.add("resume at segment 10,000 (valid)", "stream opened, spoke", seconds)


def test_played_reports_cannot_poison_the_shared_metrics(hostile: Hostile) -> None:
    before = hostile.metric("kokoro_client_underruns_total")
    with hostile.ws() as ws:
        ws.send(pack(type="start", stream="p"))
        ws.send(pack(type="text", stream="p", text="Hello there, how are you today?"))
        ws.send(pack(type="end", stream="p"))
        messages: list[dict[str, Any]] = []
        while not any(m["type"] == "audio" for m in messages):
            messages.append(wire.decode_server(ws.recv(timeout=30, decode=False)))
        poison = pack(
            type="played", stream="p", samples=2**64 - 1, underruns=2**64 - 1, buffered_ms=1e308
        )
        answers, seconds = exchange(ws, poison, "poison")
        messages += answers
        messages += until_done(ws, "p")
    frames = sum(m["type"] == "audio" for m in messages)
    added = hostile.metric("kokoro_client_underruns_total") - before
    assert 0 <= added <= frames, f"{added} underruns counted for a stream of {frames} frames"
    hostile.report.add(
        "played underruns 2^64-1", f"counted {added:g} (frames sent {frames})", seconds
    )


# --- every held resource on a clock -----------------------------------------------------------


def test_a_silent_stream_is_ended_and_frees_its_slot(hostile: Hostile) -> None:
    with hostile.ws() as ws:
        started = time.monotonic()
        exchange(ws, pack(type="start", stream="silent"), "start")
        holding = hostile.stats()["admission"]["generating_streams"]
        messages = until_done(ws, "silent", timeout=STREAM_IDLE_S + 10)
        waited = time.monotonic() - started
        freed = hostile.stats()["admission"]["generating_streams"]
    assert messages[-1]["reason"] == "timeout"
    assert waited >= STREAM_IDLE_S
    assert freed < holding, "its slot is free again"
    hostile.report.add(
        "start, then silence",
        "`done` reason `timeout`, slot freed",
        waited,
        bound=STREAM_IDLE_S + ANSWER_S,
    )


def test_text_a_silent_stream_already_had_is_spoken_before_it_ends(hostile: Hostile) -> None:
    with hostile.ws() as ws:
        ws.send(pack(type="start", stream="trail"))
        sent_at = time.monotonic()
        ws.send(pack(type="text", stream="trail", text="Hello there, my friend"))  # no end
        messages = until_done(ws, "trail", timeout=STREAM_IDLE_S + 30)
        seconds = time.monotonic() - sent_at
        late, _ = exchange(ws, pack(type="text", stream="trail", text="more"), "late")
    spoken = " ".join(m["text"] for m in messages if m["type"] == "segment")
    assert spoken == "Hello there, my friend", "nothing already accepted is lost"
    frames = [m for m in messages if m["type"] == "audio"]
    assert messages[-1]["reason"] == "timeout"
    assert messages[-1]["samples"] == sum(len(m["data"]) // 2 for m in frames)
    assert late[0]["code"] == "unknown_stream"
    hostile.report.add(
        "text without end, then silence",
        "all of it spoken, then `timeout`",
        seconds,
        bound=STREAM_IDLE_S + 10,  # its audio plays out first, in real time
    )


def test_a_client_that_stops_playing_loses_its_stream_and_slot(hostile: Hostile) -> None:
    """Synthesis is paced by playback: a client that says it plays nothing would hold its slot
    for ever without the stall clock."""
    paragraph = "The old lighthouse keeper climbed the stairs every evening at dusk. " * 12
    with hostile.ws() as ws:
        ws.send(pack(type="start", stream="paused"))
        ws.send(pack(type="text", stream="paused", text=paragraph))
        ws.send(pack(type="end", stream="paused"))
        messages: list[dict[str, Any]] = []
        paused_at = None
        while not messages or messages[-1]["type"] != "done":
            message = wire.decode_server(ws.recv(timeout=STREAM_IDLE_S + 30, decode=False))
            if message.get("stream") != "paused":
                continue
            messages.append(message)
            if message["type"] == "audio":  # "played" nothing: the player is paused
                ws.send(pack(type="played", stream="paused", samples=0, buffered_ms=2000))
                paused_at = paused_at or time.monotonic()
        assert paused_at is not None
        seconds = time.monotonic() - paused_at
        generating = hostile.stats()["admission"]["generating_streams"]
    assert messages[-1]["reason"] == "timeout"
    assert seconds >= STREAM_IDLE_S
    assert generating <= 1, "only the bystander still synthesizes"
    hostile.report.add(
        "ended stream, client plays nothing",
        "`done` reason `timeout`, slot freed",
        seconds,
        bound=STREAM_IDLE_S + ANSWER_S,
    )


def test_a_busy_hint_says_when_a_held_slot_really_frees(hostile: Hostile) -> None:
    with hostile.ws() as ws:
        for name in ("h1", "h2"):  # with the bystander: the server is at capacity
            answers, _ = exchange(ws, pack(type="start", stream=name), name)
            assert answers == []
        answers, seconds = exchange(ws, pack(type="start", stream="h3"), "h3")
        for name in ("h1", "h2"):
            ws.send(pack(type="cancel", stream=name))
    (busy,) = answers
    assert busy["code"] == "busy"
    # Every holder is idle: none frees before its idle deadline, 2 to 3 s away (not 100 ms).
    assert 1000 <= busy["retry_after_ms"] <= (STREAM_IDLE_S + 1) * 1000, busy
    hostile.report.add(
        "start at capacity, holders idle",
        f"`busy`, retry_after_ms {busy['retry_after_ms']}",
        seconds,
    )


@pytest.mark.parametrize("closing", ["end", "cancel"])
def test_an_end_or_cancel_is_never_dropped_by_the_rate_limit(
    hostile: Hostile, closing: str
) -> None:
    with hostile.ws() as ws:
        ws.send(pack(type="start", stream="r"))
        ws.send(pack(type="text", stream="r", text="Hello."))
        for t in range(300):  # well over the 200 messages a second allowed
            ws.send(pack(type="ping", t=t))
        sent_at = time.monotonic()
        ws.send(pack(type=closing, stream="r"))  # a ping after it could be dropped: none
        messages = until_done(ws, "r")
        seconds = time.monotonic() - sent_at
    assert [m for m in messages if m["type"] == "error"] == []
    reason = "complete" if closing == "end" else "cancelled"
    assert messages[-1]["reason"] == reason
    # `end` is answered once its audio has played out (paced in real time); `cancel` at once.
    hostile.report.add(
        f"`{closing}` after 300 pings",
        f"`done` {reason}",
        seconds,
        bound=10.0 if closing == "end" else ANSWER_S,
    )


def _speech_head(body: bytes, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST /v1/audio/speech HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("case", "request_body"),
    [
        ("500 digits", {"input": "1234567890" * 50}),
        (
            "300 words with word timings",
            {"input": "Hello there friend. " * 100, "timestamps": "word"},
        ),
    ],
)
def test_http_synthesis_stops_when_its_client_leaves(
    hostile: Hostile, case: str, request_body: dict[str, Any]
) -> None:
    body = json.dumps(request_body).encode()
    sock = hostile.raw(_speech_head(body), body)
    deadline = time.monotonic() + 30
    while hostile.stats()["admission"]["generating_requests"] == 0:  # another process: polled
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.05)
    sock.close()
    left = time.monotonic()
    while hostile.stats()["admission"]["generating_requests"] > 0:
        assert time.monotonic() - left < 10, "the slot is still held"
        time.sleep(0.02)
    freed = time.monotonic() - left
    started = time.monotonic()
    short = httpx.post(f"{hostile.base}/v1/audio/speech", json={"input": "Hi."}, timeout=60)
    assert short.status_code == 200
    hostile.report.add(f"HTTP {case}, client leaves", "slot freed", freed)
    hostile.report.add(
        f"next request after HTTP {case}", "200", time.monotonic() - started, bound=5.0
    )


# --- limits on the work, not only the bytes ---------------------------------------------------


def test_the_input_limit_counts_the_text_as_spoken(hostile: Hostile) -> None:
    started = time.monotonic()
    response = httpx.post(f"{hostile.base}/v1/audio/speech", json={"input": "7" * 4000}, timeout=30)
    seconds = time.monotonic() - started
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "text_too_long")
    assert "once spoken" in error["message"] and "4000 as written" in error["message"]
    hostile.report.add("HTTP 4,000 digits", "400 `text_too_long` (spoken length)", seconds)


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("a 10 MB unused field", b'{"input": "Hello.", "x": "' + b"y" * 10_000_000 + b'"}'),
        (
            "1,000,000 blend parts",
            json.dumps({"input": "Hello.", "voice": "+".join(["jm_kumo"] * 10**6)}).encode(),
        ),
    ],
)
def test_a_body_over_the_limit_is_refused_before_it_is_read(
    hostile: Hostile, case: str, body: bytes
) -> None:
    sock = hostile.raw(_speech_head(body), body[:65536])
    status, answer, seconds = http_answer(sock)
    sock.close()
    assert (status, answer["error"]["code"]) == (413, "body_too_large")
    hostile.report.add(f"HTTP {case}", "413 `body_too_large`", seconds)


def test_a_chunked_body_is_cut_off_at_the_limit(hostile: Hostile) -> None:
    head = (
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16384
    sock = hostile.raw(head, b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)))
    status, answer, seconds = http_answer(sock)
    sock.close()
    assert (status, answer["error"]["code"]) == (413, "body_too_large")
    hostile.report.add("HTTP chunked body of 80 KB", "413 `body_too_large`", seconds)


def test_a_trickled_body_is_refused_after_the_request_timeout(hostile: Hostile) -> None:
    sock = hostile.raw(_speech_head(b"x" * 100), b'{"input": "Hel')
    status, answer, seconds = http_answer(sock)
    sock.close()
    assert (status, answer["error"]["code"]) == (408, "request_timeout")
    hostile.report.add(
        "HTTP body trickled", "408 `request_timeout`", seconds, bound=REQUEST_TIMEOUT_S + ANSWER_S
    )


@pytest.mark.parametrize(
    ("case", "voice", "code"),
    [
        ("a 60,000-character voice name", "v" * 60_000, "bad_voice"),
        ("a blend of 9 voices", "+".join(["jm_kumo"] * 9), "bad_voice"),
        ("an unknown 200-character name", "u" * 200, "unknown_voice"),
    ],
)
def test_voice_strings_are_bounded_and_never_echoed_whole(
    hostile: Hostile, case: str, voice: str, code: str
) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{hostile.base}/v1/audio/speech", json={"input": "Hello.", "voice": voice}, timeout=30
    )
    seconds = time.monotonic() - started
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, code)
    assert len(error["message"]) < 300
    hostile.report.add(
        f"HTTP {case}", f"400 `{code}`, {len(error['message'])}-char message", seconds
    )
    with hostile.ws() as ws:
        answers, seconds = exchange(ws, pack(type="start", stream="v", voice=voice), "voice")
    (refused,) = answers
    assert refused["code"] == code and len(refused["message"]) < 300
    hostile.report.add(f"WebSocket {case}", f"`{code}`", seconds)


def test_blend_weights_that_overflow_still_make_a_voice(hostile: Hostile) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{hostile.base}/v1/audio/speech",
        json={
            "input": "Hello there.",
            "voice": "jm_kumo:1e308+jf_alpha:1e308",
            "response_format": "pcm",
        },
        timeout=60,
    )
    seconds = time.monotonic() - started
    assert response.status_code == 200
    samples = np.frombuffer(response.content, dtype="<i2").astype(np.float32) / 32767
    assert float(np.sqrt(np.mean(samples**2))) > 0.01, "speech, not the silence of a zero voice"
    hostile.report.add("blend 1e308+1e308", "200, an even blend", seconds, bound=10.0)


# --- the Host and the Origin ------------------------------------------------------------------


def test_a_rebinding_page_is_refused_on_http_and_websocket(hostile: Hostile) -> None:
    evil = {"Host": f"evil.example:{hostile.port}", "Origin": f"http://evil.example:{hostile.port}"}
    started = time.monotonic()
    for path in ("/v1/voices", "/", "/ready"):
        response = httpx.get(f"{hostile.base}{path}", headers=evil, timeout=10)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "host_not_allowed")
    spoken = httpx.post(f"{hostile.base}/v1/audio/speech", json={"input": "Hi."}, headers=evil)
    assert spoken.status_code == 400
    hostile.report.add(
        "HTTP Host evil.example", "400 `host_not_allowed`", time.monotonic() - started
    )
    started = time.monotonic()
    with pytest.raises(InvalidStatus) as refused, hostile.ws("evil.example", Origin=evil["Origin"]):
        pass
    assert refused.value.response.status_code == 400
    hostile.report.add(
        "WebSocket Host evil.example", "400 before accept", time.monotonic() - started
    )


@pytest.mark.parametrize(
    ("case", "origin"),
    [("another scheme", "https://127.0.0.1:{port}"), ("another port", "http://127.0.0.1:1")],
)
def test_an_origin_must_match_scheme_host_and_port(
    hostile: Hostile, case: str, origin: str
) -> None:
    started = time.monotonic()
    with (
        pytest.raises(InvalidStatus) as refused,
        hostile.ws(Origin=origin.format(port=hostile.port)),
    ):
        pass
    assert refused.value.response.status_code == 403
    hostile.report.add(
        f"WebSocket Origin of {case}", "403 before accept", time.monotonic() - started
    )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_the_player_is_served_on_every_loopback_name(hostile: Hostile, host: str) -> None:
    """The Host and Origin a browser on the player's page sends for each loopback name (the
    browser test plays through the player on each, over their own loopbacks)."""
    named = {"Host": f"{host}:{hostile.port}"}
    page = httpx.get(f"{hostile.base}/", headers=named, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    with hostile.ws(host=host, Origin=f"http://{host}:{hostile.port}"):
        pass  # ready was read


# --- connections that never finish their request ----------------------------------------------


def test_connections_that_never_finish_a_request_head_are_closed(hostile: Hostile) -> None:
    head = b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    opened = time.monotonic()  # before the first connects: no deadline can start earlier
    partial = [hostile.raw(head) for _ in range(40)]
    silent = [hostile.raw(b"") for _ in range(10)]
    for sock in partial:
        sock.sendall(b"a")  # a byte of header now and then does not put the deadline off
    closed_after: list[float] = []
    for sock in partial + silent:
        sock.settimeout(REQUEST_TIMEOUT_S + 5)
        with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread
            assert sock.recv(1024) == b"", "the server answered instead of closing"
        closed_after.append(time.monotonic() - opened)
        sock.close()
    hostile.report.add(
        "40 partial heads + 10 silent sockets",
        "all closed",
        max(closed_after),
        bound=REQUEST_TIMEOUT_S + ANSWER_S,
    )
    assert min(closed_after) >= REQUEST_TIMEOUT_S * 0.9, "none is closed before its deadline"


# --- throughout ---------------------------------------------------------------------------------


def test_throughout_ready_answered_the_loop_kept_time_and_the_bystander_heard_everything(
    hostile: Hostile,
) -> None:
    """Runs last: what held while every case above ran."""
    lag = hostile.stats()["event_loop"]
    assert hostile.ready.failures == [] and hostile.ready.polls > 0
    assert hostile.ready.slowest_s < READY_S, f"/ready took {hostile.ready.slowest_s:.3f} s"
    assert lag["max_lag_ms"] < LAG_S * 1000, lag
    log = hostile.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    lines = log.splitlines()
    assert any("app.refused" in line and "Host 'evil.example" in line for line in lines)
    closes = [line for line in lines if "no request head" in line]
    assert 0 < len(closes) <= 12, "50 closes in a moment: a burst of lines, the rest counted"
    hostile.report.add(
        "/ready, slowest poll",
        f"{hostile.ready.polls} polls, all 200",
        hostile.ready.slowest_s,
        bound=READY_S,
    )
    hostile.report.add(
        "event loop, worst lag", f"{lag['samples']} probes", lag["max_lag_ms"] / 1000, bound=LAG_S
    )

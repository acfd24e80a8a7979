"""The Origin allow-list and the API key: the policy alone, then in front of the real app."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from starlette.datastructures import Headers
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from app import wire
from app.access import AccessPolicy, listening_name, parse_hosts, parse_origins
from app.service import Service
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import in_process_client

KEY = "k3y-for-tests-7f2a"
OWN_ORIGIN = "http://testserver"  # TestClient's Host is "testserver"
OTHER_ORIGIN = "http://evil.example"


def test_origins_without_one_same_origin_and_listed_ones_pass() -> None:
    policy = AccessPolicy(allowed_origins=parse_origins("https://app.example, http://lan:8080/"))
    assert policy.origin_allowed(None, "tts:8000"), "not a browser"
    assert policy.origin_allowed("http://tts:8000", "tts:8000"), "the server's own page"
    assert policy.origin_allowed("HTTPS://APP.example", "tts:8000")
    assert policy.origin_allowed("http://lan:8080", "tts:8000")
    assert not policy.origin_allowed("http://lan:8081", "tts:8000")
    assert not policy.origin_allowed("https://app.example.evil.example", "tts:8000")
    assert not policy.origin_allowed("null", "tts:8000"), "sandboxed frames and files"
    assert AccessPolicy(allowed_origins=parse_origins("*")).origin_allowed("null", "tts:8000")


def test_origins_match_by_scheme_host_and_port() -> None:
    policy = AccessPolicy(allowed_origins=parse_origins("https://app.example:443"))
    assert policy.origin_allowed("http://tts:8000", "tts:8000", "ws")
    assert policy.origin_allowed("https://tts", "tts", "wss"), "TLS at the server or a proxy"
    assert not policy.origin_allowed("https://tts:8000", "tts:8000", "http"), "another scheme"
    assert not policy.origin_allowed("http://tts:8001", "tts:8000", "http"), "another port"
    assert not policy.origin_allowed("http://evil.example", "evil.example:8000", "http")
    assert policy.origin_allowed("http://[::1]:8000", "[::1]:8000", "http")
    assert policy.origin_allowed("http://localhost", "localhost:80", "http"), "default port"
    assert policy.origin_allowed("https://APP.example", "tts:8000", "http"), "listed"
    assert not policy.origin_allowed("http://app.example", "tts:8000", "http"), "listed as https"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (None, True),  # no Host: HTTP/1.0, not a browser
        ("localhost:8000", True),
        ("LOCALHOST.", True),
        ("player.localhost:8000", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("192.168.1.20", True),  # an address cannot be rebound
        ("tts.example.com:8443", True),
        ("a.corp.example", True),
        ("corp.example", False),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("localhost.evil.example", False),
        ("", False),
        ("user@localhost", False),
        ("localhost:http", False),
        ("127.0.0.1:99999", False),
    ],
)
def test_hosts_are_loopback_names_addresses_and_listed_names(
    host: str | None, allowed: bool
) -> None:
    policy = AccessPolicy(allowed_hosts=parse_hosts("tts.example.com, *.corp.example"))
    assert policy.host_allowed(host) is allowed


def test_any_host_and_the_listening_name() -> None:
    assert AccessPolicy(allowed_hosts=parse_hosts("*")).host_allowed("evil.example")
    assert listening_name("0.0.0.0") == listening_name("::") == frozenset()
    assert listening_name("TTS.lan") == {"tts.lan"}
    assert AccessPolicy(allowed_hosts=listening_name("tts.lan")).host_allowed("tts.lan:8000")
    with pytest.raises(ValueError, match="allowed host"):
        parse_hosts("tts.example.com:8000")


@pytest.mark.parametrize(
    "entry", ["app.example", "ftp://app.example", "https://app.example/path", "https://"]
)
def test_an_allowed_origin_must_be_a_bare_origin(entry: str) -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        parse_origins(entry)


def test_the_key_comes_as_a_bearer_header_or_subprotocol() -> None:
    policy = AccessPolicy(api_key=KEY)
    assert policy.key_accepted(Headers({"authorization": f"Bearer {KEY}"}))
    assert policy.key_accepted(Headers({}), ["tts.v1", f"bearer.{KEY}"])
    assert not policy.key_accepted(Headers({}))
    assert not policy.key_accepted(Headers({"authorization": f"Basic {KEY}"}))
    assert not policy.key_accepted(Headers({"authorization": f"Bearer {KEY}x"}))
    assert not policy.key_accepted(Headers({}), ["tts.v1", "bearer."])
    assert AccessPolicy().key_accepted(Headers({})), "no key configured: open"


@pytest.fixture(scope="module")
def guarded(settings: Settings, synthesizer: Synthesizer) -> Iterator[TestClient]:
    locked = dataclasses.replace(
        settings, api_key=KEY, allowed_origins=parse_origins("https://app.example")
    )
    with in_process_client(locked, synthesizer) as client:
        yield client


@pytest.mark.model
def test_http_needs_the_key_except_health_readiness_metrics_and_the_player(
    guarded: TestClient,
) -> None:
    refused = guarded.get("/v1/voices")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["www-authenticate"] == "Bearer"
    assert guarded.get("/v1/voices", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    for path in ("/health", "/ready", "/metrics", "/", "/static/player.js"):
        assert guarded.get(path).status_code == 200, path


@pytest.mark.model
def test_a_socket_without_the_key_is_told_why_and_closed(guarded: TestClient) -> None:
    with guarded.websocket_connect("/v1/stream", subprotocols=["tts.v1"]) as ws:
        error = wire.decode_server(ws.receive_bytes())
        assert (error["code"], error["fatal"]) == ("unauthorized", True)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_bytes()
        assert closed.value.code == 1008


@pytest.mark.model
def test_servers_send_the_key_as_a_header_browsers_as_a_subprotocol(guarded: TestClient) -> None:
    header = {"Authorization": f"Bearer {KEY}"}
    with guarded.websocket_connect("/v1/stream", headers=header) as ws:
        assert wire.decode_server(ws.receive_bytes())["type"] == "ready"
    offered = ["tts.v1", f"bearer.{KEY}"]
    browser = {"Origin": OWN_ORIGIN}
    with guarded.websocket_connect("/v1/stream", subprotocols=offered, headers=browser) as ws:
        assert ws.accepted_subprotocol == "tts.v1", "the key is never echoed back"
        assert wire.decode_server(ws.receive_bytes())["type"] == "ready"


@pytest.mark.model
def test_another_sites_page_is_refused_before_accept(guarded: TestClient) -> None:
    offered = ["tts.v1", f"bearer.{KEY}"]
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        guarded.websocket_connect(
            "/v1/stream", subprotocols=offered, headers={"Origin": OTHER_ORIGIN}
        ),
    ):
        pass
    assert denied.value.status_code == 403
    assert denied.value.json()["error"]["code"] == "origin_not_allowed"
    listed = {"Origin": "https://app.example"}
    with guarded.websocket_connect("/v1/stream", subprotocols=offered, headers=listed) as ws:
        assert wire.decode_server(ws.receive_bytes())["type"] == "ready"
    cross_site = guarded.post(
        "/v1/audio/speech",
        json={"input": "hello"},
        headers={"Origin": OTHER_ORIGIN, "Authorization": f"Bearer {KEY}"},
    )
    assert cross_site.status_code == 403


@pytest.mark.model
def test_ready_turns_503_while_draining(settings: Settings, synthesizer: Synthesizer) -> None:
    with in_process_client(settings, synthesizer) as client:
        assert client.get("/ready").status_code == 200
        service: Service = client.app.state.service  # type: ignore[attr-defined]
        service.drain.started = True  # what SIGTERM does first (the full path: test_shutdown)
        draining = client.get("/ready")
        refused = client.post("/v1/audio/speech", json={"input": "hello"})
        service.drain.started = False
    assert (draining.status_code, draining.json()["status"]) == (503, "draining")
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "shutting_down")

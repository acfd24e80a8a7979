"""A client on a real, shaped network link: the command-line client runs in a network namespace
of the test's own, joined to the server by a veth pair that the kernel shapes. The server's
frames grow when the link is the bottleneck, and not a sample is lost."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server
from tests.netns import ClientHost, client_host

pytestmark = pytest.mark.model

SENTENCE = "The old lighthouse keeper climbed the stairs every evening at dusk."


@pytest.fixture(scope="module")
def link(settings: Settings, synthesizer: Synthesizer) -> Iterator[tuple[ClientHost, str]]:
    """The namespace, and the server listening on this side's veth address only."""
    with (
        client_host() as host,
        live_server(settings, synthesizer, host=host.server_address) as base,
    ):
        yield host, base.replace("http", "ws") + "/v1/stream"


def say_from_the_namespace(host: ClientHost, url: str, out: Path) -> dict[str, Any]:
    done = host.run(
        [sys.executable, "-m", "app", "say", "--server", url, "-o", str(out), SENTENCE],
        timeout_s=240,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def slow_link(host: ClientHost) -> None:
    host.limit_rate(128)  # a third of real-time 16-bit 24 kHz audio (384 kbit/s)


def slow_lossy_link(host: ClientHost) -> None:
    host.limit_rate(128)
    host.drop_randomly(3)


def far_link(host: ClientHost) -> None:
    host.delay(80, 40)


SHAPES: dict[str, Callable[[ClientHost], None]] = {
    "128 kbit/s": slow_link,
    "128 kbit/s, 3% loss": slow_lossy_link,
    "80 ms +- 40 ms delay": far_link,
}


@contextmanager
def shaped(host: ClientHost, apply: Callable[[ClientHost], None]) -> Iterator[None]:
    """The shape for the block; every qdisc and rule removed afterwards."""
    apply(host)
    try:
        yield
    finally:
        host.clear_shaping()


@pytest.mark.parametrize("shape", list(SHAPES))
def test_frames_adapt_to_the_link_and_no_audio_is_lost(
    link: tuple[ClientHost, str], shape: str, tmp_path: Path
) -> None:
    host, url = link
    plain = say_from_the_namespace(host, url, tmp_path / "plain.wav")
    with shaped(host, SHAPES[shape]):
        slow = say_from_the_namespace(host, url, tmp_path / "shaped.wav")
    print(f"{shape}: plain {plain}\nshaped {slow}")
    assert plain["reason"] == slow["reason"] == "complete"
    assert (tmp_path / "plain.wav").read_bytes() == (tmp_path / "shaped.wav").read_bytes()
    if (
        shape != "80 ms +- 40 ms delay"
    ):  # the link carries a third of real time: it is the bottleneck
        assert any(change["reason"] == "slow_network" for change in slow["flow"]), slow["flow"]
        assert slow["frame_ms"]["mean"] > plain["frame_ms"]["mean"]
        assert slow["frames"] < plain["frames"]

"""Scale-out on loopback: replicas behind Debian's HAProxy; one replica dies mid-load, its
clients reconnect through the balancer and resume, and every stream is heard whole (Whisper)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from app.client import AudioFrame, TTSClient
from app.quality import Transcriber, word_error_rate
from app.settings import Settings
from loadtest.topology import Replica, Topology, local_topology

pytestmark = [pytest.mark.long, pytest.mark.model, pytest.mark.timeout(900)]

TEXTS = [
    "The lighthouse keeper climbed the stairs every evening. He lit the lamp, wound the clock, "
    "and wrote a line in the log about the wind, the passing ships and the sea. Then he sat by "
    "the window and waited for the morning, listening to the waves below.",
    "Our train left the station a little after nine. Fields and small villages slid past the "
    "window, and a conductor walked through the carriage checking tickets. By noon we could see "
    "the mountains, white at the top, rising behind a long blue lake.",
    "To make good bread you need flour, water, salt and time. Mix them, let the dough rest, fold "
    "it a few times over an hour, and leave it overnight in a cool place. In the morning, shape "
    "the loaf and bake it in a very hot oven until the crust is dark.",
]
REPLICAS = 2
CAPACITY = 2
"""Streams each replica synthesizes at once (fixed: two 1-thread replicas share this machine's
2 cores). Together they take every listener; after the kill the survivor answers a resume
``busy`` until one of its streams is synthesized."""
PLAYING_SAMPLES = 4 * 24_000
MAX_WER = 0.10


@dataclass
class Listener:
    text: str
    frames: list[AudioFrame] = field(default_factory=list)
    resumes: list[dict[str, object]] = field(default_factory=list)
    done: dict[str, object] | None = None
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    playing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once several segments have arrived: the next ones are longer than the lead the
    server sends ahead, so a drop then falls inside a segment."""
    gap_s: float = 0.0
    """Longest wait between two frames: the outage a resume cost."""

    async def listen(self, url: str) -> None:
        async with TTSClient.connect(url) as client:
            last = None
            async for item in client.speak(self.text, voice="jm_kumo"):
                now = time.monotonic()
                if isinstance(item, AudioFrame):
                    self.frames.append(item)
                    self.first_audio.set()
                    if item.pos >= PLAYING_SAMPLES:
                        self.playing.set()
                    if last is not None:
                        self.gap_s = max(self.gap_s, now - last)
                    last = now
                elif item.type == "resumed":
                    self.resumes.append(item.fields)
                elif item.type == "done":
                    self.done = item.fields

    def audio(self) -> npt.NDArray[np.float32]:
        return np.concatenate([frame.samples for frame in self.frames])


async def under_load(
    topology: Topology, listeners: list[Listener], act: Callable[[Replica], Awaitable[None]]
) -> tuple[dict[str, dict[str, str]], Replica]:
    """Stream every listener's text through the balancer; once each is well into it, ``act`` on
    the replica that carries the most of them, and let the streams finish. Returns HAProxy's
    statistics from when every listener had its first audio (all connections open, every
    stream synthesizing; a lone stream may have finished before the others are well in) and
    the replica acted on."""
    async with asyncio.TaskGroup() as group:
        for listener in listeners:
            group.create_task(listener.listen(topology.stream_url))
        for listener in listeners:
            await listener.first_audio.wait()
        during = await asyncio.to_thread(topology.server_stats)
        busiest = max(topology.replicas, key=lambda r: int(during[r.name]["scur"]))
        for listener in listeners:
            await listener.playing.wait()
        await act(busiest)
    return during, busiest


@contextlib.contextmanager
def two_replicas(settings: Settings, workdir: Path, **env: str) -> Iterator[Topology]:
    args = ["--plan", "cpu:1x1", "--cache-dir", str(settings.cache_dir)]
    env = {"KOKORO_MAX_ACTIVE_STREAMS": str(CAPACITY), **env}
    with local_topology(workdir, REPLICAS, args=args, env=env) as running:
        yield running


@pytest.fixture
def topology(settings: Settings, tmp_path: Path) -> Iterator[Topology]:
    with two_replicas(settings, tmp_path) as running:
        yield running


async def test_a_killed_replicas_streams_resume_through_the_balancer(
    topology: Topology, transcriber: Transcriber
) -> None:
    listeners = [Listener(text) for text in TEXTS]
    killed_at = 0.0

    async def kill(replica: Replica) -> None:
        nonlocal killed_at
        os.kill(replica.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()

    during, victim = await under_load(topology, listeners, kill)
    finished_s = time.monotonic() - killed_at
    after = await asyncio.to_thread(topology.server_stats)

    # Load was spread: every replica carried streams, and the fuller one had told HAProxy
    # (through its agent) that it had less capacity left.
    seen = {name: (row["scur"], row["weight"], row["status"]) for name, row in during.items()}
    assert all(int(during[r.name]["scur"]) >= 1 for r in topology.replicas), seen
    assert int(during[victim.name]["weight"]) < 100, seen
    assert after[victim.name]["status"].startswith("DOWN"), after

    resumed = [listener for listener in listeners if listener.resumes]
    assert len(resumed) == int(during[victim.name]["scur"])
    heard = [transcriber.transcribe(listener.audio()) for listener in listeners]
    report = []
    for listener, words in zip(listeners, heard, strict=True):
        assert listener.done is not None and listener.done["reason"] == "complete"
        wer = word_error_rate([listener.text], [words])
        report.append(
            f"resumes {len(listener.resumes)} at {listener.resumes} longest gap "
            f"{listener.gap_s * 1000:.0f} ms, underruns {listener.done['client_underruns']}, "
            f"WER {wer:.3f}: {words!r}"
        )
    print(
        f"\nreplica killed: {victim.name}; streams finished {finished_s:.1f} s later;"
        f" open connections {_column(during, 'scur')} and agent weights"
        f" {_column(during, 'weight')} at first audio\n" + "\n".join(report)
    )
    resumed_wer = word_error_rate(
        [listener.text for listener in resumed],
        [words for listener, words in zip(listeners, heard, strict=True) if listener.resumes],
    )
    assert resumed_wer <= MAX_WER, report


def _column(stats: dict[str, dict[str, str]], name: str) -> dict[str, str]:
    return {replica: row[name] for replica, row in stats.items()}


async def test_a_draining_replicas_streams_move_to_another(
    settings: Settings, tmp_path: Path, transcriber: Transcriber
) -> None:
    """SIGTERM: the replica's streams end with ``done`` (``shutdown``) after a short grace,
    and their clients resume them on the other replica; the replica exits cleanly."""
    with two_replicas(settings, tmp_path, KOKORO_SHUTDOWN_GRACE_S="1") as topology:
        listeners = [Listener(text) for text in TEXTS[:2]]
        exit_code = None

        async def drain(replica: Replica) -> None:
            nonlocal exit_code
            replica.process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.to_thread(replica.process.wait, 60)

        during, draining = await under_load(topology, listeners, drain)
    assert exit_code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has stopped
    assert "grace ran out: open streams ended" in draining.log.read_text()
    assert all(int(during[r.name]["scur"]) == 1 for r in topology.replicas), during
    moved = [listener for listener in listeners if listener.resumes]
    assert len(moved) == 1
    for listener in listeners:
        assert listener.done is not None and listener.done["reason"] == "complete"
    heard = transcriber.transcribe(moved[0].audio())
    wer = word_error_rate([moved[0].text], [heard])
    print(f"\ndrained {draining.name}: resumed at {moved[0].resumes}, WER {wer:.3f}")
    assert wer <= MAX_WER, heard

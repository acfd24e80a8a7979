"""``python -m app say --server URL``: speak through a running server and report what happened.

Text comes from the command line, or with ``--stdin`` from standard input as it arrives (each
line is sent as soon as it is read, as a language model's output would be). The report gives the
time to first audio, the frames, the frame sizes the server chose, and the underruns of a
modelled player; ``--max-kbps``, ``--latency-ms`` and ``--jitter-ms`` imitate a poor network.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.audio_formats import encode
from app.client import SAMPLE_RATE, AudioFrame, NetworkShape, TTSClient


@dataclass
class SayReport:
    """What one remote ``say`` measured."""

    ttfa_ms: float | None = None
    text_finished_ms: float | None = None
    frames: int = 0
    samples: int = 0
    frame_ms: list[float] = field(default_factory=list)
    flow: list[dict[str, Any]] = field(default_factory=list)
    underruns: int = 0
    start_hold_ms: float = 0.0
    link_realtime: float | None = None
    """With ``--max-kbps``: the link's rate over the audio's (16-bit, 24 kHz) rate. Below 1 the
    link cannot carry real-time audio, so underruns are expected."""
    server_ttfa_ms: float | None = None
    rtf: float | None = None
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        sizes = self.frame_ms or [0.0]
        return {
            "ttfa_ms": self.ttfa_ms,
            "server_ttfa_ms": self.server_ttfa_ms,
            "text_finished_ms": self.text_finished_ms,
            "frames": self.frames,
            "audio_s": round(self.samples / SAMPLE_RATE, 3),
            "frame_ms": {
                "mean": round(statistics.fmean(sizes), 1),
                "min": min(sizes),
                "median": statistics.median(sizes),
                "max": max(sizes),
            },
            "flow": self.flow,
            "underruns": self.underruns,
            "start_hold_ms": self.start_hold_ms,
            "link_realtime": self.link_realtime,
            "rtf": self.rtf,
            "reason": self.reason,
        }


async def _stdin_pieces(finished: list[float], started: float) -> AsyncIterator[str]:
    """Lines of standard input as they arrive (read on a thread: reading blocks)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=256)

    def read() -> None:
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(queue.put(line), loop).result()
        asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    reader = threading.Thread(target=read, name="stdin-reader", daemon=True)
    reader.start()
    while (line := await queue.get()) is not None:
        if line.strip():
            yield line.rstrip("\n") + " "
    finished.append((time.monotonic() - started) * 1000)


async def remote_say(
    url: str,
    text: str | None,
    *,
    voice: str | None,
    speed: float,
    shape: NetworkShape,
) -> tuple[SayReport, npt.NDArray[np.float32]]:
    """Stream ``text`` (or standard input when ``None``) and collect the audio and figures."""
    report = SayReport()
    if shape.max_kbps:
        audio_kbps = SAMPLE_RATE * 16 / 1000
        report.link_realtime = round(shape.max_kbps / audio_kbps, 3)
    pieces: list[np.ndarray] = []
    started = time.monotonic()
    finished: list[float] = []
    source = text if text is not None else _stdin_pieces(finished, started)
    async with TTSClient.connect(url, shape=shape) as client:
        async for item in client.speak(source, voice=voice, speed=speed):
            if isinstance(item, AudioFrame):
                if report.ttfa_ms is None:
                    report.ttfa_ms = round((time.monotonic() - started) * 1000, 1)
                report.frames += 1
                report.samples += len(item.samples)
                report.frame_ms.append(round(len(item.samples) * 1000 / SAMPLE_RATE, 1))
                pieces.append(item.samples)
            elif item.type == "flow":
                report.flow.append({k: item.fields[k] for k in ("frame_ms", "lead_ms", "reason")})
            elif item.type == "done":
                report.reason = item.fields["reason"]
                report.server_ttfa_ms = item.fields.get("ttfa_ms")
                report.rtf = item.fields.get("rtf")
                report.underruns = item.fields["client_underruns"]
                report.start_hold_ms = item.fields["client_start_hold_ms"]
    report.text_finished_ms = finished[0] if finished else 0.0
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return report, audio.astype(np.float32)


def write_audio(audio: npt.NDArray[np.float32], output: Path, format_name: str) -> None:
    output.write_bytes(encode(audio, SAMPLE_RATE, format_name))


def print_report(report: SayReport, output: Path) -> None:
    summary = report.summary()
    sizes = summary["frame_ms"]
    print(
        f"wrote {output}: {summary['audio_s']:.2f} s in {report.frames} frames "
        f"({report.reason}); TTFA {report.ttfa_ms} ms (server {report.server_ttfa_ms} ms); "
        f"frame ms mean {sizes['mean']} (min/median/max "
        f"{sizes['min']}/{sizes['median']}/{sizes['max']}); "
        f"underruns {report.underruns} (start held {report.start_hold_ms} ms); RTF {report.rtf}",
        file=sys.stderr,
    )
    if report.link_realtime is not None and report.link_realtime < 1:
        print(
            f"the link carries {report.link_realtime}x real-time 16-bit audio: "
            "underruns are expected",
            file=sys.stderr,
        )
    print(json.dumps(summary))

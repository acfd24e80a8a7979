"""``python -m app say --server``: the command-line streaming client, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from app.quality import Transcriber, word_error_rate
from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server

pytestmark = pytest.mark.model

SENTENCE = "The old lighthouse keeper climbed the stairs every evening at dusk."
PARAGRAPH = (
    "He cleaned the great lens, trimmed the wick, and watched the ships pass far out at sea. "
    "Nobody in the village remembered when he had arrived, but everybody knew the sound of "
    "his boots on the iron steps."
)


@pytest.fixture(scope="module")
def url(settings: Settings, synthesizer: Synthesizer) -> Iterator[str]:
    with live_server(settings, synthesizer) as base:
        yield base.replace("http", "ws") + "/v1/stream"


def say(url: str, out: Path, *args: str, stdin_words: list[str] | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "app", "say", "--server", url, "-o", str(out), *args]
    if stdin_words is None:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    else:
        with subprocess.Popen(
            [*command, "--stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stdin is not None
            for word in stdin_words:
                process.stdin.write(word + "\n")
                process.stdin.flush()
                time.sleep(0.1)  # the input pattern under test: one word every 100 ms
            stdout, stderr = process.communicate(timeout=300)
            code = process.returncode
    assert code == 0, stderr
    report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return report


def test_a_slow_link_gets_larger_frames_and_the_same_audio(url: str, tmp_path: Path) -> None:
    plain = say(url, tmp_path / "plain.wav", SENTENCE)
    slow = say(url, tmp_path / "slow.wav", SENTENCE, "--max-kbps", "64", "--jitter-ms", "80")
    assert plain["reason"] == slow["reason"] == "complete"
    assert (tmp_path / "plain.wav").read_bytes() == (tmp_path / "slow.wav").read_bytes()
    assert slow["frame_ms"]["mean"] > plain["frame_ms"]["mean"], (plain, slow)
    assert slow["frames"] < plain["frames"]
    assert any(change["reason"] == "slow_network" for change in slow["flow"])
    assert plain["link_realtime"] is None
    assert slow["link_realtime"] == pytest.approx(64 / 384, abs=0.001), "underruns explained"


def test_stdin_words_are_spoken_as_they_arrive(
    url: str, tmp_path: Path, transcriber: Transcriber
) -> None:
    out = tmp_path / "stdin.wav"
    report = say(url, out, stdin_words=PARAGRAPH.split(" "))
    assert report["reason"] == "complete"
    assert report["ttfa_ms"] < report["text_finished_ms"], report
    audio, rate = sf.read(str(out), dtype="float32")
    assert rate == 24_000
    assert len(audio) / rate == pytest.approx(report["audio_s"], abs=0.01)
    heard = transcriber.transcribe(audio)
    wer = word_error_rate([PARAGRAPH], [heard])
    print(f"stdin, one word per 100 ms: WER {wer:.3f}, TTFA {report['ttfa_ms']} ms: {heard}")
    assert wer <= 0.10, heard

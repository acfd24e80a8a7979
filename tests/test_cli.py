"""The command line, run as a user would: a subprocess with real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from app.settings import Settings


def run_cli(*args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    cache = ["--cache-dir", str(settings.cache_dir)] if settings else []
    command = [sys.executable, "-m", "app", *args[:1], *args[1:], *cache]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


def test_voices_lists_names_language_gender() -> None:
    result = run_cli("voices", "--json")
    assert result.returncode == 0, result.stderr
    assert {"name": "jm_kumo", "language": "ja", "gender": "male"} in json.loads(result.stdout)


@pytest.mark.model
def test_say_writes_a_wav_with_user_model_and_voices(
    settings: Settings, synthesizer: object, tmp_path: Path
) -> None:
    model = settings.cache_dir / "kokoro-v1.0.int8.onnx"  # assembled by the synthesizer fixture
    out = tmp_path / "out.wav"
    result = run_cli(
        "say",
        "Good morning.",
        "-o",
        str(out),
        "--model",
        str(model),
        "--voice",
        "jf_alpha:0.6+jm_kumo:0.4",
        "--speed",
        "1.1",
    )
    assert result.returncode == 0, result.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels) == (24_000, 1) and info.duration > 0.5


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["say", "hi", "-o", "x.wav", "--model", "/nonexistent/model.onnx"], "does not exist"),
        (["say", "hi", "-o", "x.wav", "--voices", "/nonexistent/voices.bin"], "does not exist"),
        (["say", "hi", "-o", "x.aac"], "cannot tell the audio format"),
        (["voices", "--voices", "/nonexistent/voices.bin"], "does not exist"),
    ],
)
def test_expected_failures_print_one_line(
    settings: Settings, args: list[str], fragment: str
) -> None:
    assert_one_line_error(
        run_cli(*args, settings=settings if args[0] != "voices" else None), fragment
    )


@pytest.mark.model
def test_truncated_model_and_unknown_voice_print_one_line(
    settings: Settings, synthesizer: object, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.onnx"
    source = settings.cache_dir / "kokoro-v1.0.int8.onnx"
    truncated.write_bytes(source.read_bytes()[:3_000_000])
    out = str(tmp_path / "x.wav")
    assert_one_line_error(
        run_cli("say", "hi", "-o", out, "--model", str(truncated)), "not a valid ONNX model"
    )
    assert_one_line_error(
        run_cli("say", "hi", "-o", out, "--voice", "af_nobody", settings=settings),
        "valid voices: jf_alpha",
    )

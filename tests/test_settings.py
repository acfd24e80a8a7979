from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import build_parser, settings_from
from app.settings import Settings


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KOKORO_PORT", "9001")
    monkeypatch.setenv("KOKORO_THREADS", "1")
    monkeypatch.setenv("KOKORO_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KOKORO_MAX_QUEUED_REQUESTS", "3")
    settings = Settings.from_env()
    assert (settings.port, settings.intra_op_threads, settings.cache_dir) == (9001, 1, tmp_path)
    assert settings.max_queued_requests == 3


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOKORO_PORT", "9001")
    args = build_parser().parse_args(["serve", "--port", "9100", "--threads", "1"])
    settings = settings_from(args)
    assert (settings.port, settings.intra_op_threads) == (9100, 1)


def test_bad_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOKORO_PORT", "eighty")
    with pytest.raises(ValueError, match="KOKORO_PORT must be an integer"):
        Settings.from_env()

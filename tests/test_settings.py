from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from app.bench import BENCH_TEXTS
from app.cli import build_parser, settings_from
from app.plan_loader import load_for_serving
from app.settings import Settings
from app.tts.chunking import Chunker
from app.tts.normalize import normalize
from app.tts.synthesizer import Synthesizer


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


def test_plan_and_fallback_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOKORO_PLAN", "cpu:2x1")
    monkeypatch.setenv("KOKORO_STRATEGY_TTL_S", "3600")
    monkeypatch.setenv("KOKORO_INFERENCE_TIMEOUT_S", "2.5")
    monkeypatch.setenv("KOKORO_PROBE_AFTER_S", "0.5")
    settings = Settings.from_env()
    assert settings.plan == "cpu:2x1" and settings.strategy_ttl_s == 3600
    assert (settings.inference_timeout_s, settings.probe_after_s) == (2.5, 0.5)
    args = build_parser().parse_args(["serve", "--plan", "cpu:1x2", "--rebenchmark"])
    flagged = settings_from(args)
    assert flagged.plan == "cpu:1x2" and flagged.rebenchmark
    monkeypatch.setenv("KOKORO_PROBE_AFTER_S", "soon")
    with pytest.raises(ValueError, match="KOKORO_PROBE_AFTER_S must be a number"):
        Settings.from_env()


@pytest.mark.model
def test_a_configured_plan_sets_sessions_and_threads(settings: Settings) -> None:
    synthesizer, choice = load_for_serving(replace(settings, plan="cpu:2x1"))
    try:
        assert (choice.plan, choice.source) == ("cpu:2x1", "configured")
        assert len(synthesizer.engines) == 2
        options = [engine.session.get_session_options() for engine in synthesizer.engines]
        assert [option.intra_op_num_threads for option in options] == [1, 1]
    finally:
        synthesizer.close()
    with pytest.raises(ValueError, match="expected PROVIDER:SESSIONSxTHREADS"):
        load_for_serving(replace(settings, plan="two sessions"))


def test_admission_and_admin_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOKORO_WORK_AHEAD_MS", "0")
    monkeypatch.setenv("KOKORO_MAX_ACTIVE_STREAMS", "3")
    monkeypatch.setenv("KOKORO_ADMISSION_UTILIZATION", "0.7")
    monkeypatch.setenv("KOKORO_ADMISSION_WAIT_MS", "2500")
    monkeypatch.setenv("KOKORO_ADMIN_TOKEN", "s3cret")
    settings = Settings.from_env()
    assert settings.work_ahead_ms == 0 and settings.max_active_streams == 3
    assert settings.admission_utilization == 0.7 and settings.admission_wait_ms == 2500
    assert settings.admin_token == "s3cret"
    assert "s3cret" not in repr(settings), "the token stays out of logs"


def test_client_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.stream_idle_s, defaults.request_timeout_s) == (30.0, 5.0)
    assert (defaults.max_body_bytes, defaults.allowed_hosts) == (65536, frozenset())
    monkeypatch.setenv("KOKORO_STREAM_IDLE_S", "12.5")
    monkeypatch.setenv("KOKORO_REQUEST_TIMEOUT_S", "2")
    monkeypatch.setenv("KOKORO_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("KOKORO_ALLOWED_HOSTS", "TTS.example.com., *.corp.example")
    settings = Settings.from_env()
    assert (settings.stream_idle_s, settings.request_timeout_s) == (12.5, 2.0)
    assert settings.max_body_bytes == 4096
    assert settings.allowed_hosts == {"tts.example.com", "*.corp.example"}
    for name, value in (("STREAM_IDLE_S", "0"), ("ALLOWED_HOSTS", "http://tts:8000")):
        monkeypatch.setenv(f"KOKORO_{name}", value)
        with pytest.raises(ValueError, match=name if name == "STREAM_IDLE_S" else "allowed host"):
            Settings.from_env()
        monkeypatch.delenv(f"KOKORO_{name}")


def test_benchmark_schedule_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOKORO_BENCH_INTERVAL_S", "600")
    monkeypatch.setenv("KOKORO_BENCH_QUIET_S", "2.5")
    settings = Settings.from_env()
    assert settings.bench_interval_s == 600 and settings.bench_quiet_s == 2.5
    monkeypatch.setenv("KOKORO_BENCH_QUIET_S", "-1")
    with pytest.raises(ValueError, match="KOKORO_BENCH_QUIET_S must be a number of seconds"):
        Settings.from_env()


def test_the_token_cap_splits_long_text_into_shorter_calls(
    monkeypatch: pytest.MonkeyPatch, synthesizer: Synthesizer
) -> None:
    """KOKORO_MAX_SEGMENT_TOKENS bounds every model call (activation memory grows with it)."""
    monkeypatch.setenv("KOKORO_MAX_SEGMENT_TOKENS", "128")
    assert Settings.from_env().max_segment_tokens == 128
    text = BENCH_TEXTS["paragraph"]
    whole = synthesizer.plan(text)
    capped = Chunker(synthesizer.phonemizer.phonemize, synthesizer.tokenizer.encode, 128)
    pieces = capped.split(normalize(text).text)
    assert len(whole) == 1 and len(whole[0].tokens) > 256
    assert len(pieces) >= 3 and all(len(piece.tokens) <= 128 for piece in pieces)
    with pytest.raises(ValueError, match=r"max_segment_tokens must be in 64\.\.510"):
        Synthesizer.load(replace(Settings(), max_segment_tokens=32))


def test_arena_shrinkage_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not Settings.from_env().arena_shrinkage
    monkeypatch.setenv("KOKORO_ARENA_SHRINKAGE", "on")
    assert Settings.from_env().arena_shrinkage
    monkeypatch.setenv("KOKORO_ARENA_SHRINKAGE", "maybe")
    with pytest.raises(ValueError, match="KOKORO_ARENA_SHRINKAGE must be 1/0"):
        Settings.from_env()


def test_spin_wait_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().spin_wait
    monkeypatch.setenv("KOKORO_SPIN_WAIT", "off")
    assert not Settings.from_env().spin_wait


def test_memory_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().memory_limit_mb == 0
    monkeypatch.setenv("KOKORO_MEMORY_LIMIT_MB", "1500")
    assert Settings.from_env().memory_limit_mb == 1500
    monkeypatch.setenv("KOKORO_MEMORY_LIMIT_MB", "-1")
    with pytest.raises(ValueError, match="KOKORO_MEMORY_LIMIT_MB must be a number of megabytes"):
        Settings.from_env()


def test_first_segment_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().first_segment == "short"
    monkeypatch.setenv("KOKORO_FIRST_SEGMENT", "Windowed")
    assert Settings.from_env().first_segment == "windowed"
    monkeypatch.setenv("KOKORO_FIRST_SEGMENT", "paragraph")
    with pytest.raises(ValueError, match="KOKORO_FIRST_SEGMENT must be one of short"):
        Settings.from_env()

"""Shared fixtures: one real synthesizer and one Whisper model per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.quality import Transcriber
from app.settings import Settings
from app.tts.synthesizer import Synthesizer


@pytest.fixture(scope="session", autouse=True)
def no_background_benchmarks() -> Iterator[None]:
    """Servers the tests start as processes run no scheduled benchmark either: one would take
    the CPU from the tests after 30 quiet seconds."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KOKORO_BENCH_INTERVAL_S", "0")
        yield


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache directory, so the session assembles the model as a clean machine would."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def settings(model_cache: Path) -> Settings:
    """Test servers admit up to 8 streams whatever this machine measures (admission control has
    its own tests), work ahead 4 s (less than a test paragraph, so bounds stay testable), run
    no scheduled benchmark in the background (its tests turn it on) and answer to Starlette's
    TestClient, whose Host is ``testserver``."""
    return Settings(
        cache_dir=model_cache,
        intra_op_threads=2,
        max_active_streams=8,
        work_ahead_ms=4000,
        bench_interval_s=0,
        allowed_hosts=frozenset({"testserver"}),
    )


@pytest.fixture(scope="session")
def synthesizer(settings: Settings) -> Iterator[Synthesizer]:
    synth = Synthesizer.load(settings)
    yield synth
    synth.close()


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    return Transcriber()

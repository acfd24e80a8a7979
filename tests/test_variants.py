"""Model variants: built reproducibly, cached with a manifest, rebuilt when stale, served."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from app.errors import ModelFileError
from app.settings import Settings
from app.strategy import current_components
from app.tts import variants
from app.tts.synthesizer import Synthesizer
from app.tts.variants import DEFAULT_VARIANT, SHIPPED, VARIANTS, VariantStore, resolve_model
from app.variant_report import run_report

pytestmark = pytest.mark.model

EDITED = "int8-snake"


@pytest.fixture(scope="module")
def store(settings: Settings) -> VariantStore:
    built = VariantStore(settings.cache_dir)
    built.ensure(EDITED)
    return built


def test_a_variant_is_built_once_with_its_provenance(store: VariantStore) -> None:
    entry = store.manifest()[EDITED]
    assert entry["base"] == SHIPPED and entry["base_sha256"] == store.sha256(SHIPPED)
    assert entry["bytes"] == store.path(EDITED).stat().st_size
    assert store.is_current(EDITED)
    modified = store.path(EDITED).stat().st_mtime_ns
    store.ensure(EDITED)
    assert store.path(EDITED).stat().st_mtime_ns == modified  # not built again


def test_a_damaged_or_outdated_variant_is_rebuilt(
    store: VariantStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = store.path(EDITED)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not store.is_current(EDITED)
    store.ensure(EDITED)
    assert path.read_bytes() == data  # the edit is reproducible: the same bytes again
    newer = replace(VARIANTS[EDITED], version=VARIANTS[EDITED].version + 1)
    monkeypatch.setitem(variants.VARIANTS, EDITED, newer)
    assert not store.is_current(EDITED)
    store.ensure(EDITED)
    assert store.manifest()[EDITED]["version"] == newer.version


def test_variant_names_and_user_models_are_checked(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="unknown model variant 'int3'"):
        resolve_model(None, settings.cache_dir, "int3")
    own = tmp_path / "own.onnx"
    own.write_bytes(b"not empty")
    with pytest.raises(ModelFileError, match="do not combine a variant with your own model"):
        resolve_model(own, settings.cache_dir, EDITED)
    assert resolve_model(own, settings.cache_dir) == own
    assert resolve_model(None, settings.cache_dir) == VariantStore(settings.cache_dir).ensure(
        DEFAULT_VARIANT
    )


def test_the_server_loads_a_variant_and_its_plan_cache_key_differs(
    settings: Settings, store: VariantStore
) -> None:
    chosen = replace(settings, variant=EDITED)
    synthesizer = Synthesizer.load(chosen)
    try:
        assert synthesizer.engine.config.model_path == store.path(EDITED)
        assert synthesizer.speak_blocking("Hello there.", "jm_kumo").audio_seconds > 0.5
    finally:
        synthesizer.close()
    shipped = current_components(store.ensure(SHIPPED), None, [], "jm_kumo")
    edited = current_components(store.path(EDITED), None, [], "jm_kumo")
    assert shipped["model_sha256"] != edited["model_sha256"]


@pytest.mark.speech
def test_the_report_measures_every_variant_and_applies_the_gate(
    settings: Settings, store: VariantStore, tmp_path: Path
) -> None:
    report = run_report(settings, [EDITED], rounds=1, out=tmp_path, sentences=2, progress=False)
    saved = json.loads((tmp_path / "variants.json").read_text())
    assert saved["rows"] == report["rows"]
    assert [row["variant"] for row in report["rows"]] == [SHIPPED, EDITED]
    shipped, edited = report["rows"]
    assert shipped["log_mel_distance"] == 0 and shipped["passes"] and shipped["speedup"] == 1
    for row in report["rows"]:
        assert row["bytes"] > 50 << 20 and row["load_seconds"] > 0 and row["peak_rss_mb"] > 100
        assert row["rtf"] > 0 and row["first_segment_ms"] > 0 and 0 <= row["wer"] <= 1
    assert report["distance_bound"] > 0
    assert edited["passes"] == (
        edited["wer"] <= report["wer_limit"] + 1e-9
        and edited["log_mel_distance"] <= report["distance_bound"]
    )
    assert "| int8-snake |" in (tmp_path / "variants.md").read_text()
    assert (tmp_path / "variants.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_default_is_the_committed_reports_fastest_passing_variant() -> None:
    report = json.loads((Path(__file__).parent.parent / "docs/variants/variants.json").read_text())
    passing = [row for row in report["rows"] if row["passes"]]
    fastest = min(passing, key=lambda row: row["text_seconds"])
    assert report["fastest_passing"] == fastest["variant"] == DEFAULT_VARIANT

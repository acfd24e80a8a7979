from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ModelFileError
from app.tts.engine import Engine, EngineConfig
from app.tts.model_store import (
    DEFAULT_MODEL_SHA256,
    check_user_model,
    ensure_default_model,
    sha256_of,
)
from app.tts.variants import resolve_model


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_model(tmp_path_factory.mktemp("store"))


def test_assembles_the_verified_model_and_reuses_it(built: Path) -> None:
    assert sha256_of(built) == DEFAULT_MODEL_SHA256
    before = built.stat()
    assert ensure_default_model(built.parent) == built
    after = built.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in built.parent.iterdir()] == [built.name], "no temporary files left"


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_cache_is_detected_and_rebuilt(built: Path, damage: str) -> None:
    if damage == "flip":
        with built.open("r+b") as handle:
            handle.seek(40_000_000)
            byte = handle.read(1)
            handle.seek(40_000_000)
            handle.write(bytes([byte[0] ^ 0xFF]))
    else:
        with built.open("r+b") as handle:
            handle.truncate(1_000_000)
    assert sha256_of(built) != DEFAULT_MODEL_SHA256
    assert ensure_default_model(built.parent) == built
    assert sha256_of(built) == DEFAULT_MODEL_SHA256


def test_user_model_path_is_used_as_given(built: Path, tmp_path: Path) -> None:
    assert resolve_model(built, tmp_path / "unused-cache") == built
    assert not (tmp_path / "unused-cache").exists()


def test_user_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        check_user_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelFileError, match="is not a file"):
        check_user_model(tmp_path)
    empty = tmp_path / "empty.onnx"
    empty.touch()
    with pytest.raises(ModelFileError, match="is empty"):
        check_user_model(empty)


def test_truncated_or_wrong_model_fails_with_one_clear_message(built: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(built.read_bytes()[:2_000_000])
    with pytest.raises(ModelFileError, match="not a valid ONNX model") as raised:
        Engine(EngineConfig(truncated))
    assert "\n" not in raised.value.message
    text_file = tmp_path / "notes.onnx"
    text_file.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match="not a valid ONNX model"):
        Engine(EngineConfig(text_file))

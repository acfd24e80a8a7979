"""Word timings from the model's own durations.

Kokoro decides how many 25 ms frames each phoneme token gets (``graph_edits`` exposes them), and
its audio is exactly those frames end to end. A word's time is therefore known without listening:
it starts where its first sounding token starts and ends where its last one ends. What remains
is bookkeeping between three texts:

* the caller's text, which the normaliser rewrites ("2024" becomes "twenty twenty-four") while
  remembering, per character, the source span it came from (``NormalizedText``);
* the normalised words, one per whitespace-separated run that holds a letter or digit;
* the phonemes, where espeak-ng keeps the word spaces. A normalised word almost always gives one
  phoneme word; where it does not (a URL, an e-mail address), each word is phonemized alone to
  learn how many phoneme words it makes.

Spoken words that come from one source span ("twenty", "twenty-four" from "2024") are reported
as one word with the source's text, so a timing always names characters the caller sent.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.tts.chunking import TextChunk
from app.tts.graph_edits import SAMPLES_PER_FRAME
from app.tts.normalize import NormalizedText
from app.tts.phonemes import PAUSE_SYMBOLS

Phonemize = Callable[[Sequence[str]], list[str]]

_RUN = re.compile(r"\S+")
_EDGE_PUNCTUATION = "\"'“”‘’()[]{}<>«»,;:.!?…—–-*_"


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One word: its samples in the audio it was timed against and its characters in the text."""

    text: str
    start: int
    """First sample of the word's first sounding token."""
    end: int
    """Sample after the word's last sounding token."""
    char_start: int
    char_end: int


def _is_word(run: str) -> bool:
    return any(char.isalnum() for char in run)


def _sounds(symbol: str) -> bool:
    return symbol not in PAUSE_SYMBOLS


def _text_words(text: str, offset: int) -> list[tuple[int, int]]:
    """Spans of the words in ``text`` (offset added), edge punctuation left out."""
    spans: list[tuple[int, int]] = []
    for match in _RUN.finditer(text):
        run = match.group()
        if not _is_word(run):
            continue
        lead = len(run) - len(run.lstrip(_EDGE_PUNCTUATION))
        trail = len(run) - len(run.rstrip(_EDGE_PUNCTUATION))
        spans.append((offset + match.start() + lead, offset + match.end() - trail))
    return spans


_STRESS = frozenset("ˈˌ")


def _tokens_of(phonemes: str, vocab: Mapping[str, int]) -> list[tuple[int, str, int]]:
    """``(token_index, symbol, phoneme_word)`` for each symbol the tokenizer keeps.

    Token indices count kept symbols exactly as ``Tokenizer.encode`` does, so they line up with
    the model's inputs (after the start pad); ``phoneme_word`` numbers the space-separated runs
    (-1 for the spaces themselves)."""
    tokens: list[tuple[int, str, int]] = []
    word = -1
    in_word = False
    for symbol in phonemes:
        if symbol.isspace():
            in_word = False
        elif not in_word:
            in_word = True
            word += 1
        if symbol in vocab:
            tokens.append((len(tokens), symbol, word if in_word else -1))
    return tokens


def _by_phoneme_word(tokens: list[tuple[int, str, int]]) -> list[list[int]]:
    """The sounding tokens of each phoneme word that has any."""
    words: dict[int, list[int]] = {}
    for index, symbol, word in tokens:
        if word >= 0 and _sounds(symbol):
            words.setdefault(word, []).append(index)
    return list(words.values())


def _aligned(
    words: list[str], tokens: list[tuple[int, str, int]], phonemize: Phonemize
) -> list[list[int]]:
    """Each text word's sounding tokens, by aligning the sentence's phonemes with each word's.

    espeak-ng phonemizes function words together with their neighbour ("on the" is one phoneme
    word, ``ɔnðə``) and spells a URL as several: phonemized alone, each word gives its own
    symbols, and a sequence alignment of those against the sentence's assigns the tokens."""
    spoken = [(index, symbol) for index, symbol, _ in tokens if _sounds(symbol)]
    spoken = [(index, symbol) for index, symbol in spoken if symbol not in _STRESS]
    owners: list[int] = []
    symbols: list[str] = []
    for owner, phonemes in enumerate(phonemize(words)):
        for symbol in phonemes:
            if _sounds(symbol) and symbol not in _STRESS and not symbol.isspace():
                owners.append(owner)
                symbols.append(symbol)
    matcher = difflib.SequenceMatcher(None, [s for _, s in spoken], symbols, autojunk=False)
    assigned: list[list[int]] = [[] for _ in words]
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            assigned[owners[b + k]].append(spoken[a + k][0])
    return assigned


def _word_tokens(
    texts: list[str], tokens: list[tuple[int, str, int]], phonemize: Phonemize
) -> list[list[int]]:
    phoneme_words = _by_phoneme_word(tokens)
    if len(phoneme_words) == len(texts):
        return phoneme_words
    return _aligned(texts, tokens, phonemize)


def chunk_words(
    chunk: TextChunk,
    durations: npt.NDArray[np.int64],
    vocab: Mapping[str, int],
    phonemize: Phonemize,
) -> list[tuple[int, int, int, int]]:
    """``(start_sample, end_sample, char_start, char_end)`` of each word of one model call.

    ``durations`` are the call's frames per token, the start and end pads included; char offsets
    index the normalised text the chunk was cut from. A word runs from its first sounding token
    to its last; the frames of a word space between two words are shared half and half (in
    fluent speech they are the transition, not a pause), while punctuation stays silence."""
    spans = _text_words(chunk.text, chunk.start)
    if not spans:
        return []
    texts = [chunk.text[s - chunk.start : e - chunk.start] for s, e in spans]
    tokens = _tokens_of(chunk.phonemes, vocab)
    per_word = _word_tokens(texts, tokens, phonemize)
    frames = np.asarray(durations, dtype=np.float64)
    edges = np.concatenate([[0.0], np.cumsum(frames)]) * SAMPLES_PER_FRAME
    spaces = {index for index, symbol, _ in tokens if symbol == " "}
    timed: list[tuple[int, int, int, int]] = []
    previous_end = int(edges[1])
    for (char_start, char_end), owned in zip(spans, per_word, strict=True):
        if not owned:  # nothing of it was found in the phonemes: a point at the last end
            timed.append((previous_end, previous_end, char_start, char_end))
            continue
        first, last = min(owned), max(owned)  # token i is the model's input i + 1
        start, end = edges[first + 1], edges[last + 2]
        if first - 1 in spaces:
            start -= (edges[first + 1] - edges[first]) / 2
        if last + 1 in spaces:
            end += (edges[last + 3] - edges[last + 2]) / 2
        timed.append((int(start), int(end), char_start, char_end))
        previous_end = int(end)
    return timed


def merge_by_source(
    timed: Sequence[tuple[int, int, int, int]], normalized: NormalizedText
) -> list[WordTiming]:
    """Map normalised spans to the source text; words from one source span become one word."""
    merged: list[WordTiming] = []
    for start, end, char_start, char_end in timed:
        source_start, source_end = normalized.source_span(char_start, char_end)
        first, last = start, end
        if merged and source_start < merged[-1].char_end:
            previous = merged.pop()
            source_start = min(source_start, previous.char_start)
            source_end = max(source_end, previous.char_end)
            first, last = min(first, previous.start), max(last, previous.end)
        word = normalized.source[source_start:source_end]
        merged.append(WordTiming(word, first, last, source_start, source_end))
    return merged

from __future__ import annotations

import re

import pytest

from app.tts.chunking import MAX_TOKENS, Chunker
from app.tts.phonemes import Phonemizer, Tokenizer, espeak_to_kokoro, load_vocab


@pytest.fixture(scope="module")
def phonemizer() -> Phonemizer:
    return Phonemizer("en-us")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(load_vocab())


@pytest.mark.parametrize(
    ("espeak", "kokoro"),
    [
        ("hˈa^ɪ", "hˈI"),
        ("tədˈe^ɪ", "tədˈA"),
        ("həlˈo^ʊ", "həlˈO"),
        ("t^ʃˈɜːt^ʃ", "ʧˈɜɹʧ"),
        ("bˈʌʔn̩", "bˈʌtn"),
        ("ɐbˈaʊt", "əbˈaʊt"),
    ],
)
def test_espeak_symbols_map_to_the_model_inventory(espeak: str, kokoro: str) -> None:
    assert espeak_to_kokoro(espeak) == kokoro


def test_phonemes_keep_punctuation_and_stress(phonemizer: Phonemizer) -> None:
    (phonemes,) = phonemizer.phonemize(["Hello there, how are you?"])
    assert phonemes.startswith("həlˈO")
    assert "," in phonemes
    assert phonemes.endswith("?")
    assert "^" not in phonemes


def test_blank_texts_give_empty_phonemes(phonemizer: Phonemizer) -> None:
    assert phonemizer.phonemize(["", "  ", "Yes."]) == ["", "", "jˈɛs."]


def test_tokens_are_all_in_vocab(phonemizer: Phonemizer, tokenizer: Tokenizer) -> None:
    vocab = load_vocab()
    (phonemes,) = phonemizer.phonemize(["The quick brown fox jumps over the lazy dog."])
    tokens = tokenizer.encode(phonemes)
    assert tokens and set(tokens) <= set(vocab.values())
    assert tokenizer.encode("h\u2603i") == [vocab["h"], vocab["i"]], "unknown symbols dropped"


LONG_TEXT = " ".join(
    [
        "The committee met on a rainy Tuesday to discuss the budget for the coming year.",
        "After a long debate, which lasted well into the evening, they agreed on a plan;",
        "the plan would fund the library, the park, and the new community kitchen.",
        "Nobody was entirely happy, but everybody accepted it.",
    ]
    * 6
)


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


@pytest.mark.parametrize("max_tokens", [40, 120, MAX_TOKENS])
def test_chunks_fit_the_window_and_never_split_words(
    phonemizer: Phonemizer, tokenizer: Tokenizer, max_tokens: int
) -> None:
    chunker = Chunker(phonemizer.phonemize, tokenizer.encode, max_tokens)
    chunks = chunker.split(LONG_TEXT)
    assert all(1 <= len(chunk.tokens) <= max_tokens for chunk in chunks)
    assert [w for chunk in chunks for w in _words(chunk.text)] == _words(LONG_TEXT)
    for chunk in chunks:
        assert LONG_TEXT[chunk.start : chunk.end].strip() == chunk.text
    if max_tokens == MAX_TOKENS:
        assert 2 <= len(chunks) <= 4, "whole sentences are packed together"


def test_chunks_prefer_sentence_then_clause_boundaries(
    phonemizer: Phonemizer, tokenizer: Tokenizer
) -> None:
    chunker = Chunker(phonemizer.phonemize, tokenizer.encode, 120)
    for chunk in chunker.split(LONG_TEXT):
        assert chunk.text[-1] in ".;,", chunk.text


def test_a_long_sentence_without_punctuation_splits_between_words(
    phonemizer: Phonemizer, tokenizer: Tokenizer
) -> None:
    text = " ".join(["seven green bottles standing on the wall"] * 40) + "."
    chunks = Chunker(phonemizer.phonemize, tokenizer.encode).split(text)
    assert len(chunks) >= 2
    assert all(len(chunk.tokens) <= MAX_TOKENS for chunk in chunks)
    assert [w for chunk in chunks for w in _words(chunk.text)] == _words(text)


def test_max_tokens_is_checked(phonemizer: Phonemizer, tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        Chunker(phonemizer.phonemize, tokenizer.encode, MAX_TOKENS + 1)

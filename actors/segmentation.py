"""Cutting a stream of text pieces into segments, one Kokoro call each.

A client sends text in pieces of any size (characters, words, language-model tokens) and expects
speech within a fraction of a second. Each segment costs a model call whose time grows with its
length, and the model needs whole words (ideally whole clauses or sentences) for good prosody.
So the first segment is short, to start audio early, and later ones grow toward a cap, because the
client then has audio buffered. Everything here is pure and synchronous.

Words. The text is split into tokens: maximal runs of non-whitespace. A token counts as a word
when it holds a letter or digit (punctuation alone, like a spaced dash, counts zero). Cuts fall
only between tokens, so never inside a word, a number ("3.14", "1,000") or a domain. A token is
complete once whitespace follows it; what ended it (its boundary) is known once the next token's
first character arrives, or earlier when nothing that could follow would change it (a certain
sentence end, or a blank line). So ``feed`` may hold back one token until the next one starts.

Boundaries after a token (closing quotes, brackets and Markdown emphasis are ignored):

* ``sentence``: ``.``, ``!``, ``?``, ``…`` or ``...``; or a blank line (two newlines) after it.
  A ``.`` is no sentence end after an abbreviation: titles ("Dr.", "Mrs.", ...), "Jr.", "vs.",
  "e.g."-style dotted initialisms ("U.S.", "a.m."), single-letter initials ("J. R. R."); "etc."
  ends a sentence only before an uppercase letter (or at the end of the text).
* ``clause``: ``,``, ``;``, ``:``, ``—``, ``–``, or a token that is only a dash (" - ", " -- ").
* ``word``: anything else.

Cutting. Each decision looks only at complete tokens whose boundary is known, so the segments
do not depend on how the text was split into pieces. With ``w`` the words in the segment so far:

* First segment (limit ``first_max_words``): cut at the first clause or sentence boundary with
  ``w >= first_min_words``; else after the ``first_max_words``-th word. Without
  ``first_clause_cut``, it is cut like a later segment (at a sentence end, or at the limit).
* Later segments (limit ``L = min(max_words, ceil(previous limit * growth))``): cut at every
  sentence end with ``w >= min_words`` (completed sentences are not held back to pack more). On
  reaching ``L`` words, cut at the last clause boundary with ``w >= min_words``, else after the
  ``L``-th word.
* Any segment: if the next token would take it over the segment's character limit, cut the same
  way (last clause boundary, else before that token); a single longer token goes alone. A
  token longer than ``max_chars`` (no word is: a run of digits, a pasted blob) is first cut
  into pieces of ``max_chars``, so no segment is longer than that. The limit is
  ``first_max_chars`` for the first segment and grows by ``growth`` up to ``max_chars``.
  Generation time follows characters, not words ("The old" vs "lighthouse keeper climbed"):
  with both limits the second segment is ready before the first has finished playing.
* A word cut never falls right after a title or initial ("Dr. | Smith", "J. | R. R. Tolkien"):
  it moves back before them when that leaves a word in the segment.

``flush`` emits everything buffered, trailing partial word included (the client asked for it);
``end`` does the same and marks the stream's last segment ``final`` (``feed`` after it raises
``RuntimeError``). The word limit keeps growing
across flushes: only a stream's first segment is short. The work per character is constant
(amortised), so a long stream fed one character at a time stays linear.

Resuming. A cut depends only on the text after the previous cut, the flushes, and the limits,
which depend only on the segment's index (and stop growing at their caps, so any index is
reached in constant time). So a ``Segmenter(first_index=k)`` fed the stream's text
from the end of segment ``k - 1`` on, with the same flushes, cuts the same segments ``k, k + 1,
...`` as the original did: a client that reconnects can pick a stream up mid-segment.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal

Boundary = Literal["sentence", "clause", "word"]
"""What ended a segment; the audio joiner sizes the pause after it by this."""

_Kind = Literal["sentence", "clause", "word", "etc"]
"""A token's own punctuation; ``etc`` means "decided by the next character"."""


@dataclass(frozen=True, slots=True)
class TextSegment:
    """One cut of a stream's text: the input of one model call."""

    index: int
    """0, 1, 2... per stream."""
    text: str
    """``stream_text[char_start:char_end]``; starts and ends with non-whitespace."""
    char_start: int
    """Offset into the stream's whole text (all pieces so far, concatenated as received)."""
    char_end: int
    boundary: Boundary
    final: bool = False
    """True for the segment from ``end()`` that closes the stream (absent if nothing was left)."""


@dataclass(frozen=True, slots=True)
class SegmenterPolicy:
    """How long segments are: short first (early audio), then growing to a cap (bounded latency)."""

    first_max_words: int = 2
    """The first segment ends after at most this many words."""
    first_min_words: int = 1
    """...and at a clause or sentence boundary once it has at least this many."""
    growth: float = 1.5
    """Each later segment's word limit is this times the previous one's."""
    max_words: int = 40
    """Cap on any later segment's word limit."""
    first_max_chars: int = 12
    """The first segment's character limit; later ones grow by ``growth`` up to ``max_chars``.
    Words vary in length ("The old" vs "lighthouse keeper"), and a model call's time follows its
    characters (phonemes), not its words: this keeps the second segment's generation time within
    the first segment's playing time."""
    max_chars: int = 300
    """Cap by characters (the model's hard limit is about 500 tokens; stay well below)."""
    min_words: int = 3
    """A later segment ends at a sentence (or, at the cap, clause) boundary only with this many
    words: a very short segment is an expensive model call with poor prosody."""
    first_clause_cut: bool = True
    """The first segment ends at its first clause boundary too; without it, only at a sentence
    end (or at its word or character limit, at the last clause boundary)."""

    @classmethod
    def whole_first_sentence(cls) -> SegmenterPolicy:
        """The first segment is the first sentence (up to the later segments' limits)."""
        defaults = cls()
        return cls(
            first_max_words=defaults.max_words,
            first_max_chars=defaults.max_chars,
            first_clause_cut=False,
        )

    def __post_init__(self) -> None:
        if not 1 <= self.first_min_words <= self.first_max_words:
            raise ValueError("need 1 <= first_min_words <= first_max_words")
        if self.growth < 1.0 or self.max_words < 1 or self.min_words < 1:
            raise ValueError("need growth >= 1, max_words >= 1 and min_words >= 1")
        if not 1 <= self.first_max_chars <= self.max_chars:
            raise ValueError("need 1 <= first_max_chars <= max_chars")


_DEFAULT_POLICY = SegmenterPolicy()

_RUN = re.compile(r"\s+|\S+")
_ALNUM = re.compile(r"[^\W_]")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
"""Dotted initialisms without their last period: "u.s", "e.g", "a.m"."""
_CLOSERS = "\"'”’»›)]}*_`"
_OPENERS = "\"'“‘«‹([{*_`"
"""Quotes, brackets and Markdown emphasis around a word; ignored when reading its punctuation."""
_TITLES = frozenset(
    {"mr", "mrs", "ms", "mx", "dr", "prof", "st", "rev", "fr", "hon"}
    | {"gen", "col", "lt", "sgt", "capt", "cpt", "maj", "sen", "rep", "gov"}
)
"""Abbreviations that bind to the next word: never a sentence end, never a cut after them."""
_ABBREVIATIONS = frozenset({"jr", "sr", "vs", "cf", "al", "approx", "viz"})
"""Other abbreviations that are never a sentence end."""


def _analyse(token: str) -> tuple[_Kind, bool]:
    """The boundary a token's own punctuation makes, and whether it binds to the next word."""
    core = token.rstrip(_CLOSERS)
    if not core:
        return "word", False
    last = core[-1]
    if last in "!?…":
        return "sentence", False
    if last in ",;:—–" or core in ("-", "--"):
        return "clause", False
    if last != ".":
        return "word", False
    if core.endswith(".."):
        return "sentence", False
    stem = core[:-1].lstrip(_OPENERS).lower()
    if stem in _TITLES or (len(stem) == 1 and stem.isalpha()):
        return "word", True
    if stem in _ABBREVIATIONS or _INITIALISM.fullmatch(stem):
        return "word", False
    if stem == "etc":
        return "etc", False
    return "sentence", False


def _newlines(whitespace: str) -> int:
    """Line breaks in a whitespace run; two make a blank line (a paragraph separator counts 2)."""
    return whitespace.count("\n") + 2 * whitespace.count("\u2029")


@dataclass(slots=True)
class _Token:
    """A complete token: ``[start, end)`` in the stream's text."""

    start: int
    end: int
    words: int
    kind: _Kind
    sticky: bool
    boundary: Boundary = "word"


class Segmenter:
    """Cuts one stream's text into segments as the pieces arrive (see the module docstring)."""

    def __init__(
        self,
        policy: SegmenterPolicy = _DEFAULT_POLICY,
        *,
        first_index: int = 0,
        char_offset: int = 0,
    ) -> None:
        """``first_index`` > 0 resumes a stream at that segment: the limits are those the stream
        had reached there, so the same text (and flushes) cut the same way as before, and
        ``char_offset`` places the text received here at that offset of the stream's text."""
        self.policy = policy
        self._char_offset = char_offset
        self._pieces: list[str] = []  # the whole text, joined lazily
        self._size = 0  # length of the whole text
        self._window: list[str] = []  # text from self._base on (not yet emitted), joined lazily
        self._base = 0
        self._token_start = -1  # start of the token being received, -1 when in whitespace
        self._open: _Token | None = None  # complete token whose boundary is not known yet
        self._open_newlines = 0
        self._tokens: list[_Token] = []  # tokens with known boundaries, not yet emitted
        self._next = 0  # index in self._tokens of the next token the cutter looks at
        self._words = 0  # words in self._tokens[: self._next]
        self._last_clause = -1  # index of the segment's last eligible clause boundary
        self._first = True
        self._limit = policy.first_max_words
        self._char_limit = policy.first_max_chars
        self._index = 0
        self._ended = False
        self._skip_to(first_index)

    @property
    def text(self) -> str:
        """The whole stream text received so far."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    @property
    def pending(self) -> str:
        """Text received after the last emitted segment (possibly only whitespace)."""
        return self._buffer()

    def feed(self, piece: str) -> list[TextSegment]:
        """Append a piece of text; return the segments that no later text can change."""
        if self._ended:
            raise RuntimeError("feed() after end()")
        if not piece:
            return []
        offset = self._size
        self._pieces.append(piece)
        self._window.append(piece)
        self._size += len(piece)
        for match in _RUN.finditer(piece):
            start = offset + match.start()
            run = match.group()
            if run[0].isspace():
                if self._token_start >= 0:
                    self._complete(self._token_start, start)
                if self._open is not None:
                    self._open_newlines += _newlines(run)
                    if self._open_newlines >= 2:
                        self._settle("sentence")
            elif self._token_start < 0:
                if self._open is not None:
                    kind = self._open.kind
                    self._settle("sentence" if kind == "etc" and run[0].isupper() else kind)
                self._token_start = start
        return self._cut(force=False)

    def flush(self) -> list[TextSegment]:
        """Emit everything buffered now, a trailing partial word included."""
        if self._ended:
            return []
        if self._token_start >= 0:
            self._complete(self._token_start, self._size)
        if self._open is not None:
            kind = self._open.kind
            self._settle("sentence" if self._open_newlines >= 2 or kind == "etc" else kind)
        # The next piece starts a new token even if it continues this one's last word.
        self._token_start = -1
        return self._cut(force=True)

    def end(self) -> list[TextSegment]:
        """No more text: emit the rest, the last segment marked ``final``."""
        segments = self.flush()
        self._ended = True
        if segments:
            segments[-1] = replace(segments[-1], final=True)
        return segments

    def _buffer(self) -> str:
        """The text from ``self._base`` on, as one string."""
        if len(self._window) > 1:
            self._window[:] = ["".join(self._window)]
        return self._window[0] if self._window else ""

    def _complete(self, start: int, end: int) -> None:
        """A token ended at ``end``: hold it until its boundary is known, or settle it now.

        A token longer than ``max_chars`` (no word is) is cut into pieces of ``max_chars``
        first, each settled as a word: no segment is longer than the cap."""
        buffer = self._buffer()
        longest = self.policy.max_chars
        while end - start > longest:
            piece = buffer[start - self._base : start + longest - self._base]
            words = 1 if _ALNUM.search(piece) else 0
            self._tokens.append(_Token(start, start + longest, words, "word", sticky=False))
            start += longest
        token = buffer[start - self._base : end - self._base]
        kind, sticky = _analyse(token)
        words = 1 if _ALNUM.search(token) else 0
        self._open = _Token(start, end, words, kind, sticky)
        self._open_newlines = 0
        self._token_start = -1
        if kind == "sentence":  # whatever follows, this stays a sentence end
            self._settle("sentence")

    def _settle(self, kind: _Kind) -> None:
        """The open token's boundary is now known: hand it to the cutter."""
        token = self._open
        if token is not None:
            token.boundary = "word" if kind == "etc" else kind
            self._tokens.append(token)
            self._open = None

    def _cut(self, *, force: bool) -> list[TextSegment]:
        """Cut segments from the settled tokens; with ``force``, emit the remainder too."""
        policy = self.policy
        tokens = self._tokens
        segments: list[TextSegment] = []
        while self._next < len(tokens):
            i = self._next
            token = tokens[i]
            if i > 0 and token.end - tokens[0].start > self._char_limit:
                end = self._last_clause if self._last_clause >= 0 else self._unstick(i - 1)
                segments.append(self._emit(end))
                continue
            self._words += token.words
            self._next = i + 1
            least = policy.first_min_words if self._first else policy.min_words
            if token.boundary != "word" and self._words >= least:
                if token.boundary == "sentence" or (self._first and policy.first_clause_cut):
                    segments.append(self._emit(i))
                    continue
                self._last_clause = i
            if self._words >= self._limit:
                end = self._last_clause if self._last_clause >= 0 else self._unstick(i)
                segments.append(self._emit(end))
        if force and tokens:
            segments.append(self._emit(len(tokens) - 1))
        return segments

    def _unstick(self, end: int) -> int:
        """Move a word cut after ``tokens[end]`` back before any titles or initials ending there."""
        tokens = self._tokens
        cut = end
        while cut >= 0 and tokens[cut].sticky and tokens[cut].boundary == "word":
            cut -= 1
        if cut < 0 or not any(token.words for token in tokens[: cut + 1]):
            return end
        return cut

    def _emit(self, end: int) -> TextSegment:
        """Emit ``tokens[: end + 1]`` as a segment and start the next one after it."""
        tokens = self._tokens
        start, stop = tokens[0].start, tokens[end].end
        buffer = self._buffer()
        segment = TextSegment(
            index=self._index,
            text=buffer[start - self._base : stop - self._base],
            char_start=start + self._char_offset,
            char_end=stop + self._char_offset,
            boundary=tokens[end].boundary,
        )
        self._window[:] = [buffer[stop - self._base :]]
        self._base = stop
        del tokens[: end + 1]
        self._next = 0
        self._words = 0
        self._last_clause = -1
        self._grow()
        return segment

    def _skip_to(self, index: int) -> None:
        """Take the limits segment ``index`` has, without cutting the segments before it.

        The limits stop changing once both reach their caps (or growth is 1), after at most
        ``max_words + max_chars`` segments, so this takes constant time however large
        ``index`` is (a resume point is client input)."""
        for _ in range(index):
            limits = (self._limit, self._char_limit)
            self._grow()
            if (self._limit, self._char_limit) == limits:
                break
        self._index = index
        self._first = index == 0

    def _grow(self) -> None:
        """On to the next segment: its word and character limits grow."""
        self._index += 1
        self._first = False
        grown = math.ceil(self._limit * self.policy.growth)
        self._limit = max(1, min(self.policy.max_words, grown))
        grown_chars = math.ceil(self._char_limit * self.policy.growth)
        self._char_limit = min(self.policy.max_chars, grown_chars)

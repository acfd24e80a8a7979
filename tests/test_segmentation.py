"""The text segmenter: where streams are cut, and that the cuts do not depend on the pieces."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from actors.segmentation import Segmenter, SegmenterPolicy, TextSegment

POLICY = SegmenterPolicy(first_max_words=4, first_min_words=2, growth=2.0, first_max_chars=300)
"""Word limits only (the character limit starts at ``max_chars``), so word rules show plainly."""
"""The rules below are written for these sizes; the server's defaults may be tuned apart."""

Chunker = Callable[[str], list[str]]


def _whole(text: str) -> list[str]:
    return [text]


def _chars(text: str) -> list[str]:
    return list(text)


def _words(text: str) -> list[str]:
    """Words with their trailing whitespace, as a typing client would send them."""
    return re.findall(r"\s+|\S+\s*", text)


def _tokens(text: str) -> list[str]:
    """Leading whitespace with each word, as language-model tokens usually come."""
    return re.findall(r"\s*\S+|\s+", text)


def _random(seed: int) -> Chunker:
    def chunk(text: str) -> list[str]:
        rng = random.Random(seed)
        pieces, at = [], 0
        while at < len(text):
            size = rng.randint(1, 12)
            pieces.append(text[at : at + size])
            at += size
        return pieces

    return chunk


CHUNKERS: dict[str, Chunker] = {
    "chars": _chars,
    "words": _words,
    "tokens": _tokens,
    **{f"random{seed}": _random(seed) for seed in range(5)},
}

TEXTS = [
    "Hello there, Dr. Smith. The author J. R. R. Tolkien wrote many books, e.g. The Hobbit, in "
    "the U.S. and the U.K. I think 3.14 percent of 1,000 people came, etc. and more etc. Then "
    'he said "Stop." Then he left... Well… maybe.',
    "First paragraph without a period\n\nSecond one here\nstill second\n\n\nThird (quoted) part: "
    "a list; items - and dashes — em – en. Visit example.com or v1.2.3 now! Really?! Yes.",
    " ".join(f"word{n}" for n in range(150)),
    "Short. Tiny. Ok. Fine then. " * 20,
    "  leading whitespace and a trailing partial wor",
    "Mrs. Jones met Prof. Plum at 7 a.m. on St. Patrick's day, vs. the usual time, i.e. late.",
]


def run(
    text: str, pieces: list[str] | None = None, policy: SegmenterPolicy | None = None
) -> list[TextSegment]:
    """Feed ``pieces`` (default: the text in one piece), then end the stream."""
    segmenter = Segmenter(policy or POLICY)
    segments: list[TextSegment] = []
    for piece in [text] if pieces is None else pieces:
        segments += segmenter.feed(piece)
    segments += segmenter.end()
    assert segmenter.text == text
    return segments


def check_invariants(text: str, segments: list[TextSegment]) -> None:
    """Spans match the text; segments cover its non-whitespace once, in order."""
    position = 0
    for index, segment in enumerate(segments):
        assert segment.index == index
        assert segment.text == text[segment.char_start : segment.char_end]
        assert segment.text.strip() == segment.text != ""
        assert segment.char_start >= position
        assert text[position : segment.char_start].strip() == ""
        assert not segment.final or index == len(segments) - 1
        position = segment.char_end
    assert text[position:].strip() == ""
    assert " ".join(" ".join(s.text.split()) for s in segments) == " ".join(text.split())


def texts_of(segments: list[TextSegment]) -> list[str]:
    return [segment.text for segment in segments]


def random_text(seed: int) -> str:
    """Text made of the tricky tokens, joined by assorted whitespace."""
    rng = random.Random(seed)
    vocabulary = [
        *("Dr.", "Smith", "3.14", "etc.", "Etc", "e.g.", "U.S.", "J.", "R.", "hello", "world"),
        *("end.", "why?", "wow!", "…", "-", "—", '"Stop."', "1,000", "example.com", "so,"),
        *("(aside)", "it's", "v1.2.3", "a.m.", "Mr.", "wait...", "x:", "and;", "fine.)"),
    ]
    spaces = [" ", " ", " ", " ", "  ", "\n", "\n\n", "\t", " \n \n "]
    words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 120))]
    return "".join(rng.choice(spaces) + word for word in words) + rng.choice(["", " ", "\n"])


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("chunker", CHUNKERS.values(), ids=CHUNKERS.keys())
def test_segments_do_not_depend_on_the_pieces(text: str, chunker: Chunker) -> None:
    expected = run(text)
    assert run(text, chunker(text)) == expected
    check_invariants(text, expected)


@pytest.mark.parametrize("seed", range(40))
def test_random_texts_cut_the_same_however_fed(seed: int) -> None:
    text = random_text(seed)
    expected = run(text)
    check_invariants(text, expected)
    for chunker in (_chars, _tokens, _random(seed)):
        assert run(text, chunker(text)) == expected


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("Yesterday Dr. Smith arrived. He was late again today.", "Dr. Smith"),
        ("We asked Mr. and Mrs. Brown and Ms. Green to come to dinner.", "Mrs. Brown"),
        ("Pi is roughly 3.14 and e is 2.71 give or take.", "3.14"),
        ("Some fruits, e.g. apples and pears, are healthy.", "e.g. apples"),
        ("Some fruits, i.e. apples and pears, are healthy.", "i.e. apples"),
        ("She moved to the U.S. last year with her family.", "U.S. last"),
        ("The author J. R. R. Tolkien wrote books about hobbits.", "J. R. R. Tolkien"),
        ("It was Prof. Plum in the library with the rope.", "Prof. Plum"),
        ("We met at 9 a.m. sharp in the lobby downstairs.", "a.m. sharp"),
        ("Cats vs. dogs is an old debate among friends.", "vs. dogs"),
        ("Download v1.2.3 from example.com today please.", "v1.2.3 from example.com"),
    ],
)
@pytest.mark.parametrize("chunker", [_whole, _chars], ids=["whole", "chars"])
def test_no_cut_inside_abbreviations_numbers_and_names(
    text: str, phrase: str, chunker: Chunker
) -> None:
    segments = run(text, chunker(text))
    assert any(phrase in segment.text for segment in segments), texts_of(segments)


def test_abbreviations_are_not_sentence_ends() -> None:
    policy = replace(POLICY, first_max_words=40, first_min_words=20)
    text = "Dr. Smith and Mrs. Jones met J. R. Ewing in the U.S. at 9 a.m. to talk, etc. and so on."
    segments = run(text, policy=policy)
    assert texts_of(segments) == [text]


def test_etc_ends_a_sentence_only_before_an_uppercase_letter() -> None:
    segments = run(
        "We bought apples, pears, etc. and ate them. We bought apples etc. Then we left."
    )
    assert texts_of(segments) == [
        "We bought apples,",
        "pears, etc. and ate them.",
        "We bought apples etc.",
        "Then we left.",
    ]
    assert [s.boundary for s in segments] == ["clause", "sentence", "sentence", "sentence"]


def test_first_segment_ends_at_the_first_clause_with_enough_words() -> None:
    segments = run("Well, hello there, my friend. How are you doing today?")
    assert texts_of(segments) == ["Well, hello there,", "my friend. How are you doing today?"]
    assert segments[0].boundary == "clause"


def test_first_segment_is_short_and_later_ones_grow_to_the_cap() -> None:
    words = [f"w{n}" for n in range(400)]
    segments = run(" ".join(words))
    counts = [len(segment.text.split()) for segment in segments]
    assert counts[:7] == [4, 8, 16, 32, 40, 40, 40]
    assert all(segment.boundary == "word" for segment in segments[:-1])
    assert sum(counts) == 400


def test_growth_and_cap_follow_the_policy() -> None:
    policy = replace(POLICY, first_max_words=3, first_min_words=1, growth=1.5, max_words=10)
    segments = run(" ".join(["la"] * 60), policy=policy)
    assert [len(s.text.split()) for s in segments][:6] == [3, 5, 8, 10, 10, 10]


def test_long_sentence_is_cut_at_the_last_clause_within_the_cap() -> None:
    policy = replace(POLICY, max_words=12)
    first = "One two three four"
    clause = "five six seven, eight nine ten eleven"  # the second segment's limit is 8
    text = f"{first} {clause} twelve thirteen fourteen fifteen sixteen."
    segments = run(text, policy=policy)
    assert texts_of(segments) == [
        first,
        "five six seven,",
        "eight nine ten eleven twelve thirteen fourteen fifteen sixteen.",
    ]
    assert [s.boundary for s in segments] == ["word", "clause", "sentence"]


def test_short_clause_at_the_cap_is_not_used() -> None:
    """A clause boundary with fewer than ``min_words`` words would make a wasteful segment."""
    segments = run("One two three four five, six seven eight nine ten eleven twelve thirteen")
    assert texts_of(segments)[1] == "five, six seven eight nine ten eleven twelve"


def test_completed_sentences_are_emitted_without_waiting_to_pack_more() -> None:
    segmenter = Segmenter(POLICY)
    assert texts_of(segmenter.feed("Hi there. ")) == ["Hi there."]
    assert texts_of(segmenter.feed("This is the second one. ")) == ["This is the second one."]
    assert texts_of(segmenter.feed("Here is a second sentence. And")) == [
        "Here is a second sentence."
    ]
    assert texts_of(segmenter.feed(" so. ")) == []  # too short alone: waits to merge
    assert texts_of(segmenter.end()) == ["And so."]


def test_a_trailing_period_waits_for_the_next_character() -> None:
    policy = replace(POLICY, first_max_words=10)
    segmenter = Segmenter(policy)
    assert segmenter.feed("We paid 3.") == []  # "3." may yet become "3.14"
    assert texts_of(segmenter.feed(" ")) == ["We paid 3."]
    segmenter = Segmenter(policy)
    assert segmenter.feed("We paid 3.") == []
    assert texts_of(segmenter.feed("14 in total. ")) == ["We paid 3.14 in total."]
    segmenter = Segmenter(policy)
    assert segmenter.feed("Ask Dr. ") == []  # an abbreviation: no sentence end
    assert segmenter.feed("Who") == []
    assert texts_of(segmenter.end()) == ["Ask Dr. Who"]


def test_long_text_without_punctuation_is_cut_at_word_boundaries_within_the_caps() -> None:
    rng = random.Random(7)
    words = [
        "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 14))) for _ in range(3000)
    ]
    text = " ".join(words)
    policy = replace(POLICY, first_max_chars=120, max_chars=120)
    segments = run(text, _random(3)(text), policy=policy)
    check_invariants(text, segments)
    assert all(len(s.text.split()) <= policy.max_words for s in segments)
    assert all(len(s.text) <= policy.max_chars for s in segments)
    assert max(len(s.text) for s in segments) > 100


def test_a_token_longer_than_max_chars_is_cut_into_pieces_of_max_chars() -> None:
    url = "https://example.com/" + "a" * 110
    policy = replace(POLICY, first_max_chars=50, max_chars=50)
    segments = run(f"Open this link {url} and then wait.", policy=policy)
    pieces = [url[:50], url[50:100]]  # the rest of the token is short enough to go on as usual
    assert texts_of(segments) == ["Open this link", *pieces, f"{url[100:]} and then wait."]
    assert all(len(segment.text) <= policy.max_chars for segment in segments)
    for segment in segments:
        assert (
            segment.text
            == f"Open this link {url} and then wait."[segment.char_start : segment.char_end]
        )


def test_a_twenty_thousand_digit_number_makes_segments_of_at_most_max_chars() -> None:
    digits = "7" * 20_000
    segments = run(f"Call {digits} now.")
    assert max(len(segment.text) for segment in segments) == POLICY.max_chars
    text = f"Call {digits} now."
    assert all(text[s.char_start : s.char_end] == s.text for s in segments)
    assert "".join(s.text for s in segments).replace(" ", "") == f"Call{digits}now."


def test_a_resume_point_takes_constant_time_and_the_limits_segment_k_has() -> None:
    """A resume point is client input: segment 2**31 - 1 costs what segment 60 does, because the
    limits stop growing at their caps long before."""
    far = Segmenter(POLICY, first_index=2**31 - 1)
    near = Segmenter(POLICY, first_index=60)
    for segmenter in (far, near):
        assert (segmenter._limit, segmenter._char_limit) == (POLICY.max_words, POLICY.max_chars)
    text = "One two three four five. Six seven eight nine ten, eleven twelve."
    assert texts_of(far.feed(text) + far.end()) == texts_of(near.feed(text) + near.end())
    assert [s.index for s in Segmenter(POLICY, first_index=7).end()] == []
    resumed = Segmenter(POLICY, first_index=7)
    assert [s.index for s in resumed.feed("A b c d. ") + resumed.end()] == [7]


def test_the_character_limit_keeps_early_segments_of_long_words_short() -> None:
    """Generation time follows characters: "lighthouse keeper climbed" is three words, but as
    long to synthesize as eight short ones."""
    policy = SegmenterPolicy()  # 2 words or 12 characters first, both limits x1.5 after
    text = "The old lighthouse keeper climbed the stairs every evening at dusk. Then he slept."
    segments = run(text, _random(5)(text), policy=policy)
    check_invariants(text, segments)
    assert texts_of(segments)[:3] == ["The old", "lighthouse keeper", "climbed the stairs every"]
    limit = float(policy.first_max_chars)
    for segment in segments:
        assert len(segment.text) <= limit or " " not in segment.text
        limit = min(policy.max_chars, math.ceil(limit * policy.growth))
    words_only = run(text, policy=replace(policy, first_max_chars=policy.max_chars))
    assert texts_of(words_only)[1] == "lighthouse keeper climbed"


def test_flush_emits_the_partial_buffer() -> None:
    segmenter = Segmenter(POLICY)
    assert segmenter.feed("Hello wor") == []
    assert segmenter.pending == "Hello wor"
    assert segmenter.flush() == [TextSegment(0, "Hello wor", 0, 9, "word")]
    assert segmenter.pending == ""
    assert segmenter.flush() == []
    assert segmenter.feed("ld, and") == []  # "ld" is a new word: the client flushed mid-word
    flushed = segmenter.flush()
    assert flushed == [TextSegment(1, "ld, and", 9, 16, "word")]
    assert segmenter.end() == []
    assert segmenter.text == "Hello world, and"


def test_flush_cuts_long_buffers_by_the_usual_rules() -> None:
    segmenter = Segmenter(POLICY)
    assert segmenter.feed("one two three") == []
    assert texts_of(segmenter.flush()) == ["one two three"]
    fed = segmenter.feed(" " + " ".join(["la"] * 30))
    assert [len(s.text.split()) for s in fed] == [8, 16]  # the limits keep growing
    assert [len(s.text.split()) for s in segmenter.flush()] == [6]
    assert segmenter.end() == []


def test_flush_treats_etc_and_trailing_abbreviations_by_what_ends_them() -> None:
    segmenter = Segmenter(POLICY)
    segmenter.feed("Apples, pears etc. ")
    assert [(s.text, s.boundary) for s in segmenter.flush()] == [("Apples, pears etc.", "sentence")]


def test_end_marks_the_last_segment_final() -> None:
    segmenter = Segmenter(POLICY)
    first = segmenter.feed("Good morning, everyone. It is a fine day")
    assert [s.final for s in first] == [False]
    last = segmenter.end()
    assert texts_of(last) == ["everyone. It is a fine day"]
    assert [s.final for s in last] == [True]
    assert segmenter.end() == []
    with pytest.raises(RuntimeError):
        segmenter.feed("more")


def test_end_after_everything_was_emitted_returns_nothing() -> None:
    segmenter = Segmenter(POLICY)
    assert texts_of(segmenter.feed("All done. ")) == ["All done."]
    assert segmenter.end() == []


@pytest.mark.parametrize("pieces", [[], [""], ["   "], [" ", "\n\n", "\t "]])
def test_whitespace_only_input_makes_no_segments(pieces: list[str]) -> None:
    segmenter = Segmenter(POLICY)
    for piece in pieces:
        assert segmenter.feed(piece) == []
    assert segmenter.flush() == []
    assert segmenter.end() == []


def test_quotes_and_ellipses_end_sentences() -> None:
    segments = run('He said "Stop." Then he left. Wait for it… Here it comes... Or not!) Fine.')
    assert texts_of(segments) == [
        'He said "Stop."',
        "Then he left.",
        "Wait for it…",
        "Here it comes...",
        "Or not!) Fine.",
    ]
    assert all(s.boundary == "sentence" for s in segments)


def test_markdown_emphasis_around_punctuation_is_ignored() -> None:
    segments = run("**Note:** the *door*, it is *closed.* Please knock _first_.")
    assert texts_of(segments) == [
        "**Note:** the *door*,",
        "it is *closed.*",
        "Please knock _first_.",
    ]
    assert [s.boundary for s in segments] == ["clause", "sentence", "sentence"]


def test_blank_lines_are_sentence_ends_and_single_newlines_are_not() -> None:
    text = "First paragraph here\n\nSecond paragraph here\nstill second\n \n Third"
    segments = run(text)
    assert texts_of(segments) == [
        "First paragraph here",
        "Second paragraph here\nstill second",
        "Third",
    ]
    assert [s.boundary for s in segments] == ["sentence", "sentence", "word"]


def test_a_blank_line_is_cut_without_waiting_for_more_text() -> None:
    segmenter = Segmenter(POLICY)
    assert texts_of(segmenter.feed("One two three\n")) == []
    assert texts_of(segmenter.feed("\n")) == ["One two three"]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("So there - it is", "So there -"),
        ("Wait up -- what is that", "Wait up --"),
        ("We tried — and failed", "We tried —"),
        ("We tried— and failed", "We tried—"),
        ("We tried – and failed", "We tried –"),
        ("Pre- and post-war times", "Pre- and post-war times"),
    ],
)
def test_dashes_are_clause_boundaries(text: str, first: str) -> None:
    assert texts_of(run(text))[0] == first


def test_later_clauses_do_not_cut_before_the_cap() -> None:
    segments = run("So there - it is. We tried — and failed – twice.")
    assert texts_of(segments) == ["So there -", "it is. We tried — and failed – twice."]
    assert [s.boundary for s in segments] == ["clause", "sentence"]


@pytest.mark.parametrize("chunker", [_whole, _chars], ids=["whole", "chars"])
def test_commas_inside_numbers_are_not_boundaries(chunker: Chunker) -> None:
    text = "Roughly 1,000,000 people, or 2,500 more, came to see it."
    segments = run(text, chunker(text))
    assert texts_of(segments) == ["Roughly 1,000,000 people,", "or 2,500 more, came to see it."]


def test_the_text_and_pending_properties() -> None:
    segmenter = Segmenter(POLICY)
    segmenter.feed("Hi there, ")
    segmenter.feed("you. And")
    assert segmenter.text == "Hi there, you. And"
    assert segmenter.pending == " you. And"


def test_a_hundred_kilobyte_stream_fed_one_character_at_a_time() -> None:
    rng = random.Random(1)
    sentences: list[str] = []
    while len(sentences) < 1_600:
        words = [rng.choice(["alpha", "beta,", "3.14", "Dr.", "gamma", "delta"]) for _ in range(12)]
        sentences.append(" ".join(words) + rng.choice([". ", "! ", "\n\n", " "]))
    text = "".join(sentences)
    assert len(text) > 100_000
    segmenter = Segmenter(POLICY)
    segments: list[TextSegment] = []
    for character in text:
        segments += segmenter.feed(character)
    segments += segmenter.end()
    check_invariants(text, segments)
    assert segments == run(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_min_words": 5, "first_max_words": 4},
        {"first_min_words": 0},
        {"growth": 0.5},
        {"max_words": 0},
        {"max_chars": 0},
        {"first_max_chars": 0},
        {"first_max_chars": 301, "max_chars": 300},
        {"min_words": 0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        SegmenterPolicy(**kwargs)  # type: ignore[arg-type]


def resumed_from(
    text: str, segments: list[TextSegment], k: int, pieces: Chunker
) -> list[TextSegment]:
    """Segments of a segmenter resumed at segment ``k``, fed the text from its resume point."""
    chars = segments[k - 1].char_end if k else 0
    segmenter = Segmenter(POLICY_DEFAULTS, first_index=k, char_offset=chars)
    resumed: list[TextSegment] = []
    for piece in pieces(text[chars:]):
        resumed += segmenter.feed(piece)
    return resumed + segmenter.end()


POLICY_DEFAULTS = SegmenterPolicy()
"""Resuming must reproduce the server's own limits, character limit included."""


@pytest.mark.parametrize("seed", range(12))
def test_a_resumed_segmenter_cuts_the_rest_as_the_original_did(seed: int) -> None:
    text = TEXTS[seed % len(TEXTS)] if seed < len(TEXTS) else random_text(seed)
    original = run(text, policy=POLICY_DEFAULTS)
    assert len(original) > 2
    for k in range(len(original)):
        for pieces in (_whole, _words, _random(seed)):
            assert resumed_from(text, original, k, pieces) == original[k:], (k, pieces)


def test_resuming_without_the_limits_would_cut_differently() -> None:
    """The check above has teeth: a fresh segmenter starts short again."""
    text = TEXTS[2]
    original = run(text, policy=POLICY_DEFAULTS)
    k = 3
    fresh = Segmenter(POLICY_DEFAULTS, char_offset=original[k - 1].char_end)
    cut = fresh.feed(text[original[k - 1].char_end :]) + fresh.end()
    assert [s.text for s in cut] != [s.text for s in original[k:]]

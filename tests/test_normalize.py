"""Tests for English text normalisation (app.tts.normalize)."""

from __future__ import annotations

import random

import pytest

from app.tts.normalize import NormalizedText, normalize


def _check_provenance(result: NormalizedText) -> None:
    """Every output character has a valid, non-empty-or-zero-width span inside the source."""
    assert len(result.starts) == len(result.ends) == len(result.text)
    for start, end in zip(result.starts, result.ends, strict=True):
        assert 0 <= start <= end <= len(result.source)


def _cases(*pairs: tuple[str, str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("raw", "expected"), pairs)


@_cases(
    ("<b>bold</b> text", "bold text"),
    ("line<br/>break", "line break"),
    ('<a href="https://x.com">link</a>', "link"),
    ("<p>Hello</p><p>World</p>", "Hello. World"),
    ("<ul><li>milk</li><li>eggs</li></ul>", "milk. eggs"),
    ("<li>done.</li> <li>next</li>\n</ul>\n", "done. next"),
    ("R&amp;D", "R and D"),
    ("a<!-- hidden -->b", "ab"),
    ("<!DOCTYPE html>Hi", "Hi"),
    ("**bold** and *it* and __under__ and _it_", "bold and it and under and it"),
    ("~~gone~~ kept", "gone kept"),
    ("use `code` here", "use code here"),
    ("```python\nprint()\n```", "print()"),
    ("# Title\nSome text", "Title. Some text"),
    ("## Sub heading", "Sub heading"),
    ("List:\n- milk\n- eggs", "List: milk. eggs"),
    ("Intro\n* one\n* two\n\nAfter", "Intro. one. two. After"),
    ("1. Buy milk\n2. Eat", "one. Buy milk. two. Eat"),
    ("above\n---\nbelow", "above. below"),
    ("see [the docs](https://example.com/docs) now", "see the docs now"),
    ("![](pic.png)caption", "caption"),
    ("[**$5** deal](u)", "five dollars deal"),
    ("snake_case and 2*3 and a * b", "snake_case and two*three and a * b"),
    ("a &amp; b", "a and b"),
    ("&lt;tag&gt; &quot;q&quot; it&#39;s", '<tag> "q" it\'s'),
    ("non&nbsp;breaking", "non breaking"),
    ("&bogus; x", "and bogus; x"),
)
def test_markup(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("see https://example.com/a_b?x=1&y=22.", "see https://example.com/a_b?x=1&y=22."),
    ("www.example.com/page_2", "www.example.com/page_2"),
    ("mail john_doe+1@mail.example.com today", "mail john_doe+1@mail.example.com today"),
)
def test_urls_and_emails_pass_through(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("  a \t b\n c  ", "a b c"),
    ("a\u00a0\u00a0b", "a b"),
    ("para one\n\npara two", "para one. para two"),
    ("para one.\n\n\npara two", "para one. para two"),
    ("question?\n \n answer", "question? answer"),
    ("list:\n\nitem", "list: item"),
    ('"quoted."\n\nNext', '"quoted." Next'),
    ("line one\nline two", "line one line two"),
    ("crlf one\r\n\r\ncrlf two", "crlf one. crlf two"),
    ("trailing\n\n", "trailing"),
    ("\n\nleading", "leading"),
)
def test_whitespace(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@pytest.mark.parametrize("raw", ["", " ", "\n\n\t ", "\u00a0", "<b></b>", "``", "<p></p>\n\n"])
def test_empty_results(raw: str) -> None:
    result = normalize(raw)
    assert result.text == ""
    assert result.starts == result.ends == ()
    assert result.source == raw


@_cases(
    ("Dr. Smith", "Doctor Smith"),
    ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
    ("Ms. Lee met Prof. Xu", "Miz Lee met Professor Xu"),
    ("Mr Smith", "Mister Smith"),
    ("I saw the Dr.", "I saw the Doctor"),
    ("John Smith Jr. and his son", "John Smith Junior and his son"),
    ("It was Smith Jr.", "It was Smith Junior."),
    ("It was Smith Jr. He left", "It was Smith Junior. He left"),
    ("St. Louis", "Saint Louis"),
    ("on Main St. today", "on Main Street today"),
    ("on Main St.", "on Main Street."),
    ("Mt. Everest", "Mount Everest"),
    ("cats vs. dogs", "cats versus dogs"),
    ("cats vs dogs", "cats versus dogs"),
    ("fruit, e.g. apples", "fruit, for example apples"),
    ("fruit, e.g., apples", "fruit, for example, apples"),
    ("cities, e.g. Paris", "cities, for example Paris"),
    ("one, i.e. this", "one, that is this"),
    ("apples, pears, etc. and more", "apples, pears, et cetera and more"),
    ("apples, pears, etc. Then more", "apples, pears, et cetera. Then more"),
    ("apples, pears, etc.", "apples, pears, et cetera."),
    ("approx. 5 kg", "approximately five kilograms"),
    ("No. 5", "number five"),
    ("No. I refuse", "No. I refuse"),
    ("Jan. 5", "January fifth"),
    ("Sept. 3 and Dec. 25", "September third and December twenty-fifth"),
    ("Feb. 2020", "February twenty twenty"),
    ("Aug 12", "August twelfth"),
)
def test_abbreviations(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("0", "zero"),
    ("7 cats", "seven cats"),
    ("123", "one hundred and twenty-three"),
    ("1,234,567", "one million two hundred and thirty-four thousand five hundred and sixty-seven"),
    ("1200", "one thousand two hundred"),
    ("-5", "minus five"),
    ("\u22125", "minus five"),
    ("(-12)", "(minus twelve)"),
    ("3.14", "three point one four"),
    ("0.05", "zero point zero five"),
    ("1,234.5", "one thousand two hundred and thirty-four point five"),
    (".5", "point five"),
    ("007", "zero zero seven"),
    (
        "12345678901234567890",
        ("one two three four five six seven eight nine zero " * 2).strip(),
    ),
    ("1st 2nd 3rd 4th", "first second third fourth"),
    ("21st 102nd", "twenty-first one hundred and second"),
    ("the 21st-century", "the twenty-first-century"),
    ("50%", "fifty percent"),
    ("3.5 %", "three point five percent"),
    ("10-20", "ten to twenty"),
    ("10\u201320%", "ten to twenty percent"),
    ("pages 1,000-2,000", "pages one thousand to two thousand"),
    ("1/2", "one half"),
    ("3/4", "three quarters"),
    ("2/3", "two thirds"),
    ("1/3", "one third"),
    ("5/7", "five sevenths"),
    ("3/2", "three halves"),
    ("24/7", "twenty-four seven"),
    ("4K", "four K"),
    ("3D", "three D"),
    ("mp3", "mp three"),
    ("COVID-19", "COVID-nineteen"),
    ("H2O", "H two O"),
    ("version 1.2.3", "version one point two point three"),
    ("call 555-123-4567", "call five five five, one two three, four five six seven"),
    ("5 km and 1 kg", "five kilometers and one kilogram"),
    ("3.5GHz", "three point five gigahertz"),
)
def test_numbers(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("in 1999", "in nineteen ninety-nine"),
    ("In 1850, it rained.", "In eighteen fifty, it rained."),
    ("since 2005", "since two thousand and five"),
    ("by 2030 we", "by twenty thirty we"),
    ("the year 2000", "the year two thousand"),
    ("from 1990 until 2010", "from nineteen ninety until twenty ten"),
    ("circa 1500", "circa fifteen hundred"),
    ("mid-1990s", "mid-nineteen nineties"),
    ("1492 AD", "fourteen ninety-two AD"),
    ("1200 BC", "twelve hundred BC"),
    ("1999 apples", "one thousand nine hundred and ninety-nine apples"),
    ("2024 points", "two thousand and twenty-four points"),
    ("in 2150", "in two thousand one hundred and fifty"),
    ("the 1990s", "the nineteen nineties"),
    ("the '80s", "the eighties"),
    ("the 2000s", "the two thousands"),
    ("In 1990-2000", "In nineteen ninety to two thousand"),
    ("January 2024", "January twenty twenty-four"),
    ("March 3, 2021", "March third, twenty twenty-one"),
    ("2024-01-15", "January fifteenth, twenty twenty-four"),
    ("12/25/2024", "December twenty-fifth, twenty twenty-four"),
)
def test_years_and_dates(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("3:30", "three thirty"),
    ("10:05", "ten oh five"),
    ("7:00", "seven o'clock"),
    ("14:00", "fourteen hundred"),
    ("3:30 pm", "three thirty p m"),
    ("3:30PM", "three thirty p m"),
    ("7:00 am", "seven a m"),
    ("3pm", "three p m"),
    ("at 10 a.m., we", "at ten a m, we"),
    ("at 5 p.m.", "at five p m."),
    ("at 5 p.m. Then", "at five p m. Then"),
    ("10:05:30", "ten oh five and thirty seconds"),
    ("3:30-4:30", "three thirty to four thirty"),
    ("score 3:1", "score three:one"),
)
def test_times(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("$3.50", "three dollars and fifty cents"),
    ("$1", "one dollar"),
    ("$0.99", "ninety-nine cents"),
    ("$0.01", "one cent"),
    ("$1.01", "one dollar and one cent"),
    ("$3.5", "three dollars and fifty cents"),
    ("$3.00", "three dollars"),
    ("$1,000", "one thousand dollars"),
    ("$2.5 million", "two point five million dollars"),
    ("$2.5M", "two point five million dollars"),
    ("$3B", "three billion dollars"),
    ("$5k", "five thousand dollars"),
    ("-$5", "minus five dollars"),
    ("\u00a35", "five pounds"),
    ("\u00a31", "one pound"),
    ("\u00a32.01", "two pounds and one penny"),
    ("\u00a30.50", "fifty pence"),
    ("\u20ac20", "twenty euros"),
    ("\u20ac1", "one euro"),
    ("\u00a5100", "one hundred yen"),
    ("US$5", "US five dollars"),
    ("$ alone", "$ alone"),
)
def test_currency(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("R&D", "R and D"),
    ("salt & pepper", "salt and pepper"),
    ("2+2=4", "two plus two equals four"),
    ("x = y", "x equals y"),
    ("C++ code", "C++ code"),
    ("#1 hit", "number one hit"),
    ("#hashtag", "#hashtag"),
    ("20\u00b0C", "twenty degrees Celsius"),
    ("-5 \u00b0C", "minus five degrees Celsius"),
    ("98.6\u00b0F", "ninety-eight point six degrees Fahrenheit"),
    ("1\u00b0C", "one degree Celsius"),
    ("90\u00b0 angle", "ninety degrees angle"),
)
def test_symbols(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


@_cases(
    ("Caf\u00e9 na\u00efve \u00fcber", "Caf\u00e9 na\u00efve \u00fcber"),
    ("Wait\u2014what? Yes; no: maybe!", "Wait\u2014what? Yes; no: maybe!"),
    ("\u201cquoted\u201d it\u2019s", "\u201cquoted\u201d it\u2019s"),
    ("Hello, world.", "Hello, world."),
)
def test_other_text_passes_through(raw: str, expected: str) -> None:
    assert normalize(raw).text == expected


def test_sentence_example_has_only_final_period() -> None:
    result = normalize("Dr. Smith paid $3.50 on Jan. 5, 2024.")
    assert result.text == (
        "Doctor Smith paid three dollars and fifty cents on January fifth, twenty twenty-four."
    )
    assert result.text.count(".") == 1
    assert result.text.endswith(".")


def test_provenance_of_literal_words() -> None:
    source = "Hello <b>brave</b> world"
    result = normalize(source)
    _check_provenance(result)
    for word in ("Hello", "brave", "world"):
        start = result.text.index(word)
        span = result.source_span(start, start + len(word))
        assert source[span[0] : span[1]] == word
        assert result.starts[start : start + len(word)] == tuple(range(span[0], span[1]))


def test_provenance_of_replaced_token() -> None:
    source = "It costs $3.50 today."
    result = normalize(source)
    _check_provenance(result)
    words = "three dollars and fifty cents"
    start = result.text.index(words)
    span = result.source_span(start, start + len(words))
    assert source[span[0] : span[1]] == "$3.50"
    # Every character of the replacement points at the whole token.
    assert set(result.starts[start : start + len(words)]) == {span[0]}
    assert set(result.ends[start : start + len(words)]) == {span[1]}
    # Part of a replacement still maps to the whole token.
    assert result.source_span(start, start + 5) == span


def test_provenance_skips_deleted_markup() -> None:
    source = "**Hi** [there](https://x.com)"
    result = normalize(source)
    assert result.text == "Hi there"
    _check_provenance(result)
    assert source[slice(*result.source_span(0, 2))] == "Hi"
    assert source[slice(*result.source_span(3, 8))] == "there"


def test_source_span_of_empty_range() -> None:
    result = normalize("ab cd")
    assert result.source_span(3, 3) == (3, 3)
    assert result.source_span(2, 1) == (2, 2)
    assert result.source_span(99, 120) == (5, 5)
    assert normalize("").source_span(0, 0) == (0, 0)


def test_whole_text_span_covers_source() -> None:
    source = "  Dr. Who paid \u00a312 at 3pm.  "
    result = normalize(source)
    _check_provenance(result)
    assert result.source_span(0, len(result.text)) == (2, len(source) - 2)


def test_starts_are_monotonic() -> None:
    result = normalize("# Head\n\nMr. X has 3/4 of $2.5M, i.e. <i>lots</i> &amp; more (50%).")
    _check_provenance(result)
    assert list(result.starts) == sorted(result.starts)


def test_random_text_is_fast_and_safe() -> None:
    rng = random.Random(1234)
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        "          .,!?;:-_*#`<>/[]()&$%@=+'\"\n\t\u00b0\u00a3\u20ac\u00a5\u2212\u00e9"
    )
    pieces = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(5000)]
    pieces += ["<b>", "</p>", "**", "[x](y)", "&amp;", "$3.50", "Dr.", "1,234", "3:30", "<!--"]
    rng.shuffle(pieces)
    source = "".join(pieces)[:20_000]
    assert len(source) == 20_000
    result = normalize(source)
    _check_provenance(result)
    assert "  " not in result.text
    assert result.text == result.text.strip()


@pytest.mark.parametrize(
    "source",
    [
        "<!--" * 5000,
        "<a" * 10_000,
        "[" * 20_000,
        "a" * 20_000,
        "1" * 20_000,
        "1," * 10_000,
        "_" * 20_000,
        "a@" * 10_000,
        "-1" * 10_000,
        "1." * 10_000,
        "$" + "9" * 5000,
        "9" * 5000 + "th",
    ],
)
def test_pathological_inputs_finish(source: str) -> None:
    _check_provenance(normalize(source))

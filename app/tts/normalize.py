"""English text normalisation ahead of grapheme-to-phoneme conversion.

`normalize` turns raw English input (plain text, light Markdown or HTML) into
text that espeak-ng pronounces correctly:

* markup is removed: HTML/XML tags and comments, Markdown emphasis and code
  markers, headings, bullets, horizontal rules and links (the link text stays);
  HTML entities are decoded;
* numbers are spelled out: integers, decimals, negatives, ordinals, years,
  decades, percentages, ranges, fractions, clock times, dates, temperatures,
  common units and currency amounts;
* common abbreviations are expanded without their period, so that a sentence
  splitter running later does not see a false sentence end;
* whitespace is collapsed, and a paragraph break becomes a sentence break.

Bare URLs and e-mail addresses are left untouched.

Every character of the result remembers the span of the input it came from
(`NormalizedText.starts` / `ends`), so positions found in the normalised text
(word timings, character spans) can be reported against the caller's text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from num2words import num2words

__all__ = ["NormalizedText", "normalize"]


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """Speakable text plus, for each of its characters, the span of the source text it came from."""

    text: str
    source: str
    starts: tuple[int, ...]  # starts[i]: start offset in `source` of the piece that made text[i]
    ends: tuple[int, ...]  # ends[i]: end offset (exclusive) of that piece

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """Span of `source` covering text[start:end] (min start, max end).

        An empty range gives a zero-width span at the nearest source position.
        """
        size = len(self.text)
        start = min(max(start, 0), size)
        end = min(max(end, start), size)
        if start < end:
            return min(self.starts[start:end]), max(self.ends[start:end])
        if start < size:
            return self.starts[start], self.starts[start]
        if size:
            return self.ends[-1], self.ends[-1]
        return (0, 0) if not self.source else (len(self.source), len(self.source))


def normalize(text: str) -> NormalizedText:
    """Return speakable text for `text`, with per-character provenance."""
    scanner = _Scanner(text)
    scanner.scan(0, len(text))
    return scanner.out.finish(text)


# --------------------------------------------------------------------------- words

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBREVIATIONS = {
    "Jan": "January",
    "Feb": "February",
    "Mar": "March",
    "Apr": "April",
    "Jun": "June",
    "Jul": "July",
    "Aug": "August",
    "Sep": "September",
    "Sept": "September",
    "Oct": "October",
    "Nov": "November",
    "Dec": "December",
}
# Longer digit strings are read digit by digit (card numbers, IDs, ...).
_MAX_CARDINAL_DIGITS = 15


def _cardinal(n: int) -> str:
    """Cardinal words without the commas num2words puts between groups (a comma is a pause)."""
    return str(num2words(n, lang="en")).replace(",", "")


def _ordinal(n: int) -> str:
    """Ordinal words ("twenty-first"), without group commas."""
    return str(num2words(n, lang="en", to="ordinal")).replace(",", "")


def _year(n: int) -> str:
    """Year reading ("nineteen ninety-nine")."""
    return str(num2words(n, lang="en", to="year")).replace(",", "")


def _digits(digits: str) -> str:
    """Digits one by one ("zero zero seven")."""
    return " ".join(_DIGIT_WORDS[int(c)] for c in digits)


def _integer(digits: str) -> str:
    """Words for an unsigned digit string; leading zeros and very long runs go digit by digit."""
    if len(digits) > _MAX_CARDINAL_DIGITS or (len(digits) > 1 and digits[0] == "0"):
        return _digits(digits)
    return _cardinal(int(digits))


def _decimal(digits: str, fraction: str | None) -> str:
    """Integer part as a number, then "point" and the fraction digits one by one."""
    words = _integer(digits)
    return f"{words} point {_digits(fraction)}" if fraction else words


def _is_year_shaped(digits: str) -> bool:
    """Four digits in the range that is usually read as a year."""
    return len(digits) == 4 and 1100 <= int(digits) <= 2099


def _year_or_number(digits: str) -> str:
    """A year reading for year-shaped digits, otherwise a plain number."""
    return _year(int(digits)) if _is_year_shaped(digits) else _integer(digits)


def _plural(words: str) -> str:
    """Pluralise the last word of a number ("nineteen ninety" -> "nineteen nineties")."""
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _date(month: int, day: int, year: str) -> str:
    """US reading of a full date ("January fifth, twenty twenty-four")."""
    return f"{_MONTHS[month - 1]} {_ordinal(day)}, {_year_or_number(year)}"


# --------------------------------------------------------------------------- output


class _Output:
    """Growing normalised text with one source span per character."""

    __slots__ = ("chars", "ends", "starts")

    def __init__(self) -> None:
        self.chars: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, text: str, start: int, end: int) -> None:
        """Append replacement text; every character maps to the whole source span."""
        for ch in text:
            self.chars.append(ch)
            self.starts.append(start)
            self.ends.append(end)

    def add_literal(self, source: str, start: int, end: int) -> None:
        """Append source characters unchanged, each mapping to itself."""
        for i in range(start, end):
            self.chars.append(source[i])
            self.starts.append(i)
            self.ends.append(i + 1)

    def last_char(self) -> str:
        """Last character written so far ("" at the start)."""
        return self.chars[-1] if self.chars else ""

    def tail(self, size: int = 48) -> str:
        """The last `size` characters, for rules that depend on the preceding words."""
        return "".join(self.chars[-size:])

    def trim_trailing_space(self) -> None:
        """Drop trailing whitespace, so punctuation can be attached to the last word."""
        while self.chars and self.chars[-1].isspace():
            self.chars.pop()
            self.starts.pop()
            self.ends.pop()

    def finish(self, source: str) -> NormalizedText:
        """Collapse whitespace runs to one space, strip the ends and freeze."""
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pending: tuple[int, int] | None = None
        for ch, start, end in zip(self.chars, self.starts, self.ends, strict=True):
            if ch.isspace():
                if pending is None and chars:
                    pending = (start, end)
                continue
            if pending is not None:
                chars.append(" ")
                starts.append(pending[0])
                ends.append(pending[1])
                pending = None
            chars.append(ch)
            starts.append(start)
            ends.append(end)
        return NormalizedText("".join(chars), source, tuple(starts), tuple(ends))


# --------------------------------------------------------------------------- patterns

_INT = r"[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+"
_MONTH_NAMES = "|".join(_MONTHS)
_AMPM = r"(?P<{0}>[AaPp])\.?[Mm]\.?(?![A-Za-z])"
_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"),
    "kg": ("kilogram", "kilograms"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "mg": ("milligram", "milligrams"),
    "ml": ("milliliter", "milliliters"),
    "lbs": ("pound", "pounds"),
    "lb": ("pound", "pounds"),
    "ms": ("millisecond", "milliseconds"),
    "GHz": ("gigahertz", "gigahertz"),
    "MHz": ("megahertz", "megahertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "Hz": ("hertz", "hertz"),
    "TB": ("terabyte", "terabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "MB": ("megabyte", "megabytes"),
    "KB": ("kilobyte", "kilobytes"),
}
_UNIT_ALTERNATION = "|".join(re.escape(unit) for unit in _UNITS)

# (name, pattern) in priority order: at a given position the first rule that matches wins.
# Every pattern is linear: repeated parts are bounded by a delimiter they cannot contain.
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("comment", r"<!--"),
    ("declaration", r"<![A-Za-z][^<>]*>|<\?[^<>]*\?>"),
    ("url", r"\b(?:https?://|ftp://|www\.)[^\s<>\"'\[\]()]*[^\s<>\"'\[\]().,;:!?]"),
    ("email", r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("tag", r"<(?P<tag_close>/?)(?P<tag_name>[A-Za-z][A-Za-z0-9:-]*)(?:\s[^<>]*)?/?>"),
    ("entity", r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"),
    ("link", r"!?\[(?P<link_text>[^\[\]\n]*)\]\([^()\s]*\)"),
    ("rule_line", r"^[ \t]*(?P<rule_char>[-*_=])(?:[ \t]*(?P=rule_char)){2,}[ \t]*$\n?"),
    (
        "line_item",
        r"^[ \t]*(?:(?P<item_bullet>#{1,6}|[-*+\u2022\u2023\u25e6\u25aa])"
        r"|(?P<item_number>[0-9]{1,3})[.)])[ \t]+(?P<item_body>[^\n]*)\n?",
    ),
    ("code", r"`{3,}(?:[\w+-]+(?=[ \t]*\r?\n))?|`+"),
    (
        "emphasis",
        r"(?<![\w*])\*{1,3}(?=[^\s*])|(?<=[^\s*])\*{1,3}(?![\w*])"
        r"|(?<![\w_])_{1,3}(?=[^\s_])|(?<=[^\s_])_{1,3}(?![\w_])|~~",
    ),
    ("paragraph", r"\n[^\S\n]*\n(?:[^\S\n]*\n)*"),
    ("title", r"\b(?P<title_word>Mrs|Mr|Ms|Dr|Prof|Mt)(?:\.|(?=[ \t]+[A-Z]))"),
    ("street", r"\bSt\."),
    (
        "month_abbr",
        r"\b(?P<month_word>Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)(?:\.|\b)(?=\s*[0-9])",
    ),
    ("number_abbr", r"\b[Nn]o\.(?=[ \t]*[0-9])"),
    ("abbr", r"\b(?P<abbr_word>[Ee]\.[Gg]|[Ii]\.[Ee]|[Ee]tc|[Aa]pprox|Sr|Jr)\.|\b[Vv]s\b\.?"),
    (
        "currency",
        r"(?P<cur_neg>(?<![\w.,])[-\u2212])?(?P<cur_sym>[$\u00a3\u20ac\u00a5])[ \t]?"
        rf"(?P<cur_int>{_INT})(?:\.(?P<cur_frac>[0-9]+))?"
        r"(?:(?P<cur_suffix>bn|[KkMmBT])(?![A-Za-z])"
        r"|[ \t]+(?P<cur_scale>(?i:thousand|million|billion|trillion))\b)?",
    ),
    (
        "iso_date",
        r"(?<![\w-])(?P<iso_y>[0-9]{4})-(?P<iso_m>0[1-9]|1[0-2])-(?P<iso_d>0[1-9]|[12][0-9]|3[01])"
        r"(?![\w-])",
    ),
    (
        "us_date",
        r"(?<![\w/])(?P<us_m>1[0-2]|0?[1-9])/(?P<us_d>3[01]|[12][0-9]|0?[1-9])/(?P<us_y>[0-9]{4})"
        r"(?![\w/])",
    ),
    (
        "clock",
        r"(?<![\w.:])(?P<clock_h>[01]?[0-9]|2[0-3]):(?P<clock_m>[0-5][0-9])"
        r"(?::(?P<clock_s>[0-5][0-9]))?(?![0-9:])(?:[ \t]?" + _AMPM.format("clock_ap") + ")?",
    ),
    ("hour", r"(?<![\w.:])(?P<hour_h>1[0-2]|0?[1-9])[ \t]?" + _AMPM.format("hour_ap")),
    ("version", r"(?<![\w.])[0-9]+(?:\.[0-9]+){2,}(?![0-9])"),
    ("digit_groups", r"(?<![\w-])[0-9]+(?:-[0-9]+){2,}(?![\w-])"),
    (
        "range",
        rf"(?<![\w.,-])(?P<range_a>{_INT})(?:\.(?P<range_af>[0-9]+))?"
        r"(?:-|[ \t]?[\u2013\u2014][ \t]?)"
        rf"(?P<range_b>{_INT})(?:\.(?P<range_bf>[0-9]+))?(?![\w-]|[.,][0-9])"
        r"(?:[ \t]?(?P<range_pct>%))?",
    ),
    (
        "fraction",
        r"(?<![\w/.])(?P<frac_a>[0-9]{1,3})/(?P<frac_b>[0-9]{1,3})(?![\w/]|[.,][0-9])",
    ),
    ("decade", r"(?<![\w.])'?(?P<decade_n>[0-9]{0,3}0)'?s(?![\w])"),
    ("ordinal", rf"(?<![\w.])(?P<ord_n>{_INT})(?:st|nd|rd|th|ST|ND|RD|TH)(?![A-Za-z0-9])"),
    (
        "number",
        r"(?P<num_neg>(?<![\w.,])[-\u2212])?"
        rf"(?:(?P<num_int>{_INT})(?:\.(?P<num_frac>[0-9]+))?|(?<![\w.])\.(?P<num_lead>[0-9]+))"
        r"(?:[ \t]?(?P<num_pct>%)"
        r"|[ \t]?(?P<num_deg>\u00b0)[ \t]?(?P<num_scale>[CFK](?![A-Za-z]))?"
        rf"|[ \t]?(?P<num_unit>{_UNIT_ALTERNATION})(?![A-Za-z0-9/]))?",
    ),
    ("number_sign", r"#(?=[0-9])"),
    ("plus", r"\+(?=[ \t]?[0-9])"),
    ("number_dash", r"(?<=[0-9])[-\u2013\u2014](?=[0-9])"),
    ("symbol", r"[&=]"),
)
_TOKEN_RE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _PATTERNS), re.M)

_TAG_ONLY_RE = re.compile(r"</?[A-Za-z][^<>]*>")
_AT_END_RE = re.compile(r"[\s\"')\]\u201d\u2019]*\Z")
_CAPITAL_NEXT_RE = re.compile(r"\s+[\"'(\u201c\u2018]?[A-Z]")
_ERA_RE = re.compile(r"[ \t]?(?:BCE?|AD|CE|B\.C\.|A\.D\.)(?![A-Za-z])")
_YEAR_CONTEXT_RE = re.compile(
    r"(?:\b(?i:in|since|by|from|until|till|through|to|of|year|circa|around|before|after"
    r"|during|early|late|mid|c\.|ca\.)"
    rf"|\b(?:AD|CE|{_MONTH_NAMES})(?:\s+[a-z]+(?:-[a-z]+)*,?)?)[\s-]+\Z"
)
_MONTH_BEFORE_RE = re.compile(rf"\b(?:{_MONTH_NAMES})\s+\Z")
_SENTENCE_END_CHARS = frozenset(".!?:;,")
_CLOSERS = frozenset("\"')]\u201d\u2019")
_BLOCK_TAGS = frozenset(
    {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "blockquote", "pre", "hr"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer", "title"}
)
_SPACE_TAGS = frozenset({"br", "td", "th"})
_SYMBOL_WORDS = {"&": "and", "=": "equals"}
_ENTITY_CHAR_WORDS = {"&": " and ", "\u00a0": " "}


# --------------------------------------------------------------------------- scanner


class _Scanner:
    """Single left-to-right pass over the source, dispatching each token to its rule."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.out = _Output()
        self._tail_start: int | None = None
        self._comment_close = -2  # index of the next "-->"; -1 once there is none left

    def scan(self, start: int, end: int) -> None:
        """Normalise source[start:end], appending to the output."""
        pos = start
        while pos < end:
            match = _TOKEN_RE.search(self.source, pos, end)
            if match is None:
                break
            self.out.add_literal(self.source, pos, match.start())
            if match.end() == match.start():  # no rule matches empty text; stay safe anyway
                self.out.add_literal(self.source, match.start(), match.start() + 1)
                pos = match.start() + 1
                continue
            name = match.lastgroup or ""
            structural = _STRUCTURAL_RULES.get(name)
            if structural is not None:
                pos = structural(match, self, end)
            else:
                self.emit(_RULES[name](match, self), match.start(), match.end())
                pos = match.end()
        self.out.add_literal(self.source, pos, end)

    def comment_end(self, start: int) -> int:
        """Position just after the next "-->" at or after `start`, or -1.

        The search result is cached, so many unclosed "<!--" stay linear.
        """
        if self._comment_close != -1 and self._comment_close < start:
            self._comment_close = self.source.find("-->", start)
        return self._comment_close + 3 if self._comment_close != -1 else -1

    def emit(self, text: str, start: int, end: int) -> None:
        """Write a replacement, keeping it apart from letters or digits glued to it ("mp3")."""
        if text[:1].isalnum() and self.out.last_char().isalnum():
            text = " " + text
        if text[-1:].isalnum() and end < len(self.source) and self.source[end].isalnum():
            text += " "
        self.out.add(text, start, end)

    def sentence_break(self, at: int) -> str:
        """Separator for a paragraph/block boundary: ". " unless a sentence already ended.

        `at` is the source position after the boundary; nothing is added at the end of the text.
        """
        self.out.trim_trailing_space()
        index = len(self.out.chars) - 1
        while index >= 0 and self.out.chars[index] in _CLOSERS:
            index -= 1
        if index < 0 or self.out.chars[index] in _SENTENCE_END_CHARS or self.at_end(at):
            return " "
        return ". "

    def at_end(self, at: int) -> bool:
        """Whether only whitespace and tags follow source position `at`."""
        if self._tail_start is None:
            self._tail_start = _trailing_markup_start(self.source)
        return at >= self._tail_start

    def ends_sentence(self, at: int, *, capital: bool) -> bool:
        """Whether a period at source position `at` - 1 also ends the sentence."""
        if self.at_end(at) or _AT_END_RE.match(self.source, at):
            return True
        return capital and _CAPITAL_NEXT_RE.match(self.source, at) is not None


def _trailing_markup_start(source: str) -> int:
    """Start of the whitespace-and-tags suffix of `source` (scanned once, backwards)."""
    index = len(source)
    while index > 0:
        if source[index - 1].isspace():
            index -= 1
            continue
        if source[index - 1] == ">":
            opening = source.rfind("<", 0, index - 1)
            if opening != -1 and _TAG_ONLY_RE.fullmatch(source, opening, index):
                index = opening
                continue
        break
    return index


_Rule = Callable[[re.Match[str], _Scanner], str]
_StructuralRule = Callable[[re.Match[str], _Scanner, int], int]


# --------------------------------------------------------------------------- markup rules


# Structural rules write their own output and return where scanning resumes (<= limit).


def _comment(m: re.Match[str], sc: _Scanner, limit: int) -> int:
    """An HTML comment is dropped up to its "-->"; an unclosed "<!--" is kept as text."""
    end = sc.comment_end(m.end())
    if end == -1 or end > limit:
        sc.out.add_literal(sc.source, m.start(), m.end())
        return m.end()
    return end


def _keep_literal(m: re.Match[str], sc: _Scanner, limit: int) -> int:
    """URLs and e-mail addresses pass through untouched (no number or symbol rules inside)."""
    sc.out.add_literal(sc.source, m.start(), m.end())
    return m.end()


def _link(m: re.Match[str], sc: _Scanner, limit: int) -> int:
    """A Markdown link or image is read as its text; the URL is dropped."""
    sc.scan(m.start("link_text"), m.end("link_text"))
    return m.end()


def _line_item(m: re.Match[str], sc: _Scanner, limit: int) -> int:
    """Heading or list line: drop the marker and make the line its own sentence."""
    body_start, body_end = m.start("item_body"), m.end("item_body")
    sc.out.add(sc.sentence_break(m.start()), m.start(), body_start)
    if m.group("item_number"):
        sc.emit(_integer(m.group("item_number")) + ". ", m.start("item_number"), body_start)
    sc.scan(body_start, body_end)
    if m.end() > body_end:  # the line's newline was consumed
        sc.out.add(sc.sentence_break(m.end()), body_end, m.end())
    return m.end()


def _delete(m: re.Match[str], sc: _Scanner) -> str:
    """Markup that is not spoken (declarations, emphasis and code markers)."""
    return ""


def _tag(m: re.Match[str], sc: _Scanner) -> str:
    """HTML/XML tag: block elements separate sentences, <br> separates words, others vanish."""
    name = m.group("tag_name").lower()
    if name in _BLOCK_TAGS:
        return sc.sentence_break(m.end())
    return " " if name in _SPACE_TAGS else ""


def _rule_line(m: re.Match[str], sc: _Scanner) -> str:
    """A horizontal rule ("---") separates paragraphs."""
    return sc.sentence_break(m.end())


def _paragraph(m: re.Match[str], sc: _Scanner) -> str:
    """A blank line ends the sentence, so the voice pauses between paragraphs."""
    return sc.sentence_break(m.end())


def _entity(m: re.Match[str], sc: _Scanner) -> str:
    """Decode an HTML entity; "&amp;" is then read as "and"."""
    return "".join(_ENTITY_CHAR_WORDS.get(ch, ch) for ch in html.unescape(m.group()))


# --------------------------------------------------------------------------- abbreviation rules

_TITLES = {
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Dr": "Doctor",
    "Prof": "Professor",
    "Mt": "Mount",
}
# expansion, and whether "Abbr. Capitalised" is taken as a sentence end
_ABBREVIATIONS = {
    "eg": ("for example", False),
    "ie": ("that is", False),
    "etc": ("et cetera", True),
    "approx": ("approximately", False),
    "vs": ("versus", False),
    "sr": ("Senior", True),
    "jr": ("Junior", True),
}


def _title(m: re.Match[str], sc: _Scanner) -> str:
    """Titles precede a name, so their period never ends a sentence."""
    return _TITLES[m.group("title_word")]


def _street(m: re.Match[str], sc: _Scanner) -> str:
    """ "St." is "Saint" before a name ("St. Louis"), "Street" otherwise ("Main St.")."""
    if _CAPITAL_NEXT_RE.match(sc.source, m.end()):
        return "Saint"
    return "Street." if sc.ends_sentence(m.end(), capital=False) else "Street"


def _month_abbr(m: re.Match[str], sc: _Scanner) -> str:
    """Abbreviated month before a day or year ("Jan. 5")."""
    return _MONTH_ABBREVIATIONS[m.group("month_word")]


def _number_abbr(m: re.Match[str], sc: _Scanner) -> str:
    """ "No." before a digit means "number"."""
    return "number"


def _abbreviation(m: re.Match[str], sc: _Scanner) -> str:
    """Expand the abbreviation; keep one period only if it also ends the sentence."""
    key = m.group().lower().replace(".", "")
    expansion, capital_ends = _ABBREVIATIONS[key]
    if m.group().endswith(".") and sc.ends_sentence(m.end(), capital=capital_ends):
        return expansion + "."
    return expansion


# --------------------------------------------------------------------------- number rules

_CURRENCIES = {  # singular, plural, minor singular, minor plural
    "$": ("dollar", "dollars", "cent", "cents"),
    "\u00a3": ("pound", "pounds", "penny", "pence"),
    "\u20ac": ("euro", "euros", "cent", "cents"),
    "\u00a5": ("yen", "yen", "", ""),
}
_SCALE_SUFFIXES = {
    "k": "thousand",
    "K": "thousand",
    "m": "million",
    "M": "million",
    "B": "billion",
    "bn": "billion",
    "T": "trillion",
}


def _currency(m: re.Match[str], sc: _Scanner) -> str:
    """Money: "$3.50" -> "three dollars and fifty cents", "$0.99" -> "ninety-nine cents".

    A scale ("2.5M") or more than two decimals makes the amount a decimal number of major units.
    """
    one, many, minor_one, minor_many = _CURRENCIES[m.group("cur_sym")]
    digits = m.group("cur_int").replace(",", "")
    fraction = m.group("cur_frac")
    sign = "minus " if m.group("cur_neg") else ""
    scale = m.group("cur_scale") or _SCALE_SUFFIXES.get(m.group("cur_suffix") or "")
    if scale:
        return f"{sign}{_decimal(digits, fraction)} {scale.lower()} {many}"
    if (fraction and (len(fraction) > 2 or not minor_one)) or len(digits) > _MAX_CARDINAL_DIGITS:
        return f"{sign}{_decimal(digits, fraction)} {many}"
    major = int(digits)
    minor = int(fraction.ljust(2, "0")) if fraction else 0
    parts: list[str] = []
    if major or not minor:
        parts.append(f"{_integer(digits)} {one if major == 1 else many}")
    if minor:
        parts.append(f"{_cardinal(minor)} {minor_one if minor == 1 else minor_many}")
    return sign + " and ".join(parts)


def _iso_date(m: re.Match[str], sc: _Scanner) -> str:
    """ISO date "2024-01-15" -> "January fifteenth, twenty twenty-four"."""
    return _date(int(m.group("iso_m")), int(m.group("iso_d")), m.group("iso_y"))


def _us_date(m: re.Match[str], sc: _Scanner) -> str:
    """US date "1/15/2024" -> "January fifteenth, twenty twenty-four"."""
    return _date(int(m.group("us_m")), int(m.group("us_d")), m.group("us_y"))


def _am_pm(m: re.Match[str], sc: _Scanner, group: str) -> str:
    """ " a m" / " p m" (spelled as letters), keeping a sentence-ending "p.m."."""
    letter = m.group(group)
    if not letter:
        return ""
    words = f" {letter.lower()} m"
    if m.group().endswith(".") and sc.ends_sentence(m.end(), capital=True):
        words += "."
    return words


def _clock(m: re.Match[str], sc: _Scanner) -> str:
    """Clock time: "3:30" -> "three thirty", "10:05" -> "ten oh five", "7:00" -> "seven o'clock"."""
    hour, minute = int(m.group("clock_h")), int(m.group("clock_m"))
    am_pm = _am_pm(m, sc, "clock_ap")
    words = _cardinal(hour)
    if minute == 0 and not am_pm:
        words += " hundred" if hour == 0 or hour > 12 else " o'clock"
    elif minute:
        words += f" oh {_cardinal(minute)}" if minute < 10 else f" {_cardinal(minute)}"
    if m.group("clock_s"):
        seconds = int(m.group("clock_s"))
        words += f" and {_cardinal(seconds)} {'second' if seconds == 1 else 'seconds'}"
    return words + am_pm


def _hour(m: re.Match[str], sc: _Scanner) -> str:
    """Whole hour with am/pm: "3pm" -> "three p m"."""
    return _cardinal(int(m.group("hour_h"))) + _am_pm(m, sc, "hour_ap")


def _version(m: re.Match[str], sc: _Scanner) -> str:
    """Dotted numbers ("1.2.3", IP addresses): each part, joined by "point"."""
    return " point ".join(_integer(part) for part in m.group().split("."))


def _digit_groups(m: re.Match[str], sc: _Scanner) -> str:
    """Hyphenated digit groups (phone numbers): digit by digit, a pause between groups."""
    return ", ".join(_digits(group) for group in m.group().split("-"))


def _range(m: re.Match[str], sc: _Scanner) -> str:
    """ "10-20" -> "ten to twenty"; two years stay years ("1990-2000")."""
    low, high = m.group("range_a").replace(",", ""), m.group("range_b").replace(",", "")
    low_frac, high_frac = m.group("range_af"), m.group("range_bf")
    if not (low_frac or high_frac) and _is_year_shaped(low) and _is_year_shaped(high):
        words = f"{_year(int(low))} to {_year(int(high))}"
    else:
        words = f"{_decimal(low, low_frac)} to {_decimal(high, high_frac)}"
    return words + (" percent" if m.group("range_pct") else "")


def _fraction(m: re.Match[str], sc: _Scanner) -> str:
    """ "1/2" -> "one half", "3/4" -> "three quarters", "2/3" -> "two thirds"."""
    top, bottom = int(m.group("frac_a")), int(m.group("frac_b"))
    if (top, bottom) == (24, 7):
        return "twenty-four seven"
    if bottom < 2:
        return f"{_cardinal(top)} over {_cardinal(bottom)}"
    if bottom == 2:
        denominator = "half"
    elif bottom == 4:
        denominator = "quarter"
    else:
        denominator = _ordinal(bottom)
    if top != 1:
        denominator = "halves" if bottom == 2 else denominator + "s"
    return f"{_cardinal(top)} {denominator}"


def _decade(m: re.Match[str], sc: _Scanner) -> str:
    """Decades: "1990s" -> "nineteen nineties", "'80s" -> "eighties"."""
    digits = m.group("decade_n")
    if digits == "00":
        return "two thousands"
    return _plural(_year_or_number(digits))


def _ordinal_number(m: re.Match[str], sc: _Scanner) -> str:
    """ "21st" -> "twenty-first"."""
    digits = m.group("ord_n").replace(",", "")
    if len(digits) > _MAX_CARDINAL_DIGITS:
        return _digits(digits)
    return _ordinal(int(digits))


def _reads_as_year(digits: str, m: re.Match[str], sc: _Scanner) -> bool:
    """A bare year-shaped number after "in", "since", a month, ... or before "BC"/"AD"."""
    if not _is_year_shaped(digits):
        return False
    if _ERA_RE.match(sc.source, m.end()):
        return True
    return _YEAR_CONTEXT_RE.search(sc.out.tail()) is not None


def _number(m: re.Match[str], sc: _Scanner) -> str:
    """Plain numbers, with sign, decimals, and a trailing %, degree sign or unit."""
    if m.group("num_lead"):
        words, singular = f"point {_digits(m.group('num_lead'))}", False
    else:
        digits, fraction = m.group("num_int").replace(",", ""), m.group("num_frac")
        bare = m.group() == digits  # no sign, separators, decimals or suffix
        special = _bare_number(digits, m, sc) if bare else None
        if special:
            return special
        words, singular = _decimal(digits, fraction), digits == "1" and not fraction
    if m.group("num_neg"):
        words = "minus " + words
    return words + _number_suffix(m, singular=singular)


def _bare_number(digits: str, m: re.Match[str], sc: _Scanner) -> str | None:
    """Context-dependent readings of a plain digit string: years and days of the month."""
    if _reads_as_year(digits, m, sc):
        return _year(int(digits))
    if len(digits) <= 2 and 1 <= int(digits) <= 31 and _MONTH_BEFORE_RE.search(sc.out.tail()):
        return _ordinal(int(digits))  # "January 5" -> "January fifth"
    return None


def _number_suffix(m: re.Match[str], *, singular: bool) -> str:
    """Words for what follows a number: "percent", "degrees Celsius", "kilograms"."""
    if m.group("num_pct"):
        return " percent"
    if m.group("num_deg"):
        scale = {"C": " Celsius", "F": " Fahrenheit", "K": " Kelvin"}.get(m.group("num_scale"), "")
        return (" degree" if singular else " degrees") + scale
    if m.group("num_unit"):
        one, many = _UNITS[m.group("num_unit")]
        return " " + (one if singular else many)
    return ""


def _number_sign(m: re.Match[str], sc: _Scanner) -> str:
    """ "#1" -> "number one"."""
    return "number"


def _plus(m: re.Match[str], sc: _Scanner) -> str:
    """ "+" before a number ("2+2", "+1 555") -> "plus"."""
    return "plus"


def _number_dash(m: re.Match[str], sc: _Scanner) -> str:
    """A dash left between two numbers ("3:30-4:30") is a range."""
    return "to"


def _symbol(m: re.Match[str], sc: _Scanner) -> str:
    """ "&" -> "and", "=" -> "equals"."""
    return _SYMBOL_WORDS[m.group()]


_STRUCTURAL_RULES: dict[str, _StructuralRule] = {
    "comment": _comment,
    "url": _keep_literal,
    "email": _keep_literal,
    "link": _link,
    "line_item": _line_item,
}
_RULES: dict[str, _Rule] = {
    "declaration": _delete,
    "tag": _tag,
    "entity": _entity,
    "rule_line": _rule_line,
    "code": _delete,
    "emphasis": _delete,
    "paragraph": _paragraph,
    "title": _title,
    "street": _street,
    "month_abbr": _month_abbr,
    "number_abbr": _number_abbr,
    "abbr": _abbreviation,
    "currency": _currency,
    "iso_date": _iso_date,
    "us_date": _us_date,
    "clock": _clock,
    "hour": _hour,
    "version": _version,
    "digit_groups": _digit_groups,
    "range": _range,
    "fraction": _fraction,
    "decade": _decade,
    "ordinal": _ordinal_number,
    "number": _number,
    "number_sign": _number_sign,
    "plus": _plus,
    "number_dash": _number_dash,
    "symbol": _symbol,
}
if set(_RULES) | set(_STRUCTURAL_RULES) != {name for name, _ in _PATTERNS}:  # pragma: no cover
    raise RuntimeError("every normalisation pattern needs exactly one rule")

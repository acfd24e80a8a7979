"""One run's settings, from the command line (``loadtest.cli``) or a test."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.texts import CORPUS

RESULTS_DIR = Path("loadtest/results")


def default_out_dir(now: dt.datetime | None = None) -> Path:
    """``loadtest/results/<UTC timestamp>``: one folder per run, sortable by name."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS_DIR / stamp


@dataclass(frozen=True, slots=True)
class LoadConfig:
    out: Path
    server: str | None = None
    """``http://HOST:PORT`` of a running server; ``None`` starts one."""
    duration_s: float = 120.0
    """The whole ramp, split evenly over the steps."""
    steps: tuple[int, ...] | None = None
    """Concurrent users per step; ``None``: one to the advertised capacity plus two."""
    word_share: float = 0.5
    """Fraction of streams fed word by word (like a language model) rather than at once."""
    word_interval_ms: float = 80.0
    voice: str | None = None
    """``None``: the server's default voice."""
    seed: int = 1
    raw: bool = True
    """Measure the raw engine loop before the ramp."""
    raw_texts: int = len(CORPUS)
    """Corpus texts whose segments make the raw loop's work. All of them by default, so that the
    raw loop runs the same mix of segments as the load (about a minute on 2 cores)."""
    raw_rounds: int = 1
    drain_timeout_s: float = 60.0
    """After the ramp, how long running streams may take to finish before they are cancelled."""
    texts: tuple[str, ...] = CORPUS

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.drain_timeout_s < 0:
            raise ValueError("the duration must be positive and the drain timeout not negative")
        if not 0.0 <= self.word_share <= 1.0:
            raise ValueError(f"the word share must be within 0 and 1, got {self.word_share}")
        if self.word_interval_ms < 0:
            raise ValueError("the word interval must not be negative")
        if self.steps is not None and (not self.steps or min(self.steps) < 1):
            raise ValueError("every step needs at least one user")
        if not self.texts or self.raw_texts < 1 or self.raw_rounds < 1:
            raise ValueError("need texts, and at least one raw text and one raw round")

    def to_json(self) -> dict[str, Any]:
        """The settings as the report records them (the texts by count: they are the corpus)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["out"] = str(self.out)
        data["steps"] = list(self.steps) if self.steps is not None else None
        data["texts"] = len(self.texts)
        return data

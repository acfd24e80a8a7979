"""What a load test observes, as plain frozen records: the statistics and the report are pure
functions of these, so they can be tested without a server.

Times are seconds since the ramp started (the first step's start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["complete", "error", "cancelled", "refused"]
"""``refused``: every ``start`` was answered ``busy`` until the ramp ended (never opened)."""
Mode = Literal["whole", "words"]
"""``whole``: the text sent at once; ``words``: word by word, as a language model writes."""


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One stream a virtual user ran (all its ``start`` attempts, refused ones included)."""

    user: int
    step: int
    """Index of the step during which its first ``start`` was sent."""
    name: str
    """The name of its last attempt (each attempt has its own)."""
    mode: Mode
    text_index: int
    started_at: float
    ended_at: float
    outcome: Outcome
    refusal_times: tuple[float, ...] = ()
    """When each ``busy`` refusal arrived."""
    client_ttfa_ms: float | None = None
    """From sending the first text of the admitted attempt to receiving its first audio frame."""
    server_ttfa_ms: float | None = None
    """``done.ttfa_ms``."""
    underruns: int = 0
    """Underruns of the modelled real-time player after it first started."""
    start_hold_ms: float | None = None
    audio_seconds: float = 0.0
    error: str | None = None

    @property
    def refusals(self) -> int:
        return len(self.refusal_times)

    @property
    def admitted(self) -> bool:
        return self.outcome != "refused"


@dataclass(frozen=True, slots=True)
class StatsSample:
    """One poll of ``GET /v1/stats``; a field the server does not report is ``None``."""

    t: float
    audio_seconds_total: float | None = None
    segments_total: int | None = None
    gen_seconds_total: float | None = None
    capacity_streams: int | None = None
    generating_streams: int | None = None
    refused_total: int | None = None
    throughput_audio_per_s: float | None = None
    rss_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class StepWindow:
    """One step of the ramp: ``users`` concurrent users from ``start`` to ``end``."""

    index: int
    users: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class RawResult:
    """The raw engine loop: the plan's sessions saturated with the corpus's segments, no server
    in between. The ceiling the server's throughput is compared with."""

    plan: str
    throughput_audio_per_s: float | None
    items: int = 0
    texts: int = 0
    rounds: int = 0
    seconds: float = 0.0
    error: str | None = None
    """Why there is no figure (the loop could not run here)."""
    passes: tuple[float, ...] = ()
    """Each measurement's audio s/s (before the ramp, and after it), when there were several;
    ``throughput_audio_per_s`` is their mean."""

    @classmethod
    def mean_of(cls, before: RawResult, after: RawResult) -> RawResult:
        """One baseline from the loop run before and after the ramp: a shared machine's speed
        drifts over minutes, and a single run on either side can flatter or sink the ratio."""
        figures = tuple(
            result.throughput_audio_per_s
            for result in (before, after)
            if result.throughput_audio_per_s is not None
        )
        if not figures:
            return before
        return cls(
            before.plan,
            sum(figures) / len(figures),
            before.items,
            before.texts,
            before.rounds,
            before.seconds + after.seconds,
            before.error or after.error,
            figures,
        )


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    """A user could not open (or lost) its connection outside any stream."""

    t: float
    user: int
    error: str

"""Per-step figures and the run's summary: pure functions of the records.

Rules (also stated in the report):

* A stream belongs to the step in which its first ``start`` was sent; refusals count in the step
  in which they arrived.
* A step's throughput is the server's generated audio over the step: the difference of
  ``generated.audio_seconds_total`` between the first and the last ``/v1/stats`` sample taken
  inside the step, divided by the time between them. The whole step counts, the time its new
  users spend on their first segments included. Without those totals it is the audio the clients
  received during the step per second (``delivered``).
* Saturation throughput is the highest step throughput; its ratio to the raw engine loop says how
  much of the engines' capacity the server turns into streamed audio.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from loadtest.meter import AudioMeter
from loadtest.records import StatsSample, StepWindow, StreamRecord

ThroughputSource = Literal["server", "delivered"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100) with linear interpolation between the closest ranks
    (numpy's default); ``None`` for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0 and 100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class StepRow:
    """One line of the report's table."""

    index: int
    users: int
    start_s: float
    end_s: float
    started: int
    """Streams admitted (opened) by the server."""
    completed: int
    failed: int
    cancelled: int
    gave_up: int
    """Streams refused until the ramp ended."""
    refusals: int
    server_refusals: int | None
    client_ttfa_p50_ms: float | None
    client_ttfa_p95_ms: float | None
    client_ttfa_p99_ms: float | None
    server_ttfa_p50_ms: float | None
    underruns: int
    streams_with_underruns: int
    audio_seconds: float
    """Audio of the step's completed streams."""
    throughput_audio_per_s: float | None
    throughput_source: ThroughputSource
    server_throughput_audio_per_s: float | None
    delivered_audio_per_s: float | None
    ratio_to_raw: float | None
    mean_generating_streams: float | None
    peak_rss_mb: float | None


def _in_window(samples: Sequence[StatsSample], window: StepWindow) -> list[StatsSample]:
    return [sample for sample in samples if window.start <= sample.t <= window.end]


def _delta_rate(
    samples: Sequence[StatsSample], value: Callable[[StatsSample], float | None]
) -> tuple[float, float] | None:
    """(change of ``value``, seconds) between the first and last sample that report it."""
    known = [(sample.t, found) for sample in samples if (found := value(sample)) is not None]
    if len(known) < 2 or known[-1][0] <= known[0][0]:
        return None
    return known[-1][1] - known[0][1], known[-1][0] - known[0][0]


def server_throughput(samples: Sequence[StatsSample], window: StepWindow) -> float | None:
    """Generated audio seconds per wall second over the step (see the module's rules)."""
    delta = _delta_rate(_in_window(samples, window), lambda sample: sample.audio_seconds_total)
    return None if delta is None else delta[0] / delta[1]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def step_row(
    window: StepWindow,
    streams: Sequence[StreamRecord],
    samples: Sequence[StatsSample],
    meter: AudioMeter,
    raw_throughput: float | None,
) -> StepRow:
    own = [stream for stream in streams if stream.step == window.index]
    admitted = [stream for stream in own if stream.admitted]
    client_ttfa = [s.client_ttfa_ms for s in admitted if s.client_ttfa_ms is not None]
    server_ttfa = [s.server_ttfa_ms for s in admitted if s.server_ttfa_ms is not None]
    inside = _in_window(samples, window)
    refused = _delta_rate(inside, lambda sample: sample.refused_total)
    server = server_throughput(samples, window)
    delivered = meter.rate(window.start, window.end)
    throughput = server if server is not None else delivered
    generating = [float(s.generating_streams) for s in inside if s.generating_streams is not None]
    rss = [s.rss_bytes for s in inside if s.rss_bytes is not None]
    return StepRow(
        index=window.index,
        users=window.users,
        start_s=window.start,
        end_s=window.end,
        started=len(admitted),
        completed=sum(s.outcome == "complete" for s in own),
        failed=sum(s.outcome == "error" for s in own),
        cancelled=sum(s.outcome == "cancelled" for s in own),
        gave_up=sum(s.outcome == "refused" for s in own),
        refusals=sum(window.contains(t) for s in streams for t in s.refusal_times),
        server_refusals=None if refused is None else round(refused[0]),
        client_ttfa_p50_ms=percentile(client_ttfa, 50),
        client_ttfa_p95_ms=percentile(client_ttfa, 95),
        client_ttfa_p99_ms=percentile(client_ttfa, 99),
        server_ttfa_p50_ms=percentile(server_ttfa, 50),
        underruns=sum(s.underruns for s in admitted),
        streams_with_underruns=sum(s.underruns > 0 for s in admitted),
        audio_seconds=sum(s.audio_seconds for s in own if s.outcome == "complete"),
        throughput_audio_per_s=throughput,
        throughput_source="server" if server is not None else "delivered",
        server_throughput_audio_per_s=server,
        delivered_audio_per_s=delivered,
        ratio_to_raw=_ratio(throughput, raw_throughput),
        mean_generating_streams=_mean(generating),
        peak_rss_mb=max(rss) / 2**20 if rss else None,
    )


def step_rows(
    windows: Sequence[StepWindow],
    streams: Sequence[StreamRecord],
    samples: Sequence[StatsSample],
    meter: AudioMeter,
    raw_throughput: float | None,
) -> list[StepRow]:
    return [step_row(window, streams, samples, meter, raw_throughput) for window in windows]


@dataclass(frozen=True, slots=True)
class Summary:
    """The run in a few numbers."""

    capacity: int | None
    """The server's advertised ``max_active_streams``."""
    highest_clean_users: int | None
    """The most users of a step that completed streams without a single underrun."""
    beyond_capacity: tuple[tuple[int, int], ...]
    """(users, refusals) of each step with more users than the capacity."""
    beyond_capacity_refused: bool | None
    """Every step beyond the capacity got refusals; ``None`` when there is no such step."""
    saturation_throughput: float | None
    saturation_users: int | None
    raw_throughput: float | None
    saturation_ratio: float | None
    """Saturation throughput / raw engine loop throughput."""
    streams: int
    completed: int
    failed: int


def summarize(
    rows: Sequence[StepRow],
    streams: Sequence[StreamRecord],
    capacity: int | None,
    raw_throughput: float | None,
) -> Summary:
    clean = [row.users for row in rows if row.completed and row.underruns == 0]
    beyond = tuple(
        (row.users, row.refusals) for row in rows if capacity is not None and row.users > capacity
    )
    measured = [row for row in rows if row.throughput_audio_per_s is not None]
    best = max(measured, key=lambda row: row.throughput_audio_per_s or 0.0, default=None)
    saturation = None if best is None else best.throughput_audio_per_s
    return Summary(
        capacity=capacity,
        highest_clean_users=max(clean, default=None),
        beyond_capacity=beyond,
        beyond_capacity_refused=all(count > 0 for _, count in beyond) if beyond else None,
        saturation_throughput=saturation,
        saturation_users=None if best is None else best.users,
        raw_throughput=raw_throughput,
        saturation_ratio=_ratio(saturation, raw_throughput),
        streams=sum(stream.admitted for stream in streams),
        completed=sum(stream.outcome == "complete" for stream in streams),
        failed=sum(stream.outcome == "error" for stream in streams),
    )

"""The run's report: ``report.json`` (everything, for later analysis) and ``report.md`` (the
per-step table and the summary, for people). Building and rendering are pure; only
``write_report`` touches the disk.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.meter import AudioMeter
from loadtest.records import ConnectFailure, RawResult, StatsSample, StepWindow, StreamRecord
from loadtest.stats import StepRow, Summary, step_rows, summarize

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
RULES = (
    "A stream counts in the step in which its first `start` was sent; refusals count in the step "
    "in which they arrived. Throughput is the server's generated audio "
    "(`generated.audio_seconds_total`) between the first and the last `/v1/stats` sample inside "
    "the step, per wall second, over the whole step (its new users' first segments included); "
    "marked `*` where the server does not report it and the audio the clients received per "
    "second is shown instead. Underruns are those of the modelled real-time player (120 ms "
    "pre-roll, adaptive start) after it first started. The raw engine loop is the same plan's "
    "sessions saturated with the corpus's segments in this process, with the server idle, before "
    "and after the ramp; the ratio uses the mean of the two."
)


@dataclass(frozen=True, slots=True)
class LoadReport:
    created: str
    """UTC, ISO 8601."""
    config: dict[str, Any]
    machine: dict[str, Any]
    server: dict[str, Any]
    """Its address, whether it was spawned, ``/ready``, the WebSocket limits."""
    raw: RawResult | None
    steps: tuple[StepRow, ...]
    summary: Summary
    streams: tuple[StreamRecord, ...]
    samples: tuple[StatsSample, ...]
    connect_failures: tuple[ConnectFailure, ...] = ()
    stats_failures: int = 0


def build_report(
    *,
    created: str,
    config: dict[str, Any],
    machine: dict[str, Any],
    server: dict[str, Any],
    capacity: int | None,
    raw: RawResult | None,
    windows: Sequence[StepWindow],
    streams: Sequence[StreamRecord],
    samples: Sequence[StatsSample],
    meter: AudioMeter,
    connect_failures: Sequence[ConnectFailure] = (),
    stats_failures: int = 0,
) -> LoadReport:
    raw_throughput = raw.throughput_audio_per_s if raw is not None else None
    rows = step_rows(windows, streams, samples, meter, raw_throughput)
    ordered = sorted(streams, key=lambda stream: (stream.started_at, stream.user))
    return LoadReport(
        created=created,
        config=config,
        machine=machine,
        server=server,
        raw=raw,
        steps=tuple(rows),
        summary=summarize(rows, streams, capacity, raw_throughput),
        streams=tuple(ordered),
        samples=tuple(samples),
        connect_failures=tuple(connect_failures),
        stats_failures=stats_failures,
    )


def report_json(report: LoadReport) -> dict[str, Any]:
    return dataclasses.asdict(report)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: Sequence[StepRow]) -> list[str]:
    lines = [
        "| users | started | completed | failed | refusals | client TTFA p50 / p95 / p99 ms "
        "| server TTFA p50 ms | underruns (streams) | throughput audio s/s | / raw "
        "| generating (mean) | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ttfa = " / ".join(
            _number(value)
            for value in (row.client_ttfa_p50_ms, row.client_ttfa_p95_ms, row.client_ttfa_p99_ms)
        )
        mark = "*" if row.throughput_source == "delivered" and row.throughput_audio_per_s else ""
        lines.append(
            f"| {row.users} | {row.started} | {row.completed} | {row.failed} | {row.refusals} "
            f"| {ttfa} | {_number(row.server_ttfa_p50_ms)} "
            f"| {row.underruns} ({row.streams_with_underruns}) "
            f"| {_number(row.throughput_audio_per_s, 2)}{mark} | {_number(row.ratio_to_raw, 2)} "
            f"| {_number(row.mean_generating_streams, 1)} | {_number(row.peak_rss_mb)} |"
        )
    return lines


def _capacity_line(summary: Summary) -> str:
    if summary.capacity is None:
        return "- Advertised capacity: not advertised (no `max_active_streams` in `limits`)"
    return f"- Advertised capacity: {summary.capacity} streams (`max_active_streams`)"


def _beyond_line(summary: Summary) -> str:
    if summary.capacity is None:
        return "- Refusals beyond capacity: unknown (no advertised capacity)"
    if not summary.beyond_capacity:
        return "- Refusals beyond capacity: no step went beyond the capacity"
    steps = ", ".join(f"{users} users: {count}" for users, count in summary.beyond_capacity)
    verdict = "yes, every one" if summary.beyond_capacity_refused else "no, not every one"
    return f"- Steps beyond capacity got refusals: {verdict} ({steps})"


def _throughput_line(summary: Summary, raw: RawResult | None) -> str:
    if summary.saturation_throughput is None:
        return "- Saturation throughput: not measured"
    line = (
        f"- Saturation throughput: {summary.saturation_throughput:.2f} audio s/s "
        f"(at {summary.saturation_users} users)"
    )
    if summary.raw_throughput is None:
        return line + "; raw engine loop: not measured"
    ratio = _number(summary.saturation_ratio, 2)
    passes = ""
    if raw is not None and len(raw.passes) > 1:
        passes = " (mean of " + " before and ".join(f"{p:.2f}" for p in raw.passes)
        passes += " after the ramp)"
    return (
        f"{line}; raw engine loop: {summary.raw_throughput:.2f} audio s/s{passes}; "
        f"saturation / raw = {ratio}"
    )


def summary_lines(report: LoadReport) -> list[str]:
    summary = report.summary
    clean = summary.highest_clean_users
    lines = [
        _capacity_line(summary),
        "- Highest step without underruns: " + (f"{clean} users" if clean is not None else "none"),
        _beyond_line(summary),
        _throughput_line(summary, report.raw),
        f"- Streams: {summary.streams} started, {summary.completed} completed, "
        f"{summary.failed} failed",
    ]
    if report.raw is not None and report.raw.error:
        lines.append(f"- Raw engine loop failed: {report.raw.error}")
    if report.connect_failures:
        lines.append(f"- Connection failures outside streams: {len(report.connect_failures)}")
    errors = sorted({stream.error for stream in report.streams if stream.error})
    lines += [f"- Stream error: {error}" for error in errors[:5]]
    return lines


def _setup_line(report: LoadReport) -> str:
    config, server, machine = report.config, report.server, report.machine
    spawned = "spawned here" if server.get("spawned") else "given"
    steps = ",".join(str(row.users) for row in report.steps)
    return (
        f"Server {server.get('base')} ({spawned}), plan {server.get('plan') or 'unknown'}; "
        f"{machine.get('cpu', 'unknown CPU')}, {machine.get('cores', '?')} cores. "
        f"Ramp {config.get('duration_s')} s over steps {steps}; "
        f"{config.get('word_share')} of the streams word by word "
        f"(one word every {config.get('word_interval_ms')} ms); seed {config.get('seed')}."
    )


def render_markdown(report: LoadReport, plots: Sequence[str] = ()) -> str:
    lines = [
        "# Load test",
        "",
        f"{report.created}. {_setup_line(report)}",
        "",
        "## Summary",
        "",
        *summary_lines(report),
        "",
        "## Steps",
        "",
        *_table(report.steps),
        "",
        RULES,
        "",
    ]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in plots]
        lines.append("")
    return "\n".join(lines)


def write_report(report: LoadReport, out_dir: Path, plots: Sequence[str] = ()) -> list[Path]:
    """Blocking: ``report.json`` and ``report.md`` in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / JSON_NAME
    json_path.write_text(json.dumps(report_json(report), indent=2) + "\n")
    markdown_path = out_dir / MARKDOWN_NAME
    markdown_path.write_text(render_markdown(report, plots))
    return [json_path, markdown_path]

"""The report's PNG plots, drawn with matplotlib's object API on the Agg canvas (no pyplot: no
global state, no display, safe on a worker thread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.report import LoadReport
from loadtest.stats import StepRow

TTFA = "ttfa.png"
THROUGHPUT = "throughput.png"
MEMORY = "rss.png"
TROUBLE = "underruns_refusals.png"
PLOTS = (TTFA, THROUGHPUT, MEMORY, TROUBLE)


def _save(path: Path, title: str, draw: Callable[[Axes], None]) -> Path:
    figure = Figure(figsize=(7, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    draw(axes)
    figure.savefig(path, format="png")
    return path


def _users(rows: Sequence[StepRow]) -> list[int]:
    return [row.users for row in rows]


def _series(
    rows: Sequence[StepRow], value: Callable[[StepRow], float | None]
) -> tuple[list[int], list[float]]:
    """(users, values) of the steps that have a value."""
    pairs = [(row.users, found) for row in rows if (found := value(row)) is not None]
    return [users for users, _ in pairs], [found for _, found in pairs]


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def _ttfa(rows: Sequence[StepRow]) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        curves: list[tuple[str, Callable[[StepRow], float | None]]] = [
            ("client p50", lambda row: row.client_ttfa_p50_ms),
            ("client p95", lambda row: row.client_ttfa_p95_ms),
            ("client p99", lambda row: row.client_ttfa_p99_ms),
            ("server p50", lambda row: row.server_ttfa_p50_ms),
        ]
        drawn = False
        for label, value in curves:
            users, values = _series(rows, value)
            if users:
                axes.plot(users, values, marker="o", label=label)
                drawn = True
        if not drawn:
            _no_data(axes)
            return
        axes.set_xticks(_users(rows))
        axes.set_xlabel("concurrent users")
        axes.set_ylabel("time to first audio (ms)")
        axes.set_ylim(bottom=0)
        axes.legend()

    return draw


def _throughput(rows: Sequence[StepRow], raw: float | None) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        users, values = _series(rows, lambda row: row.server_throughput_audio_per_s)
        delivered_users, delivered = _series(rows, lambda row: row.delivered_audio_per_s)
        if not users and not delivered_users and raw is None:
            _no_data(axes)
            return
        if users:
            axes.plot(users, values, marker="o", label="generated (server stats)")
        if delivered_users:
            axes.plot(delivered_users, delivered, marker=".", ls=":", label="delivered to clients")
        if raw is not None:
            axes.axhline(raw, color="black", ls="--", label=f"raw engine loop ({raw:.2f})")
        axes.set_xticks(_users(rows))
        axes.set_xlabel("concurrent users")
        axes.set_ylabel("audio seconds per second")
        axes.set_ylim(bottom=0)
        axes.legend()

    return draw


def _memory(report: LoadReport) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        points = [(s.t, s.rss_bytes / 2**20) for s in report.samples if s.rss_bytes is not None]
        if not points:
            _no_data(axes)
            return
        axes.plot([t for t, _ in points], [mb for _, mb in points])
        for row in report.steps:
            axes.axvline(row.start_s, color="grey", lw=0.8, ls=":")
            axes.annotate(
                f"{row.users} users", (row.start_s, 0), xycoords=("data", "axes fraction")
            )
        axes.set_xlabel("seconds since the ramp started")
        axes.set_ylabel("server RSS (MB)")

    return draw


def _trouble(rows: Sequence[StepRow]) -> Callable[[Axes], None]:
    def draw(axes: Axes) -> None:
        if not rows:
            _no_data(axes)
            return
        users = _users(rows)
        width = 0.35
        axes.bar(
            [u - width / 2 for u in users], [r.underruns for r in rows], width, label="underruns"
        )
        axes.bar(
            [u + width / 2 for u in users], [r.refusals for r in rows], width, label="refusals"
        )
        axes.set_xticks(users)
        axes.set_xlabel("concurrent users")
        axes.set_ylabel("count per step")
        axes.legend()

    return draw


def write_plots(report: LoadReport, out_dir: Path) -> list[Path]:
    """Blocking: the four PNGs in ``out_dir``; returns their paths (in ``PLOTS`` order)."""
    raw = report.raw.throughput_audio_per_s if report.raw is not None else None
    rows = report.steps
    return [
        _save(out_dir / TTFA, "Time to first audio", _ttfa(rows)),
        _save(out_dir / THROUGHPUT, "Throughput", _throughput(rows, raw)),
        _save(out_dir / MEMORY, "Server memory", _memory(report)),
        _save(out_dir / TROUBLE, "Underruns and refusals", _trouble(rows)),
    ]

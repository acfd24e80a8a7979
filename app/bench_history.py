"""The benchmark history: every run's headline figure with its environment fingerprint, in a
small SQLite file in the cache directory (``benchmarks.sqlite``), judged by ``app.regression``
against the earlier runs of the same benchmark in the same environment.

Blocking (SQLite): call it from a worker thread in the server.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.regression import Verdict, judge

HISTORY_FILE = "benchmarks.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    benchmark TEXT NOT NULL,
    metric TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    value REAL NOT NULL,
    baseline REAL,
    tolerance REAL,
    regression INTEGER NOT NULL,
    environment TEXT NOT NULL,
    details TEXT NOT NULL
)
"""


def fingerprint(environment: Mapping[str, Any]) -> str:
    """Short SHA-256 of the environment's canonical JSON: runs compare only within one."""
    canonical = json.dumps(dict(environment), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RecordedRun:
    id: int
    at: float
    benchmark: str
    metric: str
    fingerprint: str
    verdict: Verdict
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        verdict = self.verdict
        return {
            "id": self.id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "benchmark": self.benchmark,
            "metric": self.metric,
            "fingerprint": self.fingerprint,
            "value": verdict.value,
            "baseline": verdict.baseline,
            "tolerance": verdict.tolerance,
            "change": None if verdict.change is None else round(verdict.change, 4),
            "regression": verdict.regression,
            "details": self.details,
        }


class BenchHistory:
    """Runs of every benchmark, oldest first within one benchmark, metric and environment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
            db.execute(_SCHEMA)
            yield db

    def record(
        self,
        benchmark: str,
        metric: str,
        value: float,
        environment: Mapping[str, Any],
        details: Mapping[str, Any] | None = None,
    ) -> RecordedRun:
        """Judge ``value`` against the history, then store it; returns the stored run."""
        key = fingerprint(environment)
        at = time.time()
        with self._db() as db:
            earlier = [
                row[0]
                for row in db.execute(
                    "SELECT value FROM runs WHERE benchmark = ? AND metric = ? AND fingerprint = ?"
                    " ORDER BY id",
                    (benchmark, metric, key),
                )
            ]
            verdict = judge(value, earlier)
            cursor = db.execute(
                "INSERT INTO runs (at, benchmark, metric, fingerprint, value, baseline, tolerance,"
                " regression, environment, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at,
                    benchmark,
                    metric,
                    key,
                    value,
                    verdict.baseline,
                    verdict.tolerance,
                    int(verdict.regression),
                    json.dumps(dict(environment), sort_keys=True, default=str),
                    json.dumps(dict(details or {}), sort_keys=True, default=str),
                ),
            )
            run_id = cursor.lastrowid
        assert run_id is not None
        return RecordedRun(run_id, at, benchmark, metric, key, verdict, dict(details or {}))

    def latest(
        self, benchmark: str, metric: str, environment: Mapping[str, Any]
    ) -> RecordedRun | None:
        """The newest run of ``benchmark`` in ``environment``, if any."""
        if not self.path.exists():
            return None
        with self._db() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE benchmark = ? AND metric = ?"
                " AND fingerprint = ? ORDER BY id DESC LIMIT 1",
                (benchmark, metric, fingerprint(environment)),
            ).fetchone()
        return None if row is None else _run(row)

    def recent(self, limit: int = 50, *, regressions_only: bool = False) -> list[RecordedRun]:
        """The newest runs first."""
        if not self.path.exists():
            return []
        where = "WHERE regression = 1 " if regressions_only else ""
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM runs {where}ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_run(row) for row in rows]


_COLUMNS = "id, at, benchmark, metric, fingerprint, value, baseline, tolerance, regression, details"


def _run(row: Sequence[Any]) -> RecordedRun:
    return RecordedRun(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        Verdict(row[5], row[6], row[7], regression=bool(row[8])),
        json.loads(row[9]),
    )

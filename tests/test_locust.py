"""The Locust file, run headless by Locust itself against a live server with room for one
synthesizing stream and two users: streams that get in are whole and smooth (time to first audio
as the response time), refused ones are reported as failures."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings
from app.tts.synthesizer import Synthesizer
from tests.live import live_server

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
RUN_S = 30


def test_locust_users_speak_and_refusals_are_failures(
    settings: Settings, synthesizer: Synthesizer, tmp_path: Path
) -> None:
    one_at_a_time = dataclasses.replace(settings, max_active_streams=1)
    with live_server(one_at_a_time, synthesizer) as base:
        run = subprocess.run(
            [
                *(sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless"),
                *("--users", "2", "--spawn-rate", "2", "--run-time", f"{RUN_S}s"),
                *("--stop-timeout", "60", "--host", base, "--csv", str(tmp_path / "run")),
                "--only-summary",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=RUN_S + 120,
            check=False,
        )
    with (tmp_path / "run_stats.csv").open() as stats_file:
        stats = {row["Name"]: row for row in csv.DictReader(stats_file)}
    with (tmp_path / "run_failures.csv").open() as failures_file:
        failures = {row["Error"]: int(row["Occurrences"]) for row in csv.DictReader(failures_file)}
    total = stats["Aggregated"]
    requests, failed = int(total["Request Count"]), int(total["Failure Count"])
    print(run.stderr[-2000:])
    median = total["Median Response Time"]
    print(f"{requests} streams, {failed} failed: {failures}; TTFA median {median} ms")
    assert requests - failed >= 2, "streams were heard"
    assert set(failures) <= {"StreamFailure('error busy')"}, failures
    assert float(total["Median Response Time"]) > 0
    assert {"speak whole", "speak words"} & set(stats)
    assert run.returncode == (1 if failed else 0), "Locust exits 1 when a request failed"

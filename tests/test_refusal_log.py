"""Refused clients are logged one line each, and no faster than the rate."""

from __future__ import annotations

import logging

import pytest

from app.refusal_log import RefusalLog


def test_refusals_beyond_the_burst_are_counted_and_reported_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RefusalLog(logging.getLogger("test.refused"), rate=1.0, burst=3, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.refused"):
        for index in range(1000):
            log.refused("refused client %d", index)
        now[0] = 2.0
        log.refused("refused client %d", 1000)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[:3] == ["refused client 0", "refused client 1", "refused client 2"]
    assert lines[3] == "refused client 1000 (and 997 more refusals not logged)"
    assert len(lines) == 4
    assert all(
        record.levelno == logging.WARNING and not record.exc_info for record in caplog.records
    )

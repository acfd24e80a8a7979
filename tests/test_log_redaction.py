"""Keys and frame payloads are rewritten out of log records (the real server's debug log is
checked in test_shutdown)."""

from __future__ import annotations

import logging

import pytest

from app.log_redaction import RedactSecrets, redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("< authorization: Bearer s3cr3t", "< authorization: Bearer [redacted]"),
        ("< Authorization: Basic dXNlcjpwYXNz", "< Authorization: Basic [redacted]"),
        (
            "< sec-websocket-protocol: tts.v1, bearer.s3cr3t",
            "< sec-websocket-protocol: tts.v1, bearer.[redacted]",
        ),
        ("> BINARY 84 a4 74 79 70 65 ... 6c c3 [57 bytes]", "> BINARY [payload] [57 bytes]"),
        ("< TEXT 'speak this sentence' [19 bytes]", "< TEXT [payload] [19 bytes]"),
        ("> PING 6b fd 71 a0 [binary, 4 bytes]", "> PING 6b fd 71 a0 [binary, 4 bytes]"),
        ("ready: model 3.01 s", "ready: model 3.01 s"),
    ],
)
def test_secrets_and_payloads_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_the_filter_rewrites_a_formatted_record() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.DEBUG, __file__, 1, "< %s", ("authorization: Bearer k",), None
    )
    assert RedactSecrets().filter(record)
    assert record.getMessage() == "< authorization: Bearer [redacted]"

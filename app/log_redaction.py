"""Keep keys and user text out of the logs, whatever the log level.

At debug level the WebSocket library logs every handshake header (``Authorization``, and
``Sec-WebSocket-Protocol`` with a browser's ``bearer.<key>``) and the first bytes of every frame
(the text a client sends). ``RedactSecrets`` rewrites such records on every handler, so raising
the log level to investigate a problem never writes secrets or speech to disk.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    (re.compile(r"(authorization:\s*\S+\s+)\S+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(\bbearer\s+)[^\s,'\"]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"(\bbearer\.)[^\s,'\"]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .*?(\[\d+ bytes\])?$"), r"\1 [payload] \2"),
)
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "websockets")
"""Loggers whose handlers get the filter (the root logger's and uvicorn's own)."""


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with keys and frame payloads removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install() -> None:
    """Add the filter to every handler of the root logger and uvicorn's loggers (call after
    logging is configured: a handler added later is not covered)."""
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(existing, RedactSecrets) for existing in handler.filters):
                handler.addFilter(RedactSecrets())

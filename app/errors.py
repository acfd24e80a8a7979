"""Typed errors with stable codes.

Every error a client or an operator can see carries a stable ``code`` (used in HTTP bodies and,
later, in WebSocket ``error`` frames) and a one-line message that says what to do about it.
"""

from __future__ import annotations

EXCERPT_CHARS = 40
"""The most of a client's input an error message quotes."""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` quoted for an error message, cut to its first ``limit`` characters: an answer
    never echoes more of the client's input than that."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class TTSError(Exception):
    """Base class: a failure that is reported to the caller instead of crashing the server."""

    code = "internal"
    http_status = 500
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelFileError(TTSError):
    """The model file is missing, truncated, or not a Kokoro ONNX graph."""

    code = "model_file"


class VoiceFileError(TTSError):
    """The voices file is missing or does not hold (N, 1, 256) style packs."""

    code = "voice_file"


class UnknownVoiceError(TTSError):
    """A requested voice is not in the loaded voice bank."""

    code = "unknown_voice"
    http_status = 400


class BadVoiceSpecError(TTSError):
    """A voice blend expression cannot be parsed (for example a negative weight)."""

    code = "bad_voice"
    http_status = 400


class EmptyTextError(TTSError):
    """The input has nothing speakable once normalised."""

    code = "empty_text"
    http_status = 400


class TimestampsUnavailableError(TTSError):
    """Word timings were asked of a model that does not report its durations."""

    code = "timestamps_unavailable"
    http_status = 400


class TextTooLongError(TTSError):
    """The input exceeds the configured character limit."""

    code = "text_too_long"
    http_status = 400


class NotReadyError(TTSError):
    """The engine is still loading or warming up."""

    code = "not_ready"
    http_status = 503
    retryable = True


class RetryLaterError(TTSError):
    """A refusal that says when to try again (``retry_after_ms``); ``stream`` when it answers
    a stream's ``start``."""

    http_status = 503
    retryable = True

    def __init__(self, message: str, *, retry_after_ms: int, stream: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
        self.stream = stream


class BusyError(RetryLaterError):
    """The server is at capacity; the client should retry after ``retry_after_ms``."""

    code = "busy"


class ShuttingDownError(RetryLaterError):
    """The server is shutting down: reconnect (another replica, or this one once restarted)."""

    code = "shutting_down"


class BadPlanError(TTSError):
    """A provider plan that cannot be parsed (``cpu:2x1`` is the form)."""

    code = "bad_plan"
    http_status = 400


class SwapInProgressError(TTSError):
    """A plan swap was asked for while another one runs."""

    code = "swap_in_progress"
    http_status = 409
    retryable = True


class SwapFailedError(TTSError):
    """The new plan could not be built or warmed; the old one still serves."""

    code = "swap_failed"
    http_status = 500

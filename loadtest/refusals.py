"""Admission refusals: a ``start`` answered ``busy`` did not open the stream, and the user tries
again after the server's ``retry_after_ms``, as a well-behaved client would.

Kept apart from the WebSocket code (the attempt, the clock and the sleep are passed in) so that
the retry rule can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from app.client import ServerError

BUSY = "busy"
MAX_RETRY_WAIT_S = 5.0
"""Never wait longer than this between attempts, whatever the server asks."""
DEFAULT_RETRY_WAIT_S = 1.0
"""The wait when a refusal carries no usable ``retry_after_ms``."""

T = TypeVar("T")


def is_refusal(error: BaseException) -> bool:
    """A ``busy`` answer: the stream was not opened; anything else is a failure."""
    return isinstance(error, ServerError) and error.code == BUSY


def retry_wait_s(details: Mapping[str, Any]) -> float:
    """Seconds to wait before the next ``start``: ``retry_after_ms``, capped."""
    value = details.get("retry_after_ms")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return DEFAULT_RETRY_WAIT_S
    return min(float(value) / 1000, MAX_RETRY_WAIT_S)


async def until_admitted(
    attempt: Callable[[int], Awaitable[T]],
    *,
    give_up_at: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    on_refusal: Callable[[float], None],
) -> T | None:
    """Run ``attempt(0)``, ``attempt(1)``... until one is not refused, and return its result.

    Each refusal is reported with its time. When the next attempt would start at or after
    ``give_up_at``, waits until then and returns ``None``. Errors other than a refusal
    propagate.
    """
    number = 0
    while True:
        try:
            return await attempt(number)
        except ServerError as error:
            if not is_refusal(error):
                raise
            now = clock()
            on_refusal(now)
            wait = retry_wait_s(error.details)
            if now + wait >= give_up_at:  # sit out the rest: no tight loop of new streams
                await sleep(max(0.0, give_up_at - now))
                return None
            await sleep(wait)
            number += 1

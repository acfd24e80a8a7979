"""Log lines for refused clients: one WARNING line each, and at most a few per second.

A client refused for its Host, its Origin, its key, the size of its request or its slowness can
repeat the request as fast as it likes. A traceback per refusal would let it fill the disk and
bury real errors, so each refusal is one line, and past a burst the lines of the next seconds
are counted instead and the count goes out with the next line logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.rate_limit import TokenBucket

LINES_PER_S = 1.0
BURST = 10


class RefusalLog:
    """Rate-limited WARNING lines about refused clients."""

    def __init__(
        self,
        logger: logging.Logger,
        rate: float = LINES_PER_S,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self._bucket = TokenBucket(rate, burst, clock)
        self.suppressed = 0
        """Lines left out since the last one logged."""

    def refused(self, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING, unless over the rate (then only count it)."""
        if not self._bucket.take():
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (and %d more refusals not logged)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.logger.warning(message, *args)


REFUSALS = RefusalLog(logging.getLogger("app.refused"))
"""The process's refusal log (every server in it shares the rate)."""

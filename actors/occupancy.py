"""Which model calls shared the CPU: a call that overlapped another ran slower than it would
alone, so live speed checks compare only calls that ran alone with the benchmark."""

from __future__ import annotations

import itertools


class CallOccupancy:
    """Model calls in progress across a pipeline's inference actors; event-loop only."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._overlapped: dict[int, bool] = {}

    def begin(self) -> int:
        """A call starts; returns its ticket for ``end``."""
        ticket = next(self._ids)
        shared = bool(self._overlapped)
        for other in self._overlapped:
            self._overlapped[other] = True
        self._overlapped[ticket] = shared
        return ticket

    def end(self, ticket: int) -> bool:
        """The call ended; True if no other call ran at any moment of it."""
        return not self._overlapped.pop(ticket, True)

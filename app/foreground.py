"""User work in progress, so that background work can stay out of its way.

Streams count from their ``start`` (before admission) until they end; whole-text HTTP syntheses
and plan swaps count while they run. Background work (the scheduled benchmark) runs only after
the server has been quiet for a while, and a listener hears at once when work arrives, so it
can abort the model call it is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Iterator


class Foreground:
    """The set of user work items in progress; event-loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: set[Hashable] = set()
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._quiet_since = clock()
        self._listeners: list[Callable[[], None]] = []

    @property
    def busy(self) -> bool:
        return bool(self._items)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously) whenever an item arrives."""
        self._listeners.append(listener)

    def enter(self, item: Hashable) -> None:
        """``item`` is in progress (idempotent)."""
        if item in self._items:
            return
        self._items.add(item)
        self._quiet.clear()
        for listener in self._listeners:
            listener()

    def leave(self, item: Hashable) -> None:
        """``item`` is done (idempotent)."""
        if item not in self._items:
            return
        self._items.remove(item)
        if not self._items:
            self._quiet_since = self._clock()
            self._quiet.set()

    @contextlib.contextmanager
    def active(self, item: Hashable) -> Iterator[None]:
        self.enter(item)
        try:
            yield
        finally:
            self.leave(item)

    async def wait_quiet(self, seconds: float) -> None:
        """Return once nothing has been in progress for ``seconds``."""
        while True:
            if self._items:
                await self._quiet.wait()
                continue
            remaining = self._quiet_since + seconds - self._clock()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)  # then look again: work may have come and gone

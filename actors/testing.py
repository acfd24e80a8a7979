"""Helpers for testing actors: a collecting sink, a one-call actor runner, a task-leak check.

``Collector`` is the sink a test gives an actor in place of its downstream; ``run_actor`` starts
one actor under a ``Supervisor``, feeds it and stops it with drain (in the spirit of pipecat's
``run_test``); ``assert_no_leaked_tasks`` fails a test that leaves tasks running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from actors.base import Actor
from actors.supervisor import Supervisor

InT = TypeVar("InT")
T = TypeVar("T")

DEFAULT_MAX_ITEMS = 10_000


class CollectorFull(AssertionError):
    """A collector received more than ``max_items``: the actor under test is running away."""


class Collector(Generic[T]):
    """An output sink (``Callable[[T], Awaitable[None]]``) that records what it is given.

    Bounded: the item past ``max_items`` raises ``CollectorFull`` in the sending actor, which
    then crashes loudly instead of filling memory.
    """

    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.items: list[T] = []
        self.max_items = max_items
        self._arrived = asyncio.Condition()

    async def __call__(self, item: T) -> None:
        async with self._arrived:
            if len(self.items) >= self.max_items:
                raise CollectorFull(f"collector got more than {self.max_items} items")
            self.items.append(item)
            self._arrived.notify_all()

    async def wait_for(self, count: int) -> list[T]:
        """Wait until at least ``count`` items arrived; returns a copy of them.

        Wrap it in ``asyncio.timeout`` if the test must not rely on the per-test timeout.
        """
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.items) >= count)
            return list(self.items)


async def run_actor(
    actor: Actor[InT],
    inputs: Sequence[InT],
    *,
    collect: Collector[T],
    controls: Sequence[object] = (),
    drain_timeout: float = 5.0,
) -> list[T]:
    """Run ``actor`` on ``inputs`` and return what it gave ``collect`` (the sink it was built with).

    The actor is started (ready), then the control messages are queued, then the inputs are
    sent with backpressure, then it is stopped with drain, so every control message is handled
    before the first input. Errors of the actor propagate (as an ``ExceptionGroup`` if it
    crashed in ``handle``).
    """
    async with Supervisor(name=f"test:{actor.name}", drain_timeout=drain_timeout) as sup:
        await sup.start(actor)
        for message in controls:
            actor.control(message)
        for item in inputs:
            await actor.send(item)
        await sup.stop_actor(actor)
    return list(collect.items)


@contextlib.contextmanager
def assert_no_leaked_tasks() -> Iterator[None]:
    """Fail if a task started inside the block is still pending when the block ends.

    Use it around the body of an async test (``with assert_no_leaked_tasks(): ...``) or in an
    autouse fixture::

        @pytest.fixture(autouse=True)
        async def no_leaked_tasks() -> AsyncIterator[None]:
            with assert_no_leaked_tasks():
                yield

    Leaked tasks are cancelled (so they do not disturb later tests) and named in the failure.
    """
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    if leaked:
        for task in leaked:
            task.cancel()
        names = ", ".join(sorted(task.get_name() for task in leaked))
        raise AssertionError(f"{len(leaked)} task(s) leaked: {names}")

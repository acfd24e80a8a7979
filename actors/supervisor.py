"""The supervisor: starts actors in a ``TaskGroup`` and stops them in reverse order.

Starting waits for readiness (like ``trio``'s ``nursery.start``): ``await sup.start(actor)``
returns once the actor's ``on_start`` has finished, and raises ``on_start``'s error if it failed,
so a pipeline is only wired to actors that are up. Stopping goes in reverse start order, so the
producers started last (the gateway's per-stream actors) stop before the shared actors they feed:
each actor gets ``stop(drain=True)`` and ``drain_timeout`` seconds to finish its queued work,
then it is cancelled (its ``on_stop`` still runs).

Failure: an actor that crashes while running (``handle`` raised) makes the ``TaskGroup`` cancel
every other actor and the body of ``async with``; the error comes out of ``async with`` as an
``ExceptionGroup`` (catch it with ``except*`` or ``pytest.raises(ExceptionGroup)``). An exception
raised by the body itself also cancels all actors at once (no draining) and comes out in the
group too. Actors can be started and stopped at any time while the supervisor runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from actors.base import Actor

logger = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT = 5.0


@dataclass(slots=True)
class _Startup:
    """How an actor's start went, reported by its task to the ``start`` call waiting for it."""

    settled: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False
    error: Exception | None = None

    def set_ready(self) -> None:
        self.ready = True
        self.settled.set()


class Supervisor:
    """Owns the actors' tasks: ``async with Supervisor() as sup: await sup.start(actor)``."""

    def __init__(
        self, *, name: str = "supervisor", drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    ) -> None:
        self.name = name
        self.drain_timeout = drain_timeout
        self._group: asyncio.TaskGroup | None = None
        self._closed = False
        # Keyed by id() (actors need not be hashable); insertion order is start order.
        self._running: dict[int, tuple[Actor[Any], asyncio.Task[None]]] = {}

    @property
    def actors(self) -> tuple[Actor[Any], ...]:
        """The running actors, in start order."""
        return tuple(actor for actor, _ in self._running.values())

    async def __aenter__(self) -> Self:
        if self._group is not None or self._closed:
            raise RuntimeError(f"{self.name}: a supervisor is entered once")
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group = self._require_group()
        if exc is None:
            try:
                await self.stop()
            except BaseException as error:  # a crash cancelled us: the group reports it
                await self._exit_group(group, error)
                return
        await self._exit_group(group, exc)

    async def _exit_group(self, group: asyncio.TaskGroup, exc: BaseException | None) -> None:
        self._closed = True
        self._group = None
        tb = exc.__traceback__ if exc is not None else None
        await group.__aexit__(type(exc) if exc is not None else None, exc, tb)

    async def start(self, actor: Actor[Any]) -> None:
        """Start ``actor`` in the group and wait until it is ready.

        Raises the exception ``on_start`` raised (the other actors keep running). If this call
        is cancelled before the actor is ready, the actor is cancelled too.
        """
        group = self._require_group()
        if id(actor) in self._running:
            raise RuntimeError(f"{self.name}: {actor.name} is already running")
        startup = _Startup()
        task = group.create_task(self._run(actor, startup), name=f"actor:{actor.name}")
        self._running[id(actor)] = (actor, task)
        task.add_done_callback(lambda _: self._forget(actor, task))
        try:
            await startup.settled.wait()
        except asyncio.CancelledError:
            task.cancel()
            raise
        if startup.ready:
            return
        await asyncio.wait({task})  # it is ending: on_stop has run
        self._forget(actor, task)
        if startup.error is not None:
            error, startup.error = startup.error, None  # no reference cycle via the traceback
            raise error
        raise RuntimeError(f"{self.name}: {actor.name} ended before it was ready")

    async def stop_actor(self, actor: Actor[Any], drain_timeout: float | None = None) -> None:
        """Stop one actor (drain, then cancel after ``drain_timeout``) and wait until it ended.

        Does nothing if the actor is not running. A crash while draining is reported by the
        group, not raised here.
        """
        entry = self._running.get(id(actor))
        if entry is None:
            return
        task = entry[1]
        timeout = self.drain_timeout if drain_timeout is None else drain_timeout
        actor.stop(drain=True)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            logger.warning(
                "%s: %s did not drain in %.3g s, cancelling", self.name, actor.name, timeout
            )
            task.cancel()
            await asyncio.wait({task})
        self._forget(actor, task)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop every running actor, in reverse start order, one after the other."""
        while self._running:  # also stops actors started meanwhile
            actor, _ = next(reversed(self._running.values()))
            await self.stop_actor(actor, drain_timeout)

    async def _run(self, actor: Actor[Any], startup: _Startup) -> None:
        """The actor's task. An ``on_start`` failure goes to ``start``, not to the group."""
        try:
            await actor.run(ready=startup.set_ready)
        except Exception as error:
            if startup.ready:
                raise
            startup.error = error
        finally:
            startup.settled.set()

    def _forget(self, actor: Actor[Any], task: asyncio.Task[None]) -> None:
        entry = self._running.get(id(actor))
        if entry is not None and entry[1] is task:
            del self._running[id(actor)]

    def _require_group(self) -> asyncio.TaskGroup:
        if self._group is None:
            raise RuntimeError(f"{self.name}: use the supervisor inside `async with`")
        return self._group

"""The actor base class: one asyncio task, a bounded data mailbox and a separate control lane.

An actor handles one message at a time. Data (text, jobs, audio) waits in a small bounded
mailbox, so a fast producer is slowed down by ``send`` (backpressure) instead of growing memory.
Control messages (cancel, flush, demand reports) travel on their own lane and are always taken
before the next data message, so they never wait behind queued audio.

Lifecycle: ``run`` calls ``on_start``, signals ready, handles messages until ``stop`` is called,
then calls ``on_stop`` (always, also after a crash or a cancellation). An exception raised by a
hook propagates out of ``run``: a crash is never hidden, and ``CancelledError`` is never
swallowed. ``actors.supervisor.Supervisor`` runs actors inside a ``TaskGroup``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

InT = TypeVar("InT")

DEFAULT_MAILBOX_SIZE = 16
DEFAULT_CONTROL_SIZE = 1024


class ActorError(Exception):
    """Base class of the runtime's own errors (misuse or overload, not a message's failure)."""


class MailboxFull(ActorError):
    """``send_nowait`` found the data mailbox full: the actor is behind, the caller decides."""


class ControlLaneFull(ActorError):
    """The control lane is full: the actor is stuck or flooded (a bug, not normal load)."""


class ActorClosed(ActorError):
    """The actor was stopped, so a message sent to it would never be handled."""


class _StopMode(enum.Enum):
    DRAIN = "drain"
    NOW = "now"


class Actor(ABC, Generic[InT]):
    """One task that handles data messages of type ``InT`` and control messages of any type.

    Subclasses implement ``handle`` and optionally ``handle_control``, ``on_start``, ``on_stop``.
    The base class does not know where output goes: concrete actors take a sink (a
    ``Callable[[OutT], Awaitable[None]]``, often another actor's ``send``) in their constructor.
    ``handle`` must not ``await self.send(...)``: with a full mailbox that waits for itself.
    The runtime's own state is name-mangled (``__x``), so subclasses may use any ``_x`` name.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        control_size: int = DEFAULT_CONTROL_SIZE,
    ) -> None:
        if mailbox_size < 1 or control_size < 1:
            # asyncio.Queue(maxsize=0) would be unbounded.
            raise ValueError("mailbox_size and control_size must be at least 1")
        self.name: str = name if name is not None else type(self).__name__
        self.__mailbox: asyncio.Queue[InT] = asyncio.Queue(maxsize=mailbox_size)
        self.__controls: asyncio.Queue[object] = asyncio.Queue(maxsize=control_size)
        self.__wakeup = asyncio.Event()  # set when a message or a stop request arrives
        self.__space = asyncio.Event()  # set when a blocked sender should look again
        self.__stop_mode: _StopMode | None = None
        self.__started = False
        self.__finished = False

    # --- hooks -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Acquire resources before the first message; the actor is ready once this returns."""

    @abstractmethod
    async def handle(self, message: InT) -> None:
        """Handle one data message."""

    async def handle_control(self, message: object) -> None:
        """Handle one control message; the default ignores it."""

    async def on_stop(self) -> None:
        """Release resources. Runs always, even after a failed ``on_start``, a crash or a cancel."""

    # --- sending ---------------------------------------------------------------------------

    async def send(self, message: InT) -> None:
        """Queue a data message, waiting while the mailbox is full (backpressure).

        Raises ``ActorClosed`` if the actor is stopped, also while this call is waiting.
        """
        while True:
            self.__check_accepting_data()
            if not self.__mailbox.full():
                self.__mailbox.put_nowait(message)
                self.__wakeup.set()
                return
            self.__space.clear()
            await self.__space.wait()

    def send_nowait(self, message: InT) -> None:
        """Queue a data message or raise ``MailboxFull`` (or ``ActorClosed``) at once."""
        self.__check_accepting_data()
        if self.__mailbox.full():
            raise MailboxFull(f"{self.name}: mailbox full ({self.__mailbox.maxsize} messages)")
        self.__mailbox.put_nowait(message)
        self.__wakeup.set()

    def control(self, message: object) -> None:
        """Queue a control message; it is handled before any queued data. Never blocks.

        Accepted while the actor drains after ``stop(drain=True)``; raises ``ActorClosed`` once
        it would no longer be handled, and ``ControlLaneFull`` on overflow.
        """
        if self.__finished or self.__stop_mode is _StopMode.NOW:
            raise ActorClosed(f"{self.name}: stopped, control message not accepted")
        try:
            self.__controls.put_nowait(message)
        except asyncio.QueueFull:
            raise ControlLaneFull(
                f"{self.name}: control lane full ({self.__controls.maxsize} messages)"
            ) from None
        self.__wakeup.set()

    def stop(self, drain: bool = True) -> None:
        """Ask the actor to stop; returns at once (await the task running ``run`` to wait).

        With ``drain`` the actor first handles the messages already queued; without, it stops
        after the message it is handling now and drops the rest. From now on ``send`` raises
        ``ActorClosed``, including sends that are waiting for mailbox space. Idempotent; a
        later ``stop(drain=False)`` turns a draining stop into an immediate one.
        """
        if self.__finished:
            return
        if not drain:
            self.__stop_mode = _StopMode.NOW
        elif self.__stop_mode is None:
            self.__stop_mode = _StopMode.DRAIN
        self.__wakeup.set()
        self.__space.set()

    def __check_accepting_data(self) -> None:
        if self.__finished or self.__stop_mode is not None:
            raise ActorClosed(f"{self.name}: stopped, data message not accepted")

    # --- state, for metrics and tests --------------------------------------------------------

    @property
    def mailbox_depth(self) -> int:
        """Data messages waiting (not counting the one being handled)."""
        return self.__mailbox.qsize()

    @property
    def mailbox_capacity(self) -> int:
        return self.__mailbox.maxsize

    @property
    def control_depth(self) -> int:
        """Control messages waiting."""
        return self.__controls.qsize()

    @property
    def stop_requested(self) -> bool:
        """``stop`` was called (the actor may still be draining)."""
        return self.__stop_mode is not None

    @property
    def is_finished(self) -> bool:
        """``run`` has left its message loop."""
        return self.__finished

    # --- the task ----------------------------------------------------------------------------

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """The actor's task: ``on_start``, then ``ready()``, then the message loop until stopped.

        ``on_stop`` runs in a ``finally``; exceptions (and cancellation) propagate. An actor runs
        once: a second call raises ``RuntimeError``.
        """
        if self.__started:
            raise RuntimeError(f"{self.name}: run() called twice")
        self.__started = True
        try:
            await self.on_start()
            if ready is not None:
                ready()
            await self.__loop()
        finally:
            self.__finish()
            await self.on_stop()

    async def __loop(self) -> None:
        while self.__stop_mode is not _StopMode.NOW:
            if not self.__controls.empty():
                await self.handle_control(self.__controls.get_nowait())
            elif not self.__mailbox.empty():
                message = self.__mailbox.get_nowait()
                self.__space.set()
                await self.handle(message)
            elif self.__stop_mode is _StopMode.DRAIN:
                return
            else:
                # No await between the emptiness checks and clear(): no wake-up can be lost.
                self.__wakeup.clear()
                await self.__wakeup.wait()

    def __finish(self) -> None:
        """Refuse further messages, wake blocked senders (they raise) and drop what is left."""
        self.__finished = True
        self.__space.set()
        dropped = self.__mailbox.qsize() + self.__controls.qsize()
        for lane in (self.__mailbox, self.__controls):
            while not lane.empty():
                lane.get_nowait()
        if dropped:
            logger.debug("%s: stopped with %d queued messages dropped", self.name, dropped)

"""The actor runtime: mailbox and control lane, stop semantics, supervision, test helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from actors.base import Actor, ActorClosed, ControlLaneFull, MailboxFull
from actors.supervisor import Supervisor
from actors.testing import Collector, CollectorFull, assert_no_leaked_tasks, run_actor

Sink = Callable[[str], Awaitable[None]]


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    with assert_no_leaked_tasks():
        yield


async def settle() -> None:
    """Let every ready task run a few steps (no timing involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Upper(Actor[str]):
    """Upper-cases data, tags control messages, and records its lifecycle in ``log``."""

    def __init__(
        self,
        sink: Sink,
        *,
        name: str = "upper",
        log: list[str] | None = None,
        mailbox_size: int = 16,
        control_size: int = 1024,
    ) -> None:
        super().__init__(name=name, mailbox_size=mailbox_size, control_size=control_size)
        self.sink = sink
        self.log = log if log is not None else []

    async def on_start(self) -> None:
        self.log.append(f"start {self.name}")

    async def handle(self, message: str) -> None:
        await self.sink(message.upper())

    async def handle_control(self, message: object) -> None:
        await self.sink(f"ctl:{message}")

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")


class Gated(Upper):
    """Like ``Upper`` but each data message waits for ``release`` once ``entered`` is set."""

    def __init__(
        self,
        sink: Sink,
        *,
        name: str = "upper",
        log: list[str] | None = None,
        mailbox_size: int = 16,
    ) -> None:
        super().__init__(sink, name=name, log=log, mailbox_size=mailbox_size)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, message: str) -> None:
        self.entered.set()
        await self.release.wait()
        await super().handle(message)


class Stuck(Upper):
    """Never finishes a data message."""

    async def handle(self, message: str) -> None:
        await asyncio.Event().wait()


class CrashOnStart(Upper):
    async def on_start(self) -> None:
        await super().on_start()
        raise Boom("on_start")


class CrashOn(Upper):
    """Crashes on the message ``"boom"``."""

    async def handle(self, message: str) -> None:
        if message == "boom":
            raise Boom(message)
        await super().handle(message)


class GatedCrashOn(Gated):
    async def handle(self, message: str) -> None:
        await super().handle(message)
        if message == "boom":
            raise Boom(message)


class SetOnStop(Upper):
    """Sets ``event`` when it stops."""

    def __init__(self, sink: Sink, event: asyncio.Event, *, name: str) -> None:
        super().__init__(sink, name=name)
        self.event = event

    async def on_stop(self) -> None:
        self.event.set()


# --- run_actor and Collector ---------------------------------------------------------------


async def test_run_actor_handles_controls_then_inputs() -> None:
    out: Collector[str] = Collector()
    result = await run_actor(Upper(out), ["a", "b", "c"], controls=["flush"], collect=out)
    assert result == ["ctl:flush", "A", "B", "C"]


async def test_run_actor_applies_backpressure_beyond_the_mailbox() -> None:
    out: Collector[str] = Collector()
    inputs = [str(i) for i in range(50)]
    assert await run_actor(Upper(out, mailbox_size=2), inputs, collect=out) == inputs


async def test_collector_wait_for_and_bound() -> None:
    out: Collector[int] = Collector(max_items=2)
    async with asyncio.TaskGroup() as tg:
        waiter = tg.create_task(out.wait_for(2))
        await settle()
        assert not waiter.done()
        await out(1)
        await out(2)
    assert waiter.result() == [1, 2]
    with pytest.raises(CollectorFull):
        await out(3)
    assert out.items == [1, 2]


# --- mailbox and control lane --------------------------------------------------------------


async def test_control_overtakes_queued_data() -> None:
    out: Collector[str] = Collector()
    actor = Gated(out)
    async with Supervisor() as sup:
        await sup.start(actor)
        await actor.send("a")
        await actor.entered.wait()  # "a" is being handled
        await actor.send("b")
        await actor.send("c")
        actor.control("cancel")
        assert actor.mailbox_depth == 2
        assert actor.control_depth == 1
        actor.release.set()
        assert await out.wait_for(4) == ["A", "ctl:cancel", "B", "C"]


async def test_send_waits_while_the_mailbox_is_full() -> None:
    out: Collector[str] = Collector()
    actor = Gated(out, mailbox_size=2)
    async with Supervisor() as sup, asyncio.TaskGroup() as tg:
        await sup.start(actor)
        await actor.send("a")
        await actor.entered.wait()
        await actor.send("b")
        await actor.send("c")
        assert actor.mailbox_depth == actor.mailbox_capacity == 2
        with pytest.raises(MailboxFull):
            actor.send_nowait("x")
        blocked = tg.create_task(actor.send("d"))
        await settle()
        assert not blocked.done()
        actor.release.set()
        await blocked
        assert await out.wait_for(4) == ["A", "B", "C", "D"]


async def test_control_lane_is_bounded() -> None:
    actor = Upper(Collector[str](), control_size=2)
    actor.control(1)
    actor.control(2)
    with pytest.raises(ControlLaneFull):
        actor.control(3)


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Upper(Collector[str](), mailbox_size=0)


# --- stop semantics --------------------------------------------------------------------------


async def test_stop_with_drain_handles_queued_data() -> None:
    out: Collector[str] = Collector()
    actor = Gated(out)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(actor.run())
        await actor.send("a")
        await actor.entered.wait()
        await actor.send("b")
        actor.control("flush")
        actor.stop(drain=True)
        with pytest.raises(ActorClosed):
            await actor.send("late")
        actor.control("accepted while draining")
        actor.release.set()
    assert task.done()
    assert out.items == ["A", "ctl:flush", "ctl:accepted while draining", "B"]
    assert actor.log == ["start upper", "stop upper"]
    with pytest.raises(ActorClosed):
        actor.control("after the end")


async def test_stop_without_drain_drops_queued_data_and_wakes_blocked_senders() -> None:
    out: Collector[str] = Collector()
    actor = Gated(out, mailbox_size=1)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(actor.run())
        await actor.send("a")
        await actor.entered.wait()
        await actor.send("b")
        blocked = asyncio.create_task(actor.send("c"))
        await settle()
        actor.control("dropped too")
        actor.stop(drain=False)
        with pytest.raises(ActorClosed):
            await blocked
        with pytest.raises(ActorClosed):
            actor.control("refused")
        actor.release.set()
    assert out.items == ["A"]
    assert actor.mailbox_depth == 0
    assert actor.log == ["start upper", "stop upper"]


async def test_stop_before_run_drains_what_was_queued() -> None:
    out: Collector[str] = Collector()
    actor = Upper(out)
    actor.send_nowait("a")
    actor.stop()
    ready = asyncio.Event()
    await actor.run(ready=ready.set)
    assert ready.is_set()
    assert out.items == ["A"]
    assert actor.is_finished
    with pytest.raises(RuntimeError, match="twice"):
        await actor.run()


async def test_crash_in_handle_propagates_from_run_and_on_stop_runs() -> None:
    actor = CrashOn(Collector[str]())
    actor.send_nowait("boom")
    with pytest.raises(Boom):
        await actor.run()
    assert actor.log == ["start upper", "stop upper"]


async def test_cancel_is_not_swallowed_and_on_stop_runs() -> None:
    actor = Stuck(Collector[str]())
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(actor.run())
        await actor.send("x")
        await settle()
        task.cancel()
    assert task.cancelled()
    assert actor.log == ["start upper", "stop upper"]


# --- supervisor ------------------------------------------------------------------------------


async def test_supervisor_starts_in_order_and_stops_in_reverse() -> None:
    log: list[str] = []
    actors = [Upper(Collector[str](), name=name, log=log) for name in ("first", "second", "third")]
    async with Supervisor() as sup:
        for actor in actors:
            await sup.start(actor)
        assert sup.actors == tuple(actors)
        assert log == ["start first", "start second", "start third"]
    assert log[3:] == ["stop third", "stop second", "stop first"]
    assert sup.actors == ()


async def test_supervisor_exit_drains_queued_data() -> None:
    out: Collector[str] = Collector()
    actor = Gated(out)
    async with Supervisor() as sup:
        await sup.start(actor)
        for message in "abc":
            await actor.send(message)
        await actor.entered.wait()
        actor.release.set()
    assert out.items == ["A", "B", "C"]


async def test_crash_in_handle_propagates_out_of_the_supervisor() -> None:
    log: list[str] = []
    crashing = CrashOn(Collector[str](), name="crashing", log=log)
    bystander = Upper(Collector[str](), name="bystander", log=log)
    body_cancelled = False
    with pytest.raises(ExceptionGroup) as caught:
        async with Supervisor() as sup:
            await sup.start(bystander)
            await sup.start(crashing)
            await crashing.send("boom")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                body_cancelled = True
                raise
    assert caught.group_contains(Boom)
    assert body_cancelled
    assert sorted(log[2:]) == ["stop bystander", "stop crashing"]


async def test_crash_while_the_supervisor_stops_still_propagates() -> None:
    crashing = GatedCrashOn(Collector[str](), name="crashing")
    # Stopped first (reverse order); its on_stop lets "crashing" go on, which then crashes
    # while the supervisor waits for it to drain.
    releaser = SetOnStop(Collector[str](), crashing.release, name="releaser")
    with pytest.raises(ExceptionGroup) as caught:
        async with Supervisor() as sup:
            await sup.start(crashing)
            await sup.start(releaser)
            await crashing.send("boom")
            await crashing.entered.wait()
    assert caught.group_contains(Boom)
    assert crashing.is_finished
    assert releaser.is_finished


async def test_crash_in_on_start_makes_start_raise() -> None:
    log: list[str] = []
    out: Collector[str] = Collector()
    healthy = Upper(out, name="healthy", log=log)
    async with Supervisor() as sup:
        await sup.start(healthy)
        with pytest.raises(Boom, match="on_start"):
            await sup.start(CrashOnStart(Collector[str](), name="broken", log=log))
        assert log == ["start healthy", "start broken", "stop broken"]
        assert sup.actors == (healthy,)
        await healthy.send("still running")
        assert await out.wait_for(1) == ["STILL RUNNING"]


async def test_drain_timeout_cancels_a_stuck_actor() -> None:
    log: list[str] = []
    stuck = Stuck(Collector[str](), name="stuck", log=log)
    async with Supervisor(drain_timeout=0.01) as sup:
        await sup.start(stuck)
        await stuck.send("x")
    assert log == ["start stuck", "stop stuck"]
    assert stuck.is_finished


async def test_actors_start_and_stop_while_others_keep_running() -> None:
    log: list[str] = []
    shared_out: Collector[str] = Collector()
    shared = Upper(shared_out, name="shared", log=log)
    async with Supervisor() as sup:
        await sup.start(shared)
        for stream in ("s1", "s2"):
            stream_out: Collector[str] = Collector()
            per_stream = Gated(stream_out, name=stream, log=log)
            await sup.start(per_stream)
            await per_stream.send(stream)
            await shared.send(f"{stream} shared")
            await per_stream.entered.wait()
            per_stream.release.set()
            await sup.stop_actor(per_stream, drain_timeout=5.0)
            assert stream_out.items == [stream.upper()]
            assert sup.actors == (shared,)
            await sup.stop_actor(per_stream)  # not running any more: nothing to do
        assert await shared_out.wait_for(2) == ["S1 SHARED", "S2 SHARED"]
        assert not shared.stop_requested
    assert log == ["start shared", "start s1", "stop s1", "start s2", "stop s2", "stop shared"]


async def test_supervisor_stop_can_be_called_before_exit() -> None:
    log: list[str] = []
    async with Supervisor() as sup:
        await sup.start(Upper(Collector[str](), name="a", log=log))
        await sup.start(Upper(Collector[str](), name="b", log=log))
        await sup.stop(drain_timeout=1.0)
        assert log[2:] == ["stop b", "stop a"]
        assert sup.actors == ()
        await sup.start(Upper(Collector[str](), name="c", log=log))
    assert log[4:] == ["start c", "stop c"]


async def test_cancelled_start_cancels_the_actor() -> None:
    class SlowStart(Upper):
        async def on_start(self) -> None:
            await asyncio.Event().wait()

    actor = SlowStart(Collector[str](), name="slow")
    async with Supervisor() as sup, asyncio.TaskGroup() as tg:
        starting = tg.create_task(sup.start(actor))
        await settle()
        assert sup.actors == (actor,)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        await settle()
        assert not sup.actors
    assert actor.log == ["stop slow"]


async def test_supervisor_misuse_is_reported() -> None:
    sup = Supervisor()
    with pytest.raises(RuntimeError, match="async with"):
        await sup.start(Upper(Collector[str]()))
    actor = Upper(Collector[str]())
    async with sup:
        await sup.start(actor)
        with pytest.raises(RuntimeError, match="already running"):
            await sup.start(actor)
    with pytest.raises(RuntimeError, match="entered once"):
        async with sup:
            pass


# --- leak check ------------------------------------------------------------------------------


async def test_assert_no_leaked_tasks_reports_a_leak() -> None:
    never = asyncio.Event()
    with pytest.raises(AssertionError, match="leaked: sleeper"), assert_no_leaked_tasks():
        task = asyncio.create_task(never.wait(), name="sleeper")
    with pytest.raises(asyncio.CancelledError):
        await task

"""The scheduler (``actors.scheduler``) with fake inference workers and a fake clock.

The scheduler is driven directly through ``handle`` and ``handle_control``: its decisions are
synchronous, so no actor task (and no timing) is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import pytest

from actors.inference import InferenceActor
from actors.messages import (
    CancelStream,
    SegmentFailed,
    SegmentJob,
    StreamDemand,
    StreamKey,
    WorkerFailed,
    WorkerIdle,
    WorkerProbeFailed,
)
from actors.scheduler import ReplaceWorkers, Scheduler
from actors.segmentation import TextSegment

A = StreamKey("session", "a")
B = StreamKey("session", "b")
C = StreamKey("session", "c")


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeWorker:
    """Stands in for an ``InferenceActor``: records the jobs it is given and the aborts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: list[SegmentJob] = []
        self.aborted: list[StreamKey] = []
        self.running = False
        """Whether an abort now would stop a job (like ``InferenceActor.abort``'s answer)."""

    def send_nowait(self, job: SegmentJob) -> None:
        self.jobs.append(job)
        self.running = True

    def abort(self, key: StreamKey) -> bool:
        self.aborted.append(key)
        stopped = self.running and bool(self.jobs) and self.jobs[-1].key == key
        self.running = self.running and not stopped
        return stopped


def make_scheduler(
    *names: str, clock: FakeClock, max_lead_seconds: float = 2.0, work_ahead_seconds: float = 0.0
) -> tuple[Scheduler, list[FakeWorker]]:
    workers = [FakeWorker(name) for name in names]
    scheduler = Scheduler(
        cast(Sequence[InferenceActor], workers),
        max_lead_seconds=max_lead_seconds,
        clock=clock,
        work_ahead_seconds=work_ahead_seconds,
    )
    return scheduler, workers


def job(key: StreamKey, index: int, received_at: float) -> SegmentJob:
    segment = TextSegment(
        index=index, text=f"words {index}", char_start=0, char_end=7, boundary="sentence"
    )
    return SegmentJob(key, segment, voice="af_heart", speed=1.0, received_at=received_at)


def dispatched(workers: Sequence[FakeWorker]) -> list[tuple[StreamKey, int]]:
    return [(j.key, j.segment.index) for w in workers for j in w.jobs]


async def test_dispatched_job_carries_deadline_and_queued_at() -> None:
    clock = FakeClock(5.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock)
    await scheduler.handle(job(A, 0, received_at=4.5))
    assert len(worker.jobs) == 1
    sent = worker.jobs[0]
    assert sent.deadline == 4.5  # a new stream is due when its text arrived
    assert sent.queued_at == 5.0
    assert (sent.key, sent.segment.index, sent.received_at) == (A, 0, 4.5)


async def test_deadline_follows_the_reported_lead() -> None:
    clock = FakeClock(1.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock)
    await scheduler.handle(job(A, 0, received_at=1.0))
    assert worker.jobs[0].deadline == 1.0  # a stream's first segment is due at once
    await scheduler.handle(job(A, 1, received_at=1.0))
    await scheduler.handle_control(WorkerIdle("w0"))
    await scheduler.handle(job(A, 2, received_at=1.0))
    await scheduler.handle_control(StreamDemand(A, lead_seconds=1.5, at=2.0))
    clock.now = 3.0
    await scheduler.handle_control(WorkerIdle("w0"))
    assert worker.jobs[-1].deadline == 3.5  # at + lead, not received_at
    assert worker.jobs[-1].queued_at == 1.0


async def test_new_stream_overtakes_a_stream_that_holds_lead() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock)
    # Stream C keeps the only worker busy while A and B queue up.
    await scheduler.handle(job(C, 0, received_at=0.0))
    assert dispatched([worker]) == [(C, 0)]
    # A's client holds a second of audio (due at 2.0); A's job arrived first.
    await scheduler.handle_control(StreamDemand(A, lead_seconds=1.0, at=1.0))
    clock.now = 1.1
    await scheduler.handle(job(A, 1, received_at=1.1))
    # B is new: its first segment is due at once.
    clock.now = 1.2
    await scheduler.handle(job(B, 0, received_at=1.2))
    assert scheduler.queued_jobs == 2

    await scheduler.handle_control(WorkerIdle("w0"))
    assert dispatched([worker]) == [(C, 0), (B, 0)]
    assert worker.jobs[-1].deadline == 1.2
    await scheduler.handle_control(WorkerIdle("w0"))
    assert dispatched([worker]) == [(C, 0), (B, 0), (A, 1)]
    assert worker.jobs[-1].deadline == 2.0
    assert scheduler.queued_jobs == 0


async def test_earlier_deadline_first_regardless_of_arrival_order() -> None:
    clock = FakeClock(10.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock)
    await scheduler.handle(job(C, 0, received_at=10.0))  # occupies the worker
    await scheduler.handle_control(StreamDemand(A, lead_seconds=0.5, at=10.0))  # due 10.5
    await scheduler.handle_control(StreamDemand(B, lead_seconds=0.2, at=10.0))  # due 10.2
    await scheduler.handle(job(A, 3, received_at=10.0))
    await scheduler.handle(job(B, 7, received_at=10.0))
    for _ in range(2):
        await scheduler.handle_control(WorkerIdle("w0"))
    assert dispatched([worker]) == [(C, 0), (B, 7), (A, 3)]


async def test_at_most_one_job_in_flight_per_stream() -> None:
    clock = FakeClock()
    scheduler, workers = make_scheduler("w0", "w1", clock=clock)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(A, 1, received_at=0.0))
    await scheduler.handle(job(A, 2, received_at=0.0))
    # Two idle workers, but only one of A's jobs runs.
    assert dispatched(workers) == [(A, 0)]
    assert scheduler.queued_jobs == 2

    first = next(w for w in workers if w.jobs)
    await scheduler.handle_control(WorkerIdle(first.name))
    assert sorted(dispatched(workers)) == [(A, 0), (A, 1)]
    assert scheduler.queued_jobs == 1
    # A's second job went to the other worker; the last job waits for it.
    second = next(w for w in workers if w is not first)
    assert [j.segment.index for j in second.jobs] == [1]
    await scheduler.handle_control(WorkerIdle(second.name))
    assert sorted(dispatched(workers)) == [(A, 0), (A, 1), (A, 2)]
    assert scheduler.queued_jobs == 0


async def test_stream_far_ahead_is_held_until_its_lead_drops() -> None:
    clock = FakeClock()
    scheduler, (worker,) = make_scheduler("w0", clock=clock, max_lead_seconds=2.0)
    await scheduler.handle_control(StreamDemand(A, lead_seconds=2.0, at=0.0))
    await scheduler.handle(job(A, 4, received_at=0.0))
    assert worker.jobs == []  # the worker is idle, but A's client has enough audio
    await scheduler.handle_control(StreamDemand(A, lead_seconds=3.0, at=0.5))
    assert worker.jobs == []
    await scheduler.handle(job(A, 5, received_at=0.6))  # more text does not release A either
    assert worker.jobs == []

    await scheduler.handle_control(StreamDemand(A, lead_seconds=1.9, at=1.0))
    assert dispatched([worker]) == [(A, 4)]  # then one job at a time, as usual
    assert worker.jobs[0].deadline == 2.9


async def test_held_stream_does_not_block_others() -> None:
    clock = FakeClock()
    scheduler, (worker,) = make_scheduler("w0", clock=clock, max_lead_seconds=1.0)
    await scheduler.handle_control(StreamDemand(A, lead_seconds=5.0, at=0.0))
    await scheduler.handle(job(A, 1, received_at=0.0))
    await scheduler.handle(job(B, 0, received_at=0.3))
    assert dispatched([worker]) == [(B, 0)]


async def test_cancel_drops_queued_jobs_and_aborts_in_flight() -> None:
    clock = FakeClock()
    scheduler, workers = make_scheduler("w0", "w1", clock=clock)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(A, 1, received_at=0.0))
    await scheduler.handle(job(A, 2, received_at=0.0))
    assert scheduler.queued_jobs == 2

    await scheduler.handle_control(CancelStream(A))
    assert scheduler.queued_jobs == 0
    for worker in workers:
        assert worker.aborted == [A]

    # The aborted job's worker reports idle: nothing of A is dispatched any more.
    busy = next(w for w in workers if w.jobs)
    await scheduler.handle_control(WorkerIdle(busy.name))
    assert dispatched(workers) == [(A, 0)]
    # Both workers now serve other streams at once.
    await scheduler.handle(job(B, 0, received_at=0.0))
    await scheduler.handle(job(C, 0, received_at=0.0))
    assert sorted(dispatched(workers)) == [(A, 0), (B, 0), (C, 0)]


async def test_cancel_of_one_stream_leaves_the_others() -> None:
    clock = FakeClock()
    scheduler, (worker,) = make_scheduler("w0", clock=clock)
    await scheduler.handle(job(C, 0, received_at=0.0))
    await scheduler.handle(job(A, 0, received_at=0.1))
    await scheduler.handle(job(B, 0, received_at=0.2))
    await scheduler.handle_control(CancelStream(A))
    assert scheduler.queued_jobs == 1
    await scheduler.handle_control(WorkerIdle("w0"))
    assert dispatched([worker]) == [(C, 0), (B, 0)]


async def test_two_idle_workers_run_two_streams_at_once() -> None:
    clock = FakeClock()
    scheduler, workers = make_scheduler("w0", "w1", clock=clock)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(B, 0, received_at=0.0))
    assert [len(w.jobs) for w in workers] == [1, 1]
    assert sorted(dispatched(workers)) == [(A, 0), (B, 0)]
    # A third stream waits for a worker.
    await scheduler.handle(job(C, 0, received_at=0.0))
    assert scheduler.queued_jobs == 1
    await scheduler.handle_control(WorkerIdle("w1"))
    assert workers[1].jobs[-1].key == C
    assert scheduler.queued_jobs == 0


async def test_cancelled_job_finishing_late_does_not_free_a_new_stream_of_that_name() -> None:
    """A client may cancel a stream and start a new one with the same id at once."""
    clock = FakeClock()
    scheduler, workers = make_scheduler("w0", "w1", clock=clock)
    await scheduler.handle(job(A, 0, received_at=0.0))  # the old stream's job runs on w0
    await scheduler.handle_control(CancelStream(A))  # aborting, w0 not idle yet
    await scheduler.handle(job(A, 0, received_at=1.0))  # the new stream: w1
    await scheduler.handle(job(A, 1, received_at=1.0))
    assert [len(w.jobs) for w in workers] == [1, 1]

    await scheduler.handle_control(WorkerIdle("w0"))  # the aborted job ends
    assert [len(w.jobs) for w in workers] == [1, 1]  # the new stream still has a job in flight
    assert scheduler.queued_jobs == 1

    await scheduler.handle_control(WorkerIdle("w1"))
    assert scheduler.queued_jobs == 0
    assert sum(len(w.jobs) for w in workers) == 3


class GiveUps:
    def __init__(self) -> None:
        self.failed: list[SegmentFailed] = []

    async def __call__(self, failed: SegmentFailed) -> None:
        self.failed.append(failed)


def make_failing_scheduler(
    *names: str, max_attempts: int = 3
) -> tuple[Scheduler, list[FakeWorker], GiveUps]:
    workers = [FakeWorker(name) for name in names]
    give_ups = GiveUps()
    scheduler = Scheduler(
        cast(Sequence[InferenceActor], workers),
        clock=FakeClock(),
        max_attempts=max_attempts,
        give_up=give_ups,
    )
    return scheduler, workers, give_ups


async def test_a_failed_job_runs_next_on_another_worker_before_later_segments() -> None:
    scheduler, (w0, w1), give_ups = make_failing_scheduler("w0", "w1")
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(A, 1, received_at=0.0))
    assert dispatched([w0, w1]) == [(A, 0)]  # one job in flight per stream
    await scheduler.handle_control(WorkerFailed("w0", w0.jobs[0], "boom"))
    assert [(j.segment.index, j.attempt) for j in w1.jobs] == [(0, 1)]
    await scheduler.handle_control(WorkerIdle("w1"))
    assert [(j.segment.index, j.attempt) for j in w1.jobs] == [(0, 1), (1, 0)]
    assert len(w0.jobs) == 1, "the failed worker stays out until it reports idle"
    assert scheduler.retries == 1 and not give_ups.failed


async def test_a_job_failing_max_attempts_times_is_given_up() -> None:
    scheduler, (w0,), give_ups = make_failing_scheduler("w0", max_attempts=2)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle_control(WorkerFailed("w0", w0.jobs[-1], "boom"))
    await scheduler.handle_control(WorkerIdle("w0"))  # probed back in: the retry runs
    assert w0.jobs[-1].attempt == 1
    await scheduler.handle_control(WorkerFailed("w0", w0.jobs[-1], "boom again"))
    assert [(f.job.key, f.code) for f in give_ups.failed] == [(A, "inference_failed")]
    assert "boom again" in give_ups.failed[0].message
    assert scheduler.given_up == 1


async def test_waiting_jobs_are_given_up_when_no_worker_is_healthy() -> None:
    scheduler, (w0, w1), give_ups = make_failing_scheduler("w0", "w1")
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(B, 0, received_at=0.0))
    await scheduler.handle_control(WorkerFailed("w0", w0.jobs[-1], "boom"))
    await scheduler.handle_control(WorkerProbeFailed("w0"))
    assert not give_ups.failed, "w1 is healthy: the retried job waits for it"
    await scheduler.handle_control(WorkerFailed("w1", w1.jobs[-1], "boom"))
    await scheduler.handle_control(WorkerProbeFailed("w1"))
    assert sorted(f.job.key.stream for f in give_ups.failed) == ["a", "b"]
    assert scheduler.queued_jobs == 0


async def test_a_long_queued_segment_is_started_while_the_lead_still_covers_it() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock, max_lead_seconds=2.0)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle_control(WorkerIdle("w0", gen_seconds=0.6, chars=20))  # 0.03 s/char
    await scheduler.handle_control(StreamDemand(A, lead_seconds=3.0, at=0.0))
    short = job(A, 1, received_at=0.0)
    await scheduler.handle(short)
    assert len(worker.jobs) == 1, "3 s ahead, a 7-char segment waits (max lead 2 s)"
    long_text = "x" * 200  # about 6 s to synthesize: a 3 s lead would run dry first
    long_segment = replace(short.segment, index=2, text=long_text, char_end=200)
    await scheduler.handle(replace(short, segment=long_segment))
    assert [j.segment.index for j in worker.jobs] == [0, 1]


async def test_a_spare_worker_works_ahead_up_to_the_cap() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler(
        "w0", clock=clock, max_lead_seconds=2.0, work_ahead_seconds=10.0
    )
    await scheduler.handle_control(StreamDemand(A, lead_seconds=5.0, at=0.0))
    await scheduler.handle(job(A, 0, received_at=0.0))
    assert len(worker.jobs) == 1, "5 s ahead (more than the 2 s it needs): served from spare time"
    await scheduler.handle_control(WorkerIdle("w0"))
    await scheduler.handle_control(StreamDemand(A, lead_seconds=10.0, at=0.0))
    await scheduler.handle(job(A, 1, received_at=0.0))
    assert len(worker.jobs) == 1, "at the work-ahead cap nothing more is made"
    clock.now = 0.5  # the client has played half a second: 9.5 s ahead, under the cap
    await scheduler.handle_control(WorkerIdle("w0"))
    assert len(worker.jobs) == 2


async def test_without_work_ahead_a_stream_with_enough_lead_waits() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock, max_lead_seconds=2.0)
    await scheduler.handle_control(StreamDemand(A, lead_seconds=5.0, at=0.0))
    await scheduler.handle(job(A, 0, received_at=0.0))
    assert worker.jobs == []


async def test_a_due_job_preempts_a_work_ahead_job_which_is_requeued_first() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock, work_ahead_seconds=10.0)
    await scheduler.handle_control(StreamDemand(A, lead_seconds=5.0, at=0.0))
    await scheduler.handle(job(A, 3, received_at=0.0))
    await scheduler.handle(job(A, 4, received_at=0.0))
    assert dispatched([worker]) == [(A, 3)]
    await scheduler.handle(job(B, 0, received_at=0.0))  # a new stream: due at once
    assert worker.aborted == [A]
    assert scheduler.preemptions == 1
    assert dispatched([worker]) == [(A, 3)], "B waits for the aborted call to return"
    await scheduler.handle_control(WorkerIdle("w0"))  # the aborted call returned
    assert dispatched([worker]) == [(A, 3), (B, 0)]
    await scheduler.handle_control(WorkerIdle("w0", gen_seconds=0.2, chars=7, audio_seconds=0.5))
    assert dispatched([worker]) == [(A, 3), (B, 0), (A, 3)], "A's aborted job runs again, first"


async def test_a_due_job_never_preempts_a_due_job() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock, work_ahead_seconds=10.0)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(B, 0, received_at=0.0))
    assert worker.aborted == []
    assert dispatched([worker]) == [(A, 0)]


async def test_a_job_that_finished_before_the_abort_is_not_run_twice() -> None:
    clock = FakeClock(0.0)
    scheduler, (worker,) = make_scheduler("w0", clock=clock, work_ahead_seconds=10.0)
    await scheduler.handle_control(StreamDemand(A, lead_seconds=5.0, at=0.0))
    await scheduler.handle(job(A, 0, received_at=0.0))
    worker.running = False  # the call returned; its WorkerIdle is on its way
    await scheduler.handle(job(B, 0, received_at=0.0))
    assert scheduler.preemptions == 0
    await scheduler.handle_control(WorkerIdle("w0", gen_seconds=0.2, chars=7, audio_seconds=0.5))
    assert dispatched([worker]) == [(A, 0), (B, 0)]


async def test_throughput_sums_the_healthy_workers_measured_rates() -> None:
    clock = FakeClock(0.0)
    workers = [FakeWorker("w0"), FakeWorker("w1")]
    scheduler = Scheduler(cast(Sequence[InferenceActor], workers), clock=clock, initial_rate=1.5)
    assert scheduler.throughput() == 3.0, "the seed until jobs are timed"
    d = StreamKey("session", "d")
    for key in (A, B, C, d):
        await scheduler.handle(job(key, 0, received_at=0.0))
    # A ran on w0 while w1 was still idle: not a measurement of both sessions busy.
    await scheduler.handle_control(WorkerIdle("w0", gen_seconds=1.0, chars=30, audio_seconds=9.0))
    assert scheduler.throughput() == 3.0
    await scheduler.handle_control(WorkerIdle("w1", gen_seconds=1.0, chars=30, audio_seconds=3.0))
    await scheduler.handle_control(WorkerIdle("w0", gen_seconds=1.0, chars=30, audio_seconds=2.0))
    assert scheduler.throughput() == 5.0
    await scheduler.handle(job(A, 1, received_at=0.0))
    await scheduler.handle_control(WorkerFailed("w0", workers[0].jobs[-1], "boom"))
    assert scheduler.throughput() == 3.0, "a worker out of rotation produces nothing"


async def test_a_job_that_ran_with_a_worker_idle_does_not_count_towards_throughput() -> None:
    clock = FakeClock(0.0)
    workers = [FakeWorker("w0"), FakeWorker("w1")]
    scheduler = Scheduler(cast(Sequence[InferenceActor], workers), clock=clock, initial_rate=1.5)
    await scheduler.handle(job(A, 0, received_at=0.0))  # w1 stays idle: w0 runs alone, faster
    await scheduler.handle_control(WorkerIdle("w0", gen_seconds=1.0, chars=30, audio_seconds=4.0))
    assert scheduler.throughput() == 3.0


async def test_remaining_chars_counts_queued_and_running_characters() -> None:
    clock = FakeClock(0.0)
    scheduler, _ = make_scheduler("w0", clock=clock)
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle(job(A, 1, received_at=0.0))
    assert scheduler.remaining_chars(A) == 2 * len("words 0")
    assert scheduler.remaining_chars(B) == 0


async def test_jobs_teach_the_scheduler_seconds_and_audio_per_character() -> None:
    scheduler, _ = make_scheduler("w0", clock=FakeClock(0.0))
    before = scheduler.audio_per_char
    for _ in range(20):
        await scheduler.handle_control(
            WorkerIdle("w0", gen_seconds=0.5, chars=50, audio_seconds=5.0)
        )
    assert scheduler.seconds_per_char == pytest.approx(0.01, rel=0.01)
    assert scheduler.audio_per_char == pytest.approx(0.1, rel=0.01) != before


async def test_replaced_workers_take_no_new_job_and_retire_when_idle() -> None:
    clock = FakeClock(0.0)
    retired: list[str] = []
    old_busy, old_idle, new = FakeWorker("old0"), FakeWorker("old1"), FakeWorker("new0")
    scheduler = Scheduler(
        cast(Sequence[InferenceActor], [old_busy, old_idle]), clock=clock, retired=retired.append
    )
    await scheduler.handle(job(A, 0, received_at=0.0))
    assert dispatched([old_busy]) == [(A, 0)]
    await scheduler.handle_control(
        ReplaceWorkers((cast(InferenceActor, new),), frozenset({"old0", "old1"}), initial_rate=3.0)
    )
    assert retired == ["old1"], "an idle worker retires at once"
    assert scheduler.throughput() == 3.0, "the new worker's rate only"
    await scheduler.handle(job(B, 0, received_at=0.0))
    await scheduler.handle(job(C, 0, received_at=0.0))
    assert dispatched([new]) == [(B, 0)], "C waits for the new worker, not the old one"
    await scheduler.handle_control(WorkerIdle("old0", gen_seconds=0.2, chars=7, audio_seconds=1))
    assert retired == ["old1", "old0"], "a busy worker retires when its job is done"
    assert dispatched([old_busy]) == [(A, 0)]
    await scheduler.handle_control(WorkerIdle("new0", gen_seconds=0.2, chars=7, audio_seconds=1))
    assert dispatched([new]) == [(B, 0), (C, 0)]


async def test_a_retiring_worker_that_fails_hands_its_job_on_and_retires() -> None:
    clock = FakeClock(0.0)
    retired: list[str] = []
    old, new = FakeWorker("old"), FakeWorker("new")
    scheduler = Scheduler(
        cast(Sequence[InferenceActor], [old]), clock=clock, retired=retired.append
    )
    await scheduler.handle(job(A, 0, received_at=0.0))
    await scheduler.handle_control(
        ReplaceWorkers((cast(InferenceActor, new),), frozenset({"old"}), initial_rate=2.0)
    )
    await scheduler.handle_control(WorkerFailed("old", old.jobs[-1], "boom"))
    assert retired == ["old"]
    assert dispatched([new]) == [(A, 0)]

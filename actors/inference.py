"""The inference actor: one per execution-provider session, running jobs on its engine's thread.

A job's text is normalised, phonemised and (if it exceeds the model's window) split on the
engine's thread, then synthesized. A cancelled stream's in-flight job, or a work-ahead job the
scheduler preempts, is aborted through ONNX Runtime's ``RunOptions.terminate``, so neither waits
for the rest of a long segment.

Failures. A job the text itself makes impossible (``TTSError``: nothing speakable, for instance)
fails for its stream only. Any other exception, or a call that outlives ``timeout_s``, is the
engine's fault: the actor reports ``WorkerFailed`` (the scheduler runs the job elsewhere; none of
its audio has been delivered) and opens its circuit breaker: it takes no job until a health probe
(a short synthesis) succeeds. Probes start ``probe_after_s`` later and back off, doubling up to
``probe_max_s``; the actor then reports ``WorkerIdle`` and is back in rotation. A failed probe is
reported too (``WorkerProbeFailed``): when no session is healthy, the scheduler gives up the
waiting jobs rather than let their streams hang. A hung call stays on the engine's thread, so
probes queue behind it and time out until it returns.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial

import onnxruntime as ort

from actors.base import Actor
from actors.messages import (
    SegmentAudio,
    SegmentFailed,
    SegmentJob,
    StreamKey,
    WorkerFailed,
    WorkerIdle,
    WorkerProbeFailed,
)
from actors.occupancy import CallOccupancy
from app.errors import TTSError
from app.tts.engine import SAMPLE_RATE, Aborted, Engine
from app.tts.synthesizer import SpeechResult, Synthesizer

logger = logging.getLogger(__name__)

Deliver = Callable[[SegmentAudio | SegmentFailed], Awaitable[None]]


class Health(enum.Enum):
    OK = "ok"
    OUT = "out"
    """Out of rotation after a failure; probing."""


class InferenceActor(Actor[SegmentJob]):
    """Runs one job at a time on its engine and delivers the audio."""

    def __init__(
        self,
        name: str,
        synthesizer: Synthesizer,
        deliver: Deliver,
        on_idle: Callable[[WorkerIdle], None],
        *,
        engine: Engine | None = None,
        on_failed: Callable[[WorkerFailed | WorkerProbeFailed], None] | None = None,
        timeout_s: float = 30.0,
        probe_after_s: float = 5.0,
        probe_max_s: float = 60.0,
        probe_voice: str = "jm_kumo",
        occupancy: CallOccupancy | None = None,
    ) -> None:
        """``occupancy``: shared by a pipeline's actors, to tell calls that ran alone."""
        super().__init__(name=name, mailbox_size=1)
        if timeout_s <= 0 or probe_after_s <= 0 or probe_max_s < probe_after_s:
            raise ValueError("need timeout_s > 0 and 0 < probe_after_s <= probe_max_s")
        self.synthesizer = synthesizer
        self.engine = engine or synthesizer.engine
        self.provider = self.engine.providers[0]
        self._deliver = deliver
        self._on_idle = on_idle
        self._on_failed = on_failed
        self.timeout_s = timeout_s
        self.probe_after_s = probe_after_s
        self.probe_max_s = probe_max_s
        self.probe_voice = probe_voice
        self.health = Health.OK
        self.failures = 0
        self.recoveries = 0
        self.jobs_done = 0
        self._lock = threading.Lock()
        self._current: tuple[StreamKey, ort.RunOptions] | None = None
        self._occupancy = occupancy or CallOccupancy()

    def abort(self, key: StreamKey) -> bool:
        """Terminate the in-flight job if it belongs to ``key``; True if one was aborted.

        True guarantees that the job's audio is never delivered (the scheduler relies on it to
        requeue a preempted job without duplicating audio)."""
        with self._lock:
            if self._current is not None and self._current[0] == key:
                self._current[1].terminate = True
                return True
        return False

    def stats(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "health": self.health.value,
            "jobs_done": self.jobs_done,
            "failures": self.failures,
            "recoveries": self.recoveries,
            "mailbox_depth": self.mailbox_depth,
        }

    async def handle(self, job: SegmentJob) -> None:
        run_options = ort.RunOptions()
        with self._lock:
            self._current = (job.key, run_options)
        started = time.monotonic()
        outcome: SegmentAudio | SegmentFailed | None = None
        failure: str | None = None
        ticket = self._occupancy.begin()
        try:
            result = await self._synthesize(job, run_options, started)
            outcome = self._segment_audio(job, result, started, solo=self._occupancy.end(ticket))
        except Aborted:
            pass
        except TTSError as error:
            outcome = SegmentFailed(job, error.code, error.message)
        except TimeoutError:
            run_options.terminate = True  # stops the call if the engine still honours it
            failure = f"no result within {self.timeout_s:g} s"
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
        finally:
            self._occupancy.end(ticket)  # no-op after a delivered result
            with self._lock:  # an abort either lands before this point or returns False
                aborted = run_options.terminate
                self._current = None
        if aborted and failure is None:
            outcome = None  # finished anyway, but its caller already put the job elsewhere
        if failure is None:
            if isinstance(outcome, SegmentAudio):
                self.jobs_done += 1
                chars = len(job.segment.text)
                audio_seconds = len(outcome.audio) / SAMPLE_RATE
                self._on_idle(WorkerIdle(self.name, outcome.gen_seconds, chars, audio_seconds))
            else:
                self._on_idle(WorkerIdle(self.name))
            if outcome is not None:
                await self._deliver(outcome)
            return
        logger.warning(
            "%s failed on %s segment %d (%s); out of rotation",
            self.name,
            job.key,
            job.segment.index,
            failure,
        )
        self.failures += 1
        self.health = Health.OUT
        if self._on_failed is not None:
            self._on_failed(WorkerFailed(self.name, job, failure))
        await self._recover()

    def _segment_audio(
        self,
        job: SegmentJob,
        result: SpeechResult,
        started: float,
        *,
        solo: bool = False,
        first_part: bool = False,
    ) -> SegmentAudio:
        """The job's audio so far; ``started`` is when this actor took the job (monotonic)."""
        return SegmentAudio(
            job=job,
            audio=result.audio,
            gen_seconds=time.monotonic() - started,
            queue_seconds=max(started - job.queued_at, 0.0),
            provider=self.provider,
            engine_seconds=result.gen_seconds,
            solo=solo,
            words=result.words,
            first_part=first_part,
        )

    async def _synthesize(
        self, job: SegmentJob, run_options: ort.RunOptions, started: float
    ) -> SpeechResult:
        """The job's whole result; with ``job.first_window``, the first window's audio is
        delivered on the way (``Synthesizer.render_first_window``). Once it is, the job can no
        longer be aborted: its first samples are with the stream."""
        synthesizer = self.synthesizer
        arguments = (job.segment.text, job.voice, job.speed, run_options, self.engine)
        if not job.first_window:
            render = partial(synthesizer.render, *arguments, timestamps=job.timestamps)
            return await asyncio.wait_for(self.engine.call(render), self.timeout_s)
        begin = partial(synthesizer.render_first_window, *arguments, timestamps=job.timestamps)
        head, rest = await asyncio.wait_for(self.engine.call(begin), self.timeout_s)
        if rest is None:
            return head
        with self._lock:
            if run_options.terminate:
                raise Aborted("aborted before the first window was delivered")
            self._current = None  # from here on ``abort`` returns False
        await self._deliver(self._segment_audio(job, head, started, first_part=True))
        return await asyncio.wait_for(self.engine.call(rest), self.timeout_s)

    async def _recover(self) -> None:
        """Probe the engine with backoff until it synthesizes again, then rejoin the rotation."""
        delay = self.probe_after_s
        while True:
            await asyncio.sleep(delay)  # the breaker's open interval
            probe = partial(self.synthesizer.warm_up, self.probe_voice, self.engine)
            try:
                await asyncio.wait_for(self.engine.call(probe), self.timeout_s)
            except Exception as error:  # any failure keeps the breaker open
                logger.warning("%s: health probe failed (%r)", self.name, error)
                if self._on_failed is not None:
                    self._on_failed(WorkerProbeFailed(self.name))
                delay = min(delay * 2, self.probe_max_s)
                continue
            break
        self.health = Health.OK
        self.recoveries += 1
        logger.info("%s passed its health probe; back in rotation", self.name)
        self._on_idle(WorkerIdle(self.name))

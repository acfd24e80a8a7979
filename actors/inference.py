"""The inference actor: one per execution-provider session, running jobs on the engine's thread.

A job's text is normalised, phonemised and (if it exceeds the model's window) split on the
engine's thread, then synthesized. A cancelled stream's in-flight job is aborted through
ONNX Runtime's ``RunOptions.terminate``, so cancel does not wait for the rest of a long segment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial

import onnxruntime as ort

from actors.base import Actor
from actors.messages import SegmentAudio, SegmentFailed, SegmentJob, StreamKey
from app.errors import TTSError
from app.tts.engine import Aborted
from app.tts.synthesizer import Synthesizer

logger = logging.getLogger(__name__)

Deliver = Callable[[SegmentAudio | SegmentFailed], Awaitable[None]]


class InferenceActor(Actor[SegmentJob]):
    """Runs one job at a time on its synthesizer's engine and delivers the audio."""

    def __init__(
        self,
        name: str,
        synthesizer: Synthesizer,
        deliver: Deliver,
        on_idle: Callable[[str], None],
    ) -> None:
        super().__init__(name=name, mailbox_size=1)
        self.synthesizer = synthesizer
        self.provider = synthesizer.engine.providers[0]
        self._deliver = deliver
        self._on_idle = on_idle
        self._lock = threading.Lock()
        self._current: tuple[StreamKey, ort.RunOptions] | None = None

    def abort(self, key: StreamKey) -> bool:
        """Terminate the in-flight job if it belongs to ``key``; True if one was aborted."""
        with self._lock:
            if self._current is not None and self._current[0] == key:
                self._current[1].terminate = True
                return True
        return False

    async def handle(self, job: SegmentJob) -> None:
        run_options = ort.RunOptions()
        with self._lock:
            self._current = (job.key, run_options)
        started = time.monotonic()
        outcome: SegmentAudio | SegmentFailed | None
        try:
            render = partial(
                self.synthesizer.render, job.segment.text, job.voice, job.speed, run_options
            )
            result = await self.synthesizer.engine.call(render)
            outcome = SegmentAudio(
                job=job,
                audio=result.audio,
                gen_seconds=time.monotonic() - started,
                queue_seconds=max(started - job.queued_at, 0.0),
                provider=self.provider,
            )
        except Aborted:
            outcome = None
        except TTSError as error:
            outcome = SegmentFailed(job, error.code, error.message)
        except Exception as error:
            logger.exception("inference failed for %s segment %d", job.key, job.segment.index)
            outcome = SegmentFailed(job, "internal", f"synthesis failed: {error}")
        finally:
            with self._lock:
                self._current = None
            self._on_idle(self.name)
        if outcome is not None:
            await self._deliver(outcome)

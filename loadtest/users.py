"""Virtual users: each holds one WebSocket connection and speaks one stream after another, as a
listener of a voice assistant would: a text sent at once or word by word, the audio played in
real time by ``app.client``'s player model (with its ``played`` reports driving the server's flow
control), and the next stream only once the last one has been heard.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from websockets.protocol import State

from app.client import SAMPLE_RATE, AudioFrame, TTSClient
from loadtest.meter import AudioMeter
from loadtest.ramp import Ramp
from loadtest.records import ConnectFailure, Mode, Outcome, StepWindow, StreamRecord
from loadtest.refusals import until_admitted

REPORT_EVERY_S = 0.25
"""``played`` reports, as often as the Python client and the browser player send them."""
RECONNECT_WAIT_S = 1.0
"""After a failed connection attempt, so a server that is down is not hammered."""


@dataclass(frozen=True, slots=True)
class UserSetup:
    """What every user does, from the command line."""

    url: str
    """``ws://HOST:PORT/v1/stream``."""
    texts: tuple[str, ...]
    word_share: float
    word_interval_s: float
    voice: str | None
    seed: int


@dataclass(slots=True)
class RunLog:
    """Where the users put what they saw (one event loop: no locking needed)."""

    clock: Callable[[], float]
    """Seconds since the ramp started."""
    meter: AudioMeter = field(default_factory=AudioMeter)
    streams: list[StreamRecord] = field(default_factory=list)
    connect_failures: list[ConnectFailure] = field(default_factory=list)


@dataclass(slots=True)
class _Attempt:
    """One ``start`` and what came back for it."""

    first_text_at: float | None = None
    first_audio_at: float | None = None
    samples: int = 0


async def _pieces(
    text: str, mode: Mode, interval_s: float, attempt: _Attempt, clock: Callable[[], float]
) -> AsyncIterator[str]:
    """The text as the client sends it; notes when the first piece goes out."""
    if mode == "whole":
        attempt.first_text_at = clock()
        yield text
        return
    for index, word in enumerate(text.split(" ")):
        if index:
            await asyncio.sleep(interval_s)  # the imitated language model's pace
            yield " " + word
        else:
            attempt.first_text_at = clock()
            yield word


def _outcome(done: dict[str, Any]) -> Outcome:
    reason = done.get("reason")
    if reason == "complete":
        return "complete"
    return "cancelled" if reason == "cancelled" else "error"


def _number(done: dict[str, Any], key: str) -> float | None:
    value = done.get(key)
    return float(value) if isinstance(value, int | float) else None


@dataclass(slots=True)
class _User:
    index: int
    ramp: Ramp
    setup: UserSetup
    log: RunLog
    rng: random.Random
    serial: int = 0

    async def speak_once(
        self, client: TTSClient, name: str, text: str, *, mode: Mode, attempt: _Attempt
    ) -> dict[str, Any]:
        """One stream until ``done``; returns its fields. A refusal raises ``ServerError``."""
        log = self.log
        done: dict[str, Any] | None = None
        speech = client.speak(
            _pieces(text, mode, self.setup.word_interval_s, attempt, log.clock),
            voice=self.setup.voice,
            stream=name,
            report_every=REPORT_EVERY_S,
        )
        # Read to its end: ``speak`` finishes after ``done`` (or raises), so it always closes.
        async for item in speech:
            if isinstance(item, AudioFrame):
                now = log.clock()
                if attempt.first_audio_at is None:
                    attempt.first_audio_at = now
                attempt.samples += len(item.samples)
                log.meter.add(now, len(item.samples) / SAMPLE_RATE)
            elif item.type == "done":
                done = item.fields
        if done is None:
            raise ConnectionError(f"{name}: the stream ended without done")
        return done

    async def stream(self, client: TTSClient, window: StepWindow) -> float:
        """Run one stream (with its retries after refusals) and record it; returns how long
        the listener still needs to hear its audio."""
        log = self.log
        self.serial += 1
        text_index = self.rng.randrange(len(self.setup.texts))
        mode: Mode = "words" if self.rng.random() < self.setup.word_share else "whole"
        text = self.setup.texts[text_index]
        base = f"u{self.index}-{self.serial}"
        names: list[str] = []
        refusals: list[float] = []
        attempt = _Attempt()

        async def try_start(number: int) -> dict[str, Any]:
            nonlocal attempt
            attempt = _Attempt()
            names.append(f"{base}-r{number}" if number else base)
            return await self.speak_once(client, names[-1], text, mode=mode, attempt=attempt)

        record = StreamRecord(
            user=self.index,
            step=window.index,
            name=base,
            mode=mode,
            text_index=text_index,
            started_at=log.clock(),
            ended_at=0.0,
            outcome="cancelled",
        )
        remaining = 0.0
        try:
            done = await until_admitted(
                try_start,
                give_up_at=self.ramp.end,
                clock=log.clock,
                sleep=asyncio.sleep,
                on_refusal=refusals.append,
            )
            record = self._finished(record, done, attempt)
            if done is not None:
                remaining = (_number(done, "client_remaining_ms") or 0.0) / 1000
        except Exception as error:  # recorded as this stream's failure; the user goes on
            record = replace(record, outcome="error", error=f"{type(error).__name__}: {error}")
        finally:
            log.streams.append(
                replace(
                    record,
                    name=names[-1] if names else base,
                    ended_at=log.clock(),
                    refusal_times=tuple(refusals),
                )
            )
        return remaining

    def _finished(
        self, record: StreamRecord, done: dict[str, Any] | None, attempt: _Attempt
    ) -> StreamRecord:
        if done is None:
            return replace(record, outcome="refused")
        ttfa = None
        if attempt.first_audio_at is not None and attempt.first_text_at is not None:
            ttfa = (attempt.first_audio_at - attempt.first_text_at) * 1000
        underruns = done.get("client_underruns")
        return replace(
            record,
            outcome=_outcome(done),
            client_ttfa_ms=ttfa,
            server_ttfa_ms=_number(done, "ttfa_ms"),
            underruns=underruns if isinstance(underruns, int) else 0,
            start_hold_ms=_number(done, "client_start_hold_ms"),
            audio_seconds=attempt.samples / SAMPLE_RATE,
        )

    async def streams(self, client: TTSClient) -> None:
        """Streams one after another while this user is active and the connection is up."""
        while client.ws.state is State.OPEN:
            window = self.ramp.step_at(self.log.clock())
            if window is None or window.users <= self.index:
                return
            remaining = await self.stream(client, window)
            listened = min(remaining, self.ramp.end - self.log.clock())
            if listened > 0:
                await asyncio.sleep(listened)  # the listener hears the rest in real time

    async def run(self) -> None:
        while (window := self.ramp.next_active(self.index, self.log.clock())) is not None:
            await asyncio.sleep(max(0.0, window.start - self.log.clock()))  # the ramp's timetable
            try:
                async with TTSClient.connect(self.setup.url) as client:
                    await self.streams(client)
            except Exception as error:  # refused, unreachable or dropped: try again
                failure = f"{type(error).__name__}: {error}"
                self.log.connect_failures.append(
                    ConnectFailure(self.log.clock(), self.index, failure)
                )
                await asyncio.sleep(RECONNECT_WAIT_S)


async def drive_users(ramp: Ramp, setup: UserSetup, log: RunLog, drain_timeout_s: float) -> None:
    """Run every user through the ramp. After its end no stream starts; the running ones get
    ``drain_timeout_s`` to finish, then are cancelled (and recorded as ``cancelled``)."""
    users = [
        _User(index, ramp, setup, log, random.Random(f"{setup.seed}:{index}"))
        for index in range(ramp.users)
    ]
    tasks = [asyncio.create_task(user.run(), name=f"user-{user.index}") for user in users]
    try:
        timeout = max(0.0, ramp.end + drain_timeout_s - log.clock())
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

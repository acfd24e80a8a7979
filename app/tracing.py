"""OpenTelemetry traces: connection -> stream -> segment -> (queue wait, phonemize, inference,
chunk and send).

Nothing is exported unless the standard variables ask for it: ``OTEL_TRACES_EXPORTER=otlp`` or
``console``, or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; OTLP over HTTP/protobuf). ``OTEL_SDK_DISABLED=true`` turns
tracing off; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` name the service.

The pipeline's actors hand work to each other through mailboxes, so a segment's spans are
recorded when its audio has been sent, from the timestamps its messages carried (monotonic
clock, converted to wall-clock nanoseconds): nothing on the audio path waits for tracing. User
text is never put in spans unless ``KOKORO_TRACE_TEXT`` is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, Tracer

from actors.messages import SegmentAudio, StreamFinished, StreamKey

# --- attribute names ---------------------------------------------------------------------------

SESSION = "kokoro.session"
STREAM = "kokoro.stream"
VOICE = "kokoro.voice"
ENCODING = "kokoro.encoding"
SEGMENT_INDEX = "kokoro.segment.index"
SEGMENT_CHARS = "kokoro.segment.chars"
SEGMENT_TEXT = "kokoro.segment.text"
"""Only with ``KOKORO_TRACE_TEXT``."""
SEGMENT_SAMPLES = "kokoro.segment.samples"
SEGMENT_ATTEMPT = "kokoro.segment.attempt"
PROVIDER = "kokoro.provider"
REASON = "kokoro.stream.reason"
TTFA_MS = "kokoro.stream.ttfa_ms"
RTF = "kokoro.stream.rtf"
STREAM_SAMPLES = "kokoro.stream.samples"

SERVICE_NAME = "kokoro-stream"
_OFFSET_NS = time.time_ns() - time.monotonic_ns()


def wall_ns(monotonic_seconds: float) -> int:
    """A ``time.monotonic()`` reading as epoch nanoseconds, the clock spans use."""
    return round(monotonic_seconds * 1e9) + _OFFSET_NS


def exporter_from_env(environ: Mapping[str, str]) -> SpanExporter | None:
    """The exporter the ``OTEL_*`` variables ask for, or ``None`` (the default)."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    kind = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "otlp" or (endpoint and kind in ("", "otlp")):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        return OTLPSpanExporter()  # reads the endpoint, headers and timeout variables itself
    return None


class Tracing:
    """The server's tracer: a real one when an exporter is configured, else a no-op."""

    def __init__(self, provider: TracerProvider | None = None, *, include_text: bool = False):
        self.provider = provider
        self.include_text = include_text
        self.tracer: Tracer = (
            provider.get_tracer(SERVICE_NAME) if provider is not None else trace.NoOpTracer()
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, *, include_text: bool = False
    ) -> Tracing:
        exporter = exporter_from_env(environ)
        if exporter is None:
            return cls(include_text=include_text)
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, include_text=include_text)

    def connection(self, session: str) -> Span:
        return self.tracer.start_span("connection", attributes={SESSION: session})

    def stream(self, connection: Span, key: StreamKey, voice: str, encoding: str) -> StreamTrace:
        span = self.tracer.start_span(
            "stream",
            context=trace.set_span_in_context(connection),
            attributes={SESSION: key.session, STREAM: key.stream, VOICE: voice, ENCODING: encoding},
        )
        return StreamTrace(self, span)

    def shutdown(self) -> None:
        """Flush and stop the exporter (at server shutdown)."""
        if self.provider is not None:
            self.provider.shutdown()


class StreamTrace:
    """One stream's span and the recording of its segments' spans."""

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self.span = span
        self._context = trace.set_span_in_context(span)

    def segment(self, audio: SegmentAudio, arrived_at: float, sent_at: float) -> None:
        """Record a segment whose audio has all been sent (times: ``time.monotonic()``).

        The segment runs from the arrival of the text that completed it to its last frame;
        inside it: the wait for a session, phonemization (the call's time outside the model),
        inference, and chunking and sending from the audio's arrival at the chunker.
        """
        tracer = self._tracing.tracer
        job = audio.job
        started = job.queued_at + audio.queue_seconds
        phonemized = started + max(0.0, audio.gen_seconds - audio.engine_seconds)
        attributes: dict[str, str | int] = {
            SEGMENT_INDEX: job.segment.index,
            SEGMENT_CHARS: len(job.segment.text),
            SEGMENT_SAMPLES: len(audio.audio),
            SEGMENT_ATTEMPT: job.attempt,
            PROVIDER: audio.provider,
        }
        if self._tracing.include_text:
            attributes[SEGMENT_TEXT] = job.segment.text
        segment = tracer.start_span(
            "segment",
            context=self._context,
            start_time=wall_ns(min(job.received_at, job.queued_at)),
            attributes=attributes,
        )
        inside = trace.set_span_in_context(segment)
        for name, begin, end in (
            ("queue wait", job.queued_at, started),
            ("phonemize", started, phonemized),
            ("inference", phonemized, started + audio.gen_seconds),
            ("chunk and send", arrived_at, sent_at),
        ):
            child = tracer.start_span(
                name,
                context=inside,
                start_time=wall_ns(begin),
                attributes={PROVIDER: audio.provider} if name == "inference" else None,
            )
            child.end(end_time=wall_ns(end))
        segment.end(end_time=wall_ns(sent_at))

    def end(self, result: StreamFinished | None) -> None:
        if result is not None:
            self.span.set_attribute(REASON, result.reason)
            self.span.set_attribute(STREAM_SAMPLES, result.samples)
            if result.ttfa_seconds is not None:
                self.span.set_attribute(TTFA_MS, round(result.ttfa_seconds * 1000, 1))
            if result.rtf is not None:
                self.span.set_attribute(RTF, round(result.rtf, 4))
        self.span.end()

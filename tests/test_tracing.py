"""OpenTelemetry traces (``app.tracing``): exporter choice, and the span tree of a real stream."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import tracing
from app.settings import Settings
from app.tracing import Tracing, exporter_from_env
from app.tts.synthesizer import Synthesizer
from tests.live import Client, live_server

TEXT = "The old lighthouse keeper climbed the stairs. He cleaned the great lens every evening."
CHILDREN = ["queue wait", "phonemize", "inference", "chunk and send"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, OTLPSpanExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, OTLPSpanExporter),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, OTLPSpanExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_the_exporter_follows_the_otel_variables(
    environ: Mapping[str, str], expected: type | None
) -> None:
    exporter = exporter_from_env(environ)
    if expected is None:
        assert exporter is None
    else:
        assert exporter is not None and isinstance(exporter, expected)
        exporter.shutdown()


def in_memory(include_text: bool = False) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, include_text=include_text), exporter


async def traced_stream(settings: Settings, synthesizer: Synthesizer, tracer: Tracing) -> Client:
    with live_server(settings, synthesizer, tracer) as base:
        client = await Client.connect(base, report_played=True)
        await client.start("s")
        await client.send(type="text", stream="s", text=TEXT)
        await client.send(type="end", stream="s")
        await client.until_done("s")
        await client.close()
    return client  # the server has stopped: every span has ended


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


@pytest.mark.model
async def test_a_stream_makes_a_consistent_span_tree(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    tracer, exporter = in_memory()
    client = await traced_stream(settings, synthesizer, tracer)
    spans = exporter.get_finished_spans()
    log = client.streams["s"]
    assert log.done is not None
    (connection,) = by_name(spans, "connection")
    (stream,) = by_name(spans, "stream")
    assert connection.parent is None
    assert stream.parent is not None and stream.parent.span_id == connection.context.span_id
    assert stream.attributes is not None
    assert stream.attributes[tracing.REASON] == "complete"
    assert stream.attributes[tracing.TTFA_MS] == log.done["ttfa_ms"]
    segments = sorted(by_name(spans, "segment"), key=lambda s: s.start_time or 0)
    messages = log.of_type("segment")
    assert len(segments) == len(messages) >= 2
    ns = 1_000_000  # 1 ms tolerance for rounding
    for segment, message in zip(segments, messages, strict=True):
        assert segment.parent is not None and segment.parent.span_id == stream.context.span_id
        assert segment.attributes is not None
        assert segment.attributes[tracing.SEGMENT_INDEX] == message["seg"]
        assert tracing.SEGMENT_TEXT not in segment.attributes, "no user text by default"
        children = [
            span
            for span in spans
            if span.parent is not None and span.parent.span_id == segment.context.span_id
        ]
        assert [child.name for child in children] == CHILDREN
        queue, phonemize, inference, send = children
        assert inference.attributes is not None
        assert inference.attributes[tracing.PROVIDER] == message["provider"]
        assert segment.start_time is not None and segment.end_time is not None
        for child in children:
            assert child.start_time is not None and child.end_time is not None
            assert segment.start_time - ns <= child.start_time <= child.end_time
            assert child.end_time <= segment.end_time + ns
        assert queue.end_time == phonemize.start_time and phonemize.end_time == inference.start_time
        assert phonemize.end_time is not None and inference.end_time is not None
        call_ns = inference.end_time - phonemize.start_time  # type: ignore[operator]
        assert call_ns == pytest.approx(message["gen_ms"] * 1e6, abs=ns)
        assert send.end_time == segment.end_time
    assert stream.start_time is not None and stream.end_time is not None
    assert stream.start_time <= segments[0].start_time + ns  # type: ignore[operator]
    assert segments[-1].end_time <= stream.end_time  # type: ignore[operator]


@pytest.mark.model
async def test_segment_text_is_traced_only_when_enabled(
    settings: Settings, synthesizer: Synthesizer
) -> None:
    tracer, exporter = in_memory(include_text=True)
    client = await traced_stream(settings, synthesizer, tracer)
    texts = [
        span.attributes[tracing.SEGMENT_TEXT]
        for span in by_name(exporter.get_finished_spans(), "segment")
        if span.attributes is not None
    ]
    assert texts == [m["text"] for m in client.streams["s"].of_type("segment")]

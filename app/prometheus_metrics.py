"""Prometheus metrics for ``GET /metrics`` (prometheus-client, text exposition format).

Two kinds. Event metrics (histograms and counters) are recorded as things happen: the metrics
actor records stream and segment events, the chunkers record frames sent and clients' ``played``
reports. Live metrics (gauges, and counters the pipeline already keeps) are read from the
pipeline when Prometheus scrapes, so they cannot drift from ``/v1/stats``. Each server has its
own registry (tests run several servers in one process), with the standard process metrics
(``process_resident_memory_bytes`` and the rest) in it.

Names follow Prometheus conventions: a ``kokoro_`` prefix, base units in the name (seconds,
bytes), ``_total`` for counters. README.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.bench_history import RecordedRun
    from app.memory_pressure import MemoryMonitor
    from app.pipeline import Pipeline

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
GENERATION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
RTF_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0)
LEAD_BUCKETS = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PrometheusMetrics:
    """One server's registry and the metrics recorded as events happen."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.registry = registry
        ProcessCollector(registry=registry)
        self.ttfa = Histogram(
            "kokoro_ttfa_seconds",
            "Time to first audio: from receiving the text that completed a stream's first "
            "segment to writing its first audio frame.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stream_rtf = Histogram(
            "kokoro_stream_rtf",
            "Real-time factor of finished streams: generation seconds per audio second.",
            buckets=RTF_BUCKETS,
            registry=registry,
        )
        self.segment_generation = Histogram(
            "kokoro_segment_generation_seconds",
            "Time to synthesize one segment, by execution provider.",
            ["provider"],
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "kokoro_segment_queue_wait_seconds",
            "Time a segment waited in the scheduler before an inference session took it.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audio_generated = Counter(
            "kokoro_audio_generated_seconds_total",
            "Audio synthesized (before silence trimming), by execution provider.",
            ["provider"],
            registry=registry,
        )
        self.streams_started = Counter(
            "kokoro_streams_started_total", "Streams admitted and opened.", registry=registry
        )
        self.streams_finished = Counter(
            "kokoro_streams_finished_total",
            "Streams ended, by reason (complete, cancelled, error, timeout, shutdown).",
            ["reason"],
            registry=registry,
        )
        self.frames_sent = Counter(
            "kokoro_frames_sent_total", "Audio frames written to clients.", registry=registry
        )
        self.audio_bytes_sent = Counter(
            "kokoro_audio_sent_bytes_total",
            "Encoded audio bytes written to clients (frame payloads).",
            registry=registry,
        )
        self.client_underruns = Counter(
            "kokoro_client_underruns_total",
            "Underruns clients reported in their played messages.",
            registry=registry,
        )
        self.client_lead = Histogram(
            "kokoro_client_lead_seconds",
            "Audio a client held ahead of its playback, at each played report.",
            buckets=LEAD_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "kokoro_event_loop_lag_seconds",
            "How much later than asked the event loop ran a 50 ms probe timer: the delay every "
            "message, frame and request met at that moment.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )

        self.benchmark_runs = Counter(
            "kokoro_benchmark_runs_total",
            "Scheduled engine benchmark runs, by result (ok, regression, failed).",
            ["result"],
            registry=registry,
        )
        self.benchmark_yields = Counter(
            "kokoro_benchmark_yields_total",
            "Benchmark model calls cut short because user work arrived.",
            registry=registry,
        )

    def watch(self, pipeline: Callable[[], Pipeline | None]) -> None:
        """Serve the live metrics of whichever pipeline runs at scrape time."""
        self.registry.register(_LiveCollector(pipeline))

    def watch_memory(self, monitor: MemoryMonitor) -> None:
        """Export the memory monitor's reading, level and refusals."""
        self.registry.register(_MemoryCollector(monitor))

    def watch_benchmark(self, last_run: Callable[[], RecordedRun | None]) -> None:
        """Export the newest engine benchmark run in the serving environment (none: nothing)."""
        self.registry.register(_BenchmarkCollector(last_run))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    """Gauges and counters read from the running pipeline at scrape time."""

    def __init__(self, pipeline: Callable[[], Pipeline | None]) -> None:
        self._pipeline = pipeline

    def describe(self) -> list[Metric]:
        return []  # unknown until the pipeline runs; collected at every scrape

    def collect(self) -> Iterator[Metric]:
        pipeline = self._pipeline()
        if pipeline is None:
            return
        admission, scheduler = pipeline.admission, pipeline.scheduler
        yield _gauge("kokoro_active_streams", "Open streams.", pipeline.active_streams)
        yield _gauge(
            "kokoro_synthesizing_streams",
            "Streams still being synthesized (what admission counts).",
            admission.generating,
        )
        yield _gauge(
            "kokoro_capacity_streams",
            "Streams that may be synthesizing at once (admission control's limit).",
            admission.capacity(),
        )
        yield _gauge(
            "kokoro_throughput_audio_seconds_per_second",
            "Audio the healthy sessions produce per second with all busy (measured).",
            scheduler.throughput(),
        )
        yield _counter(
            "kokoro_admissions_refused", "Stream starts answered busy.", admission.refused
        )
        yield _gauge(
            "kokoro_scheduler_queued_segments",
            "Segments waiting in the scheduler.",
            scheduler.queued_jobs,
        )
        yield _counter(
            "kokoro_inference_retries",
            "Segments run again on another session after a failure (fallback).",
            scheduler.retries,
        )
        yield _counter(
            "kokoro_inference_given_up",
            "Segments abandoned after repeated failures (their streams ended with an error).",
            scheduler.given_up,
        )
        yield _counter(
            "kokoro_work_ahead_preemptions",
            "Work-ahead segments aborted so that a due segment could run.",
            scheduler.preemptions,
        )
        healthy = GaugeMetricFamily(
            "kokoro_inference_session_healthy",
            "1 while an inference session is in rotation, 0 while its circuit breaker is open.",
            labels=["session", "provider"],
        )
        failures = CounterMetricFamily(
            "kokoro_inference_failures",
            "Inference calls that raised or timed out, by session.",
            labels=["session", "provider"],
        )
        for worker in pipeline.workers:
            labels = [worker.name, worker.provider]
            healthy.add_metric(labels, 1.0 if worker.health.value == "ok" else 0.0)
            failures.add_metric(labels, worker.failures)
        yield healthy
        yield failures
        ratio = GaugeMetricFamily(
            "kokoro_live_ratio",
            "Production speed over the benchmark's prediction: median engine time of segments "
            "that ran alone (rtf), 95th percentile TTFA over the first segment's (ttfa).",
            labels=["signal"],
        )
        degraded = GaugeMetricFamily(
            "kokoro_live_degraded",
            "1 while a live signal exceeds its limit against the benchmark baseline, else 0.",
            labels=["signal"],
        )
        for verdict in pipeline.metrics.live.verdicts():
            if verdict.ratio is not None:
                ratio.add_metric([verdict.signal], verdict.ratio)
            degraded.add_metric([verdict.signal], float(verdict.degraded))
        yield ratio
        yield degraded


class _MemoryCollector(Collector):
    def __init__(self, monitor: MemoryMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        monitor = self._monitor
        yield _gauge(
            "kokoro_memory_pressure_level",
            "0 normal, 1 arenas shrink after each call, 2 capacity halved, 3 new streams refused.",
            int(monitor.level),
        )
        reading = monitor.reading
        if reading is not None:
            yield _gauge(
                "kokoro_memory_used_bytes",
                "Memory in use against the binding limit (see kokoro_memory_limit_bytes).",
                reading.used_bytes,
            )
            yield _gauge(
                "kokoro_memory_limit_bytes",
                "The tightest memory limit: configured, cgroup or the machine's.",
                reading.limit_bytes,
            )
        entered = CounterMetricFamily(
            "kokoro_memory_pressure_entered",
            "Times memory pressure rose to each level.",
            labels=["level"],
        )
        for level, count in monitor.entered.items():
            if level != "normal":
                entered.add_metric([level], count)
        yield entered
        yield _counter(
            "kokoro_memory_refusals",
            "Streams and HTTP requests refused because memory was low.",
            monitor.refused,
        )


class _BenchmarkCollector(Collector):
    def __init__(self, last_run: Callable[[], RecordedRun | None]) -> None:
        self._last_run = last_run

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        run = self._last_run()
        if run is None:
            return
        yield _gauge(
            "kokoro_benchmark_rtf",
            "Median RTF of the newest engine benchmark run in the serving environment.",
            run.verdict.value,
        )
        yield _gauge(
            "kokoro_benchmark_regression",
            "1 if that run was judged a regression against the runs before it, else 0.",
            float(run.verdict.regression),
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)

"""Prometheus metrics of the background roles (worker, consumer), served on HC_METRICS_PORT.

The API serves its own at /metrics. A role started with a metrics port serves this process's
default registry: the counters below, the Temporal SDK's own metrics (`temporal_*`: task latencies,
slots, pollers, sticky cache; see `TemporalSdkMetrics`), plus the client library's process metrics
(CPU, memory, open files) and Python's (GC). Labels never carry ids or patient data.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

from healthcare.logging import get_logger
from healthcare.settings import Settings

log = get_logger(__name__)

OUTBOX_PUBLISHED = Counter("healthcare_outbox_published", "Outbox events acknowledged by Kafka")
OUTBOX_SEND_FAILURES = Counter("healthcare_outbox_send_failures", "Outbox events whose send failed (retried)")
OUTBOX_ROUNDS_FAILED = Counter("healthcare_outbox_rounds_failed", "Relay rounds that failed as a whole")
OUTBOX_PARKED_TOTAL = Counter(
    "healthcare_outbox_rows_parked",
    "Outbox rows parked after too many failed sends (see `healthcare outbox list`)",
)
OUTBOX_PARKED = Gauge("healthcare_outbox_parked", "Outbox rows parked now: never sent until requeued")
OUTBOX_PENDING = Gauge("healthcare_outbox_pending", "Outbox rows waiting to be sent (parked ones apart)")
OUTBOX_OLDEST_PENDING_SECONDS = Gauge(
    "healthcare_outbox_oldest_pending_seconds", "Age of the oldest outbox row waiting to be sent"
)
BILLING_EVENTS = Counter(
    "healthcare_billing_events",
    "Appointment events the billing consumer handled, by outcome",
    # accepted | synthetic (a benchmark's, skipped) | dead_lettered | refused (for now: read again)
    ["outcome"],
)
BILLING_DEAD_LETTERED = Counter(
    "healthcare_billing_dead_lettered",
    "Appointment events parked on the dead-letter topic, by reason (a RefusalReason)",
    ["reason"],
)
BILLING_DEAD_LETTERS_WAITING = Gauge(
    "healthcare_billing_dead_letters_waiting",
    "Dead letters not yet redriven (`healthcare billing dlq list`)",
)
BILLING_RUNS_NEEDING_ATTENTION = Gauge(
    "healthcare_billing_runs_needing_attention",
    "Billing runs waiting for an operator: their PDF failed for good (`healthcare billing reconcile`)",
)
WORKER_GC_PAUSE_SECONDS = Histogram(
    "healthcare_worker_gc_pause_seconds",
    "Full garbage collections the worker runs on its interval (HC_WORKER_GC_INTERVAL_SECONDS)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BILLING_CONSUMER_LAG = Gauge(
    "healthcare_billing_consumer_lag",
    "Appointment events on the topic that the billing consumer has not committed yet, per partition",
    ["topic", "partition"],
)

# Seconds: from a local activity's milliseconds to a PDF render's minutes.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
Labels = tuple[tuple[str, str], ...]


@dataclass
class _Series:
    kind: int
    description: str
    unit: str
    values: dict[Labels, float] = field(default_factory=dict)  # counters and gauges
    buckets: dict[Labels, list[int]] = field(default_factory=dict)  # histograms: per-bucket counts
    sums: dict[Labels, float] = field(default_factory=dict)


class TemporalSdkMetrics(Collector):
    """The Temporal SDK's metrics, forwarded into this process's Prometheus registry.

    The SDK (its Rust core) writes metric updates into a buffer; `drain` folds them into
    cumulative series, and every scrape drains first, so one endpoint per role carries both our
    metrics and the SDK's. `drain` must also run often between scrapes (the worker calls it every
    second): a full buffer drops updates.
    """

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()

    def drain(self) -> int:
        with self._lock:
            updates = self._buffer.retrieve_updates()
            for update in updates:
                metric = update.metric
                series = self._series.setdefault(
                    metric.name, _Series(metric.kind, metric.description or "", metric.unit or "")
                )
                labels = _labels(update.attributes)
                if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
                    series.values[labels] = series.values.get(labels, 0.0) + update.value
                elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
                    series.values[labels] = float(update.value)
                else:
                    counts = series.buckets.setdefault(labels, [0] * (len(DURATION_BUCKETS) + 1))
                    counts[bisect.bisect_left(DURATION_BUCKETS, update.value)] += 1
                    series.sums[labels] = series.sums.get(labels, 0.0) + update.value
            return len(updates)

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            for name, series in sorted(self._series.items()):
                yield from _families(name, series)


def _labels(attributes: Mapping[str, str | int | float | bool]) -> Labels:
    return tuple(
        sorted((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in attributes.items())
    )


def _families(name: str, series: _Series) -> Iterator[Metric]:
    keys = sorted({k for labels in [*series.values, *series.buckets] for k, _ in labels})

    def values(labels: Labels) -> list[str]:
        given = dict(labels)
        return [given.get(k, "") for k in keys]

    if series.kind == BUFFERED_METRIC_KIND_COUNTER:
        counter = CounterMetricFamily(name, series.description, labels=keys)
        for labels, value in series.values.items():
            counter.add_metric(values(labels), value)
        yield counter
    elif series.kind == BUFFERED_METRIC_KIND_GAUGE:
        gauge = GaugeMetricFamily(name, series.description, labels=keys)
        for labels, value in series.values.items():
            gauge.add_metric(values(labels), value)
        yield gauge
    else:
        suffix = "_seconds" if series.unit in ("s", "seconds") else ""
        histogram = HistogramMetricFamily(f"{name}{suffix}", series.description, labels=keys)
        for labels, counts in series.buckets.items():
            running, cumulative = 0, []
            for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            histogram.add_metric(values(labels), cumulative, series.sums[labels])
        yield histogram


_sdk_metrics: TemporalSdkMetrics | None = None


def temporal_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime whose SDK metrics land in this registry, when the role serves metrics;
    None (the SDK's default runtime, metrics off) otherwise. One per process."""
    global _sdk_metrics  # noqa: PLW0603 - the registry is process-wide; so is the runtime feeding it
    if not settings.metrics_port:
        return None
    if _sdk_metrics is not None:
        raise RuntimeError("temporal_runtime() is called once per process")
    buffer = MetricBuffer(100_000, MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    _sdk_metrics = TemporalSdkMetrics(buffer)
    REGISTRY.register(_sdk_metrics)
    return runtime


async def drain_temporal_metrics_until(stop: asyncio.Event, interval: float = 1.0) -> None:
    """Move buffered SDK metric updates into the registry every `interval` seconds until `stop`."""
    while _sdk_metrics is not None and not stop.is_set():
        _sdk_metrics.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def serve(settings: Settings) -> None:
    """Start the metrics listener when the role has a port (a thread; it stops with the process)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("metrics served", host=settings.metrics_host, port=settings.metrics_port)

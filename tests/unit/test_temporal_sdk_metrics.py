"""The Temporal SDK's buffered metric updates become cumulative Prometheus series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    MetricBuffer,
)

from healthcare.metrics import TemporalSdkMetrics


@dataclass(frozen=True)
class Metric:
    name: str
    kind: int
    unit: str | None = None
    description: str | None = "a metric"


@dataclass(frozen=True)
class Update:
    metric: Metric
    value: float
    attributes: dict[str, Any]


class Buffer:
    """Hands out what the SDK's core would have written since the last drain."""

    def __init__(self) -> None:
        self.pending: list[Update] = []

    def retrieve_updates(self) -> list[Update]:
        out, self.pending = self.pending, []
        return out


TASKS = Metric("temporal_workflow_completed", BUFFERED_METRIC_KIND_COUNTER)
SLOTS = Metric("temporal_worker_task_slots_available", BUFFERED_METRIC_KIND_GAUGE)
LATENCY = Metric("temporal_workflow_task_execution_latency", BUFFERED_METRIC_KIND_HISTOGRAM, unit="s")
QUEUE = {"namespace": "default", "task_queue": "healthcare"}


def scrape(buffer: Buffer) -> str:
    registry = CollectorRegistry()
    registry.register(TemporalSdkMetrics(cast(MetricBuffer, buffer)))
    return generate_latest(registry).decode()


def test_counters_add_gauges_replace_histograms_bucket() -> None:
    buffer = Buffer()
    collector = TemporalSdkMetrics(cast(MetricBuffer, buffer))
    registry = CollectorRegistry()
    registry.register(collector)
    buffer.pending = [
        Update(TASKS, 1, {**QUEUE, "workflow_type": "Billing"}),
        Update(TASKS, 2, {**QUEUE, "workflow_type": "Billing"}),
        Update(SLOTS, 100, {**QUEUE, "worker_type": "ActivityWorker", "eager": True}),
        Update(SLOTS, 97, {**QUEUE, "worker_type": "ActivityWorker", "eager": True}),
        Update(LATENCY, 0.004, QUEUE),
        Update(LATENCY, 0.02, QUEUE),
        Update(LATENCY, 400.0, QUEUE),
    ]
    collector.drain()  # between scrapes, as the worker does every second
    buffer.pending = [Update(TASKS, 4, {**QUEUE, "workflow_type": "Billing"})]
    text = generate_latest(registry).decode()
    billing = 'namespace="default",task_queue="healthcare",workflow_type="Billing"'
    assert f"temporal_workflow_completed_total{{{billing}}} 7.0" in text
    assert 'eager="true"' in text and "} 97.0" in text
    series = 'namespace="default",task_queue="healthcare"'
    assert f'temporal_workflow_task_execution_latency_seconds_bucket{{le="0.005",{series}}} 1.0' in text
    assert f'temporal_workflow_task_execution_latency_seconds_bucket{{le="0.025",{series}}} 2.0' in text
    assert f'temporal_workflow_task_execution_latency_seconds_bucket{{le="+Inf",{series}}} 3.0' in text
    assert f"temporal_workflow_task_execution_latency_seconds_count{{{series}}} 3.0" in text
    # A later scrape with nothing new keeps the totals: the series are cumulative.
    assert 'workflow_type="Billing"} 7.0' in generate_latest(registry).decode()


def test_an_empty_buffer_exports_nothing() -> None:
    assert scrape(Buffer()) == ""

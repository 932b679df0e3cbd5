"""Prometheus metrics of the background roles (worker, consumer), served on HC_METRICS_PORT.

The API serves its own at /metrics. A role started with a metrics port serves this process's
default registry: the counters below plus the client library's process metrics (CPU, memory,
open files) and Python's (GC). Labels never carry ids or patient data.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

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


def serve(settings: Settings) -> None:
    """Start the metrics listener when the role has a port (a thread; it stops with the process)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("metrics served", host=settings.metrics_host, port=settings.metrics_port)

"""The Temporal worker role: runs every workflow and activity on the platform's task queue."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient
from temporalio.worker import PollerBehaviorAutoscaling, UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.appointments import AppointmentActivities
from activities.billing import BillingActivities
from activities.diagnostics import DiagnosticsActivities
from healthcare import clients, metrics, probes
from healthcare.db import create_engine, session_factory
from healthcare.logging import get_logger
from healthcare.outbox import OutboxRelay
from healthcare.process import run_until_stopped
from healthcare.settings import Settings
from healthcare.stores.factory import patient_store_factory
from services import audit
from services.billing import NEEDS_ATTENTION_QUERY
from workflows.appointments import AppointmentWorkflow
from workflows.billing import BillingWorkflow
from workflows.diagnostics import DiagnosticsWorkflow

log = get_logger(__name__)

# The contracts package (pure by rule: stdlib and pydantic) and pydantic with what it imports.
PASSTHROUGH_MODULES = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "healthcare.contracts",
    "opentelemetry",  # the tracing interceptor's spans use the process's tracer provider
)
WORKFLOWS = [DiagnosticsWorkflow, AppointmentWorkflow, BillingWorkflow]
ATTENTION_GAUGE_INTERVAL = 30.0


def workflow_runner(settings: Settings) -> WorkflowRunner:
    if not settings.temporal_workflow_sandbox:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        # Deterministic, side-effect-free modules are shared with the sandbox instead of being
        # re-imported for every workflow run (pydantic's import alone dominated worker CPU).
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


async def collect_garbage(stop: asyncio.Event, interval: float) -> None:
    """A full garbage collection every `interval` seconds until `stop`. A workflow run evicted from
    the sticky cache is garbage in Python's oldest generation (cycles of its sandboxed module and
    instance). The roles' thresholds (`healthcare.process.tune_gc`, which also freezes start-up
    objects) make a full collection wait for millions of allocations, which a worker makes slowly,
    so without this its memory climbs for minutes between collections. 0 turns it off."""
    while interval > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        started = time.perf_counter()
        gc.collect()
        metrics.WORKER_GC_PAUSE_SECONDS.observe(time.perf_counter() - started)


async def report_runs_needing_attention(
    client: TemporalClient, stop: asyncio.Event, interval: float = ATTENTION_GAUGE_INTERVAL
) -> None:
    """Keep the gauge of billing runs waiting for an operator up to date (best effort)."""
    while not stop.is_set():
        try:
            count = await client.count_workflows(NEEDS_ATTENTION_QUERY)
            metrics.BILLING_RUNS_NEEDING_ATTENTION.set(count.count)
        except Exception as exc:  # noqa: BLE001 - a gauge must not stop the worker
            log.warning("needs-attention gauge failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def worker_options(settings: Settings) -> dict[str, Any]:
    """The Worker settings the platform runs with (bench.bare runs its no-op pipeline with these too)."""
    return dict(
        graceful_shutdown_timeout=timedelta(seconds=10),
        # New workflows arrive on the shared (non-sticky) queue. With the default five pollers,
        # only one of which polls that queue, each new run waited a long-poll round trip for a
        # free poller; autoscaling pollers follow the backlog the server reports instead.
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        workflow_runner=workflow_runner(settings),
        max_cached_workflows=settings.worker_max_cached_workflows,
    )


async def run_worker(settings: Settings, *, stop: asyncio.Event) -> None:
    client = await clients.temporal_client(settings, runtime=metrics.temporal_runtime(settings))
    missing = await probes.missing_search_attributes(client, settings.temporal_namespace)
    if missing:
        # Refuse to start: runs that set them would retry their workflow tasks for ever, unseen.
        raise SystemExit(
            f"worker: namespace {settings.temporal_namespace} lacks search attributes {missing} "
            "(register each: temporal operator search-attribute create --name NAME --type Keyword)"
        )
    if missing is None:
        log.warning("could not list the namespace's search attributes; not checked")
    # No pre-ping: an activity that meets a connection broken by a database restart fails one
    # attempt, SQLAlchemy refreshes the pool and Temporal retries; pinging cost a round trip per step.
    engine = create_engine(settings, pre_ping=False)
    producer = clients.kafka_producer(settings)
    await producer.start()
    diagnostics = DiagnosticsActivities(engine=engine)
    audit_key = settings.audit_hmac_key.get_secret_value().encode()
    appointments = AppointmentActivities(
        engine=engine,
        topic=settings.topic_appointment_events,
        patient_store=patient_store_factory(settings),
        audit_key=audit_key,
    )
    billing = BillingActivities(
        engine=engine,
        lambda_client=clients.lambda_client(settings, read_timeout=60),
        function_name=settings.lambda_function_name,
        patient_store=patient_store_factory(settings),
        currency=settings.clinic_currency,
        audit_key=audit_key,
    )
    worker = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=[
            diagnostics.check_database,
            appointments.check_parties,
            appointments.store,
            appointments.set_status,
            billing.price_visit,
            billing.record_invoice,
            billing.render_pdf,
            billing.issue,
            billing.set_status,
            billing.record_pdf,
        ],
        **worker_options(settings),
    )
    # The outbox relay publishes the events that activities queue with their row changes. It stops
    # after the worker (activities finishing during the graceful shutdown queue events too) and
    # before the producer; should it ever end on its own, the process stops and is restarted.
    relay_stop = asyncio.Event()
    relay = asyncio.create_task(
        OutboxRelay(engine=engine, producer=producer, max_attempts=settings.outbox_max_attempts).run(
            relay_stop
        )
    )
    relay.add_done_callback(lambda _task: stop.set())
    sdk_metrics = asyncio.create_task(metrics.drain_temporal_metrics_until(stop))
    gauge = asyncio.create_task(report_runs_needing_attention(client, stop))
    anchors = asyncio.create_task(anchor_audit_trail(settings, engine, relay_stop))
    collector = asyncio.create_task(collect_garbage(stop, settings.worker_gc_interval_seconds))
    log.info("worker started", task_queue=settings.temporal_task_queue)
    try:
        async with worker:
            await stop.wait()
    finally:
        sdk_metrics.cancel()
        relay_stop.set()
        gauge.cancel()
        await asyncio.gather(relay, gauge, anchors, collector, return_exceptions=True)
        await producer.stop()
        await engine.dispose()
        log.info("worker stopped")


async def anchor_audit_trail(settings: Settings, engine: AsyncEngine, stop: asyncio.Event) -> None:
    """Write the audit chain's head to object storage every HC_AUDIT_ANCHOR_INTERVAL_SECONDS (when
    it grew), so `healthcare audit verify` detects a deleted tail. Several workers may each write:
    an anchor's key is its record's number, so they write the same objects."""
    interval = settings.audit_anchor_interval_seconds
    if interval <= 0:
        return
    s3 = clients.s3_client(settings)
    sessions = session_factory(engine)
    key = settings.audit_hmac_key.get_secret_value().encode()
    last: int | None = None
    while not stop.is_set():
        try:
            async with sessions() as session:
                anchor = await audit.write_anchor(
                    session,
                    s3,
                    bucket=settings.s3_bucket,
                    prefix=settings.audit_anchor_prefix,
                    key=key,
                    after_seq=last,
                )
            if anchor is not None:
                last = anchor.seq
                log.info("audit chain anchored", seq=anchor.seq)
        except Exception as exc:  # noqa: BLE001 - storage or database down: try again next round
            log.warning("audit anchor failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def main() -> None:
    run_until_stopped(lambda settings, stop: run_worker(settings, stop=stop), name="worker")


if __name__ == "__main__":
    main()

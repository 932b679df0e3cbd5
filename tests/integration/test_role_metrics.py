"""The worker and the billing consumer serve Prometheus metrics, and a booking moves their counters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from healthcare.settings import get_settings
from tests.integration.factories import Account, create_doctor, create_patient
from tests.waiting import eventually

WORKER_METRICS_PORT = get_settings().stack_port("worker_metrics")
CONSUMER_METRICS_PORT = get_settings().stack_port("consumer_metrics")


async def _counter(port: int, name: str, labels: str = "") -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_booking_is_counted_by_the_outbox_relay_and_the_billing_consumer(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    published = "healthcare_outbox_published_total"
    accepted = ("healthcare_billing_events_total", '{outcome="accepted"}')
    before = (
        await _counter(WORKER_METRICS_PORT, published),
        await _counter(CONSUMER_METRICS_PORT, *accepted),
    )

    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    slot = (datetime.now(UTC) + timedelta(days=25)).replace(minute=0, second=0, microsecond=0)
    body = {"patientId": patient["id"], "doctorId": doctor["id"], "time": slot.isoformat()}
    assert (await api.post("/api/v1/appointments", json=body, headers=staff.headers)).status_code == 201

    async def counted() -> bool:
        after = (
            await _counter(WORKER_METRICS_PORT, published),
            await _counter(CONSUMER_METRICS_PORT, *accepted),
        )
        assert after[0] > before[0] and after[1] > before[1], (before, after)
        return True

    await eventually(counted, timeout=60, interval=0.5, what="the published and accepted counters")
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics")).text
    assert "process_resident_memory_bytes" in text  # the process collector is there too
    assert patient["id"] not in text and doctor["id"] not in text  # labels carry no ids
    # The Temporal SDK's own worker metrics, on the same endpoint.
    for name in (
        "temporal_workflow_task_execution_latency_seconds_count",
        "temporal_activity_execution_latency_seconds_bucket",
        "temporal_worker_task_slots_available",
        "temporal_sticky_cache_size",
        "temporal_num_pollers",
    ):
        assert re.search(rf"^{name}{{[^}}]*task_queue=\"healthcare\"", text, re.MULTILINE), name
    async with httpx.AsyncClient(timeout=5) as http:
        consumer = (await http.get(f"http://127.0.0.1:{CONSUMER_METRICS_PORT}/metrics")).text
    topic = re.escape(get_settings().topic_appointment_events)
    lag = re.findall(
        rf'^healthcare_billing_consumer_lag\{{partition="\d+",topic="{topic}"\}} (\S+)$',
        consumer,
        re.MULTILINE,
    )
    assert lag and all(float(v) >= 0 for v in lag)
    assert "temporal_request_latency_seconds_count" in consumer  # the consumer's client calls

"""Invoices with PDF per second and booking → ISSUED latency, against a non-durable baseline.

Run by `make bench`, or with the bench stack up (`HC_PROFILE=bench make up`):
`HC_PROFILE=bench python -m bench.billing [--seconds 60] [--rate 20]`.

Both phases book appointments through the API at the same steady rate, so each bills the same
events under the same booking load; only the billing differs.
- Durable: the real pipeline (outbox → Kafka → billing consumer → billing workflow → Lambda PDF →
  invoice ISSUED). Latency is invoices.issued_at - appointments.created_at, read from PostgreSQL.
- Baseline: the billing consumer is frozen (SIGSTOP) and a plain consumer of the same topic does
  the same work without Temporal: reads the doctor's fee and the names, invokes the same Lambda
  (as many calls at once as the pool has emulators) and inserts a row into a scratch table.
  Afterwards the real consumer resumes and bills those appointments too (after the measurement).
Each phase also prints the CPU each stack component spent per invoice (from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from bench import table
from bench.common import (
    admin_headers,
    base_url,
    billing_consumer_frozen,
    component_cpu_seconds,
    cpu_per_item,
    cpu_used,
)
from healthcare import clients
from healthcare.contracts.events import AppointmentEvent
from healthcare.db import create_engine
from healthcare.settings import get_settings

LAMBDA_CONCURRENCY = 2  # the local pool runs two emulators


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(p / 100 * len(data)))] if data else float("nan")


async def steady(rate: float, seconds: float, fire) -> int:  # type: ignore[no-untyped-def]
    """Call `fire(i)` `rate` times a second for `seconds`, without waiting for answers."""
    tasks = []
    began = time.perf_counter()
    i = 0
    while (elapsed := time.perf_counter() - began) < seconds:
        if i < elapsed * rate:
            tasks.append(asyncio.create_task(fire(i)))
            i += 1
        else:
            await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return i


async def book_steadily(rate: float, seconds: float) -> list[uuid.UUID]:
    """Book through the API at `rate` per second for `seconds`; every slot is distinct."""
    async with httpx.AsyncClient(base_url=base_url(), timeout=60) as client:
        headers = await admin_headers(client)
        doctors = [
            (
                await client.post(
                    "/api/v1/doctors",
                    json={"name": f"Bill Dr {i}", "specialty": "GP", "fee": "100"},
                    headers=headers,
                )
            ).json()["id"]
            for i in range(20)
        ]
        patients = [
            (
                await client.post("/api/v1/patients", json={"name": f"Bill Patient {i}"}, headers=headers)
            ).json()["id"]
            for i in range(20)
        ]
        # Fresh doctors and patients per phase, and consecutive slots 31 minutes apart: no overlaps.
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=60)
        booked: list[uuid.UUID] = []

        async def fire(i: int) -> None:
            body = {
                "patientId": patients[i % 20],
                "doctorId": doctors[i % 20],
                "time": (start + timedelta(minutes=31 * i)).isoformat(),
            }
            resp = await client.post("/api/v1/appointments", json=body, headers=headers)
            if resp.status_code == 201:
                booked.append(uuid.UUID(resp.json()["id"]))

        await steady(rate, seconds, fire)
    return booked


async def durable(rate: float, seconds: float) -> tuple[float, list[float], int]:
    engine = create_engine(get_settings())
    began = datetime.now(UTC)
    ids = await book_steadily(rate, seconds)
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        async with engine.connect() as conn:
            issued = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM invoices WHERE appointment_id = ANY(:ids) AND status = 'ISSUED'"
                    ),
                    {"ids": ids},
                )
            ).scalar_one()
        if issued >= len(ids):
            break
        await asyncio.sleep(0.5)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM i.issued_at - a.created_at) * 1000, i.issued_at "
                    "FROM invoices i JOIN appointments a ON a.id = i.appointment_id "
                    "WHERE i.appointment_id = ANY(:ids) AND i.issued_at IS NOT NULL"
                ),
                {"ids": ids},
            )
        ).all()
    await engine.dispose()
    latencies = [float(r[0]) for r in rows]
    last = max((r[1] for r in rows), default=began)
    span = max((last - began).total_seconds(), 1e-9)
    return len(rows) / span, latencies, len(ids)


async def baseline(rate: float, seconds: float) -> tuple[float, list[float], int]:
    settings = get_settings()
    # The owner's role: the app role may not create tables (migration 0006).
    engine = create_engine(settings, url=settings.owner_database_url)
    table = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id uuid PRIMARY KEY, amount numeric, pdf_key text)"))
    lam = clients.lambda_client(settings)
    consumer = clients.kafka_consumer(
        settings,
        settings.topic_appointment_events,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # join and take the partitions before the bookings start
    latencies: list[float] = []
    done_at: list[float] = []
    slots = asyncio.Semaphore(LAMBDA_CONCURRENCY)
    ours: set[uuid.UUID] = set()

    async def handle(event: AppointmentEvent) -> None:
        async with engine.connect() as conn:
            fee, doctor = (
                await conn.execute(
                    text("SELECT fee, name FROM doctors WHERE id = :id"), {"id": event.doctor_id}
                )
            ).one()
            patient = (
                await conn.execute(text("SELECT name FROM patients WHERE id = :id"), {"id": event.patient_id})
            ).scalar()
        invoice_id = str(uuid.uuid4())
        payload = {
            "invoiceId": invoice_id,
            "patientId": str(event.patient_id),
            "amount": f"{fee:.2f}",
            "date": datetime.now(UTC).date().isoformat(),
            "status": "ISSUED",
            "patientName": patient,
            "doctorName": doctor,
            "appointmentTime": event.time.isoformat(),
        }
        async with slots:
            resp = await asyncio.to_thread(
                lam.invoke, FunctionName=settings.lambda_function_name, Payload=json.dumps(payload).encode()
            )
        body = json.loads(resp["Payload"].read())
        async with engine.begin() as conn:
            await conn.execute(
                text(f"INSERT INTO {table} VALUES (:id, :a, :k)"),
                {"id": invoice_id, "a": fee, "k": body["key"]},
            )
        latencies.append((datetime.now(UTC) - event.occurred_at).total_seconds() * 1000)
        done_at.append(time.perf_counter())

    stop = asyncio.Event()

    async def consume() -> None:
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set() or pending:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    event = AppointmentEvent.model_validate_json(r.value or b"")
                    if event.event == "APPOINTMENT_CREATED":
                        pending.add(asyncio.create_task(handle(event)))
            pending = {t for t in pending if not t.done()}
            if stop.is_set() and len(latencies) >= len(ours):
                break

    began = time.perf_counter()
    with billing_consumer_frozen():
        consumer_task = asyncio.create_task(consume())
        booked = await book_steadily(rate, seconds)
        ours.update(booked)
        stop.set()
        await asyncio.wait_for(consumer_task, 300)
    span = max(done_at, default=began) - began
    await consumer.stop()
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {table}"))
    await engine.dispose()
    return len(latencies) / max(span, 1e-9), latencies, len(booked)


async def measured(
    phase: Callable[[float, float], Awaitable[tuple[float, list[float], int]]], rate: float, seconds: float
) -> tuple[float, list[float], int, dict[str, float]]:
    before = component_cpu_seconds()
    result = await phase(rate, seconds)
    return (*result, cpu_used(before, component_cpu_seconds(), max(len(result[1]), 1)))


def cpu_line(per_item: dict[str, float]) -> str:
    return cpu_per_item({}, {k: v / 1000 for k, v in per_item.items()}, 1)


async def main(seconds: float, rate: float) -> None:
    d_rate, d_lat, d_n, d_cpu = await measured(durable, rate, seconds)
    b_rate, b_lat, b_n, b_cpu = await measured(baseline, rate, seconds)
    print(f"offered rate {rate:.0f}/s for {seconds:.0f}s")
    print(
        f"durable : {d_n} booked, {len(d_lat)} ISSUED with PDF, {d_rate:6.1f} invoices/s, "
        f"latency p50 {pct(d_lat, 50):7.0f} ms  p99 {pct(d_lat, 99):7.0f} ms"
    )
    print("   ", cpu_line(d_cpu))
    print(
        f"baseline: {b_n} booked, {len(b_lat)} invoiced, {b_rate:6.1f} invoices/s, "
        f"latency p50 {pct(b_lat, 50):7.0f} ms  p99 {pct(b_lat, 99):7.0f} ms"
    )
    print("   ", cpu_line(b_cpu))
    print(
        f"ratio durable/baseline throughput = {d_rate / b_rate:.2f} (goal >= 0.5); goal >= 50/s, p99 <= 2 s"
    )
    table.record("billing.offered.rate", rate, "/s")
    table.record("billing.durable.rate", d_rate, "/s")
    table.record("billing.baseline.rate", b_rate, "/s")
    table.record("billing.durable.p99", pct(d_lat, 99), "ms")
    table.record_cpu("billing.durable.cpu", d_cpu)
    table.record_cpu("billing.baseline.cpu", b_cpu)
    # End-to-end latency at a sustainable rate: the durable phase's, if it kept up with the offered
    # rate; otherwise a second durable phase at 80 % of the rate it reached (a backlog that grows
    # for the whole phase measures the phase's length, not the pipeline).
    s_rate, s_lat = rate, d_lat
    if d_rate < 0.95 * rate:
        s_rate = max(1.0, 0.8 * d_rate)
        _, s_lat, s_n = await durable(s_rate, seconds)
        print(
            f"sustainable: offered {s_rate:.1f}/s, {s_n} booked, {len(s_lat)} ISSUED, "
            f"latency p50 {pct(s_lat, 50):7.0f} ms  p99 {pct(s_lat, 99):7.0f} ms"
        )
    table.record("billing.sustainable.rate", s_rate, "/s")
    table.record("billing.sustainable.p50", pct(s_lat, 50), "ms")
    table.record("billing.sustainable.p99", pct(s_lat, 99), "ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rate))

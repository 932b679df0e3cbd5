"""Invoices with PDF per second and booking → ISSUED latency, against a non-durable baseline.

Run with the stack up (`make up`): `python -m bench.billing [--seconds 60] [--rate 20]`.

Durable: appointments are booked through the API at a steady rate; the real pipeline (Kafka →
billing consumer → billing workflow → Lambda PDF → invoice ISSUED) does the rest. Latency is
invoices.issued_at - appointments.created_at, read from PostgreSQL afterwards.
Baseline, in the same run: the same work without Temporal: a plain consumer of a scratch topic
prices the visit, invokes the same Lambda and inserts a row into a scratch table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from aiokafka.admin import NewTopic
from sqlalchemy import text

from bench.common import admin_headers, base_url
from healthcare import clients
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


async def durable(rate: float, seconds: float) -> tuple[float, list[float], int]:
    settings = get_settings()
    engine = create_engine(settings)
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
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=60)
        booked: list[str] = []

        async def fire(i: int) -> None:
            body = {
                "patientId": patients[i % 20],
                "doctorId": doctors[i % 20],
                "time": (start + timedelta(minutes=31 * i)).isoformat(),
            }
            resp = await client.post("/api/v1/appointments", json=body, headers=headers)
            if resp.status_code == 201:
                booked.append(resp.json()["id"])

        began = datetime.now(UTC)
        await steady(rate, seconds, fire)
    ids = [uuid.UUID(b) for b in booked]
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
        await asyncio.sleep(1)
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
    topic = f"bench-billing-baseline-{uuid.uuid4().hex[:8]}"
    admin = clients.kafka_admin(settings)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    engine = create_engine(settings)
    table = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id uuid PRIMARY KEY, amount numeric, pdf_key text)"))
        fee = (await conn.execute(text("SELECT fee FROM doctors LIMIT 1"))).scalar_one()
    lam = clients.lambda_client(settings)
    producer = clients.kafka_producer(settings)
    consumer = clients.kafka_consumer(settings, topic, group_id=f"bench-{uuid.uuid4().hex[:8]}")
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    slots = asyncio.Semaphore(LAMBDA_CONCURRENCY)

    async def handle(value: dict[str, float | str]) -> None:
        invoice_id = str(uuid.uuid4())
        payload = {
            "invoiceId": invoice_id,
            "patientId": "bench",
            "amount": f"{fee:.2f}",
            "date": datetime.now(UTC).date().isoformat(),
            "status": "ISSUED",
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
        latencies.append((time.time() - float(value["sentAt"])) * 1000)

    async def consume(total: int) -> None:
        pending: set[asyncio.Task[None]] = set()
        while len(latencies) < total:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    pending.add(asyncio.create_task(handle(json.loads(r.value))))
            pending = {t for t in pending if not t.done()}

    async def fire(_: int) -> None:
        await producer.send_and_wait(topic, json.dumps({"sentAt": time.time()}).encode())

    began = time.perf_counter()
    total = int(rate * seconds)
    consumer_task = asyncio.create_task(consume(total))
    sent = await steady(rate, seconds, fire)
    await asyncio.wait_for(consumer_task, 300)
    span = time.perf_counter() - began
    await producer.stop()
    await consumer.stop()
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {table}"))
    await engine.dispose()
    await admin.delete_topics([topic])
    await admin.close()
    return len(latencies) / span, latencies, sent


async def main(seconds: float, rate: float) -> None:
    d_rate, d_lat, d_n = await durable(rate, seconds)
    b_rate, b_lat, b_n = await baseline(rate, seconds)
    print(f"offered rate {rate:.0f}/s for {seconds:.0f}s")
    print(
        f"durable : {d_n} booked, {len(d_lat)} ISSUED with PDF, {d_rate:6.1f} invoices/s, "
        f"latency p50 {pct(d_lat, 50):7.0f} ms  p99 {pct(d_lat, 99):7.0f} ms"
    )
    print(
        f"baseline: {b_n} events, {len(b_lat)} invoiced, {b_rate:6.1f} invoices/s, "
        f"latency p50 {pct(b_lat, 50):7.0f} ms  p99 {pct(b_lat, 99):7.0f} ms"
    )
    print(
        f"ratio durable/baseline throughput = {d_rate / b_rate:.2f} (goal >= 0.5); goal >= 50/s, p99 <= 2 s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rate))

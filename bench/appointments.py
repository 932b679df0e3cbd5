"""Durable bookings per second and POST /appointments latency at a few concurrency levels.

Run by `make bench`, or with the bench stack up (`HC_PROFILE=bench make up`):
`HC_PROFILE=bench python -m bench.appointments [--seconds 20]`.
Baseline, measured in the same run: an authenticated GET /appointments/{id} (same HTTP, auth,
database and audit path, no Temporal), so the ratio shows what durability costs per request.
Each level also prints the CPU each stack component spent per booking (from /proc), which is what
shows where the time goes on a machine whose cores the whole stack shares. `--pause-billing`
freezes the billing consumer during the runs (SIGSTOP, then SIGCONT), so the figures are the
booking path's alone; its Kafka backlog is billed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import httpx

from bench import table
from bench.common import (
    admin_headers,
    base_url,
    billing_consumer_frozen,
    component_cpu_seconds,
    cpu_per_item,
    cpu_used,
    load,
)

DOCTORS = 40
PATIENTS = 40


async def main(seconds: float, levels: list[int], pause: bool) -> None:
    async with httpx.AsyncClient(
        base_url=base_url(), timeout=60, limits=httpx.Limits(max_connections=200)
    ) as client:
        headers = await admin_headers(client)
        doctors = [
            (
                await client.post(
                    "/api/v1/doctors",
                    json={"name": f"Bench Dr {i}", "specialty": "GP", "fee": "100"},
                    headers=headers,
                )
            ).json()["id"]
            for i in range(DOCTORS)
        ]
        patients = [
            (
                await client.post("/api/v1/patients", json={"name": f"Bench Patient {i}"}, headers=headers)
            ).json()["id"]
            for i in range(PATIENTS)
        ]
        # Every booking gets its own 30-minute slot: consecutive slots are 31 minutes apart, so no
        # doctor or patient ever overlaps (a 409 would be a bug here, and is counted as an error).
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=30)
        slots = itertools.count()

        async def book(_: int) -> httpx.Response:
            n = next(slots)
            body = {
                "patientId": patients[n % PATIENTS],
                "doctorId": doctors[n % DOCTORS],
                "time": (start + timedelta(minutes=31 * n)).isoformat(),
            }
            return await client.post("/api/v1/appointments", json=body, headers=headers)

        first = (await book(0)).json()

        async def read(_: int) -> httpx.Response:
            return await client.get(f"/api/v1/appointments/{first['id']}", headers=headers)

        baseline = await load("GET /appointments/{id} (baseline)", read, concurrency=4, seconds=seconds / 2)
        print(baseline.line())
        best: tuple[float, dict[str, float]] = (0.0, {})
        with billing_consumer_frozen(pause):
            for level in levels:
                before = component_cpu_seconds()
                run = await load(
                    f"POST /appointments (concurrency {level})", book, concurrency=level, seconds=seconds
                )
                after = component_cpu_seconds()
                print(run.line(), f"  p50 = {run.pct(50) / baseline.pct(50):.1f}x baseline")
                print("   ", cpu_per_item(before, after, run.ok))
                if run.rate > best[0]:
                    best = (run.rate, cpu_used(before, after, run.ok))
        # The table's figures: the best level's rate (saturation) and its CPU per booking.
        table.record("appointments.rate", best[0], "/s")
        table.record_cpu("appointments.cpu", best[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--pause-billing", action="store_true", help="freeze the billing consumer meanwhile")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.levels, args.pause_billing))

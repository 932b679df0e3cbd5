"""Login throughput against the bcrypt limit, and patient reads while logins saturate the hash pool.

Run by `make bench`, or with the bench stack up (`HC_PROFILE=bench make up`):
`HC_PROFILE=bench python -m bench.auth [--seconds 15]`.
Limit = cores / (time of one bcrypt hash at the configured cost), measured here in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import httpx

from bench import table
from bench.common import PASSWORD, admin_headers, base_url, load, median
from healthcare import security
from healthcare.settings import get_settings


def bcrypt_seconds(rounds: int, samples: int = 5) -> float:
    stored = security.hash_password(PASSWORD, rounds=rounds)
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        security.verify_password(PASSWORD, stored, rounds=rounds)
        times.append(time.perf_counter() - began)
    return median(times)


async def main(seconds: float, login_concurrency: int, read_concurrency: int) -> None:
    settings = get_settings()
    cores = os.cpu_count() or 1
    one_hash = bcrypt_seconds(settings.bcrypt_rounds)
    limit = cores / one_hash
    async with httpx.AsyncClient(base_url=base_url(), timeout=60) as client:
        headers = await admin_headers(client)
        users = []
        for _ in range(login_concurrency):
            email = f"bench-{uuid.uuid4().hex[:10]}@clinic.example.com"
            # Made by the admin: self-registration is throttled per address (and a benchmark is one).
            body = {"email": email, "password": PASSWORD, "role": "patient"}
            (await client.post("/api/v1/users", json=body, headers=headers)).raise_for_status()
            users.append(email)
        patient = (
            await client.post("/api/v1/patients", json={"name": "Bench Patient"}, headers=headers)
        ).json()

        async def login(i: int) -> httpx.Response:
            return await client.post(
                "/api/v1/auth/login", json={"email": users[i % len(users)], "password": PASSWORD}
            )

        async def read(_: int) -> httpx.Response:
            return await client.get(f"/api/v1/patients/{patient['id']}", headers=headers)

        idle_reads = await load(
            "GET /patients/{id} (idle)", read, concurrency=read_concurrency, seconds=seconds / 2
        )
        logins_alone = await load(
            "POST /auth/login (alone)", login, concurrency=login_concurrency, seconds=seconds
        )
        logins, busy_reads = await asyncio.gather(
            load("POST /auth/login (with reads)", login, concurrency=login_concurrency, seconds=seconds),
            load(
                "GET /patients/{id} (logins saturating)", read, concurrency=read_concurrency, seconds=seconds
            ),
        )

    print(
        f"bcrypt cost {settings.bcrypt_rounds}: one hash {one_hash * 1000:.1f} ms; {cores} cores "
        f"-> limit {limit:.1f} logins/s"
    )
    for run in (idle_reads, logins_alone, logins, busy_reads):
        print(run.line())
    table.record("auth.login.rate", logins_alone.rate, "/s")
    table.record("auth.login.limit", limit, "/s")
    table.record("auth.read.idle.p99", idle_reads.pct(99), "ms")
    table.record("auth.read.busy.p99", busy_reads.pct(99), "ms")
    print(f"login ratio (alone)     = {logins_alone.rate / limit:.2f} of the bcrypt limit (goal >= 0.8)")
    print(f"login ratio (with reads)= {logins.rate / limit:.2f} of the bcrypt limit")
    print(
        f"GET p99 while saturated = {busy_reads.pct(99):.1f} ms (goal <= 50 ms); "
        f"{busy_reads.pct(99) / idle_reads.pct(99):.1f}x the idle p99"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--login-concurrency", type=int, default=8)
    parser.add_argument("--read-concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.login_concurrency, args.read_concurrency))

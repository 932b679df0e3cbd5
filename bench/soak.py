"""Soak: booking → invoice load at 80 % of the saturation measured first, for MINUTES minutes.

Run by `make soak MINUTES=30` (a bench stack of its own, removed afterwards), or with the bench
stack up: `HC_PROFILE=bench python -m bench.soak --minutes 30`.

1. Saturation (`probe`): bookings in windows of `--probe-seconds`, the offered rate doubling from
   2/s while the invoices ISSUED keep up; the rate issued when they stop keeping up is saturation.
2. Load: bookings through the API at 80 % of that (or `--rate`), in windows of `--window` seconds.
   After each window one line: invoices ISSUED per second in the window, booking → ISSUED p50/p99 of
   the invoices issued in it, the backlog (booked 201, not yet ISSUED) and each component's memory.
3. Drain: the load stops; the backlog must reach zero within `--drain-seconds`.
Then each component's memory: first and last sample, growth per hour (least squares over the
samples after the first quarter, which is warm-up: JIT, caches, pools), of its PSS and of what it
holds: PSS less the pages of files it maps (`Pss_File`: binaries, libraries, Kafka's index files),
which are page cache the kernel takes back under pressure. Fails (exit 1) if the memory any
component holds keeps growing (`keeps_growing`) or the backlog never drains.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.billing import pct, steady
from bench.common import admin_headers, base_url, component_memory, require_own_stack
from healthcare.db import create_engine
from healthcare.settings import get_settings

MB = 1024 * 1024
LOAD_SHARE = 0.8
MIN_STEADY_SAMPLES = 6  # two per third, after the warm-up quarter


@dataclass(frozen=True)
class Growth:
    first_mb: float
    last_mb: float
    per_hour_mb: float
    growing: bool


def keeps_growing(
    samples: list[tuple[float, float]], *, min_rise_fraction: float = 0.05, min_rise_mb: float = 16.0
) -> Growth:
    """Memory samples (seconds, MB) of one component. Warm-up (the first quarter) is left out; the
    rest is cut in thirds. It keeps growing when each third's median is above the one before and
    the last third's is above the first's by more than `min_rise_fraction` and `min_rise_mb`
    (a plateau, a sawtooth of a garbage collector, or noise of a few MB is not growth)."""
    if not samples:
        return Growth(0.0, 0.0, 0.0, False)
    first_mb, last_mb = samples[0][1], samples[-1][1]
    steady = samples[len(samples) // 4 :]
    if len(steady) < MIN_STEADY_SAMPLES:
        return Growth(first_mb, last_mb, 0.0, False)
    ts, ms = [t for t, _ in steady], [m for _, m in steady]
    mean_t, mean_m = statistics.fmean(ts), statistics.fmean(ms)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in steady) / var if var else 0.0
    third = len(steady) // 3
    a, b, c = (statistics.median(part) for part in (ms[:third], ms[third : 2 * third], ms[2 * third :]))
    rise = c - a
    growing = a < b < c and rise > max(min_rise_fraction * a, min_rise_mb)
    return Growth(first_mb, last_mb, slope * 3600, growing)


async def issued_since(engine: AsyncEngine, ids: list[uuid.UUID], since: datetime) -> tuple[int, list[float]]:
    """(invoices ISSUED so far for `ids`, booking → ISSUED ms of those issued after `since`)."""
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM invoices WHERE appointment_id = ANY(:ids) AND issued_at IS NOT NULL"
                ),
                {"ids": ids},
            )
        ).scalar_one()
        rows = (
            await conn.execute(
                text(
                    "SELECT extract(epoch FROM i.issued_at - a.created_at) * 1000 FROM invoices i "
                    "JOIN appointments a ON a.id = i.appointment_id "
                    "WHERE i.appointment_id = ANY(:ids) AND i.issued_at >= :since"
                ),
                {"ids": ids, "since": since},
            )
        ).all()
    return int(total), [float(r[0]) for r in rows]


class Booker:
    """Books through the API at a steady rate, window after window, with one client, one set of
    doctors and patients, and slots that never overlap (31 minutes apart, one per booking)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._headers: dict[str, str] = {}
        self._doctors: list[str] = []
        self._patients: list[str] = []
        self._next = 0
        self._start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=90)
        self.booked: list[uuid.UUID] = []

    async def prepare(self, parties: int = 20) -> None:
        self._headers = await admin_headers(self._client)
        for i in range(parties):
            doctor = {"name": f"Soak Dr {i}", "specialty": "GP", "fee": "100"}
            resp = await self._client.post("/api/v1/doctors", json=doctor, headers=self._headers)
            self._doctors.append(resp.json()["id"])
            resp = await self._client.post(
                "/api/v1/patients", json={"name": f"Soak Patient {i}"}, headers=self._headers
            )
            self._patients.append(resp.json()["id"])

    async def window(self, rate: float, seconds: float) -> None:
        async def fire(_: int) -> None:
            n, self._next = self._next, self._next + 1
            body = {
                "patientId": self._patients[n % len(self._patients)],
                "doctorId": self._doctors[n % len(self._doctors)],
                "time": (self._start + timedelta(minutes=31 * n)).isoformat(),
            }
            resp = await self._client.post("/api/v1/appointments", json=body, headers=self._headers)
            if resp.status_code == 201:
                self.booked.append(uuid.UUID(resp.json()["id"]))

        await steady(rate, seconds, fire)


async def probe(booker: Booker, engine: AsyncEngine, args: argparse.Namespace) -> float:
    """The saturation rate: book in windows of `--probe-seconds`, doubling the rate from 2/s while
    the invoices ISSUED in a window keep up with it (90 %); what was issued per second in the first
    window that did not keep up is the saturation. The probe's backlog is drained before the soak."""
    rate = 2.0
    while True:
        since = datetime.now(UTC)
        await booker.window(rate, args.probe_seconds)
        _, latencies = await issued_since(engine, booker.booked, since)
        issued = len(latencies) / max((datetime.now(UTC) - since).total_seconds(), 1e-9)
        print(f"soak: probe offered {rate:.0f}/s, {issued:.1f} ISSUED/s", flush=True)
        if issued < 0.9 * rate or rate >= args.probe_max:
            break
        rate *= 2
    await drain(engine, booker.booked, args.drain_seconds)
    return min(issued, rate)


async def drain(engine: AsyncEngine, ids: list[uuid.UUID], seconds: float) -> float | None:
    """Seconds until every booking in `ids` is ISSUED, or None if that took longer than `seconds`."""
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        issued, _ = await issued_since(engine, ids, datetime.now(UTC))
        if issued >= len(ids):
            return time.perf_counter() - began
        await asyncio.sleep(1.0)
    return None


async def main(args: argparse.Namespace) -> int:
    require_own_stack()
    window = args.window or min(30.0, args.minutes * 60 / 12)
    engine = create_engine(get_settings())
    client = httpx.AsyncClient(base_url=base_url(), timeout=60)
    booker = Booker(client)
    await booker.prepare()
    if args.rate:
        rate = args.rate
        print(f"soak: offered rate {rate:.1f}/s (given)")
    else:
        saturation = await probe(booker, engine, args)
        rate = max(0.5, LOAD_SHARE * saturation)
        print(
            f"soak: saturation {saturation:.1f} invoices/s; load at {LOAD_SHARE:.0%}: {rate:.1f}/s",
            flush=True,
        )
    booker.booked = []
    ids = booker.booked
    memory: dict[str, list[tuple[float, float]]] = {}  # PSS
    held: dict[str, list[tuple[float, float]]] = {}  # PSS less file-backed pages
    all_latencies: list[float] = []
    issued_total = 0
    began = time.perf_counter()
    end = began + args.minutes * 60
    header_done = False
    try:
        while time.perf_counter() < end:
            window_began = datetime.now(UTC)
            seconds = min(window, end - time.perf_counter())
            await booker.window(rate, max(seconds, 1.0))
            issued_total, latencies = await issued_since(engine, ids, window_began)
            all_latencies += latencies
            t = time.perf_counter() - began
            parts = component_memory()
            for name, (pss, file_backed) in parts.items():
                memory.setdefault(name, []).append((t, pss / MB))
                held.setdefault(name, []).append((t, (pss - file_backed) / MB))
            if not header_done:
                print(
                    f"{'t s':>6} {'issued/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'backlog':>7}  "
                    "memory MB: PSS/held"
                )
                header_done = True
            span = max((datetime.now(UTC) - window_began).total_seconds(), 1e-9)
            mem = " ".join(f"{k} {p / MB:.0f}/{(p - f) / MB:.0f}" for k, (p, f) in sorted(parts.items()))
            print(
                f"{t:6.0f} {len(latencies) / span:8.1f} {pct(latencies, 50):8.0f} {pct(latencies, 99):8.0f} "
                f"{len(ids) - issued_total:7d}  {mem}",
                flush=True,
            )
        # Drain: no more bookings; every booking that answered 201 must reach ISSUED.
        drained_at = await drain(engine, ids, args.drain_seconds)
        issued_total, _ = await issued_since(engine, ids, datetime.now(UTC))
    finally:
        await client.aclose()
        await engine.dispose()

    elapsed = time.perf_counter() - began
    print(
        f"\nsoak: {len(ids)} booked at {rate:.1f}/s over {args.minutes:g} min, {issued_total} ISSUED "
        f"({issued_total / elapsed:.1f}/s incl. drain); "
        f"booking → ISSUED p50 {pct(all_latencies, 50):.0f} ms, p99 {pct(all_latencies, 99):.0f} ms"
    )
    failed = False
    if drained_at is None:
        print(
            f"soak: FAILED: backlog of {len(ids) - issued_total} never drained in {args.drain_seconds:.0f}s"
        )
        failed = True
    else:
        print(f"soak: backlog drained {drained_at:.0f}s after the load stopped")
    print(f"{'':<12} {'PSS MB':^29} {'held MB (PSS less file pages)':^29}")
    print(f"{'component':<12}" + f" {'first':>9} {'last':>9} {'per hour':>9}" * 2)
    for name, samples in sorted(memory.items()):
        total, own = keeps_growing(samples), keeps_growing(held[name])
        verdict = "KEEPS GROWING" if own.growing else ("(file pages grow)" if total.growing else "")
        print(
            f"{name:<12} {total.first_mb:9.0f} {total.last_mb:9.0f} {total.per_hour_mb:9.0f}"
            f" {own.first_mb:9.0f} {own.last_mb:9.0f} {own.per_hour_mb:9.0f}  {verdict}"
        )
        failed |= own.growing
    print("soak:", "FAILED" if failed else "passed")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument(
        "--rate", type=float, help="offered bookings/s (default: 80 %% of the measured saturation)"
    )
    parser.add_argument("--probe-seconds", type=float, default=15, help="seconds per probe window")
    parser.add_argument("--probe-max", type=float, default=64, help="highest offered rate of the probe")
    parser.add_argument("--window", type=float, help="seconds per sample (default: 30, at least 12 samples)")
    parser.add_argument("--drain-seconds", type=float, default=300)
    raise SystemExit(asyncio.run(main(parser.parse_args())))

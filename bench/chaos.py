"""The chaos suite: a steady booking load, one fault per scenario, then the invariants (issue #15).

`make chaos` runs every scenario on a chaos stack of its own (HC_PROFILE=chaos), removed afterwards.
With a stack up: `HC_PROFILE=chaos python -m bench.chaos [--only NAME ...] [--s3-outage SECONDS]`.
`tests/integration/test_chaos.py` runs a short subset on the test stack.

Each scenario books through the real REST API at a few bookings a second (bounded in count and
time, loopback only; every fifth booking is cancelled), injects its fault through the stack's
process control (signals to the components the supervisor started; the supervisor restarts what
dies), waits for recovery on observable conditions (pid changed, the component's own readiness
check, billing runs settled, Flink caught up with the topic), then checks, against PostgreSQL, S3,
Temporal and the analytics results:

- every booking answered 201 has exactly one invoice, ISSUED with its PDF object (a cancelled one:
  VOID, or none when the cancellation beat the invoice); no appointment has two invoices; each
  invoice has exactly its one PDF object; a booking answered with an error left no row;
- Flink's totals moved exactly as PostgreSQL's counts did (drift 0);
- the audit chain verifies; no component is left frozen and every one answers ready.

A client whose request got no answer (its connection died with the API) sends it again with the
same Idempotency-Key, as a real client does, and must get the same appointment back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import websockets
from aiokafka import TopicPartition
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from devstack import components
from devstack.paths import Paths
from devstack.supervisor import Component
from healthcare import clients
from healthcare.contracts.billing import billing_workflow_id
from healthcare.db import create_engine, session_factory
from healthcare.models import Role
from healthcare.settings import Settings, get_settings
from services import audit, users

V1 = "/api/v1"
PASSWORD = "chaos-password-123"
RETRY_STATUSES = {-1, 502, 503, 504}  # no answer, or the API saying a dependency is away: send again
RETRY_FOR = 180.0  # seconds a client keeps resending one booking
RECOVERY_TIMEOUT = 300.0
SETTLE_TIMEOUT = 240.0
WORKER_HEARTBEAT_TIMEOUT = 30.0  # billing.render_pdf's heartbeat timeout (workflows/billing.py)


def log(message: str) -> None:
    print(f"chaos: {message}", flush=True)


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.25
) -> float:
    """Poll `check` until it is true; returns the seconds it took, raises TimeoutError naming `what`."""
    began = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if await check():
                return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        await asyncio.sleep(every)


# -- the stack's processes ---------------------------------------------------------------------
class Stack:
    """The running local stack of this profile, as its supervisor left it in `.state/<profile>/run`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = Paths.from_settings(settings)
        self.components: dict[str, Component] = {
            c.name: c for c in components.all_components(settings, self.paths)
        }

    def pid(self, name: str) -> int:
        return int((self.paths.run / f"{name}.pid").read_text())

    def signal(self, name: str, sig: int) -> int:
        """Send `sig` to the component's whole process group (a JVM, workers, backends); its pid."""
        pid = self.pid(name)
        os.killpg(pid, sig)
        return pid

    async def ready(self, name: str) -> bool:
        comp = self.components[name]
        await asyncio.wait_for(comp.ready(), comp.check_timeout)
        return True

    async def restarted(self, name: str, old_pid: int, timeout: float = RECOVERY_TIMEOUT) -> float:
        """Wait until the supervisor started a new process for `name` and it answers ready."""

        async def back() -> bool:
            return self.pid(name) != old_pid and await self.ready(name)

        return await until(back, timeout, f"{name} back after its restart", every=0.5)

    async def all_ready(self, timeout: float = RECOVERY_TIMEOUT) -> float:
        async def every() -> bool:
            for name in self.components:
                await self.ready(name)
            return True

        return await until(every, timeout, "every component ready", every=1.0)

    def frozen(self) -> list[str]:
        """Components with a stopped (SIGSTOP) process: a scenario must never leave one behind."""
        stopped = []
        for name in self.components:
            with contextlib.suppress(OSError, ValueError, IndexError):
                state = (
                    open(f"/proc/{self.pid(name)}/stat").read().rsplit(")", 1)[1].split()[0]  # noqa: SIM115
                )
                if state in ("T", "t"):
                    stopped.append(name)
        return stopped


# -- the load ----------------------------------------------------------------------------------
@dataclass
class Booking:
    key: str
    patient: str
    doctor: str
    slot: datetime
    cancel: bool
    status: int = 0  # the final answer; -1: none (every attempt lost its connection)
    attempts: int = 0
    appointment_id: str | None = None
    in_flight: bool = False
    cancelled: bool = False


@dataclass
class Load:
    """Books at `rate` a second until `count` bookings or `seconds` passed, whichever is first."""

    api: httpx.AsyncClient
    headers: dict[str, str]
    doctors: list[str]
    patients: list[str]
    rate: float
    count: int
    seconds: float
    bookings: list[Booking] = field(default_factory=list)
    base: datetime = field(
        default_factory=lambda: (datetime.now(UTC) + timedelta(days=30 + uuid.uuid4().int % 600)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
    )

    @property
    def created(self) -> list[Booking]:
        return [b for b in self.bookings if b.status == 201]

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        began = time.monotonic()
        for i in range(self.count):
            due = began + i / self.rate
            if due - began > self.seconds:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing of the load, not a wait
            booking = Booking(
                key=f"chaos-{uuid.uuid4().hex}",
                patient=self.patients[i % len(self.patients)],
                doctor=self.doctors[i % len(self.doctors)],
                slot=self.base + timedelta(minutes=31 * i),  # no two bookings overlap
                cancel=i % 5 == 4,
            )
            self.bookings.append(booking)
            tasks.append(asyncio.create_task(self._book(booking)))
        await asyncio.gather(*tasks)

    async def _send(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            resp = await self.api.request(method, url, timeout=60, **kwargs)
        except httpx.TransportError:
            return -1, None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return resp.status_code, body

    async def _book(self, b: Booking) -> None:
        body = {"patientId": b.patient, "doctorId": b.doctor, "time": b.slot.isoformat()}
        headers = {**self.headers, "Idempotency-Key": b.key}
        deadline = time.monotonic() + RETRY_FOR
        while True:
            b.attempts += 1
            b.in_flight = True
            b.status, answer = await self._send("POST", f"{V1}/appointments", json=body, headers=headers)
            b.in_flight = False
            if b.status not in RETRY_STATUSES or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)  # a client's back-off before it sends the same request again
        if b.status == 201:
            b.appointment_id = str(answer["id"])
        elif b.status >= 500 or b.status == -1:
            log(f"booking {b.key} ended with {b.status}: {str(answer)[:200]}")
        if b.status == 201 and b.cancel:
            while True:
                url = f"{V1}/appointments/{b.appointment_id}/cancel"
                status, _ = await self._send("POST", url, headers=self.headers)
                if status not in RETRY_STATUSES or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            b.cancelled = status == 200


async def make_admin(api: httpx.AsyncClient, settings: Settings) -> tuple[str, dict[str, str]]:
    email = f"chaos-admin-{uuid.uuid4().hex[:10]}@clinic.example.com"
    engine = create_engine(settings)
    try:
        async with session_factory(engine)() as session:
            user = await users.create_user(
                session, email=email, password=PASSWORD, role=Role.admin, settings=settings
            )
            await session.commit()
    finally:
        await engine.dispose()
    resp = await api.post(f"{V1}/auth/login", json={"email": email, "password": PASSWORD})
    resp.raise_for_status()
    return str(user.id), {"Authorization": f"Bearer {resp.json()['access_token']}"}


# -- observations ------------------------------------------------------------------------------
@dataclass
class Totals:
    """Flink's latest cumulative totals next to PostgreSQL's counts, taken once Flink caught up."""

    flink_created: int
    flink_cancelled: int
    pg_created: int
    pg_cancelled: int

    @property
    def gap(self) -> int:
        return (self.flink_created - self.pg_created) + (self.flink_cancelled - self.pg_cancelled)


class Observer:
    def __init__(self, settings: Settings, temporal: TemporalClient) -> None:
        self.settings = settings
        self.temporal = temporal
        self.s3 = clients.s3_client(settings)

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.settings.database_url_sync, timeout=10)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.db()
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def flink_caught_up(self) -> bool:
        """The outbox published everything and Flink's group committed the end of every partition."""
        (row,) = await self.fetch(
            "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL AND topic = $1",
            self.settings.topic_appointment_events,
        )
        if row["n"]:
            return False
        admin = clients.kafka_admin(self.settings)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.analytics_group_id)
        finally:
            await admin.close()
        ends = await self._end_offsets(self.settings.topic_appointment_events)
        return all(end == 0 or (tp in committed and committed[tp].offset >= end) for tp, end in ends.items())

    async def _end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        admin = clients.kafka_admin(self.settings)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        if not parts:
            raise RuntimeError(f"topic {topic} has no partitions: {described}")
        consumer = clients.kafka_consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            return dict(await consumer.end_offsets(parts))
        finally:
            await consumer.stop()

    async def latest_result(self) -> dict[str, Any] | None:
        """The newest `analytics-results` record (the sink writes one partition; take the newest)."""
        topic = self.settings.topic_analytics_results
        ends = await self._end_offsets(topic)
        parts = [tp for tp, end in ends.items() if end > 0]
        if not parts:
            return None
        consumer = clients.kafka_consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            newest: tuple[int, dict[str, Any]] | None = None
            if parts:
                consumer.assign(parts)
                for tp in parts:
                    consumer.seek(tp, ends[tp] - 1)
                todo = set(parts)
                deadline = time.monotonic() + 15
                while todo and time.monotonic() < deadline:
                    for tp, records in (await consumer.getmany(*todo, timeout_ms=1000)).items():
                        for rec in records:
                            if newest is None or rec.timestamp > newest[0]:
                                newest = (rec.timestamp, json.loads(rec.value))
                            if rec.offset >= ends[tp] - 1:
                                todo.discard(tp)
            return newest[1] if newest else None
        finally:
            await consumer.stop()

    async def totals(self, timeout: float = SETTLE_TIMEOUT) -> Totals:
        await until(self.flink_caught_up, timeout, "Flink caught up with appointment-events", every=1.0)
        result = await self.latest_result() or {}
        (row,) = await self.fetch(
            "SELECT count(*) AS created, count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled"
            " FROM appointments"
        )
        return Totals(
            int(result.get("totalEventsCreated", 0)),
            int(result.get("totalEventsCancelled", 0)),
            int(row["created"]),
            int(row["cancelled"]),
        )

    async def rows(self, doctors: list[str]) -> list[asyncpg.Record]:
        return await self.fetch(
            "SELECT a.id::text AS appointment, a.status AS appointment_status, i.id::text AS invoice,"
            " i.status AS invoice_status, i.pdf_key FROM appointments a"
            " LEFT JOIN invoices i ON i.appointment_id = a.id WHERE a.doctor_id = ANY($1::uuid[])",
            [uuid.UUID(d) for d in doctors],
        )

    async def billing_closed(self, appointment_id: str) -> bool:
        handle = self.temporal.get_workflow_handle(billing_workflow_id(uuid.UUID(appointment_id)))
        desc = await handle.describe()
        return desc.status != WorkflowExecutionStatus.RUNNING

    async def settled(self, load: Load) -> bool:
        """Every booking answered 201 reached its end state: ISSUED with a PDF, or (cancelled) VOID or
        closed without an invoice."""
        by_appt: dict[str, list[asyncpg.Record]] = {}
        for row in await self.rows(load.doctors):
            by_appt.setdefault(row["appointment"], []).append(row)
        for b in load.created:
            rows = by_appt.get(str(b.appointment_id), [])
            invoices = [r for r in rows if r["invoice"]]
            if not rows:
                return False
            if rows[0]["appointment_status"] == "CANCELLED":
                if invoices and invoices[0]["invoice_status"] != "VOID":
                    return False
                if not invoices and not await self.billing_closed(str(b.appointment_id)):
                    return False
            elif not invoices or invoices[0]["invoice_status"] != "ISSUED" or not invoices[0]["pdf_key"]:
                return False
        return True

    def objects(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.s3_bucket, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    async def audit_ok(self) -> bool:
        engine = create_engine(self.settings)
        try:
            async with session_factory(engine)() as session:
                key = self.settings.audit_hmac_key.get_secret_value().encode()
                return (await audit.verify(session, key=key)).ok
        finally:
            await engine.dispose()


# -- one scenario ------------------------------------------------------------------------------
@dataclass
class Result:
    scenario: str
    bookings: int = 0
    created: int = 0
    faults: int = 0
    recovery_s: float = float("nan")
    lost: int = 0
    duplicated: int = 0
    orphaned: int = 0
    drift: int = 0
    audit_ok: bool = True
    stale_browsers: int = 0  # websocket clients not showing the latest result after recovery
    server_errors: int = 0  # bookings whose final answer was a 500 (a bug: an outage answers 503)
    left_running: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not (
                self.lost
                or self.duplicated
                or self.orphaned
                or self.drift
                or self.stale_browsers
                or self.left_running
            )
            and self.audit_ok
            and self.faults > 0
            and self.created > 0
        )


@dataclass
class Context:
    stack: Stack
    observer: Observer
    load: Load
    s3_outage: float
    result: Result
    lambda_timeout: float = 10.0
    load_task: asyncio.Task[None] | None = None
    extra_tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self.result.notes

    async def load_done(self) -> None:
        if self.load_task is not None:
            await asyncio.shield(self.load_task)

    async def bookings_at_least(self, n: int, timeout: float = 60) -> None:
        await until(lambda: _true(len(self.load.created) >= n), timeout, f"{n} bookings answered 201")


async def _true(value: bool) -> bool:
    return value


Fault = Callable[[Context], Awaitable[int]]


async def check(ctx: Context, result: Result, before: Totals) -> None:
    load, obs = ctx.load, ctx.observer
    with contextlib.suppress(TimeoutError):
        await until(lambda: obs.settled(load), SETTLE_TIMEOUT, "every booking billed", every=1.0)
    result.bookings, result.created = len(load.bookings), len(load.created)
    answers: dict[int, int] = {}
    for b in load.bookings:
        answers[b.status] = answers.get(b.status, 0) + 1
    resent = sum(b.attempts > 1 for b in load.bookings)
    result.server_errors = sum(b.status >= 500 and b.status not in RETRY_STATUSES for b in load.bookings)
    result.notes.append(f"answers {dict(sorted(answers.items()))}, {resent} bookings sent more than once")
    by_appt: dict[str, list[asyncpg.Record]] = {}
    for row in await obs.rows(load.doctors):
        by_appt.setdefault(row["appointment"], []).append(row)
    created_ids = {str(b.appointment_id) for b in load.created}
    if len(created_ids) != len(load.created):  # two bookings answered with one appointment
        result.duplicated += len(load.created) - len(created_ids)
    for appointment, rows in by_appt.items():
        invoices = [r for r in rows if r["invoice"]]
        result.duplicated += max(0, len(invoices) - 1)
        if appointment not in created_ids:  # a booking answered with an error (or never) left a row
            result.orphaned += 1
            result.notes.append(f"appointment {appointment} has no 201 booking")
            continue
        for inv in invoices:
            keys = await asyncio.to_thread(obs.objects, f"invoices/{inv['invoice']}")
            # One PDF per status the invoice showed (lambda/invoice_pdf.py): an ISSUED invoice has
            # exactly its one; a VOID one may also keep the ISSUED one it had before.
            if inv["pdf_key"] and (inv["pdf_key"] not in keys or not set(keys) <= _pdf_keys(inv)):
                result.lost += 1
                result.notes.append(
                    f"invoice {inv['invoice']}: PDF objects {keys}, row says {inv['pdf_key']}"
                )
            elif not inv["pdf_key"] and keys:
                result.orphaned += len(keys)
    for b in load.created:
        rows = by_appt.get(str(b.appointment_id), [])
        invoices = [r for r in rows if r["invoice"]]
        cancelled = bool(rows) and rows[0]["appointment_status"] == "CANCELLED"
        good = bool(rows) and (
            (cancelled and (not invoices or invoices[0]["invoice_status"] == "VOID"))
            or (
                not cancelled
                and bool(invoices)
                and invoices[0]["invoice_status"] == "ISSUED"
                and bool(invoices[0]["pdf_key"])
            )
        )
        if not good:
            result.lost += 1
            state = [(r["appointment_status"], r["invoice_status"], r["pdf_key"]) for r in rows]
            result.notes.append(f"booking {b.appointment_id}: {state or 'no row'}")
        if b.cancel and b.cancelled != cancelled:
            result.notes.append(f"booking {b.appointment_id}: cancel answered {b.cancelled}, row {cancelled}")
            result.lost += 1
    for b in load.bookings:
        if b.status != 201 and b.status != -1:
            (n,) = await obs.fetch(
                "SELECT count(*) AS n FROM appointments WHERE doctor_id = $1 AND time = $2",
                uuid.UUID(b.doctor),
                b.slot,
            )
            if n["n"]:
                result.orphaned += 1
                result.notes.append(f"booking answered {b.status} left a row at {b.slot}")
    if obs.settings.profile == "chaos":  # a stack of its own: every object is some invoice's PDF
        (row,) = await obs.fetch("SELECT count(*) AS n FROM invoices WHERE pdf_key IS NOT NULL")
        # Invoices with PDFs in the bucket (a PDF per status: `invoices/<id>.pdf`, `<id>-void.pdf`).
        objects = len({_pdf_owner(k) for k in await asyncio.to_thread(obs.objects, "invoices/")})
        if objects != row["n"]:
            result.notes.append(f"bucket holds {objects} PDFs for {row['n']} invoices")
            result.orphaned += max(0, objects - row["n"])
            result.lost += max(0, row["n"] - objects)
    after = await obs.totals()
    result.drift = after.gap - before.gap
    if result.drift:
        result.notes.append(f"analytics before {before}, after {after}")
    result.audit_ok = await obs.audit_ok()
    result.left_running = ctx.stack.frozen() + [
        f"task {t.get_name()}" for t in ctx.extra_tasks if not t.done()
    ]
    with contextlib.suppress(TimeoutError):
        await ctx.stack.all_ready(timeout=60)
        return
    result.left_running.append("a component not ready")


async def run_scenario(
    name: str,
    fault: Fault,
    *,
    settings: Settings,
    rate: float,
    count: int,
    seconds: float,
    s3_outage: float,
    lambda_timeout: float = 10.0,
) -> Result:
    result = Result(name)
    stack = Stack(settings)
    temporal = await clients.temporal_client(settings)
    observer = Observer(settings, temporal)
    base = f"http://{settings.api_host}:{settings.api_port}"
    assert settings.api_host in ("127.0.0.1", "localhost", "::1"), "chaos only targets loopback"
    await stack.all_ready()
    async with httpx.AsyncClient(base_url=base, timeout=60) as api:
        _, headers = await make_admin(api, settings)
        doctors = [
            (
                await api.post(
                    f"{V1}/doctors",
                    json={"name": f"Chaos Dr {i}", "specialty": "GP", "fee": "80.00"},
                    headers=headers,
                )
            ).json()["id"]
            for i in range(2)
        ]
        patients = [
            (await api.post(f"{V1}/patients", json={"name": f"Chaos Patient {i}"}, headers=headers)).json()[
                "id"
            ]
            for i in range(4)
        ]
        before = await observer.totals()
        load = Load(api, headers, doctors, patients, rate=rate, count=count, seconds=seconds)
        ctx = Context(stack, observer, load, s3_outage, result, lambda_timeout)
        log(f"{name}: booking {rate:g}/s, at most {count} in {seconds:.0f}s")
        load_task = ctx.load_task = asyncio.create_task(load.run(), name="load")
        try:
            await ctx.bookings_at_least(3)
            began = time.monotonic()
            result.faults = await fault(ctx)
            if math.isnan(result.recovery_s):  # a scenario that waits on more after recovery set it
                result.recovery_s = time.monotonic() - began
            log(f"{name}: {result.faults} fault(s), recovered in {result.recovery_s:.1f}s")
        except Exception as exc:
            result.notes.append(f"fault or recovery failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await stack.all_ready()
        finally:
            await load_task
        await check(ctx, result, before)
    for task in ctx.extra_tasks:
        task.cancel()
    return result


# -- the faults --------------------------------------------------------------------------------
async def _pdf_in_flight(ctx: Context, timeout: float = 60) -> str:
    """Wait until some booking's billing run has its PDF activity started; returns its appointment."""
    found: list[str] = []

    async def started() -> bool:
        for b in reversed(ctx.load.created):
            handle = ctx.observer.temporal.get_workflow_handle(
                billing_workflow_id(uuid.UUID(str(b.appointment_id)))
            )
            with contextlib.suppress(Exception):
                desc = await handle.describe()
                for act in desc.raw_description.pending_activities:
                    if (
                        act.activity_type.name == "billing.render_pdf"
                        and act.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                    ):
                        found.append(str(b.appointment_id))
                        return True
        return False

    await until(started, timeout, "a PDF activity in flight", every=0.3)
    return found[0]


@contextlib.contextmanager
def _frozen(stack: Stack, name: str) -> Iterator[None]:
    stack.signal(name, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            stack.signal(name, signal.SIGCONT)


async def worker_killed_during_pdf(ctx: Context) -> int:
    """SIGKILL of the worker while the PDF Lambda runs (the Lambda's front door is held meanwhile)."""
    stack = ctx.stack
    old = stack.pid("worker")
    with _frozen(stack, "lambda"):
        await _pdf_in_flight(ctx)
        stack.signal("worker", signal.SIGKILL)
    await stack.restarted("worker", old)
    return 1


async def consumer_killed_before_commit(ctx: Context) -> int:
    """SIGKILL of the billing consumer after it started workflows for a batch, before it committed."""
    stack = ctx.stack
    old = stack.pid("consumer")
    with _frozen(stack, "consumer"):
        seen = len(ctx.load.created)
        await ctx.bookings_at_least(seen + 4)
        batch = [str(b.appointment_id) for b in ctx.load.created[seen:]]
    # Woken up, it reads the batch and starts billing runs: kill it as soon as the first exists.

    async def a_run_started() -> bool:
        for appointment in batch:
            handle = ctx.observer.temporal.get_workflow_handle(billing_workflow_id(uuid.UUID(appointment)))
            with contextlib.suppress(Exception):
                await handle.describe()
                return True
        return False

    await until(a_run_started, 60, "a billing run of the batch started", every=0.05)
    stack.signal("consumer", signal.SIGKILL)
    await stack.restarted("consumer", old)
    return 1


async def api_killed_between_store_and_answer(ctx: Context) -> int:
    """SIGKILL of the API while a booking is stored but not yet answered: its client resends it."""
    stack = ctx.stack
    old = stack.pid("api")
    caught: list[Booking] = []
    for _ in range(10):
        with _frozen(stack, "api"):
            in_flight = [b for b in ctx.load.bookings if b.in_flight and b.appointment_id is None]

            async def stored(in_flight: list[Booking] = in_flight) -> bool:
                for b in in_flight:
                    (row,) = await ctx.observer.fetch(
                        "SELECT count(*) AS n FROM appointments WHERE doctor_id = $1 AND time = $2",
                        uuid.UUID(b.doctor),
                        b.slot,
                    )
                    if row["n"]:
                        caught.append(b)
                        return True
                return False

            with contextlib.suppress(TimeoutError):
                await until(stored, 5, "a frozen booking stored")
            if caught:
                stack.signal("api", signal.SIGKILL)
                break
    if not caught:  # no booking was between its store and its answer: kill anyway
        ctx.notes.append("no booking caught between store and answer; API killed anyway")
        stack.signal("api", signal.SIGKILL)
    else:
        ctx.notes.append(f"{len(caught)} booking stored and unanswered when the API died")
    await stack.restarted("api", old)
    return 1


async def _restart(ctx: Context, name: str, then_ready: Iterable[str]) -> int:
    stack = ctx.stack
    old = stack.signal(name, stack.components[name].stop_signal)
    await stack.restarted(name, old)
    for other in then_ready:
        await until(lambda other=other: stack.ready(other), RECOVERY_TIMEOUT, f"{other} ready")  # type: ignore[misc]
    return 1


async def temporal_restarted(ctx: Context) -> int:
    """Restart of the Temporal server (graceful stop, the supervisor starts it again)."""
    return await _restart(ctx, "temporal", ["worker", "api", "consumer"])


async def kafka_restarted(ctx: Context) -> int:
    """Restart of the Kafka broker."""
    return await _restart(ctx, "kafka", ["consumer", "flink", "relay"])


async def postgres_restarted(ctx: Context) -> int:
    """Restart of PostgreSQL (fast shutdown: open connections are cut)."""
    return await _restart(ctx, "postgres", ["worker", "api"])


async def s3_down(ctx: Context) -> int:
    """The S3 server unreachable (frozen: every call hangs until its timeout) for `--s3-outage` s."""
    with _frozen(ctx.stack, "s3"):
        await asyncio.sleep(ctx.s3_outage)  # the length of the outage is the fault itself
    await until(lambda: ctx.stack.ready("s3"), RECOVERY_TIMEOUT, "s3 ready")
    return 1


async def lambda_failing(ctx: Context) -> int:
    """The Lambda answering 500s, then timing out (the local gateway's fault switch): every PDF
    activity retries until the function answers again."""
    errors, timeouts = 6, 2
    gateway = ctx.stack.settings.lambda_endpoint_url or ""
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        faults = {"errors": errors, "timeouts": timeouts, "timeout_seconds": ctx.lambda_timeout}
        (await http.post("/_faults", json=faults)).raise_for_status()

        async def consumed() -> bool:
            left = (await http.get("/healthz")).json()["faults"]
            return bool(left["errors"] == 0 and left["timeouts"] == 0)

        await until(consumed, RECOVERY_TIMEOUT, "every injected Lambda fault met by an invocation")
    return errors + timeouts


async def worker_frozen_past_heartbeat(ctx: Context) -> int:
    """The worker frozen (SIGSTOP) past the PDF activity's heartbeat timeout, then resumed."""
    await _pdf_in_flight(ctx)
    with _frozen(ctx.stack, "worker"):
        await asyncio.sleep(WORKER_HEARTBEAT_TIMEOUT + 10)  # the freeze must outlast the timeout
    await until(lambda: ctx.stack.ready("worker"), RECOVERY_TIMEOUT, "worker ready")
    return 1


async def flink_killed(ctx: Context) -> int:
    """SIGKILL of the Flink job's processes; it restarts from its newest retained checkpoint."""
    stack = ctx.stack
    old = stack.signal("flink", signal.SIGKILL)
    await stack.restarted("flink", old)
    return 1


async def relay_restarted(ctx: Context) -> int:
    """Restart of the websocket relay while browsers are connected: they reconnect and get the
    latest result (checked once analytics caught up, against the newest record of the topic)."""
    stack, settings = ctx.stack, ctx.stack.settings
    # The load's admin: the relay checks that the token's account exists and may still act.
    token = ctx.load.headers["Authorization"].removeprefix("Bearer ")
    url = f"ws://{settings.ws_host}:{settings.ws_port}/ws/analytics?token={token}"
    browsers = [Browser(url) for _ in range(3)]
    ctx.extra_tasks += [asyncio.create_task(b.follow(), name=f"browser-{i}") for i, b in enumerate(browsers)]
    await until(lambda: _true(all(b.connections >= 1 for b in browsers)), 30, "browsers connected")
    began = time.monotonic()
    old = stack.signal("relay", signal.SIGTERM)
    await stack.restarted("relay", old)
    await until(lambda: _true(all(b.connections >= 2 for b in browsers)), 60, "browsers reconnected")
    ctx.result.recovery_s = time.monotonic() - began
    await ctx.load_done()
    want = await ctx.observer.totals()
    latest = await ctx.observer.latest_result()

    async def all_latest() -> bool:
        return all(b.latest == latest for b in browsers)

    try:
        await until(all_latest, 60, "every browser showing the latest result")
    except TimeoutError:
        ctx.notes.append(f"browsers behind: {[b.latest for b in browsers]} vs {latest} ({want})")
        ctx.result.stale_browsers = sum(b.latest != latest for b in browsers)
    for b in browsers:
        b.stop = True
    return 1


@dataclass
class Browser:
    url: str
    connections: int = 0
    latest: dict[str, Any] | None = None
    stop: bool = False

    async def follow(self) -> None:
        while not self.stop:
            try:
                async with websockets.connect(self.url, open_timeout=5) as ws:
                    self.connections += 1
                    while not self.stop:
                        with contextlib.suppress(TimeoutError):
                            self.latest = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except (OSError, websockets.WebSocketException, TimeoutError):
                await asyncio.sleep(0.5)  # a browser's reconnect back-off


SCENARIOS: dict[str, Fault] = {
    "worker-kill-during-pdf": worker_killed_during_pdf,
    "consumer-kill-before-commit": consumer_killed_before_commit,
    "api-kill-store-unanswered": api_killed_between_store_and_answer,
    "temporal-restart": temporal_restarted,
    "kafka-restart": kafka_restarted,
    "postgres-restart": postgres_restarted,
    "s3-down": s3_down,
    "lambda-500s-and-timeouts": lambda_failing,
    "worker-sigstop-heartbeat": worker_frozen_past_heartbeat,
    "flink-kill-restore": flink_killed,
    "relay-restart-browsers": relay_restarted,
}


def table(results: list[Result]) -> str:
    head = (
        f"{'scenario':<28} {'bookings':>9} {'faults':>6} {'recovery':>9} "
        f"{'lost':>5} {'dup':>4} {'orphan':>6} {'drift':>6}  result"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.scenario:<28} {f'{r.created}/{r.bookings}':>9} {r.faults:>6} {r.recovery_s:>8.1f}s "
            f"{r.lost:>5} {r.duplicated:>4} {r.orphaned:>6} {r.drift:>6}  "
            + ("ok" if r.ok else "FAIL")
            + ("" if r.audit_ok else " (audit chain broken)")
            + (f" ({r.stale_browsers} browsers not showing the latest result)" if r.stale_browsers else "")
            + (f" ({r.server_errors} bookings answered 500)" if r.server_errors else "")
            + (f" (left running: {', '.join(r.left_running)})" if r.left_running else "")
        )
    return "\n".join(lines)


async def run(
    names: list[str], *, rate: float, count: int, seconds: float, s3_outage: float, lambda_timeout: float
) -> list[Result]:
    settings = get_settings()
    if settings.profile == "dev":
        raise SystemExit("chaos kills and restarts components: run it on its own stack (`make chaos`)")
    results = []
    for name in names:
        results.append(
            await run_scenario(
                name,
                SCENARIOS[name],
                settings=settings,
                rate=rate,
                count=count,
                seconds=seconds,
                s3_outage=s3_outage,
                lambda_timeout=lambda_timeout,
            )
        )
        r = results[-1]
        log(f"{name}: {'ok' if r.ok else 'FAIL'}" + "".join(f"\n    {n}" for n in r.notes))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--rate", type=float, default=2.0, help="bookings per second")
    parser.add_argument("--count", type=int, default=40, help="at most this many bookings per scenario")
    parser.add_argument("--seconds", type=float, default=20.0, help="at most this long a load per scenario")
    parser.add_argument(
        "--lambda-timeout", type=float, default=10.0, help="seconds a timed-out Lambda call hangs"
    )
    parser.add_argument("--s3-outage", type=float, default=60.0, help="seconds the S3 server stays down")
    args = parser.parse_args(argv)
    results = asyncio.run(
        run(
            args.only,
            rate=args.rate,
            count=args.count,
            seconds=args.seconds,
            s3_outage=args.s3_outage,
            lambda_timeout=args.lambda_timeout,
        )
    )
    print(table(results), flush=True)
    return 0 if all(r.ok for r in results) else 1


def _pdf_keys(invoice: asyncpg.Record) -> set[str]:
    """The PDF objects an invoice may have: its ISSUED one, and one of its current status."""
    keys = {f"invoices/{invoice['invoice']}.pdf"}
    if invoice["invoice_status"] not in ("ISSUED", "PENDING"):
        keys.add(f"invoices/{invoice['invoice']}-{invoice['invoice_status'].lower()}.pdf")
    return keys


def _pdf_owner(key: str) -> str:
    """The invoice id a PDF object belongs to (`invoices/<id>.pdf` or `invoices/<id>-<status>.pdf`)."""
    return key.removeprefix("invoices/").removesuffix(".pdf")[:36]


if __name__ == "__main__":
    sys.exit(main())

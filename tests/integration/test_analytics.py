"""Analytics on the real stack: appointment events -> the PyFlink job -> Kafka -> relay websockets.

The module starts its own job (local mini-cluster) and two relays, on topics, a consumer group and a
checkpoint folder of its own, so it neither disturbs nor depends on the stack's analytics job; it
kills what it started and deletes its topics.
"""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from aiokafka.admin import NewTopic

from devstack import flink as flink_component
from devstack.paths import Paths
from healthcare import clients
from healthcare.settings import Settings, get_settings
from tests.integration.factories import Account
from tests.waiting import eventually

REST_PORT = get_settings().stack_port("it_flink_rest")
RELAY_PORTS = (get_settings().stack_port("it_relay_1"), get_settings().stack_port("it_relay_2"))
RUN = uuid.uuid4().hex[:8]


@dataclass
class Proc:
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(  # its own session: one killpg ends the JVM and Python workers too
                self.argv,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        if self.popen is not None:  # leftovers in its group (a worker that outlived its parent)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)


@dataclass
class Analytics:
    settings: Settings
    job: Proc
    relays: list[Proc]
    events_topic: str
    results_topic: str
    rest: str = f"http://127.0.0.1:{REST_PORT}"
    processes: list[Proc] = field(default_factory=list)
    token: str = ""

    async def wait_job_running(self, timeout: float = 150) -> None:

        async def running() -> bool:
            if self.job.popen is not None and self.job.popen.poll() is not None:  # fails at once
                raise RuntimeError(f"analytics job exited: {self.job.log.read_text()[-2000:]}")
            try:
                await flink_component.job_running(self.rest)
            except Exception as not_yet:
                raise AssertionError(f"{type(not_yet).__name__}: {not_yet}") from None
            return True

        await eventually(running, timeout=timeout, interval=0.5, what="the analytics job running")


def _test_settings(settings: Settings, events: str, results: str) -> Settings:
    return settings.model_copy(
        update={"topic_appointment_events": events, "topic_analytics_results": results}
    )


@pytest.fixture(scope="module")
async def analytics(
    settings: Settings, paths: Paths, tmp_path_factory: pytest.TempPathFactory, staff: Account
) -> AsyncIterator[Analytics]:
    events, results = f"it-appointment-events-{RUN}", f"it-analytics-results-{RUN}"
    admin = clients.kafka_admin(settings)
    await admin.start()
    await admin.create_topics(
        [NewTopic(t, num_partitions=3, replication_factor=1) for t in (events, results)]
    )
    work = tmp_path_factory.mktemp("analytics")
    common = {
        "HC_TOPIC_APPOINTMENT_EVENTS": events,
        "HC_TOPIC_ANALYTICS_RESULTS": results,
        "HC_LOG_JSON": "true",
    }
    job_component = flink_component.flink(settings, paths)
    job = Proc(
        argv=list(job_component.argv()),
        env={
            **job_component.env(),
            **common,
            "HC_ANALYTICS_GROUP_ID": f"it-analytics-{RUN}",
            "HC_ANALYTICS_CHECKPOINT_DIR": str(work / "checkpoints"),
            "HC_ANALYTICS_REST_PORT": str(REST_PORT),
            "HC_ANALYTICS_CHECKPOINT_INTERVAL_MS": "1000",
        },
        log=work / "job.log",
    )
    relay_component = flink_component.relay(settings, paths)
    relays = [
        Proc(
            argv=list(relay_component.argv()),
            env={**common, "HC_WS_PORT": str(port)},
            log=work / f"relay-{port}.log",
        )
        for port in RELAY_PORTS
    ]
    handle = Analytics(_test_settings(settings, events, results), job, relays, events, results)
    handle.token = staff.token
    try:
        for proc in [job, *relays]:
            proc.start()
        await handle.wait_job_running()
        for relay, port in zip(relays, RELAY_PORTS, strict=True):

            async def following(relay: Proc = relay, port: int = port) -> bool:
                assert relay.popen is not None
                if relay.popen.poll() is not None:  # fails at once
                    raise RuntimeError(f"relay exited (port taken?): {relay.log.read_text()[-1000:]}")
                try:
                    await flink_component.relay_following(f"http://127.0.0.1:{port}")
                except Exception as not_yet:
                    raise AssertionError(f"{type(not_yet).__name__}: {not_yet}") from None
                return True

            await eventually(following, timeout=30, interval=0.3, what=f"the relay on {port} following")
        yield handle
    finally:
        for proc in [job, *relays]:
            proc.kill()
        with contextlib.suppress(Exception):
            await admin.delete_topics([events, results])
        await admin.close()


class Watcher:
    """A websocket client of one relay, collecting every result it receives."""

    def __init__(self, port: int, analytics: Analytics) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws/analytics"
        self.token = analytics.token  # a real, active account's: the relay checks it
        self.results: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "Watcher":

        async def connected() -> websockets.ClientConnection:  # the relay may still be starting
            try:
                return await websockets.connect(f"{self.url}?token={self.token}")
            except OSError as not_yet:
                raise AssertionError(str(not_yet)) from None

        self._ws = await eventually(connected, timeout=30, interval=0.3, what=f"a socket to {self.url}")
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._ws.close()

    async def _collect(self) -> None:
        async for message in self._ws:
            self.results.append(json.loads(message))
            self._changed.set()

    @property
    def total(self) -> int:
        return max((r["totalEventsCreated"] for r in self.results), default=0)

    def event_ids(self) -> set[str]:
        return {r["eventId"] for r in self.results if r.get("eventId")}

    async def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; last results: {self.results[-3:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1))


async def _more_checkpoints(rest: str, *, than: int) -> bool:
    return await _checkpoints_completed(rest) > than


def event_value() -> tuple[str, bytes, bytes]:
    """(eventId, key, value) of a new APPOINTMENT_CREATED event, as the appointment workflow publishes it."""
    now = datetime.now(UTC).isoformat()
    appointment, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    value = {
        "event": "APPOINTMENT_CREATED",
        "eventId": event_id,
        "appointmentId": appointment,
        "patientId": str(uuid.uuid4()),
        "doctorId": str(uuid.uuid4()),
        "time": now,
        "occurredAt": now,
    }
    return event_id, appointment.encode(), json.dumps(value).encode()


async def produce(
    settings: Settings, n: int, *, rate: float | None = None, extra: Sequence[bytes] = ()
) -> list[str]:
    """n APPOINTMENT_CREATED events (ids returned); then the raw extra records."""
    producer = clients.kafka_producer(settings)
    await producer.start()
    ids = []
    try:
        for _ in range(n):
            event_id, key, value = event_value()
            ids.append(event_id)
            await producer.send_and_wait(settings.topic_appointment_events, value, key=key)
            if rate:
                await asyncio.sleep(1 / rate)
        for raw in extra:
            await producer.send_and_wait(settings.topic_appointment_events, raw, key=b"extra")
    finally:
        await producer.stop()
    return ids


async def _baseline(settings: Settings, *watchers: Watcher) -> int:
    """The running total once every watcher receives results: one marker event, seen by all."""
    (marker,) = await produce(settings, 1)
    for ws in watchers:
        await ws.wait_for(lambda w: marker in w.event_ids())
    return watchers[0].total


async def _checkpoints_completed(rest: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        jobs = (await http.get(f"{rest}/jobs/overview")).raise_for_status().json()["jobs"]
        running = [j["jid"] for j in jobs if j["state"] == "RUNNING"]
        assert running, f"no running job ({[j['state'] for j in jobs]})"
        stats = (await http.get(f"{rest}/jobs/{running[0]}/checkpoints")).raise_for_status().json()
        return int(stats["counts"]["completed"])


async def test_total_grows_by_exactly_the_events_produced(analytics: Analytics) -> None:
    async with Watcher(RELAY_PORTS[0], analytics) as ws:
        base = await _baseline(analytics.settings, ws)
        ids = await produce(analytics.settings, 20)
        # A redelivered event and two malformed records must not count.
        _, _, value = event_value()
        duplicate = json.loads(value)
        duplicate["eventId"] = ids[0]
        # Duplicates and malformed records make no result of their own; the next event reports them
        # (sent with the same key, so the same partition: read in this order).
        last_id, _, last_value = event_value()
        ids.append(last_id)
        extras = [json.dumps(duplicate).encode(), b"{not json", b"[]", last_value]
        await produce(analytics.settings, 0, extra=extras)
        # Every event's own result seen: the extras, read before the last event in their partition,
        # are applied too, so a wrongly counted one shows in the total now.
        await ws.wait_for(lambda w: set(ids) <= w.event_ids())
        assert ws.total == base + 21
        assert set(ids) <= ws.event_ids()
        # The newest result comes after every event was applied (total == base + 21), whichever
        # partition was read last, so it carries the duplicate and malformed counters.
        last = max(ws.results, key=lambda r: r["sequence"])
        assert last["eventId"] in ids
        assert last["metricType"] == "AppointmentAnalytics"
        assert last["windowStartTime"] < last["windowEndTime"]
        assert last["avgAppointmentsPerHour"] > 0
        assert last["duplicateEvents"] >= 1
        assert last["malformedEvents"] >= 2


async def test_new_connection_gets_latest_at_once(analytics: Analytics) -> None:
    (only,) = await produce(analytics.settings, 1)
    async with Watcher(RELAY_PORTS[0], analytics) as first:
        await first.wait_for(lambda w: only in w.event_ids())  # the newest result there is
    async with Watcher(RELAY_PORTS[0], analytics) as ws:
        await ws.wait_for(lambda w: len(w.results) >= 1, timeout=2)
        assert ws.results[0]["totalEventsCreated"] == first.total


async def test_two_relays_both_deliver_every_result(analytics: Analytics) -> None:
    async with (
        Watcher(RELAY_PORTS[0], analytics) as a,
        Watcher(RELAY_PORTS[1], analytics) as b,
    ):
        await _baseline(analytics.settings, a, b)
        ids = await produce(analytics.settings, 15)
        for ws in (a, b):
            await ws.wait_for(lambda w: set(ids) <= w.event_ids())
        assert {r["sequence"] for r in a.results} >= {
            r["sequence"] for r in b.results if r.get("eventId") in ids
        }
        assert a.total == b.total


async def test_restart_in_the_middle_neither_resets_nor_double_counts(analytics: Analytics) -> None:
    async with Watcher(RELAY_PORTS[1], analytics) as ws:
        base = await _baseline(analytics.settings, ws)
        producing = asyncio.create_task(produce(analytics.settings, 40, rate=8))
        await ws.wait_for(lambda w: w.total >= base + 10)
        # A checkpoint completed after ten were counted covers part of what was counted.
        done = await _checkpoints_completed(analytics.rest)
        await eventually(
            lambda: _more_checkpoints(analytics.rest, than=done), timeout=60, what="a new checkpoint"
        )
        analytics.job.kill()  # SIGKILL, mid-stream: results after the last checkpoint get replayed
        before_restart = ws.total
        analytics.job.start()
        await analytics.wait_job_running()
        ids = await producing
        # Every event's result seen, the replayed ones before them in their partition.
        await ws.wait_for(lambda w: set(ids) <= w.event_ids(), timeout=90)
        assert ws.total == base + 40  # no double count
        after = [r for r in ws.results if r["timestamp"] > 0][-10:]
        assert min(r["totalEventsCreated"] for r in after) > base  # not reset
        assert before_restart < base + 40
        assert set(ids) <= ws.event_ids()
    log = analytics.job.log.read_text()
    assert '"restore_from": "' in log.split("analytics job starting")[-1]  # the second start restored

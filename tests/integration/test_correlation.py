"""One booking's correlation id, followed through the real stack: from the HTTP request to the invoice PDF.

The id sent as X-Request-ID must turn up in the booking and billing workflows (memo), the Kafka
message's headers, the invoice row, the audit records of the request, and the log of every role the
booking crossed: the API, the worker (outbox relay and activities), the billing consumer and the
invoice-PDF Lambda.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient

from devstack.paths import Paths
from healthcare import correlation
from healthcare.contracts.appointments import appointment_workflow_id as appointment_workflow
from healthcare.contracts.billing import billing_workflow_id as billing_workflow
from healthcare.settings import Settings
from tests.integration.factories import Account, create_doctor, create_patient
from tests.integration.kafka_probe import TopicProbe
from tests.integration.test_billing import status_of, wait_for
from tests.waiting import eventually

pytestmark = pytest.mark.integration

V1 = "/api/v1"
ROLES = ("api", "worker", "consumer")


def _logs_with(paths: Paths, needle: str) -> set[str]:
    found = {log.stem for log in paths.logs.glob("*.log") if needle in log.read_text(errors="replace")}
    # The Lambda runs in a pool of emulators: any one of them may have served the invocation.
    return {"lambda" if name.startswith("lambda-") else name for name in found}


async def _wait_for_logs(paths: Paths, needle: str, roles: set[str], timeout: float = 30) -> set[str]:

    async def logged() -> set[str]:  # log lines are flushed by other processes: poll the files
        found = await asyncio.to_thread(_logs_with, paths, needle)
        assert roles <= found, f"logged by {sorted(found)} only"
        return found

    return await eventually(logged, timeout=timeout, interval=0.5, what=f"log lines of {sorted(roles)}")


async def test_one_booking_is_followed_by_its_correlation_id(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    temporal: TemporalClient,
    engine: AsyncEngine,
    settings: Settings,
    paths: Paths,
) -> None:
    cid = f"corr-{uuid.uuid4().hex}"
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    when = (datetime.now(UTC) + timedelta(days=50)).replace(microsecond=0)
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        resp = await api.post(
            f"{V1}/appointments",
            json={"patientId": patient["id"], "doctorId": doctor["id"], "time": when.isoformat()},
            headers={**staff.headers, "X-Request-ID": cid},
        )
        assert resp.status_code == 201, resp.text
        assert resp.headers["x-request-id"] == cid
        appointment_id = uuid.UUID(resp.json()["id"])
        records = await probe.collect_records(
            until=lambda got: any(v["appointmentId"] == str(appointment_id) for v, _ in got)
        )
    (created,) = [(v, h) for v, h in records if v["appointmentId"] == str(appointment_id)]
    assert created[1][correlation.HEADER] == cid.encode()

    (invoice,) = await wait_for(api, staff, {"patientId": patient["id"]}, 1)
    await status_of(api, staff, invoice["id"], "ISSUED")

    for workflow_id in (appointment_workflow(appointment_id), billing_workflow(appointment_id)):
        described = await temporal.get_workflow_handle(workflow_id).describe()
        assert await described.memo_value(correlation.MEMO_KEY) == cid, workflow_id

    async with engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT correlation_id FROM invoices WHERE appointment_id = :a"), {"a": appointment_id}
        )
    assert stored == cid

    audit = (
        await api.get(f"{V1}/audit", params={"resourceId": str(appointment_id)}, headers=admin.headers)
    ).json()["items"]
    assert audit and {r["requestId"] for r in audit if r["action"] == "create"} == {cid}

    found = await _wait_for_logs(paths, cid, {*ROLES, "lambda"})
    assert {*ROLES, "lambda"} <= found


async def test_a_generated_id_when_the_caller_sends_none_or_a_bad_one(api: httpx.AsyncClient) -> None:
    plain = await api.get("/healthz")
    assert correlation.valid(plain.headers["x-request-id"])
    bad = await api.get("/healthz", headers={"X-Request-ID": "has spaces and\ttabs"})
    assert bad.headers["x-request-id"] != "has spaces and\ttabs"
    assert correlation.valid(bad.headers["x-request-id"])


def test_log_files_are_where_the_test_looks(paths: Paths) -> None:
    assert {Path(p).stem for p in paths.logs.glob("*.log")} >= {*ROLES, "lambda-1"}

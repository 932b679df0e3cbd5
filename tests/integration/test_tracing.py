"""One booking, one trace: spans from every role it crosses, found in the stack's Zipkin by its
correlation id, and none of them saying what the codec hides (visit reason, patient name).

The stack's api, worker and consumer export to Zipkin (devstack/components.py `zipkin`); the trace
is read back through Zipkin's own HTTP API, as an operator's browser would.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devstack.components import zipkin_url
from devstack.paths import Paths
from healthcare import tracing
from healthcare.contracts.appointments import appointment_workflow_id
from healthcare.contracts.billing import billing_workflow_id
from healthcare.settings import Settings
from tests.integration.factories import Account, create_doctor, create_patient
from tests.integration.test_billing import status_of, wait_for
from tests.waiting import eventually

pytestmark = pytest.mark.integration

V1 = "/api/v1"
TRACE_WAIT = 60.0  # seconds: each process sends its spans in batches every few seconds


async def traces_tagged(settings: Settings, correlation_id: str) -> list[list[dict[str, Any]]]:
    """Zipkin's traces holding a span tagged with this correlation id (each trace in full)."""
    query = {
        "annotationQuery": f"{tracing.CORRELATION_ATTRIBUTE}={correlation_id}",
        "lookback": str(3_600_000),
        "limit": "10",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"{zipkin_url(settings)}/api/v2/traces", params=query)
    resp.raise_for_status()
    return list(resp.json())


async def trace_with(
    settings: Settings, correlation_id: str, wanted: set[tuple[str, str]]
) -> list[list[dict[str, Any]]]:
    """Poll Zipkin until the tagged traces hold every (service, span name) in `wanted` and each is
    whole (one root: every other span's parent has arrived too; processes export in batches)."""
    wanted = {(service.lower(), span.lower()) for service, span in wanted}  # Zipkin lowercases names

    async def whole() -> list[list[dict[str, Any]]]:  # spans arrive in other processes' batches: poll
        got = await traces_tagged(settings, correlation_id)
        seen = {(s["localEndpoint"]["serviceName"], s["name"]) for t in got for s in t}
        assert wanted <= seen, f"{len(got)} trace(s) tagged; missing spans {sorted(wanted - seen)}"
        assert all(len(_roots(t)) == 1 for t in got), "a trace without all its parents yet"
        return got

    return await eventually(whole, timeout=TRACE_WAIT, interval=1, what="the whole trace in Zipkin")


def _roots(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {s["id"] for s in spans}
    return [s for s in spans if s.get("parentId") not in ids]


async def test_one_booking_makes_one_trace_across_api_temporal_kafka_and_billing(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings, paths: Paths
) -> None:
    cid = f"trace-{uuid.uuid4().hex}"
    name = f"Tracy Spanwell {uuid.uuid4().hex[:6]}"
    reason = f"HIV follow-up {uuid.uuid4().hex[:6]}"
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff, name=name)
    when = (datetime.now(UTC) + timedelta(days=55, minutes=uuid.uuid4().int % 10_000)).replace(
        second=0, microsecond=0
    )
    resp = await api.post(
        f"{V1}/appointments",
        json={
            "patientId": patient["id"],
            "doctorId": doctor["id"],
            "time": when.isoformat(),
            "reason": reason,
        },
        headers={**staff.headers, "X-Request-ID": cid},
    )
    assert resp.status_code == 201, resp.text
    appointment_id = uuid.UUID(resp.json()["id"])
    (invoice,) = await wait_for(api, staff, {"patientId": patient["id"]}, 1)
    await status_of(api, staff, invoice["id"], "ISSUED")

    topic = settings.topic_appointment_events
    wanted = {
        ("healthcare-api", "POST /api/v1/appointments"),
        ("healthcare-api", "StartUpdateWithStartWorkflow:Appointment"),
        ("healthcare-worker", "RunWorkflow:Appointment"),
        ("healthcare-worker", "RunActivity:appointments.store"),
        ("healthcare-worker", f"publish {topic}"),
        ("healthcare-consumer", f"process {topic}"),
        ("healthcare-worker", "RunWorkflow:Billing"),
        ("healthcare-worker", "RunActivity:billing.render_pdf"),  # the Lambda invocation
    }
    traces = await trace_with(settings, cid, wanted)
    assert len(traces) == 1, [sorted({s["traceId"] for s in t}) for t in traces]
    (spans,) = traces
    assert len({s["traceId"] for s in spans}) == 1

    # Linked, not merely tagged: every span but the request's own has its parent in the trace.
    roots = _roots(spans)
    assert [r["name"] for r in roots] == ["post /api/v1/appointments"], [r["name"] for r in roots]
    by_name = {s["name"]: s for s in spans}
    consumed, published = by_name[f"process {topic}".lower()], by_name[f"publish {topic}".lower()]
    assert consumed["parentId"] == published["id"]  # across the Kafka hop
    workflow_ids = {s.get("tags", {}).get("temporalWorkflowID") for s in spans} - {None}
    assert {appointment_workflow_id(appointment_id), billing_workflow_id(appointment_id)} <= workflow_ids

    # From the correlation id to the trace and back: the roles' log lines of this booking name it.
    trace_id = spans[0]["traceId"]
    for role in ("api", "worker", "consumer"):
        lines = [json.loads(ln) for ln in (paths.logs / f"{role}.log").read_text().splitlines() if cid in ln]
        assert trace_id in {ln.get("trace_id") for ln in lines}, role

    # Nothing the codec hides: no visit reason, no name, anywhere in any span (names, tags, events).
    text = json.dumps(spans)
    assert reason not in text and reason.split(maxsplit=1)[0] not in text
    assert name not in text and name.split()[1] not in text
    assert staff.headers["Authorization"].split()[1] not in text


async def test_a_search_by_name_leaves_neither_the_name_nor_the_token_in_its_span(
    api: httpx.AsyncClient, staff: Account, settings: Settings
) -> None:
    cid = f"trace-q-{uuid.uuid4().hex}"
    secret_name = f"Querida {uuid.uuid4().hex[:8]}"
    resp = await api.get(
        f"{V1}/patients", params={"q": secret_name}, headers={**staff.headers, "X-Request-ID": cid}
    )
    assert resp.status_code == 200, resp.text
    traces = await trace_with(settings, cid, {("healthcare-api", "GET /api/v1/patients")})
    text = json.dumps(traces)
    assert secret_name.split()[1] not in text
    assert staff.headers["Authorization"].split()[1] not in text
    (server,) = [s for t in traces for s in t if s.get("kind") == "SERVER"]
    assert server["tags"][tracing.CORRELATION_ATTRIBUTE] == cid
    assert "?" not in server["tags"].get("http.target", "") and "?" not in server["tags"].get("http.url", "")

"""Encrypted payloads on the real stack, and the codec server the Temporal UI decodes them through.

A booking with a visit reason runs through the API, the worker, the consumer and billing; the
histories the Temporal server stores (fetched raw, and through the Temporal UI's own HTTP API, as the
UI shows and exports them) hold no reason, no name and no SQL; the codec server decodes them for
staff and admins only, and every call leaves an audit record.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from temporalio.api.common.v1 import Header, Payload, Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHistory

from api.codec_server import COOKIE
from healthcare import codec
from healthcare.contracts.appointments import (
    RUN_PENDING,
    RUN_REJECTED,
    AppointmentState,
    AppointmentStatus,
    BookingRequest,
)
from healthcare.contracts.appointments import appointment_workflow_id as appointment_workflow
from healthcare.contracts.billing import BillingRequest
from healthcare.contracts.billing import billing_workflow_id as billing_workflow
from healthcare.contracts.search_attributes import SearchAttribute
from healthcare.settings import Settings
from ops.replay import replay_history
from tests.integration.factories import (
    PASSWORD,
    Account,
    create_doctor,
    create_patient,
    create_user,
    fresh_ip,
    register_patient_user,
)
from tests.integration.test_billing import status_of, wait_for

pytestmark = pytest.mark.integration

V1 = "/api/v1"
REASON = "HIV follow-up"
SQL_WORDS = ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM")


@pytest.fixture(scope="module")
async def codec_http(settings: Settings) -> Any:
    async with httpx.AsyncClient(
        base_url=f"http://{settings.codec_host}:{settings.codec_port}", timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="module")
async def booked(
    api: httpx.AsyncClient, admin: Account, staff: Account, temporal: TemporalClient
) -> dict[str, Any]:
    """One booking with a visit reason, billed through to an issued invoice."""
    doctor = await create_doctor(api, admin)
    name = f"Ada Lovelace {uuid.uuid4().hex[:6]}"
    patient = await create_patient(api, staff, name=name, condition="asthma")
    resp = await api.post(
        f"{V1}/appointments",
        json={
            "patientId": patient["id"],
            "doctorId": doctor["id"],
            "time": (datetime.now(UTC) + timedelta(days=40)).replace(microsecond=0).isoformat(),
            "reason": REASON,
        },
        headers=staff.headers,
    )
    assert resp.status_code == 201, resp.text
    appointment = resp.json()
    (invoice,) = await wait_for(api, staff, {"patientId": patient["id"]}, 1)
    await status_of(api, staff, invoice["id"], "ISSUED")
    return {"appointment": appointment, "patient": patient, "name": name, "invoice": invoice}


async def _raw(temporal: TemporalClient, workflow_id: str) -> WorkflowHistory:
    return await temporal.get_workflow_handle(workflow_id).fetch_history()


def _headers(message: Message) -> list[Payload]:
    """The payloads of every Temporal header inside a message: the correlation id travels there."""
    if isinstance(message, Header):
        return list(message.fields.values())
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        for item in value if field.label == field.LABEL_REPEATED else [value]:  # type: ignore[attr-defined]
            found += _headers(item)
    return found


def _started_input(history: WorkflowHistory) -> dict[str, Any]:
    started = history.events[0]
    assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    return MessageToDict(started.workflow_execution_started_event_attributes.input)


async def test_stored_histories_hold_no_reason_name_or_sql(
    booked: dict[str, Any], temporal: TemporalClient, settings: Settings
) -> None:
    appointment_id = uuid.UUID(booked["appointment"]["id"])
    for workflow_id in (appointment_workflow(appointment_id), billing_workflow(appointment_id)):
        history = await _raw(temporal, workflow_id)
        raw = History(events=history.events).SerializeToString()
        for text in (REASON, booked["name"], "asthma", *SQL_WORDS):
            assert text.encode() not in raw, f"{text!r} in the stored history of {workflow_id}"
        # What stays readable: search attributes (ids and statuses, typed), the correlation-id
        # header (an id) and the SDK's own marker bookkeeping (patch ids, local-activity sequence
        # numbers); everything else is ciphertext.
        for event in history.events:
            headers = {p.SerializeToString() for p in _headers(event)}
            for payload in codec.iter_payloads(event):
                if payload.metadata.get("encoding") == codec.ENCODING:
                    continue
                readable = "type" in payload.metadata or payload.SerializeToString() in headers
                assert readable or event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED, (
                    f"plain payload in {EventType.Name(event.event_type)} of {workflow_id}"
                )
    # Search attributes are not encrypted, so they carry ids and statuses only: nothing to hide.
    for workflow_id in (appointment_workflow(appointment_id), billing_workflow(appointment_id)):
        described = await temporal.get_workflow_handle(workflow_id).describe()
        pairs = described.typed_search_attributes
        ours = {p.key.name: p.value for p in pairs if p.key.name in set(SearchAttribute)}
        assert ours.keys() >= {SearchAttribute.patient_id, SearchAttribute.doctor_id}
        for name, value in ours.items():
            if name == SearchAttribute.appointment_status:
                assert value in {*AppointmentStatus, RUN_PENDING, RUN_REJECTED}
            else:
                assert isinstance(value, str) and uuid.UUID(value)

    # With the keys, the same payloads are the models the API answered with.
    converter = codec.data_converter(settings)
    history = await _raw(temporal, appointment_workflow(appointment_id))
    (request,) = await converter.decode(
        history.events[0].workflow_execution_started_event_attributes.input.payloads, [BookingRequest]
    )
    assert request.reason == REASON and str(request.patient_id) == booked["patient"]["id"]
    answer = next(
        e.workflow_execution_update_completed_event_attributes.outcome.success.payloads
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
    )
    (state,) = await converter.decode(answer, [AppointmentState])
    assert str(state.id) == booked["appointment"]["id"] and state.reason == REASON
    billing = await _raw(temporal, billing_workflow(appointment_id))
    (bill,) = await converter.decode(
        billing.events[0].workflow_execution_started_event_attributes.input.payloads, [BillingRequest]
    )
    assert bill.appointment_id == appointment_id


async def test_the_codec_server_decodes_for_staff_only_and_audits_each_call(
    booked: dict[str, Any],
    temporal: TemporalClient,
    codec_http: httpx.AsyncClient,
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
) -> None:
    workflow_id = appointment_workflow(uuid.UUID(booked["appointment"]["id"]))
    body = _started_input(await _raw(temporal, workflow_id))
    headers = {"X-Namespace": "default", "Content-Type": "application/json"}

    assert (await codec_http.post("/decode", json=body, headers=headers)).status_code == 401
    bad = {**headers, "Authorization": "Bearer not-a-token"}
    assert (await codec_http.post("/decode", json=body, headers=bad)).status_code == 401
    patient = await register_patient_user(api)
    denied = await codec_http.post("/decode", json=body, headers={**headers, **patient.headers})
    assert denied.status_code == 403
    doctor = await create_user(api, admin, "doctor")
    assert (
        await codec_http.post("/decode", json=body, headers={**headers, **doctor.headers})
    ).status_code == 403

    resp = await codec_http.post("/decode", json=body, headers={**headers, **staff.headers})
    assert resp.status_code == 200, resp.text
    (decoded,) = resp.json()["payloads"]
    assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
    request = BookingRequest.model_validate_json(base64.b64decode(decoded["data"]))
    assert request.reason == REASON and str(request.appointment_id) == booked["appointment"]["id"]

    # Mounted under a prefix, as the codec protocol allows: only the last segment counts.
    prefixed = await codec_http.post("/default/decode", json=body, headers={**headers, **staff.headers})
    assert prefixed.status_code == 200 and prefixed.json() == resp.json()

    records = (
        await api.get(f"{V1}/audit", params={"resourceId": workflow_id, "limit": 100}, headers=admin.headers)
    ).json()["items"]
    assert {(r["action"], r["actorId"], r["outcome"]) for r in records} >= {("decode", staff.id, "ok")}
    refusals = (
        await api.get(
            f"{V1}/audit", params={"actorId": patient.id, "action": "decode"}, headers=admin.headers
        )
    ).json()["items"]
    assert [(r["outcome"], r["resourceType"], r["resourceId"]) for r in refusals] == [
        ("denied", "namespace", "default")
    ]


async def test_encode_then_decode_round_trips(codec_http: httpx.AsyncClient, staff: Account) -> None:
    headers = {"X-Namespace": "default", **staff.headers}
    plain = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "eyJhIjoxfQ=="}]}
    encoded = await codec_http.post("/encode", json=plain, headers=headers)
    assert encoded.status_code == 200
    assert encoded.json() != plain
    decoded = await codec_http.post("/decode", json=encoded.json(), headers=headers)
    assert decoded.json() == plain


async def test_bad_requests_are_clear_4xx(codec_http: httpx.AsyncClient, staff: Account) -> None:
    h = staff.headers
    assert (
        await codec_http.post("/decode", content=b"{", headers={**h, "Content-Type": "application/json"})
    ).status_code == 400
    form = await codec_http.post(
        "/decode", content=b"payloads=1", headers={**h, "Content-Type": "text/plain"}
    )
    assert form.status_code == 400  # only JSON: a cross-site form cannot skip the CORS preflight
    other_key = codec.EncryptionCodec(codec.Keyring.parse(f"elsewhere:{codec.generate_key()}", "elsewhere"))
    foreign = MessageToDict(Payloads(payloads=[other_key.encrypt(Payload(data=b"1"))]))
    unknown = await codec_http.post("/decode", json=foreign, headers=h)
    assert unknown.status_code == 422 and "elsewhere" in unknown.json()["detail"]
    assert (await codec_http.post("/nothing", json={}, headers=h)).status_code == 404


async def test_cors_admits_only_the_temporal_ui(codec_http: httpx.AsyncClient, settings: Settings) -> None:
    (ui,) = settings.codec_origins
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    ok = await codec_http.options("/decode", headers={"Origin": ui, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ui
    assert ok.headers["access-control-allow-credentials"] == "true"
    evil = await codec_http.options("/decode", headers={"Origin": "https://evil.example", **preflight})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers


async def test_sign_in_sets_a_session_cookie_for_operators_only(
    codec_http: httpx.AsyncClient, api: httpx.AsyncClient, staff: Account, settings: Settings
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": fresh_ip()}
    page = await codec_http.get("/login")
    assert page.status_code == 200 and 'name="password"' in page.text
    wrong = await codec_http.post("/login", content=f"email={staff.email}&password=nope", headers=form)
    assert wrong.status_code == 401 and COOKIE not in wrong.cookies
    signed_in = await codec_http.post(
        "/login", content=f"email={staff.email}&password={PASSWORD}", headers=form
    )
    assert signed_in.status_code == 303
    cookie = signed_in.cookies[COOKIE]
    set_cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    plain = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "MQ=="}]}
    async with httpx.AsyncClient(base_url=str(codec_http.base_url), cookies={COOKIE: cookie}) as browser:
        assert (await browser.post("/encode", json=plain)).status_code == 200
        home = await browser.get("/")
        assert staff.email in home.text
    patient = await register_patient_user(api)
    refused = await codec_http.post(
        "/login", content=f"email={patient.email}&password={PASSWORD}", headers=form
    )
    assert refused.status_code == 403 and COOKIE not in refused.cookies
    foreign = await codec_http.post(
        "/login",
        content=f"email={staff.email}&password={PASSWORD}",
        headers={**form, "Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403


async def test_a_history_exported_from_the_temporal_ui_replays(
    booked: dict[str, Any], settings: Settings
) -> None:
    """What the UI's "Download event history (encoded)" saves: its HTTP API's history, as JSON."""
    workflow_id = billing_workflow(uuid.UUID(booked["appointment"]["id"]))
    async with httpx.AsyncClient(base_url=settings.temporal_ui_url, timeout=30) as ui:
        resp = await ui.get(
            f"/api/v1/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}/history"
        )
    assert resp.status_code == 200, resp.text
    exported = {"events": resp.json()["history"]["events"]}
    parsed = WorkflowHistory.from_json(workflow_id, exported)
    raw = History(events=parsed.events).SerializeToString()
    assert REASON.encode() not in raw and booked["name"].encode() not in raw
    ok, error = await replay_history(exported, workflow_id=workflow_id)
    assert ok, error

"""Billing through the real stack: booking → appointment-events → billing consumer → workflow → Lambda PDF
→ invoices API (read, pay, cancel → VOID, presigned PDF download), with the appointment role rules.

Needs the billing consumer and a worker that runs the billing workflow (the stack's `consumer` and
`worker` roles).
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import Client as TemporalClient

from healthcare.contracts.billing import billing_workflow_id
from tests.integration.factories import (
    Account,
    create_doctor,
    create_patient,
    create_user,
    register_patient_user,
)
from tests.waiting import eventually
from tests.workflows import capture

V1 = "/api/v1"
N = 3


def pdf_text(pdf: bytes) -> str:
    done = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return done.stdout.decode()


async def book(api: httpx.AsyncClient, who: Account, patient_id: str, doctor_id: str, hours: int) -> str:
    slot = (datetime.now(UTC) + timedelta(days=20, hours=hours)).replace(minute=0, second=0, microsecond=0)
    body = {"patientId": patient_id, "doctorId": doctor_id, "time": slot.isoformat()}
    resp = await api.post(f"{V1}/appointments", json=body, headers=who.headers)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def wait_for(
    api: httpx.AsyncClient, who: Account, params: dict[str, Any], count: int, timeout: float = 90
) -> list[dict[str, Any]]:
    async def listed() -> list[dict[str, Any]]:
        body = (await api.get(f"{V1}/invoices", params=params, headers=who.headers)).json()
        assert body["total"] >= count, f"{body['total']} of {count} invoices {params}: is the consumer up?"
        return list(body["items"])

    return await eventually(listed, timeout=timeout, interval=0.5, what=f"{count} invoices")


async def status_of(
    api: httpx.AsyncClient, who: Account, invoice_id: str, wanted: str, *, pdf: bool = False
) -> dict[str, Any]:
    """The invoice once it has `wanted` (and, with `pdf`, a PDF that shows it)."""

    async def reached() -> dict[str, Any]:
        got = (await api.get(f"{V1}/invoices/{invoice_id}", headers=who.headers)).json()
        assert got["status"] == wanted, got["status"]
        assert got["pdfAvailable"] or not pdf, "no PDF yet"
        return dict(got)

    return await eventually(reached, timeout=60, interval=0.5, what=f"invoice {invoice_id} {wanted}")


async def keep_history(temporal: TemporalClient, appointment_id: str, name: str) -> None:
    """`python -m tests.workflows.capture tests/integration/test_billing.py` (stack up) stores the real
    run's history for the replay test."""
    handle = temporal.get_workflow_handle(billing_workflow_id(uuid.UUID(appointment_id)))
    capture.keep_history(await handle.fetch_history(), name)


async def test_booked_visits_are_billed_paid_voided_and_downloadable(
    api: httpx.AsyncClient, admin: Account, staff: Account, temporal: TemporalClient
) -> None:
    alice = await register_patient_user(api)
    name = f"Alice Billing {uuid.uuid4().hex[:6]}"
    patient = await create_patient(api, alice, name=name)
    doctor_user = await create_user(api, admin, "doctor")
    doctor = await create_doctor(api, admin, fee="150.00", user=doctor_user)
    appointments = [await book(api, staff, patient["id"], doctor["id"], hours=i) for i in range(N)]

    params = {"patientId": patient["id"], "status": "ISSUED", "limit": 100}
    issued = await wait_for(api, staff, params, N)
    assert {i["appointmentId"] for i in issued} == set(appointments)
    for inv in issued:
        assert inv["amount"] == "150.00" and inv["currency"] == "USD" and inv["pdfAvailable"] is True
        assert inv["paidAt"] is None

    # Each PDF: 307 to a presigned URL, which serves the invoice naming the patient and the amount.
    by_appt = {i["appointmentId"]: i for i in issued}
    async with httpx.AsyncClient(timeout=30) as outside:
        for inv in issued:
            redirect = await api.get(f"{V1}/invoices/{inv['id']}/pdf", headers=alice.headers)
            assert redirect.status_code == 307, redirect.text
            url = redirect.headers["location"]
            assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url
            pdf = await outside.get(url)
            assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
            text = pdf_text(pdf.content)
            assert name in text and "USD 150.00" in text

    # Staff record a payment at the desk; recording it again answers the same PAID invoice.
    first = by_appt[appointments[0]]
    desk = {"method": "cash", "reference": f"RCPT-{uuid.uuid4().hex[:8]}"}
    paid = await api.post(f"{V1}/invoices/{first['id']}/pay", json=desk, headers=staff.headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID" and paid.json()["paidAt"]
    again = await api.post(f"{V1}/invoices/{first['id']}/pay", json=desk, headers=staff.headers)
    assert again.status_code == 200 and again.json()["status"] == "PAID"
    await keep_history(temporal, appointments[0], "real_paid")

    # Cancelling the appointment voids its invoice; its PDF is rendered again to say so; a void
    # invoice cannot be paid.
    second = by_appt[appointments[1]]
    cancelled = await api.post(f"{V1}/appointments/{appointments[1]}/cancel", headers=staff.headers)
    assert cancelled.status_code == 200, cancelled.text
    void = await status_of(api, staff, second["id"], "VOID", pdf=True)
    assert void["pdfAvailable"] is True
    other_desk = {"method": "card", "reference": f"RCPT-{uuid.uuid4().hex[:8]}"}
    assert (
        await api.post(f"{V1}/invoices/{second['id']}/pay", json=other_desk, headers=staff.headers)
    ).status_code == 409
    assert (
        await api.post(f"{V1}/invoices/{second['id']}/checkout", headers=alice.headers)
    ).status_code == 409
    assert (await api.get(f"{V1}/invoices/{second['id']}/pdf", headers=staff.headers)).status_code == 307
    await keep_history(temporal, appointments[1], "real_cancelled")

    # The doctor sees their appointments' invoices but takes no payments.
    mine = (await api.get(f"{V1}/invoices", params={"limit": 100}, headers=doctor_user.headers)).json()
    assert {i["id"] for i in mine["items"]} == {i["id"] for i in issued}
    third = by_appt[appointments[2]]
    assert (
        await api.post(f"{V1}/invoices/{third['id']}/pay", json=other_desk, headers=doctor_user.headers)
    ).status_code == 403

    # Someone else's invoice looks exactly like a missing one.
    bob = await register_patient_user(api)
    await create_patient(api, bob)
    other_doctor = await create_user(api, admin, "doctor")
    await create_doctor(api, admin, user=other_doctor)
    missing = f"{V1}/invoices/{uuid.uuid4()}"
    for who in (bob, other_doctor):
        for suffix in ("", "/pdf"):
            hidden = await api.get(f"{V1}/invoices/{third['id']}{suffix}", headers=who.headers)
            absent = await api.get(f"{missing}{suffix}", headers=who.headers)
            assert hidden.status_code == absent.status_code == 404
            assert hidden.json() == absent.json()
        assert (
            await api.post(f"{V1}/invoices/{third['id']}/pay", json=other_desk, headers=who.headers)
        ).status_code == 404
        listed = (await api.get(f"{V1}/invoices", headers=who.headers)).json()
        assert listed["total"] == 0 and listed["items"] == []

    # Reads, downloads and payments are audited, denied ones included.
    trail = (
        await api.get(f"{V1}/audit", params={"resourceId": third["id"], "limit": 100}, headers=admin.headers)
    ).json()["items"]
    assert {(r["action"], r["outcome"]) for r in trail} >= {
        ("download", "ok"),
        ("read", "denied"),
        ("download", "denied"),
        ("pay", "denied"),
    }


async def test_invoice_routes_refuse_bad_input_and_anonymous_callers(
    api: httpx.AsyncClient, staff: Account
) -> None:
    assert (await api.get(f"{V1}/invoices")).status_code == 401
    assert (await api.get(f"{V1}/invoices/not-a-uuid", headers=staff.headers)).status_code == 422
    bad_status = await api.get(f"{V1}/invoices", params={"status": "LOST"}, headers=staff.headers)
    assert bad_status.status_code == 422
    assert (await api.post(f"{V1}/invoices/{uuid.uuid4()}/pay", headers=staff.headers)).status_code == 422
    desk = {"method": "cash", "reference": "R-1"}
    assert (
        await api.post(f"{V1}/invoices/{uuid.uuid4()}/pay", json=desk, headers=staff.headers)
    ).status_code == 404

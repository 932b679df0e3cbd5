"""Payments on the real stack: a patient pays through the local payment provider (checkout, its page,
its signed callback), staff record desk payments, and nothing else marks an invoice PAID.

The provider is the stack's `payments` process (devstack/payment_provider.py); these tests act as
the patient's browser on its page. Forged callbacks are made here with the wrong secret or an old
timestamp, to show the API refuses them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from healthcare.payments import SIGNATURE_HEADER, sign
from healthcare.settings import Settings
from tests.integration.factories import (
    Account,
    book_visit,
    create_doctor,
    create_patient,
    register_patient_user,
)
from tests.waiting import eventually

pytestmark = pytest.mark.integration

V1 = "/api/v1"


def pdf_text(pdf: bytes) -> str:
    done = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
    return done.stdout.decode()


async def invoice_of(
    api: httpx.AsyncClient, who: Account, appointment_id: str, status: str = "ISSUED"
) -> dict[str, Any]:
    """The appointment's invoice once it has `status` (and, for a status with a PDF, that PDF)."""

    async def reached() -> dict[str, Any]:
        items = (await api.get(f"{V1}/invoices", params={"limit": 100}, headers=who.headers)).json()["items"]
        mine = [i for i in items if i["appointmentId"] == appointment_id]
        assert mine and mine[0]["status"] == status, mine
        assert status == "PENDING" or mine[0]["pdfAvailable"], "no PDF yet"
        return dict(mine[0])

    found: dict[str, Any] = await eventually(
        reached, timeout=120, interval=0.5, what=f"a {status} invoice for {appointment_id}"
    )
    return found


async def billed_patient(
    api: httpx.AsyncClient, admin: Account, staff: Account, *, fee: str = "95.00"
) -> tuple[Account, dict[str, Any], str]:
    """A patient account with its record and one booked visit (booked by staff); its appointment id."""
    patient = await register_patient_user(api)
    record = await create_patient(api, patient)
    doctor = await create_doctor(api, admin, fee=fee)
    return patient, record, await book_visit(api, staff, record["id"], doctor["id"])


async def test_a_patient_pays_online_through_the_provider(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    patient, _, appointment = await billed_patient(api, admin, staff, fee="95.00")
    invoice = await invoice_of(api, patient, appointment)

    opened = await api.post(f"{V1}/invoices/{invoice['id']}/checkout", headers=patient.headers)
    assert opened.status_code == 201, opened.text
    checkout = opened.json()
    assert checkout["status"] == "PENDING" and checkout["amount"] == "95.00"
    again = await api.post(f"{V1}/invoices/{invoice['id']}/checkout", headers=patient.headers)
    assert again.json()["checkoutUrl"] == checkout["checkoutUrl"]  # a double click: one checkout

    # The patient's browser: the provider's page, then its Pay button, then back to the portal.
    async with httpx.AsyncClient(timeout=30) as browser:
        page = await browser.get(checkout["checkoutUrl"])
        assert page.status_code == 200 and "USD 95.00" in page.text
        paid = await browser.post(checkout["checkoutUrl"] + "/pay")
        assert paid.status_code == 303
        assert paid.headers["location"].startswith(
            f"{settings.return_url.rstrip('/')}/invoices/{invoice['id']}?checkout="
        )

    done = await invoice_of(api, patient, appointment, "PAID")
    assert done["paymentId"] == checkout["paymentId"] and done["paidAt"]
    (payment,) = (await api.get(f"{V1}/invoices/{invoice['id']}/payments", headers=patient.headers)).json()
    assert (payment["status"], payment["method"], payment["provider"]) == ("CONFIRMED", "online", "local")

    # The PDF of a paid invoice says so.
    redirect = await api.get(f"{V1}/invoices/{invoice['id']}/pdf", headers=patient.headers)
    assert redirect.status_code == 307
    async with httpx.AsyncClient(timeout=30) as outside:
        text = pdf_text((await outside.get(redirect.headers["location"])).content)
    assert "PAID" in text and "Amount paid" in text and "Amount due" not in text


async def test_a_patient_cannot_mark_an_invoice_paid_without_paying(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    patient, _, appointment = await billed_patient(api, admin, staff)
    invoice = await invoice_of(api, patient, appointment)
    for body in (None, {"method": "cash", "reference": "I-PROMISE"}):
        resp = await api.post(f"{V1}/invoices/{invoice['id']}/pay", json=body, headers=patient.headers)
        assert resp.status_code in (403, 422), resp.text
    still = (await api.get(f"{V1}/invoices/{invoice['id']}", headers=patient.headers)).json()
    assert still["status"] == "ISSUED" and still["paidAt"] is None
    trail = (
        await api.get(
            f"{V1}/audit", params={"resourceId": invoice["id"], "action": "pay"}, headers=admin.headers
        )
    ).json()["items"]
    assert {(r["actorId"], r["outcome"]) for r in trail} == {(patient.id, "denied")}


async def test_forged_old_and_replayed_callbacks_change_nothing(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    patient, _, appointment = await billed_patient(api, admin, staff)
    invoice = await invoice_of(api, patient, appointment)
    checkout = (await api.post(f"{V1}/invoices/{invoice['id']}/checkout", headers=patient.headers)).json()
    checkout_id = checkout["checkoutUrl"].rsplit("/", 1)[1]
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "checkout.completed",
        "checkoutId": checkout_id,
        "merchantReference": checkout["paymentId"],
        "amount": checkout["amount"],
        "currency": checkout["currency"],
        "occurredAt": datetime.now(UTC).isoformat(),
    }
    body = json.dumps(event).encode()
    secret = settings.payment_webhook_secret.get_secret_value().encode()
    now = int(time.time())

    async def send(signature: str | None) -> httpx.Response:
        headers = {"content-type": "application/json", **({SIGNATURE_HEADER: signature} if signature else {})}
        return await api.post(f"{V1}/payments/webhook", content=body, headers=headers)

    assert (await send(None)).status_code == 400
    assert (await send(sign(b"not the provider's secret", body, timestamp=now))).status_code == 400
    assert (await send(sign(secret, body, timestamp=now - 3600))).status_code == 400  # an old one, replayed
    assert (await send(sign(secret, body + b" ", timestamp=now))).status_code == 400  # body changed
    unpaid = (await api.get(f"{V1}/invoices/{invoice['id']}", headers=patient.headers)).json()
    assert unpaid["status"] == "ISSUED"

    valid = sign(secret, body, timestamp=now)
    first = await send(valid)
    assert first.status_code == 200 and first.json() == {"status": "CONFIRMED"}
    assert (await send(valid)).json() == {"status": "CONFIRMED"}  # within the window: changes nothing
    assert (await invoice_of(api, patient, appointment, "PAID"))["paymentId"] == checkout["paymentId"]
    payments = (await api.get(f"{V1}/invoices/{invoice['id']}/payments", headers=staff.headers)).json()
    assert [p["status"] for p in payments] == ["CONFIRMED"]
    refusals = (
        await api.get(
            f"{V1}/audit", params={"action": "payment_callback", "limit": 100}, headers=admin.headers
        )
    ).json()["items"]
    assert any(r["outcome"] == "denied" and r["detail"]["reason"] == "bad signature" for r in refusals)


async def test_staff_record_desk_payments(api: httpx.AsyncClient, admin: Account, staff: Account) -> None:
    patient, _, appointment = await billed_patient(api, admin, staff, fee="80.00")
    invoice = await invoice_of(api, patient, appointment)
    url = f"{V1}/invoices/{invoice['id']}/pay"
    wrong = await api.post(
        url, json={"method": "cash", "reference": "R-1", "amount": "8.00"}, headers=staff.headers
    )
    assert wrong.status_code == 422  # no partial payments
    reference = f"RCPT-{uuid.uuid4().hex[:8]}"
    paid = await api.post(url, json={"method": "card", "reference": reference}, headers=staff.headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID" and paid.json()["paymentId"]
    again = await api.post(url, json={"method": "card", "reference": reference}, headers=staff.headers)
    assert again.status_code == 200 and again.json()["paymentId"] == paid.json()["paymentId"]
    other = await api.post(url, json={"method": "cash", "reference": reference + "-2"}, headers=staff.headers)
    assert other.status_code == 409  # already paid: a second payment is not taken
    (payment,) = (await api.get(f"{V1}/invoices/{invoice['id']}/payments", headers=patient.headers)).json()
    assert (payment["method"], payment["provider"], payment["reference"], payment["amount"]) == (
        "card",
        "desk",
        reference,
        "80.00",
    )
    assert (await api.post(url, json={"method": "cash"}, headers=staff.headers)).status_code == 422


async def test_money_for_an_invoice_voided_meanwhile_is_kept_for_refund(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    patient, _, appointment = await billed_patient(api, admin, staff)
    invoice = await invoice_of(api, patient, appointment)
    checkout = (await api.post(f"{V1}/invoices/{invoice['id']}/checkout", headers=patient.headers)).json()
    cancelled = await api.post(f"{V1}/appointments/{appointment}/cancel", headers=staff.headers)
    assert cancelled.status_code == 200
    await invoice_of(api, patient, appointment, "VOID")
    async with httpx.AsyncClient(timeout=30) as browser:
        assert (await browser.post(checkout["checkoutUrl"] + "/pay")).status_code == 303

    async def settled() -> list[dict[str, Any]]:
        found = (await api.get(f"{V1}/invoices/{invoice['id']}/payments", headers=staff.headers)).json()
        assert found and found[0]["status"] != "PENDING", found
        return list(found)

    payments = await eventually(settled, timeout=60, interval=0.5, what="the late payment's outcome")
    assert payments[0]["status"] == "REFUND_DUE"
    final = (await api.get(f"{V1}/invoices/{invoice['id']}", headers=staff.headers)).json()
    assert final["status"] == "VOID" and final["paymentId"] is None
    assert (
        await api.post(f"{V1}/invoices/{invoice['id']}/checkout", headers=patient.headers)
    ).status_code == 409


async def test_a_tampered_pdf_is_never_served(
    api: httpx.AsyncClient, admin: Account, staff: Account, s3: Any, settings: Settings
) -> None:
    """The API compares what storage holds with the digest billing recorded before it signs a link."""
    patient, _, appointment = await billed_patient(api, admin, staff)
    invoice = await invoice_of(api, patient, appointment)
    key = f"invoices/{invoice['id']}.pdf"
    original = s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
    assert (await api.get(f"{V1}/invoices/{invoice['id']}/pdf", headers=patient.headers)).status_code == 307
    forged = original.replace(b"95.00", b"9.50") if b"95.00" in original else original + b"%forged"
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=forged, ContentType="application/pdf")
    try:
        refused = await api.get(f"{V1}/invoices/{invoice['id']}/pdf", headers=patient.headers)
        assert refused.status_code == 502 and "integrity" in refused.json()["detail"]
        assert "location" not in refused.headers
    finally:
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=original, ContentType="application/pdf")
    # The original back (stored without an S3 checksum now: the API reads and hashes it instead).
    assert (await api.get(f"{V1}/invoices/{invoice['id']}/pdf", headers=patient.headers)).status_code == 307
    trail = (
        await api.get(
            f"{V1}/audit", params={"resourceId": invoice["id"], "action": "download"}, headers=admin.headers
        )
    ).json()["items"]
    assert "tampered" in {r["outcome"] for r in trail}

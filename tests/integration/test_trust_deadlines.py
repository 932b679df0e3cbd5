"""Requests that wait on Temporal have a deadline: with the worker down, booking and status changes
answer 503 with Retry-After and the appointment id (payment: the invoice id), and the booking
completes once the worker is back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from devstack.paths import Paths
from tests.integration.dynamo_stack import another_api
from tests.integration.factories import Account, create_doctor, create_patient
from tests.integration.test_billing_faults import frozen
from tests.waiting import eventually

pytestmark = pytest.mark.integration

V1 = "/api/v1"
DEADLINE_SECONDS = 2


@pytest.fixture(scope="module")
def impatient_api() -> Iterator[str]:
    with another_api(
        {"HC_TEMPORAL_UPDATE_TIMEOUT_SECONDS": str(DEADLINE_SECONDS)}, log_name="test-deadline-api"
    ) as other:
        yield other.url


def _slot(days: int) -> str:
    when = datetime.now(UTC) + timedelta(days=days, minutes=5 * (uuid.uuid4().int % 8000))
    return when.replace(second=0, microsecond=0).isoformat()


async def _status_becomes(api: httpx.AsyncClient, who: Account, appointment_id: str, status: str) -> None:

    async def reached() -> bool:
        resp = await api.get(f"{V1}/appointments/{appointment_id}", headers=who.headers)
        assert resp.status_code == 200 and resp.json()["status"] == status, resp.text
        return True

    await eventually(reached, timeout=90, interval=0.5, what=f"appointment status {status}")


async def _issued_invoice(api: httpx.AsyncClient, who: Account, patient_id: str) -> str:

    async def issued() -> str:
        resp = await api.get(f"{V1}/invoices", params={"patientId": patient_id}, headers=who.headers)
        items = resp.json()["items"]
        assert items and items[0]["status"] == "ISSUED", items
        return str(items[0]["id"])

    return await eventually(issued, timeout=90, interval=0.5, what="the ISSUED invoice")


async def test_booking_cancelling_and_paying_answer_503_while_the_worker_is_down(
    impatient_api: str, api: httpx.AsyncClient, admin: Account, staff: Account, paths: Paths
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    earlier = await api.post(
        f"{V1}/appointments",
        json={"patientId": patient["id"], "doctorId": doctor["id"], "time": _slot(80)},
        headers=staff.headers,
    )
    assert earlier.status_code == 201, earlier.text
    invoice = await _issued_invoice(api, staff, patient["id"])
    body = {"patientId": patient["id"], "doctorId": doctor["id"], "time": _slot(81)}
    key = str(uuid.uuid4())
    # A client timeout well past the deadline: without one the requests would never return.
    async with httpx.AsyncClient(base_url=impatient_api, timeout=30) as other:
        # The Temporal worker frozen (SIGSTOP): it holds its polls but runs nothing, as if gone.
        with frozen(int((paths.run / "worker.pid").read_text())):
            booking = await other.post(
                f"{V1}/appointments", json=body, headers={**staff.headers, "Idempotency-Key": key}
            )
            desk = {"method": "cash", "reference": f"deadline-{invoice}"}  # a payment taken at the desk
            pay = await other.post(f"{V1}/invoices/{invoice}/pay", json=desk, headers=staff.headers)
            cancel = await other.post(
                f"{V1}/appointments/{earlier.json()['id']}/cancel", headers=staff.headers
            )
    for resp in (booking, cancel, pay):
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["retry-after"]) >= 1
    assert (
        "GET /appointments/" in booking.json()["detail"] and "GET /appointments/" in cancel.json()["detail"]
    )
    assert cancel.json()["appointmentId"] == earlier.json()["id"]
    assert pay.json()["invoiceId"] == invoice
    appointment_id = booking.json()["appointmentId"]
    # The worker is back: the run stores the booking, and the client finds it where it was told.
    await _status_becomes(api, staff, appointment_id, "BOOKED")
    again = await api.post(f"{V1}/appointments", json=body, headers={**staff.headers, "Idempotency-Key": key})
    assert again.status_code == 201 and again.json()["id"] == appointment_id  # the same booking, not a second

"""A billing run whose PDF fails for good, on the real stack: it waits, visible, and recovers.

The stall this replaces: the real Lambda refused the request, the run FAILED with its invoice stuck
PENDING, and the appointment's later cancellation was dropped by the consumer. Here the run stays
RUNNING with the invoice NEEDS_ATTENTION (the API shows it, `billing reconcile` lists it with the
failure, the BillingStatus search attribute and a worker gauge count it), still takes a cancellation
or a payment, and renders its PDF when an operator retries after fixing the cause.

The fault: the invoice row carries a currency the real invoice-PDF function refuses ("us$"; it
wants an ISO 4217 code), written before the booking under the appointment id its Idempotency-Key
names, as a row imported from an older system would be. The billing run finds the row (one invoice
per appointment) and the Lambda answers 400. The fix is correcting the row.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecutionStatus

from healthcare.contracts.appointments import idempotent_appointment_id
from healthcare.contracts.billing import PDF_REJECTED, billing_workflow_id, invoice_id_for
from healthcare.settings import Settings, get_settings
from services.billing import NEEDS_ATTENTION_QUERY
from tests.integration.factories import Account, create_doctor, create_patient
from tests.waiting import eventually
from workflows.billing import BillingWorkflow

pytestmark = pytest.mark.integration

V1 = "/api/v1"
HEALTHCARE = Path(sys.executable).parent / "healthcare"
WORKER_METRICS_PORT = get_settings().stack_port("worker_metrics")


async def cli(*args: str) -> tuple[int, str]:
    """The operator's command, as a separate process with this stack's settings."""
    proc = await asyncio.create_subprocess_exec(
        str(HEALTHCARE), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


class Visit:
    def __init__(self, appointment_id: uuid.UUID, patient_id: str, doctor_id: str) -> None:
        self.appointment_id = appointment_id
        self.patient_id = patient_id
        self.doctor_id = doctor_id
        self.invoice_id = invoice_id_for(appointment_id)
        self.workflow_id = billing_workflow_id(appointment_id)


async def _book_with_a_refused_invoice_row(
    api: httpx.AsyncClient, admin: Account, staff: Account, engine: AsyncEngine, settings: Settings
) -> Visit:
    doctor = await create_doctor(api, admin, fee="80.00")
    patient = await create_patient(api, staff)
    key = str(uuid.uuid4())
    visit = Visit(idempotent_appointment_id(uuid.UUID(staff.id), key), patient["id"], doctor["id"])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO invoices (id, appointment_id, patient_id, doctor_id, amount, currency, status,"
                " workflow_id, due_at) VALUES (:id, :appointment, :patient, :doctor, 80.00, 'us$', 'PENDING',"
                " :workflow, now() + interval '30 days')"
            ),
            {
                "id": visit.invoice_id,
                "appointment": visit.appointment_id,
                "patient": visit.patient_id,
                "doctor": visit.doctor_id,
                "workflow": visit.workflow_id,
            },
        )
    slot = datetime.now(UTC) + timedelta(days=60, minutes=31 * (uuid.uuid4().int % 5000))
    resp = await api.post(
        f"{V1}/appointments",
        json={
            "patientId": visit.patient_id,
            "doctorId": visit.doctor_id,
            "time": slot.replace(second=0, microsecond=0).isoformat(),
        },
        headers={**staff.headers, "Idempotency-Key": key},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["id"] == str(visit.appointment_id)
    return visit


async def _invoice(api: httpx.AsyncClient, who: Account, visit: Visit) -> dict[str, Any]:
    resp = await api.get(f"{V1}/invoices/{visit.invoice_id}", headers=who.headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def _until_invoice(
    api: httpx.AsyncClient, who: Account, visit: Visit, status: str, timeout: float = 120
) -> dict[str, Any]:
    async def reached() -> dict[str, Any]:
        invoice = await _invoice(api, who, visit)
        assert invoice["status"] == status, invoice["status"]
        return invoice

    return await eventually(reached, timeout=timeout, interval=0.5, what=f"the invoice's {status}")


async def _until_closed(
    temporal: TemporalClient, visit: Visit, timeout: float = 60
) -> WorkflowExecutionStatus:
    handle = temporal.get_workflow_handle(visit.workflow_id)

    async def closed() -> WorkflowExecutionStatus:
        status = (await handle.describe()).status
        assert status is not None and status != WorkflowExecutionStatus.RUNNING, status
        return status

    return await eventually(closed, timeout=timeout, interval=0.5, what="the billing run's close")


async def _gauge(port: int, name: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        body = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _objects(s3: Any, settings: Settings, visit: Visit) -> int:
    listed = await asyncio.to_thread(
        s3.list_objects_v2, Bucket=settings.s3_bucket, Prefix=f"invoices/{visit.invoice_id}"
    )
    return int(listed["KeyCount"])


async def _fix_the_row(engine: AsyncEngine, visit: Visit) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE invoices SET currency = 'USD' WHERE id = :id"), {"id": visit.invoice_id}
        )


async def test_a_pdf_refused_for_good_waits_visibly_and_an_operator_retry_issues_it(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    engine: AsyncEngine,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
) -> None:
    visit = await _book_with_a_refused_invoice_row(api, admin, staff, engine, settings)

    # Visible: the API's status, the run (running, never FAILED), its search attribute and query.
    invoice = await _until_invoice(api, staff, visit, "NEEDS_ATTENTION")
    assert invoice["pdfAvailable"] is False and invoice["amount"] == "80.00"
    handle = temporal.get_workflow_handle_for(BillingWorkflow.run, visit.workflow_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    waiting = await temporal.count_workflows(
        f"{NEEDS_ATTENTION_QUERY} AND WorkflowId = '{visit.workflow_id}'"
    )
    assert waiting.count == 1
    attention = await handle.query(BillingWorkflow.attention)
    assert attention is not None and attention.failure_type == PDF_REJECTED
    assert "currency" in attention.message and "us$" not in attention.message  # rules, not values

    # ... in `billing reconcile`, with the failure and the command that repairs it (exit 1: found).
    code, out = await cli("billing", "reconcile", "--appointment", str(visit.appointment_id))
    assert code == 1, out
    assert f"needs attention: {visit.workflow_id}" in out and PDF_REJECTED in out
    assert f"healthcare billing retry-pdf {visit.workflow_id}" in out
    assert "runs needing attention: 1" in out

    # ... and in the worker's metrics (refreshed every 30 s).
    async def counted() -> bool:
        return await _gauge(WORKER_METRICS_PORT, "healthcare_billing_runs_needing_attention") >= 1

    await eventually(counted, timeout=90, interval=1, what="the runs-needing-attention gauge")

    # A retry before the cause is fixed fails again, and waits again: nothing is lost either way.
    code, out = await cli("billing", "retry-pdf", visit.workflow_id, "--reason", "first try")
    assert code == 0, out

    async def waits_again() -> bool:
        attention = await handle.query(BillingWorkflow.attention)
        return attention is not None and attention.retries == 1

    await eventually(waits_again, timeout=60, interval=0.5, what="the run waiting after one retry")
    await _until_invoice(api, staff, visit, "NEEDS_ATTENTION")

    # Fixed, retried: the PDF is rendered and stored once, the invoice ISSUED, the run goes on.
    await _fix_the_row(engine, visit)
    code, out = await cli("billing", "retry-pdf", visit.workflow_id, "--reason", "currency corrected")
    assert code == 0, out
    assert f"retrying the PDF of {visit.workflow_id}" in out and PDF_REJECTED in out
    issued = await _until_invoice(api, staff, visit, "ISSUED")
    assert issued["pdfAvailable"] is True and issued["currency"] == "USD"
    assert await _objects(s3, settings, visit) == 1
    assert await handle.query(BillingWorkflow.attention) is None
    gone = await temporal.count_workflows(f"{NEEDS_ATTENTION_QUERY} AND WorkflowId = '{visit.workflow_id}'")
    assert gone.count == 0
    # Nothing left to retry: the command says so and exits 1.
    code, out = await cli("billing", "retry-pdf", visit.workflow_id)
    assert code == 1 and "not waiting for an operator" in out

    paid = await api.post(
        f"{V1}/invoices/{visit.invoice_id}/pay", json=_desk_payment(visit), headers=staff.headers
    )
    assert paid.status_code == 200, paid.text
    assert await _until_closed(temporal, visit) == WorkflowExecutionStatus.COMPLETED
    assert (await temporal.count_workflows(f"WorkflowId = '{visit.workflow_id}'")).count == 1


def _desk_payment(visit: Visit) -> dict[str, str]:
    """A cash payment taken at the desk (an invoice is PAID only by a recorded payment)."""
    return {"method": "cash", "reference": f"R-{visit.invoice_id}"}


async def test_a_cancellation_while_the_pdf_needs_attention_voids_the_invoice(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    engine: AsyncEngine,
    temporal: TemporalClient,
    settings: Settings,
) -> None:
    """The cancellation used to be dropped without a trace (the run had failed)."""
    visit = await _book_with_a_refused_invoice_row(api, admin, staff, engine, settings)
    await _until_invoice(api, staff, visit, "NEEDS_ATTENTION")

    resp = await api.post(f"{V1}/appointments/{visit.appointment_id}/cancel", headers=staff.headers)
    assert resp.status_code == 200, resp.text
    voided = await _until_invoice(api, staff, visit, "VOID")
    assert voided["pdfAvailable"] is False
    assert await _until_closed(temporal, visit) == WorkflowExecutionStatus.COMPLETED
    result = await temporal.get_workflow_handle_for(BillingWorkflow.run, visit.workflow_id).result()
    assert result.final_status == "VOID"


async def test_a_payment_while_the_pdf_needs_attention_is_taken_and_the_pdf_follows_the_fix(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    engine: AsyncEngine,
    temporal: TemporalClient,
    s3: Any,
    settings: Settings,
) -> None:
    visit = await _book_with_a_refused_invoice_row(api, admin, staff, engine, settings)
    await _until_invoice(api, staff, visit, "NEEDS_ATTENTION")

    paid = await api.post(
        f"{V1}/invoices/{visit.invoice_id}/pay", json=_desk_payment(visit), headers=staff.headers
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID" and paid.json()["pdfAvailable"] is False
    # Paid, but the PDF still waits for an operator: the run is still listed.
    code, out = await cli("billing", "reconcile", "--appointment", str(visit.appointment_id))
    assert code == 1 and f"needs attention: {visit.workflow_id}" in out and "PAID" in out

    await _fix_the_row(engine, visit)
    code, out = await cli("billing", "retry-pdf", visit.workflow_id)
    assert code == 0, out
    assert await _until_closed(temporal, visit) == WorkflowExecutionStatus.COMPLETED
    invoice = await _invoice(api, staff, visit)
    assert invoice["status"] == "PAID" and invoice["pdfAvailable"] is True
    assert Decimal(invoice["amount"]) == Decimal("80.00")
    assert await _objects(s3, settings, visit) == 1

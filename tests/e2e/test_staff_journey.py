"""A staff member searches (ignoring accents), edits a patient, books a conflicting slot and sees
the clash explained, cancels with a confirmation, and records a payment; completes a visit and
marks a no-show."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import expect

from tests.e2e.conftest import Api, Portal, field
from tests.integration.factories import Account
from tests.waiting import eventually_sync


def test_staff_search_edit_conflict_and_payment(
    portal_for: Any, api: Api, admin: Account, staff: Account
) -> None:
    tag = uuid.uuid4().hex[:5]
    doctor = api.doctor(admin, name=f"Dr Ines Duarte {tag}", fee="140.00")
    patient = api.patient(staff, name=f"José Muñoz {tag}", dateOfBirth="1980-02-29", condition="Hypertension")
    other = api.patient(staff, name=f"Ana Ortiz {tag}")
    slot = (datetime.now(UTC) + timedelta(days=40)).replace(hour=9, minute=30, second=0, microsecond=0)
    api.book(staff, other["id"], doctor["id"], slot.isoformat(), 30)

    portal: Portal = portal_for(staff)
    page = portal.page
    portal.open("/")
    portal.heading(re.compile(r"^Welcome"))
    portal.check("staff-home")

    # Search without accents, in capitals.
    page.get_by_role("navigation", name="Main navigation").get_by_role("link", name="Patients").click()
    portal.heading("Patients")
    field(page, "Search by name").fill(f"JOSE MUNOZ {tag}")
    expect(page.get_by_role("link", name=f"José Muñoz {tag}")).to_be_visible()
    expect(page.get_by_role("row")).to_have_count(2)  # header + the one match
    portal.check("patients-search")
    page.get_by_role("link", name=f"José Muñoz {tag}").click()
    portal.heading(f"José Muñoz {tag}")
    expect(page.get_by_text("Hypertension")).to_be_visible()
    portal.check("patient-detail")

    # Edit: the API's refusal is shown next to the field, then a valid change is saved.
    page.get_by_role("link", name="Edit").click()
    portal.heading(f"Edit José Muñoz {tag}")
    field(page, "Date of birth").fill("2999-01-01")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("dateOfBirth cannot be in the future")).to_be_visible()
    field(page, "Date of birth").fill("1980-02-29")
    field(page, "Condition").fill("Hypertension, controlled")
    page.get_by_role("button", name="Add detail").click()
    field(page, "Detail 1 name").fill("bloodType")
    field(page, "Detail 1 value").fill("A+")
    portal.check("patient-edit")
    page.get_by_role("button", name="Save changes").click()
    portal.status("Changes saved.")
    portal.heading(f"José Muñoz {tag}")
    expect(page.get_by_text("Hypertension, controlled")).to_be_visible()
    expect(page.get_by_role("cell", name="A+", exact=True)).to_be_visible()
    saved = api.get(staff, f"/patients/{patient['id']}")
    assert saved["condition"] == "Hypertension, controlled" and saved["attributes"] == {"bloodType": "A+"}

    # Book the doctor's taken slot: the conflict is explained with the clashing time.
    page.get_by_role("link", name="Book appointment").first.click()
    portal.heading("Book appointment")
    expect(field(page, "Patient").first).to_have_value(re.compile(f"José Muñoz {tag}"))
    field(page, "Doctor").select_option(label=f"{doctor['name']} — General practice")
    field(page, "Date").fill(slot.strftime("%Y-%m-%d"))
    field(page, "Time").fill("09:45")
    page.get_by_role("button", name="Book appointment").click()
    conflict = page.locator(".conflict")
    expect(conflict).to_contain_text(f"{doctor['name']} already has an appointment from")
    expect(conflict).to_contain_text("9:30")
    expect(conflict).to_contain_text("10:00")
    portal.check("book-conflict")

    # A free time books.
    field(page, "Time").fill("10:00")
    page.get_by_role("button", name="Book appointment").click()
    portal.heading(re.compile(r"^Appointment on "))
    appointment_url = page.url

    # The calendar shows both of the doctor's appointments that day.
    portal.open(f"/appointments/calendar?doctorId={doctor['id']}&view=day&date={slot:%Y-%m-%d}")
    day = page.get_by_role("region", name=re.compile(slot.strftime("%A")))
    expect(day.get_by_role("link")).to_have_count(2)
    expect(day.get_by_text(f"José Muñoz {tag}")).to_be_visible()
    portal.open(f"/appointments/calendar?doctorId={doctor['id']}&view=week&date={slot:%Y-%m-%d}")
    portal.heading(f"Calendar of {doctor['name']}")
    portal.check("calendar-week")

    # The list filters by doctor and status.
    portal.open(f"/appointments?doctorId={doctor['id']}&status=BOOKED")
    expect(page.get_by_role("row")).to_have_count(3)
    portal.check("appointments-list")

    # Record the payment of the visit's invoice: ISSUED -> PAID.
    mine = next(
        a
        for a in api.get(staff, "/appointments", doctorId=doctor["id"])["items"]
        if a["patientId"] == patient["id"]
    )
    invoice = _wait_for_invoice(api, staff, patient["id"])
    portal.open(f"/invoices/{invoice['id']}")
    status = page.get_by_test_id("invoice-status")
    expect(status).to_have_text("ISSUED", timeout=60_000)
    expect(page.get_by_text("$140.00")).to_be_visible()
    page.get_by_label("Method").select_option("card")
    page.get_by_label("Reference").fill("TERM-0042")
    page.get_by_role("button", name="Record payment").click()
    expect(status).to_have_text("PAID")
    portal.status(re.compile(r"Payment of \$140.00 recorded"))
    portal.check("invoice-paid")
    assert api.get(staff, f"/invoices/{invoice['id']}")["status"] == "PAID"

    # The invoice list filters by status.
    portal.open(f"/invoices?status=PAID&patientId={patient['id']}")
    expect(page.get_by_role("row")).to_have_count(2)
    portal.check("invoices-list")

    # Cancelling asks first; keeping it changes nothing, confirming cancels.
    page.goto(appointment_url)
    main = page.get_by_role("main")
    main.get_by_role("button", name="Cancel appointment").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("This cannot be undone")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert api.get(staff, f"/appointments/{mine['id']}")["status"] == "BOOKED"
    main.get_by_role("button", name="Cancel appointment").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel appointment").click()
    portal.status("The appointment is cancelled.")
    expect(page.get_by_text("CANCELLED", exact=True)).to_be_visible()
    assert api.get(staff, f"/appointments/{mine['id']}")["status"] == "CANCELLED"


def _wait_for_invoice(api: Api, who: Account, patient_id: str) -> dict[str, Any]:
    """The billing workflow makes the invoice seconds after the booking event."""

    def invoiced() -> dict[str, Any] | None:
        items = api.get(who, "/invoices", patientId=patient_id)["items"]
        return dict(items[0]) if items else None

    found = eventually_sync(invoiced, timeout=60, interval=0.5, what="the visit's invoice")
    assert found is not None
    return found


def test_staff_complete_a_visit_and_mark_a_no_show_after_confirming(
    portal_for: Any, api: Api, admin: Account, staff: Account
) -> None:
    tag = uuid.uuid4().hex[:5]
    doctor = api.doctor(admin, name=f"Dr Noor Saleh {tag}")
    patient = api.patient(staff, name=f"Lea Brandt {tag}")
    day = (datetime.now(UTC) + timedelta(days=5)).replace(hour=8, minute=0, second=0, microsecond=0)
    visit = api.book(staff, patient["id"], doctor["id"], day.isoformat())
    missed = api.book(staff, patient["id"], doctor["id"], (day + timedelta(hours=2)).isoformat())

    portal: Portal = portal_for(staff)
    page = portal.page
    portal.open(f"/appointments?patientId={patient['id']}&status=BOOKED")
    rows = page.get_by_role("row").filter(has_text=f"Lea Brandt {tag}")
    expect(rows).to_have_count(2)

    rows.first.get_by_role("button", name="Complete").click()
    portal.status("The appointment is marked completed.")
    expect(rows).to_have_count(1)  # the list shows BOOKED ones only
    assert api.get(staff, f"/appointments/{visit['id']}")["status"] == "COMPLETED"

    rows.first.get_by_role("button", name="No-show").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("as a no-show? This cannot be undone.")
    portal.check("no-show-confirm")
    dialog.get_by_role("button", name="Mark no-show").click()
    portal.status("The appointment is marked as a no-show.")
    expect(rows).to_have_count(0)
    assert api.get(staff, f"/appointments/{missed['id']}")["status"] == "NO_SHOW"

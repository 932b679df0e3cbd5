"""A patient registers, signs in, creates their record, books, sees the invoice, downloads its PDF
and pays; they see only their own record and only their role's navigation."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import expect

from tests.e2e.conftest import SIGN_IN_WAIT_MS, Api, Portal, field, sign_in
from tests.integration.factories import PASSWORD, Account, unique_email


def test_patient_registers_books_and_pays(portal_for: Any, api: Api, admin: Account, staff: Account) -> None:
    doctor = api.doctor(admin, name=f"Dr Amara Okafor {uuid.uuid4().hex[:4]}", fee="85.50")
    someone_else = api.patient(staff, name="Another Person")
    portal: Portal = portal_for()
    page = portal.page
    email = unique_email("patient")

    # Register (which signs in), then sign out and in again as a returning patient would.
    portal.open("/register")
    portal.heading("Register as a patient")
    portal.check("register")
    field(page, "Email").fill(email)
    field(page, "Password").fill("short")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_text("Use at least 10 characters")).to_be_visible()
    field(page, "Password").fill(PASSWORD)
    page.get_by_role("button", name="Register").click()
    portal.heading("Create your record", timeout=SIGN_IN_WAIT_MS)
    page.get_by_role("button", name="Sign out").click()
    portal.heading("Sign in")
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    portal.check("sign-in")
    sign_in(page, portal.base_url, email)

    # Only a patient's places.
    nav = page.get_by_role("navigation", name="Main navigation")
    for name in ("Home", "My record", "Appointments", "Invoices"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    for name in ("Patients", "Analytics", "Doctors", "Users", "Audit trail"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_have_count(0)

    # Create the record, with the API's validation shown next to the field.
    nav.get_by_role("link", name="My record").click()
    portal.heading("Create your record")
    field(page, "Name").fill("Zoë Lefèvre")
    field(page, "Date of birth").fill("2099-01-01")
    page.get_by_role("button", name="Create record").click()
    expect(page.get_by_text("dateOfBirth cannot be in the future")).to_be_visible()
    field(page, "Date of birth").fill("1991-04-12")
    field(page, "Condition").fill("Asthma")
    page.get_by_role("button", name="Add detail").click()
    field(page, "Detail 1 name").fill("allergies")
    field(page, "Detail 1 value").fill('["penicillin"]')
    page.get_by_role("button", name="Create record").click()
    portal.heading("Zoë Lefèvre")
    portal.status("Your record is saved.")
    expect(page.get_by_role("cell", name='["penicillin"]')).to_be_visible()
    record_url = page.url

    # Book.
    page.get_by_role("link", name="Book appointment").first.click()
    portal.heading("Book appointment")
    field(page, "Doctor").select_option(label=f"{doctor['name']} — General practice")
    field(page, "Date").fill("2027-09-14")
    field(page, "Time").fill("10:30")
    portal.check("patient-book")
    page.get_by_role("button", name="Book appointment").click()
    portal.heading(re.compile(r"^Appointment on "))
    portal.status(f"Booked with {doctor['name']}")
    expect(page.get_by_text("BOOKED", exact=True)).to_be_visible()

    # The invoice appears on the patient's page by itself (billing runs seconds after the booking).
    page.goto(record_url)
    invoices = page.get_by_role("region", name="Invoices")
    expect(invoices.get_by_text("$85.50")).to_be_visible(timeout=60_000)
    invoices.get_by_role("link").first.click()
    portal.heading(re.compile(r"^Invoice "))
    status = page.get_by_test_id("invoice-status")
    expect(status).to_have_text("ISSUED", timeout=60_000)
    portal.check("patient-invoice")

    # Download the PDF through the presigned redirect.
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download PDF").click()
    pdf = download_info.value
    assert pdf.suggested_filename.startswith("invoice-") and pdf.suggested_filename.endswith(".pdf")
    assert open(pdf.path(), "rb").read(5) == b"%PDF-"  # noqa: SIM115 - tiny read
    portal.status("The PDF is downloaded.")

    # Pay online: the payment provider's page takes it, confirms it to the API and sends the patient
    # back to the invoice, which moves from ISSUED to PAID.
    page.get_by_role("button", name="Pay", exact=True).click()
    page.get_by_role("button", name=re.compile(r"^Pay USD 85\.50$")).click()
    expect(page).to_have_url(re.compile(r"/invoices/[0-9a-f-]+\?checkout="))
    expect(status).to_have_text("PAID", timeout=30_000)
    expect(page.get_by_role("button", name="Pay", exact=True)).to_have_count(0)

    # Someone else's record, even by its URL, is not there.
    portal.open(f"/patients/{someone_else['id']}")
    portal.heading("Patient not found")
    expect(page.get_by_text("Another Person")).to_have_count(0)
    portal.open("/admin/audit")
    portal.heading("Not available")

"""A doctor sees only their own patients and calendar; an admin creates a doctor with a fee, adds
a user and reads the audit trail with filters."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import expect

from tests.e2e.conftest import SIGN_IN_WAIT_MS, Api, Portal, field
from tests.integration.factories import PASSWORD, Account, unique_email


def test_doctor_sees_only_their_own_patients(
    portal_for: Any, api: Api, admin: Account, staff: Account, doctor_user: Account, doctor: dict[str, Any]
) -> None:
    tag = uuid.uuid4().hex[:5]
    theirs = api.patient(staff, name=f"Maya Lindqvist {tag}")
    not_theirs = api.patient(staff, name=f"Omar Haddad {tag}")
    colleague = api.doctor(admin)
    when = (datetime.now(UTC) + timedelta(days=3)).replace(hour=14, minute=0, second=0, microsecond=0)
    api.book(staff, theirs["id"], doctor["id"], when.isoformat())
    api.book(staff, not_theirs["id"], colleague["id"], when.isoformat())

    portal: Portal = portal_for(doctor_user)
    page = portal.page
    portal.open("/patients")
    portal.heading("Patients")
    nav = page.get_by_role("navigation", name="Main navigation")
    for name in ("Doctors", "Users", "Audit trail"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="New patient")).to_have_count(0)
    page.get_by_label("Search by name").fill(tag)
    expect(page.get_by_role("link", name=f"Maya Lindqvist {tag}")).to_be_visible()
    expect(page.get_by_text(f"Omar Haddad {tag}")).to_have_count(0)
    portal.check("doctor-patients")

    portal.open(f"/patients/{not_theirs['id']}")
    portal.heading("Patient not found")

    # Their calendar, with no doctor picker: the week of the appointment shows it.
    portal.open(f"/appointments/calendar?date={when:%Y-%m-%d}")
    portal.heading(f"Calendar of {doctor['name']}")
    expect(page.get_by_label("Doctor", exact=True)).to_have_count(0)
    expect(page.get_by_text(f"Maya Lindqvist {tag}")).to_be_visible()
    expect(page.get_by_text(f"Omar Haddad {tag}")).to_have_count(0)
    portal.check("doctor-calendar")

    # A doctor may cancel their own appointment but not mark it completed.
    portal.open(f"/appointments?status=BOOKED&from={when:%Y-%m-%d}&to={when:%Y-%m-%d}")
    row = page.get_by_role("row").filter(has_text=f"Maya Lindqvist {tag}")
    expect(row.get_by_role("button", name="Cancel appointment")).to_be_visible()
    expect(row.get_by_role("button", name="Complete")).to_have_count(0)


def test_admin_creates_a_doctor_and_a_user_and_reads_the_audit_trail(
    portal_for: Any, api: Api, admin: Account
) -> None:
    tag = uuid.uuid4().hex[:5]
    linked = api.create_user(admin, "doctor")
    portal: Portal = portal_for(admin)
    page = portal.page

    portal.open("/admin/doctors")
    portal.heading("Doctors")
    field(page, "Name").fill(f"Dr Sofia Brandt {tag}")
    field(page, "Specialty").fill("Cardiology")
    field(page, "Fee").fill("twelve")
    page.get_by_role("button", name="Add doctor").click()
    expect(page.get_by_text("Enter a fee such as 120.00")).to_be_visible()
    field(page, "Fee").fill("250.00")
    page.get_by_label("Sign-in account").select_option(label=linked.email)
    page.get_by_role("button", name="Add doctor").click()
    portal.status(re.compile(rf"Dr Sofia Brandt {tag} is added with a fee of \$250.00"))
    row = page.get_by_role("row").filter(has_text=f"Dr Sofia Brandt {tag}")
    expect(row).to_contain_text("Cardiology")
    expect(row).to_contain_text("$250.00")
    portal.check("admin-doctors")
    created = next(
        d for d in api.get(admin, "/doctors", limit=100)["items"] if d["name"] == f"Dr Sofia Brandt {tag}"
    )
    assert created["fee"] == "250.00" and created["userId"] == linked.id

    portal.open("/admin/users")
    portal.heading("Users")
    email = unique_email("clerk")
    field(page, "Email").fill(email)
    field(page, "Password").fill(PASSWORD)
    page.get_by_role("main").get_by_label("Role", exact=True).last.select_option("staff")
    page.get_by_role("button", name="Add user").click()
    portal.status(f"{email} can now sign in as staff.", timeout=SIGN_IN_WAIT_MS)  # a bcrypt hash
    page.get_by_label("Role", exact=True).first.select_option("staff")  # the list's filter
    last = page.get_by_role("button", name="Last page")
    if last.count():  # oldest first: the new account is on the last page
        last.click()
    page.get_by_label(f"Role of {email}").select_option("doctor")
    portal.status(f"{email}: doctor, active.")
    portal.check("admin-users")
    assert api.login(email)  # the new account signs in

    portal.open("/admin/audit")
    portal.heading("Audit trail")
    page.get_by_label("Action").select_option("create")
    page.get_by_label("Record type").select_option("doctor")
    field(page, "Record id").fill(created["id"])
    rows = page.get_by_role("row")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("create")
    expect(rows.nth(1)).to_contain_text(created["id"][:8])
    expect(rows.nth(1)).to_contain_text("(admin)")
    portal.check("admin-audit")

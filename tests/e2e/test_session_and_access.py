"""Sessions: a deep link survives a reload; an expired session returns to sign-in with a message;
sign-in and the frame work by keyboard and at phone width; formats follow the browser's locale
and times the clinic's zone."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import expect

from healthcare.security import issue_token
from healthcare.settings import Settings
from tests.e2e.conftest import SIGN_IN_WAIT_MS, Api, Portal, field
from tests.integration.factories import PASSWORD, Account

EXPIRED = "Your session has expired. Please sign in again."


def _session(page: Any) -> dict[str, Any]:
    return dict(json.loads(page.evaluate("localStorage.getItem('clinic.session')")))


def test_a_deep_link_survives_a_reload(portal_for: Any, api: Api, staff: Account) -> None:
    patient = api.patient(staff, name=f"Deep Link {uuid.uuid4().hex[:5]}")
    portal: Portal = portal_for(staff)
    portal.open(f"/patients/{patient['id']}")
    portal.heading(patient["name"])
    portal.page.reload()
    portal.heading(patient["name"])
    assert portal.page.url.endswith(f"/patients/{patient['id']}")


def test_a_session_that_ran_out_returns_to_sign_in_with_a_message(portal_for: Any, staff: Account) -> None:
    portal: Portal = portal_for(staff)
    page = portal.page
    portal.open("/invoices")
    portal.heading("Invoices")
    session = _session(page)
    # The tab is closed: the expired session is planted on a page of the same origin that runs no
    # portal code (/healthz answers JSON). Planted under the live Invoices page, its next refetch
    # would go out without a token, be refused, and that page's sign-in would take the one-time
    # message before the reload below.
    portal.open("/healthz")
    page.evaluate(
        "s => localStorage.setItem('clinic.session', JSON.stringify(s))",
        {**session, "expiresAt": 1_000},
    )
    portal.open("/invoices")
    portal.heading("Sign in")
    expect(page.get_by_text(EXPIRED)).to_be_visible()
    portal.check("session-expired")
    # Signing in again goes back to where the person was.
    field(page, "Email").fill(staff.email)
    field(page, "Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    portal.heading("Invoices", timeout=SIGN_IN_WAIT_MS)


def test_a_token_the_api_refuses_returns_to_sign_in_with_a_message(
    portal_for: Any, staff: Account, settings: Settings
) -> None:
    """The browser's clock says the token is fine; the API says it expired (clock skew, a key rotation)."""
    expired = issue_token(
        user_id=uuid.UUID(staff.id),
        role="staff",
        settings=settings,
        now=datetime.now(UTC) - timedelta(hours=2),
    )
    # The token is planted on the signed-out sign-in page, where nothing uses it, and the app is then
    # loaded with it. (Planted under a live page, a request or the live feed of that page could be
    # refused first, and its sign-in page take the one-time message before this test looked.)
    portal: Portal = portal_for()
    page = portal.page
    portal.open("/sign-in")
    portal.heading("Sign in")
    still_valid = "t => localStorage.setItem('clinic.session', JSON.stringify({token: t, expiresAt: 4e12}))"
    page.evaluate(still_valid, expired)
    portal.open("/patients")
    portal.heading("Sign in")
    expect(page.get_by_text(EXPIRED)).to_be_visible()
    assert page.evaluate("localStorage.getItem('clinic.session')") is None


def test_sign_in_and_the_frame_by_keyboard(portal_for: Any, staff: Account) -> None:
    portal: Portal = portal_for()
    page = portal.page
    portal.open("/sign-in")
    # Keys pressed before the form is drawn go nowhere (the e-mail was lost once that way).
    expect(page.get_by_label("Email")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(staff.email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=SIGN_IN_WAIT_MS)
    # On a fresh load the first Tab reaches the skip link, which moves focus to the page.
    page.reload()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    # Navigation links are reachable and open with Enter.
    patients = page.get_by_role("navigation", name="Main navigation").get_by_role("link", name="Patients")
    patients.focus()
    page.keyboard.press("Enter")
    portal.heading("Patients")
    expect(page.get_by_role("heading", level=1, name="Patients")).to_be_focused()


def test_phone_width(portal_for: Any, staff: Account) -> None:
    portal: Portal = portal_for(staff, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = portal.page
    portal.open("/")
    nav = page.get_by_role("navigation", name="Main navigation")
    expect(nav.get_by_role("link", name="Patients")).not_to_be_in_viewport()
    page.get_by_role("button", name="Open navigation").click()
    expect(nav.get_by_role("link", name="Patients")).to_be_in_viewport()
    portal.check("phone-navigation")
    nav.get_by_role("link", name="Appointments").click()
    portal.heading("Appointments")
    expect(nav.get_by_role("link", name="Patients")).not_to_be_in_viewport()
    portal.check("phone-appointments")


def test_dates_and_money_follow_the_locale_and_times_the_clinic_zone(
    portal_for: Any, api: Api, admin: Account, staff: Account, settings: Settings
) -> None:
    """A browser in German, in Tokyo (UTC+9): formats are German, times are the clinic's (UTC here)."""
    assert settings.clinic_time_zone == "UTC", "the expectations below are written for a UTC clinic"
    tag = uuid.uuid4().hex[:5]
    doctor = api.doctor(admin, name=f"Dr Kenji Mori {tag}", fee="1234.50")
    patient = api.patient(staff, name=f"Hana Sato {tag}", dateOfBirth="1990-07-04")
    portal: Portal = portal_for(staff, locale="de-DE", timezone_id="Asia/Tokyo")
    page = portal.page

    portal.open(f"/appointments/new?patientId={patient['id']}&doctorId={doctor['id']}")
    portal.heading("Book appointment")
    field(page, "Date").fill("2027-03-11")
    field(page, "Time").fill("11:00")
    page.get_by_role("button", name="Book appointment").click()
    portal.heading(re.compile(r"^Appointment on 11\.03\.2027, 11:00$"))  # not 20:00 (Tokyo's wall clock)
    booked = api.get(staff, "/appointments", patientId=patient["id"])["items"][0]
    assert datetime.fromisoformat(booked["time"]) == datetime(2027, 3, 11, 11, 0, tzinfo=UTC)

    portal.open(f"/patients/{patient['id']}")
    expect(page.get_by_text("04.07.1990")).to_be_visible()
    invoices = page.get_by_role("region", name="Invoices")
    expect(invoices.get_by_text(re.compile(r"1\.234,50\s\$"))).to_be_visible(timeout=60_000)
    portal.check("locale-de-tokyo")

"""The local stack's Temporal UI in a real browser: ciphertext for all, plaintext for a signed-in operator.

Debian's Chromium, driven by Playwright. Screenshots of both views are kept under
`.state/artifacts/temporal-ui/` (the run's evidence; not compared, since the UI's look changes).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Response, ViewportSize, async_playwright, expect

from api.codec_server import COOKIE
from healthcare.contracts.appointments import appointment_workflow_id
from healthcare.settings import Settings
from tests.integration.factories import (
    PASSWORD,
    Account,
    create_doctor,
    create_patient,
    register_patient_user,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: without the background-networking flags Chromium keeps dialling Google's
# hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REASON = "HIV follow-up"
V1 = "/api/v1"
UI_TIMEOUT = 90_000  # ms: the UI is a large single-page app, slow to start on a busy 2-core machine


def _is_decode(response: Response) -> bool:
    return response.url.split("?")[0].endswith("/decode")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make setup` installs Debian's chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
def artifacts(settings: Settings) -> Path:
    folder = settings.state_dir / "artifacts" / "temporal-ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
async def booking(api: httpx.AsyncClient, admin: Account, staff: Account) -> dict[str, Any]:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff, name=f"Grace Hopper {uuid.uuid4().hex[:6]}")
    when = (datetime.now(UTC) + timedelta(days=45)).replace(microsecond=0)
    resp = await api.post(
        f"{V1}/appointments",
        json={
            "patientId": patient["id"],
            "doctorId": doctor["id"],
            "time": when.isoformat(),
            "reason": REASON,
        },
        headers=staff.headers,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def _workflow_page(settings: Settings, booking: dict[str, Any]) -> str:
    workflow_id = appointment_workflow_id(uuid.UUID(booking["id"]))
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


async def _sign_in_to_codec(page: Page, settings: Settings, email: str) -> None:
    await page.goto(f"http://{settings.codec_host}:{settings.codec_port}/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def _use_codec_with_credentials(page: Page, settings: Settings) -> None:
    """What an operator does once per browser: the UI's codec setting, with cookies included."""
    await page.goto(f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows")
    await page.get_by_role("button", name="Codec Server").first.click()
    await page.get_by_text("Use my browser setting and ignore Cluster-level setting.").click()
    await page.get_by_label("Codec Server browser endpoint").fill(
        f"http://{settings.codec_host}:{settings.codec_port}"
    )
    await page.get_by_text("Include cross-origin credentials").click()
    await page.get_by_role("button", name="Apply").click()


async def test_the_ui_shows_ciphertext_without_the_codec_and_plaintext_to_an_operator(
    browser: Browser,
    settings: Settings,
    booking: dict[str, Any],
    staff: Account,
    api: httpx.AsyncClient,
    admin: Account,
    artifacts: Path,
) -> None:
    url = _workflow_page(settings, booking)
    viewport = ViewportSize(width=1400, height=1000)

    # Anyone who opens the UI: the codec server refuses them (401), the input stays ciphertext.
    anonymous = await browser.new_context(viewport=viewport)
    page = await anonymous.new_page()
    async with page.expect_response(_is_decode, timeout=UI_TIMEOUT) as answer:
        await page.goto(url)
    assert (await answer.value).status == 401
    await expect(page.locator("#content").get_by_text("Codec Server could not connect")).to_be_visible(
        timeout=UI_TIMEOUT
    )
    await expect(page.get_by_text("Workflow Type")).to_be_visible()
    assert REASON not in await page.content()
    await page.screenshot(path=artifacts / "without-codec.png", full_page=True)
    await anonymous.close()

    # A patient who signs in to the codec server is refused there and gets no session cookie.
    patient = await register_patient_user(api)
    refused = await browser.new_context(viewport=viewport)
    page = await refused.new_page()
    await _sign_in_to_codec(page, settings, patient.email)
    await expect(page.get_by_text("Only staff and admins")).to_be_visible()
    assert not [c for c in await refused.cookies() if c["name"] == COOKIE]
    await refused.close()

    # A staff member signed in to the codec server: the UI decodes through it.
    operator = await browser.new_context(viewport=viewport)
    page = await operator.new_page()
    await _sign_in_to_codec(page, settings, staff.email)
    await expect(page.get_by_text(f"Signed in as {staff.email}")).to_be_visible()
    await _use_codec_with_credentials(page, settings)
    async with page.expect_response(_is_decode, timeout=UI_TIMEOUT) as answer:
        await page.goto(url)
    assert (await answer.value).status == 200
    await expect(page.get_by_text(re.compile(re.escape(REASON))).first).to_be_visible(timeout=UI_TIMEOUT)
    await expect(page.get_by_text(booking["id"]).first).to_be_visible()
    await page.screenshot(path=artifacts / "decoded-for-operator.png", full_page=True)
    await operator.close()

    # Each view through the codec left an audit record naming the operator and the workflow.
    records = (
        await api.get(
            f"{V1}/audit",
            params={"resourceId": appointment_workflow_id(uuid.UUID(booking["id"])), "action": "decode"},
            headers=admin.headers,
        )
    ).json()["items"]
    assert {r["actorId"] for r in records} == {staff.id}

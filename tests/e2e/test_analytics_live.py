"""The analytics page follows the websocket relay: a booking made through the API by someone else
shows up without a reload, and the page reconnects by itself after the relay restarts."""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.sync_api import Page, expect

from devstack.paths import Paths
from healthcare.settings import Settings
from tests.e2e.conftest import Api, Portal
from tests.integration.factories import Account

UPDATE_WITHIN_MS = 20_000  # bound of the wait, not a target: the benchmark measures the latency


def _total(page: Page) -> int | None:
    text = page.get_by_test_id("total-created").inner_text()
    digits = re.sub(r"\D", "", text)
    return int(digits) if digits else None


def _book_someone(api: Api, admin: Account, staff: Account, minutes_ahead: int) -> None:
    doctor = api.doctor(admin)
    patient = api.patient(staff)
    when = datetime.now(UTC) + timedelta(days=5, minutes=minutes_ahead)
    api.book(staff, patient["id"], doctor["id"], when.replace(second=0, microsecond=0).isoformat())


def _wait_for_more_than(page: Page, before: int | None) -> float:
    began = time.monotonic()
    page.wait_for_function(
        """before => {
            const tile = document.querySelector('[data-testid=total-created]');
            const digits = tile.innerText.replace(/\\D/g, '');
            return digits !== '' && (before === null || Number(digits) > before);
        }""",
        arg=before,
        timeout=UPDATE_WITHIN_MS,
    )
    return time.monotonic() - began


def test_a_booking_by_api_updates_the_open_page_and_a_relay_restart_is_survived(
    portal_for: Any, api: Api, admin: Account, staff: Account, settings: Settings
) -> None:
    portal: Portal = portal_for(staff)
    page = portal.page
    portal.open("/analytics")
    portal.heading("Analytics")
    status = page.get_by_test_id("feed-status")
    expect(status).to_have_text("Live")

    before = _total(page)
    _book_someone(api, admin, staff, 1)
    took = _wait_for_more_than(page, before)
    print(f"analytics page updated {took:.2f}s after the booking")
    expect(page.get_by_test_id("last-updated")).not_to_have_text("—")
    portal.check("analytics")

    # The table shows the same numbers as the chart.
    page.get_by_text("Table", exact=True).click()
    latest = _total(page)
    table = page.get_by_role("table", name="Analytics results, newest first")
    expect(table.get_by_role("row").nth(1)).to_contain_text(f"{latest:,}" if latest else "")
    portal.check("analytics-table")

    # Kill the relay: the stack restarts it, and the page reconnects with back-off.
    relay_pid = int((Paths.from_settings(settings).run / "relay.pid").read_text())
    os.kill(relay_pid, signal.SIGKILL)
    expect(status).to_contain_text("Reconnecting", timeout=15_000)
    expect(status).to_have_text("Live", timeout=90_000)
    before = _total(page)
    _book_someone(api, admin, staff, 2)
    _wait_for_more_than(page, before)
    assert int((Paths.from_settings(settings).run / "relay.pid").read_text()) != relay_pid

"""Patient search in the portal: accents and case ignored, results paged, the page and the query
kept in the address (a reload or a shared link shows the same page), and an empty result said so."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Api, Portal, field
from tests.integration.factories import Account

PAGE = 20  # the portal's page size (portal/src/pages/Patients.tsx)


def shown(first: int, last: int, total: int) -> str:
    """What the pager says: "21 to 23 of 23" with an en dash."""
    return f"{first}\N{EN DASH}{last} of {total}"


def _names(page: Page) -> set[str]:
    return set(page.get_by_role("table", name="Patients").get_by_role("link").all_inner_texts())


def test_search_ignores_accents_and_pages_through_the_matches(
    portal_for: Any, api: Api, staff: Account
) -> None:
    tag = uuid.uuid4().hex[:6]
    # 23 matches, spelled with and without accents, and one near miss that must not match.
    spelled = ("Łukasik", "Lukasík")
    made = {api.patient(staff, name=f"{spelled[i % 2]} Zoë {tag} {i:02}")["name"] for i in range(23)}
    api.patient(staff, name=f"Lukas Zoe {tag}")

    portal: Portal = portal_for(staff)
    page = portal.page
    portal.open("/patients")
    portal.heading("Patients")
    field(page, "Search by name").fill(f"LUKASIK ZOE {tag}")
    expect(page.get_by_text(shown(1, PAGE, 23))).to_be_visible()
    expect(page.get_by_role("table", name="Patients").get_by_role("link")).to_have_count(PAGE)
    first = _names(page)
    portal.check("patients-search-paged")

    pages = page.get_by_role("navigation", name="Patient pages")
    pages.get_by_role("button", name="Next page").click()
    expect(page.get_by_text(shown(21, 23, 23))).to_be_visible()
    expect(page.get_by_role("table", name="Patients").get_by_role("link")).to_have_count(3)
    expect(pages.get_by_role("button", name="Page 2")).to_have_attribute("aria-current", "page")
    second = _names(page)
    assert first.isdisjoint(second) and first | second == made

    # The query and the page live in the address: a reload shows the same page.
    assert re.search(r"offset=20", page.url), page.url
    page.reload()
    portal.heading("Patients")
    expect(field(page, "Search by name")).to_have_value(f"LUKASIK ZOE {tag}")
    expect(page.get_by_text(shown(21, 23, 23))).to_be_visible()
    assert _names(page) == second

    # A new query starts at its first page; no match is said in words.
    field(page, "Search by name").fill(f"lukas zoe {tag}")
    expect(page.get_by_text(shown(1, 1, 1))).to_be_visible()
    field(page, "Search by name").fill(f"nobody {tag}")
    expect(page.get_by_text(f"No patient matches “nobody {tag}”.")).to_be_visible()
    portal.check("patients-search-empty")

"""Browser tests of the portal on the real stack: Playwright drives Debian's Chromium.

Each role signs in once, through the sign-in page, and every later test of that role starts
from the stored browser state (localStorage holds the session). Every page a test visits is
checked with axe-core and saved as a screenshot under .state/artifacts/portal/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect, sync_playwright

from devstack.paths import Paths
from healthcare.settings import Settings
from tests.integration.factories import PASSWORD, Account, unique_email

CHROMIUM = "/usr/bin/chromium"
# What works here (shared/research/browser.md): Chromium's background traffic to Google would be
# refused by this machine's closed network at every start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
BLOCKING_IMPACTS = {"serious", "critical"}
expect.set_options(timeout=15_000)
# A bound, not a target: signing in verifies a bcrypt hash (registering makes one more), which takes
# seconds each at cost 12 when the 2-core machine is loaded (6 s + 4 s seen at a load of 25).
SIGN_IN_WAIT_MS = 60_000


class Api:
    """Test data through the public REST API (what any other client of the clinic would do)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def _ip(self) -> dict[str, str]:
        n = uuid.uuid4().int  # an address of its own per login: login throttling never interferes
        return {"X-Forwarded-For": f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"}

    def login(self, email: str, password: str = PASSWORD) -> str:
        resp = self.http.post(
            "/api/v1/auth/login", json={"email": email, "password": password}, headers=self._ip()
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    def create_user(self, admin: Account, role: str) -> Account:
        email = unique_email(role)
        resp = self.http.post(
            "/api/v1/users", json={"email": email, "password": PASSWORD, "role": role}, headers=admin.headers
        )
        assert resp.status_code == 201, resp.text
        return Account(resp.json()["id"], email, role, self.login(email))

    def post(self, who: Account, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        resp = self.http.post(f"/api/v1{path}", json=body, headers={**who.headers, **headers})
        assert resp.status_code in (200, 201), resp.text
        return dict(resp.json())

    def get(self, who: Account, path: str, **params: Any) -> dict[str, Any]:
        resp = self.http.get(f"/api/v1{path}", params=params, headers=who.headers)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def doctor(
        self, admin: Account, *, name: str | None = None, fee: str = "120.00", user: Account | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name or f"Dr {uuid.uuid4().hex[:6]}",
            "specialty": "General practice",
            "fee": fee,
        }
        if user is not None:
            body["userId"] = user.id
        return self.post(admin, "/doctors", body)

    def patient(self, who: Account, **fields: Any) -> dict[str, Any]:
        return self.post(who, "/patients", {"name": f"Patient {uuid.uuid4().hex[:8]}", **fields})

    def book(
        self, who: Account, patient_id: str, doctor_id: str, time: str, minutes: int = 30
    ) -> dict[str, Any]:
        return self.post(
            who,
            "/appointments",
            {"patientId": patient_id, "doctorId": doctor_id, "time": time, "durationMinutes": minutes},
            **{"Idempotency-Key": uuid.uuid4().hex},
        )


@pytest.fixture(scope="session", autouse=True)
def _stack_is_up(settings: Settings) -> None:
    if not Paths.from_settings(settings).ready_file.exists():
        pytest.exit("browser tests need the local stack: run `make test` (or `make up` first)", 2)
    if not Path(CHROMIUM).exists():
        pytest.exit(f"browser tests need Debian's chromium at {CHROMIUM}: run `make setup`", 2)


@pytest.fixture(scope="session")
def base_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


@pytest.fixture(scope="session")
def api(base_url: str) -> Iterator[Api]:
    client = Api(base_url)
    yield client
    client.http.close()


@pytest.fixture(scope="session")
def artifacts(settings: Settings) -> Path:
    folder = Paths.from_settings(settings).root / "artifacts" / "portal"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def admin(api: Api) -> Account:
    """The first admin, made as an operator makes one: the console command."""
    email = unique_email("admin")
    cli = Path(sys.executable).with_name("healthcare")
    subprocess.run(
        [str(cli), "create-admin", "--email", email, "--password", PASSWORD], check=True, capture_output=True
    )
    token = api.login(email)
    me = api.http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).json()
    return Account(me["id"], email, "admin", token)


@pytest.fixture(scope="session")
def staff(api: Api, admin: Account) -> Account:
    return api.create_user(admin, "staff")


@pytest.fixture(scope="session")
def doctor_user(api: Api, admin: Account) -> Account:
    return api.create_user(admin, "doctor")


@pytest.fixture(scope="session")
def doctor(api: Api, admin: Account, doctor_user: Account) -> dict[str, Any]:
    """The doctor record of `doctor_user` (what the doctor's own calendar shows)."""
    return api.doctor(admin, name=f"Dr Grey {uuid.uuid4().hex[:4]}", user=doctor_user)


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    # Package scope: the sync API runs an event loop in this thread while it is open, and the
    # asyncio tests of the other suites need the thread's loop back once the browser tests end.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


def field(page: Page, label: str) -> Locator:
    """An input by its label; a required field's label ends in an asterisk (hidden from screen readers)."""
    return page.get_by_label(re.compile(rf"^{re.escape(label)}( \*)?$"))


def sign_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/sign-in")
    field(page, "Email").fill(email)
    field(page, "Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible(timeout=SIGN_IN_WAIT_MS)


@pytest.fixture(scope="package")
def stored_state(
    browser: Browser,
    base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    admin: Account,
    staff: Account,
    doctor_user: Account,
    doctor: dict[str, Any],
) -> Callable[[Account], Path]:
    """The browser state of a signed-in account: signed in through the page once, then reused."""
    states: dict[str, Path] = {}

    def state(account: Account) -> Path:
        if account.email not in states:
            context = browser.new_context()
            page = context.new_page()
            sign_in(page, base_url, account.email)
            path = tmp_path_factory.mktemp("state") / f"{account.role}.json"
            context.storage_state(path=path)
            context.close()
            states[account.email] = path
        return states[account.email]

    return state


class Portal:
    """A page of the portal for one person, with the checks every page gets."""

    def __init__(self, page: Page, base_url: str, artifacts: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.artifacts = artifacts
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def heading(self, name: str | re.Pattern[str], timeout: float | None = None) -> None:
        expect(self.page.get_by_role("heading", level=1, name=name)).to_be_visible(timeout=timeout)

    def check(self, name: str) -> None:
        """No serious or critical axe-core violation; a full-page screenshot as an artifact."""
        self.page.wait_for_load_state("networkidle")
        self.page.screenshot(path=self.artifacts / f"{name}.png", full_page=True)
        results = Axe().run(self.page)
        bad = [v for v in results.response["violations"] if v.get("impact") in BLOCKING_IMPACTS]
        assert not bad, f"{name}: " + "; ".join(
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in bad
        )
        assert not self.errors, f"{name}: page errors {self.errors}"

    def status(self, text: str | re.Pattern[str], timeout: float | None = None) -> None:
        """The status message after an action (a notification, announced as an alert)."""
        expect(self.page.get_by_role("alert").filter(has_text=text).first).to_be_visible(timeout=timeout)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def portal_for(
    request: pytest.FixtureRequest,
    browser: Browser,
    base_url: str,
    artifacts: Path,
    stored_state: Callable[[Account], Path],
) -> Iterator[Callable[..., Portal]]:
    contexts: list[BrowserContext] = []

    def make(account: Account | None = None, **context_args: Any) -> Portal:
        state = stored_state(account) if account else None
        context = browser.new_context(storage_state=state, accept_downloads=True, **context_args)
        contexts.append(context)
        return Portal(context.new_page(), base_url, artifacts)

    yield make
    failed = request.node.stash.get(FAILED, False)
    for i, context in enumerate(contexts):
        if failed:  # what the page showed when the test failed
            for j, page in enumerate(context.pages):
                page.screenshot(path=artifacts / f"FAILED-{request.node.name}-{i}{j}.png", full_page=True)
        context.close()

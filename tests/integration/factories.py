"""Test data through the public API: unique users, tokens and records, so tests never share rows."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from healthcare.settings import Settings

PASSWORD = "correct-horse-battery"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@clinic.example.com"


def fresh_ip() -> str:
    """A client address of its own on loopback (Linux answers on every address of 127/8): the API
    sees a peer of its own, so throttles in one test never reach another. Never 127.0.0.x."""
    n = uuid.uuid4().int
    return f"127.{n % 254 + 1}.{(n >> 8) % 256}.{(n >> 16) % 254 + 1}"


@contextlib.asynccontextmanager
async def from_address(api: httpx.AsyncClient, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client like `api` whose connections leave from `address` (see fresh_ip)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=api.timeout, transport=transport) as client:
        yield client


async def post_from(api: httpx.AsyncClient, address: str, path: str, **kwargs: Any) -> httpx.Response:
    async with from_address(api, address) as client:
        return await client.post(path, **kwargs)


@dataclass
class Account:
    id: str
    email: str
    role: str
    token: str
    issued: float = field(default_factory=time.monotonic, repr=False, compare=False)  # of `token`

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# The accounts every test shares (the session's admin and staff). A slow run outlasts one access
# token (HC_JWT_TTL_SECONDS, an hour by default), so each logs in again once its token is half-way
# to expiry: an autouse fixture calls renew_shared_tokens before each test.
SHARED_ACCOUNTS: list[Account] = []


def renew_shared_tokens(settings: Settings) -> None:
    for account in SHARED_ACCOUNTS:
        if time.monotonic() - account.issued > settings.jwt_ttl_seconds / 2:
            login_again(f"http://{settings.api_host}:{settings.api_port}", account)


def login_again(base_url: str, account: Account, password: str = PASSWORD) -> None:
    """A new token for `account`, in place (synchronous: fixtures call it between tests)."""
    transport = httpx.HTTPTransport(local_address=fresh_ip())
    with httpx.Client(base_url=base_url, timeout=30, transport=transport) as client:
        resp = client.post("/api/v1/auth/login", json={"email": account.email, "password": password})
    assert resp.status_code == 200, resp.text
    account.token, account.issued = str(resp.json()["access_token"]), time.monotonic()


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    resp = await post_from(api, fresh_ip(), "/api/v1/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


async def register_patient_user(api: httpx.AsyncClient) -> Account:
    email = unique_email("patient")
    # From an address of its own: registration is throttled per address.
    resp = await post_from(
        api, fresh_ip(), "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return Account(body["id"], email, body["role"], await login(api, email))


async def create_user(api: httpx.AsyncClient, admin: Account, role: str) -> Account:
    email = unique_email(role)
    resp = await api.post(
        "/api/v1/users", json={"email": email, "password": PASSWORD, "role": role}, headers=admin.headers
    )
    assert resp.status_code == 201, resp.text
    return Account(resp.json()["id"], email, role, await login(api, email))


async def create_doctor(
    api: httpx.AsyncClient, admin: Account, *, fee: str = "120.00", user: Account | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"Dr {uuid.uuid4().hex[:6]}", "specialty": "General practice", "fee": fee}
    if user is not None:
        body["userId"] = user.id
    resp = await api.post("/api/v1/doctors", json=body, headers=admin.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def create_patient(api: httpx.AsyncClient, who: Account, **fields: Any) -> dict[str, Any]:
    body = {"name": f"Patient {uuid.uuid4().hex[:8]}", **fields}
    resp = await api.post("/api/v1/patients", json=body, headers=who.headers)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def book_visit(
    api: httpx.AsyncClient, who: Account, patient_id: str, doctor_id: str, *, days: int = 40
) -> str:
    """A booked appointment about `days` ahead, at a minute no other test is likely to take; its id."""
    slot = (datetime.now(UTC) + timedelta(days=days, minutes=uuid.uuid4().int % 10_000)).replace(
        second=0, microsecond=0
    )
    resp = await api.post(
        "/api/v1/appointments",
        json={"patientId": patient_id, "doctorId": doctor_id, "time": slot.isoformat()},
        headers=who.headers,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])

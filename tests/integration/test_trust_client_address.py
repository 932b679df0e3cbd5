"""The client address the throttles and the audit trail use: the real peer, unless a configured
proxy forwarded the request; never an unbounded header."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.dynamo_stack import another_api
from tests.integration.factories import Account, fresh_ip, from_address, register_patient_user

pytestmark = pytest.mark.integration

V1 = "/api/v1"
PROXY = "127.0.0.2"  # the reverse proxy of the second API below


async def _login_record(
    api: httpx.AsyncClient, admin: Account, user: Account, request_id: str
) -> dict[str, object]:
    resp = await api.get(
        f"{V1}/audit", params={"actorId": user.id, "action": "login", "limit": 100}, headers=admin.headers
    )
    assert resp.status_code == 200
    matches = [r for r in resp.json()["items"] if r["requestId"] == request_id]
    assert len(matches) == 1, resp.json()
    return dict(matches[0])


async def _failed_login(client: httpx.AsyncClient, user: Account, forwarded: str) -> httpx.Response:
    resp = await client.post(
        f"{V1}/auth/login",
        json={"email": user.email, "password": "wrong-password!"},
        headers={"X-Forwarded-For": forwarded},
    )
    assert resp.status_code == 401, resp.text
    return resp


async def test_a_local_client_cannot_choose_its_address(api: httpx.AsyncClient, admin: Account) -> None:
    """From 127.0.0.1, which uvicorn used to trust: the header is ignored, the peer is recorded."""
    user = await register_patient_user(api)
    resp = await _failed_login(api, user, "203.0.113.77")
    record = await _login_record(api, admin, user, resp.headers["x-request-id"])
    assert record["clientIp"] == "127.0.0.1"
    address = fresh_ip()
    async with from_address(api, address) as elsewhere:
        resp = await _failed_login(elsewhere, user, "203.0.113.78")
    assert (await _login_record(api, admin, user, resp.headers["x-request-id"]))["clientIp"] == address


async def test_a_long_forwarded_header_breaks_nothing(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    user = await register_patient_user(api)
    long = "9" * 100 + ", " + "x" * 300
    resp = await _failed_login(api, user, long)
    assert (await _login_record(api, admin, user, resp.headers["x-request-id"]))["clientIp"] == "127.0.0.1"
    listed = await api.get(f"{V1}/patients", headers={**staff.headers, "X-Forwarded-For": long})
    assert listed.status_code == 200  # an audited read


@pytest.fixture(scope="module")
def behind_proxy() -> Iterator[str]:
    with another_api({"HC_TRUSTED_PROXIES": f"{PROXY}/32"}, log_name="test-proxy-api") as other:
        yield other.url


async def test_a_configured_proxy_is_believed_and_nobody_else(
    behind_proxy: str, api: httpx.AsyncClient, admin: Account
) -> None:
    user = await register_patient_user(api)
    proxied = httpx.AsyncClient(
        base_url=behind_proxy, transport=httpx.AsyncHTTPTransport(local_address=PROXY)
    )
    async with proxied:
        resp = await _failed_login(proxied, user, "198.51.100.4, 203.0.113.9")
    record = await _login_record(api, admin, user, resp.headers["x-request-id"])
    assert record["clientIp"] == "203.0.113.9"  # the right-most entry: the one the proxy added
    address = fresh_ip()
    direct = httpx.AsyncClient(
        base_url=behind_proxy, transport=httpx.AsyncHTTPTransport(local_address=address)
    )
    async with direct:
        resp = await _failed_login(direct, user, "203.0.113.10")
    assert (await _login_record(api, admin, user, resp.headers["x-request-id"]))["clientIp"] == address

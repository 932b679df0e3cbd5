"""Who the client is: X-Forwarded-For counts only from a trusted proxy, and only as an IP address."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from api.proxies import ClientAddressMiddleware, TrustedProxies, via_trusted_proxy


def _app(trusted: list[str]) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=trusted)

    @app.get("/who")
    async def who(request: Request) -> dict[str, Any]:
        return {
            "client": request.client.host if request.client else None,
            "proxy": via_trusted_proxy(request.scope),
        }

    return app


async def _who(app: FastAPI, peer: str, forwarded: str | None) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return dict((await client.get("/who", headers=headers)).json())


async def test_nobody_is_trusted_by_default_not_even_loopback() -> None:
    answer = await _who(_app([]), "127.0.0.1", "203.0.113.7")
    assert answer == {"client": "127.0.0.1", "proxy": False}


async def test_a_trusted_proxy_names_the_client() -> None:
    app = _app(["10.0.0.0/8"])
    assert await _who(app, "10.1.2.3", "203.0.113.7") == {"client": "203.0.113.7", "proxy": True}
    # The client's own entries (left) prove nothing: the right-most one the proxy appended counts.
    assert (await _who(app, "10.1.2.3", "198.51.100.1, 203.0.113.7"))["client"] == "203.0.113.7"
    # A chain of trusted proxies is skipped from the right.
    assert (await _who(app, "10.1.2.3", "203.0.113.7, 10.9.9.9"))["client"] == "203.0.113.7"
    # Anyone else's header is ignored.
    assert await _who(app, "192.0.2.5", "203.0.113.7") == {"client": "192.0.2.5", "proxy": False}


@pytest.mark.parametrize(
    "forwarded",
    ["x" * 300, "203.0.113.7; DROP TABLE audit_log", "", "::ffff:not-an-ip", "unknown"],
    ids=["long", "junk", "empty", "bad-v6", "word"],
)
async def test_what_is_not_an_address_is_never_believed(forwarded: str) -> None:
    answer = await _who(_app(["10.0.0.0/8"]), "10.1.2.3", forwarded)
    assert answer["client"] == "10.1.2.3"  # the proxy's own address stands


def test_addresses_are_normalised_and_bounded() -> None:
    proxies = TrustedProxies(["10.0.0.1"])
    assert proxies.client("10.0.0.1", ["[2001:db8::1]:443"]) == ("2001:db8::1", True)
    assert proxies.client("10.0.0.1", ["203.0.113.7:5555"]) == ("203.0.113.7", True)
    assert proxies.client("10.0.0.1", ["fe80::1%" + "e" * 200]) == ("fe80::1", True)
    assert proxies.client("::ffff:10.0.0.1", ["203.0.113.7"]) == ("203.0.113.7", True)
    address, _ = proxies.client("10.0.0.1", ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"])
    assert address is not None and len(address) <= 64

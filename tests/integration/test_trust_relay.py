"""The websocket relay on the real stack: the account is checked on connect and while streaming, a
browser's Origin must be allowed, sockets per account are capped, and the token is never echoed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devstack.paths import VENV_BIN
from healthcare.settings import Settings, get_settings
from tests.integration.dynamo_stack import HOST, _log_path, _spawn, _wait_http, stop_processes
from tests.integration.factories import Account, create_user
from tests.waiting import eventually

pytestmark = pytest.mark.integration

V1 = "/api/v1"


@pytest.fixture(scope="module")
def watchful_relay() -> Iterator[str]:
    """A second relay that checks open sockets' accounts every second (the stack's: every 30 s)."""
    port = get_settings().stack_port("it_relay_3")
    log_path = _log_path("test-relay")
    proc = _spawn(
        [str(VENV_BIN / "python"), "-m", "workers.ws_relay"],
        log_path=log_path,
        env={"HC_WS_PORT": str(port), "HC_WS_ACCOUNT_CHECK_SECONDS": "1"},
    )
    try:
        _wait_http(
            proc,
            f"http://{HOST}:{port}/healthz",
            ready=lambda r: r.status_code == 200,
            timeout=60,
            log_path=log_path,
        )
        yield f"ws://{HOST}:{port}/ws/analytics"
    finally:
        stop_processes(proc)


def _relay(settings: Settings) -> str:
    return f"ws://{settings.ws_host}:{settings.ws_port}/ws/analytics"


async def _close_code(ws: websockets.ClientConnection, within: float = 10) -> int | None:
    """The close code the server sends within `within` seconds (results received meanwhile are skipped)."""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code


async def _admitted(relay_ws_url: str, clients: int) -> None:
    """Wait until the relay counts `clients` admitted sockets (its /healthz)."""
    health = relay_ws_url.replace("ws://", "http://").replace("/ws/analytics", "/healthz")

    async with httpx.AsyncClient(timeout=5) as client:

        async def counted() -> bool:
            return bool((await client.get(health)).json()["clients"] >= clients)

        await eventually(counted, timeout=15, interval=0.05, what=f"{clients} admitted sockets")


async def _clients(relay_ws_url: str) -> int:
    health = relay_ws_url.replace("ws://", "http://").replace("/ws/analytics", "/healthz")
    async with httpx.AsyncClient(timeout=5) as client:
        return int((await client.get(health)).json()["clients"])


async def _deactivate(api: httpx.AsyncClient, admin: Account, user: Account) -> None:
    resp = await api.patch(f"{V1}/users/{user.id}", json={"isActive": False}, headers=admin.headers)
    assert resp.status_code == 200


async def test_a_deactivated_account_cannot_connect(
    api: httpx.AsyncClient, admin: Account, settings: Settings
) -> None:
    user = await create_user(api, admin, "staff")
    async with websockets.connect(f"{_relay(settings)}?token={user.token}") as ws:
        assert ws.close_code is None
    await _deactivate(api, admin, user)
    async with websockets.connect(f"{_relay(settings)}?token={user.token}") as ws:
        assert await _close_code(ws) == 1008


async def test_an_open_socket_closes_when_its_account_is_deactivated(
    watchful_relay: str, api: httpx.AsyncClient, admin: Account
) -> None:
    user = await create_user(api, admin, "staff")
    before = await _clients(watchful_relay)
    async with websockets.connect(f"{watchful_relay}?token={user.token}") as ws:
        await _admitted(watchful_relay, before + 1)  # connected and streaming
        await _deactivate(api, admin, user)
        assert await _close_code(ws, within=15) == 1008
        assert ws.close_reason == "account is no longer active"


async def test_only_allowed_origins_may_connect(staff: Account, settings: Settings) -> None:
    url = f"{_relay(settings)}?token={staff.token}"
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    portal = f"http://{settings.api_host}:{settings.api_port}"
    async with websockets.connect(url, origin=portal) as ws:  # type: ignore[arg-type]
        assert ws.close_code is None


async def test_the_token_is_never_echoed(staff: Account, settings: Settings) -> None:
    async with websockets.connect(_relay(settings), subprotocols=["bearer", staff.token]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bearer"
    async with websockets.connect(_relay(settings), subprotocols=[f"bearer.{staff.token}"]) as ws:  # type: ignore[list-item]
        assert ws.response is not None
        assert staff.token not in ws.response.headers.get("Sec-WebSocket-Protocol", "")
        assert await _close_code(ws) == 1008


async def test_sockets_per_account_are_capped(
    api: httpx.AsyncClient, admin: Account, settings: Settings
) -> None:
    user = await create_user(api, admin, "staff")
    url = f"{_relay(settings)}?token={user.token}"
    relay = _relay(settings)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(settings.ws_max_connections_per_user):
            before = await _clients(relay)
            await stack.enter_async_context(websockets.connect(url))
            await _admitted(relay, before + 1)
        async with websockets.connect(url) as extra:
            assert await _close_code(extra) == 1008
            assert extra.close_reason == "too many connections for this account"
        other = await create_user(api, admin, "staff")
        async with websockets.connect(f"{_relay(settings)}?token={other.token}") as ws:
            assert ws.close_code is None

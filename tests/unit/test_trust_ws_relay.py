"""The relay's gate, without Kafka or a database: the account on connect and later, the caps, the
subprotocol answer and the Origin allow-list. (tests/integration/test_trust_relay.py: the same on
the real stack, with a real deactivation.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from structlog.testing import capture_logs

from healthcare.security import TokenClaims, issue_token
from healthcare.settings import Settings
from workers import ws_relay
from workers.ws_relay import Hub, Refused

SETTINGS = Settings(  # the API (and so the portal) on :8000, whatever profile the suite runs on
    env="test",
    api_port=8000,
    ws_port=8001,
    ws_max_connections_per_user=2,
    ws_max_connections=3,
    ws_account_check_seconds=0.1,
)


def token(user_id: uuid.UUID | None = None) -> str:
    return issue_token(user_id=user_id or uuid.uuid4(), role="staff", settings=SETTINGS)


class Accounts:
    """Which accounts may stream; the test revokes one while its socket is open."""

    def __init__(self) -> None:
        self.revoked: set[uuid.UUID] = set()
        self.checks = 0

    async def __call__(self, claims: TokenClaims) -> bool:
        self.checks += 1
        return claims.user_id not in self.revoked


async def quiet_feed(hub: Hub) -> None:
    hub.publish('{"metricType": "AppointmentAnalytics", "totalEventsCreated": 1}')
    hub.following = True
    await asyncio.Event().wait()


@pytest.fixture
def accounts() -> Accounts:
    return Accounts()


@pytest.fixture
def client(accounts: Accounts) -> Iterator[TestClient]:
    app = ws_relay.create_app(SETTINGS, feed=quiet_feed, accounts=accounts)
    with TestClient(app) as test_client:
        yield test_client


def _closed_code(client: TestClient, url: str, **kwargs: object) -> int:
    with (
        client.websocket_connect(url, **kwargs) as ws,  # type: ignore[arg-type]
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        while True:
            ws.receive_text()
    return closed.value.code


def test_an_inactive_account_is_refused_on_connect(client: TestClient, accounts: Accounts) -> None:
    user = uuid.uuid4()
    accounts.revoked.add(user)
    assert _closed_code(client, f"/ws/analytics?token={token(user)}") == 1008


def test_an_open_socket_closes_once_its_account_is_revoked(client: TestClient, accounts: Accounts) -> None:
    user = uuid.uuid4()
    with client.websocket_connect(f"/ws/analytics?token={token(user)}") as ws:
        ws.receive_text()  # the latest result: streaming
        accounts.revoked.add(user)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()  # the next check (0.1 s) closes it
    assert closed.value.code == 1008 and "no longer active" in closed.value.reason


def test_connections_are_capped_per_account_and_in_all(client: TestClient) -> None:
    user = uuid.uuid4()
    url = f"/ws/analytics?token={token(user)}"
    with client.websocket_connect(url) as first, client.websocket_connect(url) as second:
        first.receive_text()
        second.receive_text()
        assert _closed_code(client, url) == 1008  # a third for the same account
        with client.websocket_connect(f"/ws/analytics?token={token()}") as other:
            other.receive_text()  # another account still gets in: 3 in all
            assert _closed_code(client, f"/ws/analytics?token={token()}") == 1013  # full
    with client.websocket_connect(url) as again:  # closing gave the places back
        again.receive_text()


def test_hub_counts_give_places_back() -> None:
    hub = Hub(max_per_user=1, max_total=5)
    user = uuid.uuid4()
    first = hub.connect(user)
    with pytest.raises(Refused):
        hub.connect(user)
    hub.disconnect(first)
    hub.disconnect(first)  # twice is harmless
    hub.disconnect(hub.connect(user))
    assert not hub.per_user and not hub.clients


def test_only_bearer_is_echoed_never_the_token(client: TestClient) -> None:
    secret = token()
    with client.websocket_connect("/ws/analytics", subprotocols=["bearer", secret]) as ws:
        assert ws.accepted_subprotocol == "bearer"
        ws.receive_text()
    with client.websocket_connect("/ws/analytics", subprotocols=["analytics", "bearer", secret]) as ws:
        assert ws.accepted_subprotocol == "bearer"
    # The old single-protocol form would have to be echoed whole, token and all: it is not a token.
    with (
        client.websocket_connect("/ws/analytics", subprotocols=[f"bearer.{secret}"]) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        assert ws.accepted_subprotocol != f"bearer.{secret}"
        ws.receive_text()
    assert closed.value.code == 1008


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://127.0.0.1:8000", True),  # the portal, served by the API
        ("http://localhost:8000", True),
        ("https://evil.example", False),
        ("http://127.0.0.1:8001", False),
        ("null", False),
    ],
)
def test_browsers_connect_only_from_allowed_origins(
    client: TestClient, origin: str | None, allowed: bool
) -> None:
    headers = {"origin": origin} if origin else {}
    url = f"/ws/analytics?token={token()}"
    if allowed:
        with client.websocket_connect(url, headers=headers) as ws:
            ws.receive_text()
    else:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url, headers=headers):
            pass
        assert refused.value.code == 1008


def test_the_allow_list_is_a_setting() -> None:
    settings = Settings(ws_allowed_origins="https://portal.clinic.example, https://ops.clinic.example/")
    assert settings.allowed_origins == {"https://portal.clinic.example", "https://ops.clinic.example"}


def _closed(client: TestClient, url: str, **kwargs: object) -> tuple[int, str]:
    with (
        client.websocket_connect(url, **kwargs) as ws,  # type: ignore[arg-type]
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        while True:
            ws.receive_text()
    return closed.value.code, closed.value.reason


async def failing_check(_: TokenClaims) -> bool:
    raise ConnectionError("database down")


def test_each_refusal_says_why_to_the_client_and_the_log_names_the_account_not_the_token() -> None:
    """The close reason is what a browser shows; the log line is what an operator reads."""
    user = uuid.uuid4()
    with capture_logs() as logs:
        app = ws_relay.create_app(SETTINGS, feed=quiet_feed, accounts=failing_check)
        with TestClient(app) as down:  # the account cannot be checked: try again later, not 1008
            assert _closed(down, f"/ws/analytics?token={token(user)}") == (
                1013,
                "cannot check the account now; try again later",
            )
        accounts = Accounts()
        accounts.revoked.add(user)
        with TestClient(ws_relay.create_app(SETTINGS, feed=quiet_feed, accounts=accounts)) as client:
            assert _closed(client, f"/ws/analytics?token={token(user)}") == (
                1008,
                "invalid or missing access token",
            )
            assert _closed(client, "/ws/analytics?token=not-a-token") == (
                1008,
                "invalid or missing access token",
            )
            other = uuid.uuid4()
            url = f"/ws/analytics?token={token(other)}"
            with client.websocket_connect(url) as first, client.websocket_connect(url) as second:
                first.receive_text()
                second.receive_text()
                code, reason = _closed(client, url)  # a third for the same account
                assert code == 1008 and reason and "connections" in reason
            with (
                pytest.raises(WebSocketDisconnect),
                client.websocket_connect(url, headers={"origin": "https://evil.example"}),
            ):
                pass
    seen = [{k: v for k, v in e.items() if k not in ("log_level", "timestamp")} for e in logs]
    assert {"event": "account check failed", "error": "ConnectionError"} in seen
    assert {"event": "websocket refused", "reason": reason, "user_id": str(other)} in seen
    assert {"event": "websocket refused", "reason": "origin not allowed"} in seen
    connected = [e for e in seen if e["event"] == "client connected"]
    assert connected == [
        {"event": "client connected", "user_id": str(other), "clients": 1},
        {"event": "client connected", "user_id": str(other), "clients": 2},
    ]
    left = [e for e in seen if e["event"] == "client disconnected"]
    assert left == [{"event": "client disconnected", "user_id": str(other), "dropped": 0}] * 2
    assert not any("not-a-token" in str(e) for e in seen)

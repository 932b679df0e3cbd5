"""The websocket relay without Kafka: auth, latest-on-connect, fan-out and the bounded client queue."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from structlog.testing import capture_logs

from healthcare.security import issue_token
from healthcare.settings import Settings
from tests.waiting import eventually
from workers import ws_relay
from workers.ws_relay import Hub

SETTINGS = Settings(env="test")


def result(total: int) -> str:
    return json.dumps({"metricType": "AppointmentAnalytics", "totalEventsCreated": total})


def token(**kwargs: object) -> str:
    return issue_token(user_id=uuid.uuid4(), role="staff", settings=SETTINGS, **kwargs)  # type: ignore[arg-type]


class FakeFeed:
    """Stands in for Kafka: the test pushes results through the hub the app created."""

    def __init__(self, initial: list[str]) -> None:
        self.initial = initial
        self.hub: Hub | None = None

    async def __call__(self, hub: Hub) -> None:
        self.hub = hub
        for message in self.initial:
            hub.publish(message)
        hub.following = True
        await asyncio.Event().wait()


@pytest.fixture
def feed() -> FakeFeed:
    return FakeFeed([result(1), result(2)])


async def every_account_active(_: object) -> bool:
    return True


@pytest.fixture
def client(feed: FakeFeed) -> Iterator[TestClient]:
    with TestClient(ws_relay.create_app(SETTINGS, feed=feed, accounts=every_account_active)) as test_client:
        yield test_client


def test_new_connection_gets_latest_result_at_once(client: TestClient) -> None:
    with client.websocket_connect(f"/ws/analytics?token={token()}") as ws:
        assert json.loads(ws.receive_text())["totalEventsCreated"] == 2


def test_every_client_receives_every_result(client: TestClient, feed: FakeFeed) -> None:
    with (
        client.websocket_connect(f"/ws/analytics?token={token()}") as a,
        client.websocket_connect(f"/ws/analytics?token={token()}") as b,
    ):
        assert a.receive_text() == b.receive_text() == result(2)
        assert feed.hub is not None
        for total in (3, 4, 5):
            client.portal.call(feed.hub.publish, result(total))  # type: ignore[union-attr]
        for ws in (a, b):
            assert [json.loads(ws.receive_text())["totalEventsCreated"] for _ in range(3)] == [3, 4, 5]


def test_token_as_subprotocol(client: TestClient) -> None:
    with client.websocket_connect("/ws/analytics", subprotocols=["bearer", token()]) as ws:
        assert ws.accepted_subprotocol == "bearer"  # never the token
        assert ws.receive_text() == result(2)


def test_token_as_the_subprotocol_pair_bearer_then_token(client: TestClient) -> None:
    """The form some websocket clients send: `Sec-WebSocket-Protocol: bearer, <token>`."""
    with client.websocket_connect("/ws/analytics", subprotocols=["bearer", token()]) as ws:
        assert ws.accepted_subprotocol == "bearer"  # never the token itself
        assert ws.receive_text() == result(2)
    with client.websocket_connect("/ws/analytics", subprotocols=["analytics", "bearer", token()]) as ws:
        assert ws.accepted_subprotocol == "bearer"  # the only subprotocol the relay answers with
        assert ws.receive_text() == result(2)


@pytest.mark.parametrize(
    "subprotocols",
    [["bearer"], ["bearer.", "analytics"], ["analytics"], [f"bearer.{token()}x"]],
    ids=["bearer-without-token", "empty-token", "no-token", "bad-token"],
)
def test_a_subprotocol_without_a_valid_token_is_closed_with_policy_violation(
    client: TestClient, subprotocols: list[str]
) -> None:
    with (
        client.websocket_connect("/ws/analytics", subprotocols=subprotocols) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (1008, "invalid or missing access token")


def test_the_query_token_is_used_before_a_subprotocol_one(client: TestClient) -> None:
    with client.websocket_connect(f"/ws/analytics?token={token()}", subprotocols=["bearer", "garbage"]) as ws:
        assert ws.receive_text() == result(2)


def test_a_query_token_connection_is_answered_with_no_subprotocol(client: TestClient) -> None:
    """A handshake answered with a subprotocol the client never offered (even an empty one) is one a
    browser fails: only an offered `bearer` is ever echoed."""
    with client.websocket_connect(f"/ws/analytics?token={token()}") as ws:
        assert ws.accepted_subprotocol is None
        assert ws.receive_text() == result(2)


class FakeSocket:
    """The websocket as `analytics_socket` sees it, in one event loop with the test (for looptime)."""

    def __init__(self, hub: Hub, *, query: dict[str, str]) -> None:
        state = {"settings": SETTINGS, "hub": hub, "accounts": staticmethod(every_account_active)}
        self.app = type("App", (), {"state": type("State", (), state)()})()
        self.headers: dict[str, str] = {}
        self.query_params = query
        self.accepted: str | None = None
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.closed_at: float | None = None
        self.on_close = asyncio.Event()
        self._inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def accept(self, subprotocol: str | None = None) -> None:
        self.accepted = subprotocol or ""

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def receive(self) -> dict[str, object]:
        return await self._inbox.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.closed_at = asyncio.get_running_loop().time()
        self.on_close.set()

    def disconnect(self) -> None:
        self._inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})


def _expiring_token(seconds: int) -> tuple[str, float]:
    """A token whose `exp` is `seconds` from now, and how long that is from now exactly."""
    now = datetime.now(UTC)
    ttl = SETTINGS.jwt_ttl_seconds
    issued = issue_token(
        user_id=uuid.uuid4(), role="staff", settings=SETTINGS, now=now - timedelta(seconds=ttl - seconds)
    )
    exp = int((now - timedelta(seconds=ttl - seconds)).timestamp()) + ttl
    return issued, exp - datetime.now(UTC).timestamp()


@pytest.mark.looptime  # on a loop of its own: see test_billing_consumer.py's pytestmark
@pytest.mark.asyncio(loop_scope="function")
async def test_an_open_socket_is_closed_with_policy_violation_when_its_token_expires() -> None:
    """Fake loop time (looptime): ten minutes pass at once, and the close comes when `exp` does."""
    hub = Hub()
    hub.publish(result(1))
    issued, left = _expiring_token(600)
    ws = FakeSocket(hub, query={"token": issued})
    loop = asyncio.get_running_loop()
    started = loop.time()
    serving = asyncio.create_task(ws_relay.analytics_socket(ws))  # type: ignore[arg-type]
    await asyncio.wait_for(ws.on_close.wait(), timeout=3600)
    await asyncio.wait_for(serving, timeout=1)

    assert ws.sent == [result(1)]
    assert ws.closed == (1008, "access token expired")
    assert ws.closed_at is not None and abs((ws.closed_at - started) - left) < 5
    assert hub.clients == set()


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
async def test_a_client_that_leaves_before_expiry_is_not_closed_by_the_relay() -> None:
    hub = Hub()
    issued, _ = _expiring_token(600)
    ws = FakeSocket(hub, query={"token": issued})
    serving = asyncio.create_task(ws_relay.analytics_socket(ws))  # type: ignore[arg-type]
    await eventually(lambda: len(hub.clients) == 1, timeout=10, what="the client registered")
    hub.publish(result(7))
    await eventually(lambda: ws.sent == [result(7)], timeout=10, what="the result sent")
    ws.disconnect()
    await asyncio.wait_for(serving, timeout=10)

    assert ws.closed is None
    assert hub.clients == set()


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?token=not-a-jwt",
        "?token="
        + issue_token(user_id=uuid.uuid4(), role="staff", settings=Settings(env="test", jwt_secret="x" * 40)),
        "?token=" + token(now=datetime.now(UTC) - timedelta(hours=2)),  # expired
    ],
    ids=["missing", "garbage", "wrong-key", "expired"],
)
def test_bad_token_is_closed_with_policy_violation(client: TestClient, query: str) -> None:
    with (
        client.websocket_connect(f"/ws/analytics{query}") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 1008


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body == {"status": "ok", "following": True, "clients": 0, "hasLatest": True}


async def test_slow_client_drops_oldest_and_never_blocks_others() -> None:
    hub = Hub(queue_size=3)
    slow, fast = hub.connect(), hub.connect()
    received: list[str] = []

    async def drain() -> None:
        while True:
            received.append(await fast.queue.get())

    task = asyncio.create_task(drain())
    for total in range(10):
        hub.publish(result(total))
        await asyncio.sleep(0)
    task.cancel()
    assert received == [result(t) for t in range(10)]
    assert [slow.queue.get_nowait() for _ in range(3)] == [result(7), result(8), result(9)]
    assert slow.dropped == 7
    hub.disconnect(slow)
    hub.publish(result(10))
    assert slow.queue.empty()


def test_latest_is_offered_before_anything_newer() -> None:
    hub = Hub()
    hub.publish(result(1))
    client = hub.connect()
    hub.publish(result(2))
    assert [client.queue.get_nowait(), client.queue.get_nowait()] == [result(1), result(2)]


def test_token_in_query_never_reaches_logs() -> None:
    import logging

    record = logging.LogRecord(
        "uvicorn.error",
        20,
        "",
        0,
        '%s - "WebSocket %s" [accepted]',
        ("1.2.3.4", "/ws/analytics?token=abc.def.ghi&x=1"),
        None,
    )
    ws_relay._RedactTokens().filter(record)
    assert "abc.def" not in record.getMessage()
    assert "token=[redacted]&x=1" in record.getMessage()


# -- _serve on fake loop time: the reasons it ends, and a client that is gone mid-send --------
async def always_active() -> bool:
    return True


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
async def test_a_token_with_less_than_a_second_left_is_closed_when_it_expires() -> None:
    hub = Hub()
    loop = asyncio.get_running_loop()
    started = loop.time()
    reason = await ws_relay._serve(
        FakeSocket(hub, query={}),  # type: ignore[arg-type]
        hub.connect(),
        expires_at=datetime.now(UTC) + timedelta(seconds=0.25),
        still_active=always_active,
        check_every=3600,
    )
    assert reason == "access token expired"
    assert loop.time() - started < 0.5  # fake time: when `exp` came, not a second later


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
async def test_a_failed_account_recheck_keeps_the_socket_and_logs_the_error_type() -> None:
    """A database blip during a re-check is logged and the socket stays; the next check decides."""
    answers: list[bool | Exception] = [ConnectionError("database down"), False]

    async def still_active() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    hub = Hub()
    with capture_logs() as logs:
        reason = await ws_relay._serve(
            FakeSocket(hub, query={}),  # type: ignore[arg-type]
            hub.connect(),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            still_active=still_active,
            check_every=60,
        )
    assert reason == "account is no longer active"  # the close reason the browser shows
    assert answers == []
    assert logs == [{"event": "account re-check failed", "error": "ConnectionError", "log_level": "warning"}]


class GoneSocket(FakeSocket):
    """A client that went away while a result was being sent to it."""

    def __init__(self, hub: Hub, error: Exception) -> None:
        super().__init__(hub, query={})
        self.error = error

    async def send_text(self, text: str) -> None:
        raise self.error


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(
    "error",
    [WebSocketDisconnect(1006), OSError("connection reset"), RuntimeError("websocket is closed")],
    ids=["disconnect", "reset", "closed"],
)
async def test_a_client_gone_while_a_result_is_sent_ends_its_socket_quietly(error: Exception) -> None:
    hub = Hub()
    hub.publish(result(1))
    reason = await ws_relay._serve(
        GoneSocket(hub, error),  # type: ignore[arg-type]
        hub.connect(),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        still_active=always_active,
        check_every=60,
    )
    assert reason is None  # the client left: nothing to close, and no error


class ClosedSocket(FakeSocket):
    """A client whose socket is already closed when the relay closes it (it left as `exp` came)."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await super().close(code, reason)
        raise RuntimeError('Cannot call "send" once a close message has been sent.')


@pytest.mark.looptime
@pytest.mark.asyncio(loop_scope="function")
async def test_closing_a_socket_the_client_already_closed_is_no_error() -> None:
    hub = Hub()
    issued, _ = _expiring_token(60)
    ws = ClosedSocket(hub, query={"token": issued})
    await asyncio.wait_for(ws_relay.analytics_socket(ws), timeout=3600)  # type: ignore[arg-type]
    assert ws.closed == (1008, "access token expired")
    assert hub.clients == set()

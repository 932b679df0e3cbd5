"""The websocket relay: every `analytics-results` value, pushed to every connected browser.

* One Kafka consumer per process with no consumer group (every partition assigned by hand), so each
  replica sees every result. At start it reads the last record of each partition, so a browser that
  connects gets the latest result at once; then it follows the end of the log.
* `ws://HOST:PORT/ws/analytics`, token in the `token` query parameter or as the subprotocol pair
  `bearer`, `<token>` (browsers cannot set headers on a websocket). The answer names only `bearer`,
  never the token. A missing, invalid or expired token, or one whose account is deactivated or
  deleted, is closed with 1008 (policy violation); so is an open connection when its token expires
  or when its account, checked again every HC_WS_ACCOUNT_CHECK_SECONDS, may no longer act.
* A browser's `Origin` must be one of HC_WS_ALLOWED_ORIGINS (by default the API's own, which serves
  the portal), so another site's page cannot open the feed with a visitor's token; clients that are
  not browsers send no Origin. At most HC_WS_MAX_CONNECTIONS_PER_USER sockets per account (1008
  beyond) and HC_WS_MAX_CONNECTIONS in all (1013, try again later).
* Each client has a bounded queue: when a slow client falls behind, its oldest results are dropped
  (each result carries cumulative totals, so the newest one is all a dashboard needs). Sending to
  one client never waits on another. Clients are pinged every 20 s (uvicorn's websocket keepalive).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from healthcare import clients
from healthcare.db import create_engine, session_factory
from healthcare.logging import configure_logging, get_logger
from healthcare.security import InvalidToken, TokenClaims, decode_token
from healthcare.settings import Settings, get_settings
from services import users

log = get_logger(__name__)

CLIENT_QUEUE_SIZE = 64
PING_INTERVAL_SECONDS = 20.0
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[str]
    dropped: int = 0
    user_id: uuid.UUID | None = None

    def offer(self, message: str) -> None:
        """Enqueue without waiting; a full queue loses its oldest message."""
        while True:
            try:
                self.queue.put_nowait(message)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                    self.dropped += 1


@dataclass
class Hub:
    """The latest result and the connected clients of this process."""

    queue_size: int = CLIENT_QUEUE_SIZE
    max_per_user: int = 1_000_000
    max_total: int = 1_000_000
    latest: str | None = None
    clients: set[Client] = field(default_factory=set)
    per_user: Counter[uuid.UUID] = field(default_factory=Counter)
    published: int = 0
    following: bool = False  # the Kafka feed is assigned and positioned: no result will be missed

    def connect(self, user_id: uuid.UUID | None = None) -> Client:
        """A new client, or Refused when the relay or this account has as many sockets as allowed."""
        if len(self.clients) >= self.max_total:
            raise Refused(TRY_AGAIN_LATER, "too many connections; try again later")
        if user_id is not None and self.per_user[user_id] >= self.max_per_user:
            raise Refused(POLICY_VIOLATION, "too many connections for this account")
        client = Client(asyncio.Queue(maxsize=self.queue_size), user_id=user_id)
        if self.latest is not None:  # no await between this and registration: no result slips by
            client.offer(self.latest)
        self.clients.add(client)
        if user_id is not None:
            self.per_user[user_id] += 1
        return client

    def disconnect(self, client: Client) -> None:
        if client in self.clients and client.user_id is not None:
            self.per_user[client.user_id] -= 1
            if self.per_user[client.user_id] <= 0:
                del self.per_user[client.user_id]
        self.clients.discard(client)

    def publish(self, message: str) -> None:
        self.latest = message
        self.published += 1
        for client in self.clients:
            client.offer(message)


# -- Kafka -> hub ------------------------------------------------------------------------------
Feed = Callable[[Hub], Coroutine[Any, Any, None]]


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """Every partition of the topic, waiting until it exists."""
    while True:
        admin = clients.kafka_admin(settings)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"] == 0 and described["partitions"]:
            return [TopicPartition(topic, p["partition"]) for p in sorted(described["partitions"], key=_pid)]
        log.warning("topic not found yet; retrying", topic=topic)
        await asyncio.sleep(2)


def _pid(partition: dict[str, Any]) -> int:
    return int(partition["partition"])


async def _load_latest(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> str | None:
    """The newest (by record timestamp) of the last records of every partition; leaves every
    partition positioned at its end, so following the log starts right after."""
    begins = await consumer.beginning_offsets(parts)
    ends = await consumer.end_offsets(parts)
    tails = {tp: ends[tp] - 1 for tp in parts if ends[tp] > begins[tp]}
    for tp in parts:
        consumer.seek(tp, tails.get(tp, ends[tp]))
    best: tuple[int, str] | None = None
    pending = set(tails)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while pending and loop.time() < deadline:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batch.items():
            for record in records:
                if record.value is not None and (best is None or record.timestamp >= best[0]):
                    best = (record.timestamp, record.value.decode("utf-8", "replace"))
            pending.discard(tp)
    for tp in pending:  # an unreadable tail (e.g. a transaction marker): follow from the end
        consumer.seek(tp, ends[tp])
    return best[1] if best else None


def kafka_feed(settings: Settings) -> Feed:
    async def feed(hub: Hub) -> None:
        topic = settings.topic_analytics_results
        backoff = 1.0
        while True:
            consumer = clients.kafka_consumer(settings, group_id=None, enable_auto_commit=False)
            try:
                await consumer.start()
                parts = await _partitions(settings, topic)
                consumer.assign(parts)
                latest = await _load_latest(consumer, parts)
                if latest is not None:
                    hub.publish(latest)
                hub.following = True
                log.info("following results", topic=topic, partitions=len(parts), latest=latest is not None)
                backoff = 1.0
                async for record in consumer:
                    if record.value is not None:
                        hub.publish(record.value.decode("utf-8", "replace"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay outlives a broker outage
                log.warning("kafka feed failed; reconnecting", error=repr(exc)[:300], retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                hub.following = False
                with contextlib.suppress(Exception):
                    await consumer.stop()

    return feed


# -- websocket ---------------------------------------------------------------------------------
AccountCheck = Callable[[TokenClaims], Awaitable[bool]]


def database_accounts(sessions: async_sessionmaker[AsyncSession]) -> AccountCheck:
    """The API's own rule (services.users.active_actor): the account exists and may still act."""

    async def check(claims: TokenClaims) -> bool:
        async with sessions() as session:
            return await users.active_actor(session, claims) is not None

    return check


def _credentials(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to answer with): `bearer` when offered with the token after it, else none.
    Browsers cannot set headers on a websocket, hence the query parameter and the subprotocol."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    token = websocket.query_params.get("token")
    chosen: str | None = None
    if "bearer" in offered:
        i = offered.index("bearer")
        if i + 1 < len(offered):
            token = token or offered[i + 1]
            chosen = "bearer"  # never the token: what the server answers, proxies and logs keep
    return token, chosen


def _origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    origin = websocket.headers.get("origin")
    return origin is None or origin.rstrip("/") in settings.allowed_origins


async def analytics_socket(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    hub: Hub = websocket.app.state.hub
    accounts: AccountCheck = websocket.app.state.accounts
    if not _origin_allowed(websocket, settings):
        log.warning("websocket refused", reason="origin not allowed")
        await websocket.close(code=POLICY_VIOLATION)  # before accept: the browser gets HTTP 403
        return
    token, subprotocol = _credentials(websocket)
    claims: TokenClaims | None = None
    if token:
        with contextlib.suppress(InvalidToken):
            claims = decode_token(token, settings=settings)
    # Accept, then close with 1008: a refusal before accept reaches a browser only as 1006/403.
    await websocket.accept(subprotocol=subprotocol)
    if claims is None:
        await websocket.close(code=POLICY_VIOLATION, reason="invalid or missing access token")
        return
    try:
        active = await accounts(claims)
    except Exception as exc:  # noqa: BLE001 - refused, not crashed: the browser retries
        log.warning("account check failed", error=type(exc).__name__)
        await websocket.close(code=TRY_AGAIN_LATER, reason="cannot check the account now; try again later")
        return
    if not active:
        await websocket.close(code=POLICY_VIOLATION, reason="invalid or missing access token")
        return
    try:
        client = hub.connect(claims.user_id)
    except Refused as refused:
        log.warning("websocket refused", reason=refused.reason, user_id=str(claims.user_id))
        await websocket.close(code=refused.code, reason=refused.reason)
        return
    log.info("client connected", user_id=str(claims.user_id), clients=len(hub.clients))
    try:
        reason = await _serve(
            websocket,
            client,
            expires_at=claims.expires_at,
            still_active=lambda: accounts(claims),
            check_every=settings.ws_account_check_seconds,
        )
    finally:
        hub.disconnect(client)
        log.info("client disconnected", user_id=str(claims.user_id), dropped=client.dropped)
    if reason is not None:
        with contextlib.suppress(Exception):
            await websocket.close(code=POLICY_VIOLATION, reason=reason)


async def _serve(
    websocket: WebSocket,
    client: Client,
    *,
    expires_at: datetime,
    still_active: Callable[[], Awaitable[bool]],
    check_every: float,
) -> str | None:
    """Send queued results until the client leaves (None), or until its token expires or its
    account may no longer act (the reason to close with), whichever comes first."""
    reason: str | None = None

    async def send() -> None:
        while True:
            await websocket.send_text(await client.queue.get())

    async def receive() -> None:
        while True:  # browsers send nothing we need; reading notices the close
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def expire() -> None:
        nonlocal reason
        await anyio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
        reason = "access token expired"

    async def recheck() -> None:
        nonlocal reason
        while True:
            await anyio.sleep(check_every)
            try:
                if not await still_active():
                    reason = "account is no longer active"
                    return
            except Exception as exc:  # noqa: BLE001 - a database blip keeps the socket; expiry still bounds it
                log.warning("account re-check failed", error=type(exc).__name__)

    async with anyio.create_task_group() as tasks:

        async def until_first_done(fn: Callable[[], Awaitable[None]]) -> None:
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await fn()
            tasks.cancel_scope.cancel()

        for fn in (send, receive, expire, recheck):
            tasks.start_soon(until_first_done, fn)
    return reason


async def healthz(request: Request) -> JSONResponse:
    """Alive (200) while the feed task runs; `following` says whether Kafka is being followed."""
    hub: Hub = request.app.state.hub
    feed: asyncio.Task[None] | None = request.app.state.feed_task
    alive = feed is not None and not feed.done()
    body = {
        "status": "ok" if alive else "feed stopped",
        "following": hub.following,
        "clients": len(hub.clients),
        "hasLatest": hub.latest is not None,
    }
    return JSONResponse(body, status_code=200 if alive else 503)


def create_app(
    settings: Settings | None = None, *, feed: Feed | None = None, accounts: AccountCheck | None = None
) -> Starlette:
    """`accounts` decides whether a token's account may still stream (default: the database)."""
    settings = settings or get_settings()
    run_feed = feed or kafka_feed(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.hub = Hub(
            max_per_user=settings.ws_max_connections_per_user, max_total=settings.ws_max_connections
        )
        engine = None
        if accounts is None:
            # A small pool: one short query per connect and per socket every check interval.
            engine = create_engine(settings.model_copy(update={"db_pool_size": 2}))
            app.state.accounts = database_accounts(session_factory(engine))
        else:
            app.state.accounts = accounts
        app.state.feed_task = asyncio.create_task(run_feed(app.state.hub), name="results-feed")
        try:
            yield
        finally:
            app.state.feed_task.cancel()
            await asyncio.gather(app.state.feed_task, return_exceptions=True)
            if engine is not None:
                await engine.dispose()

    app = Starlette(
        routes=[Route("/healthz", healthz), WebSocketRoute("/ws/analytics", analytics_socket)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.feed_task = None
    return app


def parse_result(message: str) -> dict[str, Any]:
    """Helper for clients and tests: one websocket message as the `analytics-results` value."""
    value: dict[str, Any] = json.loads(message)
    return value


class _RedactTokens(logging.Filter):
    """uvicorn logs each websocket request line with its query string: never let a token reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _TOKEN_RE.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _TOKEN_RE.sub(r"\1[redacted]", record.msg)
        return True


_TOKEN_RE = re.compile(r"((?:^|[?&])token=)[^&\s\"']+")


def main() -> None:
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_RedactTokens())
    uvicorn.run(
        create_app(settings),
        host=settings.ws_host,
        port=settings.ws_port,
        log_config=None,
        access_log=False,
        ws="websockets",
        ws_ping_interval=PING_INTERVAL_SECONDS,
        ws_ping_timeout=PING_INTERVAL_SECONDS,
        ws_max_size=64 * 1024,  # clients send nothing of size
    )


if __name__ == "__main__":
    main()

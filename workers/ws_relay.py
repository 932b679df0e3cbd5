"""The websocket relay: every `analytics-results` value, pushed to every connected browser.

* One Kafka consumer per process with no consumer group (every partition assigned by hand), so each
  replica sees every result. At start it reads the last record of each partition, so a browser that
  connects gets the latest result at once; then it follows the end of the log.
* `ws://HOST:PORT/ws/analytics`, token in the `token` query parameter or as the subprotocol
  `bearer.<token>` (or the pair `bearer`, `<token>`). A missing, invalid or expired token is closed
  with 1008 (policy violation); an open connection is closed with 1008 when its token expires.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from healthcare import clients
from healthcare.logging import configure_logging, get_logger
from healthcare.security import InvalidToken, TokenClaims, decode_token
from healthcare.settings import Settings, get_settings

log = get_logger(__name__)

CLIENT_QUEUE_SIZE = 64
PING_INTERVAL_SECONDS = 20.0
POLICY_VIOLATION = 1008
SUBPROTOCOL_PREFIX = "bearer."


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[str]
    dropped: int = 0

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
    latest: str | None = None
    clients: set[Client] = field(default_factory=set)
    published: int = 0
    following: bool = False  # the Kafka feed is assigned and positioned: no result will be missed

    def connect(self) -> Client:
        client = Client(asyncio.Queue(maxsize=self.queue_size))
        if self.latest is not None:  # no await between this and registration: no result slips by
            client.offer(self.latest)
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
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
def _credentials(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to answer with). Browsers cannot set headers on a websocket, hence these."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    token = websocket.query_params.get("token")
    chosen: str | None = None
    for i, proto in enumerate(offered):
        if proto.startswith(SUBPROTOCOL_PREFIX):
            token = token or proto[len(SUBPROTOCOL_PREFIX) :]
            chosen = proto
        elif proto == "bearer" and i + 1 < len(offered):
            token = token or offered[i + 1]
            chosen = "bearer"
    others = [p for p in offered if p != "bearer" and not p.startswith(SUBPROTOCOL_PREFIX) and p != token]
    if others:
        chosen = others[0]  # a plain protocol name is nicer to echo than the token
    return token, chosen


async def analytics_socket(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    hub: Hub = websocket.app.state.hub
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
    client = hub.connect()
    log.info("client connected", user_id=str(claims.user_id), clients=len(hub.clients))
    try:
        await _serve(websocket, client, expires_at=claims.expires_at)
    finally:
        hub.disconnect(client)
        log.info("client disconnected", user_id=str(claims.user_id), dropped=client.dropped)


async def _serve(websocket: WebSocket, client: Client, *, expires_at: datetime) -> None:
    """Send queued results until the client leaves or its token expires, whichever comes first."""
    expired = False

    async def send() -> None:
        while True:
            await websocket.send_text(await client.queue.get())

    async def receive() -> None:
        while True:  # browsers send nothing we need; reading notices the close
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def expire() -> None:
        nonlocal expired
        await anyio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
        expired = True

    async with anyio.create_task_group() as tasks:

        async def until_first_done(fn: Callable[[], Awaitable[None]]) -> None:
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await fn()
            tasks.cancel_scope.cancel()

        for fn in (send, receive, expire):
            tasks.start_soon(until_first_done, fn)
    if expired:
        with contextlib.suppress(Exception):
            await websocket.close(code=POLICY_VIOLATION, reason="access token expired")


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


def create_app(settings: Settings | None = None, *, feed: Feed | None = None) -> Starlette:
    settings = settings or get_settings()
    run_feed = feed or kafka_feed(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.hub = Hub()
        app.state.feed_task = asyncio.create_task(run_feed(app.state.hub), name="results-feed")
        try:
            yield
        finally:
            app.state.feed_task.cancel()
            await asyncio.gather(app.state.feed_task, return_exceptions=True)

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

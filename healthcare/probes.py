"""Readiness probes: one real round trip to each dependency, bounded in time, cached briefly."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client as TemporalClient
from temporalio.service import RPCError, RPCStatusCode

from healthcare.clients import kafka_admin
from healthcare.contracts import search_attributes
from healthcare.settings import Settings


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    detail: str


async def probe_postgres(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def probe_temporal(client: TemporalClient, namespace: str) -> None:
    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))


async def missing_search_attributes(client: TemporalClient, namespace: str) -> list[str] | None:
    """Our search attributes the namespace does not have (a workflow that sets one fails its task
    over and over: a stall); None when the server does not let us look (e.g. no operator permission)."""
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            return None
        raise
    known = set(response.custom_attributes) | set(response.system_attributes)
    return sorted(a.value for a in search_attributes.TYPES if a.value not in known)


async def probe_kafka(settings: Settings, admin: AIOKafkaAdminClient | None = None) -> None:
    """One metadata request; on `admin` (a started client kept by the caller) when given."""
    own = admin is None
    admin = admin or kafka_admin(settings)
    if own:
        await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        if own:
            await admin.close()
    missing = {settings.topic_appointment_events, settings.topic_analytics_results} - topics
    if missing:
        raise RuntimeError(f"missing topics: {sorted(missing)}")


def check_s3(s3: Any, bucket: str) -> None:
    s3.head_bucket(Bucket=bucket)


async def probe_s3(s3: Any, bucket: str) -> None:
    await asyncio.to_thread(check_s3, s3, bucket)


def check_lambda(lambda_client: Any, function_name: str) -> None:
    response = lambda_client.invoke(
        FunctionName=function_name, Payload=json.dumps({"healthcheck": True}).encode()
    )
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or not isinstance(body, dict) or body.get("statusCode") != 200:
        raise RuntimeError("health invocation did not answer 200")


async def probe_lambda(lambda_client: Any, function_name: str) -> None:
    await asyncio.to_thread(check_lambda, lambda_client, function_name)


async def run_probes(
    probes: dict[str, Callable[[], Awaitable[None]]], *, timeout: float
) -> list[ProbeResult]:
    """Run every probe concurrently; each gets `timeout` seconds."""

    async def one(name: str, probe: Callable[[], Awaitable[None]]) -> ProbeResult:
        try:
            await asyncio.wait_for(probe(), timeout)
        except TimeoutError:
            return ProbeResult(name, False, f"no answer within {timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return ProbeResult(name, False, type(exc).__name__)
        return ProbeResult(name, True, "ok")

    return list(await asyncio.gather(*(one(n, p) for n, p in probes.items())))


class Readiness:
    """The API's readiness: every dependency checked at most once per `ttl` seconds, however often
    /readyz is called (concurrent callers share one round of checks), with bounded resources.

    * Blocking checks (boto3) run on two threads of their own, never the shared default pool, on
      clients whose timeouts match the probe's, and a check still running from an earlier round is
      not started again (it reports failing): a hanging dependency holds at most one thread.
    * Kafka is asked for metadata on one admin connection kept open between rounds (replaced after
      a failure), not a new connection per call.
    """

    def __init__(
        self,
        *,
        asynchronous: dict[str, Callable[[], Awaitable[None]]],
        threaded: dict[str, Callable[[], None]],
        timeout: float,
        ttl: float,
    ) -> None:
        self._asynchronous = asynchronous
        self._threaded = threaded
        self._timeout = timeout
        self._ttl = ttl
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(threaded)), thread_name_prefix="readyz")
        self._running: dict[str, concurrent.futures.Future[None]] = {}
        self._round: asyncio.Task[list[ProbeResult]] | None = None
        self._checked_at = -math.inf
        self.rounds = 0  # rounds of checks run so far (each call to a dependency at most once a round)

    def _thread_probe(self, name: str, check: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        async def probe() -> None:
            running = self._running.get(name)
            if running is not None and not running.done():
                raise RuntimeError("the previous check has not answered yet")
            future = self._executor.submit(check)
            self._running[name] = future
            await asyncio.wrap_future(future)

        return probe

    async def _run(self) -> list[ProbeResult]:
        self.rounds += 1
        probes = dict(self._asynchronous)
        probes |= {name: self._thread_probe(name, check) for name, check in self._threaded.items()}
        results = await run_probes(probes, timeout=self._timeout)
        self._checked_at = asyncio.get_running_loop().time()
        order = {name: i for i, name in enumerate([*self._asynchronous, *self._threaded])}
        return sorted(results, key=lambda r: order[r.name])

    async def check(self) -> tuple[list[ProbeResult], float]:
        """The latest round's results and their age in seconds, running a new round if it is stale."""
        loop = asyncio.get_running_loop()
        if self._round is None or (self._round.done() and loop.time() - self._checked_at >= self._ttl):
            self._round = loop.create_task(self._run())
        results = await asyncio.shield(self._round)
        return results, max(0.0, loop.time() - self._checked_at)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class KafkaProbe:
    """Metadata from one long-lived admin client, started on first use and replaced after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None

    async def __call__(self) -> None:
        if self._admin is None:
            admin = kafka_admin(self._settings)
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        try:
            await probe_kafka(self._settings, self._admin)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

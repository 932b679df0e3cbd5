"""Readiness probes: one real round trip to each dependency, bounded in time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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


async def probe_kafka(settings: Settings) -> None:
    admin = kafka_admin(settings)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = {settings.topic_appointment_events, settings.topic_analytics_results} - topics
    if missing:
        raise RuntimeError(f"missing topics: {sorted(missing)}")


async def probe_s3(s3: Any, bucket: str) -> None:
    await asyncio.to_thread(s3.head_bucket, Bucket=bucket)


async def probe_lambda(lambda_client: Any, function_name: str) -> None:
    response = await asyncio.to_thread(
        lambda_client.invoke,
        FunctionName=function_name,
        Payload=json.dumps({"healthcheck": True}).encode(),
    )
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or not isinstance(body, dict) or body.get("statusCode") != 200:
        raise RuntimeError("health invocation did not answer 200")


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

"""A real round trip through each component of the local stack."""

import asyncio
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient

from devstack.components import WRITE_CHECK_KEY, _storage_writes
from devstack.supervisor import StackError
from healthcare import clients
from healthcare.contracts.diagnostics import DiagnosticsInput
from healthcare.settings import Settings
from workflows.diagnostics import DiagnosticsWorkflow


async def test_postgres_write_and_read(engine: AsyncEngine) -> None:
    marker = uuid.uuid4().hex
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TEMP TABLE roundtrip (id text PRIMARY KEY, n int)"))
        await conn.execute(text("INSERT INTO roundtrip VALUES (:id, 42)"), {"id": marker})
        row = (await conn.execute(text("SELECT n FROM roundtrip WHERE id = :id"), {"id": marker})).one()
    assert row.n == 42


async def test_migrations_are_applied(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        ext = (
            await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'btree_gist'"))
        ).scalar_one_or_none()
    assert version
    assert ext == 1


async def test_temporal_workflow_runs_activity_on_real_worker(
    temporal: TemporalClient, settings: Settings
) -> None:
    probe = uuid.uuid4().hex[:12]
    handle = await temporal.start_workflow(
        DiagnosticsWorkflow.run,
        DiagnosticsInput(probe=probe),
        id=f"diagnostics-test-{probe}",
        task_queue=settings.temporal_task_queue,
    )
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.probe == probe
    assert result.server_version.split(".")[0].isdigit()
    events = [e async for e in handle.fetch_history_events()]
    kinds = {e.WhichOneof("attributes") for e in events}
    assert "activity_task_completed_event_attributes" in kinds


async def _produce_and_consume(settings: Settings, topic: str) -> None:
    key = uuid.uuid4().hex.encode()
    value = json.dumps({"probe": key.decode()}).encode()
    producer = clients.kafka_producer(settings)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    consumer = clients.kafka_consumer(settings, group_id=f"roundtrip-{uuid.uuid4().hex}")
    from aiokafka import TopicPartition

    tp = TopicPartition(topic, meta.partition)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await asyncio.wait_for(consumer.getone(tp), 15)
    finally:
        await consumer.stop()
    assert batch.key == key
    assert batch.value == value


async def test_kafka_round_trip_on_both_topics(settings: Settings) -> None:
    for topic in (settings.topic_appointment_events, settings.topic_analytics_results):
        await _produce_and_consume(settings, topic)


async def test_s3_put_get_and_presigned_get_on_private_bucket(s3: Any, settings: Settings) -> None:
    key = f"tests/{uuid.uuid4().hex}.txt"
    body = b"round trip through real S3-compatible storage"
    await asyncio.to_thread(s3.put_object, Bucket=settings.s3_bucket, Key=key, Body=body)
    try:
        got = await asyncio.to_thread(s3.get_object, Bucket=settings.s3_bucket, Key=key)
        assert got["Body"].read() == body
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": settings.s3_bucket, "Key": key}, ExpiresIn=120
        )
        async with httpx.AsyncClient() as http:
            signed = await http.get(url)
            unsigned = await http.get(url.split("?", 1)[0])
            tampered = await http.get(url.replace("Signature=", "Signature=0"))
        assert signed.status_code == 200 and signed.content == body
        assert unsigned.status_code == 403  # the bucket is private
        assert tampered.status_code == 403
    finally:
        await asyncio.to_thread(s3.delete_object, Bucket=settings.s3_bucket, Key=key)


async def test_lambda_invoke_through_the_emulator(lambda_client: Any, settings: Settings) -> None:
    def invoke(payload: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        resp = lambda_client.invoke(
            FunctionName=settings.lambda_function_name, Payload=json.dumps(payload).encode()
        )
        return resp, json.loads(resp["Payload"].read())

    resp, body = await asyncio.to_thread(invoke, {"healthcheck": True})
    assert resp["StatusCode"] == 200 and body == {"statusCode": 200, "status": "ok"}
    # Concurrent invocations are spread over the emulator pool instead of crashing an emulator.
    results = await asyncio.gather(*(asyncio.to_thread(invoke, {"healthcheck": True}) for _ in range(8)))
    assert all(b["statusCode"] == 200 for _, b in results)
    _, rejected = await asyncio.to_thread(invoke, {"unexpected": "request"})
    assert rejected["statusCode"] == 400


async def test_the_stack_starts_only_on_storage_that_stores(
    settings: Settings, s3: Any, tmp_path: Path
) -> None:
    """`make up` stores and deletes one object before it calls S3 ready (SeaweedFS answers its health
    check while it cannot store a byte, as when the disk is nearly full); it names the cause if not."""
    await _storage_writes(settings, tmp_path, within=30)
    listed = await asyncio.to_thread(s3.list_objects_v2, Bucket=settings.s3_bucket, Prefix=WRITE_CHECK_KEY)
    assert listed.get("KeyCount", 0) == 0  # the check leaves nothing behind

    with socket.socket() as unused:  # a port nothing answers on: storage that never stores
        unused.bind(("127.0.0.1", 0))
        nowhere = settings.model_copy(
            update={"s3_endpoint_url": f"http://127.0.0.1:{unused.getsockname()[1]}"}
        )
    try:
        await _storage_writes(nowhere, tmp_path, within=1)
    except StackError as exc:
        message = str(exc)
    else:
        raise AssertionError("a store that cannot keep an object passed the check")
    assert "cannot store an object" in message and "EndpointConnectionError" in message
    assert "GiB free on the disk" in message

"""Every client of an outside system is built here, from Settings, so each role wires them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from botocore.config import Config as BotoConfig
from temporalio.client import Client as TemporalClient
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from healthcare import codec
from healthcare.correlation import CorrelationInterceptor
from healthcare.settings import Settings


def _aws_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.aws_access_key_id:  # the SDK's credential chain: a workload role
        return {"region_name": settings.aws_region}
    return {
        "region_name": settings.aws_region,
        "aws_access_key_id": settings.aws_access_key_id,
        "aws_secret_access_key": settings.aws_secret_access_key.get_secret_value(),
    }


def s3_client(settings: Settings, *, read_timeout: float = 10, max_attempts: int = 3) -> Any:
    """S3 (or an S3-compatible server on loopback) with SigV4, so presigned URLs work everywhere."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=min(3, read_timeout),
            read_timeout=read_timeout,
        ),
        **_aws_kwargs(settings),
    )


def lambda_client(settings: Settings, *, read_timeout: float = 60.0) -> Any:
    """Lambda Invoke API. botocore's own retries are off: Temporal's retry policy decides."""
    return boto3.session.Session().client(
        "lambda",
        endpoint_url=settings.lambda_endpoint_url,
        config=BotoConfig(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=min(3, read_timeout),
            read_timeout=read_timeout,
        ),
        **_aws_kwargs(settings),
    )


def _kafka_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context()
    if settings.kafka_sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def kafka_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica: no loss, no broker-side duplicates."""
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "request_timeout_ms": 15000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**_kafka_kwargs(settings), **options)


def kafka_consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (at-least-once; handlers are idempotent)."""
    options: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **_kafka_kwargs(settings), **options)


def kafka_admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**_kafka_kwargs(settings), request_timeout_ms=10000)


def temporal_tls(settings: Settings) -> bool | TLSConfig:
    """TLS for Temporal Cloud (an API key always goes over TLS) or a cluster with (m)TLS: the
    system's trust store unless a CA is given, a client certificate for mTLS."""
    files = (settings.temporal_tls_ca_file, settings.temporal_tls_cert_file, settings.temporal_tls_key_file)
    if not any(files) and settings.temporal_tls_server_name is None:
        return settings.temporal_tls or settings.temporal_api_key is not None

    def read(path: Path | None) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_file),
        client_cert=read(settings.temporal_tls_cert_file),
        client_private_key=read(settings.temporal_tls_key_file),
        domain=settings.temporal_tls_server_name,
    )


async def temporal_client(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> TemporalClient:
    """Temporal client with the platform's data converter (pydantic models, encrypted payloads) and
    the connection security of the settings (TLS, mTLS, API key).

    `lazy` connects on first use, so a process can start while Temporal is still coming up;
    `runtime` carries the SDK's telemetry (healthcare.metrics.temporal_runtime).
    """
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await TemporalClient.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=codec.data_converter(settings),
        tls=temporal_tls(settings),
        api_key=api_key,
        lazy=lazy,
        runtime=runtime,
        # Carries the request's correlation id into workflows and on to their activities; a worker
        # built on this client takes the worker half of it too.
        interceptors=[CorrelationInterceptor()],
    )

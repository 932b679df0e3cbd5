"""The FastAPI app factory; clients are built in the lifespan and kept on app.state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_fastapi_instrumentator import Instrumentator
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient

from api.body_limit import BodyLimitMiddleware
from api.errors import install_error_handlers
from api.middleware import RequestContextMiddleware
from api.portal import mount_portal
from api.proxies import ClientAddressMiddleware
from api.refusals import RefusalSampler
from api.routes import (
    appointments,
    audit,
    auth,
    clinic,
    doctors,
    health,
    invoices,
    patients,
    payments,
    users,
)
from healthcare import clients, probes
from healthcare import payments as payments_client
from healthcare.db import create_engine, session_factory
from healthcare.logging import configure_logging
from healthcare.process import tune_gc
from healthcare.settings import Settings, get_settings
from healthcare.stores.factory import patient_store_factory

API_PREFIX = "/api/v1"


def readiness(
    settings: Settings, engine: AsyncEngine, temporal: TemporalClient, kafka: probes.KafkaProbe
) -> probes.Readiness:
    """/readyz's checks; boto3 clients of their own, whose timeouts end with the probe's."""
    timeout = settings.ready_timeout_seconds
    s3 = clients.s3_client(settings, read_timeout=timeout, max_attempts=1)
    lam = clients.lambda_client(settings, read_timeout=timeout)
    return probes.Readiness(
        asynchronous={
            "postgres": lambda: probes.probe_postgres(engine),
            "temporal": lambda: probes.probe_temporal(temporal, settings.temporal_namespace),
            "kafka": kafka,
        },
        threaded={
            "s3": lambda: probes.check_s3(s3, settings.s3_bucket),
            "lambda": lambda: probes.check_lambda(lam, settings.lambda_function_name),
        },
        timeout=timeout,
        ttl=settings.ready_cache_seconds,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = create_engine(settings)
        app.state.sessions = session_factory(app.state.engine)
        # Lazy: the API starts (and /readyz says why) even while Temporal is still coming up.
        app.state.temporal = await clients.temporal_client(settings, lazy=True)
        app.state.s3 = clients.s3_client(settings)
        app.state.lambda_client = clients.lambda_client(settings, read_timeout=30)
        app.state.patient_store_factory = patient_store_factory(settings)
        app.state.refusals = RefusalSampler()
        app.state.payment_provider = payments_client.provider_from_settings(settings)
        kafka_probe = probes.KafkaProbe(settings)
        app.state.readiness = readiness(settings, app.state.engine, app.state.temporal, kafka_probe)
        tune_gc()
        try:
            yield
        finally:
            app.state.readiness.close()
            await kafka_probe.close()
            if app.state.payment_provider is not None:
                await app.state.payment_provider.aclose()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Healthcare operations API",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    # Outermost last: the client's address is settled first, then every request (a refused body
    # included) gets its id and access log line.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(ClientAddressMiddleware, trusted_proxies=settings.trusted_proxies)
    app.include_router(health.router)
    for router in (
        auth.router,
        clinic.router,
        users.router,
        doctors.router,
        patients.router,
        appointments.router,
        invoices.router,
        payments.router,
        audit.router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    Instrumentator(excluded_handlers=["/metrics", "/healthz"]).instrument(app).expose(
        app, include_in_schema=False
    )
    mount_portal(app, settings.portal_dir, s3_endpoint_url=settings.s3_endpoint_url)
    return app


def _operation_id(route: APIRoute) -> str:
    """`patients-list_patients`: short, stable names for the generated portal client's functions."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory api.main:app_factory`."""
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings)

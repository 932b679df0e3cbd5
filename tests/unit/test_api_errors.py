"""The error mapping: database saturation or outage is a 503 to retry, never a 500."""

from __future__ import annotations

import httpx
import pytest
from asyncpg.exceptions import CannotConnectNowError
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.errors import install_error_handlers


def _starting_up() -> Exception:
    """What SQLAlchemy's asyncpg adapter raises while PostgreSQL restarts (found by the chaos suite)."""
    adapted = Exception("the database system is starting up")
    adapted.__cause__ = CannotConnectNowError("the database system is starting up")
    return adapted


def _app(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    return app


async def _get(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/boom")


@pytest.mark.parametrize(
    "exc",
    [
        PoolTimeoutError("QueuePool limit of size 10 overflow 10 reached"),
        InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused")),
        DBAPIError("SELECT 1", {}, _starting_up()),
    ],
    ids=["pool-exhausted", "connection-closed", "connection-refused", "database-starting-up"],
)
async def test_an_unavailable_database_is_a_503_to_retry(exc: Exception) -> None:
    resp = await _get(_app(exc))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.json() == {"detail": "the database is busy or unavailable; try again"}


async def test_other_database_errors_stay_internal_errors_without_details() -> None:
    resp = await _get(_app(IntegrityError("INSERT ...", {"name": "Ann Lee"}, Exception("dup"))))
    assert resp.status_code == 500
    assert "Ann Lee" not in resp.text and resp.json()["detail"] == "internal error"


async def test_a_refused_new_connection_is_a_503_to_retry() -> None:
    # SQLAlchemy re-raises asyncpg's ConnectionRefusedError unwrapped when PostgreSQL is down.
    resp = await _get(_app(ConnectionRefusedError(111, "Connection refused")))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert resp.json() == {"detail": "a service this request needs is unavailable; try again"}

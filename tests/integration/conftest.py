"""Integration fixtures: real clients to the running local stack (`make test` starts it)."""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client as TemporalClient

from devstack.paths import Paths
from healthcare import clients
from healthcare.db import create_engine, session_factory
from healthcare.models import Role
from healthcare.settings import Settings
from services import users
from tests.integration.dynamo_stack import dynamo_stack
from tests.integration.factories import (
    PASSWORD,
    SHARED_ACCOUNTS,
    Account,
    create_user,
    login,
    renew_shared_tokens,
    unique_email,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make mutation` selects a few of these (the access rules, the outbox's rounds) and says when
    the test stack is not up to serve them (tests/mutation/__main__.py): then they skip, saying why."""
    if os.environ.get("HC_MUTATION_WITHOUT_STACK") != "1":
        return
    skip = pytest.mark.skip(reason="make mutation without the test stack: this test needs its services")
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _stack_is_up(settings: Settings) -> None:
    if settings.profile == "dev":
        pytest.exit("integration tests never run against the dev stack: use `make test` (HC_PROFILE=test)", 2)
    ready = Paths.from_settings(settings).ready_file
    if not ready.exists():
        pytest.exit("integration tests need the local stack: run `make test` (or `make up` first)", 2)


@pytest.fixture(scope="session")
def paths(settings: Settings) -> Paths:
    return Paths.from_settings(settings)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(settings)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
async def owner_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The schema owner's connection (what migrations use): for tests that tamper like an attacker
    with the database's keys would, or that make private tables."""
    eng = create_engine(settings, url=settings.owner_database_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def audit_key(settings: Settings) -> bytes:
    return settings.audit_hmac_key.get_secret_value().encode()


@pytest.fixture(scope="session")
async def temporal(settings: Settings) -> TemporalClient:
    return await clients.temporal_client(settings)


@pytest.fixture(scope="session")
def s3(settings: Settings) -> Any:
    return clients.s3_client(settings)


@pytest.fixture(scope="session")
def lambda_client(settings: Settings) -> Any:
    return clients.lambda_client(settings)


@pytest.fixture(scope="session")
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    base = f"http://{settings.api_host}:{settings.api_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def _shared_tokens_stay_fresh(settings: Settings) -> None:
    renew_shared_tokens(settings)


@pytest.fixture(scope="session")
async def admin(api: httpx.AsyncClient, engine: AsyncEngine, settings: Settings) -> Account:
    """An admin made the way an operator makes the first one: outside the API."""
    email = unique_email("admin")
    async with session_factory(engine)() as session:
        user = await users.create_user(
            session, email=email, password=PASSWORD, role=Role.admin, settings=settings
        )
        await session.commit()
    account = Account(str(user.id), email, "admin", await login(api, email))
    SHARED_ACCOUNTS.append(account)
    return account


@pytest.fixture(scope="session")
async def staff(api: httpx.AsyncClient, admin: Account) -> Account:
    account = await create_user(api, admin, "staff")
    SHARED_ACCOUNTS.append(account)
    return account


@pytest.fixture(scope="session")
def dynamo_api_url() -> Iterator[str]:
    """A second API whose patient store is DynamoDB (moto's server mode, started here)."""
    with dynamo_stack() as stack:
        yield stack.api_url


@pytest.fixture(scope="session", params=["postgres", "dynamodb"])
async def patient_api(
    request: pytest.FixtureRequest, api: httpx.AsyncClient
) -> AsyncIterator[httpx.AsyncClient]:
    """The patient suite runs against both patient stores; accounts and doctors live in PostgreSQL."""
    if request.param == "postgres":
        yield api
        return
    async with httpx.AsyncClient(base_url=request.getfixturevalue("dynamo_api_url"), timeout=30) as client:
        yield client

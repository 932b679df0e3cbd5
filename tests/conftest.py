"""Shared fixtures: settings for every suite, which runs on the test profile's stack. Each suite's
marker follows from its folder."""

import os
from pathlib import Path

import pytest

# Before anything reads settings: a bare `pytest` uses the test stack too, never the dev one.
os.environ.setdefault("HC_PROFILE", "test")

from healthcare.settings import Settings, get_settings

TESTS = Path(__file__).resolve().parent
# Folder -> marker (registered in pyproject.toml), so `-m "not integration"` and the like select by
# what a test needs. A `pytestmark` in a conftest.py marks nothing, hence this hook.
SUITES: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),  # no services, seconds
    "workflows": ("workflows",),  # the Temporal time-skipping test server (a binary the tests start)
    "integration": ("integration",),  # the real local stack
    "e2e": ("integration", "e2e"),  # a browser on the portal, on the real local stack
    "deploy": ("deploy",),  # the chart, images and CloudFormation; a kube-apiserver the tests start
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        for marker in SUITES.get(folder, ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()

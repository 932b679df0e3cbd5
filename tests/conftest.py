"""Shared fixtures: settings for every suite."""

import pytest

from healthcare.settings import Settings, get_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()

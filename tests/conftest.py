"""Shared fixtures: settings for every suite, which runs on the test profile's stack."""

import os

import pytest

# Before anything reads settings: a bare `pytest` uses the test stack too, never the dev one.
os.environ.setdefault("HC_PROFILE", "test")

from healthcare.settings import Settings, get_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()

"""Markers mean what they say: a filtered run selects exactly the suites it names (tests/conftest.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest

REPO = Path(__file__).resolve().parents[2]
# One small module of each suite: markers follow from the folder, so these stand for the rest.
SAMPLES = {
    "unit": "tests/unit/test_events.py",
    "workflows": "tests/workflows/test_replay.py",
    "integration": "tests/integration/test_readiness.py",
    "deploy": "tests/deploy/test_containerfile.py",
}

# The browser tests need the stack too: they are integration tests as well as e2e ones.
E2E_SAMPLE = "tests/e2e/test_patient_search.py"


PYTEST_COLLECT = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]


def test_not_integration_selects_no_test_that_needs_the_stack() -> None:
    done = subprocess.run(
        [*PYTEST_COLLECT, "-m", "not integration", *SAMPLES.values(), E2E_SAMPLE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    suites = {line.split("/")[1] for line in done.stdout.splitlines() if line.startswith("tests/")}
    assert suites == {"unit", "workflows", "deploy"}


class _Item:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.markers: list[str] = []

    def add_marker(self, marker: str) -> None:
        self.markers.append(marker)


@pytest.mark.parametrize("suite", [*SAMPLES, "mutation"])
def test_each_folder_gets_its_suites_marker_and_no_other(suite: str) -> None:
    item = _Item(REPO / "tests" / suite / "test_x.py")
    outside = _Item(REPO / "bench" / "test_x.py")
    conftest.pytest_collection_modifyitems([item, outside])  # type: ignore[list-item]
    assert item.markers == ([suite] if suite in SAMPLES else [])
    assert outside.markers == []


def test_browser_tests_are_e2e_and_need_the_stack() -> None:
    item = _Item(REPO / "tests" / "e2e" / "test_x.py")
    conftest.pytest_collection_modifyitems([item])  # type: ignore[list-item]
    assert sorted(item.markers) == ["e2e", "integration"]

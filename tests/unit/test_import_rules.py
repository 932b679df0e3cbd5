"""The import rules between floors (README, "Layout") hold: a reader can trust a file's path."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from temporalio.worker.workflow_sandbox import SandboxRestrictions

from workers.temporal_worker import PASSTHROUGH_MODULES

REPO = Path(__file__).resolve().parents[2]
PROJECT = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"])


def _imported(path: Path) -> set[str]:
    """Absolute modules a file imports (a relative import stays inside its own package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_every_import_contract_is_kept() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-logo", "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_lambda_imports_nothing_of_the_project() -> None:
    # Not a package (`lambda` is a keyword): it deploys alone, so import-linter cannot see it.
    files = sorted((REPO / "lambda").glob("*.py"))
    assert files
    for path in files:
        ours = {m for m in _imported(path) if m.split(".")[0] in PROJECT | {"tests"}}
        assert not ours, f"{path.name} imports {sorted(ours)}"


def test_contracts_import_only_the_standard_library_and_pydantic() -> None:
    allowed = set(sys.stdlib_module_names) | {"pydantic"}
    files = sorted((REPO / "healthcare" / "contracts").glob("*.py"))
    assert files
    for path in files:
        outside = {
            m
            for m in _imported(path)
            if m.split(".")[0] not in allowed and not m.startswith("healthcare.contracts")
        }
        assert not outside, f"contracts/{path.name} imports {sorted(outside)}"


def test_the_worker_passes_only_the_contracts_of_ours_through_the_sandbox() -> None:
    passed = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES).passthrough_modules
    ours = {m for m in passed if m.split(".")[0] in PROJECT}
    assert ours == {"healthcare.contracts"}

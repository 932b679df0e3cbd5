"""Stored histories: `keep_history` for the tests, and `make histories` (python -m tests.workflows.capture).

Capturing is a step of its own: `make histories` runs the workflow tests with CAPTURE_HISTORIES set
to a scratch folder, then stores each captured history under tests/workflows/histories/. A history
whose name is not stored yet is added. An existing one is never replaced: every capture differs
(ids, times), so by default the new capture is left out and named; with `--new` it is stored beside
the old one as `<name>.<UTC time>.json`. Every file in the folder must replay (test_replay.py), so
delete a history only when no run like it can still be open (README, "Changing a workflow").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import WorkflowHistory

HISTORIES = Path(__file__).parent / "histories"
ROOT = Path(__file__).resolve().parents[2]
ENV = "CAPTURE_HISTORIES"


def keep_history(history: WorkflowHistory, name: str) -> None:
    """Write the run's history for `make histories` when it captures; in a plain test run, nothing."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    target = Path(folder)
    if not target.is_dir():
        raise RuntimeError(f"{ENV} must name a folder: run `make histories` to capture")
    (target / f"{name}.json").write_text(history.to_json())


def store(captured: Path, *, new: bool) -> list[str]:
    """Move captures into HISTORIES without replacing a file; what happened, one line per capture."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = []
    for path in sorted(captured.glob("*.json")):
        target = HISTORIES / path.name
        if not target.exists():
            shutil.move(path, target)
            lines.append(f"added    {target.relative_to(ROOT)}")
        elif new:
            extra = HISTORIES / f"{path.stem}.{stamp}.json"
            shutil.move(path, extra)
            lines.append(f"added    {extra.relative_to(ROOT)} (beside {target.name})")
        else:
            lines.append(f"kept     {target.relative_to(ROOT)} (not replaced; --new keeps the capture too)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.workflows.capture", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--new", action="store_true", help="store captures of existing names beside them")
    parser.add_argument(
        "pytest_args",
        nargs="*",
        # The replay test reads what is stored, so it runs after the capture, not in it.
        default=["tests/workflows", "--ignore=tests/workflows/test_replay.py"],
        help="what to run (default: the workflow tests)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="histories-") as scratch:
        env = {**os.environ, ENV: scratch}
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *args.pytest_args], env=env)
        if code != 0:
            print(f"tests failed (exit {code}): nothing stored", file=sys.stderr)
            return code
        for line in store(Path(scratch), new=args.new):
            print(line)
    # Every stored file must replay on today's code, the new ones included.
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/workflows/test_replay.py"])


if __name__ == "__main__":
    sys.exit(main())

"""`make mutation`: mutmut over the core modules, then the score, the survivors and the allow-list.

mutmut (configured in pyproject.toml, `[tool.mutmut]`) copies the packages into the git-ignored
`mutants/`, makes one small bug at a time in the functions chosen below and runs the unit tests that
reach that function. A mutant the tests fail on is killed; one they pass on survived. A survivor is
either a missing test or an equivalent mutant (a change no caller can observe): those are listed with
a one-line reason in `tests/mutation/equivalent.toml`, matched by function and mutated line, so the
list is read and kept by people, and an entry that no longer matches anything is reported as stale.

The tests it runs are listed in pyproject.toml (`pytest_add_cli_args_test_selection`): the unit tests
of these modules, and, for services.access and the outbox's rounds (SQL, so no unit test reaches
them), tests/integration/test_access_rules.py and a few outbox tests, which run when the test stack
is up in the same network namespace (`HC_PROFILE=test make up` first) and skip, saying why, when not.

Module-level tables (the transition tables, pydantic `model_config`, constants) are not mutated by
mutmut 3, which mutates function bodies only; their tests are in tests/unit/test_contracts.py and
test_schemas.py.

    python -m tests.mutation               # run: every selected mutant is tested again (mutmut re-runs a
                                           # mutant it is named; `mutmut run <glob>` re-tests a few)
    python -m tests.mutation --fresh       # discard earlier results first
    python -m tests.mutation --report      # print the last results without running
    python -m tests.mutation --only lambda.invoice_pdf   # run and report one module (repeatable)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = ROOT / "mutants"
ALLOW_LIST = Path(__file__).with_name("equivalent.toml")
GOAL = 80.0

# What is mutated: module -> function globs, as mutmut names them ("x_name" for a function,
# "xǁClassǁmethod" for a method). Each line says which rule of the module it covers.
TARGETS: dict[str, tuple[str, ...]] = {
    # access tokens and password hashing
    "healthcare.security": ("*",),
    # request schemas: passwords, dates of birth, booking horizon, NUL bytes, attribute size
    "healthcare.schemas": ("*",),
    # state machines and derived ids
    "healthcare.contracts.billing": ("*",),
    "healthcare.contracts.appointments": ("*",),
    # the billing consumer's lanes, commits and back-off
    "workers.billing_consumer": ("xǁBillingConsumerǁ*",),
    # the relay's authentication: credentials, the 1008 close, token expiry
    "workers.ws_relay": ("x__credentials", "x_analytics_socket", "x__serve"),
    # the PDF function's validation and its rejection log
    "lambda.invoice_pdf": (
        "xǁBadRequestǁ*",
        "x__uuid",
        "x__amount",
        "x__date",
        "x__aware_datetime",
        "x__status",
        "x__matching",
        "x__text",
        "x_parse_request",
        "x_handler",
        "x__log",
    ),
    # the outbox relay's claim, send and mark (tests/integration/test_outbox.py, on the test stack)
    "healthcare.outbox": ("xǁOutboxRelayǁdrain_once", "xǁOutboxRelayǁ_send", "xǁOutboxRelayǁ_mark"),
    # the access rules (tests/integration/test_access_rules.py, on the test stack's PostgreSQL)
    "services.access": ("*",),
}

DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


@dataclass(frozen=True)
class Mutant:
    name: str  # mutmut's key, e.g. healthcare.security.x_decode_token__mutmut_3
    status: str

    @property
    def module(self) -> str:
        return self.name.partition("__mutmut_")[0].rpartition(".")[0]

    @property
    def function(self) -> str:
        """Readable: healthcare.security.decode_token, workers.billing_consumer.BillingConsumer.run."""
        mangled = self.name.partition("__mutmut_")[0].rpartition(".")[2]
        if mangled.startswith("xǁ"):
            _, cls, method = mangled.split("ǁ")
            return f"{self.module}.{cls}.{method}"
        return f"{self.module}.{mangled.removeprefix('x_')}"


@dataclass(frozen=True)
class Equivalent:
    function: str
    mutated: str
    reason: str


def patterns(modules: Sequence[str] = ()) -> list[str]:
    """mutmut's name globs of the selected functions: of every target, or of `modules` only."""
    out = []
    for module, globs in TARGETS.items():
        if modules and module not in modules:
            continue
        for glob in globs:
            out.append(f"{module}.{glob}" if glob.endswith("*") else f"{module}.{glob}__mutmut_*")
    return out


def selected(name: str, modules: Sequence[str] = ()) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns(modules))


def load_results(modules: Sequence[str] = ()) -> list[Mutant]:
    from mutmut.stats import status_by_exit_code

    mutants = []
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        try:
            exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        except json.JSONDecodeError:  # written half when a run was killed: its mutants count as not run
            print(
                f"unreadable result file (a run was interrupted): {meta.relative_to(ROOT)}", file=sys.stderr
            )
            continue
        for name, code in exit_codes.items():
            if selected(name, modules):
                mutants.append(Mutant(name, status_by_exit_code[code]))
    return mutants


def _module_of(entry: Equivalent) -> str:
    """The target module an entry's function belongs to (module.function or module.Class.method)."""
    return max((m for m in TARGETS if entry.function.startswith(m + ".")), key=len, default="")


def load_allow_list() -> list[Equivalent]:
    entries = tomllib.loads(ALLOW_LIST.read_text()).get("equivalent", [])
    return [Equivalent(e["function"], e["mutated"], e["reason"]) for e in entries]


def diff_of(mutant: Mutant) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    with _cwd(ROOT):
        return get_diff_for_mutant(mutant.name)


def mutated_lines(diff: str) -> str:
    return "\n".join(
        line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
    )


class _cwd:
    def __init__(self, path: Path) -> None:
        self.path, self.old = path, Path.cwd()

    def __enter__(self) -> None:
        os.chdir(self.path)

    def __exit__(self, *_: object) -> None:
        os.chdir(self.old)


def with_test_stack() -> dict[str, str]:
    """The environment of the run. services.access is SQL and role checks, so its tests
    (tests/integration/test_access_rules.py) need PostgreSQL: the test stack's, when it is up (in
    the same network namespace: `ip netns exec <ns> make mutation`). `mutants/` has no `.state`, so
    the copy is pointed at the repository's. Without the stack those tests skip, saying why, and the
    module's mutants count as not tested."""
    from healthcare.settings import Settings

    env = {**os.environ, "HC_PROFILE": "test"}
    stack = Settings(profile="test")
    ready = stack.state_dir / "run" / "ready"
    if ready.exists() and _answers("127.0.0.1", stack.stack_port("postgres")):
        env["HC_STATE_DIR"] = str(stack.state_dir)
        print(
            f"the test stack is up ({stack.state_dir.relative_to(ROOT)}):"
            " services.access and the outbox's rounds are tested on its services"
        )
    else:
        env["HC_MUTATION_WITHOUT_STACK"] = "1"
        print(
            "the test stack is not up here: the tests of services.access and the outbox's rounds skip,"
            " and their mutants count as not tested"
            " (`HC_PROFILE=test make up`, then `make mutation`, in one network namespace)"
        )
    return env


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def run_mutmut(max_children: int | None, modules: Sequence[str] = ()) -> None:
    command = [str(Path(sys.executable).parent / "mutmut"), "run", *patterns(modules)]
    if max_children:
        command[2:2] = ["--max-children", str(max_children)]
    # mutmut prints a progress line it redraws in place; the summary below is what counts.
    done = subprocess.run(command, cwd=ROOT, check=False, env=with_test_stack())
    if done.returncode not in (0, 1):
        sys.exit(f"mutmut failed (exit {done.returncode}); `debug = true` in [tool.mutmut] shows why")


def report(elapsed: float | None, modules: Sequence[str] = ()) -> int:
    """Print the score; 0 when it meets the goal with no unexplained survivor and no stale entry.
    With `modules`, of those modules only, and entries of other modules are not called stale."""
    mutants = load_results(modules)
    if not mutants:
        print("no mutation results yet: run `make mutation`")
        return 1
    allow = load_allow_list()
    used: Counter[Equivalent] = Counter()
    surviving: list[tuple[Mutant, str]] = []
    equivalent = 0
    for mutant in mutants:
        if mutant.status in DETECTED:
            continue
        diff = diff_of(mutant)
        lines = mutated_lines(diff)
        match = next((e for e in allow if e.function == mutant.function and e.mutated in lines), None)
        if match is not None and mutant.status == "survived":
            used[match] += 1
            equivalent += 1
        else:
            surviving.append((mutant, diff))

    killed = sum(m.status in DETECTED for m in mutants)
    total = len(mutants)
    score = 100.0 * killed / total
    print()
    print("by module (killed / mutants):")
    for module in TARGETS:
        of_module = [m for m in mutants if m.module == module]
        if of_module:
            k = sum(m.status in DETECTED for m in of_module)
            print(f"  {module:36} {k:4} / {len(of_module):<4} ({100.0 * k / len(of_module):5.1f}%)")
    if surviving:
        print(f"\nsurviving mutants ({len(surviving)}): add a test, or a reason in {ALLOW_LIST.name}")
        for mutant, diff in surviving:
            print(f"\n{mutant.name}  [{mutant.status}]  ({mutant.function})")
            print("\n".join("    " + line for line in diff.splitlines()[2:]))
    stale = [e for e in allow if not used[e] and (not modules or _module_of(e) in modules)]
    if stale:
        print(f"\nstale entries in {ALLOW_LIST.name} (they match no surviving mutant; remove them):")
        for entry in stale:
            print(f"  {entry.function}: {entry.mutated!r}")
    print()
    if elapsed is not None:
        print(f"took {elapsed / 60:.1f} min")
    print(f"{equivalent} of the survivors are equivalent mutants ({ALLOW_LIST.relative_to(ROOT)})")
    print(f"mutation score: {killed} killed of {total} ({score:.1f}%)")
    ok = score >= GOAL and not surviving and not stale
    if not ok:
        print(f"goal: at least {GOAL:.0f}%, and every survivor killed or listed as equivalent")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="discard earlier results (mutants/) first")
    parser.add_argument("--report", action="store_true", help="print the last results, run nothing")
    parser.add_argument("--max-children", type=int, help="mutants tested at once (default: CPU count)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=list(TARGETS),
        metavar="MODULE",
        help=f"run (or, with --report, report) only this module; repeatable. One of: {', '.join(TARGETS)}",
    )
    args = parser.parse_args()
    if args.report:
        return report(None, args.only)
    if args.fresh:
        shutil.rmtree(MUTANTS, ignore_errors=True)
    started = time.monotonic()
    run_mutmut(args.max_children, args.only)
    return report(time.monotonic() - started, args.only)


if __name__ == "__main__":
    sys.exit(main())

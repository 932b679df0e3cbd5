"""`python -m devstack setup|run|up|down|status|test|bench|soak|chaos`: the local stacks behind the Makefile.

Which stack is chosen by `HC_PROFILE` (healthcare/profiles.py): `make up|run|down|status` use `dev`
unless told otherwise, `make test` uses `test` and `make bench` uses `bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devstack import components
from devstack.install import SetupError, setup
from devstack.paths import REPO, Paths
from devstack.supervisor import Supervisor, log_tail, port_in_use, run_until_signal, say
from healthcare import profiles
from healthcare.settings import Settings, get_settings

UP_TIMEOUT = 600.0
# `make bench` runs these in order; QUICK_BENCH_ARGS (`make bench QUICK=1`) keeps each short.
# Bookings last, with billing paused (the table compares the booking path alone with the bare
# booking): the backlog it leaves is billed after every other figure was measured.
BENCHMARKS = [
    "bench.bare",
    "bench.auth",
    "bench.billing",
    "bench.analytics_freshness",
    "bench.replay",
    "bench.portal",
    "bench.appointments",
]
BENCH_ARGS = {"bench.appointments": ["--pause-billing"]}
QUICK_BENCH_ARGS = {
    "bench.bare": ["--seconds", "4", "--concurrency", "8"],
    "bench.auth": ["--seconds", "4"],
    "bench.appointments": ["--seconds", "4", "--levels", "1", "8"],
    "bench.billing": ["--seconds", "6", "--rate", "10"],
    "bench.analytics_freshness": ["--events", "60", "--burst", "300"],
    "bench.replay": ["--runs", "40"],
    "bench.portal": ["--bookings", "20", "--renders", "5"],
}


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _stack_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.stack_pid.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def cmd_setup(paths: Paths) -> int:
    say("setup: checking the local stack's tools")
    began = time.monotonic()
    try:
        setup(paths)
    except SetupError as exc:
        say(f"setup failed: {exc}")
        return 1
    say(f"setup: done in {time.monotonic() - began:.1f}s")
    return 0


def cmd_run(paths: Paths) -> int:
    settings = get_settings()
    running = _stack_pid(paths)
    if running and running != os.getpid():
        say(f"stack: already running (pid {running}); `{down_command(settings)}` stops it")
        return 1
    for folder in (paths.run, paths.logs, paths.data):
        folder.mkdir(parents=True, exist_ok=True)
    paths.stack_pid.write_text(str(os.getpid()))
    supervisor = Supervisor(components.all_components(settings, paths), log_dir=paths.logs, run_dir=paths.run)
    began = time.monotonic()
    say(f"stack: starting profile {settings.profile!r} (logs in {paths.logs}/)")

    def on_ready() -> None:
        say(f"stack: ready in {time.monotonic() - began:.1f}s")
        for label, url in components.urls(settings).items():
            say(f"  {label:<12} {url}")
        say(f"stack: Ctrl-C (or `{down_command(settings)}`) stops it")

    try:
        return asyncio.run(run_until_signal(supervisor, on_ready=on_ready, ready_file=paths.ready_file))
    finally:
        paths.stack_pid.unlink(missing_ok=True)


def cmd_up(paths: Paths) -> int:
    if _stack_pid(paths):
        if paths.ready_file.exists():
            say("stack: already up")
            return 0
        say("stack: starting in another process; waiting for it")
        return _follow_until_ready(paths, None)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.ready_file.unlink(missing_ok=True)
    with paths.stack_log.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    return _follow_until_ready(paths, proc)


def _follow_until_ready(paths: Paths, proc: subprocess.Popen[bytes] | None) -> int:
    """Echo the detached stack's progress until it is ready, fails or times out."""
    deadline = time.monotonic() + UP_TIMEOUT
    printed = 0

    def echo() -> None:
        nonlocal printed
        with contextlib.suppress(OSError):
            lines = paths.stack_log.read_text(errors="replace").splitlines()
            for line in lines[printed:]:
                say(line)
            printed = len(lines)

    while time.monotonic() < deadline:
        echo()
        if paths.ready_file.exists():
            return 0
        exited = proc.poll() is not None if proc else _stack_pid(paths) is None
        if exited:
            echo()
            say("stack: failed to start (see above)")
            return 1
        time.sleep(0.2)
    say(f"stack: not ready within {UP_TIMEOUT:.0f}s; stopping it")
    cmd_down(paths)
    return 1


def cmd_down(paths: Paths) -> int:
    pid = _stack_pid(paths)
    if pid is None:
        say("stack: not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if not _alive(pid):
            say("stack: stopped")
            return 0
        time.sleep(0.2)
    say(f"stack: supervisor {pid} did not stop in time; killing it")
    os.kill(pid, signal.SIGKILL)
    return 1


def rss_mb(pid: str) -> float:
    """Resident memory of a component: every process in its process group."""
    if not pid.isdigit():
        return 0.0
    total_kb = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[2] == pid:  # the process group id
                status = (stat.parent / "status").read_text()
                total_kb += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS")))
    return total_kb / 1024


def cmd_status(paths: Paths) -> int:
    pid = _stack_pid(paths)
    say(
        f"stack: {'up' if paths.ready_file.exists() else 'starting' if pid else 'down'}"
        + (f" (supervisor pid {pid})" if pid else "")
    )
    if not pid:
        return 3
    return 0 if not asyncio.run(_report_components(paths, pid)) else 1


async def _report_components(paths: Paths, supervisor_pid: int) -> list[str]:
    """Prints each component's pid, memory and state; returns the names of those not ready."""
    settings = get_settings()
    failing: list[str] = []
    total = rss_mb(str(supervisor_pid))
    for comp in components.all_components(settings, paths):
        pid_file = paths.run / f"{comp.name}.pid"
        cpid = pid_file.read_text().strip() if pid_file.exists() else "-"
        try:
            await asyncio.wait_for((comp.live or comp.ready)(), 5)
            state = "ready"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            state = f"NOT READY ({type(exc).__name__})"
            failing.append(comp.name)
        total += rss_mb(cpid)
        say(f"  {comp.name:<10} pid {cpid:<8} {rss_mb(cpid):>7.1f} MB  {state}")
    say(f"  total RSS (with the supervisor): {total:.0f} MB")
    return failing


def report_failed_run(paths: Paths) -> None:
    """What a failed CI run leaves in its output: the state of each component, what the supervisor
    restarted, and the last lines of the log of each component that is not ready (CI keeps no files)."""
    pid = _stack_pid(paths)
    say("test: the run failed; the stack as it is now:")
    failing = asyncio.run(_report_components(paths, pid)) if pid else []
    events = [ln for ln in log_tail(paths.stack_log, 10_000) if "exited" in ln or "restart" in ln]
    say(f"test: {len(events)} restart lines in {paths.stack_log}" + (", the last:" if events else ""))
    for line in events[-25:]:
        say(f"  {line.strip()}")
    for name in failing:
        say(f"test: the last lines of {name}.log:")
        for line in log_tail(paths.logs / f"{name}.log", 8):
            say(f"  | {line[:300]}")


def down_command(settings: Settings) -> str:
    return "make down" if settings.profile == "dev" else f"HC_PROFILE={settings.profile} make down"


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def ports_still_taken(settings: Settings) -> list[int]:
    """Ports of the profile's stack (and of the servers the tests start) that something holds."""
    return sorted(p for p in profiles.all_ports(settings.port_offset).values() if port_in_use(p))


def cmd_test(paths: Paths, pytest_args: list[str]) -> int:
    """Run pytest against the test profile's stack: started if it is down, reused if it is up.

    Locally the stack stays up afterwards, so the next run starts in seconds; on CI (`CI=true`) it
    is stopped at the end, however the run went, so nothing is left running.
    """
    settings = get_settings()
    if settings.profile == "dev":
        say("test: refusing to run the suite against the dev stack; `make test` uses HC_PROFILE=test")
        return 2
    if not paths.ready_file.exists():
        code = cmd_up(paths)
        if code != 0:
            if on_ci():
                cmd_down(paths)
            return code
    else:
        say(f"test: reusing the running {settings.profile} stack ({down_command(settings)} stops it)")
    code = 1
    try:
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=REPO)
    finally:
        if on_ci():
            if code != 0:
                report_failed_run(paths)
            cmd_down(paths)
            if taken := ports_still_taken(settings):
                say(f"test: ports of the {settings.profile} stack still taken after it stopped: {taken}")
                code = code or 1
        else:
            stop = down_command(settings)
            say(f"test: the {settings.profile} stack stays up for the next run; `{stop}` stops it")
    if code == 5:
        say("test: pytest collected no tests; that counts as a failure")
        return 1
    return code


def _on_fresh_stack(paths: Paths, label: str, run: Callable[[], int]) -> int:
    """`run` against the profile's stack. A stack started here starts from no data and is stopped
    and deleted afterwards, so the run leaves nothing behind; one already up is used and kept."""
    started_here = _stack_pid(paths) is None
    if started_here:
        for folder in (paths.data, paths.run):
            shutil.rmtree(folder, ignore_errors=True)
    code = cmd_up(paths)
    if code != 0:
        return code
    try:
        return run()
    finally:
        if started_here:
            cmd_down(paths)
            for folder in (paths.data, paths.run):
                shutil.rmtree(folder, ignore_errors=True)
            say(f"{label}: stack stopped and its data deleted ({paths.data})")


def cmd_bench(paths: Paths, quick: bool, soak_minutes: float | None = None) -> int:
    """Run every benchmark against the bench profile's stack (or, with `soak_minutes`, the soak
    alone), on a fresh stack (_on_fresh_stack) so that each run starts from nothing."""
    settings = get_settings()
    if settings.profile == "dev":
        say("bench: refusing to load the dev stack; `make bench` uses HC_PROFILE=bench")
        return 2
    # Each benchmark records its figures here; bench.table prints them as one table at the end.
    results = paths.root / "bench-results.jsonl"  # kept: `python -m bench.table` prints it again
    env = {**os.environ, "HC_BENCH_RESULTS": str(results)}
    runs = [(m, [*BENCH_ARGS.get(m, []), *(QUICK_BENCH_ARGS[m] if quick else [])]) for m in BENCHMARKS]
    if soak_minutes is not None:
        runs = [("bench.soak", ["--minutes", f"{soak_minutes:g}"])]

    def run() -> int:
        results.unlink(missing_ok=True)
        code = 0
        for module, args in runs:
            say(f"bench: {module} {' '.join(args)}".rstrip())
            began = time.monotonic()
            code = subprocess.call([sys.executable, "-m", module, *args], cwd=REPO, env=env) or code
            say(f"bench: {module} done in {time.monotonic() - began:.0f}s")
        if soak_minutes is None:
            say("bench: the figures, their goals and their ratios, all measured in this run (bench.table)")
            code = subprocess.call([sys.executable, "-m", "bench.table", str(results)], cwd=REPO) or code
        return code

    return _on_fresh_stack(paths, "bench", run)


def cmd_chaos(paths: Paths, args: list[str]) -> int:
    """Run the chaos suite (bench/chaos.py) on the chaos profile's stack: a fresh one, stopped and
    deleted afterwards (its faults kill and restart components, so it never shares a stack)."""
    settings = get_settings()
    if settings.profile != "chaos":
        say("chaos: refusing to break any stack but the chaos one; `make chaos` uses HC_PROFILE=chaos")
        return 2
    return _on_fresh_stack(
        paths, "chaos", lambda: subprocess.call([sys.executable, "-m", "bench.chaos", *args], cwd=REPO)
    )


def main(argv: list[str] | None = None) -> int:
    # Readiness polling expects refused connections; the clients' own error logs would only be noise.
    logging.basicConfig(level=logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument(
        "command", choices=["setup", "run", "up", "down", "status", "test", "bench", "soak", "chaos"]
    )
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    paths = Paths.from_settings(get_settings())
    if args.command == "test":
        return cmd_test(paths, args.pytest_args)
    if args.command == "chaos":
        return cmd_chaos(paths, args.pytest_args)
    if args.command == "bench":
        return cmd_bench(paths, quick=args.pytest_args == ["--quick"])
    if args.command == "soak":
        return cmd_bench(
            paths, quick=False, soak_minutes=float(args.pytest_args[0] if args.pytest_args else 30)
        )
    handlers = {
        "setup": cmd_setup,
        "run": cmd_run,
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
    }
    return handlers[args.command](paths)


if __name__ == "__main__":
    raise SystemExit(main())

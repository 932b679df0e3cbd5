"""`python -m devstack`: `make down` sees an exited supervisor as gone; test and bench keep off dev."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import devstack.__main__ as main
from devstack.__main__ import _alive
from devstack.paths import Paths
from healthcare.settings import Settings


def test_running_then_exited_child_is_gone_even_as_a_zombie() -> None:
    # The child lives until its stdin closes, so the test decides when it exits.
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert _alive(proc.pid)
        assert proc.stdin is not None
        proc.stdin.close()
        # Block until it has exited, without reaping it (WNOWAIT): a zombie now.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert not _alive(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)  # reaped: no zombie left behind


def test_unknown_pid_is_gone() -> None:
    assert not _alive(2**22 + 12345)


def test_the_suite_the_benchmarks_and_the_soak_refuse_the_dev_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(main, "get_settings", lambda: Settings(profile="dev"))
    paths = Paths(tmp_path, tmp_path / "tools")
    assert main.cmd_test(paths, []) == 2
    assert main.cmd_bench(paths, quick=True) == 2
    assert main.cmd_bench(paths, quick=False, soak_minutes=3) == 2
    assert not paths.run.exists()  # nothing was started


def test_a_port_left_taken_after_the_stack_stopped_is_named() -> None:
    settings = Settings(profile="test", port_offset=9500)
    with socket.socket() as held:
        held.bind(("127.0.0.1", settings.stack_port("moto")))
        held.listen()
        assert settings.stack_port("moto") in main.ports_still_taken(settings)


def test_a_failed_ci_run_prints_the_restarts_and_the_logs_of_what_is_not_ready(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CI keeps no files: what went wrong with the stack has to be in the run's output."""
    paths = Paths(tmp_path, tmp_path / "tools")
    paths.logs.mkdir(parents=True)
    paths.stack_log.write_text(
        "  lambda-1   ready in   6.7s\n  lambda-1   exited with code -9; restarting in 1s\n"
        "  lambda-1   back after restart in 1.7s\n"
    )
    (paths.logs / "lambda-1.log").write_text("START\n\nRuntimeError: Failed to get next\n")
    (paths.logs / "api.log").write_text("an api line\n")
    monkeypatch.setattr(main, "_stack_pid", lambda _: 4242)

    async def lambda_not_ready(_paths: Paths, _pid: int) -> list[str]:
        return ["lambda-1"]

    monkeypatch.setattr(main, "_report_components", lambda_not_ready)
    # In a thread of its own: its asyncio.run would reset this thread's event loop under the session's.
    reporting = threading.Thread(target=main.report_failed_run, args=(paths,))
    reporting.start()
    reporting.join(timeout=30)
    out = capsys.readouterr().out
    assert "2 restart lines" in out
    assert "exited with code -9" in out and "back after restart" in out and "ready in" not in out
    assert "| RuntimeError: Failed to get next" in out
    assert "an api line" not in out  # only the logs of what is not ready

"""The local-stack supervisor: dependency order, one clear line on failure, no orphans, restarts."""

import asyncio
import os
import sys
from pathlib import Path

import pytest

from devstack.supervisor import Component, StackError, Supervisor, port_in_use
from tests.waiting import eventually


def _sleeper() -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def _always_ready() -> None:
    return None


def _make(tmp_path: Path, comps: list[Component]) -> Supervisor:
    return Supervisor(comps, log_dir=tmp_path / "logs", run_dir=tmp_path / "run")


async def test_starts_in_dependency_order_and_stops_dependents_first(tmp_path: Path) -> None:
    order: list[str] = []

    def ready(name: str):  # type: ignore[no-untyped-def]
        async def probe() -> None:
            order.append(name)

        return probe

    a = Component("a", _sleeper, ready("a"))
    b = Component("b", _sleeper, ready("b"), depends_on=["a"])
    c = Component("c", _sleeper, ready("c"), depends_on=["b"])
    sup = _make(tmp_path, [c, b, a])
    await sup.start_all()
    try:
        assert order == ["a", "b", "c"]
        assert sup._stop_order() == ["c", "b", "a"]
    finally:
        await sup.stop_all()
    for comp in (a, b, c):
        assert comp.process is not None and not _alive(comp.process.pid)


async def test_a_component_that_exits_is_named_and_the_rest_stopped(tmp_path: Path) -> None:
    async def never_ready() -> None:
        raise ConnectionRefusedError

    good = Component("good", _sleeper, _always_ready)
    bad = Component(
        "bad",
        lambda: [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"],
        never_ready,
    )
    sup = _make(tmp_path, [good, bad])
    with pytest.raises(StackError) as err:
        await sup.start_all()
    await sup.stop_all()
    assert "bad: exited with code 3" in str(err.value)
    assert "boom: bad config" in str(err.value)
    assert good.process is not None and not _alive(good.process.pid)


async def test_slow_component_times_out_with_its_name(tmp_path: Path) -> None:
    async def never_ready() -> None:
        raise ConnectionRefusedError("nobody listening")

    slow = Component("slow", _sleeper, never_ready, ready_timeout=0.5)
    sup = _make(tmp_path, [slow])
    with pytest.raises(
        StackError,
        match=r"slow: not ready within 0.5s \(last check: ConnectionRefusedError: nobody listening\)",
    ):
        await sup.start_all()
    await sup.stop_all()
    assert slow.process is not None and not _alive(slow.process.pid)


async def test_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert port_in_use(port)
        comp = Component("db", _sleeper, _always_ready, ports=[port])
        sup = _make(tmp_path, [comp])
        with pytest.raises(StackError, match=f"db: port {port} on 127.0.0.1 is already in use"):
            await sup.start_all()
        assert comp.process is None
    finally:
        server.close()
        await server.wait_closed()


async def test_a_crashed_component_is_restarted(tmp_path: Path) -> None:
    comp = Component("worker", _sleeper, _always_ready)
    sup = _make(tmp_path, [comp])
    await sup.start_all()
    try:
        assert comp.process is not None
        first = comp.process.pid
        os.kill(first, 9)

        def restarted() -> bool:
            assert comp.process is not None
            return comp.restarts == 1 and comp.process.pid != first and comp.process.returncode is None

        await eventually(restarted, timeout=10, interval=0.1, what="the restart")
        assert comp.restarts == 1
        assert comp.process.pid != first and _alive(comp.process.pid)
    finally:
        await sup.stop_all()
    assert not _alive(comp.process.pid)


async def test_a_slow_start_says_what_it_is_waiting_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checks = 0

    async def ready_on_third_check() -> None:
        nonlocal checks
        checks += 1
        if checks < 3:
            raise ConnectionRefusedError

    slow = Component("slow", _sleeper, ready_on_third_check)
    sup = Supervisor([slow], log_dir=tmp_path / "logs", run_dir=tmp_path / "run", progress_every=0.1)
    await sup.start_all()
    await sup.stop_all()
    assert "still starting slow" in capsys.readouterr().out


async def test_a_restart_is_checked_with_live_and_leaves_no_child_of_the_dead_one(tmp_path: Path) -> None:
    """A Lambda emulator's `ready` is an invocation, which crashes an emulator the gateway already
    uses: after a restart only `live` is asked. And what the dead process started (an emulator's
    runtime) is killed with it, so it never meets the new one."""
    children = tmp_path / "children"
    parent = [
        sys.executable,
        "-c",
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(children)!r}, 'a').write(f'{{child.pid}}\\n')\n"
        "time.sleep(60)",
    ]
    asked: list[str] = []

    async def ready() -> None:
        asked.append("ready")

    async def live() -> None:
        asked.append("live")

    comp = Component("emulator", lambda: parent, ready, live=live)
    sup = _make(tmp_path, [comp])
    await sup.start_all()
    try:
        await eventually(children.exists, timeout=10, what="the first child")
        assert asked == ["ready"]
        assert comp.process is not None
        first = comp.process.pid
        first_child = int(children.read_text().split()[0])
        os.kill(first, 9)  # the parent only, as a test or the kernel's OOM killer would

        def restarted() -> bool:
            assert comp.process is not None
            return comp.restarts == 1 and comp.process.pid != first and len(children.read_text().split()) == 2

        await eventually(restarted, timeout=10, interval=0.1, what="the restart and its child")
        assert asked == ["ready", "live"]
        await eventually(lambda: not _alive(first_child), timeout=5, what="the first child gone")
    finally:
        await sup.stop_all()

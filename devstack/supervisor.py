"""Starts components in dependency order, reports readiness, restarts crashes, stops everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


class StackError(Exception):
    """A component could not start; the message names it and the cause, in one line."""


@dataclass
class Component:
    name: str
    argv: Callable[[], Sequence[str]]
    ready: Callable[[], Awaitable[None]]
    # A check that is safe while the component serves others: used after a restart and by `status`
    # (`ready` when None). A Lambda emulator's `ready` is an invocation, and an emulator crashes on a
    # second invocation while the gateway's is in flight; its `live` only opens its port.
    live: Callable[[], Awaitable[None]] | None = None
    ready_timeout: float = 60.0
    check_timeout: float = 5.0  # one readiness check; a slower answer counts as not ready yet
    ports: Sequence[int] = ()
    depends_on: Sequence[str] = ()
    env: Callable[[], dict[str, str]] = dict
    cwd: Path | None = None
    prepare: Callable[[], Awaitable[None]] | None = None  # one-off work before start (initdb, format)
    after_ready: Callable[[], Awaitable[None]] | None = None  # bootstrap once up (roles, topics)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    describe: str = ""  # what to print once ready, e.g. an address
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    restarts: int = 0


def _die_with_parent() -> None:
    # The kernel sends SIGTERM to the child if the supervisor dies, even by SIGKILL: no orphans.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


async def accepts(port: int, host: str = "127.0.0.1") -> None:
    """Raises unless something accepts connections on the port (a check that asks nothing of it)."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    await writer.wait_closed()


def log_tail(path: Path, lines: int) -> list[str]:
    """The last `lines` non-blank lines of a log (none if it is missing)."""
    with contextlib.suppress(OSError):
        return [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-lines:]
    return []


def say(message: str) -> None:
    print(message, flush=True)


class Supervisor:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        log_dir: Path,
        run_dir: Path,
        progress_every: float = 10.0,
    ) -> None:
        self.components = {c.name: c for c in components}
        self.progress_every = progress_every  # seconds between "still starting" lines
        self.log_dir = log_dir
        self.run_dir = run_dir
        self._stopping = False
        self._ready: set[str] = set()
        self._monitors: list[asyncio.Task[None]] = []

    # -- start -----------------------------------------------------------------------------
    async def start_all(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for comp in self.components.values():
            for port in comp.ports:
                if port_in_use(port):
                    raise StackError(
                        f"{comp.name}: port {port} on 127.0.0.1 is already in use "
                        f"(another {comp.name} or an earlier stack still running?)"
                    )
        started: dict[str, asyncio.Task[None]] = {}
        try:
            await self._start_in_order(started)
        except BaseException:
            for task in started.values():
                task.cancel()
            await asyncio.gather(*started.values(), return_exceptions=True)
            raise
        for name in started:
            self._monitors.append(asyncio.create_task(self._monitor(self.components[name])))

    async def _start_in_order(self, started: dict[str, asyncio.Task[None]]) -> None:
        pending = dict(self.components)
        began = time.monotonic()
        while True:
            runnable = [c for c in pending.values() if all(d in self._ready for d in c.depends_on)]
            for comp in runnable:
                started[comp.name] = asyncio.create_task(self._start_one(comp), name=comp.name)
                del pending[comp.name]
            waiting = [t for t in started.values() if not t.done()]
            if not waiting:
                if pending:
                    raise StackError(f"{', '.join(pending)}: dependencies never became ready")
                return
            done, _ = await asyncio.wait(
                waiting, timeout=self.progress_every, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                names = ", ".join(sorted(t.get_name() for t in waiting))
                say(f"  ... {time.monotonic() - began:.0f}s: still starting {names} (logs in {self.log_dir})")
            for task in done:
                task.result()  # re-raises the first StackError

    async def _start_one(self, comp: Component) -> None:
        began = time.monotonic()
        if comp.prepare is not None:
            try:
                await comp.prepare()
            except StackError:
                raise
            except Exception as exc:
                raise StackError(f"{comp.name}: preparation failed: {exc}") from exc
        await self._spawn(comp)
        await self._wait_ready(comp, began)
        if comp.after_ready is not None:
            try:
                await comp.after_ready()
            except Exception as exc:
                raise StackError(f"{comp.name}: bootstrap after start failed: {exc}") from exc
        self._ready.add(comp.name)
        elapsed = time.monotonic() - began
        pid = comp.process.pid if comp.process else "?"
        where = f", {comp.describe}" if comp.describe else ""
        say(f"  {comp.name:<10} ready in {elapsed:5.1f}s  (pid {pid}{where})")

    async def _spawn(self, comp: Component) -> None:
        argv = list(comp.argv())
        log_path = self.log_dir / f"{comp.name}.log"
        log = log_path.open("ab")
        env = {**os.environ, **comp.env()}
        # Let components cache bytecode even where the shell forbids it: the workflow sandbox
        # imports the workflow module afresh for every new run and would compile it from source.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            comp.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=comp.cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as exc:
            raise StackError(f"{comp.name}: {argv[0]} not found (run `make setup`)") from exc
        finally:
            log.close()
        (self.run_dir / f"{comp.name}.pid").write_text(str(comp.process.pid))

    async def _wait_ready(self, comp: Component, began: float, *, again: bool = False) -> None:
        check = comp.live if again and comp.live is not None else comp.ready
        deadline = began + comp.ready_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            proc = comp.process
            if proc is not None and proc.returncode is not None:
                raise StackError(
                    f"{comp.name}: exited with code {proc.returncode} while starting "
                    f"(see {self.log_dir / (comp.name + '.log')}: {self._tail(comp)})"
                )
            try:
                await asyncio.wait_for(check(), timeout=comp.check_timeout)
                return
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last_error = f"{type(exc).__name__}: {exc}".strip()[:200]
            await asyncio.sleep(0.25)
        raise StackError(f"{comp.name}: not ready within {comp.ready_timeout:g}s (last check: {last_error})")

    def _tail(self, comp: Component) -> str:
        last = log_tail(self.log_dir / f"{comp.name}.log", 1)
        return last[0][-200:] if last else "empty log"

    # -- keep running ----------------------------------------------------------------------
    async def _monitor(self, comp: Component) -> None:
        """Restart a component that dies after it was ready (a crashed or killed worker comes back)."""
        backoff = 1.0
        while not self._stopping:
            proc = comp.process
            assert proc is not None
            code = await proc.wait()
            if self._stopping:
                return
            # What the process started is in its process group (its own session): a child left
            # behind (a Lambda emulator's runtime, Flink's Python) would meet the new one.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            comp.restarts += 1
            say(f"  {comp.name:<10} exited with code {code}; restarting in {backoff:.0f}s")
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            try:
                began = time.monotonic()
                await self._spawn(comp)
                await self._wait_ready(comp, began, again=True)
                say(f"  {comp.name:<10} back after restart in {time.monotonic() - began:.1f}s")
                backoff = 1.0
            except StackError as exc:
                say(f"  {exc}")
                backoff = min(backoff * 2, 30.0)

    # -- stop ------------------------------------------------------------------------------
    async def stop_all(self) -> None:
        self._stopping = True
        for task in self._monitors:
            task.cancel()
        for layer in self._stop_layers():
            await asyncio.gather(*(self._stop_one(self.components[name]) for name in layer))

    def _stop_layers(self) -> list[list[str]]:
        """Dependents before what they depend on; components of one layer stop concurrently."""
        depth: dict[str, int] = {}

        def level(name: str) -> int:
            if name not in depth:
                deps = self.components[name].depends_on
                depth[name] = 1 + max((level(d) for d in deps), default=-1)
            return depth[name]

        for name in self.components:
            level(name)
        top = max(depth.values(), default=-1)
        return [sorted(n for n, d in depth.items() if d == lvl) for lvl in range(top, -1, -1)]

    def _stop_order(self) -> list[str]:
        return [name for layer in self._stop_layers() for name in layer]

    async def _stop_one(self, comp: Component) -> None:
        began = time.monotonic()
        proc = comp.process
        (self.run_dir / f"{comp.name}.pid").unlink(missing_ok=True)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, comp.stop_signal)
        try:
            await asyncio.wait_for(proc.wait(), comp.stop_timeout)
        except TimeoutError:
            say(f"  {comp.name:<10} did not stop within {comp.stop_timeout:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Anything the component left in its process group goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        say(f"  {comp.name:<10} stopped in {time.monotonic() - began:.1f}s")


async def run_until_signal(supervisor: Supervisor, *, on_ready: Callable[[], None], ready_file: Path) -> int:
    """Start the stack, call on_ready, then wait for SIGINT/SIGTERM and stop it. Returns an exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(supervisor.start_all())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if starting in done:
        try:
            starting.result()
        except StackError as exc:
            say(f"stack failed: {exc}")
            code = 1
        else:
            ready_file.write_text(str(os.getpid()))
            on_ready()
            await stopper
    else:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StackError):
            await starting
        code = 130
    ready_file.unlink(missing_ok=True)
    say("stopping the stack ...")
    await supervisor.stop_all()
    say("stack stopped")
    sys.stdout.flush()
    return code

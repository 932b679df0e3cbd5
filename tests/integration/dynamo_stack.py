"""Integration helpers: moto's DynamoDB server and a second API process that keeps patients in it.

The second API shares everything else (PostgreSQL for users and audit, Temporal, Kafka) with the
running local stack; only HC_PATIENT_STORE and HC_DYNAMODB_ENDPOINT_URL differ.

Start processes from the main thread (a sync fixture), never from a worker thread: the kernel's
parent-death signal fires when the *thread* that forked exits, not only the process.

    with dynamo_stack() as stack:
        httpx.get(f"{stack.api_url}/healthz")
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.paths import REPO, VENV_BIN, Paths
from devstack.supervisor import PR_SET_PDEATHSIG, port_in_use
from healthcare.settings import Settings, get_settings
from healthcare.stores.patients_dynamo import ensure_table
from tests.waiting import eventually_sync

HOST = "127.0.0.1"
# Resolved here, before any fork: the child of a threaded parent must not load libraries.
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl


@dataclass(frozen=True)
class DynamoStack:
    api: subprocess.Popen[bytes]
    moto: subprocess.Popen[bytes]
    api_port: int
    moto_port: int

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def moto_url(self) -> str:
        return f"http://{HOST}:{self.moto_port}"


def _log_path(name: str) -> Path:
    logs = Paths.from_settings(get_settings()).logs
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name}.log"  # appended to, run after run, like the stack's own logs


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the kernel's SIGTERM when the test process dies
        if os.getppid() != parent:  # it died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _spawn(argv: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest only; stop_processes ends these
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 (only a pre-resolved prctl runs)
        )


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_http(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    ready: Callable[[httpx.Response], bool],
    timeout: float,
    log_path: Path,
) -> None:

    def answers() -> bool:
        if proc.poll() is not None:  # fails at once
            raise RuntimeError(f"{url}: exited with {proc.returncode}; {log_path}:\n{_tail(log_path)}")
        try:
            return ready(httpx.get(url, timeout=2))
        except httpx.TransportError as not_yet:
            raise AssertionError(f"{type(not_yet).__name__}: {not_yet}") from None

    try:
        eventually_sync(answers, timeout=timeout, interval=0.2, what=f"{url} ready")
    except AssertionError as late:
        stop_processes(proc)
        raise RuntimeError(f"{late}; {log_path}:\n{_tail(log_path)}") from None


def _require_free(port: int) -> None:
    # Otherwise the readiness check could be answered by someone else's server on that port.
    if port_in_use(port):
        raise RuntimeError(f"port {port} on {HOST} is already in use")


def start_moto_server(port: int, *, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """moto's server mode on 127.0.0.1:port (in-memory: its data dies with the process)."""
    _require_free(port)
    log_path = _log_path("test-moto")
    proc = _spawn(
        [str(VENV_BIN / "python"), "-m", "moto.server", "-H", HOST, "-p", str(port)], log_path=log_path
    )
    _wait_http(
        proc, f"http://{HOST}:{port}/moto-api/", ready=lambda _: True, timeout=timeout, log_path=log_path
    )
    return proc


def start_api(
    port: int, env: dict[str, str], *, log_name: str, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """Another API process on 127.0.0.1:port, configured like the stack's but for `env`."""
    _require_free(port)
    log_path = _log_path(log_name)
    argv = [
        str(VENV_BIN / "uvicorn"),
        "--factory",
        "api.main:app_factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",  # like the stack's API: query strings (?q=<name>) stay out of logs
        "--no-proxy-headers",  # like the stack's API: the app decides whom to believe (api/proxies.py)
    ]
    proc = _spawn(argv, log_path=log_path, env={**env, "HC_API_PORT": str(port)})
    _wait_http(
        proc,
        f"http://{HOST}:{port}/healthz",
        ready=lambda r: r.status_code == 200,
        timeout=timeout,
        log_path=log_path,
    )
    return proc


def start_dynamo_api(port: int, moto_port: int, *, timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """A second API on 127.0.0.1:port whose patient store is DynamoDB at moto_port."""
    endpoint = f"http://{HOST}:{moto_port}"
    ensure_table(Settings(patient_store="dynamodb", dynamodb_endpoint_url=endpoint))
    env = {"HC_PATIENT_STORE": "dynamodb", "HC_DYNAMODB_ENDPOINT_URL": endpoint}
    return start_api(port, env, log_name="test-dynamo-api", timeout=timeout)


def stop_processes(*procs: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM each, wait for all; SIGKILL whatever is still alive after `timeout` seconds."""
    alive = [p for p in procs if p is not None and p.poll() is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in alive:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def dynamo_stack(api_port: int | None = None, moto_port: int | None = None) -> Iterator[DynamoStack]:
    """moto plus the second API for the duration of the block; both stopped however it ends."""
    # The profile's ports (tests/unit/test_profiles.py keeps them apart from every stack's).
    moto_port = moto_port or get_settings().stack_port("moto")
    api_port = api_port or get_settings().stack_port("dynamo_api")
    moto: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    try:
        moto = start_moto_server(moto_port)
        api = start_dynamo_api(api_port, moto_port)
        yield DynamoStack(api=api, moto=moto, api_port=api_port, moto_port=moto_port)
    finally:
        stop_processes(api, moto)  # the API first: it talks to moto until it stops


@dataclass(frozen=True)
class OtherApi:
    url: str
    pid: int


@contextlib.contextmanager
def another_api(env: dict[str, str], *, log_name: str) -> Iterator[OtherApi]:
    """An API process of its own (same stack, settings changed by `env`) for the block."""
    port = get_settings().stack_port("it_api")  # one such API at a time
    proc = start_api(port, env, log_name=log_name)
    try:
        yield OtherApi(f"http://{HOST}:{port}", proc.pid)
    finally:
        stop_processes(proc)

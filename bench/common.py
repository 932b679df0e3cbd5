"""Load-generation helpers shared by the benchmarks (loopback only, bounded in time and count)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from healthcare.settings import get_settings

PASSWORD = "bench-password-123"


def require_own_stack() -> None:
    """Benchmarks load a stack of their own (`make bench`), never the one a developer works with."""
    if get_settings().profile == "dev":
        raise SystemExit("benchmarks run on the bench stack: `make bench` (or HC_PROFILE=bench with it up)")


def base_url() -> str:
    require_own_stack()
    s = get_settings()
    assert s.api_host in ("127.0.0.1", "localhost", "::1"), "benchmarks only target loopback"
    return f"http://{s.api_host}:{s.api_port}"


@dataclass
class Run:
    name: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(p / 100 * len(data)))]

    def line(self) -> str:
        errs = f" errors={self.errors}" if self.errors else ""
        return (
            f"{self.name:<38} {self.ok:>6} ok  {self.rate:8.1f}/s  "
            f"p50 {self.pct(50):7.1f} ms  p99 {self.pct(99):7.1f} ms{errs}"
        )


async def load(
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    concurrency: int,
    seconds: float,
    max_requests: int = 100_000,
    ok_status: tuple[int, ...] = (200, 201),
) -> Run:
    """`concurrency` workers call `call(i)` until `seconds` pass or `max_requests` were sent.
    An HTTP response counts by its status; any other result (bench.bare's Temporal calls) is ok."""
    run = Run(name, seconds)
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            began = time.perf_counter()
            try:
                resp = await call(i)
                status = resp.status_code if isinstance(resp, httpx.Response) else ok_status[0]
            except httpx.HTTPError:
                status = -1
            if status in ok_status:
                run.latencies_ms.append((time.perf_counter() - began) * 1000)
            else:
                run.errors[status] = run.errors.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - began
    return run


async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    """Registers a throwaway admin through the CLI's code path and logs in."""
    from healthcare.db import create_engine, session_factory
    from healthcare.models import Role
    from services.users import create_user

    settings = get_settings()
    email = f"bench-admin-{uuid.uuid4().hex[:10]}@clinic.example.com"
    engine = create_engine(settings)
    async with session_factory(engine)() as session:
        await create_user(session, email=email, password=PASSWORD, role=Role.admin, settings=settings)
        await session.commit()
    await engine.dispose()
    resp = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    resp.raise_for_status()
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


async def staff_token() -> str:
    """A token of a throwaway staff account made in the database (the websocket relay checks that
    the token's account exists and is active)."""
    from healthcare.db import create_engine, session_factory
    from healthcare.models import Role
    from healthcare.security import issue_token
    from services.users import create_user

    settings = get_settings()
    email = f"bench-staff-{uuid.uuid4().hex[:10]}@clinic.example.com"
    engine = create_engine(settings)
    async with session_factory(engine)() as session:
        user = await create_user(session, email=email, password=PASSWORD, role=Role.staff, settings=settings)
        await session.commit()
    await engine.dispose()
    return issue_token(user_id=user.id, role="staff", settings=settings)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- CPU per component ---------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process and of its reaped children, from /proc/<pid>/stat
    (PostgreSQL's backends come and go; their time moves to the postmaster when they exit)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / _TICK


def _trees() -> tuple[dict[int, tuple[int, float]], dict[int, list[int]]]:
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    stats = {pid: s for pid in pids if (s := _stat(pid))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    return stats, children


def _tree(root: int, stats: dict[int, tuple[int, float]], children: dict[int, list[int]]) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def component_pids() -> dict[str, list[int]]:
    """Every process of each running stack component (its root from `.state/run/*.pid`, and the
    processes under it, e.g. the Flink job's JVM), keyed by component name."""
    stats, children = _trees()
    result: dict[str, list[int]] = {}
    for pidfile in sorted((get_settings().state_dir / "run").glob("*.pid")):
        if pidfile.stem == "stack":
            continue
        try:
            root = int(pidfile.read_text().strip())
        except ValueError:
            continue
        result[pidfile.stem] = _tree(root, stats, children)
    return result


def component_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each running stack component, children included."""
    stats, _ = _trees()
    return {name: sum(stats[p][1] for p in pids if p in stats) for name, pids in component_pids().items()}


def _rollup(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup in bytes; empty once gone or where the kernel lacks it."""
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0]) * 1024
    except (OSError, IndexError, ValueError):
        return {}
    return fields


def rss_bytes(pid: int) -> int:
    """Proportional resident memory (PSS) of one process: pages shared between processes (such as
    PostgreSQL's shared buffers) are split between them instead of counted in each. 0 once gone."""
    if (pss := _rollup(pid).get("Pss")) is not None:
        return pss
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def component_memory() -> dict[str, tuple[int, int]]:
    """(PSS, of which file-backed) in bytes of each running stack component, children included.
    The file-backed part (`Pss_File`: binaries, libraries, and files a process maps, such as
    Kafka's index files) is page cache that the kernel takes back under pressure and reads again
    from disk; the rest (anonymous and shared memory) is what the component holds."""
    result: dict[str, tuple[int, int]] = {}
    for name, pids in component_pids().items():
        pss = file_backed = 0
        for pid in pids:
            rollup = _rollup(pid)  # read once for both figures
            pss += rollup["Pss"] if "Pss" in rollup else rss_bytes(pid)
            file_backed += rollup.get("Pss_File", 0)
        result[name] = (pss, file_backed)
    return result


def process_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by one process and every process under it."""
    stats, children = _trees()
    return sum(stats[p][1] for p in _tree(root, stats, children))


def cpu_used(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
    """Milliseconds of CPU per item for each component, between two `component_cpu_seconds()`."""
    return {name: (after[name] - before.get(name, 0.0)) * 1000 / max(items, 1) for name in after}


def cpu_per_item(before: dict[str, float], after: dict[str, float], items: int) -> str:
    """One line: milliseconds of CPU per item for each component that used any, busiest first."""
    used = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    parts = [f"{name} {sec * 1000 / items:.1f}" for name, sec in sorted(used.items(), key=lambda kv: -kv[1])]
    total = sum(used.values()) * 1000 / max(items, 1)
    return f"CPU ms per item: total {total:.1f} = " + ", ".join(p for p in parts if not p.endswith(" 0.0"))


@contextlib.contextmanager
def billing_consumer_frozen(frozen: bool = True) -> Iterator[None]:
    """Freeze the local stack's billing consumer (SIGSTOP) meanwhile, then let it go on (SIGCONT);
    what it did not read in between stays in Kafka and is billed afterwards."""
    pid = int((get_settings().state_dir / "run" / "consumer.pid").read_text()) if frozen else None
    if pid:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)

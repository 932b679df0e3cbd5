"""/healthz and /readyz on the running API: ready with all up, 503 naming a stopped dependency."""

import contextlib
import os
import signal

import httpx

from devstack.paths import Paths
from tests.waiting import eventually


async def _wait_for(api: httpx.AsyncClient, want: int, seconds: float) -> httpx.Response:

    async def answers() -> httpx.Response:
        resp = await api.get("/readyz")
        assert resp.status_code == want, resp.text
        return resp

    return await eventually(answers, timeout=seconds, interval=0.5, what=f"/readyz answering {want}")


async def test_healthz(api: httpx.AsyncClient) -> None:
    resp = await api.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert resp.headers["x-request-id"]


async def test_readyz_all_up(api: httpx.AsyncClient) -> None:
    resp = await _wait_for(api, 200, 30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {
        "postgres": "ok",
        "temporal": "ok",
        "kafka": "ok",
        "s3": "ok",
        "lambda": "ok",
    }


async def test_readyz_names_a_paused_dependency(api: httpx.AsyncClient, paths: Paths) -> None:
    """Freeze the storage server: /readyz must answer 503 naming only `s3`, then recover."""
    pid = int((paths.run / "s3.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        resp = await _wait_for(api, 503, 30)  # once the cached answer (HC_READY_CACHE_SECONDS) is stale
    finally:
        os.kill(pid, signal.SIGCONT)
    assert resp.status_code == 503
    body = resp.json()
    assert body["failing"] == ["s3"]
    assert "s3" in body["detail"]
    assert (await _wait_for(api, 200, 30)).status_code == 200


async def test_readyz_names_a_killed_dependency_until_it_is_restarted(
    api: httpx.AsyncClient, paths: Paths
) -> None:
    """Kill the Lambda (its front door and the emulators behind it): 503 naming `lambda`, and ready
    again once the stack restarts it. Down for seconds, longer than /readyz caches an answer."""
    # The supervisor restarts a killed process within a second, sooner than a cached answer goes
    # stale on a quiet machine: kill whatever runs again until /readyz has seen it down (bounded).

    async def seen_down() -> httpx.Response:
        for pid_file in sorted(paths.run.glob("lambda*.pid")):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        resp = await api.get("/readyz")
        assert resp.status_code == 503, resp.text
        return resp

    resp = await eventually(seen_down, timeout=30, interval=0.5, what="/readyz seeing the Lambda down")
    assert resp.json()["failing"] == ["lambda"]
    assert (await _wait_for(api, 200, 60)).status_code == 200

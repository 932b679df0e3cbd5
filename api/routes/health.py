"""Liveness (/healthz) and readiness (/readyz): one real call to each dependency, a few seconds at most."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from healthcare import probes

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not ready"}})
async def readyz(request: Request) -> JSONResponse:
    """Each dependency checked; the answer may be up to HC_READY_CACHE_SECONDS old (`ageSeconds`)."""
    readiness: probes.Readiness = request.app.state.readiness
    results, age = await readiness.check()
    failing = [r.name for r in results if not r.ok]
    body: dict[str, Any] = {
        "status": "ready" if not failing else "not ready",
        "failing": failing,
        "checks": {r.name: r.detail for r in results},
        "ageSeconds": round(age, 3),
    }
    if failing:
        body["detail"] = f"not ready: {', '.join(failing)}"
    return JSONResponse(body, status_code=503 if failing else 200)

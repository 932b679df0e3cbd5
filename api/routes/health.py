"""Liveness (/healthz) and readiness (/readyz): readiness makes one real call to each dependency."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import EngineDep, LambdaDep, S3Dep, SettingsDep, TemporalDep
from healthcare import probes

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not ready"}})
async def readyz(
    settings: SettingsDep, engine: EngineDep, temporal: TemporalDep, s3: S3Dep, lam: LambdaDep
) -> JSONResponse:
    results = await probes.run_probes(
        {
            "postgres": lambda: probes.probe_postgres(engine),
            "temporal": lambda: probes.probe_temporal(temporal, settings.temporal_namespace),
            "kafka": lambda: probes.probe_kafka(settings),
            "s3": lambda: probes.probe_s3(s3, settings.s3_bucket),
            "lambda": lambda: probes.probe_lambda(lam, settings.lambda_function_name),
        },
        timeout=settings.ready_timeout_seconds,
    )
    failing = [r.name for r in results if not r.ok]
    body = {
        "status": "ready" if not failing else "not ready",
        "failing": failing,
        "checks": {r.name: r.detail for r in results},
    }
    if failing:
        body["detail"] = f"not ready: {', '.join(failing)}"
    return JSONResponse(body, status_code=503 if failing else 200)

"""Diagnostics activities: prove that a worker can reach its dependencies."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from healthcare.contracts.diagnostics import DatabaseCheckInput, DatabaseCheckResult


class DiagnosticsActivities:
    def __init__(self, *, engine: AsyncEngine) -> None:
        self._engine = engine

    @activity.defn(name="diagnostics.check_database")
    async def check_database(self, data: DatabaseCheckInput) -> DatabaseCheckResult:
        async with self._engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
        return DatabaseCheckResult(
            probe=data.probe,
            server_version=str(version),
            workflow_id=activity.info().workflow_id or "",
        )

"""A small end-to-end check: a workflow whose activity, run by a real worker, queries the database."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from healthcare.contracts.diagnostics import (
        DatabaseCheckInput,
        DatabaseCheckResult,
        DiagnosticsInput,
        DiagnosticsResult,
    )


@workflow.defn(name="Diagnostics")
class DiagnosticsWorkflow:
    @workflow.run
    async def run(self, data: DiagnosticsInput) -> DiagnosticsResult:
        result: DatabaseCheckResult = await workflow.execute_activity(
            "diagnostics.check_database",
            DatabaseCheckInput(probe=data.probe),
            result_type=DatabaseCheckResult,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1)),
        )
        return DiagnosticsResult(probe=result.probe, server_version=result.server_version)

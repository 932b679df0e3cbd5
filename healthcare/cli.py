"""The `healthcare` command: one entry point for every role of the image and for operator tasks."""

from __future__ import annotations

import asyncio
import uuid
from enum import StrEnum

import typer

from healthcare.logging import configure_logging
from healthcare.settings import get_settings

app = typer.Typer(help="Healthcare operations platform.", no_args_is_help=True, add_completion=False)


class Role(StrEnum):
    api = "api"
    worker = "worker"


@app.command()
def serve(role: Role = typer.Argument(..., help="Which process this container runs.")) -> None:
    """Run one role of the platform (the container image's entry point)."""
    settings = get_settings()
    if role is Role.api:
        import uvicorn

        uvicorn.run(
            "api.main:app_factory",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,
            proxy_headers=True,
        )
    elif role is Role.worker:
        from workers.temporal_worker import main as worker_main

        worker_main()


@app.command()
def migrate(revision: str = typer.Option("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply database migrations."""
    from healthcare.migrate import upgrade

    configure_logging(get_settings().log_level, json=False)
    upgrade(revision)
    typer.echo(f"database at {revision}")


@app.command()
def diagnostics(
    timeout: float = typer.Option(20.0, help="Seconds to wait for the workflow."),
) -> None:
    """Run the Diagnostics workflow end to end: Temporal, a live worker, and the database."""
    from healthcare.clients import temporal_client
    from workflows.diagnostics import DiagnosticsInput, DiagnosticsResult, DiagnosticsWorkflow

    settings = get_settings()

    async def _run() -> DiagnosticsResult:
        client = await temporal_client(settings)
        probe = uuid.uuid4().hex[:12]
        return await asyncio.wait_for(
            client.execute_workflow(
                DiagnosticsWorkflow.run,
                DiagnosticsInput(probe=probe),
                id=f"diagnostics-{probe}",
                task_queue=settings.temporal_task_queue,
            ),
            timeout,
        )

    result = asyncio.run(_run())
    typer.echo(f"ok: worker reached PostgreSQL {result.server_version}")


if __name__ == "__main__":
    app()

"""The `healthcare` command: one entry point for every role of the image and for operator tasks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

import typer

from healthcare.logging import configure_logging
from healthcare.settings import get_settings
from ops.billing_cli import billing_app

T = TypeVar("T")

app = typer.Typer(
    help="Healthcare operations platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class ProcessRole(StrEnum):
    """Which long-running process a container runs (not a user's Role)."""

    api = "api"
    worker = "worker"
    consumer = "consumer"
    relay = "relay"
    analytics = "analytics"
    codec = "codec"


@app.command()
def serve(role: ProcessRole = typer.Argument(..., help="Which process this container runs.")) -> None:
    """Run one role of the platform (the container image's entry point)."""
    settings = get_settings()
    if role is ProcessRole.api:
        import uvicorn

        uvicorn.run(
            "api.main:app_factory",
            factory=True,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,
            # X-Forwarded-For is read by the app itself, from HC_TRUSTED_PROXIES only (api/proxies.py).
            proxy_headers=False,
        )
    elif role is ProcessRole.worker:
        from workers.temporal_worker import main as worker_main

        worker_main()
    elif role is ProcessRole.consumer:
        from workers.billing_consumer import main as consumer_main

        consumer_main()
    elif role is ProcessRole.relay:
        from workers.ws_relay import main as relay_main

        relay_main()
    elif role is ProcessRole.analytics:
        from analytics_flink.__main__ import main as analytics_main

        analytics_main(["run"])
    elif role is ProcessRole.codec:
        import uvicorn

        # The Temporal UI's codec server (api/codec_server.py): its own port, so it can be exposed
        # to operators without the API, and the API without it.
        uvicorn.run(
            "api.codec_server:app_factory",
            factory=True,
            host=settings.codec_host,
            port=settings.codec_port,
            log_config=None,
            access_log=False,
            proxy_headers=True,
        )


@app.command()
def migrate(revision: str = typer.Option("head", help="Alembic revision to upgrade to.")) -> None:
    """Apply database migrations as the owner role (HC_DATABASE_OWNER_URL, or HC_DATABASE_URL with
    HC_DATABASE_APP_ROLE naming the app role)."""
    from sqlalchemy.engine import make_url

    from healthcare.migrate import upgrade

    settings = get_settings()
    configure_logging(settings.log_level, json=False)
    if settings.env == "production" and make_url(settings.owner_database_url).username == settings.app_role:
        # Migrating as the app role would leave it owning the schema (and the audit trail).
        typer.echo(
            "migrations run as the owner role and grant the app role its privileges: set "
            "HC_DATABASE_APP_ROLE (the role the application connects as) or HC_DATABASE_OWNER_URL",
            err=True,
        )
        raise typer.Exit(2)
    upgrade(revision)
    typer.echo(f"database at {revision}")


@app.command()
def diagnostics(
    timeout: float = typer.Option(20.0, help="Seconds to wait for the workflow."),
) -> None:
    """Run the Diagnostics workflow end to end: Temporal, a live worker, and the database."""
    from healthcare.clients import temporal_client
    from healthcare.contracts.diagnostics import DiagnosticsInput, DiagnosticsResult
    from workflows.diagnostics import DiagnosticsWorkflow

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


@app.command("create-admin")
def create_admin(
    email: str = typer.Option(..., help="The admin's email (login)."),
    password: str = typer.Option(..., prompt=True, hide_input=True, help="At least 10 characters."),
) -> None:
    """Create the first admin (or another one). Refuses an email that is already taken."""
    from pydantic import ValidationError

    from healthcare import errors
    from healthcare.db import create_engine, session_factory
    from healthcare.models import Role
    from healthcare.schemas import UserCreate
    from services.context import RequestContext
    from services.users import add_user

    settings = get_settings()
    try:
        body = UserCreate(email=email, password=password, role=Role.admin)
    except ValidationError as exc:
        typer.echo(f"invalid input: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(2) from exc

    async def _run() -> str:
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                user = await add_user(
                    session,
                    RequestContext(
                        actor=None,
                        client_ip="cli",
                        request_id=None,
                        audit_key=settings.audit_hmac_key.get_secret_value().encode(),
                    ),
                    email=body.email,
                    password=body.password,
                    role=Role.admin,
                    settings=settings,
                    actor_role="cli",
                )
                return str(user.id)
        finally:
            await engine.dispose()

    try:
        user_id = asyncio.run(_run())
    except errors.Conflict as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"admin {body.email} created (id {user_id})")


audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    anchored: bool = typer.Option(
        True, "--anchored/--no-anchor", help="Compare the chain with the newest anchor in object storage."
    ),
) -> None:
    """Recompute the keyed audit chain and compare it with the newest anchor (the head last written to
    object storage); exit 1 and name the first bad or missing record if it was tampered with."""
    from healthcare import clients
    from healthcare.db import create_engine, session_factory
    from services.audit import VerifyResult, latest_anchor, verify

    settings = get_settings()
    key = settings.audit_hmac_key.get_secret_value().encode()

    async def _run() -> VerifyResult:
        anchor = None
        if anchored:
            anchor = await latest_anchor(
                clients.s3_client(settings),
                bucket=settings.s3_bucket,
                prefix=settings.audit_anchor_prefix,
                key=key,
            )
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                return await verify(session, key=key, anchor=anchor)
        finally:
            await engine.dispose()

    result = asyncio.run(_run())
    if result.ok:
        where = f"; anchored at record {result.anchored_seq}" if result.anchored_seq else "; no anchor yet"
        typer.echo(f"ok: {result.checked} audit records, chain intact{where if anchored else ''}")
        return
    at = f"record {result.first_bad_seq}: " if result.first_bad_seq is not None else ""
    typer.echo(f"TAMPERED: {at}{result.reason} ({result.checked} good before it)")
    raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor() -> None:
    """Write the chain's head to object storage now (the worker does it every
    HC_AUDIT_ANCHOR_INTERVAL_SECONDS)."""
    from healthcare import clients
    from healthcare.db import create_engine, session_factory
    from services.audit import Anchor, write_anchor

    settings = get_settings()

    async def _run() -> Anchor | None:
        engine = create_engine(settings)
        try:
            async with session_factory(engine)() as session:
                return await write_anchor(
                    session,
                    clients.s3_client(settings),
                    bucket=settings.s3_bucket,
                    prefix=settings.audit_anchor_prefix,
                    key=settings.audit_hmac_key.get_secret_value().encode(),
                )
        finally:
            await engine.dispose()

    anchor = asyncio.run(_run())
    if anchor is None:
        typer.echo("the audit trail is empty: nothing to anchor")
        return
    typer.echo(f"anchored record {anchor.seq} at {anchor.at.isoformat()}")


app.add_typer(billing_app, name="billing")


@app.command("payload-key")
def payload_key(key_id: str = typer.Argument(..., help="Its id, e.g. prod-2027-01.")) -> None:
    """Print a new AES-256 payload key as `id:base64key`, to add to HC_PAYLOAD_KEYS.

    Rotation: add the new key to HC_PAYLOAD_KEYS everywhere (every key decrypts), then set
    HC_PAYLOAD_KEY_ID to it (it encrypts from then on); keep the old key while histories written
    under it are retained."""
    from healthcare.codec import Keyring, generate_key

    line = f"{key_id}:{generate_key()}"
    try:
        Keyring.parse(line, key_id)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    typer.echo(line)


outbox_app = typer.Typer(
    help="The transactional outbox: events waiting to reach Kafka.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")


def _with_engine(work: Callable[[Any], Awaitable[T]]) -> T:
    from healthcare.db import create_engine

    async def _run() -> T:
        engine = create_engine(get_settings())
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(_run())


@outbox_app.command("list")
def outbox_list(limit: int = typer.Option(100, min=1, help="Parked rows to show at most.")) -> None:
    """What waits to be sent, and every parked row (sent too often without success) with the rows
    held behind it. Exit 1 when rows are parked."""
    from ops import outbox

    async def work(engine: Any) -> tuple[outbox.OutboxSummary, list[outbox.ParkedRow]]:
        return await outbox.summary(engine), await outbox.parked_rows(engine, limit=limit)

    totals, parked = _with_engine(work)
    for row in parked:
        typer.echo(
            f"parked seq {row.seq} (event {row.event_id}, key {row.key}) for topic {row.topic}: "
            f"{row.attempts} attempts, last {row.last_error}, "
            f"parked {row.parked_at.isoformat(timespec='seconds')}, "
            f"{row.held} later row(s) of its key held"
        )
    typer.echo(
        f"pending: {totals.pending} ({totals.failing} failing, {totals.held} held behind parked rows, oldest "
        f"{totals.oldest_pending_seconds:.0f}s); parked: {totals.parked}"
    )
    if totals.parked:
        raise typer.Exit(1)


@outbox_app.command("requeue")
def outbox_requeue(
    seq: list[int] | None = typer.Argument(None, help="Parked rows to requeue (by seq)."),
    all_: bool = typer.Option(False, "--all", help="Requeue every parked row."),
) -> None:
    """Give parked rows a fresh set of attempts once their cause is fixed (e.g. the topic exists)."""
    from ops import outbox

    if not seq and not all_:
        typer.echo("give row seqs or --all", err=True)
        raise typer.Exit(2)
    requeued = _with_engine(lambda engine: outbox.requeue(engine, None if all_ else seq))
    typer.echo(f"requeued {len(requeued)} row(s): {requeued}")


if __name__ == "__main__":
    app()

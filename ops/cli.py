"""The `healthcare` command: one entry point for every role of the image and for operator tasks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

import typer
from temporalio.client import Client as TemporalClient

from healthcare.logging import configure_logging
from healthcare.settings import get_settings

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


billing_app = typer.Typer(
    help="Billing workflows: replay, reset, restart, reconcile, retry a PDF; the dead-letter topic.",
    no_args_is_help=True,
)
app.add_typer(billing_app, name="billing")


def _with_temporal(work: Callable[[TemporalClient], Awaitable[T]]) -> T:
    from healthcare.clients import temporal_client

    async def _run() -> T:
        return await work(await temporal_client(get_settings()))

    return asyncio.run(_run())


@billing_app.command("replay")
def billing_replay(
    workflow_id: str = typer.Argument(None, help="e.g. billing-<appointmentId>"),
    all_failed: bool = typer.Option(False, "--all-failed", help="Replay every failed billing run."),
) -> None:
    """Replay histories against the current workflow code; non-zero exit on a non-determinism."""
    from ops import billing

    if not workflow_id and not all_failed:
        typer.echo("give a workflow id or --all-failed", err=True)
        raise typer.Exit(2)

    async def work(client: TemporalClient) -> dict[str, tuple[bool, str | None]]:
        if all_failed:
            return await billing.replay_failed(client)
        return {workflow_id: await billing.replay_one(client, workflow_id)}

    results = _with_temporal(work)
    for wid, (ok, error) in results.items():
        typer.echo(f"ok: {wid}" if ok else f"NON-DETERMINISTIC: {wid}: {error}")
    if not results:
        typer.echo("no failed billing runs")
    if not all(ok for ok, _ in results.values()):
        raise typer.Exit(1)


@billing_app.command("reset")
def billing_reset(
    workflow_id: str = typer.Argument(..., help="e.g. billing-<appointmentId>"),
    reason: str = typer.Option(..., help="Why (kept in the workflow history)."),
) -> None:
    """Reset a billing run to just before its last failed activity (else its last completed workflow
    task), so that step runs again on the current code."""
    from ops import billing

    run_id = _with_temporal(lambda c: billing.reset(c, workflow_id, reason=reason))
    typer.echo(f"reset {workflow_id}: new run {run_id}")


@billing_app.command("restart-failed")
def billing_restart_failed() -> None:
    """Reset every failed billing run so it continues on the current code."""
    from ops import billing

    restarted = _with_temporal(billing.restart_failed)
    for wid, run in restarted:
        typer.echo(f"restarted {wid}: new run {run}")
    typer.echo(f"{len(restarted)} billing run(s) restarted")


@billing_app.command("reconcile")
def billing_reconcile(
    fix: bool = typer.Option(False, "--fix", help="Start or signal what is missing."),
    appointment: list[uuid.UUID] | None = typer.Option(
        None, "--appointment", help="Check only this appointment (repeatable)."
    ),
) -> None:
    """Find booked appointments with no billing run, cancellations whose invoice is still open, open
    invoices whose run is not running, and runs that wait for an operator (their PDF failed for
    good: `retry-pdf`); --fix starts or signals the runs as the billing consumer would (a stuck run
    is repaired with `restart-failed`). Without --fix, exit 1 when anything is found."""
    from healthcare.db import create_engine
    from ops import billing

    settings = get_settings()

    async def work(client: TemporalClient) -> billing.Reconciliation:
        engine = create_engine(settings)
        try:
            return await billing.reconcile(client, engine, settings, fix=fix, appointment_ids=appointment)
        finally:
            await engine.dispose()

    report = _with_temporal(work)
    for run in report.needs_attention:
        why = f"{run.failure_type}: {run.message}" if run.failure_type else "(no worker answered the query)"
        since = run.since.isoformat(timespec="seconds") if run.since else "?"
        typer.echo(
            f"needs attention: {run.workflow_id} (invoice {run.invoice_id}, {run.invoice_status}) since "
            f"{since}, {run.retries} retries: {why}; once fixed: "
            f"healthcare billing retry-pdf {run.workflow_id}"
        )
    typer.echo(
        f"appointments without billing: {len(report.missing)}; cancellations not voided: "
        f"{len(report.not_voided)}; open invoices whose run is not running: {len(report.stuck)}; "
        f"runs needing attention: {len(report.needs_attention)}; fixed: {report.fixed}"
    )
    if (report.missing or report.not_voided or report.stuck or report.needs_attention) and not fix:
        raise typer.Exit(1)


@billing_app.command("retry-pdf")
def billing_retry_pdf(
    workflow_id: str = typer.Argument(..., help="A run that needs attention, e.g. billing-<appointmentId>"),
    reason: str | None = typer.Option(None, help="Why it should work now (kept in the workflow history)."),
) -> None:
    """Render the PDF of a billing run that needs attention again, once what made it fail is fixed
    (`billing reconcile` lists those runs and their failures). A retry that fails for good puts the
    run back in NEEDS_ATTENTION."""
    from healthcare import errors
    from services.billing import retry_pdf

    try:
        accepted = _with_temporal(lambda c: retry_pdf(c, workflow_id, reason=reason))
    except (errors.NotFound, errors.Conflict) as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc
    failed = accepted.attention
    typer.echo(
        f"retrying the PDF of {workflow_id} (invoice {accepted.invoice_id}); it had failed with "
        f"{failed.failure_type} since {failed.since.isoformat(timespec='seconds')}"
    )


dlq_app = typer.Typer(
    help="The billing dead-letter topic: events the billing consumer refused for good.", no_args_is_help=True
)
billing_app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(
    all_: bool = typer.Option(False, "--all", help="Also the dead letters already redriven."),
) -> None:
    """List the dead letters waiting for a redrive (oldest first per partition), with why each was
    refused and where it came from. Exit 1 when some are waiting."""
    from collections import Counter

    from ops.dead_letters import list_dead_letters

    listed = asyncio.run(list_dead_letters(get_settings(), waiting_only=not all_))
    for item in listed:
        letter, event = item.letter, item.event
        what = f"{event.event} {event.appointment_id}" if event else "(not an appointment event)"
        state = "waiting" if item.waiting else "redriven"
        typer.echo(
            f"{letter.dlq_partition}:{letter.dlq_offset} {state} "
            f"{letter.parked_at.isoformat(timespec='seconds')} "
            f"{letter.reason.value}: {letter.detail} | {what} from {letter.topic}/{letter.partition}:"
            f"{letter.offset}, redriven {letter.redrives}x"
        )
    waiting = [i for i in listed if i.waiting]
    by_reason = Counter(i.letter.reason.value for i in waiting)
    typer.echo(f"{len(waiting)} dead letter(s) waiting" + (f": {dict(by_reason)}" if by_reason else ""))
    if waiting:
        raise typer.Exit(1)


@dlq_app.command("redrive")
def dlq_redrive(
    limit: int | None = typer.Option(None, min=1, help="Redrive at most this many."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be redriven."),
) -> None:
    """Hand the waiting dead letters to billing again, judged as the consumer judges fresh events:
    accepted ones are done, ones refused for good again are parked again, and a partition stops at
    one refused for now (Temporal or the database down). Safe to repeat. Exit 1 unless every one
    was accepted (or skipped)."""
    from healthcare import clients
    from healthcare.db import create_engine
    from ops.dead_letters import RedriveSummary, list_dead_letters, redrive

    settings = get_settings()
    if dry_run:
        waiting = asyncio.run(list_dead_letters(settings))[:limit]
        for item in waiting:
            what = f"{item.event.event} {item.event.appointment_id}" if item.event else "(not an event)"
            typer.echo(f"would redrive {item.letter.dlq_partition}:{item.letter.dlq_offset} {what}")
        typer.echo(f"{len(waiting)} dead letter(s) would be redriven")
        return

    summary = RedriveSummary()

    async def work(client: TemporalClient) -> None:
        engine = create_engine(settings)
        producer = clients.kafka_producer(settings)
        await producer.start()
        try:
            count = 0
            async for result in redrive(settings, client, engine, producer, limit=limit, summary=summary):
                count += 1
                letter, decision = result.letter, result.decision
                why = f" ({decision.reason.value if decision.reason else ''} {decision.detail})".rstrip()
                typer.echo(
                    f"[{count}] {letter.dlq_partition}:{letter.dlq_offset} {decision.verdict.value}{why}"
                )
        finally:
            await producer.stop()
            await engine.dispose()

    _with_temporal(work)
    outcomes = ", ".join(f"{verdict}: {n}" for verdict, n in sorted(summary.outcomes.items()))
    typer.echo(
        f"redriven: {sum(summary.outcomes.values())} ({outcomes or 'none'}); "
        f"left waiting: {summary.left_waiting}"
    )
    if not summary.clean:
        raise typer.Exit(1)


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

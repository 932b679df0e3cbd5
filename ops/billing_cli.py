"""`healthcare billing ...`: replay, reset, restart and reconcile billing runs, one line per run as it goes.

Bulk commands select runs with the same filters (time range, failure type, workflow type, limit),
print a line per run with a running count, end with a summary, and exit with a code a script can
act on. Histories are decrypted with the configured payload keys (HC_PAYLOAD_KEYS).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowHistory

from healthcare.contracts.billing import WORKFLOW_TYPE
from healthcare.settings import get_settings
from ops.replay import Replayable, ReplayOutcome
from ops.runs import RunFilter, cause

T = TypeVar("T")
P = ParamSpec("P")

# Exit codes: 0 all good; 1 something an operator must act on (non-determinism, a failed restart,
# findings left unfixed); 2 bad usage; 3 some runs could not be judged (undecryptable or unfetchable).
EXIT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNJUDGED = 3

billing_app = typer.Typer(
    help="Billing workflows: replay, reset, restart, reconcile, retry a PDF; the dead-letter topic.",
    no_args_is_help=True,
)

SINCE = typer.Option(None, "--since", help="Only runs started at or after this ISO time (UTC if no offset).")
UNTIL = typer.Option(None, "--until", help="Only runs started before this ISO time.")
FAILURE_TYPE = typer.Option(
    None, "--failure-type", help="Only runs that failed with this type, e.g. InvoicePdfRejected (repeatable)."
)
LIMIT = typer.Option(None, "--limit", min=1, help="At most this many runs.")
CONCURRENCY = typer.Option(8, "--concurrency", min=1, max=64, help="Histories fetched at once.")


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes an ISO 8601 time, e.g. 2026-12-01T08:00:00+00:00") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filter(
    *,
    status: str | None,
    workflow_type: str = WORKFLOW_TYPE,
    since: str | None,
    until: str | None,
    failure_types: list[str] | None,
    limit: int | None,
    workflow_ids: tuple[str, ...] = (),
) -> RunFilter:
    return RunFilter(
        workflow_type=workflow_type,
        status=status,
        since=_time(since, "--since"),
        until=_time(until, "--until"),
        failure_types=frozenset(failure_types or ()),
        limit=limit,
        workflow_ids=workflow_ids,
    )


def exits_without_teardown(command: Callable[P, None]) -> Callable[P, None]:
    """End a command that used a Temporal client with os._exit once its output is flushed.

    The SDK's Rust threads can outlive the event loop and abort the interpreter's teardown
    ("PyGILState_Release ... finalizing", temporalio/sdk-python#300), which turns a finished command
    into exit -6: a script would read success as a crash. Skipping teardown keeps the exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        code = 0
        try:
            command(*args, **kwargs)
        except typer.Exit as stop:
            code = stop.exit_code
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    return run


def _with_temporal(work: Callable[[TemporalClient], Awaitable[T]]) -> T:
    from healthcare.clients import temporal_client

    async def _run() -> T:
        return await work(await temporal_client(get_settings()))

    return asyncio.run(_run())


class Progress:
    """`[  12/6602] ...` lines, flushed as they come, and the rate for the summary."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        self.done += 1
        width = len(str(self.total)) if self.total else 1
        of = f"/{self.total}" if self.total is not None else ""
        typer.echo(f"[{self.done:>{width}}{of}] {text}")

    def rate(self) -> str:
        elapsed = time.monotonic() - self.started
        return f"{elapsed:.1f}s, {self.done / elapsed:.1f}/s" if elapsed > 0 else f"{elapsed:.1f}s"


async def _files(paths: list[Path]) -> AsyncIterator[Replayable]:
    for path in paths:
        try:
            history = WorkflowHistory.from_json(path.stem, path.read_text())
        except (OSError, ValueError) as exc:
            yield Replayable(path.stem, "-", None, error=f"cannot read {path}: {exc}")
            continue
        yield Replayable(path.name, history.run_id, history)


async def _by_id(client: TemporalClient, ids: list[str]) -> AsyncIterator[Replayable]:
    from temporalio.service import RPCError

    from ops.runs import failure_type

    for workflow_id in ids:
        try:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        except RPCError as exc:
            yield Replayable(workflow_id, "-", None, error=f"fetch failed: {exc}")
            continue
        yield Replayable(workflow_id, history.run_id, history, failure_type=failure_type(history.events))


def _replay_line(outcome: ReplayOutcome) -> str:
    name = f"{outcome.workflow_id}/{outcome.run_id}"
    failed = f" (failed: {outcome.failure_type})" if outcome.failure_type else ""
    if outcome.verdict == "ok":
        return f"ok                {name}{failed}"
    if outcome.verdict == "non-deterministic":
        return f"NON-DETERMINISTIC {name}{failed}: {outcome.detail}"
    return f"skipped           {name}: {outcome.detail}"


@billing_app.command("replay")
@exits_without_teardown
def billing_replay(
    workflow_ids: list[str] | None = typer.Argument(None, help="Workflow ids, e.g. billing-<appointmentId>."),
    files: list[Path] | None = typer.Option(
        None, "--file", help="A history exported as JSON (Temporal UI: Download, encoded). Repeatable."
    ),
    all_failed: bool = typer.Option(False, "--all-failed", help="Every failed run (with the filters)."),
    every: bool = typer.Option(False, "--all", help="Every run, whatever its status (with the filters)."),
    workflow_type: str = typer.Option(WORKFLOW_TYPE, "--workflow-type", help="Billing or Appointment."),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    failure_types: list[str] | None = FAILURE_TYPE,
    limit: int | None = LIMIT,
    concurrency: int = CONCURRENCY,
) -> None:
    """Replay histories against the current workflow code, on one replayer while the next ones are
    fetched. Exit 1 on a non-determinism, 3 when some history could not be judged."""
    from ops import billing
    from ops.replay import replay_stream

    chosen = sum(bool(x) for x in (workflow_ids, files, all_failed or every))
    if chosen != 1 or (all_failed and every):
        typer.echo("give workflow ids, --file, --all-failed or --all (one of them)", err=True)
        raise typer.Exit(EXIT_USAGE)
    runs = _filter(
        status=None if every else "Failed",
        workflow_type=workflow_type,
        since=since,
        until=until,
        failure_types=failure_types,
        limit=limit,
    )

    async def work(client: TemporalClient | None) -> Counter[str]:
        verdicts: Counter[str] = Counter()
        source: AsyncIterator[Replayable]
        if files:
            progress, source = Progress(len(files)), _files(files)
        elif workflow_ids:
            assert client is not None
            progress, source = Progress(len(workflow_ids)), _by_id(client, workflow_ids)
        else:
            assert client is not None
            from ops.runs import count

            progress = Progress(await count(client, runs))
            source = billing.fetched(client, runs, concurrency=concurrency)
        async for outcome in replay_stream(source):
            verdicts[outcome.verdict] += 1
            progress.line(_replay_line(outcome))
        typer.echo(
            f"replayed {progress.done}: {verdicts['ok']} ok, {verdicts['non-deterministic']} "
            f"non-deterministic, {verdicts['skipped']} skipped ({progress.rate()})"
        )
        return verdicts

    verdicts = asyncio.run(work(None)) if files else _with_temporal(work)
    if not sum(verdicts.values()):
        typer.echo("no runs match")
    if verdicts["non-deterministic"]:
        raise typer.Exit(EXIT_FOUND)
    if verdicts["skipped"]:
        raise typer.Exit(EXIT_UNJUDGED)


@billing_app.command("reset")
@exits_without_teardown
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
@exits_without_teardown
def billing_restart_failed(
    since: str | None = SINCE,
    until: str | None = UNTIL,
    failure_types: list[str] | None = FAILURE_TYPE,
    limit: int | None = LIMIT,
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=32, help="Runs reset at once."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be reset; reset nothing."),
    reason: str = typer.Option("restart-failed", help="Why (kept in each reset run's history)."),
) -> None:
    """Reset every failed billing run (with the filters) so it continues on the current code.
    Exit 1 when some reset failed."""
    from ops import billing
    from ops.runs import count

    runs = _filter(status="Failed", since=since, until=until, failure_types=failure_types, limit=limit)

    async def work(client: TemporalClient) -> Counter[str]:
        tally: Counter[str] = Counter()
        progress = Progress(await count(client, runs))
        async for result in billing.restart_runs(
            client, runs, dry_run=dry_run, concurrency=concurrency, reason=reason
        ):
            kind = f" ({result.failure_type}: {cause(result.failure_type)})" if result.failure_type else ""
            if result.skipped:
                error = result.skipped != billing.ALREADY_RESTARTED
                tally["error" if error else "skipped"] += 1
                verdict = "NOT RESTARTED" if error else "skipped"
                progress.line(f"{verdict} {result.workflow_id}: {result.skipped}")
            elif result.new_run_id is None:
                tally["would restart"] += 1
                progress.line(f"would restart {result.workflow_id}{kind}")
            else:
                tally["restarted"] += 1
                progress.line(f"restarted {result.workflow_id}{kind}: new run {result.new_run_id}")
        done = "would restart" if dry_run else "restarted"
        typer.echo(
            f"{tally[done]} billing run(s) {done}, {tally['skipped']} already restarted, "
            f"{tally['error']} not restarted ({progress.rate()})"
        )
        return tally

    if _with_temporal(work)["error"]:
        raise typer.Exit(EXIT_FOUND)


@billing_app.command("reconcile")
@exits_without_teardown
def billing_reconcile(
    fix: bool = typer.Option(False, "--fix", help="Start or signal what is missing."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --fix: say what it would do, do nothing."),
    appointment: list[uuid.UUID] | None = typer.Option(
        None, "--appointment", help="Check only this appointment (repeatable)."
    ),
    since: str | None = SINCE,
    until: str | None = UNTIL,
    failure_types: list[str] | None = FAILURE_TYPE,
    limit: int | None = LIMIT,
) -> None:
    """Find booked appointments with no billing run, cancellations whose invoice is still open, open
    invoices whose run is not running, and runs that wait for an operator (their PDF failed for
    good: `retry-pdf`); --fix starts or signals the runs as the billing consumer would. Then list
    failed billing runs (the filters apply) with their failure type, so runs failed
    by bad input are told apart from runs failed by a bug (`restart-failed` repairs those).
    Without --fix (or with --dry-run), exit 1 when anything is found."""
    from healthcare.contracts.billing import billing_workflow_id
    from healthcare.db import create_engine
    from ops import billing

    if dry_run and not fix:
        typer.echo("--dry-run goes with --fix", err=True)
        raise typer.Exit(EXIT_USAGE)
    settings = get_settings()
    ids = tuple(billing_workflow_id(a) for a in appointment or ())
    runs = _filter(
        status="Failed", since=since, until=until, failure_types=failure_types, limit=limit, workflow_ids=ids
    )

    async def work(client: TemporalClient) -> tuple[billing.Reconciliation, Counter[str]]:
        engine = create_engine(settings)
        progress = Progress(None)
        try:
            report = await billing.reconcile(
                client,
                engine,
                settings,
                fix=fix,
                dry_run=dry_run,
                appointment_ids=appointment,
                on_finding=progress.line,
            )
        finally:
            await engine.dispose()
        causes: Counter[str] = Counter()
        async for run in billing.latest_failed(client, runs):
            causes[cause(run.failure_type)] += 1
            detail = run.error or f"{run.failure_type} ({cause(run.failure_type)})"
            progress.line(f"FAILED {run.workflow_id}/{run.run_id}: {detail}")
        typer.echo(
            f"appointments without billing: {len(report.missing)}; cancellations not voided: "
            f"{len(report.not_voided)}; open invoices whose run is not running: {len(report.stuck)}; "
            f"runs needing attention: {len(report.needs_attention)}; "
            f"fixed: {report.fixed}; failed runs: {sum(causes.values())} "
            f"(bad input: {causes['bad input']}, bug or outage: {causes['bug or outage']})"
        )
        return report, causes

    report, _ = _with_temporal(work)
    found = report.missing or report.not_voided or report.stuck or report.needs_attention
    if found and (not fix or dry_run):
        raise typer.Exit(EXIT_FOUND)


@billing_app.command("retry-pdf")
@exits_without_teardown
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
        raise typer.Exit(EXIT_FOUND) from exc
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
        raise typer.Exit(EXIT_FOUND)


@dlq_app.command("redrive")
@exits_without_teardown
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
        raise typer.Exit(EXIT_FOUND)

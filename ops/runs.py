"""Which workflow runs a bulk operator command works on, and why a failed run failed.

A `RunFilter` becomes a Temporal visibility query (type, status, time range), plus what visibility
cannot answer: the failure type, read from the run's history (its innermost cause's type, which
stays readable: only messages and stack traces are encrypted). Failure types of our own business
refusals mean the input was bad; anything else (a Python exception type, a timeout, a
non-determinism) points at a bug or an outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowExecution

from healthcare.contracts.billing import (
    DOCTOR_NOT_FOUND,
    INVALID_INVOICE_TRANSITION,
    INVOICE_NOT_FOUND,
    PDF_REJECTED,
    WORKFLOW_TYPE,
)

# Failures a retry can never fix because the request itself was wrong (see healthcare.contracts).
BAD_INPUT = frozenset({PDF_REJECTED, DOCTOR_NOT_FOUND, INVALID_INVOICE_TRANSITION, INVOICE_NOT_FOUND})
STATUSES = ("Running", "Completed", "Failed", "Canceled", "Terminated", "ContinuedAsNew", "TimedOut")


@dataclass(frozen=True)
class RunFilter:
    workflow_type: str = WORKFLOW_TYPE
    status: str | None = "Failed"
    since: datetime | None = None  # runs started at or after
    until: datetime | None = None  # runs started before
    failure_types: frozenset[str] = field(default_factory=frozenset)  # from each history
    limit: int | None = None
    workflow_ids: tuple[str, ...] = ()  # only these workflows

    def query(self) -> str:
        terms = [f'WorkflowType="{self.workflow_type}"']
        if self.workflow_ids:
            terms.append("WorkflowId IN ({})".format(", ".join(f'"{w}"' for w in self.workflow_ids)))
        if self.status:
            terms.append(f'ExecutionStatus="{self.status}"')
        if self.since:
            terms.append(f'StartTime >= "{self.since.isoformat()}"')
        if self.until:
            terms.append(f'StartTime < "{self.until.isoformat()}"')
        return " AND ".join(terms)


async def count(client: TemporalClient, runs: RunFilter) -> int | None:
    """How many runs the visibility query matches (before the failure-type filter and the limit)."""
    try:
        total = (await client.count_workflows(runs.query())).count
    except Exception:  # noqa: BLE001 - a count is only for progress lines; some stores lack it
        return None
    return min(total, runs.limit) if runs.limit is not None and not runs.failure_types else total


async def listed(client: TemporalClient, runs: RunFilter) -> AsyncIterator[WorkflowExecution]:
    """Each matching run, newest first, as visibility lists them (the limit applies later when a
    failure type is asked for, since only the history tells it)."""
    limit = runs.limit if not runs.failure_types else None
    async for execution in client.list_workflows(runs.query(), limit=limit):
        yield execution


def _innermost(failure: Failure) -> Failure:
    while failure.HasField("cause"):
        failure = failure.cause
    return failure


def failure_kind(failure: Failure) -> str:
    """The type of the innermost cause: an ApplicationError's type, else the kind of failure."""
    inner = _innermost(failure)
    if inner.HasField("application_failure_info"):
        return inner.application_failure_info.type or "ApplicationError"
    if inner.HasField("timeout_failure_info"):
        return "Timeout"
    if inner.HasField("canceled_failure_info"):
        return "Canceled"
    if inner.HasField("terminated_failure_info"):
        return "Terminated"
    return inner.WhichOneof("failure_info") or "Unknown"


def failure_type(events: Sequence[HistoryEvent]) -> str | None:
    """Why the run failed, or None when it did not (its history ends otherwise)."""
    for event in reversed(events):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            return failure_kind(event.workflow_execution_failed_event_attributes.failure)
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            return "Timeout"
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            return "Terminated"
    return None


def cause(kind: str | None) -> str:
    """What an operator does next: bad input is fixed in the data, anything else in the code or the
    infrastructure."""
    if kind is None:
        return "-"
    return "bad input" if kind in BAD_INPUT else "bug or outage"

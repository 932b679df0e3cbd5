"""Starting billing runs: the one place that says how (id, policies, search attributes, terms);
and asking a run that needs attention to render its PDF again.

The billing consumer calls `start_billing_run` for every appointment event and
`healthcare billing reconcile --fix` for every appointment it finds unbilled, so a repaired run is
indistinguishable from one the consumer started.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from temporalio.client import Client as TemporalClient
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from healthcare import errors
from healthcare.contracts.billing import (
    NOT_NEEDING_ATTENTION,
    WORKFLOW_TYPE,
    BillingRequest,
    BillingRunStatus,
    CancelSignal,
    RetryPdfAccepted,
    RetryPdfRequest,
    billing_workflow_id,
)
from healthcare.contracts.search_attributes import SearchAttribute
from healthcare.settings import Settings
from workflows import search_attributes
from workflows.billing import BillingWorkflow


async def start_billing_run(
    temporal: TemporalClient,
    settings: Settings,
    *,
    appointment_id: uuid.UUID,
    patient_id: uuid.UUID,
    doctor_id: uuid.UUID,
    appointment_time: datetime,
    cancel: CancelSignal | None = None,
) -> bool:
    """Start the appointment's billing run on the settings' task queue with its payment terms, or
    reach the run that is open; with `cancel`, signal it (signal-with-start: a cancellation that
    comes first starts the run already cancelled). False when the run already finished: a finished
    run is never started again, so a redelivered event cannot bill twice."""
    request = BillingRequest(
        appointment_id=appointment_id,
        patient_id=patient_id,
        doctor_id=doctor_id,
        appointment_time=appointment_time,
        payment_terms_seconds=int(timedelta(days=settings.billing_payment_terms_days).total_seconds()),
    )
    try:
        await temporal.start_workflow(
            BillingWorkflow.run,
            request,
            id=billing_workflow_id(appointment_id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes.parties(patient_id, doctor_id),
            start_signal="cancel" if cancel else None,
            start_signal_args=[cancel] if cancel else [],
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


# The runs an operator must look at: their PDF failed for good (workflows/billing.py).
NEEDS_ATTENTION_QUERY = (
    f'WorkflowType="{WORKFLOW_TYPE}" AND ExecutionStatus="Running" AND '
    f'{SearchAttribute.billing_status.value}="{BillingRunStatus.needs_attention.value}"'
)


async def retry_pdf(
    temporal: TemporalClient, workflow_id: str, *, reason: str | None = None
) -> RetryPdfAccepted:
    """Ask a billing run that needs attention to render its PDF again (once its cause is fixed).

    NotFound: no such run; Conflict: the run is not waiting for an operator."""
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        accepted: RetryPdfAccepted = await handle.execute_update(
            BillingWorkflow.retry_pdf, RetryPdfRequest(reason=reason), result_type=RetryPdfAccepted
        )
        return accepted
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == NOT_NEEDING_ATTENTION:
            raise errors.Conflict(f"{workflow_id} is not waiting for an operator") from exc
        raise
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise errors.NotFound(f"no running billing run {workflow_id}") from exc
        raise

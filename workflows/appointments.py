"""The appointment workflow: validate, store (queueing APPOINTMENT_CREATED), then wait for a final state.

Id `appointment-<id>`. The API starts it with update-with-start: the `book` update returns once the
row is stored (or the booking is refused), so a POST answers in one round trip while the rest of
the lifecycle (cancellation, completion) stays durable.

Events go through the transactional outbox (healthcare.outbox): `store` and `set_status` queue them
in the transaction of the row change, and the worker's relay publishes them. Every step is a local
activity. (Patch `outbox-v1` is deprecated: see the README's patch rule.)
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from healthcare.contracts.appointments import (
        BOOKING_LIMIT,
        IDEMPOTENCY_MISMATCH,
        INVALID_TRANSITION,
        PARTY_NOT_FOUND,
        RUN_PENDING,
        RUN_REJECTED,
        SLOT_TAKEN,
        AppointmentState,
        BookingRequest,
        PartiesCheck,
        StatusChange,
        TransitionRequest,
        WorkflowOutcome,
        can_become,
    )
    from workflows.search_attributes import APPOINTMENT_STATUS

# Business refusals end the booking; anything else fails. (BOOKING_LIMIT ends it the same way:
# the same commands as a taken slot, so no patch is needed.)
REFUSALS = (SLOT_TAKEN, PARTY_NOT_FOUND, BOOKING_LIMIT)

# Database steps: a few quick retries, then the run fails (the Temporal UI shows it FAILED and the
# waiting request answers 503) instead of retrying for ever: 8 attempts span about 15 s.
# Business refusals are non-retryable and end the booking.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5), maximum_attempts=8
)
# Introduced the outbox path (no `publish` activity). Deprecated: no run of the old path can be
# open (none ever ran in production), but stored and running histories carry the marker. Remove
# the call once none of those needs replaying (the README's patch rule).
OUTBOX_PATCH = "outbox-v1"


@workflow.defn(name="Appointment")
class AppointmentWorkflow:
    @workflow.init
    def __init__(self, request: BookingRequest) -> None:
        # workflow.init: the request is known before the `book` update handler can run.
        self._request = request
        self._appointment: AppointmentState | None = None
        self._refusal: ApplicationError | None = None
        self._pending: TransitionRequest | None = None

    @workflow.run
    async def run(self, request: BookingRequest) -> WorkflowOutcome:
        workflow.deprecate_patch(OUTBOX_PATCH)
        try:
            # Local activities: short database steps run inside the workflow task, saving two
            # server round trips per booking; they are retried and recorded like any activity.
            await workflow.execute_local_activity(
                "appointments.check_parties",
                PartiesCheck(patient_id=request.patient_id, doctor_id=request.doctor_id),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=DB_RETRY,
            )
            self._appointment = await workflow.execute_local_activity(
                "appointments.store",
                request,
                result_type=AppointmentState,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=DB_RETRY,
            )
        except (ActivityError, ApplicationError) as err:
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
                self._refusal = ApplicationError(str(cause.message), type=cause.type, non_retryable=True)
                workflow.upsert_search_attributes([APPOINTMENT_STATUS.value_set(RUN_REJECTED)])
                # With local activities the refusal, the `book` answer and completion would share one
                # workflow task, and the server fails an update whose workflow completes in the task
                # that answers it. A short timer puts completion in a later task.
                await workflow.wait_condition(workflow.all_handlers_finished)
                await workflow.sleep(timedelta(milliseconds=200))
                return WorkflowOutcome(appointment_id=request.appointment_id, final_status=RUN_REJECTED)
            raise
        workflow.upsert_search_attributes([APPOINTMENT_STATUS.value_set(self._appointment.status.value)])

        await workflow.wait_condition(lambda: self._pending is not None)
        assert self._pending is not None
        target = self._pending.target
        self._appointment = await workflow.execute_local_activity(
            "appointments.set_status",
            StatusChange(appointment_id=request.appointment_id, target=target),
            result_type=AppointmentState,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=DB_RETRY,
        )
        workflow.upsert_search_attributes([APPOINTMENT_STATUS.value_set(target.value)])
        # Let the update handler return its answer before the workflow completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return WorkflowOutcome(appointment_id=request.appointment_id, final_status=target.value)

    @workflow.update
    async def book(self, request: BookingRequest) -> AppointmentState:
        """Answers once the booking is stored or refused; a repeat (same Idempotency-Key) gets the same."""
        if self._request.fingerprint() != request.fingerprint():
            raise ApplicationError(
                "Idempotency-Key was already used for a different booking", type=IDEMPOTENCY_MISMATCH
            )
        await workflow.wait_condition(lambda: self._appointment is not None or self._refusal is not None)
        if self._refusal is not None:
            raise self._refusal
        assert self._appointment is not None
        return self._appointment

    @workflow.update
    async def transition(self, request: TransitionRequest) -> AppointmentState:
        self._pending = request
        await workflow.wait_condition(
            lambda: self._appointment is not None and self._appointment.status == request.target
        )
        assert self._appointment is not None
        return self._appointment

    @transition.validator
    def _validate_transition(self, request: TransitionRequest) -> None:
        current = self._appointment.status if self._appointment else RUN_PENDING
        if self._pending is not None or not can_become(current, request.target):
            raise ApplicationError(
                f"an appointment that is {current if self._pending is None else 'already changing'} "
                f"cannot become {request.target}",
                type=INVALID_TRANSITION,
            )

    @workflow.query
    def appointment(self) -> AppointmentState | None:
        return self._appointment

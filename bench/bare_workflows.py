"""The booking → billing pipeline's Temporal shape with no work in it (bench.bare runs it).

Counted from workflows/appointments.py, workflows/billing.py and the stored histories
(tests/workflows/histories/appointment_outbox_completed.json, paid.json), per appointment up to an
ISSUED invoice:
- `BareAppointment`, started by update-with-start with three search attributes: one workflow task
  holding the `book` update, a deprecated-patch marker, two local activities and two search-attribute
  upserts; the run then stays open (as every appointment does until it is cancelled or completed).
- `BareBilling`, started by the client that booked (the billing consumer's `start_workflow` with two
  search attributes): a deprecated-patch marker, two local activities and one activity in the first
  workflow task, then one local activity and a durable timer (the due date) in the second; the
  run stays open on the timer (as every ISSUED invoice does until it is paid, void or overdue).
The activities return at once; the payloads are small dicts instead of pydantic models.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

STATUS = SearchAttributeKey.for_keyword("AppointmentStatus")
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))
PAYMENT_TERMS = timedelta(days=30)


async def _local(name: str, arg: Any) -> Any:
    return await workflow.execute_local_activity(
        name, arg, start_to_close_timeout=timedelta(seconds=10), retry_policy=RETRY
    )


@workflow.defn(name="BareAppointment")
class BareAppointment:
    @workflow.init
    def __init__(self, request: dict[str, Any]) -> None:
        self._request = request
        self._stored: dict[str, Any] | None = None

    @workflow.run
    async def run(self, request: dict[str, Any]) -> None:
        workflow.deprecate_patch("bare-v1")
        await _local("bare.check_parties", request)
        self._stored = await _local("bare.store", request)
        workflow.upsert_search_attributes([STATUS.value_set("SCHEDULED")])
        await workflow.wait_condition(lambda: False)  # open until a transition (never, here)

    @workflow.update
    async def book(self, request: dict[str, Any]) -> dict[str, Any]:
        await workflow.wait_condition(lambda: self._stored is not None)
        assert self._stored is not None
        return self._stored


@workflow.defn(name="BareBilling")
class BareBilling:
    @workflow.run
    async def run(self, request: dict[str, Any]) -> None:
        workflow.deprecate_patch("bare-v1")
        await _local("bare.price_visit", request)
        invoice = await _local("bare.record_invoice", request)
        pdf = await workflow.execute_activity(
            "bare.render_pdf",
            invoice,
            start_to_close_timeout=timedelta(seconds=90),
            heartbeat_timeout=timedelta(seconds=30),
        )
        await _local("bare.issue", pdf)
        await workflow.wait_condition(lambda: False, timeout=PAYMENT_TERMS)  # the due-date timer

"""The correlation interceptor: a client's bound id reaches the run's memo and every activity it starts."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from healthcare import correlation
from healthcare.contracts.billing import (
    CancelSignal,
    InvoiceDraft,
    InvoiceState,
    InvoiceStatusChange,
    IssueRequest,
    PdfRecord,
    PdfRequest,
    PdfResult,
    Price,
    PriceRequest,
)
from tests.workflows.test_billing_workflow import FakeBilling, ok_answers, request, start, until_status
from workflows.billing import BillingWorkflow


class Recording(FakeBilling):
    """The billing stand-ins, noting the correlation id each activity ran under."""

    seen: list[tuple[str, str | None]]

    def record(self, name: str) -> None:
        self.seen.append((name, correlation.current()))

    def all(self) -> list[Callable[..., object]]:
        fake = self

        @activity.defn(name="billing.price_visit")
        async def price_visit(data: PriceRequest) -> Price:
            fake.record("price_visit")
            return await FakeBilling.price_visit(fake, data)

        @activity.defn(name="billing.record_invoice")
        async def record_invoice(data: InvoiceDraft) -> InvoiceState:
            fake.record("record_invoice")
            return await FakeBilling.record_invoice(fake, data)

        @activity.defn(name="billing.render_pdf")
        async def render_pdf(data: PdfRequest) -> PdfResult:
            fake.record("render_pdf")
            return await FakeBilling.render_pdf(fake, data)

        @activity.defn(name="billing.issue")
        async def issue(data: IssueRequest) -> InvoiceState:
            fake.record("issue")
            return await FakeBilling.issue(fake, data)

        @activity.defn(name="billing.set_status")
        async def set_status(data: InvoiceStatusChange) -> InvoiceState:
            fake.record("set_status")
            return await FakeBilling.set_status(fake, data)

        @activity.defn(name="billing.record_pdf")
        async def record_pdf(data: PdfRecord) -> InvoiceState:
            fake.record("record_pdf")
            return await FakeBilling.record_pdf(fake, data)

        return [price_visit, record_invoice, render_pdf, issue, set_status, record_pdf]


async def test_the_bound_id_reaches_memo_and_every_activity(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    config = env.client.config()
    config["interceptors"] = [correlation.CorrelationInterceptor()]
    client = Client(**config)
    fake = Recording(lambda_answers=ok_answers())
    fake.seen = []
    async with Worker(client, task_queue=task_queue, workflows=[BillingWorkflow], activities=fake.all()):
        with correlation.bound("req-1234"):
            handle = await start(client, task_queue, request())
        await until_status(handle, "ISSUED")
        # A later call under another id (the cancelling request's) does not rename the run.
        with correlation.bound("req-cancel"):
            await handle.signal(BillingWorkflow.cancel, CancelSignal())
        await handle.result()
    names = [name for name, _ in fake.seen]
    assert {"price_visit", "record_invoice", "render_pdf", "issue", "set_status", "record_pdf"} <= set(names)
    assert {cid for _, cid in fake.seen} == {"req-1234"}
    description = await handle.describe()
    assert await description.memo_value(correlation.MEMO_KEY) == "req-1234"
    assert correlation.current() is None  # nothing leaks out of the block


async def test_without_a_bound_id_nothing_is_added(env: WorkflowEnvironment, task_queue: str) -> None:
    config = env.client.config()
    config["interceptors"] = [correlation.CorrelationInterceptor()]
    client = Client(**config)
    fake = Recording(lambda_answers=ok_answers())
    fake.seen = []
    async with Worker(client, task_queue=task_queue, workflows=[BillingWorkflow], activities=fake.all()):
        handle = await start(client, task_queue, request())
        await handle.signal(BillingWorkflow.cancel, CancelSignal())
        await handle.result()
    assert fake.seen and {cid for _, cid in fake.seen} == {None}
    assert await (await handle.describe()).memo() == {}


def test_ids_from_outside_are_checked() -> None:
    assert correlation.valid("0af7651916cd43dd8448eb211c80319c")
    for bad in ("", "a b", "x" * 65, "line\nbreak", None):
        assert not correlation.valid(bad)
    assert correlation.from_kafka_headers([("correlation-id", b"abc")]) == "abc"
    assert correlation.from_kafka_headers([("correlation-id", b"a b")]) is None
    assert correlation.from_kafka_headers(None) is None

"""One correlation id per request, carried through every process and log line the request causes.

The API takes it from the request (or makes one) and binds it here; from then on:

- every workflow this process starts, signals or updates carries it as a Temporal header
  (`correlation-id`, plain: an id, never patient data) and, on start, in its memo (`correlationId`,
  shown decoded in the Temporal UI);
- a workflow hands its start header to every activity, local activity and child it starts, so the
  activity runs with the id bound (its log lines, the outbox rows and invoices it writes, the
  Lambda invocation it makes);
- the outbox relay sends it as a Kafka header, and the billing consumer binds it again from there.

`bound(id)` sets the id for a block of code and adds `correlation_id` to every structured log line
written inside it. Workflow code itself never reads it (it would be state outside the history); the
interceptor keeps the id of a run from its start header, which replay reproduces.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog
from temporalio import activity, client, converter, workflow
from temporalio import worker as temporal_worker
from temporalio.api.common.v1 import Payload

HEADER = "correlation-id"  # Temporal and Kafka header key
MEMO_KEY = "correlationId"
LOG_KEY = "correlation_id"
MAX_LENGTH = 64  # the audit trail's request_id column

log = structlog.stdlib.get_logger(__name__)

_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def current() -> str | None:
    return _current.get()


def new() -> str:
    return uuid.uuid4().hex


def valid(value: str | None) -> bool:
    """What we accept from outside: a short, printable id without spaces (it lands in logs and rows)."""
    return value is not None and 0 < len(value) <= MAX_LENGTH and value.isprintable() and " " not in value


@contextmanager
def bound(correlation_id: str | None) -> Iterator[str | None]:
    """Bind the id (when there is one) for the block: to `current()` and to every log line."""
    if not correlation_id:
        yield None
        return
    token = _current.set(correlation_id)
    with structlog.contextvars.bound_contextvars(**{LOG_KEY: correlation_id}):
        try:
            yield correlation_id
        finally:
            _current.reset(token)


# -- Kafka ------------------------------------------------------------------------------------
def kafka_headers(correlation_id: str | None) -> list[tuple[str, bytes]]:
    return [(HEADER, correlation_id.encode())] if correlation_id else []


def from_kafka_headers(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    for key, value in headers or ():
        if key == HEADER:
            text = value.decode("utf-8", errors="replace")
            return text if valid(text) else None
    return None


# -- Temporal ---------------------------------------------------------------------------------
def _payload(correlation_id: str) -> Payload:
    return converter.default().payload_converter.to_payloads([correlation_id])[0]


def from_headers(headers: Mapping[str, Payload]) -> str | None:
    payload = headers.get(HEADER)
    if payload is None:
        return None
    try:
        value = converter.default().payload_converter.from_payloads([payload], [str])[0]
    except Exception:  # noqa: BLE001 - a malformed header only loses the id, never the call
        return None
    return value if isinstance(value, str) and valid(value) else None


def _with_header(headers: Mapping[str, Payload], correlation_id: str | None) -> Mapping[str, Payload]:
    if not correlation_id or HEADER in headers:
        return headers
    return {**headers, HEADER: _payload(correlation_id)}


def _with_memo(memo: Mapping[str, Any] | None, correlation_id: str | None) -> Mapping[str, Any] | None:
    if not correlation_id or (memo and MEMO_KEY in memo):
        return memo
    return {**(memo or {}), MEMO_KEY: correlation_id}


class CorrelationInterceptor(client.Interceptor, temporal_worker.Interceptor):
    """Client and worker interceptor; a client built with it passes it on to its workers."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: temporal_worker.ActivityInboundInterceptor
    ) -> temporal_worker.ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: temporal_worker.WorkflowInterceptorClassInput
    ) -> type[temporal_worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _ClientOutbound(client.OutboundInterceptor):
    async def start_workflow(self, input: client.StartWorkflowInput) -> client.WorkflowHandle[Any, Any]:
        cid = current()
        input.headers = _with_header(input.headers, cid)
        input.memo = _with_memo(input.memo, cid)
        return await self.next.start_workflow(input)

    async def start_update_with_start_workflow(
        self, input: client.StartWorkflowUpdateWithStartInput
    ) -> client.WorkflowUpdateHandle[Any]:
        cid = current()
        start = input.start_workflow_input
        start.headers = _with_header(start.headers, cid)
        start.memo = _with_memo(start.memo, cid)
        input.update_workflow_input.headers = _with_header(input.update_workflow_input.headers, cid)
        return await self.next.start_update_with_start_workflow(input)

    async def signal_workflow(self, input: client.SignalWorkflowInput) -> None:
        input.headers = _with_header(input.headers, current())
        await self.next.signal_workflow(input)

    async def start_workflow_update(
        self, input: client.StartWorkflowUpdateInput
    ) -> client.WorkflowUpdateHandle[Any]:
        input.headers = _with_header(input.headers, current())
        return await self.next.start_workflow_update(input)


class _ActivityInbound(temporal_worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
        with bound(from_headers(input.headers)):
            info = activity.info()
            started = time.perf_counter()
            outcome = "failed"
            try:
                result = await self.next.execute_activity(input)
                outcome = "ok"
                return result
            finally:
                # One line per attempt, with ids only: what an operator follows a booking by.
                log.info(
                    "activity finished",
                    activity_type=info.activity_type,
                    attempt=info.attempt,
                    local=info.is_local,
                    workflow_id=info.workflow_id,
                    outcome=outcome,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )


class _WorkflowInbound(temporal_worker.WorkflowInboundInterceptor):
    """Per workflow run: remembers the id of the start header and hands it to what the run starts."""

    correlation_id: str | None = None

    def init(self, outbound: temporal_worker.WorkflowOutboundInterceptor) -> None:
        self.next.init(_WorkflowOutbound(outbound, self))

    async def execute_workflow(self, input: temporal_worker.ExecuteWorkflowInput) -> Any:
        self.correlation_id = from_headers(input.headers)
        return await self.next.execute_workflow(input)


class _WorkflowOutbound(temporal_worker.WorkflowOutboundInterceptor):
    def __init__(self, next: temporal_worker.WorkflowOutboundInterceptor, run: _WorkflowInbound) -> None:
        super().__init__(next)
        self._run = run

    def _headers(self, headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
        cid = self._run.correlation_id
        if not cid or HEADER in headers:
            return headers
        return {**headers, HEADER: workflow.payload_converter().to_payloads([cid])[0]}

    def start_activity(self, input: temporal_worker.StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = self._headers(input.headers)
        return self.next.start_activity(input)

    def start_local_activity(
        self, input: temporal_worker.StartLocalActivityInput
    ) -> workflow.ActivityHandle[Any]:
        input.headers = self._headers(input.headers)
        return self.next.start_local_activity(input)

    async def start_child_workflow(
        self, input: temporal_worker.StartChildWorkflowInput
    ) -> workflow.ChildWorkflowHandle[Any, Any]:
        input.headers = self._headers(input.headers)
        return await self.next.start_child_workflow(input)

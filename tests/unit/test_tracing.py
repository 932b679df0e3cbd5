"""Trace propagation helpers (healthcare/tracing.py): W3C context through the outbox row and Kafka
headers, the span guard that keeps tokens, queries and client addresses out, and tracing off."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from healthcare import correlation, tracing
from healthcare.settings import Settings


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A provider exporting synchronously to memory, installed as the module's own (not global)."""
    exporter = InMemorySpanExporter()
    provider = tracing.new_provider("unit", exporter, batch=False)
    monkeypatch.setattr(tracing, "_provider", provider)
    yield exporter
    provider.shutdown()


def _tracer() -> trace.Tracer:
    assert isinstance(tracing._provider, TracerProvider)
    return tracing._provider.get_tracer("test")


def test_traceparent_outside_a_span_is_none() -> None:
    assert tracing.traceparent() is None
    assert tracing.kafka_headers(None) == []


def test_the_outbox_traceparent_travels_through_kafka_headers_into_one_trace(
    spans: InMemorySpanExporter,
) -> None:
    with _tracer().start_as_current_span("RunActivity:appointments.store") as queued:
        stored = tracing.traceparent()  # what enqueue() writes on the outbox row
    assert stored is not None
    trace_id = queued.get_span_context().trace_id
    assert stored.split("-")[1] == format(trace_id, "032x")

    with tracing.producer_span(stored, topic="appointment-events", event_id="e-1") as sent:
        headers = [(correlation.HEADER, b"cid-1"), *tracing.kafka_headers(sent)]
    with tracing.consumer_span(headers, topic="appointment-events", partition=2, offset=7):
        pass

    by_name = {s.name: s for s in spans.get_finished_spans()}
    producer, consumer = by_name["publish appointment-events"], by_name["process appointment-events"]
    assert producer.context is not None and consumer.context is not None
    assert {producer.context.trace_id, consumer.context.trace_id} == {trace_id}
    assert producer.parent is not None and producer.parent.span_id == queued.get_span_context().span_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert producer.kind is trace.SpanKind.PRODUCER and consumer.kind is trace.SpanKind.CONSUMER
    assert consumer.attributes is not None and consumer.attributes["messaging.kafka.message.offset"] == 7


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [(correlation.HEADER, b"cid")],
        [("traceparent", b"not-a-traceparent")],
        [("traceparent", b"\xff")],
    ],
)
def test_a_message_without_a_valid_traceparent_starts_no_span(
    spans: InMemorySpanExporter, headers: list[tuple[str, bytes]] | None
) -> None:
    assert tracing.from_kafka_headers(headers) is None
    with tracing.consumer_span(headers, topic="t", partition=0, offset=0):
        pass
    with tracing.producer_span(None, topic="t", event_id="e") as sent:
        assert sent is None
    assert spans.get_finished_spans() == ()


def test_the_guard_strips_queries_headers_and_addresses_and_adds_the_correlation_id(
    spans: InMemorySpanExporter,
) -> None:
    attributes = {
        "http.url": "http://127.0.0.1:8000/ws/analytics?token=eyJsecret",
        "http.target": "/api/v1/patients?name=Jane%20Doe",
        "url.query": "token=eyJsecret",
        "net.peer.ip": "203.0.113.9",
        "client.address": "203.0.113.9",
        "http.request.header.authorization": ("Bearer eyJsecret",),
        "temporalWorkflowID": "billing-1",
    }
    with correlation.bound("cid-42"), _tracer().start_as_current_span("GET", attributes=attributes):
        pass
    (span,) = spans.get_finished_spans()
    got = dict(span.attributes or {})
    assert got["http.url"] == "http://127.0.0.1:8000/ws/analytics"
    assert got["http.target"] == "/api/v1/patients"
    assert got["temporalWorkflowID"] == "billing-1"
    assert got[tracing.CORRELATION_ATTRIBUTE] == "cid-42"
    text = repr(got)
    for secret in ("eyJsecret", "Jane", "203.0.113.9"):
        assert secret not in text


def test_fastapi_spans_name_the_route_and_keep_no_query_or_token(spans: InMemorySpanExporter) -> None:
    app = FastAPI()

    @app.get("/api/v1/patients/{patient_id}")
    async def read(patient_id: str) -> dict[str, str]:
        return {"id": patient_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    tracing.instrument_fastapi(app, Settings(tracing_endpoint="http://127.0.0.1:1/api/v2/spans"))
    with TestClient(app) as http:
        assert http.get("/healthz").status_code == 200
        resp = http.get(
            "/api/v1/patients/p-1?name=Jane%20Doe&token=eyJsecret",
            headers={"Authorization": "Bearer eyJsecret", "X-Forwarded-For": "203.0.113.9"},
        )
        assert resp.status_code == 200
    (span,) = spans.get_finished_spans()  # /healthz is not traced
    assert span.name == "GET /api/v1/patients/{patient_id}"
    assert span.kind is trace.SpanKind.SERVER
    text = repr(dict(span.attributes or {})) + repr([e.attributes for e in span.events])
    for secret in ("eyJsecret", "Jane", "Bearer", "203.0.113.9"):
        assert secret not in text


def test_spans_carry_the_role_as_service_name(spans: InMemorySpanExporter) -> None:
    with _tracer().start_as_current_span("x"):
        pass
    (span,) = spans.get_finished_spans()
    assert span.resource.attributes["service.name"] == "healthcare-unit"


def test_log_lines_inside_a_span_name_its_trace(spans: InMemorySpanExporter) -> None:
    from healthcare.logging import add_trace_id

    assert "trace_id" not in add_trace_id(None, "info", {})
    with _tracer().start_as_current_span("x") as span:
        line = add_trace_id(None, "info", {})
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_tracing_off_starts_no_exporter_and_no_interceptor() -> None:
    off = Settings(tracing_endpoint="")
    assert tracing.temporal_interceptors(off) == []
    # In a fresh interpreter: configuring and building the API with tracing off leaves OpenTelemetry's
    # global provider the no-op proxy and starts no span-exporting thread.
    script = (
        "import threading\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from healthcare import tracing\n"
        "from healthcare.settings import Settings\n"
        "from api.main import create_app\n"
        "s = Settings(tracing_endpoint='')\n"
        "assert tracing.configure(s, 'api') is None\n"
        "app = create_app(s)\n"
        "assert not isinstance(trace.get_tracer_provider(), TracerProvider)\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "assert not any('Otel' in n or 'Span' in n for n in names), names\n"
        "assert not any('OpenTelemetry' in type(m.cls).__name__ + str(m.cls) for m in app.user_middleware)\n"
        "on = Settings(tracing_endpoint='http://127.0.0.1:1/api/v2/spans')\n"
        "assert [type(i).__name__ for i in tracing.temporal_interceptors(on)] == ['TracingInterceptor']\n"
        "assert isinstance(tracing.configure(on, 'api'), TracerProvider)\n"
        "assert isinstance(trace.get_tracer_provider(), TracerProvider)\n"
        "assert any('Otel' in t.name for t in threading.enumerate())\n"  # the check above can fail
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_the_dev_and_test_stacks_trace_to_their_zipkin_and_the_bench_stack_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devstack import components
    from devstack.paths import Paths

    monkeypatch.delenv("HC_TRACING_ENDPOINT", raising=False)
    for profile, port in (("dev", 9411), ("test", 12411)):
        settings = Settings(profile=profile)
        names = {c.name: c for c in components.all_components(settings, Paths.from_settings(settings))}
        assert "zipkin" in names and port in names["zipkin"].ports
        for role in ("api", "worker", "consumer"):
            assert names[role].env()["HC_TRACING_ENDPOINT"] == f"http://127.0.0.1:{port}/api/v2/spans"
    bench = Settings(profile="bench")
    names = {c.name: c for c in components.all_components(bench, Paths.from_settings(bench))}
    assert "zipkin" not in names
    assert all("HC_TRACING_ENDPOINT" not in names[r].env() for r in ("api", "worker", "consumer"))


def test_a_failed_span_keeps_the_exception_type_not_its_message(spans: InMemorySpanExporter) -> None:
    from opentelemetry.trace import Status, StatusCode

    message = "duplicate key value violates unique constraint DETAIL: Key (email)=(jane@example.org)"
    with pytest.raises(ValueError), _tracer().start_as_current_span("RunActivity:x") as span:
        span.set_status(Status(StatusCode.ERROR, f"ValueError: {message}"))
        raise ValueError(message)
    (done,) = spans.get_finished_spans()
    assert done.status.status_code is StatusCode.ERROR and done.status.description == "ValueError"
    (event,) = done.events
    assert event.name == "exception" and dict(event.attributes or {})["exception.type"] == "ValueError"
    assert "jane" not in repr(dict(event.attributes or {})) + repr(done.status.description)

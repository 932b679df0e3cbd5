"""Traces (OpenTelemetry): one booking followed across the API, Temporal, Kafka and billing as one trace.

Off unless `HC_TRACING_ENDPOINT` names a Zipkin-compatible collector (`.../api/v2/spans`); the local
stacks start Zipkin and point their processes at it. When it is set, `configure(settings, role)`
installs the SDK's tracer provider with `service.name` = `healthcare-<role>` and:

- the Temporal SDK's `TracingInterceptor` on every client (and so on every worker built on one):
  spans for starting, signalling and updating workflows, for each workflow run, and for each
  activity attempt, joined through a Temporal header;
- FastAPI's instrumentation on the API (one server span per request, named by its route template);
- W3C `traceparent` across the Kafka hop: the activity that queues an outbox row stores the trace
  context beside the row's correlation id, the relay sends it as a Kafka header (`kafka_headers`),
  and the billing consumer continues the trace from it (`consumer_span`).

What spans may say: ids only. `_Guard` sees every span before export: it takes the query string out
of URLs (the websocket relay and some clients put tokens there), and drops request and response
headers and the client's address (an IP address identifies a patient as well as a name does); a
failure keeps its exception's type, not its message or stack trace (a database error's message
quotes values; in histories the codec encrypts it). The Temporal interceptor's attributes are
workflow, run and activity ids; payloads stay inside the codec, never in a span. Each span carries
the request's `correlation_id` as an attribute, and each log line written inside a span carries its
`trace_id`, so either finds the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from healthcare import correlation
from healthcare.settings import Settings

TRACEPARENT: Final = "traceparent"  # the W3C header, in Kafka message headers too
CORRELATION_ATTRIBUTE: Final = correlation.LOG_KEY  # "correlation_id"
TRACER_NAME: Final = "healthcare"
# Attributes holding a URL or a path with its query string: kept without the query.
_URL_KEYS: Final = frozenset({"http.url", "http.target", "url.full"})
# Attributes that are dropped: the client's address, the raw query, captured headers.
_DROPPED_KEYS: Final = frozenset(
    {"url.query", "net.peer.ip", "net.peer.port", "client.address", "client.port", "http.client_ip"}
)
_DROPPED_PREFIXES: Final = ("http.request.header.", "http.response.header.")
_EXCEPTION_KEYS: Final = frozenset({"exception.type", "exception.escaped"})

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def enabled(settings: Settings) -> bool:
    return bool(settings.tracing_endpoint)


def configure(
    settings: Settings, role: str, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install the process's tracer provider (once); None, and nothing started, when tracing is off."""
    global _provider  # noqa: PLW0603 - one provider per process, as OpenTelemetry's global is
    if not enabled(settings):
        return None
    if _provider is not None:
        return _provider
    if exporter is None:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        exporter = ZipkinExporter(endpoint=settings.tracing_endpoint, timeout=5)
    provider = new_provider(role, exporter, sample_ratio=settings.tracing_sample_ratio, env=settings.env)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def new_provider(
    role: str, exporter: SpanExporter, *, sample_ratio: float = 1.0, env: str = "local", batch: bool = True
) -> TracerProvider:
    """A tracer provider for `role` whose spans pass `_Guard` before `exporter` sees them."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"healthcare-{role}", "deployment.environment": env}),
        # A trace sampled at its start stays sampled in every process it reaches.
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    # The exporting processor sees a span only through the guard.
    provider.add_span_processor(
        _Guard(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    )
    return provider


def shutdown() -> None:
    """Send what is still buffered (the SDK also does this at interpreter exit)."""
    if _provider is not None:
        _provider.shutdown()


def tracer() -> trace.Tracer:
    """Our own spans' tracer: the configured provider's (the global one's when none was configured)."""
    return (_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)


class _Guard(SpanProcessor):
    """Wraps the exporting processor: tags each span with the correlation id when it starts, and
    hands it on for export only once what must not leave the process is out of its attributes
    (instrumentations set some attributes after the start, so this happens at the end)."""

    def __init__(self, export: SpanProcessor) -> None:
        self._export = export

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        cid = correlation.current()
        if cid:
            span.set_attribute(CORRELATION_ATTRIBUTE, cid)
        self._export.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._export.on_end(scrubbed(span))

    def shutdown(self) -> None:
        self._export.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._export.force_flush(timeout_millis)


def scrubbed_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The attributes without query strings in URLs, without headers and client addresses."""
    kept: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in _DROPPED_KEYS or key.startswith(_DROPPED_PREFIXES):
            continue
        kept[key] = without_query(value) if key in _URL_KEYS and isinstance(value, str) else value
    return kept


def _error_type(description: str | None) -> str | None:
    """`IntegrityError: ... DETAIL: Key (email)=(...)` -> `IntegrityError`: a failure's message may
    hold values (the codec encrypts it in histories), its type does not."""
    return description.split(":", 1)[0] if description else description


def _event(event: Event) -> Event:
    """An exception event keeps the exception's type only (its message and stack trace, which
    repeats the message, may hold values)."""
    if event.name != "exception":
        return event
    kept = {k: v for k, v in (event.attributes or {}).items() if k in _EXCEPTION_KEYS}
    return Event(event.name, attributes=kept, timestamp=event.timestamp)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """The span as it may leave the process: ids, names and types, no values."""
    attributes = scrubbed_attributes(span.attributes)
    events = [_event(e) for e in span.events]
    status = Status(span.status.status_code, _error_type(span.status.description))
    if (
        attributes == dict(span.attributes or {})
        and all(a is b for a, b in zip(events, span.events, strict=True))
        and status.description == span.status.description
    ):
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def tag_current_span(correlation_id: str) -> None:
    """Tag the current span with the correlation id (a span started before the id was bound)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(CORRELATION_ATTRIBUTE, correlation_id)


def without_query(url: str) -> str:
    """The URL or path without its query string and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# -- W3C trace context as text (the outbox row) and as Kafka headers --------------------------------
def traceparent() -> str | None:
    """The current span's context as a W3C `traceparent`, or None outside a sampled span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get(TRACEPARENT)


def context_from_traceparent(value: str | None) -> otel_context.Context | None:
    """The remote parent a `traceparent` names, or None when it is missing or malformed."""
    if not value:
        return None
    ctx = _propagator.extract({TRACEPARENT: value})
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def kafka_headers(stored_traceparent: str | None) -> list[tuple[str, bytes]]:
    return [(TRACEPARENT, stored_traceparent.encode())] if stored_traceparent else []


def from_kafka_headers(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context | None:
    for key, value in headers or ():
        if key == TRACEPARENT:
            return context_from_traceparent(value.decode("ascii", errors="replace"))
    return None


@contextlib.contextmanager
def producer_span(stored_traceparent: str | None, *, topic: str, event_id: str) -> Iterator[str | None]:
    """A PRODUCER span for one outbox row's send, child of the trace the row was queued in; yields
    the `traceparent` to send with it (None for a row queued outside a trace)."""
    parent = context_from_traceparent(stored_traceparent)
    if parent is None:
        yield None
        return
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic, "event_id": event_id}
    with tracer().start_as_current_span(
        f"publish {topic}", context=parent, kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        yield traceparent() or stored_traceparent


@contextlib.contextmanager
def consumer_span(
    headers: Sequence[tuple[str, bytes]] | None, *, topic: str, partition: int, offset: int, **ids: Any
) -> Iterator[None]:
    """A CONSUMER span for one Kafka message, continuing the trace its headers carry (a message
    without one starts none: the consumer's own polling is not traced)."""
    parent = from_kafka_headers(headers)
    if parent is None:
        yield
        return
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.message.offset": offset,
        **{k: str(v) for k, v in ids.items()},
    }
    with tracer().start_as_current_span(
        f"process {topic}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        yield


# -- Temporal and FastAPI -----------------------------------------------------------------------
def temporal_interceptors(settings: Settings) -> list[Any]:
    """The Temporal SDK's tracing interceptor when tracing is on (before the correlation interceptor,
    which tags the activity spans with the id it binds)."""
    if not enabled(settings):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def instrument_fastapi(app: Any, settings: Settings) -> None:
    """A server span per request (named by route template); probes and metrics are not traced."""
    if not enabled(settings):
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="/healthz,/readyz,/metrics",
        exclude_spans=["receive", "send"],  # no span per ASGI message
        tracer_provider=_provider,
    )

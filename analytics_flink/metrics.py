"""Appointment analytics as plain functions: parse, dedupe, hourly event-time buckets, the result record.

Standard library only, so the same module runs in the Flink Python workers, on a remote cluster
(shipped with the job) and in unit tests without a cluster.

Definitions (the README of the job repeats them):

* ``totalEventsCreated``: cumulative count of ``APPOINTMENT_CREATED`` events, each ``eventId``
  counted once. Late and far-future events still count here; only the average leaves them out.
* ``avgAppointmentsPerHour``: mean of the hourly counts of created appointments over the trailing
  ``window_hours`` (24) hours of *event time*. The hours are aligned to the clock (UTC); the window
  ends with the hour that holds the newest event time seen and starts ``window_hours`` hours
  earlier, or at the hour of the first event if history is shorter. So the first event gives 1.0
  over a one-hour window, never a division by a near-zero elapsed time. The newest hour is still
  filling, and counts as a whole hour.
* ``windowStartTime`` / ``windowEndTime``: the window's bounds in epoch ms, [start, end).
* Watermark: newest event time seen minus ``allowed_lateness_ms`` (the bounded-out-of-orderness rule).
  An event older than the watermark is *late*: counted in the totals, left out of the buckets, and
  counted in ``lateEvents``. An event claiming to be more than ``max_future_skew_ms`` ahead of the
  processing clock is counted but neither bucketed nor allowed to move the window (``futureEvents``).
* Cancellations never change the contract's fields; they add ``totalEventsCancelled``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

HOUR_MS = 3_600_000
CREATED = "APPOINTMENT_CREATED"
CANCELLED = "APPOINTMENT_CANCELLED"
_REQUIRED = ("event", "eventId", "appointmentId", "patientId", "doctorId", "time", "occurredAt")


@dataclass(frozen=True)
class MetricsConfig:
    window_hours: int = 24
    allowed_lateness_ms: int = 5 * 60_000
    max_future_skew_ms: int = HOUR_MS


@dataclass(frozen=True)
class Event:
    kind: str
    event_id: str
    appointment_id: str
    occurred_at_ms: int


class MalformedEvent(ValueError):
    """The record is not an `appointment-events` value; the reason never quotes its content."""


class SeenIds(Protocol):
    """Event ids already applied (in Flink: keyed MapState with a TTL; in tests: a dict)."""

    def __contains__(self, event_id: object) -> bool: ...

    def __setitem__(self, event_id: str, occurred_at_ms: int) -> None: ...


@dataclass
class AnalyticsState:
    total_created: int = 0
    total_cancelled: int = 0
    max_event_time: int | None = None  # newest accepted event time (ms): drives watermark and window
    first_bucket: int | None = None  # start of the earliest hour that ever held a created event
    buckets: dict[int, int] = field(default_factory=dict)  # hour start (ms) -> created events
    late_events: int = 0
    future_events: int = 0
    duplicate_events: int = 0
    malformed_events: int = 0
    applied: int = 0  # distinct events applied: a per-result sequence number

    def to_json(self) -> str:
        data = asdict(self)
        data["buckets"] = {str(k): v for k, v in self.buckets.items()}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> AnalyticsState:
        if not text:
            return cls()
        data = json.loads(text)
        data["buckets"] = {int(k): int(v) for k, v in data.get("buckets", {}).items()}
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def hour_start(ms: int) -> int:
    return ms - ms % HOUR_MS


def parse_time_ms(value: Any) -> int:
    """ISO 8601 (an offset-less time is taken as UTC) or epoch milliseconds."""
    if isinstance(value, bool):
        raise MalformedEvent("occurredAt is not a time")
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        raise MalformedEvent("occurredAt is not a time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedEvent("occurredAt is not ISO 8601") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_event(raw: bytes | str | None) -> Event:
    """One `appointment-events` value, or MalformedEvent."""
    if raw is None:
        raise MalformedEvent("empty record")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent("not JSON") from exc
    if not isinstance(data, dict):
        raise MalformedEvent("not a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise MalformedEvent(f"missing {missing}")
    kind = data["event"]
    if kind not in (CREATED, CANCELLED):
        raise MalformedEvent("unknown event type")
    try:
        event_id = str(uuid.UUID(str(data["eventId"])))
    except ValueError as exc:
        raise MalformedEvent("eventId is not a UUID") from exc
    return Event(
        kind=kind,
        event_id=event_id,
        appointment_id=str(data["appointmentId"]),
        occurred_at_ms=parse_time_ms(data["occurredAt"]),
    )


def window(state: AnalyticsState, config: MetricsConfig, now_ms: int) -> tuple[int, int]:
    """[start, end) of the averaging window, hour-aligned."""
    anchor = hour_start(state.max_event_time if state.max_event_time is not None else now_ms)
    end = anchor + HOUR_MS
    start = end - config.window_hours * HOUR_MS
    start = max(start, state.first_bucket) if state.first_bucket is not None else anchor
    return start, end


def average_per_hour(state: AnalyticsState, config: MetricsConfig, now_ms: int) -> tuple[float, int, int]:
    start, end = window(state, config, now_ms)
    hours = max(1, (end - start) // HOUR_MS)
    in_window = sum(n for h, n in state.buckets.items() if start <= h < end)
    return in_window / hours, start, end


def _prune(state: AnalyticsState, config: MetricsConfig, now_ms: int) -> None:
    # The window only moves forward, so an hour before its start can never count again.
    start, _ = window(state, config, now_ms)
    for h in [h for h in state.buckets if h < start]:
        del state.buckets[h]


def apply_event(
    state: AnalyticsState, event: Event, *, seen: SeenIds, now_ms: int, config: MetricsConfig
) -> bool:
    """Fold one parsed event into the state. False when it was a duplicate (nothing changed but a counter)."""
    if event.event_id in seen:
        state.duplicate_events += 1
        return False
    seen[event.event_id] = event.occurred_at_ms
    state.applied += 1
    if event.kind == CANCELLED:
        state.total_cancelled += 1
    else:
        state.total_created += 1

    t = event.occurred_at_ms
    if t > now_ms + config.max_future_skew_ms:
        state.future_events += 1
        return True
    watermark = None if state.max_event_time is None else state.max_event_time - config.allowed_lateness_ms
    if watermark is not None and t < watermark:
        state.late_events += 1
        return True
    if state.max_event_time is None or t > state.max_event_time:
        state.max_event_time = t
    if event.kind == CREATED:
        bucket = hour_start(t)
        start, _ = window(state, config, now_ms)
        if state.first_bucket is None or bucket < state.first_bucket:
            state.first_bucket = bucket
            start, _ = window(state, config, now_ms)
        if bucket >= start:
            state.buckets[bucket] = state.buckets.get(bucket, 0) + 1
    _prune(state, config, now_ms)
    return True


def result(
    state: AnalyticsState, *, now_ms: int, config: MetricsConfig, event: Event | None
) -> dict[str, Any]:
    """The `analytics-results` value: the contract's fields first, then additions."""
    avg, start, end = average_per_hour(state, config, now_ms)
    return {
        "metricType": "AppointmentAnalytics",
        "totalEventsCreated": state.total_created,
        "avgAppointmentsPerHour": round(avg, 4),
        "windowStartTime": start,
        "windowEndTime": end,
        "timestamp": now_ms,
        # Additions (the contract allows extra fields; these never change the ones above).
        "totalEventsCancelled": state.total_cancelled,
        "windowHours": (end - start) // HOUR_MS,
        "lateEvents": state.late_events,
        "futureEvents": state.future_events,
        "duplicateEvents": state.duplicate_events,
        "malformedEvents": state.malformed_events,
        "sequence": state.applied,
        "eventId": event.event_id if event else None,
        "eventTime": event.occurred_at_ms if event else None,
    }


def apply(
    state: AnalyticsState,
    raw: bytes | str | None,
    *,
    seen: SeenIds | MutableMapping[str, int],
    now_ms: int,
    config: MetricsConfig | None = None,
) -> dict[str, Any] | None:
    """Apply one raw record. Returns the new result, or None for a malformed record or a duplicate."""
    config = config or MetricsConfig()
    try:
        event = parse_event(raw)
    except MalformedEvent:
        state.malformed_events += 1
        return None
    if not apply_event(state, event, seen=seen, now_ms=now_ms, config=config):
        return None
    return result(state, now_ms=now_ms, config=config, event=event)

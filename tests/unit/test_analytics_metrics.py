"""The analytics metric logic on explicit event sequences (no Flink, no Kafka)."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics_flink import metrics
from analytics_flink.metrics import HOUR_MS, AnalyticsState, MetricsConfig

T0 = datetime(2030, 3, 4, 10, 0, tzinfo=UTC)  # an hour boundary
T0_MS = int(T0.timestamp() * 1000)
CONFIG = MetricsConfig(window_hours=24, allowed_lateness_ms=5 * 60_000)


def event(at: datetime, *, kind: str = "APPOINTMENT_CREATED", event_id: str | None = None) -> str:
    return json.dumps(
        {
            "event": kind,
            "eventId": event_id or str(uuid.uuid4()),
            "appointmentId": str(uuid.uuid4()),
            "patientId": str(uuid.uuid4()),
            "doctorId": str(uuid.uuid4()),
            "time": (at + timedelta(days=1)).isoformat(),
            "occurredAt": at.isoformat(),
        }
    )


class Job:
    """The aggregator as the Flink function drives it: one state, one seen-id map, a processing clock."""

    def __init__(self, config: MetricsConfig = CONFIG) -> None:
        self.state = AnalyticsState()
        self.seen: dict[str, int] = {}
        self.config = config
        self.now_ms = T0_MS

    def apply(self, raw: Any, *, now: datetime | None = None) -> dict[str, Any] | None:
        if now is not None:
            self.now_ms = int(now.timestamp() * 1000)
        # Round-trip the state through its stored form each time, as the ValueState does.
        self.state = AnalyticsState.from_json(self.state.to_json())
        return metrics.apply(self.state, raw, seen=self.seen, now_ms=self.now_ms, config=self.config)


def test_first_event_gives_one_per_hour_over_its_own_hour() -> None:
    job = Job()
    at = T0 + timedelta(minutes=7)
    out = job.apply(event(at), now=at)
    assert out is not None
    assert out["metricType"] == "AppointmentAnalytics"
    assert out["totalEventsCreated"] == 1
    assert out["avgAppointmentsPerHour"] == 1.0  # not 1 / (a few ms)
    assert (out["windowStartTime"], out["windowEndTime"]) == (T0_MS, T0_MS + HOUR_MS)
    assert out["timestamp"] == int(at.timestamp() * 1000)


def test_contract_fields_and_types() -> None:
    out = Job().apply(event(T0), now=T0)
    assert out is not None
    for name, kind in {
        "totalEventsCreated": int,
        "avgAppointmentsPerHour": float,
        "windowStartTime": int,
        "windowEndTime": int,
        "timestamp": int,
    }.items():
        assert isinstance(out[name], kind), name
    from healthcare.contracts.events import AnalyticsResult

    AnalyticsResult.model_validate(out)  # the shared schema accepts it


def test_hour_boundary_extends_the_window_and_averages_hourly_counts() -> None:
    job = Job()
    for minute in (0, 10, 59):
        job.apply(event(T0 + timedelta(minutes=minute)), now=T0 + timedelta(minutes=minute))
    out = job.apply(event(T0 + timedelta(hours=1)), now=T0 + timedelta(hours=1))
    assert out is not None
    assert out["totalEventsCreated"] == 4
    assert (out["windowStartTime"], out["windowEndTime"]) == (T0_MS, T0_MS + 2 * HOUR_MS)
    assert out["windowHours"] == 2
    assert out["avgAppointmentsPerHour"] == 2.0  # (3 + 1) / 2


def test_empty_hours_count_and_window_is_capped_at_24_hours() -> None:
    job = Job()
    job.apply(event(T0), now=T0)
    out = job.apply(event(T0 + timedelta(hours=5, minutes=30)), now=T0 + timedelta(hours=5, minutes=30))
    assert out is not None
    assert out["windowHours"] == 6
    assert out["avgAppointmentsPerHour"] == pytest.approx(2 / 6, abs=1e-4)

    later = T0 + timedelta(hours=30, minutes=1)
    out = job.apply(event(later), now=later)
    assert out is not None
    assert out["windowHours"] == 24
    assert out["windowEndTime"] == T0_MS + 31 * HOUR_MS
    assert out["windowStartTime"] == T0_MS + 7 * HOUR_MS
    # The T0 and T0+5h events left the window; only the newest one is in it. The total keeps all.
    assert out["avgAppointmentsPerHour"] == pytest.approx(1 / 24, abs=1e-4)
    assert out["totalEventsCreated"] == 3
    assert all(h >= out["windowStartTime"] for h in job.state.buckets)  # old buckets pruned


def test_late_event_within_lateness_is_counted_in_its_bucket() -> None:
    job = Job()
    job.apply(event(T0 + timedelta(hours=1, minutes=2)), now=T0 + timedelta(hours=1, minutes=2))
    # 4 minutes older than the newest event (lateness 5 min), and in the previous hour.
    out = job.apply(event(T0 + timedelta(minutes=58)), now=T0 + timedelta(hours=1, minutes=3))
    assert out is not None
    assert out["lateEvents"] == 0
    assert out["totalEventsCreated"] == 2
    assert out["windowStartTime"] == T0_MS  # the window grew back to the late event's hour
    assert job.state.buckets == {T0_MS: 1, T0_MS + HOUR_MS: 1}
    assert out["avgAppointmentsPerHour"] == 1.0


def test_event_later_than_allowed_lateness_counts_in_total_but_not_average() -> None:
    job = Job()
    job.apply(event(T0 + timedelta(minutes=30)), now=T0 + timedelta(minutes=30))
    out = job.apply(event(T0 + timedelta(minutes=20)), now=T0 + timedelta(minutes=31))
    assert out is not None
    assert out["totalEventsCreated"] == 2
    assert out["lateEvents"] == 1
    assert out["avgAppointmentsPerHour"] == 1.0
    assert job.state.buckets == {T0_MS: 1}


def test_duplicate_event_id_never_counts_twice() -> None:
    job = Job()
    first = event(T0, event_id="6f1c1d1e-0000-4000-8000-000000000001")
    assert job.apply(first, now=T0) is not None
    assert job.apply(first, now=T0) is None  # redelivered: no new result
    same_id_other_body = event(T0 + timedelta(minutes=1), event_id="6f1c1d1e-0000-4000-8000-000000000001")
    assert job.apply(same_id_other_body, now=T0) is None
    out = job.apply(event(T0 + timedelta(minutes=2)), now=T0 + timedelta(minutes=2))
    assert out is not None
    assert out["totalEventsCreated"] == 2
    assert out["duplicateEvents"] == 2
    assert out["sequence"] == 2


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"\xff\xfe not utf-8",
        "not json {",
        "[1, 2]",
        '"a string"',
        json.dumps({"event": "APPOINTMENT_CREATED"}),
        event(T0).replace("APPOINTMENT_CREATED", "APPOINTMENT_EXPLODED"),
        event(T0).replace(T0.isoformat(), "yesterday-ish"),
        json.dumps({**json.loads(event(T0)), "eventId": "not-a-uuid"}),
        json.dumps({**json.loads(event(T0)), "occurredAt": True}),
    ],
)
def test_malformed_records_are_counted_and_skipped(raw: Any) -> None:
    job = Job()
    assert job.apply(raw, now=T0) is None
    assert job.state.malformed_events == 1
    out = job.apply(event(T0), now=T0)
    assert out is not None
    assert out["malformedEvents"] == 1
    assert out["totalEventsCreated"] == 1


def test_cancellations_add_a_field_and_never_change_the_created_count() -> None:
    job = Job()
    job.apply(event(T0), now=T0)
    out = job.apply(event(T0 + timedelta(minutes=1), kind="APPOINTMENT_CANCELLED"), now=T0)
    assert out is not None
    assert out["totalEventsCreated"] == 1
    assert out["totalEventsCancelled"] == 1
    assert out["avgAppointmentsPerHour"] == 1.0


def test_event_from_the_far_future_does_not_move_the_window() -> None:
    job = Job()
    job.apply(event(T0), now=T0)
    out = job.apply(event(T0 + timedelta(days=365)), now=T0 + timedelta(minutes=1))
    assert out is not None
    assert out["totalEventsCreated"] == 2
    assert out["futureEvents"] == 1
    assert (out["windowStartTime"], out["windowEndTime"]) == (T0_MS, T0_MS + HOUR_MS)


def test_offsetless_and_epoch_times_are_utc() -> None:
    assert metrics.parse_time_ms("2030-03-04T10:00:00") == T0_MS
    assert metrics.parse_time_ms("2030-03-04T11:00:00+01:00") == T0_MS
    assert metrics.parse_time_ms("2030-03-04T10:00:00Z") == T0_MS
    assert metrics.parse_time_ms(T0_MS) == T0_MS


def test_state_survives_its_stored_form() -> None:
    job = Job()
    for minute in range(0, 120, 15):
        job.apply(event(T0 + timedelta(minutes=minute)), now=T0 + timedelta(minutes=minute))
    restored = AnalyticsState.from_json(job.state.to_json())
    assert restored == job.state
    assert AnalyticsState.from_json(None) == AnalyticsState()


def test_result_is_idempotent_to_apply() -> None:
    """At-least-once sink: a replayed result carries the same cumulative figures as the original."""
    job = Job()
    job.apply(event(T0), now=T0)
    snapshot = AnalyticsState.from_json(job.state.to_json())
    seen_snapshot = dict(job.seen)
    e2 = event(T0 + timedelta(minutes=5))
    first = job.apply(e2, now=T0 + timedelta(minutes=5))
    # Recovery: state and seen ids roll back to the checkpoint, the same event is read again.
    job.state, job.seen = snapshot, seen_snapshot
    again = job.apply(e2, now=T0 + timedelta(minutes=5))
    assert first == again

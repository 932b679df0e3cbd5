"""Event schemas serialise to the fixed wire contract."""

import json
import uuid
from datetime import UTC, datetime

from healthcare.contracts.events import AnalyticsResult, AppointmentEvent


def test_appointment_event_uses_contract_field_names() -> None:
    appt = uuid.uuid4()
    event = AppointmentEvent.model_validate(
        {
            "event": "APPOINTMENT_CREATED",
            "eventId": uuid.uuid4(),
            "appointmentId": appt,
            "patientId": uuid.uuid4(),
            "doctorId": uuid.uuid4(),
            "time": datetime(2030, 1, 1, 9, 0, tzinfo=UTC),
            "occurredAt": datetime.now(UTC),
        }
    )
    body = json.loads(event.value())
    assert set(body) == {
        "event",
        "eventId",
        "appointmentId",
        "patientId",
        "doctorId",
        "time",
        "occurredAt",
    }
    assert event.key() == str(appt).encode()
    assert AppointmentEvent.model_validate_json(event.value()) == event


def test_analytics_result_round_trip() -> None:
    raw = {
        "metricType": "AppointmentAnalytics",
        "totalEventsCreated": 3,
        "avgAppointmentsPerHour": 1.5,
        "windowStartTime": 1,
        "windowEndTime": 2,
        "timestamp": 3,
    }
    result = AnalyticsResult.model_validate(raw)
    assert json.loads(result.model_dump_json(by_alias=True)) == raw

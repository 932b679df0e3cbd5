"""Request schemas without services: every rule a request body is checked against, at its edges."""

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from healthcare import schemas
from healthcare.schemas import (
    MAX_ATTRIBUTES_BYTES,
    AppointmentCreate,
    Credentials,
    DeskPaymentIn,
    DoctorCreate,
    PasswordChange,
    PatientCreate,
    PatientUpdate,
    RegisterIn,
    UserCreate,
    UserUpdate,
)

PATIENT = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
DOCTOR = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def errors(model: type[BaseModel], body: dict[str, Any]) -> list[str]:
    """The messages of a refused body (the API answers them as 422 details)."""
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    return [e["msg"] for e in refused.value.errors()]


# -- passwords ---------------------------------------------------------------------------------
def test_a_password_of_exactly_72_bytes_fits_and_one_of_73_is_refused() -> None:
    """bcrypt reads 72 bytes: a longer password is refused, never silently cut. 36 times 'é' is 72 bytes
    in 37 characters' room, so the byte rule is what refuses the 73rd byte, not the length rule."""
    assert RegisterIn(email="a@example.com", password="é" * 36).password == "é" * 36
    assert RegisterIn(email="a@example.com", password="a" * 72).password == "a" * 72
    assert errors(RegisterIn, {"email": "a@example.com", "password": "é" * 36 + "a"}) == [
        "Value error, password must be at most 72 bytes in UTF-8"
    ]


def test_a_new_password_has_at_least_ten_characters() -> None:
    assert RegisterIn(email="a@example.com", password="x" * 10)
    assert errors(RegisterIn, {"email": "a@example.com", "password": "x" * 9})


def test_a_login_takes_any_password_up_to_128_characters_and_lowercases_the_email() -> None:
    """Login checks the hash, not the rules of today: old passwords still log in."""
    creds = Credentials(email="Ada.Lovelace@Example.COM", password="x")
    assert creds.email == "ada.lovelace@example.com"
    assert Credentials(email="a@example.com", password="x" * 128)
    assert errors(Credentials, {"email": "a@example.com", "password": "x" * 129})
    assert errors(Credentials, {"email": "a@example.com", "password": ""})


# -- request bodies refuse what they do not know -----------------------------------------------
BODIES: dict[type[BaseModel], dict[str, Any]] = {
    Credentials: {"email": "a@example.com", "password": "x"},
    RegisterIn: {"email": "a@example.com", "password": "x" * 10},
    UserCreate: {"email": "a@example.com", "password": "x" * 10, "role": "staff"},
    UserUpdate: {"isActive": False},
    DoctorCreate: {"name": "Dr Grey", "specialty": "GP", "fee": "120.00"},
    PatientCreate: {"name": "Ada"},
    PatientUpdate: {"condition": "well"},
    AppointmentCreate: {
        "patientId": PATIENT,
        "doctorId": DOCTOR,
        "time": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    },
    PasswordChange: {"currentPassword": "x", "newPassword": "y" * 10},
    DeskPaymentIn: {"method": "cash", "reference": "R-1"},
}


def _request_bodies() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    todo = list(schemas.ApiIn.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_request_body_is_covered_here() -> None:
    assert _request_bodies() == set(BODIES)


@pytest.mark.parametrize("model", list(BODIES), ids=lambda m: m.__name__)
def test_an_unknown_field_is_refused_not_dropped(model: type[BaseModel]) -> None:
    """A typo ("dateofbirth") or a field of a newer client would otherwise vanish without a word."""
    assert model.model_validate(BODIES[model])
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**BODIES[model], "ssn": "123-45-6789"})
    assert [(e["type"], e["loc"]) for e in refused.value.errors()] == [("extra_forbidden", ("ssn",))]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Ada\x00"},
        {"name": "Ada", "attributes": {"allergies": ["pen\x00icillin"]}},
        {"name": "Ada", "attributes": {"k\x00": 1}},
        {"name": "Ada", "attributes": {"deep": {"er": [{"x": "\x00"}]}}},
    ],
)
def test_nul_characters_are_refused_anywhere_in_a_body(body: dict[str, Any]) -> None:
    """PostgreSQL cannot store NUL in text or JSONB: bad input (422), not a 500 later."""
    assert errors(PatientCreate, body) == ["Value error, text must not contain NUL characters"]


def test_numbers_and_nulls_in_attributes_are_not_text_and_pass() -> None:
    patient = PatientCreate(name="Ada", attributes={"n": 0, "none": None, "list": [1, 2.5, True]})
    assert patient.attributes == {"n": 0, "none": None, "list": [1, 2.5, True]}


# -- patients ----------------------------------------------------------------------------------
def _attributes_of_size(size: int) -> dict[str, Any]:
    empty = len(json.dumps({"k": ""}))
    attributes = {"k": "x" * (size - empty)}
    assert len(json.dumps(attributes)) == size
    return attributes


def test_attributes_may_serialise_to_exactly_the_limit_and_not_a_byte_more() -> None:
    at_limit = _attributes_of_size(MAX_ATTRIBUTES_BYTES)
    assert PatientCreate(name="Ada", attributes=at_limit).attributes == at_limit
    assert PatientUpdate(attributes=at_limit).attributes == at_limit
    over = _attributes_of_size(MAX_ATTRIBUTES_BYTES + 1)
    message = f"Value error, attributes must serialise to at most {MAX_ATTRIBUTES_BYTES} bytes"
    assert errors(PatientCreate, {"name": "Ada", "attributes": over}) == [message]
    assert errors(PatientUpdate, {"attributes": over}) == [message]


def test_a_date_of_birth_may_be_today_but_not_tomorrow() -> None:
    today = datetime.now(UTC).date()
    assert PatientCreate(name="Ada", date_of_birth=today).date_of_birth == today
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert errors(PatientCreate, {"name": "Ada", "dateOfBirth": tomorrow}) == [
        "Value error, dateOfBirth cannot be in the future"
    ]
    assert errors(PatientUpdate, {"dateOfBirth": tomorrow}) == [
        "Value error, dateOfBirth cannot be in the future"
    ]


def test_a_date_of_birth_before_1880_is_implausible() -> None:
    assert PatientCreate(name="Ada", date_of_birth=date(1880, 1, 1)).date_of_birth == date(1880, 1, 1)
    assert errors(PatientCreate, {"name": "Ada", "dateOfBirth": "1879-12-31"}) == [
        "Value error, dateOfBirth is implausibly old"
    ]


def test_a_patient_without_a_date_of_birth_is_fine() -> None:
    assert PatientCreate(name="Ada").date_of_birth is None
    assert PatientUpdate(date_of_birth=None).date_of_birth is None


def test_an_update_may_leave_the_name_out_but_not_remove_it() -> None:
    assert "name" not in PatientUpdate(condition="well").model_fields_set
    assert errors(PatientUpdate, {"name": None}) == ["Value error, name cannot be removed"]


# -- appointments ------------------------------------------------------------------------------
def _booking(when: datetime | str) -> dict[str, Any]:
    return {
        "patientId": PATIENT,
        "doctorId": DOCTOR,
        "time": when if isinstance(when, str) else when.isoformat(),
    }


def test_a_booking_is_in_the_future_and_within_two_years() -> None:
    now = datetime.now(UTC)
    for ahead in (timedelta(minutes=5), timedelta(days=729)):
        assert AppointmentCreate.model_validate(_booking(now + ahead)).time == now + ahead
    assert errors(AppointmentCreate, _booking(now - timedelta(minutes=1))) == [
        "Value error, time must be in the future"
    ]
    assert errors(AppointmentCreate, _booking(now + timedelta(days=731))) == [
        "Value error, time must be within two years"
    ]


class _FrozenClock(datetime):
    """`datetime` whose now() is one fixed instant: the edges of a rule that reads the clock."""

    instant = datetime(2030, 5, 1, 9, 30, tzinfo=UTC)

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return cls.instant.astimezone(tz)


def test_a_booking_at_this_very_instant_is_past_and_exactly_two_years_ahead_is_within(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schemas, "datetime", _FrozenClock)
    now = _FrozenClock.instant
    assert errors(AppointmentCreate, _booking(now)) == ["Value error, time must be in the future"]
    edge = now + schemas.MAX_BOOKING_AHEAD
    assert AppointmentCreate.model_validate(_booking(edge)).time == edge
    assert errors(AppointmentCreate, _booking(edge + timedelta(microseconds=1))) == [
        "Value error, time must be within two years"
    ]


@pytest.mark.parametrize("zone", ["Etc/GMT-14", "Etc/GMT+12"], ids=["utc+14", "utc-12"])
def test_the_future_of_a_date_of_birth_is_the_utc_date_whatever_the_servers_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between them, the two zones differ from UTC's date at every hour of the day: a check on the
    server's local date would refuse today's UTC date in one, or take tomorrow's in the other."""
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        today = datetime.now(UTC).date()
        assert PatientCreate(name="Ada", date_of_birth=today).date_of_birth == today
        tomorrow = (today + timedelta(days=1)).isoformat()
        assert errors(PatientCreate, {"name": "Ada", "dateOfBirth": tomorrow}) == [
            "Value error, dateOfBirth cannot be in the future"
        ]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_booking_time_needs_its_utc_offset() -> None:
    naive = (datetime.now(UTC) + timedelta(days=7)).replace(tzinfo=None).isoformat()
    assert errors(AppointmentCreate, _booking(naive)) == ["Input should have timezone info"]


def test_a_booking_lasts_5_to_480_minutes_and_30_unless_said() -> None:
    body = _booking(datetime.now(UTC) + timedelta(days=7))
    assert AppointmentCreate.model_validate(body).duration_minutes == 30
    for minutes in (5, 480):
        assert (
            AppointmentCreate.model_validate({**body, "durationMinutes": minutes}).duration_minutes == minutes
        )
    for minutes in (4, 481):
        assert errors(AppointmentCreate, {**body, "durationMinutes": minutes})


# -- money -------------------------------------------------------------------------------------
def test_a_fee_is_positive_at_most_100000_with_two_places_and_travels_as_a_string() -> None:
    body = {"name": "Dr Grey", "specialty": "GP"}
    assert DoctorCreate.model_validate({**body, "fee": "100000"}).fee == Decimal("100000")
    for fee in ("0", "-1", "100000.01", "1.005"):
        assert errors(DoctorCreate, {**body, "fee": fee}), fee
    doctor = DoctorCreate.model_validate({**body, "fee": "120"})
    assert json.loads(doctor.model_dump_json(by_alias=True))["fee"] == "120.00"


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"name": "Ann\x00"}, "text must not contain NUL characters"),
        (
            {"name": "Ann", "attributes": {"note": "\ud800"}},
            "text must not contain lone surrogate characters",
        ),
        (
            {"name": "Ann", "attributes": {"score": float("nan")}},
            "numbers must be finite (no NaN or Infinity)",
        ),
        (
            {"name": "Ann", "attributes": {"scores": [float("inf")]}},
            "numbers must be finite (no NaN or Infinity)",
        ),
    ],
)
def test_an_unstorable_value_is_refused_with_the_rule_it_breaks(body: dict[str, Any], rule: str) -> None:
    """The 422's message names the rule (and never the value): what a client can fix."""
    with pytest.raises(ValidationError) as refused:
        schemas.PatientCreate.model_validate(body)
    assert [error["msg"] for error in refused.value.errors()] == [f"Value error, {rule}"]

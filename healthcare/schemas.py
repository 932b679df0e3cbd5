"""API models (camelCase on the wire): each entity's Create / Update / Public family, and pages."""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from healthcare.models import Role

T = TypeVar("T")

# A patient's free-form attributes, as sent and as stored after every merge: far below DynamoDB's
# 400 KB item limit, with the other fields (at most about 1 KB) beside them.
MAX_ATTRIBUTES_BYTES = 16_384
NO_NUL = r"^[^\x00]*$"  # for string query parameters

# Money travels as a decimal string ("120.00"), never a float.
Money = Annotated[
    Decimal,
    Field(gt=0, le=Decimal("100000"), max_digits=10, decimal_places=2),
    PlainSerializer(lambda d: f"{d:.2f}", return_type=str, when_used="json"),
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _bcrypt_fits(value: str) -> str:
    # bcrypt reads at most 72 bytes; longer secrets are refused rather than silently truncated.
    if len(value.encode()) > 72:
        raise ValueError("password must be at most 72 bytes in UTF-8")
    return value


Password = Annotated[str, StringConstraints(min_length=10, max_length=72), AfterValidator(_bcrypt_fits)]


def _lower(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, AfterValidator(_lower)]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_unstorable(value: Any) -> None:
    """Refuse, anywhere in a body, what the stores cannot hold: PostgreSQL text and JSONB have no NUL
    and no NaN or Infinity, and a lone UTF-16 surrogate (JSON's "\\ud800") is not encodable as UTF-8."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        if _SURROGATE.search(value):
            raise ValueError("text must not contain lone surrogate characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_unstorable(key)
            _reject_unstorable(item)
    elif isinstance(value, list):
        for item in value:
            _reject_unstorable(item)


class ApiIn(BaseModel):
    """Request bodies: camelCase, unknown fields refused rather than silently dropped."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_anywhere(cls, data: Any) -> Any:
        # Refused here as bad input (422), not later by the database as a 500 whose error names values.
        _reject_unstorable(data)
        return data


class ApiOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Page(ApiOut, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# -- users -------------------------------------------------------------------------------------
class Credentials(ApiIn):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class RegisterIn(ApiIn):
    email: Email
    password: Password


class UserCreate(RegisterIn):
    role: Role


class UserUpdate(ApiIn):
    is_active: bool | None = None
    role: Role | None = None


class PasswordChange(ApiIn):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    new_password: Password


class UserPublic(ApiOut):
    id: uuid.UUID
    email: str
    role: Role
    is_active: bool
    created_at: datetime


class TokenOut(BaseModel):
    """The login answer keeps OAuth2's snake_case names (clients of the original system rely on them)."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int


# -- doctors -----------------------------------------------------------------------------------
class DoctorCreate(ApiIn):
    name: Name
    specialty: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    fee: Money
    user_id: uuid.UUID | None = None


class DoctorPublic(ApiOut):
    id: uuid.UUID
    name: str
    specialty: str
    fee: Money
    user_id: uuid.UUID | None = None


# -- patients ----------------------------------------------------------------------------------
def attributes_size(value: dict[str, Any]) -> int:
    """Bytes of the attributes as JSON (ASCII-escaped, so never fewer than their UTF-8 size)."""
    return len(json.dumps(value, default=str))


def _check_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and attributes_size(value) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes must serialise to at most {MAX_ATTRIBUTES_BYTES} bytes")
    return value


def _not_future(value: date | None) -> date | None:
    if value is not None and value > datetime.now(UTC).date():
        raise ValueError("dateOfBirth cannot be in the future")
    if value is not None and value.year < 1880:
        raise ValueError("dateOfBirth is implausibly old")
    return value


Attributes = Annotated[dict[str, Any], AfterValidator(_check_attributes)]
BirthDate = Annotated[date, AfterValidator(_not_future)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)]
Condition = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class PatientCreate(ApiIn):
    name: Name
    date_of_birth: BirthDate | None = None
    gender: Short | None = None
    condition: Condition | None = None
    attributes: Attributes = Field(default_factory=dict)


class PatientUpdate(ApiIn):
    """Merge semantics: only the given fields change; `attributes` merges key by key (null deletes)."""

    name: Name | None = None
    date_of_birth: BirthDate | None = None
    gender: Short | None = None
    condition: Condition | None = None
    attributes: Attributes | None = None

    @field_validator("name")
    @classmethod
    def _name_not_null(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("name cannot be removed")
        return value


class PatientPublic(ApiOut):
    id: uuid.UUID
    name: str
    date_of_birth: date | None = None
    gender: str | None = None
    condition: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


# -- appointments ------------------------------------------------------------------------------
MAX_BOOKING_AHEAD = timedelta(days=730)


def _future_slot(value: datetime) -> datetime:
    now = datetime.now(UTC)
    if value <= now:
        raise ValueError("time must be in the future")
    if value > now + MAX_BOOKING_AHEAD:
        raise ValueError("time must be within two years")
    return value


class AppointmentCreate(ApiIn):
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    time: Annotated[AwareDatetime, AfterValidator(_future_slot)] = Field(
        description="ISO 8601 with a UTC offset, e.g. 2030-05-01T09:30:00+02:00"
    )
    duration_minutes: int = Field(default=30, ge=5, le=480)
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class AppointmentPublic(ApiOut):
    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    time: datetime
    duration_minutes: int
    status: str
    reason: str | None = None
    workflow_id: str
    created_at: datetime
    updated_at: datetime


# -- clinic ----------------------------------------------------------------------------------
class ClinicPublic(ApiOut):
    name: str
    currency: str = Field(description="ISO 4217 code of every amount the clinic bills")
    time_zone: str = Field(description="IANA zone in which the clinic's times are shown")
    analytics_ws_url: str = Field(description="Websocket of live analytics results (token as `?token=`)")


# -- payments ----------------------------------------------------------------------------------
class DeskPaymentIn(ApiIn):
    """A payment staff took at the desk. `reference` identifies it outside the platform (the receipt
    number, the card terminal's or the bank's reference): the same reference again is the same
    payment."""

    method: Literal["cash", "card", "transfer"]
    reference: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\x21-\x7e][\x20-\x7e]*$"
        ),
    ]
    amount: Money | None = None


class PaymentPublic(ApiOut):
    id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Money
    currency: str
    method: str
    provider: str
    reference: str | None
    status: str
    created_at: datetime
    confirmed_at: datetime | None


class CheckoutPublic(ApiOut):
    """Where the patient pays: open `checkoutUrl` (the provider's page); the invoice turns PAID once
    the provider confirms the payment to the API."""

    payment_id: uuid.UUID
    checkout_url: str
    status: str
    amount: Money
    currency: str


# -- audit -------------------------------------------------------------------------------------
class AuditPublic(ApiOut):
    seq: int
    at: datetime
    actor_id: uuid.UUID | None
    actor_role: str | None
    action: str
    resource_type: str
    resource_id: str | None
    client_ip: str | None
    request_id: str | None
    outcome: str
    detail: dict[str, Any] | None = None

    @field_validator("detail", mode="before")
    @classmethod
    def _parse_detail(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

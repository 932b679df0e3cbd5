"""The payment provider's callback signature: what the API accepts and what it refuses, offline."""

import json
import uuid
from decimal import Decimal

import pytest

from healthcare.payments import InvalidCallback, parse_event, sign, verify_signature

SECRET = b"shared-by-the-provider-and-the-api"
BODY = json.dumps(
    {
        "id": "evt_1",
        "type": "checkout.completed",
        "checkoutId": "chk_1",
        "merchantReference": str(uuid.UUID(int=7)),
        "amount": "120.00",
        "currency": "USD",
        "occurredAt": "2030-05-01T09:30:00+00:00",
    }
).encode()
NOW = 1_900_000_000


def test_a_fresh_callback_signed_with_the_secret_is_accepted() -> None:
    verify_signature(SECRET, sign(SECRET, BODY, timestamp=NOW - 10), BODY, now=NOW, tolerance=300)
    event = parse_event(BODY)
    assert (event.outcome, event.reference, event.amount) == ("paid", "chk_1", Decimal("120.00"))
    assert event.payment_id == uuid.UUID(int=7)


@pytest.mark.parametrize(
    ("header", "body", "why"),
    [
        (None, BODY, "no signature"),
        ("garbage", BODY, "malformed"),
        (sign(b"another secret", BODY, timestamp=NOW), BODY, "bad signature"),
        (sign(SECRET, BODY, timestamp=NOW), BODY.replace(b"120.00", b"1.00"), "bad signature"),
        (sign(SECRET, BODY, timestamp=NOW - 301), BODY, "outside the tolerance"),
        (sign(SECRET, BODY, timestamp=NOW + 301), BODY, "outside the tolerance"),
        (sign(SECRET, BODY, timestamp=NOW).replace("v1=", "v0="), BODY, "bad signature"),
    ],
)
def test_forged_altered_and_stale_callbacks_are_refused(header: str | None, body: bytes, why: str) -> None:
    with pytest.raises(InvalidCallback, match=why):
        verify_signature(SECRET, header, body, now=NOW, tolerance=300)


def test_an_unreadable_body_is_refused_even_when_signed() -> None:
    with pytest.raises(InvalidCallback, match="unreadable"):
        parse_event(b'{"type": "checkout.refunded"}')

"""Payment providers: the interface online payments go through, the signed-callback rule every
provider follows here, and the client of the local stack's provider.

A patient's payment is a hosted checkout: the API asks the provider for a checkout (amount, currency,
our payment id as the merchant reference), the patient pays on the provider's page, and the provider
tells the API by a callback whose body is signed with a secret only the two share:

    Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A callback is accepted only with a valid signature and a timestamp within the tolerance (a replay of
an old callback is refused; a replay inside the window changes nothing, since a payment is confirmed
once). Production plugs in a real provider by implementing `PaymentProvider` (its own checkout API
and signature scheme); `LocalProvider` talks to devstack/payment_provider.py, which the local stack
runs for real (a process with its own state, page and retried callbacks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, Protocol

import httpx

from healthcare.settings import Settings

SIGNATURE_HEADER = "Payment-Signature"
MAX_CALLBACK_BYTES = 64 * 1024


class ProviderUnavailable(Exception):
    """The provider did not answer, or refused the checkout: the patient may try again."""


class InvalidCallback(Exception):
    """A callback that is not from the provider, or not now: the message says which check failed."""


@dataclass(frozen=True)
class CheckoutRequest:
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    description: str
    return_url: str


@dataclass(frozen=True)
class Checkout:
    reference: str  # the provider's id of the checkout (unique per provider)
    url: str  # where the patient pays


@dataclass(frozen=True)
class ProviderEvent:
    event_id: str
    outcome: Literal["paid", "failed"]
    reference: str  # the checkout it is about
    payment_id: uuid.UUID  # our merchant reference, as we gave it
    amount: Decimal
    currency: str
    at: datetime


class PaymentProvider(Protocol):
    name: str

    async def create_checkout(self, request: CheckoutRequest) -> Checkout: ...

    def verify_callback(self, body: bytes, headers: Mapping[str, str], *, now: float) -> ProviderEvent: ...

    async def aclose(self) -> None: ...


def sign(secret: bytes, body: bytes, *, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, header: str | None, body: bytes, *, now: float, tolerance: float) -> None:
    """Raise InvalidCallback unless `header` signs `body` with `secret` within `tolerance` of `now`."""
    if not header:
        raise InvalidCallback("no signature")
    if len(body) > MAX_CALLBACK_BYTES:
        raise InvalidCallback("body too large")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        raise InvalidCallback("malformed signature") from None
    expected = sign(secret, body, timestamp=timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise InvalidCallback("bad signature")
    if abs(now - timestamp) > tolerance:
        raise InvalidCallback("signature timestamp outside the tolerance (a replay?)")


def parse_event(body: bytes) -> ProviderEvent:
    """The callback body of the local provider (and of any provider that speaks its format)."""
    try:
        data = json.loads(body)
        kind = {"checkout.completed": "paid", "checkout.cancelled": "failed", "checkout.expired": "failed"}
        return ProviderEvent(
            event_id=str(data["id"]),
            outcome=kind[data["type"]],  # type: ignore[arg-type]
            reference=str(data["checkoutId"]),
            payment_id=uuid.UUID(str(data["merchantReference"])),
            amount=Decimal(str(data["amount"])),
            currency=str(data["currency"]),
            at=datetime.fromisoformat(str(data["occurredAt"])),
        )
    except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
        raise InvalidCallback("unreadable callback body") from exc


class LocalProvider:
    """The client of the local stack's provider (devstack/payment_provider.py)."""

    name = "local"

    def __init__(self, *, base_url: str, api_key: str, webhook_secret: bytes, tolerance: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=10, headers={"Authorization": f"Bearer {api_key}"}
        )
        self._secret = webhook_secret
        self._tolerance = tolerance

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        body = {
            "amount": f"{request.amount:.2f}",
            "currency": request.currency,
            "merchantReference": str(request.payment_id),
            "description": request.description,
            "returnUrl": request.return_url,
        }
        try:
            # The payment id as idempotency key: a retried request gets the same checkout.
            resp = await self._http.post(
                "/v1/checkouts", json=body, headers={"Idempotency-Key": str(request.payment_id)}
            )
            resp.raise_for_status()
            data = resp.json()
            return Checkout(reference=str(data["id"]), url=str(data["url"]))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ProviderUnavailable(type(exc).__name__) from exc

    def verify_callback(self, body: bytes, headers: Mapping[str, str], *, now: float) -> ProviderEvent:
        verify_signature(
            self._secret, headers.get(SIGNATURE_HEADER), body, now=now, tolerance=self._tolerance
        )
        return parse_event(body)

    async def aclose(self) -> None:
        await self._http.aclose()


def provider_from_settings(settings: Settings) -> PaymentProvider | None:
    """The configured provider; None when online payment is off (HC_PAYMENT_PROVIDER=none)."""
    if settings.payment_provider == "none":
        return None
    return LocalProvider(
        base_url=settings.payment_provider_url,
        api_key=settings.payment_provider_api_key.get_secret_value(),
        webhook_secret=settings.payment_webhook_secret.get_secret_value().encode(),
        tolerance=settings.payment_webhook_tolerance_seconds,
    )

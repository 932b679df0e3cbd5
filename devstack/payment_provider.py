"""The local stack's payment provider: hosted checkouts and signed callbacks, as a real provider does.

A process of its own (like any outside provider), with its own state (SQLite in the stack's data
folder) and its own secrets (the API key the platform calls it with, the webhook secret it signs
callbacks with):

- `POST /v1/checkouts` (Bearer API key, `Idempotency-Key`) {amount, currency, merchantReference,
  description, returnUrl} → 201 {id, url, status}: a checkout the patient pays on `url`;
- `GET /checkout/{id}`: the payment page (amount, Pay and Cancel buttons);
- `POST /checkout/{id}/pay` and `/cancel`: the patient's choice; the provider then sends the callback
  (`checkout.completed` or `checkout.cancelled`, signed, see healthcare/payments.py) to the webhook
  URL and redirects the browser to `returnUrl`;
- `GET /v1/checkouts/{id}` (Bearer): a checkout's state.

Callbacks are delivered at least once: a failed delivery (the API down, or answering 5xx) is retried
with back-off from the stored queue, also after a restart, for about an hour. Nothing here is a fake
of the platform's code: it only speaks the provider's side of the protocol.

    python -m devstack.payment_provider HOST:PORT --db FILE --webhook-url URL
    (HC_PAYMENT_PROVIDER_API_KEY, HC_PAYMENT_WEBHOOK_SECRET in the environment)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from healthcare.payments import SIGNATURE_HEADER, sign
from healthcare.settings import get_settings

MAX_ATTEMPTS = 15  # 1, 2, 4 ... 60 s apart: about an hour of retries
SCHEMA = """
CREATE TABLE IF NOT EXISTS checkouts (
    id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE NOT NULL, amount TEXT NOT NULL,
    currency TEXT NOT NULL, merchant_reference TEXT NOT NULL, description TEXT NOT NULL,
    return_url TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL, settled_at TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id TEXT PRIMARY KEY, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, delivered_at TEXT, last_status TEXT
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Provider:
    def __init__(self, *, db: Path, webhook_url: str, api_key: str, secret: bytes, public_url: str) -> None:
        db.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._webhook_url = webhook_url
        self._api_key = api_key
        self._secret = secret
        self._public_url = public_url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=10)
        self.wake = asyncio.Event()

    def authorized(self, request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return secrets.compare_digest(given.encode(), f"Bearer {self._api_key}".encode())

    def checkout(self, checkout_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM checkouts WHERE id = ?", (checkout_id,)
        ).fetchone()
        return row

    def public(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "url": f"{self._public_url}/checkout/{row['id']}",
            "status": row["status"],
            "amount": row["amount"],
            "currency": row["currency"],
            "merchantReference": row["merchant_reference"],
        }

    def create(self, key: str, body: dict[str, Any]) -> sqlite3.Row:
        existing = self._db.execute("SELECT * FROM checkouts WHERE idempotency_key = ?", (key,)).fetchone()
        if existing is not None:
            return existing  # type: ignore[no-any-return]
        checkout_id = "chk_" + secrets.token_urlsafe(18)
        self._db.execute(
            "INSERT INTO checkouts VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, NULL)",
            (
                checkout_id,
                key,
                body["amount"],
                body["currency"],
                body["merchantReference"],
                body["description"],
                body["returnUrl"],
                _now(),
            ),
        )
        row = self.checkout(checkout_id)
        assert row is not None
        return row

    def settle(self, row: sqlite3.Row, outcome: str) -> None:
        """Paid or cancelled, once; the callback is queued in the same transaction."""
        event = {
            "id": "evt_" + uuid.uuid4().hex,
            "type": "checkout.completed" if outcome == "paid" else "checkout.cancelled",
            "checkoutId": row["id"],
            "merchantReference": row["merchant_reference"],
            "amount": row["amount"],
            "currency": row["currency"],
            "occurredAt": _now(),
        }
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            changed = self._db.execute(
                "UPDATE checkouts SET status = ?, settled_at = ? WHERE id = ? AND status = 'open'",
                (outcome, event["occurredAt"], row["id"]),
            ).rowcount
            if changed:
                self._db.execute(
                    "INSERT INTO deliveries (event_id, body, next_at) VALUES (?, ?, ?)",
                    (event["id"], json.dumps(event).encode(), time.time()),
                )
        self.wake.set()

    async def deliver_due(self) -> None:
        due = self._db.execute(
            "SELECT * FROM deliveries WHERE delivered_at IS NULL AND attempts < ? AND next_at <= ?",
            (MAX_ATTEMPTS, time.time()),
        ).fetchall()
        for row in due:
            body = bytes(row["body"])
            headers = {
                "content-type": "application/json",
                SIGNATURE_HEADER: sign(self._secret, body, timestamp=int(time.time())),
            }
            try:
                resp = await self._http.post(self._webhook_url, content=body, headers=headers)
                status = str(resp.status_code)
                ok = resp.is_success
            except httpx.HTTPError as exc:
                status, ok = type(exc).__name__, False
            attempts = row["attempts"] + 1
            self._db.execute(
                "UPDATE deliveries SET attempts = ?, last_status = ?, delivered_at = ?, next_at = ? "
                "WHERE event_id = ?",
                (
                    attempts,
                    status,
                    _now() if ok else None,
                    time.time() + min(2**attempts, 60),
                    row["event_id"],
                ),
            )

    async def deliver_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.deliver_due()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0)

    async def aclose(self) -> None:
        await self._http.aclose()
        self._db.close()


def _page(row: sqlite3.Row) -> str:
    e = html.escape
    state = "" if row["status"] == "open" else f"<p>This checkout is {e(row['status'])}.</p>"
    buttons = (
        f'<form method="post" action="/checkout/{e(row["id"])}/pay"><button>Pay {e(row["currency"])} '
        f"{e(row['amount'])}</button></form>"
        f'<form method="post" action="/checkout/{e(row["id"])}/cancel"><button>Cancel</button></form>'
        if row["status"] == "open"
        else ""
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Local payment provider</title></head>"
        f"<body><h1>Local payment provider</h1><p>{e(row['description'])}</p>"
        f"<p>Amount: {e(row['currency'])} {e(row['amount'])}</p>{state}{buttons}</body></html>"
    )


def build_app(provider: Provider) -> Starlette:
    async def create(request: Request) -> Response:
        if not provider.authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        key = request.headers.get("idempotency-key", "")
        try:
            body = await request.json()
            amount = Decimal(str(body["amount"]))
            if amount <= 0 or not 1 <= len(key) <= 200 or not str(body["returnUrl"]).startswith("http"):
                raise ValueError("bad checkout")
            body = {**body, "amount": f"{amount:.2f}", "description": str(body.get("description", ""))[:200]}
            row = provider.create(key, body)
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return JSONResponse({"error": "invalid checkout request"}, status_code=400)
        return JSONResponse(provider.public(row), status_code=201)

    async def show(request: Request) -> Response:
        if not provider.authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        row = provider.checkout(request.path_params["checkout_id"])
        return JSONResponse(provider.public(row)) if row else JSONResponse({"error": "not found"}, 404)

    async def page(request: Request) -> Response:
        row = provider.checkout(request.path_params["checkout_id"])
        if row is None:
            return HTMLResponse("<p>No such checkout.</p>", status_code=404)
        return HTMLResponse(_page(row))

    def settle(outcome: str) -> Any:
        async def handler(request: Request) -> Response:
            row = provider.checkout(request.path_params["checkout_id"])
            if row is None:
                return HTMLResponse("<p>No such checkout.</p>", status_code=404)
            provider.settle(row, outcome)
            separator = "&" if "?" in row["return_url"] else "?"
            return RedirectResponse(f"{row['return_url']}{separator}checkout={row['id']}", status_code=303)

        return handler

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        deliveries = asyncio.create_task(provider.deliver_forever())
        yield
        deliveries.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deliveries
        await provider.aclose()

    return Starlette(
        routes=[
            Route("/v1/checkouts", create, methods=["POST"]),
            Route("/v1/checkouts/{checkout_id}", show, methods=["GET"]),
            Route("/checkout/{checkout_id}", page, methods=["GET"]),
            Route("/checkout/{checkout_id}/pay", settle("paid"), methods=["POST"]),
            Route("/checkout/{checkout_id}/cancel", settle("cancelled"), methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.payment_provider", description=__doc__)
    parser.add_argument("listen", help="HOST:PORT")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--webhook-url", required=True)
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    settings = get_settings()
    provider = Provider(
        db=args.db,
        webhook_url=args.webhook_url,
        api_key=settings.payment_provider_api_key.get_secret_value(),
        secret=settings.payment_webhook_secret.get_secret_value().encode(),
        public_url=f"http://{host}:{port}",
    )
    uvicorn.run(build_app(provider), host=host, port=int(port), log_level="warning")


if __name__ == "__main__":
    main()

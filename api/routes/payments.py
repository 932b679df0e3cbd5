"""The payment provider's callback: the one route without a bearer token, authenticated by the
provider's signature instead (healthcare/payments.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import PaymentProviderDep, SessionDep, SettingsDep, TemporalDep, request_context
from api.refusals import record_refusal
from healthcare.payments import MAX_CALLBACK_BYTES, InvalidCallback
from services import payments

router = APIRouter(prefix="/payments", tags=["payments"])


@router.post(
    "/webhook",
    responses={
        200: {"description": "Handled (or ignored: nothing the platform knows)"},
        400: {"description": "Not signed by the provider, or not now (replayed)"},
        503: {"description": "Billing could not be reached: the provider delivers again later"},
    },
)
async def webhook(
    request: Request,
    session: SessionDep,
    temporal: TemporalDep,
    provider: PaymentProviderDep,
    settings: SettingsDep,
) -> JSONResponse:
    """Called by the payment provider when a checkout is paid or cancelled."""
    ctx = request_context(request, None, settings)
    body = await request.body()
    try:
        if len(body) > MAX_CALLBACK_BYTES:
            raise InvalidCallback("body too large")
        outcome = await payments.handle_callback(
            session,
            temporal,
            provider,
            ctx,
            body=body,
            headers=request.headers,
            deadline_seconds=settings.temporal_update_timeout_seconds,
        )
    except InvalidCallback as exc:
        if request.app.state.refusals.admit(ctx.client_ip, "payment_callback", str(exc)):
            await record_refusal(request, ctx, action="payment_callback", detail={"reason": str(exc)})
        return JSONResponse({"detail": "invalid callback"}, status_code=400)
    return JSONResponse({"status": outcome})

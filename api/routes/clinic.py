"""What a client needs to know about the clinic before signing in: name, currency, time zone, live feed."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import SettingsDep
from healthcare.schemas import ClinicPublic

router = APIRouter(prefix="/clinic", tags=["clinic"])


@router.get("", response_model=ClinicPublic)
async def get_clinic(request: Request, settings: SettingsDep) -> ClinicPublic:
    """Public (no token): the sign-in page shows the clinic's name; nothing here names a person."""
    ws_url = settings.public_ws_url
    if ws_url is None:
        scheme = "wss" if request.url.scheme == "https" else "ws"
        ws_url = f"{scheme}://{request.url.hostname}:{settings.ws_port}/ws/analytics"
    return ClinicPublic(
        name=settings.clinic_name,
        currency=settings.clinic_currency,
        time_zone=settings.clinic_time_zone,
        analytics_ws_url=ws_url,
    )

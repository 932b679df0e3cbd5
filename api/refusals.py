"""Audit records of refused requests: every 403, and bad tokens sampled so they cannot flood the trail.

Each audit record takes the chain lock, so one record per refused token would let anyone who sends
garbage tokens serialise the whole API on that lock. Bad tokens are therefore sampled: one record
per (client address, account, reason) per window, and at most `max_per_window` in all per process;
what is left out is counted (`healthcare_audit_refusals_suppressed`). A 403 comes from an
authenticated account, which the trail should see every time (each costs a password or a session).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter
from starlette.requests import Request

from healthcare.logging import get_logger
from services import audit
from services.context import RequestContext

log = get_logger(__name__)

SUPPRESSED = Counter(
    "healthcare_audit_refusals_suppressed", "Refused tokens not written to the audit trail (sampled out)"
)


class RefusalSampler:
    """Which refusals to record: the first of each key in a window, and at most `max_per_window`."""

    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        max_per_window: int = 120,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_seconds
        self._max = max_per_window
        self._clock = clock
        self._started = clock()
        self._seen: set[tuple[str | None, ...]] = set()

    def admit(self, *key: str | None) -> bool:
        now = self._clock()
        if now - self._started >= self._window:
            self._started, self._seen = now, set()
        if key in self._seen or len(self._seen) >= self._max:
            SUPPRESSED.inc()
            return False
        self._seen.add(key)
        return True


def _resource(request: Request) -> tuple[str, str | None]:
    """The kind of resource a route is about (its first path segment under /api/v1) and its id."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    parts = [p for p in route.split("/") if p and p not in {"api", "v1"}]
    ids = [str(v) for v in request.path_params.values()]
    return (parts[0] if parts else "api"), (ids[0] if ids else None)


async def record_refusal(
    request: Request,
    ctx: RequestContext,
    *,
    action: str,
    actor_id: uuid.UUID | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """One `denied` record for a refused request, in a session of its own (the request's may be
    unusable by now). A trail that cannot be written is logged, never turned into a 500."""
    resource_type, resource_id = _resource(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    try:
        async with request.app.state.sessions() as session:
            await audit.record(
                session,
                ctx,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                outcome="denied",
                actor_id=actor_id,
                detail={"method": request.method, "route": route, **(detail or {})},
            )
    except Exception as exc:  # noqa: BLE001 - the refusal stands whatever happens to its record
        log.warning("refusal not audited", route=route, error=type(exc).__name__)

"""Request ids and access logs: method, route template, status and duration; no bodies, no query strings.

The request id is the request's correlation id (healthcare.correlation): it is bound for the whole
request, so the workflows the request starts, the events and invoices they lead to and every log
line on the way carry it, and it is answered in `X-Request-ID`.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from healthcare import correlation
from healthcare.logging import get_logger

log = get_logger("api.access")


def incoming_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID, when it is a usable id.

    Seam for issue #11 (trusted proxies): an id should be taken only from a proxy we trust, since
    any client can send one; until that setting exists every caller's id is accepted, as before.
    """
    value = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return value if correlation.valid(value) else None


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so streaming and background tasks are not buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or correlation.new()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        with correlation.bound(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                log.info(
                    "request",
                    method=scope["method"],
                    route=getattr(route, "path", "unmatched"),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

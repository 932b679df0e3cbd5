"""Request bodies above HC_MAX_BODY_BYTES answer 413 ({"detail": ...}) before they are read.

A declared `Content-Length` over the limit is refused before a byte of the body is read; a body
without one (chunked) is counted as it streams in, and the chunk that crosses the limit ends the
request, so no more than the limit (plus one chunk) is ever held. (Starlette 1.x has a limit of
its own, FastAPI's `max_body_size`, but it answers in plain text, and every error of this API is
JSON.)
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_TOO_LARGE = 413


class BodyTooLarge(HTTPException):
    """Raised from `receive`: FastAPI passes an HTTPException raised while it reads a body on to the
    error handlers (anything else it turns into a 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(_TOO_LARGE, detail=f"request body larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": BodyTooLarge(self.max_bytes).detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": _TOO_LARGE, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)  # nothing read; the server closes the connection after it
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:  # read by something other than a FastAPI route
            if not started:
                await self._refuse(send)

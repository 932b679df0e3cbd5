"""Local Lambda front door: the AWS Invoke API on one port, spread over a pool of runtime emulators.

The AWS Lambda runtime interface emulator runs one invocation at a time and crashes when a second
arrives while one is in flight (aws-lambda-runtime-interface-emulator#97). AWS itself runs one
execution environment per concurrent invocation; this gateway does the same with N emulators:
each request waits for a free emulator, so callers see Lambda's behaviour and never crash one.

For the chaos suite (bench/chaos.py) it can misbehave on purpose: `POST /_faults` with
`{"errors": N, "timeouts": M, "timeout_seconds": S}` makes the next N invocations answer a 500
service error and the M after them hang S seconds, then answer as Lambda does when a function runs
past its timeout (200, `X-Amz-Function-Error: Unhandled`, "Task timed out"). Health invocations
(`{"healthcheck": true}`) are never faulted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
PASS_HEADERS = (
    "x-amz-function-error",
    "x-amz-log-result",
    "x-amz-executed-version",
    "content-type",
)


def _is_function_error(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.startswith(b"Task timed out")
    return isinstance(payload, dict) and "errorType" in payload and "statusCode" not in payload


def build_app(backends: list[str], *, timeout: float) -> Starlette:
    faults = {"errors": 0, "timeouts": 0, "timeout_seconds": 0.0}
    free: asyncio.Queue[str] = asyncio.Queue()
    for backend in backends:
        free.put_nowait(backend)
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=2.0))

    async def injected(body: bytes) -> Response | None:
        if b'"healthcheck"' in body:
            return None
        if faults["errors"] > 0:
            faults["errors"] -= 1
            return JSONResponse({"Type": "Service", "Message": "injected fault"}, status_code=500)
        if faults["timeouts"] > 0:
            faults["timeouts"] -= 1
            seconds = faults["timeout_seconds"]
            await asyncio.sleep(seconds)  # the function "runs" past its timeout
            return JSONResponse(
                {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {seconds:.2f} seconds",
                },
                headers={"X-Amz-Function-Error": "Unhandled"},
            )
        return None

    async def set_faults(request: Request) -> Response:
        wanted = await request.json()
        for name, value in faults.items():
            if name in wanted:
                faults[name] = type(value)(wanted[name])
        return JSONResponse(faults)

    async def invoke(request: Request) -> Response:
        body = await request.body()
        if (fault := await injected(body)) is not None:
            return fault
        backend = await free.get()
        try:
            upstream = await client.post(
                f"{backend}{request.url.path}",
                content=body,
                headers={k: v for k, v in request.headers.items() if k.lower().startswith("x-amz-")},
            )
        except httpx.HTTPError as exc:
            return JSONResponse(
                {"Type": "Service", "Message": f"emulator unavailable: {type(exc).__name__}"},
                status_code=502,
            )
        finally:
            free.put_nowait(backend)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASS_HEADERS}
        if upstream.status_code == 200 and _is_function_error(upstream.content):
            # AWS flags a handler exception with this header; the emulator does not (upstream #20).
            headers["X-Amz-Function-Error"] = "Unhandled"
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    async def health(_: Request) -> Response:
        return JSONResponse({"backends": len(backends), "free": free.qsize(), "faults": faults})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(
        routes=[
            Route(INVOKE_PATH, invoke, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/_faults", set_faults, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    backends = [f"http://{b}" for b in sys.argv[2:]]
    timeout = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "60")) + 5
    uvicorn.run(build_app(backends, timeout=timeout), host=host, port=int(port), log_level="warning")


if __name__ == "__main__":
    main()

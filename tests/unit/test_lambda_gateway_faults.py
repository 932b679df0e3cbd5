"""The local Lambda gateway's fault switch (used by the chaos suite): 500s, then timeouts, then normal."""

import json

import httpx

from devstack.lambda_gateway import INVOKE_PATH, build_app

PATH = INVOKE_PATH.format(name="function")


async def test_injected_errors_then_timeouts_are_spent_one_invocation_each() -> None:
    app = build_app(["http://127.0.0.1:9"], timeout=1)  # a port nothing listens on: no backend
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        resp = await http.post("/_faults", json={"errors": 2, "timeouts": 1, "timeout_seconds": 0.01})
        assert resp.json() == {"errors": 2, "timeouts": 1, "timeout_seconds": 0.01}

        health = await http.post(PATH, content=json.dumps({"healthcheck": True}))
        assert health.status_code == 502  # never faulted: it went to the (absent) emulator

        first, second = [await http.post(PATH, content=b'{"invoiceId": "x"}') for _ in range(2)]
        assert (first.status_code, second.status_code) == (500, 500)
        timed_out = await http.post(PATH, content=b'{"invoiceId": "x"}')
        assert timed_out.status_code == 200
        assert timed_out.headers["x-amz-function-error"] == "Unhandled"
        assert "Task timed out" in timed_out.json()["errorMessage"]

        after = await http.post(PATH, content=b'{"invoiceId": "x"}')
        assert after.status_code == 502  # faults spent: back to forwarding
        assert (await http.get("/healthz")).json()["faults"] == {
            "errors": 0,
            "timeouts": 0,
            "timeout_seconds": 0.01,
        }

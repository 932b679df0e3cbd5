"""The API's own /metrics, and its logs: ids, routes and statuses, never patient data (README)."""

from __future__ import annotations

import re
import uuid

import httpx

from devstack.paths import Paths
from healthcare.settings import Settings
from tests.integration.factories import Account, create_patient
from tests.waiting import eventually

V1 = "/api/v1"
READ = 'http_requests_total{handler="/api/v1/patients/{patient_id}",method="GET",status="2xx"}'


def _sample(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_requests_by_route_template_without_ids(
    api: httpx.AsyncClient, staff: Account
) -> None:
    patient = await create_patient(api, staff)
    before = _sample((await api.get("/metrics")).text, READ)
    for _ in range(2):
        assert (await api.get(f"{V1}/patients/{patient['id']}", headers=staff.headers)).status_code == 200

    resp = await api.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert _sample(resp.text, READ) == before + 2
    assert "process_resident_memory_bytes" in resp.text
    assert patient["id"] not in resp.text and patient["name"] not in resp.text


async def test_the_api_log_names_requests_but_no_patient_data(
    api: httpx.AsyncClient, staff: Account, paths: Paths, settings: Settings
) -> None:
    marker = uuid.uuid4().hex[:10]
    name, condition = f"Quillon Marsh {marker}", f"rare-condition-{marker}"
    request_id = f"phi-check-{marker}"
    headers = {**staff.headers, "X-Request-ID": request_id}
    patient = await create_patient(api, staff, name=name, condition=condition, dateOfBirth="1961-07-23")
    assert (await api.get(f"{V1}/patients/{patient['id']}", headers=headers)).status_code == 200
    assert (await api.get(f"{V1}/patients", params={"q": name}, headers=headers)).status_code == 200
    bad = {"name": name, "dateOfBirth": "2999-01-01"}  # refused: the error is logged, not the body
    assert (await api.post(f"{V1}/patients", json=bad, headers=headers)).status_code == 422

    log = paths.logs / "api.log"

    def logged() -> str:
        text = log.read_text(errors="replace")
        assert text.count(request_id) >= 3, f"{request_id} not yet in {log}"
        return text

    text = await eventually(logged, timeout=30, what="the three requests in the API log")
    lines = [line for line in text.splitlines() if request_id in line]
    assert any("/patients/{patient_id}" in line for line in lines)  # the route's template, not the id
    for secret in (name, marker, condition, "1961-07-23", "2999-01-01"):
        assert secret not in text.replace(request_id, ""), f"patient data in the API log: {secret}"

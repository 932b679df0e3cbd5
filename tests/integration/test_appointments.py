"""Appointments over HTTP on the real stack: the row, the Kafka event, races, retries and a killed worker."""

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.paths import Paths
from healthcare.settings import Settings
from tests.integration.factories import (
    Account,
    create_doctor,
    create_patient,
    create_user,
    register_patient_user,
)
from tests.integration.kafka_probe import TopicProbe
from tests.waiting import eventually

V1 = "/api/v1"


def _slot(days: float = 3, minute: int | None = None) -> str:
    base = datetime.now(UTC) + timedelta(days=days)
    base = base.replace(second=0, microsecond=0, minute=minute if minute is not None else base.minute)
    return base.isoformat()


async def _book(
    api: httpx.AsyncClient, who: Account, patient: str, doctor: str, **extra: Any
) -> httpx.Response:
    headers = {**who.headers, **extra.pop("headers", {})}
    body = {
        "patientId": patient,
        "doctorId": doctor,
        "time": extra.pop("time", _slot(uuid.uuid4().int % 300 + 1)),
        **extra,
    }
    return await api.post(f"{V1}/appointments", json=body, headers=headers)


def _events_for(values: list[dict[str, Any]], appointment_id: str) -> list[dict[str, Any]]:
    return [v for v in values if v.get("appointmentId") == appointment_id]


async def test_booking_stores_the_row_and_publishes_the_contract_event(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        resp = await _book(api, staff, patient["id"], doctor["id"], durationMinutes=45, reason="check-up")
        assert resp.status_code == 201, resp.text
        appt = resp.json()
        assert appt["status"] == "BOOKED" and appt["durationMinutes"] == 45
        assert appt["workflowId"] == f"appointment-{appt['id']}"
        values = await probe.collect(until=lambda vs: _events_for(vs, appt["id"]))
    events = _events_for(values, appt["id"])
    assert len(events) == 1
    event = events[0]
    assert set(event) == {"event", "eventId", "appointmentId", "patientId", "doctorId", "time", "occurredAt"}
    assert event["event"] == "APPOINTMENT_CREATED"
    assert (event["patientId"], event["doctorId"]) == (patient["id"], doctor["id"])
    assert datetime.fromisoformat(event["time"]) == datetime.fromisoformat(appt["time"])
    got = await api.get(f"{V1}/appointments/{appt['id']}", headers=staff.headers)
    assert got.status_code == 200 and got.json() == appt


async def test_cancel_publishes_the_cancellation_and_is_final(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    appt = (await _book(api, staff, patient["id"], doctor["id"])).json()
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        resp = await api.post(f"{V1}/appointments/{appt['id']}/cancel", headers=staff.headers)
        assert resp.status_code == 200 and resp.json()["status"] == "CANCELLED"
        values = await probe.collect(until=lambda vs: _events_for(vs, appt["id"]))
    assert [e["event"] for e in _events_for(values, appt["id"])] == ["APPOINTMENT_CANCELLED"]
    for action in ("cancel", "complete", "no-show"):
        again = await api.post(f"{V1}/appointments/{appt['id']}/{action}", headers=staff.headers)
        assert again.status_code == 409, action
    # The slot is free again.
    rebook = await _book(api, staff, patient["id"], doctor["id"], time=appt["time"])
    assert rebook.status_code == 201


async def test_concurrent_bookings_of_one_slot_one_wins(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor = await create_doctor(api, admin)
    p1, p2 = await create_patient(api, staff), await create_patient(api, staff)
    slot = _slot(5, minute=0)
    first, second = await asyncio.gather(
        _book(api, staff, p1["id"], doctor["id"], time=slot),
        _book(api, staff, p2["id"], doctor["id"], time=slot),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    loser = first if first.status_code == 409 else second
    assert "already has an appointment" in loser.json()["detail"]
    # Overlap, not only the same start: 30 minutes from 10:00 blocks 10:15.
    later = (datetime.fromisoformat(slot) + timedelta(minutes=15)).isoformat()
    assert (await _book(api, staff, p2["id"], doctor["id"], time=later)).status_code == 409
    listed = (
        await api.get(f"{V1}/appointments", params={"doctorId": doctor["id"]}, headers=staff.headers)
    ).json()
    assert listed["total"] == 1


async def test_idempotency_key_returns_the_same_appointment(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    slot = _slot(7)
    responses = await asyncio.gather(
        *(_book(api, staff, patient["id"], doctor["id"], time=slot, headers=key) for _ in range(3))
    )
    assert [r.status_code for r in responses] == [201, 201, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (
        await api.get(f"{V1}/appointments", params={"patientId": patient["id"]}, headers=staff.headers)
    ).json()
    assert listed["total"] == 1
    other_body = await _book(api, staff, patient["id"], doctor["id"], time=_slot(8), headers=key)
    assert other_body.status_code == 422


async def test_bad_input_is_refused_before_any_workflow(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    naive = (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for extra in (
        {"time": naive},
        {"time": past},
        {"time": "tomorrow"},
        {"durationMinutes": 0},
        {"durationMinutes": 481},
    ):
        resp = await _book(api, staff, patient["id"], doctor["id"], **extra)
        assert resp.status_code == 422, extra
    assert (await _book(api, staff, patient["id"], str(uuid.uuid4()))).status_code == 404
    assert (await _book(api, staff, str(uuid.uuid4()), doctor["id"])).status_code == 404
    listed = (
        await api.get(f"{V1}/appointments", params={"patientId": patient["id"]}, headers=staff.headers)
    ).json()
    assert listed["total"] == 0


async def test_role_rules(api: httpx.AsyncClient, admin: Account, staff: Account) -> None:
    doctor_user = await create_user(api, admin, "doctor")
    doctor = await create_doctor(api, admin, user=doctor_user)
    other_doctor = await create_doctor(api, admin)
    alice, bob = await register_patient_user(api), await register_patient_user(api)
    alice_rec = await create_patient(api, alice)
    bob_rec = await create_patient(api, bob)

    mine = await _book(api, alice, alice_rec["id"], doctor["id"])
    assert mine.status_code == 201
    assert (await _book(api, alice, bob_rec["id"], doctor["id"])).status_code == 404
    bobs = (await _book(api, bob, bob_rec["id"], other_doctor["id"])).json()

    assert (await api.get(f"{V1}/appointments/{bobs['id']}", headers=alice.headers)).status_code == 404
    assert (
        await api.post(f"{V1}/appointments/{bobs['id']}/cancel", headers=alice.headers)
    ).status_code == 404
    alice_list = (await api.get(f"{V1}/appointments", params={"limit": 100}, headers=alice.headers)).json()
    assert [a["id"] for a in alice_list["items"]] == [mine.json()["id"]]
    assert (
        await api.post(f"{V1}/appointments/{mine.json()['id']}/complete", headers=alice.headers)
    ).status_code == 403

    # The doctor now sees Alice (an appointment with them) but not Bob.
    assert (await api.get(f"{V1}/patients/{alice_rec['id']}", headers=doctor_user.headers)).status_code == 200
    assert (await api.get(f"{V1}/patients/{bob_rec['id']}", headers=doctor_user.headers)).status_code == 404
    doc_list = (await api.get(f"{V1}/appointments", headers=doctor_user.headers)).json()
    assert [a["id"] for a in doc_list["items"]] == [mine.json()["id"]]
    assert (await _book(api, doctor_user, alice_rec["id"], other_doctor["id"])).status_code == 403

    done = await api.post(f"{V1}/appointments/{mine.json()['id']}/complete", headers=staff.headers)
    assert done.status_code == 200 and done.json()["status"] == "COMPLETED"
    assert (
        await api.post(f"{V1}/appointments/{mine.json()['id']}/cancel", headers=alice.headers)
    ).status_code == 409


async def test_killed_worker_between_store_and_publish_still_publishes(
    api: httpx.AsyncClient,
    admin: Account,
    staff: Account,
    settings: Settings,
    paths: Paths,
    engine: AsyncEngine,
) -> None:
    """Freeze the broker so publishing hangs after the row is stored, kill the worker, then let
    both come back: the event, queued in the outbox with the row, is published by the restarted
    worker's relay, under one event id however often it went out."""
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    kafka_pid = int((paths.run / "kafka.pid").read_text())
    async with TopicProbe(settings, settings.topic_appointment_events) as probe:
        os.kill(kafka_pid, signal.SIGSTOP)
        try:
            resp = await _book(api, staff, patient["id"], doctor["id"])
            assert resp.status_code == 201  # stored; the publish is now stuck on the frozen broker
            worker_pid = int((paths.run / "worker.pid").read_text())
            os.kill(worker_pid, signal.SIGKILL)
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
        appt = resp.json()
        values = await probe.collect(until=lambda vs: _events_for(vs, appt["id"]), timeout=120, settle=3)
    events = _events_for(values, appt["id"])
    assert events, "the event never reached Kafka"
    # Delivery is at-least-once; the event id is stable, so consumers see one distinct event.
    assert {e["eventId"] for e in events} == {events[0]["eventId"]}
    assert int((paths.run / "worker.pid").read_text()) != worker_pid
    # The killed relay's claim rolled back with its connection; the new worker's relay marks the row.
    query = text("SELECT published_at FROM outbox WHERE event_id = :id")

    async def marked() -> bool:
        async with engine.connect() as conn:
            return await conn.scalar(query, {"id": uuid.UUID(events[0]["eventId"])}) is not None

    await eventually(marked, timeout=120, interval=0.2, what="the outbox row marked published")


async def _refused_bookings(api: httpx.AsyncClient, admin: Account, who: Account) -> list[dict[str, Any]]:
    params = {"actorId": who.id, "action": "create", "resourceType": "appointment", "limit": "100"}
    records = (await api.get(f"{V1}/audit", params=params, headers=admin.headers)).json()["items"]
    return [r for r in records if r["outcome"] == "denied"]


async def test_doctors_book_and_see_only_patients_in_their_care(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    """A doctor books follow-ups for patients in their care (a booked or completed visit with them),
    never a stranger; a cancelled visit alone gives no access to the record."""
    doctor_user = await create_user(api, admin, "doctor")
    doctor = await create_doctor(api, admin, user=doctor_user)
    stranger = await create_patient(api, staff)

    refused = await _book(api, doctor_user, stranger["id"], doctor["id"])
    assert refused.status_code == 404 and refused.json() == {"detail": "patient not found"}
    assert (await api.get(f"{V1}/patients/{stranger['id']}", headers=doctor_user.headers)).status_code == 404
    (record,) = await _refused_bookings(api, admin, doctor_user)
    assert record["detail"] == {
        "patientId": stranger["id"],
        "doctorId": doctor["id"],
        "reason": "not in care",
    }

    first = (await _book(api, staff, stranger["id"], doctor["id"])).json()
    assert (await api.get(f"{V1}/patients/{stranger['id']}", headers=doctor_user.headers)).status_code == 200
    follow_up = await _book(api, doctor_user, stranger["id"], doctor["id"])
    assert follow_up.status_code == 201, follow_up.text

    for appointment in (first, follow_up.json()):
        resp = await api.post(f"{V1}/appointments/{appointment['id']}/cancel", headers=staff.headers)
        assert resp.status_code == 200
    assert (await api.get(f"{V1}/patients/{stranger['id']}", headers=doctor_user.headers)).status_code == 404
    patch = await api.patch(
        f"{V1}/patients/{stranger['id']}", json={"condition": "x"}, headers=doctor_user.headers
    )
    assert patch.status_code == 404
    assert (await _book(api, doctor_user, stranger["id"], doctor["id"])).status_code == 404


async def test_patients_cancel_only_before_the_cutoff(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    """Within HC_CANCEL_CUTOFF_HOURS of the visit (or after it) a patient cannot cancel, which would
    void the invoice; staff can."""
    doctor = await create_doctor(api, admin)
    alice = await register_patient_user(api)
    record = await create_patient(api, alice)
    soon = (
        datetime.now(UTC) + timedelta(hours=settings.cancel_cutoff_hours) - timedelta(minutes=30)
    ).isoformat()
    later = _slot(days=settings.cancel_cutoff_hours / 24 + 2)
    near = (await _book(api, alice, record["id"], doctor["id"], time=soon)).json()
    far = (await _book(api, alice, record["id"], doctor["id"], time=later)).json()

    late = await api.post(f"{V1}/appointments/{near['id']}/cancel", headers=alice.headers)
    assert late.status_code == 403 and "clinic" in late.json()["detail"]
    assert (await api.get(f"{V1}/appointments/{near['id']}", headers=alice.headers)).json()[
        "status"
    ] == "BOOKED"
    assert (await api.post(f"{V1}/appointments/{far['id']}/cancel", headers=alice.headers)).status_code == 200
    assert (
        await api.post(f"{V1}/appointments/{near['id']}/cancel", headers=staff.headers)
    ).status_code == 200
    trail = (
        await api.get(
            f"{V1}/audit", params={"resourceId": near["id"], "actorId": alice.id}, headers=admin.headers
        )
    ).json()["items"]
    assert any(r["outcome"] == "denied" and r["detail"]["reason"] == "cancel cutoff" for r in trail)


async def test_booking_volume_is_capped_per_patient_and_rate_limited_per_account(
    api: httpx.AsyncClient, admin: Account, staff: Account, settings: Settings
) -> None:
    """One account cannot fill a calendar: a patient holds at most HC_BOOKING_MAX_OPEN_PER_PATIENT
    open future bookings (checked atomically, so concurrent requests cannot slip past it), and an
    account books at most HC_BOOKING_RATE_LIMIT times per window (429 with Retry-After)."""
    cap, rate = settings.booking_max_open_per_patient, settings.booking_rate_limit
    assert rate > cap + 2, "the rate limit must leave room to reach the cap"
    doctor = await create_doctor(api, admin)
    bob = await register_patient_user(api)
    record = await create_patient(api, bob)
    slots = iter(_slot(days=3 + i) for i in range(rate + 5))
    for _ in range(cap - 2):
        resp = await _book(api, bob, record["id"], doctor["id"], time=next(slots))
        assert resp.status_code == 201, resp.text
    # Five at once for the last two places: the pre-check lets all through, the workflow's lock two.
    racing = await asyncio.gather(
        *(_book(api, bob, record["id"], doctor["id"], time=next(slots)) for _ in range(5))
    )
    assert sorted(r.status_code for r in racing) == [201, 201, 409, 409, 409]
    over = await _book(api, bob, record["id"], doctor["id"], time=next(slots))
    assert over.status_code == 409 and f"{cap} upcoming" in over.json()["detail"]
    listed = (await api.get(f"{V1}/appointments", params={"status": "BOOKED"}, headers=bob.headers)).json()
    assert listed["total"] == cap
    # Staff book for the clinic: neither limit applies to them.
    assert (await _book(api, staff, record["id"], doctor["id"], time=next(slots))).status_code == 201

    attempts = cap - 2 + 5 + 1
    for _ in range(rate - attempts):
        assert (await _book(api, bob, record["id"], doctor["id"], time=next(slots))).status_code == 409
    limited = await _book(api, bob, record["id"], doctor["id"], time=next(slots))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    reasons = {r["detail"]["reason"] for r in await _refused_bookings(api, admin, bob)}
    assert reasons == {"open bookings cap", "rate limited"}

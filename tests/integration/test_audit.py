"""The audit trail: reads, writes, logins and refusals leave records; the keyed chain and its anchor
detect tampering, even by the schema's owner; the app role can only append."""

import asyncio
import hashlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from healthcare import audit as chain
from healthcare import security
from healthcare.models import AuditRecord
from healthcare.settings import Settings
from services.audit import Anchor, StoredAnchor, latest_anchor, record_many, verify, write_anchor
from services.context import RequestContext
from tests.integration.factories import (
    Account,
    book_visit,
    create_doctor,
    create_patient,
    create_user,
    fresh_ip,
    post_from,
    register_patient_user,
)
from tests.waiting import eventually
from workers.temporal_worker import anchor_audit_trail

V1 = "/api/v1"


async def _records(api: httpx.AsyncClient, admin: Account, **params: str) -> list[dict[str, Any]]:
    resp = await api.get(f"{V1}/audit", params={"limit": 100, **params}, headers=admin.headers)
    assert resp.status_code == 200
    return list(resp.json()["items"])


@asynccontextmanager
async def tampering(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that is always rolled back, on one snapshot (records committed meanwhile by the
    rest of the stack stay out of view), so the shared trail is never really changed."""
    async with engine.connect() as conn:
        await conn.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ"))
        try:
            yield conn
        finally:
            await conn.rollback()


async def test_reads_writes_and_denials_are_recorded(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    rec = await create_patient(api, staff)
    request_id = "audit-test-" + rec["id"][:8]
    await api.get(f"{V1}/patients/{rec['id']}", headers={**staff.headers, "X-Request-ID": request_id})
    intruder = await register_patient_user(api)
    await api.get(f"{V1}/patients/{rec['id']}", headers=intruder.headers)

    records = await _records(api, admin, resourceId=rec["id"])
    by_action = {(r["action"], r["actorId"], r["outcome"]) for r in records}
    assert ("create", staff.id, "ok") in by_action
    assert ("read", staff.id, "ok") in by_action
    assert ("read", intruder.id, "denied") in by_action
    read = next(r for r in records if r["requestId"] == request_id)
    assert read["actorRole"] == "staff" and read["resourceType"] == "patient" and read["clientIp"]


async def test_every_item_of_a_list_is_recorded(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    for _ in range(3):
        await create_patient(api, staff)
    request_id = f"audit-list-{uuid.uuid4().hex[:12]}"
    resp = await api.get(
        f"{V1}/patients", params={"limit": 3}, headers={**staff.headers, "X-Request-ID": request_id}
    )
    assert resp.status_code == 200
    listed = [item["id"] for item in resp.json()["items"]]
    assert len(listed) == 3
    for patient_id in listed:  # one record per item shown, each naming it
        records = await _records(api, admin, resourceId=patient_id, action="list")
        mine = [r for r in records if r["requestId"] == request_id]
        assert len(mine) == 1, (patient_id, records)
        assert mine[0]["actorId"] == staff.id and mine[0]["resourceType"] == "patient"


async def test_logins_are_recorded_failed_or_not(api: httpx.AsyncClient, admin: Account) -> None:
    user = await register_patient_user(api)
    await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": user.email, "password": "wrong-password"}
    )
    records = await _records(api, admin, actorId=user.id, action="login")
    assert {r["outcome"] for r in records} == {"ok", "failed"}


async def test_forbidden_requests_are_recorded(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    assert (await api.get(f"{V1}/audit", headers=staff.headers)).status_code == 403
    patient = await register_patient_user(api)
    doctor = {"name": "Dr Nobody", "specialty": "None", "fee": "1.00"}
    assert (await api.post(f"{V1}/doctors", json=doctor, headers=patient.headers)).status_code == 403

    staff_refusals = await _records(api, admin, actorId=staff.id, action="forbidden")
    assert [(r["resourceType"], r["outcome"], r["detail"]) for r in staff_refusals][:1] == [
        ("audit", "denied", {"method": "GET", "route": "/audit"})
    ]
    (refused,) = await _records(api, admin, actorId=patient.id, action="forbidden")
    assert refused["resourceType"] == "doctors" and refused["actorRole"] == "patient"


async def test_reading_the_audit_trail_is_recorded(api: httpx.AsyncClient, admin: Account) -> None:
    looked_for = str(uuid.uuid4())
    await _records(api, admin, resourceId=looked_for)
    reads = await _records(api, admin, actorId=admin.id, action="list", resourceType="audit_log")
    assert any(r["detail"].get("resourceId") == looked_for and r["outcome"] == "ok" for r in reads)


async def test_role_changes_record_the_new_role_and_active_flag(
    api: httpx.AsyncClient, admin: Account
) -> None:
    user = await create_user(api, admin, "doctor")
    for change in ({"role": "staff"}, {"isActive": False}):
        resp = await api.patch(f"{V1}/users/{user.id}", json=change, headers=admin.headers)
        assert resp.status_code == 200, resp.text
    records = await _records(api, admin, resourceId=user.id, action="update")
    details = [r["detail"] for r in reversed(records)]  # oldest first
    assert [(d["previousRole"], d["role"], d["wasActive"], d["isActive"]) for d in details] == [
        ("doctor", "staff", True, True),
        ("staff", "staff", True, False),
    ]
    assert all(d["tokensRevoked"] for d in details)


async def test_bad_tokens_are_recorded_but_bounded(
    api: httpx.AsyncClient, admin: Account, settings: Settings
) -> None:
    """A refused token leaves a record (with the account when the signature is ours), but a flood of
    them leaves one per address, account and reason a minute: the trail's lock is no amplifier."""
    user = await register_patient_user(api)
    expired = security.issue_token(
        user_id=uuid.UUID(user.id),
        role="patient",
        settings=settings,
        now=datetime.now(UTC) - timedelta(hours=3),
    )
    for _ in range(25):
        assert (
            await api.get(f"{V1}/users/me", headers={"Authorization": f"Bearer {expired}"})
        ).status_code == 401
    resp = await api.patch(f"{V1}/users/{user.id}", json={"isActive": False}, headers=admin.headers)
    assert resp.status_code == 200
    for _ in range(5):
        assert (await api.get(f"{V1}/users/me", headers=user.headers)).status_code == 401
    records = await _records(api, admin, actorId=user.id, action="bad_token")
    assert sorted(r["detail"]["reason"] for r in records) == ["expired", "inactive"]
    assert {(r["outcome"], r["resourceType"]) for r in records} == {("denied", "users")}


async def test_the_app_role_can_only_append(engine: AsyncEngine, settings: Settings) -> None:
    """The API's and workers' role owns nothing: it cannot rewrite, empty, bypass or unprotect the
    trail, nor replace the functions that append to it."""
    attempts = [
        "UPDATE audit_log SET action = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "INSERT INTO audit_log (action, resource_type, outcome, prev_hash, hash) "
        "VALUES ('x', 'x', 'ok', 'x', 'x')",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
        "DROP TRIGGER audit_log_no_update_delete ON audit_log",
        "CREATE OR REPLACE FUNCTION audit_head() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$",
    ]
    async with engine.connect() as conn:
        for stmt in attempts:
            with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
                await conn.execute(text(stmt))
            await conn.rollback()
        owner = await conn.scalar(text("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_log'"))
        assert owner != settings.app_role


async def test_the_owner_cannot_rewrite_the_chain_without_the_key(
    owner_engine: AsyncEngine, audit_key: bytes
) -> None:
    """Whoever owns the schema can disable the triggers and edit rows, but without the key their
    rewritten record fails its HMAC, and falling back to the old unkeyed hash is refused."""
    async with tampering(owner_engine) as conn:
        assert (await verify(AsyncSession(bind=conn), key=audit_key)).ok
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))
        last = (
            await conn.execute(text("SELECT seq, prev_hash FROM audit_log ORDER BY seq DESC LIMIT 1"))
        ).one()
        await conn.execute(text("UPDATE audit_log SET outcome = 'denied' WHERE seq = :s"), {"s": last.seq})
        row = (await conn.execute(text("SELECT * FROM audit_log WHERE seq = :s"), {"s": last.seq})).one()
        rec = AuditRecord.model_validate(dict(row._mapping))
        # What the old, unkeyed scheme let anyone recompute: sha256(prev "\n" body), version 2.
        rec.hash_version = 2
        unkeyed = hashlib.sha256(f"{rec.prev_hash}\n{chain.record_body(rec)}".encode()).hexdigest()
        await conn.execute(
            text("UPDATE audit_log SET hash = :h, hash_version = 2 WHERE seq = :s"),
            {"h": unkeyed, "s": last.seq},
        )
        downgraded = await verify(AsyncSession(bind=conn), key=audit_key)
        assert not downgraded.ok and downgraded.first_bad_seq == last.seq
        assert "unkeyed record after keyed ones" in (downgraded.reason or "")
        rec.hash_version = 3
        guessed = chain.keyed_hash(b"a key that is not the key", rec.prev_hash, chain.record_body(rec))
        await conn.execute(
            text("UPDATE audit_log SET hash = :h, hash_version = 3 WHERE seq = :s"),
            {"h": guessed, "s": last.seq},
        )
        forged = await verify(AsyncSession(bind=conn), key=audit_key)
        assert not forged.ok and forged.first_bad_seq == last.seq and "edited" in (forged.reason or "")


async def test_verify_detects_an_edited_and_a_deleted_record(
    owner_engine: AsyncEngine, api: httpx.AsyncClient, staff: Account, audit_key: bytes
) -> None:
    await create_patient(api, staff)
    await create_patient(api, staff)
    async with tampering(owner_engine) as conn:
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))
        last = (await conn.execute(text("SELECT max(seq) FROM audit_log"))).scalar_one()
        await conn.execute(text("UPDATE audit_log SET outcome = 'denied' WHERE seq = :s"), {"s": last - 1})
        edited = await verify(AsyncSession(bind=conn), key=audit_key)
        assert not edited.ok and edited.first_bad_seq == last - 1 and "edited" in (edited.reason or "")
        await conn.execute(text("UPDATE audit_log SET outcome = 'ok' WHERE seq = :s"), {"s": last - 1})
        await conn.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": last - 1})
        deleted = await verify(AsyncSession(bind=conn), key=audit_key)
        assert not deleted.ok and deleted.first_bad_seq == last and "deleted" in (deleted.reason or "")


async def test_a_deleted_tail_is_detected_by_the_anchor(
    owner_engine: AsyncEngine,
    engine: AsyncEngine,
    api: httpx.AsyncClient,
    staff: Account,
    s3: Any,
    settings: Settings,
    audit_key: bytes,
) -> None:
    """Deleting the newest records leaves a shorter chain that is intact link by link; only the head
    anchored outside the database shows that it once went further."""
    prefix = f"test-anchors/{uuid.uuid4().hex}/"
    await create_patient(api, staff)
    async with AsyncSession(bind=engine) as session:
        anchor = await write_anchor(session, s3, bucket=settings.s3_bucket, prefix=prefix, key=audit_key)
    assert anchor is not None
    stored = await latest_anchor(s3, bucket=settings.s3_bucket, prefix=prefix, key=audit_key)
    assert stored is not None and stored.anchor == anchor
    async with tampering(owner_engine) as conn:
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))
        await conn.execute(text("DELETE FROM audit_log WHERE seq >= :s"), {"s": anchor.seq - 1})
        session = AsyncSession(bind=conn)
        assert (await verify(session, key=audit_key)).ok  # link by link, nothing is wrong
        truncated = await verify(session, key=audit_key, anchor=stored)
        assert not truncated.ok and truncated.first_bad_seq == anchor.seq - 1
        assert "deleted tail" in (truncated.reason or "")
    forged = StoredAnchor(key="x", anchor=Anchor.from_json(anchor.to_json(b"another key"), audit_key))
    async with AsyncSession(bind=engine) as session:
        assert "forged" in ((await verify(session, key=audit_key, anchor=forged)).reason or "")
        assert (await verify(session, key=audit_key, anchor=stored)).ok
    for obj in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=settings.s3_bucket, Key=obj["Key"])


async def test_the_worker_anchors_the_head_and_the_cli_verifies_against_it(
    engine: AsyncEngine, s3: Any, settings: Settings, audit_key: bytes
) -> None:
    prefix = f"test-anchors/{uuid.uuid4().hex}/"
    quick = settings.model_copy(update={"audit_anchor_interval_seconds": 1, "audit_anchor_prefix": prefix})
    stop = asyncio.Event()
    task = asyncio.create_task(anchor_audit_trail(quick, engine, stop))
    try:
        stored = await eventually(
            lambda: latest_anchor(s3, bucket=settings.s3_bucket, prefix=prefix, key=audit_key),
            timeout=30,
            interval=0.2,
            what="the worker's first anchor",
        )
    finally:
        stop.set()
        await task
    assert stored is not None and stored.anchor is not None
    env = {"HC_AUDIT_ANCHOR_PREFIX": prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        "audit",
        "verify",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    assert b"chain intact" in out and f"anchored at record {stored.anchor.seq}".encode() in out
    for obj in s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix).get("Contents", []):
        s3.delete_object(Bucket=settings.s3_bucket, Key=obj["Key"])


async def test_awkward_text_hashes_alike_in_the_database_and_the_verifier(
    engine: AsyncEngine, audit_key: bytes
) -> None:
    """audit_insert (PL/pgSQL) reads each column from the body the application hashed; `verify`
    rebuilds the body from the columns. Awkward text must survive the round trip."""
    ctx = RequestContext(
        actor=None, client_ip="2001:db8::1", request_id='req "q" \\ ü ✓', audit_key=audit_key
    )
    async with engine.connect() as conn, conn.begin():  # rolled back: the shared trail stays as it was
        session = AsyncSession(bind=conn)
        # The session joins the connection's transaction: its commit leaves that transaction open.
        await record_many(
            session,
            ctx,
            action="read",
            resource_type="patient",
            resource_ids=["a", "ß", None],
            detail={"note": 'ü ✓ \\ "', "n": 3},
        )
        rows = (
            await conn.execute(
                text("SELECT hash_version, request_id FROM audit_log ORDER BY seq DESC LIMIT 3")
            )
        ).all()
        assert [tuple(r) for r in rows] == [(3, ctx.request_id)] * 3
        result = await verify(AsyncSession(bind=conn), key=audit_key)
        assert result.ok, result
        await conn.rollback()


async def test_state_changes_made_by_workers_are_recorded(
    api: httpx.AsyncClient, admin: Account, staff: Account
) -> None:
    """What workflows change on their own (an invoice issued, voided; an appointment cancelled) is in
    the trail too, by the worker, with the change it made."""
    doctor = await create_doctor(api, admin)
    patient = await create_patient(api, staff)
    appointment = await book_visit(api, staff, patient["id"], doctor["id"], days=50)

    async def invoice(status: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any]:
            listed = await api.get(
                f"{V1}/invoices", params={"patientId": patient["id"]}, headers=staff.headers
            )
            items = listed.json()["items"]
            assert items and items[0]["status"] == status, items
            return dict(items[0])

        return await eventually(reached, timeout=120, interval=0.5, what=f"the invoice {status}")

    issued = await invoice("ISSUED")
    assert (
        await api.post(f"{V1}/appointments/{appointment}/cancel", headers=staff.headers)
    ).status_code == 200
    await invoice("VOID")

    def changes(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(r["actorRole"], r["detail"]["from"], r["detail"]["to"]) for r in records}

    assert changes(await _records(api, admin, resourceId=issued["id"], action="set_status")) == {
        ("worker", "PENDING", "ISSUED"),
        ("worker", "ISSUED", "VOID"),
    }
    assert changes(await _records(api, admin, resourceId=appointment, action="set_status")) == {
        ("worker", "BOOKED", "CANCELLED")
    }

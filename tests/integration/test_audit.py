"""The audit trail: reads, writes and logins leave records; the hash chain detects tampering."""

import asyncio
import sys
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from services.audit import record_many, verify
from services.context import RequestContext
from tests.integration.factories import Account, create_patient, fresh_ip, post_from, register_patient_user

V1 = "/api/v1"


async def _records(api: httpx.AsyncClient, admin: Account, **params: str) -> list[dict[str, object]]:
    resp = await api.get(f"{V1}/audit", params={"limit": 100, **params}, headers=admin.headers)
    assert resp.status_code == 200
    return list(resp.json()["items"])


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


async def test_only_admins_read_the_audit_trail(api: httpx.AsyncClient, staff: Account) -> None:
    assert (await api.get(f"{V1}/audit", headers=staff.headers)).status_code == 403


async def test_audit_rows_cannot_be_updated_or_deleted(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        for stmt in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                await conn.execute(text(stmt))
            await conn.rollback()


async def test_verify_detects_an_edited_and_a_deleted_record(
    engine: AsyncEngine, api: httpx.AsyncClient, staff: Account
) -> None:
    await create_patient(api, staff)
    await create_patient(api, staff)
    async with engine.connect() as conn:
        session = AsyncSession(bind=conn)
        assert (await verify(session)).ok
        await conn.rollback()
        # Tamper inside a transaction that is rolled back, so the shared trail stays intact.
        async with conn.begin():
            await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))
            last = (await conn.execute(text("SELECT max(seq) FROM audit_log"))).scalar_one()
            await conn.execute(
                text("UPDATE audit_log SET outcome = 'denied' WHERE seq = :s"), {"s": last - 1}
            )
            edited = await verify(AsyncSession(bind=conn))
            assert not edited.ok and edited.first_bad_seq == last - 1 and "edited" in (edited.reason or "")
            await conn.execute(text("UPDATE audit_log SET outcome = 'ok' WHERE seq = :s"), {"s": last - 1})
            await conn.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": last - 1})
            deleted = await verify(AsyncSession(bind=conn))
            assert not deleted.ok and deleted.first_bad_seq == last and "deleted" in (deleted.reason or "")
            await conn.rollback()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", "audit", "verify", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"chain intact" in out


async def test_the_database_function_and_the_verifier_hash_alike(engine: AsyncEngine) -> None:
    """audit_append (PL/pgSQL) writes version-2 hashes; `verify` recomputes them in Python. Awkward
    text (quotes, backslashes, non-ASCII, a request id a client sent) must hash the same on both."""
    ctx = RequestContext(actor=None, client_ip="2001:db8::1", request_id='req "q" \\ ü ✓')
    async with engine.connect() as conn, conn.begin():  # rolled back: the shared trail stays as it was
        session = AsyncSession(bind=conn)
        # The session joins the connection's transaction: its commit leaves that transaction open.
        await record_many(session, ctx, action="read", resource_type="patient", resource_ids=["a", "ß", None])
        rows = (
            await conn.execute(
                text("SELECT hash_version, request_id FROM audit_log ORDER BY seq DESC LIMIT 3")
            )
        ).all()
        assert [tuple(r) for r in rows] == [(2, ctx.request_id)] * 3
        result = await verify(AsyncSession(bind=conn))
        assert result.ok, result
        await conn.rollback()

"""The login and registration paths under abuse, over HTTP on the real database: counted before
any hash, slowed rather than locked, throttled per address and in all, bounded in the work they
queue, and telling nobody which e-mails have accounts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from healthcare.settings import Settings
from tests.integration.dynamo_stack import OtherApi, another_api
from tests.integration.factories import (
    PASSWORD,
    Account,
    fresh_ip,
    post_from,
    register_patient_user,
    unique_email,
)

pytestmark = pytest.mark.integration

V1 = "/api/v1"


def _wrong(email: str) -> dict[str, str]:
    return {"email": email, "password": "wrong-password!"}


async def test_concurrent_guesses_are_counted_before_any_password_is_checked(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """20 guesses at once, from 20 addresses: only the first few are checked (the count is taken
    before hashing), the rest wait their turns or are told to come back."""
    user = await register_patient_user(api)
    answers = await asyncio.gather(
        *(post_from(api, fresh_ip(), f"{V1}/auth/login", json=_wrong(user.email)) for _ in range(20))
    )
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {401, 429}, statuses
    # Five at once, then turns 1 s and 1 + 2 s later fit the 5 s a request may wait; 4 s after that does not.
    assert (
        settings.login_max_failures_per_account
        <= statuses[401]
        <= settings.login_max_failures_per_account + 3
    )
    assert statuses[429] >= 20 - settings.login_max_failures_per_account - 3
    assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)


async def test_wrong_passwords_lock_nobody_out(api: httpx.AsyncClient, settings: Settings) -> None:
    """Whoever knows an e-mail can no longer lock its owner out: past the threshold the right
    password still gets in, after a short wait for its turn."""
    user = await register_patient_user(api)
    for _ in range(settings.login_max_failures_per_account):
        resp = await post_from(api, fresh_ip(), f"{V1}/auth/login", json=_wrong(user.email))
        assert resp.status_code == 401
    right = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert right.status_code == 200, right.text
    # A success wipes the account's slate: the next wrong password is an ordinary 401 at once.
    assert (await post_from(api, fresh_ip(), f"{V1}/auth/login", json=_wrong(user.email))).status_code == 401


async def test_old_throttle_rows_are_purged(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    stale = [f"ip:stale-{uuid.uuid4().hex}" for _ in range(3)]
    old = datetime.now(UTC) - timedelta(days=2)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO login_throttle (key, failures, updated_at) VALUES (:key, 3, :at)"),
            [{"key": key, "at": old} for key in stale],
        )
    await post_from(api, fresh_ip(), f"{V1}/auth/login", json=_wrong(unique_email()))
    async with engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT count(*) FROM login_throttle WHERE key = ANY(:keys)"), {"keys": stale}
            )
        ).scalar_one()
    assert left == 0


async def test_registration_is_throttled_per_address(api: httpx.AsyncClient, settings: Settings) -> None:
    address = fresh_ip()
    for _ in range(settings.register_max_per_address):
        body = {"email": unique_email(), "password": PASSWORD}
        assert (await post_from(api, address, f"{V1}/auth/register", json=body)).status_code == 201
    refused = await post_from(
        api, address, f"{V1}/auth/register", json={"email": unique_email(), "password": PASSWORD}
    )
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= settings.register_window_seconds
    elsewhere = await post_from(
        api, fresh_ip(), f"{V1}/auth/register", json={"email": unique_email(), "password": PASSWORD}
    )
    assert elsewhere.status_code == 201


@pytest.fixture  # one test each; one such API at a time (dynamo_stack.another_api)
def few_registrations() -> Iterator[str]:
    """An API that allows 2 registrations per window in all (the count is shared in the database)."""
    with another_api({"HC_REGISTER_MAX_TOTAL": "2"}, log_name="test-registration-api") as other:
        yield other.url


async def test_registration_is_throttled_in_all(few_registrations: str, api: httpx.AsyncClient) -> None:
    """From five addresses, each allowed a few: however the window's count stood, a third
    registration in one window is over the limit of 2."""
    async with httpx.AsyncClient(base_url=few_registrations, timeout=30) as other:
        answers = [
            await post_from(
                other, fresh_ip(), f"{V1}/auth/register", json={"email": unique_email(), "password": PASSWORD}
            )
            for _ in range(5)
        ]
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {201, 429} and statuses[429] >= 1, statuses
    assert all(r.headers["retry-after"] for r in answers if r.status_code == 429)


async def test_a_taken_email_answers_like_a_new_one(api: httpx.AsyncClient, admin: Account) -> None:
    first = await register_patient_user(api)
    again = await post_from(
        api, fresh_ip(), f"{V1}/auth/register", json={"email": first.email, "password": "another-password-9"}
    )
    new = await post_from(
        api, fresh_ip(), f"{V1}/auth/register", json={"email": unique_email(), "password": PASSWORD}
    )
    assert again.status_code == new.status_code == 201
    assert set(again.json()) == set(new.json())
    assert again.json()["role"] == "patient" and again.json()["email"] == first.email
    assert again.json()["id"] != first.id
    # Nothing changed: the account keeps its password, and the other one does not open it.
    ok = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": first.email, "password": PASSWORD}
    )
    assert ok.status_code == 200
    taken = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": first.email, "password": "another-password-9"}
    )
    assert taken.status_code == 401
    audit = await api.get(
        f"{V1}/audit",
        params={"resourceId": first.id, "action": "register", "limit": 100},
        headers=admin.headers,
    )
    assert {r["outcome"] for r in audit.json()["items"]} == {"ok", "duplicate"}


@pytest.fixture  # one test each; one such API at a time (dynamo_stack.another_api)
def small_hash_queue() -> Iterator[str]:
    with another_api({"HC_HASH_QUEUE_LIMIT": "2"}, log_name="test-hash-queue-api") as other:
        yield other.url


async def test_password_checks_beyond_the_queue_answer_503(
    small_hash_queue: str, api: httpx.AsyncClient
) -> None:
    """16 logins at once (unknown e-mails, addresses of their own) against a queue of 2: the rest
    are refused at once with Retry-After, not queued without end."""
    async with httpx.AsyncClient(base_url=small_hash_queue, timeout=60) as other:
        answers = await asyncio.gather(
            *(
                post_from(other, fresh_ip(), f"{V1}/auth/login", json=_wrong(unique_email()))
                for _ in range(16)
            )
        )
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {401, 503} and statuses[503] >= 1 and statuses[401] >= 2, statuses
    busy = [r for r in answers if r.status_code == 503]
    assert all(int(r.headers["retry-after"]) >= 1 and "try again" in r.json()["detail"] for r in busy)


def _database_ports(pid: int, db_port: int) -> set[int]:
    """Local ports of `pid`'s TCP connections to the database (from /proc, no tools needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == db_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


# How long the oldest transaction of the given client ports has been open while it waits on its client.
OPEN_TRANSACTION_AGE = text(
    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) FROM pg_stat_activity"
    " WHERE client_port = ANY(:ports) AND state LIKE 'idle in transaction%'"
)


@pytest.fixture  # one test each; one such API at a time (dynamo_stack.another_api)
def two_connections() -> Iterator[OtherApi]:
    """An API with a pool of two database connections (HC_DB_POOL_SIZE=1, plus one overflow)."""
    with another_api({"HC_DB_POOL_SIZE": "1"}, log_name="test-small-pool-api") as other:
        yield other


async def test_no_transaction_stays_open_while_passwords_are_hashed(
    two_connections: OtherApi, engine: AsyncEngine, settings: Settings
) -> None:
    """16 logins at once on two pooled connections: while bcrypt works through them (seconds), no
    transaction of that API stays open longer than a few statements take. Holding the connection
    through the hash (as before) kept one open for several hashes' time, and starved the pool."""
    db_port = make_url(settings.database_url).port or 5432
    longest = 0.0
    async with httpx.AsyncClient(base_url=two_connections.url, timeout=120) as other:
        burst = asyncio.gather(
            *(
                post_from(other, fresh_ip(), f"{V1}/auth/login", json=_wrong(unique_email()))
                for _ in range(16)
            )
        )
        watching = True

        async def watch() -> None:
            nonlocal longest
            async with engine.connect() as conn:
                while watching:
                    ports = _database_ports(two_connections.pid, db_port)
                    if ports:
                        age = (await conn.execute(OPEN_TRANSACTION_AGE, {"ports": list(ports)})).scalar_one()
                        longest = max(longest, float(age))
                    await conn.rollback()
                    await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            answers = await burst
        finally:
            watching = False
            await watcher
    assert Counter(r.status_code for r in answers) == {401: 16}
    assert longest < 1.0, f"a transaction stayed open {longest:.2f} s while passwords were hashed"

"""Password hashing and access tokens, without services."""

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from healthcare import security
from healthcare.settings import Settings

SETTINGS = Settings()


def test_bcrypt_hash_has_the_configured_cost_and_verifies() -> None:
    h = security.hash_password("s3cret-password", rounds=10)
    assert h.startswith("$2b$10$")
    assert security.verify_password("s3cret-password", h, rounds=10)
    assert not security.verify_password("wrong", h, rounds=10)
    assert security.hash_password("s3cret-password", rounds=10) != h  # salted


def test_malformed_stored_hash_never_authenticates() -> None:
    assert not security.verify_password("x", "not-a-hash", rounds=10)


async def test_async_hashing_runs_off_the_event_loop() -> None:
    h = await security.hash_password_async("pw-pw-pw-pw", rounds=10)
    assert await security.verify_password_async("pw-pw-pw-pw", h, rounds=10)


def test_token_round_trip() -> None:
    uid = uuid.uuid4()
    token = security.issue_token(user_id=uid, role="staff", settings=SETTINGS)
    claims = security.decode_token(token, settings=SETTINGS)
    assert claims.user_id == uid and claims.role == "staff"
    assert claims.expires_at - datetime.now(UTC) <= timedelta(seconds=SETTINGS.jwt_ttl_seconds)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
        lambda t: "x" + t,
        lambda t: t.split(".")[0] + "..",
    ],
)
def test_tampered_token_is_invalid(mutate) -> None:  # type: ignore[no-untyped-def]
    token = security.issue_token(user_id=uuid.uuid4(), role="staff", settings=SETTINGS)
    with pytest.raises(security.InvalidToken):
        security.decode_token(mutate(token), settings=SETTINGS)


def test_expired_token_is_invalid() -> None:
    old = datetime.now(UTC) - timedelta(hours=2)
    token = security.issue_token(user_id=uuid.uuid4(), role="staff", settings=SETTINGS, now=old)
    with pytest.raises(security.InvalidToken, match="expired"):
        security.decode_token(token, settings=SETTINGS)


def test_a_token_older_than_the_age_cap_is_refused_whatever_its_exp() -> None:
    """A token minted with a far `exp` (a longer TTL once configured, or a copied key's work) stops
    at HC_JWT_MAX_AGE_SECONDS from its `iat`."""
    issued = datetime.now(UTC) - timedelta(seconds=SETTINGS.jwt_max_age_seconds + 60)
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "staff",
        "iat": int(issued.timestamp()),
        "exp": int((datetime.now(UTC) + timedelta(days=30)).timestamp()),
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
    }
    token = jwt.encode(claims, SETTINGS.jwt_secret.get_secret_value(), algorithm="HS256")
    with pytest.raises(security.InvalidToken, match="expired"):
        security.decode_token(token, settings=SETTINGS)
    fresh = {**claims, "iat": int(datetime.now(UTC).timestamp())}  # exp - iat beyond the cap too
    with pytest.raises(security.InvalidToken, match="expired"):
        security.decode_token(jwt.encode(fresh, SETTINGS.jwt_secret.get_secret_value()), settings=SETTINGS)


def test_tokens_carry_the_account_token_version() -> None:
    user = uuid.uuid4()
    token = security.issue_token(user_id=user, role="patient", settings=SETTINGS, token_version=7)
    assert security.decode_token(token, settings=SETTINGS).token_version == 7
    expired = security.issue_token(
        user_id=user, role="patient", settings=SETTINGS, now=datetime.now(UTC) - timedelta(hours=2)
    )
    assert security.token_subject(expired, settings=SETTINGS) == user  # for the audit of refusals only
    forged = jwt.encode({"sub": str(user)}, "not-our-key-" * 4, algorithm="HS256")
    assert security.token_subject(forged, settings=SETTINGS) is None


def test_alg_none_and_other_algorithms_are_refused() -> None:
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "admin",
        "iat": 1,
        "exp": 4_000_000_000,
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
    }
    unsigned = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(security.InvalidToken):
        security.decode_token(unsigned, settings=SETTINGS)
    other = jwt.encode(claims, SETTINGS.jwt_secret.get_secret_value() * 2, algorithm="HS512")
    with pytest.raises(security.InvalidToken):
        security.decode_token(other, settings=SETTINGS)


def test_missing_claims_are_refused() -> None:
    secret = SETTINGS.jwt_secret.get_secret_value()
    for missing in ("exp", "iat", "iss", "aud", "sub"):
        claims = {
            "sub": str(uuid.uuid4()),
            "role": "admin",
            "iat": 1,
            "exp": 4_000_000_000,
            "iss": SETTINGS.jwt_issuer,
            "aud": SETTINGS.jwt_audience,
        }
        del claims[missing]
        with pytest.raises(security.InvalidToken):
            security.decode_token(jwt.encode(claims, secret, algorithm="HS256"), settings=SETTINGS)


def test_passwords_longer_than_bcrypt_reads_are_refused_not_truncated() -> None:
    from pydantic import ValidationError

    from healthcare.schemas import RegisterIn

    assert RegisterIn(email="a@example.com", password="é" * 36).password  # 72 bytes: fits
    with pytest.raises(ValidationError, match="72 bytes"):
        RegisterIn(email="a@example.com", password="é" * 37)
    assert not security.verify_password("x" * 100, security.hash_password("y" * 10, rounds=10), rounds=10)


def test_hashing_threads_only_take_idle_cpu() -> None:
    """The bcrypt pool's threads run under SCHED_IDLE (nice 10 where the kernel refuses), so a login
    burst cannot take CPU from request handling."""
    import os
    import threading

    from healthcare.security import _HASH_POOL, HASH_THREAD_NICENESS

    def policy() -> tuple[int, int]:
        tid = threading.get_native_id()
        return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)

    sched, nice = _HASH_POOL.submit(policy).result()
    assert sched == os.SCHED_IDLE or nice >= HASH_THREAD_NICENESS
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE  # the caller is untouched

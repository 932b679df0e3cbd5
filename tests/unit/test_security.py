"""Password hashing and access tokens, without services."""

import contextlib
import os
import threading
import types
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from healthcare import security
from healthcare.security import HASH_THREAD_NICENESS
from healthcare.settings import Settings
from tests.waiting import eventually

SETTINGS = Settings()


def test_bcrypt_hash_has_the_configured_cost_and_verifies() -> None:
    h = security.hash_password("s3cret-password", rounds=10)
    assert h.startswith("$2b$10$")
    assert security.verify_password("s3cret-password", h, rounds=10)
    assert not security.verify_password("wrong", h, rounds=10)
    assert security.hash_password("s3cret-password", rounds=10) != h  # salted


def test_malformed_stored_hash_never_authenticates() -> None:
    assert not security.verify_password("x", "not-a-hash", rounds=10)


async def test_async_hashing_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both bcrypt calls run on the hashing pool's threads, never on the thread of the event loop
    (a login would stall every other request of the process for the length of a hash)."""
    threads: list[str] = []

    def on_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(security, "hash_password", on_thread(security.hash_password))
    monkeypatch.setattr(security, "verify_password", on_thread(security.verify_password))
    h = await security.hash_password_async("pw-pw-pw-pw", rounds=10)
    assert await security.verify_password_async("pw-pw-pw-pw", h, rounds=10)
    assert not await security.verify_password_async("pw-pw-pw-px", h, rounds=10)
    assert h.startswith("$2b$10$")
    assert len(threads) == 3
    assert all(name.startswith("bcrypt") for name in threads), threads
    assert threading.current_thread().name not in threads


def test_unknown_email_is_checked_against_a_real_hash_of_the_same_cost() -> None:
    """So an unknown address takes as long to refuse as a wrong password."""
    dummy = security.dummy_hash(10)
    assert dummy.startswith("$2b$10$") and len(dummy) == 60
    assert security.dummy_hash(10) == dummy  # made once per cost
    assert security.dummy_hash(11).startswith("$2b$11$")
    assert not security.verify_password("", dummy, rounds=10)


NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def test_an_issued_token_carries_every_claim_we_check() -> None:
    uid = uuid.uuid4()
    token = security.issue_token(user_id=uid, role="doctor", settings=SETTINGS, now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    jti = claims.pop("jti")
    assert claims == {
        "sub": str(uid),
        "role": "doctor",
        "tv": 0,
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + SETTINGS.jwt_ttl_seconds,
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
    }
    assert len(jti) == 32 and int(jti, 16) >= 0
    again = jwt.decode(
        security.issue_token(user_id=uid, role="doctor", settings=SETTINGS, now=NOW),
        options={"verify_signature": False},
    )
    assert again["jti"] != jti  # each token is told apart
    versioned = security.issue_token(user_id=uid, role="doctor", settings=SETTINGS, token_version=3)
    assert jwt.decode(versioned, options={"verify_signature": False})["tv"] == 3
    assert security.decode_token(versioned, settings=SETTINGS).token_version == 3


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


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the local key, on purpose
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_only_the_pinned_algorithm_is_accepted_even_with_our_key(algorithm: str) -> None:
    """Signed with the right key, so only the algorithm pin can refuse it."""
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "admin",
        "iat": int(datetime.now(UTC).timestamp()),
        "exp": int((datetime.now(UTC) + timedelta(minutes=5)).timestamp()),
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
    }
    secret = SETTINGS.jwt_secret.get_secret_value()
    assert security.decode_token(jwt.encode(claims, secret, algorithm="HS256"), settings=SETTINGS)
    with pytest.raises(security.InvalidToken, match=r"^invalid$") as refused:
        security.decode_token(jwt.encode(claims, secret, algorithm=algorithm), settings=SETTINGS)
    assert type(refused.value.__cause__).__name__ == "InvalidAlgorithmError"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"iss": "someone-else"}, "InvalidIssuerError"),
        ({"aud": "another-app"}, "InvalidAudienceError"),
        ({"role": None}, "KeyError"),
        ({"sub": "not-a-uuid"}, "ValueError"),
        ({"nbf": 4_000_000_000}, "ImmatureSignatureError"),
    ],
)
def test_a_token_for_someone_else_or_of_the_wrong_shape_is_refused(
    changes: dict[str, object], error: str
) -> None:
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "admin",
        "iat": 1,
        "exp": 4_000_000_000,
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
    }
    claims.update(changes)
    token = jwt.encode(
        {k: v for k, v in claims.items() if v is not None}, SETTINGS.jwt_secret.get_secret_value()
    )
    with pytest.raises(security.InvalidToken, match=r"^invalid$") as refused:  # one word, never why
        security.decode_token(token, settings=SETTINGS)
    assert type(refused.value.__cause__).__name__ == error


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

    from healthcare.security import _HASH_POOL

    def policy() -> tuple[int, int]:
        tid = threading.get_native_id()
        return os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)

    sched, nice = _HASH_POOL.submit(policy).result()
    assert sched == os.SCHED_IDLE or nice >= HASH_THREAD_NICENESS
    assert os.sched_getscheduler(threading.get_native_id()) != os.SCHED_IDLE  # the caller is untouched


def _in_new_thread(fn: Callable[[], tuple[int, int, int]]) -> tuple[int, int, int]:
    """fn's result, run on a fresh thread (scheduling policy and nice are per thread on Linux)."""
    out: list[tuple[int, int, int]] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(timeout=30)
    return out[0]


def _lowered() -> tuple[int, int, int]:
    """(policy, nice before, nice after) of a thread that calls `_lower_priority`."""
    tid = threading.get_native_id()
    # Start from nice 0 where allowed (root), so the nice `_lower_priority` sets is seen even when
    # the whole run is niced (make mutation runs under nice 10).
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, tid, 0)
    before = os.getpriority(os.PRIO_PROCESS, tid)
    security._lower_priority()
    return os.sched_getscheduler(tid), before, os.getpriority(os.PRIO_PROCESS, tid)


def test_a_hashing_thread_runs_under_sched_idle_where_the_kernel_allows() -> None:
    policy, before, after = _in_new_thread(_lowered)
    assert policy == os.SCHED_IDLE
    assert after == before  # SCHED_IDLE alone: nice is for kernels that refuse it


def test_a_hashing_thread_is_niced_where_sched_idle_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*_args: object) -> None:
        raise PermissionError("SCHED_IDLE refused")

    monkeypatch.setattr(security, "os", types.SimpleNamespace(**{**vars(os), "sched_setscheduler": refused}))
    policy, before, after = _in_new_thread(_lowered)
    assert policy != os.SCHED_IDLE
    assert after == max(before, HASH_THREAD_NICENESS)
    assert HASH_THREAD_NICENESS == 10


def _claims(**changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "sub": str(uuid.uuid4()),
        "role": "staff",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=10)).timestamp()),
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        **changes,
    }


def _signed(**changes: Any) -> str:
    return jwt.encode(_claims(**changes), SETTINGS.jwt_secret.get_secret_value(), algorithm="HS256")


def test_an_expired_or_too_old_token_is_refused_as_exactly_expired() -> None:
    """The reason is what the API's 401 and the audit say: exactly "expired", for both causes."""
    old = datetime.now(UTC) - timedelta(hours=2)
    stale = security.issue_token(user_id=uuid.uuid4(), role="staff", settings=SETTINGS, now=old)
    too_old = _signed(
        iat=int((datetime.now(UTC) - timedelta(seconds=SETTINGS.jwt_max_age_seconds + 60)).timestamp())
    )
    for token in (stale, too_old):
        with pytest.raises(security.InvalidToken) as refused:
            security.decode_token(token, settings=SETTINGS)
        assert str(refused.value) == "expired"


def test_a_token_without_a_version_claim_is_version_0() -> None:
    """Tokens issued before token versions existed: version 0, which a bump to 1 revokes."""
    assert security.decode_token(_signed(), settings=SETTINGS).token_version == 0


async def test_a_hash_queue_hashes_on_its_own_bcrypt_threads_at_lowered_priority() -> None:
    queue = security.HashQueue(workers=1)
    try:
        name, sched, nice = await queue.run(
            lambda: (
                threading.current_thread().name,
                os.sched_getscheduler(threading.get_native_id()),
                os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
            ),
            limit=4,
        )
    finally:
        queue.executor.shutdown(wait=True)
    assert name.startswith("bcrypt") and name != threading.current_thread().name
    assert sched == os.SCHED_IDLE or nice >= HASH_THREAD_NICENESS


async def test_a_hash_queue_uses_exactly_its_workers_threads_each_at_lowered_priority() -> None:
    """Every job waits until all are queued, so the pool starts as many threads as it may: its
    `workers`, each under SCHED_IDLE (the kernel here allows it: the test above)."""
    import asyncio

    queue = security.HashQueue(workers=3)
    release = threading.Event()

    def job() -> tuple[str, int]:
        release.wait(30)
        return threading.current_thread().name, os.sched_getscheduler(threading.get_native_id())

    try:
        jobs = [asyncio.create_task(queue.run(job, limit=32)) for _ in range(12)]
        await eventually(lambda: queue.pending == len(jobs), timeout=30, what="every job queued")
        release.set()
        done = await asyncio.gather(*jobs)
    finally:
        release.set()
        queue.executor.shutdown(wait=True)
    assert len({name for name, _ in done}) == 3
    assert all(name.startswith("bcrypt") for name, _ in done)
    assert {policy for _, policy in done} == {os.SCHED_IDLE}


@pytest.mark.parametrize("refusal", [PermissionError("nice refused"), AttributeError("no setpriority")])
def test_a_thread_the_kernel_lets_neither_idle_nor_nice_still_hashes(
    refusal: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lowering the priority is best effort: refused both ways, the thread runs as it is."""

    def refused(*_args: object) -> None:
        raise refusal

    calls: list[tuple[object, ...]] = []

    def also_refused(*args: object) -> None:
        calls.append(args)
        raise refusal

    fake_os = types.SimpleNamespace(
        **{**vars(os), "sched_setscheduler": refused, "setpriority": also_refused}
    )
    monkeypatch.setattr(security, "os", fake_os)
    security._lower_priority()  # raises nothing
    assert calls == [(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)]


@pytest.mark.parametrize(("workers", "waiting", "retry_after"), [(2, 4, 1), (2, 40, 5), (1, 12, 3)])
async def test_a_full_hash_queue_says_why_and_when_to_retry(
    workers: int, waiting: int, retry_after: int
) -> None:
    """Retry-After is the queue's length over its threads, at about four hashes a second each."""
    import asyncio

    from healthcare import errors

    queue = security.HashQueue(workers=workers)
    release = threading.Event()
    try:
        held = [
            asyncio.create_task(queue.run(lambda: release.wait(30), limit=waiting)) for _ in range(waiting)
        ]
        await eventually(lambda: queue.pending == waiting, timeout=30, what="the queue full")
        with pytest.raises(errors.DependencyUnavailable) as full:
            await queue.run(lambda: True, limit=waiting)
        assert str(full.value) == "too many sign-ins at once; try again shortly"
        assert full.value.retry_after_seconds == retry_after
        release.set()
        await asyncio.gather(*held)
    finally:
        release.set()
        queue.executor.shutdown(wait=True)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_a_token_is_signed_with_the_configured_algorithm(algorithm: str) -> None:
    settings = Settings(jwt_algorithm=algorithm, jwt_secret="k" * 64)
    issued = security.issue_token(user_id=uuid.uuid4(), role="staff", settings=settings)
    assert jwt.get_unverified_header(issued)["alg"] == algorithm
    assert security.decode_token(issued, settings=settings).role == "staff"


@pytest.mark.parametrize("missing", ["exp", "iat", "iss", "aud", "sub"])
def test_a_token_of_ours_without_a_required_claim_is_refused_for_that_reason(missing: str) -> None:
    """Refused by the claim check itself (not by a later lookup), so the auditing of refused tokens
    (`token_subject`) names no account for such a token either."""
    claims = _claims()
    del claims[missing]
    token = jwt.encode(claims, SETTINGS.jwt_secret.get_secret_value(), algorithm="HS256")
    with pytest.raises(security.InvalidToken, match=r"^invalid$") as refused:
        security.decode_token(token, settings=SETTINGS)
    assert type(refused.value.__cause__).__name__ == "MissingRequiredClaimError"
    assert security.token_subject(token, settings=SETTINGS) is None


def test_a_token_exactly_at_the_age_cap_is_still_accepted() -> None:
    """The cap is "at most HC_JWT_MAX_AGE_SECONDS": a token that age, and one whose `exp` lies that
    far after its `iat`, are accepted; a second more is refused."""
    settings = Settings(jwt_ttl_seconds=3600, jwt_max_age_seconds=3600)
    issued_at = datetime.now(UTC).replace(microsecond=0)
    token = security.issue_token(user_id=uuid.uuid4(), role="staff", settings=settings, now=issued_at)
    at_cap = issued_at + timedelta(seconds=settings.jwt_max_age_seconds)
    # `exp` is checked too (at the real now): the token is an hour from expiry, so only the cap counts.
    assert security.decode_token(token, settings=settings, now=at_cap).role == "staff"
    with pytest.raises(security.InvalidToken, match=r"^expired$"):
        security.decode_token(token, settings=settings, now=at_cap + timedelta(seconds=1))

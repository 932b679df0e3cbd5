"""Registration, login, token rules and login throttling over HTTP on the real database."""

import asyncio
import base64
import json
import time
import uuid

import httpx
import jwt

from healthcare.settings import Settings
from tests.integration.factories import (
    PASSWORD,
    Account,
    create_user,
    fresh_ip,
    login,
    post_from,
    register_patient_user,
    renew_shared_tokens,
    unique_email,
)

V1 = "/api/v1"


async def test_register_gives_patient_role_and_hides_the_hash(api: httpx.AsyncClient) -> None:
    email = unique_email()
    resp = await post_from(
        api, fresh_ip(), f"{V1}/auth/register", json={"email": email.upper(), "password": PASSWORD}
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body["email"] == email and body["role"] == "patient"
    assert "password" not in json.dumps(body).lower()


async def test_register_refuses_bad_input(api: httpx.AsyncClient) -> None:
    cases = [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": unique_email(), "password": "short"},
        {"email": unique_email(), "password": PASSWORD, "role": "admin"},  # no self-promotion
        {"email": unique_email()},
    ]
    for body in cases:
        resp = await api.post(f"{V1}/auth/register", json=body)
        assert resp.status_code == 422, body
        assert isinstance(resp.json()["detail"], list)
    broken = await api.post(
        f"{V1}/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422


async def test_login_token_shape_and_claims(api: httpx.AsyncClient, settings: Settings) -> None:
    user = await register_patient_user(api)
    resp = await api.post(f"{V1}/auth/login", json={"email": user.email, "password": PASSWORD})
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "HS256"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iss"] == settings.jwt_issuer and claims["aud"] == settings.jwt_audience
    assert claims["sub"] == user.id


async def test_unknown_email_and_wrong_password_answer_alike(api: httpx.AsyncClient) -> None:
    user = await register_patient_user(api)
    wrong = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": user.email, "password": "nope-nope-nope"}
    )
    unknown = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": unique_email(), "password": "nope-nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "invalid email or password"}


def _forge(claims: dict[str, object], key: str, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


async def test_tampered_tokens_are_refused(api: httpx.AsyncClient, settings: Settings) -> None:
    user = await register_patient_user(api)
    ok = await api.get(f"{V1}/users/me", headers=user.headers)
    assert ok.status_code == 200 and ok.json()["email"] == user.email

    now = int(time.time())
    base = {
        "sub": user.id,
        "role": "admin",
        "iat": now,
        "exp": now + 600,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    secret = settings.jwt_secret.get_secret_value()
    header_none = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(base).encode()).rstrip(b"=").decode()
    head, _, sig = user.token.split(".")
    forged_body = (
        base64.urlsafe_b64encode(
            json.dumps(
                {**jwt.decode(user.token, options={"verify_signature": False}), "role": "admin"}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    bad_tokens = {
        "alg none": f"{header_none}.{payload}.",
        "wrong key": _forge(base, "another-secret-that-is-long-enough-0000"),
        "expired": _forge({**base, "iat": now - 7200, "exp": now - 3600}, secret),
        "wrong audience": _forge({**base, "aud": "someone-else"}, secret),
        "wrong issuer": _forge({**base, "iss": "someone-else"}, secret),
        "no exp": _forge({k: v for k, v in base.items() if k != "exp"}, secret),
        "other algorithm": _forge(base, secret + "x" * 20, alg="HS512"),
        "payload edited": f"{head}.{forged_body}.{sig}",
        "unknown user": _forge({**base, "sub": str(uuid.uuid4())}, secret),
        "garbage": "not.a.token",
    }
    for name, token in bad_tokens.items():
        resp = await api.get(f"{V1}/users/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401, name
        assert resp.json() == {"detail": "invalid or expired token"}, name
    missing = await api.get(f"{V1}/patients")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"


async def test_deactivated_user_loses_access_at_once(api: httpx.AsyncClient, admin: Account) -> None:
    staff = await create_user(api, admin, "staff")
    assert (await api.get(f"{V1}/patients", headers=staff.headers)).status_code == 200
    resp = await api.patch(f"{V1}/users/{staff.id}", json={"isActive": False}, headers=admin.headers)
    assert resp.status_code == 200 and resp.json()["isActive"] is False
    assert (await api.get(f"{V1}/patients", headers=staff.headers)).status_code == 401
    login = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": staff.email, "password": PASSWORD}
    )
    assert login.status_code == 401


async def test_login_is_throttled_per_account_with_retry_after(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """Past the threshold, guesses at an account wait their turns, 1, 2, 4 ... s apart, from any
    address; one whose turn is too far off answers 429 with when to come back, and the right
    password then gets in at its turn (services/throttle.py)."""
    user = await register_patient_user(api)
    wrong = {"email": user.email, "password": "wrong-password!"}
    for _ in range(settings.login_max_failures_per_account):
        resp = await post_from(api, fresh_ip(), f"{V1}/auth/login", json=wrong)
        assert resp.status_code == 401
    # Six more at once: their turns are 1 s and 1 + 2 s off, within the 5 s a request may wait;
    # 1 + 2 + 4 s is not, and neither is anything later (taken at once, whatever the hash costs).
    answers = await asyncio.gather(
        *(post_from(api, fresh_ip(), f"{V1}/auth/login", json=wrong) for _ in range(6))
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(401) in (2, 3) and statuses.count(429) >= 3, statuses
    later = next(r for r in answers if r.status_code == 429)
    retry_after = int(later.headers["retry-after"])
    assert 1 <= retry_after <= 16 and "too many" in later.json()["detail"]
    # A client that honours Retry-After gets in with the right password (and nobody is locked out).
    deadline = asyncio.get_running_loop().time() + 30
    right = later
    while right.status_code == 429 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(int(right.headers["retry-after"]))
        right = await post_from(
            api, fresh_ip(), f"{V1}/auth/login", json={"email": user.email, "password": PASSWORD}
        )
    assert right.status_code == 200, right.text


async def test_login_is_throttled_per_client_address(api: httpx.AsyncClient, settings: Settings) -> None:
    # Registered first: the lock after the last failure lasts 2 s, and registering (bcrypt) on a
    # busy machine can take longer than that.
    user = await register_patient_user(api)
    address = fresh_ip()
    # Made first: registering hashes a password, which on a loaded machine can outlast the lock.
    user = await register_patient_user(api)
    for _ in range(settings.login_max_failures_per_address):
        resp = await post_from(
            api, address, f"{V1}/auth/login", json={"email": unique_email(), "password": "wrong-password!"}
        )
        assert resp.status_code == 401
    blocked = await post_from(
        api, address, f"{V1}/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert blocked.status_code == 429 and blocked.headers["retry-after"]
    elsewhere = await post_from(
        api, fresh_ip(), f"{V1}/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert elsewhere.status_code == 200


async def test_only_admins_manage_users(api: httpx.AsyncClient, admin: Account, staff: Account) -> None:
    body = {"email": unique_email(), "password": PASSWORD, "role": "doctor"}
    assert (await api.post(f"{V1}/users", json=body, headers=staff.headers)).status_code == 403
    assert (await api.get(f"{V1}/users", headers=staff.headers)).status_code == 403
    created = await api.post(f"{V1}/users", json=body, headers=admin.headers)
    assert created.status_code == 201 and created.json()["role"] == "doctor"
    listed = await api.get(f"{V1}/users", params={"role": "doctor", "limit": 100}, headers=admin.headers)
    assert listed.status_code == 200
    page = listed.json()
    assert set(page) == {"items", "total", "limit", "offset"}
    assert all(u["role"] == "doctor" for u in page["items"])
    me = await api.patch(f"{V1}/users/{admin.id}", json={"isActive": False}, headers=admin.headers)
    assert me.status_code == 409


async def test_a_password_change_needs_the_current_password_and_revokes_every_token(
    api: httpx.AsyncClient,
) -> None:
    user = await register_patient_user(api)
    other_device = await login(api, user.email)
    url = f"{V1}/users/me/password"
    new_password = "a-new-battery-staple"
    wrong = await api.post(
        url, json={"currentPassword": "not-it", "newPassword": new_password}, headers=user.headers
    )
    assert wrong.status_code == 403
    changed = await api.post(
        url, json={"currentPassword": PASSWORD, "newPassword": new_password}, headers=user.headers
    )
    assert changed.status_code == 200, changed.text
    fresh = changed.json()["access_token"]
    for old in (user.token, other_device):
        assert (
            await api.get(f"{V1}/users/me", headers={"Authorization": f"Bearer {old}"})
        ).status_code == 401
    assert (await api.get(f"{V1}/users/me", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    old_login = await api.post(
        f"{V1}/auth/login",
        json={"email": user.email, "password": PASSWORD},
        headers={"X-Forwarded-For": fresh_ip()},
    )
    assert old_login.status_code == 401
    assert await login(api, user.email, new_password)


async def test_role_changes_and_deactivation_revoke_tokens_for_good(
    api: httpx.AsyncClient, admin: Account
) -> None:
    """A token issued before a role change or a deactivation never works again, not even after the
    account is reactivated: the holder signs in again."""
    staff = await create_user(api, admin, "staff")
    demoted = await api.patch(f"{V1}/users/{staff.id}", json={"role": "doctor"}, headers=admin.headers)
    assert demoted.status_code == 200
    assert (await api.get(f"{V1}/users/me", headers=staff.headers)).status_code == 401
    token = await login(api, staff.email)
    as_doctor = {"Authorization": f"Bearer {token}"}
    assert (await api.get(f"{V1}/users/me", headers=as_doctor)).json()["role"] == "doctor"
    for active in (False, True):
        resp = await api.patch(f"{V1}/users/{staff.id}", json={"isActive": active}, headers=admin.headers)
        assert resp.status_code == 200
    assert (await api.get(f"{V1}/users/me", headers=as_doctor)).status_code == 401
    assert (
        await api.get(f"{V1}/users/me", headers={"Authorization": f"Bearer {await login(api, staff.email)}"})
    ).status_code == 200


async def test_shared_accounts_log_in_again_before_their_token_runs_out(
    api: httpx.AsyncClient, admin: Account, settings: Settings
) -> None:
    """A run longer than a token's life (a slow CI machine) keeps the shared accounts signed in."""
    before = admin.token
    renew_shared_tokens(settings)
    assert admin.token == before  # a young token is kept
    admin.issued -= settings.jwt_ttl_seconds  # as if the run had gone on for a token's life
    aged = admin.issued
    renew_shared_tokens(settings)
    assert admin.token != before and admin.issued > aged  # a new token, and its age starts again
    resp = await api.get(f"{V1}/users/me", headers=admin.headers)
    assert resp.status_code == 200 and resp.json()["email"] == admin.email

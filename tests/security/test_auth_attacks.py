"""Attacks on authentication, each from outside over HTTP, on SQLite and PostgreSQL.

Password guessing in parallel, second-factor brute force with a stolen access token, TOTP
replay, tokens that outlive their session, weak passwords, cached token responses, account
enumeration and undecodable credentials.  Time is an injected clock (lockouts, TOTP steps) and
work is counted (argon2 verifications), never measured.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from tests.security.conftest import PASSWORD, assert_error_shape

from cryptoorchestrator.platform.services import auth as auth_module
from cryptoorchestrator.platform.storage.models import (
    BackupCode,
    LoginThrottle,
    RefreshToken,
    User,
)
from cryptoorchestrator.platform.storage.types import utcnow

WRONG = "wrong horse battery"


class Clock:
    """The auth clock of an app (lockouts, TOTP steps), moved only by the test."""

    def __init__(self, client: TestClient) -> None:
        self.now = utcnow()
        app: Any = client.app
        context = app.state.context
        context.auth_config = replace(context.auth_config, clock=lambda: self.now)

    def advance(self, **delta: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(**delta)

    def code(self, totp: pyotp.TOTP) -> str:
        """A code of a newer step than any used so far (codes are single use)."""
        self.advance(seconds=30)
        return totp.at(self.now)

    def wrong(self, totp: pyotp.TOTP) -> str:
        """A code that is valid for none of the accepted steps (now and one either side)."""
        valid = {totp.at(self.now + timedelta(seconds=30 * k)) for k in (-1, 0, 1)}
        return next(c for c in (f"{n:06d}" for n in range(1000)) if c not in valid)


class CountingHasher(PasswordHasher):
    """The platform's hasher, recording the hash of every verification (thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[str] = []
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        with self._lock:
            self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    """Count argon2 verifications of the auth service."""
    counting = CountingHasher()
    monkeypatch.setattr(auth_module, "_hasher", counting)
    return counting


def _factory(client: TestClient) -> Any:
    return client.app.state.context.session_factory  # type: ignore[attr-defined]


def _user(client: TestClient, email: str) -> User:
    with _factory(client)() as s:
        user = s.scalar(select(User).where(User.email == email))
        assert user is not None
        return user


def _register(client: TestClient, email: str, password: str = PASSWORD) -> None:
    r = client.post("/api/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text


def _login(
    client: TestClient, email: str, password: str = PASSWORD, **extra: str
) -> httpx.Response:
    return client.post("/api/auth/login", json={"email": email, "password": password, **extra})


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['accessToken']}"}


def _refresh_tokens(client: TestClient, email: str) -> int:
    with _factory(client)() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(RefreshToken)
                .join(User, User.id == RefreshToken.user_id)
                .where(User.email == email)
            )
            or 0
        )


def _enable_mfa(client: TestClient, clock: Clock, email: str) -> tuple[pyotp.TOTP, list[str]]:
    """Register ``email`` with MFA on; return its TOTP and backup codes."""
    _register(client, email)
    headers = _bearer(_login(client, email).json())
    secret = client.post("/api/auth/mfa/enroll", headers=headers).json()["secret"]
    totp = pyotp.TOTP(secret)
    r = client.post("/api/auth/mfa/confirm", json={"code": clock.code(totp)}, headers=headers)
    assert r.status_code == 200, r.text
    return totp, r.json()["backupCodes"]


def _mfa_login(client: TestClient, clock: Clock, email: str, totp: pyotp.TOTP) -> dict[str, str]:
    r = _login(client, email, totpCode=clock.code(totp))
    assert r.status_code == 200, r.text
    return _bearer(r.json())


# ------------------------------------------------------------------------------ guessing


def test_parallel_password_guesses_cannot_exceed_the_lockout(
    client: TestClient, hasher: CountingHasher
) -> None:
    _register(client, "victim@example.com")
    real_hash = _user(client, "victim@example.com").password_hash
    hasher.verified.clear()
    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(
            pool.map(lambda _: _login(client, "victim@example.com", WRONG).status_code, range(30))
        )
    assert set(codes) <= {401, 423}
    assert codes.count(401) <= 5
    # The budget was reserved before hashing: at most max_failed_logins real checks ran.
    assert hasher.verified.count(real_hash) <= 5
    checks = hasher.verified.count(real_hash)
    right = _login(client, "victim@example.com")
    assert right.status_code == 423
    assert_error_shape(right.json(), "account_locked")
    assert int(right.headers["retry-after"]) > 0
    assert hasher.verified.count(real_hash) == checks  # a locked pair checks nothing real
    assert _refresh_tokens(client, "victim@example.com") == 0  # no token was ever issued


def test_a_guesser_locks_their_own_address_not_the_owner(client: TestClient) -> None:
    clock = Clock(client)
    _register(client, "owner@example.com")
    attacker = TestClient(client.app, client=("203.0.113.66", 50000))
    for _ in range(5):
        assert _login(attacker, "owner@example.com", WRONG).status_code == 401
    assert _login(attacker, "owner@example.com").status_code == 423
    # The owner, elsewhere, is not locked out by someone else's guesses.
    assert _login(client, "owner@example.com").status_code == 200
    # Each further lock of the guessing pair lasts twice as long.
    first = int(_login(attacker, "owner@example.com", WRONG).headers["retry-after"])
    clock.advance(seconds=first + 1)
    for _ in range(5):
        assert _login(attacker, "owner@example.com", WRONG).status_code == 401
    second = _login(attacker, "owner@example.com", WRONG)
    assert second.status_code == 423
    assert int(second.headers["retry-after"]) > 1.5 * first


def test_guesses_from_many_addresses_hit_the_account_ceiling_for_a_bounded_time(
    client: TestClient, hasher: CountingHasher
) -> None:
    clock = Clock(client)
    _register(client, "spread@example.com")
    real_hash = _user(client, "spread@example.com").password_hash
    hasher.verified.clear()
    for n in range(30):  # 30 addresses, 2 guesses each: never a pair lock
        bot = TestClient(client.app, client=(f"198.51.100.{n}", 50000))
        for _ in range(2):
            assert _login(bot, "spread@example.com", WRONG).status_code in (401, 423)
    # The global ceiling (4 x 5) bounds the real checks, whatever the number of addresses.
    assert hasher.verified.count(real_hash) == 20
    locked = _login(client, "spread@example.com")
    assert locked.status_code == 423
    # The account lock never escalates: the owner is back after the base lockout.
    assert int(locked.headers["retry-after"]) <= 15 * 60 + 1
    clock.advance(minutes=15, seconds=2)
    assert _login(client, "spread@example.com").status_code == 200


# ------------------------------------------------------------------- second-factor guessing

MFA_ROUTES = ["/api/auth/mfa/disable", "/api/auth/mfa/backup-codes"]


@pytest.mark.parametrize("route", MFA_ROUTES)
def test_second_factor_brute_force_with_a_stolen_token_locks(
    client: TestClient, route: str
) -> None:
    clock = Clock(client)
    totp, codes = _enable_mfa(client, clock, "mfa@example.com")
    stolen = _mfa_login(client, clock, "mfa@example.com", totp)
    for _ in range(5):
        r = client.post(route, json={"code": clock.wrong(totp)}, headers=stolen)
        assert r.status_code == 422
        assert r.json()["details"][0]["field"] == "code"
    # Locked now: even a right code (or backup code) is refused without being checked.
    for code in (clock.code(totp), codes[0]):
        r = client.post(route, json={"code": code}, headers=stolen)
        assert r.status_code == 423, r.text
        assert_error_shape(r.json(), "account_locked")
    user = _user(client, "mfa@example.com")
    assert user.mfa_enabled is True
    with _factory(client)() as s:
        unused = s.scalar(
            select(func.count())
            .select_from(BackupCode)
            .where(BackupCode.user_id == user.id, BackupCode.used_at.is_(None))
        )
    assert unused == 10  # no code spent, none replaced
    # The same counter guards the login.
    assert _login(client, "mfa@example.com", totpCode=clock.code(totp)).status_code == 423


def test_confirm_brute_force_locks_and_mfa_stays_off(client: TestClient) -> None:
    clock = Clock(client)
    _register(client, "enrol@example.com")
    stolen = _bearer(_login(client, "enrol@example.com").json())
    secret = client.post("/api/auth/mfa/enroll", headers=stolen).json()["secret"]
    totp = pyotp.TOTP(secret)
    for _ in range(5):
        r = client.post("/api/auth/mfa/confirm", json={"code": clock.wrong(totp)}, headers=stolen)
        assert r.status_code == 422
    r = client.post("/api/auth/mfa/confirm", json={"code": clock.code(totp)}, headers=stolen)
    assert r.status_code == 423
    assert _user(client, "enrol@example.com").mfa_enabled is False


def test_parallel_second_factor_guesses_stay_within_budget(client: TestClient) -> None:
    clock = Clock(client)
    totp, _ = _enable_mfa(client, clock, "par@example.com")
    stolen = _mfa_login(client, clock, "par@example.com", totp)
    wrong = clock.wrong(totp)
    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(
            pool.map(
                lambda _: (
                    client.post(
                        "/api/auth/mfa/disable", json={"code": wrong}, headers=stolen
                    ).status_code
                ),
                range(20),
            )
        )
    assert set(codes) <= {422, 423}
    assert codes.count(422) <= 5
    assert _user(client, "par@example.com").mfa_enabled is True


# ----------------------------------------------------------------------------- TOTP replay


def test_totp_code_cannot_be_replayed(client: TestClient) -> None:
    clock = Clock(client)
    totp, _ = _enable_mfa(client, clock, "replay@example.com")
    code = clock.code(totp)
    assert _login(client, "replay@example.com", totpCode=code).status_code == 200
    again = _login(client, "replay@example.com", totpCode=code)
    assert again.status_code == 401
    assert again.json()["message"] == "Invalid MFA code"
    # An older step (still inside the drift window) is refused too.
    older = totp.at(clock.now - timedelta(seconds=30))
    assert _login(client, "replay@example.com", totpCode=older).status_code == 401
    # And on the MFA routes: the step used at login cannot switch MFA off.
    headers = _mfa_login(client, clock, "replay@example.com", totp)
    last = totp.at(clock.now)
    r = client.post("/api/auth/mfa/disable", json={"code": last}, headers=headers)
    assert r.status_code == 422
    assert _user(client, "replay@example.com").mfa_enabled is True


def test_parallel_replay_of_one_code_wins_once(client: TestClient) -> None:
    clock = Clock(client)
    totp, _ = _enable_mfa(client, clock, "race@example.com")
    code = clock.code(totp)
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(
            pool.map(
                lambda _: _login(client, "race@example.com", totpCode=code).status_code, range(4)
            )
        )
    assert codes.count(200) == 1
    assert set(codes) <= {200, 401, 423}


# -------------------------------------------------------------- tokens outliving sessions


def test_access_token_dies_with_logout(client: TestClient) -> None:
    _register(client, "out@example.com")
    one = _login(client, "out@example.com").json()
    two = _login(client, "out@example.com").json()
    assert client.get("/api/bots", headers=_bearer(one)).status_code == 200  # cached as live
    r = client.post(
        "/api/auth/logout", json={"refreshToken": one["refreshToken"]}, headers=_bearer(one)
    )
    assert r.status_code == 204
    for path in ("/api/bots", "/api/auth/profile"):
        gone = client.get(path, headers=_bearer(one))
        assert gone.status_code == 401
        assert gone.json()["message"] == "Invalid token"
    assert client.get("/api/bots", headers=_bearer(two)).status_code == 200  # another session
    # Logout everywhere: every access token of the account, and every refresh token, die.
    assert client.post("/api/auth/logout", json={}, headers=_bearer(two)).status_code == 204
    assert client.get("/api/bots", headers=_bearer(two)).status_code == 401
    r = client.post("/api/auth/refresh", json={"refreshToken": two["refreshToken"]})
    assert r.status_code == 401


def test_access_tokens_die_when_refresh_reuse_revokes_the_family(client: TestClient) -> None:
    _register(client, "reuse@example.com")
    first = _login(client, "reuse@example.com").json()
    second = client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]}).json()
    assert client.get("/api/bots", headers=_bearer(second)).status_code == 200
    stolen = client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert stolen.status_code == 401
    for tokens in (first, second):
        assert client.get("/api/bots", headers=_bearer(tokens)).status_code == 401


def test_enabling_mfa_revokes_older_tokens(client: TestClient) -> None:
    clock = Clock(client)
    _register(client, "late@example.com")
    thief = _login(client, "late@example.com").json()  # stolen before MFA
    owner = _bearer(_login(client, "late@example.com").json())
    assert client.get("/api/bots", headers=_bearer(thief)).status_code == 200
    totp = pyotp.TOTP(client.post("/api/auth/mfa/enroll", headers=owner).json()["secret"])
    r = client.post("/api/auth/mfa/confirm", json={"code": clock.code(totp)}, headers=owner)
    assert r.status_code == 200
    assert client.get("/api/bots", headers=_bearer(thief)).status_code == 401
    assert client.get("/api/bots", headers=owner).status_code == 401
    r = client.post("/api/auth/refresh", json={"refreshToken": thief["refreshToken"]})
    assert r.status_code == 401  # no new access token from an old refresh token either
    fresh = _mfa_login(client, clock, "late@example.com", totp)
    assert client.get("/api/bots", headers=fresh).status_code == 200


# --------------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    "password",
    ["12345678", "password", "password123", "p" * 12, "qwertyuiop", "weak@example.com1"],
)
def test_weak_passwords_are_refused(client: TestClient, password: str) -> None:
    r = client.post("/api/auth/register", json={"email": "weak@example.com", "password": password})
    assert r.status_code == 422
    assert_error_shape(r.json(), "invalid_input")
    detail = r.json()["details"][0]
    assert detail["field"] == "password"
    assert "too easy to guess" in detail["message"]
    with _factory(client)() as s:
        assert s.scalar(select(User.id).where(User.email == "weak@example.com")) is None


# ---------------------------------------------------------------------------------- caching


def test_token_responses_are_not_cacheable(client: TestClient) -> None:
    clock = Clock(client)
    r = client.post("/api/auth/register", json={"email": "c@example.com", "password": PASSWORD})
    responses = [r]
    login = _login(client, "c@example.com")
    responses.append(login)
    refreshed = client.post(
        "/api/auth/refresh", json={"refreshToken": login.json()["refreshToken"]}
    )
    responses.append(refreshed)
    headers = _bearer(refreshed.json())
    enrol = client.post("/api/auth/mfa/enroll", headers=headers)
    responses.append(enrol)
    totp = pyotp.TOTP(enrol.json()["secret"])
    confirm = client.post("/api/auth/mfa/confirm", json={"code": clock.code(totp)}, headers=headers)
    responses.append(confirm)
    headers = _mfa_login(client, clock, "c@example.com", totp)
    regen = client.post(
        "/api/auth/mfa/backup-codes", json={"code": clock.code(totp)}, headers=headers
    )
    responses.append(regen)
    responses.append(client.get("/api/auth/profile", headers=headers))
    for response in responses:
        assert response.status_code in (200, 201), response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"


# ------------------------------------------------------------------------------ enumeration


def _shape(r: httpx.Response) -> tuple[int, dict[str, Any], str | None]:
    return r.status_code, r.json(), r.headers.get("retry-after")


def test_unknown_wrong_inactive_and_locked_look_alike(
    client: TestClient, hasher: CountingHasher
) -> None:
    Clock(client)  # frozen: both locks report the same retry-after
    _register(client, "real@example.com")
    _register(client, "gone@example.com")
    with _factory(client)() as s:
        s.execute(update(User).where(User.email == "gone@example.com").values(is_active=False))
        s.commit()

    def attempt(email: str, password: str = WRONG) -> tuple[int, dict[str, Any], str | None]:
        before = len(hasher.verified)
        r = _login(client, email, password)
        assert len(hasher.verified) == before + 1  # exactly one argon2 verification, always
        return _shape(r)

    wrong = attempt("real@example.com")
    assert wrong[0] == 401
    assert attempt("nobody@example.com") == wrong
    assert attempt("gone@example.com", PASSWORD) == wrong
    assert attempt("not an email") == wrong
    for _ in range(4):
        assert attempt("real@example.com") == wrong
        assert attempt("nobody@example.com") == wrong
    # Both locked now: an unknown email locks exactly like a real account, and a locked
    # account answers the same whether or not the password is right.
    locked = attempt("real@example.com")
    assert locked[0] == 423
    assert attempt("nobody@example.com") == locked
    assert attempt("real@example.com", PASSWORD) == locked
    real_hash = _user(client, "real@example.com").password_hash
    checks = hasher.verified.count(real_hash)
    attempt("real@example.com", PASSWORD)
    assert hasher.verified.count(real_hash) == checks  # the dummy hash, not the real one


# ------------------------------------------------------------------------ undecodable input

SURROGATE_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("/api/auth/register", {"email": "s@example.com", "password": "\ud800" * 12}, "password"),
    ("/api/auth/register", {"email": "\ud800@example.com", "password": PASSWORD}, "email"),
    ("/api/auth/login", {"email": "s@example.com", "password": "\ud800"}, "password"),
    ("/api/auth/login", {"email": "\ud800@example.com", "password": PASSWORD}, "email"),
    (
        "/api/auth/login",
        {"email": "s@example.com", "password": PASSWORD, "totpCode": "\ud800"},
        "totpCode",
    ),
    (
        "/api/auth/login",
        {"email": "s@example.com", "password": PASSWORD, "backupCode": "\ud800"},
        "backupCode",
    ),
    ("/api/auth/refresh", {"refreshToken": "\ud800"}, "refreshToken"),
]


@pytest.mark.parametrize(("path", "body", "field"), SURROGATE_BODIES)
def test_lone_surrogate_in_a_credential_is_422_naming_it(
    lite: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    r = lite.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert_error_shape(r.json(), "invalid_input")
    assert r.json()["details"][0]["field"] == field


@pytest.mark.parametrize("route", ["/api/auth/mfa/confirm", *MFA_ROUTES])
def test_lone_surrogate_in_an_mfa_code_is_422(lite: TestClient, route: str) -> None:
    _register(lite, "sur@example.com")
    headers = _bearer(_login(lite, "sur@example.com").json())
    body = json.dumps({"code": "\ud800" * 6})
    r = lite.post(route, content=body, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["field"] == "code"


# --------------------------------------------------------------------------- password change

NEW_PASSWORD = "violet tractor lantern"


def test_password_change_cannot_be_used_to_guess_and_ends_every_session(
    client: TestClient,
) -> None:
    clock = Clock(client)
    _register(client, "pw@example.com")
    stolen = _bearer(_login(client, "pw@example.com").json())
    other = _login(client, "pw@example.com").json()
    body = {"currentPassword": WRONG, "newPassword": NEW_PASSWORD}
    for _ in range(5):
        r = client.post("/api/auth/password", json=body, headers=stolen)
        assert r.status_code == 422
        assert r.json()["details"][0]["field"] == "currentPassword"
    right = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    r = client.post("/api/auth/password", json=right, headers=stolen)
    assert r.status_code == 423  # locked: the right password is not even checked
    assert _login(client, "pw@example.com", NEW_PASSWORD).status_code == 423
    # Once the lock has passed, the owner changes it; every older token dies.
    clock.advance(minutes=15, seconds=2)
    weak = {"currentPassword": PASSWORD, "newPassword": "password1"}
    r = client.post("/api/auth/password", json=weak, headers=_bearer(other))
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "newPassword"
    r = client.post("/api/auth/password", json=right, headers=_bearer(other))
    assert r.status_code == 204, r.text
    for headers in (stolen, _bearer(other)):
        assert client.get("/api/bots", headers=headers).status_code == 401
    assert (
        client.post("/api/auth/refresh", json={"refreshToken": other["refreshToken"]}).status_code
        == 401
    )
    assert _login(client, "pw@example.com").status_code == 401
    assert _login(client, "pw@example.com", NEW_PASSWORD).status_code == 200


def test_guessing_unknown_emails_does_not_grow_the_counters_forever(client: TestClient) -> None:
    clock = Clock(client)
    for n in range(5):
        assert _login(client, f"ghost{n}@example.com", WRONG).status_code == 401
    with _factory(client)() as s:
        before = s.scalar(select(func.count()).select_from(LoginThrottle))
    assert before == 2 * 5 + 1  # pair and account per email, one address
    clock.advance(hours=25)
    assert _login(client, "fresh@example.com", WRONG).status_code == 401
    with _factory(client)() as s:
        after = s.scalar(select(func.count()).select_from(LoginThrottle))
    assert after == 3  # the idle counters are gone; the new pair, account and address remain

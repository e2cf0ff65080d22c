"""Attacks on ``POST /api/auth/token``, the OAuth2 password flow behind Swagger UI's Authorize.

The form endpoint checks credentials exactly as ``POST /api/auth/login`` does: the same failure
counters and lockouts (shared with ``/login``), the same auth rate limit, the same second factor
(appended to the password after a colon, or as a form field).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient
from tests.security.conftest import PASSWORD, assert_error_shape, options
from tests.security.test_auth_attacks import WRONG, Clock, _enable_mfa, _register

TOKEN = "/api/auth/token"  # noqa: S105 (a path)


def _token(
    client: TestClient, email: str, password: str = PASSWORD, **extra: str
) -> httpx.Response:
    return client.post(TOKEN, data={"username": email, "password": password, **extra})


def test_wrong_passwords_lock_the_token_endpoint_and_login_alike(client: TestClient) -> None:
    clock = Clock(client)
    _register(client, "form@example.com")
    attacker = TestClient(client.app, client=("203.0.113.77", 50000))
    for _ in range(5):
        wrong = _token(attacker, "form@example.com", WRONG)
        assert wrong.status_code == 401
        assert_error_shape(wrong.json(), "unauthorized")
    locked = _token(attacker, "form@example.com")  # even the right password now
    assert locked.status_code == 423
    assert_error_shape(locked.json(), "account_locked")
    assert int(locked.headers["retry-after"]) >= 1
    # One set of counters: the JSON login of the same pair is locked too.
    json_login = attacker.post(
        "/api/auth/login", json={"email": "form@example.com", "password": PASSWORD}
    )
    assert json_login.status_code == 423
    # The owner, elsewhere, still gets in; the attacker again after the lockout.
    assert _token(client, "form@example.com").status_code == 200
    clock.advance(seconds=int(locked.headers["retry-after"]) + 1)
    assert _token(attacker, "form@example.com").status_code == 200


def test_token_endpoint_spends_the_auth_rate_limit(
    app_factory: Callable[..., TestClient],
) -> None:
    client = app_factory(options=options(rate_limit_auth=3, rate_limit_window_s=86_400))
    codes = [_token(client, "nobody@example.com", WRONG).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    over = _token(client, "nobody@example.com", WRONG)
    assert over.status_code == 429
    assert_error_shape(over.json(), "rate_limited")
    # /login shares that budget.
    assert (
        client.post(
            "/api/auth/login", json={"email": "x@example.com", "password": WRONG}
        ).status_code
        == 429
    )


def test_mfa_code_after_the_password_or_as_a_field(lite: TestClient) -> None:
    clock = Clock(lite)
    totp, backup = _enable_mfa(lite, clock, "mfa-form@example.com")
    missing = _token(lite, "mfa-form@example.com")
    assert missing.status_code == 401
    assert_error_shape(missing.json(), "mfa_required")
    bad = _token(lite, "mfa-form@example.com", f"{PASSWORD}:{clock.wrong(totp)}")
    assert bad.status_code == 401
    # A right code with a wrong password is refused (and counted) like any wrong password.
    assert _token(lite, "mfa-form@example.com", f"{WRONG}:{clock.code(totp)}").status_code == 401
    ok = _token(lite, "mfa-form@example.com", f"{PASSWORD}:{clock.code(totp)}")
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"] == "bearer"  # noqa: S105
    field = _token(lite, "mfa-form@example.com", totp_code=clock.code(totp))
    assert field.status_code == 200, field.text
    by_backup = _token(lite, "mfa-form@example.com", f"{PASSWORD}:{backup[0]}")
    assert by_backup.status_code == 200, by_backup.text
    # Single use: the same backup code again is refused.
    assert _token(lite, "mfa-form@example.com", f"{PASSWORD}:{backup[0]}").status_code == 401


def test_colon_in_a_password_without_mfa_is_just_a_password(lite: TestClient) -> None:
    _register(lite, "colon@example.com", "pass:word:123456")
    assert _token(lite, "colon@example.com", "pass:word:123456").status_code == 200
    assert _token(lite, "colon@example.com", "pass:word").status_code == 401

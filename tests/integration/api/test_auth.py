"""Auth flows through HTTP: tokens, refresh rotation and reuse, MFA, lockout, audit."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.integration.api.conftest import (
    PASSWORD,
    assert_error_shape,
    options,
    register_and_login,
)

from cryptoorchestrator.platform.logs import flush_logs
from cryptoorchestrator.platform.services.auth import AuthConfig, create_access_token
from cryptoorchestrator.platform.storage.models import AuditLog, RefreshToken, User
from cryptoorchestrator.platform.storage.types import utcnow


def _login(client: TestClient, email: str, **extra: str) -> object:
    return client.post("/api/auth/login", json={"email": email, "password": PASSWORD, **extra})


def test_register_login_profile(client: TestClient) -> None:
    headers = register_and_login(client, "alice@example.com")
    r = client.get("/api/auth/profile", headers=headers)
    assert r.status_code == 200
    assert r.json()["email"] == "alice@example.com"
    assert r.json()["mfaEnabled"] is False
    assert "passwordHash" not in r.json()
    dup = client.post(
        "/api/auth/register", json={"email": "ALICE@example.com", "password": PASSWORD}
    )
    assert dup.status_code == 409
    assert_error_shape(dup.json(), "conflict")


def test_wrong_password_and_short_password(client: TestClient) -> None:
    register_and_login(client, "bob@example.com")
    r = client.post("/api/auth/login", json={"email": "bob@example.com", "password": "nope-nope"})
    assert r.status_code == 401
    assert_error_shape(r.json(), "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post("/api/auth/register", json={"email": "c@example.com", "password": "short"})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "password"


def test_token_errors_say_expired_or_invalid(client: TestClient) -> None:
    register_and_login(client, "carol@example.com")
    app = client.app
    assert r_missing(client)["code"] == "unauthorized"
    bad = client.get("/api/auth/profile", headers={"Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401
    assert bad.json()["message"] == "Invalid token"
    config: AuthConfig = app.state.context.auth_config  # type: ignore[attr-defined]
    with app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        uid = s.scalar(select(User.id).where(User.email == "carol@example.com"))
    old = create_access_token(
        config, uid, now=utcnow() - timedelta(hours=1), session_id="s", epoch=0
    )
    expired = client.get("/api/auth/profile", headers={"Authorization": f"Bearer {old}"})
    assert expired.status_code == 401
    assert expired.json()["message"] == "Token expired"
    forged = AuthConfig(secret_key="another-secret-key-of-enough-length")
    other = create_access_token(forged, uid, session_id="s", epoch=0)
    r = client.get("/api/auth/profile", headers={"Authorization": f"Bearer {other}"})
    assert r.json()["message"] == "Invalid token"


def r_missing(client: TestClient) -> dict[str, object]:
    r = client.get("/api/auth/profile")
    assert r.status_code == 401
    return r.json()


def test_refresh_rotation_and_reuse_revokes_family(client: TestClient) -> None:
    client.post("/api/auth/register", json={"email": "dan@example.com", "password": PASSWORD})
    first = _login(client, "dan@example.com").json()
    r1 = client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert r1.status_code == 200
    second = r1.json()
    assert second["refreshToken"] != first["refreshToken"]
    assert (
        client.get(
            "/api/auth/profile", headers={"Authorization": f"Bearer {second['accessToken']}"}
        ).status_code
        == 200
    )
    # Reusing the rotated token: refused, and the token issued in its place dies too.
    reuse = client.post("/api/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert reuse.status_code == 401
    assert_error_shape(reuse.json(), "unauthorized")
    after = client.post("/api/auth/refresh", json={"refreshToken": second["refreshToken"]})
    assert after.status_code == 401
    # Another login (another family) is unaffected.
    fresh = _login(client, "dan@example.com").json()
    ok = client.post("/api/auth/refresh", json={"refreshToken": fresh["refreshToken"]})
    assert ok.status_code == 200
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        actions = set(s.scalars(select(AuditLog.action)))
    assert {"auth.refresh_reuse", "login.succeeded", "user.registered"} <= actions


def test_refresh_validation_and_logout(client: TestClient) -> None:
    r = client.post("/api/auth/refresh", json={})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == "refreshToken"
    assert client.post("/api/auth/refresh", json={"refreshToken": "x.y"}).status_code == 401
    client.post("/api/auth/register", json={"email": "eve@example.com", "password": PASSWORD})
    tokens = _login(client, "eve@example.com").json()
    headers = {"Authorization": f"Bearer {tokens['accessToken']}"}
    out = client.post(
        "/api/auth/logout", json={"refreshToken": tokens["refreshToken"]}, headers=headers
    )
    assert out.status_code == 204
    again = client.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    assert again.status_code == 401
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        rows = list(s.scalars(select(RefreshToken)))
    assert rows
    assert all(r.revoked_at is not None for r in rows)


class StepClock:
    """The auth clock of an app, moved a TOTP step (30 s) forward on each ``code()``."""

    def __init__(self, client: TestClient) -> None:
        self.now = utcnow()
        app = client.app
        context = app.state.context  # type: ignore[attr-defined]
        context.auth_config = replace(context.auth_config, clock=lambda: self.now)

    def code(self, totp: pyotp.TOTP) -> str:
        """A fresh code: TOTP codes are single use, so each use needs a later step."""
        self.now += timedelta(seconds=30)
        return totp.at(self.now)


def test_mfa_enrol_confirm_login_backup_codes_disable(client: TestClient) -> None:
    clock = StepClock(client)
    headers = register_and_login(client, "mfa@example.com")
    enrol = client.post("/api/auth/mfa/enroll", headers=headers)
    assert enrol.status_code == 200
    secret = enrol.json()["secret"]
    assert enrol.json()["otpauthUri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(secret)
    bad = client.post("/api/auth/mfa/confirm", json={"code": "000000"}, headers=headers)
    if totp.at(clock.now) != "000000":
        assert bad.status_code == 422
    conf = client.post("/api/auth/mfa/confirm", json={"code": clock.code(totp)}, headers=headers)
    assert conf.status_code == 200
    codes = conf.json()["backupCodes"]
    assert len(codes) == 10
    assert len(set(codes)) == 10
    # Switching MFA on ended every session, this one included.
    assert client.get("/api/auth/profile", headers=headers).status_code == 401

    need = _login(client, "mfa@example.com")
    assert need.status_code == 401
    assert need.json()["code"] == "mfa_required"
    login = _login(client, "mfa@example.com", totpCode=clock.code(totp))
    assert login.status_code == 200
    headers = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    assert _login(client, "mfa@example.com", backupCode=codes[0]).status_code == 200
    # Backup codes are single use.
    assert _login(client, "mfa@example.com", backupCode=codes[0]).status_code == 401
    profile = client.get("/api/auth/profile", headers=headers).json()
    assert profile["mfaEnabled"] is True
    assert profile["backupCodesLeft"] == 9

    regen = client.post(
        "/api/auth/mfa/backup-codes", json={"code": clock.code(totp)}, headers=headers
    )
    assert regen.status_code == 200
    new_codes = regen.json()["backupCodes"]
    assert len(new_codes) == 10
    assert _login(client, "mfa@example.com", backupCode=codes[1]).status_code == 401
    assert _login(client, "mfa@example.com", backupCode=new_codes[0]).status_code == 200

    off = client.post("/api/auth/mfa/disable", json={"code": clock.code(totp)}, headers=headers)
    assert off.status_code == 204
    assert client.get("/api/auth/profile", headers=headers).status_code == 401
    assert _login(client, "mfa@example.com").status_code == 200
    with client.app.state.context.session_factory() as s:  # type: ignore[attr-defined]
        actions = set(s.scalars(select(AuditLog.action)))
        user = s.scalar(select(User).where(User.email == "mfa@example.com"))
    assert {"mfa.enabled", "mfa.disabled", "mfa.backup_codes_regenerated"} <= actions
    assert user is not None
    assert user.mfa_secret_enc is None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_lockout_after_repeated_failures(app_factory: object, db_url: str) -> None:
    client = app_factory(db_url, options=options(max_failed_logins=3))  # type: ignore[operator]
    client.post("/api/auth/register", json={"email": "lock@example.com", "password": PASSWORD})
    for _ in range(3):
        r = client.post(
            "/api/auth/login", json={"email": "lock@example.com", "password": "wrong-password"}
        )
        assert r.status_code == 401
    locked = _login(client, "lock@example.com")
    assert locked.status_code == 423
    assert_error_shape(locked.json(), "account_locked")
    assert int(locked.headers["retry-after"]) > 0


def test_secrets_never_in_logs(lite: TestClient, settings: object) -> None:
    headers = register_and_login(lite, "logs@example.com")
    tokens = _login(lite, "logs@example.com").json()
    lite.post(
        "/api/integrations/exchanges/accounts",
        json={
            "name": "main",
            "exchange": "binance",
            "apiKey": "KEYabc123456",
            "apiSecret": "SECRETxyz987654",
        },
        headers=headers,
    )
    lite.post("/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]})
    lite.get("/api/bots", headers=headers)
    flush_logs()
    log = (settings.log_dir / "fastapi.log").read_text()  # type: ignore[attr-defined]
    assert "GET" in log  # the access log was written
    for secret in (
        PASSWORD,
        "KEYabc123456",
        "SECRETxyz987654",
        tokens["refreshToken"],
        tokens["accessToken"],
    ):
        assert secret not in log

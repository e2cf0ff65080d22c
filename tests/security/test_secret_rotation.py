"""Rotating the platform secret key (``cryptoorch db rotate-secret-key``).

After a rotation every stored secret opens with the new key only, every session of the old key
is dead, and a rotation that cannot open a secret changes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from tests.security.conftest import PASSWORD, options
from typer.testing import CliRunner

from cryptoorchestrator.api.app import create_app
from cryptoorchestrator.cli.main import app as cli
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.services.accounts import AccountService
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage.db import dispose_engines, session_scope, upgrade
from cryptoorchestrator.platform.storage.models import ExchangeAccount, User

EMAIL = "rotate@example.com"


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CRYPTOORCH_LOG_DIR", str(settings.log_dir))
    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()


def _enrol(tc: TestClient) -> tuple[dict[str, str], str, str]:
    """Register, log in, add an account with keys, switch MFA on; return headers, secret,
    refresh token."""
    assert tc.post("/api/auth/register", json={"email": EMAIL, "password": PASSWORD}).is_success
    tokens = tc.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {tokens['accessToken']}"}
    r = tc.post(
        "/api/integrations/exchanges/accounts",
        json={
            "name": "main",
            "exchange": "binance",
            "mode": "paper",
            "apiKey": "key-1234567890",
            "apiSecret": "secret-1234567890",
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    secret = tc.post("/api/auth/mfa/enroll", headers=headers).json()["secret"]
    r = tc.post("/api/auth/mfa/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=headers)
    assert r.is_success, r.text
    return headers, secret, tokens["refreshToken"]


def test_rotation_reseals_secrets_and_ends_sessions(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"database_url": db_url})
    upgrade(settings)
    _env(monkeypatch, settings)
    old_key = settings.resolved_secret_key()
    with TestClient(create_app(settings, options=options())) as tc:
        headers, totp_secret, refresh = _enrol(tc)
    with session_scope(settings) as session:
        before = session.scalar(select(ExchangeAccount.api_secret_enc))

    result = CliRunner().invoke(cli, ["db", "rotate-secret-key", "--yes"])
    assert result.exit_code == 0, result.output
    new_key = (settings.var_dir / "secret.key").read_text().strip()
    assert new_key != old_key
    assert not (settings.var_dir / "secret.key.new").exists()
    assert "must log in again" in result.output
    assert EMAIL in result.output  # backup codes could not be re-keyed: the user is named

    with session_scope(settings) as session:
        row = session.scalar(select(ExchangeAccount))
        assert row is not None
        assert row.api_secret_enc != before
        creds = AccountService(session, row.user_id, SecretBox(new_key)).credentials(row)
        assert creds["api_secret"] == "secret-1234567890"  # noqa: S105
        with pytest.raises(Exception, match="wrong secret key"):
            AccountService(session, row.user_id, SecretBox(old_key)).credentials(row)

    with TestClient(create_app(settings, options=options())) as tc:
        # Tokens of the old key are dead: access and refresh alike.
        assert tc.get("/api/bots", headers=headers).status_code == 401
        assert tc.post("/api/auth/refresh", json={"refreshToken": refresh}).status_code == 401
        # The TOTP secret was re-sealed, so the second factor still works.
        code = pyotp.TOTP(totp_secret).at(time.time() + 30)
        r = tc.post(
            "/api/auth/login", json={"email": EMAIL, "password": PASSWORD, "totpCode": code}
        )
        assert r.status_code == 200, r.text
    dispose_engines()


def test_rotation_that_cannot_open_a_secret_changes_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(settings)
    _env(monkeypatch, settings)
    old_key = settings.resolved_secret_key()
    with TestClient(create_app(settings, options=options())) as tc:
        _enrol(tc)
    with session_scope(settings) as session:
        # A secret sealed under another key (a restored row, a tampered blob).
        session.execute(
            update(User).values(mfa_secret_enc=SecretBox("x" * 40).encrypt("S", "user:1:totp"))
        )
    with session_scope(settings) as session:
        blobs = (
            session.scalar(select(User.mfa_secret_enc)),
            session.scalar(select(ExchangeAccount.api_key_enc)),
        )
    result = CliRunner().invoke(cli, ["db", "rotate-secret-key", "--yes"])
    assert result.exit_code != 0
    assert "wrong secret key" in str(result.exception)
    assert (settings.var_dir / "secret.key").read_text().strip() == old_key
    with session_scope(settings) as session:
        assert blobs == (
            session.scalar(select(User.mfa_secret_enc)),
            session.scalar(select(ExchangeAccount.api_key_enc)),
        )
    dispose_engines()


def test_rotation_refuses_a_short_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    upgrade(settings)
    _env(monkeypatch, settings)
    short = tmp_path / "new.key"
    short.write_text("too-short")
    result = CliRunner().invoke(
        cli, ["db", "rotate-secret-key", "--yes", "--new-key-file", str(short)]
    )
    assert result.exit_code != 0
    assert "at least 32 characters" in str(result.exception)
    dispose_engines()

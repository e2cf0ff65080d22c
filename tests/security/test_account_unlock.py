"""An account locked by guesses from many addresses is unlocked by the operator
(``cryptoorch users unlock``), and by the demo's restart, which gives it a new password."""

from __future__ import annotations

import pytest
from tests.security.conftest import PASSWORD
from typer.testing import CliRunner

from cryptoorchestrator.cli.main import app as cli
from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import AccountLockedError, UnauthorizedError
from cryptoorchestrator.platform.services.auth import AuthConfig, AuthService
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage.db import dispose_engines, session_scope, upgrade

EMAIL = "locked@example.com"


def _login(settings: Settings, password: str, ip: str) -> None:
    key = settings.resolved_secret_key()
    config = AuthConfig(secret_key=key, max_failed_logins=1)  # the account ceiling is 4
    with session_scope(settings) as session:
        AuthService(session, config, SecretBox(key)).login(EMAIL, password, ip=ip)


def test_operator_unlocks_an_account_locked_from_many_addresses(
    settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"database_url": db_url})
    upgrade(settings)
    for name, value in (
        ("CRYPTOORCH_DATABASE_URL", settings.database_url),
        ("CRYPTOORCH_VAR_DIR", str(settings.var_dir)),
    ):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    with session_scope(settings) as session:
        key = settings.resolved_secret_key()
        AuthService(session, AuthConfig(secret_key=key), SecretBox(key)).register(EMAIL, PASSWORD)
    for i in range(4):  # one wrong guess from each of four addresses
        with pytest.raises(UnauthorizedError):
            _login(settings, "wrong password", f"198.51.100.{i}")
    with pytest.raises(AccountLockedError):  # the owner, from an address of their own
        _login(settings, PASSWORD, "203.0.113.7")
    result = CliRunner().invoke(cli, ["users", "unlock", EMAIL.upper()])
    assert result.exit_code == 0, result.output
    assert "unlocked" in result.output
    _login(settings, PASSWORD, "203.0.113.7")
    # The guessers' own addresses stay locked for this account.
    with pytest.raises(AccountLockedError):
        _login(settings, PASSWORD, "198.51.100.0")
    dispose_engines()

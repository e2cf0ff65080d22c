"""Exchange credentials: encrypted at rest, round trip on SQLite and PostgreSQL, never logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cryptoorchestrator.platform.errors import ConfigError, NotFoundError
from cryptoorchestrator.platform.exchange import accounts
from cryptoorchestrator.platform.logs import setup_api_logging
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import ExchangeAccount, User

API_KEY = "AKIA-unit-test-key-7Hq2"
API_SECRET = "s3cr3t-unit-test-secret-value-9f8e7d6c5b4a"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        database_url=db_url, secret_key="k" * 40, log_dir=tmp_path / "logs", log_level="DEBUG"
    )
    db.upgrade(settings)
    with db.session_scope(settings) as s:
        s.add(User(id=1, email="a@example.com", password_hash="x"))
    yield settings
    db.dispose_engines()


def store(settings: Settings, **kw: object) -> int:
    args: dict[str, object] = {
        "user_id": 1,
        "name": "main",
        "exchange": "binance",
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }
    args.update(kw)
    with db.session_scope(settings) as s:
        return accounts.store_credentials(s, settings, **args)  # type: ignore[arg-type]


def test_round_trip_and_ciphertext_hides_the_secret(settings: Settings) -> None:
    account_id = store(settings, passphrase="pass-phrase-123")
    with db.session_scope(settings) as s:
        creds = accounts.load_credentials(s, settings, account_id)
        raw = s.execute(
            text("SELECT api_key_enc, api_secret_enc FROM exchange_accounts WHERE id = :i"),
            {"i": account_id},
        ).one()
        view = accounts.public_view(s.get(ExchangeAccount, account_id))  # type: ignore[arg-type]
    assert (creds.api_key, creds.api_secret, creds.passphrase) == (
        API_KEY,
        API_SECRET,
        "pass-phrase-123",
    )
    assert API_SECRET not in repr(creds)
    assert API_KEY not in repr(creds)
    for blob in raw:
        assert API_SECRET.encode() not in bytes(blob)
        assert API_KEY.encode() not in bytes(blob)
    assert view["has_api_secret"] is True
    assert API_SECRET not in repr(view)
    assert API_KEY not in repr(view)


def test_ciphertext_is_bound_to_its_row_and_key(settings: Settings) -> None:
    first = store(settings)
    second = store(settings, name="other", api_key="other-key-123456", api_secret="other-sec-12345")
    with db.session_scope(settings) as s:
        a = s.get(ExchangeAccount, first)
        b = s.get(ExchangeAccount, second)
        assert a is not None
        assert b is not None
        b.api_secret_enc = a.api_secret_enc  # copied to another row: must not decrypt
    with db.session_scope(settings) as s, pytest.raises(ConfigError):
        accounts.load_credentials(s, settings, second)
    other_key = settings.model_copy(update={"secret_key": None, "var_dir": settings.log_dir})
    with db.session_scope(settings) as s, pytest.raises(ConfigError):
        accounts.load_credentials(s, other_key, first)


def test_update_replaces_credentials_and_unknown_account_fails(settings: Settings) -> None:
    account_id = store(settings)
    store(settings, account_id=account_id, api_key="new-key-abcdef", api_secret="new-secret-xyz")
    with db.session_scope(settings) as s:
        creds = accounts.load_credentials(s, settings, account_id)
    assert (creds.api_key, creds.api_secret) == ("new-key-abcdef", "new-secret-xyz")
    with pytest.raises(NotFoundError):
        store(settings, account_id=account_id + 100)
    with db.session_scope(settings) as s, pytest.raises(NotFoundError):
        accounts.load_credentials(s, settings, account_id + 100)


def test_no_secret_reaches_the_log_file(settings: Settings) -> None:
    logger = setup_api_logging(settings.log_dir, "DEBUG")
    ccxt_logger = logging.getLogger("ccxt")
    handler = next(
        h for h in logger.handlers if getattr(h, "baseFilename", "").endswith("fastapi.log")
    )
    ccxt_logger.addHandler(handler)
    ccxt_logger.setLevel(logging.DEBUG)
    # The operator allows the port (loopback is refused otherwise).
    settings = settings.model_copy(update={"allowed_api_hosts": ["127.0.0.1:9"]})
    try:
        account_id = store(settings, api_url="http://127.0.0.1:9")  # nothing listens there
        with db.session_scope(settings) as s:
            creds = accounts.load_credentials(s, settings, account_id)
        logging.getLogger("cryptoorchestrator.test").info("loaded %s", creds)
        # A connection test that fails (refused) logs its error: the secret must not be in it.
        report = asyncio.run(accounts.test_connection(settings, account_id))
        logging.getLogger("cryptoorchestrator.test").warning("report %s", report)
    finally:
        ccxt_logger.removeHandler(handler)
        logger.removeHandler(handler)
        handler.close()
    assert report.ok is False
    assert report.error_code in ("exchange_unavailable", "exchange_error")
    log_text = (settings.log_dir / "fastapi.log").read_text()
    assert "exchange account" in log_text  # the file did receive this module's records
    assert API_SECRET not in log_text
    assert API_KEY not in log_text
    with db.session_scope(settings) as s:
        account = s.get(ExchangeAccount, account_id)
        assert account is not None
        assert account.permissions == {"read": False, "trade": None, "withdraw": None, "ok": False}
        assert account.last_tested_at is not None


def test_connection_without_credentials_is_reported_not_raised(settings: Settings) -> None:
    # A live account needs keys (a paper one is tested on the exchange's public data).
    account_id = store(settings, api_key=None, api_secret=None, mode="live")
    report = asyncio.run(accounts.test_connection(settings, account_id))
    assert (report.ok, report.can_read, report.error_code) == (False, False, "exchange_auth_failed")


def test_mode_is_checked(settings: Settings) -> None:
    with pytest.raises(Exception, match="mode"):
        store(settings, mode="yolo")

"""Exchange accounts: credentials encrypted at rest, loaded only to build a client, tested safely.

Keys and secrets are sealed with :class:`~cryptoorchestrator.platform.crypto.SecretBox` (AES-256-
GCM, key from the platform secret key) and bound to their row and column, so a ciphertext copied
elsewhere does not decrypt.  Decrypted values are registered with the log redactor on the way
out, never logged by this module, and never part of :func:`public_view` (the only shape the API
and CLI may show).  :func:`test_connection` proves a key works and reports what it may do
without placing an order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
)
from cryptoorchestrator.platform.exchange.urls import GuardedSession, UrlPolicy, check_account_url
from cryptoorchestrator.platform.model import BotMode
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import ExchangeAccount

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Decrypted credentials of one account; ``repr`` never shows them."""

    account_id: int
    exchange: str
    api_key: str | None = field(repr=False, default=None)
    api_secret: str | None = field(repr=False, default=None)
    passphrase: str | None = field(repr=False, default=None)
    api_url: str | None = None
    mode: str = BotMode.PAPER.value


@dataclass(frozen=True)
class ConnectionReport:
    """What :func:`test_connection` found: a value, whether the key works or not.

    ``can_trade`` / ``can_withdraw`` are None when the exchange does not say.
    """

    ok: bool
    can_read: bool
    can_trade: bool | None
    can_withdraw: bool | None = None
    error: str | None = None
    error_code: str | None = None
    tested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def permissions(self) -> dict[str, Any]:
        """Return the permissions as stored on the account row."""
        return {"read": self.can_read, "trade": self.can_trade, "withdraw": self.can_withdraw}


def credential_purpose(account_id: int, column: str) -> str:
    """Return the SecretBox purpose of one credential column: binds it to its row and column."""
    return f"exchange_account:{account_id}:{column}"


def _box(settings: Settings) -> SecretBox:
    return SecretBox(settings.resolved_secret_key())


def store_credentials(
    session: Session,
    settings: Settings,
    *,
    user_id: int,
    name: str,
    exchange: str,
    api_key: str | None,
    api_secret: str | None,
    passphrase: str | None = None,
    mode: str = BotMode.LIVE.value,
    api_url: str | None = None,
    account_id: int | None = None,
) -> int:
    """Create (or, with ``account_id``, update) an account with its credentials encrypted.

    Returns
    -------
    int
        The account's id.

    Raises
    ------
    NotFoundError
        If ``account_id`` names no account of ``user_id``.
    InvalidInputError
        If ``mode`` is not ``live`` or ``paper``, or ``api_url`` is not allowed (``apiUrl``).
    """
    if mode not in (BotMode.LIVE.value, BotMode.PAPER.value):
        raise InvalidInputError("mode", f"unknown mode {mode!r}", allowed=["live", "paper"])
    api_url = check_account_url(settings, exchange, api_url)
    if account_id is None:
        account = ExchangeAccount(user_id=user_id, name=name, exchange=exchange)
        session.add(account)
    else:
        found = session.get(ExchangeAccount, account_id)
        if found is None or found.user_id != user_id:
            raise NotFoundError(f"exchange account {account_id} not found")
        account = found
    account.name, account.exchange, account.mode, account.api_url = name, exchange, mode, api_url
    session.flush()  # the id is part of each ciphertext's purpose
    box = _box(settings)
    values = {"api_key": api_key, "api_secret": api_secret, "passphrase": passphrase}
    for column, value in values.items():
        sealed = box.encrypt(value, credential_purpose(account.id, column)) if value else None
        setattr(account, f"{column}_enc", sealed)
    # Old permissions describe the old key.
    account.permissions = None
    account.last_tested_at = None
    log.info(
        "stored credentials of exchange account",
        extra={"account_id": account.id, "exchange": exchange, "mode": mode},
    )
    return account.id


def load_credentials(session: Session, settings: Settings, account_id: int) -> Credentials:
    """Return an account's decrypted credentials (for building a client only).

    Raises
    ------
    NotFoundError
        If the account does not exist.
    ConfigError
        If the ciphertexts do not decrypt (wrong secret key, tampered or moved data).
    """
    account = session.get(ExchangeAccount, account_id)
    if account is None:
        raise NotFoundError(f"exchange account {account_id} not found")
    box = _box(settings)

    def open_(column: str) -> str | None:
        blob = getattr(account, f"{column}_enc")
        return box.decrypt(blob, credential_purpose(account.id, column)) if blob else None

    return Credentials(
        account_id=account.id,
        exchange=account.exchange,
        api_key=open_("api_key"),
        api_secret=open_("api_secret"),
        passphrase=open_("passphrase"),
        api_url=account.api_url,
        mode=account.mode,
    )


def public_view(account: ExchangeAccount) -> dict[str, Any]:
    """Return what may be shown about an account: never a key, a secret or a ciphertext."""
    return {
        "id": account.id,
        "user_id": account.user_id,
        "name": account.name,
        "exchange": account.exchange,
        "mode": account.mode,
        "api_url": account.api_url,
        "has_api_key": account.api_key_enc is not None,
        "has_api_secret": account.api_secret_enc is not None,
        "has_passphrase": account.passphrase_enc is not None,
        "permissions": account.permissions,
        "last_tested_at": account.last_tested_at.isoformat() if account.last_tested_at else None,
    }


def build_client(credentials: Credentials, **kwargs: Any) -> Any:
    """Return a :class:`~cryptoorchestrator.platform.exchange.ccxt_client.CcxtExecutionClient`
    for the account (its circuit breaker keyed ``<exchange>:<account id>``)."""
    from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient

    return CcxtExecutionClient.for_exchange(
        credentials.exchange,
        api_key=credentials.api_key,
        secret=credentials.api_secret,
        password=credentials.passphrase,
        api_url=credentials.api_url,
        account_id=credentials.account_id,
        **kwargs,
    )


async def check_permissions(exchange: Any) -> ConnectionReport:
    """Ask a ccxt async exchange (with credentials) what its key may do, placing no order.

    Reading the balance proves the key and signature work (read permission); the account
    endpoint's flags, where the exchange has them (Binance: ``canTrade``, ``canWithdraw``),
    give the rest.  Failures are reported in the value, not raised.
    """
    from cryptoorchestrator.platform.exchange.errors_map import is_ccxt_error, map_ccxt_error

    try:
        balance = await exchange.fetch_balance()
    except Exception as exc:
        if not is_ccxt_error(exc):
            raise
        error = map_ccxt_error(exc, action="test connection")
        return ConnectionReport(
            ok=False,
            can_read=False,
            can_trade=None,
            error=str(error),
            error_code=error.code,
        )
    info = balance.get("info") if isinstance(balance, dict) else None
    can_trade = can_withdraw = None
    if isinstance(info, dict):
        if isinstance(info.get("canTrade"), bool):
            can_trade = info["canTrade"]
        if isinstance(info.get("canWithdraw"), bool):
            can_withdraw = info["canWithdraw"]
    return ConnectionReport(ok=True, can_read=True, can_trade=can_trade, can_withdraw=can_withdraw)


async def check_public_access(exchange: Any) -> ConnectionReport:
    """Load a ccxt async exchange's markets (public data, no key): what a paper account needs.

    A paper account trades through the platform's paper broker on the exchange's public prices,
    so reading them is the whole test; it may "trade" (paper orders) and never withdraw.
    """
    markets = await exchange.load_markets()
    if not markets:
        # Something answered, but not an exchange: as unreachable as nothing answering.
        raise LookupError("the exchange listed no market")
    return ConnectionReport(ok=True, can_read=True, can_trade=True, can_withdraw=False)


#: What a failed test says: fixed words per kind of failure, never the URL, the address or the
#: network error, so a test cannot tell whether something answered at a host.
UNREACHABLE = "exchange unreachable"
KEY_REFUSED = "the exchange refused the API key and secret"


async def test_connection(
    settings: Settings,
    account_id: int,
    *,
    exchange_factory: Callable[[Credentials], Any] | None = None,  # noqa: PT028 (not a test)
) -> ConnectionReport:
    """Check that an account's key works and record its permissions; place no order.

    The account's ``apiUrl`` is checked against the operator's rule first (see
    :mod:`cryptoorchestrator.platform.exchange.urls`), and the requests go through a
    :class:`~cryptoorchestrator.platform.exchange.urls.GuardedSession`: allowed hosts only, at
    public addresses unless the operator allows the host, redirects never followed.  A paper
    account without keys is tested on the exchange's public data.

    Parameters
    ----------
    settings
        Database, secret key and the allowed hosts.
    account_id
        The account to test.
    exchange_factory
        Builds the ccxt async exchange from the credentials (default: the account's exchange
        through :func:`build_client`).

    Returns
    -------
    ConnectionReport
        ``ok`` with the permissions, or ``ok=False`` with the reason (bad key, unreachable).
        The permissions and the time are stored on the account row either way.

    Raises
    ------
    InvalidInputError
        If the stored ``apiUrl`` is refused by the rule (field ``apiUrl``); nothing is sent.
    """
    with session_scope(settings) as session:
        credentials = load_credentials(session, settings, account_id)
    check_account_url(settings, credentials.exchange, credentials.api_url)
    has_keys = bool(credentials.api_key and credentials.api_secret)
    paper = credentials.mode == BotMode.PAPER.value
    if not has_keys and not paper:
        report = ConnectionReport(
            ok=False,
            can_read=False,
            can_trade=None,
            error="the account has no API key and secret",
            error_code=AuthenticationError.code,
        )
    else:
        if exchange_factory is not None:
            exchange = exchange_factory(credentials)
        else:
            exchange = build_client(credentials, enable_rate_limit=False).exchange
        guard = GuardedSession(UrlPolicy.from_settings(settings), credentials.exchange)
        guard.install(exchange)
        try:
            if has_keys:
                report = await check_permissions(exchange)
            else:
                report = await check_public_access(exchange)
        except Exception as exc:
            # Unreachable, refused by the guard, not an exchange at all: one answer for all.
            log.info(
                "exchange account test failed",
                extra={"account_id": account_id, "error_type": type(exc).__name__},
            )
            report = ConnectionReport(
                ok=False,
                can_read=False,
                can_trade=None,
                error=UNREACHABLE,
                error_code="exchange_unavailable",
            )
        finally:
            await exchange.close()
            await guard.close()
        if not report.ok and report.error_code != AuthenticationError.code:
            report = replace(report, error=UNREACHABLE, error_code="exchange_unavailable")
        elif not report.ok:
            report = replace(report, error=KEY_REFUSED)
    with session_scope(settings) as session:
        account = session.get(ExchangeAccount, account_id)
        if account is not None:
            account.permissions = {**report.permissions(), "ok": report.ok}
            account.last_tested_at = report.tested_at
    log.info(
        "tested exchange account",
        extra={"account_id": account_id, "ok": report.ok, "error_code": report.error_code},
    )
    return report


# pytest would collect a module-level function named test_*; keep it out of collection.
test_connection.__test__ = False  # type: ignore[attr-defined]

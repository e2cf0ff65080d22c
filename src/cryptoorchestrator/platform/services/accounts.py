"""Exchange accounts: credentials are write-only, encrypted with SecretBox, never returned.

Each secret is bound to its row and column (purpose ``exchange_account:<id>:<column>``), so a
ciphertext copied to another account does not decrypt.  Audit rows record that credentials
changed, never their values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import ConflictError, InvalidInputError, NotFoundError
from cryptoorchestrator.platform.exchange.accounts import credential_purpose as purpose
from cryptoorchestrator.platform.exchange.urls import UrlPolicy, check_api_url
from cryptoorchestrator.platform.model import BotMode
from cryptoorchestrator.platform.storage.models import AuditLog, ExchangeAccount

SECRET_FIELDS = ("api_key", "api_secret", "passphrase")
_EXCHANGE = re.compile(r"^[a-z0-9_]{1,40}$")


class AccountService:
    """One user's exchange accounts.

    Parameters
    ----------
    session
        The request's database session.
    user_id
        The owner; every read and write is scoped to this user.
    box
        Encrypts the credentials.
    url_policy
        The hosts the operator allows an ``apiUrl`` to point at (default: only the exchanges'
        own API hosts); see :mod:`cryptoorchestrator.platform.exchange.urls`.
    """

    def __init__(
        self,
        session: Session,
        user_id: int,
        box: SecretBox,
        url_policy: UrlPolicy | None = None,
    ) -> None:
        self.session = session
        self.user_id = user_id
        self.box = box
        self.url_policy = url_policy or UrlPolicy()

    def list_accounts(self) -> list[ExchangeAccount]:
        """Return the user's accounts by id."""
        return list(
            self.session.scalars(
                select(ExchangeAccount)
                .where(ExchangeAccount.user_id == self.user_id)
                .order_by(ExchangeAccount.id)
            )
        )

    def get(self, account_id: int) -> ExchangeAccount:
        """Return the user's account; NotFoundError if it is missing or someone else's."""
        row = self.session.scalar(
            select(ExchangeAccount).where(
                ExchangeAccount.id == account_id, ExchangeAccount.user_id == self.user_id
            )
        )
        if row is None:
            raise NotFoundError(f"exchange account {account_id} not found")
        return row

    def _validate(self, values: Mapping[str, Any], exchange: str | None = None) -> str | None:
        """Check ``values``; return the ``apiUrl`` to store (None when not given)."""
        if "exchange" in values and not _EXCHANGE.match(str(values["exchange"])):
            raise InvalidInputError("exchange", "lower-case ccxt exchange id, e.g. binance")
        if "mode" in values and values["mode"] not in {m.value for m in BotMode}:
            raise InvalidInputError("mode", "unknown mode", allowed=[m.value for m in BotMode])
        if "name" in values and not 1 <= len(str(values["name"]).strip()) <= 100:
            raise InvalidInputError("name", "must be 1 to 100 characters", allowed="1-100")
        url = values.get("api_url")
        if url is None:
            return None
        # Refused before anything is stored or connected to: where the server sends requests is
        # the operator's choice (the exchange's own hosts, or hosts allowed in the settings).
        return check_api_url(
            url, self.url_policy, exchange=exchange or str(values.get("exchange") or "")
        )

    def _set_secrets(self, row: ExchangeAccount, values: Mapping[str, Any]) -> list[str]:
        changed = []
        for field in SECRET_FIELDS:
            if field not in values:
                continue
            value = values[field]
            blob = self.box.encrypt(value, purpose(row.id, field)) if value else None
            setattr(row, f"{field}_enc", blob)
            changed.append(field)
        return changed

    def create(self, values: Mapping[str, Any]) -> ExchangeAccount:
        """Create an account; secrets in ``values`` are encrypted before they are stored."""
        api_url = self._validate(values)
        row = ExchangeAccount(
            user_id=self.user_id,
            name=str(values["name"]).strip(),
            exchange=values["exchange"],
            mode=values.get("mode") or BotMode.PAPER.value,
            api_url=api_url,
        )
        self.session.add(row)
        try:
            self.session.flush()  # the id is part of each secret's purpose
        except IntegrityError as exc:
            raise ConflictError(f"an exchange account named {row.name!r} already exists") from exc
        changed = self._set_secrets(row, values)
        self._audit("exchange_account.created", row.id, {"credentials": changed})
        self.session.flush()
        return row

    def update(self, account_id: int, values: Mapping[str, Any]) -> ExchangeAccount:
        """Change an account; a credential given as an empty string is removed."""
        row = self.get(account_id)
        api_url = self._validate(values, row.exchange)
        for field in ("name", "mode"):
            if field in values and values[field] is not None:
                setattr(row, field, values[field])
        if api_url is not None:
            row.api_url = api_url
        changed = self._set_secrets(row, values)
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise ConflictError("an exchange account with this name already exists") from exc
        action = "exchange_account.credentials_changed" if changed else "exchange_account.updated"
        self._audit(action, row.id, {"credentials": changed})
        return row

    def delete(self, account_id: int) -> None:
        """Delete an account (bots that used it keep running in no account: they stop trading)."""
        row = self.get(account_id)
        self.session.delete(row)
        self._audit("exchange_account.deleted", account_id, None)
        self.session.flush()

    def credentials(self, row: ExchangeAccount) -> dict[str, str | None]:
        """Return the decrypted credentials, for the execution client only (never a response)."""
        out: dict[str, str | None] = {}
        for field in SECRET_FIELDS:
            blob = getattr(row, f"{field}_enc")
            out[field] = self.box.decrypt(blob, purpose(row.id, field)) if blob else None
        return out

    def _audit(self, action: str, account_id: int, details: dict[str, Any] | None) -> None:
        self.session.add(
            AuditLog(
                user_id=self.user_id,
                action=action,
                target_type="exchange_account",
                target_id=str(account_id),
                details=details,
            )
        )

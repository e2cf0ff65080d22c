"""Rotating the platform secret key: re-encrypt every stored secret, revoke every session.

The secret key derives the AES-GCM key of :class:`SecretBox` (exchange credentials, TOTP
secrets), signs access tokens and keys the hashes of refresh tokens and MFA backup codes.  A
rotation therefore

* decrypts every sealed column with the old key and seals it again with the new one, each bound
  to the same purpose (row and column), in one transaction: a failure changes nothing;
* revokes every refresh token and bumps every user's ``auth_epoch`` (everyone logs in again:
  tokens signed or hashed with a leaked key must die with it);
* deletes the MFA backup codes, which are stored only as hashes under the old key and cannot be
  re-keyed; their users keep TOTP and are listed so the operator can ask them to make new codes.

The platform must be stopped while it runs: a bot or API process still holding the old key
would fail to decrypt (and say so) until restarted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import ConfigError
from cryptoorchestrator.platform.exchange.accounts import credential_purpose
from cryptoorchestrator.platform.storage.models import (
    AuditLog,
    BackupCode,
    ExchangeAccount,
    RefreshToken,
    User,
)
from cryptoorchestrator.platform.storage.types import utcnow

#: Every sealed column: (model, column attribute, purpose of a row's value).
SEALED: list[tuple[type[Any], str, Callable[[Any], str]]] = [
    (ExchangeAccount, "api_key_enc", lambda r: credential_purpose(r.id, "api_key")),
    (ExchangeAccount, "api_secret_enc", lambda r: credential_purpose(r.id, "api_secret")),
    (ExchangeAccount, "passphrase_enc", lambda r: credential_purpose(r.id, "passphrase")),
    (User, "mfa_secret_enc", lambda r: f"user:{r.id}:totp"),
]


@dataclass
class RotationReport:
    """What a rotation changed."""

    secrets_resealed: dict[str, int] = field(default_factory=dict)
    refresh_tokens_revoked: int = 0
    users_logged_out: int = 0
    users_without_backup_codes: list[str] = field(default_factory=list)


def _sealed_rows(session: Session) -> Iterator[tuple[Any, str, str]]:
    for model, column, purpose in SEALED:
        rows = session.scalars(select(model).where(getattr(model, column).is_not(None)))
        for row in rows:
            yield row, column, purpose(row)


def rotate_secret_key(session: Session, old_key: str, new_key: str) -> RotationReport:
    """Re-seal every secret under ``new_key`` and revoke every session; the caller commits.

    Raises
    ------
    ConfigError
        If the keys are equal, the new key is too short, or a stored secret does not decrypt
        with ``old_key`` (nothing is changed then: the caller rolls back).
    """
    if old_key == new_key:
        raise ConfigError("the new secret key equals the current one")
    if len(new_key) < 32:
        raise ConfigError("the new secret key must be at least 32 characters long")
    old, new = SecretBox(old_key), SecretBox(new_key)
    report = RotationReport()
    for row, column, purpose in _sealed_rows(session):
        plain = old.decrypt(getattr(row, column), purpose)
        setattr(row, column, new.encrypt(plain, purpose))
        key = f"{type(row).__tablename__}.{column}"
        report.secrets_resealed[key] = report.secrets_resealed.get(key, 0) + 1
    now = utcnow()
    revoked = session.execute(
        update(RefreshToken).where(RefreshToken.revoked_at.is_(None)).values(revoked_at=now)
    )
    report.refresh_tokens_revoked = int(getattr(revoked, "rowcount", 0) or 0)
    bumped = session.execute(update(User).values(auth_epoch=User.auth_epoch + 1))
    report.users_logged_out = int(getattr(bumped, "rowcount", 0) or 0)
    report.users_without_backup_codes = sorted(
        session.scalars(
            select(User.email).where(User.id.in_(select(BackupCode.user_id).distinct()))
        ).all()
    )
    session.execute(delete(BackupCode))
    session.add(
        AuditLog(
            user_id=None,
            action="secret_key.rotated",
            target_type="platform",
            target_id=None,
            details={
                "resealed": report.secrets_resealed,
                "refresh_tokens_revoked": report.refresh_tokens_revoked,
            },
            ip=None,
        )
    )
    session.flush()
    return report

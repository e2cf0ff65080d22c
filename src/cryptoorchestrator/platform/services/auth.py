"""Users and authentication: argon2 passwords, JWT access tokens, rotating refresh tokens, TOTP MFA.

* Access tokens are short-lived HS256 JWTs signed with the platform secret key; their failures
  say exactly ``"Token expired"`` or ``"Invalid token"``.
* Refresh tokens are opaque random strings stored as keyed hashes.  Each use rotates the token;
  presenting a token that was already rotated means it leaked, so the whole family (every token
  descended from the same login) is revoked.
* Repeated failed logins (bad password or bad MFA code) lock the account for a while.
* MFA is TOTP (RFC 6238) with the secret encrypted by :class:`SecretBox`, plus ten single-use
  backup codes stored as keyed hashes (they are random, so a slow hash adds nothing).
* Logins, refresh-token reuse and MFA changes are written to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import (
    AccountLockedError,
    ConflictError,
    InvalidInputError,
    MfaRequiredError,
    UnauthorizedError,
)
from cryptoorchestrator.platform.storage.models import AuditLog, BackupCode, RefreshToken, User
from cryptoorchestrator.platform.storage.types import utcnow

TOKEN_EXPIRED = "Token expired"  # noqa: S105 (a message, not a secret)
INVALID_TOKEN = "Invalid token"  # noqa: S105
BACKUP_CODES = 10
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
_hasher = PasswordHasher()
# Verifying against this hash when the email is unknown keeps the response time of a login the
# same whether or not the account exists.
_DUMMY_HASH = _hasher.hash("not a real password")


@dataclass(frozen=True)
class AuthConfig:
    """Token lifetimes and lockout policy."""

    secret_key: str
    access_ttl: timedelta = timedelta(minutes=15)
    refresh_ttl: timedelta = timedelta(days=30)
    max_failed_logins: int = 5
    lockout: timedelta = timedelta(minutes=15)
    issuer: str = "cryptoorchestrator"


@dataclass(frozen=True)
class TokenPair:
    """What a login or a refresh returns."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105


@dataclass(frozen=True)
class MfaEnrolment:
    """A pending TOTP secret and its otpauth URI (shown once, for the authenticator app)."""

    secret: str
    otpauth_uri: str


def hash_password(password: str) -> str:
    """Return the argon2 hash of ``password`` (for accounts created outside the API)."""
    return _hasher.hash(password)


def _keyed_hash(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def create_access_token(config: AuthConfig, user_id: int, now: datetime | None = None) -> str:
    """Return a signed access token for ``user_id``."""
    now = now or utcnow()
    claims = {
        "sub": str(user_id),
        "iat": int(now.timestamp()),
        "exp": int((now + config.access_ttl).timestamp()),
        "iss": config.issuer,
        "type": "access",
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, config.secret_key, algorithm="HS256")


def verify_access_token(config: AuthConfig, token: str) -> tuple[int, int]:
    """Return ``(user_id, exp)`` of a valid access token (``exp`` in Unix seconds).

    Raises
    ------
    UnauthorizedError
        ``"Token expired"`` when it has expired, ``"Invalid token"`` for anything else.
    """
    try:
        claims = jwt.decode(
            token,
            config.secret_key,
            algorithms=["HS256"],
            issuer=config.issuer,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError(TOKEN_EXPIRED) from exc
    except jwt.PyJWTError as exc:
        raise UnauthorizedError(INVALID_TOKEN) from exc
    if claims.get("type") != "access":
        raise UnauthorizedError(INVALID_TOKEN)
    try:
        return int(claims["sub"]), int(claims["exp"])
    except (TypeError, ValueError) as exc:
        raise UnauthorizedError(INVALID_TOKEN) from exc


def decode_access_token(config: AuthConfig, token: str) -> int:
    """Return the user id of a valid access token (see :func:`verify_access_token`)."""
    return verify_access_token(config, token)[0]


def check_password_rules(password: str, *, field: str = "password") -> None:
    """Refuse passwords that are too short or too long."""
    if not 8 <= len(password) <= 128:
        raise InvalidInputError(field, "must be 8 to 128 characters long", allowed="8-128")


def normalize_email(email: str, *, field: str = "email") -> str:
    """Return ``email`` trimmed and lower-cased, or raise if it does not look like one."""
    text = email.strip().lower()
    if not _EMAIL.match(text):
        raise InvalidInputError(field, "not a valid email address")
    return text


class AuthService:
    """Registration, login, token refresh and MFA for one database session.

    Failures that must be remembered (a failed login, a detected token reuse) are committed by
    the service itself before it raises, because the caller rolls back on errors.
    """

    def __init__(self, session: Session, config: AuthConfig, box: SecretBox) -> None:
        self.session = session
        self.config = config
        self.box = box

    # ------------------------------------------------------------------------------- helpers
    def audit(
        self,
        action: str,
        user_id: int | None,
        ip: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add an audit-log row (committed with the session)."""
        self.session.add(
            AuditLog(
                user_id=user_id,
                action=action,
                target_type="user",
                target_id=None if user_id is None else str(user_id),
                details=details,
                ip=ip,
            )
        )

    def get_user(self, user_id: int) -> User:
        """Return the active user ``user_id``; raise ``Invalid token`` when there is none."""
        user = self.session.get(User, user_id)
        if user is None or not user.is_active:
            raise UnauthorizedError(INVALID_TOKEN)
        return user

    def _totp(self, user: User) -> pyotp.TOTP | None:
        if user.mfa_secret_enc is None:
            return None
        return pyotp.TOTP(self.box.decrypt(user.mfa_secret_enc, f"user:{user.id}:totp"))

    def _check_totp(self, user: User, code: str) -> bool:
        totp = self._totp(user)
        # One step of tolerance either side absorbs small clock drift on the user's device.
        return totp is not None and totp.verify(code.strip().replace(" ", ""), valid_window=1)

    def _use_backup_code(self, user: User, code: str) -> bool:
        digest = _keyed_hash(self.config.secret_key, code.strip().replace("-", "").lower())
        row = self.session.scalar(
            select(BackupCode).where(
                BackupCode.user_id == user.id,
                BackupCode.code_hash == digest,
                BackupCode.used_at.is_(None),
            )
        )
        if row is None:
            return False
        row.used_at = utcnow()
        return True

    def _new_backup_codes(self, user: User) -> list[str]:
        self.session.execute(delete(BackupCode).where(BackupCode.user_id == user.id))
        codes = []
        for _ in range(BACKUP_CODES):
            raw = secrets.token_hex(5)  # 40 bits each, single use, behind the lockout
            codes.append(f"{raw[:5]}-{raw[5:]}")
            self.session.add(
                BackupCode(user_id=user.id, code_hash=_keyed_hash(self.config.secret_key, raw))
            )
        return codes

    def _issue(self, user: User, family_id: str | None = None) -> tuple[TokenPair, RefreshToken]:
        now = utcnow()
        token_id = str(uuid.uuid4())
        raw = f"{token_id}.{secrets.token_urlsafe(32)}"
        row = RefreshToken(
            id=token_id,
            user_id=user.id,
            family_id=family_id or str(uuid.uuid4()),
            token_hash=_keyed_hash(self.config.secret_key, raw),
            issued_at=now,
            expires_at=now + self.config.refresh_ttl,
        )
        self.session.add(row)
        pair = TokenPair(
            access_token=create_access_token(self.config, user.id, now),
            refresh_token=raw,
            expires_in=int(self.config.access_ttl.total_seconds()),
        )
        return pair, row

    # ------------------------------------------------------------------------------- flows
    def register(self, email: str, password: str, ip: str | None = None) -> User:
        """Create a user; raise ConflictError if the email is taken."""
        email = normalize_email(email)
        check_password_rules(password)
        if self.session.scalar(select(User.id).where(User.email == email)) is not None:
            raise ConflictError("an account with this email already exists")
        user = User(email=email, password_hash=_hasher.hash(password))
        self.session.add(user)
        try:
            self.session.flush()
        except IntegrityError as exc:  # a concurrent registration won the race
            raise ConflictError("an account with this email already exists") from exc
        self.audit("user.registered", user.id, ip)
        return user

    def _fail_login(self, user: User, ip: str | None, reason: str) -> None:
        user.failed_logins += 1
        details: dict[str, Any] = {"reason": reason, "failures": user.failed_logins}
        if user.failed_logins >= self.config.max_failed_logins:
            user.locked_until = utcnow() + self.config.lockout
            user.failed_logins = 0
            details["locked_until"] = user.locked_until.isoformat()
        self.audit("login.failed", user.id, ip, details)
        self.session.commit()

    def login(
        self,
        email: str,
        password: str,
        *,
        totp: str | None = None,
        backup_code: str | None = None,
        ip: str | None = None,
    ) -> TokenPair:
        """Check the password (and the MFA code when MFA is on) and issue a token pair.

        Raises
        ------
        UnauthorizedError
            Wrong email or password, or a wrong MFA code.
        MfaRequiredError
            The password was right, MFA is on and no code was given (not counted as a failure).
        AccountLockedError
            Too many failures; try again after ``retry_after`` seconds.
        """
        try:
            email = normalize_email(email)
        except InvalidInputError:
            email = ""
        user = self.session.scalar(select(User).where(User.email == email)) if email else None
        if user is None or not user.is_active:
            try:
                _hasher.verify(_DUMMY_HASH, password)
            except VerificationError:
                pass
            raise UnauthorizedError("Invalid email or password")
        now = utcnow()
        if user.locked_until is not None and user.locked_until > now:
            retry = int((user.locked_until - now).total_seconds()) + 1
            self.audit("login.locked", user.id, ip)
            self.session.commit()
            raise AccountLockedError(
                f"account locked after repeated failed logins; try again in {retry} s",
                retry_after=retry,
            )
        try:
            _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError) as exc:
            self._fail_login(user, ip, "password")
            raise UnauthorizedError("Invalid email or password") from exc
        if user.mfa_enabled:
            if not totp and not backup_code:
                raise MfaRequiredError("MFA code required: send totpCode or backupCode")
            ok = self._check_totp(user, totp) if totp else False
            used_backup = False
            if not ok and backup_code:
                ok = used_backup = self._use_backup_code(user, backup_code)
            if not ok:
                self._fail_login(user, ip, "mfa")
                raise UnauthorizedError("Invalid MFA code")
            if used_backup:
                self.audit("mfa.backup_code_used", user.id, ip)
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        user.failed_logins = 0
        user.locked_until = None
        user.last_login_at = now
        pair, _ = self._issue(user)
        self.audit("login.succeeded", user.id, ip, {"mfa": user.mfa_enabled})
        return pair

    def refresh(self, token: str, ip: str | None = None) -> TokenPair:
        """Rotate a refresh token: revoke it and issue a new pair in the same family.

        Raises
        ------
        UnauthorizedError
            Unknown, expired or revoked token; reuse of a rotated token also revokes its family.
        """
        digest = _keyed_hash(self.config.secret_key, token)
        row = self.session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
        if row is None:
            raise UnauthorizedError(INVALID_TOKEN)
        now = utcnow()
        if row.revoked_at is not None:
            if row.replaced_by is not None:
                self._revoke_family(row.family_id, now)
                self.audit("auth.refresh_reuse", row.user_id, ip, {"family": row.family_id})
                self.session.commit()
                raise UnauthorizedError(
                    "Invalid token: refresh token reuse detected; this session was revoked"
                )
            raise UnauthorizedError(INVALID_TOKEN)
        if row.expires_at <= now:
            raise UnauthorizedError(TOKEN_EXPIRED)
        user = self.session.get(User, row.user_id)
        if user is None or not user.is_active:
            raise UnauthorizedError(INVALID_TOKEN)
        pair, new_row = self._issue(user, row.family_id)
        # Conditional update: of two concurrent refreshes with the same token only one wins.
        won = self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == row.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now, replaced_by=new_row.id)
        )
        if getattr(won, "rowcount", 1) != 1:
            self.session.rollback()
            raise UnauthorizedError(INVALID_TOKEN)
        return pair

    def _revoke_family(self, family_id: str, now: datetime) -> None:
        self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    def logout(self, user: User, refresh_token: str | None, ip: str | None = None) -> None:
        """Revoke the refresh-token family of ``refresh_token``, or every family of the user."""
        now = utcnow()
        if refresh_token:
            digest = _keyed_hash(self.config.secret_key, refresh_token)
            row = self.session.scalar(
                select(RefreshToken).where(
                    RefreshToken.token_hash == digest, RefreshToken.user_id == user.id
                )
            )
            if row is not None:
                self._revoke_family(row.family_id, now)
        else:
            self.session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        self.audit("logout", user.id, ip)

    # ----------------------------------------------------------------------------------- MFA
    def mfa_enrol(self, user: User, ip: str | None = None) -> MfaEnrolment:
        """Create a pending TOTP secret; MFA is on only after :meth:`mfa_confirm`."""
        if user.mfa_enabled:
            raise ConflictError("MFA is already enabled; disable it first to enrol a new device")
        secret = pyotp.random_base32()
        user.mfa_secret_enc = self.box.encrypt(secret, f"user:{user.id}:totp")
        self.audit("mfa.enrol_started", user.id, ip)
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="CryptoOrchestrator")
        return MfaEnrolment(secret=secret, otpauth_uri=uri)

    def mfa_confirm(self, user: User, code: str, ip: str | None = None) -> list[str]:
        """Turn MFA on after checking a TOTP code; return ten new backup codes (shown once)."""
        if user.mfa_enabled:
            raise ConflictError("MFA is already enabled")
        if user.mfa_secret_enc is None:
            raise ConflictError("no pending MFA enrolment; call /api/auth/mfa/enroll first")
        if not self._check_totp(user, code):
            raise InvalidInputError("code", "wrong or expired TOTP code")
        user.mfa_enabled = True
        codes = self._new_backup_codes(user)
        self.audit("mfa.enabled", user.id, ip)
        return codes

    def _require_second_factor(self, user: User, code: str) -> None:
        if not user.mfa_enabled:
            raise ConflictError("MFA is not enabled")
        if not (self._check_totp(user, code) or self._use_backup_code(user, code)):
            raise InvalidInputError("code", "wrong or expired TOTP or backup code")

    def mfa_disable(self, user: User, code: str, ip: str | None = None) -> None:
        """Turn MFA off after checking a TOTP or backup code; forget the secret and codes."""
        self._require_second_factor(user, code)
        user.mfa_enabled = False
        user.mfa_secret_enc = None
        self.session.execute(delete(BackupCode).where(BackupCode.user_id == user.id))
        self.audit("mfa.disabled", user.id, ip)

    def regenerate_backup_codes(self, user: User, code: str, ip: str | None = None) -> list[str]:
        """Replace the backup codes after checking a TOTP or backup code; return the new ones."""
        self._require_second_factor(user, code)
        codes = self._new_backup_codes(user)
        self.audit("mfa.backup_codes_regenerated", user.id, ip)
        return codes

    def backup_codes_left(self, user: User) -> int:
        """Return how many unused backup codes the user has."""
        rows = self.session.scalars(
            select(BackupCode.id).where(BackupCode.user_id == user.id, BackupCode.used_at.is_(None))
        )
        return len(list(rows))

"""Users and authentication: argon2 passwords, JWT access tokens, rotating refresh tokens, TOTP MFA.

* Access tokens are short-lived HS256 JWTs signed with the platform secret key; their failures
  say exactly ``"Token expired"`` or ``"Invalid token"``.  Each carries its session (``sid``, the
  refresh-token family of its login) and the user's ``auth_epoch`` (``ep``): the API refuses it
  once that session is revoked (logout, refresh-token reuse) or the epoch moved on (logout
  everywhere, MFA switched on or off), see :class:`~cryptoorchestrator.api.identity.Identity`.
* Refresh tokens are opaque random strings stored as keyed hashes.  Each use rotates the token;
  presenting a token that was already rotated means it leaked, so the whole family (every token
  descended from the same login) is revoked.
* Every credential check (password, TOTP, backup code; at login and on the MFA routes) first
  reserves an attempt on atomic failure counters per account, per client IP and per pair, and
  only then computes a hash: parallel guesses cannot exceed the budget, and a locked key answers
  423.  The policy (escalating locks per pair and IP, a fixed-length global ceiling per account)
  is in :mod:`~cryptoorchestrator.platform.services.login_throttle`.
* No enumeration: unknown, inactive, locked and wrong-password logins each cost exactly one
  argon2 verification (a dummy hash where there is nothing real to check); unknown and wrong
  passwords answer the same 401, and unknown emails lock exactly like real accounts, so the 423
  of a lock tells a guesser only that they guessed too often.  The 423 is kept (rather than a
  401 "unless the password was right") because answering differently for a right password
  during a lock would make the lock an oracle, and checking it would spend the hash budget.
* MFA is TOTP (RFC 6238) with the secret encrypted by :class:`SecretBox`, plus ten single-use
  backup codes stored as keyed hashes (they are random, so a slow hash adds nothing).  A TOTP
  code is good once: its time step must be newer than ``users.totp_last_step``, advanced by a
  conditional ``UPDATE`` (two requests with one code: one wins).  Backup codes are spent the
  same way.
* Passwords must score at least 3 of 4 with zxcvbn (the email counts as a known input).
* Logins, refresh-token reuse and MFA changes are written to the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, event, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from zxcvbn import zxcvbn

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import (
    AccountLockedError,
    ConflictError,
    InvalidInputError,
    MfaRequiredError,
    UnauthorizedError,
)
from cryptoorchestrator.platform.services.login_throttle import (
    Refusal,
    Reservation,
    Throttle,
    ThrottleKey,
)
from cryptoorchestrator.platform.services.roles import role_for_new_user
from cryptoorchestrator.platform.storage.models import AuditLog, BackupCode, RefreshToken, User
from cryptoorchestrator.platform.storage.types import utcnow
from cryptoorchestrator.platform.validation import check_text

TOKEN_EXPIRED = "Token expired"  # noqa: S105 (a message, not a secret)
INVALID_TOKEN = "Invalid token"  # noqa: S105
BAD_CREDENTIALS = "Invalid email or password"
LOCKED = "too many failed attempts; try again in {retry} s"
BACKUP_CODES = 10
#: The zxcvbn score (0-4) a password needs: 3 is "safely unguessable" to an offline attack.
MIN_PASSWORD_SCORE = 3
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
_TOTP_CODE = re.compile(r"[0-9]{6}")
_hasher = PasswordHasher()
# Verifying against this hash when there is no real one to check (unknown, inactive or locked
# account) keeps every login at exactly one argon2 verification.
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
    #: Global ceiling of failures per account over all addresses (default 4x the pair budget).
    account_max_failures: int | None = None
    #: Failures per client address over all accounts (default 20x the pair budget).
    ip_max_failures: int | None = None
    #: Cap of escalating locks (pair and address); the account lock is always ``lockout``.
    max_lockout: timedelta = timedelta(hours=12)
    #: Counters idle this long start over.
    failure_window: timedelta = timedelta(hours=24)
    #: Time source of lockouts and TOTP steps (tests inject one; tokens use the real clock).
    clock: Callable[[], datetime] = utcnow

    @property
    def account_limit(self) -> int:
        """Failures per account, over all addresses, before the account locks."""
        return self.account_max_failures or 4 * self.max_failed_logins

    @property
    def ip_limit(self) -> int:
        """Failures per client address, over all accounts, before the address locks."""
        return self.ip_max_failures or 20 * self.max_failed_logins


class AccessClaims(NamedTuple):
    """What a verified access token says: user, expiry (Unix s), session and auth epoch."""

    user_id: int
    exp: int
    session_id: str
    epoch: int


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


def _verify_password(password_hash: str, password: str) -> bool:
    """One argon2 verification; False for a wrong password or an unreadable hash."""
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def create_access_token(
    config: AuthConfig,
    user_id: int,
    now: datetime | None = None,
    *,
    session_id: str,
    epoch: int,
) -> str:
    """Return a signed access token for ``user_id`` in session ``session_id`` and ``epoch``.

    Parameters
    ----------
    config
        Signing key, issuer and lifetime.
    user_id
        The subject.
    now
        Issue time (default: now).
    session_id
        The refresh-token family of the login: revoking it revokes this token.
    epoch
        The user's ``auth_epoch``: bumping it revokes this token.
    """
    now = now or utcnow()
    claims = {
        "sub": str(user_id),
        "sid": session_id,
        "ep": epoch,
        "iat": int(now.timestamp()),
        "exp": int((now + config.access_ttl).timestamp()),
        "iss": config.issuer,
        "type": "access",
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, config.secret_key, algorithm="HS256")


def verify_access_token(config: AuthConfig, token: str) -> AccessClaims:
    """Return the claims of a validly signed, unexpired access token (``exp`` in Unix s).

    Whether its session and epoch are still current is the caller's check (it needs the
    database).

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
            options={"require": ["exp", "sub", "iss", "sid", "ep"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError(TOKEN_EXPIRED) from exc
    except jwt.PyJWTError as exc:
        raise UnauthorizedError(INVALID_TOKEN) from exc
    if claims.get("type") != "access":
        raise UnauthorizedError(INVALID_TOKEN)
    sid, epoch = claims["sid"], claims["ep"]
    if not isinstance(sid, str) or not sid or type(epoch) is not int:
        raise UnauthorizedError(INVALID_TOKEN)
    try:
        return AccessClaims(int(claims["sub"]), int(claims["exp"]), sid, epoch)
    except (TypeError, ValueError) as exc:
        raise UnauthorizedError(INVALID_TOKEN) from exc


def decode_access_token(config: AuthConfig, token: str) -> int:
    """Return the user id of a valid access token (see :func:`verify_access_token`)."""
    return verify_access_token(config, token).user_id


def check_password_rules(
    password: str, *, field: str = "password", user_inputs: Sequence[str] = ()
) -> None:
    """Refuse passwords that are too short, too long or guessable.

    Guessability is zxcvbn's score (dictionaries, keyboard patterns, dates, repeats, l33t, and
    ``user_inputs`` such as the email); below :data:`MIN_PASSWORD_SCORE` the 422 carries its
    feedback.
    """
    check_text(field, password)
    if not 8 <= len(password) <= 128:
        raise InvalidInputError(field, "must be 8 to 128 characters long", allowed="8-128")
    inputs = [part for text in user_inputs for part in re.split(r"[@.+_-]", text) if part]
    result = zxcvbn(password, user_inputs=[*user_inputs, *inputs])
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result.get("feedback") or {}
        hints = [feedback.get("warning") or "", *(feedback.get("suggestions") or [])]
        advice = " ".join(h for h in hints if h) or "Add more words or characters."
        raise InvalidInputError(
            field,
            f"too easy to guess (strength {result['score']} of 4, needs {MIN_PASSWORD_SCORE}): "
            f"{advice}",
            allowed=f"zxcvbn score >= {MIN_PASSWORD_SCORE}",
        )


def normalize_email(email: str, *, field: str = "email") -> str:
    """Return ``email`` trimmed and lower-cased, or raise if it does not look like one."""
    text = email.strip().lower()
    if not _EMAIL.match(text):
        raise InvalidInputError(field, "not a valid email address")
    return text


class AuthService:
    """Registration, login, token refresh and MFA for one database session.

    Failures that must be remembered (a failed login, a detected token reuse) are committed by
    the service itself before it raises, because the caller rolls back on errors.  Every
    credential check reserves an attempt first (:meth:`_reserve`, committed before any hash or
    code is checked): see :mod:`~cryptoorchestrator.platform.services.login_throttle`.
    """

    def __init__(
        self,
        session: Session,
        config: AuthConfig,
        box: SecretBox,
        *,
        on_revoke: Callable[[int, str | None], None] | None = None,
    ) -> None:
        self.session = session
        self.config = config
        self.box = box
        self.on_revoke = on_revoke

    def _revoked(self, user_id: int, session_id: str | None) -> None:
        """Tell ``on_revoke`` once the revocation is committed (a cache must not outlive it).

        ``session_id`` None: every session and access token of the user.
        """
        hook = self.on_revoke
        if hook is None:
            return

        def fire(_session: Session) -> None:
            hook(user_id, session_id)

        event.listen(self.session, "after_commit", fire, once=True)

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

    def _now(self) -> datetime:
        return self.config.clock()

    def _throttle(self) -> Throttle:
        c = self.config
        return Throttle(
            self.session,
            c.secret_key,
            lockout=c.lockout,
            max_lockout=c.max_lockout,
            window=c.failure_window,
        )

    def _keys(self, email: str, ip: str | None) -> list[ThrottleKey]:
        """The counters of a credential check: pair, address (when known), account; in order."""
        c = self.config
        keys = [ThrottleKey("pair", f"{email}|{ip or '-'}", c.max_failed_logins, escalate=True)]
        if ip:
            keys.append(ThrottleKey("ip", ip, c.ip_limit, escalate=True))
        keys.append(ThrottleKey("account", email, c.account_limit, escalate=False))
        return keys

    def _reserve(self, email: str, ip: str | None) -> Reservation | Refusal:
        """Reserve one credential check for ``email`` from ``ip`` (committed at once)."""
        return self._throttle().reserve(self._keys(email, ip), self._now())

    def _locked(self, refusal: Refusal, user_id: int | None, ip: str | None) -> AccountLockedError:
        """Audit a refused check and return the 423 to raise (the same for every account)."""
        self.audit("login.locked", user_id, ip)
        self.session.commit()
        return AccountLockedError(
            LOCKED.format(retry=refusal.retry_after), retry_after=refusal.retry_after
        )

    def _guard(self, user: User, ip: str | None) -> Reservation:
        """Reserve a second-factor check by the signed-in ``user`` (MFA routes); 423 if locked."""
        grant = self._reserve(user.email, ip)
        if isinstance(grant, Refusal):
            raise self._locked(grant, user.id, ip)
        return grant

    def _end_all_sessions(self, user: User, now: datetime) -> None:
        """Revoke every refresh token of ``user`` and bump its epoch (every access token dies).

        Both are needed: a surviving refresh token would mint access tokens of the new epoch.
        """
        self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        epoch = self.session.scalar(
            update(User)
            .where(User.id == user.id)
            .values(auth_epoch=User.auth_epoch + 1)
            .returning(User.auth_epoch)
            .execution_options(synchronize_session=False)
        )
        set_committed_value(user, "auth_epoch", epoch)
        self._revoked(user.id, None)

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

    def _totp_step(self, user: User, code: str) -> int | None:
        """Return the time step ``code`` belongs to (now, or one step either side), or None."""
        totp = self._totp(user)
        code = code.strip().replace(" ", "")
        if totp is None or not _TOTP_CODE.fullmatch(code):
            return None
        current = totp.timecode(self._now())
        # One step of tolerance either side absorbs small clock drift on the user's device.
        match = None
        for step in (current - 1, current, current + 1):
            if hmac.compare_digest(totp.generate_otp(step), code):
                match = step
        return match

    def _use_totp(self, user: User, code: str) -> bool:
        """Accept ``code`` once: its step must be newer than the last one used (atomic)."""
        step = self._totp_step(user, code)
        if step is None:
            return False
        # Conditional UPDATE: of two requests with the same code (or an older one) only the
        # first advances the step; the row stays locked until the request commits.
        won = self.session.execute(
            update(User)
            .where(
                User.id == user.id,
                or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            )
            .values(totp_last_step=step)
            .execution_options(synchronize_session=False)
        )
        if getattr(won, "rowcount", 0) != 1:
            return False
        set_committed_value(user, "totp_last_step", step)
        return True

    def _use_backup_code(self, user: User, code: str) -> bool:
        """Spend an unused backup code (one conditional UPDATE: a code is good once)."""
        digest = _keyed_hash(self.config.secret_key, code.strip().replace("-", "").lower())
        won = self.session.execute(
            update(BackupCode)
            .where(
                BackupCode.user_id == user.id,
                BackupCode.code_hash == digest,
                BackupCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return getattr(won, "rowcount", 0) == 1

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
            access_token=create_access_token(
                self.config, user.id, now, session_id=row.family_id, epoch=user.auth_epoch
            ),
            refresh_token=raw,
            expires_in=int(self.config.access_ttl.total_seconds()),
        )
        return pair, row

    # ------------------------------------------------------------------------------- flows
    def register(self, email: str, password: str, ip: str | None = None) -> User:
        """Create a user; raise ConflictError if the email is taken."""
        email = normalize_email(check_text("email", email))
        check_password_rules(password, user_inputs=[email])
        password_hash = _hasher.hash(password)  # slow: before the first registration's lock
        # The first account becomes admin, later ones trader (decided under a lock, see roles).
        role = role_for_new_user(self.session)
        if self.session.scalar(select(User.id).where(User.email == email)) is not None:
            raise ConflictError("an account with this email already exists")
        user = User(email=email, password_hash=password_hash, role=role)
        self.session.add(user)
        try:
            self.session.flush()
        except IntegrityError as exc:  # a concurrent registration won the race
            raise ConflictError("an account with this email already exists") from exc
        self.audit("user.registered", user.id, ip)
        return user

    def _fail(
        self, user: User | None, ip: str | None, reason: str, action: str = "login.failed"
    ) -> None:
        """Audit a failed check and commit (the attempt was already counted by its reservation)."""
        self.audit(action, None if user is None else user.id, ip, {"reason": reason})
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

        The attempt is reserved on the failure counters before anything is hashed; every
        outcome costs exactly one argon2 verification.

        Raises
        ------
        UnauthorizedError
            Wrong email or password (one message for both), or a wrong or replayed MFA code.
        MfaRequiredError
            The password was right, MFA is on and no code was given (the attempt is given back).
        AccountLockedError
            Too many failures for this account, address or pair; retry after ``retry_after`` s.
            Unknown emails lock alike, so this says nothing about the account.
        InvalidInputError
            A credential that is not valid text (a lone surrogate).
        """
        check_text("email", email)
        check_text("password", password)
        if totp is not None:
            check_text("totpCode", totp)
        if backup_code is not None:
            check_text("backupCode", backup_code)
        try:
            email = normalize_email(email)
        except InvalidInputError:
            email = email.strip().lower()  # still counted, like any unknown account
        grant = self._reserve(email, ip)
        user = self.session.scalar(select(User).where(User.email == email)) if email else None
        if isinstance(grant, Refusal):
            _verify_password(_DUMMY_HASH, password)
            raise self._locked(grant, None if user is None else user.id, ip)
        known = user is not None and user.is_active
        # Exactly one argon2 verification whatever the outcome: the dummy hash stands in for
        # an unknown or inactive account, so the answer time tells nothing.
        ok = _verify_password(
            user.password_hash if user is not None and known else _DUMMY_HASH, password
        )
        if user is None or not known or not ok:
            self._fail(user, ip, "password" if known else "unknown_or_inactive_account")
            raise UnauthorizedError(BAD_CREDENTIALS)
        if user.mfa_enabled:
            if not totp and not backup_code:
                # Not a failure: the client learns it must send a code.  The attempt is given
                # back (never reset: that would let a password holder guess codes forever).
                self._throttle().release(grant)
                self.session.commit()
                raise MfaRequiredError("MFA code required: send totpCode or backupCode")
            ok = bool(totp) and self._use_totp(user, totp or "")
            used_backup = False
            if not ok and backup_code:
                ok = used_backup = self._use_backup_code(user, backup_code)
            if not ok:
                self._fail(user, ip, "mfa")
                raise UnauthorizedError("Invalid MFA code")
            if used_backup:
                self.audit("mfa.backup_code_used", user.id, ip)
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        self._throttle().reset(grant)
        user.last_login_at = utcnow()
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
        digest = _keyed_hash(self.config.secret_key, check_text("refreshToken", token))
        row = self.session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
        if row is None:
            raise UnauthorizedError(INVALID_TOKEN)
        now = utcnow()
        if row.revoked_at is not None:
            if row.replaced_by is not None:
                self._revoke_family(row.family_id, now)
                self._revoked(row.user_id, row.family_id)
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

    def logout(
        self,
        user: User,
        refresh_token: str | None,
        ip: str | None = None,
        *,
        session_id: str | None = None,
    ) -> list[str]:
        """End sessions; return the session ids revoked (empty: every session ended).

        With ``refresh_token``, the session (refresh-token family) it belongs to ends, and so
        does ``session_id``, the caller's own (of its access token).  Without it, every session
        of the user ends and the auth epoch moves on, so every access token dies too.
        """
        now = utcnow()
        if not refresh_token:
            self._end_all_sessions(user, now)
            self.audit("logout", user.id, ip, {"all": True})
            return []
        check_text("refreshToken", refresh_token)
        families = {session_id} if session_id else set()
        digest = _keyed_hash(self.config.secret_key, refresh_token)
        family = self.session.scalar(
            select(RefreshToken.family_id).where(
                RefreshToken.token_hash == digest, RefreshToken.user_id == user.id
            )
        )
        if family is not None:
            families.add(family)
        for sid in sorted(families):
            self._revoked(user.id, sid)
            self.session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.family_id == sid,
                    RefreshToken.user_id == user.id,
                    RefreshToken.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        self.audit("logout", user.id, ip)
        return sorted(families)

    # ----------------------------------------------------------------------------------- MFA
    def mfa_enrol(self, user: User, ip: str | None = None) -> MfaEnrolment:
        """Create a pending TOTP secret; MFA is on only after :meth:`mfa_confirm`."""
        if user.mfa_enabled:
            raise ConflictError("MFA is already enabled; disable it first to enrol a new device")
        secret = pyotp.random_base32()
        user.mfa_secret_enc = self.box.encrypt(secret, f"user:{user.id}:totp")
        user.totp_last_step = None  # a new secret: its steps were never used
        self.audit("mfa.enrol_started", user.id, ip)
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="CryptoOrchestrator")
        return MfaEnrolment(secret=secret, otpauth_uri=uri)

    def mfa_confirm(self, user: User, code: str, ip: str | None = None) -> list[str]:
        """Turn MFA on after checking a TOTP code; return ten new backup codes (shown once).

        The check is counted like a login (423 when locked).  Every session ends: tokens
        issued before MFA protected the account are revoked, this caller's included.
        """
        check_text("code", code)
        if user.mfa_enabled:
            raise ConflictError("MFA is already enabled")
        if user.mfa_secret_enc is None:
            raise ConflictError("no pending MFA enrolment; call /api/auth/mfa/enroll first")
        grant = self._guard(user, ip)
        if not self._use_totp(user, code):
            self._fail(user, ip, "mfa", "mfa.failed")
            raise InvalidInputError("code", "wrong, expired or already used TOTP code")
        self._throttle().reset(grant)
        user.mfa_enabled = True
        codes = self._new_backup_codes(user)
        self._end_all_sessions(user, utcnow())
        self.audit("mfa.enabled", user.id, ip)
        return codes

    def _require_second_factor(self, user: User, code: str, ip: str | None) -> None:
        """Check a TOTP or backup code of a signed-in user; counted and locked like a login."""
        check_text("code", code)
        if not user.mfa_enabled:
            raise ConflictError("MFA is not enabled")
        grant = self._guard(user, ip)
        if not (self._use_totp(user, code) or self._use_backup_code(user, code)):
            self._fail(user, ip, "mfa", "mfa.failed")
            raise InvalidInputError("code", "wrong, expired or already used TOTP or backup code")
        self._throttle().reset(grant)

    def mfa_disable(self, user: User, code: str, ip: str | None = None) -> None:
        """Turn MFA off after checking a TOTP or backup code; forget the secret and codes.

        Every session ends (the epoch moves on): tokens of the MFA era are revoked.
        """
        self._require_second_factor(user, code, ip)
        user.mfa_enabled = False
        user.mfa_secret_enc = None
        self.session.execute(delete(BackupCode).where(BackupCode.user_id == user.id))
        self._end_all_sessions(user, utcnow())
        self.audit("mfa.disabled", user.id, ip)

    def regenerate_backup_codes(self, user: User, code: str, ip: str | None = None) -> list[str]:
        """Replace the backup codes after checking a TOTP or backup code; return the new ones."""
        self._require_second_factor(user, code, ip)
        codes = self._new_backup_codes(user)
        self.audit("mfa.backup_codes_regenerated", user.id, ip)
        return codes

    def change_password(
        self,
        user: User,
        current: str,
        new: str,
        *,
        code: str | None = None,
        ip: str | None = None,
    ) -> None:
        """Replace the password of a signed-in user; every session ends.

        The current password (and, with MFA on, a TOTP or backup code) is checked like a login:
        reserved first, counted, 423 when locked, so a stolen access token cannot be used to
        guess it.  The new one must pass :func:`check_password_rules`.

        Raises
        ------
        InvalidInputError
            ``currentPassword`` wrong, ``code`` missing or wrong, ``newPassword`` too weak.
        AccountLockedError
            Too many failed checks.
        """
        check_text("currentPassword", current)
        check_password_rules(new, field="newPassword", user_inputs=[user.email])
        if code is not None:
            check_text("code", code)
        if user.mfa_enabled and not code:
            raise InvalidInputError("code", "MFA is on: send a TOTP or backup code")
        grant = self._guard(user, ip)
        if not _verify_password(user.password_hash, current):
            self._fail(user, ip, "password", "password.change_failed")
            raise InvalidInputError("currentPassword", "wrong password")
        if user.mfa_enabled and not (
            self._use_totp(user, code or "") or self._use_backup_code(user, code or "")
        ):
            self._fail(user, ip, "mfa", "password.change_failed")
            raise InvalidInputError("code", "wrong, expired or already used TOTP or backup code")
        if hmac.compare_digest(current.encode(), new.encode()):
            raise InvalidInputError("newPassword", "must differ from the current password")
        self._throttle().reset(grant)
        user.password_hash = _hasher.hash(new)
        self._end_all_sessions(user, utcnow())
        self.audit("password.changed", user.id, ip)

    def backup_codes_left(self, user: User) -> int:
        """Return how many unused backup codes the user has."""
        rows = self.session.scalars(
            select(BackupCode.id).where(BackupCode.user_id == user.id, BackupCode.used_at.is_(None))
        )
        return len(list(rows))

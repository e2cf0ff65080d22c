"""Users' roles: who becomes admin, and changing a role or deactivating a user (operator tools).

Roles, least to most privileged: ``viewer`` (reads their own data), ``trader`` (also changes
their own bots, accounts, runs, own risk limits and own kill switch), ``admin`` (also the
portfolio's limits, the global kill switch, every user's totals).

The first account registered becomes ``admin``, every later one ``trader``.  Two first
registrations at once must not both become admin, so the decision is taken under a lock that
serialises bootstrapping registrations: a PostgreSQL transaction-level advisory lock, or on
SQLite the database's write lock, taken before anything is read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError
from cryptoorchestrator.platform.storage.models import RefreshToken, User
from cryptoorchestrator.platform.storage.types import utcnow

ROLES: tuple[str, ...] = ("viewer", "trader", "admin")
#: Password hashes starting with this can never verify: such users (the local CLI operator)
#: cannot log in, so they do not count as the first registered account.
NO_LOGIN_PREFIX = "!"
#: Key of the advisory lock that serialises bootstrapping registrations on PostgreSQL.
_BOOTSTRAP_LOCK = 0x63_6F_2D_72_6F_6C_65  # "co-role"


def _has_login_user(session: Session) -> bool:
    """Return whether any account that can log in exists."""
    found = session.scalar(
        select(User.id).where(User.password_hash.not_like(f"{NO_LOGIN_PREFIX}%")).limit(1)
    )
    return found is not None


def _lock_bootstrap(session: Session) -> None:
    """Serialise bootstrapping registrations until this transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _BOOTSTRAP_LOCK})
    elif dialect == "sqlite":
        # A write that changes nothing still takes SQLite's single write lock, held until
        # commit: a concurrent registration waits here (busy timeout) and then sees this row.
        session.execute(update(User).where(User.id.is_(None)).values(role=User.role))
    else:  # pragma: no cover (the platform runs on SQLite and PostgreSQL only)
        raise NotImplementedError(f"no bootstrap lock for {dialect}")


def role_for_new_user(session: Session) -> str:
    """Return the role of an account about to be created in ``session``'s transaction.

    ``admin`` when no account that can log in exists yet, ``trader`` otherwise.  Call it before
    anything else in the transaction and insert the user in the same transaction: on the first
    registration it takes a lock (see the module docstring) that lasts until commit.
    """
    if _has_login_user(session):
        return "trader"  # accounts are never deleted: no lock needed once there is one
    _lock_bootstrap(session)
    return "trader" if _has_login_user(session) else "admin"


def check_role(role: str) -> str:
    """Return ``role`` if it is one of :data:`ROLES`; raise ``InvalidInputError`` otherwise."""
    if role not in ROLES:
        raise InvalidInputError("role", f"unknown role {role!r}", allowed=list(ROLES))
    return role


def _user(session: Session, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFoundError(f"no user {email!r}")
    return user


def _revoke_sessions(session: Session, user: User, now: datetime) -> None:
    """End every login of ``user``: old access tokens die with the epoch, refresh tokens here."""
    user.auth_epoch = (user.auth_epoch or 0) + 1
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def set_role(session: Session, email: str, role: str) -> User:
    """Give ``email`` the ``role``; their tokens issued before stop working.

    Raises
    ------
    InvalidInputError
        ``role`` is not one of :data:`ROLES`.
    NotFoundError
        No user has that email.
    """
    check_role(role)
    user = _user(session, email)
    if user.role != role:
        user.role = role
        _revoke_sessions(session, user, utcnow())
    return user


def deactivate(session: Session, email: str) -> User:
    """Deactivate ``email``: they can no longer log in, and their tokens stop working."""
    user = _user(session, email)
    user.is_active = False
    _revoke_sessions(session, user, utcnow())
    return user

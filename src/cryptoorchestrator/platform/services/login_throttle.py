"""Failed-attempt counters for credential checks: atomic, per account, per client IP and per pair.

Every credential check (the password at login; a TOTP or backup code at login and on the MFA
routes) first *reserves* an attempt, in one transaction committed before any hash is computed,
on up to three counters:

* ``pair`` (account and client IP): ``max_failed_logins`` failures lock this pair, and each
  further lock of the same pair lasts twice as long (``lockout``, 2x, 4x ... ``max_lockout``).
  A guesser locks themselves out, not the owner of the account on another address.
* ``ip`` (the client IP, whatever the account): a larger budget against password spraying
  (one address trying a few passwords on many accounts), escalating the same way.
* ``account`` (whatever the IP): the global ceiling on guesses spread over many addresses.  It
  locks for ``lockout`` and never longer, so guessing can deny the owner their account only for
  that long at a time.

A reservation is one conditional ``UPDATE`` per counter, in a fixed order (no deadlocks): it
succeeds only while the counter is unlocked and under its budget, and the reservation that
reaches the budget sets the lock in the same transaction.  Parallel guesses therefore cannot
overshoot: at most ``limit`` checks run per key and round, on SQLite and PostgreSQL alike.  If
any counter refuses, the whole reservation is rolled back, so a refused guess neither extends a
lock nor spends another counter's budget.  A success resets the pair and the account, never the
IP (an attacker could reset it by logging into an account of their own).  A counter idle for
``window`` starts over.

Accounts are keyed by the normalised email whether or not it exists, so an unknown email locks
exactly like a real account and a 423 tells a guesser nothing they did not know.  Keys are
stored as keyed hashes: neither emails nor addresses are kept in clear.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.storage.models import LoginThrottle


@dataclass(frozen=True)
class ThrottleKey:
    """One counter of a reservation.

    Parameters
    ----------
    kind
        ``"pair"``, ``"ip"`` or ``"account"`` (what a success resets is chosen by kind).
    value
        What is counted (``"email|ip"``, the IP, the email).
    limit
        Failures allowed per round before the key locks.
    escalate
        Whether each further lock lasts twice as long as the one before.
    """

    kind: str
    value: str
    limit: int
    escalate: bool


@dataclass(frozen=True)
class Reservation:
    """Attempts reserved on each key; ``locked`` holds the digests this reservation locked."""

    digests: tuple[tuple[str, str], ...]
    locked: frozenset[str]


@dataclass(frozen=True)
class Refusal:
    """A reservation refused because a key is locked; retry after ``retry_after`` seconds."""

    retry_after: int


class Throttle:
    """Reserve, release and reset failure counters in one database session.

    Parameters
    ----------
    session
        The session to work in; :meth:`reserve` commits (or rolls back) its own transaction.
    secret
        Key of the HMAC that turns key values into stored digests.
    lockout
        Duration of a first lock (and of every lock of a non-escalating key).
    max_lockout
        Cap of an escalating lock; never more than ``window``.
    window
        A counter idle this long starts over (failures and strikes forgotten).
    """

    def __init__(
        self,
        session: Session,
        secret: str,
        *,
        lockout: timedelta,
        max_lockout: timedelta,
        window: timedelta,
    ) -> None:
        self.session = session
        self.secret = secret
        self.lockout = lockout
        self.window = window
        self.max_lockout = min(max_lockout, window)

    def digest(self, key: ThrottleKey) -> str:
        """Return the stored form of ``key`` (a keyed hash of its kind and value)."""
        message = f"{key.kind}:{key.value}".encode("utf-8", "surrogatepass")
        return hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()

    def _lock_for(self, strikes: int, escalate: bool) -> timedelta:
        if not escalate:
            return self.lockout
        return min(self.lockout * (2 ** min(strikes, 32)), self.max_lockout)

    def _ensure_row(self, digest: str, now: datetime) -> bool:
        """Insert the counter if missing (no-op on conflict); return whether it was new."""
        values = {
            "key": digest,
            "failures": 0,
            "strikes": 0,
            "locked_until": None,
            "updated_at": now,
        }
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = (
            insert(LoginThrottle)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(LoginThrottle.key)
        )
        # RETURNING, not rowcount: a conflict returns no row on both databases.
        return self.session.execute(stmt).first() is not None

    def reserve(self, keys: list[ThrottleKey], now: datetime) -> Reservation | Refusal:
        """Reserve one attempt on every key atomically, or none if any key is locked.

        Commits a granted reservation before returning (so the expensive check that follows
        holds no lock); rolls everything back on a refusal.
        """
        stale = now - self.window
        T = LoginThrottle
        locked: set[str] = set()
        digests: list[tuple[str, str]] = []
        created = False
        for key in keys:
            digest = self.digest(key)
            created = self._ensure_row(digest, now) or created
            new_round = or_(T.locked_until.is_not(None), T.updated_at < stale)
            row = self.session.execute(
                update(T)
                .where(
                    T.key == digest,
                    or_(
                        and_(T.locked_until.is_(None), T.failures < key.limit),
                        T.locked_until <= now,
                        T.updated_at < stale,
                    ),
                )
                .values(
                    failures=case((new_round, 1), else_=T.failures + 1),
                    strikes=case((T.updated_at < stale, 0), else_=T.strikes),
                    locked_until=None,
                    updated_at=now,
                )
                .returning(T.failures, T.strikes)
                .execution_options(synchronize_session=False)
            ).first()
            if row is None:
                until = self.session.scalar(select(T.locked_until).where(T.key == digest))
                self.session.rollback()
                seconds = (until - now).total_seconds() if until is not None else 0.0
                return Refusal(retry_after=max(1, int(seconds) + 1))
            failures, strikes = int(row[0]), int(row[1])
            if failures >= key.limit:
                self.session.execute(
                    update(T)
                    .where(T.key == digest)
                    .values(
                        locked_until=now + self._lock_for(strikes, key.escalate),
                        strikes=T.strikes + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                locked.add(digest)
            digests.append((key.kind, digest))
        self.session.commit()
        if created:
            self._prune(now)
        return Reservation(digests=tuple(digests), locked=frozenset(locked))

    def _prune(self, now: datetime) -> None:
        """Drop counters idle past the window, in a transaction of their own.

        Run when a reservation created a counter, so guessing ever new emails cannot grow the
        table without bound.  Rows another transaction holds are skipped (``SKIP LOCKED`` on
        PostgreSQL; SQLite locks the whole file), so pruning never waits in a lock cycle.
        """
        T = LoginThrottle
        stale = (
            select(T.key)
            .where(
                T.updated_at < now - self.window,
                or_(T.locked_until.is_(None), T.locked_until < now),
            )
            .limit(500)
            .with_for_update(skip_locked=True)
        )
        self.session.execute(
            delete(T).where(T.key.in_(stale)).execution_options(synchronize_session=False)
        )
        self.session.commit()

    def release(self, reservation: Reservation) -> None:
        """Give back the attempts of ``reservation`` (a check that neither failed nor passed).

        Added to the session's transaction; the caller commits.
        """
        T = LoginThrottle
        for _kind, digest in reservation.digests:
            values: dict[str, object] = {"failures": T.failures - 1}
            if digest in reservation.locked:
                values.update(
                    locked_until=None, strikes=case((T.strikes > 0, T.strikes - 1), else_=0)
                )
            self.session.execute(
                update(T)
                .where(T.key == digest, T.failures > 0)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def reset(self, reservation: Reservation) -> None:
        """Forget the failures of the pair and account keys after a success (not the IP's).

        Added to the session's transaction; the caller commits.
        """
        digests = [d for kind, d in reservation.digests if kind != "ip"]
        if not digests:
            return
        T = LoginThrottle
        self.session.execute(
            update(T)
            .where(T.key.in_(digests))
            .values(failures=0, strikes=0, locked_until=None)
            .execution_options(synchronize_session=False)
        )


def unlock_account(session: Session, secret: str, email: str) -> bool:
    """Forget the failures and lock of ``email``'s account counter (an operator's action).

    Pair and address counters stay: they hold what guessers did from their own addresses.
    Added to the session's transaction; the caller commits.  Returns whether a counter existed.
    """
    digest = Throttle(
        session, secret, lockout=timedelta(0), max_lockout=timedelta(0), window=timedelta(0)
    ).digest(ThrottleKey("account", email, 0, escalate=False))
    T = LoginThrottle
    done = session.execute(
        update(T)
        .where(T.key == digest)
        .values(failures=0, strikes=0, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))

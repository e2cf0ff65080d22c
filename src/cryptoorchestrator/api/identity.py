"""Who is calling: verified access tokens and active users, each checked once and then cached.

Every authenticated request used to verify its JWT twice (rate limiter, then route) and load its
user row through the ORM, a third of a ``/api/trades`` request.  Both answers are cached:

* a token's signature is verified once; later requests with the same token only compare its
  ``exp`` with the clock, so expiry is exact ("Token expired" the second it passes);
* a user found active is trusted for ``user_ttl_s`` seconds (5 by default); a deactivated or
  deleted user is refused within that time on every replica.  Inactive users are never cached.
* a token is only as good as its session: its ``sid`` (the refresh-token family of its login)
  must still have a live refresh token, and its ``ep`` must equal the user's ``auth_epoch``.
  Both are looked up with the user and cached as long; a replica that revokes a session or
  bumps an epoch forgets its cache at once (:meth:`Identity.forget_session`,
  :meth:`Identity.forget`), the others within ``user_ttl_s``.  A token found revoked is
  refused for good (sessions never come back, epochs only grow).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import UnauthorizedError
from cryptoorchestrator.platform.services.auth import (
    INVALID_TOKEN,
    TOKEN_EXPIRED,
    AccessClaims,
    AuthConfig,
    verify_access_token,
)
from cryptoorchestrator.platform.storage.models import RefreshToken, User


class Identity:
    """Bearer token -> user id, with the token and user checks cached (thread-safe).

    Parameters
    ----------
    config
        Token signing settings.
    session_factory
        Opens a session to look a user up on a cache miss.
    user_ttl_s
        How long a user found active is trusted without asking the database (0: always ask).
    max_entries
        Bound of each cache; a full cache is cleared (cheaper than LRU bookkeeping per hit).
    """

    def __init__(
        self,
        config: AuthConfig,
        session_factory: Callable[[], Session],
        *,
        user_ttl_s: float = 5.0,
        max_entries: int = 4096,
    ) -> None:
        self.config = config
        self.session_factory = session_factory
        self.user_ttl_s = user_ttl_s
        self.max_entries = max_entries
        self._tokens: dict[str, AccessClaims] = {}
        # user id -> (trusted until, monotonic; its auth epoch then)
        self._active: dict[int, tuple[float, int]] = {}
        # session id (refresh-token family) -> trusted until (monotonic)
        self._sessions: dict[str, float] = {}
        self._refused: dict[str, str] = {}
        # Dict reads and writes are atomic; the lock only keeps clear-when-full consistent.
        self._lock = threading.Lock()

    def user_id(self, token: str) -> int:
        """Return the user id of a validly signed, unexpired access token, or raise 401.

        Signature and expiry only: :meth:`authenticate` also checks the session and epoch.
        """
        return self.claims(token).user_id

    def claims(self, token: str) -> AccessClaims:
        """Return the claims of a validly signed, unexpired access token, or raise 401."""
        hit = self._tokens.get(token)
        if hit is None:
            refused = self._refused.get(token)
            if refused is not None:
                raise UnauthorizedError(refused)
            try:
                hit = verify_access_token(self.config, token)
            except UnauthorizedError as exc:
                # Remember bad tokens too: a client retrying one must not cost a signature
                # check per request (the rate limiter sees it before the route refuses it).
                self._put(self._refused, token, str(exc))
                raise
            self._put(self._tokens, token, hit)
        if hit.exp <= time.time():  # the same rule as PyJWT: expired once now >= exp
            self._tokens.pop(token, None)
            raise UnauthorizedError(TOKEN_EXPIRED)
        return hit

    def current(self, claims: AccessClaims) -> bool:
        """Whether the cache vouches for ``claims``: user active, same epoch, session live."""
        now = time.monotonic()
        user = self._active.get(claims.user_id)
        if user is None or user[0] <= now or user[1] != claims.epoch:
            return False
        until = self._sessions.get(claims.session_id)
        return until is not None and until > now

    def check(self, token: str, claims: AccessClaims, session: Session | None = None) -> None:
        """Ask the database whether ``claims`` are still current; raise 401 (for good) if not.

        Parameters
        ----------
        token
            The token the claims came from (remembered as refused when they are not current).
        claims
            Its verified claims.
        session
            A session to ask in (the request's); a new one from the factory when omitted.
        """
        stmt = select(
            User.is_active,
            User.auth_epoch,
            exists().where(
                RefreshToken.family_id == claims.session_id,
                RefreshToken.user_id == claims.user_id,
                RefreshToken.revoked_at.is_(None),
            ),
        ).where(User.id == claims.user_id)
        if session is None:
            with self.session_factory() as own:
                row = own.execute(stmt).first()
        else:
            row = session.execute(stmt).first()
        if row is None or not row[0]:
            self._active.pop(claims.user_id, None)
            raise UnauthorizedError(INVALID_TOKEN)
        active_epoch, live = int(row[1]), bool(row[2])
        self.remember_active(claims.user_id, active_epoch)
        if active_epoch != claims.epoch or not live:
            self._sessions.pop(claims.session_id, None)
            self._tokens.pop(token, None)
            self._put(self._refused, token, INVALID_TOKEN)
            raise UnauthorizedError(INVALID_TOKEN)
        if self.user_ttl_s > 0:
            self._put(self._sessions, claims.session_id, time.monotonic() + self.user_ttl_s)

    def authenticate(self, token: str, *, fresh: bool = False) -> int:
        """Return the user id of a current access token (signature, expiry, user, session).

        ``fresh`` always asks the database (a WebSocket lives long: no cached answer).
        """
        claims = self.claims(token)
        if fresh or not self.current(claims):
            self.check(token, claims)
        return claims.user_id

    def identify(self, token: str) -> int | None:
        """Return the user id of a valid access token, or None (for the rate limiter)."""
        try:
            return self.user_id(token)
        except UnauthorizedError:
            return None

    def active_cached(self, user_id: int) -> bool:
        """Whether ``user_id`` was found active less than ``user_ttl_s`` seconds ago."""
        hit = self._active.get(user_id)
        return hit is not None and hit[0] > time.monotonic()

    def check_active(self, user_id: int) -> None:
        """Ask the database whether ``user_id`` exists and is active; raise 401 if not.

        The user only; tokens are checked with :meth:`authenticate`.
        """
        with self.session_factory() as session:
            row = session.execute(
                select(User.is_active, User.auth_epoch).where(User.id == user_id)
            ).first()
        if row is None or not row[0]:
            self._active.pop(user_id, None)
            raise UnauthorizedError(INVALID_TOKEN)
        self.remember_active(user_id, int(row[1]))

    def remember_active(self, user_id: int, epoch: int) -> None:
        """Record that ``user_id`` was just seen active, in auth epoch ``epoch``."""
        if self.user_ttl_s <= 0:
            return
        self._put(self._active, user_id, (time.monotonic() + self.user_ttl_s, epoch))

    def _put(self, cache: dict[Any, Any], key: Any, value: Any) -> None:
        """Store in a bounded cache: a full one is cleared (cheaper than LRU per hit)."""
        with self._lock:
            if len(cache) >= self.max_entries:
                cache.clear()
            cache[key] = value

    def forget(self, user_id: int) -> None:
        """Drop ``user_id`` from the active cache (after deactivating it or bumping its epoch)."""
        self._active.pop(user_id, None)

    def forget_session(self, session_id: str) -> None:
        """Drop a session from the cache (after revoking its refresh-token family here)."""
        self._sessions.pop(session_id, None)

    def revoked(self, user_id: int, session_id: str | None) -> None:
        """Forget what a committed revocation changed: one session, or the whole user."""
        if session_id is None:
            self.forget(user_id)
        else:
            self.forget_session(session_id)

    def forget_all(self) -> None:
        """Drop every cached user and session (after changes made outside this process)."""
        with self._lock:
            self._active.clear()
            self._sessions.clear()

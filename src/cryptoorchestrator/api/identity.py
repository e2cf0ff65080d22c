"""Who is calling: verified access tokens and active users, each checked once and then cached.

Every authenticated request used to verify its JWT twice (rate limiter, then route) and load its
user row through the ORM: ~2 ms of a ~6 ms ``/api/trades`` request.  Both answers are cached:

* a token's signature is verified once; later requests with the same token only compare its
  ``exp`` with the clock, so expiry is exact ("Token expired" the second it passes);
* a user found active is trusted for ``user_ttl_s`` seconds (5 by default); a deactivated or
  deleted user is refused within that time on every replica.  Inactive users are never cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import UnauthorizedError
from cryptoorchestrator.platform.services.auth import (
    INVALID_TOKEN,
    TOKEN_EXPIRED,
    AuthConfig,
    verify_access_token,
)
from cryptoorchestrator.platform.storage.models import User


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
        self._tokens: dict[str, tuple[int, int]] = {}
        self._active: dict[int, float] = {}
        self._refused: dict[str, str] = {}
        # Dict reads and writes are atomic; the lock only keeps clear-when-full consistent.
        self._lock = threading.Lock()

    def user_id(self, token: str) -> int:
        """Return the user id of a valid access token, or raise 401 saying why."""
        hit = self._tokens.get(token)
        if hit is None:
            refused = self._refused.get(token)
            if refused is not None:
                raise UnauthorizedError(refused)
            try:
                user_id, exp = verify_access_token(self.config, token)
            except UnauthorizedError as exc:
                # Remember bad tokens too: a client retrying one must not cost a signature
                # check per request (the rate limiter sees it before the route refuses it).
                self._put(self._refused, token, str(exc))
                raise
            hit = (user_id, exp)
            self._put(self._tokens, token, hit)
        if hit[1] <= time.time():  # the same rule as PyJWT: expired once now >= exp
            self._tokens.pop(token, None)
            raise UnauthorizedError(TOKEN_EXPIRED)
        return hit[0]

    def identify(self, token: str) -> int | None:
        """Return the user id of a valid access token, or None (for the rate limiter)."""
        try:
            return self.user_id(token)
        except UnauthorizedError:
            return None

    def active_cached(self, user_id: int) -> bool:
        """Whether ``user_id`` was found active less than ``user_ttl_s`` seconds ago."""
        until = self._active.get(user_id)
        return until is not None and until > time.monotonic()

    def check_active(self, user_id: int) -> None:
        """Ask the database whether ``user_id`` exists and is active; raise 401 if not."""
        with self.session_factory() as session:
            active = session.scalar(select(User.is_active).where(User.id == user_id))
        if not active:
            self._active.pop(user_id, None)
            raise UnauthorizedError(INVALID_TOKEN)
        self.remember_active(user_id)

    def remember_active(self, user_id: int) -> None:
        """Record that ``user_id`` was just seen active."""
        if self.user_ttl_s <= 0:
            return
        self._put(self._active, user_id, time.monotonic() + self.user_ttl_s)

    def _put(self, cache: dict[Any, Any], key: Any, value: Any) -> None:
        """Store in a bounded cache: a full one is cleared (cheaper than LRU per hit)."""
        with self._lock:
            if len(cache) >= self.max_entries:
                cache.clear()
            cache[key] = value

    def forget(self, user_id: int) -> None:
        """Drop ``user_id`` from the active cache (after deactivating it in this process)."""
        self._active.pop(user_id, None)

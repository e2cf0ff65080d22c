"""The simulator's request-weight limit per IP, as Binance enforces it.

Binance counts each request's weight (:mod:`~cryptoorchestrator.platform.exchange.weights`)
per IP in fixed windows (a minute on spot) and tells the count in every answer
(``X-MBX-USED-WEIGHT-1M``).  A request that takes the count over the limit is refused with 429,
Binance's -1003 body and ``Retry-After`` (seconds to the next window); an IP that keeps sending
while it was told to wait is banned with 418 for ``ban_s``.  Refused requests count too.

:class:`WeightLimiter` keeps those counts and the figures tests read: the most weight an IP
was *served* in one window, and how many 429s and 418s were sent.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptoorchestrator.platform.exchange.budget import interval_name
from cryptoorchestrator.platform.exchange.weights import binance_weight

API_PREFIX = "/api/v3/"


@dataclass(frozen=True)
class Verdict:
    """The limiter's answer to one request.

    Attributes
    ----------
    status
        200 to serve it, 429 (over the limit) or 418 (banned).
    used
        The IP's count of the current window, this request included.
    retry_after_s
        Seconds to wait (429 and 418 only).
    header
        The ``X-MBX-USED-WEIGHT-*`` header name for the window.
    """

    status: int
    used: float
    retry_after_s: int
    header: str


class WeightLimiter:
    """Request weight per IP in fixed windows; 429 over the limit, 418 for who ignores it.

    Parameters
    ----------
    limit
        Weight per IP per window.
    window_s
        The window (Binance: 60 s).
    ban_s
        How long an IP that sent during its ``Retry-After`` is banned.
    clock
        Seconds (windows are aligned to multiples of ``window_s``).
    """

    def __init__(
        self,
        limit: float,
        window_s: float = 60.0,
        *,
        ban_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = float(limit)
        self.window_s = float(window_s)
        self.ban_s = float(ban_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], float] = {}
        self._served: dict[tuple[str, int], float] = {}
        self._retry_at: dict[str, float] = {}
        self._banned_until: dict[str, float] = {}
        self.header = f"X-MBX-USED-WEIGHT-{interval_name(self.window_s)}"
        #: 429s and 418s sent.
        self.refused: Counter[int] = Counter()

    def charge(self, ip: str, method: str, path: str, params: Mapping[str, object]) -> Verdict:
        """Count one request of ``ip`` and say whether to serve it."""
        weight = binance_weight(method, path.removeprefix(API_PREFIX), params)
        with self._lock:
            now = self._clock()
            window = math.floor(now / self.window_s)
            key = (ip, window)
            used = self._counts.get(key, 0.0) + weight
            self._counts[key] = used
            next_window = (window + 1) * self.window_s
            banned = self._banned_until.get(ip, -math.inf)
            if now < banned:
                self.refused[418] += 1
                return Verdict(418, used, math.ceil(banned - now), self.header)
            if now < self._retry_at.get(ip, -math.inf):
                # Told to wait and did not: Binance bans such an IP.
                self._banned_until[ip] = now + self.ban_s
                self.refused[418] += 1
                return Verdict(418, used, math.ceil(self.ban_s), self.header)
            if used > self.limit:
                self._retry_at[ip] = next_window
                self.refused[429] += 1
                return Verdict(429, used, max(1, math.ceil(next_window - now)), self.header)
            self._served[key] = self._served.get(key, 0.0) + weight
            return Verdict(200, used, 0, self.header)

    def max_served(self) -> float:
        """Return the most weight one IP was served in one window."""
        with self._lock:
            return max(self._served.values(), default=0.0)

    def served(self) -> dict[tuple[str, int], float]:
        """Return the weight served per (IP, window number)."""
        with self._lock:
            return dict(self._served)

    def stats(self) -> dict[str, object]:
        """Return the limit, the most served in a window and the refusals (JSON-ready)."""
        return {
            "limit": self.limit,
            "window_s": self.window_s,
            "max_served": self.max_served(),
            "refused_429": self.refused[429],
            "refused_418": self.refused[418],
        }


__all__ = ["Verdict", "WeightLimiter"]

"""Per-destination pacing: Telegram's ~30 messages/s per bot and 1/s per chat, and the like.

A :class:`Pacer` keeps, per key, the earliest moment the next message may go; a send waits
for the latest of its keys.  It paces this process only: across API replicas, a channel is sent
to by one dispatcher at a time (its lease), so per-chat pacing holds, while a bot token shared
by channels on several replicas may exceed the global rate briefly (Telegram then answers 429
with ``retry_after``, which the dispatcher honours).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

#: Minimum seconds between two messages, per kind of key.
TELEGRAM_BOT_S = 1 / 30
TELEGRAM_CHAT_S = 1.0
DISCORD_WEBHOOK_S = 0.5
SLACK_WEBHOOK_S = 1.0


class Pacer:
    """Space out messages per key.

    Parameters
    ----------
    clock
        Monotonic seconds (tests pass a fake).
    sleep
        Awaitable sleep (tests pass one that advances the fake clock).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def wait(self, keys: Sequence[tuple[str, float]]) -> float:
        """Wait until every ``(key, interval)`` allows a message, reserve it; return the wait."""
        if not keys:
            return 0.0
        async with self._lock:
            now = self._clock()
            start = max([now, *(self._next.get(k, now) for k, _ in keys)])
            for key, interval in keys:
                self._next[key] = start + interval
        delay = start - now
        if delay > 0:
            await self._sleep(delay)
        return delay

    def hold(self, key: str, seconds: float) -> None:
        """Send nothing on ``key`` for ``seconds`` (a 429's ``retry_after``)."""
        self._next[key] = max(self._next.get(key, 0.0), self._clock() + seconds)

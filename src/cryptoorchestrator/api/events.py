"""The in-process event hub behind ``/ws/bots``.

Anything in the API process (routes now, bot actors' event relays later) calls
``hub.publish(bot_id, event)``; the hub looks up the bot's owner and delivers the event to that
user's WebSocket subscribers only.  ``publish`` is thread-safe and never blocks: each subscriber
has a bounded queue, and a subscriber too slow to keep up loses its oldest events and is told so.
:class:`SocketSlots` caps the open WebSockets per client address and per user.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OwnerLookup = Callable[[int], int | None]


@dataclass(eq=False)
class Subscription:
    """One WebSocket's queue of events."""

    user_id: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(1000))
    dropped: int = 0

    def _put(self, message: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(message)


class EventHub:
    """Route bot events to their owner's subscribers.

    Parameters
    ----------
    owner_of
        Returns the user id owning a bot (``None`` for an unknown bot); results are cached.
    """

    def __init__(self, owner_of: OwnerLookup) -> None:
        self._owner_of = owner_of
        self._owners: dict[int, int] = {}
        self._subs: dict[int, set[Subscription]] = {}
        self._lock = threading.Lock()

    def subscribe(self, user_id: int) -> Subscription:
        """Register a subscriber for ``user_id`` on the running event loop."""
        sub = Subscription(user_id, asyncio.get_running_loop())
        with self._lock:
            self._subs.setdefault(user_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a subscriber."""
        with self._lock:
            subs = self._subs.get(sub.user_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.user_id]

    def remember_owner(self, bot_id: int, user_id: int) -> None:
        """Record a bot's owner (so publishing needs no lookup)."""
        with self._lock:
            self._owners[bot_id] = user_id

    def publish(self, bot_id: int, event: dict[str, Any]) -> int:
        """Deliver ``event`` about ``bot_id`` to its owner's subscribers; return how many.

        The event is sent as ``{"botId": bot_id, **event}``; its ``type`` should say what it is
        (``status``, ``order``, ``fill``).
        """
        with self._lock:
            owner = self._owners.get(bot_id)
        if owner is None:
            owner = self._owner_of(bot_id)
            if owner is None:
                return 0
            self.remember_owner(bot_id, owner)
        with self._lock:
            subs = list(self._subs.get(owner, ()))
        message = {"botId": bot_id, **event}
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._put, message)
            except RuntimeError:  # its loop has closed; the socket is gone
                self.unsubscribe(sub)
        return len(subs)

    def subscriber_count(self) -> int:
        """Return the number of open subscriptions."""
        with self._lock:
            return sum(len(s) for s in self._subs.values())


class SocketSlots:
    """Caps on open WebSockets per client address and per user, so no one client can hold
    every socket (file descriptors, tasks, feed polls) of the head node.

    Parameters
    ----------
    per_ip
        Open sockets (of every WebSocket route together) per client address.
    per_user
        Open authenticated sockets per user.
    """

    def __init__(self, per_ip: int, per_user: int) -> None:
        self.per_ip = per_ip
        self.per_user = per_user
        self._ips: dict[str, int] = {}
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _take(counts: dict[Any, int], key: Any, limit: int) -> bool:
        held = counts.get(key, 0)
        if held >= limit:
            return False
        counts[key] = held + 1
        return True

    @staticmethod
    def _give(counts: dict[Any, int], key: Any) -> None:
        held = counts.get(key, 0) - 1
        if held > 0:
            counts[key] = held
        else:
            counts.pop(key, None)  # no entry per address ever seen: the dict stays bounded

    def take_ip(self, ip: str) -> bool:
        """Take a slot of ``ip``; False when it already holds ``per_ip`` sockets."""
        with self._lock:
            return self._take(self._ips, ip, self.per_ip)

    def release_ip(self, ip: str) -> None:
        """Give back a slot taken with :meth:`take_ip`."""
        with self._lock:
            self._give(self._ips, ip)

    def take_user(self, user_id: int) -> bool:
        """Take a slot of ``user_id``; False when it already holds ``per_user`` sockets."""
        with self._lock:
            return self._take(self._users, user_id, self.per_user)

    def release_user(self, user_id: int) -> None:
        """Give back a slot taken with :meth:`take_user`."""
        with self._lock:
            self._give(self._users, user_id)

    def open_count(self) -> tuple[int, int]:
        """Return the slots held: (by address, by user)."""
        with self._lock:
            return sum(self._ips.values()), sum(self._users.values())

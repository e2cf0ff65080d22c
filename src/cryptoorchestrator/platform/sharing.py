"""Objects shared by the users of one event loop: made on first use, dropped by the last user.

A bot process's bots share one client per exchange (market data, the kline stream).  Network
clients belong to the loop that opened their sessions, so sharing is per loop, and held weakly:
a loop that is gone takes its objects with it, and a new loop never finds an old loop's client.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Share(Generic[V]):
    value: V
    users: int = 0


class LoopShares(Generic[K, V]):
    """One object per (running event loop, key), counted by its users."""

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, _Share[V]]] = (
            weakref.WeakKeyDictionary()
        )

    def acquire(self, key: K, make: Callable[[], V]) -> V:
        """Take a share of the running loop's object for ``key``, made by ``make()`` if none."""
        entries = self._by_loop.setdefault(asyncio.get_running_loop(), {})
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Share(make())
        entry.users += 1
        return entry.value

    def release(self, key: K, value: V) -> bool:
        """Give back a share of ``value``; return True when nobody holds it any more.

        An object that was never shared here (made directly) has no other user: True.
        """
        entries = self._by_loop.get(asyncio.get_running_loop(), {})
        entry = entries.get(key)
        if entry is None or entry.value is not value:
            return True
        entry.users -= 1
        if entry.users > 0:
            return False
        del entries[key]
        return True


__all__ = ["LoopShares"]

"""The event bus: bot actors publish status changes, orders and fills; API nodes long-poll them.

One named, detached actor holds a bounded ring of recent events with sequence numbers.  Bots
publish fire-and-forget (a slow or missing bus never slows trading); each API process keeps a
cursor and asks for newer events, waiting up to a timeout when there are none, then hands them to
its in-process WebSocket hub.  Events are notifications; the database stays the record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import ray

from cryptoorchestrator.cluster.runtime import NAMESPACE

EVENT_BUS_NAME = "events"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class EventBus:
    """A bounded, sequenced buffer of bot events (see the module docstring)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)
        self._seq = 0
        self._changed = asyncio.Condition()

    async def publish(self, event: dict[str, Any]) -> int:
        """Append an event; return its sequence number."""
        async with self._changed:
            self._seq += 1
            self._events.append((self._seq, event))
            self._changed.notify_all()
        return self._seq

    async def poll(self, after: int, timeout_s: float = 10.0, limit: int = 500) -> dict[str, Any]:
        """Return events with a sequence number above ``after`` (waiting up to ``timeout_s``).

        ``lost`` counts events that fell out of the buffer before this poller saw them.
        """
        async with self._changed:
            if self._seq <= after:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._seq > after), timeout_s
                    )
                except TimeoutError:
                    return {"last": self._seq, "events": [], "lost": 0}
            oldest = self._events[0][0] if self._events else self._seq + 1
            lost = max(0, oldest - after - 1)
            events = [e for seq, e in self._events if seq > after][:limit]
            last = after + lost + len(events)
            return {"last": last, "events": events, "lost": lost}


def get_event_bus() -> Any:
    """Return the event bus handle, creating the detached actor if needed."""
    return EventBus.options(  # type: ignore[attr-defined]
        name=EVENT_BUS_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()

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
from cryptoorchestrator.platform.batching import Coalescer

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
        return await self.publish_many([event])

    async def publish_many(self, events: list[dict[str, Any]]) -> int:
        """Append events in order; return the sequence number of the last one."""
        async with self._changed:
            for event in events:
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


class EventPublisher:
    """Fire-and-forget publishing from a bot process, the events of one moment in one call.

    A group's bots emit their fills and order updates together; one ``publish_many`` message
    per batch instead of one ``publish`` per event (the bus actor's CPU went mostly to Ray's
    per-call overhead).  Nothing waits for the bus.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._send: Coalescer[dict[str, Any], None] = Coalescer(self._publish)

    async def _publish(self, events: list[dict[str, Any]]) -> list[None]:
        self.handle.publish_many.remote(events)
        return [None] * len(events)

    async def publish(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for the next batch (returns once the batch is sent)."""
        await self._send(event)


def get_event_bus() -> Any:
    """Return the event bus handle, creating the detached actor if needed."""
    return EventBus.options(  # type: ignore[attr-defined]
        name=EVENT_BUS_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()

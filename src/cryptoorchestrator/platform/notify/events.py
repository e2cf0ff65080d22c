"""The catalogue of notification events: type, severity, a stable key, a text for humans."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How much an event matters; channels receive events at or above their minimum."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class EventType(StrEnum):
    """Every event a channel may subscribe to."""

    ORDER_FILLED = "order.filled"
    ORDER_PARTIALLY_FILLED = "order.partially_filled"
    ORDER_REJECTED = "order.rejected"
    ORDER_CANCELED = "order.canceled"
    BOT_STARTING = "bot.starting"
    BOT_RUNNING = "bot.running"
    BOT_STOPPED = "bot.stopped"
    BOT_ERROR = "bot.error"
    RISK_BREACH = "risk.breach"
    RISK_DENIAL = "risk.denial"
    KILL_SWITCH_ENGAGED = "kill_switch.engaged"
    KILL_SWITCH_RELEASED = "kill_switch.released"
    CIRCUIT_BREAKER_OPENED = "circuit_breaker.opened"
    CIRCUIT_BREAKER_CLOSED = "circuit_breaker.closed"
    EXCHANGE_AUTH_FAILED = "exchange.auth_failed"
    RECONCILIATION_DISCREPANCY = "reconciliation.discrepancy"
    RISK_ACTOR_RESTARTED = "risk_actor.restarted"
    SUMMARY_DAILY = "summary.daily"
    BACKUP_DONE = "backup.done"
    BACKUP_FAILED = "backup.failed"
    INTEGRITY_FINDINGS = "integrity.findings"
    TEST = "test"


#: System alerts: they go to the channels of active admins (whatever their bots); a circuit
#: breaker's also to the owners of the bots trading on the account.
SYSTEM_EVENTS = frozenset(
    {
        EventType.BACKUP_DONE,
        EventType.BACKUP_FAILED,
        EventType.INTEGRITY_FINDINGS,
        EventType.RISK_ACTOR_RESTARTED,
        EventType.CIRCUIT_BREAKER_OPENED,
        EventType.CIRCUIT_BREAKER_CLOSED,
    }
)


#: Default severity of each event type.
SEVERITY: dict[EventType, Severity] = {
    EventType.ORDER_FILLED: Severity.INFO,
    EventType.ORDER_PARTIALLY_FILLED: Severity.INFO,
    EventType.ORDER_REJECTED: Severity.WARNING,
    EventType.ORDER_CANCELED: Severity.INFO,
    EventType.BOT_STARTING: Severity.INFO,
    EventType.BOT_RUNNING: Severity.INFO,
    EventType.BOT_STOPPED: Severity.WARNING,
    EventType.BOT_ERROR: Severity.ERROR,
    EventType.RISK_BREACH: Severity.ERROR,
    EventType.RISK_DENIAL: Severity.WARNING,
    EventType.KILL_SWITCH_ENGAGED: Severity.CRITICAL,
    EventType.KILL_SWITCH_RELEASED: Severity.WARNING,
    EventType.CIRCUIT_BREAKER_OPENED: Severity.ERROR,
    EventType.CIRCUIT_BREAKER_CLOSED: Severity.INFO,
    EventType.EXCHANGE_AUTH_FAILED: Severity.ERROR,
    EventType.RECONCILIATION_DISCREPANCY: Severity.WARNING,
    EventType.RISK_ACTOR_RESTARTED: Severity.WARNING,
    EventType.SUMMARY_DAILY: Severity.INFO,
    EventType.BACKUP_DONE: Severity.INFO,
    EventType.BACKUP_FAILED: Severity.ERROR,
    EventType.INTEGRITY_FINDINGS: Severity.ERROR,
    EventType.TEST: Severity.INFO,
}


@dataclass(frozen=True)
class Event:
    """One thing to tell a user.

    Attributes
    ----------
    type
        What happened.
    key
        Stable id of the fact (``fill:<trade id>``, ``kill:<risk event id>``): a channel gets
        one notification per key, however often it is enqueued.
    title
        One line for humans.
    text
        Details for humans (plain text; each channel escapes it as it needs).
    at
        When the fact happened (UTC).
    data
        Machine-readable fields (ids, symbol, side, price and amount as decimal strings).
    severity
        Defaults to the type's severity.
    """

    type: EventType
    key: str
    title: str
    text: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None

    @property
    def level(self) -> Severity:
        """The event's severity (its own, else its type's)."""
        return self.severity or SEVERITY[self.type]

    def to_payload(self) -> dict[str, Any]:
        """Return the JSON-able form stored in the outbox and sent to webhooks."""
        return {
            "id": self.key,
            "type": self.type.value,
            "severity": self.level.value,
            "title": self.title,
            "text": self.text,
            "at": self.at.isoformat(),
            "data": self.data,
        }


def wants(
    events: list[str] | None,
    min_severity: str,
    event: Event,
    bot_ids: list[int] | None = None,
) -> bool:
    """Return whether a channel subscribed to ``events``, ``bot_ids`` and ``min_severity``
    gets ``event``.

    The test event reaches every channel.  ``bot_ids`` (None: every bot) filters events about
    one bot (``data["botId"]``); events about no single bot (a user's or the global kill
    switch, system alerts) are not filtered by bot.  Quiet hours do not decide *whether* a
    channel gets an event, only *when* (:mod:`.subscriptions`).
    """
    if event.type is EventType.TEST:
        return True
    if events is not None and event.type.value not in events:
        return False
    bot = event.data.get("botId")
    if bot_ids is not None and bot is not None and bot not in bot_ids:
        return False
    return SEVERITY_RANK[event.level] >= SEVERITY_RANK[Severity(min_severity)]

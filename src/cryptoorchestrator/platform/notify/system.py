"""System alerts: backups, integrity findings, circuit breakers, exchange authentication
failures, reconciliation discrepancies and risk actor restarts.

Producers call one function each: :func:`notify_backup` after ``create_backup`` succeeded or
failed (its own short transaction: a backup is no database fact; a failure to notify never
fails the backup), and :func:`enqueue_integrity_findings` in the transaction that quarantines
new findings (so they commit together).  The rows go to the channels of every active admin
through the outbox (:func:`~.outbox.enqueue_admins`); the head node's dispatcher sends them.

Facts that are not stored are written as their own outbox rows right away, in a short
transaction of their own, and never raise:

* a circuit breaker opening or closing (:func:`exchange_alert`, the listener
  :func:`install_exchange_alerts` gives the process's breakers): admins and the owners of the
  bots trading on the account; key ``breaker:<account>:<opened at, ms>:opened|closed``, so one
  episode of one process tells once;
* an exchange refusing an account's credentials (the same listener): the account's owner; key
  ``auth_failed:<account>:<UTC hour>``, so the bots of an account, and their restarts, tell
  once an hour;
* a reconciliation after a restart that found the exchange's orders or fills different from
  ours (:func:`notify_reconciliation`): the bot's owner, with counts; the key is a digest of
  what differed, so the same discrepancy found again tells once;
* a restarted risk actor (:func:`notify_risk_actor_restarted`): admins, one row per
  incarnation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, make_url, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cryptoorchestrator.platform.exchange.circuit import registry
from cryptoorchestrator.platform.notify.events import Event, EventType
from cryptoorchestrator.platform.notify.outbox import (
    admin_ids,
    enqueue_admins,
    enqueue_many,
    outbox_ready,
)
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import get_engine
from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount
from cryptoorchestrator.platform.storage.types import utcnow

log = logging.getLogger("cryptoorchestrator.notify")


def backup_event(dest: Path | str, *, error: BaseException | None = None) -> Event:
    """The event of a backup into ``dest`` that succeeded (``error`` None) or failed."""
    now = utcnow()
    folder = Path(dest).name
    if error is None:
        return Event(
            type=EventType.BACKUP_DONE,
            key=f"backup:{folder}:{now:%Y%m%dT%H%M%S%f}",
            title=f"Backup {folder} done",
            text=f"Backup written to {folder}.",
            at=now,
            data={"folder": folder},
        )
    reason = f"{type(error).__name__}: {error}"[:300]
    return Event(
        type=EventType.BACKUP_FAILED,
        key=f"backup_failed:{folder}:{now:%Y%m%dT%H%M%S%f}",
        title=f"Backup {folder} FAILED",
        text=f"Backup into {folder} failed ({reason}); the previous backups are kept.",
        at=now,
        data={"folder": folder, "error": reason},
    )


def notify_backup(
    settings: Settings, dest: Path | str, *, error: BaseException | None = None
) -> int:
    """Enqueue ``backup.done`` (or ``backup.failed``) for the admins; return the rows written.

    Never raises: the database may be the very thing that failed.  A connection of its own,
    not pooled, so no file handle outlives the call (a restore may replace the file next).
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return 0  # no database to tell (connecting would create an empty file)
    try:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                return enqueue_admins(conn, backup_event(dest, error=error))
        finally:
            engine.dispose()
    except Exception as exc:
        log.warning("could not enqueue the backup notification (%s)", type(exc).__name__)
        return 0


def integrity_event(findings: Sequence[Any]) -> Event:
    """The event of a check that quarantined ``findings`` (objects with ``kind``)."""
    now = utcnow()
    counts = Counter(str(getattr(f, "kind", "unknown")) for f in findings)
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return Event(
        type=EventType.INTEGRITY_FINDINGS,
        key=f"integrity:{now:%Y%m%dT%H%M%S%f}",
        title=f"Integrity check: {len(findings)} new finding(s)",
        text=f"The integrity check quarantined {len(findings)} new finding(s): {parts}. "
        "See GET /api/health/integrity or `cryptoorch db check`.",
        at=now,
        data={"count": len(findings), "counts": dict(sorted(counts.items()))},
    )


def enqueue_integrity_findings(session: Session, findings: Sequence[Any]) -> int:
    """Enqueue ``integrity.findings`` for the admins in ``session``'s transaction.

    Nothing when ``findings`` is empty (a check that found nothing new is no news).
    """
    if not findings:
        return 0
    return enqueue_admins(session, integrity_event(findings))


# ------------------------------------------------------------------ written right away


def _write(settings: Settings, what: str, write: Any) -> int:
    """Run ``write(conn)`` in a short transaction of its own; never raise (log and return 0)."""
    try:
        with get_engine(settings).begin() as conn:
            if not outbox_ready(conn):
                return 0
            return int(write(conn))
    except Exception as exc:
        log.warning("could not enqueue the %s notification (%s)", what, type(exc).__name__)
        return 0


def _account_id(name: str) -> int | None:
    """The account id in a breaker's name (``binance:7``); None for a public one."""
    tail = name.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def breaker_event(name: str, kind: str, details: dict[str, Any]) -> Event:
    """The event of breaker ``name`` opening (``kind`` "opened") or closing ("closed")."""
    since = details.get("opened_at")
    opened = datetime.fromtimestamp(float(since), tz=UTC) if since is not None else utcnow()
    exchange = name.rsplit(":", 1)[0]
    data = {
        "breaker": name,
        "exchange": exchange,
        "accountId": _account_id(name),
        "openedAt": opened.isoformat(),
        "failures": details.get("failures"),
        "lastError": details.get("last_error"),
    }
    key = f"breaker:{name}:{int(opened.timestamp() * 1000)}:{kind}"
    if kind == "opened":
        return Event(
            type=EventType.CIRCUIT_BREAKER_OPENED,
            key=key,
            title=f"Circuit breaker of {name} OPEN",
            text=f"{details.get('failures')} consecutive failures reaching {exchange} "
            f"(account {name}); its calls fail fast until a probe succeeds. "
            f"Last error: {details.get('last_error')}",
            at=opened,
            data=data,
        )
    return Event(
        type=EventType.CIRCUIT_BREAKER_CLOSED,
        key=key,
        title=f"Circuit breaker of {name} closed",
        text=f"{exchange} (account {name}) answers again; the circuit opened at "
        f"{opened:%Y-%m-%d %H:%M:%S} UTC is closed.",
        at=utcnow(),
        data=data,
    )


def auth_failed_event(name: str, error: str | None, now: datetime | None = None) -> Event:
    """The event of account ``name``'s credentials refused by its exchange."""
    at = now or utcnow()
    exchange = name.rsplit(":", 1)[0]
    return Event(
        type=EventType.EXCHANGE_AUTH_FAILED,
        key=f"auth_failed:{name}:{at:%Y%m%d%H}",
        title=f"{exchange} refused the credentials of account {name}",
        text=f"{exchange} answered an authentication error to account {name} ({error}). "
        "Check the API key (expired, revoked, IP allow-list, permissions).",
        at=at,
        data={
            "account": name,
            "exchange": exchange,
            "accountId": _account_id(name),
            "error": error,
        },
    )


def _breaker_users(conn: Connection, name: str) -> list[int]:
    """Admins, and the owners of the bots trading on the breaker's account."""
    users = set(admin_ids(conn))
    account = _account_id(name)
    if account is not None:
        users.update(
            conn.execute(select(Bot.user_id).where(Bot.exchange_account_id == account)).scalars()
        )
    return sorted(users)


def _account_owner(conn: Connection, name: str) -> list[int]:
    account = _account_id(name)
    if account is None:
        return []
    owner = conn.execute(
        select(ExchangeAccount.user_id).where(ExchangeAccount.id == account)
    ).scalar()
    return [] if owner is None else [int(owner)]


def exchange_alert(settings: Settings, name: str, kind: str, details: dict[str, Any]) -> int:
    """Enqueue what breaker ``name`` told (``opened``, ``closed``, ``auth_failed``) right away.

    Returns the rows written; never raises.
    """
    if kind in ("opened", "closed"):
        ev = breaker_event(name, kind, details)
        return _write(
            settings,
            ev.type.value,
            lambda conn: enqueue_many(conn, [(u, ev) for u in _breaker_users(conn, name)]),
        )
    if kind == "auth_failed":
        at = details.get("at")
        when = datetime.fromtimestamp(float(at), tz=UTC) if at is not None else None
        auth = auth_failed_event(name, details.get("error"), when)
        return _write(
            settings,
            auth.type.value,
            lambda conn: enqueue_many(conn, [(u, auth) for u in _account_owner(conn, name)]),
        )
    return 0


class ExchangeAlerts:
    """The listener of this process's circuit breakers: writes their alerts off the caller's
    thread (a breaker is told inside a bot's exchange call; trading must not wait on it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-alerts")
        self._pending: list[Future[int]] = []
        self._written = 0  # rows of the alerts done since the last flush
        self._lock = threading.Lock()

    def __call__(self, name: str, kind: str, details: dict[str, Any]) -> None:
        """Queue the alert (the breaker's listener signature)."""
        future = self._pool.submit(exchange_alert, self.settings, name, kind, dict(details))
        with self._lock:
            done = [f for f in self._pending if f.done()]
            self._written += sum(f.result() for f in done)  # exchange_alert never raises
            self._pending = [f for f in self._pending if not f.done()] + [future]

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for the queued alerts; return the rows written since the last flush."""
        with self._lock:
            pending, self._pending = self._pending, []
            written, self._written = self._written, 0
        return written + sum(f.result(timeout=timeout_s) for f in pending)


_alerts_lock = threading.Lock()
_alerts: ExchangeAlerts | None = None


def install_exchange_alerts(settings: Settings) -> ExchangeAlerts:
    """Make this process's circuit breakers enqueue their alerts into ``settings``' database.

    Idempotent per database; call it in each process that trades (the bot actors).
    """
    global _alerts  # noqa: PLW0603 (one listener per process, like the breakers' registry)
    with _alerts_lock:
        if _alerts is None or _alerts.settings.database_url != settings.database_url:
            _alerts = ExchangeAlerts(settings)
            registry.set_listener(_alerts)
        return _alerts


def uninstall_exchange_alerts() -> None:
    """Stop telling breaker transitions (tests)."""
    global _alerts  # noqa: PLW0603
    with _alerts_lock:
        registry.set_listener(None)
        if _alerts is not None:
            _alerts.flush()
        _alerts = None


def reconciliation_event(
    bot_id: int, bot_name: str | None, found: Sequence[dict[str, Any]], at: datetime
) -> Event:
    """The event of a reconciliation that found ``found`` (one dict per order that differed:
    ``clientOrderId``, ``stored`` and ``exchange`` status, ``missedFills``, ``kind``)."""
    orders = len(found)
    fills = sum(int(d.get("missedFills") or 0) for d in found)
    changed = sum(1 for d in found if d.get("kind") == "status")
    canceled = sum(1 for d in found if d.get("kind") == "unknown")
    digest = hashlib.sha256(
        json.dumps(
            sorted(found, key=lambda d: str(d.get("clientOrderId"))), sort_keys=True
        ).encode()
    ).hexdigest()[:24]
    who = bot_name or f"bot {bot_id}"
    return Event(
        type=EventType.RECONCILIATION_DISCREPANCY,
        key=f"reconcile:{bot_id}:{digest}",
        title=f"{who}: reconciliation found {orders} order(s) different from the exchange",
        text=f"{who} restarted and compared its open orders with the exchange: {changed} "
        f"changed status, {fills} fill(s) were missing and are now recorded, {canceled} "
        "never reached the exchange and were canceled.",
        at=at,
        data={
            "botId": bot_id,
            "orders": orders,
            "statusChanged": changed,
            "missedFills": fills,
            "unknownToExchange": canceled,
            "details": list(found)[:50],
        },
    )


def notify_reconciliation(settings: Settings, bot_id: int, found: Sequence[dict[str, Any]]) -> int:
    """Enqueue ``reconciliation.discrepancy`` for ``bot_id``'s owner right away (nothing when
    ``found`` is empty); return the rows written, never raise."""
    if not found:
        return 0

    def write(conn: Connection) -> int:
        row = conn.execute(select(Bot.user_id, Bot.name).where(Bot.id == bot_id)).first()
        if row is None:
            return 0
        ev = reconciliation_event(bot_id, row.name, found, utcnow())
        return enqueue_many(conn, [(int(row.user_id), ev)])

    return _write(settings, EventType.RECONCILIATION_DISCREPANCY.value, write)


def risk_actor_restarted_event(incarnation: str, at: datetime | None = None) -> Event:
    """The event of the risk actor's incarnation ``incarnation`` starting after a crash."""
    now = at or utcnow()
    return Event(
        type=EventType.RISK_ACTOR_RESTARTED,
        key=f"risk_actor_restart:{incarnation}"[:120],
        title="The risk actor restarted",
        text="The risk actor was restarted after a failure and reloaded its state from the "
        "database; orders were denied while it was away.",
        at=now,
        data={"incarnation": incarnation},
    )


def notify_risk_actor_restarted(settings: Settings, incarnation: str) -> int:
    """Enqueue ``risk_actor.restarted`` for the admins right away; return rows, never raise.

    ``incarnation`` names this incarnation (the actor's id and its start time): one row per
    restart, however often it is called within one.
    """
    ev = risk_actor_restarted_event(incarnation)
    return _write(settings, ev.type.value, lambda conn: enqueue_admins(conn, ev))

"""The risk actor: one named, detached Ray actor that approves every order of every bot.

A thin shell around :class:`~cryptoorchestrator.platform.risk.manager.RiskManager`:

* ``approve`` does no I/O, so it answers in well under a millisecond inside the actor; bots wait
  for it with a timeout and deny their own order when it is late or unreachable (fail closed).
  Each decision is counted in the process's telemetry (``cluster.metrics``): its outcome, the
  limit that denied it and how long the check took.
* Limits and risk events are persisted; after a restart the actor rebuilds exposure, equity and
  open orders from the database before it approves anything (until then it denies).
* A breach halts the affected bots: their status becomes Stopped with the limit as the reason,
  the event is stored, and their actors are told to stop.  The kill switch stops every bot,
  cancelling open orders and optionally flattening positions; each halted bot gets a risk event
  (stored, and pushed to ``/ws/bots`` through the event bus), and its actor is removed so its
  process frees its memory.  While a switch is engaged, ``cluster.bots.start_bot`` refuses to
  start the bots it covers (:meth:`RiskActor.kill_switch_state`).
* Each bot is registered with its owner, so a user's own limits and kill switch (scope
  ``user:<id>``) apply to that user's bots only; the portfolio's (global) ones to every bot.
  Who may pull which switch is the API's decision (only operators the global one).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import ray

from cryptoorchestrator.cluster.events import get_event_bus
from cryptoorchestrator.cluster.handles import RISK_ACTOR_NAME, find_bot_actor, group_of
from cryptoorchestrator.cluster.metrics import process_telemetry
from cryptoorchestrator.cluster.runtime import NAMESPACE
from cryptoorchestrator.platform.batching import Coalescer
from cryptoorchestrator.platform.bots.status import set_bot_status
from cryptoorchestrator.platform.model import BotStatus, OrderSide
from cryptoorchestrator.platform.notify.outbox import install_outbox
from cryptoorchestrator.platform.notify.system import notify_risk_actor_restarted
from cryptoorchestrator.platform.risk import store
from cryptoorchestrator.platform.risk.limits import (
    Breach,
    OrderCheck,
    RiskDecision,
    RiskLimits,
    UserRiskLimits,
)
from cryptoorchestrator.platform.risk.line import LineClient, LineError, LineServer
from cryptoorchestrator.platform.risk.manager import RiskManager
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope

log = logging.getLogger("cryptoorchestrator.risk")


def check_to_dict(check: OrderCheck) -> dict[str, Any]:
    """Serialise an order check for the actor call (decimals as strings).

    Field by field: ``dataclasses.asdict`` deep-copies every value, on the way to every
    approval.
    """
    return {
        "bot_id": check.bot_id,
        "client_order_id": check.client_order_id,
        "symbol": check.symbol,
        "side": check.side.value,
        "amount": str(check.amount),
        "price": str(check.price),
        "reduce_only": check.reduce_only,
        "stop_price": None if check.stop_price is None else str(check.stop_price),
        "equity": None if check.equity is None else str(check.equity),
        "position_notional": (
            None if check.position_notional is None else str(check.position_notional)
        ),
        "fee_rate": None if check.fee_rate is None else str(check.fee_rate),
    }


def check_from_dict(data: dict[str, Any]) -> OrderCheck:
    """Rebuild an order check sent by :func:`check_to_dict`."""
    return OrderCheck(
        bot_id=int(data["bot_id"]),
        client_order_id=str(data["client_order_id"]),
        symbol=str(data["symbol"]),
        side=OrderSide(data["side"]),
        amount=Decimal(data["amount"]),
        price=Decimal(data["price"]),
        reduce_only=bool(data.get("reduce_only", False)),
        stop_price=Decimal(data["stop_price"]) if data.get("stop_price") else None,
        equity=Decimal(data["equity"]) if data.get("equity") else None,
        position_notional=(
            Decimal(data["position_notional"])
            if data.get("position_notional") is not None
            else None
        ),
        fee_rate=Decimal(data["fee_rate"]) if data.get("fee_rate") is not None else None,
    )


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RiskActor:
    """Portfolio-wide risk gate (see the module docstring)."""

    def __init__(self, settings_data: dict[str, Any]) -> None:
        # Never raise here: an exception in __init__ during a restart kills the actor for good.
        self._settings = Settings(**settings_data)
        # Risk events (breaches, kill switches) and the status changes they cause are written
        # with their notifications, in one transaction (the transactional outbox).
        install_outbox()
        self._tell_if_restarted()
        self._manager = RiskManager()
        self._ready = False
        self._load_error: str | None = None
        self._line: LineServer | None = None
        self._line_token = secrets.token_urlsafe(24)
        self._line_lock = asyncio.Lock()  # bound to the actor's loop on first use
        self._try_load()

    def _tell_if_restarted(self) -> None:
        """Tell the admins that Ray restarted this actor (one outbox row per incarnation).

        Written from a thread of its own: a database that is slow to answer must not hold up
        the constructor (the approvals wait for it).
        """
        try:
            context = ray.get_runtime_context()
            if not context.was_current_actor_reconstructed:
                return
            incarnation = f"{context.get_actor_id()}:{time.time_ns() // 1_000_000}"
        except Exception:  # not in an actor (tests build it bare)
            return
        threading.Thread(
            target=notify_risk_actor_restarted,
            args=(self._settings, incarnation),
            name="risk-restart-alert",
            daemon=True,
        ).start()

    def _try_load(self) -> bool:
        try:
            with session_scope(self._settings) as session:
                store.rebuild(session, self._manager)
        except Exception as exc:  # degraded: deny everything until the database answers
            self._load_error = f"{type(exc).__name__}: {exc}"
            log.exception("risk actor could not load its state")
            return False
        self._ready, self._load_error = True, None
        return True

    async def ping(self) -> dict[str, Any]:
        """Report readiness for the health routes."""
        return {"ready": self._ready, "error": self._load_error}

    async def approve(self, check: dict[str, Any]) -> dict[str, Any]:
        """Approve or deny one order (no I/O on this path)."""
        return self._decide([check])[0]

    async def approve_many(self, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Approve or deny orders in the order given, each seeing the ones approved before it.

        The orders of a group's bots on one candle arrive as one call (see
        :class:`RiskClient`): one message and one wake-up of this actor instead of one each.
        """
        return self._decide(checks)

    async def line(self) -> dict[str, Any]:
        """Return the address and token of this actor's approval line, opening it on first ask.

        Bot processes send their approvals over it (:class:`RiskClient`): a socket read by this
        actor's event loop, which answers a batch in a fraction of a Ray call's round trip (see
        :mod:`~cryptoorchestrator.platform.risk.line`).  The token is this incarnation's: a
        restarted actor has a new line and a new token, which clients fetch here again.
        """
        async with self._line_lock:
            if self._line is None:
                server = LineServer(self._decide, self._line_token)
                # The node's address, not loopback: bots on other nodes use the line too.
                await server.start(ray.util.get_node_ip_address())
                self._line = server
        return {"host": self._line.host, "port": self._line.port, "token": self._line_token}

    def _decide(self, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide ``checks`` in order on this actor's loop (Ray calls and the line alike)."""
        if not self._ready and not self._try_load():
            denied = RiskDecision.deny(
                "risk_unavailable", f"risk state not loaded: {self._load_error}"
            )
            decisions = [denied] * len(checks)
        else:
            decisions = []
            telemetry = process_telemetry()
            for c in checks:
                began = time.perf_counter()
                decision = self._manager.approve(check_from_dict(c))
                decisions.append(decision)
                telemetry.risk_decision(
                    None if decision.approved else (decision.limit or "unknown"),
                    time.perf_counter() - began,
                )
        return [{"approved": d.approved, "reason": d.reason, "limit": d.limit} for d in decisions]

    async def register_bot(
        self,
        bot_id: int,
        equity: str,
        max_position_pct: str,
        risk_per_trade_pct: str,
        positions: dict[str, str] | None = None,
        open_orders: list[str] | None = None,
        user_id: int | None = None,
    ) -> None:
        """Start tracking a bot, or re-arm it after a user restarted it.

        The owner (``user_id``) is read from the database when not given: their own limits and
        kill switch must apply, so a bot whose owner cannot be read is not registered (its
        orders stay denied as unknown).
        """
        if user_id is None:
            user_id = await asyncio.to_thread(self._owner_of, bot_id)
        self._manager.register_bot(
            bot_id,
            equity=Decimal(equity),
            max_position_pct=Decimal(max_position_pct),
            risk_per_trade_pct=Decimal(risk_per_trade_pct),
            positions={k: Decimal(v) for k, v in (positions or {}).items()},
            open_orders=set(open_orders or ()),
            user_id=user_id,
        )

    def _owner_of(self, bot_id: int) -> int:
        from sqlalchemy import select

        from cryptoorchestrator.platform.storage.models import Bot

        with session_scope(self._settings) as session:
            owner = session.scalar(select(Bot.user_id).where(Bot.id == bot_id))
        if owner is None:
            raise LookupError(f"bot {bot_id} does not exist")
        return int(owner)

    async def unregister_bot(self, bot_id: int) -> None:
        """Stop tracking a bot."""
        self._manager.unregister_bot(bot_id)

    async def order_closed(self, bot_id: int, client_order_id: str) -> None:
        """Release an order's open-order slot."""
        self._manager.order_closed(bot_id, client_order_id)

    async def update_position(self, bot_id: int, symbol: str, signed_notional: str) -> None:
        """Record a bot's position at mark."""
        self._manager.update_position(bot_id, symbol, Decimal(signed_notional))

    async def report(
        self,
        bot_id: int,
        symbol: str,
        signed_notional: str,
        equity: str,
        closed_orders: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Take a bot's end-of-candle report (one call instead of three); return the breaches.

        Releases the slots of the bot's orders that became final, records its position at mark
        and its equity, and acts on any breach as :meth:`update_equity` does.
        """
        return (await self.report_many([(bot_id, symbol, signed_notional, equity, closed_orders)]))[
            0
        ]

    async def report_many(
        self, reports: list[tuple[int, str, str, str, list[str] | None]]
    ) -> list[list[dict[str, Any]]]:
        """Take several bots' end-of-candle reports at once; return each report's breaches.

        Each item is ``(bot_id, symbol, signed_notional, equity, closed_orders)`` as in
        :meth:`report`.  The breaches of the whole batch are acted on together.
        """
        per_report = [
            self._manager.report(
                int(bot_id), symbol, Decimal(notional), Decimal(equity), closed or ()
            )
            for bot_id, symbol, notional, equity, closed in reports
        ]
        breaches = [b for found in per_report for b in found]
        if breaches:
            await self._handle_breaches(breaches)
        return [[asdict(b) for b in found] for found in per_report]

    async def update_equity(self, bot_id: int, equity: str) -> list[dict[str, Any]]:
        """Record a bot's equity; persist and act on any breach; return the breaches."""
        breaches = self._manager.update_equity(bot_id, Decimal(equity))
        if breaches:
            await self._handle_breaches(breaches)
        return [asdict(b) for b in breaches]

    async def _handle_breaches(self, breaches: list[Breach]) -> None:
        affected: set[int] = set()
        with session_scope(self._settings) as session:
            for breach in breaches:
                store.record_breach(session, breach)
                targets = [breach.bot_id] if breach.bot_id is not None else list(self._manager.bots)
                for bot_id in targets:
                    set_bot_status(
                        session,
                        bot_id,
                        BotStatus.STOPPED,
                        f"risk limit breached: {breach.limit}: {breach.message}",
                        desired_state="stopped",
                        log_dir=self._settings.log_dir,
                    )
                    affected.add(bot_id)
        _publish_risk_events(
            [
                _risk_event(b.bot_id, "breach", b.limit, b.message)
                for b in breaches
                if b.bot_id is not None
            ]
        )
        await self._stop_bots(affected, reason="risk limit breached", flatten=False)

    async def _stop_bots(
        self, bot_ids: set[int], *, reason: str, flatten: bool, remove: bool = False
    ) -> list[int]:
        """Halt the actors of ``bot_ids``; with ``remove``, then remove them (see below)."""
        stopped: list[int] = []
        calls: list[Any] = []
        for bot_id in bot_ids:
            handle = find_bot_actor(bot_id, self._settings)
            if handle is None:
                continue  # not running in this cluster: the database status already says Stopped
            calls.append(handle.halt.remote(reason, flatten, bot_id=bot_id))
            stopped.append(bot_id)
        if calls:
            # Bounded wait: a hung bot must not hang the risk actor.
            try:
                await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=10)
            except TimeoutError:
                log.warning("bots did not confirm the halt within 10 s", extra={"bots": stopped})
        if remove and stopped:
            await self._remove_actors(stopped)
        return stopped

    async def _remove_actors(self, bot_ids: list[int]) -> None:
        """Remove the processes of halted bots: an idle bot process still holds its memory.

        A bot with a process of its own has it killed; a grouped bot leaves its group's
        process, which is killed once it hosts no bot.  A later start creates a fresh actor.
        """
        for bot_id in bot_ids:
            handle = find_bot_actor(bot_id, self._settings)
            if handle is None:
                continue
            remaining: list[int] = []
            try:
                grouped = await asyncio.to_thread(group_of, self._settings, bot_id) is not None
                if grouped:
                    remaining = await asyncio.wait_for(handle.release.remote(bot_id), timeout=10)
            except Exception:  # a dead or hung actor is killed all the same
                log.warning("bot %s did not leave its process cleanly", bot_id)
            if not remaining:
                try:
                    ray.kill(handle, no_restart=True)
                except Exception:
                    log.warning("could not remove the actor of bot %s", bot_id)

    async def get_limits(self) -> dict[str, Any]:
        """Return the current limits."""
        return self._manager.limits.to_public()

    async def set_limits(
        self, limits: dict[str, Any], user_id: int | None = None
    ) -> dict[str, Any]:
        """Validate, persist and apply new limits; return them."""
        merged = {**self._manager.limits.model_dump(), **limits}
        new = RiskLimits(**merged)
        with session_scope(self._settings) as session:
            store.save_limits(session, new, user_id=user_id)
        self._manager.set_limits(new)
        return new.to_public()

    async def get_user_limits(self, owner_id: int) -> dict[str, Any]:
        """Return ``owner_id``'s own limits (unset ones as null) and kill switch."""
        return self._manager.limits_for_user(owner_id).to_public()

    async def set_user_limits(
        self, owner_id: int, limits: dict[str, Any], user_id: int | None = None
    ) -> dict[str, Any]:
        """Validate, persist and apply ``owner_id``'s own limits (``None`` unsets one).

        ``user_id`` is who asked (the owner, or an operator); the kill switch has its own calls.
        """
        current = self._manager.limits_for_user(owner_id).model_dump()
        changes = {k: v for k, v in limits.items() if k != "kill_switch"}
        new = UserRiskLimits(**{**current, **changes})
        with session_scope(self._settings) as session:
            store.save_user_limits(session, owner_id, new, user_id=user_id)
        self._manager.set_user_limits(owner_id, new)
        return new.to_public()

    async def kill_switch(
        self, flatten: bool = False, user_id: int | None = None
    ) -> dict[str, Any]:
        """Stop all trading: deny every order, stop every bot, cancel (and maybe flatten)."""
        self._manager.activate_kill_switch()
        with session_scope(self._settings) as session:
            store.save_limits(session, self._manager.limits, user_id=user_id)
            store.record_event(
                session,
                "kill_switch",
                "kill switch activated",
                details={"flatten": flatten, "user_id": user_id, "scope": "global"},
            )
            bot_ids = set(self._manager.bots) | set(_running_bot_ids(session))
            details = {"flatten": flatten, "user_id": user_id, "scope": "global"}
            for bot_id in sorted(bot_ids):
                # One event per bot: each owner sees why their bot stopped at /api/risk/events.
                store.record_event(
                    session,
                    "kill_switch",
                    "kill switch activated",
                    bot_id=bot_id,
                    limit_name="kill_switch",
                    details=details,
                )
                set_bot_status(
                    session,
                    bot_id,
                    BotStatus.STOPPED,
                    "kill switch activated",
                    desired_state="stopped",
                    log_dir=self._settings.log_dir,
                )
        _publish_risk_events(
            [
                _risk_event(b, "kill_switch", "kill_switch", "kill switch activated")
                for b in sorted(bot_ids)
            ]
        )
        stopped = await self._stop_bots(
            bot_ids, reason="kill switch activated", flatten=flatten, remove=True
        )
        return {"kill_switch": True, "bots_stopped": sorted(bot_ids), "actors_halted": stopped}

    async def user_kill_switch(
        self, owner_id: int, flatten: bool = False, user_id: int | None = None
    ) -> dict[str, Any]:
        """Stop ``owner_id``'s trading only: deny their orders, stop (and maybe flatten) their bots.

        Every other user's bots keep trading.  Each stopped bot gets a risk event, so the owner
        sees it among their bots' events.
        """
        self._manager.activate_user_kill_switch(owner_id)
        reason = "kill switch activated by its owner"
        with session_scope(self._settings) as session:
            store.save_user_limits(
                session, owner_id, self._manager.limits_for_user(owner_id), user_id=user_id
            )
            bot_ids = set(self._manager.bots_of(owner_id)) | set(
                _running_bot_ids(session, owner_id)
            )
            details = {"flatten": flatten, "user_id": user_id, "scope": f"user:{owner_id}"}
            for bot_id in sorted(bot_ids):
                store.record_event(
                    session,
                    "kill_switch",
                    reason,
                    bot_id=bot_id,
                    limit_name="user_kill_switch",
                    details=details,
                )
                set_bot_status(
                    session,
                    bot_id,
                    BotStatus.STOPPED,
                    reason,
                    desired_state="stopped",
                    log_dir=self._settings.log_dir,
                )
            if not bot_ids:
                store.record_event(
                    session, "kill_switch", reason, limit_name="user_kill_switch", details=details
                )
        _publish_risk_events(
            [_risk_event(b, "kill_switch", "user_kill_switch", reason) for b in sorted(bot_ids)]
        )
        stopped = await self._stop_bots(bot_ids, reason=reason, flatten=flatten, remove=True)
        return {
            "kill_switch": True,
            "scope": "user",
            "bots_stopped": sorted(bot_ids),
            "actors_halted": stopped,
        }

    async def release_kill_switch(self, user_id: int | None = None) -> dict[str, Any]:
        """Release the global kill switch: orders are checked again (stopped bots stay stopped).

        ``user_id`` is the operator who released it.
        """
        new = self._manager.limits.model_copy(update={"kill_switch": False})
        with session_scope(self._settings) as session:
            store.save_limits(session, new, user_id=user_id)
            store.record_event(
                session,
                "kill_switch_released",
                "kill switch released",
                details={"user_id": user_id, "scope": "global"},
            )
        self._manager.set_limits(new)
        return {"kill_switch": False, "scope": "global"}

    async def release_user_kill_switch(
        self, owner_id: int, user_id: int | None = None
    ) -> dict[str, Any]:
        """Release ``owner_id``'s kill switch; their bots trade again once started."""
        new = self._manager.limits_for_user(owner_id).model_copy(update={"kill_switch": False})
        with session_scope(self._settings) as session:
            store.save_user_limits(session, owner_id, new, user_id=user_id)
            store.record_event(
                session,
                "kill_switch_released",
                "kill switch released by its owner",
                limit_name="user_kill_switch",
                details={"user_id": user_id, "scope": f"user:{owner_id}"},
            )
        self._manager.set_user_limits(owner_id, new)
        return {"kill_switch": False, "scope": "user"}

    async def kill_switch_state(self, user_id: int | None = None) -> dict[str, Any]:
        """Return which kill switches are engaged.

        Parameters
        ----------
        user_id
            A user whose own switch to report under ``user`` (False when not given).

        Returns
        -------
        dict[str, Any]
            ``global`` (the portfolio's switch), ``users`` (how many users' own switches are
            engaged), ``user_ids`` (whose) and ``user`` (``user_id``'s own).
        """
        engaged = sorted(uid for uid, mine in self._manager.user_limits.items() if mine.kill_switch)
        return {
            "global": bool(self._manager.limits.kill_switch),
            "users": len(engaged),
            "user_ids": engaged,
            "user": user_id is not None and user_id in engaged,
        }

    async def utilisation(self, user_id: int | None = None) -> dict[str, Any]:
        """Return limit utilisation for ``GET /api/analytics/risk``.

        With ``user_id``: only that user's bots (what a trader may see); without: the whole
        portfolio (operators).
        """
        if user_id is None:
            return {"ready": self._ready, **self._manager.utilisation()}
        return {"ready": self._ready, **self._manager.user_utilisation(user_id)}


def _risk_event(bot_id: int, kind: str, limit: str | None, reason: str) -> dict[str, Any]:
    """Return the ``/ws/bots`` message telling a bot's owner why risk stopped it."""
    return {"type": "risk", "botId": bot_id, "kind": kind, "limit": limit, "reason": reason}


def _publish_risk_events(events: list[dict[str, Any]]) -> None:
    """Send ``events`` to the event bus without waiting (the database keeps the record)."""
    if not events:
        return
    try:
        get_event_bus().publish_many.remote(events)
    except Exception:  # best effort, as every bot event: the stored risk event stays
        log.warning("could not publish %d risk events", len(events))


def _running_bot_ids(session: Any, user_id: int | None = None) -> list[int]:
    from sqlalchemy import select

    from cryptoorchestrator.platform.storage.models import Bot

    query = select(Bot.id).where(Bot.desired_state == "running")
    if user_id is not None:
        query = query.where(Bot.user_id == user_id)
    return list(session.scalars(query).all())


def settings_payload(settings: Settings) -> dict[str, Any]:
    """Return what an actor needs to rebuild the driver's settings in its own process."""
    return {
        "database_url": settings.database_url,
        "log_dir": str(settings.log_dir.resolve()),
        "data_dir": str(settings.data_dir.resolve()),
        "var_dir": str(settings.var_dir.resolve()),
        "secret_key": settings.resolved_secret_key(),
        # Registration is per process: bot actors and job workers load the operator's
        # strategies themselves (directories resolved here, against the driver's directory).
        "strategy_paths": [
            str(Path(p).resolve()) if Path(p).exists() else p for p in settings.strategy_paths
        ],
        # Bot actors check their accounts' apiUrl against the driver's rule before connecting.
        "allowed_api_hosts": list(settings.allowed_api_hosts),
        "exchange_endpoints": dict(settings.exchange_endpoints),
        # Bot processes share the driver's request budget settings (cluster/budget_actor.py).
        "exchange_budget": settings.exchange_budget.model_dump(),
    }


def get_risk_actor(settings: Settings) -> Any:
    """Return the handle of the risk actor, creating it (detached) if it does not exist."""
    return RiskActor.options(  # type: ignore[attr-defined]
        name=RISK_ACTOR_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings_payload(settings))


#: Seconds between attempts to open a line after one failed (Ray carries approvals meanwhile).
LINE_RETRY_S = 1.0


class RiskClient:
    """A bot process's line to the risk actor: its bots' calls batched, failures closed.

    The bots of a group act on the same candle together; their approvals (and their end-of-candle
    reports) each go out as one batch through a
    :class:`~cryptoorchestrator.platform.batching.Coalescer`.  Fifty bots asking one by one queued
    fifty messages at the actor per candle, and the last approval waited for all of them; five
    batches are five.  Approvals travel over the actor's direct line (:meth:`RiskActor.line`, a
    socket per process and event loop) when it can be opened, and as a Ray call otherwise; reports
    always go through Ray.  A bot still gets its own answer; a late or failed batch denies each of
    its orders.  A line that breaks under a batch is not retried through Ray (the actor may already
    have counted those orders), and one that answers too late is dropped (it may be stuck).

    A batch waits as long as its most impatient bot's timeout (a group's bots share one): one
    timer per batch instead of a task per bot, whose extra loop hop each of 25 bots paid.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._approve: Coalescer[tuple[OrderCheck, float], RiskDecision] = Coalescer(
            self._approve_many
        )
        self._report: Coalescer[tuple[int, str, str, str, list[str]], list[dict[str, Any]]] = (
            Coalescer(self._report_many)
        )
        # Per event loop: a connection belongs to the loop that opened it.
        self._lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LineSlot] = (
            weakref.WeakKeyDictionary()
        )
        self.line_batches = 0  # batches answered over the line (for tests and benchmarks)

    async def _approve_many(self, items: list[tuple[OrderCheck, float]]) -> list[RiskDecision]:
        timeout_s = min(t for _, t in items)
        used: list[LineClient] = []

        async def ask() -> list[dict[str, Any]]:
            payload = [check_to_dict(c) for c, _ in items]
            line = await self._line()
            if line is None:
                answers: list[dict[str, Any]] = await self.handle.approve_many.remote(payload)
                return answers
            used.append(line)
            answers = await line.call(payload)
            self.line_batches += 1
            return answers

        try:
            # A deadline on this task, not wait_for's task around ask(): two loop hops fewer.
            async with asyncio.timeout(timeout_s):
                answers = await ask()
        except TimeoutError:
            for line in used:
                await line.close()  # this late, it may be stuck: the next batch opens another
            return [_late(timeout_s)] * len(items)
        except Exception as exc:  # RayActorError, RayTaskError, a broken line: all mean "no"
            return [_unreachable(exc)] * len(items)
        return [_decision(a) for a in answers]

    async def open_line(self) -> bool:
        """Open this loop's approval line ahead of the first order; return whether it is open.

        Opening costs a Ray call and a connection, which the first approval would otherwise
        wait for.  Failing is harmless: approvals go through Ray.
        """
        return await self._line() is not None

    async def _line(self) -> LineClient | None:
        """Return this loop's open line to the actor, opening one if allowed; None: use Ray."""
        loop = asyncio.get_running_loop()
        slot = self._lines.get(loop)
        if slot is None:
            slot = self._lines[loop] = _LineSlot()
        if slot.client is not None and not slot.client.closed:
            return slot.client
        async with slot.lock:  # one opening at a time: concurrent batches share it
            if slot.client is not None and not slot.client.closed:
                return slot.client
            if time.monotonic() < slot.retry_at:
                return None
            try:
                address = await asyncio.wait_for(self.handle.line.remote(), LINE_RETRY_S * 2)
                slot.client = await LineClient.connect(
                    address["host"], int(address["port"]), address["token"]
                )
            except (LineError, TimeoutError, AttributeError, ray.exceptions.RayError) as exc:
                # An actor without a line (an older version), a restart in progress, a
                # firewall between nodes: approvals go through Ray until the next attempt.
                slot.client, slot.retry_at = None, time.monotonic() + LINE_RETRY_S
                log.info("risk line unavailable, approvals go through Ray: %s", exc)
                return None
            return slot.client

    async def _report_many(
        self, reports: list[tuple[int, str, str, str, list[str]]]
    ) -> list[list[dict[str, Any]]]:
        result: list[list[dict[str, Any]]] = await self.handle.report_many.remote(reports)
        return result

    async def approve(self, check: OrderCheck, timeout_s: float = 2.0) -> RiskDecision:
        """Ask about ``check``; deny when the actor is slow or unreachable (fail closed)."""
        try:
            return await self._approve((check, timeout_s))
        except Exception as exc:  # the batch itself failed: still "no"
            return _unreachable(exc)

    async def report(
        self, bot_id: int, symbol: str, signed_notional: str, equity: str, closed: list[str]
    ) -> list[dict[str, Any]]:
        """Send a bot's end-of-candle report; return the breaches found (see ``report``)."""
        return await self._report((bot_id, symbol, signed_notional, equity, closed))


class _LineSlot:
    """One event loop's line: the open client, the lock that opens it, when to try again."""

    __slots__ = ("client", "lock", "retry_at")

    def __init__(self) -> None:
        self.client: LineClient | None = None
        self.lock = asyncio.Lock()
        self.retry_at = 0.0


_clients: dict[Any, RiskClient] = {}


def risk_client(handle: Any) -> RiskClient:
    """Return the process's batching client of the risk actor behind ``handle``."""
    key = handle._actor_id.hex()  # noqa: SLF001 (the one stable identity of a handle)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = RiskClient(handle)
    return client


def _decision(answer: dict[str, Any]) -> RiskDecision:
    """Rebuild a decision from the actor's answer."""
    return RiskDecision(bool(answer["approved"]), str(answer["reason"]), answer.get("limit"))


async def _fail_closed(asked: Awaitable[RiskDecision], timeout_s: float) -> RiskDecision:
    """Await a decision; a late or failed answer is a denial."""
    try:
        return await asyncio.wait_for(asked, timeout_s)
    except TimeoutError:
        return _late(timeout_s)
    except Exception as exc:  # RayActorError, RayTaskError, connection loss: all mean "no"
        return _unreachable(exc)


def _late(timeout_s: float) -> RiskDecision:
    return RiskDecision.deny("risk_timeout", f"risk actor did not answer within {timeout_s} s")


def _unreachable(exc: BaseException) -> RiskDecision:
    return RiskDecision.deny("risk_unavailable", f"risk actor unreachable: {type(exc).__name__}")


async def request_approval(handle: Any, check: OrderCheck, timeout_s: float = 2.0) -> RiskDecision:
    """Ask the risk actor about ``check`` in a call of its own; deny when it is slow or unreachable.

    Bot processes use :class:`RiskClient`, which batches their calls and fails closed the same way.
    """

    async def ask() -> RiskDecision:
        return _decision(await handle.approve.remote(check_to_dict(check)))

    return await _fail_closed(ask(), timeout_s)

"""The cluster as the API sees it: bots, the risk actor and jobs, behind one object.

It satisfies ``api.facade.ClusterFacade`` (structurally; this module does not import the API).
Every method talks to Ray through the handles of named actors, so several API replicas drive the
same cluster.  Bot events published by actors reach the API's WebSocket hub through
:meth:`RayCluster.relay_events`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from cryptoorchestrator.cluster import bots as bot_control
from cryptoorchestrator.cluster import jobs
from cryptoorchestrator.cluster.bot_actor import find_bot_actor
from cryptoorchestrator.cluster.events import get_event_bus
from cryptoorchestrator.cluster.risk_actor import get_risk_actor
from cryptoorchestrator.cluster.runtime import ensure_ray, ray_status
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.risk.limits import RiskLimits
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot

log = logging.getLogger("cryptoorchestrator.cluster")


def parse_limits(items: list[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """Turn ``[{"scope": "portfolio", "name": ..., "value": ...}]`` (or a plain mapping of
    name -> value) into validated portfolio limits.

    Raises
    ------
    InvalidInputError
        For an unknown limit, a value out of range, or a per-bot scope (those are the bot's own
        ``riskPerTrade`` and ``maxPositionSize``).
    """
    if isinstance(items, dict):
        items = [{"scope": "portfolio", "name": k, "value": v} for k, v in items.items()]
    values: dict[str, Any] = {}
    allowed = sorted(RiskLimits.model_fields)
    for i, item in enumerate(items):
        scope, name = item.get("scope", "portfolio"), item.get("name")
        if scope != "portfolio":
            raise InvalidInputError(
                f"limits[{i}].scope",
                "per-bot limits are the bot's riskPerTrade and maxPositionSize: edit the bot",
                allowed=["portfolio"],
            )
        if name not in RiskLimits.model_fields:
            raise InvalidInputError(f"limits[{i}].name", f"unknown limit {name!r}", allowed=allowed)
        value = item.get("value")
        if name == "kill_switch":
            values[name] = value in (True, 1, "1", "true", "True")
        else:
            try:
                values[name] = Decimal(str(value))
            except InvalidOperation as exc:
                raise InvalidInputError(f"limits[{i}].value", "must be a number") from exc
    return values


class RayCluster:
    """The production cluster facade (see the module docstring)."""

    def __init__(self, settings: Settings, *, connect: bool = True) -> None:
        self.settings = settings
        if connect:
            ensure_ray(settings)
        self._risk: Any = None

    @property
    def risk(self) -> Any:
        """The risk actor's handle (created on first use)."""
        if self._risk is None:
            self._risk = get_risk_actor(self.settings)
        return self._risk

    def ray_status(self) -> dict[str, Any]:
        """Return the Ray connection's health."""
        return ray_status()

    def risk_status(self) -> dict[str, Any]:
        """Return the risk actor's health (it must answer a ping within 2 s)."""
        import ray

        try:
            answer = ray.get(self.risk.ping.remote(), timeout=2)
        except Exception as exc:
            return {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        if not answer.get("ready"):
            return {"status": "unhealthy", "error": answer.get("error")}
        return {"status": "healthy"}

    async def start_bot(self, bot_id: int) -> str:
        """Create the bot's actor; it reports Running once reconciled."""
        return await asyncio.to_thread(bot_control.start_bot, self.settings, bot_id)

    async def stop_bot(self, bot_id: int, reason: str) -> str:
        """Stop the bot's loop and remove its actor."""
        return await bot_control.stop_bot(self.settings, bot_id, reason)

    async def risk_utilisation(self, user_id: int) -> dict[str, Any]:
        """Return limits, live utilisation of the user's bots, and recent breaches."""
        report = await self.risk.utilisation.remote()
        limits = await self.risk.get_limits.remote()
        with session_scope(self.settings) as session:
            mine = {
                str(b) for b in session.scalars(select(Bot.id).where(Bot.user_id == user_id)).all()
            }
            from cryptoorchestrator.platform.storage.models import RiskEvent

            events = session.scalars(
                select(RiskEvent)
                .where(RiskEvent.bot_id.in_([int(b) for b in mine]))
                .order_by(RiskEvent.created_at.desc())
                .limit(50)
            ).all()
            breaches = [
                {
                    "botId": e.bot_id,
                    "kind": e.kind,
                    "limit": e.limit_name,
                    "message": e.message,
                    "at": e.created_at.isoformat(),
                }
                for e in events
            ]
        report["bots"] = {k: v for k, v in report.get("bots", {}).items() if k in mine}
        return {"limits": limits, "utilisation": report, "recentBreaches": breaches}

    async def set_risk_limits(self, user_id: int, limits: dict[str, Any]) -> dict[str, Any]:
        """Validate, persist and apply portfolio limits."""
        values = parse_limits(limits.get("limits", limits))
        try:
            RiskLimits(**{**(await self.risk.get_limits.remote()), **values})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(f"limits.{field}", first["msg"]) from exc
        return await self.risk.set_limits.remote(values, user_id)

    async def kill_switch(self, user_id: int, flatten: bool) -> dict[str, Any]:
        """Emergency stop-all: deny every order, cancel open orders, stop every bot."""
        return await self.risk.kill_switch.remote(flatten, user_id)

    async def submit_backtest(self, user_id: int, spec: dict[str, Any]) -> str:
        """Store and start a backtest run; return its id."""
        return await asyncio.to_thread(jobs.submit_backtest, self.settings, user_id, spec)

    async def submit_optimization(self, user_id: int, spec: dict[str, Any]) -> str:
        """Store and start an optimization run; return its id."""
        return await asyncio.to_thread(jobs.submit_optimization, self.settings, user_id, spec)

    async def cancel_run(self, kind: str, run_id: str) -> None:
        """Cancel a run."""
        await asyncio.to_thread(jobs.cancel_run, self.settings, kind, run_id)

    async def relay_events(
        self, publish: Callable[[int, dict[str, Any]], None], *, poll_timeout_s: float = 10.0
    ) -> None:
        """Forward bot events from the cluster's event bus to ``publish`` until cancelled."""
        bus = get_event_bus()
        last = 0
        while True:
            try:
                batch = await bus.poll.remote(last, poll_timeout_s)
            except Exception:
                log.exception("event bus unreachable; retrying")
                await asyncio.sleep(1.0)
                bus = get_event_bus()
                continue
            last = batch["last"]
            for event in batch["events"]:
                bot_id = event.get("botId")
                if isinstance(bot_id, int):
                    publish(bot_id, event)

    def circuit_breakers(self) -> dict[str, dict[str, Any]]:
        """Return the circuit breakers of every running bot's exchange account."""
        import ray

        with session_scope(self.settings) as session:
            wanted = list(session.scalars(select(Bot.id).where(Bot.desired_state == "running")))
        found = (find_bot_actor(b, self.settings) for b in wanted)
        # One call per process: grouped bots share their process's breakers.
        handles = list({h._actor_id: h for h in found if h is not None}.values())  # noqa: SLF001
        states: dict[str, dict[str, Any]] = {}
        if not handles:
            return states
        ready, _ = ray.wait(
            [h.circuit.remote() for h in handles], num_returns=len(handles), timeout=2.0
        )
        for ref in ready:
            try:
                states.update(ray.get(ref))
            except Exception:  # noqa: S112 (a dying bot just reports nothing this time)
                continue
        return states

    def supervise_once(self) -> list[int]:
        """Re-create missing actors of bots that should run (see ``cluster.bots``)."""
        return bot_control.supervise_once(self.settings)

    def bots_by_status(self) -> dict[str, int]:
        """Return how many bots are in each status, with live actor presence."""
        with session_scope(self.settings) as session:
            rows = session.scalars(select(Bot)).all()
            counts = {s.value: 0 for s in BotStatus}
            for bot in rows:
                counts[bot.status] = counts.get(bot.status, 0) + 1
            running_without_actor = [
                b.id
                for b in rows
                if b.desired_state == "running" and find_bot_actor(b.id, self.settings) is None
            ]
        return {**counts, "missingActors": len(running_without_actor)}


def kill_switch_local(settings: Settings, flatten: bool = False) -> dict[str, Any]:
    """Activate the kill switch from a local driver (CLI, SDK)."""
    import ray

    ensure_ray(settings)
    return ray.get(get_risk_actor(settings).kill_switch.remote(flatten, None))

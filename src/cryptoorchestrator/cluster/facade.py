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
from cryptoorchestrator.cluster.events import get_event_bus
from cryptoorchestrator.cluster.handles import find_bot_actor
from cryptoorchestrator.cluster.risk_actor import get_risk_actor
from cryptoorchestrator.cluster.runtime import ensure_ray, ray_status
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.risk.limits import RiskLimits, UserRiskLimits
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot
from cryptoorchestrator.platform.validation import check_money

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
                number = Decimal(str(value))
            except InvalidOperation as exc:
                raise InvalidInputError(f"limits[{i}].value", "must be a number") from exc
            # Limits are stored in a money column: a value it cannot hold is the user's error.
            values[name] = check_money(f"limits[{i}].value", number)
            _check_range(f"limits[{i}].value", name, values[name])
    return values


def _check_range(field: str, name: str, value: Decimal) -> None:
    """Refuse a limit outside its declared range, naming the range (checked here, not first
    inside the risk actor, so every caller gets a clear 4xx instead of a remote error)."""
    bounds: list[str] = []
    ok = True
    for rule in RiskLimits.model_fields[name].metadata:
        for attr, text, holds in (
            ("ge", ">=", lambda v, b: v >= b),
            ("gt", ">", lambda v, b: v > b),
            ("le", "<=", lambda v, b: v <= b),
            ("lt", "<", lambda v, b: v < b),
        ):
            bound = getattr(rule, attr, None)
            if bound is not None:
                bounds.append(f"{text} {bound}")
                ok = ok and holds(value, Decimal(str(bound)))
    if not ok:
        raise InvalidInputError(
            field, f"{name} {value} is out of range", allowed=" and ".join(bounds)
        )


def split_limits(items: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``[{"scope": "portfolio" | "user", "name": ..., "value": ...}]`` by scope.

    Returns the portfolio's values (validated as :func:`parse_limits` does) and the user's own
    (names of :class:`UserRiskLimits`; a ``null`` value unsets one).  Every item must name its
    scope: who may set which scope is the caller's decision, made before this.

    Raises
    ------
    InvalidInputError
        For another scope, an unknown limit, a value that is not a number, or the kill switch
        in scope ``user`` (that one is ``POST``/``DELETE /api/risk/kill-switch``).
    """
    portfolio: list[dict[str, Any]] = []
    user: dict[str, Any] = {}
    allowed = sorted(n for n in UserRiskLimits.model_fields if n != "kill_switch")
    for i, item in enumerate(items):
        scope, name, value = item.get("scope"), item.get("name"), item.get("value")
        if scope == "portfolio":
            portfolio.append(item)
            continue
        if scope != "user":
            raise InvalidInputError(
                f"limits[{i}].scope",
                "per-bot limits are the bot's riskPerTrade and maxPositionSize: edit the bot",
                allowed=["portfolio", "user"],
            )
        if name not in allowed:
            raise InvalidInputError(f"limits[{i}].name", f"unknown limit {name!r}", allowed=allowed)
        try:
            number = None if value is None else Decimal(str(value))
        except InvalidOperation as exc:
            raise InvalidInputError(f"limits[{i}].value", "must be a number or null") from exc
        user[name] = None if number is None else check_money(f"limits[{i}].value", number)
    return (parse_limits(portfolio) if portfolio else {}), user


def _invalid(exc: ValidationError, prefix: str) -> InvalidInputError:
    """Turn a pydantic error about limits into the API's 422 naming the limit."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    return InvalidInputError(f"{prefix}.{field}", first["msg"])


class RayCluster:
    """The production cluster facade (see the module docstring)."""

    def __init__(self, settings: Settings, *, connect: bool = True) -> None:
        self.settings = settings
        if connect:
            # The API is the head of the cluster it starts: record it for the CLI and `ray`.
            ensure_ray(settings, head=True)
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
        """Return the risk actor's health (it must answer a ping within 2 s) and kill switches.

        ``kill_switch`` holds ``global`` (the portfolio's switch), ``users`` (how many users'
        own switches are engaged) and ``user_ids`` (whose); the health route shows it by role.
        An engaged switch leaves the actor healthy: it is doing its job.
        """
        import ray

        try:
            answer = ray.get(self.risk.ping.remote(), timeout=2)
        except Exception as exc:
            return {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        if not answer.get("ready"):
            return {"status": "unhealthy", "error": answer.get("error")}
        out: dict[str, Any] = {"status": "healthy"}
        try:
            state = ray.get(self.risk.kill_switch_state.remote(), timeout=2)
            out["kill_switch"] = {k: state[k] for k in ("global", "users", "user_ids")}
        except Exception as exc:  # an older actor without the call: report health alone
            out["kill_switch"] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    async def start_bot(self, bot_id: int) -> str:
        """Create the bot's actor; it reports Running once reconciled."""
        return await asyncio.to_thread(bot_control.start_bot, self.settings, bot_id)

    async def stop_bot(self, bot_id: int, reason: str) -> str:
        """Stop the bot's loop and remove its actor."""
        return await bot_control.stop_bot(self.settings, bot_id, reason)

    async def risk_utilisation(self, user_id: int, *, portfolio: bool = False) -> dict[str, Any]:
        """Return limits, live utilisation of the user's bots, and recent breaches.

        Only the user's bots are summed; ``portfolio`` (operators only) adds the whole
        portfolio's totals under ``portfolio``.
        """
        report = await self.risk.utilisation.remote(user_id)
        limits = await self.risk.get_limits.remote()
        own = await self.risk.get_user_limits.remote(user_id)
        whole = await self.risk.utilisation.remote() if portfolio else None
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
        out = {
            "limits": limits,
            "userLimits": own,
            "utilisation": report,
            "recentBreaches": breaches,
        }
        if whole is not None:
            out["portfolio"] = whole
        return out

    async def set_risk_limits(self, user_id: int, limits: dict[str, Any]) -> dict[str, Any]:
        """Validate, persist and apply limits: the portfolio's and/or ``user_id``'s own.

        Each item names its scope (``portfolio`` or ``user``); the API lets only operators send
        ``portfolio``.  Returns the portfolio's limits when any were set (their fields at the
        top level) and the user's own under ``user`` when those were set.
        """
        items = limits.get("limits", limits)
        if isinstance(items, dict):
            items = [{"scope": "portfolio", "name": k, "value": v} for k, v in items.items()]
        portfolio, own = split_limits(items)
        if portfolio:
            try:
                RiskLimits(**{**(await self.risk.get_limits.remote()), **portfolio})
            except ValidationError as exc:
                raise _invalid(exc, "limits") from exc
        if own:
            try:
                UserRiskLimits(**{**(await self.risk.get_user_limits.remote(user_id)), **own})
            except ValidationError as exc:
                raise _invalid(exc, "limits") from exc
        out: dict[str, Any] = {}
        if portfolio:
            out.update(await self.risk.set_limits.remote(portfolio, user_id))
        if own:
            out["user"] = await self.risk.set_user_limits.remote(user_id, own, user_id)
        return out

    async def kill_switch(self, user_id: int, flatten: bool, scope: str = "user") -> dict[str, Any]:
        """Pull a kill switch: ``user`` stops ``user_id``'s bots only, ``global`` every bot.

        Who may pull the global one is the API's decision (operators only).
        """
        if scope == "global":
            return await self.risk.kill_switch.remote(flatten, user_id)
        return await self.risk.user_kill_switch.remote(user_id, flatten, user_id)

    async def release_kill_switch(self, user_id: int, scope: str = "user") -> dict[str, Any]:
        """Release ``user_id``'s kill switch (``user``) or the global one (``global``)."""
        if scope == "global":
            return await self.risk.release_kill_switch.remote(user_id)
        return await self.risk.release_user_kill_switch.remote(user_id, user_id)

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


def kill_switch_status_local(settings: Settings) -> dict[str, Any]:
    """Return which kill switches are engaged, from a local driver (CLI, SDK).

    Parameters
    ----------
    settings
        Platform settings (the cluster to join).

    Returns
    -------
    dict[str, Any]
        ``global``, ``users`` (count), ``user_ids`` and ``ready`` (the risk actor's state loaded).
    """
    import ray

    ensure_ray(settings, start_local=False)
    actor = get_risk_actor(settings)
    state = dict(ray.get(actor.kill_switch_state.remote()))
    state.pop("user", None)
    ping = ray.get(actor.ping.remote())
    return {**state, "ready": bool(ping.get("ready"))}


def release_kill_switch_local(settings: Settings, owner_id: int | None = None) -> dict[str, Any]:
    """Release the global kill switch, or ``owner_id``'s own, from a local driver (CLI, SDK).

    Bots stopped by the switch stay stopped until they are started again.

    Parameters
    ----------
    settings
        Platform settings (the cluster to join).
    owner_id
        The user whose own switch to release; None releases the global one.

    Returns
    -------
    dict[str, Any]
        The switch's new state and scope.
    """
    import ray

    ensure_ray(settings, start_local=False)
    actor = get_risk_actor(settings)
    if owner_id is None:
        return dict(ray.get(actor.release_kill_switch.remote(None)))
    return dict(ray.get(actor.release_user_kill_switch.remote(owner_id, None)))

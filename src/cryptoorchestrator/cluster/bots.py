"""Starting, stopping and supervising bot actors; the database says what should run.

``desired_state`` is written first, then the actor is told.  The supervisor (run by
``cryptoorch serve``) re-creates every bot whose desired state is ``running`` but which has no
actor, e.g. after the Ray cluster itself restarted and lost every actor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from sqlalchemy import select

from cryptoorchestrator.cluster.bot_actor import start_bot_actor
from cryptoorchestrator.cluster.handles import find_bot_actor
from cryptoorchestrator.cluster.risk_actor import get_risk_actor
from cryptoorchestrator.platform.bots.status import set_bot_status
from cryptoorchestrator.platform.errors import ConflictError, NotFoundError, UnavailableError
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot

log = logging.getLogger("cryptoorchestrator.supervisor")


#: Seconds to wait for a removed actor's name to be free again (Ray frees it asynchronously).
REPLACE_DEADLINE_S = 30.0


def start_bot(settings: Settings, bot_id: int, options: dict[str, Any] | None = None) -> str:
    """Record that the bot should run and create its actor; return its status (Starting).

    An actor left from an earlier run whose trading loop has ended (a halt) is replaced, since
    only an actor's constructor starts a loop.

    Raises
    ------
    NotFoundError
        When the bot does not exist.
    ConflictError
        While a kill switch covering the bot is engaged; the message says how to release it.
    """
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is None:
            raise NotFoundError(f"bot {bot_id} does not exist")
        owner, grouped = bot.user_id, bot.actor_group is not None
    refuse_while_killed(settings, owner)
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is None:
            raise NotFoundError(f"bot {bot_id} does not exist")
        if bot.status != BotStatus.STARTING.value:
            set_bot_status(
                session,
                bot_id,
                BotStatus.STARTING,
                "start requested",
                desired_state="running",
                log_dir=settings.log_dir,
            )
        else:
            bot.desired_state = "running"
    if not grouped:  # a group's actor restarts a member's ended loop itself (``refresh``)
        _replace_ended_actor(settings, bot_id)
    start_bot_actor(settings, bot_id, options)
    return BotStatus.STARTING.value


def refuse_while_killed(settings: Settings, owner_id: int) -> None:
    """Refuse to start a bot of ``owner_id`` while a kill switch covering it is engaged.

    Its orders would all be denied, so the bot would start only to trade nothing; the caller
    is told how to release the switch instead.  When the risk actor does not answer, the start
    goes ahead: every order still waits for the risk actor's approval (fail closed).

    Raises
    ------
    ConflictError
        While the global switch or ``owner_id``'s own is engaged.
    """
    try:
        state = ray.get(get_risk_actor(settings).kill_switch_state.remote(owner_id), timeout=10)
    except Exception:
        log.warning("risk actor unreachable: could not check the kill switch before a start")
        return
    if state.get("global"):
        raise ConflictError(
            "the global kill switch is engaged: an admin releases it with "
            "`cryptoorch risk release` or DELETE /api/risk/kill-switch?scope=global, "
            "then start the bot again"
        )
    if state.get("user"):
        raise ConflictError(
            "your kill switch is engaged: release it with DELETE /api/risk/kill-switch "
            "(or `cryptoorch risk release --user <id>`), then start the bot again"
        )


def _replace_ended_actor(settings: Settings, bot_id: int) -> None:
    """Remove the bot's own actor when its loop has ended, and wait until its name is free."""
    handle = find_bot_actor(bot_id)
    if handle is None:
        return
    try:
        running = bool(ray.get(handle.running.remote(bot_id), timeout=10))
    except Exception:  # dead, or hung: a fresh actor is the way back either way
        running = False
    if running:
        return
    log.info("replacing the ended actor of bot %s", bot_id)
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + REPLACE_DEADLINE_S
    while find_bot_actor(bot_id) is not None:
        if time.monotonic() > deadline:
            raise UnavailableError(f"the old actor of bot {bot_id} is still being removed")
        time.sleep(0.05)


async def stop_bot(settings: Settings, bot_id: int, reason: str = "stopped by user") -> str:
    """Record that the bot should not run, stop its loop and free its process; return Stopped.

    A bot with a process of its own has it removed; a grouped bot leaves its group's process,
    which is removed once it hosts no bot.
    """
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is None:
            raise NotFoundError(f"bot {bot_id} does not exist")
        bot.desired_state = "stopped"
        grouped = bot.actor_group is not None
    handle = find_bot_actor(bot_id, settings)
    if handle is not None:
        try:
            await asyncio.wait_for(handle.stop.remote(reason, bot_id=bot_id), timeout=30)
        except Exception:  # a dead or hung actor is removed below all the same
            log.warning("bot %s did not stop cleanly", bot_id)
        remaining: list[int] = []
        if grouped:
            try:
                remaining = await asyncio.wait_for(handle.hosted.remote(), timeout=10)
            except Exception:
                remaining = []
        if not remaining:
            ray.kill(handle, no_restart=True)
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is not None and bot.status != BotStatus.STOPPED.value:
            set_bot_status(session, bot_id, BotStatus.STOPPED, reason, log_dir=settings.log_dir)
    return BotStatus.STOPPED.value


async def bot_status(settings: Settings, bot_id: int) -> dict[str, Any]:
    """Return the stored status, with the actor's live view when it runs."""
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is None:
            raise NotFoundError(f"bot {bot_id} does not exist")
        out: dict[str, Any] = {
            "botId": bot.id,
            "status": bot.status,
            "reason": bot.status_reason,
            "desiredState": bot.desired_state,
            "changedAt": bot.status_changed_at.isoformat() if bot.status_changed_at else None,
        }
    handle = find_bot_actor(bot_id, settings)
    out["actor"] = None
    if handle is not None:
        try:
            out["actor"] = await asyncio.wait_for(handle.status.remote(bot_id=bot_id), timeout=5)
        except Exception as exc:
            out["actor"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def supervise_once(settings: Settings, options: dict[str, Any] | None = None) -> list[int]:
    """Bring back every bot that should run but has no running loop; return their ids."""
    with session_scope(settings) as session:
        wanted = list(
            session.execute(
                select(Bot.id, Bot.actor_group).where(
                    Bot.desired_state == "running", Bot.archived_at.is_(None)
                )
            ).all()
        )
    started = []
    for bot_id, group in wanted:
        handle = find_bot_actor(bot_id, settings)
        if handle is not None and group is not None:
            try:
                if bot_id in ray.get(handle.hosted.remote(), timeout=10):
                    continue
            except Exception:  # noqa: S110 (restarting: the refresh below brings it back)
                pass
        elif handle is not None:
            continue
        log.info("re-creating bot %s", bot_id)
        start_bot_actor(settings, bot_id, options)
        started.append(bot_id)
    return started


async def supervise(
    settings: Settings,
    interval_s: float = 10.0,
    on_first_pass: Callable[[], None] | None = None,
) -> None:
    """Run :func:`supervise_once` forever (the head node's supervisor task).

    ``on_first_pass`` is called once, after the first pass that completes: from then on every
    bot meant to run has been resumed (the head node's readiness waits for it).
    """
    pending = on_first_pass
    while True:
        try:
            await asyncio.to_thread(supervise_once, settings)
        except Exception:
            log.exception("supervisor pass failed")
        else:
            if pending is not None:
                pending()
                pending = None
        await asyncio.sleep(interval_s)

"""Starting, stopping and supervising bot actors; the database says what should run.

``desired_state`` is written first, then the actor is told.  The supervisor (run by
``cryptoorch serve``) re-creates every bot whose desired state is ``running`` but which has no
actor, e.g. after the Ray cluster itself restarted and lost every actor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from sqlalchemy import select

from cryptoorchestrator.cluster.bot_actor import start_bot_actor
from cryptoorchestrator.cluster.handles import find_bot_actor
from cryptoorchestrator.platform.bots.status import set_bot_status
from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot

log = logging.getLogger("cryptoorchestrator.supervisor")


def start_bot(settings: Settings, bot_id: int, options: dict[str, Any] | None = None) -> str:
    """Record that the bot should run and create its actor; return its status (Starting)."""
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
    start_bot_actor(settings, bot_id, options)
    return BotStatus.STARTING.value


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


async def supervise(settings: Settings, interval_s: float = 10.0) -> None:
    """Run :func:`supervise_once` forever (the head node's supervisor task)."""
    while True:
        try:
            await asyncio.to_thread(supervise_once, settings)
        except Exception:
            log.exception("supervisor pass failed")
        await asyncio.sleep(interval_s)

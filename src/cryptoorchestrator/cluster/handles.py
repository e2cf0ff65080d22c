"""Names of the platform's Ray actors and the lookups of their handles.

Finding a running actor needs only its name and namespace, never its class: both actor modules
(``bot_actor``, ``risk_actor``) and the facade look bots up here, so the risk actor can halt bots
without importing the bot actor that imports it.  Creating an actor needs its class and stays
beside it (``bot_actor.start_bot_actor``, ``risk_actor.get_risk_actor``).
"""

from __future__ import annotations

from typing import Any

import ray
from sqlalchemy import select

from cryptoorchestrator.cluster.runtime import NAMESPACE
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot

#: Name of the one risk actor (in :data:`NAMESPACE`).
RISK_ACTOR_NAME = "risk"


def actor_name(bot_id: int) -> str:
    """Return the Ray actor name of a bot."""
    return f"bot:{bot_id}"


def group_actor_name(group: str) -> str:
    """Return the Ray actor name of a group of bots sharing one process."""
    return f"botgroup:{group}"


def group_of(settings: Settings, bot_id: int) -> str | None:
    """Return the ``actor_group`` of a bot, read from the database of ``settings``.

    Parameters
    ----------
    settings
        Platform settings (the database URL).
    bot_id
        The bot.

    Returns
    -------
    str | None
        The group's name, or None for a bot with an actor of its own (or no such bot).
    """
    with session_scope(settings) as session:
        return session.scalar(select(Bot.actor_group).where(Bot.id == bot_id))


def find_bot_actor(bot_id: int, settings: Settings | None = None) -> Any | None:
    """Return the handle of the actor running a bot (its own, or its group's), or None.

    A grouped bot is found through its group, read from the database of ``settings`` (without
    settings only bots with an actor of their own are found).  A group's actor may exist while
    the bot itself is stopped: check ``BotActor.hosted`` when that matters.

    Parameters
    ----------
    bot_id
        The bot.
    settings
        Platform settings, to find a grouped bot's group.

    Returns
    -------
    Any | None
        The actor handle, or None when no actor runs the bot.
    """
    try:
        return ray.get_actor(actor_name(bot_id), namespace=NAMESPACE)
    except ValueError:
        pass
    if settings is None:
        return None
    try:
        group = group_of(settings, bot_id)
    except Exception:
        return None
    if group is None:
        return None
    try:
        handle = ray.get_actor(group_actor_name(group), namespace=NAMESPACE)
    except ValueError:
        return None
    return handle


__all__ = [
    "NAMESPACE",
    "RISK_ACTOR_NAME",
    "actor_name",
    "find_bot_actor",
    "group_actor_name",
    "group_of",
]

"""The bot status machine: Starting -> Running -> Stopped, or Error with a reason.

Every transition is persisted (the bot row and a ``bot_status_events`` row, with time and
reason) and written to ``logs/bot_<id>.log``.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from cryptoorchestrator.platform.errors import ConflictError, NotFoundError
from cryptoorchestrator.platform.logs import bot_logger
from cryptoorchestrator.platform.model import BotStatus
from cryptoorchestrator.platform.storage.models import Bot, BotStatusEvent
from cryptoorchestrator.platform.storage.types import utcnow

#: Allowed transitions; any status may go to Error or Stopped (a crash, a stop, a breach).
TRANSITIONS: dict[BotStatus, set[BotStatus]] = {
    BotStatus.STOPPED: {BotStatus.STARTING, BotStatus.STOPPED, BotStatus.ERROR},
    BotStatus.STARTING: {BotStatus.RUNNING, BotStatus.STOPPED, BotStatus.ERROR, BotStatus.STARTING},
    BotStatus.RUNNING: {BotStatus.STOPPED, BotStatus.ERROR, BotStatus.STARTING},
    BotStatus.ERROR: {BotStatus.STARTING, BotStatus.STOPPED, BotStatus.ERROR},
}


def set_bot_status(
    session: Session,
    bot_id: int,
    status: BotStatus,
    reason: str | None = None,
    *,
    desired_state: str | None = None,
    log_dir: Path | None = None,
) -> Bot:
    """Move a bot to ``status``, persist the transition and log it.

    Raises
    ------
    NotFoundError
        If the bot does not exist.
    ConflictError
        If the transition is not allowed (e.g. Stopped -> Running without Starting).
    """
    bot = session.get(Bot, bot_id)
    if bot is None:
        raise NotFoundError(f"bot {bot_id} does not exist")
    current = BotStatus(bot.status)
    if status not in TRANSITIONS[current]:
        raise ConflictError(f"bot {bot_id} cannot go from {current} to {status}")
    now = utcnow()
    bot.status = status.value
    bot.status_reason = reason
    bot.status_changed_at = now
    if desired_state is not None:
        bot.desired_state = desired_state
    session.add(BotStatusEvent(bot_id=bot_id, status=status.value, reason=reason, at=now))
    if log_dir is not None:
        bot_logger(bot_id, log_dir).info(
            "status %s -> %s",
            current.value,
            status.value,
            extra={"event": "status", "status": status.value, "reason": reason},
        )
    return bot

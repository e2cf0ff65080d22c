"""``/api/bots``: CRUD, status, logs, and start/stop through the cluster facade."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from starlette.concurrency import run_in_threadpool

from cryptoorchestrator.api.deps import BotsDep, ClusterDep, ContextDep, HubDep, TraderUser
from cryptoorchestrator.api.schemas import (
    BotCreate,
    BotLogsPublic,
    BotPublic,
    BotStatusEventPublic,
    BotStatusPublic,
    BotUpdate,
    DeletedPublic,
    Page,
    Text,
)
from cryptoorchestrator.platform.logs import tail
from cryptoorchestrator.platform.services.bots import BotService

IdPath = Annotated[int, Path(ge=1, le=2_147_483_647)]

router = APIRouter(prefix="/api/bots", tags=["bots"])

Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[Text | None, Query(max_length=200, description="nextCursor of the last page")]


@router.get("")
def list_bots(bots: BotsDep, limit: Limit = 100, cursor: Cursor = None) -> Page[BotPublic]:
    """List your bots, newest first."""
    page = bots.list_bots(limit=limit, cursor=cursor)
    return Page[BotPublic](
        items=[BotPublic.model_validate(b) for b in page.items], next_cursor=page.next_cursor
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_bot(body: BotCreate, bots: BotsDep, hub: HubDep, _trader: TraderUser) -> BotPublic:
    """Create a bot (stopped).  Ranges: riskPerTrade 0.1-5.0, maxPositionSize 1-100."""
    bot = bots.create(body.model_dump(by_alias=False))
    bots.session.commit()
    hub.remember_owner(bot.id, bots.user_id)
    return BotPublic.model_validate(bot)


@router.get("/{bot_id}")
def get_bot(bot_id: IdPath, bots: BotsDep) -> BotPublic:
    """Return one of your bots."""
    return BotPublic.model_validate(bots.get(bot_id))


@router.patch("/{bot_id}")
def update_bot(bot_id: IdPath, body: BotUpdate, bots: BotsDep, _trader: TraderUser) -> BotPublic:
    """Change a bot; trading fields only while it is stopped (409 otherwise)."""
    bot = bots.update(bot_id, body.model_dump(by_alias=False, exclude_unset=True))
    bots.session.commit()
    return BotPublic.model_validate(bot)


@router.delete("/{bot_id}")
def delete_bot(bot_id: IdPath, bots: BotsDep, _trader: TraderUser) -> DeletedPublic:
    """Delete a stopped bot; one with orders or trades is archived instead."""
    outcome = bots.delete(bot_id)
    bots.session.commit()
    return DeletedPublic(id=bot_id, outcome=outcome)


def _status(bots: BotService, bot_id: int) -> BotStatusPublic:
    view = bots.status(bot_id)
    return BotStatusPublic(
        bot_id=view.bot.id,
        status=view.bot.status,
        desired_state=view.bot.desired_state,
        reason=view.bot.status_reason,
        changed_at=view.bot.status_changed_at,
        events=[BotStatusEventPublic.model_validate(e) for e in view.events],
    )


@router.get("/{bot_id}/status")
def bot_status(bot_id: IdPath, bots: BotsDep) -> BotStatusPublic:
    """Return the bot's status ("Starting", "Running", "Stopped", "Error") and recent changes."""
    return _status(bots, bot_id)


@router.get("/{bot_id}/logs")
def bot_logs(
    bot_id: IdPath,
    bots: BotsDep,
    context: ContextDep,
    tail_lines: Annotated[int, Query(alias="tail", ge=1, le=5000)] = 100,
) -> BotLogsPublic:
    """Return the last ``tail`` lines of ``logs/bot_<id>.log``."""
    bot = bots.get(bot_id)
    path = context.settings.log_dir / f"bot_{bot.id}.log"
    return BotLogsPublic(bot_id=bot.id, lines=tail(path, tail_lines))


async def _control(
    bot_id: IdPath, bots: BotService, cluster: ClusterDep, hub: HubDep, start: bool
) -> BotStatusPublic:
    bot = await run_in_threadpool(bots.get, bot_id)
    # The cluster persists the desired state and the transition before it acts (a bot actor
    # reads them when it starts); a facade that refuses raises here and nothing is recorded.
    if start:
        new_status = await cluster.start_bot(bot.id)
        reason = "started by user"
    else:
        new_status = await cluster.stop_bot(bot.id, "stopped by user")
        reason = "stopped by user"

    def persist() -> BotStatusPublic:
        bots.audit_control(bot, "running" if start else "stopped")
        bots.session.commit()
        bots.session.expire_all()  # the cluster wrote the status in its own session
        return _status(bots, bot.id)

    result = await run_in_threadpool(persist)
    hub.publish(bot.id, {"type": "status", "status": new_status, "reason": reason})
    return result


@router.post(
    "/{bot_id}/start",
    responses={
        409: {
            "description": "a kill switch covering the bot is engaged; the body says how to "
            "release it"
        },
        503: {"description": "cluster not available"},
    },
)
async def start_bot(
    bot_id: IdPath, bots: BotsDep, cluster: ClusterDep, hub: HubDep, _trader: TraderUser
) -> BotStatusPublic:
    """Ask the cluster to start the bot; 409 while a kill switch covering it is engaged (release
    it with ``DELETE /api/risk/kill-switch``), 503 while the cluster layer is not available."""
    return await _control(bot_id, bots, cluster, hub, start=True)


@router.post("/{bot_id}/stop", responses={503: {"description": "cluster not available"}})
async def stop_bot(
    bot_id: IdPath, bots: BotsDep, cluster: ClusterDep, hub: HubDep, _trader: TraderUser
) -> BotStatusPublic:
    """Ask the cluster to stop the bot; 503 while the cluster layer is not available."""
    return await _control(bot_id, bots, cluster, hub, start=False)

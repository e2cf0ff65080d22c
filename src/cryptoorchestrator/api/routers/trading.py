"""``/api/trades``, ``/api/orders``, ``/api/positions``: newest first, keyset pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from cryptoorchestrator.api.deps import TradingDep
from cryptoorchestrator.api.schemas import OrderPublic, Page, PositionPublic, TradePublic

router = APIRouter(prefix="/api", tags=["trading"])

BotId = Annotated[
    int | None, Query(alias="botId", ge=1, le=2_147_483_647, description="only this bot")
]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=200, description="nextCursor of the last page")]


@router.get("/trades", include_in_schema=False, response_model=Page[TradePublic])
@router.get("/trades/", response_model=Page[TradePublic])
def list_trades(
    trading: TradingDep, bot_id: BotId = None, limit: Limit = 50, cursor: Cursor = None
) -> Response:
    """List fills of your bots, newest first."""
    page = trading.trades(bot_id=bot_id, limit=limit, cursor=cursor)
    body = Page[TradePublic](
        items=[TradePublic.model_validate(t) for t in page.items], next_cursor=page.next_cursor
    )
    # Serialised here, once: returning the model would make FastAPI validate it again.
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")


@router.get("/orders", include_in_schema=False)
@router.get("/orders/")
def list_orders(
    trading: TradingDep,
    bot_id: BotId = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[OrderPublic]:
    """List orders of your bots, newest first, optionally of one status."""
    page = trading.orders(bot_id=bot_id, status=status, limit=limit, cursor=cursor)
    return Page[OrderPublic](
        items=[OrderPublic.model_validate(o) for o in page.items], next_cursor=page.next_cursor
    )


@router.get("/positions", include_in_schema=False)
@router.get("/positions/")
def list_positions(
    trading: TradingDep,
    bot_id: BotId = None,
    include_flat: Annotated[bool, Query(alias="includeFlat")] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[PositionPublic]:
    """List positions of your bots (open ones unless ``includeFlat``)."""
    page = trading.positions(bot_id=bot_id, include_flat=include_flat, limit=limit, cursor=cursor)
    return Page[PositionPublic](
        items=[PositionPublic.model_validate(p) for p in page.items], next_cursor=page.next_cursor
    )

"""``/api/trades``, ``/api/orders``, ``/api/positions``: newest first, keyset pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic_core import to_json

from cryptoorchestrator.api.deps import CurrentUserId, TradeReadsDep, TradingDep
from cryptoorchestrator.api.schemas import OrderPublic, Page, PositionPublic, Text, TradePublic
from cryptoorchestrator.platform.storage.models import Trade

router = APIRouter(prefix="/api", tags=["trading"])
#: JSON keys of TradePublic, in the order of the ``trades`` table's columns.
_TRADE_KEYS = tuple(
    TradePublic.model_fields[c.name].alias or c.name for c in Trade.__table__.columns
)

BotId = Annotated[
    int | None, Query(alias="botId", ge=1, le=2_147_483_647, description="only this bot")
]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[Text | None, Query(max_length=200, description="nextCursor of the last page")]


@router.get("/trades", include_in_schema=False, response_model=Page[TradePublic])
@router.get("/trades/", response_model=Page[TradePublic])
async def list_trades(
    user_id: CurrentUserId,
    reads: TradeReadsDep,
    bot_id: BotId = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """List fills of your bots, newest first."""
    page = await reads.trades(user_id, bot_id=bot_id, limit=limit, cursor=cursor)
    # Rows of the table, which the database already constrains, go straight to JSON: validating
    # them into models first cost more than the query. pydantic-core writes Decimals and UTC
    # datetimes exactly as the TradePublic model would (a test compares the two).
    items = [dict(zip(_TRADE_KEYS, row, strict=True)) for row in page.items]
    return Response(
        to_json({"items": items, "nextCursor": page.next_cursor}), media_type="application/json"
    )


@router.get("/orders", include_in_schema=False)
@router.get("/orders/")
def list_orders(
    trading: TradingDep,
    bot_id: BotId = None,
    status: Annotated[Text | None, Query(max_length=20)] = None,
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

"""``/api/trades``, ``/api/orders``, ``/api/positions``: newest first, keyset pagination.

``/api/trades`` also takes a period, ``from`` (inclusive) and ``to`` (exclusive), each an
ISO-8601 time (UTC when it has no zone) or epoch milliseconds.  The period rides on the keyset:
``to`` is where the first page starts (a cursor just before it), and the first fill older than
``from`` ends the list, so a filtered page costs what an unfiltered one does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic_core import to_json

from cryptoorchestrator.api.deps import CurrentUserId, TradeReadsDep, TradingDep
from cryptoorchestrator.api.schemas import OrderPublic, Page, PositionPublic, Text, TradePublic
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.services.pagination import (
    BIGINT_MAX,
    decode_cursor,
    encode_cursor,
)
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
_MOMENT = "ISO-8601 (e.g. 2022-06-01 or 2022-06-01T12:00:00Z; UTC without a zone) or epoch ms"
From = Annotated[
    Text | None, Query(alias="from", max_length=40, description=f"fills at or after: {_MOMENT}")
]
To = Annotated[
    Text | None, Query(alias="to", max_length=40, description=f"fills before: {_MOMENT}")
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
_TIMESTAMP = _TRADE_KEYS.index("timestamp")


def parse_moment(field: str, text: str) -> datetime:
    """Return ``text`` (ISO-8601, UTC when it names no zone, or epoch ms) as an aware datetime.

    Raises
    ------
    InvalidInputError
        Naming ``field``, when ``text`` is neither, or lies outside 1970-01-01..9999-12-31.
    """
    value = text.strip()
    try:
        if value.lstrip("-").isdigit():
            moment = _EPOCH + timedelta(milliseconds=int(value))
        else:
            parsed = datetime.fromisoformat(value.replace("z", "Z"))
            moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    except (ValueError, OverflowError) as exc:
        raise InvalidInputError(field, f"not a time: {value[:40]!r}", allowed=_MOMENT) from exc
    if not _EPOCH < moment <= _LAST:
        raise InvalidInputError(field, "outside the years 1970-9999", allowed=_MOMENT)
    return moment.astimezone(UTC)


def period_cursor(cursor: str | None, until: datetime | None) -> str | None:
    """The cursor a page starts from: ``cursor``, or just before ``until`` when that is earlier.

    Keyset order is ``(timestamp, id)`` descending; ``(until - 1 us, largest id)`` admits every
    fill strictly before ``until`` (ids are below the largest).
    """
    if until is None:
        return cursor
    bound = (until - timedelta(microseconds=1), BIGINT_MAX)
    if cursor is not None:
        at, row_id = decode_cursor(cursor)
        if at is not None and (at, row_id) <= bound:
            return cursor
    return encode_cursor(*bound)


def cut_period(
    items: list[Any], next_cursor: str | None, since: datetime | None
) -> tuple[list[Any], str | None]:
    """Drop fills older than ``since`` from a page (newest first); the first one ends the list."""
    if since is None:
        return items, next_cursor
    kept = [row for row in items if row[_TIMESTAMP] >= since]
    return kept, next_cursor if len(kept) == len(items) else None


@router.get("/trades", include_in_schema=False, response_model=Page[TradePublic])
@router.get("/trades/", response_model=Page[TradePublic])
async def list_trades(
    user_id: CurrentUserId,
    reads: TradeReadsDep,
    bot_id: BotId = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    from_: From = None,
    to: To = None,
) -> Response:
    """List fills of your bots, newest first; ``from``/``to`` bound the period (see above)."""
    since = parse_moment("from", from_) if from_ else None
    until = parse_moment("to", to) if to else None
    if since is not None and until is not None and until <= since:
        raise InvalidInputError("to", "must be later than 'from'", allowed="a time after 'from'")
    page = await reads.trades(
        user_id, bot_id=bot_id, limit=limit, cursor=period_cursor(cursor, until)
    )
    rows, next_cursor = cut_period(page.items, page.next_cursor, since)
    # Rows of the table, which the database already constrains, go straight to JSON: validating
    # them into models first cost more than the query. pydantic-core writes Decimals and UTC
    # datetimes exactly as the TradePublic model would (a test compares the two).
    items = [dict(zip(_TRADE_KEYS, row, strict=True)) for row in rows]
    return Response(
        to_json({"items": items, "nextCursor": next_cursor}), media_type="application/json"
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

"""The demo of ``cryptoorch serve --demo``: which candles it replays and where its clock resumes.

The demo replays the slice of real candles the package ships (Binance BTC/USDT 1h, 2021-2022),
never whatever the market-data store holds (a user's ``data import`` of 2017-2024 must not turn
the demo into a replay of 2017).  Its paper bot keeps its state in the database across restarts,
so the simulator's clock resumes at the bot's last processed candle: started again at the
beginning, the exchange's clock would lie weeks behind the bot, which never goes back in time
and would wait for a candle it has already seen.  Once the slice is used up the demo starts
over with a fresh bot; the old one is archived with its history.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.data.store import bundled_candles
from cryptoorchestrator.platform.storage.models import Bot, EquitySnapshot, User
from cryptoorchestrator.platform.storage.types import utcnow

DEMO_EMAIL = "demo@cryptoorchestrator.local"
DEMO_BOT = "demo-sma-cross"
DEMO_MARKET = ("binance", "BTC/USDT", "1h")


@dataclass(frozen=True)
class DemoStart:
    """Where a demo starts: the candles, the simulator's first clock value, and why."""

    candles: pa.Table
    start_ms: int | None
    resumed: bool
    start_over: bool


def demo_candles() -> pa.Table:
    """Return the bundled candles the demo replays."""
    return bundled_candles(*DEMO_MARKET)


def plan_demo(session: Session, candles: pa.Table | None = None) -> DemoStart:
    """Return where the demo's simulator starts, given the demo bot's stored progress.

    ``start_ms`` is None for a first start (the simulator's default: after its warm-up
    candles), the close of the bot's last processed candle when resuming, and None with
    ``start_over`` when that close is at or past the slice's last candle.
    """
    table = demo_candles() if candles is None else candles
    ts = table.column("timestamp").cast(pa.int64())
    first_ms, last_ms = int(ts[0].as_py()), int(ts[-1].as_py())
    last_close = session.scalar(
        select(func.max(EquitySnapshot.timestamp))
        .join(Bot, Bot.id == EquitySnapshot.bot_id)
        .join(User, User.id == Bot.user_id)
        .where(User.email == DEMO_EMAIL, Bot.name == DEMO_BOT, Bot.archived_at.is_(None))
    )
    if last_close is None:
        return DemoStart(table, None, resumed=False, start_over=False)
    close_ms = int(last_close.timestamp() * 1000)
    if close_ms >= last_ms or close_ms < first_ms:
        return DemoStart(table, None, resumed=False, start_over=True)
    return DemoStart(table, close_ms, resumed=True, start_over=False)


def archive_demo_bot(session: Session) -> int | None:
    """Archive the demo's bot with its history (to start over); return its id, None if none."""
    bot = session.scalar(
        select(Bot)
        .join(User, User.id == Bot.user_id)
        .where(User.email == DEMO_EMAIL, Bot.name == DEMO_BOT, Bot.archived_at.is_(None))
    )
    if bot is None:
        return None
    bot.archived_at = utcnow()
    bot.desired_state = "stopped"
    bot.name = f"{DEMO_BOT}~archived-{bot.id}"
    session.flush()
    return int(bot.id)

"""Building a bot's execution client from its stored exchange account."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.bots.process import SharedCandles
from cryptoorchestrator.platform.errors import ConfigError, InvalidInputError
from cryptoorchestrator.platform.exchange.accounts import build_client, load_credentials
from cryptoorchestrator.platform.exchange.candle_feed import CandleFeed
from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
from cryptoorchestrator.platform.exchange.execution import (
    Candle,
    ExecutionClient,
    MarketInfo,
    Ticker,
)
from cryptoorchestrator.platform.exchange.paper import PaperBookings, PaperBroker
from cryptoorchestrator.platform.exchange.urls import GuardedSession, UrlPolicy, check_account_url
from cryptoorchestrator.platform.model import BotMode
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.sharing import LoopShares
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, User


async def execution_client_for(
    settings: Settings, bot_id: int, *, bookings: PaperBookings | None = None
) -> tuple[ExecutionClient, str]:
    """Return the bot's execution client and the exchange name its orders are recorded under.

    Paper bots (or bots on a paper account) trade through a
    :class:`~cryptoorchestrator.platform.exchange.paper.PaperBroker` whose prices come from the
    account's exchange (public data; ``api_url`` may point at the simulator), funded once with
    the bot's starting balance in the quote asset; it books its orders through ``bookings``
    (the bot process's ``BotProcess.bookings``, shared with the process's other paper brokers;
    None: bookings of its own).  Live bots trade through ccxt with the account's decrypted
    credentials.

    Raises
    ------
    ConfigError
        If the bot has no exchange account, or a live bot's account has no credentials.
    """
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        if bot is None:
            raise ConfigError(f"bot {bot_id} does not exist")
        if bot.exchange_account_id is None:
            raise ConfigError(f"bot {bot_id} has no exchange account (exchangeAccountId)")
        account = session.get(ExchangeAccount, bot.exchange_account_id)
        if account is None:
            raise ConfigError(f"exchange account {bot.exchange_account_id} does not exist")
        paper = bot.mode == BotMode.PAPER.value or account.mode == BotMode.PAPER.value
        quote = bot.trading_pair.split("/")[1].split(":")[0]
        starting = bot.starting_balance
        exchange, account_id = account.exchange, account.id
        api_url = checked_url(session, settings, account)
        # A tenant's clients send through a GuardedSession: allowed hosts at public addresses
        # (the answer connected to is the answer checked), no redirects followed.
        policy = None if _trusted(session, account) else UrlPolicy.from_settings(settings)
        credentials = None if paper else load_credentials(session, settings, account.id)
    if credentials is not None:
        if not credentials.api_key or not credentials.api_secret:
            raise ConfigError(f"live account {account_id} has no API key and secret")
        return _guarded(build_client(credentials), policy, exchange), exchange
    market_data = SharedMarketData.acquire(
        (exchange, api_url, policy is not None),
        lambda: _guarded(
            CcxtExecutionClient.for_exchange(
                exchange, api_url=api_url, account_id=f"{account_id}-public"
            ),
            policy,
            exchange,
        ),
    )
    # The bot sizes each order on the ticker it read just before sending it: fill at that quote.
    broker = PaperBroker(settings, account_id, market_data, quote_ttl_s=1.0, bookings=bookings)
    if starting is not None:
        # Each bot deposits its starting balance into the shared paper account once.
        await broker.fund({quote: starting}, deposit_key=f"bot{bot_id}")
    return broker, exchange


def candle_feed_for(settings: Settings, bot_id: int) -> CandleFeed | None:
    """Return a share of this loop's candle feed for the bot's exchange account (None: none).

    Paper and live bots alike: the feed only tells them when a candle closed (see
    :mod:`~cryptoorchestrator.platform.exchange.candle_feed`); prices and orders go through
    their execution client.  Release the share with ``await feed.close()``.
    """
    with session_scope(settings) as session:
        bot = session.get(Bot, bot_id)
        account_id = None if bot is None else bot.exchange_account_id
        account = None if account_id is None else session.get(ExchangeAccount, account_id)
        if account is None:
            return None
        exchange, api_url = account.exchange, checked_url(session, settings, account)
    return CandleFeed.acquire(exchange, api_url)


def checked_url(session: Session, settings: Settings, account: ExchangeAccount) -> str | None:
    """Return the account's ``apiUrl`` if the rule still allows it, right before it is used.

    Accounts of admins (the operator's CLI and SDK write under the local admin) may use any
    host; everyone else's must point at an allowed host (see
    :mod:`cryptoorchestrator.platform.exchange.urls`).

    Raises
    ------
    ConfigError
        If the stored URL is refused: the bot does not start, and nothing is connected to.
    """
    if account.api_url is None:
        return None
    try:
        return check_account_url(
            settings, account.exchange, account.api_url, trusted=_trusted(session, account)
        )
    except InvalidInputError as exc:
        raise ConfigError(
            f"exchange account {account.id}: apiUrl {exc.reason}; the operator may allow its "
            "host in CRYPTOORCH_ALLOWED_API_HOSTS"
        ) from exc


def _trusted(session: Session, account: ExchangeAccount) -> bool:
    """Whether the account is an admin's (the operator's), whose URLs may point anywhere."""
    role = session.scalar(select(User.role).where(User.id == account.user_id))
    return role == "admin"


def _guarded(client: Any, policy: UrlPolicy | None, exchange: str) -> Any:
    """Send ``client``'s REST requests through a :class:`GuardedSession` (None: unguarded)."""
    if policy is not None:
        GuardedSession(policy, exchange).install(client.exchange)
    return client


class SharedMarketData:
    """One public market-data client for the paper bots of a process, its requests shared.

    Paper bots read prices from their account's exchange; with a client each, the ten bots of a
    group loaded the markets ten times, held ten HTTP sessions and asked for the ticker ten times
    on every candle, within milliseconds of each other.  Here the bots of one event loop that
    read the same exchange share one client, and the ticker requests of bots acting together
    share one answer (at most ``ticker_age_s`` old; each broker still fills at the quote its bot
    saw).  50 ms covers the bots of a group acting on one candle (they ask within a few ms of
    each other) and never hands a quote from before a candle closed to a decision on it: at
    200 ms, a replay stepping candles every 300 ms priced every other candle's orders on the
    previous candle's quote.  The client closes when its last user closes.
    """

    # Per event loop: an HTTP session belongs to the loop that opened it.
    _shares: LoopShares[tuple[Any, ...], SharedMarketData] = LoopShares()

    def __init__(self, key: tuple[Any, ...], client: ExecutionClient, ticker_age_s: float) -> None:
        self._key = key
        self.client = client
        self.market_data_key = client.market_data_key
        self.ticker_age_s = ticker_age_s
        self._shared = SharedCandles()

    @classmethod
    def acquire(
        cls,
        source: tuple[Any, ...],
        build: Callable[[], ExecutionClient],
        ticker_age_s: float = 0.05,
    ) -> SharedMarketData:
        """Return this loop's shared client for ``source``, built by ``build()`` on first use."""
        return cls._shares.acquire(source, lambda: cls(source, build(), ticker_age_s))

    async def load_markets(self, reload: bool = False) -> dict[str, MarketInfo]:
        """Return the exchange's markets (the client caches them)."""
        return await self.client.load_markets(reload)

    async def fetch_ticker(self, symbol: str) -> Ticker:
        """Return the ticker, shared with the bots asking within ``ticker_age_s``."""
        return await self._shared.get(
            ("ticker", symbol), self.ticker_age_s, lambda: self.client.fetch_ticker(symbol)
        )

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str,
        since_ms: int | None = None,
        limit: int | None = None,
    ) -> list[Candle]:
        """Return candles (the runtime shares its own candle requests)."""
        return await self.client.fetch_ohlcv(symbol, timeframe, since_ms, limit)

    async def close(self) -> None:
        """Release this user's share; the last one closes the client."""
        if self._shares.release(self._key, self):
            await self.client.close()

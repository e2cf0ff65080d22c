"""Building a bot's execution client from its stored exchange account."""

from __future__ import annotations

from cryptoorchestrator.platform.errors import ConfigError
from cryptoorchestrator.platform.exchange.accounts import build_client, load_credentials
from cryptoorchestrator.platform.exchange.execution import ExecutionClient
from cryptoorchestrator.platform.model import BotMode
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope
from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount


async def execution_client_for(settings: Settings, bot_id: int) -> tuple[ExecutionClient, str]:
    """Return the bot's execution client and the exchange name its orders are recorded under.

    Paper bots (or bots on a paper account) trade through a
    :class:`~cryptoorchestrator.platform.exchange.paper.PaperBroker` whose prices come from the
    account's exchange (public data; ``api_url`` may point at the simulator), funded once with
    the bot's starting balance in the quote asset.  Live bots trade through ccxt with the
    account's decrypted credentials.

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
        exchange, api_url, account_id = account.exchange, account.api_url, account.id
        credentials = None if paper else load_credentials(session, settings, account.id)
    if credentials is not None:
        if not credentials.api_key or not credentials.api_secret:
            raise ConfigError(f"live account {account_id} has no API key and secret")
        return build_client(credentials), exchange
    from cryptoorchestrator.platform.exchange.ccxt_client import CcxtExecutionClient
    from cryptoorchestrator.platform.exchange.paper import PaperBroker

    market_data = CcxtExecutionClient.for_exchange(
        exchange, api_url=api_url, account_id=f"{account_id}-public"
    )
    # The bot sizes each order on the ticker it read just before sending it: fill at that quote.
    broker = PaperBroker(settings, account_id, market_data, quote_ttl_s=1.0)
    if starting is not None:
        # Each bot deposits its starting balance into the shared paper account once.
        await broker.fund({quote: starting}, deposit_key=f"bot{bot_id}")
    return broker, exchange

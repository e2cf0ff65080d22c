"""``co.bots`` and ``co.risk``: bots and risk limits from a notebook, on the local cluster.

>>> import cryptoorchestrator as co
>>> bot = co.bots.create("sma-btc", "BTC/USDT", "sma_cross", params={"fast": 10, "slow": 50},
...                      api_url="http://127.0.0.1:8765")      # paper, on the simulator
>>> bot.start(); bot.status(); bot.trades().to_pandas(); bot.stop()
>>> co.risk.limits(); co.risk.set_limits(max_drawdown_pct=15); co.risk.kill_switch()

Everything goes through the same services as the API (validation, ownership, audit), acting
as a local user, and the same Ray actors as ``cryptoorch serve``.  For a remote head node use
``co.Client`` instead.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import pyarrow as pa
from sqlalchemy import select

from cryptoorchestrator.cluster import bots as bot_control
from cryptoorchestrator.cluster.facade import kill_switch_local, parse_limits
from cryptoorchestrator.cluster.risk_actor import get_risk_actor
from cryptoorchestrator.cluster.runtime import ensure_ray
from cryptoorchestrator.platform.exchange.urls import UrlPolicy, check_api_url
from cryptoorchestrator.platform.logs import tail
from cryptoorchestrator.platform.services.bots import BotService
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage.db import session_scope, upgrade
from cryptoorchestrator.platform.storage.models import ExchangeAccount, Trade, User
from cryptoorchestrator.strategies.registry import load_strategy_paths, registered_strategy

LOCAL_USER = "local@cryptoorchestrator"

_T = TypeVar("_T")


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from synchronous code, inside a running event loop or not.

    Jupyter's kernel runs an event loop in the thread that executes cells, where
    ``asyncio.run`` raises "cannot be called from a running event loop"; there the coroutine
    runs on a fresh loop in a worker thread and this call waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="co-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def shutdown() -> None:
    """Disconnect this process from Ray, stopping the private local Ray it started, quietly.

    Bots started on a long-running cluster (``cryptoorch serve``) keep running.  Safe to call
    when Ray was never started.
    """
    import sys

    if "ray" not in sys.modules:
        return
    import ray

    if not ray.is_initialized():
        return
    # Ray's workers print their SIGTERM stack dumps on the driver's stderr while they stop.
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        ray.shutdown()


def strategy_validator(strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a strategy name and its parameters against the registry.

    A bot row is read by bot actors, which only resolve registered names, so a bot is given a
    registered name here too (register code through ``strategy_paths``), not a code reference.
    Parameters needing more history than a live bot may fetch are refused too
    (:meth:`~cryptoorchestrator.platform.strategy.base.Strategy.validate_live`).
    """
    return registered_strategy(strategy).validate_live(params)


def local_user_id(settings: Settings) -> int:
    """Return the id of the local operator (created on first use; it cannot log in)."""
    with session_scope(settings) as session:
        uid = session.scalar(select(User.id).where(User.email == LOCAL_USER))
        if uid is None:
            # "!" can never be an argon2 hash: the local operator cannot log in over HTTP.
            user = User(email=LOCAL_USER, password_hash="!local", role="admin")  # noqa: S106
            session.add(user)
            session.flush()
            uid = user.id
        return int(uid)


def paper_account_id(settings: Settings, user_id: int, exchange: str, api_url: str | None) -> int:
    """Return the user's paper account on ``exchange`` (and ``api_url``), creating it once.

    The operator's own tool: any host (the simulator on loopback), but only a plain http(s)
    URL, without credentials, query or fragment (InvalidInputError naming ``apiUrl``).
    """
    if api_url is not None:
        api_url = check_api_url(api_url, UrlPolicy(), exchange=exchange, trusted=True)
    name = f"paper-{exchange}" + (f"@{api_url}" if api_url else "")
    with session_scope(settings) as session:
        account = session.scalar(
            select(ExchangeAccount).where(
                ExchangeAccount.user_id == user_id, ExchangeAccount.name == name[:100]
            )
        )
        if account is None:
            account = ExchangeAccount(
                user_id=user_id, name=name[:100], exchange=exchange, mode="paper", api_url=api_url
            )
            session.add(account)
            session.flush()
        return int(account.id)


@dataclass
class BotHandle:
    """One bot, as a notebook sees it."""

    id: int
    name: str
    settings: Settings
    start_local: bool = True

    def start(self) -> str:
        """Start the bot on the cluster; return its status (Starting)."""
        ensure_ray(self.settings, start_local=self.start_local)
        return bot_control.start_bot(self.settings, self.id)

    def stop(self, reason: str = "stopped by user") -> str:
        """Stop the bot and remove its actor; return its status (Stopped)."""
        ensure_ray(self.settings, start_local=self.start_local)
        return run_sync(bot_control.stop_bot(self.settings, self.id, reason))

    def status(self) -> dict[str, Any]:
        """Return the stored status and, while it runs, the actor's live view."""
        ensure_ray(self.settings, start_local=self.start_local)
        return run_sync(bot_control.bot_status(self.settings, self.id))

    def trades(self, limit: int = 1000) -> pa.Table:
        """Return the bot's fills, newest first, as a pyarrow table (``.to_pandas()`` works)."""
        with session_scope(self.settings) as session:
            rows = session.scalars(
                select(Trade)
                .where(Trade.bot_id == self.id)
                .order_by(Trade.timestamp.desc(), Trade.id.desc())
                .limit(limit)
            ).all()
            return pa.table(
                {
                    "timestamp": pa.array([r.timestamp for r in rows], pa.timestamp("ms", "UTC")),
                    "side": [r.side for r in rows],
                    "price": pa.array([r.price for r in rows], pa.decimal128(38, 18)),
                    "amount": pa.array([r.amount for r in rows], pa.decimal128(38, 18)),
                    "fee": pa.array([r.fee for r in rows], pa.decimal128(38, 18)),
                    "fee_currency": [r.fee_currency for r in rows],
                    "order_id": [r.order_id for r in rows],
                }
            )

    def logs(self, lines: int = 100) -> list[str]:
        """Return the last lines of the bot's log file."""
        return tail(self.settings.log_dir / f"bot_{self.id}.log", lines)


class BotsAPI:
    """``co.bots``: create bots as the local operator; find, list and control every user's.

    The notebook and the CLI run on the host, with the database and its secret key in hand, so
    they act as the operator over every user's bots (``cryptoorch bots status 1`` finds the
    demo user's bot); the bots they create belong to the local operator.
    """

    def __init__(self, settings: Settings | None = None, *, start_local: bool = True) -> None:
        self._settings = settings
        self.start_local = start_local

    @property
    def settings(self) -> Settings:
        """The settings in use (``get_settings()`` unless given)."""
        return self._settings or get_settings()

    def _service(self, session: Any) -> BotService:
        load_strategy_paths(self.settings.strategy_paths)
        return BotService(
            session, local_user_id(self.settings), strategy_validator, every_user=True
        )

    def create(
        self,
        name: str,
        trading_pair: str,
        strategy: str,
        *,
        params: Mapping[str, Any] | None = None,
        timeframe: str = "1h",
        mode: str = "paper",
        exchange: str = "binance",
        api_url: str | None = None,
        exchange_account_id: int | None = None,
        risk_per_trade: Decimal | float | str = Decimal(1),
        max_position_size: Decimal | float | str = Decimal(10),
        stop_loss: Decimal | float | str | None = None,
        take_profit: Decimal | float | str | None = None,
        trailing_stop: Decimal | float | str | None = None,
        starting_balance: Decimal | float | str = Decimal(10_000),
        actor_group: str | None = None,
    ) -> BotHandle:
        """Create a bot (validated as the API validates it) and return its handle.

        Paper bots without an account get the operator's paper account on ``exchange``
        (``api_url`` points it at the exchange simulator or another endpoint).  Bots with the
        same ``actor_group`` share one actor process (``docs/bots.md`` gives the memory saved).
        """
        settings = self.settings
        upgrade(settings)
        user_id = local_user_id(settings)
        if exchange_account_id is None:
            exchange_account_id = paper_account_id(settings, user_id, exchange, api_url)
        values = {
            "name": name,
            "trading_pair": trading_pair,
            "strategy": strategy,
            "params": dict(params or {}),
            "timeframe": timeframe,
            "mode": mode,
            "exchange_account_id": exchange_account_id,
            "risk_per_trade": risk_per_trade,
            "max_position_size": max_position_size,
            "stop_loss": stop_loss,
            "take_profit": take_profit,
            "trailing_stop": trailing_stop,
            "starting_balance": starting_balance,
            "actor_group": actor_group,
        }
        with session_scope(settings) as session:
            bot = self._service(session).create({k: v for k, v in values.items() if v is not None})
            return BotHandle(bot.id, bot.name, settings, self.start_local)

    def get(self, bot: int | str) -> BotHandle:
        """Return the handle of a bot by id or name (any user's: this is the host operator)."""
        with session_scope(self.settings) as session:
            row = self._service(session).find(bot)
            return BotHandle(row.id, row.name, self.settings, self.start_local)

    def list(self, *, as_frame: bool = False) -> Any:
        """Return every user's bots with their status and owner, newest first.

        A list of dicts, or with ``as_frame=True`` a pandas DataFrame with one row per bot
        (the same ``as_frame`` keyword as ``co.Client``'s listings).
        """
        rows = self._rows()
        if as_frame:
            import pandas as pd

            return pd.DataFrame.from_records(rows, columns=list(_BOT_COLUMNS))
        return rows

    def _rows(self) -> builtins.list[dict[str, Any]]:
        with session_scope(self.settings) as session:
            owners = {uid: email for uid, email in session.execute(select(User.id, User.email))}
            return [
                {
                    "id": b.id,
                    "name": b.name,
                    "owner": owners.get(b.user_id),
                    "tradingPair": b.trading_pair,
                    "strategy": b.strategy,
                    "status": b.status,
                    "reason": b.status_reason,
                    "desiredState": b.desired_state,
                }
                for b in self._service(session).all_bots()
            ]


_BOT_COLUMNS = (
    "id",
    "name",
    "owner",
    "tradingPair",
    "strategy",
    "status",
    "reason",
    "desiredState",
)


class RiskAPI:
    """``co.risk``: the portfolio's risk limits and the kill switch."""

    def __init__(self, settings: Settings | None = None, *, start_local: bool = True) -> None:
        self._settings = settings
        self.start_local = start_local

    @property
    def settings(self) -> Settings:
        """The settings in use."""
        return self._settings or get_settings()

    def limits(self) -> dict[str, Any]:
        """Return the limits in force."""
        import ray

        ensure_ray(self.settings, start_local=self.start_local)
        return dict(ray.get(get_risk_actor(self.settings).get_limits.remote()))

    def set_limits(self, **limits: Any) -> dict[str, Any]:
        """Change limits by name (``max_drawdown_pct=15``); validated, persisted, applied."""
        import ray

        ensure_ray(self.settings, start_local=self.start_local)
        values = parse_limits(dict(limits))
        actor = get_risk_actor(self.settings)
        return dict(ray.get(actor.set_limits.remote(values, None)))

    def utilisation(self) -> dict[str, Any]:
        """Return exposure, drawdown and open orders against the limits."""
        import ray

        ensure_ray(self.settings, start_local=self.start_local)
        return dict(ray.get(get_risk_actor(self.settings).utilisation.remote()))

    def kill_switch(self, flatten: bool = False) -> dict[str, Any]:
        """Stop all trading now: deny orders, cancel open orders, stop every bot."""
        ensure_ray(self.settings, start_local=self.start_local)
        return kill_switch_local(self.settings, flatten)


bots = BotsAPI()
risk = RiskAPI()

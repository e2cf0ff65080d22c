"""Fixtures for bot tests: a stepped exchange simulator on real candles, a migrated database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import db
from cryptoorchestrator.platform.storage.models import Bot, User

BUNDLED = (
    Path(__file__).resolve().parents[3]
    / "src/cryptoorchestrator/platform/data/bundled/binance_BTC-USDT_1h_2021-2022.parquet"
)
HOUR = 3_600_000


@pytest.fixture(scope="session")
def candles() -> pa.Table:
    """1,200 real Binance BTC/USDT 1h candles from the package's bundled slice."""
    return pq.read_table(BUNDLED).slice(0, 1200)


@pytest.fixture
def sim(candles: pa.Table, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The simulator, clock stopped at candle 600 (600 closed candles of history).

    Parametrize indirectly with a ratio to make market orders fill in several trades.
    """
    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread

    ratio = getattr(request, "param", None)
    start = int(candles.column("timestamp")[600].as_py()) + 1
    with run_simulator_in_thread(
        {"BTC/USDT": candles}, start_ms=start, speed=0, partial_fill_ratio=ratio
    ) as simulator:
        yield simulator


@pytest.fixture
def bot_db(tmp_path: Path) -> Iterator[tuple[Settings, int]]:
    """A migrated SQLite database with one user and one paper bot (10,000 USDT)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'bots.db'}",
        var_dir=tmp_path / "var",
        log_dir=tmp_path / "logs",
        secret_key="bot-test-secret-key-0123456789",
    )
    db.upgrade(settings)
    with db.session_scope(settings) as session:
        user = User(email="bot@example.com", password_hash="x")
        session.add(user)
        session.flush()
        bot_id = _add_bot(session, user.id, "sma")
    yield settings, bot_id
    db.dispose_engines()


def _add_bot(session: Any, user_id: int, name: str) -> int:
    bot = Bot(
        user_id=user_id,
        name=name,
        trading_pair="BTC/USDT",
        strategy="sma_cross",
        params={"fast": 10, "slow": 50},
        timeframe="1h",
        risk_per_trade=Decimal(1),
        max_position_size=Decimal(50),
        starting_balance=Decimal(10_000),
    )
    session.add(bot)
    session.flush()
    return int(bot.id)


@pytest.fixture
def more_bots(bot_db: tuple[Settings, int]) -> Callable[[int], list[int]]:
    """Add bots like ``bot_db``'s to its database; return all their ids, its own first."""
    settings, first = bot_db

    def add(n: int) -> list[int]:
        with db.session_scope(settings) as session:
            user_id = session.get(Bot, first).user_id  # type: ignore[union-attr]
            return [first] + [_add_bot(session, user_id, f"more{i}") for i in range(n - 1)]

    return add

"""Backups that restore: consistent while bots write, exact money, verification, refusals."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from sqlalchemy import create_engine, func, inspect, select, text, update
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from cryptoorchestrator.cli.main import app as cli_app
from cryptoorchestrator.platform.data.store import OhlcvStore
from cryptoorchestrator.platform.errors import ConflictError
from cryptoorchestrator.platform.settings import Settings, get_settings
from cryptoorchestrator.platform.storage import backup, db
from cryptoorchestrator.platform.storage.models import Bot, Order, Position, Trade, User

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# Money at both ends of NUMERIC(38, 18): 20 integer digits with 18 decimals, and 1e-18.
BIG = Decimal("12345678901234567890.123456789012345678")
TINY = Decimal("0.000000000000000001")


@pytest.fixture
def migrated(db_url: str, tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        database_url=db_url,
        var_dir=tmp_path / "var",
        data_dir=tmp_path / "data",
        secret_key="x" * 32,
    )
    db.upgrade(settings)
    yield settings
    db.dispose_engines()


def _seed(settings: Settings) -> int:
    """A user, a bot, one filled order with two fills and a position; return the bot id."""
    with db.session_scope(settings) as s:
        user = User(email="b@example.com", password_hash="x")
        s.add(user)
        s.flush()
        bot = Bot(
            user_id=user.id,
            name="b1",
            trading_pair="BTC/USDT",
            strategy="sma_cross",
            timeframe="1h",
            risk_per_trade=Decimal("1"),
            max_position_size=Decimal("10"),
            starting_balance=BIG,
            params={"fast": 5, "slow": 20},
        )
        s.add(bot)
        s.flush()
        order = Order(
            bot_id=bot.id,
            client_order_id="b1-1",
            exchange="binance",
            symbol="BTC/USDT",
            side="buy",
            type="market",
            amount=Decimal("0.3"),
            filled=Decimal("0.3"),
            status="filled",
        )
        s.add(order)
        s.flush()
        for i, amount in enumerate((Decimal("0.1"), Decimal("0.2"))):
            s.add(
                Trade(
                    bot_id=bot.id,
                    order_id=order.id,
                    exchange_trade_id=f"t{i}",
                    symbol="BTC/USDT",
                    side="buy",
                    price=BIG,
                    amount=amount,
                    fee=TINY,
                    fee_currency="USDT",
                    timestamp=T0 + timedelta(minutes=i),
                )
            )
        s.add(
            Position(
                bot_id=bot.id,
                symbol="BTC/USDT",
                amount=Decimal("0.3"),
                average_price=BIG,
                realized_pnl=-TINY,
                fees_paid=TINY * 2,
            )
        )
        return bot.id


def _store_candles(data_dir: Path) -> pa.Table:
    ts = [int((T0 + timedelta(hours=i)).timestamp() * 1000) for i in range(48)]
    table = pa.table(
        {
            "timestamp": pa.array(ts, pa.int64()),
            "open": [100.0 + i for i in range(48)],
            "high": [101.0 + i for i in range(48)],
            "low": [99.0 + i for i in range(48)],
            "close": [100.5 + i for i in range(48)],
            "volume": [1.0] * 48,
        }
    )
    OhlcvStore(data_dir).write("binance", "BTC/USDT", "1h", table)
    return OhlcvStore(data_dir).read("binance", "BTC/USDT", "1h")


def _keep_previous(settings: Settings) -> bool:
    # The PostgreSQL test database is the session's; a kept copy would outlive it.
    return make_url(settings.database_url).get_backend_name() == "sqlite"


def test_round_trip_keeps_money_exact_and_market_data(migrated: Settings, tmp_path: Path) -> None:
    bot_id = _seed(migrated)
    candles = _store_candles(migrated.data_dir)
    result = backup.create_backup(migrated, tmp_path / "bk", verify=True)
    assert result.verify is not None
    assert result.verify.ok, result.verify.describe()
    man = result.manifest
    assert man.schema_revision == db.head_revision()
    assert man.tables["trades"].rows == 2
    assert man.tables["orders"].rows == 1
    assert any(name.startswith("market_data/binance/BTC-USDT/1h/") for name in man.files)

    # Change everything after the backup: the restore must bring back the backup's state.
    with db.session_scope(migrated) as s:
        s.execute(update(Position).values(amount=Decimal(0)))
        s.execute(update(Trade).values(fee=Decimal(5)))
    OhlcvStore(migrated.data_dir).write(
        "binance",
        "BTC/USDT",
        "1h",
        candles.slice(0, 1).set_column(1, "open", pa.array([1.0])),
        prefer="new",
    )
    restored = backup.restore_backup(
        tmp_path / "bk", migrated, verify=True, keep_previous=_keep_previous(migrated)
    )
    assert restored.revision == db.head_revision()
    assert restored.verify is not None
    assert restored.verify.ok
    with db.session_scope(migrated) as s:
        pos = s.scalars(select(Position).where(Position.bot_id == bot_id)).one()
        assert (pos.amount, pos.average_price, pos.realized_pnl, pos.fees_paid) == (
            Decimal("0.3"),
            BIG,
            -TINY,
            TINY * 2,
        )
        trades = s.scalars(select(Trade).order_by(Trade.id)).all()
        assert [(t.price, t.amount, t.fee) for t in trades] == [
            (BIG, Decimal("0.1"), TINY),
            (BIG, Decimal("0.2"), TINY),
        ]
        assert s.get(Bot, bot_id).starting_balance == BIG  # type: ignore[union-attr]
    assert OhlcvStore(migrated.data_dir).read("binance", "BTC/USDT", "1h").equals(candles)


def test_backup_is_consistent_while_a_writer_inserts(migrated: Settings, tmp_path: Path) -> None:
    bot_id = _seed(migrated)
    started = threading.Event()
    stop = threading.Event()
    committed: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        # Each transaction stores one order and its two fills: any consistent snapshot holds
        # twice as many trades as orders (the seed's order has two fills too).
        try:
            i = 0
            while not stop.is_set():
                i += 1
                with db.session_scope(migrated) as s:
                    order = Order(
                        bot_id=bot_id,
                        client_order_id=f"w-{i}",
                        exchange="binance",
                        symbol="BTC/USDT",
                        side="buy",
                        type="market",
                        amount=Decimal("0.2"),
                        filled=Decimal("0.2"),
                        status="filled",
                    )
                    s.add(order)
                    s.flush()
                    for k in range(2):
                        s.add(
                            Trade(
                                bot_id=bot_id,
                                order_id=order.id,
                                exchange_trade_id=f"w{i}-{k}",
                                symbol="BTC/USDT",
                                side="buy",
                                price=Decimal("100.01"),
                                amount=Decimal("0.1"),
                                fee=TINY,
                                fee_currency="USDT",
                                timestamp=T0,
                            )
                        )
                committed.append(i)
                if i >= 3:
                    started.set()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(120)
        result = backup.create_backup(migrated, tmp_path / "bk", market_data=False)
        # The writer kept going through the backup; stop it only now.
    finally:
        stop.set()
        thread.join()
    assert errors == []
    man = result.manifest
    orders, trades = man.tables["orders"].rows, man.tables["trades"].rows
    assert orders >= 4  # the seed's order and at least three of the writer's
    assert trades == 2 * orders
    assert orders <= 1 + len(committed)
    # The manifest describes exactly what the backup holds.
    report = backup.verify_backup(tmp_path / "bk", migrated)
    assert report.ok, report.describe()


def test_verify_catches_a_tampered_file(migrated: Settings, tmp_path: Path) -> None:
    _seed(migrated)
    _store_candles(migrated.data_dir)
    folder = tmp_path / "bk"
    man = backup.create_backup(migrated, folder).manifest
    parquet = next(n for n in man.files if n.endswith(".parquet"))
    with open(folder / parquet, "ab") as fh:
        fh.write(b"\0")
    report = backup.verify_backup(folder, migrated)
    assert report.files == [parquet]
    assert not report.ok
    with pytest.raises(backup.BackupError, match=parquet):
        backup.restore_backup(folder, migrated, force=True)


def test_verify_catches_a_tampered_row(migrated: Settings, tmp_path: Path) -> None:
    _seed(migrated)
    folder = tmp_path / "bk"
    man = backup.create_backup(migrated, folder, market_data=False).manifest
    if man.engine == "sqlite":
        # Change one fill's price inside the backup and re-sign the file: only the table
        # checksum can tell.
        conn = sqlite3.connect(folder / backup.SQLITE_FILE)
        conn.execute("UPDATE trades SET price = '1' WHERE exchange_trade_id = 't0'")
        conn.commit()
        conn.close()
        raw = json.loads((folder / backup.MANIFEST_NAME).read_text())
        raw["files"][backup.SQLITE_FILE] = backup.file_sha256(folder / backup.SQLITE_FILE)
    else:
        # A dump cannot be edited in place: record a different checksum for the same rows.
        raw = json.loads((folder / backup.MANIFEST_NAME).read_text())
        raw["tables"]["trades"]["sha256"] = "0" * 64
    (folder / backup.MANIFEST_NAME).write_text(json.dumps(raw))
    report = backup.verify_backup(folder, migrated)
    assert report.files == []
    assert list(report.tables) == ["trades"]
    assert "checksum" in report.tables["trades"]
    with pytest.raises(backup.BackupError, match="trades"):
        backup.restore_backup(folder, migrated, verify=True, force=True)


def test_restore_refuses_a_backup_newer_than_the_code(migrated: Settings, tmp_path: Path) -> None:
    _seed(migrated)
    folder = tmp_path / "bk"
    backup.create_backup(migrated, folder, market_data=False)
    raw = json.loads((folder / backup.MANIFEST_NAME).read_text())
    raw["schema_revision"] = "9999"
    (folder / backup.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ConflictError, match="9999 is newer than this version's head"):
        backup.restore_backup(folder, migrated)
    restored = backup.restore_backup(
        folder, migrated, force=True, keep_previous=_keep_previous(migrated)
    )
    # Forced: restored as it is, not migrated (the code does not know the revision).
    assert restored.revision == db.head_revision()


def test_older_backup_is_refused_over_a_newer_database_and_upgraded_when_forced(
    migrated: Settings, tmp_path: Path
) -> None:
    _seed(migrated)
    db.downgrade(migrated, "0004")
    folder = tmp_path / "bk"
    man = backup.create_backup(migrated, folder, market_data=False).manifest
    assert man.schema_revision == "0004"
    assert "integrity_findings" not in man.tables
    db.upgrade(migrated)
    with pytest.raises(ConflictError, match="newer than the backup's 0004"):
        backup.restore_backup(folder, migrated)
    restored = backup.restore_backup(
        folder, migrated, force=True, keep_previous=_keep_previous(migrated)
    )
    assert (restored.restored_revision, restored.revision) == ("0004", db.head_revision())
    engine = db.create_db_engine(migrated)
    try:
        with engine.connect() as conn:
            assert inspect(conn).has_table("integrity_findings")
    finally:
        engine.dispose()
    with db.session_scope(migrated) as s:
        assert s.scalar(select(func.count()).select_from(Trade)) == 2


def test_older_backup_restores_into_a_fresh_database_at_head(tmp_path: Path) -> None:
    old = Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}", data_dir=tmp_path / "d")
    db.upgrade(old, "0004")
    _seed(old)
    backup.create_backup(old, tmp_path / "bk")
    fresh = Settings(database_url=f"sqlite:///{tmp_path / 'new' / 'fresh.db'}")
    restored = backup.restore_backup(tmp_path / "bk", fresh, verify=True)
    assert restored.previous is None
    assert db.current_revision(fresh) == db.head_revision()
    with db.session_scope(fresh) as s:
        assert s.scalar(select(func.count()).select_from(Trade)) == 2
    db.dispose_engines()


def test_restore_refuses_while_bots_run(migrated: Settings, tmp_path: Path) -> None:
    bot_id = _seed(migrated)
    folder = tmp_path / "bk"
    backup.create_backup(migrated, folder, market_data=False)
    with db.session_scope(migrated) as s:
        s.execute(update(Bot).values(status="Running"))
        s.add(
            Order(
                bot_id=bot_id,
                client_order_id="after",
                exchange="binance",
                symbol="BTC/USDT",
                side="sell",
                type="market",
                amount=Decimal(1),
                status="intent",
            )
        )
    with pytest.raises(ConflictError, match=f"bots are marked Running.*{bot_id} b1"):
        backup.restore_backup(folder, migrated)
    with db.session_scope(migrated) as s:  # refused: nothing changed
        assert s.scalar(select(func.count()).select_from(Order)) == 2
    backup.restore_backup(folder, migrated, force=True, keep_previous=_keep_previous(migrated))
    with db.session_scope(migrated) as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1
        assert s.get(Bot, bot_id).status == "Stopped"  # type: ignore[union-attr]


def test_sqlite_restore_keeps_the_previous_file_and_refuses_a_file_in_use(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path / "d")
    db.upgrade(settings)
    _seed(settings)
    backup.create_backup(settings, tmp_path / "bk")
    holder = sqlite3.connect(tmp_path / "a.db")
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("SELECT count(*) FROM trades").fetchall()
    try:
        with pytest.raises(ConflictError, match="in use by another process"):
            backup.restore_backup(tmp_path / "bk", settings)
    finally:
        holder.close()
    assert not list(tmp_path.glob(".a.db.restore-*"))  # the side copy was removed
    restored = backup.restore_backup(tmp_path / "bk", settings)
    assert restored.previous is not None
    assert Path(restored.previous).is_file()
    with db.session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Trade)) == 2
    db.dispose_engines()


def test_cli_backup_restore_exit_codes(
    migrated: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(migrated)
    monkeypatch.setenv("CRYPTOORCH_DATABASE_URL", migrated.database_url)
    monkeypatch.setenv("CRYPTOORCH_DATA_DIR", str(migrated.data_dir))
    monkeypatch.setenv("CRYPTOORCH_VAR_DIR", str(migrated.var_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        ok = runner.invoke(cli_app, ["db", "backup", str(tmp_path / "bk"), "--verify"])
        assert ok.exit_code == 0, ok.output
        assert "backup verified" in ok.output
        again = runner.invoke(cli_app, ["db", "backup", str(tmp_path / "bk")])
        assert again.exit_code == 1  # the destination is not empty
        raw = json.loads((tmp_path / "bk" / backup.MANIFEST_NAME).read_text())
        raw["tables"]["orders"]["rows"] = 7
        (tmp_path / "bk" / backup.MANIFEST_NAME).write_text(json.dumps(raw))
        bad = runner.invoke(cli_app, ["db", "restore", str(tmp_path / "bk"), "--verify"])
        assert bad.exit_code == 1
        assert "orders" in bad.output
        raw["tables"]["orders"]["rows"] = 1
        (tmp_path / "bk" / backup.MANIFEST_NAME).write_text(json.dumps(raw))
        with db.session_scope(migrated) as s:
            s.execute(update(Bot).values(status="Running"))
        refused = runner.invoke(cli_app, ["db", "restore", str(tmp_path / "bk")])
        assert refused.exit_code == 1
        assert "Running" in refused.output
        forced = runner.invoke(
            cli_app, ["db", "restore", str(tmp_path / "bk"), "--force", "--drop-previous"]
        )
        assert forced.exit_code == 0, forced.output
    finally:
        get_settings.cache_clear()


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test (as ``db_url`` does)."""
    yield pg_database
    db.dispose_engines()
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _pin_times(settings: Settings) -> None:
    """Give every defaulted timestamp one fixed value, so two databases hold equal rows."""
    with db.session_scope(settings) as s:
        for model in (User, Bot, Order):
            s.execute(update(model).values(created_at=T0, updated_at=T0))
        s.execute(update(Position).values(updated_at=T0))


@pytest.mark.postgres
def test_checksums_are_the_same_on_sqlite_and_postgresql(pg_url: str, tmp_path: Path) -> None:
    lite = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path / "d")
    pg = Settings(database_url=pg_url, data_dir=tmp_path / "d")
    digests = []
    for settings in (lite, pg):
        db.upgrade(settings)
        _seed(settings)
        _pin_times(settings)
        digests.append(backup.create_backup(settings, tmp_path / settings.database_url[:6]))
    sqlite_tables = digests[0].manifest.tables
    pg_tables = digests[1].manifest.tables
    assert sqlite_tables["trades"].rows == 2
    assert backup.compare_digests(sqlite_tables, pg_tables) == {}


@pytest.mark.postgres
def test_postgresql_restore_creates_a_missing_database(pg_url: str, tmp_path: Path) -> None:
    source = Settings(database_url=pg_url, data_dir=tmp_path / "d")
    db.upgrade(source)
    _seed(source)
    backup.create_backup(source, tmp_path / "bk")
    name = f"{make_url(pg_url).database}_new"
    target = Settings(
        database_url=make_url(pg_url).set(database=name).render_as_string(hide_password=False),
        data_dir=tmp_path / "d2",
    )
    try:
        restored = backup.restore_backup(tmp_path / "bk", target, verify=True)
        assert restored.previous is None
        with db.session_scope(target) as s:
            assert s.scalar(select(func.count()).select_from(Trade)) == 2
    finally:
        db.dispose_engines()
        backup._pg_drop(pg_url, name)  # noqa: SLF001


def test_rotating_backups_keep_the_newest(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path / "d")
    db.upgrade(settings)
    root = tmp_path / "backups"
    (root / "notes").mkdir(parents=True)  # not a backup: never deleted
    made = [backup.backup_rotating(settings, root, keep=2) for _ in range(3)]
    assert [len(removed) for _, removed in made] == [0, 0, 1]
    assert made[2][1] == [made[0][0].path]
    left = sorted(p.name for p in root.iterdir())
    assert left == sorted([made[1][0].path.name, made[2][0].path.name, "notes"])
    db.dispose_engines()


@pytest.mark.postgres
def test_missing_client_tools_are_named(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=pg_url, data_dir=tmp_path / "d")
    db.upgrade(settings)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(backup.BackupError, match="pg_dump not found on PATH"):
        backup.create_backup(settings, tmp_path / "bk")
    assert not (tmp_path / "bk").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bk")] == []

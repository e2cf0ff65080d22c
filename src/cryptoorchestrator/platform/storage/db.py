"""Engines, sessions and migrations.

One engine per database URL and process.  SQLite gets foreign keys, WAL and a busy timeout (so the
API, the CLI and bots can share the file); PostgreSQL gets a configurable connection pool with
pre-ping and recycling.  :func:`upgrade` applies the Alembic migrations shipped in the package;
starting the platform calls it, and so does ``cryptoorch db upgrade``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cryptoorchestrator.platform.errors import StorageError
from cryptoorchestrator.platform.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


#: Sidecar files SQLite keeps next to the database (WAL mode, rollback journal).
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def _ensure_sqlite_dir(database_url: str) -> None:
    """Create a SQLite database file readable by its owner only, and its folder if missing.

    The file holds password hashes, encrypted exchange keys and the audit log: like the secret
    key it is created 0600 (SQLite gives its ``-wal``/``-shm`` files the database's mode) and a
    folder this creates is 0700, so a fresh checkout needs no setup step and exposes nothing
    to other local users.  A database that an older version created group- or world-readable
    is narrowed to 0600 too; an existing folder is left as it is (it may be shared).
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    if url.database.startswith("file:"):  # a URI filename: SQLite resolves it, not us
        return
    path = Path(url.database)
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700)
    try:
        # O_EXCL: an existing database is never touched here; an empty file is a valid empty
        # SQLite database, which SQLite then fills keeping this mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot create the SQLite database {path}: {exc}") from exc
    for file in (path, *(path.with_name(path.name + s) for s in _SQLITE_SIDECARS)):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def create_db_engine(settings: Settings) -> Engine:
    """Create a new engine for ``settings.database_url`` (callers own and dispose it)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        _ensure_sqlite_dir(settings.database_url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    pool = settings.db
    engine = create_engine(
        url,
        pool_size=pool.pool_size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.pool_timeout,
        pool_recycle=pool.pool_recycle,
        # Reuse the most recently returned connection: it is warm (prepared statements, caches)
        # and the rest can sit idle, so a burst does not keep every backend busy.
        pool_use_lifo=True,
        pool_pre_ping=pool.pre_ping and pool.pre_ping_idle_s == 0,
        # psycopg prepares a statement run five times; PostgreSQL may then keep one generic
        # plan for the connection's life, chosen when the table was small.  Bots' hot-path
        # lookups by client order id and order id (IN lists) kept seq-scanning orders and
        # trades planned on a fresh database, so PostgreSQL's CPU per order grew with the
        # table and decisions slowed with every candle until an autoanalyze invalidated the
        # plans.  Planning each execution is cheap next to that.
        connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
    )
    if pool.pre_ping and pool.pre_ping_idle_s > 0:
        _ping_when_idle(engine, pool.pre_ping_idle_s)
    return engine


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection on checkout only if it sat unused for ``idle_s`` or longer.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: one extra round trip per request,
    a third of a short API read.  A connection handed back a moment ago is as alive as a ping
    would show; one idle for a while may have been dropped by the server or a proxy, and a
    failed ping makes the pool replace it (``DisconnectionError``) before anyone uses it.
    """

    def stamp(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: the pool reconnects and retries
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc

    event.listen(engine, "connect", stamp)
    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", checkout)


def get_engine(settings: Settings | None = None) -> Engine:
    """Return the process-wide engine for the settings' database, creating it once."""
    settings = settings or get_settings()
    key = settings.database_url
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_db_engine(settings)
            _factories[key] = sessionmaker(engine, expire_on_commit=False)
        return engine


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    """Return the session factory bound to the process-wide engine."""
    settings = settings or get_settings()
    get_engine(settings)
    return _factories[settings.database_url]


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any exception."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pooled connection (tests, forked workers, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


def dispose_engine(settings: Settings) -> None:
    """Close the pooled connections of one database and forget its engine (a temporary one)."""
    with _lock:
        engine = _engines.pop(settings.database_url, None)
        _factories.pop(settings.database_url, None)
    if engine is not None:
        engine.dispose()


def _alembic_config(settings: Settings) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return config


def upgrade(settings: Settings | None = None, revision: str = "head") -> str | None:
    """Apply migrations up to ``revision``; return the revision the database is at afterwards."""
    from alembic import command

    settings = settings or get_settings()
    _ensure_sqlite_dir(settings.database_url)
    try:
        command.upgrade(_alembic_config(settings), revision)
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot migrate {_safe_url(settings)}: {exc.__class__.__name__}: "
            f"{exc.args[0] if exc.args else exc}"
        ) from exc
    return current_revision(settings)


def downgrade(settings: Settings | None = None, revision: str = "-1") -> str | None:
    """Revert migrations down to ``revision``; return the revision afterwards."""
    from alembic import command

    settings = settings or get_settings()
    command.downgrade(_alembic_config(settings), revision)
    return current_revision(settings)


def current_revision(settings: Settings | None = None) -> str | None:
    """Return the database's Alembic revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    settings = settings or get_settings()
    engine = create_db_engine(settings)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot reach {_safe_url(settings)}: {exc.__class__.__name__}") from exc
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """Return the newest migration shipped with this version of the package."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def check_database(settings: Settings | None = None) -> dict[str, Any]:
    """Measure a round trip and report pool statistics, for the health routes."""
    settings = settings or get_settings()
    engine = get_engine(settings)
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return {
            "status": "unhealthy",
            "backend": engine.dialect.name,
            "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}",
        }
    latency_ms = (time.perf_counter() - started) * 1000
    pool = engine.pool
    stats: dict[str, Any] = {"class": type(pool).__name__}
    for name in ("size", "checkedin", "checkedout", "overflow"):
        method = getattr(pool, name, None)
        if callable(method):
            stats[name] = method()
    return {
        "status": "healthy",
        "backend": engine.dialect.name,
        "latency_ms": round(latency_ms, 3),
        "pool": stats,
    }


def _safe_url(settings: Settings) -> str:
    """The database URL with any password masked, for error messages."""
    return make_url(settings.database_url).render_as_string(hide_password=True)

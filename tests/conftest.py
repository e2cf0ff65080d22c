"""Fixtures shared by the whole suite.

Layered as the style guide asks: a session-scoped local Ray and PostgreSQL database, function-
scoped settings that point every path into a temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Ray 2.60 may switch token authentication on by itself; the tests run a private local cluster.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_worker_niceness", "0")  # as the platform starts Ray
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CRYPTOORCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PG_ADMIN_URL = os.environ.get(
    "CRYPTOORCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: The lock of the platform's documented fixed ports (8000, 8765, 8265), machine-wide.
FIXED_PORTS_LOCK = Path(tempfile.gettempdir()) / "cryptoorch-fixed-ports.lock"


@contextlib.contextmanager
def fixed_ports() -> Iterator[None]:
    """Hold the machine-wide lock of the fixed ports while the README's platform runs.

    ``scripts/test.sh`` runs the suite on two pytest-xdist workers (``--dist loadfile``: a
    module's tests stay together, in order, so a module-scoped platform starts once); the
    modules that start the platform as the README does (on its fixed ports) take this lock, so
    they run one after another, whichever workers they land on (and beside a second suite).
    """
    with FIXED_PORTS_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real market data shipped beside the repository (``../shared/data``)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA}; set CRYPTOORCH_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def candles(shared_data: Path) -> Any:
    """The last 3,000 real Binance BTC/USDT hourly candles (2024), as a pyarrow table."""
    from cryptoorchestrator.platform.exchange.sim import read_candles

    table = read_candles(shared_data / "candles" / "binance_BTC_USDT-1h.feather")
    return table.slice(table.num_rows - 3000)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Settings whose database, logs, data and secret key all live under ``tmp_path``."""
    from cryptoorchestrator.platform.settings import Settings, get_settings

    for key in list(os.environ):
        if key.startswith("CRYPTOORCH_") and key not in ("CRYPTOORCH_TEST_PG_URL",):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield Settings(
        database_url=f"sqlite:///{tmp_path / 'var' / 'test.db'}",
        log_dir=tmp_path / "logs",
        data_dir=tmp_path / "var" / "data",
        var_dir=tmp_path / "var",
    )
    get_settings.cache_clear()


def _pg_available() -> str | None:
    try:
        import psycopg

        url = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "not available"; the message says why
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped afterwards.

    On a laptop without PostgreSQL the tests that need it skip with instructions; in CI
    (``CI=true``) a missing server fails them.
    """
    problem = _pg_available()
    if problem is not None:
        message = (
            f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point CRYPTOORCH_TEST_PG_URL at a server."
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    import psycopg

    name = f"cryptoorch_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from sqlalchemy.engine import Engine  # noqa: F401  (engines must be disposed by their users)

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL, once for SQLite and once for PostgreSQL, with an empty schema each time."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base_url: str = request.getfixturevalue("pg_database")
    # Each test gets its own schema-free database state: drop everything after the test.
    yield base_url
    from sqlalchemy import create_engine, text

    engine = create_engine(base_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """One local Ray for the whole session: 2 CPUs, no dashboard, a small object store."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024 * 1024,
            namespace="cryptoorch-tests",
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


#: Runs a coroutine function in a fresh event loop and fails on anything the loop reports.
RunLoop = Callable[[Callable[[], Awaitable[None]]], None]


@pytest.fixture(name="run")
def run_loop() -> RunLoop:
    """Run ``main`` in a fresh loop; fail on anything reported to the loop's handler.

    "Task was destroyed but it is pending", "Unclosed client session" and exceptions nobody
    retrieved all reach the loop's exception handler.
    """

    def run(main: Callable[[], Awaitable[None]]) -> None:
        reported: list[dict[str, Any]] = []

        async def wrapper() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
            await main()
            gc.collect()
            await asyncio.sleep(0)

        asyncio.run(wrapper())
        assert reported == []

    return run

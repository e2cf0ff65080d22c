"""The platform's one configuration object.

Values come from (highest first): keyword arguments, ``CRYPTOORCH_*`` environment variables
(nested with ``__``, e.g. ``CRYPTOORCH_DB__POOL_SIZE``), a ``.env`` file in the working directory,
and the embedded defaults, which run everything locally: a SQLite file under ``./var/``, a local
Ray, logs in ``./logs`` and market data in ``./var/data``.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptoorchestrator.platform.errors import ConfigError
from cryptoorchestrator.platform.exchange.budget import ExchangeBudgetSettings
from cryptoorchestrator.platform.notify.config import NotifySettings

SECRET_KEY_FILE = "secret.key"  # noqa: S105 (a file name, not a secret)


class DatabasePool(BaseModel):
    """Connection-pool settings, used for PostgreSQL (SQLite uses its own pool)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool_size: int = Field(10, ge=1, le=200)
    max_overflow: int = Field(20, ge=0, le=500)
    pool_timeout: float = Field(30.0, gt=0)
    pool_recycle: int = Field(3600, ge=-1, description="seconds; -1 disables recycling")
    pre_ping: bool = True
    pre_ping_idle_s: float = Field(
        1.0,
        ge=0,
        description="ping only connections idle at least this long in the pool (0: every checkout)",
    )


def _absolute_sqlite(url: str) -> str:
    """Return a SQLite URL with its file path made absolute (in-memory URLs unchanged).

    A relative path is read against the working directory of whoever opens it: a bot actor or
    job worker, started elsewhere by Ray, would open (and migrate) a database of its own.
    """
    prefix, sep, rest = url.partition(":///")
    if not prefix.startswith("sqlite") or not sep:
        return url
    path, qmark, query = rest.partition("?")
    if not path or path == ":memory:" or path.startswith("/") or path.startswith("file:"):
        return url
    return f"{prefix}:///{Path.cwd() / path}{qmark}{query}"


class Settings(BaseSettings):
    """Every setting of the platform, read once per process (see :func:`get_settings`)."""

    model_config = SettingsConfigDict(
        env_prefix="CRYPTOORCH_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = Field(
        "sqlite:///./var/cryptoorchestrator.db",
        description="SQLAlchemy URL; postgresql+psycopg://user@host:5432/cryptoorchestrator",
    )
    db: DatabasePool = DatabasePool()
    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); None starts one"
    )
    ray_namespace: str = "cryptoorchestrator"
    ray_dashboard: bool = Field(
        False,
        description="start Ray's dashboard (actors, jobs, metrics) when this process starts "
        "the local cluster and ray[default] is installed; `cryptoorch serve` turns it on",
    )
    ray_dashboard_port: int = Field(8265, ge=1, le=65535)
    ray_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="port of the local node's Prometheus endpoint (/metrics); None: Ray picks",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    log_dir: Path = Path("./logs")
    data_dir: Path = Path("./var/data")
    var_dir: Path = Path("./var")
    secret_key: SecretStr | None = Field(
        None, description="JWT signing and credential-encryption key; generated when absent"
    )
    redis_url: str | None = Field(None, description="redis://127.0.0.1:6379/0 shares rate limits")
    cors_origins: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    strategy_paths: list[str] = Field(
        default_factory=list,
        description="operator's strategy sources loaded at start-up: directories of *.py "
        "files or module names; tenants only ever pick registered names",
    )
    notify: NotifySettings = Field(
        default_factory=NotifySettings,
        description="notification channels' allowed hosts, SMTP server, retries",
    )
    allowed_api_hosts: list[str] = Field(
        default_factory=list,
        description="hosts (host or host:port) a user's exchange apiUrl may point at, besides "
        "the exchanges' own API hosts",
    )
    exchange_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="operator-configured exchanges {name: base URL}: probed by health and the "
        "only sources that write the shared market-data store",
    )
    exchange_budget: ExchangeBudgetSettings = Field(
        default_factory=ExchangeBudgetSettings,
        description="request-weight budget shared by every bot process per exchange and egress "
        "IP, and orders per API key (CRYPTOORCH_EXCHANGE_BUDGET__ENABLED, __LIMITS, __SAFETY, "
        "__EGRESS_ID, ...; see docs/bots.md)",
    )
    market_feed: Literal["auto", "exchange", "store"] = Field(
        "auto",
        description="where /ws/market-data reads candles and tickers: 'exchange' polls every "
        "exchange through ccxt (at its exchange_endpoints URL if set, else its public API), "
        "'store' sends the newest stored candles, 'auto' polls the exchanges configured in "
        "exchange_endpoints and reads the store for the others",
    )

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        allowed = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        if value.upper() not in allowed:
            raise ValueError(f"log_level must be one of {', '.join(allowed)}")
        return value.upper()

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must start with sqlite:// or postgresql+psycopg://")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is our only PostgreSQL driver; plain URLs would pick psycopg2.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return _absolute_sqlite(value)

    @field_validator("log_dir", "data_dir", "var_dir")
    @classmethod
    def _absolute_dir(cls, value: Path) -> Path:
        # Relative to where this process started, once: settings travel to Ray workers and
        # bot actors, whose working directory is another one.
        return value if value.is_absolute() else Path.cwd() / value

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is an embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """Return the secret key, creating ``var_dir/secret.key`` (mode 0600) on first use.

        The key is never logged; callers must not log the returned value either.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.var_dir / SECRET_KEY_FILE
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            # O_EXCL makes two processes starting at once agree on a single key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot create the secret key file {path}: {exc}") from exc
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key)
        return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    try:
        return Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid CRYPTOORCH_* settings: {exc}") from exc

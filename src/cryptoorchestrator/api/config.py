"""Options of the API head node that the platform's Settings do not cover.

Read from ``CRYPTOORCH_API_*`` environment variables (e.g. ``CRYPTOORCH_API_RATE_LIMIT=600``) or
passed to :func:`cryptoorchestrator.api.app.create_app`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiOptions(BaseSettings):
    """Token lifetimes, lockout, rate limits, body size and WebSocket timing."""

    model_config = SettingsConfigDict(env_prefix="CRYPTOORCH_API_", extra="ignore", frozen=True)

    access_token_minutes: float = Field(15.0, gt=0)
    refresh_token_days: float = Field(30.0, gt=0)
    max_failed_logins: int = Field(5, ge=1)
    lockout_minutes: float = Field(15.0, gt=0)
    user_cache_s: float = Field(
        5.0, ge=0, description="trust a user found active this long before asking again"
    )
    rate_limit: int = Field(300, ge=1, description="requests per window per user or IP")
    rate_limit_auth: int = Field(20, ge=1, description="requests per window on /api/auth/*")
    rate_limit_window_s: int = Field(60, ge=1)
    rate_limit_backend: Literal["auto", "memory", "redis"] = Field(
        "auto", description="auto: Redis when settings.redis_url is set, else in memory"
    )
    rate_limit_prefix: str = "cryptoorch:rl"
    trust_forwarded_for: bool = Field(
        False, description="key anonymous clients by X-Forwarded-For (only behind a proxy)"
    )
    max_body_bytes: int = Field(1_048_576, ge=1)
    access_log: bool = True
    otel: bool = Field(
        False, description="FastAPI's native OpenTelemetry (traces, metrics, logs) per request"
    )
    threads: int = Field(8, ge=1, le=256, description="threads for synchronous routes")
    ws_poll_s: float = Field(1.0, gt=0, description="market-data feed poll interval")
    ws_idle_timeout_s: float = Field(90.0, gt=0, description="close sockets silent this long")
    cluster: Literal["none", "ray"] = Field(
        "none", description="ray: bots, risk and jobs on the Ray cluster (cryptoorch serve)"
    )
    supervise_interval_s: float = Field(10.0, gt=0, description="bot supervisor period")
    market_exchange: str = "binance"
    market_timeframe: str = "1h"
    ohlcv_max_limit: int = Field(5000, ge=1)

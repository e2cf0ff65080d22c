"""Options of the API head node that the platform's Settings do not cover.

Read from ``CRYPTOORCH_API_*`` environment variables (e.g. ``CRYPTOORCH_API_RATE_LIMIT=600``) or
passed to :func:`cryptoorchestrator.api.app.create_app`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cryptoorchestrator.api.proxies import parse_networks


class ApiOptions(BaseSettings):
    """Token lifetimes, lockout, rate limits, trusted proxies, body size, WebSocket limits."""

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
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPs/CIDRs of the reverse proxies in front of the API: only their "
        "X-Forwarded-For/-Proto are believed (JSON list or comma-separated); empty: none",
    )
    max_body_bytes: int = Field(1_048_576, ge=1)
    hsts_max_age_s: int = Field(
        63_072_000, ge=0, description="Strict-Transport-Security max-age on https; 0: no header"
    )
    access_log: bool = True
    otel: bool = Field(
        False, description="FastAPI's native OpenTelemetry (traces, metrics, logs) per request"
    )
    threads: int = Field(8, ge=1, le=256, description="threads for synchronous routes")
    max_active_runs: int = Field(
        4, ge=1, le=1000, description="backtests and studies a user may have queued or running"
    )
    ws_poll_s: float = Field(1.0, gt=0, description="market-data feed poll interval")
    ws_idle_timeout_s: float = Field(90.0, gt=0, description="close sockets silent this long")
    ws_max_message_bytes: int = Field(
        65_536, ge=256, le=16_777_216, description="largest WebSocket message accepted (1009)"
    )
    ws_max_depth: int = Field(
        32, ge=2, le=256, description="deepest JSON nesting accepted in a WebSocket message"
    )
    ws_max_per_ip: int = Field(32, ge=1, description="open WebSockets per client address")
    ws_max_per_user: int = Field(8, ge=1, description="open /ws/bots sockets per user")
    cluster: Literal["none", "ray"] = Field(
        "none", description="ray: bots, risk and jobs on the Ray cluster (cryptoorch serve)"
    )
    supervise_interval_s: float = Field(10.0, gt=0, description="bot supervisor period")
    market_exchange: str = "binance"
    market_timeframe: str = "1h"
    ohlcv_max_limit: int = Field(5000, ge=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        """Accept a JSON list or a comma-separated string (environment variables)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        """Refuse entries that are not IP addresses or CIDR blocks (a typo would trust no one,
        or worse, everyone)."""
        parse_networks(value)
        return [entry.strip() for entry in value]

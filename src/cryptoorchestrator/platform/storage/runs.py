"""Recording backtest and optimization runs, whoever starts them (CLI, SDK, API, Ray tasks)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from cryptoorchestrator.platform.model import RunStatus
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import session_scope, upgrade
from cryptoorchestrator.platform.storage.models import BacktestRun
from cryptoorchestrator.platform.storage.types import utcnow

_MIGRATED: set[str] = set()


def json_safe(value: Any) -> Any:
    """Return ``value`` with NaN/inf replaced by None and numpy scalars by Python numbers.

    JSON has no NaN; metrics such as the Sharpe ratio of a flat equity curve are undefined.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def record_backtest_run(
    settings: Settings,
    *,
    strategy: str,
    params: Mapping[str, Any],
    symbol: str | None,
    timeframe: str | None,
    start: Any,
    end: Any,
    metrics: Mapping[str, Any] | None,
    status: str = RunStatus.SUCCEEDED,
    exchange: str | None = None,
    config: Mapping[str, Any] | None = None,
    error: str | None = None,
    output_dir: str | None = None,
    user_id: int | None = None,
) -> str:
    """Store a finished backtest and return its id.

    ``start`` and ``end`` take datetimes, ISO strings or epoch milliseconds.  The database is
    migrated first (once per process), so recording works on a fresh checkout.
    """
    if settings.database_url not in _MIGRATED:
        upgrade(settings)
        _MIGRATED.add(settings.database_url)
    run_id = str(uuid.uuid4())
    now = utcnow()
    with session_scope(settings) as session:
        session.add(
            BacktestRun(
                id=run_id,
                user_id=user_id,
                strategy=strategy,
                params=json_safe(dict(params)),
                exchange=exchange,
                symbol=symbol,
                timeframe=timeframe,
                start=_as_datetime(start),
                end=_as_datetime(end),
                config=json_safe(dict(config or {})),
                status=str(status),
                progress=1.0 if status == RunStatus.SUCCEEDED else 0.0,
                metrics=json_safe(dict(metrics)) if metrics is not None else None,
                error=error,
                output_dir=output_dir,
                created_at=now,
                started_at=now,
                finished_at=now,
            )
        )
    return run_id


def get_backtest_run(settings: Settings, run_id: str) -> BacktestRun | None:
    """Return one stored backtest run, or None."""
    with session_scope(settings) as session:
        return session.scalars(select(BacktestRun).where(BacktestRun.id == run_id)).first()

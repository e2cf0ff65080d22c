"""Migrations 0006 (notification tables), 0007 (subscriptions: bots, quiet hours) and 0008
(the daily summary's time) go up, down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import current_revision, dispose_engines, downgrade
from cryptoorchestrator.platform.storage.db import upgrade as migrate


def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(settings: Settings, db_url: str) -> None:
    s = settings.model_copy(update={"database_url": db_url})
    try:
        migrate(s)
        assert current_revision(s) == "0008"
        assert "daily_summary_at" in _columns(db_url, "notification_channels")
        downgrade(s, "0007")
        assert current_revision(s) == "0007"
        assert "daily_summary_at" not in _columns(db_url, "notification_channels")
        subscription = {"bot_ids", "quiet_start", "quiet_end", "timezone"}
        assert subscription <= _columns(db_url, "notification_channels")
        downgrade(s, "0006")
        assert current_revision(s) == "0006"
        assert not subscription & _columns(db_url, "notification_channels")
        assert {"notifications", "notification_channels"} <= _tables(db_url)
        downgrade(s, "0005")
        assert current_revision(s) == "0005"
        assert not {"notifications", "notification_channels"} & _tables(db_url)
        assert "integrity_findings" in _tables(db_url)
        migrate(s)
        assert {"notifications", "notification_channels"} <= _tables(db_url)
        assert subscription | {"daily_summary_at"} <= _columns(db_url, "notification_channels")
    finally:
        dispose_engines()

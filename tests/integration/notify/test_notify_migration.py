"""Migration 0006 (notification tables) goes up, down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.db import current_revision, dispose_engines, downgrade
from cryptoorchestrator.platform.storage.db import upgrade as migrate


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
        assert current_revision(s) == "0006"
        assert {"notifications", "notification_channels"} <= _tables(db_url)
        downgrade(s, "0005")
        assert current_revision(s) == "0005"
        assert not {"notifications", "notification_channels"} & _tables(db_url)
        assert "integrity_findings" in _tables(db_url)
        migrate(s)
        assert {"notifications", "notification_channels"} <= _tables(db_url)
    finally:
        dispose_engines()

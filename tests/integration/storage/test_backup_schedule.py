"""Scheduled backups (``cryptoorch serve --backup-dir``): taken, pruned, failures survived."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage import backup, db


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'platform.db'}",
        var_dir=tmp_path / "var",
        data_dir=tmp_path / "data",
        secret_key="x" * 32,
    )
    db.upgrade(settings)
    yield settings
    db.dispose_engines()


def _wait_for(condition: object, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_schedule_takes_backups_and_keeps_the_newest(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    schedule = backup.BackupSchedule(settings, root, every_s=0.05, keep=2)
    schedule.start()
    try:
        _wait_for(lambda: schedule.taken >= 3, "three scheduled backups")
    finally:
        schedule.stop()
    kept = sorted(p for p in root.iterdir() if (p / backup.MANIFEST_NAME).is_file())
    assert len(kept) == 2  # the oldest went, only after a newer one was complete
    assert schedule.last is not None
    assert schedule.last.path == kept[-1]
    assert backup.verify_backup(kept[-1], settings).ok
    assert schedule.failed == 0


def test_a_failing_backup_is_logged_and_the_schedule_goes_on(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "not-a-folder"
    root.write_text("a file where the backups would go")
    schedule = backup.BackupSchedule(settings, root, every_s=0.05, keep=1)
    schedule.start()
    try:
        _wait_for(lambda: schedule.failed >= 2, "two failed attempts")
    finally:
        schedule.stop()
    assert schedule.taken == 0
    assert "scheduled backup into" in caplog.text


@pytest.mark.parametrize(("every_s", "keep"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_bad_schedule_is_refused(settings: Settings, every_s: float, keep: int) -> None:
    with pytest.raises(backup.BackupError):
        backup.BackupSchedule(settings, "x", every_s=every_s, keep=keep)

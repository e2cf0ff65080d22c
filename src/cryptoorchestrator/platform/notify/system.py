"""System alerts for admins: backups done or failed, integrity findings.

Producers call one function each: :func:`notify_backup` after ``create_backup`` succeeded or
failed (its own short transaction: a backup is no database fact; a failure to notify never
fails the backup), and :func:`enqueue_integrity_findings` in the transaction that quarantines
new findings (so they commit together).  The rows go to the channels of every active admin
through the outbox (:func:`~.outbox.enqueue_admins`); the head node's dispatcher sends them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from cryptoorchestrator.platform.notify.events import Event, EventType
from cryptoorchestrator.platform.notify.outbox import enqueue_admins
from cryptoorchestrator.platform.settings import Settings
from cryptoorchestrator.platform.storage.types import utcnow

log = logging.getLogger("cryptoorchestrator.notify")


def backup_event(dest: Path | str, *, error: BaseException | None = None) -> Event:
    """The event of a backup into ``dest`` that succeeded (``error`` None) or failed."""
    now = utcnow()
    folder = Path(dest).name
    if error is None:
        return Event(
            type=EventType.BACKUP_DONE,
            key=f"backup:{folder}:{now:%Y%m%dT%H%M%S%f}",
            title=f"Backup {folder} done",
            text=f"Backup written to {folder}.",
            at=now,
            data={"folder": folder},
        )
    reason = f"{type(error).__name__}: {error}"[:300]
    return Event(
        type=EventType.BACKUP_FAILED,
        key=f"backup_failed:{folder}:{now:%Y%m%dT%H%M%S%f}",
        title=f"Backup {folder} FAILED",
        text=f"Backup into {folder} failed ({reason}); the previous backups are kept.",
        at=now,
        data={"folder": folder, "error": reason},
    )


def notify_backup(
    settings: Settings, dest: Path | str, *, error: BaseException | None = None
) -> int:
    """Enqueue ``backup.done`` (or ``backup.failed``) for the admins; return the rows written.

    Never raises: the database may be the very thing that failed.  A connection of its own,
    not pooled, so no file handle outlives the call (a restore may replace the file next).
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return 0  # no database to tell (connecting would create an empty file)
    try:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                return enqueue_admins(conn, backup_event(dest, error=error))
        finally:
            engine.dispose()
    except Exception as exc:
        log.warning("could not enqueue the backup notification (%s)", type(exc).__name__)
        return 0


def integrity_event(findings: Sequence[Any]) -> Event:
    """The event of a check that quarantined ``findings`` (objects with ``kind``)."""
    now = utcnow()
    counts = Counter(str(getattr(f, "kind", "unknown")) for f in findings)
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return Event(
        type=EventType.INTEGRITY_FINDINGS,
        key=f"integrity:{now:%Y%m%dT%H%M%S%f}",
        title=f"Integrity check: {len(findings)} new finding(s)",
        text=f"The integrity check quarantined {len(findings)} new finding(s): {parts}. "
        "See GET /api/health/integrity or `cryptoorch db check`.",
        at=now,
        data={"count": len(findings), "counts": dict(sorted(counts.items()))},
    )


def enqueue_integrity_findings(session: Session, findings: Sequence[Any]) -> int:
    """Enqueue ``integrity.findings`` for the admins in ``session``'s transaction.

    Nothing when ``findings`` is empty (a check that found nothing new is no news).
    """
    if not findings:
        return 0
    return enqueue_admins(session, integrity_event(findings))

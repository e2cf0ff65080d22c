"""The delivery worker: claims due outbox rows atomically, sends them, retries, dead-letters.

Safe with several API replicas on one database:

* A channel is served by one dispatcher at a time: its lease (``notification_channels.
  lease_owner/lease_until``) is taken with one conditional ``UPDATE`` (free or expired only),
  which both SQLite (one writer) and PostgreSQL (row lock, the ``WHERE`` re-checked after a
  concurrent update commits) make atomic.  So messages of one channel go out in order and are
  paced in one place.
* Rows are claimed with a conditional ``UPDATE ... WHERE status='pending' ...`` too, each
  claim with its own token; a row is only marked sent by the claim that sent it.
* A claim that is never finished (the process died between the send and the mark) expires
  after ``lease_s`` and its rows are claimed again *as the same message*: same rows, same
  ``batch_key``, so the receiver sees the same ``webhook-id`` / ``Idempotency-Key`` /
  ``Message-ID`` and can drop the duplicate.  That is the guarantee: at least once, with a key
  that makes it exactly once for a receiver that dedupes.
* Per channel, the oldest unsent row blocks the ones after it until it is sent or dead, so a
  channel's messages keep their order.
* Due rows of a channel (up to ``max_batch``) are coalesced into one message (a burst of fills
  in one candle: one message), every event kept in the webhook body and the delivery log.

Once a minute (of its clock) a pass also writes the daily summaries that are due
(:mod:`.summary`), before it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.notify.channels import ChannelConfig, open_config
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.summary import enqueue_daily_summaries
from cryptoorchestrator.platform.notify.transports import DeliveryError, Message, Sender
from cryptoorchestrator.platform.storage.models import Notification, NotificationChannel
from cryptoorchestrator.platform.storage.types import utcnow

log = logging.getLogger("cryptoorchestrator.notify")

PENDING, SENDING, SENT, DEAD = "pending", "sending", "sent", "dead"
#: Held by the channel's quiet hours until ``next_attempt_at``; then pending, as a digest.
HELD = "held"
#: Messages one dispatcher sends to one channel per pass before giving others a turn.
BATCHES_PER_PASS = 10
#: Seconds between two looks for due daily summaries.
SUMMARY_EVERY_S = 60.0


@dataclass(frozen=True)
class Claim:
    """Rows claimed together: one message."""

    token: str
    channel_id: int
    key: str
    ids: list[int]
    attempts: int
    config: ChannelConfig
    events: list[dict[str, Any]]


def backoff_s(attempts: int, settings: NotifySettings, jitter: float) -> float:
    """Return the wait before attempt ``attempts + 1``: exponential, capped, with jitter.

    ``jitter`` in [0, 1) scales the delay into [50 %, 100 %] of the exponential value, so
    replicas that failed together do not retry together.
    """
    exponential = settings.backoff_base_s * 2 ** max(attempts - 1, 0)
    return min(settings.backoff_max_s, exponential) * (0.5 + 0.5 * jitter)


class Dispatcher:
    """Sends the outbox.

    Parameters
    ----------
    factory
        Session factory of the platform database.
    box
        The platform's secret box (channels' configs).
    settings
        The operator's notification settings.
    clock
        Current UTC time (tests move it forward instead of waiting).
    sender
        Sends one message (a fresh :class:`Sender` by default).
    jitter
        Returns a number in [0, 1) per retry (``random.random`` by default).
    after_send
        Awaited after a successful send, before the rows are marked sent (tests kill the
        worker there).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        box: SecretBox,
        settings: NotifySettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        sender: Sender | None = None,
        jitter: Callable[[], float] = random.random,
        after_send: Callable[[Claim], Awaitable[None]] | None = None,
    ) -> None:
        self.factory = factory
        self.box = box
        self.settings = settings
        self.clock = clock
        self.sender = sender or Sender(settings)
        self.jitter = jitter
        self.after_send = after_send
        self.worker_id = uuid.uuid4().hex
        self._warned: set[str] = set()
        self._summaries_at: datetime | None = None

    # ----------------------------------------------------------------------- the loop

    async def run_once(self) -> int:
        """Serve every channel with due rows once; return the messages attempted."""
        await asyncio.to_thread(self._daily_summaries)
        await asyncio.to_thread(self._release_held)
        channels = await asyncio.to_thread(self._due_channels)
        if not channels:
            return 0
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def serve(channel_id: int) -> int:
            async with gate:
                return await self._serve(channel_id)

        return sum(await asyncio.gather(*(serve(c) for c in channels)))

    async def run_forever(self) -> None:
        """Run passes until cancelled; a pass that found nothing waits ``poll_s``."""
        while True:
            try:
                attempted = await self.run_once()
            except Exception as exc:  # the database away, a table missing: try again later
                attempted = 0
                kind = type(exc).__name__
                if kind not in self._warned:
                    self._warned.add(kind)
                    log.warning("notification dispatcher pass failed (%s); retrying", kind)
            if attempted == 0:
                await asyncio.sleep(self.settings.poll_s)

    async def _serve(self, channel_id: int) -> int:
        if not await asyncio.to_thread(self._lease_channel, channel_id):
            return 0
        attempted = 0
        try:
            for _ in range(BATCHES_PER_PASS):
                claim = await asyncio.to_thread(self._claim, channel_id)
                if claim is None:
                    break
                attempted += 1
                if not await self._deliver(claim):
                    break  # keep the channel's order: nothing after a failed message
        finally:
            await asyncio.to_thread(self._release_channel, channel_id)
        return attempted

    async def _deliver(self, claim: Claim) -> bool:
        try:
            await self.sender.send(claim.config, Message(claim.key, claim.events))
        except DeliveryError as exc:
            await asyncio.to_thread(self._fail, claim, exc)
            return False
        except Exception as exc:  # a bug in a transport must not kill the worker
            failure = DeliveryError(f"send failed ({type(exc).__name__})")
            await asyncio.to_thread(self._fail, claim, failure)
            return False
        if self.after_send is not None:
            await self.after_send(claim)
        await asyncio.to_thread(self._mark_sent, claim)
        return True

    # ------------------------------------------------------------------ database steps

    def _due(self, now: datetime) -> Any:
        return or_(
            and_(Notification.status == PENDING, Notification.next_attempt_at <= now),
            and_(Notification.status == SENDING, Notification.lease_until < now),
        )

    def _daily_summaries(self) -> int:
        """Write the daily summaries due now (at most once a minute); return the rows.

        A failure is logged and skipped: the summaries must not stop the sending.
        """
        now = self.clock()
        last = self._summaries_at
        if last is not None and last <= now < last + timedelta(seconds=SUMMARY_EVERY_S):
            return 0
        self._summaries_at = now
        try:
            with self.factory() as session:
                written = enqueue_daily_summaries(session, now)
                session.commit()
                return written
        except Exception as exc:
            if "summary" not in self._warned:
                self._warned.add("summary")
                log.warning("daily summaries failed (%s); retrying", type(exc).__name__)
            return 0

    def _release_held(self) -> None:
        """Queue the rows whose quiet hours ended (one conditional update: replicas agree)."""
        now = self.clock()
        with self.factory() as session:
            session.execute(
                update(Notification)
                .where(Notification.status == HELD, Notification.next_attempt_at <= now)
                .values(status=PENDING)
                .execution_options(synchronize_session=False)
            )
            session.commit()

    def _due_channels(self) -> list[int]:
        now = self.clock()
        with self.factory() as session:
            return list(
                session.scalars(
                    select(Notification.channel_id).where(self._due(now)).distinct().limit(200)
                )
            )

    def _lease_channel(self, channel_id: int) -> bool:
        now = self.clock()
        with self.factory() as session:
            result = session.execute(
                update(NotificationChannel)
                .where(
                    NotificationChannel.id == channel_id,
                    or_(
                        NotificationChannel.lease_until.is_(None),
                        NotificationChannel.lease_until < now,
                        NotificationChannel.lease_owner == self.worker_id,
                    ),
                )
                .values(
                    lease_owner=self.worker_id,
                    lease_until=now + timedelta(seconds=self.settings.lease_s),
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _release_channel(self, channel_id: int) -> None:
        with self.factory() as session:
            session.execute(
                update(NotificationChannel)
                .where(
                    NotificationChannel.id == channel_id,
                    NotificationChannel.lease_owner == self.worker_id,
                )
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()

    def _claim(self, channel_id: int) -> Claim | None:
        now = self.clock()
        lease_until = now + timedelta(seconds=self.settings.lease_s)
        with self.factory() as session:
            first = session.scalars(
                select(Notification)
                .where(
                    Notification.channel_id == channel_id,
                    Notification.status.in_((PENDING, SENDING)),
                )
                .order_by(Notification.id)
                .limit(1)
            ).first()
            if first is None or not _is_due(first, now):
                return None
            if first.batch_key is not None:
                # A retry or a crashed claim: the same rows again, under the same key.
                ids = list(
                    session.scalars(
                        select(Notification.id).where(
                            Notification.channel_id == channel_id,
                            Notification.batch_key == first.batch_key,
                            Notification.status.in_((PENDING, SENDING)),
                        )
                    )
                )
            else:
                ids = list(
                    session.scalars(
                        select(Notification.id)
                        .where(
                            Notification.channel_id == channel_id,
                            Notification.status == PENDING,
                            Notification.batch_key.is_(None),
                            Notification.next_attempt_at <= now,
                        )
                        .order_by(Notification.id)
                        .limit(self.settings.max_batch)
                    )
                )
            token = uuid.uuid4().hex
            session.execute(
                update(Notification)
                .where(Notification.id.in_(ids), self._due(now))
                .values(
                    status=SENDING,
                    claim_token=token,
                    lease_until=lease_until,
                    attempts=Notification.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            claimed = session.scalars(
                select(Notification)
                .where(Notification.claim_token == token)
                .order_by(Notification.id)
                # The rows read above are in the identity map with their old values.
                .execution_options(populate_existing=True)
            ).all()
            if not claimed:
                session.rollback()
                return None
            # The key of fresh rows is named after the first row this claim holds: only this
            # claim can hold it, so two messages never share a key.
            key = claimed[0].batch_key or f"ntf_{channel_id}_{claimed[0].id}"
            session.execute(
                update(Notification)
                .where(Notification.claim_token == token, Notification.batch_key.is_(None))
                .values(batch_key=key)
                .execution_options(synchronize_session=False)
            )
            # Still ours? Extend the channel's lease for this message, in the same transaction.
            kept = session.execute(
                update(NotificationChannel)
                .where(
                    NotificationChannel.id == channel_id,
                    NotificationChannel.lease_owner == self.worker_id,
                )
                .values(lease_until=lease_until)
                .execution_options(synchronize_session=False)
            )
            channel = session.get(NotificationChannel, channel_id)
            if kept.rowcount != 1 or channel is None:  # type: ignore[attr-defined]
                session.rollback()
                return None
            config = open_config(self.box, channel)
            result = Claim(
                token=token,
                channel_id=channel_id,
                key=key,
                ids=[row.id for row in claimed],
                attempts=max(row.attempts for row in claimed),
                config=config,
                events=[dict(row.payload) for row in claimed],
            )
            session.commit()
            return result

    def _mark_sent(self, claim: Claim) -> None:
        now = self.clock()
        with self.factory() as session:
            session.execute(
                update(Notification)
                .where(Notification.claim_token == claim.token)
                .values(
                    status=SENT, sent_at=now, claim_token=None, lease_until=None, last_error=None
                )
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(NotificationChannel)
                .where(NotificationChannel.id == claim.channel_id)
                .values(last_sent_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()

    def _fail(self, claim: Claim, error: DeliveryError) -> None:
        now = self.clock()
        dead = not error.retryable or claim.attempts >= self.settings.max_attempts
        delay = backoff_s(claim.attempts, self.settings, self.jitter())
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.settings.backoff_max_s))
        with self.factory() as session:
            session.execute(
                update(Notification)
                .where(Notification.claim_token == claim.token)
                .values(
                    status=DEAD if dead else PENDING,
                    next_attempt_at=now + timedelta(seconds=delay),
                    claim_token=None,
                    lease_until=None,
                    last_error=str(error)[:500],
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
        if dead:
            log.warning(
                "notification message %s dead after %d attempts: %s",
                claim.key,
                claim.attempts,
                error,
            )

    # --------------------------------------------------------------------- by hand

    async def send_test(self, channel: NotificationChannel) -> str | None:
        """Send a test message to ``channel`` now (not through the outbox); return the error."""
        config = open_config(self.box, channel)
        now = self.clock()
        key = f"test_{uuid.uuid4().hex}"
        event = {
            "id": key,
            "type": "test",
            "severity": "info",
            "title": f"Test message for channel {channel.name!r}",
            "text": f"Test message for channel {channel.name!r}: it works.",
            "at": now.isoformat(),
            "data": {},
        }
        try:
            await self.sender.send(config, Message(key, [event]))
        except DeliveryError as exc:
            return str(exc)
        return None


def _is_due(row: Notification, now: datetime) -> bool:
    if row.status == PENDING:
        return row.next_attempt_at <= now
    return row.lease_until is None or row.lease_until < now


def retry_dead(session: Session, user_id: int, notification_id: int) -> int:
    """Put a dead notification (and the rest of its message) back in the queue; return rows.

    The caller commits.  Only the owner's rows are touched.
    """
    row = session.get(Notification, notification_id)
    if row is None or row.user_id != user_id or row.status != DEAD:
        return 0
    same = (
        Notification.batch_key == row.batch_key
        if row.batch_key is not None
        else Notification.id == row.id
    )
    result = session.execute(
        update(Notification)
        .where(Notification.channel_id == row.channel_id, same, Notification.status == DEAD)
        .values(status=PENDING, attempts=0, next_attempt_at=utcnow(), last_error=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def dead_letters(session: Session, user_id: int | None = None) -> int:
    """Count dead notifications: ``user_id``'s, or everyone's when None (admins)."""
    query = select(func.count()).select_from(Notification).where(Notification.status == DEAD)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    return int(session.scalar(query) or 0)


def notifications_health(session: Session, user_id: int | None = None) -> dict[str, Any]:
    """The ``notifications`` part of ``/api/health/detailed``.

    ``{"status": "ok" | "dead_letters", "dead_letters": n}``: ``user_id``'s dead notifications,
    or everyone's when None (an admin's view).  Informational: it never makes the report
    unhealthy.  ``{"status": "unavailable"}`` when the count cannot be read.
    """
    try:
        count = dead_letters(session, user_id)
    except Exception:  # the table missing (a database not yet migrated), the database away
        session.rollback()
        return {"status": "unavailable"}
    return {"status": "dead_letters" if count else "ok", "dead_letters": count}


def dispatcher_hooks(
    dispatcher: Dispatcher,
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Return ``(start, stop)`` hooks running :meth:`Dispatcher.run_forever` as a task."""
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(dispatcher.run_forever()))

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        tasks.clear()

    return start, stop

"""``/api/notifications``: your channels (write-only secrets) and their subscriptions, the event
catalogue they choose from, a test send, signing-secret rotation, the delivery log and its
dead letters.

Every role may manage its own channels (viewers too: a channel only tells its owner about the
owner's own bots, which a viewer may already read).  Nobody, admins included, ever reads a
channel's destination secrets back: the URL of a webhook, Discord or Slack channel, a Telegram
bot token and a webhook's signing secret are write-only (a signing secret is shown once, in
the answer that creates the channel or rotates its secret).  Another user's channel is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import Field, SecretStr
from sqlalchemy import select

from cryptoorchestrator.api.deps import ContextDep, CurrentUser, SessionDep
from cryptoorchestrator.api.schemas import CamelModel, DeletedPublic, StrictBody
from cryptoorchestrator.platform.errors import NotFoundError
from cryptoorchestrator.platform.notify.channels import ChannelService
from cryptoorchestrator.platform.notify.dispatcher import Dispatcher, retry_dead
from cryptoorchestrator.platform.notify.events import SEVERITY, SYSTEM_EVENTS, EventType, Severity
from cryptoorchestrator.platform.storage.models import Notification, NotificationChannel

IdPath = Annotated[int, Path(ge=1, le=2_147_483_647)]

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


class ChannelCreate(StrictBody):
    """A new channel: ``kind`` and that kind's destination fields."""

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["webhook", "telegram", "discord", "slack", "email"]
    url: SecretStr | None = Field(None, description="webhook, discord, slack: https URL")
    bot_token: SecretStr | None = Field(None, description="telegram: the bot's token")
    chat_id: str | None = Field(None, max_length=40, description="telegram: chat id")
    address: str | None = Field(None, max_length=254, description="email: the recipient")
    events: list[str] | None = Field(None, max_length=40, description="types; all when omitted")
    min_severity: Literal["info", "warning", "error", "critical"] = "info"
    bot_ids: list[int] | None = Field(None, description="only these bots' events; all if omitted")
    quiet_start: str | None = Field(None, max_length=5, description="HH:MM local time")
    quiet_end: str | None = Field(None, max_length=5, description="HH:MM local time")
    timezone: str = Field("UTC", max_length=64, description="IANA zone of the local times")
    daily_summary_at: str | None = Field(
        None, max_length=5, description="HH:MM local time of the daily summary; none if null"
    )


class ChannelUpdate(StrictBody):
    """Changes to a channel's name, subscription or ``enabled`` (fields left out are kept;
    ``null`` clears ``events``, ``botIds`` and the quiet hours)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    events: list[str] | None = Field(None, max_length=40)
    min_severity: Literal["info", "warning", "error", "critical"] | None = None
    bot_ids: list[int] | None = None
    quiet_start: str | None = Field(None, max_length=5)
    quiet_end: str | None = Field(None, max_length=5)
    timezone: str | None = Field(None, max_length=64)
    daily_summary_at: str | None = Field(None, max_length=5)
    enabled: bool | None = None


class ChannelPublic(CamelModel):
    """A channel as the API shows it: the destination masked, no secret."""

    id: int
    name: str
    kind: str
    target: str
    events: list[str] | None
    min_severity: str
    bot_ids: list[int] | None
    quiet_start: str | None
    quiet_end: str | None
    timezone: str
    daily_summary_at: str | None
    enabled: bool
    created_at: datetime
    last_sent_at: datetime | None


class ChannelCreated(ChannelPublic):
    """The answer to a create: a webhook's signing secret, shown this once."""

    signing_secret: str | None = None


class SecretRotated(CamelModel):
    """The answer to a rotation: the new signing secret, shown this once."""

    id: int
    signing_secret: str
    previous_valid_until: datetime | None = Field(
        None, description="until then requests carry a signature with the old secret too"
    )


class TestResult(CamelModel):
    """Whether the test message was acknowledged by the receiver."""

    ok: bool
    error: str | None


class NotificationPublic(CamelModel):
    """One event for one channel in the delivery log."""

    id: int
    channel_id: int
    event_key: str
    event_type: str
    severity: str
    title: str
    status: str
    attempts: int
    message_id: str | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None


class EventTypePublic(CamelModel):
    """One event type a channel may subscribe to."""

    type: str
    severity: str = Field(description="the type's default severity")
    system: bool = Field(description="a system alert: it goes to admins (breakers: owners too)")


class EventCatalogue(CamelModel):
    """What a subscription chooses from: the event types and the severities, lowest first."""

    events: list[EventTypePublic]
    severities: list[str]


class RetryPublic(CamelModel):
    """How many dead notifications went back to the queue."""

    requeued: int


def _public(row: NotificationChannel) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "target": row.target_hint,
        "events": row.events,
        "min_severity": row.min_severity,
        "bot_ids": row.bot_ids,
        "quiet_start": row.quiet_start,
        "quiet_end": row.quiet_end,
        "timezone": row.timezone or "UTC",
        "daily_summary_at": row.daily_summary_at,
        "enabled": row.enabled,
        "created_at": row.created_at,
        "last_sent_at": row.last_sent_at,
    }


def _service(context: ContextDep, db: SessionDep, user: CurrentUser) -> ChannelService:
    return ChannelService(db, context.secret_box, context.settings.notify, user.id)


def _dispatcher(request: Request) -> Dispatcher:
    found: Dispatcher = request.app.state.notify_dispatcher
    return found


@router.get("/channels")
def list_channels(context: ContextDep, db: SessionDep, user: CurrentUser) -> list[ChannelPublic]:
    """List your channels (destinations masked, secrets never shown)."""
    return [ChannelPublic(**_public(r)) for r in _service(context, db, user).channels()]


@router.get("/events")
def event_catalogue(_user: CurrentUser) -> EventCatalogue:
    """List the event types a channel may subscribe to (``events``) and the severities
    (``minSeverity``); the test message reaches every channel and is not listed."""
    return EventCatalogue(
        events=[
            EventTypePublic(type=t.value, severity=SEVERITY[t].value, system=t in SYSTEM_EVENTS)
            for t in EventType
            if t is not EventType.TEST
        ],
        severities=[s.value for s in Severity],
    )


@router.post("/channels", status_code=status.HTTP_201_CREATED)
def create_channel(
    body: ChannelCreate, context: ContextDep, db: SessionDep, user: CurrentUser
) -> ChannelCreated:
    """Add a channel; a webhook's signing secret is in this answer only."""
    values = {
        "kind": body.kind,
        "url": body.url.get_secret_value() if body.url is not None else None,
        "bot_token": body.bot_token.get_secret_value() if body.bot_token is not None else None,
        "chat_id": body.chat_id,
        "address": body.address,
    }
    row, config = _service(context, db, user).create(
        body.name,
        values,
        events=body.events,
        min_severity=body.min_severity,
        bot_ids=body.bot_ids,
        quiet_start=body.quiet_start,
        quiet_end=body.quiet_end,
        timezone=body.timezone,
        daily_summary_at=body.daily_summary_at,
    )
    db.commit()
    return ChannelCreated(**_public(row), signing_secret=config.secret)


@router.patch("/channels/{channel_id}")
def update_channel(
    channel_id: IdPath,
    body: ChannelUpdate,
    context: ContextDep,
    db: SessionDep,
    user: CurrentUser,
) -> ChannelPublic:
    """Change one of your channels' name, subscription (events, bots, minimum severity, quiet
    hours, daily summary time and their time zone) or pause it (``enabled: false``)."""
    changes = body.model_dump(exclude_unset=True, by_alias=False)
    row = _service(context, db, user).update(channel_id, changes)
    db.commit()
    return ChannelPublic(**_public(row))


@router.post("/channels/{channel_id}/rotate-secret")
def rotate_secret(
    channel_id: IdPath, context: ContextDep, db: SessionDep, user: CurrentUser
) -> SecretRotated:
    """Give one of your webhook channels a new signing secret, shown in this answer only.

    For the operator's grace period (``CRYPTOORCH_NOTIFY__SECRET_GRACE_S``, a day by default)
    every request is signed with the old secret and the new one, so receivers can switch.
    """
    row, secret, until = _service(context, db, user).rotate_secret(channel_id)
    db.commit()
    return SecretRotated(id=row.id, signing_secret=secret, previous_valid_until=until)


@router.delete("/channels/{channel_id}")
def delete_channel(
    channel_id: IdPath, context: ContextDep, db: SessionDep, user: CurrentUser
) -> DeletedPublic:
    """Delete one of your channels and its delivery log."""
    _service(context, db, user).delete(channel_id)
    db.commit()
    return DeletedPublic(id=channel_id, outcome="deleted")


@router.post("/channels/{channel_id}/test")
async def test_channel(
    channel_id: IdPath, request: Request, context: ContextDep, db: SessionDep, user: CurrentUser
) -> TestResult:
    """Send a test message to one of your channels now; say whether it was acknowledged."""
    row = _service(context, db, user).get(channel_id)
    error = await _dispatcher(request).send_test(row)
    return TestResult(ok=error is None, error=error)


@router.get("")
def delivery_log(
    db: SessionDep,
    user: CurrentUser,
    status_: Annotated[
        Literal["held", "pending", "sending", "sent", "dead"] | None, Query(alias="status")
    ] = None,
    channel_id: Annotated[int | None, Query(alias="channelId", ge=1, le=2_147_483_647)] = None,
    before: Annotated[int | None, Query(ge=1, description="rows with a smaller id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[NotificationPublic]:
    """Your notifications, newest first, with their delivery status."""
    query = select(Notification).where(Notification.user_id == user.id)
    if status_ is not None:
        query = query.where(Notification.status == status_)
    if channel_id is not None:
        query = query.where(Notification.channel_id == channel_id)
    if before is not None:
        query = query.where(Notification.id < before)
    rows = db.scalars(query.order_by(Notification.id.desc()).limit(limit)).all()
    return [
        NotificationPublic(
            id=r.id,
            channel_id=r.channel_id,
            event_key=r.event_key,
            event_type=r.event_type,
            severity=r.severity,
            title=str((r.payload or {}).get("title", "")),
            status=r.status,
            attempts=r.attempts,
            message_id=r.batch_key,
            last_error=r.last_error,
            created_at=r.created_at,
            next_attempt_at=r.next_attempt_at,
            sent_at=r.sent_at,
        )
        for r in rows
    ]


@router.post("/{notification_id}/retry")
def retry_notification(notification_id: IdPath, db: SessionDep, user: CurrentUser) -> RetryPublic:
    """Queue a dead notification again (with the rest of its message, under the same id)."""
    requeued = retry_dead(db, user.id, notification_id)
    if requeued == 0:
        raise NotFoundError(f"no dead notification {notification_id} of yours")
    db.commit()
    return RetryPublic(requeued=requeued)

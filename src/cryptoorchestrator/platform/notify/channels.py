"""Users' notification channels: validated, secrets encrypted at rest, shown masked.

Each channel's destination and secrets are one JSON document sealed with the platform's
:class:`~cryptoorchestrator.platform.crypto.SecretBox`, bound to the channel's id, so a copied
ciphertext does not decrypt in another row.  Nothing here logs a secret; decrypted values are
registered with the log redactor by the box itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cryptoorchestrator.platform.crypto import SecretBox
from cryptoorchestrator.platform.errors import InvalidInputError, NotFoundError
from cryptoorchestrator.platform.logs import register_secret
from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.events import EventType, Severity
from cryptoorchestrator.platform.notify.subscriptions import (
    QuietHours,
    check_bots,
    check_daily_summary,
)
from cryptoorchestrator.platform.notify.urls import (
    DISCORD_HOSTS,
    SLACK_HOSTS,
    check_channel_url,
    policy_of,
)
from cryptoorchestrator.platform.storage.models import Bot, Notification, NotificationChannel
from cryptoorchestrator.platform.storage.types import utcnow

_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
_CHAT = re.compile(r"^(-?\d{1,20}|@[A-Za-z0-9_]{5,32})$")
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_CHANNELS = 20


class ChannelKind(StrEnum):
    """The kinds of channel."""

    WEBHOOK = "webhook"
    TELEGRAM = "telegram"
    DISCORD = "discord"
    SLACK = "slack"
    EMAIL = "email"


@dataclass(frozen=True)
class ChannelConfig:
    """A channel's destination and secrets, decrypted (never logged, never returned)."""

    kind: ChannelKind
    url: str | None = None
    secret: str | None = None
    bot_token: str | None = None
    chat_id: str | None = None
    address: str | None = None
    previous_secret: str | None = None
    previous_until: str | None = None

    def __repr__(self) -> str:
        return f"ChannelConfig(kind={self.kind.value!r}, ...)"

    def signing_secrets(self, now: datetime) -> tuple[str, list[str]]:
        """The webhook's secret and the ones it also signs with now (a rotation's old one)."""
        assert self.secret is not None
        also: list[str] = []
        if self.previous_secret and self.previous_until:
            if now < datetime.fromisoformat(self.previous_until):
                also.append(self.previous_secret)
        return self.secret, also


def _purpose(channel_id: int) -> str:
    return f"notification_channel:{channel_id}:config"


def _required(values: dict[str, Any], field: str) -> str:
    value = values.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(field, "is required for this kind of channel")
    return value.strip()


def _host_hint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def build_config(values: dict[str, Any], settings: NotifySettings) -> tuple[ChannelConfig, str]:
    """Validate a new channel's destination; return its config and its masked hint.

    Parameters
    ----------
    values
        ``kind`` and the kind's fields: ``url`` (webhook, discord, slack), ``bot_token`` and
        ``chat_id`` (telegram), ``address`` (email).
    settings
        The operator's notification settings (allowed hosts, SMTP server).

    Raises
    ------
    InvalidInputError
        Naming the field that is wrong and what is allowed.
    """
    raw_kind = values.get("kind")
    try:
        kind = ChannelKind(str(raw_kind))
    except ValueError as exc:
        raise InvalidInputError("kind", "unknown channel kind", allowed=list(ChannelKind)) from exc
    policy = policy_of(settings.allowed_hosts)
    if kind is ChannelKind.WEBHOOK:
        url = check_channel_url(_required(values, "url"), policy, field="url")
        return ChannelConfig(kind, url=url, secret=signing.new_secret()), _host_hint(url)
    if kind in (ChannelKind.DISCORD, ChannelKind.SLACK):
        official = DISCORD_HOSTS if kind is ChannelKind.DISCORD else SLACK_HOSTS
        prefix = "/api/webhooks/" if kind is ChannelKind.DISCORD else "/services/"
        url = check_channel_url(
            _required(values, "url"), policy, field="url", official_hosts=official
        )
        if not urlsplit(url).path.startswith(prefix):
            raise InvalidInputError("url", f"must be an incoming webhook URL ({prefix}...)")
        return ChannelConfig(kind, url=url), _host_hint(url)
    if kind is ChannelKind.TELEGRAM:
        token = _required(values, "bot_token")
        if not _TOKEN.match(token):
            raise InvalidInputError("botToken", "is not a Telegram bot token (<digits>:<secret>)")
        chat = _required(values, "chat_id")
        if not _CHAT.match(chat):
            raise InvalidInputError("chatId", "must be a numeric chat id or @channelname")
        return ChannelConfig(kind, bot_token=token, chat_id=chat), f"telegram chat {chat}"
    address = _required(values, "address")
    if len(address) > 254 or not _EMAIL.match(address):
        raise InvalidInputError("address", "is not an email address")
    if not settings.smtp_host:
        raise InvalidInputError("kind", "email is not available: no SMTP server is configured")
    return ChannelConfig(kind, address=address), f"email {address}"


def check_subscription(events: list[str] | None, min_severity: str | None) -> None:
    """Refuse unknown event types or severities (422 naming ``events`` / ``minSeverity``)."""
    known = {e.value for e in EventType}
    for event in events or []:
        if event not in known:
            raise InvalidInputError(
                "events", f"unknown event type {event!r}", allowed=sorted(known)
            )
    if min_severity is not None and min_severity not in {s.value for s in Severity}:
        raise InvalidInputError("minSeverity", "unknown severity", allowed=list(Severity))


def seal(box: SecretBox, channel_id: int, config: ChannelConfig) -> bytes:
    """Return ``config`` encrypted for channel ``channel_id``."""
    for value in (config.url, config.secret, config.bot_token, config.previous_secret):
        register_secret(value)
    document = {k: v for k, v in asdict(config).items() if v is not None}
    return box.encrypt(json.dumps(document), _purpose(channel_id))


def open_config(box: SecretBox, channel: NotificationChannel) -> ChannelConfig:
    """Return a stored channel's decrypted config."""
    if channel.config_enc is None:
        raise NotFoundError(f"notification channel {channel.id} has no destination")
    document = json.loads(box.decrypt(channel.config_enc, _purpose(channel.id)))
    document["kind"] = ChannelKind(document["kind"])
    return ChannelConfig(**document)


class ChannelService:
    """One user's channels (every query is scoped to the owner).

    Parameters
    ----------
    session
        The request's session (the caller commits).
    box
        The platform's secret box.
    settings
        The operator's notification settings.
    user_id
        The owner.
    """

    def __init__(
        self, session: Session, box: SecretBox, settings: NotifySettings, user_id: int
    ) -> None:
        self.session = session
        self.box = box
        self.settings = settings
        self.user_id = user_id

    def channels(self) -> list[NotificationChannel]:
        """Return the owner's channels, oldest first."""
        return list(
            self.session.scalars(
                select(NotificationChannel)
                .where(NotificationChannel.user_id == self.user_id)
                .order_by(NotificationChannel.id)
            )
        )

    def get(self, channel_id: int) -> NotificationChannel:
        """Return one of the owner's channels (404 for anyone else's)."""
        row = self.session.get(NotificationChannel, channel_id)
        if row is None or row.user_id != self.user_id:
            raise NotFoundError(f"notification channel {channel_id} not found")
        return row

    def _check_bots(self, bot_ids: Any) -> list[int] | None:
        ids = check_bots(bot_ids)
        if ids:
            mine = set(
                self.session.scalars(
                    select(Bot.id).where(Bot.id.in_(ids), Bot.user_id == self.user_id)
                )
            )
            unknown = [b for b in ids if b not in mine]
            if unknown:
                raise InvalidInputError(
                    "botIds", f"unknown bot ids {unknown[:5]}", allowed="ids of your own bots"
                )
        return ids

    def create(
        self,
        name: str,
        values: dict[str, Any],
        *,
        events: list[str] | None = None,
        min_severity: str = Severity.INFO.value,
        bot_ids: list[int] | None = None,
        quiet_start: str | None = None,
        quiet_end: str | None = None,
        timezone: str = "UTC",
        daily_summary_at: str | None = None,
    ) -> tuple[NotificationChannel, ChannelConfig]:
        """Validate and store a channel; return it and its config (the webhook secret in it).

        Raises
        ------
        InvalidInputError
            For a bad destination, event type, severity, bot id, quiet hours, daily summary
            time or time zone, a duplicate name, or too many channels.
        """
        check_subscription(events, min_severity)
        QuietHours.parse(quiet_start, quiet_end, timezone)
        summary_at = check_daily_summary(daily_summary_at)
        bots = self._check_bots(bot_ids)
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInputError("name", "must be 1 to 100 characters")
        existing = self.channels()
        if any(c.name == name for c in existing):
            raise InvalidInputError("name", "you already have a channel with this name")
        if len(existing) >= MAX_CHANNELS:
            raise InvalidInputError("name", f"at most {MAX_CHANNELS} channels per user")
        config, hint = build_config(values, self.settings)
        row = NotificationChannel(
            user_id=self.user_id,
            name=name,
            kind=config.kind.value,
            target_hint=hint,
            events=sorted(set(events)) if events is not None else None,
            min_severity=min_severity,
            bot_ids=bots,
            quiet_start=quiet_start,
            quiet_end=quiet_end,
            timezone=timezone or "UTC",
            daily_summary_at=summary_at,
            enabled=True,
        )
        self.session.add(row)
        self.session.flush()  # the id binds the ciphertext to this row
        row.config_enc = seal(self.box, row.id, config)
        return row, config

    def update(
        self, channel_id: int, changes: dict[str, Any], *, now: datetime | None = None
    ) -> NotificationChannel:
        """Change one of the owner's channels' name, subscription or ``enabled``.

        ``changes`` holds only the fields given (``name``, ``events``, ``bot_ids``,
        ``min_severity``, ``quiet_start``, ``quiet_end``, ``timezone``, ``daily_summary_at``,
        ``enabled``; None clears ``events``, ``bot_ids``, the quiet hours and the daily
        summary).  Rows held by the old quiet hours
        are rescheduled to the end of the new window (or released now).

        Raises
        ------
        InvalidInputError
            Naming the field that is wrong.
        """
        row = self.get(channel_id)
        known = {
            "name",
            "events",
            "bot_ids",
            "min_severity",
            "quiet_start",
            "quiet_end",
            "timezone",
            "daily_summary_at",
            "enabled",
        }
        for key in changes:
            if key not in known:
                raise InvalidInputError(key, "cannot be changed", allowed=sorted(known))
        events = changes.get("events", row.events)
        min_severity = changes.get("min_severity", row.min_severity)
        if min_severity is None:
            raise InvalidInputError("minSeverity", "unknown severity", allowed=list(Severity))
        check_subscription(events, min_severity)
        start = changes.get("quiet_start", row.quiet_start)
        end = changes.get("quiet_end", row.quiet_end)
        zone = changes.get("timezone", row.timezone) or "UTC"
        quiet = QuietHours.parse(start, end, zone)
        summary_at = (
            check_daily_summary(changes["daily_summary_at"])
            if "daily_summary_at" in changes
            else row.daily_summary_at
        )
        bots = self._check_bots(changes["bot_ids"]) if "bot_ids" in changes else row.bot_ids
        if "name" in changes:
            name = str(changes["name"] or "").strip()
            if not name or len(name) > 100:
                raise InvalidInputError("name", "must be 1 to 100 characters")
            if any(c.name == name and c.id != row.id for c in self.channels()):
                raise InvalidInputError("name", "you already have a channel with this name")
            row.name = name
        if "enabled" in changes:
            if not isinstance(changes["enabled"], bool):
                raise InvalidInputError("enabled", "must be true or false")
            row.enabled = changes["enabled"]
        row.events = sorted(set(events)) if events is not None else None
        row.min_severity = min_severity
        row.bot_ids = bots
        row.quiet_start, row.quiet_end, row.timezone = start, end, zone
        row.daily_summary_at = summary_at
        at = now or utcnow()
        release = quiet.release_at(at) if quiet is not None else None
        self.session.execute(
            update(Notification)
            .where(Notification.channel_id == row.id, Notification.status == "held")
            .values(next_attempt_at=release or at)
            .execution_options(synchronize_session=False)
        )
        return row

    def rotate_secret(
        self, channel_id: int, *, now: datetime | None = None
    ) -> tuple[NotificationChannel, str, datetime | None]:
        """Give a webhook channel a new signing secret.

        Returns the channel, the new secret and until when the old one signs too (None
        without a grace period).

        For ``settings.secret_grace_s`` the old secret still signs too (each request then
        carries both signatures), so receivers can switch without losing a message.

        Raises
        ------
        InvalidInputError
            If the channel is not a webhook (only webhooks are signed).
        """
        row = self.get(channel_id)
        config = open_config(self.box, row)
        if config.kind is not ChannelKind.WEBHOOK or config.secret is None:
            raise InvalidInputError(
                "kind", "only webhook channels have a signing secret", allowed=["webhook"]
            )
        at = now or utcnow()
        fresh = signing.new_secret()
        grace = self.settings.secret_grace_s
        until = at + timedelta(seconds=grace) if grace > 0 else None
        rotated = replace(
            config,
            secret=fresh,
            previous_secret=config.secret if until is not None else None,
            previous_until=until.isoformat() if until is not None else None,
        )
        row.config_enc = seal(self.box, row.id, rotated)
        return row, fresh, until

    def delete(self, channel_id: int) -> None:
        """Delete one of the owner's channels (its delivery log goes with it)."""
        self.session.delete(self.get(channel_id))

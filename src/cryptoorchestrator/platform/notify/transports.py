"""Sending one message to one channel: signed webhooks, Telegram, Discord, Slack, email.

Every HTTP request goes through a connector whose resolver refuses non-public addresses of
hosts the operator did not allow (the addresses checked are the ones connected to), never
follows a redirect, ignores proxy settings from the environment, and times out.  The channel's
URL is checked again before each send (:func:`~.urls.check_channel_url`).  Error texts never
contain a URL or a token.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import smtplib
import socket
import ssl
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from cryptoorchestrator.platform.exchange.urls import UrlPolicy, is_public_address
from cryptoorchestrator.platform.notify import ratelimit, signing
from cryptoorchestrator.platform.notify.channels import ChannelConfig, ChannelKind
from cryptoorchestrator.platform.notify.config import NotifySettings
from cryptoorchestrator.platform.notify.urls import (
    DISCORD_HOSTS,
    SLACK_HOSTS,
    check_channel_url,
    policy_of,
)

#: Longest texts the chat services accept.
LIMITS = {
    ChannelKind.TELEGRAM: 4096,
    ChannelKind.DISCORD: 2000,
    ChannelKind.SLACK: 3900,
    ChannelKind.EMAIL: 100_000,
}
#: Events listed one per line in a digest; the rest are counted.
DIGEST_LINES = 20
#: HTTP statuses worth retrying (besides 5xx and redirects, which may be temporary).
RETRYABLE = frozenset({408, 425, 429})


class DeliveryError(Exception):
    """A send failed.

    Parameters
    ----------
    message
        What went wrong (no URL, no token).
    retryable
        Whether a later attempt may succeed (False: dead-letter at once).
    retry_after
        Seconds the receiver asked us to wait.
    """

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Message:
    """What one send carries: the idempotency key and the coalesced events."""

    key: str
    events: list[dict[str, Any]]

    def subject(self) -> str:
        """One line: the event's title, or a digest's summary."""
        if len(self.events) == 1:
            return str(self.events[0].get("title", ""))
        counts = Counter(str(e.get("type")) for e in self.events)
        parts = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
        return f"{len(self.events)} events: {parts}"

    def text(self, limit: int) -> str:
        """Plain text for humans, at most ``limit`` characters; a digest lists the first ones."""
        if len(self.events) == 1:
            event = self.events[0]
            title, text = event.get("title") or "", event.get("text") or ""
            detail = f"\n{text}" if text and text != title else ""
            body = f"[{event.get('severity')}] {title}{detail}"
        else:
            lines = [self.subject()]
            lines += [f"- {e.get('title')}" for e in self.events[:DIGEST_LINES]]
            if len(self.events) > DIGEST_LINES:
                lines.append(f"... and {len(self.events) - DIGEST_LINES} more (delivery log)")
            body = "\n".join(lines)
        return body if len(body) <= limit else body[: limit - 1] + "…"

    def body(self) -> bytes:
        """The webhook's JSON body: every event in full."""
        document = {"id": self.key, "type": "notifications", "events": self.events}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


class _GuardedResolver:
    """aiohttp resolver: only public addresses, unless the operator allows the host."""

    def __init__(self, policy: UrlPolicy) -> None:
        from aiohttp import ThreadedResolver

        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        infos = await self._inner.resolve(host, port, family)
        if self._policy.explicitly_allowed(host, port):
            return list(infos)
        public = [i for i in infos if is_public_address(str(i["host"]))]
        if not public:
            raise OSError("the host has no public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


class Sender:
    """Sends messages; one per dispatcher (it paces per destination).

    Parameters
    ----------
    settings
        The operator's notification settings.
    pacer
        Per-destination pacing (a fresh one by default).
    """

    def __init__(self, settings: NotifySettings, pacer: ratelimit.Pacer | None = None) -> None:
        self.settings = settings
        self.pacer = pacer or ratelimit.Pacer()
        base = urlsplit(settings.telegram_api_base)
        hosts = list(settings.allowed_hosts)
        if base.hostname:  # the operator's own setting: trusted like an allowed host
            hosts.append(f"{base.hostname}:{base.port or (443 if base.scheme == 'https' else 80)}")
        self.policy = policy_of(hosts)

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        # Built once: loading the system's CA store for every message was most of the
        # dispatcher's CPU, taken from the bots on a small head node (docs/bots.md has figures).
        return ssl.create_default_context()

    @functools.cached_property
    def _smtp_tls(self) -> ssl.SSLContext:
        # The server's certificate is always checked: against the operator's CA file (a
        # self-signed relay) or the system's CAs.
        return ssl.create_default_context(cafile=self.settings.smtp_ca_file)

    async def send(self, config: ChannelConfig, message: Message) -> None:
        """Send ``message`` on the channel of ``config``.

        Raises
        ------
        DeliveryError
            If the receiver did not acknowledge it.
        """
        if config.kind is ChannelKind.EMAIL:
            await asyncio.to_thread(self._send_email, config, message)
            return
        if config.kind is ChannelKind.WEBHOOK:
            assert config.url is not None
            assert config.secret is not None
            url = self._checked(config.url, None)
            body = message.body()
            secret, also = config.signing_secrets(datetime.now(UTC))
            headers = signing.headers(secret, message.key, body, also=also)
            headers["Content-Type"] = "application/json"
            await self._post(url, body, headers, [])
            return
        if config.kind is ChannelKind.TELEGRAM:
            assert config.bot_token is not None
            bot = hashlib.sha256(config.bot_token.encode()).hexdigest()[:16]
            url = f"{self.settings.telegram_api_base.rstrip('/')}/bot{config.bot_token}/sendMessage"
            payload = {
                "chat_id": config.chat_id,
                "text": message.text(LIMITS[config.kind]),
                "disable_web_page_preview": True,
            }
            keys = [
                (f"tg:{bot}", ratelimit.TELEGRAM_BOT_S),
                (f"tg:{bot}:{config.chat_id}", ratelimit.TELEGRAM_CHAT_S),
            ]
            await self._post(url, json.dumps(payload).encode(), _json(message.key), keys)
            return
        assert config.url is not None
        discord = config.kind is ChannelKind.DISCORD
        url = self._checked(config.url, DISCORD_HOSTS if discord else SLACK_HOSTS)
        text = message.text(LIMITS[config.kind])
        payload = {"content": text} if discord else {"text": text}
        hook = hashlib.sha256(url.encode()).hexdigest()[:16]
        interval = ratelimit.DISCORD_WEBHOOK_S if discord else ratelimit.SLACK_WEBHOOK_S
        await self._post(
            url, json.dumps(payload).encode(), _json(message.key), [(f"hook:{hook}", interval)]
        )

    def _checked(self, url: str, official: frozenset[str] | None) -> str:
        from cryptoorchestrator.platform.errors import InvalidInputError

        try:
            return check_channel_url(
                url, self.policy, field="url", official_hosts=official, resolve_host=False
            )
        except InvalidInputError as exc:
            raise DeliveryError(f"destination refused: {exc.reason}", retryable=False) from exc

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], keys: list[tuple[str, float]]
    ) -> None:
        import aiohttp

        await self.pacer.wait(keys)
        timeout = aiohttp.ClientTimeout(total=self.settings.send_timeout_s)
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(self.policy),  # type: ignore[arg-type]
            use_dns_cache=False,
            ssl=self._tls,
        )
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=timeout, trust_env=False
                ) as session,
                session.post(url, data=body, headers=headers, allow_redirects=False) as response,
            ):
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                if status == 429 and keys:
                    self.pacer.hold(keys[-1][0], retry_after or 1.0)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(f"could not reach the receiver ({type(exc).__name__})") from exc
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise DeliveryError(f"receiver answered a redirect ({status}); not followed")
        retryable = status >= 500 or status in RETRYABLE
        raise DeliveryError(
            f"receiver answered HTTP {status}", retryable=retryable, retry_after=retry_after
        )

    def _send_email(self, config: ChannelConfig, message: Message) -> None:
        s = self.settings
        if not s.smtp_host:
            raise DeliveryError("no SMTP server is configured", retryable=False)
        mail = EmailMessage()
        mail["Subject"] = message.subject()[:200]
        mail["From"] = s.smtp_from
        mail["To"] = config.address
        # Mail clients and filters dedupe on Message-ID; retries reuse it.
        mail["Message-ID"] = f"<{message.key}@cryptoorchestrator>"
        mail["Idempotency-Key"] = message.key
        mail.set_content(message.text(LIMITS[ChannelKind.EMAIL]))
        try:
            context = self._smtp_tls
            if s.smtp_ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host, s.smtp_port, timeout=s.send_timeout_s, context=context
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s)
            with smtp:
                if s.smtp_starttls and not s.smtp_ssl:
                    smtp.starttls(context=context)
                if s.smtp_username and s.smtp_password is not None:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError("the mail server refused the address", retryable=False) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"mail server error ({type(exc).__name__})") from exc


def _json(key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": key}


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else max(float(value), 0.0)
    except ValueError:
        return None

"""``cryptoorch notify``: your notification channels, over the API (the SDK's ``co.Client``).

Channels belong to a user, and test sends go through the head node's dispatcher, so these
commands talk to the running API as you: ``--api-url`` (``CRYPTOORCH_API_URL``), and either an
access token (``CRYPTOORCH_TOKEN``) or ``--email`` (``CRYPTOORCH_EMAIL``) with the password in
``CRYPTOORCH_PASSWORD`` or asked for.  Secrets (a webhook URL, a Telegram bot token) are read
from standard input when given as ``-``, so they stay off shared command lines; a signing
secret is printed once, by ``add`` and ``rotate``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Notification channels: webhooks, Telegram, Discord, Slack, email.",
    no_args_is_help=True,
)
console = Console()

ApiUrl = Annotated[
    str, typer.Option("--api-url", envvar="CRYPTOORCH_API_URL", help="The head node's API.")
]
Token = Annotated[
    str | None,
    typer.Option("--token", envvar="CRYPTOORCH_TOKEN", help="An access token.", show_default=False),
]
Email = Annotated[
    str | None,
    typer.Option("--email", envvar="CRYPTOORCH_EMAIL", help="Log in as (without --token)."),
]
ChannelId = Annotated[int, typer.Argument(help="The channel's id (see `notify channels`).")]


class _Login:
    """How to reach the API, from the group's options."""

    def __init__(self, api_url: str, token: str | None, email: str | None) -> None:
        self.api_url = api_url
        self.token = token
        self.email = email


def _client(login: _Login) -> Any:
    """Return a ``co.Client`` logged in as the options say (tests replace this function)."""
    from cryptoorchestrator.client import Client
    from cryptoorchestrator.platform.errors import InvalidInputError

    client = Client(login.api_url, token=login.token)
    if login.token:
        return client
    if not login.email:
        client.close()
        raise InvalidInputError(
            "--token", "sign in first", allowed="--token/CRYPTOORCH_TOKEN or --email"
        )
    password = os.environ.get("CRYPTOORCH_PASSWORD") or typer.prompt("password", hide_input=True)
    client.login(login.email, password)
    return client


def _api(ctx: typer.Context) -> Any:
    login: _Login = ctx.obj
    return _client(login)


def _secret(value: str | None) -> str | None:
    """``-`` reads the value from the first line of standard input."""
    if value != "-":
        return value
    return sys.stdin.readline().rstrip("\r\n")


def _quiet(value: str | None) -> tuple[str | None, str | None]:
    from cryptoorchestrator.platform.errors import InvalidInputError

    if value is None or value == "":
        return None, None
    start, sep, end = value.partition("-")
    if not sep:
        raise InvalidInputError("--quiet", f"malformed {value!r}", allowed="HH:MM-HH:MM")
    return start.strip(), end.strip()


@app.callback()
def _group(
    ctx: typer.Context,
    api_url: ApiUrl = "http://127.0.0.1:8000",
    token: Token = None,
    email: Email = None,
) -> None:
    """Notification channels (``cryptoorch notify --help``)."""
    ctx.obj = _Login(api_url, token, email)


def _subscription(row: dict[str, Any]) -> str:
    parts = []
    if row.get("events"):
        parts.append(",".join(row["events"]))
    if row.get("botIds"):
        parts.append("bots " + ",".join(str(b) for b in row["botIds"]))
    parts.append(f">={row.get('minSeverity')}")
    if row.get("quietStart"):
        parts.append(f"quiet {row['quietStart']}-{row['quietEnd']} {row.get('timezone')}")
    if row.get("dailySummaryAt"):
        parts.append(f"summary {row['dailySummaryAt']} {row.get('timezone')}")
    return "; ".join(parts)


@app.command()
def channels(ctx: typer.Context) -> None:
    """List your channels (destinations masked, secrets never shown)."""
    with _api(ctx) as api:
        rows = api.notification_channels()
    table = Table("id", "name", "kind", "target", "subscription", "enabled", "last sent")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["name"],
            r["kind"],
            r["target"],
            _subscription(r),
            "yes" if r["enabled"] else "no",
            str(r["lastSentAt"] or ""),
        )
    console.print(table)


@app.command()
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the channel.")],
    kind: Annotated[str, typer.Option(help="webhook, telegram, discord, slack or email.")],
    url: Annotated[
        str | None, typer.Option(help="webhook/discord/slack URL (- reads it from stdin).")
    ] = None,
    bot_token: Annotated[
        str | None, typer.Option(help="telegram: the bot's token (- reads it from stdin).")
    ] = None,
    chat_id: Annotated[str | None, typer.Option(help="telegram: the chat id.")] = None,
    address: Annotated[str | None, typer.Option(help="email: the recipient.")] = None,
    event: Annotated[
        list[str], typer.Option(help="An event type to receive (repeat; all if omitted).")
    ] = [],  # noqa: B006 (typer's idiom for a repeatable option)
    bot: Annotated[
        list[int], typer.Option(help="Only this bot's events (repeat; all if omitted).")
    ] = [],  # noqa: B006
    min_severity: Annotated[str, typer.Option(help="info, warning, error or critical.")] = "info",
    quiet: Annotated[
        str | None, typer.Option(help="Quiet hours HH:MM-HH:MM (non-critical events held).")
    ] = None,
    timezone: Annotated[
        str, typer.Option(help="IANA zone of the quiet hours and the daily summary.")
    ] = "UTC",
    daily_summary: Annotated[
        str | None, typer.Option(help="Send a daily summary at HH:MM (off if omitted).")
    ] = None,
) -> None:
    """Add a channel; a webhook's signing secret is printed this once."""
    start, end = _quiet(quiet)
    fields: dict[str, Any] = {
        "url": _secret(url),
        "botToken": _secret(bot_token),
        "chatId": chat_id,
        "address": address,
        "events": event or None,
        "botIds": bot or None,
        "minSeverity": min_severity,
        "quietStart": start,
        "quietEnd": end,
        "timezone": timezone,
        "dailySummaryAt": daily_summary or None,
    }
    with _api(ctx) as api:
        row = api.add_notification_channel(name, kind, **fields)
    typer.echo(f"created channel {row['id']} ({row['name']}, {row['kind']} {row['target']})")
    if row.get("signingSecret"):
        typer.echo(f"signing secret (shown once, keep it): {row['signingSecret']}")


@app.command()
def edit(
    ctx: typer.Context,
    channel: ChannelId,
    event: Annotated[list[str], typer.Option(help="Event types (repeat).")] = [],  # noqa: B006
    all_events: Annotated[bool, typer.Option(help="Receive every event type.")] = False,
    bot: Annotated[list[int], typer.Option(help="Only these bots (repeat).")] = [],  # noqa: B006
    all_bots: Annotated[bool, typer.Option(help="Every bot's events.")] = False,
    min_severity: Annotated[str | None, typer.Option(help="info ... critical.")] = None,
    quiet: Annotated[
        str | None, typer.Option(help="Quiet hours HH:MM-HH:MM; '' removes them.")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA zone of the quiet hours and the daily summary.")
    ] = None,
    daily_summary: Annotated[
        str | None, typer.Option(help="Daily summary at HH:MM; '' turns it off.")
    ] = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
) -> None:
    """Change a channel's subscription, or pause it."""
    changes: dict[str, Any] = {}
    if event or all_events:
        changes["events"] = None if all_events else event
    if bot or all_bots:
        changes["botIds"] = None if all_bots else bot
    if min_severity is not None:
        changes["minSeverity"] = min_severity
    if quiet is not None:
        changes["quietStart"], changes["quietEnd"] = _quiet(quiet)
    if timezone is not None:
        changes["timezone"] = timezone
    if daily_summary is not None:
        changes["dailySummaryAt"] = daily_summary or None
    if enabled is not None:
        changes["enabled"] = enabled
    with _api(ctx) as api:
        row = api.update_notification_channel(channel, **changes)
    typer.echo(f"channel {row['id']} ({row['name']}): {_subscription(row)}")


@app.command()
def test(ctx: typer.Context, channel: ChannelId) -> None:
    """Send a test message now; exit 1 if the receiver did not acknowledge it."""
    with _api(ctx) as api:
        result = api.test_notification_channel(channel)
    if result["ok"]:
        typer.echo(f"channel {channel}: test message acknowledged")
        return
    typer.echo(f"channel {channel}: test failed: {result['error']}", err=True)
    raise typer.Exit(1)


@app.command()
def remove(ctx: typer.Context, channel: ChannelId) -> None:
    """Delete a channel and its delivery log."""
    with _api(ctx) as api:
        api.remove_notification_channel(channel)
    typer.echo(f"channel {channel} deleted")


@app.command()
def rotate(ctx: typer.Context, channel: ChannelId) -> None:
    """Give a webhook channel a new signing secret (printed once; the old one signs too for
    the grace period)."""
    with _api(ctx) as api:
        row = api.rotate_notification_secret(channel)
    typer.echo(f"new signing secret (shown once, keep it): {row['signingSecret']}")
    if row.get("previousValidUntil"):
        typer.echo(f"the old secret also signs until {row['previousValidUntil']}")


@app.command()
def dead(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="Newest N.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List your dead-lettered notifications (retry one with `notify retry ID`)."""
    with _api(ctx) as api:
        rows = api.dead_letters(limit=limit)
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table("id", "channel", "event", "title", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["channelId"]),
            r["eventKey"],
            r["title"],
            str(r["attempts"]),
            r["lastError"] or "",
        )
    console.print(table)


@app.command()
def retry(
    ctx: typer.Context,
    notification: Annotated[int, typer.Argument(help="A dead notification's id.")],
) -> None:
    """Queue a dead notification again (with the rest of its message, under the same id)."""
    with _api(ctx) as api:
        result = api.retry_notification(notification)
    typer.echo(f"requeued {result['requeued']} notification(s)")

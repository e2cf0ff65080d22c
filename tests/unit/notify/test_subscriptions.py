"""Subscriptions: bot filters, quiet hours in the user's zone (midnight, DST), rotation's
double signatures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.notify import signing
from cryptoorchestrator.platform.notify.channels import ChannelConfig, ChannelKind
from cryptoorchestrator.platform.notify.events import Event, EventType, Severity, wants
from cryptoorchestrator.platform.notify.subscriptions import (
    QuietHours,
    check_bots,
    check_timezone,
    hold_until,
)


def _event(kind: EventType = EventType.ORDER_FILLED, bot: int | None = 7) -> Event:
    data = {} if bot is None else {"botId": bot}
    return Event(kind, f"k:{kind}", "t", "t", datetime(2026, 1, 1, tzinfo=UTC), data)


def test_bot_filter_keeps_other_bots_out_but_not_events_about_no_bot() -> None:
    assert wants(None, "info", _event(bot=7), [7, 9])
    assert not wants(None, "info", _event(bot=8), [7, 9])
    assert wants(None, "info", _event(bot=8), None)
    # The kill switch of a user scope is about no single bot: a bot filter does not hide it.
    assert wants(None, "info", _event(EventType.KILL_SWITCH_ENGAGED, bot=None), [7])
    assert not wants(["bot.error"], "info", _event(bot=7), [7])
    assert not wants(None, "error", _event(bot=7), [7])


@pytest.mark.parametrize(
    ("start", "end", "utc", "inside", "release"),
    [
        # Berlin is UTC+1 in January: 22:30 local is 21:30 UTC; the window ends 07:00 local.
        ("22:00", "07:00", datetime(2026, 1, 5, 21, 30, tzinfo=UTC), True, (2026, 1, 6, 6, 0)),
        # 03:00 local (02:00 UTC), after midnight: the release is the same local day.
        ("22:00", "07:00", datetime(2026, 1, 6, 2, 0, tzinfo=UTC), True, (2026, 1, 6, 6, 0)),
        ("22:00", "07:00", datetime(2026, 1, 6, 6, 0, tzinfo=UTC), False, None),  # 07:00 local
        ("22:00", "07:00", datetime(2026, 1, 6, 12, 0, tzinfo=UTC), False, None),
        ("12:00", "14:00", datetime(2026, 1, 6, 11, 30, tzinfo=UTC), True, (2026, 1, 6, 13, 0)),
        ("12:00", "14:00", datetime(2026, 1, 6, 10, 59, tzinfo=UTC), False, None),
        # Summer time (UTC+2): 07:00 local is 05:00 UTC.
        ("22:00", "07:00", datetime(2026, 7, 1, 1, 0, tzinfo=UTC), True, (2026, 7, 1, 5, 0)),
        # The night the clocks go forward (29 March 2026, 02:00 -> 03:00): 23:00 local on the
        # 28th is 22:00 UTC; 07:00 local on the 29th is already summer time, 05:00 UTC.
        ("22:00", "07:00", datetime(2026, 3, 28, 22, 0, tzinfo=UTC), True, (2026, 3, 29, 5, 0)),
    ],
)
def test_quiet_hours_in_the_users_zone(
    start: str,
    end: str,
    utc: datetime,
    inside: bool,
    release: tuple[int, ...] | None,
) -> None:
    quiet = QuietHours.parse(start, end, "Europe/Berlin")
    assert quiet is not None
    assert quiet.contains(utc) is inside
    expected = None if release is None else datetime(*release, tzinfo=UTC)
    assert quiet.release_at(utc) == expected


def test_critical_and_test_events_are_never_held() -> None:
    quiet = QuietHours.parse("00:00", "23:59", "UTC")
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert hold_until(quiet, _event(), now) == datetime(2026, 1, 5, 23, 59, tzinfo=UTC)
    critical = Event(EventType.BOT_ERROR, "k", "t", "t", now, severity=Severity.CRITICAL)
    assert hold_until(quiet, critical, now) is None
    assert hold_until(quiet, _event(EventType.KILL_SWITCH_ENGAGED), now) is None
    assert hold_until(quiet, _event(EventType.TEST), now) is None
    assert hold_until(None, _event(), now) is None


@pytest.mark.parametrize(
    ("start", "end", "zone", "field"),
    [
        ("22:00", None, "UTC", "quietEnd"),
        (None, "07:00", "UTC", "quietStart"),
        ("24:00", "07:00", "UTC", "quietStart"),
        ("22:00", "7:00", "UTC", "quietEnd"),
        ("22:00", "22:00", "UTC", "quietEnd"),
        ("22:00", "07:00", "Mars/Olympus", "timezone"),
        ("22:00", "07:00", "../../etc/passwd", "timezone"),
        (None, None, "Nowhere/Zone", "timezone"),
    ],
)
def test_bad_quiet_hours_name_the_field_and_what_is_allowed(
    start: str | None, end: str | None, zone: str, field: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        QuietHours.parse(start, end, zone)
    assert err.value.field == field


def test_timezone_and_bot_checks() -> None:
    assert str(check_timezone("America/New_York")) == "America/New_York"
    assert check_bots(None) is None
    assert check_bots([3, 1, 3]) == [1, 3]
    for bad in ([0], [True], ["1"], "1,2", list(range(1, 200))):
        with pytest.raises(InvalidInputError) as err:
            check_bots(bad)
        assert err.value.field == "botIds"


def test_rotated_secret_signs_with_both_until_the_grace_ends() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    until = datetime(2026, 1, 2, tzinfo=UTC)
    config = ChannelConfig(
        ChannelKind.WEBHOOK,
        url="https://example.com/h",
        secret=new,
        previous_secret=old,
        previous_until=until.isoformat(),
    )
    secret, also = config.signing_secrets(datetime(2026, 1, 1, tzinfo=UTC))
    assert (secret, also) == (new, [old])
    body = b'{"id":"m1"}'
    headers = signing.headers(secret, "m1", body, timestamp=1_700_000_000, also=also)
    assert len(headers["webhook-signature"].split()) == 2
    # A receiver that has either secret accepts the request; a stranger's does not.
    for key in (old, new):
        assert signing.verify(key, headers, body, now=1_700_000_000) == "m1"
    with pytest.raises(signing.WebhookVerificationError):
        signing.verify(signing.new_secret(), headers, body, now=1_700_000_000)
    # After the grace period only the new secret signs.
    assert config.signing_secrets(until) == (new, [])
    assert old not in repr(config)

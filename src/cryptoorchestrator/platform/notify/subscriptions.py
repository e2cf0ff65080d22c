"""What a channel subscribes to beyond event types: bots, and quiet hours in the user's zone.

Quiet hours are a daily window (``quiet_start``-``quiet_end``, ``HH:MM`` local time in the
channel's IANA ``timezone``; a window may cross midnight, ``22:00``-``07:00``).  A
non-critical event enqueued inside the window is *held*: its row is written with status
``held`` and released when the window ends, when the dispatcher sends every held row of the
channel together, as one digest (up to ``max_batch`` events per message).  ``critical`` events
(the kill switch) and test messages are never held.  Held rows do not block the channel's
other rows, so a critical event sent during the window overtakes the held ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.notify.events import Event, EventType, Severity

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ZONE = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")
#: At most this many bots in one channel's filter.
MAX_BOTS = 100
TIMEZONE_HINT = "an IANA time zone name, e.g. UTC, Europe/Berlin, America/New_York"


def check_timezone(name: str, field: str = "timezone") -> ZoneInfo:
    """Return the zone named ``name``; 422 naming ``field`` when it is not an IANA name."""
    if not isinstance(name, str) or not _ZONE.match(name) or ".." in name:
        raise InvalidInputError(field, "unknown time zone", allowed=TIMEZONE_HINT)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInputError(field, "unknown time zone", allowed=TIMEZONE_HINT) from exc


def _clock(value: str, field: str) -> time:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInputError(field, "must be a time of day", allowed="HH:MM, 00:00 to 23:59")
    return time(int(match.group(1)), int(match.group(2)))


def check_daily_summary(value: Any, field: str = "dailySummaryAt") -> str | None:
    """Return the daily summary's ``HH:MM`` (None: no summary); 422 naming ``field`` if bad."""
    if value is None:
        return None
    _clock(value, field)
    return str(value)


def check_bots(bot_ids: Any, field: str = "botIds") -> list[int] | None:
    """Return ``bot_ids`` sorted and unique (None: every bot); 422 naming ``field`` if bad."""
    if bot_ids is None:
        return None
    if not isinstance(bot_ids, list) or len(bot_ids) > MAX_BOTS:
        raise InvalidInputError(field, f"must be a list of at most {MAX_BOTS} bot ids")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bot_ids):
        raise InvalidInputError(field, "bot ids are positive integers")
    return sorted(set(bot_ids))


@dataclass(frozen=True)
class QuietHours:
    """A daily window in a time zone during which non-critical events are held.

    Attributes
    ----------
    start, end
        ``HH:MM`` local times; ``start > end`` crosses midnight.
    timezone
        The IANA zone the times are in.
    """

    start: str
    end: str
    timezone: str = "UTC"

    @classmethod
    def parse(cls, start: str | None, end: str | None, timezone: str | None) -> QuietHours | None:
        """Validate a channel's quiet hours; None when there are none.

        Raises
        ------
        InvalidInputError
            Naming ``quietStart``, ``quietEnd`` or ``timezone``.
        """
        zone = timezone or "UTC"
        check_timezone(zone)
        if start is None and end is None:
            return None
        if start is None or end is None:
            missing = "quietStart" if start is None else "quietEnd"
            raise InvalidInputError(missing, "quiet hours need both quietStart and quietEnd")
        if _clock(start, "quietStart") == _clock(end, "quietEnd"):
            raise InvalidInputError("quietEnd", "must differ from quietStart")
        return cls(start, end, zone)

    def _local(self, now: datetime) -> tuple[datetime, time, time]:
        zone = ZoneInfo(self.timezone)
        return now.astimezone(zone), _clock(self.start, "quietStart"), _clock(self.end, "quietEnd")

    def contains(self, now: datetime) -> bool:
        """Whether the UTC moment ``now`` is inside the window."""
        local, start, end = self._local(now)
        t = local.time().replace(tzinfo=None)
        return start <= t < end if start < end else (t >= start or t < end)

    def release_at(self, now: datetime) -> datetime | None:
        """The UTC moment the window around ``now`` ends; None when ``now`` is outside it."""
        if not self.contains(now):
            return None
        local, _, end = self._local(now)
        day = local.date()
        if local.time().replace(tzinfo=None) >= end:
            day += timedelta(days=1)
        # Built as a wall-clock time in the zone: a DST jump moves the release by the jump.
        ends = datetime.combine(day, end, tzinfo=local.tzinfo)
        return ends.astimezone(now.tzinfo)


def hold_until(quiet: QuietHours | None, event: Event, now: datetime) -> datetime | None:
    """When a held ``event`` is released (None: send it now).

    Critical events and test messages are never held.
    """
    if quiet is None or event.type is EventType.TEST or event.level is Severity.CRITICAL:
        return None
    return quiet.release_at(now)

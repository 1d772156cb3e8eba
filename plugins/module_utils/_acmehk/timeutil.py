# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reference time, grace period and the date formats acme2certifier writes."""

from __future__ import annotations

import calendar
import datetime
import functools
import re
import time
from typing import Any, Callable, Optional

from .errors import OptionError

REPORT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MARKER_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)
# created_at as acme2certifier stores it: SQLite CURRENT_TIMESTAMP text, sometimes with
# microseconds, a "T" separator or an offset (Django).
_DB_DATETIME_RE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?\s*"
    r"(?:Z|[+-]\d{2}(?::?\d{2})?)?\s*$",
    re.IGNORECASE,
)


def parse_now(value: Any, clock: Callable[[], float] = time.time) -> int:
    """Turn the now option into epoch seconds, reading the clock only when it is unset."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return int(clock())

    if isinstance(value, bool):
        raise OptionError(_now_message(value))
    if isinstance(value, (int, float)):
        return int(value)

    text = str(value).strip()
    if re.match(r"^[+-]?\d+(\.\d+)?$", text):
        return int(float(text))

    match = _ISO_RE.match(text)
    if not match:
        raise OptionError(_now_message(value))
    return _iso_to_epoch(match, value)


def _iso_to_epoch(match: "re.Match[str]", original: Any) -> int:
    """Convert a matched ISO 8601 time, where a naive time counts as UTC."""
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups()[:6])
    zone = match.group(8)
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise OptionError(_now_message(original) + f" ({exc})") from exc

    offset = 0
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return calendar.timegm(moment.timetuple()) - offset


def _now_message(value: Any) -> str:
    return (
        f"Invalid value for now: {value!r}. Give epoch seconds (for example 1796342400) or an "
        "ISO 8601 time (for example 2026-12-04T00:00:00Z); a time without an offset is UTC."
    )


def parse_duration(value: Any, option: str = "grace_period") -> int:
    """Turn a duration such as 3600, '72h' or '30d' into seconds."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise OptionError(_duration_message(option, value))
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            if re.match(r"^\s*-", str(value)):
                raise OptionError(
                    f"Invalid value for {option}: {value!r} is negative. A grace period moves the "
                    "cutoff into the past, so give 0 or a positive duration such as 72h."
                )
            raise OptionError(_duration_message(option, value))
        seconds = int(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]

    if seconds < 0:
        raise OptionError(
            f"Invalid value for {option}: {value!r} is negative. A grace period moves the cutoff "
            "into the past, so give 0 or a positive duration such as 72h."
        )
    return seconds


def _duration_message(option: str, value: Any) -> str:
    return (
        f"Invalid value for {option}: {value!r}. Give whole seconds (3600) or a number with one "
        "unit of s, m, h, d or w (72h, 30d)."
    )


# Formats whose directives time.strftime() renders exactly like datetime.strftime().
# datetime.strftime() treats %z, %Z and %f itself, so formats with those are not listed.
_GMTIME_FORMATS = frozenset([REPORT_DATE_FORMAT, MARKER_DATE_FORMAT])
# Epoch seconds of 1000-01-01T00:00:00Z and 9999-12-31T23:59:59Z. Values outside take the
# datetime path: below year 1000 the two functions may pad %Y differently, and beyond year
# 9999 datetime raises where time.gmtime() does not.
_GMTIME_MIN = -30610224000
_GMTIME_MAX = 253402300799


@functools.lru_cache(maxsize=256)
def format_utc(uts: int, fmt: str) -> str:
    """Format epoch seconds in UTC the way acme2certifier does.

    The cache helps reports, where an order's expiry repeats in all rows of the order.
    """
    seconds = int(uts)
    if fmt in _GMTIME_FORMATS and _GMTIME_MIN <= seconds <= _GMTIME_MAX:
        return time.strftime(fmt, time.gmtime(seconds))
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).strftime(fmt)


def parse_db_datetime(value: Any) -> Optional[int]:
    """Read a created_at value as UTC epoch seconds, or None when it is not a date.

    acme2certifier 0.46.3 reads the wall-clock part and ignores any offset, so this does too.
    """
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc)
        return calendar.timegm(value.timetuple())
    if not isinstance(value, str):
        return None

    match = _DB_DATETIME_RE.match(value)
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        return calendar.timegm(datetime.datetime(year, month, day, hour, minute, second).timetuple())
    except ValueError:
        return None

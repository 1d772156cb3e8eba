# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parsing of the now and grace_period options and of created_at values."""

from __future__ import annotations

import calendar
import datetime

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.errors import OptionError
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.timeutil import (
    format_utc,
    parse_db_datetime,
    parse_duration,
    parse_now,
)

UTC = datetime.timezone.utc


def _epoch(year, month, day, hour=0, minute=0, second=0, offset_minutes=0):
    """Return epoch seconds of a wall-clock time in a zone offset_minutes east of UTC."""
    zone = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    return int(datetime.datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp())


def _fixed_clock():
    return 1234567890.75


# parse_now --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (1796342400, 1796342400),
        (0, 0),
        ("1796342400", 1796342400),
        (" 1796342400 ", 1796342400),
        (1796342400.9, 1796342400),
        ("1796342400.5", 1796342400),
    ],
)
def test_parse_now_epoch(value, expected):
    assert parse_now(value, _fixed_clock) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-12-04T00:00:00Z", _epoch(2026, 12, 4)),
        ("2026-12-04t10:20:30z", _epoch(2026, 12, 4, 10, 20, 30)),
        ("2026-12-04T02:00:00+02:00", _epoch(2026, 12, 4, 2, 0, 0, offset_minutes=120)),
        ("2026-12-03T18:30:00-0530", _epoch(2026, 12, 3, 18, 30, 0, offset_minutes=-330)),
        ("2026-12-04T00:00:00.987Z", _epoch(2026, 12, 4)),
        ("2026-12-04T00:00", _epoch(2026, 12, 4)),
    ],
)
def test_parse_now_iso(value, expected):
    assert parse_now(value, _fixed_clock) == expected


def test_parse_now_offsets_same_instant():
    utc = parse_now("2026-12-04T00:00:00Z")
    east = parse_now("2026-12-04T02:00:00+02:00")
    west = parse_now("2026-12-03T18:30:00-0530")
    assert east == utc
    assert west == utc


@pytest.mark.parametrize("value", ["2026-12-04T10:20:30", "2026-12-04 10:20:30"])
def test_parse_now_naive_is_utc(value):
    assert parse_now(value, _fixed_clock) == calendar.timegm((2026, 12, 4, 10, 20, 30, 0, 0, 0))


def test_parse_now_date_only():
    assert parse_now("2026-12-04", _fixed_clock) == _epoch(2026, 12, 4)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_parse_now_unset_reads_clock(value):
    assert parse_now(value, _fixed_clock) == 1234567890


def test_parse_now_reads_clock_per_call():
    ticks = iter([100.0, 250.0])
    first = parse_now(None, lambda: next(ticks))
    second = parse_now(None, lambda: next(ticks))
    assert first == 100
    assert second == 250


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "12/04/2026",
        "2026-13-01",
        "2026-02-30T00:00:00Z",
        "2026-12-04T25:00:00Z",
        "2026-12-04T00:00:00+2",
        "1796342400s",
        "0x10",
    ],
)
def test_parse_now_invalid_string(value):
    with pytest.raises(OptionError) as caught:
        parse_now(value, _fixed_clock)
    assert repr(value) in caught.value.msg
    assert "2026-12-04T00:00:00Z" in caught.value.msg


@pytest.mark.parametrize("value", [True, False])
def test_parse_now_bool_rejected(value):
    with pytest.raises(OptionError) as caught:
        parse_now(value, _fixed_clock)
    assert repr(value) in caught.value.msg


# parse_duration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (3600, 3600),
        ("3600", 3600),
        (" 3600 ", 3600),
        (7200.0, 7200),
        ("45s", 45),
        ("15m", 15 * 60),
        ("72h", 72 * 3600),
        ("30d", 30 * 86400),
        ("1w", 7 * 86400),
        ("2 d", 2 * 86400),
    ],
)
def test_parse_duration_units(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", [0, "0", "0h", None, ""])
def test_parse_duration_zero(value):
    assert parse_duration(value) == 0


@pytest.mark.parametrize("value", [-1, -3600, "-1", "-72h", -60.0])
def test_parse_duration_negative(value):
    with pytest.raises(OptionError) as caught:
        parse_duration(value)
    assert "negative" in caught.value.msg
    assert repr(value) in caught.value.msg


@pytest.mark.parametrize("value", ["72x", "abc", "1.5h", "h", "72hh", "3 days", True, 1.5, [3600]])
def test_parse_duration_garbage(value):
    with pytest.raises(OptionError) as caught:
        parse_duration(value)
    assert repr(value) in caught.value.msg
    assert "72h" in caught.value.msg


def test_parse_duration_names_option():
    with pytest.raises(OptionError) as caught:
        parse_duration("soon", option="retention")
    assert "retention" in caught.value.msg


# parse_db_datetime ------------------------------------------------------------------------

CREATED = calendar.timegm((2020, 7, 30, 14, 55, 52, 0, 0, 0))


@pytest.mark.parametrize(
    "value",
    [
        "2020-07-30 14:55:52",
        "2020-07-30 14:55:52.123456",
        "2020-07-30T14:55:52",
        "2020-07-30T14:55:52Z",
        " 2020-07-30 14:55:52 ",
    ],
)
def test_parse_db_datetime_text(value):
    assert parse_db_datetime(value) == CREATED


@pytest.mark.parametrize(
    "value",
    ["2020-07-30 14:55:52+02:00", "2020-07-30T14:55:52-0530", "2020-07-30 14:55:52+00:00"],
)
def test_parse_db_datetime_offset_ignored(value):
    # acme2certifier 0.46.3 reads the wall-clock part and drops the offset.
    assert parse_db_datetime(value) == CREATED


def test_parse_db_datetime_date_only():
    assert parse_db_datetime("2020-07-30") == calendar.timegm((2020, 7, 30, 0, 0, 0, 0, 0, 0))


def test_parse_db_datetime_datetime_object():
    value = datetime.datetime(2020, 7, 30, 14, 55, 52, 500000)
    assert parse_db_datetime(value) == CREATED


@pytest.mark.parametrize(
    "value",
    ["junk", "", "2020-02-30 00:00:00", "2020-07-30 25:00:00", "30.07.2020", None, 0, 1596120952, b"2020-07-30"],
)
def test_parse_db_datetime_junk(value):
    assert parse_db_datetime(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "2020-07-30 14:55:52",
        "2020-07-30 14:55:52.123456",
        "2020-07-30T14:55:52",
        "2020-07-30 14:55:52+02:00",
        "2020-07-30T14:55:52-0530",
        "2020-07-30",
    ],
)
def test_parse_db_datetime_matches_upstream(value):
    helper = pytest.importorskip(
        "acme2certifier.acme_srv.helper", reason="acme2certifier 0.46.3 is not installed"
    )
    assert parse_db_datetime(value) == helper.date_to_uts_utc(value)


# format_utc -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uts, fmt, expected",
    [
        (0, "%Y-%m-%d %H:%M:%S", "1970-01-01 00:00:00"),
        (_epoch(2026, 12, 4), "%Y-%m-%dT%H:%M:%SZ", "2026-12-04T00:00:00Z"),
        (_epoch(2020, 7, 31, 14, 53, 11), "%Y-%m-%d %H:%M:%S", "2020-07-31 14:53:11"),
        ("1596207191", "%Y-%m-%d %H:%M:%S", "2020-07-31 14:53:11"),
    ],
)
def test_format_utc_values(uts, fmt, expected):
    assert format_utc(uts, fmt) == expected


def test_format_utc_matches_upstream():
    helper = pytest.importorskip(
        "acme2certifier.acme_srv.helper", reason="acme2certifier 0.46.3 is not installed"
    )
    for uts in (0, 1596207191, 1796342400):
        assert format_utc(uts, "%Y-%m-%dT%H:%M:%SZ") == helper.uts_to_date_utc(uts)


def _datetime_format(uts: int, fmt: str) -> str:
    return datetime.datetime.fromtimestamp(uts, tz=UTC).strftime(fmt)


@pytest.mark.parametrize("fmt", ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y%m%dT%H%M%SZ"])
@pytest.mark.parametrize(
    "uts",
    [
        -62135596800,  # 0001-01-01, the first second datetime can represent
        -30610224001,  # 0999-12-31T23:59:59Z, below the range that uses time.strftime()
        -30610224000,
        -1,
        0,
        1596207191,
        253402300799,  # 9999-12-31T23:59:59Z, the last second datetime can represent
    ],
)
def test_format_utc_matches_datetime(uts, fmt):
    assert format_utc(uts, fmt) == _datetime_format(uts, fmt)


@pytest.mark.parametrize("uts", [253402300800, -62135596801])
def test_format_utc_out_of_range_raises(uts):
    for _attempt in range(2):
        with pytest.raises((ValueError, OverflowError, OSError)):
            format_utc(uts, "%Y-%m-%d %H:%M:%S")


def test_format_utc_float_and_int_agree():
    assert format_utc(1596207191.9, "%Y-%m-%d %H:%M:%S") == "2020-07-31 14:53:11"
    assert format_utc(1596207191, "%Y-%m-%d %H:%M:%S") == "2020-07-31 14:53:11"

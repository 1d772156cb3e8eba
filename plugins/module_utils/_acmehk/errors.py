# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Exceptions that modules turn into a single failed result."""

from __future__ import annotations

from typing import Any


class HousekeepingError(Exception):
    """Base error: the message names the value and the fix, extra fields go to the result."""

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class OptionError(HousekeepingError):
    """An option value is invalid."""


class ConfigError(HousekeepingError):
    """acme_srv.cfg or the installation layout cannot be used."""


class DatabaseError(HousekeepingError):
    """The database cannot be opened, read or written."""


class SchemaError(HousekeepingError):
    """The database is not an acme2certifier database this engine can work on."""


class LockTimeout(DatabaseError):
    """Another process held a lock for longer than the busy timeout."""


class ReportError(HousekeepingError):
    """A report file cannot be written."""

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Detect which acme2certifier schema a database has, from its tables, columns and dbversion."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .db import Database
from .errors import SchemaError

# Newest schema this engine was checked against (acme2certifier 0.46.3 writes dbversion 0.46).
KNOWN_DBVERSION = "0.46"

# Logical table names, as the wsgi handler names its tables. Every table is addressed by
# name and every column by name, because migrated databases append new columns at the end.
LOGICAL_TABLES = ("account", "orders", "authorization", "challenge", "certificate", "nonce", "status")

# Physical table names per acme2certifier database handler. The Django models live in the
# app labelled acme_srv, and the order table is singular there.
HANDLER_TABLES: Dict[str, Dict[str, str]] = {
    "wsgi": {table: table for table in LOGICAL_TABLES + ("housekeeping",)},
    "django": {
        "account": "acme_srv_account",
        "orders": "acme_srv_order",
        "authorization": "acme_srv_authorization",
        "challenge": "acme_srv_challenge",
        "certificate": "acme_srv_certificate",
        "nonce": "acme_srv_nonce",
        "status": "acme_srv_status",
        "housekeeping": "acme_srv_housekeeping",
    },
}

# Columns every schema since 0.11 has; older or foreign databases are rejected with a message.
REQUIRED_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "status": ("id", "name"),
    "account": ("id", "name", "alg", "jwk", "contact", "created_at"),
    "orders": ("id", "name", "status_id", "expires", "account_id", "identifiers"),
    "authorization": ("id", "name", "order_id", "status_id", "expires"),
    "challenge": ("id", "name", "authorization_id", "status_id"),
    "certificate": ("id", "name", "order_id", "cert", "cert_raw", "csr", "created_at"),
    "nonce": ("id", "nonce", "created_at"),
}


@dataclass
class Schema:
    """Tables, columns and dbversion of one database."""

    handler: str
    tables: Dict[str, List[str]]
    dbversion: Optional[str]
    table_names: Dict[str, str] = field(default_factory=dict)
    location: str = ""
    db: Optional[Database] = None

    def has(self, table: str, column: str) -> bool:
        """Tell whether a logical table has a column."""
        return column in self.tables.get(table, [])

    def name(self, table: str) -> str:
        """Return the quoted physical name of a logical table."""
        physical = self.table_names.get(table, table)
        if self.db is None:
            return '"' + physical + '"'
        return self.db.quote(physical)

    def require(self, table: str, columns: Iterable[str], purpose: str) -> None:
        """Fail with a clear message when an operation needs columns the schema lacks."""
        missing = [column for column in columns if not self.has(table, column)]
        if missing:
            raise SchemaError(
                f"Cannot {purpose}: table {self.table_names.get(table, table)} of {self.location} has "
                f"no column {', '.join(missing)} (dbversion {self.dbversion or 'unknown'}). The "
                "database is damaged, from a release before acme2certifier 0.11, or not an "
                "acme2certifier database. Upgrade it with acme2certifier's schema update, or point "
                "the module at the right database.",
                table=table,
                missing_columns=missing,
            )

    def newer_than_known(self) -> bool:
        """Tell whether the dbversion is newer than the newest schema this engine supports."""
        return version_key(self.dbversion) > version_key(KNOWN_DBVERSION)

    def check_destructive(self, force: bool, purpose: str) -> None:
        """Reject destructive work on a schema from a future release unless forced."""
        if self.newer_than_known() and not force:
            raise SchemaError(
                f"Refusing to {purpose}: the database has dbversion {self.dbversion}, newer than "
                f"{KNOWN_DBVERSION}, the newest acme2certifier schema this collection supports. A "
                "newer release may use the tables differently. Update the collection, or set "
                "force=true after checking the release notes.",
                dbversion=self.dbversion,
            )


def version_key(version: Optional[str]) -> Tuple[int, ...]:
    """Turn '0.23.1' into (0, 23, 1) for comparison; unknown versions sort lowest."""
    if not version:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", str(version))[:4])


def _guess_handler(present: set) -> Optional[str]:
    for handler in ("django", "wsgi"):
        names = HANDLER_TABLES[handler]
        if {names["orders"], names["certificate"], names["account"]} & present:
            return handler
    return None


def detect(db: Database, handler: str = "auto") -> Schema:
    """Read the schema of an acme2certifier database without changing it."""
    present = db.tables()
    if handler == "auto":
        found = _guess_handler(present)
        if found is None:
            raise SchemaError(
                f"{db.location} has no acme2certifier tables (account, orders, certificate for the "
                "wsgi handler, or acme_srv_* for the Django handler). Point the database option at "
                "acme2certifier's acme_srv.db, or give the connection of its Django database.",
                tables=sorted(present)[:50],
            )
        handler = found

    names = HANDLER_TABLES[handler]
    missing_tables = [names[table] for table in LOGICAL_TABLES if names[table] not in present]
    if len(missing_tables) == len(LOGICAL_TABLES):
        raise SchemaError(
            f"{db.location} has none of the tables of acme2certifier's {handler} handler. Check "
            "db_handler, or point the module at acme2certifier's database.",
            tables=sorted(present)[:50],
        )
    if missing_tables:
        raise SchemaError(
            f"{db.location} lacks the acme2certifier table(s) {', '.join(missing_tables)}. It is "
            "damaged, from a release before 0.11, or not an acme2certifier database. Point the "
            "database option at acme2certifier's database, or upgrade it with acme2certifier's "
            "schema update.",
            missing_tables=missing_tables,
        )

    tables = {table: db.columns(names[table]) for table in LOGICAL_TABLES}
    housekeeping = names["housekeeping"]
    dbversion = None
    if housekeeping in present:
        tables["housekeeping"] = db.columns(housekeeping)
        rows = db.fetch(f"SELECT value FROM {db.quote(housekeeping)} WHERE name = 'dbversion'")
        if rows and rows[0][0] is not None:
            dbversion = str(rows[0][0])

    schema = Schema(handler=handler, tables=tables, dbversion=dbversion, table_names=dict(names),
                    location=db.location, db=db)
    for table, columns in REQUIRED_COLUMNS.items():
        schema.require(table, columns, f"read the {names[table]} table")
    return schema

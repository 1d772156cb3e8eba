# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""SQLite schemas of acme2certifier's wsgi handler as long-lived installations hold them.

An installation created before 0.11 and upgraded release by release with acme2certifier's
schema update has the tables of its first release, with the columns of later releases appended
by ALTER TABLE ADD COLUMN and a few tables rebuilt. These are the layouts after the updates of
0.11, 0.15, 0.23, 0.33 and 0.41, with the dbversion value each of them stores:

- 0.11: certificate.issue_uts and expire_uts, challenge.validated, the housekeeping table with
  its UpdateLastTime trigger, and the statuses expired, deactivated and revoked.
- 0.15: account.eab_kid.
- 0.23: the cahandler (0.18) and cliaccount (0.22) tables; orders.identifiers and
  authorization.value become TEXT (both tables rebuilt).
- 0.33: certificate.renewal_info and replaced (0.29), header_info (0.30), aki and serial (0.33).
- 0.41: housekeeping.name becomes varchar(30) (table rebuilt, which drops the trigger),
  account.status_id (0.37), orders.profile (0.38), challenge.source (0.39) and
  validation_error (0.41).

A database of schema 0.46 is created by acme2certifier 0.46.3 itself (see create_upstream_046).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

RELEASES = ("0.11", "0.15", "0.23", "0.33", "0.41")

_ID = '"id" integer NOT NULL PRIMARY KEY AUTOINCREMENT'
_CREATED = '"created_at" TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL'

_TRIGGER = """
CREATE TRIGGER [UpdateLastTime]
    AFTER UPDATE ON housekeeping
    FOR EACH ROW
    WHEN NEW.modified_at <= OLD.modified_at
BEGIN
    update housekeeping set modified_at=CURRENT_TIMESTAMP where id=OLD.id;
END
"""

# Tables as the first releases created them, before any column was appended.
_BASE_TABLES: Dict[str, str] = {
    "status": f'CREATE TABLE "status" ({_ID}, "name" varchar(15) UNIQUE NOT NULL)',
    "nonce": f'CREATE TABLE "nonce" ({_ID}, "nonce" varchar(30) NOT NULL, {_CREATED})',
    "account": (
        f'CREATE TABLE "account" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, "alg" varchar(10) NOT NULL, '
        f'"jwk" TEXT UNIQUE NOT NULL, "contact" TEXT NOT NULL, {_CREATED})'
    ),
    "orders": (
        f'CREATE TABLE "orders" ({_ID}, "name" varchar(15) UNIQUE NOT NULL, "notbefore" integer DEFAULT 0, '
        '"notafter" integer DEFAULT 0, "identifiers" varchar(1048) NOT NULL, '
        '"account_id" integer NOT NULL REFERENCES "account" ("id"), '
        f'"status_id" integer NOT NULL REFERENCES "status" ("id") DEFAULT 2, "expires" integer NOT NULL, {_CREATED})'
    ),
    "authorization": (
        f'CREATE TABLE "authorization" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, '
        '"order_id" integer NOT NULL REFERENCES "order" ("id"), "type" varchar(5) NOT NULL, '
        '"value" varchar(64) NOT NULL, "expires" integer, "token" varchar(64), '
        f'"status_id" integer NOT NULL REFERENCES "status" ("id") DEFAULT 2, {_CREATED})'
    ),
    "challenge": (
        f'CREATE TABLE "challenge" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, "token" varchar(64), '
        '"authorization_id" integer NOT NULL REFERENCES "authorization" ("id"), "expires" integer, '
        '"type" varchar(10) NOT NULL, "keyauthorization" varchar(128), '
        f'"status_id" integer NOT NULL REFERENCES "status" ("id"), {_CREATED})'
    ),
    "certificate": (
        f'CREATE TABLE "certificate" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, "cert" text, "cert_raw" text, '
        '"error" text, "order_id" integer NOT NULL REFERENCES "order" ("id"), "csr" text NOT NULL, '
        f'"poll_identifier" text, {_CREATED})'
    ),
}

_HOUSEKEEPING_15 = (
    f'CREATE TABLE "housekeeping" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, "value" text, '
    '"modified_at" TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)'
)
_HOUSEKEEPING_30 = _HOUSEKEEPING_15.replace("varchar(15)", "varchar(30)")

# The rebuilt tables of the 0.23 update: the same columns, TEXT instead of varchar.
_ORDERS_23 = _BASE_TABLES["orders"].replace('"identifiers" varchar(1048)', '"identifiers" text')
_AUTHORIZATION_23 = _BASE_TABLES["authorization"].replace('"value" varchar(64)', '"value" text')

_CAHANDLER = (
    f'CREATE TABLE "cahandler" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, "value1" text, "value2" text, {_CREATED})'
)
_CLIACCOUNT = (
    f'CREATE TABLE "cliaccount" ({_ID}, "name" varchar(15) NOT NULL UNIQUE, "jwk" TEXT UNIQUE NOT NULL, '
    f'"contact" TEXT NOT NULL, "cliadmin" INT, "reportadmin" INT, "certificateadmin" INT, {_CREATED})'
)

# Statements of each update, applied in release order on top of the base tables.
_UPDATES: Dict[str, List[str]] = {
    "0.11": [
        "ALTER TABLE certificate ADD COLUMN issue_uts integer DEFAULT 0",
        "ALTER TABLE certificate ADD COLUMN expire_uts integer DEFAULT 0",
        "ALTER TABLE challenge ADD COLUMN validated integer DEFAULT 0",
        _HOUSEKEEPING_15,
        _TRIGGER,
    ],
    "0.15": [
        "ALTER TABLE account ADD COLUMN eab_kid varchar(255) DEFAULT ''",
    ],
    "0.23": [
        _CAHANDLER,
        _CLIACCOUNT,
        "ALTER TABLE orders RENAME TO tmp",
        _ORDERS_23,
        "INSERT INTO orders SELECT * FROM tmp",
        "DROP TABLE tmp",
        'ALTER TABLE "authorization" RENAME TO tmp',
        _AUTHORIZATION_23,
        'INSERT INTO "authorization" SELECT * FROM tmp',
        "DROP TABLE tmp",
    ],
    "0.33": [
        "ALTER TABLE certificate ADD COLUMN renewal_info text",
        "ALTER TABLE certificate ADD COLUMN replaced boolean DEFAULT 0",
        "ALTER TABLE certificate ADD COLUMN header_info text",
        "ALTER TABLE certificate ADD COLUMN aki text",
        "ALTER TABLE certificate ADD COLUMN serial text",
    ],
    "0.41": [
        "ALTER TABLE housekeeping RENAME TO tmp_hk",
        _HOUSEKEEPING_30,
        "INSERT INTO housekeeping SELECT * FROM tmp_hk",
        "DROP TABLE tmp_hk",
        "ALTER TABLE account ADD COLUMN status_id integer NOT NULL REFERENCES status(id) DEFAULT 5",
        "ALTER TABLE orders ADD COLUMN profile varchar(64) DEFAULT ''",
        "ALTER TABLE challenge ADD COLUMN source varchar(128)",
        "ALTER TABLE challenge ADD COLUMN validation_error text",
    ],
}

STATUS_NAMES = ("invalid", "pending", "ready", "processing", "valid", "expired", "deactivated", "revoked")


def create_legacy(path: Path, release: str) -> None:
    """Create an empty database in the layout that the schema update of release leaves."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; expected one of {', '.join(RELEASES)}")
    connection = sqlite3.connect(path)
    try:
        for statement in _BASE_TABLES.values():
            connection.execute(statement)
        connection.executemany("INSERT INTO status (name) VALUES (?)", [(name,) for name in STATUS_NAMES])
        for step in RELEASES[:RELEASES.index(release) + 1]:
            for statement in _UPDATES[step]:
                connection.execute(statement)
        connection.execute(
            "INSERT INTO housekeeping (name, value, modified_at) VALUES ('dbversion', ?, '2021-04-16 15:28:42')",
            (release,),
        )
        connection.commit()
    finally:
        connection.close()


def create_upstream_046(path: Path) -> None:
    """Create an empty schema 0.46 database with acme2certifier 0.46.3's own DBstore.

    DBstore creates the schema when the file is missing; a subprocess keeps acme2certifier's
    configuration cache out of the test process.
    """
    script = textwrap.dedent(f"""
        import logging
        from acme2certifier.dbhandlers.wsgi_handler import DBstore
        DBstore(False, logging.getLogger("create"), {str(path)!r})
    """)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
        env={"ACME_SRV_CONFIGFILE": str(path.with_suffix(".missing.cfg")), "PATH": "/usr/bin:/bin"},
    )
    if completed.returncode != 0 or not path.is_file():
        raise RuntimeError(f"acme2certifier did not create {path}: {completed.stderr}")


def table_columns(path: Path) -> Dict[str, List[str]]:
    """Return the column names of every table, in table order."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {table: [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')] for table in tables}
    finally:
        connection.close()

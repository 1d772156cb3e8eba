# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Account, certificate and affected-row reports with acme2certifier's columns and values."""

from __future__ import annotations

import datetime
import sqlite3
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import x509
from .operations import IN_LIST_LIMIT, Context, Plan, chunks
from .output import JsonArrayWriter, Sink, make_writer
from .timeutil import REPORT_DATE_FORMAT, format_utc

EXPIRES_KEYS = ("order.expires", "authorization.expires", "challenge.expires")

# (report key, table alias, column) in the column order of acme2certifier's wsgi handler.
ACCOUNT_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("account.id", "account", "id"),
    ("account.name", "account", "name"),
    ("account.eab_kid", "account", "eab_kid"),
    ("account.contact", "account", "contact"),
    ("account.created_at", "account", "created_at"),
    ("account.jwk", "account", "jwk"),
    ("account.alg", "account", "alg"),
    ("order.id", "orders", "id"),
    ("order.name", "orders", "name"),
    ("order.status.id", "orders", "status_id"),
    ("order.status.name", "order_status", "name"),
    ("order.notbefore", "orders", "notbefore"),
    ("order.notafter", "orders", "notafter"),
    ("order.expires", "orders", "expires"),
    ("order.identifiers", "orders", "identifiers"),
    ("authorization.id", "authz", "id"),
    ("authorization.name", "authz", "name"),
    ("authorization.type", "authz", "type"),
    ("authorization.value", "authz", "value"),
    ("authorization.expires", "authz", "expires"),
    ("authorization.token", "authz", "token"),
    ("authorization.created_at", "authz", "created_at"),
    ("authorization.status.id", "authz", "status_id"),
    ("authorization.status.name", "authz_status", "name"),
    ("challenge.id", "challenge", "id"),
    ("challenge.name", "challenge", "name"),
    ("challenge.token", "challenge", "token"),
    ("challenge.expires", "challenge", "expires"),
    ("challenge.type", "challenge", "type"),
    ("challenge.keyauthorization", "challenge", "keyauthorization"),
    ("challenge.created_at", "challenge", "created_at"),
    ("challenge.status.id", "challenge", "status_id"),
    ("challenge.status.name", "challenge_status", "name"),
)

# The Django handler lists contact before eab_kid and adds the authorization's status_id.
DJANGO_ACCOUNT_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ACCOUNT_FIELDS[:2]
    + (ACCOUNT_FIELDS[3], ACCOUNT_FIELDS[2])
    + ACCOUNT_FIELDS[4:22]
    + (("authorization.status_id", "authz", "status_id"),)
    + ACCOUNT_FIELDS[22:]
)

CERTIFICATE_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("certificate.id", "certificate", "id"),
    ("certificate.name", "certificate", "name"),
    ("certificate.cert_raw", "certificate", "cert_raw"),
    ("certificate.csr", "certificate", "csr"),
    ("certificate.poll_identifier", "certificate", "poll_identifier"),
    ("certificate.created_at", "certificate", "created_at"),
    ("certificate.issue_uts", "certificate", "issue_uts"),
    ("certificate.expire_uts", "certificate", "expire_uts"),
    ("order.id", "orders", "id"),
    ("order.name", "orders", "name"),
    ("order.status.name", "order_status", "name"),
    ("order.notbefore", "orders", "notbefore"),
    ("order.notafter", "orders", "notafter"),
    ("order.expires", "orders", "expires"),
    ("order.identifiers", "orders", "identifiers"),
    ("account.name", "account", "name"),
    ("account.contact", "account", "contact"),
    ("account.created_at", "account", "created_at"),
    ("account.jwk", "account", "jwk"),
    ("account.alg", "account", "alg"),
    ("account.eab_kid", "account", "eab_kid"),
)

ORDER_REPORT_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("order.id", "orders", "id"),
    ("order.name", "orders", "name"),
    ("order.expires", "orders", "expires"),
    ("order.identifiers", "orders", "identifiers"),
    ("order.created_at", "orders", "created_at"),
    ("status.id", "status", "id"),
    ("status.name", "status", "name"),
    ("account.id", "account", "id"),
    ("account.name", "account", "name"),
    ("account.contact", "account", "contact"),
)

AUTHORIZATION_REPORT_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("authorization.id", "authz", "id"),
    ("authorization.name", "authz", "name"),
    ("authorization.expires", "authz", "expires"),
    ("authorization.value", "authz", "value"),
    ("authorization.created_at", "authz", "created_at"),
    ("authorization.token", "authz", "token"),
    ("status.id", "status", "id"),
    ("status.name", "status", "name"),
    ("order.id", "orders", "id"),
    ("order.name", "orders", "name"),
)

CLEANUP_REPORT_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("certificate.id", "certificate", "id"),
    ("certificate.name", "certificate", "name"),
    ("certificate.expire_uts", "certificate", "expire_uts"),
    ("certificate.issue_uts", "certificate", "issue_uts"),
    ("certificate.cert", "certificate", "cert"),
    ("certificate.cert_raw", "certificate", "cert_raw"),
    ("certificate.csr", "certificate", "csr"),
    ("certificate.created_at", "certificate", "created_at"),
    ("order.id", "orders", "id"),
    ("order.name", "orders", "name"),
)

_ALIAS_TABLES = {
    "account": "account",
    "orders": "orders",
    "order_status": "status",
    "authz": "authorization",
    "authz_status": "status",
    "challenge": "challenge",
    "challenge_status": "status",
    "certificate": "certificate",
    "status": "status",
}


def available_fields(ctx: Context, fields: Sequence[Tuple[str, str, str]]) -> List[Tuple[str, str, str]]:
    """Drop the fields whose column this schema does not have (eab_kid before 0.15, ...)."""
    return [field for field in fields if ctx.schema.has(_ALIAS_TABLES[field[1]], field[2])]


def _select_list(fields: Sequence[Tuple[str, str, str]]) -> str:
    return ", ".join(f"{alias}.{column}" for _key, alias, column in fields)


class Skips:
    """Values a report had to leave as they are, kept for the skipped return value."""

    def __init__(self, limit: int = 100) -> None:
        self.items: List[Dict[str, Any]] = []
        self.count = 0
        self.limit = limit

    def add(self, table: str, row_id: Any, reason: str) -> None:
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append({"table": table, "id": row_id, "reason": reason})


def django_datetime(value: Any) -> Any:
    """Render a Django datetime column as Django returns it: an aware UTC datetime."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc)
    return value


def convert_row(row: Dict[str, Any], skips: Skips, django: bool = False) -> Dict[str, Any]:
    """Apply acme2certifier's report conversions: readable expiry dates, certificate dates, serial."""
    if django:
        for key in row:
            if key.endswith(".created_at"):
                row[key] = django_datetime(row[key])
    for key in EXPIRES_KEYS:
        value = row.get(key)
        if key in row and value:
            try:
                row[key] = format_utc(int(value), REPORT_DATE_FORMAT)
            except (TypeError, ValueError, OverflowError, OSError):
                table = key.split(".", maxsplit=1)[0]
                skips.add(table, row.get(table + ".id"), f"{key} {value!r} is not a Unix time; reported as stored.")

    has_raw = "certificate.cert_raw" in row
    certificate = _load_certificate(row["certificate.cert_raw"]) if has_raw else None
    issue = row.get("certificate.issue_uts", 0)
    expire = row.get("certificate.expire_uts", 0)
    if not _is_number(issue) or not _is_number(expire):
        skips.add(
            "certificate",
            row.get("certificate.id"),
            f"issue_uts {issue!r} or expire_uts {expire!r} is not a number; dates read from cert_raw.",
        )
        issue, expire = 0, 0
    if issue == 0 or expire == 0:
        # A missing or unreadable cert_raw gives (0, 0), as cert_dates_get() returns on failure.
        issue, expire = x509.read_dates(certificate) if certificate is not None else (0, 0)
    row["certificate.issue_uts"] = issue
    row["certificate.expire_uts"] = expire

    if issue > 0 and expire > 0:
        row["certificate.issue_date"] = format_utc(issue, REPORT_DATE_FORMAT)
        row["certificate.expire_date"] = format_utc(expire, REPORT_DATE_FORMAT)
    else:
        row["certificate.issue_date"] = ""
        row["certificate.expire_date"] = ""

    if has_raw:
        row["certificate.serial"] = certificate.serial_number if certificate is not None else ""
    return row


def _load_certificate(cert_raw: Any) -> Optional[x509.LoadedCertificate]:
    """Load cert_raw once for the dates and the serial number, or return None where that fails."""
    try:
        return x509.load_cert_raw(cert_raw)
    except x509.CertificateError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Certificate report -----------------------------------------------------------------------


def _is_django(ctx: Context) -> bool:
    return ctx.schema.handler == "django"


def certificate_report_columns(ctx: Context) -> List[str]:
    """Return the CSV header: the stored fields plus serial and the two readable dates."""
    columns = [key for key, _alias, _column in available_fields(ctx, CERTIFICATE_FIELDS)]
    columns.insert(2, "certificate.serial")
    columns.insert(7, "certificate.issue_date")
    columns.insert(8, "certificate.expire_date")
    return columns


def certificate_report_rows(ctx: Context, skips: Skips) -> Iterator[Dict[str, Any]]:
    """Yield certificate report rows by certificate id, one short read per page."""
    fields = available_fields(ctx, CERTIFICATE_FIELDS)
    schema = ctx.schema
    sql = (
        f"SELECT certificate.id, {_select_list(fields)} FROM {schema.name('certificate')} AS certificate "
        f"JOIN {schema.name('orders')} AS orders ON orders.id = certificate.order_id "
        f"JOIN {schema.name('account')} AS account ON account.id = orders.account_id "
        f"LEFT JOIN {schema.name('status')} AS order_status ON order_status.id = orders.status_id "
        "WHERE certificate.cert_raw IS NOT NULL "
        # The Django handler also leaves out an empty cert_raw.
        + ("AND certificate.cert_raw != '' " if _is_django(ctx) else "")
        + "AND certificate.id > ? AND certificate.id <= ? ORDER BY certificate.id LIMIT ?"
    )
    keys = [key for key, _alias, _column in fields]
    django = _is_django(ctx)
    for rows in ctx.pages(schema.name("certificate"), sql, []):
        for row in rows:
            yield convert_row(dict(zip(keys, row[1:])), skips, django)


# Account report ---------------------------------------------------------------------------


def _account_fields(ctx: Context) -> List[Tuple[str, str, str]]:
    return available_fields(ctx, DJANGO_ACCOUNT_FIELDS if _is_django(ctx) else ACCOUNT_FIELDS)


def account_report_columns(ctx: Context) -> List[str]:
    """Return the CSV header of the account report for this schema and handler."""
    return [key for key, _alias, _column in _account_fields(ctx)]


def _account_keys(ctx: Context) -> Iterator[List[Tuple[Any, Any, Any, Any]]]:
    """Yield (account, order, authorization, challenge) ids in report order, in pages.

    The wsgi schema has no index on the child-to-parent columns, so a join per page would scan
    the child tables again and again. The ids are copied instead, in short keyset-paged reads,
    into a private temporary SQLite database, which sorts them with indexes of its own.
    Children are read before parents, so every parent a child refers to is already committed.
    """
    temp = sqlite3.connect("")
    try:
        temp.executescript(
            "CREATE TABLE challenge (id INTEGER PRIMARY KEY, parent INTEGER);"
            "CREATE TABLE authz (id INTEGER PRIMARY KEY, parent INTEGER);"
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, parent INTEGER);"
            "CREATE TABLE account (id INTEGER PRIMARY KEY, parent INTEGER);"
        )
        sources = (
            ("challenge", "challenge", "authorization_id"),
            ("authz", "authorization", "order_id"),
            ("orders", "orders", "account_id"),
            ("account", "account", "NULL"),
        )
        for temp_table, table, parent in sources:
            # SQLite lets any value into an id column; only integer ids can be paged and sorted.
            integer_only = "typeof(id) = 'integer' AND " if ctx.db.dynamic_types else ""
            quoted = ctx.schema.name(table)
            sql = f"SELECT id, {parent} FROM {quoted} WHERE {integer_only}id > ? AND id <= ? ORDER BY id LIMIT ?"
            for rows in ctx.pages(quoted, sql, []):
                temp.executemany(f"INSERT OR IGNORE INTO {temp_table} VALUES (?, ?)", rows)
        temp.executescript(
            "CREATE INDEX challenge_parent ON challenge (parent, id);"
            "CREATE INDEX authz_parent ON authz (parent, id);"
            "CREATE INDEX orders_parent ON orders (parent, id);"
        )
        cursor = temp.execute(
            "SELECT account.id, orders.id, authz.id, challenge.id FROM account "
            "LEFT JOIN orders ON orders.parent = account.id "
            "LEFT JOIN authz ON authz.parent = orders.id "
            "LEFT JOIN challenge ON challenge.parent = authz.id "
            "ORDER BY account.id, orders.id, authz.id, challenge.id"
        )
        while True:
            rows = cursor.fetchmany(ctx.batch_size)
            if not rows:
                return
            yield rows
    finally:
        temp.close()


def _fetch_by_id(ctx: Context, table: str, alias: str, status_alias: Optional[str],
                 fields: Sequence[Tuple[str, str, str]], ids: List[Any]) -> Dict[Any, Dict[str, Any]]:
    """Read full rows of one table by primary key, with the status name joined in."""
    own = [field for field in fields if field[1] in (alias, status_alias)]
    if not own or not ids:
        return {}
    join = ""
    if status_alias:
        join = (
            f" LEFT JOIN {ctx.schema.name('status')} AS {status_alias} "
            f"ON {status_alias}.id = {alias}.status_id"
        )
    result: Dict[Any, Dict[str, Any]] = {}
    keys = [key for key, _alias, _column in own]
    for part in chunks(ids, IN_LIST_LIMIT):
        sql = (
            f"SELECT {alias}.id, {_select_list(own)} FROM {ctx.schema.name(table)} AS {alias}{join} "
            f"WHERE {alias}.id IN ({','.join('?' * len(part))})"
        )
        for row in ctx.db.fetch(sql, list(part)):
            result[row[0]] = dict(zip(keys, row[1:]))
    return result


def account_report_rows(ctx: Context, skips: Skips) -> Iterator[Dict[str, Any]]:
    """Yield flat account report rows ordered by account, order, authorization and challenge id.

    Accounts, orders and authorizations without children are listed with empty child fields.
    """
    fields = _account_fields(ctx)
    keys = [key for key, _alias, _column in fields]
    django = _is_django(ctx)
    for key_rows in _account_keys(ctx):
        accounts = _fetch_by_id(ctx, "account", "account", None, fields, sorted({r[0] for r in key_rows}))
        orders = _fetch_by_id(ctx, "orders", "orders", "order_status", fields,
                              sorted({r[1] for r in key_rows if r[1] is not None}))
        authzs = _fetch_by_id(ctx, "authorization", "authz", "authz_status", fields,
                              sorted({r[2] for r in key_rows if r[2] is not None}))
        challenges = _fetch_by_id(ctx, "challenge", "challenge", "challenge_status", fields,
                                  sorted({r[3] for r in key_rows if r[3] is not None}))
        for account_id, order_id, authz_id, challenge_id in key_rows:
            if account_id not in accounts:
                continue  # Deleted after the ids were read.
            row: Dict[str, Any] = dict.fromkeys(keys)
            row.update(accounts[account_id])
            for source, row_id in ((orders, order_id), (authzs, authz_id), (challenges, challenge_id)):
                if row_id is not None and row_id in source:
                    row.update(source[row_id])
            yield convert_row(row, skips, django)


def write_nested_accounts(rows: Iterator[Dict[str, Any]], writer: JsonArrayWriter) -> None:
    """Group flat rows into account, order, authorization and challenge objects.

    Rows arrive grouped by account, so one account is held in memory at a time.
    """
    current: Dict[str, Any] = {}
    started = False
    current_id: Any = object()
    orders: Dict[Any, Dict[str, Any]] = {}

    def flush() -> None:
        if started:
            writer.add(current)

    for row in rows:
        if row.get("account.id") != current_id:
            flush()
            started = True
            current_id = row.get("account.id")
            current = {key: value for key, value in row.items() if key.startswith("account.")}
            current["orders"] = []
            orders = {}
        for key, value in row.items():
            if key.startswith("account."):
                current[key] = value

        order_name = row.get("order.name")
        if row.get("order.id") is None:
            continue
        order = orders.get(order_name)
        if order is None:
            order = {key: value for key, value in row.items() if key.startswith("order.")}
            order["authorizations"] = []
            order["_authz"] = {}
            orders[order_name] = order
            current["orders"].append(order)

        if row.get("authorization.id") is None:
            continue
        authz_name = row.get("authorization.name")
        authz = order["_authz"].get(authz_name)
        if authz is None:
            authz = {key: value for key, value in row.items() if key.startswith("authorization.")}
            authz["challenges"] = []
            authz["_challenges"] = {}
            order["_authz"][authz_name] = authz
            order["authorizations"].append(authz)

        if row.get("challenge.id") is None:
            continue
        challenge_name = row.get("challenge.name")
        if challenge_name not in authz["_challenges"]:
            challenge = {key: value for key, value in row.items() if key.startswith("challenge")}
            authz["_challenges"][challenge_name] = challenge
            authz["challenges"].append(challenge)

    flush()


def strip_private(account: Dict[str, Any]) -> Dict[str, Any]:
    """Remove the lookup dictionaries used while grouping."""
    for order in account.get("orders", []):
        order.pop("_authz", None)
        for authz in order.get("authorizations", []):
            authz.pop("_challenges", None)
    return account


class NestedWriter(JsonArrayWriter):
    """JSON array writer that drops grouping helpers before serialising an account."""

    def add(self, element: Any) -> None:
        super().add(strip_private(element))


# Affected-row reports ---------------------------------------------------------------------


def plan_report_rows(ctx: Context, plan: Plan, target: str, skips: Skips) -> Tuple[List[str], Iterator[Dict[str, Any]]]:
    """Return the columns and rows describing what an operation is about to change."""
    schema = ctx.schema
    if target == "orders":
        fields = available_fields(ctx, ORDER_REPORT_FIELDS)
        base = (
            f"FROM {schema.name('orders')} AS orders "
            f"LEFT JOIN {schema.name('status')} AS status ON status.id = orders.status_id "
            f"LEFT JOIN {schema.name('account')} AS account ON account.id = orders.account_id "
            "WHERE orders.id IN ({ids}) ORDER BY orders.id"
        )
    elif target == "authorizations":
        fields = available_fields(ctx, AUTHORIZATION_REPORT_FIELDS)
        base = (
            f"FROM {schema.name('authorization')} AS authz "
            f"LEFT JOIN {schema.name('status')} AS status ON status.id = authz.status_id "
            f"LEFT JOIN {schema.name('orders')} AS orders ON orders.id = authz.order_id "
            "WHERE authz.id IN ({ids}) ORDER BY authz.id"
        )
    else:
        fields = available_fields(ctx, CLEANUP_REPORT_FIELDS)
        base = (
            f"FROM {schema.name('certificate')} AS certificate "
            f"LEFT JOIN {schema.name('orders')} AS orders ON orders.id = certificate.order_id "
            "WHERE certificate.id IN ({ids}) ORDER BY certificate.id"
        )
    keys = [key for key, _alias, _column in fields]

    def rows() -> Iterator[Dict[str, Any]]:
        for part in chunks(plan.ids, IN_LIST_LIMIT):
            sql = f"SELECT {_select_list(fields)} " + base.format(ids=",".join("?" * len(part)))
            for row in ctx.db.fetch(sql, list(part)):
                record = dict(zip(keys, row))
                if target == "certificates":
                    yield record
                else:
                    yield convert_row(record, skips, _is_django(ctx))

    return keys, rows()


def write_rows(sink: Sink, report_format: str, columns: List[str], rows: Iterator[Dict[str, Any]]) -> int:
    """Stream rows into a report and return how many were written."""
    writer = make_writer(sink, report_format, columns)
    for row in rows:
        writer.add(row)
    writer.close()
    return writer.rows

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Selection rules and batched writes of acme2certifier's housekeeping operations.

Every operation is split into plan() and apply(). plan() only reads, in short keyset-paged
transactions, and yields the same count in check mode as apply() changes in a real run.
apply() repeats the selection predicate in each UPDATE or DELETE, so a row that changed
between planning and writing is left alone instead of being changed twice.
"""

from __future__ import annotations

import array
import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import x509
from .batching import DEFAULT_BATCH_PAUSE, DEFAULT_BATCH_TIME, WriteBatcher
from .db import Database, Row, Statement
from .errors import SchemaError
from .schema import Schema
from .timeutil import MARKER_DATE_FORMAT, format_utc, parse_db_datetime

NAMES_LIMIT = 100
SKIPPED_LIMIT = 100
# Bound for the number of values in one IN (...) list: old SQLite builds allow 999 variables.
IN_LIST_LIMIT = 500
CSR_GRACE_SECONDS = 14 * 86400


@dataclass
class Context:
    """Inputs shared by every operation: the database, its schema, the cutoff and the batching."""

    db: Database
    schema: Schema
    cutoff: int
    batch_size: int = 500
    # Seconds one read statement or write transaction should take at most, 0 for fixed batches.
    batch_time: float = DEFAULT_BATCH_TIME
    # Seconds to sleep after each write commit, so the server can take the write lock.
    batch_pause: float = DEFAULT_BATCH_PAUSE

    def pages(self, table: str, sql: str, params: Sequence[Any]) -> Iterator[List[Row]]:
        """Page a SELECT over table with this run's batch settings. Database.pages gives the SQL form."""
        return self.db.pages(table, sql, params, self.batch_size, self.batch_time)

    def write_batches(self, items: Sequence[Any], statements: Callable[[Sequence[Any]], List[Statement]]) -> int:
        """Write items in time-sized transactions (WriteBatcher) and return the rows changed."""
        return WriteBatcher(self.db, self.batch_size, self.batch_time, self.batch_pause).run(items, statements)


@dataclass
class Plan:
    """Rows an operation selects, kept as compact id arrays so memory stays small."""

    target: str
    ids: "array.array[int]" = field(default_factory=lambda: array.array("q"))
    names: List[str] = field(default_factory=list)
    skipped: List[Dict[str, Any]] = field(default_factory=list)
    skipped_count: int = 0
    # Per-row values written by the dates back-fill, parallel to ids.
    values: List[Tuple[Any, ...]] = field(default_factory=list)
    # (issue_uts, expire_uts) that certificate blanking writes where they differ from the row's,
    # by id. Rows whose dates stay as stored have no entry, so a large plan stays small.
    dates: Dict[int, Tuple[Any, Any]] = field(default_factory=dict)
    note: Optional[str] = None
    # The status id that apply() writes, looked up before any change.
    status_id: Optional[int] = None

    @property
    def count(self) -> int:
        return len(self.ids)

    def add(self, row_id: int, name: Any) -> None:
        self.ids.append(int(row_id))
        if len(self.names) < NAMES_LIMIT:
            self.names.append("" if name is None else str(name))

    def skip(self, row_id: Any, name: Any, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < SKIPPED_LIMIT:
            self.skipped.append({"table": self.table, "id": row_id, "name": name, "reason": reason})

    @property
    def table(self) -> str:
        return {
            "orders": "orders",
            "authorizations": "authorization",
            "certificates": "certificate",
            "certificate_dates": "certificate",
            "nonces": "nonce",
        }[self.target]

    def result(self, count: Optional[int] = None) -> Dict[str, Any]:
        """Summarise the plan, or the real run when count is the number of rows changed."""
        total = self.count if count is None else count
        summary: Dict[str, Any] = {
            "count": total,
            "names": list(self.names),
            "names_truncated": self.count > len(self.names),
            "skipped": list(self.skipped),
            "skipped_count": self.skipped_count,
        }
        if self.note:
            summary["note"] = self.note
        return summary


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Split a sequence into slices of at most size items."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _in_list(count: int) -> str:
    return ",".join("?" * count)


def status_id(ctx: Context, name: str, purpose: str) -> int:
    """Look up a status id by name the way each acme2certifier handler does."""
    # The wsgi handler matches with LIKE and takes the first row; Django matches exactly.
    operator = "LIKE" if ctx.schema.handler == "wsgi" else "="
    rows = ctx.db.fetch(f"SELECT id FROM {ctx.schema.name('status')} WHERE name {operator} ? ORDER BY id", [name])
    if not rows:
        raise SchemaError(
            f"Cannot {purpose}: the status table has no row named '{name}'. acme2certifier "
            "creates it from release 0.11 on; run its schema update, then retry.",
            status=name,
        )
    return int(rows[0][0])


def _odd_date_test(ctx: Context, column: str, null_too: bool = False) -> str:
    """Return SQL that is true for date values no expiry rule can compare.

    Plans select these rows in the same scan as the rows they change and report them, so a
    table is read once. Only SQLite lets text into an integer column; NULL is reported where
    acme2certifier never writes it.
    """
    tests = [f"typeof({column}) IN ('text', 'blob')"] if ctx.db.dynamic_types else []
    if null_too:
        tests.append(f"{column} IS NULL")
    return "(" + " OR ".join(tests) + ")" if tests else "FALSE"


def _skip_odd_date(plan: Plan, row_id: Any, name: Any, column: str, value: Any) -> None:
    what = "NULL" if value is None else f"{value!r}, not a number of seconds"
    plan.skip(row_id, name, f"{column} is {what}, so no expiry rule applies; set it to a Unix time or 0.")


# Orders -----------------------------------------------------------------------------------

# acme2certifier 0.46.3 invalidates every order above status id 1 whose expires is at or
# before the cutoff, valid (completed) orders and orders with expires = 0 included. Orders
# whose status id has no status row are invalidated too.
_ORDER_WHERE = (
    "orders.status_id > 1 AND orders.expires <= ? "
    "AND (status.name IS NULL OR status.name != 'invalid')"
)


def plan_orders(ctx: Context) -> Plan:
    """Select the expired orders that are not invalid yet."""
    plan = Plan("orders")
    orders, status = ctx.schema.name("orders"), ctx.schema.name("status")
    odd = _odd_date_test(ctx, "orders.expires")
    sql = (
        f"SELECT orders.id, orders.name, orders.expires, {odd} FROM {orders} AS orders "
        f"LEFT JOIN {status} AS status ON status.id = orders.status_id "
        f"WHERE (({_ORDER_WHERE}) OR {odd}) AND orders.id > ? AND orders.id <= ? ORDER BY orders.id LIMIT ?"
    )
    for rows in ctx.pages(orders, sql, [ctx.cutoff]):
        for row_id, name, expires, is_odd in rows:
            if is_odd:
                _skip_odd_date(plan, row_id, name, "expires", expires)
            else:
                plan.add(row_id, name)
    return plan


def apply_orders(ctx: Context, plan: Plan) -> int:
    """Set the selected orders to invalid in batches."""
    if not plan.count:
        return 0
    invalid = plan.status_id if plan.status_id is not None else status_id(ctx, "invalid", "invalidate orders")
    orders, status = ctx.schema.name("orders"), ctx.schema.name("status")

    def statements(batch: Sequence[int]) -> List[Statement]:
        result = []
        for part in chunks(batch, IN_LIST_LIMIT):
            sql = (
                f"UPDATE {orders} SET status_id = ? WHERE id IN ({_in_list(len(part))}) "
                "AND status_id > 1 AND expires <= ? AND NOT EXISTS (SELECT 1 FROM "
                f"{status} AS status WHERE status.id = {orders}.status_id AND status.name = 'invalid')"
            )
            result.append((sql, [invalid, *part, ctx.cutoff]))
        return result

    return ctx.write_batches(plan.ids, statements)


# Authorizations ---------------------------------------------------------------------------

# acme2certifier 0.46.3 moves authorizations to 'expired' (not 'invalid') whatever their
# status, skips expires = 0, and never touches rows with NULL expires or an unknown status id.
# The wsgi handler compares the status name with LIKE, the Django handler with equality.
def _authz_status_test(ctx: Context, column: str) -> str:
    if ctx.schema.handler == "wsgi":
        return f"{column} NOT LIKE 'expired'"
    return f"{column} != 'expired'"


def plan_authorizations(ctx: Context) -> Plan:
    """Select the authorizations past their expiry that are not expired yet."""
    plan = Plan("authorizations")
    authz, status = ctx.schema.name("authorization"), ctx.schema.name("status")
    # The LEFT JOIN also finds expired rows whose status id has no status row. acme2certifier
    # leaves them alone, so they are reported instead of being passed over silently.
    # A NULL expires is normal, because acme2certifier sets it when a client first fetches the
    # authorization.
    odd = _odd_date_test(ctx, "authz.expires")
    sql = (
        f"SELECT authz.id, authz.name, authz.status_id, status.id IS NULL, authz.expires, {odd} "
        f"FROM {authz} AS authz LEFT JOIN {status} AS status ON status.id = authz.status_id "
        f"WHERE ((({_authz_status_test(ctx, 'status.name')} OR status.id IS NULL) "
        f"AND authz.expires <= ? AND authz.expires != 0) OR {odd}) "
        "AND authz.id > ? AND authz.id <= ? ORDER BY authz.id LIMIT ?"
    )
    for rows in ctx.pages(authz, sql, [ctx.cutoff]):
        for row_id, name, status_value, unknown, expires, is_odd in rows:
            if is_odd:
                _skip_odd_date(plan, row_id, name, "expires", expires)
            elif unknown:
                plan.skip(
                    row_id,
                    name,
                    f"status_id {status_value!r} has no row in the status table, so acme2certifier "
                    "leaves this expired authorization alone; set status_id to the id of an existing status.",
                )
            else:
                plan.add(row_id, name)
    return plan


def apply_authorizations(ctx: Context, plan: Plan) -> int:
    """Set the selected authorizations to expired in batches."""
    if not plan.count:
        return 0
    expired = plan.status_id if plan.status_id is not None else status_id(ctx, "expired", "expire authorizations")
    authz, status = ctx.schema.name("authorization"), ctx.schema.name("status")

    def statements(batch: Sequence[int]) -> List[Statement]:
        result = []
        for part in chunks(batch, IN_LIST_LIMIT):
            sql = (
                f"UPDATE {authz} SET status_id = ? WHERE id IN ({_in_list(len(part))}) "
                "AND expires <= ? AND expires != 0 AND status_id IN "
                f"(SELECT id FROM {status} WHERE {_authz_status_test(ctx, 'name')})"
            )
            result.append((sql, [expired, *part, ctx.cutoff]))
        return result

    return ctx.write_batches(plan.ids, statements)


# Nonces -----------------------------------------------------------------------------------

def _nonce_test(ctx: Context, validity: int) -> Tuple[str, Any]:
    """Return the nonce predicate of the database's handler and its threshold parameter.

    acme2certifier 0.46.3's wsgi handler deletes nonces created strictly before
    cutoff - validity, reading created_at with SQLite's strftime('%s'). Its Django handler
    deletes those created at or before that time, comparing datetimes.
    """
    threshold = ctx.cutoff - validity
    if ctx.schema.handler == "wsgi":
        return "CAST(strftime('%s', created_at) AS INTEGER) < ?", threshold
    moment = datetime.datetime.fromtimestamp(threshold, tz=datetime.timezone.utc)
    if ctx.db.engine == "sqlite":
        # Django stores datetimes on SQLite as naive UTC text that sorts like the time.
        return "created_at <= ?", moment.strftime("%Y-%m-%d %H:%M:%S")
    if ctx.db.engine == "mysql":
        return "created_at <= ?", moment.replace(tzinfo=None)
    return "created_at <= ?", moment


def plan_nonces(ctx: Context, validity: int) -> Plan:
    """Select nonces older than the cutoff minus the nonce validity."""
    plan = Plan("nonces")
    if validity <= 0:
        plan.note = (
            f"Nonce cleanup skipped: the nonce validity is {validity}, which acme2certifier "
            "treats as 'nonces never expire'."
        )
        return plan
    test, threshold = _nonce_test(ctx, validity)
    table = ctx.schema.name("nonce")
    # On SQLite created_at is text that may not be a date at all; such nonces are reported.
    if ctx.db.dynamic_types:
        unreadable = "strftime('%s', created_at) IS NULL"
        where = f"({test} OR {unreadable})"
    else:
        unreadable, where = "FALSE", test
    sql = (
        f"SELECT id, nonce, created_at, {unreadable} FROM {table} WHERE {where} "
        "AND id > ? AND id <= ? ORDER BY id LIMIT ?"
    )
    for rows in ctx.pages(table, sql, [threshold]):
        for row_id, nonce, created_at, not_a_date in rows:
            if not_a_date:
                plan.skip(
                    row_id,
                    nonce,
                    f"created_at {created_at!r} is not a date, so the age of this nonce is unknown "
                    "and it is kept; set created_at to a time such as '2026-01-31 12:00:00', or delete the row.",
                )
            else:
                plan.add(row_id, nonce)
    return plan


def apply_nonces(ctx: Context, plan: Plan, validity: int) -> int:
    """Delete the selected nonces in batches."""
    nonce = ctx.schema.name("nonce")
    test, threshold = _nonce_test(ctx, validity)

    def statements(batch: Sequence[int]) -> List[Statement]:
        return [
            (f"DELETE FROM {nonce} WHERE id IN ({_in_list(len(part))}) AND {test}", [*part, threshold])
            for part in chunks(batch, IN_LIST_LIMIT)
        ]

    return ctx.write_batches(plan.ids, statements)


# Certificates -----------------------------------------------------------------------------


def _certificate_columns(schema: Schema) -> List[str]:
    return ["issue_uts", "expire_uts"] if schema.has("certificate", "expire_uts") else []


def _looks_like_certificate(cert: Any) -> bool:
    """Apply the check of acme2certifier that a cert column contains PEM or base64 before re-storing it."""
    if not isinstance(cert, str) or not cert:
        return False
    text = cert.strip()
    if text.startswith("-----BEGIN CERTIFICATE-----") and text.endswith("-----END CERTIFICATE-----"):
        return True
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")
    return all(char in allowed for char in text)


def _load_cert_raw(cert_raw: Any) -> Tuple[Optional[x509.LoadedCertificate], Optional[str]]:
    """Load cert_raw once for all the values read from it, or return (None, reason) when that fails."""
    try:
        return x509.load_cert_raw(cert_raw), None
    except ValueError as exc:
        return None, f"cert_raw cannot be parsed as a certificate: {exc}"


def _parse_dates(cert_raw: Any) -> Tuple[int, int, Optional[str]]:
    """Read notBefore and notAfter from cert_raw; (0, 0, reason) when that is impossible."""
    certificate, reason = _load_cert_raw(cert_raw)
    if certificate is None:
        return 0, 0, reason
    # read_dates applies acme2certifier's special cases, such as (0, 0) for the year 0000.
    issue, expire = x509.read_dates(certificate)
    return issue, expire, None


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


@dataclass
class DatesFill:
    """Values the dates back-fill writes into one certificate row."""

    issue_uts: int
    expire_uts: int
    serial: Optional[str]
    aki: Optional[str]
    renewal_info: Optional[str]


def _dates_fill(cert: Any, cert_raw: Any) -> Tuple[Optional[DatesFill], Optional[str]]:
    """Work out the back-fill for one row, or the reason it cannot be done."""
    if cert not in (None, "") and not _looks_like_certificate(cert):
        return None, None  # acme2certifier skips rows whose cert column is not a certificate.
    if not cert_raw:
        return None, None

    certificate, reason = _load_cert_raw(cert_raw)
    if certificate is None:
        return None, reason
    issue, expire = x509.read_dates(certificate)
    if not issue and not expire:
        return None, None
    try:
        fill = DatesFill(
            issue_uts=issue,
            expire_uts=expire,
            serial=x509.format_serial_hex(certificate.serial_number),
            aki=certificate.authority_key_identifier,
            renewal_info=x509.renewal_info(cert),
        )
    except ValueError as exc:
        # acme2certifier 0.46.3 aborts the whole dates update on such a row.
        return None, f"the certificate chain in cert or the AKI extension cannot be read: {exc}"
    return fill, None


def _certificate_joins(ctx: Context) -> str:
    """Join certificates to their order (and account) like the database's handler does.

    Certificates whose order (or, with the wsgi handler, account) is missing are never
    selected for cleanup or the dates back-fill by acme2certifier.
    """
    orders = ctx.schema.name("orders")
    joins = f"JOIN {orders} AS orders ON orders.id = certificate.order_id "
    if ctx.schema.handler == "wsgi":
        joins += f"JOIN {ctx.schema.name('account')} AS account ON account.id = orders.account_id "
    return joins


def _dates_select(ctx: Context) -> str:
    certificate = ctx.schema.name("certificate")
    return (
        "SELECT certificate.id, certificate.name, certificate.cert, certificate.cert_raw "
        f"FROM {certificate} AS certificate {_certificate_joins(ctx)}"
        "WHERE certificate.issue_uts = 0 AND certificate.expire_uts = 0 "
        "AND certificate.id > ? AND certificate.id <= ? ORDER BY certificate.id LIMIT ?"
    )


def plan_certificate_dates(ctx: Context) -> Plan:
    """Select certificates with unknown dates whose cert_raw gives them."""
    plan = Plan("certificate_dates")
    if not _certificate_columns(ctx.schema):
        plan.note = "The certificate table has no issue_uts/expire_uts columns (before 0.11)."
        return plan
    for rows in ctx.pages(ctx.schema.name("certificate"), _dates_select(ctx), []):
        for row_id, name, cert, cert_raw in rows:
            fill, reason = _dates_fill(cert, cert_raw)
            if reason:
                plan.skip(row_id, name, reason + "; its dates stay unknown.")
            elif fill:
                plan.add(row_id, name)
                plan.values.append((fill.issue_uts, fill.expire_uts, fill.serial, fill.aki, fill.renewal_info))
    return plan


def apply_certificate_dates(ctx: Context, plan: Plan) -> int:
    """Write the back-filled dates, serial, AKI and renewal info in batches."""
    schema = ctx.schema
    assignments = ["issue_uts = ?", "expire_uts = ?"]
    extra = [column for column in ("serial", "aki", "renewal_info") if schema.has("certificate", column)]
    # renewal_info needs the issuer from the PEM chain in cert; without one the stored value
    # is kept instead of being cleared.
    assignments += [
        f"{column} = COALESCE(?, {column})" if column == "renewal_info" else f"{column} = ?"
        for column in extra
    ]
    # acme2certifier 0.46.3 clears poll_identifier when it re-stores the certificate.
    if schema.has("certificate", "poll_identifier"):
        assignments.append("poll_identifier = NULL")
    sql = (
        f"UPDATE {schema.name('certificate')} SET {', '.join(assignments)} "
        "WHERE id = ? AND issue_uts = 0 AND expire_uts = 0"
    )

    def statements(batch: Sequence[Tuple[int, Tuple[Any, ...]]]) -> List[Statement]:
        result = []
        for row_id, (issue, expire, serial, aki, renewal) in batch:
            by_column = {"serial": serial, "aki": aki, "renewal_info": renewal}
            result.append((sql, [issue, expire, *[by_column[c] for c in extra], row_id]))
        return result

    return ctx.write_batches(list(zip(plan.ids, plan.values)), statements)


def cleanup_marker(cutoff: int) -> str:
    """Return the text acme2certifier 0.46.3 writes into cert when it blanks a certificate."""
    return f"removed by certificates.cleanup() on {format_utc(cutoff, MARKER_DATE_FORMAT)}"


def plan_certificates(ctx: Context, purge: bool, with_dates_fill: bool) -> Plan:
    """Select certificates to blank or delete, applying acme2certifier's per-row rules.

    With with_dates_fill the rows that the dates back-fill of the same run changes are judged
    by their back-filled dates, so check mode predicts the real run exactly.
    """
    plan = Plan("certificates")
    schema = ctx.schema
    schema.require("certificate", ["expire_uts", "issue_uts"], "clean up certificates")
    certificate = schema.name("certificate")
    odd = _odd_date_test(ctx, "certificate.expire_uts", null_too=True)
    sql = (
        "SELECT certificate.id, certificate.name, certificate.expire_uts, certificate.issue_uts, "
        f"certificate.cert, certificate.cert_raw, certificate.csr, certificate.created_at, {odd} "
        f"FROM {certificate} AS certificate {_certificate_joins(ctx)}"
        f"WHERE (certificate.expire_uts <= ? OR {odd}) AND certificate.id > ? AND certificate.id <= ? "
        "ORDER BY certificate.id LIMIT ?"
    )
    for rows in ctx.pages(certificate, sql, [ctx.cutoff]):
        for *row, is_odd in rows:
            if is_odd:
                _skip_odd_date(plan, row[0], row[1], "expire_uts", row[2])
                continue
            decision = _certificate_decision(ctx.cutoff, purge, with_dates_fill, row, plan)
            if decision is not None:
                plan.add(row[0], row[1])
                if not purge and decision != (row[3], row[2]):
                    plan.dates[int(row[0])] = decision
    return plan


def _certificate_decision(
    cutoff: int, purge: bool, with_dates_fill: bool, row: Row, plan: Plan
) -> Optional[Tuple[Any, Any]]:
    """Return the (issue_uts, expire_uts) to store when the row is cleared, else None."""
    row_id, name, expire_uts, issue_uts, cert, cert_raw, csr, created_at = row

    if isinstance(cert, str) and cert and "removed by" in cert.lower():
        return (issue_uts, expire_uts) if purge else None

    if with_dates_fill and _is_zero(issue_uts) and _is_zero(expire_uts):
        fill, _reason = _dates_fill(cert, cert_raw)
        if fill:
            issue_uts, expire_uts = fill.issue_uts, fill.expire_uts
            if not _is_zero(expire_uts):
                return (issue_uts, expire_uts) if expire_uts <= cutoff else None

    if not _is_zero(expire_uts):
        return (issue_uts, expire_uts)

    if cert_raw:
        issue, expire, reason = _parse_dates(cert_raw)
        if reason:
            plan.skip(row_id, name, reason + "; the expiry date is unknown, so it is kept.")
            return None
        if 0 < expire < cutoff:
            return (issue, expire)
        return None

    if not csr:
        return (issue_uts, expire_uts)

    created = parse_db_datetime(created_at)
    if created is None:
        plan.skip(
            row_id,
            name,
            f"created_at {created_at!r} is not a date, so the age of this CSR-only row is "
            "unknown and it is kept.",
        )
        return None
    if 0 < created < cutoff - CSR_GRACE_SECONDS:
        return (issue_uts, expire_uts)
    return None


def apply_certificates(ctx: Context, plan: Plan, purge: bool) -> int:
    """Blank or delete the selected certificates in batches."""
    certificate = ctx.schema.name("certificate")
    if purge:
        def deletes(batch: Sequence[int]) -> List[Statement]:
            return [
                (
                    f"DELETE FROM {certificate} WHERE id IN ({_in_list(len(part))}) AND expire_uts <= ?",
                    [*part, ctx.cutoff],
                )
                for part in chunks(batch, IN_LIST_LIMIT)
            ]

        return ctx.write_batches(plan.ids, deletes)

    marker = cleanup_marker(ctx.cutoff)
    # NULL keeps the stored dates of rows that have no entry in plan.dates.
    sql = (
        f"UPDATE {certificate} SET cert = ?, issue_uts = COALESCE(?, issue_uts), "
        "expire_uts = COALESCE(?, expire_uts) WHERE id = ? "
        "AND expire_uts <= ? AND (cert IS NULL OR LOWER(cert) NOT LIKE '%removed by%')"
    )
    unchanged = (None, None)

    def updates(batch: Sequence[int]) -> List[Statement]:
        return [(sql, [marker, *plan.dates.get(row_id, unchanged), row_id, ctx.cutoff]) for row_id in batch]

    return ctx.write_batches(plan.ids, updates)

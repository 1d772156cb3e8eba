# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The raw limit of each operation: one set-based SQL statement, or one streamed SELECT.

Each write operation is one UPDATE or DELETE in one transaction: the least work SQLite can
do for it, with the write lock held for all of it. Rules that need a certificate
parsed (dates of rows with expire_uts 0, the dates back-fill) call SQL functions written
with the cryptography package, so the statement selects the same rows as acme2certifier
0.46.3 on the benchmark data. The statements cover the rules that the generated data
exercises. They are not a second implementation of housekeeping: for example,
_looks_like_certificate's base64 case of the cert column is left out because
the generator never writes such rows.

Each report is one SELECT with every join, streamed into csv.writer or json.dumps without
any conversion (no readable dates, no serial numbers), then fsync'ed like the engine's
report files.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime
import functools
import hashlib
import json
import os
import sqlite3
from typing import Any, Dict, List, Optional, Sequence, Tuple

CSR_GRACE_SECONDS = 14 * 86400
MARKER_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Certificates that belong to an order of an existing account; acme2certifier's certificate
# searches join both tables.
CERT_SCOPE = 'certificate.order_id IN (SELECT orders.id FROM orders JOIN account ON account.id = orders.account_id)'

# The expiry rules of acme2certifier 0.46.3 for a certificate that is not blanked yet, with
# the dates of rows with expire_uts 0 read from cert_raw.
CERT_EXPIRED = (
    "(certificate.expire_uts != 0"
    " OR (coalesce(cert_raw, '') != '' AND cert_expire(cert_raw) > 0 AND cert_expire(cert_raw) < :cutoff)"
    " OR (coalesce(cert_raw, '') = '' AND coalesce(csr, '') = '')"
    " OR (coalesce(cert_raw, '') = '' AND coalesce(csr, '') != ''"
    "     AND CAST(strftime('%s', created_at) AS INTEGER) BETWEEN 1 AND :cutoff - :csr_grace - 1))"
)
NOT_BLANKED = "instr(lower(coalesce(cert, '')), 'removed by') = 0"

WRITE_SQL = {
    "orders": (
        "UPDATE orders SET status_id = (SELECT id FROM status WHERE name LIKE 'invalid' LIMIT 1) "
        "WHERE status_id > 1 AND expires <= :cutoff "
        "AND status_id NOT IN (SELECT id FROM status WHERE name = 'invalid')"
    ),
    "authorizations": (
        'UPDATE "authorization" SET status_id = (SELECT id FROM status WHERE name LIKE \'expired\' LIMIT 1) '
        "WHERE expires <= :cutoff AND expires != 0 "
        "AND status_id IN (SELECT id FROM status WHERE name NOT LIKE 'expired')"
    ),
    "nonces": "DELETE FROM nonce WHERE CAST(strftime('%s', created_at) AS INTEGER) < :cutoff - :validity",
    "certificates_blank": (
        "UPDATE certificate SET cert = :marker, "
        "issue_uts = CASE WHEN expire_uts = 0 AND coalesce(cert_raw, '') != '' THEN cert_issue(cert_raw) ELSE issue_uts END, "
        "expire_uts = CASE WHEN expire_uts = 0 AND coalesce(cert_raw, '') != '' THEN cert_expire(cert_raw) ELSE expire_uts END "
        f"WHERE certificate.expire_uts <= :cutoff AND {NOT_BLANKED} AND {CERT_EXPIRED} AND {CERT_SCOPE}"
    ),
    "certificates_purge": (
        f"DELETE FROM certificate WHERE certificate.expire_uts <= :cutoff AND {CERT_SCOPE} "
        f"AND (NOT {NOT_BLANKED} OR {CERT_EXPIRED})"
    ),
    "certificate_dates": (
        "UPDATE certificate SET issue_uts = cert_issue(cert_raw), expire_uts = cert_expire(cert_raw), "
        "serial = cert_serial(cert_raw), aki = cert_aki(cert_raw), "
        "renewal_info = coalesce(cert_renewal(cert), renewal_info), poll_identifier = NULL "
        "WHERE issue_uts = 0 AND expire_uts = 0 AND coalesce(cert_raw, '') != '' "
        "AND (coalesce(cert, '') = '' OR cert LIKE '-----BEGIN CERTIFICATE-----%') "
        f"AND (cert_issue(cert_raw) != 0 OR cert_expire(cert_raw) != 0) AND {CERT_SCOPE}"
    ),
}


# ---------------------------------------------------------------------------
# SQL functions that read certificates with the cryptography package


@functools.lru_cache(maxsize=4)
def _load(cert_raw: str) -> Any:
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(base64.b64decode(cert_raw, validate=True))
    except (ValueError, binascii.Error):
        return None


def _epoch(moment: datetime.datetime) -> int:
    return int(moment.timestamp())


def cert_issue(cert_raw: str) -> int:
    certificate = _load(cert_raw)
    return _epoch(certificate.not_valid_before_utc) if certificate is not None else 0


def cert_expire(cert_raw: str) -> int:
    certificate = _load(cert_raw)
    return _epoch(certificate.not_valid_after_utc) if certificate is not None else 0


def cert_serial(cert_raw: str) -> Optional[str]:
    certificate = _load(cert_raw)
    if certificate is None:
        return None
    digits = format(certificate.serial_number, "x")
    return digits.zfill(len(digits) + len(digits) % 2)


def cert_aki(cert_raw: str) -> Optional[str]:
    from cryptography import x509

    certificate = _load(cert_raw)
    if certificate is None:
        return None
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    identifier = extension.value.key_identifier
    return identifier.hex() if identifier else None


def cert_renewal(cert: Optional[str]) -> Optional[str]:
    """Return the renewal_info of a PEM chain: SHA-256 issuer name and key hashes and the serial."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not cert:
        return None
    try:
        chain = x509.load_pem_x509_certificates(cert.encode("ascii"))
    except ValueError:
        return None
    if len(chain) < 2:
        return None
    leaf, issuer = chain[0], chain[1]
    key = issuer.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key_bits = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    else:
        key_bits = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    serial = leaf.serial_number
    content = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return (hashlib.sha256(leaf.issuer.public_bytes()).hexdigest() + "0420" + hashlib.sha256(key_bits).hexdigest()
            + (bytes([0x02, len(content)]) + content).hex())


def register_functions(connection: sqlite3.Connection) -> None:
    for name, function in (("cert_issue", cert_issue), ("cert_expire", cert_expire), ("cert_serial", cert_serial),
                           ("cert_aki", cert_aki), ("cert_renewal", cert_renewal)):
        connection.create_function(name, 1, function, deterministic=True)


# ---------------------------------------------------------------------------
# Write operations


def run_write(database: str, operation: str, cutoff: int, validity: int) -> int:
    """Run the one statement of an operation in one transaction and return the rows it changed."""
    connection = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        register_functions(connection)
        marker = "removed by certificates.cleanup() on " + datetime.datetime.fromtimestamp(
            cutoff, tz=datetime.timezone.utc).strftime(MARKER_FORMAT)
        params = {"cutoff": cutoff, "validity": validity, "marker": marker, "csr_grace": CSR_GRACE_SECONDS}
        connection.execute("BEGIN IMMEDIATE")
        cursor = connection.execute(WRITE_SQL[operation], params)
        changed = cursor.rowcount
        connection.execute("COMMIT")
        return changed
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# Reports


ACCOUNT_COLUMNS = (
    ("account.id", "account.id"), ("account.name", "account.name"), ("account.eab_kid", "account.eab_kid"),
    ("account.contact", "account.contact"), ("account.created_at", "account.created_at"),
    ("account.jwk", "account.jwk"), ("account.alg", "account.alg"),
    ("order.id", "orders.id"), ("order.name", "orders.name"), ("order.status.id", "orders.status_id"),
    ("order.status.name", "order_status.name"), ("order.notbefore", "orders.notbefore"),
    ("order.notafter", "orders.notafter"), ("order.expires", "orders.expires"),
    ("order.identifiers", "orders.identifiers"),
    ("authorization.id", "authz.id"), ("authorization.name", "authz.name"), ("authorization.type", "authz.type"),
    ("authorization.value", "authz.value"), ("authorization.expires", "authz.expires"),
    ("authorization.token", "authz.token"), ("authorization.created_at", "authz.created_at"),
    ("authorization.status.id", "authz.status_id"), ("authorization.status.name", "authz_status.name"),
    ("challenge.id", "challenge.id"), ("challenge.name", "challenge.name"), ("challenge.token", "challenge.token"),
    ("challenge.expires", "challenge.expires"), ("challenge.type", "challenge.type"),
    ("challenge.keyauthorization", "challenge.keyauthorization"), ("challenge.created_at", "challenge.created_at"),
    ("challenge.status.id", "challenge.status_id"), ("challenge.status.name", "challenge_status.name"),
)

ACCOUNT_SQL = (
    "SELECT {columns} FROM account "
    "LEFT JOIN orders ON orders.account_id = account.id "
    "LEFT JOIN status AS order_status ON order_status.id = orders.status_id "
    'LEFT JOIN "authorization" AS authz ON authz.order_id = orders.id '
    "LEFT JOIN status AS authz_status ON authz_status.id = authz.status_id "
    "LEFT JOIN challenge ON challenge.authorization_id = authz.id "
    "LEFT JOIN status AS challenge_status ON challenge_status.id = challenge.status_id "
    "ORDER BY account.id, orders.id, authz.id, challenge.id"
)

CERTIFICATE_COLUMNS = (
    ("certificate.id", "certificate.id"), ("certificate.name", "certificate.name"),
    ("certificate.cert_raw", "certificate.cert_raw"), ("certificate.csr", "certificate.csr"),
    ("certificate.poll_identifier", "certificate.poll_identifier"), ("certificate.created_at", "certificate.created_at"),
    ("certificate.issue_uts", "certificate.issue_uts"), ("certificate.expire_uts", "certificate.expire_uts"),
    ("order.id", "orders.id"), ("order.name", "orders.name"), ("order.status.name", "order_status.name"),
    ("order.notbefore", "orders.notbefore"), ("order.notafter", "orders.notafter"), ("order.expires", "orders.expires"),
    ("order.identifiers", "orders.identifiers"), ("account.name", "account.name"),
    ("account.contact", "account.contact"), ("account.created_at", "account.created_at"),
    ("account.jwk", "account.jwk"), ("account.alg", "account.alg"), ("account.eab_kid", "account.eab_kid"),
)

CERTIFICATE_SQL = (
    "SELECT {columns} FROM certificate "
    "JOIN orders ON orders.id = certificate.order_id "
    "JOIN account ON account.id = orders.account_id "
    "LEFT JOIN status AS order_status ON order_status.id = orders.status_id "
    "WHERE certificate.cert_raw IS NOT NULL ORDER BY certificate.id"
)

FETCH_ROWS = 1000


def _select(connection: sqlite3.Connection, sql: str, columns: Sequence[Tuple[str, str]]) -> sqlite3.Cursor:
    return connection.execute(sql.format(columns=", ".join(expression for _key, expression in columns)))


def _json_element(value: Any) -> str:
    return "    " + json.dumps(value, ensure_ascii=False, indent=4, default=str).replace("\n", "\n    ")


def run_report(database: str, report: str, report_format: str, nested: bool, dest: str) -> int:
    """Stream one report into dest and return the number of rows (accounts when nested)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None, timeout=10)
    try:
        if report == "accounts":
            columns, sql = ACCOUNT_COLUMNS, ACCOUNT_SQL
        else:
            columns, sql = CERTIFICATE_COLUMNS, CERTIFICATE_SQL
        keys = [key for key, _expression in columns]
        cursor = _select(connection, sql, columns)
        with open(dest, "w", encoding="utf-8", newline="") as handle:
            if report_format == "csv":
                count = _write_csv(cursor, keys, handle)
            elif nested:
                count = _write_nested(cursor, keys, handle)
            else:
                count = _write_json(cursor, keys, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return count
    finally:
        connection.close()


def _write_csv(cursor: sqlite3.Cursor, keys: List[str], handle: Any) -> int:
    writer = csv.writer(handle, delimiter=",", quotechar='"', quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(keys)
    count = 0
    while True:
        rows = cursor.fetchmany(FETCH_ROWS)
        if not rows:
            return count
        writer.writerows(rows)
        count += len(rows)


def _write_json(cursor: sqlite3.Cursor, keys: List[str], handle: Any) -> int:
    count = 0
    while True:
        rows = cursor.fetchmany(FETCH_ROWS)
        if not rows:
            break
        for row in rows:
            handle.write(("[\n" if count == 0 else ",\n") + _json_element(dict(zip(keys, row))))
            count += 1
    handle.write("[]" if count == 0 else "\n]")
    return count


def _write_nested(cursor: sqlite3.Cursor, keys: List[str], handle: Any) -> int:
    """Group the account rows (ordered by account) into one nested object per account."""
    account_keys = [index for index, key in enumerate(keys) if key.startswith("account.")]
    order_keys = [index for index, key in enumerate(keys) if key.startswith("order.")]
    authz_keys = [index for index, key in enumerate(keys) if key.startswith("authorization.")]
    challenge_keys = [index for index, key in enumerate(keys) if key.startswith("challenge.")]
    order_id, authz_id = keys.index("order.id"), keys.index("authorization.id")
    challenge_id = keys.index("challenge.id")
    count = 0
    account: Optional[Dict[str, Any]] = None
    order: Dict[str, Any] = {}
    authz: Dict[str, Any] = {}

    def flush() -> None:
        if account is not None:
            handle.write(("[\n" if count == 0 else ",\n") + _json_element(account))

    while True:
        rows = cursor.fetchmany(FETCH_ROWS)
        if not rows:
            break
        for row in rows:
            if account is None or account["account.id"] != row[0]:
                flush()
                count += account is not None
                account = {keys[index]: row[index] for index in account_keys}
                account["orders"] = []
                order, authz = {}, {}
            if row[order_id] is None:
                continue
            if order.get("order.id") != row[order_id]:
                order = {keys[index]: row[index] for index in order_keys}
                order["authorizations"] = []
                account["orders"].append(order)
            if row[authz_id] is None:
                continue
            if authz.get("authorization.id") != row[authz_id]:
                authz = {keys[index]: row[index] for index in authz_keys}
                authz["challenges"] = []
                order["authorizations"].append(authz)
            if row[challenge_id] is not None:
                authz["challenges"].append({keys[index]: row[index] for index in challenge_keys})
    flush()
    count += account is not None
    handle.write("[]" if count == 0 else "\n]")
    return count

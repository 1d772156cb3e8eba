# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rows for the differential corpus: a realistic installation and a catalogue of edge cases.

Both fillers write through RowWriter, which drops the columns a schema does not have, so the
same content goes into databases of every schema from 0.11 to 0.46. Times are relative to the
reference time of the run, so each row lands on the side of a rule the comment names.
"""

from __future__ import annotations

import base64
import datetime
import json
import random
import sqlite3
import string
from pathlib import Path
from typing import Any, Dict, List, Optional

from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import (
    CertificateFactory,
    CertificatePair,
)

DAY = 86400
REFERENCE_NOW = 1796342400  # 2026-12-04T00:00:00Z
INVALID, PENDING, READY, PROCESSING, VALID, EXPIRED, DEACTIVATED, REVOKED = range(1, 9)
UNKNOWN_STATUS = 42
CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")


def db_time(uts: int, separator: str = " ") -> str:
    """Format epoch seconds as SQLite's CURRENT_TIMESTAMP text (UTC)."""
    return datetime.datetime.fromtimestamp(uts, tz=datetime.timezone.utc).strftime(f"%Y-%m-%d{separator}%H:%M:%S")


def marker(uts: int, trailing_space: bool = False) -> str:
    """Return the cleanup marker text; releases 0.11 to 0.32 wrote it with a trailing space."""
    stamp = datetime.datetime.fromtimestamp(uts, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"removed by certificates.cleanup() on {stamp}" + (" " if trailing_space else "")


class RowWriter:
    """Insert rows into an acme2certifier database, leaving out columns its schema lacks."""

    def __init__(self, path: Path, seed: int) -> None:
        self.connection = sqlite3.connect(path)
        self.random = random.Random(seed)
        self.columns: Dict[str, List[str]] = {}
        for (table,) in self.connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            self.columns[table] = [row[1] for row in self.connection.execute(f'PRAGMA table_info("{table}")')]

    def name(self) -> str:
        """Return a random name like the 12 letters and digits acme2certifier generates."""
        return "".join(self.random.choice(string.ascii_letters + string.digits) for _index in range(12))

    def insert(self, table: str, **values: Any) -> int:
        kept = {column: value for column, value in values.items() if column in self.columns[table]}
        names = ", ".join(f'"{column}"' for column in kept)
        marks = ", ".join("?" * len(kept))
        cursor = self.connection.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', tuple(kept.values()))
        return int(cursor.lastrowid)

    def close(self) -> None:
        self.connection.commit()
        self.connection.close()

    # Row helpers with the values a real server writes by default.

    def account(self, contact: str, created_at: str, **extra: Any) -> int:
        name = extra.pop("name", None) or self.name()
        values = {"name": name, "alg": "ES256", "jwk": json.dumps({"kty": "EC", "kid": name}), "contact": contact,
                  "eab_kid": "", "status_id": VALID, "created_at": created_at}
        values.update(extra)
        return self.insert("account", **values)

    def order(self, account_id: int, status_id: int, expires: Any, identifiers: List[str], created_at: str,
              **extra: Any) -> int:
        values = {
            "name": extra.pop("name", None) or self.name(), "notbefore": "", "notafter": "",
            "identifiers": json.dumps([{"type": "dns", "value": value} for value in identifiers]),
            "account_id": account_id, "status_id": status_id, "expires": expires, "created_at": created_at,
            "profile": "", "cahandler": "",
        }
        values.update(extra)
        return self.insert("orders", **values)

    def authorization(self, order_id: int, value: str, status_id: int, expires: Any, created_at: str,
                      **extra: Any) -> int:
        values = {"name": extra.pop("name", None) or self.name(), "order_id": order_id, "type": "dns", "value": value,
                  "expires": expires, "token": self.name() if expires is not None else None, "status_id": status_id,
                  "created_at": created_at}
        values.update(extra)
        return self.insert("authorization", **values)

    def challenge(self, authorization_id: int, challenge_type: str, status_id: int, expires: Any, created_at: str,
                  **extra: Any) -> int:
        values = {"name": extra.pop("name", None) or self.name(), "token": self.name(),
                  "authorization_id": authorization_id, "expires": expires, "type": challenge_type,
                  "keyauthorization": None, "status_id": status_id, "validated": 0, "created_at": created_at}
        values.update(extra)
        return self.insert("challenge", **values)

    def chain(self, account_id: int, status_id: int, expires: Any, identifiers: List[str], created: int,
              authz_status: int, answered: int = 0, **order_extra: Any) -> int:
        """Insert an order with one authorization per identifier and three challenges each."""
        order_id = self.order(account_id, status_id, expires, identifiers, db_time(created), **order_extra)
        for index, identifier in enumerate(identifiers):
            authz_id = self.authorization(order_id, identifier, authz_status, expires, db_time(created))
            for offset, challenge_type in enumerate(CHALLENGE_TYPES):
                chosen = (answered + index) % len(CHALLENGE_TYPES) == offset
                challenge_status = VALID if chosen and authz_status == VALID else PENDING
                self.challenge(authz_id, challenge_type, challenge_status, expires, db_time(created),
                               validated=created + 5 if challenge_status == VALID else 0)
        return order_id

    def certificate(self, order_id: int, created_at: Any, **values: Any) -> int:
        row = {"name": values.pop("name", None) or self.name(), "order_id": order_id, "csr": "MIIBCsrPlaceholder",
               "created_at": created_at, "issue_uts": 0, "expire_uts": 0, "replaced": 0}
        row.update(values)
        return self.insert("certificate", **row)

    def issued(self, order_id: int, pair: CertificatePair, with_dates: bool = True, **values: Any) -> int:
        """Insert a certificate as the server stores it after a successful finalization."""
        row = {"cert": pair.chain_pem, "cert_raw": pair.cert_raw, "serial": f"{pair.serial_number:x}", "aki": pair.aki_hex,
               "issue_uts": pair.not_before if with_dates else 0, "expire_uts": pair.not_after if with_dates else 0}
        row.update(values)
        return self.certificate(order_id, db_time(pair.not_before), **row)

    def nonce(self, created_at: Any) -> int:
        return self.insert("nonce", nonce=self.random.getrandbits(128).to_bytes(16, "big").hex(), created_at=created_at)


def fill_realistic(path: Path, now: int, certs: CertificateFactory, seed: int = 1) -> None:
    """Fill a database with what a small installation holds, around the reference time now."""
    rows = RowWriter(path, seed)
    serial = iter(range(0x1000, 0x2000))

    def issue(not_before: int, not_after: int) -> CertificatePair:
        return certs.issue(not_before, not_after, serial_number=next(serial))

    alice = rows.account('["mailto:alice@example.com"]', db_time(now - 400 * DAY), eab_kid="kid01")
    bob = rows.account('["mailto:bob@example.org", "tel:+15550100"]', db_time(now - 300 * DAY))
    carol = rows.account('["mailto:carol@example.net"]', db_time(now - 200 * DAY), status_id=DEACTIVATED)
    rows.account('["mailto:dave@example.com"]', db_time(now - 10 * DAY))  # no orders yet

    # Completed orders: expired certificate, current certificate, and one whose dates were never stored.
    order = rows.chain(alice, VALID, now - 30 * DAY, ["www.example.com", "example.com"], now - 31 * DAY, VALID)
    rows.issued(order, issue(now - 120 * DAY, now - 30 * DAY), renewal_info="a1" * 16)
    order = rows.chain(alice, VALID, now - 2 * DAY, ["api.example.com"], now - 3 * DAY, VALID, answered=1)
    rows.issued(order, issue(now - 10 * DAY, now + 80 * DAY))
    order = rows.chain(alice, VALID, now - 5 * DAY, ["old.example.com"], now - 6 * DAY, VALID, answered=2)
    rows.issued(order, issue(now - 95 * DAY, now - DAY), with_dates=False, poll_identifier="poll-1", serial=None, aki=None)

    # Open orders: pending past its expiry (one authorization never fetched), ready in the future.
    order = rows.chain(alice, PENDING, now - 3600, ["pending.example.com"], now - DAY, PENDING)
    rows.authorization(order, "pending2.example.com", PENDING, None, db_time(now - DAY))
    rows.chain(alice, READY, now + 3600, ["ready.example.com"], now - 3600, VALID)

    # Orders stuck in processing: CSR-only rows older and younger than 14 days.
    order = rows.chain(bob, PROCESSING, now - 19 * DAY, ["slow.example.org"], now - 20 * DAY, VALID)
    rows.certificate(order, db_time(now - 20 * DAY), cert=None, cert_raw=None)
    order = rows.chain(bob, PROCESSING, now - DAY, ["slow2.example.org"], now - 2 * DAY, VALID, answered=1)
    rows.certificate(order, db_time(now - 2 * DAY), cert=None, cert_raw=None)

    # A failed finalization, and a certificate cleaned up by a release before 0.33.
    order = rows.chain(bob, INVALID, now - 40 * DAY, ["bad.example.org"], now - 41 * DAY, INVALID)
    rows.certificate(order, db_time(now - 41 * DAY), cert=None, cert_raw=None,
                     error='"urn:ietf:params:acme:error:badCSR"')
    order = rows.chain(bob, VALID, now - 400 * DAY, ["legacy.example.org"], now - 401 * DAY, VALID)
    pair = issue(now - 401 * DAY, now - 300 * DAY)
    rows.issued(order, pair, cert=marker(now - 250 * DAY, trailing_space=True))

    # A deactivated account keeps its orders and certificates.
    order = rows.chain(carol, VALID, now - 50 * DAY, ["carol.example.net"], now - 51 * DAY, VALID)
    rows.issued(order, issue(now - 51 * DAY, now - 20 * DAY))
    order = rows.chain(carol, VALID, now + 10 * DAY, ["carol2.example.net"], now - DAY, VALID, answered=2)
    rows.issued(order, issue(now - DAY, now + 50 * DAY), with_dates=False)

    for age in (3 * DAY, 2 * DAY, DAY + 1, DAY, 3600, 60):
        rows.nonce(db_time(now - age))
    rows.close()


def fill_edge_cases(path: Path, now: int, certs: CertificateFactory, nonce_validity: int, seed: int = 2) -> None:
    """Fill a schema 0.46 database with the unusual values real installations hold.

    Values that make acme2certifier 0.46.3 raise are left out here; test_documented_differences.py
    covers them. Those are text or NULL in issue_uts and expire_uts of rows with cert_raw,
    expiry text that is not a number, and rows whose dates update needs a NULL cert.
    """
    rows = RowWriter(path, seed)
    serial = iter(range(0x5000, 0x6000))

    def issue(not_before: int, not_after: int) -> CertificatePair:
        return certs.issue(not_before, not_after, serial_number=next(serial))

    created = db_time(now - 30 * DAY)
    unicode_account = rows.account('["mailto:jörg@exämple.de", "mailto:ß@bücher.example"]', created)
    quoted_account = rows.account('["mailto:o\'neil@example.com", "tel:+49 (0) 1,2"]', "2026-11-02 10:00:00.123456",
                                  eab_kid='kid "1", b', jwk='{"kty": "EC", "note": "line\r\nbreak"}')
    rows.account('["mailto:lonely@example.com"]', "")  # no orders, empty created_at
    rows.account('["mailto:zero@example.com"]', 0)  # no orders, created_at 0

    # Orders: expires 0, '', -1 and around the cutoff; unknown status; no authorizations.
    for status_id, expires in ((PENDING, 0), (VALID, 0), (INVALID, 0), (PENDING, ""), (PENDING, -1),
                               (READY, now), (READY, now + 1), (UNKNOWN_STATUS, now - 1), (UNKNOWN_STATUS, now + 1),
                               (EXPIRED, now - DAY), (REVOKED, now - DAY), (DEACTIVATED, now - DAY)):
        rows.chain(unicode_account, status_id, expires, [f"o{rows.random.randrange(10 ** 6)}.example.test"],
                   now - 2 * DAY, PENDING)
    rows.order(unicode_account, PENDING, now - DAY, ["no-authorizations.example.test"], created,
               notbefore=0, notafter=None)

    # Authorizations: expires NULL, 0, '', at and after the cutoff; every status; no challenges.
    order = rows.order(quoted_account, VALID, now + DAY, ["authz.example.test"], created)
    for status_id, expires in ((PENDING, None), (PENDING, 0), (PENDING, ""), (VALID, now), (VALID, now + 1),
                               (INVALID, now - DAY), (EXPIRED, now - DAY), (DEACTIVATED, now - DAY),
                               (REVOKED, now - DAY), (UNKNOWN_STATUS, now - DAY)):
        authz = rows.authorization(order, "authz.example.test", status_id, expires, created)
        for challenge_expires in (None, 0, ""):
            rows.challenge(authz, "http-01", PENDING, challenge_expires, created, validated=challenge_expires)
    rows.authorization(order, "no-challenges.example.test", PENDING, now - DAY, created)
    rows.challenge(authz, "dns-01", UNKNOWN_STATUS, now - DAY, created)

    # An order with hundreds of identifiers, one authorization and challenge each.
    names = [f"host{index:03d}.many.example.test" for index in range(300)]
    order = rows.order(quoted_account, PENDING, now - 3600, names, created)
    for name in names:
        authz = rows.authorization(order, name, PENDING, now - 3600, created)
        rows.challenge(authz, "dns-01", PENDING, now - 3600, created)

    # Orphans: an order without account, an authorization without order, a challenge without
    # authorization, certificates without order or whose order has no account.
    orphan_order = rows.order(9999, PENDING, now - DAY, ["orphan.example.test"], created)
    rows.authorization(8888, "orphan-authz.example.test", PENDING, now - DAY, created)
    rows.challenge(7777, "http-01", PENDING, now - DAY, created)
    rows.issued(orphan_order, issue(now - 90 * DAY, now - 10 * DAY))
    rows.issued(0, issue(now - 90 * DAY, now - 10 * DAY))

    _edge_certificates(rows, issue, rows.order(quoted_account, VALID, now + DAY, ["certs.example.test"], created), now)

    # Nonces around the threshold now - validity, and created_at values that are not dates.
    threshold = now - nonce_validity
    for created_at in (db_time(threshold - 1), db_time(threshold), db_time(threshold + 1), db_time(threshold - 1) + ".25",
                       db_time(threshold - 7, "T"), db_time(threshold - 7) + "Z", 0, "", "junk", 5, db_time(now + DAY)):
        rows.nonce(created_at)
    rows.close()


def _edge_certificates(rows: RowWriter, issue: Any, order: int, now: int) -> None:
    """Insert certificate rows for every branch of the cleanup, dates update and report rules."""
    expired = issue(now - 90 * DAY, now - DAY)
    at_cutoff = issue(now - 90 * DAY, now)
    current = issue(now - DAY, now + 60 * DAY)
    der = base64.b64decode(expired.cert_raw)
    wrapped = "\n".join(expired.cert_raw[index:index + 64] for index in range(0, len(expired.cert_raw), 64))

    # Names contain column names of the cleanup report (id, name, csr, order__id).
    rows.issued(order, expired, name="id")
    rows.issued(order, current, name="order__id_csr")
    rows.issued(order, at_cutoff, name="expire_uts_name")

    # expire_uts = 0: the date comes from cert_raw, cleared only when strictly before the cutoff.
    for pair in (expired, at_cutoff, current):
        rows.issued(order, pair, issue_uts=0, expire_uts=0, cert="-----BEGIN CERTIFICATE-----\nnot a chain\n")
    rows.issued(order, expired, expire_uts=0, cert=expired.leaf_pem)

    # cert_raw that cannot be read: malformed, truncated, a chain, PEM armour, wrapped, trailing
    # bytes; and the accepted URL-safe form without padding.
    unreadable = {
        "malformed": "not base64 at all!",
        "truncated": expired.cert_raw[:120],
        "chain": expired.cert_raw + current.cert_raw,
        "pem": expired.leaf_pem,
        "wrapped": wrapped,
        "trailing": base64.b64encode(der + b"\x00\x01").decode("ascii"),
        "urlsafe": base64.urlsafe_b64encode(der).decode("ascii").rstrip("="),
        "empty": "",
    }
    for label, raw in unreadable.items():
        rows.issued(order, expired, cert_raw=raw, issue_uts=0, expire_uts=0, name=f"raw-{label}-0")
        rows.issued(order, expired, cert_raw=raw, name=f"raw-{label}-dated")

    # Dates update: chain in cert, single PEM block in cert, cert "" and marker text in cert.
    rows.issued(order, expired, with_dates=False, serial=None, aki=None, poll_identifier="poll")
    rows.issued(order, current, with_dates=False, cert=current.leaf_pem, renewal_info=None)
    rows.issued(order, current, with_dates=False, cert="", renewal_info=None)
    rows.issued(order, expired, with_dates=False, cert=marker(now - 5 * DAY))
    rows.issued(order, expired, with_dates=False, issue_uts=expired.not_before)

    # CSR-only rows: older than 14 days, exactly 14 days, younger; created_at forms.
    fourteen = now - 14 * DAY
    for created_at in (db_time(fourteen - 1), db_time(fourteen), db_time(fourteen + 1), db_time(now - 13 * DAY),
                       db_time(fourteen - 60, "T"), db_time(fourteen - 60) + ".5", db_time(fourteen - 60) + "+02:00",
                       db_time(fourteen - DAY)[:10], "", 0, "junk"):
        rows.certificate(order, created_at, cert=None, cert_raw=None)
    rows.certificate(order, db_time(now), cert=None, cert_raw=None, csr="")  # no CSR, no certificate
    rows.certificate(order, db_time(now), cert=None, cert_raw="", csr="")

    # Marker rows from old and current releases, before and after the cutoff.
    rows.issued(order, expired, cert=marker(now - 30 * DAY, trailing_space=True))
    rows.issued(order, expired, cert=marker(now - 30 * DAY).upper())
    rows.issued(order, current, cert=marker(now - 30 * DAY))
    rows.issued(order, expired, cert="removed by an operator", expire_uts=0, issue_uts=0)

    # NULL, '' and unusual numbers in the date columns of rows without cert_raw.
    for issue_uts, expire_uts in ((None, None), ("", ""), (0, None), (None, 0), (0, ""), (5, -5), (0, now)):
        rows.certificate(order, db_time(now - 30 * DAY), cert=None, cert_raw=None, issue_uts=issue_uts,
                         expire_uts=expire_uts)
    rows.certificate(order, 0, cert=None, cert_raw=None, csr="MIIBcsr", expire_uts=None)


def copy_of_example(target: Path, source: Path) -> Path:
    """Copy acme2certifier's example database (schema 0.15)."""
    target.write_bytes(source.read_bytes())
    return target


def newest_time(path: Path, table: str, column: str) -> Optional[int]:
    """Return the largest integer value of a column, or None for an empty table."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        value = connection.execute(f'SELECT max({column}) FROM "{table}" WHERE typeof({column}) = \'integer\'').fetchone()[0]
    finally:
        connection.close()
    return None if value is None else int(value)

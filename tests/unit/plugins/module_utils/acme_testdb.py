# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small acme2certifier wsgi databases (schema 0.46) and real certificates for unit tests.

The DDL follows the wsgi handler of acme2certifier 0.46.3: table and column names, column
order, defaults and NOT NULL constraints. test_operations.py compares the column lists
with a database created by acme2certifier itself when it is installed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

STATUS_NAMES = ("invalid", "pending", "ready", "processing", "valid", "expired", "deactivated", "revoked")
STATUS = {name: number for number, name in enumerate(STATUS_NAMES, start=1)}

_ID = "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT"
_CREATED = "created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"

SCHEMA_046 = {
    "status": f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE",
    "nonce": f"{_ID}, nonce VARCHAR(30) NOT NULL UNIQUE, {_CREATED}",
    "account": (
        f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, alg VARCHAR(10) NOT NULL, jwk TEXT NOT NULL UNIQUE, "
        "contact TEXT NOT NULL, eab_kid VARCHAR(255) DEFAULT '', "
        f"status_id INTEGER NOT NULL DEFAULT 5 REFERENCES status (id), {_CREATED}"
    ),
    "cliaccount": (
        f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, jwk TEXT NOT NULL UNIQUE, contact TEXT NOT NULL, "
        f"cliadmin INT, reportadmin INT, certificateadmin INT, {_CREATED}"
    ),
    "orders": (
        f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, notbefore INTEGER DEFAULT 0, notafter INTEGER DEFAULT 0, "
        "identifiers TEXT NOT NULL, account_id INTEGER NOT NULL REFERENCES account (id), "
        "profile VARCHAR(64), cahandler VARCHAR(64) DEFAULT '', "
        f"status_id INTEGER NOT NULL DEFAULT 2 REFERENCES status (id), expires INTEGER NOT NULL, {_CREATED}"
    ),
    "authorization": (
        f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, order_id INTEGER NOT NULL, type VARCHAR(5) NOT NULL, "
        "value TEXT NOT NULL, expires INTEGER, token VARCHAR(64), "
        f"status_id INTEGER NOT NULL DEFAULT 2 REFERENCES status (id), {_CREATED}"
    ),
    "challenge": (
        f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, token VARCHAR(64), "
        "authorization_id INTEGER NOT NULL REFERENCES \"authorization\" (id), expires INTEGER, "
        "type VARCHAR(15) NOT NULL, keyauthorization VARCHAR(128), source VARCHAR(128), "
        "challenge_message_id VARCHAR(255), status_id INTEGER NOT NULL REFERENCES status (id), "
        f"validated INTEGER DEFAULT 0, validation_error TEXT, {_CREATED}"
    ),
    "certificate": (
        f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, cert TEXT, cert_raw TEXT, error TEXT, "
        "order_id INTEGER NOT NULL, csr TEXT NOT NULL, poll_identifier TEXT, header_info TEXT, "
        f"{_CREATED}, renewal_info TEXT, aki TEXT, serial TEXT, issue_uts INTEGER DEFAULT 0, "
        "expire_uts INTEGER DEFAULT 0, replaced BOOLEAN DEFAULT 0"
    ),
    "housekeeping": (
        f"{_ID}, name VARCHAR(30) NOT NULL UNIQUE, value TEXT, "
        "modified_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"
    ),
    "cahandler": f"{_ID}, name VARCHAR(15) NOT NULL UNIQUE, value1 TEXT, value2 TEXT, {_CREATED}",
}


def db_time(uts: int) -> str:
    """Format epoch seconds as SQLite's CURRENT_TIMESTAMP text (UTC)."""
    return datetime.datetime.fromtimestamp(uts, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def database_snapshot(database: Path) -> Dict[str, list]:
    """Return all rows of all tables, to prove that a run changed nothing."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {name: connection.execute(f'SELECT * FROM "{name}"').fetchall() for name in names}
    finally:
        connection.close()


class AcmeDb:
    """An acme2certifier wsgi database file with helpers that insert one row each."""

    def __init__(self, path: Path, dbversion: Optional[str] = "0.46", orders_expires_nullable: bool = False,
                 statuses: tuple = STATUS_NAMES) -> None:
        self.path = Path(path)
        self._counter = 0
        connection = sqlite3.connect(self.path)
        try:
            for table, columns in SCHEMA_046.items():
                if table == "orders" and orders_expires_nullable:
                    columns = columns.replace("expires INTEGER NOT NULL", "expires INTEGER")
                connection.execute(f'CREATE TABLE "{table}" ({columns})')
            connection.executemany("INSERT INTO status (name) VALUES (?)", [(name,) for name in statuses])
            if dbversion is not None:
                connection.execute("INSERT INTO housekeeping (name, value) VALUES ('dbversion', ?)", (dbversion,))
            connection.commit()
        finally:
            connection.close()

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter:06d}"

    def execute(self, sql: str, params: tuple = ()) -> int:
        connection = sqlite3.connect(self.path)
        try:
            cursor = connection.execute(sql, params)
            connection.commit()
            return cursor.lastrowid
        finally:
            connection.close()

    def query(self, sql: str, params: tuple = ()) -> List[tuple]:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def row(self, table: str, row_id: int) -> Dict[str, Any]:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            found = connection.execute(f'SELECT * FROM "{table}" WHERE id = ?', (row_id,)).fetchone()
            return dict(found) if found is not None else {}
        finally:
            connection.close()

    def _insert(self, table: str, values: Dict[str, Any]) -> int:
        columns = ", ".join(values)
        marks = ", ".join("?" * len(values))
        return self.execute(f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', tuple(values.values()))

    def add_account(self, contact: str = '["mailto:admin@example.com"]', **extra: Any) -> int:
        name = extra.pop("name", self._name("acct"))
        values = {"name": name, "alg": "ES256", "jwk": f'{{"kid": "{name}"}}', "contact": contact}
        values.update(extra)
        return self._insert("account", values)

    def add_order(self, account_id: int, expires: Any, status: Any = "pending", **extra: Any) -> int:
        values = {
            "name": extra.pop("name", self._name("ordr")),
            "account_id": account_id,
            "identifiers": '[{"type": "dns", "value": "host.example.com"}]',
            "status_id": STATUS[status] if isinstance(status, str) else status,
            "expires": expires,
        }
        values.update(extra)
        return self._insert("orders", values)

    def add_authorization(self, order_id: int, expires: Any, status: Any = "pending", **extra: Any) -> int:
        values = {
            "name": extra.pop("name", self._name("athz")),
            "order_id": order_id,
            "type": "dns",
            "value": "host.example.com",
            "expires": expires,
            "token": "token-" + str(self._counter),
            "status_id": STATUS[status] if isinstance(status, str) else status,
        }
        values.update(extra)
        return self._insert("authorization", values)

    def add_challenge(self, authorization_id: int, status: Any = "pending", **extra: Any) -> int:
        values = {
            "name": extra.pop("name", self._name("chal")),
            "authorization_id": authorization_id,
            "type": "http-01",
            "token": "ctoken-" + str(self._counter),
            "expires": 0,
            "status_id": STATUS[status] if isinstance(status, str) else status,
        }
        values.update(extra)
        return self._insert("challenge", values)

    def add_certificate(self, order_id: int, **values: Any) -> int:
        row = {"name": values.pop("name", self._name("cert")), "order_id": order_id, "csr": "MIIBcsr"}
        row.update(values)
        return self._insert("certificate", row)

    def add_nonce(self, created_at: Any) -> int:
        return self._insert("nonce", {"nonce": self._name("nonce"), "created_at": created_at})

    def account_with_order(self, order_expires: int = 4102444800) -> int:
        """Insert an account with one order and return the order id, to attach certificates to."""
        return self.add_order(self.add_account(), order_expires)


@dataclass
class CertificatePair:
    """A leaf certificate as acme2certifier stores it, with the facts tests check against."""

    cert_raw: str
    chain_pem: str
    leaf_pem: str
    not_before: int
    not_after: int
    serial_number: int
    aki_hex: str


class CertificateFactory:
    """Issue real leaf certificates from one test CA, with dates chosen by the test."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509 = x509
        self._hashes = hashes
        self._ec = ec
        self._name_oid = NameOID
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acmeops test CA")])
        start = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(start)
            .not_valid_after(start.replace(year=2099))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )

    def issue(self, not_before: int, not_after: int, serial_number: int = 0xABC123) -> CertificatePair:
        from cryptography.hazmat.primitives.serialization import Encoding

        x509 = self._x509
        utc = datetime.timezone.utc
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(self._name_oid.COMMON_NAME, "host.example.com")]))
            .issuer_name(self.ca_cert.subject)
            .public_key(self.leaf_key.public_key())
            .serial_number(serial_number)
            .not_valid_before(datetime.datetime.fromtimestamp(not_before, tz=utc))
            .not_valid_after(datetime.datetime.fromtimestamp(not_after, tz=utc))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
            .sign(self.ca_key, self._hashes.SHA256())
        )
        leaf_pem = leaf.public_bytes(Encoding.PEM).decode("ascii")
        ca_pem = self.ca_cert.public_bytes(Encoding.PEM).decode("ascii")
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        return CertificatePair(
            cert_raw=base64.b64encode(leaf.public_bytes(Encoding.DER)).decode("ascii"),
            chain_pem=leaf_pem + ca_pem,
            leaf_pem=leaf_pem,
            not_before=not_before,
            not_after=not_after,
            serial_number=serial_number,
            aki_hex=aki.hex(),
        )

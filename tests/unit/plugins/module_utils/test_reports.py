# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Account and certificate reports compared byte for byte with acme2certifier 0.46.3.

acme2certifier runs in this process on a copy of the same database. The comparison allows
only the documented differences. Rows are sorted by id, and the certificate report's
order.status.name column contains the status name, not the id. Accounts, orders and
authorizations without children are listed with empty child fields. An empty report is a
header-only CSV or "[]", where acme2certifier writes no file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import engine
from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import AcmeDb, CertificateFactory

NOW = 1796342400
DAY = 86400
CERT_STATUS_COLUMN = "order.status.name"


# acme2certifier ---------------------------------------------------------------------------


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    """Return a function that writes a report with acme2certifier and returns its bytes or None."""
    module = pytest.importorskip(
        "acme2certifier.acme_srv.housekeeping",
        reason="acme2certifier 0.46.3 is not installed, so there is nothing to compare with",
    )
    out = tmp_path / "upstream-out"
    out.mkdir()
    counter = iter(range(1000))

    def run(database: Path, report: str, report_format: str, nested: bool = False) -> Optional[bytes]:
        number = next(counter)
        config = out / f"acme_srv-{number}.cfg"
        config.write_text(f"[DBhandler]\ndbfile: {database}\n", encoding="utf-8")
        monkeypatch.setenv("ACME_SRV_CONFIGFILE", str(config))
        logger = logging.getLogger("acme2certifier-under-test")
        logger.setLevel(logging.CRITICAL + 1)
        name = out / f"report-{number}"
        with module.Housekeeping(False, logger) as housekeeping:
            if report == "accounts":
                housekeeping.accountreport_get(report_format=report_format, report_name=str(name), nested=nested)
            else:
                housekeeping.certreport_get(report_format=report_format, report_name=str(name))
        written = Path(f"{name}.{report_format}")
        return written.read_bytes() if written.exists() else None

    return run


def _ours(database: Path, tmp_path: Path, report: str, report_format: str, nested: bool = False) -> bytes:
    dest = tmp_path / f"ours-{report}-{report_format}-{nested}.{report_format}"
    engine.run_report(engine.Settings(database=str(database)), report, report_format, nested, str(dest),
                      check_mode=False)
    return dest.read_bytes()


# CSV and JSON helpers ---------------------------------------------------------------------


def _csv_fields(line: bytes) -> List[bytes]:
    """Split one CSV line into its raw fields, quotes kept, so quoting can be compared too."""
    fields, current, quoted = [], bytearray(), False
    for byte in line:
        if byte == ord('"'):
            quoted = not quoted
        if byte == ord(",") and not quoted:
            fields.append(bytes(current))
            current = bytearray()
        else:
            current.append(byte)
    fields.append(bytes(current))
    return fields


def _csv_lines(data: bytes) -> List[bytes]:
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def _status_names(database: Path) -> Dict[int, str]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return dict(connection.execute("SELECT id, name FROM status").fetchall())
    finally:
        connection.close()


def _with_status_names_csv(data: bytes, names: Dict[int, str]) -> List[bytes]:
    """Replace the status id that acme2certifier writes in order.status.name by the quoted name."""
    lines = _csv_lines(data)
    column = _csv_fields(lines[0]).index(b'"' + CERT_STATUS_COLUMN.encode() + b'"')
    result = [lines[0]]
    for line in lines[1:]:
        fields = _csv_fields(line)
        fields[column] = b'"' + names[int(fields[column])].encode() + b'"'
        result.append(b",".join(fields))
    return result


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=4, default=str).encode("utf-8")


def _key(row: Dict[str, Any], *names: str) -> tuple:
    return tuple(-1 if row.get(name) is None else row[name] for name in names)


def _sorted_nested(accounts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    for account in accounts:
        account["orders"].sort(key=lambda order: order["order.id"])
        for order in account["orders"]:
            order["authorizations"].sort(key=lambda authz: authz["authorization.id"])
            for authz in order["authorizations"]:
                authz["challenges"].sort(key=lambda challenge: challenge["challenge.id"])
    return sorted(accounts, key=lambda account: account["account.id"])


ACCOUNT_ORDER = ("account.id", "order.id", "authorization.id", "challenge.id")


# Databases --------------------------------------------------------------------------------


@pytest.fixture
def example_copy(example_db) -> Path:
    return example_db


@pytest.fixture
def tricky_db(tmp_path) -> AcmeDb:
    """Unicode, quotes, commas, CR and LF in values, NULLs, and parents without children."""
    pytest.importorskip("cryptography", reason="cryptography generates the test certificates")
    certs = CertificateFactory()
    db = AcmeDb(tmp_path / "tricky.db")
    unicode_account = db.add_account(contact='["mailto:jörg@exämple.de", "tel:+49 (0) 1,2"]',
                                     jwk='{"kty": "EC", "note": "say \\"hi\\", twice"}', eab_kid=None,
                                     created_at="2026-11-01 10:00:00")
    quote = db.add_account(contact='["mailto:o\'neil@example.com"]', eab_kid='kid "1", b',
                           created_at="2026-11-02 10:00:00.123456")
    db.add_account(contact='["mailto:lonely@example.com"]', created_at="2026-11-03 10:00:00")

    first = db.add_order(unicode_account, NOW - DAY, "valid", notbefore="", notafter="",
                         identifiers='[{"type": "dns",\r\n "value": "bücher.example"},\n{"type": "dns"}]',
                         created_at="2026-11-01 10:01:00")
    second = db.add_order(quote, NOW + DAY, "pending", notbefore=0, notafter=0, created_at="2026-11-02 10:01:00")
    db.add_order(quote, 0, "ready", created_at="2026-11-02 10:02:00")

    authz_a = db.add_authorization(first, NOW - DAY, "valid", value="bücher.example", token=None,
                                   created_at="2026-11-01 10:01:01")
    authz_b = db.add_authorization(first, None, "pending", value="a,b.example", token='to"ken',
                                   created_at="2026-11-01 10:01:02")
    authz_c = db.add_authorization(second, 0, "invalid", value="c.example", created_at="2026-11-02 10:01:01")
    db.add_authorization(second, NOW, "pending", value="lonely-authz.example", created_at="2026-11-02 10:01:02")

    db.add_challenge(authz_a, "valid", keyauthorization='line1\r\nline2\n"q"', expires=NOW - DAY,
                     created_at="2026-11-01 10:01:03")
    db.add_challenge(authz_a, "pending", type="dns-01", token=None, keyauthorization=None, expires=None,
                     created_at="2026-11-01 10:01:04")
    db.add_challenge(authz_b, "invalid", keyauthorization="cr\ronly", expires=0, created_at="2026-11-01 10:01:05")
    db.add_challenge(authz_c, 42, created_at="2026-11-02 10:01:03")

    pair = certs.issue(NOW - 60 * DAY, NOW + 30 * DAY, serial_number=0xABC12)
    other = certs.issue(NOW - 400 * DAY, NOW - 35 * DAY, serial_number=2 ** 70 + 5)
    db.add_certificate(first, cert=pair.chain_pem, cert_raw=pair.cert_raw, csr="MIIB\r\nCSR,\"x\"",
                       poll_identifier=None, issue_uts=pair.not_before, expire_uts=pair.not_after,
                       created_at="2026-11-01 10:02:00")
    db.add_certificate(second, cert=other.chain_pem, cert_raw=other.cert_raw, csr="MIIBcsr",
                       poll_identifier="pöll", issue_uts=0, expire_uts=0, created_at="2026-11-02 10:02:00")
    db.add_certificate(second, cert=None, cert_raw=None, csr="MIIBcsr-only", created_at="2026-11-02 10:03:00")
    db.add_certificate(first, cert="removed by certificates.cleanup() on 2026-01-01T00:00:00Z",
                       cert_raw="not base64", csr="MIIB", issue_uts=0, expire_uts=0, created_at="2026-11-01 10:04:00")
    return db


def _complete_chain(row: Dict[str, Any]) -> bool:
    """Tell whether acme2certifier's inner joins would list this row, given known status ids."""
    return all(row.get(key) is not None for key in ACCOUNT_ORDER) and row.get("challenge.status.name") is not None


# Account report ---------------------------------------------------------------------------


def test_accounts_csv_example(example_copy, tmp_path, upstream):
    theirs = upstream(example_copy, "accounts", "csv")
    ours = _ours(example_copy, tmp_path, "accounts", "csv")
    assert _csv_lines(ours)[0] == _csv_lines(theirs)[0]
    assert sorted(_csv_lines(ours)[1:]) == sorted(_csv_lines(theirs)[1:])
    assert len(_csv_lines(ours)) == 36


def test_accounts_json_example(example_copy, tmp_path, upstream):
    theirs = json.loads(upstream(example_copy, "accounts", "json"))
    ours = _ours(example_copy, tmp_path, "accounts", "json")
    assert ours == _dump(sorted(theirs, key=lambda row: _key(row, *ACCOUNT_ORDER)))


def test_accounts_nested_example(example_copy, tmp_path, upstream):
    theirs = json.loads(upstream(example_copy, "accounts", "json", nested=True))
    ours = _ours(example_copy, tmp_path, "accounts", "json", nested=True)
    assert ours == _dump(_sorted_nested(theirs))


def test_accounts_sorted_by_id(example_copy, tmp_path):
    rows = json.loads(_ours(example_copy, tmp_path, "accounts", "json"))
    keys = [_key(row, *ACCOUNT_ORDER) for row in rows]
    assert keys == sorted(keys)


def test_accounts_csv_tricky(tricky_db, tmp_path, upstream):
    theirs = _csv_lines(upstream(tricky_db.path, "accounts", "csv"))
    ours = _csv_lines(_ours(tricky_db.path, tmp_path, "accounts", "csv"))
    flat = json.loads(_ours(tricky_db.path, tmp_path, "accounts", "json"))
    complete = [line for line, row in zip(ours[1:], flat) if _complete_chain(row)]
    assert ours[0] == theirs[0]
    assert sorted(complete) == sorted(theirs[1:])
    assert len(theirs) == 4
    assert all(b"\r" not in line and b"\n" not in line for line in ours)


def test_accounts_json_tricky(tricky_db, tmp_path, upstream):
    theirs = json.loads(upstream(tricky_db.path, "accounts", "json"))
    ours = json.loads(_ours(tricky_db.path, tmp_path, "accounts", "json"))
    complete = [row for row in ours if _complete_chain(row)]
    assert _dump(complete) == _dump(sorted(theirs, key=lambda row: _key(row, *ACCOUNT_ORDER)))


def test_accounts_nested_tricky(tricky_db, tmp_path, upstream):
    theirs = _sorted_nested(json.loads(upstream(tricky_db.path, "accounts", "json", nested=True)))
    ours = json.loads(_ours(tricky_db.path, tmp_path, "accounts", "json", nested=True))

    # Drop what acme2certifier's inner joins leave out, then the rest must match exactly.
    trimmed = []
    for account in ours:
        for order in account["orders"]:
            for authz in order["authorizations"]:
                authz["challenges"] = [c for c in authz["challenges"] if c["challenge.status.name"] is not None]
            order["authorizations"] = [a for a in order["authorizations"] if a["challenges"]]
        account["orders"] = [o for o in account["orders"] if o["authorizations"]]
        if account["orders"]:
            trimmed.append(account)
    assert _dump(trimmed) == _dump(theirs)


def test_accounts_without_children_listed(tricky_db, tmp_path):
    rows = json.loads(_ours(tricky_db.path, tmp_path, "accounts", "json"))
    lonely = [row for row in rows if row["account.contact"] == '["mailto:lonely@example.com"]']
    assert len(lonely) == 1
    assert all(lonely[0][key] is None for key in lonely[0] if key.split(".")[0] in ("order", "authorization", "challenge"))
    assert any(row["authorization.value"] == "lonely-authz.example" and row["challenge.id"] is None for row in rows)
    assert any(row["order.status.name"] == "ready" and row["authorization.id"] is None for row in rows)


def test_accounts_nested_without_orders(tricky_db, tmp_path):
    accounts = json.loads(_ours(tricky_db.path, tmp_path, "accounts", "json", nested=True))
    lonely = [a for a in accounts if a["account.contact"] == '["mailto:lonely@example.com"]']
    assert lonely[0]["orders"] == []


def test_accounts_unicode_literal(tricky_db, tmp_path):
    for report_format in ("csv", "json"):
        data = _ours(tricky_db.path, tmp_path, "accounts", report_format)
        assert "jörg@exämple.de".encode("utf-8") in data
        assert b"\\u00f6" not in data


# Certificate report -----------------------------------------------------------------------


def test_certificates_csv_example(example_copy, tmp_path, upstream):
    theirs = _with_status_names_csv(upstream(example_copy, "certificates", "csv"), _status_names(example_copy))
    ours = _csv_lines(_ours(example_copy, tmp_path, "certificates", "csv"))
    assert ours[0] == theirs[0]
    assert sorted(ours[1:]) == sorted(theirs[1:])
    assert len(ours) == 7


def test_certificates_json_example(example_copy, tmp_path, upstream):
    names = _status_names(example_copy)
    theirs = json.loads(upstream(example_copy, "certificates", "json"))
    for row in theirs:
        row[CERT_STATUS_COLUMN] = names[row[CERT_STATUS_COLUMN]]
    ours = _ours(example_copy, tmp_path, "certificates", "json")
    assert ours == _dump(sorted(theirs, key=lambda row: row["certificate.id"]))


def test_certificates_csv_tricky(tricky_db, tmp_path, upstream):
    theirs = _with_status_names_csv(upstream(tricky_db.path, "certificates", "csv"), _status_names(tricky_db.path))
    ours = _csv_lines(_ours(tricky_db.path, tmp_path, "certificates", "csv"))
    assert ours[0] == theirs[0]
    assert sorted(ours[1:]) == sorted(theirs[1:])
    assert len(ours) == 4


def test_certificates_json_tricky(tricky_db, tmp_path, upstream):
    names = _status_names(tricky_db.path)
    theirs = json.loads(upstream(tricky_db.path, "certificates", "json"))
    for row in theirs:
        row[CERT_STATUS_COLUMN] = names[row[CERT_STATUS_COLUMN]]
    ours = _ours(tricky_db.path, tmp_path, "certificates", "json")
    assert ours == _dump(sorted(theirs, key=lambda row: row["certificate.id"]))


def test_certificates_status_name(tricky_db, tmp_path):
    rows = json.loads(_ours(tricky_db.path, tmp_path, "certificates", "json"))
    assert [row[CERT_STATUS_COLUMN] for row in rows] == ["valid", "pending", "valid"]


def test_certificates_dates_from_cert_raw(tricky_db, tmp_path):
    rows = json.loads(_ours(tricky_db.path, tmp_path, "certificates", "json"))
    second = rows[1]
    assert second["certificate.issue_uts"] == NOW - 400 * DAY
    assert second["certificate.expire_uts"] == NOW - 35 * DAY
    assert second["certificate.expire_date"] == "2026-10-30 00:00:00"
    assert second["certificate.serial"] == 2 ** 70 + 5
    assert rows[2]["certificate.serial"] == ""
    assert rows[2]["certificate.issue_date"] == ""


def test_certificates_null_issue_uts(tricky_db, tmp_path, upstream):
    # acme2certifier 0.46.3 raises TypeError for the whole report. The engine keeps the row,
    # reads the dates from cert_raw and lists the value in skipped.
    tricky_db.execute("UPDATE certificate SET issue_uts = NULL WHERE id = 1")
    with pytest.raises(TypeError):
        upstream(tricky_db.path, "certificates", "json")
    dest = tmp_path / "null.json"
    result = engine.run_report(engine.Settings(database=str(tricky_db.path)), "certificates", "json", False,
                               str(dest), check_mode=False)
    rows = json.loads(dest.read_text(encoding="utf-8"))
    assert result["rows"] == 3
    assert rows[0]["certificate.issue_uts"] == NOW - 60 * DAY
    assert [item["id"] for item in result["skipped_rows"]] == [1]


def test_accounts_expires_not_unix_time(tricky_db, tmp_path, upstream):
    # acme2certifier 0.46.3 fails the whole report with ValueError. The engine reports the
    # value as stored and lists it in skipped.
    tricky_db.execute("UPDATE orders SET expires = 'soon' WHERE id = 1")
    with pytest.raises(ValueError):
        upstream(tricky_db.path, "accounts", "json")
    dest = tmp_path / "accounts.json"
    result = engine.run_report(engine.Settings(database=str(tricky_db.path)), "accounts", "json", False,
                               str(dest), check_mode=False)
    rows = json.loads(dest.read_text(encoding="utf-8"))
    assert {row["order.expires"] for row in rows if row["order.id"] == 1} == {"soon"}
    assert {(item["table"], item["id"]) for item in result["skipped_rows"]} == {("order", 1)}


# Empty database ---------------------------------------------------------------------------


@pytest.mark.parametrize("report", ["accounts", "certificates"])
def test_empty_csv_header_only(tmp_path, upstream, report):
    empty = AcmeDb(tmp_path / "empty.db")
    full = AcmeDb(tmp_path / "full.db")
    order = full.account_with_order()
    authz = full.add_authorization(order, NOW, "pending")
    full.add_challenge(authz, "pending")
    full.add_certificate(order, cert_raw="x", csr="y")

    assert upstream(empty.path, report, "csv") is None
    header = _csv_lines(upstream(full.path, report, "csv"))[0]
    assert _ours(empty.path, tmp_path, report, "csv") == header + b"\r\n"


@pytest.mark.parametrize("report, nested", [("accounts", False), ("accounts", True), ("certificates", False)])
def test_empty_json_array(tmp_path, upstream, report, nested):
    empty = AcmeDb(tmp_path / "empty.db")
    assert upstream(empty.path, report, "json", nested) is None
    assert _ours(empty.path, tmp_path, report, "json", nested) == b"[]"


# File handling ----------------------------------------------------------------------------


def _report(database: Path, dest: Path, check_mode: bool = False, report: str = "accounts",
            report_format: str = "csv") -> Dict[str, Any]:
    return engine.run_report(engine.Settings(database=str(database)), report, report_format, False, str(dest),
                             check_mode=check_mode)


def test_report_idempotent(example_copy, tmp_path):
    dest = tmp_path / "out" / "accounts.csv"
    dest.parent.mkdir()
    first = _report(example_copy, dest)
    mtime = dest.stat().st_mtime_ns
    second = _report(example_copy, dest)
    assert first["changed"] is True
    assert second["changed"] is False
    assert second["checksum"] == first["checksum"]
    assert dest.stat().st_mtime_ns == mtime


def test_report_check_mode_new(example_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = _report(example_copy, out / "accounts.csv", check_mode=True)
    assert result["changed"] is True
    assert os.listdir(out) == []


def test_report_check_mode_existing(example_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "accounts.csv"
    dest.write_bytes(b"old content")
    result = _report(example_copy, dest, check_mode=True)
    assert result["changed"] is True
    assert dest.read_bytes() == b"old content"
    assert os.listdir(out) == ["accounts.csv"]


def test_report_check_mode_unchanged(example_copy, tmp_path):
    dest = tmp_path / "accounts.csv"
    real = _report(example_copy, dest)
    check = _report(example_copy, dest, check_mode=True)
    assert check["changed"] is False
    assert check["checksum"] == real["checksum"]


def test_report_new_file_mode(example_copy, tmp_path):
    dest = tmp_path / "accounts.csv"
    old_umask = os.umask(0o022)
    try:
        _report(example_copy, dest)
    finally:
        os.umask(old_umask)
    assert dest.stat().st_mode & 0o777 == 0o600


def test_report_keeps_existing_mode(example_copy, tmp_path):
    dest = tmp_path / "accounts.csv"
    dest.write_bytes(b"old content")
    dest.chmod(0o640)
    _report(example_copy, dest)
    assert dest.read_bytes() != b"old content"
    assert dest.stat().st_mode & 0o777 == 0o640


def test_report_no_temp_file(example_copy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "certificates.json"
    _report(example_copy, dest, report="certificates", report_format="json")
    _report(example_copy, dest, report="certificates", report_format="json")
    assert os.listdir(out) == ["certificates.json"]


def test_report_replaces_content(example_copy, tmp_path):
    dest = tmp_path / "accounts.csv"
    dest.write_bytes(b"stale")
    result = _report(example_copy, dest)
    assert result["changed"] is True
    assert dest.read_bytes().startswith(b'"account.id","account.name"')
    assert result["size"] == dest.stat().st_size


def test_report_return_content(example_copy, tmp_path):
    dest = tmp_path / "accounts.json"
    result = engine.run_report(engine.Settings(database=str(example_copy)), "accounts", "json", True, str(dest),
                               check_mode=False, return_content=True)
    assert result["content"].encode("utf-8") == dest.read_bytes()
    assert result["rows"] == 35


def test_report_database_unchanged(example_copy, tmp_path):
    before = example_copy.read_bytes()
    _report(example_copy, tmp_path / "a.csv")
    _report(example_copy, tmp_path / "c.json", report="certificates", report_format="json")
    assert example_copy.read_bytes() == before

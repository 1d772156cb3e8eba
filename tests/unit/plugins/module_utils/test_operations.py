# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Selection rules of every housekeeping operation on small wsgi databases (schema 0.46).

Expectations come from the rules of acme2certifier 0.46.3, written out beside each case. The
tests at the end also run acme2certifier 0.46.3 itself on a copy of the same database and
compare the tables, when it is installed.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import engine
from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.errors import SchemaError
from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import (
    AcmeDb,
    CertificateFactory,
    database_snapshot,
    db_time,
    sha256_file,
)

NOW = 1796342400  # 2026-12-04T00:00:00Z
DAY = 86400
INVALID, PENDING, READY, PROCESSING, VALID, EXPIRED, DEACTIVATED, REVOKED = range(1, 9)
UNKNOWN_STATUS = 42


def _marker(cutoff: int) -> str:
    stamp = datetime.datetime.fromtimestamp(cutoff, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"removed by certificates.cleanup() on {stamp}"


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    pytest.importorskip("cryptography", reason="cryptography generates the test certificates")
    return CertificateFactory()


@pytest.fixture
def db(tmp_path: Path) -> AcmeDb:
    return AcmeDb(tmp_path / "acme_srv.db")


def _settings(db: AcmeDb, **options: Any) -> engine.Settings:
    options.setdefault("now", NOW)
    return engine.Settings(database=str(db.path), **options)


def _invalidate(db: AcmeDb, targets=("orders", "authorizations"), **options: Any) -> Callable[[bool], Dict]:
    return lambda check: engine.run_invalidate(_settings(db, **options), list(targets), check_mode=check)


def _cleanup(db: AcmeDb, targets=("certificates",), purge: bool = False, nonce_validity=None,
             **options: Any) -> Callable[[bool], Dict]:
    return lambda check: engine.run_cleanup(
        _settings(db, **options), list(targets), check_mode=check, purge=purge, nonce_validity=nonce_validity
    )


def _side_files(path: Path) -> list:
    return [name for name in os.listdir(path.parent) if name.startswith(path.name + "-")]


def _check_real_again(db: AcmeDb, action: Callable[[bool], Dict]):
    """Run action in check mode, for real and for real again, and prove that check mode wrote nothing."""
    snapshot, digest = database_snapshot(db.path), sha256_file(db.path)
    check = action(True)
    assert database_snapshot(db.path) == snapshot
    assert sha256_file(db.path) == digest
    assert _side_files(db.path) == []
    real = action(False)
    again = action(False)
    return check, real, again


def _ids(db: AcmeDb, sql: str) -> set:
    return {row[0] for row in db.query(sql)}


# Schema fixture ---------------------------------------------------------------------------


def test_fixture_schema_matches_upstream(tmp_path, monkeypatch):
    wsgi = pytest.importorskip("acme2certifier.dbhandlers.wsgi_handler", reason="acme2certifier 0.46.3 is not installed")
    upstream = tmp_path / "upstream.db"
    monkeypatch.setenv("ACME_SRV_CONFIGFILE", str(tmp_path / "missing.cfg"))
    wsgi.DBstore(False, logging.getLogger("upstream"), str(upstream))
    ours = AcmeDb(tmp_path / "ours.db")

    def columns(path: Path) -> Dict[str, list]:
        connection = sqlite3.connect(path)
        try:
            tables = [row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            return {table: [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')] for table in tables}
        finally:
            connection.close()

    assert columns(ours.path) == columns(upstream)
    upstream_connection = sqlite3.connect(upstream)
    try:
        upstream_statuses = upstream_connection.execute("SELECT id, name FROM status ORDER BY id").fetchall()
    finally:
        upstream_connection.close()
    assert ours.query("SELECT id, name FROM status ORDER BY id") == upstream_statuses


# Orders -----------------------------------------------------------------------------------

# (label, status id, expires, selected by "status_id > 1 AND expires <= cutoff")
ORDER_CASES = [
    ("pending past", PENDING, NOW - 100, True),
    ("pending at cutoff", PENDING, NOW, True),
    ("pending future", PENDING, NOW + 1, False),
    ("ready past", READY, NOW - 100, True),
    ("processing past", PROCESSING, NOW - 100, True),
    ("valid past", VALID, NOW - 100, True),
    ("valid future", VALID, NOW + DAY, False),
    ("expired past", EXPIRED, NOW - 100, True),
    ("deactivated past", DEACTIVATED, NOW - 100, True),
    ("revoked past", REVOKED, NOW - 100, True),
    ("invalid past", INVALID, NOW - 100, False),
    ("pending expires 0", PENDING, 0, True),
    ("valid expires 0", VALID, 0, True),
    ("invalid expires 0", INVALID, 0, False),
    ("unknown status past", UNKNOWN_STATUS, NOW - 100, True),
    ("unknown status future", UNKNOWN_STATUS, NOW + 100, False),
    ("pending expires empty text", PENDING, "", False),
    ("pending expires word", PENDING, "soon", False),
]


def _add_order_cases(db: AcmeDb) -> Dict[str, int]:
    account = db.add_account()
    return {label: db.add_order(account, expires, status) for label, status, expires, _selected in ORDER_CASES}


def test_orders_selection(db):
    ids = _add_order_cases(db)
    expected = {ids[label] for label, _status, _expires, selected in ORDER_CASES if selected}
    before = {row_id: db.row("orders", row_id) for row_id in ids.values()}

    check, real, again = _check_real_again(db, _invalidate(db, ["orders"]))

    assert check["orders"]["count"] == len(expected)
    assert real["orders"]["count"] == check["orders"]["count"]
    assert real["changed"] is True
    assert again["changed"] is False
    assert again["orders"]["count"] == 0
    assert _ids(db, f"SELECT id FROM orders WHERE status_id = {INVALID}") == expected | {
        ids["invalid past"], ids["invalid expires 0"]}
    for row_id, row in before.items():
        after = db.row("orders", row_id)
        if row_id in expected:
            row["status_id"] = INVALID
        assert after == row, f"order {row_id}"


def test_orders_names_listed(db):
    ids = _add_order_cases(db)
    result = engine.run_invalidate(_settings(db), ["orders"], check_mode=True)
    expected = [db.row("orders", ids[label])["name"] for label, _status, _expires, selected in ORDER_CASES if selected]
    assert result["orders"]["names"] == expected
    assert result["orders"]["names_truncated"] is False


def test_orders_text_expires_skipped(db):
    ids = _add_order_cases(db)
    result = engine.run_invalidate(_settings(db), ["orders"], check_mode=True)
    skipped = {item["id"] for item in result["orders"]["skipped"]}
    text_ids = {ids["pending expires empty text"], ids["pending expires word"]}
    assert skipped == text_ids
    assert all(item["table"] == "orders" for item in result["skipped_rows"])
    assert all("expires" in item["reason"] for item in result["skipped_rows"])


def test_orders_null_expires_never(tmp_path):
    # Schema 0.46 declares orders.expires NOT NULL, but older or hand-edited tables may not.
    db = AcmeDb(tmp_path / "nullable.db", orders_expires_nullable=True)
    account = db.add_account()
    null_order = db.add_order(account, None, "pending")
    past_order = db.add_order(account, NOW - 1, "pending")

    check, real, again = _check_real_again(db, _invalidate(db, ["orders"]))

    assert check["orders"]["count"] == 1
    assert real["orders"]["count"] == 1
    assert db.row("orders", null_order)["status_id"] == PENDING
    assert db.row("orders", past_order)["status_id"] == INVALID
    assert again["changed"] is False


def test_orders_small_batches(db):
    account = db.add_account()
    for index in range(7):
        db.add_order(account, NOW - index, "pending")
        db.add_order(account, NOW + 1 + index, "pending")

    check, real, again = _check_real_again(db, _invalidate(db, ["orders"], batch_size=2))

    assert check["orders"]["count"] == 7
    assert real["orders"]["count"] == 7
    assert again["orders"]["count"] == 0


def test_orders_without_invalid_status(tmp_path):
    # Status ids 1 and 2 are pending and valid here, so no row is named invalid.
    db = AcmeDb(tmp_path / "nostatus.db", statuses=("pending", "valid"))
    db.add_order(db.add_account(), NOW - 1, 2)
    snapshot = database_snapshot(db.path)
    with pytest.raises(SchemaError) as caught:
        engine.run_invalidate(_settings(db), ["orders"], check_mode=False)
    assert "'invalid'" in caught.value.msg
    assert database_snapshot(db.path) == snapshot


# Authorizations ---------------------------------------------------------------------------

# (label, status id, expires, selected by "status is not expired AND 0 != expires <= cutoff")
AUTHZ_CASES = [
    ("pending past", PENDING, NOW - 100, True),
    ("pending at cutoff", PENDING, NOW, True),
    ("pending future", PENDING, NOW + 1, False),
    ("valid past", VALID, NOW - 100, True),
    ("invalid past", INVALID, NOW - 100, True),
    ("ready past", READY, NOW - 100, True),
    ("deactivated past", DEACTIVATED, NOW - 100, True),
    ("revoked past", REVOKED, NOW - 100, True),
    ("expired past", EXPIRED, NOW - 100, False),
    ("pending expires 0", PENDING, 0, False),
    ("valid expires 0", VALID, 0, False),
    ("pending expires NULL", PENDING, None, False),
    ("unknown status past", UNKNOWN_STATUS, NOW - 100, False),
    ("pending expires text", PENDING, "", False),
]


def _add_authz_cases(db: AcmeDb) -> Dict[str, int]:
    order = db.add_order(db.add_account(), NOW + DAY, "pending")
    return {label: db.add_authorization(order, expires, status) for label, status, expires, _selected in AUTHZ_CASES}


def test_authorizations_selection(db):
    ids = _add_authz_cases(db)
    expected = {ids[label] for label, _status, _expires, selected in AUTHZ_CASES if selected}
    before = {row_id: db.row("authorization", row_id) for row_id in ids.values()}

    check, real, again = _check_real_again(db, _invalidate(db, ["authorizations"]))

    assert check["authorizations"]["count"] == len(expected)
    assert real["authorizations"]["count"] == check["authorizations"]["count"]
    assert again["changed"] is False
    for row_id, row in before.items():
        if row_id in expected:
            row["status_id"] = EXPIRED
        assert db.row("authorization", row_id) == row, f"authorization {row_id}"


def test_authorizations_invalid_becomes_expired(db):
    ids = _add_authz_cases(db)
    engine.run_invalidate(_settings(db), ["authorizations"], check_mode=False)
    assert db.row("authorization", ids["invalid past"])["status_id"] == EXPIRED


def test_authorizations_text_skipped(db):
    ids = _add_authz_cases(db)
    result = engine.run_invalidate(_settings(db), ["authorizations"], check_mode=True)
    skipped = {item["id"]: item for item in result["authorizations"]["skipped"]}
    # Expired rows with an unknown status id and rows with text in expires are listed. A NULL
    # expires is normal (no client has fetched the authorization yet), so it is not listed.
    assert set(skipped) == {ids["unknown status past"], ids["pending expires text"]}
    assert "has no row in the status table" in skipped[ids["unknown status past"]]["reason"]
    assert "expires is '', not a number of seconds" in skipped[ids["pending expires text"]]["reason"]
    assert {item["table"] for item in skipped.values()} == {"authorization"}


def test_invalidate_both_targets(db):
    _add_order_cases(db)
    _add_authz_cases(db)
    expected_orders = sum(1 for case in ORDER_CASES if case[3])
    expected_authz = sum(1 for case in AUTHZ_CASES if case[3])

    check, real, again = _check_real_again(db, _invalidate(db))

    assert check["orders"]["count"] == expected_orders
    assert check["authorizations"]["count"] == expected_authz
    assert real["orders"]["count"] == expected_orders
    assert real["authorizations"]["count"] == expected_authz
    assert real["diff"] == {
        "before": {"orders": expected_orders, "authorizations": expected_authz},
        "after": {"orders": 0, "authorizations": 0},
    }
    assert again["changed"] is False


def test_invalidate_grace_period(db):
    account = db.add_account()
    recent_order = db.add_order(account, NOW - 5 * DAY, "valid")
    old_order = db.add_order(account, NOW - 11 * DAY, "valid")
    recent_authz = db.add_authorization(recent_order, NOW - 5 * DAY, "valid")
    old_authz = db.add_authorization(old_order, NOW - 11 * DAY, "valid")

    check, real, again = _check_real_again(db, _invalidate(db, grace_period="10d"))

    assert real["cutoff"] == NOW - 10 * DAY
    assert check["orders"]["count"] == 1
    assert check["authorizations"]["count"] == 1
    assert db.row("orders", recent_order)["status_id"] == VALID
    assert db.row("orders", old_order)["status_id"] == INVALID
    assert db.row("authorization", recent_authz)["status_id"] == VALID
    assert db.row("authorization", old_authz)["status_id"] == EXPIRED
    assert again["changed"] is False


def test_invalidate_nothing_to_do(db):
    db.add_order(db.add_account(), NOW + DAY, "pending")
    snapshot, digest = database_snapshot(db.path), sha256_file(db.path)
    result = engine.run_invalidate(_settings(db), ["orders", "authorizations"], check_mode=False)
    assert result["changed"] is False
    assert database_snapshot(db.path) == snapshot
    assert sha256_file(db.path) == digest


# Nonces -----------------------------------------------------------------------------------

THRESHOLD = NOW - 86400  # The cutoff minus the default [Nonce] validity.


def test_nonces_strict_threshold(db):
    older = db.add_nonce(db_time(THRESHOLD - 1))
    at_threshold = db.add_nonce(db_time(THRESHOLD))
    newer = db.add_nonce(db_time(THRESHOLD + 1))

    check, real, again = _check_real_again(db, _cleanup(db, ["nonces"]))

    assert check["nonces"]["count"] == 1
    assert real["nonces"]["count"] == 1
    assert real["nonce_validity"] == 86400
    assert _ids(db, "SELECT id FROM nonce") == {at_threshold, newer}
    assert older not in _ids(db, "SELECT id FROM nonce")
    assert again["changed"] is False


@pytest.mark.parametrize(
    "created_at, deleted",
    [
        (db_time(THRESHOLD - 1) + ".123456", True),
        (db_time(THRESHOLD - 1).replace(" ", "T"), True),
        (db_time(THRESHOLD + 60) + ".5", False),
        (0, True),
        (THRESHOLD - 1000, False),
        ("junk", False),
        ("", False),
    ],
)
def test_nonces_created_at_forms(db, created_at, deleted):
    nonce = db.add_nonce(created_at)
    result = engine.run_cleanup(_settings(db), ["nonces"], check_mode=False)
    assert result["nonces"]["count"] == int(deleted)
    assert (nonce not in _ids(db, "SELECT id FROM nonce")) is deleted


def _nonce_config(tmp_path: Path, validity: str) -> str:
    path = tmp_path / "acme_srv.cfg"
    path.write_text(f"[Nonce]\nvalidity: {validity}\n", encoding="utf-8")
    return str(path)


def test_nonces_validity_from_config(db, tmp_path):
    young_nonce = db.add_nonce(db_time(NOW - 3599))
    old_nonce = db.add_nonce(db_time(NOW - 3601))
    config = _nonce_config(tmp_path, "3600")

    check, real, again = _check_real_again(db, _cleanup(db, ["nonces"], config=config))

    assert check["nonce_validity"] == 3600
    assert real["nonces"]["count"] == 1
    assert _ids(db, "SELECT id FROM nonce") == {young_nonce}
    assert old_nonce not in _ids(db, "SELECT id FROM nonce")
    assert again["changed"] is False


def test_nonces_option_overrides_config(db, tmp_path):
    young_nonce = db.add_nonce(db_time(NOW - 3601))
    old_nonce = db.add_nonce(db_time(NOW - 7201))
    config = _nonce_config(tmp_path, "3600")

    result = engine.run_cleanup(_settings(db, config=config), ["nonces"], check_mode=False, nonce_validity=7200)

    assert result["nonce_validity"] == 7200
    assert result["nonces"]["count"] == 1
    assert _ids(db, "SELECT id FROM nonce") == {young_nonce}
    assert old_nonce not in _ids(db, "SELECT id FROM nonce")


@pytest.mark.parametrize("validity", [0, -1])
def test_nonces_validity_disabled(db, validity):
    db.add_nonce(0)
    db.add_nonce(db_time(NOW - 365 * DAY))
    snapshot = database_snapshot(db.path)

    result = engine.run_cleanup(_settings(db), ["nonces"], check_mode=False, nonce_validity=validity)

    assert result["nonces"]["count"] == 0
    assert result["changed"] is False
    assert len(result["warnings"]) == 1
    assert str(validity) in result["warnings"][0]
    assert database_snapshot(db.path) == snapshot


def test_nonces_config_validity_disabled(db, tmp_path):
    db.add_nonce(0)
    result = engine.run_cleanup(_settings(db, config=_nonce_config(tmp_path, "0")), ["nonces"], check_mode=True)
    assert result["nonces"]["count"] == 0
    assert len(result["warnings"]) == 1


def test_nonces_grace_period(db):
    recent = db.add_nonce(db_time(THRESHOLD - 5 * DAY))
    old = db.add_nonce(db_time(THRESHOLD - 11 * DAY))

    result = engine.run_cleanup(_settings(db, grace_period="10d"), ["nonces"], check_mode=False)

    assert result["nonces"]["count"] == 1
    assert _ids(db, "SELECT id FROM nonce") == {recent}
    assert old not in _ids(db, "SELECT id FROM nonce")


def test_nonces_small_batches(db):
    for index in range(9):
        db.add_nonce(db_time(THRESHOLD - 1 - index))
    db.add_nonce(db_time(NOW))

    check, real, again = _check_real_again(db, _cleanup(db, ["nonces"], batch_size=2))

    assert check["nonces"]["count"] == 9
    assert real["nonces"]["count"] == 9
    assert len(db.query("SELECT id FROM nonce")) == 1
    assert again["changed"] is False


# Certificates -----------------------------------------------------------------------------


@pytest.fixture
def cert_rows(db, certs) -> Dict[str, int]:
    """Insert one certificate row per cleanup rule and return their ids by label."""
    order = db.account_with_order()
    old = certs.issue(NOW - 400 * DAY, NOW - 35 * DAY)
    rows = {}

    # expire_uts set: cleared when expire_uts <= cutoff.
    rows["expired"] = db.add_certificate(order, cert=old.chain_pem, cert_raw=old.cert_raw,
                                         issue_uts=old.not_before, expire_uts=NOW - 100)
    rows["expires at cutoff"] = db.add_certificate(order, cert=old.chain_pem, cert_raw=old.cert_raw,
                                                   issue_uts=old.not_before, expire_uts=NOW)
    rows["expires later"] = db.add_certificate(order, cert=old.chain_pem, cert_raw=old.cert_raw,
                                               issue_uts=old.not_before, expire_uts=NOW + 1)

    # expire_uts 0: the dates come from cert_raw, and the row is cleared when notAfter < cutoff (strict).
    before_cutoff = certs.issue(NOW - 90 * DAY, NOW - 1)
    at_cutoff = certs.issue(NOW - 90 * DAY, NOW)
    after_cutoff = certs.issue(NOW - 90 * DAY, NOW + DAY)
    rows["raw before cutoff"] = db.add_certificate(order, cert=before_cutoff.chain_pem,
                                                   cert_raw=before_cutoff.cert_raw, issue_uts=0, expire_uts=0)
    rows["raw at cutoff"] = db.add_certificate(order, cert=at_cutoff.chain_pem, cert_raw=at_cutoff.cert_raw,
                                               issue_uts=0, expire_uts=0)
    rows["raw after cutoff"] = db.add_certificate(order, cert=after_cutoff.chain_pem,
                                                  cert_raw=after_cutoff.cert_raw, issue_uts=0, expire_uts=0)

    # cert_raw that cannot be parsed: the expiry is unknown, so the row is kept and reported.
    rows["raw garbage"] = db.add_certificate(order, cert=old.chain_pem, cert_raw="not base64 at all!",
                                             issue_uts=0, expire_uts=0)
    rows["raw pem armour"] = db.add_certificate(order, cert=old.chain_pem, cert_raw=old.leaf_pem,
                                                issue_uts=0, expire_uts=0)

    # CSR only: cleared when created_at < cutoff - 14 days (strict).
    rows["csr 15 days"] = db.add_certificate(order, cert=None, cert_raw=None, csr="MIIBcsr",
                                             created_at=db_time(NOW - 15 * DAY))
    rows["csr 14 days"] = db.add_certificate(order, cert=None, cert_raw=None, csr="MIIBcsr",
                                             created_at=db_time(NOW - 14 * DAY))
    rows["csr 13 days"] = db.add_certificate(order, cert=None, cert_raw=None, csr="MIIBcsr",
                                             created_at=db_time(NOW - 13 * DAY))
    rows["csr empty raw"] = db.add_certificate(order, cert="", cert_raw="", csr="MIIBcsr",
                                               created_at=db_time(NOW - 30 * DAY))
    rows["csr bad created_at"] = db.add_certificate(order, cert=None, cert_raw=None, csr="MIIBcsr",
                                                    created_at="last tuesday")

    # Neither certificate nor CSR: always cleared.
    rows["nothing"] = db.add_certificate(order, cert=None, cert_raw=None, csr="", created_at=db_time(NOW))

    # Blanked earlier: skipped unless purge. The check for the marker ignores case.
    rows["blanked"] = db.add_certificate(order, cert=_marker(NOW - 30 * DAY), cert_raw=old.cert_raw,
                                         issue_uts=old.not_before, expire_uts=old.not_after)
    rows["blanked upper"] = db.add_certificate(order, cert="REMOVED BY an operator", cert_raw=None,
                                               issue_uts=0, expire_uts=0)

    # Never selected: NULL or text expire_uts, no order, an order without account.
    rows["expire NULL"] = db.add_certificate(order, cert=old.chain_pem, cert_raw=old.cert_raw, expire_uts=None)
    rows["expire text"] = db.add_certificate(order, cert=old.chain_pem, cert_raw=old.cert_raw, expire_uts="x")
    rows["orphan"] = db.add_certificate(9999, cert=old.chain_pem, cert_raw=old.cert_raw,
                                        issue_uts=old.not_before, expire_uts=NOW - 100)
    lost_account_order = db.add_order(9999, NOW + DAY, "valid")
    rows["order without account"] = db.add_certificate(lost_account_order, cert=None, cert_raw=None, csr="",
                                                       expire_uts=0)
    return rows


CLEARED = {"expired", "expires at cutoff", "raw before cutoff", "csr 15 days", "csr empty raw", "nothing"}
BLANKED_EARLIER = {"blanked", "blanked upper"}


def test_certificates_blank(db, cert_rows):
    before = {label: db.row("certificate", row_id) for label, row_id in cert_rows.items()}

    check, real, again = _check_real_again(db, _cleanup(db))

    assert check["certificates"]["count"] == len(CLEARED)
    assert real["certificates"]["count"] == len(CLEARED)
    assert again["changed"] is False
    assert again["certificates"]["count"] == 0
    for label, row_id in cert_rows.items():
        expected = dict(before[label])
        if label in CLEARED:
            expected["cert"] = _marker(NOW)
        if label == "raw before cutoff":
            expected["issue_uts"] = NOW - 90 * DAY
            expected["expire_uts"] = NOW - 1
        assert db.row("certificate", row_id) == expected, label


def test_certificates_marker_text(db, cert_rows):
    engine.run_cleanup(_settings(db), ["certificates"], check_mode=False)
    stored = db.row("certificate", cert_rows["expired"])["cert"]
    assert stored == "removed by certificates.cleanup() on 2026-12-04T00:00:00Z"


def test_certificates_names(db, cert_rows):
    result = engine.run_cleanup(_settings(db), ["certificates"], check_mode=True)
    expected = [db.row("certificate", cert_rows[label])["name"]
                for label in sorted(CLEARED, key=lambda label: cert_rows[label])]
    assert result["certificates"]["names"] == expected


def test_certificates_skipped_reasons(db, cert_rows):
    result = engine.run_cleanup(_settings(db), ["certificates"], check_mode=True)
    reasons = {item["id"]: item["reason"] for item in result["certificates"]["skipped"]}
    assert set(reasons) == {cert_rows["raw garbage"], cert_rows["raw pem armour"],
                            cert_rows["csr bad created_at"], cert_rows["expire text"], cert_rows["expire NULL"]}
    assert "cert_raw" in reasons[cert_rows["raw garbage"]]
    assert "cert_raw" in reasons[cert_rows["raw pem armour"]]
    assert "created_at" in reasons[cert_rows["csr bad created_at"]]
    assert "expire_uts" in reasons[cert_rows["expire text"]]
    assert "expire_uts is NULL" in reasons[cert_rows["expire NULL"]]
    assert result["certificates"]["skipped_count"] == 5


def test_certificates_purge(db, cert_rows):
    deleted = CLEARED | BLANKED_EARLIER
    before = {label: db.row("certificate", row_id) for label, row_id in cert_rows.items()}

    check, real, again = _check_real_again(db, _cleanup(db, purge=True))

    assert check["certificates"]["count"] == len(deleted)
    assert real["certificates"]["count"] == len(deleted)
    assert again["changed"] is False
    remaining = _ids(db, "SELECT id FROM certificate")
    assert remaining == {cert_rows[label] for label in cert_rows if label not in deleted}
    for label in cert_rows:
        if label not in deleted:
            assert db.row("certificate", cert_rows[label]) == before[label], label


def test_certificates_purge_after_blank(db, cert_rows):
    engine.run_cleanup(_settings(db), ["certificates"], check_mode=False)
    result = engine.run_cleanup(_settings(db), ["certificates"], check_mode=False, purge=True)
    assert result["certificates"]["count"] == len(CLEARED | BLANKED_EARLIER)
    assert not _ids(db, "SELECT id FROM certificate") & {cert_rows[label] for label in CLEARED}


def test_certificates_grace_period(db, certs):
    grace = 10 * DAY
    cutoff = NOW - grace
    order = db.account_with_order()
    recent_raw = certs.issue(NOW - 90 * DAY, cutoff + 1)
    old_raw = certs.issue(NOW - 90 * DAY, cutoff - 1)
    rows = {
        "expire_uts after cutoff": db.add_certificate(order, cert="x", cert_raw=None, expire_uts=cutoff + 1),
        "expire_uts at cutoff": db.add_certificate(order, cert="x", cert_raw=None, expire_uts=cutoff),
        "notAfter after cutoff": db.add_certificate(order, cert=recent_raw.chain_pem, cert_raw=recent_raw.cert_raw),
        "notAfter before cutoff": db.add_certificate(order, cert=old_raw.chain_pem, cert_raw=old_raw.cert_raw),
        "csr within 14 days of cutoff": db.add_certificate(order, cert=None, cert_raw=None, csr="MII",
                                                           created_at=db_time(cutoff - 14 * DAY + 60)),
        "csr older than 14 days": db.add_certificate(order, cert=None, cert_raw=None, csr="MII",
                                                     created_at=db_time(cutoff - 14 * DAY - 60)),
    }
    cleared = {"expire_uts at cutoff", "notAfter before cutoff", "csr older than 14 days"}

    check, real, again = _check_real_again(db, _cleanup(db, grace_period=grace))

    assert check["certificates"]["count"] == len(cleared)
    assert real["certificates"]["count"] == len(cleared)
    assert again["changed"] is False
    for label, row_id in rows.items():
        stored = db.row("certificate", row_id)["cert"]
        if label in cleared:
            assert stored == "removed by certificates.cleanup() on 2026-11-24T00:00:00Z", label
        else:
            assert stored != _marker(cutoff), label


def test_certificates_small_batches(db, certs):
    order = db.account_with_order()
    for index in range(5):
        db.add_certificate(order, cert="x", cert_raw=None, expire_uts=NOW - index)
        db.add_certificate(order, cert="x", cert_raw=None, expire_uts=NOW + 1 + index)

    check, real, again = _check_real_again(db, _cleanup(db, batch_size=2))

    assert check["certificates"]["count"] == 5
    assert real["certificates"]["count"] == 5
    assert again["certificates"]["count"] == 0


# Certificate dates back-fill --------------------------------------------------------------


def _serial_hex(number: int) -> str:
    digits = format(number, "x")
    return "0" * (len(digits) % 2) + digits


def test_dates_fill_values(db, certs):
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW + 30 * DAY, serial_number=0xABC12)
    row_id = db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0,
                                poll_identifier="poll-7", header_info="hdr", replaced=0)
    before = db.row("certificate", row_id)

    check, real, again = _check_real_again(db, _cleanup(db, ["certificate_dates"]))

    after = db.row("certificate", row_id)
    assert check["certificate_dates"]["count"] == 1
    assert real["certificate_dates"]["count"] == 1
    assert again["changed"] is False
    assert after["issue_uts"] == pair.not_before
    assert after["expire_uts"] == pair.not_after
    assert after["serial"] == "0abc12"
    assert after["serial"] == _serial_hex(pair.serial_number)
    assert after["aki"] == pair.aki_hex
    assert after["poll_identifier"] is None
    assert after["renewal_info"]
    for column in ("cert", "cert_raw", "csr", "header_info", "replaced", "created_at", "order_id", "name"):
        assert after[column] == before[column], column


def test_dates_fill_single_pem(db, certs):
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW + 30 * DAY)
    row_id = db.add_certificate(order, cert=pair.leaf_pem, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0)

    result = engine.run_cleanup(_settings(db), ["certificate_dates"], check_mode=False)

    after = db.row("certificate", row_id)
    assert result["certificate_dates"]["count"] == 1
    assert after["expire_uts"] == pair.not_after
    assert after["renewal_info"] is None


@pytest.mark.parametrize("cert_kind", ["single block", "NULL"])
def test_dates_fill_keeps_renewal_info(db, certs, cert_kind):
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW + 30 * DAY)
    cert = pair.leaf_pem if cert_kind == "single block" else None
    row_id = db.add_certificate(order, cert=cert, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0,
                                renewal_info="stored-renewal-info")

    result = engine.run_cleanup(_settings(db), ["certificate_dates"], check_mode=False)

    assert result["certificate_dates"]["count"] == 1
    assert db.row("certificate", row_id)["expire_uts"] == pair.not_after
    assert db.row("certificate", row_id)["renewal_info"] == "stored-renewal-info"


def test_dates_fill_rows_left_alone(db, certs):
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW + 30 * DAY)
    # Blanked, one date already known, no cert_raw, no order: none of them is back-filled.
    db.add_certificate(order, cert=_marker(NOW - DAY), cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0)
    db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=5, expire_uts=0)
    db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=5)
    db.add_certificate(order, cert=None, cert_raw=None, issue_uts=0, expire_uts=0)
    db.add_certificate(9999, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0)
    garbage = db.add_certificate(order, cert=pair.chain_pem, cert_raw="@@@@", issue_uts=0, expire_uts=0)
    snapshot = database_snapshot(db.path)

    result = engine.run_cleanup(_settings(db), ["certificate_dates"], check_mode=False)

    assert result["certificate_dates"]["count"] == 0
    assert result["changed"] is False
    assert database_snapshot(db.path) == snapshot
    assert [item["id"] for item in result["certificate_dates"]["skipped"]] == [garbage]


BROKEN_ISSUER = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def test_dates_fill_broken_issuer_block(db, certs):
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW + DAY)
    bad_row = db.add_certificate(order, cert=pair.leaf_pem + BROKEN_ISSUER, cert_raw=pair.cert_raw,
                                 issue_uts=0, expire_uts=0)
    good_row = db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0)
    before = db.row("certificate", bad_row)

    check, real, again = _check_real_again(db, _cleanup(db, ["certificate_dates"]))

    assert check["certificate_dates"]["count"] == 1
    assert real["certificate_dates"]["count"] == 1
    assert [item["id"] for item in real["skipped_rows"]] == [bad_row]
    assert "cert" in real["skipped_rows"][0]["reason"]
    assert db.row("certificate", bad_row) == before
    assert db.row("certificate", good_row)["expire_uts"] == pair.not_after
    assert again["changed"] is False


def test_cleanup_broken_issuer_block(db, certs):
    # The back-fill cannot use the row, but certificate cleanup reads the expiry from cert_raw
    # alone, as acme2certifier does, so the expired row is still blanked.
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW - DAY)
    bad_row = db.add_certificate(order, cert=pair.leaf_pem + BROKEN_ISSUER, cert_raw=pair.cert_raw,
                                 issue_uts=0, expire_uts=0)

    check, real, again = _check_real_again(db, _cleanup(db, ["certificate_dates", "certificates"]))

    assert check["certificate_dates"]["count"] == 0
    assert check["certificates"]["count"] == 1
    assert real["certificates"]["count"] == 1
    assert db.row("certificate", bad_row)["cert"] == _marker(NOW)
    assert db.row("certificate", bad_row)["expire_uts"] == NOW - DAY
    assert again["changed"] is False


def test_info_broken_issuer_block(db, certs):
    order = db.account_with_order()
    pair = certs.issue(NOW - 60 * DAY, NOW - DAY)
    db.add_certificate(order, cert=pair.leaf_pem + BROKEN_ISSUER, cert_raw=pair.cert_raw, issue_uts=0,
                       expire_uts=0)

    info = engine.gather_info(_settings(db))

    assert info["pending"]["certificate_dates"] == 0
    assert info["pending"]["certificates"] == 1


def test_dates_then_certificates(db, certs):
    order = db.account_with_order()
    past = certs.issue(NOW - 90 * DAY, NOW - DAY)
    at_cutoff = certs.issue(NOW - 90 * DAY, NOW)
    future = certs.issue(NOW - 90 * DAY, NOW + DAY)
    past_row = db.add_certificate(order, cert=past.chain_pem, cert_raw=past.cert_raw, issue_uts=0, expire_uts=0)
    at_row = db.add_certificate(order, cert=at_cutoff.chain_pem, cert_raw=at_cutoff.cert_raw, issue_uts=0,
                                expire_uts=0)
    future_row = db.add_certificate(order, cert=future.chain_pem, cert_raw=future.cert_raw, issue_uts=0,
                                    expire_uts=0)

    check, real, again = _check_real_again(db, _cleanup(db, ["certificate_dates", "certificates"]))

    assert check["certificate_dates"]["count"] == 3
    assert real["certificate_dates"]["count"] == 3
    # Once the back-fill stored expire_uts, the rule "expire_uts <= cutoff" applies, which
    # also clears the certificate whose notAfter equals the cutoff.
    assert check["certificates"]["count"] == 2
    assert real["certificates"]["count"] == 2
    assert again["changed"] is False
    assert db.row("certificate", past_row)["cert"] == _marker(NOW)
    assert db.row("certificate", past_row)["expire_uts"] == NOW - DAY
    assert db.row("certificate", past_row)["serial"] == _serial_hex(past.serial_number)
    assert db.row("certificate", at_row)["cert"] == _marker(NOW)
    assert db.row("certificate", future_row)["cert"] == future.chain_pem
    assert db.row("certificate", future_row)["expire_uts"] == NOW + DAY


def test_certificates_without_dates_target(db, certs):
    order = db.account_with_order()
    at_cutoff = certs.issue(NOW - 90 * DAY, NOW)
    row_id = db.add_certificate(order, cert=at_cutoff.chain_pem, cert_raw=at_cutoff.cert_raw, issue_uts=0,
                                expire_uts=0)
    result = engine.run_cleanup(_settings(db), ["certificates"], check_mode=False)
    assert result["certificates"]["count"] == 0
    assert db.row("certificate", row_id)["expire_uts"] == 0


# gather_info ------------------------------------------------------------------------------


def test_info_pending_matches_check(db, cert_rows):
    _add_order_cases(db)
    _add_authz_cases(db)
    db.add_nonce(0)
    db.add_nonce(db_time(NOW))
    snapshot, digest = database_snapshot(db.path), sha256_file(db.path)

    info = engine.gather_info(_settings(db))
    invalidate = engine.run_invalidate(_settings(db), ["orders", "authorizations"], check_mode=True)
    blank = engine.run_cleanup(_settings(db), ["certificates", "nonces", "certificate_dates"], check_mode=True)
    purge = engine.run_cleanup(_settings(db), ["certificates"], check_mode=True, purge=True)

    assert info["changed"] is False
    assert info["pending"]["orders"] == invalidate["orders"]["count"]
    assert info["pending"]["authorizations"] == invalidate["authorizations"]["count"]
    assert info["pending"]["nonces"] == blank["nonces"]["count"]
    assert info["pending"]["certificate_dates"] == blank["certificate_dates"]["count"]
    assert info["pending"]["certificates_purge"] == purge["certificates"]["count"]
    assert info["pending"]["certificates"] == len(CLEARED)
    assert info["row_counts"]["certificate"] == len(cert_rows)
    assert info["row_counts"]["nonce"] == 2
    assert info["dbversion"] == "0.46"
    assert database_snapshot(db.path) == snapshot
    assert sha256_file(db.path) == digest


# Comparison with acme2certifier 0.46.3 ----------------------------------------------------


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    """Return a function that runs acme2certifier's Housekeeping on a database file."""
    module = pytest.importorskip("acme2certifier.acme_srv.housekeeping",
                                 reason="acme2certifier 0.46.3 is not installed")
    counter = iter(range(1000))

    def run(database: Path, action: Callable[[Any], Any]) -> Any:
        config = tmp_path / f"upstream-{next(counter)}.cfg"
        config.write_text(f"[DBhandler]\ndbfile: {database}\n", encoding="utf-8")
        monkeypatch.setenv("ACME_SRV_CONFIGFILE", str(config))
        logger = logging.getLogger("acme2certifier-under-test")
        logger.setLevel(logging.CRITICAL + 1)
        with module.Housekeeping(False, logger) as housekeeping:
            return action(housekeeping)

    return run


def _twin(db: AcmeDb, tmp_path: Path) -> Path:
    copy = tmp_path / "upstream-copy.db"
    shutil.copyfile(db.path, copy)
    return copy


def test_upstream_orders_authorizations(db, tmp_path, upstream):
    _add_order_cases(db)
    _add_authz_cases(db)
    copy = _twin(db, tmp_path)

    upstream(copy, lambda hk: (hk.orders_invalidate(uts=NOW), hk.authorizations_invalidate(uts=NOW)))
    engine.run_invalidate(_settings(db), ["orders", "authorizations"], check_mode=False)

    assert database_snapshot(db.path)["orders"] == database_snapshot(copy)["orders"]
    assert database_snapshot(db.path)["authorization"] == database_snapshot(copy)["authorization"]


def test_upstream_nonces(db, tmp_path, upstream):
    for created_at in (0, 5, db_time(THRESHOLD - 1), db_time(THRESHOLD), db_time(THRESHOLD - 1) + ".25",
                       db_time(THRESHOLD - 7).replace(" ", "T"), "junk", db_time(NOW)):
        db.add_nonce(created_at)
    copy = _twin(db, tmp_path)

    upstream(copy, lambda hk: hk.nonce_cleanup(uts=NOW))
    engine.run_cleanup(_settings(db), ["nonces"], check_mode=False)

    assert database_snapshot(db.path)["nonce"] == database_snapshot(copy)["nonce"]


def test_upstream_certificates_blank(db, cert_rows, tmp_path, upstream):
    copy = _twin(db, tmp_path)

    upstream(copy, lambda hk: hk.certificates_cleanup(uts=NOW))
    engine.run_cleanup(_settings(db), ["certificates"], check_mode=False)

    assert database_snapshot(db.path)["certificate"] == database_snapshot(copy)["certificate"]


def test_upstream_certificates_purge(db, cert_rows, tmp_path, upstream):
    copy = _twin(db, tmp_path)

    upstream(copy, lambda hk: hk.certificates_cleanup(uts=NOW, purge=True))
    engine.run_cleanup(_settings(db), ["certificates"], check_mode=False, purge=True)

    assert database_snapshot(db.path)["certificate"] == database_snapshot(copy)["certificate"]


def test_upstream_dates_update(db, certs, tmp_path, upstream):
    order = db.account_with_order()
    for serial, not_after in ((0xABC12, NOW - DAY), (0x1F, NOW + DAY), (0x7FFFFFFF01, NOW)):
        pair = certs.issue(NOW - 90 * DAY, not_after, serial_number=serial)
        db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=0, expire_uts=0,
                           poll_identifier="poll")
    single = certs.issue(NOW - 90 * DAY, NOW + 2 * DAY, serial_number=0x10)
    db.add_certificate(order, cert=single.leaf_pem, cert_raw=single.cert_raw, issue_uts=0, expire_uts=0)
    db.add_certificate(order, cert=_marker(NOW - DAY), cert_raw=single.cert_raw, issue_uts=0, expire_uts=0)
    copy = _twin(db, tmp_path)

    upstream(copy, lambda hk: hk.certificate_dates_update())
    engine.run_cleanup(_settings(db), ["certificate_dates"], check_mode=False)

    assert database_snapshot(db.path)["certificate"] == database_snapshot(copy)["certificate"]

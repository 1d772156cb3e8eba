# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each difference listed in docs/upstream-differences.md, shown on both sides.

Every test runs acme2certifier 0.46.3 (in a subprocess, see upstream_runner.py) and the modules
(through ansible-playbook) on copies of one small database, and asserts acme2certifier's
behaviour and the modules' behaviour separately, so a change on either side makes it fail.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from corpus_content import DAY, REFERENCE_NOW, RowWriter, db_time, marker
from differential_harness import (
    OUTCOME_KEY,
    ModulePlaybook,
    compare_databases,
    csv_records,
    drop_csv_columns,
    read_tables,
    run_upstream,
    upstream_environment,
    upstream_schema_update,
    write_config,
)
from legacy_schemas import create_legacy

from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import (
    AcmeDb,
    CertificateFactory,
)

NOW = REFERENCE_NOW


@pytest.fixture(scope="module")
def certs() -> CertificateFactory:
    return CertificateFactory()


class Twins:
    """Copies of one database for acme2certifier and for the modules, with helpers to run each."""

    def __init__(self, source: Path, workdir: Path, nonce_validity: Optional[int] = None) -> None:
        self.workdir = workdir
        (workdir / "upstream").mkdir(parents=True)
        (workdir / "ours").mkdir(parents=True)
        self.upstream_db = workdir / "upstream" / "acme_srv.db"
        self.ours_db = workdir / "ours" / "acme_srv.db"
        shutil.copyfile(source, self.upstream_db)
        shutil.copyfile(source, self.ours_db)
        self.upstream_config = write_config(workdir / "upstream" / "acme_srv.cfg", self.upstream_db, nonce_validity)
        self.ours_config = write_config(workdir / "ours" / "acme_srv.cfg", self.ours_db, nonce_validity)

    def upstream(self, *steps: Dict[str, Any]) -> List[Dict[str, Any]]:
        return run_upstream(self.upstream_config, list(steps), self.workdir / "upstream")

    def modules(self, *tasks: Tuple[str, Dict[str, Any]], check_mode: bool = False) -> List[Dict[str, Any]]:
        playbook = ModulePlaybook(self.workdir / "ours")
        for module, args in tasks:
            playbook.module(module, module, {"database": str(self.ours_db), **args}, check_mode=check_mode)
        return playbook.run()


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _rows(database: Path, table: str) -> Dict[int, Dict[str, Any]]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        return {row["id"]: dict(row) for row in connection.execute(f'SELECT * FROM "{table}"')}
    finally:
        connection.close()


def _full_chain(db: AcmeDb, account: int, expires: int = NOW + DAY) -> int:
    order = db.add_order(account, expires, "valid")
    authz = db.add_authorization(order, expires, "valid")
    db.add_challenge(authz, "valid")
    return order


# Reports ----------------------------------------------------------------------------------


def test_report_row_order(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    first, second = db.add_account(), db.add_account()
    _full_chain(db, second)
    _full_chain(db, first)
    twins = Twins(db.path, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    upstream = twins.upstream({"op": "account_report", "format": "json", "name": str(out / "upstream")})
    ours = twins.modules(("acme_hk_report", {"report": "accounts", "format": "json", "dest": str(out / "ours.json")}))

    def ids(rows: List[Dict[str, Any]]) -> List[tuple]:
        return [(row["account.id"], row["order.id"], row["challenge.id"]) for row in rows]

    upstream_ids = ids(upstream[0]["returned"])
    our_ids = ids(json.loads(_text(out / "ours.json")))
    assert not ours[0].get("failed"), ours[0]
    assert upstream_ids != sorted(upstream_ids), "acme2certifier lists rows in SQLite's join order, here by order id"
    assert our_ids == sorted(our_ids)
    assert sorted(upstream_ids) == our_ids


def test_certificate_report_status_name(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    pair = certs.issue(NOW - 90 * DAY, NOW + DAY)
    db.add_certificate(db.add_order(db.add_account(), NOW, "valid"), cert=pair.chain_pem, cert_raw=pair.cert_raw,
                       issue_uts=pair.not_before, expire_uts=pair.not_after)
    twins = Twins(db.path, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    twins.upstream({"op": "certificate_report", "format": "csv", "name": str(out / "certificates.csv")},
                   {"op": "certificate_report", "format": "json", "name": str(out / "certificates")})
    twins.modules(("acme_hk_report", {"report": "certificates", "format": "csv", "dest": str(out / "ours.csv")}),
                  ("acme_hk_report", {"report": "certificates", "format": "json", "dest": str(out / "ours.json")}))

    # acme2certifier appends the format to report_name, the modules write dest as given.
    assert (out / "certificates.csv.csv").is_file()
    assert not (out / "certificates.csv").exists()
    assert json.loads(_text(out / "certificates.json"))[0]["order.status.name"] == 5
    assert json.loads(_text(out / "ours.json"))[0]["order.status.name"] == "valid"
    upstream_csv = csv_records(_text(out / "certificates.csv.csv"))
    our_csv = csv_records(_text(out / "ours.csv"))
    assert ",5," in upstream_csv[1]
    assert ',"valid",' in our_csv[1]
    assert upstream_csv[1].replace(",5,", ',"valid",') == our_csv[1]


def test_account_report_incomplete_chains(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    db.add_account(name="noorders")
    db.add_order(db.add_account(name="noauthz"), NOW + DAY, "pending", name="orderalone")
    db.add_authorization(db.add_order(db.add_account(name="nochallenge"), NOW + DAY, "pending"), NOW + DAY,
                         name="authzalone")
    _full_chain(db, db.add_account(name="complete"))
    twins = Twins(db.path, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    twins.upstream({"op": "account_report", "format": "json", "name": str(out / "flat")},
                   {"op": "account_report", "format": "json", "nested": True, "name": str(out / "nested")})
    twins.modules(("acme_hk_report", {"report": "accounts", "format": "json", "dest": str(out / "ours.json")}),
                  ("acme_hk_report", {"report": "accounts", "format": "json", "nested": True,
                                      "dest": str(out / "ours-nested.json")}))

    assert [row["account.name"] for row in json.loads(_text(out / "flat.json"))] == ["complete"]
    assert [account["account.name"] for account in json.loads(_text(out / "nested.json"))] == ["complete"]
    ours = {row["account.name"]: row for row in json.loads(_text(out / "ours.json"))}
    assert sorted(ours) == ["complete", "noauthz", "nochallenge", "noorders"]
    assert ours["noorders"]["order.id"] is None
    assert ours["noauthz"]["order.name"] == "orderalone"
    assert ours["noauthz"]["authorization.id"] is None
    assert ours["nochallenge"]["authorization.name"] == "authzalone"
    assert ours["nochallenge"]["challenge.id"] is None
    nested = {account["account.name"]: account for account in json.loads(_text(out / "ours-nested.json"))}
    assert nested["noorders"]["orders"] == []
    assert nested["noauthz"]["orders"][0]["authorizations"] == []
    assert nested["nochallenge"]["orders"][0]["authorizations"][0]["challenges"] == []


def test_empty_reports_written(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    twins = Twins(db.path, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    upstream = twins.upstream({"op": "account_report", "format": "csv", "name": str(out / "accounts")},
                              {"op": "certificate_report", "format": "json", "name": str(out / "certificates")})
    twins.modules(("acme_hk_report", {"report": "accounts", "format": "csv", "dest": str(out / "ours.csv")}),
                  ("acme_hk_report", {"report": "certificates", "format": "json", "dest": str(out / "ours.json")}))

    assert [result["returned"] for result in upstream] == [[], []]
    assert not (out / "accounts.csv").exists()
    assert not (out / "certificates.json").exists()
    records = csv_records(_text(out / "ours.csv"))
    assert len(records) == 1
    assert records[0].startswith('"account.id","account.name",')
    assert _text(out / "ours.json") == "[]"


def test_certificate_report_null_dates(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.add_order(db.add_account(), NOW, "valid")
    pair = certs.issue(NOW - 90 * DAY, NOW + DAY)
    good = db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=pair.not_before,
                              expire_uts=pair.not_after)
    bad = db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=None, expire_uts="")
    twins = Twins(db.path, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    upstream = twins.upstream({"op": "certificate_report", "format": "json", "name": str(out / "certificates")})
    ours = twins.modules(("acme_hk_report", {"report": "certificates", "format": "json", "dest": str(out / "ours.json")}))

    assert upstream[0]["error"].startswith("TypeError")
    assert not (out / "certificates.json").exists()
    rows = {row["certificate.id"]: row for row in json.loads(_text(out / "ours.json"))}
    assert sorted(rows) == [good, bad]
    assert rows[bad]["certificate.expire_uts"] == pair.not_after
    assert [item["id"] for item in ours[0]["skipped_rows"]] == [bad]


def test_report_expiry_not_unix_time(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    order = db.add_order(db.add_account(), "soon", "pending")
    db.add_challenge(db.add_authorization(order, NOW))
    twins = Twins(db.path, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    upstream = twins.upstream({"op": "account_report", "format": "json", "name": str(out / "accounts")})
    ours = twins.modules(("acme_hk_report", {"report": "accounts", "format": "json", "dest": str(out / "ours.json")}))

    assert upstream[0]["error"].startswith("ValueError")
    assert not (out / "accounts.json").exists()
    assert json.loads(_text(out / "ours.json"))[0]["order.expires"] == "soon"
    assert [(item["table"], item["id"]) for item in ours[0]["skipped_rows"]] == [("order", order)]


def test_schema_011_reports(tmp_path):
    source = tmp_path / "source.db"
    create_legacy(source, "0.11")
    rows = RowWriter(source, seed=3)
    account = rows.account('["mailto:old@example.com"]', "2020-08-01 10:00:00")
    rows.chain(account, 5, NOW - DAY, ["old.example.com"], NOW - 2 * DAY, 5)
    rows.close()
    twins = Twins(source, tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    before = twins.upstream({"op": "account_report", "format": "csv", "name": str(out / "unmigrated")},
                            {"op": "certificate_report", "format": "csv", "name": str(out / "unmigrated-certificates")})
    upstream_schema_update(twins.upstream_config, tmp_path)
    after = twins.upstream({"op": "account_report", "format": "csv", "name": str(out / "migrated")})
    ours = twins.modules(("acme_hk_report", {"report": "accounts", "format": "csv", "dest": str(out / "ours.csv")}),
                         ("acme_hk_report", {"report": "certificates", "format": "csv",
                                             "dest": str(out / "ours-certificates.csv")}))

    assert before[0]["error"].startswith("TypeError"), "acme2certifier 0.46.3 needs its schema update first"
    assert before[1]["error"].startswith("TypeError"), "acme2certifier 0.46.3 needs its schema update first"
    assert after[0]["error"] is None
    assert "account.eab_kid" not in ours[1]["columns"]
    migrated = csv_records(_text(out / "migrated.csv"))
    ours = csv_records(_text(out / "ours.csv"))
    assert '"account.eab_kid"' in migrated[0]
    assert '"account.eab_kid"' not in ours[0]
    assert sorted(drop_csv_columns(migrated, ["account.eab_kid"])[1:]) == sorted(ours[1:])


# Cleanup and invalidation -----------------------------------------------------------------


def test_cleanup_report_contents(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    pair = certs.issue(NOW - 90 * DAY, NOW - DAY)
    cert_id = db.add_certificate(db.account_with_order(), name="id-expired", cert=pair.chain_pem, cert_raw=pair.cert_raw,
                                 issue_uts=pair.not_before, expire_uts=pair.not_after)
    twins = Twins(db.path, tmp_path)
    json_twins = Twins(db.path, tmp_path / "json")
    out = tmp_path / "out"
    out.mkdir()

    csv_run = twins.upstream({"op": "certificates_cleanup", "uts": NOW, "format": "csv", "name": str(out / "cleanup")})
    json_run = json_twins.upstream({"op": "certificates_cleanup", "uts": NOW, "format": "json",
                                    "name": str(out / "cleanup")})
    ours = twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW,
                                              "report_dest": str(out / "ours.csv")}))

    # acme2certifier changes the row first, then fails to write the CSV report.
    assert csv_run[0]["error"].startswith("TypeError")
    assert _rows(twins.upstream_db, "certificate")[cert_id]["cert"] == marker(NOW)
    assert not (out / "cleanup.csv").exists()
    assert json_run[0]["error"] is None
    assert json.loads(_text(out / "cleanup.json")) == ["id-expired"]
    assert ours[0]["certificates"]["count"] == 1
    records = csv_records(_text(out / "ours.csv"))
    assert records[0].startswith('"certificate.id","certificate.name","certificate.expire_uts"')
    assert len(records) == 2
    assert pair.cert_raw in records[1]
    assert pair.chain_pem.replace("\n", "") in records[1], "the report keeps cert as it was before the change"


def test_authorizations_result(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    authz = db.add_authorization(db.account_with_order(), NOW - 1, "pending", name="oldauthz")
    twins = Twins(db.path, tmp_path)

    upstream = twins.upstream({"op": "authorizations_invalidate", "uts": NOW})
    ours = twins.modules(("acme_hk_invalidate", {"targets": ["authorizations"], "now": NOW}))

    assert upstream[0]["returned"] is None
    assert _rows(twins.upstream_db, "authorization")[authz]["status_id"] == 6
    assert ours[0]["authorizations"]["count"] == 1
    assert ours[0]["authorizations"]["names"] == ["oldauthz"]
    assert compare_databases(twins.ours_db, twins.upstream_db, "authorizations") == []


def test_default_reference_time(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    expires = int(time.time()) + 3
    order = db.add_order(db.add_account(), expires, "pending")
    twins = Twins(db.path, tmp_path)

    # acme2certifier evaluates the default uts when housekeeping.py is imported; the order
    # expires after the import and before the call.
    script = textwrap.dedent(f"""
        import logging, time
        from acme2certifier.acme_srv.housekeeping import Housekeeping
        while time.time() < {expires} + 1:
            time.sleep(0.2)
        with Housekeeping(False, logging.getLogger("upstream")) as housekeeping:
            print("invalidated", len(housekeeping.orders_invalidate()))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                               env=upstream_environment(twins.upstream_config))
    ours = twins.modules(("acme_hk_invalidate", {"targets": ["orders"]}))

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split()[-2:] == ["invalidated", "0"]
    assert _rows(twins.upstream_db, "orders")[order]["status_id"] == 2
    assert ours[0]["now"] > expires
    assert ours[0]["orders"]["count"] == 1
    assert _rows(twins.ours_db, "orders")[order]["status_id"] == 1


def test_unmigrated_schema_cleanup(tmp_path, certs):
    source = tmp_path / "source.db"
    create_legacy(source, "0.41")
    rows = RowWriter(source, seed=4)
    order = rows.order(rows.account('["mailto:a@example.com"]', "2025-12-01 10:00:00"), 5, NOW - DAY,
                       ["a.example.com"], "2025-12-01 10:00:00")
    expired = rows.issued(order, certs.issue(NOW - 90 * DAY, NOW - DAY))
    undated = rows.issued(order, certs.issue(NOW - 90 * DAY, NOW + DAY), with_dates=False)
    rows.close()
    twins = Twins(source, tmp_path)

    upstream = twins.upstream({"op": "certificate_dates_update"}, {"op": "certificates_cleanup", "uts": NOW})
    ours = twins.modules(("acme_hk_cleanup", {"targets": ["certificate_dates", "certificates"], "now": NOW}))

    assert read_tables(twins.upstream_db) == read_tables(source)
    assert upstream[1]["returned"] == []
    assert any("no such column" in message for message in upstream[0]["log"] + upstream[1]["log"])
    assert ours[0]["certificate_dates"]["count"] == 1
    assert ours[0]["certificates"]["count"] == 1
    after = _rows(twins.ours_db, "certificate")
    assert after[expired]["cert"] == marker(NOW)
    assert after[undated]["expire_uts"] == NOW + DAY


def test_missing_database_file(tmp_path):
    missing = tmp_path / "upstream" / "missing.db"
    (tmp_path / "upstream").mkdir()
    config = write_config(tmp_path / "upstream" / "acme_srv.cfg", missing)
    ours_missing = tmp_path / "ours" / "missing.db"
    (tmp_path / "ours").mkdir()

    upstream = run_upstream(config, [{"op": "certificate_report", "format": "json"}], tmp_path / "upstream")
    playbook = ModulePlaybook(tmp_path / "ours")
    playbook.module("report", "acme_hk_report", {"database": str(ours_missing), "report": "certificates",
                                                 "return_content": True})
    ours = playbook.run()

    assert upstream[0]["returned"] == []
    assert missing.is_file(), "acme2certifier creates an empty database at the configured path"
    assert ours[0]["failed"]
    assert str(ours_missing) in ours[0]["msg"]
    assert "does not exist" in ours[0]["msg"]
    assert not ours_missing.exists()


def test_dates_update_null_cert(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    first, second = certs.issue(NOW - 90 * DAY, NOW + DAY), certs.issue(NOW - 80 * DAY, NOW + 2 * DAY, serial_number=7)
    null_cert = db.add_certificate(order, cert=None, cert_raw=first.cert_raw, issue_uts=0, expire_uts=0)
    later = db.add_certificate(order, cert=second.chain_pem, cert_raw=second.cert_raw, issue_uts=0, expire_uts=0)
    twins = Twins(db.path, tmp_path)

    upstream = twins.upstream({"op": "certificate_dates_update"})
    ours = twins.modules(("acme_hk_cleanup", {"targets": ["certificate_dates"], "now": NOW}))

    assert upstream[0]["error"].startswith("TypeError")
    theirs = _rows(twins.upstream_db, "certificate")
    assert (theirs[null_cert]["issue_uts"], theirs[later]["issue_uts"]) == (0, 0), "the run stopped at the first row"
    assert ours[0]["certificate_dates"]["count"] == 2
    mine = _rows(twins.ours_db, "certificate")
    assert (mine[null_cert]["expire_uts"], mine[later]["expire_uts"]) == (first.not_after, second.not_after)
    assert mine[null_cert]["renewal_info"] is None


def test_dates_update_keeps_renewal_info(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    pair = certs.issue(NOW - 90 * DAY, NOW + DAY)
    leaf_only = db.add_certificate(order, cert=pair.leaf_pem, cert_raw=pair.cert_raw, renewal_info="stored-1")
    empty_cert = db.add_certificate(order, cert="", cert_raw=pair.cert_raw, renewal_info="stored-2")
    twins = Twins(db.path, tmp_path)

    upstream = twins.upstream({"op": "certificate_dates_update"})
    twins.modules(("acme_hk_cleanup", {"targets": ["certificate_dates"], "now": NOW}))

    assert upstream[0]["error"] is None
    theirs, mine = _rows(twins.upstream_db, "certificate"), _rows(twins.ours_db, "certificate")
    assert [theirs[row]["renewal_info"] for row in (leaf_only, empty_cert)] == [None, None]
    assert [mine[row]["renewal_info"] for row in (leaf_only, empty_cert)] == ["stored-1", "stored-2"]
    for row in (leaf_only, empty_cert):
        theirs[row].pop("renewal_info")
        mine[row].pop("renewal_info")
        assert mine[row] == theirs[row]


def test_rows_that_cannot_be_judged(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    pair = certs.issue(NOW - 90 * DAY, NOW - DAY)
    malformed = db.add_certificate(order, cert=pair.chain_pem, cert_raw="not base64!", expire_uts=0)
    csr_only = db.add_certificate(order, cert=None, cert_raw=None, created_at="junk")
    text_expiry = db.add_certificate(order, cert=None, cert_raw=None, expire_uts="later")
    twins = Twins(db.path, tmp_path)

    upstream = twins.upstream({"op": "certificates_cleanup", "uts": NOW})
    ours = twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW}))

    assert upstream[0]["returned"] == []
    assert upstream[0]["error"] is None
    assert any("junk" in message or "date" in message for message in upstream[0]["log"])
    assert ours[0]["certificates"]["count"] == 0
    assert sorted(item["id"] for item in ours[0]["certificates"]["skipped"]) == sorted([malformed, csr_only, text_expiry])
    assert compare_databases(twins.ours_db, twins.upstream_db, "certificates") == []


def test_grace_period(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    account = db.add_account()
    for offset in (-4 * DAY, -3 * DAY, -3 * DAY + 1, -DAY):
        order = db.add_order(account, NOW + offset, "pending")
        db.add_authorization(order, NOW + offset, "pending")
        pair = certs.issue(NOW - 90 * DAY, NOW + offset)
        db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=pair.not_before,
                           expire_uts=pair.not_after)
        db.add_certificate(order, cert=None, cert_raw=None, created_at=db_time(NOW - 14 * DAY + offset))
        db.add_nonce(db_time(NOW - DAY + offset))
    twins = Twins(db.path, tmp_path)
    cutoff = NOW - 3 * DAY

    twins.upstream({"op": "orders_invalidate", "uts": cutoff}, {"op": "authorizations_invalidate", "uts": cutoff},
                   {"op": "certificates_cleanup", "uts": cutoff}, {"op": "nonce_cleanup", "uts": cutoff})
    ours = twins.modules(("acme_hk_invalidate", {"targets": ["orders", "authorizations"], "now": NOW, "grace_period": "3d"}),
                         ("acme_hk_cleanup", {"targets": ["certificates", "nonces"], "now": NOW, "grace_period": "72h"}))

    assert ours[0]["cutoff"] == cutoff
    assert ours[0]["orders"]["count"] == 2
    assert compare_databases(twins.ours_db, twins.upstream_db, "grace period") == []


def test_dates_and_cleanup_one_task(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    for not_after in (NOW - DAY, NOW + DAY):
        pair = certs.issue(NOW - 90 * DAY, not_after)
        db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw)
    twins = Twins(db.path, tmp_path)

    upstream = twins.upstream({"op": "certificate_dates_update"}, {"op": "certificates_cleanup", "uts": NOW})
    task = ("acme_hk_cleanup", {"targets": ["certificate_dates", "certificates"], "now": NOW})
    check = twins.modules(task, check_mode=True)
    ours = twins.modules(task)

    assert len(upstream[1]["returned"]) == 1
    assert check[0]["certificates"]["count"] == 1
    assert ours[0]["certificates"]["count"] == 1
    assert compare_databases(twins.ours_db, twins.upstream_db, "dates and cleanup") == []


def test_future_dbversion(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db", dbversion="0.99")
    pair = certs.issue(NOW - 90 * DAY, NOW - DAY)
    db.add_certificate(db.account_with_order(), cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=pair.not_before,
                       expire_uts=pair.not_after)
    twins = Twins(db.path, tmp_path)
    before = read_tables(twins.ours_db)

    upstream = twins.upstream({"op": "certificates_cleanup", "uts": NOW})
    refused = twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW}))
    unchanged = read_tables(twins.ours_db)
    forced = twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW, "force": True}))

    assert len(upstream[0]["returned"]) == 1
    assert refused[0]["failed"]
    assert "0.99" in refused[0]["msg"]
    assert unchanged == before
    assert forced[0]["certificates"]["count"] == 1
    assert compare_databases(twins.ours_db, twins.upstream_db, "forced cleanup") == []


def test_created_at_guessed_formats(tmp_path):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    sql_text = db.add_certificate(order, cert=None, cert_raw=None, created_at="2026-11-01 10:00:00")
    guessed = [db.add_certificate(order, cert=None, cert_raw=None, created_at=text)
               for text in ("01.11.2026 10:00", "Nov 1 2026", "1 November 2026")]
    twins = Twins(db.path, tmp_path)

    upstream = twins.upstream({"op": "certificates_cleanup", "uts": NOW, "purge": True})
    ours = twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW, "purge": True}))

    assert len(upstream[0]["returned"]) == 4
    assert _rows(twins.upstream_db, "certificate") == {}
    assert ours[0]["certificates"]["count"] == 1
    assert sorted(_rows(twins.ours_db, "certificate")) == guessed
    assert sorted(item["id"] for item in ours[0]["certificates"]["skipped"]) == guessed
    assert sql_text not in _rows(twins.ours_db, "certificate")


def test_certificate_names_differing_in_case(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    current, expired = certs.issue(NOW - DAY, NOW + 90 * DAY), certs.issue(NOW - 90 * DAY, NOW - DAY, serial_number=9)
    db.add_certificate(order, name="ABCdef", cert=current.chain_pem, cert_raw=current.cert_raw, issue_uts=current.not_before,
                       expire_uts=current.not_after, poll_identifier="other", serial="abc123", aki="other-aki",
                       renewal_info="other-renewal", header_info="other-header", replaced=1)
    target = db.add_certificate(order, name="abcdef", cert=expired.chain_pem, cert_raw=expired.cert_raw,
                                issue_uts=expired.not_before, expire_uts=expired.not_after, poll_identifier="own",
                                serial="09", aki="own-aki", renewal_info="own-renewal", header_info="own-header", replaced=0)
    twins = Twins(db.path, tmp_path)

    twins.upstream({"op": "certificates_cleanup", "uts": NOW})
    twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW}))

    copied = ("poll_identifier", "serial", "aki", "renewal_info", "header_info", "replaced")
    theirs, mine = _rows(twins.upstream_db, "certificate")[target], _rows(twins.ours_db, "certificate")[target]
    assert theirs["cert"] == mine["cert"] == marker(NOW)
    assert [theirs[column] for column in copied] == ["other", "abc123", "other-aki", "other-renewal", "other-header", 1]
    assert [mine[column] for column in copied] == ["own", "09", "own-aki", "own-renewal", "own-header", 0]


# Ansible shows a result with a non-empty top-level "skipped" key as a skipped task, so the
# modules return the rows they could not process as skipped_rows.


def test_task_with_skipped_rows_not_skipped(tmp_path, certs):
    db = AcmeDb(tmp_path / "source.db")
    order = db.account_with_order()
    pair = certs.issue(NOW - 90 * DAY, NOW - DAY)
    db.add_certificate(order, cert=pair.chain_pem, cert_raw=pair.cert_raw, issue_uts=pair.not_before,
                       expire_uts=pair.not_after)
    db.add_certificate(order, cert=None, cert_raw=None, created_at="junk")
    twins = Twins(db.path, tmp_path)

    ours = twins.modules(("acme_hk_cleanup", {"targets": ["certificates"], "now": NOW}))

    assert ours[0]["changed"] is True
    assert ours[0]["certificates"]["skipped_count"] == 1
    assert ours[0][OUTCOME_KEY] == "ok", "Ansible reported the task as skipped"

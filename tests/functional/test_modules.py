# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each module through real ansible-playbook runs: check mode, real run, idempotent rerun, query."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import COLLECTIONS, database_snapshot

NOW = "2026-12-04T00:00:00Z"
NOW_EPOCH = 1796342400


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _query(database: Path, sql: str) -> list:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_invalidate_check_real_rerun(example_db, playbook):
    before = _sha256(example_db)
    args = {"database": str(example_db), "now": NOW}

    check = playbook.run("acme_hk_invalidate", args, check=True, diff=True)
    assert check["changed"] is True
    assert check["orders"]["count"] == 9
    assert check["authorizations"]["count"] == 18
    assert check["diff"]["before"] == {"orders": 9, "authorizations": 18}
    assert _sha256(example_db) == before

    real = playbook.run("acme_hk_invalidate", args, diff=True)
    assert real["changed"] is True
    assert real["orders"]["count"] == check["orders"]["count"]
    assert real["authorizations"]["count"] == check["authorizations"]["count"]
    assert real["orders"]["names"] == check["orders"]["names"]
    assert real["diff"]["after"] == {"orders": 0, "authorizations": 0}

    again = playbook.run("acme_hk_invalidate", args)
    assert again["changed"] is False
    assert again["orders"]["count"] == 0
    assert again["authorizations"]["count"] == 0

    assert _query(example_db, "SELECT DISTINCT status_id FROM orders") == [(1,)]
    assert _query(example_db, "SELECT DISTINCT status_id FROM authorization") == [(6,)]


def test_invalidate_grace_period_keeps_rows(example_db, playbook):
    # Every order in the example expired on 2020-07-31; a cutoff before that touches nothing.
    result = playbook.run(
        "acme_hk_invalidate",
        {"database": str(example_db), "now": "2020-08-02T00:00:00Z", "grace_period": "3d"},
    )
    assert result["changed"] is False
    assert result["cutoff"] == 1596326400 - 3 * 86400
    assert _query(example_db, "SELECT count(*) FROM orders WHERE status_id = 1") == [(0,)]


def test_cleanup_check_real_rerun(example_db, playbook, tmp_path):
    snapshot = database_snapshot(example_db)
    report = tmp_path / "cleaned.csv"
    args = {
        "database": str(example_db),
        "now": NOW,
        "targets": ["certificate_dates", "certificates", "nonces"],
        "report_dest": str(report),
    }

    check = playbook.run("acme_hk_cleanup", args, check=True, diff=True)
    assert check["changed"] is True
    assert check["certificates"]["count"] == 6
    assert check["nonces"]["count"] == 13
    assert check["certificate_dates"]["count"] == 0
    assert database_snapshot(example_db) == snapshot
    assert not report.exists()

    real = playbook.run("acme_hk_cleanup", args)
    assert real["changed"] is True
    assert real["certificates"]["count"] == check["certificates"]["count"]
    assert real["nonces"]["count"] == check["nonces"]["count"]
    assert report.read_bytes().count(b"\r\n") == 1 + 6

    again = playbook.run("acme_hk_cleanup", args)
    assert again["changed"] is False
    assert again["certificates"]["count"] == 0

    markers = _query(example_db, "SELECT DISTINCT cert FROM certificate")
    assert markers == [("removed by certificates.cleanup() on 2026-12-04T00:00:00Z",)]
    assert _query(example_db, "SELECT count(*) FROM certificate WHERE cert_raw IS NOT NULL") == [(6,)]
    assert _query(example_db, "SELECT count(*) FROM nonce") == [(0,)]


def test_cleanup_purge_with_backup(example_db, playbook):
    args = {"database": str(example_db), "now": NOW, "purge": True, "backup": True}

    check = playbook.run("acme_hk_cleanup", args, check=True)
    assert check["certificates"]["count"] == 6
    assert "backup_file" not in check

    real = playbook.run("acme_hk_cleanup", args)
    assert real["certificates"]["count"] == 6
    backup = Path(real["backup_file"])
    assert _query(backup, "SELECT count(*) FROM certificate") == [(6,)]
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    assert _query(example_db, "SELECT count(*) FROM certificate") == [(0,)]

    again = playbook.run("acme_hk_cleanup", args)
    assert again["changed"] is False
    assert "backup_file" not in again


def test_report_check_real_rerun(example_db, playbook, tmp_path):
    dest = tmp_path / "reports" / "certificates.csv"
    dest.parent.mkdir()
    args = {"database": str(example_db), "report": "certificates", "dest": str(dest)}

    check = playbook.run("acme_hk_report", args, check=True)
    assert check["changed"] is True
    assert not dest.exists()
    assert os.listdir(dest.parent) == []

    real = playbook.run("acme_hk_report", args)
    assert real["changed"] is True
    assert real["rows"] == 6
    assert real["checksum"] == check["checksum"]
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    assert real["columns"][:3] == ["certificate.id", "certificate.name", "certificate.serial"]

    again = playbook.run("acme_hk_report", args)
    assert again["changed"] is False
    assert os.listdir(dest.parent) == ["certificates.csv"]

    check_again = playbook.run("acme_hk_report", args, check=True)
    assert check_again["changed"] is False


def test_report_changes_after_cleanup(example_db, playbook, tmp_path):
    dest = tmp_path / "accounts.json"
    args = {"database": str(example_db), "report": "accounts", "format": "json", "nested": True, "dest": str(dest)}
    first = playbook.run("acme_hk_report", args)
    playbook.run("acme_hk_invalidate", {"database": str(example_db), "now": NOW})
    second = playbook.run("acme_hk_report", args)
    assert first["checksum"] != second["checksum"]
    assert second["changed"] is True


def test_report_mode_option(example_db, playbook, tmp_path):
    dest = tmp_path / "certificates.json"
    result = playbook.run(
        "acme_hk_report",
        {"database": str(example_db), "report": "certificates", "format": "json", "dest": str(dest), "mode": "0640"},
    )
    assert result["changed"] is True
    assert oct(dest.stat().st_mode & 0o777) == "0o640"


def test_info_reports_pending_work(example_db, playbook):
    before = _sha256(example_db)
    info = playbook.run("acme_hk_info", {"database": str(example_db), "now": NOW})
    assert info["changed"] is False
    assert info["dbversion"] == "0.15"
    assert info["handler"] == "wsgi"
    assert info["row_counts"]["challenge"] == 35
    assert info["pending"] == {
        "orders": 9,
        "authorizations": 18,
        "certificate_dates": 0,
        "certificates": 6,
        "certificates_purge": 6,
        "nonces": 13,
    }
    assert info["cutoff"] == NOW_EPOCH
    assert _sha256(example_db) == before


def test_module_defaults_group(example_db, playbook, tmp_path):
    playbook_file = tmp_path / "group.yml"
    playbook_file.write_text(
        "- hosts: localhost\n"
        "  gather_facts: false\n"
        "  module_defaults:\n"
        "    group/acmeops.housekeeping.acme_hk:\n"
        f"      database: {example_db}\n"
        f"      now: '{NOW}'\n"
        "  tasks:\n"
        "    - name: Read facts with the database from module_defaults\n"
        "      acmeops.housekeeping.acme_hk_info:\n"
        "      register: facts\n"
        "    - name: Check the pending orders\n"
        "      ansible.builtin.assert:\n"
        "        that: facts.pending.orders == 9\n"
    )
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    completed = subprocess.run(
        [shutil.which("ansible-playbook") or "ansible-playbook", "-i", "localhost,", "-c", "local", str(playbook_file)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_info_reads_status_file(example_db, playbook, tmp_path):
    status = tmp_path / "status.json"
    status.write_text('{"state": "ok", "last_finish": "2026-12-04T01:00:00Z", "counts": {"orders": 3}}')
    info = playbook.run("acme_hk_info", {"database": str(example_db), "status_file": str(status)})
    assert info["scheduled_run"]["state"] == "ok"
    assert info["scheduled_run"]["counts"] == {"orders": 3}

    missing = playbook.run("acme_hk_info", {"database": str(example_db), "status_file": str(tmp_path / "none.json")})
    assert missing["scheduled_run"] is None

    status.write_text("[1, 2")
    broken = playbook.run("acme_hk_info", {"database": str(example_db), "status_file": str(status)}, expect_failure=True)
    assert str(status) in broken["msg"]

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Files that a killed run leaves beside dest and the database, and how many backups stay."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from hk_support import (NOW, DAY, BulkShape, build_bulk_database, files_open_in, integrity, op, run_ops,
                        start_runner)


def _poll_until(predicate, timeout: float = 60, interval: float = 0.0005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@pytest.fixture(scope="module")
def bulk_db(tmp_path_factory) -> Path:
    return build_bulk_database(tmp_path_factory.mktemp("leftovers") / "bulk.db", BulkShape(orders=1500, nonces=500))


def _copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "acme_srv.db"
    shutil.copyfile(source, target)
    return target


def _kill_when_present(ops: List[Dict[str, Any]], folder: Path, matches) -> List[str]:
    """Run ops, SIGKILL the runner as soon as it has a matching file open in folder, or one is named there.

    Returns what was seen at the moment of the kill.
    """
    runner = start_runner(ops)
    seen: List[str] = []

    def present() -> bool:
        names = [name for name in os.listdir(folder) if matches(name)]
        names += [os.path.basename(target) for target in files_open_in(runner.pid, folder) if matches(target)]
        seen[:] = names
        return bool(names) or runner.process.poll() is not None

    assert _poll_until(present), "no matching file appeared within 60 s"
    assert runner.process.poll() is None, f"the run ended before the kill: {runner.finish()}"
    runner.kill()
    return seen


def _report_ops(database: Path, dest: Path) -> List[Dict[str, Any]]:
    return [op("report", database, {"batch_size": 50}, report="accounts", report_format="json", nested=True,
               dest=str(dest))]


def _cleanup_report_ops(database: Path, dest: Path) -> List[Dict[str, Any]]:
    return [op("cleanup", database, {"batch_size": 50}, targets=["certificates"], purge=True,
               report_dest=str(dest), report_format="json")]


@pytest.mark.parametrize("build_ops", [_report_ops, _cleanup_report_ops], ids=["report-dest", "cleanup-report-dest"])
def test_killed_report_leaves_no_temp_file(build_ops, bulk_db, tmp_path):
    database = _copy(bulk_db, tmp_path / "db")
    reports = tmp_path / "reports"
    reports.mkdir()
    dest = reports / "report.json"
    before = sorted(os.listdir(reports))

    # The report file is open without a name (O_TMPFILE) or under a hidden temporary name.
    seen = _kill_when_present(build_ops(database, dest), reports,
                              lambda name: name.endswith(".tmp") or name.endswith(" (deleted)"))

    assert seen, "the kill did not come while the report was written"
    assert not dest.exists(), "dest appeared although the run was killed before it finished"
    assert sorted(os.listdir(reports)) == before


def test_killed_backup_leaves_no_partial_backup(bulk_db, tmp_path):
    """A partial backup never carries the .bak name, and the next backup removes it.

    SQLite's backup API needs a named target file, so the copy in progress has a hidden
    '.<database>.<time>.<pid>.bak.tmp' name that SIGKILL leaves behind.
    """
    database = _copy(bulk_db, tmp_path / "db")
    ops = [op("cleanup", database, {"batch_size": 50}, targets=["certificates"], purge=True, backup=True)]

    seen = _kill_when_present(ops, database.parent, lambda name: name.endswith(".bak.tmp"))

    assert seen, "the kill did not come while the backup was written"
    left = sorted(os.listdir(database.parent))
    assert not [name for name in left if name.endswith(".bak")], f"a partial backup has the .bak name: {left}"
    assert integrity(database) == "ok"

    rerun = run_ops(ops)[0]

    backup = Path(rerun["backup_file"])
    assert sorted(os.listdir(database.parent)) == sorted([database.name, backup.name])
    assert integrity(backup) == "ok"


def test_killed_write_journal_removed_by_next_open(bulk_db, tmp_path):
    """SIGKILL in a write transaction leaves SQLite's hot journal, which the next connection rolls back.

    The journal is SQLite's own recovery file and must not be deleted by anyone else. The
    server's next request, or the next housekeeping run, rolls it back and removes it.
    """
    database = _copy(bulk_db, tmp_path / "db")
    ops = [op("invalidate", database, {"batch_size": 20}, targets=["orders", "authorizations"])]
    runner = start_runner(ops, pause=(3, 1))
    assert runner.wait_for("paused ") is not None
    runner.kill()
    assert sorted(os.listdir(database.parent)) == [database.name, f"{database.name}-journal"]

    rerun = run_ops(ops)[0]

    assert rerun["orders"]["count"] > 0
    assert sorted(os.listdir(database.parent)) == [database.name]
    assert integrity(database) == "ok"


def _add_expired_certificate(database: Path, name: str) -> None:
    connection = sqlite3.connect(database)
    try:
        order = connection.execute(
            "SELECT min(orders.id) FROM orders JOIN account ON account.id = orders.account_id").fetchone()[0]
        connection.execute(
            "INSERT INTO certificate (name, cert, cert_raw, order_id, csr, issue_uts, expire_uts) "
            "VALUES (?, 'cert', 'raw', ?, 'csr', ?, ?)", (name, order, NOW - 90 * DAY, NOW - DAY))
        connection.commit()
    finally:
        connection.close()


def test_backup_retention(example_db, playbook):
    backups = []
    for run in range(3):
        # A backup is made only before a change, so each run gets a certificate to delete.
        _add_expired_certificate(example_db, f"retention{run}")
        result = playbook.run("acme_hk_cleanup", {
            "database": str(example_db), "now": NOW, "targets": ["certificates"], "purge": True,
            "backup": True, "backup_keep": 2,
        })
        backups.append(os.path.basename(result["backup_file"]))
        time.sleep(1.1)  # Backup names carry the time in whole seconds.

    left = sorted(name for name in os.listdir(example_db.parent) if name.endswith(".bak"))
    assert left == sorted(backups[-2:])

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reports, backups and journals on a full file system (a small tmpfs, so these tests need root).

Every case must fail the task with a message that names the file and the full device, leave
no partial file, and leave the database unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import database_snapshot
from hk_support import NOW, free_bytes, tmpfs

NOW_ISO = "2026-12-04T00:00:00Z"


class Fingerprint:
    """Rows and bytes of the database before a run."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.rows = database_snapshot(database)
        self.digest = hashlib.sha256(database.read_bytes()).hexdigest()

    def assert_unchanged(self) -> None:
        assert database_snapshot(self.database) == self.rows
        assert hashlib.sha256(self.database.read_bytes()).hexdigest() == self.digest


def _fails(playbook, module: str, args: Dict[str, Any], *needles: str) -> str:
    result = playbook.run(module, args, expect_failure=True)
    message = result["msg"]
    for needle in needles:
        assert needle in message, f"{needle!r} missing from: {message}"
    for crash in ("Traceback", "MODULE FAILURE", "Module failed"):
        assert crash not in message, f"the module crashed instead of failing clearly: {message}"
    assert result.get("changed", False) is False
    return message


@pytest.mark.parametrize("old_report", [False, True], ids=["new-dest", "existing-dest"])
def test_report_dest_disk_full(playbook, example_db, tmp_path, old_report):
    with tmpfs(tmp_path / "tiny", "64k") as tiny:
        dest = tiny / "accounts.json"
        if old_report:
            dest.write_text("[]", encoding="utf-8")
        filler = tiny / "filler"
        filler.write_bytes(b"\0" * max(free_bytes(tiny) - 8192, 0))
        before = Fingerprint(example_db)

        _fails(playbook, "acme_hk_report",
               {"database": str(example_db), "report": "accounts", "format": "json", "nested": True,
                "dest": str(dest)},
               str(dest), "No space left")

        assert sorted(os.listdir(tiny)) == (["accounts.json", "filler"] if old_report else ["filler"])
        if old_report:
            assert dest.read_text(encoding="utf-8") == "[]"
        before.assert_unchanged()


def test_cleanup_report_dest_disk_full(playbook, example_db, tmp_path):
    with tmpfs(tmp_path / "tiny", "64k") as tiny:
        (tiny / "filler").write_bytes(b"\0" * max(free_bytes(tiny) - 4096, 0))
        report = tiny / "removed.csv"
        before = Fingerprint(example_db)

        _fails(playbook, "acme_hk_cleanup",
               {"database": str(example_db), "now": NOW_ISO, "purge": True, "report_dest": str(report)},
               str(report), "No space left")

        assert sorted(os.listdir(tiny)) == ["filler"]
        before.assert_unchanged()


def test_invalidate_report_dir_disk_full(playbook, example_db, tmp_path):
    with tmpfs(tmp_path / "tiny", "64k") as tiny:
        (tiny / "filler").write_bytes(b"\0" * max(free_bytes(tiny) - 512, 0))
        before = Fingerprint(example_db)

        _fails(playbook, "acme_hk_invalidate",
               {"database": str(example_db), "now": NOW_ISO, "report_dir": str(tiny), "report_format": "json"},
               str(tiny), "No space left")

        assert sorted(os.listdir(tiny)) == ["filler"]
        before.assert_unchanged()


def _database_on_tiny_fs(example_db: Path, folder: Path, spare: int) -> Path:
    """Copy the example database onto the tmpfs at folder and fill it up to spare free bytes."""
    database = folder / "acme_srv.db"
    shutil.copyfile(example_db, database)
    database.chmod(0o644)
    (folder / "filler").write_bytes(b"\0" * max(free_bytes(folder) - spare, 0))
    return database


def test_backup_disk_full_changes_nothing(playbook, example_db, tmp_path):
    size = example_db.stat().st_size
    with tmpfs(tmp_path / "tiny", f"{size // 1024 + 256}k") as tiny:
        # Room for the journal of the cleanup, but not for a full copy of the database.
        database = _database_on_tiny_fs(example_db, tiny, size // 2)
        before = Fingerprint(database)

        result = playbook.run("acme_hk_cleanup",
                              {"database": str(database), "now": NOW_ISO, "purge": True, "backup": True},
                              expect_failure=True)

        assert result.get("changed", False) is False
        assert sorted(os.listdir(tiny)) == ["acme_srv.db", "filler"]
        before.assert_unchanged()


def test_backup_disk_full_message(playbook, example_db, tmp_path):
    size = example_db.stat().st_size
    with tmpfs(tmp_path / "tiny", f"{size // 1024 + 256}k") as tiny:
        database = _database_on_tiny_fs(example_db, tiny, size // 2)
        _fails(playbook, "acme_hk_cleanup",
               {"database": str(database), "now": NOW_ISO, "purge": True, "backup": True},
               str(database), "backup", "full")


def test_journal_disk_full(playbook, example_db, tmp_path):
    """SQLite cannot grow its journal: the write fails, is rolled back, and nothing changes."""
    with tmpfs(tmp_path / "tiny", "256k") as tiny:
        database = _database_on_tiny_fs(example_db, tiny, 0)
        before = Fingerprint(database)

        message = _fails(playbook, "acme_hk_cleanup",
                         {"database": str(database), "now": NOW, "purge": True, "targets": ["certificates", "nonces"]},
                         str(database), "full")

        assert "disk" in message or "space" in message
        assert sorted(os.listdir(tiny)) == ["acme_srv.db", "filler"]
        before.assert_unchanged()

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bad databases, paths and options through real ansible-playbook runs.

Every case must end in one failed task whose message names the bad value and the fix, with the
database unchanged (rows and bytes) and no SQLite journal left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from conftest import database_snapshot, table_rows

NOW = "2026-12-04T00:00:00Z"
MODULES = ("acme_hk_cleanup", "acme_hk_invalidate", "acme_hk_info", "acme_hk_report")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _side_files(database: Path) -> list:
    return sorted(name for name in os.listdir(database.parent)
                  if name.startswith(database.name + "-") or name.endswith(("-journal", "-wal", "-shm")))


def _args(module: str, database: Path, **extra: Any) -> Dict[str, Any]:
    args: Dict[str, Any] = {"database": str(database)}
    if module != "acme_hk_report":
        args["now"] = NOW
    else:
        args.update(report="accounts", return_content=True)
    args.update(extra)
    return args


class Fingerprint:
    """Rows and bytes of a database file before a run, to prove the run changed nothing."""

    def __init__(self, database: Path, rows: bool = True) -> None:
        self.database = database
        self.rows = database_snapshot(database) if rows else None
        self.digest = _sha256(database)

    def assert_unchanged(self) -> None:
        if self.rows is not None:
            assert database_snapshot(self.database) == self.rows
        assert _sha256(self.database) == self.digest
        assert _side_files(self.database) == []


def _fails(playbook, module: str, args: Dict[str, Any], *needles: str, check: bool = False) -> str:
    """Run a task that must fail and check that its message contains every needle."""
    result = playbook.run(module, args, check=check, expect_failure=True)
    message = result["msg"]
    for needle in needles:
        assert needle in message, f"{needle!r} missing from: {message}"
    assert result.get("changed", False) is False
    return message


# Database file problems -------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES)
def test_missing_database(playbook, tmp_path, module):
    missing = tmp_path / "no-such" / "acme_srv.db"
    (tmp_path / "no-such").mkdir()
    _fails(playbook, module, _args(module, missing), str(missing), "does not exist", "database")
    assert not missing.exists()
    assert os.listdir(tmp_path / "no-such") == []


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_report"])
def test_database_is_directory(playbook, tmp_path, module):
    folder = tmp_path / "acme_srv.db"
    folder.mkdir()
    _fails(playbook, module, _args(module, folder), str(folder), "is a directory", "acme_srv_dir")
    assert os.listdir(folder) == []


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_invalidate", "acme_hk_report"])
def test_empty_file(playbook, tmp_path, module):
    empty = tmp_path / "acme_srv.db"
    empty.write_bytes(b"")
    _fails(playbook, module, _args(module, empty), str(empty), "no acme2certifier tables", "database option")
    assert empty.read_bytes() == b""
    assert _side_files(empty) == []


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_info"])
def test_text_file(playbook, tmp_path, module):
    text = tmp_path / "acme_srv.db"
    text.write_text("[DBhandler]\ndbfile: /var/www/acme2certifier/acme_srv.db\n", encoding="utf-8")
    before = Fingerprint(text, rows=False)
    _fails(playbook, module, _args(module, text), str(text), "not an SQLite database", "acme_srv.db")
    before.assert_unchanged()


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_report"])
def test_truncated_file(playbook, example_db, module):
    data = example_db.read_bytes()
    example_db.write_bytes(data[: len(data) // 2])
    before = Fingerprint(example_db, rows=False)
    _fails(playbook, module, _args(module, example_db), str(example_db), "integrity_check")
    before.assert_unchanged()


def test_foreign_sqlite(playbook, tmp_path):
    other = tmp_path / "app.sqlite"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    connection.execute("INSERT INTO users (name) VALUES ('alice')")
    connection.commit()
    connection.close()
    before = Fingerprint(other)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", other), str(other),
           "no acme2certifier tables", "database option")
    before.assert_unchanged()


def test_missing_table(playbook, example_db):
    connection = sqlite3.connect(example_db)
    connection.execute("DROP TABLE nonce")
    connection.commit()
    connection.close()
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", example_db), str(example_db), "nonce")
    before.assert_unchanged()


@pytest.mark.parametrize("module", ["acme_hk_invalidate", "acme_hk_cleanup"])
def test_missing_column(playbook, example_db, module):
    connection = sqlite3.connect(example_db)
    connection.execute("ALTER TABLE orders DROP COLUMN expires")
    connection.commit()
    connection.close()
    before = Fingerprint(example_db)
    _fails(playbook, module, _args(module, example_db), "orders", "expires", "schema update")
    before.assert_unchanged()


@contextlib.contextmanager
def _exclusive_lock(database: Path) -> Iterator[None]:
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_invalidate", "acme_hk_report"])
def test_locked_database(playbook, example_db, module):
    before = Fingerprint(example_db)
    with _exclusive_lock(example_db):
        _fails(playbook, module, _args(module, example_db, busy_timeout=0.5), str(example_db),
               "busy_timeout=0.5", "Retry later")
    before.assert_unchanged()


def _read_only_tree(tmp_path: Path, example_db: Path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    database = folder / "acme_srv.db"
    shutil.copyfile(example_db, database)
    database.chmod(0o444)
    folder.chmod(0o555)
    return database


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for path in (tmp_path / "ro", tmp_path / "ro" / "acme_srv.db"):
        if path.exists():
            path.chmod(0o755)


def test_read_only_mode_bits(playbook, tmp_path, example_db, restore_modes):
    database = _read_only_tree(tmp_path, example_db)
    if os.access(database, os.W_OK):
        pytest.skip("this user can write a 0444 file in a 0555 directory (root ignores permission "
                    "bits), so permission bits cannot make the database read-only. The "
                    "immutable-attribute tests cover read-only databases instead")
    before = Fingerprint(database)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", database), str(database),
           "read-only", "become_user", "check mode")
    before.assert_unchanged()


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """Set the immutable attribute, which even root cannot write through, or skip."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed, so the immutable attribute cannot be set")
    done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i failed ({done.stderr.strip()}), so the file system or the missing "
                    "CAP_LINUX_IMMUTABLE capability does not allow the immutable attribute")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_read_only_immutable_file(playbook, example_db):
    before = Fingerprint(example_db)
    with _immutable(example_db):
        _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db), str(example_db),
               "read-only", "become_user", "check mode")
        checked = playbook.run("acme_hk_cleanup", _args("acme_hk_cleanup", example_db), check=True)
    assert checked["certificates"]["count"] == 6
    before.assert_unchanged()


def test_read_only_immutable_dir(playbook, example_db, tmp_path):
    folder = tmp_path / "immutable-dir"
    folder.mkdir()
    database = folder / "acme_srv.db"
    shutil.copyfile(example_db, database)
    before = Fingerprint(database)
    with _immutable(folder):
        _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", database), str(database),
               "directory", "journal", "become_user")
    before.assert_unchanged()


# Report destinations ----------------------------------------------------------------------


@pytest.mark.parametrize("check", [False, True])
def test_dest_missing_directory(playbook, example_db, tmp_path, check):
    dest = tmp_path / "missing-dir" / "accounts.csv"
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_report", {"database": str(example_db), "report": "accounts", "dest": str(dest)},
           str(tmp_path / "missing-dir"), "Create", check=check)
    assert not (tmp_path / "missing-dir").exists()
    before.assert_unchanged()


@pytest.mark.parametrize("check", [False, True])
def test_report_dest_missing_directory(playbook, example_db, tmp_path, check):
    report = tmp_path / "missing-dir" / "removed.csv"
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, report_dest=str(report)),
           str(tmp_path / "missing-dir"), "Create", check=check)
    assert not (tmp_path / "missing-dir").exists()
    before.assert_unchanged()


@pytest.mark.parametrize("check", [False, True])
def test_report_dest_is_directory(playbook, example_db, tmp_path, check):
    report = tmp_path / "reports"
    report.mkdir()
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, report_dest=str(report)),
           str(report), "is a directory", "report file", check=check)
    assert os.listdir(report) == []
    before.assert_unchanged()


def test_dest_is_directory(playbook, example_db, tmp_path):
    dest = tmp_path / "reports"
    dest.mkdir()
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_report", {"database": str(example_db), "report": "accounts", "dest": str(dest)},
           str(dest), "is a directory", str(dest / "accounts.csv"))
    assert os.listdir(dest) == []
    before.assert_unchanged()


def test_report_dest_without_certificates(playbook, example_db, tmp_path):
    report = tmp_path / "removed.csv"
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup",
           _args("acme_hk_cleanup", example_db, targets=["nonces"], report_dest=str(report)),
           "report_dest", "'certificates'", "targets")
    assert not report.exists()
    before.assert_unchanged()


def test_nested_with_csv(playbook, example_db, tmp_path):
    dest = tmp_path / "accounts.csv"
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_report",
           {"database": str(example_db), "report": "accounts", "format": "csv", "nested": True, "dest": str(dest)},
           "nested", "format=csv", "format=json")
    assert not dest.exists()
    before.assert_unchanged()


# Option values ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_invalidate", "acme_hk_info"])
def test_invalid_now(playbook, example_db, module):
    before = Fingerprint(example_db)
    _fails(playbook, module, _args(module, example_db, now="yesterday"),
           "'yesterday'", "2026-12-04T00:00:00Z")
    before.assert_unchanged()


@pytest.mark.parametrize("value", [-5, "-72h"])
def test_negative_grace_period(playbook, example_db, value):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, grace_period=value),
           "grace_period", repr(value), "negative", "72h")
    before.assert_unchanged()


def test_unknown_grace_unit(playbook, example_db):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", example_db, grace_period="72x"),
           "grace_period", "'72x'", "72h")
    before.assert_unchanged()


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_report"])
def test_batch_size_zero(playbook, example_db, module):
    before = Fingerprint(example_db)
    _fails(playbook, module, _args(module, example_db, batch_size=0), "batch_size", "0", "at least 1")
    before.assert_unchanged()


def test_unknown_target(playbook, example_db):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, targets=["certificates", "bogus"]),
           "targets", "bogus", "certificate_dates")
    before.assert_unchanged()


# Schema version ---------------------------------------------------------------------------


def _set_dbversion(database: Path, version: str) -> None:
    connection = sqlite3.connect(database)
    connection.execute("UPDATE housekeeping SET value = ? WHERE name = 'dbversion'", (version,))
    connection.commit()
    connection.close()


@pytest.mark.parametrize("module, extra", [
    ("acme_hk_cleanup", {}),
    ("acme_hk_cleanup", {"targets": ["nonces"]}),
    ("acme_hk_invalidate", {}),
])
def test_newer_dbversion_refused(playbook, example_db, module, extra):
    _set_dbversion(example_db, "0.47")
    before = Fingerprint(example_db)
    _fails(playbook, module, _args(module, example_db, **extra), "0.47", "0.46", "force=true")
    before.assert_unchanged()


def test_newer_dbversion_check_mode(playbook, example_db):
    _set_dbversion(example_db, "0.47")
    before = Fingerprint(example_db)
    result = playbook.run("acme_hk_invalidate", _args("acme_hk_invalidate", example_db), check=True)
    assert result["orders"]["count"] == 9
    before.assert_unchanged()


def test_newer_dbversion_force(playbook, example_db):
    _set_dbversion(example_db, "0.47")
    result = playbook.run("acme_hk_invalidate", _args("acme_hk_invalidate", example_db, force=True))
    assert result["changed"] is True
    assert result["orders"]["count"] == 9
    assert result["authorizations"]["count"] == 18
    assert _side_files(example_db) == []


def test_newer_dbversion_report(playbook, example_db):
    _set_dbversion(example_db, "1.0")
    result = playbook.run("acme_hk_report", _args("acme_hk_report", example_db))
    assert result["rows"] == 35


# Paths with spaces and non-ASCII characters -----------------------------------------------


def test_unusual_paths(playbook, example_db, tmp_path):
    root = tmp_path / "acme dir ünï cödé"
    (root / "acme_srv").mkdir(parents=True)
    database = root / "acme_srv" / "acme srv ö.db"
    shutil.copyfile(example_db, database)
    (root / "acme_srv" / "acme_srv.cfg").write_text(
        f"[DBhandler]\ndbfile: {database}\n[Nonce]\nvalidity: 3600\n", encoding="utf-8")
    dest = root / "report ü.csv"
    report_dest = root / "entfernt ß.json"

    info = playbook.run("acme_hk_info", {"acme_srv_dir": str(root), "now": NOW})
    report = playbook.run("acme_hk_report", {"acme_srv_dir": str(root), "report": "certificates", "dest": str(dest)})
    cleanup = playbook.run("acme_hk_cleanup", {
        "acme_srv_dir": str(root), "now": NOW, "targets": ["certificates", "nonces"],
        "report_dest": str(report_dest), "report_format": "json",
    })

    assert info["database"] == str(database)
    assert info["nonce_validity"] == 3600
    assert report["changed"] is True
    assert dest.read_bytes().startswith(b'"certificate.id"')
    assert cleanup["certificates"]["count"] == 6
    assert cleanup["nonces"]["count"] == 13
    assert report_dest.is_file()
    assert _side_files(database) == []


@pytest.mark.parametrize("folder_name", ["data with space/日本", "q?x#y %41 & 'it'"])
def test_unusual_paths_database_option(playbook, example_db, tmp_path, folder_name):
    folder = tmp_path / folder_name
    folder.mkdir(parents=True)
    database = folder / "a2c db.sqlite"
    shutil.copyfile(example_db, database)
    result = playbook.run("acme_hk_invalidate", {"database": str(database), "now": NOW}, check=True)
    assert result["database"] == str(database)
    assert result["orders"]["count"] == 9


# More database files ----------------------------------------------------------------------


@pytest.mark.parametrize("module", ["acme_hk_cleanup", "acme_hk_report"])
def test_symlink_loop_database(playbook, tmp_path, module):
    loop = tmp_path / "acme_srv.db"
    other = tmp_path / "other.db"
    loop.symlink_to(other)
    other.symlink_to(loop)
    _fails(playbook, module, _args(module, loop), str(loop), "symbolic link loop", "real file")
    assert sorted(os.listdir(tmp_path)) == ["acme_srv.db", "other.db", "play"]


def test_dangling_symlink_database(playbook, tmp_path):
    link = tmp_path / "acme_srv.db"
    link.symlink_to(tmp_path / "gone" / "acme_srv.db")
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", link), str(link), "does not exist")
    assert not (tmp_path / "gone").exists()


def test_fifo_database(playbook, tmp_path):
    fifo = tmp_path / "acme_srv.db"
    os.mkfifo(fifo)
    finished = threading.Event()

    def unblock() -> None:
        # Let a hanging module go after 15 s: opening the FIFO for writing ends its open().
        if finished.wait(15):
            return
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    guard = threading.Thread(target=unblock, daemon=True)
    guard.start()
    try:
        started = time.monotonic()
        _fails(playbook, "acme_hk_info", _args("acme_hk_info", fifo), str(fifo), "not a regular file")
        assert time.monotonic() - started < 15
    finally:
        finished.set()
        guard.join()


def test_corrupt_pages(playbook, example_db):
    data = bytearray(example_db.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page in (5, 10, 20):
        data[page * page_size:(page + 1) * page_size] = bytes(range(256)) * (page_size // 256)
    example_db.write_bytes(bytes(data))
    before = Fingerprint(example_db, rows=False)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, targets=["certificates", "nonces"]),
           str(example_db), "malformed", "integrity_check")
    before.assert_unchanged()


@contextlib.contextmanager
def _write_lock(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock (RESERVED) like a server request in the middle of a write."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE nonce SET nonce = nonce WHERE id = (SELECT min(id) FROM nonce)")
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def test_write_locked_database(playbook, example_db):
    """Reads work under another writer's lock, so the run gets as far as its first write, then gives up."""
    before = Fingerprint(example_db)
    with _write_lock(example_db):
        _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, busy_timeout=0.5),
               str(example_db), "busy_timeout=0.5", "Retry later")
    before.assert_unchanged()


# Status table and rows with bad values ----------------------------------------------------


def _sql(database: Path, *statements: str) -> None:
    connection = sqlite3.connect(database)
    try:
        for statement in statements:
            connection.execute(statement)
        connection.commit()
    finally:
        connection.close()


@pytest.mark.parametrize("status", [
    "invalid",
    "expired",
])
def test_missing_status_row(playbook, example_db, status):
    _sql(example_db, f"DELETE FROM status WHERE name = '{status}'")
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", example_db),
           f"'{status}'", "status table", "schema update")
    before.assert_unchanged()


def _skipped(result: Dict[str, Any], table: str, row_id: int) -> Dict[str, Any]:
    found = [item for item in result["skipped_rows"] if item["table"] == table and item["id"] == row_id]
    assert found, f"{table} row {row_id} is not listed in skipped: {result['skipped']}"
    return found[0]


def test_malformed_cert_raw_reported(playbook, example_db):
    _sql(example_db, "UPDATE certificate SET expire_uts = 0, issue_uts = 0, cert = NULL, "
                     "cert_raw = 'not a certificate!' WHERE id = (SELECT max(id) FROM certificate)")
    row_id = table_rows(example_db, "certificate")[-1][0]
    row = [item for item in table_rows(example_db, "certificate") if item[0] == row_id]

    result = playbook.run("acme_hk_cleanup", _args("acme_hk_cleanup", example_db, targets=["certificate_dates",
                                                                                           "certificates"]))

    assert "cert_raw cannot be parsed" in _skipped(result, "certificate", row_id)["reason"]
    assert any("could not be processed" in warning for warning in result.get("warnings", []))
    assert [item for item in table_rows(example_db, "certificate") if item[0] == row_id] == row


@pytest.mark.parametrize("table, column, module", [
    ("orders", "expires", "acme_hk_invalidate"),
    ("authorization", "expires", "acme_hk_invalidate"),
    ("certificate", "expire_uts", "acme_hk_cleanup"),
])
def test_text_in_integer_column_reported(playbook, example_db, table, column, module):
    _sql(example_db, f'UPDATE "{table}" SET {column} = \'soon\' WHERE id = (SELECT min(id) FROM "{table}")')
    row = table_rows(example_db, table)[0]

    result = playbook.run(module, _args(module, example_db))

    reason = _skipped(result, table, row[0])["reason"]
    for needle in ("'soon'", column, "Unix time"):
        assert needle in reason, f"{needle!r} missing from: {reason}"
    assert table_rows(example_db, table)[0] == row


@pytest.mark.parametrize("table, statement, module, needle", [
    ("certificate", "UPDATE certificate SET expire_uts = NULL WHERE id = {id}", "acme_hk_cleanup", "expire_uts is NULL"),
    ("nonce", "UPDATE nonce SET created_at = 'yesterday' WHERE id = {id}", "acme_hk_cleanup",
     "created_at 'yesterday' is not a date"),
    ("authorization", 'UPDATE "authorization" SET status_id = 99, expires = 1 WHERE id = {id}', "acme_hk_invalidate",
     "status_id 99 has no row"),
], ids=["certificate-null-expire", "nonce-text-created", "authorization-unknown-status"])
def test_unjudgeable_row_reported(playbook, example_db, table, statement, module, needle):
    row_id = table_rows(example_db, table)[0][0]
    _sql(example_db, statement.format(id=row_id))
    row = table_rows(example_db, table)[0]

    result = playbook.run(module, _args(module, example_db, targets=["certificates", "nonces"])
                          if module == "acme_hk_cleanup" else _args(module, example_db))

    reason = _skipped(result, table, row_id)["reason"]
    assert needle in reason, f"{needle!r} missing from: {reason}"
    assert table_rows(example_db, table)[0] == row


def test_unknown_order_status_invalidated(playbook, example_db):
    """Orders whose status id has no status row are invalidated, as acme2certifier 0.46.3 does."""
    _sql(example_db, "UPDATE orders SET status_id = 99, expires = 1 WHERE id = (SELECT min(id) FROM orders)")
    row_id = table_rows(example_db, "orders")[0][0]

    result = playbook.run("acme_hk_invalidate", _args("acme_hk_invalidate", example_db))

    assert result["orders"]["count"] == 9
    status = [row for row in table_rows(example_db, "orders") if row[0] == row_id][0]
    assert 1 in status  # status_id of 'invalid'


# Report destinations that cannot be written -----------------------------------------------


@pytest.mark.parametrize("module", ["acme_hk_report", "acme_hk_cleanup", "acme_hk_invalidate"])
def test_dest_read_only_directory(playbook, example_db, tmp_path, module):
    folder = tmp_path / "reports"
    folder.mkdir()
    if module == "acme_hk_report":
        args = {"database": str(example_db), "report": "accounts", "dest": str(folder / "accounts.csv")}
    elif module == "acme_hk_cleanup":
        args = _args(module, example_db, report_dest=str(folder / "removed.csv"))
    else:
        args = _args(module, example_db, report_dir=str(folder))
    before = Fingerprint(example_db)
    with _immutable(folder):
        _fails(playbook, module, args, str(folder), "not writable", "permissions")
    assert os.listdir(folder) == []
    before.assert_unchanged()


# More option values -----------------------------------------------------------------------


@pytest.mark.parametrize("value, needle", [
    ("2026-02-30T00:00:00Z", "day is out of range"),
    ("12/04/2026", "'12/04/2026'"),
    (True, "True"),
])
def test_invalid_now_values(playbook, example_db, value, needle):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, now=value),
           "Invalid value for now", needle, "ISO 8601")
    before.assert_unchanged()


@pytest.mark.parametrize("value", ["1.5d", "3 days", True])
def test_invalid_grace_period_values(playbook, example_db, value):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", example_db, grace_period=value),
           "Invalid value for grace_period", repr(value), "72h")
    before.assert_unchanged()


@pytest.mark.parametrize("value, needles", [
    (-1, ("batch_size", "-1", "at least 1")),
    ("many", ("batch_size", "many", "int")),
    (2.5, ("batch_size", "2.5", "int")),
])
def test_invalid_batch_size_values(playbook, example_db, value, needles):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_cleanup", _args("acme_hk_cleanup", example_db, batch_size=value), *needles)
    before.assert_unchanged()


@pytest.mark.parametrize("option, value, needles", [
    ("batch_time", -1, ("Invalid value for batch_time", "-1", "from 0", "0.05")),
    ("batch_time", 30, ("Invalid value for batch_time", "30", "to 10")),
    ("batch_time", "fast", ("batch_time", "convert to float")),
    ("batch_pause", -0.5, ("Invalid value for batch_pause", "-0.5", "from 0", "0.01")),
    ("batch_pause", "nan", ("Invalid value for batch_pause", "nan", "from 0")),
    ("batch_pause", "soon", ("batch_pause", "convert to float")),
])
def test_invalid_batch_seconds(playbook, example_db, option, value, needles):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", example_db, **{option: value}), *needles)
    before.assert_unchanged()


def test_negative_busy_timeout(playbook, example_db):
    before = Fingerprint(example_db)
    _fails(playbook, "acme_hk_invalidate", _args("acme_hk_invalidate", example_db, busy_timeout=-1),
           "busy_timeout", "-1", "0 or more")
    before.assert_unchanged()


@pytest.mark.parametrize("module, targets, needles", [
    ("acme_hk_cleanup", [], ("targets", "[]", "certificate_dates")),
    ("acme_hk_invalidate", ["nonces"], ("targets", "nonces", "orders, authorizations")),
])
def test_invalid_targets(playbook, example_db, module, targets, needles):
    before = Fingerprint(example_db)
    _fails(playbook, module, _args(module, example_db, targets=targets), *needles)
    before.assert_unchanged()

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke test of the benchmark harness on a tiny database; it checks results, never timings.

The full benchmark is `make bench`; docs/benchmarks.md has its numbers.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))

import generate  # noqa: E402  pylint: disable=wrong-import-position,import-error
import lockprobe  # noqa: E402  pylint: disable=wrong-import-position,import-error
import raw_limit  # noqa: E402  pylint: disable=wrong-import-position,import-error

WRITE_OPERATIONS = ("orders", "authorizations", "certificate_dates", "certificates_blank", "certificates_purge", "nonces")
REPORTS = ("report_accounts_csv", "report_accounts_json", "report_accounts_nested", "report_certificates_csv",
           "report_certificates_json")
ORDERS = 60


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """Run the benchmark on ORDERS orders: engine, raw and upstream for every operation, the module for two."""
    data_dir = tmp_path_factory.mktemp("bench")
    output = {}
    for name, extra in (
        ("direct", ["--methods", "engine,raw,upstream"]),
        ("module", ["--methods", "module", "--operations", "orders,report_accounts_nested", "--server-writer"]),
    ):
        out = data_dir / f"{name}.json"
        command = [sys.executable, str(BENCH / "run.py"), "--sizes", str(ORDERS), "--runs", "1", "--upstream-cap", "120",
                   "--data-dir", str(data_dir), "--out", str(out)] + extra
        completed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        assert completed.returncode == 0, completed.stderr[-3000:]
        output[name] = json.loads(out.read_text(encoding="utf-8"))
    output["data_dir"] = data_dir
    return output


def test_generated_row_counts(results):
    counts = results["direct"]["sizes"][0]["manifest"]["row_counts"]
    assert counts["orders"] == ORDERS
    assert counts["account"] == ORDERS // 10
    assert counts["authorization"] == 2 * ORDERS
    assert counts["challenge"] == 6 * ORDERS
    assert counts["certificate"] == ORDERS
    assert counts["nonce"] == ORDERS


def test_generated_schema_is_upstreams(results):
    database = results["direct"]["sizes"][0]["manifest"]["database"]
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        version = connection.execute("SELECT value FROM housekeeping WHERE name = 'dbversion'").fetchone()[0]
        statuses = [row[0] for row in connection.execute("SELECT name FROM status ORDER BY id")]
    finally:
        connection.close()
    assert version == "0.46"
    assert statuses == ["invalid", "pending", "ready", "processing", "valid", "expired", "deactivated", "revoked"]


def test_generated_certificate_fields(results):
    """serial, aki and renewal_info of a row equal what the engine's parser derives from it."""
    from _acmehk import x509  # pylint: disable=import-error,import-outside-toplevel

    database = results["direct"]["sizes"][0]["manifest"]["database"]
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT cert, cert_raw, serial, aki, renewal_info, issue_uts, expire_uts FROM certificate "
            "WHERE serial IS NOT NULL AND cert LIKE '-----BEGIN%' ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        connection.close()
    cert, cert_raw, serial, aki, renewal, issue, expire = row
    assert x509.serial_hex(cert_raw) == serial
    assert x509.aki_hex(cert_raw) == aki
    assert x509.renewal_info(cert) == renewal
    assert raw_limit.cert_renewal(cert) == renewal
    assert x509.cert_dates(cert_raw) == (issue, expire)


@pytest.mark.parametrize("operation", WRITE_OPERATIONS)
def test_methods_change_same_rows(results, operation):
    summary = results["direct"]["sizes"][0]["summary"][operation]
    assert summary["engine"]["errors"] == []
    assert summary["raw"]["errors"] == []
    assert summary["upstream"]["errors"] == []
    assert summary["engine"]["rows"] > 0
    assert summary["raw"]["rows"] == summary["engine"]["rows"]
    assert summary["upstream"]["rows"] == summary["engine"]["rows"]
    assert summary["engine"]["method_rows"] == summary["engine"]["rows"]


@pytest.mark.parametrize("operation", REPORTS)
def test_reports_have_rows(results, operation):
    summaries = results["direct"]["sizes"][0]["summary"]
    summary = summaries[operation]
    assert summary["engine"]["errors"] == []
    assert summary["engine"]["rows"] > 0
    if operation == "report_accounts_nested":
        # The file has one element per account; the engine counts the flat rows it grouped.
        assert summary["engine"]["rows"] == ORDERS // 10
        assert summary["engine"]["method_rows"] == summaries["report_accounts_csv"]["engine"]["rows"]
    else:
        assert summary["engine"]["method_rows"] == summary["engine"]["rows"]
    # The raw SELECT lists accounts without orders too, like the engine and unlike upstream.
    assert summary["raw"]["rows"] == summary["engine"]["rows"]
    assert summary["upstream"]["rows"] > 0


def test_measurements_complete(results):
    size = results["direct"]["sizes"][0]
    assert size["bare_interpreter_kib"] > 0
    for methods in size["summary"].values():
        for entry in methods.values():
            assert entry["median"] is not None
            assert entry["peak_rss_mib"] > 0
            assert entry["inside_max_lock_ms"] is not None


def test_module_runs(results):
    summary = results["module"]["sizes"][0]["summary"]
    assert summary["orders"]["module"]["errors"] == []
    assert summary["orders"]["module"]["rows"] == summary["orders"]["module"]["method_rows"]
    assert summary["orders"]["module"]["rows"] > 0
    assert summary["report_accounts_nested"]["module"]["rows"] == ORDERS // 10


def test_results_markdown_written(results):
    tables = list(Path(results["data_dir"]).glob("*.md"))
    assert tables
    assert "| orders |" in tables[0].read_text(encoding="utf-8")


def test_work_copies_removed(results):
    leftovers = [path for path in Path(results["data_dir"]).rglob("acme_srv.db") if "work-" in str(path)]
    assert leftovers == []


def _hold_lock(database: Path, statement: str, seconds: float) -> subprocess.Popen:
    script = (
        "import sqlite3, sys, time\n"
        f"connection = sqlite3.connect({str(database)!r}, isolation_level=None)\n"
        f"connection.execute({statement!r})\n"
        "connection.execute('SELECT count(*) FROM t').fetchone()\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "connection.execute('COMMIT')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)  # pylint: disable=consider-using-with
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.mark.parametrize("statement, write", [("BEGIN", False), ("BEGIN IMMEDIATE", True)], ids=["read", "write"])
def test_lock_probe_sees_lock(tmp_path, statement, write):
    database = tmp_path / "probe.db"
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    connection.close()

    probe = lockprobe.LockProbe(str(database), max_seconds=30)
    probe.start()
    time.sleep(0.05)
    holder = _hold_lock(database, statement, 0.3)
    assert holder.wait(timeout=30) == 0
    stretches = probe.stop()

    assert stretches["max_lock_ms"] >= 250
    if write:
        assert stretches["max_write_lock_ms"] >= 250
    else:
        assert stretches["max_write_lock_ms"] == 0


def test_generate_rejects_tiny_size(tmp_path):
    with pytest.raises(ValueError, match="at least 10"):
        generate.generate(5, str(tmp_path))


@pytest.mark.parametrize("operation", ["orders", "report_accounts_nested"])
def test_server_writer_recorded(results, operation):
    """With --server-writer every measurement records the server-like writes made during it."""
    measurements = [m for m in results["module"]["sizes"][0]["measurements"] if m["operation"] == operation]
    writer = measurements[0]["server_writer"]
    assert writer["writes"] > 0
    assert writer["error_count"] == 0
    assert writer["max_ms"] > 0
    summary = results["module"]["sizes"][0]["summary"][operation]["module"]
    assert summary["server_write_errors"] == 0

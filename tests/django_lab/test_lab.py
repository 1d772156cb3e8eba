# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke tests of the Django lab on PostgreSQL, MariaDB and SQLite.

Each backend gets the real acme2certifier 0.46.3 Django schema, a real
server run that fills it, and a run of upstream housekeeping that changes it.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends  # noqa: E402  pylint: disable=wrong-import-position
import schema  # noqa: E402  pylint: disable=wrong-import-position
import server  # noqa: E402  pylint: disable=wrong-import-position
import upstream  # noqa: E402  pylint: disable=wrong-import-position
# The fixtures are imported here and not in a conftest.py, see fixtures.py.
from fixtures import django_sqlite_backend, mysql_backend, pg_backend  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import

BACKEND_FIXTURES = ["pg_backend", "mysql_backend", "django_sqlite_backend"]

ACME_SRV_TABLES = sorted(
    f"acme_srv_{name}"
    for name in ("account", "authorization", "cahandler", "certificate", "challenge", "cliaccount",
                 "housekeeping", "nonce", "order", "status")
)

STATUS_NAMES = ["invalid", "pending", "ready", "processing", "valid", "expired", "deactivated", "revoked"]

# Three days after the server run, everything that the server created with
# one-day lifetimes has expired.
DAYS_AHEAD = 3


def rows_with_status(backend: backends.Backend, table: str, name: str) -> int:
    """Count the rows of table whose status has name."""
    placeholder = "?" if backend.engine == "sqlite" else "%s"
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT count(*) FROM {backends.quote_name(backend.engine, table)} t "
            f"JOIN acme_srv_status s ON s.id = t.status_id WHERE s.name = {placeholder}",
            (name,),
        )
        return cursor.fetchone()[0]
    finally:
        connection.close()


@pytest.mark.parametrize("fixture_name", BACKEND_FIXTURES)
def test_schema_has_tables_and_statuses(fixture_name, request):
    backend = request.getfixturevalue(fixture_name)
    rows = backends.snapshot(backend)

    assert sorted(rows) == ACME_SRV_TABLES
    assert [(row[0], row[1]) for row in rows["acme_srv_status"]] == list(enumerate(STATUS_NAMES, start=1))
    assert [(row[1], row[2]) for row in rows["acme_srv_housekeeping"]] == [("dbversion", "0.46")]
    assert all(not rows[table] for table in ACME_SRV_TABLES if table not in ("acme_srv_status", "acme_srv_housekeeping"))


@pytest.mark.parametrize("fixture_name", ["pg_backend", "mysql_backend"])
def test_read_only_user_cannot_write(fixture_name, request):
    backend = request.getfixturevalue(fixture_name)
    connection = backend.connect(read_only_user=True)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM acme_srv_status")
        assert cursor.fetchone()[0] == len(STATUS_NAMES)
        with pytest.raises(Exception, match="(?i)denied"):
            cursor.execute("DELETE FROM acme_srv_status")
    finally:
        connection.close()
    assert len(backends.snapshot(backend)["acme_srv_status"]) == len(STATUS_NAMES)


@pytest.mark.parametrize("fixture_name", ["pg_backend", "mysql_backend"])
def test_server_reachable_over_tcp(fixture_name, request):
    backend = request.getfixturevalue(fixture_name)
    if backend.engine == "postgresql":
        import psycopg  # pylint: disable=import-outside-toplevel

        connection = psycopg.connect(host=backend.host, port=backend.port, user=backend.user,
                                     password=backend.password, dbname=backend.name, connect_timeout=5)
    else:
        import pymysql  # pylint: disable=import-outside-toplevel

        connection = pymysql.connect(host=backend.host, port=backend.port, user=backend.user,
                                     password=backend.password, database=backend.name, connect_timeout=5)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM acme_srv_status")
        assert cursor.fetchone()[0] == len(STATUS_NAMES)
    finally:
        connection.close()


@pytest.mark.parametrize("fixture_name", BACKEND_FIXTURES)
def test_server_fill_then_upstream(fixture_name, request, tmp_path):
    backend = request.getfixturevalue(fixture_name)
    fresh = backends.snapshot(backend)

    summary = server.fill(backend, tmp_path / "fill", accounts=2, certs_per_account=2, timeout=240)

    counts = summary["row_counts"]
    # acme_client.py creates 2 accounts and a third that it deactivates. It
    # issues 4 certificates and one more with the deactivated account, and
    # leaves one order pending, one ready and one whose finalization fails.
    assert counts["acme_srv_account"] == 3
    assert counts["acme_srv_order"] == 8
    assert counts["acme_srv_certificate"] == 6
    assert counts["acme_srv_authorization"] >= counts["acme_srv_order"]
    assert counts["acme_srv_challenge"] == 3 * counts["acme_srv_authorization"]
    assert counts["acme_srv_nonce"] > 0
    assert summary["statuses"]["certificate_with_cert"] == 5
    assert summary["statuses"]["account"] == {"deactivated": 1, "valid": 2}
    assert summary["statuses"]["order"] == {"pending": 1, "processing": 1, "ready": 1, "valid": 5}
    filled = backends.snapshot(backend)

    runner = upstream.Upstream(backend, tmp_path / "upstream")
    account_csv = runner.account_report("csv")
    stem = str(tmp_path / "upstream" / "report")
    runner.run([
        ("accountreport_get", {"report_format": "json", "report_name": stem + "_flat"}),
        ("accountreport_get", {"report_format": "json", "report_name": stem + "_nested", "nested": True}),
        ("certreport_get", {"report_format": "csv", "report_name": stem + "_certificates"}),
        ("certreport_get", {"report_format": "json", "report_name": stem + "_certificates"}),
    ])
    report_files = [account_csv] + [Path(stem + suffix) for suffix in
                                    ("_flat.json", "_nested.json", "_certificates.csv", "_certificates.json")]
    for path in report_files:
        assert path.is_file(), path
    assert backends.snapshot(backend) == filled
    with open(report_files[0], newline="", encoding="utf-8") as handle:
        account_rows = list(csv.reader(handle))
    assert account_rows[0][0] == "account.id"
    assert len(account_rows) - 1 == counts["acme_srv_challenge"]
    assert len(json.loads(report_files[2].read_text(encoding="utf-8"))) == 3
    # The certificate report lists only rows that hold a certificate.
    assert len(json.loads(report_files[4].read_text(encoding="utf-8"))) == summary["statuses"]["certificate_with_cert"]

    cutoff = int(time.time()) + DAYS_AHEAD * 86400
    results = runner.run([
        ("orders_invalidate", {"uts": cutoff}),
        ("authorizations_invalidate", {"uts": cutoff}),
        ("certificate_dates_update", {}),
        ("certificates_cleanup", {"uts": cutoff, "purge": False}),
        ("nonce_cleanup", {"uts": cutoff}),
    ])
    assert results[0]
    assert results[1] is None
    assert results[3]
    assert len(results[4]) == counts["acme_srv_nonce"]

    after = backends.snapshot(backend)
    assert after != filled
    assert rows_with_status(backend, "acme_srv_order", "invalid") == len(results[0])
    assert rows_with_status(backend, "acme_srv_authorization", "expired") > 0
    assert not after["acme_srv_nonce"]

    if backend.engine != "sqlite":
        assert schema.reset(backend)["recreated"] is False
        assert backends.snapshot(backend) == fresh

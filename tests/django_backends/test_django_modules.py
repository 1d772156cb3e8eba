# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules on acme2certifier's Django handler: PostgreSQL, MariaDB and SQLite, against upstream.

Each test fills the database through the real acme2certifier 0.46.3 server (Django variant) with
real ACME clients, runs upstream's Housekeeping on it, restores the filled state, runs the
modules through ansible-playbook with the same cutoff, and compares every acme_srv table.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "django_lab"))
sys.path.insert(0, str(REPO / "tests" / "acme_server"))
import backends  # noqa: E402  pylint: disable=wrong-import-position
import server  # noqa: E402  pylint: disable=wrong-import-position
from fixtures import django_sqlite_backend, mysql_backend, pg_backend  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from upstream import Upstream  # noqa: E402  pylint: disable=wrong-import-position

# Parents before children, so rows can be inserted in this order and deleted in reverse.
TABLE_ORDER = (
    "acme_srv_status",
    "acme_srv_account",
    "acme_srv_order",
    "acme_srv_authorization",
    "acme_srv_challenge",
    "acme_srv_certificate",
    "acme_srv_nonce",
    "acme_srv_housekeeping",
    "acme_srv_cahandler",
    "acme_srv_cliaccount",
)
DAYS_AHEAD = 3
_PORTS = itertools.count(18300)

Dump = Dict[str, Tuple[List[str], List[tuple]]]


@pytest.fixture(params=["pg_backend", "mysql_backend", "django_sqlite_backend"], ids=["postgresql", "mariadb", "sqlite"])
def backend(request) -> backends.Backend:
    """Each Django backend in turn, with an empty acme2certifier schema."""
    return request.getfixturevalue(request.param)


def _placeholder(engine: str) -> str:
    return "?" if engine == "sqlite" else "%s"


def dump(backend: backends.Backend) -> Dump:
    """Return columns and rows of every acme_srv table, ordered by id."""
    connection = backend.connect()
    try:
        result: Dump = {}
        for table in backends.acme_srv_tables(connection, backend.engine):
            cursor = connection.cursor()
            cursor.execute(f"SELECT * FROM {backends.quote_name(backend.engine, table)} ORDER BY id")
            columns = [column[0] for column in cursor.description]
            result[table] = (columns, [tuple(row) for row in cursor.fetchall()])
        return result
    finally:
        connection.close()


def restore(backend: backends.Backend, state: Dump) -> None:
    """Put every acme_srv table back into a dumped state, in one transaction."""
    connection = backend.connect()
    quote = backends.quote_name
    try:
        cursor = connection.cursor()
        if backend.engine == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        cursor.execute("BEGIN")
        if backend.engine == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        tables = [table for table in TABLE_ORDER if table in state]
        for table in reversed(tables):
            cursor.execute(f"DELETE FROM {quote(backend.engine, table)}")
        for table in tables:
            columns, rows = state[table]
            if not rows:
                continue
            names = ", ".join(quote(backend.engine, column) for column in columns)
            marks = ", ".join([_placeholder(backend.engine)] * len(columns))
            cursor.executemany(f"INSERT INTO {quote(backend.engine, table)} ({names}) VALUES ({marks})", rows)
        cursor.execute("COMMIT")
        if backend.engine == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        connection.close()


def module_args(backend: backends.Backend, cutoff: int, **extra: Any) -> Dict[str, Any]:
    """Connection options for the modules: TCP on 127.0.0.1 for servers, the file for SQLite."""
    if backend.engine == "sqlite":
        args: Dict[str, Any] = {"database": backend.name}
    else:
        args = {
            "db_engine": backend.engine,
            "db_host": backend.host,
            "db_port": backend.port,
            "db_name": backend.name,
            "db_user": backend.user,
            "db_password": backend.password,
        }
    args["now"] = cutoff
    args.update(extra)
    return args


def _fill(backend: backends.Backend, workdir: Path) -> int:
    server.fill(backend, workdir, accounts=2, certs_per_account=3, certbot=0, cert_validity_days=1, port=next(_PORTS) + 100 * _worker())
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT max(expire_uts) FROM acme_srv_certificate")
        newest = cursor.fetchone()[0]
    finally:
        connection.close()
    return int(newest) + DAYS_AHEAD * 86400


def _worker() -> int:
    import os  # pylint: disable=import-outside-toplevel

    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


def _sorted_tables(state: Dump) -> Dict[str, List[str]]:
    return {table: sorted(repr(row) for row in rows) for table, (_columns, rows) in state.items()}


@pytest.mark.parametrize("purge", [False, True], ids=["blank", "purge"])
def test_tables_match_upstream(backend, playbook, tmp_path, purge):
    cutoff = _fill(backend, tmp_path / "fill")
    filled = dump(backend)

    Upstream(backend, tmp_path / "upstream").run([
        ("orders_invalidate", {"uts": cutoff}),
        ("authorizations_invalidate", {"uts": cutoff}),
        ("certificate_dates_update", {}),
        ("certificates_cleanup", {"uts": cutoff, "purge": purge}),
        ("nonce_cleanup", {"uts": cutoff}),
    ])
    expected = dump(backend)
    assert _sorted_tables(expected) != _sorted_tables(filled)

    restore(backend, filled)
    assert _sorted_tables(dump(backend)) == _sorted_tables(filled)

    invalidate_args = module_args(backend, cutoff)
    cleanup_args = module_args(backend, cutoff, targets=["certificate_dates", "certificates", "nonces"], purge=purge)
    check_invalidate = playbook.run("acme_hk_invalidate", invalidate_args, check=True)
    check_cleanup = playbook.run("acme_hk_cleanup", cleanup_args, check=True)
    assert _sorted_tables(dump(backend)) == _sorted_tables(filled)

    invalidate = playbook.run("acme_hk_invalidate", invalidate_args)
    cleanup = playbook.run("acme_hk_cleanup", cleanup_args)
    assert invalidate["orders"]["count"] == check_invalidate["orders"]["count"]
    assert invalidate["authorizations"]["count"] == check_invalidate["authorizations"]["count"]
    assert cleanup["certificates"]["count"] == check_cleanup["certificates"]["count"]
    assert cleanup["nonces"]["count"] == check_cleanup["nonces"]["count"]
    assert invalidate["orders"]["count"] > 0
    assert cleanup["certificates"]["count"] > 0
    assert invalidate["handler"] == "django"

    actual = dump(backend)
    for table in expected:
        assert sorted(repr(row) for row in actual[table][1]) == sorted(repr(row) for row in expected[table][1]), f"{table} differs"

    again = playbook.run("acme_hk_cleanup", cleanup_args)
    assert again["changed"] is False
    again = playbook.run("acme_hk_invalidate", invalidate_args)
    assert again["changed"] is False


def test_reports_match_upstream(backend, playbook, tmp_path):
    _fill(backend, tmp_path / "fill")
    upstream = Upstream(backend, tmp_path / "upstream")
    up_accounts = upstream.account_report("csv")
    up_certificates = upstream.certificate_report("json")
    out = tmp_path / "ours"
    out.mkdir()

    playbook.run("acme_hk_report", module_args(backend, 0, report="accounts", format="csv", dest=str(out / "accounts.csv")))
    playbook.run("acme_hk_report", module_args(backend, 0, report="certificates", format="json", dest=str(out / "certificates.json")))

    up_lines = up_accounts.read_bytes().split(b"\r\n")
    our_lines = (out / "accounts.csv").read_bytes().split(b"\r\n")
    assert up_lines[0] == our_lines[0]
    assert sorted(up_lines[1:]) == sorted(our_lines[1:])

    theirs = sorted(json.loads(up_certificates.read_text()), key=lambda row: row["certificate.id"])
    ours = json.loads((out / "certificates.json").read_text())
    assert theirs == ours
    assert [list(row) for row in theirs] == [list(row) for row in ours]


def test_read_only_user(backend, playbook, tmp_path):
    if backend.engine == "sqlite":
        pytest.skip("SQLite has no database users; read-only files are covered by the wsgi tests")
    cutoff = _fill(backend, tmp_path / "fill")
    before = _sorted_tables(dump(backend))
    args = module_args(backend, cutoff, db_user=backend.ro_user, db_password=backend.ro_password)

    check = playbook.run("acme_hk_invalidate", args, check=True)
    assert check["orders"]["count"] > 0

    failed = playbook.run("acme_hk_invalidate", args, expect_failure=True)
    assert "no write rights" in failed["msg"]
    assert backend.ro_password not in json.dumps(failed)
    assert _sorted_tables(dump(backend)) == before


@pytest.mark.parametrize("engine_fixture", ["pg_backend", "mysql_backend"], ids=["postgresql", "mariadb"])
def test_connection_errors(request, playbook, engine_fixture):
    backend = request.getfixturevalue(engine_fixture)
    base = module_args(backend, 0)

    wrong_password = playbook.run("acme_hk_info", {**base, "db_password": "not-the-password"}, expect_failure=True)
    assert "Check db_user and db_password" in wrong_password["msg"]
    assert "not-the-password" not in json.dumps(wrong_password)

    closed_port = playbook.run("acme_hk_info", {**base, "db_port": 1, "connect_timeout": 3}, expect_failure=True)
    assert "Check db_host and db_port" in closed_port["msg"]

    missing = playbook.run("acme_hk_info", {**base, "db_name": "no_such_database"}, expect_failure=True)
    assert "no_such_database" in missing["msg"]


def test_missing_driver(pg_backend, playbook):
    # ansible-core 2.16's virtual environment has no database drivers.
    playbook.python = str(REPO / ".venv-2.16" / "bin" / "python")
    if not Path(playbook.python).exists():
        pytest.fail(f"{playbook.python} is missing; run make install")
    result = playbook.run("acme_hk_info", module_args(pg_backend, 0), expect_failure=True)
    assert "Failed to import the required Python library (psycopg (or psycopg2))" in result["msg"]

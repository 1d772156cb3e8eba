# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The comparison functions of the differential harness find the differences they must find.

A harness that compared nothing would let every corpus entry pass, so these tests feed it
databases and report files with one known difference each.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from differential_harness import (
    compare_account_csv,
    compare_account_json,
    compare_certificate_csv,
    compare_cleanup_report,
    compare_databases,
    upstream_schema_update,
    write_config,
)
from legacy_schemas import RELEASES, create_legacy, create_upstream_046, table_columns

from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import AcmeDb

ACCOUNT_HEADER = ('"account.id","account.name","order.id","order.status.name","authorization.id",'
                  '"authorization.status.name","challenge.id","challenge.status.name"')


def _twins(tmp_path: Path):
    ours = AcmeDb(tmp_path / "ours.db")
    order = ours.account_with_order()
    ours.add_authorization(order, 100, "pending")
    theirs = tmp_path / "theirs.db"
    theirs.write_bytes(ours.path.read_bytes())
    return ours.path, theirs


def _execute(database: Path, sql: str) -> None:
    connection = sqlite3.connect(database)
    try:
        connection.execute(sql)
        connection.commit()
    finally:
        connection.close()


def test_databases_equal(tmp_path):
    ours, theirs = _twins(tmp_path)
    assert compare_databases(ours, theirs, "step") == []


@pytest.mark.parametrize("change, expected", [
    ("UPDATE \"authorization\" SET status_id = 6", "authorization row 1 differs: status_id: modules 2 acme2certifier 6"),
    ("UPDATE \"authorization\" SET expires = 'soon'", "expires: modules 100 acme2certifier 'soon'"),
    ("DELETE FROM orders", "orders row 1 exists only in the modules' database"),
    ("CREATE TABLE extra (id INTEGER)", "table extra exists only in acme2certifier's database"),
    ("ALTER TABLE nonce ADD COLUMN extra TEXT", "table nonce: columns differ"),
])
def test_databases_difference_found(tmp_path, change, expected):
    ours, theirs = _twins(tmp_path)
    _execute(theirs, change)
    problems = compare_databases(ours, theirs, "step")
    assert any(expected in problem for problem in problems), problems


def test_migrated_columns_ignored(tmp_path):
    ours, theirs = _twins(tmp_path)
    _execute(theirs, "ALTER TABLE orders ADD COLUMN later TEXT DEFAULT 'x'")
    _execute(theirs, "UPDATE housekeeping SET value = '0.99' WHERE name = 'dbversion'")
    assert compare_databases(ours, theirs, "step", migrated_from="0.41") == []
    _execute(theirs, "UPDATE orders SET status_id = 1")
    assert compare_databases(ours, theirs, "step", migrated_from="0.41") != []


def _write(path: Path, records: list) -> Path:
    path.write_bytes(("\r\n".join(records) + "\r\n").encode("utf-8"))
    return path


COMPLETE = '1,"a",1,"valid",1,"valid",1,"valid"'
SECOND = '1,"a",1,"valid",2,"valid",2,"valid"'
INCOMPLETE = '2,"b","","","","","",""'


def test_account_csv_order_ignored(tmp_path):
    ours = _write(tmp_path / "ours.csv", [ACCOUNT_HEADER, COMPLETE, SECOND, INCOMPLETE])
    theirs = _write(tmp_path / "theirs.csv", [ACCOUNT_HEADER, SECOND, COMPLETE])
    assert compare_account_csv(ours, theirs) == []


@pytest.mark.parametrize("ours_rows, theirs_rows", [
    ([COMPLETE], [COMPLETE, SECOND]),
    ([COMPLETE, SECOND], [COMPLETE]),
    ([COMPLETE.replace('"a"', '"A"'), SECOND], [COMPLETE, SECOND]),
])
def test_account_csv_difference_found(tmp_path, ours_rows, theirs_rows):
    ours = _write(tmp_path / "ours.csv", [ACCOUNT_HEADER] + ours_rows)
    theirs = _write(tmp_path / "theirs.csv", [ACCOUNT_HEADER] + theirs_rows)
    assert compare_account_csv(ours, theirs) != []


def test_account_json_difference_found(tmp_path):
    row = {"account.id": 1, "order.id": 1, "authorization.id": 1, "challenge.id": 1, "order.status.name": "valid",
           "authorization.status.name": "valid", "challenge.status.name": "valid", "challenge.token": "t"}
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps([row], ensure_ascii=False, indent=4), encoding="utf-8")
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps([row], ensure_ascii=False, indent=4), encoding="utf-8")
    assert compare_account_json(ours, theirs) == []
    ours.write_text(json.dumps([row], ensure_ascii=False, indent=2), encoding="utf-8")
    assert compare_account_json(ours, theirs) != [], "the JSON layout is compared, not only the values"


def test_certificate_csv_status_mapped(tmp_path):
    header = '"certificate.id","order.status.name","account.name"'
    theirs = _write(tmp_path / "theirs.csv", [header, '2,5,"x"', '1,2,"y"'])
    ours = _write(tmp_path / "ours.csv", [header, '1,"pending","y"', '2,"valid","x"'])
    assert compare_certificate_csv(ours, theirs, {2: "pending", 5: "valid"}) == []
    wrong = _write(tmp_path / "wrong.csv", [header, '1,"pending","y"', '2,"pending","x"'])
    assert compare_certificate_csv(wrong, theirs, {2: "pending", 5: "valid"}) != []
    unsorted = _write(tmp_path / "unsorted.csv", [header, '2,"valid","x"', '1,"pending","y"'])
    assert compare_certificate_csv(unsorted, theirs, {2: "pending", 5: "valid"}) != []


def test_cleanup_names_compared(tmp_path):
    theirs = tmp_path / "theirs.json"
    theirs.write_text(json.dumps(["a", "b"], indent=4), encoding="utf-8")
    ours = _write(tmp_path / "ours.csv", ['"certificate.id","certificate.name"', '1,"a"', '2,"b"'])
    assert compare_cleanup_report(ours, theirs, "cleanup") == []
    _write(ours, ['"certificate.id","certificate.name"', '1,"a"'])
    assert compare_cleanup_report(ours, theirs, "cleanup") != []


# Legacy schemas ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_046(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("fresh") / "fresh.db"
    create_upstream_046(path)
    return {table: sorted(columns) for table, columns in table_columns(path).items()}


@pytest.mark.parametrize("release", RELEASES)
def test_legacy_schema_updates_to_046(tmp_path, fresh_046, release):
    """acme2certifier's own schema update turns each legacy layout into the tables of 0.46."""
    database = tmp_path / "legacy.db"
    create_legacy(database, release)
    config = write_config(tmp_path / "acme_srv.cfg", database)

    upstream_schema_update(config, tmp_path)

    updated = {table: sorted(columns) for table, columns in table_columns(database).items()}
    assert updated == fresh_046


def test_legacy_schema_columns_by_release(tmp_path):
    columns = {}
    for release in RELEASES:
        create_legacy(tmp_path / f"{release}.db", release)
        columns[release] = table_columns(tmp_path / f"{release}.db")
    assert "eab_kid" not in columns["0.11"]["account"]
    assert "eab_kid" in columns["0.15"]["account"]
    assert "cahandler" not in columns["0.15"]
    assert "cliaccount" in columns["0.23"]
    assert "serial" not in columns["0.23"]["certificate"]
    assert {"renewal_info", "replaced", "header_info", "aki", "serial"} <= set(columns["0.33"]["certificate"])
    assert "status_id" not in columns["0.33"]["account"]
    assert "status_id" in columns["0.41"]["account"]
    assert {"source", "validation_error"} <= set(columns["0.41"]["challenge"])
    assert "cahandler" not in columns["0.41"]["orders"]

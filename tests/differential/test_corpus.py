# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules against acme2certifier 0.46.3's own Housekeeping on a corpus of databases.

Each corpus entry is a database and a reference time. differential_harness.run_twins copies
the database twice. It runs every housekeeping step with acme2certifier on one copy and with
the modules (one ansible-playbook run) on the other. compare_twins then lists every difference
in tables, report files and returned counts that docs/upstream-differences.md does not explain.

Databases in the schema of a release before 0.46 are migrated with acme2certifier's own
a2c-schema-update on acme2certifier's side only, because acme2certifier 0.46.3 cannot clean up
certificates on them otherwise. The modules run on the database as it is, and the comparison
covers the columns the old schema has.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import pytest

from conftest import EXAMPLE_DB, REPO

from corpus_content import (
    DAY,
    REFERENCE_NOW,
    fill_edge_cases,
    fill_realistic,
    newest_time,
)
from differential_harness import compare_twins, describe, run_twins, upstream_changes
from legacy_schemas import RELEASES, create_legacy, create_upstream_046

from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import CertificateFactory

sys.path.insert(0, str(REPO / "tests" / "acme_server"))
import lab  # noqa: E402  pylint: disable=wrong-import-position

ALL_CHANGING_STEPS = ("orders", "authorizations", "certificate_dates", "certificates_blank", "certificates_purge",
                      "certificates_purge_after_blank", "nonces")
LAB_NONCE_VALIDITY = 3600
EDGE_NONCE_VALIDITY = 7200
# The day acme2certifier's example database's first certificate expired, a minute later.
EXAMPLE_FIRST_EXPIRY = 1627656960


@dataclass
class CorpusEntry:
    """A database of the corpus, the reference time to run at, and what must change."""

    name: str
    build: Callable[[Path, "Sources"], Path]
    now: Callable[[Path], int]
    nonce_validity: Optional[int] = None
    migrate_from: Optional[str] = None
    expect_changes: Tuple[str, ...] = ()
    needs_lab: bool = False


@dataclass
class Sources:
    """Databases that corpus entries copy: the lab database, built once per test session."""

    certificates: CertificateFactory
    lab_database: Optional[Path] = None


def _example(target: Path, _sources: Sources) -> Path:
    if not EXAMPLE_DB.is_file():
        pytest.fail(f"The example database {EXAMPLE_DB} is missing; set ACMEOPS_SHARED_DIR to the folder that "
                    "holds data/acme_srv.db.example.")
    shutil.copyfile(EXAMPLE_DB, target)
    return target


def _legacy_realistic(release: str) -> Callable[[Path, Sources], Path]:
    def build(target: Path, sources: Sources) -> Path:
        create_legacy(target, release)
        fill_realistic(target, REFERENCE_NOW, sources.certificates)
        return target
    return build


def _upstream_realistic(target: Path, sources: Sources) -> Path:
    create_upstream_046(target)
    fill_realistic(target, REFERENCE_NOW, sources.certificates)
    return target


def _edge(release: Optional[str]) -> Callable[[Path, Sources], Path]:
    def build(target: Path, sources: Sources) -> Path:
        if release is None:
            create_upstream_046(target)
        else:
            create_legacy(target, release)
        fill_edge_cases(target, REFERENCE_NOW, sources.certificates, EDGE_NONCE_VALIDITY)
        return target
    return build


def _empty(target: Path, _sources: Sources) -> Path:
    create_upstream_046(target)
    return target


def _lab(target: Path, sources: Sources) -> Path:
    assert sources.lab_database is not None
    shutil.copyfile(sources.lab_database, target)
    return target


def _fixed(uts: int) -> Callable[[Path], int]:
    return lambda _database: uts


def _after_newest(table: str, column: str, seconds: int) -> Callable[[Path], int]:
    def now(database: Path) -> int:
        newest = newest_time(database, table, column)
        assert newest is not None, f"{database} has no {table}.{column} to place the reference time after"
        return newest + seconds
    return now


CORPUS = [
    CorpusEntry("example-0.15-2026", _example, _fixed(REFERENCE_NOW), migrate_from="0.15",
                expect_changes=("orders", "authorizations", "certificates_blank", "certificates_purge", "nonces")),
    CorpusEntry("example-0.15-2021", _example, _fixed(EXAMPLE_FIRST_EXPIRY), migrate_from="0.15",
                expect_changes=("orders", "authorizations", "certificates_blank", "certificates_purge", "nonces")),
    CorpusEntry("lab-fresh", _lab, _after_newest("certificate", "issue_uts", 60), nonce_validity=LAB_NONCE_VALIDITY,
                needs_lab=True),
    CorpusEntry("lab-expired", _lab, _after_newest("certificate", "expire_uts", 2 * DAY),
                nonce_validity=LAB_NONCE_VALIDITY, needs_lab=True,
                expect_changes=("orders", "authorizations", "certificates_blank", "certificates_purge", "nonces")),
    CorpusEntry("lab-csr-aged", _lab, _after_newest("certificate", "expire_uts", 15 * DAY),
                nonce_validity=LAB_NONCE_VALIDITY, needs_lab=True,
                expect_changes=("orders", "authorizations", "certificates_blank", "certificates_purge", "nonces")),
    *[
        CorpusEntry(f"schema-{release}", _legacy_realistic(release), _fixed(REFERENCE_NOW), migrate_from=release,
                    expect_changes=ALL_CHANGING_STEPS)
        for release in RELEASES
    ],
    CorpusEntry("schema-0.46", _upstream_realistic, _fixed(REFERENCE_NOW), expect_changes=ALL_CHANGING_STEPS),
    CorpusEntry("edge-0.46", _edge(None), _fixed(REFERENCE_NOW), nonce_validity=EDGE_NONCE_VALIDITY,
                expect_changes=ALL_CHANGING_STEPS),
    CorpusEntry("edge-0.11", _edge("0.11"), _fixed(REFERENCE_NOW), nonce_validity=EDGE_NONCE_VALIDITY,
                migrate_from="0.11", expect_changes=ALL_CHANGING_STEPS),
    CorpusEntry("empty-0.46", _empty, _fixed(REFERENCE_NOW)),
]


@pytest.fixture(scope="module")
def certificates() -> CertificateFactory:
    return CertificateFactory()


def _shared_root(tmp_path_factory) -> Path:
    """Return a directory that all pytest-xdist workers of this session share."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def lab_summary(tmp_path_factory) -> dict:
    """Build one database with the real acme2certifier server and clients for the whole session.

    The first worker that needs it builds it under a file lock; the others wait and reuse it.
    Returns the summary that lab.py prints, with the database path under "db".
    """
    root = _shared_root(tmp_path_factory)
    workdir = root / "differential-lab"
    done = root / "differential-lab.json"
    with open(root / "differential-lab.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            summary = lab.build_database(workdir, accounts=3, certs_per_account=3, certbot=1, cert_validity_days=1,
                                         nonce_validity=LAB_NONCE_VALIDITY, port=18093)
            done.write_text(json.dumps(summary), encoding="utf-8")
    summary = json.loads(done.read_text(encoding="utf-8"))
    assert Path(summary["db"]).is_file(), summary
    return summary


def test_lab_database_contents(lab_summary):
    """The lab database contains what real installations contain: several outcomes of real clients."""
    scenarios = [order["scenario"] for order in lab_summary["clients"]["orders"]]
    assert "revoked" in scenarios
    assert lab_summary["certificates"]["revoked_in_crl"] >= 1
    assert lab_summary["certbot_certificates"] >= 1
    connection = sqlite3.connect(f"file:{lab_summary['db']}?mode=ro", uri=True)
    try:
        def count(sql: str) -> int:
            return connection.execute(sql).fetchone()[0]

        order_statuses = dict(connection.execute(
            "SELECT status.name, count(*) FROM orders JOIN status ON status.id = orders.status_id GROUP BY status.name"))
        challenge_types = {row[0] for row in connection.execute("SELECT DISTINCT type FROM challenge")}
        deactivated = count("SELECT count(*) FROM account JOIN status ON status.id = account.status_id "
                            "WHERE status.name = 'deactivated'")
        csr_only = count("SELECT count(*) FROM certificate WHERE cert IS NULL AND csr != ''")
        certbot_orders = count("SELECT count(*) FROM orders WHERE identifiers LIKE '%certbot.example.test%'")
    finally:
        connection.close()
    assert order_statuses.get("valid", 0) >= 3
    assert order_statuses.get("pending", 0) >= 1
    assert order_statuses.get("ready", 0) >= 1
    assert order_statuses.get("processing", 0) >= 1
    assert {"http-01", "dns-01", "tls-alpn-01"} <= challenge_types
    assert deactivated >= 1
    assert csr_only >= 1
    assert certbot_orders >= 1


@pytest.mark.parametrize("entry", CORPUS, ids=[entry.name for entry in CORPUS])
def test_modules_match_upstream(entry, request, tmp_path, certificates):
    sources = Sources(certificates=certificates)
    if entry.needs_lab:
        sources.lab_database = Path(request.getfixturevalue("lab_summary")["db"])
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    source = entry.build(source_dir / "acme_srv.db", sources)
    now = entry.now(source)

    run = run_twins(source, now, tmp_path, nonce_validity=entry.nonce_validity, migrate_upstream_from=entry.migrate_from)

    problems = compare_twins(run)
    assert not problems, "\n".join(problems) + "\nacme2certifier's steps:\n" + describe(run)
    changes = upstream_changes(run)
    idle = [step for step in entry.expect_changes if not changes[step]]
    assert not idle, f"steps {idle} changed nothing, so they compare nothing: {changes}"

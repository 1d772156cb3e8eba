# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Random acme2certifier databases and reference times: every operation selects the same rows.

Hypothesis generates schema 0.46 databases whose rows mix every value class that the selection
rules distinguish. These are expiry times around the reference time, 0, NULL and '', unknown
status ids, orphans, cleanup markers, unreadable cert_raw, CSR-only rows around 14 days and
nonces around the threshold.

For each database, acme2certifier 0.46.3 runs every operation on a fresh copy in a
long-running subprocess (differential_harness.UpstreamServer). The engine that the modules run
(engine.run_invalidate, run_cleanup, run_report) does the same in this process, because an
ansible-playbook run per example would take minutes. test_corpus.py covers the modules through
ansible-playbook.

The checks: each operation changes or deletes rows with the same ids and leaves the same
tables behind, the certificate report lists the same certificates, and the account report
lists the same complete chains.

Values for which docs/upstream-differences.md records a deliberate difference are not
generated, and test_documented_differences.py shows them instead:

- a NULL cert in a row whose dates update would run, where acme2certifier aborts;
- a single PEM block or '' in cert with a stored renewal_info, which acme2certifier erases;
- created_at forms other than the ones acme2certifier's handlers write;
- expiry text other than '';
- NULL or text issue_uts or expire_uts in rows with cert_raw, where acme2certifier's report fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus_content import DAY, RowWriter, db_time, marker
from differential_harness import UpstreamServer, changed_ids, compare_databases
from legacy_schemas import create_upstream_046

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import engine
from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import CertificateFactory

NONCE_VALIDITY = 86400
# 40 examples took 20 s on a 2-core test machine. Set ACMEOPS_PROPERTY_EXAMPLES for longer searches.
EXAMPLES = int(os.environ.get("ACMEOPS_PROPERTY_EXAMPLES", "40"))
STATUS_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 42)
CSR_AGE = 14 * DAY

# Offsets from the reference time that sit on both sides of every boundary the rules use.
BOUNDARY_OFFSETS = (-400 * DAY, -CSR_AGE - 1, -CSR_AGE, -CSR_AGE + 1, -NONCE_VALIDITY - 1, -NONCE_VALIDITY,
                    -NONCE_VALIDITY + 1, -DAY, -1, 0, 1, DAY, 400 * DAY)

OPERATIONS = (
    # (name, table, acme2certifier step)
    ("orders", "orders", {"op": "orders_invalidate"}),
    ("authorizations", "authorization", {"op": "authorizations_invalidate"}),
    ("certificate_dates", "certificate", {"op": "certificate_dates_update"}),
    ("certificates_blank", "certificate", {"op": "certificates_cleanup", "purge": False}),
    ("certificates_purge", "certificate", {"op": "certificates_cleanup", "purge": True}),
    ("nonces", "nonce", {"op": "nonce_cleanup"}),
)


@dataclass
class CertificateRow:
    """One generated certificate row, before real certificates are issued for it."""

    order: Optional[int]
    raw_kind: str
    cert_kind: str
    not_before: int
    not_after: int
    issue_uts: Any
    expire_uts: Any
    csr: str
    created_at: Any


@dataclass
class Model:
    """A generated database: the reference time and the rows of every table."""

    now: int
    accounts: int
    orders: List[Dict[str, Any]] = field(default_factory=list)
    authorizations: List[Dict[str, Any]] = field(default_factory=list)
    challenges: List[Dict[str, Any]] = field(default_factory=list)
    certificates: List[CertificateRow] = field(default_factory=list)
    nonces: List[Any] = field(default_factory=list)


@st.composite
def models(draw) -> Model:
    now = draw(st.integers(1_600_000_000, 1_900_000_000))
    moment = st.one_of(st.sampled_from(BOUNDARY_OFFSETS), st.integers(-500 * DAY, 500 * DAY)).map(lambda delta: now + delta)

    def when() -> int:
        return draw(moment)

    def created_text() -> Any:
        uts = when()
        return draw(st.sampled_from([db_time(uts), db_time(uts, "T"), db_time(uts) + ".123456", db_time(uts) + "Z",
                                     db_time(uts)[:10], "", 0, "junk"]))

    model = Model(now=now, accounts=draw(st.integers(0, 3)))
    parent = st.one_of(st.none(), st.integers(0, 5))  # None: an id that does not exist

    for _index in range(draw(st.integers(0, 6))):
        expires = draw(st.one_of(moment, st.sampled_from([0, ""])))
        model.orders.append({"status_id": draw(st.sampled_from(STATUS_IDS)), "expires": expires,
                             "account": draw(parent)})
    for _index in range(draw(st.integers(0, 6))):
        expires = draw(st.one_of(moment, st.sampled_from([None, 0, ""])))
        model.authorizations.append({"status_id": draw(st.sampled_from(STATUS_IDS)), "expires": expires,
                                     "order": draw(parent)})
    for _index in range(draw(st.integers(0, 6))):
        model.challenges.append({"status_id": draw(st.sampled_from(STATUS_IDS)), "authorization": draw(parent),
                                 "expires": draw(st.one_of(moment, st.sampled_from([None, 0, ""])))})

    for _index in range(draw(st.integers(0, 8))):
        raw_kind = draw(st.sampled_from(["valid", "valid", "urlsafe", "malformed", "truncated", "none", "empty"]))
        readable = raw_kind in ("valid", "urlsafe")
        cert_kinds = ["chain", "leaf", "empty", "marker", "old_marker", "upper_marker"]
        if not readable:
            cert_kinds.append("none")
        not_before = when()
        not_after = not_before + draw(st.sampled_from([DAY, 90 * DAY])) if draw(st.booleans()) else when()
        dates = [(0, 0), (not_before, not_after), (0, when()), (when(), 0), (when(), when())]
        if raw_kind == "none":  # rows with cert_raw are in the certificate report, which needs numbers
            dates += [(None, None), ("", ""), (None, 0), (0, None), (0, "")]
        issue_uts, expire_uts = draw(st.sampled_from(dates))
        model.certificates.append(CertificateRow(
            order=draw(parent), raw_kind=raw_kind, cert_kind=draw(st.sampled_from(cert_kinds)),
            not_before=min(not_before, not_after - 1), not_after=not_after, issue_uts=issue_uts, expire_uts=expire_uts,
            csr=draw(st.sampled_from(["MIIBCsr", ""])), created_at=created_text(),
        ))

    for _index in range(draw(st.integers(0, 6))):
        model.nonces.append(draw(st.one_of(moment.map(db_time), st.sampled_from([0, "", "junk", 5]))))
    return model


def _reference(ids: List[int], choice: Optional[int]) -> int:
    """Map a generated parent choice to an existing id, or to an id that no row has."""
    if choice is None or not ids:
        return 9000 + (choice or 0)
    return ids[choice % len(ids)]


def build(model: Model, template: Path, target: Path, certs: CertificateFactory) -> None:
    """Write a generated model into a copy of an empty schema 0.46 database."""
    shutil.copyfile(template, target)
    rows = RowWriter(target, seed=model.now)
    created = db_time(model.now - 30 * DAY)
    accounts = [rows.account(f'["mailto:user{index}@example.com"]', created) for index in range(model.accounts)]
    orders = [rows.order(_reference(accounts, order["account"]), order["status_id"], order["expires"],
                         ["host.example.test"], created) for order in model.orders]
    authorizations = [rows.authorization(_reference(orders, authz["order"]), "host.example.test", authz["status_id"],
                                         authz["expires"], created) for authz in model.authorizations]
    for challenge in model.challenges:
        rows.challenge(_reference(authorizations, challenge["authorization"]), "http-01", challenge["status_id"],
                       challenge["expires"], created)

    for serial, row in enumerate(model.certificates, start=0x100):
        pair = certs.issue(row.not_before, row.not_after, serial_number=serial)
        der = base64.b64decode(pair.cert_raw)
        cert_raw = {
            "valid": pair.cert_raw,
            "urlsafe": base64.urlsafe_b64encode(der).decode("ascii").rstrip("="),
            "malformed": "not base64!",
            "truncated": pair.cert_raw[:100],
            "none": None,
            "empty": "",
        }[row.raw_kind]
        cert = {
            "chain": pair.chain_pem,
            "leaf": pair.leaf_pem,
            "empty": "",
            "marker": marker(model.now - DAY),
            "old_marker": marker(model.now - DAY, trailing_space=True),
            "upper_marker": marker(model.now - DAY).upper(),
            "none": None,
        }[row.cert_kind]
        rows.certificate(_reference(orders, row.order), row.created_at, cert=cert, cert_raw=cert_raw, csr=row.csr,
                         issue_uts=row.issue_uts, expire_uts=row.expire_uts, serial=f"{serial:x}",
                         renewal_info=None if row.cert_kind in ("leaf", "empty") else "stored", poll_identifier="poll")
    for created_at in model.nonces:
        rows.nonce(created_at)
    rows.close()


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory):
    server = UpstreamServer(tmp_path_factory.mktemp("upstream-server"), nonce_validity=NONCE_VALIDITY)
    yield server
    server.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "empty-046.db"
    create_upstream_046(path)
    return path


@pytest.fixture(scope="module")
def certificates() -> CertificateFactory:
    return CertificateFactory()


def _run_upstream(server: UpstreamServer, source: Path, workdir: Path, now: int) -> Dict[str, Any]:
    """Run every operation on a fresh copy with acme2certifier and return the results by name."""
    steps: List[Dict[str, Any]] = [
        {"op": "copy", "source": str(source), "target": str(server.database)},
        {"op": "certificate_report", "format": "json", "name": str(workdir / "upstream-certificates")},
        {"op": "account_report", "format": "json", "name": str(workdir / "upstream-accounts")},
    ]
    for name, _table, step in OPERATIONS:
        steps.append({"op": "copy", "source": str(source), "target": str(server.database)})
        steps.append({**step, "uts": now})
        steps.append({"op": "copy", "source": str(server.database), "target": str(workdir / f"upstream-{name}.db")})
    results = server.run(steps)
    named = {"certificate_report": results[1], "account_report": results[2]}
    for index, (name, _table, _step) in enumerate(OPERATIONS):
        named[name] = results[3 + 3 * index + 1]
    return named


def _run_engine(source: Path, workdir: Path, now: int) -> None:
    """Run every operation on a fresh copy with the engine of the modules."""
    for name, _table, _step in OPERATIONS:
        target = workdir / f"ours-{name}.db"
        shutil.copyfile(source, target)
        settings_ = engine.Settings(database=str(target), now=now)
        if name in ("orders", "authorizations"):
            engine.run_invalidate(settings_, [name], check_mode=False)
        elif name == "nonces":
            engine.run_cleanup(settings_, ["nonces"], check_mode=False, nonce_validity=NONCE_VALIDITY)
        elif name == "certificate_dates":
            engine.run_cleanup(settings_, ["certificate_dates"], check_mode=False)
        else:
            engine.run_cleanup(settings_, ["certificates"], check_mode=False, purge=name == "certificates_purge")
    for report in ("certificates", "accounts"):
        engine.run_report(engine.Settings(database=str(source)), report, "json", False, str(workdir / f"ours-{report}.json"),
                          check_mode=False)


def _complete_chains(rows: List[Dict[str, Any]]) -> List[tuple]:
    keys = ("account.id", "order.id", "authorization.id", "challenge.id", "order.status.name",
            "authorization.status.name", "challenge.status.name")
    return sorted(tuple(row[key] for key in keys[:4]) for row in rows if all(row.get(key) is not None for key in keys))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(model=models())
def test_selection_matches_upstream(model, upstream_server, template, certificates):
    with tempfile.TemporaryDirectory(prefix="acmehk-property-") as directory:
        workdir = Path(directory)
        source = workdir / "source.db"
        build(model, template, source, certificates)

        upstream = _run_upstream(upstream_server, source, workdir, model.now)
        failures = {name: result["error"] for name, result in upstream.items() if result["error"]}
        assert not failures, f"acme2certifier raised on a generated database: {failures}"
        _run_engine(source, workdir, model.now)

        for name, table, _step in OPERATIONS:
            theirs, ours = workdir / f"upstream-{name}.db", workdir / f"ours-{name}.db"
            assert changed_ids(source, ours, table) == changed_ids(source, theirs, table), f"{name} selects other rows"
            differences = compare_databases(ours, theirs, name)
            assert not differences, f"{name} writes other values: {differences}"

        upstream_certificates = upstream["certificate_report"]["returned"] or []
        our_certificates = json.loads((workdir / "ours-certificates.json").read_text(encoding="utf-8"))
        assert [row["certificate.id"] for row in our_certificates] == sorted(
            row["certificate.id"] for row in upstream_certificates)

        upstream_accounts = upstream["account_report"]["returned"] or []
        our_accounts = json.loads((workdir / "ours-accounts.json").read_text(encoding="utf-8"))
        assert _complete_chains(our_accounts) == _complete_chains(upstream_accounts)

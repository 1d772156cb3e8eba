# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Housekeeping on the database of a running acme2certifier 0.46.3 server under load.

tests/acme_server/load.py runs the real server on 127.0.0.1 inside a loopback-only network
namespace, and three real ACME clients (python acme library) issue up to 20 certificates
each within 60 s. Before the clients start, the test adds thousands of aged rows to the
server's database, spread over the 30 days before the test. While the clients run, the test
repeats invalidation, cleanup (dates back-fill, blank, purge, nonces) and both reports on the
same database. Most rounds go through the engine runner, which times each write transaction.
Every third round goes through ansible-playbook with the real modules.

Each round moves the now option forward through those 30 days, so every round has rows to
change, but now stays at least one day before the test. Rows the live server writes expire
one day after their creation at the earliest, so no rule of acme2certifier allows touching
them. The aged rows move step by step to their final state.

Afterwards:

* no client request failed and the server logged no lock error;
* every certificate a client received is in the database with the same DER bytes, its order
  and authorizations still valid;
* the aged rows are exactly as acme2certifier 0.46.3's own Housekeeping class leaves them
  when it runs once on a copy taken before the load, with the final cutoff. Aged nonces may
  also be gone, because the server deletes nonces older than one day on every newNonce
  request;
* the figures (server call durations, longest housekeeping write transaction) go to
  build/reliability/live-server.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from conftest import COLLECTIONS, REPO
from hk_support import DAY, BulkShape, fill_bulk_rows, run_ops, write_figures

sys.path.insert(0, str(REPO / "tests" / "acme_server"))
import lab  # noqa: E402  pylint: disable=wrong-import-position
import load  # noqa: E402  pylint: disable=wrong-import-position

CLIENTS = 3
CERTS_PER_CLIENT = 20
MAX_SECONDS = 60.0
# Aged rows lie between 30 and 2 days before the test. The rounds sweep now over that range
# in this many steps and then stay at the final now, one day before the test.
SWEEP_STEPS = 8
BATCH_SIZE = 50
WARMUP_SECONDS = 8
TABLES = ("account", "orders", "authorization", "challenge", "certificate", "nonce")


def _rows(database: Path, table: str) -> Dict[int, tuple]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {row[0]: row for row in connection.execute(f'SELECT * FROM "{table}"')}
    finally:
        connection.close()


def _seed(database: Path, copy: Path, started: int) -> Dict[str, List[int]]:
    """Add aged rows while the server is idle, copy the database, and return the ids per table."""
    connection = sqlite3.connect(database, timeout=30)
    try:
        counts = fill_bulk_rows(connection, BulkShape(orders=1000, nonces=2000, accounts=50),
                                started - 30 * DAY, started - 2 * DAY, prefix="aged")
        connection.execute(f"VACUUM INTO '{copy}'")
    finally:
        connection.close()
    assert counts["orders"] == 1000
    return {table: sorted(_rows(copy, table)) for table in TABLES}


def _round_ops(database: Path, now: int, reports: Path) -> List[Dict[str, Any]]:
    settings = {"database": str(database), "now": now, "batch_size": BATCH_SIZE, "busy_timeout": 30}
    report_settings = {key: value for key, value in settings.items() if key != "now"}
    return [
        {"op": "invalidate", "settings": settings, "args": {"targets": ["orders", "authorizations"], "check_mode": False}},
        {"op": "cleanup", "settings": settings, "args": {
            "targets": ["certificate_dates", "certificates", "nonces"], "check_mode": False}},
        {"op": "report", "settings": report_settings, "args": {
            "report": "accounts", "report_format": "json", "nested": True, "dest": str(reports / "accounts.json"),
            "check_mode": False}},
        {"op": "report", "settings": report_settings, "args": {
            "report": "certificates", "report_format": "csv", "nested": False, "dest": str(reports / "certificates.csv"),
            "check_mode": False}},
        {"op": "cleanup", "settings": settings, "args": {"targets": ["certificates"], "purge": True,
                                                         "check_mode": False}},
    ]


def _playbook_round(ops: List[Dict[str, Any]], workdir: Path) -> List[Dict[str, Any]]:
    """Run the same round through ansible-playbook, one module task per operation."""
    modules = {"invalidate": "acme_hk_invalidate", "cleanup": "acme_hk_cleanup", "report": "acme_hk_report"}

    tasks = []
    for index, item in enumerate(ops):
        args = dict(item["settings"])
        for key, value in item["args"].items():
            if key == "check_mode":
                continue
            args[{"report_format": "format"}.get(key, key) if item["op"] == "report" else key] = value
        tasks.append(textwrap.indent(textwrap.dedent(f"""\
            - name: Round task {index}
              acmeops.housekeeping.{modules[item['op']]}: {json.dumps(args)}
              register: outcome{index}
            - name: Save result {index}
              ansible.builtin.copy:
                content: "{{{{ outcome{index} | to_json }}}}"
                dest: "{workdir / f'result-{index}.json'}"
            """), "    "))

    play = workdir / "round.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + "".join(tasks), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable))
    ansible_playbook = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    done = subprocess.run([ansible_playbook, "-i", "localhost,", "-c", "local", str(play)], capture_output=True,
                          text=True, env=env, cwd=workdir, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    results = []
    for index, item in enumerate(ops):
        result = json.loads((workdir / f"result-{index}.json").read_text(encoding="utf-8"))
        result["op"] = item["op"]
        results.append(result)
    return results


def _run_upstream(copy: Path, config: Path, cutoff: int, folder: Path) -> None:
    """Run acme2certifier's Housekeeping once on copy with the final cutoff, as a reference."""
    upstream_config = folder / "acme_srv.cfg"
    lines = [line for line in config.read_text(encoding="utf-8").splitlines() if not line.startswith("dbfile")]
    upstream_config.write_text("\n".join(lines).replace("[DBhandler]", f"[DBhandler]\ndbfile: {copy}") + "\n",
                               encoding="utf-8")
    script = textwrap.dedent(f"""
        import logging
        from acme2certifier.acme_srv.housekeeping import Housekeeping
        logger = logging.getLogger("upstream")
        logger.addHandler(logging.NullHandler())
        with Housekeeping(False, logger) as housekeeping:
            housekeeping.orders_invalidate(uts={cutoff})
            housekeeping.authorizations_invalidate(uts={cutoff})
            housekeeping.certificate_dates_update()
            housekeeping.certificates_cleanup(uts={cutoff}, purge=True)
            housekeeping.nonce_cleanup(uts={cutoff})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False,
                          env={"ACME_SRV_CONFIGFILE": str(upstream_config), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


def _check_certificates(database: Path, clients: List[Dict[str, Any]]) -> int:
    """Check that every certificate a client received is stored unchanged; return how many."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    checked = 0
    try:
        for client in clients:
            for record in client["issued"]:
                row = connection.execute(
                    "SELECT certificate.cert, certificate.cert_raw, certificate.expire_uts, orders.id, status.name "
                    "FROM certificate JOIN orders ON orders.id = certificate.order_id "
                    "JOIN status ON status.id = orders.status_id WHERE certificate.name = ?",
                    (record["certificate"],)).fetchone()
                assert row is not None, f"certificate {record['certificate']} of client {client['client']} is gone"
                cert, cert_raw, expire_uts, order_id, order_status = row
                assert cert_raw == record["der_base64"], f"cert_raw of {record['certificate']} changed"
                assert cert and "-----BEGIN CERTIFICATE-----" in cert and "removed by" not in cert
                assert expire_uts == record["not_after_uts"]
                assert order_status == "valid", f"order of {record['certificate']} is {order_status}"
                statuses = [name for (name,) in connection.execute(
                    'SELECT status.name FROM "authorization" JOIN status ON status.id = "authorization".status_id '
                    'WHERE "authorization".order_id = ?', (order_id,))]
                assert statuses and set(statuses) == {"valid"}, f"authorizations of {record['certificate']}: {statuses}"
                checked += 1
    finally:
        connection.close()
    return checked


def _percentile(values: List[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)]


def _call_figures(durations: List[float]) -> Dict[str, Any]:
    return {"calls": len(durations), "p50_ms": round(1000 * _percentile(durations, 0.5), 2),
            "p99_ms": round(1000 * _percentile(durations, 0.99), 2),
            "max_ms": round(1000 * max(durations, default=0.0), 2),
            "over_100ms": sum(1 for value in durations if value > 0.1),
            "over_1s": sum(1 for value in durations if value > 1.0)}


def _server_figures(server: Dict[str, Any], windows: List[Tuple[float, float]], warmup_end: float) -> Dict[str, Any]:
    """Split the server's SQLite calls into warm-up (no housekeeping) and during housekeeping processes.

    A call counts as during housekeeping when it started while a housekeeping process ran.
    """
    phases: Dict[str, Dict[str, List[float]]] = {
        "warmup": {"COMMIT": [], "statement": []}, "during_housekeeping": {"COMMIT": [], "statement": []},
        "between_rounds": {"COMMIT": [], "statement": []}}
    for started, seconds, keyword in server["timeline"]:
        if started < warmup_end:
            phase = "warmup"
        elif any(low <= started <= high for low, high in windows):
            phase = "during_housekeeping"
        else:
            phase = "between_rounds"
        phases[phase]["COMMIT" if keyword == "COMMIT" else "statement"].append(seconds)
    return {"calls": server["calls"], "lock_errors": server["lock_errors"],
            **{phase: {kind: _call_figures(values) for kind, values in kinds.items()}
               for phase, kinds in phases.items()}}


ROUND_LABELS = ("invalidate", "cleanup-blank", "report-accounts", "report-certificates", "cleanup-purge")


def test_housekeeping_under_load(tmp_path):
    try:
        lab.unshare_command()
    except lab.LabError as err:
        pytest.skip(str(err))
    options = load.LoadOptions(workdir=tmp_path / "lab", clients=CLIENTS, certs_per_client=CERTS_PER_CLIENT,
                               max_seconds=MAX_SECONDS, go_timeout=120)
    run = load.LoadRun(options)
    reports = tmp_path / "reports"
    reports.mkdir()
    rounds: List[Dict[str, Any]] = []
    windows: List[Tuple[float, float]] = []
    run.start()
    try:
        database = Path(run.wait_ready()["database"])
        started = int(time.time())
        aged_copy = tmp_path / "aged-copy.db"
        aged_ids = _seed(database, aged_copy, started)
        first_now, final_now = started - 30 * DAY, started - DAY
        run.release()
        # The first seconds without housekeeping give the server's normal call durations.
        time.sleep(WARMUP_SECONDS)
        warmup_end = time.time()

        number = 0
        while run.running():
            number += 1
            now = min(first_now + number * (final_now - first_now) // SWEEP_STEPS, final_now)
            ops = _round_ops(database, now, reports)
            begin = time.time()
            if number % 3 == 0:
                round_dir = tmp_path / f"round-{number}"
                round_dir.mkdir()
                results = _playbook_round(ops, round_dir)
                via = "ansible-playbook"
            else:
                results = run_ops(ops, timeout=300)
                via = "engine"
            windows.append((begin, time.time()))
            rounds.append({"round": number, "now": now, "via": via, "during_load": run.running(),
                           "results": results})
        summary = run.wait()
    finally:
        run.stop()

    # The final state needs a round at final_now. When the clients were faster than the sweep,
    # the remaining rounds run now and are marked as run after the load.
    while not rounds or rounds[-1]["now"] < final_now:
        number += 1
        now = min(first_now + number * (final_now - first_now) // SWEEP_STEPS, final_now)
        rounds.append({"round": number, "now": now, "via": "engine", "during_load": False,
                       "results": run_ops(_round_ops(database, now, reports), timeout=300)})

    clients = summary["clients"]
    failures = [(client["client"], failure) for client in clients for failure in client["failures"]]
    assert not failures, f"client requests failed: {failures}"
    assert all(client["returncode"] == 0 and not client["killed"] for client in clients), clients
    issued = sum(len(client["issued"]) for client in clients)
    assert issued >= CLIENTS, "the clients issued almost no certificates"
    server = summary["server_sqlite"]
    assert server["lock_errors"] == 0, server["errors"]
    assert not [line for line in summary["server_log_errors"] if "locked" in line], summary["server_log_errors"]
    assert _check_certificates(database, clients) == issued

    rounds_during_load = [item for item in rounds if item["during_load"]]
    changed_during_load = sum(
        result.get(key, {}).get("count", 0) for item in rounds_during_load for result in item["results"]
        if result["op"] != "report" for key in ("orders", "authorizations", "certificates", "nonces", "certificate_dates"))
    assert len(rounds_during_load) >= 2, f"only {len(rounds_during_load)} rounds ran while the clients worked"
    assert changed_during_load > 0, "housekeeping changed no row while the clients worked"

    upstream_dir = Path(tempfile.mkdtemp(prefix="acmehk-upstream-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK)
                                         else tmp_path))
    try:
        upstream_db = upstream_dir / "acme_srv.db"
        shutil.copyfile(aged_copy, upstream_db)
        _run_upstream(upstream_db, run.paths.config, final_now, upstream_dir)
        for table in TABLES:
            ours, theirs = _rows(database, table), _rows(upstream_db, table)
            for row_id in aged_ids[table]:
                if table == "nonce" and row_id not in ours:
                    # The server itself deletes nonces older than [Nonce] validity on every
                    # newNonce request, with the real time; every aged nonce is that old.
                    continue
                assert ours.get(row_id) == theirs.get(row_id), (
                    f"{table} row {row_id} differs from acme2certifier's housekeeping: {ours.get(row_id)} != "
                    f"{theirs.get(row_id)}")
    finally:
        shutil.rmtree(upstream_dir, ignore_errors=True)

    engine_transactions = [result["transactions"] for item in rounds for result in item["results"]
                           if "transactions" in result]
    max_transaction = {label: max((item["results"][index]["transactions"]["max_seconds"] for item in rounds
                                   if item["via"] == "engine"), default=0.0)
                       for index, label in enumerate(ROUND_LABELS)}
    figures = {
        "clients": CLIENTS,
        "certificates_issued": issued,
        "client_seconds": max(client["elapsed_seconds"] for client in clients),
        "rounds": len(rounds),
        "rounds_during_load": len(rounds_during_load),
        "rounds_through_ansible_playbook": sum(1 for item in rounds if item["via"] == "ansible-playbook"),
        "rows_changed_during_load": changed_during_load,
        "housekeeping_write_transactions": sum(item["count"] for item in engine_transactions),
        "housekeeping_max_write_transaction_seconds": max_transaction,
        "housekeeping_max_begin_immediate_wait_seconds": max(item["max_begin_wait_seconds"]
                                                             for item in engine_transactions),
        "server_sqlite": _server_figures(server, windows, warmup_end),
    }
    path = write_figures("live-server", figures)
    print(f"figures in {path}:\n{json.dumps(figures, indent=2)}")

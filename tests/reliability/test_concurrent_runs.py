# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two runs of the same operation on the same database at the same time.

The engine takes an exclusive flock on the database file for the whole run. The second run
waits for the first, up to busy_timeout. Then it finds nothing left to do, or it fails with a
message that names the lock. Either way every row is changed once, and the counts of both
runs add up to the count of a single run.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import COLLECTIONS, REPO
from hk_support import (
    NONCE_VALIDITY,
    NOW,
    BulkShape,
    build_bulk_database,
    changed_ids,
    integrity,
    module_pid,
    op,
    run_ops,
    snapshot,
    start_runner,
)

# (result key, table) pairs each operation changes, and its engine arguments.
OPERATIONS = {
    "invalidate": ("invalidate", {"targets": ["orders", "authorizations"]},
                   (("orders", "orders"), ("authorizations", "authorization"))),
    "cleanup-blank": ("cleanup", {"targets": ["certificates"]}, (("certificates", "certificate"),)),
    "cleanup-purge": ("cleanup", {"targets": ["certificates"], "purge": True}, (("certificates", "certificate"),)),
    "cleanup-nonces": ("cleanup", {"targets": ["nonces"], "nonce_validity": NONCE_VALIDITY}, (("nonces", "nonce"),)),
}


@pytest.fixture(scope="module")
def bulk_db(tmp_path_factory) -> Path:
    return build_bulk_database(tmp_path_factory.mktemp("concurrent") / "bulk.db", BulkShape(orders=600, nonces=1200))


def _copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "acme_srv.db"
    shutil.copyfile(source, target)
    return target


def _ops(name: str, database: Path, **settings: Any) -> List[Dict[str, Any]]:
    engine_op, args, _phases = OPERATIONS[name]
    merged = {"batch_size": 20}
    merged.update(settings)
    return [op(engine_op, database, merged, **args)]


def _expected(name: str, bulk_db: Path, folder: Path):
    """Run the operation once, alone, and return its counts and final rows."""
    database = _copy(bulk_db, folder)
    old = snapshot(database)
    result = run_ops(_ops(name, database))[0]
    new = snapshot(database)
    counts = {key: result[key]["count"] for key, _table in OPERATIONS[name][2]}
    for key, table in OPERATIONS[name][2]:
        assert counts[key] == len(changed_ids(old, new, table)) > 0
    return counts, new


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_second_run_waits(name, bulk_db, tmp_path):
    """The second run waits for the lock, then finds the work done and changes nothing."""
    counts, expected = _expected(name, bulk_db, tmp_path / "alone")
    database = _copy(bulk_db, tmp_path / "shared")

    # The first run stops after its first COMMIT, holding the lock, until the test releases it.
    first = start_runner(_ops(name, database), pause=(1, -1))
    assert first.wait_for("paused ") is not None
    second = start_runner(_ops(name, database, busy_timeout=60), trace=True)
    assert second.wait_for("start ") is not None
    time.sleep(0.5)
    assert second.process.poll() is None, f"the second run did not wait for the first: {second.finish()}"
    assert not [line for line in second.lines if line.startswith("begin ")], "the second run wrote while the first held the lock"

    first.process.stdin.write(b"\n")  # type: ignore[union-attr]
    first.process.stdin.flush()  # type: ignore[union-attr]
    first_code, first_results, first_failure, first_err = first.finish()
    second_code, second_results, second_failure, second_err = second.finish()

    assert first_failure is None, first_err
    assert first_code == 0, first_err
    assert second_failure is None, second_err
    assert second_code == 0, second_err
    for key in counts:
        assert first_results[0][key]["count"] == counts[key]
        assert second_results[0][key]["count"] == 0
    assert second_results[0]["changed"] is False
    assert snapshot(database) == expected
    assert integrity(database) == "ok"


@pytest.mark.parametrize("name", ["invalidate", "cleanup-purge"])
def test_second_run_times_out(name, bulk_db, tmp_path):
    """With a short busy_timeout the second run fails with a message that names the lock, and writes nothing."""
    counts, expected = _expected(name, bulk_db, tmp_path / "alone")
    database = _copy(bulk_db, tmp_path / "shared")

    first = start_runner(_ops(name, database), pause=(1, -1))
    assert first.wait_for("paused ") is not None
    before = snapshot(database)
    failure = run_ops(_ops(name, database, busy_timeout=0.5), expect_failure=True)
    assert snapshot(database) == before

    first.process.stdin.write(b"\n")  # type: ignore[union-attr]
    first.process.stdin.flush()  # type: ignore[union-attr]
    code, results, first_failure, err = first.finish()

    assert "Another housekeeping run holds the lock" in failure["msg"]
    assert str(database) in failure["msg"]
    assert "busy_timeout=0.5" in failure["msg"]
    assert first_failure is None, err
    assert code == 0, err
    for key in counts:
        assert results[0][key]["count"] == counts[key]
    assert snapshot(database) == expected


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_simultaneous_start(name, bulk_db, tmp_path):
    """Two runs started together: their counts add up to one run, and the rows end as after one run."""
    counts, expected = _expected(name, bulk_db, tmp_path / "alone")
    for attempt in range(3):
        database = _copy(bulk_db, tmp_path / f"shared-{attempt}")
        runners = [start_runner(_ops(name, database, busy_timeout=60)) for _unused in range(2)]
        outcomes = [runner.finish() for runner in runners]

        for code, _results, failure, err in outcomes:
            assert failure is None, err
            assert code == 0, err
        for key in counts:
            assert sum(results[0][key]["count"] for _code, results, _failure, _err in outcomes) == counts[key]
        assert snapshot(database) == expected


def test_simultaneous_reports_same_dest(bulk_db, tmp_path):
    """Two reports written to the same dest at once leave one complete report and no temporary file."""
    database = _copy(bulk_db, tmp_path / "db")
    reports = tmp_path / "reports"
    reports.mkdir()
    dest = reports / "certificates.csv"
    ops = [op("report", database, {"batch_size": 50}, report="certificates", report_format="csv", nested=False,
              dest=str(dest))]
    run_ops(ops)
    expected = dest.read_bytes()
    dest.unlink()

    runners = [start_runner(ops) for _unused in range(2)]
    outcomes = [runner.finish() for runner in runners]

    for code, _results, failure, err in outcomes:
        assert failure is None, err
        assert code == 0, err
    assert dest.read_bytes() == expected
    assert os.listdir(reports) == ["certificates.csv"]


# Two modules through ansible-playbook -----------------------------------------------------


def _play(path: Path, database: Path, result_file: Path) -> Path:
    path.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Invalidate expired orders and authorizations
              acmeops.housekeeping.acme_hk_invalidate:
                database: "{database}"
                now: {NOW}
                batch_size: 5
                busy_timeout: 120
              register: invalidated
            - name: Save the result
              ansible.builtin.copy:
                content: "{{{{ invalidated | to_json }}}}"
                dest: "{result_file}"
        """), encoding="utf-8")
    return path


def test_two_modules_at_once(bulk_db, tmp_path):
    """Two acme_hk_invalidate tasks in separate ansible-playbook runs overlap; only one changes rows."""
    counts, expected = _expected("invalidate", bulk_db, tmp_path / "alone")
    database = _copy(bulk_db, tmp_path / "shared")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable))
    ansible_playbook = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    results = [tmp_path / f"result-{number}.json" for number in range(2)]
    plays = [_play(tmp_path / f"play-{number}.yml", database, results[number]) for number in range(2)]
    processes = [subprocess.Popen(  # pylint: disable=consider-using-with
        [ansible_playbook, "-i", "localhost,", "-c", "local", str(play)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=env, cwd=REPO) for play in plays]

    # Both module processes alive at the same moment while the database is being written
    # proves that the runs overlapped.
    overlapped = False
    deadline = time.monotonic() + 300
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        alive = [module_pid(process.pid, "acme_hk_invalidate") for process in processes]
        if all(alive) and Path(f"{database}-journal").exists():
            overlapped = True
        time.sleep(0.02)
    outputs = [process.communicate(timeout=60)[0].decode("utf-8", "replace") for process in processes]

    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    values = [json.loads(path.read_text(encoding="utf-8")) for path in results]
    for key in counts:
        assert sorted(value[key]["count"] for value in values) == [0, counts[key]]
    assert snapshot(database) == expected
    assert overlapped, "the two module runs did not overlap, so the test proved nothing; make the database larger"


# A module and the scheduled job -----------------------------------------------------------

JOB_MODULE = "ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.job"


def test_module_and_job_at_once(bulk_db, tmp_path):
    """The scheduled job starts while acme_hk_invalidate writes; it waits and then finds nothing to invalidate."""
    if not (REPO / "plugins" / "module_utils" / "_acmehk" / "job.py").exists():
        pytest.skip("the scheduled job (plugins/module_utils/_acmehk/job.py) does not exist")
    counts, expected = _expected("invalidate", bulk_db, tmp_path / "alone")
    database = _copy(bulk_db, tmp_path / "shared")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({
        "report_dir": str(tmp_path / "job-reports"), "status_file": str(tmp_path / "job-status.json"),
        "lock_file": str(tmp_path / "job.lock"), "database": str(database), "now": NOW, "batch_size": 20,
        "busy_timeout": 120, "cleanup": False, "operation_reports": False, "account_report": False,
        "certificate_report": False,
    }), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable),
               PYTHONPATH=str(COLLECTIONS))
    ansible_playbook = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    module_result = tmp_path / "module-result.json"
    playbook = subprocess.Popen(  # pylint: disable=consider-using-with
        [ansible_playbook, "-i", "localhost,", "-c", "local", str(_play(tmp_path / "play.yml", database, module_result))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{database}-journal").exists():
            assert playbook.poll() is None, "the module ended before it wrote anything"
            assert time.monotonic() < deadline, "the module wrote nothing within 120 s"
            time.sleep(0.001)
        assert module_pid(playbook.pid, "acme_hk_invalidate") is not None
        job = subprocess.run([sys.executable, "-m", JOB_MODULE, "--config", str(job_file)], capture_output=True,
                             text=True, env=env, timeout=300, check=False)
        output = playbook.communicate(timeout=300)[0].decode("utf-8", "replace")
    finally:
        if playbook.poll() is None:
            playbook.kill()
            playbook.wait()

    assert playbook.returncode == 0, output
    assert job.returncode == 0, job.stderr
    status = json.loads((tmp_path / "job-status.json").read_text(encoding="utf-8"))
    module = json.loads(module_result.read_text(encoding="utf-8"))
    for key in counts:
        assert module[key]["count"] == counts[key]
        assert status["counts"][key] == 0
    assert snapshot(database) == expected


# Rows that change between planning and writing --------------------------------------------

# How the test makes a planned row ineligible: the table, the SQL, and the engine operation.
CHANGES = {
    "invalidate": ("orders", "UPDATE orders SET expires = ? WHERE id = ?", NOW + 30 * 86400),
    "cleanup-nonces": ("nonce", "UPDATE nonce SET created_at = ? WHERE id = ?", "2026-12-03 23:00:00"),
    "cleanup-blank": ("certificate", "UPDATE certificate SET expire_uts = ? WHERE id = ?", NOW + 30 * 86400),
    "cleanup-purge": ("certificate", "UPDATE certificate SET expire_uts = ? WHERE id = ?", NOW + 30 * 86400),
}


@pytest.mark.parametrize("name", [
    "invalidate", "cleanup-nonces",
    "cleanup-blank",
    "cleanup-purge",
])
def test_row_changed_after_planning(name, bulk_db, tmp_path):
    """A planned row that stops being eligible before its batch is written stays as it is."""
    table, statement, value = CHANGES[name]
    old = snapshot(_copy(bulk_db, tmp_path / "old"))
    _counts, expected = _expected(name, bulk_db, tmp_path / "alone")
    planned = changed_ids(old, expected, table)
    assert len(planned) > 40
    row_id = planned[30]  # in the second batch of 20
    database = _copy(bulk_db, tmp_path / "shared")

    runner = start_runner(_ops(name, database), pause=(1, -1))
    assert runner.wait_for("paused ") is not None
    connection = sqlite3.connect(database)
    try:
        connection.execute(statement, (value, row_id))
        connection.commit()
    finally:
        connection.close()
    changed_row = snapshot(database)[table][row_id]
    runner.process.stdin.close()  # type: ignore[union-attr]
    code, _results, failure, err = runner.finish()

    assert failure is None, err
    assert code == 0, err
    assert snapshot(database)[table].get(row_id) == changed_row

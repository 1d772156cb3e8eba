# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""SIGKILL during every write operation and during report writing, then a rerun.

Each case copies a generated database with thousands of rows and starts the operation with a
small batch_size in hk_runner.py. It kills the run at a random spot inside or after a randomly
chosen write transaction, or at a random time within the operation. After each kill:

* PRAGMA integrity_check returns ok;
* every row is in its state before the run or in its state after a complete run, and the
  changed rows are whole batches in id order (no batch committed in part);
* a report at dest is the old file or the complete new one;
* a rerun changes exactly the rows the killed run left, and the database ends identical to
  the one a single complete run produces.

ACMEHK_SEED varies the random choices; the seed is printed for every case.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import COLLECTIONS
from hk_support import (
    NONCE_VALIDITY,
    NOW,
    BulkShape,
    assert_old_or_new,
    assert_whole_batches,
    build_bulk_database,
    changed_ids,
    files_open_in,
    integrity,
    module_pid,
    op,
    run_ops,
    seeded_random,
    snapshot,
    start_runner,
    write_figures,
)

BATCH_SIZE = 20


@dataclass(frozen=True)
class CrashCase:
    """One write operation to kill: how to run it, which tables it writes in which order."""

    name: str
    build_ops: Callable[[Path], List[Dict[str, Any]]]
    # (result key, table) pairs in the order the operation writes them.
    phases: Tuple[Tuple[str, str], ...]
    kills: int
    journal_mode: str = "delete"
    # "transaction": kill at a random spot in or right after a randomly chosen write transaction.
    # "time": kill at a random moment of the whole operation, which also covers reading, report
    # writing and backups.
    kill_at: str = "transaction"
    batch_size: int = BATCH_SIZE
    # On disk, every COMMIT waits for fsync (about 8 ms on the test machine), and the kill comes
    # after a random delay. The other cases run on /dev/shm (a tmpfs) and stop the runner at
    # the chosen spot. SIGKILL leaves the page cache intact, so the outcome does not depend on
    # fsync, and the runs are several times faster.
    on_disk: bool = False


def _settings() -> Dict[str, Any]:
    # Fixed batches (batch_time 0), so every transaction changes a known number of rows.
    return {"batch_size": BATCH_SIZE, "batch_time": 0}


def _invalidate(database: Path) -> List[Dict[str, Any]]:
    return [op("invalidate", database, _settings(), targets=["orders", "authorizations"])]


def _blank(database: Path) -> List[Dict[str, Any]]:
    return [op("cleanup", database, _settings(), targets=["certificates"])]


def _purge(database: Path) -> List[Dict[str, Any]]:
    return [op("cleanup", database, _settings(), targets=["certificates"], purge=True)]


def _nonces(database: Path) -> List[Dict[str, Any]]:
    return [op("cleanup", database, _settings(), targets=["nonces"], nonce_validity=NONCE_VALIDITY)]


def _dates(database: Path) -> List[Dict[str, Any]]:
    # Fewer rows need back-filled dates, so smaller batches give the kills enough transactions.
    return [op("cleanup", database, {"batch_size": 5, "batch_time": 0}, targets=["certificate_dates"])]


def _backup(database: Path) -> List[Dict[str, Any]]:
    return [op("cleanup", database, _settings(), targets=["certificates"], purge=True, backup=True)]


def _report_dest(database: Path) -> List[Dict[str, Any]]:
    return [op("cleanup", database, _settings(), targets=["certificates"], purge=True,
               report_dest=str(database.parent / "purged.csv"))]


CASES = [
    CrashCase("invalidate", _invalidate, (("orders", "orders"), ("authorizations", "authorization")), 10,
              on_disk=True),
    CrashCase("cleanup-blank", _blank, (("certificates", "certificate"),), 8),
    CrashCase("cleanup-purge", _purge, (("certificates", "certificate"),), 8),
    CrashCase("cleanup-nonces", _nonces, (("nonces", "nonce"),), 6),
    CrashCase("cleanup-dates", _dates, (("certificate_dates", "certificate"),), 4, batch_size=5),
    CrashCase("invalidate-wal", _invalidate, (("orders", "orders"), ("authorizations", "authorization")), 4,
              journal_mode="wal"),
    CrashCase("cleanup-backup", _backup, (("certificates", "certificate"),), 4, kill_at="time"),
    CrashCase("cleanup-report-dest", _report_dest, (("certificates", "certificate"),), 4, kill_at="time"),
]


@pytest.fixture(scope="session")
def bulk_databases(tmp_path_factory) -> Dict[str, Path]:
    """One generated database per journal mode, copied by every kill."""
    folder = tmp_path_factory.mktemp("bulk")
    # About 50 write transactions for invalidation at batch_size 20: enough spots to kill, few
    # enough fsyncs to keep the suite short.
    shape = BulkShape(orders=800, nonces=1500, accounts=40)
    return {mode: build_bulk_database(folder / f"bulk-{mode}.db", shape, journal_mode=mode)
            for mode in ("delete", "wal")}


@dataclass
class Reference:
    """A complete, uninterrupted run of a case."""

    old: Dict[str, Dict[int, tuple]]
    new: Dict[str, Dict[int, tuple]]
    result: Dict[str, Any]
    report: Optional[bytes]


def _fresh_copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    target = folder / "acme_srv.db"
    shutil.copyfile(source, target)
    return target


def _reference(case: CrashCase, source: Path, folder: Path) -> Reference:
    database = _fresh_copy(source, folder)
    old = snapshot(database)
    result = run_ops(case.build_ops(database), trace=True)[0]
    report = database.parent / "purged.csv"
    return Reference(old=old, new=snapshot(database), result=result,
                     report=report.read_bytes() if report.exists() else None)


def _side_files(database: Path) -> List[str]:
    """List files beside the database other than the database and the report of this test."""
    return sorted(name for name in os.listdir(database.parent) if name not in (database.name, "purged.csv"))


def _kill(case: CrashCase, database: Path, reference: Reference, rng, window: float) -> Dict[str, Any]:
    """Start the case, kill it at a random moment and return what the kill hit.

    In "time" mode the kill comes within window times the reference run's duration.
    """
    transactions = reference.result["transactions"]["count"]
    if case.kill_at == "transaction" and not case.on_disk:
        # A random spot: right after BEGIN, after one of the statements, or after COMMIT.
        target = rng.randint(1, transactions - 1)
        position = rng.randint(-1, reference.result["transactions"]["max_statements"])
        runner = start_runner(case.build_ops(database), pause=(target, position))
        if runner.wait_for("paused ") is None:
            # Transaction target has fewer statements than position (a last, partial batch).
            runner.kill()
            return {"finished_before_kill": True}
    elif case.kill_at == "transaction":
        runner = start_runner(case.build_ops(database), trace=True)
        # The last transaction is left out, so the run cannot end before the kill.
        target = rng.randint(1, transactions - 1)
        line = runner.wait_for(f"begin {target}")
        assert line is not None, f"the run ended before write transaction {target}: {runner.lines[-3:]}"
        # A random share of a mean transaction time, so kills land on statements, on COMMIT
        # (its fsync is most of the time) and just after it.
        mean = reference.result["transactions"]["total_seconds"] / max(transactions, 1)
        time.sleep(rng.uniform(0, mean))
        position = None
    else:
        target = position = None
        runner = start_runner(case.build_ops(database), trace=True)
        line = runner.wait_for("start ")
        assert line is not None, f"the engine runner failed to start: {runner.finish()}"
        time.sleep(rng.uniform(0, window * reference.result["elapsed_seconds"]))
    finished = runner.process.poll() is not None
    runner.kill()
    journal_left = any(name.endswith(("-journal", "-wal")) for name in _side_files(database))
    return {"target_transaction": target, "position": position, "in_transaction": runner.in_transaction(),
            "finished_before_kill": finished, "journal_left": journal_left}


def _check_report(path: Path, reference: Reference) -> str:
    """The cleanup report is absent or complete; return which."""
    if not path.exists():
        return "absent"
    assert path.read_bytes() == reference.report, f"{path} is a partial report after the kill"
    return "complete"


@pytest.fixture
def memory_tmp(tmp_path) -> Iterator[Path]:
    """A fresh directory on /dev/shm (a tmpfs), or tmp_path where /dev/shm is not usable."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="acmehk-crash-", dir="/dev/shm"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_kill_during_write(case, bulk_databases, tmp_path, memory_tmp):
    source = bulk_databases[case.journal_mode]
    if not case.on_disk:
        tmp_path = memory_tmp
    reference = _reference(case, source, tmp_path / "reference")
    planned = {key: changed_ids(reference.old, reference.new, table) for key, table in case.phases}
    assert all(planned.values()), f"the reference run of {case.name} changed nothing: {planned}"
    rng = seeded_random(case.name)
    kills: List[Dict[str, Any]] = []
    window = 0.8
    runs = 0

    while len(kills) < case.kills:
        runs += 1
        assert runs <= 3 * case.kills, f"only {len(kills)} of {runs - 1} runs were killed before they ended"
        index = len(kills)
        database = _fresh_copy(source, tmp_path / f"run-{runs}")
        hit = _kill(case, database, reference, rng, window)
        if hit["finished_before_kill"]:
            window *= 0.7  # This run was faster than the reference, so aim earlier.
            continue

        assert integrity(database) == "ok"
        current = snapshot(database)
        assert_old_or_new(reference.old, reference.new, current)
        done = assert_whole_batches(reference.old, reference.new, current, [table for _key, table in case.phases],
                                    case.batch_size)
        if case.name == "cleanup-report-dest":
            hit["report"] = _check_report(database.parent / "purged.csv", reference)

        rerun = run_ops(case.build_ops(database))[0]
        for key, table in case.phases:
            left = len(planned[key]) - len(changed_ids(reference.old, current, table))
            assert rerun[key]["count"] == left, f"kill {index}: the rerun changed {rerun[key]['count']} {key}, expected {left}"
        assert snapshot(database) == reference.new, f"kill {index}: the rerun did not end in the state of a complete run"
        assert integrity(database) == "ok"
        # Leftovers of killed backups and reports are checked in test_leftovers.py.
        assert not [name for name in _side_files(database) if name in (f"{database.name}-journal", f"{database.name}-wal")]
        hit["rows_done_before_kill"] = done
        kills.append(hit)

    inside = sum(1 for hit in kills if hit["in_transaction"])
    write_figures(f"crash-{case.name}", {
        "case": case.name, "kills": len(kills), "killed_inside_transaction": inside,
        "rows_planned": {key: len(ids) for key, ids in planned.items()},
        "transactions_in_full_run": reference.result["transactions"]["count"],
        "max_transaction_seconds": reference.result["transactions"]["max_seconds"], "runs": runs, "details": kills,
    })
    if case.kill_at == "transaction":
        assert inside >= 1, f"no kill landed inside a write transaction: {kills}"


# Reports ----------------------------------------------------------------------------------


def test_kill_during_report(bulk_databases, memory_tmp):
    """After every kill, dest contains the old report or the complete new one, never part of one."""
    tmp_path = memory_tmp
    source = bulk_databases["delete"]
    database = _fresh_copy(source, tmp_path / "db")
    reports = tmp_path / "reports"
    reports.mkdir()
    dest = reports / "accounts.csv"

    def report_ops() -> List[Dict[str, Any]]:
        return [op("report", database, {"batch_size": BATCH_SIZE}, report="accounts", report_format="csv",
                   nested=False, dest=str(dest))]

    first = run_ops(report_ops())[0]
    old_bytes = dest.read_bytes()
    # A change that alters the report, so a new report differs from the old one.
    run_ops([op("invalidate", database, {"batch_size": 500}, targets=["orders", "authorizations"])])
    shutil.copyfile(dest, tmp_path / "old.csv")
    new_result = run_ops(report_ops())[0]
    new_bytes = dest.read_bytes()
    assert new_bytes != old_bytes
    rng = seeded_random("report")
    outcomes = {"old": 0, "new": 0}
    window = 0.8 * new_result["elapsed_seconds"]
    kills = attempts = 0

    while kills < 8:
        attempts += 1
        assert attempts <= 30, f"only {kills} of 30 runs were killed before they ended"
        shutil.copyfile(tmp_path / "old.csv", dest)
        runner = start_runner(report_ops())
        assert runner.wait_for("start ") is not None
        time.sleep(rng.uniform(0, window))
        finished = runner.process.poll() is not None
        runner.kill()
        if finished:
            window *= 0.7  # This run was faster than the reference; aim earlier.
            continue
        kills += 1
        content = dest.read_bytes()
        assert content in (old_bytes, new_bytes), f"kill {kills}: {dest} holds a partial report ({len(content)} bytes)"
        assert os.listdir(reports) == [dest.name], f"kill {kills}: files left beside dest: {os.listdir(reports)}"
        outcomes["old" if content == old_bytes else "new"] += 1

    rerun = run_ops(report_ops())[0]
    assert dest.read_bytes() == new_bytes
    assert rerun["rows"] == first["rows"]
    write_figures("crash-report", {"kills": kills, "runs": attempts, "dest_after_kill": outcomes})


# Through ansible-playbook -----------------------------------------------------------------


def _playbook_text(module: str, args: Dict[str, Any]) -> str:
    lines = "\n".join(f"        {key}: {json.dumps(value)}" for key, value in args.items())
    return textwrap.dedent("""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: Housekeeping task that the test kills
              acmeops.housekeeping.{module}:
        {lines}
        """).format(module=module, lines=lines)


PLAYBOOK_CASES = {
    "acme_hk_invalidate": ({"targets": ["orders", "authorizations"]},
                           (("orders", "orders"), ("authorizations", "authorization"))),
    "acme_hk_cleanup": ({"targets": ["certificates"], "purge": True}, (("certificates", "certificate"),)),
}


@pytest.mark.parametrize("module", sorted(PLAYBOOK_CASES))
def test_kill_module_process(module, bulk_databases, tmp_path, playbook):
    """Kill the module process that ansible-playbook started while its write transactions run."""
    extra, phases = PLAYBOOK_CASES[module]
    # batch_size 10 makes the writes last about a second, longer than finding the module process.
    database = _fresh_copy(bulk_databases["delete"], tmp_path / "db")
    args = {"database": str(database), "now": NOW, "batch_size": 10, "batch_time": 0}
    args.update(extra)
    old = snapshot(database)
    reference_db = _fresh_copy(bulk_databases["delete"], tmp_path / "reference")
    run_ops([op("invalidate" if module == "acme_hk_invalidate" else "cleanup", reference_db, {"batch_size": 10, "batch_time": 0},
                **extra)])
    new = snapshot(reference_db)
    rng = seeded_random(module)

    play = tmp_path / "kill.yml"
    play.write_text(_playbook_text(module, args), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable))
    ansible_playbook = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [ansible_playbook, "-i", "localhost,", "-c", "local", str(play)], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        pid = None
        while pid is None:
            assert process.poll() is None, "ansible-playbook ended before its module process was seen"
            assert time.monotonic() < deadline, "no module process appeared within 120 s"
            pid = module_pid(process.pid, module)
            time.sleep(0.01)
        journal = Path(f"{database}-journal")
        while not journal.exists():
            assert process.poll() is None, "ansible-playbook ended before the module wrote anything"
            assert time.monotonic() < deadline, "the module wrote nothing within 120 s"
            time.sleep(0.001)
        # A short random delay: the whole write phase can take well under a second.
        time.sleep(rng.uniform(0, 0.02))
        os.kill(pid, signal.SIGKILL)
        output = process.communicate(timeout=120)[0].decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0, f"the play succeeded although its module was killed:\n{output}"

    assert integrity(database) == "ok"
    current = snapshot(database)
    assert_old_or_new(old, new, current)
    done = assert_whole_batches(old, new, current, [table for _key, table in phases], 10)
    assert done < sum(len(changed_ids(old, new, table)) for _key, table in phases), "the kill came after the last write"

    rerun = playbook.run(module, args)
    for key, table in phases:
        assert rerun[key]["count"] == len(changed_ids(current, new, table))
    assert snapshot(database) == new
    assert sorted(os.listdir(database.parent)) == [database.name]


def test_kill_report_module_process(bulk_databases, tmp_path, playbook):
    """Kill acme_hk_report while it writes: dest keeps the old report, and a rerun writes the whole new one."""
    database = _fresh_copy(bulk_databases["delete"], tmp_path / "db")
    reports = tmp_path / "reports"
    reports.mkdir()
    dest = reports / "accounts.json"
    dest.write_text("[]", encoding="utf-8")
    reference = tmp_path / "reference.json"
    run_ops([op("report", database, {"batch_size": 20}, report="accounts", report_format="json", nested=True,
                dest=str(reference))])
    args = {"database": str(database), "report": "accounts", "format": "json", "nested": True, "dest": str(dest),
            "batch_size": 20}
    rng = seeded_random("acme_hk_report")

    play = tmp_path / "kill.yml"
    play.write_text(_playbook_text("acme_hk_report", args), encoding="utf-8")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable))
    ansible_playbook = shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook")
    # The kill comes when the module has the report file open (O_TMPFILE files have no name,
    # /proc shows them), or after fallback seconds.
    fallback = 0.4
    for _attempt in range(4):
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [ansible_playbook, "-i", "localhost,", "-c", "local", str(play)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            pid = None
            while pid is None:
                assert process.poll() is None, "ansible-playbook ended before its module process was seen"
                assert time.monotonic() < deadline, "no module process appeared within 120 s"
                pid = module_pid(process.pid, "acme_hk_report")
                time.sleep(0.01)
            seen = time.monotonic()
            while not ([name for name in os.listdir(reports) if name.endswith(".tmp")]
                       or files_open_in(pid, reports)):
                if time.monotonic() - seen > fallback or process.poll() is not None:
                    break
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.05))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            output = process.communicate(timeout=120)[0].decode("utf-8", "replace")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.returncode != 0:
            break
        dest.write_text("[]", encoding="utf-8")
        fallback /= 2  # The module finished before the kill; aim earlier.
    assert process.returncode != 0, f"the play succeeded in every attempt although its module was killed:\n{output}"
    assert dest.read_text(encoding="utf-8") == "[]", "dest holds a partial report after the kill"

    rerun = playbook.run("acme_hk_report", args)
    assert rerun["changed"] is True
    assert dest.read_bytes() == reference.read_bytes()

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role acmeops.housekeeping.acme_hk through playbooks/fleet.yml over real SSH.

Three sshd instances on 127.0.0.2-4 play the ACME hosts node2, node3 and node4 (see
role_fleet.py). Each test gets fresh databases and directories, runs ansible-playbook and
checks the hosts' files, the databases, the controller's reports and the fleet summary.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shlex
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import EXAMPLE_DB, REPO
from role_fleet import EXAMPLE_COUNTS, FleetRun, query, start_fleet, stop_fleet, tree_state

ZERO_COUNTS = {name: 0 for name in EXAMPLE_COUNTS}
ENGINE_SOURCE = REPO / "plugins" / "module_utils" / "_acmehk"
SYSTEMD_RUNNING = os.path.isdir("/run/systemd/system")
# Files that every playbook run writes: the inventory and Ansible's local temporary folder.
RUN_FILES = ("inventory.json", "ansible-local")
JOB_TIMEOUT = 120


@pytest.fixture(scope="session")
def ssh_fleet(tmp_path_factory):
    fleet = start_fleet(tmp_path_factory.mktemp("sshd"))
    yield fleet
    stop_fleet(fleet)


@pytest.fixture
def fleet(ssh_fleet, tmp_path: Path) -> FleetRun:
    return FleetRun(ssh_fleet, tmp_path)


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze was not found; it checks the rendered unit files. Install Debian's systemd package.")
    return path


def _job_command_from_unit(service: Path) -> List[str]:
    lines = [line for line in service.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, f"expected one ExecStart line in {service}"
    return shlex.split(lines[0][len("ExecStart="):])


def _job_command_from_cron(cron_file: Path) -> Dict[str, str]:
    entries = [line for line in cron_file.read_text().splitlines()
               if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(entries) == 1, f"expected one cron entry in {cron_file}"
    fields = entries[0].split(None, 6)
    return {"time": " ".join(fields[:5]), "user": fields[5], "command": fields[6]}


def _run_job(command, shell: bool = False) -> subprocess.CompletedProcess:
    """Run the job's command as the scheduler would, from / and without a controlling terminal."""
    return subprocess.run(command, shell=shell, cwd="/", capture_output=True, text=True, timeout=JOB_TIMEOUT,
                          check=False, stdin=subprocess.DEVNULL)


def _status(fleet: FleetRun, name: str) -> dict:
    return json.loads((fleet.host_root(name) / "state" / "status.json").read_text())


def _stamped_reports(report_dir: Path) -> List[str]:
    return sorted(path.name for path in report_dir.iterdir() if path.name[:1].isdigit())


def _read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _without(state: dict, prefixes: tuple) -> dict:
    return {key: value for key, value in state.items() if not key.startswith(prefixes)}


def test_run_now_and_systemd_schedule(fleet: FleetRun):
    """Check mode, real run, idempotent rerun, the systemd job run by hand, then its removal."""
    schedule = {"acme_hk_schedule": True, "acme_hk_schedule_backend": "systemd", "acme_hk_schedule_activate": False}
    before = tree_state(fleet.root)

    check = fleet.run(schedule, check=True)
    assert check.returncode == 0, check.describe()
    for name in fleet.names:
        assert check.changed(name) > 0, f"check mode reported no change for {name}"
    assert _without(tree_state(fleet.root), RUN_FILES) == before, "check mode changed files on a host or the controller"
    assert "Show the fleet summary that a real run would write" in check.output

    real = fleet.run(schedule)
    assert real.returncode == 0, real.describe()
    for name in fleet.names:
        database = fleet.database(name)
        assert query(database, "SELECT DISTINCT status_id FROM orders") == [(1,)]
        assert query(database, "SELECT count(*) FROM nonce") == [(0,)]
        reports = sorted(path.name for path in fleet.report_dir(name).iterdir())
        assert reports == [
            "accounts.json",
            "authorizations_invalidate_20261204T000000Z.csv",
            "certificates.csv",
            "certificates_cleanup_20261204T000000Z.csv",
            "orders_invalidate_20261204T000000Z.csv",
        ]
        fetched = fleet.controller_dir / name
        for report in reports:
            assert (fetched / report).read_bytes() == (fleet.report_dir(name) / report).read_bytes()

        units = fleet.host_root(name) / "units"
        service, timer = units / f"acme-hk-{name}.service", units / f"acme-hk-{name}.timer"
        verified = subprocess.run([_systemd_analyze(), "verify", str(service), str(timer)],
                                  capture_output=True, text=True, timeout=60, check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout + verified.stderr == "", "systemd-analyze verify warned about the units"
        assert "OnCalendar=*-*-* 03:15:00" in timer.read_text()
        assert "RandomizedDelaySec=1800" in timer.read_text()
        assert "User=root" in service.read_text()
        assert not (fleet.host_root(name) / "cron" / f"acme-hk-{name}").exists()

        engine = fleet.host_root(name) / "lib" / "acmehk"
        assert sorted(path.name for path in engine.glob("*.py")) == sorted(path.name for path in ENGINE_SOURCE.glob("*.py"))
        for source in ENGINE_SOURCE.glob("*.py"):
            assert (engine / source.name).read_bytes() == source.read_bytes(), f"engine copy of {source.name} differs"
        job_file = fleet.host_root(name) / "job.json"
        assert stat.S_IMODE(job_file.stat().st_mode) == 0o600
        assert json.loads(job_file.read_text())["database"] == str(fleet.database(name))

    entries = fleet.summary_entries()
    assert list(entries) == fleet.names
    for name, entry in entries.items():
        assert entry["status"] == "ok"
        assert entry["error"] is None
        assert entry["dbversion"] == "0.15"
        assert entry["database"] == str(fleet.database(name))
        assert entry["database_work_by"] == name
        assert entry["touched"] == EXAMPLE_COUNTS
        assert {key: entry["pending"][key] for key in EXAMPLE_COUNTS} == ZERO_COUNTS
        assert entry["schedule"] == "present"
        assert entry["schedule_backend"] == "systemd"
        assert entry["last_job_run"] is None

    rows = _read_csv(fleet.controller_dir / "fleet-summary.csv")
    assert [row["host"] for row in rows] == fleet.names
    for row in rows:
        assert row["status"] == "ok"
        assert row["dbversion"] == "0.15"
        assert row["error"] == ""
        for operation, count in EXAMPLE_COUNTS.items():
            assert row[f"touched_{operation}"] == str(count)
            assert row[f"pending_{operation}"] == "0"
        assert row["schedule"] == "present"
        assert row["last_run_result"] == ""

    settled = tree_state(fleet.root)
    again = fleet.run(schedule)
    assert again.returncode == 0, again.describe()
    for name in fleet.names:
        assert again.changed(name) == 0, f"second run changed {name}:\n{again.output}"
    summary_files = ("controller/fleet-summary.json", "controller/fleet-summary.csv")
    assert _without(tree_state(fleet.root), RUN_FILES + summary_files) == _without(settled, RUN_FILES + summary_files), \
        "the second run rewrote files or fetched unchanged reports again"

    for name in fleet.names:
        command = _job_command_from_unit(fleet.host_root(name) / "units" / f"acme-hk-{name}.service")
        job = _run_job(command)
        assert job.returncode == 0, job.stderr
        status = _status(fleet, name)
        assert status["result"] == "ok"
        assert status["state"] == "idle"
        assert status["last_error"] is None
        assert status["counts"] == ZERO_COUNTS
        assert status["last_start"] <= status["last_finish"]
        assert status["last_success"] == status["last_finish"]
        stamped = _stamped_reports(fleet.report_dir(name))
        assert len(stamped) == 2
        assert stamped[0].endswith("_accounts.json")
        assert stamped[1].endswith("_certificates.csv")
        assert sorted(status["reports"]) == stamped

    removal = fleet.run({"acme_hk_schedule": False, "acme_hk_run_now": False})
    assert removal.returncode == 0, removal.describe()
    entries = fleet.summary_entries()
    for name in fleet.names:
        root = fleet.host_root(name)
        assert not (root / "units" / f"acme-hk-{name}.service").exists()
        assert not (root / "units" / f"acme-hk-{name}.timer").exists()
        assert not (root / "lib").exists()
        assert not (root / "job.json").exists()
        assert (root / "state" / "status.json").exists(), "removing the job deleted its status file"
        for report in _stamped_reports(fleet.report_dir(name)):
            assert (fleet.controller_dir / name / report).exists(), f"{report} of the job was not fetched"
        status = _status(fleet, name)
        entry = entries[name]
        assert entry["schedule"] == "absent"
        assert entry["touched"] is None
        assert entry["last_job_run"]["result"] == "ok"
        assert entry["last_job_run"]["start"] == status["last_start"]
        assert entry["last_job_run"]["finish"] == status["last_finish"]
        assert entry["last_job_run"]["counts"] == ZERO_COUNTS


def test_cron_fallback_and_shared_database(fleet: FleetRun):
    """Cron job without systemd, with node2 and node3 sharing a database that node2 handles once."""
    shared_id = "acme-db-shared"
    fleet.host_vars["node3"]["acme_hk_database"] = str(fleet.database("node2"))
    fleet.host_vars["node2"]["acme_hk_database_id"] = shared_id
    fleet.host_vars["node3"]["acme_hk_database_id"] = shared_id
    fleet.host_vars["node4"]["acme_hk_busy_timeout"] = 2
    schedule = {"acme_hk_schedule": True, "acme_hk_schedule_random_delay": 0, "acme_hk_schedule_activate": False}
    if SYSTEMD_RUNNING:
        # On a host where systemd runs, backend auto picks systemd, so cron is chosen explicitly.
        schedule["acme_hk_schedule_backend"] = "cron"

    install = fleet.run(schedule)
    assert install.returncode == 0, install.describe()
    entries = fleet.summary_entries()
    assert entries["node2"]["touched"] == EXAMPLE_COUNTS
    assert entries["node2"]["database_id"] == shared_id
    assert entries["node3"]["database_work_by"] == "node2"
    assert entries["node3"]["touched"] is None
    assert entries["node3"]["schedule"] == "absent"
    assert entries["node4"]["touched"] == EXAMPLE_COUNTS
    assert not fleet.report_dir("node3").exists(), "node3 wrote reports although node2 handles its database"
    assert not (fleet.controller_dir / "node3").exists()
    assert not (fleet.host_root("node3") / "cron" / "acme-hk-node3").exists()
    assert not (fleet.host_root("node3") / "lib").exists()

    for name in ("node2", "node4"):
        assert entries[name]["schedule"] == "present"
        assert entries[name]["schedule_backend"] == "cron"
        cron_file = fleet.host_root(name) / "cron" / f"acme-hk-{name}"
        assert stat.S_IMODE(cron_file.stat().st_mode) == 0o644
        assert list((fleet.host_root(name) / "units").iterdir()) == []
        entry = _job_command_from_cron(cron_file)
        assert entry["time"] == "15 3 * * *"
        assert entry["user"] == "root"
        assert "--random-delay 0" in entry["command"]

    # A fresh database for node4, so that its job has rows to change.
    shutil.copyfile(EXAMPLE_DB, fleet.database("node4"))
    command = _job_command_from_cron(fleet.host_root("node4") / "cron" / "acme-hk-node4")["command"]
    job = _run_job(command, shell=True)
    assert job.returncode == 0, job.stdout + job.stderr
    status = _status(fleet, "node4")
    assert status["result"] == "ok"
    assert status["counts"] == EXAMPLE_COUNTS
    assert query(fleet.database("node4"), "SELECT DISTINCT status_id FROM orders") == [(1,)]
    stamped = _stamped_reports(fleet.report_dir("node4"))
    assert [name.split("_", 1)[1] for name in stamped] == [
        "accounts.json", "authorizations_invalidate.csv", "certificates.csv", "certificates_cleanup.csv", "orders_invalidate.csv",
    ]
    log_text = (fleet.host_root("node4") / "state" / "job.log").read_text()
    assert "Job acme-hk-node4 finished" in log_text

    # The job takes the modules' lock on the database file, so it waits and then fails.
    with open(fleet.database("node4"), "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        locked = _run_job(command, shell=True)
    assert locked.returncode == 1
    status = _status(fleet, "node4")
    assert status["result"] == "failed"
    assert "Another housekeeping run holds the lock" in status["last_error"]
    assert status["last_success"] is not None

    # A second start while the job lock is held is skipped with exit status 75.
    with open(fleet.host_root("node4") / "state" / "job.lock", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = _run_job(command, shell=True)
    assert busy.returncode == 75
    assert _status(fleet, "node4")["last_start"] == status["last_start"]

    removal = fleet.run({"acme_hk_schedule": False, "acme_hk_run_now": False})
    assert removal.returncode == 0, removal.describe()
    for name in fleet.names:
        assert not (fleet.host_root(name) / "cron" / f"acme-hk-{name}").exists()
        assert not (fleet.host_root(name) / "lib").exists()
    last_run = fleet.summary_entries()["node4"]["last_job_run"]
    assert last_run["result"] == "failed"
    assert "Another housekeeping run holds the lock" in last_run["error"]
    rows = {row["host"]: row for row in _read_csv(fleet.controller_dir / "fleet-summary.csv")}
    assert rows["node4"]["last_run_result"] == "failed"
    assert rows["node3"]["database_work_by"] == "node2"


def test_missing_and_locked_databases(fleet: FleetRun):
    """A host without its database and one whose database stays locked fail, and the third finishes."""
    fleet.database("node2").unlink()
    fleet.host_vars["node3"]["acme_hk_busy_timeout"] = 1

    holder = sqlite3.connect(str(fleet.database("node3")), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = fleet.run()
    finally:
        holder.close()

    assert result.returncode != 0, result.describe()
    assert result.recap["node2"]["failed"] == 1
    assert result.recap["node3"]["failed"] == 1
    assert result.recap["node4"]["failed"] == 0
    assert result.recap["node4"]["changed"] > 0
    assert f"The database {fleet.database('node2')} does not exist" in result.output
    assert f"The database {fleet.database('node3')} stayed locked" in result.output

    entries = fleet.summary_entries()
    assert entries["node2"]["status"] == "failed"
    assert "Housekeeping failed on node2 in task 'Read the database facts, the pending work and the status of the scheduled job'" in entries["node2"]["error"]
    assert "does not exist" in entries["node2"]["error"]
    assert entries["node3"]["status"] == "failed"
    assert "stayed locked for more than busy_timeout=1 s" in entries["node3"]["error"]
    assert entries["node4"]["status"] == "ok"
    assert entries["node4"]["touched"] == EXAMPLE_COUNTS
    assert (fleet.controller_dir / "node4" / "accounts.json").exists()
    assert query(fleet.database("node3"), "SELECT count(*) FROM orders WHERE status_id = 1") == [(0,)]
    rows = {row["host"]: row for row in _read_csv(fleet.controller_dir / "fleet-summary.csv")}
    assert rows["node2"]["status"] == "failed"
    assert rows["node4"]["touched_orders"] == "9"

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduled job (plugins/module_utils/_acmehk/job.py) run directly, without Ansible."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import job
from conftest import EXAMPLE_DB, REPO
from role_fleet import EXAMPLE_COUNTS, query

ENGINE_SOURCE = REPO / "plugins" / "module_utils" / "_acmehk"
LAUNCHER = REPO / "roles" / "acme_hk" / "files" / "run_job.py"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    if not EXAMPLE_DB.is_file():
        pytest.fail(f"The example database {EXAMPLE_DB} is missing; see tests/conftest.py.")
    shutil.copyfile(EXAMPLE_DB, tmp_path / "acme_srv.db")
    (tmp_path / "state").mkdir()
    return tmp_path


def _write_config(job_dir: Path, **overrides: Any) -> Path:
    config: Dict[str, Any] = {
        "job_name": "acme-hk-test",
        "database": str(job_dir / "acme_srv.db"),
        "report_dir": str(job_dir / "state" / "reports"),
        "status_file": str(job_dir / "state" / "status.json"),
        "lock_file": str(job_dir / "state" / "job.lock"),
        "busy_timeout": 0.5,
    }
    config.update(overrides)
    path = job_dir / "job.json"
    path.write_text(json.dumps(config))
    return path


def _run(job_dir: Path, config: Path) -> int:
    return job.main(["--config", str(config), "--log-file", str(job_dir / "job.log")])


def _status(job_dir: Path) -> Dict[str, Any]:
    return json.loads((job_dir / "state" / "status.json").read_text())


def _reports(job_dir: Path) -> list:
    return sorted(path.name for path in (job_dir / "state" / "reports").iterdir())


def test_job_run_reports_and_status(job_dir: Path):
    assert _run(job_dir, _write_config(job_dir)) == job.EXIT_OK

    status = _status(job_dir)
    assert status["format"] == 1
    assert status["job"] == "acme-hk-test"
    assert status["state"] == "idle"
    assert status["result"] == "ok"
    assert status["last_error"] is None
    assert status["counts"] == EXAMPLE_COUNTS
    assert status["dbversion"] == "0.15"
    assert status["last_success"] == status["last_finish"]
    assert stat.S_IMODE((job_dir / "state" / "status.json").stat().st_mode) == 0o644

    stamp = status["last_start"].replace("-", "").replace(":", "")
    expected = [f"{stamp}_{name}" for name in (
        "accounts.json", "authorizations_invalidate.csv", "certificates.csv", "certificates_cleanup.csv",
        "orders_invalidate.csv")]
    assert _reports(job_dir) == expected
    assert sorted(status["reports"]) == expected
    for name in expected:
        assert stat.S_IMODE((job_dir / "state" / "reports" / name).stat().st_mode) == 0o600
    assert query(job_dir / "acme_srv.db", "SELECT DISTINCT status_id FROM orders") == [(1,)]
    assert "Job acme-hk-test finished" in (job_dir / "job.log").read_text()


def test_job_steps_switched_off(job_dir: Path):
    config = _write_config(job_dir, invalidate=False, cleanup_targets=["nonces"], account_report=False,
                           certificate_report_format="json")
    assert _run(job_dir, config) == job.EXIT_OK

    status = _status(job_dir)
    assert status["counts"] == {"orders": None, "authorizations": None, "certificate_dates": None,
                                "certificates": None, "nonces": 13}
    assert [name.split("_", 1)[1] for name in _reports(job_dir)] == ["certificates.json"]
    assert query(job_dir / "acme_srv.db", "SELECT count(*) FROM orders WHERE status_id = 1") == [(0,)]


def test_job_retention_keeps_newest_runs(job_dir: Path):
    report_dir = job_dir / "state" / "reports"
    report_dir.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (report_dir / f"{stamp}_accounts.json").write_text("[]")
        (report_dir / f"{stamp}_certificates.csv").write_text("")
    (report_dir / "accounts.json").write_text("[]")
    (report_dir / "notes.txt").write_text("kept")

    assert _run(job_dir, _write_config(job_dir, report_retention=2)) == job.EXIT_OK

    names = _reports(job_dir)
    assert "accounts.json" in names
    assert "notes.txt" in names
    assert not any(name.startswith(("20200101", "20200102")) for name in names)
    assert "20200103T000000Z_accounts.json" in names
    assert "20200103T000000Z_certificates.csv" in names
    assert _status(job_dir)["reports_deleted"] == 4


def test_job_same_second_new_stamp(job_dir: Path):
    config = _write_config(job_dir, invalidate=False, cleanup=False, certificate_report=False)
    assert _run(job_dir, config) == job.EXIT_OK
    assert _run(job_dir, config) == job.EXIT_OK

    names = _reports(job_dir)
    assert len(names) == 2
    assert names[0].split("_")[0] != names[1].split("_")[0]


def test_job_database_lock_held(job_dir: Path):
    config = _write_config(job_dir)
    assert _run(job_dir, config) == job.EXIT_OK
    first_success = _status(job_dir)["last_success"]

    with open(job_dir / "acme_srv.db", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _run(job_dir, config) == job.EXIT_FAILED

    status = _status(job_dir)
    assert status["result"] == "failed"
    assert status["state"] == "idle"
    assert "Another housekeeping run holds the lock" in status["last_error"]
    assert status["last_success"] == first_success
    assert "failed" in (job_dir / "job.log").read_text()


def test_job_lock_busy_skips_run(job_dir: Path):
    config = _write_config(job_dir)
    with open(job_dir / "state" / "job.lock", "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert _run(job_dir, config) == job.EXIT_BUSY
    assert not (job_dir / "state" / "status.json").exists()
    assert "another run holds the lock file" in (job_dir / "job.log").read_text()


def test_job_missing_database_recorded(job_dir: Path):
    (job_dir / "acme_srv.db").unlink()
    assert _run(job_dir, _write_config(job_dir)) == job.EXIT_FAILED

    status = _status(job_dir)
    assert status["result"] == "failed"
    assert "does not exist" in status["last_error"]
    assert status["last_success"] is None
    assert status["reports"] == []


def test_job_removes_stale_staging(job_dir: Path):
    stale = job_dir / "state" / "reports" / ".20200101T000000Z-staging-abcd"
    stale.mkdir(parents=True)
    (stale / "accounts.json").write_text("[]")

    assert _run(job_dir, _write_config(job_dir)) == job.EXIT_OK
    assert not stale.exists()
    assert not [path for path in (job_dir / "state" / "reports").iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "is not valid JSON"),
    ("[]", "must contain a JSON object"),
    ('{"report_dir": "/x"}', "does not set lock_file, status_file"),
    ('{"report_dir": "/x", "status_file": "/x", "lock_file": "/x", "colour": 1}', "Unknown keys in the job file"),
    ('{"report_dir": "/x", "status_file": "/x", "lock_file": "/x", "purge": "yes"}', "Invalid value for purge"),
    ('{"report_dir": "/x", "status_file": "/x", "lock_file": "/x", "cleanup_targets": []}', "Invalid cleanup_targets"),
    ('{"report_dir": "/x", "status_file": "/x", "lock_file": "/x", "report_retention": 0}', "Invalid report_retention 0"),
    ('{"report_dir": "/x", "status_file": "/x", "lock_file": "/x", "batch_size": 0}', "Invalid value for batch_size"),
    ('{"report_dir": "/x", "status_file": "/x", "lock_file": "/x", "grace_period": "-1d"}', "is negative"),
])
def test_job_file_rejected(tmp_path: Path, content: str, message: str):
    config = tmp_path / "job.json"
    config.write_text(content)
    log = tmp_path / "job.log"

    assert job.main(["--config", str(config), "--log-file", str(log)]) == job.EXIT_USAGE
    assert message in log.read_text()


def test_launcher_runs_engine_copy_without_ansible(job_dir: Path):
    """The installed layout: the launcher beside an acmehk/ copy, run by the system Python with -I."""
    lib = job_dir / "lib"
    shutil.copytree(ENGINE_SOURCE, lib / "acmehk", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(LAUNCHER, lib / "run_job.py")
    # A package of the same name on PYTHONPATH must not be used: -I ignores the variable.
    decoy = job_dir / "decoy" / "acmehk"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('decoy package imported')\n")
    config = _write_config(job_dir)

    env = dict(os.environ, PYTHONPATH=str(decoy.parent))
    completed = subprocess.run([SYSTEM_PYTHON, "-I", str(lib / "run_job.py"), "--config", str(config)],
                               cwd="/", env=env, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "Job acme-hk-test finished" in completed.stderr
    assert _status(job_dir)["counts"] == EXAMPLE_COUNTS

    probe = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import ansible"], capture_output=True, text=True,
                           timeout=60, check=False)
    assert probe.returncode != 0, f"{SYSTEM_PYTHON} has Ansible installed, so this test cannot show that the job runs without it"


def test_job_log_file_unwritable(job_dir: Path, capsys):
    config = _write_config(job_dir)
    missing = job_dir / "no-such-dir" / "job.log"

    assert job.main(["--config", str(config), "--log-file", str(missing)]) == job.EXIT_USAGE
    assert f"Cannot open the log file {missing}" in capsys.readouterr().err
    assert not (job_dir / "state" / "status.json").exists()


def test_job_backup_keep_prunes_copies(job_dir: Path):
    config = _write_config(job_dir, backup=True, backup_keep=1, invalidate=False, account_report=False,
                           certificate_report=False)
    assert _run(job_dir, config) == job.EXIT_OK
    shutil.copyfile(EXAMPLE_DB, job_dir / "acme_srv.db")
    assert _run(job_dir, config) == job.EXIT_OK

    backups = sorted(path.name for path in job_dir.iterdir() if path.name.endswith(".bak"))
    assert len(backups) == 1, backups
    assert query(job_dir / backups[0], "SELECT count(*) FROM nonce") == [(13,)]

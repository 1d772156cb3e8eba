# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest fixtures: collection imports, example databases and real ansible-playbook runs.

Plain pytest is enough: when ``ansible_collections.acmeops.housekeeping`` is not importable
(no ansible-test, no pytest-ansible), a symlink tree under build/ makes it importable.
ansible-test units also loads this file, from its copy of the collection under
build/ansible-test/ansible_collections/acmeops/housekeeping.
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
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
# ansible-test runs the unit tests in a copy of the collection at .../ansible_collections/acmeops/housekeeping,
# which is already inside a collections path. A checkout anywhere else gets a symlink tree under build/.
IN_COLLECTIONS_PATH = REPO.parent.parent.name == "ansible_collections"
COLLECTIONS = REPO.parents[2] if IN_COLLECTIONS_PATH else REPO / "build" / "collections"
EXAMPLE_DB_NAME = Path("data") / "acme_srv.db.example"


def _find_shared_dir() -> Path:
    """Return ACMEOPS_SHARED_DIR, else the nearest shared/ beside REPO or one of its parents.

    The parents matter under ansible-test, whose copy of the collection lies in
    build/ansible-test*/ansible_collections/acmeops/housekeeping inside the repository.
    """
    if "ACMEOPS_SHARED_DIR" in os.environ:
        return Path(os.environ["ACMEOPS_SHARED_DIR"])
    for parent in REPO.parents:
        if (parent / "shared" / EXAMPLE_DB_NAME).is_file():
            return parent / "shared"
    return REPO.parent / "shared"


SHARED = _find_shared_dir()
EXAMPLE_DB = SHARED / EXAMPLE_DB_NAME


def _link_collection() -> None:
    """Create build/collections/ansible_collections/acmeops/housekeeping, a symlink to REPO."""
    link = COLLECTIONS / "ansible_collections" / "acmeops" / "housekeeping"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(REPO, target_is_directory=True)
        except FileExistsError:
            pass


def _ensure_collection_importable() -> None:
    if not IN_COLLECTIONS_PATH:
        _link_collection()
    try:
        import ansible_collections.acmeops.housekeeping  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(COLLECTIONS))


_ensure_collection_importable()

from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils import acme_testdb  # noqa: E402

# The functional tests import database_snapshot from here. It lives in acme_testdb so that
# the unit tests can import it by its collection path, which also works under ansible-test.
database_snapshot = acme_testdb.database_snapshot


@pytest.fixture
def example_db(tmp_path: Path) -> Path:
    """A private copy of acme2certifier's example database (schema 0.15)."""
    if not EXAMPLE_DB.is_file():
        pytest.fail(f"The example database {EXAMPLE_DB} is missing. Put shared/data/acme_srv.db.example beside the "
                    "repository, or set ACMEOPS_SHARED_DIR to the folder that holds data/acme_srv.db.example "
                    "(plain pytest only, because ansible-test does not pass the variable on).")
    target = tmp_path / "acme_srv.db"
    shutil.copyfile(EXAMPLE_DB, target)
    return target


def table_rows(database: Path, table: str) -> list:
    """Return every row of a table ordered by id, for before/after comparisons."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall()
    finally:
        connection.close()


class PlaybookRunner:
    """Run one module task through a real ansible-playbook and return its registered result."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.python = os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable)

    def run(self, module: str, args: Dict[str, Any], check: bool = False, diff: bool = False,
            expect_failure: bool = False, extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        handle, result_file = tempfile.mkstemp(prefix="result-", suffix=".json", dir=self.workdir)
        os.close(handle)
        playbook = self.workdir / "play.yml"
        playbook.write_text(textwrap.dedent(f"""\
            - hosts: localhost
              gather_facts: false
              tasks:
                - name: Run the module under test
                  acmeops.housekeeping.{module}: {json.dumps(args)}
                  register: module_result
                  ignore_errors: true
                - name: Save the result
                  ansible.builtin.copy:
                    content: "{{{{ module_result | to_json }}}}"
                    dest: {result_file}
                  check_mode: false
                  diff: false
            """))
        inventory = self.workdir / "inventory.ini"
        inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={self.python}\n")
        command = [shutil.which("ansible-playbook") or str(Path(sys.executable).parent / "ansible-playbook"),
                   "-i", str(inventory), str(playbook)]
        if check:
            command.append("--check")
        if diff:
            command.append("--diff")
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            ANSIBLE_PYTHON_INTERPRETER=self.python,
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_LOCALHOST_WARNING="0",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        )
        env.update(extra_env or {})
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=self.workdir, timeout=300,
                                   check=False)
        if completed.returncode != 0:
            raise AssertionError(f"ansible-playbook failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        result = json.loads(Path(result_file).read_text())
        if expect_failure:
            assert result.get("failed"), f"expected the task to fail, got {result}"
        else:
            assert not result.get("failed"), f"task failed: {result.get('msg')}\n{result}"
        return result


@pytest.fixture
def playbook(tmp_path: Path) -> PlaybookRunner:
    """Run modules through ansible-playbook on localhost."""
    workdir = tmp_path / "play"
    workdir.mkdir()
    return PlaybookRunner(workdir)

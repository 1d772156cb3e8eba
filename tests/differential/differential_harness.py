# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run acme2certifier 0.46.3 and the collection's modules on twin databases and compare them.

One database is copied twice. acme2certifier's Housekeeping class runs on one copy (in a
subprocess, see upstream_runner.py) and the modules run on the other through one real
ansible-playbook run. Both sides take the same steps with the same reference time:

1. the account report (CSV, JSON, nested JSON) and the certificate report (CSV, JSON);
2. order invalidation, with its report as CSV;
3. authorization invalidation, with its report as JSON;
4. the certificate dates update;
5. certificate cleanup without purge, then the certificate report again;
6. certificate cleanup with purge, on the database as it was before step 5;
7. certificate cleanup with purge, on the database as it was after step 5;
8. nonce cleanup.

After every step both sides copy their database to a snapshot, and the comparison checks every
table row by row, every report file, and the counts the modules return against what
acme2certifier returns.

Report files are compared byte for byte, with these documented differences applied to
acme2certifier's output first (docs/upstream-differences.md, tested one by one in
test_documented_differences.py):

- row order: acme2certifier writes rows in SQLite's join order, the modules by id, so both
  files are sorted the same way before the comparison;
- order.status.name in the certificate report: acme2certifier writes the status id, the
  modules the status name;
- the account report of the modules lists accounts, orders and authorizations without
  complete chains, which acme2certifier's inner joins leave out. Such rows are set aside, and
  each of them must lack an id or a status name;
- an empty report: acme2certifier writes no file, the modules a header-only CSV or "[]";
- the certificate cleanup report: acme2certifier's JSON file holds only the certificate names,
  the modules' CSV file the whole rows, so the names are compared.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
COLLECTIONS = REPO / "build" / "collections"
RUNNER = HERE / "upstream_runner.py"
VENV_BIN = Path(sys.executable).parent

STEPS = (
    "reports",
    "orders",
    "authorizations",
    "certificate_dates",
    "certificates_blank",
    "certificates_purge",
    "certificates_purge_after_blank",
    "nonces",
)

# Tables that acme2certifier's schema update creates on old databases.
TABLES_CREATED_BY_UPDATE = ("cahandler", "cliaccount")

# Report columns that the modules leave out on schemas without the column (account.eab_kid
# before 0.15), where acme2certifier needs its schema update, which adds the column.
COLUMNS_ADDED_BY_UPDATE = ("account.eab_kid",)

STATUS_COLUMNS_ACCOUNT_REPORT = ("order.status.name", "authorization.status.name", "challenge.status.name")
ID_COLUMNS_ACCOUNT_REPORT = ("account.id", "order.id", "authorization.id", "challenge.id")


# Configuration and upstream runs --------------------------------------------------------


def write_config(path: Path, database: Path, nonce_validity: Optional[int] = None) -> Path:
    """Write an acme_srv.cfg for the wsgi handler that names database as dbfile."""
    lines = [
        "[DEFAULT]",
        "debug: False",
        "",
        "[DBhandler]",
        "handler: wsgi",
        f"dbfile: {database}",
        "",
        "[CAhandler]",
        # Certificate objects load a CA handler; the skeleton handler issues nothing.
        "handler_module: acme2certifier.share.skeletons.ca_handler.skeleton_ca_handler",
    ]
    if nonce_validity is not None:
        lines += ["", "[Nonce]", f"validity: {nonce_validity}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def upstream_environment(config: Path) -> Dict[str, str]:
    """Return a small environment for acme2certifier subprocesses."""
    return {
        "ACME_SRV_CONFIGFILE": str(config),
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
    }


def run_upstream(config: Path, steps: List[Dict[str, Any]], workdir: Path) -> List[Dict[str, Any]]:
    """Run steps with acme2certifier in a subprocess and return one result per step."""
    steps_file = workdir / "upstream-steps.json"
    results_file = workdir / "upstream-results.json"
    steps_file.write_text(json.dumps(steps), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(RUNNER), str(steps_file), str(results_file)],
        capture_output=True, text=True, env=upstream_environment(config), cwd=workdir, timeout=600, check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"upstream_runner.py failed ({completed.returncode}):\n{completed.stderr}")
    return json.loads(results_file.read_text(encoding="utf-8"))


def upstream_schema_update(config: Path, workdir: Path) -> str:
    """Migrate the database named in config with acme2certifier's a2c-schema-update --mode wsgi."""
    completed = subprocess.run(
        [str(VENV_BIN / "a2c-schema-update"), "--mode", "wsgi"],
        capture_output=True, text=True, env=upstream_environment(config), cwd=workdir, timeout=300, check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"a2c-schema-update failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


class UpstreamServer:
    """A long-running upstream_runner.py --serve process for many small runs.

    The configuration names one fixed database path, so acme2certifier's per-process cache
    stays valid; callers copy each database to that path before a run.
    """

    def __init__(self, workdir: Path, nonce_validity: Optional[int] = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.database = workdir / "acme_srv.db"
        self.config = write_config(workdir / "acme_srv.cfg", self.database, nonce_validity)
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, str(RUNNER), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=upstream_environment(self.config), cwd=workdir,
        )

    def run(self, steps: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(steps) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"upstream_runner.py --serve ended with status {self.process.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# Module runs ------------------------------------------------------------------------------


# Key added to each module result: the callback Ansible called for the task (ok, failed, skipped).
OUTCOME_KEY = "differential_outcome"


class ModulePlaybook:
    """Build and run one playbook on localhost with several module tasks.

    Module tasks never stop the play when they fail, and register their results, which the last
    task saves as JSON. The callback plugin in callback_plugins/ makes the file copies attached
    to a task as soon as it ends, and records how Ansible judged each task.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tasks: List[Tuple[str, str, Dict[str, Any], bool]] = []
        self.copies: Dict[str, List[Tuple[str, str]]] = {}

    def module(self, label: str, module: str, args: Dict[str, Any], check_mode: bool = False) -> int:
        self.tasks.append((label, f"acmeops.housekeeping.{module}", args, check_mode))
        return len(self.tasks) - 1

    def copy_after(self, source: Path, target: Path) -> None:
        """Copy source to target when the last task added so far ends."""
        if not self.tasks:
            raise ValueError("copy_after needs a task to follow")
        self.copies.setdefault(str(len(self.tasks) - 1), []).append((str(source), str(target)))

    def render(self, results_file: Path) -> str:
        lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
        for index, (label, action, args, check_mode) in enumerate(self.tasks):
            lines += [
                f"    - name: {json.dumps(f'{index} {label}')}",
                f"      {action}: {json.dumps(args, ensure_ascii=False)}",
                f"      register: step_{index}",
                "      ignore_errors: true",
            ]
            if check_mode:
                lines.append("      check_mode: true")
        registered = ", ".join(f"step_{index}" for index in range(len(self.tasks)))
        lines += [
            "    - name: Save the results",
            "      ansible.builtin.copy:",
            f"        content: \"{{{{ [{registered}] | to_json }}}}\"",
            f"        dest: {json.dumps(str(results_file))}",
            "        mode: \"0600\"",
            "      check_mode: false",
        ]
        return "\n".join(lines) + "\n"

    def run(self) -> List[Dict[str, Any]]:
        """Run the playbook and return the registered result of each task, in task order."""
        link = COLLECTIONS / "ansible_collections" / "acmeops" / "housekeeping"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                link.symlink_to(REPO, target_is_directory=True)
            except FileExistsError:
                pass

        results_file = self.workdir / "module-results.json"
        outcomes_file = self.workdir / "module-outcomes.json"
        plan_file = self.workdir / "module-plan.json"
        plan_file.write_text(json.dumps({"after": self.copies, "outcomes": str(outcomes_file)}), encoding="utf-8")
        playbook = self.workdir / "differential.yml"
        playbook.write_text(self.render(results_file), encoding="utf-8")

        python = os.environ.get("ANSIBLE_PYTHON_INTERPRETER", sys.executable)
        inventory = self.workdir / "inventory.ini"
        inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={python}\n", encoding="utf-8")
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            ANSIBLE_PYTHON_INTERPRETER=python,
            ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
            ANSIBLE_CALLBACKS_ENABLED="differential_steps",
            ACMEOPS_DIFFERENTIAL_PLAN=str(plan_file),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_LOCALHOST_WARNING="0",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        )
        command = [shutil.which("ansible-playbook") or str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=self.workdir, timeout=900,
                                   check=False)

        if completed.returncode != 0 or not results_file.is_file():
            raise AssertionError(f"ansible-playbook failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        results = json.loads(results_file.read_text(encoding="utf-8"))
        outcomes = json.loads(outcomes_file.read_text(encoding="utf-8"))
        if len(results) != len(self.tasks) or len(outcomes) != len(self.tasks):
            raise AssertionError(f"ansible-playbook returned {len(results)} results and {len(outcomes)} outcomes for "
                                 f"{len(self.tasks)} tasks:\n{completed.stdout}")
        for result, outcome in zip(results, outcomes):
            result[OUTCOME_KEY] = outcome
        return results


# Twin runs --------------------------------------------------------------------------------


@dataclass
class Side:
    """The files of one side of a differential run."""

    root: Path
    database: Path
    config: Path
    reports: Path
    snapshots: Path

    @classmethod
    def create(cls, root: Path, source: Path, nonce_validity: Optional[int]) -> "Side":
        server_dir = root / "acme_srv"
        for directory in (server_dir, root / "reports", root / "reports" / "orders",
                          root / "reports" / "authorizations", root / "snapshots"):
            directory.mkdir(parents=True, exist_ok=True)
        database = server_dir / "acme_srv.db"
        shutil.copyfile(source, database)
        config = write_config(server_dir / "acme_srv.cfg", database, nonce_validity)
        return cls(root, database, config, root / "reports", root / "snapshots")

    def snapshot(self, step: str) -> Path:
        return self.snapshots / f"{step}.db"


@dataclass
class TwinRun:
    """Both sides of one differential run and what each returned."""

    source: Path
    now: int
    upstream: Side
    ours: Side
    upstream_results: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    module_results: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    migrated_from: Optional[str] = None
    schema_update_output: str = ""


def upstream_plan(side: Side, now: int) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Return acme2certifier's steps and the label of each."""
    reports = side.reports
    steps: List[Dict[str, Any]] = []
    labels: List[str] = []

    def add(label: str, step: Dict[str, Any]) -> None:
        steps.append(step)
        labels.append(label)

    def snapshot(step_name: str) -> None:
        add(f"snapshot {step_name}", {"op": "copy", "source": str(side.database), "target": str(side.snapshot(step_name))})

    add("accounts.csv", {"op": "account_report", "format": "csv", "name": str(reports / "accounts")})
    add("accounts.json", {"op": "account_report", "format": "json", "name": str(reports / "accounts")})
    add("accounts_nested.json", {"op": "account_report", "format": "json", "nested": True,
                                 "name": str(reports / "accounts_nested")})
    add("certificates.csv", {"op": "certificate_report", "format": "csv", "name": str(reports / "certificates")})
    add("certificates.json", {"op": "certificate_report", "format": "json", "name": str(reports / "certificates")})
    snapshot("reports")
    add("orders", {"op": "orders_invalidate", "uts": now, "format": "csv", "name": str(reports / "orders_invalidate")})
    snapshot("orders")
    add("authorizations", {"op": "authorizations_invalidate", "uts": now, "format": "json",
                           "name": str(reports / "authorizations_invalidate")})
    snapshot("authorizations")
    add("certificate_dates", {"op": "certificate_dates_update"})
    snapshot("certificate_dates")
    add("certificates_blank", {"op": "certificates_cleanup", "uts": now, "purge": False, "format": "json",
                               "name": str(reports / "cleanup_blank")})
    snapshot("certificates_blank")
    add("certificates_after_blank.json", {"op": "certificate_report", "format": "json",
                                          "name": str(reports / "certificates_after_blank")})
    add("restore before blank", {"op": "copy", "source": str(side.snapshot("certificate_dates")), "target": str(side.database)})
    add("certificates_purge", {"op": "certificates_cleanup", "uts": now, "purge": True, "format": "json",
                               "name": str(reports / "cleanup_purge")})
    snapshot("certificates_purge")
    add("restore after blank", {"op": "copy", "source": str(side.snapshot("certificates_blank")), "target": str(side.database)})
    add("certificates_purge_after_blank", {"op": "certificates_cleanup", "uts": now, "purge": True, "format": "json",
                                           "name": str(reports / "cleanup_purge_after_blank")})
    snapshot("certificates_purge_after_blank")
    add("nonces", {"op": "nonce_cleanup", "uts": now})
    snapshot("nonces")
    return steps, labels


def module_plan(side: Side, now: int, workdir: Path) -> Tuple[ModulePlaybook, List[str]]:
    """Return the playbook that takes the same steps with the modules, and the label of each task."""
    playbook = ModulePlaybook(workdir)
    labels: List[str] = []
    common = {"config": str(side.config), "now": now}
    reports = side.reports

    def module(label: str, name: str, args: Dict[str, Any]) -> None:
        playbook.module(label, name, {**common, **args})
        labels.append(label)

    def snapshot(step_name: str) -> None:
        playbook.copy_after(side.database, side.snapshot(step_name))

    module("info", "acme_hk_info", {})
    module("accounts.csv", "acme_hk_report", {"report": "accounts", "format": "csv", "dest": str(reports / "accounts.csv")})
    module("accounts.json", "acme_hk_report", {"report": "accounts", "format": "json", "dest": str(reports / "accounts.json")})
    module("accounts_nested.json", "acme_hk_report", {"report": "accounts", "format": "json", "nested": True,
                                                      "dest": str(reports / "accounts_nested.json")})
    module("certificates.csv", "acme_hk_report", {"report": "certificates", "format": "csv",
                                                  "dest": str(reports / "certificates.csv")})
    module("certificates.json", "acme_hk_report", {"report": "certificates", "format": "json",
                                                   "dest": str(reports / "certificates.json")})
    snapshot("reports")
    module("orders", "acme_hk_invalidate", {"targets": ["orders"], "report_dir": str(reports / "orders"),
                                            "report_format": "csv"})
    snapshot("orders")
    module("authorizations", "acme_hk_invalidate", {"targets": ["authorizations"],
                                                    "report_dir": str(reports / "authorizations"), "report_format": "json"})
    snapshot("authorizations")
    module("certificate_dates", "acme_hk_cleanup", {"targets": ["certificate_dates"]})
    snapshot("certificate_dates")
    module("certificates_blank", "acme_hk_cleanup", {"targets": ["certificates"], "purge": False,
                                                     "report_dest": str(reports / "cleanup_blank.csv")})
    snapshot("certificates_blank")
    module("certificates_after_blank.json", "acme_hk_report", {"report": "certificates", "format": "json",
                                                               "dest": str(reports / "certificates_after_blank.json")})
    playbook.copy_after(side.snapshot("certificate_dates"), side.database)
    module("certificates_purge", "acme_hk_cleanup", {"targets": ["certificates"], "purge": True,
                                                     "report_dest": str(reports / "cleanup_purge.csv")})
    snapshot("certificates_purge")
    playbook.copy_after(side.snapshot("certificates_blank"), side.database)
    module("certificates_purge_after_blank", "acme_hk_cleanup", {"targets": ["certificates"], "purge": True,
                                                                 "report_dest": str(reports / "cleanup_purge_after_blank.csv")})
    snapshot("certificates_purge_after_blank")
    module("nonces", "acme_hk_cleanup", {"targets": ["nonces"]})
    snapshot("nonces")
    return playbook, labels


def run_twins(source: Path, now: int, workdir: Path, nonce_validity: Optional[int] = None,
              migrate_upstream_from: Optional[str] = None) -> TwinRun:
    """Copy source twice, run acme2certifier on one copy and the modules on the other.

    migrate_upstream_from names the release whose schema source has. When it is set,
    acme2certifier's copy is first migrated with a2c-schema-update, because acme2certifier
    0.46.3 cannot clean up certificates on older schemas. The modules run on their copy as it is.
    """
    upstream = Side.create(workdir / "upstream", source, nonce_validity)
    ours = Side.create(workdir / "ours", source, nonce_validity)
    run = TwinRun(source=source, now=now, upstream=upstream, ours=ours, migrated_from=migrate_upstream_from)
    if migrate_upstream_from is not None:
        run.schema_update_output = upstream_schema_update(upstream.config, workdir)
        shutil.copyfile(upstream.database, upstream.snapshot("schema_update"))

    steps, step_labels = upstream_plan(upstream, now)
    for label, result in zip(step_labels, run_upstream(upstream.config, steps, workdir)):
        run.upstream_results[label] = result

    playbook, task_labels = module_plan(ours, now, workdir)
    for label, result in zip(task_labels, playbook.run()):
        run.module_results[label] = result
    return run


# Database comparison ----------------------------------------------------------------------


def read_tables(path: Path) -> Dict[str, Tuple[List[str], List[tuple]]]:
    """Return the columns and rows of every table, rows ordered by id (sqlite_sequence by name)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        result = {}
        for table in tables:
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]
            order = "id" if "id" in columns else ", ".join(f'"{column}"' for column in columns)
            rows = connection.execute(f'SELECT * FROM "{table}" ORDER BY {order}').fetchall()
            result[table] = (columns, rows)
        return result
    finally:
        connection.close()


def typed(value: Any) -> Tuple[str, Any]:
    """Pair a value with its Python type, so 5, 5.0 and '5' count as different."""
    return (type(value).__name__, value)


def compare_databases(ours: Path, theirs: Path, step: str, migrated_from: Optional[str] = None) -> List[str]:
    """Compare every table of two databases row by row and return the differences found.

    With migrated_from, acme2certifier's database went through its schema update: the columns
    and tables that the update added are left out, and so is the dbversion row it rewrote.
    """
    mine, upstream = read_tables(ours), read_tables(theirs)
    problems: List[str] = []
    for table in sorted(set(mine) | set(upstream)):
        if table not in mine:
            if migrated_from and table in TABLES_CREATED_BY_UPDATE and not upstream[table][1]:
                continue
            problems.append(f"{step}: table {table} exists only in acme2certifier's database")
            continue
        if table not in upstream:
            problems.append(f"{step}: table {table} exists only in the modules' database")
            continue
        problems += _compare_table(table, mine[table], upstream[table], step, migrated_from)
    return problems


def _compare_table(table: str, mine: Tuple[List[str], List[tuple]], upstream: Tuple[List[str], List[tuple]],
                   step: str, migrated_from: Optional[str]) -> List[str]:
    my_columns, my_rows = mine
    up_columns, up_rows = upstream
    if migrated_from:
        missing = [column for column in my_columns if column not in up_columns]
        if missing:
            return [f"{step}: table {table}: columns {missing} are missing after acme2certifier's schema update"]
        positions = [up_columns.index(column) for column in my_columns]
        up_rows = [tuple(row[position] for position in positions) for row in up_rows]
        # The update rewrites the dbversion row, and its INSERT OR IGNORE of that row takes a
        # number from the housekeeping table's AUTOINCREMENT sequence.
        if table == "housekeeping":
            name = my_columns.index("name")
            my_rows = [row for row in my_rows if row[name] != "dbversion"]
            up_rows = [row for row in up_rows if row[name] != "dbversion"]
        if table == "sqlite_sequence":
            my_rows = [row for row in my_rows if row[0] != "housekeeping"]
            up_rows = [row for row in up_rows if row[0] != "housekeeping"]
    elif my_columns != up_columns:
        return [f"{step}: table {table}: columns differ: modules {my_columns}, acme2certifier {up_columns}"]

    problems = []
    key = my_columns.index("id") if "id" in my_columns else 0
    my_by_key = {row[key]: row for row in my_rows}
    up_by_key = {row[key]: row for row in up_rows}
    for row_key in sorted(set(my_by_key) | set(up_by_key), key=repr):
        mine_row, up_row = my_by_key.get(row_key), up_by_key.get(row_key)
        if mine_row is None:
            problems.append(f"{step}: {table} row {row_key!r} exists only in acme2certifier's database: {_short(up_row)}")
        elif up_row is None:
            problems.append(f"{step}: {table} row {row_key!r} exists only in the modules' database: {_short(mine_row)}")
        elif [typed(value) for value in mine_row] != [typed(value) for value in up_row]:
            changed = [
                f"{column}: modules {_short(a)} acme2certifier {_short(b)}"
                for column, a, b in zip(my_columns, mine_row, up_row) if typed(a) != typed(b)
            ]
            problems.append(f"{step}: {table} row {row_key!r} differs: " + "; ".join(changed))
    if len(my_rows) != len(my_by_key) or len(up_rows) != len(up_by_key):
        problems.append(f"{step}: {table} has duplicate keys, so the row comparison is incomplete")
    return problems


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def changed_ids(before: Path, after: Path, table: str) -> Set[Any]:
    """Return the ids of rows of table that an operation changed or deleted."""
    old_columns, old_rows = read_tables(before)[table]
    new_columns, new_rows = read_tables(after)[table]
    assert old_columns == new_columns
    key = old_columns.index("id")
    new_by_id = {row[key]: [typed(value) for value in row] for row in new_rows}
    return {row[key] for row in old_rows if new_by_id.get(row[key]) != [typed(value) for value in row]}


def status_names(database: Path) -> Dict[int, str]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return dict(connection.execute("SELECT id, name FROM status").fetchall())
    finally:
        connection.close()


# Report comparison ------------------------------------------------------------------------


def split_csv_record(line: str) -> List[str]:
    """Split one CSV record into its fields as written, quotes included.

    Both sides delete line breaks inside values, so every record is one line.
    """
    fields, current, quoted = [], [], False
    for char in line:
        if char == '"':
            quoted = not quoted
            current.append(char)
        elif char == "," and not quoted:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def field_value(raw: str) -> str:
    """Return the value of one raw CSV field, without quotes."""
    return next(csv.reader(io.StringIO(raw)), [""])[0] if raw else ""


def csv_records(text: str) -> List[str]:
    """Split a CSV report into records; every record ends with CRLF."""
    if not text.endswith("\r\n"):
        raise AssertionError(f"Invalid CSV report: it does not end with CRLF but with {text[-40:]!r}")
    return text[:-2].split("\r\n")


def quote_csv(value: Optional[str]) -> str:
    """Write a string the way csv.QUOTE_NONNUMERIC does; None becomes an empty quoted field."""
    return '""' if value is None else '"' + value.replace('"', '""') + '"'


def json_report_text(value: Any) -> str:
    """Serialise a report the way acme2certifier writes JSON files."""
    return json.dumps(value, ensure_ascii=False, indent=4, default=str)


def read_upstream_json(path: Path) -> Any:
    """Read acme2certifier's JSON report and check that it survives a round trip unchanged.

    Files are read as bytes and decoded, because reading them as text would turn CRLF into LF.
    """
    text = path.read_bytes().decode("utf-8")
    value = json.loads(text)
    if json_report_text(value) != text:
        raise AssertionError(f"{path}: JSON round trip changes the text, so the comparison would be unfair")
    return value


def drop_csv_columns(records: List[str], drop: Sequence[str]) -> List[str]:
    """Remove the named columns from CSV records whose first record is the header."""
    if not drop or not records:
        return records
    names = [field_value(raw) for raw in split_csv_record(records[0])]
    positions = {names.index(column) for column in drop if column in names}
    return [",".join(raw for index, raw in enumerate(split_csv_record(record)) if index not in positions)
            for record in records]


def drop_json_keys(rows: List[Dict[str, Any]], drop: Sequence[str]) -> List[Dict[str, Any]]:
    """Remove the named keys from report rows, and from nested accounts."""
    return [{key: value for key, value in row.items() if key not in drop} for row in rows]


def read_our_json(path: Path, label: str, problems: List[str]) -> Any:
    """Read a JSON report of the modules; a layout other than acme2certifier's is a problem."""
    text = path.read_bytes().decode("utf-8")
    value = json.loads(text)
    if json_report_text(value) != text:
        problems.append(f"{label}: the JSON layout differs from json.dumps(indent=4, ensure_ascii=False)")
    return value


def _id_key(value: Any) -> int:
    """Return an id for sorting, with a missing id ('' or None) first, as SQLite sorts NULL."""
    return -1 if value in ("", None) else int(value)


def _sort_key(values: Iterable[Any]) -> Tuple:
    return tuple((value is None, value if isinstance(value, (int, float)) else str(value)) for value in values)


def compare_account_csv(ours: Path, theirs: Path, drop: Sequence[str] = ()) -> List[str]:
    """Compare the flat account CSV reports after the documented differences."""
    our_records = csv_records(ours.read_bytes().decode("utf-8"))
    header = split_csv_record(our_records[0])
    names = [field_value(raw) for raw in header]
    ids = [names.index(column) for column in ID_COLUMNS_ACCOUNT_REPORT]
    statuses = [names.index(column) for column in STATUS_COLUMNS_ACCOUNT_REPORT]
    up_records = [our_records[0]] if not theirs.exists() else csv_records(theirs.read_bytes().decode("utf-8"))
    up_records = drop_csv_columns(up_records, drop)
    problems = []
    if up_records[0] != our_records[0]:
        problems.append(f"accounts.csv: header differs: modules {our_records[0]!r}, acme2certifier {up_records[0]!r}")

    listed = {split_csv_record(record)[ids[3]] for record in up_records[1:]}
    kept, extra = [], []
    for record in our_records[1:]:
        fields = split_csv_record(record)
        (kept if fields[ids[3]] in listed and fields[ids[3]] != '""' else extra).append(record)
    for record in extra:
        fields = split_csv_record(record)
        if all(fields[position] != '""' for position in ids + statuses):
            problems.append(f"accounts.csv: the modules list a complete chain that acme2certifier leaves out: {_short(record)}")
    keys = [tuple(_id_key(field_value(split_csv_record(record)[position])) for position in ids) for record in our_records[1:]]
    if keys != sorted(keys):
        problems.append("accounts.csv: the modules' rows are not ordered by account, order, authorization and challenge id")
    if sorted(kept) != sorted(up_records[1:]):
        missing = sorted(set(up_records[1:]) - set(kept))
        surplus = sorted(set(kept) - set(up_records[1:]))
        problems.append(f"accounts.csv: rows differ; only acme2certifier: {[_short(r) for r in missing[:3]]}; "
                        f"only the modules: {[_short(r) for r in surplus[:3]]}")
    return problems


def _complete(row: Dict[str, Any]) -> bool:
    return all(row.get(column) is not None for column in ID_COLUMNS_ACCOUNT_REPORT + STATUS_COLUMNS_ACCOUNT_REPORT)


def compare_account_json(ours: Path, theirs: Path, drop: Sequence[str] = ()) -> List[str]:
    """Compare the flat account JSON reports after the documented differences."""
    problems: List[str] = []
    mine = read_our_json(ours, "accounts.json", problems)
    upstream = drop_json_keys(read_upstream_json(theirs), drop) if theirs.exists() else []
    listed = {row["challenge.id"] for row in upstream}
    kept = [row for row in mine if row.get("challenge.id") in listed]
    for row in mine:
        if row.get("challenge.id") not in listed and _complete(row):
            problems.append(f"accounts.json: the modules list a complete chain that acme2certifier leaves out: {_short(row)}")
    keys = [tuple(_id_key(row.get(column)) for column in ID_COLUMNS_ACCOUNT_REPORT) for row in mine]
    if keys != sorted(keys):
        problems.append("accounts.json: the modules' rows are not ordered by account, order, authorization and challenge id")
    expected = sorted(upstream, key=lambda row: _sort_key(row.get(column) for column in ID_COLUMNS_ACCOUNT_REPORT))
    if json_report_text(kept) != json_report_text(expected):
        problems.append(_json_difference("accounts.json", kept, expected))
    return problems


def prune_nested(accounts: List[Dict[str, Any]], listed: Set[Any]) -> List[Dict[str, Any]]:
    """Keep only the challenges in listed, and the parents that still have children."""
    pruned_accounts = []
    for account in accounts:
        orders = []
        for order in account.get("orders", []):
            authorizations = []
            for authorization in order.get("authorizations", []):
                challenges = [challenge for challenge in authorization.get("challenges", [])
                              if challenge.get("challenge.id") in listed]
                if challenges:
                    authorizations.append({**authorization, "challenges": challenges})
            if authorizations:
                orders.append({**order, "authorizations": authorizations})
        if orders:
            pruned_accounts.append({**account, "orders": orders})
    return pruned_accounts


def sort_nested(accounts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Order accounts, orders, authorizations and challenges by id, keeping key order."""
    def by(key: str):
        return lambda item: _sort_key([item.get(key)])

    result = []
    for account in sorted(accounts, key=by("account.id")):
        orders = []
        for order in sorted(account.get("orders", []), key=by("order.id")):
            authorizations = []
            for authorization in sorted(order.get("authorizations", []), key=by("authorization.id")):
                challenges = sorted(authorization.get("challenges", []), key=by("challenge.id"))
                authorizations.append({**authorization, "challenges": challenges})
            orders.append({**order, "authorizations": authorizations})
        result.append({**account, "orders": orders})
    return result


def compare_account_nested(ours: Path, theirs: Path, flat_upstream: Path, drop: Sequence[str] = ()) -> List[str]:
    """Compare the nested account reports after the documented differences."""
    problems: List[str] = []
    mine = read_our_json(ours, "accounts_nested.json", problems)
    upstream = drop_json_keys(read_upstream_json(theirs), drop) if theirs.exists() else []
    listed = {row["challenge.id"] for row in read_upstream_json(flat_upstream)} if flat_upstream.exists() else set()
    kept = prune_nested(mine, listed)
    expected = sort_nested(upstream)
    if json_report_text(kept) != json_report_text(expected):
        problems.append(_json_difference("accounts_nested.json", kept, expected))
    return problems


def compare_certificate_csv(ours: Path, theirs: Path, statuses: Dict[int, str], drop: Sequence[str] = ()) -> List[str]:
    """Compare the certificate CSV reports after the documented differences."""
    our_records = csv_records(ours.read_bytes().decode("utf-8"))
    if not theirs.exists():
        if len(our_records) != 1:
            return [f"certificates.csv: acme2certifier wrote no file, the modules {len(our_records) - 1} rows"]
        return []
    up_records = drop_csv_columns(csv_records(theirs.read_bytes().decode("utf-8")), drop)
    problems = []
    if up_records[0] != our_records[0]:
        problems.append(f"certificates.csv: header differs: modules {our_records[0]!r}, acme2certifier {up_records[0]!r}")
    names = [field_value(raw) for raw in split_csv_record(up_records[0])]
    status_position, id_position = names.index("order.status.name"), names.index("certificate.id")
    expected = []
    for record in up_records[1:]:
        fields = split_csv_record(record)
        fields[status_position] = quote_csv(statuses.get(int(fields[status_position])))
        expected.append(",".join(fields))

    def by_id(record: str) -> int:
        return int(split_csv_record(record)[id_position])

    if sorted(expected, key=by_id) != our_records[1:]:
        missing = sorted(set(expected) - set(our_records[1:]))
        surplus = sorted(set(our_records[1:]) - set(expected))
        order_only = not missing and not surplus
        problems.append(f"certificates.csv: rows differ{' in order only' if order_only else ''}; only acme2certifier: "
                        f"{[_short(r) for r in missing[:3]]}; only the modules: {[_short(r) for r in surplus[:3]]}")
    return problems


def compare_certificate_json(ours: Path, theirs: Path, statuses: Dict[int, str], label: str,
                             drop: Sequence[str] = ()) -> List[str]:
    """Compare certificate JSON reports after the documented differences."""
    problems: List[str] = []
    mine = read_our_json(ours, label, problems)
    upstream = drop_json_keys(read_upstream_json(theirs), drop) if theirs.exists() else []
    for row in upstream:
        row["order.status.name"] = statuses.get(row["order.status.name"])
    expected = sorted(upstream, key=lambda row: row["certificate.id"])
    if json_report_text(mine) != json_report_text(expected):
        problems.append(_json_difference(label, mine, expected))
    return problems


def compare_invalidation_csv(ours_dir: Path, theirs: Path, label: str, id_column: str) -> List[str]:
    """Compare the report of an invalidation step written as CSV."""
    our_files = sorted(ours_dir.iterdir())
    if not theirs.exists():
        return [f"{label}: the modules wrote {[f.name for f in our_files]}, acme2certifier no file"] if our_files else []
    if len(our_files) != 1:
        return [f"{label}: acme2certifier wrote a report, the modules {len(our_files)} files"]
    our_records = csv_records(our_files[0].read_bytes().decode("utf-8"))
    up_records = csv_records(theirs.read_bytes().decode("utf-8"))
    problems = []
    if our_records[0] != up_records[0]:
        problems.append(f"{label}: header differs: modules {our_records[0]!r}, acme2certifier {up_records[0]!r}")
    position = [field_value(raw) for raw in split_csv_record(up_records[0])].index(id_column)

    def by_id(record: str) -> int:
        return int(split_csv_record(record)[position])

    if sorted(up_records[1:], key=by_id) != our_records[1:]:
        problems.append(f"{label}: rows differ; only acme2certifier: "
                        f"{[_short(r) for r in sorted(set(up_records[1:]) - set(our_records[1:]))[:3]]}; only the modules: "
                        f"{[_short(r) for r in sorted(set(our_records[1:]) - set(up_records[1:]))[:3]]}")
    return problems


def compare_invalidation_json(ours_dir: Path, theirs: Path, label: str, id_column: str) -> List[str]:
    """Compare the report of an invalidation step written as JSON."""
    our_files = sorted(ours_dir.iterdir())
    if not theirs.exists():
        return [f"{label}: the modules wrote {[f.name for f in our_files]}, acme2certifier no file"] if our_files else []
    if len(our_files) != 1:
        return [f"{label}: acme2certifier wrote a report, the modules {len(our_files)} files"]
    problems: List[str] = []
    mine = read_our_json(our_files[0], label, problems)
    expected = sorted(read_upstream_json(theirs), key=lambda row: row[id_column])
    if json_report_text(mine) != json_report_text(expected):
        problems.append(_json_difference(label, mine, expected))
    return problems


def compare_cleanup_report(ours: Path, theirs: Path, label: str) -> List[str]:
    """Compare the certificate names in both cleanup reports."""
    upstream_names = read_upstream_json(theirs) if theirs.exists() else []
    our_names: List[str] = []
    if ours.exists():
        rows = list(csv.reader(io.StringIO(ours.read_bytes().decode("utf-8"), newline="")))
        position = rows[0].index("certificate.name")
        our_names = [row[position] for row in rows[1:]]
    if sorted(our_names) != sorted(upstream_names):
        return [f"{label}: cleanup reports name different certificates: only acme2certifier "
                f"{sorted(set(upstream_names) - set(our_names))[:10]}, only the modules "
                f"{sorted(set(our_names) - set(upstream_names))[:10]}"]
    return []


def _json_difference(label: str, mine: Any, expected: Any) -> str:
    mine_lines = json_report_text(mine).splitlines()
    expected_lines = json_report_text(expected).splitlines()
    for number, (a, b) in enumerate(zip(mine_lines, expected_lines), start=1):
        if a != b:
            return f"{label}: differs at line {number}: modules {a.strip()!r}, acme2certifier {b.strip()!r}"
    return f"{label}: differs in length: modules {len(mine_lines)} lines, acme2certifier {len(expected_lines)} lines"


# The whole comparison ---------------------------------------------------------------------


def compare_reports(run: TwinRun) -> List[str]:
    """Compare every report file of a twin run."""
    ours, upstream = run.ours.reports, run.upstream.reports
    statuses = status_names(run.upstream.snapshot("reports"))
    after_blank_statuses = status_names(run.upstream.snapshot("certificates_blank"))
    drop: List[str] = []
    if run.migrated_from:
        header = csv_records(ours.joinpath("accounts.csv").read_bytes().decode("utf-8"))[0]
        our_columns = [field_value(raw) for raw in split_csv_record(header)]
        drop = [column for column in COLUMNS_ADDED_BY_UPDATE if column not in our_columns]
    problems = []
    problems += compare_account_csv(ours / "accounts.csv", upstream / "accounts.csv", drop)
    problems += compare_account_json(ours / "accounts.json", upstream / "accounts.json", drop)
    problems += compare_account_nested(ours / "accounts_nested.json", upstream / "accounts_nested.json",
                                       upstream / "accounts.json", drop)
    problems += compare_certificate_csv(ours / "certificates.csv", upstream / "certificates.csv", statuses, drop)
    problems += compare_certificate_json(ours / "certificates.json", upstream / "certificates.json", statuses,
                                         "certificates.json", drop)
    problems += compare_certificate_json(ours / "certificates_after_blank.json", upstream / "certificates_after_blank.json",
                                         after_blank_statuses, "certificates_after_blank.json", drop)
    problems += compare_invalidation_csv(ours / "orders", upstream / "orders_invalidate.csv", "orders report", "order.id")
    problems += compare_invalidation_json(ours / "authorizations", upstream / "authorizations_invalidate.json",
                                          "authorizations report", "authorization.id")
    for name in ("cleanup_blank", "cleanup_purge", "cleanup_purge_after_blank"):
        problems += compare_cleanup_report(ours / f"{name}.csv", upstream / f"{name}.json", name)
    return problems


def compare_results(run: TwinRun, tolerated_errors: Sequence[str] = ()) -> List[str]:
    """Check that no step failed and that the modules return the counts acme2certifier returns."""
    problems = []
    for label, result in run.upstream_results.items():
        if result["error"] and not any(text in result["error"] for text in tolerated_errors):
            problems.append(f"acme2certifier failed in step {label}: {result['error']}")
    for label, result in run.module_results.items():
        if result.get("failed"):
            problems.append(f"module task {label} failed: {result.get('msg')}")
    if problems:
        return problems

    for label, target in (("orders", "orders"), ("certificates_blank", "certificates"), ("certificates_purge", "certificates"),
                          ("certificates_purge_after_blank", "certificates"), ("nonces", "nonces")):
        returned = run.upstream_results[label]["returned"] or []
        ours = run.module_results[label][target]
        if ours["count"] != len(returned):
            problems.append(f"{label}: the module changed {ours['count']} rows, acme2certifier returned {len(returned)}")
        if not ours["names_truncated"]:
            upstream_names = sorted(row["order.name"] if isinstance(row, dict) else row for row in returned)
            if sorted(ours["names"]) != upstream_names:
                problems.append(f"{label}: names differ: modules {sorted(ours['names'])[:10]}, acme2certifier {upstream_names[:10]}")

    # acme_hk_info runs on the unchanged database. These operations start from rows that no
    # earlier step changes, so its pending counts must match what acme2certifier changed.
    pending = run.module_results["info"]["pending"]
    changes = upstream_changes(run)
    for target in ("orders", "authorizations", "certificate_dates", "nonces"):
        if pending[target] != changes[target]:
            problems.append(f"info: pending {target} is {pending[target]}, acme2certifier changed {changes[target]} rows")
    return problems


def compare_twins(run: TwinRun, tolerated_errors: Sequence[str] = ()) -> List[str]:
    """Return every difference between the two sides of a run that no documented rule explains."""
    problems = compare_results(run, tolerated_errors)
    if run.migrated_from:
        # The schema update must keep every row and value, or the comparisons below would be unfair.
        problems += compare_databases(run.source, run.upstream.snapshot("schema_update"), "schema update",
                                      run.migrated_from)
    for step in STEPS:
        problems += compare_databases(run.ours.snapshot(step), run.upstream.snapshot(step), step, run.migrated_from)
    problems += compare_reports(run)
    return problems


def upstream_changes(run: TwinRun) -> Dict[str, int]:
    """Count the rows each step changed on acme2certifier's side, to show a corpus entry is not idle."""
    before = run.upstream.snapshot
    return {
        "orders": len(changed_ids(before("reports"), before("orders"), "orders")),
        "authorizations": len(changed_ids(before("orders"), before("authorizations"), "authorization")),
        "certificate_dates": len(changed_ids(before("authorizations"), before("certificate_dates"), "certificate")),
        "certificates_blank": len(changed_ids(before("certificate_dates"), before("certificates_blank"), "certificate")),
        "certificates_purge": len(changed_ids(before("certificate_dates"), before("certificates_purge"), "certificate")),
        "certificates_purge_after_blank": len(changed_ids(before("certificates_blank"),
                                                          before("certificates_purge_after_blank"), "certificate")),
        "nonces": len(changed_ids(before("certificates_purge_after_blank"), before("nonces"), "nonce")),
    }


def describe(run: TwinRun) -> str:
    """Summarise what acme2certifier did in each step, for failure messages."""
    lines = []
    for label, result in run.upstream_results.items():
        if result["op"] == "copy":
            continue
        returned = result["returned"]
        size = len(returned) if isinstance(returned, list) else returned
        lines.append(f"  {label}: returned {size!r}, error {result['error']!r}, log {result['log'][:3]!r}")
    return "\n".join(lines)

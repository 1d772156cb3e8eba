# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Create and reset acme2certifier 0.46.3's Django schema on a test backend.

``create(backend, workdir)`` drops every table of the database (or deletes
the SQLite file). Then it runs Django's ``migrate`` for the acme_srv app
(migrations 0001 to 0007 of the PyPI package) and ``loaddata status``. That
command loads the fixture ``acme2certifier/django_app/fixtures/status.yaml``
(the eight statuses with ids 1 to 8 and the row ``dbversion = 0.46``), as
acme2certifier's a2c-wsgi2django tool does. Django runs in a subprocess
with the settings from ``backends.write_settings_module``.

``reset(backend)`` empties the acme_srv_* tables, restarts their ids at 1 and
inserts the fixture rows again. It takes milliseconds instead of the seconds
that ``create`` takes. When the tables differ from those that ``create``
made in this process (a test dropped or changed one), it runs ``create``
again instead.

Command line, for trying it by hand (servers from scripts/dbservers.sh):

    python tests/django_lab/schema.py create --engine postgresql --workdir /tmp/schema
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends  # noqa: E402  pylint: disable=wrong-import-position

SCHEMA_PATH = Path(__file__).resolve()

# Seconds that one migrate subprocess may take. A fresh migrate took 1 to 7 s
# on a 2-core machine (measured with this module, the higher times under load).
MIGRATE_TIMEOUT = 300

# Tables that create() made, per backend, as (table, column, type) rows.
# reset() compares against them to notice a changed schema.
_CREATED_LAYOUTS: Dict[str, List[Tuple[str, str, str]]] = {}


def status_fixture_path() -> Path:
    """Return the status fixture file of the installed acme2certifier package."""
    import acme2certifier.django_app  # pylint: disable=import-outside-toplevel

    path = Path(acme2certifier.django_app.__file__).parent / "fixtures" / "status.yaml"
    if not path.is_file():
        raise backends.BackendError(f"status fixture {path} not found; is acme2certifier 0.46.3 installed?")
    return path


def fixture_rows() -> Dict[str, List[Dict[str, Any]]]:
    """Return the rows of the status fixture per table, each with its id."""
    import yaml  # pylint: disable=import-outside-toplevel

    rows: Dict[str, List[Dict[str, Any]]] = {}
    for item in yaml.safe_load(status_fixture_path().read_text(encoding="utf-8")):
        app_label, model = item["model"].split(".")
        table = f"{app_label}_{model}"
        rows.setdefault(table, []).append({"id": item["pk"], **item["fields"]})
    return rows


# ---------------------------------------------------------------------------
# create


def drop_all_tables(backend: backends.Backend) -> None:
    """Drop every table of the database, or delete the SQLite file and its journals."""
    if backend.engine == "sqlite":
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(backend.name + suffix).unlink(missing_ok=True)
        return

    connection = backend.connect()
    try:
        tables = backends.all_tables(connection, backend.engine)
        if not tables:
            return
        cursor = connection.cursor()
        quoted = ", ".join(backends.quote_name(backend.engine, table) for table in tables)
        if backend.engine == "postgresql":
            cursor.execute(f"DROP TABLE {quoted} CASCADE")
        else:
            # Tables that reference each other cannot be dropped one by one
            # with foreign key checks on.
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            cursor.execute(f"DROP TABLE {quoted}")
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
    finally:
        connection.close()


def create(backend: backends.Backend, workdir: Path, all_apps: bool = False) -> Dict[str, float]:
    """Create the acme_srv schema with status fixture on an emptied database.

    all_apps also migrates Django's auth, contenttypes and sessions apps, as
    acme2certifier's a2c-schema-update does on a real installation.
    Returns {"migrate_seconds": seconds that the migrate subprocess took}.
    """
    drop_all_tables(backend)
    workdir.mkdir(parents=True, exist_ok=True)
    if backend.engine == "sqlite":
        Path(backend.name).parent.mkdir(parents=True, exist_ok=True)
    backends.write_settings_module(workdir, backend)
    config = workdir / "acme_srv.cfg"
    config.write_text("[DBhandler]\nhandler: django\n", encoding="utf-8")
    env = backends.django_environment(workdir, config)

    command = [sys.executable, str(SCHEMA_PATH), "migrate-in-process"]
    if all_apps:
        command.append("--all-apps")
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True,
                                timeout=MIGRATE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise backends.BackendError(f"migrate on {backend.label} timed out after {MIGRATE_TIMEOUT} s") from None
    seconds = time.monotonic() - started
    (workdir / "migrate.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        raise backends.BackendError(
            f"migrate on {backend.label} failed with exit status {result.returncode}; last lines of its output "
            f"(all of it is in {workdir / 'migrate.log'}):\n" + "\n".join(output[-25:])
        )

    grant_read_only_user(backend)
    _CREATED_LAYOUTS[layout_key(backend)] = table_layout(backend)
    return {"migrate_seconds": round(seconds, 2)}


def migrate_in_process(all_apps: bool) -> None:
    """Run migrate and loaddata with Django, in the subprocess that create() starts."""
    import django  # pylint: disable=import-outside-toplevel

    django.setup()
    from django.core.management import call_command  # pylint: disable=import-outside-toplevel

    if all_apps:
        call_command("migrate", interactive=False, verbosity=1)
    else:
        call_command("migrate", "acme_srv", interactive=False, verbosity=1)
    call_command("loaddata", "status", verbosity=1)


def grant_read_only_user(backend: backends.Backend) -> None:
    """Give the SELECT-only user read access to the new PostgreSQL tables.

    dbservers.sh sets default privileges in the databases a2c and a2c_empty
    only, and the fixtures also use databases of their own. On MariaDB the
    grants of dbservers.sh cover every database whose name starts with a2c_.
    """
    if backend.engine != "postgresql" or not backend.ro_user:
        return
    connection = backend.connect()
    try:
        role = backends.quote_name("postgresql", backend.ro_user)
        connection.cursor().execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# reset


def layout_key(backend: backends.Backend) -> str:
    return f"{backend.engine}|{backend.socket}|{backend.name}"


def table_layout(backend: backends.Backend) -> List[Tuple[str, str, str]]:
    """Return (table, column, type) of every acme_srv_* column, sorted."""
    connection = backend.connect()
    try:
        cursor = connection.cursor()
        if backend.engine == "sqlite":
            layout = []
            for table in backends.acme_srv_tables(connection, "sqlite"):
                cursor.execute(f"PRAGMA table_info({backends.quote_name('sqlite', table)})")
                layout += [(table, row[1], f"{row[2]} notnull={row[3]} pk={row[5]}") for row in cursor.fetchall()]
            return sorted(layout)
        if backend.engine == "postgresql":
            cursor.execute(
                "SELECT table_name, column_name, data_type || ' ' || is_nullable FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name LIKE 'acme\\_srv\\_%'"
            )
        else:
            cursor.execute(
                "SELECT table_name, column_name, CONCAT(column_type, ' ', is_nullable) FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name LIKE 'acme\\\\_srv\\\\_%'"
            )
        return sorted(tuple(row) for row in cursor.fetchall())
    finally:
        connection.close()


def reset(backend: backends.Backend, workdir: Optional[Path] = None) -> Dict[str, Any]:
    """Bring the database back to the state right after create().

    Runs create() in workdir when this process has not created the schema on
    backend yet or the tables differ, and raises BackendError in that case
    when workdir is None. Returns {"recreated": bool, "seconds": float}.
    """
    started = time.monotonic()
    expected = _CREATED_LAYOUTS.get(layout_key(backend))
    if expected is None or table_layout(backend) != expected:
        if workdir is None:
            raise backends.BackendError(
                f"the schema on {backend.label} was not created by this process or was changed; "
                "pass workdir so that reset() can create it again"
            )
        create(backend, workdir)
        return {"recreated": True, "seconds": round(time.monotonic() - started, 3)}

    connection = backend.connect()
    try:
        empty_tables(connection, backend.engine)
        insert_fixture_rows(connection, backend.engine)
    finally:
        connection.close()
    return {"recreated": False, "seconds": round(time.monotonic() - started, 3)}


def empty_tables(connection: Any, engine: str) -> None:
    """Delete all acme_srv_* rows and restart the id counters at 1."""
    tables = backends.acme_srv_tables(connection, engine)
    cursor = connection.cursor()
    quoted = [backends.quote_name(engine, table) for table in tables]
    if engine == "postgresql":
        cursor.execute(f"TRUNCATE {', '.join(quoted)} RESTART IDENTITY CASCADE")
    elif engine == "mysql":
        # TRUNCATE also sets AUTO_INCREMENT back to 1. InnoDB rejects it for a
        # table that a foreign key references unless the checks are off.
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in quoted:
            cursor.execute(f"TRUNCATE TABLE {table}")
        cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
    else:
        cursor.execute("BEGIN IMMEDIATE")
        for table in quoted:
            cursor.execute(f"DELETE FROM {table}")
        # Django creates SQLite tables with AUTOINCREMENT, whose counters live
        # in sqlite_sequence.
        cursor.execute("UPDATE sqlite_sequence SET seq = 0 WHERE name LIKE 'acme\\_srv\\_%' ESCAPE '\\'")
        cursor.execute("COMMIT")


def insert_fixture_rows(connection: Any, engine: str) -> None:
    """Insert the rows of the status fixture with their ids, as loaddata does."""
    placeholder = "?" if engine == "sqlite" else "%s"
    cursor = connection.cursor()
    for table, rows in fixture_rows().items():
        for row in rows:
            columns = ", ".join(backends.quote_name(engine, column) for column in row)
            values = ", ".join([placeholder] * len(row))
            cursor.execute(f"INSERT INTO {backends.quote_name(engine, table)} ({columns}) VALUES ({values})",
                           tuple(row.values()))
        if engine == "postgresql":
            # Explicit ids do not move an identity sequence. loaddata sets it
            # to the highest id afterwards, so this does too.
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {backends.quote_name(engine, table)}))"
            )


# ---------------------------------------------------------------------------
# Command line


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Create acme2certifier's Django schema on a test backend.")
    commands = parser.add_subparsers(dest="command", required=True)
    create_parser = commands.add_parser("create", help="drop all tables, migrate acme_srv and load the statuses")
    create_parser.add_argument("--engine", choices=backends.ENGINES, required=True)
    create_parser.add_argument("--workdir", type=Path, required=True, help="folder for settings and logs")
    create_parser.add_argument("--sqlite-path", type=Path, help="SQLite file (default WORKDIR/db.sqlite3)")
    create_parser.add_argument("--all-apps", action="store_true", help="also migrate Django's own apps")
    migrate_parser = commands.add_parser("migrate-in-process", help="internal: run by create in a subprocess")
    migrate_parser.add_argument("--all-apps", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "migrate-in-process":
        migrate_in_process(args.all_apps)
        return 0

    workdir = Path(os.path.abspath(args.workdir))
    try:
        if args.engine == "sqlite":
            target = backends.Backend("sqlite", str(args.sqlite_path or workdir / "db.sqlite3"))
        else:
            target = backends.backend_from_env(args.engine)
        timings = create(target, workdir, all_apps=args.all_apps)
    except backends.BackendError as err:
        print(f"schema: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"backend": target.label, **timings, "rows": backends.row_counts(target)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

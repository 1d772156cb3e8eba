# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pytest fixtures that give a test a fresh acme2certifier Django schema.

Import them into the test module, or into the conftest.py of a test folder
that is a package (has __init__.py):

    sys.path.insert(0, str(REPO / "tests" / "django_lab"))
    from fixtures import django_sqlite_backend, mysql_backend, pg_backend  # noqa: F401

A conftest.py in a folder without __init__.py is loaded as the module
``conftest``, and pytest 9.2 deletes ``sys.modules["conftest"]`` before it
loads each such file. Tests that run ``from conftest import REPO`` to reach
tests/conftest.py (tests/functional, tests/differential, tests/reliability)
then get the other file and fail to import, depending on collection order.

Each fixture yields a ``backends.Backend`` whose acme_srv tables hold only
the status fixture (statuses 1 to 8, dbversion 0.46):

- ``pg_backend``: PostgreSQL from scripts/dbservers.sh (ACMEOPS_PG_*),
- ``mysql_backend``: MariaDB from scripts/dbservers.sh (ACMEOPS_MYSQL_*),
- ``django_sqlite_backend``: an SQLite file in the test's tmp_path.

The first use in a pytest process runs Django's migrate (seconds); later
uses empty the tables again (schema.reset, milliseconds). Under
pytest-xdist every worker has its own database, named after the one in
the environment plus the worker id (a2c_gw0, a2c_gw1, ...), which the
fixture creates when it is missing. The database stays in place after the
test, so it can be inspected when a test fails.

When the ACMEOPS_* variables are missing or the server does not accept
connections, the server fixtures skip the test, or fail it when CI=true, because CI
must run every test.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends  # noqa: E402  pylint: disable=wrong-import-position
import schema  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ["pg_backend", "mysql_backend", "django_sqlite_backend"]

# Per pytest process: the work directory of each backend's schema, and the
# migrated SQLite file that django_sqlite_backend copies.
_WORKDIRS: Dict[str, Path] = {}
_SQLITE_TEMPLATE: Dict[str, Path] = {}


def _unavailable(message: str) -> None:
    """Fail under CI and skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true, so the test fails instead of being skipped)", pytrace=False)
    pytest.skip(message)


def _check_tcp(backend: backends.Backend) -> None:
    """Skip or fail unless host:port of backend accepts a TCP connection."""
    try:
        with socket.create_connection((backend.host, backend.port), timeout=3):
            pass
    except OSError as err:
        _unavailable(
            f"the {backend.engine} test server does not answer on {backend.host}:{backend.port} ({err}); "
            "run 'scripts/dbservers.sh start' in this network namespace (make test does it)"
        )


def _worker_database(name: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{name}_{worker}" if worker else name


def _ensure_database(server: backends.Backend, name: str) -> None:
    """Create database name on the server of backend unless it exists."""
    connection = server.connect()
    try:
        cursor = connection.cursor()
        if server.engine == "mysql":
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {backends.quote_name('mysql', name)} CHARACTER SET utf8mb4")
            return
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE DATABASE {backends.quote_name('postgresql', name)}")
    finally:
        connection.close()
    if server.engine == "postgresql" and server.ro_user:
        # Default privileges belong to one database, so the new one needs its own.
        connection = server.with_database(name).connect()
        try:
            connection.cursor().execute(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "
                + backends.quote_name("postgresql", server.ro_user)
            )
        finally:
            connection.close()


def _server_backend(engine: str, tmp_path_factory: pytest.TempPathFactory) -> backends.Backend:
    """Return the backend of this worker with a freshly reset schema."""
    try:
        server = backends.backend_from_env(engine)
    except backends.BackendError as err:
        _unavailable(str(err))
    _check_tcp(server)

    backend = server.with_database(_worker_database(server.name))
    if engine not in _WORKDIRS:
        if backend.name != server.name:
            _ensure_database(server, backend.name)
        _WORKDIRS[engine] = tmp_path_factory.mktemp(f"django-{engine}-schema")
    schema.reset(backend, _WORKDIRS[engine])
    return backend


@pytest.fixture
def pg_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[backends.Backend]:
    """PostgreSQL database with the acme2certifier 0.46.3 Django schema and statuses only."""
    yield _server_backend("postgresql", tmp_path_factory)


@pytest.fixture
def mysql_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[backends.Backend]:
    """MariaDB database with the acme2certifier 0.46.3 Django schema and statuses only."""
    yield _server_backend("mysql", tmp_path_factory)


@pytest.fixture
def django_sqlite_backend(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[backends.Backend]:
    """SQLite file tmp_path/django/db.sqlite3 with the Django schema and statuses only."""
    if "template" not in _SQLITE_TEMPLATE:
        workdir = tmp_path_factory.mktemp("django-sqlite-schema")
        template = backends.Backend("sqlite", str(workdir / "template.sqlite3"))
        schema.create(template, workdir)
        _SQLITE_TEMPLATE["template"] = Path(template.name)
    target = tmp_path / "django" / "db.sqlite3"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_SQLITE_TEMPLATE["template"], target)
    yield backends.Backend("sqlite", str(target))

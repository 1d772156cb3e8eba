# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Database backends for acme2certifier's Django handler in tests.

A ``Backend`` names one database: an SQLite file, or a database on the
private PostgreSQL or MariaDB server that ``scripts/dbservers.sh`` runs.
The servers listen on 127.0.0.1 and on a unix socket. Everything in this
folder (schema creation, the acme2certifier server, upstream housekeeping,
snapshots) connects over the unix socket. The reason is the acme2certifier
server: it runs in a network namespace made with ``unshare -n``, whose own
loopback interface cannot reach 127.0.0.1 of the test process. Code under
test gets ``host`` and ``port`` for TCP as well.

``write_settings_module`` generates the Django settings that the
subprocesses use: acme2certifier 0.46.3's own ``django_project.settings``
(installed apps, middleware, URLs, ``USE_TZ = True``, ``TIME_ZONE = "UTC"``)
with DATABASES replaced by the backend, and the engine OPTIONS that
acme2certifier's ``settings_env.apply_engine_options`` adds for a database
URL (SQLite timeout and IMMEDIATE transactions; for MySQL strict mode and
utf8mb4).

Only the standard library is imported at module level. ``connect`` imports
psycopg (version 3) or PyMySQL when it is called.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

ENGINES = ("postgresql", "mysql", "sqlite")

DJANGO_ENGINES = {
    "postgresql": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
    "sqlite": "django.db.backends.sqlite3",
}

# Environment variables that scripts/dbservers.sh prints with "env", per engine.
ENV_PREFIX = {"postgresql": "ACMEOPS_PG_", "mysql": "ACMEOPS_MYSQL_"}
ENV_FIELDS = ("HOST", "PORT", "USER", "PASSWORD", "DB", "RO_USER", "RO_PASSWORD", "EMPTY_DB")
SOCKET_FIELD = {"postgresql": "SOCKET_DIR", "mysql": "SOCKET"}

SETTINGS_MODULE = "acmeops_django_settings"

# Seconds that SQLite waits for a lock, the default of acme2certifier's
# ACME2CERTIFIER_SQLITE_TIMEOUT.
SQLITE_TIMEOUT = 30

# The secret key only signs sessions, which acme2certifier's ACME views do not
# use. acme2certifier's settings reject its built-in insecure default.
TEST_SECRET_KEY = "acmeops-django-lab-test-key-not-secret"

# Settings and handler variables of acme2certifier that a subprocess must not
# inherit from the caller, because they would change which database or
# handler it uses.
A2C_VARIABLE_PREFIXES = ("ACME2CERTIFIER_", "ACME_SRV_", "DJANGO_")


class BackendError(RuntimeError):
    """A backend is misconfigured or a database step failed."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """Connection parameters of one test database.

    For SQLite only ``engine`` and ``name`` (the file path) are used. For the
    servers ``socket`` is the PostgreSQL socket directory or the MariaDB
    socket file.
    """

    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: int = 0
    socket: str = ""
    ro_user: str = ""
    ro_password: str = ""
    empty_database: str = ""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BackendError(f"unknown engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if not self.name:
            raise BackendError(f"{self.engine} backend without a database name")
        if self.engine != "sqlite" and not self.socket:
            raise BackendError(f"{self.engine} backend {self.name} has no unix socket")

    @property
    def label(self) -> str:
        """Return a short description for messages, without the password."""
        if self.engine == "sqlite":
            return f"sqlite:{self.name}"
        return f"{self.engine}://{self.user}@{self.host}:{self.port}/{self.name} (socket {self.socket})"

    def with_database(self, name: str) -> "Backend":
        """Return the same server with another database (or SQLite file)."""
        return dataclasses.replace(self, name=name)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Backend":
        return cls(**json.loads(text))

    def django_database(self) -> Dict[str, Any]:
        """Return DATABASES["default"] for Django, connecting over the unix socket."""
        database: Dict[str, Any] = {"ENGINE": DJANGO_ENGINES[self.engine], "NAME": self.name}
        if self.engine == "postgresql":
            # libpq takes a directory in HOST as the place of the socket
            # file .s.PGSQL.<PORT>.
            database.update(USER=self.user, PASSWORD=self.password, HOST=self.socket, PORT=str(self.port))
        elif self.engine == "mysql":
            # Django's MySQL backend passes a HOST that starts with "/" to the
            # driver as unix_socket.
            database.update(USER=self.user, PASSWORD=self.password, HOST=self.socket)
        return database

    def connect(self, read_only_user: bool = False) -> Any:
        """Open a DB-API connection over the unix socket, in autocommit mode.

        read_only_user connects as the SELECT-only user instead of the owner.
        """
        user, password = (self.ro_user, self.ro_password) if read_only_user else (self.user, self.password)
        if self.engine == "sqlite":
            if read_only_user:
                return sqlite3.connect(f"file:{self.name}?mode=ro", uri=True, isolation_level=None)
            return sqlite3.connect(self.name, isolation_level=None, timeout=SQLITE_TIMEOUT)
        if self.engine == "postgresql":
            import psycopg  # pylint: disable=import-outside-toplevel

            return psycopg.connect(host=self.socket, port=self.port, user=user, password=password,
                                   dbname=self.name, autocommit=True, connect_timeout=10)
        import pymysql  # pylint: disable=import-outside-toplevel

        return pymysql.connect(unix_socket=self.socket, user=user, password=password, database=self.name,
                               autocommit=True, connect_timeout=10, charset="utf8mb4")


def backend_from_env(engine: str, environ: Optional[Mapping[str, str]] = None) -> Backend:
    """Build the backend of a dbservers.sh server from its ACMEOPS_* variables.

    Raises BackendError naming the missing variables.
    """
    environ = os.environ if environ is None else environ
    prefix = ENV_PREFIX[engine]
    names = [prefix + field for field in ENV_FIELDS + (SOCKET_FIELD[engine],)]
    missing = [name for name in names if not environ.get(name)]
    if missing:
        raise BackendError(
            f"{', '.join(missing)} not set; start the servers with 'scripts/dbservers.sh start' "
            "and export their settings with 'eval \"$(scripts/dbservers.sh env)\"' (make test does both)"
        )
    return Backend(
        engine=engine,
        name=environ[prefix + "DB"],
        user=environ[prefix + "USER"],
        password=environ[prefix + "PASSWORD"],
        host=environ[prefix + "HOST"],
        port=int(environ[prefix + "PORT"]),
        socket=environ[prefix + SOCKET_FIELD[engine]],
        ro_user=environ[prefix + "RO_USER"],
        ro_password=environ[prefix + "RO_PASSWORD"],
        empty_database=environ[prefix + "EMPTY_DB"],
    )


def write_settings_module(directory: Path, backend: Backend) -> str:
    """Write the Django settings module for backend into directory and return its name.

    The subprocess needs directory on PYTHONPATH (see ``django_environment``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f'"""Django settings for {backend.engine}, generated by tests/django_lab/backends.py."""',
        "",
        "import json",
        "",
    ]
    if backend.engine == "mysql":
        # Django's MySQL backend imports MySQLdb; PyMySQL provides it.
        lines += ["import pymysql", "", "pymysql.install_as_MySQLdb()", ""]
    lines += [
        "from acme2certifier.django_project.settings import *  # noqa: F401,F403",
        "from acme2certifier.django_project.settings_env import apply_engine_options",
        "",
        f"DATABASES = {{'default': json.loads({json.dumps(json.dumps(backend.django_database()))})}}",
        f"apply_engine_options(DATABASES['default'], {SQLITE_TIMEOUT})",
        "USE_TZ = True",
        "TIME_ZONE = 'UTC'",
        "ALLOWED_HOSTS = ['127.0.0.1', 'localhost']",
        "",
    ]
    (directory / f"{SETTINGS_MODULE}.py").write_text("\n".join(lines), encoding="utf-8")
    return SETTINGS_MODULE


def django_environment(settings_dir: Path, config: Path, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Return the environment for a subprocess that imports acme2certifier with Django.

    settings_dir contains the module from ``write_settings_module`` and config
    is the acme_srv.cfg that selects ``[DBhandler] handler: django``.
    """
    base = os.environ if base is None else base
    env = {key: value for key, value in base.items() if not key.startswith(A2C_VARIABLE_PREFIXES)}
    python_path = [str(settings_dir)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env.update(
        PYTHONPATH=os.pathsep.join(python_path),
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        ACME_SRV_CONFIGFILE=str(config),
        ACME2CERTIFIER_SECRET_KEY=TEST_SECRET_KEY,
        # acme2certifier's settings read BASE_DIR/.env, so BASE_DIR points
        # to the work directory and not to /var/www/acme2certifier.
        ACME2CERTIFIER_BASE_DIR=str(settings_dir),
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
    )
    return env


def acme_srv_tables(connection: Any, engine: str) -> List[str]:
    """Return the names of the acme_srv_* tables, sorted."""
    if engine == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'acme\\_srv\\_%' ESCAPE '\\'"
    elif engine == "postgresql":
        query = ("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                 "AND tablename LIKE 'acme\\_srv\\_%'")
    else:
        query = ("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
                 "AND table_name LIKE 'acme\\\\_srv\\\\_%'")
    cursor = connection.cursor()
    cursor.execute(query)
    return sorted(row[0] for row in cursor.fetchall())


def all_tables(connection: Any, engine: str) -> List[str]:
    """Return the names of every table of the database (or public schema), sorted."""
    if engine == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    elif engine == "postgresql":
        query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    cursor = connection.cursor()
    cursor.execute(query)
    return sorted(row[0] for row in cursor.fetchall())


def quote_name(engine: str, name: str) -> str:
    """Quote a table or column name for engine."""
    if engine == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def snapshot(backend: Backend) -> Dict[str, list]:
    """Return every row of every acme_srv_* table, ordered by id, as tuples.

    Values are what the driver returns (psycopg, PyMySQL, sqlite3), so compare
    snapshots of the same engine only.
    """
    connection = backend.connect()
    try:
        result = {}
        for table in acme_srv_tables(connection, backend.engine):
            cursor = connection.cursor()
            cursor.execute(f"SELECT * FROM {quote_name(backend.engine, table)} ORDER BY id")
            result[table] = [tuple(row) for row in cursor.fetchall()]
        return result
    finally:
        connection.close()


def row_counts(backend: Backend) -> Dict[str, int]:
    """Return the number of rows of every acme_srv_* table."""
    return {table: len(rows) for table, rows in snapshot(backend).items()}

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PostgreSQL and MariaDB/MySQL backends for acme2certifier's Django handler."""

from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from .db import Database, Row, Statement
from .errors import DatabaseError, HousekeepingError, LockTimeout

# Name of the MariaDB/MySQL named lock that keeps two housekeeping runs
# on one database from overlapping.
LOCK_NAME = "acmeops.housekeeping"
# An arbitrary, fixed key for pg_advisory_lock; every run of this collection uses the same one.
PG_LOCK_KEY = 0x2E6B1F4C7A93D105


class MissingDriver(HousekeepingError):
    """The Python driver for the database is not installed on the target."""

    def __init__(self, library: str, engine: str, error: str) -> None:
        super().__init__(
            f"The Python library {library} is needed to connect to {engine} but cannot be imported "
            f"({error}).",
            library=library,
        )
        self.library = library


@dataclass
class ServerSettings:
    """Connection parameters of a PostgreSQL or MariaDB/MySQL server."""

    engine: str
    host: Optional[str] = None
    port: Optional[int] = None
    name: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    connect_timeout: float = 30.0
    ssl_mode: Optional[str] = None
    ca_cert: Optional[str] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None

    def describe(self) -> str:
        """Name the server and database in messages, never the password."""
        where = self.host or "localhost"
        if self.port:
            where += f":{self.port}"
        return f"{self.engine} database {self.name or '(default)'} on {where} as {self.user or '(default user)'}"


def load_driver(engine: str) -> Tuple[str, Any]:
    """Import the first available driver, before any connection is tried."""
    candidates = {
        "postgresql": ("psycopg", "psycopg2"),
        "mysql": ("pymysql", "MySQLdb"),
    }[engine]
    errors = []
    for module_name in candidates:
        try:
            return module_name, importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
    library = "psycopg (or psycopg2)" if engine == "postgresql" else "PyMySQL (or mysqlclient)"
    raise MissingDriver(library, engine, "; ".join(errors))


def _to_pyformat(sql: str) -> str:
    """Turn ``?`` placeholders into ``%s`` and escape literal percent signs."""
    return sql.replace("%", "%%").replace("?", "%s")


class ServerDatabase(Database):
    """Shared logic of the client/server backends: autocommit reads, explicit write transactions."""

    dynamic_types = False

    def __init__(self, settings: ServerSettings, busy_timeout: float, writable: bool) -> None:
        self.settings = settings
        self.engine = settings.engine
        self.busy_timeout = busy_timeout
        self.writable = writable
        self.location = settings.describe()
        self.driver_name, self.driver = load_driver(settings.engine)
        self.connection = self._connect()
        self._configure()

    def _connect(self) -> Any:
        raise NotImplementedError

    def _configure(self) -> None:
        raise NotImplementedError

    def _error(self, action: str, exc: Exception) -> DatabaseError:
        return DatabaseError(f"{action} the {self.location} failed: {_clean(exc, self.settings)}.", database=self.location)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> List[Row]:
        try:
            with contextlib.closing(self.connection.cursor()) as cursor:
                cursor.execute(_to_pyformat(sql), list(params))
                return [tuple(row) for row in cursor.fetchall()]
        except self.driver.Error as exc:
            if self._is_lock_timeout(exc):
                raise self._lock_timeout() from exc
            raise self._error("Reading", exc) from exc

    def write(self, statements: Sequence[Statement]) -> int:
        if not self.writable:
            raise DatabaseError("Internal error: write on a read-only connection.")
        affected = 0
        cursor = self.connection.cursor()
        try:
            cursor.execute(self.begin_statement)
            for sql, params in statements:
                cursor.execute(_to_pyformat(sql), list(params))
                affected += max(cursor.rowcount, 0)
            cursor.execute("COMMIT")
        except self.driver.Error as exc:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            if self._is_lock_timeout(exc):
                raise self._lock_timeout() from exc
            if self._is_read_only(exc):
                raise DatabaseError(
                    f"Cannot write to the {self.location}: {_clean(exc, self.settings)}. The user has "
                    "no write rights; use a user that may UPDATE and DELETE the acme_srv tables, or "
                    "run in check mode to only see what would change.",
                    database=self.location,
                ) from exc
            raise self._error("Writing to", exc) from exc
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
        return affected

    begin_statement = "BEGIN"

    def _is_lock_timeout(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _is_read_only(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _lock_timeout(self) -> LockTimeout:
        return LockTimeout(
            f"The {self.location} kept a lock for more than busy_timeout={self.busy_timeout:g} s, held "
            "by the acme2certifier server or another process. Retry later or raise busy_timeout.",
            database=self.location,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


class PostgreSQLDatabase(ServerDatabase):
    """acme2certifier's Django tables on PostgreSQL, through psycopg 3 or psycopg2."""

    def _connect(self) -> Any:
        settings = self.settings
        params: Dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "dbname": settings.name,
            "user": settings.user,
            "password": settings.password,
            "connect_timeout": max(1, int(round(settings.connect_timeout))),
            "sslmode": settings.ssl_mode,
            "sslrootcert": settings.ca_cert,
            "sslcert": settings.client_cert,
            "sslkey": settings.client_key,
            "application_name": "acmeops.housekeeping",
        }
        params = {key: value for key, value in params.items() if value is not None}
        try:
            connection = self.driver.connect(**params)
        except self.driver.Error as exc:
            raise _connect_error(self.settings, exc) from exc
        connection.autocommit = True
        return connection

    def _configure(self) -> None:
        statements = [
            "SET TIME ZONE 'UTC'",
            f"SET lock_timeout = {int(self.busy_timeout * 1000)}",
        ]
        if not self.writable:
            statements.append("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        with contextlib.closing(self.connection.cursor()) as cursor:
            for statement in statements:
                cursor.execute(statement)

    def tables(self) -> Set[str]:
        rows = self.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {row[0] for row in rows}

    def columns(self, table: str) -> List[str]:
        rows = self.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? ORDER BY ordinal_position",
            [table],
        )
        return [row[0] for row in rows]

    def _is_lock_timeout(self, exc: Exception) -> bool:
        return getattr(exc, "pgcode", None) == "55P03" or getattr(getattr(exc, "diag", None), "sqlstate", None) == "55P03"

    def _is_read_only(self, exc: Exception) -> bool:
        code = getattr(exc, "pgcode", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
        return code in ("42501", "25006")

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold a session advisory lock, so two runs on one database never overlap."""
        deadline = time.monotonic() + self.busy_timeout
        while not self.fetch("SELECT pg_try_advisory_lock(?)", [PG_LOCK_KEY])[0][0]:
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"Another housekeeping run holds the lock on the {self.location} and did not "
                    f"finish within busy_timeout={self.busy_timeout:g} s. Wait for it, or raise busy_timeout.",
                    database=self.location,
                )
            time.sleep(0.1)
        try:
            yield
        finally:
            with contextlib.suppress(DatabaseError):
                self.fetch("SELECT pg_advisory_unlock(?)", [PG_LOCK_KEY])


class MySQLDatabase(ServerDatabase):
    """acme2certifier's Django tables on MariaDB or MySQL, through PyMySQL or mysqlclient."""

    begin_statement = "START TRANSACTION"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def _connect(self) -> Any:
        settings = self.settings
        params: Dict[str, Any] = {
            "port": settings.port or 3306,
            "user": settings.user,
            "connect_timeout": max(1, int(round(settings.connect_timeout))),
            "charset": "utf8mb4",
            "autocommit": True,
        }
        # A host that is a path names the server's Unix socket, as in Django's settings.
        if settings.host and settings.host.startswith("/"):
            params["unix_socket"] = settings.host
        else:
            params["host"] = settings.host or "localhost"
        if settings.name:
            params["database" if self.driver_name == "pymysql" else "db"] = settings.name
        if settings.password is not None:
            params["password" if self.driver_name == "pymysql" else "passwd"] = settings.password
        ssl = {key: value for key, value in (("ca", settings.ca_cert), ("cert", settings.client_cert), ("key", settings.client_key)) if value}
        if ssl:
            params["ssl"] = ssl
        params = {key: value for key, value in params.items() if value is not None}
        try:
            return self.driver.connect(**params)
        except self.driver.Error as exc:
            raise _connect_error(self.settings, exc) from exc

    def _configure(self) -> None:
        seconds = max(1, int(round(self.busy_timeout)))
        statements = [
            "SET time_zone = '+00:00'",
            f"SET SESSION innodb_lock_wait_timeout = {seconds}",
            f"SET SESSION lock_wait_timeout = {seconds}",
        ]
        if not self.writable:
            statements.append("SET SESSION TRANSACTION READ ONLY")
        with contextlib.closing(self.connection.cursor()) as cursor:
            for statement in statements:
                cursor.execute(statement)

    def tables(self) -> Set[str]:
        rows = self.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        return {row[0] for row in rows}

    def columns(self, table: str) -> List[str]:
        rows = self.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND table_name = ? ORDER BY ordinal_position",
            [table],
        )
        return [row[0] for row in rows]

    def _is_lock_timeout(self, exc: Exception) -> bool:
        return bool(exc.args) and exc.args[0] in (1205, 3572)

    def _is_read_only(self, exc: Exception) -> bool:
        return bool(exc.args) and exc.args[0] in (1142, 1792, 1290, 1044, 1045)

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold a named lock (GET_LOCK), so two runs on one database never overlap."""
        name = f"{LOCK_NAME}:{self.settings.name or ''}"[:64]
        got = self.fetch("SELECT GET_LOCK(?, ?)", [name, max(0, int(round(self.busy_timeout)))])[0][0]
        if got != 1:
            raise LockTimeout(
                f"Another housekeeping run holds the lock on the {self.location} and did not finish "
                f"within busy_timeout={self.busy_timeout:g} s. Wait for it, or raise busy_timeout.",
                database=self.location,
            )
        try:
            yield
        finally:
            with contextlib.suppress(DatabaseError):
                self.fetch("SELECT RELEASE_LOCK(?)", [name])


def _clean(exc: Exception, settings: ServerSettings) -> str:
    """Render a driver error without the password, even if a driver echoes it."""
    text = " ".join(str(exc).split())
    if settings.password:
        text = text.replace(settings.password, "********")
    return text


def _connect_error(settings: ServerSettings, exc: Exception) -> DatabaseError:
    text = _clean(exc, settings)
    lowered = text.lower()
    if "password" in lowered or "access denied" in lowered or "authentication" in lowered:
        hint = "Check db_user and db_password."
    elif "does not exist" in lowered or "unknown database" in lowered:
        hint = "Check db_name: the database does not exist on that server."
    elif "refused" in lowered or "timeout" in lowered or "timed out" in lowered or "can't connect" in lowered:
        hint = "Check db_host and db_port, and that the server runs and accepts connections from this host."
    else:
        hint = "Check the connection options."
    return DatabaseError(f"Cannot connect to the {settings.describe()}: {text}. {hint}", database=settings.describe())


def open_server(settings: ServerSettings, busy_timeout: float, writable: bool) -> ServerDatabase:
    """Connect to a PostgreSQL or MariaDB/MySQL database."""
    if settings.engine == "postgresql":
        return PostgreSQLDatabase(settings, busy_timeout, writable)
    return MySQLDatabase(settings, busy_timeout, writable)

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Database access behind one small interface, so other backends can plug in beside SQLite."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
import time
import urllib.parse
from typing import Any, Iterator, List, Optional, Sequence, Set, Tuple

from .batching import MAX_PAGE_GROWTH, AdaptiveSize
from .errors import DatabaseError, LockTimeout

Row = Tuple[Any, ...]
Statement = Tuple[str, Sequence[Any]]


class Database:
    """Backend interface of the engine: short reads, batched writes, table metadata.

    Statements use ``?`` placeholders; backends whose driver expects ``%s`` convert them.
    """

    engine = "sqlite"
    location = ""
    # SQLite stores any type in any column, so only there can an integer column hold text.
    dynamic_types = True

    def quote(self, name: str) -> str:
        """Quote an identifier such as the table name authorization, a keyword in SQL."""
        return '"' + name.replace('"', '""') + '"'

    def run_lock(self) -> Any:
        raise NotImplementedError

    def tables(self) -> Set[str]:
        raise NotImplementedError

    def columns(self, table: str) -> List[str]:
        raise NotImplementedError

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> List[Row]:
        raise NotImplementedError

    def write(self, statements: Sequence[Statement]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def pages(
        self, table: str, sql: str, params: Sequence[Any], batch_size: int, budget: float = 0.0
    ) -> Iterator[List[Row]]:
        """Yield the rows of a SELECT in key order, each page read by one short statement.

        Convention for callers:

        * table is the quoted name of the table whose numeric ``id`` column is the paging key;
        * sql selects that key first and ends with
          ``AND <key> > ? AND <key> <= ? ORDER BY <key> LIMIT ?``, for example
          ``... WHERE certificate.expire_uts = 0 AND certificate.id > ? AND certificate.id <= ?
          ORDER BY certificate.id LIMIT ?``; pages() appends the values of these three
          placeholders to params.

        Every statement reads at most one page of rows and examines only the ids of one span,
        so a selective filter never scans the whole table at once. Page and span start at
        batch_size. With budget > 0 (seconds) the span doubles after a statement that took
        less than half of budget without filling its page, the page doubles (up to
        MAX_PAGE_GROWTH times batch_size) after one that filled it as fast, and both halve
        after a statement that took longer than budget.
        The smallest and largest id are read once at the start, so rows inserted later are
        not visited.
        """
        bounds = self.key_bounds(table)
        if bounds is None:
            return
        low, high = bounds
        span = AdaptiveSize(batch_size, budget)
        limit = AdaptiveSize(batch_size, budget, MAX_PAGE_GROWTH)
        last = low - 1
        while last < high:
            upper = min(last + span.size, high)
            started = time.monotonic()
            rows = self.fetch(sql, [*params, last, upper, limit.size])
            elapsed = time.monotonic() - started
            full = len(rows) >= limit.size
            span.record(elapsed, can_grow=not full)
            limit.record(elapsed, can_grow=full)
            if rows:
                yield rows
            # A full page may have stopped inside the span, so the next one starts after it.
            last = rows[-1][0] if full else upper

    def key_bounds(self, table: str) -> Optional[Tuple[Any, Any]]:
        """Return the smallest and largest numeric id of table, or None when it has no rows.

        Each bound is one index lookup. BETWEEN leaves out ids stored as text or blob, which
        SQLite sorts after every number.
        """
        limits = [-(2 ** 63), 2 ** 63 - 1]
        low = self.fetch(f"SELECT id FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id LIMIT 1", limits)
        if not low:
            return None
        high = self.fetch(f"SELECT id FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id DESC LIMIT 1", limits)
        return low[0][0], high[0][0]


# Page cache of a writing connection, in KiB.
WRITE_CACHE_KIB = 32768


class SQLiteDatabase(Database):
    """An acme2certifier SQLite file, opened without creating it or changing its settings."""

    def __init__(self, path: str, busy_timeout: float = 10.0, writable: bool = False) -> None:
        self.path = path
        self.location = path
        self.busy_timeout = busy_timeout
        self.writable = writable
        self._lock_handle: Optional[int] = None
        _check_file(path, writable)

        mode = "rw" if writable else "ro"
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"
        try:
            # isolation_level=None: the engine issues BEGIN and COMMIT itself, so no implicit
            # transaction keeps a lock open between statements.
            self.connection = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise DatabaseError(
                f"Cannot open the SQLite database {path}: {exc}. Check the path and that this user "
                "can read it.",
                database=path,
            ) from exc

        try:
            self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            self.connection.close()
            if _is_locked(exc):
                raise _lock_timeout(path, busy_timeout) from exc
            if "malformed" in str(exc):
                raise DatabaseError(
                    f"The SQLite database {path} is damaged ({exc}). Check it with sqlite3 and "
                    "PRAGMA integrity_check, and restore it from a backup if needed.",
                    database=path,
                ) from exc
            raise DatabaseError(
                f"{path} is not an SQLite database ({exc}). Point the database option at "
                "acme2certifier's acme_srv.db.",
                database=path,
            ) from exc
        if writable:
            # A write transaction whose changed pages do not fit the page cache (2 MiB by
            # default) writes them out before COMMIT, which makes its time grow faster than its
            # rows and the time-sized batches overshoot. The setting lasts for this connection only.
            self.connection.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")

    def tables(self) -> Set[str]:
        rows = self.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {row[0] for row in rows}

    def columns(self, table: str) -> List[str]:
        quoted = table.replace('"', '""')
        return [row[1] for row in self.fetch(f'PRAGMA table_info("{quoted}")')]

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> List[Row]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _lock_timeout(self.path, self.busy_timeout) from exc
            raise DatabaseError(f"Reading {self.path} failed: {exc}.", database=self.path) from exc
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(
                f"Reading {self.path} failed: {exc}. The file may be damaged; check it with "
                "sqlite3 and PRAGMA integrity_check.",
                database=self.path,
            ) from exc

    def write(self, statements: Sequence[Statement]) -> int:
        """Run statements inside one short write transaction and return the rows they changed."""
        if not self.writable:
            raise DatabaseError("Internal error: write on a read-only connection.")

        cursor = self.connection.cursor()
        try:
            # BEGIN IMMEDIATE takes the write lock up front, so the busy timeout applies here
            # and never in the middle of a half-done batch.
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _lock_timeout(self.path, self.busy_timeout) from exc
            raise self._write_error(exc) from exc

        affected = 0
        try:
            for sql, params in statements:
                cursor.execute(sql, params)
                affected += max(cursor.rowcount, 0)
            cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                cursor.execute("ROLLBACK")
            if _is_locked(exc):
                raise _lock_timeout(self.path, self.busy_timeout) from exc
            raise self._write_error(exc) from exc
        return affected

    def _write_error(self, exc: sqlite3.Error) -> DatabaseError:
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            return DatabaseError(
                f"Cannot write to {self.path}: {text}. Run the task as the user that owns the "
                "database (become_user) and make sure that user can write the file and its "
                "directory, where SQLite creates its journal.",
                database=self.path,
            )
        return DatabaseError(f"Writing to {self.path} failed: {text}.", database=self.path)

    def backup(self, destination: str) -> None:
        """Copy the database with SQLite's online backup, which yields to the running server."""
        target = sqlite3.connect(destination)
        try:
            # The copy is a temporary file until it is complete, so it needs no journal of its own.
            target.execute("PRAGMA journal_mode=OFF")
            # Small steps with a pause, so the server's writes are never held up for long.
            self.connection.backup(target, pages=256, sleep=0.005)
        finally:
            target.close()

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold an exclusive flock on the database file so no two housekeeping runs overlap.

        flock and SQLite's POSIX record locks do not interact on Linux, so the server is not
        affected. The descriptor stays open until close(), after the SQLite connection is
        closed, because closing any descriptor of the file drops the process's POSIX locks on it.
        """
        handle = os.open(self.path, os.O_RDONLY)
        deadline = time.monotonic() + self.busy_timeout
        try:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"Another housekeeping run holds the lock on {self.path} and did not "
                        f"finish within busy_timeout={self.busy_timeout:g} s. Wait for it, or "
                        "raise busy_timeout.",
                        database=self.path,
                    )
                time.sleep(0.05)
        except BaseException:
            os.close(handle)
            raise

        self._lock_handle = handle
        yield

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.connection.close()
        if self._lock_handle is not None:
            os.close(self._lock_handle)
            self._lock_handle = None


def _check_file(path: str, writable: bool) -> None:
    """Reject paths that SQLite would silently turn into a new, empty database."""
    if not path:
        raise DatabaseError("The database path is empty. Set database to the path of acme_srv.db.")

    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DatabaseError(
            f"The database {path} does not exist. Check the database or acme_srv_dir option; "
            "housekeeping never creates a database.",
            database=path,
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DatabaseError(
                f"The database path {path} is a symbolic link loop. Point database at the real file.",
                database=path,
            ) from exc
        raise DatabaseError(f"Cannot read the database path {path}: {exc.strerror}.", database=path) from exc

    if stat.S_ISDIR(info.st_mode):
        raise DatabaseError(
            f"The database path {path} is a directory. Give the path of the acme_srv.db file, "
            "or use acme_srv_dir for the installation directory.",
            database=path,
        )
    if not stat.S_ISREG(info.st_mode):
        raise DatabaseError(
            f"The database path {path} is not a regular file (a device, FIFO or socket). Give the "
            "path of the acme_srv.db file.",
            database=path,
        )
    real = os.path.realpath(path)
    if not os.access(real, os.R_OK):
        raise DatabaseError(
            f"Permission denied reading the database {path}. Run the task as the user that owns "
            "it (become_user).",
            database=path,
        )
    directory = os.path.dirname(real) or "."
    if writable and not (os.access(real, os.W_OK) and os.access(directory, os.W_OK)):
        raise DatabaseError(
            f"The database {path} or its directory is read-only for this user, and SQLite needs "
            "both to be writable for its journal. Run the task as the user that owns the "
            "database (become_user), or use check mode to only see what would change.",
            database=path,
        )


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


def _lock_timeout(path: str, busy_timeout: float) -> LockTimeout:
    return LockTimeout(
        f"The database {path} stayed locked for more than busy_timeout={busy_timeout:g} s, held by "
        "the acme2certifier server or another process. Retry later or raise busy_timeout.",
        database=path,
    )

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Watch the SQLite locks on a database file from outside, without taking any lock.

SQLite's unix VFS (rollback journal mode, as acme2certifier uses it) locks byte ranges of the
database file with POSIX fcntl locks. Every reader holds a read lock on the 510-byte SHARED
range. A writer holds a write lock on the RESERVED byte, and while it commits, write locks on
the PENDING byte and on the SHARED range. fcntl(F_GETLK) reports whether another process
holds a conflicting lock without acquiring one, so the probe cannot delay the process it
watches (a probe that tried BEGIN IMMEDIATE would make the measured writer wait):

- F_GETLK for a write lock over the whole range finds any lock, so the probe records how long
  at least one lock (reads included) is held without a gap. That is how long a server
  transaction that wants to commit has to wait.
- F_GETLK for a read lock finds only write locks (RESERVED, PENDING, EXCLUSIVE), which stop
  a server from starting a write transaction.

The probe samples the locks every POLL_SECONDS in a thread of the runner, which otherwise only
waits for the measured process. It does not poll in a tight loop: on the benchmark machine
two busy processes run at half speed each, so a spinning probe would slow the measured run
down. Two locks with a gap shorter than one sample between them count as one lock, so the
reported maximum is an upper bound. measure.py also times each read and write transaction of the
engine and of acme2certifier from inside.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import threading
import time
from typing import Any, Dict

PENDING_BYTE = 0x40000000
LOCK_RANGE = 2 + 510  # PENDING byte, RESERVED byte and the SHARED range
POLL_SECONDS = 0.0002
# struct flock on Linux x86_64: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid, padded to 32 bytes.
FLOCK_FORMAT = "hhqqi4x"


class LockProbe(threading.Thread):
    """Record the longest unbroken stretches of SQLite locks held by other processes on a file."""

    def __init__(self, path: str, max_seconds: float) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.max_seconds = max_seconds
        self._stop_event = threading.Event()
        self.polls = 0
        self.max_any = 0.0
        self.max_write = 0.0
        self.duration = 0.0

    def _held(self, handle: int, lock_type: int) -> bool:
        request = struct.pack(FLOCK_FORMAT, lock_type, os.SEEK_SET, PENDING_BYTE, LOCK_RANGE, 0)
        answer = fcntl.fcntl(handle, fcntl.F_GETLK, request)
        return struct.unpack(FLOCK_FORMAT, answer)[0] != fcntl.F_UNLCK

    def run(self) -> None:
        handle = os.open(self.path, os.O_RDONLY)
        clock = time.perf_counter
        started = clock()
        deadline = started + self.max_seconds
        any_since = write_since = None
        try:
            while not self._stop_event.is_set():
                now = clock()
                if now > deadline:
                    break
                any_held = self._held(handle, fcntl.F_WRLCK)
                write_held = any_held and self._held(handle, fcntl.F_RDLCK)
                self.polls += 1
                if any_held and any_since is None:
                    any_since = now
                elif not any_held and any_since is not None:
                    self.max_any = max(self.max_any, now - any_since)
                    any_since = None
                if write_held and write_since is None:
                    write_since = now
                elif not write_held and write_since is not None:
                    self.max_write = max(self.max_write, now - write_since)
                    write_since = None
                time.sleep(POLL_SECONDS)
            end = clock()
            if any_since is not None:
                self.max_any = max(self.max_any, end - any_since)
            if write_since is not None:
                self.max_write = max(self.max_write, end - write_since)
            self.duration = end - started
        finally:
            os.close(handle)

    def stop(self) -> Dict[str, Any]:
        """Stop polling and return the longest stretches in milliseconds."""
        self._stop_event.set()
        self.join(timeout=10)
        poll_us = self.duration / self.polls * 1e6 if self.polls else None
        return {
            "max_lock_ms": round(self.max_any * 1000, 2),
            "max_write_lock_ms": round(self.max_write * 1000, 2),
            "polls": self.polls,
            "poll_us": round(poll_us, 1) if poll_us else None,
        }


class ServerWriter(threading.Thread):
    """Write to the database like the acme2certifier server does and time every write.

    acme2certifier 0.46.3's wsgi handler opens a connection with sqlite3.connect(path) for
    each call (Python's default busy timeout of 5 s), writes one statement and commits. This
    thread does the same every interval seconds with an UPDATE of the housekeeping table's
    first row to its own values, which no benchmarked operation reads or writes. The time of
    each write, from connect to the end of COMMIT, is how long a server request would wait
    for the operation's locks.
    """

    def __init__(self, path: str, max_seconds: float, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.max_seconds = max_seconds
        self.interval = interval
        self._stop_event = threading.Event()
        self.durations: list = []
        self.errors: list = []

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection = sqlite3.connect(self.path)
                try:
                    connection.execute(
                        "UPDATE housekeeping SET name = name WHERE id = (SELECT min(id) FROM housekeeping)")
                    connection.commit()
                finally:
                    connection.close()
                self.durations.append(time.perf_counter() - started)
            except sqlite3.Error as exc:
                self.errors.append(f"{exc} after {time.perf_counter() - started:.1f} s")
            self._stop_event.wait(self.interval)

    def stop(self) -> Dict[str, Any]:
        """Stop writing and return the write times in milliseconds."""
        self._stop_event.set()
        self.join(timeout=15)
        ordered = sorted(self.durations)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None
        return {
            "writes": len(ordered),
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
            "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
            "errors": self.errors[:5],
            "error_count": len(self.errors),
        }

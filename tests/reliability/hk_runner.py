# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run engine operations in a child process that a test can kill at any moment.

Usage: ``python hk_runner.py SPEC``, where SPEC is a JSON object::

    {"ops": [{"op": "cleanup", "settings": {"database": "...", "batch_size": 20},
              "args": {"targets": ["certificates"], "check_mode": false}}],
     "trace": true, "umask": 0}

``op`` is one of invalidate, cleanup, report and info. ``settings`` are the options every
module shares, and ``args`` are the keyword arguments of the engine entry point. The modules
call the same entry points, so this runs the module code without Ansible's start-up time.

Output on stdout, one line each, flushed at once so a test can react to it:

* ``start OP`` when an operation starts, after Python and the engine are loaded;
* ``begin N`` when write transaction N holds the write lock (BEGIN IMMEDIATE returned),
  and ``end N SECONDS STATEMENTS`` when its COMMIT or ROLLBACK returned (only with
  ``"trace": true``);
* ``paused N POSITION`` when ``"pause": [N, POSITION]`` is given: the process then waits for
  a line on stdin inside transaction N, right after BEGIN (position 0), after statement
  POSITION, or after COMMIT (position -1), so a test can kill it exactly there;
* ``result JSON`` per operation: the engine's result plus ``transactions``, the write
  transaction statistics of that operation in seconds;
* ``failed JSON`` with ``msg`` when an operation raises HousekeepingError (exit status 1).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
import time
from typing import Any, Dict, List, Optional, Tuple


class TransactionStats:
    """Durations of write transactions, measured from BEGIN IMMEDIATE to COMMIT or ROLLBACK."""

    def __init__(self) -> None:
        self.echo = False
        # (transaction number, statement position) at which to stop and wait for a kill.
        # Position 0 is right after BEGIN IMMEDIATE, n after the n-th statement, -1 after COMMIT.
        self.pause: Optional[Tuple[int, int]] = None
        self.count = 0
        self.statements = 0
        self.durations: List[float] = []
        self.begin_waits: List[float] = []
        self.max_statements = 0
        self._open_since: Optional[float] = None

    def began(self, waited: float) -> None:
        self.count += 1
        self.statements = 0
        self.begin_waits.append(waited)
        self._open_since = time.perf_counter()
        self._say(f"begin {self.count}")
        self._maybe_pause(0)

    def statement(self) -> None:
        if self._open_since is None:
            return
        self.statements += 1
        self._maybe_pause(self.statements)

    def ended(self) -> None:
        if self._open_since is None:
            return
        duration = time.perf_counter() - self._open_since
        self._open_since = None
        self.durations.append(duration)
        self.max_statements = max(self.max_statements, self.statements)
        self._say(f"end {self.count} {duration:.6f} {self.statements}")
        self._maybe_pause(-1)

    def _say(self, line: str) -> None:
        if self.echo:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def _maybe_pause(self, position: int) -> None:
        """Stop at the requested spot until stdin closes or the test kills this process."""
        if self.pause == (self.count, position):
            self._say(f"paused {self.count} {position}")
            sys.stdin.readline()

    def summary(self) -> Dict[str, Any]:
        return {
            "count": len(self.durations),
            "max_seconds": max(self.durations, default=0.0),
            "total_seconds": sum(self.durations),
            "max_begin_wait_seconds": max(self.begin_waits, default=0.0),
            "max_statements": self.max_statements,
        }

    def reset(self) -> None:
        self.durations = []
        self.begin_waits = []


STATS = TransactionStats()


class TimedCursor(sqlite3.Cursor):
    """A cursor that reports when a write transaction starts and ends."""

    def execute(self, sql: str, parameters: Any = ()) -> "TimedCursor":  # type: ignore[override]
        keyword = sql.strip().split(None, 1)[0].upper() if sql.strip() else ""
        started = time.perf_counter()
        cursor = super().execute(sql, parameters)
        if keyword == "BEGIN" and "IMMEDIATE" in sql.upper():
            STATS.began(time.perf_counter() - started)
        elif keyword in ("COMMIT", "ROLLBACK", "END"):
            STATS.ended()
        else:
            STATS.statement()
        return cursor


class TimedConnection(sqlite3.Connection):
    """A connection whose cursors, including those of Connection.execute, are TimedCursors."""

    def cursor(self, factory: Any = TimedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)


def install_tracing(echo: bool, pause: Optional[List[int]] = None) -> None:
    """Make every sqlite3.connect() in this process return a TimedConnection."""
    STATS.echo = echo
    STATS.pause = (int(pause[0]), int(pause[1])) if pause else None
    original = sqlite3.connect
    if getattr(original, "traced", False):
        return

    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", TimedConnection)
        return original(*args, **kwargs)

    connect.traced = True  # type: ignore[attr-defined]
    sqlite3.connect = connect  # type: ignore[assignment]


def run_operation(engine: Any, op: Dict[str, Any]) -> Dict[str, Any]:
    """Call the engine entry point that op names and return its result."""
    settings = engine.Settings.from_params(op.get("settings", {}))
    args = dict(op.get("args", {}))
    name = op["op"]
    if name == "invalidate":
        return engine.run_invalidate(settings, **args)
    if name == "cleanup":
        return engine.run_cleanup(settings, **args)
    if name == "report":
        return engine.run_report(settings, **args)
    if name == "info":
        return engine.gather_info(settings, **args)
    raise ValueError(f"unknown op {name!r}; expected invalidate, cleanup, report or info")


def emit(kind: str, payload: Dict[str, Any]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload, default=str)}\n")
    sys.stdout.flush()


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: hk_runner.py SPEC_JSON\n")
        return 2
    spec = json.loads(argv[1])
    if spec.get("umask") is not None:
        os.umask(int(spec["umask"]))
    install_tracing(bool(spec.get("trace")), spec.get("pause"))

    # Imported after install_tracing, so the engine calls the patched sqlite3.connect.
    from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import engine
    from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk.errors import HousekeepingError

    for op in spec["ops"]:
        STATS.reset()
        sys.stdout.write(f"start {op['op']}\n")
        sys.stdout.flush()
        started = time.perf_counter()
        try:
            result = run_operation(engine, op)
        except HousekeepingError as exc:
            emit("failed", {"op": op["op"], "msg": exc.msg, "details": exc.details})
            return 1
        result["transactions"] = STATS.summary()
        result["elapsed_seconds"] = time.perf_counter() - started
        result["op"] = op["op"]
        emit("result", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

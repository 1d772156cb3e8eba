# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run one housekeeping operation once in this fresh process and write what it measured.

run.py starts this script once per measurement, so every run pays its own imports and
starts with a cold Python heap. Methods:

    engine    the collection's engine (plugins/module_utils/_acmehk), imported without Ansible
    raw       the raw limit from raw_limit.py
    upstream  acme2certifier 0.46.3's Housekeeping class, configured through ACME_SRV_CONFIGFILE
    bare      nothing: the peak RSS of this script without any work

The result JSON contains the seconds of the operation alone (imports excluded), its CPU
seconds, the rows the
method reports, this program's peak RSS (VmHWM), and for the engine the longest single read (fetch)
and write transaction, timed by wrapping SQLiteDatabase.fetch and write.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)

WRITE_OPERATIONS = ("orders", "authorizations", "certificate_dates", "certificates_blank",
                    "certificates_purge", "nonces")
# Report operations: (report, format, nested).
REPORT_OPERATIONS = {
    "report_accounts_csv": ("accounts", "csv", False),
    "report_accounts_json": ("accounts", "json", False),
    "report_accounts_nested": ("accounts", "json", True),
    "report_certificates_csv": ("certificates", "csv", False),
    "report_certificates_json": ("certificates", "json", False),
}
OPERATIONS = WRITE_OPERATIONS + tuple(REPORT_OPERATIONS)


class CallTimer:
    """Maximum duration of the calls of one kind, and the SQL text of the slowest call."""

    def __init__(self) -> None:
        self.calls = 0
        self.max_seconds = 0.0
        self.max_sql = ""

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(database: Any, statements: Any, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(database, statements, *args)
            finally:
                elapsed = time.perf_counter() - started
                self.calls += 1
                if elapsed > self.max_seconds:
                    self.max_seconds = elapsed
                    if isinstance(statements, str):
                        sql = statements
                    else:
                        sql = statements[0][0] if statements else ""
                    self.max_sql = " ".join(str(sql).split())[:200]
        return timed

    def as_dict(self) -> Dict[str, Any]:
        return {"calls": self.calls, "max_ms": round(self.max_seconds * 1000, 2), "max_sql": self.max_sql}


class SpanTimer:
    """Maximum time between acme2certifier's DBstore._db_open() and the matching _db_close()."""

    def __init__(self) -> None:
        self.calls = 0
        self.max_seconds = 0.0
        self._opened: Optional[float] = None

    def wrap_open(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(store: Any) -> Any:
            self._opened = time.perf_counter()
            return function(store)
        return timed

    def wrap_close(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(store: Any) -> Any:
            try:
                return function(store)
            finally:
                if self._opened is not None:
                    self.calls += 1
                    self.max_seconds = max(self.max_seconds, time.perf_counter() - self._opened)
                    self._opened = None
        return timed

    def as_dict(self) -> Dict[str, Any]:
        return {"calls": self.calls, "max_ms": round(self.max_seconds * 1000, 2)}


def run_engine(operation: str, database: str, now: int, dest: Optional[str]) -> Dict[str, Any]:
    """Call the engine directly, as the modules do but without Ansible."""
    sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))
    # pylint: disable-next=import-error,import-outside-toplevel
    from _acmehk import db as engine_db, engine

    readers, writers = CallTimer(), CallTimer()
    engine_db.SQLiteDatabase.fetch = readers.wrap(engine_db.SQLiteDatabase.fetch)
    engine_db.SQLiteDatabase.write = writers.wrap(engine_db.SQLiteDatabase.write)
    settings = engine.Settings(database=database, now=now)

    started = time.perf_counter()
    if operation in ("orders", "authorizations"):
        result = engine.run_invalidate(settings, [operation], check_mode=False)
        rows = result[operation]["count"]
    elif operation in ("certificates_blank", "certificates_purge"):
        result = engine.run_cleanup(settings, ["certificates"], check_mode=False,
                                    purge=operation == "certificates_purge")
        rows = result["certificates"]["count"]
    elif operation in ("nonces", "certificate_dates"):
        result = engine.run_cleanup(settings, [operation], check_mode=False)
        rows = result[operation]["count"]
    else:
        report, report_format, nested = REPORT_OPERATIONS[operation]
        result = engine.run_report(settings, report, report_format, nested, dest, check_mode=False)
        rows = result["rows"]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": rows, "engine_fetch": readers.as_dict(), "engine_write": writers.as_dict()}


def run_raw(operation: str, database: str, now: int, dest: Optional[str], validity: int) -> Dict[str, Any]:
    import raw_limit  # pylint: disable=import-outside-toplevel

    started = time.perf_counter()
    if operation in WRITE_OPERATIONS:
        rows = raw_limit.run_write(database, operation, now, validity)
    else:
        report, report_format, nested = REPORT_OPERATIONS[operation]
        rows = raw_limit.run_report(database, report, report_format, nested, dest)
    return {"seconds": time.perf_counter() - started, "rows": rows}


class RecordingHandler(logging.Handler):
    """Keep the first error messages of acme2certifier, which catches most exceptions itself."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:300])


def run_upstream(operation: str, config: str, now: int, dest: Optional[str]) -> Dict[str, Any]:
    """Run acme2certifier 0.46.3's own Housekeeping method for the operation."""
    os.environ["ACME_SRV_CONFIGFILE"] = config
    # pylint: disable-next=import-error,import-outside-toplevel
    from acme2certifier.acme_srv.housekeeping import Housekeeping

    # pylint: disable-next=import-error,import-outside-toplevel
    from acme2certifier.dbhandlers import wsgi_handler

    # Every database access of the wsgi handler runs from _db_open() to _db_close(), which
    # commits. The time in between is the upper bound of how long that connection held locks.
    spans = SpanTimer()
    wsgi_handler.DBstore._db_open = spans.wrap_open(wsgi_handler.DBstore._db_open)
    wsgi_handler.DBstore._db_close = spans.wrap_close(wsgi_handler.DBstore._db_close)

    logger = logging.getLogger("upstream")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    errors = RecordingHandler()
    logger.addHandler(errors)

    started = time.perf_counter()
    rows: Optional[int] = None
    with Housekeeping(False, logger) as housekeeping:
        if operation == "orders":
            rows = len(housekeeping.orders_invalidate(uts=now))
        elif operation == "authorizations":
            housekeeping.authorizations_invalidate(uts=now)
        elif operation == "certificate_dates":
            housekeeping.certificate_dates_update()
        elif operation in ("certificates_blank", "certificates_purge"):
            rows = len(housekeeping.certificates_cleanup(uts=now, purge=operation == "certificates_purge"))
        elif operation == "nonces":
            rows = len(housekeeping.nonce_cleanup(uts=now))
        else:
            report, report_format, nested = REPORT_OPERATIONS[operation]
            assert dest is not None and dest.endswith("." + report_format), dest
            name = dest[: -len(report_format) - 1]
            if report == "accounts":
                housekeeping.accountreport_get(report_format=report_format, report_name=name, nested=nested)
            else:
                housekeeping.certreport_get(report_format=report_format, report_name=name)
    return {"seconds": time.perf_counter() - started, "rows": rows, "errors_logged": errors.count,
            "first_errors": errors.first, "upstream_connection": spans.as_dict()}


def peak_rss_kib() -> int:
    """Return VmHWM, the peak RSS of this program since exec.

    getrusage's ru_maxrss is not used: Linux carries it over exec, so it would include the
    runner that forked this process.
    """
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("VmHWM missing from /proc/self/status")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Measure one housekeeping operation in this process.")
    parser.add_argument("--method", required=True, choices=("engine", "raw", "upstream", "bare"))
    parser.add_argument("--operation", required=True, choices=OPERATIONS)
    parser.add_argument("--database", required=True)
    parser.add_argument("--config", help="acme_srv.cfg for the upstream method")
    parser.add_argument("--now", type=int, required=True, help="reference time in epoch seconds")
    parser.add_argument("--nonce-validity", type=int, default=86400)
    parser.add_argument("--dest", help="report file")
    parser.add_argument("--memory-cap", type=int, default=0, help="address space limit in bytes (0: none)")
    parser.add_argument("--out", required=True, help="result JSON file")
    args = parser.parse_args(argv)

    if args.memory_cap:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_cap, args.memory_cap))

    result: Dict[str, Any] = {"method": args.method, "operation": args.operation}
    status = 0
    cpu_started = time.process_time()
    try:
        if args.method == "engine":
            result.update(run_engine(args.operation, args.database, args.now, args.dest))
        elif args.method == "raw":
            result.update(run_raw(args.operation, args.database, args.now, args.dest, args.nonce_validity))
        elif args.method == "upstream":
            result.update(run_upstream(args.operation, args.config, args.now, args.dest))
        else:
            result.update(seconds=0.0, rows=None)
    except MemoryError:
        result["error"] = "MemoryError: the address space limit set by --memory-cap was reached"
        status = 3
    except Exception as exc:  # pylint: disable=broad-exception-caught
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
        status = 2
    # CPU time of the whole call, a little more than the operation alone (it includes the
    # imports done inside run_engine and run_upstream), and less sensitive than wall time to
    # other processes on the machine.
    result["cpu_seconds"] = time.process_time() - cpu_started
    result["peak_rss_kib"] = peak_rss_kib()
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return status


if __name__ == "__main__":
    sys.exit(main())

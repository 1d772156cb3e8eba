"""Keep a real acme2certifier 0.46.3 server busy with several ACME clients.

lab.py builds a database and stops. This module keeps the server running
while ``--clients`` load_client.py processes issue certificates at the same
time, so that housekeeping can run on the live database from outside:

1. ``LoadRun.start()`` prepares the work directory like ``lab.py build``
   (acme_srv.cfg, test CA) and starts ``load.py run-isolated`` in a new
   loopback-only network namespace (``unshare -n``, see lab.py).
2. Inside, the server starts (``serve-timed``: lab.py's wsgiref server with
   timing of every SQLite call), a HEAD /acme/newnonce makes it create its
   database, and ``logs/load-ready.json`` appears. ``wait_ready()`` returns.
3. The caller may now add rows to the database while the server is idle, then
   calls ``release()``, which creates ``logs/load-go``.
4. All clients start at once. Each issues at most ``--certs-per-client``
   certificates and starts none after ``--max-seconds``. Clients still
   running ``--max-seconds`` + CLIENT_GRACE_SECONDS after the start are
   killed, the server is stopped, and ``logs/load.json`` is written.
   ``wait()`` returns its content.

The SQLite timing of the server (``logs/server-sqlite.json``) lists every
statement and COMMIT of the server with its wall-clock start and duration,
and counts "database is locked" errors. The server is single-threaded, so a
call that takes much longer than usual waited for a lock that another
process held, or for the disk.

Command line, for a manual run (no rows are added, the clients start at once):

    python tests/acme_server/load.py run --workdir /tmp/load --clients 3 \\
        --certs-per-client 20 --max-seconds 120

Only the standard library is imported here, as in lab.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import lab

LOAD_PATH = Path(__file__).resolve()
LOAD_CLIENT_PATH = LOAD_PATH.with_name("load_client.py")

LOG = logging.getLogger("acme_load")

MAX_CLIENTS = 10
MAX_CERTS_PER_CLIENT = 200
MAX_SECONDS = 600.0
# Seconds a client may need to finish the certificate it started before
# --max-seconds ran out (load_client.py waits at most 30 s per order step).
CLIENT_GRACE_SECONDS = 60.0
# Calls of the server listed one by one in server-sqlite.json, at most.
MAX_LISTED_CALLS = 200000


@dataclasses.dataclass
class LoadOptions:
    """Settings of one load run. Times are in seconds."""

    workdir: Path
    clients: int = 3
    certs_per_client: int = 20
    max_seconds: float = 120.0
    port: int = 18080
    cert_validity_days: int = 1
    go_timeout: float = 120.0
    server_start_timeout: float = 30.0

    def validate(self) -> None:
        """Raise lab.LabError when an option is out of range."""
        limits = (
            ("clients", self.clients, 1, MAX_CLIENTS),
            ("certs_per_client", self.certs_per_client, 1, MAX_CERTS_PER_CLIENT),
            ("max_seconds", self.max_seconds, 1, MAX_SECONDS),
            ("port", self.port, 1, 65535),
            ("cert_validity_days", self.cert_validity_days, 1, 36500),
            ("go_timeout", self.go_timeout, 1, MAX_SECONDS),
            ("server_start_timeout", self.server_start_timeout, 1, MAX_SECONDS),
        )
        for name, value, low, high in limits:
            if not low <= value <= high:
                raise lab.LabError(f"invalid {name}={value}: expected a value from {low} to {high}")

    def lab_options(self) -> lab.LabOptions:
        return lab.LabOptions(
            workdir=self.workdir,
            port=self.port,
            cert_validity_days=self.cert_validity_days,
            server_start_timeout=self.server_start_timeout,
            timeout=self.total_timeout(),
        )

    def total_timeout(self) -> float:
        """Return the longest the namespace process may run."""
        return self.server_start_timeout + self.go_timeout + self.max_seconds + CLIENT_GRACE_SECONDS + 30

    def to_argv(self) -> List[str]:
        argv = []
        for field in dataclasses.fields(self):
            argv += ["--" + field.name.replace("_", "-"), str(getattr(self, field.name))]
        return argv


@dataclasses.dataclass
class LoadPaths(lab.LabPaths):
    """lab.py's paths plus the files of a load run."""

    @property
    def ready(self) -> Path:
        return self.logs_dir / "load-ready.json"

    @property
    def go(self) -> Path:
        return self.logs_dir / "load-go"

    @property
    def result(self) -> Path:
        return self.logs_dir / "load.json"

    @property
    def server_stats(self) -> Path:
        return self.logs_dir / "server-sqlite.json"

    def load_client_result(self, index: int) -> Path:
        return self.logs_dir / f"load-client-{index}.json"

    def load_client_log(self, index: int) -> Path:
        return self.logs_dir / f"load-client-{index}.log"


# ---------------------------------------------------------------------------
# Outside the namespace


class LoadRun:
    """One load run, started in the background and controlled through files."""

    def __init__(self, options: LoadOptions) -> None:
        options.validate()
        self.options = options
        self.paths = LoadPaths(options.workdir)
        self.process: Optional[subprocess.Popen] = None
        self.started = 0.0

    def start(self) -> None:
        """Prepare the work directory and start the namespace process."""
        lab.prepare_workdir(self.options.lab_options(), self.paths)
        command = lab.unshare_command() + [sys.executable, str(LOAD_PATH), "run-isolated"] + self.options.to_argv()
        log = open(self.paths.logs_dir / "load-namespace.log", "ab")  # pylint: disable=consider-using-with
        try:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.started = time.monotonic()

    def wait_ready(self) -> Dict[str, Any]:
        """Wait until the server has created its database; return load-ready.json."""
        deadline = self.started + self.options.server_start_timeout + 30
        while not self.paths.ready.exists():
            self._check_alive("before the server was ready")
            if time.monotonic() > deadline:
                self.stop()
                raise lab.LabError(f"the server was not ready within {deadline - self.started:.0f} s; "
                                   f"see {self.paths.logs_dir}")
            time.sleep(0.1)
        return json.loads(self.paths.ready.read_text(encoding="utf-8"))

    def release(self) -> None:
        """Let the clients start."""
        self.paths.go.write_text("go\n", encoding="utf-8")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> Dict[str, Any]:
        """Wait for the end of the run and return load.json."""
        assert self.process is not None
        try:
            self.process.wait(timeout=self.options.total_timeout() + lab.KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.stop()
            raise lab.LabError(f"the load run did not end in time; see {self.paths.logs_dir}") from None
        if not self.paths.result.exists():
            raise lab.LabError(f"the load run ended with status {self.process.returncode} without "
                               f"{self.paths.result}; last lines of its log:\n"
                               f"{lab.tail(self.paths.logs_dir / 'load-namespace.log')}")
        return json.loads(self.paths.result.read_text(encoding="utf-8"))

    def stop(self) -> None:
        """Kill the namespace process group (server and clients) if it still runs."""
        if self.process is not None and self.process.poll() is None:
            lab.kill_process_group(self.process)

    def _check_alive(self, when: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise lab.LabError(f"the load run ended {when} with status {self.process.returncode}; last lines:\n"
                               f"{lab.tail(self.paths.logs_dir / 'load-namespace.log')}")


# ---------------------------------------------------------------------------
# Inside the namespace


def isolated_main(options: LoadOptions, paths: LoadPaths) -> int:
    """Start the server, wait for the go file, run the clients, stop the server."""
    lab.bring_up_loopback()
    env = lab.child_environment()
    server = start_timed_server(options, paths, env)
    started = time.monotonic()
    try:
        directory_url = lab.wait_for_directory(options.lab_options(), paths, server)
        create_database(options.port)
        paths.ready.write_text(json.dumps({"directory": directory_url, "database": str(paths.database)}),
                               encoding="utf-8")
        wait_for_go(paths, options.go_timeout)
        clients_started = time.time()
        clients = run_clients(options, paths, env, directory_url)
    finally:
        lab.stop_server(server)

    result = {
        "clients": clients,
        "clients_started_at": clients_started,
        "elapsed_seconds": round(time.monotonic() - started, 2),
        "server_sqlite": lab.read_json(paths.server_stats),
        "server_log_errors": server_log_errors(paths.server_log),
    }
    paths.result.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def start_timed_server(options: LoadOptions, paths: LoadPaths, env: Dict[str, str]) -> subprocess.Popen:
    server_env = dict(env, ACME_SRV_CONFIGFILE=str(paths.config), ACME2CERTIFIER_I_KNOW_THE_RISK="1")
    command = [sys.executable, str(LOAD_PATH), "serve-timed", "--port", str(options.port),
               "--stats", str(paths.server_stats)]
    with open(paths.server_log, "ab") as log_file:
        return subprocess.Popen(command, cwd=paths.workdir, env=server_env, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT)


def create_database(port: int) -> None:
    """Ask for a nonce, which makes the server create its database."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/acme/newnonce", method="HEAD")
    with opener.open(request, timeout=30) as response:
        if response.status not in (200, 204):
            raise lab.LabError(f"HEAD /acme/newnonce returned status {response.status}")


def wait_for_go(paths: LoadPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not paths.go.exists():
        if time.monotonic() > deadline:
            raise lab.LabError(f"{paths.go} did not appear within {timeout:.0f} s")
        time.sleep(0.05)


def run_clients(options: LoadOptions, paths: LoadPaths, env: Dict[str, str], directory_url: str) -> List[Dict[str, Any]]:
    """Run all clients at once and return their records, with exit status and kill flag."""
    processes = []
    for index in range(options.clients):
        command = [sys.executable, str(LOAD_CLIENT_PATH), "--directory", directory_url, "--client-index", str(index),
                   "--certs", str(options.certs_per_client), "--max-seconds", str(options.max_seconds),
                   "--output", str(paths.load_client_result(index))]
        with open(paths.load_client_log(index), "ab") as log_file:
            processes.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                              stderr=subprocess.STDOUT))
    LOG.info("started %d clients", len(processes))

    deadline = time.monotonic() + options.max_seconds + CLIENT_GRACE_SECONDS
    records = []
    for index, process in enumerate(processes):
        killed = False
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            LOG.error("client %d still runs after the time limit; killing it", index)
            process.kill()
            process.wait(timeout=10)
            killed = True
        record = lab.read_json(paths.load_client_result(index)) or {"issued": [], "failures": [
            {"error": f"no result file; last lines of its log:\n{lab.tail(paths.load_client_log(index))}"}]}
        record.update(returncode=process.returncode, killed=killed)
        records.append(record)
    return records


def server_log_errors(path: Path) -> List[str]:
    """Return the server log lines that report errors or database locks."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    words = ("Traceback", "ERROR", "locked", "OperationalError")
    return [line for line in lines if any(word in line for word in words)][:200]


# ---------------------------------------------------------------------------
# Server with SQLite timing


class SqliteTimer:
    """Durations of the server's SQLite statements and commits."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock_errors = 0
        self.errors: List[str] = []
        # [wall-clock start, seconds, first SQL keyword] of every call, up to MAX_LISTED_CALLS.
        self.timeline: List[List[Any]] = []

    def record(self, sql: str, started_wall: float, seconds: float, error: Optional[BaseException]) -> None:
        self.calls += 1
        if len(self.timeline) < MAX_LISTED_CALLS:
            keyword = sql.split(None, 1)[0].upper() if sql.strip() else ""
            self.timeline.append([round(started_wall, 4), round(seconds, 5), keyword])
        if error is not None:
            if "locked" in str(error):
                self.lock_errors += 1
            if len(self.errors) < 100:
                self.errors.append(f"{type(error).__name__}: {error} in {' '.join(sql.split())[:80]}")

    def as_dict(self) -> Dict[str, Any]:
        return {"calls": self.calls, "lock_errors": self.lock_errors, "errors": self.errors,
                "timeline": self.timeline}


TIMER = SqliteTimer()


def _timed(sql: str, call):
    started_wall = time.time()
    started = time.perf_counter()
    try:
        result = call()
    except sqlite3.Error as err:
        TIMER.record(sql, started_wall, time.perf_counter() - started, err)
        raise
    TIMER.record(sql, started_wall, time.perf_counter() - started, None)
    return result


class TimedCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):  # pylint: disable=arguments-differ
        return _timed(sql, lambda: super(TimedCursor, self).execute(sql, parameters))

    def executemany(self, sql, seq_of_parameters):  # pylint: disable=arguments-differ
        return _timed(sql, lambda: super(TimedCursor, self).executemany(sql, seq_of_parameters))


class TimedConnection(sqlite3.Connection):
    def cursor(self, factory=TimedCursor):  # pylint: disable=arguments-differ
        return super().cursor(factory)

    def execute(self, sql, parameters=()):  # pylint: disable=arguments-differ
        return self.cursor().execute(sql, parameters)

    def commit(self):
        return _timed("COMMIT", super().commit)


def serve_timed(port: int, stats_path: Path) -> None:
    """Run lab.py's server with every sqlite3 connection timed, and write the timing at exit."""
    original = sqlite3.connect

    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", TimedConnection)
        return original(*args, **kwargs)

    sqlite3.connect = connect  # type: ignore[assignment]
    try:
        lab.serve(port)
    finally:
        stats_path.write_text(json.dumps(TIMER.as_dict(), indent=1), encoding="utf-8")


# ---------------------------------------------------------------------------
# Command line


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LoadOptions(workdir=Path("."))
    parser.add_argument("--workdir", type=Path, required=True, help="directory to create the lab in")
    parser.add_argument("--clients", type=int, default=defaults.clients,
                        help=f"ACME clients that issue certificates at the same time (default %(default)s, "
                             f"at most {MAX_CLIENTS})")
    parser.add_argument("--certs-per-client", type=int, default=defaults.certs_per_client,
                        help="certificates each client issues at most (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help="seconds after which clients start no new certificate (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port,
                        help="server port on 127.0.0.1 inside the namespace (default %(default)s)")
    parser.add_argument("--cert-validity-days", type=int, default=defaults.cert_validity_days,
                        help="lifetime of issued certificates in days (default %(default)s)")
    parser.add_argument("--go-timeout", type=float, default=defaults.go_timeout,
                        help="seconds to wait for logs/load-go after the server is ready (default %(default)s)")
    parser.add_argument("--server-start-timeout", type=float, default=defaults.server_start_timeout,
                        help="seconds to wait for GET /directory (default %(default)s)")


def options_from_args(args: argparse.Namespace) -> LoadOptions:
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(LoadOptions)}
    values["workdir"] = Path(os.path.abspath(values["workdir"]))
    return LoadOptions(**values)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_load_arguments(commands.add_parser("run", help="start a load run, let the clients go at once, print load.json"))
    add_load_arguments(commands.add_parser("run-isolated", help="internal: the part inside the network namespace"))
    serve_parser = commands.add_parser("serve-timed", help="internal: serve acme2certifier with SQLite timing")
    serve_parser.add_argument("--port", type=int, required=True)
    serve_parser.add_argument("--stats", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s load {args.command}: %(levelname)s %(message)s")
    # SIGTERM from lab.kill_process_group ends the namespace process through SystemExit, so
    # the finally blocks stop the server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        if args.command == "serve-timed":
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            serve_timed(args.port, args.stats)
            return 0
        options = options_from_args(args)
        options.validate()
        if args.command == "run-isolated":
            return isolated_main(options, LoadPaths(options.workdir))
        run = LoadRun(options)
        run.start()
        run.wait_ready()
        run.release()
        print(json.dumps(run.wait(), indent=2))
    except lab.LabError as err:
        LOG.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the reliability tests: bulk databases, the engine runner process, row states.

The engine runner (hk_runner.py) runs in its own process so that a test can kill it with
SIGKILL; see its docstring for the protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from conftest import COLLECTIONS, REPO
from ansible_collections.acmeops.housekeeping.tests.unit.plugins.module_utils.acme_testdb import (
    STATUS,
    AcmeDb,
    CertificateFactory,
    db_time,
)

RUNNER = Path(__file__).resolve().with_name("hk_runner.py")
# Figures of the last run (lock waits, transaction times, kill statistics), one JSON file per
# test, for docs/reliability.md.
FIGURES_DIR = Path(os.environ.get("ACMEHK_FIGURES_DIR", REPO / "build" / "reliability"))

NOW = 1796342400  # 2026-12-04T00:00:00Z, the reference time of the generated databases
DAY = 86400
NONCE_VALIDITY = 3600

TABLES = ("account", "orders", "authorization", "challenge", "certificate", "nonce")


# Bulk databases ---------------------------------------------------------------------------


@dataclass
class BulkShape:
    """How many rows of each kind a generated database has."""

    orders: int = 1500
    authorizations_per_order: int = 2
    nonces: int = 3000
    accounts: int = 50


def _spread(index: int, count: int, low: int, high: int) -> int:
    """Spread index over [low, high] and shuffle with a fixed permutation, so ids and times differ."""
    step = (high - low) / max(count - 1, 1)
    return int(low + ((index * 7919) % count) * step)


def fill_bulk_rows(connection: sqlite3.Connection, shape: BulkShape, low: int, high: int,
                   prefix: str = "bulk") -> Dict[str, int]:
    """Insert accounts, orders, authorizations, challenges, certificates and nonces.

    Expiry times are spread over [low, high], so a cutoff inside that range selects part of
    the rows. Certificates come in five kinds that acme2certifier's cleanup rules treat
    differently: dates set, dates 0 with a readable cert_raw, CSR only, already blanked, and
    neither certificate nor CSR. Returns the number of rows per table.
    """
    factory = CertificateFactory()
    # Real certificates whose notAfter lies on both sides of the cutoffs the tests use.
    pairs = [factory.issue(low - 30 * DAY, at, serial_number=4000 + number)
             for number, at in enumerate((low + DAY, (low + high) // 2, high - DAY, high + 30 * DAY))]
    statuses = [STATUS[name] for name in ("pending", "ready", "processing", "valid", "invalid", "valid")]
    authz_statuses = [STATUS[name] for name in ("pending", "valid", "expired", "invalid", "deactivated", "valid")]

    accounts = [(f"{prefix}acct{number:05d}", "ES256", f'{{"kid": "{prefix}{number}"}}',
                 f'["mailto:admin{number}@example.test"]', db_time(low)) for number in range(shape.accounts)]
    connection.executemany("INSERT INTO account (name, alg, jwk, contact, created_at) VALUES (?, ?, ?, ?, ?)",
                           accounts)
    account_ids = [row[0] for row in connection.execute("SELECT id FROM account WHERE name LIKE ? ORDER BY id",
                                                        (f"{prefix}acct%",))]

    orders = []
    for number in range(shape.orders):
        expires = _spread(number, shape.orders, low, high)
        orders.append((f"{prefix}ordr{number:06d}", '[{"type": "dns", "value": "bulk.example.test"}]',
                       account_ids[number % len(account_ids)], statuses[number % len(statuses)], expires,
                       db_time(expires - DAY)))
    connection.executemany(
        "INSERT INTO orders (name, identifiers, account_id, status_id, expires, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        orders)
    order_rows = connection.execute("SELECT id, expires FROM orders WHERE name LIKE ? ORDER BY id",
                                    (f"{prefix}ordr%",)).fetchall()

    authorizations = []
    for number, (order_id, order_expires) in enumerate(order_rows):
        for part in range(shape.authorizations_per_order):
            serial = number * shape.authorizations_per_order + part
            # Every 20th authorization has expires 0, which acme2certifier never expires.
            expires = 0 if serial % 20 == 0 else order_expires + (part - 1) * 3600
            authorizations.append((f"{prefix}athz{serial:06d}", order_id, "dns", "bulk.example.test", expires,
                                   f"token{serial}", authz_statuses[serial % len(authz_statuses)],
                                   db_time(order_expires - DAY)))
    connection.executemany(
        'INSERT INTO "authorization" (name, order_id, type, value, expires, token, status_id, created_at) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", authorizations)
    authz_ids = [row[0] for row in connection.execute('SELECT id FROM "authorization" WHERE name LIKE ? ORDER BY id',
                                                      (f"{prefix}athz%",))]
    connection.executemany(
        "INSERT INTO challenge (name, token, authorization_id, expires, type, status_id) VALUES (?, ?, ?, 0, ?, ?)",
        [(f"{prefix}chal{number:06d}", f"ctoken{number}", authz_id, "http-01", STATUS["valid"])
         for number, authz_id in enumerate(authz_ids)])

    certificates = []
    for number, (order_id, order_expires) in enumerate(order_rows):
        kind = number % 20
        pair = pairs[number % len(pairs)]
        expire = order_expires + 30 * DAY - 60 * DAY * (number % 2)
        name = f"{prefix}cert{number:06d}"
        created = db_time(order_expires - DAY)
        if kind < 14:  # dates known
            certificates.append((name, pair.chain_pem, pair.cert_raw, order_id, "MIIBcsr", created, expire - 90 * DAY,
                                 expire))
        elif kind < 16:  # dates 0, cert_raw readable
            certificates.append((name, pair.chain_pem, pair.cert_raw, order_id, "MIIBcsr", created, 0, 0))
        elif kind < 18:  # CSR only, judged by created_at and the 14-day rule
            csr_created = db_time(_spread(number, shape.orders, low - 20 * DAY, high))
            certificates.append((name, None, None, order_id, "MIIBcsr", csr_created, 0, 0))
        elif kind < 19:  # blanked by an earlier cleanup
            certificates.append((name, "removed by certificates.cleanup() on 2026-01-01T00:00:00Z", pair.cert_raw,
                                 order_id, "MIIBcsr", created, order_expires - 90 * DAY, order_expires))
        else:  # neither certificate nor CSR
            certificates.append((name, None, None, order_id, "", created, 0, 0))
    connection.executemany(
        "INSERT INTO certificate (name, cert, cert_raw, order_id, csr, created_at, issue_uts, expire_uts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", certificates)

    connection.executemany(
        "INSERT INTO nonce (nonce, created_at) VALUES (?, ?)",
        [(f"{prefix}nonce{number:06d}", db_time(_spread(number, shape.nonces, low - DAY, high)))
         for number in range(shape.nonces)])
    connection.commit()
    return {"account": len(accounts), "orders": len(orders), "authorization": len(authorizations),
            "challenge": len(authz_ids), "certificate": len(certificates), "nonce": shape.nonces}


def build_bulk_database(path: Path, shape: Optional[BulkShape] = None, journal_mode: str = "delete") -> Path:
    """Create an acme2certifier 0.46 database with thousands of rows around NOW."""
    AcmeDb(path)
    connection = sqlite3.connect(path)
    try:
        fill_bulk_rows(connection, shape or BulkShape(), NOW - 20 * DAY, NOW + 20 * DAY)
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
    finally:
        connection.close()
    return path


# Row states -------------------------------------------------------------------------------


Snapshot = Dict[str, Dict[int, tuple]]


def snapshot(database: Path, tables: Sequence[str] = TABLES) -> Snapshot:
    """Return every row of the given tables by id, read through a connection that may roll back."""
    # A read-write connection, because a hot journal left by a killed writer must be rolled
    # back first, as the next connection of the server would do.
    connection = sqlite3.connect(database)
    try:
        return {table: {row[0]: row for row in connection.execute(f'SELECT * FROM "{table}"')}
                for table in tables}
    finally:
        connection.close()


def integrity(database: Path) -> str:
    connection = sqlite3.connect(database)
    try:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


def changed_ids(before: Snapshot, after: Snapshot, table: str) -> List[int]:
    """Return the sorted ids whose row differs between two snapshots, deleted rows included."""
    ids = set(before[table]) | set(after[table])
    return sorted(row_id for row_id in ids if before[table].get(row_id) != after[table].get(row_id))


def assert_old_or_new(old: Snapshot, new: Snapshot, current: Snapshot) -> None:
    """Check that every row is in its state before the run or in its state after a full run."""
    for table in old:
        ids = set(old[table]) | set(new[table]) | set(current[table])
        wrong = [row_id for row_id in sorted(ids)
                 if current[table].get(row_id) not in (old[table].get(row_id), new[table].get(row_id))]
        assert not wrong, (f"{len(wrong)} row(s) of {table} are neither in their old nor in their new state, "
                           f"first: id {wrong[0]}: old {old[table].get(wrong[0])}, new {new[table].get(wrong[0])}, "
                           f"now {current[table].get(wrong[0])}")


def assert_whole_batches(old: Snapshot, new: Snapshot, current: Snapshot, phases: Sequence[str],
                         batch_size: int) -> int:
    """Check that a killed run changed whole batches in id order, one table after the other.

    phases lists the tables in the order the operation writes them. Returns the number of
    rows the killed run changed.
    """
    done_total = 0
    earlier_complete = True
    for table in phases:
        planned = changed_ids(old, new, table)
        done = changed_ids(old, current, table)
        if done:
            assert earlier_complete, f"{table} was changed before the tables written earlier were complete"
        assert done == planned[:len(done)], f"the changed {table} rows are not the first rows of the plan by id"
        assert len(done) % batch_size == 0 or len(done) == len(planned), (
            f"{len(done)} {table} rows changed, not a whole number of batches of {batch_size}: a batch was "
            "committed in part")
        earlier_complete = len(done) == len(planned)
        done_total += len(done)
    return done_total


# Engine runner ----------------------------------------------------------------------------


def runner_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(COLLECTIONS), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RunnerProcess:
    """A running hk_runner.py whose stdout is read line by line with a deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: List[str] = []
        self._buffer = b""
        self._closed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def _fill(self, timeout: float) -> bool:
        """Read what stdout has within timeout; return False at end of output."""
        if self._closed:
            return False
        descriptor = self.process.stdout.fileno()  # type: ignore[union-attr]
        ready, _unused, _unused2 = select.select([descriptor], [], [], max(timeout, 0))
        if not ready:
            return True
        chunk = os.read(descriptor, 65536)
        if not chunk:
            self._closed = True
            return False
        self._buffer += chunk
        return True

    def read_line(self, deadline: float) -> Optional[str]:
        """Return the next stdout line, or None at end of output. Fails the test after deadline."""
        while b"\n" not in self._buffer:
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the engine runner gave no expected output in time; output so far: {self.lines[-5:]}")
            if not self._fill(deadline - time.monotonic()):
                if self._buffer:
                    break
                return None
        line, _sep, self._buffer = self._buffer.partition(b"\n")
        self.lines.append(line.decode("utf-8", "replace"))
        return self.lines[-1]

    def wait_for(self, prefix: str, timeout: float = 60) -> Optional[str]:
        """Read lines until one starts with prefix; return None when the output ends first."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(deadline)
            if line is None or line.startswith(prefix):
                return line

    def kill(self) -> None:
        """Send SIGKILL (if still running) and collect the rest of the output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        while self._fill(5):
            pass
        if self._buffer:
            self.lines.extend(self._buffer.decode("utf-8", "replace").splitlines())
            self._buffer = b""

    def finish(self, timeout: float = 120) -> Tuple[int, List[Dict[str, Any]], Optional[Dict[str, Any]], str]:
        """Wait for the end and return (exit status, results, failure, stderr)."""
        deadline = time.monotonic() + timeout
        while self.read_line(deadline) is not None:
            pass
        self.process.wait(timeout=max(deadline - time.monotonic(), 1))
        err = self.process.stderr.read().decode("utf-8", "replace")  # type: ignore[union-attr]
        results = [json.loads(line[len("result "):]) for line in self.lines if line.startswith("result ")]
        failures = [json.loads(line[len("failed "):]) for line in self.lines if line.startswith("failed ")]
        return self.process.returncode, results, (failures[0] if failures else None), err

    def in_transaction(self) -> bool:
        """Tell whether the last trace line is a begin without its end, after kill()."""
        trace = [line for line in self.lines if line.startswith(("begin ", "end "))]
        return bool(trace) and trace[-1].startswith("begin ")


def start_runner(ops: List[Dict[str, Any]], trace: bool = False, umask: Optional[int] = None,
                 pause: Optional[Tuple[int, int]] = None) -> RunnerProcess:
    """Start hk_runner.py with the given operations; see hk_runner.py for trace and pause."""
    spec = json.dumps({"ops": ops, "trace": trace or pause is not None, "umask": umask, "pause": pause})
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, str(RUNNER), spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=runner_env())
    return RunnerProcess(process)


def run_ops(ops: List[Dict[str, Any]], expect_failure: bool = False, timeout: float = 120,
            **kwargs: Any) -> Any:
    """Run operations to the end; return their results, or the failure when expect_failure."""
    runner = start_runner(ops, **kwargs)
    returncode, results, failure, err = runner.finish(timeout)
    if expect_failure:
        assert failure is not None, f"expected a failure, got exit status {returncode}: {results}\n{err}"
        return failure
    assert failure is None, f"engine runner failed: {failure}\n{err}"
    assert returncode == 0, f"engine runner exited with status {returncode}:\n{err}"
    return results


def op(name: str, database: Path, settings: Optional[Dict[str, Any]] = None, **args: Any) -> Dict[str, Any]:
    """Describe one engine operation for hk_runner.py."""
    merged = {"database": str(database), "now": NOW}
    merged.update(settings or {})
    if name == "report":
        merged.pop("now")
    if name != "info":
        args.setdefault("check_mode", False)
    return {"op": name, "settings": merged, "args": args}


def files_open_in(pid: int, directory: Path) -> List[str]:
    """Return what pid has open inside directory, as /proc shows it.

    A file opened with O_TMPFILE has no name; /proc shows it as '<directory>/#<inode> (deleted)'.
    """
    prefix = str(directory) + os.sep
    found = []
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith(prefix):
            found.append(target)
    return found


def descendants(root: int) -> List[int]:
    """Return the pids of all processes below root, read from /proc."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def module_pid(root: int, module: str) -> Optional[int]:
    """Return the Python process below root that runs the module's AnsiballZ file."""
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        # ansible also runs chmod and rm on the AnsiballZ file, and sh -c around python.
        if b"python" in os.path.basename(argv[0]) and any(
                arg.endswith(f"AnsiballZ_{module}.py".encode()) for arg in argv[1:]):
            return pid
    return None


# Environment ------------------------------------------------------------------------------


def require_root(purpose: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{purpose} needs root")


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of the given size (mount's size= syntax, such as 64k) and unmount it after."""
    require_root("mounting a tmpfs")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def free_bytes(directory: Path) -> int:
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def write_figures(name: str, figures: Dict[str, Any]) -> Path:
    """Store the figures a test measured, for docs/reliability.md."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def seeded_random(label: str) -> random.Random:
    """Return a random generator seeded from ACMEHK_SEED (default 1) and a label, printed for reruns."""
    seed = f"{os.environ.get('ACMEHK_SEED', '1')}:{label}"
    print(f"random seed {seed!r} (set ACMEHK_SEED to vary it)")
    return random.Random(seed)

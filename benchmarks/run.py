# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark the housekeeping operations against the raw limit and acme2certifier 0.46.3.

For each size N (orders) the runner generates a database once (generate.py, cached under
--data-dir), then measures every operation with four methods, each run in a fresh process:

    engine    the engine called directly, no Ansible (measure.py)
    module    the module through ansible-playbook, so Ansible's overhead shows
    raw       one set-based SQL statement, or one streamed SELECT for reports (raw_limit.py)
    upstream  acme2certifier 0.46.3's Housekeeping, under a time cap and a memory cap

Write operations run on copies of the generated database. Operations that touch different
tables share one copy (orders, authorizations, certificate_dates, nonces), and the two
certificate cleanups get one copy each, so a run needs three copies per method instead of
six. Every operation still sees its own tables as generated. Reports only read and run on
the generated database itself.

Per measurement the runner records the time of the operation (inside the process; for the
module the wall time of ansible-playbook), the peak RSS (VmHWM of the measured program; for
the module the largest process of the tree), the rows affected (counted in the database before and after, the same query for
every method), the method's own row count, and the longest lock: inside the process for the
engine (each fetch and write transaction) and upstream (each connection), and from outside
with lockprobe.py for every method.

Usage:
    python benchmarks/run.py --sizes 10000,100000          # 3 runs each
    python benchmarks/run.py --sizes 1000000 --runs 1
    python benchmarks/run.py --fleet-only                   # the fleet run only

Results go to --data-dir as results-<time>.json and results-<time>.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)

import generate  # noqa: E402  pylint: disable=wrong-import-position
import lockprobe  # noqa: E402  pylint: disable=wrong-import-position
from measure import REPORT_OPERATIONS, WRITE_OPERATIONS  # noqa: E402  pylint: disable=wrong-import-position

PYTHON = sys.executable
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(PYTHON), "ansible-playbook")
COLLECTIONS = os.path.join(REPO, "build", "collections")
METHODS = ("engine", "module", "raw", "upstream")
# Set by --server-writer: a thread writes to the database like the server during every measurement.
SERVER_WRITER = False
OPERATIONS = WRITE_OPERATIONS + tuple(REPORT_OPERATIONS)

# Write operations that share one copy of the database, in the order they run on it. Each
# group touches tables no other member of the group touches; nonces go last because
# deleting rows leaves free pages in the file.
COPY_GROUPS = (
    ("orders", "authorizations", "certificate_dates", "nonces"),
    ("certificates_blank",),
    ("certificates_purge",),
)

# Query whose value changes by exactly the rows an operation affects.
AFFECTED_QUERIES = {
    "orders": "SELECT count(*) FROM orders WHERE status_id = (SELECT id FROM status WHERE name = 'invalid')",
    "authorizations": "SELECT count(*) FROM \"authorization\" WHERE status_id = (SELECT id FROM status WHERE name = 'expired')",
    "certificate_dates": "SELECT count(*) FROM certificate WHERE issue_uts = 0 AND expire_uts = 0",
    "certificates_blank": "SELECT count(*) FROM certificate WHERE instr(lower(coalesce(cert, '')), 'removed by') > 0",
    "certificates_purge": "SELECT count(*) FROM certificate",
    "nonces": "SELECT count(*) FROM nonce",
}

# Caps for the engine, module and raw methods; they only keep a broken run from hanging.
SAFETY_CAP_SECONDS = 4 * 3600
# Set to the role name (for example "acmeops.housekeeping.acme_hk") once roles/acme_hk exists;
# the fleet run then applies the role instead of playbooks/housekeeping.yml.
FLEET_ROLE: Optional[str] = None
FLEET_PLAYBOOK = os.path.join(REPO, "playbooks", "housekeeping.yml")


# ---------------------------------------------------------------------------
# Processes


def run_process(command: List[str], env: Optional[Dict[str, str]], cap_seconds: float,
                probe_path: Optional[str] = None, stdout_path: Optional[str] = None) -> Dict[str, Any]:
    """Run a command in its own session and return wall time, exit status, usage and lock data.

    The process group is killed when cap_seconds pass. tree_maxrss_kib is ru_maxrss of
    os.wait4, the largest process of the tree. Linux carries ru_maxrss over exec, so it
    includes this runner's RSS at fork time; measure.py reports VmHWM for that reason.
    """
    probe = lockprobe.LockProbe(probe_path, cap_seconds + 60) if probe_path else None
    writer = lockprobe.ServerWriter(probe_path, cap_seconds + 60) if probe_path and SERVER_WRITER else None
    busy_before = busy_cpu_seconds()
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL  # pylint: disable=consider-using-with
    if probe:
        probe.start()
    if writer:
        writer.start()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=stdout,  # pylint: disable=consider-using-with
                               stderr=subprocess.PIPE if stdout_path is None else subprocess.STDOUT,
                               start_new_session=True)
    capped = threading.Event()

    def kill() -> None:
        capped.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(cap_seconds, kill)
    timer.start()
    stderr_text = ""
    try:
        if process.stderr is not None:
            # Read stderr in a thread so a chatty process cannot block on a full pipe.
            chunks: List[bytes] = []
            reader = threading.Thread(target=lambda: chunks.append(process.stderr.read()), daemon=True)
            reader.start()
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        busy = busy_cpu_seconds() - busy_before
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.stderr is not None:
            reader.join(timeout=10)
            stderr_text = b"".join(chunks).decode("utf-8", "replace")[-3000:]
    finally:
        timer.cancel()
        if stdout_path:
            stdout.close()
    result = {
        "wall_seconds": wall,
        "returncode": process.returncode,
        "capped": capped.is_set(),
        "tree_maxrss_kib": usage.ru_maxrss,
        # CPU seconds of the process and the descendants it waited for, start-up included.
        "tree_cpu_seconds": usage.ru_utime + usage.ru_stime,
        # CPU seconds per wall second that other processes of the machine used meanwhile
        # (the probe thread of this runner included); 1.0 means one core fully busy.
        "other_load": max(0.0, busy - usage.ru_utime - usage.ru_stime) / wall if wall else None,
        "stderr": stderr_text,
    }
    if probe:
        result["probe"] = probe.stop()
    if writer:
        result["server_writer"] = writer.stop()
    return result


BARE_SCRIPT = (
    "import sys\n"
    "with open('/proc/self/status') as handle:\n"
    "    sys.stdout.write(next(line.split()[1] for line in handle if line.startswith('VmHWM:')))\n"
)


def busy_cpu_seconds() -> float:
    """Return the CPU seconds all processes of the machine have used since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def bare_interpreter_rss() -> int:
    """Return the median peak RSS (KiB, VmHWM) of an interpreter that does nothing."""
    values = []
    for _index in range(3):
        completed = subprocess.run([PYTHON, "-c", BARE_SCRIPT], capture_output=True, text=True, timeout=60, check=True)
        values.append(int(completed.stdout))
    return int(statistics.median(values))


# ---------------------------------------------------------------------------
# Databases


def ensure_database(data_dir: str, orders: int) -> Dict[str, Any]:
    """Return the manifest of the generated database for `orders`, generating it if needed."""
    directory = os.path.join(data_dir, f"n{orders}")
    manifest_path = os.path.join(directory, "manifest.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        if manifest.get("generator_version") == generate.GENERATOR_VERSION and os.path.isfile(manifest["database"]):
            return manifest
    log(f"generating {orders} orders in {directory}")
    return generate.generate(orders, directory)


def count(database: str, sql: str, writable: bool = False) -> int:
    """Run a count query. writable lets SQLite roll back the hot journal of a killed run first."""
    connection = sqlite3.connect(f"file:{database}?mode={'rw' if writable else 'ro'}", uri=True)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def write_config(directory: str, database: str, manifest: Dict[str, Any]) -> str:
    """Write an acme_srv.cfg for acme2certifier 0.46.3 that points at database."""
    keys = manifest["keys"]
    path = os.path.join(directory, "acme_srv.cfg")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            "[DEFAULT]\ndebug: False\n\n[Nonce]\nnonce_check_disable: False\n"
            f"validity: {manifest['nonce_validity']}\n\n"
            "[CAhandler]\nhandler_module: acme2certifier.cahandlers.openssl_ca_handler\n"
            f"issuing_ca_key: {keys['ca_key']}\nissuing_ca_cert: {keys['ca_cert']}\n"
            f"issuing_ca_crl: {os.path.join(directory, 'crl.pem')}\ncert_validity_days: 90\n"
            f"cert_save_path: {directory}\nca_cert_chain_list: []\n\n"
            f"[DBhandler]\nhandler: wsgi\ndbfile: {database}\n"
        )
    return path


def copy_database(source: str, target: str) -> float:
    """Copy the database and flush the copy to disk before anything is measured on it.

    Without the fsync the first commit of the measured process flushes the copied file too:
    in the 100,000-order results of docs/benchmarks.md that made the first write transaction
    on each copy take about 200 ms instead of 10 to 50 ms.
    """
    started = time.perf_counter()
    shutil.copyfile(source, target)
    with open(target, "rb+") as handle:
        os.fsync(handle.fileno())
    return time.perf_counter() - started


def remove_database(path: str) -> None:
    for suffix in ("", "-journal"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


# ---------------------------------------------------------------------------
# One measurement


def ansible_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
        ANSIBLE_PYTHON_INTERPRETER=PYTHON,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        PATH=os.path.dirname(PYTHON) + os.pathsep + env.get("PATH", ""),
    )
    return env


def link_collection() -> None:
    """Make the working tree visible to Ansible as acmeops.housekeeping under build/collections."""
    link = os.path.join(COLLECTIONS, "ansible_collections", "acmeops", "housekeeping")
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(REPO, link, target_is_directory=True)


def module_task(operation: str, database: str, now: int, dest: Optional[str]) -> Tuple[str, Dict[str, Any]]:
    common = {"database": database, "now": now}
    if operation in ("orders", "authorizations"):
        return "acme_hk_invalidate", {**common, "targets": [operation]}
    if operation in ("certificates_blank", "certificates_purge"):
        return "acme_hk_cleanup", {**common, "targets": ["certificates"], "purge": operation == "certificates_purge"}
    if operation in ("nonces", "certificate_dates"):
        return "acme_hk_cleanup", {**common, "targets": [operation]}
    report, report_format, nested = REPORT_OPERATIONS[operation]
    return "acme_hk_report", {**common, "report": report, "format": report_format, "nested": nested, "dest": dest}


def module_rows(operation: str, result: Dict[str, Any]) -> Optional[int]:
    if operation in REPORT_OPERATIONS:
        return result.get("rows")
    key = {"certificates_blank": "certificates", "certificates_purge": "certificates"}.get(operation, operation)
    return (result.get(key) or {}).get("count")


def measure(method: str, operation: str, database: str, manifest: Dict[str, Any], work: str,
            options: argparse.Namespace) -> Dict[str, Any]:
    """Run one operation once with one method and return the measurement."""
    now = manifest["reference_now"]
    dest = None
    if operation in REPORT_OPERATIONS:
        dest = os.path.join(work, f"{operation}.{REPORT_OPERATIONS[operation][1]}")
    result_path = os.path.join(work, "result.json")
    if os.path.exists(result_path):
        os.unlink(result_path)
    cap = SAFETY_CAP_SECONDS

    if method == "module":
        module, args = module_task(operation, database, now, dest)
        playbook = os.path.join(work, "play.yml")
        with open(playbook, "w", encoding="utf-8") as handle:
            json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
                {"name": "Measured task", f"acmeops.housekeeping.{module}": args}]}], handle)
        # The tree callback saves the task result to tree/localhost. An extra task that saved
        # it would add the time of one more task to the run; the callback only writes a file.
        tree = os.path.join(work, "tree")
        env = dict(ansible_env(), ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree", ANSIBLE_CALLBACK_TREE_DIR=tree)
        process = run_process([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", playbook], env, cap,
                              probe_path=database, stdout_path=os.path.join(work, "ansible.txt"))
        seconds = process["wall_seconds"]
        rows, error = None, None
        try:
            with open(os.path.join(tree, "localhost"), encoding="utf-8") as handle:
                task = json.load(handle)
            shutil.rmtree(tree)
            rows = module_rows(operation, task)
            if task.get("failed"):
                error = str(task.get("msg"))[:500]
        except (OSError, ValueError, KeyError, IndexError) as exc:
            error = f"cannot read the task result of ansible-playbook: {exc}"
        # No peak RSS: ru_maxrss of the process tree includes the runner that forked it, and
        # the module process itself is started by Ansible, out of reach of this runner.
        measurement: Dict[str, Any] = {"seconds": seconds, "method_rows": rows, "error": error,
                                       "peak_rss_kib": None}
    else:
        command = [PYTHON, os.path.join(BENCH_DIR, "measure.py"), "--method", method, "--operation", operation,
                   "--database", database, "--now", str(now), "--nonce-validity", str(manifest["nonce_validity"]),
                   "--out", result_path]
        if dest:
            command += ["--dest", dest]
        if method == "upstream":
            cap = options.upstream_cap
            command += ["--config", write_config(work, database, manifest), "--memory-cap", str(options.upstream_memory_cap)]
        env = dict(os.environ, PYTHONPATH=BENCH_DIR)
        process = run_process(command, env, cap, probe_path=database)
        measurement = {"seconds": None, "method_rows": None, "error": None, "peak_rss_kib": None}
        if os.path.exists(result_path):
            with open(result_path, encoding="utf-8") as handle:
                inner = json.load(handle)
            measurement.update(seconds=inner.get("seconds"), method_rows=inner.get("rows"), error=inner.get("error"),
                               peak_rss_kib=inner.get("peak_rss_kib"), cpu_seconds=inner.get("cpu_seconds"))
            for key in ("engine_fetch", "engine_write", "upstream_connection", "first_errors", "errors_logged"):
                if key in inner:
                    measurement[key] = inner[key]
        elif process["capped"]:
            measurement["error"] = f"stopped at the time cap of {cap:g} s"
        else:
            measurement["error"] = f"exit status {process['returncode']}: {process['stderr'][-500:]}"
    measurement.update(
        method=method,
        operation=operation,
        wall_seconds=process["wall_seconds"],
        capped=process["capped"],
        tree_maxrss_kib=process["tree_maxrss_kib"],
        other_load=process["other_load"],
        tree_cpu_seconds=process["tree_cpu_seconds"],
        probe=process.get("probe"),
    )
    if process.get("server_writer"):
        measurement["server_writer"] = process["server_writer"]
    if dest:
        measurement.update(report_output(dest))
        for path in (dest,):
            if os.path.exists(path):
                os.unlink(path)
    return measurement


def report_output(dest: str) -> Dict[str, Any]:
    """Count the data rows of a CSV report or the top-level elements of a JSON report."""
    if not os.path.exists(dest):
        return {"report_bytes": None, "report_rows": None}
    rows = 0
    with open(dest, "rb") as handle:
        if dest.endswith(".csv"):
            for block in iter(lambda: handle.read(1 << 24), b""):
                rows += block.count(b"\r\n")
            rows -= 1
        else:
            for line in handle:
                if line in (b"    {\n", b"    {"):
                    rows += 1
    return {"report_bytes": os.path.getsize(dest), "report_rows": rows}


# ---------------------------------------------------------------------------
# One size


def run_size(orders: int, options: argparse.Namespace, bare_kib: int) -> Dict[str, Any]:
    manifest = ensure_database(options.data_dir, orders)
    master = manifest["database"]
    work = tempfile.mkdtemp(prefix=f"work-n{orders}-", dir=options.data_dir)
    copy_path = os.path.join(work, "acme_srv.db")
    # The measurements so far, rewritten after each one, so a crash of the runner loses none.
    partial = os.path.join(options.data_dir, f"partial-n{orders}.json")
    before = {operation: count(master, sql) for operation, sql in AFFECTED_QUERIES.items()}
    log(f"N={orders}: {manifest['size_bytes'] / 1e6:.0f} MB, rows {manifest['row_counts']}")
    measurements: List[Dict[str, Any]] = []
    copy_seconds: List[float] = []
    capped_upstream: set = set()
    operations = [operation for operation in OPERATIONS if operation in options.operations]

    try:
        for run in range(max(options.runs, options.upstream_runs, options.module_runs)):
            for method in options.methods:
                runs_for_method = {"upstream": options.upstream_runs, "module": options.module_runs}.get(method, options.runs)
                if run >= runs_for_method:
                    continue
                for group in COPY_GROUPS:
                    todo = [op for op in group if op in operations and (method, op) not in capped_upstream]
                    if not todo:
                        continue
                    copy_seconds.append(copy_database(master, copy_path))
                    for operation in todo:
                        measurement = measure(method, operation, copy_path, manifest, work, options)
                        # A run stopped at the time cap can leave a hot journal on the copy.
                        measurement["rows"] = abs(count(copy_path, AFFECTED_QUERIES[operation], writable=True)
                                                  - before[operation])
                        finish(measurement, run, orders, measurements, capped_upstream)
                        save_partial(partial, orders, measurements)
                    remove_database(copy_path)
                for operation in operations:
                    if operation in REPORT_OPERATIONS and (method, operation) not in capped_upstream:
                        measurement = measure(method, operation, master, manifest, work, options)
                        measurement["rows"] = measurement.get("report_rows")
                        finish(measurement, run, orders, measurements, capped_upstream)
                        save_partial(partial, orders, measurements)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "orders": orders,
        "manifest": manifest,
        "pending_before": before,
        "bare_interpreter_kib": bare_kib,
        "copy_seconds_median": round(statistics.median(copy_seconds), 2) if copy_seconds else None,
        "measurements": measurements,
        "summary": summarize(measurements, bare_kib),
    }


def finish(measurement: Dict[str, Any], run: int, orders: int, measurements: List[Dict[str, Any]],
           capped_upstream: set) -> None:
    measurement["run"] = run
    measurements.append(measurement)
    method, operation = measurement["method"], measurement["operation"]
    if method == "upstream" and (measurement["capped"] or measurement.get("error")):
        # A run that hits a cap is not repeated: the next one would hit it too.
        capped_upstream.add((method, operation))
    seconds = measurement["seconds"]
    seconds_text = f"{seconds:.3f} s" if seconds is not None else "-"
    log(f"N={orders} run {run + 1} {method:8} {operation:26} {seconds_text:>12} rows={measurement['rows']} "
        f"rss={(measurement['peak_rss_kib'] or 0) // 1024} MiB lock={(measurement.get('probe') or {}).get('max_lock_ms')} ms"
        + f" other_load={measurement['other_load']:.2f}"
        + (f" ERROR {measurement['error']}" if measurement.get("error") else ""))


def summarize(measurements: List[Dict[str, Any]], bare_kib: int) -> Dict[str, Dict[str, Any]]:
    """Reduce the runs of each (operation, method) to median, range, peaks and lock maxima."""
    summary: Dict[str, Dict[str, Any]] = {}
    for operation in OPERATIONS:
        for method in METHODS:
            runs = [m for m in measurements if m["operation"] == operation and m["method"] == method]
            if not runs:
                continue
            good = [m for m in runs if m["seconds"] is not None and not m["capped"] and not m.get("error")]
            times = [m["seconds"] for m in good]
            cpu = [m["cpu_seconds"] for m in good if m.get("cpu_seconds") is not None]
            tree_cpu = [m["tree_cpu_seconds"] for m in good if m.get("tree_cpu_seconds") is not None]
            # The runner's module measurements up to the first 100,000-order run stored the
            # RSS of the process tree, which includes the runner; they are left out.
            peaks = [m["peak_rss_kib"] for m in good if m.get("peak_rss_kib") and method != "module"]
            entry: Dict[str, Any] = {
                "runs": len(runs),
                "median": statistics.median(times) if times else None,
                "min": min(times) if times else None,
                "max": max(times) if times else None,
                "capped": any(m["capped"] for m in runs),
                "cap_seconds": max(m["wall_seconds"] for m in runs),
                "errors": sorted({m["error"] for m in runs if m.get("error")}),
                "rows": runs[0]["rows"],
                "cpu_median": statistics.median(cpu) if cpu else None,
                "tree_cpu_median": statistics.median(tree_cpu) if tree_cpu else None,
                "other_load_max": max(m.get("other_load") or 0 for m in runs),
                "method_rows": runs[0]["method_rows"],
                "peak_rss_mib": max(peaks) / 1024 if peaks else None,
                "rss_above_bare_mib": (max(peaks) - bare_kib) / 1024 if peaks else None,
                "probe_max_lock_ms": max((m.get("probe") or {}).get("max_lock_ms", 0) for m in runs),
                "probe_max_write_lock_ms": max((m.get("probe") or {}).get("max_write_lock_ms", 0) for m in runs),
            }
            writers = [m["server_writer"] for m in runs if m.get("server_writer")]
            if writers:
                entry["server_write_max_ms"] = max(w["max_ms"] or 0 for w in writers)
                entry["server_write_errors"] = sum(w["error_count"] for w in writers)
            inside = []
            for key in ("engine_fetch", "engine_write", "upstream_connection"):
                values = [m[key]["max_ms"] for m in runs if key in m]
                if values:
                    entry[f"{key}_max_ms"] = max(values)
                    inside.append(max(values))
            if method == "raw":
                # One statement or one SELECT holds its lock from start to end.
                inside.append(max(m["seconds"] or 0 for m in runs) * 1000)
            entry["inside_max_lock_ms"] = max(inside) if inside else None
            if "report_bytes" in runs[0]:
                entry["report_bytes"] = runs[0]["report_bytes"]
            summary.setdefault(operation, {})[method] = entry
    return summary


# ---------------------------------------------------------------------------
# Fleet


def run_fleet(options: argparse.Namespace) -> List[Dict[str, Any]]:
    """Run playbooks/housekeeping.yml (or FLEET_ROLE) over many local hosts with several forks."""
    manifest = ensure_database(options.data_dir, options.fleet_orders)
    results = []
    role = options.fleet_role or FLEET_ROLE
    for hosts in options.fleet_hosts:
        for forks in options.fleet_forks:
            work = tempfile.mkdtemp(prefix=f"fleet-{hosts}-{forks}-", dir=options.data_dir)
            try:
                lines = ["[acme_servers]"]
                for index in range(1, hosts + 1):
                    host_dir = os.path.join(work, f"host{index:02d}")
                    os.makedirs(host_dir)
                    database = os.path.join(host_dir, "acme_srv.db")
                    shutil.copyfile(manifest["database"], database)
                    lines.append(
                        f"host{index:02d} ansible_connection=local ansible_python_interpreter={PYTHON} "
                        f"acme_hk_database={database} "
                        f"acme_hk_now={manifest['reference_now']}"
                    )
                inventory = os.path.join(work, "inventory.ini")
                with open(inventory, "w", encoding="utf-8") as handle:
                    handle.write("\n".join(lines) + "\n")
                playbook = FLEET_PLAYBOOK
                if role:
                    playbook = os.path.join(work, "role.yml")
                    with open(playbook, "w", encoding="utf-8") as handle:
                        json.dump([{"hosts": "acme_servers", "gather_facts": False, "roles": [role]}], handle)
                env = ansible_env()
                env["ANSIBLE_STDOUT_CALLBACK"] = "default"
                # The playbook sets acme_hk_report_dir as a play variable, which outranks
                # inventory variables; an extra variable outranks it and is templated per host.
                report_dir = os.path.join(work, "{{ inventory_hostname }}", "reports")
                command = [ANSIBLE_PLAYBOOK, "-i", inventory, "-f", str(forks), "-e",
                           json.dumps({"acme_hk_report_dir": report_dir}), playbook]
                process = run_process(command, env, SAFETY_CAP_SECONDS, stdout_path=os.path.join(work, "output.txt"))
                with open(os.path.join(work, "output.txt"), encoding="utf-8", errors="replace") as handle:
                    recap = handle.read()[-1500:]
                entry = {"hosts": hosts, "forks": forks, "orders_per_host": options.fleet_orders,
                         "target": role or os.path.relpath(playbook, REPO), "seconds": process["wall_seconds"],
                         "returncode": process["returncode"], "peak_rss_mib": process["tree_maxrss_kib"] / 1024}
                if process["returncode"] != 0:
                    entry["error"] = recap
                results.append(entry)
                log(f"fleet hosts={hosts} forks={forks}: {process['wall_seconds']:.1f} s rc={process['returncode']}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------
# Output


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or not base:
        return None
    return value / base


def format_seconds(entry: Optional[Dict[str, Any]]) -> str:
    if not entry:
        return "-"
    if entry["median"] is None:
        if entry["capped"]:
            return f"> {entry['cap_seconds']:.0f} (cap)"
        return "failed"
    if entry["runs"] > 1 and entry["max"] != entry["min"]:
        return f"{entry['median']:.2f} ({entry['min']:.2f}-{entry['max']:.2f})"
    return f"{entry['median']:.2f}"


def _number(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_ratio(value: Optional[float], prefix: str = "") -> str:
    return "-" if value is None else f"{prefix}{value:.2f}x"


def markdown(results: Dict[str, Any]) -> str:
    """Render the tables of docs/benchmarks.md from the results."""
    lines: List[str] = []
    for size in results["sizes"]:
        lines += [
            f"### N = {size['orders']:,} orders", "",
            f"Database {size['manifest']['size_bytes'] / 1e6:,.0f} MB; bare interpreter peak RSS "
            f"{size['bare_interpreter_kib'] / 1024:.1f} MiB. Seconds are the median (min-max) of the runs; "
            "'load' is the highest CPU use of other processes during a run, in cores.", "",
            "| operation | rows | engine s | module s | raw s | upstream s | engine/raw | engine/raw CPU "
            "| module - engine s | module - engine CPU s | upstream/engine | engine RSS above bare MiB | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for operation, methods in size["summary"].items():
            lines.append(_overview_row(operation, methods))
        lines += ["", "| operation | method | runs | rows | peak RSS MiB | longest lock ms, inside "
                  "| longest lock ms, probe | longest write lock ms, probe | longest server write ms (failed) | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for operation, methods in size["summary"].items():
            for method, entry in methods.items():
                inside = entry.get("inside_max_lock_ms")
                server = "-"
                if "server_write_max_ms" in entry:
                    server = f"{entry['server_write_max_ms']:.0f} ({entry['server_write_errors']})"
                lines.append(
                    f"| {operation} | {method} | {entry['runs']} | {entry['rows']} | {_number(entry['peak_rss_mib'])} | "
                    f"{'-' if inside is None else f'{inside:.0f}'} | {entry['probe_max_lock_ms']:.0f} | "
                    f"{entry['probe_max_write_lock_ms']:.0f} | {server} | {'; '.join(entry['errors'])[:120] or '-'} |"
                )
        lines.append("")
    if results.get("fleet"):
        lines += ["### Fleet", "", "| hosts | forks | seconds | seconds per host | return code |", "|---|---|---|---|---|"]
        for entry in results["fleet"]:
            lines.append(f"| {entry['hosts']} | {entry['forks']} | {entry['seconds']:.1f} | "
                         f"{entry['seconds'] / entry['hosts']:.2f} | {entry['returncode']} |")
        lines.append("")
    return "\n".join(lines)


def _overview_row(operation: str, methods: Dict[str, Dict[str, Any]]) -> str:
    engine, raw = methods.get("engine"), methods.get("raw")
    module, upstream = methods.get("module"), methods.get("upstream")
    engine_s = engine["median"] if engine else None
    upstream_ratio, prefix = None, ""
    if upstream and engine_s:
        if upstream["median"] is not None:
            upstream_ratio = upstream["median"] / engine_s
        elif upstream["capped"]:
            upstream_ratio, prefix = upstream["cap_seconds"] / engine_s, "> "
    overhead = "-"
    if module and module["median"] is not None and engine_s is not None:
        overhead = f"{module['median'] - engine_s:.2f}"
    cpu_overhead = "-"
    if module and engine and module.get("tree_cpu_median") is not None and engine.get("tree_cpu_median") is not None:
        cpu_overhead = f"{module['tree_cpu_median'] - engine['tree_cpu_median']:.2f}"
    cpu_ratio = ratio(engine.get("cpu_median") if engine else None, raw.get("cpu_median") if raw else None)
    load = max(entry.get("other_load_max", 0) for entry in methods.values())
    rows = engine["rows"] if engine else "-"
    rss = _number(engine["rss_above_bare_mib"], 1) if engine else "-"
    return (f"| {operation} | {rows} | {format_seconds(engine)} | {format_seconds(module)} | {format_seconds(raw)} | "
            f"{format_seconds(upstream)} | {format_ratio(ratio(engine_s, raw['median'] if raw else None))} | "
            f"{format_ratio(cpu_ratio)} | {overhead} | {cpu_overhead} | {format_ratio(upstream_ratio, prefix)} | {rss} | "
            f"{load:.2f} |")


def log(message: str) -> None:
    print(f"{datetime.datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {"nproc": os.cpu_count(), "python": sys.version.split()[0],
                            "sqlite": sqlite3.sqlite_version}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
        with open("/proc/meminfo", encoding="utf-8") as handle:
            info["mem_total_kib"] = int(next(line.split()[1] for line in handle if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    return info


def int_list(text: str) -> List[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def name_list(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> List[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return names
    return parse


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark housekeeping: engine, module, raw SQL and acme2certifier.")
    parser.add_argument("--sizes", type=int_list, default=[10000, 100000, 1000000],
                        help="comma-separated numbers of orders (default 10000,100000,1000000)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs per operation and method (default 3, and 1 for sizes of 1,000,000 and more)")
    parser.add_argument("--methods", type=name_list(METHODS), default=list(METHODS))
    parser.add_argument("--operations", type=name_list(OPERATIONS), default=list(OPERATIONS))
    parser.add_argument("--upstream-runs", type=int, default=None, help="runs of the upstream method (default --runs)")
    parser.add_argument("--module-runs", type=int, default=None, help="runs of the module method (default --runs)")
    parser.add_argument("--upstream-cap", type=float, default=600.0,
                        help="seconds after which an upstream run is stopped and reported as more than that (default 600)")
    parser.add_argument("--upstream-memory-cap", type=int, default=12 * 1024 ** 3,
                        help="address space limit of an upstream run in bytes (default 12 GiB)")
    parser.add_argument("--data-dir", default=os.path.join(BENCH_DIR, "data"),
                        help="generated databases, work copies and results (default benchmarks/data)")
    parser.add_argument("--server-writer", action="store_true",
                        help="write to the database like the acme2certifier server every 50 ms during each "
                             "measurement and record how long each write waited (changes the timings)")
    parser.add_argument("--fleet", action="store_true", help="also run the fleet measurement")
    parser.add_argument("--fleet-only", action="store_true", help="run only the fleet measurement")
    parser.add_argument("--fleet-hosts", type=int_list, default=[20, 50])
    parser.add_argument("--fleet-forks", type=int_list, default=[5, 10, 20])
    parser.add_argument("--fleet-orders", type=int, default=10000, help="orders in each fleet host's database")
    parser.add_argument("--fleet-role", default=None, help="apply this role instead of playbooks/housekeeping.yml")
    parser.add_argument("--out", default=None, help="results JSON (default DATA_DIR/results-<time>.json)")
    parser.add_argument("--render", nargs="+", metavar="RESULTS_JSON",
                        help="print the tables of earlier results files instead of measuring")
    options = parser.parse_args(argv)
    global SERVER_WRITER  # pylint: disable=global-statement
    SERVER_WRITER = options.server_writer

    if options.render:
        print(render(options.render))
        return 0

    os.makedirs(options.data_dir, exist_ok=True)
    link_collection()
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = options.out or os.path.join(options.data_dir, f"results-{stamp}.json")
    results: Dict[str, Any] = {"machine": machine(), "started": stamp, "options": {
        key: value for key, value in vars(options).items() if key != "out"}, "sizes": []}

    if not options.fleet_only:
        bare_kib = bare_interpreter_rss()
        for orders in options.sizes:
            size_options = argparse.Namespace(**vars(options))
            if size_options.runs is None:
                size_options.runs = 1 if orders >= 1000000 else 3
            if size_options.upstream_runs is None:
                size_options.upstream_runs = size_options.runs
            if size_options.module_runs is None:
                size_options.module_runs = size_options.runs
            results["sizes"].append(run_size(orders, size_options, bare_kib))
            save(out, results)
    if options.fleet or options.fleet_only:
        results["fleet"] = run_fleet(options)
    save(out, results)
    print(markdown(results))
    log(f"results in {out} and {out[:-5]}.md")
    return 0


def render(paths: List[str]) -> str:
    """Recompute the summaries of results files and return their tables."""
    merged: Dict[str, Any] = {"sizes": [], "fleet": []}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
        for size in results.get("sizes", []):
            # Runs of the same size in several files (for example one method at a time) form one table.
            same = [known for known in merged["sizes"] if known["orders"] == size["orders"]]
            if same:
                same[0]["measurements"] += size["measurements"]
            else:
                merged["sizes"].append(size)
        merged["fleet"] += results.get("fleet") or []
    for size in merged["sizes"]:
        size["summary"] = summarize(size["measurements"], size["bare_interpreter_kib"])
    return markdown(merged)


def save_partial(path: str, orders: int, measurements: List[Dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"orders": orders, "measurements": measurements}, handle, indent=1, default=str)


def save(path: str, results: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1, default=str)
    with open(path[:-5] + ".md", "w", encoding="utf-8") as handle:
        handle.write(markdown(results) + "\n")


if __name__ == "__main__":
    sys.exit(main())

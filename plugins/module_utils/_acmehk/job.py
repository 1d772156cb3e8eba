# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Scheduled housekeeping job: runs the engine with the settings of a JSON job file.

The role acmeops.housekeeping.acme_hk copies this package to a host as ``acmehk`` and starts
``main`` from a systemd timer or a cron entry. It needs only the Python standard library.

One run takes the job lock, then invalidates, cleans up and writes the account and
certificate reports in the order the role uses. Reports are written into a staging directory
and then moved into the report directory, each named ``<UTC start time>_<report>``. The run
deletes the reports of older runs beyond the retention count and records its outcome in a
JSON status file, which it replaces atomically. The changing steps take the engine's flock
on the database file, the same lock the modules take.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from .engine import Settings, run_cleanup, run_invalidate, run_report
from .errors import HousekeepingError
from .output import TempFile
from .timeutil import format_utc, parse_duration, parse_now

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# EX_TEMPFAIL from sysexits.h: another run of the same job has the job lock.
EXIT_BUSY = 75

STATUS_FORMAT = 1
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Report files of the job start with the run's UTC start time; retention counts runs by it.
REPORT_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)_[A-Za-z0-9_.-]+$")
STAGING_NAME_RE = re.compile(r"^\.\d{8}T\d{6}Z-staging-")
REPORT_FORMATS = ("csv", "json")
INVALIDATE_TARGETS = ("orders", "authorizations")
CLEANUP_TARGETS = ("certificate_dates", "certificates", "nonces")
# Operations whose touched-row counts the status file lists, in the order the job runs them.
OPERATIONS = INVALIDATE_TARGETS + CLEANUP_TARGETS
LOG_FILE_MAX_BYTES = 1024 * 1024

LOGGER = logging.getLogger(__name__)


class JobConfigError(Exception):
    """The job file cannot be read or contains an invalid setting."""


# Keys of the job file that go to the engine's Settings unchanged: the database selection and
# connection options that every module shares (database, acme_srv_dir, db_host, ...). They are
# read from Settings itself, so the job accepts every option the engine has.
SETTINGS_KEYS = tuple(item.name for item in fields(Settings))


@dataclass
class JobConfig:
    """Settings of one scheduled job, read from its JSON job file."""

    report_dir: str
    status_file: str
    lock_file: str
    job_name: str = "acme-hk"
    nonce_validity: Optional[int] = None
    force: bool = False
    invalidate: bool = True
    invalidate_targets: List[str] = field(default_factory=lambda: list(INVALIDATE_TARGETS))
    cleanup: bool = True
    cleanup_targets: List[str] = field(default_factory=lambda: list(CLEANUP_TARGETS))
    purge: bool = False
    backup: bool = False
    backup_keep: Optional[int] = None
    operation_reports: bool = True
    operation_report_format: str = "csv"
    account_report: bool = True
    account_report_format: str = "json"
    # Applies only to the JSON format, as in the role.
    account_report_nested: bool = True
    certificate_report: bool = True
    certificate_report_format: str = "csv"
    report_retention: int = 30
    # Engine options (SETTINGS_KEYS). "now" is unset in a scheduled job, so each run uses its
    # own start time; a fixed value replays a run.
    engine_options: Dict[str, Any] = field(default_factory=dict)

    def settings(self, now: int) -> Settings:
        """Return the engine settings, with now as the reference time unless the file fixes it."""
        params = dict(self.engine_options)
        if params.get("now") is None:
            params["now"] = now
        return Settings.from_params(params)


# Expected JSON types per job key; keys not listed here are strings.
_BOOL_KEYS = {
    "force", "invalidate", "cleanup", "purge", "backup", "operation_reports", "account_report",
    "account_report_nested", "certificate_report",
}
_INT_KEYS = {"report_retention"}
_OPTIONAL_INT_KEYS = {"nonce_validity", "backup_keep"}
_LIST_KEYS = {"invalidate_targets": INVALIDATE_TARGETS, "cleanup_targets": CLEANUP_TARGETS}
_FORMAT_KEYS = {"operation_report_format", "account_report_format", "certificate_report_format"}
_JOB_KEYS = tuple(item.name for item in fields(JobConfig) if item.name != "engine_options")


def load_config(path: str) -> JobConfig:
    """Read and check a job file, so that a wrong setting fails before the database is opened."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise JobConfigError(f"Cannot read the job file {path}: {exc.strerror}. Run the role again to install it.") from exc
    except ValueError as exc:
        raise JobConfigError(f"The job file {path} is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise JobConfigError(f"The job file {path} must contain a JSON object, not {type(data).__name__}.")

    known = set(_JOB_KEYS) | set(SETTINGS_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise JobConfigError(f"Unknown keys in the job file {path}: {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}.")
    missing = sorted(key for key in ("report_dir", "status_file", "lock_file") if not data.get(key))
    if missing:
        raise JobConfigError(f"The job file {path} does not set {', '.join(missing)}.")

    job_values = {}
    engine_options = {}
    for key, value in data.items():
        if key in SETTINGS_KEYS:
            if not (value is None or isinstance(value, (str, int, float, bool))):
                raise JobConfigError(f"Invalid value for {key} in the job file {path}: {value!r}.")
            engine_options[key] = value
        else:
            _check_value(path, key, value)
            job_values[key] = value

    job = JobConfig(engine_options=engine_options, **job_values)
    if job.report_retention < 1:
        raise JobConfigError(f"Invalid report_retention {job.report_retention} in {path}: keep the reports of at least 1 run.")
    try:
        job.settings(0)
        parse_duration(engine_options.get("grace_period"))
        if engine_options.get("now") is not None:
            parse_now(engine_options["now"])
    except HousekeepingError as exc:
        raise JobConfigError(f"Invalid setting in the job file {path}: {exc.msg}") from exc
    except (TypeError, ValueError) as exc:
        raise JobConfigError(f"Invalid setting in the job file {path}: {exc}.") from exc
    return job


def _check_value(path: str, key: str, value: Any) -> None:
    """Reject a value whose JSON type does not fit the job key."""
    if key in _BOOL_KEYS:
        valid = isinstance(value, bool)
    elif key in _INT_KEYS:
        valid = isinstance(value, int) and not isinstance(value, bool)
    elif key in _OPTIONAL_INT_KEYS:
        valid = value is None or (isinstance(value, int) and not isinstance(value, bool))
    elif key in _LIST_KEYS:
        choices = _LIST_KEYS[key]
        valid = isinstance(value, list) and bool(value) and all(item in choices for item in value)
        if not valid:
            raise JobConfigError(f"Invalid {key} {value!r} in the job file {path}: give a non-empty list of {', '.join(choices)}.")
    elif key in _FORMAT_KEYS:
        valid = value in REPORT_FORMATS
    else:
        valid = isinstance(value, str)
    if not valid:
        raise JobConfigError(f"Invalid value for {key} in the job file {path}: {value!r}.")


# Status file -----------------------------------------------------------------------------


def read_status(path: str) -> Dict[str, Any]:
    """Return the previous status, or an empty one when the file is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        LOGGER.warning("Ignoring the unreadable status file %s: %s", path, exc)
        return {}
    return status if isinstance(status, dict) else {}


def write_status(path: str, status: Dict[str, Any]) -> None:
    """Replace the status file atomically, so a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    status_file = TempFile.create(directory, ".status.", ".tmp")
    try:
        unwritten = memoryview((json.dumps(status, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        while unwritten:
            unwritten = unwritten[os.write(status_file.fd, unwritten):]
        # The status contains paths, counts and messages but no report content, so monitoring may read it.
        os.fchmod(status_file.fd, 0o644)
        status_file.publish(path, replace=True)
    finally:
        status_file.discard()


# Report files ----------------------------------------------------------------------------


def run_stamp(report_dir: str, clock: Any = time.time) -> float:
    """Return a start time whose stamp no report in report_dir uses yet.

    A second run that starts within the same second as the last one waits for the next
    second, so the files of two runs never share a stamp. The wait is at most three seconds.
    """
    names = _list_dir(report_dir)
    started = clock()
    for _attempt in range(3):
        prefix = format_utc(started, STAMP_FORMAT) + "_"
        if not any(name.startswith(prefix) for name in names):
            break
        time.sleep(1.0 - (started % 1.0))
        started = clock()
    return started


def _list_dir(directory: str) -> List[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def publish_reports(staged: Dict[str, str], report_dir: str, stamp: str) -> List[str]:
    """Move the finished reports from the staging directory into report_dir, named by stamp."""
    published = []
    for name, staged_path in staged.items():
        if not os.path.isfile(staged_path):
            continue
        final_name = f"{stamp}_{name}"
        os.replace(staged_path, os.path.join(report_dir, final_name))
        published.append(final_name)
    return sorted(published)


def prune_reports(report_dir: str, keep_runs: int) -> List[str]:
    """Delete the job's report files of all but the newest keep_runs runs and return their names.

    Only files named like the job's reports are touched, so reports that other tools or the
    role write into the same directory stay.
    """
    by_stamp: Dict[str, List[str]] = {}
    for name in _list_dir(report_dir):
        match = REPORT_NAME_RE.match(name)
        if match and os.path.isfile(os.path.join(report_dir, name)):
            by_stamp.setdefault(match.group(1), []).append(name)

    deleted = []
    for stamp in sorted(by_stamp, reverse=True)[keep_runs:]:
        for name in sorted(by_stamp[stamp]):
            os.unlink(os.path.join(report_dir, name))
            deleted.append(name)
    return deleted


def remove_stale_staging(report_dir: str) -> None:
    """Delete staging directories left by runs that were killed before they finished."""
    for name in _list_dir(report_dir):
        path = os.path.join(report_dir, name)
        if STAGING_NAME_RE.match(name) and os.path.isdir(path) and not os.path.islink(path):
            LOGGER.warning("Removing the staging directory %s of an interrupted run", path)
            shutil.rmtree(path, ignore_errors=True)


# The run ---------------------------------------------------------------------------------


class JobLockBusy(Exception):
    """Another run of the same job has the job lock."""


class JobLock:
    """Exclusive flock on the job's lock file, held for the whole run."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle: Optional[int] = None

    def __enter__(self) -> "JobLock":
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(handle)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise JobLockBusy(self.path) from exc
            raise
        self.handle = handle
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.handle is not None:
            os.close(self.handle)
            self.handle = None


def run_job(job: JobConfig) -> int:
    """Run the configured steps once, publish the reports and record the outcome."""
    os.makedirs(job.report_dir, mode=0o750, exist_ok=True)
    remove_stale_staging(job.report_dir)
    started = run_stamp(job.report_dir)
    stamp = format_utc(started, STAMP_FORMAT)
    previous = read_status(job.status_file)

    status = dict(previous)
    status.setdefault("last_success", None)
    status.update(format=STATUS_FORMAT, job=job.job_name, state="running", pid=os.getpid(),
                  last_start=format_utc(started, ISO_FORMAT))
    write_status(job.status_file, status)
    LOGGER.info("Job %s started, reports go to %s", job.job_name, job.report_dir)

    outcome = _Outcome()
    staging = tempfile.mkdtemp(prefix=f".{stamp}-staging-", dir=job.report_dir)
    try:
        _run_steps(job, int(started), staging, outcome)
    finally:
        pruned = _file_reports(job, stamp, staging, outcome)

    finished = time.time()
    status.update(
        state="idle",
        pid=None,
        last_finish=format_utc(finished, ISO_FORMAT),
        duration_seconds=round(finished - started, 3),
        result="failed" if outcome.error else "ok",
        last_error=outcome.error,
        counts=outcome.counts,
        skipped_count=outcome.skipped_count,
        warnings=outcome.warnings,
        database=outcome.database,
        dbversion=outcome.dbversion,
        reports=outcome.reports,
        reports_deleted=len(pruned),
    )
    if not outcome.error:
        status["last_success"] = status["last_finish"]
    write_status(job.status_file, status)

    if outcome.error:
        LOGGER.error("Job %s failed after %.1f s: %s", job.job_name, finished - started, outcome.error)
        return EXIT_FAILED
    LOGGER.info("Job %s finished in %.1f s: rows touched %s, %d report(s) written, %d old report(s) deleted",
                job.job_name, finished - started, _format_counts(outcome.counts), len(outcome.reports), len(pruned))
    return EXIT_OK


@dataclass
class _Outcome:
    """Results of the steps of one run, for the status file."""

    counts: Dict[str, Optional[int]] = field(default_factory=lambda: {name: None for name in OPERATIONS})
    staged: Dict[str, str] = field(default_factory=dict)
    reports: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    skipped_count: int = 0
    database: Optional[str] = None
    dbversion: Optional[str] = None
    error: Optional[str] = None

    def record(self, result: Dict[str, Any], targets: List[str]) -> None:
        self.database = result.get("database", self.database)
        self.dbversion = result.get("dbversion", self.dbversion)
        for target in targets:
            self.counts[target] = result[target]["count"]
        self.skipped_count += len(result.get("skipped_rows") or [])
        self.warnings.extend(result.get("warnings") or [])


def _run_steps(job: JobConfig, now: int, staging: str, outcome: _Outcome) -> None:
    """Run invalidation, cleanup and the reports. A failure stops the run and is recorded."""
    settings = job.settings(now)
    try:
        if job.invalidate:
            result = run_invalidate(
                settings, job.invalidate_targets, check_mode=False,
                report_dir=staging if job.operation_reports else None,
                report_format=job.operation_report_format, force=job.force,
            )
            outcome.record(result, job.invalidate_targets)
            for target, path in result.get("report_files", {}).items():
                outcome.staged[f"{target}_invalidate.{job.operation_report_format}"] = path

        if job.cleanup:
            cleanup_report = None
            if job.operation_reports and "certificates" in job.cleanup_targets:
                cleanup_report = os.path.join(staging, f"certificates_cleanup.{job.operation_report_format}")
                outcome.staged[os.path.basename(cleanup_report)] = cleanup_report
            result = run_cleanup(
                settings, job.cleanup_targets, check_mode=False, purge=job.purge,
                nonce_validity=job.nonce_validity, backup=job.backup, report_dest=cleanup_report,
                report_format=job.operation_report_format, force=job.force, backup_keep=job.backup_keep,
            )
            outcome.record(result, job.cleanup_targets)
            if result.get("backup_file"):
                LOGGER.info("Database copied to %s before the cleanup", result["backup_file"])

        reports = []
        if job.account_report:
            nested = job.account_report_nested and job.account_report_format == "json"
            reports.append(("accounts", job.account_report_format, nested))
        if job.certificate_report:
            reports.append(("certificates", job.certificate_report_format, False))
        for report, report_format, nested in reports:
            name = f"{report}.{report_format}"
            dest = os.path.join(staging, name)
            outcome.staged[name] = dest
            result = run_report(settings, report, report_format, nested, dest, check_mode=False)
            outcome.database = result.get("database", outcome.database)
            outcome.dbversion = result.get("dbversion", outcome.dbversion)
    except HousekeepingError as exc:
        outcome.error = exc.msg
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # The status file must still record the failure, so no error may escape unrecorded.
        LOGGER.exception("Unexpected error in job %s", job.job_name)
        outcome.error = f"Unexpected error: {type(exc).__name__}: {exc}"

    for warning in outcome.warnings:
        LOGGER.warning("%s", warning)
    if outcome.skipped_count:
        LOGGER.warning("%d row(s) could not be processed and were left unchanged", outcome.skipped_count)


def _file_reports(job: JobConfig, stamp: str, staging: str, outcome: _Outcome) -> List[str]:
    """Publish the staged reports, apply the retention and return the names of deleted reports.

    Reports of steps that finished are published even when a later step failed, because
    they list rows that were already changed.
    """
    pruned: List[str] = []
    try:
        outcome.reports = publish_reports(outcome.staged, job.report_dir, stamp)
        pruned = prune_reports(job.report_dir, job.report_retention)
    except OSError as exc:
        LOGGER.error("Filing the reports in %s failed: %s", job.report_dir, exc)
        outcome.error = outcome.error or f"Filing the reports in {job.report_dir} failed: {exc}"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pruned


def _format_counts(counts: Dict[str, Optional[int]]) -> str:
    return ", ".join(f"{name}={count}" for name, count in counts.items() if count is not None) or "none"


# Command line ----------------------------------------------------------------------------


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="acmehk.job",
        description="Run acme2certifier housekeeping once with the settings of a job file.",
    )
    parser.add_argument("--config", required=True, help="path of the JSON job file that the role installed")
    parser.add_argument("--random-delay", type=float, default=0.0, metavar="SECONDS",
                        help="wait a random time of up to SECONDS before the run (for cron, which has no such setting)")
    parser.add_argument("--log-file", metavar="PATH",
                        help="append log lines to PATH, rotated at 1 MiB with one old file kept (default: standard error)")
    return parser.parse_args(argv)


def _log_handler(log_file: Optional[str]) -> logging.Handler:
    if log_file:
        handler: logging.Handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=1)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        # systemd's journal and cron's mail add their own timestamps.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return handler


def main(argv: Optional[List[str]] = None) -> int:
    """Run the job once and return the exit status: 0 ok, 1 failed, 2 invalid job file, 75 busy."""
    args = _parse_args(argv)
    try:
        handler = _log_handler(args.log_file)
    except OSError as exc:
        sys.stderr.write(f"ERROR Cannot open the log file {args.log_file}: {exc.strerror}.\n")
        return EXIT_USAGE
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    try:
        return _main(args)
    finally:
        LOGGER.removeHandler(handler)
        handler.close()


def _main(args: argparse.Namespace) -> int:
    try:
        job = load_config(args.config)
    except JobConfigError as exc:
        LOGGER.error("%s", exc)
        return EXIT_USAGE

    if args.random_delay > 0:
        delay = random.uniform(0, args.random_delay)
        LOGGER.info("Waiting %.0f s (random delay of up to %.0f s)", delay, args.random_delay)
        time.sleep(delay)

    try:
        with JobLock(job.lock_file):
            return run_job(job)
    except JobLockBusy:
        LOGGER.warning("Job %s skipped: another run holds the lock file %s", job.job_name, job.lock_file)
        return EXIT_BUSY
    except OSError as exc:
        LOGGER.error("Job %s failed: %s. Check that the lock file, the status file and the report directory "
                     "can be written by this user, or run the role again to create them.", job.job_name, exc)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())

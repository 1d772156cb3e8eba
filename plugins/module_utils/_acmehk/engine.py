# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Entry points shared by the modules and by anything else that runs housekeeping.

Nothing here imports Ansible, so the same code can run from a scheduled job on a host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import operations as ops
from . import reports
from .batching import DEFAULT_BATCH_PAUSE, DEFAULT_BATCH_TIME
from .config import (
    DEFAULT_NONCE_VALIDITY,
    Installation,
    configured_handler,
    find_django_settings,
    locate,
    read_django_databases,
)
from .db import Database, SQLiteDatabase
from .db_server import ServerSettings, open_server
from .errors import ConfigError, DatabaseError, OptionError
from .output import Sink, check_destination
from .schema import KNOWN_DBVERSION, detect
from .timeutil import format_utc, parse_duration, parse_now

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# Upper bound of batch_time and batch_pause: longer values would hold the server's writers
# for seconds, or stretch a run over hours, and are almost certainly a unit mistake.
MAX_BATCH_SECONDS = 10.0


@dataclass
class Settings:
    """Options every operation shares, already validated."""

    database: Optional[str] = None
    acme_srv_dir: Optional[str] = None
    config: Optional[str] = None
    now: Any = None
    grace_period: Any = 0
    busy_timeout: float = 10.0
    batch_size: int = 500
    batch_time: float = DEFAULT_BATCH_TIME
    batch_pause: float = DEFAULT_BATCH_PAUSE
    db_handler: str = "auto"
    db_engine: Optional[str] = None
    db_host: Optional[str] = None
    db_port: Optional[int] = None
    db_name: Optional[str] = None
    db_user: Optional[str] = None
    db_password: Optional[str] = field(default=None, repr=False)
    connect_timeout: float = 30.0
    ssl_mode: Optional[str] = None
    ca_cert: Optional[str] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None
    django_settings: Optional[str] = None

    @classmethod
    def from_params(cls, params: Dict[str, Any]) -> "Settings":
        settings = cls(
            database=params.get("database"),
            acme_srv_dir=params.get("acme_srv_dir"),
            config=params.get("config"),
            now=params.get("now"),
            grace_period=params.get("grace_period"),
            busy_timeout=_default(params.get("busy_timeout"), 10.0),
            batch_size=_default(params.get("batch_size"), 500),
            batch_time=_default(params.get("batch_time"), DEFAULT_BATCH_TIME),
            batch_pause=_default(params.get("batch_pause"), DEFAULT_BATCH_PAUSE),
            db_handler=_default(params.get("db_handler"), "auto"),
            db_engine=params.get("db_engine"),
            db_host=params.get("db_host"),
            db_port=params.get("db_port"),
            db_name=params.get("db_name"),
            db_user=params.get("db_user"),
            db_password=params.get("db_password"),
            connect_timeout=_default(params.get("connect_timeout"), 30.0),
            ssl_mode=params.get("ssl_mode"),
            ca_cert=params.get("ca_cert"),
            client_cert=params.get("client_cert"),
            client_key=params.get("client_key"),
            django_settings=params.get("django_settings"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise OptionError(
                f"Invalid value for batch_size: {self.batch_size!r}. Give a whole number of rows of "
                "at least 1, for example 500."
            )
        if not _is_seconds(self.batch_time) or self.batch_time > MAX_BATCH_SECONDS:
            raise OptionError(
                f"Invalid value for batch_time: {self.batch_time!r}. Give the seconds one write "
                f"transaction or read may take, from 0 (fixed batches of batch_size rows) to "
                f"{MAX_BATCH_SECONDS:g}, for example {DEFAULT_BATCH_TIME:g}."
            )
        if not _is_seconds(self.batch_pause) or self.batch_pause > MAX_BATCH_SECONDS:
            raise OptionError(
                f"Invalid value for batch_pause: {self.batch_pause!r}. Give the seconds to pause "
                f"after each write transaction, from 0 (no pause) to {MAX_BATCH_SECONDS:g}, for "
                f"example {DEFAULT_BATCH_PAUSE:g}."
            )
        if self.busy_timeout is None or self.busy_timeout < 0:
            raise OptionError(
                f"Invalid value for busy_timeout: {self.busy_timeout!r}. Give the seconds to wait "
                "for a lock as 0 or more, for example 10."
            )


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _is_seconds(value: Any) -> bool:
    """Accept a finite int or float of 0 or more. bool is rejected, although Python treats it as an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= 0


@dataclass
class Times:
    """The reference time and the cutoff that replaces acme2certifier's uts in every rule."""

    now: int
    grace_period: int

    @property
    def cutoff(self) -> int:
        return self.now - self.grace_period

    def as_dict(self) -> Dict[str, Any]:
        return {
            "now": self.now,
            "now_iso": format_utc(self.now, ISO_FORMAT),
            "grace_period": self.grace_period,
            "cutoff": self.cutoff,
            "cutoff_iso": format_utc(self.cutoff, ISO_FORMAT),
        }


def _context(settings: Settings, db: Database, schema: Any, cutoff: int) -> ops.Context:
    """Bundle what every operation reads: database, schema, cutoff and batching options."""
    return ops.Context(
        db=db,
        schema=schema,
        cutoff=cutoff,
        batch_size=settings.batch_size,
        batch_time=settings.batch_time,
        batch_pause=settings.batch_pause,
    )


def resolve_times(settings: Settings, clock: Callable[[], float] = time.time) -> Times:
    """Read the clock now, at call time, unless the now option fixes it."""
    return Times(now=parse_now(settings.now, clock), grace_period=parse_duration(settings.grace_period))


@contextlib.contextmanager
def open_database(settings: Settings, writable: bool) -> Iterator[tuple]:
    """Open the database of the configured installation and detect its schema."""
    installation, server = resolve_target(settings)
    if server is not None:
        db: Database = open_server(server, settings.busy_timeout, writable)
    else:
        db = SQLiteDatabase(installation.database, settings.busy_timeout, writable=writable)
    try:
        schema = detect(db, settings.db_handler)
        yield installation, db, schema
    finally:
        db.close()


def resolve_target(settings: Settings) -> Tuple[Installation, Optional[ServerSettings]]:
    """Decide which database to open: an SQLite file, or a PostgreSQL or MariaDB/MySQL server.

    Explicit options win; otherwise acme_srv.cfg chooses the handler, and for the Django
    handler the DATABASES setting of the Django settings file names the database.
    """
    if settings.db_engine in ("postgresql", "mysql"):
        installation = _optional_installation(settings)
        return installation, _server_settings(settings, settings.db_engine, {})

    if settings.database or settings.db_engine == "sqlite" and not (settings.acme_srv_dir or settings.config):
        return locate(settings.database, settings.acme_srv_dir, settings.config), None

    installation = _optional_installation(settings)
    handler = settings.db_handler if settings.db_handler != "auto" else configured_handler(installation)
    if handler == "django":
        path = settings.django_settings or find_django_settings(settings.acme_srv_dir, installation.config_path)
        if path is None:
            raise ConfigError(
                "acme_srv.cfg selects the Django handler, but no Django settings file was found "
                "below the installation. Give django_settings, or the connection with db_engine, "
                "db_host, db_name, db_user and db_password."
            )
        database = read_django_databases(path)
        if database["engine"] == "sqlite":
            installation.database = str(database.get("NAME") or "")
            installation.database_source = f"DATABASES in {path}"
            return installation, None
        installation.database_source = f"DATABASES in {path}"
        return installation, _server_settings(settings, database["engine"], database)

    return locate(settings.database, settings.acme_srv_dir, settings.config), None


def _optional_installation(settings: Settings) -> Installation:
    """Read acme_srv.cfg when the options name an installation, else return an empty one."""
    if settings.acme_srv_dir or settings.config:
        try:
            return locate(None, settings.acme_srv_dir, settings.config, need_database=False)
        except ConfigError:
            raise
    return Installation(database="")


def _server_settings(settings: Settings, engine: str, django: Dict[str, Any]) -> ServerSettings:
    """Combine the connection options with the values of Django's DATABASES; options win."""
    port = settings.db_port if settings.db_port is not None else django.get("PORT") or None
    try:
        port = int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        raise OptionError(f"Invalid database port {port!r}. Give a whole number, for example 5432.") from None
    server = ServerSettings(
        engine=engine,
        host=settings.db_host or django.get("HOST") or None,
        port=port,
        name=settings.db_name or django.get("NAME") or None,
        user=settings.db_user or django.get("USER") or None,
        password=settings.db_password if settings.db_password is not None else django.get("PASSWORD"),
        connect_timeout=settings.connect_timeout,
        ssl_mode=settings.ssl_mode,
        ca_cert=settings.ca_cert,
        client_cert=settings.client_cert,
        client_key=settings.client_key,
    )
    if not server.name:
        raise OptionError(f"No database name for {engine}. Set db_name to the database that contains acme2certifier's tables.")
    return server


def _base_result(installation: Installation, schema: Any, times: Optional[Times]) -> Dict[str, Any]:
    result: Dict[str, Any] = {
        "database": installation.database or schema.location,
        "dbversion": schema.dbversion,
        "handler": schema.handler,
    }
    if times is not None:
        result.update(times.as_dict())
    return result


# Reports ----------------------------------------------------------------------------------


def run_report(
    settings: Settings,
    report: str,
    report_format: str,
    nested: bool,
    dest: Optional[str],
    check_mode: bool,
    return_content: bool = False,
) -> Dict[str, Any]:
    """Write the account or certificate report to dest and tell whether dest changed."""
    if nested and not (report == "accounts" and report_format == "json"):
        raise OptionError(
            f"nested=true works only with report=accounts and format=json, not report={report} "
            f"format={report_format}. Drop nested or change the report or format."
        )
    if dest is None and not return_content:
        raise OptionError("Give dest for the report file, or set return_content=true to get the report in the result.")

    if dest is not None and os.path.isdir(dest):
        example = os.path.join(dest, f"{report}.{report_format}")
        raise OptionError(f"dest {dest} is a directory. Give the path of the report file, for example {example}.")

    with open_database(settings, writable=False) as (installation, db, schema):
        ctx = _context(settings, db, schema, 0)
        skips = reports.Skips()
        sink = Sink(dest, write_file=not check_mode, keep_content=return_content)
        try:
            if report == "accounts":
                columns = reports.account_report_columns(ctx)
                rows = reports.account_report_rows(ctx, skips)
            else:
                columns = reports.certificate_report_columns(ctx)
                rows = reports.certificate_report_rows(ctx, skips)

            if nested:
                writer = reports.NestedWriter(sink)
                counter = _Counter(rows)
                reports.write_nested_accounts(iter(counter), writer)
                writer.close()
                row_count = counter.count
            else:
                row_count = reports.write_rows(sink, report_format, columns, rows)
            changed = sink.commit()
        except BaseException:
            sink.discard()
            raise

        result = _base_result(installation, schema, None)
        result.update(
            changed=changed,
            dest=dest,
            rows=row_count,
            columns=columns,
            checksum=sink.checksum,
            size=sink.size,
            skipped_rows=skips.items,
            skipped_rows_count=skips.count,
        )
        if return_content:
            result["content"] = sink.text()
        return result


class _Counter:
    """Count rows as they pass, for reports whose output groups them."""

    def __init__(self, rows: Iterator[Dict[str, Any]]) -> None:
        self.rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for row in self.rows:
            self.count += 1
            yield row


# Invalidation -----------------------------------------------------------------------------


def run_invalidate(
    settings: Settings,
    targets: List[str],
    check_mode: bool,
    report_dir: Optional[str] = None,
    report_format: str = "csv",
    force: bool = False,
) -> Dict[str, Any]:
    """Invalidate expired orders and expire authorizations, as acme2certifier's housekeeping does."""
    _check_targets(targets, ("orders", "authorizations"))
    if report_dir is not None and not os.path.isdir(report_dir):
        raise OptionError(
            f"report_dir {report_dir} does not exist or is not a directory. Create it first, or "
            "leave report_dir unset."
        )
    times = resolve_times(settings)

    with open_database(settings, writable=not check_mode) as (installation, db, schema):
        ctx = _context(settings, db, schema, times.cutoff)
        lock = contextlib.nullcontext() if check_mode else db.run_lock()
        with lock:
            plans = {}
            for target in ("orders", "authorizations"):
                if target in targets:
                    plans[target] = ops.plan_orders(ctx) if target == "orders" else ops.plan_authorizations(ctx)
            if any(plan.count for plan in plans.values()) and not check_mode:
                schema.check_destructive(force, "invalidate orders or authorizations")
            # Every status the run writes is looked up before the first change, so a missing
            # status row fails the run with the database unchanged.
            if plans.get("orders") and plans["orders"].count:
                plans["orders"].status_id = ops.status_id(ctx, "invalid", "invalidate orders")
            if plans.get("authorizations") and plans["authorizations"].count:
                plans["authorizations"].status_id = ops.status_id(ctx, "expired", "expire authorizations")

            result = _base_result(installation, schema, times)
            skips = reports.Skips()
            report_files = {}
            for target, plan in plans.items():
                if report_dir and plan.count:
                    path = os.path.join(report_dir, f"{target}_invalidate_{format_utc(times.cutoff, '%Y%m%dT%H%M%SZ')}.{report_format}")
                    report_files[target] = _write_plan_report(ctx, plan, target, path, report_format, check_mode, skips)

            counts = {}
            for target, plan in plans.items():
                if check_mode:
                    counts[target] = plan.count
                elif target == "orders":
                    counts[target] = ops.apply_orders(ctx, plan)
                else:
                    counts[target] = ops.apply_authorizations(ctx, plan)

        for target in ("orders", "authorizations"):
            if target in plans:
                result[target] = plans[target].result(counts[target])
        result["report_files"] = report_files
        result["changed"] = any(counts.values())
        result["diff"] = _count_diff(plans, counts)
        result["skipped_rows"] = _merge_skipped([plan.skipped for plan in plans.values()] + [skips.items])
        return result


def _write_plan_report(ctx: ops.Context, plan: ops.Plan, target: str, path: str,
                       report_format: str, check_mode: bool, skips: reports.Skips) -> str:
    sink = Sink(path, write_file=not check_mode)
    try:
        columns, rows = reports.plan_report_rows(ctx, plan, target, skips)
        reports.write_rows(sink, report_format, columns, rows)
        sink.commit()
    except BaseException:
        sink.discard()
        raise
    return path


def _merge_skipped(lists: List[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Join the skipped rows of several targets, listing each row once."""
    seen = set()
    merged = []
    for items in lists:
        for item in items:
            key = (item.get("table"), item.get("id"))
            if key not in seen:
                seen.add(key)
                merged.append(item)
    return merged


def _count_diff(plans: Dict[str, ops.Plan], counts: Dict[str, int]) -> Dict[str, Any]:
    """Describe the change as counts of rows to handle before and after the run."""
    return {
        "before": {target: plan.count for target, plan in plans.items()},
        "after": {target: plan.count - counts.get(target, 0) for target, plan in plans.items()},
    }


def _check_targets(targets: List[str], allowed: tuple) -> None:
    unknown = [target for target in targets if target not in allowed]
    if unknown or not targets:
        raise OptionError(
            f"Invalid targets {targets!r}. Choose one or more of: {', '.join(allowed)}."
        )


# Cleanup ----------------------------------------------------------------------------------


def run_cleanup(
    settings: Settings,
    targets: List[str],
    check_mode: bool,
    purge: bool = False,
    nonce_validity: Optional[int] = None,
    backup: bool = False,
    report_dest: Optional[str] = None,
    report_format: str = "csv",
    force: bool = False,
    backup_keep: Optional[int] = None,
) -> Dict[str, Any]:
    """Back-fill certificate dates, blank or delete expired certificates and delete old nonces."""
    _check_targets(targets, ("certificates", "nonces", "certificate_dates"))
    if backup_keep is not None and backup_keep < 1:
        raise OptionError(f"Invalid value for backup_keep: {backup_keep}. Give the number of backups to keep, 1 or more.")
    if report_dest is not None:
        check_destination(report_dest)
    if report_dest is not None and "certificates" not in targets:
        raise OptionError(
            "report_dest lists the certificates that cleanup blanks or deletes, so it needs "
            "'certificates' in targets. Add it, or drop report_dest."
        )
    times = resolve_times(settings)

    with open_database(settings, writable=not check_mode) as (installation, db, schema):
        ctx = _context(settings, db, schema, times.cutoff)
        validity = nonce_validity
        if validity is None:
            validity = installation.integer_option("Nonce", "validity", DEFAULT_NONCE_VALIDITY)

        lock = contextlib.nullcontext() if check_mode else db.run_lock()
        with lock:
            plans: Dict[str, ops.Plan] = {}
            if "certificate_dates" in targets:
                plans["certificate_dates"] = ops.plan_certificate_dates(ctx)
            if "certificates" in targets:
                plans["certificates"] = ops.plan_certificates(ctx, purge, "certificate_dates" in targets)
            if "nonces" in targets:
                plans["nonces"] = ops.plan_nonces(ctx, validity)

            pending = any(plan.count for plan in plans.values())
            if pending and not check_mode:
                schema.check_destructive(force, "clean up the database")

            result = _base_result(installation, schema, times)
            result["nonce_validity"] = validity
            skips = reports.Skips()
            if report_dest and plans["certificates"].count:
                _write_plan_report(ctx, plans["certificates"], "certificates", report_dest, report_format, check_mode, skips)
                result["report_dest"] = report_dest

            if pending and backup and not check_mode:
                result["backup_file"] = _backup(db, installation.database, backup_keep)

            counts: Dict[str, int] = {}
            for target in ("certificate_dates", "certificates", "nonces"):
                if target not in plans:
                    continue
                plan = plans[target]
                if check_mode:
                    counts[target] = plan.count
                elif target == "certificate_dates":
                    counts[target] = ops.apply_certificate_dates(ctx, plan)
                elif target == "certificates":
                    counts[target] = ops.apply_certificates(ctx, plan, purge)
                else:
                    counts[target] = ops.apply_nonces(ctx, plan, validity)

        warnings = []
        for target, plan in plans.items():
            result[target] = plan.result(counts[target])
            if plan.note:
                warnings.append(plan.note)
        result["warnings"] = warnings
        result["changed"] = any(counts.values())
        result["diff"] = _count_diff(plans, counts)
        result["skipped_rows"] = _merge_skipped([plan.skipped for plan in plans.values()] + [skips.items])
        return result


def _backup(db: Database, database: str, keep: Optional[int] = None) -> str:
    """Copy the database next to itself before the first destructive change.

    The copy is written under a hidden temporary name and renamed when complete, so a file
    named *.bak is always a whole backup. Run as root, it is given to the database's owner.
    """
    if not isinstance(db, SQLiteDatabase):
        raise OptionError(
            f"backup=true copies SQLite files only; the {db.location} needs the server's own "
            "tools (pg_dump, mariadb-dump). Make a backup with them and drop backup."
        )
    _remove_stale_backup_files(database)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = f"{database}.{stamp}.{os.getpid()}.bak"
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.tmp")
    old_umask = os.umask(0o077)
    try:
        db.backup(temporary)
        owner = os.stat(database)
        if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
            os.chown(temporary, owner.st_uid, owner.st_gid)
        os.replace(temporary, path)
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        full = "full" in str(exc).lower() or getattr(exc, "errno", None) == errno.ENOSPC
        raise DatabaseError(
            f"The backup {path} could not be written: {exc}. "
            + ("The disk is full; free space beside the database, or set backup=false. " if full else "")
            + "Nothing in the database was changed.",
            backup_file=path,
        ) from exc
    finally:
        os.umask(old_umask)

    if keep is not None:
        _prune_backups(database, keep)
    return path


def _remove_stale_backup_files(database: str) -> None:
    """Delete unfinished backups that killed runs left behind.

    SQLite can only write a backup to a named file, so SIGKILL during the copy leaves the
    hidden temporary file. The caller holds the run lock, so no other run is writing one.
    """
    directory, base = os.path.split(os.path.abspath(database))
    pattern = re.compile(r"^\." + re.escape(base) + r"\.\d{8}T\d{6}Z\.\d+\.bak\.tmp$")
    for name in os.listdir(directory):
        if pattern.match(name):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _prune_backups(database: str, keep: int) -> None:
    """Delete all but the newest keep backups of this database; their names sort by time."""
    directory = os.path.dirname(os.path.abspath(database))
    prefix = os.path.basename(database) + "."
    backups = sorted(
        name for name in os.listdir(directory)
        if name.startswith(prefix) and name.endswith(".bak") and re.match(r"^\d{8}T\d{6}Z\.\d+\.bak$", name[len(prefix):])
    )
    for name in backups[:max(0, len(backups) - keep)]:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))


# Information ------------------------------------------------------------------------------


def gather_info(settings: Settings, purge_preview: bool = True, nonce_validity: Optional[int] = None) -> Dict[str, Any]:
    """Collect read-only facts: schema, row counts and how much work each operation has now."""
    times = resolve_times(settings)
    with open_database(settings, writable=False) as (installation, db, schema):
        ctx = _context(settings, db, schema, times.cutoff)
        validity = nonce_validity
        if validity is None:
            validity = installation.integer_option("Nonce", "validity", DEFAULT_NONCE_VALIDITY)

        counts = {}
        for table in sorted(db.tables()):
            if table.startswith("sqlite_"):
                continue
            counts[table] = db.fetch(f"SELECT count(*) FROM {schema.name(table)}")[0][0]

        pending = {
            "orders": ops.plan_orders(ctx).count,
            "authorizations": ops.plan_authorizations(ctx).count,
            "certificate_dates": ops.plan_certificate_dates(ctx).count,
            "certificates": ops.plan_certificates(ctx, False, False).count,
            "certificates_purge": ops.plan_certificates(ctx, True, False).count if purge_preview else None,
            "nonces": ops.plan_nonces(ctx, validity).count,
        }

        result = _base_result(installation, schema, times)
        result.update(
            config=installation.config_path,
            database_source=installation.database_source,
            known_dbversion=KNOWN_DBVERSION,
            dbversion_newer_than_known=schema.newer_than_known(),
            tables=dict(schema.tables),
            row_counts=counts,
            pending=pending,
            nonce_validity=validity,
            changed=False,
        )
        return result


def read_status_file(path: str) -> Optional[Dict[str, Any]]:
    """Return the JSON status of the scheduled job, or None when it has not run yet."""
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OptionError(
            f"Cannot read the status file {path}: {exc}. Check status_file, or remove the damaged "
            "file; the next scheduled run writes a new one."
        ) from exc
    if not isinstance(status, dict):
        raise OptionError(f"The status file {path} does not contain a JSON object. Check status_file.")
    return status

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fill a Django-handler database with a real acme2certifier 0.46.3 server.

``fill(backend, workdir, **options)`` runs acme2certifier's Django project
(``acme2certifier.django_project.wsgi``, served by wsgiref on 127.0.0.1)
with ``[DBhandler] handler: django`` against an existing acme_srv schema
(see schema.py). The python ``acme`` client of
tests/acme_server/acme_client.py (and certbot, when asked) requests
certificates from it. fill() returns a JSON summary of the tables.

The server and the clients run in a new network namespace with loopback
only, started the same way as tests/acme_server/lab.py does it (whose
option set, CA, acme_srv.cfg and client runner this module reuses). The
namespace has its own 127.0.0.1, so the server reaches PostgreSQL and
MariaDB over their unix sockets (see backends.py). The environment has
ACME2CERTIFIER_I_KNOW_THE_RISK=1, so that challenge validation stays off
and the server resolves no names; the clients use names under .test.

Work directory layout, as in lab.py: acme_srv/ (acme_srv.cfg and the
generated Django settings module), ca/, logs/ and summary.json.

Command line (servers from scripts/dbservers.sh, settings exported):

    python tests/django_lab/server.py fill --engine postgresql --create-schema \\
        --workdir /tmp/django-fill --accounts 2 --certs-per-account 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "acme_server"))
import backends  # noqa: E402  pylint: disable=wrong-import-position
import lab  # noqa: E402  pylint: disable=wrong-import-position
import schema  # noqa: E402  pylint: disable=wrong-import-position

SERVER_PATH = Path(__file__).resolve()

LOG = logging.getLogger("django_lab_server")

# Tables whose rows have a status_id, for the summary.
STATUS_TABLES = ("account", "order", "authorization", "challenge")


def render_django_config(options: lab.LabOptions, paths: lab.LabPaths) -> str:
    """Return lab.py's acme_srv.cfg with the Django handler in place of the wsgi one."""
    text = lab.render_config(options, paths)
    wsgi_section = f"[DBhandler]\nhandler: wsgi\ndbfile: {paths.database}\n"
    if text.count(wsgi_section) != 1:
        raise lab.LabError("lab.render_config() no longer writes the expected [DBhandler] section; update server.py")
    return text.replace(wsgi_section, "[DBhandler]\nhandler: django\n")


def prepare_workdir(options: lab.LabOptions, paths: lab.LabPaths, backend: backends.Backend) -> None:
    """Create the directories, the test CA, acme_srv.cfg and the Django settings."""
    if paths.config.exists():
        raise lab.LabError(f"{paths.config} already exists; use a new workdir")
    for directory in (paths.server_dir, paths.ca_dir, paths.issued_dir, paths.certbot_dir, paths.logs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    lab.create_test_ca(paths)
    paths.config.write_text(render_django_config(options, paths), encoding="utf-8")
    backends.write_settings_module(paths.server_dir, backend)


def fill(backend: backends.Backend, workdir: os.PathLike | str, **options: Any) -> Dict[str, Any]:
    """Run the server and the clients against backend and return the summary.

    Keyword options are those of lab.LabOptions (accounts, certs_per_account,
    certbot, cert_validity_days, order_validity, authz_validity,
    nonce_validity, timeout, client_timeout, server_start_timeout, port).
    The acme_srv tables must exist (schema.create or schema.reset).
    Raises lab.LabError when a step fails.
    """
    lab_options = lab.LabOptions(workdir=Path(os.path.abspath(workdir)), **options)
    lab_options.validate()
    paths = lab.LabPaths(lab_options.workdir)
    started = time.monotonic()
    prepare_workdir(lab_options, paths, backend)
    run_isolated(lab_options, paths, backend)
    summary = summarize(backend, lab_options, paths, time.monotonic() - started)
    paths.summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary


def run_isolated(options: lab.LabOptions, paths: lab.LabPaths, backend: backends.Backend) -> None:
    """Run ``server.py run-isolated`` in a new network namespace and wait for it."""
    command = lab.unshare_command() + [
        sys.executable, str(SERVER_PATH), "run-isolated", "--backend-json", backend.to_json(),
    ] + options.to_argv()
    log_path = paths.logs_dir / "run-isolated.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=options.timeout + lab.KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            lab.kill_process_group(process)
            raise lab.LabError(
                f"the Django server run did not end within {options.timeout} s plus {lab.KILL_GRACE_SECONDS} s; "
                f"killed its process group {process.pid}. Last lines of {log_path}:\n{lab.tail(log_path)}"
            ) from None
        finally:
            if process.poll() is None:
                lab.kill_process_group(process)
    if returncode != 0:
        raise lab.LabError(
            f"the Django server run in the network namespace failed (exit status {returncode}); last lines of "
            f"{log_path}:\n{lab.tail(log_path, 25)}\nLast lines of {paths.server_log}:\n{lab.tail(paths.server_log)}"
        )


# ---------------------------------------------------------------------------
# Inside the namespace


def isolated_main(options: lab.LabOptions, paths: lab.LabPaths) -> None:
    """Start the server, run the clients, stop the server, write logs/run.json."""
    deadline = time.monotonic() + options.timeout
    lab.bring_up_loopback()
    env = backends.django_environment(paths.server_dir, paths.config, lab.child_environment())

    started = time.monotonic()
    server = start_server(options, paths, env)
    try:
        directory_url = lab.wait_for_directory(options, paths, server)
        server_ready_seconds = time.monotonic() - started
        LOG.info("server ready at %s after %.2f s", directory_url, server_ready_seconds)
        client_seconds = lab.run_acme_client(options, paths, env, directory_url, deadline)
        certbot_seconds = lab.run_certbot(options, paths, env, directory_url, deadline)
    finally:
        lab.stop_server(server)

    run_result = {
        "server_ready_seconds": round(server_ready_seconds, 2),
        "acme_client_seconds": round(client_seconds, 2),
        "certbot_seconds": round(certbot_seconds, 2),
    }
    paths.run_result.write_text(json.dumps(run_result, indent=2), encoding="utf-8")


def start_server(options: lab.LabOptions, paths: lab.LabPaths, env: Dict[str, str]) -> subprocess.Popen:
    """Start ``server.py serve`` with its output in logs/server.log."""
    server_env = dict(env)
    server_env["ACME2CERTIFIER_I_KNOW_THE_RISK"] = "1"
    command = [sys.executable, str(SERVER_PATH), "serve", "--port", str(options.port)]
    LOG.info("starting acme2certifier (Django handler) on 127.0.0.1:%d", options.port)
    with open(paths.server_log, "ab") as log_file:
        return subprocess.Popen(command, cwd=paths.workdir, env=server_env, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT)


def serve(port: int) -> None:
    """Serve acme2certifier's Django project with wsgiref on 127.0.0.1 until SIGTERM."""
    for name in ("DJANGO_SETTINGS_MODULE", "ACME_SRV_CONFIGFILE"):
        if name not in os.environ:
            raise lab.LabError(f"{name} is not set; start the server through 'server.py fill'")
    from wsgiref.simple_server import make_server  # pylint: disable=import-outside-toplevel

    from acme2certifier.django_project.wsgi import application  # pylint: disable=import-outside-toplevel

    server = make_server("127.0.0.1", port, application)
    lab.serve_until_sigterm(server, f"acme2certifier (Django) listening on 127.0.0.1:{port}")


# ---------------------------------------------------------------------------
# Summary


def status_counts(backend: backends.Backend) -> Dict[str, Any]:
    """Count the rows per status name, and the certificate rows with a certificate."""
    connection = backend.connect()
    try:
        result: Dict[str, Any] = {}
        cursor = connection.cursor()
        for table in STATUS_TABLES:
            quoted = backends.quote_name(backend.engine, f"acme_srv_{table}")
            cursor.execute(
                f"SELECT s.name, count(*) FROM {quoted} t JOIN acme_srv_status s ON s.id = t.status_id "
                "GROUP BY s.name ORDER BY s.name"
            )
            result[table] = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM acme_srv_certificate WHERE cert IS NOT NULL AND cert <> ''")
        result["certificate_with_cert"] = cursor.fetchone()[0]
        return result
    finally:
        connection.close()


def summarize(backend: backends.Backend, options: lab.LabOptions, paths: lab.LabPaths,
              elapsed: float) -> Dict[str, Any]:
    """Read the tables and the run results into the JSON summary."""
    return {
        "workdir": str(paths.workdir),
        "backend": backend.label,
        "cfg": str(paths.config),
        "ca_cert": str(paths.ca_cert),
        "elapsed_seconds": round(elapsed, 2),
        "row_counts": backends.row_counts(backend),
        "statuses": status_counts(backend),
        "run": lab.read_json(paths.run_result),
        "clients": lab.read_json(paths.client_result),
    }


# ---------------------------------------------------------------------------
# Command line


def backend_from_args(args: argparse.Namespace) -> backends.Backend:
    if args.engine == "sqlite":
        return backends.Backend("sqlite", str(args.sqlite_path or Path(args.workdir).resolve() / "db.sqlite3"))
    return backends.backend_from_env(args.engine)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fill a Django-handler database with a real acme2certifier server.")
    commands = parser.add_subparsers(dest="command", required=True)

    fill_parser = commands.add_parser("fill", help="run the server and the clients against a backend")
    lab.add_run_arguments(fill_parser)
    fill_parser.add_argument("--engine", choices=backends.ENGINES, required=True,
                             help="database engine; postgresql and mysql read the ACMEOPS_* settings of dbservers.sh")
    fill_parser.add_argument("--sqlite-path", type=Path, help="SQLite file (default WORKDIR/db.sqlite3)")
    fill_parser.add_argument("--create-schema", action="store_true",
                             help="drop all tables and create the acme_srv schema first")

    isolated_parser = commands.add_parser("run-isolated", help="internal: started by fill in the namespace")
    lab.add_run_arguments(isolated_parser)
    isolated_parser.add_argument("--backend-json", required=True)

    serve_parser = commands.add_parser("serve", help="internal: serve acme2certifier on 127.0.0.1")
    serve_parser.add_argument("--port", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s django_lab {args.command}: %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            serve(args.port)
        elif args.command == "run-isolated":
            options = lab.options_from_args(args)
            options.validate()
            isolated_main(options, lab.LabPaths(options.workdir))
        else:
            target = backend_from_args(args)
            if args.create_schema:
                schema.create(target, Path(os.path.abspath(args.workdir)) / "schema")
            options = lab.options_from_args(args)
            values = {name: getattr(options, name) for name in vars(options) if name != "workdir"}
            print(json.dumps(fill(target, options.workdir, **values), indent=2, ensure_ascii=False))
    except (lab.LabError, backends.BackendError) as err:
        LOG.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

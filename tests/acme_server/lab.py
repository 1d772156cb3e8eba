"""Build a real acme2certifier 0.46.3 SQLite database for tests and demos.

``build --workdir DIR`` lays out DIR like an acme2certifier installation that
uses the wsgi database handler:

    DIR/acme_srv/acme_srv.cfg    server configuration
    DIR/acme_srv/acme_srv.db     SQLite database written by the server
    DIR/ca/                      private test CA, CRL and issued certificates
    DIR/certbot/                 certbot config, work and logs directories
    DIR/logs/                    server and client logs, client results
    DIR/summary.json             the JSON summary that ``build`` prints

It then runs the acme2certifier server from the PyPI package (wsgiref) with
the openssl CA handler and challenge validation disabled, and lets real ACME
clients talk to it: ``acme_client.py`` (python ``acme`` library) and,
when requested, certbot. The clients create accounts, issue and revoke
certificates, deactivate an account, leave orders pending or ready and get
one finalization rejected, so the database contains the kind of rows that
housekeeping acts on.

Network isolation: the server and all clients run inside a new network
namespace (``unshare -n`` as root, ``unshare -rn`` otherwise) in which only
the loopback interface exists. The server listens on 127.0.0.1 and the
clients use the literal address, so they need no DNS lookups, and neither a
DNS query nor any other packet can leave the machine. Because every run has
its own namespace, parallel runs may use the same port. The whole run is
limited by ``--timeout`` and each client by ``--client-timeout``, and the
server is stopped before ``build`` returns, also on failure.

Example, about 11 s on a 2-core machine (measured with this script):

    python tests/acme_server/lab.py build --workdir /tmp/lab \\
        --accounts 3 --certs-per-account 8 --certbot 2

pytest calls ``build_database(workdir, **options)`` instead.

Only the standard library is imported here. The server and the clients run
as subprocesses of the current interpreter, which must have
``acme2certifier==0.46.3`` installed (and certbot in the same ``bin``
directory when ``--certbot`` is above 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

LAB_PATH = Path(__file__).resolve()
ACME_CLIENT_PATH = LAB_PATH.with_name("acme_client.py")

LOG = logging.getLogger("acme_lab")

# Upper limits that keep every client loop bounded even with odd arguments.
MAX_ACCOUNTS = 100
MAX_CERTS_PER_ACCOUNT = 200
MAX_CERTBOT_CERTS = 50

# Seconds that the outer process waits for the namespace process beyond
# --timeout before it kills the process group, and that pytest's
# build_database() adds on top of that.
KILL_GRACE_SECONDS = 10

# Proxy variables are removed from the environment of the server and the
# clients, because requests and urllib would otherwise send loopback traffic
# to a proxy that is unreachable inside the namespace.
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


class LabError(RuntimeError):
    """A lab step failed. The message names the step and what to check."""


@dataclasses.dataclass
class LabOptions:
    """Settings of one lab run. Times are in seconds."""

    workdir: Path
    accounts: int = 3
    certs_per_account: int = 8
    certbot: int = 0
    port: int = 18080
    cert_validity_days: int = 1
    order_validity: Optional[int] = None
    authz_validity: Optional[int] = None
    nonce_validity: Optional[int] = None
    timeout: float = 300.0
    client_timeout: float = 120.0
    server_start_timeout: float = 30.0

    def validate(self) -> None:
        """Raise LabError when an option is out of range."""
        limits = (
            ("accounts", self.accounts, 1, MAX_ACCOUNTS),
            ("certs_per_account", self.certs_per_account, 1, MAX_CERTS_PER_ACCOUNT),
            ("certbot", self.certbot, 0, MAX_CERTBOT_CERTS),
            ("port", self.port, 1, 65535),
            ("cert_validity_days", self.cert_validity_days, 1, 36500),
        )
        for name, value, low, high in limits:
            if not low <= value <= high:
                raise LabError(
                    f"invalid {name}={value}: expected a value from {low} to {high}"
                )

        for name in ("order_validity", "authz_validity", "nonce_validity"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise LabError(f"invalid {name}={value}: expected seconds above 0")

        for name in ("timeout", "client_timeout", "server_start_timeout"):
            value = getattr(self, name)
            if value <= 0:
                raise LabError(f"invalid {name}={value}: expected seconds above 0")

        # configparser treats '%' as interpolation syntax, and a line break
        # would end the option value in acme_srv.cfg.
        text = str(self.workdir)
        if "%" in text or "\n" in text or "\r" in text:
            raise LabError(
                f"invalid workdir {text!r}: the path must not contain '%' or line breaks"
            )

    def to_argv(self) -> List[str]:
        """Return the command-line arguments that recreate these options."""
        argv = ["--workdir", str(self.workdir)]
        for field in dataclasses.fields(self):
            if field.name == "workdir":
                continue
            value = getattr(self, field.name)
            if value is not None:
                argv += ["--" + field.name.replace("_", "-"), str(value)]
        return argv


@dataclasses.dataclass
class LabPaths:
    """Files and directories of one lab work directory."""

    workdir: Path

    @property
    def server_dir(self) -> Path:
        return self.workdir / "acme_srv"

    @property
    def config(self) -> Path:
        return self.server_dir / "acme_srv.cfg"

    @property
    def database(self) -> Path:
        return self.server_dir / "acme_srv.db"

    @property
    def ca_dir(self) -> Path:
        return self.workdir / "ca"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca-key.pem"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca-cert.pem"

    @property
    def ca_crl(self) -> Path:
        return self.ca_dir / "crl.pem"

    @property
    def issued_dir(self) -> Path:
        return self.ca_dir / "certs"

    @property
    def certbot_dir(self) -> Path:
        return self.workdir / "certbot"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def client_log(self) -> Path:
        return self.logs_dir / "acme_client.log"

    @property
    def client_result(self) -> Path:
        return self.logs_dir / "acme_client.json"

    @property
    def run_result(self) -> Path:
        return self.logs_dir / "run.json"

    @property
    def summary(self) -> Path:
        return self.workdir / "summary.json"


# ---------------------------------------------------------------------------
# Preparation (outside the namespace)


def prepare_workdir(options: LabOptions, paths: LabPaths) -> None:
    """Create the directory layout, the test CA and acme_srv.cfg."""
    if paths.database.exists():
        raise LabError(
            f"database {paths.database} already exists; use a new --workdir "
            "or remove the old one"
        )
    for directory in (
        paths.server_dir,
        paths.ca_dir,
        paths.issued_dir,
        paths.certbot_dir,
        paths.logs_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)

    create_test_ca(paths)
    paths.config.write_text(render_config(options, paths), encoding="utf-8")


def create_test_ca(paths: LabPaths) -> None:
    """Create a self-signed CA key and certificate with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LabError("openssl not found in PATH; install the openssl package")

    command = [
        openssl,
        "req",
        "-x509",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(paths.ca_key),
        "-out",
        str(paths.ca_cert),
        "-days",
        "3650",
        "-subj",
        "/O=acmeops lab/CN=acmeops lab test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise LabError(
            f"openssl failed to create the test CA (exit status {result.returncode}): "
            f"{result.stderr.strip()}"
        )


def render_config(options: LabOptions, paths: LabPaths) -> str:
    """Return the text of acme_srv.cfg for acme2certifier 0.46.3."""
    lines = [
        "[DEFAULT]",
        "debug: False",
        "",
        "[Nonce]",
        "nonce_check_disable: False",
    ]
    if options.nonce_validity is not None:
        lines.append(f"validity: {options.nonce_validity}")

    lines += [
        "",
        "[CAhandler]",
        "handler_module: acme2certifier.cahandlers.openssl_ca_handler",
        f"issuing_ca_key: {paths.ca_key}",
        f"issuing_ca_cert: {paths.ca_cert}",
        # The handler requires this option for revocation. It creates the
        # file on the first revocation.
        f"issuing_ca_crl: {paths.ca_crl}",
        f"cert_validity_days: {options.cert_validity_days}",
        f"cert_save_path: {paths.issued_dir}",
        "ca_cert_chain_list: []",
        "",
        "[DBhandler]",
        "handler: wsgi",
        f"dbfile: {paths.database}",
        "",
        "[Certificate]",
        "revocation_reason_check_disable: False",
        "",
        "[Challenge]",
        # Honoured by 0.46.3 only when ACME2CERTIFIER_I_KNOW_THE_RISK=1 is set
        # in the server environment. Without it the server would resolve
        # the order names and try to fetch the http-01 token.
        "challenge_validation_disable: True",
        "",
        "[Order]",
        "tnauthlist_support: False",
    ]
    if options.order_validity is not None:
        lines.append(f"validity: {options.order_validity}")
    if options.authz_validity is not None:
        lines += ["", "[Authorization]", f"validity: {options.authz_validity}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Network namespace


def unshare_command() -> List[str]:
    """Return the unshare prefix that starts a process with loopback only."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise LabError("unshare not found in PATH; install util-linux")
    if shutil.which("ip") is None:
        raise LabError("ip not found in PATH; install iproute2")
    if os.geteuid() == 0:
        return [unshare, "--net", "--"]
    # A user namespace gives an unprivileged user the right to configure
    # the new network namespace.
    return [unshare, "--map-root-user", "--net", "--"]


def run_isolated(options: LabOptions, paths: LabPaths) -> None:
    """Run the server and the clients in a new network namespace.

    The namespace process gets its own session, so on timeout the whole
    process group (server and clients included) is killed.
    """
    command = unshare_command() + [
        sys.executable,
        str(LAB_PATH),
        "run-isolated",
    ] + options.to_argv()
    LOG.info("starting the namespace process: %s", " ".join(command[:3]))

    # stdout of build carries only the JSON summary, so the namespace
    # process writes its progress to stderr.
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr,
        start_new_session=True,
    )
    try:
        returncode = process.wait(timeout=options.timeout + KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        kill_process_group(process)
        raise LabError(
            f"lab run did not end within --timeout {options.timeout} s plus "
            f"{KILL_GRACE_SECONDS} s; killed its process group {process.pid}. "
            f"See the logs in {paths.logs_dir}"
        ) from None
    finally:
        if process.poll() is None:
            kill_process_group(process)

    if returncode != 0:
        raise LabError(
            f"lab run inside the network namespace failed (exit status {returncode}); "
            f"see the messages above and the logs in {paths.logs_dir}"
        )


def kill_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True and its group."""
    for sig, wait_seconds in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_seconds)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------
# Inside the namespace


def isolated_main(options: LabOptions, paths: LabPaths) -> None:
    """Start the server, run all clients, stop the server."""
    deadline = time.monotonic() + options.timeout
    bring_up_loopback()

    env = child_environment()
    started = time.monotonic()
    server = start_server(options, paths, env)
    try:
        directory_url = wait_for_directory(options, paths, server)
        server_ready_seconds = time.monotonic() - started
        LOG.info("server ready at %s after %.2f s", directory_url, server_ready_seconds)

        client_seconds = run_acme_client(options, paths, env, directory_url, deadline)
        certbot_seconds = run_certbot(options, paths, env, directory_url, deadline)
    finally:
        stop_server(server)

    run_result = {
        "server_ready_seconds": round(server_ready_seconds, 2),
        "acme_client_seconds": round(client_seconds, 2),
        "certbot_seconds": round(certbot_seconds, 2),
    }
    paths.run_result.write_text(json.dumps(run_result, indent=2), encoding="utf-8")


def bring_up_loopback() -> None:
    """Set lo up and raise LabError unless lo is the only interface."""
    interfaces = sorted(name for _index, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        raise LabError(
            f"run-isolated stopped: expected only the loopback interface, found {interfaces}. "
            "Start it through 'lab.py build'."
        )
    result = subprocess.run(
        ["ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(f"'ip link set lo up' failed: {result.stderr.strip()}")


def child_environment() -> Dict[str, str]:
    """Return the environment for the server and the clients."""
    env = {
        key: value for key, value in os.environ.items() if key not in PROXY_VARIABLES
    }
    env["PYTHONUNBUFFERED"] = "1"
    # acme_client.py writes unicode contacts into its log and JSON output.
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def start_server(
    options: LabOptions, paths: LabPaths, env: Dict[str, str]
) -> subprocess.Popen:
    """Start ``lab.py serve`` with its output in logs/server.log."""
    server_env = dict(env)
    server_env["ACME_SRV_CONFIGFILE"] = str(paths.config)
    server_env["ACME2CERTIFIER_I_KNOW_THE_RISK"] = "1"

    command = [sys.executable, str(LAB_PATH), "serve", "--port", str(options.port)]
    LOG.info("starting acme2certifier on 127.0.0.1:%d", options.port)
    with open(paths.server_log, "ab") as log_file:
        return subprocess.Popen(
            command,
            cwd=paths.workdir,
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def wait_for_directory(
    options: LabOptions, paths: LabPaths, server: subprocess.Popen
) -> str:
    """Poll GET /directory until it returns JSON, then return the directory URL."""
    url = f"http://127.0.0.1:{options.port}/directory"
    # An opener without proxy handling, because loopback must be reached directly.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + options.server_start_timeout
    last_error = "no request sent"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LabError(
                f"server exited with status {server.returncode} before it answered; "
                f"last lines of {paths.server_log}:\n{tail(paths.server_log)}"
            )
        try:
            with opener.open(url, timeout=2) as response:
                body = json.loads(response.read().decode("utf-8"))
            if "newAccount" in body:
                return url
            last_error = f"directory without newAccount: {body}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            last_error = str(err)
        time.sleep(0.1)

    raise LabError(
        f"server did not answer GET {url} within {options.server_start_timeout} s "
        f"(last error: {last_error}); last lines of {paths.server_log}:\n"
        f"{tail(paths.server_log)}"
    )


def stop_server(server: subprocess.Popen) -> None:
    """Terminate the server process and wait for it to exit."""
    if server.poll() is not None:
        LOG.warning("server had already exited with status %s", server.returncode)
        return
    server.terminate()
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        LOG.warning("server did not stop within 5 s after SIGTERM; sending SIGKILL")
        server.kill()
        server.wait(timeout=5)
    LOG.info("server stopped")


def remaining_seconds(deadline: float, limit: float, step: str) -> float:
    """Return the time a step may take, or raise LabError if none is left."""
    remaining = deadline - time.monotonic()
    if remaining <= 1:
        raise LabError(f"no time left for {step}; raise --timeout")
    return min(limit, remaining)


def run_acme_client(
    options: LabOptions,
    paths: LabPaths,
    env: Dict[str, str],
    directory_url: str,
    deadline: float,
) -> float:
    """Run acme_client.py and return its wall-clock time in seconds."""
    command = [
        sys.executable,
        str(ACME_CLIENT_PATH),
        "--directory",
        directory_url,
        "--accounts",
        str(options.accounts),
        "--certs-per-account",
        str(options.certs_per_account),
        "--output",
        str(paths.client_result),
    ]
    timeout = remaining_seconds(deadline, options.client_timeout, "acme_client.py")
    LOG.info(
        "running acme_client.py: %d accounts x %d certificates",
        options.accounts,
        options.certs_per_account,
    )
    started = time.monotonic()
    run_logged(command, env, paths.client_log, timeout, "acme_client.py")
    return time.monotonic() - started


def run_certbot(
    options: LabOptions,
    paths: LabPaths,
    env: Dict[str, str],
    directory_url: str,
    deadline: float,
) -> float:
    """Request options.certbot certificates with certbot and return the seconds taken."""
    if options.certbot == 0:
        return 0.0

    # Only the certbot next to the current interpreter is used. PATH is not
    # searched, so a system certbot of another version is never picked up.
    certbot = Path(sys.executable).parent / "certbot"
    if not certbot.exists():
        raise LabError(
            f"certbot not found at {certbot}; install certbot into the environment of "
            f"{sys.executable} or run with --certbot 0"
        )

    started = time.monotonic()
    for index in range(options.certbot):
        names = [f"cb{index}.certbot.example.test"]
        if index % 2 == 0:
            names.append(f"www.cb{index}.certbot.example.test")
        command = [
            str(certbot),
            "certonly",
            "--non-interactive",
            "--server",
            directory_url,
            "--config-dir",
            str(paths.certbot_dir / "config"),
            "--work-dir",
            str(paths.certbot_dir / "work"),
            "--logs-dir",
            str(paths.certbot_dir / "logs"),
            "--agree-tos",
            "--no-eff-email",
            "-m",
            "certbot-admin@example.test",
            "--manual",
            "--preferred-challenges",
            "http",
            "--manual-auth-hook",
            "/bin/true",
            "--cert-name",
            names[0],
        ]
        for name in names:
            command += ["-d", name]

        timeout = remaining_seconds(deadline, options.client_timeout, "certbot")
        LOG.info("running certbot for %s", ", ".join(names))
        run_logged(
            command,
            env,
            paths.logs_dir / f"certbot-{index}.log",
            timeout,
            f"certbot ({names[0]})",
        )
    return time.monotonic() - started


def run_logged(
    command: List[str], env: Dict[str, str], log_path: Path, timeout: float, step: str
) -> None:
    """Run a client with its output in log_path and raise LabError on failure."""
    with open(log_path, "ab") as log_file:
        try:
            result = subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LabError(
                f"{step} timed out after {timeout:.0f} s; last lines of {log_path}:\n"
                f"{tail(log_path)}"
            ) from None
    if result.returncode != 0:
        raise LabError(
            f"{step} failed with exit status {result.returncode}; last lines of "
            f"{log_path}:\n{tail(log_path)}"
        )


def tail(path: Path, lines: int = 15) -> str:
    """Return the last lines of a text file, or a note if it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------
# Server process


def serve(port: int) -> None:
    """Serve acme2certifier with wsgiref on 127.0.0.1 until terminated."""
    # The wsgi module reads ACME_SRV_CONFIGFILE when it is imported.
    if "ACME_SRV_CONFIGFILE" not in os.environ:
        raise LabError("ACME_SRV_CONFIGFILE is not set; start the server through 'lab.py build'")
    from wsgiref.simple_server import make_server

    from acme2certifier.share import acme2certifier_wsgi

    server = make_server(
        "127.0.0.1",
        port,
        acme2certifier_wsgi.application,
        handler_class=acme2certifier_wsgi.get_handler_cls(),
    )
    serve_until_sigterm(server, f"acme2certifier listening on 127.0.0.1:{port}")


def serve_until_sigterm(server: Any, banner: str) -> None:
    """Handle requests until SIGTERM, letting the request in progress finish.

    SIGTERM from stop_server() only sets a flag, and the loop ends before the next request.
    Raising SystemExit in the handler would not work, because wsgiref's handler catches every
    exception of the application and keeps serving.
    """
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set())
    server.timeout = 0.2
    print(banner, flush=True)
    try:
        while not stop_requested.is_set():
            server.handle_request()
    finally:
        server.server_close()
    print("acme2certifier stopped", flush=True)


# ---------------------------------------------------------------------------
# Summary


def summarize(options: LabOptions, paths: LabPaths, elapsed: float) -> Dict[str, Any]:
    """Read the database and the run results into the JSON summary."""
    if not paths.database.exists():
        raise LabError(f"database {paths.database} was not created by the server")

    # mode=ro keeps this read from creating or changing anything.
    connection = sqlite3.connect(f"file:{paths.database}?mode=ro", uri=True)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        row_counts = {
            table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            for table in tables
        }
        statuses = {
            table: status_counts(connection, table)
            for table in ("account", "orders", "authorization", "challenge")
        }
        challenge_types = dict(
            connection.execute(
                'SELECT type, count(*) FROM "challenge" GROUP BY type ORDER BY type'
            ).fetchall()
        )
        certificates = {
            "rows": row_counts.get("certificate", 0),
            "with_cert": scalar(
                connection,
                "SELECT count(*) FROM certificate WHERE cert IS NOT NULL AND cert != ''",
            ),
            "without_cert": scalar(
                connection,
                "SELECT count(*) FROM certificate WHERE cert IS NULL OR cert = ''",
            ),
            "with_error": scalar(
                connection,
                "SELECT count(*) FROM certificate WHERE error IS NOT NULL AND error != ''",
            ),
            "revoked_in_crl": crl_entry_count(paths.ca_crl),
        }
        dbversion_row = connection.execute(
            "SELECT value FROM housekeeping WHERE name = 'dbversion'"
        ).fetchone()
    finally:
        connection.close()

    return {
        "workdir": str(paths.workdir),
        "db": str(paths.database),
        "cfg": str(paths.config),
        "ca_cert": str(paths.ca_cert),
        "ca_crl": str(paths.ca_crl),
        "port": options.port,
        "dbversion": dbversion_row[0] if dbversion_row else None,
        "cert_validity_days": options.cert_validity_days,
        "elapsed_seconds": round(elapsed, 2),
        "row_counts": row_counts,
        "statuses": statuses,
        "challenge_types": challenge_types,
        "certificates": certificates,
        "certbot_certificates": options.certbot,
        "run": read_json(paths.run_result),
        "clients": read_json(paths.client_result),
    }


def status_counts(connection: sqlite3.Connection, table: str) -> Dict[str, int]:
    """Count the rows of a table per status name."""
    query = (
        f'SELECT status.name, count(*) FROM "{table}" '
        f'JOIN status ON status.id = "{table}".status_id '
        "GROUP BY status.name ORDER BY status.name"
    )
    return dict(connection.execute(query).fetchall())


def scalar(connection: sqlite3.Connection, query: str) -> int:
    return connection.execute(query).fetchone()[0]


def crl_entry_count(crl_path: Path) -> int:
    """Count the revoked serial numbers in the CA's CRL (0 if there is none)."""
    if not crl_path.exists():
        return 0
    result = subprocess.run(
        ["openssl", "crl", "-in", str(crl_path), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise LabError(f"openssl could not read the CRL {crl_path}: {result.stderr.strip()}")
    return result.stdout.count("Serial Number:")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------
# Entry points


def build(options: LabOptions) -> Dict[str, Any]:
    """Build the lab database in options.workdir and return the summary."""
    options.validate()
    started = time.monotonic()
    paths = LabPaths(options.workdir)
    prepare_workdir(options, paths)
    run_isolated(options, paths)
    summary = summarize(options, paths, time.monotonic() - started)
    paths.summary.write_text(
        json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return summary


def build_database(workdir: os.PathLike | str, **options: Any) -> Dict[str, Any]:
    """Run ``lab.py build`` in a subprocess and return its JSON summary.

    Keyword options match the command-line options with '_' for '-'
    (accounts, certs_per_account, certbot, port, cert_validity_days,
    order_validity, authz_validity, nonce_validity, timeout, client_timeout,
    server_start_timeout). Raises LabError with the command output if the
    build fails.
    """
    lab_options = LabOptions(workdir=Path(workdir), **options)
    command = [sys.executable, str(LAB_PATH), "build"] + lab_options.to_argv()
    timeout = lab_options.timeout + 2 * KILL_GRACE_SECONDS + 60
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise LabError(f"lab build timed out after {timeout} s: {err.stderr}") from None
    if result.returncode != 0:
        raise LabError(
            f"lab build failed with exit status {result.returncode}:\n{result.stderr}"
        )
    return json.loads(result.stdout)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LabOptions(workdir=Path("."))
    parser.add_argument(
        "--workdir", type=Path, required=True, help="directory to create the lab in"
    )

    parser.add_argument(
        "--accounts",
        type=int,
        default=defaults.accounts,
        help="ACME accounts that each request --certs-per-account certificates "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--certs-per-account",
        type=int,
        default=defaults.certs_per_account,
        help="certificates issued per account (default %(default)s)",
    )

    parser.add_argument(
        "--certbot",
        type=int,
        default=defaults.certbot,
        help="certificates requested with certbot (default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=defaults.port,
        help="server port on 127.0.0.1 inside the namespace (default %(default)s)",
    )

    parser.add_argument(
        "--cert-validity-days",
        type=int,
        default=defaults.cert_validity_days,
        help="lifetime of issued certificates in days (default %(default)s)",
    )
    parser.add_argument(
        "--order-validity",
        type=int,
        help="[Order] validity in seconds (default: acme2certifier's 86400)",
    )
    parser.add_argument(
        "--authz-validity",
        type=int,
        help="[Authorization] validity in seconds (default: acme2certifier's 86400)",
    )
    parser.add_argument(
        "--nonce-validity",
        type=int,
        help="[Nonce] validity in seconds (default: acme2certifier's 86400)",
    )

    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help="maximum seconds for the whole run (default %(default)s)",
    )
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=defaults.client_timeout,
        help="maximum seconds for acme_client.py and for each certbot run "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--server-start-timeout",
        type=float,
        default=defaults.server_start_timeout,
        help="maximum seconds to wait for GET /directory (default %(default)s)",
    )


def options_from_args(args: argparse.Namespace) -> LabOptions:
    values = {
        field.name: getattr(args, field.name) for field in dataclasses.fields(LabOptions)
    }
    values["workdir"] = Path(os.path.abspath(values["workdir"]))
    return LabOptions(**values)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build a real acme2certifier database by running the server "
        "and ACME clients in a loopback-only network namespace."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    build_parser = commands.add_parser(
        "build", help="create the work directory and fill its database"
    )
    add_run_arguments(build_parser)

    isolated_parser = commands.add_parser(
        "run-isolated",
        help="internal: run server and clients; started by build inside the namespace",
    )
    add_run_arguments(isolated_parser)

    serve_parser = commands.add_parser(
        "serve", help="internal: serve acme2certifier on 127.0.0.1"
    )
    serve_parser.add_argument("--port", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s lab {args.command}: %(levelname)s %(message)s",
    )
    try:
        if args.command == "serve":
            serve(args.port)
        elif args.command == "run-isolated":
            options = options_from_args(args)
            options.validate()
            isolated_main(options, LabPaths(options.workdir))
        else:
            summary = build(options_from_args(args))
            print(json.dumps(summary, indent=2))
    except LabError as err:
        LOG.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run acme2certifier 0.46.3's own Housekeeping with the Django handler, as a test oracle.

``Upstream(backend, workdir)`` prepares a work directory with the generated
Django settings (backends.py) and an acme_srv.cfg that selects
``[DBhandler] handler: django``. Each method runs acme2certifier's
``Housekeeping`` class in a subprocess (DJANGO_SETTINGS_MODULE and
ACME_SRV_CONFIGFILE set before acme2certifier is imported) and returns
what the upstream method returned, after a JSON round trip. ``run`` does
several calls in one subprocess, which saves the Django start-up of about
a second per call.

acme2certifier logs database errors and goes on with an empty result, so
a call that logs a record at level ERROR or above raises UpstreamError
unless ``allow_errors`` is set.

``snapshot(backend)`` returns every acme_srv_* table row by row, ordered by
id, for before and after comparisons.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backends  # noqa: E402  pylint: disable=wrong-import-position

UPSTREAM_PATH = Path(__file__).resolve()

# Seconds that one subprocess may take.
RUN_TIMEOUT = 300

# Housekeeping methods that run() accepts, with the keyword arguments each takes.
CALLS = {
    "accountreport_get": {"report_format", "report_name", "nested"},
    "certreport_get": {"report_format", "report_name"},
    "orders_invalidate": {"uts"},
    "authorizations_invalidate": {"uts"},
    "certificate_dates_update": set(),
    "certificates_cleanup": {"uts", "purge"},
    "nonce_cleanup": {"uts"},
}

# certificates_cleanup loads a CA handler. The skeleton handler of the
# package needs no configuration and is not called by the cleanup.
DEFAULT_CA_HANDLER = "acme2certifier.share.skeletons.ca_handler.skeleton_ca_handler"

snapshot = backends.snapshot


class UpstreamError(RuntimeError):
    """The upstream subprocess failed or logged an error."""


class Upstream:
    """acme2certifier's Housekeeping on one backend, one subprocess per run()."""

    def __init__(self, backend: backends.Backend, workdir: Path, config: Optional[Path] = None) -> None:
        """Prepare workdir. A config path replaces the generated acme_srv.cfg and must select the Django handler."""
        self.backend = backend
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends.write_settings_module(self.workdir, backend)
        if config is None:
            config = self.workdir / "acme_srv.cfg"
            config.write_text(
                f"[DEFAULT]\ndebug: False\n\n[DBhandler]\nhandler: django\n\n[CAhandler]\nhandler_module: {DEFAULT_CA_HANDLER}\n",
                encoding="utf-8",
            )
        self.config = Path(config)
        self._runs = 0

    def run(self, calls: Sequence[Tuple[str, Dict[str, Any]]], allow_errors: bool = False) -> List[Any]:
        """Run the calls in order on one Housekeeping object and return their results.

        calls are (method name, keyword arguments) pairs from CALLS.
        """
        for name, kwargs in calls:
            if name not in CALLS:
                raise UpstreamError(f"unknown Housekeeping call {name!r}; expected one of {', '.join(CALLS)}")
            unknown = set(kwargs) - CALLS[name]
            if unknown:
                raise UpstreamError(f"{name} takes no argument {', '.join(sorted(unknown))}")

        self._runs += 1
        request = self.workdir / f"run-{self._runs}.request.json"
        response = self.workdir / f"run-{self._runs}.response.json"
        log = self.workdir / f"run-{self._runs}.log"
        request.write_text(json.dumps([[name, kwargs] for name, kwargs in calls]), encoding="utf-8")
        env = backends.django_environment(self.workdir, self.config)
        command = [sys.executable, str(UPSTREAM_PATH), str(request), str(response), str(log)]
        try:
            result = subprocess.run(command, env=env, cwd=self.workdir, capture_output=True, text=True,
                                    timeout=RUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise UpstreamError(f"upstream housekeeping on {self.backend.label} timed out after {RUN_TIMEOUT} s") from None
        if result.returncode != 0:
            raise UpstreamError(
                f"upstream housekeeping on {self.backend.label} failed with exit status {result.returncode}:\n"
                f"{result.stdout}{result.stderr[-5000:]}"
            )
        output = json.loads(response.read_text(encoding="utf-8"))
        if output["errors"] and not allow_errors:
            raise UpstreamError(
                f"upstream housekeeping on {self.backend.label} logged errors (full log in {log}):\n"
                + "\n".join(output["errors"])
            )
        return output["results"]

    def _report(self, method: str, name: str, report_format: str, **kwargs: Any) -> Path:
        if report_format not in ("csv", "json"):
            raise UpstreamError(f"invalid report_format {report_format!r}; expected csv or json")
        stem = self.workdir / name
        self.run([(method, {"report_format": report_format, "report_name": str(stem), **kwargs})])
        # Housekeeping appends the format to report_name.
        return stem.with_name(f"{stem.name}.{report_format}")

    def account_report(self, report_format: str = "csv", nested: bool = False, name: str = "accounts") -> Path:
        """Write the account report (csv, json, or nested json) and return the file.

        Housekeeping writes no file when there is no account with an order.
        """
        return self._report("accountreport_get", name, report_format, nested=nested)

    def certificate_report(self, report_format: str = "csv", name: str = "certificates") -> Path:
        """Write the certificate report and return the file (none when there are no certificates)."""
        return self._report("certreport_get", name, report_format)

    def orders_invalidate(self, uts: int) -> List[Dict[str, Any]]:
        """Run orders_invalidate with uts as the current time and return upstream's list of orders."""
        return self.run([("orders_invalidate", {"uts": uts})])[0]

    def authorizations_invalidate(self, uts: int) -> None:
        """Run authorizations_invalidate with uts as the current time (upstream returns nothing)."""
        self.run([("authorizations_invalidate", {"uts": uts})])

    def certificate_dates_update(self) -> None:
        """Run certificate_dates_update, which fills issue_uts and expire_uts where both are 0."""
        self.run([("certificate_dates_update", {})])

    def certificates_cleanup(self, uts: int, purge: bool = False) -> List[Any]:
        """Run certificates_cleanup with uts as the current time and return upstream's list."""
        return self.run([("certificates_cleanup", {"uts": uts, "purge": purge})])[0]

    def nonce_cleanup(self, uts: int) -> List[Any]:
        """Run nonce_cleanup with uts as the current time and return upstream's list."""
        return self.run([("nonce_cleanup", {"uts": uts})])[0]


# ---------------------------------------------------------------------------
# Subprocess


class _ErrorCollector(logging.Handler):
    """Keep the messages of records at level ERROR and above."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


def run_in_process(request: Path, response: Path, log: Path) -> None:
    """Run the calls of request with acme2certifier's Housekeeping and write response."""
    for name in ("DJANGO_SETTINGS_MODULE", "ACME_SRV_CONFIGFILE"):
        if name not in os.environ:
            raise UpstreamError(f"{name} is not set; use the Upstream class")
    calls = json.loads(request.read_text(encoding="utf-8"))

    logger = logging.getLogger("acmeops_upstream")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    file_handler = logging.FileHandler(log, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    collector = _ErrorCollector()
    logger.addHandler(file_handler)
    logger.addHandler(collector)

    # Imported here because the import sets up Django from DJANGO_SETTINGS_MODULE.
    from acme2certifier.acme_srv.housekeeping import Housekeeping  # pylint: disable=import-outside-toplevel

    results = []
    with Housekeeping(False, logger) as housekeeping:
        for name, kwargs in calls:
            results.append(getattr(housekeeping, name)(**kwargs))
    response.write_text(json.dumps({"results": results, "errors": collector.messages}, default=str),
                        encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: upstream.py REQUEST.json RESPONSE.json LOGFILE (started by the Upstream class)")
    run_in_process(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))

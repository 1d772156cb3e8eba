# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run acme2certifier 0.46.3's own Housekeeping class on one database, step by step.

The differential tests start this file in a subprocess with ACME_SRV_CONFIGFILE set, because
acme2certifier caches its configuration per process. Only the standard library and
acme2certifier are imported.

``python upstream_runner.py STEPS_JSON RESULTS_JSON`` runs the steps of STEPS_JSON (a JSON list)
and writes one result per step to RESULTS_JSON. ``python upstream_runner.py --serve`` reads one
JSON list of steps per line on stdin and writes one JSON list of results per line on stdout, so
the property test pays the import time once.

Steps are objects with an "op" key:

- account_report (format, nested, name), certificate_report (format, name):
  accountreport_get and certreport_get; name is report_name, so the file is name.format.
- orders_invalidate, authorizations_invalidate (uts, format, name).
- certificate_dates_update.
- certificates_cleanup (uts, purge, format, name).
- nonce_cleanup (uts).
- copy (source, target): copy a file, for snapshots of the database between steps.

A result contains the returned value (or null) and the WARNING and higher log messages of the
step. When the step raised an exception, it also contains the exception as "Type: message",
and the later steps still run.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from typing import Any, Dict, List


class _Collector(logging.Handler):
    """Keep the messages of one step."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def _call(housekeeping: Any, step: Dict[str, Any]) -> Any:
    """Call the Housekeeping method that a step names and return what it returns."""
    operation = step["op"]
    if operation == "account_report":
        return housekeeping.accountreport_get(report_format=step["format"], report_name=step.get("name"),
                                              nested=step.get("nested", False))
    if operation == "certificate_report":
        return housekeeping.certreport_get(report_format=step["format"], report_name=step.get("name"))
    if operation == "orders_invalidate":
        return housekeeping.orders_invalidate(uts=step["uts"], report_format=step.get("format", "csv"),
                                              report_name=step.get("name"))
    if operation == "authorizations_invalidate":
        return housekeeping.authorizations_invalidate(uts=step["uts"], report_format=step.get("format", "csv"),
                                                      report_name=step.get("name"))
    if operation == "certificate_dates_update":
        return housekeeping.certificate_dates_update()
    if operation == "certificates_cleanup":
        return housekeeping.certificates_cleanup(uts=step["uts"], purge=step.get("purge", False),
                                                 report_format=step.get("format", "csv"), report_name=step.get("name"))
    if operation == "nonce_cleanup":
        return housekeeping.nonce_cleanup(uts=step["uts"])
    raise ValueError(f"unknown step {operation!r}")


def run_steps(steps: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Run the steps in order, each inside its own Housekeeping context."""
    from acme2certifier.acme_srv.housekeeping import Housekeeping  # pylint: disable=import-outside-toplevel

    logger = logging.getLogger("acme2certifier-upstream")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    results = []
    for step in steps:
        if step["op"] == "copy":
            shutil.copyfile(step["source"], step["target"])
            results.append({"op": "copy", "returned": None, "error": None, "log": []})
            continue

        collector = _Collector()
        logger.addHandler(collector)
        returned, error = None, None
        try:
            with Housekeeping(False, logger) as housekeeping:
                returned = _call(housekeeping, step)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # The tests compare failures too, so every exception of acme2certifier is recorded.
            error = f"{type(exc).__name__}: {exc}"
        finally:
            logger.removeHandler(collector)
        results.append({"op": step["op"], "returned": returned, "error": error, "log": collector.messages})
    return results


def main(argv: List[str]) -> int:
    if argv[1:] == ["--serve"]:
        # acme2certifier prints some messages to stdout, which carries the results here, so
        # everything else goes to stderr.
        protocol, sys.stdout = sys.stdout, sys.stderr
        for line in sys.stdin:
            results = run_steps(json.loads(line))
            protocol.write(json.dumps(results, default=str) + "\n")
            protocol.flush()
        return 0
    if len(argv) != 3:
        sys.stderr.write("usage: upstream_runner.py STEPS_JSON RESULTS_JSON | --serve\n")
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        steps = json.load(handle)
    results = run_steps(steps)
    with open(argv[2], "w", encoding="utf-8") as handle:
        json.dump(results, handle, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Issue certificates in a loop against an ACME server, for load tests.

load.py starts several of these at once inside its loopback-only network
namespace. Each creates one account and then issues up to ``--certs``
certificates, one after the other, until ``--max-seconds`` have passed. Both
limits always apply, so the loop is bounded in count and in time.

Every certificate is recorded with what the server returned: order and
certificate names, serial number, validity and the DER bytes in base64
(acme2certifier stores the same value in ``certificate.cert_raw``). A failed
request ends the current certificate with an error record and the loop goes
on with the next one. After three failures in a row the client stops. The
JSON record goes to ``--output``, and the exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

from acme import errors, messages
from cryptography.hazmat.primitives import serialization

from acme_client import CHALLENGE_TYPES, LabAccount, ScenarioError, issue_certificate

LOG = logging.getLogger("load_client")

MAX_CERTS = 200
MAX_SECONDS = 600.0
MAX_FAILURES_IN_A_ROW = 3


def names_for(client_index: int, cert_index: int) -> List[str]:
    """Return one or two identifiers that no other client uses."""
    host = f"c{cert_index}.load{client_index}.example.test"
    return [host, f"www.{host}"] if cert_index % 3 == 2 else [host]


def issue_one(account: LabAccount, client_index: int, cert_index: int) -> Dict[str, Any]:
    """Issue one certificate and return its record without the certificate object."""
    record = issue_certificate(
        account,
        names_for(client_index, cert_index),
        CHALLENGE_TYPES[cert_index % len(CHALLENGE_TYPES)],
        "ec" if cert_index % 4 else "rsa",
    )
    certificate = record.pop("_certificate")
    record["der_base64"] = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")
    record["not_before"] = int(certificate.not_valid_before_utc.timestamp())
    record["not_after_uts"] = int(certificate.not_valid_after_utc.timestamp())
    return record


def run(directory_url: str, client_index: int, certs: int, max_seconds: float) -> Dict[str, Any]:
    """Create an account and issue certificates until a limit is reached."""
    started = time.monotonic()
    deadline = started + max_seconds
    issued: List[Dict[str, Any]] = []
    failures: List[Dict[str, Any]] = []
    in_a_row = 0

    account = LabAccount(directory_url, f"load{client_index}@example.test", "ec" if client_index % 2 else "rsa")
    for cert_index in range(certs):
        if time.monotonic() >= deadline:
            LOG.info("time limit of %.0f s reached after %d certificates", max_seconds, len(issued))
            break
        attempt_started = time.monotonic()
        try:
            record = issue_one(account, client_index, cert_index)
        except (ScenarioError, errors.Error, messages.Error, OSError, ValueError) as err:
            in_a_row += 1
            failures.append({
                "cert_index": cert_index,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=5),
                "at_seconds": round(attempt_started - started, 3),
            })
            LOG.error("certificate %d failed: %s: %s", cert_index, type(err).__name__, err)
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                LOG.error("stopping after %d failures in a row", in_a_row)
                break
            continue
        in_a_row = 0
        record["seconds"] = round(time.monotonic() - attempt_started, 3)
        issued.append(record)

    return {
        "client": client_index,
        "account": account.name,
        "issued": issued,
        "failures": failures,
        "elapsed_seconds": round(time.monotonic() - started, 2),
    }


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True, help="ACME directory URL")
    parser.add_argument("--client-index", type=int, required=True, help="number of this client, for unique names")
    parser.add_argument("--certs", type=int, default=20, help=f"certificates to issue, at most {MAX_CERTS}")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help=f"seconds after which no new certificate is started, at most {MAX_SECONDS:.0f}")
    parser.add_argument("--output", required=True, help="file for the JSON record")
    args = parser.parse_args(argv)
    if not 1 <= args.certs <= MAX_CERTS:
        parser.error(f"--certs must be from 1 to {MAX_CERTS}")
    if not 0 < args.max_seconds <= MAX_SECONDS:
        parser.error(f"--max-seconds must be above 0 and at most {MAX_SECONDS:.0f}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s load_client {args.client_index}: %(levelname)s %(message)s")
    try:
        result = run(args.directory, args.client_index, args.certs, args.max_seconds)
    except (errors.Error, messages.Error, OSError) as err:
        # The account could not be created: record it like a failed certificate.
        result = {"client": args.client_index, "issued": [], "elapsed_seconds": 0,
                  "failures": [{"cert_index": None, "error": f"{type(err).__name__}: {err}"}]}
    with open(args.output, "w", encoding="utf-8") as output:
        json.dump(result, output, indent=2)
    LOG.info("done: %d issued, %d failed", len(result["issued"]), len(result["failures"]))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

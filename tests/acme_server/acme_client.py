"""Fill an ACME server with the kind of data a real installation contains.

lab.py runs this script inside its loopback-only network namespace against
acme2certifier with challenge validation disabled, so answering a challenge
is enough to make it valid. The script uses the python ``acme`` library and
creates:

* ``--accounts`` accounts (the first with a contact in the internationalized
  domain jörg.example.test, written in its ACE form xn--jrg-sna.example.test,
  the second with an EC key if there is one), each issuing
  ``--certs-per-account`` certificates. Some orders carry two
  or three identifiers, and the answered challenge type rotates between
  http-01, dns-01 and tls-alpn-01;
* one revoked certificate (the first certificate of the first account);
* one account that issues a certificate and is then deactivated;
* one order left pending (no challenge answered);
* one order left ready (challenges answered, never finalized);
* one order whose finalization fails because the CSR names a host that is
  not in the order. acme2certifier 0.46.3 answers badCSR and leaves the
  order in status processing, with a certificate row that has the CSR but
  no certificate.

It also asks for an account with the contact ``mailto:jörg@example.test``
and records whether the server accepts it. acme2certifier 0.46.3 rejects
contacts with non-ASCII characters (invalidContact), so that attempt adds no
account there.

It writes what it did as JSON to ``--output`` and exits with status 1 if any
step does not behave as described.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

import josepy
from acme import client as acme_lib
from acme import challenges, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

LOG = logging.getLogger("acme_client")

# Order polling: the server changes state within milliseconds because
# validation is disabled, so a short interval with a hard limit is enough.
POLL_INTERVAL_SECONDS = 0.05
ORDER_WAIT_SECONDS = 30.0

CHALLENGE_TYPES = ("http-01", "dns-01", "tls-alpn-01")

# RFC 5280 reason code "superseded".
REVOCATION_REASON = 4

USER_AGENT = "acmeops-lab-client"


class ScenarioError(RuntimeError):
    """The server did not behave as a scenario expects."""


class LabAccount:
    """An ACME account with its key and a client bound to it."""

    def __init__(self, directory_url: str, contact_email: str, key_type: str):
        self.contact_email = contact_email
        self.key_type = key_type
        if key_type == "ec":
            self.key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
            algorithm = josepy.ES256
        else:
            self.key = josepy.JWKRSA(
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
            )
            algorithm = josepy.RS256

        network = acme_lib.ClientNetwork(
            self.key, alg=algorithm, user_agent=USER_AGENT, verify_ssl=False
        )
        directory = acme_lib.ClientV2.get_directory(directory_url, network)
        self.client = acme_lib.ClientV2(directory, network)

        registration = messages.NewRegistration.from_data(
            email=contact_email, terms_of_service_agreed=True
        )
        self.registration = self.client.new_account(registration)
        self.name = url_name(self.registration.uri)
        self.status = "valid"
        LOG.info("account %s created for %s (%s key)", self.name, contact_email, key_type)

    def record(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "contact": f"mailto:{self.contact_email}",
            "key_type": self.key_type,
            "status": self.status,
        }


def url_name(url: str) -> str:
    """Return the last path segment of an ACME resource URL.

    acme2certifier uses that segment as the ``name`` column of the row.
    """
    return url.rstrip("/").rsplit("/", 1)[-1]


def new_csr(names: List[str], key_type: str) -> bytes:
    """Return a PEM CSR for names with a fresh key of key_type (rsa or ec)."""
    if key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return crypto_util.make_csr(key_pem, names)


def fetch_order(account: LabAccount, order: messages.OrderResource) -> messages.Order:
    # acme 5.9 has no public call that re-reads an order without first
    # sleeping one second (poll_finalization), so the POST-as-GET helper
    # of the client is used directly.
    response = account.client._post_as_get(order.uri)  # pylint: disable=protected-access
    return messages.Order.from_json(response.json())


def wait_for_order(
    account: LabAccount, order: messages.OrderResource, expected: Iterable[str]
) -> messages.Order:
    """Poll the order until its status is one of expected.

    Raises ScenarioError when the order becomes invalid or the wait times out.
    """
    expected = set(expected)
    deadline = time.monotonic() + ORDER_WAIT_SECONDS
    body = fetch_order(account, order)
    while body.status.name not in expected:
        if body.status.name == "invalid" or time.monotonic() > deadline:
            raise ScenarioError(
                f"order {url_name(order.uri)} has status {body.status.name}, "
                f"expected one of {sorted(expected)} (error: {body.error})"
            )
        time.sleep(POLL_INTERVAL_SECONDS)
        body = fetch_order(account, order)
    return body


def challenge_type_of(challenge: messages.ChallengeBody) -> str:
    """Return the type of a challenge, also for types the library lacks."""
    if isinstance(challenge.chall, challenges.UnrecognizedChallenge):
        # acme 5.9 has no class for tls-alpn-01 and keeps its JSON as is.
        return challenge.chall.jobj.get("type", "")
    return challenge.chall.typ


def challenge_response(
    account: LabAccount, challenge: messages.ChallengeBody
) -> challenges.ChallengeResponse:
    if isinstance(challenge.chall, challenges.UnrecognizedChallenge):
        # An empty JSON object, the payload that RFC 8555 section 7.5.1
        # defines for responding to any challenge.
        return challenges.ChallengeResponse()
    return challenge.response(account.key)


def answer_challenges(
    account: LabAccount, order: messages.OrderResource, challenge_type: str
) -> None:
    """Answer the challenge of challenge_type in every authorization of the order."""
    for authorization in order.authorizations:
        offered = [challenge_type_of(item) for item in authorization.body.challenges]
        matching = [
            item
            for item in authorization.body.challenges
            if challenge_type_of(item) == challenge_type
        ]
        if not matching:
            raise ScenarioError(
                f"authorization {url_name(authorization.uri)} offers {offered}, "
                f"not {challenge_type}"
            )
        challenge = matching[0]
        account.client.answer_challenge(challenge, challenge_response(account, challenge))


def create_ready_order(
    account: LabAccount, names: List[str], challenge_type: str, key_type: str
) -> Tuple[messages.OrderResource, bytes]:
    """Create an order, answer its challenges and wait until it is ready."""
    csr_pem = new_csr(names, key_type)
    order = account.client.new_order(csr_pem)
    answer_challenges(account, order, challenge_type)
    wait_for_order(account, order, {"ready"})
    return order, csr_pem


def issue_certificate(
    account: LabAccount, names: List[str], challenge_type: str, key_type: str
) -> Dict[str, Any]:
    """Issue a certificate and return the record of its order."""
    order, _csr_pem = create_ready_order(account, names, challenge_type, key_type)

    # begin_finalization() sends the CSR and returns at once. poll_finalization()
    # would sleep one second before each poll, so the order is polled here.
    account.client.begin_finalization(order)
    body = wait_for_order(account, order, {"valid"})
    deadline = time.monotonic() + ORDER_WAIT_SECONDS
    while body.certificate is None:
        if time.monotonic() > deadline:
            raise ScenarioError(f"order {url_name(order.uri)} is valid but has no certificate URL")
        time.sleep(POLL_INTERVAL_SECONDS)
        body = fetch_order(account, order)

    response = account.client._post_as_get(body.certificate)  # pylint: disable=protected-access
    chain = x509.load_pem_x509_certificates(response.text.encode("ascii"))
    certificate = chain[0]
    LOG.info(
        "order %s issued certificate %x for %s",
        url_name(order.uri),
        certificate.serial_number,
        ", ".join(names),
    )
    return {
        "account": account.name,
        "order": url_name(order.uri),
        "identifiers": names,
        "challenge_type": challenge_type,
        "key_type": key_type,
        "scenario": "issued",
        "status": "valid",
        "certificate": url_name(body.certificate),
        "serial": format(certificate.serial_number, "x"),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "_certificate": certificate,
    }


def names_for(account_index: int, cert_index: int) -> List[str]:
    """Return the identifiers of one order: one, two or three names."""
    host = f"host{cert_index}.acct{account_index}.example.test"
    names = [host]
    if cert_index % 2 == 1:
        names.append(f"www.{host}")
    if cert_index % 4 == 3:
        names.append(f"api.{host}")
    return names


def contact_for(account_index: int) -> str:
    if account_index == 0:
        # The ACE form of the internationalized domain jörg.example.test.
        return "joerg@" + "jörg.example.test".encode("idna").decode("ascii")
    return f"admin{account_index}@example.test"


def try_unicode_contact(directory_url: str) -> Tuple[Dict[str, Any], Optional[LabAccount]]:
    """Ask for an account with a non-ASCII contact.

    Returns the record of the outcome and the account if the server created one.
    """
    email = "jörg@example.test"
    try:
        account = LabAccount(directory_url, email, "rsa")
    except messages.Error as err:
        LOG.info("server rejected the contact mailto:%s: %s", email, err.typ)
        record = {"contact": f"mailto:{email}", "accepted": False, "error": str(err.typ)}
        return record, None
    return {"contact": f"mailto:{email}", "accepted": True, "account": account.name}, account


def run_issuing_accounts(
    directory_url: str, accounts: int, certs_per_account: int
) -> Tuple[List[LabAccount], List[Dict[str, Any]]]:
    """Create the accounts and issue their certificates."""
    lab_accounts = []
    orders = []
    for account_index in range(accounts):
        key_type = "ec" if account_index == 1 else "rsa"
        account = LabAccount(directory_url, contact_for(account_index), key_type)
        lab_accounts.append(account)
        for cert_index in range(certs_per_account):
            challenge_type = CHALLENGE_TYPES[cert_index % len(CHALLENGE_TYPES)]
            cert_key_type = "rsa" if cert_index % 4 == 0 else "ec"
            orders.append(
                issue_certificate(
                    account,
                    names_for(account_index, cert_index),
                    challenge_type,
                    cert_key_type,
                )
            )
    return lab_accounts, orders


def revoke_first_certificate(account: LabAccount, orders: List[Dict[str, Any]]) -> None:
    """Revoke the first certificate of account and mark its record."""
    record = next(item for item in orders if item["account"] == account.name)
    account.client.revoke(record["_certificate"], REVOCATION_REASON)
    record["scenario"] = "revoked"
    record["revocation_reason"] = REVOCATION_REASON
    LOG.info("certificate %s of order %s revoked", record["serial"], record["order"])


def run_deactivated_account(directory_url: str) -> Tuple[LabAccount, Dict[str, Any]]:
    """Create an account, issue one certificate with it, then deactivate it."""
    account = LabAccount(directory_url, "retired@example.test", "rsa")
    record = issue_certificate(account, ["retired.example.test"], "http-01", "ec")
    record["scenario"] = "issued_by_deactivated_account"
    account.client.deactivate_registration(account.registration)
    account.status = "deactivated"
    LOG.info("account %s deactivated", account.name)
    return account, record


def run_pending_order(account: LabAccount) -> Dict[str, Any]:
    """Create an order and answer none of its challenges."""
    names = ["pending.example.test", "www.pending.example.test"]
    order = account.client.new_order(new_csr(names, "ec"))
    body = fetch_order(account, order)
    if body.status.name != "pending":
        raise ScenarioError(f"new order {url_name(order.uri)} has status {body.status.name}, expected pending")
    LOG.info("order %s left pending", url_name(order.uri))
    return {
        "account": account.name,
        "order": url_name(order.uri),
        "identifiers": names,
        "scenario": "pending",
        "status": "pending",
    }


def run_ready_order(account: LabAccount) -> Dict[str, Any]:
    """Create an order, answer its challenges and never finalize it."""
    names = ["ready.example.test"]
    order, _csr_pem = create_ready_order(account, names, "dns-01", "ec")
    LOG.info("order %s left ready", url_name(order.uri))
    return {
        "account": account.name,
        "order": url_name(order.uri),
        "identifiers": names,
        "challenge_type": "dns-01",
        "scenario": "ready",
        "status": "ready",
    }


def finalization_error(account: LabAccount, order: messages.OrderResource, csr_pem: bytes) -> str:
    """Finalize ORDER with CSR_PEM and return the server's error as "type: detail".

    Raises ScenarioError if the server accepts the finalization.
    """
    try:
        account.client.begin_finalization(order.update(csr_pem=csr_pem))
    except messages.Error as err:
        return f"{err.typ}: {err.detail}"
    raise ScenarioError(
        f"order {url_name(order.uri)}: the server accepted a CSR for a name "
        "that is not in the order"
    )


def run_failed_finalization(account: LabAccount) -> Dict[str, Any]:
    """Finalize a ready order with a CSR for a name the order does not contain."""
    names = ["mismatch.example.test"]
    order, _csr_pem = create_ready_order(account, names, "http-01", "ec")
    wrong_csr = new_csr(["not-in-order.example.test"], "ec")
    error = finalization_error(account, order, wrong_csr)
    body = fetch_order(account, order)
    LOG.info(
        "order %s finalization rejected (%s); order status %s",
        url_name(order.uri),
        error,
        body.status.name,
    )
    return {
        "account": account.name,
        "order": url_name(order.uri),
        "identifiers": names,
        "challenge_type": "http-01",
        "scenario": "finalize_failed",
        "status": body.status.name,
        "error": error,
    }


def run(directory_url: str, accounts: int, certs_per_account: int) -> Dict[str, Any]:
    """Run all scenarios and return the JSON-ready record of them."""
    started = time.monotonic()
    lab_accounts, orders = run_issuing_accounts(directory_url, accounts, certs_per_account)
    first, last = lab_accounts[0], lab_accounts[-1]

    revoke_first_certificate(first, orders)
    orders.append(run_pending_order(first))
    orders.append(run_ready_order(last))
    orders.append(run_failed_finalization(last))

    retired, retired_order = run_deactivated_account(directory_url)
    lab_accounts.append(retired)
    orders.append(retired_order)

    unicode_contact, unicode_account = try_unicode_contact(directory_url)
    if unicode_account is not None:
        lab_accounts.append(unicode_account)

    for record in orders:
        record.pop("_certificate", None)
    return {
        "directory": directory_url,
        "unicode_contact": unicode_contact,
        "accounts": [account.record() for account in lab_accounts],
        "orders": orders,
        "certificates_issued": sum(1 for item in orders if "serial" in item),
        "elapsed_seconds": round(time.monotonic() - started, 2),
    }


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True, help="ACME directory URL")
    parser.add_argument("--accounts", type=int, default=3, help="issuing accounts")
    parser.add_argument(
        "--certs-per-account", type=int, default=8, help="certificates per account"
    )
    parser.add_argument("--output", required=True, help="file for the JSON record")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.certs_per_account < 1:
        parser.error("--accounts and --certs-per-account must be at least 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s acme_client: %(levelname)s %(message)s",
    )
    try:
        result = run(args.directory, args.accounts, args.certs_per_account)
    except (ScenarioError, errors.Error, messages.Error) as err:
        LOG.error("scenario failed: %s: %s", type(err).__name__, err)
        return 1
    with open(args.output, "w", encoding="utf-8") as output:
        json.dump(result, output, indent=2, ensure_ascii=False)
    LOG.info(
        "done: %d accounts, %d orders, %d certificates in %.2f s",
        len(result["accounts"]),
        len(result["orders"]),
        result["certificates_issued"],
        result["elapsed_seconds"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

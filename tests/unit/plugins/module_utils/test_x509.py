# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests for the standard-library X.509 reader.

Certificates come from cryptography's builder or from the DER helpers below.
Parsed fields are compared with cryptography, and the cert_raw, dates, serial,
aki and renewal_info rules with acme2certifier 0.46.3 where it is installed.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import logging
import os
import random
import sqlite3
import subprocess
import sys
import types
import warnings
from typing import List, Optional, Tuple

import pytest

from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import x509

try:
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.x509.oid import NameOID
except ImportError:
    pytest.skip("cryptography generates the test certificates", allow_module_level=True)

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:
    given = None

UPSTREAM_VERSION = "0.46.3"
try:
    from importlib.metadata import version as _distribution_version

    from acme2certifier.acme_srv import helper as upstream_helper
    from acme2certifier.acme_srv.certificate import Certificate as UpstreamCertificate
    from acme2certifier.acme_srv.housekeeping import Housekeeping as UpstreamHousekeeping

    _installed = _distribution_version("acme2certifier")
    if _installed != UPSTREAM_VERSION:
        UPSTREAM_SKIP_REASON = "acme2certifier %s is installed, these checks need %s" % (
            _installed,
            UPSTREAM_VERSION,
        )
    else:
        UPSTREAM_SKIP_REASON = ""
except ImportError as _error:
    UPSTREAM_SKIP_REASON = "acme2certifier %s is not importable (%s)" % (UPSTREAM_VERSION, _error)

requires_upstream = pytest.mark.skipif(bool(UPSTREAM_SKIP_REASON), reason=UPSTREAM_SKIP_REASON)

UPSTREAM_LOGGER = logging.getLogger("test_x509.upstream")
UPSTREAM_LOGGER.disabled = True
UPSTREAM_SELF = types.SimpleNamespace(logger=UPSTREAM_LOGGER)

UTC = datetime.timezone.utc


# ---------------------------------------------------------------------------
# Both readers
# ---------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module", params=["cryptography", "pure"])
def reader(request):
    """Run every test of this module once through cryptography and once with the pure reader.

    Module scope, because hypothesis rejects function-scoped fixtures in @given tests.
    """
    if request.param == "cryptography" and not x509._cryptography_usable():
        pytest.skip("cryptography %s is below the release the cryptography path needs" % x509.CRYPTOGRAPHY_VERSION)
    previous = x509.use_cryptography(request.param == "cryptography")
    assert x509.cryptography_in_use() == (request.param == "cryptography")
    yield request.param
    x509.use_cryptography(previous)


def outcome(function, *args):
    """Return ("value", result) or ("error", message), so two readers can be compared."""
    try:
        return ("value", function(*args))
    except x509.CertificateError as error:
        return ("error", str(error))


def assert_load_matches_parse(der: bytes) -> None:
    """load_certificate() gives parse_certificate()'s values or raises its message."""
    expected = outcome(x509.parse_certificate, der)
    loaded = outcome(x509.load_certificate, der)
    if expected[0] == "error":
        assert loaded == expected
        return
    assert loaded[0] == "value"
    certificate, reference = loaded[1], expected[1]
    assert certificate.serial_number == reference.serial_number
    assert certificate.not_before == reference.not_before
    assert certificate.not_after == reference.not_after
    assert x509.read_dates(certificate) == x509.read_dates(reference)
    assert outcome(lambda: certificate.authority_key_identifier) == outcome(
        lambda: reference.authority_key_identifier
    )


# ---------------------------------------------------------------------------
# DER helpers
# ---------------------------------------------------------------------------


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def der_sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def der_set(*parts: bytes) -> bytes:
    return tlv(0x31, b"".join(parts))


def der_integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def base128(value: int) -> bytes:
    digits = [value & 0x7F]
    value >>= 7
    while value:
        digits.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(digits))


def der_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    return tlv(0x06, b"".join(base128(arc) for arc in [arcs[0] * 40 + arcs[1]] + arcs[2:]))


def utc_time(text: str) -> bytes:
    return tlv(0x17, text.encode("ascii"))


def generalized_time(text: str) -> bytes:
    return tlv(0x18, text.encode("ascii"))


def der_name(common_name: str = "test", tag: int = 0x0C, value: Optional[bytes] = None) -> bytes:
    content = value if value is not None else common_name.encode("utf-8")
    return der_sequence(der_set(der_sequence(der_oid("2.5.4.3"), tlv(tag, content))))


def der_extension(oid: str, value: bytes, critical: Optional[bytes] = None) -> bytes:
    parts = [der_oid(oid)]
    if critical is not None:
        parts.append(tlv(0x01, critical))
    parts.append(tlv(0x04, value))
    return der_sequence(*parts)


ECDSA_SHA256 = der_sequence(der_oid("1.2.840.10045.4.3.2"))
AKI_OID = "2.5.29.35"


@functools.lru_cache(maxsize=None)
def private_key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError("unknown key kind %r" % kind)


def spki_der(kind: str = "ec256") -> bytes:
    return (
        private_key(kind)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def build_der(
    serial: bytes = der_integer(0x1234),
    not_before: bytes = utc_time("240102030405Z"),
    not_after: bytes = utc_time("250102030405Z"),
    version: bytes = tlv(0xA0, der_integer(2)),
    issuer: Optional[bytes] = None,
    subject: Optional[bytes] = None,
    extensions: Optional[List[bytes]] = None,
    tbs_tail: bytes = b"",
    algorithm: bytes = ECDSA_SHA256,
    spki: Optional[bytes] = None,
    signature: bytes = tlv(0x03, b"\x00" + b"\x5a" * 16),
) -> bytes:
    """Build a certificate DER with an arbitrary signature, enough for loading."""
    tbs_parts = [
        version,
        serial,
        algorithm,
        issuer if issuer is not None else der_name("issuer"),
        der_sequence(not_before, not_after),
        subject if subject is not None else der_name("subject"),
        spki if spki is not None else spki_der(),
        tbs_tail,
    ]
    if extensions is not None:
        tbs_parts.append(tlv(0xA3, der_sequence(*extensions)))
    return der_sequence(der_sequence(*tbs_parts), algorithm, signature)


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def pem(certificate: cx509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def der_to_pem(der: bytes) -> str:
    body = b64(der)
    lines = [body[index : index + 64] for index in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


# ---------------------------------------------------------------------------
# Certificates from cryptography's builder
# ---------------------------------------------------------------------------


def issue(
    key_kind: str = "ec256",
    serial: int = 0x1234,
    not_before: datetime.datetime = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    not_after: datetime.datetime = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    subject: Optional[cx509.Name] = None,
    issuer_kind: Optional[str] = None,
    issuer_name: Optional[cx509.Name] = None,
    with_aki: bool = True,
    is_ca: bool = False,
) -> cx509.Certificate:
    subject = subject or cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "leaf.example")])
    issuer_kind = issuer_kind or key_kind
    issuer_key = private_key(issuer_kind)
    builder = (
        cx509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(private_key(key_kind).public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if with_aki:
        builder = builder.add_extension(
            cx509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if is_ca:
        builder = builder.add_extension(cx509.BasicConstraints(ca=True, path_length=None), True)
    algorithm = None if issuer_kind == "ed25519" else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def public_key_bits(certificate: cx509.Certificate) -> bytes:
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def expected_aki(certificate: cx509.Certificate) -> Optional[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(cx509.AuthorityKeyIdentifier)
    except cx509.ExtensionNotFound:
        return None
    return extension.value.key_identifier.hex()


def assert_matches_cryptography(der: bytes) -> x509.Certificate:
    """Compare every parsed field with cryptography's view of the same DER."""
    parsed = x509.parse_certificate(der)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = cx509.load_der_x509_certificate(der)
        reference_serial = reference.serial_number

    assert parsed.serial_number == reference_serial
    assert parsed.not_before == int(reference.not_valid_before_utc.timestamp())
    assert parsed.not_after == int(reference.not_valid_after_utc.timestamp())
    assert parsed.issuer == reference.issuer.public_bytes()
    assert parsed.subject == reference.subject.public_bytes()
    assert parsed.subject_public_key == public_key_bits(reference)
    assert parsed.authority_key_identifier == expected_aki(reference)
    assert [extension.oid for extension in parsed.extensions] == [
        extension.oid.dotted_string for extension in reference.extensions
    ]
    assert [extension.critical for extension in parsed.extensions] == [
        extension.critical for extension in reference.extensions
    ]
    assert_load_matches_parse(der)
    return parsed


def serial_with_high_bit(octets: int, seed: int) -> int:
    """Return a serial of exactly ``octets`` octets whose top bit is set."""
    generator = random.Random(seed)
    return (1 << (8 * octets - 1)) | generator.getrandbits(8 * octets - 1)


LONG_SUBJECT = cx509.Name(
    [
        cx509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        cx509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Baden-Wuerttemberg" * 3),
        cx509.NameAttribute(NameOID.LOCALITY_NAME, "L" * 128),
        cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Organisation " * 3),
        cx509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit A"),
        cx509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Unit B"),
        cx509.NameAttribute(NameOID.COMMON_NAME, "c" * 64),
        cx509.NameAttribute(NameOID.EMAIL_ADDRESS, "hostmaster@example.org"),
    ]
)
UNICODE_SUBJECT = cx509.Name(
    [
        cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "Grüße & Ça va, 日本語"),
        cx509.NameAttribute(NameOID.COMMON_NAME, "ünïcødé-😀.example"),
    ]
)
MULTI_VALUED_SUBJECT = cx509.Name(
    [
        cx509.RelativeDistinguishedName(
            [
                cx509.NameAttribute(NameOID.COMMON_NAME, "multi"),
                cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "valued"),
            ]
        )
    ]
)


def builder_cases():
    """Yield (id, certificate) pairs that cover keys, serials, dates and names."""
    kinds = ["rsa", "ec256", "ec384", "ed25519"]

    # cryptography's builder allows at most 159 bits, so 20 octets with the top
    # bit set are covered by the hand-built DER cases instead.
    for octets in range(1, 20):
        kind = kinds[octets % len(kinds)]
        yield "serial-%d-octets-%s" % (octets, kind), issue(
            key_kind=kind, serial=serial_with_high_bit(octets, octets)
        )
    yield "serial-1", issue(serial=1)
    yield "serial-159-bits", issue(serial=(1 << 159) - 1)

    for kind in kinds:
        yield "key-%s-without-aki" % kind, issue(key_kind=kind, with_aki=False)
        yield "key-%s-issued-by-rsa" % kind, issue(key_kind=kind, issuer_kind="rsa")

    date_pairs = [
        (
            "1950-utctime",
            datetime.datetime(1950, 1, 1, tzinfo=UTC),
            datetime.datetime(1960, 6, 30, 12, tzinfo=UTC),
        ),
        (
            "1969-1970-edge",
            datetime.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime.datetime(1970, 1, 1, tzinfo=UTC),
        ),
        (
            "2000-leap-day",
            datetime.datetime(2000, 2, 29, tzinfo=UTC),
            datetime.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        ),
        (
            "2049-utctime-end",
            datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime.datetime(2050, 1, 1, tzinfo=UTC),
        ),
        (
            "2050-generalized",
            datetime.datetime(2050, 1, 1, tzinfo=UTC),
            datetime.datetime(2100, 3, 1, tzinfo=UTC),
        ),
        (
            "9999-end",
            datetime.datetime(2024, 1, 1, tzinfo=UTC),
            datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        ),
    ]
    for label, not_before, not_after in date_pairs:
        yield "dates-%s" % label, issue(not_before=not_before, not_after=not_after)

    yield "long-subject", issue(subject=LONG_SUBJECT, key_kind="rsa")
    yield "unicode-subject", issue(subject=UNICODE_SUBJECT)
    yield "multi-valued-rdn", issue(subject=MULTI_VALUED_SUBJECT)
    yield "ca-with-basic-constraints", issue(is_ca=True, key_kind="ec384")


BUILDER_CASES = list(builder_cases())


@pytest.mark.parametrize(
    "certificate", [case[1] for case in BUILDER_CASES], ids=[case[0] for case in BUILDER_CASES]
)
def test_parse_matches_cryptography(certificate):
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert_matches_cryptography(der)


def test_parse_twenty_octet_serial():
    serial = serial_with_high_bit(20, 99)
    der = build_der(serial=der_integer(serial))
    parsed = assert_matches_cryptography(der)
    assert parsed.serial_number == serial
    assert len(der_integer(serial)) == 2 + 21


def test_parse_accepts_bytearray():
    der = issue().public_bytes(serialization.Encoding.DER)
    assert x509.parse_certificate(bytearray(der)) == x509.parse_certificate(der)


if given is not None:

    @settings(max_examples=60, deadline=None)
    @given(
        serial=st.integers(min_value=1, max_value=(1 << 159) - 1),
        not_before=st.datetimes(
            min_value=datetime.datetime(1950, 1, 1), max_value=datetime.datetime(9999, 12, 31)
        ),
        not_after=st.datetimes(
            min_value=datetime.datetime(1950, 1, 1), max_value=datetime.datetime(9999, 12, 31)
        ),
        # cryptography limits a commonName to 64 UTF-8 octets.
        common_name=st.text(
            alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64
        )
        .map(lambda text: text.encode("utf-8")[:64].decode("utf-8", "ignore"))
        .filter(bool),
        with_aki=st.booleans(),
    )
    def test_parse_property_random_certificates(
        serial, not_before, not_after, common_name, with_aki
    ):
        subject = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        # cryptography's builder requires not_after >= not_before.
        first, last = sorted([not_before, not_after])
        certificate = issue(
            serial=serial,
            not_before=first.replace(microsecond=0, tzinfo=UTC),
            not_after=last.replace(microsecond=0, tzinfo=UTC),
            subject=subject,
            with_aki=with_aki,
        )
        assert_matches_cryptography(certificate.public_bytes(serialization.Encoding.DER))

    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=400))
    def test_parse_garbage_raises_certificate_error(data):
        try:
            x509.parse_certificate(data)
        except x509.CertificateError:
            pass

    @settings(max_examples=300, deadline=None)
    @given(value=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
    def test_decode_garbage_raises_certificate_error(value):
        try:
            x509.decode_cert_raw(value)
        except x509.CertificateError:
            pass

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_parse_property_random_certificates():
        pass


# ---------------------------------------------------------------------------
# Hand-built DER: what cryptography accepts, this reader accepts
# ---------------------------------------------------------------------------


def attribute_name(tag: int, value: bytes) -> bytes:
    return der_sequence(der_set(der_sequence(der_oid("2.5.4.3"), tlv(tag, value))))


def attribute_name_raw(value: bytes) -> bytes:
    return der_sequence(der_set(der_sequence(der_oid("2.5.4.3"), value)))


def oid_name(oid_content: bytes) -> bytes:
    return der_sequence(der_set(der_sequence(tlv(0x06, oid_content), tlv(0x0C, b"a"))))


AKI_VALUE = der_sequence(tlv(0x80, b"\x01\x02\x03"))

DER_CASES = [
    ("baseline", build_der()),
    # serial numbers
    ("serial-zero", build_der(serial=der_integer(0))),
    ("serial-minus-one", build_der(serial=der_integer(-1))),
    ("serial-minus-255", build_der(serial=der_integer(-255))),
    ("serial-0x80", build_der(serial=der_integer(0x80))),
    ("serial-40-octets", build_der(serial=der_integer(1 << 319))),
    ("serial-130-octets", build_der(serial=der_integer(1 << 1039))),
    ("serial-redundant-zero", build_der(serial=tlv(0x02, b"\x00\x01"))),
    ("serial-redundant-ff", build_der(serial=tlv(0x02, b"\xff\xff"))),
    ("serial-empty", build_der(serial=tlv(0x02, b""))),
    ("serial-enumerated", build_der(serial=tlv(0x0A, b"\x05"))),
    # dates
    ("utctime-1950", build_der(not_before=utc_time("500101000000Z"))),
    ("utctime-1969", build_der(not_before=utc_time("691231235959Z"))),
    ("utctime-2049", build_der(not_after=utc_time("491231235959Z"))),
    ("generalized-2050", build_der(not_after=generalized_time("20500101000000Z"))),
    ("generalized-2030", build_der(not_after=generalized_time("20300101000000Z"))),
    ("generalized-1949", build_der(not_before=generalized_time("19491231235959Z"))),
    ("generalized-0001", build_der(not_before=generalized_time("00010101000000Z"))),
    ("generalized-9999", build_der(not_after=generalized_time("99991231235959Z"))),
    ("generalized-2000-02-29", build_der(not_after=generalized_time("20000229000000Z"))),
    ("generalized-2100-02-29", build_der(not_after=generalized_time("21000229000000Z"))),
    ("utctime-2024-02-29", build_der(not_before=utc_time("240229000000Z"))),
    ("utctime-2023-02-29", build_der(not_before=utc_time("230229000000Z"))),
    ("utctime-month-13", build_der(not_before=utc_time("241301000000Z"))),
    ("utctime-month-0", build_der(not_before=utc_time("240001000000Z"))),
    ("utctime-day-0", build_der(not_before=utc_time("240100000000Z"))),
    ("utctime-hour-24", build_der(not_before=utc_time("240101240000Z"))),
    ("utctime-minute-60", build_der(not_before=utc_time("240101006000Z"))),
    ("utctime-second-60", build_der(not_before=utc_time("240101000060Z"))),
    ("utctime-no-seconds", build_der(not_before=utc_time("2401020304Z"))),
    ("utctime-offset", build_der(not_before=utc_time("240102030405+0100"))),
    ("utctime-no-z", build_der(not_before=utc_time("240102030405"))),
    ("utctime-space", build_der(not_before=utc_time("24010203040 Z"))),
    ("utctime-plus-digit", build_der(not_before=utc_time("2401020304+5Z"))),
    ("generalized-fraction", build_der(not_after=generalized_time("20500101000000.5Z"))),
    ("generalized-no-z", build_der(not_after=generalized_time("20500101000000"))),
    ("time-as-octet-string", build_der(not_after=tlv(0x04, b"250102030405Z"))),
    (
        "not-before-after-not-after",
        build_der(not_before=utc_time("300101000000Z"), not_after=utc_time("200101000000Z")),
    ),
    # version
    ("version-absent", build_der(version=b"")),
    ("version-v1-explicit", build_der(version=tlv(0xA0, der_integer(0)))),
    ("version-v2", build_der(version=tlv(0xA0, der_integer(1)))),
    ("version-4", build_der(version=tlv(0xA0, der_integer(3)))),
    ("version-negative", build_der(version=tlv(0xA0, der_integer(-1)))),
    ("version-two-integers", build_der(version=tlv(0xA0, der_integer(2) + der_integer(2)))),
    # extensions and unique identifiers
    ("extension-aki", build_der(extensions=[der_extension(AKI_OID, AKI_VALUE)])),
    ("extension-critical-true", build_der(extensions=[der_extension(AKI_OID, AKI_VALUE, b"\xff")])),
    (
        "extension-critical-false",
        build_der(extensions=[der_extension(AKI_OID, AKI_VALUE, b"\x00")]),
    ),
    ("extension-critical-01", build_der(extensions=[der_extension(AKI_OID, AKI_VALUE, b"\x01")])),
    ("extension-duplicate", build_der(extensions=[der_extension(AKI_OID, AKI_VALUE)] * 2)),
    ("extension-garbage-value", build_der(extensions=[der_extension(AKI_OID, b"\xff\xff")])),
    ("extensions-empty", build_der(extensions=[])),
    ("extension-without-value", build_der(extensions=[der_sequence(der_oid(AKI_OID))])),
    (
        "extension-two-values",
        build_der(extensions=[der_sequence(der_oid(AKI_OID), tlv(4, b""), tlv(4, b""))]),
    ),
    ("extensions-in-v1", build_der(version=b"", extensions=[der_extension("1.2.3.4", b"zz")])),
    ("issuer-unique-id", build_der(tbs_tail=tlv(0x81, b"\x00\x01"))),
    ("both-unique-ids", build_der(tbs_tail=tlv(0x81, b"\x00\x01") + tlv(0x82, b"\x00\x01"))),
    ("unique-ids-swapped", build_der(tbs_tail=tlv(0x82, b"\x00\x01") + tlv(0x81, b"\x00\x01"))),
    ("unique-id-bad-padding", build_der(tbs_tail=tlv(0x81, b"\x01\x01"))),
    ("tbs-unknown-tail", build_der(tbs_tail=tlv(0x84, b"\x00"))),
    ("tbs-high-tag-tail", build_der(tbs_tail=b"\x9f\x1f\x01\x00")),
    # signature BIT STRING
    ("signature-seven-unused-bits", build_der(signature=tlv(0x03, b"\x07\x80"))),
    ("signature-nonzero-unused-bits", build_der(signature=tlv(0x03, b"\x01\x01"))),
    ("signature-eight-unused-bits", build_der(signature=tlv(0x03, b"\x08\x00"))),
    ("signature-empty-bit-string", build_der(signature=tlv(0x03, b""))),
    ("signature-zero-length-bits", build_der(signature=tlv(0x03, b"\x00"))),
    ("signature-unused-bits-no-octets", build_der(signature=tlv(0x03, b"\x01"))),
    ("signature-octet-string", build_der(signature=tlv(0x04, b"\x00"))),
    # names
    ("name-empty", build_der(issuer=der_sequence())),
    ("name-empty-rdn", build_der(issuer=der_sequence(der_set()))),
    (
        "name-rdn-sorted",
        build_der(
            issuer=der_sequence(
                der_set(
                    der_sequence(der_oid("2.5.4.3"), tlv(0x0C, b"a")),
                    der_sequence(der_oid("2.5.4.6"), tlv(0x13, b"DE")),
                )
            )
        ),
    ),
    (
        "name-rdn-unsorted",
        build_der(
            issuer=der_sequence(
                der_set(
                    der_sequence(der_oid("2.5.4.6"), tlv(0x13, b"DE")),
                    der_sequence(der_oid("2.5.4.3"), tlv(0x0C, b"a")),
                )
            )
        ),
    ),
    (
        "name-rdn-duplicate",
        build_der(
            issuer=der_sequence(der_set(*[der_sequence(der_oid("2.5.4.3"), tlv(0x0C, b"a"))] * 2))
        ),
    ),
    (
        "name-rdn-as-sequence",
        build_der(
            issuer=der_sequence(der_sequence(der_sequence(der_oid("2.5.4.3"), tlv(0x0C, b"a"))))
        ),
    ),
    (
        "name-attribute-three-parts",
        build_der(
            issuer=der_sequence(
                der_set(der_sequence(der_oid("2.5.4.3"), tlv(0x0C, b"a"), tlv(0x0C, b"b")))
            )
        ),
    ),
    (
        "name-attribute-no-value",
        build_der(issuer=der_sequence(der_set(der_sequence(der_oid("2.5.4.3"))))),
    ),
    (
        "name-attribute-type-integer",
        build_der(issuer=der_sequence(der_set(der_sequence(der_integer(1), tlv(0x0C, b"a"))))),
    ),
    ("printable-all-allowed", build_der(issuer=attribute_name(0x13, b"Az09 '()+,-./:=?"))),
    ("printable-at-sign", build_der(issuer=attribute_name(0x13, b"a@b"))),
    ("printable-asterisk", build_der(issuer=attribute_name(0x13, b"*.example"))),
    ("printable-underscore", build_der(issuer=attribute_name(0x13, b"a_b"))),
    ("printable-empty", build_der(issuer=attribute_name(0x13, b""))),
    ("printable-constructed", build_der(issuer=attribute_name(0x33, tlv(0x13, b"a")))),
    ("utf8-invalid", build_der(issuer=attribute_name(0x0C, b"\xff"))),
    ("ia5-eight-bit", build_der(issuer=attribute_name(0x16, b"\xff"))),
    ("teletex-eight-bit", build_der(issuer=attribute_name(0x14, b"\xff"))),
    ("numeric-letters", build_der(issuer=attribute_name(0x12, b"ab"))),
    ("bmp-valid", build_der(issuer=attribute_name(0x1E, b"\x00a\x00b"))),
    ("bmp-odd-length", build_der(issuer=attribute_name(0x1E, b"\x00a\x00"))),
    ("bmp-lone-surrogate", build_der(issuer=attribute_name(0x1E, b"\xd8\x00"))),
    ("bmp-surrogate-pair", build_der(issuer=attribute_name(0x1E, b"\xd8\x3d\xde\x00"))),
    ("universal-valid", build_der(issuer=attribute_name(0x1C, b"\x00\x00\x00a"))),
    ("universal-bad-length", build_der(issuer=attribute_name(0x1C, b"\x00\x00\x00"))),
    ("universal-above-unicode", build_der(issuer=attribute_name(0x1C, b"\x00\x11\x00\x00"))),
    ("universal-surrogate", build_der(issuer=attribute_name(0x1C, b"\x00\x00\xd8\x00"))),
    ("attribute-value-sequence", build_der(issuer=attribute_name(0x30, der_integer(1)))),
    ("attribute-value-bad-inner", build_der(issuer=attribute_name(0x30, b"\x02\x05"))),
    (
        "oid-redundant-digit",
        build_der(
            issuer=der_sequence(
                der_set(der_sequence(tlv(0x06, b"\x55\x04\x80\x03"), tlv(0x0C, b"a")))
            )
        ),
    ),
    (
        "oid-empty",
        build_der(issuer=der_sequence(der_set(der_sequence(tlv(0x06, b""), tlv(0x0C, b"a"))))),
    ),
    (
        "oid-truncated-arc",
        build_der(
            issuer=der_sequence(der_set(der_sequence(tlv(0x06, b"\x55\x04\x83"), tlv(0x0C, b"a"))))
        ),
    ),
    ("oid-63-octets", build_der(issuer=oid_name(b"\x2a" + b"\x01" * 62))),
    ("oid-64-octets", build_der(issuer=oid_name(b"\x2a" + b"\x01" * 63))),
    ("oid-arc-128-bits", build_der(issuer=oid_name(b"\x2a" + base128((1 << 128) - 1)))),
    ("oid-arc-129-bits", build_der(issuer=oid_name(b"\x2a" + base128(1 << 128)))),
    ("oid-first-arc-129-bits", build_der(issuer=oid_name(base128(1 << 128)))),
    (
        "high-tag-number-32-bits",
        build_der(issuer=attribute_name_raw(b"\x9f\x8f\xff\xff\xff\x7f\x00")),
    ),
    (
        "high-tag-number-33-bits",
        build_der(issuer=attribute_name_raw(b"\x9f\x90\x80\x80\x80\x00\x00")),
    ),
    ("high-tag-number-31", build_der(issuer=attribute_name_raw(b"\x9f\x1f\x00"))),
    ("high-tag-number-30", build_der(issuer=attribute_name_raw(b"\x9f\x1e\x00"))),
    # algorithm identifiers
    (
        "rsa-signature-no-parameters",
        build_der(algorithm=der_sequence(der_oid("1.2.840.113549.1.1.11"))),
    ),
    (
        "rsa-signature-null",
        build_der(algorithm=der_sequence(der_oid("1.2.840.113549.1.1.11"), tlv(5, b""))),
    ),
    (
        "rsa-signature-integer",
        build_der(algorithm=der_sequence(der_oid("1.2.840.113549.1.1.11"), der_integer(1))),
    ),
    (
        "rsa-signature-null-with-content",
        build_der(algorithm=der_sequence(der_oid("1.2.840.113549.1.1.11"), tlv(5, b"\x00"))),
    ),
    (
        "ecdsa-signature-null",
        build_der(algorithm=der_sequence(der_oid("1.2.840.10045.4.3.2"), tlv(5, b""))),
    ),
    (
        "ecdsa-sha1-null",
        build_der(algorithm=der_sequence(der_oid("1.2.840.10045.4.1"), tlv(5, b""))),
    ),
    (
        "ed25519-signature-null",
        build_der(algorithm=der_sequence(der_oid("1.3.101.112"), tlv(5, b""))),
    ),
    ("pss-no-parameters", build_der(algorithm=der_sequence(der_oid("1.2.840.113549.1.1.10")))),
    (
        "pss-integer",
        build_der(algorithm=der_sequence(der_oid("1.2.840.113549.1.1.10"), der_integer(1))),
    ),
    (
        "unknown-algorithm-parameter",
        build_der(algorithm=der_sequence(der_oid("1.2.3.4"), der_integer(1))),
    ),
    (
        "unknown-algorithm-two-parameters",
        build_der(algorithm=der_sequence(der_oid("1.2.3.4"), der_integer(1), der_integer(1))),
    ),
    ("algorithm-empty", build_der(algorithm=der_sequence())),
    (
        "spki-ec-no-parameters",
        build_der(
            spki=der_sequence(der_sequence(der_oid("1.2.840.10045.2.1")), tlv(3, b"\x00\x01"))
        ),
    ),
    (
        "spki-ec-integer-parameter",
        build_der(
            spki=der_sequence(
                der_sequence(der_oid("1.2.840.10045.2.1"), der_integer(1)), tlv(3, b"\x00\x01")
            )
        ),
    ),
    (
        "spki-ec-implicit-curve",
        build_der(
            spki=der_sequence(
                der_sequence(der_oid("1.2.840.10045.2.1"), tlv(5, b"")), tlv(3, b"\x00\x01")
            )
        ),
    ),
    (
        "spki-rsa-no-parameters",
        build_der(
            spki=der_sequence(der_sequence(der_oid("1.2.840.113549.1.1.1")), tlv(3, b"\x00\x01"))
        ),
    ),
    (
        "spki-rsa-integer-parameter",
        build_der(
            spki=der_sequence(
                der_sequence(der_oid("1.2.840.113549.1.1.1"), der_integer(1)), tlv(3, b"\x00\x01")
            )
        ),
    ),
    (
        "spki-unknown-algorithm",
        build_der(spki=der_sequence(der_sequence(der_oid("1.2.3.4")), tlv(3, b"\x00\x01\x02"))),
    ),
    (
        "spki-key-octet-string",
        build_der(spki=der_sequence(der_sequence(der_oid("1.2.3.4")), tlv(4, b"\x00\x01"))),
    ),
    (
        "spki-three-parts",
        build_der(
            spki=der_sequence(der_sequence(der_oid("1.2.3.4")), tlv(3, b"\x00"), tlv(3, b"\x00"))
        ),
    ),
]


def cryptography_loads(der: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cx509.load_der_x509_certificate(der)
        except (ValueError, cx509.InvalidVersion):
            return False
    return True


@pytest.mark.parametrize(
    "der", [case[1] for case in DER_CASES], ids=[case[0] for case in DER_CASES]
)
def test_parse_agrees_with_cryptography(der):
    assert_load_matches_parse(der)
    accepted = cryptography_loads(der)
    if accepted:
        parsed = x509.parse_certificate(der)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert parsed.serial_number == cx509.load_der_x509_certificate(der).serial_number
    else:
        with pytest.raises(x509.CertificateError):
            x509.parse_certificate(der)


@pytest.mark.parametrize(
    "not_before, not_after, expected",
    [
        (utc_time("500101000000Z"), utc_time("491231235959Z"), (-631152000, 2524607999)),
        (utc_time("691231235959Z"), utc_time("700101000000Z"), (-1, 0)),
        (
            generalized_time("20500101000000Z"),
            generalized_time("99991231235959Z"),
            (2524608000, 253402300799),
        ),
        (
            generalized_time("00010101000000Z"),
            utc_time("250102030405Z"),
            (-62135596800, 1735787045),
        ),
        (
            generalized_time("00000229000000Z"),
            utc_time("250102030405Z"),
            (-62162121600, 1735787045),
        ),
    ],
)
def test_parse_dates_epoch_values(not_before, not_after, expected):
    der = build_der(not_before=not_before, not_after=not_after)
    parsed = x509.parse_certificate(der)
    assert (parsed.not_before, parsed.not_after) == expected
    loaded = x509.load_certificate(der)
    assert (loaded.not_before, loaded.not_after) == expected


def test_load_uses_selected_reader(reader):
    loaded = x509.load_certificate(build_der())
    if reader == "cryptography":
        assert isinstance(loaded, x509.CryptographyCertificate)
    else:
        assert isinstance(loaded, x509.Certificate)
    assert loaded.serial_number == 0x1234


@pytest.mark.parametrize("serial", [0, -1, -0x1234])
def test_load_non_positive_serial_without_warning(serial):
    der = build_der(serial=der_integer(serial))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = x509.load_certificate(der)
    assert isinstance(loaded, x509.Certificate)
    assert loaded.serial_number == serial


def test_pure_reader_env_disables_cryptography():
    code = (
        "from ansible_collections.acmeops.housekeeping.plugins.module_utils._acmehk import x509\n"
        "print(x509.cryptography_in_use())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    env[x509.PURE_READER_ENV] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_cert_dates_year_zero():
    der = build_der(not_before=generalized_time("00000101000000Z"))
    assert x509.parse_certificate(der).not_before == -62167219200
    assert x509.load_certificate(der).not_before == -62167219200
    assert x509.cert_dates(b64(der)) == (0, 0)
    assert x509.cert_serial_decimal(b64(der)) == 0x1234


# ---------------------------------------------------------------------------
# Malformed DER
# ---------------------------------------------------------------------------


def test_parse_rejects_every_truncation():
    der = issue(key_kind="rsa").public_bytes(serialization.Encoding.DER)
    for length in range(len(der)):
        with pytest.raises(x509.CertificateError):
            x509.parse_certificate(der[:length])


def test_parse_rejects_trailing_data():
    der = build_der()
    with pytest.raises(x509.CertificateError, match="trailing"):
        x509.parse_certificate(der + b"\x00")
    with pytest.raises(x509.CertificateError, match="trailing"):
        x509.parse_certificate(der + der)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "missing"),
        (b"\x30", "length of certificate is missing"),
        (b"\x31\x03\x02\x01\x01", "tag 0x31"),
        (b"\x30\x84\xff\xff\xff\xff", "declares 4294967295 content octets"),
        (b"\x30\x85\x01\x00\x00\x00\x00", "more than 4"),
        (b"\x30\x80\x02\x01\x01\x00\x00", "indefinite"),
        (b"\x30\x81\x03\x02\x01\x01", "short form"),
        (b"\x30\x82\x00\x83" + b"\x00" * 0x83, "leading zero"),
        (b"\x1f\x80\x01\x00", "leading zero digit"),
        (b"\x1f\x05\x00", "below 31"),
        (b"\x1f", "truncated"),
        (b"\x30\x03\x02\x01", "declares 3 content octets but only 2 remain"),
        (b"garbage that is not DER", "declares 97 content octets"),
        (b"\x04\x00", "tag 0x04, expected 0x30"),
    ],
)
def test_parse_rejects_malformed_der(data, message):
    with pytest.raises(x509.CertificateError, match=message):
        x509.parse_certificate(data)


def test_parse_rejects_non_bytes():
    with pytest.raises(x509.CertificateError, match="expected DER bytes, got str"):
        x509.parse_certificate(b64(build_der()))


def test_parse_octet_changes_match_cryptography():
    """Change each octet of a real certificate and compare acceptance with cryptography."""
    der = issue(key_kind="ec256", subject=LONG_SUBJECT).public_bytes(serialization.Encoding.DER)
    generator = random.Random(20240601)
    mismatches = []
    for position in range(len(der)):
        for value in (der[position] ^ 0x01, der[position] ^ 0x80, generator.randrange(256)):
            mutated = der[:position] + bytes([value]) + der[position + 1 :]
            assert_load_matches_parse(mutated)
            try:
                x509.parse_certificate(mutated)
                accepted = True
            except x509.CertificateError:
                accepted = False
            if accepted != cryptography_loads(mutated):
                mismatches.append((position, der[position], value, accepted))
    assert mismatches == []


def test_parse_random_edits_match_cryptography():
    """Replace, delete and insert octets at random and compare acceptance with cryptography."""
    originals = [
        issue(key_kind="rsa", subject=UNICODE_SUBJECT, issuer_name=LONG_SUBJECT).public_bytes(
            serialization.Encoding.DER
        )
    ] + [der for _case_id, der in DER_CASES if cryptography_loads(der)]
    generator = random.Random(1)
    mismatches = []
    accepted = 0
    for _attempt in range(4000):
        mutated = bytearray(generator.choice(originals))
        for _edit in range(generator.choice([1, 1, 2, 3])):
            position = generator.randrange(len(mutated))
            operation = generator.random()
            if operation < 0.6:
                mutated[position] = generator.randrange(256)
            elif operation < 0.8:
                del mutated[position]
            else:
                mutated.insert(position, generator.randrange(256))
        assert_load_matches_parse(bytes(mutated))
        expected = cryptography_loads(bytes(mutated))
        accepted += expected
        try:
            x509.parse_certificate(bytes(mutated))
            actual = True
        except x509.CertificateError:
            actual = False
        if actual != expected:
            mismatches.append(bytes(mutated).hex())
    assert mismatches == []
    assert 300 < accepted < 3700


# ---------------------------------------------------------------------------
# The cert_raw column
# ---------------------------------------------------------------------------


def issue_with_one_padding_character() -> cx509.Certificate:
    """Issue a certificate whose base64 form ends in exactly one "=".

    ECDSA signatures vary in length, so signing again changes the DER length.
    """
    while True:
        certificate = issue(serial=0x00FF12, key_kind="ec256")
        if len(certificate.public_bytes(serialization.Encoding.DER)) % 3 == 2:
            return certificate


CERTIFICATE = issue_with_one_padding_character()
CERTIFICATE_DER = CERTIFICATE.public_bytes(serialization.Encoding.DER)
OTHER_DER = issue(serial=99).public_bytes(serialization.Encoding.DER)
STANDARD = b64(CERTIFICATE_DER)
URL_SAFE = base64.urlsafe_b64encode(CERTIFICATE_DER).decode("ascii")


def with_non_zero_trailing_bits(text: str) -> str:
    """Flip the lowest bit of the last data character before the padding."""
    body = text.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(body[-1]) ^ 1]
    return body[:-1] + last + text[len(body) :]


CERT_RAW_CASES = [
    ("standard", STANDARD, True),
    ("url-safe", URL_SAFE, True),
    ("standard-unpadded", STANDARD.rstrip("="), True),
    ("url-safe-unpadded", URL_SAFE.rstrip("="), True),
    ("bytes", STANDARD.encode("ascii"), True),
    ("bytearray-url-safe", bytearray(URL_SAFE.encode("ascii")), True),
    ("two-spaces-each-side", "  " + STANDARD + "  ", True),
    ("four-spaces-inside", STANDARD[:100] + "    " + STANDARD[100:], True),
    ("four-spaces-inside-unpadded", STANDARD[:100] + "    " + STANDARD.rstrip("=")[100:], True),
    ("four-no-break-spaces", STANDARD + "\u00a0" * 4, True),
    ("four-ideographic-spaces-unpadded", STANDARD.rstrip("=") + "\u3000" * 4, True),
    # Padding counts octets for bytes, and U+00A0 takes two octets in UTF-8.
    ("two-no-break-spaces-as-bytes", (STANDARD + "\u00a0" * 2).encode("utf-8"), True),
    ("two-no-break-spaces", STANDARD + "\u00a0" * 2, False),
    ("one-space-inside-unpadded", STANDARD[:100] + " " + STANDARD.rstrip("=")[100:], False),
    ("one-ideographic-space-unpadded", STANDARD.rstrip("=") + "\u3000", False),
    ("one-space-after", STANDARD + " ", False),
    ("newline-after", STANDARD + "\n", False),
    ("crlf-after", STANDARD + "\r\n", False),
    ("tab-each-side", "\t" + STANDARD + "\t", False),
    ("one-space-inside", STANDARD[:100] + " " + STANDARD[100:], False),
    ("wrapped-64", "\n".join(STANDARD[i : i + 64] for i in range(0, len(STANDARD), 64)), False),
    ("wrapped-76", "\n".join(STANDARD[i : i + 76] for i in range(0, len(STANDARD), 76)), False),
    ("pem-armour", pem(CERTIFICATE), False),
    ("pem-body-lines-joined", "".join(pem(CERTIFICATE).splitlines()[1:-1]), True),
    ("chain", b64(CERTIFICATE_DER + OTHER_DER), False),
    ("trailing-zero-octet", b64(CERTIFICATE_DER + b"\x00"), False),
    ("trailing-three-octets", b64(CERTIFICATE_DER + b"\x00\x00\x00"), False),
    ("extra-padding", STANDARD + "==", False),
    ("non-zero-trailing-bits", with_non_zero_trailing_bits(STANDARD), False),
    ("invalid-character", STANDARD[:10] + "." + STANDARD[11:], False),
    ("file-separator-not-white-space", STANDARD.rstrip("=") + "\x1c", False),
    ("zero-width-space", STANDARD.rstrip("=") + "\u200b", False),
    ("non-utf8-bytes", STANDARD.encode("ascii") + b"\xff\xff\xff\xff", False),
    ("der-bytes", CERTIFICATE_DER, False),
    ("empty-string", "", False),
    ("white-space-only", "    ", False),
    ("empty-bytes", b"", False),
    ("none", None, False),
    ("integer", 5, False),
    ("list", [STANDARD], False),
    ("memoryview", memoryview(STANDARD.encode("ascii")), False),
]


@pytest.mark.parametrize(
    "value, accepted",
    [(case[1], case[2]) for case in CERT_RAW_CASES],
    ids=[case[0] for case in CERT_RAW_CASES],
)
def test_decode_cert_raw_rules(value, accepted):
    if accepted:
        assert x509.decode_cert_raw(value) == CERTIFICATE_DER
        assert x509.cert_dates(value) == (1704164645, 1735787045)
        assert x509.cert_serial_decimal(value) == 0xFF12
    else:
        with pytest.raises(x509.CertificateError):
            x509.parse_certificate(x509.decode_cert_raw(value))
        assert x509.cert_dates(value) == (0, 0)
        assert x509.cert_serial_decimal(value) == ""


def test_decode_cert_raw_error_messages():
    with pytest.raises(x509.CertificateError, match="expected str or bytes, got NoneType"):
        x509.decode_cert_raw(None)
    with pytest.raises(x509.CertificateError, match="value is empty"):
        x509.decode_cert_raw("")
    with pytest.raises(x509.CertificateError, match="not UTF-8"):
        x509.decode_cert_raw(b"\xff")
    with pytest.raises(x509.CertificateError, match="non-zero trailing bits"):
        x509.decode_cert_raw(with_non_zero_trailing_bits(STANDARD))


def upstream_dates(value) -> Tuple[int, int]:
    return upstream_helper.cert_dates_get(UPSTREAM_LOGGER, value)


def upstream_report_serial(value):
    return UpstreamHousekeeping._cert_serial_add(UPSTREAM_SELF, value)


@requires_upstream
@pytest.mark.parametrize(
    "value", [case[1] for case in CERT_RAW_CASES], ids=[case[0] for case in CERT_RAW_CASES]
)
def test_cert_raw_rules_match_upstream(value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert x509.cert_dates(value) == upstream_dates(value)
        assert x509.cert_serial_decimal(value) == upstream_report_serial(value)


@requires_upstream
def test_cert_raw_mutations_match_upstream():
    """Insert white space, padding and other characters at random and compare with upstream."""
    ders = [
        CERTIFICATE_DER,
        OTHER_DER,
        issue(key_kind="rsa").public_bytes(serialization.Encoding.DER),
    ]
    insertions = [
        " ",
        "\n",
        "\t",
        "\r",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x85",
        "\u00a0",
        "\u2028",
        "\u3000",
        "\u200b",
        "=",
        "==",
        "-",
        "_",
        "+",
        "/",
        "A",
        ".",
        "\x00",
        "é",
        "\ud800",
    ]
    generator = random.Random(7)
    accepted = 0
    for _attempt in range(1500):
        der = generator.choice(ders)
        encode = generator.choice([base64.b64encode, base64.urlsafe_b64encode])
        text = encode(der).decode("ascii")
        if generator.random() < 0.5:
            text = text.rstrip("=")
        for _insertion in range(generator.randint(0, 4)):
            position = generator.randint(0, len(text))
            text = text[:position] + generator.choice(insertions) + text[position:]
        value = text.encode("utf-8", "surrogatepass") if generator.random() < 0.2 else text
        expected_dates = upstream_dates(value)
        assert x509.cert_dates(value) == expected_dates, repr(value)
        assert x509.cert_serial_decimal(value) == upstream_report_serial(value), repr(value)
        accepted += expected_dates != (0, 0)
    # Both outcomes must occur often enough for the comparison to mean something.
    assert 200 < accepted < 1300


# ---------------------------------------------------------------------------
# Values that dates_update() and the report derive
# ---------------------------------------------------------------------------

SERIAL_HEX_CASES = [
    (1, "01"),
    (0x0F, "0f"),
    (0x80, "80"),
    (0xFF, "ff"),
    (0x100, "0100"),
    (0xFF12, "ff12"),
    ((1 << 159) - 1, "7f" + "ff" * 19),
    (serial_with_high_bit(20, 5), format(serial_with_high_bit(20, 5), "x")),
    (1 << 1039, "80" + "00" * 129),
    (0, "00"),
    # str.zfill() pads after the minus sign, as acme2certifier formats it.
    (-1, "-1"),
    (-0xF, "-f"),
    (-255, "-0ff"),
    (-256, "-100"),
    (-(1 << 70), "-0400000000000000000"),
]
SERIAL_CASES = [case[0] for case in SERIAL_HEX_CASES]
SERIAL_IDS = [
    expected if len(expected) <= 20 else "%d-octets" % (len(expected) // 2)
    for _serial, expected in SERIAL_HEX_CASES
]


@pytest.mark.parametrize("serial, expected", SERIAL_HEX_CASES, ids=SERIAL_IDS)
def test_serial_hex_format(serial, expected):
    value = b64(build_der(serial=der_integer(serial)))
    assert x509.serial_hex(value) == expected
    assert x509.cert_serial_decimal(value) == serial


@requires_upstream
@pytest.mark.parametrize("serial", SERIAL_CASES, ids=SERIAL_IDS)
def test_serial_values_match_upstream(serial):
    value = b64(build_der(serial=der_integer(serial)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert x509.serial_hex(value) == upstream_helper.cert_serial_get(
            UPSTREAM_LOGGER, value, hexformat=True
        )
        assert x509.cert_serial_decimal(value) == upstream_report_serial(value)
        assert x509.cert_dates(value) == upstream_dates(value)


def test_serial_hex_rejects_unreadable_cert_raw():
    with pytest.raises(x509.CertificateError):
        x509.serial_hex(STANDARD + "\n")


DATE_CASES = [
    ("utctime-1950", utc_time("500101000000Z"), utc_time("491231235959Z")),
    ("utctime-1969", utc_time("691231235959Z"), utc_time("700101000000Z")),
    (
        "generalized-before-2050",
        generalized_time("20300101000000Z"),
        generalized_time("20400101000000Z"),
    ),
    (
        "generalized-2050-9999",
        generalized_time("20500101000000Z"),
        generalized_time("99991231235959Z"),
    ),
    ("generalized-1949", generalized_time("19491231235959Z"), utc_time("250102030405Z")),
    ("generalized-0001", generalized_time("00010101000000Z"), utc_time("250102030405Z")),
    ("generalized-year-0-before", generalized_time("00000101000000Z"), utc_time("250102030405Z")),
    ("generalized-year-0-after", utc_time("250102030405Z"), generalized_time("00001231235959Z")),
    ("not-before-after-not-after", utc_time("300101000000Z"), utc_time("200101000000Z")),
]


@requires_upstream
@pytest.mark.parametrize(
    "not_before, not_after",
    [(case[1], case[2]) for case in DATE_CASES],
    ids=[case[0] for case in DATE_CASES],
)
def test_dates_match_upstream(not_before, not_after):
    value = b64(build_der(not_before=not_before, not_after=not_after))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert x509.cert_dates(value) == upstream_dates(value)
        assert x509.cert_serial_decimal(value) == upstream_report_serial(value)


@requires_upstream
@pytest.mark.parametrize(
    "der", [case[1] for case in DER_CASES], ids=[case[0] for case in DER_CASES]
)
def test_hand_built_der_matches_upstream(der):
    value = b64(der)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert x509.cert_dates(value) == upstream_dates(value)
        assert x509.cert_serial_decimal(value) == upstream_report_serial(value)


def aki_extension(value: bytes) -> List[bytes]:
    return [der_extension(AKI_OID, value)]


AKI_CASES = [
    ("no-extensions", None),
    ("key-identifier", aki_extension(der_sequence(tlv(0x80, b"\xab\x01")))),
    ("empty-key-identifier", aki_extension(der_sequence(tlv(0x80, b"")))),
    (
        "issuer-and-serial-only",
        aki_extension(der_sequence(tlv(0xA1, tlv(0xA4, der_name())), tlv(0x82, b"\x05"))),
    ),
    ("empty-sequence", aki_extension(der_sequence())),
    ("empty-extension-value", aki_extension(b"")),
    ("trailing-octets", aki_extension(der_sequence(tlv(0x80, b"\xab")) + b"\x00\x00")),
    ("garbage", aki_extension(b"\xff\xff")),
    ("octet-string-not-sequence", aki_extension(tlv(0x04, b"\xab"))),
    (
        "duplicate-extension",
        aki_extension(der_sequence(tlv(0x80, b"\x01")))
        + aki_extension(der_sequence(tlv(0x80, b"\x02"))),
    ),
    ("garbage-issuer", aki_extension(der_sequence(tlv(0x80, b"\x01"), tlv(0xA1, b"\xff")))),
    ("primitive-issuer", aki_extension(der_sequence(tlv(0x80, b"\x01"), tlv(0x81, b"\x01")))),
    ("fields-out-of-order", aki_extension(der_sequence(tlv(0x82, b"\x01"), tlv(0x80, b"\x01")))),
    ("unknown-field", aki_extension(der_sequence(tlv(0x80, b"\x01"), tlv(0x83, b"\x01")))),
    ("indefinite-length", aki_extension(b"\x30\x80\x80\x01\x0a\x00\x00")),
    (
        "other-extension-malformed",
        [der_extension("2.5.29.19", b"\xff")] + aki_extension(der_sequence(tlv(0x80, b"\x0a"))),
    ),
    ("critical-aki", [der_extension(AKI_OID, der_sequence(tlv(0x80, b"\x0b")), b"\xff")]),
]
# NOTE: pyasn1, which acme2certifier falls back to, also reads a constructed
# keyIdentifier and non-minimal lengths inside the AKI, but x509.aki_hex() rejects them.


def aki_cert_raw(extensions: Optional[List[bytes]]) -> str:
    return b64(build_der(extensions=extensions))


@pytest.mark.parametrize(
    "extensions, expected",
    [
        (None, None),
        (aki_extension(der_sequence(tlv(0x80, b"\xab\x01"))), "ab01"),
        (aki_extension(der_sequence(tlv(0x80, b""))), ""),
        (aki_extension(b""), None),
        (aki_extension(der_sequence(tlv(0x80, b"\xab")) + b"\x00"), "ab"),
        (
            aki_extension(der_sequence(tlv(0x80, b"\x01")))
            + aki_extension(der_sequence(tlv(0x80, b"\x02"))),
            "01",
        ),
    ],
)
def test_aki_hex_values(extensions, expected):
    assert x509.aki_hex(aki_cert_raw(extensions)) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (b"\xff\xff", "invalid DER"),
        (tlv(0x04, b"\xab"), "tag 0x04"),
        (der_sequence(tlv(0x82, b"\x01"), tlv(0x80, b"\x01")), "unexpected element with tag 0x80"),
    ],
)
def test_aki_hex_rejects_malformed_extension(value, message):
    with pytest.raises(x509.CertificateError, match=message):
        x509.aki_hex(aki_cert_raw(aki_extension(value)))


@requires_upstream
@pytest.mark.parametrize(
    "extensions", [case[1] for case in AKI_CASES], ids=[case[0] for case in AKI_CASES]
)
def test_aki_hex_matches_upstream(extensions):
    value = aki_cert_raw(extensions)
    try:
        expected = upstream_helper.cert_aki_get(UPSTREAM_LOGGER, value)
    except Exception:  # pylint: disable=broad-except
        # acme2certifier raises pyasn1 errors for a malformed AKI.
        with pytest.raises(x509.CertificateError):
            x509.aki_hex(value)
    else:
        assert x509.aki_hex(value) == expected


@requires_upstream
@pytest.mark.parametrize(
    "certificate", [case[1] for case in BUILDER_CASES], ids=[case[0] for case in BUILDER_CASES]
)
def test_builder_values_match_upstream(certificate):
    value = b64(certificate.public_bytes(serialization.Encoding.DER))
    assert x509.cert_dates(value) == upstream_dates(value)
    assert x509.cert_serial_decimal(value) == upstream_report_serial(value)
    assert x509.serial_hex(value) == upstream_helper.cert_serial_get(
        UPSTREAM_LOGGER, value, hexformat=True
    )
    assert x509.aki_hex(value) == upstream_helper.cert_aki_get(UPSTREAM_LOGGER, value)


# ---------------------------------------------------------------------------
# renewal_info from the cert column
# ---------------------------------------------------------------------------

CA_NAME = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "Housekeeping Test CA")])
CA_CERTIFICATE = issue(key_kind="ec384", subject=CA_NAME, is_ca=True)
RSA_CA_CERTIFICATE = issue(key_kind="rsa", subject=CA_NAME, is_ca=True)
LEAF = issue(key_kind="ec256", serial=0x00FF12, issuer_kind="ec384", issuer_name=CA_NAME)
RSA_LEAF = issue(
    key_kind="ed25519", serial=serial_with_high_bit(19, 3), issuer_kind="rsa", issuer_name=CA_NAME
)
CHAIN = pem(LEAF) + pem(CA_CERTIFICATE)
NEGATIVE_SERIAL_LEAF = der_to_pem(
    build_der(serial=der_integer(-255), issuer=CA_NAME.public_bytes())
)

RENEWAL_INFO_CASES = [
    ("chain", CHAIN),
    ("rsa-issuer", pem(RSA_LEAF) + pem(RSA_CA_CERTIFICATE)),
    ("three-blocks", CHAIN + pem(CA_CERTIFICATE)),
    ("crlf", CHAIN.replace("\n", "\r\n")),
    ("indented", "  " + CHAIN.replace("\n", "\n  ")),
    (
        "text-between-blocks",
        pem(LEAF) + "subject=CN = Housekeeping Test CA\n" + pem(CA_CERTIFICATE),
    ),
    ("no-newline-between-blocks", pem(LEAF).rstrip("\n") + pem(CA_CERTIFICATE)),
    ("negative-serial", NEGATIVE_SERIAL_LEAF + pem(CA_CERTIFICATE)),
    ("long-serial", der_to_pem(build_der(serial=der_integer(1 << 1039))) + pem(CA_CERTIFICATE)),
    ("unrelated-second-block", pem(LEAF) + pem(issue(subject=LONG_SUBJECT))),
    ("one-block", pem(LEAF)),
    ("empty", ""),
    ("no-pem", "not a certificate"),
    ("leading-blank-line", "\n" + CHAIN),
    ("leading-text", "subject=CN = leaf.example\n" + CHAIN),
    (
        "garbage-second-block",
        pem(LEAF) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ),
    ("blank-line-inside-block", pem(LEAF) + pem(CA_CERTIFICATE).replace("\n", "\n\n", 2)),
    (
        "header-inside-block",
        pem(LEAF) + pem(CA_CERTIFICATE).replace("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n\n", 1),
    ),
    (
        "mismatched-end-label",
        pem(LEAF) + pem(CA_CERTIFICATE).replace("END CERTIFICATE", "END X509 CERTIFICATE"),
    ),
    (
        "x509-certificate-label-only",
        pem(LEAF) + pem(CA_CERTIFICATE).replace("CERTIFICATE", "X509 CERTIFICATE"),
    ),
    (
        "key-before-certificate",
        pem(LEAF)
        + "-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        + "\n".join(pem(CA_CERTIFICATE).splitlines()[1:])
        + "\n",
    ),
    ("second-block-six-dashes", pem(LEAF) + pem(CA_CERTIFICATE).replace("-----END", "------END")),
]


def upstream_renewal_info(cert):
    return UpstreamCertificate._get_certificate_renewal_info(UPSTREAM_SELF, cert)


def test_renewal_info_of_chain():
    result = x509.renewal_info(CHAIN)
    name_hash = hashlib.sha256(LEAF.issuer.public_bytes()).hexdigest()
    key_hash = hashlib.sha256(public_key_bits(CA_CERTIFICATE)).hexdigest()
    assert result == name_hash + "0420" + key_hash + "020300ff12"


def test_renewal_info_caches_issuer():
    x509._load_pem_issuer.cache_clear()
    first = x509.renewal_info(CHAIN)
    assert x509.renewal_info(CHAIN) == first
    assert x509._load_pem_issuer.cache_info().hits == 1


def test_renewal_info_issuer_error_raised_every_time():
    broken = pem(LEAF) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    for _attempt in range(2):
        with pytest.raises(x509.CertificateError, match="certificate has tag 0x00"):
            x509.renewal_info(broken)


@pytest.mark.parametrize(
    "cert", [None, "", "no pem here", pem(LEAF), pem(LEAF).replace("\n", "\r\n")]
)
def test_renewal_info_without_issuer_is_none(cert):
    assert x509.renewal_info(cert) is None


@pytest.mark.parametrize(
    "cert",
    [
        "\n" + CHAIN,
        "subject=CN = leaf.example\n" + CHAIN,
        pem(LEAF) + "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"bytes are not text",
    ],
)
def test_renewal_info_rejects_unreadable_blocks(cert):
    with pytest.raises(x509.CertificateError):
        x509.renewal_info(cert)


@requires_upstream
@pytest.mark.parametrize(
    "cert", [case[1] for case in RENEWAL_INFO_CASES], ids=[case[0] for case in RENEWAL_INFO_CASES]
)
def test_renewal_info_matches_upstream(cert):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = upstream_renewal_info(cert)
    except ValueError:
        with pytest.raises(x509.CertificateError):
            x509.renewal_info(cert)
    else:
        assert x509.renewal_info(cert) == expected


@requires_upstream
def test_renewal_info_pem_edits_match_upstream():
    """Insert PEM markers, line breaks and other text at random and compare with upstream."""
    originals = [
        CHAIN,
        CHAIN.replace("\n", "\r\n"),
        pem(LEAF) + "subject=CN = Housekeeping Test CA\n" + pem(CA_CERTIFICATE),
    ]
    insertions = [
        "-",
        "-----",
        "\n",
        "\r",
        "\r\n",
        " ",
        "\t",
        ":",
        "\n\n",
        "=",
        "A",
        "-----BEGIN CERTIFICATE-----",
        "-----END CERTIFICATE-----",
        "-----BEGIN X-----",
        "-----END ",
        "\u2028",
        "\x1c",
        "\u00a0",
        "\x00",
        "Proc-Type: 4\n\n",
        "\x0b",
    ]
    generator = random.Random(3)
    outcomes = {"value": 0, "none": 0, "error": 0}
    for _attempt in range(2000):
        text = generator.choice(originals)
        for _edit in range(generator.randint(1, 3)):
            position = generator.randrange(len(text) + 1)
            if generator.random() < 0.25:
                text = text[:position] + text[position + 1 :]
            else:
                text = text[:position] + generator.choice(insertions) + text[position:]
        try:
            expected = upstream_renewal_info(text)
        except ValueError:
            outcomes["error"] += 1
            with pytest.raises(x509.CertificateError):
                x509.renewal_info(text)
        else:
            outcomes["none" if expected is None else "value"] += 1
            assert x509.renewal_info(text) == expected, repr(text)
    assert min(outcomes.values()) > 50, outcomes


@requires_upstream
def test_renewal_info_none_cert():
    with pytest.raises(TypeError):
        upstream_renewal_info(None)
    assert x509.renewal_info(None) is None


# ---------------------------------------------------------------------------
# dates_update() end to end
# ---------------------------------------------------------------------------


@requires_upstream
def test_dates_update_columns_match(tmp_path, monkeypatch):
    """Let acme2certifier back-fill a SQLite database and compare every column written."""
    database = tmp_path / "acme_srv.db"
    config = tmp_path / "acme_srv.cfg"
    config.write_text("[DBhandler]\ndbfile: %s\n" % database)
    monkeypatch.setenv("ACME_SRV_CONFIGFILE", str(config))

    rows = [
        ("chain", CHAIN, b64(LEAF.public_bytes(serialization.Encoding.DER))),
        (
            "rsa-chain",
            pem(RSA_LEAF) + pem(RSA_CA_CERTIFICATE),
            b64(RSA_LEAF.public_bytes(serialization.Encoding.DER)),
        ),
        (
            "single",
            pem(LEAF),
            base64.urlsafe_b64encode(LEAF.public_bytes(serialization.Encoding.DER))
            .decode("ascii")
            .rstrip("="),
        ),
        ("unreadable", CHAIN, STANDARD + "\n"),
        # acme2certifier raises TypeError on a NULL cert column, which stops dates_update().
        ("null-cert", None, b64(LEAF.public_bytes(serialization.Encoding.DER))),
    ]
    with UpstreamCertificate(False, "test", UPSTREAM_LOGGER) as certificate:
        connection = sqlite3.connect(str(database))
        connection.execute(
            "INSERT INTO account (name, alg, jwk, contact) VALUES ('account', 'ES256', '{}', 'x')"
        )
        connection.execute(
            "INSERT INTO orders (name, identifiers, account_id, expires) VALUES ('order', '[]', 1, 0)"
        )
        for name, cert, cert_raw in rows:
            connection.execute(
                "INSERT INTO certificate (name, cert, cert_raw, csr, order_id, issue_uts, expire_uts)"
                " VALUES (?, ?, ?, 'csr', 1, 0, 0)",
                (name, cert, cert_raw),
            )
        connection.commit()

        with pytest.raises(TypeError):
            certificate.dates_update()

        stored = {
            row[0]: row[1:]
            for row in connection.execute(
                "SELECT name, issue_uts, expire_uts, serial, aki, renewal_info FROM certificate"
            )
        }
        connection.close()

    for name, cert, cert_raw in rows[:3]:
        issue_uts, expire_uts = x509.cert_dates(cert_raw)
        assert stored[name] == (
            issue_uts,
            expire_uts,
            x509.serial_hex(cert_raw),
            x509.aki_hex(cert_raw),
            x509.renewal_info(cert),
        ), name
    assert stored["unreadable"] == (0, 0, None, None, None)
    assert x509.cert_dates(rows[3][2]) == (0, 0)
    assert stored["null-cert"] == (0, 0, None, None, None)

# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read X.509 certificates from acme2certifier's database, with or without ``cryptography``.

Target hosts may lack the ``cryptography`` package, so this module contains a
strict DER reader for certificates and functions that compute the values that
acme2certifier 0.46.3 writes or reports for the ``certificate`` table.
acme2certifier reads certificates with ``cryptography``, so the accept and
reject rules here follow that package. They were measured with acme2certifier
0.46.3 and cryptography 50.0.2, and the unit tests compare both directly.

Where cryptography 50 or later can be imported, load_certificate() reads the
serial number, validity and AKI through it. Loading a cert_raw value took
0.01 ms that way and 0.1 ms with the pure-Python reader (cryptography 50.0.2,
the certificates of the 10,000-order benchmark database, a 2-CPU machine).
Every certificate that cryptography rejects or cannot give a value for goes
to the pure-Python reader, so results and error messages are the same on
both paths.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

try:
    import cryptography
    from cryptography import x509 as cryptography_x509
    from cryptography.x509.oid import ExtensionOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_VERSION: Optional[str] = None
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_VERSION = cryptography.__version__


class CertificateError(ValueError):
    """Raised for a cert_raw value, PEM text or DER certificate that acme2certifier cannot read."""


# ---------------------------------------------------------------------------
# DER elements
# ---------------------------------------------------------------------------

# Identifier octets of the universal and context-specific tags used below.
_TAG_BOOLEAN = 0x01
_TAG_INTEGER = 0x02
_TAG_BIT_STRING = 0x03
_TAG_OCTET_STRING = 0x04
_TAG_NULL = 0x05
_TAG_OID = 0x06
_TAG_UNIVERSAL_STRING = 0x1C
_TAG_PRINTABLE_STRING = 0x13
_TAG_BMP_STRING = 0x1E
_TAG_UTC_TIME = 0x17
_TAG_GENERALIZED_TIME = 0x18
_TAG_SEQUENCE = 0x30
_TAG_SET = 0x31
_TAG_VERSION = 0xA0
_TAG_ISSUER_UNIQUE_ID = 0x81
_TAG_SUBJECT_UNIQUE_ID = 0x82
_TAG_EXTENSIONS = 0xA3

# Maximum number of octets in a long-form length. Four octets allow 4 GiB, far
# more than any certificate, and keep a forged length from becoming a huge integer.
_MAX_LENGTH_OCTETS = 4

# cryptography 50 rejects OBJECT IDENTIFIERs longer than 63 content octets and
# encoded arcs of 2**128 or more.
_MAX_OID_OCTETS = 63
_MAX_OID_ARC = 1 << 128

_OID_AUTHORITY_KEY_IDENTIFIER = "2.5.29.35"

# Characters allowed in a PrintableString (X.680, clause 41.4).
_PRINTABLE_STRING_CHARS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)


class _Element(NamedTuple):
    """One DER element: its tag, its content octets and its whole encoding."""

    tag: int
    content: bytes
    encoding: bytes


def _read_element(data: bytes, offset: int, field: str) -> Tuple[_Element, int]:
    """Read the DER element at ``offset`` and return it with the offset after it."""
    start = offset
    if offset >= len(data):
        raise CertificateError("invalid DER: %s is missing (no data left)" % field)

    first = data[offset]
    offset += 1
    tag = first
    if first & 0x1F == 0x1F:
        # High tag number form: base-128 digits follow, the last without bit 8.
        number = 0
        if offset < len(data) and data[offset] == 0x80:
            raise CertificateError("invalid DER: tag of %s has a leading zero digit" % field)
        while True:
            if offset >= len(data):
                raise CertificateError("invalid DER: tag of %s is truncated" % field)
            octet = data[offset]
            offset += 1
            number = (number << 7) | (octet & 0x7F)
            # cryptography 50 stores tag numbers in 32 bits and rejects larger ones.
            if number > 0xFFFFFFFF:
                raise CertificateError("invalid DER: tag number of %s exceeds 32 bits" % field)
            if not octet & 0x80:
                break
        if number < 0x1F:
            raise CertificateError(
                "invalid DER: tag of %s uses the long form for a number below 31" % field
            )
        tag = int.from_bytes(data[start:offset], "big")

    if offset >= len(data):
        raise CertificateError("invalid DER: length of %s is missing" % field)
    length = data[offset]
    offset += 1
    if length == 0x80:
        raise CertificateError("invalid DER: %s uses an indefinite length" % field)
    if length & 0x80:
        count = length & 0x7F
        if count > _MAX_LENGTH_OCTETS:
            raise CertificateError(
                "invalid DER: length of %s has %d octets, more than %d"
                % (field, count, _MAX_LENGTH_OCTETS)
            )
        if offset + count > len(data):
            raise CertificateError("invalid DER: length of %s is truncated" % field)
        length_octets = data[offset : offset + count]
        offset += count
        if length_octets[0] == 0:
            raise CertificateError("invalid DER: length of %s has a leading zero octet" % field)
        length = int.from_bytes(length_octets, "big")
        if length < 0x80:
            raise CertificateError(
                "invalid DER: length %d of %s must use the short form" % (length, field)
            )

    end = offset + length
    if end > len(data):
        raise CertificateError(
            "invalid DER: %s declares %d content octets but only %d remain"
            % (field, length, len(data) - offset)
        )
    return _Element(tag, data[offset:end], data[start:end]), end


def _read_single(data: bytes, tag: int, field: str) -> _Element:
    """Read one element of the given tag that spans all of ``data``."""
    element, end = _read_element(data, 0, field)
    _expect_tag(element, tag, field)
    if end != len(data):
        raise CertificateError(
            "invalid DER: %d trailing octets after %s" % (len(data) - end, field)
        )
    return element


def _read_items(content: bytes, field: str) -> List[_Element]:
    """Split the content of a constructed element into its elements."""
    items = []
    offset = 0
    while offset < len(content):
        element, offset = _read_element(content, offset, "element of %s" % field)
        items.append(element)
    return items


def _expect_tag(element: _Element, tag: int, field: str) -> None:
    if element.tag != tag:
        raise CertificateError(
            "invalid certificate: %s has tag 0x%02x, expected 0x%02x" % (field, element.tag, tag)
        )


# ---------------------------------------------------------------------------
# DER values
# ---------------------------------------------------------------------------


def _parse_integer(element: _Element, field: str) -> int:
    """Decode a DER INTEGER, rejecting empty and non-minimal encodings."""
    _expect_tag(element, _TAG_INTEGER, field)
    content = element.content
    if not content:
        raise CertificateError("invalid DER: %s is an empty INTEGER" % field)
    if len(content) > 1:
        if content[0] == 0x00 and content[1] < 0x80:
            raise CertificateError("invalid DER: %s has a redundant leading 0x00 octet" % field)
        if content[0] == 0xFF and content[1] >= 0x80:
            raise CertificateError("invalid DER: %s has a redundant leading 0xff octet" % field)
    return int.from_bytes(content, "big", signed=True)


def _parse_oid(element: _Element, field: str) -> str:
    """Decode an OBJECT IDENTIFIER into dotted notation."""
    _expect_tag(element, _TAG_OID, field)
    content = element.content
    if not content:
        raise CertificateError("invalid DER: %s is an empty OBJECT IDENTIFIER" % field)
    if content[-1] & 0x80:
        raise CertificateError("invalid DER: last arc of %s is truncated" % field)
    if len(content) > _MAX_OID_OCTETS:
        raise CertificateError(
            "invalid certificate: %s has %d octets, more than %d"
            % (field, len(content), _MAX_OID_OCTETS)
        )

    arcs = []
    value = 0
    arc_start = True
    for octet in content:
        if arc_start and octet == 0x80:
            raise CertificateError("invalid DER: an arc of %s has a leading zero digit" % field)
        value = (value << 7) | (octet & 0x7F)
        arc_start = not octet & 0x80
        if arc_start:
            if value >= _MAX_OID_ARC:
                raise CertificateError("invalid certificate: an arc of %s exceeds 128 bits" % field)
            arcs.append(value)
            value = 0

    # The first encoded arc packs the first two arcs as 40 * first + second.
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first] + arcs[1:])


def _parse_bit_string(element: _Element, field: str, tag: int = _TAG_BIT_STRING) -> bytes:
    """Return the octets of a DER BIT STRING after checking its unused bits."""
    _expect_tag(element, tag, field)
    content = element.content
    if not content:
        raise CertificateError("invalid DER: %s is an empty BIT STRING" % field)
    unused_bits = content[0]
    if unused_bits > 7:
        raise CertificateError(
            "invalid DER: %s declares %d unused bits, more than 7" % (field, unused_bits)
        )
    if len(content) == 1 and unused_bits:
        raise CertificateError("invalid DER: %s has unused bits but no octets" % field)
    if unused_bits and content[-1] & ((1 << unused_bits) - 1):
        raise CertificateError("invalid DER: unused bits of %s are not zero" % field)
    return content[1:]


def _parse_boolean(element: _Element, field: str) -> bool:
    _expect_tag(element, _TAG_BOOLEAN, field)
    if element.content == b"\xff":
        return True
    if element.content == b"\x00":
        return False
    raise CertificateError(
        "invalid DER: %s is not a BOOLEAN of 0x00 or 0xff (%s)" % (field, element.content.hex())
    )


_UTC_TIME_PATTERN = re.compile(rb"([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z")
_GENERALIZED_TIME_PATTERN = re.compile(
    rb"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})Z"
)

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
# Days in 400 Gregorian years, used to shift year 0 into the range of datetime.
_DAYS_PER_400_YEARS = 146097


def _parse_time(element: _Element, field: str) -> int:
    """Convert a UTCTime or GeneralizedTime into seconds since 1970-01-01T00:00:00Z.

    Both forms must end in Z and carry seconds without a fraction (RFC 5280,
    section 4.1.2.5). A UTCTime year below 50 means 20YY, otherwise 19YY.
    """
    if element.tag == _TAG_UTC_TIME:
        match = _UTC_TIME_PATTERN.fullmatch(element.content)
        if match is None:
            raise CertificateError(
                "invalid certificate: %s is not a UTCTime of the form YYMMDDHHMMSSZ (%r)"
                % (field, element.content)
            )
        two_digit_year = int(match.group(1))
        year = 2000 + two_digit_year if two_digit_year < 50 else 1900 + two_digit_year
    elif element.tag == _TAG_GENERALIZED_TIME:
        match = _GENERALIZED_TIME_PATTERN.fullmatch(element.content)
        if match is None:
            raise CertificateError(
                "invalid certificate: %s is not a GeneralizedTime of the form YYYYMMDDHHMMSSZ (%r)"
                % (field, element.content)
            )
        year = int(match.group(1))
    else:
        raise CertificateError(
            "invalid certificate: %s has tag 0x%02x, expected UTCTime or GeneralizedTime"
            % (field, element.tag)
        )

    month, day, hour, minute, second = (int(match.group(index)) for index in range(2, 7))
    if hour > 23 or minute > 59 or second > 59:
        raise CertificateError(
            "invalid certificate: %s has an invalid time of day (%r)" % (field, element.content)
        )
    try:
        if year >= 1:
            ordinal = datetime.date(year, month, day).toordinal()
        else:
            # datetime starts at year 1, and year 0 repeats the calendar of year 400.
            ordinal = datetime.date(year + 400, month, day).toordinal() - _DAYS_PER_400_YEARS
    except ValueError:
        raise CertificateError(
            "invalid certificate: %s has an invalid date (%r)" % (field, element.content)
        ) from None
    return (ordinal - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second


# ---------------------------------------------------------------------------
# Certificate structure
# ---------------------------------------------------------------------------

# Parameter rules that cryptography 50 applies at load time, per algorithm OID:
# "absent" forbids parameters, "null" allows only NULL or none, "ec" requires
# a namedCurve OID or NULL, and "sequence" allows a SEQUENCE or none.
_ALGORITHM_PARAMETER_RULES: Dict[str, str] = {
    # ECDSA with SHA-2 and SHA-3
    "1.2.840.10045.4.3.1": "absent",
    "1.2.840.10045.4.3.2": "absent",
    "1.2.840.10045.4.3.3": "absent",
    "1.2.840.10045.4.3.4": "absent",
    "2.16.840.1.101.3.4.3.9": "absent",
    "2.16.840.1.101.3.4.3.10": "absent",
    "2.16.840.1.101.3.4.3.11": "absent",
    "2.16.840.1.101.3.4.3.12": "absent",
    # DSA with SHA-2
    "2.16.840.1.101.3.4.3.1": "absent",
    "2.16.840.1.101.3.4.3.2": "absent",
    "2.16.840.1.101.3.4.3.3": "absent",
    "2.16.840.1.101.3.4.3.4": "absent",
    # Ed25519, Ed448, X25519, X448
    "1.3.101.112": "absent",
    "1.3.101.113": "absent",
    "1.3.101.110": "absent",
    "1.3.101.111": "absent",
    # rsaEncryption and RSA PKCS #1 v1.5 signatures with SHA-1, SHA-2 and SHA-3
    "1.2.840.113549.1.1.1": "null",
    "1.2.840.113549.1.1.5": "null",
    "1.3.14.3.2.29": "null",
    "1.2.840.113549.1.1.14": "null",
    "1.2.840.113549.1.1.11": "null",
    "1.2.840.113549.1.1.12": "null",
    "1.2.840.113549.1.1.13": "null",
    "2.16.840.1.101.3.4.3.13": "null",
    "2.16.840.1.101.3.4.3.14": "null",
    "2.16.840.1.101.3.4.3.15": "null",
    "2.16.840.1.101.3.4.3.16": "null",
    # id-ecPublicKey
    "1.2.840.10045.2.1": "ec",
    # RSASSA-PSS
    "1.2.840.113549.1.1.10": "sequence",
}


def _check_algorithm_identifier(element: _Element, field: str) -> str:
    """Check an AlgorithmIdentifier and return its OID.

    NOTE: cryptography also parses the contents of RSASSA-PSS parameters,
    explicit EC curves and DSA or DH parameters, and this reader does not, so
    such a certificate that cryptography rejects may pass here.
    """
    _expect_tag(element, _TAG_SEQUENCE, field)
    items = _read_items(element.content, field)
    if not items or len(items) > 2:
        raise CertificateError(
            "invalid certificate: %s has %d elements, expected an OID and optional parameters"
            % (field, len(items))
        )
    algorithm = _parse_oid(items[0], "algorithm of %s" % field)
    parameters = items[1] if len(items) == 2 else None

    rule = _ALGORITHM_PARAMETER_RULES.get(algorithm)
    is_null = parameters is not None and parameters.tag == _TAG_NULL and not parameters.content
    if rule == "absent" and parameters is not None:
        allowed = False
    elif rule == "null":
        allowed = parameters is None or is_null
    elif rule == "ec":
        allowed = is_null or (parameters is not None and parameters.tag == _TAG_OID)
        if allowed and not is_null:
            _parse_oid(parameters, "named curve of %s" % field)
    elif rule == "sequence":
        allowed = parameters is None or parameters.tag == _TAG_SEQUENCE
    else:
        allowed = True
    if not allowed:
        raise CertificateError(
            "invalid certificate: %s has parameters not allowed for algorithm %s"
            % (field, algorithm)
        )
    return algorithm


def _check_attribute_value(element: _Element, field: str) -> None:
    """Check the string types whose contents cryptography validates in names."""
    content = element.content
    if element.tag == _TAG_PRINTABLE_STRING:
        if not _PRINTABLE_STRING_CHARS.issuperset(content):
            raise CertificateError(
                "invalid certificate: %s is a PrintableString with a character outside its set (%r)"
                % (field, content)
            )
    elif element.tag == _TAG_BMP_STRING:
        try:
            content.decode("utf-16-be")
        except UnicodeDecodeError:
            raise CertificateError(
                "invalid certificate: %s is not a valid BMPString" % field
            ) from None
    elif element.tag == _TAG_UNIVERSAL_STRING:
        try:
            content.decode("utf-32-be")
        except UnicodeDecodeError:
            raise CertificateError(
                "invalid certificate: %s is not a valid UniversalString" % field
            ) from None


def _check_name(element: _Element, field: str) -> None:
    """Check a Name: a SEQUENCE of SETs, each holding sorted (type, value) pairs."""
    _expect_tag(element, _TAG_SEQUENCE, field)
    for rdn in _read_items(element.content, field):
        _expect_tag(rdn, _TAG_SET, "relative distinguished name in %s" % field)
        attributes = _read_items(rdn.content, field)
        encodings = [attribute.encoding for attribute in attributes]
        if encodings != sorted(encodings):
            raise CertificateError(
                "invalid DER: attributes of a relative distinguished name in %s are not sorted"
                % field
            )
        for attribute in attributes:
            _expect_tag(attribute, _TAG_SEQUENCE, "attribute in %s" % field)
            parts = _read_items(attribute.content, field)
            if len(parts) != 2:
                raise CertificateError(
                    "invalid certificate: attribute in %s has %d elements, expected 2"
                    % (field, len(parts))
                )
            attribute_type = _parse_oid(parts[0], "attribute type in %s" % field)
            _check_attribute_value(
                parts[1], "value of attribute %s in %s" % (attribute_type, field)
            )


class Extension(NamedTuple):
    """One certificate extension with its value still DER-encoded."""

    oid: str
    critical: bool
    value: bytes


def _parse_extensions(element: _Element) -> Tuple[Extension, ...]:
    """Read the [3] extensions field without decoding the extension values."""
    sequence = _read_single(element.content, _TAG_SEQUENCE, "extensions")
    extensions = []
    for item in _read_items(sequence.content, "extensions"):
        _expect_tag(item, _TAG_SEQUENCE, "extension")
        parts = _read_items(item.content, "extension")
        if not parts:
            raise CertificateError("invalid certificate: an extension is empty")
        oid = _parse_oid(parts[0], "extension OID")
        critical = False
        rest = parts[1:]
        if rest and rest[0].tag == _TAG_BOOLEAN:
            critical = _parse_boolean(rest[0], "critical flag of extension %s" % oid)
            if not critical:
                # DER omits a field that equals its DEFAULT value (X.690, clause 11.5).
                raise CertificateError(
                    "invalid DER: extension %s encodes the default critical=FALSE" % oid
                )
            rest = rest[1:]
        if len(rest) != 1:
            raise CertificateError(
                "invalid certificate: extension %s has %d values, expected 1" % (oid, len(rest))
            )
        _expect_tag(rest[0], _TAG_OCTET_STRING, "value of extension %s" % oid)
        extensions.append(Extension(oid, critical, rest[0].content))
    return tuple(extensions)


@dataclass(frozen=True)
class Certificate:
    """Fields of an X.509 certificate that housekeeping needs."""

    serial_number: int
    # Validity bounds in seconds since 1970-01-01T00:00:00Z.
    not_before: int
    not_after: int
    # DER encodings of the issuer and subject Names, tag and length included.
    issuer: bytes
    subject: bytes
    # Octets of the subjectPublicKey BIT STRING without its unused-bits octet.
    subject_public_key: bytes
    extensions: Tuple[Extension, ...]

    @property
    def authority_key_identifier(self) -> Optional[str]:
        """Lowercase hex keyIdentifier of the authority key identifier extension, or None.

        Raises CertificateError when that extension is malformed.
        """
        return _authority_key_identifier(self.extensions)


def parse_certificate(der: bytes) -> Certificate:
    """Parse a DER certificate, rejecting what cryptography 50 rejects at load time.

    Raises CertificateError for trailing data, invalid lengths, non-DER
    encodings, unexpected tags and invalid field values. The exceptions are
    the algorithm parameters noted in _check_algorithm_identifier(). Extension
    values stay undecoded because cryptography decodes them only on access.
    """
    if not isinstance(der, (bytes, bytearray)):
        raise CertificateError(
            "invalid certificate: expected DER bytes, got %s" % type(der).__name__
        )
    certificate = _read_single(bytes(der), _TAG_SEQUENCE, "certificate")
    parts = _read_items(certificate.content, "certificate")
    if len(parts) != 3:
        raise CertificateError(
            "invalid certificate: Certificate has %d elements, expected 3" % len(parts)
        )
    tbs, signature_algorithm, signature = parts
    _expect_tag(tbs, _TAG_SEQUENCE, "tbsCertificate")
    _check_algorithm_identifier(signature_algorithm, "signatureAlgorithm")
    _parse_bit_string(signature, "signatureValue")

    fields = _read_items(tbs.content, "tbsCertificate")
    index = 0

    def next_field(field: str) -> _Element:
        if index >= len(fields):
            raise CertificateError("invalid certificate: tbsCertificate has no %s" % field)
        return fields[index]

    if next_field("serialNumber").tag == _TAG_VERSION:
        version = _parse_integer(
            _read_single(fields[0].content, _TAG_INTEGER, "version"), "version"
        )
        if version == 0:
            raise CertificateError("invalid DER: version encodes the default v1 explicitly")
        if version != 2:
            # cryptography 50 reads only v1 (absent) and v3 (2), and also rejects v2 (1).
            raise CertificateError(
                "invalid certificate: version %d is not supported, expected v1 or v3" % version
            )
        index += 1

    serial_number = _parse_integer(next_field("serialNumber"), "serialNumber")
    index += 1
    _check_algorithm_identifier(next_field("signature"), "signature algorithm in tbsCertificate")
    index += 1
    issuer = next_field("issuer")
    _check_name(issuer, "issuer")
    index += 1

    validity = next_field("validity")
    _expect_tag(validity, _TAG_SEQUENCE, "validity")
    times = _read_items(validity.content, "validity")
    if len(times) != 2:
        raise CertificateError(
            "invalid certificate: validity has %d elements, expected 2" % len(times)
        )
    not_before = _parse_time(times[0], "notBefore")
    not_after = _parse_time(times[1], "notAfter")
    index += 1

    subject = next_field("subject")
    _check_name(subject, "subject")
    index += 1

    public_key_info = next_field("subjectPublicKeyInfo")
    _expect_tag(public_key_info, _TAG_SEQUENCE, "subjectPublicKeyInfo")
    key_parts = _read_items(public_key_info.content, "subjectPublicKeyInfo")
    if len(key_parts) != 2:
        raise CertificateError(
            "invalid certificate: subjectPublicKeyInfo has %d elements, expected 2" % len(key_parts)
        )
    _check_algorithm_identifier(key_parts[0], "subjectPublicKeyInfo algorithm")
    subject_public_key = _parse_bit_string(key_parts[1], "subjectPublicKey")
    index += 1

    # The optional fields must appear in this order, each at most once.
    extensions: Tuple[Extension, ...] = ()
    for tag, field_name in (
        (_TAG_ISSUER_UNIQUE_ID, "issuerUniqueID"),
        (_TAG_SUBJECT_UNIQUE_ID, "subjectUniqueID"),
        (_TAG_EXTENSIONS, "extensions"),
    ):
        if index < len(fields) and fields[index].tag == tag:
            if tag == _TAG_EXTENSIONS:
                extensions = _parse_extensions(fields[index])
            else:
                _parse_bit_string(fields[index], field_name, tag)
            index += 1
    if index != len(fields):
        raise CertificateError(
            "invalid certificate: unexpected element with tag 0x%02x in tbsCertificate"
            % fields[index].tag
        )

    return Certificate(
        serial_number=serial_number,
        not_before=not_before,
        not_after=not_after,
        issuer=issuer.encoding,
        subject=subject.encoding,
        subject_public_key=subject_public_key,
        extensions=extensions,
    )


def _authority_key_identifier(extensions: Tuple[Extension, ...]) -> Optional[str]:
    """Read keyIdentifier the way acme2certifier's cert_aki_get() does.

    acme2certifier falls back to pyasn1 when cryptography cannot decode the
    extensions, so the first AKI extension counts, an empty value means no AKI,
    and octets after the AuthorityKeyIdentifier SEQUENCE are ignored.
    NOTE: pyasn1 also accepts some BER forms inside the SEQUENCE (non-minimal
    lengths, a constructed keyIdentifier) that this function rejects.
    """
    value = None
    for extension in extensions:
        if extension.oid == _OID_AUTHORITY_KEY_IDENTIFIER:
            value = extension.value
            break
    if not value:
        return None

    field = "authority key identifier"
    sequence, _end = _read_element(value, 0, field)
    _expect_tag(sequence, _TAG_SEQUENCE, field)
    key_identifier = None
    # keyIdentifier [0], authorityCertIssuer [1] and authorityCertSerialNumber [2],
    # each optional and in this order (RFC 5280, section 4.2.1.1).
    expected_tags = [0x80, 0xA1, 0x82]
    for item in _read_items(sequence.content, field):
        if item.tag not in expected_tags:
            raise CertificateError(
                "invalid certificate: %s has an unexpected element with tag 0x%02x"
                % (field, item.tag)
            )
        del expected_tags[: expected_tags.index(item.tag) + 1]
        if item.tag == 0x80:
            key_identifier = item.content
        elif item.tag == 0xA1:
            _read_items(item.content, "authorityCertIssuer")
    if key_identifier is None:
        return None
    return key_identifier.hex()


# ---------------------------------------------------------------------------
# Loading through cryptography
# ---------------------------------------------------------------------------

# The pure reader's accept and reject rules were compared with cryptography
# 50.0.2 only. Older releases were not compared, so they use the pure reader.
_MIN_CRYPTOGRAPHY_MAJOR = 50

# Environment variable that, set to any non-empty value, makes this module use
# only the pure-Python reader. It is read once, at import.
PURE_READER_ENV = "ACMEOPS_HOUSEKEEPING_PURE_X509"

_UNIX_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _cryptography_usable() -> bool:
    """Check that cryptography is importable and at least the release the pure reader matches."""
    if not HAS_CRYPTOGRAPHY or CRYPTOGRAPHY_VERSION is None:
        return False
    major = CRYPTOGRAPHY_VERSION.split(".", 1)[0]
    return major.isdigit() and int(major) >= _MIN_CRYPTOGRAPHY_MAJOR


class _ReaderSwitch:
    """Whether load_certificate() tries cryptography first."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled


_READER = _ReaderSwitch(_cryptography_usable() and not os.environ.get(PURE_READER_ENV))


def use_cryptography(enabled: bool) -> bool:
    """Turn the cryptography path on or off and return the previous setting.

    Tests use this to run the pure reader on a host with cryptography.
    Turning the path on has no effect where _cryptography_usable() is false.
    """
    previous = _READER.enabled
    _READER.enabled = bool(enabled) and _cryptography_usable()
    return previous


def cryptography_in_use() -> bool:
    """Return whether load_certificate() tries cryptography first."""
    return _READER.enabled


def _serial_is_positive(der: bytes) -> bool:
    """Check that the serialNumber INTEGER in ``der`` is above zero.

    cryptography 50 issues a CryptographyDeprecationWarning for a zero or
    negative serial number, which Python prints to stderr, so such
    certificates go to the pure reader. Returns False for DER whose first
    elements cannot be read.
    """
    # Certificate and tbsCertificate SEQUENCEs, an optional [0] version, then the INTEGER.
    offset = _skip_header(der, 0, _TAG_SEQUENCE)
    offset = _skip_header(der, offset, _TAG_SEQUENCE)
    if 0 <= offset < len(der) and der[offset] == _TAG_VERSION:
        version_start = _skip_header(der, offset, _TAG_VERSION)
        offset = version_start + _content_length(der, offset) if version_start >= 0 else -1
    serial_start = _skip_header(der, offset, _TAG_INTEGER)
    if serial_start < 0:
        return False
    content = der[serial_start : serial_start + _content_length(der, offset)]
    return bool(content) and content[0] < 0x80 and content.lstrip(b"\x00") != b""


def _header_length_octets(data: bytes, offset: int) -> int:
    """Return how many octets the length field at ``offset`` takes, or 0 if it is unusable."""
    if offset >= len(data):
        return 0
    first = data[offset]
    if first < 0x80:
        return 1
    count = first & 0x7F
    if count == 0 or count > _MAX_LENGTH_OCTETS or offset + 1 + count > len(data):
        return 0
    return 1 + count


def _content_length(data: bytes, tag_offset: int) -> int:
    """Return the content length of the element whose tag octet is at ``tag_offset``."""
    first = data[tag_offset + 1]
    if first < 0x80:
        return first
    return int.from_bytes(data[tag_offset + 2 : tag_offset + 2 + (first & 0x7F)], "big")


def _skip_header(data: bytes, offset: int, tag: int) -> int:
    """Return the offset of the contents of a one-octet ``tag`` element at ``offset``, or -1.

    Only _serial_is_positive() uses this. It checks no more than it needs
    to find the serial number, because cryptography checks the whole encoding.
    """
    if offset < 0 or offset >= len(data) or data[offset] != tag:
        return -1
    octets = _header_length_octets(data, offset + 1)
    if not octets:
        return -1
    return offset + 1 + octets


def _epoch_seconds(moment: datetime.datetime) -> int:
    """Convert an aware datetime to Unix seconds as calendar.timegm(moment.timetuple()) does."""
    delta = moment - _UNIX_EPOCH
    return delta.days * 86400 + delta.seconds


class CryptographyCertificate:
    """Serial number and validity of a certificate that cryptography loaded.

    The attributes match those of Certificate that the report and the dates
    back-fill read. The AKI is read on first use, because reports do not need it.
    """

    __slots__ = ("_der", "_loaded", "serial_number", "not_before", "not_after")

    def __init__(self, der: bytes, loaded: Any, serial_number: int, not_before: int, not_after: int) -> None:
        self._der = der
        self._loaded = loaded
        self.serial_number = serial_number
        self.not_before = not_before
        self.not_after = not_after

    @property
    def authority_key_identifier(self) -> Optional[str]:
        """Lowercase hex keyIdentifier of the authority key identifier extension, or None.

        Raises CertificateError when that extension is malformed. Whenever
        cryptography cannot decode the extensions, the pure reader decides,
        as acme2certifier falls back to pyasn1 there.
        """
        try:
            extension = self._loaded.extensions.get_extension_for_oid(
                ExtensionOID.AUTHORITY_KEY_IDENTIFIER
            )
            key_identifier = extension.value.key_identifier
        except cryptography_x509.ExtensionNotFound:
            return None
        except Exception:  # pylint: disable=broad-except
            # Duplicate or malformed extensions: the pure reader applies pyasn1's rules.
            return parse_certificate(self._der).authority_key_identifier
        if key_identifier is None:
            return None
        return bytes(key_identifier).hex()


def _load_with_cryptography(der: bytes) -> Optional[CryptographyCertificate]:
    """Load DER with cryptography, or return None where the pure reader has to decide.

    That is the case for every exception from cryptography, for example a
    rejected encoding or a date in year 0 that datetime cannot hold, and for
    serial numbers that cryptography warns about.
    """
    if not _serial_is_positive(der):
        return None
    try:
        loaded = cryptography_x509.load_der_x509_certificate(der)
        serial_number = loaded.serial_number
        not_before = _epoch_seconds(loaded.not_valid_before_utc)
        not_after = _epoch_seconds(loaded.not_valid_after_utc)
    except Exception:  # pylint: disable=broad-except
        return None
    if not isinstance(serial_number, int):
        return None
    return CryptographyCertificate(der, loaded, serial_number, not_before, not_after)


# A loaded certificate: both types have serial_number, not_before, not_after
# and authority_key_identifier.
LoadedCertificate = Union[Certificate, CryptographyCertificate]


def load_certificate(der: bytes) -> LoadedCertificate:
    """Load a DER certificate through cryptography where possible, else with parse_certificate().

    Raises CertificateError with the pure reader's message where the
    certificate cannot be loaded.
    """
    if _READER.enabled and isinstance(der, bytes):
        loaded = _load_with_cryptography(der)
        if loaded is not None:
            return loaded
    return parse_certificate(der)


# ---------------------------------------------------------------------------
# The cert_raw column
# ---------------------------------------------------------------------------

# Code points with the Unicode White_Space property. The Rust pem crate that
# cryptography uses removes these from PEM data before decoding base64.
_WHITE_SPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)
_WHITE_SPACE_REMOVAL = dict.fromkeys(_WHITE_SPACE)
_URL_SAFE_TO_STANDARD = {ord("-"): "+", ord("_"): "/"}
_BASE64_PATTERN = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _decode_base64_strict(text: str, source: str) -> bytes:
    """Decode standard base64 with canonical padding and zero trailing bits.

    This matches the STANDARD engine of the Rust base64 crate, which rejects
    some strings that Python's base64 module accepts.
    """
    if len(text) % 4 or not _BASE64_PATTERN.fullmatch(text):
        raise CertificateError(
            "invalid %s: not canonical base64 (wrong length, padding or character)" % source
        )
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise CertificateError("invalid %s: %s" % (source, err)) from None
    if base64.b64encode(decoded).decode("ascii") != text:
        raise CertificateError("invalid %s: base64 has non-zero trailing bits" % source)
    return decoded


def decode_cert_raw(value: object) -> bytes:
    """Decode a cert_raw column value to DER as acme2certifier 0.46.3 does.

    acme2certifier computes the missing "=" padding from the length of the
    value as stored, white space included, maps "-" and "_" to "+" and "/",
    and wraps the result in PEM armour. cryptography then drops white space
    and decodes strict base64. As a result, surrounding white space is accepted
    only when the total length still comes out right. A str or UTF-8 bytes value
    is accepted. Raises CertificateError for anything else, including None,
    an empty value, PEM armour, line-wrapped base64 of the wrong total length
    and non-canonical base64.
    """
    if isinstance(value, str):
        text = value
        stored_length = len(value)
    elif isinstance(value, (bytes, bytearray)):
        # The padding is computed before decoding, so it counts octets.
        stored_length = len(value)
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CertificateError("invalid cert_raw: bytes are not UTF-8") from None
    else:
        raise CertificateError(
            "invalid cert_raw: expected str or bytes, got %s" % type(value).__name__
        )

    text += "=" * ((4 - stored_length % 4) % 4)
    # Text of standard base64 characters alone has nothing to map or remove, and the
    # regular expression checks that faster than the two translate() calls run.
    if not _BASE64_PATTERN.fullmatch(text):
        text = text.translate(_URL_SAFE_TO_STANDARD).translate(_WHITE_SPACE_REMOVAL)
    if not text:
        raise CertificateError("invalid cert_raw: value is empty")
    return _decode_base64_strict(text, "cert_raw")


def load_cert_raw(value: object) -> LoadedCertificate:
    """Decode and load a cert_raw value, raising CertificateError where acme2certifier fails."""
    return load_certificate(decode_cert_raw(value))


# ---------------------------------------------------------------------------
# Values that acme2certifier 0.46.3 derives from certificates
# ---------------------------------------------------------------------------

# datetime cannot hold dates before 0001-01-01, and acme2certifier reads the
# dates through datetime, so a GeneralizedTime in year 0 gives it no dates.
_MIN_DATETIME_EPOCH = (datetime.date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86400


def read_dates(certificate: LoadedCertificate) -> Tuple[int, int]:
    """Return (issue_uts, expire_uts) of a loaded certificate as cert_dates_get() does.

    Dates before 1970 give negative values, as upstream returns them. A date
    before year 1 gives (0, 0), because upstream fails to convert it.
    """
    if min(certificate.not_before, certificate.not_after) < _MIN_DATETIME_EPOCH:
        return (0, 0)
    return (certificate.not_before, certificate.not_after)


def cert_dates(cert_raw: object) -> Tuple[int, int]:
    """Return (issue_uts, expire_uts) as cert_dates_get() does, (0, 0) if it cannot read them."""
    try:
        certificate = load_cert_raw(cert_raw)
    except CertificateError:
        return (0, 0)
    return read_dates(certificate)


def cert_serial_decimal(cert_raw: object) -> Union[int, str]:
    """Return the serial number as the housekeeping report stores it: an int, or '' on failure.

    Negative serial numbers stay negative, as cryptography 50 still loads them.
    """
    try:
        return load_cert_raw(cert_raw).serial_number
    except CertificateError:
        return ""


def format_serial_hex(serial_number: int) -> str:
    """Format like cert_serial_get(hexformat=True): lowercase hex, zero-padded to even length.

    str.zfill() keeps a minus sign in front, so -255 becomes "-0ff".
    """
    digits = format(serial_number, "x")
    return digits.zfill(len(digits) + len(digits) % 2)


def serial_hex(cert_raw: object) -> str:
    """Return what dates_update() writes to certificate.serial, computed from cert_raw alone.

    Raises CertificateError when acme2certifier cannot load cert_raw.
    """
    return format_serial_hex(load_cert_raw(cert_raw).serial_number)


def aki_hex(cert_raw: object) -> Optional[str]:
    """Return what dates_update() writes to certificate.aki, computed from cert_raw alone.

    The value is the lowercase hex keyIdentifier, or None without one.
    Raises CertificateError when cert_raw cannot be loaded or the AKI
    extension is malformed, where upstream raises and aborts dates_update().
    """
    return load_cert_raw(cert_raw).authority_key_identifier


# ---------------------------------------------------------------------------
# The cert column (PEM chain) and renewal_info
# ---------------------------------------------------------------------------

_PEM_BEGIN_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def _split_pem_bundle(text: str) -> List[str]:
    """Split PEM text into blocks the way pembundle_to_list() does.

    Every line is stripped, and a line starting with the BEGIN CERTIFICATE
    marker starts a new block, so any text before the first marker forms a
    block of its own.
    """
    blocks: List[str] = []
    if _PEM_BEGIN_CERTIFICATE not in text:
        return blocks
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(_PEM_BEGIN_CERTIFICATE) and current:
            blocks.append(current)
            current = ""
        current += line + "\n"
    if current:
        blocks.append(current)
    return blocks


def _find_marker(data: bytes, marker: bytes, start: int) -> int:
    """Return the offset of ``marker`` in ``data`` from ``start`` as the pem crate finds it, or -1.

    The pem crate 3.x restarts its match after a mismatch without testing the
    mismatching octet again, so it misses a marker that directly follows a
    partial match, as "-----BEGIN " inside "------BEGIN ".
    """
    found = 0
    for index in range(start, len(data)):
        if data[index] == marker[found]:
            found += 1
            if found == len(marker):
                return index + 1 - found
        else:
            found = 0
    return -1


def _skip_pem_white_space(data: bytes, offset: int) -> int:
    while offset < len(data) and data[offset] in b" \t\n\r":
        offset += 1
    return offset


class _PemSection(NamedTuple):
    label: bytes
    payload: bytes
    end_label: bytes


def _find_pem_sections(data: bytes) -> List[_PemSection]:
    """Find BEGIN/END sections as the pem crate does, which stops at the first incomplete one."""
    sections = []
    offset = 0
    while offset < len(data):
        begin = _find_marker(data, b"-----BEGIN ", offset)
        if begin < 0:
            break
        label_start = begin + len(b"-----BEGIN ")
        label_end = _find_marker(data, b"-----", label_start)
        if label_end < 0:
            break
        payload_start = _skip_pem_white_space(data, label_end + 5)
        end = _find_marker(data, b"-----END ", payload_start)
        if end < 0:
            break
        end_label_start = end + len(b"-----END ")
        end_label_end = _find_marker(data, b"-----", end_label_start)
        if end_label_end < 0:
            break
        sections.append(
            _PemSection(
                data[label_start:label_end],
                data[payload_start:end],
                data[end_label_start:end_label_end],
            )
        )
        offset = _skip_pem_white_space(data, end_label_end + 5)
    return sections


def _decode_pem_section(section: _PemSection) -> Tuple[str, bytes]:
    """Return the label and decoded contents of a section, raising where the pem crate fails."""
    try:
        label = section.label.decode("utf-8")
        end_label = section.end_label.decode("utf-8")
    except UnicodeDecodeError:
        raise CertificateError("invalid PEM: text is not UTF-8") from None
    if not label or not end_label:
        raise CertificateError("invalid PEM: BEGIN or END line has no label")
    if label != end_label:
        raise CertificateError(
            "invalid PEM: BEGIN label %r does not match END label %r" % (label, end_label)
        )

    # Text before the first blank line contains "Name: value" headers (RFC 1421).
    headers = b""
    data = section.payload
    for separator in (b"\n\n", b"\r\n\r\n"):
        position = _find_marker(data, separator, 0)
        if position >= 0:
            headers, data = data[:position], data[position + len(separator) :]
            break
    try:
        header_text = headers.decode("utf-8")
        data_text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CertificateError("invalid PEM: text is not UTF-8") from None

    # Split like Rust's str::lines(): no empty last line, one trailing CR removed.
    header_lines = header_text.split("\n")
    if header_lines[-1] == "":
        header_lines.pop()
    for line in header_lines:
        if line.endswith("\r"):
            line = line[:-1]
        if ":" not in line:
            raise CertificateError("invalid PEM: header line without a colon: %r" % line)

    return label, _decode_base64_strict(data_text.translate(_WHITE_SPACE_REMOVAL), "PEM data")


def _load_pem_certificate(text: str) -> Certificate:
    """Load the first certificate in PEM text as cryptography 50's load_pem_x509_certificate does.

    Every PEM section must decode, even those that are not certificates, and
    the first CERTIFICATE or X509 CERTIFICATE section is parsed.
    """
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise CertificateError("invalid PEM: text cannot be encoded as UTF-8") from None
    sections = _find_pem_sections(data)
    if not sections:
        raise CertificateError("invalid PEM: no BEGIN/END section found")
    decoded = [_decode_pem_section(section) for section in sections]
    for label, contents in decoded:
        if label in ("CERTIFICATE", "X509 CERTIFICATE"):
            return parse_certificate(contents)
    raise CertificateError("invalid PEM: no CERTIFICATE section found")


@functools.lru_cache(maxsize=8)
def _load_pem_issuer(text: str) -> Certificate:
    """Load an issuer block once, because every certificate of a CA carries the same one.

    Certificate is immutable, so sharing one instance is safe. Errors are not
    cached and are raised again on every call.
    """
    return _load_pem_certificate(text)


def _encode_integer(value: int) -> bytes:
    """Encode an INTEGER in DER, tag and length included."""
    content = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    if len(content) < 0x80:
        length = bytes([len(content)])
    else:
        size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return bytes([_TAG_INTEGER]) + length + content


def renewal_info(cert: Optional[str]) -> Optional[str]:
    """Compute what dates_update() writes to certificate.renewal_info from the cert column.

    acme2certifier builds an OCSP request for the first certificate of the
    chain with the second as issuer. It stores the hex of the request after
    the first "0420", which is the rest of the CertID: the SHA-256 of the
    certificate's issuer Name, "0420", the SHA-256 of the issuer's public key
    and the DER serial number INTEGER.
    The certificate is the first PEM block of ``cert``, not cert_raw.
    Returns None when ``cert`` is None, empty or holds fewer than two blocks.
    Upstream also stores None for fewer than two blocks, but raises TypeError
    for None. Raises CertificateError when either block cannot be loaded,
    where upstream raises too (text before the first BEGIN line counts as
    the first block).
    """
    if not cert:
        return None
    if not isinstance(cert, str):
        raise CertificateError("invalid cert column: expected str, got %s" % type(cert).__name__)
    blocks = _split_pem_bundle(cert)
    if len(blocks) < 2:
        return None
    certificate = _load_pem_certificate(blocks[0])
    issuer = _load_pem_issuer(blocks[1])

    issuer_name_hash = hashlib.sha256(certificate.issuer).hexdigest()
    issuer_key_hash = hashlib.sha256(issuer.subject_public_key).hexdigest()
    serial = _encode_integer(certificate.serial_number).hex()
    return issuer_name_hash + "0420" + issuer_key_hash + serial

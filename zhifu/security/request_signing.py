"""Signed requests from partners: merchants and third-party platforms.

Design note
-----------
A partner holds an API key, named by a public key id (``pk_`` + 24 url-safe
characters), and signs every request with it. Two algorithms are supported:

* ``hmac-sha256``: the bank and the partner share a 32-byte random secret.
* ``ed25519``: the partner keeps the 32-byte private seed; the bank stores only
  the 32-byte public key, so a leak of the bank's key table signs nothing.

A signed request carries four headers::

    Zhifu-Key-Id:    pk_3q2-7wEVR0bqYb1WlPmDGTSw
    Zhifu-Timestamp: 1767225600            (Unix seconds, decimal, no sign)
    Zhifu-Nonce:     16..64 characters of [A-Za-z0-9_-], fresh per request
    Zhifu-Signature: standard base64 of the HMAC (32 bytes) or Ed25519 (64 bytes)

and the signature covers these bytes (``string_to_sign``), one field a line::

    zhifu-request-v1
    METHOD                       upper case: GET, POST, ...
    /path?query                  the request target exactly as sent, not decoded
    key id
    timestamp                    decimal, as in the header
    nonce
    hex SHA-256 of the raw body  (of b"" when there is no body)

Why each part is signed:

* ``zhifu-request-v1`` separates domains and versions: a signature made for a
  request can never pass as one over a webhook, a block head or a future
  version of this scheme, even where the same key signs them.
* The method, so a signed ``GET`` cannot be replayed as a ``POST`` or ``DELETE``.
* The path with its query, byte for byte as sent, so a signature cannot be
  moved to another endpoint or other parameters. Nothing is decoded or
  re-ordered on either side: canonicalisation is where such schemes usually
  break. The caller rebuilds it from the raw request line (under ASGI,
  ``raw_path`` plus ``"?" + query_string`` when the query is not empty).
* The key id, so the header naming the key cannot be swapped for another
  partner's: the key that verified is the key the request is attributed to.
* The timestamp, so a captured request is useful for ``SIGNATURE_WINDOW_S``
  at most and cannot be refreshed.
* The nonce, so two requests with the same content are still different, and a
  replay inside the window can be caught (below).
* The SHA-256 of the body, so amounts and account numbers cannot be changed in
  flight. The hash keeps the signed text short, ASCII and line-shaped.

The newline separators are unambiguous because no field may contain one: the
method is letters, the path printable ASCII without spaces, the key id and
nonce url-safe characters, the timestamp digits, the hash hex. Other headers
(``Host``, ``Content-Type``) are not signed: the body bytes are, and the
server decides how to parse them. Keys must therefore be issued per
environment, so a sandbox request cannot be replayed against production.

Replay protection
-----------------
``verify_request`` refuses a timestamp more than ``SIGNATURE_WINDOW_S`` in the
past or in the future, then checks the signature. It does not remember
nonces, since that needs storage. After ``verify_request`` returns, the caller
must record ``(key_id, nonce)`` atomically, for example with an ``INSERT``
against a unique constraint rather than a lookup followed by an insert (two
copies of one request arriving together must not both pass). It raises
``replayed_nonce_error`` when the pair is already there, and keeps each pair
for at least ``NONCE_TTL_S``. A request with timestamp ``t`` is accepted
between ``t - W`` and ``t + W``, so remembering its nonce for ``2 * W`` from
the first acceptance covers every moment a copy could still be accepted.
Nonces are stored only *after* the signature verifies, so nobody without the
key can fill the store or use up a partner's nonce before the partner does.

Limits: bodies of at most ``BODY_BYTES_MAX`` (the HTTP layer should refuse a
larger ``Content-Length`` before reading it), request targets of at most
``PATH_WITH_QUERY_CHARS_MAX`` characters, and the header limits below.

Every refusal is a ``RequestSignatureError`` whose ``reason`` says which rule
failed and whose message says what is expected. No message holds a secret,
a private seed or the expected signature. A wrong-size key or an unknown
algorithm is the bank's configuration error, not the partner's, and raises
``RequestSigningKeyError`` instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from zhifu.security.signing import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Ed25519Signer,
    verify_signature,
)

SCHEME_PREFIX: Final = b"zhifu-request-v1\n"

HEADER_KEY_ID: Final = "Zhifu-Key-Id"
HEADER_TIMESTAMP: Final = "Zhifu-Timestamp"
HEADER_NONCE: Final = "Zhifu-Nonce"
HEADER_SIGNATURE: Final = "Zhifu-Signature"
SIGNED_HEADERS: Final = (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

SIGNATURE_WINDOW_S: Final = 300  # allowed clock difference, either direction
NONCE_TTL_S: Final = 2 * SIGNATURE_WINDOW_S  # how long the caller must remember a nonce
NONCE_CHARS_MIN: Final = 16  # 96 bits of url-safe base64: guessing a reused one is hopeless
NONCE_CHARS_MAX: Final = 64
NONCE_RANDOM_BYTES: Final = 24  # the default nonce: 32 characters
KEY_ID_PREFIX: Final = "pk_"
KEY_ID_RANDOM_BYTES: Final = 18  # 24 url-safe characters
KEY_ID_CHARS_MAX: Final = 64
TIMESTAMP_DIGITS_MAX: Final = 12  # Unix seconds have 10 digits until the year 2286
SIGNATURE_BASE64_CHARS_MAX: Final = 88  # the base64 of a 64-byte Ed25519 signature
METHOD_CHARS_MAX: Final = 16
PATH_WITH_QUERY_CHARS_MAX: Final = 8192  # the common request-line limit of HTTP servers
BODY_BYTES_MAX: Final = 1024 * 1024
HMAC_SECRET_BYTES: Final = 32

_URL_SAFE = "[A-Za-z0-9_-]"
_NONCE_RE: Final = re.compile(f"{_URL_SAFE}{{{NONCE_CHARS_MIN},{NONCE_CHARS_MAX}}}")
_KEY_ID_RE: Final = re.compile(
    f"{KEY_ID_PREFIX}{_URL_SAFE}{{1,{KEY_ID_CHARS_MAX - len(KEY_ID_PREFIX)}}}"
)
_TIMESTAMP_RE: Final = re.compile(f"0|[1-9][0-9]{{0,{TIMESTAMP_DIGITS_MAX - 1}}}")
_METHOD_RE: Final = re.compile(f"[A-Z]{{1,{METHOD_CHARS_MAX}}}")
_PATH_RE: Final = re.compile("/[\x21-\x7e]*")  # printable ASCII, no space, no newline

_EXPECTED_KEY_ID = (
    f"{KEY_ID_PREFIX!r} followed by 1 to {KEY_ID_CHARS_MAX - len(KEY_ID_PREFIX)} "
    "characters of A-Z, a-z, 0-9, '_' and '-'"
)
_EXPECTED_NONCE = (
    f"{NONCE_CHARS_MIN} to {NONCE_CHARS_MAX} characters of A-Z, a-z, 0-9, '_' and '-', "
    "fresh for every request"
)


class SigningAlgorithm(StrEnum):
    """The algorithms a partner key can use; the values are what the key table stores."""

    HMAC_SHA256 = "hmac-sha256"
    ED25519 = "ed25519"


class SignatureRejection(StrEnum):
    """Why a signed request was refused."""

    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    MALFORMED_REQUEST = "malformed_request"  # the method or request target cannot be signed
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    REPLAYED_NONCE = "replayed_nonce"
    BODY_TOO_LARGE = "body_too_large"


class RequestSignatureError(ValueError):
    """A partner request is unsigned, malformed, stale, replayed or wrongly signed.

    ``reason`` says which rule failed; the message says what was wrong and what
    is expected, and never holds a secret or the expected signature.
    """

    def __init__(self, message: str, reason: SignatureRejection) -> None:
        super().__init__(message)
        self.reason = reason


class RequestSigningKeyError(ValueError):
    """The algorithm is unknown or the key material has the wrong size.

    A configuration error on the side holding the key, never the fault of the
    request; the message never holds key material.
    """


@dataclass(frozen=True)
class SignedRequestHeaders:
    """The four signing headers of one request, parsed and checked for form."""

    key_id: str
    timestamp_s: int
    nonce: str
    signature: bytes

    def __repr__(self) -> str:
        # The signature is not secret, but it is noise in logs.
        return (
            f"SignedRequestHeaders(key_id={self.key_id!r}, timestamp_s={self.timestamp_s}, "
            f"nonce={self.nonce!r})"
        )


def parse_headers(headers: Mapping[str, str]) -> SignedRequestHeaders:
    """The signing headers of a request, looked up case-insensitively.

    Raises RequestSignatureError with reason ``missing_header`` when any of the
    four is absent, and ``malformed_header`` when one is repeated or not in
    its expected form.
    """
    values = _find_signing_headers(headers)
    missing = [name for name in SIGNED_HEADERS if name not in values]
    if missing:
        raise RequestSignatureError(
            f"missing header(s) {', '.join(missing)}: every partner request must carry "
            f"{', '.join(SIGNED_HEADERS)}",
            SignatureRejection.MISSING_HEADER,
        )
    key_id = values[HEADER_KEY_ID]
    _check_key_id(key_id)
    nonce = values[HEADER_NONCE]
    _check_nonce(nonce)
    return SignedRequestHeaders(
        key_id=key_id,
        timestamp_s=_parse_timestamp(values[HEADER_TIMESTAMP]),
        nonce=nonce,
        signature=_parse_signature(values[HEADER_SIGNATURE]),
    )


def string_to_sign(
    method: str,
    path_with_query: str,
    key_id: str,
    timestamp_s: int,
    nonce: str,
    body: bytes,
) -> bytes:
    """The bytes a request's signature covers (see the module's design note).

    Raises RequestSignatureError: ``malformed_request`` for a method that is not
    letters or a request target that is not printable ASCII starting with "/",
    ``malformed_header`` for a key id, timestamp or nonce out of form, and
    ``body_too_large`` for a body over ``BODY_BYTES_MAX``.
    """
    method_upper = method.upper()
    # isascii first: str.upper() maps some other letters to ASCII ones ("ß" to "SS").
    if not method.isascii() or not _METHOD_RE.fullmatch(method_upper):
        raise RequestSignatureError(
            f"the HTTP method must be 1 to {METHOD_CHARS_MAX} ASCII letters",
            SignatureRejection.MALFORMED_REQUEST,
        )
    if len(path_with_query) > PATH_WITH_QUERY_CHARS_MAX or not _PATH_RE.fullmatch(path_with_query):
        raise RequestSignatureError(
            "the request target must start with '/' and be at most "
            f"{PATH_WITH_QUERY_CHARS_MAX} characters of printable ASCII without spaces "
            "(percent-encode anything else), exactly as sent",
            SignatureRejection.MALFORMED_REQUEST,
        )
    _check_key_id(key_id)
    if isinstance(timestamp_s, bool) or not 0 <= timestamp_s < 10**TIMESTAMP_DIGITS_MAX:
        raise RequestSignatureError(
            f"{HEADER_TIMESTAMP} must be a whole number of Unix seconds, "
            f"0 or more, with at most {TIMESTAMP_DIGITS_MAX} digits",
            SignatureRejection.MALFORMED_HEADER,
        )
    _check_nonce(nonce)
    _check_body_size(body)
    body_hash = hashlib.sha256(body).hexdigest()
    fields = (method_upper, path_with_query, key_id, str(timestamp_s), nonce, body_hash)
    return SCHEME_PREFIX + "\n".join(fields).encode("ascii")


def check_timestamp(timestamp_s: int, now_s: int) -> None:
    """Refuse a timestamp more than ``SIGNATURE_WINDOW_S`` from ``now_s``, either way.

    Raises RequestSignatureError with reason ``stale_timestamp``.
    """
    skew_s = timestamp_s - now_s
    if abs(skew_s) <= SIGNATURE_WINDOW_S:
        return
    direction = "ahead of" if skew_s > 0 else "behind"
    raise RequestSignatureError(
        f"{HEADER_TIMESTAMP} {timestamp_s} is {abs(skew_s)} seconds {direction} the bank's "
        f"clock ({now_s}); it must be within {SIGNATURE_WINDOW_S} seconds: sign each request "
        "with the current Unix time in seconds and keep the client's clock synchronised",
        SignatureRejection.STALE_TIMESTAMP,
    )


def verify_request(
    algorithm: str,
    key_material: bytes,
    signed: SignedRequestHeaders,
    *,
    method: str,
    path_with_query: str,
    body: bytes,
    now_s: int,
) -> None:
    """Check a request's timestamp, then its signature, with the key ``signed.key_id`` names.

    ``key_material`` is the 32-byte shared secret for ``hmac-sha256`` and the
    32-byte public key for ``ed25519``. The caller looks the key up by
    ``signed.key_id`` (raising ``unknown_key_error`` when there is none) and,
    once this returns, must record the nonce as the design note describes.

    Raises RequestSignatureError (``stale_timestamp``, ``body_too_large``,
    ``malformed_request``, ``malformed_header``, ``bad_signature``), and
    RequestSigningKeyError when the algorithm or key size is wrong.
    """
    algorithm_checked = _check_key_material(algorithm, key_material, for_signing=False)
    check_timestamp(signed.timestamp_s, now_s)
    data = string_to_sign(
        method, path_with_query, signed.key_id, signed.timestamp_s, signed.nonce, body
    )
    if algorithm_checked is SigningAlgorithm.HMAC_SHA256:
        expected = hmac.new(key_material, data, hashlib.sha256).digest()
        valid = hmac.compare_digest(expected, signed.signature)
    else:
        valid = verify_signature(key_material, signed.signature, data)
    if not valid:
        raise RequestSignatureError(
            f"{HEADER_SIGNATURE} does not verify with key {signed.key_id} ({algorithm_checked}): "
            "sign the zhifu-request-v1 string over the method, the request target exactly "
            "as sent, the key id, timestamp, nonce and the hex SHA-256 of the exact body bytes",
            SignatureRejection.BAD_SIGNATURE,
        )


def sign_request(
    algorithm: str,
    key_id: str,
    key_material_or_signer: bytes | Ed25519Signer,
    *,
    method: str,
    path_with_query: str,
    body: bytes,
    now_s: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four signing headers for a request, as a partner's client sends them.

    ``key_material_or_signer`` is the 32-byte shared secret for ``hmac-sha256``;
    for ``ed25519`` it is the 32-byte private seed or an ``Ed25519Signer``. The
    nonce is random unless given (tests only: never reuse one).

    Raises RequestSignatureError for a request that cannot be signed (see
    ``string_to_sign``) and RequestSigningKeyError for a wrong algorithm or key.
    """
    if nonce is None:
        nonce = secrets.token_urlsafe(NONCE_RANDOM_BYTES)
    data = string_to_sign(method, path_with_query, key_id, now_s, nonce, body)
    signature = _sign(algorithm, key_material_or_signer, data)
    return {
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(now_s),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(signature).decode("ascii"),
    }


def unknown_key_error(key_id: str) -> RequestSignatureError:
    """The error for a key id with no active key (the caller raises it)."""
    return RequestSignatureError(
        f"{HEADER_KEY_ID} {key_id} names no active partner key: use the key id issued "
        "with your current API key",
        SignatureRejection.UNKNOWN_KEY,
    )


def replayed_nonce_error(key_id: str, nonce: str) -> RequestSignatureError:
    """The error for a nonce already used with this key (the caller raises it)."""
    return RequestSignatureError(
        f"{HEADER_NONCE} {nonce} was already used with key {key_id}: every request, "
        "including a retry, needs a fresh random nonce and a new signature",
        SignatureRejection.REPLAYED_NONCE,
    )


def new_key_id() -> str:
    """A fresh public key id: ``pk_`` and 24 random url-safe characters."""
    return KEY_ID_PREFIX + secrets.token_urlsafe(KEY_ID_RANDOM_BYTES)


def new_hmac_secret() -> bytes:
    """A fresh random 32-byte shared secret for ``hmac-sha256``."""
    return secrets.token_bytes(HMAC_SECRET_BYTES)


def _find_signing_headers(headers: Mapping[str, str]) -> dict[str, str]:
    wanted = {name.lower(): name for name in SIGNED_HEADERS}
    found: dict[str, str] = {}
    for name, value in headers.items():
        canonical = wanted.get(name.lower())
        if canonical is None:
            continue
        if canonical in found:
            raise RequestSignatureError(
                f"header {canonical} appears more than once: send each signing header once",
                SignatureRejection.MALFORMED_HEADER,
            )
        found[canonical] = value
    return found


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID_RE.fullmatch(key_id):
        raise RequestSignatureError(
            f"{HEADER_KEY_ID} must be {_EXPECTED_KEY_ID}", SignatureRejection.MALFORMED_HEADER
        )


def _check_nonce(nonce: str) -> None:
    if not _NONCE_RE.fullmatch(nonce):
        raise RequestSignatureError(
            f"{HEADER_NONCE} must be {_EXPECTED_NONCE}", SignatureRejection.MALFORMED_HEADER
        )


def _check_body_size(body: bytes) -> None:
    if len(body) > BODY_BYTES_MAX:
        raise RequestSignatureError(
            f"the request body is {len(body)} bytes; a signed request body may be at most "
            f"{BODY_BYTES_MAX} bytes",
            SignatureRejection.BODY_TOO_LARGE,
        )


def _parse_timestamp(text: str) -> int:
    if not _TIMESTAMP_RE.fullmatch(text):
        raise RequestSignatureError(
            f"{HEADER_TIMESTAMP} must be the Unix time in whole seconds, as 1 to "
            f"{TIMESTAMP_DIGITS_MAX} decimal digits without sign, spaces or leading zeros",
            SignatureRejection.MALFORMED_HEADER,
        )
    return int(text)


def _parse_signature(text: str) -> bytes:
    expected = (
        f"{HEADER_SIGNATURE} must be the standard base64 (with padding) of the "
        f"{HMAC_SECRET_BYTES}-byte HMAC-SHA256 or {SIGNATURE_SIZE}-byte Ed25519 signature"
    )
    if not text or len(text) > SIGNATURE_BASE64_CHARS_MAX:
        raise RequestSignatureError(expected, SignatureRejection.MALFORMED_HEADER)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestSignatureError(expected, SignatureRejection.MALFORMED_HEADER) from None


def _check_key_material(
    algorithm: str, key_material: bytes, *, for_signing: bool
) -> SigningAlgorithm:
    try:
        checked = SigningAlgorithm(algorithm)
    except ValueError:
        supported = ", ".join(repr(member.value) for member in SigningAlgorithm)
        raise RequestSigningKeyError(
            f"unsupported signing algorithm {algorithm!r}: expected one of {supported}"
        ) from None
    if checked is SigningAlgorithm.HMAC_SHA256:
        size, what = HMAC_SECRET_BYTES, "an hmac-sha256 secret"
    elif for_signing:
        size, what = SEED_SIZE, "an ed25519 private seed"
    else:
        size, what = PUBLIC_KEY_SIZE, "an ed25519 public key"
    if not isinstance(key_material, bytes) or len(key_material) != size:
        raise RequestSigningKeyError(f"{what} must be {size} bytes")
    return checked


def _sign(algorithm: str, key_material_or_signer: bytes | Ed25519Signer, data: bytes) -> bytes:
    if isinstance(key_material_or_signer, Ed25519Signer):
        if algorithm != SigningAlgorithm.ED25519:
            raise RequestSigningKeyError(
                f"an Ed25519Signer signs only {SigningAlgorithm.ED25519.value!r} requests"
            )
        return key_material_or_signer.sign(data)
    checked = _check_key_material(algorithm, key_material_or_signer, for_signing=True)
    if checked is SigningAlgorithm.HMAC_SHA256:
        return hmac.new(key_material_or_signer, data, hashlib.sha256).digest()
    return Ed25519Signer.from_seed(key_material_or_signer).sign(data)

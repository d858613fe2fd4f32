"""Passkeys: the WebAuthn registration and sign-in ceremonies ("biometric" login).

A thin wrapper around py_webauthn that fixes the choices a bank must not leave
open, and turns every failure into one typed, safe :class:`PasskeyError`.

Rules and invariants:

1. **User verification is required** in both ceremonies. The options ask for it
   (``userVerification: "required"``) and the verifiers refuse a response whose
   UV flag is clear: a passkey here is a fingerprint, face or PIN, never a mere
   tap. User presence is required as well.
2. **A challenge is used once.** The options functions return the challenge
   (:data:`CHALLENGE_BYTES` random bytes) next to the options; the caller stores
   it server-side, bound to the session and the ceremony, and deletes it before
   calling a verifier, whatever the outcome. This module keeps no state.
3. **Origins and the RP id are fixed by configuration** (:class:`RelyingParty`):
   a response signed for another origin or another RP id is refused. Origins
   are ``https://`` (``http://localhost`` only for development), and each
   origin's host is the RP id or a subdomain of it.
4. **The sign count never goes backwards.** When the stored count or the new
   one is non-zero, the new one must be greater (WebAuthn §6.1.1): otherwise
   two copies of the private key may exist, and the sign-in is refused as a
   possible cloned authenticator. Authenticators that always report 0 (synced
   passkeys) pass.
5. **Limits:** responses up to :data:`RESPONSE_JSON_BYTES_MAX` bytes of JSON,
   credential IDs up to :data:`CREDENTIAL_ID_BYTES_MAX` bytes (WebAuthn's own
   limit), at most :data:`PASSKEYS_PER_USER_MAX` passkeys per user.
6. **Algorithms:** EdDSA, ES256 and RS256 only. Attestation is not requested
   ("none"): the bank trusts the user's verified device, not its vendor.

Error messages say which check failed and nothing more: never the client data,
the expected values or py_webauthn's own text. ``PasskeyError.reason`` tells
the caller (and its logs) the same thing as a code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import urlsplit

import webauthn
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from zhifu.identity.errors import IdentityError
from zhifu.invariant import invariant

CHALLENGE_BYTES: Final = 32
CEREMONY_TIMEOUT_MS: Final = 300_000
CREDENTIAL_ID_BYTES_MAX: Final = 1023
RESPONSE_JSON_BYTES_MAX: Final = 64 * 1024
PASSKEYS_PER_USER_MAX: Final = 10
# WebAuthn §5.4.3: a user handle is at most 64 bytes.
USER_ID_BYTES_MAX: Final = 64

ALGORITHMS: Final = (
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
)

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_Parsed = TypeVar("_Parsed")

# What py_webauthn can raise: its own WebAuthnException, and the decoding,
# CBOR and key errors that its parsers let through on hostile input.
_PARSE_ERRORS: Final = (
    WebAuthnException,
    ValueError,  # includes binascii.Error, UnicodeError, json.JSONDecodeError
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
)


class PasskeyFailure(StrEnum):
    """Which check a passkey response failed."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    CEREMONY = "ceremony"
    CHALLENGE = "challenge"
    ORIGIN = "origin"
    RP_ID = "rp_id"
    USER_PRESENCE = "user_presence"
    USER_VERIFICATION = "user_verification"
    ALGORITHM = "algorithm"
    SIGNATURE = "signature"
    SIGN_COUNT = "sign_count"
    LIMIT = "limit"
    UNVERIFIED = "unverified"


_MESSAGES: Final[Mapping[PasskeyFailure, str]] = {
    PasskeyFailure.TOO_LARGE: (
        f"the passkey response is too large: at most {RESPONSE_JSON_BYTES_MAX} bytes of JSON"
    ),
    PasskeyFailure.MALFORMED: "the passkey response is not a well-formed WebAuthn credential",
    PasskeyFailure.CEREMONY: "the passkey response belongs to a different ceremony",
    PasskeyFailure.CHALLENGE: "the passkey response does not match the challenge",
    PasskeyFailure.ORIGIN: "the passkey response comes from a web origin that is not allowed",
    PasskeyFailure.RP_ID: "the passkey belongs to a different site",
    PasskeyFailure.USER_PRESENCE: "the authenticator did not confirm that the user was present",
    PasskeyFailure.USER_VERIFICATION: (
        "the authenticator did not verify the user; a fingerprint, face or PIN is required"
    ),
    PasskeyFailure.ALGORITHM: (
        "the passkey uses a signature algorithm that is not allowed; allowed: EdDSA, ES256, RS256"
    ),
    PasskeyFailure.SIGNATURE: "the passkey signature is not valid",
    PasskeyFailure.SIGN_COUNT: (
        "the passkey's signature counter went backwards: possible cloned authenticator"
    ),
    PasskeyFailure.LIMIT: (
        f"the account already has the most passkeys allowed ({PASSKEYS_PER_USER_MAX});"
        " remove one before adding another"
    ),
    PasskeyFailure.UNVERIFIED: "the passkey response could not be verified",
}

# py_webauthn 3.0 says which check failed only in its messages; each prefix
# maps to a reason, and anything unknown is UNVERIFIED.
_WEBAUTHN_MESSAGE_PREFIXES: Final = (
    ("id and raw_id were not equivalent", PasskeyFailure.MALFORMED),
    ("Unexpected credential type", PasskeyFailure.MALFORMED),
    ("clientDataJSON was malformed", PasskeyFailure.MALFORMED),
    ("attestationObject was malformed", PasskeyFailure.MALFORMED),
    ("authenticatorData was malformed", PasskeyFailure.MALFORMED),
    ("Authenticator did not provide", PasskeyFailure.MALFORMED),
    ("Unexpected token_binding status", PasskeyFailure.MALFORMED),
    ("Unexpected client data type", PasskeyFailure.CEREMONY),
    ("Client data challenge was not expected challenge", PasskeyFailure.CHALLENGE),
    ("Unexpected client data origin", PasskeyFailure.ORIGIN),
    ("Unexpected RP ID hash", PasskeyFailure.RP_ID),
    ("User presence was required", PasskeyFailure.USER_PRESENCE),
    ("User was not present", PasskeyFailure.USER_PRESENCE),
    ("User verification is required", PasskeyFailure.USER_VERIFICATION),
    ("Unsupported credential public key alg", PasskeyFailure.ALGORITHM),
    ("Could not verify authentication signature", PasskeyFailure.SIGNATURE),
)


class PasskeyError(IdentityError):
    """A passkey ceremony failed; ``reason`` says which check, the message says it safely."""

    code = "passkey_invalid"

    def __init__(self, reason: PasskeyFailure) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason = reason


@dataclass(frozen=True)
class RelyingParty:
    """This service as WebAuthn sees it: RP id (a domain), display name, allowed origins."""

    id: str
    name: str
    origins: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.id or self.id != self.id.strip().lower():
            raise ValueError("the RP id must be a non-empty lower-case domain")
        if not self.name.strip():
            raise ValueError("the RP name must not be empty")
        if not self.origins:
            raise ValueError("at least one allowed origin is required")
        for origin in self.origins:
            _check_origin(origin, self.id)


def _check_origin(origin: str, rp_id: str) -> None:
    parts = urlsplit(origin)
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and host == "localhost")
    if not secure or parts.path or parts.query or parts.fragment:
        raise ValueError(f"origin {origin!r} must be https://host[:port] (http only for localhost)")
    if host != rp_id and not host.endswith(f".{rp_id}"):
        raise ValueError(f"origin {origin!r} is not on the RP id {rp_id!r} or a subdomain of it")


@dataclass(frozen=True)
class NewPasskey:
    """A verified registration: what the caller stores for the user."""

    credential_id: bytes
    public_key: bytes  # COSE_Key, as the authenticator sent it
    sign_count: int
    aaguid: str
    backed_up: bool
    device_type: str  # "single_device" or "multi_device"
    transports: tuple[str, ...]


def registration_options(
    rp: RelyingParty,
    *,
    user_id: bytes,
    user_name: str,
    display_name: str,
    exclude_credential_ids: Sequence[bytes] = (),
    challenge: bytes | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.create()``, JSON-ready, and their challenge.

    ``user_id`` is the opaque user handle (no personal data, at most 64 bytes);
    ``exclude_credential_ids`` are the user's existing passkeys, so the same
    authenticator is not registered twice. Raises :class:`PasskeyError`
    (reason LIMIT) when the user already has :data:`PASSKEYS_PER_USER_MAX`.
    """
    invariant(0 < len(user_id) <= USER_ID_BYTES_MAX, "user_id must be 1 to 64 bytes")
    invariant(bool(user_name) and bool(display_name), "user names must not be empty")
    if len(exclude_credential_ids) >= PASSKEYS_PER_USER_MAX:
        raise PasskeyError(PasskeyFailure.LIMIT)
    challenge = _challenge_or_new(challenge)
    options = webauthn.generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_id,
        user_name=user_name,
        user_display_name=display_name,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(exclude_credential_ids),
        supported_pub_key_algs=list(ALGORITHMS),
    )
    return _to_json_dict(webauthn.options_to_json(options)), challenge


def verify_registration(
    rp: RelyingParty,
    response: str | Mapping[str, Any],
    *,
    expected_challenge: bytes,
) -> NewPasskey:
    """Verify the browser's answer to :func:`registration_options`; return what to store.

    Raises :class:`PasskeyError` on any failure: oversize or malformed input,
    wrong ceremony, challenge, origin or RP id, no user verification, an
    algorithm outside EdDSA/ES256/RS256, or an attestation that does not verify.
    """
    _check_expected_challenge(expected_challenge)
    credential = _parse(parse_registration_credential_json, _load_response(response))
    if not 0 < len(credential.raw_id) <= CREDENTIAL_ID_BYTES_MAX:
        raise PasskeyError(PasskeyFailure.MALFORMED)
    try:
        verified = webauthn.verify_registration_response(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_presence=True,
            require_user_verification=True,
            supported_pub_key_algs=list(ALGORITHMS),
        )
    except _PARSE_ERRORS as error:
        _raise_from_webauthn(error)
    # The attested credential ID is the one the authenticator will sign with.
    if verified.credential_id != credential.raw_id:
        raise PasskeyError(PasskeyFailure.MALFORMED)
    transports = credential.response.transports or []
    return NewPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        backed_up=verified.credential_backed_up,
        device_type=verified.credential_device_type.value,
        transports=tuple(transport.value for transport in transports),
    )


def authentication_options(
    rp: RelyingParty,
    *,
    allow_credential_ids: Sequence[bytes] = (),
    challenge: bytes | None = None,
) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.get()``, JSON-ready, and their challenge.

    Leave ``allow_credential_ids`` empty for a username-less sign-in (the
    browser offers the site's discoverable passkeys); give a user's passkeys
    to restrict the choice to them.
    """
    invariant(
        len(allow_credential_ids) <= PASSKEYS_PER_USER_MAX,
        f"a user has at most {PASSKEYS_PER_USER_MAX} passkeys",
    )
    challenge = _challenge_or_new(challenge)
    options = webauthn.generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=_descriptors(allow_credential_ids),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return _to_json_dict(webauthn.options_to_json(options)), challenge


def credential_id_of(response: str | Mapping[str, Any]) -> bytes:
    """The credential ID (``rawId``) of a sign-in response, to look the stored passkey up.

    Nothing is verified yet: the ID only says which public key to verify with.
    Raises :class:`PasskeyError` when the response is oversize or has no
    well-formed ``rawId`` of 1 to :data:`CREDENTIAL_ID_BYTES_MAX` bytes.
    """
    raw_id = _load_response(response).get("rawId")
    if not isinstance(raw_id, str) or not _BASE64URL.fullmatch(raw_id):
        raise PasskeyError(PasskeyFailure.MALFORMED)
    try:
        credential_id = base64.urlsafe_b64decode(raw_id + "=" * (-len(raw_id) % 4))
    except (binascii.Error, ValueError) as error:
        raise PasskeyError(PasskeyFailure.MALFORMED) from error
    if not 0 < len(credential_id) <= CREDENTIAL_ID_BYTES_MAX:
        raise PasskeyError(PasskeyFailure.MALFORMED)
    return credential_id


def verify_authentication(
    rp: RelyingParty,
    response: str | Mapping[str, Any],
    *,
    expected_challenge: bytes,
    public_key: bytes,
    sign_count: int,
) -> int:
    """Verify a sign-in response against the stored passkey; return the new sign count.

    ``public_key`` and ``sign_count`` are the stored passkey's, found with
    :func:`credential_id_of`; the caller stores the returned count. Raises
    :class:`PasskeyError` on any failure: oversize or malformed input, wrong
    ceremony, challenge, origin or RP id, no user presence or verification, a
    bad signature, or a sign count that did not increase (reason SIGN_COUNT).
    """
    _check_expected_challenge(expected_challenge)
    invariant(sign_count >= 0, "a stored sign count is never negative")
    credential = _parse(parse_authentication_credential_json, _load_response(response))
    try:
        # Count 0 switches py_webauthn's counter check off; ours below gives
        # the regression its own reason.
        verified = webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except _PARSE_ERRORS as error:
        _raise_from_webauthn(error)
    new_sign_count = verified.new_sign_count
    if (new_sign_count or sign_count) and new_sign_count <= sign_count:
        raise PasskeyError(PasskeyFailure.SIGN_COUNT)
    return new_sign_count


def _challenge_or_new(challenge: bytes | None) -> bytes:
    if challenge is None:
        return secrets.token_bytes(CHALLENGE_BYTES)
    invariant(
        len(challenge) >= CHALLENGE_BYTES, f"a challenge has at least {CHALLENGE_BYTES} bytes"
    )
    return challenge


def _check_expected_challenge(expected_challenge: bytes) -> None:
    # An empty or short expected challenge means the caller lost the stored one.
    invariant(
        len(expected_challenge) >= CHALLENGE_BYTES,
        f"an expected challenge has at least {CHALLENGE_BYTES} bytes",
    )


def _descriptors(credential_ids: Sequence[bytes]) -> list[PublicKeyCredentialDescriptor]:
    for credential_id in credential_ids:
        invariant(
            0 < len(credential_id) <= CREDENTIAL_ID_BYTES_MAX,
            f"a credential ID has 1 to {CREDENTIAL_ID_BYTES_MAX} bytes",
        )
    return [PublicKeyCredentialDescriptor(id=credential_id) for credential_id in credential_ids]


def _to_json_dict(options_json: str) -> dict[str, Any]:
    options = json.loads(options_json)
    invariant(isinstance(options, dict), "py_webauthn options serialise to a JSON object")
    return dict(options)


def _load_response(response: str | Mapping[str, Any]) -> dict[str, Any]:
    """The response as a plain JSON object, after the size limit; PasskeyError if not."""
    try:
        text = response if isinstance(response, str) else json.dumps(response, default=_plain)
        if len(text) > RESPONSE_JSON_BYTES_MAX:  # cheap: no more bytes than characters
            raise PasskeyError(PasskeyFailure.TOO_LARGE)
        if len(text.encode("utf-8")) > RESPONSE_JSON_BYTES_MAX:
            raise PasskeyError(PasskeyFailure.TOO_LARGE)
        loaded = json.loads(text)
    except (ValueError, TypeError, RecursionError) as error:
        raise PasskeyError(PasskeyFailure.MALFORMED) from error
    if not isinstance(loaded, dict):
        raise PasskeyError(PasskeyFailure.MALFORMED)
    return loaded


def _plain(value: object) -> dict[str, Any]:
    """``json.dumps`` hook: any nested Mapping serialises as a JSON object."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _parse(parser: Callable[[dict[str, Any]], _Parsed], response: dict[str, Any]) -> _Parsed:
    try:
        return parser(response)
    except _PARSE_ERRORS as error:
        raise PasskeyError(PasskeyFailure.MALFORMED) from error


def _raise_from_webauthn(error: Exception) -> NoReturn:
    message = str(error) if isinstance(error, WebAuthnException) else ""
    for prefix, reason in _WEBAUTHN_MESSAGE_PREFIXES:
        if message.startswith(prefix):
            raise PasskeyError(reason) from error
    raise PasskeyError(PasskeyFailure.UNVERIFIED) from error

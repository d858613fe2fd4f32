"""Passkey ceremonies (zhifu.identity.passkeys) against real authenticator responses.

The responses come from py_webauthn's test suite (see passkey_fixtures.py). The
"none" attestation signs nothing over its authenticator data, so tests that need
an odd credential ID or RP id hash rebuild that attestation; everything else is
either the real response or the real response with one field broken.
"""

from __future__ import annotations

import hashlib
import json
import os
from types import MappingProxyType
from typing import Any

import passkey_fixtures as fx
import pytest
import webauthn
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, encode_cbor, parse_cbor

from zhifu.identity.errors import IdentityError
from zhifu.identity.passkeys import (
    CEREMONY_TIMEOUT_MS,
    CHALLENGE_BYTES,
    CREDENTIAL_ID_BYTES_MAX,
    PASSKEYS_PER_USER_MAX,
    RESPONSE_JSON_BYTES_MAX,
    NewPasskey,
    PasskeyError,
    PasskeyFailure,
    RelyingParty,
    authentication_options,
    credential_id_of,
    registration_options,
    verify_authentication,
    verify_registration,
)
from zhifu.invariant import InvariantError

RP = RelyingParty(id=fx.RP_ID, name="智付 Zhifu", origins=(fx.ORIGIN,))
USER_ID = b"\x01" * 16

UV_REGISTRATIONS = [f for f in fx.REGISTRATIONS if f.user_verified]
NO_UV_REGISTRATIONS = [f for f in fx.REGISTRATIONS if not f.user_verified]
UV_AUTHENTICATIONS = [f for f in fx.AUTHENTICATIONS if f.user_verified]
NO_UV_AUTHENTICATIONS = [f for f in fx.AUTHENTICATIONS if not f.user_verified]


def as_dict(response: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response)
    return loaded


def reason_of(excinfo: pytest.ExceptionInfo[PasskeyError]) -> PasskeyFailure:
    return excinfo.value.reason


def verify_auth(
    fixture: fx.AuthenticationFixture,
    response: str | dict[str, Any] | None = None,
    *,
    rp: RelyingParty = RP,
    challenge: bytes | None = None,
    public_key: bytes | None = None,
    sign_count: int | None = None,
) -> int:
    return verify_authentication(
        rp,
        fixture.response if response is None else response,
        expected_challenge=fixture.challenge if challenge is None else challenge,
        public_key=fixture.public_key if public_key is None else public_key,
        sign_count=fixture.stored_sign_count if sign_count is None else sign_count,
    )


def rebuilt_none_registration(
    credential_id: bytes, *, raw_id: bytes | None = None, rp_id: str = fx.RP_ID
) -> str:
    """REGISTRATION_NONE with another credential ID (and maybe RP id hash) in its authData."""
    credential = as_dict(fx.REGISTRATION_NONE.response)
    attestation = parse_cbor(base64url_to_bytes(credential["response"]["attestationObject"]))
    auth_data: bytes = attestation["authData"]
    old_id_length = int.from_bytes(auth_data[53:55], "big")
    attestation["authData"] = (
        hashlib.sha256(rp_id.encode()).digest()
        + auth_data[32:53]
        + len(credential_id).to_bytes(2, "big")
        + credential_id
        + auth_data[55 + old_id_length :]
    )
    credential["response"]["attestationObject"] = bytes_to_base64url(encode_cbor(attestation))
    credential["id"] = credential["rawId"] = bytes_to_base64url(
        credential_id if raw_id is None else raw_id
    )
    return json.dumps(credential)


def padded(response: str, size_bytes: int) -> str:
    """The same JSON, padded with trailing whitespace to exactly ``size_bytes``."""
    padding = size_bytes - len(response.encode())
    assert padding >= 0
    return response + " " * padding


# --- RelyingParty ------------------------------------------------------------------


def test_relying_party_accepts_https_origins_on_its_domain() -> None:
    rp = RelyingParty(
        id="zhifu.example",
        name="Zhifu",
        origins=("https://zhifu.example", "https://m.zhifu.example:8443"),
    )
    assert rp.origins[1] == "https://m.zhifu.example:8443"


@pytest.mark.parametrize(
    ("rp_id", "origins"),
    [
        ("", ("https://zhifu.example",)),
        ("Zhifu.Example", ("https://zhifu.example",)),
        ("zhifu.example", ()),
        ("zhifu.example", ("http://zhifu.example",)),
        ("zhifu.example", ("https://evil.example",)),
        ("zhifu.example", ("https://notzhifu.example",)),
        ("zhifu.example", ("https://zhifu.example/login",)),
        ("zhifu.example", ("zhifu.example",)),
    ],
)
def test_relying_party_rejects_bad_configuration(rp_id: str, origins: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        RelyingParty(id=rp_id, name="Zhifu", origins=origins)


def test_relying_party_needs_a_name() -> None:
    with pytest.raises(ValueError):
        RelyingParty(id="zhifu.example", name=" ", origins=("https://zhifu.example",))


# --- Registration options ------------------------------------------------------


def test_registration_options_require_user_verification_and_a_resident_key() -> None:
    options, challenge = registration_options(
        RP, user_id=USER_ID, user_name="138****8000", display_name="张三"
    )
    assert len(challenge) == CHALLENGE_BYTES
    assert options["challenge"] == bytes_to_base64url(challenge)
    assert options["rp"] == {"id": fx.RP_ID, "name": "智付 Zhifu"}
    assert options["user"] == {
        "id": bytes_to_base64url(USER_ID),
        "name": "138****8000",
        "displayName": "张三",
    }
    selection = options["authenticatorSelection"]
    assert selection["userVerification"] == "required"
    assert selection["residentKey"] == "required"
    assert selection["requireResidentKey"] is True
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [-8, -7, -257]
    assert options["timeout"] == CEREMONY_TIMEOUT_MS
    assert options["attestation"] == "none"
    assert options["excludeCredentials"] == []
    json.dumps(options)  # JSON-ready


def test_registration_options_draw_a_fresh_challenge_each_time() -> None:
    first = registration_options(RP, user_id=USER_ID, user_name="a", display_name="a")[1]
    second = registration_options(RP, user_id=USER_ID, user_name="a", display_name="a")[1]
    assert first != second


def test_registration_options_use_a_given_challenge() -> None:
    challenge = os.urandom(CHALLENGE_BYTES)
    options, returned = registration_options(
        RP, user_id=USER_ID, user_name="a", display_name="a", challenge=challenge
    )
    assert returned == challenge
    assert options["challenge"] == bytes_to_base64url(challenge)


def test_registration_options_refuse_a_short_challenge() -> None:
    with pytest.raises(InvariantError):
        registration_options(
            RP, user_id=USER_ID, user_name="a", display_name="a", challenge=b"\0" * 31
        )


@pytest.mark.parametrize("user_id", [b"", b"\0" * 65])
def test_registration_options_refuse_a_bad_user_handle(user_id: bytes) -> None:
    with pytest.raises(InvariantError):
        registration_options(RP, user_id=user_id, user_name="a", display_name="a")


def test_registration_options_exclude_existing_passkeys_up_to_the_limit() -> None:
    existing = [bytes([n]) * 16 for n in range(PASSKEYS_PER_USER_MAX - 1)]
    options, _ = registration_options(
        RP, user_id=USER_ID, user_name="a", display_name="a", exclude_credential_ids=existing
    )
    assert [d["id"] for d in options["excludeCredentials"]] == [
        bytes_to_base64url(i) for i in existing
    ]
    assert {d["type"] for d in options["excludeCredentials"]} == {"public-key"}


def test_registration_options_refuse_a_passkey_past_the_limit() -> None:
    existing = [bytes([n]) * 16 for n in range(PASSKEYS_PER_USER_MAX)]
    with pytest.raises(PasskeyError) as excinfo:
        registration_options(
            RP, user_id=USER_ID, user_name="a", display_name="a", exclude_credential_ids=existing
        )
    assert reason_of(excinfo) is PasskeyFailure.LIMIT
    assert str(PASSKEYS_PER_USER_MAX) in str(excinfo.value)


# --- Registration ------------------------------------------------------------------


@pytest.mark.parametrize("fixture", UV_REGISTRATIONS)
def test_user_verified_registrations_succeed(fixture: fx.RegistrationFixture) -> None:
    passkey = verify_registration(RP, fixture.response, expected_challenge=fixture.challenge)
    assert passkey.credential_id == fixture.credential_id


def test_registration_returns_what_to_store() -> None:
    passkey = verify_registration(
        RP, fx.REGISTRATION_NONE.response, expected_challenge=fx.REGISTRATION_NONE.challenge
    )
    assert passkey == NewPasskey(
        credential_id=fx.REGISTRATION_NONE.credential_id,
        public_key=fx.REGISTRATION_NONE_PUBLIC_KEY,
        sign_count=23,
        aaguid="00000000-0000-0000-0000-000000000000",
        backed_up=False,
        device_type="single_device",
        # The fixture puts transports beside "response", where WebAuthn's JSON
        # form does not have them.
        transports=(),
    )


def test_registration_reads_transports_from_the_response() -> None:
    credential = as_dict(fx.REGISTRATION_NONE.response)
    credential["response"]["transports"] = ["internal", "hybrid", "carrier-pigeon"]
    passkey = verify_registration(RP, credential, expected_challenge=fx.REGISTRATION_NONE.challenge)
    assert passkey.transports == ("internal", "hybrid")


def test_registration_accepts_any_mapping() -> None:
    credential = as_dict(fx.REGISTRATION_NONE.response)
    credential["response"] = MappingProxyType(credential["response"])
    passkey = verify_registration(
        RP, MappingProxyType(credential), expected_challenge=fx.REGISTRATION_NONE.challenge
    )
    assert passkey.credential_id == fx.REGISTRATION_NONE.credential_id


def test_registration_accepts_any_allowed_origin() -> None:
    rp = RelyingParty(id=fx.RP_ID, name="Zhifu", origins=("http://localhost:8000", fx.ORIGIN))
    passkey = verify_registration(
        rp, fx.REGISTRATION_PACKED.response, expected_challenge=fx.REGISTRATION_PACKED.challenge
    )
    assert passkey.credential_id == fx.REGISTRATION_PACKED.credential_id


@pytest.mark.parametrize("fixture", NO_UV_REGISTRATIONS)
def test_registration_without_user_verification_fails(fixture: fx.RegistrationFixture) -> None:
    # Control: the response is otherwise valid; py_webauthn's default accepts it.
    webauthn.verify_registration_response(
        credential=fixture.response,
        expected_challenge=fixture.challenge,
        expected_rp_id=fx.RP_ID,
        expected_origin=fx.ORIGIN,
    )
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, fixture.response, expected_challenge=fixture.challenge)
    assert reason_of(excinfo) is PasskeyFailure.USER_VERIFICATION
    assert "fingerprint, face or PIN" in str(excinfo.value)


@pytest.mark.parametrize("fixture", UV_REGISTRATIONS)
def test_registration_with_another_challenge_fails(fixture: fx.RegistrationFixture) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, fixture.response, expected_challenge=os.urandom(CHALLENGE_BYTES))
    assert reason_of(excinfo) is PasskeyFailure.CHALLENGE
    assert str(excinfo.value) == "the passkey response does not match the challenge"
    assert excinfo.value.code == "passkey_invalid"
    assert isinstance(excinfo.value, IdentityError)


@pytest.mark.parametrize("fixture", UV_REGISTRATIONS)
def test_registration_from_another_origin_fails(fixture: fx.RegistrationFixture) -> None:
    rp = RelyingParty(id=fx.RP_ID, name="Zhifu", origins=("http://localhost:8000",))
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(rp, fixture.response, expected_challenge=fixture.challenge)
    assert reason_of(excinfo) is PasskeyFailure.ORIGIN
    assert "localhost" not in str(excinfo.value)  # no expected or received values


def test_registration_for_another_rp_id_fails() -> None:
    response = rebuilt_none_registration(fx.REGISTRATION_NONE.credential_id, rp_id="evil.example")
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, response, expected_challenge=fx.REGISTRATION_NONE.challenge)
    assert reason_of(excinfo) is PasskeyFailure.RP_ID


def test_registration_checked_by_another_relying_party_fails() -> None:
    rp = RelyingParty(id="zhifu.example", name="Zhifu", origins=("https://zhifu.example",))
    with pytest.raises(PasskeyError):
        verify_registration(
            rp, fx.REGISTRATION_NONE.response, expected_challenge=fx.REGISTRATION_NONE.challenge
        )


def test_registration_with_a_tampered_attestation_signature_fails() -> None:
    credential = as_dict(fx.REGISTRATION_PACKED.response)
    attestation = parse_cbor(base64url_to_bytes(credential["response"]["attestationObject"]))
    signature = bytearray(attestation["attStmt"]["sig"])
    signature[-1] ^= 0x01
    attestation["attStmt"]["sig"] = bytes(signature)
    credential["response"]["attestationObject"] = bytes_to_base64url(encode_cbor(attestation))
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, credential, expected_challenge=fx.REGISTRATION_PACKED.challenge)
    assert reason_of(excinfo) is PasskeyFailure.UNVERIFIED


def test_registration_response_to_a_sign_in_fails() -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(
            RP, fx.AUTHENTICATION_RSA.response, expected_challenge=fx.AUTHENTICATION_RSA.challenge
        )
    assert reason_of(excinfo) is PasskeyFailure.MALFORMED


def test_registration_accepts_a_credential_id_at_the_limit() -> None:
    credential_id = b"\xab" * CREDENTIAL_ID_BYTES_MAX
    passkey = verify_registration(
        RP,
        rebuilt_none_registration(credential_id),
        expected_challenge=fx.REGISTRATION_NONE.challenge,
    )
    assert passkey.credential_id == credential_id


def test_registration_refuses_a_credential_id_past_the_limit() -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(
            RP,
            rebuilt_none_registration(b"\xab" * (CREDENTIAL_ID_BYTES_MAX + 1)),
            expected_challenge=fx.REGISTRATION_NONE.challenge,
        )
    assert reason_of(excinfo) is PasskeyFailure.MALFORMED


def test_registration_refuses_a_raw_id_other_than_the_attested_one() -> None:
    response = rebuilt_none_registration(b"\x01" * 32, raw_id=b"\x02" * 32)
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, response, expected_challenge=fx.REGISTRATION_NONE.challenge)
    assert reason_of(excinfo) is PasskeyFailure.MALFORMED


def test_registration_accepts_a_response_at_the_size_limit() -> None:
    response = padded(fx.REGISTRATION_PACKED.response, RESPONSE_JSON_BYTES_MAX)
    verify_registration(RP, response, expected_challenge=fx.REGISTRATION_PACKED.challenge)


def test_registration_refuses_a_response_past_the_size_limit() -> None:
    response = padded(fx.REGISTRATION_PACKED.response, RESPONSE_JSON_BYTES_MAX + 1)
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, response, expected_challenge=fx.REGISTRATION_PACKED.challenge)
    assert reason_of(excinfo) is PasskeyFailure.TOO_LARGE
    assert str(RESPONSE_JSON_BYTES_MAX) in str(excinfo.value)


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    credential = as_dict(fx.REGISTRATION_NONE.response)
    credential["note"] = "码" * (RESPONSE_JSON_BYTES_MAX // 3)
    text = json.dumps(credential, ensure_ascii=False)
    assert len(text) <= RESPONSE_JSON_BYTES_MAX < len(text.encode())
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, text, expected_challenge=fx.REGISTRATION_NONE.challenge)
    assert reason_of(excinfo) is PasskeyFailure.TOO_LARGE


def test_size_limit_applies_to_mappings_too() -> None:
    credential = as_dict(fx.REGISTRATION_NONE.response)
    credential["note"] = "x" * RESPONSE_JSON_BYTES_MAX
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, credential, expected_challenge=fx.REGISTRATION_NONE.challenge)
    assert reason_of(excinfo) is PasskeyFailure.TOO_LARGE


def _malformed_registrations() -> list[Any]:
    good = as_dict(fx.REGISTRATION_NONE.response)
    no_attestation = as_dict(fx.REGISTRATION_NONE.response)
    del no_attestation["response"]["attestationObject"]
    bad_cbor = as_dict(fx.REGISTRATION_NONE.response)
    bad_cbor["response"]["attestationObject"] = "AAAA"
    bad_client_data = as_dict(fx.REGISTRATION_NONE.response)
    bad_client_data["response"]["clientDataJSON"] = bytes_to_base64url(b"{not json")
    mismatched_id = dict(good, id=bytes_to_base64url(b"other"))
    wrong_type = dict(good, type="password")
    return [
        "",
        "{",
        "not json",
        "null",
        "[]",
        '"string"',
        "[" * 100_000,  # past the size limit
        "[" * 50_000,  # deep nesting within it
        {},
        {"id": 1, "rawId": 1},
        {"set": object()},
        no_attestation,
        bad_cbor,
        bad_client_data,
        mismatched_id,
        wrong_type,
        "\ud800",  # a lone surrogate: not encodable
    ]


@pytest.mark.parametrize("response", _malformed_registrations())
def test_malformed_registration_responses_fail(response: Any) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_registration(RP, response, expected_challenge=fx.REGISTRATION_NONE.challenge)
    assert reason_of(excinfo) in {PasskeyFailure.MALFORMED, PasskeyFailure.TOO_LARGE}


def test_registration_needs_a_full_length_expected_challenge() -> None:
    with pytest.raises(InvariantError):
        verify_registration(RP, fx.REGISTRATION_NONE.response, expected_challenge=b"")


# --- Authentication options ------------------------------------------------------


def test_authentication_options_require_user_verification() -> None:
    options, challenge = authentication_options(RP)
    assert len(challenge) == CHALLENGE_BYTES
    assert options["challenge"] == bytes_to_base64url(challenge)
    assert options["userVerification"] == "required"
    assert options["rpId"] == fx.RP_ID
    assert options["timeout"] == CEREMONY_TIMEOUT_MS
    assert options["allowCredentials"] == []
    assert authentication_options(RP)[1] != challenge


def test_authentication_options_allow_a_users_passkeys_up_to_the_limit() -> None:
    allowed = [bytes([n]) * 16 for n in range(PASSKEYS_PER_USER_MAX)]
    challenge = os.urandom(CHALLENGE_BYTES)
    options, returned = authentication_options(
        RP, allow_credential_ids=allowed, challenge=challenge
    )
    assert returned == challenge
    assert [d["id"] for d in options["allowCredentials"]] == [
        bytes_to_base64url(i) for i in allowed
    ]


def test_authentication_options_refuse_more_passkeys_than_a_user_can_have() -> None:
    allowed = [bytes([n]) * 16 for n in range(PASSKEYS_PER_USER_MAX + 1)]
    with pytest.raises(InvariantError):
        authentication_options(RP, allow_credential_ids=allowed)


@pytest.mark.parametrize("credential_id", [b"", b"\0" * (CREDENTIAL_ID_BYTES_MAX + 1)])
def test_authentication_options_refuse_impossible_credential_ids(credential_id: bytes) -> None:
    with pytest.raises(InvariantError):
        authentication_options(RP, allow_credential_ids=[credential_id])


# --- Credential ID lookup ----------------------------------------------------------


@pytest.mark.parametrize("fixture", fx.AUTHENTICATIONS)
def test_credential_id_of_reads_the_raw_id(fixture: fx.AuthenticationFixture) -> None:
    assert credential_id_of(fixture.response) == fixture.credential_id
    assert credential_id_of(as_dict(fixture.response)) == fixture.credential_id


def test_credential_id_of_accepts_an_id_at_the_limit() -> None:
    credential_id = b"\x5a" * CREDENTIAL_ID_BYTES_MAX
    response = {"rawId": bytes_to_base64url(credential_id)}
    assert credential_id_of(response) == credential_id


@pytest.mark.parametrize(
    "response",
    [
        {"rawId": bytes_to_base64url(b"\x5a" * (CREDENTIAL_ID_BYTES_MAX + 1))},
        {"rawId": ""},
        {"rawId": "a"},  # one base64 character is not a whole byte
        {"rawId": "abc+/def"},  # standard base64, not base64url
        {"rawId": "abc="},  # padding
        {"rawId": 12},
        {},
        [],
        "{",
        "null",
    ],
)
def test_credential_id_of_refuses_malformed_responses(response: Any) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        credential_id_of(response)
    assert reason_of(excinfo) is PasskeyFailure.MALFORMED


def test_credential_id_of_enforces_the_size_limit() -> None:
    response = padded(fx.AUTHENTICATION_RSA.response, RESPONSE_JSON_BYTES_MAX + 1)
    with pytest.raises(PasskeyError) as excinfo:
        credential_id_of(response)
    assert reason_of(excinfo) is PasskeyFailure.TOO_LARGE


# --- Authentication ------------------------------------------------------------------


@pytest.mark.parametrize("fixture", UV_AUTHENTICATIONS)
def test_user_verified_sign_ins_succeed(fixture: fx.AuthenticationFixture) -> None:
    assert verify_auth(fixture) == fixture.new_sign_count
    assert verify_auth(fixture, as_dict(fixture.response)) == fixture.new_sign_count


@pytest.mark.parametrize("fixture", NO_UV_AUTHENTICATIONS)
def test_sign_in_without_user_verification_fails(fixture: fx.AuthenticationFixture) -> None:
    # Control: the response is otherwise valid; py_webauthn's default accepts it.
    verified = webauthn.verify_authentication_response(
        credential=fixture.response,
        expected_challenge=fixture.challenge,
        expected_rp_id=fx.RP_ID,
        expected_origin=fx.ORIGIN,
        credential_public_key=fixture.public_key,
        credential_current_sign_count=fixture.stored_sign_count,
    )
    assert verified.new_sign_count == fixture.new_sign_count
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fixture)
    assert reason_of(excinfo) is PasskeyFailure.USER_VERIFICATION


@pytest.mark.parametrize("fixture", UV_AUTHENTICATIONS)
def test_sign_in_with_another_challenge_fails(fixture: fx.AuthenticationFixture) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fixture, challenge=os.urandom(CHALLENGE_BYTES))
    assert reason_of(excinfo) is PasskeyFailure.CHALLENGE


@pytest.mark.parametrize("fixture", UV_AUTHENTICATIONS)
def test_sign_in_from_another_origin_fails(fixture: fx.AuthenticationFixture) -> None:
    rp = RelyingParty(id=fx.RP_ID, name="Zhifu", origins=("http://localhost:8000",))
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fixture, rp=rp)
    assert reason_of(excinfo) is PasskeyFailure.ORIGIN


@pytest.mark.parametrize("fixture", UV_AUTHENTICATIONS)
def test_sign_in_for_another_rp_id_fails(fixture: fx.AuthenticationFixture) -> None:
    credential = as_dict(fixture.response)
    auth_data = base64url_to_bytes(credential["response"]["authenticatorData"])
    evil = hashlib.sha256(b"evil.example").digest() + auth_data[32:]
    credential["response"]["authenticatorData"] = bytes_to_base64url(evil)
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fixture, credential)
    assert reason_of(excinfo) is PasskeyFailure.RP_ID


def test_sign_in_checked_by_another_relying_party_fails() -> None:
    rp = RelyingParty(id="zhifu.example", name="Zhifu", origins=("https://zhifu.example",))
    with pytest.raises(PasskeyError):
        verify_auth(fx.AUTHENTICATION_RSA, rp=rp)


@pytest.mark.parametrize("fixture", UV_AUTHENTICATIONS)
def test_sign_in_with_a_tampered_signature_fails(fixture: fx.AuthenticationFixture) -> None:
    credential = as_dict(fixture.response)
    signature = bytearray(base64url_to_bytes(credential["response"]["signature"]))
    signature[-1] ^= 0x01
    credential["response"]["signature"] = bytes_to_base64url(bytes(signature))
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fixture, credential)
    assert reason_of(excinfo) is PasskeyFailure.SIGNATURE
    assert str(excinfo.value) == "the passkey signature is not valid"


@pytest.mark.parametrize("fixture", UV_AUTHENTICATIONS)
def test_sign_in_with_a_raised_counter_fails(fixture: fx.AuthenticationFixture) -> None:
    # An attacker may not bump the counter past a clone check: it is signed.
    credential = as_dict(fixture.response)
    auth_data = base64url_to_bytes(credential["response"]["authenticatorData"])
    bumped = auth_data[:33] + (2**32 - 1).to_bytes(4, "big") + auth_data[37:]
    credential["response"]["authenticatorData"] = bytes_to_base64url(bumped)
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fixture, credential)
    assert reason_of(excinfo) is PasskeyFailure.SIGNATURE


def test_sign_in_with_another_passkeys_public_key_fails() -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_ES256, public_key=fx.REGISTRATION_NONE_PUBLIC_KEY)
    assert reason_of(excinfo) is PasskeyFailure.SIGNATURE


def test_sign_in_with_a_corrupt_stored_public_key_fails() -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_ES256, public_key=b"\xa0")
    assert reason_of(excinfo) is PasskeyFailure.UNVERIFIED


def test_sign_in_response_to_a_registration_fails() -> None:
    # The registration's clientDataJSON says "webauthn.create".
    credential = as_dict(fx.AUTHENTICATION_RSA.response)
    registration = as_dict(fx.REGISTRATION_NONE.response)
    credential["response"]["clientDataJSON"] = registration["response"]["clientDataJSON"]
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_RSA, credential, challenge=fx.REGISTRATION_NONE.challenge)
    assert reason_of(excinfo) is PasskeyFailure.CEREMONY


@pytest.mark.parametrize(
    "stored",
    [fx.AUTHENTICATION_ES256.new_sign_count, fx.AUTHENTICATION_ES256.new_sign_count + 1, 2**32 - 1],
)
def test_sign_count_that_does_not_increase_fails(stored: int) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_ES256, sign_count=stored)
    assert reason_of(excinfo) is PasskeyFailure.SIGN_COUNT
    assert "possible cloned authenticator" in str(excinfo.value)


def test_sign_count_one_below_the_new_count_passes() -> None:
    fixture = fx.AUTHENTICATION_ES256
    assert verify_auth(fixture, sign_count=fixture.new_sign_count - 1) == fixture.new_sign_count


def test_sign_count_regression_from_a_small_stored_count_fails() -> None:
    # The RSA response reports 1; the passkey had already reached 5.
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_RSA, sign_count=5)
    assert reason_of(excinfo) is PasskeyFailure.SIGN_COUNT


def test_a_forged_response_is_a_signature_failure_not_a_sign_count_one() -> None:
    credential = as_dict(fx.AUTHENTICATION_RSA.response)
    credential["response"]["signature"] = bytes_to_base64url(b"\0" * 256)
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_RSA, credential, sign_count=5)
    assert reason_of(excinfo) is PasskeyFailure.SIGNATURE


def test_sign_in_accepts_a_response_at_the_size_limit() -> None:
    fixture = fx.AUTHENTICATION_RSA
    response = padded(fixture.response, RESPONSE_JSON_BYTES_MAX)
    assert verify_auth(fixture, response) == fixture.new_sign_count


def test_sign_in_refuses_a_response_past_the_size_limit() -> None:
    response = padded(fx.AUTHENTICATION_RSA.response, RESPONSE_JSON_BYTES_MAX + 1)
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_RSA, response)
    assert reason_of(excinfo) is PasskeyFailure.TOO_LARGE


def _malformed_sign_ins() -> list[Any]:
    no_signature = as_dict(fx.AUTHENTICATION_RSA.response)
    del no_signature["response"]["signature"]
    short_auth_data = as_dict(fx.AUTHENTICATION_RSA.response)
    short_auth_data["response"]["authenticatorData"] = "AAAA"
    bad_user_handle = as_dict(fx.AUTHENTICATION_RSA.response)
    bad_user_handle["response"]["userHandle"] = 7
    mismatched_id = dict(as_dict(fx.AUTHENTICATION_RSA.response), id="b3RoZXI")
    return [
        "{",
        "null",
        "[]",
        {},
        fx.REGISTRATION_NONE.response,
        no_signature,
        short_auth_data,
        bad_user_handle,
        mismatched_id,
    ]


@pytest.mark.parametrize("response", _malformed_sign_ins())
def test_malformed_sign_in_responses_fail(response: Any) -> None:
    with pytest.raises(PasskeyError) as excinfo:
        verify_auth(fx.AUTHENTICATION_RSA, response)
    assert reason_of(excinfo) is PasskeyFailure.MALFORMED


def test_sign_in_needs_a_full_length_expected_challenge() -> None:
    with pytest.raises(InvariantError):
        verify_auth(fx.AUTHENTICATION_RSA, challenge=b"\0" * (CHALLENGE_BYTES - 1))


def test_every_failure_has_a_message_without_internals() -> None:
    for reason in PasskeyFailure:
        message = str(PasskeyError(reason))
        assert message
        assert "py_webauthn" not in message
        assert "__cause__" not in message

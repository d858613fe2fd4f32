"""Partner request signing: round trips, every tamper, limits, malformed headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import replace

import pytest

from zhifu.security.request_signing import (
    BODY_BYTES_MAX,
    HEADER_KEY_ID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HMAC_SECRET_BYTES,
    KEY_ID_CHARS_MAX,
    NONCE_CHARS_MAX,
    NONCE_CHARS_MIN,
    NONCE_TTL_S,
    PATH_WITH_QUERY_CHARS_MAX,
    SIGNATURE_WINDOW_S,
    RequestSignatureError,
    RequestSigningKeyError,
    SignatureRejection,
    SignedRequestHeaders,
    SigningAlgorithm,
    check_timestamp,
    new_hmac_secret,
    new_key_id,
    parse_headers,
    replayed_nonce_error,
    sign_request,
    string_to_sign,
    unknown_key_error,
    verify_request,
)
from zhifu.security.signing import Ed25519Signer

NOW_S = 1_767_225_600
KEY_ID = "pk_AbCdEfGhIjKlMnOpQrStUvWx"
NONCE = "n0nce_with-enough-chars"
METHOD = "POST"
PATH = "/v1/partner/payments?merchant=m_1&x=%20y"
BODY = b'{"amount_minor": 12345, "currency": "CNY"}'
HMAC_SECRET = bytes(range(HMAC_SECRET_BYTES))
ED25519_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED25519_PUBLIC = Ed25519Signer.from_seed(ED25519_SEED).public_key_bytes

# (algorithm, signing key, verifying key)
KEYS = [
    pytest.param(SigningAlgorithm.HMAC_SHA256, HMAC_SECRET, HMAC_SECRET, id="hmac-sha256"),
    pytest.param(SigningAlgorithm.ED25519, ED25519_SEED, ED25519_PUBLIC, id="ed25519"),
]


def _headers(
    algorithm: str, signing_key: bytes | Ed25519Signer, **overrides: object
) -> dict[str, str]:
    arguments: dict[str, object] = {
        "method": METHOD,
        "path_with_query": PATH,
        "body": BODY,
        "now_s": NOW_S,
        "nonce": NONCE,
    }
    arguments.update(overrides)
    return sign_request(algorithm, KEY_ID, signing_key, **arguments)  # type: ignore[arg-type]


def _verify(
    algorithm: str, verifying_key: bytes, signed: SignedRequestHeaders, **overrides: object
) -> None:
    arguments: dict[str, object] = {
        "method": METHOD,
        "path_with_query": PATH,
        "body": BODY,
        "now_s": NOW_S,
    }
    arguments.update(overrides)
    verify_request(algorithm, verifying_key, signed, **arguments)  # type: ignore[arg-type]


def _rejection(excinfo: pytest.ExceptionInfo[RequestSignatureError]) -> SignatureRejection:
    return excinfo.value.reason


# --- round trips and the known answer ---------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "signing_key", "verifying_key"), KEYS)
def test_round_trip(algorithm: str, signing_key: bytes, verifying_key: bytes) -> None:
    headers = _headers(algorithm, signing_key)
    assert set(headers) == {HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE}
    signed = parse_headers(headers)
    assert signed.key_id == KEY_ID
    assert signed.timestamp_s == NOW_S
    assert signed.nonce == NONCE
    _verify(algorithm, verifying_key, signed)


def test_round_trip_with_ed25519_signer_and_empty_body() -> None:
    signer = Ed25519Signer.generate()
    headers = sign_request(
        "ed25519", KEY_ID, signer, method="get", path_with_query="/", body=b"", now_s=NOW_S
    )
    signed = parse_headers(headers)
    assert len(signed.signature) == 64
    verify_request(
        "ed25519",
        signer.public_key_bytes,
        signed,
        method="GET",
        path_with_query="/",
        body=b"",
        now_s=NOW_S,
    )


def test_hmac_known_answer() -> None:
    body_hash = hashlib.sha256(BODY).hexdigest()
    message = (f"zhifu-request-v1\nPOST\n{PATH}\n{KEY_ID}\n{NOW_S}\n{NONCE}\n{body_hash}").encode()
    expected = base64.b64encode(hmac.new(HMAC_SECRET, message, hashlib.sha256).digest()).decode()
    assert string_to_sign("post", PATH, KEY_ID, NOW_S, NONCE, BODY) == message
    assert _headers("hmac-sha256", HMAC_SECRET)[HEADER_SIGNATURE] == expected


def test_ed25519_signature_is_over_the_string_to_sign() -> None:
    headers = _headers("ed25519", ED25519_SEED)
    message = string_to_sign(METHOD, PATH, KEY_ID, NOW_S, NONCE, BODY)
    expected = Ed25519Signer.from_seed(ED25519_SEED).sign(message)
    assert base64.b64decode(headers[HEADER_SIGNATURE]) == expected


def test_empty_body_hashes_the_empty_string() -> None:
    data = string_to_sign("GET", "/", KEY_ID, NOW_S, NONCE, b"")
    assert data.endswith(b"\n" + hashlib.sha256(b"").hexdigest().encode())


def test_default_nonce_is_random_and_valid() -> None:
    first = sign_request(
        "hmac-sha256", KEY_ID, HMAC_SECRET, method="GET", path_with_query="/", body=b"", now_s=1
    )
    second = sign_request(
        "hmac-sha256", KEY_ID, HMAC_SECRET, method="GET", path_with_query="/", body=b"", now_s=1
    )
    assert first[HEADER_NONCE] != second[HEADER_NONCE]
    assert NONCE_CHARS_MIN <= len(first[HEADER_NONCE]) <= NONCE_CHARS_MAX
    assert parse_headers(first).nonce == first[HEADER_NONCE]


# --- tampering -------------------------------------------------------------------------------


TAMPERED_REQUESTS = [
    pytest.param({"method": "PUT"}, id="method"),
    pytest.param({"path_with_query": "/v1/partner/refunds?merchant=m_1&x=%20y"}, id="path"),
    pytest.param({"path_with_query": "/v1/partner/payments?merchant=m_2&x=%20y"}, id="query"),
    pytest.param({"path_with_query": "/v1/partner/payments?merchant=m_1&x="}, id="query-cut"),
    pytest.param({"path_with_query": "/v1/partner/payments?merchant=m_1&x=+y"}, id="re-encoded"),
    pytest.param({"path_with_query": "/v1/partner/payments"}, id="query-dropped"),
    pytest.param({"body": BODY.replace(b"12345", b"92345")}, id="body"),
    pytest.param({"body": BODY + b" "}, id="body-extended"),
    pytest.param({"body": b""}, id="body-dropped"),
]


@pytest.mark.parametrize(("algorithm", "signing_key", "verifying_key"), KEYS)
@pytest.mark.parametrize("tamper", TAMPERED_REQUESTS)
def test_tampered_request_is_refused(
    algorithm: str, signing_key: bytes, verifying_key: bytes, tamper: dict[str, object]
) -> None:
    signed = parse_headers(_headers(algorithm, signing_key))
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify(algorithm, verifying_key, signed, **tamper)
    assert _rejection(excinfo) is SignatureRejection.BAD_SIGNATURE


TAMPERED_HEADERS = [
    pytest.param({"key_id": "pk_AbCdEfGhIjKlMnOpQrStUvWy"}, id="key-id"),
    pytest.param({"timestamp_s": NOW_S + 1}, id="timestamp"),
    pytest.param({"nonce": NONCE + "x"}, id="nonce"),
]


@pytest.mark.parametrize(("algorithm", "signing_key", "verifying_key"), KEYS)
@pytest.mark.parametrize("tamper", TAMPERED_HEADERS)
def test_tampered_header_is_refused(
    algorithm: str, signing_key: bytes, verifying_key: bytes, tamper: dict[str, object]
) -> None:
    signed = replace(parse_headers(_headers(algorithm, signing_key)), **tamper)  # type: ignore[arg-type]
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify(algorithm, verifying_key, signed)
    assert _rejection(excinfo) is SignatureRejection.BAD_SIGNATURE


@pytest.mark.parametrize(("algorithm", "signing_key", "verifying_key"), KEYS)
def test_tampered_signature_is_refused(
    algorithm: str, signing_key: bytes, verifying_key: bytes
) -> None:
    signed = parse_headers(_headers(algorithm, signing_key))
    for index in (0, len(signed.signature) - 1):
        flipped = bytearray(signed.signature)
        flipped[index] ^= 1
        for signature in (bytes(flipped), signed.signature[:-1], signed.signature + b"\x00", b""):
            with pytest.raises(RequestSignatureError) as excinfo:
                _verify(algorithm, verifying_key, replace(signed, signature=signature))
            assert _rejection(excinfo) is SignatureRejection.BAD_SIGNATURE


def test_other_key_is_refused() -> None:
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET))
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", new_hmac_secret(), signed)
    assert _rejection(excinfo) is SignatureRejection.BAD_SIGNATURE
    signed = parse_headers(_headers("ed25519", ED25519_SEED))
    with pytest.raises(RequestSignatureError):
        _verify("ed25519", Ed25519Signer.generate().public_key_bytes, signed)


def test_hmac_signature_does_not_pass_as_ed25519_or_back() -> None:
    hmac_signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET))
    with pytest.raises(RequestSignatureError):
        _verify("ed25519", ED25519_PUBLIC, hmac_signed)
    ed_signed = parse_headers(_headers("ed25519", ED25519_SEED))
    with pytest.raises(RequestSignatureError):
        _verify("hmac-sha256", HMAC_SECRET, ed_signed)


def test_bad_signature_message_holds_no_secret_or_expected_signature() -> None:
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET))
    expected = signed.signature
    wrong = replace(signed, signature=bytes(32))
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", HMAC_SECRET, wrong)
    message = str(excinfo.value)
    assert KEY_ID in message
    for secret_form in (expected.hex(), base64.b64encode(expected).decode(), HMAC_SECRET.hex()):
        assert secret_form not in message
    assert base64.b64encode(HMAC_SECRET).decode() not in message
    assert excinfo.value.__cause__ is None


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize("skew_s", [-SIGNATURE_WINDOW_S, 0, SIGNATURE_WINDOW_S])
def test_timestamp_inside_window_is_accepted(skew_s: int) -> None:
    check_timestamp(NOW_S + skew_s, NOW_S)
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET, now_s=NOW_S + skew_s))
    _verify("hmac-sha256", HMAC_SECRET, signed)


@pytest.mark.parametrize(
    ("skew_s", "word"), [(-SIGNATURE_WINDOW_S - 1, "behind"), (SIGNATURE_WINDOW_S + 1, "ahead")]
)
def test_timestamp_one_second_past_window_is_refused(skew_s: int, word: str) -> None:
    with pytest.raises(RequestSignatureError) as excinfo:
        check_timestamp(NOW_S + skew_s, NOW_S)
    assert _rejection(excinfo) is SignatureRejection.STALE_TIMESTAMP
    assert word in str(excinfo.value)
    assert str(SIGNATURE_WINDOW_S) in str(excinfo.value)
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET, now_s=NOW_S + skew_s))
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", HMAC_SECRET, signed)
    assert _rejection(excinfo) is SignatureRejection.STALE_TIMESTAMP


def test_stale_timestamp_is_refused_before_the_signature_is_checked() -> None:
    signed = replace(
        parse_headers(_headers("hmac-sha256", HMAC_SECRET)), timestamp_s=0, signature=b""
    )
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", HMAC_SECRET, signed)
    assert _rejection(excinfo) is SignatureRejection.STALE_TIMESTAMP


def test_nonce_ttl_covers_the_whole_window() -> None:
    assert NONCE_TTL_S == 2 * SIGNATURE_WINDOW_S


# --- nonces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [NONCE_CHARS_MIN, NONCE_CHARS_MAX])
def test_nonce_at_length_limits_is_accepted(length: int) -> None:
    nonce = ("aZ09_-" * 20)[:length]
    headers = _headers("hmac-sha256", HMAC_SECRET, nonce=nonce)
    signed = parse_headers(headers)
    assert signed.nonce == nonce
    _verify("hmac-sha256", HMAC_SECRET, signed)


@pytest.mark.parametrize(
    "nonce",
    [
        pytest.param("a" * (NONCE_CHARS_MIN - 1), id="one-too-short"),
        pytest.param("a" * (NONCE_CHARS_MAX + 1), id="one-too-long"),
        pytest.param("a" * 15 + "=", id="padding"),
        pytest.param("a" * 15 + "/", id="slash"),
        pytest.param("a" * 16 + "\n", id="newline"),
        pytest.param("a" * 15 + "é", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_malformed_nonce_is_refused(nonce: str) -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    headers[HEADER_NONCE] = nonce
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER
    assert f"{NONCE_CHARS_MIN} to {NONCE_CHARS_MAX}" in str(excinfo.value)
    with pytest.raises(RequestSignatureError) as excinfo:
        _headers("hmac-sha256", HMAC_SECRET, nonce=nonce)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER


def test_replayed_nonce_error() -> None:
    error = replayed_nonce_error(KEY_ID, NONCE)
    assert error.reason is SignatureRejection.REPLAYED_NONCE
    assert NONCE in str(error)
    assert KEY_ID in str(error)


# --- key ids ---------------------------------------------------------------------------------


def test_new_key_id_and_secret() -> None:
    key_id = new_key_id()
    assert re.fullmatch(r"pk_[A-Za-z0-9_-]{24}", key_id)
    assert new_key_id() != key_id
    secret = new_hmac_secret()
    assert len(secret) == HMAC_SECRET_BYTES
    assert new_hmac_secret() != secret
    headers = sign_request(
        "hmac-sha256", key_id, secret, method="GET", path_with_query="/", body=b"", now_s=NOW_S
    )
    verify_request(
        "hmac-sha256",
        secret,
        parse_headers(headers),
        method="GET",
        path_with_query="/",
        body=b"",
        now_s=NOW_S,
    )


def test_key_id_at_length_limit_is_accepted_and_one_past_refused() -> None:
    longest = "pk_" + "k" * (KEY_ID_CHARS_MAX - 3)
    headers = sign_request(
        "hmac-sha256", longest, HMAC_SECRET, method="GET", path_with_query="/", body=b"", now_s=1
    )
    assert parse_headers(headers).key_id == longest
    headers[HEADER_KEY_ID] = longest + "k"
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER


@pytest.mark.parametrize("key_id", ["", "pk_", "sk_abc", "pk_a b", "pk_a\n", "PK_abc"])
def test_malformed_key_id_is_refused(key_id: str) -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    headers[HEADER_KEY_ID] = key_id
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER


def test_unknown_key_error() -> None:
    error = unknown_key_error(KEY_ID)
    assert error.reason is SignatureRejection.UNKNOWN_KEY
    assert KEY_ID in str(error)


# --- header parsing --------------------------------------------------------------------------


def test_header_lookup_is_case_insensitive() -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    lowered = {name.lower(): value for name, value in headers.items()}
    shouted = {name.upper(): value for name, value in headers.items()}
    assert parse_headers(lowered) == parse_headers(headers) == parse_headers(shouted)


def test_unrelated_headers_are_ignored() -> None:
    headers = {"Content-Type": "application/json", **_headers("hmac-sha256", HMAC_SECRET)}
    _verify("hmac-sha256", HMAC_SECRET, parse_headers(headers))


def test_repeated_header_is_refused() -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    headers["zhifu-nonce"] = "another-nonce-of-length"
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER
    assert HEADER_NONCE in str(excinfo.value)


@pytest.mark.parametrize(
    "missing", [HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE]
)
def test_missing_header_is_refused(missing: str) -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    del headers[missing]
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MISSING_HEADER
    assert str(excinfo.value).startswith(f"missing header(s) {missing}:")


def test_all_headers_missing_names_them_all() -> None:
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers({})
    assert _rejection(excinfo) is SignatureRejection.MISSING_HEADER
    for name in (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE):
        assert name in str(excinfo.value).split(":")[0]


@pytest.mark.parametrize(
    "timestamp",
    ["", "abc", "1.5", "-1", "+1767225600", " 1767225600", "1767225600 ", "1_767_225_600",
     "01767225600", "١٧٦٧٢٢٥٦٠٠", "1" * 13, "1e9"],
)  # fmt: skip
def test_malformed_timestamp_is_refused(timestamp: str) -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    headers[HEADER_TIMESTAMP] = timestamp
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER
    assert "Unix time in whole seconds" in str(excinfo.value)


def test_timestamp_zero_parses_but_is_stale() -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    headers[HEADER_TIMESTAMP] = "0"
    signed = parse_headers(headers)
    assert signed.timestamp_s == 0
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", HMAC_SECRET, signed)
    assert _rejection(excinfo) is SignatureRejection.STALE_TIMESTAMP


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="empty"),
        pytest.param("not base64!", id="bad-characters"),
        pytest.param("YWJj", id="valid"),  # control: parses, fails later
        pytest.param("YWJ", id="bad-padding"),
        pytest.param("YWJjZA", id="missing-padding"),
        pytest.param("YWJj\n", id="newline"),
        pytest.param("YWJj ", id="space"),
        pytest.param("YW-j", id="url-safe-alphabet"),
        pytest.param("A" * 92, id="too-long"),
    ],
)
def test_malformed_signature_is_refused(signature: str) -> None:
    headers = _headers("hmac-sha256", HMAC_SECRET)
    headers[HEADER_SIGNATURE] = signature
    if signature == "YWJj":
        signed = parse_headers(headers)
        assert signed.signature == b"abc"
        with pytest.raises(RequestSignatureError) as excinfo:
            _verify("hmac-sha256", HMAC_SECRET, signed)
        assert _rejection(excinfo) is SignatureRejection.BAD_SIGNATURE
        return
    with pytest.raises(RequestSignatureError) as excinfo:
        parse_headers(headers)
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER
    assert "standard base64" in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_repr_leaves_out_the_signature() -> None:
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET))
    text = repr(signed)
    assert KEY_ID in text
    assert NONCE in text
    assert base64.b64encode(signed.signature).decode() not in text


# --- body and request target limits ----------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "signing_key", "verifying_key"), KEYS)
def test_body_at_limit_is_accepted(
    algorithm: str, signing_key: bytes, verifying_key: bytes
) -> None:
    body = b"x" * BODY_BYTES_MAX
    signed = parse_headers(_headers(algorithm, signing_key, body=body))
    _verify(algorithm, verifying_key, signed, body=body)


def test_body_one_past_limit_is_refused() -> None:
    body = b"x" * (BODY_BYTES_MAX + 1)
    with pytest.raises(RequestSignatureError) as excinfo:
        _headers("hmac-sha256", HMAC_SECRET, body=body)
    assert _rejection(excinfo) is SignatureRejection.BODY_TOO_LARGE
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET))
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", HMAC_SECRET, signed, body=body)
    assert _rejection(excinfo) is SignatureRejection.BODY_TOO_LARGE
    assert str(BODY_BYTES_MAX) in str(excinfo.value)


def test_request_target_at_limit_is_accepted_and_one_past_refused() -> None:
    longest = "/" + "p" * (PATH_WITH_QUERY_CHARS_MAX - 1)
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET, path_with_query=longest))
    _verify("hmac-sha256", HMAC_SECRET, signed, path_with_query=longest)
    with pytest.raises(RequestSignatureError) as excinfo:
        _verify("hmac-sha256", HMAC_SECRET, signed, path_with_query=longest + "p")
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_REQUEST


@pytest.mark.parametrize(
    "path", ["", "v1/ping", "/v1/ping x", "/v1/ping\n", "/v1/p\u00e9", "/v1/\x7f", "http://h/"]
)
def test_malformed_request_target_is_refused(path: str) -> None:
    with pytest.raises(RequestSignatureError) as excinfo:
        string_to_sign("GET", path, KEY_ID, NOW_S, NONCE, b"")
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_REQUEST


@pytest.mark.parametrize("method", ["", "GE T", "GET\n", "G3T", "M" * 17, "ß", "ıNFO"])
def test_malformed_method_is_refused(method: str) -> None:
    with pytest.raises(RequestSignatureError) as excinfo:
        string_to_sign(method, "/", KEY_ID, NOW_S, NONCE, b"")
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_REQUEST


@pytest.mark.parametrize("timestamp_s", [-1, True, 10**12])
def test_string_to_sign_refuses_timestamp_out_of_form(timestamp_s: int) -> None:
    with pytest.raises(RequestSignatureError) as excinfo:
        string_to_sign("GET", "/", KEY_ID, timestamp_s, NONCE, b"")
    assert _rejection(excinfo) is SignatureRejection.MALFORMED_HEADER


# --- keys and algorithms ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HMAC-SHA256", "rsa", ""])
def test_unknown_algorithm_is_a_key_error(algorithm: str) -> None:
    signed = parse_headers(_headers("hmac-sha256", HMAC_SECRET))
    with pytest.raises(RequestSigningKeyError, match="unsupported signing algorithm"):
        _verify(algorithm, HMAC_SECRET, signed)
    with pytest.raises(RequestSigningKeyError, match="unsupported signing algorithm"):
        _headers(algorithm, HMAC_SECRET)


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_size_key_is_a_key_error(algorithm: str, size: int) -> None:
    key = b"k" * size
    with pytest.raises(RequestSigningKeyError) as excinfo:
        _headers(algorithm, key)
    assert "32 bytes" in str(excinfo.value)
    signed = SignedRequestHeaders(KEY_ID, NOW_S, NONCE, bytes(64))
    with pytest.raises(RequestSigningKeyError):
        _verify(algorithm, key, signed)


def test_ed25519_signer_is_refused_for_hmac() -> None:
    with pytest.raises(RequestSigningKeyError):
        _headers("hmac-sha256", Ed25519Signer.from_seed(ED25519_SEED))


def test_errors_are_value_errors_with_reason_codes() -> None:
    assert issubclass(RequestSignatureError, ValueError)
    assert issubclass(RequestSigningKeyError, ValueError)
    assert {reason.value for reason in SignatureRejection} >= {
        "missing_header",
        "malformed_header",
        "stale_timestamp",
        "bad_signature",
        "unknown_key",
        "replayed_nonce",
        "body_too_large",
    }

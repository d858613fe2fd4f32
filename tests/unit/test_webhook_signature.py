"""The webhook signature recipe (``zhifu.webhooks.signature``): a known-answer
vector computed with OpenSSL, the tolerance at its limit and one past it, and
tampered bodies, timestamps, signatures and headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from zhifu.webhooks.errors import WebhookSignatureError
from zhifu.webhooks.signature import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    ID_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_HEADER_CHARS_MAX,
    SIGNATURES_PER_HEADER_MAX,
    TOLERANCE_S_DEFAULT,
    compute_signature,
    signature_header,
    signed_message,
    verify_webhook,
    webhook_headers,
)

# The vector of docs/payments.md, computed independently with
#   printf '%s' "$T.$BODY" | openssl dgst -sha256 -mac HMAC -macopt hexkey:0001...1f
SECRET_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SECRET = base64.b64decode(SECRET_B64)
T = 1_767_225_600
BODY = (
    b'{"created_ts":1767225600000000,"data":{"amount_minor":12345,"currency":"CNY"},'
    b'"id":"0192f0c1-0000-7000-8000-000000000001","type":"payment.succeeded"}'
)
V1 = "bfea722cbcaa847385a818199d77a6a96adff25072e866bfc6002423522c9d6a"


def headers_for(header: str) -> dict[str, str]:
    return {SIGNATURE_HEADER: header}


def reason_of(headers: dict[str, str], body: bytes = BODY, now_s: int = T, **kwargs: int) -> str:
    with pytest.raises(WebhookSignatureError) as caught:
        verify_webhook(SECRET, headers, body, now_s, **kwargs)
    return caught.value.reason


def test_the_known_answer_vector() -> None:
    assert bytes(range(32)) == SECRET
    assert compute_signature(SECRET, T, BODY) == V1
    assert signature_header(SECRET, T, BODY) == f"t={T},v1={V1}"
    assert signed_message(T, BODY) == b"1767225600." + BODY
    # The recipe in its plainest form gives the same.
    plain = hmac.new(SECRET, f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert plain == V1
    verify_webhook(SECRET, headers_for(f"t={T},v1={V1}"), BODY, T)


def test_webhook_headers_carry_ids_event_and_signature() -> None:
    headers = webhook_headers(
        SECRET, timestamp_s=T, body=BODY, event_id="e-1", event_type="payment.x", delivery_id="d"
    )
    assert headers == {
        ID_HEADER: "e-1",
        EVENT_HEADER: "payment.x",
        DELIVERY_HEADER: "d",
        SIGNATURE_HEADER: f"t={T},v1={V1}",
    }


@pytest.mark.parametrize("skew_s", [-TOLERANCE_S_DEFAULT, 0, TOLERANCE_S_DEFAULT])
def test_a_timestamp_within_the_tolerance_passes(skew_s: int) -> None:
    verify_webhook(SECRET, headers_for(signature_header(SECRET, T, BODY)), BODY, T + skew_s)


@pytest.mark.parametrize("skew_s", [-TOLERANCE_S_DEFAULT - 1, TOLERANCE_S_DEFAULT + 1])
def test_one_second_past_the_tolerance_fails(skew_s: int) -> None:
    headers = headers_for(signature_header(SECRET, T, BODY))
    assert reason_of(headers, now_s=T + skew_s) == "timestamp_outside_tolerance"


def test_a_custom_tolerance_at_its_limit_and_one_past() -> None:
    headers = headers_for(signature_header(SECRET, T, BODY))
    verify_webhook(SECRET, headers, BODY, T + 10, tolerance_s=10)
    assert reason_of(headers, now_s=T + 11, tolerance_s=10) == "timestamp_outside_tolerance"
    with pytest.raises(ValueError, match="tolerance_s"):
        verify_webhook(SECRET, headers, BODY, T, tolerance_s=-1)


@pytest.mark.parametrize(
    "body",
    [
        BODY.replace(b"12345", b"12346"),
        BODY + b" ",
        BODY[:-1],
        b"",
    ],
    ids=["amount changed", "space appended", "truncated", "empty"],
)
def test_a_tampered_body_fails(body: bytes) -> None:
    headers = headers_for(f"t={T},v1={V1}")
    assert reason_of(headers, body=body) == "signature_mismatch"


def test_a_tampered_timestamp_fails() -> None:
    assert reason_of(headers_for(f"t={T + 1},v1={V1}"), now_s=T) == "signature_mismatch"


def test_a_replayed_webhook_with_a_fresh_timestamp_fails() -> None:
    later = T + 3600
    assert reason_of(headers_for(f"t={later},v1={V1}"), now_s=later) == "signature_mismatch"


def test_another_secret_fails() -> None:
    other = bytes(32)
    with pytest.raises(WebhookSignatureError) as caught:
        verify_webhook(other, headers_for(f"t={T},v1={V1}"), BODY, T)
    assert caught.value.reason == "signature_mismatch"
    assert V1 not in str(caught.value)
    assert compute_signature(other, T, BODY) not in str(caught.value)


def test_one_matching_signature_among_several_passes_and_unknown_schemes_are_ignored() -> None:
    wrong = "0" * 64
    verify_webhook(SECRET, headers_for(f"t={T},v1={wrong},v1={V1},v0=old"), BODY, T)
    verify_webhook(SECRET, headers_for(f" t={T} , v2=future , v1={V1} "), BODY, T)


def test_header_names_are_case_insensitive() -> None:
    verify_webhook(SECRET, {"zhifu-webhook-signature": f"t={T},v1={V1}"}, BODY, T)
    verify_webhook(SECRET, {"ZHIFU-WEBHOOK-SIGNATURE": f"t={T},v1={V1}"}, BODY, T)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_header"),
        ("", "malformed_header"),
        (f"v1={V1}", "malformed_header"),
        (f"t={T}", "malformed_header"),
        (f"t={T},t={T},v1={V1}", "malformed_header"),
        (f"t=-{T},v1={V1}", "malformed_header"),
        (f"t=1e9,v1={V1}", "malformed_header"),
        (f"t={'9' * 13},v1={V1}", "malformed_header"),
        (f"t={T},v1={V1.upper()}", "malformed_header"),
        (f"t={T},v1={V1[:-1]}", "malformed_header"),
        (f"t={T};v1={V1}", "malformed_header"),
        (f"t={T},v1", "malformed_header"),
    ],
)
def test_malformed_headers_fail_with_their_reason(header: str | None, reason: str) -> None:
    headers = {} if header is None else headers_for(header)
    assert reason_of(headers) == reason


def test_the_limits_on_the_header() -> None:
    at_limit = f"t={T}," + ",".join([f"v1={V1}"] * SIGNATURES_PER_HEADER_MAX)
    verify_webhook(SECRET, headers_for(at_limit), BODY, T)
    past = at_limit + f",v1={V1}"
    assert reason_of(headers_for(past)) == "malformed_header"
    padded = f"t={T},v1={V1}," + "x=" + "y" * (SIGNATURE_HEADER_CHARS_MAX - len(V1) - 20)
    assert len(padded) <= SIGNATURE_HEADER_CHARS_MAX
    verify_webhook(SECRET, headers_for(padded), BODY, T)
    too_long = padded + "y" * (SIGNATURE_HEADER_CHARS_MAX - len(padded) + 1)
    assert len(too_long) == SIGNATURE_HEADER_CHARS_MAX + 1
    assert reason_of(headers_for(too_long)) == "malformed_header"


def test_a_header_given_twice_fails() -> None:
    headers = {SIGNATURE_HEADER: f"t={T},v1={V1}", SIGNATURE_HEADER.lower(): f"t={T},v1={V1}"}
    assert reason_of(headers) == "malformed_header"


def test_a_secret_must_be_bytes_and_the_body_raw_bytes() -> None:
    headers = headers_for(f"t={T},v1={V1}")
    with pytest.raises(TypeError, match="base64-decode"):
        verify_webhook(SECRET_B64, headers, BODY, T)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="empty"):
        verify_webhook(b"", headers, BODY, T)
    with pytest.raises(TypeError, match="raw request body"):
        verify_webhook(SECRET, headers, BODY.decode(), T)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timestamp_s"):
        signature_header(SECRET, -1, BODY)


def _documented_recipe() -> Any:
    """The Python block under the ``webhook-recipe`` marker of docs/payments.md, run."""
    docs = (Path(__file__).parents[2] / "docs" / "payments.md").read_text(encoding="utf-8")
    after = docs.split("<!-- webhook-recipe:", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/payments.md", "exec"), namespace)  # our own docs
    return namespace["verify"]


def test_the_documented_recipe_agrees_with_verify_webhook() -> None:
    verify = _documented_recipe()
    good = headers_for(f"t={T},v1={V1}")
    assert verify(good, BODY, T)
    assert verify({"zhifu-webhook-signature": f"t={T}, v1={'0' * 64}, v1={V1}"}, BODY, T)
    assert verify(good, BODY, T + TOLERANCE_S_DEFAULT)
    cases = [
        (good, BODY, T + TOLERANCE_S_DEFAULT + 1),
        (good, BODY, T - TOLERANCE_S_DEFAULT - 1),
        (good, BODY + b" ", T),
        (headers_for(f"t={T + 1},v1={V1}"), BODY, T),
        (headers_for(f"v1={V1}"), BODY, T),
        (headers_for(f"t=²,v1={V1}"), BODY, T),
        ({}, BODY, T),
    ]
    for headers, body, now_s in cases:
        assert not verify(headers, body, now_s)
        with pytest.raises(WebhookSignatureError):
            verify_webhook(SECRET, headers, body, now_s)

"""How a webhook is signed, and how its recipient checks it (the documented recipe).

Pure: the standard library only, so a recipient can copy this module.

Every webhook is a ``POST`` whose body is the event as JSON, with these headers::

    Zhifu-Webhook-Id:        the event's id (the same on every retry and replay:
                             de-duplicate on it)
    Zhifu-Webhook-Event:     the event type, e.g. payment.succeeded
    Zhifu-Webhook-Delivery:  this delivery's id (a replay is a new delivery)
    Zhifu-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>

where ``v1 = HMAC-SHA256(secret, f"{t}.".encode() + raw_body)``: the key is the
subscription's 32-byte secret (shown once, as standard base64, when the
subscription is made) and the message is the decimal timestamp, a full stop,
and the body's bytes exactly as received (before any JSON parsing). The
timestamp is signed too, so a captured webhook cannot be replayed later with a
fresh one.

A recipient (:func:`verify_webhook`) finds the header, takes ``t`` and every
``v1`` (entries with other names are ignored, so new schemes can be added
beside ``v1``), refuses a ``t`` more than ``tolerance_s`` (default 300) away
from its own clock in either direction, recomputes the HMAC and compares it
with each ``v1`` in constant time. A webhook that fails any step must be
refused (answer 400) and not acted on.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Final

from zhifu.webhooks.errors import WebhookSignatureError

SIGNATURE_HEADER: Final = "Zhifu-Webhook-Signature"
ID_HEADER: Final = "Zhifu-Webhook-Id"
EVENT_HEADER: Final = "Zhifu-Webhook-Event"
DELIVERY_HEADER: Final = "Zhifu-Webhook-Delivery"
SCHEME: Final = "v1"
TOLERANCE_S_DEFAULT: Final = 300
SECRET_BYTES: Final = 32
SIGNATURE_HEADER_CHARS_MAX: Final = 1024
SIGNATURES_PER_HEADER_MAX: Final = 8
TIMESTAMP_DIGITS_MAX: Final = 12
_HEX_SIGNATURE: Final = re.compile(r"[0-9a-f]{64}")
_DIGITS: Final = re.compile(rf"[0-9]{{1,{TIMESTAMP_DIGITS_MAX}}}")


def signed_message(timestamp_s: int, body: bytes) -> bytes:
    """The bytes that ``v1`` signs: ``b"<timestamp>." + body``."""
    return str(timestamp_s).encode("ascii") + b"." + body


def compute_signature(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """``v1``: the lower-case hex HMAC-SHA256 of :func:`signed_message` under ``secret``."""
    _check_secret(secret)
    return hmac.new(secret, signed_message(timestamp_s, body), hashlib.sha256).hexdigest()


def signature_header(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The ``Zhifu-Webhook-Signature`` value: ``t=<timestamp>,v1=<signature>``."""
    if isinstance(timestamp_s, bool) or not isinstance(timestamp_s, int) or timestamp_s < 0:
        raise ValueError("timestamp_s must be a non-negative integer of Unix seconds")
    return f"t={timestamp_s},{SCHEME}={compute_signature(secret, timestamp_s, body)}"


def webhook_headers(
    secret: bytes,
    *,
    timestamp_s: int,
    body: bytes,
    event_id: str,
    event_type: str,
    delivery_id: str,
) -> dict[str, str]:
    """Every header a webhook carries besides ``Content-Type``."""
    return {
        ID_HEADER: event_id,
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: signature_header(secret, timestamp_s, body),
    }


def verify_webhook(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now_s: int,
    tolerance_s: int = TOLERANCE_S_DEFAULT,
) -> None:
    """Check a received webhook; returns only when it is authentic and fresh.

    ``headers`` may be any mapping (names are compared case-insensitively);
    ``body`` is the raw request body; ``now_s`` the recipient's clock in Unix
    seconds. A timestamp exactly ``tolerance_s`` away is accepted, one second
    more is not.

    Raises:
        WebhookSignatureError: with ``reason`` ``missing_header`` (no signature
            header), ``malformed_header`` (twice present, too long, no ``t``,
            two ``t``, a bad ``t`` or ``v1``, no ``v1``, too many ``v1``),
            ``timestamp_outside_tolerance`` or ``signature_mismatch``.
        TypeError: ``secret`` is not bytes (decode the base64 you were shown),
            or ``body`` is not bytes.
        ValueError: ``tolerance_s`` is negative.
    """
    _check_secret(secret)
    if not isinstance(body, bytes | bytearray):
        raise TypeError("body must be the raw request body as bytes, not parsed JSON")
    if tolerance_s < 0:
        raise ValueError("tolerance_s must not be negative")
    timestamp_s, signatures = _parse(_header_value(headers))
    if abs(now_s - timestamp_s) > tolerance_s:
        raise WebhookSignatureError(
            "timestamp_outside_tolerance",
            f"the signature's timestamp {timestamp_s} is {abs(now_s - timestamp_s)} s from"
            f" this clock ({now_s}); at most {tolerance_s} s is allowed",
        )
    expected = compute_signature(secret, timestamp_s, bytes(body))
    # Compare with every v1 and only then decide: the time taken tells nothing.
    matched = [hmac.compare_digest(expected, candidate) for candidate in signatures]
    if not any(matched):
        raise WebhookSignatureError(
            "signature_mismatch",
            "no v1 signature matches the body and timestamp under this secret",
        )


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray):
        raise TypeError("secret must be bytes: base64-decode the secret shown at subscription")
    if not secret:
        raise TypeError("secret must not be empty")


def _header_value(headers: Mapping[str, str]) -> str:
    wanted = SIGNATURE_HEADER.lower()
    values = [value for name, value in headers.items() if name.lower() == wanted]
    if not values:
        raise WebhookSignatureError("missing_header", f"no {SIGNATURE_HEADER} header")
    if len(values) > 1:
        raise WebhookSignatureError("malformed_header", f"{SIGNATURE_HEADER} is given twice")
    value = values[0]
    if len(value) > SIGNATURE_HEADER_CHARS_MAX:
        raise WebhookSignatureError(
            "malformed_header",
            f"{SIGNATURE_HEADER} is longer than {SIGNATURE_HEADER_CHARS_MAX} characters",
        )
    return value


def _parse(value: str) -> tuple[int, list[str]]:
    """``(timestamp, [v1 signatures])`` from a header value; unknown entries are skipped."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in value.split(","):
        name, sep, item = part.strip().partition("=")
        if not sep:
            raise WebhookSignatureError(
                "malformed_header", f"{SIGNATURE_HEADER} entries are name=value pairs"
            )
        if name == "t":
            timestamps.append(item)
        elif name == SCHEME:
            if not _HEX_SIGNATURE.fullmatch(item):
                raise WebhookSignatureError(
                    "malformed_header", "a v1 signature is 64 lower-case hex digits"
                )
            signatures.append(item)
    if len(timestamps) != 1 or not _DIGITS.fullmatch(timestamps[0]):
        raise WebhookSignatureError(
            "malformed_header",
            f"{SIGNATURE_HEADER} needs exactly one t=<Unix seconds, at most"
            f" {TIMESTAMP_DIGITS_MAX} digits>",
        )
    if not 1 <= len(signatures) <= SIGNATURES_PER_HEADER_MAX:
        raise WebhookSignatureError(
            "malformed_header",
            f"{SIGNATURE_HEADER} needs 1 to {SIGNATURES_PER_HEADER_MAX} v1 signatures",
        )
    return int(timestamps[0]), signatures

"""The rules of webhooks, without I/O: URLs, event types, event bodies, statuses, limits.

URLs. A subscription's URL is ``https://`` to a public host: a DNS name of at
least two labels whose last label is not all digits (so ``2130706433`` or
``127.1``, which resolvers read as addresses, are refused), or an IP address
that is globally routable. Private, shared, link-local (cloud metadata at
169.254.169.254), multicast, reserved and unspecified addresses are refused:
the bank's own network is not a webhook target. Loopback (``localhost``,
127.0.0.0/8, ``::1``), over ``http://`` or ``https://``, is for development
and allowed only while ``ZHIFU_WEBHOOKS_ALLOW_LOOPBACK`` is on. A URL holds
no user name or password and no fragment, only printable ASCII (international
host names in their ``xn--`` form), at most ``URL_CHARS_MAX`` characters.
Names are not resolved here: a public name that resolves to a private address
is stopped only by the egress firewall (docs/payments.md).

Event types are dotted lower-case names (``payment.succeeded``). A
subscription lists up to ``EVENT_TYPES_PER_SUBSCRIPTION_MAX`` patterns: an
exact name, a prefix ``payment.*`` (``payment.`` and anything after), or
``*`` (everything). ``webhook.test`` is reserved: only the test endpoint
sends it, to one subscription, whatever its patterns.

An event's body is canonical JSON (sorted keys, no spaces, UTF-8) of ``id``,
``type``, ``created_ts`` (microseconds) and ``data``, made once and sent byte
for byte the same on every attempt. ``data`` holds no floats: amounts are
integers of minor units, as everywhere in zhifu.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from zhifu.webhooks.errors import InvalidEventError, InvalidSubscriptionError

URL_CHARS_MAX: Final = 1024
HOST_CHARS_MAX: Final = 253
HOST_LABEL_CHARS_MAX: Final = 63
EVENT_TYPE_CHARS_MAX: Final = 64
EVENT_TYPES_PER_SUBSCRIPTION_MAX: Final = 16
EVENT_BODY_BYTES_MAX: Final = 64 * 1024
EVENT_DATA_DEPTH_MAX: Final = 16
SUBSCRIPTIONS_PER_PARTNER_MAX: Final = 16
MANUAL_PENDING_MAX: Final = 20  # pending test and replay deliveries per subscription
DELIVERIES_PAGE_MAX: Final = 100
DELIVERIES_PAGE_DEFAULT: Final = 20
DELIVERY_TIMEOUT_S: Final = 10.0  # the whole attempt: connect, send, first bytes of the answer
RESPONSE_BYTES_READ_MAX: Final = 1024
RESPONSE_EXCERPT_CHARS_MAX: Final = 256
ERROR_CLASS_CHARS_MAX: Final = 64
TEST_EVENT_TYPE: Final = "webhook.test"
WILDCARD: Final = "*"

_EVENT_TYPE: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_EVENT_PREFIX: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\.\*")
_HOST_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_PRINTABLE_ASCII: Final = re.compile(r"[\x21-\x7e]+")
LOOPBACK_NAMES: Final = frozenset({"localhost"})


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    DELETED = "deleted"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed: dead-lettered
    CANCELLED = "cancelled"  # the subscription was deleted or its key revoked first


class DeliveryOrigin(StrEnum):
    EVENT = "event"  # published by the bank
    REPLAY = "replay"  # a new delivery of an earlier delivery's event
    TEST = "test"  # a webhook.test event from the test endpoint


def is_success(status_code: int) -> bool:
    """Whether a recipient's HTTP status means "received": any 2xx. Redirects are not
    followed, so a 3xx is a failure (and retried)."""
    return 200 <= status_code <= 299


def check_url(url: object, *, allow_loopback: bool) -> str:
    """``url`` if it may receive webhooks (see the module's rules).

    Raises InvalidSubscriptionError naming the rule it breaks.
    """
    if not isinstance(url, str) or not url:
        raise InvalidSubscriptionError("url is required: an https:// URL")
    if len(url) > URL_CHARS_MAX:
        raise InvalidSubscriptionError(f"url is longer than {URL_CHARS_MAX} characters")
    if not _PRINTABLE_ASCII.fullmatch(url):
        raise InvalidSubscriptionError(
            "url may hold only printable ASCII, no spaces (write international host names"
            " in their xn-- form and percent-encode the path)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidSubscriptionError("url is not a valid URL (check the host and port)") from None
    if parts.scheme not in ("https", "http") or not url.startswith(f"{parts.scheme}://"):
        raise InvalidSubscriptionError("url must start with https://")
    if "@" in parts.netloc:
        raise InvalidSubscriptionError("url may not hold a user name or password")
    if parts.fragment or url.endswith("#"):
        raise InvalidSubscriptionError("url may not hold a fragment (#...)")
    if port == 0:
        raise InvalidSubscriptionError("url has port 0; use 1-65535")
    host = parts.hostname or ""
    loopback = _host_kind(host) == "loopback"
    if loopback and not allow_loopback:
        raise InvalidSubscriptionError(
            "url names a loopback host, which this bank does not allow"
            " (ZHIFU_WEBHOOKS_ALLOW_LOOPBACK is off)"
        )
    if parts.scheme == "http" and not loopback:
        raise InvalidSubscriptionError(
            "url must start with https:// (http:// is only for localhost in development)"
        )
    return url


def _host_kind(host: str) -> str:
    """'loopback' or 'public'; raises InvalidSubscriptionError for any other host."""
    if not host:
        raise InvalidSubscriptionError("url has no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _name_kind(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if not address.is_global or address.is_multicast:
        raise InvalidSubscriptionError(
            f"url names the address {address}, which is not a public address (private,"
            " link-local, multicast and reserved addresses are refused)"
        )
    return "public"


def _name_kind(host: str) -> str:
    name = host.lower()
    if name in LOOPBACK_NAMES:
        return "loopback"
    labels = name.split(".")
    if (
        len(name) > HOST_CHARS_MAX
        or len(labels) < 2
        or any(
            len(label) > HOST_LABEL_CHARS_MAX or not _HOST_LABEL.fullmatch(label)
            for label in labels
        )
    ):
        raise InvalidSubscriptionError(
            "url's host must be a public DNS name (at least two labels of letters, digits"
            f" and hyphens, at most {HOST_CHARS_MAX} characters) or a public IP address"
        )
    if labels[-1].isdigit():
        raise InvalidSubscriptionError(
            "url's host ends in a number: write an IP address in full, or use a DNS name"
        )
    return "public"


def check_event_types(patterns: object) -> tuple[str, ...]:
    """The patterns a subscription receives, without repeats and sorted.

    Raises InvalidSubscriptionError for an empty list, too many patterns, or one
    that is not an event type, a ``prefix.*`` or ``*``.
    """
    if isinstance(patterns, str) or not isinstance(patterns, Sequence) or not patterns:
        raise InvalidSubscriptionError(
            "event_types must be a list of 1 or more event types, e.g. ['payment.*']"
        )
    if len(patterns) > EVENT_TYPES_PER_SUBSCRIPTION_MAX:
        raise InvalidSubscriptionError(
            f"event_types lists {len(patterns)} entries; at most"
            f" {EVENT_TYPES_PER_SUBSCRIPTION_MAX} are allowed"
        )
    for pattern in patterns:
        if not _is_pattern(pattern):
            shown = pattern[:EVENT_TYPE_CHARS_MAX] if isinstance(pattern, str) else pattern
            raise InvalidSubscriptionError(
                f"event type {shown!r} is not allowed: use a dotted lower-case name such as"
                f" 'payment.succeeded', a prefix such as 'payment.*', or '*', at most"
                f" {EVENT_TYPE_CHARS_MAX} characters"
            )
    return tuple(sorted(set(patterns)))


def _is_pattern(pattern: object) -> bool:
    if not isinstance(pattern, str) or len(pattern) > EVENT_TYPE_CHARS_MAX:
        return False
    if pattern == WILDCARD:
        return True
    return bool(_EVENT_TYPE.fullmatch(pattern) or _EVENT_PREFIX.fullmatch(pattern))


def check_event_type(event_type: object) -> str:
    """An event type that may be published. Raises InvalidEventError otherwise."""
    if (
        not isinstance(event_type, str)
        or len(event_type) > EVENT_TYPE_CHARS_MAX
        or not _EVENT_TYPE.fullmatch(event_type)
    ):
        raise InvalidEventError(
            "event_type must be a dotted lower-case name such as 'payment.succeeded',"
            f" at most {EVENT_TYPE_CHARS_MAX} characters"
        )
    if event_type == TEST_EVENT_TYPE:
        raise InvalidEventError(f"{TEST_EVENT_TYPE} is sent by the test endpoint only")
    return event_type


def subscribed(patterns: Sequence[str], event_type: str) -> bool:
    """Whether a subscription with ``patterns`` receives ``event_type``."""
    for pattern in patterns:
        if pattern in (WILDCARD, event_type):
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def event_body(event_id: uuid.UUID, event_type: str, created_ts: int, data: object) -> str:
    """The JSON text of an event, exactly as it is signed and sent.

    Raises InvalidEventError when ``data`` is not a JSON object of allowed
    values, or the body is over ``EVENT_BODY_BYTES_MAX`` bytes.
    """
    if not isinstance(data, dict):
        raise InvalidEventError("data must be a JSON object (a dict)")
    _check_data(data, depth=1)
    body = {"id": str(event_id), "type": event_type, "created_ts": created_ts, "data": data}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode("utf-8"))
    if size > EVENT_BODY_BYTES_MAX:
        raise InvalidEventError(
            f"the event is {size} bytes of JSON; at most {EVENT_BODY_BYTES_MAX} are allowed"
        )
    return text


def _check_data(value: Any, *, depth: int) -> None:
    if depth > EVENT_DATA_DEPTH_MAX:
        raise InvalidEventError(f"data is nested deeper than {EVENT_DATA_DEPTH_MAX} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEventError("data's object keys must be strings")
            _check_data(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_data(item, depth=depth + 1)
    elif isinstance(value, float):
        raise InvalidEventError("data may not hold floats: send amounts as integer minor units")
    elif value is not None and not isinstance(value, str | int | bool):
        raise InvalidEventError(
            f"data may hold strings, integers, booleans, null, lists and objects, not"
            f" {type(value).__name__}"
        )


def excerpt(raw: bytes) -> str:
    """The start of a recipient's answer as stored in the delivery log: decoded as
    UTF-8 (bad bytes replaced), control characters dropped, at most
    ``RESPONSE_EXCERPT_CHARS_MAX`` characters."""
    text = raw[:RESPONSE_BYTES_READ_MAX].decode("utf-8", errors="replace")
    cleaned = "".join(c if c.isprintable() or c == " " else " " for c in text)
    return cleaned[:RESPONSE_EXCERPT_CHARS_MAX]

"""Errors of the webhooks context.

Every error derives from :class:`WebhookError`, carries a short
machine-readable ``code`` (the API adds it to the problem response) and a
message written for the partner who asked: what was wrong and what is allowed.
No message holds a signing secret or a signature the bank computed.
"""

from __future__ import annotations


class WebhookError(Exception):
    """Root of the webhooks context's expected failures."""

    code: str = "webhook_error"


class InvalidSubscriptionError(WebhookError):
    """Raised when a subscription's URL or event types break a rule (the message
    says which and what is allowed), or a page size or cursor is out of range."""

    code = "invalid_subscription"


class InvalidEventError(WebhookError):
    """Raised by ``publish`` when an event type is malformed or reserved, or its data
    is not a JSON object of strings, integers, booleans, nulls, lists and objects
    (no floats: amounts travel as integers of minor units) within the size limit."""

    code = "invalid_event"


class SubscriptionNotFoundError(WebhookError):
    """Raised when no subscription has this id for the calling partner key: it does
    not exist, is another partner's, or (for changes) was deleted."""

    code = "subscription_not_found"


class DeliveryNotFoundError(WebhookError):
    """Raised when no delivery has this id for the calling partner key, or its
    subscription was deleted (a replay needs a live subscription)."""

    code = "delivery_not_found"


class QuotaExceededError(WebhookError):
    """Raised when a partner key would hold more than ``SUBSCRIPTIONS_PER_PARTNER_MAX``
    subscriptions, or a subscription more than ``MANUAL_PENDING_MAX`` pending test
    and replay deliveries."""

    code = "quota_exceeded"


class WebhookSignatureError(WebhookError):
    """Raised by ``verify_webhook`` when a webhook's signature header is missing or
    malformed, its timestamp is outside the tolerance, or no signature matches the
    body. ``reason`` names the rule (``missing_header``, ``malformed_header``,
    ``timestamp_outside_tolerance``, ``signature_mismatch``)."""

    code = "webhook_signature_invalid"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

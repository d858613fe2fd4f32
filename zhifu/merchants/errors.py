"""Errors of the merchants context.

Every error carries a short machine-readable ``code`` and a message written
for the person who gave the input: what was wrong and what is allowed. The
API maps them to problem responses in ``zhifu/api/routers/merchants.py``.
"""

from __future__ import annotations


class MerchantsError(Exception):
    """Root of the merchants context's expected failures."""

    code: str = "merchants_error"


class InvalidMerchantError(MerchantsError):
    """A merchant's details, or a request about a merchant, break a rule; nothing
    was recorded. ``field`` names the part of the request."""

    code = "invalid_merchant"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class MerchantNotFoundError(MerchantsError):
    """No merchant with this id is visible to the caller (it does not exist, or
    belongs to another customer or partner key: the two answer alike)."""

    code = "merchant_not_found"


class MerchantStateError(MerchantsError):
    """The merchant's status does not allow this (not yet approved, or already
    approved with another partner key)."""

    code = "merchant_state"


class MerchantQuotaError(MerchantsError):
    """A count limit is reached: merchants per customer, open QR codes per
    merchant, live payment codes per customer, refunds per payment."""

    code = "quota_exceeded"


class ScopeMissingError(MerchantsError):
    """A partner key without the ``merchant`` scope called a merchant endpoint."""

    code = "scope_missing"


class QrCodeNotFoundError(MerchantsError):
    """No QR code with this id belongs to the merchant."""

    code = "qr_code_not_found"


class ForeignQrCodeError(MerchantsError):
    """A scanned QR code is not one this bank issued, or was altered after it
    was issued: nothing can be paid with it here."""

    code = "qr_code_unknown"


class QrCodeExpiredError(MerchantsError):
    """A dynamic QR code was scanned after its expiry: the merchant makes a new one."""

    code = "qr_code_expired"


class QrCodeUsedError(MerchantsError):
    """A dynamic QR code was already paid: it pays exactly once."""

    code = "qr_code_used"


class PaymentCodeInvalidError(MerchantsError):
    """A payment code that is malformed, unknown, expired, already used, or for
    another currency. Unknown, expired and used codes answer alike, so that
    the answer tells a guesser nothing."""

    code = "payment_code_invalid"


class PaymentCodeCapError(MerchantsError):
    """A charge above the cap the customer set on the payment code."""

    code = "payment_code_cap"


class CodeGuessesThrottledError(MerchantsError):
    """Too many unusable payment codes from one partner key in a short time:
    wait ``retry_after_s`` seconds."""

    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many invalid payment codes from this point of sale; try again in"
            f" {retry_after_s} seconds (ask the customer to show a fresh code)"
        )
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}


class RefundNotAllowedError(MerchantsError):
    """The payment cannot be refunded: not a settled merchant payment of this
    merchant, or older than the refund window."""

    code = "refund_not_allowed"

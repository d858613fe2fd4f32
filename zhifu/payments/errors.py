"""Errors of the payments context.

Every error carries a short machine-readable ``code`` (the API can add it to
a problem response) and a message written for the person who gave the input:
what was wrong and what is allowed.
"""

from __future__ import annotations


class PaymentError(Exception):
    """Root of the payments context's expected failures."""

    code: str = "payment_error"


class QrCodeError(PaymentError):
    """A QR code payload, or a value given to build one, breaks a rule of EMV QRCPS MPM.

    ``field`` names where: a two-digit ID (``"59"``), a sub-field of a
    template (``"62.01"``), ``"02-51"`` for the merchant account information
    as a whole, or ``"payload"`` for the text as a whole (its length, or
    characters that form no field). The message starts with the field and its
    name and says what is allowed.
    """

    code = "invalid_qr_code"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class IllegalTransitionError(PaymentError):
    """A payment order was asked to move to a state its lifecycle does not
    allow from where it is; the message names the states allowed next."""

    code = "illegal_transition"

    def __init__(self, message: str, *, current: str, target: str) -> None:
        super().__init__(message)
        self.current = current
        self.target = target


class RefundTooLargeError(PaymentError):
    """A refund would take back more than was paid (net of earlier refunds)."""

    code = "refund_too_large"


class InvalidIdempotencyKeyError(PaymentError):
    """An ``Idempotency-Key`` header is missing or malformed."""

    code = "invalid_idempotency_key"


class IdempotencyConflictError(PaymentError):
    """An ``Idempotency-Key`` was reused for a request that is not the same."""

    code = "idempotency_conflict"

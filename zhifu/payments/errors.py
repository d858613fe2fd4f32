"""Errors of the payments context.

Every error carries a short machine-readable ``code`` (the API can add it to
a problem response) and a message written for the person who gave the input:
what was wrong and what is allowed.
"""

from __future__ import annotations

from typing import Literal


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


QrImageReason = Literal[
    "empty",
    "too_large",
    "unsupported_format",
    "unreadable",
    "no_code",
    "several_codes",
    "damaged_code",
    "scale_out_of_range",
    "border_out_of_range",
]


class QrImageError(PaymentError):
    """A QR code image cannot be read, or cannot be drawn with the options given.

    ``reason`` says why, for code that reacts to it; the message says what
    was wrong and what is allowed, for the person who uploaded the image:

    - ``empty``: the upload has no bytes;
    - ``too_large``: more bytes, or more pixels (read from the header,
      before any decoding), than allowed;
    - ``unsupported_format``: not a PNG, JPEG, WebP or GIF image;
    - ``unreadable``: it claims an allowed format but cannot be decoded
      (truncated or corrupt);
    - ``no_code``: the image holds no QR code that could be found;
    - ``several_codes``: it holds more than one QR code;
    - ``damaged_code``: a QR code was found but too much of it is unreadable;
    - ``scale_out_of_range``, ``border_out_of_range``: a drawing option is
      past its bounds.
    """

    code = "invalid_qr_image"

    def __init__(self, reason: QrImageReason, message: str) -> None:
        super().__init__(message)
        self.reason: QrImageReason = reason


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


class PaymentNotFoundError(PaymentError):
    """No payment order with this id is visible to the caller (it does not
    exist, or belongs to somebody else: the two answer alike)."""

    code = "payment_not_found"


class InvalidPaymentError(PaymentError):
    """A payment request breaks a rule of its own (amount, memo, accounts);
    nothing was recorded. ``field`` names the part of the request."""

    code = "invalid_payment"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class StepUpNeededError(PaymentError):
    """The payment needs the customer to prove a second factor first (a large
    amount); the API layer asks for it before the payment is made."""

    code = "step_up_needed"


# --- payees and schedules ---------------------------------------------------------------


class InvalidPayeeError(PaymentError):
    """A payee's details break a rule (name, nickname, account number); nothing
    was stored. ``field`` names the part of the request."""

    code = "invalid_payee"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class PayeeNotFoundError(PaymentError):
    """No payee with this id in the caller's payee book (it does not exist, or
    is another customer's: the two answer alike)."""

    code = "payee_not_found"


class PayeeExistsError(PaymentError):
    """The payee book already holds this account (the blind index found it)."""

    code = "payee_exists"


class PayeeInUseError(PaymentError):
    """A payee that an active or paused schedule pays cannot be deleted."""

    code = "payee_in_use"


class TooManyError(PaymentError):
    """A customer would hold more payees or schedules than the limits allow."""

    code = "quota_exceeded"


class InvalidScheduleError(PaymentError):
    """A schedule's timing breaks a rule (first run, frequency, end date,
    count); nothing was stored. ``field`` names the part of the request."""

    code = "invalid_schedule"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class ScheduleNotFoundError(PaymentError):
    """No schedule with this id is the caller's."""

    code = "schedule_not_found"


class ScheduleStateError(PaymentError):
    """The schedule's status does not allow the change (cancelling a finished
    one, resuming one that is not paused); the message says what is allowed."""

    code = "schedule_state"


class ScheduleRunSettledError(PaymentError):
    """A scheduler came to record a run that another scheduler (or an earlier
    attempt) recorded already: its payment is rolled back. Never reaches a client."""

    code = "schedule_run_settled"


class FxError(PaymentError):
    """An exchange quote cannot be made as asked: a rate, spread, fee, currency
    pair, amount or lifetime out of bounds; the message says what is allowed."""

    code = "invalid_fx"


class QuoteExpiredError(FxError):
    """An exchange quote was used after the time it was locked for."""

    code = "quote_expired"

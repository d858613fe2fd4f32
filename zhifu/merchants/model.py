"""The rules of merchants, their QR codes, customers' payment codes and refunds (pure).

No I/O: the standard library, ``zhifu.money`` and the pure rules of other
contexts (the EMVCo codec, payment amounts, Luhn digits). The design note is
in ``zhifu/merchants/__init__.py``.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from zhifu.accounts.model import luhn_check_digit, luhn_valid
from zhifu.merchants.errors import (
    CodeGuessesThrottledError,
    ForeignQrCodeError,
    InvalidMerchantError,
    MerchantQuotaError,
    PaymentCodeCapError,
    PaymentCodeInvalidError,
    QrCodeExpiredError,
    QrCodeUsedError,
    RefundNotAllowedError,
)
from zhifu.money import Money
from zhifu.payments.emvco import (
    ADDITIONAL_DATA_LENGTH_MAX,
    ALTERNATE_CITY_LENGTH_MAX,
    ALTERNATE_NAME_LENGTH_MAX,
    MERCHANT_CITY_LENGTH_MAX,
    MERCHANT_NAME_LENGTH_MAX,
    AlternateLanguage,
    MerchantAccount,
    MerchantQr,
    build_merchant_qr,
)
from zhifu.payments.model import (
    PAYMENT_AMOUNT_MINOR_MAX,
    STEP_UP_AMOUNT_MINOR,
    OrderState,
    PaymentKind,
    check_payment_amount,
)

US: Final = 1_000_000

# --- merchants ------------------------------------------------------------------------


class MerchantStatus(StrEnum):
    """``pending`` until bank staff approve the merchant and name the partner key
    of its point of sale; ``active`` from then on: it takes payments."""

    PENDING = "pending"
    ACTIVE = "active"


COUNTRY: Final = "CN"  # merchants of this bank trade in mainland China
ALTERNATE_LANGUAGE: Final = "ZH"
NAME_CHARS_MAX: Final = MERCHANT_NAME_LENGTH_MAX  # 25: EMVCo tag 59
CITY_CHARS_MAX: Final = MERCHANT_CITY_LENGTH_MAX  # 15: EMVCo tag 60
ALTERNATE_NAME_CHARS_MAX: Final = ALTERNATE_NAME_LENGTH_MAX  # 25: EMVCo tag 64.01
ALTERNATE_CITY_CHARS_MAX: Final = ALTERNATE_CITY_LENGTH_MAX  # 15: EMVCo tag 64.02
# Raw input past this many characters cannot come down to a valid value: bounds
# the normalising work before anything else is checked.
TEXT_INPUT_CHARS_MAX: Final = 128
MERCHANTS_PER_CUSTOMER_MAX: Final = 10
MERCHANTS_PAGE_MAX: Final = 100
MERCHANTS_PAGE_DEFAULT: Final = 20
PAYMENTS_PAGE_MAX: Final = 100
PAYMENTS_PAGE_DEFAULT: Final = 20
# ISO 18245 merchant category codes: four digits, in an assigned range.
MCC_LENGTH: Final = 4
MCC_RESERVED_RANGES: Final = ((0, 699), (1000, 1499))
# Codes this bank does not onboard as merchants, and why.
MCC_REFUSED: Final = {
    "6010": "manual cash disbursement is a bank's own business, not a merchant's",
    "6011": "automated cash disbursement is a bank's own business, not a merchant's",
    "6051": "quasi-cash (money orders, stored value) is not sold through merchant QR codes",
    "7995": "betting and gambling are not allowed in mainland China",
}
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]+")
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SPACES: Final = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class MerchantDetails:
    """What a merchant is called and does, as it appears in its QR codes."""

    name: str
    city: str
    mcc: str
    currency: str
    alternate_name: str | None = None
    alternate_city: str | None = None


def check_merchant_details(details: MerchantDetails) -> MerchantDetails:
    """The details with spaces tidied (outer ones removed, runs made one), when
    every rule holds. The currency is checked against the settlement account
    by the service.

    Raises InvalidMerchantError naming the field and what is allowed.
    """
    return MerchantDetails(
        name=_latin_text(details.name, "name", NAME_CHARS_MAX),
        city=_latin_text(details.city, "city", CITY_CHARS_MAX),
        mcc=check_mcc(details.mcc),
        currency=details.currency,
        alternate_name=_optional_local_text(
            details.alternate_name, "alternate_name", ALTERNATE_NAME_CHARS_MAX
        ),
        alternate_city=_optional_local_text(
            details.alternate_city, "alternate_city", ALTERNATE_CITY_CHARS_MAX
        ),
    )


def _tidy(text: str, field: str) -> str:
    if len(text) > TEXT_INPUT_CHARS_MAX:
        raise InvalidMerchantError(
            f"{field} is at most {TEXT_INPUT_CHARS_MAX} characters as sent", field=field
        )
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _latin_text(text: str, field: str, chars_max: int) -> str:
    """EMVCo's common character set: a wallet anywhere can show it."""
    tidy = _tidy(text, field)
    if not 1 <= len(tidy) <= chars_max:
        raise InvalidMerchantError(
            f"{field} is 1 to {chars_max} characters (EMVCo's limit), got {len(tidy)}",
            field=field,
        )
    if not _PRINTABLE_ASCII.fullmatch(tidy):
        raise InvalidMerchantError(
            f"{field} must be printable ASCII letters, digits and punctuation (EMVCo's common"
            " character set); put a Chinese name in alternate_name",
            field=field,
        )
    return tidy


def _optional_local_text(text: str | None, field: str, chars_max: int) -> str | None:
    if text is None:
        return None
    tidy = _tidy(text, field)
    if not 1 <= len(tidy) <= chars_max:
        raise InvalidMerchantError(
            f"{field} is 1 to {chars_max} characters (EMVCo's limit), got {len(tidy)}",
            field=field,
        )
    for char in tidy:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise InvalidMerchantError(
                f"{field} cannot contain control or invisible characters (U+{ord(char):04X})",
                field=field,
            )
    return tidy


def check_mcc(mcc: str) -> str:
    """``mcc`` when it is an ISO 18245 merchant category code this bank accepts.

    Raises InvalidMerchantError (field ``mcc``): not four ASCII digits, in a
    range ISO 18245 reserves (0000-0699, 1000-1499), or in :data:`MCC_REFUSED`.
    """
    if len(mcc) != MCC_LENGTH or not all("0" <= c <= "9" for c in mcc):
        raise InvalidMerchantError(
            "mcc is an ISO 18245 merchant category code: exactly four digits, e.g. 5812",
            field="mcc",
        )
    number = int(mcc)
    for low, high in MCC_RESERVED_RANGES:
        if low <= number <= high:
            raise InvalidMerchantError(
                f"mcc {mcc} is in {low:04d}-{high:04d}, which ISO 18245 reserves; use the code"
                " of the merchant's trade (0700-0999, 1500-9999)",
                field="mcc",
            )
    reason = MCC_REFUSED.get(mcc)
    if reason is not None:
        raise InvalidMerchantError(f"mcc {mcc} is not accepted: {reason}", field="mcc")
    return mcc


def check_count_below(count: int, count_max: int, what: str) -> None:
    """Room for one more when ``count`` already exist.

    Raises MerchantQuotaError naming the limit.
    """
    if count >= count_max:
        raise MerchantQuotaError(f"at most {count_max} {what}; {count} already")


def check_page_limit(limit: int, limit_max: int) -> int:
    """Raises InvalidMerchantError (field ``limit``) unless 1 <= limit <= limit_max."""
    if not 1 <= limit <= limit_max:
        raise InvalidMerchantError(f"limit is 1 to {limit_max}, got {limit}", field="limit")
    return limit


# --- merchant-presented QR codes ----------------------------------------------------------


class QrKind(StrEnum):
    """``static``: no amount, the payer enters it, pays any number of times.
    ``dynamic``: one amount, an expiry, and it pays once."""

    STATIC = "static"
    DYNAMIC = "dynamic"


class QrStatus(StrEnum):
    ACTIVE = "active"
    USED = "used"  # a dynamic code that was paid


# The merchant account information template (EMVCo IDs 26-51) that carries
# this bank's merchant id and the code's id.
QR_TEMPLATE_ID: Final = "26"
QR_GUI: Final = "cn.zhifu"
QR_MERCHANT_FIELD: Final = "01"
QR_CODE_FIELD: Final = "02"
ORDER_REF_CHARS_MAX: Final = ADDITIONAL_DATA_LENGTH_MAX  # 25: EMVCo tag 62.05
TERMINAL_LABEL_CHARS_MAX: Final = ADDITIONAL_DATA_LENGTH_MAX  # 25: EMVCo tag 62.07
DYNAMIC_QR_TTL_S_MIN: Final = 60
DYNAMIC_QR_TTL_S_MAX: Final = 24 * 3600
DYNAMIC_QR_TTL_S_DEFAULT: Final = 15 * 60
STATIC_QR_CODES_PER_MERCHANT_MAX: Final = 100
# Dynamic codes not yet paid nor expired: a till makes one per sale.
OPEN_DYNAMIC_QR_CODES_PER_MERCHANT_MAX: Final = 1_000


@dataclass(frozen=True, slots=True)
class QrRequest:
    """What a merchant asks for: a static code, or a dynamic one with an amount."""

    kind: QrKind
    amount: Money | None = None
    order_ref: str | None = None
    terminal_label: str | None = None
    ttl_s: int | None = None


def check_qr_request(request: QrRequest, currency: str) -> QrRequest:
    """The request, checked: a dynamic code has an amount in the merchant's
    currency and a time to live of :data:`DYNAMIC_QR_TTL_S_MIN` to
    :data:`DYNAMIC_QR_TTL_S_MAX` seconds (default
    :data:`DYNAMIC_QR_TTL_S_DEFAULT`); a static one has neither, nor an order
    reference. References and labels are printable ASCII of at most 25.

    Raises InvalidMerchantError naming the field; InvalidPaymentError for an
    amount that is not a valid payment.
    """
    order_ref = check_reference(request.order_ref, "order_ref", ORDER_REF_CHARS_MAX)
    label = check_reference(request.terminal_label, "terminal_label", TERMINAL_LABEL_CHARS_MAX)
    if request.kind is QrKind.STATIC:
        for value, field in ((request.amount, "amount"), (order_ref, "order_ref")):
            if value is not None:
                raise InvalidMerchantError(
                    f"a static QR code has no {field}: the payer enters the amount; make a"
                    f" dynamic code for one sale",
                    field=field,
                )
        if request.ttl_s is not None:
            raise InvalidMerchantError("a static QR code does not expire", field="ttl_s")
        return QrRequest(QrKind.STATIC, terminal_label=label)
    if request.amount is None:
        raise InvalidMerchantError("a dynamic QR code needs the amount to pay", field="amount")
    if request.amount.currency != currency:
        raise InvalidMerchantError(
            f"the merchant takes {currency}, the amount is in {request.amount.currency}",
            field="currency",
        )
    check_payment_amount(request.amount)
    ttl_s = DYNAMIC_QR_TTL_S_DEFAULT if request.ttl_s is None else request.ttl_s
    if not DYNAMIC_QR_TTL_S_MIN <= ttl_s <= DYNAMIC_QR_TTL_S_MAX:
        raise InvalidMerchantError(
            f"ttl_s is {DYNAMIC_QR_TTL_S_MIN} to {DYNAMIC_QR_TTL_S_MAX} seconds, got {ttl_s}",
            field="ttl_s",
        )
    return QrRequest(QrKind.DYNAMIC, request.amount, order_ref, label, ttl_s)


def check_reference(text: str | None, field: str, chars_max: int) -> str | None:
    """An optional reference or label: 1 to ``chars_max`` printable ASCII characters.

    Raises InvalidMerchantError naming ``field``.
    """
    if text is None:
        return None
    if not 1 <= len(text) <= chars_max or not _PRINTABLE_ASCII.fullmatch(text):
        raise InvalidMerchantError(
            f"{field} is 1 to {chars_max} printable ASCII characters (EMVCo tag 62)",
            field=field,
        )
    return text


def build_qr_payload(
    merchant_id: uuid.UUID,
    code_id: uuid.UUID,
    details: MerchantDetails,
    request: QrRequest,
) -> str:
    """The EMVCo payload of a code: the bank's template (GUI :data:`QR_GUI`, the
    merchant id in 01, the code id in 02), the merchant's category, currency,
    name and city (and the Chinese ones in 64), the amount of a dynamic code
    (54), its order reference (62.05) and the terminal label (62.07)."""
    additional = {}
    if request.order_ref is not None:
        additional["reference_label"] = request.order_ref
    if request.terminal_label is not None:
        additional["terminal_label"] = request.terminal_label
    alternate = (
        None
        if details.alternate_name is None
        else AlternateLanguage(ALTERNATE_LANGUAGE, details.alternate_name, details.alternate_city)
    )
    account = MerchantAccount.template(
        QR_TEMPLATE_ID,
        QR_GUI,
        {QR_MERCHANT_FIELD: merchant_id.hex, QR_CODE_FIELD: code_id.hex},
    )
    return build_merchant_qr(
        merchant_name=details.name,
        merchant_city=details.city,
        merchant_category_code=details.mcc,
        currency=details.currency,
        merchant_accounts=[account],
        amount_minor=None if request.amount is None else request.amount.amount_minor,
        initiation_method=request.kind.value,
        country=COUNTRY,
        additional_data=additional or None,
        alternate_language=alternate,
    )


@dataclass(frozen=True, slots=True)
class ScannedCode:
    """Which of this bank's QR codes a scanned payload names."""

    merchant_id: uuid.UUID
    code_id: uuid.UUID


def scanned_code(qr: MerchantQr) -> ScannedCode:
    """The merchant and code ids in a parsed payload's zhifu template.

    Raises ForeignQrCodeError when no template has the GUI :data:`QR_GUI`
    with two well-formed ids: a code of another wallet or bank.
    """
    for account in qr.merchant_accounts:
        if account.gui is None or account.gui.lower() != QR_GUI:
            continue
        try:
            return ScannedCode(
                uuid.UUID(hex=account.fields.get(QR_MERCHANT_FIELD, "")),
                uuid.UUID(hex=account.fields.get(QR_CODE_FIELD, "")),
            )
        except ValueError:
            break
    raise ForeignQrCodeError(
        "this QR code was not issued by zhifu: pay it with the wallet or bank app it names"
    )


def check_payload_matches(stored: str, scanned: str) -> None:
    """A scanned payload must be exactly the one issued: its CRC proves no
    more than that it was copied faithfully, not who made it.

    Raises ForeignQrCodeError.
    """
    if stored != scanned:
        raise ForeignQrCodeError(
            "this QR code differs from the one the merchant was given (it may have been"
            " altered): ask the merchant for the code again"
        )


def check_qr_usable(kind: QrKind, status: QrStatus, expires_ts: int | None, now_ts: int) -> None:
    """A static code is always usable; a dynamic one until it is paid or expires.

    Raises QrCodeUsedError, QrCodeExpiredError.
    """
    if kind is QrKind.STATIC:
        return
    if status is QrStatus.USED:
        raise QrCodeUsedError("this QR code was already paid: it pays only once")
    if expires_ts is not None and now_ts >= expires_ts:
        raise QrCodeExpiredError("this QR code has expired: ask the merchant for a new one")


def amount_to_pay(kind: QrKind, stored: Money | None, given: Money | None) -> Money:
    """What the payer pays: the amount entered for a static code; the code's own
    for a dynamic one (an amount entered must be the same).

    Raises InvalidMerchantError (field ``amount``).
    """
    if kind is QrKind.STATIC or stored is None:
        if given is None:
            raise InvalidMerchantError(
                "this QR code has no amount: enter the amount to pay", field="amount"
            )
        return given
    if given is not None and given != stored:
        raise InvalidMerchantError(
            f"this QR code is for {stored.format()}: pay exactly that, or leave amount out",
            field="amount",
        )
    return stored


# --- customer-presented payment codes -------------------------------------------------------


class PaymentCodeStatus(StrEnum):
    ACTIVE = "active"
    USED = "used"


# An 18-digit code: the bank's prefix, 15 random digits and a Luhn check digit,
# so a mistyped code is caught at the till before it is looked up.
PAYMENT_CODE_PREFIX: Final = "88"
PAYMENT_CODE_LENGTH: Final = 18
PAYMENT_CODE_RANDOM_DIGITS: Final = PAYMENT_CODE_LENGTH - len(PAYMENT_CODE_PREFIX) - 1
PAYMENT_CODE_TEXT_CHARS_MAX: Final = 32  # with the spaces a till may read in
PAYMENT_CODE_TTL_S: Final = 60
PAYMENT_CODES_LIVE_MAX: Final = 5  # per customer: unused and unexpired
PAYMENT_CODE_INDEX_PURPOSE: Final = "merchants.payment_code"
# Unusable codes a partner key may present per window before it must wait.
CODE_FAILURES_PER_WINDOW_MAX: Final = 20
CODE_FAILURE_WINDOW_S: Final = 60
_CODE_SEPARATORS: Final = str.maketrans("", "", " -")


def new_payment_code(random_below: Callable[[int], int]) -> str:
    """A fresh code; ``random_below(n)`` is a cryptographic random int in [0, n)."""
    body = (
        PAYMENT_CODE_PREFIX
        + f"{random_below(10**PAYMENT_CODE_RANDOM_DIGITS):0{PAYMENT_CODE_RANDOM_DIGITS}d}"
    )
    return body + luhn_check_digit(body)


def parse_payment_code(text: str) -> str:
    """The 18 digits of a code as a till read them (spaces and hyphens ignored).

    Raises PaymentCodeInvalidError saying what a code looks like.
    """
    digits = text[:PAYMENT_CODE_TEXT_CHARS_MAX].translate(_CODE_SEPARATORS)
    if (
        len(text) > PAYMENT_CODE_TEXT_CHARS_MAX
        or len(digits) != PAYMENT_CODE_LENGTH
        or not digits.startswith(PAYMENT_CODE_PREFIX)
        or not luhn_valid(digits)
    ):
        raise PaymentCodeInvalidError(
            f"a payment code is {PAYMENT_CODE_LENGTH} digits starting with"
            f" {PAYMENT_CODE_PREFIX}: scan the customer's code again"
        )
    return digits


def default_code_cap(currency: str) -> Money:
    """The most a code may be charged when the customer sets no cap: just under
    the amount that needs a second factor, or the payment maximum."""
    threshold = STEP_UP_AMOUNT_MINOR.get(currency)
    return Money(PAYMENT_AMOUNT_MINOR_MAX if threshold is None else threshold - 1, currency)


def check_code_cap(cap: Money | None, currency: str) -> Money:
    """The cap of a new code: :func:`default_code_cap` or one the customer chose.

    Raises InvalidMerchantError (field ``amount_cap``), InvalidPaymentError.
    """
    if cap is None:
        return default_code_cap(currency)
    if cap.currency != currency:
        raise InvalidMerchantError(
            f"the account holds {currency}, the cap is in {cap.currency}", field="amount_cap"
        )
    return check_payment_amount(cap)


def check_code_usable(
    status: PaymentCodeStatus, expires_ts: int, now_ts: int, currency: str, amount: Money
) -> None:
    """An active code before its expiry, charged in its account's currency.

    Raises PaymentCodeInvalidError (unknown, used and expired codes alike).
    """
    if status is not PaymentCodeStatus.ACTIVE or now_ts >= expires_ts:
        raise unusable_code()
    if amount.currency != currency:
        raise PaymentCodeInvalidError(
            f"this payment code pays in {currency}, the charge is in {amount.currency}"
        )


def unusable_code() -> PaymentCodeInvalidError:
    return PaymentCodeInvalidError(
        "this payment code is not valid: it expired, was used, or was mistyped; ask the"
        " customer to show a fresh code"
    )


def check_within_cap(amount: Money, cap: Money) -> None:
    """Raises PaymentCodeCapError when ``amount`` is over the code's cap."""
    if amount > cap:
        raise PaymentCodeCapError(
            f"this payment code allows at most {cap.format()}; the customer can make a code"
            " with a higher cap"
        )


def failure_window(now_ts: int) -> int:
    """The start (seconds) of the throttle window ``now_ts`` (microseconds) falls in."""
    now_s = now_ts // US
    return now_s - now_s % CODE_FAILURE_WINDOW_S


def check_code_guesses(failures: int, now_ts: int) -> None:
    """Raises CodeGuessesThrottledError once a key has presented
    :data:`CODE_FAILURES_PER_WINDOW_MAX` unusable codes in this window."""
    if failures >= CODE_FAILURES_PER_WINDOW_MAX:
        window_end_s = failure_window(now_ts) + CODE_FAILURE_WINDOW_S
        raise CodeGuessesThrottledError(max(1, window_end_s - now_ts // US))


# --- refunds ------------------------------------------------------------------------------

REFUND_WINDOW_S: Final = 365 * 24 * 3600
REFUNDS_PER_PAYMENT_MAX: Final = 50


def check_refundable(
    kind: PaymentKind,
    state: OrderState,
    paid_ts: int,
    now_ts: int,
    refunds_so_far: int,
) -> None:
    """A settled merchant payment, at most :data:`REFUND_WINDOW_S` old, with
    fewer than :data:`REFUNDS_PER_PAYMENT_MAX` refunds so far. The amount is
    checked by :func:`zhifu.payments.model.check_refund`.

    Raises RefundNotAllowedError, MerchantQuotaError.
    """
    if kind is not PaymentKind.MERCHANT:
        raise RefundNotAllowedError(
            f"only merchant payments are refunded; this is a {kind.value} order"
        )
    if state is not OrderState.SETTLED:
        raise RefundNotAllowedError(
            f"only settled payments are refunded; this one is {state.value}"
        )
    if now_ts - paid_ts > REFUND_WINDOW_S * US:
        raise RefundNotAllowedError(
            f"payments are refunded within {REFUND_WINDOW_S // 86_400} days of being paid;"
            " settle older ones with the customer directly"
        )
    check_count_below(refunds_so_far, REFUNDS_PER_PAYMENT_MAX, "refunds of one payment")

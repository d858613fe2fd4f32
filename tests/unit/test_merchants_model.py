"""The merchants context's pure rules: merchant details and category codes, QR
codes built and read back, payment codes, caps, the guessing throttle, refunds,
and every limit at the limit and one past it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
from zhifu.merchants.model import (
    CITY_CHARS_MAX,
    CODE_FAILURE_WINDOW_S,
    CODE_FAILURES_PER_WINDOW_MAX,
    DYNAMIC_QR_TTL_S_DEFAULT,
    DYNAMIC_QR_TTL_S_MAX,
    DYNAMIC_QR_TTL_S_MIN,
    MERCHANTS_PAGE_MAX,
    MERCHANTS_PER_CUSTOMER_MAX,
    NAME_CHARS_MAX,
    OPEN_DYNAMIC_QR_CODES_PER_MERCHANT_MAX,
    ORDER_REF_CHARS_MAX,
    PAYMENT_CODE_LENGTH,
    PAYMENT_CODE_PREFIX,
    PAYMENT_CODE_TEXT_CHARS_MAX,
    PAYMENT_CODES_LIVE_MAX,
    PAYMENTS_PAGE_MAX,
    REFUND_WINDOW_S,
    REFUNDS_PER_PAYMENT_MAX,
    STATIC_QR_CODES_PER_MERCHANT_MAX,
    TEXT_INPUT_CHARS_MAX,
    US,
    MerchantDetails,
    PaymentCodeStatus,
    QrKind,
    QrRequest,
    QrStatus,
    amount_to_pay,
    build_qr_payload,
    check_code_cap,
    check_code_guesses,
    check_code_usable,
    check_count_below,
    check_mcc,
    check_merchant_details,
    check_page_limit,
    check_payload_matches,
    check_qr_request,
    check_qr_usable,
    check_refundable,
    check_within_cap,
    default_code_cap,
    failure_window,
    new_payment_code,
    parse_payment_code,
    scanned_code,
)
from zhifu.money import Money
from zhifu.payments.emvco import parse
from zhifu.payments.errors import InvalidPaymentError
from zhifu.payments.model import PAYMENT_AMOUNT_MINOR_MAX, OrderState, PaymentKind

DETAILS = MerchantDetails("GOLDEN DRAGON NOODLES", "SHANGHAI", "5812", "CNY", "金龙面馆", "上海")
MERCHANT_ID = uuid.UUID("0192f0c1-0000-7000-8000-0000000000aa")
CODE_ID = uuid.UUID("0192f0c1-0000-7000-8000-0000000000bb")
# The worked example of EMV QRCPS MPM: a valid code of other networks.
FOREIGN_PAYLOAD = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988"
    "770708123456786304A13A"
)


def cny(text: str) -> Money:
    return Money.parse(text, "CNY")


# --- merchant details ----------------------------------------------------------------------


def test_details_are_tidied_and_kept() -> None:
    checked = check_merchant_details(
        MerchantDetails("  GOLDEN   DRAGON ", " SHANGHAI", "5812", "CNY", " 金龙  面馆 ", None)
    )
    assert (checked.name, checked.city, checked.alternate_name) == (
        "GOLDEN DRAGON",
        "SHANGHAI",
        "金龙 面馆",
    )
    assert checked.alternate_city is None


@pytest.mark.parametrize(
    ("field", "chars_max"),
    [("name", NAME_CHARS_MAX), ("city", CITY_CHARS_MAX), ("alternate_name", 25)],
)
def test_names_at_their_limit_and_one_past(field: str, chars_max: int) -> None:
    at_limit = with_field(field, "A" * chars_max)
    assert getattr(check_merchant_details(at_limit), field) == "A" * chars_max
    with pytest.raises(InvalidMerchantError) as refused:
        check_merchant_details(with_field(field, "A" * (chars_max + 1)))
    assert refused.value.field == field
    assert f"1 to {chars_max}" in str(refused.value)


def with_field(field: str, value: str) -> MerchantDetails:
    return dataclasses.replace(DETAILS, **{field: value})


def test_raw_input_past_its_bound_is_refused_before_tidying() -> None:
    spaced = "A" + " " * (TEXT_INPUT_CHARS_MAX - 1)
    assert check_merchant_details(with_field("name", spaced)).name == "A"
    with pytest.raises(InvalidMerchantError, match=f"at most {TEXT_INPUT_CHARS_MAX}"):
        check_merchant_details(with_field("name", spaced + " "))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "金龙面馆", "printable ASCII"),
        ("city", "上海", "printable ASCII"),
        ("name", "   ", "1 to 25"),
        ("alternate_name", "金龙\u202e面馆", "invisible"),
        ("alternate_city", "上\x00海", "control"),
    ],
)
def test_bad_details_are_refused_with_the_field(field: str, value: str, message: str) -> None:
    with pytest.raises(InvalidMerchantError, match=message) as refused:
        check_merchant_details(with_field(field, value))
    assert refused.value.field == field


@pytest.mark.parametrize("mcc", ["0700", "0742", "1500", "5812", "5411", "9999"])
def test_assigned_category_codes_are_accepted(mcc: str) -> None:
    assert check_mcc(mcc) == mcc


@pytest.mark.parametrize(
    ("mcc", "message"),
    [
        ("0000", "reserves"),
        ("0699", "reserves"),
        ("1000", "reserves"),
        ("1499", "reserves"),
        ("7995", "gambling"),
        ("6011", "cash"),
        ("581", "four digits"),
        ("58120", "four digits"),
        ("58a2", "four digits"),
        ("５８１２", "four digits"),
    ],
)
def test_reserved_refused_and_malformed_codes_are_refused(mcc: str, message: str) -> None:
    with pytest.raises(InvalidMerchantError, match=message) as refused:
        check_mcc(mcc)
    assert refused.value.field == "mcc"


@pytest.mark.parametrize(
    "count_max",
    [
        MERCHANTS_PER_CUSTOMER_MAX,
        STATIC_QR_CODES_PER_MERCHANT_MAX,
        OPEN_DYNAMIC_QR_CODES_PER_MERCHANT_MAX,
        PAYMENT_CODES_LIVE_MAX,
        REFUNDS_PER_PAYMENT_MAX,
    ],
)
def test_count_limits_leave_room_up_to_the_limit(count_max: int) -> None:
    check_count_below(count_max - 1, count_max, "things")
    with pytest.raises(MerchantQuotaError, match=f"at most {count_max} things"):
        check_count_below(count_max, count_max, "things")


@pytest.mark.parametrize("limit_max", [PAYMENTS_PAGE_MAX, MERCHANTS_PAGE_MAX])
def test_page_limits(limit_max: int) -> None:
    assert check_page_limit(limit_max, limit_max) == limit_max
    assert check_page_limit(1, limit_max) == 1
    for bad in (0, limit_max + 1):
        with pytest.raises(InvalidMerchantError, match=f"1 to {limit_max}"):
            check_page_limit(bad, limit_max)


# --- QR codes ----------------------------------------------------------------------------------


def test_a_dynamic_code_is_built_and_read_back() -> None:
    request = check_qr_request(QrRequest(QrKind.DYNAMIC, cny("36.50"), "ORDER-42", "TILL 3"), "CNY")
    assert request.ttl_s == DYNAMIC_QR_TTL_S_DEFAULT
    payload = build_qr_payload(MERCHANT_ID, CODE_ID, DETAILS, request)
    qr = parse(payload)
    assert qr.initiation_method == "dynamic"
    assert (qr.amount_minor, qr.currency, qr.country) == (3650, "CNY", "CN")
    assert (qr.merchant_name, qr.merchant_city, qr.merchant_category_code) == (
        "GOLDEN DRAGON NOODLES",
        "SHANGHAI",
        "5812",
    )
    assert qr.additional_data == {"reference_label": "ORDER-42", "terminal_label": "TILL 3"}
    assert qr.alternate_language is not None
    assert (qr.alternate_language.language, qr.alternate_language.name) == ("ZH", "金龙面馆")
    (account,) = qr.merchant_accounts
    assert (account.id, account.gui) == ("26", "cn.zhifu")
    assert scanned_code(qr).merchant_id == MERCHANT_ID
    assert scanned_code(qr).code_id == CODE_ID


def test_a_static_code_has_no_amount() -> None:
    request = check_qr_request(QrRequest(QrKind.STATIC), "CNY")
    qr = parse(build_qr_payload(MERCHANT_ID, CODE_ID, DETAILS, request))
    assert (qr.initiation_method, qr.amount_minor) == ("static", None)
    assert qr.additional_data == {}


@given(st.integers(min_value=1, max_value=PAYMENT_AMOUNT_MINOR_MAX), st.uuids(), st.uuids())
def test_every_amount_and_id_round_trips(
    amount_minor: int, merchant: uuid.UUID, code: uuid.UUID
) -> None:
    request = check_qr_request(QrRequest(QrKind.DYNAMIC, Money(amount_minor, "CNY")), "CNY")
    qr = parse(build_qr_payload(merchant, code, DETAILS, request))
    assert qr.amount_minor == amount_minor
    assert scanned_code(qr).merchant_id == merchant
    assert scanned_code(qr).code_id == code


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (QrRequest(QrKind.STATIC, cny("1.00")), "amount"),
        (QrRequest(QrKind.STATIC, order_ref="A1"), "order_ref"),
        (QrRequest(QrKind.STATIC, ttl_s=60), "ttl_s"),
        (QrRequest(QrKind.DYNAMIC), "amount"),
        (QrRequest(QrKind.DYNAMIC, Money.parse("1.00", "USD")), "currency"),
        (QrRequest(QrKind.DYNAMIC, cny("1.00"), order_ref="订单"), "order_ref"),
        (QrRequest(QrKind.DYNAMIC, cny("1.00"), terminal_label=""), "terminal_label"),
    ],
)
def test_bad_qr_requests_name_the_field(request_: QrRequest, field: str) -> None:
    with pytest.raises(InvalidMerchantError) as refused:
        check_qr_request(request_, "CNY")
    assert refused.value.field == field


def test_qr_limits_at_the_limit_and_one_past() -> None:
    for ttl_s in (DYNAMIC_QR_TTL_S_MIN, DYNAMIC_QR_TTL_S_MAX):
        assert check_qr_request(QrRequest(QrKind.DYNAMIC, cny("1"), ttl_s=ttl_s), "CNY").ttl_s
    for ttl_s in (DYNAMIC_QR_TTL_S_MIN - 1, DYNAMIC_QR_TTL_S_MAX + 1):
        with pytest.raises(InvalidMerchantError, match="ttl_s"):
            check_qr_request(QrRequest(QrKind.DYNAMIC, cny("1"), ttl_s=ttl_s), "CNY")
    ref = "R" * ORDER_REF_CHARS_MAX
    assert check_qr_request(QrRequest(QrKind.DYNAMIC, cny("1"), ref), "CNY").order_ref == ref
    with pytest.raises(InvalidMerchantError, match="order_ref"):
        check_qr_request(QrRequest(QrKind.DYNAMIC, cny("1"), ref + "R"), "CNY")
    most = Money(PAYMENT_AMOUNT_MINOR_MAX, "CNY")
    assert check_qr_request(QrRequest(QrKind.DYNAMIC, most), "CNY").amount == most
    with pytest.raises(InvalidPaymentError):
        check_qr_request(
            QrRequest(QrKind.DYNAMIC, Money(PAYMENT_AMOUNT_MINOR_MAX + 1, "CNY")), "CNY"
        )


def test_a_code_of_another_network_is_not_ours() -> None:
    with pytest.raises(ForeignQrCodeError, match="not issued by zhifu"):
        scanned_code(parse(FOREIGN_PAYLOAD))


def test_an_altered_payload_does_not_match_the_issued_one() -> None:
    request = check_qr_request(QrRequest(QrKind.DYNAMIC, cny("36.50")), "CNY")
    issued = build_qr_payload(MERCHANT_ID, CODE_ID, DETAILS, request)
    cheaper = build_qr_payload(
        MERCHANT_ID,
        CODE_ID,
        DETAILS,
        check_qr_request(QrRequest(QrKind.DYNAMIC, cny("0.01")), "CNY"),
    )
    check_payload_matches(issued, issued)
    assert scanned_code(parse(cheaper)) == scanned_code(parse(issued))  # same ids, valid CRC
    with pytest.raises(ForeignQrCodeError, match="altered"):
        check_payload_matches(issued, cheaper)


def test_a_dynamic_code_pays_once_until_it_expires() -> None:
    expires = 1_000 * US
    check_qr_usable(QrKind.DYNAMIC, QrStatus.ACTIVE, expires, expires - 1)
    with pytest.raises(QrCodeExpiredError):
        check_qr_usable(QrKind.DYNAMIC, QrStatus.ACTIVE, expires, expires)
    with pytest.raises(QrCodeUsedError):
        check_qr_usable(QrKind.DYNAMIC, QrStatus.USED, expires, 0)
    check_qr_usable(QrKind.STATIC, QrStatus.ACTIVE, None, 10**18)


def test_the_amount_to_pay() -> None:
    assert amount_to_pay(QrKind.STATIC, None, cny("5")) == cny("5")
    assert amount_to_pay(QrKind.DYNAMIC, cny("5"), None) == cny("5")
    assert amount_to_pay(QrKind.DYNAMIC, cny("5"), cny("5.00")) == cny("5")
    with pytest.raises(InvalidMerchantError, match="enter the amount"):
        amount_to_pay(QrKind.STATIC, None, None)
    with pytest.raises(InvalidMerchantError, match="exactly that"):
        amount_to_pay(QrKind.DYNAMIC, cny("5"), cny("4.99"))


# --- payment codes -------------------------------------------------------------------------------


def drawing(drawn: int) -> Callable[[int], int]:
    return lambda bound: drawn % bound


def test_a_new_code_has_the_prefix_and_a_luhn_digit() -> None:
    for drawn in (0, 123_456_789_012_345, 10**15 - 1):
        code = new_payment_code(drawing(drawn))
        assert len(code) == PAYMENT_CODE_LENGTH
        assert code.startswith(PAYMENT_CODE_PREFIX)
        assert parse_payment_code(code) == code


def test_a_code_is_read_as_a_till_sends_it() -> None:
    code = new_payment_code(lambda bound: 421_337_000_123_456)
    spaced = f"{code[:6]} {code[6:10]}-{code[10:14]} {code[14:]}"
    assert parse_payment_code(spaced) == code
    padded = code + " " * (PAYMENT_CODE_TEXT_CHARS_MAX - len(code))
    assert parse_payment_code(padded) == code
    with pytest.raises(PaymentCodeInvalidError):
        parse_payment_code(padded + " ")


def test_mistyped_and_foreign_codes_are_refused() -> None:
    code = new_payment_code(lambda bound: 421_337_000_123_456)
    typo = code[:7] + str((int(code[7]) + 1) % 10) + code[8:]
    for bad in (typo, code[:-1], code + "0", "77" + code[2:], "", "88abc"):
        with pytest.raises(PaymentCodeInvalidError, match="18 digits starting with 88"):
            parse_payment_code(bad)


def test_the_default_cap_stays_under_the_step_up_amount() -> None:
    assert default_code_cap("CNY") == Money(5_000_00 - 1, "CNY")
    assert default_code_cap("JPY") == Money(100_000 - 1, "JPY")
    assert default_code_cap("GBP") == Money(PAYMENT_AMOUNT_MINOR_MAX, "GBP")
    assert check_code_cap(None, "CNY") == default_code_cap("CNY")
    assert check_code_cap(cny("50"), "CNY") == cny("50")
    with pytest.raises(InvalidMerchantError, match="cap is in USD"):
        check_code_cap(Money.parse("1", "USD"), "CNY")
    with pytest.raises(InvalidPaymentError):
        check_code_cap(Money(PAYMENT_AMOUNT_MINOR_MAX + 1, "CNY"), "CNY")


def test_a_code_is_usable_until_its_expiry_and_only_once() -> None:
    expires = 60 * US
    check_code_usable(PaymentCodeStatus.ACTIVE, expires, expires - 1, "CNY", cny("1"))
    for status, now in ((PaymentCodeStatus.ACTIVE, expires), (PaymentCodeStatus.USED, 0)):
        with pytest.raises(PaymentCodeInvalidError, match="expired, was used, or was mistyped"):
            check_code_usable(status, expires, now, "CNY", cny("1"))
    with pytest.raises(PaymentCodeInvalidError, match="pays in CNY"):
        check_code_usable(PaymentCodeStatus.ACTIVE, expires, 0, "CNY", Money.parse("1", "USD"))


def test_a_charge_at_the_cap_passes_and_one_fen_more_does_not() -> None:
    check_within_cap(cny("50.00"), cny("50.00"))
    with pytest.raises(PaymentCodeCapError, match=r"at most 50\.00 CNY"):
        check_within_cap(cny("50.01"), cny("50.00"))


def test_the_guessing_throttle_counts_per_window() -> None:
    now = (1_750_000_000 + 17) * US
    start_s = failure_window(now)
    assert start_s % CODE_FAILURE_WINDOW_S == 0
    assert start_s <= now // US < start_s + CODE_FAILURE_WINDOW_S
    check_code_guesses(CODE_FAILURES_PER_WINDOW_MAX - 1, now)
    with pytest.raises(CodeGuessesThrottledError) as throttled:
        check_code_guesses(CODE_FAILURES_PER_WINDOW_MAX, now)
    window_end_s = failure_window(now) + CODE_FAILURE_WINDOW_S
    assert throttled.value.retry_after_s == window_end_s - now // US
    assert throttled.value.headers == {"Retry-After": str(throttled.value.retry_after_s)}
    assert 1 <= throttled.value.retry_after_s <= CODE_FAILURE_WINDOW_S


# --- refunds -----------------------------------------------------------------------------------


def test_refunds_within_the_window_and_the_count() -> None:
    paid = 1_000 * US
    limit = paid + REFUND_WINDOW_S * US
    check_refundable(PaymentKind.MERCHANT, OrderState.SETTLED, paid, limit, 0)
    check_refundable(
        PaymentKind.MERCHANT, OrderState.SETTLED, paid, paid, REFUNDS_PER_PAYMENT_MAX - 1
    )
    with pytest.raises(RefundNotAllowedError, match="within 365 days"):
        check_refundable(PaymentKind.MERCHANT, OrderState.SETTLED, paid, limit + 1, 0)
    with pytest.raises(MerchantQuotaError, match=f"at most {REFUNDS_PER_PAYMENT_MAX}"):
        check_refundable(
            PaymentKind.MERCHANT, OrderState.SETTLED, paid, paid, REFUNDS_PER_PAYMENT_MAX
        )


@pytest.mark.parametrize(
    ("kind", "state", "message"),
    [
        (PaymentKind.TRANSFER, OrderState.SETTLED, "only merchant payments"),
        (PaymentKind.REFUND, OrderState.SETTLED, "only merchant payments"),
        (PaymentKind.MERCHANT, OrderState.RETURNED, "only settled payments"),
        (PaymentKind.MERCHANT, OrderState.FAILED, "only settled payments"),
    ],
)
def test_only_settled_merchant_payments_are_refunded(
    kind: PaymentKind, state: OrderState, message: str
) -> None:
    with pytest.raises(RefundNotAllowedError, match=message):
        check_refundable(kind, state, 0, 0, 0)

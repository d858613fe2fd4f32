"""Money: the ISO 4217 table, exact parsing and formatting, BIGINT limits, splits."""

from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from enum import IntEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.invariant import InvariantError, invariant
from zhifu.money import (
    AMOUNT_MINOR_MAX,
    AMOUNT_TEXT_LENGTH_MAX,
    CURRENCIES,
    SPLIT_PARTS_MAX,
    SPLIT_WEIGHT_MAX,
    AmountOutOfRangeError,
    CurrencyMismatchError,
    FloatNotAllowedError,
    InvalidAmountError,
    InvalidSplitError,
    Money,
    MoneyError,
    TooManyDecimalsError,
    UnknownCurrencyError,
    UnsupportedLocaleError,
    allocate_evenly,
    currency,
    parse_amount_minor,
    split,
)

MAX = AMOUNT_MINOR_MAX

codes = st.sampled_from(sorted(CURRENCIES))
amounts = st.integers(min_value=-MAX, max_value=MAX)
money = st.builds(Money, amounts, codes)


# --- the ISO 4217 table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "numeric", "exponent"),
    [
        ("JPY", "392", 0),
        ("KRW", "410", 0),
        ("CLP", "152", 0),
        ("ISK", "352", 0),
        ("VND", "704", 0),
        ("UYI", "940", 0),
        ("XAF", "950", 0),
        ("XOF", "952", 0),
        ("XPF", "953", 0),
        ("UGX", "800", 0),
        ("CNY", "156", 2),
        ("USD", "840", 2),
        ("EUR", "978", 2),
        ("GBP", "826", 2),
        ("HKD", "344", 2),
        ("ALL", "008", 2),
        ("BHD", "048", 3),
        ("KWD", "414", 3),
        ("JOD", "400", 3),
        ("OMR", "512", 3),
        ("TND", "788", 3),
        ("LYD", "434", 3),
        ("IQD", "368", 3),
        ("CLF", "990", 4),
        ("UYW", "927", 4),
        # Recent additions to list one.
        ("VED", "926", 2),
        ("SLE", "925", 2),
        ("ZWG", "924", 2),
        ("XCG", "532", 2),
        ("XAD", "396", 2),
    ],
)
def test_currency_numeric_and_exponent(code: str, numeric: str, exponent: int) -> None:
    found = currency(code)
    assert (found.code, found.numeric, found.exponent) == (code, numeric, exponent)
    assert found.name


def test_currencies_with_other_than_two_decimals_are_exactly_these() -> None:
    by_exponent: dict[int, set[str]] = {}
    for found in CURRENCIES.values():
        by_exponent.setdefault(found.exponent, set()).add(found.code)
    assert by_exponent[0] == {
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
        "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF",
    }  # fmt: skip
    assert by_exponent[3] == {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
    assert by_exponent[4] == {"CLF", "UYW"}
    assert set(by_exponent) == {0, 2, 3, 4}


def test_table_codes_are_three_uppercase_letters_with_unique_three_digit_numerics() -> None:
    numerics = [found.numeric for found in CURRENCIES.values()]
    assert len(set(numerics)) == len(numerics)
    for code, found in CURRENCIES.items():
        assert found.code == code
        assert re.fullmatch(r"[A-Z]{3}", code), code
        assert re.fullmatch(r"[0-9]{3}", found.numeric), found.numeric
        assert found.numeric != "000"


def test_table_is_list_one_of_2026_without_na_codes() -> None:
    # 178 codes in list one (2026-01-01) minus the 13 with minor unit "N.A.".
    assert len(CURRENCIES) == 165


@pytest.mark.parametrize(
    "code",
    [
        # Minor unit "N.A." in ISO 4217: not money here.
        "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU", "XUA", "XTS", "XXX",
        # Withdrawn.
        "ANG", "BGN", "CUC", "SLL", "ZWL", "HRK", "VEF", "MRO", "STD", "BYR", "LTL",
        # Not codes at all, or not in the accepted form.
        "cny", "Cny", "CN", "CNYY", "", " CNY", "CNY ", "ABC", "123",
    ],
)  # fmt: skip
def test_unknown_currency(code: str) -> None:
    with pytest.raises(UnknownCurrencyError):
        currency(code)
    with pytest.raises(UnknownCurrencyError):
        Money(1, code)
    with pytest.raises(UnknownCurrencyError):
        Money.parse("1", code)
    with pytest.raises(UnknownCurrencyError):
        parse_amount_minor(1, code)


def test_unknown_currency_messages_say_what_is_allowed() -> None:
    with pytest.raises(UnknownCurrencyError, match="'CNY'"):
        currency("cny")
    with pytest.raises(UnknownCurrencyError, match="XAU has no minor unit"):
        currency("XAU")
    with pytest.raises(UnknownCurrencyError, match="ISO 4217"):
        Money(1, 156)  # type: ignore[arg-type]


def test_error_messages_echo_only_a_bounded_preview_of_the_input() -> None:
    with pytest.raises(UnknownCurrencyError) as caught:
        currency("X" * 100_000)
    assert len(str(caught.value)) < 200
    with pytest.raises(InvalidAmountError) as caught_amount:
        parse_amount_minor([1] * 100_000, "CNY")
    assert len(str(caught_amount.value)) < 200


def test_errors_are_value_errors_under_one_root() -> None:
    for error in (
        UnknownCurrencyError,
        FloatNotAllowedError,
        InvalidAmountError,
        TooManyDecimalsError,
        AmountOutOfRangeError,
        CurrencyMismatchError,
        InvalidSplitError,
        UnsupportedLocaleError,
    ):
        assert issubclass(error, MoneyError)
        assert error.__doc__
    assert issubclass(MoneyError, ValueError)


# --- construction -------------------------------------------------------------------------------


def test_money_is_an_immutable_value() -> None:
    price = Money(150, "CNY")
    assert price == Money.of_minor(150, "CNY") == Money.parse("1.50", "CNY")
    assert hash(price) == hash(Money(150, "CNY"))
    assert Money(150, "CNY") != Money(150, "USD")
    with pytest.raises(dataclasses.FrozenInstanceError):
        price.amount_minor = 1  # type: ignore[misc]


def test_zero() -> None:
    assert Money.zero("JPY") == Money(0, "JPY")
    assert Money.zero("JPY").is_zero()


def test_float_amount_is_refused() -> None:
    with pytest.raises(FloatNotAllowedError, match="not a float"):
        Money(1.0, "CNY")  # type: ignore[arg-type]
    with pytest.raises(FloatNotAllowedError):
        Money.of_minor(float("nan"), "CNY")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False, Decimal(1), "100", None, b"1", [1]])
def test_non_int_amount_is_refused(value: object) -> None:
    with pytest.raises(InvalidAmountError, match="must be an int"):
        Money(value, "CNY")  # type: ignore[arg-type]


def test_int_subclass_amount_is_stored_as_plain_int() -> None:
    class Fen(IntEnum):
        ONE = 1

    stored = Money(Fen.ONE, "CNY").amount_minor
    assert stored == 1
    assert type(stored) is int


def test_amount_minor_at_the_bigint_limit_and_one_past() -> None:
    assert Money(MAX, "CNY").amount_minor == 2**63 - 1
    assert Money(-MAX, "CNY").amount_minor == -(2**63 - 1)
    with pytest.raises(AmountOutOfRangeError, match="9223372036854775807"):
        Money(MAX + 1, "CNY")
    with pytest.raises(AmountOutOfRangeError):
        Money(-MAX - 1, "CNY")


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "amount_minor"),
    [
        ("1234.56", "CNY", 123456),
        ("-0.01", "CNY", -1),
        ("0", "CNY", 0),
        ("-0", "CNY", 0),
        ("0.00", "CNY", 0),
        ("1.5", "CNY", 150),
        ("10", "USD", 1000),
        ("1500", "JPY", 1500),
        ("-1500", "JPY", -1500),
        ("1.234", "BHD", 1234),
        ("0.001", "KWD", 1),
        ("1.2345", "CLF", 12345),
        ("0.0001", "UYW", 1),
        ("92233720368547758.07", "CNY", MAX),
        ("-92233720368547758.07", "CNY", -MAX),
        ("9223372036854775807", "JPY", MAX),
        ("922337203685477.5807", "CLF", MAX),
    ],
)
def test_parse(text: str, code: str, amount_minor: int) -> None:
    assert Money.parse(text, code) == Money(amount_minor, code)
    assert parse_amount_minor(text, code) == amount_minor


@pytest.mark.parametrize(
    "text",
    [
        "", " ", "-", "+", "1e5", "1E5", "1,000", "1_000", " 12", "12 ", "12\n", "+1", "+-1", "--1",
        "-+1", "NaN", "nan", "Infinity", "-inf", "12.", ".5", "-.5", "1.2.3", "0x10", "007", "00",
        "-01.5", "１２", "١٢", "1 000", "12.5 ", "¥12", "12CNY",
    ],
)  # fmt: skip
def test_parse_refuses_text_that_is_not_plain_decimal(text: str) -> None:
    with pytest.raises(InvalidAmountError, match=re.escape("plain decimal text such as '1234.56'")):
        Money.parse(text, "CNY")
    with pytest.raises(InvalidAmountError):
        parse_amount_minor(text, "CNY")


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("1.234", "CNY", "CNY allows at most 2 decimal places, got '1.234'"),
        ("1.230", "CNY", "CNY allows at most 2 decimal places, got '1.230'"),
        ("1.5", "JPY", "JPY allows no decimal places, got '1.5'"),
        ("1.0", "JPY", "JPY allows no decimal places, got '1.0'"),
        ("0.0001", "BHD", "BHD allows at most 3 decimal places, got '0.0001'"),
        ("1.23456", "CLF", "CLF allows at most 4 decimal places, got '1.23456'"),
    ],
)
def test_parse_refuses_too_many_decimals(text: str, code: str, message: str) -> None:
    with pytest.raises(TooManyDecimalsError) as caught:
        Money.parse(text, code)
    assert str(caught.value) == message
    with pytest.raises(TooManyDecimalsError):
        parse_amount_minor(text, code)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("92233720368547758.08", "CNY"),
        ("-92233720368547758.08", "CNY"),
        ("9223372036854775808", "JPY"),
        ("922337203685477.5808", "CLF"),
        ("99999999999999999999999999999999", "JPY"),
    ],
)
def test_parse_one_past_the_bigint_limit(text: str, code: str) -> None:
    with pytest.raises(AmountOutOfRangeError, match="out of range"):
        Money.parse(text, code)
    with pytest.raises(AmountOutOfRangeError):
        parse_amount_minor(text, code)


def test_parse_text_length_at_the_limit_and_one_past() -> None:
    at_limit = "9" * AMOUNT_TEXT_LENGTH_MAX
    with pytest.raises(AmountOutOfRangeError):  # read, then found too large
        Money.parse(at_limit, "JPY")
    with pytest.raises(InvalidAmountError, match=f"at most {AMOUNT_TEXT_LENGTH_MAX}"):
        Money.parse(at_limit + "9", "JPY")
    with pytest.raises(InvalidAmountError, match=f"at most {AMOUNT_TEXT_LENGTH_MAX}"):
        Money.parse("0" * 100_000, "JPY")


def test_parse_refuses_floats_and_non_text() -> None:
    with pytest.raises(FloatNotAllowedError):
        Money.parse(12.34, "CNY")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountError):
        Money.parse(1234, "CNY")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountError):
        Money.parse(b"12.34", "CNY")  # type: ignore[arg-type]


@given(money)
def test_parse_to_decimal_string_round_trips(value: Money) -> None:
    text = value.to_decimal_string()
    assert Money.parse(text, value.currency) == value
    assert parse_amount_minor(text, value.currency) == value.amount_minor
    assert parse_amount_minor(value.amount_minor, value.currency) == value.amount_minor


@given(money)
def test_decimal_string_has_exactly_the_currency_decimals(value: Money) -> None:
    text = value.to_decimal_string()
    exponent = currency(value.currency).exponent
    _, point, fraction = text.partition(".")
    assert len(fraction) == exponent
    assert point == ("." if exponent else "")
    # Decimal is exact: the text is the amount divided by 10**exponent, nothing lost.
    assert Decimal(text).scaleb(exponent) == value.amount_minor


# --- the API edge -------------------------------------------------------------------------------


def test_parse_amount_minor_accepts_int_minor_units_and_decimal_text() -> None:
    assert parse_amount_minor(1234, "CNY") == 1234
    assert parse_amount_minor("12.34", "CNY") == 1234
    assert parse_amount_minor(MAX, "CNY") == MAX
    with pytest.raises(AmountOutOfRangeError):
        parse_amount_minor(MAX + 1, "CNY")
    with pytest.raises(AmountOutOfRangeError):
        parse_amount_minor(-MAX - 1, "CNY")


@pytest.mark.parametrize("value", [12.34, 12.0, float("nan"), float("inf")])
def test_parse_amount_minor_refuses_floats(value: float) -> None:
    with pytest.raises(FloatNotAllowedError, match="not a float"):
        parse_amount_minor(value, "CNY")


@pytest.mark.parametrize("value", [True, False, None, Decimal("12.34"), b"12", [12], {"a": 1}])
def test_parse_amount_minor_refuses_other_types(value: object) -> None:
    with pytest.raises(InvalidAmountError, match="int of minor units or decimal text"):
        parse_amount_minor(value, "CNY")


# --- display ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "code", "decimal", "shown"),
    [
        (123456, "CNY", "1234.56", "1,234.56 CNY"),
        (-123456, "CNY", "-1234.56", "-1,234.56 CNY"),
        (-1, "CNY", "-0.01", "-0.01 CNY"),
        (0, "USD", "0.00", "0.00 USD"),
        (99999, "USD", "999.99", "999.99 USD"),
        (1500, "JPY", "1500", "1,500 JPY"),
        (-1234567, "JPY", "-1234567", "-1,234,567 JPY"),
        (999, "JPY", "999", "999 JPY"),
        (1000000, "BHD", "1000.000", "1,000.000 BHD"),
        (-5, "CLF", "-0.0005", "-0.0005 CLF"),
        (MAX, "CNY", "92233720368547758.07", "92,233,720,368,547,758.07 CNY"),
        (-MAX, "JPY", "-9223372036854775807", "-9,223,372,036,854,775,807 JPY"),
    ],
)
def test_display(amount_minor: int, code: str, decimal: str, shown: str) -> None:
    value = Money(amount_minor, code)
    assert value.to_decimal_string() == decimal
    assert value.format() == shown
    assert value.format("zh") == shown
    assert str(value) == f"{decimal} {code}"


def test_format_refuses_an_unknown_locale() -> None:
    with pytest.raises(UnsupportedLocaleError, match="'en'"):
        Money(1, "CNY").format("xx")


@given(money)
def test_format_is_the_decimal_string_with_group_separators(value: Money) -> None:
    shown = value.format()
    number, _, code = shown.partition(" ")
    assert code == value.currency
    assert number.replace(",", "") == value.to_decimal_string()
    whole = number.lstrip("-").split(".")[0]
    assert all(len(group) == 3 for group in whole.split(",")[1:])
    assert 1 <= len(whole.split(",")[0]) <= 3


# --- arithmetic and comparison ------------------------------------------------------------------


def test_arithmetic() -> None:
    a, b = Money(1050, "CNY"), Money(-25, "CNY")
    assert a + b == Money(1025, "CNY")
    assert a - b == Money(1075, "CNY")
    assert -a == Money(-1050, "CNY")
    assert abs(b) == Money(25, "CNY")
    assert a * 3 == 3 * a == Money(3150, "CNY")
    assert a * 0 == Money.zero("CNY")
    assert a * -1 == -a


def test_sign_predicates() -> None:
    assert Money(1, "USD").is_positive()
    assert not Money(1, "USD").is_negative()
    assert Money(-1, "USD").is_negative()
    assert not Money(-1, "USD").is_zero()
    zero = Money.zero("USD")
    assert zero.is_zero()
    assert not zero.is_positive()
    assert not zero.is_negative()


def test_comparison_within_a_currency() -> None:
    low, high = Money(1, "CNY"), Money(2, "CNY")
    assert low < high
    assert low <= high
    assert low <= Money(1, "CNY")
    assert high > low
    assert high >= low
    assert max([low, high]) == high
    assert sorted([high, low]) == [low, high]


def test_mixing_currencies_raises() -> None:
    cny, usd = Money(100, "CNY"), Money(100, "USD")
    with pytest.raises(CurrencyMismatchError, match="cannot add CNY and USD"):
        cny + usd
    with pytest.raises(CurrencyMismatchError, match="cannot subtract"):
        cny - usd
    with pytest.raises(CurrencyMismatchError, match="cannot compare"):
        cny < usd
    with pytest.raises(CurrencyMismatchError):
        cny <= usd
    with pytest.raises(CurrencyMismatchError):
        cny > usd
    with pytest.raises(CurrencyMismatchError):
        cny >= usd
    assert cny != usd


def test_arithmetic_with_non_money_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Money(1, "CNY") + 1  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(1, "CNY") < 1  # type: ignore[operator]


def test_multiplying_by_a_float_raises() -> None:
    with pytest.raises(FloatNotAllowedError, match="float"):
        Money(100, "CNY") * 1.5  # type: ignore[operator]
    with pytest.raises(FloatNotAllowedError):
        1.5 * Money(100, "CNY")  # type: ignore[operator]
    with pytest.raises(InvalidAmountError):
        Money(100, "CNY") * Decimal("1.5")  # type: ignore[operator]
    with pytest.raises(InvalidAmountError):
        Money(100, "CNY") * True


def test_arithmetic_at_the_bigint_limit_and_one_past() -> None:
    one = Money(1, "CNY")
    top = Money(MAX, "CNY")
    bottom = Money(-MAX, "CNY")
    assert Money(MAX - 1, "CNY") + one == top
    assert Money(-MAX + 1, "CNY") - one == bottom
    assert -bottom == top
    assert abs(bottom) == top
    assert top * 1 == top
    assert top * -1 == bottom
    with pytest.raises(AmountOutOfRangeError):
        top + one
    with pytest.raises(AmountOutOfRangeError):
        bottom - one
    with pytest.raises(AmountOutOfRangeError):
        top - bottom
    with pytest.raises(AmountOutOfRangeError):
        top * 2
    with pytest.raises(AmountOutOfRangeError):
        Money(2**62, "CNY") * 2


@given(codes, amounts, amounts)
def test_addition_is_exact_or_refused(code: str, a: int, b: int) -> None:
    left, right = Money(a, code), Money(b, code)
    if abs(a + b) <= MAX:
        total = left + right
        assert total.amount_minor == a + b
        assert total - right == left
        assert (left < right) == (a < b)
        assert (left >= right) == (a >= b)
    else:
        with pytest.raises(AmountOutOfRangeError):
            left + right


# --- split --------------------------------------------------------------------------------------


def cny(*amounts_minor: int) -> list[Money]:
    return [Money(amount, "CNY") for amount in amounts_minor]


@pytest.mark.parametrize(
    ("total", "weights", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (10, [1, 2], [3, 7]),
        (1, [1, 1], [1, 0]),
        (2, [1, 1, 1], [1, 1, 0]),
        (100, [0, 1], [0, 100]),
        (100, [0, 0, 5, 0], [0, 0, 100, 0]),
        (0, [1, 2], [0, 0]),
        (7, [5], [7]),
        (1000, [50, 30, 20], [500, 300, 200]),
        (101, [1, 3], [25, 76]),
        (MAX, [1, 1], [2**62, 2**62 - 1]),
    ],
)
def test_split_examples(total: int, weights: list[int], parts: list[int]) -> None:
    assert split(Money(total, "CNY"), weights) == cny(*parts)


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        ([], InvalidSplitError, "at least one weight"),
        ([0, 0], InvalidSplitError, "at least one positive weight"),
        ([1, -1], InvalidSplitError, "between 0 and"),
        ([1, SPLIT_WEIGHT_MAX + 1], InvalidSplitError, "between 0 and"),
        ([1, True], InvalidSplitError, "must be ints"),
        ([1, "2"], InvalidSplitError, "must be ints"),
        ([1, Decimal(2)], InvalidSplitError, "must be ints"),
        ([1, 0.5], FloatNotAllowedError, "float"),
    ],
)
def test_split_refuses_bad_weights(
    weights: list[object], error: type[MoneyError], message: str
) -> None:
    with pytest.raises(error, match=message):
        split(Money(100, "CNY"), weights)  # type: ignore[arg-type]


def test_split_weight_at_the_limit() -> None:
    parts = split(Money(MAX, "CNY"), [SPLIT_WEIGHT_MAX, SPLIT_WEIGHT_MAX, 1])
    assert sum(part.amount_minor for part in parts) == MAX


def test_split_parts_at_the_limit_and_one_past() -> None:
    total = Money(123_456_789, "CNY")
    parts = split(total, [1] * SPLIT_PARTS_MAX)
    assert len(parts) == SPLIT_PARTS_MAX
    assert sum(part.amount_minor for part in parts) == total.amount_minor
    with pytest.raises(InvalidSplitError, match=f"at most {SPLIT_PARTS_MAX} parts"):
        split(total, [1] * (SPLIT_PARTS_MAX + 1))


def test_allocate_evenly() -> None:
    assert allocate_evenly(Money(100, "CNY"), 3) == cny(34, 33, 33)
    assert allocate_evenly(Money(-5, "JPY"), 2) == [Money(-3, "JPY"), Money(-2, "JPY")]
    assert allocate_evenly(Money(1, "CNY"), 1) == cny(1)


def test_allocate_evenly_parts_at_the_limit_and_one_past() -> None:
    parts = allocate_evenly(Money(10_001, "CNY"), SPLIT_PARTS_MAX)
    assert parts == cny(2, *([1] * (SPLIT_PARTS_MAX - 1)))
    with pytest.raises(InvalidSplitError, match=f"between 1 and {SPLIT_PARTS_MAX}"):
        allocate_evenly(Money(10_001, "CNY"), SPLIT_PARTS_MAX + 1)


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        (0, InvalidSplitError),
        (-1, InvalidSplitError),
        (True, InvalidSplitError),
        (2.0, FloatNotAllowedError),
    ],
)
def test_allocate_evenly_refuses_bad_part_counts(parts: object, error: type[MoneyError]) -> None:
    with pytest.raises(error):
        allocate_evenly(Money(100, "CNY"), parts)  # type: ignore[arg-type]


weights_lists = st.one_of(
    st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=30),
    st.lists(st.integers(min_value=0, max_value=SPLIT_WEIGHT_MAX), min_size=1, max_size=8),
).filter(any)


@given(money, weights_lists)
def test_split_properties(total: Money, weights: list[int]) -> None:
    parts = split(total, weights)
    weight_total = sum(weights)
    assert len(parts) == len(weights)
    assert all(part.currency == total.currency for part in parts)
    # The parts add back to the whole.
    assert sum(part.amount_minor for part in parts) == total.amount_minor
    for part, weight in zip(parts, weights, strict=True):
        # Within one minor unit of the exact share total * weight / weight_total.
        assert abs(part.amount_minor * weight_total - total.amount_minor * weight) < weight_total
        if weight == 0:
            assert part.is_zero()
        # Every part has the sign of the total (or is zero).
        assert part.amount_minor * total.amount_minor >= 0
    # Deterministic: the same inputs give the same parts.
    assert split(total, weights) == parts
    # A negative total is the mirror image of the positive one.
    assert split(-total, weights) == [-part for part in parts]


@given(st.integers(min_value=0, max_value=MAX), weights_lists)
def test_split_gives_extra_units_to_the_largest_remainders_lower_index_first(
    amount: int, weights: list[int]
) -> None:
    parts = split(Money(amount, "USD"), weights)
    weight_total = sum(weights)
    floors_remainders = [divmod(amount * weight, weight_total) for weight in weights]
    extra = [
        part.amount_minor - floor for part, (floor, _) in zip(parts, floors_remainders, strict=True)
    ]
    assert set(extra) <= {0, 1}
    for i, extra_i in enumerate(extra):
        for j, extra_j in enumerate(extra):
            if extra_i == 1 and extra_j == 0:
                rem_i, rem_j = floors_remainders[i][1], floors_remainders[j][1]
                assert rem_i > rem_j or (rem_i == rem_j and i < j)


@given(money, st.integers(min_value=1, max_value=200))
def test_allocate_evenly_properties(total: Money, count: int) -> None:
    parts = [part.amount_minor for part in allocate_evenly(total, count)]
    assert len(parts) == count
    assert sum(parts) == total.amount_minor
    assert max(parts) - min(parts) <= 1
    # The extra units go to the first parts.
    magnitudes = [abs(part) for part in parts]
    assert magnitudes == sorted(magnitudes, reverse=True)


# --- invariant ----------------------------------------------------------------------------------


def test_invariant_raises_a_typed_assertion_error() -> None:
    invariant(True, "never raised")
    with pytest.raises(InvariantError, match="broken") as caught:
        invariant(False, "broken")
    assert isinstance(caught.value, AssertionError)

"""Exchange quotes: exact rates, the spread and fee shown, rounding always in
the bank's favour (a quote never pays out more than it took), limits at the
limit and one past, and expiry."""

from __future__ import annotations

import uuid
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.money import Money, UnknownCurrencyError
from zhifu.payments.errors import FxError, QuoteExpiredError
from zhifu.payments.fx import (
    QUOTE_TTL_S_MAX,
    RATE_DECIMALS_MAX,
    SPREAD_BPS_MAX,
    US,
    check_quote_usable,
    convert_down,
    customer_rate,
    format_rate,
    parse_rate,
    quote_source,
    quote_target,
    source_for_target,
)

QID = uuid.UUID(int=1)
NOW = 1_764_000_000 * US
CNY_USD = parse_rate("0.13865")
NO_FEE = Money.zero("CNY")


def test_a_rate_is_exact_decimal_text() -> None:
    assert parse_rate("0.13865") == Fraction(13865, 100000)
    assert parse_rate(" 7.2 ") == Fraction(72, 10)
    assert format_rate(parse_rate("0.1386500")) == "0.13865"
    assert format_rate(parse_rate("21")) == "21"
    assert parse_rate("0." + "0" * (RATE_DECIMALS_MAX - 1) + "1") == Fraction(1, 10**10)


@pytest.mark.parametrize(
    "text", ["0", "0.000", "-1.2", "1e3", "1,5", "", "0." + "0" * RATE_DECIMALS_MAX + "1", "abc"]
)
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(FxError, match="a rate is a positive decimal"):
        parse_rate(text)


def test_the_spread_lowers_the_customers_rate_at_the_limit_and_one_past() -> None:
    assert customer_rate(Fraction(1), 0) == 1
    assert customer_rate(Fraction(1), 50) == Fraction(995, 1000)
    assert customer_rate(Fraction(1), SPREAD_BPS_MAX) == Fraction(9, 10)
    with pytest.raises(FxError, match="basis points"):
        customer_rate(Fraction(1), SPREAD_BPS_MAX + 1)
    with pytest.raises(FxError, match="basis points"):
        customer_rate(Fraction(1), -1)


def test_a_source_quote_shows_rate_spread_fee_and_total() -> None:
    quote = quote_source(
        QID,
        Money.parse("1000.00", "CNY"),
        "USD",
        CNY_USD,
        50,
        Money.parse("15.00", "CNY"),
        now_ts=NOW,
    )
    assert quote.rate == CNY_USD * Fraction(9950, 10000)
    assert quote.target == Money.parse("137.95", "USD")  # 137.95675 rounded down
    assert quote.total == Money.parse("1015.00", "CNY")
    assert quote.spread_earned == Money.parse("0.70", "USD")  # 138.65 at mid, less 137.95
    assert quote.expires_ts == NOW + 30 * US


def test_a_target_quote_buys_at_least_the_target_with_the_least_source() -> None:
    target = Money.parse("100.00", "USD")
    quote = quote_target(QID, target, "CNY", CNY_USD, 50, NO_FEE, now_ts=NOW)
    assert quote.target == target
    assert convert_down(quote.source, "USD", quote.rate) >= target
    one_less = quote.source - Money.of_minor(1, "CNY")
    assert convert_down(one_less, "USD", quote.rate) < target


def test_currencies_with_other_exponents_convert_exactly() -> None:
    jpy = quote_source(
        QID, Money.parse("100.00", "CNY"), "JPY", parse_rate("20.5"), 0, NO_FEE, now_ts=NOW
    )
    assert jpy.target == Money.parse("2050", "JPY")
    bhd = quote_source(
        QID,
        Money.parse("1000", "JPY"),
        "BHD",
        parse_rate("0.0025"),
        0,
        Money.zero("JPY"),
        now_ts=NOW,
    )
    assert bhd.target == Money.parse("2.500", "BHD")


@pytest.mark.parametrize(
    ("ttl_s", "ok"), [(1, True), (QUOTE_TTL_S_MAX, True), (0, False), (QUOTE_TTL_S_MAX + 1, False)]
)
def test_quote_lifetime_at_the_limits_and_one_past(ttl_s: int, ok: bool) -> None:
    make = lambda: quote_source(  # noqa: E731 - the call under test
        QID, Money.parse("1.00", "CNY"), "USD", CNY_USD, 0, NO_FEE, now_ts=NOW, ttl_s=ttl_s
    )
    if ok:
        assert make().expires_ts == NOW + ttl_s * US
    else:
        with pytest.raises(FxError, match="seconds"):
            make()


def test_a_quote_holds_until_it_expires() -> None:
    quote = quote_source(QID, Money.parse("1.00", "CNY"), "USD", CNY_USD, 0, NO_FEE, now_ts=NOW)
    assert check_quote_usable(quote, quote.expires_ts - 1) is quote
    with pytest.raises(QuoteExpiredError, match="new quote"):
        check_quote_usable(quote, quote.expires_ts)


def test_bad_quotes_are_refused_with_a_reason() -> None:
    one = Money.parse("1.00", "CNY")
    with pytest.raises(FxError, match="to itself"):
        quote_source(QID, one, "CNY", CNY_USD, 0, NO_FEE, now_ts=NOW)
    with pytest.raises(FxError, match="fee"):
        quote_source(QID, one, "USD", CNY_USD, 0, Money.zero("USD"), now_ts=NOW)
    with pytest.raises(FxError, match="fee"):
        quote_source(QID, one, "USD", CNY_USD, 0, Money.of_minor(-1, "CNY"), now_ts=NOW)
    with pytest.raises(FxError, match="more than zero"):
        quote_source(QID, Money.zero("CNY"), "USD", CNY_USD, 0, NO_FEE, now_ts=NOW)
    with pytest.raises(FxError, match="smallest"):
        quote_source(QID, Money.of_minor(1, "CNY"), "USD", CNY_USD, 0, NO_FEE, now_ts=NOW)
    with pytest.raises(UnknownCurrencyError):
        quote_source(QID, one, "ABC", CNY_USD, 0, NO_FEE, now_ts=NOW)


rates = st.builds(
    lambda n, d: Fraction(n, 10**d), st.integers(1, 10**9), st.integers(0, RATE_DECIMALS_MAX)
)
pairs = st.sampled_from([("CNY", "USD"), ("USD", "JPY"), ("JPY", "BHD"), ("EUR", "HKD")])


@given(amount=st.integers(1, 10**12), rate=rates, spread=st.integers(0, SPREAD_BPS_MAX), pair=pairs)
def test_rounding_never_favours_the_customer(
    amount: int, rate: Fraction, spread: int, pair: tuple[str, str]
) -> None:
    source_ccy, target_ccy = pair
    customer = customer_rate(rate, spread)
    source = Money.of_minor(amount, source_ccy)
    got = convert_down(source, target_ccy, customer)
    at_mid = convert_down(source, target_ccy, rate)
    assert got <= at_mid  # the spread only ever costs the customer
    back = source_for_target(got, source_ccy, customer) if got.is_positive() else None
    if back is not None:
        assert back <= source  # what they got never needed more than they paid
        assert convert_down(back, target_ccy, customer) >= got

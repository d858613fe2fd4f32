"""Foreign-exchange quotes (pure): what a customer pays in one currency and the
payee receives in another, at a rate locked for a stated time.

Design note. A quote is made from a mid-market rate (from the bank's rate
source), the bank's spread and a fee, and is shown to the customer before they
confirm. It is exact arithmetic on integers and fractions, never floats:

- A rate is the price of one unit of the source currency in the target
  currency (``CNY→USD 0.13865`` means 1 CNY buys 0.13865 USD), given as a
  decimal string of at most :data:`RATE_DECIMALS_MAX` decimals and
  :data:`RATE_DIGITS_MAX` significant digits, strictly positive.
- The customer's rate is the mid rate less the spread
  (``mid × (1 − spread_bps / 10,000)``): the bank earns the spread.
- Converting rounds in the bank's favour, so a quote can never pay out more
  than the money it took: the target amount is rounded down; when the customer
  asks for an exact target amount, the source amount is rounded up.
- The fee is charged in the source currency on top of the converted amount;
  ``total`` is what leaves the customer's account.
- A quote holds from ``created_ts`` to ``expires_ts`` (at most
  :data:`QUOTE_TTL_S_MAX` seconds); :func:`check_quote_usable` refuses it
  after, and the customer asks for a new one.

Errors are :class:`~zhifu.payments.errors.FxError` subclasses with messages
for the person who gave the input.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from zhifu.money import Money, currency
from zhifu.payments.errors import FxError, QuoteExpiredError

RATE_DECIMALS_MAX: Final = 10
RATE_DIGITS_MAX: Final = 18
SPREAD_BPS_MAX: Final = 1_000  # 10 %: more is a mistake in the bank's configuration
BPS: Final = 10_000
QUOTE_TTL_S_DEFAULT: Final = 30
QUOTE_TTL_S_MAX: Final = 300
US: Final = 1_000_000
_RATE_TEXT: Final = re.compile(r"(\d+)(?:\.(\d+))?")


def parse_rate(text: str) -> Fraction:
    """An exchange rate from its decimal text, exactly.

    Raises FxError saying what a rate looks like.
    """
    match = _RATE_TEXT.fullmatch(text.strip()) if isinstance(text, str) else None
    whole, decimals = (match.group(1), match.group(2) or "") if match else ("", "")
    digits = (whole + decimals).lstrip("0")
    if (
        match is None
        or len(decimals) > RATE_DECIMALS_MAX
        or len(digits) > RATE_DIGITS_MAX
        or not digits
    ):
        raise FxError(
            f'a rate is a positive decimal such as "0.13865", with at most {RATE_DECIMALS_MAX}'
            f" decimals and {RATE_DIGITS_MAX} significant digits, got {str(text)[:32]!r}"
        )
    return Fraction(int(whole + decimals), 10 ** len(decimals))


def format_rate(rate: Fraction) -> str:
    """A rate as decimal text, exact when it has at most RATE_DECIMALS_MAX
    decimals, else rounded down to that many."""
    scaled = rate.numerator * 10**RATE_DECIMALS_MAX // rate.denominator
    whole, decimals = divmod(scaled, 10**RATE_DECIMALS_MAX)
    text = f"{decimals:0{RATE_DECIMALS_MAX}d}".rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def customer_rate(mid_rate: Fraction, spread_bps: int) -> Fraction:
    """The rate the customer gets: the mid rate less the bank's spread.

    Raises FxError for a spread outside 0..SPREAD_BPS_MAX or a rate that is not positive.
    """
    if mid_rate <= 0:
        raise FxError("an exchange rate must be positive")
    if isinstance(spread_bps, bool) or not 0 <= spread_bps <= SPREAD_BPS_MAX:
        raise FxError(f"a spread is 0 to {SPREAD_BPS_MAX} basis points, got {spread_bps!r:.16}")
    return mid_rate * (BPS - spread_bps) / BPS


def _minor_factor(source: str, target: str) -> Fraction:
    """Converts a rate between major units into one between minor units."""
    return Fraction(10 ** currency(target).exponent, 10 ** currency(source).exponent)


def convert_down(amount: Money, target: str, rate: Fraction) -> Money:
    """``amount`` in ``target`` at ``rate``, rounded down to the target's minor unit."""
    exact = amount.amount_minor * rate * _minor_factor(amount.currency, target)
    return Money(exact.numerator // exact.denominator, target)


def source_for_target(target: Money, source: str, rate: Fraction) -> Money:
    """The least ``source`` amount that converts at ``rate`` to at least ``target``."""
    exact = target.amount_minor / (rate * _minor_factor(source, target.currency))
    return Money(-(-exact.numerator // exact.denominator), source)


@dataclass(frozen=True, slots=True)
class Quote:
    """A locked conversion, as shown to the customer before they confirm."""

    id: uuid.UUID
    source: Money  # converted: what the payee's amount is bought with
    target: Money  # what the payee receives
    fee: Money  # in the source currency, on top of ``source``
    mid_rate: Fraction
    spread_bps: int
    rate: Fraction  # the customer's rate: mid less spread
    created_ts: int
    expires_ts: int

    @property
    def total(self) -> Money:
        """What leaves the customer's account: the converted amount and the fee."""
        return self.source + self.fee

    @property
    def spread_earned(self) -> Money:
        """What the spread earns the bank, in the target currency (rounded down)."""
        at_mid = convert_down(self.source, self.target.currency, self.mid_rate)
        return at_mid - self.target


def _check_quote_inputs(
    source_currency: str, target_currency: str, fee: Money, now_ts: int, ttl_s: int
) -> None:
    currency(source_currency)
    currency(target_currency)
    if source_currency == target_currency:
        raise FxError(f"no exchange is needed from {source_currency} to itself")
    if fee.currency != source_currency or fee.is_negative():
        raise FxError(f"the fee is a non-negative amount in {source_currency}")
    if isinstance(ttl_s, bool) or not 1 <= ttl_s <= QUOTE_TTL_S_MAX:
        raise FxError(f"a quote holds 1 to {QUOTE_TTL_S_MAX} seconds, got {ttl_s!r:.16}")
    if now_ts < 0:
        raise FxError("a quote's time cannot be before 1970")


def quote_source(
    quote_id: uuid.UUID,
    source: Money,
    target_currency: str,
    mid_rate: Fraction,
    spread_bps: int,
    fee: Money,
    *,
    now_ts: int,
    ttl_s: int = QUOTE_TTL_S_DEFAULT,
) -> Quote:
    """The quote for converting exactly ``source``: the payee gets what it buys.

    Raises FxError (bad currencies, rate, spread, fee, lifetime, or an amount
    too small to buy one minor unit of the target).
    """
    _check_quote_inputs(source.currency, target_currency, fee, now_ts, ttl_s)
    rate = customer_rate(mid_rate, spread_bps)
    if not source.is_positive():
        raise FxError("the amount to convert must be more than zero")
    target = convert_down(source, target_currency, rate)
    if not target.is_positive():
        raise FxError(f"{source.format()} buys less than the smallest {target_currency} amount")
    return Quote(
        quote_id, source, target, fee, mid_rate, spread_bps, rate, now_ts, now_ts + ttl_s * US
    )


def quote_target(
    quote_id: uuid.UUID,
    target: Money,
    source_currency: str,
    mid_rate: Fraction,
    spread_bps: int,
    fee: Money,
    *,
    now_ts: int,
    ttl_s: int = QUOTE_TTL_S_DEFAULT,
) -> Quote:
    """The quote for the payee to receive exactly ``target``: the customer
    converts the least source amount that buys it.

    Raises FxError like :func:`quote_source`.
    """
    _check_quote_inputs(source_currency, target.currency, fee, now_ts, ttl_s)
    rate = customer_rate(mid_rate, spread_bps)
    if not target.is_positive():
        raise FxError("the amount to receive must be more than zero")
    source = source_for_target(target, source_currency, rate)
    return Quote(
        quote_id, source, target, fee, mid_rate, spread_bps, rate, now_ts, now_ts + ttl_s * US
    )


def check_quote_usable(quote: Quote, now_ts: int) -> Quote:
    """The quote itself while it holds.

    Raises QuoteExpiredError once ``now_ts`` reaches ``expires_ts``.
    """
    if now_ts >= quote.expires_ts:
        raise QuoteExpiredError(
            "this exchange quote has expired: rates move, so ask for a new quote and confirm it"
            " within its time"
        )
    return quote

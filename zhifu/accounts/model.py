"""The accounts context's domain: products, account classes and limits, account
numbers, debit cards, card tokens, status machines and nicknames.

Pure code: the standard library, ``zhifu.money`` and ``zhifu.invariant`` only;
no I/O. The design note with the rules and invariants is the package
docstring (``zhifu/accounts/__init__.py``). Every limit is a named constant
below, and each has a test at the limit and one past it.
"""

from __future__ import annotations

import calendar
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from zhifu.accounts.errors import (
    AccountFrozenError,
    AccountNumberRule,
    AccountStateError,
    CardBlockedError,
    CardStateError,
    InvalidAccountNumberError,
    InvalidCardExpiryError,
    InvalidLimitError,
    InvalidNicknameError,
    InvalidPanError,
    LimitExceededError,
    LimitScope,
    LimitSource,
    PanRule,
    UnknownProductError,
    UnsupportedCurrencyError,
)
from zhifu.invariant import InvariantError, invariant
from zhifu.money import CURRENCIES, Money

_DIGITS: Final = frozenset("0123456789")


def _all_digits(text: str) -> bool:
    # str.isdigit() would accept other scripts' digits ('١', '߁'); only ASCII is valid here.
    return bool(text) and all(c in _DIGITS for c in text)


# --- Luhn (ISO/IEC 7812-1 Annex B) ---------------------------------------------------


def luhn_check_digit(payload: str) -> str:
    """The Luhn check digit to append to ``payload`` (ASCII digits, at least one).

    From the right, every second digit of the payload is doubled, starting with
    the rightmost (the one next to the check digit); a doubled digit over 9 has
    9 taken off. The check digit brings the sum up to a multiple of 10. This
    detects every single-digit error and every swap of two adjacent digits
    except 09 <-> 90.
    """
    invariant(_all_digits(payload), "luhn_check_digit needs a non-empty string of ASCII digits")
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = ord(char) - ord("0")
        if index % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str(-total % 10)


def luhn_valid(number: str) -> bool:
    """True when ``number`` is at least two ASCII digits and its last digit is its Luhn digit."""
    return len(number) >= 2 and _all_digits(number) and luhn_check_digit(number[:-1]) == number[-1]


# --- Products, account classes, currencies --------------------------------------------


class AccountClass(StrEnum):
    """PBOC personal bank account class (Yinfa [2016] No. 302, Yinfa [2018] No. 16).

    Class I is the full-function account (opened after face-to-face identity
    checks); Class II and III are limited accounts bound to a Class I account.
    """

    CLASS_I = "I"
    CLASS_II = "II"
    CLASS_III = "III"


@dataclass(frozen=True, slots=True)
class Product:
    """An account product: its code, names, the currencies it may hold and the
    account classes it is offered for."""

    code: str
    name_en: str
    name_zh: str
    currencies: frozenset[str]
    account_classes: frozenset[AccountClass]


PBOC_CURRENCY: Final = "CNY"
# Class III accounts serve small payments only; the 2018 rules give them no
# deposits or wealth products, so they are offered the current product alone.
PRODUCTS: Final[Mapping[str, Product]] = MappingProxyType(
    {
        "current": Product(
            "current",
            "Current account",
            "活期账户",
            frozenset({"CNY", "USD", "EUR", "HKD", "JPY", "GBP"}),
            frozenset(AccountClass),
        ),
        "savings": Product(
            "savings",
            "Savings account",
            "储蓄账户",
            frozenset({"CNY", "USD", "EUR", "HKD", "JPY"}),
            frozenset({AccountClass.CLASS_I, AccountClass.CLASS_II}),
        ),
    }
)
ACCOUNT_CURRENCIES: Final = frozenset[str]().union(*(p.currencies for p in PRODUCTS.values()))
# Class II and III are RMB accounts: their limits are set in CNY by the PBOC,
# and converting them at a moving exchange rate would make a limit that
# changes every day. Foreign currency is held in Class I accounts only.
CLASS_CURRENCIES: Final[Mapping[AccountClass, frozenset[str]]] = MappingProxyType(
    {
        AccountClass.CLASS_I: ACCOUNT_CURRENCIES,
        AccountClass.CLASS_II: frozenset({PBOC_CURRENCY}),
        AccountClass.CLASS_III: frozenset({PBOC_CURRENCY}),
    }
)

invariant(
    all(code in CURRENCIES for code in ACCOUNT_CURRENCIES), "a product currency is not ISO 4217"
)
invariant(
    all(code == p.code for code, p in PRODUCTS.items()), "a product is filed under a wrong code"
)


def _listed(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def product(code: str) -> Product:
    """The product with ``code``. Raises :class:`UnknownProductError` naming the known codes."""
    found = PRODUCTS.get(code)
    if found is None:
        raise UnknownProductError(
            f"unknown product {code[:32]!r}: the products are {_listed(PRODUCTS)}"
        )
    return found


def check_account_opening(product_code: str, account_class: AccountClass, currency: str) -> Product:
    """Check that a ``product_code`` account of ``account_class`` may hold ``currency``.

    Raises, checked in this order: :class:`UnknownProductError` (unknown code,
    or the product is not offered for the class), :class:`UnsupportedCurrencyError`
    (the product does not hold the currency, or the class does not allow it).
    """
    found = product(product_code)
    if account_class not in found.account_classes:
        offered = [p.code for p in PRODUCTS.values() if account_class in p.account_classes]
        raise UnknownProductError(
            f"product {found.code!r} is not offered for Class {account_class} accounts; "
            f"offered: {_listed(offered)}"
        )
    if currency not in found.currencies:
        raise UnsupportedCurrencyError(
            f"product {found.code!r} cannot hold {currency[:8]!r}; "
            f"it holds {_listed(found.currencies)}"
        )
    allowed = CLASS_CURRENCIES[account_class]
    if currency not in allowed:
        raise UnsupportedCurrencyError(
            f"Class {account_class} accounts hold {_listed(allowed)} only; "
            f"hold {currency} in a Class I account"
        )
    return found


# --- Limits ------------------------------------------------------------------------------


class Channel(StrEnum):
    """Where a payment is made."""

    COUNTER = "counter"
    ONLINE = "online"
    MOBILE = "mobile"
    QR = "qr"
    CARD = "card"


class Direction(StrEnum):
    """Whether money leaves the account (payments, transfers out, withdrawals)
    or arrives (transfers in, deposits)."""

    OUTGOING = "outgoing"
    INCOMING = "incoming"


# The checking order; LimitExceededError names the first limit broken in it.
LIMIT_CHECK_ORDER: Final = (
    LimitScope.PER_PAYMENT,
    LimitScope.DAILY,
    LimitScope.YEARLY,
    LimitScope.BALANCE,
)

# PBOC limits (Yinfa [2018] No. 16), in CNY fen; they count only money moved
# with accounts other than the bound Class I account.
# Class II: transfers in from non-bound accounts and cash deposits, together.
CLASS_II_INCOMING_DAILY_MAX_MINOR: Final = 1_000_000  # CNY 10,000
CLASS_II_INCOMING_YEARLY_MAX_MINOR: Final = 20_000_000  # CNY 200,000
# Class II: payments, transfers out to non-bound accounts and cash withdrawals, together.
CLASS_II_OUTGOING_DAILY_MAX_MINOR: Final = 1_000_000  # CNY 10,000
CLASS_II_OUTGOING_YEARLY_MAX_MINOR: Final = 20_000_000  # CNY 200,000
# Class III: transfers in from non-bound accounts.
CLASS_III_INCOMING_DAILY_MAX_MINOR: Final = 500_000  # CNY 5,000
CLASS_III_INCOMING_YEARLY_MAX_MINOR: Final = 10_000_000  # CNY 100,000
# Class III: payments and transfers out to non-bound accounts, together.
CLASS_III_OUTGOING_DAILY_MAX_MINOR: Final = 200_000  # CNY 2,000
CLASS_III_OUTGOING_YEARLY_MAX_MINOR: Final = 5_000_000  # CNY 50,000
# Class III: the balance at any moment, whatever the money came from.
CLASS_III_BALANCE_MAX_MINOR: Final = 200_000  # CNY 2,000


def _cny(amount_minor: int) -> Money:
    return Money(amount_minor, PBOC_CURRENCY)


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The limits on one kind of payment, all in ``currency``; ``None`` is no limit.

    ``balance_max`` caps the balance after money arrives; it belongs to
    incoming policies only (an outgoing payment only lowers the balance, and
    must stay possible even when the balance is over the cap). Raises
    :class:`UnsupportedCurrencyError` for a currency no product holds and
    :class:`InvalidLimitError` for a negative amount or one in another currency.
    """

    currency: str
    per_payment: Money | None = None
    daily: Money | None = None
    yearly: Money | None = None
    balance_max: Money | None = None

    def __post_init__(self) -> None:
        _check_limit_amounts(self.currency, self.limits())

    def limits(self) -> dict[LimitScope, Money | None]:
        return {
            LimitScope.PER_PAYMENT: self.per_payment,
            LimitScope.DAILY: self.daily,
            LimitScope.YEARLY: self.yearly,
            LimitScope.BALANCE: self.balance_max,
        }


@dataclass(frozen=True, slots=True)
class CustomerLimits:
    """Limits a customer chose for one account and channel; ``None`` keeps the
    policy's limit. They can only lower the policy's limits (see
    :func:`validate_customer_limits`); zero turns the channel off. Raises like
    :class:`LimitPolicy`."""

    currency: str
    per_payment: Money | None = None
    daily: Money | None = None
    yearly: Money | None = None

    def __post_init__(self) -> None:
        _check_limit_amounts(self.currency, self.limits())

    def limits(self) -> dict[LimitScope, Money | None]:
        return {
            LimitScope.PER_PAYMENT: self.per_payment,
            LimitScope.DAILY: self.daily,
            LimitScope.YEARLY: self.yearly,
            LimitScope.BALANCE: None,
        }


def _check_limit_amounts(currency: str, limits: Mapping[LimitScope, Money | None]) -> None:
    if currency not in ACCOUNT_CURRENCIES:
        raise UnsupportedCurrencyError(
            f"limits can be set in {_listed(ACCOUNT_CURRENCIES)}, got {currency[:8]!r}"
        )
    for scope, limit in limits.items():
        if limit is None:
            continue
        if not isinstance(limit, Money) or limit.currency != currency:
            raise InvalidLimitError(
                f"the {scope.value} limit must be an amount in {currency}, got {limit!r:.40}"
            )
        if limit.is_negative():
            raise InvalidLimitError(
                f"the {scope.value} limit cannot be negative, got {limit.format()}; "
                "zero turns payments off"
            )


class PolicyKey(NamedTuple):
    """What a :class:`LimitPolicy` applies to."""

    account_class: AccountClass
    channel: Channel
    direction: Direction
    currency: str


# The ceilings a bank's own policy may lower but never raise.
PBOC_LIMITS: Final[Mapping[tuple[AccountClass, Direction], LimitPolicy]] = MappingProxyType(
    {
        (AccountClass.CLASS_II, Direction.INCOMING): LimitPolicy(
            PBOC_CURRENCY,
            daily=_cny(CLASS_II_INCOMING_DAILY_MAX_MINOR),
            yearly=_cny(CLASS_II_INCOMING_YEARLY_MAX_MINOR),
        ),
        (AccountClass.CLASS_II, Direction.OUTGOING): LimitPolicy(
            PBOC_CURRENCY,
            daily=_cny(CLASS_II_OUTGOING_DAILY_MAX_MINOR),
            yearly=_cny(CLASS_II_OUTGOING_YEARLY_MAX_MINOR),
        ),
        (AccountClass.CLASS_III, Direction.INCOMING): LimitPolicy(
            PBOC_CURRENCY,
            daily=_cny(CLASS_III_INCOMING_DAILY_MAX_MINOR),
            yearly=_cny(CLASS_III_INCOMING_YEARLY_MAX_MINOR),
            balance_max=_cny(CLASS_III_BALANCE_MAX_MINOR),
        ),
        (AccountClass.CLASS_III, Direction.OUTGOING): LimitPolicy(
            PBOC_CURRENCY,
            daily=_cny(CLASS_III_OUTGOING_DAILY_MAX_MINOR),
            yearly=_cny(CLASS_III_OUTGOING_YEARLY_MAX_MINOR),
        ),
    }
)


def _ceiling(key: PolicyKey) -> LimitPolicy:
    """The most a policy for ``key`` may allow: the PBOC limits, or none for Class I."""
    return PBOC_LIMITS.get((key.account_class, key.direction), LimitPolicy(key.currency))


DEFAULT_POLICIES: Final[Mapping[PolicyKey, LimitPolicy]] = MappingProxyType(
    {
        key: _ceiling(key)
        for account_class, currencies in CLASS_CURRENCIES.items()
        for key in (
            PolicyKey(account_class, channel, direction, currency)
            for channel in Channel
            for direction in Direction
            for currency in sorted(currencies)
        )
    }
)


def _check_not_above(
    ceiling: LimitPolicy, limits: Mapping[LimitScope, Money | None], *, none_is_unlimited: bool
) -> None:
    for scope in LIMIT_CHECK_ORDER:
        allowed, asked = ceiling.limits()[scope], limits[scope]
        if allowed is None or (asked is None and not none_is_unlimited):
            continue
        if asked is None or asked > allowed:
            shown = "no limit" if asked is None else asked.format()
            raise InvalidLimitError(
                f"the {scope.value} limit can be at most {allowed.format()}, got {shown}; "
                "limits can only be lowered"
            )


def build_policy_table(
    overrides: Mapping[PolicyKey, LimitPolicy],
) -> Mapping[PolicyKey, LimitPolicy]:
    """:data:`DEFAULT_POLICIES` with the bank's ``overrides`` applied.

    An override may only lower the PBOC limits of its class (a missing limit
    counts as no limit). Raises :class:`UnsupportedCurrencyError` for a key
    whose class does not allow its currency, :class:`InvalidLimitError` for a
    policy in another currency than its key, above the PBOC limits, or an
    outgoing policy with a balance cap.
    """
    table = dict(DEFAULT_POLICIES)
    for key, policy in overrides.items():
        if key not in DEFAULT_POLICIES:
            raise UnsupportedCurrencyError(
                f"Class {key.account_class} accounts hold "
                f"{_listed(CLASS_CURRENCIES[key.account_class])} only, got {key.currency[:8]!r}"
            )
        if policy.currency != key.currency:
            raise InvalidLimitError(f"the policy for {key} is in {policy.currency}")
        if key.direction is Direction.OUTGOING and policy.balance_max is not None:
            raise InvalidLimitError("a balance cap belongs to incoming policies only")
        _check_not_above(_ceiling(key), policy.limits(), none_is_unlimited=True)
        table[key] = policy
    return MappingProxyType(table)


POLICY_OVERRIDES_MAX: Final = 256
_POLICY_ENTRY_KEYS: Final = frozenset(
    {
        "account_class",
        "channel",
        "direction",
        "currency",
        "per_payment",
        "daily",
        "yearly",
        "balance_max",
    }
)


def policy_overrides(entries: object) -> dict[PolicyKey, LimitPolicy]:
    """The bank's own limits from decoded JSON: a list of objects such as
    ``{"account_class": "II", "channel": "online", "direction": "outgoing",
    "currency": "CNY", "per_payment": "2000.00", "daily": "5000.00"}`` with
    amounts as decimal strings in major units; a limit left out keeps the
    PBOC's (none for Class I). Pass the result to :func:`build_policy_table`,
    which refuses any limit above the PBOC's.

    Raises :class:`InvalidLimitError` naming the entry (1-based) and what is
    wrong, :class:`UnsupportedCurrencyError` for a currency no product holds.
    """
    if not isinstance(entries, list) or len(entries) > POLICY_OVERRIDES_MAX:
        raise InvalidLimitError(
            f"the limit policies are a JSON list of at most {POLICY_OVERRIDES_MAX} objects"
        )
    found: dict[PolicyKey, LimitPolicy] = {}
    for number, entry in enumerate(entries, start=1):
        try:
            key, policy = _policy_entry(entry)
        except (InvalidLimitError, UnsupportedCurrencyError) as error:
            raise type(error)(f"limit policy {number}: {error}") from None
        if key in found:
            raise InvalidLimitError(f"limit policy {number} repeats an earlier one's key")
        found[key] = policy
    return found


def _policy_entry(entry: object) -> tuple[PolicyKey, LimitPolicy]:
    if not isinstance(entry, dict) or not set(entry) <= _POLICY_ENTRY_KEYS:
        raise InvalidLimitError(
            f"an entry is an object with the members {', '.join(sorted(_POLICY_ENTRY_KEYS))}"
        )
    try:
        key = PolicyKey(
            AccountClass(str(entry.get("account_class"))),
            Channel(str(entry.get("channel"))),
            Direction(str(entry.get("direction"))),
            str(entry.get("currency")),
        )
    except ValueError:
        raise InvalidLimitError(
            "account_class is I, II or III; channel one of "
            f"{_listed(c.value for c in Channel)}; direction outgoing or incoming"
        ) from None

    ceiling = _ceiling(key).limits()
    scopes = {
        "per_payment": LimitScope.PER_PAYMENT,
        "daily": LimitScope.DAILY,
        "yearly": LimitScope.YEARLY,
        "balance_max": LimitScope.BALANCE,
    }

    def amount(name: str) -> Money | None:
        value = entry.get(name)
        if value is None:
            return ceiling[scopes[name]]
        if not isinstance(value, str):
            raise InvalidLimitError(f'{name} is a decimal string such as "5000.00"')
        try:
            return Money.parse(value, key.currency)
        except ValueError as error:
            raise InvalidLimitError(f"{name}: {error}") from None

    policy = LimitPolicy(
        key.currency,
        per_payment=amount("per_payment"),
        daily=amount("daily"),
        yearly=amount("yearly"),
        balance_max=amount("balance_max"),
    )
    return key, policy


def policy_for(
    table: Mapping[PolicyKey, LimitPolicy],
    account_class: AccountClass,
    channel: Channel,
    direction: Direction,
    currency: str,
) -> LimitPolicy:
    """The policy in ``table`` for this kind of payment. Raises
    :class:`UnsupportedCurrencyError` when the class does not allow ``currency``."""
    found = table.get(PolicyKey(account_class, channel, direction, currency))
    if found is None:
        raise UnsupportedCurrencyError(
            f"Class {account_class} accounts hold "
            f"{_listed(CLASS_CURRENCIES[account_class])} only, got {currency[:8]!r}"
        )
    return found


def validate_customer_limits(policy: LimitPolicy, requested: CustomerLimits) -> CustomerLimits:
    """Return ``requested`` when every limit in it is at most the policy's.

    Raises :class:`UnsupportedCurrencyError` when the currencies differ and
    :class:`InvalidLimitError` naming the first limit (in
    :data:`LIMIT_CHECK_ORDER`) that would raise the policy's. When the bank
    later lowers its policy, a stored customer limit above it does no harm:
    the lower of the two always applies.
    """
    _require_currency(policy.currency, (), requested.currency)
    _check_not_above(policy, requested.limits(), none_is_unlimited=False)
    return requested


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    """One limit that applies to a payment: the lower of the policy's and the customer's."""

    scope: LimitScope
    source: LimitSource
    limit: Money


def effective_limits(
    policy: LimitPolicy, customer_limits: CustomerLimits | None
) -> tuple[EffectiveLimit, ...]:
    """The limits that apply, in :data:`LIMIT_CHECK_ORDER`; a scope with no limit is left out.

    On a tie the policy is named, so the message points at the limit the
    customer cannot change. Raises :class:`UnsupportedCurrencyError` when the
    customer's limits are in another currency.
    """
    customer: dict[LimitScope, Money | None] = {}
    if customer_limits is not None:
        _require_currency(policy.currency, (), customer_limits.currency)
        customer = customer_limits.limits()
    found: list[EffectiveLimit] = []
    bank = policy.limits()
    for scope in LIMIT_CHECK_ORDER:
        bank_limit, own = bank[scope], customer.get(scope)
        if own is not None and (bank_limit is None or own < bank_limit):
            found.append(EffectiveLimit(scope, LimitSource.CUSTOMER, own))
        elif bank_limit is not None:
            found.append(EffectiveLimit(scope, LimitSource.POLICY, bank_limit))
    return tuple(found)


def _require_currency(currency: str, amounts: Iterable[Money], *codes: str) -> None:
    for code in (*codes, *(amount.currency for amount in amounts)):
        if code != currency:
            raise UnsupportedCurrencyError(
                f"the limits are in {currency}, got an amount in {code[:8]!r}; "
                "check each currency against its own limits"
            )


def _used_before(
    currency: str, spent_today: Money, spent_this_year: Money, balance_before: Money
) -> dict[LimitScope, Money]:
    """What each scope has used before the payment; a per-payment limit starts at zero."""
    return {
        LimitScope.PER_PAYMENT: Money.zero(currency),
        LimitScope.DAILY: spent_today,
        LimitScope.YEARLY: spent_this_year,
        LimitScope.BALANCE: balance_before,
    }


def check_limits(
    policy: LimitPolicy,
    customer_limits: CustomerLimits | None,
    amount: Money,
    spent_today: Money,
    spent_this_year: Money,
    balance_after: Money,
    *,
    bound_account: bool = False,
) -> None:
    """Check one payment of ``amount`` against the effective limits; None when allowed.

    ``spent_today`` and ``spent_this_year`` are the account's totals in the
    policy's direction, across all channels, of the current Shanghai day and
    calendar year (see :func:`spending_buckets`), before this payment. For a
    transfer with the bound Class I account (``bound_account=True``) only the
    balance cap applies: the PBOC limits count non-bound money only.

    Raises :class:`LimitExceededError` for the first limit broken in
    :data:`LIMIT_CHECK_ORDER` and :class:`UnsupportedCurrencyError` when an
    amount's currency differs from the policy's. ``amount`` must be positive
    and the totals not negative (the caller's bug otherwise: ``InvariantError``).
    """
    _require_currency(policy.currency, (amount, spent_today, spent_this_year, balance_after))
    invariant(amount.is_positive(), f"check_limits needs a positive amount, got {amount}")
    invariant(
        not (spent_today.is_negative() or spent_this_year.is_negative()),
        "spent totals are never negative",
    )
    used = _used_before(policy.currency, spent_today, spent_this_year, balance_after - amount)
    for limit in effective_limits(policy, customer_limits):
        if bound_account and limit.scope is not LimitScope.BALANCE:
            continue
        before = used[limit.scope]
        if before + amount > limit.limit:
            remaining = max(limit.limit - before, Money.zero(policy.currency))
            raise LimitExceededError(
                limit.scope, limit.source, limit.limit, before + amount, remaining
            )


def remaining_allowance(
    policy: LimitPolicy,
    customer_limits: CustomerLimits | None,
    spent_today: Money,
    spent_this_year: Money,
    balance: Money,
) -> Money | None:
    """The largest single payment :func:`check_limits` would allow now; None when unlimited.

    Never negative. It does not look at the money in the account: the ledger
    decides whether the balance covers a payment. Raises like :func:`check_limits`.
    """
    _require_currency(policy.currency, (spent_today, spent_this_year, balance))
    used = _used_before(policy.currency, spent_today, spent_this_year, balance)
    zero = Money.zero(policy.currency)
    left = [
        max(lim.limit - used[lim.scope], zero) for lim in effective_limits(policy, customer_limits)
    ]
    return min(left) if left else None


# --- Day and year buckets (Asia/Shanghai) --------------------------------------------------

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMP_US_MIN: Final = 0
# Far enough from datetime's year 9999 that the +08:00 offset cannot overflow it.
TIMESTAMP_US_MAX: Final = (datetime(9999, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


class SpendingBuckets(NamedTuple):
    """The keys under which a payment counts toward daily and yearly limits."""

    day: date
    year: int


def spending_buckets(timestamp_us: int) -> SpendingBuckets:
    """The Shanghai calendar day and calendar year of a UTC microsecond timestamp.

    PBOC daily and yearly limits follow the local calendar: a day runs from
    00:00 to 24:00 Beijing time (16:00 to 16:00 UTC), a year from 1 January.
    Integer arithmetic only. The timestamp comes from the platform clock:
    outside ``TIMESTAMP_US_MIN..TIMESTAMP_US_MAX`` is a bug (``InvariantError``).
    """
    invariant(
        TIMESTAMP_US_MIN <= timestamp_us <= TIMESTAMP_US_MAX,
        f"timestamp_us {timestamp_us} is outside {TIMESTAMP_US_MIN}..{TIMESTAMP_US_MAX}",
    )
    local = (_EPOCH + timedelta(microseconds=timestamp_us)).astimezone(SHANGHAI)
    return SpendingBuckets(local.date(), local.year)


# --- Bank account numbers ----------------------------------------------------------------

# bank code (4) + branch code (4) + serial (10) + Luhn check digit (1)
ACCOUNT_NUMBER_LENGTH: Final = 19
BANK_CODE_LENGTH: Final = 4
BRANCH_CODE_LENGTH: Final = 4
ACCOUNT_SERIAL_LENGTH: Final = 10
ACCOUNT_SERIAL_MAX: Final = 10**ACCOUNT_SERIAL_LENGTH - 1
BANK_CODE_DEFAULT: Final = "1024"
BRANCH_CODE_DEFAULT: Final = "0001"
# A leading 0 is lost when a number passes through a spreadsheet or an integer
# column; a leading 9 marks a card token.
BANK_CODE_FIRST_DIGITS_FORBIDDEN: Final = "09"
ACCOUNT_NUMBER_MASK_TAIL: Final = 4
DIGIT_GROUP_LENGTH: Final = 4
# Typed card and account numbers, spaces and hyphens included, are cut off here.
NUMBER_TEXT_LENGTH_MAX: Final = 64
_NUMBER_SEPARATORS: Final = str.maketrans("", "", " -")

invariant(
    BANK_CODE_LENGTH + BRANCH_CODE_LENGTH + ACCOUNT_SERIAL_LENGTH + 1 == ACCOUNT_NUMBER_LENGTH,
    "account number parts do not add up to its length",
)


@dataclass(frozen=True, slots=True)
class AccountNumber:
    """A valid account number and its parts."""

    number: str
    bank_code: str
    branch_code: str
    serial: int
    check_digit: str

    @property
    def masked(self) -> str:
        return mask_account_number(self.number)

    @property
    def formatted(self) -> str:
        return format_digit_groups(self.number)


def _check_bank_code(bank_code: str, what: str = "a bank code") -> None:
    if len(bank_code) != BANK_CODE_LENGTH or not _all_digits(bank_code):
        raise InvalidAccountNumberError(
            f"a bank code is {BANK_CODE_LENGTH} digits", AccountNumberRule.BANK_CODE
        )
    if bank_code[0] in BANK_CODE_FIRST_DIGITS_FORBIDDEN:
        raise InvalidAccountNumberError(
            f"{what} cannot start with 0 (lost in spreadsheets) or 9 (card tokens)",
            AccountNumberRule.BANK_CODE,
        )


def new_account_number(
    serial: int, *, bank_code: str = BANK_CODE_DEFAULT, branch_code: str = BRANCH_CODE_DEFAULT
) -> AccountNumber:
    """The account number for ``serial`` (0..``ACCOUNT_SERIAL_MAX``) at the branch.

    Raises :class:`InvalidAccountNumberError` (rule ``bank_code``,
    ``branch_code`` or ``serial``) for a part out of range.
    """
    _check_bank_code(bank_code)
    if len(branch_code) != BRANCH_CODE_LENGTH or not _all_digits(branch_code):
        raise InvalidAccountNumberError(
            f"a branch code is {BRANCH_CODE_LENGTH} digits", AccountNumberRule.BRANCH_CODE
        )
    if (
        isinstance(serial, bool)
        or not isinstance(serial, int)
        or not 0 <= serial <= ACCOUNT_SERIAL_MAX
    ):
        raise InvalidAccountNumberError(
            f"an account serial is an int from 0 to {ACCOUNT_SERIAL_MAX}, got {serial!r:.24}",
            AccountNumberRule.SERIAL,
        )
    payload = f"{bank_code}{branch_code}{serial:0{ACCOUNT_SERIAL_LENGTH}d}"
    check = luhn_check_digit(payload)
    return AccountNumber(payload + check, bank_code, branch_code, serial, check)


def _compact_number(text: str) -> str | None:
    """Typed digits without spaces and hyphens, full-width read as ASCII; None if too long."""
    if len(text) > NUMBER_TEXT_LENGTH_MAX:
        return None
    return unicodedata.normalize("NFKC", text).strip().translate(_NUMBER_SEPARATORS)


def parse_account_number(text: str, *, bank_code: str | None = None) -> AccountNumber:
    """Check a typed account number and split it into its parts.

    Spaces and hyphens between digits are ignored and full-width digits read
    as ASCII. With ``bank_code``, the number must be that bank's. Raises
    :class:`InvalidAccountNumberError` naming the first rule broken, in this
    order: characters, length, bank code, check digit.
    """
    number = _compact_number(text)
    if number is None or not _all_digits(number):
        raise InvalidAccountNumberError(
            f"an account number is {ACCOUNT_NUMBER_LENGTH} digits, optionally grouped with "
            "spaces or hyphens",
            AccountNumberRule.CHARACTERS,
        )
    if len(number) != ACCOUNT_NUMBER_LENGTH:
        raise InvalidAccountNumberError(
            f"an account number is {ACCOUNT_NUMBER_LENGTH} digits, got {len(number)}",
            AccountNumberRule.LENGTH,
        )
    _check_bank_code(number[:BANK_CODE_LENGTH], "an account number")
    if bank_code is not None and number[:BANK_CODE_LENGTH] != bank_code:
        raise InvalidAccountNumberError(
            f"account {mask_account_number(number)} is not at this bank: its numbers start "
            f"with {bank_code}",
            AccountNumberRule.BANK_CODE,
        )
    if not luhn_valid(number):
        raise InvalidAccountNumberError(
            f"account number {mask_account_number(number)} has a typing mistake: its check "
            "digit does not match",
            AccountNumberRule.CHECK_DIGIT,
        )
    branch_end = BANK_CODE_LENGTH + BRANCH_CODE_LENGTH
    return AccountNumber(
        number,
        number[:BANK_CODE_LENGTH],
        number[BANK_CODE_LENGTH:branch_end],
        int(number[branch_end:-1]),
        number[-1],
    )


def mask_account_number(number: str) -> str:
    """Only the last four digits show; anything not 19 characters long is masked completely."""
    if len(number) != ACCOUNT_NUMBER_LENGTH:
        return "*" * len(number)
    hidden = ACCOUNT_NUMBER_LENGTH - ACCOUNT_NUMBER_MASK_TAIL
    return "*" * hidden + number[hidden:]


def format_digit_groups(number: str) -> str:
    """``number`` in groups of four from the left, for people: '1024 0001 0000 0000 123'."""
    step = DIGIT_GROUP_LENGTH
    return " ".join(number[i : i + step] for i in range(0, len(number), step))


# --- Debit cards: PAN, expiry, tokens -----------------------------------------------------

PAN_LENGTHS: Final = (16, 19)
PAN_LENGTH_DEFAULT: Final = 16
ISSUER_BIN_LENGTH: Final = 6
# A placeholder in the UnionPay 62 range: configure the BIN UnionPay assigned to the bank.
ISSUER_BIN_DEFAULT: Final = "623088"
# PCI DSS 4.0 requirement 3.4.1: at most the first six and last four digits are shown.
PAN_MASK_HEAD: Final = 6
PAN_MASK_TAIL: Final = 4
# ISO/IEC 7812 major industry identifiers an issuer BIN may not start with:
# 0 is ISO/TC 68's own, 9 is this platform's card-token range.
ISSUER_BIN_FIRST_DIGITS_FORBIDDEN: Final = "09"
CARD_TOKEN_LENGTH: Final = 19
CARD_TOKEN_PREFIX: Final = "9"  # noqa: S105 - a number range, not a secret
# A token's last digit is its Luhn digit plus this (mod 10): never the Luhn
# digit, so a token never passes as a PAN, yet a mistyped digit is still caught.
CARD_TOKEN_CHECK_OFFSET: Final = 5
CARD_VALIDITY_YEARS_DEFAULT: Final = 10
CARD_VALIDITY_YEARS_MAX: Final = 20
# Cards and ISO 8583 carry the expiry year as two digits (YYMM).
CARD_EXPIRY_YEAR_MIN: Final = 2000
CARD_EXPIRY_YEAR_MAX: Final = 2099

invariant(0 < CARD_TOKEN_CHECK_OFFSET < 10, "a token check offset of 0 would make tokens PANs")


def _check_issuer_bin(issuer_bin: str) -> None:
    if len(issuer_bin) != ISSUER_BIN_LENGTH or not _all_digits(issuer_bin):
        raise InvalidPanError(f"an issuer BIN is {ISSUER_BIN_LENGTH} digits", PanRule.ISSUER_BIN)
    if issuer_bin[0] in ISSUER_BIN_FIRST_DIGITS_FORBIDDEN:
        raise InvalidPanError(
            "an issuer BIN cannot start with 0 (reserved by ISO) or 9 (card tokens)",
            PanRule.ISSUER_BIN,
        )


def pan_from_serial(
    serial: int, *, issuer_bin: str = ISSUER_BIN_DEFAULT, length: int = PAN_LENGTH_DEFAULT
) -> str:
    """The PAN with ``issuer_bin``, ``serial`` zero-padded and a Luhn check digit.

    Take serials from :func:`random_pan`'s draw, not a sequence: consecutive
    PANs let whoever holds one card guess its neighbours. Raises
    :class:`InvalidPanError` (rule ``length``, ``issuer_bin`` or ``serial``).
    """
    if length not in PAN_LENGTHS:
        raise InvalidPanError(
            f"a card number has 16 or 19 digits, got {length!r:.24}", PanRule.LENGTH
        )
    _check_issuer_bin(issuer_bin)
    digits = length - ISSUER_BIN_LENGTH - 1
    if isinstance(serial, bool) or not isinstance(serial, int) or not 0 <= serial < 10**digits:
        raise InvalidPanError(
            f"a {length}-digit card's serial is an int from 0 to {10**digits - 1}", PanRule.SERIAL
        )
    payload = f"{issuer_bin}{serial:0{digits}d}"
    return payload + luhn_check_digit(payload)


def random_pan(*, issuer_bin: str = ISSUER_BIN_DEFAULT, length: int = PAN_LENGTH_DEFAULT) -> str:
    """A PAN with a random serial; the store must still refuse one that exists."""
    digits = length - ISSUER_BIN_LENGTH - 1 if length in PAN_LENGTHS else 0
    return pan_from_serial(secrets.randbelow(10**digits), issuer_bin=issuer_bin, length=length)


def parse_pan(text: str, *, issuer_bin: str | None = None) -> str:
    """Check a typed card number and return its digits.

    Spaces and hyphens are ignored and full-width digits read as ASCII. With
    ``issuer_bin``, the card must be this issuer's. Raises
    :class:`InvalidPanError` naming the first rule broken, in this order:
    characters, length, reserved prefix (9: tokens), issuer BIN, check digit. No message
    shows more than the masked number.
    """
    pan = _compact_number(text)
    if pan is None or not _all_digits(pan):
        raise InvalidPanError(
            "a card number is 16 or 19 digits, optionally grouped with spaces or hyphens",
            PanRule.CHARACTERS,
        )
    if len(pan) not in PAN_LENGTHS:
        raise InvalidPanError(f"a card number has 16 or 19 digits, got {len(pan)}", PanRule.LENGTH)
    if pan.startswith(CARD_TOKEN_PREFIX):
        raise InvalidPanError(
            "numbers starting with 9 are card tokens, not card numbers", PanRule.RESERVED_PREFIX
        )
    if issuer_bin is not None and not pan.startswith(issuer_bin):
        raise InvalidPanError(
            f"card {mask_pan(pan)} is not issued by this bank: its cards start with {issuer_bin}",
            PanRule.ISSUER_BIN,
        )
    if not luhn_valid(pan):
        raise InvalidPanError(
            f"card number {mask_pan(pan)} has a typing mistake: its check digit does not match",
            PanRule.CHECK_DIGIT,
        )
    return pan


def mask_pan(pan: str) -> str:
    """First six and last four digits (PCI DSS); anything that is not a PAN is masked completely."""
    if len(pan) not in PAN_LENGTHS or not _all_digits(pan):
        return "*" * len(pan)
    hidden = len(pan) - PAN_MASK_HEAD - PAN_MASK_TAIL
    return pan[:PAN_MASK_HEAD] + "*" * hidden + pan[-PAN_MASK_TAIL:]


def _token_check_digit(payload: str) -> str:
    return str((int(luhn_check_digit(payload)) + CARD_TOKEN_CHECK_OFFSET) % 10)


def new_card_token() -> str:
    """A random 19-digit card token: '9', 17 random digits, and a check digit that
    deliberately fails Luhn, so that no token is ever mistaken for a card number."""
    body_length = CARD_TOKEN_LENGTH - len(CARD_TOKEN_PREFIX) - 1
    payload = CARD_TOKEN_PREFIX + f"{secrets.randbelow(10**body_length):0{body_length}d}"
    return payload + _token_check_digit(payload)


def is_token(text: str) -> bool:
    """True for the form :func:`new_card_token` makes: 19 digits, '9' first, token check digit."""
    return (
        len(text) == CARD_TOKEN_LENGTH
        and _all_digits(text)
        and text.startswith(CARD_TOKEN_PREFIX)
        and _token_check_digit(text[:-1]) == text[-1]
    )


@dataclass(frozen=True, slots=True, order=True)
class CardExpiry:
    """The month a card expires; it is good through that month's last day.

    Raises :class:`InvalidCardExpiryError` unless the month is 1-12 and the
    year within ``CARD_EXPIRY_YEAR_MIN..CARD_EXPIRY_YEAR_MAX``.
    """

    year: int
    month: int

    def __post_init__(self) -> None:
        if not CARD_EXPIRY_YEAR_MIN <= self.year <= CARD_EXPIRY_YEAR_MAX:
            raise InvalidCardExpiryError(
                f"a card expiry year is {CARD_EXPIRY_YEAR_MIN} to {CARD_EXPIRY_YEAR_MAX}, "
                f"got {self.year}"
            )
        if not 1 <= self.month <= 12:
            raise InvalidCardExpiryError(f"a card expiry month is 1 to 12, got {self.month}")

    @property
    def last_day(self) -> date:
        return date(self.year, self.month, calendar.monthrange(self.year, self.month)[1])

    def is_expired(self, today: date) -> bool:
        return today > self.last_day

    def format(self) -> str:
        """As printed on the card: 'MM/YY'."""
        return f"{self.month:02d}/{self.year % 100:02d}"


def card_expiry(issued_on: date, validity_years: int = CARD_VALIDITY_YEARS_DEFAULT) -> CardExpiry:
    """The expiry of a card issued on ``issued_on``: the same month, ``validity_years`` later.

    Raises :class:`InvalidCardExpiryError` unless ``1 <= validity_years <=
    CARD_VALIDITY_YEARS_MAX`` and the expiry year is allowed.
    """
    if not 1 <= validity_years <= CARD_VALIDITY_YEARS_MAX:
        raise InvalidCardExpiryError(
            f"cards are valid 1 to {CARD_VALIDITY_YEARS_MAX} years, got {validity_years}"
        )
    return CardExpiry(issued_on.year + validity_years, issued_on.month)


# --- Status machines ------------------------------------------------------------------------


class AccountStatus(StrEnum):
    OPEN = "open"
    FROZEN = "frozen"
    CLOSED = "closed"


class AccountEvent(StrEnum):
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    CLOSE = "close"


class CardStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    LOST = "lost"
    CLOSED = "closed"


class CardEvent(StrEnum):
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    REPORT_LOST = "report_lost"
    CLOSE = "close"


ACCOUNT_TRANSITIONS: Final[Mapping[tuple[AccountStatus, AccountEvent], AccountStatus]] = (
    MappingProxyType(
        {
            (AccountStatus.OPEN, AccountEvent.FREEZE): AccountStatus.FROZEN,
            (AccountStatus.FROZEN, AccountEvent.UNFREEZE): AccountStatus.OPEN,
            (AccountStatus.OPEN, AccountEvent.CLOSE): AccountStatus.CLOSED,
        }
    )
)
CARD_TRANSITIONS: Final[Mapping[tuple[CardStatus, CardEvent], CardStatus]] = MappingProxyType(
    {
        (CardStatus.ACTIVE, CardEvent.FREEZE): CardStatus.FROZEN,
        (CardStatus.FROZEN, CardEvent.UNFREEZE): CardStatus.ACTIVE,
        (CardStatus.ACTIVE, CardEvent.REPORT_LOST): CardStatus.LOST,
        (CardStatus.FROZEN, CardEvent.REPORT_LOST): CardStatus.LOST,
        (CardStatus.ACTIVE, CardEvent.CLOSE): CardStatus.CLOSED,
        (CardStatus.FROZEN, CardEvent.CLOSE): CardStatus.CLOSED,
    }
)
# Why a refused change is refused, where the allowed list alone does not say.
_ACCOUNT_REFUSALS: Final[Mapping[tuple[AccountStatus, AccountEvent], str]] = MappingProxyType(
    {
        (AccountStatus.FROZEN, AccountEvent.CLOSE): "unfreeze it first: a freeze cannot be "
        "escaped by closing the account"
    }
)
_CARD_REFUSALS: Final[Mapping[tuple[CardStatus, CardEvent], str]] = MappingProxyType(
    {
        (CardStatus.LOST, CardEvent.UNFREEZE): "a card reported lost stays blocked; "
        "reissue a new card instead",
    }
)


def _refusal(
    thing: str, current: StrEnum, event: StrEnum, allowed: list[str], why: str | None
) -> str:
    """'cannot <event> <thing> that is <current>', why, and the events allowed instead."""
    choices = ", ".join(a.replace("_", " ") for a in allowed) or "nothing: this status is final"
    reason = f"; {why}" if why else ""
    verb = event.value.replace("_", " ")
    return f"cannot {verb} {thing} that is {current.value}{reason} (allowed: {choices})"


class LedgerCounters(NamedTuple):
    """An account's four ledger counters in minor units, as ``Account.counters()`` orders them."""

    currency: str
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    def is_settled_at_zero(self) -> bool:
        """Nothing pending either way, and posted debits equal posted credits."""
        return (
            self.debits_pending == 0
            and self.credits_pending == 0
            and self.debits_posted == self.credits_posted
        )


def account_transition(
    current: AccountStatus, event: AccountEvent, counters: LedgerCounters | None = None
) -> AccountStatus:
    """The status after ``event``. ``counters`` are needed to close (a bug otherwise).

    open <-> frozen; open -> closed only at a zero balance with nothing
    pending; closed is final. Raises :class:`AccountStateError` for any other
    change, saying what is allowed from ``current``.
    """
    after = ACCOUNT_TRANSITIONS.get((current, event))
    if after is None:
        allowed = [e.value for (s, e) in ACCOUNT_TRANSITIONS if s is current]
        why = _ACCOUNT_REFUSALS.get((current, event))
        raise AccountStateError(_refusal("an account", current, event, allowed, why))
    if event is AccountEvent.CLOSE:
        if counters is None:
            raise InvariantError("closing an account needs its ledger counters")
        _check_closable(counters)
    return after


def _check_closable(counters: LedgerCounters) -> None:
    if counters.is_settled_at_zero():
        return
    balance = Money(counters.credits_posted - counters.debits_posted, counters.currency)
    pending_out = Money(counters.debits_pending, counters.currency)
    pending_in = Money(counters.credits_pending, counters.currency)
    raise AccountStateError(
        "an account closes only at a zero balance with nothing pending: the balance is "
        f"{balance.format()}, {pending_out.format()} is pending out and "
        f"{pending_in.format()} pending in; move the money out and wait for pending payments"
    )


def card_transition(current: CardStatus, event: CardEvent) -> CardStatus:
    """The status after ``event``: active <-> frozen; active or frozen -> lost or
    closed, which are final. Raises :class:`CardStateError` for any other change."""
    after = CARD_TRANSITIONS.get((current, event))
    if after is None:
        allowed = [e.value for (s, e) in CARD_TRANSITIONS if s is current]
        why = _CARD_REFUSALS.get((current, event))
        raise CardStateError(_refusal("a card", current, event, allowed, why))
    return after


def reissued_card_status(old: CardStatus) -> CardStatus:
    """The status of the new card that replaces ``old``: only a lost card is
    reissued, and the new card (new PAN, new token) starts active. Raises
    :class:`CardStateError` otherwise."""
    if old is not CardStatus.LOST:
        raise CardStateError(
            f"only a card reported lost is reissued; this card is {old.value}: report it lost first"
        )
    return CardStatus.ACTIVE


def check_account_usable(status: AccountStatus, direction: Direction) -> None:
    """Raise unless money may move in ``direction``: a frozen account takes money
    in but lets none out (:class:`AccountFrozenError`); a closed one does
    neither (:class:`AccountStateError`)."""
    if status is AccountStatus.CLOSED:
        raise AccountStateError("the account is closed: no money can move in or out")
    if status is AccountStatus.FROZEN and direction is Direction.OUTGOING:
        raise AccountFrozenError("the account is frozen: money can arrive but not leave")


def check_card_usable(status: CardStatus, expiry: CardExpiry, today: date) -> None:
    """Raise :class:`CardBlockedError` unless the card is active and not expired on
    ``today`` (a Shanghai date)."""
    if status is not CardStatus.ACTIVE:
        raise CardBlockedError(f"the card is {status.value}: it cannot be used to pay")
    if expiry.is_expired(today):
        raise CardBlockedError(f"the card expired at the end of {expiry.format()}")


# --- Nicknames ---------------------------------------------------------------------------------

NICKNAME_LENGTH_MIN: Final = 1
NICKNAME_LENGTH_MAX: Final = 32
# Raw input over this many code points cannot come down to NICKNAME_LENGTH_MAX:
# bounds the normalising work before anything else is checked.
NICKNAME_INPUT_LENGTH_MAX: Final = 4 * NICKNAME_LENGTH_MAX
# Control, format (invisible, e.g. the right-to-left override), surrogate,
# private-use, unassigned, line and paragraph separator characters.
NICKNAME_CATEGORIES_FORBIDDEN: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SPACES: Final = re.compile(r"\s+")


def normalise_nickname(text: str) -> str:
    """An account nickname in canonical form: NFC, runs of spaces made one
    space, surrounding spaces trimmed; 1 to 32 code points of letters, marks,
    digits, punctuation, symbols (emoji included) and spaces.

    Raises :class:`InvalidNicknameError` for control or invisible characters
    (so emoji joined with U+200D are refused) or a length out of range.
    """
    if len(text) > NICKNAME_INPUT_LENGTH_MAX:
        raise InvalidNicknameError(
            f"a nickname is {NICKNAME_LENGTH_MIN} to {NICKNAME_LENGTH_MAX} characters long"
        )
    nickname = unicodedata.normalize("NFC", text)
    if any(unicodedata.category(c) in NICKNAME_CATEGORIES_FORBIDDEN for c in nickname):
        raise InvalidNicknameError(
            "a nickname cannot hold control or invisible characters, or line breaks"
        )
    nickname = _SPACES.sub(" ", nickname).strip()
    if not NICKNAME_LENGTH_MIN <= len(nickname) <= NICKNAME_LENGTH_MAX:
        raise InvalidNicknameError(
            f"a nickname is {NICKNAME_LENGTH_MIN} to {NICKNAME_LENGTH_MAX} characters long, "
            f"got {len(nickname)}"
        )
    return nickname

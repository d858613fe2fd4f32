"""Errors of the accounts context.

Every error derives from :class:`AccountsError`, carries a short
machine-readable ``code`` (the API adds it to the problem response) and a
message written for the person who asked: what was wrong and what is allowed.
No message repeats a card number: PANs appear masked (first six, last four),
account numbers with their last four digits only.
"""

from __future__ import annotations

from enum import StrEnum

from zhifu.money import Money


class AccountsError(Exception):
    """Root of the accounts context's expected failures."""

    code: str = "accounts_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class AccountNumberRule(StrEnum):
    """The account-number rule that was broken, in checking order."""

    CHARACTERS = "characters"
    LENGTH = "length"
    BANK_CODE = "bank_code"
    BRANCH_CODE = "branch_code"
    SERIAL = "serial"
    CHECK_DIGIT = "check_digit"


class InvalidAccountNumberError(AccountsError):
    """Raised when an account number, or a bank code, branch code or serial used
    to build one, breaks a rule; ``rule`` says which one."""

    def __init__(self, message: str, rule: AccountNumberRule) -> None:
        super().__init__(message, f"account_number_{rule.value}")
        self.rule = rule


class PanRule(StrEnum):
    """The card-number (PAN) rule that was broken, in checking order."""

    CHARACTERS = "characters"
    LENGTH = "length"
    RESERVED_PREFIX = "reserved_prefix"
    ISSUER_BIN = "issuer_bin"
    SERIAL = "serial"
    CHECK_DIGIT = "check_digit"


class InvalidPanError(AccountsError):
    """Raised when a card number (PAN), or an issuer BIN or serial used to build
    one, breaks a rule; ``rule`` says which one."""

    def __init__(self, message: str, rule: PanRule) -> None:
        super().__init__(message, f"pan_{rule.value}")
        self.rule = rule


class InvalidCardExpiryError(AccountsError):
    """Raised when a card expiry month or year, or a validity period, is out of range."""

    code = "invalid_card_expiry"


class UnsupportedCurrencyError(AccountsError):
    """Raised when a currency is not offered for a product or an account class,
    or an amount's currency differs from the limit policy it is checked against."""

    code = "unsupported_currency"


class UnknownProductError(AccountsError):
    """Raised when a product code is unknown, or the product is not offered for
    the account class asked for."""

    code = "unknown_product"


class InvalidLimitError(AccountsError):
    """Raised when a configured or customer-chosen limit is negative, in the
    wrong currency, or above the limit it may only lower."""

    code = "invalid_limit"


class LimitScope(StrEnum):
    """Which limit a payment broke, in the order the limits are checked."""

    PER_PAYMENT = "per_payment"
    DAILY = "daily"
    YEARLY = "yearly"
    BALANCE = "balance"


class LimitSource(StrEnum):
    """Who set the limit that was broken: the bank's policy or the customer."""

    POLICY = "policy"
    CUSTOMER = "customer"


_WHAT_RESULTS: dict[LimitScope, str] = {
    LimitScope.PER_PAYMENT: "this payment of {resulting} is",
    LimitScope.DAILY: "this payment would bring today's total to {resulting},",
    LimitScope.YEARLY: "this payment would bring this year's total to {resulting},",
    LimitScope.BALANCE: "this payment would bring the balance to {resulting},",
}

_REMAINING: dict[LimitScope, str] = {
    LimitScope.PER_PAYMENT: "at most {remaining} can be paid at once",
    LimitScope.DAILY: "{remaining} remain for today (days end at midnight Beijing time)",
    LimitScope.YEARLY: "{remaining} remain for this calendar year",
    LimitScope.BALANCE: "at most {remaining} more can be received",
}


class LimitExceededError(AccountsError):
    """Raised when a payment would break a limit. ``scope`` names the first limit
    broken (per payment, daily, yearly, balance: checked in that order),
    ``source`` who set it, ``limit`` its amount, ``resulting`` the amount that
    would result (the payment, the day's or year's total, or the balance) and
    ``remaining`` what is still allowed in that scope (never negative)."""

    code = "limit_exceeded"

    def __init__(
        self,
        scope: LimitScope,
        source: LimitSource,
        limit: Money,
        resulting: Money,
        remaining: Money,
    ) -> None:
        name = scope.value.replace("_", "-")
        over = (
            f"over the {name} limit of {limit.format()} you set"
            if source is LimitSource.CUSTOMER
            else f"over this account's {name} limit of {limit.format()}"
        )
        what = _WHAT_RESULTS[scope].format(resulting=resulting.format())
        left = _REMAINING[scope].format(remaining=remaining.format())
        super().__init__(f"{what} {over}; {left}")
        self.scope = scope
        self.source = source
        self.limit = limit
        self.resulting = resulting
        self.remaining = remaining


class AccountFrozenError(AccountsError):
    """Raised when money would leave a frozen account."""

    code = "account_frozen"


class AccountStateError(AccountsError):
    """Raised when the account's status does not allow the action: an illegal
    status change, closing at a non-zero balance or with money pending, or any
    use of a closed account."""

    code = "account_state"


class CardStateError(AccountsError):
    """Raised when the card's status does not allow a status change (e.g.
    unfreezing a card reported lost, reissuing a card that is not lost)."""

    code = "card_state"


class CardBlockedError(AccountsError):
    """Raised when a card that is frozen, lost, closed or expired is used to pay."""

    code = "card_blocked"


class InvalidNicknameError(AccountsError):
    """Raised when an account nickname is empty, too long, or holds control or
    invisible characters."""

    code = "invalid_nickname"


class AccountNotFoundError(AccountsError):
    """Raised when no account has this id or number, or it belongs to another
    customer (the two are not told apart: that would confirm the account exists)."""

    code = "account_not_found"


class CardNotFoundError(AccountsError):
    """Raised when no card has this id, or it is on another customer's account."""

    code = "card_not_found"


class CustomerNotFoundError(AccountsError):
    """Raised when an account is opened or listed for a customer who does not
    exist or is disabled."""

    code = "customer_not_found"


class QuotaExceededError(AccountsError):
    """Raised when a customer would hold more accounts, or an account more cards,
    than the limits allow (``ACCOUNTS_*_MAX``, ``CARDS_*_MAX`` in the service)."""

    code = "quota_exceeded"


class InsufficientFundsError(AccountsError):
    """Raised when a withdrawal is more than the account's available balance."""

    code = "insufficient_funds"


class InvalidIdempotencyKeyError(AccountsError):
    """Raised when an idempotency key is missing, too long or holds characters
    other than A-Z, a-z, 0-9, '_' and '-'."""

    code = "invalid_idempotency_key"


class IdempotencyConflictError(AccountsError):
    """Raised when an idempotency key comes back with a different request than
    the one it was first used for (another amount, account, currency or kind),
    or for one that was refused and is tried again in another shape."""

    code = "idempotency_conflict"


class InvalidCashAmountError(AccountsError):
    """Raised when a cash amount is not positive or above the per-operation maximum."""

    code = "invalid_cash_amount"

"""Payment orders: their life, their history, and idempotent requests (pure).

Design note.

A payment order is one request to move money: from a customer's account to
another zhifu customer, to a payee at another bank, across borders, or to a
merchant. Its life (DESIGN.md, "Payment order lifecycle")::

    created ──► risk_checked ──► authorized ──► funds_held ──► submitted ──► settled
       │             │  ▲             │              │             │           │
       │             ▼  │             │              │             ▼           ▼
       │        challenged            │              │           failed    returned
       ▼             │                ▼              ▼
    rejected ◄───────┴──────────── cancelled      failed

- ``created``: the order is recorded, nothing else has happened.
- ``risk_checked``: risk scored it; it goes on, is challenged (the customer
  must confirm: step-up or a QR confirmation on the bound phone), or is
  rejected.
- ``authorized``: nothing stands in the way; ``funds_held``: a pending ledger
  transfer holds the amount (the customer's available balance drops, the
  money has not moved); ``submitted``: handed to a rail (an intra-bank
  transfer skips straight from held to settled).
- ``settled``: the pending transfer is posted. ``failed``: the hold is voided
  (or was never made). ``returned``: a settled payment came back and a
  reversal transfer undid it.
- ``rejected`` and ``cancelled`` end an order before any money was held.

Rules and invariants:

1. Only the transitions in :data:`TRANSITIONS` exist; anything else raises
   :class:`IllegalTransitionError` naming the states allowed next.
2. Terminal states (:data:`TERMINAL_STATES`) have no way out. A refund is a
   new order that points at the settled one; it never reopens it.
3. Money is held exactly when the state is ``funds_held`` or ``submitted``;
   :func:`holds_funds` says so, and the ledger's pending transfer must agree
   (the service checks it).
4. Every transition is recorded with its time, actor and reason
   (:class:`Transition`); the history is append-only and ordered.
5. Refunds: the sum of an order's refunds never exceeds what was settled
   (:func:`check_refund`).

Idempotency (an ``Idempotency-Key`` header on every POST): the key is scoped to
the caller; the request is remembered by a fingerprint (SHA-256 of method,
path and the canonical JSON body). The same key with the same fingerprint
gets the first answer again; the same key with another fingerprint is a
conflict (:class:`IdempotencyConflictError`); keys are 1 to
:data:`IDEMPOTENCY_KEY_CHARS_MAX` characters of ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from zhifu.money import Money
from zhifu.payments.errors import (
    IdempotencyConflictError,
    IllegalTransitionError,
    InvalidIdempotencyKeyError,
    InvalidPaymentError,
    RefundTooLargeError,
)


class OrderState(StrEnum):
    CREATED = "created"
    RISK_CHECKED = "risk_checked"
    CHALLENGED = "challenged"
    AUTHORIZED = "authorized"
    FUNDS_HELD = "funds_held"
    SUBMITTED = "submitted"
    SETTLED = "settled"
    FAILED = "failed"
    RETURNED = "returned"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


S = OrderState
TRANSITIONS: Final[Mapping[OrderState, frozenset[OrderState]]] = {
    S.CREATED: frozenset({S.RISK_CHECKED, S.REJECTED, S.CANCELLED}),
    S.RISK_CHECKED: frozenset({S.AUTHORIZED, S.CHALLENGED, S.REJECTED}),
    S.CHALLENGED: frozenset({S.AUTHORIZED, S.REJECTED, S.CANCELLED}),
    S.AUTHORIZED: frozenset({S.FUNDS_HELD, S.FAILED, S.CANCELLED}),
    S.FUNDS_HELD: frozenset({S.SUBMITTED, S.SETTLED, S.FAILED}),
    S.SUBMITTED: frozenset({S.SETTLED, S.FAILED}),
    S.SETTLED: frozenset({S.RETURNED}),
    S.FAILED: frozenset(),
    S.RETURNED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL_STATES: Final = frozenset(state for state, nexts in TRANSITIONS.items() if not nexts)
HOLDING_STATES: Final = frozenset({S.FUNDS_HELD, S.SUBMITTED})
# SETTLED is final for the payer but may still be returned by the rail.
FINAL_FOR_PAYER: Final = TERMINAL_STATES | {S.SETTLED}

REASON_CHARS_MAX: Final = 256
IDEMPOTENCY_KEY_CHARS_MAX: Final = 64
_IDEMPOTENCY_KEY: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{IDEMPOTENCY_KEY_CHARS_MAX}}}")
_FINGERPRINT_DOMAIN: Final = b"zhifu-idempotency-v1|"


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of an order's history."""

    from_state: OrderState | None
    to_state: OrderState
    ts: int
    actor: str
    reason: str


def transition(current: OrderState, target: OrderState) -> OrderState:
    """``target`` when the lifecycle allows it from ``current``.

    Raises:
        IllegalTransitionError: naming the states allowed from ``current``.
    """
    allowed = TRANSITIONS[current]
    if target not in allowed:
        nexts = ", ".join(sorted(s.value for s in allowed)) or "none: it is final"
        raise IllegalTransitionError(
            f"a payment that is {current.value} cannot become {target.value};"
            f" it can become: {nexts}",
            current=current.value,
            target=target.value,
        )
    return target


def holds_funds(state: OrderState) -> bool:
    """Whether a pending ledger transfer must be holding the order's amount."""
    return state in HOLDING_STATES


def record_transition(
    history: tuple[Transition, ...],
    target: OrderState,
    *,
    ts: int,
    actor: str,
    reason: str,
) -> tuple[Transition, ...]:
    """The history with one more step; the first step must be into ``created``.

    Raises IllegalTransitionError (lifecycle), ValueError (a timestamp before
    the last step, or a reason past :data:`REASON_CHARS_MAX`).
    """
    if len(reason) > REASON_CHARS_MAX:
        raise ValueError(f"a transition reason is at most {REASON_CHARS_MAX} characters")
    if not history:
        if target is not S.CREATED:
            raise IllegalTransitionError(
                "a payment starts as created", current="none", target=target.value
            )
        return (Transition(None, S.CREATED, ts, actor, reason),)
    last = history[-1]
    if ts < last.ts:
        raise ValueError("a transition cannot be earlier than the one before it")
    transition(last.to_state, target)
    return (*history, Transition(last.to_state, target, ts, actor, reason))


def check_refund(settled: Money, already_refunded: Money, requested: Money) -> Money:
    """What remains refundable after ``requested``; refunds never exceed the settled amount.

    Raises:
        RefundTooLargeError: naming what can still be refunded.
        ValueError: a non-positive request; CurrencyMismatchError from Money on mixed currencies.
    """
    if requested.amount_minor <= 0:
        raise ValueError("a refund must be a positive amount")
    remaining = settled - already_refunded
    if requested.amount_minor > remaining.amount_minor:
        raise RefundTooLargeError(
            f"at most {remaining.format()} can still be refunded"
            f" (paid {settled.format()}, refunded {already_refunded.format()})"
        )
    return remaining - requested


def check_idempotency_key(key: str) -> str:
    """The key itself when well formed.

    Raises InvalidIdempotencyKeyError saying what is allowed.
    """
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidIdempotencyKeyError(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters of"
            " A-Z, a-z, 0-9, '_' and '-' (a UUID works)"
        )
    return key


def request_fingerprint(method: str, path: str, body: Mapping[str, Any] | None) -> bytes:
    """SHA-256 of the request that an idempotency key stands for.

    The body is canonical JSON (sorted keys, no spaces), so the same request
    sent with its members in another order has the same fingerprint.
    """
    canonical = json.dumps(body or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data = "\n".join((method.upper(), path, canonical)).encode("utf-8")
    return hashlib.sha256(_FINGERPRINT_DOMAIN + data).digest()


def check_replay(stored_fingerprint: bytes, fingerprint: bytes, key: str) -> None:
    """A stored request may answer a retry only if it is the same request.

    Raises:
        IdempotencyConflictError: the key was used for a different request.
    """
    if stored_fingerprint != fingerprint:
        raise IdempotencyConflictError(
            f"Idempotency-Key {key!r} was already used for a different request;"
            " use a new key for a new payment"
        )


# --- Payment kinds, ledger codes, request rules ---------------------------------------


class PaymentKind(StrEnum):
    """What a payment order is for; each has its own ledger transfer code."""

    TRANSFER = "transfer"  # to another account at this bank, the payer's own or a customer's
    MERCHANT = "merchant"  # to a merchant: a scanned QR code or a presented payment code
    REFUND = "refund"  # a merchant gives back all or part of a settled merchant payment

    @property
    def ledger_code(self) -> int:
        return LEDGER_CODES[self]


LEDGER_CODES: Final[Mapping[PaymentKind, int]] = {
    PaymentKind.TRANSFER: 3101,
    PaymentKind.MERCHANT: 3102,
    PaymentKind.REFUND: 3103,
}

ROUTE_INTRA_BANK: Final = "intra_bank"
MEMO_CHARS_MAX: Final = 140
LABEL_CHARS_MAX: Final = 64
EXTERNAL_REF_CHARS_MAX: Final = 64
# One payment moves at most this many minor units (CNY 10,000,000.00): a bank
# sends larger sums through its high-value channels, not a customer payment.
PAYMENT_AMOUNT_MINOR_MAX: Final = 1_000_000_000
# A payment at or above this amount needs a second factor (a phone confirmation
# of this very payment when a phone is bound).
STEP_UP_AMOUNT_MINOR: Final[Mapping[str, int]] = {
    "CNY": 5_000_00,
    "HKD": 5_000_00,
    "USD": 1_000_00,
    "EUR": 1_000_00,
    "JPY": 100_000,
}
_MEMO_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def check_payment_amount(amount: Money) -> Money:
    """``amount`` when it is positive and at most :data:`PAYMENT_AMOUNT_MINOR_MAX`.

    Raises InvalidPaymentError (field ``amount``) saying what is allowed.
    """
    if not 0 < amount.amount_minor <= PAYMENT_AMOUNT_MINOR_MAX:
        most = Money(PAYMENT_AMOUNT_MINOR_MAX, amount.currency).format()
        raise InvalidPaymentError(
            f"a payment is more than zero and at most {most}, got {amount.format()}",
            field="amount",
        )
    return amount


def check_memo(memo: str) -> str:
    """The memo with outer spaces removed: at most :data:`MEMO_CHARS_MAX`
    characters, no control or invisible formatting characters.

    Raises InvalidPaymentError (field ``memo``).
    """
    text = memo.strip()
    if len(text) > MEMO_CHARS_MAX:
        raise InvalidPaymentError(
            f"a memo is at most {MEMO_CHARS_MAX} characters, got {len(text)}", field="memo"
        )
    for char in text:
        if unicodedata.category(char) in _MEMO_FORBIDDEN_CATEGORIES:
            raise InvalidPaymentError(
                f"a memo cannot contain control or invisible characters (U+{ord(char):04X})",
                field="memo",
            )
    return text


def needs_step_up(amount: Money) -> bool:
    """Whether a payment of ``amount`` needs a second factor first."""
    threshold = STEP_UP_AMOUNT_MINOR.get(amount.currency)
    return threshold is not None and amount.amount_minor >= threshold


def hold_transfer_id(order_id: uuid.UUID) -> uuid.UUID:
    """The pending ledger transfer that holds an order's money: derived from the
    order id, so a retry can never hold it twice."""
    return uuid.uuid5(order_id, "hold")


def settle_transfer_id(order_id: uuid.UUID) -> uuid.UUID:
    """The ledger transfer that posts an order's hold."""
    return uuid.uuid5(order_id, "settle")


def release_transfer_id(order_id: uuid.UUID) -> uuid.UUID:
    """The ledger transfer that voids an order's hold."""
    return uuid.uuid5(order_id, "release")

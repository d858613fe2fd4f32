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

import calendar
import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

from zhifu.money import Money
from zhifu.payments.errors import (
    IdempotencyConflictError,
    IllegalTransitionError,
    InvalidIdempotencyKeyError,
    InvalidPayeeError,
    InvalidPaymentError,
    InvalidScheduleError,
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


# --- Payees and schedules --------------------------------------------------------------
#
# A payee is an account a customer pays again and again, under a nickname of
# their choosing; the payee's name is the account holder's as the customer
# typed it (banks in China ask for it with the number). A schedule pays one
# payee from one account, once at a future minute or again and again (daily,
# weekly, monthly) until an end date or a count of runs. Times are Asia/
# Shanghai wall-clock times: China has kept UTC+8 all year since 1991, so a
# daily run is always exactly 24 hours after the one before. A monthly run on
# the 29th, 30th or 31st falls on the month's last day in shorter months, and
# goes back to its own day in the next month that has it (runs are counted
# from the first, never from the one before, so they do not drift).


class PayeeScheme(StrEnum):
    """How a payee is reached: an account at this bank; other banks come with the rails."""

    INTRA_BANK = "intra_bank"


class Frequency(StrEnum):
    ONCE = "once"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class ScheduleStatus(StrEnum):
    """``active`` runs when due; ``paused`` after too many failures in a row (the
    customer resumes it); ``finished`` after its last run; ``cancelled`` by the
    customer. The last two are final."""

    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FINISHED = "finished"


class RunOutcome(StrEnum):
    PAID = "paid"
    FAILED = "failed"  # refused: funds, limits, an account's state; the reason is kept
    SKIPPED = "skipped"  # due too long ago when a scheduler came to it


SHANGHAI_TZ: Final = ZoneInfo("Asia/Shanghai")
# Live (not deleted) payees in one customer's book.
PAYEES_PER_CUSTOMER_MAX: Final = 200
PAYEE_NAME_CHARS_MAX: Final = 64
# Raw input over this many code points cannot come down to PAYEE_NAME_CHARS_MAX.
PAYEE_NAME_INPUT_CHARS_MAX: Final = 4 * PAYEE_NAME_CHARS_MAX
# Active or paused schedules of one customer.
SCHEDULES_LIVE_PER_CUSTOMER_MAX: Final = 50
# Every schedule a customer ever made, finished and cancelled ones included: bounds their list.
SCHEDULES_PER_CUSTOMER_MAX: Final = 500
# Runs of one recurring schedule.
SCHEDULE_COUNT_MAX: Final = 1000
# The first run is at least this far ahead, so that creating never races a scheduler...
SCHEDULE_LEAD_S_MIN: Final = 60
# ...and at most this far.
SCHEDULE_FIRST_RUN_DAYS_MAX: Final = 366
# No run falls later than this after the first: open-ended schedules end there too.
SCHEDULE_SPAN_DAYS_MAX: Final = 3653
# This many failed runs in a row pause a schedule.
SCHEDULE_FAILURES_MAX: Final = 3
# A run found more than this late is skipped, not paid: a scheduler that was down
# for days must not pay a burst of old runs at once.
SCHEDULE_RUN_LATE_S_MAX: Final = 24 * 3600
# The latest runs shown with a schedule.
SCHEDULE_RUNS_SHOWN_MAX: Final = 100
_US_PER_S: Final = 1_000_000
_UTC_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NAME_SPACES: Final = re.compile(r"\s+")


def normalise_payee_name(text: str) -> str:
    """A payee's name as stored: NFC, runs of spaces made one, trimmed; 1 to
    :data:`PAYEE_NAME_CHARS_MAX` characters, no control or invisible ones.

    Raises InvalidPayeeError (field ``name``) saying what is allowed.
    """
    if len(text) > PAYEE_NAME_INPUT_CHARS_MAX:
        raise InvalidPayeeError(
            f"a payee's name is 1 to {PAYEE_NAME_CHARS_MAX} characters", field="name"
        )
    name = unicodedata.normalize("NFC", text)
    if any(unicodedata.category(c) in _MEMO_FORBIDDEN_CATEGORIES for c in name):
        raise InvalidPayeeError(
            "a payee's name cannot hold control or invisible characters, or line breaks",
            field="name",
        )
    name = _NAME_SPACES.sub(" ", name).strip()
    if not 1 <= len(name) <= PAYEE_NAME_CHARS_MAX:
        raise InvalidPayeeError(
            f"a payee's name is 1 to {PAYEE_NAME_CHARS_MAX} characters, got {len(name)}",
            field="name",
        )
    return name


def mask_payee_name(name: str) -> str:
    """The name with all but its first and last characters hidden ('王*明'); a
    name of one or two characters shows only its last ('*明')."""
    if len(name) <= 2:
        return "*" * (len(name) - 1) + name[-1:]
    return name[0] + "*" * (len(name) - 2) + name[-1]


def payee_index_text(
    customer_id: uuid.UUID, scheme: PayeeScheme, bank_code: str, account_number: str
) -> str:
    """What a payee's blind index is computed over. The customer is part of it,
    so two customers' books holding the same account give unrelated indexes."""
    return f"{customer_id}|{scheme.value}|{bank_code}|{account_number}"


def to_shanghai(moment: datetime) -> datetime:
    """``moment`` as an Asia/Shanghai time; a naive one is read as Shanghai time already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=SHANGHAI_TZ)
    return moment.astimezone(SHANGHAI_TZ)


def timestamp_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware ``moment``."""
    return (moment - _UTC_EPOCH) // timedelta(microseconds=1)


def shanghai_time(ts_us: int) -> datetime:
    """The Shanghai wall-clock time of ``ts_us``."""
    return (_UTC_EPOCH + timedelta(microseconds=ts_us)).astimezone(SHANGHAI_TZ)


def _add_months(first: datetime, months: int) -> datetime:
    """``first`` moved ``months`` months on, its day of the month kept or, in a
    shorter month, that month's last day."""
    index = first.month - 1 + months
    year, month = first.year + index // 12, index % 12 + 1
    day = min(first.day, calendar.monthrange(year, month)[1])
    return first.replace(year=year, month=month, day=day)


@dataclass(frozen=True, slots=True)
class Recurrence:
    """When a schedule's runs fall. Build it with :func:`check_recurrence`.

    ``first`` is the first run (Shanghai, a whole minute); ``end_date`` the last
    Shanghai day a run may fall on; ``count`` the number of runs at most. Runs
    are numbered from 1.
    """

    frequency: Frequency
    first: datetime
    end_date: date | None = None
    count: int | None = None

    def local_run(self, seq: int) -> datetime | None:
        """Run ``seq``'s Shanghai time, or None when the schedule has ended before it."""
        if seq < 1 or (self.count is not None and seq > self.count):
            return None
        steps = seq - 1
        if self.frequency is Frequency.ONCE:
            when = self.first if steps == 0 else None
        elif self.frequency is Frequency.MONTHLY:
            when = _add_months(self.first, steps)
        else:
            days = steps * (7 if self.frequency is Frequency.WEEKLY else 1)
            when = self.first + timedelta(days=days)
        if when is None or (self.end_date is not None and when.date() > self.end_date):
            return None
        if when.date() > self.first.date() + timedelta(days=SCHEDULE_SPAN_DAYS_MAX):
            return None
        return when

    def run_ts(self, seq: int) -> int | None:
        """Run ``seq``'s time in microseconds since the epoch, or None past the end."""
        when = self.local_run(seq)
        return None if when is None else timestamp_us(when)

    def first_after(self, seq: int, now_us: int) -> tuple[int, int] | None:
        """The first run after run ``seq`` that is not yet due at ``now_us``
        (its number and time), or None when the schedule has no such run."""
        while True:
            seq += 1
            ts = self.run_ts(seq)
            if ts is None or ts > now_us:
                return None if ts is None else (seq, ts)


def check_recurrence(
    frequency: Frequency,
    first: datetime,
    now_us: int,
    *,
    end_date: date | None = None,
    count: int | None = None,
) -> Recurrence:
    """The recurrence asked for, when it keeps the rules; ``first`` naive is Shanghai time.

    Raises InvalidScheduleError naming the field: a first run that is not a
    whole minute, less than :data:`SCHEDULE_LEAD_S_MIN` seconds ahead or more
    than :data:`SCHEDULE_FIRST_RUN_DAYS_MAX` days ahead; an end date or count
    on a one-off transfer; a count outside 1 to :data:`SCHEDULE_COUNT_MAX`; an
    end date before the first run or more than :data:`SCHEDULE_SPAN_DAYS_MAX`
    days after it.
    """
    local = to_shanghai(first)
    if local.second or local.microsecond:
        raise InvalidScheduleError(
            "the first run is a whole minute (seconds 00), Asia/Shanghai time", field="first_run"
        )
    ts = timestamp_us(local)
    if ts < now_us + SCHEDULE_LEAD_S_MIN * _US_PER_S:
        raise InvalidScheduleError(
            f"the first run must be at least {SCHEDULE_LEAD_S_MIN} seconds from now; to pay"
            " now, make a payment",
            field="first_run",
        )
    if ts > now_us + SCHEDULE_FIRST_RUN_DAYS_MAX * 86_400 * _US_PER_S:
        raise InvalidScheduleError(
            f"the first run can be at most {SCHEDULE_FIRST_RUN_DAYS_MAX} days from now",
            field="first_run",
        )
    if frequency is Frequency.ONCE and (end_date is not None or count is not None):
        raise InvalidScheduleError(
            "a one-off transfer runs once: it takes no end date or count", field="frequency"
        )
    if count is not None and not 1 <= count <= SCHEDULE_COUNT_MAX:
        raise InvalidScheduleError(
            f"the count of runs is 1 to {SCHEDULE_COUNT_MAX}, got {count}", field="count"
        )
    if end_date is not None:
        latest = local.date() + timedelta(days=SCHEDULE_SPAN_DAYS_MAX)
        if not local.date() <= end_date <= latest:
            raise InvalidScheduleError(
                f"the end date is from the first run's day ({local.date().isoformat()}) to"
                f" {latest.isoformat()}, {SCHEDULE_SPAN_DAYS_MAX} days later",
                field="end_date",
            )
    return Recurrence(frequency, local, end_date, count)


@dataclass(frozen=True, slots=True)
class NextRun:
    """Where a schedule stands after one of its runs."""

    status: ScheduleStatus
    seq: int
    ts: int | None
    failures: int


def after_run(recurrence: Recurrence, seq: int, outcome: RunOutcome, failures: int) -> NextRun:
    """The schedule's state once run ``seq`` ended with ``outcome``.

    A paid run clears the count of failures in a row, a failed one adds to it
    (and :data:`SCHEDULE_FAILURES_MAX` of them pause the schedule), a skipped
    one leaves it. After the last run the schedule is finished.
    """
    if outcome is RunOutcome.PAID:
        failures = 0
    elif outcome is RunOutcome.FAILED:
        failures += 1
    following = recurrence.run_ts(seq + 1)
    if following is None:
        return NextRun(ScheduleStatus.FINISHED, seq + 1, None, failures)
    if failures >= SCHEDULE_FAILURES_MAX:
        return NextRun(ScheduleStatus.PAUSED, seq + 1, None, failures)
    return NextRun(ScheduleStatus.ACTIVE, seq + 1, following, failures)


def is_too_late(due_ts: int, now_us: int) -> bool:
    """Whether a run due at ``due_ts`` is past :data:`SCHEDULE_RUN_LATE_S_MAX` and is skipped."""
    return now_us - due_ts > SCHEDULE_RUN_LATE_S_MAX * _US_PER_S

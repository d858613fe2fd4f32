"""Payment use cases. Each public method is one unit of work.

A payment runs in one database transaction from its first check to its last
write: the Idempotency-Key, the accounts' states, the spending limits (their
running totals updated with the debit), the ledger's hold and its posting,
the order with its full history, and whatever the caller adds (a webhook in
the outbox, a QR code used up). Any refusal rolls the whole of it back, so a
refused payment changes nothing and may be retried with the same key. An
intra-bank payment is held and settled in that one transaction; payments that
leave the bank (the rails) commit the hold and settle later.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts import store as accounts_store
from zhifu.accounts.model import (
    DEFAULT_POLICIES,
    AccountClass,
    AccountStatus,
    CardExpiry,
    CardStatus,
    Channel,
    CustomerLimits,
    Direction,
    LimitPolicy,
    PolicyKey,
    check_account_usable,
    check_card_usable,
    check_limits,
    effective_limits,
    parse_account_number,
    policy_for,
    spending_buckets,
)
from zhifu.ids import uuid7
from zhifu.invariant import InvariantError
from zhifu.ledger.model import Result, TransferFlags, TransferRequest
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments import store
from zhifu.payments.errors import (
    InvalidPaymentError,
    PaymentNotFoundError,
    StepUpNeededError,
)
from zhifu.payments.model import (
    ROUTE_INTRA_BANK,
    OrderState,
    PaymentKind,
    Transition,
    check_memo,
    check_payment_amount,
    check_replay,
    hold_transfer_id,
    needs_step_up,
    record_transition,
    settle_transfer_id,
)
from zhifu.store.batching import TransactionBatcher
from zhifu.store.uow import run_in_transaction

Clock = Callable[[], int]
S = OrderState


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An Idempotency-Key, the caller it belongs to, and the request it stands for."""

    scope: str
    key: str
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class PaymentDraft:
    """What a caller asks to pay, before the accounts are looked at.

    ``initiator`` says who asked (``customer:<id>``, ``partner:<key id>``,
    ``schedule:<id>``) and is the actor of the order's first transitions.
    ``step_up`` is the second factor the caller proved, if any.
    """

    kind: PaymentKind
    channel: Channel
    initiator: str
    amount: Money
    memo: str = ""
    merchant_id: uuid.UUID | None = None
    external_ref: str | None = None
    refund_of: uuid.UUID | None = None
    source_ref: str | None = None
    step_up: str | None = None
    apply_limits: bool = True
    payer_label: str | None = None
    payee_label: str | None = None


@dataclass(frozen=True, slots=True)
class OrderView:
    """A payment order as its payer, payee or an operator sees it."""

    id: uuid.UUID
    kind: PaymentKind
    state: OrderState
    channel: str
    amount: Money
    refunded: Money
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    payer_customer_id: uuid.UUID | None
    payee_customer_id: uuid.UUID | None
    merchant_id: uuid.UUID | None
    payer_label: str
    payee_label: str
    memo: str
    external_ref: str | None
    refund_of: uuid.UUID | None
    risk_decision: str
    risk_reason: str
    route: str
    hold_transfer_id: uuid.UUID | None
    settle_transfer_id: uuid.UUID | None
    failure_code: str | None
    failure_detail: str | None
    source_ref: str | None
    created_ts: int
    updated_ts: int
    transitions: tuple[Transition, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class PaymentResult:
    order: OrderView
    replayed: bool


# Looks up (and checks) the payer's and the payee's account rows, inside the unit of work.
PartiesResolver = Callable[[Connection], tuple[Row[Any], Row[Any]]]
# Runs inside the unit of work once the payment is settled: it commits with it or not at all.
AfterSettle = Callable[[Connection, OrderView], None]


def account_label(number: str) -> str:
    """How an account shows on the other side of a payment: its last four digits."""
    return f"****{number[-4:]}"


class PaymentsService:
    """Payment orders over the accounts and the ledger."""

    def __init__(
        self,
        engine: Engine,
        ledger: LedgerService,
        clock: Clock = now_us,
        *,
        bank_code: str,
        policies: Mapping[PolicyKey, LimitPolicy] | None = None,
        batcher: TransactionBatcher | None = None,
    ) -> None:
        """``batcher`` (SQLite) commits concurrent payments together, each in
        its own savepoint; without it each payment is its own transaction."""
        self.engine = engine
        self.batcher = batcher
        self.ledger = ledger
        self.clock = clock
        self.bank_code = bank_code
        self.policies = DEFAULT_POLICIES if policies is None else policies

    # --- use cases ------------------------------------------------------------------------

    def transfer(
        self,
        customer_id: uuid.UUID,
        from_account_id: uuid.UUID | None,
        to_account_number: str,
        draft: PaymentDraft,
        idempotency: Idempotency | None,
        *,
        from_card_id: uuid.UUID | None = None,
    ) -> PaymentResult:
        """Move money from one of the customer's accounts (named, or through one of
        their debit cards, or else their default account in the currency) to any
        account at this bank.

        Raises:
            CardNotFoundError, CardBlockedError: the card is not the customer's, or
                is frozen, lost, closed or expired.
            InvalidPaymentError: a bad amount or memo, or both sides the same account.
            InvalidAccountNumberError: a mistyped or other bank's account number.
            AccountNotFoundError: the source is not the customer's, or no such payee account.
            AccountFrozenError, AccountStateError: an account that cannot take part.
            UnsupportedCurrencyError: the amount's currency is not the accounts'.
            LimitExceededError: a per-payment, daily, yearly or balance limit.
            InsufficientFundsError: the available balance is too low.
            StepUpNeededError: a large amount without a proved second factor.
            IdempotencyConflictError: the key was used for another request.
        """
        number = parse_account_number(to_account_number, bank_code=self.bank_code).number

        def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
            payer = paying_account(
                connection,
                customer_id,
                draft.amount.currency,
                self.clock(),
                account_id=from_account_id,
                card_id=from_card_id,
            )
            payee = accounts_store.account_by_number(connection, number)
            if payee is None:
                raise accounts_errors.AccountNotFoundError(
                    f"no account {account_label(number)} at this bank: check the number"
                )
            return payer, payee

        return self.execute(draft, resolve, idempotency)

    def execute(
        self,
        draft: PaymentDraft,
        resolve: PartiesResolver,
        idempotency: Idempotency | None,
        *,
        after: AfterSettle | None = None,
    ) -> PaymentResult:
        """Make one intra-bank payment: checked, held, settled and recorded together.

        A retry with the same Idempotency-Key and request answers the first
        payment (``replayed``); nothing is paid twice. Raises what
        :meth:`transfer` lists, and whatever ``resolve`` and ``after`` raise.
        """
        check_payment_amount(draft.amount)
        memo = check_memo(draft.memo)
        if needs_step_up(draft.amount) and draft.step_up is None:
            raise StepUpNeededError(
                f"a payment of {draft.amount.format()} or more needs a second factor first"
            )

        def work(connection: Connection) -> PaymentResult:
            if idempotency is not None:
                replay = self._replay(connection, idempotency)
                if replay is not None:
                    return replay
            payer, payee = resolve(connection)
            _check_parties(payer, payee, draft.amount)
            now = self.clock()
            order_id = uuid7()
            if draft.apply_limits:
                self._check_outgoing(connection, payer, payee, draft, now)
            payee_balance = self._move_money(connection, order_id, payer, payee, draft)
            if draft.apply_limits:
                self._check_incoming(connection, payer, payee, draft, now, payee_balance)
            view = self._record(connection, order_id, payer, payee, draft, memo, now)
            if idempotency is not None:
                store.insert_idempotency(
                    connection,
                    idempotency.scope,
                    idempotency.key,
                    idempotency.fingerprint,
                    order_id,
                    now,
                )
            if after is not None:
                after(connection, view)
            return PaymentResult(view, replayed=False)

        if self.batcher is not None:
            return self.batcher.run(work)
        return run_in_transaction(self.engine, work, retry_unique_violation=True)

    def find_replay(self, idempotency: Idempotency) -> PaymentResult | None:
        """The payment an Idempotency-Key already made, if any, read without
        writing: a retry of a confirmed large payment is answered without
        asking for a second factor again.

        Raises:
            IdempotencyConflictError: the key was used for another request.
        """
        return run_in_transaction(self.engine, lambda c: self._replay(c, idempotency), write=False)

    def get_order(self, customer_id: uuid.UUID, order_id: uuid.UUID) -> OrderView:
        """An order the customer paid or received. Raises PaymentNotFoundError."""

        def work(connection: Connection) -> OrderView:
            row = store.order_by_id(connection, order_id)
            if row is None or customer_id not in (row.payer_customer_id, row.payee_customer_id):
                raise PaymentNotFoundError("no such payment")
            return order_view(row, store.transitions_of(connection, order_id))

        return run_in_transaction(self.engine, work, write=False)

    def order(self, order_id: uuid.UUID) -> OrderView:
        """Any order, for staff and for the other contexts. Raises PaymentNotFoundError."""

        def work(connection: Connection) -> OrderView:
            row = store.order_by_id(connection, order_id)
            if row is None:
                raise PaymentNotFoundError("no such payment")
            return order_view(row, store.transitions_of(connection, order_id))

        return run_in_transaction(self.engine, work, write=False)

    # --- the steps of a payment -----------------------------------------------------------

    def _replay(self, connection: Connection, idempotency: Idempotency) -> PaymentResult | None:
        found = store.idempotency_record(connection, idempotency.scope, idempotency.key)
        if found is None:
            return None
        check_replay(bytes(found.fingerprint), idempotency.fingerprint, idempotency.key)
        row = store.order_by_id(connection, found.order_id)
        if row is None:
            raise InvariantError("an idempotency key names an order that does not exist")
        return PaymentResult(
            order_view(row, store.transitions_of(connection, found.order_id)), replayed=True
        )

    def _policy(self, row: Row[Any], channel: Channel, direction: Direction) -> LimitPolicy:
        return policy_for(
            self.policies, AccountClass(row.account_class), channel, direction, row.currency
        )

    def _check_outgoing(
        self,
        connection: Connection,
        payer: Row[Any],
        payee: Row[Any],
        draft: PaymentDraft,
        now: int,
    ) -> None:
        """The payer's limits, with the day's and year's totals raised by this payment."""
        policy = self._policy(payer, draft.channel, Direction.OUTGOING)
        own = _customer_limits(connection, payer, draft.channel)
        bound = payer.customer_id == payee.customer_id
        if bound or not effective_limits(policy, own):
            return
        day, year = _periods(now)
        totals = store.add_spending(
            connection, payer.id, Direction.OUTGOING.value, (day, year), draft.amount.amount_minor
        )
        amount = draft.amount
        check_limits(
            policy,
            own,
            amount,
            Money(totals[day], amount.currency) - amount,
            Money(totals[year], amount.currency) - amount,
            amount,  # an outgoing policy has no balance cap
        )

    def _check_incoming(
        self,
        connection: Connection,
        payer: Row[Any],
        payee: Row[Any],
        draft: PaymentDraft,
        now: int,
        balance_after: int,
    ) -> None:
        """The payee's limits (Class II and III), checked after the ledger so the
        balance cap sees the balance this payment leaves (``balance_after``)."""
        policy = self._policy(payee, draft.channel, Direction.INCOMING)
        if not effective_limits(policy, None):
            return
        bound = payer.customer_id == payee.customer_id
        amount = draft.amount
        day, year = _periods(now)
        if bound:
            totals = {day: amount.amount_minor, year: amount.amount_minor}
        else:
            totals = store.add_spending(
                connection, payee.id, Direction.INCOMING.value, (day, year), amount.amount_minor
            )
        check_limits(
            policy,
            None,
            amount,
            Money(totals[day], amount.currency) - amount,
            Money(totals[year], amount.currency) - amount,
            Money(balance_after, amount.currency),
            bound_account=bound,
        )

    def _move_money(
        self,
        connection: Connection,
        order_id: uuid.UUID,
        payer: Row[Any],
        payee: Row[Any],
        draft: PaymentDraft,
    ) -> int:
        """Hold the amount with a pending transfer and post it, as one linked
        chain; the payee's posted balance after it."""
        hold = hold_transfer_id(order_id)
        code = draft.kind.ledger_code
        requests = [
            TransferRequest(
                id=hold,
                debit_account_id=payer.id,
                credit_account_id=payee.id,
                amount=draft.amount.amount_minor,
                currency=draft.amount.currency,
                code=code,
                flags=TransferFlags.PENDING | TransferFlags.LINKED,
                external_ref=str(order_id),
            ),
            TransferRequest(
                id=settle_transfer_id(order_id),
                debit_account_id=None,
                credit_account_id=None,
                amount=None,
                currency=None,
                code=code,
                flags=TransferFlags.POST_PENDING,
                pending_id=hold,
            ),
        ]
        plan = self.ledger.apply_in(connection, requests)
        failed = next((o.result for o in plan.outcomes if o.result is not Result.OK), None)
        if failed is not None:
            raise _ledger_refusal(failed, payer, draft.amount)
        return plan.touched_accounts[payee.id].balance_posted

    def _record(
        self,
        connection: Connection,
        order_id: uuid.UUID,
        payer: Row[Any],
        payee: Row[Any],
        draft: PaymentDraft,
        memo: str,
        now: int,
    ) -> OrderView:
        actor = draft.initiator
        risk_reason = (
            f"second factor proved: {draft.step_up}"
            if draft.step_up is not None
            else "rules: no check asked for a second factor"
        )
        history: tuple[Transition, ...] = ()
        for target, reason in (
            (S.CREATED, f"{draft.kind.value} asked through {draft.channel.value}"),
            (S.RISK_CHECKED, risk_reason),
            (S.AUTHORIZED, "accounts usable, limits kept"),
            (S.FUNDS_HELD, f"ledger hold {hold_transfer_id(order_id)}"),
            (S.SETTLED, f"intra-bank: ledger posting {settle_transfer_id(order_id)}"),
        ):
            history = record_transition(history, target, ts=now, actor=actor, reason=reason)
        values: dict[str, Any] = {
            "id": order_id,
            "kind": draft.kind.value,
            "state": S.SETTLED.value,
            "channel": draft.channel.value,
            "initiator": draft.initiator,
            "payer_customer_id": payer.customer_id,
            "payee_customer_id": payee.customer_id,
            "merchant_id": draft.merchant_id,
            "debit_account_id": payer.id,
            "credit_account_id": payee.id,
            "amount_minor": draft.amount.amount_minor,
            "currency": draft.amount.currency,
            "refunded_minor": 0,
            "refund_of": draft.refund_of,
            "payer_label": draft.payer_label or account_label(payer.number),
            "payee_label": draft.payee_label or account_label(payee.number),
            "memo": memo,
            "external_ref": draft.external_ref,
            "risk_decision": "allow",
            "risk_reason": risk_reason,
            "route": ROUTE_INTRA_BANK,
            "hold_transfer_id": hold_transfer_id(order_id),
            "settle_transfer_id": settle_transfer_id(order_id),
            "failure_code": None,
            "failure_detail": None,
            "source_ref": draft.source_ref,
            "created_ts": now,
            "updated_ts": now,
        }
        store.insert_order(connection, values)
        store.insert_transitions(connection, order_id, 0, history)
        return _view_from_values(values, history)


def paying_account(
    connection: Connection,
    customer_id: uuid.UUID,
    currency: str,
    now: int,
    *,
    account_id: uuid.UUID | None = None,
    card_id: uuid.UUID | None = None,
) -> Row[Any]:
    """The account a customer pays from: the one named, the one behind a debit
    card of theirs (which must be usable today), or their default account in
    ``currency``. Somebody else's account or card answers like a missing one.

    Raises AccountNotFoundError, CardNotFoundError, CardBlockedError.
    """
    if card_id is not None:
        card = accounts_store.card_with_owner(connection, card_id)
        if card is None or card.customer_id != customer_id:
            raise accounts_errors.CardNotFoundError("no such card")
        expiry = CardExpiry(int(card.expiry_year), int(card.expiry_month))
        try:
            check_card_usable(CardStatus(card.status), expiry, spending_buckets(now).day)
        except accounts_errors.CardBlockedError as error:
            raise accounts_errors.CardBlockedError(
                f"card ending {card.last4}: {error}; nothing was paid"
            ) from None
        account_id = card.account_id
    if account_id is not None:
        row = accounts_store.account_by_id(connection, account_id)
        if row is None or row.customer_id != customer_id:
            raise accounts_errors.AccountNotFoundError("no such account")
        return row
    row = accounts_store.default_account(connection, customer_id, currency)
    if row is None:
        raise accounts_errors.AccountNotFoundError(
            f"you have no default {currency} account: choose the account to pay from"
        )
    return row


# --- pure helpers ---------------------------------------------------------------------------


def _periods(now: int) -> tuple[str, str]:
    buckets = spending_buckets(now)
    return buckets.day.isoformat(), str(buckets.year)


def _customer_limits(
    connection: Connection, account: Row[Any], channel: Channel
) -> CustomerLimits | None:
    row = store.customer_limits(connection, account.id, channel.value)
    if row is None:
        return None

    def money(value: int | None) -> Money | None:
        return None if value is None else Money(int(value), account.currency)

    return CustomerLimits(
        account.currency,
        per_payment=money(row.per_payment_minor),
        daily=money(row.daily_minor),
        yearly=money(row.yearly_minor),
    )


def _check_parties(payer: Row[Any], payee: Row[Any], amount: Money) -> None:
    """Both accounts can take part, in the amount's currency."""
    if payer.id == payee.id:
        raise InvalidPaymentError(
            "the payee account is the paying account: choose another account", field="to"
        )
    for row, direction in ((payer, Direction.OUTGOING), (payee, Direction.INCOMING)):
        if row.currency != amount.currency:
            raise accounts_errors.UnsupportedCurrencyError(
                f"account {account_label(row.number)} holds {row.currency}, the amount is in "
                f"{amount.currency}; paying across currencies needs an exchange"
            )
        try:
            check_account_usable(AccountStatus(row.status), direction)
        except accounts_errors.AccountsError as error:
            side = "your account" if direction is Direction.OUTGOING else "the payee's account"
            raise type(error)(f"{side} {account_label(row.number)}: {error}") from None


def _ledger_refusal(result: Result, payer: Row[Any], amount: Money) -> Exception:
    if result is Result.EXCEEDS_CREDITS:
        return accounts_errors.InsufficientFundsError(
            f"insufficient funds: account {account_label(payer.number)} cannot pay "
            f"{amount.format()}; nothing was paid"
        )
    if result in (Result.DEBIT_ACCOUNT_CLOSED, Result.CREDIT_ACCOUNT_CLOSED):
        return accounts_errors.AccountStateError("an account of this payment is closed")
    if result in (Result.OVERFLOWS_CREDITS, Result.OVERFLOWS_DEBITS):
        return InvalidPaymentError("this amount would overflow an account", field="amount")
    return InvariantError(f"the ledger refused a checked payment: {result}")


def order_view(row: Row[Any], transitions: tuple[Transition, ...]) -> OrderView:
    return _view_from_values(dict(row._mapping), transitions)


def _view_from_values(values: Mapping[str, Any], transitions: tuple[Transition, ...]) -> OrderView:
    currency = values["currency"]
    return OrderView(
        id=values["id"],
        kind=PaymentKind(values["kind"]),
        state=OrderState(values["state"]),
        channel=values["channel"],
        amount=Money(int(values["amount_minor"]), currency),
        refunded=Money(int(values["refunded_minor"]), currency),
        debit_account_id=values["debit_account_id"],
        credit_account_id=values["credit_account_id"],
        payer_customer_id=values["payer_customer_id"],
        payee_customer_id=values["payee_customer_id"],
        merchant_id=values["merchant_id"],
        payer_label=values["payer_label"],
        payee_label=values["payee_label"],
        memo=values["memo"],
        external_ref=values["external_ref"],
        refund_of=values["refund_of"],
        risk_decision=values["risk_decision"],
        risk_reason=values["risk_reason"],
        route=values["route"],
        hold_transfer_id=values["hold_transfer_id"],
        settle_transfer_id=values["settle_transfer_id"],
        failure_code=values["failure_code"],
        failure_detail=values["failure_detail"],
        source_ref=values["source_ref"],
        created_ts=int(values["created_ts"]),
        updated_ts=int(values["updated_ts"]),
        transitions=transitions,
    )

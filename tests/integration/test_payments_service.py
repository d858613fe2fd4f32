"""Payment orders on real SQLite and PostgreSQL: a transfer settles with its
whole history, a retry answers the first payment, and every refusal (funds,
limits, account states, bad input) changes nothing at all."""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any

import pytest
from accounts_factories import customer_ctx, new_key
from identity_factories import FakeClock
from payments_factories import PayingBank, funded
from sqlalchemy import Engine, func, insert, select

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts.model import (
    CLASS_III_BALANCE_MAX_MINOR,
    CLASS_III_OUTGOING_DAILY_MAX_MINOR,
    AccountClass,
    Channel,
)
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments import errors as payments_errors
from zhifu.payments.model import (
    MEMO_CHARS_MAX,
    PAYMENT_AMOUNT_MINOR_MAX,
    STEP_UP_AMOUNT_MINOR,
    OrderState,
    PaymentKind,
    hold_transfer_id,
    settle_transfer_id,
)
from zhifu.payments.service import Idempotency, PaymentDraft
from zhifu.store.batching import TransactionBatcher
from zhifu.store.tables import (
    accounts_customer_limits,
    payments_idempotency,
    payments_orders,
    payments_spending,
    payments_transitions,
)


@pytest.fixture
def bank(engine: Engine, ledger: LedgerService) -> PayingBank:
    return PayingBank(engine, ledger, FakeClock())


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _nothing_recorded(engine: Engine) -> bool:
    tables = (payments_orders, payments_transitions, payments_idempotency, payments_spending)
    return all(_count(engine, table) == 0 for table in tables)


def _balance(bank: PayingBank, account: Any) -> str:
    return bank.accounts.get_account(account.customer_id, account.id).balance.format()


# --- a transfer and its history ----------------------------------------------------------


def test_a_transfer_settles_with_its_whole_history(bank: PayingBank) -> None:
    payer, payee = funded(bank, 100_00), funded(bank, 0)

    result = bank.transfer(payer, payee, "12.34", memo="  dinner  ")

    order = result.order
    assert not result.replayed
    assert order.state is OrderState.SETTLED
    assert order.kind is PaymentKind.TRANSFER
    assert order.amount == Money(12_34, "CNY")
    assert order.memo == "dinner"
    assert order.payee_label == "****" + payee.number[-4:]
    assert [t.to_state for t in order.transitions] == [
        OrderState.CREATED,
        OrderState.RISK_CHECKED,
        OrderState.AUTHORIZED,
        OrderState.FUNDS_HELD,
        OrderState.SETTLED,
    ]
    assert {t.actor for t in order.transitions} == {f"customer:{payer.customer_id}"}
    assert _balance(bank, payer) == "87.66 CNY"
    assert _balance(bank, payee) == "12.34 CNY"
    transfers = bank.ledger.lookup_transfers(
        [hold_transfer_id(order.id), settle_transfer_id(order.id)]
    )
    assert len(transfers) == 2
    assert bank.payments.get_order(payer.customer_id, order.id) == order
    assert bank.payments.get_order(payee.customer_id, order.id).id == order.id
    assert bank.ledger.verify().ok


def test_an_order_is_hidden_from_everyone_but_its_two_sides(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    order = bank.transfer(payer, payee, "1.00").order
    with pytest.raises(payments_errors.PaymentNotFoundError):
        bank.payments.get_order(bank.customer(), order.id)
    with pytest.raises(payments_errors.PaymentNotFoundError):
        bank.payments.get_order(payer.customer_id, uuid.uuid4())


# --- idempotency -------------------------------------------------------------------------


def test_a_retry_answers_the_first_payment_and_pays_once(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    key = new_key()
    first = bank.transfer(payer, payee, "3.00", key=key)
    again = bank.transfer(payer, payee, "3.00", key=key)
    assert again.replayed
    assert again.order.id == first.order.id
    assert again.order.transitions == first.order.transitions
    assert _balance(bank, payee) == "3.00 CNY"


def test_the_same_key_for_another_request_is_a_conflict(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    key = new_key()
    bank.transfer(payer, payee, "3.00", key=key)
    with pytest.raises(payments_errors.IdempotencyConflictError, match="different request"):
        bank.transfer(payer, payee, "4.00", key=key)
    assert _balance(bank, payee) == "3.00 CNY"


def test_keys_belong_to_their_caller(bank: PayingBank) -> None:
    one, two, payee = funded(bank, 10_00), funded(bank, 10_00), funded(bank, 0)
    key = new_key()
    bank.transfer(one, payee, "1.00", key=key)
    bank.transfer(two, payee, "1.00", key=key)
    assert _balance(bank, payee) == "2.00 CNY"


# --- refusals change nothing -----------------------------------------------------------


def test_insufficient_funds_records_nothing_and_the_key_stays_usable(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    key = new_key()
    with pytest.raises(accounts_errors.InsufficientFundsError, match="nothing was paid"):
        bank.transfer(payer, payee, "5.01", key=key)
    assert _nothing_recorded(bank.engine)
    assert _balance(bank, payer) == "5.00 CNY"
    bank.deposit(payer, 1)
    assert bank.transfer(payer, payee, "5.01", key=key).order.state is OrderState.SETTLED
    assert _balance(bank, payer) == "0.00 CNY"


def test_the_whole_balance_can_be_paid(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    bank.transfer(payer, payee, "5.00")
    assert _balance(bank, payer) == "0.00 CNY"


def test_a_frozen_paying_account_refuses(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    bank.accounts.freeze(payer.customer_id, payer.id, customer_ctx(payer.customer_id))
    with pytest.raises(accounts_errors.AccountFrozenError, match="your account"):
        bank.transfer(payer, payee, "1.00")
    assert _nothing_recorded(bank.engine)


def test_a_frozen_payee_account_still_receives(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    bank.accounts.freeze(payee.customer_id, payee.id, customer_ctx(payee.customer_id))
    bank.transfer(payer, payee, "1.00")
    assert _balance(bank, payee) == "1.00 CNY"


def test_a_closed_payee_account_refuses(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    bank.accounts.close(payee.customer_id, payee.id, customer_ctx(payee.customer_id))
    with pytest.raises(accounts_errors.AccountStateError, match="payee's account"):
        bank.transfer(payer, payee, "1.00")
    assert _nothing_recorded(bank.engine)


def test_accounts_in_other_currencies_refuse(bank: PayingBank) -> None:
    payer = funded(bank, 5_00)
    payee = bank.open(bank.customer(), currency="USD")
    with pytest.raises(accounts_errors.UnsupportedCurrencyError, match="holds USD"):
        bank.transfer(payer, payee, "1.00")
    assert _nothing_recorded(bank.engine)


def test_paying_the_same_account_is_refused(bank: PayingBank) -> None:
    payer = funded(bank, 5_00)
    with pytest.raises(payments_errors.InvalidPaymentError, match="paying account"):
        bank.transfer(payer, payer, "1.00")


def test_only_the_customers_own_account_can_pay(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    draft = PaymentDraft(PaymentKind.TRANSFER, Channel.ONLINE, "customer:x", Money(1, "CNY"))
    with pytest.raises(accounts_errors.AccountNotFoundError):
        bank.payments.transfer(payee.customer_id, payer.id, payee.number, draft, None)
    assert _nothing_recorded(bank.engine)


def test_unknown_and_mistyped_payee_numbers(bank: PayingBank) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    draft = PaymentDraft(PaymentKind.TRANSFER, Channel.ONLINE, "customer:x", Money(1, "CNY"))
    wrong_digit = payee.number[:-1] + str((int(payee.number[-1]) + 1) % 10)
    with pytest.raises(accounts_errors.InvalidAccountNumberError, match="check digit"):
        bank.payments.transfer(payer.customer_id, payer.id, wrong_digit, draft, None)
    other_bank = "2048" + payee.number[4:]
    with pytest.raises(accounts_errors.InvalidAccountNumberError, match="not at this bank"):
        bank.payments.transfer(payer.customer_id, payer.id, other_bank, draft, None)
    assert _nothing_recorded(bank.engine)


@pytest.mark.parametrize(
    ("amount_minor", "ok"),
    [
        (1, True),
        (0, False),
        (PAYMENT_AMOUNT_MINOR_MAX, True),
        (PAYMENT_AMOUNT_MINOR_MAX + 1, False),
    ],
)
def test_payment_amount_bounds(bank: PayingBank, amount_minor: int, ok: bool) -> None:
    payer, payee = funded(bank, PAYMENT_AMOUNT_MINOR_MAX), funded(bank, 0)
    bank.deposit(payer, 1)
    amount = Money(amount_minor, "CNY").to_decimal_string()
    if ok:
        bank.transfer(payer, payee, amount, step_up="device")
    else:
        with pytest.raises(payments_errors.InvalidPaymentError, match="more than zero"):
            bank.transfer(payer, payee, amount, step_up="device")
        assert _nothing_recorded(bank.engine)


@pytest.mark.parametrize(("length", "ok"), [(MEMO_CHARS_MAX, True), (MEMO_CHARS_MAX + 1, False)])
def test_memo_length(bank: PayingBank, length: int, ok: bool) -> None:
    payer, payee = funded(bank, 5_00), funded(bank, 0)
    if ok:
        assert bank.transfer(payer, payee, "1.00", memo="备" * length).order.memo == "备" * length
    else:
        with pytest.raises(payments_errors.InvalidPaymentError, match="at most 140"):
            bank.transfer(payer, payee, "1.00", memo="备" * length)


def test_large_payments_need_a_second_factor(bank: PayingBank) -> None:
    threshold = STEP_UP_AMOUNT_MINOR["CNY"]
    payer, payee = funded(bank, 2 * threshold), funded(bank, 0)
    below = Money(threshold - 1, "CNY").to_decimal_string()
    at = Money(threshold, "CNY").to_decimal_string()
    bank.transfer(payer, payee, below)
    with pytest.raises(payments_errors.StepUpNeededError):
        bank.transfer(payer, payee, at)
    order = bank.transfer(payer, payee, at, step_up="device").order
    assert "device" in order.risk_reason


# --- limits ------------------------------------------------------------------------------


def test_class_iii_daily_outgoing_limit_at_the_limit_and_one_past(bank: PayingBank) -> None:
    payer = funded(bank, CLASS_III_BALANCE_MAX_MINOR, account_class=AccountClass.CLASS_III)
    payee = funded(bank, 0)
    limit = Money(CLASS_III_OUTGOING_DAILY_MAX_MINOR, "CNY")
    bank.transfer(payer, payee, (limit - Money(1, "CNY")).to_decimal_string())
    bank.transfer(payer, payee, "0.01")  # exactly at the daily limit
    bank.deposit(payer, 1_00)
    with pytest.raises(accounts_errors.LimitExceededError, match="daily") as refused:
        bank.transfer(payer, payee, "0.01")
    assert refused.value.remaining == Money.zero("CNY")
    bank.clock.advance(seconds=86_400)  # the next Shanghai day
    bank.transfer(payer, payee, "0.01")


def test_class_iii_balance_cap_at_the_cap_and_one_past(bank: PayingBank) -> None:
    payer = funded(bank, 10_000_00)
    payee = funded(bank, 0, account_class=AccountClass.CLASS_III)
    cap = Money(CLASS_III_BALANCE_MAX_MINOR, "CNY")
    bank.transfer(payer, payee, cap.to_decimal_string())
    with pytest.raises(accounts_errors.LimitExceededError, match="balance"):
        bank.transfer(payer, payee, "0.01")
    assert _balance(bank, payee) == cap.format()
    with bank.engine.connect() as connection:
        totals = connection.execute(
            select(payments_spending.c.period, payments_spending.c.total_minor).where(
                payments_spending.c.account_id == payee.id
            )
        ).all()
    assert {int(t.total_minor) for t in totals} == {cap.amount_minor}  # the refusal left none


def test_customer_limits_at_the_limit_and_one_past(bank: PayingBank) -> None:
    payer, payee = funded(bank, 100_00), funded(bank, 0)
    with bank.engine.begin() as connection:
        connection.execute(
            insert(accounts_customer_limits).values(
                account_id=payer.id,
                channel="online",
                per_payment_minor=5_00,
                daily_minor=8_00,
                yearly_minor=None,
                updated_ts=0,
            )
        )
    bank.transfer(payer, payee, "5.00")
    with pytest.raises(accounts_errors.LimitExceededError, match="you set"):
        bank.transfer(payer, payee, "5.01")
    bank.transfer(payer, payee, "3.00")  # 8.00 today: at the daily limit
    with pytest.raises(accounts_errors.LimitExceededError, match="daily"):
        bank.transfer(payer, payee, "0.01")
    bank.transfer(payer, payee, "1.00", channel=Channel.MOBILE)  # another channel's limits
    assert _balance(bank, payee) == "9.00 CNY"


def test_own_accounts_are_bound_and_skip_the_class_ii_limits(bank: PayingBank) -> None:
    owner = bank.customer()
    main = bank.open(owner)
    bank.deposit(main, 30_000_00)
    second = bank.open(owner, account_class=AccountClass.CLASS_II)
    bank.transfer(main, second, "20000.00", step_up="device")  # over Class II's 10,000 a day
    assert _balance(bank, second) == "20,000.00 CNY"


# --- concurrency -------------------------------------------------------------------------


def test_concurrent_payments_never_overdraw_or_double(bank: PayingBank) -> None:
    payer = funded(bank, 10_00)
    payees = [funded(bank, 0) for _ in range(4)]
    keys = [new_key() for _ in range(8)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def pay(index: int) -> None:
        try:
            bank.transfer(payer, payees[index % 4], "3.00", key=keys[index % 8])
            result = "paid"
        except accounts_errors.InsufficientFundsError:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=pay, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settled = _count(bank.engine, payments_orders)
    assert settled == 3  # 10.00 pays three times 3.00, whatever the interleaving
    assert _balance(bank, payer) == "1.00 CNY"
    assert bank.ledger.verify().ok


def test_concurrent_payments_keep_the_daily_limit(bank: PayingBank) -> None:
    payer = funded(bank, CLASS_III_BALANCE_MAX_MINOR, account_class=AccountClass.CLASS_III)
    payee = funded(bank, 0)
    per = CLASS_III_OUTGOING_DAILY_MAX_MINOR // 4

    def pay() -> None:
        with contextlib.suppress(accounts_errors.LimitExceededError):
            bank.transfer(payer, payee, Money(per, "CNY").to_decimal_string())

    threads = [threading.Thread(target=pay) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _count(bank.engine, payments_orders) == 4


def test_the_batcher_commits_payments_together_and_isolates_refusals(
    bank: PayingBank,
) -> None:
    bank.payments.batcher = TransactionBatcher(bank.engine, name="test", wait_s=0.005)
    try:
        payer, payee = funded(bank, 10_00), funded(bank, 0)
        errors: list[Exception] = []

        def pay(amount: str) -> None:
            try:
                bank.transfer(payer, payee, amount)
            except Exception as exc:  # noqa: BLE001 - collected for the assertions
                errors.append(exc)

        threads = [threading.Thread(target=pay, args=(a,)) for a in ("4.00", "4.00", "4.00")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 1
        assert isinstance(errors[0], accounts_errors.InsufficientFundsError)
        assert _balance(bank, payee) == "8.00 CNY"
        assert _count(bank.engine, payments_orders) == 2
        assert bank.ledger.verify().ok
    finally:
        bank.payments.batcher.close()


def test_a_replay_reads_the_idempotency_record_of_its_scope(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    draft = PaymentDraft(
        PaymentKind.TRANSFER, Channel.ONLINE, f"customer:{payer.customer_id}", Money(1_00, "CNY")
    )
    scope = f"customer:{payer.customer_id}"
    first = bank.payments.transfer(
        payer.customer_id, payer.id, payee.number, draft, Idempotency(scope, "k1", b"f" * 32)
    )
    with bank.engine.connect() as connection:
        row = connection.execute(select(payments_idempotency)).one()
    assert (row.scope, row.key, row.order_id) == (scope, "k1", first.order.id)


# --- paying with a debit card ------------------------------------------------------------


def _pay_by_card(bank: PayingBank, payer: Any, payee: Any, card_id: uuid.UUID) -> Any:
    draft = PaymentDraft(
        PaymentKind.TRANSFER, Channel.ONLINE, f"customer:{payer.customer_id}", Money(1_00, "CNY")
    )
    return bank.payments.transfer(
        payer.customer_id, None, payee.number, draft, None, from_card_id=card_id
    )


def test_a_card_pays_from_its_account(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    card = bank.accounts.issue_card(payer.customer_id, payer.id, customer_ctx(payer.customer_id))
    order = _pay_by_card(bank, payer, payee, card.id).order
    assert order.debit_account_id == payer.id
    assert _balance(bank, payer) == "9.00 CNY"


def test_frozen_and_lost_cards_refuse_with_their_reason(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    ctx = customer_ctx(payer.customer_id)
    card = bank.accounts.issue_card(payer.customer_id, payer.id, ctx)
    bank.accounts.freeze_card(payer.customer_id, card.id, ctx)
    with pytest.raises(accounts_errors.CardBlockedError, match=r"card ending \d{4}: .*frozen"):
        _pay_by_card(bank, payer, payee, card.id)
    bank.accounts.report_lost(payer.customer_id, card.id, ctx)
    with pytest.raises(accounts_errors.CardBlockedError, match="lost"):
        _pay_by_card(bank, payer, payee, card.id)
    assert _nothing_recorded(bank.engine)
    assert _balance(bank, payer) == "10.00 CNY"


def test_someone_elses_card_is_not_found(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    card = bank.accounts.issue_card(payer.customer_id, payer.id, customer_ctx(payer.customer_id))
    with pytest.raises(accounts_errors.CardNotFoundError):
        _pay_by_card(bank, payee, payer, card.id)
    assert _nothing_recorded(bank.engine)


def test_without_a_source_the_default_account_pays(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    draft = PaymentDraft(
        PaymentKind.TRANSFER, Channel.ONLINE, f"customer:{payer.customer_id}", Money(2_00, "CNY")
    )
    bank.payments.transfer(payer.customer_id, None, payee.number, draft, None)
    assert _balance(bank, payer) == "8.00 CNY"

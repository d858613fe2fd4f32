"""The payee book and scheduled transfers on real SQLite and PostgreSQL: payees
stored encrypted and refused twice, payments to them, and the scheduler: a
due run pays exactly once with two schedulers at work, after a crash between
claim and payment, and after a crash inside the payment; refusals are
recorded with their reason and pause the schedule; stale schedulers change
nothing."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from accounts_factories import customer_ctx, new_key
from identity_factories import FakeClock, ring_entries
from payments_factories import PayingBank, funded
from sqlalchemy import Engine, select, update

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts.model import AccountClass, Channel
from zhifu.accounts.service import AccountView, ChannelLimitsRequest
from zhifu.ids import uuid7
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments import errors as payments_errors
from zhifu.payments import payees as payees_module
from zhifu.payments import schedules as schedules_module
from zhifu.payments import store as payments_store
from zhifu.payments.model import (
    SCHEDULE_FAILURES_MAX,
    SCHEDULE_RUN_LATE_S_MAX,
    STEP_UP_AMOUNT_MINOR,
    Frequency,
    OrderState,
    PaymentKind,
    RunOutcome,
    ScheduleStatus,
    request_fingerprint,
    shanghai_time,
    timestamp_us,
)
from zhifu.payments.payees import PAYEES_TABLE, PayeesService, PayeeView
from zhifu.payments.schedules import (
    SCHEDULE_LEASE_S,
    ScheduleRequest,
    ScheduleResult,
    SchedulesService,
    ScheduleView,
)
from zhifu.payments.service import Idempotency, PaymentDraft
from zhifu.security import rotation
from zhifu.security.envelope import column_context
from zhifu.store.tables import identity_customers, payments_orders, payments_payees
from zhifu.store.uow import run_in_transaction

US = 1_000_000
NAME = "王小明"


class ScheduleBank(PayingBank):
    """The paying bank with the payee book and the scheduler on the same engine."""

    def __init__(self, engine: Engine, ledger: LedgerService, clock: FakeClock) -> None:
        super().__init__(engine, ledger, clock)
        self.payees = PayeesService(engine, self.keyring, self.payments, clock)
        self.schedules = SchedulesService(engine, self.payees, clock)

    def payee(
        self, owner: uuid.UUID, account: AccountView, *, nickname: str | None = None
    ) -> PayeeView:
        return self.payees.add(owner, account.number, NAME, customer_ctx(owner), nickname=nickname)

    def first_run(self, minutes: int = 60) -> datetime:
        """A whole minute ``minutes`` from now, as a naive Shanghai time."""
        moment = shanghai_time(self.clock.now_us) + timedelta(minutes=minutes)
        return moment.replace(second=0, microsecond=0, tzinfo=None)

    def schedule(
        self,
        payer: AccountView,
        payee: PayeeView,
        amount: str = "10.00",
        *,
        frequency: Frequency = Frequency.DAILY,
        count: int | None = 5,
        key: str | None = None,
        step_up: str | None = None,
        first_run: datetime | None = None,
    ) -> ScheduleResult:
        request = ScheduleRequest(
            from_account_id=payer.id,
            payee_id=payee.id,
            amount=Money.parse(amount, payer.currency),
            frequency=frequency,
            first_run=first_run or self.first_run(),
            count=count if frequency is not Frequency.ONCE else None,
        )
        body = {"payee": str(payee.id), "amount": amount, "frequency": frequency.value}
        idempotency = Idempotency(
            f"customer:{payer.customer_id}",
            key or new_key(),
            request_fingerprint("POST", "/v1/schedules", body),
        )
        return self.schedules.create(
            payer.customer_id,
            request,
            idempotency,
            customer_ctx(payer.customer_id),
            step_up=step_up,
        )

    def to_due(self, schedule: ScheduleView, seq: int | None = None) -> None:
        """Move the clock to the schedule's run ``seq`` (default: its next run)."""
        view = self.schedules.get(schedule.customer_id, schedule.id)
        when = view.next_run if seq is None else view.recurrence().local_run(seq)
        assert when is not None
        self.clock.set(timestamp_us(when))

    def balance(self, account: AccountView) -> str:
        return self.accounts.get_account(account.customer_id, account.id).balance.format()

    def orders_of(self, schedule: ScheduleView) -> list[Any]:
        with self.engine.connect() as connection:
            query = select(payments_orders).where(
                payments_orders.c.initiator == f"schedule:{schedule.id}"
            )
            return list(connection.execute(query))


@pytest.fixture
def bank(engine: Engine, ledger: LedgerService) -> ScheduleBank:
    return ScheduleBank(engine, ledger, FakeClock())


def two_parties(bank: ScheduleBank, amount_minor: int = 100_00) -> tuple[AccountView, AccountView]:
    return funded(bank, amount_minor), funded(bank, 0)


# --- the payee book --------------------------------------------------------------------------


def test_a_payee_is_stored_encrypted_and_shown_masked(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner = payer.customer_id
    view = bank.payee(owner, target, nickname="Landlord")
    assert view.nickname == "Landlord"
    assert view.account_masked == "*" * 15 + target.number[-4:]
    assert view.name_masked == "王*明"
    assert bank.payees.list_payees(owner) == [view]
    with bank.engine.connect() as connection:
        row = connection.execute(
            select(payments_payees).where(payments_payees.c.id == view.id)
        ).one()
    stored = bytes(row.account_number_enc) + bytes(row.name_enc)
    assert target.number.encode() not in stored
    assert NAME.encode() not in stored
    assert row.pii_key_id == "k1"
    context = column_context(PAYEES_TABLE, "account_number_enc", view.id)
    assert bank.keyring.decrypt_text(bytes(row.account_number_enc), context=context) == (
        target.number
    )


def test_the_same_account_is_refused_twice_however_it_is_typed(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner = payer.customer_id
    bank.payee(owner, target, nickname="Mum")
    spaced = " ".join(target.number[i : i + 4] for i in range(0, 19, 4))
    with pytest.raises(payments_errors.PayeeExistsError, match="'Mum'"):
        bank.payees.add(owner, spaced, "Someone Else", customer_ctx(owner))
    other = bank.customer()
    bank.payee(other, target)  # another customer's book is another book
    assert len(bank.payees.list_payees(owner)) == 1


def test_unknown_mistyped_and_closed_accounts_are_refused(bank: ScheduleBank) -> None:
    owner = bank.customer()
    target = funded(bank, 0)
    ctx = customer_ctx(owner)
    wrong_digit = target.number[:-1] + str((int(target.number[-1]) + 1) % 10)
    with pytest.raises(accounts_errors.InvalidAccountNumberError):
        bank.payees.add(owner, wrong_digit, NAME, ctx)
    closed = funded(bank, 0)
    bank.accounts.close(closed.customer_id, closed.id, customer_ctx(closed.customer_id))
    with pytest.raises(accounts_errors.AccountStateError, match="closed"):
        bank.payees.add(owner, closed.number, NAME, ctx)
    with pytest.raises(payments_errors.InvalidPayeeError):
        bank.payees.add(owner, target.number, "\u202e", ctx)
    assert bank.payees.list_payees(owner) == []


def test_an_account_that_does_not_exist_is_not_found(bank: ScheduleBank) -> None:
    from zhifu.accounts.model import new_account_number

    owner = bank.customer()
    number = new_account_number(123, bank_code=bank.accounts.bank_code).number
    with pytest.raises(accounts_errors.AccountNotFoundError, match="check the number"):
        bank.payees.add(owner, number, NAME, customer_ctx(owner))


def test_payees_per_customer_at_the_limit_and_one_past(
    bank: ScheduleBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payees_module, "PAYEES_PER_CUSTOMER_MAX", 3)
    owner = bank.customer()
    for _ in range(3):
        bank.payee(owner, funded(bank, 0))
    with pytest.raises(payments_errors.TooManyError, match="at most 3"):
        bank.payee(owner, funded(bank, 0))
    assert len(bank.payees.list_payees(owner)) == 3


def test_rename_and_delete_and_another_customers_payee_is_not_found(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner, stranger = payer.customer_id, bank.customer()
    view = bank.payee(owner, target)
    renamed = bank.payees.rename(owner, view.id, "  Rent  ", customer_ctx(owner))
    assert renamed.nickname == "Rent"
    for attempt in (
        lambda: bank.payees.get(stranger, view.id),
        lambda: bank.payees.rename(stranger, view.id, "Mine", customer_ctx(stranger)),
        lambda: bank.payees.delete(stranger, view.id, customer_ctx(stranger)),
    ):
        with pytest.raises(payments_errors.PayeeNotFoundError):
            attempt()
    with pytest.raises(accounts_errors.InvalidNicknameError):
        bank.payees.rename(owner, view.id, "x" * 33, customer_ctx(owner))
    bank.payees.delete(owner, view.id, customer_ctx(owner))
    assert bank.payees.list_payees(owner) == []
    bank.payee(owner, target)  # gone for good: it can be added again


def test_key_rotation_rewraps_the_payee_book(engine: Engine, ledger: LedgerService) -> None:
    entries = ring_entries("k1", "k2")
    old = ScheduleBank(engine, ledger, FakeClock())
    old.keyring = entries.ring("k1")
    old.payees = PayeesService(engine, old.keyring, old.payments, old.clock)
    payer, target = two_parties(old)
    view = old.payee(payer.customer_id, target)
    new_ring = entries.ring("k2", "k1")
    spec = next(s for s in rotation.ENCRYPTED_COLUMNS if s.table.name == PAYEES_TABLE)
    report = rotation.rotate(engine, new_ring, [spec])
    assert report.rows_rewritten == {PAYEES_TABLE: 1}
    assert report.done
    after = PayeesService(engine, entries.ring("k2"), old.payments)
    assert after.get(payer.customer_id, view.id).name_masked == "王*明"
    assert after.secrets(payer.customer_id, view.id).account_number == target.number


# --- paying a payee --------------------------------------------------------------------------


def _draft(payer: AccountView, amount: str, step_up: str | None = None) -> PaymentDraft:
    return PaymentDraft(
        kind=PaymentKind.TRANSFER,
        channel=Channel.ONLINE,
        initiator=f"customer:{payer.customer_id}",
        amount=Money.parse(amount, payer.currency),
        step_up=step_up,
    )


def _key(payer: AccountView, key: str | None = None) -> Idempotency:
    return Idempotency(
        f"customer:{payer.customer_id}", key or new_key(), request_fingerprint("POST", "/p", {})
    )


def test_paying_a_payee_settles_once(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    view = bank.payee(payer.customer_id, target)
    key = _key(payer)
    first = bank.payees.pay(payer.customer_id, view.id, payer.id, _draft(payer, "12.34"), key)
    assert first.order.state is OrderState.SETTLED
    assert first.order.credit_account_id == target.id
    again = bank.payees.pay(payer.customer_id, view.id, payer.id, _draft(payer, "12.34"), key)
    assert again.replayed
    assert again.order.id == first.order.id
    assert bank.balance(target) == "12.34 CNY"


def test_a_payee_is_paid_only_from_the_owners_accounts(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    view = bank.payee(payer.customer_id, target)
    someone = funded(bank, 100_00)
    with pytest.raises(accounts_errors.AccountNotFoundError):
        bank.payees.pay(payer.customer_id, view.id, someone.id, _draft(payer, "1.00"), None)
    with pytest.raises(payments_errors.PayeeNotFoundError):
        bank.payees.pay(someone.customer_id, view.id, someone.id, _draft(someone, "1.00"), None)
    assert bank.balance(target) == "0.00 CNY"


def test_a_payee_deleted_meanwhile_is_not_paid(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    view = bank.payee(payer.customer_id, target)
    found = bank.payees.secrets(payer.customer_id, view.id)
    bank.payees.delete(payer.customer_id, view.id, customer_ctx(payer.customer_id))
    resolve = bank.payees.resolver(payer.customer_id, found, payer.id)
    with pytest.raises(payments_errors.PayeeNotFoundError, match="deleted"):
        bank.payments.execute(_draft(payer, "1.00"), resolve, None)
    assert bank.balance(target) == "0.00 CNY"


# --- creating schedules ----------------------------------------------------------------------


def test_a_schedule_is_created_once_per_key(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    key = new_key()
    first = bank.schedule(payer, payee, key=key)
    assert not first.replayed
    view = first.schedule
    assert (view.status, view.next_seq, view.failures) == (ScheduleStatus.ACTIVE, 1, 0)
    assert view.next_run == view.first_run
    again = bank.schedule(payer, payee, key=key)
    assert again.replayed
    assert again.schedule.id == view.id
    with pytest.raises(payments_errors.IdempotencyConflictError):
        bank.schedule(payer, payee, "11.00", key=key)
    bank.to_due(view)  # a retry long after still answers the first schedule
    late = bank.schedule(payer, payee, key=key, first_run=view.first_run.replace(tzinfo=None))
    assert (late.replayed, late.schedule.id) == (True, view.id)
    assert [s.id for s in bank.schedules.list_schedules(payer.customer_id)] == [view.id]


def test_a_schedule_needs_the_customers_account_and_payee(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    stranger = funded(bank, 100_00)
    with pytest.raises(payments_errors.PayeeNotFoundError):
        bank.schedule(stranger, payee)
    with pytest.raises(accounts_errors.AccountNotFoundError):
        bank.schedules.create(
            payer.customer_id,
            ScheduleRequest(
                stranger.id, payee.id, Money(1_00, "CNY"), Frequency.ONCE, bank.first_run()
            ),
            _key(payer),
            customer_ctx(payer.customer_id),
        )
    bank.accounts.freeze(payer.customer_id, payer.id, customer_ctx(payer.customer_id))
    with pytest.raises(accounts_errors.AccountFrozenError):
        bank.schedule(payer, payee)
    assert bank.schedules.list_schedules(payer.customer_id) == []


def test_a_large_schedule_needs_a_second_factor_once(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank, 20_000_00)
    payee = bank.payee(payer.customer_id, target)
    large = Money(STEP_UP_AMOUNT_MINOR["CNY"], "CNY").to_decimal_string()
    with pytest.raises(payments_errors.StepUpNeededError):
        bank.schedule(payer, payee, large)
    schedule = bank.schedule(payer, payee, large, step_up="device", count=2).schedule
    bank.to_due(schedule)
    assert bank.schedules.run_due().paid == 1  # the run carries the proof
    assert bank.balance(target) == f"{Money.parse(large, 'CNY').format()}"


def test_live_schedules_per_customer_at_the_limit_and_one_past(
    bank: ScheduleBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedules_module, "SCHEDULES_LIVE_PER_CUSTOMER_MAX", 2)
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    first = bank.schedule(payer, payee).schedule
    bank.schedule(payer, payee)
    with pytest.raises(payments_errors.TooManyError, match="at most 2"):
        bank.schedule(payer, payee)
    bank.schedules.cancel(payer.customer_id, first.id, customer_ctx(payer.customer_id))
    bank.schedule(payer, payee)  # a cancelled one no longer counts


# --- runs ------------------------------------------------------------------------------------


def test_a_due_run_pays_once_and_the_schedule_moves_on(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "10.00", count=2).schedule
    bank.clock.advance(seconds=30 * 60)
    assert bank.schedules.run_due().claimed == 0  # not due yet
    bank.to_due(schedule)
    counts = bank.schedules.run_due()
    assert (counts.claimed, counts.paid) == (1, 1)
    assert bank.schedules.run_due().claimed == 0
    view = bank.schedules.get(payer.customer_id, schedule.id)
    assert (view.status, view.next_seq, view.failures) == (ScheduleStatus.ACTIVE, 2, 0)
    (run,) = view.runs
    assert (run.seq, run.outcome, run.failure_code) == (1, RunOutcome.PAID, None)
    (order,) = bank.orders_of(schedule)
    assert order.id == run.order_id
    assert order.source_ref == f"schedule:{schedule.id}:1"
    assert order.channel == Channel.ONLINE.value
    assert order.state == OrderState.SETTLED.value
    assert order.credit_account_id == target.id
    bank.to_due(schedule)
    assert bank.schedules.run_due().paid == 1
    finished = bank.schedules.get(payer.customer_id, schedule.id)
    assert (finished.status, finished.next_run) == (ScheduleStatus.FINISHED, None)
    assert [r.seq for r in finished.runs] == [2, 1]
    assert bank.balance(target) == "20.00 CNY"
    assert bank.ledger.verify().ok


def test_two_schedulers_pay_every_due_run_exactly_once(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank, 1_000_00)
    payee = bank.payee(payer.customer_id, target)
    schedules = [bank.schedule(payer, payee, "1.00").schedule for _ in range(6)]
    bank.to_due(schedules[-1])
    runners = [SchedulesService(bank.engine, bank.payees, bank.clock, batch_size=2) for _ in "ab"]
    barrier = threading.Barrier(len(runners))
    results: list[Any] = []

    def run(runner: SchedulesService) -> None:
        barrier.wait()
        results.append(runner.run_due())

    threads = [threading.Thread(target=run, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.paid for r in results) == 6
    assert sum(r.errors for r in results) == 0
    for schedule in schedules:
        assert len(bank.orders_of(schedule)) == 1
    assert bank.balance(target) == "6.00 CNY"


def test_two_schedulers_on_the_very_same_run_pay_it_once(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "3.00").schedule
    bank.to_due(schedule)
    row = _claim(bank)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def run() -> None:
        barrier.wait()
        outcomes.append(bank.schedules.run_claimed(row))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost", "paid"]
    assert len(bank.orders_of(schedule)) == 1
    assert len(bank.schedules.get(payer.customer_id, schedule.id).runs) == 1
    assert bank.balance(target) == "3.00 CNY"


def _claim(bank: ScheduleBank, owner: uuid.UUID | None = None) -> Any:
    """What a scheduler's claim hands it (and leaves leased): the due schedule's row."""
    now = bank.clock()
    rows = run_in_transaction(
        bank.engine,
        lambda c: payments_store.claim_due(
            c, now, owner or uuid7(), now + SCHEDULE_LEASE_S * US, 8
        ),
    )
    assert len(rows) == 1
    return rows[0]


def test_a_crash_between_claim_and_payment_pays_once_after_the_lease(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "4.00").schedule
    bank.to_due(schedule)
    _claim(bank)  # ... and the scheduler dies
    assert bank.schedules.run_due().claimed == 0  # its lease still holds
    assert bank.balance(target) == "0.00 CNY"
    bank.clock.advance(seconds=SCHEDULE_LEASE_S)
    assert bank.schedules.run_due().paid == 1
    assert bank.schedules.run_due().claimed == 0
    assert len(bank.orders_of(schedule)) == 1
    assert bank.balance(target) == "4.00 CNY"


def test_a_crash_inside_the_payment_rolls_it_back_and_the_retry_pays_once(
    bank: ScheduleBank, monkeypatch: pytest.MonkeyPatch
) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "5.00").schedule
    bank.to_due(schedule)
    real_insert_run = payments_store.insert_run
    crashes = [1]

    def crashing(connection: Any, values: dict[str, Any]) -> None:
        if crashes:
            crashes.pop()
            raise RuntimeError("the process died")
        real_insert_run(connection, values)

    monkeypatch.setattr(payments_store, "insert_run", crashing)
    assert bank.schedules.run_due().errors == 1
    assert bank.orders_of(schedule) == []
    assert bank.balance(target) == "0.00 CNY"
    bank.clock.advance(seconds=SCHEDULE_LEASE_S)
    assert bank.schedules.run_due().paid == 1
    assert len(bank.orders_of(schedule)) == 1
    assert bank.balance(target) == "5.00 CNY"


def test_a_payment_made_but_not_recorded_is_recorded_not_paid_again(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "6.00").schedule
    bank.to_due(schedule)
    row = _claim(bank)
    # An earlier attempt paid the run under its key but never recorded it.
    real_record = bank.schedules._record
    bank.schedules._record = lambda *args, **kwargs: None  # type: ignore[method-assign]
    assert bank.schedules.run_claimed(row) == "paid"
    bank.schedules._record = real_record  # type: ignore[method-assign]
    assert bank.schedules.run_claimed(row) == "paid"  # replayed, and recorded now
    assert len(bank.orders_of(schedule)) == 1
    view = bank.schedules.get(payer.customer_id, schedule.id)
    assert [r.order_id for r in view.runs] == [bank.orders_of(schedule)[0].id]
    assert bank.balance(target) == "6.00 CNY"


def test_a_stale_scheduler_cannot_pay_a_run_recorded_as_failed(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank, 0)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "7.00").schedule
    bank.to_due(schedule)
    stale = _claim(bank)
    bank.clock.advance(seconds=SCHEDULE_LEASE_S)
    assert bank.schedules.run_due().failed == 1  # insufficient funds
    bank.deposit(payer, 100_00)
    assert bank.schedules.run_claimed(stale) == "lost"
    assert bank.orders_of(schedule) == []
    assert bank.balance(target) == "0.00 CNY"


def test_a_run_racing_a_cancel_is_not_paid(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "8.00").schedule
    bank.to_due(schedule)
    claimed = _claim(bank)
    cancelled = bank.schedules.cancel(
        payer.customer_id, schedule.id, customer_ctx(payer.customer_id)
    )
    assert cancelled.status is ScheduleStatus.CANCELLED
    assert bank.schedules.run_claimed(claimed) == "lost"
    assert bank.orders_of(schedule) == []
    bank.clock.advance(seconds=SCHEDULE_LEASE_S)
    assert bank.schedules.run_due().claimed == 0


# --- failures, pauses, skips -----------------------------------------------------------------


def test_failures_are_recorded_and_pause_the_schedule_until_resumed(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank, 0)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "9.00", count=10).schedule
    for seq in range(1, SCHEDULE_FAILURES_MAX + 1):
        bank.to_due(schedule, seq)
        assert bank.schedules.run_due().failed == 1
    view = bank.schedules.get(payer.customer_id, schedule.id)
    assert view.status is ScheduleStatus.PAUSED
    assert view.failures == SCHEDULE_FAILURES_MAX
    assert view.next_run is None
    assert {r.failure_code for r in view.runs} == {"insufficient_funds"}
    assert all("insufficient funds" in (r.failure_detail or "") for r in view.runs)
    bank.to_due(schedule, SCHEDULE_FAILURES_MAX + 1)
    assert bank.schedules.run_due().claimed == 0  # paused: not run
    bank.deposit(payer, 100_00)
    bank.clock.advance(seconds=60)
    resumed = bank.schedules.resume(payer.customer_id, schedule.id, customer_ctx(payer.customer_id))
    assert resumed.status is ScheduleStatus.ACTIVE
    assert resumed.next_seq == SCHEDULE_FAILURES_MAX + 2  # the run due while paused is not made
    assert resumed.failures == 0
    with pytest.raises(payments_errors.ScheduleStateError, match="only a paused one"):
        bank.schedules.resume(payer.customer_id, schedule.id, customer_ctx(payer.customer_id))
    bank.to_due(schedule)
    assert bank.schedules.run_due().paid == 1
    assert bank.balance(target) == "9.00 CNY"


def test_a_frozen_source_and_a_disabled_customer_are_failures(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner = payer.customer_id
    payee = bank.payee(owner, target)
    schedule = bank.schedule(payer, payee, "1.00", count=5).schedule
    bank.accounts.freeze(owner, payer.id, customer_ctx(owner))
    bank.to_due(schedule, 1)
    assert bank.schedules.run_due().failed == 1
    bank.accounts.unfreeze(owner, payer.id, customer_ctx(owner))
    with bank.engine.begin() as connection:
        connection.execute(
            update(identity_customers)
            .where(identity_customers.c.id == owner)
            .values(status="disabled")
        )
    bank.to_due(schedule, 2)
    assert bank.schedules.run_due().failed == 1
    codes = [r.failure_code for r in bank.schedules.get(owner, schedule.id).runs]
    assert codes == ["customer_not_found", "account_frozen"]
    assert bank.orders_of(schedule) == []


def test_customer_limits_apply_to_runs_at_the_limit_and_one_past(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner = payer.customer_id
    payee = bank.payee(owner, target)
    at_limit = bank.schedule(payer, payee, "5.00", count=1).schedule
    past_limit = bank.schedule(payer, payee, "5.01", count=1).schedule
    bank.accounts.set_limits(
        owner,
        payer.id,
        ChannelLimitsRequest(Channel.ONLINE, per_payment=Money(5_00, "CNY")),
        customer_ctx(owner),
    )
    bank.to_due(past_limit)
    counts = bank.schedules.run_due()
    assert (counts.paid, counts.failed) == (1, 1)
    assert [r.outcome for r in bank.schedules.get(owner, at_limit.id).runs] == [RunOutcome.PAID]
    (refused,) = bank.schedules.get(owner, past_limit.id).runs
    assert refused.failure_code == "limit_exceeded"
    assert bank.balance(target) == "5.00 CNY"


def test_a_class_iii_daily_limit_at_the_limit_and_one_past(bank: ScheduleBank) -> None:
    owner = bank.customer()
    main = bank.open(owner)
    bank.deposit(main, 10_000_00)
    small = bank.open(owner, account_class=AccountClass.CLASS_III)
    draft = PaymentDraft(PaymentKind.TRANSFER, Channel.ONLINE, "t", Money(2_000_00, "CNY"))
    bank.payments.transfer(owner, main.id, small.number, draft, None)
    payee = bank.payee(owner, funded(bank, 0))
    first = bank.first_run()
    made = [
        bank.schedule(small, payee, amount, frequency=Frequency.ONCE, first_run=first).schedule
        for amount in ("1500.00", "500.00", "0.01")  # 2,000.00 a day is Class III's limit
    ]
    bank.to_due(made[0])
    counts = bank.schedules.run_due()
    assert (counts.paid, counts.failed) == (2, 1)
    (refused,) = bank.schedules.get(owner, made[2].id).runs
    assert refused.failure_code == "limit_exceeded"
    assert "today" in (refused.failure_detail or "")


def test_a_run_found_too_late_is_skipped(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee, "2.00", count=5).schedule
    bank.to_due(schedule, 1)
    bank.clock.advance(seconds=SCHEDULE_RUN_LATE_S_MAX + 3600)  # run 2 is an hour late
    assert bank.schedules.run_due().skipped == 1
    assert bank.schedules.run_due().paid == 1
    view = bank.schedules.get(payer.customer_id, schedule.id)
    assert [(r.seq, r.outcome) for r in view.runs] == [
        (2, RunOutcome.PAID),
        (1, RunOutcome.SKIPPED),
    ]
    assert view.runs[1].failure_code == "missed"
    assert bank.balance(target) == "2.00 CNY"


def test_a_one_off_schedule_finishes_and_cancel_is_final(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner = payer.customer_id
    payee = bank.payee(owner, target)
    once = bank.schedule(payer, payee, "1.00", frequency=Frequency.ONCE).schedule
    bank.to_due(once)
    assert bank.schedules.run_due().paid == 1
    assert bank.schedules.get(owner, once.id).status is ScheduleStatus.FINISHED
    with pytest.raises(payments_errors.ScheduleStateError, match="finished"):
        bank.schedules.cancel(owner, once.id, customer_ctx(owner))
    stranger = bank.customer()
    with pytest.raises(payments_errors.ScheduleNotFoundError):
        bank.schedules.get(stranger, once.id)
    with pytest.raises(payments_errors.ScheduleNotFoundError):
        bank.schedules.cancel(stranger, once.id, customer_ctx(stranger))
    with pytest.raises(payments_errors.ScheduleNotFoundError):
        bank.schedules.resume(stranger, once.id, customer_ctx(stranger))


def test_a_payee_a_live_schedule_pays_cannot_be_deleted(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    owner = payer.customer_id
    payee = bank.payee(owner, target)
    schedule = bank.schedule(payer, payee).schedule
    with pytest.raises(payments_errors.PayeeInUseError, match="cancel them first"):
        bank.payees.delete(owner, payee.id, customer_ctx(owner))
    bank.schedules.cancel(owner, schedule.id, customer_ctx(owner))
    bank.payees.delete(owner, payee.id, customer_ctx(owner))
    kept = bank.schedules.get(owner, schedule.id)
    assert kept.payee_id is None
    assert kept.payee_label.endswith(f"(****{target.number[-4:]})")


def test_the_scheduler_hands_back_claims_when_stopping(bank: ScheduleBank) -> None:
    payer, target = two_parties(bank)
    payee = bank.payee(payer.customer_id, target)
    schedule = bank.schedule(payer, payee).schedule
    bank.to_due(schedule)
    counts = bank.schedules.run_due(lambda: True)
    assert (counts.claimed, counts.released, counts.paid) == (1, 1, 0)
    assert bank.schedules.run_due().paid == 1  # no lease left behind

"""Transaction histories, payments lists, exports and receipts on SQLite and
PostgreSQL: every movement is there with the balance it left, each filter
(alone and combined) selects exactly what its pure meaning says, pages follow
one another without losing or repeating an entry, and receipts verify."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from accounts_factories import new_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from identity_factories import FakeClock
from payments_factories import PayingBank, funded
from sqlalchemy import Connection, Engine, Row

from zhifu.accounts import store as accounts_store
from zhifu.accounts.errors import AccountNotFoundError
from zhifu.accounts.model import SHANGHAI, Channel, Direction
from zhifu.accounts.service import TRANSFER_CODE_CASH_DEPOSIT, AccountView
from zhifu.ledger.model import AccountRequest, Result, TransferRequest
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments import store as payments_store
from zhifu.payments.errors import PaymentNotFoundError
from zhifu.payments.history import (
    CASH_COUNTERPARTY,
    EXPORT_ROWS_MAX,
    PAGE_SIZE_MAX,
    EntryType,
    ExportTooLargeError,
    HistoryEntry,
    HistoryRequest,
    HistoryService,
    InvalidHistoryCursorError,
    InvalidHistoryFilterError,
    ReceiptNotAvailableError,
    encode_cursor,
    history_filter,
    verify_receipt,
)
from zhifu.payments.model import OrderState, PaymentKind, Transition, settle_transfer_id
from zhifu.payments.service import PaymentDraft
from zhifu.security.signing import Ed25519Signer
from zhifu.store.uow import run_in_transaction

US = 1_000_000
# 2024-05-01 09:00 in Shanghai: the test's clock starts here.
START_US = int(datetime(2024, 5, 1, 9, tzinfo=SHANGHAI).timestamp()) * US
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START_US)


@pytest.fixture
def bank(engine: Engine, signer: Ed25519Signer, clock: FakeClock) -> PayingBank:
    """Payments, accounts and a ledger on one clock, so every entry's time is the test's."""
    return PayingBank(engine, LedgerService(engine, signer, clock=clock), clock)


@pytest.fixture
def history(engine: Engine, signer: Ed25519Signer, bank: PayingBank) -> HistoryService:
    return HistoryService(engine, signer, bank_code=bank.accounts.bank_code)


def pages(
    history: HistoryService,
    account: AccountView,
    request: HistoryRequest | None = None,
    limit: int = PAGE_SIZE_MAX,
) -> Iterator[tuple[HistoryEntry, ...]]:
    cursor: str | None = None
    while True:
        page = history.account_history(
            account.customer_id, account.id, request or HistoryRequest(), cursor, limit
        )
        assert len(page.entries) <= limit
        yield page.entries
        if page.next_cursor is None:
            return
        assert len(page.entries) == limit
        cursor = page.next_cursor


def everything(
    history: HistoryService,
    account: AccountView,
    request: HistoryRequest | None = None,
    limit: int = PAGE_SIZE_MAX,
) -> list[HistoryEntry]:
    return [entry for page in pages(history, account, request, limit) for entry in page]


def newest_first(entries: list[HistoryEntry]) -> bool:
    keys = [(e.ts, e.id.int) for e in entries]
    return keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)


def cny(text: str) -> Money:
    return Money.parse(text, "CNY")


def pay_merchant(
    bank: PayingBank, payer: AccountView, shop: AccountView, amount: str, label: str
) -> uuid.UUID:
    """A merchant payment (what a scanned QR code makes), labelled with the shop's name."""
    draft = PaymentDraft(
        kind=PaymentKind.MERCHANT,
        channel=Channel.MOBILE,
        initiator=f"customer:{payer.customer_id}",
        amount=cny(amount),
        memo="order 42",
        payee_label=label,
    )
    return execute(bank, draft, payer, shop)


def refund(
    bank: PayingBank, shop: AccountView, payer: AccountView, amount: str, of: uuid.UUID
) -> uuid.UUID:
    draft = PaymentDraft(
        kind=PaymentKind.REFUND,
        channel=Channel.ONLINE,
        initiator="partner:test",
        amount=cny(amount),
        refund_of=of,
        apply_limits=False,
        payer_label="Best Shop 最佳",
    )
    return execute(bank, draft, shop, payer)


def execute(
    bank: PayingBank, draft: PaymentDraft, payer: AccountView, payee: AccountView
) -> uuid.UUID:
    def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
        rows = [accounts_store.account_by_id(connection, a.id) for a in (payer, payee)]
        assert rows[0] is not None and rows[1] is not None
        return rows[0], rows[1]

    return bank.payments.execute(draft, resolve, None).order.id


def set_state(engine: Engine, order_id: uuid.UUID, state: OrderState, ts: int) -> None:
    """Move a settled order on (as a rail's return will), with its transition."""

    def work(connection: Connection) -> None:
        steps = payments_store.transitions_of(connection, order_id)
        last = steps[-1]
        payments_store.insert_transitions(
            connection,
            order_id,
            len(steps),
            [Transition(last.to_state, state, ts, "test", "set by the test")],
        )
        payments_store.update_order(connection, order_id, {"state": state.value, "updated_ts": ts})

    run_in_transaction(engine, work)


# --- a complete statement -------------------------------------------------------------------


def test_an_accounts_history_holds_every_movement_with_its_balance(
    bank: PayingBank, history: HistoryService, clock: FakeClock
) -> None:
    alice = funded(bank, 1000_00)  # 09:00
    bob = funded(bank, 500_00)
    clock.advance(seconds=60)
    paid = bank.transfer(alice, bob, "12.34", memo="lunch 午饭").order
    clock.advance(seconds=60)
    received = bank.transfer(bob, alice, "5.00").order
    clock.advance(seconds=60)
    bank.withdraw(alice, 100_00)

    entries = everything(history, alice)
    assert newest_first(entries)
    assert [(e.type, e.direction, e.amount, e.balance_after) for e in entries] == [
        (EntryType.CASH_WITHDRAWAL, Direction.OUTGOING, cny("100.00"), cny("892.66")),
        (EntryType.TRANSFER, Direction.INCOMING, cny("5.00"), cny("992.66")),
        (EntryType.TRANSFER, Direction.OUTGOING, cny("12.34"), cny("987.66")),
        (EntryType.CASH_DEPOSIT, Direction.INCOMING, cny("1000.00"), cny("1000.00")),
    ]
    withdrawal, incoming, outgoing, deposit = entries
    assert outgoing.id == outgoing.payment_id == paid.id
    assert outgoing.ledger_transfer_id == settle_transfer_id(paid.id)
    assert outgoing.counterparty == f"****{bob.number[-4:]}"
    assert outgoing.memo == "lunch 午饭" and outgoing.state is OrderState.SETTLED
    assert outgoing.ts == START_US + MINUTE_US
    assert incoming.id == received.id
    assert incoming.counterparty == f"****{bob.number[-4:]}"
    assert {e.account_id for e in entries} == {alice.id}
    for cash in (withdrawal, deposit):
        assert cash.counterparty == CASH_COUNTERPARTY and cash.payment_id is None
        assert cash.ledger_transfer_id == cash.id
    # Bob's side of the same payments.
    assert [(e.direction, e.counterparty) for e in everything(history, bob)][:2] == [
        (Direction.OUTGOING, f"****{alice.number[-4:]}"),
        (Direction.INCOMING, f"****{alice.number[-4:]}"),
    ]


def test_another_customers_account_is_not_found(bank: PayingBank, history: HistoryService) -> None:
    alice, bob = funded(bank, 100), funded(bank, 100)
    for customer, account_id in ((bob.customer_id, alice.id), (alice.customer_id, uuid.uuid4())):
        with pytest.raises(AccountNotFoundError, match="no such account"):
            history.account_history(customer, account_id, HistoryRequest())
        with pytest.raises(AccountNotFoundError):
            history.account_export(customer, account_id, HistoryRequest())


# --- filters --------------------------------------------------------------------------------


@dataclass
class Scene:
    alice: AccountView
    bob: AccountView
    carol: AccountView
    shop: AccountView
    returned: uuid.UUID


@pytest.fixture
def scene(bank: PayingBank, clock: FakeClock, engine: Engine) -> Scene:
    """Alice's account over two Shanghai days (1 and 2 May): cash, transfers out
    and in, a merchant payment and its refund, and a returned payment."""
    alice = funded(bank, 2000_00)
    bob, carol, shop = funded(bank, 300_00), funded(bank, 0), funded(bank, 0)
    for amount, payee in (("10.00", bob), ("25.50", carol), ("99.99", bob)):
        clock.advance(seconds=600)
        bank.transfer(alice, payee, amount, memo=f"to {amount}")
    clock.advance(seconds=600)
    bank.transfer(bob, alice, "42.00", memo="back")
    clock.advance(seconds=600)
    order = pay_merchant(bank, alice, shop, "88.00", "Best Shop 最佳")
    clock.set(START_US + 15 * HOUR_US)  # 2 May, 00:00 in Shanghai
    bank.transfer(alice, carol, "7.00")  # exactly at midnight
    clock.advance(seconds=600)
    refund(bank, shop, alice, "8.00", order)
    clock.advance(seconds=600)
    returned = bank.transfer(alice, bob, "3.00", memo="oops").order.id
    set_state(engine, returned, OrderState.RETURNED, clock.advance(seconds=60))
    clock.advance(seconds=600)
    bank.deposit(alice, 50_00)
    bank.withdraw(alice, 20_00)
    return Scene(alice, bob, carol, shop, returned)


FILTERS = {
    "first day": HistoryRequest(from_text="2024-05-01", to_text="2024-05-01"),
    "second day": HistoryRequest(from_text="2024-05-02"),
    "until midnight": HistoryRequest(to_text="2024-05-02T00:00:00+08:00"),
    "an hour": HistoryRequest(from_text="2024-05-01T01:05:00Z", to_text="2024-05-01T01:30:00Z"),
    "at least 42": HistoryRequest(min_amount="42"),
    "at most 10": HistoryRequest(max_amount="10.00"),
    "between": HistoryRequest(min_amount="8", max_amount="42.00"),
    "shop": HistoryRequest(counterparty="best shop"),
    "chinese": HistoryRequest(counterparty="最佳"),
    "cash": HistoryRequest(counterparty="Counter"),
    "percent": HistoryRequest(counterparty="%"),
    "returned": HistoryRequest(states=frozenset({OrderState.RETURNED})),
    "settled": HistoryRequest(states=frozenset({OrderState.SETTLED})),
    "merchant": HistoryRequest(types=frozenset({EntryType.MERCHANT})),
    "refund": HistoryRequest(types=frozenset({EntryType.REFUND})),
    "cash types": HistoryRequest(
        types=frozenset({EntryType.CASH_DEPOSIT, EntryType.CASH_WITHDRAWAL})
    ),
    "in": HistoryRequest(direction=Direction.INCOMING),
    "out": HistoryRequest(direction=Direction.OUTGOING),
    "out to bob on day one": HistoryRequest(
        from_text="2024-05-01",
        to_text="2024-05-01",
        direction=Direction.OUTGOING,
        counterparty="****",
        min_amount="10",
        types=frozenset({EntryType.TRANSFER}),
        states=frozenset({OrderState.SETTLED}),
    ),
    "in, cash or refund": HistoryRequest(
        direction=Direction.INCOMING,
        types=frozenset({EntryType.REFUND, EntryType.CASH_DEPOSIT}),
        max_amount="50.00",
    ),
}
EXPECTED_COUNTS = {
    "first day": 6,  # the opening deposit, three transfers out, one in, the shop
    "second day": 5,
    "until midnight": 7,  # the first day, and the payment at midnight
    "an hour": 3,
    "at least 42": 5,
    "at most 10": 4,
    "between": 5,
    "shop": 2,
    "chinese": 2,
    "cash": 3,
    "percent": 0,
    "returned": 1,
    "settled": 10,
    "merchant": 1,
    "refund": 1,
    "cash types": 3,
    "in": 4,
    "out": 7,
    "out to bob on day one": 3,
    "in, cash or refund": 2,
}


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_selects_what_it_means(
    scene: Scene, history: HistoryService, name: str
) -> None:
    everyone = everything(history, scene.alice)
    assert len(everyone) == 11
    request = FILTERS[name]
    meaning = history_filter(request, "CNY")
    expected = [e for e in everyone if meaning.matches(e)]
    assert everything(history, scene.alice, request) == expected
    assert everything(history, scene.alice, request, limit=2) == expected
    assert len(expected) == EXPECTED_COUNTS[name]


def test_the_counterparty_filter_names_the_other_side(
    scene: Scene, history: HistoryService
) -> None:
    last4 = scene.bob.number[-4:]
    found = everything(history, scene.alice, HistoryRequest(counterparty=last4))
    assert {e.counterparty for e in found} == {f"****{last4}"}
    assert len(found) == 4  # two out, one in, the returned one
    shop = everything(history, scene.alice, HistoryRequest(counterparty="BEST"))
    assert [e.type for e in shop] == [EntryType.REFUND, EntryType.MERCHANT]
    returned = everything(history, scene.alice, FILTERS["returned"])
    assert [e.id for e in returned] == [scene.returned]
    assert returned[0].balance_after is not None  # the money did move, then came back


def test_bad_filters_and_cursors_are_refused(scene: Scene, history: HistoryService) -> None:
    alice = scene.alice
    for request, field in (
        (HistoryRequest(min_amount="1.001"), "min_amount"),
        (HistoryRequest(from_text="2024-05-02", to_text="2024-05-01"), "from"),
        (HistoryRequest(currency="USD"), "currency"),
    ):
        with pytest.raises(InvalidHistoryFilterError) as caught:
            history.account_history(alice.customer_id, alice.id, request)
        assert caught.value.field == field
    with pytest.raises(InvalidHistoryCursorError):
        history.account_history(alice.customer_id, alice.id, HistoryRequest(), "bogus")
    with pytest.raises(InvalidHistoryFilterError, match=str(PAGE_SIZE_MAX)):
        history.account_history(alice.customer_id, alice.id, HistoryRequest(), None, 201)


# --- pagination -------------------------------------------------------------------------------


@pytest.fixture
def crowded(bank: PayingBank, clock: FakeClock) -> AccountView:
    """An account with 30 payments in a few instants (many equal times) and cash."""
    alice = funded(bank, 5000_00)
    others = [funded(bank, 1000_00) for _ in range(3)]
    for round_ in range(10):
        if round_ % 3 == 0:
            clock.advance(us=1)
        bank.transfer(alice, others[round_ % 3], f"{round_ + 1}.00")
        bank.transfer(others[(round_ + 1) % 3], alice, f"{round_ + 2}.50")
        bank.transfer(alice, others[(round_ + 2) % 3], "1.00", memo="same time")
    bank.withdraw(alice, 1_00)
    return alice


CROWDED_FILTERS = [
    HistoryRequest(),
    HistoryRequest(direction=Direction.INCOMING),
    HistoryRequest(min_amount="2.00", max_amount="9.00"),
    HistoryRequest(types=frozenset({EntryType.TRANSFER, EntryType.CASH_WITHDRAWAL})),
]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(1, 9), which=st.integers(0, len(CROWDED_FILTERS) - 1))
def test_paging_loses_and_repeats_nothing(
    crowded: AccountView, history: HistoryService, limit: int, which: int
) -> None:
    request = CROWDED_FILTERS[which]
    whole = everything(history, crowded, request)
    assert newest_first(whole)
    assert len({e.ts for e in whole}) < len(whole)  # ties are there to break
    paged = list(pages(history, crowded, request, limit))
    flat = [e for page in paged for e in page]
    assert flat == whole
    assert len(paged) == max(1, -(-len(whole) // limit))


def test_a_cursor_points_at_a_position_not_at_a_row(
    crowded: AccountView, history: HistoryService
) -> None:
    whole = everything(history, crowded)
    middle = whole[10]
    page = history.account_history(
        crowded.customer_id, crowded.id, HistoryRequest(), encode_cursor(middle.position), 5
    )
    assert list(page.entries) == whole[11:16]


# --- the payments list ------------------------------------------------------------------------


def test_a_customers_payments_span_accounts_and_list_own_transfers_once(
    bank: PayingBank, history: HistoryService, clock: FakeClock
) -> None:
    main = funded(bank, 100_00)
    savings = bank.open(main.customer_id, "savings")
    bob, carol = funded(bank, 100_00), funded(bank, 0)
    own = bank.transfer(main, savings, "10.00").order.id
    clock.advance(seconds=1)
    received = bank.transfer(bob, savings, "20.00").order.id
    clock.advance(seconds=1)
    paid = bank.transfer(main, carol, "30.00").order.id
    bank.withdraw(main, 1_00)  # cash is not a payment

    def listed(request: HistoryRequest, customer: uuid.UUID = main.customer_id) -> list[uuid.UUID]:
        return [e.id for e in history.payments_history(customer, request).entries]

    assert listed(HistoryRequest()) == [paid, received, own]
    assert listed(HistoryRequest(direction=Direction.INCOMING)) == [received]
    assert listed(HistoryRequest(direction=Direction.OUTGOING)) == [paid, own]
    assert listed(HistoryRequest(min_amount="15", currency="CNY")) == [paid, received]
    assert listed(HistoryRequest(currency="USD")) == []
    assert listed(HistoryRequest(), bob.customer_id) == [received]
    entries = history.payments_history(main.customer_id, HistoryRequest()).entries
    assert [e.account_id for e in entries] == [main.id, savings.id, main.id]
    assert entries[0].balance_after == cny("60.00")  # 100 - 10 - 30, before the withdrawal
    first = history.payments_history(main.customer_id, HistoryRequest(), None, 2)
    rest = history.payments_history(main.customer_id, HistoryRequest(), first.next_cursor, 2)
    assert [e.id for e in first.entries + rest.entries] == [paid, received, own]
    assert rest.next_cursor is None
    with pytest.raises(InvalidHistoryFilterError, match="teller cash") as caught:
        history.payments_history(
            main.customer_id, HistoryRequest(types=frozenset({EntryType.CASH_DEPOSIT}))
        )
    assert caught.value.field == "type"
    with pytest.raises(InvalidHistoryFilterError, match="currency"):
        history.payments_history(main.customer_id, HistoryRequest(max_amount="1"))


# --- exports ----------------------------------------------------------------------------------


def test_an_export_is_the_whole_filtered_history(scene: Scene, history: HistoryService) -> None:
    alice = scene.alice
    export = history.account_export(alice.customer_id, alice.id, HistoryRequest())
    assert list(export.entries) == everything(history, alice)
    assert export.account_number_masked.endswith(alice.number[-4:])
    assert export.filename == f"zhifu-{alice.number[-4:]}-transactions.csv"
    outgoing = HistoryRequest(direction=Direction.OUTGOING)
    filtered = history.account_export(alice.customer_id, alice.id, outgoing)
    assert list(filtered.entries) == everything(history, alice, outgoing)


def test_an_export_holds_up_to_its_row_limit(
    engine: Engine, signer: Ed25519Signer, scene: Scene, bank: PayingBank
) -> None:
    alice = scene.alice
    at_limit = HistoryService(engine, signer, bank_code=bank.accounts.bank_code, export_rows_max=11)
    assert len(at_limit.account_export(alice.customer_id, alice.id, HistoryRequest()).entries) == 11
    past = HistoryService(engine, signer, bank_code=bank.accounts.bank_code, export_rows_max=10)
    with pytest.raises(ExportTooLargeError, match="narrow the dates"):
        past.account_export(alice.customer_id, alice.id, HistoryRequest())
    # A filter that narrows it is answered.
    narrow = HistoryRequest(from_text="2024-05-02")
    assert len(past.account_export(alice.customer_id, alice.id, narrow).entries) == 5


def test_the_export_limit_is_ten_thousand_rows(
    engine: Engine, bank: PayingBank, history: HistoryService
) -> None:
    """EXPORT_ROWS_MAX itself: that many rows are exported, one more is refused."""
    alice = funded(bank, 0)
    till = uuid.uuid4()
    bank.ledger.create_accounts([AccountRequest(till, "CNY", 1001, 0, "test:till")])

    def deposits(count: int) -> list[TransferRequest]:
        return [
            TransferRequest(uuid.uuid4(), till, alice.id, 1, "CNY", TRANSFER_CODE_CASH_DEPOSIT)
            for _ in range(count)
        ]

    for batch in (deposits(8000), deposits(EXPORT_ROWS_MAX - 8000)):
        assert {o.result for o in bank.ledger.create_transfers(batch)} == {Result.OK}
    export = history.account_export(alice.customer_id, alice.id, HistoryRequest())
    assert len(export.entries) == EXPORT_ROWS_MAX
    assert export.entries[0].balance_after == Money(EXPORT_ROWS_MAX, "CNY")
    bank.deposit(alice, 1)
    with pytest.raises(ExportTooLargeError, match="10,000"):
        history.account_export(alice.customer_id, alice.id, HistoryRequest())


# --- receipts ---------------------------------------------------------------------------------


def test_payer_and_payee_get_the_same_verifiable_receipt(
    bank: PayingBank, history: HistoryService, signer: Ed25519Signer, engine: Engine
) -> None:
    alice, bob, eve = funded(bank, 100_00), funded(bank, 0), funded(bank, 0)
    order = bank.transfer(alice, bob, "12.34", memo="rent 房租").order
    payer_copy = history.receipt(alice.customer_id, order.id)
    payee_copy = history.receipt(bob.customer_id, order.id)
    assert payer_copy == payee_copy
    document = payer_copy.document
    assert document["payment_id"] == str(order.id)
    assert document["amount"] == "12.34" and document["memo"] == "rent 房租"
    assert document["payer"] == {"name": order.payer_label, "account": "*" * 15 + alice.number[-4:]}
    assert document["payee"]["account"] == "*" * 15 + bob.number[-4:]
    assert document["ledger_transfer_id"] == str(settle_transfer_id(order.id))
    assert document["bank"]["code"] == bank.accounts.bank_code
    assert alice.number not in str(document) and bob.number not in str(document)
    public_key = signer.public_key_bytes
    assert payer_copy.public_key == base64.b64encode(public_key).decode()
    assert verify_receipt(document, payer_copy.signature, public_key)
    assert not verify_receipt({**document, "memo": "rent 房租!"}, payer_copy.signature, public_key)

    for customer, order_id in ((eve.customer_id, order.id), (alice.customer_id, uuid.uuid4())):
        with pytest.raises(PaymentNotFoundError):
            history.receipt(customer, order_id)

    set_state(engine, order.id, OrderState.RETURNED, order.created_ts + US)
    returned = history.receipt(bob.customer_id, order.id)
    assert returned.document["state"] == "returned"
    assert returned.document["returned_at"] is not None
    assert returned.document["receipt_number"] == document["receipt_number"]
    assert verify_receipt(returned.document, returned.signature, public_key)


def test_only_settled_or_returned_payments_have_a_receipt(
    bank: PayingBank, history: HistoryService, engine: Engine
) -> None:
    alice, bob = funded(bank, 100_00), funded(bank, 0)
    order = bank.transfer(alice, bob, "1.00", key=new_key()).order

    def fail(connection: Connection) -> None:
        payments_store.update_order(connection, order.id, {"state": OrderState.FAILED.value})

    run_in_transaction(engine, fail)
    with pytest.raises(ReceiptNotAvailableError, match="failed"):
        history.receipt(alice.customer_id, order.id)

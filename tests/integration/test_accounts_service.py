"""The accounts use cases on SQLite and PostgreSQL: opening in every allowed
product, class and currency (and refusing the rest), account numbers, balances,
nicknames and defaults, freezing and closing, debit cards (encrypted at rest,
masked in views), and teller cash exactly once per idempotency key.

Every test runs on both databases through the ``engine`` fixture. The ``bank``
fixture checks afterwards that the ledger and the audit trail still verify and
that no card number reached the audit trail.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from accounts_factories import (
    Bank,
    customer_ctx,
    new_key,
    teller_ctx,
)
from factories import PENDING, post, transfer, void
from identity_factories import FakeClock, ring_entries
from sqlalchemy import Engine, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from zhifu.accounts import service as accounts_service
from zhifu.accounts import store as accounts_store
from zhifu.accounts.errors import (
    AccountFrozenError,
    AccountNotFoundError,
    AccountsError,
    AccountStateError,
    CardNotFoundError,
    CardStateError,
    CustomerNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidAccountNumberError,
    InvalidCashAmountError,
    InvalidIdempotencyKeyError,
    InvalidNicknameError,
    LimitExceededError,
    QuotaExceededError,
    UnknownProductError,
    UnsupportedCurrencyError,
)
from zhifu.accounts.model import (
    CLASS_CURRENCIES,
    CLASS_III_BALANCE_MAX_MINOR,
    ISSUER_BIN_DEFAULT,
    PRODUCTS,
    AccountClass,
    AccountStatus,
    CardStatus,
    format_digit_groups,
    is_token,
    luhn_valid,
    mask_pan,
    pan_from_serial,
    parse_account_number,
)
from zhifu.accounts.service import (
    ACCOUNTS_LIVE_PER_CUSTOMER_MAX,
    BANK_CASH_OWNER,
    CARDS_LIVE_PER_ACCOUNT_MAX,
    CARDS_PER_ACCOUNT_MAX,
    CASH_AMOUNT_MINOR_MAX,
    CUSTOMER_ACCOUNT_FLAGS,
    IDEMPOTENCY_KEY_LENGTH_MAX,
    LEDGER_CODES,
    AccountsService,
    AccountView,
    CashKind,
    bank_cash_account_id,
    cash_transfer_id,
)
from zhifu.ledger.service import LedgerService
from zhifu.ops.audit import AuditTrail
from zhifu.security import rotation
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import accounts_accounts, accounts_cards, audit_events

CNY = "CNY"


@pytest.fixture
def bank(engine: Engine, ledger: LedgerService, signer: Ed25519Signer) -> Iterator[Bank]:
    bank = Bank(engine, ledger, FakeClock())
    yield bank
    assert ledger.verify().ok, ledger.verify()
    trail = AuditTrail(engine, signer)
    trail.checkpoint()
    report = trail.verify({signer.key_id: signer.public_key_bytes})
    assert report.ok, report.as_dict()
    with engine.connect() as connection:
        details = " ".join(connection.execute(select(audit_events.c.details)).scalars())
        pans = [
            bank.stored_pan(card_id)
            for card_id in connection.execute(select(accounts_cards.c.id)).scalars()
        ]
    for pan in pans:
        assert pan not in details, "a card number reached the audit trail"


def allowed_openings() -> list[tuple[str, AccountClass, str]]:
    return [
        (p.code, klass, currency)
        for p in PRODUCTS.values()
        for klass in sorted(p.account_classes)
        for currency in sorted(p.currencies & CLASS_CURRENCIES[klass])
    ]


def balance_minor(bank: Bank, account: AccountView) -> int:
    return bank.ledger.get_account(account.id).balance_posted


def row_of(engine: Engine, account_id: uuid.UUID) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(accounts_accounts).where(accounts_accounts.c.id == account_id)
        ).one()


# --- opening ----------------------------------------------------------------------------------


def test_every_allowed_product_class_and_currency_opens(bank: Bank) -> None:
    customer = bank.customer()
    openings = allowed_openings()
    assert len(openings) == 14
    views = [bank.open(customer, p, klass, currency) for p, klass, currency in openings]
    numbers = [v.number for v in views]
    assert len(set(numbers)) == len(numbers)
    for view, (product, klass, currency) in zip(views, openings, strict=True):
        parsed = parse_account_number(view.number, bank_code="1024")
        assert luhn_valid(view.number) and parsed.branch_code == "0001"
        assert (view.product, view.account_class, view.currency) == (product, klass, currency)
        assert view.status is AccountStatus.OPEN
        assert view.balance.is_zero() and view.available.is_zero()
        assert view.nickname == f"{PRODUCTS[product].name_en} {currency}"
        assert view.number_masked == "*" * 15 + view.number[-4:]
        ledger_account = bank.ledger.get_account(view.id)
        assert ledger_account.flags == CUSTOMER_ACCOUNT_FLAGS
        assert ledger_account.code == LEDGER_CODES[product]
        assert ledger_account.owner_ref == f"customer:{customer}"
        assert ledger_account.currency == currency
    # The first account in each currency is its default, and only that one.
    defaults = {v.currency: v.id for v in reversed(views)}
    assert {v.id for v in views if v.is_default} == set(defaults.values())
    assert [v.id for v in bank.accounts.list_accounts(customer)] == [v.id for v in views]


@pytest.mark.parametrize(
    ("product", "klass", "currency", "error"),
    [
        ("savings", "III", CNY, UnknownProductError),
        ("checking", "I", CNY, UnknownProductError),
        ("current", "IV", CNY, UnknownProductError),
        ("current", "II", "USD", UnsupportedCurrencyError),
        ("current", "III", "EUR", UnsupportedCurrencyError),
        ("savings", "I", "GBP", UnsupportedCurrencyError),
        ("current", "I", "cny", UnsupportedCurrencyError),
        ("current", "I", "XAU", UnsupportedCurrencyError),
    ],
)
def test_refused_openings_open_nothing(
    bank: Bank, product: str, klass: str, currency: str, error: type[Exception]
) -> None:
    customer = bank.customer()
    with pytest.raises(error):
        bank.open(customer, product, klass, currency)
    assert bank.accounts.list_accounts(customer) == []


def test_nicknames_are_normalised_and_checked(bank: Bank) -> None:
    customer = bank.customer()
    view = bank.open(customer, nickname="  Rent   money 🏠 ")
    assert view.nickname == "Rent money 🏠"
    for bad in ("", "   ", "x" * 33, "a\u200bb", "line\nbreak"):
        with pytest.raises(InvalidNicknameError):
            bank.open(customer, nickname=bad)
    assert bank.open(customer, nickname="x" * 32).nickname == "x" * 32
    assert len(bank.accounts.list_accounts(customer)) == 2


def test_unknown_or_disabled_customers_cannot_open(bank: Bank) -> None:
    with pytest.raises(CustomerNotFoundError):
        bank.open(uuid.uuid4())
    customer = bank.customer()
    bank.identity.set_customer_status(customer, "disabled", customer_ctx(customer))
    with pytest.raises(CustomerNotFoundError):
        bank.open(customer)
    with pytest.raises(CustomerNotFoundError):
        bank.accounts.customer_accounts(uuid.uuid4())
    assert bank.accounts.customer_accounts(customer) == []


def test_opening_with_the_same_id_answers_the_same_account(bank: Bank) -> None:
    customer = bank.customer()
    account_id = uuid.uuid4()
    first = bank.open(customer, account_id=account_id)
    again = bank.open(customer, account_id=account_id)
    assert again == first
    assert len(bank.accounts.list_accounts(customer)) == 1
    with pytest.raises(IdempotencyConflictError):
        bank.open(customer, "savings", account_id=account_id)
    other = bank.customer()
    with pytest.raises(IdempotencyConflictError):
        bank.open(other, account_id=account_id)
    assert bank.accounts.list_accounts(other) == []


def test_an_opening_that_failed_after_the_ledger_converges_when_retried(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = bank.customer()
    account_id = uuid.uuid4()
    real_insert = accounts_store.insert_account

    def crash(*args: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(accounts_store, "insert_account", crash)
    with pytest.raises(RuntimeError):
        bank.open(customer, account_id=account_id)
    assert bank.ledger.get_account(account_id).owner_ref == f"customer:{customer}"
    assert bank.accounts.list_accounts(customer) == []

    monkeypatch.setattr(accounts_store, "insert_account", real_insert)
    view = bank.open(customer, account_id=account_id)
    assert view.id == account_id and view.is_default
    assert [v.id for v in bank.accounts.list_accounts(customer)] == [account_id]


def test_account_number_clashes_are_drawn_again(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = bank.customer()
    serials = iter([42, 42, 43])
    monkeypatch.setattr(accounts_service.secrets, "randbelow", lambda _n: next(serials))
    first = bank.open(customer)
    second = bank.open(customer)
    assert parse_account_number(first.number).serial == 42
    assert parse_account_number(second.number).serial == 43


def test_a_customer_holds_at_most_the_live_account_limit(bank: Bank) -> None:
    customer = bank.customer()
    views = [bank.open(customer) for _ in range(ACCOUNTS_LIVE_PER_CUSTOMER_MAX)]
    with pytest.raises(QuotaExceededError, match=r"at most 20 open or frozen"):
        bank.open(customer)
    bank.accounts.close(customer, views[-1].id, customer_ctx(customer))
    bank.open(customer)  # a closed account frees a place
    assert len(bank.accounts.list_accounts(customer)) == ACCOUNTS_LIVE_PER_CUSTOMER_MAX + 1


# --- reading, nickname, default --------------------------------------------------------------


def test_lists_show_ledger_balances(bank: Bank) -> None:
    customer = bank.customer()
    cny, usd = bank.open(customer), bank.open(customer, currency="USD")
    bank.deposit(cny, 12_345)
    bank.deposit(usd, 500)
    bank.ledger.create_transfers(
        [transfer(cny.id, bank_cash_account_id(CNY), 345, CNY, flags=PENDING, timeout_s=3600)]
    )
    listed = {v.id: v for v in bank.accounts.list_accounts(customer)}
    assert listed[cny.id].balance.to_decimal_string() == "123.45"
    assert listed[cny.id].available.to_decimal_string() == "120.00"
    assert listed[usd.id].balance.format() == "5.00 USD"
    assert bank.accounts.get_account(customer, cny.id) == listed[cny.id]
    staff_view = bank.accounts.customer_accounts(customer)
    assert [v.id for v in staff_view] == [cny.id, usd.id]


def test_another_customers_account_is_not_found(bank: Bank) -> None:
    alice, bob = bank.customer(), bank.customer()
    account = bank.open(alice)
    card = bank.accounts.issue_card(alice, account.id, customer_ctx(alice))
    ctx = customer_ctx(bob)
    calls = [
        lambda: bank.accounts.get_account(bob, account.id),
        lambda: bank.accounts.rename(bob, account.id, "mine now", ctx),
        lambda: bank.accounts.set_default(bob, account.id, ctx),
        lambda: bank.accounts.freeze(bob, account.id, ctx),
        lambda: bank.accounts.unfreeze(bob, account.id, ctx),
        lambda: bank.accounts.close(bob, account.id, ctx),
        lambda: bank.accounts.issue_card(bob, account.id, ctx),
        lambda: bank.accounts.list_cards(bob, account.id),
        lambda: bank.accounts.get_account(alice, uuid.uuid4()),
    ]
    for call in calls:
        with pytest.raises(AccountNotFoundError, match=r"^no such account$"):
            call()
    card_calls = [
        lambda: bank.accounts.get_card(bob, card.id),
        lambda: bank.accounts.freeze_card(bob, card.id, ctx),
        lambda: bank.accounts.unfreeze_card(bob, card.id, ctx),
        lambda: bank.accounts.report_lost(bob, card.id, ctx),
        lambda: bank.accounts.reissue_card(bob, card.id, ctx),
    ]
    for call in card_calls:
        with pytest.raises(CardNotFoundError, match=r"^no such card$"):
            call()
    assert bank.accounts.customer_cards(bob) == []
    assert bank.accounts.get_account(alice, account.id) == account
    assert bank.accounts.get_card(alice, card.id).status is CardStatus.ACTIVE


def test_rename_and_the_one_default_per_currency(bank: Bank, engine: Engine) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    first, second, usd = (
        bank.open(customer),
        bank.open(customer),
        bank.open(customer, currency="USD"),
    )
    assert (first.is_default, second.is_default, usd.is_default) == (True, False, True)

    renamed = bank.accounts.rename(customer, second.id, " Holiday  fund ", ctx)
    assert renamed.nickname == "Holiday fund"
    with pytest.raises(InvalidNicknameError):
        bank.accounts.rename(customer, second.id, "\u202eevil", ctx)
    with pytest.raises(AccountsError, match=r"nothing to change"):
        bank.accounts.update_account(customer, second.id, ctx)

    made = bank.accounts.set_default(customer, second.id, ctx)
    assert made.is_default
    views = {v.id: v for v in bank.accounts.list_accounts(customer)}
    assert not views[first.id].is_default and views[usd.id].is_default
    bank.accounts.set_default(customer, second.id, ctx)  # already the default: nothing changes

    # The database refuses a second default in one currency whatever the code does.
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            update(accounts_accounts)
            .where(accounts_accounts.c.id == first.id)
            .values(is_default=True)
        )
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).where(
                accounts_accounts.c.customer_id == customer,
                accounts_accounts.c.currency == CNY,
                accounts_accounts.c.is_default.is_(True),
            )
        ).scalar_one()
    assert count == 1


# --- freezing and closing ---------------------------------------------------------------------


def test_a_frozen_account_takes_money_in_and_lets_none_out(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    bank.deposit(account, 10_000)
    frozen = bank.accounts.freeze(customer, account.id, ctx)
    assert frozen.status is AccountStatus.FROZEN
    with pytest.raises(AccountStateError, match=r"cannot freeze"):
        bank.accounts.freeze(customer, account.id, ctx)
    with pytest.raises(AccountFrozenError):
        bank.withdraw(account, 1)
    bank.deposit(account, 500)
    with pytest.raises(AccountStateError, match=r"unfreeze it first"):
        bank.accounts.close(customer, account.id, ctx)
    with pytest.raises(AccountStateError, match=r"cards are issued for open accounts only"):
        bank.accounts.issue_card(customer, account.id, ctx)
    assert balance_minor(bank, account) == 10_500

    assert bank.accounts.unfreeze(customer, account.id, ctx).status is AccountStatus.OPEN
    with pytest.raises(AccountStateError, match=r"cannot unfreeze"):
        bank.accounts.unfreeze(customer, account.id, ctx)
    bank.withdraw(account, 10_500)
    assert balance_minor(bank, account) == 0


def test_an_account_closes_only_settled_at_zero(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    card = bank.accounts.issue_card(customer, account.id, ctx)
    bank.deposit(account, 20_000)
    with pytest.raises(AccountStateError, match=r"the balance is 200.00 CNY"):
        bank.accounts.close(customer, account.id, ctx)
    bank.withdraw(account, 20_000)

    # Pending holds keep it open, out or in, whatever the posted balance.
    bank.deposit(account, 100)
    hold_out = transfer(
        account.id, bank_cash_account_id(CNY), 100, CNY, flags=PENDING, timeout_s=60
    )
    assert bank.ledger.create_transfers([hold_out])[0].ok
    with pytest.raises(AccountStateError, match=r"1.00 CNY is pending out"):
        bank.accounts.close(customer, account.id, ctx)
    assert bank.ledger.create_transfers([post(hold_out.id)])[0].ok  # posted: balance zero
    hold_in = transfer(bank_cash_account_id(CNY), account.id, 50, CNY, flags=PENDING, timeout_s=60)
    assert bank.ledger.create_transfers([hold_in])[0].ok
    with pytest.raises(AccountStateError, match=r"0.50 CNY pending in"):
        bank.accounts.close(customer, account.id, ctx)
    assert bank.ledger.create_transfers([void(hold_in.id)])[0].ok

    closed = bank.accounts.close(customer, account.id, ctx)
    assert closed.status is AccountStatus.CLOSED and closed.closed_ts is not None
    assert not closed.is_default
    assert bank.ledger.get_account(account.id).closed_ts is not None
    assert bank.accounts.get_card(customer, card.id).status is CardStatus.CLOSED
    for refused in (
        lambda: bank.accounts.close(customer, account.id, ctx),
        lambda: bank.accounts.freeze(customer, account.id, ctx),
        lambda: bank.accounts.rename(customer, account.id, "again", ctx),
        lambda: bank.deposit(account, 1),
        lambda: bank.withdraw(account, 1),
        lambda: bank.accounts.issue_card(customer, account.id, ctx),
    ):
        with pytest.raises(AccountStateError):
            refused()


def test_closing_the_default_makes_the_oldest_other_account_the_default(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    first, second, third = (bank.open(customer) for _ in range(3))
    bank.accounts.close(customer, first.id, ctx)
    views = {v.id: v for v in bank.accounts.list_accounts(customer)}
    assert views[second.id].is_default and not views[third.id].is_default
    bank.accounts.close(customer, third.id, ctx)  # not the default: the default stays
    assert bank.accounts.get_account(customer, second.id).is_default


def test_a_close_that_failed_after_the_ledger_converges_when_retried(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    real = accounts_store.close_live_cards

    def crash(*args: Any) -> int:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(accounts_store, "close_live_cards", crash)
    with pytest.raises(RuntimeError):
        bank.accounts.close(customer, account.id, ctx)
    assert bank.ledger.get_account(account.id).closed_ts is not None
    assert bank.accounts.get_account(customer, account.id).status is AccountStatus.OPEN
    with pytest.raises(AccountStateError, match=r"closed"):
        bank.deposit(account, 1)  # the ledger refuses: nothing reaches a closed account
    monkeypatch.setattr(accounts_store, "close_live_cards", real)
    assert bank.accounts.close(customer, account.id, ctx).status is AccountStatus.CLOSED


# --- cards ------------------------------------------------------------------------------------


def test_cards_are_valid_encrypted_and_masked(
    bank: Bank, engine: Engine, db_file: Path | None
) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    card = bank.accounts.issue_card(customer, account.id, ctx)
    pan = bank.stored_pan(card.id)
    assert len(pan) == 16 and luhn_valid(pan) and pan.startswith(ISSUER_BIN_DEFAULT)
    assert card.pan_masked == mask_pan(pan) == pan[:6] + "******" + pan[-4:]
    assert is_token(card.token) and not luhn_valid(card.token)
    assert card.status is CardStatus.ACTIVE and card.replaced_by is None
    assert (card.expiry.year, card.expiry.month) == (2035, 6)  # issued 2025-06 for ten years
    assert bank.accounts.list_cards(customer, account.id) == [card]
    assert bank.accounts.customer_cards(customer) == [card]

    with engine.connect() as connection:
        row = connection.execute(select(accounts_cards).where(accounts_cards.c.id == card.id)).one()
        everything = _all_rows_text(connection)
    assert row.last4 == pan[-4:] and row.pii_key_id == bank.keyring.active_key_id
    assert pan.encode() not in bytes(row.pan_enc)
    assert pan not in everything and format_digit_groups(pan) not in everything
    if db_file is not None:  # SQLite: not in the file, its WAL or anything beside it
        for path in db_file.parent.iterdir():
            if path.is_file():
                assert pan.encode() not in path.read_bytes(), path


def _all_rows_text(connection: Any) -> str:
    parts = []
    for table in inspect(connection).get_table_names():
        for row in connection.execute(text(f'SELECT * FROM "{table}"')):
            parts.extend(
                bytes(v).hex() + bytes(v).decode("latin-1")
                if isinstance(v, bytes | memoryview)
                else str(v)
                for v in row
            )
    return " ".join(parts)


@pytest.fixture
def db_file(migrated_db_url: str) -> Path | None:
    if not migrated_db_url.startswith("sqlite:///"):
        return None
    return Path(migrated_db_url.removeprefix("sqlite:///"))


def test_card_freeze_lost_and_reissue(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    card = bank.accounts.issue_card(customer, account.id, ctx)

    with pytest.raises(CardStateError, match=r"only a card reported lost is reissued"):
        bank.accounts.reissue_card(customer, card.id, ctx)
    assert bank.accounts.freeze_card(customer, card.id, ctx).status is CardStatus.FROZEN
    with pytest.raises(CardStateError, match=r"cannot freeze"):
        bank.accounts.freeze_card(customer, card.id, ctx)
    assert bank.accounts.unfreeze_card(customer, card.id, ctx).status is CardStatus.ACTIVE
    bank.accounts.freeze_card(customer, card.id, ctx)
    lost = bank.accounts.report_lost(customer, card.id, ctx)
    assert lost.status is CardStatus.LOST
    with pytest.raises(CardStateError, match=r"stays blocked"):
        bank.accounts.unfreeze_card(customer, card.id, ctx)
    with pytest.raises(CardStateError):
        bank.accounts.report_lost(customer, card.id, ctx)

    new = bank.accounts.reissue_card(customer, card.id, ctx)
    assert new.status is CardStatus.ACTIVE and new.account_id == account.id
    assert new.token != card.token
    assert bank.stored_pan(new.id) != bank.stored_pan(card.id)
    old = bank.accounts.get_card(customer, card.id)
    assert old.status is CardStatus.LOST and old.replaced_by == new.id
    with pytest.raises(CardStateError, match=r"reissued already"):
        bank.accounts.reissue_card(customer, card.id, ctx)
    assert [c.id for c in bank.accounts.customer_cards(customer)] == [card.id, new.id]


def test_cards_per_account_are_limited(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    cards = [
        bank.accounts.issue_card(customer, account.id, ctx)
        for _ in range(CARDS_LIVE_PER_ACCOUNT_MAX)
    ]
    with pytest.raises(QuotaExceededError, match=r"at most 2 active or frozen cards"):
        bank.accounts.issue_card(customer, account.id, ctx)
    current = cards[-1]
    for _ in range(CARDS_PER_ACCOUNT_MAX - CARDS_LIVE_PER_ACCOUNT_MAX):
        bank.accounts.report_lost(customer, current.id, ctx)
        current = bank.accounts.reissue_card(customer, current.id, ctx)
    assert len(bank.accounts.list_cards(customer, account.id)) == CARDS_PER_ACCOUNT_MAX
    bank.accounts.report_lost(customer, current.id, ctx)
    with pytest.raises(QuotaExceededError, match=r"at most 10 cards"):
        bank.accounts.reissue_card(customer, current.id, ctx)
    with pytest.raises(QuotaExceededError):
        bank.accounts.issue_card(customer, account.id, ctx)


def test_a_card_issue_with_a_key_issues_one_card(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account, other = bank.open(customer), bank.open(customer)
    card_id = accounts_service.issuing_id(customer, "card-key-1")
    first = bank.accounts.issue_card(customer, account.id, ctx, card_id=card_id)
    again = bank.accounts.issue_card(customer, account.id, ctx, card_id=card_id)
    assert (again.id, again.pan_masked, again.token) == (first.id, first.pan_masked, first.token)
    assert len(bank.accounts.list_cards(customer, account.id)) == 1
    with pytest.raises(IdempotencyConflictError, match="another account"):
        bank.accounts.issue_card(customer, other.id, ctx, card_id=card_id)
    stranger = bank.customer()
    stranger_account = bank.open(stranger)
    with pytest.raises(IdempotencyConflictError):
        bank.accounts.issue_card(
            stranger, stranger_account.id, customer_ctx(stranger), card_id=card_id
        )
    assert bank.accounts.list_cards(stranger, stranger_account.id) == []


def test_concurrent_card_issues_with_one_key_issue_one_card(bank: Bank) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    card_id = accounts_service.issuing_id(customer, "card-key-race")
    issued: list[uuid.UUID] = []

    def issue() -> None:
        issued.append(bank.accounts.issue_card(customer, account.id, ctx, card_id=card_id).id)

    threads = [threading.Thread(target=issue) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert issued == [card_id] * 4
    assert len(bank.accounts.list_cards(customer, account.id)) == 1


def test_a_card_number_already_taken_is_drawn_again(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = bank.customer()
    ctx = customer_ctx(customer)
    account = bank.open(customer)
    taken, fresh = pan_from_serial(1), pan_from_serial(2)
    draws = iter([taken, taken, fresh])
    monkeypatch.setattr(accounts_service, "random_pan", lambda **_: next(draws))
    first = bank.accounts.issue_card(customer, account.id, ctx)
    second = bank.accounts.issue_card(customer, account.id, ctx)
    assert bank.stored_pan(first.id) == taken
    assert bank.stored_pan(second.id) == fresh


def test_card_numbers_survive_key_rotation(engine: Engine, ledger: LedgerService) -> None:
    entries = ring_entries("k1", "k2")
    old = Bank(engine, ledger, FakeClock(), entries.ring("k1"))
    customer = old.customer()
    account = old.open(customer)
    card = old.accounts.issue_card(customer, account.id, customer_ctx(customer))
    spec = next(s for s in rotation.ENCRYPTED_COLUMNS if s.table.name == "accounts_cards")
    new_ring = entries.ring("k2", "k1")
    report = rotation.rotate(engine, new_ring, [spec])
    assert report.rows_rewritten == {"accounts_cards": 1} and report.done
    rotated = AccountsService(engine, ledger, entries.ring("k2"))
    assert rotated.get_card(customer, card.id) == card


# --- teller cash ------------------------------------------------------------------------------


def test_a_deposit_retried_with_its_key_happens_once(bank: Bank) -> None:
    customer = bank.customer()
    account = bank.open(customer)
    key = new_key()
    ctx = teller_ctx()
    first = bank.accounts.cash_deposit(account.id, 5_000, CNY, key, ctx)
    again = bank.accounts.cash_deposit(account.id, 5_000, CNY, key, teller_ctx())
    assert not first.replayed and again.replayed
    assert again.transfer_id == first.transfer_id == cash_transfer_id(ctx.actor, key)
    assert (again.ts, again.amount, again.kind) == (first.ts, first.amount, CashKind.DEPOSIT)
    assert first.account_number_masked.endswith(account.number[-4:])
    assert balance_minor(bank, account) == 5_000
    cash = bank.ledger.get_account(bank_cash_account_id(CNY))
    assert cash.owner_ref == BANK_CASH_OWNER and cash.flags == 0

    with pytest.raises(IdempotencyConflictError, match=r"already used for a deposit of 50.00"):
        bank.accounts.cash_deposit(account.id, 5_001, CNY, key, teller_ctx())
    with pytest.raises(IdempotencyConflictError):
        bank.accounts.cash_withdrawal(account.id, 5_000, CNY, key, teller_ctx())
    assert balance_minor(bank, account) == 5_000

    # The key is the teller's own: another teller's same key is another deposit.
    bank.accounts.cash_deposit(account.id, 5_000, CNY, key, teller_ctx(uuid.uuid4()))
    assert balance_minor(bank, account) == 10_000


def test_a_withdrawal_beyond_the_balance_changes_nothing(bank: Bank) -> None:
    customer = bank.customer()
    account = bank.open(customer)
    bank.deposit(account, 1_000)
    key = new_key()
    with pytest.raises(InsufficientFundsError, match=r"10.00 CNY available"):
        bank.accounts.cash_withdrawal(account.id, 1_001, CNY, key, teller_ctx())
    assert balance_minor(bank, account) == 1_000
    # The refused key stays refused, and cannot be reused for another amount.
    with pytest.raises(InsufficientFundsError):
        bank.accounts.cash_withdrawal(account.id, 1_001, CNY, key, teller_ctx())
    with pytest.raises(IdempotencyConflictError):
        bank.accounts.cash_withdrawal(account.id, 1_000, CNY, key, teller_ctx())
    receipt = bank.accounts.cash_withdrawal(account.id, 1_000, CNY, new_key(), teller_ctx())
    assert receipt.kind is CashKind.WITHDRAWAL and receipt.amount.format() == "10.00 CNY"
    assert balance_minor(bank, account) == 0


def test_cash_refuses_bad_input_and_changes_nothing(bank: Bank) -> None:
    customer = bank.customer()
    account = bank.open(customer)
    usd = bank.open(customer, currency="USD")
    deposit = bank.accounts.cash_deposit
    for key in ("", "x" * (IDEMPOTENCY_KEY_LENGTH_MAX + 1), "has space", "ключ", "a/b"):
        with pytest.raises(InvalidIdempotencyKeyError):
            deposit(account.id, 100, CNY, key, teller_ctx())
    deposit(account.id, 1, CNY, "k" * IDEMPOTENCY_KEY_LENGTH_MAX, teller_ctx())  # at the limit
    for amount in (0, -1, CASH_AMOUNT_MINOR_MAX + 1):
        with pytest.raises(InvalidCashAmountError):
            deposit(account.id, amount, CNY, new_key(), teller_ctx())
    deposit(account.id, CASH_AMOUNT_MINOR_MAX, CNY, new_key(), teller_ctx())  # at the limit
    with pytest.raises(UnsupportedCurrencyError, match=r"holds CNY, the amount is in USD"):
        deposit(account.id, 100, "USD", new_key(), teller_ctx())
    with pytest.raises(AccountNotFoundError):
        deposit(uuid.uuid4(), 100, CNY, new_key(), teller_ctx())
    wrong_check = account.number[:-1] + str((int(account.number[-1]) + 1) % 10)
    with pytest.raises(InvalidAccountNumberError):
        deposit(wrong_check, 100, CNY, new_key(), teller_ctx())
    assert balance_minor(bank, account) == CASH_AMOUNT_MINOR_MAX + 1
    assert balance_minor(bank, usd) == 0

    # By number, typed in groups, the same account.
    receipt = deposit(format_digit_groups(account.number), 99, CNY, new_key(), teller_ctx())
    assert receipt.account_id == account.id
    assert deposit(usd.number, 250, "USD", new_key(), teller_ctx()).amount.format() == "2.50 USD"
    assert balance_minor(bank, usd) == 250


def test_two_tellers_racing_with_one_key_move_money_once(
    engine: Engine, ledger: LedgerService, bank: Bank
) -> None:
    customer = bank.customer()
    account = bank.open(customer)
    bank.deposit(account, 10_000)
    # Two service instances: two processes, so no in-process lock orders them.
    services = [AccountsService(engine, ledger, bank.keyring) for _ in range(2)]
    for kind in ("deposit", "withdrawal"):
        key = new_key()
        barrier = threading.Barrier(len(services))
        results: list[Any] = []
        errors: list[BaseException] = []

        def run(service: AccountsService, kind: str = kind, key: str = key) -> None:
            barrier.wait()
            try:
                use = service.cash_deposit if kind == "deposit" else service.cash_withdrawal
                results.append(use(account.id, 2_500, CNY, key, teller_ctx()))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in services]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len({r.transfer_id for r in results}) == 1
        assert sorted(r.replayed for r in results) == [False, True]
    assert balance_minor(bank, account) == 10_000


def test_class_iii_deposits_stop_at_the_balance_cap(bank: Bank) -> None:
    customer = bank.customer()
    account = bank.open(customer, account_class="III")
    bank.deposit(account, CLASS_III_BALANCE_MAX_MINOR)  # at the cap
    with pytest.raises(LimitExceededError, match=r"at most 0.00 CNY more can be received"):
        bank.deposit(account, 1)
    bank.withdraw(account, 1)
    bank.deposit(account, 1)
    assert balance_minor(bank, account) == CLASS_III_BALANCE_MAX_MINOR


def test_cash_refusals_are_on_record(bank: Bank, engine: Engine) -> None:
    customer = bank.customer()
    account = bank.open(customer)
    bank.accounts.freeze(customer, account.id, customer_ctx(customer))
    ctx = teller_ctx()
    with pytest.raises(AccountFrozenError):
        bank.accounts.cash_withdrawal(account.id, 1, CNY, new_key(), ctx)
    assert ctx.refusal_recorded
    with engine.connect() as connection:
        rows = connection.execute(
            select(audit_events.c.action, audit_events.c.outcome, audit_events.c.details)
            .where(audit_events.c.target == f"account:{account.id}")
            .order_by(audit_events.c.seq)
        ).all()
    assert [(r.action, r.outcome) for r in rows] == [
        ("accounts.account.open", "ok"),
        ("accounts.account.freeze", "ok"),
        ("accounts.cash.withdrawal", "denied"),
    ]
    assert '"reason":"account_frozen"' in rows[-1].details


def test_the_accounts_tables_hold_no_orphans(bank: Bank, engine: Engine) -> None:
    customer = bank.customer()
    account = bank.open(customer)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            insert(accounts_cards).values(
                id=uuid.uuid4(),
                account_id=uuid.uuid4(),
                token="9" * 19,
                pan_enc=b"x",
                pan_index=b"y" * 32,
                pii_key_id="k1",
                last4="0000",
                expiry_year=2035,
                expiry_month=1,
                status="active",
                created_ts=1,
                updated_ts=1,
            )
        )
    row = row_of(engine, account.id)
    assert row.status == "open" and row.closed_ts is None

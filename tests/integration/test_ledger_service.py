"""The ledger service end to end on SQLite and PostgreSQL: accounts, transfers,
two-phase holds, expiry, reversals, batch limits, bad input and the database's
own guards (immutability triggers, CHECK constraints)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from factories import (
    BANK_CODE,
    CUSTOMER_CODE,
    CUSTOMER_FLAGS,
    TRANSFER_CODE,
    account,
    fund,
    linked,
    new_id,
    open_accounts,
    open_bank,
    pending,
    post,
    transfer,
    void,
)
from sqlalchemy import Engine, Table, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from zhifu.ledger.errors import (
    AccountNotClosableError,
    AccountNotFoundError,
    BatchEmptyError,
    BatchTooLargeError,
)
from zhifu.ledger.model import (
    AMOUNT_MAX,
    BATCH_EVENTS_MAX,
    CODE_MAX,
    EXTERNAL_REF_LENGTH_MAX,
    OWNER_REF_LENGTH_MAX,
    TIMEOUT_S_MAX,
    US_PER_S,
    AccountFlags,
    AccountRequest,
    AccountResult,
    Result,
    TransferFlags,
    expiry_transfer_id,
)
from zhifu.ledger.service import LEDGER_CODE_EXPIRY, LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import (
    ledger_account_history,
    ledger_accounts,
    ledger_batches,
    ledger_blocks,
    ledger_rejections,
    ledger_transfers,
)

START_US = 1_700_000_000_000_000


# --- helpers ------------------------------------------------------------------------------------


def count_rows(engine: Engine, table: Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def account_rows(engine: Engine) -> dict[uuid.UUID, tuple[int, ...]]:
    """Every account's four counters and closed_ts, straight from the table."""
    columns = ledger_accounts.c
    statement = select(
        columns.id,
        columns.debits_pending,
        columns.debits_posted,
        columns.credits_pending,
        columns.credits_posted,
        columns.last_transfer_ts,
    )
    with engine.connect() as connection:
        return {row[0]: tuple(row[1:]) for row in connection.execute(statement)}


def ledger_snapshot(engine: Engine) -> dict[str, Any]:
    """What a rejected batch must leave untouched."""
    return {
        "accounts": account_rows(engine),
        "transfers": count_rows(engine, ledger_transfers),
        "batches": count_rows(engine, ledger_batches),
        "history": count_rows(engine, ledger_account_history),
    }


def counters(ledger: LedgerService, account_id: uuid.UUID) -> tuple[int, int, int, int]:
    return ledger.get_account(account_id).counters()


def results(outcomes: list[Any]) -> list[Result]:
    return [o.result for o in outcomes]


@pytest.fixture
def funded(ledger: LedgerService) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A bank and two customers holding 1000 each."""
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [alice, bob], 1000)
    return bank, alice, bob


# --- accounts -----------------------------------------------------------------------------------


def test_create_account_then_lookup(ledger: LedgerService) -> None:
    request = account("CNY", flags=CUSTOMER_FLAGS | AccountFlags.HISTORY, owner_ref="cust-1")
    (outcome,) = ledger.create_accounts([request])
    assert outcome.result is AccountResult.OK
    assert outcome.id == request.id

    found = ledger.get_account(request.id)
    assert (found.id, found.currency, found.code, found.flags, found.owner_ref) == (
        request.id,
        "CNY",
        CUSTOMER_CODE,
        CUSTOMER_FLAGS | AccountFlags.HISTORY,
        "cust-1",
    )
    assert found.counters() == (0, 0, 0, 0)
    assert found.created_ts > 0
    assert found.closed_ts is None
    assert ledger.lookup_accounts([request.id, new_id()]) == {request.id: found}


def test_create_account_retry_answers_exists(ledger: LedgerService) -> None:
    request = account()
    ledger.create_accounts([request])
    assert results(ledger.create_accounts([request])) == [AccountResult.EXISTS]
    # The same id twice in one batch: the second is a retry of the first.
    twice = account()
    assert results(ledger.create_accounts([twice, twice])) == [
        AccountResult.OK,
        AccountResult.EXISTS,
    ]
    assert count_rows(ledger.engine, ledger_accounts) == 2


ACCOUNT_CHANGES = [
    ({"flags": int(AccountFlags.HISTORY)}, AccountResult.EXISTS_WITH_DIFFERENT_FLAGS),
    ({"currency": "USD"}, AccountResult.EXISTS_WITH_DIFFERENT_CURRENCY),
    ({"code": BANK_CODE}, AccountResult.EXISTS_WITH_DIFFERENT_CODE),
    ({"owner_ref": "someone-else"}, AccountResult.EXISTS_WITH_DIFFERENT_OWNER_REF),
    # Several fields differ: the first in precedence order decides.
    ({"owner_ref": None, "currency": "USD"}, AccountResult.EXISTS_WITH_DIFFERENT_CURRENCY),
]


def test_create_account_retry_with_other_fields(ledger: LedgerService) -> None:
    original = account("CNY", owner_ref="cust-1")
    ledger.create_accounts([original])
    changed = [
        AccountRequest(**{**_account_fields(original), **change}) for change, _ in ACCOUNT_CHANGES
    ]
    assert results(ledger.create_accounts(changed)) == [expected for _, expected in ACCOUNT_CHANGES]
    # The stored account is the original one.
    stored = ledger.get_account(original.id)
    assert (stored.currency, stored.code, stored.flags, stored.owner_ref) == (
        "CNY",
        CUSTOMER_CODE,
        0,
        "cust-1",
    )
    assert count_rows(ledger.engine, ledger_accounts) == 1


def _account_fields(request: AccountRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "currency": request.currency,
        "code": request.code,
        "flags": request.flags,
        "owner_ref": request.owner_ref,
    }


def test_invalid_accounts_are_refused_and_not_written(ledger: LedgerService) -> None:
    cases = [
        (AccountRequest(uuid.UUID(int=0), "CNY", CUSTOMER_CODE), AccountResult.ID_MUST_NOT_BE_ZERO),
        (
            AccountRequest(new_id(), "CNY", CUSTOMER_CODE, 3),
            AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        (AccountRequest(new_id(), "CNY", 0), AccountResult.CODE_MUST_NOT_BE_ZERO),
    ]
    good = account()
    outcomes = ledger.create_accounts([request for request, _ in cases] + [good])
    assert results(outcomes) == [expected for _, expected in cases] + [AccountResult.OK]
    assert count_rows(ledger.engine, ledger_accounts) == 1


@pytest.mark.parametrize("flags", [8, 1 << 20, int(AccountFlags.HISTORY) | 8])
def test_reserved_account_flags_are_refused(ledger: LedgerService, flags: int) -> None:
    bad = AccountRequest(new_id(), "CNY", CUSTOMER_CODE, flags)
    assert results(ledger.create_accounts([bad])) == [AccountResult.RESERVED_FLAG]
    assert count_rows(ledger.engine, ledger_accounts) == 0


def test_account_fields_at_their_limits(ledger: LedgerService) -> None:
    """At each limit the database stores the account; one past, the domain refuses it."""
    cases = [
        (account(code=CODE_MAX), AccountResult.OK),
        (account(code=CODE_MAX + 1), AccountResult.CODE_OUT_OF_RANGE),
        (account(owner_ref="o" * OWNER_REF_LENGTH_MAX), AccountResult.OK),
        (account(owner_ref="o" * (OWNER_REF_LENGTH_MAX + 1)), AccountResult.OWNER_REF_TOO_LONG),
        (account("ABC"), AccountResult.CURRENCY_UNKNOWN),
    ]
    outcomes = ledger.create_accounts([request for request, _ in cases])
    assert results(outcomes) == [expected for _, expected in cases]
    assert count_rows(ledger.engine, ledger_accounts) == 2
    stored = ledger.get_account(cases[2][0].id)
    assert stored.owner_ref == "o" * OWNER_REF_LENGTH_MAX


def test_account_batch_limits(ledger: LedgerService) -> None:
    with pytest.raises(BatchEmptyError):
        ledger.create_accounts([])
    with pytest.raises(BatchTooLargeError):
        ledger.create_accounts([account() for _ in range(BATCH_EVENTS_MAX + 1)])
    assert count_rows(ledger.engine, ledger_accounts) == 0


def test_unknown_account_is_not_found(ledger: LedgerService) -> None:
    with pytest.raises(AccountNotFoundError):
        ledger.get_account(new_id())
    with pytest.raises(AccountNotFoundError):
        ledger.close_account(new_id())


def test_close_account_at_zero_balance(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 300)
    # Money in and all of it out again: zero balance, no holds.
    assert ledger.create_transfers([transfer(alice, bank, 300)])[0].ok

    closed = ledger.close_account(alice)
    assert closed.closed_ts is not None
    assert ledger.get_account(alice).closed_ts == closed.closed_ts
    with pytest.raises(AccountNotClosableError, match="already closed"):
        ledger.close_account(alice)


def test_close_account_refused_with_a_balance(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, _ = funded
    with pytest.raises(AccountNotClosableError, match="non-zero balance"):
        ledger.close_account(alice)
    assert ledger.get_account(alice).closed_ts is None


def test_close_account_refused_with_pending_holds(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    hold = pending(bank, alice, 50)
    assert ledger.create_transfers([hold])[0].ok
    # The credit side holds a pending credit.
    with pytest.raises(AccountNotClosableError, match="pending holds"):
        ledger.close_account(alice)
    assert ledger.create_transfers([void(hold.id)])[0].ok
    assert ledger.close_account(alice).closed_ts is not None


def test_closed_account_refuses_transfers(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [bob], 100)
    ledger.close_account(alice)
    before = ledger_snapshot(ledger.engine)

    outcomes = ledger.create_transfers(
        [transfer(alice, bank, 1), transfer(bob, alice, 1), pending(bob, alice, 1)]
    )
    assert results(outcomes) == [
        Result.DEBIT_ACCOUNT_CLOSED,
        Result.CREDIT_ACCOUNT_CLOSED,
        Result.CREDIT_ACCOUNT_CLOSED,
    ]
    assert ledger_snapshot(ledger.engine) == before


def test_close_account_refused_with_a_pending_debit(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1, flags=0)
    hold = pending(alice, bank, 10)
    assert ledger.create_transfers([hold])[0].ok
    with pytest.raises(AccountNotClosableError, match="pending holds"):
        ledger.close_account(alice)
    assert ledger.create_transfers([void(hold.id)])[0].ok
    ledger.close_account(alice)
    assert results(ledger.create_transfers([post(hold.id)])) == [
        Result.PENDING_TRANSFER_ALREADY_VOIDED
    ]


# --- transfers ----------------------------------------------------------------------------------


def test_transfer_moves_money_and_is_stored(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    bank, alice, bob = funded
    request = transfer(alice, bob, 250, external_ref="invoice-7")
    (outcome,) = ledger.create_transfers([request])
    assert outcome.ok
    assert outcome.ts is not None

    assert counters(ledger, alice) == (0, 250, 0, 1000)
    assert counters(ledger, bob) == (0, 0, 0, 1250)
    assert counters(ledger, bank) == (0, 2000, 0, 0)
    assert ledger.get_account(alice).balance_posted == 750

    stored = ledger.lookup_transfers([request.id])[request.id]
    assert (
        stored.debit_account_id,
        stored.credit_account_id,
        stored.amount,
        stored.currency,
        stored.code,
        stored.flags,
        stored.external_ref,
        stored.ts,
    ) == (alice, bob, 250, "CNY", TRANSFER_CODE, 0, "invoice-7", outcome.ts)
    assert ledger.get_account(alice).last_transfer_ts == outcome.ts


def test_timestamps_increase_per_account(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    first = ledger.create_transfers([transfer(alice, bob, 1) for _ in range(5)])
    second = ledger.create_transfers([transfer(bob, alice, 1) for _ in range(5)])
    stamps = [o.ts for o in first + second]
    assert all(isinstance(ts, int) for ts in stamps)
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_retry_answers_exists_and_changes_nothing(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    request = transfer(alice, bob, 100)
    assert ledger.create_transfers([request])[0].ok
    before = ledger_snapshot(ledger.engine)

    assert results(ledger.create_transfers([request, request])) == [Result.EXISTS, Result.EXISTS]
    assert ledger_snapshot(ledger.engine) == before


def test_retry_with_other_fields(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    bank, alice, bob = funded
    request = transfer(alice, bob, 100)
    assert ledger.create_transfers([request])[0].ok
    before = ledger_snapshot(ledger.engine)
    cases = [
        ({"flags": int(TransferFlags.PENDING)}, Result.EXISTS_WITH_DIFFERENT_FLAGS),
        ({"debit_account_id": bank}, Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        ({"credit_account_id": bank}, Result.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
        ({"amount": 101}, Result.EXISTS_WITH_DIFFERENT_AMOUNT),
        ({"currency": "USD"}, Result.EXISTS_WITH_DIFFERENT_CURRENCY),
        ({"code": TRANSFER_CODE + 1}, Result.EXISTS_WITH_DIFFERENT_CODE),
        ({"reversal_of": new_id()}, Result.EXISTS_WITH_DIFFERENT_REVERSAL_OF),
        ({"external_ref": "other"}, Result.EXISTS_WITH_DIFFERENT_EXTERNAL_REF),
        # Several fields differ: the first in precedence order decides.
        ({"external_ref": "other", "amount": 1}, Result.EXISTS_WITH_DIFFERENT_AMOUNT),
    ]
    retries = [request._replace(**change) for change, _ in cases]
    assert results(ledger.create_transfers(retries)) == [expected for _, expected in cases]
    assert ledger_snapshot(ledger.engine) == before
    assert ledger.lookup_transfers([request.id])[request.id].amount == 100


def test_failed_id_stays_failed_across_calls(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    bob = open_accounts(ledger, 1)[0]
    request = transfer(alice, bob, 500)
    assert results(ledger.create_transfers([request])) == [Result.EXCEEDS_CREDITS]
    assert count_rows(ledger.engine, ledger_rejections) == 1

    # Alice now has the money, but the id already failed on the ledger's state.
    fund(ledger, bank, [alice], 1000)
    before = ledger_snapshot(ledger.engine)
    assert results(ledger.create_transfers([request])) == [Result.EXCEEDS_CREDITS]
    assert results(ledger.create_transfers([request._replace(amount=10)])) == [
        Result.ID_ALREADY_FAILED
    ]
    assert ledger.lookup_transfers([request.id]) == {}
    assert ledger_snapshot(ledger.engine) == before
    # A fresh id goes through.
    assert ledger.create_transfers([request._replace(id=new_id())])[0].ok


def test_failed_id_retry_with_equal_fields_gets_the_same_code(ledger: LedgerService) -> None:
    """A retry equal field by field (flags as a plain int rather than the enum,
    as an API client or another process would send them) is the same retry."""
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [alice], 10)
    request = pending(alice, bob, 500)
    assert results(ledger.create_transfers([request])) == [Result.EXCEEDS_CREDITS]
    retry = request._replace(flags=int(request.flags))
    assert retry == request
    assert results(ledger.create_transfers([retry])) == [Result.EXCEEDS_CREDITS]


def test_validation_failures_are_not_remembered(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    request = transfer(alice, bob, 0)
    assert results(ledger.create_transfers([request])) == [Result.AMOUNT_MUST_NOT_BE_ZERO]
    assert count_rows(ledger.engine, ledger_rejections) == 0
    # The event was invalid on its own; the corrected event with that id goes through.
    assert ledger.create_transfers([request._replace(amount=5)])[0].ok


# --- linked chains ------------------------------------------------------------------------------


def test_linked_chain_commits_together(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    chain = [linked(transfer(alice, bob, 100)), linked(transfer(bob, alice, 30))]
    chain.append(transfer(alice, bob, 10))
    assert all(o.ok for o in ledger.create_transfers(chain))
    assert counters(ledger, alice) == (0, 110, 0, 1030)
    assert len(ledger.lookup_transfers([r.id for r in chain])) == 3


def test_failing_linked_chain_writes_nothing(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    before = ledger_snapshot(ledger.engine)
    hold = linked(pending(alice, bob, 100))
    chain = [
        linked(transfer(alice, bob, 600)),
        hold,
        linked(transfer(bob, alice, 5)),
        transfer(alice, bob, 600),  # 600 + 100 held + 600 > 1000 + 5: fails
    ]
    after_chain = transfer(bob, alice, 7)
    outcomes = ledger.create_transfers([*chain, after_chain])
    assert results(outcomes) == [
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_FAILED,
        Result.EXCEEDS_CREDITS,
        Result.OK,
    ]
    assert ledger.lookup_transfers([r.id for r in chain]) == {}
    # Only the lone transfer after the chain moved money.
    rows = ledger_snapshot(ledger.engine)
    assert rows["transfers"] == before["transfers"] + 1
    assert counters(ledger, alice) == (0, 0, 0, 1007)
    assert counters(ledger, bob) == (0, 7, 0, 1000)
    # The first event of the failed chain was never judged: it can go through now.
    assert ledger.create_transfers([chain[0]._replace(flags=0)])[0].ok


def test_failure_in_the_middle_of_a_chain_fails_the_rest(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    before = ledger_snapshot(ledger.engine)
    chain = [
        linked(transfer(alice, bob, 1)),
        linked(transfer(alice, new_id(), 1)),
        linked(transfer(alice, bob, 1)),
        transfer(alice, bob, 1),
    ]
    assert results(ledger.create_transfers(chain)) == [
        Result.LINKED_EVENT_FAILED,
        Result.CREDIT_ACCOUNT_NOT_FOUND,
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_FAILED,
    ]
    assert ledger_snapshot(ledger.engine) == before


def test_chain_left_open_at_the_end_of_the_batch_fails(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    before = ledger_snapshot(ledger.engine)
    outcomes = ledger.create_transfers(
        [linked(transfer(alice, bob, 1)), linked(transfer(bob, alice, 1))]
    )
    assert results(outcomes) == [Result.LINKED_EVENT_FAILED, Result.LINKED_EVENT_CHAIN_OPEN]
    assert ledger_snapshot(ledger.engine) == before


# --- two-phase ----------------------------------------------------------------------------------


def test_pending_then_post_in_full(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    hold = pending(alice, bob, 400)
    assert ledger.create_transfers([hold])[0].ok
    assert counters(ledger, alice) == (400, 0, 0, 1000)
    assert counters(ledger, bob) == (0, 0, 400, 1000)
    assert ledger.get_account(alice).balance_available == 600

    posting = post(hold.id)
    assert ledger.create_transfers([posting])[0].ok
    assert counters(ledger, alice) == (0, 400, 0, 1000)
    assert counters(ledger, bob) == (0, 0, 0, 1400)
    stored = ledger.lookup_transfers([posting.id])[posting.id]
    assert (stored.debit_account_id, stored.credit_account_id, stored.amount) == (alice, bob, 400)
    assert stored.pending_id == hold.id

    assert results(ledger.create_transfers([post(hold.id), void(hold.id)])) == [
        Result.PENDING_TRANSFER_ALREADY_POSTED,
        Result.PENDING_TRANSFER_ALREADY_POSTED,
    ]


def test_pending_then_partial_post_releases_the_whole_hold(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    hold = pending(alice, bob, 400)
    ledger.create_transfers([hold])
    assert results(ledger.create_transfers([post(hold.id, 401)])) == [
        Result.EXCEEDS_PENDING_TRANSFER_AMOUNT
    ]
    assert ledger.create_transfers([post(hold.id, 150)])[0].ok
    assert counters(ledger, alice) == (0, 150, 0, 1000)
    assert counters(ledger, bob) == (0, 0, 0, 1150)


def test_pending_then_void(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    hold = pending(alice, bob, 400)
    ledger.create_transfers([hold])
    assert results(ledger.create_transfers([void(hold.id)._replace(amount=399)])) == [
        Result.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
    ]
    assert ledger.create_transfers([void(hold.id)])[0].ok
    assert counters(ledger, alice) == (0, 0, 0, 1000)
    assert counters(ledger, bob) == (0, 0, 0, 1000)
    assert results(ledger.create_transfers([post(hold.id), void(hold.id)])) == [
        Result.PENDING_TRANSFER_ALREADY_VOIDED,
        Result.PENDING_TRANSFER_ALREADY_VOIDED,
    ]


def test_hold_reserves_the_balance(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    assert ledger.create_transfers([pending(alice, bob, 800)])[0].ok
    assert results(ledger.create_transfers([transfer(alice, bob, 201)])) == [Result.EXCEEDS_CREDITS]
    assert ledger.create_transfers([transfer(alice, bob, 200)])[0].ok
    assert counters(ledger, alice) == (800, 200, 0, 1000)


def test_resolving_what_is_not_a_hold(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    plain = transfer(alice, bob, 10)
    hold = pending(alice, bob, 10)
    ledger.create_transfers([plain, hold])
    before = ledger_snapshot(ledger.engine)
    outcomes = ledger.create_transfers(
        [
            post(new_id()),
            post(plain.id),
            post(hold.id)._replace(debit_account_id=alice, credit_account_id=alice),
            post(hold.id)._replace(currency="USD"),
            post(hold.id)._replace(id=hold.id),
        ]
    )
    assert results(outcomes) == [
        Result.PENDING_TRANSFER_NOT_FOUND,
        Result.PENDING_TRANSFER_NOT_PENDING,
        Result.ACCOUNTS_MUST_BE_DIFFERENT,
        Result.PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY,
        Result.PENDING_ID_MUST_BE_DIFFERENT,
    ]
    assert ledger_snapshot(ledger.engine) == before


def test_resolution_with_other_accounts(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    bank, alice, bob = funded
    hold = pending(alice, bob, 10)
    ledger.create_transfers([hold])
    outcomes = ledger.create_transfers(
        [
            post(hold.id)._replace(debit_account_id=bank),
            post(hold.id)._replace(credit_account_id=bank),
        ]
    )
    assert results(outcomes) == [
        Result.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
        Result.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,
    ]


def test_post_and_void_in_one_batch(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    hold = pending(alice, bob, 100)
    outcomes = ledger.create_transfers([hold, post(hold.id, 60), void(hold.id)])
    assert results(outcomes) == [Result.OK, Result.OK, Result.PENDING_TRANSFER_ALREADY_POSTED]
    assert counters(ledger, alice) == (0, 60, 0, 1000)


# --- expiry -------------------------------------------------------------------------------------


@pytest.fixture
def clocked(ledger: LedgerService, signer: Ed25519Signer) -> tuple[LedgerService, list[int]]:
    """The ledger on a fake clock the test moves by hand (microseconds)."""
    fake_now = [START_US]
    return LedgerService(ledger.engine, signer, clock=lambda: fake_now[0]), fake_now


def test_expire_pending_voids_holds_whose_timeout_passed(
    clocked: tuple[LedgerService, list[int]],
) -> None:
    ledger, fake_now = clocked
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [alice], 1000)
    short = pending(alice, bob, 100, timeout_s=10)
    long = pending(alice, bob, 200, timeout_s=60)
    forever = pending(alice, bob, 300)
    outcomes = ledger.create_transfers([short, long, forever])
    assert all(o.ok for o in outcomes)
    stored = ledger.lookup_transfers([short.id])[short.id]
    assert stored.expires_ts == outcomes[0].ts + 10 * US_PER_S
    assert counters(ledger, alice) == (600, 0, 0, 1000)

    fake_now[0] += 5 * US_PER_S
    assert ledger.expire_pending() == 0

    fake_now[0] += 6 * US_PER_S  # 11 s: only the short hold has run out
    # Before the sweep, a post that comes too late is already refused.
    assert results(ledger.create_transfers([post(short.id)])) == [Result.PENDING_TRANSFER_EXPIRED]
    assert ledger.expire_pending() == 1
    assert counters(ledger, alice) == (500, 0, 0, 1000)
    assert counters(ledger, bob) == (0, 0, 500, 0)
    expiry = ledger.lookup_transfers([expiry_transfer_id(short.id)])
    (void_of_short,) = expiry.values()
    assert void_of_short.pending_id == short.id
    assert void_of_short.flags == TransferFlags.VOID_PENDING | TransferFlags.EXPIRY
    assert void_of_short.code == LEDGER_CODE_EXPIRY
    assert ledger.expire_pending() == 0  # a second sweep finds nothing

    assert results(ledger.create_transfers([void(short.id), post(long.id)])) == [
        Result.PENDING_TRANSFER_EXPIRED,
        Result.OK,
    ]
    fake_now[0] += 3600 * US_PER_S
    assert ledger.expire_pending() == 0  # the long hold was posted, the last has no timeout
    assert counters(ledger, alice) == (300, 200, 0, 1000)


# --- reversals ----------------------------------------------------------------------------------


def test_reversal_up_to_the_original_amount(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    original = transfer(alice, bob, 100)
    ledger.create_transfers([original])
    first = transfer(bob, alice, 40, reversal_of=original.id)
    second = transfer(bob, alice, 60, reversal_of=original.id)
    too_much = transfer(bob, alice, 1, reversal_of=original.id)
    assert results(ledger.create_transfers([first, second, too_much])) == [
        Result.OK,
        Result.OK,
        Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT,
    ]
    assert counters(ledger, alice) == (0, 100, 0, 1100)
    assert counters(ledger, bob) == (0, 100, 0, 1100)
    assert ledger.lookup_transfers([first.id])[first.id].reversal_of == original.id
    # Across calls too: the reversed amount is read back from the database.
    assert results(ledger.create_transfers([too_much._replace(id=new_id())])) == [
        Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT
    ]


def test_reversal_failures(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    bank, alice, bob = funded
    original = transfer(alice, bob, 100)
    hold = pending(alice, bob, 50)
    ledger.create_transfers([original, hold])
    before = ledger_snapshot(ledger.engine)
    outcomes = ledger.create_transfers(
        [
            transfer(bob, alice, 1, reversal_of=new_id()),
            transfer(bob, alice, 1, reversal_of=hold.id),
            transfer(alice, bob, 1, reversal_of=original.id),
            transfer(bob, bank, 1, reversal_of=original.id),
            pending(bob, alice, 1, reversal_of=original.id),
        ]
    )
    assert results(outcomes) == [
        Result.REVERSAL_TARGET_NOT_FOUND,
        Result.REVERSAL_TARGET_NOT_POSTED,
        Result.REVERSAL_MUST_SWAP_ACCOUNTS,
        Result.REVERSAL_MUST_SWAP_ACCOUNTS,
        Result.REVERSAL_MUST_NOT_BE_TWO_PHASE,
    ]
    assert ledger_snapshot(ledger.engine) == before


def test_reversal_of_a_posted_hold(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    _, alice, bob = funded
    hold = pending(alice, bob, 80)
    posting = post(hold.id, 50)
    ledger.create_transfers([hold, posting])
    outcomes = ledger.create_transfers(
        [
            transfer(bob, alice, 51, reversal_of=posting.id),
            transfer(bob, alice, 50, reversal_of=posting.id),
        ]
    )
    assert results(outcomes) == [Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT, Result.OK]
    assert counters(ledger, alice) == (0, 50, 0, 1050)


# --- batch limits -------------------------------------------------------------------------------


def test_batch_of_exactly_the_maximum_is_accepted(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    outcomes = ledger.create_transfers([transfer(bank, alice, 1) for _ in range(BATCH_EVENTS_MAX)])
    assert len(outcomes) == BATCH_EVENTS_MAX
    assert all(o.ok for o in outcomes)
    assert counters(ledger, alice) == (0, 0, 0, BATCH_EVENTS_MAX)
    assert count_rows(ledger.engine, ledger_transfers) == BATCH_EVENTS_MAX
    assert count_rows(ledger.engine, ledger_batches) == 1


def test_batch_one_past_the_maximum_or_empty_is_refused_whole(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    before = ledger_snapshot(ledger.engine)
    with pytest.raises(BatchEmptyError):
        ledger.create_transfers([])
    with pytest.raises(BatchTooLargeError, match=str(BATCH_EVENTS_MAX)):
        ledger.create_transfers([transfer(bank, alice, 1) for _ in range(BATCH_EVENTS_MAX + 1)])
    assert ledger_snapshot(ledger.engine) == before
    assert count_rows(ledger.engine, ledger_rejections) == 0


# --- bad input at the domain edge ---------------------------------------------------------------


def test_bad_transfers_get_their_code_and_write_nothing(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [alice], 1000)
    (dollars,) = open_accounts(ledger, 1, "USD", flags=0)
    before = ledger_snapshot(ledger.engine)

    cases = [
        (transfer(alice, bob, -5), Result.AMOUNT_MUST_BE_POSITIVE),
        (transfer(alice, bob, 0), Result.AMOUNT_MUST_NOT_BE_ZERO),
        (transfer(alice, bob, None), Result.AMOUNT_MUST_NOT_BE_ZERO),
        (transfer(alice, alice, 5), Result.ACCOUNTS_MUST_BE_DIFFERENT),
        (transfer(alice, dollars, 5), Result.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY),
        (transfer(alice, bob, 5, "USD"), Result.TRANSFER_MUST_HAVE_THE_SAME_CURRENCY_AS_ACCOUNTS),
        (transfer(alice, bob, 5, None), Result.CURRENCY_MUST_NOT_BE_EMPTY),
        (transfer(new_id(), bob, 5), Result.DEBIT_ACCOUNT_NOT_FOUND),
        (transfer(alice, new_id(), 5), Result.CREDIT_ACCOUNT_NOT_FOUND),
        (transfer(None, bob, 5), Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (transfer(alice, uuid.UUID(int=0), 5), Result.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        (transfer(alice, bob, 5, id=uuid.UUID(int=0)), Result.ID_MUST_NOT_BE_ZERO),
        (transfer(alice, bob, 5, code=0), Result.CODE_MUST_NOT_BE_ZERO),
        (transfer(alice, bob, 5, flags=64), Result.RESERVED_FLAG),
        (
            transfer(alice, bob, 5, flags=int(TransferFlags.PENDING | TransferFlags.VOID_PENDING)),
            Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
        ),
        (transfer(alice, bob, 5, pending_id=new_id()), Result.PENDING_ID_MUST_BE_ZERO),
        (transfer(alice, bob, 5, timeout_s=5), Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        # Only the ledger's own expiry sweep may set the expiry flag.
        (void(new_id(), flags=int(TransferFlags.EXPIRY)), Result.RESERVED_FLAG),
        (post(uuid.UUID(int=0)), Result.PENDING_ID_MUST_NOT_BE_ZERO),
        (transfer(alice, bob, 1001), Result.EXCEEDS_CREDITS),
        (transfer(bank, bob, AMOUNT_MAX + 1), Result.OVERFLOWS_DEBITS),
    ]
    outcomes = ledger.create_transfers([request for request, _ in cases])
    assert results(outcomes) == [expected for _, expected in cases]
    assert ledger_snapshot(ledger.engine) == before


def test_transfer_fields_at_their_limits(
    ledger: LedgerService, funded: tuple[uuid.UUID, uuid.UUID, uuid.UUID]
) -> None:
    """At each limit the database stores the transfer; one past, the domain refuses it."""
    _, alice, bob = funded
    longest_hold = pending(alice, bob, 1, timeout_s=TIMEOUT_S_MAX)
    cases = [
        (transfer(alice, bob, 1, code=CODE_MAX), Result.OK),
        (transfer(alice, bob, 1, code=CODE_MAX + 1), Result.CODE_OUT_OF_RANGE),
        (transfer(alice, bob, 1, external_ref="r" * EXTERNAL_REF_LENGTH_MAX), Result.OK),
        (
            transfer(alice, bob, 1, external_ref="r" * (EXTERNAL_REF_LENGTH_MAX + 1)),
            Result.EXTERNAL_REF_TOO_LONG,
        ),
        (longest_hold, Result.OK),
        (pending(alice, bob, 1, timeout_s=TIMEOUT_S_MAX + 1), Result.TIMEOUT_OUT_OF_RANGE),
        (pending(alice, bob, 1, timeout_s=-1), Result.TIMEOUT_OUT_OF_RANGE),
    ]
    outcomes = ledger.create_transfers([request for request, _ in cases])
    assert results(outcomes) == [expected for _, expected in cases]
    stored = ledger.lookup_transfers([longest_hold.id])[longest_hold.id]
    assert stored.timeout_s == TIMEOUT_S_MAX
    assert stored.expires_ts == outcomes[4].ts + TIMEOUT_S_MAX * US_PER_S
    assert count_rows(ledger.engine, ledger_transfers) == 2 + 3  # the funding, then three


def test_amounts_up_to_the_bigint_limit(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1, flags=0)
    assert ledger.create_transfers([transfer(bank, alice, AMOUNT_MAX)])[0].ok
    assert counters(ledger, alice) == (0, 0, 0, AMOUNT_MAX)
    (other,) = open_accounts(ledger, 1, flags=0)
    assert results(ledger.create_transfers([transfer(other, alice, 1)])) == [
        Result.OVERFLOWS_CREDITS
    ]
    assert counters(ledger, alice) == (0, 0, 0, AMOUNT_MAX)


def test_balance_flag_for_loans(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (loan,) = open_accounts(ledger, 1, flags=int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS))
    assert results(ledger.create_transfers([transfer(bank, loan, 1)])) == [Result.EXCEEDS_DEBITS]
    outcomes = ledger.create_transfers([transfer(loan, bank, 100), transfer(bank, loan, 100)])
    assert all(o.ok for o in outcomes)
    assert counters(ledger, loan) == (0, 100, 0, 100)
    assert ledger.get_account(loan).balance_posted == 0


# --- database guards ----------------------------------------------------------------------------


def _fill_immutable_tables(ledger: LedgerService) -> dict[str, uuid.UUID]:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1, flags=CUSTOMER_FLAGS | AccountFlags.HISTORY)
    ok = transfer(bank, alice, 100)
    failed = transfer(alice, bank, 1000)
    assert results(ledger.create_transfers([ok, failed])) == [Result.OK, Result.EXCEEDS_CREDITS]
    assert ledger.seal() == 1
    return {"bank": bank, "alice": alice, "transfer": ok.id, "rejection": failed.id}


IMMUTABLE_CHANGES = [
    update(ledger_transfers).values(amount=1),
    update(ledger_transfers).values(debit_account_id=uuid.UUID(int=7)),
    delete(ledger_transfers),
    update(ledger_rejections).values(result="ok"),
    delete(ledger_rejections),
    update(ledger_account_history).values(credits_posted=0),
    delete(ledger_account_history),
    update(ledger_batches).values(transfer_count=0),
    delete(ledger_batches),
    update(ledger_blocks).values(signature=bytes(64)),
    delete(ledger_blocks),
]


def test_ledger_rows_are_immutable_in_the_database(ledger: LedgerService) -> None:
    _fill_immutable_tables(ledger)
    tables = {statement.table for statement in IMMUTABLE_CHANGES}
    with ledger.engine.connect() as connection:
        rows_before = {table.name: connection.execute(select(table)).all() for table in tables}
    assert all(rows_before.values())

    for statement in IMMUTABLE_CHANGES:
        with pytest.raises(DBAPIError, match="immutable"), ledger.engine.begin() as connection:
            connection.execute(statement)

    with ledger.engine.connect() as connection:
        for table in tables:
            assert connection.execute(select(table)).all() == rows_before[table.name], table.name
    ledger.seal()
    assert ledger.verify().ok


def test_check_constraint_refuses_an_overdraft_written_directly(ledger: LedgerService) -> None:
    ids = _fill_immutable_tables(ledger)
    alice = ids["alice"]
    columns = ledger_accounts.c
    before = ledger_snapshot(ledger.engine)
    overdrafts = [
        update(ledger_accounts).where(columns.id == alice).values(debits_posted=101),
        update(ledger_accounts).where(columns.id == alice).values(debits_pending=101),
        update(ledger_accounts)
        .where(columns.id == alice)
        .values(debits_posted=60, debits_pending=41),
        update(ledger_accounts).where(columns.id == ids["bank"]).values(debits_posted=-1),
    ]
    for statement in overdrafts:
        with pytest.raises(IntegrityError), ledger.engine.begin() as connection:
            connection.execute(statement)
    assert ledger_snapshot(ledger.engine) == before


def test_check_constraint_refuses_a_loan_in_credit(ledger: LedgerService) -> None:
    (loan,) = open_accounts(ledger, 1, flags=int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS))
    with pytest.raises(IntegrityError), ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_accounts).where(ledger_accounts.c.id == loan).values(credits_posted=1)
        )
    assert counters(ledger, loan) == (0, 0, 0, 0)


def test_check_constraints_refuse_bad_transfer_rows(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    row = {
        "id": new_id(),
        "debit_account_id": bank,
        "credit_account_id": alice,
        "amount": 1,
        "currency": "CNY",
        "code": TRANSFER_CODE,
        "flags": 0,
        "timeout_s": 0,
        "ts": 1,
        "batch_id": new_id(),
        "batch_index": 0,
    }
    for bad in ({"amount": 0}, {"amount": -1}, {"credit_account_id": bank}):
        with pytest.raises(IntegrityError), ledger.engine.begin() as connection:
            connection.execute(insert(ledger_transfers).values(**{**row, **bad}))
    with ledger.engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM ledger_transfers")).scalar() == 0


def test_two_services_on_one_database_see_each_others_transfers(
    ledger: LedgerService, signer: Ed25519Signer
) -> None:
    """Whatever a service keeps between batches, another writer's batches are seen."""
    other = LedgerService(ledger.engine, signer)
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 100)
    assert other.create_transfers([transfer(alice, bank, 60)])[0].ok
    # 60 of 100 left with the other service: 50 more would overdraw.
    assert results(ledger.create_transfers([transfer(alice, bank, 50)])) == [Result.EXCEEDS_CREDITS]
    assert ledger.create_transfers([transfer(alice, bank, 40)])[0].ok
    assert results(other.create_transfers([transfer(alice, bank, 1)])) == [Result.EXCEEDS_CREDITS]
    assert counters(ledger, alice) == counters(other, alice) == (0, 100, 0, 100)
    ledger.seal()
    assert ledger.verify().ok

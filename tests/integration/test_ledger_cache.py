"""The embedded (SQLite) account cache and the all-new-ids assumption never change an answer."""

from __future__ import annotations

import uuid

import pytest
from factories import fund, open_accounts, open_bank, transfer
from sqlalchemy import Engine, text

from zhifu.ledger import store as ledger_store
from zhifu.ledger.model import Result
from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer


def _counters(engine: Engine, account_id: uuid.UUID) -> tuple[int, int, int, int]:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT debits_pending, debits_posted, credits_pending, credits_posted"
                " FROM ledger_accounts WHERE id = :id"
            ),
            {"id": account_id.bytes},
        ).one()
    return (row[0], row[1], row[2], row[3])


def test_a_second_service_on_the_same_file_invalidates_the_cache(
    sqlite_engine: Engine, signer: Ed25519Signer
):
    first = LedgerService(sqlite_engine, signer)
    second = LedgerService(sqlite_engine, signer)  # another process, as far as caches go
    bank = open_bank(first)
    (alice,) = open_accounts(first, 1)
    fund(first, bank, [alice], 1_000)
    # `second` spends the money; `first`'s cache still says 1,000 is there.
    assert second.create_transfers([transfer(alice, bank, 1_000)])[0].ok
    outcome = first.create_transfers([transfer(alice, bank, 1)])[0]
    assert outcome.result is Result.EXCEEDS_CREDITS
    assert _counters(sqlite_engine, alice) == (0, 1_000, 0, 1_000)
    assert first.verify().ok


def test_a_row_changed_behind_the_application_is_caught_by_the_write_guard(
    sqlite_engine: Engine, signer: Ed25519Signer
):
    ledger = LedgerService(sqlite_engine, signer)
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 1_000)
    # An edit that does not go through the ledger (and so bumps no generation).
    with sqlite_engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE ledger_accounts SET last_transfer_ts = last_transfer_ts + 1 WHERE id = :id"
            ),
            {"id": alice.bytes},
        )
    # The cached copy is stale: the guard refuses it and the batch is replanned uncached.
    assert ledger.create_transfers([transfer(alice, bank, 400)])[0].ok
    assert _counters(sqlite_engine, alice) == (0, 400, 0, 1_000)


def test_a_failed_batch_leaves_no_trace_in_the_cache(
    sqlite_engine: Engine, signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
):
    ledger = LedgerService(sqlite_engine, signer)
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 1_000)

    def crash(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(ledger_store, "write_plan", crash)
        with pytest.raises(RuntimeError, match="disk on fire"):
            ledger.create_transfers([transfer(alice, bank, 1_000)])
    # Had the planned (never committed) debit stayed cached, this would be refused.
    assert ledger.create_transfers([transfer(alice, bank, 1_000)])[0].ok
    assert _counters(sqlite_engine, alice) == (0, 1_000, 0, 1_000)
    assert ledger.verify().ok


def test_retries_of_stored_ids_answer_exists_despite_the_all_new_assumption(
    sqlite_engine: Engine, signer: Ed25519Signer
):
    ledger = LedgerService(sqlite_engine, signer)
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [alice], 500)
    paid = transfer(alice, bob, 300)
    assert ledger.create_transfers([paid])[0].ok
    # Alone; first in a batch with a new one; and as a failing event that was stored.
    assert ledger.create_transfers([paid])[0].result is Result.EXISTS
    fresh = transfer(alice, bob, 100)
    results = [o.result for o in ledger.create_transfers([fresh, paid])]
    assert results == [Result.OK, Result.EXISTS]
    changed = paid._replace(amount=999)
    assert ledger.create_transfers([changed])[0].result is Result.EXISTS_WITH_DIFFERENT_AMOUNT
    assert _counters(sqlite_engine, alice) == (0, 400, 0, 500)
    assert ledger.verify().ok


def test_closing_an_account_elsewhere_is_seen_by_a_cached_service(
    sqlite_engine: Engine, signer: Ed25519Signer
):
    first = LedgerService(sqlite_engine, signer)
    second = LedgerService(sqlite_engine, signer)
    bank = open_bank(first)
    (alice,) = open_accounts(first, 1)
    fund(first, bank, [alice], 10)
    assert first.create_transfers([transfer(alice, bank, 10)])[0].ok  # alice cached, at zero
    second.close_account(alice)
    outcome = first.create_transfers([transfer(bank, alice, 5)])[0]
    assert outcome.result is Result.CREDIT_ACCOUNT_CLOSED

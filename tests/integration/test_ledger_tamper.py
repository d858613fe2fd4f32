"""``verify()`` catches rows edited behind the application's back.

Each test builds a small sealed ledger, edits the database directly (dropping
the immutability trigger first where one guards the table) and checks that the
right check fails with a problem that names the row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from factories import fund, open_accounts, open_bank, pending, post, transfer
from sqlalchemy import Engine, delete, select, text, update

from zhifu.ledger import journal
from zhifu.ledger.service import LedgerService
from zhifu.ledger.verify import VerifyReport
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import (
    ledger_accounts,
    ledger_batches,
    ledger_blocks,
    ledger_transfers,
    ledger_unsealed_batches,
)

CHECK_NAMES = ("balanced", "counters", "balance_flags", "transfers", "merkle", "chain")


@dataclass
class Sealed:
    """A small ledger whose batches are all chained into signed blocks."""

    bank: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    payment: uuid.UUID  # alice -> bob, in a batch of three transfers
    batches: list[uuid.UUID]  # in block order


def allow_changes(engine: Engine, table: str) -> None:
    """Drop the trigger that makes ``table``'s rows immutable."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"DROP TRIGGER {table}_immutable ON {table}"))
        else:
            connection.execute(text(f"DROP TRIGGER {table}_no_update"))
            connection.execute(text(f"DROP TRIGGER {table}_no_delete"))


def failed_checks(report: VerifyReport) -> dict[str, list[str]]:
    return {c.name: c.problems for c in report.checks if not c.ok}


def problems_of(report: VerifyReport, name: str) -> str:
    (check,) = [c for c in report.checks if c.name == name]
    assert not check.ok, f"{name} passed: {report.as_dict()}"
    assert check.problem_count == len(check.problems) >= 1
    return "\n".join(check.problems)


def block_batches(engine: Engine) -> list[uuid.UUID]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(ledger_blocks.c.batch_id).order_by(ledger_blocks.c.seq)
        ).all()
    return [row[0] for row in rows]


def batch_of(ledger: LedgerService, transfer_id: uuid.UUID) -> uuid.UUID:
    return ledger.lookup_transfers([transfer_id])[transfer_id].batch_id


@pytest.fixture
def sealed(ledger: LedgerService) -> Sealed:
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    fund(ledger, bank, [alice, bob], 1000)
    payment = transfer(alice, bob, 100)
    hold = pending(bob, alice, 50)
    outcomes = ledger.create_transfers([payment, hold, transfer(bob, bank, 10)])
    assert all(o.ok for o in outcomes)
    assert ledger.create_transfers([post(hold.id, 30)])[0].ok
    assert ledger.create_transfers([transfer(bank, alice, 5)])[0].ok
    assert ledger.seal() == 4
    report = ledger.verify()
    assert report.ok, report.as_dict()
    return Sealed(bank, alice, bob, payment.id, block_batches(ledger.engine))


def test_clean_ledger_verifies(ledger: LedgerService, sealed: Sealed) -> None:
    report = ledger.verify()
    assert report.ok
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert all(c.problem_count == 0 and c.problems == [] for c in report.checks)
    assert (report.accounts, report.transfers, report.batches, report.blocks) == (3, 7, 4, 4)
    assert report.unsealed_batches == 0
    assert report.as_dict()["ok"] is True


def test_empty_ledger_verifies(ledger: LedgerService) -> None:
    report = ledger.verify()
    assert report.ok
    assert (report.accounts, report.transfers, report.batches, report.blocks) == (0, 0, 0, 0)


def test_progress_reports_every_transfer(ledger: LedgerService, sealed: Sealed) -> None:
    seen: list[int] = []
    assert ledger.verify(seen.append).ok
    assert sum(seen) == 7


def test_changed_transfer_amount(ledger: LedgerService, sealed: Sealed) -> None:
    allow_changes(ledger.engine, "ledger_transfers")
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_transfers).where(ledger_transfers.c.id == sealed.payment).values(amount=1)
        )
    report = ledger.verify()
    assert not report.ok
    assert set(failed_checks(report)) == {"counters", "merkle"}
    batch = batch_of(ledger, sealed.payment)
    assert str(batch) in problems_of(report, "merkle")
    counters = problems_of(report, "counters")
    assert str(sealed.alice) in counters
    assert str(sealed.bob) in counters
    assert str(sealed.bank) not in counters


def test_changed_account_counters_on_both_sides(ledger: LedgerService, sealed: Sealed) -> None:
    # Debits still equal credits over the ledger: only the counters check can tell.
    columns = ledger_accounts.c
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_accounts)
            .where(columns.id == sealed.bank)
            .values(
                debits_posted=columns.debits_posted + 500,
                credits_posted=columns.credits_posted + 500,
            )
        )
    report = ledger.verify()
    assert set(failed_checks(report)) == {"counters"}
    problems = problems_of(report, "counters")
    assert str(sealed.bank) in problems
    assert str(sealed.alice) not in problems


def test_changed_account_counter_on_one_side(ledger: LedgerService, sealed: Sealed) -> None:
    columns = ledger_accounts.c
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_accounts)
            .where(columns.id == sealed.alice)
            .values(credits_posted=columns.credits_posted + 1)
        )
    report = ledger.verify()
    assert set(failed_checks(report)) == {"counters", "balanced"}
    assert str(sealed.alice) in problems_of(report, "counters")
    assert "CNY" in problems_of(report, "balanced")


def test_changed_pending_counters(ledger: LedgerService, sealed: Sealed) -> None:
    columns = ledger_accounts.c
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_accounts).where(columns.id == sealed.bob).values(debits_pending=7)
        )
    report = ledger.verify()
    assert set(failed_checks(report)) == {"counters", "balanced"}
    assert "pending" in problems_of(report, "balanced")
    assert str(sealed.bob) in problems_of(report, "counters")


def test_deleted_transfer(ledger: LedgerService, sealed: Sealed) -> None:
    batch = batch_of(ledger, sealed.payment)
    allow_changes(ledger.engine, "ledger_transfers")
    with ledger.engine.begin() as connection:
        connection.execute(delete(ledger_transfers).where(ledger_transfers.c.id == sealed.payment))
    report = ledger.verify()
    assert set(failed_checks(report)) == {"counters", "merkle"}
    assert str(batch) in problems_of(report, "merkle")
    assert str(sealed.alice) in problems_of(report, "counters")
    assert report.transfers == 6


def test_deleted_whole_batch_of_transfers(ledger: LedgerService, sealed: Sealed) -> None:
    # The last batch holds a single transfer bank -> alice.
    last = sealed.batches[-1]
    allow_changes(ledger.engine, "ledger_transfers")
    with ledger.engine.begin() as connection:
        connection.execute(delete(ledger_transfers).where(ledger_transfers.c.batch_id == last))
    report = ledger.verify()
    assert {"counters", "merkle"} <= set(failed_checks(report))
    assert f"batch {last} is recorded but has no transfers" in problems_of(report, "merkle")


def test_changed_block_merkle_root(ledger: LedgerService, sealed: Sealed) -> None:
    allow_changes(ledger.engine, "ledger_blocks")
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_blocks).where(ledger_blocks.c.seq == 2).values(merkle_root=bytes(32))
        )
    report = ledger.verify()
    assert set(failed_checks(report)) == {"chain"}
    problems = problems_of(report, "chain")
    assert "block 2: hash or signature does not verify" in problems
    assert f"block 2: does not match its batch {sealed.batches[1]}" in problems
    assert "block 1:" not in problems
    assert "block 3:" not in problems


def test_changed_block_signature(ledger: LedgerService, sealed: Sealed) -> None:
    allow_changes(ledger.engine, "ledger_blocks")
    with ledger.engine.connect() as connection:
        signature = connection.execute(
            select(ledger_blocks.c.signature).where(ledger_blocks.c.seq == 3)
        ).scalar_one()
    forged = bytes([signature[0] ^ 1]) + bytes(signature[1:])
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_blocks).where(ledger_blocks.c.seq == 3).values(signature=forged)
        )
    report = ledger.verify()
    assert set(failed_checks(report)) == {"chain"}
    assert problems_of(report, "chain") == "block 3: hash or signature does not verify"


def test_rehashed_block_without_the_key(ledger: LedgerService, sealed: Sealed) -> None:
    # An attacker who rewrites a block consistently still cannot sign it.
    allow_changes(ledger.engine, "ledger_blocks")
    with ledger.engine.connect() as connection:
        row = connection.execute(select(ledger_blocks).where(ledger_blocks.c.seq == 1)).one()
    digest = journal.block_hash(
        row.seq, row.prev_hash, row.batch_id, bytes(32), row.transfer_count, row.committed_ts
    )
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_blocks)
            .where(ledger_blocks.c.seq == 1)
            .values(merkle_root=bytes(32), block_hash=digest)
        )
    problems = problems_of(ledger.verify(), "chain")
    assert "block 1: hash or signature does not verify" in problems
    assert "block 2: does not point at the previous block's hash" in problems


def test_changed_batch_merkle_root(ledger: LedgerService, sealed: Sealed) -> None:
    batch = sealed.batches[0]
    allow_changes(ledger.engine, "ledger_batches")
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_batches).where(ledger_batches.c.id == batch).values(merkle_root=bytes(32))
        )
    report = ledger.verify()
    assert set(failed_checks(report)) == {"merkle", "chain"}
    assert str(batch) in problems_of(report, "merkle")
    assert f"block 1: does not match its batch {batch}" in problems_of(report, "chain")


def test_deleted_middle_block(ledger: LedgerService, sealed: Sealed) -> None:
    allow_changes(ledger.engine, "ledger_blocks")
    with ledger.engine.begin() as connection:
        connection.execute(delete(ledger_blocks).where(ledger_blocks.c.seq == 2))
    report = ledger.verify()
    assert set(failed_checks(report)) == {"chain"}
    problems = problems_of(report, "chain")
    assert "block 3: expected block 2 (a block is missing)" in problems
    assert "block 3: does not point at the previous block's hash" in problems
    assert f"batch {sealed.batches[1]} is neither in a block nor waiting to be sealed" in problems
    assert report.blocks == 3


def test_deleted_last_block_and_requeued_batch(ledger: LedgerService, sealed: Sealed) -> None:
    # Cutting the head off and queueing its batch again is consistent: the
    # next seal re-chains it (a published head would still give it away).
    allow_changes(ledger.engine, "ledger_blocks")
    with ledger.engine.begin() as connection:
        row = connection.execute(select(ledger_blocks).where(ledger_blocks.c.seq == 4)).one()
        connection.execute(delete(ledger_blocks).where(ledger_blocks.c.seq == 4))
    report = ledger.verify()
    assert f"batch {row.batch_id} is neither in a block" in problems_of(report, "chain")
    with ledger.engine.begin() as connection:
        connection.execute(
            ledger_unsealed_batches.insert().values(
                batch_id=row.batch_id, committed_ts=row.committed_ts
            )
        )
    assert ledger.verify().ok
    assert ledger.seal() == 1
    assert ledger.verify().ok


def test_batch_sealed_and_still_queued(ledger: LedgerService, sealed: Sealed) -> None:
    batch = sealed.batches[0]
    with ledger.engine.connect() as connection:
        committed_ts = connection.execute(
            select(ledger_batches.c.committed_ts).where(ledger_batches.c.id == batch)
        ).scalar_one()
    with ledger.engine.begin() as connection:
        connection.execute(
            ledger_unsealed_batches.insert().values(batch_id=batch, committed_ts=committed_ts)
        )
    problems = problems_of(ledger.verify(), "chain")
    assert f"batch {batch} is sealed and still queued for sealing" in problems


def test_block_signed_by_an_untrusted_key(
    ledger: LedgerService, sealed: Sealed, signer: Ed25519Signer
) -> None:
    assert ledger.create_transfers([transfer(sealed.bank, sealed.bob, 1)])[0].ok
    intruder = Ed25519Signer.generate()
    # Chain the new batch with a key the bank never trusted, outside the service.
    with ledger.engine.begin() as connection:
        assert journal.seal(connection, intruder, ledger.clock(), journal.SEAL_BATCHES_MAX) == 1
    report = ledger.verify()
    assert set(failed_checks(report)) == {"chain"}
    assert problems_of(report, "chain") == (
        f"block 5: signed by key {intruder.key_id}, which is not trusted"
    )
    # Trusting the intruder's key makes the chain whole again.
    trusting = LedgerService(ledger.engine, signer, trusted_keys=[intruder.public_key_bytes])
    assert trusting.verify().ok


def test_edited_transfer_in_an_unsealed_batch(ledger: LedgerService, sealed: Sealed) -> None:
    late = transfer(sealed.bank, sealed.bob, 40)
    assert ledger.create_transfers([late, transfer(sealed.bank, sealed.alice, 2)])[0].ok
    batch = batch_of(ledger, late.id)
    assert ledger.verify().ok
    allow_changes(ledger.engine, "ledger_transfers")
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_transfers)
            .where(ledger_transfers.c.id == late.id)
            .values(credit_account_id=sealed.alice)
        )
    report = ledger.verify()
    assert report.unsealed_batches == 1
    assert "chain" not in failed_checks(report)
    assert "merkle" in failed_checks(report)
    assert str(batch) in problems_of(report, "merkle")


def test_edited_transfer_currency(ledger: LedgerService, sealed: Sealed) -> None:
    allow_changes(ledger.engine, "ledger_transfers")
    with ledger.engine.begin() as connection:
        connection.execute(
            update(ledger_transfers)
            .where(ledger_transfers.c.id == sealed.payment)
            .values(currency="USD")
        )
    report = ledger.verify()
    assert {"transfers", "merkle"} <= set(failed_checks(report))
    assert f"transfer {sealed.payment} is in USD" in problems_of(report, "transfers")


def test_rotated_key_verifies_only_when_trusted(ledger: LedgerService) -> None:
    old_signer = Ed25519Signer.generate()
    new_signer = Ed25519Signer.generate()
    old = LedgerService(ledger.engine, old_signer)
    bank = open_bank(old)
    (alice,) = open_accounts(old, 1)
    fund(old, bank, [alice], 100)
    assert old.seal() == 1

    # After rotation the new key signs new blocks; the old blocks keep the old key.
    rotated = LedgerService(ledger.engine, new_signer, trusted_keys=[old_signer.public_key_bytes])
    fund(rotated, bank, [alice], 50)
    assert rotated.seal() == 1
    head = rotated.block_head()
    assert head is not None and head.key_id == new_signer.key_id
    assert rotated.verify().ok

    forgetful = LedgerService(ledger.engine, new_signer)
    report = forgetful.verify()
    assert set(failed_checks(report)) == {"chain"}
    assert problems_of(report, "chain") == (
        f"block 1: signed by key {old_signer.key_id}, which is not trusted"
    )
    # Trusting only the old key: the new block is the untrusted one.
    old_only = LedgerService(ledger.engine, old_signer)
    assert problems_of(old_only.verify(), "chain") == (
        f"block 2: signed by key {new_signer.key_id}, which is not trusted"
    )


def test_trusted_key_must_be_the_signing_key(ledger: LedgerService) -> None:
    # A block whose key id is trusted but whose signature is another key's fails.
    signer = Ed25519Signer.generate()
    other = Ed25519Signer.generate()
    service = LedgerService(ledger.engine, signer)
    bank = open_bank(service)
    (alice,) = open_accounts(service, 1)
    fund(service, bank, [alice], 1)
    service.seal()
    allow_changes(ledger.engine, "ledger_blocks")
    with ledger.engine.connect() as connection:
        digest = connection.execute(select(ledger_blocks.c.block_hash)).scalar_one()
    with ledger.engine.begin() as connection:
        connection.execute(update(ledger_blocks).values(signature=other.sign(bytes(digest))))
    assert problems_of(service.verify(), "chain") == "block 1: hash or signature does not verify"

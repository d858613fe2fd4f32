"""Read-side queries on SQLite and PostgreSQL: pages of an account's transfers,
statements with running balances, balances as of a time, inclusion proofs and
the block head."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

import pytest
from factories import fund, new_id, open_accounts, open_bank, pending, post, transfer, void

from zhifu.ledger import journal
from zhifu.ledger.errors import (
    AccountNotFoundError,
    InvalidCursorError,
    JournalNotSealedError,
    TransferNotFoundError,
)
from zhifu.ledger.model import US_PER_S, AccountFlags, Transfer, TransferFlags, TransferRequest
from zhifu.ledger.queries import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, TransferQuery
from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer

START_US = 1_750_000_000_000_000
STEP_US = 1_000
CUSTOMER = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
LOAN = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
HISTORY = int(AccountFlags.HISTORY)


@pytest.fixture
def fake_now() -> list[int]:
    return [START_US]


@pytest.fixture
def clocked(ledger: LedgerService, signer: Ed25519Signer, fake_now: list[int]) -> LedgerService:
    """The ledger on a clock the test moves by hand (microseconds)."""
    return LedgerService(ledger.engine, signer, clock=lambda: fake_now[0])


# --- pages of transfers -------------------------------------------------------------------------


@dataclass
class Busy:
    account: uuid.UUID
    ids: list[uuid.UUID]  # every transfer touching the account, oldest first
    stamps: list[int]


@pytest.fixture
def busy(ledger: LedgerService) -> Busy:
    """An account with PAGE_SIZE_MAX + 1 transfers, on both sides, over two batches."""
    bank = open_bank(ledger)
    alice, bob = open_accounts(ledger, 2)
    incoming = [transfer(bank, alice, 10) for _ in range(PAGE_SIZE_MAX - 200)]
    outgoing = [transfer(alice, bob, 1) for _ in range(200)] + [transfer(bob, alice, 1)]
    # Transfers between other accounts must not show up.
    noise = [transfer(bank, bob, 5) for _ in range(20)]
    ids, stamps = [], []
    for batch in (incoming, noise + outgoing):
        outcomes = ledger.create_transfers(batch)
        assert all(o.ok for o in outcomes)
        for request, outcome in zip(batch, outcomes, strict=True):
            if alice in (request.debit_account_id, request.credit_account_id):
                ids.append(request.id)
                assert outcome.ts is not None
                stamps.append(outcome.ts)
    assert len(ids) == PAGE_SIZE_MAX + 1
    return Busy(alice, ids, stamps)


def walk(ledger: LedgerService, query: TransferQuery) -> list[list[uuid.UUID]]:
    pages = []
    while True:
        page = ledger.account_transfers(query)
        pages.append([t.id for t in page.transfers])
        if page.next_cursor is None:
            return pages
        query = TransferQuery(
            query.account_id, query.from_ts, query.to_ts, page.next_cursor, query.limit
        )


def test_page_size_limits(ledger: LedgerService, busy: Busy) -> None:
    page = ledger.account_transfers(TransferQuery(busy.account, limit=PAGE_SIZE_MAX))
    assert [t.id for t in page.transfers] == busy.ids[:PAGE_SIZE_MAX]
    assert page.next_cursor is not None
    last = ledger.account_transfers(
        TransferQuery(busy.account, cursor=page.next_cursor, limit=PAGE_SIZE_MAX)
    )
    assert [t.id for t in last.transfers] == busy.ids[PAGE_SIZE_MAX:]
    assert last.next_cursor is None
    default = ledger.account_transfers(TransferQuery(busy.account))
    assert [t.id for t in default.transfers] == busy.ids[:PAGE_SIZE_DEFAULT]
    # One past the limit (or below 1) is refused, for pages and statements alike.
    for limit in (0, -1, PAGE_SIZE_MAX + 1):
        with pytest.raises(ValueError, match=str(PAGE_SIZE_MAX)):
            ledger.account_transfers(TransferQuery(busy.account, limit=limit))
        with pytest.raises(ValueError, match=str(PAGE_SIZE_MAX)):
            ledger.statement(TransferQuery(busy.account, limit=limit))


def test_cursor_walks_every_page_once(ledger: LedgerService, busy: Busy) -> None:
    for limit in (7, 250, PAGE_SIZE_MAX):
        pages = walk(ledger, TransferQuery(busy.account, limit=limit))
        assert all(len(page) == limit for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= limit
        walked = [transfer_id for page in pages for transfer_id in page]
        assert walked == busy.ids, limit
        assert len(set(walked)) == len(walked)


def test_last_full_page_has_no_cursor(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice] * 20, 1)
    pages = walk(ledger, TransferQuery(alice, limit=10))
    assert [len(page) for page in pages] == [10, 10]


def test_bounds_are_from_inclusive_to_exclusive(ledger: LedgerService, busy: Busy) -> None:
    low, high = busy.stamps[300], busy.stamps[700]
    pages = walk(ledger, TransferQuery(busy.account, from_ts=low, to_ts=high, limit=150))
    assert [i for page in pages for i in page] == busy.ids[300:700]
    empty = ledger.account_transfers(TransferQuery(busy.account, from_ts=low, to_ts=low))
    assert empty.transfers == []
    assert empty.next_cursor is None
    after = ledger.account_transfers(TransferQuery(busy.account, from_ts=busy.stamps[-1] + 1))
    assert after.transfers == []


def test_transfers_come_back_whole(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    request = transfer(bank, alice, 42, external_ref="ref-1")
    ledger.create_transfers([request])
    (stored,) = ledger.account_transfers(TransferQuery(alice)).transfers
    assert stored == ledger.lookup_transfers([request.id])[request.id]
    assert (stored.id, stored.amount, stored.external_ref) == (request.id, 42, "ref-1")


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


INVALID_CURSORS = [
    "not a cursor!",
    "%%%%",
    _cursor(b"ts:"),
    _cursor(b"ts:abc"),
    _cursor(b"ts:-5"),
    _cursor(b"ts:" + str(2**63).encode()),
    _cursor(b"id:12"),
    _cursor(b"ts:\xff\xfe"),
]


def test_invalid_cursor(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    for cursor in INVALID_CURSORS:
        with pytest.raises(InvalidCursorError):
            ledger.account_transfers(TransferQuery(bank, cursor=cursor))
        with pytest.raises(InvalidCursorError):
            ledger.statement(TransferQuery(bank, cursor=cursor))


def test_unknown_account(ledger: LedgerService) -> None:
    missing = new_id()
    with pytest.raises(AccountNotFoundError):
        ledger.account_transfers(TransferQuery(missing))
    with pytest.raises(AccountNotFoundError):
        ledger.statement(TransferQuery(missing))
    with pytest.raises(AccountNotFoundError):
        ledger.balance_as_of(missing, START_US)


# --- statements and balances as of a time -------------------------------------------------------


Batch = tuple[TransferRequest, ...] | None  # None: advance the clock and run the expiry sweep


def script(account: uuid.UUID, bank: uuid.UUID, flags: int) -> list[Batch]:
    """A history for ``account``: in, out, holds posted in part, voided, expired.

    "In" raises the account's balance on its normal side: a credit for a
    customer (credit-normal), a debit for a loan (debit-normal).
    """
    loan = bool(flags & LOAN)

    def money_in(amount: int) -> TransferRequest:
        return transfer(account, bank, amount) if loan else transfer(bank, account, amount)

    def money_out(amount: int) -> TransferRequest:
        return transfer(bank, account, amount) if loan else transfer(account, bank, amount)

    def hold_out(amount: int, timeout_s: int = 0) -> TransferRequest:
        debit, credit = (bank, account) if loan else (account, bank)
        return pending(debit, credit, amount, timeout_s=timeout_s)

    held = hold_out(200)
    voided = hold_out(100)
    expiring = hold_out(70, timeout_s=1)
    return [
        (money_in(1000),),  # 0
        (money_out(300),),  # 1
        (held,),  # 2
        (post(held.id, 150),),  # 3
        (voided,),  # 4
        (money_in(50), void(voided.id)),  # 5, 6: two transfers in one batch
        (expiring,),  # 7
        None,  # 8: the expiry sweep voids the hold
        (money_out(25),),  # 9
    ]


def _apply(counters: list[int], account: uuid.UUID, t: Transfer, hold: Transfer | None) -> None:
    """One transfer's effect on the account's counters (dp, dpo, cp, cpo)."""
    offset = 0 if t.debit_account_id == account else 2
    if t.flags & TransferFlags.PENDING:
        counters[offset] += t.amount
        return
    if hold is not None:
        counters[offset] -= hold.amount
        if not t.flags & TransferFlags.POST_PENDING:
            return
    counters[offset + 1] += t.amount


def expected_lines(
    account: uuid.UUID, flags: int, ledger: LedgerService, ids: list[uuid.UUID]
) -> list[tuple[str, int, int]]:
    """(side, posted change, pending change) per transfer, from the stored transfers."""
    sign = -1 if flags & LOAN else 1
    stored = ledger.lookup_transfers(ids)
    lines = []
    for transfer_id in ids:
        t = stored[transfer_id]
        side = "debit" if t.debit_account_id == account else "credit"
        direction = -sign if side == "debit" else sign
        if t.flags & TransferFlags.PENDING:
            lines.append((side, 0, t.amount))
        elif t.pending_id is not None:
            hold = stored[t.pending_id]
            posted = t.amount * direction if t.flags & TransferFlags.POST_PENDING else 0
            lines.append((side, posted, -hold.amount))
        else:
            lines.append((side, t.amount * direction, 0))
    return lines


@dataclass
class History:
    account: uuid.UUID
    flags: int
    ids: list[uuid.UUID]  # the account's transfers, oldest first
    stamps: list[int]
    counters_after: list[tuple[int, int, int, int]]  # after each transfer
    balance_after: list[int]


@pytest.fixture(
    params=[CUSTOMER, CUSTOMER | HISTORY, LOAN, LOAN | HISTORY],
    ids=["customer", "customer-history", "loan", "loan-history"],
)
def history(request: pytest.FixtureRequest, clocked: LedgerService, fake_now: list[int]) -> History:
    """Run the script; the counters after each transfer are worked out from the
    transfers themselves and checked against the account after each batch."""
    flags: int = request.param
    bank = open_bank(clocked)
    (account,) = open_accounts(clocked, 1, flags=flags)
    result = History(account, flags, [], [], [], [])
    counters = [0, 0, 0, 0]
    for batch in script(account, bank, flags):
        fake_now[0] += STEP_US
        if batch is None:
            fake_now[0] += 2 * US_PER_S
            assert clocked.expire_pending() == 1
            page = clocked.account_transfers(TransferQuery(account, from_ts=result.stamps[-1] + 1))
            new_ids = [t.id for t in page.transfers]
            assert len(new_ids) == 1
        else:
            outcomes = clocked.create_transfers(list(batch))
            assert all(o.ok for o in outcomes), outcomes
            new_ids = [o.id for o in outcomes]
        stored = clocked.lookup_transfers(new_ids)
        for transfer_id in new_ids:
            t = stored[transfer_id]
            hold = None
            if t.pending_id is not None:
                hold = clocked.lookup_transfers([t.pending_id])[t.pending_id]
            _apply(counters, account, t, hold)
            result.ids.append(t.id)
            result.stamps.append(t.ts)
            result.counters_after.append((counters[0], counters[1], counters[2], counters[3]))
            loan = flags & LOAN
            result.balance_after.append(
                counters[1] - counters[3] if loan else counters[3] - counters[1]
            )
        current = clocked.get_account(account)
        assert tuple(counters) == current.counters()
        assert result.balance_after[-1] == current.balance_posted
    return result


def test_statement_running_balances(clocked: LedgerService, history: History) -> None:
    statement = clocked.statement(TransferQuery(history.account, limit=PAGE_SIZE_MAX))
    assert statement.next_cursor is None
    assert statement.opening_balance_posted == 0
    assert statement.account.id == history.account
    assert [line.transfer.id for line in statement.lines] == history.ids
    assert [(line.side, line.posted_change, line.pending_change) for line in statement.lines] == (
        expected_lines(history.account, history.flags, clocked, history.ids)
    )
    assert [line.balance_posted_after for line in statement.lines] == history.balance_after
    # The balance runs from the opening balance by the posted changes.
    running = statement.opening_balance_posted
    for line in statement.lines:
        running += line.posted_change
        assert line.balance_posted_after == running
    final = clocked.get_account(history.account)
    assert running == final.balance_posted == 1000 - 300 - 150 + 50 - 25
    pending_total = sum(line.pending_change for line in statement.lines)
    assert pending_total == 0 == final.debits_pending + final.credits_pending


def test_statement_across_pages_and_within_bounds(clocked: LedgerService, history: History) -> None:
    query = TransferQuery(history.account, limit=3)
    openings, balances, walked = [], [], []
    while True:
        statement = clocked.statement(query)
        openings.append(statement.opening_balance_posted)
        balances.extend(line.balance_posted_after for line in statement.lines)
        walked.extend(line.transfer.id for line in statement.lines)
        if statement.next_cursor is None:
            break
        query = TransferQuery(history.account, cursor=statement.next_cursor, limit=3)
    assert walked == history.ids
    assert balances == history.balance_after
    # Each page opens with the balance the previous page closed on.
    assert openings == [0] + [history.balance_after[i - 1] for i in range(3, len(walked), 3)]

    # Within bounds: the statement opens with the balance just before the range.
    low, high = history.stamps[2], history.stamps[6]
    statement = clocked.statement(TransferQuery(history.account, from_ts=low, to_ts=high))
    assert [line.transfer.id for line in statement.lines] == history.ids[2:6]
    assert statement.opening_balance_posted == history.balance_after[1]
    assert [line.balance_posted_after for line in statement.lines] == history.balance_after[2:6]
    # An empty range opens (and closes) with the balance at its start.
    after = clocked.statement(TransferQuery(history.account, from_ts=history.stamps[-1] + 1))
    assert after.lines == []
    assert after.opening_balance_posted == history.balance_after[-1]
    before = clocked.statement(TransferQuery(history.account, to_ts=history.stamps[0]))
    assert before.lines == []
    assert before.opening_balance_posted == 0


def test_balance_as_of_between_transfers_and_holds(
    clocked: LedgerService, history: History
) -> None:
    assert history.counters_after[0] != (0, 0, 0, 0)
    first = clocked.balance_as_of(history.account, history.stamps[0] - 1)
    assert (first.debits_pending, first.debits_posted) == (0, 0)
    assert (first.credits_pending, first.credits_posted, first.balance_posted) == (0, 0, 0)
    for index, ts in enumerate(history.stamps):
        expected = history.counters_after[index]
        following = _next_or_far(history.stamps, index)
        for moment in (ts, (ts + following - 1) // 2, following - 1):
            balance = clocked.balance_as_of(history.account, moment)
            assert balance.as_of_ts == moment
            assert balance.account_id == history.account
            assert balance.currency == "CNY"
            assert (
                balance.debits_pending,
                balance.debits_posted,
                balance.credits_pending,
                balance.credits_posted,
            ) == expected, (index, moment)
            assert balance.balance_posted == history.balance_after[index]

    # Transfers 2-3: a hold of 200, then 150 of it posted; 4 and 6: a hold of 100, then
    # voided; 7-8: a hold of 70 with a timeout, then expired by the sweep.
    loan = bool(history.flags & LOAN)
    pending_index = 2 if loan else 0  # credits_pending for a loan, debits_pending otherwise
    posted_index = 3 if loan else 1
    held = history.counters_after[2]
    posted = history.counters_after[3]
    assert held[pending_index] == 200
    assert posted[pending_index] == 0
    assert posted[posted_index] - held[posted_index] == 150
    voided_hold = history.counters_after[4]
    assert voided_hold[pending_index] == 100
    assert history.counters_after[6][pending_index] == 0
    expiring = history.counters_after[7]
    expired = history.counters_after[8]
    assert (expiring[pending_index], expired[pending_index]) == (70, 0)


def _next_or_far(stamps: list[int], index: int) -> int:
    return stamps[index + 1] if index + 1 < len(stamps) else stamps[index] + 10 * STEP_US


# --- the journal: inclusion proofs and the block head -------------------------------------------


def test_inclusion_proofs_verify(ledger: LedgerService, signer: Ed25519Signer) -> None:
    bank = open_bank(ledger)
    accounts = open_accounts(ledger, 8)
    batches = []
    for size in (1, 2, 3, 5, 8):
        batch = [transfer(bank, accounts[i], 10 + i) for i in range(size)]
        assert all(o.ok for o in ledger.create_transfers(batch))
        batches.append(batch)
    assert ledger.seal() == len(batches)

    other_key = Ed25519Signer.generate().public_key_bytes
    for batch in batches:
        for index, request in enumerate(batch):
            proof = ledger.inclusion_proof(request.id)
            stored = ledger.lookup_transfers([request.id])[request.id]
            assert proof.transfer_id == request.id
            assert (proof.leaf_index, proof.tree_size) == (index, len(batch))
            assert proof.block.batch_id == stored.batch_id
            assert proof.block.transfer_count == len(batch)
            assert journal.verify_proof(proof, stored.leaf_bytes(), signer.public_key_bytes)
            assert journal.verify_proof(proof, None, signer.public_key_bytes)
            tampered = stored._replace(amount=stored.amount + 1)
            assert not journal.verify_proof(proof, tampered.leaf_bytes(), signer.public_key_bytes)
            assert not journal.verify_proof(proof, stored.leaf_bytes(), other_key)


def test_inclusion_proof_of_a_two_phase_transfer(
    ledger: LedgerService, signer: Ed25519Signer
) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 100)
    hold = pending(alice, bank, 60, timeout_s=3600, external_ref="order-1")
    ledger.create_transfers([hold])
    resolve = void(hold.id)
    ledger.create_transfers([resolve])
    ledger.seal()
    for transfer_id in (hold.id, resolve.id):
        stored = ledger.lookup_transfers([transfer_id])[transfer_id]
        proof = ledger.inclusion_proof(transfer_id)
        assert journal.verify_proof(proof, stored.leaf_bytes(), signer.public_key_bytes)
        forged = stored._replace(external_ref="order-2")
        assert not journal.verify_proof(proof, forged.leaf_bytes(), signer.public_key_bytes)


def test_proof_needs_a_sealed_batch(ledger: LedgerService, signer: Ed25519Signer) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    request = transfer(bank, alice, 5)
    ledger.create_transfers([request])
    with pytest.raises(JournalNotSealedError):
        ledger.inclusion_proof(request.id)
    with pytest.raises(TransferNotFoundError):
        ledger.inclusion_proof(new_id())
    ledger.seal()
    proof = ledger.inclusion_proof(request.id)
    stored = ledger.lookup_transfers([request.id])[request.id]
    assert journal.verify_proof(proof, stored.leaf_bytes(), signer.public_key_bytes)


def test_block_head(ledger: LedgerService, signer: Ed25519Signer) -> None:
    assert ledger.block_head() is None
    assert ledger.seal() == 0
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 1)
    fund(ledger, bank, [alice, alice], 1)
    assert ledger.block_head() is None  # committed, not sealed yet
    assert ledger.seal() == 2
    head = ledger.block_head()
    assert head is not None
    assert head.seq == 2
    assert head.transfer_count == 2
    assert head.key_id == signer.key_id
    assert journal.verify_block(head, signer.public_key_bytes)

    request = transfer(bank, alice, 3)
    ledger.create_transfers([request])
    assert ledger.seal() == 1
    assert ledger.seal() == 0
    new_head = ledger.block_head()
    assert new_head is not None
    assert new_head.seq == 3
    assert new_head.prev_hash == head.block_hash
    assert new_head.batch_id == ledger.lookup_transfers([request.id])[request.id].batch_id
    assert journal.verify_block(new_head, signer.public_key_bytes)
    assert ledger.inclusion_proof(request.id).block == new_head


def test_seal_limit(ledger: LedgerService) -> None:
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    for _ in range(5):
        fund(ledger, bank, [alice], 1)
    assert ledger.seal(limit=2) == 2
    assert ledger.verify().unsealed_batches == 3
    assert ledger.seal(limit=2) == 2
    assert ledger.seal(limit=2) == 1
    head = ledger.block_head()
    assert head is not None and head.seq == 5
    assert ledger.verify().ok

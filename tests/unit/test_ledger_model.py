"""The ledger's pure planning rules (zhifu.ledger.model.plan_batch), no database.

Each test builds a :class:`BatchState` in memory, plans one batch (or a few in
a row: the planner mutates the state into the state after the batch, which is
what the store would load for the next one) and looks at the outcomes and the
writes the plan asks for.

The standard book: ``bank`` (no balance flag, the source of the money),
``alice`` (a deposit account holding 1,000 minor units) and ``bob`` (an empty
deposit account), all in CNY.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from factories import (
    CUSTOMER_CODE,
    DEPOSIT,
    EXPIRY,
    HISTORY,
    LINKED,
    LOAN,
    PENDING,
    POST,
    TRANSFER_CODE,
    VOID,
    linked,
    new_id,
    pending,
    post,
    transfer,
    void,
)

from zhifu.ledger import merkle
from zhifu.ledger.model import (
    AMOUNT_MAX,
    CODE_MAX,
    EXTERNAL_REF_LENGTH_MAX,
    NIL_ID,
    OWNER_REF_LENGTH_MAX,
    STATE_RESULTS,
    TIMEOUT_S_MAX,
    US_PER_S,
    Account,
    AccountRequest,
    AccountResult,
    BatchPlan,
    BatchState,
    Rejection,
    Resolution,
    Result,
    Transfer,
    TransferRequest,
    encode_leaf,
    expiry_transfer_id,
    fingerprint,
    plan_batch,
    validate_account,
)

NOW = 1_700_000_000_000_000  # µs
BATCH_ID = uuid.UUID("0193a000-0000-7000-8000-00000000000b")
EARLIER_BATCH_ID = uuid.UUID("0193a000-0000-7000-8000-00000000000a")
ALICE_FUNDS = 1_000


# --- building state ------------------------------------------------------------


def make_account(flags: int = 0, *, currency: str = "CNY", **fields: Any) -> Account:
    return Account(
        id=new_id(), currency=currency, code=CUSTOMER_CODE, flags=flags, owner_ref=None, **fields
    )


def make_state(*accounts: Account, transfers: tuple[Transfer, ...] = ()) -> BatchState:
    return BatchState(
        accounts={a.id: a for a in accounts},
        transfers={t.id: t for t in transfers},
        rejections={},
        resolutions={},
        reversed_amounts={},
    )


@dataclass
class Book:
    state: BatchState
    bank: Account
    alice: Account
    bob: Account

    def add(self, account: Account) -> Account:
        self.state.accounts[account.id] = account
        return account


def make_book(*, alice_flags: int = DEPOSIT, bob_flags: int = DEPOSIT) -> Book:
    """bank → alice 1,000 already posted; bob empty."""
    bank = make_account(debits_posted=ALICE_FUNDS)
    alice = make_account(alice_flags, credits_posted=ALICE_FUNDS)
    bob = make_account(bob_flags)
    return Book(make_state(bank, alice, bob), bank, alice, bob)


def committed(request: TransferRequest, *, ts: int = NOW - 1_000, **fields: Any) -> Transfer:
    """A transfer as the store would load it from an earlier batch."""
    values: dict[str, Any] = {
        "id": request.id,
        "debit_account_id": request.debit_account_id,
        "credit_account_id": request.credit_account_id,
        "amount": request.amount,
        "currency": request.currency,
        "code": request.code,
        "flags": int(request.flags),
        "pending_id": request.pending_id,
        "reversal_of": request.reversal_of,
        "external_ref": request.external_ref,
        "timeout_s": request.timeout_s,
        "expires_ts": None,
        "ts": ts,
        "batch_id": EARLIER_BATCH_ID,
        "batch_index": 0,
    }
    values.update(fields)
    return Transfer(**values)


def plan(
    state: BatchState,
    *requests: TransferRequest,
    now_ts: int = NOW,
    chain_breaks: frozenset[int] = frozenset(),
    system: bool = False,
) -> BatchPlan:
    return plan_batch(
        list(requests),
        state,
        batch_id=BATCH_ID,
        now_ts=now_ts,
        chain_breaks=chain_breaks,
        system=system,
    )


def results(batch: BatchPlan) -> list[Result]:
    return [o.result for o in batch.outcomes]


def result_of(state: BatchState, request: TransferRequest, **options: Any) -> Result:
    (outcome,) = plan(state, request, **options).outcomes
    return outcome.result


def seed(state: BatchState, *requests: TransferRequest, now_ts: int = NOW - 10_000) -> BatchPlan:
    """An earlier batch that must succeed: sets up holds, originals, ..."""
    batch = plan(state, *requests, now_ts=now_ts)
    assert results(batch) == [Result.OK] * len(requests), results(batch)
    return batch


def counters(state: BatchState) -> dict[uuid.UUID, tuple[int, int, int, int, int]]:
    return {
        a.id: (
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
            a.last_transfer_ts,
        )
        for a in state.accounts.values()
    }


def hold(book: Book, amount: int = 600, **fields: Any) -> TransferRequest:
    """alice → bob ``amount`` held by an earlier batch."""
    request = pending(book.alice.id, book.bob.id, amount, **fields)
    seed(book.state, request)
    return request


def expiry_void(held: Transfer) -> TransferRequest:
    """The void the upkeep worker sends for an expired hold (as the service builds it)."""
    return TransferRequest(
        id=expiry_transfer_id(held.id),
        debit_account_id=held.debit_account_id,
        credit_account_id=held.credit_account_id,
        amount=held.amount,
        currency=held.currency,
        code=65535,
        flags=VOID | EXPIRY,
        pending_id=held.id,
    )


# --- validation: one code each --------------------------------------------------


def _regular(b: Book, **fields: Any) -> TransferRequest:
    return transfer(b.alice.id, b.bob.id, 100, **fields)


def _same_id(request: TransferRequest, field_name: str) -> TransferRequest:
    return request._replace(**{field_name: request.id})


VALIDATION_CASES = [
    ("id zero", lambda b: _regular(b, id=NIL_ID), Result.ID_MUST_NOT_BE_ZERO),
    ("unknown flag bit", lambda b: _regular(b, flags=1 << 5), Result.RESERVED_FLAG),
    ("expiry from a client", lambda b: void(new_id(), flags=EXPIRY), Result.RESERVED_FLAG),
    (
        "pending + post",
        lambda b: _regular(b, flags=PENDING | POST),
        Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    ),
    (
        "post + void",
        lambda b: post(new_id(), flags=VOID),
        Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    ),
    (
        "pending + void",
        lambda b: _regular(b, flags=PENDING | VOID),
        Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    ),
    (
        "all three phases",
        lambda b: _regular(b, flags=PENDING | POST | VOID),
        Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    ),
    (
        "debit missing",
        lambda b: transfer(None, b.bob.id, 100),
        Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "debit nil",
        lambda b: transfer(NIL_ID, b.bob.id, 100),
        Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "pending with debit missing",
        lambda b: pending(None, b.bob.id, 100),  # type: ignore[arg-type]
        Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "credit missing",
        lambda b: transfer(b.alice.id, None, 100),
        Result.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "credit nil",
        lambda b: transfer(b.alice.id, NIL_ID, 100),
        Result.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "same account both sides",
        lambda b: transfer(b.alice.id, b.alice.id, 100),
        Result.ACCOUNTS_MUST_BE_DIFFERENT,
    ),
    (
        "post naming one account on both sides",
        lambda b: post(new_id())._replace(debit_account_id=b.bob.id, credit_account_id=b.bob.id),
        Result.ACCOUNTS_MUST_BE_DIFFERENT,
    ),
    (
        "pending_id on a regular transfer",
        lambda b: _regular(b, pending_id=new_id()),
        Result.PENDING_ID_MUST_BE_ZERO,
    ),
    (
        "pending_id on a pending transfer",
        lambda b: pending(b.alice.id, b.bob.id, 100, pending_id=new_id()),
        Result.PENDING_ID_MUST_BE_ZERO,
    ),
    ("post without pending_id", lambda b: post(None), Result.PENDING_ID_MUST_NOT_BE_ZERO),  # type: ignore[arg-type]
    ("void with nil pending_id", lambda b: void(NIL_ID), Result.PENDING_ID_MUST_NOT_BE_ZERO),
    (
        "post of itself",
        lambda b: _same_id(post(new_id()), "pending_id"),
        Result.PENDING_ID_MUST_BE_DIFFERENT,
    ),
    (
        "timeout on a regular transfer",
        lambda b: _regular(b, timeout_s=60),
        Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
    ),
    (
        "timeout on a post",
        lambda b: post(new_id(), timeout_s=60),
        Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
    ),
    (
        "timeout on a void",
        lambda b: void(new_id(), timeout_s=60),
        Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
    ),
    (
        "amount missing",
        lambda b: transfer(b.alice.id, b.bob.id, None),
        Result.AMOUNT_MUST_NOT_BE_ZERO,
    ),
    ("amount zero", lambda b: transfer(b.alice.id, b.bob.id, 0), Result.AMOUNT_MUST_NOT_BE_ZERO),
    (
        "pending amount zero",
        lambda b: pending(b.alice.id, b.bob.id, 0),
        Result.AMOUNT_MUST_NOT_BE_ZERO,
    ),
    ("post of zero", lambda b: post(new_id(), 0), Result.AMOUNT_MUST_NOT_BE_ZERO),
    ("void of zero", lambda b: void(new_id())._replace(amount=0), Result.AMOUNT_MUST_NOT_BE_ZERO),
    (
        "amount negative",
        lambda b: transfer(b.alice.id, b.bob.id, -1),
        Result.AMOUNT_MUST_BE_POSITIVE,
    ),
    ("post of a negative amount", lambda b: post(new_id(), -5), Result.AMOUNT_MUST_BE_POSITIVE),
    (
        "currency missing",
        lambda b: transfer(b.alice.id, b.bob.id, 100, None),
        Result.CURRENCY_MUST_NOT_BE_EMPTY,
    ),
    (
        "currency empty",
        lambda b: transfer(b.alice.id, b.bob.id, 100, ""),
        Result.CURRENCY_MUST_NOT_BE_EMPTY,
    ),
    (
        "pending reversal",
        lambda b: pending(b.bob.id, b.alice.id, 100, reversal_of=new_id()),
        Result.REVERSAL_MUST_NOT_BE_TWO_PHASE,
    ),
    (
        "post that is a reversal",
        lambda b: post(new_id(), reversal_of=new_id()),
        Result.REVERSAL_MUST_NOT_BE_TWO_PHASE,
    ),
    (
        "void that is a reversal",
        lambda b: void(new_id(), reversal_of=new_id()),
        Result.REVERSAL_MUST_NOT_BE_TWO_PHASE,
    ),
    (
        "reversal of itself",
        lambda b: _same_id(_regular(b), "reversal_of"),
        Result.REVERSAL_OF_MUST_BE_DIFFERENT,
    ),
    ("code zero", lambda b: _regular(b, code=0), Result.CODE_MUST_NOT_BE_ZERO),
    ("post with code zero", lambda b: post(new_id(), code=0), Result.CODE_MUST_NOT_BE_ZERO),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [pytest.param(build, expected, id=name) for name, build, expected in VALIDATION_CASES],
)
def test_validation_code_changes_nothing_and_is_not_remembered(build: Any, expected: Result):
    book = make_book()
    before = counters(book.state)
    request = build(book)

    batch = plan(book.state, request)

    assert results(batch) == [expected]
    assert batch.outcomes[0].ts is None
    assert batch.new_transfers == []
    assert batch.new_rejections == []
    assert book.state.rejections == {}
    assert batch.touched_accounts == {}
    assert counters(book.state) == before
    assert batch.merkle_root == merkle.EMPTY_ROOT


def test_validation_codes_come_before_the_exists_codes_in_precedence():
    order = list(Result)
    assert order.index(Result.EXTERNAL_REF_TOO_LONG) + 1 == order.index(
        Result.EXISTS_WITH_DIFFERENT_FLAGS
    )
    assert order.index(Result.CODE_MUST_NOT_BE_ZERO) < order.index(Result.CODE_OUT_OF_RANGE)
    assert frozenset(order[order.index(Result.ID_ALREADY_FAILED) + 1 :]) == STATE_RESULTS
    assert Result.ID_ALREADY_FAILED not in STATE_RESULTS
    assert Result.EXISTS not in STATE_RESULTS


def test_expiry_flag_is_allowed_for_the_ledger_itself():
    book = make_book()
    held = hold(book)
    expiry = expiry_void(book.state.transfers[held.id])

    assert result_of(book.state, expiry) is Result.RESERVED_FLAG
    assert result_of(book.state, expiry, system=True) is Result.OK
    assert book.state.resolutions[held.id] == Resolution(expiry.id, VOID | EXPIRY)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(EXPIRY, id="expiry alone"),
        pytest.param(EXPIRY | POST, id="expiry + post"),
        pytest.param(EXPIRY | PENDING, id="expiry + pending"),
    ],
)
def test_expiry_flag_goes_only_with_a_void_even_for_the_ledger(flags: int):
    book = make_book()
    request = transfer(book.alice.id, book.bob.id, 100, flags=flags, pending_id=new_id())

    assert result_of(book.state, request, system=True) is Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE


def test_unknown_flag_bit_is_reserved_for_the_ledger_too():
    book = make_book()
    request = void(new_id(), flags=EXPIRY | (1 << 6))

    assert result_of(book.state, request, system=True) is Result.RESERVED_FLAG


# --- validation: the first failing check wins ------------------------------------


PRECEDENCE_CASES = [
    (
        "id zero over reserved flag",
        lambda b: _regular(b, id=NIL_ID, flags=1 << 5),
        Result.ID_MUST_NOT_BE_ZERO,
    ),
    (
        "reserved flag over mutually exclusive",
        lambda b: _regular(b, flags=(1 << 5) | PENDING | POST),
        Result.RESERVED_FLAG,
    ),
    (
        "mutually exclusive over debit missing",
        lambda b: transfer(None, b.bob.id, 100, flags=PENDING | VOID),
        Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    ),
    (
        "debit missing over credit missing",
        lambda b: transfer(None, None, 100),
        Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "credit missing over amount zero",
        lambda b: transfer(b.alice.id, None, 0),
        Result.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "same accounts over pending_id must be zero",
        lambda b: transfer(b.alice.id, b.alice.id, 100, pending_id=new_id()),
        Result.ACCOUNTS_MUST_BE_DIFFERENT,
    ),
    (
        "pending_id must be zero over timeout",
        lambda b: _regular(b, pending_id=new_id(), timeout_s=5),
        Result.PENDING_ID_MUST_BE_ZERO,
    ),
    (
        "pending_id must not be zero over timeout",
        lambda b: post(None, timeout_s=5),  # type: ignore[arg-type]
        Result.PENDING_ID_MUST_NOT_BE_ZERO,
    ),
    (
        "pending_id must be different over amount",
        lambda b: _same_id(post(new_id(), -1), "pending_id"),
        Result.PENDING_ID_MUST_BE_DIFFERENT,
    ),
    (
        "timeout over amount zero",
        lambda b: transfer(b.alice.id, b.bob.id, 0, timeout_s=5),
        Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER,
    ),
    (
        "amount zero over currency empty",
        lambda b: transfer(b.alice.id, b.bob.id, 0, ""),
        Result.AMOUNT_MUST_NOT_BE_ZERO,
    ),
    (
        "amount negative over currency empty",
        lambda b: transfer(b.alice.id, b.bob.id, -3, None),
        Result.AMOUNT_MUST_BE_POSITIVE,
    ),
    (
        "currency empty over code zero",
        lambda b: transfer(b.alice.id, b.bob.id, 100, "", code=0),
        Result.CURRENCY_MUST_NOT_BE_EMPTY,
    ),
    (
        "reversal two-phase over code zero",
        lambda b: pending(b.bob.id, b.alice.id, 100, reversal_of=new_id(), code=0),
        Result.REVERSAL_MUST_NOT_BE_TWO_PHASE,
    ),
    (
        "reversal of itself over code zero",
        lambda b: _same_id(_regular(b, code=0), "reversal_of"),
        Result.REVERSAL_OF_MUST_BE_DIFFERENT,
    ),
    (
        "code zero over debit account not found",
        lambda b: transfer(new_id(), b.bob.id, 100, code=0),
        Result.CODE_MUST_NOT_BE_ZERO,
    ),
    (
        "debit not found over credit not found",
        lambda b: transfer(new_id(), new_id(), 100),
        Result.DEBIT_ACCOUNT_NOT_FOUND,
    ),
    (
        "credit not found over currency",
        lambda b: transfer(b.alice.id, new_id(), 100, "USD"),
        Result.CREDIT_ACCOUNT_NOT_FOUND,
    ),
    (
        "transfer currency over exceeds credits",
        lambda b: transfer(b.alice.id, b.bob.id, ALICE_FUNDS + 1, "USD"),
        Result.TRANSFER_MUST_HAVE_THE_SAME_CURRENCY_AS_ACCOUNTS,
    ),
    (
        "reversal target not found over exceeds credits",
        lambda b: transfer(b.alice.id, b.bob.id, ALICE_FUNDS + 1, reversal_of=new_id()),
        Result.REVERSAL_TARGET_NOT_FOUND,
    ),
    (
        "overflows debits over exceeds credits",
        lambda b: transfer(b.alice.id, b.bob.id, AMOUNT_MAX + 1),
        Result.OVERFLOWS_DEBITS,
    ),
    (
        "overflows timeout over exceeds credits",
        lambda b: pending(b.alice.id, b.bob.id, ALICE_FUNDS + 1, timeout_s=TIMEOUT_S_MAX),
        Result.OVERFLOWS_TIMEOUT,
    ),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [pytest.param(build, expected, id=name) for name, build, expected in PRECEDENCE_CASES],
)
def test_first_failing_check_in_precedence_order_wins(build: Any, expected: Result):
    book = make_book()
    now_ts = AMOUNT_MAX - TIMEOUT_S_MAX * US_PER_S + 1  # only matters for the timeout case

    assert result_of(book.state, build(book), now_ts=now_ts) is expected


def test_closed_debit_account_wins_over_closed_credit_account():
    book = make_book()
    book.alice.closed_ts = NOW - 1
    book.bob.closed_ts = NOW - 1

    assert result_of(book.state, _regular(book)) is Result.DEBIT_ACCOUNT_CLOSED


def test_accounts_currency_mismatch_wins_over_closed_account():
    book = make_book()
    dollars = book.add(make_account(currency="USD", closed_ts=NOW - 1))
    book.alice.closed_ts = NOW - 1

    request = transfer(book.alice.id, dollars.id, 100)

    assert result_of(book.state, request) is Result.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY


def test_overflows_debits_wins_over_overflows_credits():
    source = make_account(debits_posted=AMOUNT_MAX)
    sink = make_account(credits_posted=AMOUNT_MAX)
    state = make_state(source, sink)

    assert result_of(state, transfer(source.id, sink.id, 1)) is Result.OVERFLOWS_DEBITS


def test_exceeds_credits_wins_over_exceeds_debits():
    book = make_book()
    loan = book.add(make_account(LOAN))  # no debits yet: may not take any credit

    request = transfer(book.bob.id, loan.id, 1)  # bob holds nothing either

    assert result_of(book.state, request) is Result.EXCEEDS_CREDITS


# --- idempotency: exists -------------------------------------------------------


@dataclass
class Holds:
    """The standard book after alice put two holds of 100 on bob and paid him 100."""

    book: Book
    first: TransferRequest
    second: TransferRequest
    posted: TransferRequest

    @property
    def alice(self) -> Account:
        return self.book.alice

    @property
    def bob(self) -> Account:
        return self.book.bob

    @property
    def bank(self) -> Account:
        return self.book.bank


def _book_with_holds() -> Holds:
    book = make_book()
    first = pending(book.alice.id, book.bob.id, 100)
    second = pending(book.alice.id, book.bob.id, 100)
    posted = _regular(book)
    seed(book.state, first, second, posted)
    return Holds(book, first, second, posted)


# (name, original, retry of it, expected)
EXISTS_CASES = [
    (
        "flags",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(flags=PENDING),
        Result.EXISTS_WITH_DIFFERENT_FLAGS,
    ),
    (
        "pending_id",
        lambda h: post(h.first.id, 50),
        lambda h, r: r._replace(pending_id=h.second.id),
        Result.EXISTS_WITH_DIFFERENT_PENDING_ID,
    ),
    (
        "timeout",
        lambda h: pending(h.alice.id, h.bob.id, 10, timeout_s=60),
        lambda h, r: r._replace(timeout_s=30),
        Result.EXISTS_WITH_DIFFERENT_TIMEOUT,
    ),
    (
        "debit account",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(debit_account_id=h.bank.id),
        Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID,
    ),
    (
        "credit account",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(credit_account_id=h.bank.id),
        Result.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID,
    ),
    (
        "post naming another debit account",
        lambda h: post(h.first.id),
        lambda h, r: r._replace(debit_account_id=h.bank.id),
        Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID,
    ),
    (
        "amount",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(amount=r.amount + 1),
        Result.EXISTS_WITH_DIFFERENT_AMOUNT,
    ),
    (
        "post of another amount",
        lambda h: post(h.first.id),
        lambda h, r: r._replace(amount=99),
        Result.EXISTS_WITH_DIFFERENT_AMOUNT,
    ),
    (
        "currency",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(currency="USD"),
        Result.EXISTS_WITH_DIFFERENT_CURRENCY,
    ),
    (
        "code",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(code=TRANSFER_CODE + 1),
        Result.EXISTS_WITH_DIFFERENT_CODE,
    ),
    (
        "reversal_of",
        lambda h: transfer(h.bob.id, h.alice.id, 10),
        lambda h, r: r._replace(reversal_of=h.posted.id),
        Result.EXISTS_WITH_DIFFERENT_REVERSAL_OF,
    ),
    (
        "external_ref",
        lambda h: _regular(h.book, external_ref="order-1"),
        lambda h, r: r._replace(external_ref="order-2"),
        Result.EXISTS_WITH_DIFFERENT_EXTERNAL_REF,
    ),
    (
        "external_ref left out",
        lambda h: _regular(h.book, external_ref="order-1"),
        lambda h, r: r._replace(external_ref=None),
        Result.EXISTS_WITH_DIFFERENT_EXTERNAL_REF,
    ),
    (
        "first differing field: amount before code",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(amount=1, code=2, external_ref="x"),
        Result.EXISTS_WITH_DIFFERENT_AMOUNT,
    ),
    (
        "first differing field: flags before everything",
        lambda h: _regular(h.book),
        lambda h, r: r._replace(flags=PENDING, debit_account_id=h.bank.id, amount=1, code=2),
        Result.EXISTS_WITH_DIFFERENT_FLAGS,
    ),
    (
        "identical",
        lambda h: _regular(h.book, external_ref="order-1"),
        lambda h, r: r,
        Result.EXISTS,
    ),
    (
        "identical pending",
        lambda h: pending(h.alice.id, h.bob.id, 10, timeout_s=60),
        lambda h, r: r,
        Result.EXISTS,
    ),
    (
        "post retried with the hold's fields spelt out",
        lambda h: post(h.first.id),
        lambda h, r: r._replace(
            debit_account_id=h.alice.id, credit_account_id=h.bob.id, amount=100, currency="CNY"
        ),
        Result.EXISTS,
    ),
    (
        "void retried",
        lambda h: void(h.first.id),
        lambda h, r: r,
        Result.EXISTS,
    ),
]


@pytest.mark.parametrize("where", ["earlier batch", "same batch"])
@pytest.mark.parametrize(
    ("build", "change", "expected"),
    [pytest.param(b, c, e, id=name) for name, b, c, e in EXISTS_CASES],
)
def test_retry_of_a_committed_id(build: Any, change: Any, expected: Result, where: str):
    holds = _book_with_holds()
    state = holds.book.state
    original = build(holds)
    retry = change(holds, original)

    if where == "earlier batch":
        seed(state, original)
        before = counters(state)
        batch = plan(state, retry)
        assert counters(state) == before
    else:
        batch = plan(state, original, retry)
        assert len(batch.new_transfers) == 1

    assert results(batch)[-1] is expected
    assert batch.outcomes[-1].ts is None
    assert batch.new_rejections == []
    assert state.transfers[original.id].code == original.code


def test_retry_of_a_transfer_loaded_from_the_store():
    book = make_book()
    original = _regular(book, external_ref="order-7")
    state = make_state(book.bank, book.alice, book.bob, transfers=(committed(original),))

    assert result_of(state, original) is Result.EXISTS
    assert result_of(state, original._replace(amount=101)) is Result.EXISTS_WITH_DIFFERENT_AMOUNT
    # Validation and the chain rules come first: a lone linked retry is an open chain.
    assert result_of(state, original._replace(flags=LINKED)) is Result.LINKED_EVENT_CHAIN_OPEN


def test_validation_comes_before_exists():
    book = make_book()
    original = _regular(book)
    seed(book.state, original)

    assert result_of(book.state, original._replace(code=0)) is Result.CODE_MUST_NOT_BE_ZERO


# --- idempotency: failed ids stay failed ------------------------------------------


def test_state_failure_is_remembered():
    book = make_book()
    request = transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1)

    batch = plan(book.state, request, now_ts=NOW)

    assert results(batch) == [Result.EXCEEDS_CREDITS]
    assert batch.new_rejections == [
        Rejection(request.id, Result.EXCEEDS_CREDITS, fingerprint(request), NOW)
    ]
    assert book.state.rejections == {request.id: batch.new_rejections[0]}
    assert batch.new_transfers == []


def test_retry_of_a_failed_id_with_the_same_fields_gets_the_same_code():
    book = make_book()
    request = transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1)
    plan(book.state, request)
    # alice now has enough: the id stays failed all the same.
    seed(book.state, transfer(book.bank.id, book.alice.id, 5_000))

    batch = plan(book.state, request)

    assert results(batch) == [Result.EXCEEDS_CREDITS]
    assert batch.new_rejections == []
    assert batch.new_transfers == []


def test_retry_of_a_failed_id_with_other_fields_gets_id_already_failed():
    book = make_book()
    request = transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1)
    plan(book.state, request)

    batch = plan(book.state, request._replace(amount=1))

    assert results(batch) == [Result.ID_ALREADY_FAILED]
    assert batch.new_rejections == []
    assert book.state.rejections[request.id].result is Result.EXCEEDS_CREDITS


def test_rejection_loaded_from_the_store_is_honoured():
    book = make_book()
    request = _regular(book)
    book.state.rejections[request.id] = Rejection(
        request.id, Result.DEBIT_ACCOUNT_CLOSED, fingerprint(request), NOW - 5
    )

    assert result_of(book.state, request) is Result.DEBIT_ACCOUNT_CLOSED
    assert result_of(book.state, request._replace(code=99)) is Result.ID_ALREADY_FAILED


def test_validation_failure_is_not_remembered_and_the_id_may_be_reused():
    book = make_book()
    bad = _regular(book, code=0)

    first = plan(book.state, bad)
    second = plan(book.state, bad._replace(code=TRANSFER_CODE))

    assert results(first) == [Result.CODE_MUST_NOT_BE_ZERO]
    assert first.new_rejections == []
    assert results(second) == [Result.OK]


def test_same_id_failing_twice_in_one_batch_is_remembered_once():
    book = make_book()
    request = transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1)

    batch = plan(book.state, request, request, request._replace(amount=1))

    assert results(batch) == [
        Result.EXCEEDS_CREDITS,
        Result.EXCEEDS_CREDITS,
        Result.ID_ALREADY_FAILED,
    ]
    assert [r.id for r in batch.new_rejections] == [request.id]


def test_linked_failures_are_not_remembered():
    book = make_book()
    first = linked(_regular(book))
    failing = linked(transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1))
    after = _regular(book)
    open_end = linked(_regular(book))

    batch = plan(book.state, first, failing, after, open_end)

    assert results(batch) == [
        Result.LINKED_EVENT_FAILED,
        Result.EXCEEDS_CREDITS,
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_CHAIN_OPEN,
    ]
    assert [r.id for r in batch.new_rejections] == [failing.id]
    assert set(book.state.rejections) == {failing.id}
    # Their ids are free: the same events, unlinked, now pass.
    assert result_of(book.state, first._replace(flags=0)) is Result.OK
    assert result_of(book.state, after) is Result.OK
    assert result_of(book.state, open_end._replace(flags=0)) is Result.OK


def test_failed_id_retry_is_recognised_whatever_int_type_its_flags_have():
    """A retry equal field for field (``==``) is the same request: ``flags`` may
    arrive as a TransferFlags (the API and the factories build it so) or as a
    plain int (another context calling the service). The fingerprint must not
    depend on that: it hashes ``repr()`` of the fields today."""
    book = make_book()
    as_flag = pending(book.alice.id, book.bob.id, ALICE_FUNDS + 1)
    as_int = as_flag._replace(flags=int(as_flag.flags))
    assert as_flag == as_int
    plan(book.state, as_flag)

    assert result_of(book.state, as_int) is Result.EXCEEDS_CREDITS


# --- accounts ----------------------------------------------------------------


def test_debit_account_not_found():
    book = make_book()

    assert result_of(book.state, transfer(new_id(), book.bob.id, 1)) is (
        Result.DEBIT_ACCOUNT_NOT_FOUND
    )


def test_credit_account_not_found():
    book = make_book()

    assert result_of(book.state, transfer(book.alice.id, new_id(), 1)) is (
        Result.CREDIT_ACCOUNT_NOT_FOUND
    )


def test_accounts_must_have_the_same_currency():
    book = make_book()
    dollars = book.add(make_account(currency="USD"))

    batch = plan(book.state, transfer(book.alice.id, dollars.id, 1))

    assert results(batch) == [Result.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY]
    assert len(batch.new_rejections) == 1


def test_transfer_must_have_the_same_currency_as_accounts():
    book = make_book()

    assert result_of(book.state, transfer(book.alice.id, book.bob.id, 1, "USD")) is (
        Result.TRANSFER_MUST_HAVE_THE_SAME_CURRENCY_AS_ACCOUNTS
    )


def test_transfer_in_the_accounts_currency_passes():
    book = make_book()
    euro_a = book.add(make_account(currency="EUR"))
    euro_b = book.add(make_account(currency="EUR"))

    assert result_of(book.state, transfer(euro_a.id, euro_b.id, 1, "EUR")) is Result.OK


def test_debit_account_closed():
    book = make_book()
    book.alice.closed_ts = NOW - 1

    assert result_of(book.state, _regular(book)) is Result.DEBIT_ACCOUNT_CLOSED


def test_credit_account_closed():
    book = make_book()
    book.bob.closed_ts = NOW - 1

    assert result_of(book.state, _regular(book)) is Result.CREDIT_ACCOUNT_CLOSED


def test_closed_account_refuses_a_pending_transfer():
    book = make_book()
    book.bob.closed_ts = NOW - 1

    request = pending(book.alice.id, book.bob.id, 10)

    assert result_of(book.state, request) is Result.CREDIT_ACCOUNT_CLOSED


# --- balance flags --------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(ALICE_FUNDS, Result.OK), (ALICE_FUNDS + 1, Result.EXCEEDS_CREDITS)],
    ids=["at the balance", "one past"],
)
def test_debits_must_not_exceed_credits(amount: int, expected: Result):
    book = make_book()

    batch = plan(book.state, transfer(book.alice.id, book.bob.id, amount))

    assert results(batch) == [expected]
    if expected is Result.OK:
        assert book.alice.balance_available == 0
    else:
        assert book.alice.counters() == (0, 0, 0, ALICE_FUNDS)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(500, Result.OK), (501, Result.EXCEEDS_DEBITS)],
    ids=["at the balance", "one past"],
)
def test_credits_must_not_exceed_debits(amount: int, expected: Result):
    book = make_book()
    loan = book.add(make_account(LOAN, debits_posted=500))  # a loan of 500 paid out
    book.bank.credits_posted = 500

    batch = plan(book.state, transfer(book.bank.id, loan.id, amount))

    assert results(batch) == [expected]
    if expected is Result.OK:
        assert loan.balance_available == 0
    else:
        assert loan.counters() == (0, 500, 0, 0)


def test_pending_holds_count_against_the_available_balance():
    book = make_book()

    batch = plan(
        book.state,
        pending(book.alice.id, book.bob.id, 600),
        transfer(book.alice.id, book.bob.id, 401),
        transfer(book.alice.id, book.bob.id, 400),
        pending(book.alice.id, book.bob.id, 1),
    )

    assert results(batch) == [
        Result.OK,
        Result.EXCEEDS_CREDITS,
        Result.OK,
        Result.EXCEEDS_CREDITS,
    ]
    assert book.alice.counters() == (600, 400, 0, ALICE_FUNDS)
    assert book.alice.balance_available == 0


def test_pending_credits_count_against_a_loan_account():
    book = make_book()
    loan = book.add(make_account(LOAN, debits_posted=500))
    book.bank.credits_posted = 500

    batch = plan(
        book.state,
        pending(book.bank.id, loan.id, 300),
        transfer(book.bank.id, loan.id, 201),
        transfer(book.bank.id, loan.id, 200),
    )

    assert results(batch) == [Result.OK, Result.EXCEEDS_DEBITS, Result.OK]
    assert loan.balance_available == 0


def test_incoming_pending_credit_is_not_spendable():
    book = make_book()

    batch = plan(
        book.state,
        pending(book.alice.id, book.bob.id, 100),
        transfer(book.bob.id, book.bank.id, 1),
    )

    assert results(batch) == [Result.OK, Result.EXCEEDS_CREDITS]


def test_voided_hold_frees_the_balance_again():
    book = make_book()
    held = hold(book, ALICE_FUNDS)

    batch = plan(
        book.state,
        transfer(book.alice.id, book.bob.id, 1),
        void(held.id),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS),
    )

    assert results(batch) == [Result.EXCEEDS_CREDITS, Result.OK, Result.OK]


def test_account_without_balance_flag_may_go_either_way():
    book = make_book()

    batch = plan(book.state, transfer(book.bank.id, book.bob.id, 10**15))

    assert results(batch) == [Result.OK]
    assert book.bank.balance_posted == -(10**15 + ALICE_FUNDS)


# --- overflow -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(10, Result.OK), (11, Result.OVERFLOWS_DEBITS)],
    ids=["at the limit", "one past"],
)
def test_overflows_debits(amount: int, expected: Result):
    source = make_account(debits_posted=AMOUNT_MAX - 10)
    sink = make_account()
    state = make_state(source, sink)

    batch = plan(state, transfer(source.id, sink.id, amount))

    assert results(batch) == [expected]
    if expected is Result.OK:
        assert source.debits_posted == AMOUNT_MAX
    else:
        assert [r.result for r in batch.new_rejections] == [Result.OVERFLOWS_DEBITS]


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(10, Result.OK), (11, Result.OVERFLOWS_CREDITS)],
    ids=["at the limit", "one past"],
)
def test_overflows_credits(amount: int, expected: Result):
    source = make_account()
    sink = make_account(credits_posted=AMOUNT_MAX - 10)
    state = make_state(source, sink)

    batch = plan(state, transfer(source.id, sink.id, amount))

    assert results(batch) == [expected]
    if expected is Result.OK:
        assert sink.credits_posted == AMOUNT_MAX


def test_overflow_counts_pending_and_posted_together():
    source = make_account(debits_pending=AMOUNT_MAX // 2, debits_posted=AMOUNT_MAX // 2)
    sink = make_account(credits_pending=AMOUNT_MAX // 2)
    state = make_state(source, sink)
    room = AMOUNT_MAX - 2 * (AMOUNT_MAX // 2)  # 1

    batch = plan(
        state,
        pending(source.id, sink.id, room + 1),
        transfer(source.id, sink.id, room + 1),
        pending(source.id, sink.id, room),
    )

    assert results(batch) == [Result.OVERFLOWS_DEBITS, Result.OVERFLOWS_DEBITS, Result.OK]


@pytest.mark.parametrize("amount", [AMOUNT_MAX + 1, 2**64, 10**30])
def test_amount_past_the_limit_overflows_instead_of_crashing(amount: int):
    source = make_account()
    sink = make_account()
    state = make_state(source, sink)

    assert result_of(state, transfer(source.id, sink.id, amount)) is Result.OVERFLOWS_DEBITS


def test_amount_max_is_accepted_on_empty_accounts():
    source = make_account()
    sink = make_account()
    state = make_state(source, sink)

    batch = plan(state, transfer(source.id, sink.id, AMOUNT_MAX))

    assert results(batch) == [Result.OK]
    assert batch.new_transfers[0].amount == AMOUNT_MAX


@pytest.mark.parametrize(
    ("past_limit_us", "expected"),
    [(0, Result.OK), (1, Result.OVERFLOWS_TIMEOUT)],
    ids=["at the limit", "one past"],
)
def test_overflows_timeout(past_limit_us: int, expected: Result):
    book = make_book()
    now_ts = AMOUNT_MAX - TIMEOUT_S_MAX * US_PER_S + past_limit_us
    request = pending(book.alice.id, book.bob.id, 10, timeout_s=TIMEOUT_S_MAX)

    batch = plan(book.state, request, now_ts=now_ts)

    assert results(batch) == [expected]
    if expected is Result.OK:
        assert batch.new_transfers[0].expires_ts == AMOUNT_MAX
    else:
        assert [r.result for r in batch.new_rejections] == [Result.OVERFLOWS_TIMEOUT]
        assert book.alice.debits_pending == 0


# --- two-phase ------------------------------------------------------------------


def test_pending_transfer_moves_the_amount_into_pending_counters():
    book = make_book()
    request = pending(book.alice.id, book.bob.id, 600, timeout_s=60)

    batch = plan(book.state, request)

    assert results(batch) == [Result.OK]
    (held,) = batch.new_transfers
    assert held.flags == PENDING
    assert held.expires_ts == held.ts + 60 * US_PER_S
    assert book.alice.counters() == (600, 0, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 600, 0)


def test_pending_transfer_without_timeout_never_expires():
    book = make_book()

    batch = plan(book.state, pending(book.alice.id, book.bob.id, 600))

    assert batch.new_transfers[0].expires_ts is None


def test_post_without_amount_posts_the_whole_hold():
    book = make_book()
    held = hold(book, 600)
    request = post(held.id)

    batch = plan(book.state, request)

    assert results(batch) == [Result.OK]
    (posted,) = batch.new_transfers
    assert (posted.debit_account_id, posted.credit_account_id) == (book.alice.id, book.bob.id)
    assert (posted.amount, posted.currency, posted.pending_id) == (600, "CNY", held.id)
    assert posted.expires_ts is None
    assert book.alice.counters() == (0, 600, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 600)
    assert book.state.resolutions[held.id] == Resolution(request.id, POST)


def test_partial_post_releases_the_remainder():
    book = make_book()
    held = hold(book, 600)

    batch = plan(book.state, post(held.id, 250))

    assert results(batch) == [Result.OK]
    assert batch.new_transfers[0].amount == 250
    assert book.alice.counters() == (0, 250, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 250)
    assert book.alice.balance_available == ALICE_FUNDS - 250


def test_post_of_exactly_the_hold_is_accepted():
    book = make_book()
    held = hold(book, 600)

    assert result_of(book.state, post(held.id, 600)) is Result.OK


def test_post_of_more_than_the_hold():
    book = make_book()
    held = hold(book, 600)

    batch = plan(book.state, post(held.id, 601))

    assert results(batch) == [Result.EXCEEDS_PENDING_TRANSFER_AMOUNT]
    assert book.alice.counters() == (600, 0, 0, ALICE_FUNDS)
    assert len(batch.new_rejections) == 1


def test_void_releases_the_hold():
    book = make_book()
    held = hold(book, 600)
    request = void(held.id)

    batch = plan(book.state, request)

    assert results(batch) == [Result.OK]
    (voided,) = batch.new_transfers
    assert (voided.amount, voided.flags, voided.pending_id) == (600, VOID, held.id)
    assert book.alice.counters() == (0, 0, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 0)
    assert book.state.resolutions[held.id] == Resolution(request.id, VOID)


def test_void_naming_the_whole_amount_is_accepted():
    book = make_book()
    held = hold(book, 600)

    assert result_of(book.state, void(held.id)._replace(amount=600)) is Result.OK


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (599, Result.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT),
        (1, Result.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT),
        (601, Result.EXCEEDS_PENDING_TRANSFER_AMOUNT),
    ],
)
def test_void_of_another_amount(amount: int, expected: Result):
    book = make_book()
    held = hold(book, 600)

    assert result_of(book.state, void(held.id)._replace(amount=amount)) is expected
    assert book.alice.debits_pending == 600


@pytest.mark.parametrize("resolve", [post, void], ids=["post", "void"])
def test_resolving_a_transfer_that_is_not_pending(resolve: Any):
    book = make_book()
    regular = _regular(book)
    seed(book.state, regular)

    assert result_of(book.state, resolve(regular.id)) is Result.PENDING_TRANSFER_NOT_PENDING


def test_resolving_a_post_is_not_pending():
    book = make_book()
    held = hold(book)
    first_post = post(held.id)
    seed(book.state, first_post)

    assert result_of(book.state, void(first_post.id)) is Result.PENDING_TRANSFER_NOT_PENDING


@pytest.mark.parametrize("resolve", [post, void], ids=["post", "void"])
def test_resolving_an_unknown_pending_transfer(resolve: Any):
    book = make_book()

    batch = plan(book.state, resolve(new_id()))

    assert results(batch) == [Result.PENDING_TRANSFER_NOT_FOUND]
    assert len(batch.new_rejections) == 1


@pytest.mark.parametrize(
    ("resolution_flags", "expected"),
    [
        (POST, Result.PENDING_TRANSFER_ALREADY_POSTED),
        (VOID, Result.PENDING_TRANSFER_ALREADY_VOIDED),
        (VOID | EXPIRY, Result.PENDING_TRANSFER_EXPIRED),
        (POST | LINKED, Result.PENDING_TRANSFER_ALREADY_POSTED),
    ],
    ids=["posted", "voided", "expired", "posted in a chain"],
)
@pytest.mark.parametrize("resolve", [post, void], ids=["post", "void"])
def test_resolving_an_already_resolved_hold(resolution_flags: int, expected: Result, resolve: Any):
    book = make_book()
    held = hold(book, 600)
    book.state.resolutions[held.id] = Resolution(new_id(), resolution_flags)

    batch = plan(book.state, resolve(held.id))

    assert results(batch) == [expected]
    assert batch.new_transfers == []


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (post, post, Result.PENDING_TRANSFER_ALREADY_POSTED),
        (post, void, Result.PENDING_TRANSFER_ALREADY_POSTED),
        (void, post, Result.PENDING_TRANSFER_ALREADY_VOIDED),
        (void, void, Result.PENDING_TRANSFER_ALREADY_VOIDED),
    ],
    ids=["post, post", "post, void", "void, post", "void, void"],
)
def test_a_hold_is_resolved_at_most_once_in_one_batch(first: Any, second: Any, expected: Result):
    book = make_book()
    held = hold(book, 600)

    batch = plan(book.state, first(held.id), second(held.id))

    assert results(batch) == [Result.OK, expected]
    assert len(batch.new_transfers) == 1


def test_exceeding_the_hold_wins_over_already_posted():
    book = make_book()
    held = hold(book, 600)
    seed(book.state, post(held.id))

    assert result_of(book.state, post(held.id, 601)) is Result.EXCEEDS_PENDING_TRANSFER_AMOUNT


@pytest.mark.parametrize(
    ("now_offset_us", "expected"),
    [(-1, Result.OK), (0, Result.PENDING_TRANSFER_EXPIRED), (1, Result.PENDING_TRANSFER_EXPIRED)],
    ids=["just before", "at expiry", "after"],
)
@pytest.mark.parametrize("resolve", [post, void], ids=["post", "void"])
def test_client_resolution_after_the_timeout(now_offset_us: int, expected: Result, resolve: Any):
    book = make_book()
    held = hold(book, 600, timeout_s=60)
    expires_ts = book.state.transfers[held.id].expires_ts
    assert expires_ts is not None

    batch = plan(book.state, resolve(held.id), now_ts=expires_ts + now_offset_us)

    assert results(batch) == [expected]


def test_system_expiry_void_works_after_the_timeout_and_stops_later_posts():
    book = make_book()
    held = hold(book, 600, timeout_s=60)
    held_transfer = book.state.transfers[held.id]
    later = held_transfer.expires_ts + 5 * US_PER_S  # type: ignore[operator]
    expiry = expiry_void(held_transfer)

    batch = plan(book.state, expiry, now_ts=later, system=True)

    assert results(batch) == [Result.OK]
    assert batch.new_transfers[0].flags == VOID | EXPIRY
    assert book.alice.counters() == (0, 0, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 0)
    assert result_of(book.state, post(held.id), now_ts=later) is Result.PENDING_TRANSFER_EXPIRED
    assert result_of(book.state, void(held.id), now_ts=later) is Result.PENDING_TRANSFER_EXPIRED
    # A second sweeper sending the same expiry: idempotent.
    assert result_of(book.state, expiry, now_ts=later, system=True) is Result.EXISTS


def test_post_stamped_after_the_hold_expired_is_refused_even_when_the_clock_is_behind():
    """Expiry is a point in the ledger's own time (transfer timestamps). When
    the clock is behind the last timestamp, the post is stamped after that
    timestamp, hence after the hold's expiry: it must be refused."""
    book = make_book()
    held = hold(book, 600, timeout_s=60)
    expires_ts = book.state.transfers[held.id].expires_ts
    assert expires_ts is not None
    book.bank.last_transfer_ts = expires_ts + 10  # a transfer stamped after the expiry
    behind = expires_ts - 100

    batch = plan(book.state, post(held.id), now_ts=behind)

    assert results(batch) == [Result.PENDING_TRANSFER_EXPIRED]


@pytest.mark.parametrize(
    ("field_name", "expected"),
    [
        ("debit_account_id", Result.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        ("credit_account_id", Result.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID),
        ("currency", Result.PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY),
    ],
)
@pytest.mark.parametrize("resolve", [post, void], ids=["post", "void"])
def test_resolution_naming_other_accounts_or_currency(
    field_name: str, expected: Result, resolve: Any
):
    book = make_book()
    held = hold(book, 600)
    other: dict[str, Any] = {
        "debit_account_id": book.bank.id,
        "credit_account_id": book.bank.id,
        "currency": "USD",
    }

    batch = plan(book.state, resolve(held.id)._replace(**{field_name: other[field_name]}))

    assert results(batch) == [expected]
    assert [r.result for r in batch.new_rejections] == [expected]


def test_resolution_naming_the_holds_own_fields_is_accepted():
    book = make_book()
    held = hold(book, 600)
    request = post(held.id, 600)._replace(
        debit_account_id=book.alice.id, credit_account_id=book.bob.id, currency="CNY"
    )

    assert result_of(book.state, request) is Result.OK


def test_resolution_debit_mismatch_wins_over_amount():
    book = make_book()
    held = hold(book, 600)
    request = post(held.id, 601)._replace(debit_account_id=book.bank.id)

    assert result_of(book.state, request) is (
        Result.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
    )


def test_post_to_a_closed_account():
    book = make_book()
    held = hold(book, 600)
    book.bob.closed_ts = NOW - 1

    assert result_of(book.state, post(held.id)) is Result.CREDIT_ACCOUNT_CLOSED


def test_pending_and_post_in_the_same_batch():
    book = make_book()
    held = pending(book.alice.id, book.bob.id, 600)

    batch = plan(book.state, held, post(held.id, 100), transfer(book.alice.id, book.bob.id, 900))

    assert results(batch) == [Result.OK, Result.OK, Result.OK]
    assert book.alice.counters() == (0, 1_000, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 1_000)


def test_pending_and_void_in_the_same_batch():
    book = make_book()
    held = pending(book.alice.id, book.bob.id, 600)

    batch = plan(book.state, held, void(held.id))

    assert results(batch) == [Result.OK, Result.OK]
    assert book.alice.counters() == (0, 0, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 0)


# --- linked chains -------------------------------------------------------------


def test_linked_chain_succeeds_together():
    book = make_book()
    chain = [
        linked(transfer(book.alice.id, book.bob.id, 300)),
        linked(transfer(book.bob.id, book.bank.id, 300)),
        transfer(book.alice.id, book.bob.id, 700),
    ]

    batch = plan(book.state, *chain)

    assert results(batch) == [Result.OK] * 3
    assert [t.id for t in batch.new_transfers] == [r.id for r in chain]
    assert book.alice.counters() == (0, 1_000, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 300, 0, 1_000)


def test_one_failure_fails_the_whole_chain_and_nothing_else():
    book = make_book()
    before = counters(book.state)
    chain = [
        linked(transfer(book.alice.id, book.bob.id, 300)),
        linked(transfer(book.bob.id, book.bank.id, 300)),
        linked(transfer(book.alice.id, book.bob.id, 701)),  # 1,001 in all: too much
        transfer(book.bank.id, book.alice.id, 5),
    ]
    after = transfer(book.alice.id, book.bob.id, 1)

    batch = plan(book.state, *chain, after)

    assert results(batch) == [
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_FAILED,
        Result.EXCEEDS_CREDITS,
        Result.LINKED_EVENT_FAILED,
        Result.OK,
    ]
    assert all(o.ts is None for o in batch.outcomes[:4])
    assert [t.id for t in batch.new_transfers] == [after.id]
    after_counters = counters(book.state)
    assert after_counters[book.bank.id] == before[book.bank.id]
    assert book.alice.counters() == (0, 1, 0, ALICE_FUNDS)
    assert book.bob.counters() == (0, 0, 0, 1)
    for request in chain:
        assert request.id not in book.state.transfers
    assert set(batch.touched_accounts) == {book.alice.id, book.bob.id}


def test_failed_chain_restores_last_transfer_ts():
    book = make_book()
    before = counters(book.state)

    batch = plan(
        book.state,
        linked(transfer(book.alice.id, book.bob.id, 1)),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS),
    )

    assert results(batch) == [Result.LINKED_EVENT_FAILED, Result.EXCEEDS_CREDITS]
    assert counters(book.state) == before
    assert batch.merkle_root == merkle.EMPTY_ROOT


def test_failure_at_the_head_of_a_chain():
    book = make_book()

    batch = plan(
        book.state,
        linked(transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1)),
        transfer(book.alice.id, book.bob.id, 1),
    )

    assert results(batch) == [Result.EXCEEDS_CREDITS, Result.LINKED_EVENT_FAILED]
    assert batch.new_transfers == []


def test_validation_failure_inside_a_chain():
    book = make_book()

    batch = plan(
        book.state,
        linked(_regular(book)),
        linked(_regular(book, code=0)),
        _regular(book),
    )

    assert results(batch) == [
        Result.LINKED_EVENT_FAILED,
        Result.CODE_MUST_NOT_BE_ZERO,
        Result.LINKED_EVENT_FAILED,
    ]
    assert batch.new_transfers == []
    assert batch.new_rejections == []


def test_failed_chain_keeps_an_earlier_successful_chain():
    book = make_book()
    first_chain = [linked(_regular(book)), _regular(book)]
    second_chain = [linked(_regular(book)), transfer(book.alice.id, book.bob.id, ALICE_FUNDS)]

    batch = plan(book.state, *first_chain, *second_chain)

    assert results(batch) == [
        Result.OK,
        Result.OK,
        Result.LINKED_EVENT_FAILED,
        Result.EXCEEDS_CREDITS,
    ]
    assert [t.id for t in batch.new_transfers] == [r.id for r in first_chain]
    assert book.alice.counters() == (0, 200, 0, ALICE_FUNDS)


def test_chain_after_a_failed_chain_starts_afresh():
    book = make_book()

    batch = plan(
        book.state,
        linked(transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1)),
        _regular(book),
        linked(_regular(book)),
        _regular(book),
    )

    assert results(batch) == [
        Result.EXCEEDS_CREDITS,
        Result.LINKED_EVENT_FAILED,
        Result.OK,
        Result.OK,
    ]


def test_duplicate_id_inside_a_chain_fails_the_chain():
    book = make_book()
    first = linked(_regular(book))

    batch = plan(book.state, first, first._replace(flags=0))

    assert results(batch) == [Result.LINKED_EVENT_FAILED, Result.EXISTS_WITH_DIFFERENT_FLAGS]
    assert first.id not in book.state.transfers
    assert result_of(book.state, first._replace(flags=0)) is Result.OK


def test_chain_left_open_at_the_end_of_the_batch():
    book = make_book()
    before = counters(book.state)
    alone = _regular(book)

    batch = plan(book.state, alone, linked(_regular(book)), linked(_regular(book)))

    assert results(batch) == [
        Result.OK,
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_CHAIN_OPEN,
    ]
    assert [t.id for t in batch.new_transfers] == [alone.id]
    assert book.alice.counters() == (0, 100, 0, before[book.alice.id][3])


def test_single_linked_event_is_an_open_chain():
    book = make_book()

    batch = plan(book.state, linked(_regular(book)))

    assert results(batch) == [Result.LINKED_EVENT_CHAIN_OPEN]
    assert batch.new_transfers == []
    assert batch.new_rejections == []


def test_chain_breaks_close_a_chain_at_a_callers_boundary():
    book = make_book()
    # caller 1: events 0-1, its last event linked; caller 2: events 2-3, a good chain.
    batch = plan(
        book.state,
        linked(_regular(book)),
        linked(_regular(book)),
        linked(_regular(book)),
        _regular(book),
        chain_breaks=frozenset({1, 3}),
    )

    assert results(batch) == [
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_CHAIN_OPEN,
        Result.OK,
        Result.OK,
    ]
    assert len(batch.new_transfers) == 2


def test_chain_break_on_a_linked_first_event_leaves_the_next_caller_alone():
    book = make_book()

    batch = plan(
        book.state,
        linked(_regular(book)),
        _regular(book),
        chain_breaks=frozenset({0, 1}),
    )

    assert results(batch) == [Result.LINKED_EVENT_CHAIN_OPEN, Result.OK]


def test_chain_that_ends_at_a_break_commits():
    book = make_book()

    batch = plan(
        book.state,
        linked(_regular(book)),
        _regular(book),
        _regular(book),
        chain_breaks=frozenset({1, 2}),
    )

    assert results(batch) == [Result.OK] * 3


def test_chain_posting_its_own_pending_rolls_back_fully():
    book = make_book()
    before = counters(book.state)
    held = linked(pending(book.alice.id, book.bob.id, 600, timeout_s=60))
    posting = linked(post(held.id, 400))
    failing = transfer(book.alice.id, book.bob.id, 601)  # 400 posted + 601 > 1,000

    batch = plan(book.state, held, posting, failing)

    assert results(batch) == [
        Result.LINKED_EVENT_FAILED,
        Result.LINKED_EVENT_FAILED,
        Result.EXCEEDS_CREDITS,
    ]
    assert counters(book.state) == before
    assert batch.new_transfers == []
    assert held.id not in book.state.transfers
    assert posting.id not in book.state.transfers
    assert book.state.resolutions == {}
    assert result_of(book.state, post(held.id)) is Result.PENDING_TRANSFER_NOT_FOUND
    # The rolled-back events were not failures of their own: their ids are free.
    assert result_of(book.state, held._replace(flags=PENDING)) is Result.OK


def test_chain_resolving_an_earlier_hold_rolls_the_resolution_back():
    book = make_book()
    held = hold(book, 600)

    batch = plan(
        book.state,
        linked(void(held.id)),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1),
    )

    assert results(batch) == [Result.LINKED_EVENT_FAILED, Result.EXCEEDS_CREDITS]
    assert held.id not in book.state.resolutions
    assert book.alice.counters() == (600, 0, 0, ALICE_FUNDS)
    assert result_of(book.state, post(held.id)) is Result.OK


def test_chain_with_a_reversal_rolls_the_reversed_amount_back():
    book = make_book()
    original = transfer(book.alice.id, book.bob.id, 500)
    seed(book.state, original)

    batch = plan(
        book.state,
        linked(transfer(book.bob.id, book.alice.id, 200, reversal_of=original.id)),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS),
    )

    assert results(batch) == [Result.LINKED_EVENT_FAILED, Result.EXCEEDS_CREDITS]
    assert book.state.reversed_amounts.get(original.id, 0) == 0
    full = transfer(book.bob.id, book.alice.id, 500, reversal_of=original.id)
    assert result_of(book.state, full) is Result.OK


def test_chain_rollback_drops_its_history_rows():
    book = make_book(alice_flags=DEPOSIT | HISTORY)
    kept = _regular(book)

    batch = plan(
        book.state,
        kept,
        linked(_regular(book)),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS),
    )

    assert results(batch) == [Result.OK, Result.LINKED_EVENT_FAILED, Result.EXCEEDS_CREDITS]
    assert [row[2] for row in batch.history] == [kept.id]


# --- reversals ----------------------------------------------------------------


def _book_with_original(amount: int = 500) -> tuple[Book, TransferRequest]:
    book = make_book()
    original = transfer(book.alice.id, book.bob.id, amount)
    seed(book.state, original)
    return book, original


def _reversal(book: Book, original: TransferRequest, amount: int) -> TransferRequest:
    return transfer(book.bob.id, book.alice.id, amount, reversal_of=original.id)


def test_reversal_swaps_the_accounts_and_moves_the_money_back():
    book, original = _book_with_original(500)

    batch = plan(book.state, _reversal(book, original, 500))

    assert results(batch) == [Result.OK]
    assert batch.new_transfers[0].reversal_of == original.id
    assert book.alice.balance_posted == ALICE_FUNDS
    assert book.bob.balance_posted == 0
    assert book.state.reversed_amounts == {original.id: 500}


def test_partial_reversals_add_up_to_the_original_amount():
    book, original = _book_with_original(500)

    batch = plan(
        book.state,
        _reversal(book, original, 200),
        _reversal(book, original, 300),
        _reversal(book, original, 1),
    )

    assert results(batch) == [Result.OK, Result.OK, Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT]
    assert book.state.reversed_amounts == {original.id: 500}


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(500, Result.OK), (501, Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT)],
    ids=["the whole", "one past"],
)
def test_reversal_of_more_than_the_original(amount: int, expected: Result):
    book, original = _book_with_original(500)

    assert result_of(book.state, _reversal(book, original, amount)) is expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(1, Result.OK), (2, Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT)],
    ids=["at the limit", "one past"],
)
def test_reversed_amount_loaded_from_the_store_counts(amount: int, expected: Result):
    book, original = _book_with_original(500)
    book.state.reversed_amounts[original.id] = 499

    assert result_of(book.state, _reversal(book, original, amount)) is expected


@pytest.mark.parametrize(
    "accounts",
    [
        pytest.param(lambda b: (b.alice.id, b.bob.id), id="same direction"),
        pytest.param(lambda b: (b.bob.id, b.bank.id), id="credit not swapped"),
        pytest.param(lambda b: (b.bank.id, b.alice.id), id="debit not swapped"),
    ],
)
def test_reversal_must_swap_accounts(accounts: Any):
    book, original = _book_with_original(500)
    debit, credit = accounts(book)

    request = transfer(debit, credit, 100, reversal_of=original.id)

    assert result_of(book.state, request) is Result.REVERSAL_MUST_SWAP_ACCOUNTS


def test_reversal_target_not_found():
    book = make_book()

    request = transfer(book.bob.id, book.alice.id, 1, reversal_of=new_id())

    assert result_of(book.state, request) is Result.REVERSAL_TARGET_NOT_FOUND


def test_reversal_of_a_hold_is_not_posted():
    book = make_book()
    held = hold(book, 600)

    request = transfer(book.bob.id, book.alice.id, 1, reversal_of=held.id)

    assert result_of(book.state, request) is Result.REVERSAL_TARGET_NOT_POSTED


def test_reversal_of_a_void_is_not_posted():
    book = make_book()
    held = hold(book, 600)
    voiding = void(held.id)
    seed(book.state, voiding)

    request = transfer(book.bob.id, book.alice.id, 1, reversal_of=voiding.id)

    assert result_of(book.state, request) is Result.REVERSAL_TARGET_NOT_POSTED


def test_reversal_of_a_post_is_allowed():
    book = make_book()
    held = hold(book, 600)
    posting = post(held.id, 400)
    seed(book.state, posting)

    batch = plan(
        book.state,
        transfer(book.bob.id, book.alice.id, 400, reversal_of=posting.id),
        transfer(book.bob.id, book.alice.id, 1, reversal_of=posting.id),
    )

    assert results(batch) == [Result.OK, Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT]


def test_reversal_in_the_same_batch_as_its_original():
    book = make_book()
    original = transfer(book.alice.id, book.bob.id, 500)

    batch = plan(book.state, original, _reversal(book, original, 500))

    assert results(batch) == [Result.OK, Result.OK]


def test_reversal_obeys_the_balance_flags():
    book, original = _book_with_original(500)
    seed(book.state, transfer(book.bob.id, book.bank.id, 500))  # bob spent it

    assert result_of(book.state, _reversal(book, original, 1)) is Result.EXCEEDS_CREDITS
    assert result_of(book.state, _reversal(book, original, 501)) is (
        Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT
    )


def test_failed_reversal_does_not_count():
    book, original = _book_with_original(500)
    seed(book.state, transfer(book.bob.id, book.bank.id, 300))

    batch = plan(book.state, _reversal(book, original, 400), _reversal(book, original, 200))

    assert results(batch) == [Result.EXCEEDS_CREDITS, Result.OK]
    assert book.state.reversed_amounts == {original.id: 200}


# --- timestamps -----------------------------------------------------------------


def test_timestamps_strictly_increase_from_now():
    book = make_book()

    batch = plan(
        book.state,
        _regular(book),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS),  # fails: no ts used
        _regular(book),
        pending(book.alice.id, book.bob.id, 100),
    )

    assert [o.ts for o in batch.outcomes] == [NOW, None, NOW + 1, NOW + 2]
    assert [t.ts for t in batch.new_transfers] == [NOW, NOW + 1, NOW + 2]
    assert [t.batch_index for t in batch.new_transfers] == [0, 1, 2]
    assert {t.batch_id for t in batch.new_transfers} == {BATCH_ID}
    assert batch.committed_ts == NOW
    assert book.alice.last_transfer_ts == NOW + 2


def test_timestamps_follow_every_loaded_account_when_the_clock_is_behind():
    book = make_book()
    bystander = book.add(make_account(last_transfer_ts=NOW + 5_000))  # not in the batch
    assert bystander.id not in {book.alice.id, book.bob.id}

    batch = plan(book.state, _regular(book), pending(book.alice.id, book.bob.id, 1, timeout_s=1))

    assert [o.ts for o in batch.outcomes] == [NOW + 5_001, NOW + 5_002]
    assert batch.new_transfers[1].expires_ts == NOW + 5_002 + US_PER_S
    assert book.alice.last_transfer_ts == NOW + 5_002
    assert bystander.last_transfer_ts == NOW + 5_000


def test_timestamps_are_after_the_last_transfer_even_when_the_clock_is_equal():
    book = make_book()
    book.alice.last_transfer_ts = NOW

    batch = plan(book.state, _regular(book))

    assert batch.outcomes[0].ts == NOW + 1


def test_outcomes_carry_position_id_and_ts():
    book = make_book()
    requests = [_regular(book), _regular(book, code=0), _regular(book)]

    batch = plan(book.state, *requests)

    assert [(o.position, o.id) for o in batch.outcomes] == [
        (i, r.id) for i, r in enumerate(requests)
    ]
    by_id = {t.id: t.ts for t in batch.new_transfers}
    for outcome in batch.outcomes:
        assert outcome.ok == (outcome.result is Result.OK)
        assert outcome.ts == by_id.get(outcome.id)


# --- history --------------------------------------------------------------------


def test_history_account_gets_a_row_per_transfer_with_its_counters_after_it():
    book = make_book(alice_flags=DEPOSIT | HISTORY)
    first = transfer(book.alice.id, book.bob.id, 100)
    held = pending(book.alice.id, book.bob.id, 200)
    posting = post(held.id, 150)
    incoming = transfer(book.bank.id, book.alice.id, 7)
    unrelated = transfer(book.bank.id, book.bob.id, 5)

    batch = plan(book.state, first, held, posting, incoming, unrelated)

    assert results(batch) == [Result.OK] * 5
    alice = book.alice.id
    assert batch.history == [
        (alice, NOW, first.id, 0, 100, 0, ALICE_FUNDS),
        (alice, NOW + 1, held.id, 200, 100, 0, ALICE_FUNDS),
        (alice, NOW + 2, posting.id, 0, 250, 0, ALICE_FUNDS),
        (alice, NOW + 3, incoming.id, 0, 250, 0, ALICE_FUNDS + 7),
    ]


def test_history_on_both_sides_gives_two_rows():
    book = make_book(alice_flags=DEPOSIT | HISTORY, bob_flags=HISTORY)
    request = transfer(book.alice.id, book.bob.id, 100)

    batch = plan(book.state, request)

    assert batch.history == [
        (book.alice.id, NOW, request.id, 0, 100, 0, ALICE_FUNDS),
        (book.bob.id, NOW, request.id, 0, 0, 0, 100),
    ]


def test_accounts_without_history_get_no_rows():
    book = make_book()

    batch = plan(book.state, _regular(book), pending(book.alice.id, book.bob.id, 5))

    assert results(batch) == [Result.OK, Result.OK]
    assert batch.history == []


def test_failed_transfer_on_a_history_account_gets_no_row():
    book = make_book(alice_flags=DEPOSIT | HISTORY)

    batch = plan(book.state, transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1))

    assert batch.history == []


# --- touched accounts and merkle root ---------------------------------------------


def test_touched_accounts_are_those_of_committed_transfers_with_their_new_counters():
    book = make_book()
    carol = book.add(make_account(DEPOSIT))

    batch = plan(
        book.state,
        transfer(book.alice.id, book.bob.id, 100),
        transfer(carol.id, book.bob.id, 1),  # fails: carol has nothing
    )

    assert batch.touched_accounts == {book.alice.id: book.alice, book.bob.id: book.bob}
    assert batch.touched_accounts[book.alice.id].counters() == (0, 100, 0, ALICE_FUNDS)
    assert batch.touched_accounts[book.bob.id].counters() == (0, 0, 0, 100)


def test_merkle_root_covers_the_committed_transfers_in_batch_order():
    book = make_book()
    requests = [
        _regular(book, external_ref="a"),
        transfer(book.alice.id, book.bob.id, ALICE_FUNDS),  # fails
        pending(book.alice.id, book.bob.id, 50, timeout_s=9),
        _regular(book),
    ]

    batch = plan(book.state, *requests)

    ok_ids = [o.id for o in batch.outcomes if o.ok]
    assert [t.id for t in batch.new_transfers] == ok_ids
    leaves = [merkle.leaf_hash(encode_leaf(t)) for t in batch.new_transfers]
    assert batch.merkle_root == merkle.merkle_root(leaves)
    assert batch.merkle_root != merkle.merkle_root(leaves[::-1])
    assert [t.leaf_bytes() for t in batch.new_transfers] == [
        encode_leaf(t) for t in batch.new_transfers
    ]


def test_merkle_root_is_empty_when_nothing_is_committed():
    book = make_book()

    batch = plan(book.state, transfer(book.alice.id, book.bob.id, ALICE_FUNDS + 1))

    assert batch.merkle_root == merkle.EMPTY_ROOT


def test_merkle_root_of_a_rolled_back_chain_is_empty():
    book = make_book()

    batch = plan(book.state, linked(_regular(book)), linked(_regular(book)))

    assert batch.merkle_root == merkle.EMPTY_ROOT


# --- ids and fingerprints ------------------------------------------------------


def test_expiry_transfer_id_is_deterministic_and_per_hold():
    first, second = new_id(), new_id()

    assert expiry_transfer_id(first) == expiry_transfer_id(first)
    assert expiry_transfer_id(first) != expiry_transfer_id(second)
    assert expiry_transfer_id(first) != first
    assert expiry_transfer_id(first).version == 8
    assert expiry_transfer_id(first).variant == uuid.RFC_4122


def test_expiry_transfer_id_known_answer_is_stable():
    # A change would let two versions of the sweeper expire one hold twice.
    expected = uuid.UUID("4d5f44e9-0b4a-88d8-8abe-56c717324fb5")

    assert expiry_transfer_id(uuid.UUID(int=1)) == expected


_BASE = TransferRequest(
    id=uuid.UUID(int=1),
    debit_account_id=uuid.UUID(int=2),
    credit_account_id=uuid.UUID(int=3),
    amount=100,
    currency="CNY",
    code=10,
    flags=0,
    pending_id=None,
    reversal_of=None,
    external_ref="ref",
    timeout_s=0,
)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("debit_account_id", uuid.UUID(int=4)),
        ("credit_account_id", uuid.UUID(int=4)),
        ("amount", 101),
        ("amount", None),
        ("currency", "USD"),
        ("currency", None),
        ("code", 11),
        ("flags", PENDING),
        ("pending_id", uuid.UUID(int=5)),
        ("reversal_of", uuid.UUID(int=6)),
        ("external_ref", "fer"),
        ("external_ref", None),
        ("timeout_s", 1),
    ],
)
def test_fingerprint_differs_when_any_field_differs(field_name: str, value: Any):
    other = _BASE._replace(**{field_name: value})

    assert fingerprint(other) != fingerprint(_BASE)


def test_fingerprint_is_the_same_for_an_equal_request():
    copy = TransferRequest(*list(_BASE))

    assert fingerprint(copy) == fingerprint(_BASE)
    assert len(fingerprint(_BASE)) == 32


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"code": CODE_MAX}, Result.OK, id="code at the limit"),
        pytest.param({"code": CODE_MAX + 1}, Result.CODE_OUT_OF_RANGE, id="code one past"),
        pytest.param({"code": -1}, Result.CODE_OUT_OF_RANGE, id="negative code"),
        pytest.param(
            {"external_ref": "x" * EXTERNAL_REF_LENGTH_MAX},
            Result.OK,
            id="external_ref at the limit",
        ),
        pytest.param(
            {"external_ref": "x" * (EXTERNAL_REF_LENGTH_MAX + 1)},
            Result.EXTERNAL_REF_TOO_LONG,
            id="external_ref one past",
        ),
    ],
)
def test_field_limits_of_a_transfer(fields, expected):
    book = make_book()
    request = TransferRequest(
        uuid.uuid4(),
        book.alice.id,
        book.bob.id,
        1,
        "CNY",
        fields.get("code", 1),
        external_ref=fields.get("external_ref"),
    )
    assert result_of(book.state, request) is expected


@pytest.mark.parametrize(
    ("timeout_s", "expected"),
    [
        pytest.param(TIMEOUT_S_MAX, Result.OK, id="at the limit"),
        pytest.param(TIMEOUT_S_MAX + 1, Result.TIMEOUT_OUT_OF_RANGE, id="one past"),
        pytest.param(-1, Result.TIMEOUT_OUT_OF_RANGE, id="negative"),
    ],
)
def test_timeout_limits_of_a_pending_transfer(timeout_s, expected):
    book = make_book()
    request = TransferRequest(
        uuid.uuid4(), book.alice.id, book.bob.id, 1, "CNY", 1, flags=PENDING, timeout_s=timeout_s
    )
    assert result_of(book.state, request) is expected


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        pytest.param({"code": CODE_MAX}, AccountResult.OK, id="code at the limit"),
        pytest.param({"code": CODE_MAX + 1}, AccountResult.CODE_OUT_OF_RANGE, id="code one past"),
        pytest.param({"currency": "XYZ"}, AccountResult.CURRENCY_UNKNOWN, id="unknown currency"),
        pytest.param({"currency": "XAU"}, AccountResult.CURRENCY_UNKNOWN, id="no minor unit"),
        pytest.param(
            {"owner_ref": "o" * OWNER_REF_LENGTH_MAX}, AccountResult.OK, id="owner_ref at the limit"
        ),
        pytest.param(
            {"owner_ref": "o" * (OWNER_REF_LENGTH_MAX + 1)},
            AccountResult.OWNER_REF_TOO_LONG,
            id="owner_ref one past",
        ),
    ],
)
def test_field_limits_of_an_account(request_fields, expected):
    fields = {"currency": "CNY", "code": 2, "owner_ref": None} | request_fields
    request = AccountRequest(
        uuid.uuid4(), fields["currency"], fields["code"], 0, fields["owner_ref"]
    )
    assert validate_account(request) is expected

"""Property tests of the pure batch planner: random batches keep every invariant.

Hypothesis draws a handful of accounts (every balance flag, history, another
currency, a closed one, an empty one for huge amounts) with balanced opening
counters, then a few batches of random events over them: transfers, holds,
posts, voids, expiry sweeps, reversals, linked chains, retries of earlier ids
(identical or changed), amounts from zero and negative up past ``AMOUNT_MAX``.
After every batch the plan is checked against a straightforward reference
recomputation from ``plan.new_transfers``.
"""

from __future__ import annotations

import copy
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from factories import DEPOSIT, EXPIRY, HISTORY, LINKED, LOAN, PENDING, POST, VOID, new_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhifu.ledger import merkle
from zhifu.ledger.model import (
    AMOUNT_MAX,
    STATE_RESULTS,
    TIMEOUT_S_MAX,
    US_PER_S,
    Account,
    BatchPlan,
    BatchState,
    Result,
    Transfer,
    TransferRequest,
    encode_leaf,
    expiry_transfer_id,
    fingerprint,
    plan_batch,
)

NOW = 1_700_000_000_000_000
CODE = 10
CUSTOMER_FLAGS = [0, DEPOSIT, LOAN, HISTORY, DEPOSIT | HISTORY, LOAN | HISTORY]
ODD_AMOUNTS = [None, 0, -1, AMOUNT_MAX, AMOUNT_MAX + 1, 2**64]
TIMEOUTS_S = [0, 0, 0, 1, 60, TIMEOUT_S_MAX]
CLOCK_STEPS_US = [0, 1, US_PER_S, 61 * US_PER_S, -10 * US_PER_S]


# --- the world ------------------------------------------------------------------


def _account(flags: int = 0, currency: str = "CNY", **fields: Any) -> Account:
    return Account(id=new_id(), currency=currency, code=2, flags=flags, owner_ref=None, **fields)


@dataclass
class World:
    state: BatchState
    usual_ids: list[uuid.UUID]
    """The bank and the customers, all in CNY."""
    odd_ids: list[uuid.UUID]
    """A USD account, a closed one, an empty one with room for AMOUNT_MAX."""


def opening_world(draw: Any) -> World:
    """A bank funding each customer; every opening balance respects its flag."""
    bank = _account(draw(st.sampled_from([0, HISTORY])))
    accounts = [bank]
    for _ in range(draw(st.integers(2, 4))):
        flags = draw(st.sampled_from(CUSTOMER_FLAGS))
        funds = draw(st.integers(0, 5_000))
        if flags & LOAN:  # a loan paid out: the customer owes the bank
            customer = _account(flags, debits_posted=funds)
            bank.credits_posted += funds
        else:
            customer = _account(flags, credits_posted=funds)
            bank.debits_posted += funds
        accounts.append(customer)
    odd = [_account(currency="USD"), _account(closed_ts=NOW - 1), _account()]
    state = BatchState(
        accounts={a.id: a for a in accounts + odd},
        transfers={},
        rejections={},
        resolutions={},
        reversed_amounts={},
    )
    return World(state, [a.id for a in accounts], [a.id for a in odd])


@dataclass
class Generated:
    """What the generator has produced so far, to refer back to."""

    requests: list[TransferRequest] = field(default_factory=list)
    regular_ids: list[uuid.UUID] = field(default_factory=list)
    pending_ids: list[uuid.UUID] = field(default_factory=list)


def _pick_amount(draw: Any) -> int | None:
    if draw(st.integers(0, 9)) < 8:
        return draw(st.integers(1, 1_500))
    return draw(st.sampled_from(ODD_AMOUNTS))


def _pick_account(draw: Any, world: World) -> uuid.UUID:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return new_id()  # unknown
    if roll < 3:
        return draw(st.sampled_from(world.odd_ids))
    return draw(st.sampled_from(world.usual_ids))


def _pick_ref(draw: Any, ids: Sequence[uuid.UUID]) -> uuid.UUID:
    if not ids or draw(st.integers(0, 9)) == 0:
        return new_id()  # unknown
    return draw(st.sampled_from(ids))


def _retry(draw: Any, generated: Generated, external_ref: str | None) -> TransferRequest:
    """An earlier event again: identical, or with one field changed."""
    request: TransferRequest = draw(st.sampled_from(generated.requests))
    if draw(st.booleans()):
        return request
    field_name = draw(st.sampled_from(["amount", "code", "external_ref", "flags"]))
    value = {
        "amount": _pick_amount(draw),
        "code": request.code + 1,
        "external_ref": external_ref,
        "flags": request.flags ^ LINKED,
    }[field_name]
    return request._replace(**{field_name: value})


def _resolution(
    draw: Any, world: World, generated: Generated, flags: int, external_ref: str | None
) -> TransferRequest:
    committed_holds = [i for i in generated.pending_ids if i in world.state.transfers]
    recent = generated.pending_ids[-4:]
    target = _pick_ref(draw, committed_holds + recent + generated.regular_ids[:1])
    amount = _pick_amount(draw) if draw(st.booleans()) else None
    return TransferRequest(
        new_id(), None, None, amount, None, CODE, flags, target, None, external_ref
    )


def _reversal(
    draw: Any, world: World, generated: Generated, flags: int, external_ref: str | None
) -> TransferRequest:
    target_id = _pick_ref(draw, generated.regular_ids + generated.pending_ids[:1])
    original = next((r for r in generated.requests if r.id == target_id), None)
    debit = _pick_account(draw, world)
    credit = _pick_account(draw, world)
    if original is not None and draw(st.integers(0, 4)) > 0:
        debit, credit = original.credit_account_id, original.debit_account_id
    amount = draw(st.integers(1, 800)) if draw(st.integers(0, 4)) > 0 else _pick_amount(draw)
    return TransferRequest(
        new_id(), debit, credit, amount, "CNY", CODE, flags, None, target_id, external_ref
    )


def _new_transfer(draw: Any, world: World, flags: int, external_ref: str | None) -> TransferRequest:
    debit = _pick_account(draw, world)
    credit = _pick_account(draw, world)
    if credit == debit and draw(st.integers(0, 4)) > 0:
        credit = draw(st.sampled_from([i for i in world.usual_ids if i != debit]))
    return TransferRequest(
        new_id(),
        debit,
        credit,
        _pick_amount(draw),
        draw(st.sampled_from(["CNY"] * 12 + ["USD", None])),
        CODE if draw(st.integers(0, 19)) else 0,
        flags,
        None,
        None,
        external_ref,
        draw(st.sampled_from(TIMEOUTS_S)) if flags & PENDING else 0,
    )


def draw_event(draw: Any, world: World, generated: Generated) -> TransferRequest:
    kinds = ["transfer"] * 3 + ["pending"] * 2 + ["post", "void", "reversal", "retry"]
    kind = draw(st.sampled_from(kinds))
    flags = LINKED if draw(st.integers(0, 5)) == 0 else 0
    external_ref = draw(st.sampled_from([None, None, "r1", "r2"]))
    if kind == "retry" and generated.requests:
        return _retry(draw, generated, external_ref)
    if kind in ("post", "void"):
        phase = POST if kind == "post" else VOID
        request = _resolution(draw, world, generated, flags | phase, external_ref)
    elif kind == "reversal" and generated.regular_ids:
        request = _reversal(draw, world, generated, flags, external_ref)
    else:
        phase = PENDING if kind == "pending" else 0
        request = _new_transfer(draw, world, flags | phase, external_ref)
    generated.requests.append(request)
    if request.flags & PENDING:
        generated.pending_ids.append(request.id)
    elif not request.flags & (POST | VOID):
        generated.regular_ids.append(request.id)
    return request


def expiry_sweep(state: BatchState, now_ts: int) -> list[TransferRequest]:
    """The voids the upkeep worker would send for every hold past its timeout."""
    return [
        TransferRequest(
            expiry_transfer_id(t.id),
            t.debit_account_id,
            t.credit_account_id,
            t.amount,
            t.currency,
            65535,
            VOID | EXPIRY,
            t.id,
        )
        for t in state.transfers.values()
        if t.flags & PENDING
        and t.expires_ts is not None
        and t.expires_ts <= now_ts
        and t.id not in state.resolutions
    ]


# --- the reference ----------------------------------------------------------------


@dataclass
class Reference:
    """Counters and transfers recomputed the plain way, transfer by transfer."""

    counters: dict[uuid.UUID, list[int]]
    transfers: dict[uuid.UUID, Transfer]
    flags: dict[uuid.UUID, int]

    @classmethod
    def of(cls, state: BatchState) -> Reference:
        return cls(
            counters={a.id: list(a.counters()) for a in state.accounts.values()},
            transfers=dict(state.transfers),
            flags={a.id: a.flags for a in state.accounts.values()},
        )

    def apply(self, transfers: Sequence[Transfer]) -> list[tuple[Any, ...]]:
        """Applies ``transfers``; returns the history rows they should produce."""
        history: list[tuple[Any, ...]] = []
        for t in transfers:
            debit = self.counters[t.debit_account_id]
            credit = self.counters[t.credit_account_id]
            if t.flags & PENDING:
                debit[0] += t.amount
                credit[2] += t.amount
            elif t.flags & (POST | VOID):
                held = self.transfers[t.pending_id]  # type: ignore[index]
                assert held.flags & PENDING
                assert (held.debit_account_id, held.credit_account_id, held.currency) == (
                    t.debit_account_id,
                    t.credit_account_id,
                    t.currency,
                )
                assert 0 < t.amount <= held.amount
                debit[0] -= held.amount
                credit[2] -= held.amount
                if t.flags & POST:
                    debit[1] += t.amount
                    credit[3] += t.amount
                else:
                    assert t.amount == held.amount
            else:
                debit[1] += t.amount
                credit[3] += t.amount
            self.transfers[t.id] = t
            for account_id in (t.debit_account_id, t.credit_account_id):
                if self.flags[account_id] & HISTORY:
                    history.append((account_id, t.ts, t.id, *self.counters[account_id]))
        return history


# --- the invariants -------------------------------------------------------------


def chains(requests: Sequence[TransferRequest], breaks: frozenset[int]) -> list[list[int]]:
    result: list[list[int]] = []
    current: list[int] = []
    for index, request in enumerate(requests):
        current.append(index)
        if not request.flags & LINKED or index in breaks or index == len(requests) - 1:
            result.append(current)
            current = []
    return result


def check_outcomes_match_transfers(
    batch: BatchPlan, requests: Sequence[TransferRequest], first_ts_min: int
) -> None:
    outcomes = batch.outcomes
    assert len(outcomes) == len(requests)
    assert [(o.position, o.id) for o in outcomes] == [(i, r.id) for i, r in enumerate(requests)]
    ok = [o for o in outcomes if o.ok]
    assert [(o.id, o.ts) for o in ok] == [(t.id, t.ts) for t in batch.new_transfers]
    assert all(o.ts is None for o in outcomes if not o.ok)
    stamps = [t.ts for t in batch.new_transfers]
    assert stamps == sorted(set(stamps)), "timestamps strictly increase"
    assert all(ts >= first_ts_min for ts in stamps)
    assert [t.batch_index for t in batch.new_transfers] == list(range(len(stamps)))
    for outcome, transfer in zip(ok, batch.new_transfers, strict=True):
        request = requests[outcome.position]
        assert transfer.flags == request.flags
        assert transfer.code == request.code
        assert transfer.external_ref == request.external_ref
        if not request.flags & (POST | VOID):
            assert (transfer.debit_account_id, transfer.credit_account_id) == (
                request.debit_account_id,
                request.credit_account_id,
            )
            assert (transfer.amount, transfer.currency) == (request.amount, request.currency)
            assert transfer.reversal_of == request.reversal_of


def check_chains(batch: BatchPlan, requests: Sequence[TransferRequest], breaks: frozenset[int]):
    for chain in chains(requests, breaks):
        results = [batch.outcomes[i].result for i in chain]
        if all(r is Result.OK for r in results):
            continue
        assert Result.OK not in results, f"chain {chain} half applied: {results}"
        own = [r for r in results if r is not Result.LINKED_EVENT_FAILED]
        assert len(own) == 1, f"chain {chain}: {results}"


def check_accounts(state: BatchState, reference: Reference) -> None:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for account in state.accounts.values():
        counters = account.counters()
        assert list(counters) == reference.counters[account.id], account
        assert all(0 <= c <= AMOUNT_MAX for c in counters)
        if account.flags & DEPOSIT:
            assert account.debits_pending + account.debits_posted <= account.credits_posted
        if account.flags & LOAN:
            assert account.credits_pending + account.credits_posted <= account.debits_posted
        for i, c in enumerate(counters):
            sums[account.currency][i] += c
    for debits_pending, debits_posted, credits_pending, credits_posted in sums.values():
        assert debits_posted == credits_posted
        assert debits_pending == credits_pending


def check_remembered_failures(
    batch: BatchPlan,
    requests: Sequence[TransferRequest],
    state: BatchState,
    rejected_before: set[uuid.UUID],
) -> None:
    new_ids = [r.id for r in batch.new_rejections]
    assert len(new_ids) == len(set(new_ids))
    assert not set(new_ids) & rejected_before
    assert all(r.result in STATE_RESULTS for r in batch.new_rejections)
    for outcome in batch.outcomes:
        if outcome.result in STATE_RESULTS:
            remembered = state.rejections[outcome.id]
            assert remembered.result is outcome.result
            assert remembered.fingerprint == fingerprint(requests[outcome.position])
    assert not set(state.rejections) & set(state.transfers)


def check_resolutions_and_reversals(state: BatchState) -> None:
    resolved_by: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    reversed_sum: dict[uuid.UUID, int] = defaultdict(int)
    for t in state.transfers.values():
        if t.flags & (POST | VOID):
            resolved_by[t.pending_id].append(t.id)  # type: ignore[index]
        if t.reversal_of is not None:
            reversed_sum[t.reversal_of] += t.amount
    assert all(len(ids) == 1 for ids in resolved_by.values()), "a hold resolved twice"
    assert {p: r.transfer_id for p, r in state.resolutions.items()} == {
        p: ids[0] for p, ids in resolved_by.items()
    }
    for target, amount in reversed_sum.items():
        original = state.transfers[target]
        assert not original.flags & (PENDING | VOID)
        assert amount <= original.amount
    for target in set(reversed_sum) | set(state.reversed_amounts):
        assert state.reversed_amounts.get(target, 0) == reversed_sum.get(target, 0)


def check_replays(
    state: BatchState, batch: BatchPlan, requests: Sequence[TransferRequest], now_ts: int
) -> None:
    """Each unlinked event sent again alone: ``exists`` or its remembered failure."""
    for outcome in batch.outcomes:
        request = requests[outcome.position]
        if request.flags & LINKED:
            continue
        if outcome.ok:
            expected = Result.EXISTS
        elif outcome.result in STATE_RESULTS:
            expected = outcome.result
        else:
            continue
        replay = plan_batch(
            [request], copy.deepcopy(state), batch_id=new_id(), now_ts=now_ts, system=True
        )
        assert replay.outcomes[0].result is expected


def plan_and_check(
    state: BatchState,
    requests: list[TransferRequest],
    now_ts: int,
    breaks: frozenset[int] = frozenset(),
    *,
    system: bool = False,
) -> BatchPlan:
    reference = Reference.of(state)
    rejected_before = set(state.rejections)
    last_ts = max(a.last_transfer_ts for a in state.accounts.values())
    batch = plan_batch(
        requests, state, batch_id=new_id(), now_ts=now_ts, chain_breaks=breaks, system=system
    )

    check_outcomes_match_transfers(batch, requests, max(now_ts, last_ts + 1))
    check_chains(batch, requests, breaks)
    expected_history = reference.apply(batch.new_transfers)
    assert batch.history == expected_history
    assert state.transfers == reference.transfers, "rolled-back transfers left behind"
    check_accounts(state, reference)
    touched = {t.debit_account_id for t in batch.new_transfers}
    touched |= {t.credit_account_id for t in batch.new_transfers}
    assert set(batch.touched_accounts) == touched
    assert all(batch.touched_accounts[i] is state.accounts[i] for i in touched)
    leaves = [merkle.leaf_hash(encode_leaf(t)) for t in batch.new_transfers]
    assert batch.merkle_root == merkle.merkle_root(leaves)
    check_remembered_failures(batch, requests, state, rejected_before)
    check_resolutions_and_reversals(state)
    check_replays(state, batch, requests, now_ts)
    return batch


# --- the properties -------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_batches_keep_every_invariant(data: st.DataObject):
    draw = data.draw
    world = opening_world(draw)
    state = world.state
    generated = Generated()
    now_ts = NOW
    for _ in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 25))
        requests = [draw_event(draw, world, generated) for _ in range(count)]
        breaks = frozenset(draw(st.sets(st.integers(0, count - 1), max_size=3)))

        plan_and_check(state, requests, now_ts, breaks)

        now_ts += draw(st.sampled_from(CLOCK_STEPS_US))
        sweep = expiry_sweep(state, now_ts)
        if sweep:
            swept = plan_and_check(state, sweep, now_ts, system=True)
            assert all(o.ok for o in swept.outcomes), swept.outcomes


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_planning_is_deterministic(data: st.DataObject):
    draw = data.draw
    world = opening_world(draw)
    generated = Generated()
    requests = [draw_event(draw, world, generated) for _ in range(draw(st.integers(1, 20)))]
    state = world.state
    batch_id = new_id()

    first = plan_batch(requests, copy.deepcopy(state), batch_id=batch_id, now_ts=NOW)
    second = plan_batch(requests, copy.deepcopy(state), batch_id=batch_id, now_ts=NOW)

    assert first.outcomes == second.outcomes
    assert first.new_transfers == second.new_transfers
    assert first.merkle_root == second.merkle_root

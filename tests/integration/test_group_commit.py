"""Group commit on SQLite: many callers, one database transaction, each its own answer."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

import pytest
from factories import fund, linked, open_accounts, open_bank, transfer
from ledger_worker_process import count_rows

from zhifu.ledger import store as ledger_store
from zhifu.ledger.errors import BatchEmptyError, BatchTooLargeError
from zhifu.ledger.group_commit import (
    QUEUE_EVENTS_MAX,
    WAIT_S_MAX,
    GroupCommitter,
    LedgerOverloadedError,
    LedgerStoppedError,
)
from zhifu.ledger.model import (
    BATCH_EVENTS_MAX,
    BatchPlan,
    Result,
    TransferOutcome,
    TransferRequest,
)
from zhifu.ledger.service import LedgerService

THREADS = 16
SUBMISSIONS_PER_THREAD = 15
FUTURE_TIMEOUT_S = 30.0


@pytest.fixture
def accounts(sqlite_ledger: LedgerService) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A bank and four funded customers."""
    bank = open_bank(sqlite_ledger)
    customers = open_accounts(sqlite_ledger, 4)
    fund(sqlite_ledger, bank, customers, 1_000)
    return bank, customers


@pytest.fixture
def committer(sqlite_ledger: LedgerService) -> Iterator[GroupCommitter]:
    group = GroupCommitter(sqlite_ledger, wait_s=0.02)
    try:
        yield group
    finally:
        group.close()


def batch_ids(ledger: LedgerService, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """Transfer id -> the batch (database transaction) that committed it."""
    return {i: t.batch_id for i, t in ledger.lookup_transfers(ids).items()}


def test_concurrent_callers_get_their_own_outcomes_rebased_to_their_submission(
    sqlite_ledger: LedgerService,
    committer: GroupCommitter,
    accounts: tuple[uuid.UUID, list[uuid.UUID]],
) -> None:
    bank, customers = accounts
    missing = uuid.uuid4()  # no such account
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    answered: list[uuid.UUID] = []
    lock = threading.Lock()

    def caller(seed: int) -> None:
        try:
            start.wait()
            for round_index in range(SUBMISSIONS_PER_THREAD):
                # Each caller's own mix, so a mix-up between callers shows.
                size = 1 + (seed + round_index) % 5
                requests: list[TransferRequest] = []
                expected: list[Result] = []
                for k in range(size):
                    if (seed + k) % 3 == 0:
                        requests.append(transfer(missing, customers[k % 4], 5))
                        expected.append(Result.DEBIT_ACCOUNT_NOT_FOUND)
                    elif (seed + k) % 3 == 1:
                        requests.append(transfer(bank, customers[k % 4], 0))
                        expected.append(Result.AMOUNT_MUST_NOT_BE_ZERO)
                    else:
                        requests.append(transfer(bank, customers[k % 4], 1 + seed))
                        expected.append(Result.OK)
                outcomes = committer.submit(requests).result(timeout=FUTURE_TIMEOUT_S)
                assert [o.position for o in outcomes] == list(range(size))
                assert [o.id for o in outcomes] == [r.id for r in requests]
                assert [o.result for o in outcomes] == expected
                assert all((o.ts is not None) == o.ok for o in outcomes)
                with lock:
                    answered.extend(o.id for o in outcomes if o.ok)
        except BaseException as exc:  # noqa: BLE001 - the main thread re-raises it
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    committed = batch_ids(sqlite_ledger, answered)
    assert committed.keys() == set(answered)
    assert len(set(committed.values())) < THREADS * SUBMISSIONS_PER_THREAD
    report = sqlite_ledger.verify()
    assert report.ok


def test_several_submissions_share_one_database_transaction(
    sqlite_ledger: LedgerService,
    committer: GroupCommitter,
    accounts: tuple[uuid.UUID, list[uuid.UUID]],
) -> None:
    bank, customers = accounts
    submissions = 40
    batches_before = count_rows(sqlite_ledger.engine, "ledger_batches")
    start = threading.Barrier(submissions)
    futures: list[Future[list[TransferOutcome]]] = [Future() for _ in range(submissions)]
    requests = [[transfer(bank, customers[i % 4], 1 + i)] for i in range(submissions)]

    def caller(index: int) -> None:
        start.wait()
        futures[index] = committer.submit(requests[index])

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(submissions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for future, own in zip(futures, requests, strict=True):
        (outcome,) = future.result(timeout=FUTURE_TIMEOUT_S)
        assert (outcome.position, outcome.id, outcome.result) == (0, own[0].id, Result.OK)
    batches = count_rows(sqlite_ledger.engine, "ledger_batches") - batches_before
    assert 1 <= batches < submissions
    committed = batch_ids(sqlite_ledger, [r[0].id for r in requests])
    assert len(committed) == submissions
    assert len(set(committed.values())) == batches


def test_a_linked_chain_never_runs_into_the_next_callers_events(
    sqlite_ledger: LedgerService, accounts: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    bank, customers = accounts
    group = GroupCommitter(sqlite_ledger, wait_s=WAIT_S_MAX)
    try:
        # Caller A ends on a linked event; callers B and C come right after it.
        a = [transfer(bank, customers[0], 10), linked(transfer(bank, customers[1], 20))]
        b = [transfer(bank, customers[2], 30)]
        c = [transfer(customers[3], customers[2], 10**9), transfer(bank, customers[3], 40)]
        future_a, future_b, future_c = group.submit(a), group.submit(b), group.submit(c)
        outcomes_a = future_a.result(timeout=FUTURE_TIMEOUT_S)
        outcomes_b = future_b.result(timeout=FUTURE_TIMEOUT_S)
        outcomes_c = future_c.result(timeout=FUTURE_TIMEOUT_S)
    finally:
        group.close()
    assert [o.result for o in outcomes_a] == [Result.OK, Result.LINKED_EVENT_CHAIN_OPEN]
    assert [o.result for o in outcomes_b] == [Result.OK]
    assert [o.result for o in outcomes_c] == [Result.EXCEEDS_CREDITS, Result.OK]
    assert [o.position for o in outcomes_c] == [0, 1]
    committed = batch_ids(sqlite_ledger, [a[0].id, a[1].id, b[0].id, c[1].id])
    assert a[1].id not in committed
    # They really were one database transaction.
    assert committed[a[0].id] == committed[b[0].id] == committed[c[1].id]


def test_a_chain_open_in_the_middle_caller_does_not_fail_its_neighbours(
    sqlite_ledger: LedgerService, accounts: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    bank, customers = accounts
    group = GroupCommitter(sqlite_ledger, wait_s=WAIT_S_MAX)
    try:
        first = [transfer(bank, customers[0], 1)]
        middle = [linked(transfer(bank, customers[1], 2)), linked(transfer(bank, customers[2], 3))]
        last = [linked(transfer(bank, customers[3], 4)), transfer(bank, customers[0], 5)]
        futures = [group.submit(first), group.submit(middle), group.submit(last)]
        results = [[o.result for o in f.result(timeout=FUTURE_TIMEOUT_S)] for f in futures]
    finally:
        group.close()
    assert results == [
        [Result.OK],
        [Result.LINKED_EVENT_FAILED, Result.LINKED_EVENT_CHAIN_OPEN],
        [Result.OK, Result.OK],
    ]
    committed = batch_ids(sqlite_ledger, [first[0].id, last[0].id, last[1].id])
    assert len(set(committed.values())) == 1


class SimulatedDatabaseError(RuntimeError):
    """Stands for a database error that fails a whole db_transaction."""


def test_a_submission_that_fails_the_whole_batch_is_isolated(
    sqlite_ledger: LedgerService,
    accounts: tuple[uuid.UUID, list[uuid.UUID]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank, customers = accounts
    poison = transfer(bank, customers[0], 7)
    attempts: list[list[uuid.UUID]] = []
    write_plan = ledger_store.write_plan

    def failing_write_plan(sql: ledger_store.LedgerSql, plan: BatchPlan) -> None:
        ids = [o.id for o in plan.outcomes]
        attempts.append(ids)
        write_plan(sql, plan)  # written, then the db_transaction fails and rolls back
        if poison.id in ids:
            raise SimulatedDatabaseError("the database refused this batch")

    monkeypatch.setattr(ledger_store, "write_plan", failing_write_plan)
    batches_before = count_rows(sqlite_ledger.engine, "ledger_batches")
    others = [[transfer(bank, customers[i % 4], 100 + i)] for i in range(5)]
    group = GroupCommitter(sqlite_ledger, wait_s=WAIT_S_MAX)
    try:
        futures = [group.submit(others[0]), group.submit([poison]), group.submit(others[1])]
        futures += [group.submit(o) for o in others[2:]]
        poisoned = futures.pop(1)
        with pytest.raises(SimulatedDatabaseError):
            poisoned.result(timeout=FUTURE_TIMEOUT_S)
        for future, own in zip(futures, others, strict=True):
            outcomes = future.result(timeout=FUTURE_TIMEOUT_S)
            assert [(o.position, o.id, o.result) for o in outcomes] == [(0, own[0].id, Result.OK)]
    finally:
        group.close()
    # Every event is counted out of the queue once, retried or not.
    assert group._waiting_events == 0
    # The first attempt held every caller and failed; each was then retried alone.
    assert len(attempts[0]) == len(others) + 1
    assert all(len(ids) == 1 for ids in attempts[1:])
    # The failed attempt left nothing behind; each other caller's transfer is there once.
    assert sqlite_ledger.lookup_transfers([poison.id]) == {}
    other_ids = [o[0].id for o in others]
    assert sqlite_ledger.lookup_transfers(other_ids).keys() == set(other_ids)
    assert count_rows(sqlite_ledger.engine, "ledger_batches") - batches_before == len(others)
    report = sqlite_ledger.verify()
    assert report.ok


def test_a_failure_only_when_batched_with_others_still_answers_every_caller(
    sqlite_ledger: LedgerService,
    accounts: tuple[uuid.UUID, list[uuid.UUID]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bank, customers = accounts
    touchy = transfer(bank, customers[0], 7)
    write_plan = ledger_store.write_plan

    def failing_write_plan(sql: ledger_store.LedgerSql, plan: BatchPlan) -> None:
        write_plan(sql, plan)
        ids = {o.id for o in plan.outcomes}
        if touchy.id in ids and len(ids) > 1:
            raise SimulatedDatabaseError("only in company")

    monkeypatch.setattr(ledger_store, "write_plan", failing_write_plan)
    others = [[transfer(bank, customers[i % 4], 100 + i)] for i in range(3)]
    group = GroupCommitter(sqlite_ledger, wait_s=WAIT_S_MAX)
    try:
        futures = [group.submit(others[0]), group.submit([touchy])]
        futures += [group.submit(o) for o in others[1:]]
        results = [f.result(timeout=FUTURE_TIMEOUT_S) for f in futures]
    finally:
        group.close()
    assert [[o.result for o in r] for r in results] == [[Result.OK]] * 4
    assert results[1][0].id == touchy.id
    ids = [touchy.id] + [o[0].id for o in others]
    committed = batch_ids(sqlite_ledger, ids)
    assert committed.keys() == set(ids)
    assert len(set(committed.values())) == len(ids), "each retried in its own transaction"


def test_submissions_too_big_to_share_a_batch_are_split(
    sqlite_ledger: LedgerService,
    committer: GroupCommitter,
    accounts: tuple[uuid.UUID, list[uuid.UUID]],
) -> None:
    bank, customers = accounts
    half = BATCH_EVENTS_MAX // 2 + 1  # two of these do not fit in one batch
    first = [transfer(bank, customers[i % 4], 1) for i in range(half)]
    second = [transfer(bank, customers[i % 4], 1) for i in range(half)]
    futures = [committer.submit(first), committer.submit(second)]
    for future, own in zip(futures, (first, second), strict=True):
        outcomes = future.result(timeout=FUTURE_TIMEOUT_S)
        assert [o.position for o in outcomes] == list(range(half))
        assert [o.id for o in outcomes] == [r.id for r in own]
        assert all(o.ok for o in outcomes)
    committed = batch_ids(sqlite_ledger, [first[0].id, second[0].id])
    assert committed[first[0].id] != committed[second[0].id]


class BlockingLedger(LedgerService):
    """A ledger whose committing thread waits at a gate, so the queue fills up."""

    def __init__(self, inner: LedgerService):
        super().__init__(inner.engine, inner.signer)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def execute_batch(
        self,
        requests: Sequence[TransferRequest],
        *,
        chain_breaks: frozenset[int] = frozenset(),
        system: bool = False,
    ) -> BatchPlan:
        self.entered.set()
        assert self.gate.wait(FUTURE_TIMEOUT_S), "the test never opened the gate"
        return super().execute_batch(requests, chain_breaks=chain_breaks, system=system)


def test_the_queue_takes_queue_events_max_and_refuses_one_more(
    sqlite_ledger: LedgerService, accounts: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    bank, customers = accounts
    blocking = BlockingLedger(sqlite_ledger)
    group = GroupCommitter(blocking, wait_s=0)
    try:
        held = group.submit([transfer(bank, customers[0], 1)])
        assert blocking.entered.wait(FUTURE_TIMEOUT_S)  # the thread is stuck in a commit
        # Invalid events: cheap to answer once the gate opens, and nothing is written.
        full = BATCH_EVENTS_MAX
        assert QUEUE_EVENTS_MAX % full == 0
        waiting = [
            group.submit([transfer(bank, customers[0], 0) for _ in range(full)])
            for _ in range(QUEUE_EVENTS_MAX // full)
        ]  # exactly at the limit: accepted
        with pytest.raises(LedgerOverloadedError):
            group.submit([transfer(bank, customers[0], 1)])
        blocking.gate.set()
        assert [o.result for o in held.result(timeout=FUTURE_TIMEOUT_S)] == [Result.OK]
        for future in waiting:
            outcomes = future.result(timeout=FUTURE_TIMEOUT_S)
            assert len(outcomes) == full
            assert {o.result for o in outcomes} == {Result.AMOUNT_MUST_NOT_BE_ZERO}
        # Drained: the queue takes work again.
        again = group.submit([transfer(bank, customers[1], 1)])
        assert [o.result for o in again.result(timeout=FUTURE_TIMEOUT_S)] == [Result.OK]
    finally:
        blocking.gate.set()
        group.close()


def test_submission_size_limits(committer: GroupCommitter) -> None:
    with pytest.raises(BatchEmptyError):
        committer.submit([])
    too_many = [transfer(uuid.uuid4(), uuid.uuid4(), 1) for _ in range(BATCH_EVENTS_MAX + 1)]
    with pytest.raises(BatchTooLargeError):
        committer.submit(too_many)
    at_limit = committer.submit(too_many[:BATCH_EVENTS_MAX]).result(timeout=FUTURE_TIMEOUT_S)
    assert len(at_limit) == BATCH_EVENTS_MAX
    assert {o.result for o in at_limit} == {Result.DEBIT_ACCOUNT_NOT_FOUND}


def test_submit_after_close_raises_ledger_stopped(
    sqlite_ledger: LedgerService, accounts: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    bank, customers = accounts
    group = GroupCommitter(sqlite_ledger)
    before = group.create_transfers([transfer(bank, customers[0], 1)])
    assert [o.result for o in before] == [Result.OK]
    group.close()
    group.close()  # closing twice is harmless
    with pytest.raises(LedgerStoppedError):
        group.submit([transfer(bank, customers[0], 1)])
    with pytest.raises(LedgerStoppedError):
        group.create_transfers([transfer(bank, customers[0], 1)])


def test_close_answers_submissions_already_queued(
    sqlite_ledger: LedgerService, accounts: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    bank, customers = accounts
    group = GroupCommitter(sqlite_ledger, wait_s=WAIT_S_MAX)
    futures = [group.submit([transfer(bank, customers[i % 4], 1)]) for i in range(10)]
    group.close()
    for future in futures:
        assert future.done()
        assert [o.result for o in future.result()] == [Result.OK]


@pytest.mark.parametrize("wait_s", [0, WAIT_S_MAX])
def test_wait_s_at_its_bounds_is_accepted(sqlite_ledger: LedgerService, wait_s: float) -> None:
    group = GroupCommitter(sqlite_ledger, wait_s=wait_s)
    assert group.wait_s == wait_s
    group.close()


@pytest.mark.parametrize(
    "wait_s",
    [math.nextafter(WAIT_S_MAX, math.inf), WAIT_S_MAX + 0.001, math.nextafter(0, -1), -0.001],
)
def test_wait_s_one_past_its_bounds_is_refused(sqlite_ledger: LedgerService, wait_s: float) -> None:
    with pytest.raises(ValueError, match="wait_s"):
        GroupCommitter(sqlite_ledger, wait_s=wait_s)


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    from zhifu.ops.metrics import REGISTRY

    value = REGISTRY.get_sample_value(name, labels or {})
    return value or 0.0


def test_committed_batches_show_in_the_ledger_metrics(
    committer: GroupCommitter, accounts: tuple[uuid.UUID, list[uuid.UUID]]
) -> None:
    bank, customers = accounts
    ok_before = _sample("zhifu_ledger_transfers_total", {"result": "ok"})
    failed_before = _sample("zhifu_ledger_transfers_total", {"result": "exceeds_credits"})
    batches_before = _sample("zhifu_ledger_batch_events_count")
    outcomes = committer.create_transfers(
        [transfer(bank, customers[0], 5), transfer(customers[1], bank, 10**15)]
    )
    assert [o.result for o in outcomes] == [Result.OK, Result.EXCEEDS_CREDITS]
    assert _sample("zhifu_ledger_transfers_total", {"result": "ok"}) == ok_before + 1
    assert (
        _sample("zhifu_ledger_transfers_total", {"result": "exceeds_credits"}) == failed_before + 1
    )
    assert _sample("zhifu_ledger_batch_events_count") == batches_before + 1

"""Many OS processes against one ledger: no overdraft, no lost update, one chain.

Worker processes (``ledger_worker_process.py hammer``) apply many small batches
that debit one hot customer account far beyond its balance, credit it, move
money between cold accounts, and place, post and void holds on the hot account.
Each reports every event's id and result code; the test then rebuilds every
account's counters from the ``ok`` outcomes alone and checks them against the
database, against SQL sums over ``ledger_transfers`` and against ``verify()``.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from factories import CUSTOMER_FLAGS, open_accounts, open_bank, transfer
from ledger_worker_process import (
    LINKED,
    PENDING,
    POST,
    VOID,
    Worker,
    as_uuid,
    block_seqs,
    count_rows,
    counters_from_transfers,
    query,
    rejections,
    report_problems,
    stored_counters,
    transfer_ids,
)
from scratch_db import require_postgres
from sqlalchemy import Engine

from zhifu.ledger.model import AccountFlags
from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store import migrate
from zhifu.store.engine import create_db_engine

HOT_FUNDING = 20_000
COLD_FUNDING = 200_000
COLD_ACCOUNTS = 24
HOT_FLAGS = CUSTOMER_FLAGS | int(AccountFlags.HISTORY)
WORKER_TIMEOUT_S = 60.0

Counters = list[int]  # debits_pending, debits_posted, credits_pending, credits_posted


class Setup:
    """A migrated ledger with a bank, a hot account and cold accounts, all funded."""

    def __init__(self, url: str, signer: Ed25519Signer):
        self.url = url
        self.signer = signer
        self.engine: Engine = create_db_engine(url, pool_size=2)
        migrate.upgrade(self.engine)
        self.ledger = LedgerService(self.engine, signer)
        self.bank = open_bank(self.ledger)
        (self.hot,) = open_accounts(self.ledger, 1, flags=HOT_FLAGS)
        self.colds = open_accounts(self.ledger, COLD_ACCOUNTS)
        funding = [transfer(self.bank, self.hot, HOT_FUNDING)]
        funding += [transfer(self.bank, c, COLD_FUNDING) for c in self.colds]
        outcomes = self.ledger.create_transfers(funding)
        assert all(o.ok for o in outcomes), outcomes
        self.funding_ids = {r.id for r in funding}
        self.expected: dict[uuid.UUID, Counters] = defaultdict(lambda: [0, 0, 0, 0])
        for r in funding:
            self.add_posted(r.debit_account_id, r.credit_account_id, r.amount)  # type: ignore[arg-type]

    def add_posted(self, debit: uuid.UUID, credit: uuid.UUID, amount: int) -> None:
        self.expected[debit][1] += amount
        self.expected[credit][3] += amount

    def worker_config(self, tmp_path: Path, index: int, **extra: Any) -> dict[str, Any]:
        return {
            "url": self.url,
            "seed": self.signer.seed_base64(),
            "hot": str(self.hot),
            "bank": str(self.bank),
            "colds": [str(c) for c in self.colds],
            "go_path": str(tmp_path / "go"),
            "out_path": str(tmp_path / f"out-{index}.json"),
            "rng_seed": random.randrange(2**32),
            **extra,
        }

    def close(self) -> None:
        self.engine.dispose()


def run_processes(tmp_path: Path, workers: list[Worker]) -> None:
    """Start every worker at the same moment and wait for all of them."""
    try:
        for worker in workers:
            worker.wait_ready()
        (tmp_path / "go").touch()
        for worker in workers:
            worker.join(WORKER_TIMEOUT_S)
    finally:
        for worker in workers:
            worker.kill()


def read_outcomes(
    paths: list[Path],
) -> tuple[list[list[dict[str, Any]]], list[list[dict[str, Any]]]]:
    reports = [json.loads(p.read_text()) for p in paths]
    return [r["outcomes"] for r in reports], [x for r in reports for x in r["replays"]]


def apply_ok_outcomes(setup: Setup, outcomes: list[dict[str, Any]]) -> None:
    """Rebuild the counters from what the processes say succeeded."""
    holds = {
        o["id"]: (uuid.UUID(o["debit"]), uuid.UUID(o["credit"]), o["amount"])
        for o in outcomes
        if o["result"] == "ok" and o["flags"] & PENDING
    }
    expected = setup.expected
    for o in outcomes:
        if o["result"] != "ok":
            continue
        if o["flags"] & PENDING:
            debit, credit, amount = holds[o["id"]]
            expected[debit][0] += amount
            expected[credit][2] += amount
        elif o["flags"] & (POST | VOID):
            debit, credit, held = holds[o["pending_id"]]
            expected[debit][0] -= held
            expected[credit][2] -= held
            if o["flags"] & POST:
                setup.add_posted(debit, credit, held if o["amount"] is None else o["amount"])
        else:
            setup.add_posted(uuid.UUID(o["debit"]), uuid.UUID(o["credit"]), o["amount"])


def check_linked_pairs(per_worker: list[list[dict[str, Any]]]) -> None:
    for outcomes in per_worker:
        for first, second in itertools.pairwise(outcomes):
            if first["flags"] & LINKED:
                assert first["batch"] == second["batch"]
                assert (first["result"] == "ok") == (second["result"] == "ok"), (first, second)
                if first["result"] != "ok":
                    assert "linked_event_failed" in (first["result"], second["result"])


def check_hammered_ledger(setup: Setup, per_worker: list[list[dict[str, Any]]]) -> None:
    outcomes = [o for worker in per_worker for o in worker]
    ids = [o["id"] for o in outcomes]
    assert len(ids) == len(set(ids)), "every event has its own id"
    apply_ok_outcomes(setup, outcomes)
    hot = setup.hot

    # Not a vacuous race: the hot account was asked for several times its money.
    hot_debits = [o for o in outcomes if o["kind"] in ("hot_debit", "hot_pending")]
    credited = HOT_FUNDING + sum(
        o["amount"] for o in outcomes if o["kind"] == "hot_credit" and o["result"] == "ok"
    )
    assert sum(o["amount"] for o in hot_debits) > 3 * credited
    refused = [o for o in hot_debits if o["result"] == "exceeds_credits"]
    assert refused, "some debits of the hot account must have been refused"
    writers_debiting = {
        i
        for i, worker in enumerate(per_worker)
        for o in worker
        if o["kind"] in ("hot_debit", "hot_pending") and o["result"] == "ok"
    }
    assert len(writers_debiting) >= 2, "several processes debited the hot account"

    # Every ok id is stored exactly once, and nothing else is.
    ok_ids = {uuid.UUID(o["id"]) for o in outcomes if o["result"] == "ok"}
    stored = transfer_ids(setup.engine)
    assert len(stored) == len(set(stored))
    assert set(stored) == ok_ids | setup.funding_ids
    assert len(stored) == len(ok_ids) + len(setup.funding_ids)

    # A refused debit left no transfer and stays refused.
    rejected = rejections(setup.engine)
    exceeds = {uuid.UUID(o["id"]) for o in outcomes if o["result"] == "exceeds_credits"}
    assert not exceeds & set(stored)
    assert all(rejected.get(i) == "exceeds_credits" for i in exceeds)

    # No overdraft and no lost update, three ways.
    counters = stored_counters(setup.engine)
    dp, dpo, _cp, cpo = counters[hot]
    assert dp + dpo <= cpo, f"hot account overdrawn: {counters[hot]}"
    assert list(counters[hot]) == setup.expected[hot]
    assert counters_from_transfers(setup.engine)[hot] == counters[hot]
    for account_id, value in counters.items():
        assert list(value) == setup.expected.get(account_id, [0, 0, 0, 0]), account_id
        if account_id != setup.bank:
            assert value[0] + value[1] <= value[3], f"{account_id} overdrawn: {value}"

    # The hot account's history ends at its counters, one row per transfer.
    history = query(
        setup.engine,
        "SELECT h.ts, h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted,"
        " t.debit_account_id, t.credit_account_id"
        " FROM ledger_account_history h JOIN ledger_transfers t ON t.id = h.transfer_id"
        " ORDER BY h.ts",
    )
    hot_history = [h for h in history if hot in (as_uuid(h[5]), as_uuid(h[6]))]
    touching = sum(
        1
        for row in query(
            setup.engine, "SELECT debit_account_id, credit_account_id FROM ledger_transfers"
        )
        if hot in (as_uuid(row[0]), as_uuid(row[1]))
    )
    assert len(hot_history) == len(history) == touching
    assert tuple(int(v) for v in hot_history[-1][1:5]) == counters[hot]

    sealed = 0
    while count := setup.ledger.seal():  # at most SEAL_BATCHES_MAX a call
        sealed += count
    assert sealed == count_rows(setup.engine, "ledger_batches")
    assert block_seqs(setup.engine) == list(range(1, sealed + 1))
    report = setup.ledger.verify()
    assert report.ok, report_problems(report)
    assert report.unsealed_batches == 0


def check_replays(replays: list[list[dict[str, Any]]]) -> None:
    """A retried batch changes nothing and answers as docs/ledger.md says.

    Outside linked chains a retry gets ``exists`` for what succeeded and the
    same state code for what failed. In a chain, ``exists`` is a failure like
    any other code: the chain fails as a whole and its other events answer
    ``linked_event_failed``; a chain never succeeds on a retry.
    """
    assert replays, "some batches were replayed"
    for batch in replays:
        in_chain = False
        for index, event in enumerate(batch):
            chained = in_chain or bool(event["flags"] & LINKED)
            in_chain = bool(event["flags"] & LINKED)
            assert event["replay"] != "ok", event
            if not chained:
                expected = "exists" if event["first"] == "ok" else event["first"]
                assert event["replay"] == expected, event
            elif event["flags"] & LINKED and event["first"] == "ok":
                assert event["replay"] == "exists", event
                assert batch[index + 1]["replay"] == "linked_event_failed", batch[index + 1]


def hammer(
    setup: Setup, tmp_path: Path, *, processes: int, batches: int
) -> list[list[dict[str, Any]]]:
    configs = [
        setup.worker_config(
            tmp_path, i, batches=batches, events_min=8, events_max=16, replay_ratio=0.1
        )
        for i in range(processes)
    ]
    workers = [Worker("hammer", c, tmp_path, f"hammer-{i}") for i, c in enumerate(configs)]
    run_processes(tmp_path, workers)
    per_worker, replays = read_outcomes([Path(c["out_path"]) for c in configs])
    check_replays(replays)
    check_linked_pairs(per_worker)
    return per_worker


@pytest.mark.postgres
@pytest.mark.slow
def test_four_processes_hammer_one_hot_account_on_postgres(
    postgres_url: str, signer: Ed25519Signer, tmp_path: Path
) -> None:
    require_postgres()
    setup = Setup(postgres_url, signer)
    try:
        per_worker = hammer(setup, tmp_path, processes=4, batches=300)
        check_hammered_ledger(setup, per_worker)
    finally:
        setup.close()


@pytest.mark.slow
def test_two_processes_hammer_one_hot_account_on_sqlite(
    sqlite_url: str, signer: Ed25519Signer, tmp_path: Path
) -> None:
    setup = Setup(sqlite_url, signer)
    try:
        per_worker = hammer(setup, tmp_path, processes=2, batches=300)
        check_hammered_ledger(setup, per_worker)
    finally:
        setup.close()


def sealers_and_writers(setup: Setup, tmp_path: Path, *, writers: int, sealers: int) -> None:
    write_configs = [
        setup.worker_config(
            tmp_path, i, batches=200, events_min=4, events_max=10, replay_ratio=0.05
        )
        for i in range(writers)
    ]
    seal_configs = [
        setup.worker_config(tmp_path, writers + i, stop_path=str(tmp_path / "stop"), seal_limit=3)
        for i in range(sealers)
    ]
    writer_procs = [
        Worker("hammer", c, tmp_path, f"writer-{i}") for i, c in enumerate(write_configs)
    ]
    sealer_procs = [Worker("seal", c, tmp_path, f"sealer-{i}") for i, c in enumerate(seal_configs)]
    everyone = writer_procs + sealer_procs
    try:
        for worker in everyone:
            worker.wait_ready()
        (tmp_path / "go").touch()
        for worker in writer_procs:
            worker.join(WORKER_TIMEOUT_S)
        (tmp_path / "stop").touch()
        for worker in sealer_procs:
            worker.join(WORKER_TIMEOUT_S)
    finally:
        for worker in everyone:
            worker.kill()

    sealed_by_sealers = [
        json.loads(Path(c["out_path"]).read_text())["sealed"] for c in seal_configs
    ]
    assert sum(map(sum, sealed_by_sealers)) > 0, "the sealers sealed while the writers wrote"
    remaining = 0
    while count := setup.ledger.seal():
        remaining += count
    batches = count_rows(setup.engine, "ledger_batches")
    seqs = block_seqs(setup.engine)
    assert seqs == list(range(1, batches + 1)), "one unbroken chain, one block per batch"
    assert sum(map(sum, sealed_by_sealers)) + remaining == batches, "no batch sealed twice"
    assert count_rows(setup.engine, "ledger_unsealed_batches") == 0
    distinct = query(setup.engine, "SELECT COUNT(DISTINCT batch_id) FROM ledger_blocks")[0][0]
    assert int(distinct) == batches
    report = setup.ledger.verify()
    assert report.ok, report_problems(report)
    assert report.blocks == batches


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_sealers_build_one_chain_on_postgres(
    postgres_url: str, signer: Ed25519Signer, tmp_path: Path
) -> None:
    require_postgres()
    setup = Setup(postgres_url, signer)
    try:
        sealers_and_writers(setup, tmp_path, writers=2, sealers=3)
    finally:
        setup.close()


@pytest.mark.slow
def test_concurrent_sealers_build_one_chain_on_sqlite(
    sqlite_url: str, signer: Ed25519Signer, tmp_path: Path
) -> None:
    setup = Setup(sqlite_url, signer)
    try:
        sealers_and_writers(setup, tmp_path, writers=2, sealers=3)
    finally:
        setup.close()

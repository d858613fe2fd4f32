"""Crash safety: SIGKILL a process that is committing batches, then recover.

A child process (``ledger_worker_process.py crash``) applies batches of 2,000
transfers in a loop and prints a line after each commit. The test kills it with
SIGKILL after a random number of committed batches, usually in the middle of
the next one, then opens the ledger again and checks that every batch the
child reported is there and whole, that the batch in flight is all there or
not there at all, that the counters still match the transfers, that the
journal seals and verifies, and that the ledger takes new batches. Each engine
is killed several times at different moments.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from factories import open_accounts, open_bank, transfer, void
from ledger_worker_process import (
    PENDING,
    Worker,
    as_uuid,
    batch_problems,
    block_seqs,
    count_rows,
    counter_mismatches,
    query,
    report_problems,
    stored_counters,
)
from scratch_db import require_postgres
from sqlalchemy import Engine

from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store import migrate
from zhifu.store.engine import create_db_engine

BATCH_SIZE = 2000
CUSTOMERS = 20
CUSTOMER_FUNDING = 100_000
LINE_TIMEOUT_S = 30.0
ORPHAN_WAIT_S = 10.0
# How each round picks its moment: mid-batch after a random delay, or right
# after a commit line (between batches, or while the child seals).
KILL_MOMENTS = ("mid_batch",) * 3 + ("after_commit",) + ("mid_batch",) * 3 + ("after_commit",)


@dataclass
class CrashLog:
    """What the killed children said was durable."""

    committed: dict[uuid.UUID, int] = field(default_factory=dict)  # batch id -> transfers
    ours: set[uuid.UUID] = field(default_factory=set)  # batches the test itself wrote
    # How the kills landed, for the test's output.
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1


class LineReader:
    """Reads a child's stdout on a thread, so the test can wait with a timeout."""

    def __init__(self, worker: Worker):
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(worker,), daemon=True)
        self._thread.start()

    def _read(self, worker: Worker) -> None:
        while line := worker.readline():
            self.lines.put((time.monotonic(), line.strip()))
        self.lines.put((time.monotonic(), ""))  # end of output

    def next(self, worker: Worker) -> tuple[float, str]:
        try:
            at, line = self.lines.get(timeout=LINE_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"{worker.name} went silent\n{worker.stderr()}") from None
        assert line, f"{worker.name} stopped on its own\n{worker.stderr()}"
        return at, line

    def rest(self) -> list[str]:
        self._thread.join(timeout=LINE_TIMEOUT_S)
        lines = []
        while not self.lines.empty():
            line = self.lines.get_nowait()[1]
            if line:
                lines.append(line)
        return lines


def record(line: str, log: CrashLog) -> None:
    if line.startswith("committed "):
        _, _index, batch_id, count = line.split()
        log.committed[uuid.UUID(batch_id)] = int(count)


def run_until_killed(worker: Worker, rng: random.Random, moment: str, log: CrashLog) -> bool:
    """Kill the child at ``moment``; whether a batch was in flight (started, not reported)."""
    reader = LineReader(worker)
    started: dict[str, float] = {}
    durations: list[float] = []
    commits_wanted = rng.randint(1, 3)
    commits = 0
    last_start, last_committed = "", ""
    try:
        while True:
            at, line = reader.next(worker)
            record(line, log)
            kind, *rest = line.split()
            if kind == "start":
                started[rest[0]] = at
                last_start = rest[0]
                if commits >= commits_wanted and moment == "mid_batch":
                    # Somewhere inside the batch's database transaction, most likely.
                    batch_s = sum(durations) / len(durations)
                    # Now and then a little past it, so a kill also lands between
                    # the commit and its line, or in the seal after it.
                    time.sleep(rng.uniform(0, 1.3 * batch_s))
                    break
            elif kind == "committed":
                last_committed = rest[0]
                commits += 1
                durations.append(at - started[rest[0]])
                if commits >= commits_wanted and moment == "after_commit":
                    time.sleep(rng.uniform(0, 0.01))
                    break
    finally:
        worker.process.kill()  # SIGKILL: no clean-up of any kind runs
        worker.process.wait()
    for line in reader.rest():  # lines written before the kill landed
        record(line, log)
        if line.startswith("committed "):
            last_committed = line.split()[1]
        elif line.startswith("start "):
            last_start = line.split()[1]
    assert worker.process.returncode == -9, worker.stderr()
    assert worker.process.stdout is not None
    worker.process.stdout.close()
    return last_start != last_committed


def wait_for_orphan_backends(engine: Engine) -> None:
    """On PostgreSQL, wait until the killed client's backend has rolled back."""
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while True:
        busy = query(
            engine,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            " AND state <> 'idle'",
        )[0][0]
        if busy == 0:
            return
        assert time.monotonic() < deadline, "the killed client's backend never went away"
        time.sleep(0.01)


def open_holds(engine: Engine) -> list[uuid.UUID]:
    rows = query(
        engine,
        f"SELECT t.id FROM ledger_transfers t WHERE (t.flags & {PENDING}) <> 0"
        " AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id)",
    )
    return [as_uuid(row[0]) for row in rows]


def check_recovered(
    ledger: LedgerService,
    bank: uuid.UUID,
    customers: list[uuid.UUID],
    log: CrashLog,
    *,
    in_flight: bool,
) -> None:
    engine = ledger.engine
    wait_for_orphan_backends(engine)
    batches = {
        as_uuid(row[0]): int(row[1])
        for row in query(engine, "SELECT id, transfer_count FROM ledger_batches")
    }
    # Everything the child reported committed survived, with its size.
    missing = {b: n for b, n in log.committed.items() if batches.get(b) != n}
    assert not missing, f"reported batches lost or changed: {missing}"
    # The batch in flight is either all there or not there at all.
    unreported = batches.keys() - log.committed.keys() - log.ours
    assert len(unreported) <= (1 if in_flight else 0), unreported
    for batch_id in unreported:
        log.committed[batch_id] = batches[batch_id]
    if in_flight:
        log.count("in-flight batch committed" if unreported else "in-flight batch rolled back")
    else:
        log.count("killed between batches")
    assert batch_problems(engine) == []
    assert counter_mismatches(engine) == []
    for account_id, (dp, dpo, _cp, cpo) in stored_counters(engine).items():
        assert account_id == bank or dp + dpo <= cpo, f"{account_id} overdrawn"

    while ledger.seal():
        pass
    report = ledger.verify()
    assert report.ok, report_problems(report)
    assert report.unsealed_batches == 0
    assert block_seqs(engine) == list(range(1, len(batches) + 1))

    # The ledger takes new work: a transfer, and the release of a hold left open.
    requests = [transfer(bank, customers[0], 1)]
    holds = open_holds(engine)
    if holds:
        requests.append(void(holds[0]))
    outcomes = ledger.create_transfers(requests)
    assert [o.result for o in outcomes] == ["ok"] * len(requests)
    after = {as_uuid(row[0]) for row in query(engine, "SELECT id FROM ledger_batches")}
    assert len(after - batches.keys()) == 1
    log.ours |= after - batches.keys()


def crash_repeatedly(url: str, signer: Ed25519Signer, tmp_path: Path) -> None:
    engine = create_db_engine(url, pool_size=2)
    try:
        migrate.upgrade(engine)
        ledger = LedgerService(engine, signer)
        bank = open_bank(ledger)
        customers = open_accounts(ledger, CUSTOMERS)
        outcomes = ledger.create_transfers([transfer(bank, c, CUSTOMER_FUNDING) for c in customers])
        assert all(o.ok for o in outcomes)
        log = CrashLog()
        log.ours = {as_uuid(row[0]) for row in query(engine, "SELECT id FROM ledger_batches")}
        rng = random.Random()
        for round_index, moment in enumerate(KILL_MOMENTS):
            config = {
                "url": url,
                "seed": signer.seed_base64(),
                "bank": str(bank),
                "customers": [str(c) for c in customers],
                "batch_size": BATCH_SIZE,
                "seal_ratio": 0.3,
                "rng_seed": rng.randrange(2**32),
            }
            worker = Worker("crash", config, tmp_path, f"crash-{round_index}")
            in_flight = run_until_killed(worker, rng, moment, log)
            check_recovered(ledger, bank, customers, log, in_flight=in_flight)
        assert count_rows(engine, "ledger_transfers") >= len(KILL_MOMENTS) * BATCH_SIZE // 2
        print(f"{len(KILL_MOMENTS)} kills: {log.outcomes}")
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigkill_mid_batch_leaves_a_whole_ledger_on_sqlite(
    sqlite_url: str, signer: Ed25519Signer, tmp_path: Path
) -> None:
    crash_repeatedly(sqlite_url, signer, tmp_path)


@pytest.mark.postgres
@pytest.mark.slow
def test_sigkill_mid_batch_leaves_a_whole_ledger_on_postgres(
    postgres_url: str, signer: Ed25519Signer, tmp_path: Path
) -> None:
    require_postgres()
    crash_repeatedly(postgres_url, signer, tmp_path)

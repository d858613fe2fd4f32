"""Process entry points and shared database checks for the ledger's concurrency tests.

Run as a script, this module is one OS process of a test:

``python ledger_worker_process.py hammer CONFIG``
    Applies many small ``create_transfers`` batches against a hot account and
    cold ones, replays some batches, and writes every outcome to a JSON file.
``python ledger_worker_process.py seal CONFIG``
    Calls ``seal()`` in a loop until a stop file appears; writes how many
    blocks it sealed.
``python ledger_worker_process.py crash CONFIG``
    Applies batches of transfers forever, printing ``start N`` before and
    ``committed N BATCH_ID COUNT`` after each committed batch, until killed.

CONFIG is a JSON file. Hammer and seal workers print ``ready`` and then wait
for the ``go_path`` file, so that every process starts at the same moment.

Imported by the tests, it also provides checks that read the tables with plain
SQL, independently of :mod:`zhifu.ledger.verify`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from zhifu.ledger.model import TransferFlags, TransferRequest
from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store.engine import create_db_engine

TRANSFER_CODE = 10
GO_WAIT_S_MAX = 60.0
SEAL_IDLE_SLEEP_S = 0.002
CRASH_BATCHES_MAX = 10_000  # the parent kills the child long before this

PENDING = int(TransferFlags.PENDING)
POST = int(TransferFlags.POST_PENDING)
VOID = int(TransferFlags.VOID_PENDING)
LINKED = int(TransferFlags.LINKED)


# --- shared checks (imported by the tests) -----------------------------------------------


def as_uuid(value: Any) -> uuid.UUID:
    """An id as PostgreSQL (uuid) or SQLite (16-byte blob) hands it back."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value))


def query(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.exec_driver_sql(sql).fetchall())


def transfer_ids(engine: Engine) -> list[uuid.UUID]:
    return [as_uuid(row[0]) for row in query(engine, "SELECT id FROM ledger_transfers")]


def rejections(engine: Engine) -> dict[uuid.UUID, str]:
    rows = query(engine, "SELECT id, result FROM ledger_rejections")
    return {as_uuid(row[0]): row[1] for row in rows}


def stored_counters(engine: Engine) -> dict[uuid.UUID, tuple[int, int, int, int]]:
    rows = query(
        engine,
        "SELECT id, debits_pending, debits_posted, credits_pending, credits_posted"
        " FROM ledger_accounts",
    )
    return {as_uuid(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def counters_from_transfers(engine: Engine) -> dict[uuid.UUID, tuple[int, int, int, int]]:
    """Every account's four counters summed from ``ledger_transfers`` in SQL."""
    posted = f"(t.flags & {PENDING | VOID}) = 0"  # plain transfers and posts
    open_hold = (
        f"(t.flags & {PENDING}) <> 0 AND NOT EXISTS"
        " (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id)"
    )
    sums: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    # (counter, the account's side, which transfers count)
    queries = (
        (0, "debit_account_id", open_hold),
        (1, "debit_account_id", posted),
        (2, "credit_account_id", open_hold),
        (3, "credit_account_id", posted),
    )
    for column, side, where in queries:
        sql = (
            f"SELECT t.{side}, SUM(t.amount) FROM ledger_transfers t WHERE {where}"
            f" GROUP BY t.{side}"
        )
        for account_id, total in query(engine, sql):
            sums[as_uuid(account_id)][column] = int(total)
    return {account_id: (s[0], s[1], s[2], s[3]) for account_id, s in sums.items()}


def counter_mismatches(engine: Engine) -> list[str]:
    """Accounts whose stored counters differ from the sums of their transfers."""
    stored = stored_counters(engine)
    summed = counters_from_transfers(engine)
    problems = [
        f"account {account_id}: stored {counters} != summed {summed.get(account_id, (0,) * 4)}"
        for account_id, counters in stored.items()
        if counters != summed.get(account_id, (0, 0, 0, 0))
    ]
    problems += [f"transfers name unknown account {a}" for a in summed.keys() - stored.keys()]
    return problems


def batch_problems(engine: Engine) -> list[str]:
    """Batches that are not whole: a count that differs, or transfers without a batch row."""
    problems = [
        f"batch {as_uuid(row[0])}: transfer_count {row[1]} but {row[2]} transfers"
        for row in query(
            engine,
            "SELECT b.id, b.transfer_count,"
            " (SELECT COUNT(*) FROM ledger_transfers t WHERE t.batch_id = b.id)"
            " FROM ledger_batches b",
        )
        if int(row[1]) != int(row[2])
    ]
    problems += [
        f"{row[1]} transfers of batch {as_uuid(row[0])} have no ledger_batches row"
        for row in query(
            engine,
            "SELECT t.batch_id, COUNT(*) FROM ledger_transfers t"
            " WHERE NOT EXISTS (SELECT 1 FROM ledger_batches b WHERE b.id = t.batch_id)"
            " GROUP BY t.batch_id",
        )
    ]
    return problems


def block_seqs(engine: Engine) -> list[int]:
    return [int(row[0]) for row in query(engine, "SELECT seq FROM ledger_blocks ORDER BY seq")]


def count_rows(engine: Engine, table: str) -> int:
    return int(query(engine, f"SELECT COUNT(*) FROM {table}")[0][0])


def report_problems(report: Any) -> list[str]:
    """The failing checks of a :class:`VerifyReport`, for an assertion message."""
    return [f"{c.name}: {c.problems}" for c in report.checks if not c.ok]


# --- launching processes (used by the tests) -------------------------------------------

SCRIPT = Path(__file__).resolve()


class Worker:
    """One child process running a mode of this script; stderr goes to a file."""

    def __init__(self, mode: str, config: dict[str, Any], directory: Path, name: str):
        self.name = name
        self.config_path = directory / f"{name}.json"
        self.config_path.write_text(json.dumps(config))
        self.stderr_path = directory / f"{name}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPT), mode, str(self.config_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        line = self.readline()
        assert line.strip() == "ready", f"{self.name} did not start: {line!r}\n{self.stderr()}"

    def join(self, timeout_s: float) -> None:
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} ran past {timeout_s} s\n{self.stderr()}") from None
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
        assert self.process.returncode == 0, (
            f"{self.name} exited with {self.process.returncode}\n{self.stderr()}"
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


# --- process side --------------------------------------------------------------------------


def _open_ledger(config: dict[str, Any]) -> LedgerService:
    engine = create_db_engine(config["url"], pool_size=2)
    return LedgerService(engine, Ed25519Signer.from_base64(config["seed"]))


def _wait_for_go(config: dict[str, Any]) -> None:
    print("ready", flush=True)
    go = Path(config["go_path"])
    deadline = time.monotonic() + GO_WAIT_S_MAX
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.001)


def _request(
    debit: str | None,
    credit: str | None,
    amount: int | None,
    *,
    flags: int = 0,
    pending_id: uuid.UUID | None = None,
) -> TransferRequest:
    resolving = bool(flags & (POST | VOID))
    return TransferRequest(
        id=uuid.uuid4(),
        debit_account_id=uuid.UUID(debit) if debit else None,
        credit_account_id=uuid.UUID(credit) if credit else None,
        amount=amount,
        currency=None if resolving else "CNY",
        code=TRANSFER_CODE,
        flags=flags,
        pending_id=pending_id,
    )


def _resolve(rng: random.Random, pending_id: uuid.UUID, amount_max: int) -> TransferRequest:
    """A post (whole or part) or a void of the hold ``pending_id``."""
    if rng.random() < 0.6:
        amount = rng.choice([None, rng.randint(1, amount_max)])
        return _request(None, None, amount, flags=POST, pending_id=pending_id)
    return _request(None, None, None, flags=VOID, pending_id=pending_id)


def _hammer_batch(
    rng: random.Random, config: dict[str, Any], open_holds: list[uuid.UUID]
) -> list[tuple[str, TransferRequest]]:
    """One small batch: (kind, request) pairs; kinds name what the event does."""
    hot, bank, colds = config["hot"], config["bank"], config["colds"]
    events: list[tuple[str, TransferRequest]] = []
    size = rng.randint(config["events_min"], config["events_max"])
    while len(events) < size:
        roll = rng.random()
        if roll < 0.30:
            events.append(("hot_debit", _request(hot, rng.choice(colds), rng.randint(50, 500))))
        elif roll < 0.42:
            payer = bank if rng.random() < 0.5 else rng.choice(colds)
            events.append(("hot_credit", _request(payer, hot, rng.randint(10, 150))))
        elif roll < 0.62:
            a, b = rng.sample(colds, 2)
            events.append(("cold", _request(a, b, rng.randint(1, 3000))))
        elif roll < 0.77:
            amount = rng.randint(50, 500)
            hold = _request(hot, rng.choice(colds), amount, flags=PENDING)
            events.append(("hot_pending", hold))
            if rng.random() < 0.3:  # resolved in its own batch
                events.append(("resolve", _resolve(rng, hold.id, amount)))
        elif roll < 0.90:
            if open_holds:
                pending_id = open_holds.pop(rng.randrange(len(open_holds)))
                events.append(("resolve", _resolve(rng, pending_id, 50)))
        else:
            # A linked pair: a debit of the hot account and a credit back, all or nothing.
            debit = _request(hot, rng.choice(colds), rng.randint(50, 500), flags=LINKED)
            events.append(("hot_debit", debit))
            events.append(("hot_credit", _request(rng.choice(colds), hot, rng.randint(1, 40))))
    return events


def _describe(kind: str, request: TransferRequest, result: str, batch: int) -> dict[str, Any]:
    def text(value: uuid.UUID | None) -> str | None:
        return None if value is None else str(value)

    return {
        "id": str(request.id),
        "kind": kind,
        "debit": text(request.debit_account_id),
        "credit": text(request.credit_account_id),
        "amount": request.amount,
        "flags": request.flags,
        "pending_id": text(request.pending_id),
        "result": result,
        "batch": batch,
    }


def run_hammer(config: dict[str, Any]) -> None:
    ledger = _open_ledger(config)
    rng = random.Random(config["rng_seed"])
    open_holds: list[uuid.UUID] = []
    outcomes: list[dict[str, Any]] = []
    replays: list[dict[str, Any]] = []
    previous: tuple[list[TransferRequest], list[str]] | None = None
    _wait_for_go(config)
    started = time.time()
    for batch in range(config["batches"]):
        events = _hammer_batch(rng, config, open_holds)
        requests = [request for _, request in events]
        results = [str(o.result) for o in ledger.create_transfers(requests)]
        for (kind, request), result in zip(events, results, strict=True):
            outcomes.append(_describe(kind, request, result, batch))
            if kind == "hot_pending" and result == "ok":
                open_holds.append(request.id)
        # Holds resolved in their own batch are not open.
        resolved = {r.pending_id for r, res in zip(requests, results, strict=True) if res == "ok"}
        open_holds[:] = [h for h in open_holds if h not in resolved]
        if previous is not None and rng.random() < config["replay_ratio"]:
            again = [str(o.result) for o in ledger.create_transfers(previous[0])]
            replays.append(
                [
                    {"id": str(r.id), "flags": r.flags, "first": first, "replay": second}
                    for r, first, second in zip(previous[0], previous[1], again, strict=True)
                ]
            )
        previous = (requests, results)
    report = {"outcomes": outcomes, "replays": replays, "window": [started, time.time()]}
    Path(config["out_path"]).write_text(json.dumps(report))


def run_sealer(config: dict[str, Any]) -> None:
    ledger = _open_ledger(config)
    stop = Path(config["stop_path"])
    sealed: list[int] = []
    _wait_for_go(config)
    while not stop.exists():
        count = ledger.seal(limit=config.get("seal_limit", 1000))
        if count:
            sealed.append(count)
        else:
            time.sleep(SEAL_IDLE_SLEEP_S)
    Path(config["out_path"]).write_text(json.dumps({"sealed": sealed}))


def _crash_batch(
    rng: random.Random, config: dict[str, Any], open_holds: list[uuid.UUID]
) -> list[TransferRequest]:
    bank, customers = config["bank"], config["customers"]
    requests: list[TransferRequest] = []
    while len(requests) < config["batch_size"]:
        roll = rng.random()
        if roll < 0.55:
            requests.append(_request(bank, rng.choice(customers), rng.randint(1, 1000)))
        elif roll < 0.80:
            a, b = rng.sample(customers, 2)
            requests.append(_request(a, b, rng.randint(1, 5000)))
        elif roll < 0.92:
            a, b = rng.sample(customers, 2)
            requests.append(_request(a, b, rng.randint(1, 500), flags=PENDING))
        elif open_holds:
            pending_id = open_holds.pop(rng.randrange(len(open_holds)))
            flags = POST if rng.random() < 0.5 else VOID
            requests.append(_request(None, None, None, flags=flags, pending_id=pending_id))
    return requests


def run_crash(config: dict[str, Any]) -> None:
    """Commit batches until killed; a line after each commit says what is durable."""
    ledger = _open_ledger(config)
    rng = random.Random(config["rng_seed"])
    open_holds: list[uuid.UUID] = []
    for index in range(CRASH_BATCHES_MAX):
        requests = _crash_batch(rng, config, open_holds)
        print(f"start {index}", flush=True)
        plan = ledger.execute_batch(requests)
        print(f"committed {index} {plan.batch_id} {len(plan.new_transfers)}", flush=True)
        open_holds.extend(t.id for t in plan.new_transfers if t.flags & PENDING)
        if rng.random() < config["seal_ratio"]:
            print(f"sealed {ledger.seal()}", flush=True)


MODES = {"hammer": run_hammer, "seal": run_sealer, "crash": run_crash}


def main(argv: list[str]) -> int:
    """An uncaught error prints its traceback to stderr and exits with status 1."""
    mode, config_path = argv[1], argv[2]
    MODES[mode](json.loads(Path(config_path).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

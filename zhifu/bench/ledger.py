"""``zhifu bench ledger``: ledger throughput against plain inserts on the same engine.

The run works on a database of its own (a new SQLite file, or a new
PostgreSQL database on the given server that is dropped afterwards), so it
never touches real data. Commits are durable (SQLite ``synchronous=FULL``,
PostgreSQL's default ``fsync``/``synchronous_commit``). Each timed batch is
one ledger database transaction plus sealing its block, as in production.

The baseline, ``raw_insert_rows_per_s``, inserts the same number of rows of
the transfers table's width into a table with only a primary key, in batches
of the same size and by the same driver path, with no ledger logic.
"""

from __future__ import annotations

import random
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from zhifu.ids import uuid7
from zhifu.ledger.model import (
    BATCH_EVENTS_MAX,
    AccountFlags,
    AccountRequest,
    TransferRequest,
)
from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store import migrate
from zhifu.store.engine import _normalise_url, create_db_engine

TRANSFERS_MAX = 100_000_000
ACCOUNTS_MAX = 10_000_000
FUNDING_MINOR = 10**12
CURRENCY = "CNY"

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class LedgerBenchConfig:
    database_url: str | None = None
    transfers: int = 200_000
    accounts: int = 10_000
    hot_accounts: int = 0
    batch_size: int = BATCH_EVENTS_MAX
    verify: bool = True
    seed: int = 1


def check_config(config: LedgerBenchConfig) -> None:
    """Raises ValueError naming the option that is out of bounds."""
    url = config.database_url
    if url is not None and not url.startswith(("sqlite", "postgres://", "postgresql")):
        raise ValueError(
            "--database-url must be a PostgreSQL server URL (postgresql://...) or sqlite://"
        )
    if not 1 <= config.transfers <= TRANSFERS_MAX:
        raise ValueError(f"--transfers must be between 1 and {TRANSFERS_MAX}")
    if not 2 <= config.accounts <= ACCOUNTS_MAX:
        raise ValueError(f"--accounts must be between 2 and {ACCOUNTS_MAX}")
    if not 0 <= config.hot_accounts < config.accounts:
        raise ValueError("--hot-accounts must be at least 0 and fewer than --accounts")
    if not 1 <= config.batch_size <= BATCH_EVENTS_MAX:
        raise ValueError(f"--batch-size must be between 1 and {BATCH_EVENTS_MAX}")


@contextmanager
def scratch_database(database_url: str | None) -> Iterator[tuple[str, str]]:
    """A new empty database: (url, engine name). Removed afterwards."""
    if database_url is None or database_url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="zhifu-bench-") as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}", "sqlite"
        return
    url = make_url(_normalise_url(database_url))
    name = f"zhifu_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False), "postgresql"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_ledger_bench(config: LedgerBenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    check_config(config)
    with scratch_database(config.database_url) as (url, engine_name):
        engine = create_db_engine(url, pool_size=2)
        try:
            migrate.upgrade(engine)
            service = LedgerService(engine, Ed25519Signer.generate())
            accounts = _create_accounts(service, config)
            result = _timed_transfers(service, accounts, config, progress)
            raw_rows_per_s = _raw_insert_rate(engine, config.transfers, config.batch_size)
            if config.verify:
                started = time.perf_counter()
                report = service.verify()
                result["verify_ok"] = report.ok
                result["verify_s"] = round(time.perf_counter() - started, 3)
        finally:
            engine.dispose()
    result["engine"] = engine_name
    result["raw_insert_rows_per_s"] = round(raw_rows_per_s)
    result["ratio_to_raw"] = round(result["transfers_per_s"] / raw_rows_per_s, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def _create_accounts(service: LedgerService, config: LedgerBenchConfig) -> list[uuid.UUID]:
    """Customer accounts that may not be overdrawn, funded from one bank account."""
    bank = uuid7()
    service.create_accounts([AccountRequest(bank, CURRENCY, 1)])
    ids = [uuid7() for _ in range(config.accounts)]
    flags = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    for start in range(0, len(ids), BATCH_EVENTS_MAX):
        chunk = ids[start : start + BATCH_EVENTS_MAX]
        service.create_accounts([AccountRequest(i, CURRENCY, 2, flags) for i in chunk])
        service.execute_batch(
            [TransferRequest(uuid7(), bank, i, FUNDING_MINOR, CURRENCY, 1) for i in chunk]
        )
    service.seal()
    return ids


def _batches(
    accounts: list[uuid.UUID], config: LedgerBenchConfig
) -> Iterator[list[TransferRequest]]:
    """Random transfers, made lazily batch by batch so memory stays flat."""
    rng = random.Random(config.seed)
    hot = accounts[: config.hot_accounts]
    cold = accounts[config.hot_accounts :]
    left = config.transfers
    n = 0
    while left > 0:
        size = min(config.batch_size, left)
        batch = []
        for _ in range(size):
            if hot:
                # Every transfer goes through a hot account, on alternating sides.
                a, b = rng.choice(hot), rng.choice(cold)
                debit, credit = (a, b) if n % 2 else (b, a)
            else:
                debit, credit = rng.sample(cold, 2)
            n += 1
            batch.append(
                TransferRequest(uuid7(), debit, credit, rng.randint(1, 100_000), CURRENCY, 1)
            )
        left -= size
        yield batch


def _timed_transfers(
    service: LedgerService,
    accounts: list[uuid.UUID],
    config: LedgerBenchConfig,
    progress: Progress | None,
) -> dict[str, Any]:
    latencies_ms: list[float] = []
    ok = 0
    busy_s = 0.0
    for batch in _batches(accounts, config):
        started = time.perf_counter()
        plan = service.execute_batch(batch)
        service.seal()
        elapsed = time.perf_counter() - started
        busy_s += elapsed
        latencies_ms.append(elapsed * 1000)
        ok += sum(1 for o in plan.outcomes if o.ok)
        if progress is not None:
            progress(len(batch))
    latencies_ms.sort()
    return {
        "transfers": config.transfers,
        "transfers_ok": ok,
        "accounts": config.accounts,
        "hot_accounts": config.hot_accounts,
        "batch_size": config.batch_size,
        "batches": len(latencies_ms),
        "elapsed_s": round(busy_s, 3),
        "transfers_per_s": round(config.transfers / busy_s),
        "batch_p50_ms": round(statistics.median(latencies_ms), 2),
        "batch_p99_ms": round(_percentile(latencies_ms, 0.99), 2),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


RAW_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, currency, code, flags, pending_id,"
    " reversal_of, external_ref, timeout_s, expires_ts, ts, batch_id, batch_index"
)


def _raw_insert_rate(engine: Engine, rows: int, batch_size: int) -> float:
    """Plain batched inserts of ``rows`` rows as wide as a transfer; rows per second."""
    postgres = engine.dialect.name == "postgresql"
    id_type = "uuid" if postgres else "BLOB"
    with engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE bench_raw (id {id_type} PRIMARY KEY, debit_account_id {id_type},"
            f" credit_account_id {id_type}, amount BIGINT, currency VARCHAR(3), code INTEGER,"
            f" flags INTEGER, pending_id {id_type}, reversal_of {id_type},"
            " external_ref VARCHAR(64), timeout_s INTEGER, expires_ts BIGINT, ts BIGINT,"
            f" batch_id {id_type}, batch_index INTEGER)"
        )
    rng = random.Random(7)

    def new_id() -> Any:
        value = uuid7()
        return value if postgres else value.bytes

    accounts = [new_id() for _ in range(1000)]
    busy_s = 0.0
    done = 0
    while done < rows:
        size = min(batch_size, rows - done)
        batch_id = new_id()
        now = time.time_ns() // 1000
        data = [
            (
                new_id(),
                rng.choice(accounts),
                rng.choice(accounts),
                rng.randint(1, 100_000),
                CURRENCY,
                1,
                0,
                None,
                None,
                None,
                0,
                None,
                now + i,
                batch_id,
                i,
            )
            for i in range(size)
        ]
        started = time.perf_counter()
        with engine.begin() as connection:
            raw: Any = connection.connection.driver_connection
            if postgres:
                with (
                    raw.cursor() as cursor,
                    cursor.copy(f"COPY bench_raw ({RAW_COLUMNS}) FROM STDIN") as copy,
                ):
                    for row in data:
                        copy.write_row(row)
            else:
                raw.cursor().executemany(
                    f"INSERT INTO bench_raw ({RAW_COLUMNS}) VALUES ({', '.join('?' * 15)})", data
                )
        busy_s += time.perf_counter() - started
        done += size
    return rows / busy_s

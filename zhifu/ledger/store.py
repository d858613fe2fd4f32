"""Persistence of the ledger: SQL for SQLite and PostgreSQL.

The hot path (loading a batch's state and writing its plan) talks to the driver
directly through ``exec_driver_sql`` and the raw cursor: SQLAlchemy's per-row
processing would cost more than the ledger logic itself. Everything else uses
SQLAlchemy Core.

Locking: on PostgreSQL a batch locks every account it may touch with
``SELECT ... FOR UPDATE`` in id order (no deadlocks between batches), then
reads the rows that locked state decides. On SQLite a writer holds the
database's write lock from ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, select

from zhifu.ledger.model import (
    Account,
    AccountRequest,
    BatchPlan,
    BatchState,
    Rejection,
    Resolution,
    Result,
    Transfer,
    TransferFlags,
    TransferRequest,
)
from zhifu.store.tables import ledger_accounts

SQLITE_IN_CHUNK = 900
ACCOUNT_CACHE_MAX = 200_000
GENERATION_KEY = "generation"


class StaleAccountStateError(RuntimeError):
    """An account row changed behind the account cache: the batch is retried uncached."""


class ExistingIdsError(RuntimeError):
    """A batch planned as all-new ids met an id already stored: it is retried with look-ups."""


class AccountCache:
    """Embedded (SQLite) mode: the committed state of accounts, kept between batches.

    Loading ~8,000 accounts per batch is a third of a batch's cost on SQLite;
    the cache skips it. It is trusted only while the database's ledger
    generation (``ledger_meta``) equals the generation this cache committed
    last: every SQLite transaction that changes ``ledger_accounts`` bumps it,
    so a write by any other connection or process empties the cache before
    it is used. As a second guard, counters are written back only where
    ``last_transfer_ts`` still holds the value the batch read; any mismatch
    aborts the batch (:class:`StaleAccountStateError`).

    Callers hold :attr:`lock` for the whole database transaction, and call
    :meth:`invalidate` when the transaction does not commit: the batch plan
    mutates the cached accounts in place.
    """

    def __init__(self, size_max: int = ACCOUNT_CACHE_MAX):
        self.lock = threading.Lock()
        self.size_max = size_max
        self.generation: int | None = None
        self.accounts: dict[uuid.UUID, Account] = {}

    def invalidate(self) -> None:
        self.generation = None
        self.accounts.clear()

    def committed(self, generation: int) -> None:
        """The transaction that moved the database to ``generation`` has committed."""
        if len(self.accounts) > self.size_max:
            self.accounts.clear()
        self.generation = generation


def read_generation(sql: LedgerSql) -> int:
    rows = sql.query(f"SELECT value FROM ledger_meta WHERE name = {sql.mark}", (GENERATION_KEY,))
    return int(rows[0][0]) if rows else 0


def bump_generation(sql: LedgerSql) -> int:
    """Record that ledger accounts changed (SQLite only; PostgreSQL uses row locks)."""
    m = sql.mark
    rows = sql.query(
        f"UPDATE ledger_meta SET value = value + 1 WHERE name = {m} RETURNING value",
        (GENERATION_KEY,),
    )
    return int(rows[0][0])


TRANSFER_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, currency, code, flags, pending_id,"
    " reversal_of, external_ref, timeout_s, expires_ts, ts, batch_id, batch_index"
)
ACCOUNT_COLUMNS = (
    "id, currency, code, flags, owner_ref, debits_pending, debits_posted, credits_pending,"
    " credits_posted, last_transfer_ts, created_ts, closed_ts"
)


class LedgerSql:
    """Dialect-specific SQL and id conversion for one connection."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"
        self.mark = "%s" if self.postgres else "?"
        self.id_in: Callable[[uuid.UUID], Any] = (lambda u: u) if self.postgres else _to_bytes
        self.assumed_new_ids = False
        # last_transfer_ts of each account as read, for the cache's write guard.
        # Keyed by id() of the Account object: an int hashes in C, a UUID in Python.
        self.expected_last_ts: dict[int, int] | None = None
        # SQLite hands ids back as bytes; ids this transaction asked for are
        # mapped back to the caller's own UUID objects (building a UUID costs
        # more than a dictionary look-up).
        self._interned: dict[bytes, uuid.UUID] = {}
        self.id_out: Callable[[Any], uuid.UUID] = (
            (lambda v: v) if self.postgres else self._id_from_bytes
        )

    def _id_from_bytes(self, value: Any) -> uuid.UUID:
        found = self._interned.get(value)
        return found if found is not None else uuid.UUID(bytes=bytes(value))

    def raw(self) -> Any:
        """The DB-API connection under this transaction."""
        return self.connection.connection.driver_connection

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.connection.exec_driver_sql(sql, tuple(params)).fetchall())

    def query_ids(self, sql_template: str, ids: Sequence[uuid.UUID]) -> Iterator[Any]:
        """Run ``sql_template`` (with one ``{ids}`` placeholder) over ``ids`` in chunks."""
        if not ids:
            return
        if self.postgres:
            sql = sql_template.format(ids="= ANY(%s)")
            yield from self.connection.exec_driver_sql(sql, (list(ids),)).fetchall()
            return
        interned = self._interned
        for start in range(0, len(ids), SQLITE_IN_CHUNK):
            chunk = ids[start : start + SQLITE_IN_CHUNK]
            params = [i.bytes for i in chunk]
            interned.update(zip(params, chunk, strict=True))
            sql = sql_template.format(ids="IN (" + ",".join("?" * len(chunk)) + ")")
            yield from self.raw().execute(sql, params)

    # -- rows to domain --

    def account_from_row(self, row: Any) -> Account:
        return Account(
            id=self.id_out(row[0]),
            currency=row[1],
            code=row[2],
            flags=row[3],
            owner_ref=row[4],
            debits_pending=row[5],
            debits_posted=row[6],
            credits_pending=row[7],
            credits_posted=row[8],
            last_transfer_ts=row[9],
            created_ts=row[10],
            closed_ts=row[11],
        )

    def transfer_from_row(self, row: Any) -> Transfer:
        id_out = self.id_out
        return Transfer(
            id=id_out(row[0]),
            debit_account_id=id_out(row[1]),
            credit_account_id=id_out(row[2]),
            amount=row[3],
            currency=row[4],
            code=row[5],
            flags=row[6],
            pending_id=id_out(row[7]) if row[7] is not None else None,
            reversal_of=id_out(row[8]) if row[8] is not None else None,
            external_ref=row[9],
            timeout_s=row[10],
            expires_ts=row[11],
            ts=row[12],
            batch_id=id_out(row[13]),
            batch_index=row[14],
        )

    def transfer_rows(self, transfers: Sequence[Transfer]) -> list[tuple[Any, ...]]:
        """Rows to insert; the one batch id is converted once."""
        if not transfers:
            return []
        id_in = self.id_in
        batch_id = id_in(transfers[0].batch_id)
        return [
            (
                id_in(t.id),
                id_in(t.debit_account_id),
                id_in(t.credit_account_id),
                t.amount,
                t.currency,
                t.code,
                t.flags,
                None if t.pending_id is None else id_in(t.pending_id),
                None if t.reversal_of is None else id_in(t.reversal_of),
                t.external_ref,
                t.timeout_s,
                t.expires_ts,
                t.ts,
                batch_id,
                t.batch_index,
            )
            for t in transfers
        ]


def _uuid_int(value: uuid.UUID) -> int:
    return value.int


def _to_bytes(value: uuid.UUID) -> bytes:
    return value.bytes


# --- accounts -------------------------------------------------------------------


def load_accounts(
    sql: LedgerSql, ids: Iterable[uuid.UUID], *, lock: bool = False
) -> dict[uuid.UUID, Account]:
    unique = set(ids)
    locking = lock and sql.postgres
    # Locks are taken in id order so that two batches never wait on each other.
    ordered = sorted(unique, key=_uuid_int) if locking else list(unique)
    suffix = " ORDER BY id FOR UPDATE" if locking else ""
    rows = sql.query_ids(
        f"SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id {{ids}}{suffix}", ordered
    )
    accounts = (sql.account_from_row(row) for row in rows)
    return {account.id: account for account in accounts}


def insert_accounts(sql: LedgerSql, requests: Sequence[AccountRequest], now_ts: int) -> None:
    m = sql.mark
    statement = (
        f"INSERT INTO ledger_accounts ({ACCOUNT_COLUMNS}) "
        f"VALUES ({m}, {m}, {m}, {m}, {m}, 0, 0, 0, 0, 0, {m}, NULL)"
    )
    rows = [(sql.id_in(r.id), r.currency, r.code, r.flags, r.owner_ref, now_ts) for r in requests]
    sql.raw().cursor().executemany(statement, rows)


def close_account(sql: LedgerSql, account_id: uuid.UUID, now_ts: int) -> None:
    m = sql.mark
    sql.connection.exec_driver_sql(
        f"UPDATE ledger_accounts SET closed_ts = {m} WHERE id = {m}",
        (now_ts, sql.id_in(account_id)),
    )


def count_accounts(connection: Connection) -> int:
    from sqlalchemy import func

    return int(connection.execute(select(func.count()).select_from(ledger_accounts)).scalar_one())


# --- transfers: loading a batch's state ------------------------------------------------


def load_transfers(sql: LedgerSql, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Transfer]:
    rows = sql.query_ids(
        f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id {{ids}}", list(set(ids))
    )
    transfers = (sql.transfer_from_row(row) for row in rows)
    return {t.id: t for t in transfers}


def load_batch_state(
    sql: LedgerSql,
    requests: Sequence[TransferRequest],
    cache: AccountCache | None = None,
    *,
    assume_new_ids: bool = False,
) -> BatchState:
    """Load (and on PostgreSQL lock) every row the batch's events may read.

    With ``cache`` (SQLite only, its lock held), accounts come from the cache
    when the database has not changed since the cache's last commit.

    With ``assume_new_ids`` (SQLite only) the look-up of the batch's own ids
    among stored transfers is skipped: :func:`write_plan` then inserts with
    ``ON CONFLICT DO NOTHING`` and raises :class:`ExistingIdsError` if any id
    was there after all, and the caller retries without the assumption.
    Retries are rare, and the look-up is a tenth of a batch's cost.
    """
    request_ids = [r.id for r in requests]
    referenced = {r.pending_id for r in requests if r.pending_id is not None}
    referenced.update(r.reversal_of for r in requests if r.reversal_of is not None)
    # Committed transfers never change, so reading them before taking locks is safe.
    targets = load_transfers(sql, referenced) if referenced else {}
    account_ids: set[uuid.UUID] = set()
    for r in requests:
        if r.debit_account_id is not None:
            account_ids.add(r.debit_account_id)
        if r.credit_account_id is not None:
            account_ids.add(r.credit_account_id)
    for t in targets.values():
        account_ids.add(t.debit_account_id)
        account_ids.add(t.credit_account_id)
    if cache is None:
        accounts = load_accounts(sql, account_ids, lock=True)
    else:
        accounts = _cached_accounts(sql, cache, account_ids)
    # Everything below is read after the locks, so it is the latest committed state.
    sql.assumed_new_ids = assume_new_ids and not sql.postgres
    transfers = {} if sql.assumed_new_ids else load_transfers(sql, request_ids)
    transfers.update(targets)
    rejections = {
        sql.id_out(row[0]): Rejection(sql.id_out(row[0]), Result(row[1]), bytes(row[2]), row[3])
        for row in sql.query_ids(
            "SELECT id, result, fingerprint, ts FROM ledger_rejections WHERE id {ids}", request_ids
        )
    }
    pending_ids = [r.pending_id for r in requests if r.pending_id is not None]
    resolutions = {
        sql.id_out(row[0]): Resolution(sql.id_out(row[1]), row[2])
        for row in sql.query_ids(
            "SELECT pending_id, id, flags FROM ledger_transfers WHERE pending_id {ids}",
            pending_ids,
        )
    }
    reversal_targets = [r.reversal_of for r in requests if r.reversal_of is not None]
    reversed_amounts = {
        sql.id_out(row[0]): int(row[1])
        for row in sql.query_ids(
            "SELECT reversal_of, SUM(amount) FROM ledger_transfers"
            " WHERE reversal_of {ids} GROUP BY reversal_of",
            reversal_targets,
        )
    }
    return BatchState(accounts, transfers, rejections, resolutions, reversed_amounts)


def _cached_accounts(
    sql: LedgerSql, cache: AccountCache, account_ids: set[uuid.UUID]
) -> dict[uuid.UUID, Account]:
    if cache.generation != read_generation(sql):
        cache.invalidate()
    cached = cache.accounts
    accounts: dict[uuid.UUID, Account] = {}
    missing: list[uuid.UUID] = []
    for account_id in account_ids:
        account = cached.get(account_id)
        if account is None:
            missing.append(account_id)
        else:
            accounts[account_id] = account
    if missing:
        loaded = load_accounts(sql, missing)
        cached.update(loaded)
        accounts.update(loaded)
    sql.expected_last_ts = {id(a): a.last_transfer_ts for a in accounts.values()}
    return accounts


# --- transfers: writing a plan ----------------------------------------------------------


def write_plan(sql: LedgerSql, plan: BatchPlan) -> None:
    """Write the plan's transfers, rejections, history, counters and batch record."""
    raw = sql.raw()
    m = sql.mark
    id_in = sql.id_in
    if plan.new_transfers:
        rows = sql.transfer_rows(plan.new_transfers)
        if sql.postgres:
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY ledger_transfers ({TRANSFER_COLUMNS}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join([m] * 15)
            conflict = " ON CONFLICT (id) DO NOTHING" if sql.assumed_new_ids else ""
            cursor = raw.cursor()
            cursor.executemany(
                f"INSERT INTO ledger_transfers ({TRANSFER_COLUMNS}) VALUES ({marks}){conflict}",
                rows,
            )
            if cursor.rowcount != len(rows):
                raise ExistingIdsError("some transfer ids of the batch are already stored")
    if sql.assumed_new_ids:
        # Every event that was not inserted was judged as if its id were new:
        # make sure none of them is stored (an exact retry must answer exists).
        failed = [o.id for o in plan.outcomes if o.result is not Result.OK]
        if list(sql.query_ids("SELECT id FROM ledger_transfers WHERE id {ids}", failed)):
            raise ExistingIdsError("an id of a failed event is already stored")
    if plan.new_rejections:
        raw.cursor().executemany(
            "INSERT INTO ledger_rejections (id, result, fingerprint, ts)"
            f" VALUES ({m}, {m}, {m}, {m})",
            [(id_in(r.id), r.result.value, r.fingerprint, r.ts) for r in plan.new_rejections],
        )
    if plan.history:
        raw.cursor().executemany(
            "INSERT INTO ledger_account_history (account_id, ts, transfer_id, debits_pending,"
            " debits_posted, credits_pending, credits_posted)"
            f" VALUES ({m}, {m}, {m}, {m}, {m}, {m}, {m})",
            [(id_in(h[0]), h[1], id_in(h[2]), h[3], h[4], h[5], h[6]) for h in plan.history],
        )
    if plan.touched_accounts:
        _update_counters(sql, plan.touched_accounts.values())
    if plan.new_transfers:
        batch_id = id_in(plan.batch_id)
        cursor = raw.cursor()
        cursor.execute(
            "INSERT INTO ledger_batches (id, committed_ts, transfer_count, merkle_root)"
            f" VALUES ({m}, {m}, {m}, {m})",
            (batch_id, plan.committed_ts, len(plan.new_transfers), plan.merkle_root),
        )
        cursor.execute(
            f"INSERT INTO ledger_unsealed_batches (batch_id, committed_ts) VALUES ({m}, {m})",
            (batch_id, plan.committed_ts),
        )


def _update_counters(sql: LedgerSql, accounts: Iterable[Account]) -> None:
    raw = sql.raw()
    if sql.postgres:
        columns: list[list[Any]] = [[], [], [], [], [], []]
        for a in accounts:
            columns[0].append(a.id)
            columns[1].append(a.debits_pending)
            columns[2].append(a.debits_posted)
            columns[3].append(a.credits_pending)
            columns[4].append(a.credits_posted)
            columns[5].append(a.last_transfer_ts)
        with raw.cursor() as cursor:
            cursor.execute(
                "UPDATE ledger_accounts AS a SET debits_pending = u.dp, debits_posted = u.dpo,"
                " credits_pending = u.cp, credits_posted = u.cpo, last_transfer_ts = u.ts"
                " FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[],"
                " %s::bigint[], %s::bigint[]) AS u(id, dp, dpo, cp, cpo, ts) WHERE a.id = u.id",
                columns,
            )
        return
    expected = sql.expected_last_ts
    if expected is None:
        raw.cursor().executemany(
            "UPDATE ledger_accounts SET debits_pending = ?, debits_posted = ?,"
            " credits_pending = ?, credits_posted = ?, last_transfer_ts = ? WHERE id = ?",
            [
                (
                    a.debits_pending,
                    a.debits_posted,
                    a.credits_pending,
                    a.credits_posted,
                    a.last_transfer_ts,
                    a.id.bytes,
                )
                for a in accounts
            ],
        )
        return
    rows = [
        (
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
            a.last_transfer_ts,
            a.id.bytes,
            expected[id(a)],
        )
        for a in accounts
    ]
    cursor = raw.cursor()
    cursor.executemany(
        "UPDATE ledger_accounts SET debits_pending = ?, debits_posted = ?, credits_pending = ?,"
        " credits_posted = ?, last_transfer_ts = ? WHERE id = ? AND last_transfer_ts = ?",
        rows,
    )
    if cursor.rowcount != len(rows):
        raise StaleAccountStateError(
            f"{len(rows) - cursor.rowcount} account rows changed behind the account cache"
        )


# --- expiry ----------------------------------------------------------------------------


def expired_pending(sql: LedgerSql, now_ts: int, limit: int) -> list[Transfer]:
    """Pending transfers whose timeout has passed and that nothing resolved yet."""
    m = sql.mark
    rows = sql.query(
        f"SELECT {', '.join('t.' + c.strip() for c in TRANSFER_COLUMNS.split(','))}"
        " FROM ledger_transfers t"
        f" WHERE t.expires_ts IS NOT NULL AND t.expires_ts <= {m}"
        f" AND (t.flags & {int(TransferFlags.PENDING)}) <> 0"
        " AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id)"
        f" ORDER BY t.expires_ts LIMIT {m}",
        (now_ts, limit),
    )
    return [sql.transfer_from_row(row) for row in rows]

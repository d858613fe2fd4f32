"""Read-side queries: transfers by account and time, statements, balances as of a time.

Per account, transfer timestamps are strictly increasing (a batch stamps its
transfers after the last timestamp of every account it touches), so a cursor is
just the last timestamp seen.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection

from zhifu.ledger.errors import AccountNotFoundError, InvalidCursorError
from zhifu.ledger.model import AMOUNT_MAX, Account, AccountFlags, Transfer, TransferFlags
from zhifu.ledger.store import TRANSFER_COLUMNS, LedgerSql, load_accounts

PAGE_SIZE_MAX = 1000
PAGE_SIZE_DEFAULT = 100
_CURSOR_PREFIX = b"ts:"
_POSTED_MASK = int(TransferFlags.PENDING | TransferFlags.VOID_PENDING)
_PENDING = int(TransferFlags.PENDING)


@dataclass(frozen=True, slots=True)
class TransferQuery:
    account_id: uuid.UUID
    from_ts: int = 0
    to_ts: int = AMOUNT_MAX
    cursor: str | None = None
    limit: int = PAGE_SIZE_DEFAULT


@dataclass(frozen=True, slots=True)
class TransferPage:
    transfers: list[Transfer]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: uuid.UUID
    currency: str
    as_of_ts: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    balance_posted: int


@dataclass(frozen=True, slots=True)
class StatementLine:
    transfer: Transfer
    side: str  # "debit" or "credit" for this account
    posted_change: int
    pending_change: int
    balance_posted_after: int


@dataclass(frozen=True, slots=True)
class Statement:
    account: Account
    opening_balance_posted: int
    lines: list[StatementLine]
    next_cursor: str | None


def encode_cursor(ts: int) -> str:
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(ts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Raises InvalidCursorError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError("prefix")
        ts = int(raw[len(_CURSOR_PREFIX) :].decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("cursor is not one this API returned") from exc
    if not 0 <= ts <= AMOUNT_MAX:
        raise InvalidCursorError("cursor is out of range")
    return ts


def _account(sql: LedgerSql, account_id: uuid.UUID) -> Account:
    account = load_accounts(sql, [account_id]).get(account_id)
    if account is None:
        raise AccountNotFoundError(f"no ledger account {account_id}")
    return account


def _page(sql: LedgerSql, query: TransferQuery) -> TransferPage:
    if not 1 <= query.limit <= PAGE_SIZE_MAX:
        raise ValueError(f"limit must be between 1 and {PAGE_SIZE_MAX}")
    after = decode_cursor(query.cursor) if query.cursor else -1
    low = max(query.from_ts, after + 1)
    m = sql.mark
    account = sql.id_in(query.account_id)
    columns = TRANSFER_COLUMNS
    # Two index range scans (debit side, credit side) merged by timestamp.
    statement = (
        f"SELECT {columns} FROM ("
        f" SELECT * FROM (SELECT {columns} FROM ledger_transfers WHERE debit_account_id = {m}"
        f" AND ts >= {m} AND ts < {m} ORDER BY ts LIMIT {m}) AS d"
        " UNION ALL"
        f" SELECT * FROM (SELECT {columns} FROM ledger_transfers WHERE credit_account_id = {m}"
        f" AND ts >= {m} AND ts < {m} ORDER BY ts LIMIT {m}) AS c"
        f") AS t ORDER BY ts LIMIT {m}"
    )
    fetch = query.limit + 1
    rows = sql.query(
        statement,
        (account, low, query.to_ts, fetch, account, low, query.to_ts, fetch, fetch),
    )
    transfers = [sql.transfer_from_row(row) for row in rows]
    next_cursor = None
    if len(transfers) > query.limit:
        transfers = transfers[: query.limit]
        next_cursor = encode_cursor(transfers[-1].ts)
    return TransferPage(transfers, next_cursor)


def account_transfers(connection: Connection, query: TransferQuery) -> TransferPage:
    """Transfers that touch one account in ``[from_ts, to_ts)``, oldest first.

    Raises AccountNotFoundError, InvalidCursorError.
    """
    sql = LedgerSql(connection)
    _account(sql, query.account_id)
    return _page(sql, query)


def _counters_as_of(sql: LedgerSql, account: Account, ts: int) -> tuple[int, int, int, int]:
    """(debits_pending, debits_posted, credits_pending, credits_posted) after ``ts``."""
    m = sql.mark
    account_id = sql.id_in(account.id)
    if account.flags & AccountFlags.HISTORY:
        rows = sql.query(
            "SELECT debits_pending, debits_posted, credits_pending, credits_posted"
            f" FROM ledger_account_history WHERE account_id = {m} AND ts <= {m}"
            " ORDER BY ts DESC LIMIT 1",
            (account_id, ts),
        )
        if not rows:
            return (0, 0, 0, 0)
        return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2]), int(rows[0][3]))
    result = []
    for side in ("debit", "credit"):
        gross = sql.query(
            "SELECT COALESCE(SUM(CASE WHEN"
            f" (flags & {_POSTED_MASK}) = 0 THEN amount ELSE 0 END), 0),"
            f" COALESCE(SUM(CASE WHEN (flags & {_PENDING}) <> 0 THEN amount ELSE 0 END), 0)"
            f" FROM ledger_transfers WHERE {side}_account_id = {m} AND ts <= {m}",
            (account_id, ts),
        )[0]
        released = sql.query(
            "SELECT COALESCE(SUM(p.amount), 0) FROM ledger_transfers r"
            " JOIN ledger_transfers p ON p.id = r.pending_id"
            f" WHERE r.{side}_account_id = {m} AND r.ts <= {m}",
            (account_id, ts),
        )[0][0]
        result.extend([int(gross[1]) - int(released), int(gross[0])])
    return result[0], result[1], result[2], result[3]


def _posted_balance(account: Account, debits_posted: int, credits_posted: int) -> int:
    if account.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
        return debits_posted - credits_posted
    return credits_posted - debits_posted


def balance_as_of(connection: Connection, account_id: uuid.UUID, ts: int) -> Balance:
    """The account's counters after every transfer stamped at or before ``ts``.

    Raises AccountNotFoundError.
    """
    sql = LedgerSql(connection)
    account = _account(sql, account_id)
    dp, dpo, cp, cpo = _counters_as_of(sql, account, ts)
    return Balance(
        account.id, account.currency, ts, dp, dpo, cp, cpo, _posted_balance(account, dpo, cpo)
    )


def statement(connection: Connection, query: TransferQuery) -> Statement:
    """Statement lines with the posted balance after each line.

    Raises AccountNotFoundError, InvalidCursorError.
    """
    sql = LedgerSql(connection)
    account = _account(sql, query.account_id)
    page = _page(sql, query)
    if not page.transfers:
        _, dpo, _, cpo = _counters_as_of(sql, account, query.from_ts - 1)
        return Statement(account, _posted_balance(account, dpo, cpo), [], None)
    _, dpo, _, cpo = _counters_as_of(sql, account, page.transfers[0].ts - 1)
    opening = _posted_balance(account, dpo, cpo)
    sign = -1 if account.flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS else 1
    pending_amounts = _pending_amounts(sql, page.transfers)
    running = opening
    lines: list[StatementLine] = []
    for t in page.transfers:
        side = "debit" if t.debit_account_id == account.id else "credit"
        direction = -sign if side == "debit" else sign
        posted = 0 if t.flags & _POSTED_MASK else t.amount * direction
        if t.flags & TransferFlags.PENDING:
            pending = t.amount
        elif t.pending_id is not None:
            pending = -pending_amounts.get(t.pending_id, 0)
        else:
            pending = 0
        running += posted
        lines.append(StatementLine(t, side, posted, pending, running))
    return Statement(account, opening, lines, page.next_cursor)


def _pending_amounts(sql: LedgerSql, transfers: list[Transfer]) -> dict[uuid.UUID, int]:
    ids = [t.pending_id for t in transfers if t.pending_id is not None]
    return {
        sql.id_out(row[0]): int(row[1])
        for row in sql.query_ids("SELECT id, amount FROM ledger_transfers WHERE id {ids}", ids)
    }

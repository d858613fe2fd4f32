"""Persistence of the payments context: orders, their transitions, idempotency
keys, spending totals, and the customer limits the totals are checked against.

Every function takes the caller's open connection: the unit of work is the
service's. Money itself lives in the ledger; an order row only names the
ledger transfers that hold and settle it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from zhifu.payments.model import OrderState, Transition
from zhifu.store.tables import (
    accounts_customer_limits,
    payments_idempotency,
    payments_orders,
    payments_spending,
    payments_transitions,
)

# Statements on the payment path are built once, with bound parameters: building
# one per call (``.values(**row)``) costs more than SQLite takes to run it.
_INSERT_ORDER = insert(payments_orders)
_ORDER_BY_ID = select(payments_orders).where(payments_orders.c.id == bindparam("order_id"))
_ORDER_BY_ID_LOCKED = _ORDER_BY_ID.with_for_update()
_INSERT_TRANSITION = insert(payments_transitions)
_INSERT_IDEMPOTENCY = insert(payments_idempotency)
_IDEMPOTENCY_RECORD = select(payments_idempotency).where(
    payments_idempotency.c.scope == bindparam("scope"),
    payments_idempotency.c.key == bindparam("key"),
)
_CUSTOMER_LIMITS = select(accounts_customer_limits).where(
    accounts_customer_limits.c.account_id == bindparam("account_id"),
    accounts_customer_limits.c.channel == bindparam("channel"),
)


def _spending_upsert(dialect_insert: Any) -> Any:
    statement = dialect_insert(payments_spending).values(
        account_id=bindparam("account_id"),
        direction=bindparam("direction"),
        period=bindparam("period"),
        total_minor=bindparam("amount"),
    )
    return statement.on_conflict_do_update(
        index_elements=["account_id", "direction", "period"],
        set_={"total_minor": payments_spending.c.total_minor + statement.excluded.total_minor},
    ).returning(payments_spending.c.total_minor)


_SPENDING_UPSERT = {
    "postgresql": _spending_upsert(pg_insert),
    "sqlite": _spending_upsert(sqlite_insert),
}

# --- orders -----------------------------------------------------------------------------


def insert_order(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(_INSERT_ORDER, values)


def order_by_id(
    connection: Connection, order_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = _ORDER_BY_ID_LOCKED if lock else _ORDER_BY_ID
    return connection.execute(query, {"order_id": order_id}).one_or_none()


def update_order(connection: Connection, order_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(payments_orders).where(payments_orders.c.id == order_id).values(**values)
    )
    return int(result.rowcount)


def insert_transitions(
    connection: Connection, order_id: uuid.UUID, first_seq: int, steps: Sequence[Transition]
) -> None:
    connection.execute(
        _INSERT_TRANSITION,
        [
            {
                "order_id": order_id,
                "seq": first_seq + offset,
                "from_state": None if step.from_state is None else step.from_state.value,
                "to_state": step.to_state.value,
                "ts": step.ts,
                "actor": step.actor,
                "reason": step.reason,
            }
            for offset, step in enumerate(steps)
        ],
    )


def transitions_of(connection: Connection, order_id: uuid.UUID) -> tuple[Transition, ...]:
    query = (
        select(payments_transitions)
        .where(payments_transitions.c.order_id == order_id)
        .order_by(payments_transitions.c.seq)
    )
    return tuple(
        Transition(
            None if row.from_state is None else OrderState(row.from_state),
            OrderState(row.to_state),
            int(row.ts),
            row.actor,
            row.reason,
        )
        for row in connection.execute(query)
    )


# --- idempotency keys -------------------------------------------------------------------


def idempotency_record(connection: Connection, scope: str, key: str) -> Row[Any] | None:
    return connection.execute(_IDEMPOTENCY_RECORD, {"scope": scope, "key": key}).one_or_none()


def insert_idempotency(
    connection: Connection,
    scope: str,
    key: str,
    fingerprint: bytes,
    order_id: uuid.UUID,
    now_ts: int,
) -> None:
    """Remember the key; a concurrent insert of the same key is a unique
    violation, and the service's retry then finds this row."""
    connection.execute(
        _INSERT_IDEMPOTENCY,
        {
            "scope": scope,
            "key": key,
            "fingerprint": fingerprint,
            "order_id": order_id,
            "created_ts": now_ts,
        },
    )


# --- spending totals and customer limits ----------------------------------------------


def add_spending(
    connection: Connection,
    account_id: uuid.UUID,
    direction: str,
    periods: Iterable[str],
    amount: int,
) -> dict[str, int]:
    """Add ``amount`` to the account's totals for each period and return the new
    totals. The upsert takes the row lock (PostgreSQL) before the caller checks
    the limits, so two payments from one account cannot both pass on the same
    old total; SQLite's writer already runs alone."""
    upsert = _SPENDING_UPSERT[connection.dialect.name]
    totals: dict[str, int] = {}
    for period in periods:
        params = {
            "account_id": account_id,
            "direction": direction,
            "period": period,
            "amount": amount,
        }
        totals[period] = int(connection.execute(upsert, params).scalar_one())
    return totals


def spending_totals(
    connection: Connection, account_id: uuid.UUID, direction: str, periods: Sequence[str]
) -> dict[str, int]:
    query = select(payments_spending.c.period, payments_spending.c.total_minor).where(
        payments_spending.c.account_id == account_id,
        payments_spending.c.direction == direction,
        payments_spending.c.period.in_(periods),
    )
    found = {row.period: int(row.total_minor) for row in connection.execute(query)}
    return {period: found.get(period, 0) for period in periods}


def customer_limits(connection: Connection, account_id: uuid.UUID, channel: str) -> Row[Any] | None:
    params = {"account_id": account_id, "channel": channel}
    return connection.execute(_CUSTOMER_LIMITS, params).one_or_none()

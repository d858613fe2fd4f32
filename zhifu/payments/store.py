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

from sqlalchemy import Connection, Row, insert, select, update
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

# --- orders -----------------------------------------------------------------------------


def insert_order(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(payments_orders).values(**values))


def order_by_id(
    connection: Connection, order_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = select(payments_orders).where(payments_orders.c.id == order_id)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def update_order(connection: Connection, order_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(payments_orders).where(payments_orders.c.id == order_id).values(**values)
    )
    return int(result.rowcount)


def insert_transitions(
    connection: Connection, order_id: uuid.UUID, first_seq: int, steps: Sequence[Transition]
) -> None:
    connection.execute(
        insert(payments_transitions),
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
    query = select(payments_idempotency).where(
        payments_idempotency.c.scope == scope, payments_idempotency.c.key == key
    )
    return connection.execute(query).one_or_none()


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
        insert(payments_idempotency).values(
            scope=scope, key=key, fingerprint=fingerprint, order_id=order_id, created_ts=now_ts
        )
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
    dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    totals: dict[str, int] = {}
    for period in periods:
        statement = dialect_insert(payments_spending).values(
            account_id=account_id, direction=direction, period=period, total_minor=amount
        )
        upsert = statement.on_conflict_do_update(
            index_elements=["account_id", "direction", "period"],
            set_={"total_minor": payments_spending.c.total_minor + amount},
        ).returning(payments_spending.c.total_minor)
        totals[period] = int(connection.execute(upsert).scalar_one())
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
    query = select(accounts_customer_limits).where(
        accounts_customer_limits.c.account_id == account_id,
        accounts_customer_limits.c.channel == channel,
    )
    return connection.execute(query).one_or_none()

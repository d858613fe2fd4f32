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

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from zhifu.payments.model import OrderState, ScheduleStatus, Transition
from zhifu.security.rotation import EncryptedColumns, register
from zhifu.store.tables import (
    accounts_customer_limits,
    payments_idempotency,
    payments_orders,
    payments_payees,
    payments_schedule_runs,
    payments_schedules,
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


def customer_limits_of(connection: Connection, account_id: uuid.UUID) -> Sequence[Row[Any]]:
    """Every channel's limits the customer chose for the account."""
    query = select(accounts_customer_limits).where(
        accounts_customer_limits.c.account_id == account_id
    )
    return connection.execute(query).all()


def set_customer_limits(
    connection: Connection,
    account_id: uuid.UUID,
    channel: str,
    limits_minor: tuple[int | None, int | None, int | None],
    now_ts: int,
) -> None:
    """Store the per-payment, daily and yearly limits for one channel; all three
    None removes the row (the bank's policy alone applies)."""
    c = accounts_customer_limits.c
    connection.execute(
        delete(accounts_customer_limits).where(c.account_id == account_id, c.channel == channel)
    )
    if all(limit is None for limit in limits_minor):
        return
    per_payment, daily, yearly = limits_minor
    connection.execute(
        insert(accounts_customer_limits).values(
            account_id=account_id,
            channel=channel,
            per_payment_minor=per_payment,
            daily_minor=daily,
            yearly_minor=yearly,
            updated_ts=now_ts,
        )
    )


# --- payees -------------------------------------------------------------------------------

# ``zhifu keys rotate`` re-encrypts the payee book with the rest.
register(EncryptedColumns(payments_payees, "id", "pii_key_id", ("account_number_enc", "name_enc")))


def insert_payee(connection: Connection, values: dict[str, Any]) -> None:
    """A unique violation means the book holds the account already (or a race added it)."""
    connection.execute(insert(payments_payees).values(**values))


def payee_of(
    connection: Connection, customer_id: uuid.UUID, payee_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    """The customer's payee; None for another customer's."""
    query = select(payments_payees).where(
        payments_payees.c.id == payee_id, payments_payees.c.customer_id == customer_id
    )
    if lock:
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def payee_by_index(
    connection: Connection, customer_id: uuid.UUID, account_index: bytes
) -> Row[Any] | None:
    query = select(payments_payees).where(
        payments_payees.c.customer_id == customer_id,
        payments_payees.c.account_index == account_index,
    )
    return connection.execute(query).one_or_none()


def payees_of(connection: Connection, customer_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The customer's payees, oldest first."""
    query = (
        select(payments_payees)
        .where(payments_payees.c.customer_id == customer_id)
        .order_by(payments_payees.c.id)
    )
    return connection.execute(query).all()


def count_payees(connection: Connection, customer_id: uuid.UUID) -> int:
    query = select(func.count()).where(payments_payees.c.customer_id == customer_id)
    return int(connection.execute(query).scalar_one())


def update_payee(connection: Connection, payee_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(payments_payees).where(payments_payees.c.id == payee_id).values(**values)
    )
    return int(result.rowcount)


def delete_payee(connection: Connection, payee_id: uuid.UUID) -> None:
    """Delete the payee (its encrypted data with it); schedules that paid it keep their label."""
    s = payments_schedules.c
    connection.execute(
        update(payments_schedules).where(s.payee_id == payee_id).values(payee_id=None)
    )
    connection.execute(delete(payments_payees).where(payments_payees.c.id == payee_id))


# --- schedules and their runs -----------------------------------------------------------------

_LIVE_SCHEDULE_STATUSES = (ScheduleStatus.ACTIVE.value, ScheduleStatus.PAUSED.value)


def insert_schedule(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(payments_schedules).values(**values))


def schedule_by_id(
    connection: Connection, schedule_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = select(payments_schedules).where(payments_schedules.c.id == schedule_id)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def schedule_by_key(
    connection: Connection, customer_id: uuid.UUID, idempotency_key: str
) -> Row[Any] | None:
    query = select(payments_schedules).where(
        payments_schedules.c.customer_id == customer_id,
        payments_schedules.c.idempotency_key == idempotency_key,
    )
    return connection.execute(query).one_or_none()


def schedules_of(connection: Connection, customer_id: uuid.UUID) -> Sequence[Row[Any]]:
    """The customer's schedules, newest first."""
    query = (
        select(payments_schedules)
        .where(payments_schedules.c.customer_id == customer_id)
        .order_by(payments_schedules.c.id.desc())
    )
    return connection.execute(query).all()


def count_schedules(connection: Connection, customer_id: uuid.UUID) -> tuple[int, int]:
    """The customer's active or paused schedules, and all of them."""
    s = payments_schedules.c
    live = func.count().filter(s.status.in_(_LIVE_SCHEDULE_STATUSES))
    query = select(live, func.count()).where(s.customer_id == customer_id)
    live_count, total = connection.execute(query).one()
    return int(live_count), int(total)


def live_schedules_paying(connection: Connection, payee_id: uuid.UUID) -> int:
    s = payments_schedules.c
    query = select(func.count()).where(
        s.payee_id == payee_id, s.status.in_(_LIVE_SCHEDULE_STATUSES)
    )
    return int(connection.execute(query).scalar_one())


def update_schedule(
    connection: Connection,
    schedule_id: uuid.UUID,
    values: dict[str, Any],
    *,
    expected_seq: int | None = None,
    expected_status: str | None = None,
) -> int:
    """Change a schedule; with ``expected_seq`` / ``expected_status`` only if it
    still stands there (a compare-and-set). The number of rows changed: 0 or 1."""
    s = payments_schedules.c
    statement = update(payments_schedules).where(s.id == schedule_id)
    if expected_seq is not None:
        statement = statement.where(s.next_seq == expected_seq)
    if expected_status is not None:
        statement = statement.where(s.status == expected_status)
    return int(connection.execute(statement.values(**values)).rowcount)


def any_due(connection: Connection, now_ts: int) -> bool:
    s = payments_schedules.c
    query = select(s.id).where(*_due(now_ts)).limit(1)
    return connection.execute(query).first() is not None


def count_due(connection: Connection, now_ts: int) -> int:
    query = select(func.count()).select_from(payments_schedules).where(*_due(now_ts))
    return int(connection.execute(query).scalar_one())


def _due(now_ts: int) -> tuple[Any, ...]:
    s = payments_schedules.c
    return (
        s.status == ScheduleStatus.ACTIVE.value,
        s.next_ts <= now_ts,
        or_(s.lease_until_ts.is_(None), s.lease_until_ts <= now_ts),
    )


def claim_due(
    connection: Connection, now_ts: int, owner: uuid.UUID, lease_until_ts: int, limit: int
) -> Sequence[Row[Any]]:
    """Lease at most ``limit`` due schedules to ``owner``, the longest due first.

    PostgreSQL skips rows another claim holds (``FOR UPDATE SKIP LOCKED``), so
    concurrent schedulers never wait on each other nor claim the same schedule;
    on SQLite the caller's write transaction (``BEGIN IMMEDIATE``) runs alone.
    """
    s = payments_schedules.c
    due = (
        select(s.id)
        .where(*_due(now_ts))
        .order_by(s.next_ts, s.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(connection.execute(due).scalars())
    if not ids:
        return []
    connection.execute(
        update(payments_schedules)
        .where(s.id.in_(ids))
        .values(lease_owner=owner, lease_until_ts=lease_until_ts)
    )
    query = select(payments_schedules).where(s.id.in_(ids)).order_by(s.next_ts, s.id)
    return connection.execute(query).all()


def release_lease(connection: Connection, schedule_id: uuid.UUID, owner: uuid.UUID) -> int:
    s = payments_schedules.c
    statement = (
        update(payments_schedules)
        .where(s.id == schedule_id, s.lease_owner == owner)
        .values(lease_owner=None, lease_until_ts=None)
    )
    return int(connection.execute(statement).rowcount)


def insert_run(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(payments_schedule_runs).values(**values))


def runs_of(connection: Connection, schedule_id: uuid.UUID, limit: int) -> Sequence[Row[Any]]:
    """The schedule's latest ``limit`` runs, newest first."""
    r = payments_schedule_runs.c
    query = (
        select(payments_schedule_runs)
        .where(r.schedule_id == schedule_id)
        .order_by(r.seq.desc())
        .limit(limit)
    )
    return connection.execute(query).all()

"""Persistence of the merchants context: merchants, their QR codes, customers'
payment codes, Idempotency-Keys, the guessing throttle, and the merchant's
view of ``payments_orders`` (its payments and refunds).

Every function takes the caller's open connection: the unit of work is the
service's. Money lives in the ledger and orders in the payments context; the
only order writes here are a refund's update of what was refunded.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from zhifu.store.tables import (
    merchants_code_failures,
    merchants_idempotency,
    merchants_merchants,
    merchants_payment_codes,
    merchants_qr_codes,
    payments_orders,
)

# --- merchants ------------------------------------------------------------------------


def insert_merchant(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(merchants_merchants).values(**values))


def merchant_by_id(
    connection: Connection, merchant_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = select(merchants_merchants).where(merchants_merchants.c.id == merchant_id)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def merchants_of_owner(connection: Connection, customer_id: uuid.UUID) -> Sequence[Row[Any]]:
    query = (
        select(merchants_merchants)
        .where(merchants_merchants.c.owner_customer_id == customer_id)
        .order_by(merchants_merchants.c.id)
    )
    return connection.execute(query).all()


def count_merchants_of_owner(connection: Connection, customer_id: uuid.UUID) -> int:
    query = select(func.count()).where(merchants_merchants.c.owner_customer_id == customer_id)
    return int(connection.execute(query).scalar_one())


def merchants_page(
    connection: Connection, status: str | None, before: uuid.UUID | None, limit: int
) -> Sequence[Row[Any]]:
    """Newest first."""
    query = select(merchants_merchants).order_by(merchants_merchants.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(merchants_merchants.c.status == status)
    if before is not None:
        query = query.where(merchants_merchants.c.id < before)
    return connection.execute(query).all()


def update_merchant(connection: Connection, merchant_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(merchants_merchants).where(merchants_merchants.c.id == merchant_id).values(**values)
    )
    return int(result.rowcount)


# --- merchant-presented QR codes ----------------------------------------------------------


def insert_qr_code(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(merchants_qr_codes).values(**values))


def qr_code_by_id(
    connection: Connection, code_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    """The code; ``lock`` takes its row lock (PostgreSQL) until the unit of work
    ends, so two payers of one dynamic code run one after the other."""
    query = select(merchants_qr_codes).where(merchants_qr_codes.c.id == code_id)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def count_qr_codes(
    connection: Connection, merchant_id: uuid.UUID, kind: str, open_after_ts: int | None
) -> int:
    """A merchant's codes of ``kind``; with ``open_after_ts``, only the unused
    ones that expire after it."""
    query = select(func.count()).where(
        merchants_qr_codes.c.merchant_id == merchant_id, merchants_qr_codes.c.kind == kind
    )
    if open_after_ts is not None:
        query = query.where(
            merchants_qr_codes.c.status == "active",
            merchants_qr_codes.c.expires_ts > open_after_ts,
        )
    return int(connection.execute(query).scalar_one())


def mark_qr_code_used(connection: Connection, code_id: uuid.UUID, order_id: uuid.UUID) -> int:
    """1 when the code went from active to used; 0 when it was used already."""
    result = connection.execute(
        update(merchants_qr_codes)
        .where(merchants_qr_codes.c.id == code_id, merchants_qr_codes.c.status == "active")
        .values(status="used", used_order_id=order_id)
    )
    return int(result.rowcount)


# --- customer-presented payment codes -------------------------------------------------------


def insert_payment_code(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(merchants_payment_codes).values(**values))


def payment_code_by_index(
    connection: Connection, code_index: bytes, *, lock: bool = False
) -> Row[Any] | None:
    query = select(merchants_payment_codes).where(
        merchants_payment_codes.c.code_index == code_index
    )
    if lock:
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def payment_code_by_id(connection: Connection, code_id: uuid.UUID) -> Row[Any] | None:
    query = select(merchants_payment_codes).where(merchants_payment_codes.c.id == code_id)
    return connection.execute(query).one_or_none()


def count_live_payment_codes(connection: Connection, customer_id: uuid.UUID, now_ts: int) -> int:
    query = select(func.count()).where(
        merchants_payment_codes.c.customer_id == customer_id,
        merchants_payment_codes.c.status == "active",
        merchants_payment_codes.c.expires_ts > now_ts,
    )
    return int(connection.execute(query).scalar_one())


def mark_payment_code_used(connection: Connection, code_id: uuid.UUID, order_id: uuid.UUID) -> int:
    """1 when the code went from active to used; 0 when it was used already."""
    result = connection.execute(
        update(merchants_payment_codes)
        .where(
            merchants_payment_codes.c.id == code_id,
            merchants_payment_codes.c.status == "active",
        )
        .values(status="used", used_order_id=order_id)
    )
    return int(result.rowcount)


def prune_payment_codes(connection: Connection, expired_before_ts: int) -> int:
    """Delete codes that expired unused before ``expired_before_ts``."""
    result = connection.execute(
        delete(merchants_payment_codes).where(
            merchants_payment_codes.c.status == "active",
            merchants_payment_codes.c.expires_ts < expired_before_ts,
        )
    )
    return int(result.rowcount)


# --- Idempotency-Keys of the requests that make records ---------------------------------------


def idempotency_record(connection: Connection, scope: str, key: str) -> Row[Any] | None:
    query = select(merchants_idempotency).where(
        merchants_idempotency.c.scope == scope, merchants_idempotency.c.key == key
    )
    return connection.execute(query).one_or_none()


def insert_idempotency(connection: Connection, values: dict[str, Any]) -> None:
    """A concurrent insert of the same key is a unique violation; the service's
    retry then finds this row and answers the first request."""
    connection.execute(insert(merchants_idempotency).values(**values))


# --- the guessing throttle ---------------------------------------------------------------------


def code_failures(connection: Connection, partner_key_id: str, window_start_s: int) -> int:
    query = select(merchants_code_failures.c.failures).where(
        merchants_code_failures.c.partner_key_id == partner_key_id,
        merchants_code_failures.c.window_start_s == window_start_s,
    )
    found = connection.execute(query).scalar_one_or_none()
    return 0 if found is None else int(found)


def add_code_failure(connection: Connection, partner_key_id: str, window_start_s: int) -> int:
    """One more unusable code in the window; the new count. Older windows of the
    key are deleted on the way."""
    connection.execute(
        delete(merchants_code_failures).where(
            merchants_code_failures.c.partner_key_id == partner_key_id,
            merchants_code_failures.c.window_start_s < window_start_s,
        )
    )
    dialect_insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(merchants_code_failures).values(
        partner_key_id=partner_key_id, window_start_s=window_start_s, failures=1
    )
    upsert = statement.on_conflict_do_update(
        index_elements=["partner_key_id", "window_start_s"],
        set_={"failures": merchants_code_failures.c.failures + 1},
    ).returning(merchants_code_failures.c.failures)
    return int(connection.execute(upsert).scalar_one())


# --- the merchant's payments and refunds ---------------------------------------------------------


def merchant_orders_page(
    connection: Connection, merchant_id: uuid.UUID, before: uuid.UUID | None, limit: int
) -> Sequence[Row[Any]]:
    """Payments and refunds of the merchant, newest first (ids are time-ordered)."""
    query = (
        select(payments_orders)
        .where(payments_orders.c.merchant_id == merchant_id)
        .order_by(payments_orders.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(payments_orders.c.id < before)
    return connection.execute(query).all()


def count_refunds(connection: Connection, order_id: uuid.UUID) -> int:
    query = select(func.count()).where(payments_orders.c.refund_of == order_id)
    return int(connection.execute(query).scalar_one())


def add_refunded(
    connection: Connection, order_id: uuid.UUID, amount_minor: int, now_ts: int
) -> int:
    """Raise the order's refunded amount; the caller holds its row lock. The
    table's check refuses a total above the amount paid."""
    result = connection.execute(
        update(payments_orders)
        .where(payments_orders.c.id == order_id)
        .values(refunded_minor=payments_orders.c.refunded_minor + amount_minor, updated_ts=now_ts)
    )
    return int(result.rowcount)

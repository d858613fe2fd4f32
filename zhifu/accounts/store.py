"""Persistence of the accounts context: SQL over ``accounts_accounts`` and
``accounts_cards`` (and a look at ``identity_customers``, whose rows the
accounts belong to).

Every function takes the caller's open connection: the unit of work is the
service's. Card numbers go in and out of here only as envelope tokens and
blind indexes; the service encrypts, and decrypts only to mask.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update

from zhifu.security.rotation import EncryptedColumns, register
from zhifu.store.tables import accounts_accounts, accounts_cards, identity_customers

# What ``zhifu keys rotate`` re-encrypts in this context.
register(EncryptedColumns(accounts_cards, "id", "pii_key_id", ("pan_enc",)))

LIVE_ACCOUNT_STATUSES = ("open", "frozen")
LIVE_CARD_STATUSES = ("active", "frozen")


class Counts(NamedTuple):
    """Rows that are still in use (not closed, not lost) and all rows."""

    live: int
    total: int


# --- customers --------------------------------------------------------------------------


def lock_customer(connection: Connection, customer_id: uuid.UUID) -> Row[Any] | None:
    """The customer's row, locked until commit (PostgreSQL ``FOR NO KEY
    UPDATE``: foreign keys to the row still check) so that the account changes of
    one customer run one at a time; SQLite's writer already runs alone."""
    query = (
        select(identity_customers)
        .where(identity_customers.c.id == customer_id)
        .with_for_update(key_share=True)
    )
    return connection.execute(query).one_or_none()


def customer_status(connection: Connection, customer_id: uuid.UUID) -> str | None:
    query = select(identity_customers.c.status).where(identity_customers.c.id == customer_id)
    status = connection.execute(query).scalar_one_or_none()
    return None if status is None else str(status)


# --- accounts ---------------------------------------------------------------------------


def insert_account(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(accounts_accounts).values(**values))


# Built once with bound parameters: payments look accounts up on their hot path.
_ACCOUNT_BY_ID = select(accounts_accounts).where(accounts_accounts.c.id == bindparam("id"))
_ACCOUNT_BY_ID_LOCKED = _ACCOUNT_BY_ID.with_for_update()
_ACCOUNT_BY_NUMBER = select(accounts_accounts).where(
    accounts_accounts.c.number == bindparam("number")
)


def account_by_id(
    connection: Connection, account_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    query = _ACCOUNT_BY_ID_LOCKED if lock else _ACCOUNT_BY_ID
    return connection.execute(query, {"id": account_id}).one_or_none()


def account_by_number(connection: Connection, number: str) -> Row[Any] | None:
    return connection.execute(_ACCOUNT_BY_NUMBER, {"number": number}).one_or_none()


def accounts_of(connection: Connection, customer_id: uuid.UUID) -> Sequence[Row[Any]]:
    query = (
        select(accounts_accounts)
        .where(accounts_accounts.c.customer_id == customer_id)
        .order_by(accounts_accounts.c.created_ts, accounts_accounts.c.id)
    )
    return connection.execute(query).all()


def count_accounts(connection: Connection, customer_id: uuid.UUID) -> Counts:
    rows = connection.execute(
        select(accounts_accounts.c.status, func.count())
        .where(accounts_accounts.c.customer_id == customer_id)
        .group_by(accounts_accounts.c.status)
    ).all()
    by_status = {str(status): int(count) for status, count in rows}
    return Counts(
        live=sum(by_status.get(s, 0) for s in LIVE_ACCOUNT_STATUSES),
        total=sum(by_status.values()),
    )


def default_account(
    connection: Connection, customer_id: uuid.UUID, currency: str
) -> Row[Any] | None:
    query = select(accounts_accounts).where(
        accounts_accounts.c.customer_id == customer_id,
        accounts_accounts.c.currency == currency,
        accounts_accounts.c.is_default.is_(True),
    )
    return connection.execute(query).one_or_none()


def oldest_live_account(
    connection: Connection, customer_id: uuid.UUID, currency: str
) -> Row[Any] | None:
    """The customer's first-opened account in ``currency`` that is not closed."""
    query = (
        select(accounts_accounts)
        .where(
            accounts_accounts.c.customer_id == customer_id,
            accounts_accounts.c.currency == currency,
            accounts_accounts.c.status.in_(LIVE_ACCOUNT_STATUSES),
        )
        .order_by(accounts_accounts.c.created_ts, accounts_accounts.c.id)
        .limit(1)
    )
    return connection.execute(query).one_or_none()


def update_account(connection: Connection, account_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(accounts_accounts).where(accounts_accounts.c.id == account_id).values(**values)
    )
    return result.rowcount


def clear_default(
    connection: Connection, customer_id: uuid.UUID, currency: str, now_ts: int
) -> None:
    connection.execute(
        update(accounts_accounts)
        .where(
            accounts_accounts.c.customer_id == customer_id,
            accounts_accounts.c.currency == currency,
            accounts_accounts.c.is_default.is_(True),
        )
        .values(is_default=False, updated_ts=now_ts)
    )


# --- cards ------------------------------------------------------------------------------


def insert_card(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(accounts_cards).values(**values))


def card_with_owner(
    connection: Connection, card_id: uuid.UUID, *, lock: bool = False
) -> Row[Any] | None:
    """The card's row with its account's ``customer_id`` and ``account_status``."""
    query = (
        select(
            accounts_cards,
            accounts_accounts.c.customer_id,
            accounts_accounts.c.status.label("account_status"),
        )
        .join(accounts_accounts, accounts_accounts.c.id == accounts_cards.c.account_id)
        .where(accounts_cards.c.id == card_id)
    )
    if lock:
        query = query.with_for_update(of=accounts_cards)
    return connection.execute(query).one_or_none()


def cards_of_account(connection: Connection, account_id: uuid.UUID) -> Sequence[Row[Any]]:
    query = (
        select(accounts_cards)
        .where(accounts_cards.c.account_id == account_id)
        .order_by(accounts_cards.c.created_ts, accounts_cards.c.id)
    )
    return connection.execute(query).all()


def cards_of_customer(connection: Connection, customer_id: uuid.UUID) -> Sequence[Row[Any]]:
    query = (
        select(accounts_cards)
        .join(accounts_accounts, accounts_accounts.c.id == accounts_cards.c.account_id)
        .where(accounts_accounts.c.customer_id == customer_id)
        .order_by(accounts_cards.c.created_ts, accounts_cards.c.id)
    )
    return connection.execute(query).all()


def count_cards(connection: Connection, account_id: uuid.UUID) -> Counts:
    rows = connection.execute(
        select(accounts_cards.c.status, func.count())
        .where(accounts_cards.c.account_id == account_id)
        .group_by(accounts_cards.c.status)
    ).all()
    by_status = {str(status): int(count) for status, count in rows}
    return Counts(
        live=sum(by_status.get(s, 0) for s in LIVE_CARD_STATUSES),
        total=sum(by_status.values()),
    )


def update_card(connection: Connection, card_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(accounts_cards).where(accounts_cards.c.id == card_id).values(**values)
    )
    return result.rowcount


def close_live_cards(connection: Connection, account_id: uuid.UUID, now_ts: int) -> int:
    """Close every active or frozen card of the account; returns how many."""
    result = connection.execute(
        update(accounts_cards)
        .where(
            accounts_cards.c.account_id == account_id,
            accounts_cards.c.status.in_(LIVE_CARD_STATUSES),
        )
        .values(status="closed", updated_ts=now_ts)
    )
    return result.rowcount

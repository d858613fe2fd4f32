"""Persistence of the webhooks context: SQL over the ``webhooks_*`` tables.

Every function takes the caller's open connection (the unit of work is the
service's, or the publisher's). Signing secrets go in and out of here only as
envelope tokens; the service encrypts and decrypts them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

from sqlalchemy import Connection, Row, func, insert, select, update

from zhifu.security.rotation import EncryptedColumns, register
from zhifu.store.tables import (
    identity_partner_keys,
    webhooks_attempts,
    webhooks_deliveries,
    webhooks_events,
    webhooks_subscriptions,
)
from zhifu.webhooks.model import DeliveryOrigin, DeliveryStatus, SubscriptionStatus

# What ``zhifu keys rotate`` re-encrypts in this context.
SUBSCRIPTIONS_SPEC = register(
    EncryptedColumns(webhooks_subscriptions, "id", "pii_key_id", ("secret_enc",))
)

# A row of any width: the joins below select columns of several tables.
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

_S = webhooks_subscriptions.c
_D = webhooks_deliveries.c
_E = webhooks_events.c
_A = webhooks_attempts.c
_K = identity_partner_keys.c


# --- partner keys and subscriptions ---------------------------------------------------------


def lock_partner_key(connection: Connection, key_id: str) -> AnyRow | None:
    """The partner key row, locked (PostgreSQL; SQLite has one writer): a partner's
    subscription changes then run one at a time, so counting them cannot race."""
    query = (
        select(_K.key_id, _K.revoked_ts).where(_K.key_id == key_id).with_for_update(key_share=True)
    )
    return connection.execute(query).one_or_none()


def count_active_subscriptions(connection: Connection, key_id: str) -> int:
    query = (
        select(func.count())
        .select_from(webhooks_subscriptions)
        .where(_S.partner_key_id == key_id, _S.status == SubscriptionStatus.ACTIVE)
    )
    return int(connection.execute(query).scalar_one())


def insert_subscription(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(webhooks_subscriptions).values(**values))


def subscription(connection: Connection, subscription_id: uuid.UUID) -> AnyRow | None:
    query = select(webhooks_subscriptions).where(_S.id == subscription_id)
    return connection.execute(query).one_or_none()


def active_subscriptions(connection: Connection, key_id: str) -> Sequence[AnyRow]:
    query = (
        select(webhooks_subscriptions)
        .where(_S.partner_key_id == key_id, _S.status == SubscriptionStatus.ACTIVE)
        .order_by(_S.id)
    )
    return connection.execute(query).all()


def live_subscriptions(connection: Connection, key_id: str) -> Sequence[AnyRow]:
    """The active subscriptions of ``key_id``, none if the key is revoked."""
    query = (
        select(_S.id, _S.event_types)
        .join(identity_partner_keys, _K.key_id == _S.partner_key_id)
        .where(
            _S.partner_key_id == key_id,
            _S.status == SubscriptionStatus.ACTIVE,
            _K.revoked_ts.is_(None),
        )
        .order_by(_S.id)
    )
    return connection.execute(query).all()


def delete_subscription(connection: Connection, subscription_id: uuid.UUID, ts: int) -> bool:
    statement = (
        update(webhooks_subscriptions)
        .where(_S.id == subscription_id, _S.status == SubscriptionStatus.ACTIVE)
        .values(status=SubscriptionStatus.DELETED, deleted_ts=ts)
    )
    return bool(connection.execute(statement).rowcount == 1)


# --- events and deliveries ------------------------------------------------------------------


def insert_event(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(webhooks_events).values(**values))


def insert_delivery(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(
        insert(webhooks_deliveries).values(
            **values, status=DeliveryStatus.PENDING, attempts=0, completed_ts=None
        )
    )


_DELIVERY_COLUMNS = (
    _D.id,
    _D.event_id,
    _D.subscription_id,
    _D.origin,
    _D.replay_of,
    _D.status,
    _D.attempts,
    _D.created_ts,
    _D.last_attempt_ts,
    _D.completed_ts,
    _E.event_type,
)


def delivery(connection: Connection, delivery_id: uuid.UUID) -> AnyRow | None:
    """A delivery with its event type and its subscription's owner and status."""
    query = (
        select(*_DELIVERY_COLUMNS, _S.partner_key_id, _S.status.label("subscription_status"))
        .join(webhooks_events, _E.id == _D.event_id)
        .join(webhooks_subscriptions, _S.id == _D.subscription_id)
        .where(_D.id == delivery_id)
    )
    return connection.execute(query).one_or_none()


def dispatch_view(connection: Connection, delivery_id: uuid.UUID) -> AnyRow | None:
    """Everything one attempt needs: the delivery, its event's body, and its
    subscription's URL, secret token and status, and whether the key is revoked."""
    query = (
        select(
            _D.id,
            _D.status,
            _D.attempts,
            _D.event_id,
            _D.subscription_id,
            _E.event_type,
            _E.body,
            _S.url,
            _S.secret_enc,
            _S.status.label("subscription_status"),
            _K.revoked_ts,
        )
        .join(webhooks_events, _E.id == _D.event_id)
        .join(webhooks_subscriptions, _S.id == _D.subscription_id)
        .join(identity_partner_keys, _K.key_id == _S.partner_key_id)
        .where(_D.id == delivery_id)
    )
    return connection.execute(query).one_or_none()


def count_manual_pending(connection: Connection, subscription_id: uuid.UUID) -> int:
    """Pending test and replay deliveries of a subscription (a partial index holds
    the pending ones)."""
    query = (
        select(func.count())
        .select_from(webhooks_deliveries)
        .where(
            _D.subscription_id == subscription_id,
            _D.status == DeliveryStatus.PENDING,
            _D.origin != DeliveryOrigin.EVENT,
        )
    )
    return int(connection.execute(query).scalar_one())


def record_attempt(
    connection: Connection,
    delivery_id: uuid.UUID,
    attempt: dict[str, Any],
    *,
    succeeded: bool,
) -> bool:
    """Log one attempt and count it on its delivery, if the delivery is still pending
    and no other attempt took this number; ``succeeded`` completes the delivery."""
    number = attempt["attempt"]
    values: dict[str, Any] = {"attempts": number, "last_attempt_ts": attempt["ts"]}
    if succeeded:
        values |= {"status": DeliveryStatus.SUCCEEDED, "completed_ts": attempt["ts"]}
    statement = (
        update(webhooks_deliveries)
        .where(
            _D.id == delivery_id,
            _D.status == DeliveryStatus.PENDING,
            _D.attempts == number - 1,
        )
        .values(**values)
    )
    if connection.execute(statement).rowcount != 1:
        return False
    connection.execute(insert(webhooks_attempts).values(delivery_id=delivery_id, **attempt))
    return True


def complete_delivery(
    connection: Connection, delivery_id: uuid.UUID, status: DeliveryStatus, ts: int
) -> bool:
    """Move a pending delivery to ``status`` (failed or cancelled)."""
    statement = (
        update(webhooks_deliveries)
        .where(_D.id == delivery_id, _D.status == DeliveryStatus.PENDING)
        .values(status=status, completed_ts=ts)
    )
    return bool(connection.execute(statement).rowcount == 1)


def deliveries_page(
    connection: Connection, subscription_id: uuid.UUID, before: uuid.UUID | None, limit: int
) -> Sequence[AnyRow]:
    """A subscription's deliveries, newest first, older than ``before`` when given."""
    query = (
        select(*_DELIVERY_COLUMNS)
        .join(webhooks_events, _E.id == _D.event_id)
        .where(_D.subscription_id == subscription_id)
        .order_by(_D.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(_D.id < before)
    return connection.execute(query).all()


def attempts_of(
    connection: Connection, delivery_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[AnyRow]]:
    """The attempts of each delivery, in order."""
    found: dict[uuid.UUID, list[AnyRow]] = {delivery_id: [] for delivery_id in delivery_ids}
    if not delivery_ids:
        return found
    query = (
        select(webhooks_attempts)
        .where(_A.delivery_id.in_(list(delivery_ids)))
        .order_by(_A.delivery_id, _A.attempt)
    )
    for row in connection.execute(query):
        found[row.delivery_id].append(row)
    return found

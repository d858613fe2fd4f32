"""Webhooks use cases: subscriptions, publishing events, delivering them, the log, replays.

Each public method of :class:`WebhookService` is one use case in one unit of
work (``run_in_transaction``) with its audit event. :func:`publish` is the
exception by design: it runs in the *caller's* transaction, so an event is
published exactly when the change it announces commits.

Publishing writes the event (its body made once, :func:`zhifu.webhooks.model.event_body`),
one delivery per live subscription of the partner key whose patterns match,
and one outbox message per delivery (topic ``webhooks.delivery``, key the
delivery id). The outbox dispatcher then calls :meth:`WebhookService.deliver`
for each message, outside any transaction:

1. read the delivery, its event and subscription; a delivery that is no longer
   pending is done (a duplicate message); one whose subscription was deleted
   or whose partner key was revoked meanwhile, or whose URL the rules no
   longer allow (loopback, once ``ZHIFU_WEBHOOKS_ALLOW_LOOPBACK`` is off), is
   ``cancelled``;
2. decrypt the signing secret, sign the body with the current time
   (:mod:`zhifu.webhooks.signature`) and POST it through the transport port,
   with ``DELIVERY_TIMEOUT_S`` for the whole attempt;
3. log the attempt (number, time, duration, status code or the class of the
   network error, the first ``RESPONSE_EXCERPT_CHARS_MAX`` characters of the
   answer) and, on a 2xx, mark the delivery ``succeeded``, in one transaction;
4. anything else raises ``HandlerFailedError``: the outbox retries with
   backoff, and when its attempts run out it dead-letters the message and
   :meth:`WebhookService.on_dead` marks the delivery ``failed`` in the same
   transaction.

A manual replay is a new delivery (origin ``replay``, ``replay_of`` the
original) of the same event, to the same subscription: the recipient sees the
same ``Zhifu-Webhook-Id`` and can de-duplicate. The test endpoint publishes a
``webhook.test`` event to one subscription. Both are limited to
``MANUAL_PENDING_MAX`` pending deliveries per subscription.

The secret is shown once, when the subscription is made, and is stored only as
an envelope token (``column_context("webhooks_subscriptions", "secret_enc",
id)``, re-encrypted by ``zhifu keys rotate``). It never reaches a log line,
an audit event, the delivery log or an error message.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row

from zhifu.ids import uuid7
from zhifu.invariant import invariant
from zhifu.ops.audit import AuditContext, record
from zhifu.ops.logging import get_logger
from zhifu.ops.outbox import (
    BATCH_SIZE_DEFAULT,
    LEASE_S,
    HandlerFailedError,
    OutboxMessage,
    TopicHandler,
    enqueue,
)
from zhifu.ops.outbox import now_us as outbox_now_us
from zhifu.security.envelope import KeyRing, column_context
from zhifu.store.uow import run_in_transaction
from zhifu.webhooks import store
from zhifu.webhooks.errors import (
    DeliveryNotFoundError,
    InvalidSubscriptionError,
    QuotaExceededError,
    SubscriptionNotFoundError,
)
from zhifu.webhooks.model import (
    DELIVERIES_PAGE_DEFAULT,
    DELIVERIES_PAGE_MAX,
    DELIVERY_TIMEOUT_S,
    ERROR_CLASS_CHARS_MAX,
    MANUAL_PENDING_MAX,
    SUBSCRIPTIONS_PER_PARTNER_MAX,
    TEST_EVENT_TYPE,
    DeliveryOrigin,
    DeliveryStatus,
    SubscriptionStatus,
    check_event_type,
    check_event_types,
    check_url,
    event_body,
    excerpt,
    is_success,
    subscribed,
)
from zhifu.webhooks.signature import SECRET_BYTES, webhook_headers
from zhifu.webhooks.transport import TransportError, WebhookTransport

WEBHOOK_TOPIC: Final = "webhooks.delivery"
US: Final = 1_000_000
SECRET_CONTEXT: Final = ("webhooks_subscriptions", "secret_enc")
CONTENT_TYPE: Final = "application/json"

Clock = Callable[[], int]

_log = get_logger("zhifu.webhooks")

# A dispatcher pass must finish its batch well within its lease (zhifu.ops.outbox),
# or another pass takes the rest over and recipients see those webhooks twice.
invariant(
    BATCH_SIZE_DEFAULT * DELIVERY_TIMEOUT_S * 2 <= LEASE_S,
    "a batch of webhook attempts at their time limit must fit in half an outbox lease",
)


# --- views --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    id: uuid.UUID
    partner_key_id: str
    url: str
    event_types: tuple[str, ...]
    status: str
    created_ts: int
    deleted_ts: int | None


@dataclass(frozen=True, slots=True)
class NewSubscription:
    subscription: SubscriptionView
    secret: str = field(repr=False)  # standard base64 of SECRET_BYTES, shown once


@dataclass(frozen=True, slots=True)
class AttemptView:
    attempt: int
    ts: int
    duration_ms: int
    status_code: int | None
    error_class: str | None
    response_excerpt: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and is_success(self.status_code)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    subscription_id: uuid.UUID
    origin: str
    replay_of: uuid.UUID | None
    status: str
    created_ts: int
    completed_ts: int | None
    attempts: tuple[AttemptView, ...]


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: tuple[DeliveryView, ...]
    next_before: uuid.UUID | None  # pass as ``before`` for the next (older) page


def _subscription_view(row: Row[Any]) -> SubscriptionView:
    return SubscriptionView(
        id=row.id,
        partner_key_id=row.partner_key_id,
        url=row.url,
        event_types=tuple(p for p in row.event_types.split(",") if p),
        status=row.status,
        created_ts=int(row.created_ts),
        deleted_ts=row.deleted_ts,
    )


def _attempt_view(row: Row[Any]) -> AttemptView:
    return AttemptView(
        attempt=int(row.attempt),
        ts=int(row.ts),
        duration_ms=int(row.duration_ms),
        status_code=row.status_code,
        error_class=row.error_class,
        response_excerpt=row.response_excerpt,
    )


def _delivery_view(row: Row[Any], attempts: Sequence[Row[Any]]) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        subscription_id=row.subscription_id,
        origin=row.origin,
        replay_of=row.replay_of,
        status=row.status,
        created_ts=int(row.created_ts),
        completed_ts=row.completed_ts,
        attempts=tuple(_attempt_view(a) for a in attempts),
    )


# --- publishing (in the caller's transaction) ----------------------------------------------


def publish(
    connection: Connection,
    partner_key_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    now_ts: int | None = None,
) -> list[uuid.UUID]:
    """Publish an event to a partner key's matching subscriptions, in the caller's
    database transaction: nothing is sent unless and until that commits.

    Returns the ids of the deliveries made (none when no live subscription of
    the key wants ``event_type``; then nothing is stored).

    Raises:
        InvalidEventError: ``event_type`` is malformed or ``webhook.test``, or
            ``data`` is not a JSON object of allowed values within the size limit.
    """
    check_event_type(event_type)
    ts = outbox_now_us() if now_ts is None else now_ts
    event_id = uuid7()
    body = event_body(event_id, event_type, ts, data)  # checked before anything is written
    targets = [
        row.id
        for row in store.live_subscriptions(connection, partner_key_id)
        if subscribed(row.event_types.split(","), event_type)
    ]
    if not targets:
        return []
    _insert_event(connection, event_id, partner_key_id, event_type, body, ts)
    return [
        _new_delivery(connection, event_id, subscription_id, DeliveryOrigin.EVENT, None, ts)
        for subscription_id in targets
    ]


def _insert_event(
    connection: Connection,
    event_id: uuid.UUID,
    partner_key_id: str,
    event_type: str,
    body: str,
    ts: int,
) -> None:
    store.insert_event(
        connection,
        {
            "id": event_id,
            "partner_key_id": partner_key_id,
            "event_type": event_type,
            "body": body,
            "created_ts": ts,
        },
    )


def _new_delivery(
    connection: Connection,
    event_id: uuid.UUID,
    subscription_id: uuid.UUID,
    origin: DeliveryOrigin,
    replay_of: uuid.UUID | None,
    ts: int,
) -> uuid.UUID:
    delivery_id = uuid7()
    store.insert_delivery(
        connection,
        {
            "id": delivery_id,
            "event_id": event_id,
            "subscription_id": subscription_id,
            "origin": origin,
            "replay_of": replay_of,
            "created_ts": ts,
        },
    )
    enqueue(
        connection,
        WEBHOOK_TOPIC,
        str(delivery_id),
        {"delivery_id": str(delivery_id)},
        available_ts=ts,
    )
    return delivery_id


# --- the service --------------------------------------------------------------------------


@dataclass
class WebhookService:
    """Subscriptions, the delivery log, replays and the outbox handler.

    ``transport`` is the HTTP port (:class:`zhifu.webhooks.transport.HttpxTransport`
    in production); ``clock`` gives microseconds and also dates the signature;
    ``allow_loopback`` is ``ZHIFU_WEBHOOKS_ALLOW_LOOPBACK``.
    """

    engine: Engine
    keyring: KeyRing
    transport: WebhookTransport
    clock: Clock = outbox_now_us
    allow_loopback: bool = True
    timeout_s: float = DELIVERY_TIMEOUT_S

    # --- subscriptions ------------------------------------------------------------------

    def create_subscription(
        self, partner_key_id: str, url: str, event_types: Sequence[str], ctx: AuditContext
    ) -> NewSubscription:
        """Subscribe ``url`` to ``event_types``; the new secret is returned once.

        Raises:
            InvalidSubscriptionError: the URL or an event type breaks a rule.
            SubscriptionNotFoundError: the partner key does not exist or is revoked.
            QuotaExceededError: the key holds ``SUBSCRIPTIONS_PER_PARTNER_MAX`` already.
        """
        checked_url = check_url(url, allow_loopback=self.allow_loopback)
        patterns = check_event_types(event_types)
        subscription_id = uuid7()
        secret = secrets.token_bytes(SECRET_BYTES)
        token = self.keyring.encrypt(
            secret, context=column_context(*SECRET_CONTEXT, subscription_id)
        )

        def work(connection: Connection) -> SubscriptionView:
            key = store.lock_partner_key(connection, partner_key_id)
            if key is None or key.revoked_ts is not None:
                raise SubscriptionNotFoundError("this partner key is unknown or revoked")
            if store.count_active_subscriptions(connection, partner_key_id) >= (
                SUBSCRIPTIONS_PER_PARTNER_MAX
            ):
                raise QuotaExceededError(
                    f"a partner key may hold at most {SUBSCRIPTIONS_PER_PARTNER_MAX}"
                    " subscriptions: delete one first"
                )
            store.insert_subscription(
                connection,
                {
                    "id": subscription_id,
                    "partner_key_id": partner_key_id,
                    "url": checked_url,
                    "event_types": ",".join(patterns),
                    "secret_enc": token,
                    "pii_key_id": self.keyring.active_key_id,
                    "status": SubscriptionStatus.ACTIVE,
                    "created_ts": self.clock(),
                    "deleted_ts": None,
                },
            )
            record(
                connection,
                ctx.event(
                    "webhooks.subscription.create",
                    f"webhook:{subscription_id}",
                    event_types=list(patterns),
                ),
            )
            row = store.subscription(connection, subscription_id)
            invariant(row is not None, "a subscription just inserted is there")
            assert row is not None  # for the type checker
            return _subscription_view(row)

        view: SubscriptionView = _run(self.engine, work)
        return NewSubscription(view, base64.b64encode(secret).decode("ascii"))

    def list_subscriptions(self, partner_key_id: str) -> list[SubscriptionView]:
        """The key's active subscriptions, oldest first (at most the quota)."""
        rows = _run(self.engine, lambda c: store.active_subscriptions(c, partner_key_id), False)
        return [_subscription_view(row) for row in rows]

    def delete_subscription(
        self, partner_key_id: str, subscription_id: uuid.UUID, ctx: AuditContext
    ) -> None:
        """Stop sending to a subscription; its pending deliveries end ``cancelled``.

        Raises SubscriptionNotFoundError: no active subscription of this key has the id.
        """

        def work(connection: Connection) -> None:
            row = store.subscription(connection, subscription_id)
            if row is None or row.partner_key_id != partner_key_id:
                raise SubscriptionNotFoundError("no webhook subscription has this id")
            if not store.delete_subscription(connection, subscription_id, self.clock()):
                raise SubscriptionNotFoundError("no webhook subscription has this id")
            record(
                connection, ctx.event("webhooks.subscription.delete", f"webhook:{subscription_id}")
            )

        _run(self.engine, work)

    # --- the delivery log ---------------------------------------------------------------

    def deliveries(
        self,
        partner_key_id: str,
        subscription_id: uuid.UUID,
        *,
        limit: int = DELIVERIES_PAGE_DEFAULT,
        before: uuid.UUID | None = None,
    ) -> DeliveryPage:
        """A page of a subscription's deliveries with every attempt, newest first.

        Raises:
            InvalidSubscriptionError: ``limit`` is not 1 to ``DELIVERIES_PAGE_MAX``.
            SubscriptionNotFoundError: no subscription of this key (deleted ones
                included) has the id.
        """
        if isinstance(limit, bool) or not 1 <= limit <= DELIVERIES_PAGE_MAX:
            raise InvalidSubscriptionError(f"limit must be 1 to {DELIVERIES_PAGE_MAX}")

        def work(connection: Connection) -> DeliveryPage:
            row = store.subscription(connection, subscription_id)
            if row is None or row.partner_key_id != partner_key_id:
                raise SubscriptionNotFoundError("no webhook subscription has this id")
            rows = store.deliveries_page(connection, subscription_id, before, limit)
            attempts = store.attempts_of(connection, [r.id for r in rows])
            views = tuple(_delivery_view(r, attempts[r.id]) for r in rows)
            more = len(rows) == limit
            return DeliveryPage(views, views[-1].id if more and views else None)

        page: DeliveryPage = _run(self.engine, work, False)
        return page

    # --- manual deliveries --------------------------------------------------------------

    def replay(
        self, delivery_id: uuid.UUID, ctx: AuditContext, *, partner_key_id: str | None
    ) -> DeliveryView:
        """A new delivery of a delivery's event to the same subscription, sent soon.

        ``partner_key_id`` is the caller's key; ``None`` is an operator (the CLI),
        who may replay any delivery.

        Raises:
            DeliveryNotFoundError: no delivery of this key has the id, or its
                subscription was deleted.
            QuotaExceededError: the subscription has ``MANUAL_PENDING_MAX``
                pending test and replay deliveries already.
        """

        def work(connection: Connection) -> uuid.UUID:
            row = store.delivery(connection, delivery_id)
            if row is None or (partner_key_id is not None and row.partner_key_id != partner_key_id):
                raise DeliveryNotFoundError("no webhook delivery has this id")
            if row.subscription_status != SubscriptionStatus.ACTIVE:
                raise DeliveryNotFoundError(
                    "this delivery's subscription was deleted: nothing to replay it to"
                )
            self._check_manual_quota(connection, row.subscription_id)
            new_id = _new_delivery(
                connection,
                row.event_id,
                row.subscription_id,
                DeliveryOrigin.REPLAY,
                delivery_id,
                self.clock(),
            )
            record(
                connection,
                ctx.event(
                    "webhooks.delivery.replay",
                    f"webhook_delivery:{delivery_id}",
                    replay=str(new_id),
                ),
            )
            return new_id

        new_id: uuid.UUID = _run(self.engine, work)
        return self._delivery(new_id)

    def send_test(
        self, partner_key_id: str, subscription_id: uuid.UUID, ctx: AuditContext
    ) -> DeliveryView:
        """Publish a ``webhook.test`` event to one subscription, whatever its event types.

        Raises:
            SubscriptionNotFoundError: no active subscription of this key has the id.
            QuotaExceededError: as for :meth:`replay`.
        """

        def work(connection: Connection) -> uuid.UUID:
            row = store.subscription(connection, subscription_id)
            if (
                row is None
                or row.partner_key_id != partner_key_id
                or row.status != SubscriptionStatus.ACTIVE
            ):
                raise SubscriptionNotFoundError("no webhook subscription has this id")
            self._check_manual_quota(connection, subscription_id)
            ts = self.clock()
            event_id = uuid7()
            data = {"subscription_id": str(subscription_id), "message": "a test from zhifu"}
            body = event_body(event_id, TEST_EVENT_TYPE, ts, data)
            _insert_event(connection, event_id, partner_key_id, TEST_EVENT_TYPE, body, ts)
            new_id = _new_delivery(
                connection, event_id, subscription_id, DeliveryOrigin.TEST, None, ts
            )
            record(
                connection,
                ctx.event("webhooks.subscription.test", f"webhook:{subscription_id}"),
            )
            return new_id

        new_id: uuid.UUID = _run(self.engine, work)
        return self._delivery(new_id)

    def _check_manual_quota(self, connection: Connection, subscription_id: uuid.UUID) -> None:
        if store.count_manual_pending(connection, subscription_id) >= MANUAL_PENDING_MAX:
            raise QuotaExceededError(
                f"this subscription has {MANUAL_PENDING_MAX} test and replay deliveries"
                " waiting already: let them finish first"
            )

    def _delivery(self, delivery_id: uuid.UUID) -> DeliveryView:
        def work(connection: Connection) -> DeliveryView:
            row = store.delivery(connection, delivery_id)
            invariant(row is not None, "a delivery just made is there")
            assert row is not None  # for the type checker
            return _delivery_view(row, store.attempts_of(connection, [delivery_id])[delivery_id])

        view: DeliveryView = _run(self.engine, work, False)
        return view

    def delivery(self, delivery_id: uuid.UUID) -> DeliveryView:
        """One delivery with its attempts (operators). Raises DeliveryNotFoundError."""

        def work(connection: Connection) -> Row[Any] | None:
            return store.delivery(connection, delivery_id)

        if _run(self.engine, work, False) is None:
            raise DeliveryNotFoundError("no webhook delivery has this id")
        return self._delivery(delivery_id)

    # --- the outbox handler -------------------------------------------------------------

    def topic_handler(self) -> TopicHandler:
        """What the outbox dispatcher runs for ``webhooks.delivery`` messages."""
        return TopicHandler(handle=self.deliver, on_dead=self.on_dead)

    def deliver(self, message: OutboxMessage) -> None:
        """One attempt of one delivery (see the module's design note).

        Raises HandlerFailedError when the recipient did not answer 2xx (the
        outbox retries); returns when the delivery succeeded or needs no attempt.
        """
        delivery_id = uuid.UUID(message.key)
        row = _run(self.engine, lambda c: store.dispatch_view(c, delivery_id), False)
        if row is None or row.status != DeliveryStatus.PENDING:
            return  # delivered, failed or cancelled already: a duplicate message
        if row.subscription_status != SubscriptionStatus.ACTIVE or row.revoked_ts is not None:
            self._cancel(delivery_id)
            return
        try:  # again: ZHIFU_WEBHOOKS_ALLOW_LOOPBACK may have been turned off since
            check_url(row.url, allow_loopback=self.allow_loopback)
        except InvalidSubscriptionError:
            _log.warning("webhook_url_refused", subscription_id=str(row.subscription_id))
            self._cancel(delivery_id)
            return
        secret = self.keyring.decrypt(
            bytes(row.secret_enc), context=column_context(*SECRET_CONTEXT, row.subscription_id)
        )
        body = row.body.encode("utf-8")
        headers = webhook_headers(
            secret,
            timestamp_s=self.clock() // US,
            body=body,
            event_id=str(row.event_id),
            event_type=row.event_type,
            delivery_id=str(delivery_id),
        )
        headers["Content-Type"] = CONTENT_TYPE
        attempt = self._post(row.url, headers, body)
        attempt["attempt"] = int(row.attempts) + 1
        succeeded = attempt["status_code"] is not None and is_success(attempt["status_code"])
        logged = _run(
            self.engine,
            lambda c: store.record_attempt(c, delivery_id, attempt, succeeded=succeeded),
        )
        _log.info(
            "webhook_attempt",
            delivery_id=str(delivery_id),
            subscription_id=str(row.subscription_id),
            attempt=attempt["attempt"],
            status_code=attempt["status_code"],
            error_class=attempt["error_class"],
            duration_ms=attempt["duration_ms"],
            logged=logged,
        )
        if not succeeded:
            raise HandlerFailedError(
                attempt["error_class"] or f"the recipient answered {attempt['status_code']}"
            )

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """One POST: the attempt's log entry (without its number)."""
        ts = self.clock()
        started = time.monotonic()
        status_code: int | None = None
        error_class: str | None = None
        response_excerpt: str | None = None
        try:
            response = self.transport.post(url, headers, body, timeout_s=self.timeout_s)
        except TransportError as exc:
            error_class = exc.error_class[:ERROR_CLASS_CHARS_MAX]
        else:
            status_code = response.status_code
            response_excerpt = excerpt(response.body_start) or None
        duration_ms = max(0, round((time.monotonic() - started) * 1000))
        return {
            "ts": ts,
            "duration_ms": duration_ms,
            "status_code": status_code,
            "error_class": error_class,
            "response_excerpt": response_excerpt,
        }

    def _cancel(self, delivery_id: uuid.UUID) -> None:
        def work(connection: Connection) -> bool:
            return store.complete_delivery(
                connection, delivery_id, DeliveryStatus.CANCELLED, self.clock()
            )

        if _run(self.engine, work):
            _log.info("webhook_cancelled", delivery_id=str(delivery_id))

    def on_dead(self, connection: Connection, message: OutboxMessage, reason: str) -> None:
        """The outbox gave up on a delivery: mark it ``failed`` (in the outbox's transaction)."""
        store.complete_delivery(
            connection, uuid.UUID(message.key), DeliveryStatus.FAILED, self.clock()
        )


def _run(engine: Engine, work: Callable[[Connection], Any], write: bool = True) -> Any:
    """One unit of work (a writer's unless ``write`` is false)."""
    return run_in_transaction(engine, work, write=write)

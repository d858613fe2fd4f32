"""Webhooks (``zhifu.webhooks``) on SQLite and PostgreSQL, delivered over real HTTP
to a local receiver that checks every signature with ``verify_webhook``.

Published in a committed transaction: delivered, signed, logged; in a rolled-back
one: nothing. A receiver answering 500 then 200: retried with backoff on the
injected clock, both attempts logged. Always failing: dead-lettered after the
last attempt, the delivery ``failed``. Parallel dispatchers: each event once.
Replays and test events, another partner's records, deletion and revocation,
quotas at their limits, key rotation, the transport port's two
implementations, and the secret absent from logs, the delivery log and every
stored row.
"""

from __future__ import annotations

import base64
import io
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from identity_factories import FakeClock, new_keyring, ring_entries
from sqlalchemy import Engine, select, text
from webhooks_factories import (
    Receiver,
    dispatcher,
    new_partner_key,
    partner_ctx,
    revoke_partner_key,
    running_receiver,
    secret_of,
    webhook_service,
)

from zhifu.ops.audit import list_events
from zhifu.ops.logging import configure_logging
from zhifu.ops.outbox import ATTEMPTS_MAX, counts_by_status, nominal_schedule_s
from zhifu.security.envelope import KeyRing
from zhifu.security.rotation import rotate
from zhifu.store.tables import (
    ops_outbox,
    webhooks_attempts,
    webhooks_deliveries,
    webhooks_events,
    webhooks_subscriptions,
)
from zhifu.store.uow import run_in_transaction
from zhifu.webhooks.errors import (
    DeliveryNotFoundError,
    InvalidEventError,
    InvalidSubscriptionError,
    QuotaExceededError,
    SubscriptionNotFoundError,
)
from zhifu.webhooks.model import (
    DELIVERIES_PAGE_MAX,
    MANUAL_PENDING_MAX,
    RESPONSE_EXCERPT_CHARS_MAX,
    SUBSCRIPTIONS_PER_PARTNER_MAX,
    TEST_EVENT_TYPE,
)
from zhifu.webhooks.service import WebhookService, publish
from zhifu.webhooks.signature import DELIVERY_HEADER, SIGNATURE_HEADER
from zhifu.webhooks.store import SUBSCRIPTIONS_SPEC
from zhifu.webhooks.transport import (
    TIMEOUT_ERROR_CLASS,
    HttpxTransport,
    RecordingTransport,
    TransportError,
    TransportResponse,
    WebhookTransport,
)

US = 1_000_000
DATA = {"order_id": "po_1", "amount_minor": 12345, "currency": "CNY"}
PARALLEL_EVENTS = 30
PARALLEL_DISPATCHERS = 4


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keyring() -> KeyRing:
    return new_keyring()


@pytest.fixture
def key_id(engine: Engine, keyring: KeyRing, clock: FakeClock) -> str:
    return new_partner_key(engine, keyring, clock)


@pytest.fixture
def service(engine: Engine, keyring: KeyRing, clock: FakeClock) -> WebhookService:
    return webhook_service(engine, keyring, clock)


@pytest.fixture
def receiver(clock: FakeClock) -> Iterator[Receiver]:
    with running_receiver(Receiver(now_s=lambda: clock.now_s)) as running:
        yield running


def subscribe(
    service: WebhookService, key_id: str, receiver: Receiver, patterns: list[str] | None = None
) -> uuid.UUID:
    new = service.create_subscription(
        key_id, receiver.url, patterns or ["payment.*"], partner_ctx(key_id)
    )
    receiver.secret = secret_of(new)
    return new.subscription.id


def publish_now(
    engine: Engine, clock: FakeClock, key_id: str, event_type: str = "payment.succeeded"
) -> list[uuid.UUID]:
    deliveries: list[uuid.UUID] = run_in_transaction(
        engine, lambda c: publish(c, key_id, event_type, DATA, now_ts=clock())
    )
    return deliveries


def table_count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


# --- delivery -------------------------------------------------------------------------------


def test_a_committed_event_is_delivered_signed_and_logged(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    (delivery_id,) = publish_now(engine, clock, key_id)
    assert receiver.received == [], "sent before any dispatcher ran"

    counts = dispatcher(service, clock).run_pass()
    assert (counts.claimed, counts.done) == (1, 1)
    (got,) = receiver.received
    assert got.verified, got.reason
    assert got.event_type == "payment.succeeded"
    assert got.delivery_id == str(delivery_id)
    assert got.headers["Content-Type"] == "application/json"
    assert got.event["data"] == DATA
    assert got.event["id"] == got.event_id
    assert got.event["created_ts"] == clock()
    assert got.headers[SIGNATURE_HEADER].startswith(f"t={clock.now_s},v1=")

    page = service.deliveries(key_id, subscription_id)
    (delivery,) = page.deliveries
    assert (delivery.id, delivery.status, delivery.origin) == (delivery_id, "succeeded", "event")
    assert str(delivery.event_id) == got.event_id
    assert delivery.completed_ts == clock()
    (attempt,) = delivery.attempts
    assert (attempt.attempt, attempt.status_code, attempt.error_class) == (1, 200, None)
    assert attempt.succeeded
    assert attempt.response_excerpt == '{"received": true}'
    assert attempt.duration_ms >= 0
    assert page.next_before is None


def test_a_rolled_back_publish_sends_and_stores_nothing(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscribe(service, key_id, receiver)

    class Abort(Exception):
        pass

    def work(connection: Any) -> None:
        assert publish(connection, key_id, "payment.succeeded", DATA, now_ts=clock())
        raise Abort

    with pytest.raises(Abort):
        run_in_transaction(engine, work)
    assert dispatcher(service, clock).run_pass().claimed == 0
    assert receiver.received == []
    for table in ("webhooks_events", "webhooks_deliveries", "ops_outbox"):
        assert table_count(engine, table) == 0, table


def test_an_event_no_subscription_wants_is_not_stored(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscribe(service, key_id, receiver, ["payment.succeeded"])
    assert publish_now(engine, clock, key_id, "payment.failed") == []
    other_key = new_partner_key(engine, service.keyring, clock)
    assert publish_now(engine, clock, other_key) == []
    assert table_count(engine, "webhooks_events") == 0
    with pytest.raises(InvalidEventError):
        publish_now(engine, clock, key_id, TEST_EVENT_TYPE)
    with pytest.raises(InvalidEventError, match="floats"):
        run_in_transaction(engine, lambda c: publish(c, key_id, "payment.x", {"amount": 1.5}))


def test_500_then_200_is_retried_with_backoff_and_both_attempts_are_logged(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    receiver.answer_with(500)
    publish_now(engine, clock, key_id)
    runner = dispatcher(service, clock)

    assert runner.run_pass().retried == 1
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries
    assert delivery.status == "pending"
    assert [(a.status_code, a.succeeded) for a in delivery.attempts] == [(500, False)]
    assert runner.run_pass().claimed == 0, "retried at once"

    clock.advance(seconds=nominal_schedule_s()[0] * 1.25)
    assert runner.run_pass().done == 1
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries
    assert delivery.status == "succeeded"
    assert [(a.attempt, a.status_code) for a in delivery.attempts] == [(1, 500), (2, 200)]
    assert delivery.attempts[1].ts > delivery.attempts[0].ts

    first, second = receiver.received
    assert first.verified and second.verified
    assert first.event_id == second.event_id and first.body == second.body
    assert first.headers[SIGNATURE_HEADER] != second.headers[SIGNATURE_HEADER]  # signed anew


def test_a_network_error_is_retried_and_logged_with_its_class(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService
) -> None:
    closed = Receiver(now_s=lambda: clock.now_s)
    with running_receiver(closed):
        pass  # the port is free again: connections to it are refused
    subscription_id = subscribe(service, key_id, closed)
    publish_now(engine, clock, key_id)
    assert dispatcher(service, clock).run_pass().retried == 1
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries
    (attempt,) = delivery.attempts
    assert (attempt.status_code, attempt.error_class) == (None, "ConnectError")
    assert attempt.response_excerpt is None


def test_after_the_last_attempt_the_delivery_is_dead_lettered_as_failed(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    receiver.answer_with(*[503] * ATTEMPTS_MAX)
    publish_now(engine, clock, key_id)
    runner = dispatcher(service, clock)
    outcomes = Counter[str]()
    for _ in range(ATTEMPTS_MAX + 2):
        counts = runner.run_pass()
        outcomes.update({"retried": counts.retried, "dead": counts.dead})
        clock.advance(seconds=10 * 3600)
    assert outcomes == Counter({"retried": ATTEMPTS_MAX - 1, "dead": 1})
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries
    assert delivery.status == "failed"
    assert [a.attempt for a in delivery.attempts] == list(range(1, ATTEMPTS_MAX + 1))
    assert {a.status_code for a in delivery.attempts} == {503}
    assert counts_by_status(engine) == {"dead": 1}
    assert len(receiver.received) == ATTEMPTS_MAX


def test_parallel_dispatchers_deliver_each_event_exactly_once(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscribe(service, key_id, receiver)
    for _ in range(PARALLEL_EVENTS):
        publish_now(engine, clock, key_id)
    start = threading.Barrier(PARALLEL_DISPATCHERS)
    errors: list[BaseException] = []

    def work() -> None:
        runner = dispatcher(service, clock, batch_size=2)
        start.wait()
        try:
            while runner.run_round().claimed:
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(PARALLEL_DISPATCHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    received = Counter(got.event_id for got in receiver.received)
    assert len(received) == PARALLEL_EVENTS
    assert set(received.values()) == {1}, "an event was delivered twice"
    assert all(got.verified for got in receiver.received)
    with engine.connect() as connection:
        statuses = Counter(connection.execute(select(webhooks_deliveries.c.status)).scalars())
    assert statuses == Counter({"succeeded": PARALLEL_EVENTS})


# --- replays and tests ----------------------------------------------------------------------


def test_a_manual_replay_is_a_new_delivery_of_the_same_event(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    (original_id,) = publish_now(engine, clock, key_id)
    runner = dispatcher(service, clock)
    runner.run_pass()

    replay = service.replay(original_id, partner_ctx(key_id), partner_key_id=key_id)
    assert (replay.origin, replay.replay_of, replay.status) == ("replay", original_id, "pending")
    assert replay.id != original_id
    assert runner.run_pass().done == 1
    first, second = receiver.received
    assert second.verified
    assert second.event_id == first.event_id and second.body == first.body
    assert second.headers[DELIVERY_HEADER] == str(replay.id) != first.headers[DELIVERY_HEADER]

    log = service.deliveries(key_id, subscription_id).deliveries
    assert [(d.id, d.status) for d in log] == [(replay.id, "succeeded"), (original_id, "succeeded")]
    with engine.connect() as connection:
        actions = [e.action for e in list_events(connection, 50)]
    assert "webhooks.delivery.replay" in actions


def test_manual_deliveries_are_limited_per_subscription(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    (original_id,) = publish_now(engine, clock, key_id)
    ctx = partner_ctx(key_id)
    for _ in range(MANUAL_PENDING_MAX - 1):
        service.replay(original_id, ctx, partner_key_id=key_id)
    service.send_test(key_id, subscription_id, ctx)
    with pytest.raises(QuotaExceededError, match=f"{MANUAL_PENDING_MAX} test and replay"):
        service.replay(original_id, ctx, partner_key_id=key_id)
    with pytest.raises(QuotaExceededError):
        service.send_test(key_id, subscription_id, ctx)
    dispatcher(service, clock, batch_size=32).run_round()
    service.replay(original_id, ctx, partner_key_id=key_id)  # room again once sent


def test_the_test_endpoint_sends_webhook_test_whatever_the_event_types(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver, ["refund.succeeded"])
    test = service.send_test(key_id, subscription_id, partner_ctx(key_id))
    assert (test.origin, test.event_type) == ("test", TEST_EVENT_TYPE)
    dispatcher(service, clock).run_pass()
    (got,) = receiver.received
    assert got.verified
    assert got.event_type == TEST_EVENT_TYPE
    assert got.event["data"]["subscription_id"] == str(subscription_id)


def test_another_partners_records_are_not_found(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    (delivery_id,) = publish_now(engine, clock, key_id)
    intruder = new_partner_key(engine, service.keyring, clock)
    ctx = partner_ctx(intruder)
    assert service.list_subscriptions(intruder) == []
    with pytest.raises(SubscriptionNotFoundError):
        service.deliveries(intruder, subscription_id)
    with pytest.raises(SubscriptionNotFoundError):
        service.send_test(intruder, subscription_id, ctx)
    with pytest.raises(SubscriptionNotFoundError):
        service.delete_subscription(intruder, subscription_id, ctx)
    with pytest.raises(DeliveryNotFoundError):
        service.replay(delivery_id, ctx, partner_key_id=intruder)
    with pytest.raises(DeliveryNotFoundError):
        service.replay(uuid.uuid4(), ctx, partner_key_id=key_id)
    assert [s.id for s in service.list_subscriptions(key_id)] == [subscription_id]
    # An operator (no partner key) may replay any delivery.
    assert service.replay(delivery_id, ctx, partner_key_id=None).replay_of == delivery_id


def test_deleting_a_subscription_cancels_what_is_pending(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    (delivery_id,) = publish_now(engine, clock, key_id)
    service.delete_subscription(key_id, subscription_id, partner_ctx(key_id))
    assert dispatcher(service, clock).run_pass().done == 1
    assert receiver.received == []
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries  # the log stays
    assert (delivery.status, delivery.attempts) == ("cancelled", ())
    assert service.list_subscriptions(key_id) == []
    assert publish_now(engine, clock, key_id) == []
    with pytest.raises(SubscriptionNotFoundError):
        service.delete_subscription(key_id, subscription_id, partner_ctx(key_id))
    with pytest.raises(SubscriptionNotFoundError):
        service.send_test(key_id, subscription_id, partner_ctx(key_id))
    with pytest.raises(DeliveryNotFoundError, match="deleted"):
        service.replay(delivery_id, partner_ctx(key_id), partner_key_id=key_id)


def test_a_revoked_key_gets_nothing_more(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscribe(service, key_id, receiver)
    publish_now(engine, clock, key_id)
    revoke_partner_key(engine, service.keyring, clock, key_id)
    assert dispatcher(service, clock).run_pass().done == 1
    assert receiver.received == []
    assert publish_now(engine, clock, key_id) == []
    with pytest.raises(SubscriptionNotFoundError, match="revoked"):
        service.create_subscription(key_id, receiver.url, ["*"], partner_ctx(key_id))


def test_loopback_subscriptions_stop_once_loopback_is_turned_off(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    publish_now(engine, clock, key_id)
    strict = WebhookService(engine, service.keyring, service.transport, clock, False)
    assert dispatcher(strict, clock).run_pass().done == 1
    assert receiver.received == []
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries
    assert (delivery.status, delivery.attempts) == ("cancelled", ())


def test_subscription_rules_and_the_quota(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    ctx = partner_ctx(key_id)
    for n in range(SUBSCRIPTIONS_PER_PARTNER_MAX):
        service.create_subscription(key_id, f"{receiver.url}/{n}", ["*"], ctx)
    with pytest.raises(QuotaExceededError, match=str(SUBSCRIPTIONS_PER_PARTNER_MAX)):
        service.create_subscription(key_id, receiver.url, ["*"], ctx)
    first = service.list_subscriptions(key_id)[0]
    service.delete_subscription(key_id, first.id, ctx)
    service.create_subscription(key_id, receiver.url, ["*"], ctx)  # room again

    with pytest.raises(InvalidSubscriptionError, match="https://"):
        service.create_subscription(key_id, "http://merchant.example.com/", ["*"], ctx)
    strict = WebhookService(engine, service.keyring, service.transport, clock, False)
    with pytest.raises(InvalidSubscriptionError, match="loopback"):
        strict.create_subscription(key_id, receiver.url, ["*"], ctx)
    with pytest.raises(InvalidSubscriptionError, match="limit"):
        service.deliveries(key_id, first.id, limit=DELIVERIES_PAGE_MAX + 1)
    with pytest.raises(SubscriptionNotFoundError):
        service.create_subscription("pk_unknown", receiver.url, ["*"], ctx)
    assert len(service.list_subscriptions(key_id)) == SUBSCRIPTIONS_PER_PARTNER_MAX


def test_the_delivery_log_pages_newest_first(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    subscription_id = subscribe(service, key_id, receiver)
    made = [publish_now(engine, clock, key_id)[0] for _ in range(5)]
    first = service.deliveries(key_id, subscription_id, limit=2)
    assert [d.id for d in first.deliveries] == made[::-1][:2]
    second = service.deliveries(key_id, subscription_id, limit=2, before=first.next_before)
    third = service.deliveries(key_id, subscription_id, limit=2, before=second.next_before)
    assert [d.id for d in second.deliveries + third.deliveries] == made[::-1][2:]
    assert third.next_before is None


# --- secrets --------------------------------------------------------------------------------


def test_the_secret_is_in_no_log_line_no_delivery_log_and_no_stored_row(
    engine: Engine, clock: FakeClock, key_id: str, service: WebhookService, receiver: Receiver
) -> None:
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        subscription_id = subscribe(service, key_id, receiver)
        receiver.answer_with(500)
        publish_now(engine, clock, key_id)
        runner = dispatcher(service, clock)
        runner.run_pass()
        clock.advance(seconds=3600)
        runner.run_pass()
        page = service.deliveries(key_id, subscription_id)
    finally:
        configure_logging("INFO", "json", stream=io.StringIO())
    assert receiver.secret is not None
    secret = receiver.secret
    forms = [
        base64.b64encode(secret).decode(),
        secret.hex(),
        base64.urlsafe_b64encode(secret).decode(),
    ]
    logged = buffer.getvalue()
    assert "webhook_attempt" in logged
    for form in forms:
        assert form not in logged
        assert form not in repr(page)
    with engine.connect() as connection:
        for table in (
            webhooks_subscriptions,
            webhooks_events,
            webhooks_deliveries,
            webhooks_attempts,
            ops_outbox,
        ):
            for stored in connection.execute(select(table)):
                for value in stored:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    assert secret not in raw, table.name
                    for form in forms:
                        assert form.encode() not in raw, table.name
        events = connection.execute(text("SELECT details FROM audit_events")).scalars().all()
    for details in events:
        for form in forms:
            assert form not in details


def test_a_long_answer_is_cut_in_the_delivery_log(
    engine: Engine, clock: FakeClock, key_id: str, keyring: KeyRing, receiver: Receiver
) -> None:
    transport = RecordingTransport([TransportResponse(200, b"x" * 4000)])
    service = webhook_service(engine, keyring, clock, transport)
    subscription_id = subscribe(service, key_id, receiver)
    publish_now(engine, clock, key_id)
    dispatcher(service, clock).run_pass()
    (delivery,) = service.deliveries(key_id, subscription_id).deliveries
    assert delivery.attempts[0].response_excerpt == "x" * RESPONSE_EXCERPT_CHARS_MAX
    (sent,) = transport.requests
    assert sent.url == receiver.url
    assert sent.timeout_s == service.timeout_s


def test_key_rotation_re_encrypts_subscription_secrets(
    engine: Engine, clock: FakeClock, receiver: Receiver
) -> None:
    entries = ring_entries("k1", "k2")
    old_ring = entries.ring("k1")
    key_id = new_partner_key(engine, old_ring, clock)
    subscribe(webhook_service(engine, old_ring, clock), key_id, receiver)
    new_ring = entries.ring("k2", "k1")
    report = rotate(engine, new_ring, [SUBSCRIPTIONS_SPEC])
    assert report.rows_rewritten == {"webhooks_subscriptions": 1}
    only_new = entries.ring("k2")  # the old key is gone: the secret must still decrypt
    service = webhook_service(engine, only_new, clock)
    publish_now(engine, clock, key_id)
    assert dispatcher(service, clock).run_pass().done == 1
    assert receiver.received[0].verified


# --- the transport port ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["httpx", "fake"])
def test_both_transports_honour_the_port(kind: str, clock: FakeClock) -> None:
    receiver = Receiver(now_s=lambda: clock.now_s)
    with running_receiver(receiver):
        transport: WebhookTransport
        if kind == "httpx":
            transport = HttpxTransport()
            url = receiver.url
        else:
            transport = RecordingTransport(
                [TransportResponse(200, b'{"received": true}'), 500, TransportError("ConnectError")]
            )
            url = "https://merchant.example.com/hooks"
        assert isinstance(transport, WebhookTransport)
        receiver.answer_with(200, 500)
        ok = transport.post(url, {"X-Test": "1"}, b"{}", timeout_s=5.0)
        assert (ok.status_code, ok.body_start) == (200, b'{"received": true}')
        assert transport.post(url, {}, b"{}", timeout_s=5.0).status_code == 500
        refused = Receiver(now_s=lambda: clock.now_s)
        with running_receiver(refused):
            pass
        with pytest.raises(TransportError) as caught:
            transport.post(refused.url if kind == "httpx" else url, {}, b"{}", timeout_s=5.0)
        assert caught.value.error_class == "ConnectError"
        assert refused.url not in str(caught.value)


def test_a_slow_recipient_times_out_and_redirects_are_not_followed(clock: FakeClock) -> None:
    receiver = Receiver(now_s=lambda: clock.now_s, delay_s=1.5)
    transport = HttpxTransport()
    with running_receiver(receiver):
        with pytest.raises(TransportError) as caught:
            transport.post(receiver.url, {}, b"{}", timeout_s=0.3)
        assert caught.value.error_class in {TIMEOUT_ERROR_CLASS, "ReadTimeout"}
        receiver.delay_s = 0.0
        receiver.answer_with(302)
        assert transport.post(receiver.url, {}, b"{}", timeout_s=5.0).status_code == 302
        receiver.wait_for(2)
        assert [got.path for got in receiver.received] == ["/hooks", "/hooks"]

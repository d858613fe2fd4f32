"""The transactional outbox (``zhifu.ops.outbox``) on SQLite and PostgreSQL.

Nothing is handed out before its transaction commits; committed messages are
handled once; failures are retried with backoff on an injected clock and
dead-lettered after the last attempt (with the topic's hook in the same
transaction); parallel dispatchers claim each message once; a lease that runs
out lets another pass take over, and the late pass changes nothing; a stopping
pass hands its unstarted claims back; bad input is refused at every limit.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from random import Random
from typing import Any

import pytest
from identity_factories import FakeClock
from sqlalchemy import Connection, Engine, event, select, text
from sqlalchemy.exc import IntegrityError

from zhifu.ops.outbox import (
    BACKOFF_BASE_S,
    BATCH_SIZE_MAX,
    JITTER_FRACTION,
    KEY_CHARS_MAX,
    LEASE_S,
    PAYLOAD_BYTES_MAX,
    TOPIC_CHARS_MAX,
    DispatchCounts,
    HandlerFailedError,
    OutboxDispatcher,
    OutboxError,
    OutboxMessage,
    TopicHandler,
    counts_by_status,
    enqueue,
    payload_text,
)
from zhifu.store.tables import ops_outbox
from zhifu.store.uow import run_in_transaction

TOPIC = "tests.message"
US = 1_000_000
PARALLEL_MESSAGES = 60
PARALLEL_DISPATCHERS = 4


class Recorder:
    """A handler that records what it got and fails as told."""

    def __init__(self, failures: list[BaseException | None] | None = None) -> None:
        self.failures = list(failures or [])
        self.messages: list[OutboxMessage] = []
        self.dead: list[tuple[OutboxMessage, str]] = []
        self.during: Callable[[OutboxMessage], None] | None = None
        self._lock = threading.Lock()

    def handle(self, message: OutboxMessage) -> None:
        with self._lock:
            self.messages.append(message)
            failure = self.failures.pop(0) if self.failures else None
        if self.during is not None:
            self.during(message)
        if failure is not None:
            raise failure

    def on_dead(self, connection: Connection, message: OutboxMessage, reason: str) -> None:
        self.dead.append((message, reason))

    def topic(self) -> TopicHandler:
        return TopicHandler(self.handle, self.on_dead)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def put(engine: Engine, clock: FakeClock, key: str = "k", **payload: Any) -> uuid.UUID:
    message_id: uuid.UUID = run_in_transaction(
        engine, lambda c: enqueue(c, TOPIC, key, payload or {"n": 1}, available_ts=clock())
    )
    return message_id


def row(engine: Engine, message_id: uuid.UUID) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(ops_outbox).where(ops_outbox.c.id == message_id)).one()


def new_dispatcher(
    engine: Engine, recorder: Recorder, clock: FakeClock, **kwargs: Any
) -> OutboxDispatcher:
    return OutboxDispatcher(engine, {TOPIC: recorder.topic()}, clock=clock, rng=Random(3), **kwargs)


def test_an_uncommitted_message_is_not_handed_out_and_a_rolled_back_one_never(
    engine: Engine, clock: FakeClock
) -> None:
    recorder = Recorder()
    dispatcher = new_dispatcher(engine, recorder, clock)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.info["zhifu_begin"] = "BEGIN IMMEDIATE"
        with connection.begin() as db_transaction:
            enqueue(connection, TOPIC, "rolled-back", {"n": 1}, available_ts=clock())
            # Another connection, while the transaction is open: nothing to claim.
            assert dispatcher.run_pass() == DispatchCounts()
            db_transaction.rollback()
    assert dispatcher.run_pass() == DispatchCounts()
    assert recorder.messages == []
    assert counts_by_status(engine) == {}

    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.info["zhifu_begin"] = "BEGIN IMMEDIATE"
        with connection.begin():
            enqueue(connection, TOPIC, "committed", {"n": 2}, available_ts=clock())
            assert dispatcher.run_pass().claimed == 0
    counts = dispatcher.run_pass()
    assert (counts.claimed, counts.done) == (1, 1)
    assert [(m.key, m.payload, m.attempt) for m in recorder.messages] == [
        ("committed", {"n": 2}, 1)
    ]


def test_a_committed_message_is_handled_once_and_marked_done(
    engine: Engine, clock: FakeClock
) -> None:
    recorder = Recorder()
    dispatcher = new_dispatcher(engine, recorder, clock)
    message_id = put(engine, clock, "order-1", amount_minor=12345, note="元")
    assert dispatcher.run_pass().done == 1
    assert dispatcher.run_pass() == DispatchCounts()
    (message,) = recorder.messages
    assert message.id == message_id
    assert message.payload == {"amount_minor": 12345, "note": "元"}
    stored = row(engine, message_id)
    assert (stored.status, stored.attempts, stored.lease_owner, stored.done_ts) == (
        "done",
        1,
        None,
        clock(),
    )


def test_a_message_not_yet_available_waits(engine: Engine, clock: FakeClock) -> None:
    recorder = Recorder()
    dispatcher = new_dispatcher(engine, recorder, clock)
    run_in_transaction(
        engine, lambda c: enqueue(c, TOPIC, "later", {}, available_ts=clock() + 60 * US)
    )
    assert dispatcher.run_pass().claimed == 0
    clock.advance(seconds=60)
    assert dispatcher.run_pass().done == 1


def test_failures_are_retried_with_backoff(engine: Engine, clock: FakeClock) -> None:
    recorder = Recorder([HandlerFailedError("the recipient answered 500"), RuntimeError("bug")])
    dispatcher = new_dispatcher(engine, recorder, clock)
    message_id = put(engine, clock)

    assert dispatcher.run_pass().retried == 1
    first = row(engine, message_id)
    assert (first.status, first.attempts, first.lease_owner) == ("pending", 1, None)
    assert first.last_error == "HandlerFailedError: the recipient answered 500"
    delay_us = first.available_ts - clock()
    low, high = BACKOFF_BASE_S * (1 - JITTER_FRACTION), BACKOFF_BASE_S * (1 + JITTER_FRACTION)
    assert low * US <= delay_us <= high * US
    assert dispatcher.run_pass().claimed == 0, "retried before its time"

    clock.advance(us=delay_us - 1)
    assert dispatcher.run_pass().claimed == 0
    clock.advance(us=1)
    assert dispatcher.run_pass().retried == 1  # the handler crashed: retried all the same
    second = row(engine, message_id)
    assert second.last_error == "RuntimeError"
    assert 2 * low * US <= second.available_ts - clock() <= 2 * high * US

    clock.set(second.available_ts)
    assert dispatcher.run_pass().done == 1
    assert [m.attempt for m in recorder.messages] == [1, 2, 3]
    assert row(engine, message_id).status == "done"


def test_the_last_failed_attempt_dead_letters_with_the_hook_in_the_same_transaction(
    engine: Engine, clock: FakeClock
) -> None:
    recorder = Recorder([HandlerFailedError("down")] * 3)
    dispatcher = new_dispatcher(engine, recorder, clock, attempts_max=3)
    message_id = put(engine, clock)
    outcomes = []
    for _ in range(3):
        counts = dispatcher.run_pass()
        outcomes.append((counts.retried, counts.dead))
        clock.advance(seconds=10 * 3600)
    assert outcomes == [(1, 0), (1, 0), (0, 1)]
    dead = row(engine, message_id)
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 3, "HandlerFailedError: down")
    assert [(m.id, reason) for m, reason in recorder.dead] == [
        (message_id, "HandlerFailedError: down")
    ]
    assert dispatcher.run_pass() == DispatchCounts()  # dead stays dead
    assert counts_by_status(engine) == {"dead": 1}


def test_a_failing_dead_letter_hook_rolls_the_dead_letter_back(
    engine: Engine, clock: FakeClock
) -> None:
    def hook(connection: Connection, message: OutboxMessage, reason: str) -> None:
        raise RuntimeError("hook failed")

    def fail(message: OutboxMessage) -> None:
        raise HandlerFailedError("down")

    dispatcher = OutboxDispatcher(
        engine, {TOPIC: TopicHandler(fail, hook)}, clock=clock, attempts_max=1
    )
    message_id = put(engine, clock)
    with pytest.raises(RuntimeError, match="hook failed"):
        dispatcher.run_pass()
    stored = row(engine, message_id)
    assert stored.status == "pending", "dead-lettered without its hook"
    assert stored.lease_owner is not None  # still leased: taken again once the lease ends


def test_parallel_dispatchers_hand_out_each_message_exactly_once(
    engine: Engine, clock: FakeClock
) -> None:
    recorder = Recorder()
    recorder.during = lambda message: time.sleep(0.002)
    ids = {put(engine, clock, f"m{n}", n=n) for n in range(PARALLEL_MESSAGES)}
    start = threading.Barrier(PARALLEL_DISPATCHERS)
    errors: list[BaseException] = []

    def work() -> None:
        dispatcher = new_dispatcher(engine, recorder, clock, batch_size=3)
        start.wait()
        try:
            while dispatcher.run_round().claimed:
                pass
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(PARALLEL_DISPATCHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    handled = Counter(message.id for message in recorder.messages)
    assert set(handled) == ids
    assert set(handled.values()) == {1}, "a message was handed out twice"
    assert counts_by_status(engine) == {"done": PARALLEL_MESSAGES}


def test_a_lapsed_lease_lets_another_pass_take_over_and_the_late_pass_changes_nothing(
    engine: Engine, clock: FakeClock
) -> None:
    recorder = Recorder()
    message_id = put(engine, clock)
    other = new_dispatcher(engine, recorder, clock)
    takeovers: list[DispatchCounts] = []

    def stall(message: OutboxMessage) -> None:
        if message.attempt == 1:  # the first pass hangs past its lease...
            clock.advance(seconds=LEASE_S - 1)
            assert other.run_pass().claimed == 0, "claimed while the lease was live"
            clock.advance(seconds=1)
            takeovers.append(other.run_pass())  # ...and another pass takes the message

    recorder.during = stall
    first = new_dispatcher(engine, recorder, clock)
    counts = first.run_pass()
    assert (counts.claimed, counts.lost) == (1, 1)
    assert [(c.claimed, c.done) for c in takeovers] == [(1, 1)]
    stored = row(engine, message_id)
    assert (stored.status, stored.attempts) == ("done", 2)
    assert [m.attempt for m in recorder.messages] == [1, 2]


def test_a_stopping_pass_hands_unstarted_claims_back(engine: Engine, clock: FakeClock) -> None:
    recorder = Recorder()
    ids = [put(engine, clock, f"m{n}") for n in range(3)]
    dispatcher = new_dispatcher(engine, recorder, clock)
    counts = dispatcher.run_pass(should_stop=lambda: len(recorder.messages) >= 1)
    assert (counts.claimed, counts.done, counts.released) == (3, 1, 2)
    for message_id in ids[1:]:
        stored = row(engine, message_id)
        assert (stored.status, stored.attempts, stored.lease_owner) == ("pending", 0, None)
    assert dispatcher.run_pass().done == 2
    assert [m.attempt for m in recorder.messages] == [1, 1, 1]


def test_a_dispatcher_claims_only_its_own_topics(engine: Engine, clock: FakeClock) -> None:
    run_in_transaction(engine, lambda c: enqueue(c, "other.topic", "x", {}, available_ts=clock()))
    recorder = Recorder()
    assert new_dispatcher(engine, recorder, clock).run_pass() == DispatchCounts()
    assert counts_by_status(engine) == {"pending": 1}


def test_done_messages_are_pruned_after_the_retention(engine: Engine, clock: FakeClock) -> None:
    recorder = Recorder([HandlerFailedError("down")])
    dispatcher = new_dispatcher(engine, recorder, clock, attempts_max=1)
    dead_id = put(engine, clock, "dead")
    dispatcher.run_pass()
    done_id = put(engine, clock, "done")
    dispatcher.run_pass()
    assert dispatcher.prune_done(retention_s=3600) == 0
    clock.advance(seconds=3600 + 1)
    pending_id = put(engine, clock, "pending")
    assert dispatcher.prune_done(retention_s=3600) == 1
    with engine.connect() as connection:
        left = set(connection.execute(select(ops_outbox.c.id)).scalars())
    assert left == {dead_id, pending_id}
    assert done_id not in left


def test_enqueue_refuses_bad_input_at_every_limit(engine: Engine, clock: FakeClock) -> None:
    def attempt(topic: Any = TOPIC, key: Any = "k", payload: Any = None, ts: Any = 0) -> None:
        run_in_transaction(
            engine,
            lambda c: enqueue(
                c, topic, key, {"n": 1} if payload is None else payload, available_ts=ts
            ),
        )

    attempt(topic="a" * TOPIC_CHARS_MAX)
    attempt(key="k" * KEY_CHARS_MAX)
    overhead = len(payload_text({"p": ""}).encode())
    attempt(payload={"p": "x" * (PAYLOAD_BYTES_MAX - overhead)})
    for bad in (
        {"topic": "a" * (TOPIC_CHARS_MAX + 1)},
        {"topic": "Webhooks"},
        {"topic": "a..b"},
        {"topic": ""},
        {"key": ""},
        {"key": "k" * (KEY_CHARS_MAX + 1)},
        {"key": 7},
        {"payload": {"p": "x" * (PAYLOAD_BYTES_MAX - overhead + 1)}},
        {"payload": [1, 2]},
        {"payload": {"f": float("nan")}},
        {"payload": {"o": object()}},
        {"ts": -1},
        {"ts": 1.5},
        {"ts": True},
    ):
        with pytest.raises(OutboxError):
            attempt(**bad)
    assert counts_by_status(engine) == {"pending": 3}
    with engine.connect() as connection:
        payloads = [
            json.loads(p) for p in connection.execute(select(ops_outbox.c.payload)).scalars()
        ]
    assert {"n": 1} in payloads


def test_dispatcher_limits(engine: Engine, clock: FakeClock) -> None:
    handlers = {TOPIC: Recorder().topic()}
    OutboxDispatcher(engine, handlers, batch_size=BATCH_SIZE_MAX)
    for kwargs in (
        {"batch_size": 0},
        {"batch_size": BATCH_SIZE_MAX + 1},
        {"attempts_max": 0},
        {"attempts_max": 13},
        {"lease_s": 0},
    ):
        with pytest.raises(ValueError):
            OutboxDispatcher(engine, handlers, **kwargs)
    with pytest.raises(ValueError, match="at least one topic"):
        OutboxDispatcher(engine, {})


def test_the_database_refuses_an_incomplete_lease(engine: Engine, clock: FakeClock) -> None:
    message_id = put(engine, clock)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            ops_outbox.update().where(ops_outbox.c.id == message_id).values(lease_until_ts=clock())
        )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM ops_outbox")).scalar_one() == 1


def test_the_claim_skips_locked_rows_on_postgresql_and_takes_the_write_lock_on_sqlite(
    engine: Engine, clock: FakeClock
) -> None:
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    put(engine, clock)
    dispatcher = new_dispatcher(engine, Recorder(), clock)
    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert dispatcher.run_pass().done == 1
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    claims = [s for s in statements if s.startswith("SELECT") and "ORDER BY" in s and "LIMIT" in s]
    assert claims, statements
    if engine.dialect.name == "postgresql":
        assert all(s.endswith("FOR UPDATE SKIP LOCKED") for s in claims), claims
    else:
        assert not any("FOR UPDATE" in s for s in statements)
        assert "BEGIN IMMEDIATE" in statements, statements

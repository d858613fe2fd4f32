"""The transactional outbox: messages that leave only after their transaction commits.

Design note
-----------

Why. A use case that must tell the outside world something (a webhook to a
partner; later alerts and notifications) cannot send it from inside its
database transaction: the transaction may still roll back, and then the
message announced something that never happened. Nor may it send after the
commit: the process may die in between, and the message is lost. So the use
case writes the message as a row with :func:`enqueue`, on its own connection,
in its own transaction. The row commits or rolls back with the change it
announces, and a dispatcher sends it afterwards. Nothing is sent before its
transaction commits; everything committed is sent at least once.

Claiming. :class:`OutboxDispatcher` passes claim at most ``batch_size`` due
rows (``status = 'pending'``, ``available_ts`` passed, no live lease) of the
topics it has handlers for, oldest first, in one short write transaction, and
mark each claimed row with a lease: ``lease_owner`` (a fresh id per pass) and
``lease_until_ts`` (``LEASE_S`` ahead). They count the attempt at the claim,
so a message that crashes its process every time still reaches
``ATTEMPTS_MAX`` and is dead-lettered instead of looping forever. On
PostgreSQL the claim selects with ``FOR UPDATE SKIP LOCKED``, so concurrent
dispatchers (threads, worker processes, hosts) never wait on each other and
never claim the same row; on SQLite the write transaction (``BEGIN
IMMEDIATE``) makes the claim a single writer's ``UPDATE`` of the lease columns.
Handlers then run outside any database transaction, so a slow recipient holds
no lock and no connection. A pass must finish its batch within the lease:
keep ``batch_size`` times a handler's time limit well below ``LEASE_S``
(webhooks: 8 attempts of at most 10 s against 300 s).

Finishing. A handler that returns marks its row ``done``; one that raises
reschedules it ``retry_delay_s`` later (exponential backoff from
``BACKOFF_BASE_S``, capped at ``BACKOFF_CAP_S``, with ±``JITTER_FRACTION``
jitter so that messages failing together do not retry together), until the
attempt that reaches ``ATTEMPTS_MAX`` fails: then the row is ``dead`` (kept,
with its last error, for operators) and the topic's ``on_dead`` hook runs in
the same transaction. Every mark is a compare-and-set on the lease owner: a
pass whose lease ran out while its handler was still busy (another pass has
claimed the row again) changes nothing. Handlers must therefore be
idempotent, and recipients see a message twice only in that case or after a
crash between a handler's success and its mark.

:class:`HandlerFailedError` is an expected failure (a recipient answered 500):
logged as a warning. Any other exception is a bug or an outage: logged with
its stack trace. Either way the message is retried. A pass asked to stop
(``should_stop``) hands its unstarted claims back, attempt uncounted.

Limits (named constants below): ``BATCH_SIZE_MAX`` rows per claim,
``ATTEMPTS_MAX`` attempts (12, about 24.5 hours from the first to the last
with the default backoff), ``LEASE_S`` per claimed batch, ``PAYLOAD_BYTES_MAX``
of JSON per message, ``TOPIC_CHARS_MAX`` and ``KEY_CHARS_MAX``,
``ROUND_PASSES_MAX`` passes per round and ``ERROR_CHARS_MAX`` of stored error.
``done`` rows are deleted ``DONE_RETENTION_S`` after they finished
(:meth:`OutboxDispatcher.prune_done`); ``dead`` rows stay.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row, and_, delete, func, insert, or_, select, update

from zhifu.ids import uuid7
from zhifu.invariant import invariant
from zhifu.ops.logging import get_logger
from zhifu.ops.metrics import OUTBOX_MESSAGES
from zhifu.store.tables import ops_outbox
from zhifu.store.uow import run_in_transaction

US: Final = 1_000_000
BATCH_SIZE_DEFAULT: Final = 8
BATCH_SIZE_MAX: Final = 64
ATTEMPTS_MAX: Final = 12
LEASE_S: Final = 300
BACKOFF_BASE_S: Final = 60.0
BACKOFF_CAP_S: Final = 8 * 3600.0
JITTER_FRACTION: Final = 0.2
PAYLOAD_BYTES_MAX: Final = 16 * 1024
TOPIC_CHARS_MAX: Final = 64
KEY_CHARS_MAX: Final = 128
ERROR_CHARS_MAX: Final = 256
ROUND_PASSES_MAX: Final = 32
DONE_RETENTION_S: Final = 7 * 24 * 3600
PRUNE_CHUNK_ROWS: Final = 1000
# A topic is dotted lower-case words: "webhooks.delivery".
_TOPIC_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")

STATUS_PENDING: Final = "pending"
STATUS_DONE: Final = "done"
STATUS_DEAD: Final = "dead"

_log = get_logger("zhifu.ops.outbox")

Clock = Callable[[], int]
StopCheck = Callable[[], bool]


class OutboxError(ValueError):
    """A message given to :func:`enqueue` breaks a rule: its topic, key, payload or
    time is malformed or past a limit. The message names the rule; nothing is written."""


class HandlerFailedError(Exception):
    """Raised by a handler for an expected failure (the recipient refused, timed out
    or could not be reached): the message is retried, and logged without a stack trace.
    The text is stored as the message's last error, so it must hold no secret."""


def now_us() -> int:
    """Microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def payload_text(payload: Mapping[str, Any]) -> str:
    """The stored form of a payload: canonical JSON. Raises OutboxError past the limits."""
    if not isinstance(payload, Mapping):
        raise OutboxError("payload must be a JSON object (a dict)")
    try:
        text = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"payload must be JSON-serialisable: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > PAYLOAD_BYTES_MAX:
        raise OutboxError(f"payload is {size} bytes of JSON; at most {PAYLOAD_BYTES_MAX} allowed")
    return text


def enqueue(
    connection: Connection,
    topic: str,
    key: str,
    payload: Mapping[str, Any],
    *,
    available_ts: int,
) -> uuid.UUID:
    """Write a message in the caller's database transaction; it is sent once that commits.

    ``key`` names what the message is about (a webhook delivery's id); handlers
    and operators find the message by it. ``available_ts`` (microseconds) is the
    earliest time a dispatcher may send it.

    Raises:
        OutboxError: a malformed topic, an empty or too long key, a payload that
            is not a JSON object or is over ``PAYLOAD_BYTES_MAX``, or a negative time.
    """
    if not isinstance(topic, str) or not (
        len(topic) <= TOPIC_CHARS_MAX and _TOPIC_PATTERN.fullmatch(topic)
    ):
        raise OutboxError(
            f"topic must be dotted lower-case words of at most {TOPIC_CHARS_MAX} characters,"
            " e.g. 'webhooks.delivery'"
        )
    if not isinstance(key, str) or not 1 <= len(key) <= KEY_CHARS_MAX:
        raise OutboxError(f"key must be 1 to {KEY_CHARS_MAX} characters")
    if isinstance(available_ts, bool) or not isinstance(available_ts, int) or available_ts < 0:
        raise OutboxError("available_ts must be a non-negative integer of microseconds")
    message_id = uuid7()
    connection.execute(
        insert(ops_outbox).values(
            id=message_id,
            topic=topic,
            key=key,
            payload=payload_text(payload),
            status=STATUS_PENDING,
            attempts=0,
            available_ts=available_ts,
            created_ts=now_us(),
        )
    )
    return message_id


def retry_delay_s(failed_attempts: int, rng: random.Random) -> float:
    """How long to wait after the ``failed_attempts``-th failure (1-based) before the next.

    ``BACKOFF_BASE_S * 2**(failed_attempts - 1)``, at most ``BACKOFF_CAP_S``,
    times a random factor in ``1 ± JITTER_FRACTION``.
    """
    invariant(failed_attempts >= 1, "retry_delay_s counts failures from 1")
    nominal = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(failed_attempts - 1, 32))
    return nominal * rng.uniform(1 - JITTER_FRACTION, 1 + JITTER_FRACTION)


def nominal_schedule_s(attempts_max: int = ATTEMPTS_MAX) -> list[float]:
    """The waits between attempts without jitter: ``attempts_max - 1`` of them."""
    return [
        min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(n - 1, 32)) for n in range(1, attempts_max)
    ]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One claimed message, as its handler gets it. ``attempt`` counts from 1."""

    id: uuid.UUID
    topic: str
    key: str
    payload: dict[str, Any]
    attempt: int
    created_ts: int


@dataclass(frozen=True, slots=True)
class TopicHandler:
    """What a dispatcher does with a topic's messages.

    ``handle`` sends one message; returning means done, raising means retry.
    ``on_dead`` (optional) runs in the transaction that dead-letters a message,
    with the last error, so the topic's own records can say so atomically.
    """

    handle: Callable[[OutboxMessage], None]
    on_dead: Callable[[Connection, OutboxMessage, str], None] | None = None


@dataclass(slots=True)
class DispatchCounts:
    """What dispatcher passes did: rows claimed, and how each claimed row ended."""

    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0  # handed back unstarted (the dispatcher was stopping)
    lost: int = 0  # the lease ran out meanwhile; another pass owns the row now

    def __add__(self, other: DispatchCounts) -> DispatchCounts:
        return DispatchCounts(
            self.claimed + other.claimed,
            self.done + other.done,
            self.retried + other.retried,
            self.dead + other.dead,
            self.released + other.released,
            self.lost + other.lost,
        )

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _message(row: Row[Any]) -> OutboxMessage:
    payload = json.loads(row.payload)
    invariant(isinstance(payload, dict), "an outbox payload is a JSON object")
    return OutboxMessage(
        id=row.id,
        topic=row.topic,
        key=row.key,
        payload=payload,
        attempt=int(row.attempts),
        created_ts=int(row.created_ts),
    )


class OutboxDispatcher:
    """Claims due messages of its topics and hands each to the topic's handler.

    ``clock`` (microseconds) and ``rng`` are injectable for tests. Safe to run
    in several threads and processes at once (see the module's design note).
    """

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, TopicHandler],
        *,
        clock: Clock = now_us,
        rng: random.Random | None = None,
        batch_size: int = BATCH_SIZE_DEFAULT,
        attempts_max: int = ATTEMPTS_MAX,
        lease_s: int = LEASE_S,
    ) -> None:
        if not handlers:
            raise ValueError("a dispatcher needs at least one topic handler")
        if not 1 <= batch_size <= BATCH_SIZE_MAX:
            raise ValueError(f"batch_size must be 1 to {BATCH_SIZE_MAX}, got {batch_size}")
        if not 1 <= attempts_max <= ATTEMPTS_MAX:
            raise ValueError(f"attempts_max must be 1 to {ATTEMPTS_MAX}, got {attempts_max}")
        if lease_s < 1:
            raise ValueError("lease_s must be at least 1")
        self.engine = engine
        self.handlers = dict(handlers)
        self.clock = clock
        self.rng = rng or random.Random()  # jitter, not a secret
        self.batch_size = batch_size
        self.attempts_max = attempts_max
        self.lease_us = lease_s * US
        self._topics = sorted(self.handlers)

    # --- one pass -------------------------------------------------------------------------

    def run_pass(self, should_stop: StopCheck | None = None) -> DispatchCounts:
        """Claim one batch of due messages and handle each; what happened to them."""
        now = self.clock()
        # A read first: an idle dispatcher must not take SQLite's write lock every round.
        if not run_in_transaction(self.engine, partial(self._any_due, now=now), write=False):
            return DispatchCounts()
        owner = uuid7()
        rows = run_in_transaction(self.engine, partial(self._claim, now=now, owner=owner))
        counts = DispatchCounts(claimed=len(rows))
        for index, row in enumerate(rows):
            if should_stop is not None and should_stop():
                counts.released += self._release(rows[index:], owner)
                break
            outcome = self._handle(row, owner)
            setattr(counts, outcome, getattr(counts, outcome) + 1)
            OUTBOX_MESSAGES.labels(row.topic, outcome).inc()
        return counts

    def run_round(
        self, should_stop: StopCheck | None = None, *, passes_max: int = ROUND_PASSES_MAX
    ) -> DispatchCounts:
        """Passes until one claims less than a full batch, at most ``passes_max``."""
        total = DispatchCounts()
        for _ in range(passes_max):
            counts = self.run_pass(should_stop)
            total += counts
            if counts.claimed < self.batch_size or (should_stop is not None and should_stop()):
                break
        return total

    def _due(self, now: int) -> Any:
        c = ops_outbox.c
        return and_(
            c.status == STATUS_PENDING,
            c.available_ts <= now,
            c.topic.in_(self._topics),
            or_(c.lease_until_ts.is_(None), c.lease_until_ts <= now),
        )

    def _any_due(self, connection: Connection, *, now: int) -> bool:
        query = select(ops_outbox.c.id).where(self._due(now)).limit(1)
        return connection.execute(query).first() is not None

    def _claim(self, connection: Connection, *, now: int, owner: uuid.UUID) -> list[Row[Any]]:
        c = ops_outbox.c
        due = (
            select(c.id)
            .where(self._due(now))
            .order_by(c.available_ts, c.id)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer anyway
        )
        ids = list(connection.execute(due).scalars())
        if not ids:
            return []
        connection.execute(
            update(ops_outbox)
            .where(c.id.in_(ids))
            .values(lease_owner=owner, lease_until_ts=now + self.lease_us, attempts=c.attempts + 1)
        )
        query = select(ops_outbox).where(c.id.in_(ids)).order_by(c.available_ts, c.id)
        return list(connection.execute(query))

    def _handle(self, row: Row[Any], owner: uuid.UUID) -> str:
        """Run the handler of one claimed row and mark the row; the outcome's counter name."""
        message = _message(row)
        try:
            self.handlers[row.topic].handle(message)
        except HandlerFailedError as exc:
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS_MAX]
            _log.warning(
                "outbox_attempt_failed",
                topic=row.topic,
                key=row.key,
                attempt=message.attempt,
                error=error,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is retried; the trace is logged
            error = type(exc).__name__[:ERROR_CHARS_MAX]
            _log.exception(
                "outbox_handler_crashed", topic=row.topic, key=row.key, attempt=message.attempt
            )
        else:
            done = {"status": STATUS_DONE, "done_ts": self.clock()}
            return "done" if self._mark(row, owner, done) else "lost"
        if message.attempt >= self.attempts_max:
            return self._dead(row, owner, message, error)
        delay_us = round(retry_delay_s(message.attempt, self.rng) * US)
        retry = {"available_ts": self.clock() + delay_us, "last_error": error}
        return "retried" if self._mark(row, owner, retry) else "lost"

    def _mark(
        self,
        row: Row[Any],
        owner: uuid.UUID,
        values: dict[str, Any],
        on_marked: Callable[[Connection], None] | None = None,
    ) -> bool:
        """Change a claimed row and end its lease, if the lease is still ``owner``'s."""
        c = ops_outbox.c

        def work(connection: Connection) -> bool:
            statement = (
                update(ops_outbox)
                .where(c.id == row.id, c.lease_owner == owner)
                .values(**values, lease_owner=None, lease_until_ts=None)
            )
            if connection.execute(statement).rowcount != 1:
                return False
            if on_marked is not None:
                on_marked(connection)
            return True

        marked: bool = run_in_transaction(self.engine, work)
        if not marked:
            _log.warning("outbox_lease_lost", topic=row.topic, key=row.key)
        return marked

    def _dead(self, row: Row[Any], owner: uuid.UUID, message: OutboxMessage, error: str) -> str:
        on_dead = self.handlers[row.topic].on_dead
        values = {"status": STATUS_DEAD, "done_ts": self.clock(), "last_error": error}
        hook = None if on_dead is None else partial(_run_on_dead, on_dead, message, error)
        if not self._mark(row, owner, values, hook):
            return "lost"
        _log.warning("outbox_dead_lettered", topic=row.topic, key=row.key, attempts=message.attempt)
        return "dead"

    def _release(self, rows: Sequence[Row[Any]], owner: uuid.UUID) -> int:
        """Hand unstarted claims back: no lease, and the claim's attempt uncounted."""
        c = ops_outbox.c

        def work(connection: Connection) -> int:
            statement = (
                update(ops_outbox)
                .where(c.id.in_([row.id for row in rows]), c.lease_owner == owner)
                .values(lease_owner=None, lease_until_ts=None, attempts=c.attempts - 1)
            )
            return int(connection.execute(statement).rowcount)

        released: int = run_in_transaction(self.engine, work)
        return released

    # --- upkeep -------------------------------------------------------------------------

    def prune_done(self, retention_s: int = DONE_RETENTION_S) -> int:
        """Delete ``done`` rows finished more than ``retention_s`` ago, a chunk at a time."""
        cutoff = self.clock() - retention_s * US
        c = ops_outbox.c
        total = 0
        while True:
            old = (
                select(c.id)
                .where(c.status == STATUS_DONE, c.available_ts < cutoff, c.done_ts < cutoff)
                .limit(PRUNE_CHUNK_ROWS)
            )

            def work(connection: Connection, old: Any = old) -> int:
                ids = list(connection.execute(old).scalars())
                if ids:
                    connection.execute(delete(ops_outbox).where(c.id.in_(ids)))
                return len(ids)

            deleted: int = run_in_transaction(self.engine, work)
            total += deleted
            if deleted < PRUNE_CHUNK_ROWS:
                return total


def _run_on_dead(
    on_dead: Callable[[Connection, OutboxMessage, str], None],
    message: OutboxMessage,
    error: str,
    connection: Connection,
) -> None:
    on_dead(connection, message, error)


def counts_by_status(engine: Engine) -> dict[str, int]:
    """Rows per status (for operators and tests)."""

    def work(connection: Connection) -> dict[str, int]:
        query = select(ops_outbox.c.status, func.count()).group_by(ops_outbox.c.status)
        return {str(status): int(n) for status, n in connection.execute(query)}

    result: dict[str, int] = run_in_transaction(engine, work, write=False)
    return result

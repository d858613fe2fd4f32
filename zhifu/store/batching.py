"""Group commit for small units of work: many callers' work in one database
transaction, each in its own savepoint.

With SQLite every commit waits for the write-ahead log to reach the disk
(``synchronous=FULL``); that wait, not the work, bounds how many small units
of work (one payment each) a second can commit. The batcher runs the units of
work waiting at the same moment in one transaction: each inside a SAVEPOINT,
so a unit that raises is rolled back alone and its caller gets its error,
while the others commit together.

Rules:

1. A caller's work is the same function it would give
   :func:`~zhifu.store.uow.run_in_transaction`: database writes only, safe to
   run again from the start. A transient conflict on commit runs the whole
   group again.
2. A caller learns its result only after the group has committed: nothing is
   reported that the database might still lose.
3. A group holds at most :data:`GROUP_UNITS_MAX` units; at most
   :data:`QUEUE_UNITS_MAX` may wait (more is :class:`BatcherOverloadedError`).

PostgreSQL commits concurrent transactions with one log flush by itself, so
the platform uses the batcher for SQLite only.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from zhifu.ops import metrics
from zhifu.store.uow import is_transient, run_in_transaction

T = TypeVar("T")

GROUP_UNITS_MAX: Final = 128
QUEUE_UNITS_MAX: Final = 4096
WAIT_S_MAX: Final = 0.05


class BatcherOverloadedError(RuntimeError):
    """Too many units of work are waiting; the caller should retry shortly."""


class BatcherStoppedError(RuntimeError):
    """The batcher is shut down."""


@dataclass(slots=True)
class _Unit:
    work: Callable[[Connection], Any]
    future: Future[Any]


class _RetryGroupError(Exception):
    """A unit met a transient conflict: the whole group runs again."""

    def __init__(self, cause: DBAPIError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class TransactionBatcher:
    """Runs units of work in shared transactions on one committing thread."""

    def __init__(self, engine: Engine, *, name: str, wait_s: float = 0.0) -> None:
        if not 0 <= wait_s <= WAIT_S_MAX:
            raise ValueError(f"wait_s must be between 0 and {WAIT_S_MAX}")
        self.engine = engine
        self.name = name
        self.wait_s = wait_s
        self._queue: queue.Queue[_Unit | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=f"{name}-batcher", daemon=True)
        self._thread.start()

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in the next group and return its result once committed.

        Raises:
            Whatever ``work`` raised (its savepoint was rolled back).
            BatcherOverloadedError, BatcherStoppedError.
            RetriesExhaustedError and database errors of the group's commit.
        """
        with self._lock:
            if self._stopped:
                raise BatcherStoppedError("the database writer is shutting down")
            if self._waiting >= QUEUE_UNITS_MAX:
                raise BatcherOverloadedError(
                    f"{self._waiting} requests are waiting for the database; retry shortly"
                )
            self._waiting += 1
        future: Future[T] = Future()
        self._queue.put(_Unit(work, future))
        return future.result()

    def close(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._queue.put(None)
        self._thread.join()

    # --- the committing thread ----------------------------------------------------------

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, stop = self._gather(first)
            with self._lock:
                self._waiting -= len(group)
            self._commit(group)
            if stop:
                return

    def _gather(self, first: _Unit) -> tuple[list[_Unit], bool]:
        group = [first]
        deadline = time.monotonic() + self.wait_s
        while len(group) < GROUP_UNITS_MAX:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    item = self._queue.get(timeout=remaining)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return group, True
            group.append(item)
        return group, False

    def _commit(self, group: list[_Unit]) -> None:
        outcomes: list[tuple[bool, Any]] = []

        def whole(connection: Connection) -> None:
            outcomes.clear()
            for unit in group:
                try:
                    with connection.begin_nested():
                        outcomes.append((True, unit.work(connection)))
                except DBAPIError as exc:
                    if is_transient(exc, retry_unique_violation=True):
                        raise _RetryGroupError(exc) from exc
                    outcomes.append((False, exc))
                except Exception as exc:  # noqa: BLE001 - the caller's own error, reported to it
                    outcomes.append((False, exc))

        started = time.perf_counter()
        try:
            self._run_group(whole)
        except BaseException as exc:  # noqa: BLE001 - every caller learns the group failed
            for unit in group:
                unit.future.set_exception(exc)
            return
        metrics.DB_GROUP_UNITS.labels(self.name).observe(len(group))
        metrics.DB_GROUP_DURATION.labels(self.name).observe(time.perf_counter() - started)
        for unit, (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                unit.future.set_result(value)
            else:
                unit.future.set_exception(value)

    def _run_group(self, whole: Callable[[Connection], None]) -> None:
        for attempt in range(3):
            try:
                run_in_transaction(self.engine, whole)
                return
            except _RetryGroupError as retry:
                if attempt == 2:
                    raise retry.cause from None

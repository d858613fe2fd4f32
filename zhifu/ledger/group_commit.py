"""Group commit: gather concurrent callers' transfers into one database transaction.

A durable commit costs an fsync, whatever the transaction holds, so one commit
for many callers is how the ledger scales. Callers hand their events to
:meth:`GroupCommitter.submit` and wait on a future; one thread takes the first
waiting submission, gathers more for at most ``wait_s`` (or until
``BATCH_EVENTS_MAX`` events), applies them as one batch and answers each
caller with its own outcomes. A linked chain never spans two callers: each
submission's end is a chain break.

If a gathered batch fails as a whole (a database error rather than result
codes), each submission is retried on its own so that one caller's problem is
not everyone's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from zhifu.ledger.errors import LedgerError
from zhifu.ledger.model import BATCH_EVENTS_MAX, TransferOutcome, TransferRequest
from zhifu.ledger.service import LedgerService, _check_batch_size
from zhifu.ops import metrics

QUEUE_EVENTS_MAX = 8 * BATCH_EVENTS_MAX
WAIT_S_MAX = 0.1


class LedgerOverloadedError(LedgerError):
    """More events are waiting for the ledger than ``QUEUE_EVENTS_MAX``; retry later."""


class LedgerStoppedError(LedgerError):
    """The group committer is shut down."""


@dataclass(slots=True)
class _Submission:
    requests: Sequence[TransferRequest]
    future: Future[list[TransferOutcome]]


class GroupCommitter:
    def __init__(self, service: LedgerService, *, wait_s: float = 0.002):
        if not 0 <= wait_s <= WAIT_S_MAX:
            raise ValueError(f"wait_s must be between 0 and {WAIT_S_MAX}")
        self.service = service
        self.wait_s = wait_s
        self._queue: queue.Queue[_Submission | None] = queue.Queue()
        self._waiting_events = 0
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ledger-group-commit", daemon=True)
        self._thread.start()

    def submit(self, requests: Sequence[TransferRequest]) -> Future[list[TransferOutcome]]:
        """Queue a caller's events; the future yields one outcome per event.

        Raises:
            BatchEmptyError, BatchTooLargeError: the submission's size is out of bounds.
            LedgerOverloadedError: too many events are already waiting.
            LedgerStoppedError: the committer has been closed.
        """
        _check_batch_size(len(requests))
        with self._lock:
            if self._stopped:
                raise LedgerStoppedError("the ledger is shutting down")
            if self._waiting_events + len(requests) > QUEUE_EVENTS_MAX:
                raise LedgerOverloadedError(
                    f"the ledger has {self._waiting_events} events waiting; retry shortly"
                )
            self._waiting_events += len(requests)
        future: Future[list[TransferOutcome]] = Future()
        self._queue.put(_Submission(list(requests), future))
        return future

    def create_transfers(self, requests: Sequence[TransferRequest]) -> list[TransferOutcome]:
        """Submit and wait. Raises what :meth:`submit` raises, and database errors."""
        return self.submit(requests).result()

    def close(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._queue.put(None)
        self._thread.join()

    # -- the committing thread --

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            events = len(first.requests)
            deadline = time.monotonic() + self.wait_s
            stop = False
            while events < BATCH_EVENTS_MAX:
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if events + len(item.requests) > BATCH_EVENTS_MAX:
                    self._commit(group)
                    group, events = [], 0
                group.append(item)
                events += len(item.requests)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Submission]) -> None:
        if not group:
            return
        with self._lock:
            self._waiting_events -= sum(len(s.requests) for s in group)
        self._apply(group)

    def _apply(self, group: list[_Submission]) -> None:
        requests: list[TransferRequest] = []
        breaks: set[int] = set()
        for submission in group:
            requests.extend(submission.requests)
            breaks.add(len(requests) - 1)
        started = time.perf_counter()
        try:
            plan = self.service.execute_batch(requests, chain_breaks=frozenset(breaks))
        except Exception as exc:  # noqa: BLE001 - isolate the callers, then report
            metrics.LEDGER_BATCH_FAILURES.inc()
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for submission in group:
                self._apply([submission])
            return
        metrics.LEDGER_BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.LEDGER_BATCH_EVENTS.observe(len(requests))
        for result, count in Counter(o.result.value for o in plan.outcomes).items():
            metrics.LEDGER_TRANSFERS.labels(result).inc(count)
        start = 0
        for submission in group:
            end = start + len(submission.requests)
            submission.future.set_result(
                [
                    TransferOutcome(o.position - start, o.id, o.result, o.ts)
                    for o in plan.outcomes[start:end]
                ]
            )
            start = end

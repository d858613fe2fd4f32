"""Scheduled and recurring transfers, and the scheduler that pays their runs.

Design note.

A schedule pays one payee of the customer's book from one of the customer's
accounts: once at a future minute, or daily, weekly or monthly until an end
date or a count of runs (:class:`zhifu.payments.model.Recurrence`, Asia/Shanghai
times). Creating one needs an ``Idempotency-Key`` (a retry answers the first
schedule) and, for a large amount, the second factor a payment of that amount
would need: it is proved once, when the schedule is made, and each run
carries the proof (``step_up``), since no customer is there to ask at 3 a.m.

Runs. Run ``n`` of schedule ``S`` is one payment through
:meth:`PaymentsService.execute` with initiator ``schedule:S``, source
``schedule:S:n``, channel ``online``, limits applied, and the Idempotency-Key
``run-n`` in the scope ``schedule:S``. Everything is checked again at run
time: the source account must still be the customer's and usable, the
customer active, the payee still in the book with the same account.

Exactly once. A scheduler pass claims due schedules by writing a lease on
them in one short transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two
schedulers never claim the same one; SQLite: the single writer), then pays
each outside that transaction. The payment's own unit of work also records
the run and moves the schedule on, with a compare-and-set on the run number
and the status (``after``), so the payment, its run row and the next run
commit together or not at all. Whatever happens:

- a scheduler that dies after claiming leaves a lease that runs out
  (``lease_s``); the next pass pays the run, once;
- a scheduler whose lease ran out while it was still paying meets the other
  on the run's Idempotency-Key: one payment commits, the other unit of work
  finds it and answers it (``replayed``), and the run is recorded once;
- a stale scheduler coming to a run that was recorded meanwhile (failed,
  skipped, or the schedule cancelled) fails the compare-and-set, and its
  payment rolls back (:class:`ScheduleRunSettledError`).

Failures. A refusal (insufficient funds, a frozen or closed account, a limit,
a deleted payee) is recorded with its code and message, the schedule goes on
to its next run, and :data:`~zhifu.payments.model.SCHEDULE_FAILURES_MAX`
failures in a row pause it until the customer resumes it (the runs due
meanwhile are not made). A run found more than
:data:`~zhifu.payments.model.SCHEDULE_RUN_LATE_S_MAX` late is skipped. Any
other exception (the database is down) is logged and leaves the lease to run
out, so the run is tried again later.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts import store as accounts_store
from zhifu.accounts.model import AccountStatus, Channel, Direction, check_account_usable
from zhifu.ids import uuid7
from zhifu.invariant import invariant
from zhifu.money import Money
from zhifu.ops.audit import AuditContext, record
from zhifu.ops.logging import get_logger
from zhifu.payments import store
from zhifu.payments.errors import (
    PayeeNotFoundError,
    PaymentError,
    ScheduleNotFoundError,
    ScheduleRunSettledError,
    ScheduleStateError,
    StepUpNeededError,
    TooManyError,
)
from zhifu.payments.model import (
    SCHEDULE_RUNS_SHOWN_MAX,
    SCHEDULES_LIVE_PER_CUSTOMER_MAX,
    SCHEDULES_PER_CUSTOMER_MAX,
    Frequency,
    PaymentKind,
    Recurrence,
    RunOutcome,
    ScheduleStatus,
    after_run,
    check_memo,
    check_payment_amount,
    check_recurrence,
    check_replay,
    is_too_late,
    needs_step_up,
    request_fingerprint,
    shanghai_time,
)
from zhifu.payments.payees import PayeesService
from zhifu.payments.service import Idempotency, OrderView, PaymentDraft
from zhifu.store.uow import run_in_transaction

Clock = Callable[[], int]
StopCheck = Callable[[], bool]
Progress = Callable[[int], None]

US: Final = 1_000_000
# A claimed schedule is the claimer's this long: far more than one payment takes.
SCHEDULE_LEASE_S: Final = 120
SCHEDULE_BATCH_SIZE_DEFAULT: Final = 16
SCHEDULE_BATCH_SIZE_MAX: Final = 64
# Passes of one round; a round ends earlier when a pass claims less than a batch.
SCHEDULE_ROUND_PASSES_MAX: Final = 64
FAILURE_DETAIL_CHARS_MAX: Final = 256
FAILURE_CODE_CHARS_MAX: Final = 48
PAYEE_LABEL_CHARS_MAX: Final = 64

_log = get_logger("zhifu.payments.schedules")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """What a customer asks to schedule, as the API parsed it."""

    from_account_id: uuid.UUID
    payee_id: uuid.UUID
    amount: Money
    frequency: Frequency
    first_run: datetime  # naive: Asia/Shanghai time
    memo: str = ""
    end_date: date | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class RunView:
    seq: int
    due_ts: int
    outcome: RunOutcome
    order_id: uuid.UUID | None
    failure_code: str | None
    failure_detail: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule as its customer sees it; ``runs`` newest first (only from :meth:`get`)."""

    id: uuid.UUID
    customer_id: uuid.UUID
    from_account_id: uuid.UUID
    payee_id: uuid.UUID | None
    payee_label: str
    amount: Money
    memo: str
    frequency: Frequency
    first_run: datetime
    end_date: date | None
    count: int | None
    status: ScheduleStatus
    next_seq: int
    next_run: datetime | None
    failures: int
    created_ts: int
    updated_ts: int
    runs: tuple[RunView, ...] = field(default=())

    def recurrence(self) -> Recurrence:
        """When the schedule's runs fall."""
        return Recurrence(self.frequency, self.first_run, self.end_date, self.count)


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    schedule: ScheduleView
    replayed: bool


@dataclass(slots=True)
class RunCounts:
    """What scheduler passes did with the schedules they claimed."""

    claimed: int = 0
    paid: int = 0
    failed: int = 0
    skipped: int = 0
    lost: int = 0  # recorded by another scheduler (or cancelled) meanwhile
    errors: int = 0  # not a refusal: logged, tried again once the lease runs out
    released: int = 0  # handed back unstarted (stopping)

    def __add__(self, other: RunCounts) -> RunCounts:
        return RunCounts(*(getattr(self, name) + getattr(other, name) for name in self.__slots__))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class SchedulesService:
    """Scheduled and recurring transfers to payees, and the scheduler that pays them."""

    def __init__(
        self,
        engine: Engine,
        payees: PayeesService,
        clock: Clock = now_us,
        *,
        lease_s: int = SCHEDULE_LEASE_S,
        batch_size: int = SCHEDULE_BATCH_SIZE_DEFAULT,
    ) -> None:
        if not 1 <= batch_size <= SCHEDULE_BATCH_SIZE_MAX:
            raise ValueError(f"batch_size must be 1 to {SCHEDULE_BATCH_SIZE_MAX}, got {batch_size}")
        if lease_s < 1:
            raise ValueError("lease_s must be at least 1")
        self.engine = engine
        self.payees = payees
        self.payments = payees.payments
        self.clock = clock
        self.lease_us = lease_s * US
        self.batch_size = batch_size

    # --- the customer's use cases ------------------------------------------------------

    def create(
        self,
        customer_id: uuid.UUID,
        request: ScheduleRequest,
        idempotency: Idempotency,
        ctx: AuditContext,
        *,
        step_up: str | None = None,
    ) -> ScheduleResult:
        """Schedule transfers to a payee. A retry with the same Idempotency-Key and
        request answers the first schedule (``replayed``).

        Raises:
            InvalidPaymentError: a bad amount or memo.
            InvalidScheduleError: the timing breaks a rule.
            StepUpNeededError: a large amount without a proved second factor.
            AccountNotFoundError: the source is not the customer's.
            AccountFrozenError, AccountStateError: the source cannot pay.
            UnsupportedCurrencyError: the amount is not in the source's currency.
            PayeeNotFoundError: no such payee of the customer's.
            TooManyError: too many schedules.
            IdempotencyConflictError: the key was used for another request.
            CustomerNotFoundError: the customer is not active.
        """
        amount = check_payment_amount(request.amount)
        memo = check_memo(request.memo)
        if needs_step_up(amount) and step_up is None:
            raise StepUpNeededError(
                f"scheduling payments of {amount.format()} or more needs a second factor first"
            )

        def work(connection: Connection) -> ScheduleResult:
            existing = store.schedule_by_key(connection, customer_id, idempotency.key)
            if existing is not None:  # a retry answers the first schedule, whenever it comes
                check_replay(bytes(existing.fingerprint), idempotency.fingerprint, idempotency.key)
                return ScheduleResult(_view(existing), replayed=True)
            recurrence = check_recurrence(
                request.frequency,
                request.first_run,
                self.clock(),
                end_date=request.end_date,
                count=request.count,
            )
            customer = accounts_store.lock_customer(connection, customer_id)
            if customer is None or customer.status != "active":
                raise accounts_errors.CustomerNotFoundError("no such customer")
            _check_source(connection, customer_id, request.from_account_id, amount)
            payee = store.payee_of(connection, customer_id, request.payee_id)
            if payee is None:
                raise PayeeNotFoundError("no such payee")
            _check_quota(*store.count_schedules(connection, customer_id))
            now = self.clock()
            first_ts = recurrence.run_ts(1)
            invariant(first_ts is not None, "a checked recurrence has a first run")
            schedule_id = uuid7()
            store.insert_schedule(
                connection,
                {
                    "id": schedule_id,
                    "customer_id": customer_id,
                    "from_account_id": request.from_account_id,
                    "payee_id": payee.id,
                    "payee_label": _payee_label(payee),
                    "amount_minor": amount.amount_minor,
                    "currency": amount.currency,
                    "memo": memo,
                    "frequency": recurrence.frequency.value,
                    "first_ts": first_ts,
                    "end_date": None if recurrence.end_date is None else str(recurrence.end_date),
                    "count_max": recurrence.count,
                    "status": ScheduleStatus.ACTIVE.value,
                    "next_seq": 1,
                    "next_ts": first_ts,
                    "failures": 0,
                    "step_up": step_up,
                    "idempotency_key": idempotency.key,
                    "fingerprint": idempotency.fingerprint,
                    "lease_owner": None,
                    "lease_until_ts": None,
                    "created_ts": now,
                    "updated_ts": now,
                },
            )
            record(
                connection,
                ctx.event(
                    "payments.schedule.create",
                    f"schedule:{schedule_id}",
                    payee=str(payee.id),
                    amount=amount.to_decimal_string(),
                    currency=amount.currency,
                    frequency=recurrence.frequency.value,
                ),
            )
            row = store.schedule_by_id(connection, schedule_id)
            invariant(row is not None, "the schedule just inserted is there")
            return ScheduleResult(_view(row), replayed=False)  # type: ignore[arg-type]

        return run_in_transaction(self.engine, work, retry_unique_violation=True)

    def list_schedules(self, customer_id: uuid.UUID) -> list[ScheduleView]:
        """The customer's schedules, newest first, without their runs."""
        rows = run_in_transaction(
            self.engine, lambda c: store.schedules_of(c, customer_id), write=False
        )
        return [_view(row) for row in rows]

    def get(self, customer_id: uuid.UUID, schedule_id: uuid.UUID) -> ScheduleView:
        """A schedule with its latest runs. Raises ScheduleNotFoundError."""

        def work(connection: Connection) -> ScheduleView:
            row = _owned(connection, customer_id, schedule_id)
            runs = store.runs_of(connection, schedule_id, SCHEDULE_RUNS_SHOWN_MAX)
            return _view(row, runs)

        return run_in_transaction(self.engine, work, write=False)

    def cancel(
        self, customer_id: uuid.UUID, schedule_id: uuid.UUID, ctx: AuditContext
    ) -> ScheduleView:
        """Stop an active or paused schedule for good. A run being paid this
        very moment either commits first or is rolled back.

        Raises ScheduleNotFoundError, ScheduleStateError (finished or cancelled already).
        """

        def work(connection: Connection) -> None:
            row = _owned(connection, customer_id, schedule_id, lock=True)
            status = ScheduleStatus(row.status)
            if status not in (ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED):
                raise ScheduleStateError(
                    f"the schedule is {status.value} already: only an active or paused one"
                    " can be cancelled"
                )
            store.update_schedule(
                connection,
                schedule_id,
                {
                    "status": ScheduleStatus.CANCELLED.value,
                    "next_ts": None,
                    "lease_owner": None,
                    "lease_until_ts": None,
                    "updated_ts": self.clock(),
                },
            )
            record(connection, ctx.event("payments.schedule.cancel", f"schedule:{schedule_id}"))

        run_in_transaction(self.engine, work)
        return self.get(customer_id, schedule_id)

    def resume(
        self, customer_id: uuid.UUID, schedule_id: uuid.UUID, ctx: AuditContext
    ) -> ScheduleView:
        """Resume a paused schedule from its first run that is not yet due; the
        runs due while it was paused are not made. With none left it is finished.

        Raises ScheduleNotFoundError, ScheduleStateError (not paused).
        """

        def work(connection: Connection) -> None:
            row = _owned(connection, customer_id, schedule_id, lock=True)
            if row.status != ScheduleStatus.PAUSED.value:
                raise ScheduleStateError(
                    f"the schedule is {row.status}: only a paused one can be resumed"
                )
            now = self.clock()
            following = _recurrence(row).first_after(int(row.next_seq) - 1, now)
            values: dict[str, Any] = {"failures": 0, "updated_ts": now}
            if following is None:
                values |= {"status": ScheduleStatus.FINISHED.value, "next_ts": None}
            else:
                seq, ts = following
                values |= {"status": ScheduleStatus.ACTIVE.value, "next_seq": seq, "next_ts": ts}
            store.update_schedule(connection, schedule_id, values)
            record(
                connection,
                ctx.event("payments.schedule.resume", f"schedule:{schedule_id}"),
            )

        run_in_transaction(self.engine, work)
        return self.get(customer_id, schedule_id)

    # --- the scheduler -----------------------------------------------------------------

    def count_due(self) -> int:
        """Schedules due now (for a progress bar; may change before they are claimed)."""
        now = self.clock()
        return run_in_transaction(self.engine, partial(store.count_due, now_ts=now), write=False)

    def run_due(
        self,
        should_stop: StopCheck | None = None,
        *,
        progress: Progress | None = None,
        passes_max: int = SCHEDULE_ROUND_PASSES_MAX,
    ) -> RunCounts:
        """Passes over the due schedules until one claims less than a full batch
        (at most ``passes_max``); what they did. Safe in many threads and processes."""
        total = RunCounts()
        for _ in range(passes_max):
            counts = self.run_pass(should_stop, progress=progress)
            total += counts
            stopping = should_stop is not None and should_stop()
            if counts.claimed < self.batch_size or stopping:
                break
        return total

    def run_pass(
        self, should_stop: StopCheck | None = None, *, progress: Progress | None = None
    ) -> RunCounts:
        """Claim one batch of due schedules and pay (or record) the run of each."""
        now = self.clock()
        # A read first: an idle scheduler must not take SQLite's write lock every round.
        if not run_in_transaction(self.engine, partial(store.any_due, now_ts=now), write=False):
            return RunCounts()
        owner = uuid7()
        rows = run_in_transaction(
            self.engine,
            partial(
                store.claim_due,
                now_ts=now,
                owner=owner,
                lease_until_ts=now + self.lease_us,
                limit=self.batch_size,
            ),
        )
        counts = RunCounts(claimed=len(rows))
        for index, row in enumerate(rows):
            if should_stop is not None and should_stop():
                counts.released += self._release(rows[index:], owner)
                break
            outcome = self.run_claimed(row)
            setattr(counts, outcome, getattr(counts, outcome) + 1)
            if progress is not None:
                progress(1)
        return counts

    def run_claimed(self, row: Row[Any]) -> str:
        """Pay or record the next run of a claimed schedule ``row``; the outcome's
        counter name (``paid``, ``failed``, ``skipped``, ``lost``, ``errors``)."""
        seq = int(row.next_seq)
        if is_too_late(int(row.next_ts), self.clock()):
            detail = "the scheduler came to this run more than a day after it was due"
            return self._settle(row, seq, RunOutcome.SKIPPED, None, ("missed", detail))
        try:
            return self._pay(row, seq)
        except ScheduleRunSettledError:
            return "lost"
        except (PaymentError, accounts_errors.AccountsError) as error:
            detail = str(error)[:FAILURE_DETAIL_CHARS_MAX]
            failure = (error.code[:FAILURE_CODE_CHARS_MAX], detail)
            return self._settle(row, seq, RunOutcome.FAILED, None, failure)
        except Exception:  # noqa: BLE001 - an outage, not a refusal: the lease runs out, retried
            _log.exception("schedule_run_crashed", schedule=str(row.id), seq=seq)
            return "errors"

    def _pay(self, row: Row[Any], seq: int) -> str:
        amount = Money(int(row.amount_minor), row.currency)
        if row.payee_id is None:
            raise PayeeNotFoundError("the payee was deleted")
        found = self.payees.secrets(row.customer_id, row.payee_id)
        payee_resolve = self.payees.resolver(row.customer_id, found, row.from_account_id)

        def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
            if accounts_store.customer_status(connection, row.customer_id) != "active":
                raise accounts_errors.CustomerNotFoundError(
                    "the customer's access is disabled: scheduled payments do not run"
                )
            return payee_resolve(connection)

        draft = PaymentDraft(
            kind=PaymentKind.TRANSFER,
            channel=Channel.ONLINE,
            initiator=f"schedule:{row.id}",
            amount=amount,
            memo=row.memo,
            source_ref=f"schedule:{row.id}:{seq}",
            step_up=row.step_up,
        )
        fingerprint = request_fingerprint(
            "RUN",
            f"/schedules/{row.id}/runs/{seq}",
            {
                "from": str(row.from_account_id),
                "payee": str(row.payee_id),
                "amount": amount.to_decimal_string(),
                "currency": amount.currency,
                "memo": row.memo,
            },
        )
        idempotency = Idempotency(f"schedule:{row.id}", f"run-{seq}", fingerprint)

        def after(connection: Connection, order: OrderView) -> None:
            self._record(connection, row, seq, RunOutcome.PAID, order.id, None)

        result = self.payments.execute(draft, resolve, idempotency, after=after)
        if result.replayed:  # paid by another attempt: record the run unless it did
            return self._settle(row, seq, RunOutcome.PAID, result.order.id, None)
        return "paid"

    def _settle(
        self,
        row: Row[Any],
        seq: int,
        outcome: RunOutcome,
        order_id: uuid.UUID | None,
        failure: tuple[str, str] | None,
    ) -> str:
        """Record run ``seq`` in a unit of work of its own; ``lost`` when it was recorded."""
        try:
            run_in_transaction(
                self.engine,
                lambda c: self._record(c, row, seq, outcome, order_id, failure),
            )
        except ScheduleRunSettledError:
            return "lost"
        return {RunOutcome.PAID: "paid", RunOutcome.FAILED: "failed"}.get(outcome, "skipped")

    def _record(
        self,
        connection: Connection,
        row: Row[Any],
        seq: int,
        outcome: RunOutcome,
        order_id: uuid.UUID | None,
        failure: tuple[str, str] | None,
    ) -> None:
        """Record run ``seq`` and move the schedule on, if the run is still the
        schedule's next one and the schedule is active. Raises
        ScheduleRunSettledError otherwise (the caller's unit of work rolls back)."""
        now = self.clock()
        following = after_run(_recurrence(row), seq, outcome, int(row.failures))
        changed = store.update_schedule(
            connection,
            row.id,
            {
                "status": following.status.value,
                "next_seq": following.seq,
                "next_ts": following.ts,
                "failures": following.failures,
                "lease_owner": None,
                "lease_until_ts": None,
                "updated_ts": now,
            },
            expected_seq=seq,
            expected_status=ScheduleStatus.ACTIVE.value,
        )
        if changed != 1:
            raise ScheduleRunSettledError(f"run {seq} of schedule {row.id} is recorded already")
        store.insert_run(
            connection,
            {
                "schedule_id": row.id,
                "seq": seq,
                "due_ts": int(row.next_ts),
                "outcome": outcome.value,
                "order_id": order_id,
                "failure_code": None if failure is None else failure[0],
                "failure_detail": None if failure is None else failure[1],
                "ts": now,
            },
        )
        if following.status is ScheduleStatus.PAUSED:
            _log.warning("schedule_paused", schedule=str(row.id), failures=following.failures)

    def _release(self, rows: Sequence[Row[Any]], owner: uuid.UUID) -> int:
        """Hand unstarted claims back."""

        def work(connection: Connection) -> int:
            return sum(store.release_lease(connection, row.id, owner) for row in rows)

        released: int = run_in_transaction(self.engine, work)
        return released


# --- helpers ------------------------------------------------------------------------------


def _owned(
    connection: Connection, customer_id: uuid.UUID, schedule_id: uuid.UUID, *, lock: bool = False
) -> Row[Any]:
    row = store.schedule_by_id(connection, schedule_id, lock=lock)
    if row is None or row.customer_id != customer_id:
        raise ScheduleNotFoundError("no such schedule")
    return row


def _check_source(
    connection: Connection, customer_id: uuid.UUID, account_id: uuid.UUID, amount: Money
) -> None:
    account = accounts_store.account_by_id(connection, account_id)
    if account is None or account.customer_id != customer_id:
        raise accounts_errors.AccountNotFoundError("no such account")
    if account.currency != amount.currency:
        raise accounts_errors.UnsupportedCurrencyError(
            f"the account holds {account.currency}, the amount is in {amount.currency}"
        )
    check_account_usable(AccountStatus(account.status), Direction.OUTGOING)


def _check_quota(live: int, total: int) -> None:
    if live >= SCHEDULES_LIVE_PER_CUSTOMER_MAX:
        raise TooManyError(
            f"a customer has at most {SCHEDULES_LIVE_PER_CUSTOMER_MAX} active or paused"
            " schedules; cancel one first"
        )
    if total >= SCHEDULES_PER_CUSTOMER_MAX:
        raise TooManyError(
            f"a customer can make at most {SCHEDULES_PER_CUSTOMER_MAX} schedules, finished and"
            " cancelled ones included"
        )


def _payee_label(payee: Row[Any]) -> str:
    return f"{payee.nickname} (****{payee.account_last4})"[:PAYEE_LABEL_CHARS_MAX]


def _recurrence(row: Row[Any]) -> Recurrence:
    return Recurrence(
        Frequency(row.frequency),
        shanghai_time(int(row.first_ts)),
        None if row.end_date is None else date.fromisoformat(row.end_date),
        None if row.count_max is None else int(row.count_max),
    )


def _view(row: Row[Any], runs: Sequence[Row[Any]] = ()) -> ScheduleView:
    recurrence = _recurrence(row)
    return ScheduleView(
        id=row.id,
        customer_id=row.customer_id,
        from_account_id=row.from_account_id,
        payee_id=row.payee_id,
        payee_label=row.payee_label,
        amount=Money(int(row.amount_minor), row.currency),
        memo=row.memo,
        frequency=recurrence.frequency,
        first_run=recurrence.first,
        end_date=recurrence.end_date,
        count=recurrence.count,
        status=ScheduleStatus(row.status),
        next_seq=int(row.next_seq),
        next_run=None if row.next_ts is None else shanghai_time(int(row.next_ts)),
        failures=int(row.failures),
        created_ts=int(row.created_ts),
        updated_ts=int(row.updated_ts),
        runs=tuple(
            RunView(
                seq=int(run.seq),
                due_ts=int(run.due_ts),
                outcome=RunOutcome(run.outcome),
                order_id=run.order_id,
                failure_code=run.failure_code,
                failure_detail=run.failure_detail,
                ts=int(run.ts),
            )
            for run in runs
        ),
    )

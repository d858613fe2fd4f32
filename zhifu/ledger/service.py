"""Ledger use cases. Each public method is one unit of work (one database transaction).

Functions that move money document what they raise; per-transfer failures are
result codes in the returned outcomes, not exceptions.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from zhifu.ids import uuid7
from zhifu.invariant import invariant
from zhifu.ledger import journal, queries, verify
from zhifu.ledger import store as ledger_store
from zhifu.ledger.errors import (
    AccountNotClosableError,
    AccountNotFoundError,
    BatchEmptyError,
    BatchTooLargeError,
)
from zhifu.ledger.model import (
    BATCH_EVENTS_MAX,
    Account,
    AccountRequest,
    AccountResult,
    BatchPlan,
    Transfer,
    TransferFlags,
    TransferOutcome,
    TransferRequest,
    compare_existing_account,
    expiry_transfer_id,
    plan_batch,
    validate_account,
)
from zhifu.ops.audit import AuditEvent
from zhifu.ops.audit import record as audit_record
from zhifu.security.signing import Ed25519Signer, key_id_for
from zhifu.store.uow import run_in_transaction

EXPIRY_SWEEP_MAX = BATCH_EVENTS_MAX
LEDGER_CODE_EXPIRY = 65535


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    index: int
    id: uuid.UUID
    result: AccountResult


class LedgerService:
    """The ledger's use cases over one database engine."""

    def __init__(
        self,
        engine: Engine,
        signer: Ed25519Signer,
        *,
        trusted_keys: Sequence[bytes] = (),
        clock: Callable[[], int] = now_us,
    ):
        self.engine = engine
        self.signer = signer
        self.clock = clock
        keys = {signer.key_id: signer.public_key_bytes}
        for key in trusted_keys:
            keys[key_id_for(key)] = key
        self.trusted_keys = keys
        # Embedded mode keeps committed account state between batches.
        self._account_cache = (
            ledger_store.AccountCache() if engine.dialect.name == "sqlite" else None
        )

    # -- accounts --

    def create_accounts(
        self,
        requests: Sequence[AccountRequest],
        *,
        audit: Callable[[Sequence[AccountOutcome]], AuditEvent] | None = None,
    ) -> list[AccountOutcome]:
        """Create accounts; existing ids answer ``exists`` or ``exists_with_different_*``.

        ``audit`` builds the audit event from the outcomes; it is recorded in
        the same database transaction as the accounts.

        Raises:
            BatchEmptyError, BatchTooLargeError: the batch size is out of bounds.
        """
        _check_batch_size(len(requests))

        def work(connection: Connection) -> list[AccountOutcome]:
            sql = ledger_store.LedgerSql(connection)
            existing = ledger_store.load_accounts(sql, (r.id for r in requests))
            outcomes: list[AccountOutcome] = []
            new: list[AccountRequest] = []
            seen: dict[uuid.UUID, AccountRequest] = {}
            for index, request in enumerate(requests):
                result = validate_account(request)
                if result is AccountResult.OK:
                    found = existing.get(request.id)
                    if found is None and request.id in seen:
                        found = _account_from_request(seen[request.id])
                    if found is not None:
                        result = compare_existing_account(request, found)
                    else:
                        seen[request.id] = request
                        new.append(request)
                outcomes.append(AccountOutcome(index, request.id, result))
            if new:
                ledger_store.insert_accounts(sql, new, self.clock())
            if audit is not None:
                audit_record(connection, audit(outcomes))  # last: it locks the trail's head
            return outcomes

        return run_in_transaction(self.engine, work, retry_unique_violation=True)

    def lookup_accounts(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Account]:
        def work(connection: Connection) -> dict[uuid.UUID, Account]:
            return ledger_store.load_accounts(ledger_store.LedgerSql(connection), ids)

        return run_in_transaction(self.engine, work, write=False)

    def get_account(self, account_id: uuid.UUID) -> Account:
        """Raises AccountNotFoundError."""
        account = self.lookup_accounts([account_id]).get(account_id)
        if account is None:
            raise AccountNotFoundError(f"no ledger account {account_id}")
        return account

    def close_account(self, account_id: uuid.UUID, *, audit: AuditEvent | None = None) -> Account:
        """Close an account with a zero balance and no pending holds.

        ``audit`` is recorded in the same database transaction as the closing.

        Raises:
            AccountNotFoundError: no such account.
            AccountNotClosableError: it is closed already, holds a balance, or has holds.
        """

        def work(connection: Connection) -> Account:
            sql = ledger_store.LedgerSql(connection)
            account = ledger_store.load_accounts(sql, [account_id], lock=True).get(account_id)
            if account is None:
                raise AccountNotFoundError(f"no ledger account {account_id}")
            if account.closed_ts is not None:
                raise AccountNotClosableError(f"account {account_id} is already closed")
            if account.debits_pending or account.credits_pending:
                raise AccountNotClosableError(
                    f"account {account_id} has pending holds; post or void them first"
                )
            if account.debits_posted != account.credits_posted:
                raise AccountNotClosableError(
                    f"account {account_id} has a non-zero balance; move it out first"
                )
            account.closed_ts = self.clock()
            ledger_store.close_account(sql, account_id, account.closed_ts)
            if not sql.postgres:
                ledger_store.bump_generation(sql)  # cached copies of it are now stale
            if audit is not None:
                audit_record(connection, audit)  # last: it locks the trail's head
            return account

        return run_in_transaction(self.engine, work)

    # -- transfers --

    def create_transfers(
        self,
        requests: Sequence[TransferRequest],
        *,
        chain_breaks: frozenset[int] = frozenset(),
        system: bool = False,
    ) -> list[TransferOutcome]:
        """Apply a batch of transfer events in one database transaction.

        Every event gets a result code; events that fail change nothing, and a
        failing event fails its whole linked chain.

        Raises:
            BatchEmptyError, BatchTooLargeError: the batch size is out of bounds.
            RetriesExhaustedError: the database kept reporting conflicts.
        """
        _check_batch_size(len(requests))
        return self.execute_batch(requests, chain_breaks=chain_breaks, system=system).outcomes

    def execute_batch(
        self,
        requests: Sequence[TransferRequest],
        *,
        chain_breaks: frozenset[int] = frozenset(),
        system: bool = False,
    ) -> BatchPlan:
        """Like :meth:`create_transfers`, returning the whole committed plan."""
        cache = self._account_cache
        attempts = 0
        assume_new_ids = cache is not None

        def work(connection: Connection) -> tuple[BatchPlan, int]:
            nonlocal attempts
            attempts += 1
            if cache is not None and attempts > 1:
                cache.invalidate()  # a failed attempt's plan may have changed cached accounts
            sql = ledger_store.LedgerSql(connection)
            state = ledger_store.load_batch_state(
                sql, requests, cache, assume_new_ids=assume_new_ids
            )
            plan = plan_batch(
                requests,
                state,
                batch_id=uuid7(),
                now_ts=self.clock(),
                chain_breaks=chain_breaks,
                system=system,
            )
            invariant(len(plan.outcomes) == len(requests), "one outcome per event")
            ledger_store.write_plan(sql, plan)
            generation = ledger_store.bump_generation(sql) if cache is not None else 0
            return plan, generation

        if cache is None:
            return run_in_transaction(self.engine, work, retry_unique_violation=True)[0]
        with cache.lock:
            for _ in range(3):  # again, uncached or with look-ups, if an assumption failed
                try:
                    plan, generation = run_in_transaction(
                        self.engine, work, retry_unique_violation=True
                    )
                except ledger_store.StaleAccountStateError:
                    cache.invalidate()
                    continue
                except ledger_store.ExistingIdsError:
                    cache.invalidate()
                    assume_new_ids = False
                    continue
                except BaseException:
                    cache.invalidate()  # the plan may have changed cached accounts
                    raise
                cache.committed(generation)
                return plan
        raise ledger_store.StaleAccountStateError("account rows keep changing behind the cache")

    def apply_in(
        self,
        connection: Connection,
        requests: Sequence[TransferRequest],
        *,
        chain_breaks: frozenset[int] = frozenset(),
    ) -> BatchPlan:
        """Apply a batch inside the caller's database transaction.

        For use cases that must commit money together with their own rows (a
        payment order, its spending totals): the caller owns the unit of work,
        and nothing is written unless it commits. The embedded cache is not
        used, and the ledger generation is bumped so that cached copies of the
        touched accounts are dropped before their next use.

        Raises:
            BatchEmptyError, BatchTooLargeError: the batch size is out of bounds.
        """
        _check_batch_size(len(requests))
        sql = ledger_store.LedgerSql(connection)
        state = ledger_store.load_batch_state(sql, requests)
        plan = plan_batch(
            requests,
            state,
            batch_id=uuid7(),
            now_ts=self.clock(),
            chain_breaks=chain_breaks,
            system=False,
        )
        invariant(len(plan.outcomes) == len(requests), "one outcome per event")
        ledger_store.write_plan(sql, plan)
        if not sql.postgres:
            ledger_store.bump_generation(sql)
        return plan

    def lookup_transfers(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Transfer]:
        def work(connection: Connection) -> dict[uuid.UUID, Transfer]:
            return ledger_store.load_transfers(ledger_store.LedgerSql(connection), ids)

        return run_in_transaction(self.engine, work, write=False)

    def expire_pending(self, *, limit: int = EXPIRY_SWEEP_MAX) -> int:
        """Void every pending transfer whose timeout has passed; returns how many.

        Each expiry is a ``void_pending`` transfer flagged ``expiry`` with an id
        derived from the hold's, so concurrent sweepers cannot expire one twice.
        """
        now = self.clock()

        def find(connection: Connection) -> list[Transfer]:
            return ledger_store.expired_pending(ledger_store.LedgerSql(connection), now, limit)

        expired = run_in_transaction(self.engine, find, write=False)
        if not expired:
            return 0
        voids = [
            TransferRequest(
                id=expiry_transfer_id(p.id),
                debit_account_id=p.debit_account_id,
                credit_account_id=p.credit_account_id,
                amount=p.amount,
                currency=p.currency,
                code=LEDGER_CODE_EXPIRY,
                flags=TransferFlags.VOID_PENDING | TransferFlags.EXPIRY,
                pending_id=p.id,
            )
            for p in expired
        ]
        outcomes = self.create_transfers(voids, system=True)
        return sum(1 for o in outcomes if o.ok)

    # -- journal and queries: thin wrappers, one unit of work each --

    def seal(self, *, limit: int = journal.SEAL_BATCHES_MAX) -> int:
        """Chain committed batches into signed blocks; returns how many were sealed."""
        return run_in_transaction(
            self.engine,
            lambda c: journal.seal(c, self.signer, self.clock(), limit),
            retry_unique_violation=True,
        )

    def block_head(self) -> journal.Block | None:
        return run_in_transaction(self.engine, journal.head, write=False)

    def inclusion_proof(self, transfer_id: uuid.UUID) -> journal.InclusionProof:
        """Raises TransferNotFoundError, JournalNotSealedError."""
        return run_in_transaction(
            self.engine, lambda c: journal.inclusion_proof(c, transfer_id), write=False
        )

    def account_transfers(self, query: queries.TransferQuery) -> queries.TransferPage:
        """Raises AccountNotFoundError, InvalidCursorError."""
        return run_in_transaction(
            self.engine, lambda c: queries.account_transfers(c, query), write=False
        )

    def statement(self, query: queries.TransferQuery) -> queries.Statement:
        """Raises AccountNotFoundError, InvalidCursorError."""
        return run_in_transaction(self.engine, lambda c: queries.statement(c, query), write=False)

    def verify(self, progress: verify.Progress | None = None) -> verify.VerifyReport:
        """Recompute every invariant; read-only (see :mod:`zhifu.ledger.verify`)."""
        return run_in_transaction(
            self.engine,
            lambda c: verify.verify_ledger(c, self.trusted_keys, progress),
            write=False,
        )

    def balance_as_of(self, account_id: uuid.UUID, ts: int) -> queries.Balance:
        """Raises AccountNotFoundError."""
        return run_in_transaction(
            self.engine, lambda c: queries.balance_as_of(c, account_id, ts), write=False
        )


def _check_batch_size(count: int) -> None:
    if count == 0:
        raise BatchEmptyError("a batch needs at least one event")
    if count > BATCH_EVENTS_MAX:
        raise BatchTooLargeError(f"a batch holds at most {BATCH_EVENTS_MAX} events, got {count}")


def _account_from_request(request: AccountRequest) -> Account:
    return Account(
        id=request.id,
        currency=request.currency,
        code=request.code,
        flags=request.flags,
        owner_ref=request.owner_ref,
    )

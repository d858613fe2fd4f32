"""The ledger's HTTP API (``/v1/ledger``): an internal API for the bank's own services.

Every route needs the service token (``Authorization: Bearer <token>``).
Accounts and transfers are created in batches (up to 8,190 events a call);
the client-chosen id is the idempotency key, so a retried call answers
``exists`` instead of moving money twice. Transfer calls from concurrent
clients are gathered into one database transaction (group commit).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.concurrency import run_in_threadpool

from zhifu import money
from zhifu.api.deps import RuntimeDep
from zhifu.api.problems import ProblemError, problem_responses, register_error_mapping
from zhifu.api.request_context import request_id_of
from zhifu.api.service_auth import require_service_token
from zhifu.ledger import errors as ledger_errors
from zhifu.ledger.group_commit import LedgerOverloadedError, LedgerStoppedError
from zhifu.ledger.journal import Block, InclusionProof
from zhifu.ledger.model import (
    AMOUNT_MAX,
    BATCH_EVENTS_MAX,
    CODE_MAX,
    EXTERNAL_REF_LENGTH_MAX,
    OWNER_REF_LENGTH_MAX,
    TIMEOUT_S_MAX,
    Account,
    AccountFlags,
    AccountRequest,
    Transfer,
    TransferFlags,
    TransferRequest,
)
from zhifu.ledger.queries import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, TransferQuery
from zhifu.ledger.service import AccountOutcome
from zhifu.ops.audit import AuditEvent

register_error_mapping(
    ledger_errors.AccountNotFoundError, 404, "account-not-found", "Account not found"
)
register_error_mapping(
    ledger_errors.TransferNotFoundError, 404, "transfer-not-found", "Transfer not found"
)
register_error_mapping(
    ledger_errors.AccountNotClosableError, 409, "account-not-closable", "Account cannot be closed"
)
register_error_mapping(ledger_errors.BatchTooLargeError, 422, "batch-too-large", "Batch too large")
register_error_mapping(ledger_errors.BatchEmptyError, 422, "batch-empty", "Batch is empty")
register_error_mapping(ledger_errors.InvalidCursorError, 400, "invalid-cursor", "Invalid cursor")
register_error_mapping(
    ledger_errors.JournalNotSealedError, 409, "journal-not-sealed", "Journal not sealed yet"
)
register_error_mapping(LedgerStoppedError, 503, "ledger-unavailable", "Ledger unavailable")
register_error_mapping(money.MoneyError, 422, "invalid-amount", "Invalid amount")

SERVICE_ACTOR = "service"  # calls made with the service token

router = APIRouter(
    prefix="/v1/ledger",
    tags=["ledger"],
    dependencies=[Depends(require_service_token)],
    responses=problem_responses(401, 422),
)

AccountFlagName = Literal[
    "debits_must_not_exceed_credits", "credits_must_not_exceed_debits", "history"
]
TransferFlagName = Literal["linked", "pending", "post_pending", "void_pending"]
_ACCOUNT_FLAGS = {f.name.lower(): f for f in AccountFlags if f.name and f.value}
_TRANSFER_FLAGS = {f.name.lower(): f for f in TransferFlags if f.name and f.value}


def _flag_names(value: int, table: dict[str, Any]) -> list[str]:
    return [name for name, flag in table.items() if value & flag]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return (EPOCH + timedelta(microseconds=ts)).isoformat().replace("+00:00", "Z")


def _reject_float_or_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("amount must be an integer of minor units or a decimal string")
    if isinstance(value, float):
        raise ValueError(
            "floats are not accepted for money: give an integer of minor units"
            ' or a decimal string such as "12.34"'
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class AccountIn(_Strict):
    id: uuid.UUID
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    code: int = Field(ge=1, le=CODE_MAX, strict=True, description="Account type code.")
    flags: list[AccountFlagName] = Field(default_factory=list, max_length=3)
    owner_ref: str | None = Field(default=None, min_length=1, max_length=OWNER_REF_LENGTH_MAX)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        money.currency(value)  # raises with a message naming the code
        return value


class AccountsIn(_Strict):
    accounts: list[AccountIn] = Field(min_length=1, max_length=BATCH_EVENTS_MAX)


class TransferIn(_Strict):
    id: uuid.UUID
    debit_account_id: uuid.UUID | None = None
    credit_account_id: uuid.UUID | None = None
    # Currency comes before amount: a decimal amount is parsed in its currency.
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    amount: int | str | None = Field(
        default=None,
        description="Integer minor units, or a decimal string in the transfer's currency."
        " May be left out to post or void a whole pending transfer.",
        examples=[12345, "123.45"],
    )
    code: int = Field(ge=1, le=CODE_MAX, strict=True, description="Transfer reason code.")
    flags: list[TransferFlagName] = Field(default_factory=list, max_length=4)
    pending_id: uuid.UUID | None = None
    reversal_of: uuid.UUID | None = None
    external_ref: str | None = Field(default=None, min_length=1, max_length=EXTERNAL_REF_LENGTH_MAX)
    timeout_s: int = Field(default=0, ge=0, le=TIMEOUT_S_MAX, strict=True)

    _amount_not_float = field_validator("amount", mode="before")(_reject_float_or_bool)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None:
            money.currency(value)
        return value

    @field_validator("amount")
    @classmethod
    def _amount_minor(cls, value: int | str | None, info: ValidationInfo) -> int | None:
        """Integer minor units as they are; a decimal string parsed in the currency."""
        if isinstance(value, str):
            currency = info.data.get("currency")
            if currency is None:
                raise ValueError(
                    "a decimal amount needs a valid currency in the same transfer;"
                    " or give integer minor units"
                )
            value = money.parse_amount_minor(value, currency)
        if value is not None and not 1 <= value <= AMOUNT_MAX:
            raise ValueError(f"amount must be positive: between 1 and {AMOUNT_MAX} minor units")
        return value

    def to_request(self) -> TransferRequest:
        flags = 0
        for name in self.flags:
            flags |= _TRANSFER_FLAGS[name]
        return TransferRequest(
            self.id,
            self.debit_account_id,
            self.credit_account_id,
            self.amount if isinstance(self.amount, int) else None,
            self.currency,
            self.code,
            flags,
            self.pending_id,
            self.reversal_of,
            self.external_ref,
            self.timeout_s,
        )


class TransfersIn(_Strict):
    transfers: list[TransferIn] = Field(min_length=1, max_length=BATCH_EVENTS_MAX)


class EventResult(BaseModel):
    index: int
    id: uuid.UUID
    result: str
    timestamp: str | None = None


class ResultsOut(BaseModel):
    results: list[EventResult]
    ok: int = Field(description="How many events succeeded.")


class AccountOut(BaseModel):
    id: uuid.UUID
    currency: str
    code: int
    flags: list[str]
    owner_ref: str | None
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    balance_posted: int
    balance_available: int
    created_at: str | None
    closed_at: str | None

    @classmethod
    def of(cls, a: Account) -> AccountOut:
        return cls(
            id=a.id,
            currency=a.currency,
            code=a.code,
            flags=_flag_names(a.flags, _ACCOUNT_FLAGS),
            owner_ref=a.owner_ref,
            debits_pending=a.debits_pending,
            debits_posted=a.debits_posted,
            credits_pending=a.credits_pending,
            credits_posted=a.credits_posted,
            balance_posted=a.balance_posted,
            balance_available=a.balance_available,
            created_at=_iso(a.created_ts),
            closed_at=_iso(a.closed_ts),
        )


class TransferOut(BaseModel):
    id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    currency: str
    code: int
    flags: list[str]
    pending_id: uuid.UUID | None
    reversal_of: uuid.UUID | None
    external_ref: str | None
    timeout_s: int
    expires_at: str | None
    timestamp: str | None
    ts: int

    @classmethod
    def of(cls, t: Transfer) -> TransferOut:
        return cls(
            id=t.id,
            debit_account_id=t.debit_account_id,
            credit_account_id=t.credit_account_id,
            amount=t.amount,
            currency=t.currency,
            code=t.code,
            flags=_flag_names(t.flags, _TRANSFER_FLAGS),
            pending_id=t.pending_id,
            reversal_of=t.reversal_of,
            external_ref=t.external_ref,
            timeout_s=t.timeout_s,
            expires_at=_iso(t.expires_ts),
            timestamp=_iso(t.ts),
            ts=t.ts,
        )


class TransferPageOut(BaseModel):
    transfers: list[TransferOut]
    next_cursor: str | None


class StatementLineOut(BaseModel):
    transfer: TransferOut
    side: str
    posted_change: int
    pending_change: int
    balance_posted_after: int


class StatementOut(BaseModel):
    account: AccountOut
    opening_balance_posted: int
    lines: list[StatementLineOut]
    next_cursor: str | None


class BalanceOut(BaseModel):
    account_id: uuid.UUID
    currency: str
    as_of: str | None
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    balance_posted: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class BlockOut(BaseModel):
    seq: int
    batch_id: uuid.UUID
    prev_hash: str
    merkle_root: str
    transfer_count: int
    committed_ts: int
    block_hash: str
    signature: str
    key_id: str

    @classmethod
    def of(cls, b: Block) -> BlockOut:
        return cls(
            seq=b.seq,
            batch_id=b.batch_id,
            prev_hash=b.prev_hash.hex(),
            merkle_root=b.merkle_root.hex(),
            transfer_count=b.transfer_count,
            committed_ts=b.committed_ts,
            block_hash=b.block_hash.hex(),
            signature=_b64(b.signature),
            key_id=b.key_id,
        )


class JournalHeadOut(BaseModel):
    public_key: str = Field(description="Ed25519 public key (base64) that signs the blocks.")
    key_id: str
    head: BlockOut | None


class ProofOut(BaseModel):
    transfer_id: uuid.UUID
    leaf_hash: str
    leaf_index: int
    tree_size: int
    audit_path: list[str]
    block: BlockOut

    @classmethod
    def of(cls, p: InclusionProof) -> ProofOut:
        return cls(
            transfer_id=p.transfer_id,
            leaf_hash=p.leaf_hash.hex(),
            leaf_index=p.leaf_index,
            tree_size=p.tree_size,
            audit_path=[h.hex() for h in p.audit_path],
            block=BlockOut.of(p.block),
        )


def _audit_event(
    request: Request, action: str, target: str | None, details: dict[str, Any]
) -> AuditEvent:
    """An audit event for a call made with the service token."""
    return AuditEvent(
        actor=SERVICE_ACTOR,
        action=action,
        target=target,
        request_id=request_id_of(request.scope),
        source=request.client.host if request.client else None,
        details=details,
    )


# --- routes -----------------------------------------------------------------------------


@router.post("/accounts", response_model=ResultsOut, summary="Create accounts (batch)")
async def create_accounts(body: AccountsIn, runtime: RuntimeDep, request: Request) -> ResultsOut:
    """Create up to 8,190 accounts. An existing id answers ``exists`` (same fields)
    or ``exists_with_different_*``; nothing is ever overwritten."""
    requests = [
        AccountRequest(
            a.id,
            a.currency,
            a.code,
            _flags_value(a.flags, _ACCOUNT_FLAGS),
            a.owner_ref,
        )
        for a in body.accounts
    ]

    def audit(outcomes: Sequence[AccountOutcome]) -> AuditEvent:
        # Counts only: a batch of 8,190 ids would not fit an audit event's details.
        created = sum(1 for o in outcomes if o.result == "ok")
        details = {"requested": len(requests), "created": created}
        return _audit_event(request, "ledger.accounts.create", None, details)

    outcomes = await run_in_threadpool(runtime.ledger.create_accounts, requests, audit=audit)
    results = [EventResult(index=o.index, id=o.id, result=o.result.value) for o in outcomes]
    return ResultsOut(results=results, ok=sum(1 for o in outcomes if o.result == "ok"))


def _flags_value(names: Sequence[str], table: dict[str, Any]) -> int:
    value = 0
    for name in names:
        value |= table[name]
    return value


@router.get(
    "/accounts/{account_id}",
    response_model=AccountOut,
    summary="Look up an account",
    responses=problem_responses(404),
)
async def get_account(account_id: uuid.UUID, runtime: RuntimeDep) -> AccountOut:
    account = await run_in_threadpool(runtime.ledger.get_account, account_id)
    return AccountOut.of(account)


@router.post(
    "/accounts/{account_id}/close",
    response_model=AccountOut,
    summary="Close an account",
    responses=problem_responses(404, 409),
)
async def close_account(account_id: uuid.UUID, runtime: RuntimeDep, request: Request) -> AccountOut:
    """Close an account that holds no balance and no pending holds. Closed
    accounts refuse new transfers. The closing is recorded in the audit trail."""
    event = _audit_event(request, "ledger.account.close", str(account_id), {})
    account = await run_in_threadpool(runtime.ledger.close_account, account_id, audit=event)
    return AccountOut.of(account)


@router.post(
    "/transfers",
    response_model=ResultsOut,
    summary="Create transfers (batch)",
    responses=problem_responses(503),
)
async def create_transfers(body: TransfersIn, runtime: RuntimeDep) -> ResultsOut:
    """Apply up to 8,190 transfer events in order; each gets a result code
    (``ok``, ``exists``, ``exceeds_credits``, ... see docs/ledger.md). Events
    flagged ``linked`` commit or fail with the next one."""
    requests = [t.to_request() for t in body.transfers]
    try:
        future = runtime.ledger_committer.submit(requests)
    except LedgerOverloadedError as exc:
        raise ProblemError(
            503, "ledger-overloaded", "Ledger overloaded", str(exc), headers={"Retry-After": "1"}
        ) from exc
    outcomes = await asyncio.wrap_future(future)
    results = [
        EventResult(index=o.position, id=o.id, result=o.result.value, timestamp=_iso(o.ts))
        for o in outcomes
    ]
    return ResultsOut(results=results, ok=sum(1 for o in outcomes if o.ok))


@router.get(
    "/transfers/{transfer_id}",
    response_model=TransferOut,
    summary="Look up a transfer",
    responses=problem_responses(404),
)
async def get_transfer(transfer_id: uuid.UUID, runtime: RuntimeDep) -> TransferOut:
    found = await run_in_threadpool(runtime.ledger.lookup_transfers, [transfer_id])
    transfer = found.get(transfer_id)
    if transfer is None:
        raise ledger_errors.TransferNotFoundError(f"no transfer {transfer_id}")
    return TransferOut.of(transfer)


@router.get(
    "/transfers/{transfer_id}/proof",
    response_model=ProofOut,
    summary="Inclusion proof of a transfer",
    responses=problem_responses(404, 409),
)
async def get_proof(transfer_id: uuid.UUID, runtime: RuntimeDep) -> ProofOut:
    """The RFC 6962 audit path from the transfer's leaf to its batch's Merkle
    root, and the signed block that commits to that root."""
    proof = await run_in_threadpool(runtime.ledger.inclusion_proof, transfer_id)
    return ProofOut.of(proof)


def _query(
    account_id: uuid.UUID,
    from_: datetime | None,
    to: datetime | None,
    cursor: str | None,
    limit: int,
) -> TransferQuery:
    return TransferQuery(
        account_id=account_id,
        from_ts=_to_ts(from_, "from") if from_ else 0,
        to_ts=_to_ts(to, "to") if to else AMOUNT_MAX,
        cursor=cursor,
        limit=limit,
    )


def _to_ts(value: datetime, name: str) -> int:
    if value.tzinfo is None:
        raise ProblemError(
            422,
            "invalid-time",
            "Invalid time",
            f"'{name}' needs a time zone, e.g. 2026-11-25T08:00:00Z",
        )
    return (value - EPOCH) // ONE_US


FromQuery = Annotated[
    datetime | None, Query(alias="from", description="Inclusive start (RFC 3339).")
]
ToQuery = Annotated[datetime | None, Query(description="Exclusive end (RFC 3339).")]
CursorQuery = Annotated[
    str | None, Query(max_length=64, description="next_cursor of the last page.")
]
LimitQuery = Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)]


@router.get(
    "/accounts/{account_id}/transfers",
    response_model=TransferPageOut,
    summary="Transfers of an account",
    responses=problem_responses(400, 404),
)
async def account_transfers(
    account_id: uuid.UUID,
    runtime: RuntimeDep,
    from_: FromQuery = None,
    to: ToQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = PAGE_SIZE_DEFAULT,
) -> TransferPageOut:
    """Transfers that touch the account in ``[from, to)``, oldest first, a page at a time."""
    page = await run_in_threadpool(
        runtime.ledger.account_transfers, _query(account_id, from_, to, cursor, limit)
    )
    return TransferPageOut(
        transfers=[TransferOut.of(t) for t in page.transfers], next_cursor=page.next_cursor
    )


@router.get(
    "/accounts/{account_id}/statement",
    response_model=StatementOut,
    summary="Account statement with running balance",
    responses=problem_responses(400, 404),
)
async def account_statement(
    account_id: uuid.UUID,
    runtime: RuntimeDep,
    from_: FromQuery = None,
    to: ToQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = PAGE_SIZE_DEFAULT,
) -> StatementOut:
    """Statement lines with each line's posted and pending change and the posted
    balance after it."""
    statement = await run_in_threadpool(
        runtime.ledger.statement, _query(account_id, from_, to, cursor, limit)
    )
    return StatementOut(
        account=AccountOut.of(statement.account),
        opening_balance_posted=statement.opening_balance_posted,
        lines=[
            StatementLineOut(
                transfer=TransferOut.of(line.transfer),
                side=line.side,
                posted_change=line.posted_change,
                pending_change=line.pending_change,
                balance_posted_after=line.balance_posted_after,
            )
            for line in statement.lines
        ],
        next_cursor=statement.next_cursor,
    )


@router.get(
    "/accounts/{account_id}/balance",
    response_model=BalanceOut,
    summary="Balance as of a time",
    responses=problem_responses(404),
)
async def account_balance(
    account_id: uuid.UUID,
    runtime: RuntimeDep,
    as_of: Annotated[datetime | None, Query(description="RFC 3339 time; default now.")] = None,
) -> BalanceOut:
    ts = _to_ts(as_of, "as_of") if as_of else AMOUNT_MAX
    balance = await run_in_threadpool(runtime.ledger.balance_as_of, account_id, ts)
    return BalanceOut(
        account_id=balance.account_id,
        currency=balance.currency,
        as_of=_iso(ts) if as_of else None,
        debits_pending=balance.debits_pending,
        debits_posted=balance.debits_posted,
        credits_pending=balance.credits_pending,
        credits_posted=balance.credits_posted,
        balance_posted=balance.balance_posted,
    )


@router.get("/journal/head", response_model=JournalHeadOut, summary="Signed journal head")
async def journal_head(runtime: RuntimeDep) -> JournalHeadOut:
    """The newest signed block and the public key that verifies it; publish it
    so counterparties can check inclusion proofs."""
    head = await run_in_threadpool(runtime.ledger.block_head)
    return JournalHeadOut(
        public_key=runtime.signer.public_key_base64,
        key_id=runtime.signer.key_id,
        head=BlockOut.of(head) if head else None,
    )

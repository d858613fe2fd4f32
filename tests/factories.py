"""Test-data factories for every tier: one place that knows how to make things."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from zhifu.ledger.model import (
    AccountFlags,
    AccountRequest,
    TransferFlags,
    TransferRequest,
)
from zhifu.ledger.service import LedgerService

BANK_CODE = 1
CUSTOMER_CODE = 2
TRANSFER_CODE = 10
CUSTOMER_FLAGS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
# Flag values as plain ints, the way the store hands them to the planner.
DEPOSIT = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
LOAN = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
HISTORY = int(AccountFlags.HISTORY)
LINKED = int(TransferFlags.LINKED)
PENDING = int(TransferFlags.PENDING)
POST = int(TransferFlags.POST_PENDING)
VOID = int(TransferFlags.VOID_PENDING)
EXPIRY = int(TransferFlags.EXPIRY)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def account(
    currency: str = "CNY",
    *,
    code: int = CUSTOMER_CODE,
    flags: int = 0,
    owner_ref: str | None = None,
) -> AccountRequest:
    return AccountRequest(new_id(), currency, code, flags, owner_ref)


def transfer(
    debit: uuid.UUID | None,
    credit: uuid.UUID | None,
    amount: int | None,
    currency: str | None = "CNY",
    **fields: Any,
) -> TransferRequest:
    fields.setdefault("code", TRANSFER_CODE)
    return TransferRequest(
        fields.pop("id", None) or new_id(), debit, credit, amount, currency, **fields
    )


def pending(debit: uuid.UUID, credit: uuid.UUID, amount: int, **fields: Any) -> TransferRequest:
    fields["flags"] = fields.get("flags", 0) | TransferFlags.PENDING
    return transfer(debit, credit, amount, **fields)


def post(pending_id: uuid.UUID, amount: int | None = None, **fields: Any) -> TransferRequest:
    fields["flags"] = fields.get("flags", 0) | TransferFlags.POST_PENDING
    return transfer(None, None, amount, None, pending_id=pending_id, **fields)


def void(pending_id: uuid.UUID, **fields: Any) -> TransferRequest:
    fields["flags"] = fields.get("flags", 0) | TransferFlags.VOID_PENDING
    return transfer(None, None, None, None, pending_id=pending_id, **fields)


def linked(request: TransferRequest) -> TransferRequest:
    return request._replace(flags=request.flags | TransferFlags.LINKED)


def open_accounts(
    ledger: LedgerService, count: int, currency: str = "CNY", *, flags: int = CUSTOMER_FLAGS
) -> list[uuid.UUID]:
    requests = [account(currency, flags=flags) for _ in range(count)]
    outcomes = ledger.create_accounts(requests)
    assert all(o.result == "ok" for o in outcomes), outcomes
    return [r.id for r in requests]


def open_bank(ledger: LedgerService, currency: str = "CNY") -> uuid.UUID:
    """An account with no balance flag: the source of test money."""
    (bank,) = open_accounts(ledger, 1, currency, flags=0)
    return bank


def fund(
    ledger: LedgerService,
    bank: uuid.UUID,
    accounts: Sequence[uuid.UUID],
    amount: int,
    currency: str = "CNY",
) -> None:
    outcomes = ledger.create_transfers([transfer(bank, a, amount, currency) for a in accounts])
    assert all(o.ok for o in outcomes), outcomes

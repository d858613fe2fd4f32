"""Customers' bank accounts and debit cards, teller cash, and the staff view of
a customer's accounts (``docs/accounts.md``).

Every use case lives in :mod:`zhifu.accounts.service`; this module maps HTTP to
it. A customer's endpoints act only on the caller's own accounts and cards:
anybody else's answer 404, exactly like one that does not exist. Lifting a
freeze (of an account or a card) needs a step-up, asked for only once the
record is known to be the caller's and frozen. Amounts travel as decimal
strings with their currency code; floats are refused.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts.model import (
    NICKNAME_INPUT_LENGTH_MAX,
    NUMBER_TEXT_LENGTH_MAX,
    AccountStatus,
    CardStatus,
    Channel,
    CustomerLimits,
)
from zhifu.accounts.service import (
    AccountLimitsView,
    AccountView,
    CardView,
    CashKind,
    CashReceipt,
    ChannelLimitsRequest,
    ChannelLimitsView,
    check_idempotency_key,
    issuing_id,
    opening_id,
    raises_limits,
)
from zhifu.api.auth import AuditCtx, CurrentCustomer, require_permission
from zhifu.api.deps import RuntimeDep
from zhifu.api.pagination import PAGE_RESPONSES, PageQuery, by_created
from zhifu.api.params import (
    ConfirmationId,
    IdempotencyKey,
    OptionalIdempotencyKey,
    money_text,
)
from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.identity.access import Permission, Principal
from zhifu.money import AMOUNT_TEXT_LENGTH_MAX, Money
from zhifu.ops.audit import AuditContext

register_error_mapping(accounts_errors.AccountsError, 422, "invalid-input", "Invalid input")
for _not_found in (
    accounts_errors.AccountNotFoundError,
    accounts_errors.CardNotFoundError,
    accounts_errors.CustomerNotFoundError,
):
    register_error_mapping(_not_found, 404, "not-found", "Not found")
register_error_mapping(
    accounts_errors.AccountStateError, 409, "account-state", "Not allowed in this account status"
)
register_error_mapping(accounts_errors.AccountFrozenError, 409, "account-frozen", "Account frozen")
register_error_mapping(
    accounts_errors.CardStateError, 409, "card-state", "Not allowed in this card status"
)
register_error_mapping(accounts_errors.CardBlockedError, 409, "card-blocked", "Card blocked")
register_error_mapping(
    accounts_errors.InsufficientFundsError, 409, "insufficient-funds", "Insufficient funds"
)
register_error_mapping(
    accounts_errors.IdempotencyConflictError,
    409,
    "idempotency-conflict",
    "Idempotency key used for another request",
)
register_error_mapping(accounts_errors.LimitExceededError, 409, "limit-exceeded", "Limit exceeded")
register_error_mapping(accounts_errors.QuotaExceededError, 409, "quota-exceeded", "Too many")
register_error_mapping(
    accounts_errors.InvalidIdempotencyKeyError,
    400,
    "invalid-idempotency-key",
    "Idempotency-Key missing or invalid",
)

router = APIRouter(prefix="/v1", tags=["accounts"], responses=problem_responses(401, 403))

CashManager = Annotated[Principal, require_permission(Permission.CASH_MANAGE)]
CustomerReader = Annotated[Principal, require_permission(Permission.CUSTOMERS_READ)]

# The store's order: oldest first, the id breaking ties. The lists are read
# whole and sliced by the pager: a customer has at most ACCOUNTS_PER_CUSTOMER_MAX
# accounts, each with at most CARDS_PER_ACCOUNT_MAX cards.
ACCOUNTS_ORDER: Final = by_created("accounts")
STAFF_ACCOUNTS_ORDER: Final = by_created("customer-accounts")
ACCOUNT_CARDS_ORDER: Final = by_created("account-cards")
CARDS_ORDER: Final = by_created("cards")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class AccountOpenIn(_In):
    product: str = Field(min_length=1, max_length=16, examples=["current"])
    account_class: Literal["I", "II", "III"] = Field(
        description="PBOC personal account class: II and III hold CNY only."
    )
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    nickname: str | None = Field(None, min_length=1, max_length=NICKNAME_INPUT_LENGTH_MAX)


class AccountUpdateIn(_In):
    nickname: str | None = Field(None, min_length=1, max_length=NICKNAME_INPUT_LENGTH_MAX)
    is_default: Literal[True] | None = Field(
        None, description="true makes this the default account for its currency."
    )


class CashIn(_In):
    account_id: uuid.UUID | None = None
    account_number: str | None = Field(
        None, min_length=1, max_length=NUMBER_TEXT_LENGTH_MAX, examples=["1024 0001 2345 6789 012"]
    )
    amount: str = Field(
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["100.00"],
        description="Major units.",
    )
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])

    _amount_is_text = field_validator("amount", mode="before")(money_text)

    @model_validator(mode="after")
    def _one_account(self) -> CashIn:
        if (self.account_id is None) == (self.account_number is None):
            raise ValueError("give either account_id or account_number, not both")
        return self


class AccountOut(BaseModel):
    id: uuid.UUID
    number: str = Field(description="The full 19-digit account number, to give out to be paid.")
    number_masked: str
    product: str
    account_class: str
    currency: str
    nickname: str
    status: AccountStatus
    is_default: bool
    balance: str = Field(description="Posted balance, decimal in major units.")
    available: str = Field(description="Balance less pending holds, decimal in major units.")
    created_ts: int
    updated_ts: int
    closed_ts: int | None

    @classmethod
    def of(cls, v: AccountView) -> AccountOut:
        return cls(
            id=v.id,
            number=v.number,
            number_masked=v.number_masked,
            product=v.product,
            account_class=v.account_class.value,
            currency=v.currency,
            nickname=v.nickname,
            status=v.status,
            is_default=v.is_default,
            balance=v.balance.to_decimal_string(),
            available=v.available.to_decimal_string(),
            created_ts=v.created_ts,
            updated_ts=v.updated_ts,
            closed_ts=v.closed_ts,
        )


class StaffAccountOut(BaseModel):
    """An account as staff see it: the number masked."""

    id: uuid.UUID
    customer_id: uuid.UUID
    number_masked: str
    product: str
    account_class: str
    currency: str
    status: AccountStatus
    is_default: bool
    balance: str
    available: str
    created_ts: int
    closed_ts: int | None

    @classmethod
    def of(cls, v: AccountView) -> StaffAccountOut:
        return cls(
            id=v.id,
            customer_id=v.customer_id,
            number_masked=v.number_masked,
            product=v.product,
            account_class=v.account_class.value,
            currency=v.currency,
            status=v.status,
            is_default=v.is_default,
            balance=v.balance.to_decimal_string(),
            available=v.available.to_decimal_string(),
            created_ts=v.created_ts,
            closed_ts=v.closed_ts,
        )


class CardOut(BaseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    token: str = Field(description="Stands for the card number everywhere outside the vault.")
    pan_masked: str = Field(description="First six and last four digits only.")
    expiry: str = Field(description="MM/YY, as printed on the card.")
    expiry_year: int
    expiry_month: int
    status: CardStatus
    replaced_by: uuid.UUID | None
    created_ts: int
    updated_ts: int

    @classmethod
    def of(cls, v: CardView) -> CardOut:
        return cls(
            id=v.id,
            account_id=v.account_id,
            token=v.token,
            pan_masked=v.pan_masked,
            expiry=v.expiry.format(),
            expiry_year=v.expiry.year,
            expiry_month=v.expiry.month,
            status=v.status,
            replaced_by=v.replaced_by,
            created_ts=v.created_ts,
            updated_ts=v.updated_ts,
        )


class CashReceiptOut(BaseModel):
    transfer_id: uuid.UUID
    kind: CashKind
    account_id: uuid.UUID
    account_number_masked: str
    amount: str
    currency: str
    ts: int
    replayed: bool = Field(description="true when this answers a retry of an earlier request.")

    @classmethod
    def of(cls, r: CashReceipt) -> CashReceiptOut:
        return cls(
            transfer_id=r.transfer_id,
            kind=r.kind,
            account_id=r.account_id,
            account_number_masked=r.account_number_masked,
            amount=r.amount.to_decimal_string(),
            currency=r.amount.currency,
            ts=r.ts,
            replayed=r.replayed,
        )


# --- accounts ----------------------------------------------------------------------------


@router.post(
    "/accounts",
    status_code=201,
    response_model=AccountOut,
    summary="Open an account",
    responses=problem_responses(400, 409, 422),
)
async def open_account(
    body: AccountOpenIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: OptionalIdempotencyKey = None,
) -> AccountOut:
    """The first open account in a currency becomes the default for it. With an
    ``Idempotency-Key``, a retry answers the account the first call opened."""
    customer_id = principal.subject_id
    account_id = (
        None
        if idempotency_key is None
        else opening_id(customer_id, check_idempotency_key(idempotency_key))
    )
    view = await run_in_threadpool(
        lambda: runtime.accounts.open_account(
            customer_id,
            body.product,
            body.account_class,
            body.currency,
            ctx,
            nickname=body.nickname,
            account_id=account_id,
        )
    )
    return AccountOut.of(view)


@router.get(
    "/accounts",
    response_model=list[AccountOut],
    summary="My accounts, with balances, oldest first",
    responses=PAGE_RESPONSES,
)
async def list_accounts(
    principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[AccountOut]:
    views = await run_in_threadpool(runtime.accounts.list_accounts, principal.subject_id)
    return [AccountOut.of(v) for v in pager.page(views, ACCOUNTS_ORDER)]


@router.get(
    "/accounts/{account_id}",
    response_model=AccountOut,
    summary="One of my accounts",
    responses=problem_responses(404),
)
async def get_account(
    account_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep
) -> AccountOut:
    view = await run_in_threadpool(runtime.accounts.get_account, principal.subject_id, account_id)
    return AccountOut.of(view)


@router.patch(
    "/accounts/{account_id}",
    response_model=AccountOut,
    summary="Rename an account, or make it the default for its currency",
    responses=problem_responses(404, 409, 422),
)
async def update_account(
    account_id: uuid.UUID,
    body: AccountUpdateIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> AccountOut:
    view = await run_in_threadpool(
        lambda: runtime.accounts.update_account(
            principal.subject_id,
            account_id,
            ctx,
            nickname=body.nickname,
            make_default=bool(body.is_default),
        )
    )
    return AccountOut.of(view)


@router.post(
    "/accounts/{account_id}/freeze",
    response_model=AccountOut,
    summary="Freeze an account: money may arrive, none may leave",
    responses=problem_responses(404, 409),
)
async def freeze_account(
    account_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> AccountOut:
    view = await run_in_threadpool(runtime.accounts.freeze, principal.subject_id, account_id, ctx)
    return AccountOut.of(view)


async def _step_up(
    runtime: RuntimeDep,
    principal: Principal,
    action: str,
    details: dict[str, Any],
    summary: str,
    confirmation_id: uuid.UUID | None,
    ctx: AuditContext,
) -> None:
    await run_in_threadpool(
        lambda: runtime.identity.require_step_up(
            principal,
            action,
            details,
            confirmation_id=confirmation_id,
            summary=summary,
            ctx=ctx,
        )
    )


@router.post(
    "/accounts/{account_id}/unfreeze",
    response_model=AccountOut,
    summary="Lift a freeze (needs confirmation)",
    responses=problem_responses(404, 409),
)
async def unfreeze_account(
    account_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> AccountOut:
    """Answers 403 ``step-up-required`` (with a QR confirmation when a phone is
    bound) until the customer proves a factor; then send the confirmation's id
    as ``X-Zhifu-Confirmation``, or step up first."""
    customer_id = principal.subject_id
    view = await run_in_threadpool(runtime.accounts.get_account, customer_id, account_id)
    if view.status is AccountStatus.FROZEN:
        await _step_up(
            runtime,
            principal,
            "accounts.account.unfreeze",
            {"account": str(account_id)},
            f"Unfreeze account {view.number_masked}",
            confirmation_id,
            ctx,
        )
    view = await run_in_threadpool(runtime.accounts.unfreeze, customer_id, account_id, ctx)
    return AccountOut.of(view)


@router.post(
    "/accounts/{account_id}/close",
    response_model=AccountOut,
    summary="Close an account settled at zero; its cards close with it",
    responses=problem_responses(404, 409),
)
async def close_account(
    account_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> AccountOut:
    view = await run_in_threadpool(runtime.accounts.close, principal.subject_id, account_id, ctx)
    return AccountOut.of(view)


# --- cards --------------------------------------------------------------------------------


@router.post(
    "/accounts/{account_id}/cards",
    status_code=201,
    response_model=CardOut,
    summary="Issue a debit card for an account",
    responses=problem_responses(400, 404, 409),
)
async def issue_card(
    account_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: OptionalIdempotencyKey = None,
) -> CardOut:
    """With an ``Idempotency-Key``, a retry answers the card the first call
    issued (one card, not two); the key for another account is 409."""
    customer_id = principal.subject_id
    card_id = (
        None
        if idempotency_key is None
        else issuing_id(customer_id, check_idempotency_key(idempotency_key))
    )
    view = await run_in_threadpool(
        lambda: runtime.accounts.issue_card(customer_id, account_id, ctx, card_id=card_id)
    )
    return CardOut.of(view)


@router.get(
    "/accounts/{account_id}/cards",
    response_model=list[CardOut],
    summary="The cards of one of my accounts, oldest first",
    responses={**problem_responses(404), **PAGE_RESPONSES},
)
async def account_cards(
    account_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[CardOut]:
    views = await run_in_threadpool(runtime.accounts.list_cards, principal.subject_id, account_id)
    return [CardOut.of(v) for v in pager.page(views, ACCOUNT_CARDS_ORDER)]


@router.get(
    "/cards",
    response_model=list[CardOut],
    summary="All my cards, oldest first",
    responses=PAGE_RESPONSES,
)
async def my_cards(
    principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[CardOut]:
    views = await run_in_threadpool(runtime.accounts.customer_cards, principal.subject_id)
    return [CardOut.of(v) for v in pager.page(views, CARDS_ORDER)]


@router.post(
    "/cards/{card_id}/freeze",
    response_model=CardOut,
    summary="Freeze a card",
    responses=problem_responses(404, 409),
)
async def freeze_card(
    card_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> CardOut:
    view = await run_in_threadpool(runtime.accounts.freeze_card, principal.subject_id, card_id, ctx)
    return CardOut.of(view)


@router.post(
    "/cards/{card_id}/unfreeze",
    response_model=CardOut,
    summary="Unfreeze a card (needs confirmation)",
    responses=problem_responses(404, 409),
)
async def unfreeze_card(
    card_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> CardOut:
    """Asks for a step-up like unfreezing an account. A card reported lost
    stays blocked (409): reissue it."""
    customer_id = principal.subject_id
    view = await run_in_threadpool(runtime.accounts.get_card, customer_id, card_id)
    if view.status is CardStatus.FROZEN:
        await _step_up(
            runtime,
            principal,
            "accounts.card.unfreeze",
            {"card": str(card_id)},
            f"Unfreeze card {view.pan_masked}",
            confirmation_id,
            ctx,
        )
    view = await run_in_threadpool(runtime.accounts.unfreeze_card, customer_id, card_id, ctx)
    return CardOut.of(view)


@router.post(
    "/cards/{card_id}/report-lost",
    response_model=CardOut,
    summary="Report a card lost or stolen: blocked at once and for good",
    responses=problem_responses(404, 409),
)
async def report_card_lost(
    card_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> CardOut:
    view = await run_in_threadpool(runtime.accounts.report_lost, principal.subject_id, card_id, ctx)
    return CardOut.of(view)


@router.post(
    "/cards/{card_id}/reissue",
    status_code=201,
    response_model=CardOut,
    summary="A new card (new number) in place of one reported lost",
    responses=problem_responses(404, 409),
)
async def reissue_card(
    card_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> CardOut:
    view = await run_in_threadpool(
        runtime.accounts.reissue_card, principal.subject_id, card_id, ctx
    )
    return CardOut.of(view)


# --- staff ---------------------------------------------------------------------------------


async def _cash(
    kind: CashKind, body: CashIn, key: str | None, runtime: RuntimeDep, ctx: AuditContext
) -> CashReceiptOut:
    checked_key = check_idempotency_key(key)
    amount = Money.parse(body.amount, body.currency)  # MoneyError: 422 invalid-amount
    account: uuid.UUID | str = (
        body.account_id if body.account_id is not None else str(body.account_number)
    )
    use_case = (
        runtime.accounts.cash_deposit
        if kind is CashKind.DEPOSIT
        else runtime.accounts.cash_withdrawal
    )
    receipt = await run_in_threadpool(
        lambda: use_case(account, amount.amount_minor, amount.currency, checked_key, ctx)
    )
    return CashReceiptOut.of(receipt)


@router.post(
    "/teller/deposits",
    response_model=CashReceiptOut,
    summary="Take a cash deposit at the counter",
    tags=["teller"],
    responses=problem_responses(400, 404, 409, 422),
)
async def cash_deposit(
    body: CashIn,
    principal: CashManager,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
) -> CashReceiptOut:
    """Exactly once per teller and ``Idempotency-Key``: a retry answers the
    first deposit (``replayed``: true); the key with another request is 409."""
    return await _cash(CashKind.DEPOSIT, body, idempotency_key, runtime, ctx)


@router.post(
    "/teller/withdrawals",
    response_model=CashReceiptOut,
    summary="Pay out a cash withdrawal at the counter",
    tags=["teller"],
    responses=problem_responses(400, 404, 409, 422),
)
async def cash_withdrawal(
    body: CashIn,
    principal: CashManager,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
) -> CashReceiptOut:
    """Like a deposit. A frozen account refuses (409 ``account-frozen``), and so
    does a balance that is too low (409 ``insufficient-funds``)."""
    return await _cash(CashKind.WITHDRAWAL, body, idempotency_key, runtime, ctx)


@router.get(
    "/admin/customers/{customer_id}/accounts",
    response_model=list[StaffAccountOut],
    summary="A customer's accounts (numbers masked), oldest first",
    tags=["administration"],
    responses={**problem_responses(404), **PAGE_RESPONSES},
)
async def customer_accounts(
    customer_id: uuid.UUID, principal: CustomerReader, runtime: RuntimeDep, pager: PageQuery
) -> list[StaffAccountOut]:
    views = await run_in_threadpool(runtime.accounts.customer_accounts, customer_id)
    return [StaffAccountOut.of(v) for v in pager.page(views, STAFF_ACCOUNTS_ORDER)]


# --- limits the customer chooses ---------------------------------------------------------------


class LimitsIn(_In):
    per_payment: str | None = Field(
        None,
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["2000.00"],
        description="Most one payment may be; null: the bank's limit alone; 0: channel off.",
    )
    daily: str | None = Field(
        None,
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["5000.00"],
        description="Most paid out per Shanghai day, all channels counted; null: the bank's.",
    )
    yearly: str | None = Field(
        None,
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        description="Most paid out per calendar year, all channels counted; null: the bank's.",
    )

    _amounts_are_text = field_validator("per_payment", "daily", "yearly", mode="before")(money_text)


class LimitAmountsOut(BaseModel):
    per_payment: str | None
    daily: str | None
    yearly: str | None

    @classmethod
    def of(cls, amounts: tuple[Money | None, Money | None, Money | None]) -> LimitAmountsOut:
        shown = [None if m is None else m.to_decimal_string() for m in amounts]
        return cls(per_payment=shown[0], daily=shown[1], yearly=shown[2])


class ChannelLimitsOut(BaseModel):
    channel: Channel
    policy: LimitAmountsOut = Field(description="The bank's limits; null: none.")
    own: LimitAmountsOut = Field(description="The limits you set; null: none (the bank's apply).")
    remaining: str | None = Field(
        description="The largest single payment allowed now; null: no limit."
    )

    @classmethod
    def of(cls, v: ChannelLimitsView) -> ChannelLimitsOut:
        chosen = v.chosen
        own = (
            (None, None, None)
            if chosen is None
            else (
                chosen.per_payment,
                chosen.daily,
                chosen.yearly,
            )
        )
        return cls(
            channel=v.channel,
            policy=LimitAmountsOut.of((v.policy.per_payment, v.policy.daily, v.policy.yearly)),
            own=LimitAmountsOut.of(own),
            remaining=None if v.remaining is None else v.remaining.to_decimal_string(),
        )


class LimitsOut(BaseModel):
    account_id: uuid.UUID
    currency: str
    day: date = Field(description="Today in Shanghai: the day the daily limits count.")
    year: int
    spent_today: str = Field(description="Paid out today, where limits applied.")
    spent_this_year: str
    channels: list[ChannelLimitsOut]

    @classmethod
    def of(cls, v: AccountLimitsView) -> LimitsOut:
        return cls(
            account_id=v.account_id,
            currency=v.currency,
            day=v.day,
            year=v.year,
            spent_today=v.spent_today.to_decimal_string(),
            spent_this_year=v.spent_this_year.to_decimal_string(),
            channels=[ChannelLimitsOut.of(c) for c in v.channels],
        )


@router.get(
    "/accounts/{account_id}/limits",
    response_model=LimitsOut,
    summary="My limits on an account, per channel, and what is left",
    responses=problem_responses(404),
)
async def account_limits(
    account_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep
) -> LimitsOut:
    view = await run_in_threadpool(runtime.accounts.limits, principal.subject_id, account_id)
    return LimitsOut.of(view)


@router.put(
    "/accounts/{account_id}/limits/{channel}",
    response_model=LimitsOut,
    summary="Set my own lower limits on one channel (raising needs confirmation)",
    responses=problem_responses(404, 409, 422),
)
async def set_account_limits(
    account_id: uuid.UUID,
    channel: Channel,
    body: LimitsIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> LimitsOut:
    """Replaces the channel's three limits. They can only be at or below the
    bank's (422 otherwise); zero turns the channel off. Lowering needs nothing;
    raising one you set, or removing it, answers 403 ``step-up-required`` first."""
    customer_id = principal.subject_id
    view = await run_in_threadpool(runtime.accounts.limits, customer_id, account_id)
    amounts = [
        None if text is None else Money.parse(text, view.currency)
        for text in (body.per_payment, body.daily, body.yearly)
    ]
    requested = ChannelLimitsRequest(channel, *amounts)
    wanted = CustomerLimits(view.currency, *amounts)  # InvalidLimitError: 422
    raising = raises_limits(view.channel(channel).chosen, wanted)
    if raising:
        await _step_up(
            runtime,
            principal,
            "accounts.limits.raise",
            {"account": str(account_id), "channel": channel.value, **body.model_dump()},
            f"Raise your {channel.value} payment limits",
            confirmation_id,
            ctx,
        )
    view = await run_in_threadpool(
        lambda: runtime.accounts.set_limits(
            customer_id, account_id, requested, ctx, raise_allowed=raising
        )
    )
    return LimitsOut.of(view)

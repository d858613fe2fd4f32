"""Payment orders: a customer pays another account at this bank, and reads the
orders they paid or received (``docs/payments.md``).

Every use case lives in :mod:`zhifu.payments.service`; this module maps HTTP to
it. Every POST needs an ``Idempotency-Key``: the same key with the same body
answers the first payment again (``replayed``: true), the same key with
another body is 409 ``idempotency-conflict``. A large amount needs a second
factor: 403 ``step-up-required`` until the customer confirms this very payment
on the bound phone (the confirmation's id then goes in
``X-Zhifu-Confirmation``) or steps up. Amounts are decimal strings with their
currency code; floats are refused.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zhifu.accounts.model import NUMBER_TEXT_LENGTH_MAX, Channel, mask_account_number
from zhifu.api.auth import AuditCtx, CurrentCustomer
from zhifu.api.deps import RuntimeDep
from zhifu.api.params import ConfirmationId, IdempotencyKey, money_text
from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.identity.access import Principal
from zhifu.money import AMOUNT_TEXT_LENGTH_MAX, Money
from zhifu.ops.audit import AuditContext
from zhifu.payments import errors as payments_errors
from zhifu.payments.model import (
    MEMO_CHARS_MAX,
    PaymentKind,
    check_idempotency_key,
    needs_step_up,
    request_fingerprint,
)
from zhifu.payments.service import Idempotency, OrderView, PaymentDraft, PaymentResult

register_error_mapping(payments_errors.PaymentError, 422, "invalid-input", "Invalid input")
register_error_mapping(payments_errors.PaymentNotFoundError, 404, "not-found", "Not found")
register_error_mapping(
    payments_errors.IdempotencyConflictError,
    409,
    "idempotency-conflict",
    "Idempotency key used for another request",
)
register_error_mapping(
    payments_errors.InvalidIdempotencyKeyError,
    400,
    "invalid-idempotency-key",
    "Idempotency-Key missing or invalid",
)
register_error_mapping(
    payments_errors.IllegalTransitionError, 409, "payment-state", "Not allowed in this state"
)
register_error_mapping(
    payments_errors.StepUpNeededError, 403, "step-up-required", "Confirmation required"
)

router = APIRouter(prefix="/v1", tags=["payments"], responses=problem_responses(401, 403))

PAYMENT_CHANNELS = (Channel.ONLINE, Channel.MOBILE)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class TransferIn(_In):
    from_account_id: uuid.UUID | None = Field(
        None,
        description="One of the caller's accounts. Give this or from_card_id, or neither"
        " to pay from the default account in the currency.",
    )
    from_card_id: uuid.UUID | None = Field(
        None, description="One of the caller's debit cards: its account pays."
    )
    to_account_number: str = Field(
        min_length=1,
        max_length=NUMBER_TEXT_LENGTH_MAX,
        examples=["1024 0001 0000 0000 123"],
        description="Any account at this bank; spaces and hyphens are ignored.",
    )
    amount: str = Field(
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["12.34"],
        description="Major units.",
    )
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    memo: str = Field("", max_length=4 * MEMO_CHARS_MAX, description="Shown to both sides.")
    channel: Channel = Field(
        Channel.ONLINE, description="Where the customer asked: online or mobile."
    )

    _amount_is_text = field_validator("amount", mode="before")(money_text)

    @model_validator(mode="after")
    def _one_source(self) -> TransferIn:
        if self.from_account_id is not None and self.from_card_id is not None:
            raise ValueError("give from_account_id or from_card_id, not both")
        return self

    @field_validator("channel")
    @classmethod
    def _customer_channel(cls, value: Channel) -> Channel:
        if value not in PAYMENT_CHANNELS:
            allowed = ", ".join(c.value for c in PAYMENT_CHANNELS)
            raise ValueError(f"a transfer is asked for online or on mobile ({allowed})")
        return value


class TransitionOut(BaseModel):
    from_state: str | None
    to_state: str
    ts: int
    actor: str
    reason: str


class PaymentOut(BaseModel):
    id: uuid.UUID
    kind: PaymentKind
    state: str
    channel: str
    amount: str = Field(description="Decimal in major units.")
    currency: str
    refunded: str
    direction: str = Field(description="outgoing for the payer, incoming for the payee.")
    debit_account_id: uuid.UUID | None = Field(description="Only shown to the payer.")
    credit_account_id: uuid.UUID | None = Field(description="Only shown to the payee.")
    payer: str
    payee: str
    memo: str
    external_ref: str | None
    refund_of: uuid.UUID | None
    merchant_id: uuid.UUID | None
    risk_decision: str
    risk_reason: str
    route: str
    failure_code: str | None
    failure_detail: str | None
    created_ts: int
    updated_ts: int
    transitions: list[TransitionOut]
    replayed: bool = Field(
        False, description="true when this answers a retry with the same Idempotency-Key."
    )

    @classmethod
    def of(cls, v: OrderView, viewer: uuid.UUID | None, *, replayed: bool = False) -> PaymentOut:
        """``viewer`` is the customer looking; None for staff, who see both sides."""
        payer_side = viewer is None or viewer == v.payer_customer_id
        payee_side = viewer is None or viewer == v.payee_customer_id
        return cls(
            id=v.id,
            kind=v.kind,
            state=v.state.value,
            channel=v.channel,
            amount=v.amount.to_decimal_string(),
            currency=v.amount.currency,
            refunded=v.refunded.to_decimal_string(),
            direction="outgoing" if payer_side else "incoming",
            debit_account_id=v.debit_account_id if payer_side else None,
            credit_account_id=v.credit_account_id if payee_side else None,
            payer=v.payer_label,
            payee=v.payee_label,
            memo=v.memo,
            external_ref=v.external_ref,
            refund_of=v.refund_of,
            merchant_id=v.merchant_id,
            risk_decision=v.risk_decision,
            risk_reason=v.risk_reason,
            route=v.route,
            failure_code=v.failure_code,
            failure_detail=v.failure_detail,
            created_ts=v.created_ts,
            updated_ts=v.updated_ts,
            transitions=[
                TransitionOut(
                    from_state=None if t.from_state is None else t.from_state.value,
                    to_state=t.to_state.value,
                    ts=t.ts,
                    actor=t.actor,
                    reason=t.reason,
                )
                for t in v.transitions
            ],
            replayed=replayed,
        )


async def step_up_for_amount(
    runtime: Any,
    principal: Principal,
    action: str,
    details: dict[str, Any],
    amount: Money,
    summary: str,
    confirmation_id: uuid.UUID | None,
    ctx: AuditContext,
) -> str | None:
    """The factor the customer proved for a large payment, or None when the
    amount needs none. Raises StepUpRequiredError (403) until one is proved;
    a phone-bound customer must confirm this very payment on the phone."""
    if not needs_step_up(amount):
        return None
    factor = await run_in_threadpool(
        lambda: runtime.identity.require_step_up(
            principal,
            action,
            details,
            confirmation_id=confirmation_id,
            summary=summary,
            ctx=ctx,
            device_only=True,
        )
    )
    return str(factor.value)


def idempotency_for(
    principal: Principal, key: str | None, request: Request, body: BaseModel
) -> Idempotency:
    """The caller's key (scoped to the customer or partner key) and the
    fingerprint of this request. Raises
    InvalidIdempotencyKeyError when the header is missing or malformed."""
    checked = check_idempotency_key(key or "")
    fingerprint = request_fingerprint(
        request.method, request.url.path, body.model_dump(mode="json")
    )
    return Idempotency(principal.actor, checked, fingerprint)


@router.post(
    "/payments",
    status_code=201,
    response_model=PaymentOut,
    summary="Pay another account at this bank (instant)",
    responses=problem_responses(400, 404, 409, 422),
)
async def create_transfer(
    body: TransferIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
    confirmation_id: ConfirmationId = None,
) -> PaymentOut:
    """Settles at once when it succeeds (state ``settled``, with every
    transition). A refusal (insufficient funds 409, a limit 409, a frozen
    account 409, a bad number 422) records nothing: the same key may be used
    again. A retry of a settled payment answers it again with 200."""
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    amount = Money.parse(body.amount, body.currency)
    to_number = body.to_account_number
    customer_id = principal.subject_id
    if needs_step_up(amount):  # a retry of a confirmed payment needs no new confirmation
        replay = await run_in_threadpool(runtime.payments.find_replay, idempotency)
        if replay is not None:
            response.status_code = 200
            return PaymentOut.of(replay.order, customer_id, replayed=True)
    step_up = await step_up_for_amount(
        runtime,
        principal,
        "payments.transfer",
        {
            "from": str(body.from_account_id or body.from_card_id or "default"),
            "to": to_number,
            "amount": amount.to_decimal_string(),
            "currency": amount.currency,
        },
        amount,
        f"Pay {amount.format()} to account {mask_account_number(to_number)}",
        confirmation_id,
        ctx,
    )
    draft = PaymentDraft(
        kind=PaymentKind.TRANSFER,
        channel=body.channel,
        initiator=ctx.actor,
        amount=amount,
        memo=body.memo,
        step_up=step_up,
    )
    result: PaymentResult = await run_in_threadpool(
        lambda: runtime.payments.transfer(
            customer_id,
            body.from_account_id,
            to_number,
            draft,
            idempotency,
            from_card_id=body.from_card_id,
        )
    )
    if result.replayed:
        response.status_code = 200
    return PaymentOut.of(result.order, customer_id, replayed=result.replayed)


@router.get(
    "/payments/{payment_id}",
    response_model=PaymentOut,
    summary="One payment I made or received, with its history",
    responses=problem_responses(404),
)
async def get_payment(
    payment_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep
) -> PaymentOut:
    view = await run_in_threadpool(runtime.payments.get_order, principal.subject_id, payment_id)
    return PaymentOut.of(view, principal.subject_id)

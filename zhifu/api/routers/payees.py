"""The payee book, payments to payees, and scheduled and recurring transfers
(``docs/payments.md``, "Payees, schedules and limits").

Every use case lives in :mod:`zhifu.payments.payees` and
:mod:`zhifu.payments.schedules`; this module maps HTTP to them. A customer
acts only on their own payees and schedules: anybody else's answer 404,
exactly like one that does not exist, and that is settled before any step-up
is asked for. Adding a payee needs a step-up, on the bound phone when there is
one; so does paying or scheduling a large amount (once, when the schedule is
made). Paying a payee and creating a schedule need an ``Idempotency-Key``.
Payees' numbers and names are only ever shown masked.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhifu.accounts.model import (
    NICKNAME_INPUT_LENGTH_MAX,
    NUMBER_TEXT_LENGTH_MAX,
    Channel,
    parse_account_number,
)
from zhifu.api.auth import AuditCtx, CurrentCustomer
from zhifu.api.deps import RuntimeDep
from zhifu.api.pagination import PAGE_RESPONSES, PageQuery, by_id
from zhifu.api.params import ConfirmationId, IdempotencyKey, money_text
from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.api.routers.payments import (
    PAYMENT_CHANNELS,
    PaymentOut,
    idempotency_for,
    step_up_for_amount,
)
from zhifu.money import AMOUNT_TEXT_LENGTH_MAX, Money
from zhifu.payments import errors as payments_errors
from zhifu.payments.model import (
    MEMO_CHARS_MAX,
    PAYEE_NAME_INPUT_CHARS_MAX,
    Frequency,
    PayeeScheme,
    PaymentKind,
    RunOutcome,
    ScheduleStatus,
    mask_payee_name,
    normalise_payee_name,
    shanghai_time,
)
from zhifu.payments.payees import PayeeView
from zhifu.payments.schedules import ScheduleRequest, ScheduleView
from zhifu.payments.service import PaymentDraft, PaymentResult

for _not_found in (payments_errors.PayeeNotFoundError, payments_errors.ScheduleNotFoundError):
    register_error_mapping(_not_found, 404, "not-found", "Not found")
register_error_mapping(
    payments_errors.PayeeExistsError, 409, "payee-exists", "Payee already in the book"
)
register_error_mapping(
    payments_errors.PayeeInUseError, 409, "payee-in-use", "Payee paid by a schedule"
)
register_error_mapping(payments_errors.TooManyError, 409, "quota-exceeded", "Too many")
register_error_mapping(
    payments_errors.ScheduleStateError,
    409,
    "schedule-state",
    "Not allowed in this schedule status",
)

router = APIRouter(prefix="/v1", tags=["payments"], responses=problem_responses(401, 403))

PAYEE_ADD_ACTION = "payments.payee.add"
# The store's orders (time-ordered ids): payees oldest first, schedules newest
# first. Read whole and sliced by the pager: a customer has at most
# PAYEES_PER_CUSTOMER_MAX payees and SCHEDULES_PER_CUSTOMER_MAX schedules.
PAYEES_ORDER: Final = by_id("payees")
SCHEDULES_ORDER: Final = by_id("schedules", descending=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class PayeeIn(_In):
    account_number: str = Field(
        min_length=1,
        max_length=NUMBER_TEXT_LENGTH_MAX,
        examples=["1024 0001 0000 0000 123"],
        description="An account at this bank; spaces and hyphens are ignored.",
    )
    name: str = Field(
        min_length=1,
        max_length=PAYEE_NAME_INPUT_CHARS_MAX,
        description="The account holder's name, as on the account. Stored encrypted, shown masked.",
    )
    nickname: str | None = Field(
        None,
        min_length=1,
        max_length=NICKNAME_INPUT_LENGTH_MAX,
        description="What you call them; the masked number when left out.",
    )


class PayeeUpdateIn(_In):
    nickname: str = Field(min_length=1, max_length=NICKNAME_INPUT_LENGTH_MAX)


class PayeeOut(BaseModel):
    id: uuid.UUID
    nickname: str
    scheme: PayeeScheme
    bank_code: str | None
    bic: str | None
    bank_name: str | None
    account_masked: str = Field(description="Only the last four digits show.")
    name_masked: str = Field(description="Only the first and last characters show.")
    created_ts: int
    updated_ts: int

    @classmethod
    def of(cls, v: PayeeView) -> PayeeOut:
        return cls(
            id=v.id,
            nickname=v.nickname,
            scheme=v.scheme,
            bank_code=v.bank_code,
            bic=v.bic,
            bank_name=v.bank_name,
            account_masked=v.account_masked,
            name_masked=v.name_masked,
            created_ts=v.created_ts,
            updated_ts=v.updated_ts,
        )


def _customer_channel(value: Channel) -> Channel:
    if value not in PAYMENT_CHANNELS:
        allowed = ", ".join(c.value for c in PAYMENT_CHANNELS)
        raise ValueError(f"a transfer is asked for online or on mobile ({allowed})")
    return value


class PayeePaymentIn(_In):
    from_account_id: uuid.UUID = Field(description="One of the caller's accounts.")
    amount: str = Field(
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["12.34"],
        description="Major units.",
    )
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    memo: str = Field("", max_length=4 * MEMO_CHARS_MAX, description="Shown to both sides.")
    channel: Channel = Field(Channel.ONLINE, description="online or mobile.")

    _amount_is_text = field_validator("amount", mode="before")(money_text)
    _channel = field_validator("channel")(_customer_channel)


class ScheduleIn(_In):
    from_account_id: uuid.UUID = Field(description="One of the caller's accounts.")
    payee_id: uuid.UUID = Field(description="A payee of the caller's book.")
    amount: str = Field(
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["800.00"],
        description="Major units.",
    )
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    memo: str = Field("", max_length=4 * MEMO_CHARS_MAX, description="Shown to both sides.")
    frequency: Frequency
    first_run: datetime = Field(
        examples=["2027-01-31T09:00"],
        description="The first run, a whole minute; without an offset it is Asia/Shanghai"
        " time. Monthly runs keep its day (the month's last day when shorter).",
    )
    end_date: date | None = Field(
        None, description="The last Shanghai day a run may fall on (recurring only)."
    )
    count: int | None = Field(None, description="How many runs at most (recurring only).")

    _amount_is_text = field_validator("amount", mode="before")(money_text)


class RunOut(BaseModel):
    seq: int = Field(description="The run's number, from 1.")
    due: datetime = Field(description="When it was due, Asia/Shanghai time.")
    due_ts: int
    outcome: RunOutcome
    payment_id: uuid.UUID | None = Field(description="The payment, when it was paid.")
    failure_code: str | None
    failure_detail: str | None
    ts: int


class ScheduleOut(BaseModel):
    id: uuid.UUID
    from_account_id: uuid.UUID
    payee_id: uuid.UUID | None = Field(description="null once the payee was deleted.")
    payee: str = Field(description="The payee's nickname and masked number, when scheduled.")
    amount: str
    currency: str
    memo: str
    frequency: Frequency
    first_run: datetime
    end_date: date | None
    count: int | None
    status: ScheduleStatus
    next_seq: int
    next_run: datetime | None = Field(description="The next run, Asia/Shanghai time.")
    failures: int = Field(description="Failed runs in a row; enough of them pause it.")
    created_ts: int
    updated_ts: int
    runs: list[RunOut] = Field(description="The latest runs, newest first (one schedule only).")
    replayed: bool = False

    @classmethod
    def of(cls, v: ScheduleView, *, replayed: bool = False) -> ScheduleOut:
        return cls(
            id=v.id,
            from_account_id=v.from_account_id,
            payee_id=v.payee_id,
            payee=v.payee_label,
            amount=v.amount.to_decimal_string(),
            currency=v.amount.currency,
            memo=v.memo,
            frequency=v.frequency,
            first_run=v.first_run,
            end_date=v.end_date,
            count=v.count,
            status=v.status,
            next_seq=v.next_seq,
            next_run=v.next_run,
            failures=v.failures,
            created_ts=v.created_ts,
            updated_ts=v.updated_ts,
            runs=[
                RunOut(
                    seq=r.seq,
                    due=shanghai_time(r.due_ts),
                    due_ts=r.due_ts,
                    outcome=r.outcome,
                    payment_id=r.order_id,
                    failure_code=r.failure_code,
                    failure_detail=r.failure_detail,
                    ts=r.ts,
                )
                for r in v.runs
            ],
            replayed=replayed,
        )


# --- payees --------------------------------------------------------------------------------


@router.post(
    "/payees",
    status_code=201,
    response_model=PayeeOut,
    summary="Add a payee (needs confirmation)",
    responses=problem_responses(404, 409, 422),
)
async def add_payee(
    body: PayeeIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> PayeeOut:
    """Answers 403 ``step-up-required`` until the customer confirms this very
    payee on the bound phone (then send the confirmation's id as
    ``X-Zhifu-Confirmation``), or steps up when no phone is bound. The same
    account twice is 409 ``payee-exists``."""
    number = parse_account_number(body.account_number, bank_code=runtime.payments.bank_code)
    name = normalise_payee_name(body.name)
    await run_in_threadpool(
        lambda: runtime.identity.require_step_up(
            principal,
            PAYEE_ADD_ACTION,
            {"account": number.number, "name": name, "nickname": body.nickname},
            confirmation_id=confirmation_id,
            summary=f"Add payee {mask_payee_name(name)}, account {number.masked}",
            ctx=ctx,
            device_only=True,
        )
    )
    view = await run_in_threadpool(
        lambda: runtime.payees.add(
            principal.subject_id, number.number, name, ctx, nickname=body.nickname
        )
    )
    return PayeeOut.of(view)


@router.get(
    "/payees",
    response_model=list[PayeeOut],
    summary="My payees, oldest first",
    responses=PAGE_RESPONSES,
)
async def list_payees(
    principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[PayeeOut]:
    views = await run_in_threadpool(runtime.payees.list_payees, principal.subject_id)
    return [PayeeOut.of(v) for v in pager.page(views, PAYEES_ORDER)]


@router.patch(
    "/payees/{payee_id}",
    response_model=PayeeOut,
    summary="Rename a payee",
    responses=problem_responses(404, 422),
)
async def rename_payee(
    payee_id: uuid.UUID,
    body: PayeeUpdateIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> PayeeOut:
    view = await run_in_threadpool(
        runtime.payees.rename, principal.subject_id, payee_id, body.nickname, ctx
    )
    return PayeeOut.of(view)


@router.delete(
    "/payees/{payee_id}",
    status_code=204,
    summary="Delete a payee",
    responses=problem_responses(404, 409),
)
async def delete_payee(
    payee_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    """409 ``payee-in-use`` while an active or paused schedule pays the payee."""
    await run_in_threadpool(runtime.payees.delete, principal.subject_id, payee_id, ctx)
    return Response(status_code=204)


@router.post(
    "/payees/{payee_id}/payments",
    status_code=201,
    response_model=PaymentOut,
    summary="Pay a payee (instant)",
    responses=problem_responses(400, 404, 409, 422),
)
async def pay_payee(
    payee_id: uuid.UUID,
    body: PayeePaymentIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
    confirmation_id: ConfirmationId = None,
) -> PaymentOut:
    """Like ``POST /v1/payments`` to the payee's account: the same
    Idempotency-Key rules, the same step-up for large amounts, the same refusals."""
    customer_id = principal.subject_id
    payee = await run_in_threadpool(runtime.payees.get, customer_id, payee_id)
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    amount = Money.parse(body.amount, body.currency)
    step_up = await step_up_for_amount(
        runtime,
        principal,
        "payments.payee.pay",
        {
            "from": str(body.from_account_id),
            "payee": str(payee_id),
            "amount": amount.to_decimal_string(),
            "currency": amount.currency,
        },
        amount,
        f"Pay {amount.format()} to {payee.nickname} (****{payee.account_masked[-4:]})",
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
        runtime.payees.pay, customer_id, payee_id, body.from_account_id, draft, idempotency
    )
    if result.replayed:
        response.status_code = 200
    return PaymentOut.of(result.order, customer_id, replayed=result.replayed)


# --- schedules -----------------------------------------------------------------------------


@router.post(
    "/schedules",
    status_code=201,
    response_model=ScheduleOut,
    summary="Schedule a transfer to a payee, once or recurring",
    responses=problem_responses(400, 404, 409, 422),
)
async def create_schedule(
    body: ScheduleIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
    confirmation_id: ConfirmationId = None,
) -> ScheduleOut:
    """A large amount needs the step-up a payment of it would need, proved now
    for every run. A retry with the same Idempotency-Key and body answers the
    first schedule with 200."""
    customer_id = principal.subject_id
    payee = await run_in_threadpool(runtime.payees.get, customer_id, body.payee_id)
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    amount = Money.parse(body.amount, body.currency)
    details: dict[str, Any] = {
        "from": str(body.from_account_id),
        "payee": str(body.payee_id),
        "amount": amount.to_decimal_string(),
        "currency": amount.currency,
        "frequency": body.frequency.value,
        "first_run": body.first_run.isoformat(),
    }
    step_up = await step_up_for_amount(
        runtime,
        principal,
        "payments.schedule.create",
        details,
        amount,
        f"Pay {amount.format()} to {payee.nickname} ({body.frequency.value})",
        confirmation_id,
        ctx,
    )
    schedule_request = ScheduleRequest(
        from_account_id=body.from_account_id,
        payee_id=body.payee_id,
        amount=amount,
        frequency=body.frequency,
        first_run=body.first_run,
        memo=body.memo,
        end_date=body.end_date,
        count=body.count,
    )
    result = await run_in_threadpool(
        lambda: runtime.schedules.create(
            customer_id, schedule_request, idempotency, ctx, step_up=step_up
        )
    )
    if result.replayed:
        response.status_code = 200
    return ScheduleOut.of(result.schedule, replayed=result.replayed)


@router.get(
    "/schedules",
    response_model=list[ScheduleOut],
    summary="My schedules, newest first",
    responses=PAGE_RESPONSES,
)
async def list_schedules(
    principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[ScheduleOut]:
    views = await run_in_threadpool(runtime.schedules.list_schedules, principal.subject_id)
    return [ScheduleOut.of(v) for v in pager.page(views, SCHEDULES_ORDER)]


@router.get(
    "/schedules/{schedule_id}",
    response_model=ScheduleOut,
    summary="One of my schedules, with its latest runs",
    responses=problem_responses(404),
)
async def get_schedule(
    schedule_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep
) -> ScheduleOut:
    view = await run_in_threadpool(runtime.schedules.get, principal.subject_id, schedule_id)
    return ScheduleOut.of(view)


@router.post(
    "/schedules/{schedule_id}/cancel",
    response_model=ScheduleOut,
    summary="Cancel a schedule for good",
    responses=problem_responses(404, 409),
)
async def cancel_schedule(
    schedule_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> ScheduleOut:
    view = await run_in_threadpool(runtime.schedules.cancel, principal.subject_id, schedule_id, ctx)
    return ScheduleOut.of(view)


@router.post(
    "/schedules/{schedule_id}/resume",
    response_model=ScheduleOut,
    summary="Resume a schedule paused after failed runs",
    responses=problem_responses(404, 409),
)
async def resume_schedule(
    schedule_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep, ctx: AuditCtx
) -> ScheduleOut:
    """It goes on from its first run not yet due; 409 ``schedule-state`` unless paused."""
    view = await run_in_threadpool(runtime.schedules.resume, principal.subject_id, schedule_id, ctx)
    return ScheduleOut.of(view)

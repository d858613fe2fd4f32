"""Merchants and QR payments (``docs/payments.md``, "Merchants and QR payments").

Three kinds of caller:

- the owner, a signed-in customer: onboards a shop with one of their own
  accounts, makes QR codes, sees and refunds its payments (``/v1/merchants``);
  any customer pays a scanned QR code (``/v1/qr-payments``) or asks for a
  one-time payment code to show at a till (``/v1/payment-codes``);
- bank staff with ``partners.manage``: approve a merchant with the partner key
  of its point of sale (``/v1/admin/merchants``);
- the point of sale, a signed partner request with the ``merchant`` scope:
  makes QR codes, charges payment codes, sees and refunds payments
  (``/v1/partner/merchants``).

Another customer's or another key's merchant answers 404, like one that does
not exist. Every POST takes an ``Idempotency-Key``: the same key and body
answer the first result again (200, ``replayed``), the same key with another
body is 409. The use cases are :mod:`zhifu.merchants.service`'s.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zhifu.api.auth import AuditCtx, CurrentCustomer, CurrentPartner, require_permission
from zhifu.api.deps import RuntimeDep
from zhifu.api.pagination import PAGE_RESPONSES, PageQuery, by_id
from zhifu.api.params import ConfirmationId, IdempotencyKey, money_text
from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.api.routers.payments import PaymentOut, idempotency_for, step_up_for_amount
from zhifu.identity.access import Permission, Principal
from zhifu.merchants import errors as merchants_errors
from zhifu.merchants.model import (
    ALTERNATE_CITY_CHARS_MAX,
    ALTERNATE_NAME_CHARS_MAX,
    DYNAMIC_QR_TTL_S_MAX,
    DYNAMIC_QR_TTL_S_MIN,
    MERCHANTS_PAGE_DEFAULT,
    MERCHANTS_PAGE_MAX,
    ORDER_REF_CHARS_MAX,
    PAYMENT_CODE_TEXT_CHARS_MAX,
    PAYMENT_CODE_TTL_S,
    PAYMENTS_PAGE_DEFAULT,
    PAYMENTS_PAGE_MAX,
    TERMINAL_LABEL_CHARS_MAX,
    TEXT_INPUT_CHARS_MAX,
    MerchantStatus,
    QrKind,
    QrRequest,
    check_code_cap,
    check_reference,
)
from zhifu.merchants.service import (
    MERCHANT_SCOPE,
    Caller,
    MerchantView,
    NewPaymentCode,
    Onboarding,
    PaymentsPage,
    QrCodeView,
)
from zhifu.money import AMOUNT_TEXT_LENGTH_MAX, Money
from zhifu.payments import errors as payments_errors
from zhifu.payments.emvco import PAYLOAD_LENGTH_MAX
from zhifu.payments.model import (
    MEMO_CHARS_MAX,
    needs_step_up,
)
from zhifu.payments.qr_image import (
    IMAGE_BYTES_MAX,
    SCALE_DEFAULT,
    SCALE_MAX,
    SCALE_MIN,
    render_png,
    render_svg,
)
from zhifu.payments.service import Idempotency, OrderView, PaymentResult

register_error_mapping(merchants_errors.MerchantsError, 422, "invalid-input", "Invalid input")
for _not_found in (merchants_errors.MerchantNotFoundError, merchants_errors.QrCodeNotFoundError):
    register_error_mapping(_not_found, 404, "not-found", "Not found")
register_error_mapping(
    merchants_errors.MerchantStateError, 409, "merchant-state", "Not allowed in this status"
)
register_error_mapping(merchants_errors.MerchantQuotaError, 409, "quota-exceeded", "Too many")
register_error_mapping(merchants_errors.ScopeMissingError, 403, "forbidden", "Forbidden")
register_error_mapping(merchants_errors.QrCodeExpiredError, 409, "qr-code-expired", "Expired")
register_error_mapping(merchants_errors.QrCodeUsedError, 409, "qr-code-used", "Already paid")
register_error_mapping(
    merchants_errors.PaymentCodeInvalidError, 422, "payment-code-invalid", "Payment code invalid"
)
register_error_mapping(
    merchants_errors.PaymentCodeCapError, 409, "payment-code-cap", "Over the code's cap"
)
register_error_mapping(
    merchants_errors.CodeGuessesThrottledError, 429, "too-many-attempts", "Too many attempts"
)
register_error_mapping(
    merchants_errors.RefundNotAllowedError, 409, "refund-not-allowed", "Not refundable"
)
register_error_mapping(
    payments_errors.RefundTooLargeError, 409, "refund-too-large", "Refund too large"
)

router = APIRouter(tags=["merchants"], responses=problem_responses(401, 403))

# Base64 of the largest upload decode_image reads.
IMAGE_BASE64_CHARS_MAX: Final = 4 * ((IMAGE_BYTES_MAX + 2) // 3)
IMAGE_MEDIA_TYPES: Final = {"png": "image/png", "svg": "image/svg+xml"}
_IMAGE_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "content": {media: {} for media in IMAGE_MEDIA_TYPES.values()},
        "description": "The code as a PNG or SVG image.",
    },
    **problem_responses(404, 422),
}
PartnersManager = Annotated[Principal, require_permission(Permission.PARTNERS_MANAGE)]
PageLimit = Annotated[int, Query(ge=1, le=PAYMENTS_PAGE_MAX)]
MerchantsLimit = Annotated[int, Query(ge=1, le=MERCHANTS_PAGE_MAX)]


# --- bodies ----------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MerchantIn(_In):
    name: str = Field(
        min_length=1,
        max_length=TEXT_INPUT_CHARS_MAX,
        examples=["GOLDEN DRAGON NOODLES"],
        description="As on the QR code (EMVCo 59): 1 to 25 printable ASCII characters.",
    )
    alternate_name: str | None = Field(
        None,
        max_length=TEXT_INPUT_CHARS_MAX,
        examples=["金龙面馆"],
        description=f"The Chinese name (EMVCo 64): at most {ALTERNATE_NAME_CHARS_MAX}.",
    )
    city: str = Field(
        min_length=1,
        max_length=TEXT_INPUT_CHARS_MAX,
        examples=["SHANGHAI"],
        description="EMVCo 60: 1 to 15 printable ASCII characters.",
    )
    alternate_city: str | None = Field(
        None,
        max_length=TEXT_INPUT_CHARS_MAX,
        examples=["上海"],
        description=f"The Chinese city (EMVCo 64): at most {ALTERNATE_CITY_CHARS_MAX}.",
    )
    mcc: str = Field(
        min_length=1, max_length=8, examples=["5812"], description="ISO 18245 category code."
    )
    settlement_account_id: uuid.UUID = Field(
        description="An open Class I account of yours; the merchant takes its currency."
    )


class ApproveIn(_In):
    partner_key_id: str = Field(
        min_length=1,
        max_length=64,
        description="The key (with the merchant scope) the merchant's point of sale signs with.",
    )


class QrCodeIn(_In):
    kind: QrKind = Field(description="static (the payer enters the amount) or dynamic.")
    amount: str | None = Field(
        None,
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["36.50"],
        description="Dynamic codes only: the amount, in major units of the merchant's currency.",
    )
    order_ref: str | None = Field(
        None,
        max_length=ORDER_REF_CHARS_MAX,
        description="Dynamic codes only: your order reference (EMVCo 62.05).",
    )
    terminal_label: str | None = Field(
        None, max_length=TERMINAL_LABEL_CHARS_MAX, description="The till (EMVCo 62.07)."
    )
    ttl_s: int | None = Field(
        None,
        ge=DYNAMIC_QR_TTL_S_MIN,
        le=DYNAMIC_QR_TTL_S_MAX,
        description="Dynamic codes only: seconds until it expires (default 900).",
    )

    _amount_is_text = field_validator("amount", mode="before")(money_text)


class QrPaymentIn(_In):
    payload: str | None = Field(
        None,
        min_length=1,
        max_length=PAYLOAD_LENGTH_MAX,
        description="The scanned code's text. Give this or image_base64.",
    )
    image_base64: str | None = Field(
        None,
        min_length=1,
        max_length=IMAGE_BASE64_CHARS_MAX,
        description="A photo of the code (PNG, JPEG, WebP or GIF, at most 2 MiB), standard"
        " base64; the bank reads the code.",
    )
    from_account_id: uuid.UUID | None = Field(
        None, description="One of your accounts; default: your default account in the currency."
    )
    from_card_id: uuid.UUID | None = Field(
        None, description="Or one of your debit cards: its account pays."
    )
    amount: str | None = Field(
        None,
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        examples=["36.50"],
        description="Required for a static code; for a dynamic one, if given, its amount.",
    )
    currency: str | None = Field(None, min_length=3, max_length=3, examples=["CNY"])
    memo: str = Field("", max_length=4 * MEMO_CHARS_MAX)

    _amount_is_text = field_validator("amount", mode="before")(money_text)

    @model_validator(mode="after")
    def _one_code(self) -> QrPaymentIn:
        if (self.payload is None) == (self.image_base64 is None):
            raise ValueError("give the code as exactly one of payload or image_base64")
        if self.from_account_id is not None and self.from_card_id is not None:
            raise ValueError("give from_account_id or from_card_id, not both")
        return self


class PaymentCodeIn(_In):
    account_id: uuid.UUID | None = Field(
        None, description="One of your accounts; default: your default account in the currency."
    )
    currency: str = Field("CNY", min_length=3, max_length=3)
    amount_cap: str | None = Field(
        None,
        min_length=1,
        max_length=AMOUNT_TEXT_LENGTH_MAX,
        description="The most a till may charge; default: just under the step-up amount."
        " A cap at or above it needs a second factor.",
    )

    _amount_is_text = field_validator("amount_cap", mode="before")(money_text)


class ChargeIn(_In):
    payment_code: str = Field(
        min_length=1,
        max_length=PAYMENT_CODE_TEXT_CHARS_MAX,
        examples=["886217 4905 3318 2706"],
        description="The 18 digits the customer showed; spaces and hyphens are ignored.",
    )
    amount: str = Field(min_length=1, max_length=AMOUNT_TEXT_LENGTH_MAX, examples=["36.50"])
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    order_ref: str | None = Field(None, max_length=ORDER_REF_CHARS_MAX)
    memo: str = Field("", max_length=4 * MEMO_CHARS_MAX)

    _amount_is_text = field_validator("amount", mode="before")(money_text)


class RefundIn(_In):
    amount: str = Field(min_length=1, max_length=AMOUNT_TEXT_LENGTH_MAX, examples=["10.00"])
    currency: str = Field(min_length=3, max_length=3, examples=["CNY"])
    reason: str = Field("", max_length=4 * MEMO_CHARS_MAX, description="Shown to the payer.")
    refund_ref: str | None = Field(
        None, max_length=ORDER_REF_CHARS_MAX, description="Your own reference for the refund."
    )

    _amount_is_text = field_validator("amount", mode="before")(money_text)


# --- answers ---------------------------------------------------------------------------------


class MerchantOut(BaseModel):
    id: uuid.UUID
    owner_customer_id: uuid.UUID
    name: str
    alternate_name: str | None
    city: str
    alternate_city: str | None
    mcc: str
    country: str
    currency: str
    settlement_account_id: uuid.UUID
    partner_key_id: str | None
    status: MerchantStatus = Field(description="pending until approved, then active.")
    created_ts: int
    approved_ts: int | None
    replayed: bool = False

    @classmethod
    def of(cls, v: MerchantView, *, replayed: bool = False) -> MerchantOut:
        d = v.details
        return cls(
            id=v.id,
            owner_customer_id=v.owner_customer_id,
            name=d.name,
            alternate_name=d.alternate_name,
            city=d.city,
            alternate_city=d.alternate_city,
            mcc=d.mcc,
            country=v.country,
            currency=d.currency,
            settlement_account_id=v.settlement_account_id,
            partner_key_id=v.partner_key_id,
            status=v.status,
            created_ts=v.created_ts,
            approved_ts=v.approved_ts,
            replayed=replayed,
        )


class MerchantsPageOut(BaseModel):
    merchants: list[MerchantOut]
    next_before: uuid.UUID | None = Field(
        description="Pass as ?before= for the next, older page; null on the last page."
    )


class QrCodeOut(BaseModel):
    id: uuid.UUID
    merchant_id: uuid.UUID
    kind: QrKind
    status: str = Field(description="active, or used (a dynamic code that was paid).")
    payload: str = Field(description="The EMVCo text to draw as a QR code.")
    amount: str | None
    currency: str
    order_ref: str | None
    terminal_label: str | None
    expires_ts: int | None
    used_payment_id: uuid.UUID | None
    created_ts: int
    image_png: str = Field(description="Where to get the code as a PNG image.")
    image_svg: str = Field(description="Where to get the code as an SVG image.")
    replayed: bool = False

    @classmethod
    def of(cls, v: QrCodeView, base: str, *, replayed: bool = False) -> QrCodeOut:
        image = f"{base}/{v.merchant_id}/qr-codes/{v.id}/image"
        return cls(
            id=v.id,
            merchant_id=v.merchant_id,
            kind=v.kind,
            status=v.status.value,
            payload=v.payload,
            amount=None if v.amount is None else v.amount.to_decimal_string(),
            currency=v.currency,
            order_ref=v.order_ref,
            terminal_label=v.terminal_label,
            expires_ts=v.expires_ts,
            used_payment_id=v.used_order_id,
            created_ts=v.created_ts,
            image_png=f"{image}?format=png",
            image_svg=f"{image}?format=svg",
            replayed=replayed,
        )


class PaymentCodeOut(BaseModel):
    id: uuid.UUID
    code: str | None = Field(
        description="The 18 digits to show as a barcode or QR code. Only in the answer that"
        " made the code: a retry with the same key answers null (the bank keeps no copy)."
    )
    qr_svg: str | None = Field(description="The digits as an SVG QR code (with code only).")
    account_id: uuid.UUID
    amount_cap: str
    currency: str
    status: str
    expires_ts: int
    ttl_s: int = PAYMENT_CODE_TTL_S
    replayed: bool = False

    @classmethod
    def of(cls, new: NewPaymentCode) -> PaymentCodeOut:
        v = new.view
        return cls(
            id=v.id,
            code=new.code,
            qr_svg=None if new.code is None else render_svg(new.code, scale=4),
            account_id=v.account_id,
            amount_cap=v.amount_cap.to_decimal_string(),
            currency=v.amount_cap.currency,
            status=v.status.value,
            expires_ts=v.expires_ts,
            replayed=new.replayed,
        )


class MerchantPaymentsOut(BaseModel):
    payments: list[PaymentOut] = Field(description="Payments and refunds, newest first.")
    next_before: uuid.UUID | None = Field(
        description="Pass as ?before= for the next, older page; null on the last page."
    )

    @classmethod
    def of(cls, page: PaymentsPage) -> MerchantPaymentsOut:
        return cls(payments=[merchant_side(v) for v in page.orders], next_before=page.next_before)


def merchant_side(v: OrderView, *, replayed: bool = False) -> PaymentOut:
    """An order as the merchant sees it: the receiving side of a payment, the
    paying side of a refund."""
    viewer = v.payee_customer_id if v.refund_of is None else v.payer_customer_id
    return PaymentOut.of(v, viewer, replayed=replayed)


# --- helpers ---------------------------------------------------------------------------------


async def merchant_partner(principal: CurrentPartner) -> Principal:
    """A signed partner request of a key with the ``merchant`` scope."""
    if MERCHANT_SCOPE not in principal.scopes:
        raise merchants_errors.ScopeMissingError(
            f"this partner key lacks the {MERCHANT_SCOPE!r} scope that merchant endpoints need"
        )
    return principal


MerchantPartner = Annotated[Principal, Depends(merchant_partner)]


def _answer(response: Response, replayed: bool) -> None:
    if replayed:
        response.status_code = 200


def _image(view: QrCodeView, image_format: str, scale: int) -> Response:
    if image_format == "svg":
        content: bytes | str = render_svg(view.payload, scale=scale)
    else:
        content = render_png(view.payload, scale=scale)
    return Response(
        content=content,
        media_type=IMAGE_MEDIA_TYPES[image_format],
        headers={"Content-Disposition": f'inline; filename="qr-{view.id}.{image_format}"'},
    )


ImageFormat = Annotated[Literal["png", "svg"], Query(alias="format")]
ImageScale = Annotated[int, Query(ge=SCALE_MIN, le=SCALE_MAX, description="Pixels per module.")]


# --- the owner: a customer -------------------------------------------------------------------


@router.post(
    "/v1/merchants",
    status_code=201,
    response_model=MerchantOut,
    summary="Onboard a shop as a merchant (pending until the bank approves it)",
    responses=problem_responses(400, 404, 409, 422),
)
async def onboard_merchant(
    body: MerchantIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
) -> MerchantOut:
    """The merchant settles into the account given and takes its currency. It
    takes payments once bank staff approve it with its point of sale's key."""
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    onboarding = Onboarding(
        name=body.name,
        city=body.city,
        mcc=body.mcc,
        settlement_account_id=body.settlement_account_id,
        alternate_name=body.alternate_name,
        alternate_city=body.alternate_city,
    )
    result = await run_in_threadpool(
        runtime.merchants.onboard, principal.subject_id, onboarding, idempotency, ctx
    )
    _answer(response, result.replayed)
    return MerchantOut.of(result.merchant, replayed=result.replayed)


# The store's order (time-ordered ids: oldest first). Read whole and sliced by
# the pager: a customer has at most MERCHANTS_PER_CUSTOMER_MAX merchants.
MERCHANTS_ORDER: Final = by_id("merchants")


@router.get(
    "/v1/merchants",
    response_model=list[MerchantOut],
    summary="My merchants, oldest first",
    responses=PAGE_RESPONSES,
)
async def my_merchants(
    principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[MerchantOut]:
    views = await run_in_threadpool(runtime.merchants.merchants_of, principal.subject_id)
    return [MerchantOut.of(v) for v in pager.page(views, MERCHANTS_ORDER)]


@router.get(
    "/v1/merchants/{merchant_id}",
    response_model=MerchantOut,
    summary="One of my merchants",
    responses=problem_responses(404),
)
async def my_merchant(
    merchant_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep
) -> MerchantOut:
    caller = Caller.customer(principal.subject_id)
    return MerchantOut.of(await run_in_threadpool(runtime.merchants.merchant, caller, merchant_id))


async def _create_qr_code(
    caller: Caller,
    merchant_id: uuid.UUID,
    body: QrCodeIn,
    idempotency: Idempotency,
    runtime: Any,
    ctx: Any,
    response: Response,
    base: str,
) -> QrCodeOut:
    amount = None
    if body.amount is not None:  # in the merchant's currency (404 for another's merchant)
        merchant = await run_in_threadpool(runtime.merchants.merchant, caller, merchant_id)
        amount = Money.parse(body.amount, merchant.details.currency)
    request = QrRequest(body.kind, amount, body.order_ref, body.terminal_label, body.ttl_s)
    result = await run_in_threadpool(
        runtime.merchants.create_qr_code, caller, merchant_id, request, idempotency, ctx
    )
    _answer(response, result.replayed)
    return QrCodeOut.of(result.code, base, replayed=result.replayed)


@router.post(
    "/v1/merchants/{merchant_id}/qr-codes",
    status_code=201,
    response_model=QrCodeOut,
    summary="Make a static or dynamic QR code for my merchant",
    responses=problem_responses(400, 404, 409, 422),
)
async def owner_qr_code(
    merchant_id: uuid.UUID,
    body: QrCodeIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
) -> QrCodeOut:
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    caller = Caller.customer(principal.subject_id)
    return await _create_qr_code(
        caller, merchant_id, body, idempotency, runtime, ctx, response, "/v1/merchants"
    )


@router.get(
    "/v1/merchants/{merchant_id}/qr-codes/{qr_code_id}/image",
    response_class=Response,
    summary="One of my merchant's QR codes as an image",
    responses=_IMAGE_RESPONSES,
)
async def owner_qr_image(
    merchant_id: uuid.UUID,
    qr_code_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    image_format: ImageFormat = "png",
    scale: ImageScale = SCALE_DEFAULT,
) -> Response:
    caller = Caller.customer(principal.subject_id)
    view = await run_in_threadpool(runtime.merchants.qr_code, caller, merchant_id, qr_code_id)
    return await run_in_threadpool(_image, view, image_format, scale)


@router.get(
    "/v1/merchants/{merchant_id}/payments",
    response_model=MerchantPaymentsOut,
    summary="My merchant's payments and refunds, newest first",
    responses=problem_responses(404),
)
async def owner_payments(
    merchant_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    limit: PageLimit = PAYMENTS_PAGE_DEFAULT,
    before: uuid.UUID | None = None,
) -> MerchantPaymentsOut:
    caller = Caller.customer(principal.subject_id)
    page = await run_in_threadpool(
        runtime.merchants.payments_page, caller, merchant_id, before, limit
    )
    return MerchantPaymentsOut.of(page)


@router.get(
    "/v1/merchants/{merchant_id}/payments/{payment_id}",
    response_model=PaymentOut,
    summary="One payment or refund of my merchant, with its history",
    responses=problem_responses(404),
)
async def owner_payment(
    merchant_id: uuid.UUID, payment_id: uuid.UUID, principal: CurrentCustomer, runtime: RuntimeDep
) -> PaymentOut:
    caller = Caller.customer(principal.subject_id)
    view = await run_in_threadpool(runtime.merchants.payment, caller, merchant_id, payment_id)
    return merchant_side(view)


@router.post(
    "/v1/merchants/{merchant_id}/payments/{payment_id}/refunds",
    status_code=201,
    response_model=PaymentOut,
    summary="Refund all or part of a payment to my merchant",
    responses=problem_responses(400, 404, 409, 422),
)
async def owner_refund(
    merchant_id: uuid.UUID,
    payment_id: uuid.UUID,
    body: RefundIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
    confirmation_id: ConfirmationId = None,
) -> PaymentOut:
    """From the merchant's settlement account back to the account that paid. A
    large amount needs a second factor, as a payment does."""
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    amount = Money.parse(body.amount, body.currency)
    check_reference(body.refund_ref, "refund_ref", ORDER_REF_CHARS_MAX)
    caller = Caller.customer(principal.subject_id)
    if needs_step_up(amount):  # a retry of a confirmed refund needs no new confirmation
        replay = await run_in_threadpool(runtime.payments.find_replay, idempotency)
        if replay is not None:
            return merchant_side(replay.order, replayed=_replayed(response))
    await run_in_threadpool(runtime.merchants.merchant, caller, merchant_id)  # 404 first
    step_up = await step_up_for_amount(
        runtime,
        principal,
        "merchants.refund",
        {
            "merchant": str(merchant_id),
            "payment": str(payment_id),
            "amount": amount.to_decimal_string(),
            "currency": amount.currency,
        },
        amount,
        f"Refund {amount.format()} of payment {payment_id}",
        confirmation_id,
        ctx,
    )
    result: PaymentResult = await run_in_threadpool(
        runtime.merchants.refund,
        caller,
        merchant_id,
        payment_id,
        amount,
        body.reason,
        body.refund_ref,
        step_up,
        idempotency,
    )
    _answer(response, result.replayed)
    return merchant_side(result.order, replayed=result.replayed)


def _replayed(response: Response) -> bool:
    response.status_code = 200
    return True


# --- any customer: paying a QR code, payment codes -----------------------------------------------


@router.post(
    "/v1/qr-payments",
    status_code=201,
    response_model=PaymentOut,
    summary="Pay a merchant's QR code (its text, or a photo of it)",
    responses=problem_responses(400, 404, 409, 422),
)
async def pay_qr_code(
    body: QrPaymentIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
    confirmation_id: ConfirmationId = None,
) -> PaymentOut:
    """Settles at once. A dynamic code pays once and until it expires (409
    ``qr-code-used``, ``qr-code-expired``); a code this bank did not issue, or
    one altered since, is refused (422). A large amount needs a second factor."""
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    payload = body.payload
    if payload is None:
        payload = await run_in_threadpool(
            runtime.merchants.payload_of_image, _image_bytes(body.image_base64 or "")
        )
    plan = runtime.merchants.scan(payload, body.amount, body.currency)
    customer_id = principal.subject_id
    if needs_step_up(plan.amount):  # a retry of a confirmed payment needs no new confirmation
        replay = await run_in_threadpool(runtime.payments.find_replay, idempotency)
        if replay is not None:
            return PaymentOut.of(replay.order, customer_id, replayed=_replayed(response))
    step_up = await step_up_for_amount(
        runtime,
        principal,
        "merchants.qr_payment",
        {
            "merchant": str(plan.ids.merchant_id),
            "qr_code": str(plan.ids.code_id),
            "amount": plan.amount.to_decimal_string(),
            "currency": plan.amount.currency,
        },
        plan.amount,
        f"Pay {plan.amount.format()} to {plan.merchant_name}",
        confirmation_id,
        ctx,
    )
    result: PaymentResult = await run_in_threadpool(
        lambda: runtime.merchants.pay_scanned(
            customer_id,
            plan,
            body.from_account_id,
            body.memo,
            step_up,
            idempotency,
            from_card_id=body.from_card_id,
        )
    )
    _answer(response, result.replayed)
    return PaymentOut.of(result.order, customer_id, replayed=result.replayed)


def _image_bytes(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise merchants_errors.InvalidMerchantError(
            "image_base64 must be standard base64 (A-Z, a-z, 0-9, '+', '/', '=' padding)",
            field="image_base64",
        ) from None


@router.post(
    "/v1/payment-codes",
    status_code=201,
    response_model=PaymentCodeOut,
    summary="A one-time payment code to show at a till (60 seconds, one payment)",
    responses=problem_responses(400, 404, 409, 422),
)
async def new_payment_code(
    body: PaymentCodeIn,
    request: Request,
    response: Response,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
    confirmation_id: ConfirmationId = None,
) -> PaymentCodeOut:
    """The merchant's point of sale charges it once, up to the cap. A cap at or
    above the step-up amount needs a second factor now."""
    idempotency = idempotency_for(principal, idempotency_key, request, body)
    cap = check_code_cap(
        None if body.amount_cap is None else Money.parse(body.amount_cap, body.currency),
        body.currency,
    )
    step_up = await step_up_for_amount(
        runtime,
        principal,
        "merchants.payment_code",
        {
            "account": str(body.account_id),
            "amount_cap": cap.to_decimal_string(),
            "currency": cap.currency,
        },
        cap,
        f"Allow a payment code of up to {cap.format()}",
        confirmation_id,
        ctx,
    )
    new = await run_in_threadpool(
        runtime.merchants.create_payment_code,
        principal.subject_id,
        body.account_id,
        cap,
        step_up,
        idempotency,
        ctx,
    )
    _answer(response, new.replayed)
    return PaymentCodeOut.of(new)


# --- bank staff -------------------------------------------------------------------------------


@router.get(
    "/v1/admin/merchants",
    response_model=MerchantsPageOut,
    summary="Merchants, newest first (pending ones wait for approval)",
)
async def staff_merchants(
    staff: PartnersManager,
    runtime: RuntimeDep,
    status: MerchantStatus | None = None,
    limit: MerchantsLimit = MERCHANTS_PAGE_DEFAULT,
    before: uuid.UUID | None = None,
) -> MerchantsPageOut:
    page = await run_in_threadpool(runtime.merchants.merchants_page, status, before, limit)
    return MerchantsPageOut(
        merchants=[MerchantOut.of(v) for v in page.merchants], next_before=page.next_before
    )


@router.post(
    "/v1/admin/merchants/{merchant_id}/approve",
    response_model=MerchantOut,
    summary="Approve a merchant with the partner key of its point of sale",
    responses=problem_responses(404, 409, 422),
)
async def approve_merchant(
    merchant_id: uuid.UUID,
    body: ApproveIn,
    staff: PartnersManager,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> MerchantOut:
    """Idempotent by nature: approving again with the same key answers the
    same; with another key is 409 ``merchant-state``."""
    view = await run_in_threadpool(runtime.merchants.approve, merchant_id, body.partner_key_id, ctx)
    return MerchantOut.of(view)


# --- the point of sale: a signed partner request ------------------------------------------------


@router.post(
    "/v1/partner/merchants/{merchant_id}/qr-codes",
    status_code=201,
    response_model=QrCodeOut,
    summary="Make a static or dynamic QR code (point of sale)",
    responses=problem_responses(400, 404, 409, 422),
)
async def partner_qr_code(
    merchant_id: uuid.UUID,
    body: QrCodeIn,
    request: Request,
    response: Response,
    partner: MerchantPartner,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    idempotency_key: IdempotencyKey = None,
) -> QrCodeOut:
    idempotency = idempotency_for(partner, idempotency_key, request, body)
    caller = Caller.partner(partner.id)
    return await _create_qr_code(
        caller, merchant_id, body, idempotency, runtime, ctx, response, "/v1/partner/merchants"
    )


@router.get(
    "/v1/partner/merchants/{merchant_id}/qr-codes/{qr_code_id}/image",
    response_class=Response,
    summary="A QR code as an image (point of sale)",
    responses=_IMAGE_RESPONSES,
)
async def partner_qr_image(
    merchant_id: uuid.UUID,
    qr_code_id: uuid.UUID,
    partner: MerchantPartner,
    runtime: RuntimeDep,
    image_format: ImageFormat = "png",
    scale: ImageScale = SCALE_DEFAULT,
) -> Response:
    caller = Caller.partner(partner.id)
    view = await run_in_threadpool(runtime.merchants.qr_code, caller, merchant_id, qr_code_id)
    return await run_in_threadpool(_image, view, image_format, scale)


@router.post(
    "/v1/partner/merchants/{merchant_id}/charges",
    status_code=201,
    response_model=PaymentOut,
    summary="Charge a customer's payment code (point of sale)",
    responses=problem_responses(400, 404, 409, 422, 429),
)
async def charge_payment_code(
    merchant_id: uuid.UUID,
    body: ChargeIn,
    request: Request,
    response: Response,
    partner: MerchantPartner,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> PaymentOut:
    """Settles at once and uses the code up: a code pays once, whichever till
    presents it first. An unusable code is 422 ``payment-code-invalid``; after
    20 of them in a minute the key waits (429 with Retry-After)."""
    idempotency = idempotency_for(partner, idempotency_key, request, body)
    amount = Money.parse(body.amount, body.currency)
    check_reference(body.order_ref, "order_ref", ORDER_REF_CHARS_MAX)
    result: PaymentResult = await run_in_threadpool(
        runtime.merchants.charge,
        partner.id,
        merchant_id,
        body.payment_code,
        amount,
        body.order_ref,
        body.memo,
        idempotency,
    )
    _answer(response, result.replayed)
    return merchant_side(result.order, replayed=result.replayed)


@router.get(
    "/v1/partner/merchants/{merchant_id}/payments",
    response_model=MerchantPaymentsOut,
    summary="The merchant's payments and refunds, newest first (point of sale)",
    responses=problem_responses(404),
)
async def partner_payments(
    merchant_id: uuid.UUID,
    partner: MerchantPartner,
    runtime: RuntimeDep,
    limit: PageLimit = PAYMENTS_PAGE_DEFAULT,
    before: uuid.UUID | None = None,
) -> MerchantPaymentsOut:
    caller = Caller.partner(partner.id)
    page = await run_in_threadpool(
        runtime.merchants.payments_page, caller, merchant_id, before, limit
    )
    return MerchantPaymentsOut.of(page)


@router.get(
    "/v1/partner/merchants/{merchant_id}/payments/{payment_id}",
    response_model=PaymentOut,
    summary="One payment or refund, with its history (point of sale)",
    responses=problem_responses(404),
)
async def partner_payment(
    merchant_id: uuid.UUID, payment_id: uuid.UUID, partner: MerchantPartner, runtime: RuntimeDep
) -> PaymentOut:
    caller = Caller.partner(partner.id)
    view = await run_in_threadpool(runtime.merchants.payment, caller, merchant_id, payment_id)
    return merchant_side(view)


@router.post(
    "/v1/partner/merchants/{merchant_id}/payments/{payment_id}/refunds",
    status_code=201,
    response_model=PaymentOut,
    summary="Refund all or part of a payment (point of sale)",
    responses=problem_responses(400, 404, 409, 422),
)
async def partner_refund(
    merchant_id: uuid.UUID,
    payment_id: uuid.UUID,
    body: RefundIn,
    request: Request,
    response: Response,
    partner: MerchantPartner,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> PaymentOut:
    """The signed request authorises the refund, whatever its amount."""
    idempotency = idempotency_for(partner, idempotency_key, request, body)
    amount = Money.parse(body.amount, body.currency)
    check_reference(body.refund_ref, "refund_ref", ORDER_REF_CHARS_MAX)
    result: PaymentResult = await run_in_threadpool(
        runtime.merchants.refund,
        Caller.partner(partner.id),
        merchant_id,
        payment_id,
        amount,
        body.reason,
        body.refund_ref,
        None,
        idempotency,
    )
    _answer(response, result.replayed)
    return merchant_side(result.order, replayed=result.replayed)

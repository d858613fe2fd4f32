"""Transaction history, CSV statements and electronic receipts (``docs/payments.md``,
"History, statements and receipts").

Every use case lives in :class:`zhifu.payments.history.HistoryService`; this
module maps HTTP to it. A customer reads the history of their own accounts and
payments only: another customer's account or payment answers 404, exactly like
one that does not exist. Lists are newest first and paginated with an opaque
``cursor`` (``next_cursor`` of the page before); amounts are decimal strings.
A receipt is JSON signed with the platform's Ed25519 key, or a printable HTML
page (``Accept: text/html`` or ``?format=html``, in Chinese or English by
``Accept-Language`` or ``?lang=``); ``GET /v1/receipts/public-key`` publishes
the key that verifies it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

from zhifu.accounts.model import Direction
from zhifu.api.auth import CurrentCustomer
from zhifu.api.deps import RuntimeDep
from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.payments.history import (
    COUNTERPARTY_FILTER_CHARS_MAX,
    CSV_COLUMNS,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    RECEIPT_HTML_CSP,
    RECEIPT_SIGNATURE_DOMAIN,
    SIGNATURE_ALGORITHM,
    TIME_TEXT_CHARS_MAX,
    EntryType,
    ExportTooLargeError,
    HistoryEntry,
    HistoryPage,
    HistoryRequest,
    InvalidHistoryCursorError,
    InvalidHistoryFilterError,
    Language,
    ReceiptNotAvailableError,
    SignedReceipt,
    csv_chunks,
    local_time,
    receipt_html,
)
from zhifu.payments.model import OrderState, PaymentKind
from zhifu.security.signing import key_id_for, public_key_from_base64

register_error_mapping(InvalidHistoryFilterError, 422, "invalid-input", "Invalid input")
register_error_mapping(InvalidHistoryCursorError, 400, "invalid-cursor", "Invalid cursor")
register_error_mapping(ExportTooLargeError, 422, "export-too-large", "Export too large")
register_error_mapping(ReceiptNotAvailableError, 409, "payment-state", "Not allowed in this state")

router = APIRouter(prefix="/v1")

# Only this much of an Accept or Accept-Language header is read.
NEGOTIATION_HEADER_CHARS_MAX: Final = 1024
# Query text is checked exactly by the payments context; these only stop absurd input.
_TEXT_QUERY_CHARS_MAX: Final = 4 * max(COUNTERPARTY_FILTER_CHARS_MAX, TIME_TEXT_CHARS_MAX)
DEFAULT_LANGUAGE: Final[Language] = "zh-CN"
VARY_RECEIPT: Final = "Accept, Accept-Language"
_CUSTOMER_PROBLEMS: Final = problem_responses(401, 403)


# --- query parameters -----------------------------------------------------------------------


def _text(description: str, alias: str | None = None) -> Any:
    return Query(alias=alias, max_length=_TEXT_QUERY_CHARS_MAX, description=description)


async def common_filters(
    from_: Annotated[
        str | None,
        _text(
            "First Shanghai calendar day (2024-05-01) or timestamp with offset"
            " (2024-05-01T10:00:00+08:00), inclusive.",
            alias="from",
        ),
    ] = None,
    to: Annotated[str | None, _text("Last day or timestamp, inclusive.")] = None,
    min_amount: Annotated[str | None, _text("Smallest amount, decimal in major units.")] = None,
    max_amount: Annotated[str | None, _text("Largest amount, decimal in major units.")] = None,
    counterparty: Annotated[
        str | None,
        _text(
            f"Part of the other side's name or account label (at most"
            f" {COUNTERPARTY_FILTER_CHARS_MAX} characters; A-Z match a-z)."
        ),
    ] = None,
    status: Annotated[
        list[OrderState] | None, Query(description="Payment states; repeat for several.")
    ] = None,
    direction: Annotated[Direction | None, Query(description="incoming or outgoing.")] = None,
) -> HistoryRequest:
    return HistoryRequest(
        from_text=from_,
        to_text=to,
        min_amount=min_amount,
        max_amount=max_amount,
        counterparty=counterparty,
        states=frozenset(status or ()),
        direction=direction,
    )


CommonFilters = Annotated[HistoryRequest, Depends(common_filters)]


async def account_filters(
    common: CommonFilters,
    type_: Annotated[
        list[EntryType] | None,
        Query(alias="type", description="Entry types; repeat for several."),
    ] = None,
) -> HistoryRequest:
    return _with(common, types=frozenset(type_ or ()))


async def payment_filters(
    common: CommonFilters,
    type_: Annotated[
        list[PaymentKind] | None,
        Query(alias="type", description="Payment kinds; repeat for several."),
    ] = None,
    currency: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=3,
            description="Only payments in this currency; needed with min_amount or max_amount.",
        ),
    ] = None,
) -> HistoryRequest:
    types = frozenset(EntryType(kind.value) for kind in type_ or ())
    return _with(common, types=types, currency=currency)


def _with(request: HistoryRequest, **changes: Any) -> HistoryRequest:
    values = {name: getattr(request, name) for name in HistoryRequest.__dataclass_fields__}
    return HistoryRequest(**{**values, **changes})


AccountFilters = Annotated[HistoryRequest, Depends(account_filters)]
PaymentFilters = Annotated[HistoryRequest, Depends(payment_filters)]
Cursor = Annotated[
    str | None, Query(description="next_cursor of the page before; leave out for the first.")
]
Limit = Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX, description="Entries per page.")]


# --- responses ------------------------------------------------------------------------------


class HistoryEntryOut(BaseModel):
    id: uuid.UUID = Field(description="The payment's id, or the ledger transfer's for cash.")
    type: EntryType
    direction: Direction = Field(description="From the point of view of the caller's account.")
    status: OrderState
    account_id: uuid.UUID = Field(description="The caller's account on this side.")
    counterparty: str
    memo: str
    amount: str = Field(description="Decimal in major units, never negative.")
    currency: str
    balance_after: str | None = Field(
        description="The account's posted balance right after this movement."
    )
    time: str = Field(description="Shanghai local time, ISO 8601.")
    ts: int = Field(description="Microseconds since the Unix epoch.")
    payment_id: uuid.UUID | None
    ledger_transfer_id: uuid.UUID | None

    @classmethod
    def of(cls, entry: HistoryEntry) -> HistoryEntryOut:
        return cls(
            id=entry.id,
            type=entry.type,
            direction=entry.direction,
            status=entry.state,
            account_id=entry.account_id,
            counterparty=entry.counterparty,
            memo=entry.memo,
            amount=entry.amount.to_decimal_string(),
            currency=entry.amount.currency,
            balance_after=None
            if entry.balance_after is None
            else entry.balance_after.to_decimal_string(),
            time=local_time(entry.ts),
            ts=entry.ts,
            payment_id=entry.payment_id,
            ledger_transfer_id=entry.ledger_transfer_id,
        )


class HistoryPageOut(BaseModel):
    items: list[HistoryEntryOut]
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null at the end."
    )

    @classmethod
    def of(cls, page: HistoryPage) -> HistoryPageOut:
        return cls(
            items=[HistoryEntryOut.of(e) for e in page.entries], next_cursor=page.next_cursor
        )


class PartyOut(BaseModel):
    name: str
    account: str | None = Field(description="Masked account number, when it is one of ours.")


class BankOut(BaseModel):
    code: str
    name: str
    name_zh: str


class ReceiptDocumentOut(BaseModel):
    """The signed part: verify it exactly as received (see the public key endpoint)."""

    version: int
    bank: BankOut
    receipt_number: str
    payment_id: str
    type: str
    state: str
    amount: str
    refunded: str
    currency: str
    payer: PartyOut
    payee: PartyOut
    memo: str
    created_at: str
    settled_at: str
    settled_ts: int
    returned_at: str | None
    ledger_transfer_id: str | None
    as_of_ts: int


class SignatureOut(BaseModel):
    algorithm: str
    key_id: str
    public_key: str = Field(description="Standard base64 of the raw Ed25519 public key.")
    value: str = Field(description="Standard base64 of the 64-byte signature.")


class ReceiptOut(BaseModel):
    receipt: ReceiptDocumentOut
    signature: SignatureOut

    @classmethod
    def of(cls, signed: SignedReceipt) -> ReceiptOut:
        return cls(
            receipt=ReceiptDocumentOut.model_validate(dict(signed.document)),
            signature=SignatureOut(
                algorithm=signed.algorithm,
                key_id=signed.key_id,
                public_key=signed.public_key,
                value=signed.signature,
            ),
        )


class PublicKeyOut(BaseModel):
    key_id: str
    public_key: str = Field(description="Standard base64 of the raw Ed25519 public key.")


class ReceiptKeysOut(BaseModel):
    algorithm: str
    signature_domain: str = Field(
        description="Signed bytes = this text (UTF-8) + the receipt's canonical JSON."
    )
    current: PublicKeyOut
    previous: list[PublicKeyOut] = Field(
        description="Keys of earlier receipts, still trusted after a key rotation."
    )


# --- negotiation ----------------------------------------------------------------------------


def _weighted(header: str | None) -> list[tuple[str, float]]:
    """The items of an Accept-style header with their q values, best first
    (ties keep the header's order). Malformed q values count as 0."""
    items: list[tuple[str, float]] = []
    for part in (header or "")[:NEGOTIATION_HEADER_CHARS_MAX].split(","):
        name, *params = (p.strip() for p in part.split(";"))
        if not name:
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        items.append((name.lower(), weight))
    return sorted(items, key=lambda item: -item[1])


def wants_html(format_: str | None, accept: str | None) -> bool:
    """``?format`` decides; else HTML only when text/html is asked for and
    JSON is not liked as much (an API client's ``*/*`` gets JSON)."""
    if format_ is not None:
        return format_ == "html"
    weights = dict(reversed(_weighted(accept)))  # the best weight of each name
    html_q = weights.get("text/html", 0.0)
    json_q = max(
        weights.get("application/json", 0.0),
        weights.get("application/*", 0.0),
        weights.get("*/*", 0.0),
    )
    return html_q > 0 and html_q > json_q


def pick_language(lang: Language | None, accept_language: str | None) -> Language:
    """``?lang`` decides; else the first of zh and en the header prefers; else Chinese."""
    if lang is not None:
        return lang
    for name, weight in _weighted(accept_language):
        if weight <= 0:
            continue
        primary = name.split("-")[0]
        if primary == "zh":
            return "zh-CN"
        if primary == "en":
            return "en"
    return DEFAULT_LANGUAGE


# --- routes ---------------------------------------------------------------------------------


@router.get(
    "/accounts/{account_id}/transactions",
    response_model=HistoryPageOut,
    tags=["accounts"],
    summary="One of my accounts' movements, newest first",
    responses={**_CUSTOMER_PROBLEMS, **problem_responses(400, 404, 422)},
)
async def account_transactions(
    account_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    filters: AccountFilters,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE_DEFAULT,
) -> HistoryPageOut:
    """Payments out and in, and teller cash deposits and withdrawals, each with
    the balance it left. A mangled cursor is 400 ``invalid-cursor``."""
    page = await run_in_threadpool(
        runtime.history.account_history, principal.subject_id, account_id, filters, cursor, limit
    )
    return HistoryPageOut.of(page)


@router.get(
    "/accounts/{account_id}/transactions.csv",
    response_class=StreamingResponse,
    tags=["accounts"],
    summary="One of my accounts' movements as a CSV file",
    responses={
        200: {
            "description": "UTF-8 CSV with a byte-order mark and a header row: "
            + ", ".join(CSV_COLUMNS),
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
        **_CUSTOMER_PROBLEMS,
        **problem_responses(404, 422),
    },
)
async def account_transactions_csv(
    account_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    filters: AccountFilters,
) -> StreamingResponse:
    """The same filters as the list; every matching row, newest first, or 422
    ``export-too-large`` when there are too many for one file."""
    export = await run_in_threadpool(
        runtime.history.account_export, principal.subject_id, account_id, filters
    )
    chunks: Iterator[str] = csv_chunks(export.entries)
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


@router.get(
    "/payments",
    response_model=HistoryPageOut,
    tags=["payments"],
    summary="The payments I made or received, newest first",
    responses={**_CUSTOMER_PROBLEMS, **problem_responses(400, 422)},
)
async def list_payments(
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    filters: PaymentFilters,
    cursor: Cursor = None,
    limit: Limit = PAGE_SIZE_DEFAULT,
) -> HistoryPageOut:
    """Across all my accounts; a payment between two of my own accounts is
    listed once, as outgoing."""
    page = await run_in_threadpool(
        runtime.history.payments_history, principal.subject_id, filters, cursor, limit
    )
    return HistoryPageOut.of(page)


@router.get(
    "/payments/{payment_id}/receipt",
    response_model=ReceiptOut,
    tags=["payments"],
    summary="The signed electronic receipt of a payment I made or received",
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **_CUSTOMER_PROBLEMS,
        **problem_responses(404, 409),
    },
)
async def payment_receipt(
    payment_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    response: Response,
    format_: Annotated[
        Literal["json", "html"] | None,
        Query(alias="format", description="Overrides the Accept header."),
    ] = None,
    lang: Annotated[
        Language | None, Query(description="Overrides the Accept-Language header.")
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ReceiptOut | Response:
    """Settled and returned payments have one (409 ``payment-state`` otherwise).
    The JSON's ``receipt`` object is what the signature covers."""
    signed = await run_in_threadpool(runtime.history.receipt, principal.subject_id, payment_id)
    if wants_html(format_, accept):
        language = pick_language(lang, accept_language)
        return HTMLResponse(
            receipt_html(signed, language),
            headers={
                "Content-Security-Policy": RECEIPT_HTML_CSP,
                "Content-Language": language,
                "Vary": VARY_RECEIPT,
            },
        )
    response.headers["Vary"] = VARY_RECEIPT
    return ReceiptOut.of(signed)


@router.get(
    "/receipts/public-key",
    response_model=ReceiptKeysOut,
    tags=["payments"],
    summary="The public keys that verify electronic receipts",
)
async def receipt_public_key(runtime: RuntimeDep) -> ReceiptKeysOut:
    """Public: anyone holding a receipt may check it with these keys."""
    signer = runtime.signer
    previous = []
    for text in runtime.settings.ledger_verify_keys:
        raw = public_key_from_base64(text)
        if raw != signer.public_key_bytes:
            previous.append(PublicKeyOut(key_id=key_id_for(raw), public_key=text.strip()))
    return ReceiptKeysOut(
        algorithm=SIGNATURE_ALGORITHM,
        signature_domain=RECEIPT_SIGNATURE_DOMAIN.decode("utf-8"),
        current=PublicKeyOut(key_id=signer.key_id, public_key=signer.public_key_base64),
        previous=previous,
    )

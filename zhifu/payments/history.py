"""Transaction history, statements, CSV export and electronic receipts.

Design note.

An account's history is every movement of its money, newest first: payments
out and in (``payments_orders``, the account on the debit or the credit side)
and teller cash (ledger transfers with the accounts context's cash codes), so
that a statement is complete. A customer's payments list is the orders they
paid or received, across their accounts. Both are read-only views over rows
other use cases wrote; nothing here changes a row.

Rules and invariants:

1. Order: newest first by ``(ts, id)``: an order's ``created_ts`` (it never
   changes, so pages stay stable while an order moves on) or a cash
   transfer's ledger ``ts``; the id breaks ties. A cursor is the position of
   the last entry shown (``(ts, id)``, base64), so paging never loses or
   repeats an entry, whatever arrives meanwhile. A cursor that is not one
   this module wrote is refused (:class:`InvalidHistoryCursorError`).
2. Every list is paginated: ``limit`` is 1 to :data:`PAGE_SIZE_MAX`. Each
   source is read with ``limit + 1`` rows past the cursor and the sources are
   merged, so a page costs a few index range scans whatever the history's size.
3. Filters (:class:`HistoryRequest`, checked into :class:`HistoryFilter`):
   Shanghai calendar days or timestamps (both ends inclusive), an amount
   range in the account's currency, a counterparty substring (ASCII letters
   compared case-insensitively, :data:`COUNTERPARTY_FILTER_CHARS_MAX`), states,
   types and a direction. :meth:`HistoryFilter.matches` is the reference
   meaning; the SQL says the same thing.
4. Amounts are never signed: ``direction`` says which way the money went. A
   CSV cell that a spreadsheet could read as a formula (it starts with one of
   :data:`CSV_FORMULA_TRIGGERS`) is prefixed with a single quote. An export
   holds at most :data:`EXPORT_ROWS_MAX` rows; a larger one is refused whole
   (:class:`ExportTooLargeError`) rather than silently cut short.
5. A receipt exists for a settled or returned payment only
   (:class:`ReceiptNotAvailableError`). It is a JSON document signed with the
   platform's Ed25519 key over :data:`RECEIPT_SIGNATURE_DOMAIN` followed by
   the document's canonical JSON (sorted keys, no spaces, UTF-8), so anyone
   holding the published public key can check it (:func:`verify_receipt`).
   The document is a function of the order alone: asked again, the same
   receipt comes back byte for byte until the order changes.

Layout: errors and limits; the pure part (filters, cursors, merging, CSV,
receipts, HTML); then SQL (every function takes the caller's connection);
then :class:`HistoryService`, whose methods are each one read-only unit of work.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import html
import io
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    func,
    or_,
    select,
)

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts import store as accounts_store
from zhifu.accounts.model import SHANGHAI, TIMESTAMP_US_MAX, Direction, mask_account_number
from zhifu.accounts.service import TRANSFER_CODE_CASH_DEPOSIT, TRANSFER_CODE_CASH_WITHDRAWAL
from zhifu.invariant import InvariantError, invariant
from zhifu.money import Money, MoneyError
from zhifu.payments import store as payments_store
from zhifu.payments.errors import PaymentError, PaymentNotFoundError
from zhifu.payments.model import LABEL_CHARS_MAX, OrderState, PaymentKind
from zhifu.payments.service import OrderView, order_view
from zhifu.security.signing import Ed25519Signer, verify_signature
from zhifu.store.tables import ledger_account_history, ledger_transfers, payments_orders
from zhifu.store.uow import run_in_transaction

# --- errors ---------------------------------------------------------------------------------


class HistoryError(PaymentError):
    """Root of the history, export and receipt failures (a payments error)."""

    code = "history_error"


class InvalidHistoryFilterError(HistoryError):
    """A filter or page size is malformed or out of range; ``field`` names the
    query parameter. Nothing was read."""

    code = "invalid_history_filter"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
        self.extra = {"field": field}  # a member of the problem response


class InvalidHistoryCursorError(HistoryError):
    """A ``cursor`` is not one a history page handed out (mangled or made up)."""

    code = "invalid_cursor"


class ExportTooLargeError(HistoryError):
    """An export would hold more than :data:`EXPORT_ROWS_MAX` rows: the caller
    must narrow the dates or add filters."""

    code = "export_too_large"


class ReceiptNotAvailableError(HistoryError):
    """A receipt was asked for a payment that is neither settled nor returned."""

    code = "receipt_not_available"


# --- limits ---------------------------------------------------------------------------------

PAGE_SIZE_DEFAULT: Final = 50
PAGE_SIZE_MAX: Final = 200
# An export is read whole before its first byte is sent (so it is either complete
# or refused); this bounds the memory and the time one request can take.
EXPORT_ROWS_MAX: Final = 10_000
# Rows per chunk of a streamed CSV body.
CSV_CHUNK_ROWS: Final = 500
# A counterparty filter is a substring of a label, and labels are this long at most.
COUNTERPARTY_FILTER_CHARS_MAX: Final = LABEL_CHARS_MAX
# '2024-05-01T10:00:00.123456+08:00' is 32 characters.
TIME_TEXT_CHARS_MAX: Final = 40
# A cursor holds 'h1:<ts>:<32 hex>' (at most 55 bytes): 76 characters of base64.
CURSOR_CHARS_MAX: Final = 80
# Up to the longest amount Money can hold, with a sign and a point.
AMOUNT_FILTER_CHARS_MAX: Final = 24


# --- what a history holds ---------------------------------------------------------------


class EntryType(StrEnum):
    """What moved the money: a payment order of a kind, or teller cash."""

    TRANSFER = "transfer"
    MERCHANT = "merchant"
    REFUND = "refund"
    CASH_DEPOSIT = "cash_deposit"
    CASH_WITHDRAWAL = "cash_withdrawal"


PAYMENT_TYPES: Final = frozenset({EntryType.TRANSFER, EntryType.MERCHANT, EntryType.REFUND})
CASH_TYPES: Final = frozenset({EntryType.CASH_DEPOSIT, EntryType.CASH_WITHDRAWAL})
invariant(
    {t.value for t in PAYMENT_TYPES} == {k.value for k in PaymentKind},
    "every payment kind is a history entry type",
)
# How teller cash shows on the other side of an account's history.
CASH_COUNTERPARTY: Final = "cash at counter"
# Teller cash is posted at once: in a history it is settled.
CASH_STATE: Final = OrderState.SETTLED


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One movement of money as the account (or customer) it belongs to sees it.

    ``id`` is the payment order's id, or the ledger transfer's for teller cash;
    ``account_id`` is the viewer's own account on that side; ``balance_after``
    is that account's posted balance right after the movement, when the ledger
    keeps its history (None for a payment whose money never moved).
    """

    id: uuid.UUID
    ts: int
    type: EntryType
    direction: Direction
    state: OrderState
    account_id: uuid.UUID
    counterparty: str
    memo: str
    amount: Money
    balance_after: Money | None
    payment_id: uuid.UUID | None
    ledger_transfer_id: uuid.UUID | None

    @property
    def position(self) -> tuple[int, uuid.UUID]:
        return (self.ts, self.id)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: tuple[HistoryEntry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A history query as the caller wrote it; checked by :func:`history_filter`.

    ``from_text`` and ``to_text`` are each a Shanghai calendar day
    (``2024-05-01``) or an ISO 8601 timestamp with its UTC offset; both ends are
    inclusive. Amounts are decimal text in major units of the account's
    currency (``currency`` names it when the list spans accounts).
    """

    from_text: str | None = None
    to_text: str | None = None
    min_amount: str | None = None
    max_amount: str | None = None
    currency: str | None = None
    counterparty: str | None = None
    states: frozenset[OrderState] = frozenset()
    types: frozenset[EntryType] = frozenset()
    direction: Direction | None = None


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Checked filters; empty sets and None mean "any"."""

    from_ts: int | None = None  # inclusive
    until_ts: int | None = None  # exclusive
    min_amount_minor: int | None = None
    max_amount_minor: int | None = None
    currency: str | None = None
    counterparty: str | None = None  # already ASCII-lower-cased
    states: frozenset[OrderState] = frozenset()
    types: frozenset[EntryType] = frozenset()
    direction: Direction | None = None

    def matches(self, entry: HistoryEntry) -> bool:
        """Whether ``entry`` passes every filter: the meaning the SQL implements."""
        amount = entry.amount.amount_minor
        return (
            (self.from_ts is None or entry.ts >= self.from_ts)
            and (self.until_ts is None or entry.ts < self.until_ts)
            and (self.min_amount_minor is None or amount >= self.min_amount_minor)
            and (self.max_amount_minor is None or amount <= self.max_amount_minor)
            and (self.currency is None or entry.amount.currency == self.currency)
            and (self.counterparty is None or self.counterparty in ascii_lower(entry.counterparty))
            and (not self.states or entry.state in self.states)
            and (not self.types or entry.type in self.types)
            and (self.direction is None or entry.direction is self.direction)
        )


# --- checking filters -----------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_DATE_TEXT: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_ASCII_UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_TO_ASCII_LOWER: Final = str.maketrans(_ASCII_UPPER, _ASCII_LOWER)


def ascii_lower(text: str) -> str:
    """``text`` with A-Z lowered and nothing else changed: what SQLite's lower()
    does, and what the PostgreSQL query does with translate()."""
    return text.translate(_TO_ASCII_LOWER)


def history_filter(request: HistoryRequest, currency: str | None) -> HistoryFilter:
    """The checked filters of ``request``; amounts are read in ``currency`` (the
    account's), or in ``request.currency`` when the list spans accounts.

    Raises:
        InvalidHistoryFilterError: naming the parameter and what it allows.
    """
    currency = _filter_currency(request.currency, currency)
    from_ts = None if request.from_text is None else parse_time_bound(request.from_text, "from")
    until_ts = (
        None if request.to_text is None else parse_time_bound(request.to_text, "to", end=True)
    )
    if from_ts is not None and until_ts is not None and from_ts >= until_ts:
        raise InvalidHistoryFilterError(
            "'from' is later than 'to': give the earlier time as 'from'", field="from"
        )
    min_minor = _amount_bound(request.min_amount, currency, "min_amount")
    max_minor = _amount_bound(request.max_amount, currency, "max_amount")
    if min_minor is not None and max_minor is not None and min_minor > max_minor:
        raise InvalidHistoryFilterError(
            "min_amount is larger than max_amount: give the smaller amount as min_amount",
            field="min_amount",
        )
    return HistoryFilter(
        from_ts=from_ts,
        until_ts=until_ts,
        min_amount_minor=min_minor,
        max_amount_minor=max_minor,
        currency=currency,
        counterparty=_counterparty(request.counterparty),
        states=request.states,
        types=request.types,
        direction=request.direction,
    )


def _filter_currency(asked: str | None, account_currency: str | None) -> str | None:
    if asked is None:
        return account_currency
    code = asked.strip().upper()
    try:
        Money.zero(code)
    except MoneyError:
        raise InvalidHistoryFilterError(
            "currency is an ISO 4217 code such as CNY", field="currency"
        ) from None
    if account_currency is not None and code != account_currency:
        raise InvalidHistoryFilterError(
            f"this account holds {account_currency} only: leave currency out or give"
            f" {account_currency}",
            field="currency",
        )
    return code


def parse_time_bound(text: str, field: str, *, end: bool = False) -> int:
    """Microseconds since the epoch for a ``from`` (``end`` False) or ``to`` bound.

    A date is a Shanghai calendar day: as ``from`` its first instant, as ``to``
    the first instant of the next day (the bound is exclusive, so the whole day
    is in). A timestamp needs its UTC offset; as ``to`` it is included too.

    Raises InvalidHistoryFilterError (``field``).
    """
    value = text.strip()
    allowed = (
        f"{field} is a Shanghai calendar day such as 2024-05-01 or an ISO 8601 timestamp"
        " with its UTC offset such as 2024-05-01T10:00:00+08:00 (write '+' as %2B in a URL)"
    )
    if not value or len(value) > TIME_TEXT_CHARS_MAX:
        raise InvalidHistoryFilterError(allowed, field=field)
    try:
        if _DATE_TEXT.fullmatch(value):
            day = date.fromisoformat(value)
            if end:
                day += timedelta(days=1)
            moment = datetime(day.year, day.month, day.day, tzinfo=SHANGHAI)
        else:
            moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise InvalidHistoryFilterError(allowed, field=field) from None
    if moment.tzinfo is None:
        raise InvalidHistoryFilterError(
            f"{field} needs its UTC offset (Z or +08:00): {allowed}", field=field
        )
    timestamp_us = (moment - _EPOCH) // _ONE_US
    if end and not _DATE_TEXT.fullmatch(value):
        timestamp_us += 1
    if not 0 <= timestamp_us <= TIMESTAMP_US_MAX:
        raise InvalidHistoryFilterError(f"{field} must lie between 1970 and 9998", field=field)
    return timestamp_us


def _amount_bound(text: str | None, currency: str | None, field: str) -> int | None:
    if text is None:
        return None
    if currency is None:
        raise InvalidHistoryFilterError(
            f"{field} needs a currency: add currency=CNY (or the code of the accounts meant)",
            field=field,
        )
    value = text.strip()
    allowed = f"{field} is an amount of zero or more in {currency}, such as 12.34"
    if len(value) > AMOUNT_FILTER_CHARS_MAX:
        raise InvalidHistoryFilterError(allowed, field=field)
    try:
        amount = Money.parse(value, currency)
    except MoneyError:
        raise InvalidHistoryFilterError(allowed, field=field) from None
    if amount.is_negative():
        raise InvalidHistoryFilterError(allowed, field=field)
    return amount.amount_minor


def _counterparty(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip()
    if len(value) > COUNTERPARTY_FILTER_CHARS_MAX:
        raise InvalidHistoryFilterError(
            f"counterparty is at most {COUNTERPARTY_FILTER_CHARS_MAX} characters of the name"
            f" or account label to look for, got {len(value)}",
            field="counterparty",
        )
    return ascii_lower(value) or None


def check_page_size(limit: int) -> int:
    """``limit`` when it is 1 to :data:`PAGE_SIZE_MAX`. Raises InvalidHistoryFilterError."""
    if not 1 <= limit <= PAGE_SIZE_MAX:
        raise InvalidHistoryFilterError(
            f"limit is 1 to {PAGE_SIZE_MAX} entries a page, got {limit}", field="limit"
        )
    return limit


# --- cursors ------------------------------------------------------------------------------

_CURSOR_PREFIX: Final = "h1"
_CURSOR_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]+")
_CURSOR_TEXT: Final = re.compile(r"h1:(0|[1-9][0-9]{0,18}):([0-9a-f]{32})")


def encode_cursor(position: tuple[int, uuid.UUID]) -> str:
    """The opaque cursor for "after the entry at ``position``" (``(ts, id)``)."""
    ts, entry_id = position
    raw = f"{_CURSOR_PREFIX}:{ts}:{entry_id.hex}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, uuid.UUID]:
    """The position a cursor stands for. Raises InvalidHistoryCursorError."""
    refused = InvalidHistoryCursorError(
        "this cursor is not one a history page handed out: start again without a cursor"
        " and follow next_cursor"
    )
    if len(cursor) > CURSOR_CHARS_MAX or not _CURSOR_ALPHABET.fullmatch(cursor):
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise refused from None
    match = _CURSOR_TEXT.fullmatch(raw)
    if match is None:
        raise refused
    position = (int(match[1]), uuid.UUID(hex=match[2]))
    if position[0] > TIMESTAMP_US_MAX or encode_cursor(position) != cursor:
        raise refused
    return position


# --- merging sources ----------------------------------------------------------------------


class Source(StrEnum):
    """The places an account's or a customer's entries are read from."""

    PAYMENTS_OUT = "payments_out"
    PAYMENTS_IN = "payments_in"
    CASH_IN = "cash_in"
    CASH_OUT = "cash_out"


def plan_sources(filters: HistoryFilter, *, with_cash: bool) -> tuple[Source, ...]:
    """The sources that can hold an entry passing ``filters``: the others are not read."""
    payment_types = filters.types & PAYMENT_TYPES if filters.types else PAYMENT_TYPES
    cash_types = filters.types & CASH_TYPES if filters.types else CASH_TYPES
    if not with_cash or (filters.states and CASH_STATE not in filters.states):
        cash_types = frozenset()
    if filters.counterparty is not None and filters.counterparty not in CASH_COUNTERPARTY:
        cash_types = frozenset()
    wanted = {
        Source.PAYMENTS_OUT: bool(payment_types) and filters.direction is not Direction.INCOMING,
        Source.PAYMENTS_IN: bool(payment_types) and filters.direction is not Direction.OUTGOING,
        Source.CASH_IN: EntryType.CASH_DEPOSIT in cash_types
        and filters.direction is not Direction.OUTGOING,
        Source.CASH_OUT: EntryType.CASH_WITHDRAWAL in cash_types
        and filters.direction is not Direction.INCOMING,
    }
    return tuple(source for source, read in wanted.items() if read)


def _newest_first(entry: HistoryEntry) -> tuple[int, int]:
    return (entry.ts, entry.id.int)


def merge_page(
    sources: Iterable[Sequence[HistoryEntry]], limit: int
) -> tuple[list[HistoryEntry], str | None]:
    """The newest ``limit`` entries of the sources, and the cursor after them
    when more remain. Each source must hold its newest ``limit + 1`` entries
    past the cursor: then the merge is exact and "more remain" is known."""
    merged = sorted((e for source in sources for e in source), key=_newest_first, reverse=True)
    page = merged[:limit]
    more = len(merged) > limit
    return page, encode_cursor(page[-1].position) if more and page else None


# --- presentation: times, CSV ---------------------------------------------------------------


def local_time(timestamp_us: int) -> str:
    """Shanghai local time, ISO 8601 to the second: '2024-05-01T10:00:00+08:00'."""
    moment = (_EPOCH + timedelta(microseconds=timestamp_us)).astimezone(SHANGHAI)
    return moment.isoformat(timespec="seconds")


CSV_COLUMNS: Final = (
    "time",
    "id",
    "type",
    "direction",
    "status",
    "counterparty",
    "memo",
    "amount",
    "currency",
    "balance_after",
)
# Characters a spreadsheet may take as the start of a formula (OWASP "CSV injection").
CSV_FORMULA_TRIGGERS: Final = ("=", "+", "-", "@", "\t", "\r")
CSV_BOM: Final = "\ufeff"  # so that Excel reads the file as UTF-8 (Chinese names)


def csv_cell(value: str) -> str:
    """``value`` made safe for a spreadsheet: a leading formula character gets a
    single quote before it, which spreadsheets show as text."""
    return "'" + value if value.startswith(CSV_FORMULA_TRIGGERS) else value


def entry_fields(entry: HistoryEntry) -> dict[str, str]:
    """The CSV columns of an entry, as text (the JSON list shows the same values)."""
    return {
        "time": local_time(entry.ts),
        "id": str(entry.id),
        "type": entry.type.value,
        "direction": entry.direction.value,
        "status": entry.state.value,
        "counterparty": entry.counterparty,
        "memo": entry.memo,
        "amount": entry.amount.to_decimal_string(),
        "currency": entry.amount.currency,
        "balance_after": ""
        if entry.balance_after is None
        else entry.balance_after.to_decimal_string(),
    }


def csv_chunks(entries: Sequence[HistoryEntry]) -> Iterator[str]:
    """The CSV text of ``entries`` in chunks: a byte-order mark and the header
    first, then :data:`CSV_CHUNK_ROWS` rows at a time (CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    yield CSV_BOM + buffer.getvalue()
    for start in range(0, len(entries), CSV_CHUNK_ROWS):
        buffer.seek(0)
        buffer.truncate()
        for entry in entries[start : start + CSV_CHUNK_ROWS]:
            fields = entry_fields(entry)
            writer.writerow([csv_cell(fields[column]) for column in CSV_COLUMNS])
        yield buffer.getvalue()


# --- receipts -------------------------------------------------------------------------------

RECEIPT_VERSION: Final = 1
RECEIPT_STATES: Final = frozenset({OrderState.SETTLED, OrderState.RETURNED})
# Signed bytes = this prefix + the canonical JSON: a receipt signature can never
# be taken for a signature of anything else the same key signs (block heads).
RECEIPT_SIGNATURE_DOMAIN: Final = b"zhifu-receipt-v1\n"
SIGNATURE_ALGORITHM: Final = "Ed25519"
BANK_NAMES: Final[Mapping[str, str]] = {"en": "Zhifu Bank", "zh-CN": "智付银行"}


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A receipt document and the platform's signature over it."""

    document: Mapping[str, Any]
    signature: str  # standard base64 of the 64-byte Ed25519 signature
    key_id: str
    public_key: str  # standard base64
    algorithm: str = SIGNATURE_ALGORITHM


def receipt_number(order_id: uuid.UUID, settled_ts: int) -> str:
    """'ZF' + the Shanghai settlement date + the order id: unique, and the same
    every time the receipt is asked for."""
    day = local_time(settled_ts)[:10].replace("-", "")
    return f"ZF{day}{order_id.hex.upper()}"


def _transition_ts(order: OrderView, state: OrderState) -> int | None:
    return next((t.ts for t in order.transitions if t.to_state is state), None)


def receipt_document(
    order: OrderView,
    *,
    bank_code: str,
    payer_account: str | None,
    payee_account: str | None,
) -> dict[str, Any]:
    """The receipt of a settled or returned ``order``; account numbers come in
    already masked. Raises ReceiptNotAvailableError for any other state."""
    if order.state not in RECEIPT_STATES:
        raise ReceiptNotAvailableError(
            f"this payment is {order.state.value}: a receipt exists once a payment is"
            " settled (or returned)"
        )
    settled_ts = _transition_ts(order, OrderState.SETTLED)
    if settled_ts is None:
        raise InvariantError(f"order {order.id} is {order.state.value} but never settled")
    returned_ts = _transition_ts(order, OrderState.RETURNED)
    return {
        "version": RECEIPT_VERSION,
        "bank": {"code": bank_code, "name": BANK_NAMES["en"], "name_zh": BANK_NAMES["zh-CN"]},
        "receipt_number": receipt_number(order.id, settled_ts),
        "payment_id": str(order.id),
        "type": order.kind.value,
        "state": order.state.value,
        "amount": order.amount.to_decimal_string(),
        "refunded": order.refunded.to_decimal_string(),
        "currency": order.amount.currency,
        "payer": {"name": order.payer_label, "account": payer_account},
        "payee": {"name": order.payee_label, "account": payee_account},
        "memo": order.memo,
        "created_at": local_time(order.created_ts),
        "settled_at": local_time(settled_ts),
        "settled_ts": settled_ts,
        "returned_at": None if returned_ts is None else local_time(returned_ts),
        "ledger_transfer_id": None
        if order.settle_transfer_id is None
        else str(order.settle_transfer_id),
        "as_of_ts": order.updated_ts,
    }


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8 without escapes: one byte string per document."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def receipt_signing_input(document: Mapping[str, Any]) -> bytes:
    """The bytes a receipt's signature is over."""
    return RECEIPT_SIGNATURE_DOMAIN + canonical_json(document)


def sign_receipt(document: Mapping[str, Any], signer: Ed25519Signer) -> SignedReceipt:
    signature = signer.sign(receipt_signing_input(document))
    return SignedReceipt(
        document=document,
        signature=base64.b64encode(signature).decode("ascii"),
        key_id=signer.key_id,
        public_key=signer.public_key_base64,
    )


def verify_receipt(document: Mapping[str, Any], signature_base64: str, public_key: bytes) -> bool:
    """Whether ``signature_base64`` signs ``document`` under ``public_key``. Never raises."""
    try:
        signature = base64.b64decode(signature_base64, validate=True)
        data = receipt_signing_input(document)
    except (binascii.Error, ValueError, TypeError):
        return False
    return verify_signature(public_key, signature, data)


# --- the printable receipt ----------------------------------------------------------------

Language = Literal["zh-CN", "en"]
LANGUAGES: Final[tuple[Language, ...]] = ("zh-CN", "en")

_LABELS: Final[Mapping[Language, Mapping[str, str]]] = {
    "zh-CN": {
        "title": "电子回单",
        "receipt_number": "回单编号",
        "payment_id": "交易编号",
        "type": "交易类型",
        "state": "交易状态",
        "amount": "金额",
        "refunded": "已退款",
        "payer": "付款方",
        "payee": "收款方",
        "account": "账号",
        "memo": "附言",
        "created_at": "创建时间",
        "settled_at": "入账时间",
        "returned_at": "退回时间",
        "ledger_transfer_id": "记账流水号",
        "bank_code": "银行代码",
        "signature": "电子签名",
        "key_id": "签名密钥编号",
        "time_zone": "北京时间",
        "verify": "本回单由本行以 Ed25519 电子签名，可凭本行公布的公钥核验真伪。",
    },
    "en": {
        "title": "Electronic receipt",
        "receipt_number": "Receipt number",
        "payment_id": "Payment ID",
        "type": "Type",
        "state": "Status",
        "amount": "Amount",
        "refunded": "Refunded",
        "payer": "Payer",
        "payee": "Payee",
        "account": "Account",
        "memo": "Memo",
        "created_at": "Created",
        "settled_at": "Settled",
        "returned_at": "Returned",
        "ledger_transfer_id": "Ledger transfer",
        "bank_code": "Bank code",
        "signature": "Electronic signature",
        "key_id": "Signing key",
        "time_zone": "Beijing time",
        "verify": "This receipt is signed by the bank with Ed25519; check it with the bank's"
        " published public key.",
    },
}
_VALUE_NAMES: Final[Mapping[Language, Mapping[str, str]]] = {
    "zh-CN": {
        "transfer": "转账",
        "merchant": "商户付款",
        "refund": "退款",
        "settled": "交易成功",
        "returned": "已退回",
    },
    "en": {
        "transfer": "Transfer",
        "merchant": "Merchant payment",
        "refund": "Refund",
        "settled": "Settled",
        "returned": "Returned",
    },
}
RECEIPT_CSS: Final = (
    "body{font-family:system-ui,'PingFang SC','Microsoft YaHei',sans-serif;margin:2em;"
    "color:#111}main{max-width:40em;margin:auto;border:1px solid #999;padding:1.5em}"
    "h1{font-size:1.3em;margin:0}h2{font-size:1.1em;margin:.3em 0 1em}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em;"
    "border-bottom:1px solid #ddd;vertical-align:top}th{width:35%;font-weight:600}"
    ".sig{font-family:monospace;font-size:.75em;word-break:break-all}"
    "footer{margin-top:1em;font-size:.85em;color:#444}"
    "@media print{body{margin:0}main{border:none}}"
)
# The page's own policy: nothing loads, only its one inline style block applies.
RECEIPT_HTML_CSP: Final = (
    "default-src 'none'; style-src 'sha256-"
    + base64.b64encode(hashlib.sha256(RECEIPT_CSS.encode("utf-8")).digest()).decode("ascii")
    + "'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _format_amount(amount: str, currency: str, language: Language) -> str:
    return Money.parse(amount, currency).format("zh" if language == "zh-CN" else "en")


def _party(party: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    account = party.get("account")
    name = str(party.get("name") or "")
    return name if not account else f"{name} ({labels['account']} {account})"


def receipt_rows(signed: SignedReceipt, language: Language) -> list[tuple[str, str]]:
    """The receipt as (label, value) lines in ``language``, not yet escaped."""
    doc, labels, names = signed.document, _LABELS[language], _VALUE_NAMES[language]
    zone = labels["time_zone"]

    def when(key: str) -> str:  # '2024-05-01 09:00:00 (Beijing time)'
        return f"{str(doc[key])[:19].replace('T', ' ')} ({zone})"

    rows = [
        (labels["receipt_number"], str(doc["receipt_number"])),
        (labels["payment_id"], str(doc["payment_id"])),
        (labels["type"], names.get(str(doc["type"]), str(doc["type"]))),
        (labels["state"], names.get(str(doc["state"]), str(doc["state"]))),
        (labels["amount"], _format_amount(doc["amount"], doc["currency"], language)),
    ]
    if doc["refunded"] != Money.zero(doc["currency"]).to_decimal_string():
        rows.append(
            (labels["refunded"], _format_amount(doc["refunded"], doc["currency"], language))
        )
    rows += [
        (labels["payer"], _party(doc["payer"], labels)),
        (labels["payee"], _party(doc["payee"], labels)),
        (labels["memo"], str(doc["memo"])),
        (labels["created_at"], when("created_at")),
        (labels["settled_at"], when("settled_at")),
    ]
    if doc["returned_at"] is not None:
        rows.append((labels["returned_at"], when("returned_at")))
    rows += [
        (labels["ledger_transfer_id"], str(doc["ledger_transfer_id"] or "")),
        (labels["bank_code"], str(doc["bank"]["code"])),
    ]
    return rows


def receipt_html(signed: SignedReceipt, language: Language) -> str:
    """A printable, self-contained page (no scripts, links or images): every
    text is HTML-escaped; the only style is inline and allowed by
    :data:`RECEIPT_HTML_CSP`."""
    labels = _LABELS[language]
    bank = BANK_NAMES[language]
    esc = html.escape
    body_rows = "".join(
        f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>"
        for label, value in receipt_rows(signed, language)
    )
    return (
        f'<!DOCTYPE html><html lang="{esc(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(bank)} {esc(labels['title'])} {esc(str(signed.document['receipt_number']))}"
        f"</title><style>{RECEIPT_CSS}</style></head><body><main>"
        f"<h1>{esc(bank)}</h1><h2>{esc(labels['title'])}</h2>"
        f"<table>{body_rows}</table>"
        f"<footer><p>{esc(labels['verify'])}</p>"
        f"<p>{esc(labels['key_id'])}: {esc(signed.key_id)} ({esc(signed.algorithm)})</p>"
        f'<p>{esc(labels["signature"])}:</p><p class="sig">{esc(signed.signature)}</p>'
        "</footer></main></body></html>"
    )


# === SQL: every function takes the caller's connection ======================================

_ORDERS: Final = payments_orders
_SETTLE: Final = ledger_transfers.alias("settle")
_AFTER: Final = ledger_account_history.alias("after")


def _lowered(column: ColumnElement[str], connection: Connection) -> ColumnElement[str]:
    """``column`` with only A-Z lowered, on both databases (see :func:`ascii_lower`)."""
    if connection.dialect.name == "postgresql":
        return func.translate(column, _ASCII_UPPER, _ASCII_LOWER)
    return func.lower(column)


def _like_anywhere(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _before(
    ts_column: ColumnElement[int],
    id_column: ColumnElement[uuid.UUID],
    position: tuple[int, uuid.UUID] | None,
) -> list[ColumnElement[bool]]:
    if position is None:
        return []
    ts, entry_id = position
    return [or_(ts_column < ts, and_(ts_column == ts, id_column < entry_id))]


def _common_conditions(
    filters: HistoryFilter,
    ts_column: ColumnElement[int],
    amount_column: ColumnElement[int],
    currency_column: ColumnElement[str],
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.from_ts is not None:
        conditions.append(ts_column >= filters.from_ts)
    if filters.until_ts is not None:
        conditions.append(ts_column < filters.until_ts)
    if filters.min_amount_minor is not None:
        conditions.append(amount_column >= filters.min_amount_minor)
    if filters.max_amount_minor is not None:
        conditions.append(amount_column <= filters.max_amount_minor)
    if filters.currency is not None:
        conditions.append(currency_column == filters.currency)
    return conditions


@dataclass(frozen=True, slots=True)
class OrderSide:
    """Which orders one payments source reads, and from whose side."""

    direction: Direction
    where: ColumnElement[bool]


def account_sides(account_id: uuid.UUID) -> dict[Source, OrderSide]:
    """An account's payments: out when it is debited, in when it is credited."""
    return {
        Source.PAYMENTS_OUT: OrderSide(
            Direction.OUTGOING, _ORDERS.c.debit_account_id == account_id
        ),
        Source.PAYMENTS_IN: OrderSide(
            Direction.INCOMING, _ORDERS.c.credit_account_id == account_id
        ),
    }


def customer_sides(customer_id: uuid.UUID) -> dict[Source, OrderSide]:
    """A customer's payments: out when they paid; in when they received from
    somebody else (a payment between their own accounts is listed once, out)."""
    payer = _ORDERS.c.payer_customer_id
    return {
        Source.PAYMENTS_OUT: OrderSide(Direction.OUTGOING, payer == customer_id),
        Source.PAYMENTS_IN: OrderSide(
            Direction.INCOMING,
            and_(
                _ORDERS.c.payee_customer_id == customer_id,
                or_(payer.is_(None), payer != customer_id),
            ),
        ),
    }


def order_entries(
    connection: Connection,
    side: OrderSide,
    filters: HistoryFilter,
    position: tuple[int, uuid.UUID] | None,
    limit: int,
) -> list[HistoryEntry]:
    """The newest ``limit`` orders of one side past ``position`` that pass ``filters``,
    each with the balance its own account had right after it settled."""
    o = _ORDERS.c
    outgoing = side.direction is Direction.OUTGOING
    own_account = o.debit_account_id if outgoing else o.credit_account_id
    label = o.payee_label if outgoing else o.payer_label
    conditions = [
        side.where,
        *_common_conditions(filters, o.created_ts, o.amount_minor, o.currency),
        *_before(o.created_ts, o.id, position),
    ]
    if filters.counterparty is not None:
        conditions.append(
            _lowered(label, connection).like(_like_anywhere(filters.counterparty), escape="\\")
        )
    if filters.states:
        conditions.append(o.state.in_(sorted(s.value for s in filters.states)))
    if filters.types:
        kinds = sorted(t.value for t in filters.types & PAYMENT_TYPES)
        conditions.append(o.kind.in_(kinds))
    query = (
        select(
            o.id,
            o.created_ts,
            o.kind,
            o.state,
            own_account.label("account_id"),
            label.label("counterparty"),
            o.memo,
            o.amount_minor,
            o.currency,
            _SETTLE.c.id.label("ledger_transfer_id"),
            _AFTER.c.credits_posted,
            _AFTER.c.debits_posted,
        )
        .select_from(
            _ORDERS.outerjoin(_SETTLE, _SETTLE.c.id == o.settle_transfer_id).outerjoin(
                _AFTER, and_(_AFTER.c.account_id == own_account, _AFTER.c.ts == _SETTLE.c.ts)
            )
        )
        .where(*conditions)
        .order_by(o.created_ts.desc(), o.id.desc())
        .limit(limit)
    )
    return [
        HistoryEntry(
            id=row.id,
            ts=int(row.created_ts),
            type=EntryType(row.kind),
            direction=side.direction,
            state=OrderState(row.state),
            account_id=row.account_id,
            counterparty=row.counterparty,
            memo=row.memo,
            amount=Money(int(row.amount_minor), row.currency),
            balance_after=_balance(row, row.currency),
            payment_id=row.id,
            ledger_transfer_id=row.ledger_transfer_id,
        )
        for row in connection.execute(query)
    ]


def cash_entries(
    connection: Connection,
    account_id: uuid.UUID,
    deposit: bool,
    filters: HistoryFilter,
    position: tuple[int, uuid.UUID] | None,
    limit: int,
) -> list[HistoryEntry]:
    """The newest ``limit`` teller cash deposits (or withdrawals) past ``position``.

    Only amounts, currency and times are filtered here: the planner
    (:func:`plan_sources`) has already ruled cash in or out by type, state,
    direction and counterparty."""
    t = ledger_transfers.c
    side = t.credit_account_id if deposit else t.debit_account_id
    code = TRANSFER_CODE_CASH_DEPOSIT if deposit else TRANSFER_CODE_CASH_WITHDRAWAL
    query = (
        select(t.id, t.ts, t.amount, t.currency, _AFTER.c.credits_posted, _AFTER.c.debits_posted)
        .select_from(
            ledger_transfers.outerjoin(
                _AFTER, and_(_AFTER.c.account_id == account_id, _AFTER.c.ts == t.ts)
            )
        )
        .where(
            side == account_id,
            t.code == code,
            *_common_conditions(filters, t.ts, t.amount, t.currency),
            *_before(t.ts, t.id, position),
        )
        .order_by(t.ts.desc(), t.id.desc())
        .limit(limit)
    )
    return [
        HistoryEntry(
            id=row.id,
            ts=int(row.ts),
            type=EntryType.CASH_DEPOSIT if deposit else EntryType.CASH_WITHDRAWAL,
            direction=Direction.INCOMING if deposit else Direction.OUTGOING,
            state=CASH_STATE,
            account_id=account_id,
            counterparty=CASH_COUNTERPARTY,
            memo="",
            amount=Money(int(row.amount), row.currency),
            balance_after=_balance(row, row.currency),
            payment_id=None,
            ledger_transfer_id=row.id,
        )
        for row in connection.execute(query)
    ]


def _balance(row: Any, currency: str) -> Money | None:
    """A customer account is credit-normal: its balance is credits less debits."""
    if row.credits_posted is None:
        return None
    return Money(int(row.credits_posted) - int(row.debits_posted), currency)


def read_entries(
    connection: Connection,
    sides: Mapping[Source, OrderSide],
    cash_account_id: uuid.UUID | None,
    filters: HistoryFilter,
    position: tuple[int, uuid.UUID] | None,
    limit: int,
) -> tuple[list[HistoryEntry], str | None]:
    """A page of ``limit`` entries past ``position``: each source planned for
    ``filters`` is read ``limit + 1`` deep and the results merged."""
    sources = plan_sources(filters, with_cash=cash_account_id is not None)
    read: list[list[HistoryEntry]] = []
    for source in sources:
        if source in sides:
            read.append(order_entries(connection, sides[source], filters, position, limit + 1))
        elif cash_account_id is not None:
            deposit = source is Source.CASH_IN
            read.append(
                cash_entries(connection, cash_account_id, deposit, filters, position, limit + 1)
            )
    return merge_page(read, limit)


# === use cases ===============================================================================


@dataclass(frozen=True, slots=True)
class AccountExport:
    """The rows of an account's CSV export, newest first, and how to name the file."""

    account_number_masked: str
    entries: tuple[HistoryEntry, ...] = field(default=())

    @property
    def filename(self) -> str:
        return f"zhifu-{self.account_number_masked[-4:]}-transactions.csv"


class HistoryService:
    """Read-only history, exports and receipts. Each method is one unit of work
    (a read-only database transaction)."""

    def __init__(
        self,
        engine: Engine,
        signer: Ed25519Signer,
        *,
        bank_code: str,
        export_rows_max: int = EXPORT_ROWS_MAX,
    ) -> None:
        invariant(0 < export_rows_max <= EXPORT_ROWS_MAX, "export_rows_max is out of range")
        self.engine = engine
        self.signer = signer
        self.bank_code = bank_code
        self.export_rows_max = export_rows_max

    def account_history(
        self,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        request: HistoryRequest,
        cursor: str | None = None,
        limit: int = PAGE_SIZE_DEFAULT,
    ) -> HistoryPage:
        """A page of the account's movements, newest first.

        Raises:
            AccountNotFoundError: no such account, or another customer's.
            InvalidHistoryFilterError, InvalidHistoryCursorError: bad query.
        """
        check_page_size(limit)
        position = None if cursor is None else decode_cursor(cursor)

        def work(connection: Connection) -> HistoryPage:
            account = _owned_account(connection, customer_id, account_id)
            filters = history_filter(request, account.currency)
            entries, next_cursor = read_entries(
                connection, account_sides(account_id), account_id, filters, position, limit
            )
            return HistoryPage(tuple(entries), next_cursor)

        return run_in_transaction(self.engine, work, write=False)

    def payments_history(
        self,
        customer_id: uuid.UUID,
        request: HistoryRequest,
        cursor: str | None = None,
        limit: int = PAGE_SIZE_DEFAULT,
    ) -> HistoryPage:
        """A page of the payments the customer made or received, newest first.

        Raises InvalidHistoryFilterError (also for a cash type: cash is in an
        account's history, not a payment) and InvalidHistoryCursorError.
        """
        check_page_size(limit)
        if request.types & CASH_TYPES:
            raise InvalidHistoryFilterError(
                "payments are of type transfer, merchant or refund; teller cash is listed in"
                " an account's transactions",
                field="type",
            )
        filters = history_filter(request, None)
        position = None if cursor is None else decode_cursor(cursor)

        def work(connection: Connection) -> HistoryPage:
            entries, next_cursor = read_entries(
                connection, customer_sides(customer_id), None, filters, position, limit
            )
            return HistoryPage(tuple(entries), next_cursor)

        return run_in_transaction(self.engine, work, write=False)

    def account_export(
        self, customer_id: uuid.UUID, account_id: uuid.UUID, request: HistoryRequest
    ) -> AccountExport:
        """Every movement passing the filters, read in one database transaction.

        Raises:
            AccountNotFoundError, InvalidHistoryFilterError: as account_history.
            ExportTooLargeError: more than ``export_rows_max`` rows.
        """

        def work(connection: Connection) -> AccountExport:
            account = _owned_account(connection, customer_id, account_id)
            filters = history_filter(request, account.currency)
            entries, more = read_entries(
                connection,
                account_sides(account_id),
                account_id,
                filters,
                None,
                self.export_rows_max,
            )
            if more is not None:
                raise ExportTooLargeError(
                    f"the export would hold more than {self.export_rows_max:,} rows, the most"
                    " one file may hold: narrow the dates (from, to) or add filters, and"
                    " export the rest separately"
                )
            return AccountExport(mask_account_number(account.number), tuple(entries))

        return run_in_transaction(self.engine, work, write=False)

    def receipt(self, customer_id: uuid.UUID, order_id: uuid.UUID) -> SignedReceipt:
        """The signed receipt of a payment the customer paid or received.

        Raises:
            PaymentNotFoundError: no such payment, or not the customer's.
            ReceiptNotAvailableError: the payment is neither settled nor returned.
        """

        def work(connection: Connection) -> dict[str, Any]:
            row = payments_store.order_by_id(connection, order_id)
            if row is None or customer_id not in (row.payer_customer_id, row.payee_customer_id):
                raise PaymentNotFoundError("no such payment")
            order = order_view(row, payments_store.transitions_of(connection, order_id))
            return receipt_document(
                order,
                bank_code=self.bank_code,
                payer_account=_masked_number(connection, order.debit_account_id),
                payee_account=_masked_number(connection, order.credit_account_id),
            )

        document = run_in_transaction(self.engine, work, write=False)
        return sign_receipt(document, self.signer)


def _owned_account(connection: Connection, customer_id: uuid.UUID, account_id: uuid.UUID) -> Any:
    row = accounts_store.account_by_id(connection, account_id)
    if row is None or row.customer_id != customer_id:
        raise accounts_errors.AccountNotFoundError("no such account")
    return row


def _masked_number(connection: Connection, account_id: uuid.UUID) -> str | None:
    row = accounts_store.account_by_id(connection, account_id)
    return None if row is None else mask_account_number(row.number)

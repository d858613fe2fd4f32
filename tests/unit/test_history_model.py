"""The pure rules of transaction histories, exports and receipts
(zhifu.payments.history), and the router's content negotiation: no database."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.accounts.model import TIMESTAMP_US_MAX, Direction
from zhifu.api.routers.history import pick_language, wants_html
from zhifu.money import Money
from zhifu.payments.history import (
    CASH_COUNTERPARTY,
    COUNTERPARTY_FILTER_CHARS_MAX,
    CSV_BOM,
    CSV_CHUNK_ROWS,
    CSV_COLUMNS,
    CSV_FORMULA_TRIGGERS,
    CURSOR_CHARS_MAX,
    PAGE_SIZE_MAX,
    RECEIPT_CSS,
    RECEIPT_HTML_CSP,
    RECEIPT_SIGNATURE_DOMAIN,
    TIME_TEXT_CHARS_MAX,
    EntryType,
    HistoryEntry,
    HistoryFilter,
    HistoryRequest,
    InvalidHistoryCursorError,
    InvalidHistoryFilterError,
    Language,
    ReceiptNotAvailableError,
    Source,
    canonical_json,
    check_page_size,
    csv_cell,
    csv_chunks,
    decode_cursor,
    encode_cursor,
    entry_fields,
    history_filter,
    local_time,
    merge_page,
    parse_time_bound,
    plan_sources,
    receipt_document,
    receipt_html,
    receipt_number,
    sign_receipt,
    verify_receipt,
)
from zhifu.payments.model import OrderState, PaymentKind, Transition
from zhifu.payments.service import OrderView
from zhifu.security.signing import Ed25519Signer

US = 1_000_000
# 2024-05-01 00:00 in Shanghai is 2024-04-30 16:00 UTC.
MAY_1_SHANGHAI_US = int(datetime(2024, 4, 30, 16, tzinfo=UTC).timestamp()) * US
DAY_US = 86_400 * US
SIGNER = Ed25519Signer.from_seed(bytes(range(32)))


def entry(
    ts: int = MAY_1_SHANGHAI_US,
    *,
    entry_id: uuid.UUID | None = None,
    type_: EntryType = EntryType.TRANSFER,
    direction: Direction = Direction.OUTGOING,
    state: OrderState = OrderState.SETTLED,
    counterparty: str = "****1234",
    memo: str = "",
    amount: str = "12.34",
    balance_after: str | None = "100.00",
) -> HistoryEntry:
    entry_id = entry_id or uuid.uuid4()
    return HistoryEntry(
        id=entry_id,
        ts=ts,
        type=type_,
        direction=direction,
        state=state,
        account_id=uuid.UUID(int=1),
        counterparty=counterparty,
        memo=memo,
        amount=Money.parse(amount, "CNY"),
        balance_after=None if balance_after is None else Money.parse(balance_after, "CNY"),
        payment_id=entry_id,
        ledger_transfer_id=None,
    )


# --- time bounds --------------------------------------------------------------------------


def test_a_date_is_a_whole_shanghai_day() -> None:
    assert parse_time_bound("2024-05-01", "from") == MAY_1_SHANGHAI_US
    assert parse_time_bound("2024-05-01", "to", end=True) == MAY_1_SHANGHAI_US + DAY_US
    filters = history_filter(HistoryRequest(from_text="2024-05-01", to_text="2024-05-01"), "CNY")
    assert filters.matches(entry(MAY_1_SHANGHAI_US))
    assert filters.matches(entry(MAY_1_SHANGHAI_US + DAY_US - 1))
    assert not filters.matches(entry(MAY_1_SHANGHAI_US + DAY_US))
    assert not filters.matches(entry(MAY_1_SHANGHAI_US - 1))


def test_a_timestamp_bound_is_inclusive_and_needs_its_offset() -> None:
    text = "2024-05-01T00:00:00+08:00"
    assert parse_time_bound(text, "from") == MAY_1_SHANGHAI_US
    assert parse_time_bound(text, "to", end=True) == MAY_1_SHANGHAI_US + 1
    assert parse_time_bound("2024-04-30T16:00:00Z", "from") == MAY_1_SHANGHAI_US
    with pytest.raises(InvalidHistoryFilterError, match="UTC offset") as caught:
        parse_time_bound("2024-05-01T00:00:00", "from")
    assert caught.value.field == "from"


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-13-01", "2024-02-30", "2024-05-01T25:00:00Z", "0001-01-01"]
)
def test_a_malformed_time_is_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(InvalidHistoryFilterError, match=r"calendar day|1970") as caught:
        parse_time_bound(text, "to", end=True)
    assert caught.value.field == "to"
    assert caught.value.extra == {"field": "to"}


def test_time_text_is_limited() -> None:
    at_limit = "2024-05-01T10:00:00.123456+08:00:00.1234"
    assert len(at_limit) == TIME_TEXT_CHARS_MAX
    assert parse_time_bound(at_limit, "from") > 0
    with pytest.raises(InvalidHistoryFilterError):
        parse_time_bound(at_limit + "0", "from")


def test_from_must_not_be_after_to() -> None:
    with pytest.raises(InvalidHistoryFilterError, match="later than") as caught:
        history_filter(HistoryRequest(from_text="2024-05-02", to_text="2024-05-01"), "CNY")
    assert caught.value.field == "from"
    same = HistoryRequest(from_text="2024-05-01T10:00:00Z", to_text="2024-05-01T10:00:00Z")
    filters = history_filter(same, "CNY")
    assert filters.from_ts is not None and filters.until_ts == filters.from_ts + 1


# --- amounts, counterparty, currency ------------------------------------------------------


def test_an_amount_range_is_inclusive_in_the_accounts_currency() -> None:
    filters = history_filter(HistoryRequest(min_amount="10", max_amount="12.34"), "CNY")
    assert (filters.min_amount_minor, filters.max_amount_minor) == (1000, 1234)
    assert filters.matches(entry(amount="12.34")) and filters.matches(entry(amount="10.00"))
    assert not filters.matches(entry(amount="12.35"))
    assert not filters.matches(entry(amount="9.99"))


@pytest.mark.parametrize(
    ("min_amount", "max_amount", "field"),
    [
        ("12.345", None, "min_amount"),
        ("-1", None, "min_amount"),
        ("1e3", None, "min_amount"),
        (None, "12.5.0", "max_amount"),
        ("20", "10", "min_amount"),
        ("1" * 30, None, "min_amount"),
    ],
)
def test_a_bad_amount_bound_is_refused(
    min_amount: str | None, max_amount: str | None, field: str
) -> None:
    with pytest.raises(InvalidHistoryFilterError) as caught:
        history_filter(HistoryRequest(min_amount=min_amount, max_amount=max_amount), "CNY")
    assert caught.value.field == field


def test_an_amount_across_accounts_needs_a_currency() -> None:
    with pytest.raises(InvalidHistoryFilterError, match="currency") as caught:
        history_filter(HistoryRequest(min_amount="1.00"), None)
    assert caught.value.field == "min_amount"
    filters = history_filter(HistoryRequest(min_amount="1", currency="jpy"), None)
    assert (filters.currency, filters.min_amount_minor) == ("JPY", 1)
    with pytest.raises(InvalidHistoryFilterError, match="ISO 4217"):
        history_filter(HistoryRequest(currency="XXQ"), None)
    with pytest.raises(InvalidHistoryFilterError, match="holds CNY only"):
        history_filter(HistoryRequest(currency="USD"), "CNY")


def test_counterparty_matches_a_substring_with_ascii_case_folded() -> None:
    filters = history_filter(HistoryRequest(counterparty="  Best Shop "), "CNY")
    assert filters.counterparty == "best shop"
    assert filters.matches(entry(counterparty="THE BEST SHOP LTD"))
    assert not filters.matches(entry(counterparty="Best-Shop"))
    chinese = history_filter(HistoryRequest(counterparty="运输"), "CNY")
    assert chinese.matches(entry(counterparty="最佳运输"))
    assert history_filter(HistoryRequest(counterparty="   "), "CNY").counterparty is None


def test_counterparty_is_limited() -> None:
    at_limit = "x" * COUNTERPARTY_FILTER_CHARS_MAX
    assert history_filter(HistoryRequest(counterparty=at_limit), "CNY").counterparty == at_limit
    with pytest.raises(InvalidHistoryFilterError, match=str(COUNTERPARTY_FILTER_CHARS_MAX)):
        history_filter(HistoryRequest(counterparty=at_limit + "x"), "CNY")


def test_states_types_and_direction_filter_together() -> None:
    filters = HistoryFilter(
        states=frozenset({OrderState.SETTLED}),
        types=frozenset({EntryType.TRANSFER, EntryType.CASH_DEPOSIT}),
        direction=Direction.INCOMING,
    )
    assert filters.matches(entry(direction=Direction.INCOMING))
    assert not filters.matches(entry(direction=Direction.OUTGOING))
    assert not filters.matches(entry(direction=Direction.INCOMING, state=OrderState.RETURNED))
    assert not filters.matches(entry(direction=Direction.INCOMING, type_=EntryType.MERCHANT))


@pytest.mark.parametrize(("limit", "ok"), [(1, True), (PAGE_SIZE_MAX, True), (0, False)])
def test_page_size_is_one_to_the_maximum(limit: int, ok: bool) -> None:
    if ok:
        assert check_page_size(limit) == limit
    else:
        with pytest.raises(InvalidHistoryFilterError):
            check_page_size(limit)


def test_page_size_one_past_the_maximum_is_refused() -> None:
    with pytest.raises(InvalidHistoryFilterError, match=str(PAGE_SIZE_MAX)) as caught:
        check_page_size(PAGE_SIZE_MAX + 1)
    assert caught.value.field == "limit"


# --- sources --------------------------------------------------------------------------------


def test_only_the_sources_that_can_match_are_read() -> None:
    everything = (Source.PAYMENTS_OUT, Source.PAYMENTS_IN, Source.CASH_IN, Source.CASH_OUT)
    assert plan_sources(HistoryFilter(), with_cash=True) == everything
    assert plan_sources(HistoryFilter(), with_cash=False) == everything[:2]
    incoming = HistoryFilter(direction=Direction.INCOMING)
    assert plan_sources(incoming, with_cash=True) == (Source.PAYMENTS_IN, Source.CASH_IN)
    cash_only = HistoryFilter(types=frozenset({EntryType.CASH_WITHDRAWAL}))
    assert plan_sources(cash_only, with_cash=True) == (Source.CASH_OUT,)
    failed = HistoryFilter(states=frozenset({OrderState.FAILED}))
    assert plan_sources(failed, with_cash=True) == everything[:2]
    shop = HistoryFilter(counterparty="shop")
    assert plan_sources(shop, with_cash=True) == everything[:2]
    counter = HistoryFilter(counterparty=CASH_COUNTERPARTY.split()[-1])
    assert plan_sources(counter, with_cash=True) == everything


# --- cursors and merging ------------------------------------------------------------------


@given(st.integers(0, TIMESTAMP_US_MAX), st.uuids())
def test_a_cursor_round_trips(ts: int, entry_id: uuid.UUID) -> None:
    cursor = encode_cursor((ts, entry_id))
    assert len(cursor) <= CURSOR_CHARS_MAX
    assert decode_cursor(cursor) == (ts, entry_id)


def test_a_cursor_past_the_last_timestamp_is_refused() -> None:
    with pytest.raises(InvalidHistoryCursorError):
        decode_cursor(encode_cursor((TIMESTAMP_US_MAX + 1, uuid.UUID(int=1))))


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "x" * (CURSOR_CHARS_MAX + 1),
        base64.urlsafe_b64encode(b"h1:12:zz").decode(),
        base64.urlsafe_b64encode(b"h2:1:" + b"0" * 32).decode(),
        base64.urlsafe_b64encode(b"h1:01:" + b"0" * 32).decode().rstrip("="),
        base64.urlsafe_b64encode(b"h1:1:" + b"0" * 32).decode(),  # with padding: not ours
        base64.urlsafe_b64encode("h1:1:０".encode()).decode(),
    ],
)
def test_a_cursor_that_was_not_handed_out_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidHistoryCursorError, match="next_cursor"):
        decode_cursor(cursor)


def test_a_tampered_cursor_is_refused() -> None:
    cursor = encode_cursor((MAY_1_SHANGHAI_US, uuid.UUID(int=7)))
    for index in range(len(cursor)):
        for replacement in "A_":
            changed = cursor[:index] + replacement + cursor[index + 1 :]
            if changed == cursor:
                continue
            try:
                position = decode_cursor(changed)
            except InvalidHistoryCursorError:
                continue
            # A change that still decodes names another well-formed position.
            assert position != (MAY_1_SHANGHAI_US, uuid.UUID(int=7))


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 20), st.integers(0, 2**128 - 1)), max_size=12),
        max_size=4,
    ),
    st.integers(1, 10),
)
def test_a_merge_is_the_newest_entries_of_all_sources(
    sources: list[list[tuple[int, int]]], limit: int
) -> None:
    seen: set[int] = set()
    built: list[list[HistoryEntry]] = []
    for source in sources:
        rows = []
        for ts, number in source:
            if number in seen:
                continue
            seen.add(number)
            rows.append(entry(ts, entry_id=uuid.UUID(int=number)))
        rows.sort(key=lambda e: (e.ts, e.id.int), reverse=True)
        built.append(rows[: limit + 1])  # what each source is asked for
    everything = sorted(
        (e for rows in built for e in rows), key=lambda e: (e.ts, e.id.int), reverse=True
    )
    page, cursor = merge_page(built, limit)
    assert page == everything[:limit]
    assert (cursor is not None) == (len(everything) > limit)
    if cursor is not None:
        assert decode_cursor(cursor) == page[-1].position


# --- CSV ------------------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", CSV_FORMULA_TRIGGERS)
def test_a_cell_that_could_be_a_formula_is_quoted(trigger: str) -> None:
    assert csv_cell(f"{trigger}SUM(A1:A9)") == f"'{trigger}SUM(A1:A9)"


@pytest.mark.parametrize("value", ["", "12.34", "Best Shop", "最佳运输", "'=already", "a=b"])
def test_a_harmless_cell_is_unchanged(value: str) -> None:
    assert csv_cell(value) == value


def parse_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith(CSV_BOM)
    return list(csv.DictReader(io.StringIO(text[len(CSV_BOM) :], newline="")))


def test_the_csv_reads_back_as_the_entries() -> None:
    entries = [
        entry(MAY_1_SHANGHAI_US + i, memo=f'memo, "{i}"\n第{i}笔', counterparty="最佳运输")
        for i in range(CSV_CHUNK_ROWS + 3)
    ]
    entries.append(entry(memo='=HYPERLINK("http://evil")', counterparty="@boss"))
    entries.append(entry(type_=EntryType.CASH_DEPOSIT, balance_after=None))
    chunks = list(csv_chunks(entries))
    assert len(chunks) == 1 + 2  # the header, then two chunks of rows
    text = "".join(chunks)
    assert text.splitlines()[0] == CSV_BOM + ",".join(CSV_COLUMNS)
    assert "\r\n" in text
    rows = parse_csv(text)
    assert [list(row) for row in rows[:1]] == [list(CSV_COLUMNS)]
    expected = [entry_fields(e) for e in entries]
    expected[-2]["memo"] = "'" + expected[-2]["memo"]
    expected[-2]["counterparty"] = "'@boss"
    assert rows == expected
    assert rows[-1]["balance_after"] == ""
    assert rows[0]["time"] == "2024-05-01T00:00:00+08:00"


def test_an_empty_export_is_the_header_alone() -> None:
    assert "".join(csv_chunks([])) == CSV_BOM + ",".join(CSV_COLUMNS) + "\r\n"


def test_local_time_is_shanghai_iso_8601() -> None:
    assert local_time(MAY_1_SHANGHAI_US + 90 * US + 5) == "2024-05-01T00:01:30+08:00"


# --- receipts -------------------------------------------------------------------------------


def order(state: OrderState = OrderState.SETTLED, memo: str = "rent <May>") -> OrderView:
    order_id = uuid.UUID("01900000-0000-7000-8000-000000000001")
    steps = [OrderState.CREATED, OrderState.AUTHORIZED, OrderState.FUNDS_HELD, OrderState.SETTLED]
    if state is OrderState.RETURNED:
        steps.append(OrderState.RETURNED)
    transitions = tuple(
        Transition(None if i == 0 else steps[i - 1], s, MAY_1_SHANGHAI_US + i * US, "test", "")
        for i, s in enumerate(steps)
    )
    return OrderView(
        id=order_id,
        kind=PaymentKind.TRANSFER,
        state=state,
        channel="online",
        amount=Money.parse("1234.50", "CNY"),
        refunded=Money.zero("CNY"),
        debit_account_id=uuid.UUID(int=1),
        credit_account_id=uuid.UUID(int=2),
        payer_customer_id=uuid.UUID(int=3),
        payee_customer_id=uuid.UUID(int=4),
        merchant_id=None,
        payer_label="****1111",
        payee_label="****2222",
        memo=memo,
        external_ref=None,
        refund_of=None,
        risk_decision="allow",
        risk_reason="",
        route="intra_bank",
        hold_transfer_id=uuid.UUID(int=5),
        settle_transfer_id=uuid.UUID(int=6),
        failure_code=None,
        failure_detail=None,
        source_ref=None,
        created_ts=MAY_1_SHANGHAI_US,
        updated_ts=MAY_1_SHANGHAI_US + 4 * US,
        transitions=transitions,
    )


def document(state: OrderState = OrderState.SETTLED, memo: str = "rent <May>") -> dict[str, object]:
    return receipt_document(
        order(state, memo),
        bank_code="1024",
        payer_account="***************1111",
        payee_account="***************2222",
    )


def test_a_receipt_describes_the_settled_payment() -> None:
    doc = document()
    assert doc["receipt_number"] == "ZF20240501" + "01900000000070008000000000000001"
    assert doc["receipt_number"] == receipt_number(order().id, MAY_1_SHANGHAI_US + 3 * US)
    assert doc["amount"] == "1234.50" and doc["currency"] == "CNY"
    assert doc["settled_at"] == "2024-05-01T00:00:03+08:00"
    assert doc["returned_at"] is None
    assert doc["ledger_transfer_id"] == str(uuid.UUID(int=6))
    assert doc["payer"] == {"name": "****1111", "account": "***************1111"}
    returned = document(OrderState.RETURNED)
    assert returned["state"] == "returned"
    assert returned["returned_at"] == "2024-05-01T00:00:04+08:00"


@pytest.mark.parametrize(
    "state", [s for s in OrderState if s not in (OrderState.SETTLED, OrderState.RETURNED)]
)
def test_only_settled_or_returned_payments_have_receipts(state: OrderState) -> None:
    with pytest.raises(ReceiptNotAvailableError, match=state.value):
        receipt_document(order(state), bank_code="1024", payer_account=None, payee_account=None)


def test_the_canonical_json_is_one_byte_string_per_document() -> None:
    doc = document(memo="房租 5月")
    shuffled = dict(reversed(list(doc.items())))
    assert canonical_json(doc) == canonical_json(shuffled)
    assert "房租".encode() in canonical_json(doc)
    assert b'": ' not in canonical_json(doc) and b'", "' not in canonical_json(doc)
    assert canonical_json(doc).startswith(b'{"amount":"1234.50","as_of_ts":')
    assert json.loads(canonical_json(doc)) == doc


def test_a_signed_receipt_verifies_and_any_change_breaks_it() -> None:
    signed = sign_receipt(document(), SIGNER)
    assert signed.key_id == SIGNER.key_id and signed.algorithm == "Ed25519"
    public_key = base64.b64decode(signed.public_key)
    assert verify_receipt(signed.document, signed.signature, public_key)
    # The recipe of docs/payments.md, by hand.
    data = RECEIPT_SIGNATURE_DOMAIN + json.dumps(
        signed.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert SIGNER.sign(data) == base64.b64decode(signed.signature)

    changed = dict(signed.document, amount="1234.51")
    assert not verify_receipt(changed, signed.signature, public_key)
    raw = bytearray(base64.b64decode(signed.signature))
    raw[10] ^= 1
    assert not verify_receipt(signed.document, base64.b64encode(raw).decode(), public_key)
    assert not verify_receipt(signed.document, "not base64!", public_key)
    other = Ed25519Signer.from_seed(bytes(32)).public_key_bytes
    assert not verify_receipt(signed.document, signed.signature, other)


def test_the_printable_receipt_escapes_everything_and_loads_nothing() -> None:
    signed = sign_receipt(document(memo='<script>alert("x")</script> & co'), SIGNER)
    page = receipt_html(signed, "en")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    for external in ("src=", "href=", "http://", "https://", "@import", "url("):
        assert external not in page
    assert '<html lang="en">' in page and "Electronic receipt" in page
    assert "1,234.50 CNY" in page and signed.signature in page
    assert "2024-05-01 00:00:03 (Beijing time)" in page
    chinese = receipt_html(signed, "zh-CN")
    returned = receipt_html(sign_receipt(document(OrderState.RETURNED), SIGNER), "zh-CN")
    assert "已退回" in returned and "退回时间</th><td>2024-05-01 00:00:04 (北京时间)" in returned
    assert '<html lang="zh-CN">' in chinese and "电子回单" in chinese and "智付银行" in chinese
    # The page's one style block is the one its policy allows, by hash.
    digest = base64.b64encode(hashlib.sha256(RECEIPT_CSS.encode()).digest())
    assert f"'sha256-{digest.decode()}'" in RECEIPT_HTML_CSP
    assert f"<style>{RECEIPT_CSS}</style>" in page
    assert "default-src 'none'" in RECEIPT_HTML_CSP


# --- negotiation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format_", "accept", "html"),
    [
        (None, None, False),
        (None, "application/json", False),
        (None, "*/*", False),
        (None, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        (None, "application/json, text/html", False),
        (None, "text/html;q=0.5, application/json;q=0.9", False),
        (None, "text/html;q=0", False),
        (None, "text/html;q=abc, */*;q=0.1", False),  # a malformed weight counts as 0
        ("html", "application/json", True),
        ("json", "text/html", False),
    ],
)
def test_html_only_when_asked_for(format_: str | None, accept: str | None, html: bool) -> None:
    assert wants_html(format_, accept) is html


@pytest.mark.parametrize(
    ("lang", "header", "language"),
    [
        (None, None, "zh-CN"),
        (None, "en-US,en;q=0.9", "en"),
        (None, "zh-TW, en;q=0.5", "zh-CN"),
        (None, "fr, en;q=0.8, zh;q=0.5", "en"),
        (None, "zh;q=0, en;q=0.1", "en"),
        (None, "de", "zh-CN"),
        ("en", "zh-CN", "en"),
    ],
)
def test_the_language_follows_the_callers_preference(
    lang: Language | None, header: str | None, language: str
) -> None:
    assert pick_language(lang, header) == language

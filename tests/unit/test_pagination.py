"""Cursors and pages of the short lists that answer a JSON array
(``zhifu.api.pagination``): a cursor round-trips, anything it did not write
for the very same list is refused, and paging with any limit shows every item
exactly once in the list's order, with ``Link`` and ``X-Next-Cursor`` headers
while more follow."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from zhifu.api.pagination import (
    CURSOR_CHARS_MAX,
    KEY_INT_MAX,
    LIMIT_DEFAULT,
    LIMIT_MAX,
    NEXT_CURSOR_HEADER,
    InvalidCursorError,
    ListOrder,
    PageQuery,
    by_created,
    by_id,
    decode_cursor,
    encode_cursor,
    page_of,
)
from zhifu.api.problems import error_mapping_for, install_problem_handlers
from zhifu.invariant import InvariantError
from zhifu.payments.history import encode_cursor as encode_history_cursor


@dataclass(frozen=True)
class Item:
    created_ts: int
    id: uuid.UUID


OLDEST_FIRST = by_created("items")
NEWEST_FIRST = by_created("items", descending=True)
BY_ID = by_id("things")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


# --- cursors ---------------------------------------------------------------------------------


@given(st.integers(0, KEY_INT_MAX), st.uuids())
def test_a_cursor_round_trips(ts: int, item_id: uuid.UUID) -> None:
    cursor = encode_cursor(OLDEST_FIRST, (ts, item_id))
    assert len(cursor) <= CURSOR_CHARS_MAX
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(OLDEST_FIRST, cursor) == (ts, item_id)


def test_the_longest_cursor_fits_the_limit() -> None:
    longest = ListOrder("x" * 32, lambda _: (), (int, uuid.UUID, uuid.UUID))
    key = (KEY_INT_MAX, uuid.UUID(int=2**128 - 1), uuid.UUID(int=0))
    assert len(encode_cursor(longest, key)) <= CURSOR_CHARS_MAX


ZEROS = b"0" * 32


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "x" * (CURSOR_CHARS_MAX + 1),
        b64(b"l1:items:1:" + ZEROS) + "=",  # padded: not how it was written
        base64.urlsafe_b64encode(b"l1:items:12:" + ZEROS).decode(),  # padded
        base64.standard_b64encode(b"l1:items:1:" + b"\xfb" * 4).decode(),  # not URL-safe
        b64(b"l2:items:1:" + ZEROS),  # another version
        b64(b"l1:items:01:" + ZEROS),  # not the canonical number
        b64(b"l1:items:-1:" + ZEROS),
        b64(b"l1:items:1:" + ZEROS.upper().replace(b"0", b"A")),  # upper-case hex
        b64(b"l1:items:1:" + b"0" * 31),
        b64(b"l1:items:1"),  # a part missing
        b64(b"l1:items:1:" + ZEROS + b":2"),  # a part too many
        b64(b"l1:items:" + str(KEY_INT_MAX + 1).encode() + b":" + ZEROS),
        b64(b"l1:things:1:" + ZEROS),  # another list's name
        b64("l1:items:１:".encode() + ZEROS),  # a full-width digit
        b64(b"\xff\xfe"),
        encode_history_cursor((1, uuid.UUID(int=1))),  # a history cursor
    ],
)
def test_a_cursor_that_was_not_handed_out_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursorError, match="start again without a cursor"):
        decode_cursor(OLDEST_FIRST, cursor)


def test_another_lists_cursor_is_refused() -> None:
    item_id = uuid.UUID(int=5)
    with pytest.raises(InvalidCursorError):
        decode_cursor(by_created("cards"), encode_cursor(by_created("accounts"), (1, item_id)))
    with pytest.raises(InvalidCursorError):  # same name, another shape
        decode_cursor(by_id("items"), encode_cursor(OLDEST_FIRST, (1, item_id)))


def test_a_tampered_cursor_is_refused_or_names_another_position() -> None:
    key = (1_714_500_000_000_000, uuid.UUID(int=7))
    cursor = encode_cursor(OLDEST_FIRST, key)
    for index in range(len(cursor)):
        for replacement in "A_9":
            changed = cursor[:index] + replacement + cursor[index + 1 :]
            if changed == cursor:
                continue
            try:
                decoded = decode_cursor(OLDEST_FIRST, changed)
            except InvalidCursorError:
                continue
            assert decoded != key


def test_the_cursor_error_is_a_400_invalid_cursor_problem() -> None:
    assert InvalidCursorError.code == "invalid_cursor"
    mapping = error_mapping_for(InvalidCursorError("x"))
    assert mapping is not None
    assert (mapping.status, mapping.slug) == (400, "invalid-cursor")


def test_a_key_that_does_not_fit_the_order_is_a_bug() -> None:
    with pytest.raises(InvariantError):
        encode_cursor(OLDEST_FIRST, (uuid.UUID(int=1), 1))
    with pytest.raises(InvariantError):
        encode_cursor(OLDEST_FIRST, (-1, uuid.UUID(int=1)))
    with pytest.raises(InvariantError):
        encode_cursor(OLDEST_FIRST, (1,))
    with pytest.raises(InvariantError):
        ListOrder("Not A Name", lambda _: (), (int,))


# --- pages -----------------------------------------------------------------------------------


def walk(items: list[Item], order: ListOrder[Any], limit: int) -> list[Item]:
    """Every page, following the cursors as a client would."""
    seen: list[Item] = []
    after = None
    for _ in range(len(items) + 2):
        page, last = page_of(items, order, limit, after)
        seen.extend(page)
        if last is None:
            return seen
        assert len(page) == limit
        after = decode_cursor(order, encode_cursor(order, last))
    pytest.fail("paging did not end")


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**128 - 1)), max_size=30),
    st.integers(1, 12),
    st.booleans(),
)
def test_paging_shows_every_item_once_in_order(
    rows: list[tuple[int, int]], limit: int, descending: bool
) -> None:
    items = list({Item(ts, uuid.UUID(int=n)) for ts, n in rows})
    order = NEWEST_FIRST if descending else OLDEST_FIRST
    expected = sorted(items, key=lambda i: (i.created_ts, i.id), reverse=descending)
    assert walk(items, order, limit) == expected


def test_equal_times_are_ordered_by_id() -> None:
    a, b, c = (Item(10, uuid.UUID(int=n)) for n in (3, 1, 2))
    assert page_of([a, b, c], OLDEST_FIRST, 3, None) == ([b, c, a], None)
    assert page_of([a, b, c], NEWEST_FIRST, 3, None) == ([a, c, b], None)


def test_an_item_added_or_removed_meanwhile_moves_nothing() -> None:
    items = [Item(ts, uuid.UUID(int=ts)) for ts in (1, 2, 3, 4)]
    first, last = page_of(items, OLDEST_FIRST, 2, None)
    assert first == items[:2]
    assert last == (2, uuid.UUID(int=2))
    changed = [items[0], items[2], items[3], Item(0, uuid.UUID(int=99)), Item(5, uuid.UUID(int=5))]
    second, _ = page_of(changed, OLDEST_FIRST, 2, last)
    assert second == [items[2], items[3]]


def test_a_cursor_past_the_end_gives_an_empty_last_page() -> None:
    items = [Item(1, uuid.UUID(int=1))]
    assert page_of(items, OLDEST_FIRST, 1, (9, uuid.UUID(int=9))) == ([], None)
    assert page_of([], OLDEST_FIRST, 1, None) == ([], None)


def test_a_limit_out_of_range_is_a_bug_here() -> None:
    with pytest.raises(InvariantError):
        page_of([], OLDEST_FIRST, 0, None)
    with pytest.raises(InvariantError):
        page_of([], OLDEST_FIRST, LIMIT_MAX + 1, None)


# --- over HTTP: query parameters and headers -------------------------------------------------

ITEMS = [Item(ts, uuid.UUID(int=1000 + ts)) for ts in range(7)]


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/items")
    async def items(pager: PageQuery) -> list[str]:
        return [str(i.id) for i in pager.page(ITEMS, OLDEST_FIRST)]

    with TestClient(app) as client:
        yield client


def test_limits_at_the_edges(client: TestClient) -> None:
    assert len(client.get("/items").json()) == min(len(ITEMS), LIMIT_DEFAULT)
    assert client.get("/items", params={"limit": 1}).status_code == 200
    assert client.get("/items", params={"limit": LIMIT_MAX}).status_code == 200
    for bad in (0, LIMIT_MAX + 1, -1, "ten"):
        response = client.get("/items", params={"limit": bad})
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["query.limit"]


def test_the_link_header_keeps_the_query_and_names_the_next_cursor(client: TestClient) -> None:
    response = client.get("/items", params=[("limit", "3"), ("tag", "a"), ("tag", "b")])
    assert response.json() == [str(i.id) for i in ITEMS[:3]]
    cursor = response.headers[NEXT_CURSOR_HEADER]
    assert response.headers["link"] == f'</items?limit=3&tag=a&tag=b&cursor={cursor}>; rel="next"'
    ids: list[str] = response.json()
    while NEXT_CURSOR_HEADER in response.headers:
        url = response.headers["link"].split(">")[0].removeprefix("<")
        response = client.get(url)
        assert response.status_code == 200
        ids.extend(response.json())
    assert "link" not in response.headers
    assert ids == [str(i.id) for i in ITEMS]


def test_a_bad_cursor_is_a_400_problem(client: TestClient) -> None:
    response = client.get("/items", params={"cursor": "bm90IG91cnM"})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "https://zhifu.dev/problems/invalid-cursor"
    assert body["code"] == "invalid_cursor"
    assert "start again without a cursor" in body["detail"]

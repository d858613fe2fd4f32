"""Paging through the short lists that keep answering a JSON array.

Every list of the public API is paginated. The long ones (history, ledger,
audit) answer a page object that says where the next page starts. The lists a quota keeps
short (my accounts, cards, payees, schedules, sessions...) answer a JSON array,
as they always have, and tell where the next page is in headers, like GitHub's
API (RFC 8288):

- ``limit``: 1 to :data:`LIMIT_MAX` items, :data:`LIMIT_DEFAULT` when left out;
  anything else is 422.
- ``cursor``: leave it out for the first page, then pass ``X-Next-Cursor``.
- When more items follow, the answer carries
  ``Link: </v1/payees?limit=50&cursor=...>; rel="next"`` (the same path and
  query, with the next cursor) and ``X-Next-Cursor``. Neither header: the
  last page.

A cursor is the URL-safe base64 (no padding) of ``l1:<list>:<part>:...``: the
list's name and the sort key of the last item shown (integers in decimal, UUIDs
as 32 hex digits). It is opaque to clients and checked strictly: one this
module did not write for this very list (mangled, made up, another list's) is
400 ``invalid-cursor``, as history cursors are. A page holds the items after
that key in the list's order, not an offset, so an item added or removed
meanwhile never makes another one skip or repeat.

These lists are read whole and sliced here: each is bounded by its context's
quota (say ``ACCOUNTS_PER_CUSTOMER_MAX``), so the read costs no more than the
unpaginated list did. A list that can grow without bound must page in its
store instead.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Generic, TypeVar

from fastapi import Depends, Query, Request, Response

from zhifu.api.problems import problem_responses, register_error_mapping
from zhifu.invariant import InvariantError, invariant

T = TypeVar("T")

LIMIT_DEFAULT: Final = 50
LIMIT_MAX: Final = 200
LINK_HEADER: Final = "Link"
NEXT_CURSOR_HEADER: Final = "X-Next-Cursor"
# For CORS ``expose_headers``: what a browser client needs to read to page on.
PAGINATION_HEADERS: Final = (LINK_HEADER, NEXT_CURSOR_HEADER)

# A list's name: lower-case words joined by '-', at most this long.
LIST_NAME_CHARS_MAX: Final = 32
# Parts of a sort key: (created_ts, id) needs two.
KEY_PARTS_MAX: Final = 3
# Integer parts are timestamps and counters: never negative, at most a signed 64-bit value.
KEY_INT_MAX: Final = 2**63 - 1
_VERSION: Final = "l1"
_RAW_CHARS_MAX: Final = len(_VERSION) + 1 + LIST_NAME_CHARS_MAX + KEY_PARTS_MAX * (1 + 32)
CURSOR_CHARS_MAX: Final = 4 * -(-_RAW_CHARS_MAX // 3)

_LIST_NAME: Final = re.compile(r"[a-z]+(?:-[a-z]+)*")
_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]+")
_INT_TEXT: Final = re.compile(r"0|[1-9][0-9]{0,18}")
_UUID_TEXT: Final = re.compile(r"[0-9a-f]{32}")

KeyPart = int | uuid.UUID
SortKey = tuple[KeyPart, ...]


class InvalidCursorError(ValueError):
    """A ``cursor`` is not one this list handed out (mangled, made up, another list's)."""

    code = "invalid_cursor"


register_error_mapping(InvalidCursorError, 400, "invalid-cursor", "Invalid cursor")


@dataclass(frozen=True, slots=True)
class ListOrder(Generic[T]):
    """How one list is ordered: its ``name`` (bound into its cursors), the
    ``key`` of an item (unique: it ends with the item's id), the type of each
    key part, and whether the list runs from the largest key down."""

    name: str
    key: Callable[[T], SortKey]
    parts: tuple[type[int] | type[uuid.UUID], ...]
    descending: bool = False

    def __post_init__(self) -> None:
        invariant(
            len(self.name) <= LIST_NAME_CHARS_MAX and _LIST_NAME.fullmatch(self.name) is not None,
            f"bad list name {self.name!r}",
        )
        invariant(
            1 <= len(self.parts) <= KEY_PARTS_MAX, f"{self.name}: 1 to {KEY_PARTS_MAX} key parts"
        )


def by_created(name: str, *, descending: bool = False) -> ListOrder[Any]:
    """Oldest first (or newest first), the id breaking ties between equal times."""
    return ListOrder(name, lambda item: (item.created_ts, item.id), (int, uuid.UUID), descending)


def by_id(name: str, *, descending: bool = False) -> ListOrder[Any]:
    """By id alone (time-ordered ids: oldest first, or newest first)."""
    return ListOrder(name, lambda item: (item.id,), (uuid.UUID,), descending)


# --- cursors ---------------------------------------------------------------------------------


def _part_text(part: KeyPart, kind: type[int] | type[uuid.UUID]) -> str:
    if kind is uuid.UUID and isinstance(part, uuid.UUID):
        return part.hex
    if kind is int and type(part) is int and 0 <= part <= KEY_INT_MAX:
        return str(part)
    raise InvariantError(f"key part {part!r} is not a key {kind.__name__}")


def encode_cursor(order: ListOrder[Any], key: SortKey) -> str:
    """The opaque cursor for "after the item whose sort key is ``key``"."""
    invariant(len(key) == len(order.parts), f"{order.name}: key {key!r} has the wrong shape")
    texts = [_part_text(part, kind) for part, kind in zip(key, order.parts, strict=True)]
    raw = ":".join([_VERSION, order.name, *texts]).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _part_of(text: str, kind: type[int] | type[uuid.UUID]) -> KeyPart | None:
    if kind is uuid.UUID:
        return uuid.UUID(hex=text) if _UUID_TEXT.fullmatch(text) else None
    if _INT_TEXT.fullmatch(text) is None or int(text) > KEY_INT_MAX:
        return None
    return int(text)


def decode_cursor(order: ListOrder[Any], cursor: str) -> SortKey:
    """The sort key a cursor of ``order``'s list stands for.

    Raises:
        InvalidCursorError: the cursor is not exactly one :func:`encode_cursor`
            wrote for this list.
    """
    refused = InvalidCursorError(
        "this cursor is not one this list handed out: start again without a cursor and"
        f" follow the Link header (rel=next) or {NEXT_CURSOR_HEADER}"
    )
    if not cursor or len(cursor) > CURSOR_CHARS_MAX or not _ALPHABET.fullmatch(cursor):
        raise refused
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise refused from None
    version, _, rest = raw.partition(":")
    name, _, key_text = rest.partition(":")
    texts = key_text.split(":")
    if (version, name) != (_VERSION, order.name) or len(texts) != len(order.parts):
        raise refused
    parts = [_part_of(text, kind) for text, kind in zip(texts, order.parts, strict=True)]
    key = tuple(part for part in parts if part is not None)
    if len(key) != len(parts) or encode_cursor(order, key) != cursor:
        raise refused
    return key


# --- pages -----------------------------------------------------------------------------------


def page_of(
    items: Iterable[T], order: ListOrder[T], limit: int, after: SortKey | None
) -> tuple[list[T], SortKey | None]:
    """The first ``limit`` items past ``after`` in ``order``, and the key of the
    last one when more follow (else None).

    Sorting here keeps the list's order and makes it total where the store
    sorts by a time alone: the key ends with the id.
    """
    invariant(1 <= limit <= LIMIT_MAX, f"limit {limit} out of range")
    ordered = sorted(items, key=order.key, reverse=order.descending)
    if after is not None:
        ordered = [
            item
            for item in ordered
            if (order.key(item) < after if order.descending else order.key(item) > after)
        ]
    page = ordered[:limit]
    more = len(ordered) > limit
    return page, order.key(page[-1]) if more and page else None


Limit = Annotated[
    int,
    Query(
        ge=1,
        le=LIMIT_MAX,
        description=f"Items per page: 1 to {LIMIT_MAX} (default {LIMIT_DEFAULT}).",
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        description=f"Leave out for the first page; then the {NEXT_CURSOR_HEADER} header of the"
        " page before (the Link header rel=next holds the whole URL). Opaque; one not handed"
        " out for this list is 400 invalid-cursor.",
    ),
]


@dataclass(frozen=True, slots=True)
class Pager:
    """A request's ``limit`` and ``cursor``; :meth:`page` slices a list and sets
    the ``Link`` and ``X-Next-Cursor`` headers of the response."""

    limit: int
    cursor: str | None
    request: Request
    response: Response

    def page(self, items: Iterable[T], order: ListOrder[T]) -> list[T]:
        """This request's page of ``items``. Raises InvalidCursorError (400)."""
        after = None if self.cursor is None else decode_cursor(order, self.cursor)
        page, last = page_of(items, order, self.limit, after)
        if last is not None:
            next_cursor = encode_cursor(order, last)
            url = self.request.url.include_query_params(cursor=next_cursor)
            # Path and query only: a Link relative to the request needs no
            # trust in the Host header or in proxies' idea of the scheme.
            self.response.headers[LINK_HEADER] = f'<{url.path}?{url.query}>; rel="next"'
            self.response.headers[NEXT_CURSOR_HEADER] = next_cursor
        return page


async def pager(
    request: Request, response: Response, limit: Limit = LIMIT_DEFAULT, cursor: Cursor = None
) -> Pager:
    return Pager(limit=limit, cursor=cursor, request=request, response=response)


PageQuery = Annotated[Pager, Depends(pager)]

_HEADERS_DOC: Final = {
    LINK_HEADER: {
        "description": 'RFC 8288, only when more items follow: `<URL>; rel="next"`, the'
        " same path and query with the next page's cursor.",
        "schema": {"type": "string"},
    },
    NEXT_CURSOR_HEADER: {
        "description": "Only when more items follow: the cursor of the next page.",
        "schema": {"type": "string"},
    },
}
# ``responses=`` of a paginated list: the page's headers, and the bad cursor (400).
PAGE_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "One page of the list, in the list's order (see limit and cursor).",
        "headers": _HEADERS_DOC,
    },
    **problem_responses(400),
}

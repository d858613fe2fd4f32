"""Paging through the short lists over real HTTP against a real ``zhifu serve``:
with ``limit=1`` a client follows the ``Link: <...>; rel="next"`` header (and
``X-Next-Cursor``) from the first page to the last and sees every account,
card, payee and session exactly once, in the list's order; ``limit`` is 1 to
200 (422 past either end), and a tampered cursor, or another list's, is a 400
``invalid-cursor`` problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import LiveServer
from identity_actors import Bank, Customer

from zhifu.api.pagination import LIMIT_MAX, NEXT_CURSOR_HEADER

pytestmark = pytest.mark.xdist_group("pagination_http")

Problem = Callable[..., dict[str, Any]]
CNY_CURRENT = {"product": "current", "account_class": "I", "currency": "CNY"}
NEXT_LINK = re.compile(r'<(?P<url>[^>]+)>; rel="next"')
PAGES_MAX = 50


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def alice(bank: Bank) -> tuple[Customer, str]:
    customer = bank.register()
    return customer, bank.sign_in(customer)


@pytest.fixture(scope="module")
def accounts(bank: Bank, alice: tuple[Customer, str]) -> list[dict[str, Any]]:
    return [open_account(bank, alice[1], nickname=f"Pot {n}") for n in range(3)]


def open_account(bank: Bank, token: str, **overrides: Any) -> dict[str, Any]:
    response = bank.call("POST", "/v1/accounts", token, json={**CNY_CURRENT, **overrides})
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def walk(bank: Bank, token: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a list, page by page, following the Link header as a client would."""
    response = bank.call("GET", path, token, params=params)
    items: list[dict[str, Any]] = []
    for _ in range(PAGES_MAX):
        assert response.status_code == 200, response.text
        page = response.json()
        assert isinstance(page, list)
        items.extend(page)
        link = response.headers.get("link")
        if link is None:
            assert NEXT_CURSOR_HEADER not in response.headers
            return items
        assert len(page) == params["limit"]
        match = NEXT_LINK.fullmatch(link)
        assert match is not None, link
        url = match["url"]
        assert url.startswith(path + "?")
        assert f"limit={params['limit']}" in url
        assert url.endswith("cursor=" + response.headers[NEXT_CURSOR_HEADER])
        response = bank.call("GET", url, token)
    pytest.fail(f"{path} did not end within {PAGES_MAX} pages")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [str(item["id"]) for item in items]


def test_accounts_page_one_by_one_in_the_same_order(
    bank: Bank, alice: tuple[Customer, str], accounts: list[dict[str, Any]]
) -> None:
    token = alice[1]
    whole = bank.call("GET", "/v1/accounts", token)
    assert whole.status_code == 200
    assert "link" not in whole.headers  # three accounts fit the default page
    assert ids(whole.json()) == ids(accounts)  # oldest first, as before
    paged = walk(bank, token, "/v1/accounts", {"limit": 1})
    assert ids(paged) == ids(accounts)
    assert len(set(ids(paged))) == len(accounts)
    two = walk(bank, token, "/v1/accounts", {"limit": 2})
    assert ids(two) == ids(accounts)


def test_staff_page_through_a_customers_accounts(
    bank: Bank, alice: tuple[Customer, str], accounts: list[dict[str, Any]]
) -> None:
    admin_token = bank.staff_sign_in(bank.create_admin("pagination-admin"))
    customer_id = bank.call("GET", "/v1/me", alice[1]).json()["id"]
    path = f"/v1/admin/customers/{customer_id}/accounts"
    assert ids(walk(bank, admin_token, path, {"limit": 1})) == ids(accounts)


def test_cards_page_one_by_one(
    bank: Bank, alice: tuple[Customer, str], accounts: list[dict[str, Any]]
) -> None:
    token = alice[1]
    issued = []
    for account in accounts[:2]:
        for _ in range(2):
            response = bank.call("POST", f"/v1/accounts/{account['id']}/cards", token)
            assert response.status_code == 201, response.text
            issued.append(response.json())
    of_first = walk(bank, token, f"/v1/accounts/{accounts[0]['id']}/cards", {"limit": 1})
    assert ids(of_first) == ids(issued[:2])
    assert ids(walk(bank, token, "/v1/cards", {"limit": 1})) == ids(issued)


def test_payees_page_one_by_one(bank: Bank, alice: tuple[Customer, str]) -> None:
    customer, token = alice
    other_token = bank.sign_in(bank.register())
    added = []
    for n in range(3):
        number = open_account(bank, other_token)["number"]
        bank.remember("payee number", number)
        body = {"account_number": number, "name": "欧阳娜娜", "nickname": f"Payee {n}"}
        response = bank.sensitive(customer, token, "POST", "/v1/payees", json=body)
        assert response.status_code == 201, response.text
        added.append(response.json())
    paged = walk(bank, token, "/v1/payees", {"limit": 1})
    assert ids(paged) == ids(added)  # oldest first
    assert ids(bank.call("GET", "/v1/payees", token).json()) == ids(added)


def test_sessions_page_newest_first(bank: Bank) -> None:
    customer = bank.register()
    tokens = [bank.sign_in(customer) for _ in range(3)]
    whole = bank.call("GET", "/v1/me/sessions", tokens[-1]).json()
    assert len(whole) == 3
    created = [session["created_ts"] for session in whole]
    assert created == sorted(created, reverse=True)
    paged = walk(bank, tokens[-1], "/v1/me/sessions", {"limit": 1})
    assert ids(paged) == ids(whole)


@pytest.mark.parametrize("path", ["/v1/accounts", "/v1/payees", "/v1/me/sessions"])
def test_limit_is_one_to_the_maximum(
    bank: Bank,
    alice: tuple[Customer, str],
    accounts: list[dict[str, Any]],
    assert_problem: Problem,
    path: str,
) -> None:
    token = alice[1]
    for limit in (1, LIMIT_MAX):
        assert bank.call("GET", path, token, params={"limit": limit}).status_code == 200
    for limit in (0, LIMIT_MAX + 1):
        response = bank.call("GET", path, token, params={"limit": limit})
        problem = assert_problem(response, 422, "invalid-request")
        assert [error["field"] for error in problem["errors"]] == ["query.limit"]


def test_a_tampered_or_foreign_cursor_is_refused(
    bank: Bank, alice: tuple[Customer, str], accounts: list[dict[str, Any]], assert_problem: Problem
) -> None:
    token = alice[1]
    first = bank.call("GET", "/v1/accounts", token, params={"limit": 1})
    cursor = first.headers[NEXT_CURSOR_HEADER]
    flipped = ("A" if cursor[0] != "A" else "B") + cursor[1:]  # the version is gone
    for bad in (flipped, cursor + "A", cursor + "=", "not-a-cursor", ""):
        response = bank.call("GET", "/v1/accounts", token, params={"limit": 1, "cursor": bad})
        problem = assert_problem(response, 400, "invalid-cursor")
        assert problem["code"] == "invalid_cursor"
        assert cursor not in response.text
    # A cursor of one list means nothing to another.
    foreign = bank.call("GET", "/v1/cards", token, params={"cursor": cursor})
    assert_problem(foreign, 400, "invalid-cursor")
    again = bank.call("GET", "/v1/accounts", token, params={"limit": 1, "cursor": cursor})
    assert again.status_code == 200
    assert ids(again.json()) == ids(accounts[1:2])

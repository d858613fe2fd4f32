"""Bank accounts and debit cards over real HTTP against a real ``zhifu serve``:
a customer opens an account, a teller funds it at the counter (exactly once
per Idempotency-Key), the customer sees the balance, freezes the account and
the teller can no longer pay out, lifts the freeze with a step-up, manages
cards, and closes the account once it is empty. Staff see the accounts with
their numbers masked. Every refusal is a clear problem that changed nothing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import LiveServer
from identity_actors import Bank, Customer, Staff

from zhifu.accounts.model import format_digit_groups, is_token, luhn_valid

pytestmark = pytest.mark.xdist_group("accounts_http")

Problem = Callable[..., dict[str, Any]]
CNY_CURRENT = {"product": "current", "account_class": "I", "currency": "CNY"}
MASKED_PAN = re.compile(r"623088\*{6}\d{4}")


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def admin_token(bank: Bank) -> str:
    return bank.staff_sign_in(bank.create_admin("accounts-admin"))


@pytest.fixture(scope="module")
def teller(bank: Bank, admin_token: str) -> tuple[Staff, str]:
    """A teller: created by one admin, the role granted by a second (four eyes)."""
    checker_token = bank.staff_sign_in(bank.create_admin("accounts-checker"))
    teller = bank.create_staff(admin_token, "teller")
    bank.grant_role(admin_token, checker_token, teller, "teller")
    return teller, bank.staff_sign_in(teller)


@pytest.fixture(scope="module")
def teller_token(teller: tuple[Staff, str]) -> str:
    return teller[1]


def signed_in(bank: Bank) -> tuple[Customer, str]:
    customer = bank.register()
    return customer, bank.sign_in(customer)


def open_account(bank: Bank, token: str, **overrides: Any) -> dict[str, Any]:
    response = bank.call("POST", "/v1/accounts", token, json={**CNY_CURRENT, **overrides})
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def cash(
    bank: Bank,
    teller_token: str,
    kind: str,
    body: dict[str, Any],
    key: str | None = None,
) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return bank.call("POST", f"/v1/teller/{kind}", teller_token, json=body, headers=headers)


def account_of(bank: Bank, token: str, account_id: str) -> dict[str, Any]:
    response = bank.call("GET", f"/v1/accounts/{account_id}", token)
    assert response.status_code == 200, response.text
    account: dict[str, Any] = response.json()
    return account


def test_a_teller_funds_a_customer_who_then_freezes_and_closes(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    customer, token = signed_in(bank)
    account = open_account(bank, token, nickname="  Daily   spending ")
    assert account["nickname"] == "Daily spending"
    assert account["is_default"] and account["status"] == "open"
    assert len(account["number"]) == 19 and luhn_valid(account["number"])
    assert account["number_masked"] == "*" * 15 + account["number"][-4:]
    assert (account["balance"], account["available"]) == ("0.00", "0.00")

    # The customer reads the number out at the counter, in groups.
    key = "deposit-" + secrets.token_hex(6)
    body = {"account_number": format_digit_groups(account["number"]), "amount": "500.00"}
    body["currency"] = "CNY"
    first = cash(bank, teller_token, "deposits", body, key)
    assert first.status_code == 200, first.text
    receipt = first.json()
    assert receipt["kind"] == "deposit" and receipt["amount"] == "500.00"
    assert receipt["account_id"] == account["id"] and not receipt["replayed"]
    assert account["number"] not in first.text  # the receipt masks the number

    again = cash(bank, teller_token, "deposits", body, key)
    assert again.status_code == 200 and again.json()["replayed"]
    assert again.json()["transfer_id"] == receipt["transfer_id"]
    conflict = cash(bank, teller_token, "deposits", {**body, "amount": "5000.00"}, key)
    assert_problem(conflict, 409, "idempotency-conflict")
    assert_problem(cash(bank, teller_token, "deposits", body), 400, "invalid-idempotency-key")
    assert_problem(
        cash(bank, teller_token, "deposits", body, "no spaces allowed"),
        400,
        "invalid-idempotency-key",
    )
    as_float = cash(bank, teller_token, "deposits", {**body, "amount": 12.5}, "float-1")
    problem = assert_problem(as_float, 422, "invalid-request")
    assert "decimal strings" in str(problem["errors"])
    too_precise = cash(bank, teller_token, "deposits", {**body, "amount": "1.001"}, "precise-1")
    assert_problem(too_precise, 422, "invalid-amount")
    both = cash(bank, teller_token, "deposits", {**body, "account_id": account["id"]}, "both-1")
    assert_problem(both, 422, "invalid-request")
    assert account_of(bank, token, account["id"])["balance"] == "500.00"

    # Frozen: money still arrives, none leaves.
    frozen = bank.call("POST", f"/v1/accounts/{account['id']}/freeze", token)
    assert frozen.status_code == 200 and frozen.json()["status"] == "frozen"
    by_id = {"account_id": account["id"], "amount": "100.00", "currency": "CNY"}
    refused = cash(bank, teller_token, "withdrawals", by_id, "w-frozen")
    assert_problem(refused, 409, "account-frozen")
    assert cash(bank, teller_token, "deposits", by_id, "d-frozen").status_code == 200
    assert account_of(bank, token, account["id"])["balance"] == "600.00"

    # Lifting the freeze needs a step-up; then the teller pays out.
    path = f"/v1/accounts/{account['id']}/unfreeze"
    assert_problem(bank.call("POST", path, token), 403, "step-up-required")
    unfrozen = bank.sensitive(customer, token, "POST", path)
    assert unfrozen.status_code == 200 and unfrozen.json()["status"] == "open"
    assert cash(bank, teller_token, "withdrawals", by_id, "w-open").status_code == 200
    too_much = cash(bank, teller_token, "withdrawals", {**by_id, "amount": "500.01"}, "w-big")
    assert_problem(too_much, 409, "insufficient-funds")
    assert account_of(bank, token, account["id"])["balance"] == "500.00"

    close = f"/v1/accounts/{account['id']}/close"
    assert_problem(bank.call("POST", close, token), 409, "account-state")
    paid_out = cash(bank, teller_token, "withdrawals", {**by_id, "amount": "500.00"}, "w-all")
    assert paid_out.status_code == 200, paid_out.text
    closed = bank.call("POST", close, token)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert_problem(cash(bank, teller_token, "deposits", by_id, "d-closed"), 409, "account-state")


def test_cards_are_masked_frozen_lost_and_reissued(bank: Bank, assert_problem: Problem) -> None:
    customer, token = signed_in(bank)
    account = open_account(bank, token)
    issued = bank.call("POST", f"/v1/accounts/{account['id']}/cards", token)
    assert issued.status_code == 201, issued.text
    card = issued.json()
    assert MASKED_PAN.fullmatch(card["pan_masked"]), card
    assert is_token(card["token"]) and card["status"] == "active"
    assert re.fullmatch(r"\d\d/\d\d", card["expiry"])

    frozen = bank.call("POST", f"/v1/cards/{card['id']}/freeze", token)
    assert frozen.json()["status"] == "frozen"
    unfrozen = bank.sensitive(customer, token, "POST", f"/v1/cards/{card['id']}/unfreeze")
    assert unfrozen.status_code == 200 and unfrozen.json()["status"] == "active"
    lost = bank.call("POST", f"/v1/cards/{card['id']}/report-lost", token)
    assert lost.status_code == 200 and lost.json()["status"] == "lost"
    problem = assert_problem(
        bank.call("POST", f"/v1/cards/{card['id']}/unfreeze", token), 409, "card-state"
    )
    assert problem["code"] == "card_state" and "reissue" in problem["detail"]

    reissued = bank.call("POST", f"/v1/cards/{card['id']}/reissue", token)
    assert reissued.status_code == 201, reissued.text
    new = reissued.json()
    assert new["status"] == "active" and new["token"] != card["token"]
    assert_problem(bank.call("POST", f"/v1/cards/{card['id']}/reissue", token), 409, "card-state")
    mine = bank.call("GET", "/v1/cards", token).json()
    assert [(c["id"], c["status"], c["replaced_by"]) for c in mine] == [
        (card["id"], "lost", new["id"]),
        (new["id"], "active", None),
    ]
    # Closing the account closes its live cards.
    closed = bank.call("POST", f"/v1/accounts/{account['id']}/close", token)
    assert closed.status_code == 200, closed.text
    after = bank.call("GET", f"/v1/accounts/{account['id']}/cards", token).json()
    assert [c["status"] for c in after] == ["lost", "closed"]


def test_nicknames_defaults_and_refused_openings(bank: Bank, assert_problem: Problem) -> None:
    _, token = signed_in(bank)
    first, second = open_account(bank, token), open_account(bank, token)
    usd = open_account(bank, token, currency="USD", product="savings")
    assert (first["is_default"], second["is_default"], usd["is_default"]) == (True, False, True)
    patched = bank.call(
        "PATCH",
        f"/v1/accounts/{second['id']}",
        token,
        json={"nickname": "Rent", "is_default": True},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["nickname"] == "Rent" and patched.json()["is_default"]
    listed = {a["id"]: a for a in bank.call("GET", "/v1/accounts", token).json()}
    assert not listed[first["id"]]["is_default"] and listed[usd["id"]]["is_default"]

    bad_name = bank.call(
        "PATCH", f"/v1/accounts/{first['id']}", token, json={"nickname": "a\u202eb"}
    )
    assert assert_problem(bad_name, 422, "invalid-input")["code"] == "invalid_nickname"
    empty = bank.call("PATCH", f"/v1/accounts/{first['id']}", token, json={})
    assert_problem(empty, 422, "invalid-input")
    class_iii_usd = bank.call(
        "POST",
        "/v1/accounts",
        token,
        json={**CNY_CURRENT, "account_class": "III", "currency": "USD"},
    )
    problem = assert_problem(class_iii_usd, 422, "invalid-input")
    assert problem["code"] == "unsupported_currency" and "Class III" in problem["detail"]
    savings_iii = bank.call(
        "POST",
        "/v1/accounts",
        token,
        json={**CNY_CURRENT, "product": "savings", "account_class": "III"},
    )
    assert assert_problem(savings_iii, 422, "invalid-input")["code"] == "unknown_product"
    assert len(bank.call("GET", "/v1/accounts", token).json()) == 3


def test_an_opening_retried_with_its_key_opens_one_account(bank: Bank) -> None:
    _, token = signed_in(bank)
    headers = {"Idempotency-Key": "open-" + secrets.token_hex(6)}
    first = bank.call("POST", "/v1/accounts", token, json=CNY_CURRENT, headers=headers)
    again = bank.call("POST", "/v1/accounts", token, json=CNY_CURRENT, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = bank.call(
        "POST", "/v1/accounts", token, json={**CNY_CURRENT, "currency": "USD"}, headers=headers
    )
    assert other.status_code == 409 and other.json()["type"].endswith("/idempotency-conflict")
    assert len(bank.call("GET", "/v1/accounts", token).json()) == 1


def test_staff_see_accounts_masked_and_customers_only_their_own(
    bank: Bank, admin_token: str, teller_token: str, assert_problem: Problem
) -> None:
    customer, token = signed_in(bank)
    account = open_account(bank, token)
    body = {"account_id": account["id"], "amount": "88.80", "currency": "CNY"}
    assert cash(bank, teller_token, "deposits", body, "staff-view").status_code == 200

    seen = bank.call("GET", f"/v1/admin/customers/{customer.id}/accounts", teller_token)
    assert seen.status_code == 200, seen.text
    (staff_view,) = seen.json()
    assert staff_view["number_masked"] == account["number_masked"]
    assert staff_view["balance"] == "88.80"
    assert account["number"] not in seen.text
    unknown = bank.call(
        "GET", "/v1/admin/customers/00000000-0000-7000-8000-000000000000/accounts", admin_token
    )
    assert_problem(unknown, 404, "not-found")

    _, other_token = signed_in(bank)
    for method, suffix in (("GET", ""), ("POST", "/freeze"), ("POST", "/close")):
        response = bank.call(method, f"/v1/accounts/{account['id']}{suffix}", other_token)
        assert_problem(response, 404, "not-found")
    assert account_of(bank, token, account["id"])["status"] == "open"
    refused = cash(bank, token, "deposits", body, "customer-teller")
    assert_problem(refused, 403, "forbidden")


def test_a_retried_card_issue_answers_the_first_card(bank: Bank, assert_problem: Problem) -> None:
    _, token = signed_in(bank)
    account, other = open_account(bank, token), open_account(bank, token)
    headers = {"Idempotency-Key": "card-" + secrets.token_hex(6)}
    path = f"/v1/accounts/{account['id']}/cards"
    first = bank.call("POST", path, token, headers=headers)
    again = bank.call("POST", path, token, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    listed = bank.call("GET", path, token).json()
    assert [c["id"] for c in listed] == [first.json()["id"]]
    elsewhere = bank.call("POST", f"/v1/accounts/{other['id']}/cards", token, headers=headers)
    assert_problem(elsewhere, 409, "idempotency-conflict")
    bad = bank.call("POST", path, token, headers={"Idempotency-Key": "no spaces"})
    assert_problem(bad, 400, "invalid-idempotency-key")

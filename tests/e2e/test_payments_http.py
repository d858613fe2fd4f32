"""Payments over real HTTP against a real ``zhifu serve``: a customer pays
another customer instantly, a retry with the same Idempotency-Key answers the
first payment, another body under the same key is a conflict, a large payment
waits for a confirmation on the bound phone, and every refusal is a clear
problem that moved no money."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer
from identity_actors import CONFIRMATION_HEADER, Bank, Customer

pytestmark = pytest.mark.xdist_group("payments_http")

Problem = Callable[..., dict[str, Any]]
CNY_CURRENT = {"product": "current", "account_class": "I", "currency": "CNY"}


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def teller_token(bank: Bank) -> str:
    admin_token = bank.staff_sign_in(bank.create_admin("payments-admin"))
    checker_token = bank.staff_sign_in(bank.create_admin("payments-checker"))
    teller = bank.create_staff(admin_token, "teller")
    bank.grant_role(admin_token, checker_token, teller, "teller")
    return bank.staff_sign_in(teller)


def customer_with_account(
    bank: Bank, teller_token: str, amount: str | None = None
) -> tuple[Customer, str, dict[str, Any]]:
    customer = bank.register()
    token = bank.sign_in(customer)
    opened = bank.call("POST", "/v1/accounts", token, json=CNY_CURRENT)
    assert opened.status_code == 201, opened.text
    account: dict[str, Any] = opened.json()
    if amount is not None:
        body = {"account_id": account["id"], "amount": amount, "currency": "CNY"}
        headers = {"Idempotency-Key": secrets.token_hex(8)}
        funded = bank.call("POST", "/v1/teller/deposits", teller_token, json=body, headers=headers)
        assert funded.status_code == 200, funded.text
    return customer, token, account


def pay(
    bank: Bank,
    token: str,
    payer: dict[str, Any],
    payee: dict[str, Any],
    amount: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {
        "from_account_id": payer["id"],
        "to_account_number": payee["number"],
        "amount": amount,
        "currency": "CNY",
        **extra,
    }
    all_headers = {"Idempotency-Key": key or secrets.token_hex(8), **(headers or {})}
    return bank.call("POST", "/v1/payments", token, json=body, headers=all_headers)


def balance(bank: Bank, token: str, account: dict[str, Any]) -> str:
    response = bank.call("GET", f"/v1/accounts/{account['id']}", token)
    assert response.status_code == 200, response.text
    value: str = response.json()["balance"]
    return value


def test_a_customer_pays_another_instantly_and_a_retry_pays_once(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    _, token, payer = customer_with_account(bank, teller_token, "100.00")
    _, payee_token, payee = customer_with_account(bank, teller_token)
    key = "pay-" + secrets.token_hex(6)

    first = pay(bank, token, payer, payee, "12.34", key=key, memo="房租 rent")
    assert first.status_code == 201, first.text
    order = first.json()
    assert order["state"] == "settled" and order["direction"] == "outgoing"
    assert (order["amount"], order["currency"], order["memo"]) == ("12.34", "CNY", "房租 rent")
    assert [t["to_state"] for t in order["transitions"]] == [
        "created",
        "risk_checked",
        "authorized",
        "funds_held",
        "settled",
    ]
    assert payee["number"] not in first.text  # the payee shows masked
    assert balance(bank, token, payer) == "87.66"
    assert balance(bank, payee_token, payee) == "12.34"

    again = pay(bank, token, payer, payee, "12.34", key=key, memo="房租 rent")
    assert again.status_code == 200 and again.json()["replayed"]
    assert again.json()["id"] == order["id"]
    assert balance(bank, token, payer) == "87.66"
    assert_problem(pay(bank, token, payer, payee, "1.00", key=key), 409, "idempotency-conflict")

    seen = bank.call("GET", f"/v1/payments/{order['id']}", payee_token)
    assert seen.status_code == 200 and seen.json()["direction"] == "incoming"
    assert seen.json()["debit_account_id"] is None  # the payer's account id is not shown
    other_token = bank.sign_in(bank.register())
    assert_problem(bank.call("GET", f"/v1/payments/{order['id']}", other_token), 404, "not-found")


def test_refusals_are_clear_and_move_nothing(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    _, token, payer = customer_with_account(bank, teller_token, "10.00")
    _, _, payee = customer_with_account(bank, teller_token)
    key = "refused-" + secrets.token_hex(6)
    refused = pay(bank, token, payer, payee, "10.01", key=key)
    assert_problem(refused, 409, "insufficient-funds")
    assert "nothing was paid" in refused.json()["detail"]
    assert balance(bank, token, payer) == "10.00"

    assert_problem(
        bank.call(
            "POST",
            "/v1/payments",
            token,
            json={
                "from_account_id": payer["id"],
                "to_account_number": payee["number"],
                "amount": "1.00",
                "currency": "CNY",
            },
        ),
        400,
        "invalid-idempotency-key",
    )
    as_float = pay(bank, token, payer, payee, 1.5)  # type: ignore[arg-type]
    assert_problem(as_float, 422)
    assert "decimal strings" in as_float.text
    wrong = payee["number"][:-1] + str((int(payee["number"][-1]) + 1) % 10)
    assert_problem(pay(bank, token, payer, {"number": wrong}, "1.00"), 422)
    assert_problem(pay(bank, token, payer, payee, "0.00"), 422)
    assert_problem(pay(bank, token, payer, payee, "1.001"), 422)
    assert_problem(pay(bank, token, payer, payee, "1.00", channel="counter"), 422)
    assert_problem(pay(bank, token, payer, payee, "1.00", memo="x" * 141), 422)
    assert_problem(pay(bank, token, payer, payer, "1.00"), 422)

    frozen = bank.call("POST", f"/v1/accounts/{payer['id']}/freeze", token)
    assert frozen.status_code == 200, frozen.text
    assert_problem(pay(bank, token, payer, payee, "1.00"), 409, "account-frozen")
    assert balance(bank, token, payer) == "10.00"

    # Nothing was recorded under the refused key: it pays once the money is there.
    _, other_token, other = customer_with_account(bank, teller_token, "50.00")
    assert_problem(pay(bank, other_token, other, payee, "60.00", key=key), 409)
    assert pay(bank, other_token, other, payee, "40.00", key=key).status_code == 201


def test_someone_elses_account_cannot_pay(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    _, owner_token, account = customer_with_account(bank, teller_token, "10.00")
    _, thief_token, thief_account = customer_with_account(bank, teller_token)
    assert_problem(pay(bank, thief_token, account, thief_account, "5.00"), 404, "not-found")
    assert balance(bank, owner_token, account) == "10.00"


def test_a_large_payment_waits_for_the_bound_phone(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    customer, token, payer = customer_with_account(bank, teller_token, "9000.00")
    _, payee_token, payee = customer_with_account(bank, teller_token)
    phone = bank.bind_phone(customer, token)
    key = "large-" + secrets.token_hex(6)

    asked = pay(bank, token, payer, payee, "6000.00", key=key)
    problem = assert_problem(asked, 403, "step-up-required")
    assert problem["methods"] == ["device"]
    confirmation = problem["confirmation"]
    view = bank.confirmation_view(confirmation["uri"]).json()
    assert "6,000.00 CNY" in str(view)
    bank.approve_on_phone(phone, confirmation)

    # The approval is for this payment only: another amount does not pass with it.
    header = {CONFIRMATION_HEADER: confirmation["id"]}
    other = pay(bank, token, payer, payee, "6000.01", key="other-" + key, headers=header)
    assert_problem(other, 409, "challenge-invalid")
    confirmed = pay(bank, token, payer, payee, "6000.00", key=key, headers=header)
    assert confirmed.status_code == 201, confirmed.text
    assert "device" in confirmed.json()["risk_reason"]
    retried = pay(bank, token, payer, payee, "6000.00", key=key)  # no second confirmation
    assert retried.status_code == 200 and retried.json()["id"] == confirmed.json()["id"]
    assert balance(bank, payee_token, payee) == "6000.00"


def test_a_debit_card_pays_until_it_is_frozen(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    _, token, payer = customer_with_account(bank, teller_token, "20.00")
    _, _, payee = customer_with_account(bank, teller_token)
    issued = bank.call("POST", f"/v1/accounts/{payer['id']}/cards", token)
    assert issued.status_code == 201, issued.text
    card = issued.json()
    body = {
        "from_card_id": card["id"],
        "to_account_number": payee["number"],
        "amount": "5.00",
        "currency": "CNY",
    }

    def pay_by_card(extra: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": secrets.token_hex(8)}
        return bank.call(
            "POST", "/v1/payments", token, json={**body, **(extra or {})}, headers=headers
        )

    paid = pay_by_card()
    assert paid.status_code == 201, paid.text
    assert paid.json()["debit_account_id"] == payer["id"]
    assert_problem(pay_by_card({"from_account_id": payer["id"]}), 422)  # one source only
    frozen = bank.call("POST", f"/v1/cards/{card['id']}/freeze", token)
    assert frozen.status_code == 200, frozen.text
    refused = assert_problem(pay_by_card(), 409, "card-blocked")
    assert card["pan_masked"][-4:] in refused["detail"] and "frozen" in refused["detail"]
    assert balance(bank, token, payer) == "15.00"

"""The payee book, scheduled transfers and a customer's own limits over real
HTTP against a real ``zhifu serve``: adding a payee asks for a confirmation on
the bound phone (or a step-up without one), payees show masked and are paid
exactly once per Idempotency-Key, schedules are made once per key, listed,
read with their runs and cancelled, limits are lowered freely and raised only
after a step-up, and every other customer's payee, schedule and limits answer
404. The payee's number and name never reach the server's log.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import LiveServer, run_cli
from identity_actors import CONFIRMATION_HEADER, Bank, Customer, Staff

pytestmark = pytest.mark.xdist_group("payees_http")

Problem = Callable[..., dict[str, Any]]
CNY_CURRENT = {"product": "current", "account_class": "I", "currency": "CNY"}
SHANGHAI = ZoneInfo("Asia/Shanghai")
PAYEE_NAME = "欧阳娜娜"


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def teller_token(bank: Bank) -> str:
    admin_token = bank.staff_sign_in(bank.create_admin("payees-admin"))
    checker_token = bank.staff_sign_in(bank.create_admin("payees-checker"))
    teller: Staff = bank.create_staff(admin_token, "teller")
    bank.grant_role(admin_token, checker_token, teller, "teller")
    return bank.staff_sign_in(teller)


def signed_in(bank: Bank) -> tuple[Customer, str]:
    customer = bank.register()
    return customer, bank.sign_in(customer)


def open_account(bank: Bank, token: str, **overrides: Any) -> dict[str, Any]:
    response = bank.call("POST", "/v1/accounts", token, json={**CNY_CURRENT, **overrides})
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def fund(bank: Bank, teller_token: str, account: dict[str, Any], amount: str) -> None:
    response = bank.call(
        "POST",
        "/v1/teller/deposits",
        teller_token,
        json={"account_id": account["id"], "amount": amount, "currency": "CNY"},
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )
    assert response.status_code == 200, response.text


def add_payee(bank: Bank, who: Customer, token: str, number: str, **extra: Any) -> Any:
    body = {"account_number": number, "name": PAYEE_NAME, **extra}
    bank.remember("payee number", number)
    return bank.sensitive(who, token, "POST", "/v1/payees", json=body)


def first_run(days: int = 1) -> str:
    moment = datetime.now(SHANGHAI) + timedelta(days=days)
    return moment.replace(second=0, microsecond=0, tzinfo=None).isoformat(timespec="minutes")


def key() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(8)}


def balance(bank: Bank, token: str, account: dict[str, Any]) -> str:
    response = bank.call("GET", f"/v1/accounts/{account['id']}", token)
    assert response.status_code == 200, response.text
    return str(response.json()["balance"])


# --- the payee book --------------------------------------------------------------------------


def test_adding_a_payee_is_confirmed_on_the_phone_and_shown_masked(
    bank: Bank, assert_problem: Problem
) -> None:
    alice, token = signed_in(bank)
    phone = bank.bind_phone(alice, token)
    target = open_account(bank, bank.sign_in(bank.register()))
    number = target["number"]
    body = {"account_number": number, "name": PAYEE_NAME, "nickname": "Landlord"}

    asked = bank.call("POST", "/v1/payees", token, json=body)
    problem = assert_problem(asked, 403, "step-up-required")
    assert problem["methods"] == ["device"]  # a new payee: only the phone will do
    assert number not in asked.text
    bank.approve_on_phone(phone, problem["confirmation"])
    header = {CONFIRMATION_HEADER: problem["confirmation"]["id"]}
    added = bank.call("POST", "/v1/payees", token, json=body, headers=header)
    assert added.status_code == 201, added.text
    payee = added.json()
    assert payee["nickname"] == "Landlord"
    assert payee["account_masked"] == "*" * 15 + number[-4:]
    assert payee["name_masked"] == "欧**娜"
    assert payee["scheme"] == "intra_bank"
    assert number not in added.text
    assert PAYEE_NAME not in added.text

    again = bank.call("POST", "/v1/payees", token, json=body, headers=header)
    assert_problem(again, 409, "challenge-invalid")  # a confirmation is used once
    listed = bank.call("GET", "/v1/payees", token)
    assert [p["id"] for p in listed.json()] == [payee["id"]]


def test_a_payee_is_refused_twice_and_bad_numbers_before_any_step_up(
    bank: Bank, assert_problem: Problem
) -> None:
    alice, token = signed_in(bank)
    target = open_account(bank, bank.sign_in(bank.register()))
    assert add_payee(bank, alice, token, target["number"]).status_code == 201
    duplicate = add_payee(bank, alice, token, target["number"])
    assert_problem(duplicate, 409, "payee-exists")
    mistyped = target["number"][:-1] + str((int(target["number"][-1]) + 1) % 10)
    response = bank.call(
        "POST", "/v1/payees", token, json={"account_number": mistyped, "name": PAYEE_NAME}
    )
    assert_problem(response, 422, "invalid-input")
    assert "typing mistake" in response.json()["detail"]


def test_rename_delete_and_another_customers_payee(bank: Bank, assert_problem: Problem) -> None:
    alice, token = signed_in(bank)
    _, bob_token = signed_in(bank)
    target = open_account(bank, bank.sign_in(bank.register()))
    payee = add_payee(bank, alice, token, target["number"]).json()
    path = f"/v1/payees/{payee['id']}"
    for method, suffix, json in (
        ("PATCH", "", {"nickname": "Mine now"}),
        ("DELETE", "", None),
        (
            "POST",
            "/payments",
            {"from_account_id": target["id"], "amount": "1.00", "currency": "CNY"},
        ),
    ):
        response = bank.call(method, path + suffix, bob_token, json=json, headers=key())
        assert_problem(response, 404, "not-found")
    assert bank.call("GET", "/v1/payees", bob_token).json() == []
    renamed = bank.call("PATCH", path, token, json={"nickname": "  Rent  "})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["nickname"] == "Rent"
    assert bank.call("DELETE", path, token).status_code == 204
    assert bank.call("GET", "/v1/payees", token).json() == []
    assert_problem(bank.call("DELETE", path, token), 404, "not-found")


def test_paying_a_payee_once_per_key(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    alice, token = signed_in(bank)
    source = open_account(bank, token)
    fund(bank, teller_token, source, "100.00")
    target_token = bank.sign_in(bank.register())
    target = open_account(bank, target_token)
    payee = add_payee(bank, alice, token, target["number"]).json()
    path = f"/v1/payees/{payee['id']}/payments"
    body = {"from_account_id": source["id"], "amount": "12.34", "currency": "CNY", "memo": "rent"}
    headers = key()
    paid = bank.call("POST", path, token, json=body, headers=headers)
    assert paid.status_code == 201, paid.text
    assert paid.json()["state"] == "settled"
    replay = bank.call("POST", path, token, json=body, headers=headers)
    assert replay.status_code == 200, replay.text
    assert replay.json()["id"] == paid.json()["id"]
    assert replay.json()["replayed"] is True
    assert balance(bank, target_token, target) == "12.34"
    conflict = bank.call("POST", path, token, json={**body, "amount": "1.00"}, headers=headers)
    assert_problem(conflict, 409, "idempotency-conflict")
    missing_key = bank.call("POST", path, token, json=body)
    assert_problem(missing_key, 400, "invalid-idempotency-key")
    too_much = bank.call("POST", path, token, json={**body, "amount": "200.00"}, headers=key())
    assert_problem(too_much, 409, "insufficient-funds")
    assert balance(bank, token, source) == "87.66"


# --- schedules -------------------------------------------------------------------------------


def test_a_schedule_is_made_once_listed_read_and_cancelled(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    alice, token = signed_in(bank)
    _, bob_token = signed_in(bank)
    source = open_account(bank, token)
    fund(bank, teller_token, source, "10.00")
    target = open_account(bank, bank.sign_in(bank.register()))
    payee = add_payee(bank, alice, token, target["number"], nickname="Savings").json()
    body = {
        "from_account_id": source["id"],
        "payee_id": payee["id"],
        "amount": "800.00",
        "currency": "CNY",
        "frequency": "monthly",
        "first_run": first_run(),
        "count": 12,
        "memo": "rent",
    }
    headers = key()
    made = bank.call("POST", "/v1/schedules", token, json=body, headers=headers)
    assert made.status_code == 201, made.text
    schedule = made.json()
    assert schedule["status"] == "active"
    assert schedule["next_run"] == schedule["first_run"]
    assert schedule["first_run"].endswith("+08:00")
    assert schedule["payee"] == f"Savings (****{target['number'][-4:]})"
    assert schedule["runs"] == []
    again = bank.call("POST", "/v1/schedules", token, json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == schedule["id"]
    assert again.json()["replayed"] is True
    listed = bank.call("GET", "/v1/schedules", token).json()
    assert [s["id"] for s in listed] == [schedule["id"]]

    path = f"/v1/schedules/{schedule['id']}"
    assert_problem(bank.call("GET", path, bob_token), 404, "not-found")
    assert_problem(bank.call("POST", f"{path}/cancel", bob_token), 404, "not-found")
    assert_problem(bank.call("POST", f"{path}/resume", bob_token), 404, "not-found")
    assert bank.call("GET", "/v1/schedules", bob_token).json() == []
    in_use = bank.call("DELETE", f"/v1/payees/{payee['id']}", token)
    assert_problem(in_use, 409, "payee-in-use")

    cancelled = bank.call("POST", f"{path}/cancel", token)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["next_run"]) == ("cancelled", None)
    assert_problem(bank.call("POST", f"{path}/cancel", token), 409, "schedule-state")
    assert_problem(bank.call("POST", f"{path}/resume", token), 409, "schedule-state")
    assert bank.call("DELETE", f"/v1/payees/{payee['id']}", token).status_code == 204
    assert bank.call("GET", path, token).json()["payee_id"] is None


def test_bad_schedules_are_refused(bank: Bank, assert_problem: Problem) -> None:
    alice, token = signed_in(bank)
    _, bob_token = signed_in(bank)
    source = open_account(bank, token)
    target = open_account(bank, bank.sign_in(bank.register()))
    payee = add_payee(bank, alice, token, target["number"]).json()
    good = {
        "from_account_id": source["id"],
        "payee_id": payee["id"],
        "amount": "1.00",
        "currency": "CNY",
        "frequency": "daily",
        "first_run": first_run(),
    }
    for change, slug in (
        ({"first_run": first_run(-1)}, "invalid-input"),
        ({"first_run": first_run(400)}, "invalid-input"),
        ({"frequency": "once", "count": 2}, "invalid-input"),
        ({"count": 0}, "invalid-input"),
        ({"amount": 1.0}, "invalid-request"),
        ({"frequency": "hourly"}, "invalid-request"),
    ):
        response = bank.call("POST", "/v1/schedules", token, json={**good, **change}, headers=key())
        assert response.status_code == 422, (change, response.text)
        assert response.json()["type"].endswith(slug), response.text
    others = bank.call("POST", "/v1/schedules", bob_token, json=good, headers=key())
    assert_problem(others, 404, "not-found")  # alice's payee is nobody else's
    assert bank.call("GET", "/v1/schedules", token).json() == []


def test_a_large_schedule_is_confirmed_on_the_phone_once(
    bank: Bank, assert_problem: Problem
) -> None:
    alice, token = signed_in(bank)
    phone = bank.bind_phone(alice, token)
    source = open_account(bank, token)
    target = open_account(bank, bank.sign_in(bank.register()))
    payee = add_payee(bank, alice, token, target["number"]).json()
    body = {
        "from_account_id": source["id"],
        "payee_id": payee["id"],
        "amount": "5000.00",
        "currency": "CNY",
        "frequency": "weekly",
        "first_run": first_run(),
        "count": 4,
    }
    headers = key()
    asked = bank.call("POST", "/v1/schedules", token, json=body, headers=headers)
    problem = assert_problem(asked, 403, "step-up-required")
    assert bank.call("GET", "/v1/schedules", token).json() == []
    bank.approve_on_phone(phone, problem["confirmation"])
    headers[CONFIRMATION_HEADER] = problem["confirmation"]["id"]
    made = bank.call("POST", "/v1/schedules", token, json=body, headers=headers)
    assert made.status_code == 201, made.text
    smaller = bank.call(
        "POST", "/v1/schedules", token, json={**body, "amount": "4999.99"}, headers=key()
    )
    assert smaller.status_code == 201, smaller.text  # below the threshold: nothing to confirm


# --- limits ----------------------------------------------------------------------------------


def test_limits_are_lowered_freely_and_raised_after_a_step_up(
    bank: Bank, teller_token: str, assert_problem: Problem
) -> None:
    alice, token = signed_in(bank)
    _, bob_token = signed_in(bank)
    source = open_account(bank, token)
    fund(bank, teller_token, source, "100.00")
    target = open_account(bank, bank.sign_in(bank.register()))
    path = f"/v1/accounts/{source['id']}/limits"
    shown = bank.call("GET", path, token)
    assert shown.status_code == 200, shown.text
    online = next(c for c in shown.json()["channels"] if c["channel"] == "online")
    assert online["own"] == {"per_payment": None, "daily": None, "yearly": None}
    assert online["remaining"] is None

    lowered = bank.call("PUT", f"{path}/online", token, json={"per_payment": "10.00"})
    assert lowered.status_code == 200, lowered.text
    online = next(c for c in lowered.json()["channels"] if c["channel"] == "online")
    assert online["own"]["per_payment"] == "10.00"
    assert online["remaining"] == "10.00"

    pay = {
        "from_account_id": source["id"],
        "to_account_number": target["number"],
        "currency": "CNY",
    }
    at_limit = bank.call(
        "POST", "/v1/payments", token, json={**pay, "amount": "10.00"}, headers=key()
    )
    assert at_limit.status_code == 201, at_limit.text
    past = bank.call("POST", "/v1/payments", token, json={**pay, "amount": "10.01"}, headers=key())
    assert_problem(past, 409, "limit-exceeded")

    raising = {"per_payment": "20.00"}
    asked = bank.call("PUT", f"{path}/online", token, json=raising)
    assert_problem(asked, 403, "step-up-required")
    raised = bank.sensitive(alice, token, "PUT", f"{path}/online", json=raising)
    assert raised.status_code == 200, raised.text
    for body, slug in (({"daily": "-1.00"}, "invalid-input"), ({"daily": 5}, "invalid-request")):
        response = bank.call("PUT", f"{path}/online", token, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["type"].endswith(slug)
    unknown = bank.call("PUT", f"{path}/telegraph", token, json={})
    assert unknown.status_code == 422

    assert_problem(bank.call("GET", path, bob_token), 404, "not-found")
    assert_problem(
        bank.call("PUT", f"{path}/online", bob_token, json={"per_payment": "0.00"}),
        404,
        "not-found",
    )
    online = next(
        c for c in bank.call("GET", path, token).json()["channels"] if c["channel"] == "online"
    )
    assert online["own"]["per_payment"] == "20.00"


def test_a_class_iii_limit_cannot_be_raised_above_the_bank(
    bank: Bank, assert_problem: Problem
) -> None:
    _, token = signed_in(bank)
    open_account(bank, token)
    small = open_account(bank, token, account_class="III")
    path = f"/v1/accounts/{small['id']}/limits"
    online = next(
        c for c in bank.call("GET", path, token).json()["channels"] if c["channel"] == "online"
    )
    assert online["policy"]["daily"] == "2000.00"
    assert online["remaining"] == "2000.00"
    at_policy = bank.call("PUT", f"{path}/online", token, json={"daily": "2000.00"})
    assert at_policy.status_code == 200, at_policy.text
    over = bank.call("PUT", f"{path}/mobile", token, json={"daily": "2000.01"})
    problem = assert_problem(over, 422, "invalid-input")
    assert "can only be lowered" in problem["detail"]


# --- nothing personal in the log -------------------------------------------------------------


def test_payee_numbers_and_names_never_reach_the_log(bank: Bank, live_server: LiveServer) -> None:
    log = live_server.log_text()
    assert PAYEE_NAME not in log
    for what, value in bank.remembered:
        if what == "payee number":
            assert value not in log, f"a {what} reached the server log"


def test_the_operators_command_runs_due_schedules_beside_the_server(
    live_server: LiveServer,
) -> None:
    assert "exactly once" in run_cli(live_server.env, "schedules", "run-due", "--help")
    output = run_cli(live_server.env, "schedules", "run-due")
    assert output.startswith("claimed 0: paid 0, failed 0"), output

"""The ledger API (/v1/ledger) of a real server, over real HTTP.

Every test opens accounts with fresh random ids, so tests share the module's
server without seeing each other's money. Each bad request is checked twice:
the answer is a clear problem, and the accounts it named did not change.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from zhifu.ledger.journal import block_hash
from zhifu.ledger.merkle import leaf_hash, verify_inclusion
from zhifu.ledger.model import (
    AMOUNT_MAX,
    BATCH_EVENTS_MAX,
    CODE_MAX,
    EXTERNAL_REF_LENGTH_MAX,
    Transfer,
    TransferFlags,
    encode_leaf,
)
from zhifu.security.signing import key_id_for, verify_signature

pytestmark = pytest.mark.xdist_group("e2e-ledger")

AssertProblem = Callable[..., dict[str, Any]]

BANK_CODE = 1
CUSTOMER_CODE = 2
TRANSFER_CODE = 10
CUSTOMER_FLAGS = ["debits_must_not_exceed_credits", "history"]
FUNDING_MINOR = 100_000  # 1,000.00 CNY
SEAL_WAIT_S = 15.0  # the upkeep worker seals every 0.5 s
POLL_INTERVAL_S = 0.1
COUNTERS = ("debits_pending", "debits_posted", "credits_pending", "credits_posted")
LEDGER_ROUTES = (
    ("POST", "/v1/ledger/accounts"),
    ("GET", "/v1/ledger/accounts/{account_id}"),
    ("POST", "/v1/ledger/accounts/{account_id}/close"),
    ("GET", "/v1/ledger/accounts/{account_id}/transfers"),
    ("GET", "/v1/ledger/accounts/{account_id}/statement"),
    ("GET", "/v1/ledger/accounts/{account_id}/balance"),
    ("POST", "/v1/ledger/transfers"),
    ("GET", "/v1/ledger/transfers/{transfer_id}"),
    ("GET", "/v1/ledger/transfers/{transfer_id}/proof"),
    ("GET", "/v1/ledger/journal/head"),
)


# --- helpers ----------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def account_body(
    currency: str = "CNY", *, code: int = CUSTOMER_CODE, flags: list[str] | None = None
) -> dict[str, Any]:
    return {"id": new_id(), "currency": currency, "code": code, "flags": flags or []}


def transfer_body(
    debit: str | None,
    credit: str | None,
    amount: int | str | None,
    currency: str | None = "CNY",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": new_id(), "code": TRANSFER_CODE}
    for name, value in (
        ("debit_account_id", debit),
        ("credit_account_id", credit),
        ("amount", amount),
        ("currency", currency),
    ):
        if value is not None:
            body[name] = value
    body.update(fields)
    return body


def create_accounts(api: httpx.Client, *bodies: dict[str, Any]) -> list[str]:
    response = api.post("/v1/ledger/accounts", json={"accounts": list(bodies)})
    assert response.status_code == 200, response.text
    assert [r["result"] for r in response.json()["results"]] == ["ok"] * len(bodies)
    return [b["id"] for b in bodies]


def submit(api: httpx.Client, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    """POST the transfers; their results (the call itself must succeed)."""
    response = api.post("/v1/ledger/transfers", json={"transfers": list(bodies)})
    assert response.status_code == 200, response.text
    payload = response.json()
    results: list[dict[str, Any]] = payload["results"]
    assert [r["index"] for r in results] == list(range(len(bodies)))
    assert [r["id"] for r in results] == [b["id"] for b in bodies]
    assert payload["ok"] == sum(r["result"] == "ok" for r in results)
    return results


def codes(results: list[dict[str, Any]]) -> list[str]:
    return [r["result"] for r in results]


def get_account(api: httpx.Client, account_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/ledger/accounts/{account_id}")
    assert response.status_code == 200, response.text
    account: dict[str, Any] = response.json()
    return account


def counters(api: httpx.Client, *account_ids: str) -> dict[str, tuple[int, ...]]:
    """Each account's four counters: what must not move when a request is refused."""
    return {
        account_id: tuple(get_account(api, account_id)[name] for name in COUNTERS)
        for account_id in account_ids
    }


def assert_no_transfer(api: httpx.Client, transfer_id: str) -> None:
    assert api.get(f"/v1/ledger/transfers/{transfer_id}").status_code == 404


@dataclass
class Ledger:
    """A bank account (no balance flag) and two customers; ``alice`` is funded."""

    currency: str
    bank: str
    alice: str
    bob: str
    ids: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = (self.bank, self.alice, self.bob)


def open_ledger(api: httpx.Client, currency: str = "CNY") -> Ledger:
    bank, alice, bob = create_accounts(
        api,
        account_body(currency, code=BANK_CODE),
        account_body(currency, flags=CUSTOMER_FLAGS),
        account_body(currency, flags=CUSTOMER_FLAGS),
    )
    assert codes(submit(api, transfer_body(bank, alice, FUNDING_MINOR, currency))) == ["ok"]
    return Ledger(currency, bank, alice, bob)


@pytest.fixture
def ledger(api: httpx.Client) -> Ledger:
    return open_ledger(api)


def transfer_from_json(data: dict[str, Any]) -> Transfer:
    """The transfer as a counterparty holds it, rebuilt from the API's JSON."""
    flags = 0
    for name in data["flags"]:
        flags |= TransferFlags[name.upper()]
    assert data["expires_at"] is None, "only transfers without a timeout are rebuilt here"
    return Transfer(
        id=uuid.UUID(data["id"]),
        debit_account_id=uuid.UUID(data["debit_account_id"]),
        credit_account_id=uuid.UUID(data["credit_account_id"]),
        amount=data["amount"],
        currency=data["currency"],
        code=data["code"],
        flags=flags,
        pending_id=uuid.UUID(data["pending_id"]) if data["pending_id"] else None,
        reversal_of=uuid.UUID(data["reversal_of"]) if data["reversal_of"] else None,
        external_ref=data["external_ref"],
        timeout_s=data["timeout_s"],
        expires_ts=None,
        ts=data["ts"],
        batch_id=uuid.UUID(int=0),  # not part of the leaf
        batch_index=0,
    )


# --- accounts -----------------------------------------------------------------------------


def test_accounts_are_created_with_their_flags(api: httpx.Client) -> None:
    bank_body = account_body(code=BANK_CODE)
    customer_body = account_body(flags=CUSTOMER_FLAGS) | {"owner_ref": "customer:li-wei"}
    bank, customer = create_accounts(api, bank_body, customer_body)

    assert get_account(api, bank)["flags"] == []
    account = get_account(api, customer)
    assert account["id"] == customer
    assert account["currency"] == "CNY"
    assert account["code"] == CUSTOMER_CODE
    assert sorted(account["flags"]) == sorted(CUSTOMER_FLAGS)
    assert account["owner_ref"] == "customer:li-wei"
    assert [account[name] for name in COUNTERS] == [0, 0, 0, 0]
    assert account["balance_posted"] == account["balance_available"] == 0
    assert account["created_at"].endswith("Z")
    assert account["closed_at"] is None


def test_creating_an_account_again_answers_exists(api: httpx.Client) -> None:
    body = account_body(flags=CUSTOMER_FLAGS)
    create_accounts(api, body)
    again = api.post("/v1/ledger/accounts", json={"accounts": [body]})
    assert again.status_code == 200
    assert again.json()["ok"] == 0
    assert again.json()["results"][0]["result"] == "exists"
    different = body | {"flags": ["history"]}
    response = api.post("/v1/ledger/accounts", json={"accounts": [different]})
    assert response.json()["results"][0]["result"] == "exists_with_different_flags"
    assert sorted(get_account(api, body["id"])["flags"]) == sorted(CUSTOMER_FLAGS)


def test_unknown_account_is_a_404_problem(api: httpx.Client, assert_problem: AssertProblem) -> None:
    missing = new_id()
    for path in (
        f"/v1/ledger/accounts/{missing}",
        f"/v1/ledger/accounts/{missing}/transfers",
        f"/v1/ledger/accounts/{missing}/statement",
        f"/v1/ledger/accounts/{missing}/balance",
    ):
        body = assert_problem(api.get(path), 404, "account-not-found")
        assert missing in body["detail"]
    assert_problem(api.post(f"/v1/ledger/accounts/{missing}/close"), 404, "account-not-found")


def test_closing_an_empty_account(api: httpx.Client, assert_problem: AssertProblem) -> None:
    bank, empty = create_accounts(api, account_body(code=BANK_CODE), account_body())
    response = api.post(f"/v1/ledger/accounts/{empty}/close")
    assert response.status_code == 200, response.text
    assert response.json()["closed_at"] is not None
    assert get_account(api, empty)["closed_at"] is not None
    body = assert_problem(
        api.post(f"/v1/ledger/accounts/{empty}/close"), 409, "account-not-closable"
    )
    assert "already closed" in body["detail"]
    assert codes(submit(api, transfer_body(bank, empty, 100))) == ["credit_account_closed"]


def test_closing_a_funded_account_is_a_409_problem(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    before = counters(api, ledger.alice)
    body = assert_problem(
        api.post(f"/v1/ledger/accounts/{ledger.alice}/close"), 409, "account-not-closable"
    )
    assert "balance" in body["detail"]
    assert get_account(api, ledger.alice)["closed_at"] is None
    assert counters(api, ledger.alice) == before


def test_closing_an_account_with_a_hold_is_a_409_problem(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    hold = transfer_body(ledger.alice, ledger.bob, 100, flags=["pending"])
    assert codes(submit(api, hold)) == ["ok"]
    body = assert_problem(
        api.post(f"/v1/ledger/accounts/{ledger.bob}/close"), 409, "account-not-closable"
    )
    assert "pending" in body["detail"]


# --- transfers ------------------------------------------------------------------------------


def test_transfer_in_integer_minor_units(api: httpx.Client, ledger: Ledger) -> None:
    body = transfer_body(ledger.alice, ledger.bob, 2_500, external_ref="invoice-1")
    (result,) = submit(api, body)
    assert result["result"] == "ok"
    assert result["timestamp"].endswith("Z")

    alice, bob = get_account(api, ledger.alice), get_account(api, ledger.bob)
    assert alice["balance_posted"] == FUNDING_MINOR - 2_500
    assert alice["debits_posted"] == 2_500
    assert bob["balance_posted"] == bob["balance_available"] == 2_500
    stored = api.get(f"/v1/ledger/transfers/{body['id']}").json()
    assert stored["amount"] == 2_500
    assert stored["currency"] == "CNY"
    assert stored["debit_account_id"] == ledger.alice
    assert stored["credit_account_id"] == ledger.bob
    assert stored["external_ref"] == "invoice-1"
    assert stored["flags"] == []
    assert stored["timestamp"] == result["timestamp"]


def test_transfer_with_a_decimal_string_amount(api: httpx.Client, ledger: Ledger) -> None:
    body = transfer_body(ledger.alice, ledger.bob, "12.34", "CNY")
    assert codes(submit(api, body)) == ["ok"]
    assert api.get(f"/v1/ledger/transfers/{body['id']}").json()["amount"] == 1234
    assert get_account(api, ledger.bob)["credits_posted"] == 1234
    assert get_account(api, ledger.alice)["balance_posted"] == FUNDING_MINOR - 1234


def test_decimal_string_in_a_currency_without_minor_units(api: httpx.Client) -> None:
    yen = open_ledger(api, "JPY")
    body = transfer_body(yen.alice, yen.bob, "500", "JPY")
    assert codes(submit(api, body)) == ["ok"]
    assert get_account(api, yen.bob)["credits_posted"] == 500


def test_retrying_the_same_request_answers_exists(api: httpx.Client, ledger: Ledger) -> None:
    bodies = [
        transfer_body(ledger.alice, ledger.bob, 700),
        transfer_body(ledger.alice, ledger.bob, "1.50", "CNY"),
    ]
    assert codes(submit(api, *bodies)) == ["ok", "ok"]
    after_first = counters(api, *ledger.ids)

    response = api.post("/v1/ledger/transfers", json={"transfers": bodies})
    assert response.status_code == 200
    assert response.json()["ok"] == 0
    assert codes(response.json()["results"]) == ["exists", "exists"]
    assert counters(api, *ledger.ids) == after_first

    changed = bodies[0] | {"amount": 701}
    assert codes(submit(api, changed)) == ["exists_with_different_amount"]
    assert counters(api, *ledger.ids) == after_first


def test_unknown_transfer_is_a_404_problem(
    api: httpx.Client, assert_problem: AssertProblem
) -> None:
    missing = new_id()
    assert_problem(api.get(f"/v1/ledger/transfers/{missing}"), 404, "transfer-not-found")
    assert_problem(api.get(f"/v1/ledger/transfers/{missing}/proof"), 404, "transfer-not-found")


def test_pending_transfer_then_post(api: httpx.Client, ledger: Ledger) -> None:
    hold = transfer_body(ledger.alice, ledger.bob, 5_000, flags=["pending"], timeout_s=3600)
    assert codes(submit(api, hold)) == ["ok"]
    alice = get_account(api, ledger.alice)
    assert alice["debits_pending"] == 5_000
    assert alice["balance_posted"] == FUNDING_MINOR
    assert alice["balance_available"] == FUNDING_MINOR - 5_000
    assert get_account(api, ledger.bob)["credits_pending"] == 5_000
    stored = api.get(f"/v1/ledger/transfers/{hold['id']}").json()
    assert stored["flags"] == ["pending"]
    assert stored["expires_at"] is not None

    post = transfer_body(None, None, 3_000, None, flags=["post_pending"], pending_id=hold["id"])
    assert codes(submit(api, post)) == ["ok"]
    alice, bob = get_account(api, ledger.alice), get_account(api, ledger.bob)
    assert alice["debits_pending"] == bob["credits_pending"] == 0
    assert alice["debits_posted"] == bob["credits_posted"] == 3_000
    assert alice["balance_available"] == alice["balance_posted"] == FUNDING_MINOR - 3_000

    again = transfer_body(None, None, None, None, flags=["post_pending"], pending_id=hold["id"])
    assert codes(submit(api, again)) == ["pending_transfer_already_posted"]


def test_pending_transfer_then_void(api: httpx.Client, ledger: Ledger) -> None:
    hold = transfer_body(ledger.alice, ledger.bob, 800, flags=["pending"])
    assert codes(submit(api, hold)) == ["ok"]
    void = transfer_body(None, None, None, None, flags=["void_pending"], pending_id=hold["id"])
    assert codes(submit(api, void)) == ["ok"]
    alice, bob = get_account(api, ledger.alice), get_account(api, ledger.bob)
    assert [alice[name] for name in COUNTERS] == [0, 0, 0, FUNDING_MINOR]
    assert [bob[name] for name in COUNTERS] == [0, 0, 0, 0]
    post = transfer_body(None, None, None, None, flags=["post_pending"], pending_id=hold["id"])
    assert codes(submit(api, post)) == ["pending_transfer_already_voided"]


def test_linked_chain_fails_atomically(api: httpx.Client, ledger: Ledger) -> None:
    before = counters(api, *ledger.ids)
    chain = [
        transfer_body(ledger.alice, ledger.bob, 100, flags=["linked"]),
        transfer_body(ledger.bob, ledger.alice, 50, flags=["linked"]),
        transfer_body(ledger.alice, ledger.bob, FUNDING_MINOR * 10),  # overdraws: fails
    ]
    assert codes(submit(api, *chain)) == [
        "linked_event_failed",
        "linked_event_failed",
        "exceeds_credits",
    ]
    assert counters(api, *ledger.ids) == before
    for body in chain:
        assert_no_transfer(api, body["id"])


def test_linked_chain_succeeds_together(api: httpx.Client, ledger: Ledger) -> None:
    chain = [
        transfer_body(ledger.alice, ledger.bob, 100, flags=["linked"]),
        transfer_body(ledger.bob, ledger.alice, 40),
    ]
    assert codes(submit(api, *chain)) == ["ok", "ok"]
    assert get_account(api, ledger.bob)["balance_posted"] == 60


def test_a_chain_left_open_fails(api: httpx.Client, ledger: Ledger) -> None:
    before = counters(api, *ledger.ids)
    chain = [
        transfer_body(ledger.alice, ledger.bob, 100, flags=["linked"]),
        transfer_body(ledger.alice, ledger.bob, 100, flags=["linked"]),
    ]
    assert codes(submit(api, *chain)) == ["linked_event_failed", "linked_event_chain_open"]
    assert counters(api, *ledger.ids) == before


# --- domain result codes over HTTP ---------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("same_account", "accounts_must_be_different"),
        ("different_currencies", "accounts_must_have_the_same_currency"),
        ("unknown_accounts", "debit_account_not_found"),
        ("unknown_credit_account", "credit_account_not_found"),
        ("overdraft", "exceeds_credits"),
        ("currency_differs_from_accounts", "transfer_must_have_the_same_currency_as_accounts"),
    ],
)
def test_domain_result_codes(api: httpx.Client, ledger: Ledger, case: str, expected: str) -> None:
    (usd,) = create_accounts(api, account_body("USD", flags=CUSTOMER_FLAGS))
    body = {
        "same_account": transfer_body(ledger.alice, ledger.alice, 100),
        "different_currencies": transfer_body(ledger.alice, usd, 100),
        "unknown_accounts": transfer_body(new_id(), new_id(), 100),
        "unknown_credit_account": transfer_body(ledger.alice, new_id(), 100),
        "overdraft": transfer_body(ledger.alice, ledger.bob, FUNDING_MINOR + 1),
        "currency_differs_from_accounts": transfer_body(ledger.alice, ledger.bob, 100, "USD"),
    }[case]
    before = counters(api, *ledger.ids, usd)
    response = api.post("/v1/ledger/transfers", json={"transfers": [body]})
    assert response.status_code == 200
    assert response.json()["ok"] == 0
    assert codes(response.json()["results"]) == [expected]
    assert response.json()["results"][0]["timestamp"] is None
    assert counters(api, *ledger.ids, usd) == before
    assert_no_transfer(api, body["id"])


def test_overdraft_by_one_minor_unit_fails_and_the_exact_balance_succeeds(
    api: httpx.Client, ledger: Ledger
) -> None:
    assert codes(submit(api, transfer_body(ledger.alice, ledger.bob, FUNDING_MINOR + 1))) == [
        "exceeds_credits"
    ]
    assert codes(submit(api, transfer_body(ledger.alice, ledger.bob, FUNDING_MINOR))) == ["ok"]
    assert get_account(api, ledger.alice)["balance_posted"] == 0


# --- statements, balances, listings ----------------------------------------------------------


def test_statement_has_a_running_balance(api: httpx.Client, ledger: Ledger) -> None:
    out = transfer_body(ledger.alice, ledger.bob, 1_234)
    hold = transfer_body(ledger.alice, ledger.bob, 500, flags=["pending"])
    assert codes(submit(api, out)) == ["ok"]
    assert codes(submit(api, hold)) == ["ok"]
    post = transfer_body(None, None, 300, None, flags=["post_pending"], pending_id=hold["id"])
    assert codes(submit(api, post)) == ["ok"]

    response = api.get(f"/v1/ledger/accounts/{ledger.alice}/statement")
    assert response.status_code == 200, response.text
    statement = response.json()
    assert statement["opening_balance_posted"] == 0
    assert statement["next_cursor"] is None
    lines = statement["lines"]
    assert [line["side"] for line in lines] == ["credit", "debit", "debit", "debit"]
    assert [line["posted_change"] for line in lines] == [FUNDING_MINOR, -1_234, 0, -300]
    assert [line["pending_change"] for line in lines] == [0, 0, 500, -500]
    assert [line["balance_posted_after"] for line in lines] == [
        FUNDING_MINOR,
        FUNDING_MINOR - 1_234,
        FUNDING_MINOR - 1_234,
        FUNDING_MINOR - 1_534,
    ]
    assert [line["transfer"]["id"] for line in lines[1:]] == [out["id"], hold["id"], post["id"]]
    assert statement["account"]["balance_posted"] == FUNDING_MINOR - 1_534

    window = api.get(
        f"/v1/ledger/accounts/{ledger.alice}/statement",
        params={"from": lines[1]["transfer"]["timestamp"], "to": lines[3]["transfer"]["timestamp"]},
    ).json()
    assert window["opening_balance_posted"] == FUNDING_MINOR
    assert [line["transfer"]["id"] for line in window["lines"]] == [out["id"], hold["id"]]


def test_balance_as_of_a_time(api: httpx.Client, ledger: Ledger) -> None:
    (first,) = submit(api, transfer_body(ledger.alice, ledger.bob, 1_000))
    (second,) = submit(api, transfer_body(ledger.alice, ledger.bob, 2_000))
    assert first["result"] == second["result"] == "ok"
    path = f"/v1/ledger/accounts/{ledger.alice}/balance"

    now = api.get(path).json()
    assert now["as_of"] is None
    assert now["balance_posted"] == FUNDING_MINOR - 3_000
    assert now["currency"] == "CNY"
    at_first = api.get(path, params={"as_of": first["timestamp"]}).json()
    assert at_first["as_of"] == first["timestamp"]
    assert at_first["balance_posted"] == FUNDING_MINOR - 1_000
    assert at_first["debits_posted"] == 1_000
    assert at_first["credits_posted"] == FUNDING_MINOR
    at_second = api.get(path, params={"as_of": second["timestamp"]}).json()
    assert at_second["balance_posted"] == FUNDING_MINOR - 3_000
    before_all = api.get(path, params={"as_of": "2000-01-01T00:00:00Z"}).json()
    assert before_all["balance_posted"] == 0
    assert before_all["credits_posted"] == 0
    bank = api.get(f"/v1/ledger/accounts/{ledger.bank}/balance").json()
    assert bank["balance_posted"] == -FUNDING_MINOR  # no history flag: summed from transfers


def test_transfers_listing_pages_with_a_cursor(api: httpx.Client, ledger: Ledger) -> None:
    bodies = [transfer_body(ledger.alice, ledger.bob, 10 + n) for n in range(5)]
    for body in bodies:  # one call each: five batches, five timestamps
        assert codes(submit(api, body)) == ["ok"]
    path = f"/v1/ledger/accounts/{ledger.bob}/transfers"

    everything = api.get(path).json()
    assert everything["next_cursor"] is None
    assert [t["id"] for t in everything["transfers"]] == [b["id"] for b in bodies]

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = api.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["transfers"]) <= 2
        seen += [t["id"] for t in page["transfers"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [b["id"] for b in bodies]
    stamps = [t["ts"] for t in everything["transfers"]]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)

    first_page = api.get(path, params={"limit": 2}).json()
    statement = api.get(
        f"/v1/ledger/accounts/{ledger.bob}/statement",
        params={"limit": 2, "cursor": first_page["next_cursor"]},
    ).json()
    assert statement["opening_balance_posted"] == 10 + 11
    assert [line["transfer"]["id"] for line in statement["lines"]] == [b["id"] for b in bodies[2:4]]


def test_invalid_cursor_is_a_400_problem(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    for path in ("transfers", "statement"):
        for cursor in ("not-a-cursor", base64.urlsafe_b64encode(b"xx:12").decode()):
            response = api.get(
                f"/v1/ledger/accounts/{ledger.alice}/{path}", params={"cursor": cursor}
            )
            body = assert_problem(response, 400, "invalid-cursor")
            assert "cursor" in body["detail"]


@pytest.mark.parametrize("parameter", ["from", "to"])
def test_time_without_a_time_zone_is_a_422_problem(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem, parameter: str
) -> None:
    response = api.get(
        f"/v1/ledger/accounts/{ledger.alice}/transfers",
        params={parameter: "2026-11-25T08:00:00"},
    )
    body = assert_problem(response, 422, "invalid-time")
    assert f"'{parameter}'" in body["detail"]
    assert "time zone" in body["detail"]


def test_balance_as_of_without_a_time_zone_is_a_422_problem(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    response = api.get(
        f"/v1/ledger/accounts/{ledger.alice}/balance", params={"as_of": "2026-11-25T08:00:00"}
    )
    body = assert_problem(response, 422, "invalid-time")
    assert "'as_of'" in body["detail"]


@pytest.mark.parametrize("limit", [0, 1001])
def test_page_size_out_of_bounds_is_a_422_problem(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem, limit: int
) -> None:
    response = api.get(f"/v1/ledger/accounts/{ledger.alice}/transfers", params={"limit": limit})
    body = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in body["errors"]] == ["query.limit"]


def test_page_size_at_the_limit_is_accepted(api: httpx.Client, ledger: Ledger) -> None:
    response = api.get(f"/v1/ledger/accounts/{ledger.alice}/transfers", params={"limit": 1000})
    assert response.status_code == 200


# --- the journal ---------------------------------------------------------------------------


def _proof_when_sealed(
    api: httpx.Client, transfer_id: str, assert_problem: AssertProblem
) -> dict[str, Any]:
    deadline = time.monotonic() + SEAL_WAIT_S
    while True:
        response = api.get(f"/v1/ledger/transfers/{transfer_id}/proof")
        if response.status_code == 200:
            proof: dict[str, Any] = response.json()
            return proof
        assert_problem(response, 409, "journal-not-sealed")
        if time.monotonic() > deadline:
            pytest.fail(f"transfer {transfer_id} was not sealed within {SEAL_WAIT_S:g} s")
        time.sleep(POLL_INTERVAL_S)


def test_inclusion_proof_verifies_locally(
    api: httpx.Client, ledger: Ledger, live_server: Any, assert_problem: AssertProblem
) -> None:
    bodies = [transfer_body(ledger.alice, ledger.bob, 100 + n) for n in range(5)]
    assert codes(submit(api, *bodies)) == ["ok"] * 5  # one call: one batch, five leaves

    for index, body in enumerate(bodies):
        proof = _proof_when_sealed(api, body["id"], assert_problem)
        head = api.get("/v1/ledger/journal/head").json()
        public_key = base64.b64decode(head["public_key"])
        assert key_id_for(public_key) == head["key_id"]
        assert head["head"]["seq"] >= proof["block"]["seq"]

        block = proof["block"]
        root = bytes.fromhex(block["merkle_root"])
        leaf = bytes.fromhex(proof["leaf_hash"])
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        assert proof["transfer_id"] == body["id"]
        assert proof["leaf_index"] == index
        assert proof["tree_size"] == block["transfer_count"] == 5
        assert verify_inclusion(leaf, proof["leaf_index"], proof["tree_size"], path, root)

        # The leaf is the transfer the counterparty holds, not just a hash it was told.
        held = transfer_from_json(api.get(f"/v1/ledger/transfers/{body['id']}").json())
        assert leaf_hash(encode_leaf(held)) == leaf

        # The signed block commits to that root, and the head's key signed it.
        digest = block_hash(
            block["seq"],
            bytes.fromhex(block["prev_hash"]),
            uuid.UUID(block["batch_id"]),
            root,
            block["transfer_count"],
            block["committed_ts"],
        )
        assert digest.hex() == block["block_hash"]
        signature = base64.b64decode(block["signature"])
        assert block["key_id"] == head["key_id"]
        assert verify_signature(public_key, signature, digest)

        # And the checks do check: any changed input fails.
        tampered_leaf = leaf_hash(encode_leaf(held._replace(amount=held.amount + 1)))
        assert not verify_inclusion(tampered_leaf, index, proof["tree_size"], path, root)
        other = (index + 1) % proof["tree_size"]
        assert not verify_inclusion(leaf, other, proof["tree_size"], path, root)
        assert not verify_signature(public_key, signature, bytes(32))

    # The key the head publishes is the one operators publish with the CLI.
    shown = subprocess.run(
        [sys.executable, "-m", "zhifu.cli", "ledger", "key"],
        env=live_server.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert head["public_key"] in shown


def test_journal_head_chain_links(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    first = transfer_body(ledger.alice, ledger.bob, 1)
    assert codes(submit(api, first)) == ["ok"]
    block_one = _proof_when_sealed(api, first["id"], assert_problem)["block"]
    second = transfer_body(ledger.alice, ledger.bob, 2)
    assert codes(submit(api, second)) == ["ok"]
    block_two = _proof_when_sealed(api, second["id"], assert_problem)["block"]
    assert block_two["seq"] > block_one["seq"]
    if block_two["seq"] == block_one["seq"] + 1:
        assert block_two["prev_hash"] == block_one["block_hash"]


# --- authorisation ---------------------------------------------------------------------------


def _route_request(method: str, template: str) -> tuple[str, str, dict[str, Any] | None]:
    path = template.format(account_id=new_id(), transfer_id=new_id())
    body: dict[str, Any] | None = None
    if path.endswith("/accounts"):
        body = {"accounts": [account_body()]}
    elif path.endswith("/transfers") and method == "POST":
        body = {"transfers": [transfer_body(new_id(), new_id(), 100)]}
    return method, path, body


def test_the_route_list_covers_every_ledger_route(anonymous: httpx.Client) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    documented = {
        (method.upper(), path)
        for path, item in paths.items()
        if path.startswith("/v1/ledger")
        for method in item
    }
    assert documented == set(LEDGER_ROUTES)


CREDENTIALS = {
    "none": None,
    "empty": "",
    "wrong_token": "Bearer " + secrets.token_urlsafe(32),
    "bearer_without_token": "Bearer",
    "basic_scheme": "Basic " + base64.b64encode(b"ledger:secret").decode(),
    "token_scheme_with_the_real_token": "Token {token}",
}


@pytest.mark.parametrize("credentials", list(CREDENTIALS))
@pytest.mark.parametrize(("method", "template"), LEDGER_ROUTES)
def test_every_ledger_route_needs_the_service_token(
    live_server: Any,
    anonymous: httpx.Client,
    assert_problem: AssertProblem,
    credentials: str,
    method: str,
    template: str,
) -> None:
    method, path, body = _route_request(method, template)
    headers = {}
    value = CREDENTIALS[credentials]
    if value is not None:
        headers["Authorization"] = value.format(token=live_server.token)
    response = anonymous.request(method, path, json=body, headers=headers)
    problem = assert_problem(response, 401, "unauthorised")
    assert response.headers["www-authenticate"] == "Bearer"
    assert problem["detail"]
    assert live_server.token not in response.text


def test_refused_calls_write_nothing(
    api: httpx.Client, anonymous: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    (empty,) = create_accounts(api, account_body())
    before = counters(api, *ledger.ids, empty)
    account = account_body()
    transfer = transfer_body(ledger.alice, ledger.bob, 100)
    wrong = {"Authorization": "Bearer " + secrets.token_urlsafe(32)}
    for headers in ({}, wrong):
        assert_problem(
            anonymous.post("/v1/ledger/accounts", json={"accounts": [account]}, headers=headers),
            401,
        )
        assert_problem(
            anonymous.post("/v1/ledger/transfers", json={"transfers": [transfer]}, headers=headers),
            401,
        )
        assert_problem(anonymous.post(f"/v1/ledger/accounts/{empty}/close", headers=headers), 401)
    assert api.get(f"/v1/ledger/accounts/{account['id']}").status_code == 404
    assert_no_transfer(api, transfer["id"])
    assert get_account(api, empty)["closed_at"] is None
    assert counters(api, *ledger.ids, empty) == before


# --- bad input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadTransfer:
    """A change that makes a good transfer invalid, and the 422 it must cause."""

    change: Callable[[dict[str, Any]], None]
    fields: tuple[str, ...]  # acceptable 'field' values, relative to body.transfers.0
    message: str  # a fragment of the error message (case-insensitive)
    currency: str = "CNY"


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body.update(values)

    return change


def _drop(name: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body.pop(name)
        body.update(values)

    return change


BAD_TRANSFERS = {
    "float_amount": BadTransfer(_set(amount=12.5), ("amount",), "float"),
    "bool_amount": BadTransfer(_set(amount=True), ("amount",), "integer of minor units"),
    "negative_amount": BadTransfer(_set(amount=-100), ("amount",), "between 1 and"),
    "zero_amount": BadTransfer(_set(amount=0), ("amount",), "between 1 and"),
    "negative_decimal_amount": BadTransfer(_set(amount="-1.00"), ("amount",), "positive"),
    "zero_decimal_amount": BadTransfer(_set(amount="0.00"), ("amount",), "positive"),
    "too_many_decimals_cny": BadTransfer(_set(amount="1.234"), ("amount",), "2 decimal places"),
    "decimals_for_jpy": BadTransfer(
        _set(amount="1.5"), ("amount",), "no decimal places", currency="JPY"
    ),
    "unknown_currency": BadTransfer(_set(currency="XYZ"), ("currency",), "XYZ"),
    "lowercase_currency": BadTransfer(_set(currency="cny"), ("currency",), "cny"),
    "amount_beyond_max_int": BadTransfer(_set(amount=AMOUNT_MAX + 1), ("amount",), str(AMOUNT_MAX)),
    "amount_beyond_max_decimal": BadTransfer(
        _set(amount="92233720368547758.08"), ("amount",), "out of range"
    ),
    "decimal_amount_without_currency": BadTransfer(
        _drop("currency", amount="12.34"), ("amount", "currency"), "currency"
    ),
    "unknown_flag": BadTransfer(_set(flags=["instant"]), ("flags.0",), "linked"),
    "unknown_field": BadTransfer(_set(memo="rent"), ("memo",), "extra"),
    "malformed_id": BadTransfer(_set(id="not-a-uuid"), ("id",), "uuid"),
    "malformed_account_id": BadTransfer(
        _set(debit_account_id="1234"), ("debit_account_id",), "uuid"
    ),
    "code_zero": BadTransfer(_set(code=0), ("code",), "greater than or equal to 1"),
    "code_too_big": BadTransfer(_set(code=CODE_MAX + 1), ("code",), str(CODE_MAX)),
    "code_as_text": BadTransfer(_set(code="10"), ("code",), "integer"),
    "external_ref_too_long": BadTransfer(
        _set(external_ref="r" * (EXTERNAL_REF_LENGTH_MAX + 1)),
        ("external_ref",),
        str(EXTERNAL_REF_LENGTH_MAX),
    ),
    "external_ref_empty": BadTransfer(_set(external_ref=""), ("external_ref",), "at least 1"),
    "negative_timeout": BadTransfer(_set(timeout_s=-1), ("timeout_s",), "greater than"),
}


@pytest.mark.parametrize("name", list(BAD_TRANSFERS))
def test_bad_transfer_is_a_422_naming_the_field_and_writes_nothing(
    api: httpx.Client, assert_problem: AssertProblem, name: str
) -> None:
    case = BAD_TRANSFERS[name]
    ledger = open_ledger(api, case.currency)
    body = transfer_body(ledger.alice, ledger.bob, 100, case.currency)
    case.change(body)
    before = counters(api, *ledger.ids)

    response = api.post("/v1/ledger/transfers", json={"transfers": [body]})

    problem = assert_problem(response, 422, "invalid-request")
    assert problem["detail"]
    errors = problem["errors"]
    assert errors, problem
    wanted = {f"body.transfers.0.{field_name}" for field_name in case.fields}
    named = [e for e in errors if e["field"] in wanted]
    assert named, f"no error names {sorted(wanted)}: {errors}"
    assert any(case.message.lower() in e["message"].lower() for e in named), errors
    assert counters(api, *ledger.ids) == before
    if isinstance(body.get("id"), str) and body["id"] != "not-a-uuid":
        assert_no_transfer(api, body["id"])


def test_external_ref_at_the_limit_is_accepted(api: httpx.Client, ledger: Ledger) -> None:
    body = transfer_body(ledger.alice, ledger.bob, 100, external_ref="r" * EXTERNAL_REF_LENGTH_MAX)
    assert codes(submit(api, body)) == ["ok"]
    stored = api.get(f"/v1/ledger/transfers/{body['id']}").json()
    assert stored["external_ref"] == "r" * EXTERNAL_REF_LENGTH_MAX


def test_amount_at_the_limit_is_accepted(api: httpx.Client) -> None:
    bank, customer = create_accounts(api, account_body(code=BANK_CODE), account_body())
    assert codes(submit(api, transfer_body(bank, customer, AMOUNT_MAX))) == ["ok"]
    assert get_account(api, customer)["credits_posted"] == AMOUNT_MAX
    assert codes(submit(api, transfer_body(bank, customer, 1))) == ["overflows_debits"]
    assert get_account(api, customer)["credits_posted"] == AMOUNT_MAX


def test_batch_one_past_the_limit_is_a_422_and_writes_nothing(
    api: httpx.Client, ledger: Ledger, assert_problem: AssertProblem
) -> None:
    bodies = [transfer_body(ledger.bank, ledger.bob, 1) for _ in range(BATCH_EVENTS_MAX + 1)]
    before = counters(api, *ledger.ids)
    response = api.post("/v1/ledger/transfers", json={"transfers": bodies})
    problem = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["body.transfers"]
    assert str(BATCH_EVENTS_MAX) in problem["errors"][0]["message"]
    assert counters(api, *ledger.ids) == before
    assert_no_transfer(api, bodies[0]["id"])


def test_batch_at_the_limit_is_accepted(api: httpx.Client, ledger: Ledger) -> None:
    bodies = [transfer_body(ledger.bank, ledger.bob, 1) for _ in range(BATCH_EVENTS_MAX)]
    results = submit(api, *bodies)
    assert codes(results) == ["ok"] * BATCH_EVENTS_MAX
    assert get_account(api, ledger.bob)["credits_posted"] == BATCH_EVENTS_MAX


def test_empty_batch_is_a_422(api: httpx.Client, assert_problem: AssertProblem) -> None:
    for path, key in (("/v1/ledger/transfers", "transfers"), ("/v1/ledger/accounts", "accounts")):
        problem = assert_problem(api.post(path, json={key: []}), 422, "invalid-request")
        assert [e["field"] for e in problem["errors"]] == [f"body.{key}"]
        assert "at least 1" in problem["errors"][0]["message"]


def test_body_that_is_not_json_is_a_422(api: httpx.Client, assert_problem: AssertProblem) -> None:
    response = api.post(
        "/v1/ledger/transfers",
        content=b'{"transfers": [',
        headers={"Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"]
    assert problem["errors"][0]["field"].startswith("body")


BAD_ACCOUNTS = {
    "unknown_currency": (_set(currency="XYZ"), "currency", "XYZ"),
    "code_zero": (_set(code=0), "code", "greater than or equal to 1"),
    "code_too_big": (_set(code=CODE_MAX + 1), "code", str(CODE_MAX)),
    "unknown_flag": (_set(flags=["overdraft"]), "flags.0", "history"),
    "unknown_field": (_set(balance=100), "balance", "extra"),
    "malformed_id": (_set(id="42"), "id", "uuid"),
}


@pytest.mark.parametrize("name", list(BAD_ACCOUNTS))
def test_bad_account_is_a_422_naming_the_field_and_creates_nothing(
    api: httpx.Client, assert_problem: AssertProblem, name: str
) -> None:
    change, field_name, message = BAD_ACCOUNTS[name]
    good = account_body(flags=CUSTOMER_FLAGS)
    bad = account_body()
    change(bad)
    response = api.post("/v1/ledger/accounts", json={"accounts": [good, bad]})
    problem = assert_problem(response, 422, "invalid-request")
    named = [e for e in problem["errors"] if e["field"] == f"body.accounts.1.{field_name}"]
    assert named, problem["errors"]
    assert any(message.lower() in e["message"].lower() for e in named)
    # The whole call is refused: not even the good account is created.
    assert api.get(f"/v1/ledger/accounts/{good['id']}").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/ledger/accounts/not-a-uuid",
        "/v1/ledger/accounts/not-a-uuid/balance",
        "/v1/ledger/transfers/12345",
    ],
)
def test_malformed_uuid_in_the_path_is_a_422(
    api: httpx.Client, assert_problem: AssertProblem, path: str
) -> None:
    problem = assert_problem(api.get(path), 422, "invalid-request")
    fields = [e["field"] for e in problem["errors"]]
    assert fields in (["path.account_id"], ["path.transfer_id"])


def test_rejected_input_is_never_echoed(api: httpx.Client, assert_problem: AssertProblem) -> None:
    secret = "6222020200112233445"  # looks like a card number
    body = transfer_body(new_id(), new_id(), 100, external_ref=secret + "x" * 60)
    response = api.post("/v1/ledger/transfers", json={"transfers": [body]})
    assert_problem(response, 422)
    assert secret not in response.text

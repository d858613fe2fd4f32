"""Transaction history, CSV statements and receipts over real HTTP against a
real ``zhifu serve``: a customer funded at the counter pays and is paid, reads
the account's history with filters and pages, exports it as CSV (which reads
back as the list, with formulas defused), lists payments, and checks a
receipt's signature with the published key exactly as docs/payments.md says.
Somebody else's account or payment answers 404.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import LiveServer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from identity_actors import Bank

from zhifu.payments.history import (
    COUNTERPARTY_FILTER_CHARS_MAX,
    CSV_COLUMNS,
    PAGE_SIZE_MAX,
    RECEIPT_HTML_CSP,
)

pytestmark = pytest.mark.xdist_group("history_http")

Problem = Callable[..., dict[str, Any]]
CNY_CURRENT = {"product": "current", "account_class": "I", "currency": "CNY"}
MEMOS = ('=HYPERLINK("http://evil.example")', "<b>lunch</b> 午饭", "+86 taxi")


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def teller_token(bank: Bank) -> str:
    admin_token = bank.staff_sign_in(bank.create_admin("history-admin"))
    checker_token = bank.staff_sign_in(bank.create_admin("history-checker"))
    teller = bank.create_staff(admin_token, "teller")
    bank.grant_role(admin_token, checker_token, teller, "teller")
    return bank.staff_sign_in(teller)


class Person:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self.customer = bank.register()
        self.token = bank.sign_in(self.customer)
        opened = bank.call("POST", "/v1/accounts", self.token, json=CNY_CURRENT)
        assert opened.status_code == 201, opened.text
        self.account: dict[str, Any] = opened.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.bank.call("GET", path, self.token, params=params or None)

    def pay(self, to: Person, amount: str, memo: str = "") -> dict[str, Any]:
        body = {
            "from_account_id": self.account["id"],
            "to_account_number": to.account["number"],
            "amount": amount,
            "currency": "CNY",
            "memo": memo,
        }
        headers = {"Idempotency-Key": secrets.token_hex(8)}
        response = self.bank.call("POST", "/v1/payments", self.token, json=body, headers=headers)
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        return payment

    @property
    def transactions(self) -> str:
        return f"/v1/accounts/{self.account['id']}/transactions"


def deposit(bank: Bank, teller_token: str, who: Person, amount: str) -> None:
    body = {"account_id": who.account["id"], "amount": amount, "currency": "CNY"}
    headers = {"Idempotency-Key": secrets.token_hex(8)}
    response = bank.call("POST", "/v1/teller/deposits", teller_token, json=body, headers=headers)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def people(bank: Bank, teller_token: str) -> tuple[Person, Person, list[dict[str, Any]]]:
    """Alice (1,000.00 paid in at the counter) pays Bob three times; Bob pays her once."""
    alice, bob = Person(bank), Person(bank)
    deposit(bank, teller_token, alice, "1000.00")
    payments = [alice.pay(bob, f"{n}.00", memo) for n, memo in enumerate(MEMOS, start=10)]
    payments.append(bob.pay(alice, "5.00", "change"))
    return alice, bob, payments


def items(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


def test_a_customer_reads_their_accounts_history(
    people: tuple[Person, Person, list[dict[str, Any]]],
) -> None:
    alice, bob, payments = people
    page = alice.get(alice.transactions)
    assert page.status_code == 200, page.text
    assert page.json()["next_cursor"] is None
    entries = page.json()["items"]
    assert [(e["type"], e["direction"], e["amount"], e["balance_after"]) for e in entries] == [
        ("transfer", "incoming", "5.00", "972.00"),
        ("transfer", "outgoing", "12.00", "967.00"),
        ("transfer", "outgoing", "11.00", "979.00"),
        ("transfer", "outgoing", "10.00", "990.00"),
        ("cash_deposit", "incoming", "1000.00", "1000.00"),
    ]
    assert [e["id"] for e in entries[:4]] == [p["id"] for p in reversed(payments)]
    assert entries[1]["memo"] == MEMOS[2] and entries[1]["status"] == "settled"
    assert entries[1]["counterparty"] == f"****{bob.account['number'][-4:]}"
    assert entries[-1]["counterparty"] == "cash at counter"
    assert entries[0]["time"].endswith("+08:00") and len(entries[0]["time"]) == 25
    assert {e["account_id"] for e in entries} == {alice.account["id"]}
    assert [e["direction"] for e in items(bob.get(bob.transactions))] == [
        "outgoing",
        "incoming",
        "incoming",
        "incoming",
    ]


def test_filters_narrow_the_history(people: tuple[Person, Person, list[dict[str, Any]]]) -> None:
    alice, bob, _ = people
    path = alice.transactions
    today = items(alice.get(path))[0]["time"][:10]

    def ids(**params: Any) -> list[str]:
        return [e["amount"] for e in items(alice.get(path, **params))]

    assert ids(direction="incoming") == ["5.00", "1000.00"]
    assert ids(type="cash_deposit") == ["1000.00"]
    assert ids(type=["cash_deposit", "cash_withdrawal"], direction="outgoing") == []
    assert ids(min_amount="10.50", max_amount="12") == ["12.00", "11.00"]
    assert ids(counterparty=bob.account["number"][-4:]) == ["5.00", "12.00", "11.00", "10.00"]
    assert ids(counterparty="COUNTER") == ["1000.00"]
    assert ids(status="settled", **{"from": today, "to": today}) == [
        "5.00",
        "12.00",
        "11.00",
        "10.00",
        "1000.00",
    ]
    assert ids(status="failed") == []
    assert ids(to="2000-01-01") == []
    assert ids(**{"from": "2000-01-01T00:00:00Z"}) == ids()


def test_pages_follow_one_another_to_the_end(
    people: tuple[Person, Person, list[dict[str, Any]]], assert_problem: Problem
) -> None:
    alice = people[0]
    whole = items(alice.get(alice.transactions))
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(len(whole)):
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = alice.get(alice.transactions, **params)
        seen += items(response)
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == whole
    assert items(alice.get(alice.transactions, limit=PAGE_SIZE_MAX)) == whole
    for limit in (0, PAGE_SIZE_MAX + 1):
        assert_problem(alice.get(alice.transactions, limit=limit), 422, "invalid-request")
    for cursor in ("bogus", "aDE6MTIzOnp6", whole[0]["id"]):
        problem = assert_problem(
            alice.get(alice.transactions, cursor=cursor), 400, "invalid-cursor"
        )
        assert "next_cursor" in problem["detail"]


def test_bad_filters_are_clear_problems(
    people: tuple[Person, Person, list[dict[str, Any]]], assert_problem: Problem
) -> None:
    alice = people[0]
    for params, field in (
        ({"min_amount": "1.001"}, "min_amount"),
        ({"max_amount": "12.0.0"}, "max_amount"),
        ({"from": "2024-05-02", "to": "2024-05-01"}, "from"),
        ({"to": "2024-05-01T10:00:00"}, "to"),
        ({"counterparty": "x" * (COUNTERPARTY_FILTER_CHARS_MAX + 1)}, "counterparty"),
    ):
        problem = assert_problem(alice.get(alice.transactions, **params), 422, "invalid-input")
        assert problem["field"] == field and problem["code"] == "invalid_history_filter"
    at_limit = {"counterparty": "x" * COUNTERPARTY_FILTER_CHARS_MAX}
    assert items(alice.get(alice.transactions, **at_limit)) == []
    assert_problem(alice.get(alice.transactions, type="refunds"), 422, "invalid-request")


def test_somebody_elses_history_is_not_found(
    people: tuple[Person, Person, list[dict[str, Any]]], assert_problem: Problem
) -> None:
    alice, bob, payments = people
    for path in (alice.transactions, alice.transactions + ".csv"):
        problem = assert_problem(bob.get(path), 404, "not-found")
        assert alice.account["number"][-4:] not in str(problem)
    carol = Person(bob.bank)
    assert_problem(carol.get(f"/v1/payments/{payments[0]['id']}/receipt"), 404, "not-found")
    assert items(carol.get("/v1/payments")) == []


def read_csv(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")  # the UTF-8 byte-order mark
    text = response.content.decode("utf-8-sig")
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_the_csv_export_reads_back_as_the_list(
    people: tuple[Person, Person, list[dict[str, Any]]],
) -> None:
    alice = people[0]
    response = alice.get(alice.transactions + ".csv")
    disposition = response.headers["content-disposition"]
    assert disposition == (
        f'attachment; filename="zhifu-{alice.account["number"][-4:]}-transactions.csv"'
    )
    rows = read_csv(response)
    listed = items(alice.get(alice.transactions))
    expected = [{column: entry[column] or "" for column in CSV_COLUMNS} for entry in listed]
    for row in expected:  # formulas come back defused with a leading quote
        if row["memo"][:1] in ("=", "+", "-", "@"):
            row["memo"] = "'" + row["memo"]
    assert rows == expected
    assert rows[3]["memo"] == "'" + MEMOS[0] and rows[1]["memo"] == "'" + MEMOS[2]
    assert "<b>lunch</b> 午饭" in response.content.decode("utf-8")
    outgoing = read_csv(alice.get(alice.transactions + ".csv", direction="outgoing"))
    assert [row["amount"] for row in outgoing] == ["12.00", "11.00", "10.00"]


def test_the_payments_list_spans_the_customers_payments(
    people: tuple[Person, Person, list[dict[str, Any]]], assert_problem: Problem
) -> None:
    alice, _, payments = people
    listed = items(alice.get("/v1/payments"))
    assert [e["id"] for e in listed] == [p["id"] for p in reversed(payments)]
    assert [e["payment_id"] for e in listed] == [e["id"] for e in listed]
    assert [e["amount"] for e in items(alice.get("/v1/payments", direction="incoming"))] == ["5.00"]
    cheap = alice.get("/v1/payments", max_amount="10.00", currency="CNY", type="transfer")
    assert [e["amount"] for e in items(cheap)] == ["5.00", "10.00"]
    first = alice.get("/v1/payments", limit=3)
    rest = alice.get("/v1/payments", limit=3, cursor=first.json()["next_cursor"])
    assert items(first) + items(rest) == listed
    problem = assert_problem(alice.get("/v1/payments", max_amount="1"), 422, "invalid-input")
    assert problem["field"] == "max_amount"
    assert_problem(alice.get("/v1/payments", type="cash_deposit"), 422, "invalid-request")


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_receipt_verifies_with_the_published_key(
    people: tuple[Person, Person, list[dict[str, Any]]], anonymous: Any
) -> None:
    alice, bob, payments = people
    keys = anonymous.get("/v1/receipts/public-key")
    assert keys.status_code == 200, keys.text
    published = keys.json()
    assert published["algorithm"] == "Ed25519" and published["previous"] == []
    public_key = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(published["current"]["public_key"])
    )

    path = f"/v1/payments/{payments[0]['id']}/receipt"
    response = alice.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["vary"] == "Accept, Accept-Language"
    body = response.json()
    receipt, signature = body["receipt"], body["signature"]
    assert signature["key_id"] == published["current"]["key_id"]
    assert receipt["memo"] == MEMOS[0] and receipt["amount"] == "10.00"
    assert receipt["payee"]["account"].endswith(bob.account["number"][-4:])
    assert alice.account["number"] not in response.text
    # docs/payments.md: signed bytes = signature_domain + canonical JSON of "receipt".
    signed = published["signature_domain"].encode() + canonical(receipt)
    public_key.verify(base64.b64decode(signature["value"]), signed)
    tampered = bytearray(signed)
    tampered[-20] ^= 1
    with pytest.raises(InvalidSignature):
        public_key.verify(base64.b64decode(signature["value"]), bytes(tampered))
    assert bob.get(path).json() == body  # the payee gets the very same receipt


def test_a_printable_receipt_in_chinese_or_english(
    people: tuple[Person, Person, list[dict[str, Any]]],
) -> None:
    alice, _, payments = people
    path = f"/v1/payments/{payments[1]['id']}/receipt"
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    chinese = alice.bank.call("GET", path, alice.token, headers=browser)
    assert chinese.status_code == 200, chinese.text
    assert chinese.headers["content-type"] == "text/html; charset=utf-8"
    assert chinese.headers["content-language"] == "zh-CN"
    assert chinese.headers["content-security-policy"] == RECEIPT_HTML_CSP
    assert chinese.headers["cache-control"] == "no-store"
    page = chinese.text
    assert "电子回单" in page and "11.00 CNY" in page
    assert "&lt;b&gt;lunch&lt;/b&gt; 午饭" in page and "<b>" not in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    english = alice.bank.call(
        "GET", path, alice.token, headers={**browser, "Accept-Language": "en-GB,en;q=0.9"}
    )
    assert english.headers["content-language"] == "en" and "Electronic receipt" in english.text
    forced = alice.get(path, format="html", lang="en")
    assert forced.headers["content-type"].startswith("text/html")
    assert "Electronic receipt" in forced.text
    assert alice.get(path, format="json").json()["receipt"]["amount"] == "11.00"

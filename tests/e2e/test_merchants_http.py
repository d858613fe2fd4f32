"""Merchants over real HTTP against a real ``zhifu serve``: a shop owner onboards
with their own account, staff approve it with the key of its point of sale,
the owner and the till make QR codes (text, PNG and SVG), customers pay them
by their text and by a photo, a till charges a customer's one-time payment
code, both refund, and the till's webhook receiver gets every event signed.
Dynamic codes and payment codes pay once; replays answer the first result;
strangers find nothing; refusals change nothing; the ledger verifies at the
end and no payment code reached the server's log."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from conftest import LiveServer, check_problem, run_cli
from identity_actors import Bank, Customer, PartnerKey
from webhooks_factories import Receiver, running_receiver

pytestmark = pytest.mark.xdist_group("merchants_http")

DELIVERY_WAIT_S = 30.0
SHOP = {"name": "GOLDEN DRAGON NOODLES", "city": "SHANGHAI", "mcc": "5812"}


@dataclass
class Person:
    customer: Customer
    token: str


@dataclass
class World:
    bank: Bank
    admin_token: str
    till: PartnerKey
    other_till: PartnerKey
    owner: Person
    merchant: dict[str, Any]
    settlement: dict[str, Any]


def key() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(8)}


def signed(
    bank: Bank,
    partner: PartnerKey,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    signature = partner.sign(method, path, content)
    if content:
        signature["Content-Type"] = "application/json"
    return bank.call(
        method, path, content=content or None, headers={**signature, **(headers or {})}
    )


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


def person(bank: Bank) -> Person:
    customer = bank.register()
    return Person(customer, bank.sign_in(customer))


def open_account(bank: Bank, who: Person, **overrides: str) -> dict[str, Any]:
    body = {"product": "current", "account_class": "I", "currency": "CNY", **overrides}
    response = bank.call("POST", "/v1/accounts", who.token, json=body)
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


def deposit(bank: Bank, admin_token: str, account: dict[str, Any], amount: str) -> None:
    body = {"account_id": account["id"], "amount": amount, "currency": "CNY"}
    response = bank.call("POST", "/v1/teller/deposits", admin_token, json=body, headers=key())
    assert response.status_code == 200, response.text


def balance(bank: Bank, who: Person, account: dict[str, Any]) -> str:
    response = bank.call("GET", f"/v1/accounts/{account['id']}", who.token)
    assert response.status_code == 200, response.text
    return str(response.json()["balance"])


@pytest.fixture(scope="module")
def world(bank: Bank) -> World:
    admin_token = bank.staff_sign_in(bank.create_admin("merchants-admin"))
    till = bank.partner_key(admin_token, "hmac-sha256")
    other_till = bank.partner_key(admin_token, "ed25519")
    owner = person(bank)
    settlement = open_account(bank, owner)
    onboarded = bank.call(
        "POST",
        "/v1/merchants",
        owner.token,
        json={**SHOP, "alternate_name": "金龙面馆", "settlement_account_id": settlement["id"]},
        headers=key(),
    )
    assert onboarded.status_code == 201, onboarded.text
    merchant_id = onboarded.json()["id"]
    approved = bank.call(
        "POST",
        f"/v1/admin/merchants/{merchant_id}/approve",
        admin_token,
        json={"partner_key_id": till.key_id},
    )
    assert approved.status_code == 200, approved.text
    return World(bank, admin_token, till, other_till, owner, approved.json(), settlement)


def payer(world: World, amount: str = "1000.00") -> tuple[Person, dict[str, Any]]:
    who = person(world.bank)
    account = open_account(world.bank, who)
    deposit(world.bank, world.admin_token, account, amount)
    return who, account


def qr_code(world: World, body: dict[str, Any]) -> dict[str, Any]:
    path = f"/v1/merchants/{world.merchant['id']}/qr-codes"
    response = world.bank.call("POST", path, world.owner.token, json=body, headers=key())
    assert response.status_code == 201, response.text
    code: dict[str, Any] = response.json()
    return code


def pay(world: World, who: Person, body: dict[str, Any], key_: dict[str, str]) -> httpx.Response:
    return world.bank.call("POST", "/v1/qr-payments", who.token, json=body, headers=key_)


# --- onboarding ---------------------------------------------------------------------------------


def test_onboarding_waits_for_approval_and_replays(bank: Bank, world: World) -> None:
    owner = person(bank)
    account = open_account(bank, owner)
    body = {**SHOP, "settlement_account_id": account["id"]}
    headers = key()
    first = bank.call("POST", "/v1/merchants", owner.token, json=body, headers=headers)
    assert first.status_code == 201, first.text
    merchant = first.json()
    assert (merchant["status"], merchant["currency"], merchant["partner_key_id"]) == (
        "pending",
        "CNY",
        None,
    )
    again = bank.call("POST", "/v1/merchants", owner.token, json=body, headers=headers)
    assert (again.status_code, again.json()["id"], again.json()["replayed"]) == (
        200,
        merchant["id"],
        True,
    )
    other = bank.call(
        "POST", "/v1/merchants", owner.token, json={**body, "mcc": "5411"}, headers=headers
    )
    check_problem(other, 409, "idempotency-conflict")
    no_key = bank.call("POST", "/v1/merchants", owner.token, json=body)
    check_problem(no_key, 400, "invalid-idempotency-key")
    bad = bank.call(
        "POST", "/v1/merchants", owner.token, json={**body, "mcc": "7995"}, headers=key()
    )
    assert "gambling" in check_problem(bad, 422, "invalid-input")["detail"]

    path = f"/v1/merchants/{merchant['id']}/qr-codes"
    early = bank.call("POST", path, owner.token, json={"kind": "static"}, headers=key())
    check_problem(early, 409, "merchant-state")
    pending = bank.call("GET", "/v1/admin/merchants?status=pending", world.admin_token)
    assert merchant["id"] in [m["id"] for m in pending.json()["merchants"]]
    listed = bank.call("GET", "/v1/merchants", owner.token)
    assert [m["id"] for m in listed.json()] == [merchant["id"]]


def test_strangers_find_no_merchant(bank: Bank, world: World) -> None:
    stranger = person(bank)
    merchant_id = world.merchant["id"]
    for path in (
        f"/v1/merchants/{merchant_id}",
        f"/v1/merchants/{merchant_id}/payments",
    ):
        check_problem(bank.call("GET", path, stranger.token), 404, "not-found")
        check_problem(bank.call("GET", path, world.admin_token), 403, "forbidden")
    for method, path, body in (
        ("GET", f"/v1/partner/merchants/{merchant_id}/payments", None),
        ("POST", f"/v1/partner/merchants/{merchant_id}/qr-codes", {"kind": "static"}),
    ):
        response = signed(bank, world.other_till, method, path, body, headers=key())
        problem = check_problem(response, 404, "not-found")
        assert world.merchant["name"] not in str(problem)
    unsigned = bank.call("GET", f"/v1/partner/merchants/{merchant_id}/payments")
    check_problem(unsigned, 401, "signature-invalid")
    assert bank.call("GET", "/v1/merchants", stranger.token).json() == []


def test_a_key_without_the_merchant_scope_is_refused(bank: Bank, world: World) -> None:
    issued = bank.call(
        "POST",
        "/v1/admin/partner-keys",
        world.admin_token,
        json={"partner_name": "Wallet Co", "algorithm": "hmac-sha256", "scopes": ["payments"]},
    )
    assert issued.status_code == 201, issued.text
    secret = base64.b64decode(bank.remember("partner secret", issued.json()["secret"]))
    wallet = PartnerKey(issued.json()["key_id"], "hmac-sha256", secret)
    path = f"/v1/partner/merchants/{world.merchant['id']}/payments"
    check_problem(signed(bank, wallet, "GET", path), 403, "forbidden")
    owner = person(bank)
    account = open_account(bank, owner)
    body = {**SHOP, "settlement_account_id": account["id"]}
    merchant = bank.call("POST", "/v1/merchants", owner.token, json=body, headers=key()).json()
    refused = bank.call(
        "POST",
        f"/v1/admin/merchants/{merchant['id']}/approve",
        world.admin_token,
        json={"partner_key_id": wallet.key_id},
    )
    assert "merchant' scope" in check_problem(refused, 422, "invalid-input")["detail"]


# --- QR codes, paid by scanning -----------------------------------------------------------------


def test_codes_are_paid_by_text_and_by_photo_once(bank: Bank, world: World) -> None:
    static = qr_code(world, {"kind": "static", "terminal_label": "TILL 1"})
    assert static["payload"].startswith("000201010211")
    png = bank.call("GET", static["image_png"], world.owner.token)
    assert (png.status_code, png.headers["content-type"]) == (200, "image/png")
    assert png.content.startswith(b"\x89PNG")
    svg = bank.call("GET", static["image_svg"], world.owner.token)
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg")

    who, account = payer(world, "100.00")
    headers = key()
    body = {"payload": static["payload"], "amount": "12.34", "from_account_id": account["id"]}
    paid = pay(world, who, body, headers)
    assert paid.status_code == 201, paid.text
    order = paid.json()
    assert (order["kind"], order["state"], order["payee"], order["merchant_id"]) == (
        "merchant",
        "settled",
        "GOLDEN DRAGON NOODLES",
        world.merchant["id"],
    )
    again = pay(world, who, body, headers)
    assert (again.status_code, again.json()["id"], again.json()["replayed"]) == (
        200,
        order["id"],
        True,
    )
    check_problem(pay(world, who, {**body, "amount": "1.00"}, headers), 409, "idempotency-conflict")
    check_problem(pay(world, who, {**body, "amount": None}, key()), 422, "invalid-input")

    # The till makes a dynamic code; a customer uploads a photo of it.
    path = f"/v1/partner/merchants/{world.merchant['id']}/qr-codes"
    made = signed(
        bank,
        world.till,
        "POST",
        path,
        {"kind": "dynamic", "amount": "36.50", "order_ref": "A-42"},
        headers=key(),
    )
    assert made.status_code == 201, made.text
    dynamic = made.json()
    photo = signed(bank, world.till, "GET", dynamic["image_png"])
    assert photo.status_code == 200, photo.text
    upload = {"image_base64": base64.b64encode(photo.content).decode()}
    by_photo = pay(world, who, upload, key())
    assert by_photo.status_code == 201, by_photo.text
    assert (by_photo.json()["amount"], by_photo.json()["external_ref"]) == ("36.50", "A-42")
    second, _ = payer(world)
    used = pay(world, second, {"payload": dynamic["payload"]}, key())
    check_problem(used, 409, "qr-code-used")
    assert balance(bank, who, account) == "51.16"

    broken = pay(world, who, {"image_base64": "not base64!"}, key())
    assert "base64" in check_problem(broken, 422)["detail"]
    no_code = pay(world, who, {"image_base64": base64.b64encode(b"GIF89a").decode()}, key())
    check_problem(no_code, 422)
    altered = dynamic["payload"].replace("36.50", "00.01")
    check_problem(pay(world, who, {"payload": altered}, key()), 422)


def test_a_large_payment_needs_a_second_factor(bank: Bank, world: World) -> None:
    who, account = payer(world, "6000.00")
    static = qr_code(world, {"kind": "static"})
    body = {"payload": static["payload"], "amount": "5000.00"}
    headers = key()
    asked = pay(world, who, body, headers)
    check_problem(asked, 403, "step-up-required")
    bank.step_up(who.customer, who.token)
    paid = pay(world, who, body, headers)
    assert paid.status_code == 201, paid.text
    assert balance(bank, who, account) == "1000.00"


def test_a_frozen_account_cannot_pay(bank: Bank, world: World) -> None:
    who, account = payer(world, "10.00")
    frozen = bank.call("POST", f"/v1/accounts/{account['id']}/freeze", who.token)
    assert frozen.status_code == 200, frozen.text
    static = qr_code(world, {"kind": "static"})
    refused = pay(world, who, {"payload": static["payload"], "amount": "1.00"}, key())
    assert "frozen" in check_problem(refused, 409, "account-frozen")["detail"]


# --- payment codes, refunds, webhooks, the ledger ------------------------------------------------


def test_a_till_charges_a_code_refunds_and_gets_signed_webhooks(
    bank: Bank, world: World, live_server: LiveServer
) -> None:
    with running_receiver(Receiver(now_s=lambda: int(time.time()))) as receiver:
        hooked = signed(
            bank,
            world.till,
            "POST",
            "/v1/partner/webhooks",
            {"url": receiver.url, "event_types": ["payment.*", "refund.*"]},
        )
        assert hooked.status_code == 201, hooked.text
        receiver.secret = base64.b64decode(bank.remember("webhook secret", hooked.json()["secret"]))

        who, account = payer(world, "100.00")
        made = bank.call(
            "POST",
            "/v1/payment-codes",
            who.token,
            json={"account_id": account["id"], "amount_cap": "80.00"},
            headers=key(),
        )
        assert made.status_code == 201, made.text
        code = bank.remember("payment code", made.json()["code"])
        assert len(code) == 18 and made.json()["qr_svg"].startswith("<svg")

        merchant_id = world.merchant["id"]
        charges = f"/v1/partner/merchants/{merchant_id}/charges"
        over = {"payment_code": code, "amount": "80.01", "currency": "CNY"}
        check_problem(
            signed(bank, world.till, "POST", charges, over, key()), 409, "payment-code-cap"
        )
        body = {"payment_code": code, "amount": "60.00", "currency": "CNY", "order_ref": "T-9"}
        charged = signed(bank, world.till, "POST", charges, body, key())
        assert charged.status_code == 201, charged.text
        payment = charged.json()
        assert (payment["direction"], payment["external_ref"]) == ("incoming", "T-9")
        twice = signed(bank, world.till, "POST", charges, body, key())
        check_problem(twice, 422, "payment-code-invalid")
        stranger = signed(
            bank,
            world.other_till,
            "POST",
            f"/v1/partner/merchants/{merchant_id}/charges",
            body,
            key(),
        )
        check_problem(stranger, 404, "not-found")

        refunds = f"/v1/partner/merchants/{merchant_id}/payments/{payment['id']}/refunds"
        part = {"amount": "20.00", "currency": "CNY", "reason": "one dish was cold"}
        refunded = signed(bank, world.till, "POST", refunds, part, key())
        assert refunded.status_code == 201, refunded.text
        assert refunded.json()["refund_of"] == payment["id"]
        by_owner = bank.call(
            "POST",
            f"/v1/merchants/{merchant_id}/payments/{payment['id']}/refunds",
            world.owner.token,
            json={"amount": "40.00", "currency": "CNY"},
            headers=key(),
        )
        assert by_owner.status_code == 201, by_owner.text
        too_much = signed(bank, world.till, "POST", refunds, {**part, "amount": "0.01"}, key())
        check_problem(too_much, 409, "refund-too-large")
        assert balance(bank, who, account) == "100.00"

        listed = signed(bank, world.till, "GET", f"/v1/partner/merchants/{merchant_id}/payments")
        assert listed.status_code == 200, listed.text
        newest = [p["id"] for p in listed.json()["payments"][:3]]
        assert newest == [by_owner.json()["id"], refunded.json()["id"], payment["id"]]
        one = signed(
            bank, world.till, "GET", f"/v1/partner/merchants/{merchant_id}/payments/{payment['id']}"
        )
        assert one.json()["refunded"] == "60.00"

        got = receiver.wait_for(3, DELIVERY_WAIT_S)
        assert all(hook.verified for hook in got), [hook.reason for hook in got]
        kinds = sorted(hook.event_type for hook in got[:3])
        assert kinds == ["payment.succeeded", "refund.succeeded", "refund.succeeded"]
        last = [h.event["data"] for h in got if h.event_type == "refund.succeeded"]
        assert {d["refundable_minor"] for d in last} == {40_00, 0}

    assert "ledger verified" in run_cli(live_server.env, "ledger", "verify")
    log = live_server.log_text()
    for what, value in bank.remembered:
        if what in ("payment code", "webhook secret", "partner secret"):
            assert value not in log, f"the server logged a {what}"

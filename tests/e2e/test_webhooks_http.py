"""Webhooks end to end: a partner subscribes over signed HTTP to a real receiver
in this process, and the server's own dispatcher delivers the test event, a
replay and an operator's replay (``zhifu webhooks replay``), each checked with
``verify_webhook`` as the recipe says. Another partner's subscription and
deliveries answer 404; bad input 422; unsigned requests 401. The signing secret
never reaches the server's log.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer, check_problem, run_cli
from identity_actors import Bank, PartnerKey
from webhooks_factories import Receiver, running_receiver

from zhifu.webhooks.signature import DELIVERY_HEADER

pytestmark = pytest.mark.xdist_group("webhooks_http")

DELIVERY_WAIT_S = 30.0


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def partners(bank: Bank) -> tuple[PartnerKey, PartnerKey]:
    admin = bank.create_admin()
    token = bank.staff_sign_in(admin)
    return bank.partner_key(token, "hmac-sha256"), bank.partner_key(token, "ed25519")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver(now_s=lambda: int(time.time()))) as running:
        yield running


def signed(bank: Bank, key: PartnerKey, method: str, path: str, body: Any = None) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    headers = key.sign(method, path, content)
    if content:
        headers["Content-Type"] = "application/json"
    return bank.call(method, path, content=content or None, headers=headers)


def wait_for_delivery(bank: Bank, key: PartnerKey, subscription_id: str, delivery_id: str) -> Any:
    """The delivery from the log once it is no longer pending."""
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while time.monotonic() < deadline:
        log = signed(bank, key, "GET", f"/v1/partner/webhooks/{subscription_id}/deliveries")
        assert log.status_code == 200, log.text
        found = [d for d in log.json()["deliveries"] if d["id"] == delivery_id]
        if found and found[0]["status"] != "pending":
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"delivery {delivery_id} still pending after {DELIVERY_WAIT_S} s")


def test_a_partner_subscribes_tests_replays_and_deletes(
    bank: Bank,
    live_server: LiveServer,
    partners: tuple[PartnerKey, PartnerKey],
    receiver: Receiver,
) -> None:
    partner, _ = partners
    created = signed(
        bank,
        partner,
        "POST",
        "/v1/partner/webhooks",
        {"url": receiver.url, "event_types": ["payment.*"]},
    )
    assert created.status_code == 201, created.text
    subscription = created.json()
    secret_b64 = bank.remember("webhook secret", subscription["secret"])
    receiver.secret = base64.b64decode(secret_b64)
    subscription_id = subscription["id"]
    assert (subscription["url"], subscription["event_types"]) == (receiver.url, ["payment.*"])

    listed = signed(bank, partner, "GET", "/v1/partner/webhooks")
    assert listed.status_code == 200
    assert [(s["id"], s["secret"]) for s in listed.json()] == [(subscription_id, None)]

    # The test event, sent by the server's own dispatcher within seconds.
    test = signed(bank, partner, "POST", f"/v1/partner/webhooks/{subscription_id}/test")
    assert test.status_code == 202, test.text
    assert (test.json()["origin"], test.json()["status"]) == ("test", "pending")
    (first,) = receiver.wait_for(1, DELIVERY_WAIT_S)
    assert first.verified, first.reason
    assert first.event_type == "webhook.test"
    assert first.delivery_id == test.json()["id"]
    delivery = wait_for_delivery(bank, partner, subscription_id, test.json()["id"])
    assert delivery["status"] == "succeeded"
    assert [(a["attempt"], a["status_code"], a["succeeded"]) for a in delivery["attempts"]] == [
        (1, 200, True)
    ]

    # A partner's replay: the same event, a new delivery.
    replay = signed(
        bank, partner, "POST", f"/v1/partner/webhook-deliveries/{test.json()['id']}/replay"
    )
    assert replay.status_code == 202, replay.text
    assert replay.json()["replay_of"] == test.json()["id"]
    second = receiver.wait_for(2, DELIVERY_WAIT_S)[1]
    assert second.verified
    assert second.event_id == first.event_id and second.body == first.body
    assert second.headers[DELIVERY_HEADER] == replay.json()["id"]

    # An operator's replay from the console, and a dispatcher round by hand.
    out = run_cli(live_server.env, "webhooks", "replay", test.json()["id"])
    assert out.startswith("queued delivery "), out
    out = run_cli(live_server.env, "webhooks", "deliver-now")
    assert out.startswith("claimed "), out
    third = receiver.wait_for(3, DELIVERY_WAIT_S)[2]
    assert third.verified and third.event_id == first.event_id

    page = signed(
        bank, partner, "GET", f"/v1/partner/webhooks/{subscription_id}/deliveries?limit=2"
    )
    assert page.status_code == 200, page.text
    assert len(page.json()["deliveries"]) == 2
    assert page.json()["next_before"] == page.json()["deliveries"][-1]["id"]

    deleted = signed(bank, partner, "DELETE", f"/v1/partner/webhooks/{subscription_id}")
    assert deleted.status_code == 204, deleted.text
    assert signed(bank, partner, "GET", "/v1/partner/webhooks").json() == []

    log = live_server.log_text()
    for form in (secret_b64, receiver.secret.hex()):
        assert form not in log


def test_another_partners_records_answer_404(
    bank: Bank, partners: tuple[PartnerKey, PartnerKey], receiver: Receiver
) -> None:
    partner, other = partners
    created = signed(
        bank, partner, "POST", "/v1/partner/webhooks", {"url": receiver.url, "event_types": ["*"]}
    )
    assert created.status_code == 201, created.text
    bank.remember("webhook secret", created.json()["secret"])
    subscription_id = created.json()["id"]
    test = signed(bank, partner, "POST", f"/v1/partner/webhooks/{subscription_id}/test")
    assert test.status_code == 202
    delivery_id = test.json()["id"]

    for method, path in (
        ("GET", f"/v1/partner/webhooks/{subscription_id}/deliveries"),
        ("POST", f"/v1/partner/webhooks/{subscription_id}/test"),
        ("DELETE", f"/v1/partner/webhooks/{subscription_id}"),
        ("POST", f"/v1/partner/webhook-deliveries/{delivery_id}/replay"),
    ):
        response = signed(bank, other, method, path)
        problem = check_problem(response, 404, "not-found")
        assert receiver.url not in str(problem)
    assert signed(bank, other, "GET", "/v1/partner/webhooks").json() == []
    still = signed(bank, partner, "GET", "/v1/partner/webhooks").json()
    assert subscription_id in [s["id"] for s in still]
    assert (
        signed(bank, partner, "DELETE", f"/v1/partner/webhooks/{subscription_id}").status_code
        == 204
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"url": "http://merchant.example.com/hooks", "event_types": ["*"]}, "https://"),
        ({"url": "https://10.0.0.8/hooks", "event_types": ["*"]}, "not a public address"),
        ({"url": "https://merchant.example.com/hooks", "event_types": []}, "event_types"),
        ({"url": "https://merchant.example.com/hooks", "event_types": ["Pay"]}, "event type"),
        ({"url": "https://merchant.example.com/hooks"}, "event_types"),
    ],
)
def test_bad_subscriptions_are_refused(
    bank: Bank, partners: tuple[PartnerKey, PartnerKey], body: dict[str, Any], fragment: str
) -> None:
    partner, _ = partners
    before = signed(bank, partner, "GET", "/v1/partner/webhooks").json()
    response = signed(bank, partner, "POST", "/v1/partner/webhooks", body)
    problem = check_problem(response, 422)
    assert fragment in json.dumps(problem), problem
    assert signed(bank, partner, "GET", "/v1/partner/webhooks").json() == before


def test_unsigned_requests_are_refused(bank: Bank) -> None:
    response = bank.call("GET", "/v1/partner/webhooks")
    check_problem(response, 401, "signature-invalid")

"""Account changes made over the ledger API land in the audit trail, atomically."""

from __future__ import annotations

import uuid

import httpx
import pytest
from conftest import LiveServer, run_cli

pytestmark = pytest.mark.xdist_group("audit_http")


def _account(flags: list[str] | None = None) -> dict[str, object]:
    return {"id": str(uuid.uuid4()), "currency": "CNY", "code": 2, "flags": flags or []}


def test_account_creation_and_closing_are_audited(api: httpx.Client, live_server: LiveServer):
    accounts = [_account(), _account()]
    response = api.post("/v1/ledger/accounts", json={"accounts": accounts})
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-ID"]
    closed = api.post(f"/v1/ledger/accounts/{accounts[0]['id']}/close")
    assert closed.status_code == 200, closed.text

    listing = run_cli(live_server.env, "audit", "list", "--action", "ledger.")
    lines = listing.splitlines()
    close_line = next(line for line in lines if "ledger.account.close" in line)
    assert accounts[0]["id"] in close_line
    assert " service " in close_line
    create_line = next(line for line in lines if "ledger.accounts.create" in line)
    assert '"created":2' in create_line
    assert '"requested":2' in create_line
    assert request_id  # the event carries it; listing shows the essentials

    run_cli(live_server.env, "audit", "checkpoint")
    assert "audit trail verified" in run_cli(live_server.env, "audit", "verify")


def test_a_refused_closing_leaves_no_audit_event(api: httpx.Client, live_server: LiveServer):
    bank, customer = _account(), _account(["debits_must_not_exceed_credits"])
    assert api.post("/v1/ledger/accounts", json={"accounts": [bank, customer]}).status_code == 200
    funded = api.post(
        "/v1/ledger/transfers",
        json={
            "transfers": [
                {
                    "id": str(uuid.uuid4()),
                    "debit_account_id": bank["id"],
                    "credit_account_id": customer["id"],
                    "amount": 100,
                    "currency": "CNY",
                    "code": 1,
                }
            ]
        },
    )
    assert funded.json()["results"][0]["result"] == "ok"
    refused = api.post(f"/v1/ledger/accounts/{customer['id']}/close")
    assert refused.status_code == 409
    listing = run_cli(live_server.env, "audit", "list", "--action", "ledger.account.close")
    assert str(customer["id"]) not in listing

"""Identity over real HTTP against a real ``zhifu serve``: registration and
sign-in, TOTP, bound phones and QR confirmations, step-up, partner request
signing, staff and maker-checker, the audit trail as auditors query it,
sign-in throttling, security headers, and personal data kept out of the
server's logs and database files.

The last test reads the logs and the database files the earlier ones left
behind; it also makes data of its own, so it means something when run alone.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import LiveServer
from identity_actors import (
    CONFIRMATION_HEADER,
    NONCE_HEADER,
    Bank,
    Customer,
    PartnerKey,
    Phone,
    Staff,
    mobile_spellings,
    parse_confirmation_uri,
    unique_mobile_digits,
)

from zhifu.security.request_signing import SIGNATURE_WINDOW_S

pytestmark = pytest.mark.xdist_group("identity_http")

Problem = Callable[..., dict[str, Any]]
AUDIT_PAGE_MAX = 500
SKEW_PAST_WINDOW_S = SIGNATURE_WINDOW_S + 60
# Mainland numbers are shown as "+86 " + first three + "****" + last four digits.
MASKED_MOBILE_HIDDEN = "****"


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def admins(bank: Bank) -> tuple[tuple[Staff, str], tuple[Staff, str]]:
    """Two admins made at the console (the bootstrap), each with a session."""
    first, second = bank.create_admin("first-admin"), bank.create_admin("second-admin")
    return (first, bank.staff_sign_in(first)), (second, bank.staff_sign_in(second))


@pytest.fixture(scope="module")
def admin_token(admins: tuple[tuple[Staff, str], tuple[Staff, str]]) -> str:
    return admins[0][1]


@pytest.fixture(scope="module")
def auditor_token(bank: Bank, admins: tuple[tuple[Staff, str], tuple[Staff, str]]) -> str:
    (_, maker_token), (_, checker_token) = admins
    auditor = bank.create_staff(maker_token, "auditor")
    bank.grant_role(maker_token, checker_token, auditor, "auditor")
    return bank.staff_sign_in(auditor)


def signed_in_customer(bank: Bank) -> tuple[Customer, str]:
    customer = bank.register()
    return customer, bank.sign_in(customer)


def audit_events(bank: Bank, auditor_token: str, **filters: Any) -> list[dict[str, Any]]:
    params = {"limit": AUDIT_PAGE_MAX, **filters}
    response = bank.call("GET", "/v1/audit/events", auditor_token, params=params)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def event_of_request(
    bank: Bank, auditor_token: str, request_id: str, **filters: Any
) -> dict[str, Any]:
    found = [
        e for e in audit_events(bank, auditor_token, **filters) if e["request_id"] == request_id
    ]
    assert len(found) == 1, f"expected one event of request {request_id}, got {found}"
    return found[0]


# --- registration and sign-in -------------------------------------------------------------


def test_registration_and_sign_in_show_only_masked_personal_data(
    bank: Bank, assert_problem: Problem
) -> None:
    customer = bank.new_customer()
    registered = bank.register(customer)
    token = bank.sign_in(customer)
    assert token.startswith("zs_")
    assert customer.browser_token is not None
    assert customer.browser_token.startswith("zb_")

    me = bank.call("GET", "/v1/me", token)
    assert me.status_code == 200, me.text
    profile = me.json()
    digits, resident_id = customer.mobile_digits, customer.resident_id
    assert profile["id"] == registered.id
    assert profile["name"] == customer.name
    assert profile["resident_id"] == resident_id[:6] + "*" * 10 + resident_id[-2:]
    assert profile["mobile"] == f"+86 {digits[:3]}{MASKED_MOBILE_HIDDEN}{digits[-4:]}"
    assert profile["email"] == customer.email[0] + "***@example.com"
    assert (profile["totp_enabled"], profile["passkeys"], profile["devices"]) == (False, 0, 0)
    for secret in (resident_id, digits, customer.email, customer.email.split("@")[0]):
        assert secret not in me.text

    sessions = bank.call("GET", "/v1/me/sessions", token)
    assert sessions.status_code == 200, sessions.text
    assert [s["current"] for s in sessions.json()] == [True]
    assert sessions.json()[0]["auth_methods"] == ["password"]

    again = bank.call(
        "POST",
        "/v1/customers",
        json={
            "name": customer.name,
            "resident_id": resident_id,
            "mobile": digits,
            "email": f"other.{secrets.token_hex(4)}@example.com",
            "password": customer.password,
        },
    )
    assert_problem(again, 409, "already-exists")

    assert bank.call("POST", "/v1/auth/logout", token).status_code == 204
    assert_problem(bank.call("GET", "/v1/me", token), 401, "unauthorised")


def test_registration_refuses_an_invalid_resident_id_without_echoing_it(
    bank: Bank, assert_problem: Problem
) -> None:
    customer = bank.new_customer()
    wrong_check = customer.resident_id[:-1] + ("0" if customer.resident_id[-1] != "0" else "1")
    response = bank.call(
        "POST",
        "/v1/customers",
        json={
            "name": customer.name,
            "resident_id": wrong_check,
            "mobile": customer.mobile_digits,
            "email": customer.email,
            "password": customer.password,
        },
    )
    problem = assert_problem(response, 422, "invalid-input")
    assert "check character" in problem["detail"]
    assert wrong_check not in response.text
    assert customer.password not in response.text


# --- TOTP ------------------------------------------------------------------------------------


def test_totp_enrolment_makes_sign_in_ask_for_a_second_factor(
    bank: Bank, assert_problem: Problem
) -> None:
    customer, token = signed_in_customer(bank)
    codes = bank.enrol_totp(customer, token)
    assert len(codes) == len(set(codes)) == 10
    assert bank.call("GET", "/v1/me", token).json()["totp_enabled"] is True
    assert customer.totp is not None

    first = bank.login(customer)
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["status"] == "mfa_required"
    assert result["methods"] == ["totp", "recovery_code"]
    assert result["session_token"] is None
    assert result["ticket"].startswith("zt_")
    ticket = result["ticket"]

    wrong = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={"ticket": ticket, "method": "totp", "code": "000000"},
    )
    assert_problem(wrong, 401, "code-invalid")
    code = customer.totp.code()
    right = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={"ticket": ticket, "method": "totp", "code": code},
    )
    assert right.status_code == 200, right.text
    assert right.json()["status"] == "authenticated"
    session = bank.remember("session token", right.json()["session_token"])
    methods = [s["auth_methods"] for s in bank.call("GET", "/v1/me/sessions", session).json()]
    assert ["password", "totp"] in methods

    # A used ticket is spent, and a code works once.
    reused_ticket = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={"ticket": ticket, "method": "totp", "code": customer.totp.code()},
    )
    assert_problem(reused_ticket, 409, "challenge-invalid")
    fresh_ticket = bank.login(customer).json()["ticket"]
    replayed_code = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={"ticket": fresh_ticket, "method": "totp", "code": code},
    )
    assert_problem(replayed_code, 401, "code-invalid")

    # A recovery code works once too.
    by_recovery = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={"ticket": fresh_ticket, "method": "recovery_code", "code": codes[0]},
    )
    assert by_recovery.status_code == 200, by_recovery.text
    bank.remember("session token", by_recovery.json()["session_token"])
    replayed_recovery = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={
            "ticket": bank.login(customer).json()["ticket"],
            "method": "recovery_code",
            "code": codes[0],
        },
    )
    assert_problem(replayed_recovery, 401, "code-invalid")


# --- bound phones and QR confirmations -------------------------------------------------


def test_binding_a_phone_needs_a_step_up(bank: Bank, assert_problem: Problem) -> None:
    customer, token = signed_in_customer(bank)
    phone = Phone()
    body = {"name": "my phone", "public_key": phone.public_key}

    refused = bank.call("POST", "/v1/me/devices", token, json=body)
    problem = assert_problem(refused, 403, "step-up-required")
    assert problem["methods"] == ["password"]
    assert "confirmation" not in problem
    wrong = bank.call(
        "POST", "/v1/auth/step-up", token, json={"method": "password", "password": "not it at all"}
    )
    assert_problem(wrong, 401, "authentication-failed")
    assert_problem(bank.call("POST", "/v1/me/devices", token, json=body), 403, "step-up-required")

    bank.step_up(customer, token)
    bound = bank.call("POST", "/v1/me/devices", token, json=body)
    assert bound.status_code == 201, bound.text
    assert bound.json()["public_key"] == phone.public_key
    devices = bank.call("GET", "/v1/me/devices", token).json()
    assert [d["id"] for d in devices] == [bound.json()["id"]]


def test_a_new_browser_signs_in_only_once_the_bound_phone_approves(
    bank: Bank, assert_problem: Problem
) -> None:
    customer, token = signed_in_customer(bank)
    phone = bank.bind_phone(customer, token)

    known = bank.login(customer)
    assert known.json()["status"] == "authenticated", known.text
    bank.remember("session token", known.json()["session_token"])

    new_browser = bank.login(customer, known_browser=False)
    result = new_browser.json()
    assert result["status"] == "mfa_required", result
    assert result["methods"] == ["device"]
    confirmation = result["confirmation"]
    assert confirmation["action"] == "identity.login"
    assert confirmation["qr_svg"].startswith("<svg")
    confirmation_id, nonce = parse_confirmation_uri(confirmation["uri"])
    assert confirmation_id == confirmation["id"]
    ticket = bank.remember("login ticket", result["ticket"])
    second_factor = {"ticket": ticket, "method": "device"}

    path = f"/v1/confirmations/{confirmation_id}"
    assert_problem(bank.call("GET", path, headers={NONCE_HEADER: "x" * 32}), 404, "not-found")
    view = bank.call("GET", path, headers={NONCE_HEADER: nonce})
    assert view.status_code == 200, view.text
    assert (view.json()["status"], view.json()["action"]) == ("pending", "identity.login")

    waiting = bank.call("POST", "/v1/auth/login/second-factor", json=second_factor)
    assert_problem(waiting, 409, "invalid-state")

    # Signed by a key that is not bound to this customer: refused, still pending.
    stranger = Phone(device_id=phone.device_id)
    forged = bank.call(
        "POST",
        f"{path}/approve",
        json=stranger.decision(confirmation["uri"], view.json()),
    )
    assert_problem(forged, 409, "challenge-invalid")
    assert bank.call("GET", path, headers={NONCE_HEADER: nonce}).json()["status"] == "pending"

    approval = phone.decision(confirmation["uri"], view.json())
    approved = bank.call("POST", f"{path}/approve", json=approval)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert_problem(bank.call("POST", f"{path}/approve", json=approval), 409, "challenge-invalid")

    signed_in = bank.call("POST", "/v1/auth/login/second-factor", json=second_factor)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["status"] == "authenticated"
    assert signed_in.json()["browser_token"] is not None
    new_token = bank.remember("session token", signed_in.json()["session_token"])
    assert bank.call("GET", "/v1/me", new_token).status_code == 200
    again = bank.call("POST", "/v1/auth/login/second-factor", json=second_factor)
    assert_problem(again, 409, "challenge-invalid")


def test_a_sign_in_the_phone_rejects_does_not_happen(bank: Bank, assert_problem: Problem) -> None:
    customer, token = signed_in_customer(bank)
    phone = bank.bind_phone(customer, token)
    result = bank.login(customer, known_browser=False).json()
    bank.approve_on_phone(phone, result["confirmation"], approve=False)
    refused = bank.call(
        "POST",
        "/v1/auth/login/second-factor",
        json={"ticket": bank.remember("login ticket", result["ticket"]), "method": "device"},
    )
    assert_problem(refused, 409, "challenge-invalid")


def test_changing_the_mobile_needs_a_phone_confirmation_of_that_number(
    bank: Bank, assert_problem: Problem
) -> None:
    customer, token = signed_in_customer(bank)
    phone = bank.bind_phone(customer, token)
    new_digits, other_digits = unique_mobile_digits(), unique_mobile_digits()
    for digits in (new_digits, other_digits):
        for spelling in mobile_spellings(digits):
            bank.remember("mobile", spelling)

    asked = bank.call("PUT", "/v1/me/mobile", token, json={"mobile": new_digits})
    problem = assert_problem(asked, 403, "step-up-required")
    assert problem["methods"] == ["device"]
    confirmation = problem["confirmation"]
    assert confirmation["action"] == "identity.customer.mobile.change"
    view = bank.confirmation_view(confirmation["uri"]).json()
    assert f"{new_digits[:3]}{MASKED_MOBILE_HIDDEN}{new_digits[-4:]}" in view["summary"]
    assert new_digits not in view["summary"]

    # With a phone bound, a password step-up does not do for this change.
    bank.step_up(customer, token)
    again = bank.call("PUT", "/v1/me/mobile", token, json={"mobile": new_digits})
    assert_problem(again, 403, "step-up-required")

    bank.approve_on_phone(phone, confirmation)
    confirmed = {CONFIRMATION_HEADER: confirmation["id"]}
    other_number = bank.call(
        "PUT", "/v1/me/mobile", token, json={"mobile": other_digits}, headers=confirmed
    )
    assert_problem(other_number, 409, "challenge-invalid")
    changed = bank.call(
        "PUT", "/v1/me/mobile", token, json={"mobile": new_digits}, headers=confirmed
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["mobile"] == f"+86 {new_digits[:3]}****{new_digits[-4:]}"
    replayed = bank.call(
        "PUT", "/v1/me/mobile", token, json={"mobile": new_digits}, headers=confirmed
    )
    assert_problem(replayed, 409, "challenge-invalid")

    old = bank.login(customer, identifier=customer.mobile_digits)
    assert_problem(old, 401, "authentication-failed")
    by_new_number = bank.login(customer, identifier=new_digits)
    assert by_new_number.status_code == 200, by_new_number.text
    bank.remember("session token", by_new_number.json()["session_token"])


# --- partners ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
def test_partner_requests_are_accepted_only_signed_fresh_and_once(
    bank: Bank, admin_token: str, assert_problem: Problem, algorithm: str
) -> None:
    key: PartnerKey = bank.partner_key(admin_token, algorithm)
    path = "/v1/partner/ping"

    headers = key.sign("GET", path)
    accepted = bank.call("GET", path, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["key_id"] == key.key_id
    assert accepted.json()["scopes"] == ["merchant", "payments"]
    replayed = assert_problem(bank.call("GET", path, headers=headers), 401, "signature-invalid")
    assert "already used" in replayed["detail"]

    body = b'{"amount_minor": 100, "currency": "CNY"}'
    post_headers = {**key.sign("POST", path, body), "Content-Type": "application/json"}
    tampered = bank.call("POST", path, headers=post_headers, content=body.replace(b"100", b"900"))
    assert "does not verify" in assert_problem(tampered, 401, "signature-invalid")["detail"]
    assert bank.call("POST", path, headers=post_headers, content=body).status_code == 200

    as_get = bank.call("GET", path, headers=key.sign("POST", path))
    assert_problem(as_get, 401, "signature-invalid")
    # Well past the window, so that the server's clock ticking on changes nothing.
    stale = bank.call("GET", path, headers=key.sign("GET", path, skew_s=-SKEW_PAST_WINDOW_S))
    assert "behind" in assert_problem(stale, 401, "signature-invalid")["detail"]
    future = bank.call("GET", path, headers=key.sign("GET", path, skew_s=SKEW_PAST_WINDOW_S))
    assert "ahead of" in assert_problem(future, 401, "signature-invalid")["detail"]
    assert_problem(bank.call("GET", path), 401, "signature-invalid")
    # Two copies of a signing header: refused, never one of them chosen.
    signed = key.sign("GET", path)
    doubled = [("Zhifu-Signature", signed["Zhifu-Signature"]), *signed.items()]
    twice = bank.http.get(path, headers=doubled)
    assert "more than once" in assert_problem(twice, 401, "signature-invalid")["detail"]

    revoked = bank.call("DELETE", f"/v1/admin/partner-keys/{key.key_id}", admin_token)
    assert revoked.status_code == 204, revoked.text
    after = bank.call("GET", path, headers=key.sign("GET", path))
    assert "no active partner key" in assert_problem(after, 401, "signature-invalid")["detail"]


# --- staff, maker-checker, audit ----------------------------------------------------------


def test_the_auditor_role_is_granted_by_a_second_admin(
    bank: Bank,
    admins: tuple[tuple[Staff, str], tuple[Staff, str]],
    auditor_token: str,
    assert_problem: Problem,
) -> None:
    (maker, maker_token), (checker, checker_token) = admins
    staff = bank.create_staff(maker_token, "new-auditor")
    staff_token = bank.staff_sign_in(staff)
    assert_problem(bank.call("GET", "/v1/audit/events", staff_token), 403, "forbidden")

    proposal = bank.propose_role(maker_token, staff, "auditor")
    assert (proposal["status"], proposal["maker"]) == ("pending", maker.actor)
    approve_path = f"/v1/admin/approvals/{proposal['id']}/approve"
    assert_problem(bank.call("POST", approve_path, maker_token), 403, "four-eyes")
    assert_problem(bank.call("POST", approve_path, staff_token), 403, "forbidden")
    assert_problem(bank.call("GET", "/v1/audit/events", staff_token), 403, "forbidden")

    approved = bank.call("POST", approve_path, checker_token, json={"reason": "quarterly audit"})
    assert approved.status_code == 200, approved.text
    decided = approved.json()
    assert decided["status"] == "approved"
    assert (decided["maker"], decided["maker_name"]) == (maker.actor, maker.username)
    assert (decided["checker"], decided["checker_name"]) == (checker.actor, checker.username)
    assert decided["result"] == {"granted": "auditor", "username": staff.username}
    assert bank.call("GET", f"/v1/admin/staff/{staff.id}", maker_token).json()["roles"] == [
        "auditor"
    ]
    assert_problem(bank.call("POST", approve_path, checker_token), 409, "invalid-state")

    # The same session now reads the trail: roles are read on every request.
    assert bank.call("GET", "/v1/audit/events", staff_token).status_code == 200
    events = audit_events(bank, auditor_token, target=f"approval:{proposal['id']}")
    by_action = {(e["action"], e["outcome"]): e for e in events}
    assert by_action[("identity.approval.propose", "ok")]["actor"] == maker.actor
    assert by_action[("identity.approval.decide", "denied")]["actor"] == maker.actor
    approval_event = by_action[("identity.approval.approve", "ok")]
    assert approval_event["actor"] == checker.actor
    assert approval_event["details"]["maker"] == maker.actor
    assert approval_event["details"]["maker_name"] == maker.username
    assert approval_event["details"]["checker_name"] == checker.username
    # The role-less staff member's try is on record too, under the route.
    tries = audit_events(bank, auditor_token, actor=staff.actor, action="http.request")
    assert {
        (e["target"], e["outcome"], e["details"]["status"])
        for e in tries
        if e["details"]["method"] == "POST"
    } == {("/v1/admin/approvals/{approval_id}/approve", "denied", 403)}


def test_auditors_query_the_trail_by_actor_target_action_and_time(
    bank: Bank,
    admins: tuple[tuple[Staff, str], tuple[Staff, str]],
    auditor_token: str,
    assert_problem: Problem,
) -> None:
    (admin, admin_token), _ = admins
    before = datetime.now(UTC)
    staff = bank.create_staff(admin_token, "queried")
    after = datetime.now(UTC) + timedelta(seconds=1)
    target = staff.actor

    by_actor = audit_events(bank, auditor_token, actor=admin.actor, action="identity.staff.")
    assert target in [e["target"] for e in by_actor]
    assert {e["actor"] for e in by_actor} == {admin.actor}
    by_target = audit_events(bank, auditor_token, target=target)
    assert [e["action"] for e in by_target] == ["identity.staff.create"]
    created = by_target[0]
    assert (created["outcome"], created["role"]) == ("ok", "admin")
    assert created["details"]["username"] == staff.username
    by_action = audit_events(bank, auditor_token, action="identity.staff.create")
    assert {e["action"] for e in by_action} == {"identity.staff.create"}
    assert target in [e["target"] for e in by_action]

    def window(since: datetime, until: datetime) -> list[str]:
        events = audit_events(
            bank, auditor_token, target=target, since=since.isoformat(), until=until.isoformat()
        )
        return [e["target"] for e in events]

    assert window(before, after) == [target]
    assert window(after, after + timedelta(hours=1)) == []
    assert window(before - timedelta(hours=1), before) == []

    naive = bank.call(
        "GET", "/v1/audit/events", auditor_token, params={"since": "2026-01-01T00:00:00"}
    )
    assert "time zone" in assert_problem(naive, 422, "invalid-input")["detail"]
    first_page = bank.call("GET", "/v1/audit/events", auditor_token, params={"limit": 1}).json()
    assert len(first_page["events"]) == 1
    older = bank.call(
        "GET",
        "/v1/audit/events",
        auditor_token,
        params={"limit": 1, "before_seq": first_page["next_before_seq"]},
    ).json()
    assert older["events"][0]["seq"] == first_page["events"][0]["seq"] - 1


def test_refused_and_failed_changes_leave_audit_events(
    bank: Bank, auditor_token: str, assert_problem: Problem
) -> None:
    def request_id() -> dict[str, str]:
        return {"X-Request-ID": uuid.uuid4().hex}

    unauthenticated = request_id()
    response = bank.call(
        "POST",
        "/v1/admin/staff",
        json={"username": "nobody", "name": "No Body", "password": "x" * 20},
        headers=unauthenticated,
    )
    assert_problem(response, 401, "unauthorised")
    event = event_of_request(
        bank, auditor_token, unauthenticated["X-Request-ID"], action="http.request"
    )
    assert (event["actor"], event["target"], event["outcome"]) == (
        "anonymous",
        "/v1/admin/staff",
        "denied",
    )
    assert event["details"] == {"method": "POST", "status": 401}

    malformed = request_id()
    response = bank.call("POST", "/v1/customers", json={"name": "Half A Form"}, headers=malformed)
    assert_problem(response, 422, "invalid-request")
    event = event_of_request(bank, auditor_token, malformed["X-Request-ID"], action="http.request")
    assert (event["target"], event["outcome"]) == ("/v1/customers", "failed")
    assert event["details"] == {"method": "POST", "status": 422}

    customer = bank.register()
    wrong_password = request_id()
    response = bank.call(
        "POST",
        "/v1/auth/login",
        json={"identifier": customer.email, "password": "definitely not the password"},
        headers=wrong_password,
    )
    assert_problem(response, 401, "authentication-failed")
    event = event_of_request(bank, auditor_token, wrong_password["X-Request-ID"])
    assert (event["action"], event["outcome"]) == ("identity.customer.login", "denied")
    assert event["target"] == customer.actor
    assert event["details"] == {"reason": "invalid_credentials"}


def test_a_customer_writing_to_staff_routes_is_refused_and_recorded(
    bank: Bank, auditor_token: str, assert_problem: Problem
) -> None:
    customer, token = signed_in_customer(bank)
    request_id = uuid.uuid4().hex
    response = bank.call(
        "POST",
        "/v1/admin/partner-keys",
        token,
        json={"partner_name": "Sneaky", "algorithm": "hmac-sha256", "scopes": ["payments"]},
        headers={"X-Request-ID": request_id},
    )
    assert_problem(response, 403, "forbidden")
    event = event_of_request(bank, auditor_token, request_id, action="http.request")
    assert (event["actor"], event["role"], event["outcome"]) == (
        customer.actor,
        "customer",
        "denied",
    )
    assert event["details"] == {"method": "POST", "status": 403}


# --- throttling --------------------------------------------------------------------------


def test_repeated_wrong_passwords_get_401_then_429_with_retry_after(
    bank: Bank, assert_problem: Problem
) -> None:
    customer = bank.register()
    wrong = {"identifier": customer.email, "password": "wrong password, try again"}
    statuses = []
    response = None
    for _ in range(12):
        response = bank.call("POST", "/v1/auth/login", json=wrong)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert response is not None
    assert statuses[:5] == [401] * 5, statuses
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {401}, statuses
    problem = assert_problem(response, 429, "too-many-attempts")
    retry_after_s = int(response.headers["Retry-After"])
    assert retry_after_s >= 1
    assert f"{retry_after_s} seconds" in problem["detail"]

    # Past the block, one more failure blocks for twice as long: long enough to
    # show that while blocked even the right password is refused.
    time.sleep(retry_after_s)
    assert_problem(bank.call("POST", "/v1/auth/login", json=wrong), 401, "authentication-failed")
    blocked = bank.call("POST", "/v1/auth/login", json=wrong)
    assert_problem(blocked, 429, "too-many-attempts")
    assert int(blocked.headers["Retry-After"]) > retry_after_s
    right = bank.login(customer, known_browser=False)
    assert_problem(right, 429, "too-many-attempts")
    # Other accounts are not blocked.
    other = bank.register()
    assert bank.login(other).status_code == 200


# --- headers -----------------------------------------------------------------------------


BASELINE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}


def test_responses_carry_the_security_headers(bank: Bank) -> None:
    customer, token = signed_in_customer(bank)
    responses = [
        bank.call("GET", "/v1/me", token),
        bank.call("GET", "/v1/me"),  # a problem
        bank.login(customer),
        bank.call("GET", "/healthz"),
    ]
    for response in responses:
        for name, value in BASELINE_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)
        assert "camera=()" in response.headers["permissions-policy"]
        assert "strict-transport-security" not in response.headers  # plain http
        assert response.headers["x-request-id"]
    for response in responses[:3]:
        assert response.headers["cache-control"] == "no-store"
    bank.remember("session token", responses[2].json()["session_token"])


# --- personal data ----------------------------------------------------------------------


def _files_under(home: Path) -> list[Path]:
    return sorted(path for path in home.rglob("*") if path.is_file())


def test_no_personal_data_or_secret_reaches_the_logs_or_the_database_files(
    bank: Bank, live_server: LiveServer, admin_token: str
) -> None:
    # Data of this test's own, so that it checks something even when run alone.
    customer, token = signed_in_customer(bank)
    bank.enrol_totp(customer, token)
    bank.bind_phone(customer, token)
    bank.sign_in(customer, known_browser=False)
    bank.call(
        "POST",
        "/v1/auth/login",
        json={"identifier": customer.mobile_digits, "password": "a wrong password here"},
    )
    bank.partner_key(admin_token, "hmac-sha256")
    assert bank.call("POST", "/v1/auth/logout", token).status_code == 204

    # Staff usernames are stored in clear: finding this one shows that the scan
    # sees the newest writes (in the WAL file, for SQLite).
    staff = bank.create_staff(admin_token, "scan-check")

    log_text = live_server.log_text()
    assert '"event": "http_request"' in log_text  # the access log is in this file
    files = _files_under(live_server.home)
    database_files = [p for p in files if p.name.startswith("zhifu.db")]
    contents = {path: path.read_bytes() for path in files}
    assert any(staff.username.encode() in contents[p] for p in database_files)

    kinds = {what for what, _ in bank.remembered}
    assert {"name", "resident id", "mobile", "e-mail", "password", "session token"} <= kinds
    assert {"TOTP secret", "recovery code", "partner secret", "staff password"} <= kinds
    leaks = [
        (path.name, what, value)
        for path, data in contents.items()
        for what, value in bank.remembered
        if value.encode() in data
    ]
    assert not leaks, f"personal data or secrets found in clear: {leaks[:10]}"
    for what, value in bank.remembered:
        assert value not in log_text, f"{what} in the server log"

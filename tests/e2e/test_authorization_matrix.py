"""Who may call what: every operation the server documents, called over real
HTTP as its right caller and as every kind of wrong one.

:data:`MATRIX` names the access rule of each operation. The first test checks
that it covers exactly the operations of the server's ``/openapi.json``
(besides the public probes in :data:`UNPROTECTED`), so a new endpoint without
an entry here fails the suite until someone decides who may call it.

Access rules:

- ``public``: anyone (registration, the sign-in steps, passkey sign-in).
- ``confirmation``: whoever holds the QR code's nonce (the bound phone, no
  session); approving or rejecting also needs that phone's signature.
- ``subject``: any signed-in customer or staff member, on their own records.
- ``customer``: a signed-in customer, on their own records; staff get 403.
- ``staff``: staff holding the route's one permission; other staff and
  customers get 403.
- ``service``: the bank's own services with the service token (the ledger);
  any session token gets 401.
- ``partner``: a signed partner request; a session token gets 401.

Each request is built valid for its right caller (body, path ids, whatever a
step-up needs) and then sent with the wrong credentials, so that only
authorisation can refuse it. A route whose path names a record of the caller
(``owned``) answers another customer (or a staff member) with 404, and the
record stays.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import LiveServer
from identity_actors import (
    CONFIRMATION_HEADER,
    NONCE_HEADER,
    Bank,
    Customer,
    PartnerKey,
    Phone,
    SoftPasskey,
    Staff,
    new_password,
    parse_confirmation_uri,
    unique_mobile_digits,
)

from zhifu.identity.access import Permission, Role, permissions_of
from zhifu.identity.totp import totp_code
from zhifu.security.request_signing import SIGNED_HEADERS

pytestmark = pytest.mark.xdist_group("authorization_matrix")

Person = Customer | Staff
Problem = Callable[..., dict[str, Any]]

# Operations anyone may call, for probes and scrapers; documented in
# docs/architecture.md. (/openapi.json and /docs are public too, and not
# operations of the document.)
UNPROTECTED: Final = {
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/metrics"): "Prometheus scrape",
}
OPENAPI_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})


class Access(StrEnum):
    PUBLIC = "public"
    CONFIRMATION = "confirmation"
    SUBJECT = "subject"
    CUSTOMER = "customer"
    STAFF = "staff"
    SERVICE = "service"
    PARTNER = "partner"


@dataclass
class Call:
    """One request, valid for the caller it was built for."""

    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    content: bytes | None = None
    # Owned records: whether the owner's record is still there.
    still_there: Callable[[], bool] | None = None
    # QR confirmations: the code's text and what the phone was shown.
    uri: str = ""
    view: dict[str, Any] = field(default_factory=dict)


Build = Callable[["World", Any], Call]


@dataclass(frozen=True)
class Route:
    access: Access
    build: Build
    ok: tuple[int, ...]  # what the right caller gets
    permission: Permission | None = None
    owned: bool = False  # the path names a record of the caller's
    step_up: bool = False  # the right caller is first asked to step up


# The staff members every staff route is tried with, and their roles.
STAFF_ROLES: Final[dict[str, frozenset[Role]]] = {
    "admin": frozenset({Role.ADMIN}),
    "auditor": frozenset({Role.AUDITOR}),
    "teller": frozenset({Role.TELLER}),
    "clerk": frozenset(),  # created through the API, never granted a role
}


# --- the world the calls are made in ----------------------------------------------------


class World:
    """People, keys and ledger accounts shared by the module's tests.

    ``alice`` owns the records others try to reach and ``bob`` is the other
    customer. Right callers of customer and subject routes are new people
    (:meth:`scratch_customer`, :meth:`scratch_staff`), since those calls change
    what they act on (sessions, password, factors); so is the customer each
    operation's refused requests are built for (:meth:`intended_customer`).
    """

    def __init__(self, bank: Bank, service_token: str) -> None:
        self.bank = bank
        self.service_token = service_token
        self.tokens: dict[str, str] = {}
        self.spare_sessions: dict[str, str] = {}
        staff = {name: bank.create_admin(name) for name in ("admin", "admin2")}
        for member in staff.values():
            self.tokens[member.actor] = bank.staff_sign_in(member)
        self.admin, self.admin2 = staff["admin"], staff["admin2"]
        admin_token, checker_token = self.token(self.admin), self.token(self.admin2)
        self.staff: dict[str, Staff] = {"admin": self.admin}
        for name, roles in STAFF_ROLES.items():
            if name == "admin":
                continue
            member = bank.create_staff(admin_token, name)
            for role in roles:
                bank.grant_role(admin_token, checker_token, member, role.value)
            self.tokens[member.actor] = bank.staff_sign_in(member)
            self.staff[name] = member
        self.trainee = bank.create_staff(admin_token, "trainee")  # roles are proposed for them

        self.alice, self.bob = self.scratch_customer(), self.scratch_customer()
        self.intended: dict[tuple[str, str], Customer] = {}
        for customer in (self.alice, self.bob):
            bank.bind_phone(customer, self.token(customer))
        self.revoked_customer_token = self._revoked(self.alice)
        self.revoked_staff_token = self._revoked(self.admin)
        self.partner: PartnerKey = bank.partner_key(admin_token, "ed25519")
        self.accounts = [self.new_account(), self.new_account()]
        self.transfer_id = self.new_transfer()
        self._teller_account: str | None = None

    def token(self, who: Person) -> str:
        return self.tokens[who.actor]

    def _revoked(self, who: Person) -> str:
        token = self.bank.sign_in_anyone(who)
        assert self.bank.call("POST", "/v1/auth/logout", token).status_code == 204
        return token

    def scratch_customer(self) -> Customer:
        customer = self.bank.register()
        self.tokens[customer.actor] = self.bank.sign_in(customer)
        return customer

    def intended_customer(self, operation: tuple[str, str]) -> Customer:
        """The customer the refused requests of ``operation`` are built for."""
        if operation not in self.intended:
            self.intended[operation] = self.scratch_customer()
        return self.intended[operation]

    def scratch_staff(self) -> Staff:
        member = self.bank.create_staff(self.token(self.admin), "scratch")
        self.tokens[member.actor] = self.bank.staff_sign_in(member)
        return member

    def holder(self, permission: Permission) -> Staff:
        """A staff member holding ``permission``."""
        for name, roles in STAFF_ROLES.items():
            if permission in permissions_of(roles):
                return self.staff[name]
        raise AssertionError(f"no staff member of the world holds {permission}")

    def checker_for(self, maker: Staff) -> Staff:
        return self.admin2 if maker.actor == self.admin.actor else self.admin

    # --- records of a person --------------------------------------------------------------

    def spare_session(self, who: Person) -> str:
        """The id of a second session of ``who``."""
        if who.actor not in self.spare_sessions:
            token = self.bank.sign_in_anyone(who)
            sessions = self.bank.call("GET", "/v1/me/sessions", token).json()
            self.spare_sessions[who.actor] = next(s["id"] for s in sessions if s["current"])
        return self.spare_sessions[who.actor]

    def phone(self, who: Customer) -> Phone:
        if who.phone is None:
            self.bank.bind_phone(who, self.token(who))
        assert who.phone is not None
        return who.phone

    def passkey(self, who: Person) -> SoftPasskey:
        if who.passkey is None:
            self.bank.register_passkey(who, self.token(who))
        assert who.passkey is not None
        return who.passkey

    def ensure_totp(self, who: Person) -> None:
        if who.totp is None:
            self.bank.enrol_totp(who, self.token(who))

    def listed(self, who: Person, path: str, record_id: str | None) -> Callable[[], bool]:
        def check() -> bool:
            response = self.bank.call("GET", path, self.token(who))
            assert response.status_code == 200, response.text
            return record_id in [record["id"] for record in response.json()]

        return check

    def login_confirmation(self) -> tuple[dict[str, Any], str]:
        """A new QR confirmation of Alice's (a sign-in from a new browser) and its ticket."""
        response = self.bank.login(self.alice, known_browser=False)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["status"] == "mfa_required", result
        return result["confirmation"], self.bank.remember("login ticket", result["ticket"])

    # --- bank accounts and cards -----------------------------------------------------------

    def bank_account(self, who: Customer, *, frozen: bool = False) -> dict[str, Any]:
        """A new CNY account of ``who``'s, opened (and frozen) through the API."""
        token = self.token(who)
        body = {"product": "current", "account_class": "I", "currency": "CNY"}
        opened = self.bank.call("POST", "/v1/accounts", token, json=body)
        assert opened.status_code == 201, opened.text
        account: dict[str, Any] = opened.json()
        if frozen:
            path = f"/v1/accounts/{account['id']}/freeze"
            response = self.bank.call("POST", path, token)
            assert response.status_code == 200, response.text
            account = response.json()
        return account

    def card(self, who: Customer, *, status: str = "active") -> dict[str, Any]:
        """A new card of ``who``'s, on a new account, brought to ``status``."""
        token = self.token(who)
        account = self.bank_account(who)
        issued = self.bank.call("POST", f"/v1/accounts/{account['id']}/cards", token)
        assert issued.status_code == 201, issued.text
        card: dict[str, Any] = issued.json()
        action = {"frozen": "freeze", "lost": "report-lost"}.get(status)
        if action is not None:
            response = self.bank.call("POST", f"/v1/cards/{card['id']}/{action}", token)
            assert response.status_code == 200, response.text
            card = response.json()
        return card

    def account_unchanged(self, who: Customer, account: dict[str, Any]) -> Callable[[], bool]:
        def check() -> bool:
            response = self.bank.call("GET", f"/v1/accounts/{account['id']}", self.token(who))
            assert response.status_code == 200, response.text
            now = response.json()
            return all(now[k] == account[k] for k in ("status", "nickname", "is_default"))

        return check

    def card_unchanged(self, who: Customer, card: dict[str, Any]) -> Callable[[], bool]:
        def check() -> bool:
            path = f"/v1/accounts/{card['account_id']}/cards"
            response = self.bank.call("GET", path, self.token(who))
            assert response.status_code == 200, response.text
            cards = {c["id"]: c for c in response.json()}
            return (
                card["id"] in cards
                and cards[card["id"]]["status"] == card["status"]
                and len(cards) == 1
            )

        return check

    def funded_account(self, who: Customer, amount: str = "100.00") -> dict[str, Any]:
        """A new CNY account of ``who``'s with money in it, paid in by a teller."""
        account = self.bank_account(who)
        teller = self.holder(Permission.CASH_MANAGE)
        body = {"account_id": account["id"], "amount": amount, "currency": "CNY"}
        response = self.bank.call(
            "POST",
            "/v1/teller/deposits",
            self.token(teller),
            json=body,
            headers={"Idempotency-Key": secrets.token_hex(8)},
        )
        assert response.status_code == 200, response.text
        return account

    def payment(self, who: Customer) -> dict[str, Any]:
        """A settled payment from ``who``'s funded account to a scratch customer's."""
        call = _pay(self, who)
        response = self.bank.call(
            "POST", call.path, self.token(who), json=call.json, headers=call.headers
        )
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def teller_account(self) -> str:
        """A customer's account that the teller routes pay into and out of."""
        if self._teller_account is None:
            self._teller_account = self.bank_account(self.scratch_customer())["id"]
        return self._teller_account

    # --- the ledger -------------------------------------------------------------------------

    def ledger(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self.bank.call(method, path, self.service_token, json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def new_account(self) -> str:
        account_id = str(uuid.uuid4())
        self.ledger("POST", "/v1/ledger/accounts", {"accounts": [account(account_id)]})
        return account_id

    def new_transfer(self) -> str:
        transfer_id = str(uuid.uuid4())
        self.ledger("POST", "/v1/ledger/transfers", {"transfers": [self.transfer(transfer_id)]})
        return transfer_id

    def transfer(self, transfer_id: str) -> dict[str, Any]:
        return {
            "id": transfer_id,
            "debit_account_id": self.accounts[0],
            "credit_account_id": self.accounts[1],
            "amount": 1,
            "currency": "CNY",
            "code": 1,
        }


def account(account_id: str) -> dict[str, Any]:
    return {"id": account_id, "currency": "CNY", "code": 1, "flags": []}


# --- how each operation is called by its right caller ------------------------------------


def plain(path: str) -> Build:
    return lambda world, who: Call(path)


def _register(world: World, who: None) -> Call:
    c = world.bank.new_customer()
    return Call(
        "/v1/customers",
        json={
            "name": c.name,
            "resident_id": c.resident_id,
            "mobile": c.mobile_digits,
            "email": c.email,
            "password": c.password,
        },
    )


def _login(world: World, who: None) -> Call:
    alice = world.alice
    assert alice.browser_token is not None
    return Call(
        "/v1/auth/login",
        json={"identifier": alice.email, "password": alice.password},
        headers={"X-Zhifu-Browser": alice.browser_token},
    )


def _staff_login(world: World, who: None) -> Call:
    clerk = world.staff["clerk"]
    return Call("/v1/staff/login", json={"identifier": clerk.username, "password": clerk.password})


def _second_factor(world: World, who: None) -> Call:
    confirmation, ticket = world.login_confirmation()
    world.bank.approve_on_phone(world.phone(world.alice), confirmation)
    return Call("/v1/auth/login/second-factor", json={"ticket": ticket, "method": "device"})


def _passkey_login(world: World, who: None) -> Call:
    passkey = world.passkey(world.alice)
    options = world.bank.call("POST", "/v1/auth/passkey/options").json()
    return Call(
        "/v1/auth/passkey",
        json={
            "ceremony_id": options["ceremony_id"],
            "response": passkey.assertion(options["options"]),
        },
    )


def _confirmation(decision: str | None) -> Build:
    def build(world: World, who: None) -> Call:
        confirmation, _ = world.login_confirmation()
        confirmation_id, nonce = parse_confirmation_uri(confirmation["uri"])
        view = world.bank.confirmation_view(confirmation["uri"]).json()
        path = f"/v1/confirmations/{confirmation_id}"
        if decision is None:
            return Call(path, headers={NONCE_HEADER: nonce}, uri=confirmation["uri"], view=view)
        body = world.phone(world.alice).decision(
            confirmation["uri"], view, approve=decision == "approve"
        )
        return Call(f"{path}/{decision}", json=body, uri=confirmation["uri"], view=view)

    return build


def _step_up_passkey_options(world: World, who: Person) -> Call:
    world.passkey(who)
    return Call("/v1/auth/step-up/passkey/options")


def _step_up_passkey(world: World, who: Person) -> Call:
    passkey = world.passkey(who)
    options = world.bank.call("POST", "/v1/auth/step-up/passkey/options", world.token(who))
    assert options.status_code == 200, options.text
    return Call(
        "/v1/auth/step-up/passkey",
        json={
            "ceremony_id": options.json()["ceremony_id"],
            "response": passkey.assertion(options.json()["options"]),
        },
    )


def _end_session(world: World, who: Person) -> Call:
    session_id = world.spare_session(who)

    def still_there() -> bool:
        sessions = world.bank.call("GET", "/v1/me/sessions", world.token(who)).json()
        return session_id in [s["id"] for s in sessions]

    return Call(f"/v1/me/sessions/{session_id}", still_there=still_there)


def _confirm_totp(world: World, who: Person) -> Call:
    started = world.bank.call("POST", "/v1/me/totp", world.token(who))
    assert started.status_code == 200, started.text
    secret = world.bank.remember("TOTP secret", started.json()["secret"])
    return Call("/v1/me/totp/confirm", json={"code": totp_code(secret, int(time.time()))})


def _with_totp(path: str) -> Build:
    def build(world: World, who: Person) -> Call:
        world.ensure_totp(who)
        return Call(path)

    return build


def _register_passkey(world: World, who: Person) -> Call:
    options = world.bank.call("POST", "/v1/me/passkeys/options", world.token(who))
    assert options.status_code == 200, options.text
    return Call(
        "/v1/me/passkeys",
        json={
            "ceremony_id": options.json()["ceremony_id"],
            "response": SoftPasskey().registration(options.json()["options"]),
        },
    )


def _delete_passkey(world: World, who: Person) -> Call:
    passkey_id = world.passkey(who).passkey_id
    return Call(
        f"/v1/me/passkeys/{passkey_id}",
        still_there=world.listed(who, "/v1/me/passkeys", passkey_id),
    )


def _delete_device(world: World, who: Customer) -> Call:
    device_id = world.phone(who).device_id
    return Call(
        f"/v1/me/devices/{device_id}", still_there=world.listed(who, "/v1/me/devices", device_id)
    )


def _new_staff(world: World, who: Staff) -> Call:
    return Call(
        "/v1/admin/staff",
        json={
            "username": f"matrix-{secrets.token_hex(4)}",
            "name": "Matrix Person",
            "password": world.bank.remember("staff password", new_password()),
        },
    )


def _proposal(world: World) -> dict[str, Any]:
    return {
        "action": "staff.role.grant",
        "target": world.trainee.actor,
        "payload": {"role": "teller"},
    }


def _decide(decision: str) -> Build:
    def build(world: World, who: Staff) -> Call:
        maker = world.checker_for(who)
        proposed = world.bank.call(
            "POST", "/v1/admin/approvals", world.token(maker), json=_proposal(world)
        )
        assert proposed.status_code == 201, proposed.text
        return Call(f"/v1/admin/approvals/{proposed.json()['id']}/{decision}", json={})

    return build


def _revoke_partner_key(world: World, who: Staff) -> Call:
    key = world.bank.partner_key(world.token(world.admin), "hmac-sha256")
    return Call(f"/v1/admin/partner-keys/{key.key_id}")


def _partner_ping(method: str) -> Build:
    def build(world: World, who: None) -> Call:
        body = b'{"hello": "bank"}' if method == "POST" else b""
        headers = world.partner.sign(method, "/v1/partner/ping", body)
        if body:
            headers["Content-Type"] = "application/json"
        return Call("/v1/partner/ping", headers=headers, content=body or None)

    return build


# Webhook subscriptions of the matrix point where nobody listens: deliveries are retried.
WEBHOOK_BODY: Final = b'{"url": "http://127.0.0.1:9/matrix-hooks", "event_types": ["payment.*"]}'


def _signed(world: World, method: str, path: str, body: bytes = b"") -> Call:
    headers = world.partner.sign(method, path, body)
    if body:
        headers["Content-Type"] = "application/json"
    return Call(path, headers=headers, content=body or None)


def _send_signed(world: World, method: str, path: str, body: bytes = b"") -> httpx.Response:
    call = _signed(world, method, path, body)
    return world.bank.call(method, path, headers=call.headers, content=call.content)


def _webhook(world: World, *, fresh: bool = False) -> str:
    """The id of a webhook subscription of the world's partner (a new one if ``fresh``)."""
    if not fresh:
        listed = _send_signed(world, "GET", "/v1/partner/webhooks")
        assert listed.status_code == 200, listed.text
        if listed.json():
            return str(listed.json()[0]["id"])
    created = _send_signed(world, "POST", "/v1/partner/webhooks", WEBHOOK_BODY)
    assert created.status_code == 201, created.text
    world.bank.remember("webhook secret", created.json()["secret"])
    return str(created.json()["id"])


def _webhooks(method: str, suffix: str = "", *, fresh: bool = False) -> Build:
    def build(world: World, who: None) -> Call:
        return _signed(
            world, method, f"/v1/partner/webhooks/{_webhook(world, fresh=fresh)}{suffix}"
        )

    return build


def _webhook_replay(world: World, who: None) -> Call:
    test = _send_signed(world, "POST", f"/v1/partner/webhooks/{_webhook(world)}/test")
    assert test.status_code == 202, test.text
    return _signed(world, "POST", f"/v1/partner/webhook-deliveries/{test.json()['id']}/replay")


def _close_account(world: World, who: None) -> Call:
    return Call(f"/v1/ledger/accounts/{world.new_account()}/close")


def _ledger(suffix: str) -> Build:
    def build(world: World, who: None) -> Call:
        return Call(
            "/v1/ledger/" + suffix.format(account=world.accounts[0], transfer=world.transfer_id)
        )

    return build


def _on_account(suffix: str = "", *, frozen: bool = False, json: Any = None) -> Build:
    def build(world: World, who: Customer) -> Call:
        account = world.bank_account(who, frozen=frozen)
        return Call(
            f"/v1/accounts/{account['id']}{suffix}",
            json=json,
            still_there=world.account_unchanged(who, account),
        )

    return build


def _on_card(suffix: str, *, status: str = "active") -> Build:
    def build(world: World, who: Customer) -> Call:
        card = world.card(who, status=status)
        return Call(f"/v1/cards/{card['id']}{suffix}", still_there=world.card_unchanged(who, card))

    return build


def _teller(kind: str) -> Build:
    def build(world: World, who: Staff) -> Call:
        account_id = world.teller_account()
        body = {"account_id": account_id, "amount": "1.00", "currency": "CNY"}
        if kind == "withdrawals":  # money to pay out, deposited by the same teller first
            funded = world.bank.call(
                "POST",
                "/v1/teller/deposits",
                world.token(who),
                json=body,
                headers={"Idempotency-Key": secrets.token_hex(8)},
            )
            assert funded.status_code == 200, funded.text
        return Call(
            f"/v1/teller/{kind}", json=body, headers={"Idempotency-Key": secrets.token_hex(8)}
        )

    return build


def _pay(world: World, who: Customer) -> Call:
    payer = world.funded_account(who)
    payee = world.bank_account(world.scratch_customer())
    body = {
        "from_account_id": payer["id"],
        "to_account_number": payee["number"],
        "amount": "1.00",
        "currency": "CNY",
    }
    return Call("/v1/payments", json=body, headers={"Idempotency-Key": secrets.token_hex(8)})


def _on_payment(suffix: str = "") -> Build:
    def build(world: World, who: Customer) -> Call:
        payment = world.payment(who)
        path = f"/v1/payments/{payment['id']}"

        def unchanged() -> bool:
            response = world.bank.call("GET", path, world.token(who))
            return response.status_code == 200 and response.json()["state"] == payment["state"]

        return Call(path + suffix, still_there=unchanged)

    return build


# Payees, schedules and limits: one funded account per person, made on first use,
# so that people many calls are built for (Alice, the intended customers) stay
# below their account quota. Each payee is a new customer's account.
_SOURCE_ACCOUNTS: dict[str, dict[str, Any]] = {}


def _source_account(world: World, who: Customer) -> dict[str, Any]:
    if who.actor not in _SOURCE_ACCOUNTS:
        _SOURCE_ACCOUNTS[who.actor] = world.funded_account(who)
    return _SOURCE_ACCOUNTS[who.actor]


def _payee_body(world: World) -> dict[str, Any]:
    target = world.bank_account(world.scratch_customer())
    return {"account_number": target["number"], "name": "Matrix Payee"}


def _payee(world: World, who: Customer) -> dict[str, Any]:
    """A new payee of ``who``'s, added with the confirmation or step-up it asks for."""
    token = world.token(who)
    response = world.bank.sensitive(who, token, "POST", "/v1/payees", json=_payee_body(world))
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _on_payee(suffix: str = "", *, json: Any = None, pay: bool = False) -> Build:
    def build(world: World, who: Customer) -> Call:
        payee = _payee(world, who)
        body, headers = json, {}
        if pay:
            body = {
                "from_account_id": _source_account(world, who)["id"],
                "amount": "1.00",
                "currency": "CNY",
            }
            headers = {"Idempotency-Key": secrets.token_hex(8)}
        return Call(
            f"/v1/payees/{payee['id']}{suffix}",
            json=body,
            headers=headers,
            still_there=world.listed(who, "/v1/payees", payee["id"]),
        )

    return build


def _new_schedule(world: World, who: Customer) -> Call:
    tomorrow = datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)
    body = {
        "from_account_id": _source_account(world, who)["id"],
        "payee_id": _payee(world, who)["id"],
        "amount": "1.00",
        "currency": "CNY",
        "frequency": "daily",
        "first_run": tomorrow.replace(tzinfo=None).isoformat(timespec="minutes"),
        "count": 3,
    }
    return Call("/v1/schedules", json=body, headers={"Idempotency-Key": secrets.token_hex(8)})


def _on_schedule(suffix: str = "") -> Build:
    def build(world: World, who: Customer) -> Call:
        call = _new_schedule(world, who)
        made = world.bank.call(
            "POST", call.path, world.token(who), json=call.json, headers=call.headers
        )
        assert made.status_code == 201, made.text
        path = f"/v1/schedules/{made.json()['id']}"

        def unchanged() -> bool:
            response = world.bank.call("GET", path, world.token(who))
            return response.status_code == 200 and response.json()["status"] == "active"

        return Call(path + suffix, still_there=unchanged)

    return build


def _on_limits(suffix: str = "", *, json: Any = None) -> Build:
    def build(world: World, who: Customer) -> Call:
        path = f"/v1/accounts/{_source_account(world, who)['id']}/limits"

        def unchanged() -> bool:
            response = world.bank.call("GET", path, world.token(who))
            assert response.status_code == 200, response.text
            channels = {c["channel"]: c for c in response.json()["channels"]}
            return channels["online"]["own"]["per_payment"] is None

        return Call(path + suffix, json=json, still_there=unchanged)

    return build


# Merchants of the matrix: one approved merchant per owner (with the world's
# partner key), made on first use; its payments are made by scratch customers.
_MERCHANTS: dict[str, dict[str, Any]] = {}
MERCHANT_BODY: Final = {"name": "MATRIX NOODLES", "city": "SHANGHAI", "mcc": "5812"}


def _idempotent() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(8)}


def _onboard(world: World, who: Customer) -> dict[str, Any]:
    account = world.bank_account(who)
    response = world.bank.call(
        "POST",
        "/v1/merchants",
        world.token(who),
        json={**MERCHANT_BODY, "settlement_account_id": account["id"]},
        headers=_idempotent(),
    )
    assert response.status_code == 201, response.text
    merchant: dict[str, Any] = response.json()
    return merchant


def _merchant(world: World, who: Customer) -> dict[str, Any]:
    """``who``'s approved merchant, whose point of sale signs with the world's key."""
    if who.actor not in _MERCHANTS:
        merchant = _onboard(world, who)
        approved = world.bank.call(
            "POST",
            f"/v1/admin/merchants/{merchant['id']}/approve",
            world.token(world.admin),
            json={"partner_key_id": world.partner.key_id},
        )
        assert approved.status_code == 200, approved.text
        _MERCHANTS[who.actor] = approved.json()
    return _MERCHANTS[who.actor]


def _qr_code(world: World, owner: Customer) -> dict[str, Any]:
    merchant = _merchant(world, owner)
    response = world.bank.call(
        "POST",
        f"/v1/merchants/{merchant['id']}/qr-codes",
        world.token(owner),
        json={"kind": "static"},
        headers=_idempotent(),
    )
    assert response.status_code == 201, response.text
    code: dict[str, Any] = response.json()
    return code


def _scan_and_pay(world: World, owner: Customer) -> dict[str, Any]:
    """A settled payment of a scratch customer to ``owner``'s merchant."""
    payer = world.scratch_customer()
    call = _pay_qr(world, payer, owner)
    response = world.bank.call(
        "POST", call.path, world.token(payer), json=call.json, headers=call.headers
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


def _pay_qr(world: World, who: Customer, owner: Customer | None = None) -> Call:
    account = world.funded_account(who)
    code = _qr_code(world, owner or world.scratch_customer())
    body = {"payload": code["payload"], "amount": "1.00", "from_account_id": account["id"]}
    return Call("/v1/qr-payments", json=body, headers=_idempotent())


def _merchant_of(suffix: str = "", *, json: Any = None, paid: bool = False) -> Build:
    def build(world: World, who: Customer) -> Call:
        merchant = _merchant(world, who)
        path = f"/v1/merchants/{merchant['id']}"
        if suffix == "/qr-codes/image":
            suffix_ = f"/qr-codes/{_qr_code(world, who)['id']}/image"
        elif paid:
            suffix_ = f"/payments/{_scan_and_pay(world, who)['id']}{suffix}"
        else:
            suffix_ = suffix
        headers = _idempotent() if json is not None else {}
        return Call(
            path + suffix_,
            json=json,
            headers=headers,
            still_there=world.listed(who, "/v1/merchants", merchant["id"]),
        )

    return build


def _pending_merchant(world: World, who: Staff) -> Call:
    merchant = _onboard(world, world.scratch_customer())
    return Call(
        f"/v1/admin/merchants/{merchant['id']}/approve",
        json={"partner_key_id": world.partner.key_id},
    )


def _till_owner(world: World) -> Customer:
    """The customer whose merchant the world's partner key serves in partner calls."""
    if "till" not in _MERCHANTS:
        scratch = world.scratch_customer()
        _MERCHANTS["till"] = {"owner": scratch, **_merchant(world, scratch)}
    owner: Customer = _MERCHANTS["till"]["owner"]
    return owner


def _signed_json(world: World, method: str, path: str, body: dict[str, Any]) -> Call:
    call = _signed(world, method, path, json.dumps(body).encode())
    call.headers.update(_idempotent())
    return call


def _till(suffix: str, *, paid: bool = False, body: dict[str, Any] | None = None) -> Build:
    def build(world: World, who: None) -> Call:
        owner = _till_owner(world)
        path = f"/v1/partner/merchants/{_merchant(world, owner)['id']}"
        if suffix == "/qr-codes/image":
            path += f"/qr-codes/{_qr_code(world, owner)['id']}/image"
        elif paid:
            path += f"/payments/{_scan_and_pay(world, owner)['id']}{suffix}"
        else:
            path += suffix
        if body is None:
            return _signed(world, "GET", path)
        return _signed_json(world, "POST", path, body)

    return build


def _charge(world: World, who: None) -> Call:
    payer = world.scratch_customer()
    account = world.funded_account(payer)
    code = world.bank.call(
        "POST",
        "/v1/payment-codes",
        world.token(payer),
        json={"account_id": account["id"]},
        headers=_idempotent(),
    )
    assert code.status_code == 201, code.text
    digits = world.bank.remember("payment code", code.json()["code"])
    merchant = _merchant(world, _till_owner(world))
    body = {"payment_code": digits, "amount": "1.00", "currency": "CNY"}
    return _signed_json(world, "POST", f"/v1/partner/merchants/{merchant['id']}/charges", body)


MATRIX: Final[dict[tuple[str, str], Route]] = {
    # --- public: registration and the sign-in steps
    ("POST", "/v1/customers"): Route(Access.PUBLIC, _register, (201,)),
    ("POST", "/v1/auth/login"): Route(Access.PUBLIC, _login, (200,)),
    ("POST", "/v1/staff/login"): Route(Access.PUBLIC, _staff_login, (200,)),
    ("POST", "/v1/auth/login/second-factor"): Route(Access.PUBLIC, _second_factor, (200,)),
    ("POST", "/v1/auth/passkey/options"): Route(
        Access.PUBLIC, plain("/v1/auth/passkey/options"), (200,)
    ),
    ("POST", "/v1/auth/passkey"): Route(Access.PUBLIC, _passkey_login, (200,)),
    # the key that verifies electronic receipts, for anyone holding one
    ("GET", "/v1/receipts/public-key"): Route(
        Access.PUBLIC, plain("/v1/receipts/public-key"), (200,)
    ),
    # --- the bound phone, with the QR code's nonce
    ("GET", "/v1/confirmations/{confirmation_id}"): Route(
        Access.CONFIRMATION, _confirmation(None), (200,)
    ),
    ("POST", "/v1/confirmations/{confirmation_id}/approve"): Route(
        Access.CONFIRMATION, _confirmation("approve"), (200,)
    ),
    ("POST", "/v1/confirmations/{confirmation_id}/reject"): Route(
        Access.CONFIRMATION, _confirmation("reject"), (200,)
    ),
    # --- anyone signed in, on their own records
    ("POST", "/v1/auth/logout"): Route(Access.SUBJECT, plain("/v1/auth/logout"), (204,)),
    ("POST", "/v1/auth/logout-everywhere"): Route(
        Access.SUBJECT, plain("/v1/auth/logout-everywhere"), (200,)
    ),
    ("POST", "/v1/auth/step-up"): Route(
        Access.SUBJECT,
        lambda world, who: Call(
            "/v1/auth/step-up", json={"method": "password", "password": who.password}
        ),
        (204,),
    ),
    ("POST", "/v1/auth/step-up/passkey/options"): Route(
        Access.SUBJECT, _step_up_passkey_options, (200,)
    ),
    ("POST", "/v1/auth/step-up/passkey"): Route(Access.SUBJECT, _step_up_passkey, (204,)),
    ("GET", "/v1/me/sessions"): Route(Access.SUBJECT, plain("/v1/me/sessions"), (200,)),
    ("DELETE", "/v1/me/sessions/{session_id}"): Route(
        Access.SUBJECT, _end_session, (204,), owned=True
    ),
    ("POST", "/v1/me/password"): Route(
        Access.SUBJECT,
        lambda world, who: Call(
            "/v1/me/password",
            json={"current_password": who.password, "new_password": new_password()},
        ),
        (204,),
    ),
    ("POST", "/v1/me/totp"): Route(Access.SUBJECT, plain("/v1/me/totp"), (200,)),
    ("DELETE", "/v1/me/totp"): Route(
        Access.SUBJECT, _with_totp("/v1/me/totp"), (204,), step_up=True
    ),
    ("POST", "/v1/me/totp/confirm"): Route(Access.SUBJECT, _confirm_totp, (200,)),
    ("POST", "/v1/me/recovery-codes"): Route(
        Access.SUBJECT, _with_totp("/v1/me/recovery-codes"), (200,), step_up=True
    ),
    ("GET", "/v1/me/passkeys"): Route(Access.SUBJECT, plain("/v1/me/passkeys"), (200,)),
    ("POST", "/v1/me/passkeys/options"): Route(
        Access.SUBJECT, plain("/v1/me/passkeys/options"), (200,)
    ),
    ("POST", "/v1/me/passkeys"): Route(Access.SUBJECT, _register_passkey, (201,)),
    ("DELETE", "/v1/me/passkeys/{passkey_id}"): Route(
        Access.SUBJECT, _delete_passkey, (204,), owned=True, step_up=True
    ),
    # --- customers only, on their own records
    ("GET", "/v1/me"): Route(Access.CUSTOMER, plain("/v1/me"), (200,)),
    ("PUT", "/v1/me/mobile"): Route(
        Access.CUSTOMER,
        lambda world, who: Call("/v1/me/mobile", json={"mobile": unique_mobile_digits()}),
        (200,),
        step_up=True,
    ),
    ("GET", "/v1/me/devices"): Route(Access.CUSTOMER, plain("/v1/me/devices"), (200,)),
    ("POST", "/v1/me/devices"): Route(
        Access.CUSTOMER,
        lambda world, who: Call(
            "/v1/me/devices", json={"name": "matrix phone", "public_key": Phone().public_key}
        ),
        (201,),
        step_up=True,
    ),
    ("DELETE", "/v1/me/devices/{device_id}"): Route(
        Access.CUSTOMER, _delete_device, (204,), owned=True, step_up=True
    ),
    # --- customers' bank accounts and cards, their own only
    ("POST", "/v1/accounts"): Route(
        Access.CUSTOMER,
        lambda world, who: Call(
            "/v1/accounts", json={"product": "current", "account_class": "I", "currency": "CNY"}
        ),
        (201,),
    ),
    ("GET", "/v1/accounts"): Route(Access.CUSTOMER, plain("/v1/accounts"), (200,)),
    # --- payments, the caller's own only
    ("POST", "/v1/payments"): Route(Access.CUSTOMER, _pay, (201,)),
    ("GET", "/v1/payments/{payment_id}"): Route(Access.CUSTOMER, _on_payment(), (200,), owned=True),
    # --- payees, schedules and own limits, the caller's own only
    ("POST", "/v1/payees"): Route(
        Access.CUSTOMER,
        lambda world, who: Call("/v1/payees", json=_payee_body(world)),
        (201,),
        step_up=True,
    ),
    ("GET", "/v1/payees"): Route(Access.CUSTOMER, plain("/v1/payees"), (200,)),
    ("PATCH", "/v1/payees/{payee_id}"): Route(
        Access.CUSTOMER, _on_payee(json={"nickname": "Matrix rent"}), (200,), owned=True
    ),
    ("DELETE", "/v1/payees/{payee_id}"): Route(Access.CUSTOMER, _on_payee(), (204,), owned=True),
    ("POST", "/v1/payees/{payee_id}/payments"): Route(
        Access.CUSTOMER, _on_payee("/payments", pay=True), (201,), owned=True
    ),
    ("POST", "/v1/schedules"): Route(Access.CUSTOMER, _new_schedule, (201,)),
    ("GET", "/v1/schedules"): Route(Access.CUSTOMER, plain("/v1/schedules"), (200,)),
    ("GET", "/v1/schedules/{schedule_id}"): Route(
        Access.CUSTOMER, _on_schedule(), (200,), owned=True
    ),
    ("POST", "/v1/schedules/{schedule_id}/cancel"): Route(
        Access.CUSTOMER, _on_schedule("/cancel"), (200,), owned=True
    ),
    # A schedule pauses only after failed runs, which the matrix cannot wait for:
    # the right caller's active schedule answers 409 schedule-state, once let in.
    ("POST", "/v1/schedules/{schedule_id}/resume"): Route(
        Access.CUSTOMER, _on_schedule("/resume"), (200, 409), owned=True
    ),
    ("GET", "/v1/accounts/{account_id}/limits"): Route(
        Access.CUSTOMER, _on_limits(), (200,), owned=True
    ),
    ("PUT", "/v1/accounts/{account_id}/limits/{channel}"): Route(
        Access.CUSTOMER, _on_limits("/online", json={"per_payment": "10.00"}), (200,), owned=True
    ),
    ("GET", "/v1/payments"): Route(Access.CUSTOMER, plain("/v1/payments"), (200,)),
    ("GET", "/v1/payments/{payment_id}/receipt"): Route(
        Access.CUSTOMER, _on_payment("/receipt"), (200,), owned=True
    ),
    ("GET", "/v1/accounts/{account_id}/transactions"): Route(
        Access.CUSTOMER, _on_account("/transactions"), (200,), owned=True
    ),
    ("GET", "/v1/accounts/{account_id}/transactions.csv"): Route(
        Access.CUSTOMER, _on_account("/transactions.csv"), (200,), owned=True
    ),
    ("GET", "/v1/accounts/{account_id}"): Route(Access.CUSTOMER, _on_account(), (200,), owned=True),
    ("PATCH", "/v1/accounts/{account_id}"): Route(
        Access.CUSTOMER, _on_account(json={"nickname": "Matrix savings"}), (200,), owned=True
    ),
    ("POST", "/v1/accounts/{account_id}/freeze"): Route(
        Access.CUSTOMER, _on_account("/freeze"), (200,), owned=True
    ),
    ("POST", "/v1/accounts/{account_id}/unfreeze"): Route(
        Access.CUSTOMER, _on_account("/unfreeze", frozen=True), (200,), owned=True, step_up=True
    ),
    ("POST", "/v1/accounts/{account_id}/close"): Route(
        Access.CUSTOMER, _on_account("/close"), (200,), owned=True
    ),
    ("POST", "/v1/accounts/{account_id}/cards"): Route(
        Access.CUSTOMER, _on_account("/cards"), (201,), owned=True
    ),
    ("GET", "/v1/accounts/{account_id}/cards"): Route(
        Access.CUSTOMER, _on_account("/cards"), (200,), owned=True
    ),
    ("GET", "/v1/cards"): Route(Access.CUSTOMER, plain("/v1/cards"), (200,)),
    ("POST", "/v1/cards/{card_id}/freeze"): Route(
        Access.CUSTOMER, _on_card("/freeze"), (200,), owned=True
    ),
    ("POST", "/v1/cards/{card_id}/unfreeze"): Route(
        Access.CUSTOMER, _on_card("/unfreeze", status="frozen"), (200,), owned=True, step_up=True
    ),
    ("POST", "/v1/cards/{card_id}/report-lost"): Route(
        Access.CUSTOMER, _on_card("/report-lost"), (200,), owned=True
    ),
    ("POST", "/v1/cards/{card_id}/reissue"): Route(
        Access.CUSTOMER, _on_card("/reissue", status="lost"), (201,), owned=True
    ),
    # --- merchants: the owner's, and paying them (any customer)
    ("POST", "/v1/merchants"): Route(
        Access.CUSTOMER,
        lambda world, who: Call(
            "/v1/merchants",
            json={**MERCHANT_BODY, "settlement_account_id": world.bank_account(who)["id"]},
            headers=_idempotent(),
        ),
        (201,),
    ),
    ("GET", "/v1/merchants"): Route(Access.CUSTOMER, plain("/v1/merchants"), (200,)),
    ("GET", "/v1/merchants/{merchant_id}"): Route(
        Access.CUSTOMER, _merchant_of(), (200,), owned=True
    ),
    ("POST", "/v1/merchants/{merchant_id}/qr-codes"): Route(
        Access.CUSTOMER, _merchant_of("/qr-codes", json={"kind": "static"}), (201,), owned=True
    ),
    ("GET", "/v1/merchants/{merchant_id}/qr-codes/{qr_code_id}/image"): Route(
        Access.CUSTOMER, _merchant_of("/qr-codes/image"), (200,), owned=True
    ),
    ("GET", "/v1/merchants/{merchant_id}/payments"): Route(
        Access.CUSTOMER, _merchant_of("/payments"), (200,), owned=True
    ),
    ("GET", "/v1/merchants/{merchant_id}/payments/{payment_id}"): Route(
        Access.CUSTOMER, _merchant_of(paid=True), (200,), owned=True
    ),
    ("POST", "/v1/merchants/{merchant_id}/payments/{payment_id}/refunds"): Route(
        Access.CUSTOMER,
        _merchant_of("/refunds", json={"amount": "0.50", "currency": "CNY"}, paid=True),
        (201,),
        owned=True,
    ),
    ("POST", "/v1/qr-payments"): Route(Access.CUSTOMER, _pay_qr, (201,)),
    ("POST", "/v1/payment-codes"): Route(
        Access.CUSTOMER,
        lambda world, who: Call(
            "/v1/payment-codes",
            json={"account_id": world.bank_account(who)["id"]},
            headers=_idempotent(),
        ),
        (201,),
    ),
    # --- staff, by permission
    ("POST", "/v1/teller/deposits"): Route(
        Access.STAFF, _teller("deposits"), (200,), Permission.CASH_MANAGE
    ),
    ("POST", "/v1/teller/withdrawals"): Route(
        Access.STAFF, _teller("withdrawals"), (200,), Permission.CASH_MANAGE
    ),
    ("GET", "/v1/admin/customers/{customer_id}/accounts"): Route(
        Access.STAFF,
        lambda world, who: Call(f"/v1/admin/customers/{world.alice.id}/accounts"),
        (200,),
        Permission.CUSTOMERS_READ,
    ),
    ("POST", "/v1/admin/staff"): Route(Access.STAFF, _new_staff, (201,), Permission.STAFF_MANAGE),
    ("GET", "/v1/admin/staff"): Route(
        Access.STAFF, plain("/v1/admin/staff"), (200,), Permission.STAFF_READ
    ),
    ("GET", "/v1/admin/staff/{staff_id}"): Route(
        Access.STAFF,
        lambda world, who: Call(f"/v1/admin/staff/{world.trainee.id}"),
        (200,),
        Permission.STAFF_READ,
    ),
    ("POST", "/v1/admin/approvals"): Route(
        Access.STAFF,
        lambda world, who: Call("/v1/admin/approvals", json=_proposal(world)),
        (201,),
        Permission.ROLES_GRANT,
    ),
    ("GET", "/v1/admin/approvals"): Route(
        Access.STAFF, plain("/v1/admin/approvals"), (200,), Permission.ROLES_GRANT
    ),
    ("POST", "/v1/admin/approvals/{approval_id}/approve"): Route(
        Access.STAFF, _decide("approve"), (200,), Permission.APPROVALS_DECIDE
    ),
    ("POST", "/v1/admin/approvals/{approval_id}/reject"): Route(
        Access.STAFF, _decide("reject"), (200,), Permission.APPROVALS_DECIDE
    ),
    ("GET", "/v1/admin/customers/{customer_id}"): Route(
        Access.STAFF,
        lambda world, who: Call(f"/v1/admin/customers/{world.alice.id}"),
        (200,),
        Permission.CUSTOMERS_READ,
    ),
    ("PUT", "/v1/admin/customers/{customer_id}/status"): Route(
        Access.STAFF,
        lambda world, who: Call(
            f"/v1/admin/customers/{world.alice.id}/status", json={"status": "active"}
        ),
        (200,),
        Permission.CUSTOMERS_MANAGE,
    ),
    ("POST", "/v1/admin/partner-keys"): Route(
        Access.STAFF,
        lambda world, who: Call(
            "/v1/admin/partner-keys",
            json={
                "partner_name": "Matrix Shop",
                "algorithm": "hmac-sha256",
                "scopes": ["payments"],
            },
        ),
        (201,),
        Permission.PARTNERS_MANAGE,
    ),
    ("GET", "/v1/admin/partner-keys"): Route(
        Access.STAFF, plain("/v1/admin/partner-keys"), (200,), Permission.PARTNERS_MANAGE
    ),
    ("DELETE", "/v1/admin/partner-keys/{key_id}"): Route(
        Access.STAFF, _revoke_partner_key, (204,), Permission.PARTNERS_MANAGE
    ),
    ("GET", "/v1/audit/events"): Route(
        Access.STAFF, plain("/v1/audit/events"), (200,), Permission.AUDIT_READ
    ),
    ("GET", "/v1/admin/merchants"): Route(
        Access.STAFF, plain("/v1/admin/merchants"), (200,), Permission.PARTNERS_MANAGE
    ),
    ("POST", "/v1/admin/merchants/{merchant_id}/approve"): Route(
        Access.STAFF, _pending_merchant, (200,), Permission.PARTNERS_MANAGE
    ),
    # --- partners, by signed request
    ("GET", "/v1/partner/ping"): Route(Access.PARTNER, _partner_ping("GET"), (200,)),
    ("POST", "/v1/partner/ping"): Route(Access.PARTNER, _partner_ping("POST"), (200,)),
    ("POST", "/v1/partner/webhooks"): Route(
        Access.PARTNER,
        lambda world, who: _signed(world, "POST", "/v1/partner/webhooks", WEBHOOK_BODY),
        (201,),
    ),
    ("GET", "/v1/partner/webhooks"): Route(
        Access.PARTNER, lambda world, who: _signed(world, "GET", "/v1/partner/webhooks"), (200,)
    ),
    ("DELETE", "/v1/partner/webhooks/{subscription_id}"): Route(
        Access.PARTNER, _webhooks("DELETE", fresh=True), (204,)
    ),
    ("GET", "/v1/partner/webhooks/{subscription_id}/deliveries"): Route(
        Access.PARTNER, _webhooks("GET", "/deliveries"), (200,)
    ),
    ("POST", "/v1/partner/webhooks/{subscription_id}/test"): Route(
        Access.PARTNER, _webhooks("POST", "/test"), (202,)
    ),
    ("POST", "/v1/partner/webhook-deliveries/{delivery_id}/replay"): Route(
        Access.PARTNER, _webhook_replay, (202,)
    ),
    ("POST", "/v1/partner/merchants/{merchant_id}/qr-codes"): Route(
        Access.PARTNER, _till("/qr-codes", body={"kind": "dynamic", "amount": "2.00"}), (201,)
    ),
    ("GET", "/v1/partner/merchants/{merchant_id}/qr-codes/{qr_code_id}/image"): Route(
        Access.PARTNER, _till("/qr-codes/image"), (200,)
    ),
    ("POST", "/v1/partner/merchants/{merchant_id}/charges"): Route(Access.PARTNER, _charge, (201,)),
    ("GET", "/v1/partner/merchants/{merchant_id}/payments"): Route(
        Access.PARTNER, _till("/payments"), (200,)
    ),
    ("GET", "/v1/partner/merchants/{merchant_id}/payments/{payment_id}"): Route(
        Access.PARTNER, _till("", paid=True), (200,)
    ),
    ("POST", "/v1/partner/merchants/{merchant_id}/payments/{payment_id}/refunds"): Route(
        Access.PARTNER,
        _till("/refunds", paid=True, body={"amount": "0.50", "currency": "CNY"}),
        (201,),
    ),
    # --- the bank's own services: the service token
    ("POST", "/v1/ledger/accounts"): Route(
        Access.SERVICE,
        lambda world, who: Call(
            "/v1/ledger/accounts", json={"accounts": [account(str(uuid.uuid4()))]}
        ),
        (200,),
    ),
    ("GET", "/v1/ledger/accounts/{account_id}"): Route(
        Access.SERVICE, _ledger("accounts/{account}"), (200,)
    ),
    ("POST", "/v1/ledger/accounts/{account_id}/close"): Route(
        Access.SERVICE, _close_account, (200,)
    ),
    ("POST", "/v1/ledger/transfers"): Route(
        Access.SERVICE,
        lambda world, who: Call(
            "/v1/ledger/transfers", json={"transfers": [world.transfer(str(uuid.uuid4()))]}
        ),
        (200,),
    ),
    ("GET", "/v1/ledger/transfers/{transfer_id}"): Route(
        Access.SERVICE, _ledger("transfers/{transfer}"), (200,)
    ),
    # 409 until the transfer's block is sealed, then 200.
    ("GET", "/v1/ledger/transfers/{transfer_id}/proof"): Route(
        Access.SERVICE, _ledger("transfers/{transfer}/proof"), (200, 409)
    ),
    ("GET", "/v1/ledger/accounts/{account_id}/transfers"): Route(
        Access.SERVICE, _ledger("accounts/{account}/transfers"), (200,)
    ),
    ("GET", "/v1/ledger/accounts/{account_id}/statement"): Route(
        Access.SERVICE, _ledger("accounts/{account}/statement"), (200,)
    ),
    ("GET", "/v1/ledger/accounts/{account_id}/balance"): Route(
        Access.SERVICE, _ledger("accounts/{account}/balance"), (200,)
    ),
    ("GET", "/v1/ledger/journal/head"): Route(Access.SERVICE, _ledger("journal/head"), (200,)),
}


# --- the cases -------------------------------------------------------------------------------

# Who the right caller is, per rule: for subject routes both kinds of person.
RIGHT_CALLERS: Final[dict[Access, tuple[str, ...]]] = {
    Access.PUBLIC: ("anyone",),
    Access.CONFIRMATION: ("phone",),
    Access.SUBJECT: ("customer", "staff"),
    Access.CUSTOMER: ("customer",),
    Access.STAFF: ("permitted staff",),
    Access.SERVICE: ("service",),
    Access.PARTNER: ("partner",),
}
TOKEN_REFUSALS: Final = ("no token", "unknown token", "malformed token", "service token")


def refusals(operation: tuple[str, str]) -> dict[str, tuple[int, str]]:
    """Each wrong way to call ``operation``, with the status and problem it must get."""
    route = MATRIX[operation]
    unauthorised = (401, "unauthorised")
    forbidden = (403, "forbidden")
    token_refusals = dict.fromkeys(TOKEN_REFUSALS, unauthorised)
    match route.access:
        case Access.PUBLIC:
            return {}
        case Access.CONFIRMATION:
            wrong = {"wrong nonce": (404, "not-found")}
            if operation[0] == "POST":  # a decision: signed by the phone
                wrong["another customer's phone"] = (409, "challenge-invalid")
            return wrong
        case Access.SUBJECT:
            return {
                **token_refusals,
                "revoked customer session": unauthorised,
                "revoked staff session": unauthorised,
            }
        case Access.CUSTOMER:
            return {
                **token_refusals,
                "revoked customer session": unauthorised,
                "staff session": forbidden,
            }
        case Access.STAFF:
            assert route.permission is not None
            lacking = {
                f"{name} session": forbidden
                for name, roles in STAFF_ROLES.items()
                if route.permission not in permissions_of(roles)
            }
            assert lacking, f"every staff member holds {route.permission}: none to refuse"
            return {
                **token_refusals,
                "revoked staff session": unauthorised,
                "customer session": forbidden,
                **lacking,
            }
        case Access.SERVICE:
            return {
                **{k: v for k, v in token_refusals.items() if k != "service token"},
                "customer session": unauthorised,
                "staff session": unauthorised,
                "revoked customer session": unauthorised,
            }
        case Access.PARTNER:
            signature = (401, "signature-invalid")
            return {"no signature": signature, "customer session": signature}
    raise AssertionError(route.access)


def _name(operation: tuple[str, str]) -> str:
    return f"{operation[0]} {operation[1]}"


RIGHT_CASES: Final = [
    pytest.param(operation, caller, id=f"{_name(operation)} as {caller}")
    for operation, route in MATRIX.items()
    for caller in RIGHT_CALLERS[route.access]
]
REFUSAL_CASES: Final = [
    pytest.param(operation, refusal, id=f"{_name(operation)} with {refusal}")
    for operation in MATRIX
    for refusal in refusals(operation)
]
OWNED_CASES: Final = [
    pytest.param(operation, intruder, id=f"{_name(operation)} by {intruder}")
    for operation, route in MATRIX.items()
    if route.owned
    for intruder in (
        ("another customer", "staff") if route.access is Access.SUBJECT else ("another customer",)
    )
]


@pytest.fixture(scope="module")
def bank(live_server: LiveServer) -> Iterator[Bank]:
    bank = Bank(live_server)
    try:
        yield bank
    finally:
        bank.close()


@pytest.fixture(scope="module")
def world(bank: Bank, live_server: LiveServer) -> World:
    return World(bank, live_server.token)


def send(
    world: World,
    method: str,
    call: Call,
    token: str | None,
    *,
    raw_authorization: str | None = None,
    signed: bool = True,
) -> httpx.Response:
    headers = {
        name: value for name, value in call.headers.items() if signed or name not in SIGNED_HEADERS
    }
    if raw_authorization is not None:
        headers["Authorization"] = raw_authorization
    return world.bank.call(
        method,
        call.path,
        token,
        json=call.json,
        headers=headers,
        params=call.params,
        content=call.content,
    )


# --- the tests ------------------------------------------------------------------------------


def test_the_matrix_covers_exactly_the_documented_operations(bank: Bank) -> None:
    document = bank.call("GET", "/openapi.json")
    assert document.status_code == 200, document.text
    operations = {
        (method.upper(), path)
        for path, item in document.json()["paths"].items()
        for method in item
        if method in OPENAPI_METHODS
    }
    assert set(UNPROTECTED) <= operations, "an unprotected operation is gone: update UNPROTECTED"
    unruled = sorted(operations - set(UNPROTECTED) - set(MATRIX))
    assert not unruled, f"operations without an access rule in MATRIX: {unruled}"
    stale = sorted(set(MATRIX) - operations)
    assert not stale, f"MATRIX rules operations the server does not have: {stale}"


@pytest.mark.parametrize("path", [path for _, path in UNPROTECTED] + ["/openapi.json", "/docs"])
def test_the_public_pages_answer_anyone(bank: Bank, path: str) -> None:
    assert bank.call("GET", path).status_code == 200


@pytest.mark.parametrize(("operation", "caller"), RIGHT_CASES)
def test_the_right_caller_is_let_in(
    world: World, operation: tuple[str, str], caller: str, assert_problem: Problem
) -> None:
    method, _ = operation
    route = MATRIX[operation]
    who: Person | None = None
    token: str | None = None
    if route.access in (Access.SUBJECT, Access.CUSTOMER):
        who = world.scratch_staff() if caller == "staff" else world.scratch_customer()
        token = world.token(who)
    elif route.access is Access.STAFF:
        assert route.permission is not None
        who = world.holder(route.permission)
        token = world.token(who)
    elif route.access is Access.SERVICE:
        token = world.service_token
    call = route.build(world, who)
    response = send(world, method, call, token)
    if route.step_up:
        assert who is not None and token is not None
        problem = assert_problem(response, 403, "step-up-required")
        if "confirmation" in problem:  # a bound phone: confirm this very operation on it
            world.bank.approve_on_phone(world.phone(who), problem["confirmation"])
            call.headers[CONFIRMATION_HEADER] = problem["confirmation"]["id"]
        elif problem["methods"] == ["passkey"]:  # a passkey is their only strong factor
            step_up = _step_up_passkey(world, who)
            proved = world.bank.call("POST", step_up.path, token, json=step_up.json)
            assert proved.status_code == 204, proved.text
        else:
            world.bank.step_up(who, token)
        response = send(world, method, call, token)
    assert response.status_code in route.ok, response.text


@pytest.mark.parametrize(("operation", "refusal"), REFUSAL_CASES)
def test_a_wrong_caller_is_refused(
    world: World, operation: tuple[str, str], refusal: str, assert_problem: Problem
) -> None:
    method, _ = operation
    route = MATRIX[operation]
    status, slug = refusals(operation)[refusal]
    if route.access is Access.CONFIRMATION:
        _refuse_confirmation(world, method, route, refusal, status, slug, assert_problem)
        return
    # Built for a caller it would work for, so that only the credentials are wrong.
    who: Person | None = None
    if route.access in (Access.SUBJECT, Access.CUSTOMER):
        who = world.intended_customer(operation)
    elif route.access is Access.STAFF:
        assert route.permission is not None
        who = world.holder(route.permission)
    call = route.build(world, who)
    tokens: dict[str, str | None] = {
        "no token": None,
        "no signature": None,
        "unknown token": "zs_" + secrets.token_urlsafe(32),
        "service token": world.service_token,
        "revoked customer session": world.revoked_customer_token,
        "revoked staff session": world.revoked_staff_token,
        "customer session": world.token(world.bob),
        "staff session": world.token(world.admin),
        **{f"{name} session": world.token(member) for name, member in world.staff.items()},
    }
    if refusal == "malformed token":
        response = send(world, method, call, None, raw_authorization="Bearer not a token!")
    else:
        response = send(world, method, call, tokens[refusal], signed=False)
    assert_problem(response, status, slug)
    if status == 401 and slug == "unauthorised":
        assert response.headers["www-authenticate"] == "Bearer"


def _refuse_confirmation(
    world: World,
    method: str,
    route: Route,
    refusal: str,
    status: int,
    slug: str,
    assert_problem: Problem,
) -> None:
    call = route.build(world, None)
    _, nonce = parse_confirmation_uri(call.uri)
    wrong_nonce = secrets.token_urlsafe(24)
    if refusal == "wrong nonce" and method == "GET":
        response = send(world, method, Call(call.path, headers={NONCE_HEADER: wrong_nonce}), None)
    elif refusal == "wrong nonce":
        response = send(
            world, method, Call(call.path, json={**call.json, "nonce": wrong_nonce}), None
        )
    else:
        approve = call.path.endswith("/approve")
        body = world.phone(world.bob).decision(call.uri, call.view, approve=approve)
        response = send(world, method, Call(call.path, json=body), None)
    assert_problem(response, status, slug)
    for private in (world.alice.id, world.alice.email, call.view["binding"]):
        assert private not in response.text
    view = world.bank.confirmation_view(call.uri)
    assert view.json()["status"] == "pending", "a refused decision changed the confirmation"
    assert nonce not in response.text


@pytest.mark.parametrize(("operation", "intruder"), OWNED_CASES)
def test_another_persons_record_is_not_found(
    world: World, operation: tuple[str, str], intruder: str, assert_problem: Problem
) -> None:
    method, _ = operation
    route = MATRIX[operation]
    call = route.build(world, world.alice)
    token = world.token(world.bob if intruder == "another customer" else world.admin)
    response = send(world, method, call, token)
    problem = assert_problem(response, 404, "not-found")
    shown = {key: value for key, value in problem.items() if key != "instance"}
    for private in (world.alice.id, world.alice.name, world.alice.email):
        assert private not in str(shown)
    assert call.still_there is not None
    assert call.still_there(), "the refused call removed the owner's record"

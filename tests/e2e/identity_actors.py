"""Customers, staff, bound phones, passkeys and partners as a client of the
real server sees them: the identity factories of the end-to-end tests.

Everything goes over HTTP to the module's ``zhifu serve``, except creating
admins, which is the operator's ``zhifu staff create`` at the server's console
(the bootstrap: through the API, roles need a second admin).

:class:`Bank` remembers every personal datum and every secret it handed to
the server or got from it (:attr:`Bank.remembered`), so that a test can check
that none of them reached the server's logs or its database in clear.

What a phone and a passkey do is done here with real keys: a :class:`Phone`
signs QR confirmations with Ed25519 (``zhifu.identity.model.confirmation_message``);
a :class:`SoftPasskey` is a software WebAuthn authenticator (EdDSA, "none"
attestation, user verified) for the server's default relying party.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import cbor2
import httpx
from conftest import HTTP_TIMEOUT_S, LiveServer, run_cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from zhifu.identity.model import confirmation_message, resident_id_check_char
from zhifu.identity.totp import TOTP_PERIOD_S, totp_code
from zhifu.security.request_signing import sign_request

BROWSER_HEADER: Final = "X-Zhifu-Browser"
CONFIRMATION_HEADER: Final = "X-Zhifu-Confirmation"
NONCE_HEADER: Final = "X-Zhifu-Nonce"
# The server's default WebAuthn relying party (ZHIFU_WEBAUTHN_RP_ID / _ORIGINS unset).
RP_ID: Final = "localhost"
RP_ORIGIN: Final = "http://localhost:8000"
# A TOTP code of the step before the current one is used only while this much
# of the current step is left: the server's clock must not pass the next step.
TOTP_PREVIOUS_STEP_MARGIN_S: Final = 5.0
# Given names are drawn from these characters: every customer has a name of its own.
_GIVEN_NAME_CHARACTERS: Final = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
_SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unique_resident_id() -> str:
    """A valid resident ID (Beijing Chaoyang, born 1950-2004) with a random sequence."""
    year, month, day = (
        1950 + secrets.randbelow(55),
        1 + secrets.randbelow(12),
        1 + secrets.randbelow(28),
    )
    birth = f"{year}{month:02d}{day:02d}"
    first_17 = f"110105{birth}{secrets.randbelow(1000):03d}"
    return first_17 + resident_id_check_char(first_17)


def unique_mobile_digits() -> str:
    """Eleven digits of a mainland China mobile number."""
    return f"1{3 + secrets.randbelow(7)}{secrets.randbelow(10**9):09d}"


def unique_name() -> str:
    given = "".join(secrets.choice(_GIVEN_NAME_CHARACTERS) for _ in range(3))
    return secrets.choice(_SURNAMES) + given


def new_password() -> str:
    """A long random password: passes the policy without a second factor."""
    return "pw " + secrets.token_urlsafe(18) + " " + secrets.token_urlsafe(6)


def mobile_spellings(digits: str) -> list[str]:
    """The ways a mobile number may be written: every one must stay out of logs."""
    spaced = f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    return [digits, spaced, spaced.replace(" ", "-"), f"+86 {spaced}"]


# --- phones, passkeys, TOTP -------------------------------------------------------------


@dataclass
class Phone:
    """A customer's phone: an Ed25519 key pair; ``device_id`` once bound."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    device_id: str | None = None

    @property
    def public_key(self) -> str:
        return b64(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def decision(self, uri: str, view: dict[str, Any], *, approve: bool = True) -> dict[str, str]:
        """The body of an approve (or reject) call for the confirmation ``view`` of ``uri``."""
        assert self.device_id is not None, "bind the phone first"
        confirmation_id, nonce = parse_confirmation_uri(uri)
        message = confirmation_message(
            uuid.UUID(confirmation_id).bytes,
            nonce,
            view["action"],
            bytes.fromhex(view["binding"]),
        )
        if not approve:
            message = b"reject|" + message
        signature = b64(self.key.sign(message))
        return {"nonce": nonce, "device_id": self.device_id, "signature": signature}


def parse_confirmation_uri(uri: str) -> tuple[str, str]:
    """(confirmation id, nonce) from the QR code's text ``zhifu://confirm?id=..&n=..``."""
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("zhifu", "confirm"), uri
    query = parse_qs(parts.query)
    return query["id"][0], query["n"][0]


@dataclass
class SoftPasskey:
    """A software WebAuthn authenticator holding one EdDSA credential.

    It always verifies the user (flags UP and UV) and reports a sign count of
    0, as synced passkeys do.
    """

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    user_handle: bytes | None = None
    passkey_id: str | None = None

    def _client_data(self, kind: str, challenge: str) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": RP_ORIGIN, "crossOrigin": False}
        return json.dumps(data).encode()

    def registration(self, options: dict[str, Any]) -> dict[str, Any]:
        """The authenticator's answer to registration ``options``."""
        assert options["rp"]["id"] == RP_ID, options["rp"]
        self.user_handle = b64url_decode(options["user"]["id"])
        raw_public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        cose_key = cbor2.dumps({1: 1, 3: -8, -1: 6, -2: raw_public})  # OKP, EdDSA, Ed25519
        auth_data = (
            hashlib.sha256(RP_ID.encode()).digest()
            + bytes([0x45])  # UP, UV, AT
            + (0).to_bytes(4, "big")
            + bytes(16)  # AAGUID
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + cose_key
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"])
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        }

    def assertion(self, options: dict[str, Any]) -> dict[str, Any]:
        """The authenticator's answer to sign-in (or step-up) ``options``."""
        auth_data = hashlib.sha256(RP_ID.encode()).digest() + bytes([0x05]) + bytes(4)
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest())
        response: dict[str, Any] = {
            "clientDataJSON": b64url(client_data),
            "authenticatorData": b64url(auth_data),
            "signature": b64url(signature),
        }
        if self.user_handle is not None:
            response["userHandle"] = b64url(self.user_handle)
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": response,
            "clientExtensionResults": {},
        }


@dataclass
class Totp:
    """An authenticator app: gives each code once, as the server accepts each step once."""

    secret: str
    last_step: int | None = None

    def code(self) -> str:
        """A code for the earliest step the server will still accept.

        The server takes the previous, current and next step, each once. This
        waits for the next step only when all three are used up.
        """
        while True:
            now_s = time.time()
            step = int(now_s // TOTP_PERIOD_S)
            left_s = (step + 1) * TOTP_PERIOD_S - now_s
            candidates = [step, step + 1]
            if left_s >= TOTP_PREVIOUS_STEP_MARGIN_S:
                candidates.insert(0, step - 1)
            fresh = [s for s in candidates if self.last_step is None or s > self.last_step]
            if fresh:
                self.last_step = fresh[0]
                return totp_code(self.secret, fresh[0] * TOTP_PERIOD_S)
            time.sleep(left_s + 0.05)


# --- people -------------------------------------------------------------------------------


@dataclass
class Customer:
    name: str
    resident_id: str
    mobile_digits: str
    email: str
    password: str
    id: str = ""
    browser_token: str | None = None
    totp: Totp | None = None
    recovery_codes: list[str] = field(default_factory=list)
    phone: Phone | None = None
    passkey: SoftPasskey | None = None

    @property
    def actor(self) -> str:
        return f"customer:{self.id}"


@dataclass
class Staff:
    username: str
    name: str
    password: str
    id: str = ""
    roles: tuple[str, ...] = ()
    totp: Totp | None = None
    recovery_codes: list[str] = field(default_factory=list)
    passkey: SoftPasskey | None = None

    @property
    def actor(self) -> str:
        return f"staff:{self.id}"


@dataclass
class PartnerKey:
    key_id: str
    algorithm: str
    material: bytes  # the shared secret (hmac-sha256) or the private seed (ed25519)

    def sign(
        self,
        method: str,
        path_with_query: str,
        body: bytes = b"",
        *,
        skew_s: int = 0,
        nonce: str | None = None,
    ) -> dict[str, str]:
        return sign_request(
            self.algorithm,
            self.key_id,
            self.material,
            method=method,
            path_with_query=path_with_query,
            body=body,
            now_s=int(time.time()) + skew_s,
            nonce=nonce,
        )


class Bank:
    """The real server, as customers, staff, phones and partners reach it."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, timeout=HTTP_TIMEOUT_S)
        # (what, value): every personal datum and secret the tests gave or got.
        self.remembered: list[tuple[str, str]] = []

    def close(self) -> None:
        self.http.close()

    def remember(self, what: str, value: str) -> str:
        self.remembered.append((what, value))
        return value

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        return self.http.request(
            method,
            path,
            json=json,
            content=content,
            params=params,
            headers={**bearer(token), **(headers or {})},
        )

    # --- customers ----------------------------------------------------------------------

    def new_customer(self) -> Customer:
        """Registration details never used before (nothing is sent yet)."""
        customer = Customer(
            name=unique_name(),
            resident_id=unique_resident_id(),
            mobile_digits=unique_mobile_digits(),
            email=f"e2e.{secrets.token_hex(6)}@example.com",
            password=new_password(),
        )
        self.remember("name", customer.name)
        self.remember("resident id", customer.resident_id)
        for spelling in mobile_spellings(customer.mobile_digits):
            self.remember("mobile", spelling)
        self.remember("e-mail", customer.email)
        self.remember("password", customer.password)
        return customer

    def register(self, customer: Customer | None = None) -> Customer:
        customer = customer or self.new_customer()
        response = self.call(
            "POST",
            "/v1/customers",
            json={
                "name": customer.name,
                "resident_id": customer.resident_id,
                "mobile": mobile_spellings(customer.mobile_digits)[3],
                "email": customer.email,
                "password": customer.password,
            },
        )
        assert response.status_code == 201, response.text
        customer.id = response.json()["id"]
        return customer

    def login(
        self, customer: Customer, *, known_browser: bool = True, identifier: str | None = None
    ) -> httpx.Response:
        headers = (
            {BROWSER_HEADER: customer.browser_token}
            if known_browser and customer.browser_token
            else {}
        )
        return self.call(
            "POST",
            "/v1/auth/login",
            json={"identifier": identifier or customer.email, "password": customer.password},
            headers=headers,
        )

    def _session(self, who: Customer | Staff, result: dict[str, Any]) -> str:
        assert result["status"] == "authenticated", result
        token = self.remember("session token", result["session_token"])
        if isinstance(who, Customer) and result.get("browser_token"):
            who.browser_token = self.remember("browser token", result["browser_token"])
        return token

    def sign_in(self, customer: Customer, *, known_browser: bool = True) -> str:
        """A new session token, giving whatever second factor the sign-in asks."""
        response = self.login(customer, known_browser=known_browser)
        assert response.status_code == 200, response.text
        result = response.json()
        if result["status"] == "mfa_required":
            result = self.second_factor(customer, result)
        return self._session(customer, result)

    def second_factor(self, who: Customer | Staff, result: dict[str, Any]) -> dict[str, Any]:
        ticket = self.remember("login ticket", result["ticket"])
        if who.totp is not None and "totp" in result["methods"]:
            body = {"ticket": ticket, "method": "totp", "code": who.totp.code()}
        else:
            assert isinstance(who, Customer), result
            assert who.phone is not None, result
            self.approve_on_phone(who.phone, result["confirmation"])
            body = {"ticket": ticket, "method": "device"}
        response = self.call("POST", "/v1/auth/login/second-factor", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def confirmation_view(self, uri: str) -> httpx.Response:
        confirmation_id, nonce = parse_confirmation_uri(uri)
        return self.call(
            "GET", f"/v1/confirmations/{confirmation_id}", headers={NONCE_HEADER: nonce}
        )

    def approve_on_phone(
        self, phone: Phone, confirmation: dict[str, Any], *, approve: bool = True
    ) -> httpx.Response:
        """What the phone does after scanning the QR code: read, show, sign, send."""
        view = self.confirmation_view(confirmation["uri"])
        assert view.status_code == 200, view.text
        confirmation_id, _ = parse_confirmation_uri(confirmation["uri"])
        decision = "approve" if approve else "reject"
        response = self.call(
            "POST",
            f"/v1/confirmations/{confirmation_id}/{decision}",
            json=phone.decision(confirmation["uri"], view.json(), approve=approve),
        )
        assert response.status_code == 200, response.text
        return response

    def step_up(self, who: Customer | Staff, token: str) -> None:
        """Prove a factor again in this session: TOTP when enrolled, else the password."""
        body: dict[str, Any] = (
            {"method": "totp", "code": who.totp.code()}
            if who.totp is not None
            else {"method": "password", "password": who.password}
        )
        response = self.call("POST", "/v1/auth/step-up", token, json=body)
        assert response.status_code == 204, response.text

    def sensitive(
        self,
        who: Customer | Staff,
        token: str,
        method: str,
        path: str,
        *,
        json: Any = None,
    ) -> httpx.Response:
        """A call that may need a step-up: confirm on the phone, or prove a factor, then retry."""
        first = self.call(method, path, token, json=json)
        if first.status_code != 403 or not first.json()["type"].endswith("/step-up-required"):
            return first
        problem = first.json()
        if "confirmation" in problem:
            assert isinstance(who, Customer), problem
            assert who.phone is not None, problem
            self.approve_on_phone(who.phone, problem["confirmation"])
            header = {CONFIRMATION_HEADER: problem["confirmation"]["id"]}
            return self.call(method, path, token, json=json, headers=header)
        self.step_up(who, token)
        return self.call(method, path, token, json=json)

    def enrol_totp(self, who: Customer | Staff, token: str) -> list[str]:
        started = self.call("POST", "/v1/me/totp", token)
        assert started.status_code == 200, started.text
        totp = Totp(self.remember("TOTP secret", started.json()["secret"]))
        confirmed = self.call("POST", "/v1/me/totp/confirm", token, json={"code": totp.code()})
        assert confirmed.status_code == 200, confirmed.text
        codes: list[str] = confirmed.json()["recovery_codes"]
        for code in codes:
            self.remember("recovery code", code)
        who.totp = totp
        who.recovery_codes = list(codes)
        return codes

    def bind_phone(self, customer: Customer, token: str, phone: Phone | None = None) -> Phone:
        """Bind a (new) phone, stepping up or confirming on the bound phone as asked."""
        phone = phone or Phone()
        response = self.sensitive(
            customer,
            token,
            "POST",
            "/v1/me/devices",
            json={"name": "e2e phone", "public_key": phone.public_key},
        )
        assert response.status_code == 201, response.text
        phone.device_id = response.json()["id"]
        customer.phone = customer.phone or phone
        return phone

    def register_passkey(self, who: Customer | Staff, token: str) -> SoftPasskey:
        options = self.call("POST", "/v1/me/passkeys/options", token)
        assert options.status_code == 200, options.text
        passkey = SoftPasskey()
        response = self.call(
            "POST",
            "/v1/me/passkeys",
            token,
            json={
                "ceremony_id": options.json()["ceremony_id"],
                "response": passkey.registration(options.json()["options"]),
                "name": "e2e passkey",
            },
        )
        assert response.status_code == 201, response.text
        passkey.passkey_id = response.json()["id"]
        who.passkey = passkey
        return passkey

    # --- staff ----------------------------------------------------------------------------

    def new_staff(self, prefix: str) -> Staff:
        staff = Staff(
            username=f"{prefix}-{secrets.token_hex(4)}",
            name=f"Staff {unique_name()}",
            password=new_password(),
        )
        self.remember("staff name", staff.name)
        self.remember("staff password", staff.password)
        return staff

    def create_admin(self, prefix: str = "admin") -> Staff:
        """An admin made by the operator at the console: ``zhifu staff create``."""
        staff = self.new_staff(prefix)
        out = run_cli(
            self.server.env,
            "staff",
            "create",
            staff.username,
            "--name",
            staff.name,
            "--role",
            "admin",
            "--password-stdin",
            stdin=staff.password + "\n",
        )
        assert f"created staff member {staff.username} (" in out, out
        staff.id = out.split("(", 1)[1].split(")", 1)[0]
        staff.roles = ("admin",)
        return staff

    def create_staff(self, admin_token: str, prefix: str = "staff") -> Staff:
        """A staff member created through the API: no role yet."""
        staff = self.new_staff(prefix)
        response = self.call(
            "POST",
            "/v1/admin/staff",
            admin_token,
            json={"username": staff.username, "name": staff.name, "password": staff.password},
        )
        assert response.status_code == 201, response.text
        assert response.json()["roles"] == []
        staff.id = response.json()["id"]
        return staff

    def staff_sign_in(self, staff: Staff) -> str:
        response = self.call(
            "POST",
            "/v1/staff/login",
            json={"identifier": staff.username, "password": staff.password},
        )
        assert response.status_code == 200, response.text
        result = response.json()
        if result["status"] == "mfa_required":
            result = self.second_factor(staff, result)
        return self._session(staff, result)

    def sign_in_anyone(self, who: Customer | Staff) -> str:
        return self.sign_in(who) if isinstance(who, Customer) else self.staff_sign_in(who)

    def propose_role(self, maker_token: str, staff: Staff, role: str) -> dict[str, Any]:
        response = self.call(
            "POST",
            "/v1/admin/approvals",
            maker_token,
            json={"action": "staff.role.grant", "target": staff.actor, "payload": {"role": role}},
        )
        assert response.status_code == 201, response.text
        proposal: dict[str, Any] = response.json()
        return proposal

    def grant_role(self, maker_token: str, checker_token: str, staff: Staff, role: str) -> None:
        """Four eyes: one admin proposes, another approves."""
        proposal = self.propose_role(maker_token, staff, role)
        response = self.call(
            "POST", f"/v1/admin/approvals/{proposal['id']}/approve", checker_token, json={}
        )
        assert response.status_code == 200, response.text
        staff.roles = (*staff.roles, role)

    # --- partners ---------------------------------------------------------------------------

    def partner_key(self, admin_token: str, algorithm: str) -> PartnerKey:
        body: dict[str, Any] = {
            "partner_name": f"E2E Merchant {secrets.token_hex(3)}",
            "algorithm": algorithm,
            "scopes": ["payments", "merchant"],
        }
        seed = b""
        if algorithm == "ed25519":
            private = Ed25519PrivateKey.generate()
            seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            body["public_key"] = b64(
                private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            )
        response = self.call("POST", "/v1/admin/partner-keys", admin_token, json=body)
        assert response.status_code == 201, response.text
        issued = response.json()
        if algorithm == "hmac-sha256":
            secret = self.remember("partner secret", issued["secret"])
            material = base64.b64decode(secret)
        else:
            assert issued["secret"] is None
            material = seed
        return PartnerKey(issued["key_id"], algorithm, material)

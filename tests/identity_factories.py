"""Test-data factories of the identity context: a settable clock, key rings,
services with a fast password hasher, valid distinct customers, audit contexts,
bound phones and their QR signatures.

Imported directly by the tests (``from identity_factories import ...``).
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from zhifu.identity.access import Principal, SubjectKind
from zhifu.identity.model import confirmation_message, resident_id_check_char
from zhifu.identity.passkeys import RelyingParty
from zhifu.identity.passwords import PasswordHasher
from zhifu.identity.service import (
    US,
    Confirmation,
    ConfirmationView,
    CustomerView,
    IdentityService,
    LoginResult,
    Registration,
)
from zhifu.identity.totp import TOTP_PERIOD_S, totp_code
from zhifu.ops.audit import AuditContext
from zhifu.security.envelope import KeyRing, generate_key_entry

# 2025-06-15T12:00:00Z, a whole TOTP period: codes change exactly when the clock says.
START_US = 1_750_000_000 * US - (1_750_000_000 % TOTP_PERIOD_S) * US
RP = RelyingParty(id="localhost", name="zhifu", origins=("http://localhost:5000",))
PASSWORD = "violet tractor wanders home slowly"
NEW_PASSWORD = "amber kettle sings at dawn"
SOURCE = "203.0.113.7"
USER_AGENT = "pytest-browser/1.0"

_SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周")
_GIVEN = ("小明", "秀英", "建华", "丽娟", "志强", "海燕", "国庆", "晓东", "春梅", "伟")
_serial = itertools.count(1)


class FakeClock:
    """Microseconds since the Unix epoch, moved only by the test."""

    def __init__(self, now_us: int = START_US) -> None:
        self.now_us = now_us
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return self.now_us

    @property
    def now_s(self) -> int:
        return self.now_us // US

    def set(self, now_us: int) -> None:
        with self._lock:
            self.now_us = now_us

    def advance(self, *, seconds: float = 0, us: int = 0) -> int:
        """Move forward by ``seconds`` plus ``us``; returns the new time."""
        with self._lock:
            self.now_us += round(seconds * US) + us
            return self.now_us


# --- key rings and services -------------------------------------------------------


@dataclass(frozen=True)
class RingEntries:
    """Key-ring entries (``id:base64``) that tests recombine into rings."""

    index: str
    keys: dict[str, str]

    def ring(self, *key_ids: str) -> KeyRing:
        """The ring with the blind-index key and ``key_ids`` in order (the first encrypts)."""
        return KeyRing.from_spec(",".join([self.index, *(self.keys[k] for k in key_ids)]))


def ring_entries(*key_ids: str) -> RingEntries:
    return RingEntries(generate_key_entry("index"), {k: generate_key_entry(k) for k in key_ids})


def new_keyring() -> KeyRing:
    """A ring for tests: a fresh blind-index key and one encryption key, ``k1``."""
    return KeyRing.from_spec(f"{generate_key_entry('index')},{generate_key_entry('k1')}")


FAST_HASHER = PasswordHasher(time_cost=1, memory_cost_kib=8, parallelism=1)


def identity_service(
    engine: Engine, clock: FakeClock, keyring: KeyRing | None = None
) -> IdentityService:
    """The service on ``engine`` with a fast argon2id, ``clock`` and the localhost RP."""
    return IdentityService(
        engine,
        keyring or new_keyring(),
        relying_party=RP,
        hasher=FAST_HASHER,
        clock=clock,
    )


# --- customers ---------------------------------------------------------------------


def resident_id(n: int) -> str:
    """A valid resident ID for serial ``n`` (0..999 give distinct numbers)."""
    first_17 = f"11010519900307{n % 1000:03d}"
    return first_17 + resident_id_check_char(first_17)


def registration(n: int | None = None, **overrides: str) -> Registration:
    """Valid details for customer ``n`` (a fresh serial by default); distinct for distinct n."""
    n = next(_serial) if n is None else n
    values = {
        "name": _SURNAMES[n % 10] + _GIVEN[(n // 10) % 10],
        "resident_id": resident_id(n),
        "mobile": f"+86{13800000000 + n}",
        "email": f"customer{n}@example.com",
        "password": PASSWORD,
    }
    values.update(overrides)
    return Registration(**values)


@dataclass(frozen=True)
class Customer:
    view: CustomerView
    registration: Registration

    @property
    def id(self) -> uuid.UUID:
        return self.view.id

    @property
    def mobile(self) -> str:
        return self.registration.mobile

    @property
    def email(self) -> str:
        return self.registration.email

    @property
    def password(self) -> str:
        return self.registration.password


def register(service: IdentityService, n: int | None = None, **overrides: str) -> Customer:
    details = registration(n, **overrides)
    return Customer(service.register_customer(details, ctx()), details)


def ctx(source: str | None = SOURCE, request_id: str | None = None) -> AuditContext:
    """The audit context of one request from ``source``."""
    return AuditContext(source=source, request_id=request_id or uuid.uuid4().hex[:16])


def login(
    service: IdentityService,
    identifier: str,
    password: str = PASSWORD,
    *,
    source: str | None = SOURCE,
    browser_token: str | None = None,
) -> LoginResult:
    return service.login(
        SubjectKind.CUSTOMER,
        identifier,
        password,
        browser_token=browser_token,
        user_agent=USER_AGENT,
        ctx=ctx(source),
    )


def sign_in(
    service: IdentityService, customer: Customer, *, browser_token: str | None = None
) -> tuple[LoginResult, Principal]:
    """A password sign-in that needs no second factor, and its principal."""
    result = login(service, customer.mobile, customer.password, browser_token=browser_token)
    assert result.status == "authenticated", result
    assert result.session_token is not None
    return result, service.authenticate(result.session_token)


def totp_now(secret: str, clock: FakeClock) -> str:
    return totp_code(secret, clock.now_s)


def wrong_totp(secret: str, clock: FakeClock) -> str:
    """A six-digit code that matches no step of the verification window."""
    step = clock.now_s // TOTP_PERIOD_S
    valid = {totp_code(secret, (step + d) * TOTP_PERIOD_S) for d in (-1, 0, 1)}
    return next(c for c in (f"{i:06d}" for i in range(1_000_000)) if c not in valid)


# --- phones and QR confirmations ------------------------------------------------------


@dataclass(frozen=True)
class Phone:
    """A customer's phone: an Ed25519 key pair."""

    private_key: Ed25519PrivateKey

    @classmethod
    def new(cls) -> Phone:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.private_key.public_key().public_bytes_raw()).decode()


def scan(confirmation: Confirmation | dict[str, Any]) -> tuple[uuid.UUID, str]:
    """The (challenge id, nonce) a phone reads from the QR code's URI."""
    uri = confirmation.uri if isinstance(confirmation, Confirmation) else confirmation["uri"]
    query = parse_qs(urlsplit(uri).query)
    return uuid.UUID(query["id"][0]), query["n"][0]


def sign_confirmation(
    private_key: Ed25519PrivateKey, view: ConfirmationView, nonce: str, *, approve: bool = True
) -> str:
    """The base64 signature a phone sends to approve (or reject) ``view``."""
    message = confirmation_message(view.id.bytes, nonce, view.action, view.binding)
    if not approve:
        message = b"reject|" + message
    return base64.b64encode(private_key.sign(message)).decode()


def decide(
    service: IdentityService,
    phone: Phone,
    device_id: uuid.UUID,
    confirmation: Confirmation | dict[str, Any],
    *,
    approve: bool = True,
) -> ConfirmationView:
    """The phone scans ``confirmation``, shows it, and approves or rejects it."""
    challenge_id, nonce = scan(confirmation)
    view = service.confirmation(challenge_id, nonce)
    signature = sign_confirmation(phone.private_key, view, nonce, approve=approve)
    return service.decide_confirmation(
        challenge_id, nonce, device_id, signature, approve=approve, ctx=ctx()
    )


# --- passkey fixtures -------------------------------------------------------------------


def passkey_fixtures() -> ModuleType:
    """``tests/unit/passkey_fixtures.py`` (real authenticator responses), from any tier."""
    name = "passkey_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).parent / "unit" / "passkey_fixtures.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

"""The identity use cases on SQLite and PostgreSQL: registration, sign-in and
throttling, sessions, TOTP, QR confirmations on a bound phone, passkeys (real
authenticator responses), key rotation, and personal data at rest.

Every test runs on both databases through the ``engine`` fixture, with a fast
argon2id and a settable clock. The ``service`` fixture checks, after each test,
that the audit trail (checkpointed and signed) still verifies.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from identity_factories import (
    NEW_PASSWORD,
    PASSWORD,
    SOURCE,
    USER_AGENT,
    Customer,
    FakeClock,
    Phone,
    ctx,
    decide,
    identity_service,
    login,
    new_keyring,
    passkey_fixtures,
    register,
    registration,
    ring_entries,
    scan,
    sign_confirmation,
    sign_in,
    totp_now,
    wrong_totp,
)
from sqlalchemy import Connection, Engine, func, insert, inspect, select, text, update

from zhifu.identity.access import STEP_UP_FRESH_S, Factor, Principal, SubjectKind
from zhifu.identity.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ChallengeError,
    IdentityError,
    InvalidCodeError,
    InvalidEmailError,
    InvalidInputError,
    InvalidMobileError,
    InvalidNameError,
    InvalidResidentIdError,
    NotFoundError,
    SessionError,
    StateError,
    StepUpRequiredError,
    ThrottledError,
    WeakPasswordError,
)
from zhifu.identity.model import mask_resident_id
from zhifu.identity.passkeys import PasskeyError, PasskeyFailure
from zhifu.identity.service import (
    ABSOLUTE_TIMEOUT_S,
    CONFIRMATION_TTL_S,
    DEVICE_NAME_CHARS_MAX,
    DEVICES_PER_CUSTOMER_MAX,
    IDLE_TIMEOUT_S,
    LAST_SEEN_GRANULARITY_S,
    LOGIN_TICKET_ATTEMPTS_MAX,
    LOGIN_TICKET_TTL_S,
    PASSKEY_CEREMONY_TTL_S,
    SESSIONS_PER_SUBJECT_MAX,
    US,
    DeviceView,
    IdentityService,
    LoginResult,
)
from zhifu.identity.throttle import RULES, ThrottleScope
from zhifu.identity.totp import RECOVERY_CODE_COUNT, TOTP_PERIOD_S
from zhifu.ops.audit import AuditRecord, AuditTrail, system_context
from zhifu.security.rotation import ENCRYPTED_COLUMNS, rotate
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import (
    audit_events,
    identity_challenges,
    identity_customers,
    identity_passkeys,
    identity_sessions,
    identity_throttle,
    identity_totp,
)
from zhifu.store.uow import run_in_transaction

CUSTOMER = SubjectKind.CUSTOMER
PAIR = RULES[ThrottleScope.PAIR]
ACCOUNT = RULES[ThrottleScope.ACCOUNT]
PER_SOURCE = RULES[ThrottleScope.SOURCE]
IDLE_US = IDLE_TIMEOUT_S[CUSTOMER] * US
WRONG_PASSWORD = "not the password at all, sorry"
PF = passkey_fixtures()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(engine: Engine, clock: FakeClock, signer: Ed25519Signer) -> Iterator[IdentityService]:
    yield identity_service(engine, clock)
    # Whatever the test did, the trail is whole: checkpoint it, then verify everything.
    trail = AuditTrail(engine, signer)
    trail.checkpoint()
    report = trail.verify({signer.key_id: signer.public_key_bytes})
    assert report.ok, report.as_dict()


# --- helpers ---------------------------------------------------------------------------


def in_tx(engine: Engine, work: Callable[[Connection], Any]) -> Any:
    return run_in_transaction(engine, work)


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows of every table: proof that a refused call wrote nothing."""
    names = [n for n in inspect(engine).get_table_names() if n != "alembic_version"]
    with engine.connect() as connection:
        return {
            name: int(connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one())
            for name in names
        }


def events(engine: Engine, signer: Ed25519Signer, prefix: str = "identity.") -> list[AuditRecord]:
    """Audit events under ``prefix``, oldest first."""
    return list(reversed(AuditTrail(engine, signer).list(1000, action_prefix=prefix)))


def complete(
    service: IdentityService, ticket: str | None, method: str, code: str | None
) -> LoginResult:
    assert ticket is not None
    return service.complete_login(ticket, method, code, user_agent=USER_AGENT, ctx=ctx())


def authenticate(service: IdentityService, result: LoginResult) -> Principal:
    assert result.status == "authenticated" and result.session_token is not None
    return service.authenticate(result.session_token)


def fail(service: IdentityService, identifier: str, source: str | None, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(AuthenticationError):
            login(service, identifier, WRONG_PASSWORD, source=source)


def throttled(service: IdentityService, identifier: str, **kwargs: Any) -> int:
    """The retry delay of a sign-in refused by the throttle (with the right password)."""
    with pytest.raises(ThrottledError) as caught:
        login(service, identifier, PASSWORD, **kwargs)
    assert caught.value.headers == {"Retry-After": str(caught.value.retry_after_s)}
    return caught.value.retry_after_s


def enrol_totp(
    service: IdentityService, principal: Principal, clock: FakeClock
) -> tuple[str, list[str]]:
    """TOTP set up; the clock moved on one period, so the next code is fresh."""
    enrolment = service.start_totp(principal, ctx())
    codes = service.confirm_totp(principal, totp_now(enrolment.secret, clock), ctx())
    clock.advance(seconds=TOTP_PERIOD_S)
    return enrolment.secret, codes


def totp_customer(
    service: IdentityService, clock: FakeClock
) -> tuple[Customer, Principal, str, list[str]]:
    customer = register(service)
    _, principal = sign_in(service, customer)
    secret, codes = enrol_totp(service, principal, clock)
    return customer, principal, secret, codes


def require(
    service: IdentityService,
    principal: Principal,
    action: str,
    details: dict[str, Any],
    *,
    confirmation_id: uuid.UUID | None = None,
    **kwargs: Any,
) -> Factor:
    return service.require_step_up(
        principal,
        action,
        details,
        confirmation_id=confirmation_id,
        summary=f"Confirm {action}",
        ctx=ctx(),
        **kwargs,
    )


def step_up_refused(
    service: IdentityService, principal: Principal, action: str, details: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    with pytest.raises(StepUpRequiredError) as caught:
        require(service, principal, action, details, **kw)
    return caught.value.extra


def bind_phone(
    service: IdentityService, customer: Customer
) -> tuple[LoginResult, Principal, Phone, DeviceView]:
    """Sign in (password only), step up with the password, bind a new phone."""
    first, principal = sign_in(service, customer)
    service.step_up(principal, "password", password=customer.password, ctx=ctx())
    phone = Phone.new()
    details = {"public_key": phone.public_key_b64}
    assert require(service, principal, "identity.device.bind", details) is Factor.PASSWORD
    device = service.bind_device(principal, "My phone", phone.public_key_b64, ctx())
    return first, principal, phone, device


def set_challenge(engine: Engine, ceremony_id: uuid.UUID, challenge: bytes) -> None:
    """Make a passkey ceremony expect the challenge a recorded authenticator answered."""
    payload = json.dumps({"challenge": base64.b64encode(challenge).decode()})
    in_tx(
        engine,
        lambda c: c.execute(
            update(identity_challenges)
            .where(identity_challenges.c.id == ceremony_id)
            .values(payload=payload)
        ),
    )


def add_passkey(
    engine: Engine, customer_id: uuid.UUID, fixture: Any, sign_count: int | None = None
) -> uuid.UUID:
    passkey_id = uuid.uuid4()
    values = {
        "id": passkey_id,
        "subject_kind": "customer",
        "subject_id": customer_id,
        "credential_id": fixture.credential_id,
        "public_key": fixture.public_key,
        "sign_count": fixture.stored_sign_count if sign_count is None else sign_count,
        "aaguid": "00000000-0000-0000-0000-000000000000",
        "backed_up": 0,
        "transports": "internal",
        "name": "phone",
        "created_ts": 1,
    }
    in_tx(engine, lambda c: c.execute(insert(identity_passkeys).values(**values)))
    return passkey_id


def passkey_sign_count(engine: Engine, credential_id: bytes) -> int:
    with engine.connect() as connection:
        query = select(identity_passkeys.c.sign_count).where(
            identity_passkeys.c.credential_id == credential_id
        )
        return int(connection.execute(query).scalar_one())


def passkey_login(
    service: IdentityService, engine: Engine, fixture: Any, **kwargs: Any
) -> LoginResult:
    ceremony_id, _ = service.passkey_login_options()
    set_challenge(engine, ceremony_id, fixture.challenge)
    return service.login_with_passkey(
        ceremony_id, fixture.response, browser_token=None, user_agent=USER_AGENT, ctx=ctx()
    )


# --- registration ---------------------------------------------------------------------


def test_register_returns_a_masked_view(service: IdentityService, clock: FakeClock) -> None:
    details = registration()
    view = service.register_customer(details, ctx())
    national = details.mobile.removeprefix("+86")
    assert view.name == details.name
    assert view.resident_id_masked == mask_resident_id(details.resident_id)
    assert view.resident_id_masked == details.resident_id[:6] + "*" * 10 + details.resident_id[-2:]
    assert view.mobile_masked == f"+86 {national[:3]}****{national[-4:]}"
    assert view.email_masked == "c***@example.com"
    assert (view.status, view.totp_enabled, view.passkeys, view.devices) == ("active", False, 0, 0)
    assert view.created_ts == clock.now_us
    assert service.customer(view.id) == view
    for secret in (details.resident_id, national, details.email, details.password):
        assert secret not in repr(view)
    assert details.password not in repr(details)


def test_registration_is_audited(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    (event,) = events(engine, signer, "identity.customer.register")
    assert event.actor == f"customer:{customer.id}"
    assert (event.outcome, event.role, event.source) == ("ok", "customer", SOURCE)
    assert event.details == {}


def _full_width(text_: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text_)


DUPLICATE_FORMS: list[tuple[str, Callable[[str], str]]] = [
    ("resident_id", lambda r: f"  {r}  "),
    ("resident_id", _full_width),
    ("mobile", lambda m: m),
    ("mobile", lambda m: m.removeprefix("+86")),
    ("mobile", lambda m: f"{m[3:6]} {m[6:10]} {m[10:]}"),
    ("mobile", lambda m: f"+86 {m[3:6]}-{m[6:10]}-{m[10:]}"),
    ("mobile", lambda m: "0086" + m.removeprefix("+86")),
    ("mobile", lambda m: "86" + m.removeprefix("+86")),
    ("mobile", lambda m: _full_width(m.removeprefix("+86"))),
    ("email", lambda e: e),
    ("email", lambda e: e.replace("example.com", "EXAMPLE.Com")),
    ("email", lambda e: f" {e}\t"),
]


@pytest.mark.parametrize(
    ("field", "form"), DUPLICATE_FORMS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(DUPLICATE_FORMS)]
)
def test_duplicates_in_any_equivalent_form_are_refused_and_write_nothing(
    service: IdentityService, engine: Engine, field: str, form: Callable[[str], str]
) -> None:
    first = register(service)
    before = row_counts(engine)
    duplicate = registration(**{field: form(getattr(first.registration, field))})
    with pytest.raises(AlreadyExistsError) as caught:
        service.register_customer(duplicate, ctx())
    assert caught.value.code == "already_exists"
    assert row_counts(engine) == before


def _with_wrong_check_char(details: Any) -> dict[str, str]:
    number = details.resident_id
    return {"resident_id": number[:-1] + ("0" if number[-1] != "0" else "1")}


INVALID: list[tuple[Callable[[Any], dict[str, str]], type[IdentityError]]] = [
    (_with_wrong_check_char, InvalidResidentIdError),
    (lambda d: {"resident_id": d.resident_id[:-1]}, InvalidResidentIdError),
    (lambda d: {"resident_id": "99" + d.resident_id[2:]}, InvalidResidentIdError),
    (lambda d: {"mobile": "12800000000"}, InvalidMobileError),
    (lambda d: {"mobile": "+86 138"}, InvalidMobileError),
    (lambda d: {"mobile": "1" * 33}, InvalidMobileError),
    (lambda d: {"email": "customer@@example.com"}, InvalidEmailError),
    (lambda d: {"email": "customer@localhost"}, InvalidEmailError),
    (lambda d: {"email": "x" * 65 + "@example.com"}, InvalidEmailError),
    (lambda d: {"name": "王小明2"}, InvalidNameError),
    (lambda d: {"name": "   "}, InvalidNameError),
    (lambda d: {"name": "王" * 65}, InvalidNameError),
    (lambda d: {"password": "fourteen chars"}, WeakPasswordError),
    (lambda d: {"password": "x" * 129}, WeakPasswordError),
    (lambda d: {"password": "abcdefghijklmnopq"}, WeakPasswordError),
    (lambda d: {"password": f"call me on {d.mobile[3:]} please"}, WeakPasswordError),
    (lambda d: {"password": f"{d.email.split('@')[0]} loves tea"}, WeakPasswordError),
]


@pytest.mark.parametrize(
    ("change", "error"), INVALID, ids=[f"{e.__name__}-{i}" for i, (_, e) in enumerate(INVALID)]
)
def test_invalid_input_raises_its_typed_error_and_writes_nothing(
    service: IdentityService,
    engine: Engine,
    change: Callable[[Any], dict[str, str]],
    error: type[IdentityError],
) -> None:
    valid = registration()
    before = row_counts(engine)
    with pytest.raises(error):
        service.register_customer(dataclasses.replace(valid, **change(valid)), ctx())
    assert row_counts(engine) == before
    # The same details, made valid, register.
    assert service.register_customer(valid, ctx()).status == "active"


def test_password_of_15_characters_is_enough_and_14_is_not(service: IdentityService) -> None:
    with pytest.raises(WeakPasswordError):
        service.register_customer(registration(password="amber kettle t"), ctx())
    customer = register(service, password="amber kettle ta")
    assert login(service, customer.mobile, "amber kettle ta").status == "authenticated"


def _stored_text_and_blobs(engine: Engine) -> Iterator[tuple[str, str, bytes]]:
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                for column, value in row._mapping.items():
                    if isinstance(value, str):
                        yield table, column, value.encode("utf-8")
                    elif isinstance(value, bytes | bytearray | memoryview):
                        yield table, column, bytes(value)


def test_personal_data_is_never_stored_in_clear(
    service: IdentityService, engine: Engine, clock: FakeClock
) -> None:
    customers = [register(service) for _ in range(3)]
    for customer in customers:
        sign_in(service, customer)
        fail(service, customer.email, SOURCE)
    _, principal = sign_in(service, customers[0])
    enrol_totp(service, principal, clock)
    _, principal = sign_in(service, customers[1])
    service.change_mobile(principal, "+8613912345678", ctx())
    needles = ["13912345678"]
    for customer in customers:
        details = customer.registration
        national = details.mobile.removeprefix("+86")
        needles += [details.name, details.resident_id, national, details.email]
        needles += [details.email.split("@")[0] + "@", details.password]
    encoded = [n.encode("utf-8") for n in needles]
    # What may be stored: the masked number in the audit trail. The scans must find it.
    masked = b"139****5678"
    found_masked = False
    for table, column, value in _stored_text_and_blobs(engine):
        found_masked = found_masked or masked in value
        for needle in encoded:
            assert needle not in value, f"{needle.decode()!r} found in {table}.{column}"
    assert found_masked
    if engine.dialect.name != "sqlite":
        return
    # The file itself, after the write-ahead log is folded in.
    path = Path(str(engine.url.database))
    engine.dispose()
    raw = sqlite3.connect(path)
    try:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
    data = b"".join(p.read_bytes() for p in files)
    assert masked in data
    for needle in encoded:
        assert needle not in data, f"{needle.decode()!r} found in the SQLite file"


# --- sign-in --------------------------------------------------------------------------


def test_right_password_signs_in_with_a_session_and_a_browser_token(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    result = login(service, customer.mobile)
    assert result.status == "authenticated"
    assert result.session_token is not None and result.session_token.startswith("zs_")
    assert result.browser_token is not None and result.browser_token.startswith("zb_")
    assert result.expires_ts == clock.now_us + ABSOLUTE_TIMEOUT_S[CUSTOMER] * US
    assert result.ticket is None and result.methods == ()
    principal = authenticate(service, result)
    assert principal.kind == "customer" and principal.subject_id == customer.id
    assert principal.session_id == result.session_id
    assert principal.factors == frozenset({Factor.PASSWORD})
    assert service.profile(principal).id == customer.id


@pytest.mark.parametrize(
    "form",
    [
        lambda c: c.email,
        lambda c: c.email.upper().replace("CUSTOMER", "customer"),
        lambda c: c.mobile.removeprefix("+86"),
        lambda c: f" {c.mobile[3:6]} {c.mobile[6:10]} {c.mobile[10:]} ",
    ],
)
def test_sign_in_by_mobile_or_email_in_any_form(
    service: IdentityService, form: Callable[[Customer], str]
) -> None:
    customer = register(service)
    result = login(service, form(customer))
    assert authenticate(service, result).subject_id == customer.id


def test_wrong_password_and_unknown_account_give_the_same_answer(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    answers = []
    for identifier in (customer.mobile, "+8613700000000", "nobody@example.com", "???"):
        with pytest.raises(AuthenticationError) as caught:
            login(service, identifier, WRONG_PASSWORD)
        answers.append((type(caught.value), str(caught.value), caught.value.code))
    with pytest.raises(AuthenticationError) as caught:
        login(service, "+8613700000000", PASSWORD)
    answers.append((type(caught.value), str(caught.value), caught.value.code))
    assert len(set(answers)) == 1
    assert answers[0][2] == "invalid_credentials"
    denied = events(engine, signer, "identity.customer.login")
    assert [e.outcome for e in denied] == ["denied"] * 5
    assert all(e.details == {"reason": "invalid_credentials"} for e in denied)
    assert denied[0].target == f"customer:{customer.id}"
    assert [e.target for e in denied[1:]] == [None] * 4
    assert all(e.source == SOURCE for e in denied)


def test_a_disabled_customer_is_refused_and_signed_out(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    session, _ = sign_in(service, customer)
    disabled = service.set_customer_status(customer.id, "disabled", system_context())
    assert disabled.status == "disabled"
    with pytest.raises(SessionError):
        authenticate(service, session)
    with pytest.raises(AuthenticationError) as caught:
        login(service, customer.mobile)
    assert str(caught.value) == "the sign-in details are not correct"
    # Enabled again, the password works; the old session stays ended.
    service.set_customer_status(customer.id, "active", system_context())
    assert login(service, customer.mobile).status == "authenticated"
    with pytest.raises(SessionError):
        authenticate(service, session)
    actions = [e.action for e in events(engine, signer, "identity.customer.")]
    assert "identity.customer.disable" in actions and "identity.customer.enable" in actions
    with pytest.raises(InvalidInputError):
        service.set_customer_status(customer.id, "deleted", system_context())  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        service.set_customer_status(uuid.uuid4(), "disabled", system_context())


# --- brute force and throttling ----------------------------------------------------------


def test_pair_at_its_free_failures_the_right_password_still_works(
    service: IdentityService,
) -> None:
    customer = register(service)
    fail(service, customer.mobile, SOURCE, PAIR.free_failures)
    assert login(service, customer.mobile).status == "authenticated"


def test_pair_one_past_its_free_failures_blocks_even_the_right_password(
    service: IdentityService, clock: FakeClock, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    fail(service, customer.mobile, SOURCE, PAIR.free_failures + 1)
    assert throttled(service, customer.mobile) == 1
    clock.advance(us=US - 1)
    assert throttled(service, customer.mobile) == 1
    clock.advance(us=1)
    # The block ends by itself: never a lock-out.
    assert login(service, customer.mobile).status == "authenticated"
    refusals = [
        e
        for e in events(engine, signer, "identity.customer.login")
        if e.details.get("reason") == "throttled"
    ]
    assert len(refusals) == 2 and all(e.outcome == "denied" for e in refusals)


def test_delays_double_and_blocked_attempts_do_not_count(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    fail(service, customer.mobile, SOURCE, PAIR.free_failures)
    for expected_s in (1, 2, 4, 8):
        fail(service, customer.mobile, SOURCE)
        for _ in range(3):
            assert throttled(service, customer.mobile) == expected_s
        clock.advance(seconds=expected_s - 0.5)
        assert throttled(service, customer.mobile) == 1
        clock.advance(seconds=0.5)
    assert login(service, customer.mobile).status == "authenticated"


def test_every_form_of_one_identifier_shares_its_counters(service: IdentityService) -> None:
    customer = register(service)
    national = customer.mobile.removeprefix("+86")
    for form in (customer.mobile, national, f"{national[:3]} {national[3:7]} {national[7:]}"):
        fail(service, form, SOURCE, 2)
    assert throttled(service, national) == 1


def test_unknown_accounts_are_throttled_like_real_ones(service: IdentityService) -> None:
    fail(service, "ghost@example.com", SOURCE, PAIR.free_failures + 1)
    with pytest.raises(ThrottledError) as caught:
        login(service, "ghost@example.com", WRONG_PASSWORD)
    assert caught.value.retry_after_s == 1


def test_another_address_can_try_after_the_pair_limit_until_the_account_limit(
    service: IdentityService,
) -> None:
    customer = register(service)
    fail(service, customer.mobile, "198.51.100.1", PAIR.free_failures + 1)
    assert throttled(service, customer.mobile, source="198.51.100.1") == 1
    # Another address is not held back by the first one's pair key...
    fail(service, customer.mobile, "198.51.100.2", ACCOUNT.free_failures - PAIR.free_failures - 1)
    # ...and with the account key at its free failures, a new address still gets in.
    assert login(service, customer.mobile, source="198.51.100.3").status == "authenticated"


def test_account_key_one_past_its_free_failures_blocks_new_browsers_everywhere(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    for i in range(ACCOUNT.free_failures + 1):  # one failure from each of many addresses
        fail(service, customer.mobile, f"198.51.100.{i + 1}")
    assert throttled(service, customer.mobile, source="192.0.2.99") == 1
    clock.advance(seconds=1)
    assert login(service, customer.mobile, source="192.0.2.99").status == "authenticated"


def test_a_known_browser_is_not_blocked_by_the_account_key(
    service: IdentityService,
) -> None:
    customer = register(service)
    other = register(service)
    usual, _ = sign_in(service, customer)
    others_browser, _ = sign_in(service, other)
    # An attacker with many addresses hammers the account...
    for i in range(ACCOUNT.free_failures + 1):
        fail(service, customer.mobile, f"198.51.100.{i + 1}")
    # ...which blocks new browsers,
    assert throttled(service, customer.mobile, source="192.0.2.50") > 0
    # a made-up or another customer's browser token is no help,
    for token in ("zb_" + "A" * 43, others_browser.browser_token):
        assert throttled(service, customer.mobile, source="192.0.2.50", browser_token=token) > 0
    # but the owner's usual browser signs in, from a new address too.
    result = login(service, customer.mobile, source="192.0.2.50", browser_token=usual.browser_token)
    assert result.status == "authenticated"
    assert result.browser_token is None  # a known browser keeps its token
    # The known browser skips only the account key: its own pair key still holds.
    for _ in range(PAIR.free_failures + 1):
        with pytest.raises(AuthenticationError):
            login(service, customer.mobile, WRONG_PASSWORD, browser_token=usual.browser_token)
    assert throttled(service, customer.mobile, browser_token=usual.browser_token) == 1


def test_one_address_trying_many_accounts_is_slowed(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    attacker = "198.51.100.66"
    for i in range(PER_SOURCE.free_failures):
        identifier = f"nobody{i}@example.com" if i % 2 else f"not an identifier {i}"
        fail(service, identifier, attacker)
    # At the limit the address may still try, and the right password works...
    assert login(service, customer.mobile, source=attacker).status == "authenticated"
    # ...but a success does not clear the address's count: one more failure blocks it.
    fail(service, "someone@example.com", attacker)
    assert throttled(service, customer.mobile, source=attacker) == 1
    assert throttled(service, "+8613700000000", source=attacker) == 1
    # Other addresses are not affected.
    assert login(service, customer.mobile, source="192.0.2.1").status == "authenticated"
    clock.advance(seconds=1)
    assert login(service, customer.mobile, source=attacker).status == "authenticated"


def test_a_success_resets_the_pair_and_account_counters(
    service: IdentityService, engine: Engine
) -> None:
    customer = register(service)
    fail(service, customer.mobile, SOURCE, PAIR.free_failures)
    assert login(service, customer.mobile).status == "authenticated"
    fail(service, customer.mobile, SOURCE, PAIR.free_failures)
    assert login(service, customer.mobile).status == "authenticated"
    with engine.connect() as connection:
        scopes = connection.execute(select(identity_throttle.c.scope)).scalars().all()
    assert scopes == ["source"]  # only the address's count stays


def test_prune_forgets_old_counters_and_challenges(
    service: IdentityService, clock: FakeClock, engine: Engine
) -> None:
    customer = register(service)
    fail(service, customer.mobile, SOURCE, 2)
    _, principal = sign_in(service, customer)
    service.passkey_registration_options(principal)
    assert service.prune(older_than_s=3600) == 0
    clock.advance(seconds=3600 + PASSKEY_CEREMONY_TTL_S + 1)
    # The sign-in cleared the pair and account counts: the address's count and the ceremony.
    assert service.prune(older_than_s=3600) == 2
    assert row_counts(engine)["identity_throttle"] == 0


# --- sessions -----------------------------------------------------------------------------


def test_idle_timeout(service: IdentityService, clock: FakeClock) -> None:
    customer = register(service)
    stays, _ = sign_in(service, customer)
    ends, _ = sign_in(service, customer)
    start = clock.now_us
    clock.set(start + IDLE_US - 1)
    assert authenticate(service, stays).subject_id == customer.id
    clock.set(start + IDLE_US)
    with pytest.raises(SessionError, match="expired"):
        authenticate(service, ends)
    # The one used just before its end was refreshed, and lives on.
    clock.set(start + 2 * IDLE_US - 2)
    assert authenticate(service, stays).subject_id == customer.id


def test_last_use_is_written_only_past_the_granularity(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    result, principal = sign_in(service, customer)
    start = clock.now_us

    def last_seen() -> int:
        (view,) = service.list_sessions(principal)
        assert view.current
        return view.last_seen_ts

    clock.set(start + LAST_SEEN_GRANULARITY_S * US - 1)
    authenticate(service, result)
    assert last_seen() == start
    # Not refreshed: the idle clock still runs from the sign-in.
    clock.set(start + IDLE_US)
    with pytest.raises(SessionError):
        authenticate(service, result)

    other, principal = sign_in(service, customer)
    start = clock.now_us
    clock.set(start + LAST_SEEN_GRANULARITY_S * US)
    authenticate(service, other)
    (view,) = service.list_sessions(principal)
    assert view.last_seen_ts == clock.now_us
    assert view.idle_expires_ts == clock.now_us + IDLE_US
    clock.set(start + IDLE_US + 1)
    assert authenticate(service, other).session_id == principal.session_id


def test_absolute_timeout_ends_even_a_busy_session(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    result, _ = sign_in(service, customer)
    assert result.expires_ts is not None
    while clock.now_us + 10 * 60 * US < result.expires_ts:
        clock.advance(seconds=10 * 60)
        authenticate(service, result)
    clock.set(result.expires_ts - 1)
    authenticate(service, result)
    clock.set(result.expires_ts)
    with pytest.raises(SessionError):
        authenticate(service, result)


@pytest.mark.parametrize("token", ["", "zs_", "zs_" + "A" * 43, "zt_" + "A" * 43, "zs_" + "A" * 62])
def test_unknown_or_malformed_tokens_are_refused(service: IdentityService, token: str) -> None:
    with pytest.raises(SessionError):
        service.authenticate(token)


def test_each_sign_in_makes_a_new_session_token(service: IdentityService) -> None:
    customer = register(service)
    first, _ = sign_in(service, customer)
    second, _ = sign_in(service, customer, browser_token=first.browser_token)
    assert first.session_token != second.session_token
    assert first.session_id != second.session_id
    assert second.browser_token is None  # the same browser, known already
    assert authenticate(service, first).session_id != authenticate(service, second).session_id


def test_logout_ends_one_session(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    first, principal = sign_in(service, customer)
    second, _ = sign_in(service, customer)
    service.logout(principal, ctx())
    with pytest.raises(SessionError, match="ended"):
        authenticate(service, first)
    assert authenticate(service, second).subject_id == customer.id
    with pytest.raises(NotFoundError):
        service.logout(principal, ctx())  # a revoked session cannot end twice
    # Another of one's own sessions, by id; never somebody else's.
    stranger = register(service)
    _, strangers = sign_in(service, stranger)
    with pytest.raises(NotFoundError):
        service.logout(strangers, ctx(), session_id=second.session_id)
    assert authenticate(service, second).subject_id == customer.id
    _, current = sign_in(service, customer)
    service.logout(current, ctx(), session_id=second.session_id)
    with pytest.raises(SessionError):
        authenticate(service, second)
    assert len(events(engine, signer, "identity.session.revoke")) == 2


def test_logout_everywhere(service: IdentityService) -> None:
    customer = register(service)
    results = [sign_in(service, customer)[0] for _ in range(3)]
    bystander, _ = sign_in(service, register(service))
    principal = authenticate(service, results[0])
    assert service.logout_everywhere(principal, ctx()) == 3
    for result in results:
        with pytest.raises(SessionError):
            authenticate(service, result)
    assert authenticate(service, bystander)
    assert service.list_sessions(principal) == []


def test_change_password_ends_the_other_sessions_and_keeps_this_one(
    service: IdentityService,
) -> None:
    customer = register(service)
    current, principal = sign_in(service, customer)
    other, _ = sign_in(service, customer)
    with pytest.raises(AuthenticationError):
        service.change_password(principal, WRONG_PASSWORD, NEW_PASSWORD, ctx())
    with pytest.raises(WeakPasswordError):
        service.change_password(principal, PASSWORD, "too short", ctx())
    assert authenticate(service, other)  # refused changes end nothing
    service.change_password(principal, PASSWORD, NEW_PASSWORD, ctx())
    assert authenticate(service, current).session_id == principal.session_id
    with pytest.raises(SessionError):
        authenticate(service, other)
    with pytest.raises(AuthenticationError):
        login(service, customer.mobile, PASSWORD)
    assert login(service, customer.mobile, NEW_PASSWORD).status == "authenticated"


def test_sessions_per_subject_are_capped(service: IdentityService, clock: FakeClock) -> None:
    customer = register(service)
    results = []
    for _ in range(SESSIONS_PER_SUBJECT_MAX):
        results.append(sign_in(service, customer)[0])
        clock.advance(seconds=1)
    principal = authenticate(service, results[-1])
    assert len(service.list_sessions(principal)) == SESSIONS_PER_SUBJECT_MAX
    for result in results:
        authenticate(service, result)  # all 20 live: at the limit
    newest, _ = sign_in(service, customer)
    with pytest.raises(SessionError):
        authenticate(service, results[0])  # one past: the oldest is signed out
    for result in [*results[1:], newest]:
        authenticate(service, result)
    assert len(service.list_sessions(principal)) == SESSIONS_PER_SUBJECT_MAX


# --- TOTP and recovery codes ----------------------------------------------------------------


def test_totp_enrolment(service: IdentityService, clock: FakeClock) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    with pytest.raises(StateError):
        service.confirm_totp(principal, "123456", ctx())  # nothing started
    enrolment = service.start_totp(principal, ctx())
    assert enrolment.uri.startswith("otpauth://totp/") and enrolment.qr_svg.startswith("<")
    with pytest.raises(InvalidCodeError):
        service.confirm_totp(principal, wrong_totp(enrolment.secret, clock), ctx())
    assert not service.profile(principal).totp_enabled
    # Starting again replaces the unconfirmed secret.
    enrolment = service.start_totp(principal, ctx())
    codes = service.confirm_totp(principal, totp_now(enrolment.secret, clock), ctx())
    assert len(codes) == len(set(codes)) == RECOVERY_CODE_COUNT
    assert service.profile(principal).totp_enabled
    assert service.step_up_factors(principal) == frozenset({Factor.TOTP})
    with pytest.raises(StateError):
        service.start_totp(principal, ctx())
    with pytest.raises(StateError):
        service.confirm_totp(principal, totp_now(enrolment.secret, clock), ctx())


def test_sign_in_needs_the_second_factor_and_a_code_works_once(
    service: IdentityService, clock: FakeClock
) -> None:
    customer, _, secret, _ = totp_customer(service, clock)
    first = login(service, customer.mobile)
    assert first.status == "mfa_required"
    assert first.methods == ("totp", "recovery_code")
    assert first.session_token is None and first.confirmation is None
    assert first.ticket is not None and first.ticket.startswith("zt_")
    with pytest.raises(InvalidInputError):
        complete(service, first.ticket, "device", None)  # not offered
    with pytest.raises(InvalidInputError):
        complete(service, first.ticket, "sms", "123456")
    code = totp_now(secret, clock)
    done = complete(service, first.ticket, "totp", code)
    principal = authenticate(service, done)
    assert principal.factors == frozenset({Factor.PASSWORD, Factor.TOTP})
    with pytest.raises(ChallengeError):
        complete(service, first.ticket, "totp", code)  # the ticket is used
    # The same code on a new sign-in: a replay, refused.
    second = login(service, customer.mobile)
    with pytest.raises(InvalidCodeError):
        complete(service, second.ticket, "totp", code)
    clock.advance(seconds=TOTP_PERIOD_S)
    assert complete(service, second.ticket, "totp", totp_now(secret, clock)).status == (
        "authenticated"
    )


def test_a_code_used_for_step_up_cannot_sign_in(service: IdentityService, clock: FakeClock) -> None:
    customer, principal, secret, _ = totp_customer(service, clock)
    code = totp_now(secret, clock)
    service.step_up(principal, "totp", code=code, ctx=ctx())
    assert require(service, principal, "identity.totp.disable", {}) is Factor.TOTP
    with pytest.raises(InvalidCodeError):
        service.step_up(principal, "totp", code=code, ctx=ctx())
    with pytest.raises(InvalidCodeError):
        complete(service, login(service, customer.mobile).ticket, "totp", code)


def test_two_sign_ins_racing_with_one_code_exactly_one_wins(
    service: IdentityService, clock: FakeClock
) -> None:
    customer, _, secret, _ = totp_customer(service, clock)
    for _ in range(3):
        tickets = [login(service, customer.mobile).ticket for _ in range(2)]
        code = totp_now(secret, clock)
        barrier = threading.Barrier(2)

        def attempt(ticket: str | None, code: str = code, barrier: Any = barrier) -> object:
            barrier.wait()
            try:
                return complete(service, ticket, "totp", code)
            except InvalidCodeError as error:
                return error

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(attempt, tickets))
        winners = [o for o in outcomes if isinstance(o, LoginResult)]
        assert len(winners) == 1, outcomes
        assert sum(isinstance(o, InvalidCodeError) for o in outcomes) == 1
        clock.advance(seconds=TOTP_PERIOD_S)


def test_a_recovery_code_works_once_and_only_once(
    service: IdentityService, clock: FakeClock
) -> None:
    customer, principal, _, codes = totp_customer(service, clock)
    done = complete(service, login(service, customer.mobile).ticket, "recovery_code", codes[0])
    assert authenticate(service, done).factors == frozenset({Factor.PASSWORD, Factor.RECOVERY_CODE})
    ticket = login(service, customer.mobile).ticket
    for typed in (codes[0], codes[0].upper().replace("-", " ")):
        with pytest.raises(InvalidCodeError):
            complete(service, ticket, "recovery_code", typed)
    typed = codes[1].upper().replace("-", "")  # another code, typed loosely
    assert complete(service, ticket, "recovery_code", typed).status == "authenticated"
    # New codes: the old unused ones stop working.
    service.regenerate_recovery_codes(principal, ctx())
    with pytest.raises(InvalidCodeError):
        complete(service, login(service, customer.mobile).ticket, "recovery_code", codes[2])


def test_recovery_codes_are_per_customer(service: IdentityService, clock: FakeClock) -> None:
    _, _, _, codes = totp_customer(service, clock)
    other, _, _, _ = totp_customer(service, clock)
    with pytest.raises(InvalidCodeError):
        complete(service, login(service, other.mobile).ticket, "recovery_code", codes[0])


@pytest.mark.parametrize(
    ("late_us", "accepted"), [(LOGIN_TICKET_TTL_S * US - 1, True), (LOGIN_TICKET_TTL_S * US, False)]
)
def test_a_sign_in_ticket_expires(
    service: IdentityService, clock: FakeClock, late_us: int, accepted: bool
) -> None:
    customer, _, secret, _ = totp_customer(service, clock)
    ticket = login(service, customer.mobile).ticket
    clock.advance(us=late_us)
    if accepted:
        assert complete(service, ticket, "totp", totp_now(secret, clock)).status == "authenticated"
    else:
        with pytest.raises(ChallengeError):
            complete(service, ticket, "totp", totp_now(secret, clock))


@pytest.mark.parametrize("wrong", [LOGIN_TICKET_ATTEMPTS_MAX - 1, LOGIN_TICKET_ATTEMPTS_MAX])
def test_a_sign_in_ticket_allows_a_few_attempts(
    service: IdentityService,
    clock: FakeClock,
    engine: Engine,
    signer: Ed25519Signer,
    wrong: int,
) -> None:
    customer, _, secret, _ = totp_customer(service, clock)
    ticket = login(service, customer.mobile).ticket
    for i in range(wrong):
        with pytest.raises(InvalidCodeError):
            if i % 2:
                complete(service, ticket, "recovery_code", "aaaa-bbbb-cccc-dddd")
            else:
                complete(service, ticket, "totp", wrong_totp(secret, clock))
    right = totp_now(secret, clock)
    if wrong < LOGIN_TICKET_ATTEMPTS_MAX:
        assert complete(service, ticket, "totp", right).status == "authenticated"
    else:
        with pytest.raises(ChallengeError):
            complete(service, ticket, "totp", right)
    denied = events(engine, signer, "identity.login.second_factor")
    assert len(denied) == wrong and all(e.outcome == "denied" for e in denied)


@pytest.mark.parametrize("wrong", [ACCOUNT.free_failures, ACCOUNT.free_failures + 1])
def test_wrong_codes_count_per_customer_across_tickets_and_step_ups(
    service: IdentityService, clock: FakeClock, wrong: int
) -> None:
    customer, principal, secret, codes = totp_customer(service, clock)
    # A stolen password gets new tickets at will; the codes guessed are counted together.
    left = wrong
    while left > 1:
        ticket = login(service, customer.mobile).ticket
        for _ in range(min(left - 1, LOGIN_TICKET_ATTEMPTS_MAX - 1)):
            with pytest.raises(InvalidCodeError):
                complete(service, ticket, "totp", wrong_totp(secret, clock))
            left -= 1
    with pytest.raises(InvalidCodeError):
        service.step_up(principal, "totp", code=wrong_totp(secret, clock), ctx=ctx())
    ticket = login(service, customer.mobile).ticket
    if wrong == ACCOUNT.free_failures:
        assert complete(service, ticket, "totp", totp_now(secret, clock)).status == (
            "authenticated"
        )
        return
    for method, code in (("totp", totp_now(secret, clock)), ("recovery_code", codes[0])):
        with pytest.raises(ThrottledError) as caught:
            complete(service, ticket, method, code)
        assert caught.value.retry_after_s == 1
    with pytest.raises(ThrottledError):
        service.step_up(principal, "totp", code=totp_now(secret, clock), ctx=ctx())
    # Refusals while blocked neither count nor use up the ticket; the block ends by itself.
    clock.advance(seconds=1)
    assert complete(service, ticket, "totp", totp_now(secret, clock)).status == "authenticated"
    # The success cleared the count.
    ticket = login(service, customer.mobile).ticket
    with pytest.raises(InvalidCodeError):
        complete(service, ticket, "totp", wrong_totp(secret, clock))
    assert complete(service, ticket, "recovery_code", codes[0]).status == "authenticated"


def test_a_phone_rejection_is_no_guess(service: IdentityService) -> None:
    customer = register(service)
    _, _, phone, device = bind_phone(service, customer)
    for _ in range(ACCOUNT.free_failures + 1):
        result = login(service, customer.mobile)
        assert result.confirmation is not None
        decide(service, phone, device.id, result.confirmation, approve=False)
        with pytest.raises(ChallengeError):
            complete(service, result.ticket, "device", None)
    result = login(service, customer.mobile)
    assert result.confirmation is not None
    decide(service, phone, device.id, result.confirmation)
    assert complete(service, result.ticket, "device", None).status == "authenticated"


def test_disable_totp(service: IdentityService, clock: FakeClock) -> None:
    customer, principal, _, _ = totp_customer(service, clock)
    service.disable_totp(principal, ctx())
    assert login(service, customer.mobile).status == "authenticated"
    with pytest.raises(NotFoundError):
        service.disable_totp(principal, ctx())
    with pytest.raises(StateError):
        service.regenerate_recovery_codes(principal, ctx())


# --- step-up, phones and QR confirmations ---------------------------------------------------


@pytest.mark.parametrize(
    ("after_us", "fresh"), [(STEP_UP_FRESH_S * US, True), (STEP_UP_FRESH_S * US + 1, False)]
)
def test_password_step_up_stays_fresh_for_step_up_fresh_s(
    service: IdentityService, clock: FakeClock, after_us: int, fresh: bool
) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    action, details = "identity.device.bind", {"public_key": Phone.new().public_key_b64}
    assert service.step_up_factors(principal) == frozenset({Factor.PASSWORD})
    extra = step_up_refused(service, principal, action, details)
    assert extra == {"methods": ["password"], "action": action}  # no phone: no QR code
    with pytest.raises(AuthenticationError):
        service.step_up(principal, "password", password=WRONG_PASSWORD, ctx=ctx())
    step_up_refused(service, principal, action, details)
    service.step_up(principal, "password", password=PASSWORD, ctx=ctx())
    clock.advance(us=after_us)
    if fresh:
        assert require(service, principal, action, details) is Factor.PASSWORD
    else:
        step_up_refused(service, principal, action, details)


def test_step_up_methods(service: IdentityService) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    with pytest.raises(InvalidInputError):
        service.step_up(principal, "device", ctx=ctx())
    with pytest.raises(InvalidCodeError):
        service.step_up(principal, "totp", code="123456", ctx=ctx())  # no TOTP set up
    # A step-up belongs to its session.
    service.step_up(principal, "password", password=PASSWORD, ctx=ctx())
    _, other_session = sign_in(service, customer)
    step_up_refused(service, other_session, "identity.device.bind", {})


def test_binding_a_phone_makes_it_the_step_up_factor(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    assert device.name == "My phone" and device.public_key == phone.public_key_b64
    assert service.devices(principal) == [device]
    assert service.profile(principal).devices == 1
    assert service.step_up_factors(principal) == frozenset({Factor.DEVICE})
    # The password step-up, still fresh, no longer counts: the phone must confirm.
    extra = step_up_refused(service, principal, "identity.device.bind", {"public_key": "x"})
    assert extra["methods"] == ["device"]
    assert extra["confirmation"]["action"] == "identity.device.bind"
    (bound,) = events(engine, signer, "identity.device.bind")
    assert bound.target == f"device:{device.id}"


def test_device_limits(service: IdentityService) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    with pytest.raises(InvalidInputError):
        service.bind_device(
            principal, "x" * (DEVICE_NAME_CHARS_MAX + 1), Phone.new().public_key_b64, ctx()
        )
    with pytest.raises(InvalidInputError):
        service.bind_device(principal, "pho\nne", Phone.new().public_key_b64, ctx())
    with pytest.raises(InvalidInputError):
        service.bind_device(principal, "phone", base64.b64encode(b"k" * 31).decode(), ctx())
    with pytest.raises(InvalidInputError):
        service.bind_device(principal, "phone", "not base64!", ctx())
    phones = [Phone.new() for _ in range(DEVICES_PER_CUSTOMER_MAX + 1)]
    first = service.bind_device(
        principal, "x" * DEVICE_NAME_CHARS_MAX, phones[0].public_key_b64, ctx()
    )
    with pytest.raises(AlreadyExistsError):
        service.bind_device(principal, "again", phones[0].public_key_b64, ctx())
    _, strangers = sign_in(service, register(service))
    with pytest.raises(AlreadyExistsError):
        service.bind_device(strangers, "mine", phones[0].public_key_b64, ctx())
    for i, phone in enumerate(phones[1:DEVICES_PER_CUSTOMER_MAX], 2):
        service.bind_device(principal, f"phone {i}", phone.public_key_b64, ctx())
    with pytest.raises(StateError):
        service.bind_device(principal, "one too many", phones[-1].public_key_b64, ctx())
    # A revoked phone frees its place.
    service.revoke_device(principal, first.id, ctx())
    service.bind_device(principal, "replacement", phones[-1].public_key_b64, ctx())
    assert len(service.devices(principal)) == DEVICES_PER_CUSTOMER_MAX


def test_a_new_browser_must_be_confirmed_on_the_phone(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    usual, _, phone, device = bind_phone(service, customer)
    # The usual browser needs only the password.
    assert login(service, customer.mobile, browser_token=usual.browser_token).status == (
        "authenticated"
    )
    result = login(service, customer.mobile)
    assert result.status == "mfa_required" and result.methods == ("device",)
    assert result.confirmation is not None
    assert result.confirmation.action == "identity.login"
    assert result.confirmation.expires_ts == clock.now_us + CONFIRMATION_TTL_S * US
    # Waiting for the phone: polling more often than the attempt limit keeps the sign-in open.
    for _ in range(LOGIN_TICKET_ATTEMPTS_MAX + 1):
        with pytest.raises(StateError):
            complete(service, result.ticket, "device", None)
    challenge_id, nonce = scan(result.confirmation)
    view = service.confirmation(challenge_id, nonce)
    assert (view.status, view.action, view.summary) == (
        "pending",
        "identity.login",
        "Sign in on a new browser",
    )
    approved = decide(service, phone, device.id, result.confirmation)
    assert approved.status == "approved"
    done = complete(service, result.ticket, "device", None)
    assert done.browser_token is not None
    assert authenticate(service, done).factors == frozenset({Factor.PASSWORD, Factor.DEVICE})
    assert service.devices(authenticate(service, done))[0].last_used_ts == clock.now_us
    # The approval cannot be replayed, nor the confirmation used twice.
    signature = sign_confirmation(phone.private_key, view, nonce)
    with pytest.raises(ChallengeError):
        service.decide_confirmation(
            challenge_id, nonce, device.id, signature, approve=True, ctx=ctx()
        )
    with pytest.raises(ChallengeError):
        complete(service, result.ticket, "device", None)
    assert service.confirmation(challenge_id, nonce).status == "consumed"
    # Nor can a sign-in confirmation confirm an operation.
    principal = authenticate(service, done)
    with pytest.raises(ChallengeError):
        require(
            service,
            principal,
            "identity.login",
            {"ticket": str(challenge_id)},
            confirmation_id=challenge_id,
        )


def test_a_customer_with_totp_and_a_phone_may_use_either(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    usual, principal, phone, device = bind_phone(service, customer)
    secret, _ = enrol_totp(service, principal, clock)
    # With TOTP, even the usual browser needs a second factor; the phone is offered too.
    result = login(service, customer.mobile, browser_token=usual.browser_token)
    assert result.methods == ("totp", "recovery_code", "device")
    assert result.confirmation is not None
    decide(service, phone, device.id, result.confirmation)
    assert complete(service, result.ticket, "device", None).status == "authenticated"
    result = login(service, customer.mobile, browser_token=usual.browser_token)
    assert complete(service, result.ticket, "totp", totp_now(secret, clock)).status == (
        "authenticated"
    )


def test_an_operation_confirmation_confirms_that_operation_once(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    usual, principal, phone, device = bind_phone(service, customer)
    action = "identity.customer.mobile.change"
    new_mobile, other_mobile = "+8613912345678", "+8613912345679"
    extra = step_up_refused(service, principal, action, {"mobile": new_mobile}, device_only=True)
    assert extra["methods"] == ["device"] and extra["action"] == action
    confirmation = extra["confirmation"]
    assert set(confirmation) == {"id", "action", "uri", "qr_svg", "expires_ts"}
    challenge_id, _ = scan(confirmation)
    with pytest.raises(ChallengeError, match="not approved"):
        require(service, principal, action, {"mobile": new_mobile}, confirmation_id=challenge_id)
    decide(service, phone, device.id, confirmation)
    # Approved for one number, it confirms no other, nor another action.
    with pytest.raises(ChallengeError, match="different operation"):
        require(service, principal, action, {"mobile": other_mobile}, confirmation_id=challenge_id)
    with pytest.raises(ChallengeError, match="different operation"):
        require(
            service,
            principal,
            "identity.device.bind",
            {"mobile": new_mobile},
            confirmation_id=challenge_id,
        )
    # Nor does it work for another customer.
    _, strangers = sign_in(service, register(service))
    with pytest.raises(ChallengeError):
        require(service, strangers, action, {"mobile": new_mobile}, confirmation_id=challenge_id)
    assert (
        require(service, principal, action, {"mobile": new_mobile}, confirmation_id=challenge_id)
        is Factor.DEVICE
    )
    with pytest.raises(ChallengeError):
        require(service, principal, action, {"mobile": new_mobile}, confirmation_id=challenge_id)
    view = service.change_mobile(principal, new_mobile, ctx())
    assert view.mobile_masked == "+86 139****5678"
    with pytest.raises(AuthenticationError):
        login(service, customer.mobile, browser_token=usual.browser_token)
    assert login(service, new_mobile, browser_token=usual.browser_token).status == "authenticated"
    (changed,) = events(engine, signer, action)
    assert changed.details == {"mobile": "+86 139****5678"}


def test_two_requests_racing_with_one_confirmation_exactly_one_passes(
    service: IdentityService,
) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    details = {"payee": "吴九"}
    extra = step_up_refused(service, principal, "payments.payee.add", details)
    decide(service, phone, device.id, extra["confirmation"])
    challenge_id, _ = scan(extra["confirmation"])
    barrier = threading.Barrier(2)

    def attempt(_: int) -> object:
        barrier.wait()
        try:
            return require(
                service, principal, "payments.payee.add", details, confirmation_id=challenge_id
            )
        except ChallengeError as error:
            return error

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(attempt, range(2)))
    assert sum(o is Factor.DEVICE for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, ChallengeError) for o in outcomes) == 1, outcomes


def test_change_mobile_refuses_another_customers_number(service: IdentityService) -> None:
    customer = register(service)
    other = register(service)
    _, principal = sign_in(service, customer)
    with pytest.raises(AlreadyExistsError):
        service.change_mobile(principal, other.mobile.removeprefix("+86"), ctx())
    with pytest.raises(InvalidMobileError):
        service.change_mobile(principal, "12345", ctx())
    # One's own number again is no change, and allowed.
    assert service.change_mobile(principal, customer.mobile, ctx()).id == customer.id


@pytest.mark.parametrize(
    ("after_us", "open_"), [(CONFIRMATION_TTL_S * US - 1, True), (CONFIRMATION_TTL_S * US, False)]
)
def test_a_confirmation_expires(
    service: IdentityService, clock: FakeClock, after_us: int, open_: bool
) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    extra = step_up_refused(service, principal, "payments.payee.add", {"payee": "李四"})
    challenge_id, nonce = scan(extra["confirmation"])
    clock.advance(us=after_us)
    if open_:
        assert decide(service, phone, device.id, extra["confirmation"]).status == "approved"
        assert (
            require(
                service,
                principal,
                "payments.payee.add",
                {"payee": "李四"},
                confirmation_id=challenge_id,
            )
            is Factor.DEVICE
        )
    else:
        assert service.confirmation(challenge_id, nonce).status == "expired"
        with pytest.raises(ChallengeError):
            decide(service, phone, device.id, extra["confirmation"])


def test_an_approved_confirmation_still_expires(service: IdentityService, clock: FakeClock) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    details = {"payee": "李四"}
    extra = step_up_refused(service, principal, "payments.payee.add", details)
    decide(service, phone, device.id, extra["confirmation"])
    clock.advance(seconds=CONFIRMATION_TTL_S)
    challenge_id, _ = scan(extra["confirmation"])
    with pytest.raises(ChallengeError):
        require(service, principal, "payments.payee.add", details, confirmation_id=challenge_id)


def test_another_customers_phone_cannot_approve(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    _, _, strangers_phone, strangers_device = bind_phone(service, register(service))
    extra = step_up_refused(service, principal, "payments.payee.add", {"payee": "王五"})
    challenge_id, nonce = scan(extra["confirmation"])
    view = service.confirmation(challenge_id, nonce)
    theirs = sign_confirmation(strangers_phone.private_key, view, nonce)
    mine = sign_confirmation(phone.private_key, view, nonce)
    for device_id, signature in (
        (strangers_device.id, theirs),  # their phone, their key
        (device.id, theirs),  # their key, claimed as the customer's phone
        (uuid.uuid4(), mine),  # no such phone
    ):
        with pytest.raises(ChallengeError):
            service.decide_confirmation(
                challenge_id, nonce, device_id, signature, approve=True, ctx=ctx()
            )
    with pytest.raises(InvalidInputError):
        service.decide_confirmation(challenge_id, nonce, device.id, "%%%", approve=True, ctx=ctx())
    assert service.confirmation(challenge_id, nonce).status == "pending"
    denied = events(engine, signer, "identity.confirmation.decide")
    assert len(denied) == 3 and all(e.outcome == "denied" for e in denied)
    # The customer's own phone still can.
    assert (
        service.decide_confirmation(
            challenge_id, nonce, device.id, mine, approve=True, ctx=ctx()
        ).status
        == "approved"
    )


def test_a_wrong_nonce_finds_nothing(service: IdentityService) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    extra = step_up_refused(service, principal, "payments.payee.add", {"payee": "王五"})
    challenge_id, nonce = scan(extra["confirmation"])
    view = service.confirmation(challenge_id, nonce)
    wrong = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    for cid, n in ((challenge_id, wrong), (challenge_id, ""), (uuid.uuid4(), nonce)):
        with pytest.raises(NotFoundError):
            service.confirmation(cid, n)
        with pytest.raises(NotFoundError):
            service.decide_confirmation(
                cid,
                n,
                device.id,
                sign_confirmation(phone.private_key, view, n),
                approve=True,
                ctx=ctx(),
            )


def test_a_rejected_confirmation_stays_refused(service: IdentityService) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    # A sign-in from a new browser, rejected on the phone.
    result = login(service, customer.mobile)
    assert result.confirmation is not None
    assert decide(service, phone, device.id, result.confirmation, approve=False).status == (
        "rejected"
    )
    with pytest.raises(ChallengeError):
        complete(service, result.ticket, "device", None)
    # An operation, rejected: it stays refused, and the phone cannot change its mind.
    details = {"payee": "赵六"}
    extra = step_up_refused(service, principal, "payments.payee.add", details)
    challenge_id, nonce = scan(extra["confirmation"])
    view = service.confirmation(challenge_id, nonce)
    # A rejection's signature is no approval.
    rejection = sign_confirmation(phone.private_key, view, nonce, approve=False)
    with pytest.raises(ChallengeError):
        service.decide_confirmation(
            challenge_id, nonce, device.id, rejection, approve=True, ctx=ctx()
        )
    assert decide(service, phone, device.id, extra["confirmation"], approve=False).status == (
        "rejected"
    )
    with pytest.raises(ChallengeError, match="rejected"):
        require(service, principal, "payments.payee.add", details, confirmation_id=challenge_id)
    with pytest.raises(ChallengeError):
        decide(service, phone, device.id, extra["confirmation"])
    assert service.confirmation(challenge_id, nonce).status == "rejected"


def test_a_revoked_phone_cannot_approve(service: IdentityService) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    extra = step_up_refused(service, principal, "payments.payee.add", {"payee": "孙七"})
    service.revoke_device(principal, device.id, ctx())
    with pytest.raises(ChallengeError):
        decide(service, phone, device.id, extra["confirmation"])
    with pytest.raises(NotFoundError):
        service.revoke_device(principal, device.id, ctx())
    assert service.step_up_factors(principal) == frozenset({Factor.PASSWORD})
    _, strangers = sign_in(service, register(service))
    _, _, _, their_device = bind_phone(service, register(service))
    with pytest.raises(NotFoundError):
        service.revoke_device(strangers, their_device.id, ctx())


def test_device_only_step_up_always_asks_the_phone(
    service: IdentityService, clock: FakeClock
) -> None:
    customer = register(service)
    _, principal, phone, device = bind_phone(service, customer)
    secret, _ = enrol_totp(service, principal, clock)
    service.step_up(principal, "totp", code=totp_now(secret, clock), ctx=ctx())
    details = {"amount_minor": 5_000_000, "payee": "周八"}
    # A fresh TOTP step-up passes an ordinary step-up...
    assert require(service, principal, "payments.transfer", details) is Factor.TOTP
    # ...but not one that must be confirmed on the phone.
    extra = step_up_refused(service, principal, "payments.transfer", details, device_only=True)
    assert extra["methods"] == ["device"] and "confirmation" in extra
    decide(service, phone, device.id, extra["confirmation"])
    challenge_id, _ = scan(extra["confirmation"])
    assert (
        require(
            service,
            principal,
            "payments.transfer",
            details,
            confirmation_id=challenge_id,
            device_only=True,
        )
        is Factor.DEVICE
    )
    # Without a phone, device_only falls back to the customer's other factors.
    _, plain = sign_in(service, register(service))
    assert step_up_refused(service, plain, "payments.transfer", details, device_only=True) == {
        "methods": ["password"],
        "action": "payments.transfer",
    }


# --- passkeys -------------------------------------------------------------------------------


def test_register_a_passkey_with_a_real_authenticator_response(
    service: IdentityService, engine: Engine
) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    ceremony_id, options = service.passkey_registration_options(principal)
    assert options["rp"]["id"] == "localhost"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["user"]["displayName"] == customer.registration.name
    set_challenge(engine, ceremony_id, PF.REGISTRATION_NONE.challenge)
    view = service.register_passkey(
        principal, ceremony_id, PF.REGISTRATION_NONE.response, "  laptop  ", ctx()
    )
    assert view.name == "laptop" and view.last_used_ts is None
    assert service.passkeys(principal) == [view]
    assert service.profile(principal).passkeys == 1
    with engine.connect() as connection:
        row = connection.execute(select(identity_passkeys)).one()
    assert bytes(row.credential_id) == PF.REGISTRATION_NONE.credential_id
    assert bytes(row.public_key) == PF.REGISTRATION_NONE_PUBLIC_KEY
    assert row.sign_count == 23
    # The ceremony was used up.
    with pytest.raises(ChallengeError):
        service.register_passkey(principal, ceremony_id, PF.REGISTRATION_NONE.response, "x", ctx())
    # The same authenticator again.
    ceremony_id, options = service.passkey_registration_options(principal)
    assert [c["id"] for c in options["excludeCredentials"]] == [
        base64.urlsafe_b64encode(PF.REGISTRATION_NONE.credential_id).decode().rstrip("=")
    ]
    set_challenge(engine, ceremony_id, PF.REGISTRATION_NONE.challenge)
    with pytest.raises(AlreadyExistsError):
        service.register_passkey(principal, ceremony_id, PF.REGISTRATION_NONE.response, "x", ctx())
    service.delete_passkey(principal, view.id, ctx())
    assert service.passkeys(principal) == []
    with pytest.raises(NotFoundError):
        service.delete_passkey(principal, view.id, ctx())


def test_passkey_registration_refusals(service: IdentityService, engine: Engine) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    # Another challenge than the one answered.
    ceremony_id, _ = service.passkey_registration_options(principal)
    with pytest.raises(PasskeyError):
        service.register_passkey(principal, ceremony_id, PF.REGISTRATION_NONE.response, "x", ctx())
    with pytest.raises(ChallengeError):  # and the failed ceremony is gone
        service.register_passkey(principal, ceremony_id, PF.REGISTRATION_NONE.response, "x", ctx())
    # No user verification.
    ceremony_id, _ = service.passkey_registration_options(principal)
    set_challenge(engine, ceremony_id, PF.REGISTRATION_PACKED_ED25519_NO_UV.challenge)
    with pytest.raises(PasskeyError):
        service.register_passkey(
            principal, ceremony_id, PF.REGISTRATION_PACKED_ED25519_NO_UV.response, "x", ctx()
        )
    # Another customer's ceremony.
    _, strangers = sign_in(service, register(service))
    ceremony_id, _ = service.passkey_registration_options(strangers)
    set_challenge(engine, ceremony_id, PF.REGISTRATION_NONE.challenge)
    with pytest.raises(ChallengeError):
        service.register_passkey(principal, ceremony_id, PF.REGISTRATION_NONE.response, "x", ctx())
    assert service.passkeys(principal) == []


def test_passkey_ceremony_expires(
    service: IdentityService, engine: Engine, clock: FakeClock
) -> None:
    customer = register(service)
    _, principal = sign_in(service, customer)
    ceremony_id, _ = service.passkey_registration_options(principal)
    set_challenge(engine, ceremony_id, PF.REGISTRATION_NONE.challenge)
    clock.advance(seconds=PASSKEY_CEREMONY_TTL_S)
    with pytest.raises(ChallengeError):
        service.register_passkey(principal, ceremony_id, PF.REGISTRATION_NONE.response, "x", ctx())


@pytest.mark.parametrize("fixture_name", ["AUTHENTICATION_ES256", "AUTHENTICATION_RSA"])
def test_sign_in_with_a_passkey(
    service: IdentityService, engine: Engine, clock: FakeClock, fixture_name: str
) -> None:
    fixture = getattr(PF, fixture_name)
    customer = register(service)
    add_passkey(engine, customer.id, fixture)
    ceremony_id, options = service.passkey_login_options()
    assert options["allowCredentials"] == []
    assert options["userVerification"] == "required"
    set_challenge(engine, ceremony_id, fixture.challenge)
    result = service.login_with_passkey(
        ceremony_id, fixture.response, browser_token=None, user_agent=USER_AGENT, ctx=ctx()
    )
    principal = authenticate(service, result)
    assert principal.subject_id == customer.id
    assert principal.factors == frozenset({Factor.PASSKEY})
    assert passkey_sign_count(engine, fixture.credential_id) == fixture.new_sign_count
    assert service.passkeys(principal)[0].last_used_ts == clock.now_us
    # The used ceremony cannot be used again.
    with pytest.raises(ChallengeError):
        service.login_with_passkey(
            ceremony_id, fixture.response, browser_token=None, user_agent=USER_AGENT, ctx=ctx()
        )
    # The same response on a fresh ceremony: its sign count did not move on (a clone).
    with pytest.raises(PasskeyError) as caught:
        passkey_login(service, engine, fixture)
    assert caught.value.reason is PasskeyFailure.SIGN_COUNT


def test_a_passkey_sign_count_regression_is_refused(
    service: IdentityService, engine: Engine, signer: Ed25519Signer
) -> None:
    fixture = PF.AUTHENTICATION_ES256
    customer = register(service)
    add_passkey(engine, customer.id, fixture, sign_count=fixture.new_sign_count + 1)
    with pytest.raises(PasskeyError) as caught:
        passkey_login(service, engine, fixture)
    assert caught.value.reason is PasskeyFailure.SIGN_COUNT
    assert passkey_sign_count(engine, fixture.credential_id) == fixture.new_sign_count + 1
    (denied,) = events(engine, signer, "identity.passkey.login")
    assert denied.outcome == "denied"


def test_passkey_sign_in_refusals(
    service: IdentityService, engine: Engine, clock: FakeClock
) -> None:
    fixture = PF.AUTHENTICATION_ES256
    # Not registered with the bank.
    with pytest.raises(AuthenticationError):
        passkey_login(service, engine, fixture)
    customer = register(service)
    add_passkey(engine, customer.id, fixture)
    # No user verification.
    add_passkey(engine, customer.id, PF.AUTHENTICATION_ES256_NO_UV)
    with pytest.raises(PasskeyError):
        passkey_login(service, engine, PF.AUTHENTICATION_ES256_NO_UV)
    # An expired ceremony.
    ceremony_id, _ = service.passkey_login_options()
    set_challenge(engine, ceremony_id, fixture.challenge)
    clock.advance(seconds=PASSKEY_CEREMONY_TTL_S)
    with pytest.raises(ChallengeError):
        service.login_with_passkey(
            ceremony_id, fixture.response, browser_token=None, user_agent=None, ctx=ctx()
        )
    # A registration ceremony is no sign-in ceremony.
    _, principal = sign_in(service, customer)
    ceremony_id, _ = service.passkey_registration_options(principal)
    set_challenge(engine, ceremony_id, fixture.challenge)
    with pytest.raises(ChallengeError):
        service.login_with_passkey(
            ceremony_id, fixture.response, browser_token=None, user_agent=None, ctx=ctx()
        )
    # A disabled customer.
    service.set_customer_status(customer.id, "disabled", system_context())
    with pytest.raises(AuthenticationError):
        passkey_login(service, engine, fixture)


def test_step_up_with_a_passkey(service: IdentityService, engine: Engine) -> None:
    fixture = PF.AUTHENTICATION_ES256
    customer = register(service)
    _, principal = sign_in(service, customer)
    with pytest.raises(StateError):
        service.passkey_login_options(step_up_for=principal)  # none registered
    add_passkey(engine, customer.id, fixture)
    assert service.step_up_factors(principal) == frozenset({Factor.PASSKEY})
    ceremony_id, options = service.passkey_login_options(step_up_for=principal)
    assert len(options["allowCredentials"]) == 1
    set_challenge(engine, ceremony_id, fixture.challenge)
    service.step_up_with_passkey(principal, ceremony_id, fixture.response, ctx())
    assert require(service, principal, "identity.totp.disable", {}) is Factor.PASSKEY
    # Somebody else's passkey cannot step up this session.
    other = register(service)
    _, others = sign_in(service, other)
    add_passkey(engine, other.id, PF.AUTHENTICATION_RSA)
    ceremony_id, _ = service.passkey_login_options(step_up_for=others)
    set_challenge(engine, ceremony_id, PF.AUTHENTICATION_ES256.challenge)
    with pytest.raises(AuthenticationError):
        service.step_up_with_passkey(others, ceremony_id, PF.AUTHENTICATION_ES256.response, ctx())
    step_up_refused(service, others, "identity.totp.disable", {})


# --- key rotation -------------------------------------------------------------------------


def test_key_rotation_leaves_every_record_readable(
    engine: Engine, clock: FakeClock, signer: Ed25519Signer
) -> None:
    entries = ring_entries("k1", "k2")
    before = identity_service(engine, clock, entries.ring("k1"))
    customers = [register(before) for _ in range(3)]
    _, principal = sign_in(before, customers[0])
    secret, _ = enrol_totp(before, principal, clock)
    views = {c.id: before.customer(c.id) for c in customers}

    ring = entries.ring("k2", "k1")
    report = rotate(engine, ring, ENCRYPTED_COLUMNS)
    assert report.done and report.active_key_id == "k2"
    assert report.rows_rewritten["identity_customers"] == 3
    assert report.rows_rewritten["identity_totp"] == 1
    with engine.connect() as connection:
        keys = connection.execute(select(identity_customers.c.pii_key_id)).scalars().all()
        keys += connection.execute(select(identity_totp.c.pii_key_id)).scalars().all()
    assert keys == ["k2"] * 4

    for ring_now in (ring, entries.ring("k2")):  # with k1 kept, then with k1 gone
        after = identity_service(engine, clock, ring_now)
        for customer in customers:
            assert after.customer(customer.id) == views[customer.id]
        # Blind indexes did not change: sign-in by mobile and by e-mail still finds them.
        assert login(after, customers[1].mobile).status == "authenticated"
        assert login(after, customers[2].email).status == "authenticated"
        # The TOTP secret still verifies.
        ticket = login(after, customers[0].email).ticket
        assert complete(after, ticket, "totp", totp_now(secret, clock)).status == "authenticated"
        clock.advance(seconds=TOTP_PERIOD_S)
    # A ring without the new key reads nothing of it.
    stale = identity_service(engine, clock, entries.ring("k1"))
    with pytest.raises(Exception, match=r"key|decrypt"):
        stale.customer(customers[0].id)
    # A new blind-index key finds nobody: the index key is never rotated this way.
    with pytest.raises(AuthenticationError):
        login(identity_service(engine, clock, new_keyring()), customers[1].mobile)
    report_after = AuditTrail(engine, signer).verify({})
    assert report_after.ok


def test_mobile_change_after_rotation_keeps_the_row_under_one_key(
    engine: Engine, clock: FakeClock
) -> None:
    entries = ring_entries("k1", "k2")
    before = identity_service(engine, clock, entries.ring("k1"))
    customer = register(before)
    after = identity_service(engine, clock, entries.ring("k2", "k1"))
    _, principal = sign_in(after, customer)
    after.change_mobile(principal, "+8613912345670", ctx())
    with engine.connect() as connection:
        (key_id,) = connection.execute(select(identity_customers.c.pii_key_id)).scalars().all()
    assert key_id == "k2"
    only_k2 = identity_service(engine, clock, entries.ring("k2"))
    assert only_k2.customer(customer.id).name == customer.registration.name


# --- the audit trail -------------------------------------------------------------------------


def test_the_trail_records_every_step_of_a_day(
    service: IdentityService, engine: Engine, signer: Ed25519Signer, clock: FakeClock
) -> None:
    customer = register(service)
    fail(service, customer.mobile, SOURCE)
    _, principal = sign_in(service, customer)
    service.step_up(principal, "password", password=PASSWORD, ctx=ctx())
    service.logout(principal, ctx())
    records = events(engine, signer)
    actions = [e.action for e in records]
    assert actions == [
        "identity.customer.register",
        "identity.customer.login",
        "identity.customer.login",
        "identity.step_up.password",
        "identity.session.revoke",
    ]
    assert [e.outcome for e in records] == ["ok", "denied", "ok", "ok", "ok"]
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(audit_events)).scalar_one()
        sessions = connection.execute(select(func.count()).select_from(identity_sessions))
        assert sessions.scalar_one() == 1
    assert count == len(records)


def test_concurrent_failures_are_all_counted(service: IdentityService, engine: Engine) -> None:
    customer = register(service)
    attempts = ACCOUNT.free_failures
    barrier = threading.Barrier(attempts)

    def attempt(i: int) -> object:
        barrier.wait()
        try:
            return login(service, customer.mobile, WRONG_PASSWORD, source=f"198.51.100.{i + 1}")
        except Exception as error:  # noqa: BLE001 - every outcome is checked below
            return error

    with ThreadPoolExecutor(attempts) as pool:
        outcomes = list(pool.map(attempt, range(attempts)))
    assert all(isinstance(o, AuthenticationError) for o in outcomes), outcomes
    with engine.connect() as connection:
        query = select(identity_throttle.c.failures).where(identity_throttle.c.scope == "account")
        assert connection.execute(query).scalar_one() == attempts

"""Identity use cases for customers and staff who sign in: registration, sign-in
with throttling and second factors, sessions, step-up, QR confirmations on a
bound phone, TOTP, recovery codes and passkeys.

Each public method is one use case and one unit of work (``run_in_transaction``),
and records its audit event in the same database transaction as its change.
Slow work (argon2id) runs before the write transaction opens, so a sign-in
never holds the database's write lock while hashing.

Sessions. A session token is ``zs_`` + 43 characters of base64url (256 random
bits); only its SHA-256 is stored. A session ends after
:data:`IDLE_TIMEOUT_S` without use or :data:`ABSOLUTE_TIMEOUT_S` after the
sign-in, whichever comes first, on logout, or when revoked ("sign out
everywhere", password change, account disabled). Every completed sign-in makes
a new token; nothing carries over from a ticket to a session.

Second factors at sign-in. A subject with TOTP confirmed must give a TOTP code,
a recovery code or (customers) a QR confirmation from a bound phone. A
customer with a bound phone signing in from a browser that never signed in
before must confirm on the phone (or give a TOTP code). Otherwise the password
is enough, which the password policy allows only for 15+ characters. A passkey
sign-in (user verification required) needs nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn

from sqlalchemy import Connection, Engine, Row

from zhifu.identity import store
from zhifu.identity.access import (
    STEP_UP_FRESH_S,
    Factor,
    Principal,
    Role,
    SubjectKind,
    factors_text,
    operation_binding,
    parse_factors,
)
from zhifu.identity.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ChallengeError,
    IdentityError,
    InvalidCodeError,
    InvalidEmailError,
    InvalidInputError,
    InvalidMobileError,
    NotFoundError,
    SessionError,
    StateError,
    StepUpRequiredError,
    ThrottledError,
)
from zhifu.identity.model import (
    check_password,
    confirmation_message,
    confirmation_uri,
    mask_email,
    mask_mobile,
    mask_resident_id,
    normalise_email,
    normalise_name,
    parse_mobile,
    parse_resident_id,
    password_context_words,
)
from zhifu.identity.passkeys import (
    PASSKEYS_PER_USER_MAX,
    RelyingParty,
    authentication_options,
    credential_id_of,
    registration_options,
    verify_authentication,
    verify_registration,
)
from zhifu.identity.passwords import PasswordHasher, load_blocklist
from zhifu.identity.qr import qr_svg
from zhifu.identity.throttle import (
    RULES,
    ThrottleKey,
    login_keys,
    next_state,
    second_factor_key,
)
from zhifu.identity.totp import (
    hash_recovery_code,
    new_recovery_codes,
    new_totp_secret,
    normalise_recovery_code,
    provisioning_uri,
    verify_totp,
)
from zhifu.ids import uuid7
from zhifu.invariant import InvariantError
from zhifu.ops.audit import AuditContext, record
from zhifu.security.envelope import KeyRing, column_context
from zhifu.security.signing import verify_signature
from zhifu.store.uow import run_in_transaction

US: Final = 1_000_000
IDLE_TIMEOUT_S: Final = {SubjectKind.CUSTOMER: 15 * 60, SubjectKind.STAFF: 15 * 60}
ABSOLUTE_TIMEOUT_S: Final = {SubjectKind.CUSTOMER: 12 * 3600, SubjectKind.STAFF: 8 * 3600}
LAST_SEEN_GRANULARITY_S: Final = 30  # a session's last use is written at most this often
SESSIONS_PER_SUBJECT_MAX: Final = 20  # the oldest is signed out past this
LOGIN_TICKET_TTL_S: Final = 300
LOGIN_TICKET_ATTEMPTS_MAX: Final = 5
CONFIRMATION_TTL_S: Final = 120
PASSKEY_CEREMONY_TTL_S: Final = 300
DEVICES_PER_CUSTOMER_MAX: Final = 5
DEVICE_NAME_CHARS_MAX: Final = 64
SESSION_TOKEN_PREFIX: Final = "zs_"  # noqa: S105 - a prefix, not a secret
TICKET_PREFIX: Final = "zt_"
BROWSER_TOKEN_PREFIX: Final = "zb_"  # noqa: S105 - a prefix, not a secret
TOKEN_CHARS_MAX: Final = 64
USER_AGENT_CHARS_MAX: Final = 256
SUMMARY_CHARS_MAX: Final = 256

MOBILE_PURPOSE: Final = "identity.customers.mobile"
EMAIL_PURPOSE: Final = "identity.customers.email"
RESIDENT_ID_PURPOSE: Final = "identity.customers.resident_id"
STAFF_PURPOSE: Final = "identity.staff.username"

Clock = Callable[[], int]


def now_us() -> int:
    return time.time_ns() // 1000


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _short(text: str | None, chars_max: int) -> str | None:
    return None if text is None else text[:chars_max]


# --- views ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    resident_id: str
    mobile: str
    email: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A customer as the customer (or staff) sees them: personal data masked."""

    id: uuid.UUID
    name: str
    resident_id_masked: str
    mobile_masked: str
    email_masked: str
    status: str
    created_ts: int
    totp_enabled: bool = False
    passkeys: int = 0
    devices: int = 0


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A QR confirmation to show: the phone scans ``uri`` and signs."""

    id: uuid.UUID
    action: str
    uri: str = field(repr=False)
    qr_svg: str = field(repr=False)
    expires_ts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "action": self.action,
            "uri": self.uri,
            "qr_svg": self.qr_svg,
            "expires_ts": self.expires_ts,
        }


@dataclass(frozen=True, slots=True)
class LoginResult:
    """``authenticated`` with a session, or ``mfa_required`` with a ticket."""

    status: Literal["authenticated", "mfa_required"]
    subject_kind: str
    session_token: str | None = field(default=None, repr=False)
    session_id: uuid.UUID | None = None
    expires_ts: int | None = None
    browser_token: str | None = field(default=None, repr=False)
    ticket: str | None = field(default=None, repr=False)
    methods: tuple[str, ...] = ()
    confirmation: Confirmation | None = None


@dataclass(frozen=True, slots=True)
class SessionView:
    id: uuid.UUID
    created_ts: int
    last_seen_ts: int
    expires_ts: int
    idle_expires_ts: int
    auth_methods: tuple[str, ...]
    user_agent: str | None
    source: str | None
    current: bool


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str = field(repr=False)
    uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: uuid.UUID
    name: str
    public_key: str
    created_ts: int
    last_used_ts: int | None


@dataclass(frozen=True, slots=True)
class PasskeyView:
    id: uuid.UUID
    name: str
    created_ts: int
    last_used_ts: int | None
    backed_up: bool


@dataclass(frozen=True, slots=True)
class ConfirmationView:
    """What the phone shows before the customer approves."""

    id: uuid.UUID
    action: str
    summary: str
    status: str
    expires_ts: int
    binding: bytes = b""


@dataclass(frozen=True, slots=True)
class _Subject:
    kind: SubjectKind
    id: uuid.UUID
    row: Row[Any]


class IdentityService:
    """Customers' and staff members' sign-in and credentials."""

    def __init__(
        self,
        engine: Engine,
        keyring: KeyRing,
        *,
        relying_party: RelyingParty,
        hasher: PasswordHasher | None = None,
        clock: Clock = now_us,
        blocklist: Collection[str] | None = None,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.relying_party = relying_party
        self.hasher = hasher or PasswordHasher()
        self.clock = clock
        self.blocklist = load_blocklist() if blocklist is None else blocklist

    # --- helpers ---------------------------------------------------------------------

    def _tx(self, work: Callable[[Connection], Any], *, write: bool = True) -> Any:
        return run_in_transaction(self.engine, work, write=write)

    def _encrypt(self, table: str, column: str, row_id: uuid.UUID, text: str) -> bytes:
        return self.keyring.encrypt_text(text, context=column_context(table, column, row_id))

    def _decrypt(self, table: str, column: str, row_id: uuid.UUID, token: bytes) -> str:
        return self.keyring.decrypt_text(
            bytes(token), context=column_context(table, column, row_id)
        )

    def _customer_view(self, connection: Connection, row: Row[Any]) -> CustomerView:
        table = "identity_customers"
        kind = SubjectKind.CUSTOMER
        return CustomerView(
            id=row.id,
            name=self._decrypt(table, "name_enc", row.id, row.name_enc),
            resident_id_masked=mask_resident_id(
                self._decrypt(table, "resident_id_enc", row.id, row.resident_id_enc)
            ),
            mobile_masked=mask_mobile(self._decrypt(table, "mobile_enc", row.id, row.mobile_enc)),
            email_masked=mask_email(self._decrypt(table, "email_enc", row.id, row.email_enc)),
            status=row.status,
            created_ts=int(row.created_ts),
            totp_enabled=_totp_confirmed(store.totp_of(connection, kind, row.id)),
            passkeys=len(store.passkeys_of(connection, kind, row.id)),
            devices=len(store.devices_of(connection, row.id)),
        )

    def _subject_row(
        self, connection: Connection, kind: SubjectKind, subject_id: uuid.UUID
    ) -> Row[Any]:
        row = (
            store.customer_by_id(connection, subject_id)
            if kind is SubjectKind.CUSTOMER
            else store.staff_by_id(connection, subject_id)
        )
        if row is None:
            raise NotFoundError("no such account")
        return row

    def _has_mfa(self, connection: Connection, kind: SubjectKind, subject_id: uuid.UUID) -> bool:
        return _totp_confirmed(store.totp_of(connection, kind, subject_id)) or bool(
            store.passkeys_of(connection, kind, subject_id)
        )

    # --- registration -------------------------------------------------------------------

    def register_customer(self, registration: Registration, ctx: AuditContext) -> CustomerView:
        """Register a customer under their real name.

        Raises:
            InvalidResidentIdError, InvalidMobileError, InvalidEmailError,
            InvalidNameError, WeakPasswordError: the input breaks a rule.
            AlreadyExistsError: the ID number, mobile or e-mail is registered.
        """
        name = normalise_name(registration.name)
        resident_id = parse_resident_id(registration.resident_id).number
        mobile = parse_mobile(registration.mobile)
        email = normalise_email(registration.email)
        context_words = password_context_words(name=name, email=email, mobile=mobile)
        check_password(
            registration.password,
            mfa_enrolled=False,
            blocklist=self.blocklist,
            context_words=context_words,
        )
        password_hash = self.hasher.hash(registration.password)
        customer_id = uuid7()
        table = "identity_customers"
        indexes = {
            "resident_id_index": self.keyring.blind_index(resident_id, purpose=RESIDENT_ID_PURPOSE),
            "mobile_index": self.keyring.blind_index(mobile, purpose=MOBILE_PURPOSE),
            "email_index": self.keyring.blind_index(email, purpose=EMAIL_PURPOSE),
        }
        now = self.clock()
        values = {
            "id": customer_id,
            "status": "active",
            "name_enc": self._encrypt(table, "name_enc", customer_id, name),
            "resident_id_enc": self._encrypt(table, "resident_id_enc", customer_id, resident_id),
            "mobile_enc": self._encrypt(table, "mobile_enc", customer_id, mobile),
            "email_enc": self._encrypt(table, "email_enc", customer_id, email),
            "pii_key_id": self.keyring.active_key_id,
            "password_hash": password_hash,
            "password_changed_ts": now,
            "created_ts": now,
            "updated_ts": now,
            **indexes,
        }
        actor = f"customer:{customer_id}"

        def work(connection: Connection) -> CustomerView:
            taken = store.customer_exists_with(connection, indexes)
            if taken:
                raise AlreadyExistsError(
                    "these details are already registered (ID number, mobile or e-mail);"
                    " if this is you, sign in instead"
                )
            store.insert_customer(connection, values)
            record(
                connection,
                ctx.event("identity.customer.register", actor, actor=actor, role="customer"),
            )
            return self._customer_view(connection, store.customer_by_id(connection, customer_id))  # type: ignore[arg-type]

        result: CustomerView = run_in_transaction(self.engine, work, retry_unique_violation=True)
        return result

    def profile(self, principal: Principal) -> CustomerView:
        def work(connection: Connection) -> CustomerView:
            row = store.customer_by_id(connection, principal.subject_id)
            if row is None:
                raise NotFoundError("no such customer")
            return self._customer_view(connection, row)

        result: CustomerView = self._tx(work, write=False)
        return result

    def customer(self, customer_id: uuid.UUID) -> CustomerView:
        """A customer as staff see them (masked)."""

        def work(connection: Connection) -> CustomerView:
            row = store.customer_by_id(connection, customer_id)
            if row is None:
                raise NotFoundError(f"no customer {customer_id}")
            return self._customer_view(connection, row)

        result: CustomerView = self._tx(work, write=False)
        return result

    def customer_id_by_mobile(self, mobile: str) -> uuid.UUID | None:
        """The id of the customer registered with ``mobile``, or None: for the
        operator's tools and the demo, never for an anonymous caller (it tells
        whether a number is registered). Raises InvalidMobileError."""
        index = self.keyring.blind_index(parse_mobile(mobile), purpose=MOBILE_PURPOSE)

        def work(connection: Connection) -> uuid.UUID | None:
            row = store.customer_by_index(connection, "mobile_index", index)
            return None if row is None else row.id

        result: uuid.UUID | None = self._tx(work, write=False)
        return result

    def set_customer_status(
        self, customer_id: uuid.UUID, status: Literal["active", "disabled"], ctx: AuditContext
    ) -> CustomerView:
        """Disable (every session ends) or re-enable a customer."""
        if status not in ("active", "disabled"):
            raise InvalidInputError("status must be 'active' or 'disabled'")

        def work(connection: Connection) -> CustomerView:
            now = self.clock()
            if (
                store.update_customer(
                    connection, customer_id, {"status": status, "updated_ts": now}
                )
                == 0
            ):
                raise NotFoundError(f"no customer {customer_id}")
            if status == "disabled":
                store.revoke_sessions(
                    connection, SubjectKind.CUSTOMER, customer_id, now, "disabled"
                )
            record(
                connection,
                ctx.event(
                    f"identity.customer.{'disable' if status == 'disabled' else 'enable'}",
                    f"customer:{customer_id}",
                ),
            )
            return self._customer_view(connection, store.customer_by_id(connection, customer_id))  # type: ignore[arg-type]

        result: CustomerView = self._tx(work)
        return result

    # --- sign-in ----------------------------------------------------------------------------

    def _customer_index(self, identifier: str) -> bytes:
        """The blind index an identifier (mobile or e-mail) is looked up and throttled by."""
        text = identifier.strip()[:320]
        try:
            return self.keyring.blind_index(parse_mobile(text), purpose=MOBILE_PURPOSE)
        except InvalidMobileError:
            pass
        try:
            return self.keyring.blind_index(normalise_email(text), purpose=EMAIL_PURPOSE)
        except InvalidEmailError:
            # Still counted: throttling must not tell malformed from unknown.
            return self.keyring.blind_index(text.casefold(), purpose=EMAIL_PURPOSE)

    def login(
        self,
        kind: SubjectKind,
        identifier: str,
        password: str,
        *,
        browser_token: str | None,
        user_agent: str | None,
        ctx: AuditContext,
    ) -> LoginResult:
        """Sign in with a password (customers: mobile or e-mail; staff: username).

        Raises:
            ThrottledError: too many recent failures for this account or address.
            AuthenticationError: anything else wrong; one message for every reason.
        """
        if kind is SubjectKind.CUSTOMER:
            index = self._customer_index(identifier)
        else:
            index = self.keyring.blind_index(identifier.strip().lower()[:64], purpose=STAFF_PURPOSE)
        row, browser_id = self._login_subject(kind, identifier, index, browser_token, ctx)
        keys = login_keys(index, ctx.source, known_browser=browser_id is not None)
        if row is None:
            self.hasher.dummy_verify()  # the same time as a real check: no enumeration
            self._login_failed(kind, None, keys, ctx)
        elif not (self.hasher.verify(row.password_hash, password) and row.status == "active"):
            self._login_failed(kind, row, keys, ctx)
        rehash = self.hasher.hash(password) if self.hasher.needs_rehash(row.password_hash) else None
        subject = _Subject(kind, row.id, row)

        def succeed(connection: Connection) -> LoginResult:
            store.clear_throttle(connection, [k.key for k in keys if k.scope.value != "source"])
            if rehash is not None:
                updater = (
                    store.update_customer if kind is SubjectKind.CUSTOMER else store.update_staff
                )
                updater(connection, row.id, {"password_hash": rehash})
            return self._after_password(connection, subject, browser_id, user_agent, ctx)

        result: LoginResult = self._tx(succeed)
        return result

    def _login_subject(
        self,
        kind: SubjectKind,
        identifier: str,
        index: bytes,
        browser_token: str | None,
        ctx: AuditContext,
    ) -> tuple[Row[Any] | None, uuid.UUID | None]:
        """The account an identifier names (None if none) and the known browser's id.

        Raises ThrottledError (recorded) while a key of this attempt is blocked,
        before any password is looked at.
        """

        def look_up(connection: Connection) -> tuple[Row[Any] | None, uuid.UUID | None]:
            row = (
                store.customer_by_index(connection, "mobile_index", index)
                or store.customer_by_index(connection, "email_index", index)
                if kind is SubjectKind.CUSTOMER
                else store.staff_by_username(connection, identifier.strip().lower()[:64])
            )
            browser_id = None
            if row is not None and browser_token:
                browser = store.browser_for(
                    connection, store.secret_hash(browser_token[:TOKEN_CHARS_MAX]), kind, row.id
                )
                browser_id = None if browser is None else browser.id
            keys = login_keys(index, ctx.source, known_browser=browser_id is not None)
            blocked = _throttled(connection, keys, self.clock())
            if blocked is not None:
                raise blocked
            return row, browser_id

        try:
            found: tuple[Row[Any] | None, uuid.UUID | None] = self._tx(look_up, write=False)
        except ThrottledError:
            event = ctx.event(f"identity.{kind.value}.login", outcome="denied", reason="throttled")
            self._tx(lambda c: record(c, event))
            raise
        return found

    def _login_failed(
        self,
        kind: SubjectKind,
        row: Row[Any] | None,
        keys: Sequence[ThrottleKey],
        ctx: AuditContext,
    ) -> NoReturn:
        """Count the failure on every throttle key, record it, and refuse."""
        target = None if row is None else f"{kind.value}:{row.id}"
        event = ctx.event(
            f"identity.{kind.value}.login", target, "denied", reason="invalid_credentials"
        )

        def fail(connection: Connection) -> None:
            _count_failures(connection, keys, self.clock())
            record(connection, event)

        # A concurrent first failure of the same key inserts it too: retry, and count.
        run_in_transaction(self.engine, fail, retry_unique_violation=True)
        raise AuthenticationError()

    def _after_password(
        self,
        connection: Connection,
        subject: _Subject,
        browser_id: uuid.UUID | None,
        user_agent: str | None,
        ctx: AuditContext,
    ) -> LoginResult:
        """The password was right: a session, or a ticket for the second factor."""
        kind, subject_id = subject.kind, subject.id
        totp = _totp_confirmed(store.totp_of(connection, kind, subject_id))
        devices = store.devices_of(connection, subject_id) if kind is SubjectKind.CUSTOMER else []
        methods: list[str] = []
        if totp:
            methods += [Factor.TOTP.value, Factor.RECOVERY_CODE.value]
        if devices and (totp or browser_id is None):
            methods.append(Factor.DEVICE.value)
        actor = f"{kind.value}:{subject_id}"
        if not methods:
            return self._open_session(
                connection, subject, {Factor.PASSWORD}, browser_id, user_agent, ctx
            )
        now = self.clock()
        ticket = _new_token(TICKET_PREFIX)
        ticket_id = uuid7()
        store.insert_challenge(
            connection,
            {
                "id": ticket_id,
                "kind": "login",
                "subject_kind": kind.value,
                "subject_id": subject_id,
                "secret_hash": store.secret_hash(ticket),
                "payload": json.dumps(
                    {"methods": methods, "browser_id": str(browser_id) if browser_id else None}
                ),
                "status": "pending",
                "attempts": 0,
                "created_ts": now,
                "expires_ts": now + LOGIN_TICKET_TTL_S * US,
            },
        )
        confirmation = None
        if Factor.DEVICE.value in methods:
            confirmation = self._new_confirmation(
                connection,
                kind="qr_login",
                subject=subject,
                action="identity.login",
                details={"ticket": str(ticket_id)},
                summary="Sign in on a new browser",
                session_id=ticket_id,
            )
        record(
            connection,
            ctx.event(
                "identity.login.password", actor, actor=actor, role=kind.value, next="second_factor"
            ),
        )
        return LoginResult(
            status="mfa_required",
            subject_kind=kind.value,
            ticket=ticket,
            methods=tuple(methods),
            confirmation=confirmation,
        )

    def _open_session(
        self,
        connection: Connection,
        subject: _Subject,
        factors: set[Factor],
        browser_id: uuid.UUID | None,
        user_agent: str | None,
        ctx: AuditContext,
        *,
        device_id: uuid.UUID | None = None,
    ) -> LoginResult:
        kind, subject_id = subject.kind, subject.id
        now = self.clock()
        browser_token = None
        if browser_id is None:
            browser_token = _new_token(BROWSER_TOKEN_PREFIX)
            browser_id = uuid7()
            store.insert_browser(
                connection,
                {
                    "id": browser_id,
                    "token_hash": store.secret_hash(browser_token),
                    "subject_kind": kind.value,
                    "subject_id": subject_id,
                    "created_ts": now,
                    "last_seen_ts": now,
                },
            )
        else:
            store.touch_browser(connection, browser_id, now)
        active = store.active_sessions(connection, kind, subject_id, now)
        for old in active[SESSIONS_PER_SUBJECT_MAX - 1 :]:
            store.revoke_sessions(connection, kind, subject_id, now, "too_many", only=old.id)
        token = _new_token(SESSION_TOKEN_PREFIX)
        session_id = uuid7()
        expires_ts = now + ABSOLUTE_TIMEOUT_S[kind] * US
        store.insert_session(
            connection,
            {
                "id": session_id,
                "token_hash": store.secret_hash(token),
                "subject_kind": kind.value,
                "subject_id": subject_id,
                "created_ts": now,
                "last_seen_ts": now,
                "expires_ts": expires_ts,
                "auth_methods": factors_text(factors),
                # A sign-in is not a step-up: sensitive operations ask again.
                "step_up_ts": None,
                "step_up_methods": None,
                "browser_id": browser_id,
                "device_id": device_id,
                "user_agent": _short(user_agent, USER_AGENT_CHARS_MAX),
                "source": ctx.source,
            },
        )
        actor = f"{kind.value}:{subject_id}"
        record(
            connection,
            ctx.event(
                f"identity.{kind.value}.login",
                actor,
                actor=actor,
                role=kind.value,
                session=str(session_id),
                methods=sorted(f.value for f in factors),
                new_browser=browser_token is not None,
            ),
        )
        return LoginResult(
            status="authenticated",
            subject_kind=kind.value,
            session_token=token,
            session_id=session_id,
            expires_ts=expires_ts,
            browser_token=browser_token,
        )

    def complete_login(
        self,
        ticket: str,
        method: str,
        code: str | None,
        *,
        user_agent: str | None,
        ctx: AuditContext,
    ) -> LoginResult:
        """The second step of a sign-in: a TOTP code, a recovery code, or a phone's
        approval of the QR confirmation (``method="device"``, no code).

        Raises:
            ChallengeError: the ticket is unknown, expired, used, or out of attempts.
            InvalidCodeError: the code is wrong or used.
            StateError: the phone has not approved yet (try again shortly).
            ThrottledError: too many wrong codes for this account lately, from
                any ticket or session (codes only; the ticket is not used up).
        """
        if method not in (Factor.TOTP.value, Factor.RECOVERY_CODE.value, Factor.DEVICE.value):
            raise InvalidInputError("method must be 'totp', 'recovery_code' or 'device'")
        ticket_hash = store.secret_hash(ticket[:TOKEN_CHARS_MAX])

        def work(connection: Connection) -> LoginResult | IdentityError:
            now = self.clock()
            challenge = store.challenge_by_secret(connection, ticket_hash)
            if (
                challenge is None
                or challenge.kind != "login"
                or challenge.status != "pending"
                or challenge.expires_ts <= now
                or challenge.attempts >= LOGIN_TICKET_ATTEMPTS_MAX
            ):
                raise ChallengeError("this sign-in has expired or was already used; sign in again")
            payload = json.loads(challenge.payload)
            if method not in payload["methods"]:
                raise InvalidInputError(f"this sign-in accepts: {', '.join(payload['methods'])}")
            kind = SubjectKind(challenge.subject_kind)
            subject = _Subject(
                kind,
                challenge.subject_id,
                self._subject_row(connection, kind, challenge.subject_id),
            )
            if subject.row.status != "active":  # disabled since the password step
                raise AuthenticationError()
            actor = f"{kind.value}:{subject.id}"
            # Codes are guessable: their failures count per subject across tickets.
            code_keys = [] if method == Factor.DEVICE.value else [_second_factor_key(subject)]
            blocked = _throttled(connection, code_keys, now)
            if blocked is not None:
                record(
                    connection,
                    ctx.event(
                        "identity.login.second_factor",
                        actor,
                        "denied",
                        method=method,
                        reason="throttled",
                    ),
                )
                return blocked
            error = self._check_second_factor(connection, subject, challenge, method, code, now)
            if error is not None:
                # Waiting for the phone (StateError) guesses nothing: the browser
                # polls, and polling must not use up the sign-in's attempts.
                if not isinstance(error, StateError):
                    store.count_challenge_attempt(connection, challenge.id)
                    _count_failures(connection, code_keys, now)
                    record(
                        connection,
                        ctx.event("identity.login.second_factor", actor, "denied", method=method),
                    )
                return error
            store.clear_throttle(connection, [k.key for k in code_keys])
            if not store.move_challenge(
                connection, challenge.id, "pending", {"status": "consumed", "decided_ts": now}, now
            ):
                raise ChallengeError("this sign-in has expired or was already used; sign in again")
            browser_id = uuid.UUID(payload["browser_id"]) if payload.get("browser_id") else None
            return self._open_session(
                connection, subject, {Factor.PASSWORD, Factor(method)}, browser_id, user_agent, ctx
            )

        # A wrong code must still count its attempt: the error is returned, the
        # transaction commits, and only then is it raised. A unique violation is a
        # concurrent first failure of the subject's counter: retry, and count.
        outcome = run_in_transaction(self.engine, work, retry_unique_violation=True)
        if isinstance(outcome, IdentityError):
            raise outcome
        result: LoginResult = outcome
        return result

    def _check_second_factor(
        self,
        connection: Connection,
        subject: _Subject,
        challenge: Row[Any],
        method: str,
        code: str | None,
        now: int,
    ) -> IdentityError | None:
        kind, subject_id = subject.kind, subject.id
        if method == Factor.TOTP.value:
            return self._use_totp(connection, kind, subject_id, code or "", now)
        if method == Factor.RECOVERY_CODE.value:
            normalised = normalise_recovery_code(code or "")
            if normalised is None or not store.use_recovery_code(
                connection, kind, subject_id, hash_recovery_code(normalised), now
            ):
                return InvalidCodeError("the recovery code is not correct or was already used")
            return None
        # device: the QR confirmation tied to this ticket must be approved.
        confirmation = _confirmation_for_ticket(connection, challenge.id)
        if confirmation is None or confirmation.expires_ts <= now:
            return ChallengeError("the phone confirmation has expired; sign in again")
        if confirmation.status == "pending":
            return StateError("waiting for the confirmation on your phone")
        if confirmation.status != "approved" or not store.move_challenge(
            connection, confirmation.id, "approved", {"status": "consumed"}, now
        ):
            return ChallengeError("the phone confirmation was rejected or already used")
        return None

    def _use_totp(
        self, connection: Connection, kind: SubjectKind, subject_id: uuid.UUID, code: str, now: int
    ) -> IdentityError | None:
        totp = store.totp_of(connection, kind, subject_id)
        if not _totp_confirmed(totp):
            return InvalidCodeError("two-step verification with an authenticator app is not set up")
        if totp is None:  # _totp_confirmed said it exists
            raise InvariantError("a confirmed TOTP credential has a row")
        secret = self._decrypt("identity_totp", "secret_enc", totp.id, totp.secret_enc)
        step = verify_totp(secret, code, now_s=now // US, last_used_step=totp.last_used_step)
        if step is None or not store.use_totp_step(connection, totp.id, step):
            return InvalidCodeError(
                "the code is not correct or was already used; wait for the next one"
            )
        return None

    # --- sessions ------------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The principal of a session token, for one request.

        Raises:
            SessionError: unknown, revoked, idle too long, or past its absolute end.
        """
        if not token.startswith(SESSION_TOKEN_PREFIX) or len(token) > TOKEN_CHARS_MAX:
            raise SessionError("the session token is not valid; sign in again")
        token_hash = store.secret_hash(token)

        now = self.clock()

        def work(connection: Connection) -> tuple[Principal, bool]:
            row = store.session_for_request(connection, token_hash)
            if row is None or row.revoked_ts is not None:
                raise SessionError("the session has ended; sign in again")
            kind = SubjectKind(row.subject_kind)
            if now >= row.expires_ts or now - row.last_seen_ts >= IDLE_TIMEOUT_S[kind] * US:
                raise SessionError("the session has expired; sign in again")
            roles: frozenset[Role] = frozenset()
            username = None
            if kind is SubjectKind.STAFF:
                staff = store.staff_by_id(connection, row.subject_id)
                if staff is None or staff.status != "active":
                    raise SessionError("the session has ended; sign in again")
                roles = frozenset(Role(r) for r in store.roles_of(connection, row.subject_id))
                username = staff.username
            elif row.customer_status != "active":
                raise SessionError("the session has ended; sign in again")
            principal = Principal(
                kind=kind.value,
                id=str(row.subject_id),
                roles=roles,
                session_id=row.id,
                username=username,
                factors=parse_factors(row.auth_methods),
            )
            return principal, now - row.last_seen_ts >= LAST_SEEN_GRANULARITY_S * US

        # A read, so requests do not queue for the writer's lock; the last use
        # is written separately, at most every LAST_SEEN_GRANULARITY_S.
        principal, stale = self._tx(work, write=False)
        if stale:
            older_than = now - LAST_SEEN_GRANULARITY_S * US + 1
            self._tx(
                lambda c: store.touch_session(
                    c, principal.session_id, now, older_than_ts=older_than
                )
            )
        result: Principal = principal
        return result

    def list_sessions(self, principal: Principal) -> list[SessionView]:
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> list[SessionView]:
            now = self.clock()
            idle = IDLE_TIMEOUT_S[kind] * US
            return [
                SessionView(
                    id=row.id,
                    created_ts=int(row.created_ts),
                    last_seen_ts=int(row.last_seen_ts),
                    expires_ts=int(row.expires_ts),
                    idle_expires_ts=int(row.last_seen_ts) + idle,
                    auth_methods=tuple(sorted(f.value for f in parse_factors(row.auth_methods))),
                    user_agent=row.user_agent,
                    source=row.source,
                    current=row.id == principal.session_id,
                )
                for row in store.active_sessions(connection, kind, principal.subject_id, now)
                if now - row.last_seen_ts < idle
            ]

        result: list[SessionView] = self._tx(work, write=False)
        return result

    def logout(
        self, principal: Principal, ctx: AuditContext, *, session_id: uuid.UUID | None = None
    ) -> None:
        """End the current session, or (``session_id``) another one of the same subject.

        Raises NotFoundError when ``session_id`` is not an active session of theirs.
        """
        target_id = session_id or principal.session_id
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> None:
            count = store.revoke_sessions(
                connection, kind, principal.subject_id, self.clock(), "logout", only=target_id
            )
            if count == 0:
                raise NotFoundError("no such active session")
            record(connection, ctx.event("identity.session.revoke", f"session:{target_id}"))

        self._tx(work)

    def logout_everywhere(self, principal: Principal, ctx: AuditContext) -> int:
        """End every session of the subject, this one included; returns how many."""
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> int:
            count = store.revoke_sessions(
                connection, kind, principal.subject_id, self.clock(), "logout_everywhere"
            )
            record(
                connection,
                ctx.event("identity.session.revoke_all", principal.actor, sessions=count),
            )
            return count

        result: int = self._tx(work)
        return result

    def change_password(
        self, principal: Principal, current: str, new: str, ctx: AuditContext
    ) -> None:
        """Change the password; every other session of the subject ends.

        Raises AuthenticationError (current password wrong) or WeakPasswordError.
        """
        kind = SubjectKind(principal.kind)
        row, has_mfa, words = self._tx(
            lambda c: self._password_context(c, kind, principal.subject_id), write=False
        )
        self._reauthenticate(principal, row.password_hash, current, "identity.password.change", ctx)
        check_password(new, mfa_enrolled=has_mfa, blocklist=self.blocklist, context_words=words)
        new_hash = self.hasher.hash(new)

        def work(connection: Connection) -> None:
            now = self.clock()
            values = {"password_hash": new_hash, "password_changed_ts": now}
            if kind is SubjectKind.CUSTOMER:
                store.update_customer(
                    connection, principal.subject_id, {**values, "updated_ts": now}
                )
            else:
                store.update_staff(connection, principal.subject_id, values)
            revoked = store.revoke_sessions(
                connection,
                kind,
                principal.subject_id,
                now,
                "password_changed",
                keep=principal.session_id,
            )
            record(
                connection,
                ctx.event(
                    "identity.password.change", principal.actor, other_sessions_ended=revoked
                ),
            )

        self._tx(work)

    def _password_context(
        self, connection: Connection, kind: SubjectKind, subject_id: uuid.UUID
    ) -> tuple[Row[Any], bool, tuple[str, ...]]:
        row = self._subject_row(connection, kind, subject_id)
        has_mfa = self._has_mfa(connection, kind, subject_id)
        if kind is SubjectKind.CUSTOMER:
            table = "identity_customers"
            words = password_context_words(
                name=self._decrypt(table, "name_enc", row.id, row.name_enc),
                email=self._decrypt(table, "email_enc", row.id, row.email_enc),
                mobile=self._decrypt(table, "mobile_enc", row.id, row.mobile_enc),
            )
        else:
            words = (row.username,)
        return row, has_mfa, words

    # --- step-up ------------------------------------------------------------------------

    def step_up_factors(self, principal: Principal) -> frozenset[Factor]:
        """The factors this subject can use to confirm a sensitive operation: their
        strong factors, or their password when they have none."""
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> frozenset[Factor]:
            factors = set()
            if _totp_confirmed(store.totp_of(connection, kind, principal.subject_id)):
                factors.add(Factor.TOTP)
            if store.passkeys_of(connection, kind, principal.subject_id):
                factors.add(Factor.PASSKEY)
            if kind is SubjectKind.CUSTOMER and store.devices_of(connection, principal.subject_id):
                factors.add(Factor.DEVICE)
            return frozenset(factors or {Factor.PASSWORD})

        result: frozenset[Factor] = self._tx(work, write=False)
        return result

    def require_step_up(
        self,
        principal: Principal,
        action: str,
        details: Mapping[str, Any],
        *,
        confirmation_id: uuid.UUID | None,
        summary: str,
        ctx: AuditContext,
        factors: frozenset[Factor] | None = None,
        device_only: bool = False,
    ) -> Factor:
        """The step-up API: go on only if the caller proved a factor for this operation.

        Passes when ``confirmation_id`` names a QR confirmation this subject's
        phone approved for exactly ``action`` and ``details`` (it is used up),
        or when the session proved one of the ``factors`` (default: the
        subject's :meth:`step_up_factors`) within :data:`STEP_UP_FRESH_S`.
        With ``device_only`` a subject with a bound phone must confirm this very
        operation on it (new payees, large transfers, a new mobile number).
        Returns the factor that passed.

        Raises:
            StepUpRequiredError: neither; its ``extra`` lists the accepted
                methods and, when the subject has a bound phone, carries a new
                QR confirmation bound to this operation.
            ChallengeError: ``confirmation_id`` is not usable for this operation.
        """
        binding = operation_binding(action, details)
        accepted = factors or self.step_up_factors(principal)
        if device_only and Factor.DEVICE in accepted:
            accepted = frozenset({Factor.DEVICE})
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> Factor | StepUpRequiredError:
            now = self.clock()
            if confirmation_id is not None:
                if Factor.DEVICE not in accepted:
                    raise ChallengeError(
                        "a phone confirmation cannot confirm this operation; use one of "
                        + ", ".join(sorted(f.value for f in accepted))
                    )
                self._consume_confirmation(
                    connection, principal, confirmation_id, action, binding, now
                )
                record(connection, ctx.event("identity.step_up.device", action))
                return Factor.DEVICE
            session = (
                store.session_by_id(connection, principal.session_id)
                if principal.session_id
                else None
            )
            if (
                session is not None
                and session.step_up_ts is not None
                and now - session.step_up_ts <= STEP_UP_FRESH_S * US
            ):
                proved = parse_factors(session.step_up_methods) & accepted
                if proved:
                    return sorted(proved)[0]
            extra: dict[str, Any] = {"methods": sorted(f.value for f in accepted), "action": action}
            if Factor.DEVICE in accepted:
                subject = _Subject(
                    kind,
                    principal.subject_id,
                    self._subject_row(connection, kind, principal.subject_id),
                )
                confirmation = self._new_confirmation(
                    connection,
                    kind="qr_operation",
                    subject=subject,
                    action=action,
                    details=details,
                    summary=summary,
                    session_id=principal.session_id,
                    binding=binding,
                )
                extra["confirmation"] = confirmation.as_dict()
            return StepUpRequiredError(
                "this operation needs you to confirm it is you:"
                f" use one of {', '.join(extra['methods'])}",
                extra,
            )

        outcome = self._tx(work)
        if isinstance(outcome, StepUpRequiredError):
            raise outcome
        result: Factor = outcome
        return result

    def step_up(
        self,
        principal: Principal,
        method: str,
        *,
        code: str | None = None,
        password: str | None = None,
        ctx: AuditContext,
    ) -> None:
        """Prove a factor again in this session (TOTP code or password); it stays
        fresh for :data:`STEP_UP_FRESH_S` seconds.

        Raises InvalidCodeError / AuthenticationError when the proof is wrong,
        ThrottledError after too many wrong codes (counted with the sign-ins'),
        InvalidInputError for a method that cannot be used here.
        """
        kind = SubjectKind(principal.kind)
        if method == Factor.PASSWORD.value:
            row = self._tx(lambda c: self._subject_row(c, kind, principal.subject_id), write=False)
            self._reauthenticate(
                principal, row.password_hash, password or "", "identity.step_up.password", ctx
            )
            self._tx(lambda c: self._mark_step_up(c, principal, Factor.PASSWORD, ctx))
            return
        if method != Factor.TOTP.value:
            raise InvalidInputError(
                "step-up method must be 'totp' or 'password' here; passkeys use"
                " /v1/auth/step-up/passkey and phones a QR confirmation"
            )

        keys = [second_factor_key(kind.value, principal.subject_id.bytes)]

        def work(connection: Connection) -> IdentityError | None:
            now = self.clock()
            error = _throttled(connection, keys, now) or self._use_totp(
                connection, kind, principal.subject_id, code or "", now
            )
            if error is not None:
                if not isinstance(error, ThrottledError):
                    _count_failures(connection, keys, now)
                record(connection, ctx.event("identity.step_up.totp", principal.actor, "denied"))
                return error
            store.clear_throttle(connection, [k.key for k in keys])
            self._mark_step_up(connection, principal, Factor.TOTP, ctx)
            return None

        error = run_in_transaction(self.engine, work, retry_unique_violation=True)
        if error is not None:
            raise error

    def _reauthenticate(
        self,
        principal: Principal,
        password_hash: str,
        password: str,
        action: str,
        ctx: AuditContext,
    ) -> None:
        """Check the password of someone already signed in, under the same
        per-person throttle as second-factor codes: a stolen session cannot
        guess the password without limit.

        Raises ThrottledError or AuthenticationError (both recorded).
        """
        keys = [second_factor_key(principal.kind, principal.subject_id.bytes)]
        blocked = self._tx(lambda c: _throttled(c, keys, self.clock()), write=False)
        if blocked is not None:
            self._tx(
                lambda c: record(
                    c, ctx.event(action, principal.actor, "denied", reason="throttled")
                )
            )
            raise blocked
        if self.hasher.verify(password_hash, password):
            self._tx(lambda c: store.clear_throttle(c, [k.key for k in keys]))
            return

        def fail(connection: Connection) -> None:
            _count_failures(connection, keys, self.clock())
            record(connection, ctx.event(action, principal.actor, "denied"))

        run_in_transaction(self.engine, fail, retry_unique_violation=True)
        raise AuthenticationError("the password is not correct")

    def _mark_step_up(
        self, connection: Connection, principal: Principal, factor: Factor, ctx: AuditContext
    ) -> None:
        if principal.session_id is None:
            raise SessionError("step-up needs a session")
        store.update_session(
            connection,
            principal.session_id,
            {"step_up_ts": self.clock(), "step_up_methods": factor.value},
        )
        record(connection, ctx.event(f"identity.step_up.{factor.value}", principal.actor))

    # --- QR confirmations ---------------------------------------------------------------------

    def _new_confirmation(
        self,
        connection: Connection,
        *,
        kind: str,
        subject: _Subject,
        action: str,
        details: Mapping[str, Any],
        summary: str,
        session_id: uuid.UUID | None,
        binding: bytes | None = None,
    ) -> Confirmation:
        now = self.clock()
        challenge_id = uuid7()
        nonce = secrets.token_urlsafe(24)
        binding = binding or operation_binding(action, details)
        expires_ts = now + CONFIRMATION_TTL_S * US
        store.insert_challenge(
            connection,
            {
                "id": challenge_id,
                "kind": kind,
                "subject_kind": subject.kind.value,
                "subject_id": subject.id,
                "secret_hash": store.secret_hash(nonce),
                "action": action,
                "binding": binding,
                "payload": json.dumps(
                    {
                        "summary": summary[:SUMMARY_CHARS_MAX],
                        **({"ticket": details["ticket"]} if "ticket" in details else {}),
                    }
                ),
                "session_id": session_id,
                "status": "pending",
                "attempts": 0,
                "created_ts": now,
                "expires_ts": expires_ts,
            },
        )
        uri = confirmation_uri(str(challenge_id), nonce)
        return Confirmation(
            id=challenge_id, action=action, uri=uri, qr_svg=qr_svg(uri), expires_ts=expires_ts
        )

    def _live_confirmation(
        self, connection: Connection, challenge_id: uuid.UUID, nonce: str
    ) -> Row[Any]:
        row = store.challenge_by_id(connection, challenge_id)
        if (
            row is None
            or row.kind not in ("qr_login", "qr_operation")
            or row.secret_hash is None
            or not secrets.compare_digest(
                bytes(row.secret_hash), store.secret_hash(nonce[:TOKEN_CHARS_MAX])
            )
        ):
            raise NotFoundError("no such confirmation")
        return row

    def confirmation(self, challenge_id: uuid.UUID, nonce: str) -> ConfirmationView:
        """What the phone shows: the operation, and whether it is still open."""

        def work(connection: Connection) -> ConfirmationView:
            row = self._live_confirmation(connection, challenge_id, nonce)
            status = row.status
            if status == "pending" and row.expires_ts <= self.clock():
                status = "expired"
            return ConfirmationView(
                id=row.id,
                action=row.action,
                summary=json.loads(row.payload)["summary"],
                status=status,
                expires_ts=int(row.expires_ts),
                binding=bytes(row.binding),
            )

        result: ConfirmationView = self._tx(work, write=False)
        return result

    def decide_confirmation(
        self,
        challenge_id: uuid.UUID,
        nonce: str,
        device_id: uuid.UUID,
        signature_b64: str,
        *,
        approve: bool,
        ctx: AuditContext,
    ) -> ConfirmationView:
        """A bound phone approves (or rejects) a QR confirmation by signing it.

        Raises:
            NotFoundError: no such confirmation for this nonce.
            ChallengeError: the signature does not verify with a device of the
                confirmation's subject, or it expired or was decided already.
        """
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError("signature must be standard base64 of 64 bytes") from None

        def work(connection: Connection) -> ConfirmationView | IdentityError:
            now = self.clock()
            row = self._live_confirmation(connection, challenge_id, nonce)
            device = store.device_by_id(connection, device_id)
            message = confirmation_message(row.id.bytes, nonce, row.action, bytes(row.binding))
            if approve is False:
                message = b"reject|" + message
            if (
                device is None
                or device.revoked_ts is not None
                or row.subject_kind != SubjectKind.CUSTOMER.value
                or device.customer_id != row.subject_id
                or not verify_signature(bytes(device.public_key), signature, message)
            ):
                record(
                    connection,
                    ctx.event(
                        "identity.confirmation.decide",
                        f"confirmation:{row.id}",
                        "denied",
                        actor=f"device:{device_id}",
                    ),
                )
                return ChallengeError(
                    "the confirmation signature is not valid for a phone bound to this account"
                )
            status = "approved" if approve else "rejected"
            if not store.move_challenge(
                connection,
                row.id,
                "pending",
                {"status": status, "device_id": device_id, "decided_ts": now},
                now,
            ):
                return ChallengeError("this confirmation has expired or was already decided")
            store.update_device(connection, device_id, {"last_used_ts": now})
            actor = f"customer:{row.subject_id}"
            record(
                connection,
                ctx.event(
                    f"identity.confirmation.{'approve' if approve else 'reject'}",
                    f"confirmation:{row.id}",
                    actor=actor,
                    role="customer",
                    device=str(device_id),
                    operation=row.action,
                ),
            )
            return ConfirmationView(
                row.id,
                row.action,
                json.loads(row.payload)["summary"],
                status,
                int(row.expires_ts),
                bytes(row.binding),
            )

        outcome = self._tx(work)
        if isinstance(outcome, IdentityError):
            raise outcome
        result: ConfirmationView = outcome
        return result

    def _consume_confirmation(
        self,
        connection: Connection,
        principal: Principal,
        confirmation_id: uuid.UUID,
        action: str,
        binding: bytes,
        now: int,
    ) -> None:
        row = store.challenge_by_id(connection, confirmation_id)
        if (
            row is None
            or row.kind != "qr_operation"
            or row.subject_kind != principal.kind
            or row.subject_id != principal.subject_id
        ):
            raise ChallengeError("no such confirmation for this account")
        if row.action != action or not secrets.compare_digest(bytes(row.binding), binding):
            raise ChallengeError("this confirmation was given for a different operation")
        if row.status != "approved":
            raise ChallengeError(
                "this confirmation is not approved on your phone"
                if row.status == "pending"
                else "this confirmation was rejected or already used"
            )
        if not store.move_challenge(connection, row.id, "approved", {"status": "consumed"}, now):
            raise ChallengeError("this confirmation has expired or was already used")

    # --- devices ------------------------------------------------------------------------

    def bind_device(
        self, principal: Principal, name: str, public_key_b64: str, ctx: AuditContext
    ) -> DeviceView:
        """Bind a phone's Ed25519 public key to the customer (call after step-up).

        Raises InvalidInputError (bad key or name), AlreadyExistsError (key bound
        already), StateError (too many devices).
        """
        name = name.strip()
        if not 1 <= len(name) <= DEVICE_NAME_CHARS_MAX or not name.isprintable():
            raise InvalidInputError(
                f"device name must be 1 to {DEVICE_NAME_CHARS_MAX} printable characters"
            )
        try:
            public_key = base64.b64decode(public_key_b64, validate=True)
        except (binascii.Error, ValueError):
            public_key = b""
        if len(public_key) != 32:
            raise InvalidInputError(
                "public_key must be the standard base64 of a 32-byte Ed25519 public key"
            )

        def work(connection: Connection) -> DeviceView:
            if len(store.devices_of(connection, principal.subject_id)) >= DEVICES_PER_CUSTOMER_MAX:
                raise StateError(
                    f"at most {DEVICES_PER_CUSTOMER_MAX} phones can be bound; remove one first"
                )
            if store.device_by_public_key(connection, public_key) is not None:
                raise AlreadyExistsError("this device key is bound already")
            now = self.clock()
            device_id = uuid7()
            store.insert_device(
                connection,
                {
                    "id": device_id,
                    "customer_id": principal.subject_id,
                    "public_key": public_key,
                    "name": name,
                    "created_ts": now,
                },
            )
            record(connection, ctx.event("identity.device.bind", f"device:{device_id}", name=name))
            return DeviceView(device_id, name, _b64(public_key), now, None)

        result: DeviceView = run_in_transaction(self.engine, work, retry_unique_violation=True)
        return result

    def devices(self, principal: Principal) -> list[DeviceView]:
        rows = self._tx(lambda c: store.devices_of(c, principal.subject_id), write=False)
        return [
            DeviceView(r.id, r.name, _b64(bytes(r.public_key)), int(r.created_ts), r.last_used_ts)
            for r in rows
        ]

    def revoke_device(self, principal: Principal, device_id: uuid.UUID, ctx: AuditContext) -> None:
        def work(connection: Connection) -> None:
            row = store.device_by_id(connection, device_id)
            if row is None or row.customer_id != principal.subject_id or row.revoked_ts is not None:
                raise NotFoundError("no such device")
            store.update_device(connection, device_id, {"revoked_ts": self.clock()})
            record(connection, ctx.event("identity.device.revoke", f"device:{device_id}"))

        self._tx(work)

    # --- TOTP and recovery codes ------------------------------------------------------------

    def start_totp(self, principal: Principal, ctx: AuditContext) -> TotpEnrolment:
        """Begin TOTP enrolment: a new secret to scan; confirmed by :meth:`confirm_totp`.

        Raises StateError when TOTP is enrolled already (disable it first).
        """
        kind = SubjectKind(principal.kind)
        secret = new_totp_secret()

        def work(connection: Connection) -> TotpEnrolment:
            existing = store.totp_of(connection, kind, principal.subject_id)
            if _totp_confirmed(existing):
                raise StateError("an authenticator app is set up already; remove it first")
            store.delete_totp(connection, kind, principal.subject_id)
            totp_id = uuid7()
            store.insert_totp(
                connection,
                {
                    "id": totp_id,
                    "subject_kind": kind.value,
                    "subject_id": principal.subject_id,
                    "secret_enc": self._encrypt("identity_totp", "secret_enc", totp_id, secret),
                    "pii_key_id": self.keyring.active_key_id,
                    "created_ts": self.clock(),
                },
            )
            label = self._account_label(connection, kind, principal.subject_id)
            record(connection, ctx.event("identity.totp.start", principal.actor))
            uri = provisioning_uri(secret, label)
            return TotpEnrolment(secret=secret, uri=uri, qr_svg=qr_svg(uri))

        result: TotpEnrolment = self._tx(work)
        return result

    def _account_label(
        self, connection: Connection, kind: SubjectKind, subject_id: uuid.UUID
    ) -> str:
        row = self._subject_row(connection, kind, subject_id)
        if kind is SubjectKind.STAFF:
            return str(row.username)
        return mask_mobile(
            self._decrypt("identity_customers", "mobile_enc", row.id, row.mobile_enc)
        )

    def confirm_totp(self, principal: Principal, code: str, ctx: AuditContext) -> list[str]:
        """Finish enrolment with a first code; returns the recovery codes (shown once).

        Raises StateError (no enrolment started) or InvalidCodeError.
        """
        kind = SubjectKind(principal.kind)
        codes = new_recovery_codes()

        def work(connection: Connection) -> list[str] | IdentityError:
            now = self.clock()
            totp = store.totp_of(connection, kind, principal.subject_id)
            if totp is None or totp.confirmed_ts is not None:
                raise StateError("start the authenticator set-up first")
            secret = self._decrypt("identity_totp", "secret_enc", totp.id, totp.secret_enc)
            step = verify_totp(secret, code, now_s=now // US, last_used_step=None)
            if step is None:
                return InvalidCodeError(
                    "the code is not correct; check the app's clock and try the next code"
                )
            store.update_totp(connection, totp.id, {"confirmed_ts": now, "last_used_step": step})
            store.replace_recovery_codes(
                connection,
                kind,
                principal.subject_id,
                [hash_recovery_code(normalise_recovery_code(c) or "") for c in codes],
                now,
            )
            record(connection, ctx.event("identity.totp.enable", principal.actor))
            return codes

        outcome = self._tx(work)
        if isinstance(outcome, IdentityError):
            raise outcome
        result: list[str] = outcome
        return result

    def disable_totp(self, principal: Principal, ctx: AuditContext) -> None:
        """Remove TOTP and the recovery codes (call after step-up)."""
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> None:
            if store.totp_of(connection, kind, principal.subject_id) is None:
                raise NotFoundError("no authenticator app is set up")
            store.delete_totp(connection, kind, principal.subject_id)
            store.delete_recovery_codes(connection, kind, principal.subject_id)
            record(connection, ctx.event("identity.totp.disable", principal.actor))

        self._tx(work)

    def regenerate_recovery_codes(self, principal: Principal, ctx: AuditContext) -> list[str]:
        """New recovery codes; the old ones stop working (call after step-up)."""
        kind = SubjectKind(principal.kind)
        codes = new_recovery_codes()

        def work(connection: Connection) -> list[str]:
            if not _totp_confirmed(store.totp_of(connection, kind, principal.subject_id)):
                raise StateError("recovery codes come with an authenticator app; set one up first")
            store.replace_recovery_codes(
                connection,
                kind,
                principal.subject_id,
                [hash_recovery_code(normalise_recovery_code(c) or "") for c in codes],
                self.clock(),
            )
            record(connection, ctx.event("identity.recovery_codes.regenerate", principal.actor))
            return codes

        result: list[str] = self._tx(work)
        return result

    # --- passkeys -------------------------------------------------------------------------

    def _new_ceremony(
        self,
        connection: Connection,
        kind: str,
        challenge: bytes,
        subject: tuple[str, uuid.UUID] | None,
    ) -> uuid.UUID:
        now = self.clock()
        ceremony_id = uuid7()
        store.insert_challenge(
            connection,
            {
                "id": ceremony_id,
                "kind": kind,
                "subject_kind": subject[0] if subject else None,
                "subject_id": subject[1] if subject else None,
                "payload": json.dumps({"challenge": _b64(challenge)}),
                "status": "pending",
                "attempts": 0,
                "created_ts": now,
                "expires_ts": now + PASSKEY_CEREMONY_TTL_S * US,
            },
        )
        return ceremony_id

    def _take_ceremony(
        self,
        connection: Connection,
        ceremony_id: uuid.UUID,
        kind: str,
        subject: tuple[str, uuid.UUID] | None,
    ) -> bytes:
        """The ceremony's challenge, used up now whatever the outcome."""
        now = self.clock()
        row = store.challenge_by_id(connection, ceremony_id)
        if (
            row is None
            or row.kind != kind
            or (subject is not None and (row.subject_kind, row.subject_id) != subject)
        ):
            raise ChallengeError("no such passkey ceremony; start again")
        if not store.move_challenge(
            connection, ceremony_id, "pending", {"status": "consumed", "decided_ts": now}, now
        ):
            raise ChallengeError("the passkey ceremony has expired or was used; start again")
        return base64.b64decode(json.loads(row.payload)["challenge"])

    def passkey_registration_options(
        self, principal: Principal
    ) -> tuple[uuid.UUID, dict[str, Any]]:
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            row = self._subject_row(connection, kind, principal.subject_id)
            existing = store.passkeys_of(connection, kind, principal.subject_id)
            label = self._account_label(connection, kind, principal.subject_id)
            display = (
                str(row.username)
                if kind is SubjectKind.STAFF
                else self._decrypt("identity_customers", "name_enc", row.id, row.name_enc)
            )
            options, challenge = registration_options(
                self.relying_party,
                user_id=principal.subject_id.bytes,
                user_name=label,
                display_name=display,
                exclude_credential_ids=[bytes(p.credential_id) for p in existing],
            )
            ceremony_id = self._new_ceremony(
                connection, "webauthn_register", challenge, (kind.value, principal.subject_id)
            )
            return ceremony_id, options

        result: tuple[uuid.UUID, dict[str, Any]] = self._tx(work)
        return result

    def register_passkey(
        self,
        principal: Principal,
        ceremony_id: uuid.UUID,
        response: Mapping[str, Any] | str,
        name: str,
        ctx: AuditContext,
    ) -> PasskeyView:
        """Store a new passkey after checking the authenticator's response.

        Raises ChallengeError (ceremony), PasskeyError (response), StateError (limit).
        """
        kind = SubjectKind(principal.kind)
        name = (name or "passkey").strip()[:64] or "passkey"
        challenge = self._tx(
            lambda c: self._take_ceremony(
                c, ceremony_id, "webauthn_register", (kind.value, principal.subject_id)
            )
        )
        new = verify_registration(self.relying_party, response, expected_challenge=challenge)

        def work(connection: Connection) -> PasskeyView:
            if (
                len(store.passkeys_of(connection, kind, principal.subject_id))
                >= PASSKEYS_PER_USER_MAX
            ):
                raise StateError(f"at most {PASSKEYS_PER_USER_MAX} passkeys; remove one first")
            if store.passkey_by_credential(connection, new.credential_id) is not None:
                raise AlreadyExistsError("this passkey is registered already")
            now = self.clock()
            passkey_id = uuid7()
            store.insert_passkey(
                connection,
                {
                    "id": passkey_id,
                    "subject_kind": kind.value,
                    "subject_id": principal.subject_id,
                    "credential_id": new.credential_id,
                    "public_key": new.public_key,
                    "sign_count": new.sign_count,
                    "aaguid": new.aaguid,
                    "backed_up": int(new.backed_up),
                    "transports": ",".join(new.transports),
                    "name": name,
                    "created_ts": now,
                },
            )
            record(
                connection,
                ctx.event("identity.passkey.register", f"passkey:{passkey_id}", aaguid=new.aaguid),
            )
            return PasskeyView(passkey_id, name, now, None, new.backed_up)

        result: PasskeyView = run_in_transaction(self.engine, work, retry_unique_violation=True)
        return result

    def passkeys(self, principal: Principal) -> list[PasskeyView]:
        kind = SubjectKind(principal.kind)
        rows = self._tx(lambda c: store.passkeys_of(c, kind, principal.subject_id), write=False)
        return [
            PasskeyView(r.id, r.name, int(r.created_ts), r.last_used_ts, bool(r.backed_up))
            for r in rows
        ]

    def delete_passkey(
        self, principal: Principal, passkey_id: uuid.UUID, ctx: AuditContext
    ) -> None:
        kind = SubjectKind(principal.kind)

        def work(connection: Connection) -> None:
            if not store.delete_passkey(connection, kind, principal.subject_id, passkey_id):
                raise NotFoundError("no such passkey")
            record(connection, ctx.event("identity.passkey.delete", f"passkey:{passkey_id}"))

        self._tx(work)

    def passkey_login_options(
        self, *, step_up_for: Principal | None = None
    ) -> tuple[uuid.UUID, dict[str, Any]]:
        """Options for a passkey sign-in (discoverable: no account named) or, with
        ``step_up_for``, for re-proving a passkey in a session."""

        def work(connection: Connection) -> tuple[uuid.UUID, dict[str, Any]]:
            allow: list[bytes] = []
            subject = None
            kind = "webauthn_login"
            if step_up_for is not None:
                subject_kind = SubjectKind(step_up_for.kind)
                subject = (subject_kind.value, step_up_for.subject_id)
                allow = [
                    bytes(p.credential_id)
                    for p in store.passkeys_of(connection, subject_kind, step_up_for.subject_id)
                ]
                if not allow:
                    raise StateError("no passkey is registered")
                kind = "webauthn_step_up"
            options, challenge = authentication_options(
                self.relying_party, allow_credential_ids=allow
            )
            return self._new_ceremony(connection, kind, challenge, subject), options

        result: tuple[uuid.UUID, dict[str, Any]] = self._tx(work)
        return result

    def _verify_passkey(
        self,
        ceremony_id: uuid.UUID,
        response: Mapping[str, Any] | str,
        kind: str,
        subject: tuple[str, uuid.UUID] | None,
        ctx: AuditContext,
    ) -> Row[Any]:
        challenge = self._tx(lambda c: self._take_ceremony(c, ceremony_id, kind, subject))
        credential_id = credential_id_of(response)
        passkey: Row[Any] | None = self._tx(
            lambda c: store.passkey_by_credential(c, credential_id), write=False
        )
        if passkey is None or (
            subject is not None and (passkey.subject_kind, passkey.subject_id) != subject
        ):
            self._tx(
                lambda c: record(
                    c,
                    ctx.event(
                        "identity.passkey.login", None, "denied", reason="unknown_credential"
                    ),
                )
            )
            raise AuthenticationError("this passkey is not registered with the bank")
        try:
            new_count = verify_authentication(
                self.relying_party,
                response,
                expected_challenge=challenge,
                public_key=bytes(passkey.public_key),
                sign_count=int(passkey.sign_count),
            )
        except IdentityError:
            self._tx(
                lambda c: record(
                    c, ctx.event("identity.passkey.login", f"passkey:{passkey.id}", "denied")
                )
            )
            raise
        moved = self._tx(
            lambda c: store.advance_passkey(
                c, passkey.id, int(passkey.sign_count), new_count, self.clock()
            )
        )
        if not moved:
            raise AuthenticationError(
                "this passkey was used at the same moment elsewhere; try again"
            )
        return passkey

    def login_with_passkey(
        self,
        ceremony_id: uuid.UUID,
        response: Mapping[str, Any] | str,
        *,
        browser_token: str | None,
        user_agent: str | None,
        ctx: AuditContext,
    ) -> LoginResult:
        """Sign in with a passkey (user verification required): no password needed.

        Raises ChallengeError, PasskeyError or AuthenticationError.
        """
        passkey = self._verify_passkey(ceremony_id, response, "webauthn_login", None, ctx)
        kind = SubjectKind(passkey.subject_kind)

        def work(connection: Connection) -> LoginResult:
            row = self._subject_row(connection, kind, passkey.subject_id)
            if row.status != "active":
                raise AuthenticationError()
            browser_id = None
            if browser_token:
                browser = store.browser_for(
                    connection, store.secret_hash(browser_token[:TOKEN_CHARS_MAX]), kind, row.id
                )
                browser_id = None if browser is None else browser.id
            return self._open_session(
                connection,
                _Subject(kind, row.id, row),
                {Factor.PASSKEY},
                browser_id,
                user_agent,
                ctx,
            )

        result: LoginResult = self._tx(work)
        return result

    def step_up_with_passkey(
        self,
        principal: Principal,
        ceremony_id: uuid.UUID,
        response: Mapping[str, Any] | str,
        ctx: AuditContext,
    ) -> None:
        kind = SubjectKind(principal.kind)
        self._verify_passkey(
            ceremony_id, response, "webauthn_step_up", (kind.value, principal.subject_id), ctx
        )
        self._tx(lambda c: self._mark_step_up(c, principal, Factor.PASSKEY, ctx))

    # --- sensitive profile changes ---------------------------------------------------------

    def change_mobile(
        self, principal: Principal, new_mobile: str, ctx: AuditContext
    ) -> CustomerView:
        """Change the customer's mobile number (call after step-up bound to the new number).

        Raises InvalidMobileError or AlreadyExistsError.
        """
        mobile = parse_mobile(new_mobile)
        index = self.keyring.blind_index(mobile, purpose=MOBILE_PURPOSE)
        customer_id = principal.subject_id

        def work(connection: Connection) -> CustomerView:
            existing = store.customer_by_index(connection, "mobile_index", index)
            if existing is not None and existing.id != customer_id:
                raise AlreadyExistsError("this mobile number belongs to another account")
            row = self._subject_row(connection, SubjectKind.CUSTOMER, customer_id)
            now = self.clock()
            # Every column is re-encrypted under the active key, so the row's key id stays true.
            table = "identity_customers"
            values: dict[str, Any] = {
                col: self._encrypt(
                    table,
                    col,
                    customer_id,
                    self._decrypt(table, col, customer_id, getattr(row, col)),
                )
                for col in ("name_enc", "resident_id_enc", "email_enc")
            }
            values.update(
                mobile_enc=self._encrypt(table, "mobile_enc", customer_id, mobile),
                mobile_index=index,
                pii_key_id=self.keyring.active_key_id,
                updated_ts=now,
            )
            store.update_customer(connection, customer_id, values)
            record(
                connection,
                ctx.event(
                    "identity.customer.mobile.change", principal.actor, mobile=mask_mobile(mobile)
                ),
            )
            return self._customer_view(connection, store.customer_by_id(connection, customer_id))  # type: ignore[arg-type]

        result: CustomerView = run_in_transaction(self.engine, work, retry_unique_violation=True)
        return result

    # --- upkeep ------------------------------------------------------------------------------

    def prune(self, *, older_than_s: int = 24 * 3600) -> int:
        """Delete challenges and throttle counters past use; returns rows removed."""

        def work(connection: Connection) -> int:
            cutoff = self.clock() - older_than_s * US
            return store.prune_challenges(connection, cutoff) + store.prune_throttle(
                connection, cutoff
            )

        result: int = self._tx(work)
        return result


def _throttled(
    connection: Connection, keys: Sequence[ThrottleKey], now: int
) -> ThrottledError | None:
    """The error to answer while any of ``keys`` is blocked, else None."""
    blocked_until = max(
        (int(r.blocked_until_ts) for r in store.throttle_rows(connection, keys).values()),
        default=0,
    )
    if blocked_until > now:
        return ThrottledError(max(1, math.ceil((blocked_until - now) / US)))
    return None


def _second_factor_key(subject: _Subject) -> ThrottleKey:
    return second_factor_key(subject.kind.value, subject.id.bytes)


def _count_failures(connection: Connection, keys: Sequence[ThrottleKey], now: int) -> None:
    """One more failure on each of ``keys``; the rows stay locked until commit."""
    rows = store.throttle_rows(connection, keys, lock=True)
    for key in keys:
        existing = rows.get(key.key)
        failures, blocked = next_state(
            0 if existing is None else int(existing.failures),
            0 if existing is None else int(existing.last_failure_ts),
            now,
            RULES[key.scope],
        )
        store.upsert_throttle(connection, key, failures, now, blocked, exists=existing is not None)


def _totp_confirmed(row: Row[Any] | None) -> bool:
    return row is not None and row.confirmed_ts is not None


def _confirmation_for_ticket(connection: Connection, ticket_id: uuid.UUID) -> Row[Any] | None:
    return store.confirmation_for_ticket(connection, ticket_id)

"""Customers and staff signing in, and what a signed-in person manages about
themselves: profile, sessions, second factors, passkeys, bound phones.

Every use case lives in :mod:`zhifu.identity`; this module maps HTTP to it.
A customer's endpoints only ever act on the caller's own records.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Header, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from zhifu.api.auth import AuditCtx, CurrentCustomer, CurrentPrincipal
from zhifu.api.deps import RuntimeDep
from zhifu.api.pagination import PAGE_RESPONSES, PageQuery, by_created
from zhifu.api.params import ConfirmationId
from zhifu.api.problems import problem_responses
from zhifu.identity.access import SubjectKind
from zhifu.identity.errors import NotFoundError
from zhifu.identity.model import NAME_LENGTH_MAX, PASSWORD_INPUT_LENGTH_MAX
from zhifu.identity.service import (
    Confirmation,
    ConfirmationView,
    CustomerView,
    LoginResult,
    Registration,
    SessionView,
)

router = APIRouter(prefix="/v1", tags=["identity"])

BROWSER_HEADER = "X-Zhifu-Browser"
TEXT_MAX = 320
# The stores' orders, the id breaking ties between equal times. The lists are
# read whole and sliced by the pager: at most SESSIONS_PER_SUBJECT_MAX sessions,
# DEVICES_PER_CUSTOMER_MAX phones and PASSKEYS_PER_USER_MAX passkeys.
SESSIONS_ORDER: Final = by_created("sessions", descending=True)
DEVICES_ORDER: Final = by_created("devices")
PASSKEYS_ORDER: Final = by_created("passkeys")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegistrationIn(_In):
    name: str = Field(min_length=1, max_length=NAME_LENGTH_MAX * 4)
    resident_id: str = Field(min_length=1, max_length=64)
    mobile: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3, max_length=TEXT_MAX)
    password: str = Field(min_length=1, max_length=PASSWORD_INPUT_LENGTH_MAX, repr=False)


class CustomerOut(BaseModel):
    id: uuid.UUID
    name: str
    resident_id: str = Field(description="Masked: region code and last two characters.")
    mobile: str = Field(description="Masked.")
    email: str = Field(description="Masked.")
    status: str
    created_ts: int
    totp_enabled: bool
    passkeys: int
    devices: int

    @classmethod
    def of(cls, v: CustomerView) -> CustomerOut:
        return cls(
            id=v.id,
            name=v.name,
            resident_id=v.resident_id_masked,
            mobile=v.mobile_masked,
            email=v.email_masked,
            status=v.status,
            created_ts=v.created_ts,
            totp_enabled=v.totp_enabled,
            passkeys=v.passkeys,
            devices=v.devices,
        )


class ConfirmationOut(BaseModel):
    id: uuid.UUID
    action: str
    uri: str = Field(description="The text of the QR code: the bound phone scans it.")
    qr_svg: str
    expires_ts: int

    @classmethod
    def of(cls, c: Confirmation) -> ConfirmationOut:
        return cls(id=c.id, action=c.action, uri=c.uri, qr_svg=c.qr_svg, expires_ts=c.expires_ts)


class LoginIn(_In):
    identifier: str = Field(
        min_length=1, max_length=TEXT_MAX, description="Mobile number or e-mail (staff: username)."
    )
    password: str = Field(min_length=1, max_length=PASSWORD_INPUT_LENGTH_MAX, repr=False)


class LoginOut(BaseModel):
    status: Literal["authenticated", "mfa_required"]
    subject_kind: str
    session_token: str | None = None
    session_id: uuid.UUID | None = None
    expires_ts: int | None = None
    browser_token: str | None = Field(
        None, description=f"Keep it and send it as {BROWSER_HEADER} on later sign-ins."
    )
    ticket: str | None = None
    methods: list[str] = []
    confirmation: ConfirmationOut | None = None

    @classmethod
    def of(cls, r: LoginResult) -> LoginOut:
        return cls(
            status=r.status,
            subject_kind=r.subject_kind,
            session_token=r.session_token,
            session_id=r.session_id,
            expires_ts=r.expires_ts,
            browser_token=r.browser_token,
            ticket=r.ticket,
            methods=list(r.methods),
            confirmation=None if r.confirmation is None else ConfirmationOut.of(r.confirmation),
        )


class SecondFactorIn(_In):
    ticket: str = Field(min_length=1, max_length=64, repr=False)
    method: Literal["totp", "recovery_code", "device"]
    code: str | None = Field(None, max_length=64, repr=False)


class PasskeyOptionsOut(BaseModel):
    ceremony_id: uuid.UUID
    options: dict[str, Any]


class PasskeyResponseIn(_In):
    ceremony_id: uuid.UUID
    response: dict[str, Any]
    name: str | None = Field(None, max_length=64)


class SessionOut(BaseModel):
    id: uuid.UUID
    created_ts: int
    last_seen_ts: int
    expires_ts: int
    idle_expires_ts: int
    auth_methods: list[str]
    user_agent: str | None
    source: str | None
    current: bool

    @classmethod
    def of(cls, s: SessionView) -> SessionOut:
        return cls(
            id=s.id,
            created_ts=s.created_ts,
            last_seen_ts=s.last_seen_ts,
            expires_ts=s.expires_ts,
            idle_expires_ts=s.idle_expires_ts,
            auth_methods=list(s.auth_methods),
            user_agent=s.user_agent,
            source=s.source,
            current=s.current,
        )


class StepUpIn(_In):
    method: Literal["totp", "password"]
    code: str | None = Field(None, max_length=64, repr=False)
    password: str | None = Field(None, max_length=PASSWORD_INPUT_LENGTH_MAX, repr=False)


class PasswordChangeIn(_In):
    current_password: str = Field(min_length=1, max_length=PASSWORD_INPUT_LENGTH_MAX, repr=False)
    new_password: str = Field(min_length=1, max_length=PASSWORD_INPUT_LENGTH_MAX, repr=False)


class TotpStartOut(BaseModel):
    secret: str
    uri: str
    qr_svg: str


class CodeIn(_In):
    code: str = Field(min_length=1, max_length=64, repr=False)


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str] = Field(description="Shown once: store them somewhere safe.")


class DeviceIn(_In):
    name: str = Field(min_length=1, max_length=64)
    public_key: str = Field(
        min_length=1, max_length=64, description="Standard base64 of the phone's Ed25519 key."
    )


class DeviceOut(BaseModel):
    id: uuid.UUID
    name: str
    public_key: str
    created_ts: int
    last_used_ts: int | None


class PasskeyOut(BaseModel):
    id: uuid.UUID
    name: str
    created_ts: int
    last_used_ts: int | None
    backed_up: bool


class MobileChangeIn(_In):
    mobile: str = Field(min_length=1, max_length=64)


class ConfirmationViewOut(BaseModel):
    id: uuid.UUID
    action: str
    summary: str
    status: str
    expires_ts: int
    binding: str = Field(description="Hex digest of the operation; the phone signs it.")

    @classmethod
    def of(cls, v: ConfirmationView) -> ConfirmationViewOut:
        return cls(
            id=v.id,
            action=v.action,
            summary=v.summary,
            status=v.status,
            expires_ts=v.expires_ts,
            binding=v.binding.hex(),
        )


class ConfirmationDecisionIn(_In):
    nonce: str = Field(min_length=1, max_length=64, repr=False)
    device_id: uuid.UUID
    signature: str = Field(min_length=1, max_length=128)


UserAgent = Annotated[str | None, Header()]
BrowserToken = Annotated[str | None, Header(alias=BROWSER_HEADER)]


# --- registration and sign-in -----------------------------------------------------------


@router.post(
    "/customers",
    status_code=201,
    response_model=CustomerOut,
    summary="Register as a customer",
    responses=problem_responses(409, 422),
)
async def register(body: RegistrationIn, runtime: RuntimeDep, ctx: AuditCtx) -> CustomerOut:
    """Real-name registration: legal name, PRC resident ID (checked: region,
    birth date, ISO 7064 MOD 11-2 check character), mobile, e-mail and a
    password (15+ characters until a second factor is set up; no composition
    rules; common and breached passwords refused). Personal data is stored
    encrypted; the answer shows it masked."""
    registration = Registration(
        name=body.name,
        resident_id=body.resident_id,
        mobile=body.mobile,
        email=body.email,
        password=body.password,
    )
    view = await run_in_threadpool(runtime.identity.register_customer, registration, ctx)
    return CustomerOut.of(view)


async def _login(
    kind: SubjectKind,
    body: LoginIn,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    user_agent: str | None,
    browser: str | None,
) -> LoginOut:
    result = await run_in_threadpool(
        lambda: runtime.identity.login(
            kind,
            body.identifier,
            body.password,
            browser_token=browser,
            user_agent=user_agent,
            ctx=ctx,
        )
    )
    return LoginOut.of(result)


@router.post(
    "/auth/login",
    response_model=LoginOut,
    summary="Customer sign-in with a password",
    responses=problem_responses(401, 422, 429),
)
async def login(
    body: LoginIn,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    user_agent: UserAgent = None,
    browser: BrowserToken = None,
) -> LoginOut:
    """Answers ``authenticated`` with a new session token, or ``mfa_required``
    with a ticket for ``/v1/auth/login/second-factor`` (and, with a bound
    phone, a QR confirmation to scan). Repeated failures slow down sign-ins
    for that account and address (429 with Retry-After); nothing locks the
    account."""
    return await _login(SubjectKind.CUSTOMER, body, runtime, ctx, user_agent, browser)


@router.post(
    "/staff/login",
    response_model=LoginOut,
    summary="Staff sign-in",
    responses=problem_responses(401, 422, 429),
)
async def staff_login(
    body: LoginIn,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    user_agent: UserAgent = None,
    browser: BrowserToken = None,
) -> LoginOut:
    """Staff sign in with their username and password (and TOTP once enrolled)."""
    return await _login(SubjectKind.STAFF, body, runtime, ctx, user_agent, browser)


@router.post(
    "/auth/login/second-factor",
    response_model=LoginOut,
    summary="Finish a sign-in with a second factor",
    responses=problem_responses(401, 409, 422),
)
async def second_factor(
    body: SecondFactorIn, runtime: RuntimeDep, ctx: AuditCtx, user_agent: UserAgent = None
) -> LoginOut:
    """``totp`` or ``recovery_code`` with ``code``; ``device`` once the phone
    approved the QR confirmation (409 ``invalid_state`` while it has not)."""
    result = await run_in_threadpool(
        lambda: runtime.identity.complete_login(
            body.ticket, body.method, body.code, user_agent=user_agent, ctx=ctx
        )
    )
    return LoginOut.of(result)


@router.post(
    "/auth/passkey/options",
    response_model=PasskeyOptionsOut,
    summary="Start a passkey sign-in",
)
async def passkey_login_options(runtime: RuntimeDep, ctx: AuditCtx) -> PasskeyOptionsOut:
    ceremony_id, options = await run_in_threadpool(runtime.identity.passkey_login_options)
    return PasskeyOptionsOut(ceremony_id=ceremony_id, options=options)


@router.post(
    "/auth/passkey",
    response_model=LoginOut,
    summary="Sign in with a passkey (fingerprint, face or PIN)",
    responses=problem_responses(401, 409, 422),
)
async def passkey_login(
    body: PasskeyResponseIn,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    user_agent: UserAgent = None,
    browser: BrowserToken = None,
) -> LoginOut:
    result = await run_in_threadpool(
        lambda: runtime.identity.login_with_passkey(
            body.ceremony_id, body.response, browser_token=browser, user_agent=user_agent, ctx=ctx
        )
    )
    return LoginOut.of(result)


@router.post("/auth/logout", status_code=204, summary="Sign out this session")
async def logout(principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx) -> Response:
    await run_in_threadpool(lambda: runtime.identity.logout(principal, ctx))
    return Response(status_code=204)


@router.post("/auth/logout-everywhere", summary="Sign out every session")
async def logout_everywhere(
    principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> dict[str, int]:
    count = await run_in_threadpool(runtime.identity.logout_everywhere, principal, ctx)
    return {"sessions_ended": count}


# --- step-up ---------------------------------------------------------------------------


@router.post(
    "/auth/step-up",
    status_code=204,
    summary="Prove a factor again for sensitive operations",
    responses=problem_responses(401, 422),
)
async def step_up(
    body: StepUpIn, principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    """A TOTP code (or the password, for people with no second factor) stays
    fresh for five minutes; operations that answered 403 ``step-up-required``
    then go through."""
    await run_in_threadpool(
        lambda: runtime.identity.step_up(
            principal, body.method, code=body.code, password=body.password, ctx=ctx
        )
    )
    return Response(status_code=204)


@router.post(
    "/auth/step-up/passkey/options", response_model=PasskeyOptionsOut, summary="Passkey step-up"
)
async def step_up_passkey_options(
    principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> PasskeyOptionsOut:
    ceremony_id, options = await run_in_threadpool(
        lambda: runtime.identity.passkey_login_options(step_up_for=principal)
    )
    return PasskeyOptionsOut(ceremony_id=ceremony_id, options=options)


@router.post("/auth/step-up/passkey", status_code=204, summary="Finish a passkey step-up")
async def step_up_passkey(
    body: PasskeyResponseIn, principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    await run_in_threadpool(
        lambda: runtime.identity.step_up_with_passkey(
            principal, body.ceremony_id, body.response, ctx
        )
    )
    return Response(status_code=204)


# --- QR confirmations (called by the bound phone) ------------------------------------------


@router.get(
    "/confirmations/{confirmation_id}",
    response_model=ConfirmationViewOut,
    summary="What a QR confirmation asks for",
    responses=problem_responses(404),
)
async def confirmation(
    confirmation_id: uuid.UUID,
    runtime: RuntimeDep,
    nonce: Annotated[str, Header(alias="X-Zhifu-Nonce", max_length=64)],
) -> ConfirmationViewOut:
    """The phone reads the operation to show before the customer approves.
    The nonce comes from the QR code, so only a phone that saw it can ask."""
    view = await run_in_threadpool(runtime.identity.confirmation, confirmation_id, nonce)
    return ConfirmationViewOut.of(view)


async def _decide(
    confirmation_id: uuid.UUID,
    body: ConfirmationDecisionIn,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    approve: bool,
) -> ConfirmationViewOut:
    view = await run_in_threadpool(
        lambda: runtime.identity.decide_confirmation(
            confirmation_id, body.nonce, body.device_id, body.signature, approve=approve, ctx=ctx
        )
    )
    return ConfirmationViewOut.of(view)


@router.post(
    "/confirmations/{confirmation_id}/approve",
    response_model=ConfirmationViewOut,
    summary="Approve a QR confirmation with the bound phone's signature",
    responses=problem_responses(404, 409, 422),
)
async def approve_confirmation(
    confirmation_id: uuid.UUID, body: ConfirmationDecisionIn, runtime: RuntimeDep, ctx: AuditCtx
) -> ConfirmationViewOut:
    """``signature``: Ed25519 over
    ``b"zhifu-confirmation-v1|" + id (16 bytes) + "|" + nonce + "|" + action + "|" + binding``
    (see ``zhifu.identity.model.confirmation_message``). Works once."""
    return await _decide(confirmation_id, body, runtime, ctx, True)


@router.post(
    "/confirmations/{confirmation_id}/reject",
    response_model=ConfirmationViewOut,
    summary="Reject a QR confirmation",
    responses=problem_responses(404, 409, 422),
)
async def reject_confirmation(
    confirmation_id: uuid.UUID, body: ConfirmationDecisionIn, runtime: RuntimeDep, ctx: AuditCtx
) -> ConfirmationViewOut:
    """As approve, with the signed message prefixed by ``b"reject|"``."""
    return await _decide(confirmation_id, body, runtime, ctx, False)


# --- me -----------------------------------------------------------------------------------


@router.get("/me", response_model=CustomerOut, summary="My profile (masked)")
async def me(principal: CurrentCustomer, runtime: RuntimeDep) -> CustomerOut:
    return CustomerOut.of(await run_in_threadpool(runtime.identity.profile, principal))


@router.get(
    "/me/sessions",
    response_model=list[SessionOut],
    summary="My active sessions, newest first",
    responses=PAGE_RESPONSES,
)
async def my_sessions(
    principal: CurrentPrincipal, runtime: RuntimeDep, pager: PageQuery
) -> list[SessionOut]:
    views = await run_in_threadpool(runtime.identity.list_sessions, principal)
    return [SessionOut.of(v) for v in pager.page(views, SESSIONS_ORDER)]


@router.delete(
    "/me/sessions/{session_id}",
    status_code=204,
    summary="Sign out one of my sessions",
    responses=problem_responses(404),
)
async def end_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    await run_in_threadpool(lambda: runtime.identity.logout(principal, ctx, session_id=session_id))
    return Response(status_code=204)


@router.post(
    "/me/password",
    status_code=204,
    summary="Change my password",
    responses=problem_responses(401, 422),
)
async def change_password(
    body: PasswordChangeIn, principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    """Every other session ends."""
    await run_in_threadpool(
        lambda: runtime.identity.change_password(
            principal, body.current_password, body.new_password, ctx
        )
    )
    return Response(status_code=204)


@router.put(
    "/me/mobile",
    response_model=CustomerOut,
    summary="Change my mobile number (needs confirmation)",
    responses=problem_responses(403, 409, 422),
)
async def change_mobile(
    body: MobileChangeIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> CustomerOut:
    """A sensitive change: answers 403 ``step-up-required`` (with a QR
    confirmation when a phone is bound) until confirmed; then send the
    confirmation's id as ``X-Zhifu-Confirmation`` or step up first."""
    from zhifu.identity.model import mask_mobile, parse_mobile

    mobile = parse_mobile(body.mobile)
    await run_in_threadpool(
        lambda: runtime.identity.require_step_up(
            principal,
            "identity.customer.mobile.change",
            {"mobile": mobile},
            confirmation_id=confirmation_id,
            summary=f"Change mobile number to {mask_mobile(mobile)}",
            ctx=ctx,
            device_only=True,
        )
    )
    view = await run_in_threadpool(runtime.identity.change_mobile, principal, mobile, ctx)
    return CustomerOut.of(view)


@router.post("/me/totp", response_model=TotpStartOut, summary="Start authenticator-app set-up")
async def start_totp(
    principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> TotpStartOut:
    enrolment = await run_in_threadpool(runtime.identity.start_totp, principal, ctx)
    return TotpStartOut(secret=enrolment.secret, uri=enrolment.uri, qr_svg=enrolment.qr_svg)


@router.post(
    "/me/totp/confirm",
    response_model=RecoveryCodesOut,
    summary="Finish authenticator set-up with a first code",
    responses=problem_responses(401, 409),
)
async def confirm_totp(
    body: CodeIn, principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> RecoveryCodesOut:
    codes = await run_in_threadpool(runtime.identity.confirm_totp, principal, body.code, ctx)
    return RecoveryCodesOut(recovery_codes=codes)


async def _step_up(
    runtime: RuntimeDep,
    principal: Any,
    action: str,
    summary: str,
    ctx: AuditCtx,
    confirmation_id: uuid.UUID | None,
    details: dict[str, Any] | None = None,
) -> None:
    await run_in_threadpool(
        lambda: runtime.identity.require_step_up(
            principal,
            action,
            details or {"subject": principal.actor},
            confirmation_id=confirmation_id,
            summary=summary,
            ctx=ctx,
        )
    )


@router.delete(
    "/me/totp", status_code=204, summary="Remove the authenticator app (needs confirmation)"
)
async def disable_totp(
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> Response:
    await _step_up(
        runtime,
        principal,
        "identity.totp.disable",
        "Remove authenticator app",
        ctx,
        confirmation_id,
    )
    await run_in_threadpool(runtime.identity.disable_totp, principal, ctx)
    return Response(status_code=204)


@router.post(
    "/me/recovery-codes",
    response_model=RecoveryCodesOut,
    summary="New recovery codes (needs confirmation)",
)
async def regenerate_recovery_codes(
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> RecoveryCodesOut:
    await _step_up(
        runtime,
        principal,
        "identity.recovery_codes.regenerate",
        "New recovery codes",
        ctx,
        confirmation_id,
    )
    codes = await run_in_threadpool(runtime.identity.regenerate_recovery_codes, principal, ctx)
    return RecoveryCodesOut(recovery_codes=codes)


@router.get(
    "/me/devices",
    response_model=list[DeviceOut],
    summary="My bound phones, oldest first",
    responses=PAGE_RESPONSES,
)
async def my_devices(
    principal: CurrentCustomer, runtime: RuntimeDep, pager: PageQuery
) -> list[DeviceOut]:
    views = await run_in_threadpool(runtime.identity.devices, principal)
    return [DeviceOut(**_fields(v)) for v in pager.page(views, DEVICES_ORDER)]


def _fields(view: Any) -> dict[str, Any]:
    return {name: getattr(view, name) for name in view.__slots__}


@router.post(
    "/me/devices",
    status_code=201,
    response_model=DeviceOut,
    summary="Bind a phone (needs confirmation)",
    responses=problem_responses(403, 409, 422),
)
async def bind_device(
    body: DeviceIn,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> DeviceOut:
    """The phone makes an Ed25519 key pair and sends the public key; it then
    approves QR confirmations by signing them."""
    await _step_up(
        runtime,
        principal,
        "identity.device.bind",
        f"Bind the phone {body.name}",
        ctx,
        confirmation_id,
        {"public_key": body.public_key},
    )
    view = await run_in_threadpool(
        runtime.identity.bind_device, principal, body.name, body.public_key, ctx
    )
    return DeviceOut(**_fields(view))


@router.delete(
    "/me/devices/{device_id}",
    status_code=204,
    summary="Remove a bound phone (needs confirmation)",
    responses=problem_responses(403, 404),
)
async def revoke_device(
    device_id: uuid.UUID,
    principal: CurrentCustomer,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> Response:
    """Needs a step-up: a stolen session and password alone cannot remove the
    phone that guards new-browser sign-ins."""
    devices = await run_in_threadpool(runtime.identity.devices, principal)
    if all(device.id != device_id for device in devices):
        raise NotFoundError("no such device")  # before any step-up: nothing to confirm
    await _step_up(
        runtime,
        principal,
        "identity.device.revoke",
        "Remove a bound phone",
        ctx,
        confirmation_id,
        {"device": str(device_id)},
    )
    await run_in_threadpool(runtime.identity.revoke_device, principal, device_id, ctx)
    return Response(status_code=204)


@router.get(
    "/me/passkeys",
    response_model=list[PasskeyOut],
    summary="My passkeys, oldest first",
    responses=PAGE_RESPONSES,
)
async def my_passkeys(
    principal: CurrentPrincipal, runtime: RuntimeDep, pager: PageQuery
) -> list[PasskeyOut]:
    views = await run_in_threadpool(runtime.identity.passkeys, principal)
    return [PasskeyOut(**_fields(v)) for v in pager.page(views, PASSKEYS_ORDER)]


@router.post(
    "/me/passkeys/options", response_model=PasskeyOptionsOut, summary="Start passkey registration"
)
async def passkey_registration_options(
    principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> PasskeyOptionsOut:
    ceremony_id, options = await run_in_threadpool(
        runtime.identity.passkey_registration_options, principal
    )
    return PasskeyOptionsOut(ceremony_id=ceremony_id, options=options)


@router.post(
    "/me/passkeys",
    status_code=201,
    response_model=PasskeyOut,
    summary="Register a passkey",
    responses=problem_responses(401, 409, 422),
)
async def register_passkey(
    body: PasskeyResponseIn, principal: CurrentPrincipal, runtime: RuntimeDep, ctx: AuditCtx
) -> PasskeyOut:
    view = await run_in_threadpool(
        lambda: runtime.identity.register_passkey(
            principal, body.ceremony_id, body.response, body.name or "passkey", ctx
        )
    )
    return PasskeyOut(**_fields(view))


@router.delete(
    "/me/passkeys/{passkey_id}",
    status_code=204,
    summary="Remove a passkey (needs confirmation)",
    responses=problem_responses(403, 404),
)
async def delete_passkey(
    passkey_id: uuid.UUID,
    principal: CurrentPrincipal,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    confirmation_id: ConfirmationId = None,
) -> Response:
    """Needs a step-up, like removing a phone."""
    passkeys = await run_in_threadpool(runtime.identity.passkeys, principal)
    if all(passkey.id != passkey_id for passkey in passkeys):
        raise NotFoundError("no such passkey")
    await _step_up(
        runtime,
        principal,
        "identity.passkey.delete",
        "Remove a passkey",
        ctx,
        confirmation_id,
        {"passkey": str(passkey_id)},
    )
    await run_in_threadpool(runtime.identity.delete_passkey, principal, passkey_id, ctx)
    return Response(status_code=204)

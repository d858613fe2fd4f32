"""Who is calling: session tokens, staff permissions, signed partner requests,
and the audit context every state-changing request records under.

Dependencies (use them in routers, never parse ``Authorization`` by hand):

- :data:`AuditCtx`: the request's :class:`AuditContext` (source address and
  request id; the actor once known). :class:`AuditFallbackMiddleware` records
  a generic event for every state-changing request that failed before a use
  case recorded one, so even a refused request leaves a trace.
- :data:`CurrentPrincipal`: any signed-in customer or staff member
  (``Authorization: Bearer zs_...``); 401 otherwise.
- :data:`CurrentCustomer`, :data:`CurrentStaff`: the same, limited to one kind.
  A staff token on a customer endpoint (or the reverse) gets 403.
- :func:`require_permission`: a staff member holding a permission; 403 otherwise.
- :data:`CurrentPartner`: a partner whose request signature verifies.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhifu.api.deps import RuntimeDep, runtime_of
from zhifu.api.problems import ProblemError, error_mapping_for, register_error_mapping
from zhifu.api.request_context import REQUEST_ID_STATE_KEY, route_template
from zhifu.identity import errors as identity_errors
from zhifu.identity.access import Permission, Principal
from zhifu.identity.passkeys import PasskeyError
from zhifu.invariant import InvariantError
from zhifu.ops.audit import AuditContext, AuditEvent, Outcome
from zhifu.ops.logging import get_logger
from zhifu.security.request_signing import RequestSignatureError

AUDIT_STATE_KEY: Final = "zhifu_audit"
STATE_CHANGING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Routes whose accepted requests are recorded by a journal of their own: the
# ledger's transfers go into its signed, hash-chained journal (one audit event
# per transfer would serialise the ledger on the audit head). Their refused
# requests (401, 422, ...) are audited like any other.
# Routes whose successes are on record in their own journal: the ledger's
# batches, and payment orders with their history of transitions.
SELF_JOURNALED_ROUTES: Final = frozenset(
    {
        "/v1/ledger/transfers",
        "/v1/payments",
        "/v1/qr-payments",
        "/v1/partner/merchants/{merchant_id}/charges",
        "/v1/merchants/{merchant_id}/payments/{payment_id}/refunds",
        "/v1/partner/merchants/{merchant_id}/payments/{payment_id}/refunds",
    }
)

_log = get_logger("zhifu.api.auth")

register_error_mapping(identity_errors.IdentityError, 422, "invalid-input", "Invalid input")
register_error_mapping(
    identity_errors.AuthenticationError, 401, "authentication-failed", "Authentication failed"
)
register_error_mapping(
    identity_errors.ThrottledError, 429, "too-many-attempts", "Too many attempts"
)
register_error_mapping(identity_errors.SessionError, 401, "unauthorised", "Unauthorised")
register_error_mapping(identity_errors.NotFoundError, 404, "not-found", "Not found")
register_error_mapping(identity_errors.AlreadyExistsError, 409, "already-exists", "Already exists")
register_error_mapping(identity_errors.PermissionDeniedError, 403, "forbidden", "Forbidden")
register_error_mapping(
    identity_errors.StepUpRequiredError, 403, "step-up-required", "Confirmation required"
)
register_error_mapping(
    identity_errors.ChallengeError, 409, "challenge-invalid", "Challenge invalid"
)
register_error_mapping(identity_errors.InvalidCodeError, 401, "code-invalid", "Code invalid")
register_error_mapping(identity_errors.StateError, 409, "invalid-state", "Not allowed now")
register_error_mapping(identity_errors.FourEyesError, 403, "four-eyes", "Second approver needed")
register_error_mapping(PasskeyError, 401, "passkey-invalid", "Passkey not accepted")
register_error_mapping(RequestSignatureError, 401, "signature-invalid", "Signature not accepted")


async def audit_context(request: Request) -> AuditContext:
    """The request's audit context, made on first use and kept in the request state."""
    ctx = request.scope.setdefault("state", {}).get(AUDIT_STATE_KEY)
    if ctx is None:
        client = request.client
        ctx = AuditContext(
            source=None if client is None else client.host[:64],
            request_id=request.scope.get("state", {}).get(REQUEST_ID_STATE_KEY),
        )
        request.scope["state"][AUDIT_STATE_KEY] = ctx
    if not isinstance(ctx, AuditContext):
        raise InvariantError(f"request state {AUDIT_STATE_KEY!r} holds a {type(ctx).__name__}")
    return ctx


AuditCtx = Annotated[AuditContext, Depends(audit_context)]


def _unauthorised(detail: str) -> ProblemError:
    return ProblemError(
        401, "unauthorised", "Unauthorised", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise _unauthorised("sign in first: send 'Authorization: Bearer <session token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorised("use the Bearer scheme: 'Authorization: Bearer <session token>'")
    return token.strip()


async def current_principal(
    runtime: RuntimeDep,
    ctx: AuditCtx,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    token = bearer_token(authorization)
    try:
        principal = await run_in_threadpool(runtime.identity.authenticate, token)
    except identity_errors.SessionError as exc:
        raise _unauthorised(str(exc)) from None
    ctx.actor = principal.actor
    ctx.role = principal.role_text
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def current_customer(principal: CurrentPrincipal) -> Principal:
    if principal.kind != "customer":
        raise ProblemError(403, "forbidden", "Forbidden", "this endpoint is for customers")
    return principal


async def current_staff(principal: CurrentPrincipal) -> Principal:
    if principal.kind != "staff":
        raise ProblemError(403, "forbidden", "Forbidden", "this endpoint is for bank staff")
    return principal


CurrentCustomer = Annotated[Principal, Depends(current_customer)]
CurrentStaff = Annotated[Principal, Depends(current_staff)]


def require_permission(permission: Permission) -> object:
    """A dependency: the caller is staff holding ``permission``."""

    async def check(principal: CurrentStaff) -> Principal:
        if not principal.can(permission):
            raise ProblemError(
                403,
                "forbidden",
                "Forbidden",
                f"this needs the permission {permission.value!r}, which your roles do not give",
            )
        return principal

    return Depends(check)


async def current_partner(request: Request, ctx: AuditCtx) -> Principal:
    runtime = runtime_of(request)
    body = await request.body()
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    path_with_query = raw_path.decode("latin-1") + (
        ("?" + query.decode("latin-1")) if query else ""
    )
    # Every header as sent: a dict would keep one of two copies of a signing
    # header, which the signature check must refuse rather than choose between.
    headers = request.headers
    principal = await run_in_threadpool(
        lambda: runtime.partners.authenticate(
            headers, method=request.method, path_with_query=path_with_query, body=body
        )
    )
    ctx.actor = principal.actor
    ctx.role = "partner"
    return principal


CurrentPartner = Annotated[Principal, Depends(current_partner)]


class AuditFallbackMiddleware:
    """Records a generic ``http.request`` audit event for a state-changing
    request that ended without one of its own: refused before any use case ran
    (401, 403, 404, 422, ...), failed, or a success whose route took the audit
    context but recorded nothing (starting a passkey ceremony). Use cases
    record their own, richer events."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING_METHODS:
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Recorded before the answer leaves: a client that reads the
                # trail right after its answer finds the event there.
                await self._fallback(scope, status)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if status is None:
                # Answered outside, by the error boundary: with the status of
                # the error's mapping, or 500 (499 is for a client gone).
                mapping = error_mapping_for(exc)
                await self._fallback(scope, 500 if mapping is None else mapping.status)
            raise
        except BaseException:  # cancelled: the client went away before any answer
            if status is None:
                await self._fallback(scope, None)
            raise

    async def _fallback(self, scope: Scope, status: int | None) -> None:
        state = scope.get("state", {})
        ctx = state.get(AUDIT_STATE_KEY)
        route = route_template(scope)
        outcome: Outcome
        if status is not None and status < 400 and route in SELF_JOURNALED_ROUTES:
            return  # on record in that route's own journal
        if status is not None and status < 400:
            # A route that never made an audit context records its own events
            # (the service-token routes); one that did is covered here.
            if not isinstance(ctx, AuditContext) or ctx.recorded:
                return
            outcome = "ok"
        elif isinstance(ctx, AuditContext) and ctx.refusal_recorded:
            return
        else:
            outcome = "denied" if status in (401, 403, 404, 409, 429) else "failed"
        client = scope.get("client")
        ctx = (
            ctx
            if isinstance(ctx, AuditContext)
            else AuditContext(
                source=None if not client else str(client[0])[:64],
                request_id=state.get(REQUEST_ID_STATE_KEY),
            )
        )
        event = AuditEvent(
            actor=ctx.actor,
            role=ctx.role,
            action="http.request",
            target=route[:128],
            outcome=outcome,
            request_id=ctx.request_id,
            source=ctx.source,
            details={"method": scope["method"], "status": status or 499},
        )
        app = scope.get("app")
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        if runtime is None:
            return
        try:
            await run_in_threadpool(runtime.audit.record_now, event)
        except Exception:  # noqa: BLE001 - the response is out; never fail the request on this
            _log.exception("audit_fallback_failed", route=route)

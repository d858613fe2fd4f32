"""The operations side of identity: staff, roles through maker-checker,
customer administration, partner API keys, and the auditors' view of the
audit trail. Every endpoint names the one permission it needs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from zhifu.api.auth import AuditCtx, CurrentPartner, require_permission
from zhifu.api.deps import RuntimeDep
from zhifu.api.problems import ProblemError, problem_responses
from zhifu.api.routers.identity import CustomerOut
from zhifu.identity.access import Permission, Principal
from zhifu.identity.model import PASSWORD_INPUT_LENGTH_MAX
from zhifu.identity.partners import PartnerKeyView
from zhifu.identity.staff import ApprovalView, StaffView
from zhifu.ops.audit import LIST_LIMIT_MAX, AuditError

router = APIRouter(prefix="/v1", tags=["administration"])


StaffReader = Annotated[Principal, require_permission(Permission.STAFF_READ)]
StaffManager = Annotated[Principal, require_permission(Permission.STAFF_MANAGE)]
RoleGranter = Annotated[Principal, require_permission(Permission.ROLES_GRANT)]
ApprovalDecider = Annotated[Principal, require_permission(Permission.APPROVALS_DECIDE)]
CustomerReader = Annotated[Principal, require_permission(Permission.CUSTOMERS_READ)]
CustomerManager = Annotated[Principal, require_permission(Permission.CUSTOMERS_MANAGE)]
PartnerManager = Annotated[Principal, require_permission(Permission.PARTNERS_MANAGE)]
AuditReader = Annotated[Principal, require_permission(Permission.AUDIT_READ)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaffIn(_In):
    username: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=PASSWORD_INPUT_LENGTH_MAX, repr=False)


class StaffOut(BaseModel):
    id: uuid.UUID
    username: str
    name: str
    status: str
    roles: list[str]
    created_ts: int
    created_by: str

    @classmethod
    def of(cls, v: StaffView) -> StaffOut:
        return cls(
            id=v.id,
            username=v.username,
            name=v.name,
            status=v.status,
            roles=list(v.roles),
            created_ts=v.created_ts,
            created_by=v.created_by,
        )


class ApprovalIn(_In):
    action: str = Field(min_length=1, max_length=64, examples=["staff.role.grant"])
    target: str | None = Field(None, max_length=128, examples=["staff:0190..."])
    payload: dict[str, Any] = Field(default_factory=dict, examples=[{"role": "auditor"}])


class DecisionIn(_In):
    reason: str | None = Field(None, max_length=512)


class ApprovalOut(BaseModel):
    id: uuid.UUID
    action: str
    target: str | None
    payload: dict[str, Any]
    status: str
    maker: str
    maker_name: str
    checker: str | None
    checker_name: str | None
    reason: str | None
    result: dict[str, Any] | None
    created_ts: int
    expires_ts: int
    decided_ts: int | None

    @classmethod
    def of(cls, v: ApprovalView) -> ApprovalOut:
        return cls(**{name: getattr(v, name) for name in v.__slots__})


class CustomerStatusIn(_In):
    status: Literal["active", "disabled"]


class PartnerKeyIn(_In):
    partner_name: str = Field(min_length=1, max_length=128)
    algorithm: Literal["hmac-sha256", "ed25519"]
    scopes: list[str] = Field(min_length=1, max_length=8)
    public_key: str | None = Field(None, max_length=64)


class PartnerKeyOut(BaseModel):
    key_id: str
    partner_name: str
    algorithm: str
    scopes: list[str]
    created_ts: int
    created_by: str
    revoked_ts: int | None
    public_key: str | None
    secret: str | None = Field(
        None, description="hmac-sha256 only, shown once: standard base64 of 32 bytes."
    )

    @classmethod
    def of(cls, v: PartnerKeyView, secret: str | None = None) -> PartnerKeyOut:
        return cls(
            key_id=v.key_id,
            partner_name=v.partner_name,
            algorithm=v.algorithm,
            scopes=list(v.scopes),
            created_ts=v.created_ts,
            created_by=v.created_by,
            revoked_ts=v.revoked_ts,
            public_key=v.public_key,
            secret=secret,
        )


class AuditEventOut(BaseModel):
    seq: int
    id: str
    ts: int
    actor: str
    role: str | None
    action: str
    target: str | None
    outcome: str
    request_id: str | None
    source: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPageOut(BaseModel):
    events: list[AuditEventOut]
    next_before_seq: int | None = Field(
        None, description="Pass as before_seq for the next (older) page."
    )


# --- staff ------------------------------------------------------------------------------


@router.post(
    "/admin/staff",
    status_code=201,
    response_model=StaffOut,
    summary="Create a staff member (no roles: grant them through approvals)",
    responses=problem_responses(401, 403, 409, 422),
)
async def create_staff(
    body: StaffIn, principal: StaffManager, runtime: RuntimeDep, ctx: AuditCtx
) -> StaffOut:
    view = await run_in_threadpool(
        lambda: runtime.staff.create_staff(body.username, body.name, body.password, ctx)
    )
    return StaffOut.of(view)


@router.get("/admin/staff", response_model=list[StaffOut], summary="List staff")
async def list_staff(
    principal: StaffReader,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[StaffOut]:
    return [StaffOut.of(v) for v in await run_in_threadpool(runtime.staff.list_staff, limit)]


@router.get(
    "/admin/staff/{staff_id}",
    response_model=StaffOut,
    summary="One staff member",
    responses=problem_responses(404),
)
async def get_staff(staff_id: uuid.UUID, principal: StaffReader, runtime: RuntimeDep) -> StaffOut:
    return StaffOut.of(await run_in_threadpool(runtime.staff.get_staff, staff_id))


# --- maker-checker ----------------------------------------------------------------------


@router.post(
    "/admin/approvals",
    status_code=201,
    response_model=ApprovalOut,
    summary="Propose a change that needs a second admin",
    responses=problem_responses(401, 403, 422),
)
async def propose(
    body: ApprovalIn, principal: RoleGranter, runtime: RuntimeDep, ctx: AuditCtx
) -> ApprovalOut:
    """Actions: ``staff.role.grant`` / ``staff.role.revoke`` with target
    ``staff:<id>`` and payload ``{"role": ...}``; other contexts add theirs."""
    view = await run_in_threadpool(
        lambda: runtime.staff.propose(principal, body.action, body.target, body.payload, ctx)
    )
    return ApprovalOut.of(view)


@router.get("/admin/approvals", response_model=list[ApprovalOut], summary="List approvals")
async def list_approvals(
    principal: RoleGranter,
    runtime: RuntimeDep,
    status: Literal["pending", "approved", "rejected", "expired", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ApprovalOut]:
    views = await run_in_threadpool(runtime.staff.list_approvals, status, limit)
    return [ApprovalOut.of(v) for v in views]


async def _decide(
    approval_id: uuid.UUID,
    body: DecisionIn | None,
    principal: Principal,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    approve: bool,
) -> ApprovalOut:
    view = await run_in_threadpool(
        lambda: runtime.staff.decide(
            principal,
            approval_id,
            approve=approve,
            reason=None if body is None else body.reason,
            ctx=ctx,
        )
    )
    return ApprovalOut.of(view)


@router.post(
    "/admin/approvals/{approval_id}/approve",
    response_model=ApprovalOut,
    summary="Approve (the change is made now)",
    responses=problem_responses(401, 403, 404, 409),
)
async def approve(
    approval_id: uuid.UUID,
    principal: ApprovalDecider,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    """Refused (403 ``four-eyes``) for the person who proposed it."""
    return await _decide(approval_id, body, principal, runtime, ctx, True)


@router.post(
    "/admin/approvals/{approval_id}/reject",
    response_model=ApprovalOut,
    summary="Reject a proposed change",
    responses=problem_responses(401, 403, 404, 409),
)
async def reject(
    approval_id: uuid.UUID,
    principal: ApprovalDecider,
    runtime: RuntimeDep,
    ctx: AuditCtx,
    body: DecisionIn | None = None,
) -> ApprovalOut:
    return await _decide(approval_id, body, principal, runtime, ctx, False)


# --- customers ------------------------------------------------------------------------------


@router.get(
    "/admin/customers/{customer_id}",
    response_model=CustomerOut,
    summary="A customer (masked)",
    responses=problem_responses(404),
)
async def get_customer(
    customer_id: uuid.UUID, principal: CustomerReader, runtime: RuntimeDep
) -> CustomerOut:
    return CustomerOut.of(await run_in_threadpool(runtime.identity.customer, customer_id))


@router.put(
    "/admin/customers/{customer_id}/status",
    response_model=CustomerOut,
    summary="Disable or re-enable a customer",
    responses=problem_responses(404, 422),
)
async def set_customer_status(
    customer_id: uuid.UUID,
    body: CustomerStatusIn,
    principal: CustomerManager,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> CustomerOut:
    """Disabling ends every session of the customer at once."""
    view = await run_in_threadpool(
        runtime.identity.set_customer_status, customer_id, body.status, ctx
    )
    return CustomerOut.of(view)


# --- partner keys ---------------------------------------------------------------------------


@router.post(
    "/admin/partner-keys",
    status_code=201,
    response_model=PartnerKeyOut,
    summary="Issue a partner API key",
    responses=problem_responses(401, 403, 422),
)
async def create_partner_key(
    body: PartnerKeyIn, principal: PartnerManager, runtime: RuntimeDep, ctx: AuditCtx
) -> PartnerKeyOut:
    new = await run_in_threadpool(
        lambda: runtime.partners.create_key(
            body.partner_name, body.algorithm, body.scopes, ctx, public_key_b64=body.public_key
        )
    )
    return PartnerKeyOut.of(new.key, new.secret)


@router.get("/admin/partner-keys", response_model=list[PartnerKeyOut], summary="Partner keys")
async def list_partner_keys(
    principal: PartnerManager,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[PartnerKeyOut]:
    return [PartnerKeyOut.of(v) for v in await run_in_threadpool(runtime.partners.list_keys, limit)]


@router.delete(
    "/admin/partner-keys/{key_id}",
    status_code=204,
    summary="Revoke a partner key (at once)",
    responses=problem_responses(404),
)
async def revoke_partner_key(
    key_id: str, principal: PartnerManager, runtime: RuntimeDep, ctx: AuditCtx
) -> Response:
    await run_in_threadpool(runtime.partners.revoke_key, key_id, ctx)
    return Response(status_code=204)


@router.get(
    "/partner/ping",
    summary="Check a partner's request signing",
    tags=["partners"],
    operation_id="partner_ping_get",
    responses=problem_responses(401),
)
@router.post(
    "/partner/ping",
    summary="Check a partner's request signing (with a signed body)",
    tags=["partners"],
    operation_id="partner_ping_post",
    responses=problem_responses(401),
)
async def partner_ping(partner: CurrentPartner) -> dict[str, Any]:
    """Answers who the bank thinks is calling, once the signature, timestamp
    and nonce are accepted. A partner's integration test."""
    return {
        "key_id": partner.id,
        "partner_name": partner.username,
        "scopes": sorted(partner.scopes),
    }


# --- audit --------------------------------------------------------------------------------


def _ts(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ProblemError(422, "invalid-input", "Invalid input", f"{name} needs a time zone")
    return int(value.timestamp() * 1_000_000)


@router.get(
    "/audit/events",
    response_model=AuditPageOut,
    summary="Query the audit trail",
    tags=["audit"],
    responses=problem_responses(401, 403, 422),
)
async def audit_events(
    principal: AuditReader,
    runtime: RuntimeDep,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    target: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="An action or a prefix of one.")
    ] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
) -> AuditPageOut:
    """Newest first, filtered by actor, target, action (prefix) and time
    (ISO 8601 with a zone; ``since`` inclusive, ``until`` exclusive)."""
    since_ts, until_ts = _ts(since, "since"), _ts(until, "until")
    try:
        records = await run_in_threadpool(
            lambda: runtime.audit.list(
                limit,
                action,
                before_seq,
                actor=actor,
                target=target,
                since_ts=since_ts,
                until_ts=until_ts,
            )
        )
    except AuditError as exc:
        raise ProblemError(422, "invalid-input", "Invalid input", str(exc)) from None
    events = [AuditEventOut(**r.as_dict()) for r in records]
    next_before = records[-1].seq if len(records) == limit else None
    return AuditPageOut(events=events, next_before_seq=next_before)

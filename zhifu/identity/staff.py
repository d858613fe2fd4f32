"""Staff members, their roles, and maker-checker approvals of sensitive changes.

Rules:

- Staff are created by an operator at the console of a server
  (``zhifu staff create``, the bootstrap of the first admin) or by an admin
  through the API. A new staff member through the API starts with no role.
- Granting or revoking a role is a four-eyes action: one staff member with
  ``roles.grant`` proposes it, a *different* admin approves it, and only then
  does it happen. The approval records both actors and both usernames; the
  database refuses an approval whose checker is its maker
  (``ck_identity_approvals_four_eyes``).
- Other contexts add their own four-eyes actions (limits, fees, risk rules) by
  registering a handler with :meth:`StaffService.register_approval_handler`.
- The last active admin cannot lose the admin role: the bank would be left
  without anyone who can approve anything.
- A pending approval expires after :data:`APPROVAL_TTL_S`: it can no longer be
  decided, and it reads (and lists) as ``expired`` from then on.
- Two checkers deciding one approval at once: the approval row is locked
  first, so the second waits and then finds it decided. Two revocations of
  the admin role approved at once lock every admin role row before counting,
  so they cannot each count the other and leave no admin (on SQLite the
  writer's lock serialises both already).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row

from zhifu.identity import store
from zhifu.identity.access import FOUR_EYES_ACTIONS, Permission, Principal, Role, parse_role
from zhifu.identity.errors import (
    AlreadyExistsError,
    FourEyesError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StateError,
)
from zhifu.identity.model import check_password, normalise_name, normalise_username
from zhifu.identity.passwords import PasswordHasher, load_blocklist
from zhifu.identity.service import US, Clock, now_us
from zhifu.ids import uuid7
from zhifu.invariant import InvariantError
from zhifu.ops.audit import AuditContext, record
from zhifu.security.envelope import KeyRing, column_context
from zhifu.store.uow import run_in_transaction

APPROVAL_TTL_S: Final = 7 * 24 * 3600
APPROVAL_PAYLOAD_BYTES_MAX: Final = 4096
REASON_CHARS_MAX: Final = 512
LIST_LIMIT_MAX: Final = 500

# handler(connection, approval row, payload, checker actor) -> result details;
# raises an IdentityError (or another context's error) when the change cannot
# be made, and then nothing of the approval changes.
ApprovalHandler = Callable[[Connection, Row[Any], dict[str, Any], str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StaffView:
    id: uuid.UUID
    username: str
    name: str
    status: str
    roles: tuple[str, ...]
    created_ts: int
    created_by: str


@dataclass(frozen=True, slots=True)
class ApprovalView:
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


def _approval_view(row: Row[Any], now_us: int) -> ApprovalView:
    expired = row.status == "pending" and row.expires_ts <= now_us
    return ApprovalView(
        id=row.id,
        action=row.action,
        target=row.target,
        payload=json.loads(row.payload),
        status="expired" if expired else row.status,
        maker=row.maker,
        maker_name=row.maker_name,
        checker=row.checker,
        checker_name=row.checker_name,
        reason=row.reason,
        result=None if row.result is None else json.loads(row.result),
        created_ts=int(row.created_ts),
        expires_ts=int(row.expires_ts),
        decided_ts=row.decided_ts,
    )


@dataclass
class StaffService:
    engine: Engine
    keyring: KeyRing
    hasher: PasswordHasher = field(default_factory=PasswordHasher)
    clock: Clock = now_us
    blocklist: Collection[str] = field(default_factory=load_blocklist)
    handlers: dict[str, ApprovalHandler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.register_approval_handler("staff.role.grant", self._grant_role)
        self.register_approval_handler("staff.role.revoke", self._revoke_role)

    def register_approval_handler(self, action: str, handler: ApprovalHandler) -> None:
        self.handlers[action] = handler

    # --- staff --------------------------------------------------------------------------

    def _view(self, connection: Connection, row: Row[Any]) -> StaffView:
        name = self.keyring.decrypt_text(
            bytes(row.name_enc), context=column_context("identity_staff", "name_enc", row.id)
        )
        return StaffView(
            id=row.id,
            username=row.username,
            name=name,
            status=row.status,
            roles=tuple(store.roles_of(connection, row.id)),
            created_ts=int(row.created_ts),
            created_by=row.created_by,
        )

    def create_staff(
        self,
        username: str,
        name: str,
        password: str,
        ctx: AuditContext,
        *,
        roles: Collection[str] = (),
    ) -> StaffView:
        """Create a staff member. ``roles`` are granted at once, which only the
        operator's bootstrap command may do (the API passes none).

        Raises InvalidUsernameError, InvalidNameError, WeakPasswordError,
        InvalidInputError (unknown role), AlreadyExistsError.
        """
        username = normalise_username(username)
        name = normalise_name(name)
        try:
            granted = sorted({parse_role(r) for r in roles})
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        check_password(
            password, mfa_enrolled=False, blocklist=self.blocklist, context_words=(username, name)
        )
        password_hash = self.hasher.hash(password)
        staff_id = uuid7()

        def work(connection: Connection) -> StaffView:
            if store.staff_by_username(connection, username) is not None:
                raise AlreadyExistsError(f"username {username!r} is taken")
            now = self.clock()
            store.insert_staff(
                connection,
                {
                    "id": staff_id,
                    "username": username,
                    "name_enc": self.keyring.encrypt_text(
                        name, context=column_context("identity_staff", "name_enc", staff_id)
                    ),
                    "pii_key_id": self.keyring.active_key_id,
                    "status": "active",
                    "password_hash": password_hash,
                    "password_changed_ts": now,
                    "created_ts": now,
                    "created_by": ctx.actor,
                },
            )
            for role in granted:
                store.grant_role(
                    connection,
                    {
                        "staff_id": staff_id,
                        "role": role.value,
                        "granted_ts": now,
                        "granted_by": ctx.actor,
                    },
                )
            record(
                connection,
                ctx.event(
                    "identity.staff.create",
                    f"staff:{staff_id}",
                    username=username,
                    roles=[r.value for r in granted],
                ),
            )
            row = store.staff_by_id(connection, staff_id)
            if row is None:  # written by this transaction
                raise InvariantError("the row just written is missing")
            return self._view(connection, row)

        result: StaffView = run_in_transaction(self.engine, work, retry_unique_violation=True)
        return result

    def list_staff(self, limit: int = 100) -> list[StaffView]:
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidInputError(f"limit must be 1 to {LIST_LIMIT_MAX}")

        def work(connection: Connection) -> list[StaffView]:
            return [self._view(connection, row) for row in store.list_staff(connection, limit)]

        result: list[StaffView] = run_in_transaction(self.engine, work, write=False)
        return result

    def get_staff(self, staff_id: uuid.UUID) -> StaffView:
        def work(connection: Connection) -> StaffView:
            row = store.staff_by_id(connection, staff_id)
            if row is None:
                raise NotFoundError(f"no staff member {staff_id}")
            return self._view(connection, row)

        result: StaffView = run_in_transaction(self.engine, work, write=False)
        return result

    # --- maker-checker ----------------------------------------------------------------------

    def propose(
        self,
        principal: Principal,
        action: str,
        target: str | None,
        payload: Mapping[str, Any],
        ctx: AuditContext,
    ) -> ApprovalView:
        """Propose a four-eyes change; it waits for a second admin.

        Raises InvalidInputError (unknown action, bad payload).
        """
        if action not in self.handlers:
            known = ", ".join(sorted(self.handlers))
            raise InvalidInputError(
                f"unknown action {action[:64]!r}; four-eyes actions are: {known}"
            )
        payload_json = json.dumps(dict(payload), sort_keys=True, separators=(",", ":"))
        if len(payload_json.encode()) > APPROVAL_PAYLOAD_BYTES_MAX:
            raise InvalidInputError(
                f"payload must be at most {APPROVAL_PAYLOAD_BYTES_MAX} bytes of JSON"
            )
        if target is not None and len(target) > 128:
            raise InvalidInputError("target must be at most 128 characters")
        self._precheck(action, target, dict(payload))
        approval_id = uuid7()

        def work(connection: Connection) -> ApprovalView:
            now = self.clock()
            store.insert_approval(
                connection,
                {
                    "id": approval_id,
                    "action": action,
                    "target": target,
                    "payload": payload_json,
                    "status": "pending",
                    "maker": principal.actor,
                    "maker_name": principal.username or principal.actor,
                    "created_ts": now,
                    "expires_ts": now + APPROVAL_TTL_S * US,
                },
            )
            record(
                connection,
                ctx.event(
                    "identity.approval.propose",
                    f"approval:{approval_id}",
                    change=action,
                    change_target=target,
                ),
            )
            row = store.approval_by_id(connection, approval_id)
            if row is None:  # written by this transaction
                raise InvariantError("the row just written is missing")
            return _approval_view(row, now)

        result: ApprovalView = run_in_transaction(self.engine, work)
        return result

    def _precheck(self, action: str, target: str | None, payload: dict[str, Any]) -> None:
        if action in FOUR_EYES_ACTIONS:
            _staff_target(target)
            try:
                parse_role(str(payload.get("role", "")))
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None

    def decide(
        self,
        principal: Principal,
        approval_id: uuid.UUID,
        *,
        approve: bool,
        reason: str | None,
        ctx: AuditContext,
    ) -> ApprovalView:
        """Approve (the change is made now, in the same database transaction) or
        reject a pending change.

        Raises PermissionDeniedError (the checker is not an admin),
        NotFoundError, FourEyesError (the maker decides their own),
        StateError (decided or expired already), and whatever the action's
        handler raises (then nothing changes).
        """
        if reason is not None and len(reason) > REASON_CHARS_MAX:
            raise InvalidInputError(f"reason must be at most {REASON_CHARS_MAX} characters")
        if not principal.can(Permission.APPROVALS_DECIDE):
            raise PermissionDeniedError(
                "deciding approvals needs the permission 'approvals.decide'"
            )

        def work(connection: Connection) -> ApprovalView | FourEyesError:
            now = self.clock()
            # Locked until commit: a second checker waits here, then finds it decided,
            # instead of running the handler beside the first.
            row = store.approval_for_update(connection, approval_id)
            if row is None:
                raise NotFoundError(f"no approval {approval_id}")
            if row.maker == principal.actor:
                # Committed, then raised: the refusal stays on record.
                record(
                    connection,
                    ctx.event(
                        "identity.approval.decide",
                        f"approval:{approval_id}",
                        "denied",
                        reason="own_proposal",
                    ),
                )
                return FourEyesError(
                    "a change must be approved by someone other than who proposed it"
                )
            if row.status != "pending" or row.expires_ts <= now:
                raise StateError(
                    f"this approval is {row.status if row.status != 'pending' else 'expired'}"
                )
            result: dict[str, Any] | None = None
            if approve:
                result = self.handlers[row.action](
                    connection, row, json.loads(row.payload), principal.actor
                )
            decided = store.decide_approval(
                connection,
                approval_id,
                {
                    "status": "approved" if approve else "rejected",
                    "checker": principal.actor,
                    "checker_name": principal.username or principal.actor,
                    "reason": reason,
                    "result": None if result is None else json.dumps(result, sort_keys=True),
                    "decided_ts": now,
                },
                now,
            )
            if not decided:
                raise StateError("this approval was decided by someone else at the same moment")
            record(
                connection,
                ctx.event(
                    f"identity.approval.{'approve' if approve else 'reject'}",
                    f"approval:{approval_id}",
                    change=row.action,
                    change_target=row.target,
                    maker=row.maker,
                    maker_name=row.maker_name,
                    checker_name=principal.username,
                ),
            )
            fresh = store.approval_by_id(connection, approval_id)
            if fresh is None:  # written by this transaction
                raise InvariantError("the row just written is missing")
            return _approval_view(fresh, now)

        outcome = run_in_transaction(self.engine, work)
        if isinstance(outcome, FourEyesError):
            raise outcome
        view: ApprovalView = outcome
        return view

    def list_approvals(self, status: str | None = None, limit: int = 100) -> list[ApprovalView]:
        if status is not None and status not in (
            "pending",
            "approved",
            "rejected",
            "expired",
            "failed",
        ):
            raise InvalidInputError("status must be pending, approved, rejected, expired or failed")
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidInputError(f"limit must be 1 to {LIST_LIMIT_MAX}")
        now = self.clock()
        rows = run_in_transaction(
            self.engine, lambda c: store.list_approvals(c, status, limit, now), write=False
        )
        return [_approval_view(row, now) for row in rows]

    def get_approval(self, approval_id: uuid.UUID) -> ApprovalView:
        row = run_in_transaction(
            self.engine, lambda c: store.approval_by_id(c, approval_id), write=False
        )
        if row is None:
            raise NotFoundError(f"no approval {approval_id}")
        return _approval_view(row, self.clock())

    # --- the role handlers ---------------------------------------------------------------

    def _grant_role(
        self, connection: Connection, row: Row[Any], payload: dict[str, Any], checker: str
    ) -> dict[str, Any]:
        staff_id = _staff_target(row.target)
        role = parse_role(str(payload["role"]))
        staff = store.staff_by_id(connection, staff_id)
        if staff is None or staff.status != "active":
            raise NotFoundError(f"no active staff member {staff_id}")
        granted = store.grant_role(
            connection,
            {
                "staff_id": staff_id,
                "role": role.value,
                "granted_ts": self.clock(),
                "granted_by": row.maker,
                "approved_by": checker,
            },
        )
        if not granted:
            raise StateError(f"{staff.username} holds the role {role.value} already")
        return {"granted": role.value, "username": staff.username}

    def _revoke_role(
        self, connection: Connection, row: Row[Any], payload: dict[str, Any], checker: str
    ) -> dict[str, Any]:
        staff_id = _staff_target(row.target)
        role = parse_role(str(payload["role"]))
        staff = store.staff_by_id(connection, staff_id)
        if staff is None:
            raise NotFoundError(f"no staff member {staff_id}")
        if role is Role.ADMIN:
            store.lock_admin_roles(connection)
        if (
            role is Role.ADMIN
            and store.count_admins(connection) <= 1
            and "admin" in store.roles_of(connection, staff_id)
        ):
            raise StateError("the last active admin cannot lose the admin role")
        if not store.revoke_role(connection, staff_id, role.value):
            raise StateError(f"{staff.username} does not hold the role {role.value}")
        return {"revoked": role.value, "username": staff.username}


def _staff_target(target: str | None) -> uuid.UUID:
    prefix = "staff:"
    if target is None or not target.startswith(prefix):
        raise InvalidInputError("target must be 'staff:<staff id>'")
    try:
        return uuid.UUID(target[len(prefix) :])
    except ValueError:
        raise InvalidInputError("target must be 'staff:<staff id>'") from None

"""Who is acting, and what they may do: subjects, roles, permissions, factors.

Design note (pure: no I/O).

- A **principal** is the authenticated caller of one request: a customer or a
  staff member (with roles), reached through a session, or a partner (through
  a signed request), or the bank's own services (the service token). Its
  ``actor`` string ("customer:<uuid>", "staff:<uuid>", "partner:<key id>",
  "service") is what the audit trail records.
- **Staff roles** map to **permissions**; every staff endpoint names the one
  permission it needs and nothing else grants access. Customers hold no
  permission: customer endpoints only ever act on the caller's own records,
  and answer 404 for anybody else's (a 403 would confirm the record exists).
- **Maker-checker.** Actions in :data:`FOUR_EYES_ACTIONS` are never done
  directly: a staff member with the permission proposes them and a *different*
  admin approves; both are recorded.
- **Factors.** A session records how its subject proved who they are
  (``password``, ``totp``, ``recovery_code``, ``passkey``, ``device``). A
  sensitive operation asks for one of a set of factors, used within the last
  :data:`STEP_UP_FRESH_S` seconds (or a QR confirmation bound to exactly that
  operation).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class SubjectKind(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"


class Role(StrEnum):
    """Staff roles. A staff member may hold several."""

    TELLER = "teller"
    RISK_ANALYST = "risk_analyst"
    AUDITOR = "auditor"
    ADMIN = "admin"


class Permission(StrEnum):
    CUSTOMERS_READ = "customers.read"
    CUSTOMERS_MANAGE = "customers.manage"
    STAFF_READ = "staff.read"
    STAFF_MANAGE = "staff.manage"
    ROLES_GRANT = "roles.grant"
    APPROVALS_DECIDE = "approvals.decide"
    AUDIT_READ = "audit.read"
    PARTNERS_MANAGE = "partners.manage"
    RISK_READ = "risk.read"
    RISK_MANAGE = "risk.manage"
    LIMITS_MANAGE = "limits.manage"
    FEES_MANAGE = "fees.manage"
    CASH_MANAGE = "cash.manage"


ROLE_PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = {
    # Tellers serve customers at the counter: they read and manage customers and
    # take cash deposits and pay cash withdrawals.
    Role.TELLER: frozenset(
        {Permission.CUSTOMERS_READ, Permission.CUSTOMERS_MANAGE, Permission.CASH_MANAGE}
    ),
    Role.RISK_ANALYST: frozenset(
        {Permission.CUSTOMERS_READ, Permission.RISK_READ, Permission.RISK_MANAGE}
    ),
    # Auditors read everything that records what happened, and change nothing.
    Role.AUDITOR: frozenset(
        {
            Permission.AUDIT_READ,
            Permission.CUSTOMERS_READ,
            Permission.STAFF_READ,
            Permission.RISK_READ,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Permission.CUSTOMERS_READ,
            Permission.CUSTOMERS_MANAGE,
            Permission.STAFF_READ,
            Permission.STAFF_MANAGE,
            Permission.ROLES_GRANT,
            Permission.APPROVALS_DECIDE,
            Permission.PARTNERS_MANAGE,
            Permission.LIMITS_MANAGE,
            Permission.FEES_MANAGE,
            Permission.CASH_MANAGE,
            Permission.RISK_READ,
            Permission.RISK_MANAGE,
        }
    ),
}

# Actions that need a second admin's approval; other contexts add theirs
# (limits, fees, rules) through the approval registry of the service.
FOUR_EYES_ACTIONS: Final = frozenset({"staff.role.grant", "staff.role.revoke"})


class Factor(StrEnum):
    PASSWORD = "password"  # noqa: S105 - the name of a factor
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"
    PASSKEY = "passkey"
    DEVICE = "device"  # a bound phone signed a QR challenge


# Factors that count as a second factor on top of a password. A passkey with
# user verification is multi-factor on its own (something held + biometric/PIN).
SECOND_FACTORS: Final = frozenset({Factor.TOTP, Factor.RECOVERY_CODE, Factor.DEVICE})
STRONG_FACTORS: Final = frozenset({Factor.TOTP, Factor.PASSKEY, Factor.DEVICE})

STEP_UP_FRESH_S: Final = 300


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    granted: set[Permission] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS[role]
    return frozenset(granted)


def parse_role(text: str) -> Role:
    """The role named ``text``; ValueError naming the allowed roles otherwise."""
    try:
        return Role(text)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {text[:40]!r}; roles are: {allowed}") from None


def factors_text(factors: Iterable[Factor]) -> str:
    return ",".join(sorted({f.value for f in factors}))


def parse_factors(text: str | None) -> frozenset[Factor]:
    if not text:
        return frozenset()
    return frozenset(Factor(part) for part in text.split(",") if part)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    kind: str  # "customer" | "staff" | "partner" | "service"
    id: str  # uuid text, partner key id, or "service"
    roles: frozenset[Role] = frozenset()
    session_id: uuid.UUID | None = None
    username: str | None = None
    factors: frozenset[Factor] = frozenset()
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        return "service" if self.kind == "service" else f"{self.kind}:{self.id}"

    @property
    def role_text(self) -> str:
        """The role recorded in the audit trail."""
        if self.kind == "staff":
            return ",".join(sorted(r.value for r in self.roles)) or "staff"
        return self.kind

    @property
    def subject_id(self) -> uuid.UUID:
        return uuid.UUID(self.id)

    @property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(self.roles) if self.kind == "staff" else frozenset()

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


SERVICE_PRINCIPAL: Final = Principal(kind="service", id="service")


def operation_binding(action: str, details: Mapping[str, Any]) -> bytes:
    """The digest that binds a confirmation to exactly one operation.

    SHA-256 of the action and the canonical JSON of the details that matter
    (amount, payee, new phone number...): approving one transfer cannot
    confirm another with a different amount or payee.
    """
    canonical = json.dumps(
        {"action": action, "details": details},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(b"zhifu-operation-v1|" + canonical.encode("utf-8")).digest()

"""Roles, permissions, factors, principals and operation bindings (pure rules)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from zhifu.identity.access import (
    FOUR_EYES_ACTIONS,
    ROLE_PERMISSIONS,
    SECOND_FACTORS,
    SERVICE_PRINCIPAL,
    STEP_UP_FRESH_S,
    STRONG_FACTORS,
    Factor,
    Permission,
    Principal,
    Role,
    factors_text,
    operation_binding,
    parse_factors,
    parse_role,
    permissions_of,
)

P = Permission

EXPECTED_TABLE = {
    Role.TELLER: {P.CUSTOMERS_READ, P.CUSTOMERS_MANAGE, P.CASH_MANAGE},
    Role.RISK_ANALYST: {P.CUSTOMERS_READ, P.RISK_READ, P.RISK_MANAGE},
    Role.AUDITOR: {P.AUDIT_READ, P.CUSTOMERS_READ, P.STAFF_READ, P.RISK_READ},
    Role.ADMIN: {
        P.CUSTOMERS_READ,
        P.CUSTOMERS_MANAGE,
        P.STAFF_READ,
        P.STAFF_MANAGE,
        P.ROLES_GRANT,
        P.APPROVALS_DECIDE,
        P.PARTNERS_MANAGE,
        P.LIMITS_MANAGE,
        P.FEES_MANAGE,
        P.CASH_MANAGE,
        P.RISK_READ,
        P.RISK_MANAGE,
    },
}


def test_role_permission_table() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert {role: set(perms) for role, perms in ROLE_PERMISSIONS.items()} == EXPECTED_TABLE


def test_every_permission_is_granted_by_some_role() -> None:
    assert permissions_of(Role) == frozenset(Permission)


def test_auditor_reads_and_changes_nothing() -> None:
    auditor = ROLE_PERMISSIONS[Role.AUDITOR]
    assert P.AUDIT_READ in auditor
    assert all(p.value.endswith(".read") for p in auditor)
    writes = {p for p in Permission if not p.value.endswith(".read")}
    assert not auditor & writes


def test_only_auditors_read_the_audit_trail() -> None:
    # Separation of duties: whoever administers cannot read their own trail.
    assert [r for r in Role if P.AUDIT_READ in ROLE_PERMISSIONS[r]] == [Role.AUDITOR]


def test_permissions_of_several_roles_is_their_union() -> None:
    both = permissions_of([Role.TELLER, Role.AUDITOR])
    assert both == ROLE_PERMISSIONS[Role.TELLER] | ROLE_PERMISSIONS[Role.AUDITOR]
    assert permissions_of([]) == frozenset()


def test_parse_role_names_the_allowed_roles() -> None:
    assert parse_role("admin") is Role.ADMIN
    with pytest.raises(ValueError, match="teller, risk_analyst, auditor, admin"):
        parse_role("superuser")
    with pytest.raises(ValueError) as caught:
        parse_role("x" * 1000)
    assert len(str(caught.value)) < 200  # the input is cut short in the message


def test_principals() -> None:
    staff_id = uuid.uuid4()
    staff = Principal(kind="staff", id=str(staff_id), roles=frozenset({Role.AUDITOR, Role.TELLER}))
    assert staff.actor == f"staff:{staff_id}"
    assert staff.role_text == "auditor,teller"
    assert staff.subject_id == staff_id
    assert staff.can(P.AUDIT_READ) and staff.can(P.CUSTOMERS_MANAGE)
    assert not staff.can(P.STAFF_MANAGE)
    assert Principal(kind="staff", id=str(staff_id)).role_text == "staff"
    customer = Principal(kind="customer", id=str(uuid.uuid4()), roles=frozenset({Role.ADMIN}))
    # Customers hold no permission, whatever roles a bug might attach.
    assert customer.permissions == frozenset()
    assert customer.role_text == "customer"
    assert SERVICE_PRINCIPAL.actor == "service"


def test_factors_round_trip_through_text() -> None:
    factors = {Factor.TOTP, Factor.PASSWORD, Factor.TOTP}
    assert factors_text(factors) == "password,totp"
    assert parse_factors("password,totp") == frozenset({Factor.PASSWORD, Factor.TOTP})
    assert parse_factors(None) == frozenset() == parse_factors("")
    with pytest.raises(ValueError):
        parse_factors("password,sms")


def test_factor_classes() -> None:
    assert Factor.PASSWORD not in SECOND_FACTORS | STRONG_FACTORS
    assert Factor.RECOVERY_CODE not in STRONG_FACTORS
    assert Factor.PASSKEY in STRONG_FACTORS and Factor.PASSKEY not in SECOND_FACTORS
    assert STEP_UP_FRESH_S == 300
    assert {"staff.role.grant", "staff.role.revoke"} <= FOUR_EYES_ACTIONS


DETAILS: dict[str, Any] = {
    "amount_minor": 10_000,
    "currency": "CNY",
    "payee": {"name": "李四", "account": "6222020200001234"},
}


def test_binding_is_stable_across_dict_order() -> None:
    reordered = {
        "payee": {"account": "6222020200001234", "name": "李四"},
        "currency": "CNY",
        "amount_minor": 10_000,
    }
    assert operation_binding("payments.transfer", DETAILS) == operation_binding(
        "payments.transfer", reordered
    )
    assert len(operation_binding("payments.transfer", DETAILS)) == 32


@pytest.mark.parametrize(
    "changed",
    [
        {**DETAILS, "amount_minor": 10_001},
        {**DETAILS, "amount_minor": "10000"},
        {**DETAILS, "currency": "USD"},
        {**DETAILS, "payee": {"name": "李四", "account": "6222020200001235"}},
        {**DETAILS, "payee": {"name": "李五", "account": "6222020200001234"}},
        {**DETAILS, "memo": ""},
        {k: v for k, v in DETAILS.items() if k != "currency"},
        {**DETAILS, "amount_minor": 10_000.5},
        {**DETAILS, "payee": None},
    ],
)
def test_binding_differs_for_any_detail_change(changed: dict[str, Any]) -> None:
    assert operation_binding("payments.transfer", changed) != operation_binding(
        "payments.transfer", DETAILS
    )


def test_binding_differs_for_another_action() -> None:
    assert operation_binding("payments.transfer", DETAILS) != operation_binding(
        "payments.transfer_batch", DETAILS
    )
    # The action and details are one JSON document: no way to shift text between them.
    assert operation_binding("a.b", {"c": "d"}) != operation_binding("a.b", {"c": "d", "": ""})
    mobile_a = operation_binding("identity.customer.mobile.change", {"mobile": "+8613800000001"})
    mobile_b = operation_binding("identity.customer.mobile.change", {"mobile": "+8613800000002"})
    assert mobile_a != mobile_b

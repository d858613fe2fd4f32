"""Staff members and maker-checker approvals (``zhifu.identity.staff``) on SQLite and PostgreSQL.

Creating staff (username limits, duplicates, weak passwords, unknown roles,
the name encrypted at rest); the four-eyes rule in the service and in the
database; approve, reject, decide twice, decide after expiry; two checkers
racing; the last admin; a handler that fails; handlers of other contexts; the
payload and reason limits; the list filters.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from identity_factories import FakeClock
from sqlalchemy import Connection, Engine, Row, select, text
from sqlalchemy.exc import IntegrityError

from zhifu.identity.access import Principal, Role
from zhifu.identity.errors import (
    AlreadyExistsError,
    FourEyesError,
    InvalidInputError,
    InvalidUsernameError,
    NotFoundError,
    PasswordRejection,
    StateError,
    WeakPasswordError,
)
from zhifu.identity.model import USERNAME_LENGTH_MAX, USERNAME_LENGTH_MIN
from zhifu.identity.passwords import PasswordHasher
from zhifu.identity.service import US
from zhifu.identity.staff import (
    APPROVAL_PAYLOAD_BYTES_MAX,
    APPROVAL_TTL_S,
    LIST_LIMIT_MAX,
    REASON_CHARS_MAX,
    ApprovalView,
    StaffService,
    StaffView,
)
from zhifu.ops.audit import AuditRecord, list_events, system_context
from zhifu.security.envelope import KeyRing
from zhifu.store.tables import identity_approvals, identity_staff, identity_staff_roles

PASSWORD = "plum-orbit-velvet-canyon-42"
NAME = "Ouyang Xiaoming"
CHINESE_NAME = "欧阳晓明"
START_US = 1_767_225_600 * US  # 2026-01-01T00:00:00Z
CUSTOM_ACTION = "limits.daily.set"
HOLD_S = 1.0  # how long a racing transaction waits for its rival before committing
RACE_TIMEOUT_S = 30.0


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing([("index", bytes(range(32))), ("k1", bytes(range(32, 64)))])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START_US)


@pytest.fixture
def staff(engine: Engine, keyring: KeyRing, clock: FakeClock) -> StaffService:
    # Cheap argon2 parameters: these tests are about the rules, not the hash.
    hasher = PasswordHasher(time_cost=1, memory_cost_kib=8)
    return StaffService(engine, keyring, hasher=hasher, clock=clock)


def _principal(view: StaffView) -> Principal:
    return Principal(
        kind="staff",
        id=str(view.id),
        roles=frozenset(Role(r) for r in view.roles),
        username=view.username,
    )


def _actor(view: StaffView) -> str:
    return f"staff:{view.id}"


def _create(service: StaffService, username: str, *roles: str) -> StaffView:
    return service.create_staff(
        username, NAME, PASSWORD, system_context("system:test"), roles=roles
    )


class Bank:
    """Two admins (the usual maker and checker), a third admin and a teller-to-be."""

    def __init__(self, service: StaffService) -> None:
        self.service = service
        self.maker = _create(service, "maker", "admin")
        self.checker = _create(service, "checker", "admin")
        self.other = _create(service, "other", "admin")
        self.bob = _create(service, "bob")

    def propose_grant(self, role: str = "teller", target: StaffView | None = None) -> ApprovalView:
        target = target or self.bob
        return self.service.propose(
            _principal(self.maker),
            "staff.role.grant",
            f"staff:{target.id}",
            {"role": role},
            system_context(_actor(self.maker)),
        )

    def decide(
        self,
        who: StaffView,
        approval: ApprovalView,
        *,
        approve: bool = True,
        reason: str | None = None,
    ) -> ApprovalView:
        return self.service.decide(
            _principal(who),
            approval.id,
            approve=approve,
            reason=reason,
            ctx=system_context(_actor(who)),
        )


@pytest.fixture
def bank(staff: StaffService) -> Bank:
    return Bank(staff)


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(table)).all())


def _roles(engine: Engine, staff_id: uuid.UUID) -> list[Row[Any]]:
    with engine.connect() as connection:
        query = select(identity_staff_roles).where(identity_staff_roles.c.staff_id == staff_id)
        return list(connection.execute(query.order_by(identity_staff_roles.c.role)).all())


def _events(engine: Engine, action_prefix: str, **filters: Any) -> list[AuditRecord]:
    with engine.connect() as connection:
        return list_events(connection, 1000, action_prefix, **filters)


# --- creating staff ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [USERNAME_LENGTH_MIN, USERNAME_LENGTH_MAX])
def test_username_at_its_length_limits_is_accepted(
    staff: StaffService, engine: Engine, length: int
) -> None:
    username = "a" + "b" * (length - 1)
    view = _create(staff, username.upper())
    assert view.username == username  # folded to lower case
    assert view.status == "active"
    assert view.roles == ()
    assert staff.get_staff(view.id) == view


@pytest.mark.parametrize(
    "username",
    [
        "a" * (USERNAME_LENGTH_MIN - 1),
        "a" * (USERNAME_LENGTH_MAX + 1),
        "",
        "-leading-dash",
        "has space",
        "ünïcode",
        "semi;colon",
    ],
)
def test_username_outside_the_rule_is_refused_and_nothing_is_written(
    staff: StaffService, engine: Engine, username: str
) -> None:
    with pytest.raises(
        InvalidUsernameError, match=f"{USERNAME_LENGTH_MIN} to {USERNAME_LENGTH_MAX}"
    ):
        _create(staff, username)
    assert _count(engine, identity_staff) == 0
    assert _events(engine, "identity.staff") == []


def test_duplicate_username_is_refused_whatever_its_case(
    staff: StaffService, engine: Engine
) -> None:
    first = _create(staff, "alice", "teller")
    for again in ("alice", "ALICE", "  Alice "):
        with pytest.raises(AlreadyExistsError, match="'alice' is taken"):
            _create(staff, again, "admin")
    assert _count(engine, identity_staff) == 1
    assert staff.get_staff(first.id).roles == ("teller",)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-pass-1", PasswordRejection.TOO_SHORT),
        ("x" * 129, PasswordRejection.TOO_LONG),
        ("1234567890qwerty", PasswordRejection.BLOCKLISTED),
        ("ouyang-harbour-lights", PasswordRejection.CONTAINS_PERSONAL_DATA),
        ("carol-is-on-call-tonight", PasswordRejection.CONTAINS_PERSONAL_DATA),
        ("abababababababababab", PasswordRejection.REPETITIVE),
    ],
)
def test_weak_password_is_refused_and_nothing_is_written(
    staff: StaffService, engine: Engine, password: str, reason: PasswordRejection
) -> None:
    with pytest.raises(WeakPasswordError) as caught:
        staff.create_staff("carol", NAME, password, system_context())
    assert caught.value.reason is reason
    assert password not in str(caught.value)
    assert _count(engine, identity_staff) == 0


def test_unknown_role_is_refused_naming_the_roles(staff: StaffService, engine: Engine) -> None:
    with pytest.raises(InvalidInputError, match="roles are: teller, risk_analyst, auditor, admin"):
        _create(staff, "dave", "teller", "superuser")
    assert _count(engine, identity_staff) == 0
    assert _count(engine, identity_staff_roles) == 0


def test_created_staff_gets_roles_and_an_audit_event(
    staff: StaffService, engine: Engine, clock: FakeClock
) -> None:
    view = _create(staff, "erin", "teller", "auditor", "teller")
    assert view.roles == ("auditor", "teller")
    assert view.created_ts == START_US
    assert view.created_by == "system:test"
    rows = _roles(engine, view.id)
    assert [(r.role, r.granted_by, r.approved_by) for r in rows] == [
        ("auditor", "system:test", None),
        ("teller", "system:test", None),
    ]
    [event] = _events(engine, "identity.staff.create")
    assert event.actor == "system:test"
    assert event.target == f"staff:{view.id}"
    assert event.details == {"username": "erin", "roles": ["auditor", "teller"]}


@pytest.mark.parametrize("name", [NAME, CHINESE_NAME])
def test_name_is_encrypted_at_rest(
    staff: StaffService, engine: Engine, keyring: KeyRing, name: str
) -> None:
    view = staff.create_staff("frank", name, PASSWORD, system_context())
    assert view.name == name
    assert staff.get_staff(view.id).name == name
    needles = [name.encode(), name.encode("utf-16-le"), name.lower().encode()]
    with engine.connect() as connection:
        staff_rows = connection.execute(select(identity_staff)).all()
        audit_rows = connection.execute(text("SELECT * FROM audit_events")).all()
    assert len(staff_rows) == 1
    for row in (*staff_rows, *audit_rows):
        for value in row:
            raw = value if isinstance(value, bytes | memoryview) else str(value).encode()
            for needle in needles:
                assert needle not in bytes(raw), f"plaintext name in {row}"
    assert staff_rows[0].pii_key_id == keyring.active_key_id
    # The password is stored only as an argon2id hash.
    assert staff_rows[0].password_hash.startswith("$argon2id$")
    assert PASSWORD not in staff_rows[0].password_hash


def test_get_and_list_staff(staff: StaffService) -> None:
    with pytest.raises(NotFoundError):
        staff.get_staff(uuid.uuid4())
    views = [_create(staff, name) for name in ("zed", "amy", "max")]
    assert [v.username for v in staff.list_staff()] == ["amy", "max", "zed"]
    assert [v.username for v in staff.list_staff(limit=1)] == ["amy"]
    assert len(staff.list_staff(limit=LIST_LIMIT_MAX)) == len(views)
    for limit in (0, LIST_LIMIT_MAX + 1):
        with pytest.raises(InvalidInputError, match=f"1 to {LIST_LIMIT_MAX}"):
            staff.list_staff(limit=limit)


# --- the four-eyes rule ------------------------------------------------------------------


def test_the_maker_cannot_approve_and_the_refusal_is_on_record(bank: Bank, engine: Engine) -> None:
    approval = bank.propose_grant()
    assert approval.status == "pending"
    for approve in (True, False):
        with pytest.raises(FourEyesError, match="someone other than who proposed it"):
            bank.decide(bank.maker, approval, approve=approve)
    assert bank.service.get_approval(approval.id) == approval
    assert bank.service.get_staff(bank.bob.id).roles == ()
    refusals = _events(engine, "identity.approval.decide", target=f"approval:{approval.id}")
    assert len(refusals) == 2
    for event in refusals:
        assert event.outcome == "denied"
        assert event.actor == _actor(bank.maker)
        assert event.details == {"reason": "own_proposal"}
    assert _events(engine, "identity.approval.approve") == []


def test_a_second_admin_approves_and_the_role_is_granted(
    bank: Bank, engine: Engine, clock: FakeClock
) -> None:
    approval = bank.propose_grant("risk_analyst")
    assert approval.maker == _actor(bank.maker)
    assert approval.maker_name == "maker"
    assert approval.checker is None
    assert approval.expires_ts == START_US + APPROVAL_TTL_S * US
    [proposed] = _events(engine, "identity.approval.propose")
    assert proposed.actor == _actor(bank.maker)
    assert proposed.details == {
        "change": "staff.role.grant",
        "change_target": f"staff:{bank.bob.id}",
    }

    clock.now_us += 60 * US
    decided = bank.decide(bank.checker, approval, reason="covers the night shift")
    assert decided.status == "approved"
    assert (decided.maker, decided.maker_name) == (_actor(bank.maker), "maker")
    assert (decided.checker, decided.checker_name) == (_actor(bank.checker), "checker")
    assert decided.reason == "covers the night shift"
    assert decided.decided_ts == clock.now_us
    assert decided.result == {"granted": "risk_analyst", "username": "bob"}
    assert bank.service.get_approval(approval.id) == decided

    assert bank.service.get_staff(bank.bob.id).roles == ("risk_analyst",)
    [row] = _roles(engine, bank.bob.id)
    assert row.granted_by == _actor(bank.maker)
    assert row.approved_by == _actor(bank.checker)
    assert row.granted_ts == clock.now_us

    [event] = _events(engine, "identity.approval.approve")
    assert event.actor == _actor(bank.checker)
    assert event.outcome == "ok"
    assert event.details == {
        "change": "staff.role.grant",
        "change_target": f"staff:{bank.bob.id}",
        "maker": _actor(bank.maker),
        "maker_name": "maker",
        "checker_name": "checker",
    }


def test_reject_changes_nothing_but_the_approval(bank: Bank, engine: Engine) -> None:
    approval = bank.propose_grant()
    rejected = bank.decide(bank.checker, approval, approve=False, reason="not needed")
    assert rejected.status == "rejected"
    assert rejected.checker == _actor(bank.checker)
    assert rejected.checker_name == "checker"
    assert rejected.reason == "not needed"
    assert rejected.result is None
    assert bank.service.get_staff(bank.bob.id).roles == ()
    [event] = _events(engine, "identity.approval.reject")
    assert event.actor == _actor(bank.checker)


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("second", [True, False])
def test_a_decided_approval_cannot_be_decided_again(bank: Bank, first: bool, second: bool) -> None:
    approval = bank.propose_grant()
    decided = bank.decide(bank.checker, approval, approve=first)
    for who in (bank.checker, bank.other):
        with pytest.raises(StateError, match="approved" if first else "rejected"):
            bank.decide(who, approval, approve=second)
    assert bank.service.get_approval(approval.id) == decided
    assert bank.service.get_staff(bank.bob.id).roles == (("teller",) if first else ())


def test_unknown_approval_is_not_found(bank: Bank) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError):
        bank.service.get_approval(missing)
    with pytest.raises(NotFoundError):
        bank.service.decide(
            _principal(bank.checker), missing, approve=True, reason=None, ctx=system_context()
        )


def test_the_database_refuses_a_checker_who_is_the_maker(bank: Bank, engine: Engine) -> None:
    approval = bank.propose_grant()
    with pytest.raises(IntegrityError, match="four_eyes"), engine.begin() as connection:
        connection.execute(
            identity_approvals.update()
            .where(identity_approvals.c.id == approval.id)
            .values(checker=identity_approvals.c.maker, status="approved")
        )
    with pytest.raises(IntegrityError, match="four_eyes"), engine.begin() as connection:
        connection.execute(
            text("UPDATE identity_approvals SET checker = maker, checker_name = maker_name")
        )
    assert bank.service.get_approval(approval.id) == approval


# --- expiry --------------------------------------------------------------------------------


def test_an_approval_can_be_decided_until_just_before_it_expires(
    bank: Bank, clock: FakeClock
) -> None:
    approval = bank.propose_grant()
    clock.now_us = approval.expires_ts - 1
    assert bank.decide(bank.checker, approval).status == "approved"


@pytest.mark.parametrize("approve", [True, False])
def test_an_expired_approval_cannot_be_decided(
    bank: Bank, engine: Engine, clock: FakeClock, approve: bool
) -> None:
    approval = bank.propose_grant()
    for late_us in (approval.expires_ts, approval.expires_ts + 3600 * US):
        clock.now_us = late_us
        with pytest.raises(StateError, match="expired"):
            bank.decide(bank.checker, approval, approve=approve)
    assert bank.service.get_staff(bank.bob.id).roles == ()
    assert _events(engine, "identity.approval.approve") == []
    assert _events(engine, "identity.approval.reject") == []
    # The maker is still refused as the maker, not told it expired.
    with pytest.raises(FourEyesError):
        bank.decide(bank.maker, approval, approve=approve)


def test_expired_approvals_are_listed_as_expired_not_pending(bank: Bank, clock: FakeClock) -> None:
    old = bank.propose_grant("teller")
    clock.now_us += APPROVAL_TTL_S * US // 2
    fresh = bank.propose_grant("auditor")
    clock.now_us = old.expires_ts
    assert [a.id for a in bank.service.list_approvals("pending")] == [fresh.id]
    [expired] = bank.service.list_approvals("expired")
    assert (expired.id, expired.status) == (old.id, "expired")
    assert bank.service.get_approval(old.id).status == "expired"
    assert {a.id: a.status for a in bank.service.list_approvals()} == {
        old.id: "expired",
        fresh.id: "pending",
    }


# --- races ------------------------------------------------------------------------------


def _race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` at once in threads; each outcome is a result or the exception raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait(timeout=RACE_TIMEOUT_S)
        try:
            outcomes[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RACE_TIMEOUT_S)
        assert not thread.is_alive(), "a racing call hung"
    return outcomes


class HoldOpen:
    """Wraps an approval handler: each call, once the handler has done its work,
    waits up to ``HOLD_S`` for the rival call to get there too, so both database
    transactions have read and written before either commits."""

    def __init__(self, handler: Callable[[Connection, Row[Any], dict[str, Any], str], Any]):
        self.handler = handler
        self.barrier = threading.Barrier(2)

    def __call__(
        self, connection: Connection, row: Row[Any], payload: dict[str, Any], checker: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.handler(connection, row, payload, checker)
        # A broken barrier: the rival is held back by a lock, the point of the test.
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=HOLD_S)
        return result


@pytest.mark.parametrize("held_open", [False, True], ids=["plain", "held-open"])
def test_two_admins_approving_at_once_grant_the_role_once(
    bank: Bank, engine: Engine, held_open: bool
) -> None:
    if held_open:
        bank.service.register_approval_handler(
            "staff.role.grant", HoldOpen(bank.service._grant_role)
        )
    approval = bank.propose_grant()
    outcomes = _race(
        [lambda: bank.decide(bank.checker, approval), lambda: bank.decide(bank.other, approval)]
    )
    winners = [o for o in outcomes if isinstance(o, ApprovalView)]
    losers = [o for o in outcomes if not isinstance(o, ApprovalView)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1
    assert isinstance(losers[0], StateError), repr(losers[0])
    assert bank.service.get_approval(approval.id) == winners[0]
    [row] = _roles(engine, bank.bob.id)
    assert row.approved_by == winners[0].checker
    assert len(_events(engine, "identity.approval.approve")) == 1


def test_two_admins_revoking_each_other_at_once_leave_one_admin(
    staff: StaffService, engine: Engine
) -> None:
    """The last-admin rule holds under a race: each revocation alone is fine,
    both together would leave the bank with no admin at all."""
    alpha = _create(staff, "alpha", "admin")
    beta = _create(staff, "beta", "admin")
    staff.register_approval_handler("staff.role.revoke", HoldOpen(staff._revoke_role))
    revoke_alpha = staff.propose(
        _principal(beta),
        "staff.role.revoke",
        f"staff:{alpha.id}",
        {"role": "admin"},
        system_context(_actor(beta)),
    )
    revoke_beta = staff.propose(
        _principal(alpha),
        "staff.role.revoke",
        f"staff:{beta.id}",
        {"role": "admin"},
        system_context(_actor(alpha)),
    )

    def decide(who: StaffView, approval: ApprovalView) -> ApprovalView:
        return staff.decide(
            _principal(who), approval.id, approve=True, reason=None, ctx=system_context()
        )

    outcomes = _race([lambda: decide(alpha, revoke_alpha), lambda: decide(beta, revoke_beta)])
    winners = [o for o in outcomes if isinstance(o, ApprovalView)]
    losers = [o for o in outcomes if not isinstance(o, ApprovalView)]
    assert len(winners) == 1, outcomes
    assert isinstance(losers[0], StateError), repr(losers[0])
    assert "last active admin" in str(losers[0])
    admins = [v for v in staff.list_staff() if "admin" in v.roles]
    assert len(admins) == 1


# --- the last admin and failing handlers ----------------------------------------------------


def test_the_last_admin_cannot_lose_the_admin_role(staff: StaffService, engine: Engine) -> None:
    alpha = _create(staff, "alpha", "admin")
    beta = _create(staff, "beta", "admin")

    def propose_revoke(maker: StaffView, target: StaffView) -> ApprovalView:
        return staff.propose(
            _principal(maker),
            "staff.role.revoke",
            f"staff:{target.id}",
            {"role": "admin"},
            system_context(_actor(maker)),
        )

    revoke_beta = propose_revoke(alpha, beta)
    revoke_alpha = propose_revoke(beta, alpha)
    done = staff.decide(
        _principal(beta), revoke_beta.id, approve=True, reason=None, ctx=system_context()
    )
    assert done.result == {"revoked": "admin", "username": "beta"}
    assert staff.get_staff(beta.id).roles == ()

    with pytest.raises(StateError, match="the last active admin cannot lose the admin role"):
        staff.decide(
            _principal(alpha), revoke_alpha.id, approve=True, reason=None, ctx=system_context()
        )
    assert staff.get_approval(revoke_alpha.id).status == "pending"
    assert staff.get_staff(alpha.id).roles == ("admin",)
    # Rejecting it is still possible: nothing is revoked.
    rejected = staff.decide(
        _principal(alpha), revoke_alpha.id, approve=False, reason=None, ctx=system_context()
    )
    assert rejected.status == "rejected"
    assert staff.get_staff(alpha.id).roles == ("admin",)


def test_revoking_another_role_of_the_last_admin_is_allowed(staff: StaffService) -> None:
    alpha = _create(staff, "alpha", "admin", "auditor")
    helper = _create(staff, "helper", "teller")
    approval = staff.propose(
        _principal(helper),
        "staff.role.revoke",
        f"staff:{alpha.id}",
        {"role": "auditor"},
        system_context(),
    )
    staff.decide(_principal(alpha), approval.id, approve=True, reason=None, ctx=system_context())
    assert staff.get_staff(alpha.id).roles == ("admin",)


def test_a_failing_handler_leaves_the_approval_pending_and_changes_nothing(
    bank: Bank, engine: Engine
) -> None:
    before = _roles(engine, bank.checker.id)
    approval = bank.propose_grant("admin", target=bank.checker)  # holds it already
    with pytest.raises(StateError, match="checker holds the role admin already"):
        bank.decide(bank.other, approval)
    assert bank.service.get_approval(approval.id) == approval
    assert _roles(engine, bank.checker.id) == before
    assert _events(engine, "identity.approval.approve") == []

    revoke = bank.service.propose(
        _principal(bank.maker),
        "staff.role.revoke",
        f"staff:{bank.bob.id}",
        {"role": "teller"},
        system_context(),
    )
    with pytest.raises(StateError, match="bob does not hold the role teller"):
        bank.decide(bank.checker, revoke)
    assert bank.service.get_approval(revoke.id).status == "pending"

    ghost = bank.service.propose(
        _principal(bank.maker),
        "staff.role.grant",
        f"staff:{uuid.uuid4()}",
        {"role": "teller"},
        system_context(),
    )
    with pytest.raises(NotFoundError):
        bank.decide(bank.checker, ghost)
    assert bank.service.get_approval(ghost.id).status == "pending"


def test_a_custom_handler_runs_only_on_approval(bank: Bank, engine: Engine) -> None:
    calls: list[tuple[str, dict[str, Any], str]] = []

    def set_limit(
        connection: Connection, row: Row[Any], payload: dict[str, Any], checker: str
    ) -> dict[str, Any]:
        calls.append((row.target, payload, checker))
        return {"limit_minor": payload["limit_minor"]}

    bank.service.register_approval_handler(CUSTOM_ACTION, set_limit)

    def propose(limit_minor: int) -> ApprovalView:
        return bank.service.propose(
            _principal(bank.maker),
            CUSTOM_ACTION,
            "limits:teller",
            {"limit_minor": limit_minor},
            system_context(),
        )

    rejected = propose(1_000_00)
    bank.decide(bank.checker, rejected, approve=False)
    assert calls == []
    with pytest.raises(FourEyesError):
        bank.decide(bank.maker, propose(2_000_00))
    assert calls == []

    approved = bank.decide(bank.checker, propose(5_000_00))
    assert calls == [("limits:teller", {"limit_minor": 5_000_00}, _actor(bank.checker))]
    assert approved.result == {"limit_minor": 5_000_00}
    [event] = _events(engine, "identity.approval.approve")
    assert event.details["change"] == CUSTOM_ACTION


def test_a_custom_handler_that_raises_rolls_back_its_own_writes(bank: Bank, engine: Engine) -> None:
    def half_done(
        connection: Connection, row: Row[Any], payload: dict[str, Any], checker: str
    ) -> dict[str, Any]:
        connection.execute(
            identity_staff_roles.insert().values(
                staff_id=bank.bob.id, role="teller", granted_ts=1, granted_by=checker
            )
        )
        raise InvalidInputError("the limit is above the bank's ceiling")

    bank.service.register_approval_handler(CUSTOM_ACTION, half_done)
    approval = bank.service.propose(
        _principal(bank.maker), CUSTOM_ACTION, None, {}, system_context()
    )
    with pytest.raises(InvalidInputError, match="ceiling"):
        bank.decide(bank.checker, approval)
    assert _roles(engine, bank.bob.id) == []
    assert bank.service.get_approval(approval.id).status == "pending"


# --- input limits --------------------------------------------------------------------------


def _padded_payload(size_bytes: int) -> dict[str, Any]:
    empty = len(json.dumps({"note": ""}, separators=(",", ":")))
    return {"note": "x" * (size_bytes - empty)}


def test_payload_at_its_limit_is_accepted_and_one_byte_more_is_refused(
    bank: Bank, engine: Engine
) -> None:
    bank.service.register_approval_handler(CUSTOM_ACTION, lambda c, r, p, checker: {})
    at_limit = _padded_payload(APPROVAL_PAYLOAD_BYTES_MAX)
    approval = bank.service.propose(
        _principal(bank.maker), CUSTOM_ACTION, None, at_limit, system_context()
    )
    assert approval.payload == at_limit
    with pytest.raises(InvalidInputError, match=f"at most {APPROVAL_PAYLOAD_BYTES_MAX} bytes"):
        bank.service.propose(
            _principal(bank.maker),
            CUSTOM_ACTION,
            None,
            _padded_payload(APPROVAL_PAYLOAD_BYTES_MAX + 1),
            system_context(),
        )
    assert _count(engine, identity_approvals) == 1


def test_target_at_its_limit_is_accepted_and_one_more_is_refused(bank: Bank) -> None:
    bank.service.register_approval_handler(CUSTOM_ACTION, lambda c, r, p, checker: {})
    maker = _principal(bank.maker)
    approval = bank.service.propose(maker, CUSTOM_ACTION, "t" * 128, {}, system_context())
    assert approval.target == "t" * 128
    with pytest.raises(InvalidInputError, match="at most 128 characters"):
        bank.service.propose(maker, CUSTOM_ACTION, "t" * 129, {}, system_context())


@pytest.mark.parametrize(
    ("action", "target", "payload", "message"),
    [
        ("staff.role.delete", "staff:{bob}", {"role": "teller"}, "four-eyes actions are"),
        ("staff.role.grant", None, {"role": "teller"}, "target must be 'staff:<staff id>'"),
        ("staff.role.grant", "customer:{bob}", {"role": "teller"}, "target must be"),
        ("staff.role.grant", "staff:not-a-uuid", {"role": "teller"}, "target must be"),
        ("staff.role.grant", "staff:{bob}", {"role": "root"}, "roles are:"),
        ("staff.role.revoke", "staff:{bob}", {}, "roles are:"),
    ],
)
def test_bad_proposals_are_refused_and_nothing_is_written(
    bank: Bank,
    engine: Engine,
    action: str,
    target: str | None,
    payload: dict[str, Any],
    message: str,
) -> None:
    target = None if target is None else target.format(bob=bank.bob.id)
    with pytest.raises(InvalidInputError, match=message):
        bank.service.propose(_principal(bank.maker), action, target, payload, system_context())
    assert _count(engine, identity_approvals) == 0
    assert _events(engine, "identity.approval") == []


def test_reason_at_its_limit_is_accepted_and_one_more_is_refused(bank: Bank) -> None:
    first = bank.propose_grant("teller")
    with pytest.raises(InvalidInputError, match=f"at most {REASON_CHARS_MAX} characters"):
        bank.decide(bank.checker, first, reason="r" * (REASON_CHARS_MAX + 1))
    assert bank.service.get_approval(first.id).status == "pending"
    decided = bank.decide(bank.checker, first, reason="r" * REASON_CHARS_MAX)
    assert decided.reason == "r" * REASON_CHARS_MAX


# --- listing ------------------------------------------------------------------------------


def test_list_approvals_filters_by_status_newest_first(bank: Bank, clock: FakeClock) -> None:
    made: list[ApprovalView] = []
    for role in ("teller", "auditor", "risk_analyst", "admin"):
        clock.now_us += US
        made.append(bank.propose_grant(role))
    bank.decide(bank.checker, made[0])
    bank.decide(bank.checker, made[1], approve=False)

    def ids(status: str | None, limit: int = 100) -> list[uuid.UUID]:
        return [a.id for a in bank.service.list_approvals(status, limit)]

    assert ids(None) == [a.id for a in reversed(made)]
    assert ids("pending") == [made[3].id, made[2].id]
    assert ids("approved") == [made[0].id]
    assert ids("rejected") == [made[1].id]
    assert ids("expired") == []
    assert ids("failed") == []
    assert ids(None, 1) == [made[3].id]
    assert ids("pending", LIST_LIMIT_MAX) == [made[3].id, made[2].id]
    for limit in (0, LIST_LIMIT_MAX + 1):
        with pytest.raises(InvalidInputError, match=f"1 to {LIST_LIMIT_MAX}"):
            bank.service.list_approvals(None, limit)
    with pytest.raises(InvalidInputError, match="status must be pending, approved"):
        bank.service.list_approvals("done")

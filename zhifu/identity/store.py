"""Persistence of the identity context: SQL over the ``identity_*`` tables.

Every function takes the caller's open connection (the unit of work is the
service's). Personal data goes in and out of here only as envelope tokens;
the service encrypts and decrypts. Secrets that authenticate (session
tokens, login tickets, recovery codes, browser cookies, QR nonces) are stored
only as SHA-256 hashes: they are 256-bit random values, so a fast hash is
enough and a stolen table gives nothing to log in with.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, func, insert, or_, select, update

from zhifu.identity.throttle import ThrottleKey
from zhifu.ids import uuid7
from zhifu.security.rotation import EncryptedColumns, register
from zhifu.store.tables import (
    identity_approvals,
    identity_browsers,
    identity_challenges,
    identity_customers,
    identity_devices,
    identity_partner_keys,
    identity_partner_nonces,
    identity_passkeys,
    identity_recovery_codes,
    identity_sessions,
    identity_staff,
    identity_staff_roles,
    identity_throttle,
    identity_totp,
)

# Everything of this context that ``zhifu keys rotate`` re-encrypts.
for _spec in (
    EncryptedColumns(
        identity_customers,
        "id",
        "pii_key_id",
        ("name_enc", "resident_id_enc", "mobile_enc", "email_enc"),
    ),
    EncryptedColumns(identity_staff, "id", "pii_key_id", ("name_enc",)),
    EncryptedColumns(identity_totp, "id", "pii_key_id", ("secret_enc",)),
    EncryptedColumns(identity_partner_keys, "id", "pii_key_id", ("secret_enc",)),
):
    register(_spec)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(b"zhifu-secret-v1|" + secret.encode("utf-8")).digest()


# --- customers and staff ------------------------------------------------------------


def insert_customer(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_customers).values(**values))


def customer_by_id(connection: Connection, customer_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_customers).where(identity_customers.c.id == customer_id)
    return connection.execute(query).one_or_none()


def customer_by_index(connection: Connection, column: str, index: bytes) -> Row[Any] | None:
    query = select(identity_customers).where(identity_customers.c[column] == index)
    return connection.execute(query).one_or_none()


def customer_exists_with(connection: Connection, indexes: dict[str, bytes]) -> list[str]:
    """The unique columns among ``indexes`` that another customer already holds."""
    taken = []
    for column, index in indexes.items():
        query = select(identity_customers.c.id).where(identity_customers.c[column] == index)
        if connection.execute(query).first() is not None:
            taken.append(column)
    return taken


def update_customer(connection: Connection, customer_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(identity_customers).where(identity_customers.c.id == customer_id).values(**values)
    )
    return result.rowcount


def insert_staff(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_staff).values(**values))


def staff_by_id(connection: Connection, staff_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_staff).where(identity_staff.c.id == staff_id)
    return connection.execute(query).one_or_none()


def staff_by_username(connection: Connection, username: str) -> Row[Any] | None:
    query = select(identity_staff).where(identity_staff.c.username == username)
    return connection.execute(query).one_or_none()


def list_staff(connection: Connection, limit: int) -> Sequence[Row[Any]]:
    query = select(identity_staff).order_by(identity_staff.c.username).limit(limit)
    return connection.execute(query).all()


def update_staff(connection: Connection, staff_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(identity_staff).where(identity_staff.c.id == staff_id).values(**values)
    )
    return result.rowcount


def roles_of(connection: Connection, staff_id: uuid.UUID) -> list[str]:
    query = select(identity_staff_roles.c.role).where(identity_staff_roles.c.staff_id == staff_id)
    return sorted(row.role for row in connection.execute(query))


def grant_role(connection: Connection, values: dict[str, Any]) -> bool:
    """Grant a role; False when the staff member holds it already."""
    existing = connection.execute(
        select(identity_staff_roles.c.role).where(
            identity_staff_roles.c.staff_id == values["staff_id"],
            identity_staff_roles.c.role == values["role"],
        )
    ).first()
    if existing is not None:
        return False
    connection.execute(insert(identity_staff_roles).values(**values))
    return True


def revoke_role(connection: Connection, staff_id: uuid.UUID, role: str) -> bool:
    result = connection.execute(
        delete(identity_staff_roles).where(
            identity_staff_roles.c.staff_id == staff_id, identity_staff_roles.c.role == role
        )
    )
    return result.rowcount > 0


def count_admins(connection: Connection) -> int:
    query = (
        select(func.count())
        .select_from(identity_staff_roles.join(identity_staff))
        .where(identity_staff_roles.c.role == "admin", identity_staff.c.status == "active")
    )
    return int(connection.execute(query).scalar_one())


# --- sessions and browsers ------------------------------------------------------------


def insert_session(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_sessions).values(**values))


# Built once with a bound parameter: every authenticated request runs it.
_SESSION_FOR_REQUEST = (
    select(identity_sessions, identity_customers.c.status.label("customer_status"))
    .select_from(
        identity_sessions.outerjoin(
            identity_customers,
            and_(
                identity_sessions.c.subject_kind == "customer",
                identity_customers.c.id == identity_sessions.c.subject_id,
            ),
        )
    )
    .where(identity_sessions.c.token_hash == bindparam("token_hash"))
)


def session_for_request(connection: Connection, token_hash: bytes) -> Row[Any] | None:
    """A session with its customer's status (``customer_status``, None for staff):
    the one query an authenticated customer request costs."""
    return connection.execute(_SESSION_FOR_REQUEST, {"token_hash": token_hash}).one_or_none()


def session_by_id(connection: Connection, session_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_sessions).where(identity_sessions.c.id == session_id)
    return connection.execute(query).one_or_none()


def touch_session(
    connection: Connection, session_id: uuid.UUID, now_ts: int, *, older_than_ts: int | None = None
) -> None:
    """Move the session's last use to ``now_ts`` (only if it is before ``older_than_ts``)."""
    query = update(identity_sessions).where(identity_sessions.c.id == session_id)
    if older_than_ts is not None:
        query = query.where(identity_sessions.c.last_seen_ts < older_than_ts)
    connection.execute(query.values(last_seen_ts=now_ts))


def update_session(connection: Connection, session_id: uuid.UUID, values: dict[str, Any]) -> None:
    connection.execute(
        update(identity_sessions).where(identity_sessions.c.id == session_id).values(**values)
    )


def active_sessions(
    connection: Connection, kind: str, subject_id: uuid.UUID, now_ts: int
) -> Sequence[Row[Any]]:
    query = (
        select(identity_sessions)
        .where(
            identity_sessions.c.subject_kind == kind,
            identity_sessions.c.subject_id == subject_id,
            identity_sessions.c.revoked_ts.is_(None),
            identity_sessions.c.expires_ts > now_ts,
        )
        .order_by(identity_sessions.c.created_ts.desc())
    )
    return connection.execute(query).all()


def revoke_sessions(
    connection: Connection,
    kind: str,
    subject_id: uuid.UUID,
    now_ts: int,
    reason: str,
    *,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> int:
    conditions = [
        identity_sessions.c.subject_kind == kind,
        identity_sessions.c.subject_id == subject_id,
        identity_sessions.c.revoked_ts.is_(None),
    ]
    if only is not None:
        conditions.append(identity_sessions.c.id == only)
    if keep is not None:
        conditions.append(identity_sessions.c.id != keep)
    result = connection.execute(
        update(identity_sessions)
        .where(and_(*conditions))
        .values(revoked_ts=now_ts, revoke_reason=reason)
    )
    return result.rowcount


def browser_for(
    connection: Connection, token_hash: bytes, kind: str, subject_id: uuid.UUID
) -> Row[Any] | None:
    query = select(identity_browsers).where(
        identity_browsers.c.token_hash == token_hash,
        identity_browsers.c.subject_kind == kind,
        identity_browsers.c.subject_id == subject_id,
    )
    return connection.execute(query).one_or_none()


def insert_browser(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_browsers).values(**values))


def touch_browser(connection: Connection, browser_id: uuid.UUID, now_ts: int) -> None:
    connection.execute(
        update(identity_browsers)
        .where(identity_browsers.c.id == browser_id)
        .values(last_seen_ts=now_ts)
    )


# --- throttle -----------------------------------------------------------------------


def throttle_rows(
    connection: Connection, keys: Sequence[ThrottleKey], *, lock: bool = False
) -> dict[bytes, Row[Any]]:
    """The counters of ``keys`` that exist. ``lock`` (to count a failure) locks them
    until commit, in key order, so that concurrent failures are all counted
    (PostgreSQL; SQLite's writer already runs alone)."""
    query = select(identity_throttle).where(identity_throttle.c.key.in_([k.key for k in keys]))
    if lock:
        query = query.order_by(identity_throttle.c.key).with_for_update()
    return {bytes(row.key): row for row in connection.execute(query)}


def upsert_throttle(
    connection: Connection,
    key: ThrottleKey,
    failures: int,
    now_ts: int,
    blocked_until_ts: int,
    *,
    exists: bool,
) -> None:
    """Store a counter read (``exists``: and locked) by :func:`throttle_rows` in this
    transaction. A counter that did not exist is inserted, never updated: a
    concurrent transaction may have inserted it since, and overwriting its count
    would lose a failure. The two inserts meet a unique violation instead; run
    this with ``retry_unique_violation`` so the loser reads the row and counts again.
    """
    values = {"failures": failures, "last_failure_ts": now_ts, "blocked_until_ts": blocked_until_ts}
    if exists:
        connection.execute(
            update(identity_throttle).where(identity_throttle.c.key == key.key).values(**values)
        )
    else:
        connection.execute(
            insert(identity_throttle).values(key=key.key, scope=key.scope.value, **values)
        )


def clear_throttle(connection: Connection, keys: Sequence[bytes]) -> None:
    if keys:
        connection.execute(delete(identity_throttle).where(identity_throttle.c.key.in_(keys)))


def prune_throttle(connection: Connection, older_than_ts: int) -> int:
    result = connection.execute(
        delete(identity_throttle).where(identity_throttle.c.last_failure_ts < older_than_ts)
    )
    return result.rowcount


# --- second factors --------------------------------------------------------------------


def totp_of(connection: Connection, kind: str, subject_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_totp).where(
        identity_totp.c.subject_kind == kind, identity_totp.c.subject_id == subject_id
    )
    return connection.execute(query).one_or_none()


def delete_totp(connection: Connection, kind: str, subject_id: uuid.UUID) -> None:
    connection.execute(
        delete(identity_totp).where(
            identity_totp.c.subject_kind == kind, identity_totp.c.subject_id == subject_id
        )
    )


def insert_totp(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_totp).values(**values))


def update_totp(connection: Connection, totp_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(identity_totp).where(identity_totp.c.id == totp_id).values(**values)
    )
    return result.rowcount


def use_totp_step(connection: Connection, totp_id: uuid.UUID, step: int) -> bool:
    """Record ``step`` as used; False when it (or a later one) was used already.

    A compare-and-set: two requests racing with the same code cannot both win.
    """
    column = identity_totp.c.last_used_step
    result = connection.execute(
        update(identity_totp)
        .where(identity_totp.c.id == totp_id, (column.is_(None)) | (column < step))
        .values(last_used_step=step)
    )
    return result.rowcount == 1


def replace_recovery_codes(
    connection: Connection, kind: str, subject_id: uuid.UUID, hashes: Sequence[bytes], now_ts: int
) -> None:
    delete_recovery_codes(connection, kind, subject_id)
    connection.execute(
        insert(identity_recovery_codes),
        [
            {
                "id": uuid7(),
                "subject_kind": kind,
                "subject_id": subject_id,
                "code_hash": code_hash,
                "created_ts": now_ts,
            }
            for code_hash in hashes
        ],
    )


def delete_recovery_codes(connection: Connection, kind: str, subject_id: uuid.UUID) -> None:
    connection.execute(
        delete(identity_recovery_codes).where(
            identity_recovery_codes.c.subject_kind == kind,
            identity_recovery_codes.c.subject_id == subject_id,
        )
    )


def use_recovery_code(
    connection: Connection, kind: str, subject_id: uuid.UUID, code_hash: bytes, now_ts: int
) -> bool:
    result = connection.execute(
        update(identity_recovery_codes)
        .where(
            identity_recovery_codes.c.subject_kind == kind,
            identity_recovery_codes.c.subject_id == subject_id,
            identity_recovery_codes.c.code_hash == code_hash,
            identity_recovery_codes.c.used_ts.is_(None),
        )
        .values(used_ts=now_ts)
    )
    return result.rowcount == 1


def passkeys_of(connection: Connection, kind: str, subject_id: uuid.UUID) -> Sequence[Row[Any]]:
    query = (
        select(identity_passkeys)
        .where(
            identity_passkeys.c.subject_kind == kind,
            identity_passkeys.c.subject_id == subject_id,
        )
        .order_by(identity_passkeys.c.created_ts)
    )
    return connection.execute(query).all()


def passkey_by_credential(connection: Connection, credential_id: bytes) -> Row[Any] | None:
    query = select(identity_passkeys).where(identity_passkeys.c.credential_id == credential_id)
    return connection.execute(query).one_or_none()


def insert_passkey(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_passkeys).values(**values))


def advance_passkey(
    connection: Connection, passkey_id: uuid.UUID, old_count: int, new_count: int, now_ts: int
) -> bool:
    """Store the new sign count unless another sign-in moved it meanwhile."""
    result = connection.execute(
        update(identity_passkeys)
        .where(identity_passkeys.c.id == passkey_id, identity_passkeys.c.sign_count == old_count)
        .values(sign_count=new_count, last_used_ts=now_ts)
    )
    return result.rowcount == 1


def delete_passkey(
    connection: Connection, kind: str, subject_id: uuid.UUID, passkey_id: uuid.UUID
) -> bool:
    result = connection.execute(
        delete(identity_passkeys).where(
            identity_passkeys.c.id == passkey_id,
            identity_passkeys.c.subject_kind == kind,
            identity_passkeys.c.subject_id == subject_id,
        )
    )
    return result.rowcount == 1


# --- devices ---------------------------------------------------------------------------


def devices_of(connection: Connection, customer_id: uuid.UUID) -> Sequence[Row[Any]]:
    query = (
        select(identity_devices)
        .where(
            identity_devices.c.customer_id == customer_id, identity_devices.c.revoked_ts.is_(None)
        )
        .order_by(identity_devices.c.created_ts)
    )
    return connection.execute(query).all()


def device_by_id(connection: Connection, device_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_devices).where(identity_devices.c.id == device_id)
    return connection.execute(query).one_or_none()


def device_by_public_key(connection: Connection, public_key: bytes) -> Row[Any] | None:
    query = select(identity_devices).where(identity_devices.c.public_key == public_key)
    return connection.execute(query).one_or_none()


def insert_device(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_devices).values(**values))


def update_device(connection: Connection, device_id: uuid.UUID, values: dict[str, Any]) -> int:
    result = connection.execute(
        update(identity_devices).where(identity_devices.c.id == device_id).values(**values)
    )
    return result.rowcount


# --- challenges ---------------------------------------------------------------------------


def insert_challenge(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_challenges).values(**values))


def challenge_by_id(connection: Connection, challenge_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_challenges).where(identity_challenges.c.id == challenge_id)
    return connection.execute(query).one_or_none()


def challenge_by_secret(connection: Connection, secret_digest: bytes) -> Row[Any] | None:
    query = select(identity_challenges).where(identity_challenges.c.secret_hash == secret_digest)
    return connection.execute(query).one_or_none()


def move_challenge(
    connection: Connection,
    challenge_id: uuid.UUID,
    from_status: str,
    values: dict[str, Any],
    now_ts: int,
) -> bool:
    """Move a live challenge out of ``from_status``; False if someone else did first
    or it expired (the single-use guarantee)."""
    result = connection.execute(
        update(identity_challenges)
        .where(
            identity_challenges.c.id == challenge_id,
            identity_challenges.c.status == from_status,
            identity_challenges.c.expires_ts > now_ts,
        )
        .values(**values)
    )
    return result.rowcount == 1


def confirmation_for_ticket(connection: Connection, ticket_id: uuid.UUID) -> Row[Any] | None:
    """The QR confirmation made for a sign-in ticket (its ``session_id`` is the ticket's id)."""
    query = select(identity_challenges).where(
        identity_challenges.c.kind == "qr_login", identity_challenges.c.session_id == ticket_id
    )
    return connection.execute(query).first()


def count_challenge_attempt(connection: Connection, challenge_id: uuid.UUID) -> None:
    connection.execute(
        update(identity_challenges)
        .where(identity_challenges.c.id == challenge_id)
        .values(attempts=identity_challenges.c.attempts + 1)
    )


def prune_challenges(connection: Connection, older_than_ts: int) -> int:
    result = connection.execute(
        delete(identity_challenges).where(identity_challenges.c.expires_ts < older_than_ts)
    )
    return result.rowcount


# --- partner keys -------------------------------------------------------------------------


def insert_partner_key(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_partner_keys).values(**values))


def partner_key(connection: Connection, key_id: str) -> Row[Any] | None:
    query = select(identity_partner_keys).where(identity_partner_keys.c.key_id == key_id)
    return connection.execute(query).one_or_none()


def list_partner_keys(connection: Connection, limit: int) -> Sequence[Row[Any]]:
    query = (
        select(identity_partner_keys)
        .order_by(identity_partner_keys.c.created_ts.desc())
        .limit(limit)
    )
    return connection.execute(query).all()


def revoke_partner_key(connection: Connection, key_id: str, now_ts: int) -> bool:
    result = connection.execute(
        update(identity_partner_keys)
        .where(
            identity_partner_keys.c.key_id == key_id, identity_partner_keys.c.revoked_ts.is_(None)
        )
        .values(revoked_ts=now_ts)
    )
    return result.rowcount == 1


def nonce_seen(connection: Connection, key_id: str, nonce: str) -> bool:
    query = select(identity_partner_nonces.c.nonce).where(
        identity_partner_nonces.c.key_id == key_id, identity_partner_nonces.c.nonce == nonce
    )
    return connection.execute(query).first() is not None


def insert_nonce(connection: Connection, key_id: str, nonce: str, expires_ts: int) -> None:
    """Raises the driver's unique violation when the nonce was used: the atomic check."""
    connection.execute(
        insert(identity_partner_nonces).values(key_id=key_id, nonce=nonce, expires_ts=expires_ts)
    )


def prune_nonces(connection: Connection, now_ts: int) -> int:
    result = connection.execute(
        delete(identity_partner_nonces).where(identity_partner_nonces.c.expires_ts < now_ts)
    )
    return result.rowcount


# --- approvals ---------------------------------------------------------------------------


def insert_approval(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(identity_approvals).values(**values))


def approval_by_id(connection: Connection, approval_id: uuid.UUID) -> Row[Any] | None:
    query = select(identity_approvals).where(identity_approvals.c.id == approval_id)
    return connection.execute(query).one_or_none()


def approval_for_update(connection: Connection, approval_id: uuid.UUID) -> Row[Any] | None:
    """The approval, its row locked until commit (``FOR UPDATE``; SQLite ignores it,
    its writer's ``BEGIN IMMEDIATE`` serialises deciders already)."""
    query = (
        select(identity_approvals).where(identity_approvals.c.id == approval_id).with_for_update()
    )
    return connection.execute(query).one_or_none()


def lock_admin_roles(connection: Connection) -> None:
    """Lock every admin role row until commit, in one order (no deadlock between two
    revocations). Under READ COMMITTED the count that follows then sees the other
    revocation's result once it has committed."""
    roles = identity_staff_roles
    query = (
        select(roles.c.staff_id)
        .where(roles.c.role == "admin")
        .order_by(roles.c.staff_id)
        .with_for_update()
    )
    connection.execute(query).all()


def list_approvals(
    connection: Connection, status: str | None, limit: int, now_us: int
) -> list[Row[Any]]:
    """Approvals newest first; a pending one past its expiry counts as ``expired``."""
    approvals = identity_approvals
    query = select(approvals).order_by(approvals.c.created_ts.desc()).limit(limit)
    live = approvals.c.expires_ts > now_us
    if status == "pending":
        query = query.where(approvals.c.status == "pending", live)
    elif status == "expired":
        query = query.where(
            or_(
                approvals.c.status == "expired",
                and_(approvals.c.status == "pending", ~live),
            )
        )
    elif status is not None:
        query = query.where(approvals.c.status == status)
    return list(connection.execute(query).all())


def decide_approval(
    connection: Connection, approval_id: uuid.UUID, values: dict[str, Any], now_ts: int
) -> bool:
    result = connection.execute(
        update(identity_approvals)
        .where(
            identity_approvals.c.id == approval_id,
            identity_approvals.c.status == "pending",
            identity_approvals.c.expires_ts > now_ts,
        )
        .values(**values)
    )
    return result.rowcount == 1

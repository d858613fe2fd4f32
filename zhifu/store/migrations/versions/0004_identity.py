"""identity: customers, staff and roles, credentials, sessions, challenges, partner keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 11:12:16

Also adds ``audit_events.role`` and two indexes for the auditors' queries (by
target, by time). The column is added in place (``ALTER TABLE ... ADD
COLUMN``), never by copying the table, which would drop its immutability
triggers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_approvals",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("maker", sa.String(length=128), nullable=False),
        sa.Column("maker_name", sa.String(length=64), nullable=False),
        sa.Column("checker", sa.String(length=128), nullable=True),
        sa.Column("checker_name", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=512), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.Column("decided_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired', 'failed')",
            name=op.f("ck_identity_approvals_status_known"),
        ),
        sa.CheckConstraint(
            "checker IS NULL OR checker <> maker", name=op.f("ck_identity_approvals_four_eyes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_approvals")),
    )
    with op.batch_alter_table("identity_approvals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_identity_approvals_status_created_ts", ["status", "created_ts"], unique=False
        )

    op.create_table(
        "identity_browsers",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject_id", Id128(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "subject_kind IN ('customer', 'staff')",
            name=op.f("ck_identity_browsers_subject_kind_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_browsers")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_browsers_token_hash")),
    )
    with op.batch_alter_table("identity_browsers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_identity_browsers_subject", ["subject_kind", "subject_id"], unique=False
        )

    op.create_table(
        "identity_challenges",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=True),
        sa.Column("subject_id", Id128(), nullable=True),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=True),
        sa.Column("binding", sa.LargeBinary(length=32), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("session_id", Id128(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("device_id", Id128(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.Column("decided_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'consumed')",
            name=op.f("ck_identity_challenges_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_challenges")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_identity_challenges_secret_hash")),
    )
    with op.batch_alter_table("identity_challenges", schema=None) as batch_op:
        batch_op.create_index("ix_identity_challenges_expires_ts", ["expires_ts"], unique=False)

    op.create_table(
        "identity_customers",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("resident_id_enc", sa.LargeBinary(), nullable=False),
        sa.Column("resident_id_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("mobile_enc", sa.LargeBinary(), nullable=False),
        sa.Column("mobile_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("email_enc", sa.LargeBinary(), nullable=False),
        sa.Column("email_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("password_changed_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'disabled')", name=op.f("ck_identity_customers_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_customers")),
        sa.UniqueConstraint("email_index", name=op.f("uq_identity_customers_email_index")),
        sa.UniqueConstraint("mobile_index", name=op.f("uq_identity_customers_mobile_index")),
        sa.UniqueConstraint(
            "resident_id_index", name=op.f("uq_identity_customers_resident_id_index")
        ),
    )
    with op.batch_alter_table("identity_customers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_customers_pii_key_id"), ["pii_key_id"], unique=False
        )

    op.create_table(
        "identity_partner_keys",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("partner_name", sa.String(length=128), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=True),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("scopes", sa.String(length=256), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("revoked_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "algorithm IN ('hmac-sha256', 'ed25519')",
            name=op.f("ck_identity_partner_keys_algorithm_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_partner_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_identity_partner_keys_key_id")),
    )
    with op.batch_alter_table("identity_partner_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_partner_keys_pii_key_id"), ["pii_key_id"], unique=False
        )

    op.create_table(
        "identity_partner_nonces",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", "nonce", name=op.f("pk_identity_partner_nonces")),
    )
    with op.batch_alter_table("identity_partner_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_identity_partner_nonces_expires_ts", ["expires_ts"], unique=False)

    op.create_table(
        "identity_passkeys",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject_id", Id128(), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(length=1023), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=1024), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("aaguid", sa.String(length=36), nullable=False),
        sa.Column("backed_up", sa.Integer(), nullable=False),
        sa.Column("transports", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_used_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "subject_kind IN ('customer', 'staff')",
            name=op.f("ck_identity_passkeys_subject_kind_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_passkeys")),
        sa.UniqueConstraint("credential_id", name=op.f("uq_identity_passkeys_credential_id")),
    )
    with op.batch_alter_table("identity_passkeys", schema=None) as batch_op:
        batch_op.create_index(
            "ix_identity_passkeys_subject", ["subject_kind", "subject_id"], unique=False
        )

    op.create_table(
        "identity_recovery_codes",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject_id", Id128(), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("used_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "subject_kind IN ('customer', 'staff')",
            name=op.f("ck_identity_recovery_codes_subject_kind_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_recovery_codes")),
        sa.UniqueConstraint(
            "subject_kind",
            "subject_id",
            "code_hash",
            name=op.f("uq_identity_recovery_codes_subject_kind_subject_id_code_hash"),
        ),
    )
    op.create_table(
        "identity_sessions",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject_id", Id128(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ts", sa.BigInteger(), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ts", sa.BigInteger(), nullable=True),
        sa.Column("revoke_reason", sa.String(length=32), nullable=True),
        sa.Column("auth_methods", sa.String(length=64), nullable=False),
        sa.Column("step_up_ts", sa.BigInteger(), nullable=True),
        sa.Column("step_up_methods", sa.String(length=64), nullable=True),
        sa.Column("browser_id", Id128(), nullable=True),
        sa.Column("device_id", Id128(), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "subject_kind IN ('customer', 'staff')",
            name=op.f("ck_identity_sessions_subject_kind_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_identity_sessions_token_hash")),
    )
    with op.batch_alter_table("identity_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_identity_sessions_subject", ["subject_kind", "subject_id"], unique=False
        )

    op.create_table(
        "identity_staff",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("password_changed_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'disabled')", name=op.f("ck_identity_staff_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_staff")),
        sa.UniqueConstraint("username", name=op.f("uq_identity_staff_username")),
    )
    with op.batch_alter_table("identity_staff", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_staff_pii_key_id"), ["pii_key_id"], unique=False
        )

    op.create_table(
        "identity_throttle",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_ts", sa.BigInteger(), nullable=False),
        sa.Column("blocked_until_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "scope IN ('account', 'source', 'pair')", name=op.f("ck_identity_throttle_scope_known")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_identity_throttle")),
    )
    with op.batch_alter_table("identity_throttle", schema=None) as batch_op:
        batch_op.create_index(
            "ix_identity_throttle_last_failure_ts", ["last_failure_ts"], unique=False
        )

    op.create_table(
        "identity_totp",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject_id", Id128(), nullable=False),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=False),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("confirmed_ts", sa.BigInteger(), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "subject_kind IN ('customer', 'staff')",
            name=op.f("ck_identity_totp_subject_kind_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_totp")),
        sa.UniqueConstraint(
            "subject_kind", "subject_id", name=op.f("uq_identity_totp_subject_kind_subject_id")
        ),
    )
    with op.batch_alter_table("identity_totp", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_totp_pii_key_id"), ["pii_key_id"], unique=False
        )

    op.create_table(
        "identity_devices",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("customer_id", Id128(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_used_ts", sa.BigInteger(), nullable=True),
        sa.Column("revoked_ts", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["identity_customers.id"],
            name=op.f("fk_identity_devices_customer_id_identity_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_devices")),
        sa.UniqueConstraint("public_key", name=op.f("uq_identity_devices_public_key")),
    )
    with op.batch_alter_table("identity_devices", schema=None) as batch_op:
        batch_op.create_index("ix_identity_devices_customer_id", ["customer_id"], unique=False)

    op.create_table(
        "identity_staff_roles",
        sa.Column("staff_id", Id128(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("granted_ts", sa.BigInteger(), nullable=False),
        sa.Column("granted_by", sa.String(length=128), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["staff_id"],
            ["identity_staff.id"],
            name=op.f("fk_identity_staff_roles_staff_id_identity_staff"),
        ),
        sa.PrimaryKeyConstraint("staff_id", "role", name=op.f("pk_identity_staff_roles")),
    )
    op.add_column("audit_events", sa.Column("role", sa.String(length=32), nullable=True))
    op.create_index("ix_audit_events_target_seq", "audit_events", ["target", "seq"])
    op.create_index("ix_audit_events_ts", "audit_events", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_ts", table_name="audit_events")
    op.drop_index("ix_audit_events_target_seq", table_name="audit_events")
    op.execute("ALTER TABLE audit_events DROP COLUMN role")

    op.drop_table("identity_staff_roles")
    with op.batch_alter_table("identity_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_devices_customer_id")

    op.drop_table("identity_devices")
    with op.batch_alter_table("identity_totp", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_totp_pii_key_id"))

    op.drop_table("identity_totp")
    with op.batch_alter_table("identity_throttle", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_throttle_last_failure_ts")

    op.drop_table("identity_throttle")
    with op.batch_alter_table("identity_staff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_staff_pii_key_id"))

    op.drop_table("identity_staff")
    with op.batch_alter_table("identity_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_sessions_subject")

    op.drop_table("identity_sessions")
    op.drop_table("identity_recovery_codes")
    with op.batch_alter_table("identity_passkeys", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_passkeys_subject")

    op.drop_table("identity_passkeys")
    with op.batch_alter_table("identity_partner_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_partner_nonces_expires_ts")

    op.drop_table("identity_partner_nonces")
    with op.batch_alter_table("identity_partner_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_partner_keys_pii_key_id"))

    op.drop_table("identity_partner_keys")
    with op.batch_alter_table("identity_customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_customers_pii_key_id"))

    op.drop_table("identity_customers")
    with op.batch_alter_table("identity_challenges", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_challenges_expires_ts")

    op.drop_table("identity_challenges")
    with op.batch_alter_table("identity_browsers", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_browsers_subject")

    op.drop_table("identity_browsers")
    with op.batch_alter_table("identity_approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_identity_approvals_status_created_ts")

    op.drop_table("identity_approvals")

"""merchants: merchants, their QR codes, payment codes, idempotency keys, the code throttle

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 13:55:07

``merchants_merchants`` holds the merchants customers onboarded (``zhifu.merchants``):
their EMVCo name, city and category, the settlement account, and the partner
key of their point of sale once staff approved them. ``merchants_qr_codes``
holds every QR code issued to a merchant with its exact payload (a dynamic
code also its amount, expiry, and the order that used it up).
``merchants_payment_codes`` holds customers' one-time payment codes as a
keyed blind index only, never the digits. ``merchants_idempotency``
remembers the Idempotency-Keys of the requests that made these records, and
``merchants_code_failures`` counts unusable payment codes per partner key and
minute (the guessing throttle).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchants_code_failures",
        sa.Column("partner_key_id", sa.String(length=64), nullable=False),
        sa.Column("window_start_s", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "failures > 0", name=op.f("ck_merchants_code_failures_failures_positive")
        ),
        sa.PrimaryKeyConstraint(
            "partner_key_id", "window_start_s", name=op.f("pk_merchants_code_failures")
        ),
    )
    op.create_table(
        "merchants_idempotency",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("resource_id", Id128(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "resource IN ('merchant', 'qr_code', 'payment_code')",
            name=op.f("ck_merchants_idempotency_resource_known"),
        ),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_merchants_idempotency")),
    )
    with op.batch_alter_table("merchants_idempotency", schema=None) as batch_op:
        batch_op.create_index("ix_merchants_idempotency_created_ts", ["created_ts"], unique=False)

    op.create_table(
        "merchants_merchants",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("owner_customer_id", Id128(), nullable=False),
        sa.Column("name", sa.String(length=25), nullable=False),
        sa.Column("alternate_name", sa.String(length=25), nullable=True),
        sa.Column("city", sa.String(length=15), nullable=False),
        sa.Column("alternate_city", sa.String(length=15), nullable=True),
        sa.Column("mcc", sa.String(length=4), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("settlement_account_id", Id128(), nullable=False),
        sa.Column("partner_key_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("approved_ts", sa.BigInteger(), nullable=True),
        sa.Column("approved_by", sa.String(length=80), nullable=True),
        sa.CheckConstraint(
            "(status = 'active') = (partner_key_id IS NOT NULL AND approved_ts IS NOT NULL)",
            name=op.f("ck_merchants_merchants_active_iff_approved"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'active')", name=op.f("ck_merchants_merchants_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["owner_customer_id"],
            ["identity_customers.id"],
            name=op.f("fk_merchants_merchants_owner_customer_id_identity_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_key_id"],
            ["identity_partner_keys.key_id"],
            name=op.f("fk_merchants_merchants_partner_key_id_identity_partner_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["settlement_account_id"],
            ["accounts_accounts.id"],
            name=op.f("fk_merchants_merchants_settlement_account_id_accounts_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants_merchants")),
    )
    with op.batch_alter_table("merchants_merchants", schema=None) as batch_op:
        batch_op.create_index(
            "ix_merchants_merchants_owner_customer_id_id", ["owner_customer_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_merchants_merchants_partner_key_id", ["partner_key_id"], unique=False
        )
        batch_op.create_index("ix_merchants_merchants_status_id", ["status", "id"], unique=False)

    op.create_table(
        "merchants_payment_codes",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("code_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("customer_id", Id128(), nullable=False),
        sa.Column("account_id", Id128(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_cap_minor", sa.BigInteger(), nullable=False),
        sa.Column("step_up", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=False),
        sa.Column("used_order_id", Id128(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(status = 'used') = (used_order_id IS NOT NULL)",
            name=op.f("ck_merchants_payment_codes_used_iff_order"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'used')", name=op.f("ck_merchants_payment_codes_status_known")
        ),
        sa.CheckConstraint(
            "amount_cap_minor > 0", name=op.f("ck_merchants_payment_codes_cap_positive")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts_accounts.id"],
            name=op.f("fk_merchants_payment_codes_account_id_accounts_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["identity_customers.id"],
            name=op.f("fk_merchants_payment_codes_customer_id_identity_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["used_order_id"],
            ["payments_orders.id"],
            name=op.f("fk_merchants_payment_codes_used_order_id_payments_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants_payment_codes")),
        sa.UniqueConstraint("code_index", name=op.f("uq_merchants_payment_codes_code_index")),
    )
    with op.batch_alter_table("merchants_payment_codes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_merchants_payment_codes_customer_id_status_expires_ts",
            ["customer_id", "status", "expires_ts"],
            unique=False,
        )
        batch_op.create_index("ix_merchants_payment_codes_expires_ts", ["expires_ts"], unique=False)

    op.create_table(
        "merchants_qr_codes",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("merchant_id", Id128(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("payload", sa.String(length=512), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("order_ref", sa.String(length=25), nullable=True),
        sa.Column("terminal_label", sa.String(length=25), nullable=True),
        sa.Column("expires_ts", sa.BigInteger(), nullable=True),
        sa.Column("used_order_id", Id128(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.CheckConstraint(
            "(kind = 'dynamic') = (amount_minor IS NOT NULL AND expires_ts IS NOT NULL)",
            name=op.f("ck_merchants_qr_codes_dynamic_iff_amount_and_expiry"),
        ),
        sa.CheckConstraint(
            "(status = 'used') = (used_order_id IS NOT NULL)",
            name=op.f("ck_merchants_qr_codes_used_iff_order"),
        ),
        sa.CheckConstraint(
            "kind = 'dynamic' OR status = 'active'",
            name=op.f("ck_merchants_qr_codes_static_never_used"),
        ),
        sa.CheckConstraint(
            "kind IN ('static', 'dynamic')", name=op.f("ck_merchants_qr_codes_kind_known")
        ),
        sa.CheckConstraint(
            "status IN ('active', 'used')", name=op.f("ck_merchants_qr_codes_status_known")
        ),
        sa.CheckConstraint(
            "amount_minor IS NULL OR amount_minor > 0",
            name=op.f("ck_merchants_qr_codes_amount_positive"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants_merchants.id"],
            name=op.f("fk_merchants_qr_codes_merchant_id_merchants_merchants"),
        ),
        sa.ForeignKeyConstraint(
            ["used_order_id"],
            ["payments_orders.id"],
            name=op.f("fk_merchants_qr_codes_used_order_id_payments_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants_qr_codes")),
    )
    with op.batch_alter_table("merchants_qr_codes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_merchants_qr_codes_merchant_id_kind_status_expires_ts",
            ["merchant_id", "kind", "status", "expires_ts"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("merchants_qr_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_merchants_qr_codes_merchant_id_kind_status_expires_ts")

    op.drop_table("merchants_qr_codes")
    with op.batch_alter_table("merchants_payment_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_merchants_payment_codes_expires_ts")
        batch_op.drop_index("ix_merchants_payment_codes_customer_id_status_expires_ts")

    op.drop_table("merchants_payment_codes")
    with op.batch_alter_table("merchants_merchants", schema=None) as batch_op:
        batch_op.drop_index("ix_merchants_merchants_status_id")
        batch_op.drop_index("ix_merchants_merchants_partner_key_id")
        batch_op.drop_index("ix_merchants_merchants_owner_customer_id_id")

    op.drop_table("merchants_merchants")
    with op.batch_alter_table("merchants_idempotency", schema=None) as batch_op:
        batch_op.drop_index("ix_merchants_idempotency_created_ts")

    op.drop_table("merchants_idempotency")
    op.drop_table("merchants_code_failures")

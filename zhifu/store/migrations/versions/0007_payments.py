"""payments: orders, their transitions, idempotency keys, spending totals, customer limits

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 13:40:06

``payments_orders`` holds one row per payment order (``zhifu.payments``) and
``payments_transitions`` its append-only history; the orders' ``(account or
customer, created_ts, id)`` indexes serve transaction histories, newest first
(``zhifu.payments.history``). ``payments_idempotency``
remembers each caller's Idempotency-Keys with the fingerprint of the request.
``payments_spending`` keeps per-account running totals by direction and
Shanghai day or year for the PBOC limits, and ``accounts_customer_limits`` the
lower limits a customer chose per account and channel.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments_orders",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("initiator", sa.String(length=80), nullable=False),
        sa.Column("payer_customer_id", Id128(), nullable=True),
        sa.Column("payee_customer_id", Id128(), nullable=True),
        sa.Column("merchant_id", Id128(), nullable=True),
        sa.Column("debit_account_id", Id128(), nullable=False),
        sa.Column("credit_account_id", Id128(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("refund_of", Id128(), nullable=True),
        sa.Column("payer_label", sa.String(length=64), nullable=False),
        sa.Column("payee_label", sa.String(length=64), nullable=False),
        sa.Column("memo", sa.String(length=140), nullable=False),
        sa.Column("external_ref", sa.String(length=64), nullable=True),
        sa.Column("risk_decision", sa.String(length=16), nullable=False),
        sa.Column("risk_reason", sa.String(length=256), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("hold_transfer_id", Id128(), nullable=True),
        sa.Column("settle_transfer_id", Id128(), nullable=True),
        sa.Column("failure_code", sa.String(length=48), nullable=True),
        sa.Column("failure_detail", sa.String(length=256), nullable=True),
        sa.Column("source_ref", sa.String(length=80), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'refund') = (refund_of IS NOT NULL)",
            name=op.f("ck_payments_orders_refund_of_iff_refund"),
        ),
        sa.CheckConstraint(
            "state IN ('created', 'risk_checked', 'challenged', 'authorized', 'funds_held',"
            " 'submitted', 'settled', 'failed', 'returned', 'rejected', 'cancelled')",
            name=op.f("ck_payments_orders_state_known"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payments_orders_amount_positive")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_payments_orders_accounts_differ")
        ),
        sa.CheckConstraint(
            "refunded_minor >= 0 AND refunded_minor <= amount_minor",
            name=op.f("ck_payments_orders_refunded_within_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["refund_of"],
            ["payments_orders.id"],
            name=op.f("fk_payments_orders_refund_of_payments_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_orders")),
    )
    with op.batch_alter_table("payments_orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payments_orders_credit_account_id_id", ["credit_account_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_orders_debit_account_id_id", ["debit_account_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_orders_merchant_id_id", ["merchant_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_orders_payee_customer_id_id", ["payee_customer_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_orders_payer_customer_id_id", ["payer_customer_id", "id"], unique=False
        )
        batch_op.create_index("ix_payments_orders_refund_of", ["refund_of"], unique=False)
        batch_op.create_index(
            "ix_payments_orders_state_updated_ts", ["state", "updated_ts"], unique=False
        )
        batch_op.create_index(
            "ix_payments_orders_debit_account_id_created_ts",
            ["debit_account_id", "created_ts", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_payments_orders_credit_account_id_created_ts",
            ["credit_account_id", "created_ts", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_payments_orders_payer_customer_id_created_ts",
            ["payer_customer_id", "created_ts", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_payments_orders_payee_customer_id_created_ts",
            ["payee_customer_id", "created_ts", "id"],
            unique=False,
        )

    op.create_table(
        "payments_idempotency",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("order_id", Id128(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["payments_orders.id"],
            name=op.f("fk_payments_idempotency_order_id_payments_orders"),
        ),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_payments_idempotency")),
    )
    with op.batch_alter_table("payments_idempotency", schema=None) as batch_op:
        batch_op.create_index("ix_payments_idempotency_created_ts", ["created_ts"], unique=False)

    op.create_table(
        "payments_transitions",
        sa.Column("order_id", Id128(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.CheckConstraint(
            "(seq = 0) = (from_state IS NULL)",
            name=op.f("ck_payments_transitions_first_has_no_from_state"),
        ),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_payments_transitions_seq_non_negative")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["payments_orders.id"],
            name=op.f("fk_payments_transitions_order_id_payments_orders"),
        ),
        sa.PrimaryKeyConstraint("order_id", "seq", name=op.f("pk_payments_transitions")),
    )
    op.create_table(
        "accounts_customer_limits",
        sa.Column("account_id", Id128(), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("per_payment_minor", sa.BigInteger(), nullable=True),
        sa.Column("daily_minor", sa.BigInteger(), nullable=True),
        sa.Column("yearly_minor", sa.BigInteger(), nullable=True),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "channel IN ('counter', 'online', 'mobile', 'qr', 'card')",
            name=op.f("ck_accounts_customer_limits_channel_known"),
        ),
        sa.CheckConstraint(
            "(per_payment_minor IS NULL OR per_payment_minor >= 0)"
            " AND (daily_minor IS NULL OR daily_minor >= 0)"
            " AND (yearly_minor IS NULL OR yearly_minor >= 0)",
            name=op.f("ck_accounts_customer_limits_limits_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts_accounts.id"],
            name=op.f("fk_accounts_customer_limits_account_id_accounts_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", "channel", name=op.f("pk_accounts_customer_limits")),
    )
    op.create_table(
        "payments_spending",
        sa.Column("account_id", Id128(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('outgoing', 'incoming')",
            name=op.f("ck_payments_spending_direction_known"),
        ),
        sa.CheckConstraint(
            "total_minor >= 0", name=op.f("ck_payments_spending_total_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts_accounts.id"],
            name=op.f("fk_payments_spending_account_id_accounts_accounts"),
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "direction", "period", name=op.f("pk_payments_spending")
        ),
    )


def downgrade() -> None:
    op.drop_table("payments_spending")
    op.drop_table("accounts_customer_limits")
    op.drop_table("payments_transitions")
    with op.batch_alter_table("payments_idempotency", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_idempotency_created_ts")

    op.drop_table("payments_idempotency")
    with op.batch_alter_table("payments_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_orders_payee_customer_id_created_ts")
        batch_op.drop_index("ix_payments_orders_payer_customer_id_created_ts")
        batch_op.drop_index("ix_payments_orders_credit_account_id_created_ts")
        batch_op.drop_index("ix_payments_orders_debit_account_id_created_ts")
        batch_op.drop_index("ix_payments_orders_state_updated_ts")
        batch_op.drop_index("ix_payments_orders_refund_of")
        batch_op.drop_index("ix_payments_orders_payer_customer_id_id")
        batch_op.drop_index("ix_payments_orders_payee_customer_id_id")
        batch_op.drop_index("ix_payments_orders_merchant_id_id")
        batch_op.drop_index("ix_payments_orders_debit_account_id_id")
        batch_op.drop_index("ix_payments_orders_credit_account_id_id")

    op.drop_table("payments_orders")

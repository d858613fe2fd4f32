"""payees and schedules: a customer's payee book, scheduled and recurring transfers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 13:52:40

``payments_payees`` is a customer's payee book: the payee's account number and
name as envelope tokens, a blind index (unique per customer) that refuses the
same account twice, and room for other banks' payees (``scheme``,
``bank_code``, ``bic``, ``bank_name``). ``payments_schedules`` holds scheduled
and recurring transfers with their next run and the lease a scheduler claims
it with; ``payments_schedule_runs`` one row per run's outcome (paid with its
order, failed with the reason, or skipped).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments_payees",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("customer_id", Id128(), nullable=False),
        sa.Column("nickname", sa.String(length=32), nullable=False),
        sa.Column("scheme", sa.String(length=16), nullable=False),
        sa.Column("bank_code", sa.String(length=12), nullable=True),
        sa.Column("bic", sa.String(length=11), nullable=True),
        sa.Column("bank_name", sa.String(length=128), nullable=True),
        sa.Column("account_number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("account_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("account_last4", sa.String(length=4), nullable=False),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "scheme IN ('intra_bank')", name=op.f("ck_payments_payees_scheme_known")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["identity_customers.id"],
            name=op.f("fk_payments_payees_customer_id_identity_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_payees")),
        sa.UniqueConstraint(
            "customer_id",
            "account_index",
            name=op.f("uq_payments_payees_customer_id_account_index"),
        ),
    )
    with op.batch_alter_table("payments_payees", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_payees_pii_key_id"), ["pii_key_id"], unique=False
        )

    op.create_table(
        "payments_schedules",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("customer_id", Id128(), nullable=False),
        sa.Column("from_account_id", Id128(), nullable=False),
        sa.Column("payee_id", Id128(), nullable=True),
        sa.Column("payee_label", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("memo", sa.String(length=140), nullable=False),
        sa.Column("frequency", sa.String(length=8), nullable=False),
        sa.Column("first_ts", sa.BigInteger(), nullable=False),
        sa.Column("end_date", sa.String(length=10), nullable=True),
        sa.Column("count_max", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=9), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("next_ts", sa.BigInteger(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("step_up", sa.String(length=16), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("lease_owner", Id128(), nullable=True),
        sa.Column("lease_until_ts", sa.BigInteger(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(status = 'active') = (next_ts IS NOT NULL)",
            name=op.f("ck_payments_schedules_next_ts_iff_active"),
        ),
        sa.CheckConstraint(
            "frequency IN ('once', 'daily', 'weekly', 'monthly')",
            name=op.f("ck_payments_schedules_frequency_known"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'cancelled', 'finished')",
            name=op.f("ck_payments_schedules_status_known"),
        ),
        sa.CheckConstraint(
            "(lease_owner IS NULL) = (lease_until_ts IS NULL)",
            name=op.f("ck_payments_schedules_lease_complete"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payments_schedules_amount_positive")),
        sa.CheckConstraint(
            "count_max IS NULL OR count_max >= 1",
            name=op.f("ck_payments_schedules_count_max_positive"),
        ),
        sa.CheckConstraint(
            "failures >= 0", name=op.f("ck_payments_schedules_failures_non_negative")
        ),
        sa.CheckConstraint("next_seq >= 1", name=op.f("ck_payments_schedules_next_seq_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["identity_customers.id"],
            name=op.f("fk_payments_schedules_customer_id_identity_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["from_account_id"],
            ["accounts_accounts.id"],
            name=op.f("fk_payments_schedules_from_account_id_accounts_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["payee_id"],
            ["payments_payees.id"],
            name=op.f("fk_payments_schedules_payee_id_payments_payees"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_schedules")),
        sa.UniqueConstraint(
            "customer_id",
            "idempotency_key",
            name=op.f("uq_payments_schedules_customer_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("payments_schedules", schema=None) as batch_op:
        batch_op.create_index("ix_payments_schedules_payee_id", ["payee_id"], unique=False)
        batch_op.create_index(
            "ix_payments_schedules_status_next_ts", ["status", "next_ts"], unique=False
        )

    op.create_table(
        "payments_schedule_runs",
        sa.Column("schedule_id", Id128(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("due_ts", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("order_id", Id128(), nullable=True),
        sa.Column("failure_code", sa.String(length=48), nullable=True),
        sa.Column("failure_detail", sa.String(length=256), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(outcome = 'paid') = (order_id IS NOT NULL)",
            name=op.f("ck_payments_schedule_runs_order_iff_paid"),
        ),
        sa.CheckConstraint(
            "outcome IN ('paid', 'failed', 'skipped')",
            name=op.f("ck_payments_schedule_runs_outcome_known"),
        ),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_payments_schedule_runs_seq_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["payments_orders.id"],
            name=op.f("fk_payments_schedule_runs_order_id_payments_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["payments_schedules.id"],
            name=op.f("fk_payments_schedule_runs_schedule_id_payments_schedules"),
        ),
        sa.PrimaryKeyConstraint("schedule_id", "seq", name=op.f("pk_payments_schedule_runs")),
    )


def downgrade() -> None:
    op.drop_table("payments_schedule_runs")
    with op.batch_alter_table("payments_schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_schedules_status_next_ts")
        batch_op.drop_index("ix_payments_schedules_payee_id")

    op.drop_table("payments_schedules")
    with op.batch_alter_table("payments_payees", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_payees_pii_key_id"))

    op.drop_table("payments_payees")

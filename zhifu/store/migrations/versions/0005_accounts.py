"""accounts: customers' bank accounts and their debit cards

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

``accounts_accounts`` shares its ids with the ledger accounts that hold the
money; ``accounts_cards`` keeps card numbers as envelope tokens with a blind
index. One default account per customer and currency is a partial unique
index (``WHERE is_default``), which SQLite and PostgreSQL both support.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts_accounts",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("customer_id", Id128(), nullable=False),
        sa.Column("number", sa.String(length=19), nullable=False),
        sa.Column("product", sa.String(length=16), nullable=False),
        sa.Column("account_class", sa.String(length=3), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("nickname", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.Column("closed_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'frozen', 'closed')",
            name=op.f("ck_accounts_accounts_status_known"),
        ),
        sa.CheckConstraint(
            "account_class IN ('I', 'II', 'III')",
            name=op.f("ck_accounts_accounts_account_class_known"),
        ),
        sa.CheckConstraint("length(number) = 19", name=op.f("ck_accounts_accounts_number_length")),
        sa.CheckConstraint(
            "(status = 'closed') = (closed_ts IS NOT NULL)",
            name=op.f("ck_accounts_accounts_closed_ts_iff_closed"),
        ),
        sa.CheckConstraint(
            "status <> 'closed' OR NOT is_default",
            name=op.f("ck_accounts_accounts_closed_is_not_default"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["identity_customers.id"],
            name=op.f("fk_accounts_accounts_customer_id_identity_customers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts_accounts")),
        sa.UniqueConstraint("number", name=op.f("uq_accounts_accounts_number")),
    )
    with op.batch_alter_table("accounts_accounts", schema=None) as batch_op:
        batch_op.create_index("ix_accounts_accounts_customer_id", ["customer_id"], unique=False)
        batch_op.create_index(
            "uq_accounts_accounts_default",
            ["customer_id", "currency"],
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )

    op.create_table(
        "accounts_cards",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("account_id", Id128(), nullable=False),
        sa.Column("token", sa.String(length=19), nullable=False),
        sa.Column("pan_enc", sa.LargeBinary(), nullable=False),
        sa.Column("pan_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("expiry_year", sa.Integer(), nullable=False),
        sa.Column("expiry_month", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("replaced_by", Id128(), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("updated_ts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'frozen', 'lost', 'closed')",
            name=op.f("ck_accounts_cards_status_known"),
        ),
        sa.CheckConstraint(
            "expiry_month BETWEEN 1 AND 12", name=op.f("ck_accounts_cards_expiry_month_range")
        ),
        sa.CheckConstraint(
            "replaced_by IS NULL OR status = 'lost'",
            name=op.f("ck_accounts_cards_only_lost_is_replaced"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts_accounts.id"],
            name=op.f("fk_accounts_cards_account_id_accounts_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by"],
            ["accounts_cards.id"],
            name=op.f("fk_accounts_cards_replaced_by_accounts_cards"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts_cards")),
        sa.UniqueConstraint("pan_index", name=op.f("uq_accounts_cards_pan_index")),
        sa.UniqueConstraint("token", name=op.f("uq_accounts_cards_token")),
    )
    with op.batch_alter_table("accounts_cards", schema=None) as batch_op:
        batch_op.create_index("ix_accounts_cards_account_id", ["account_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_accounts_cards_pii_key_id"), ["pii_key_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts_cards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_cards_pii_key_id"))
        batch_op.drop_index("ix_accounts_cards_account_id")

    op.drop_table("accounts_cards")
    with op.batch_alter_table("accounts_accounts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_accounts_accounts_default",
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        )
        batch_op.drop_index("ix_accounts_accounts_customer_id")

    op.drop_table("accounts_accounts")

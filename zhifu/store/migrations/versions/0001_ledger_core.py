"""ledger core

Revision ID: 0001
Revises:
Create Date: 2026-11-25 09:16:08.789998
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_accounts",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("owner_ref", sa.String(length=128), nullable=True),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("last_transfer_ts", sa.BigInteger(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("closed_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(flags & 1) = 0 OR debits_pending + debits_posted <= credits_posted",
            name=op.f("ck_ledger_accounts_debits_must_not_exceed_credits"),
        ),
        sa.CheckConstraint(
            "(flags & 2) = 0 OR credits_pending + credits_posted <= debits_posted",
            name=op.f("ck_ledger_accounts_credits_must_not_exceed_debits"),
        ),
        sa.CheckConstraint(
            "code > 0 AND code <= 65535", name=op.f("ck_ledger_accounts_code_range")
        ),
        sa.CheckConstraint(
            "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0"
            " AND credits_posted >= 0",
            name=op.f("ck_ledger_accounts_counters_non_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
    )
    op.create_table(
        "ledger_batches",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("committed_ts", sa.BigInteger(), nullable=False),
        sa.Column("transfer_count", sa.Integer(), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_batches")),
    )
    op.create_table(
        "ledger_rejections",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("result", sa.String(length=48), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(length=32), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_rejections")),
    )
    op.create_table(
        "ledger_account_history",
        sa.Column("account_id", Id128(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("transfer_id", Id128(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_account_history_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("account_id", "ts", name=op.f("pk_ledger_account_history")),
    )
    op.create_table(
        "ledger_blocks",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch_id", Id128(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("merkle_root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("transfer_count", sa.Integer(), nullable=False),
        sa.Column("committed_ts", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("sealed_ts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["ledger_batches.id"],
            name=op.f("fk_ledger_blocks_batch_id_ledger_batches"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_blocks")),
        sa.UniqueConstraint("batch_id", name=op.f("uq_ledger_blocks_batch_id")),
        sa.UniqueConstraint("block_hash", name=op.f("uq_ledger_blocks_block_hash")),
    )
    op.create_table(
        "ledger_transfers",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("debit_account_id", Id128(), nullable=False),
        sa.Column("credit_account_id", Id128(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("pending_id", Id128(), nullable=True),
        sa.Column("reversal_of", Id128(), nullable=True),
        sa.Column("external_ref", sa.String(length=64), nullable=True),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("expires_ts", sa.BigInteger(), nullable=True),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", Id128(), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transfers_amount_positive")),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id",
            name=op.f("ck_ledger_transfers_accounts_different"),
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_credit_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_transfers_debit_account_id_ledger_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transfers")),
        sa.UniqueConstraint("batch_id", "batch_index", name="uq_ledger_transfers_batch_position"),
    )
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_transfers_credit_ts", ["credit_account_id", "ts"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_transfers_debit_ts", ["debit_account_id", "ts"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_transfers_expires_ts",
            ["expires_ts"],
            unique=False,
            sqlite_where=sa.text("expires_ts IS NOT NULL"),
            postgresql_where=sa.text("expires_ts IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_ledger_transfers_reversal_of",
            ["reversal_of"],
            unique=False,
            sqlite_where=sa.text("reversal_of IS NOT NULL"),
            postgresql_where=sa.text("reversal_of IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_ledger_transfers_pending_id",
            ["pending_id"],
            unique=True,
            sqlite_where=sa.text("pending_id IS NOT NULL"),
            postgresql_where=sa.text("pending_id IS NOT NULL"),
        )

    op.create_table(
        "ledger_unsealed_batches",
        sa.Column("batch_id", Id128(), nullable=False),
        sa.Column("committed_ts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["ledger_batches.id"],
            name=op.f("fk_ledger_unsealed_batches_batch_id_ledger_batches"),
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_ledger_unsealed_batches")),
    )

    _create_immutability_triggers()


# Ledger rows are never updated or deleted: the database refuses it too.
IMMUTABLE_TABLES = (
    "ledger_transfers",
    "ledger_rejections",
    "ledger_account_history",
    "ledger_batches",
    "ledger_blocks",
)


def _create_immutability_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION zhifu_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME"
            " USING ERRCODE = 'restrict_violation'; END $$"
        )
        for table in IMMUTABLE_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION zhifu_refuse_change()"
            )
        return
    for table in IMMUTABLE_TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END"
            )


def _drop_immutability_triggers() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in IMMUTABLE_TABLES:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS zhifu_refuse_change()")


def downgrade() -> None:
    _drop_immutability_triggers()
    op.drop_table("ledger_unsealed_batches")
    with op.batch_alter_table("ledger_transfers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ledger_transfers_pending_id",
            sqlite_where=sa.text("pending_id IS NOT NULL"),
            postgresql_where=sa.text("pending_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_ledger_transfers_reversal_of",
            sqlite_where=sa.text("reversal_of IS NOT NULL"),
            postgresql_where=sa.text("reversal_of IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_ledger_transfers_expires_ts",
            sqlite_where=sa.text("expires_ts IS NOT NULL"),
            postgresql_where=sa.text("expires_ts IS NOT NULL"),
        )
        batch_op.drop_index("ix_ledger_transfers_debit_ts")
        batch_op.drop_index("ix_ledger_transfers_credit_ts")

    op.drop_table("ledger_transfers")
    op.drop_table("ledger_blocks")
    op.drop_table("ledger_account_history")
    op.drop_table("ledger_rejections")
    op.drop_table("ledger_batches")
    op.drop_table("ledger_accounts")

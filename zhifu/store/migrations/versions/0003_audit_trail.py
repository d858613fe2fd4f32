"""audit trail: hash-chained security events, their head and signed checkpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00

Triggers (see zhifu.ops.audit):

- PostgreSQL: ``audit_events_immutable`` and ``audit_checkpoints_immutable``
  (BEFORE UPDATE OR DELETE, the function ``zhifu_refuse_change()`` of 0001),
  ``audit_events_no_truncate`` and ``audit_checkpoints_no_truncate`` (BEFORE
  TRUNCATE), and ``audit_head_forward_only`` (function
  ``zhifu_audit_head_forward()``).
- SQLite: ``audit_events_no_update``, ``audit_events_no_delete``,
  ``audit_checkpoints_no_update``, ``audit_checkpoints_no_delete``,
  ``audit_head_forward_only`` and ``audit_head_no_delete``.

The head may only move forward by exactly one event per update, and its row
may not be deleted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Rows never updated or deleted, like the ledger's (0001).
IMMUTABLE_TABLES = ("audit_events", "audit_checkpoints")
HEAD_RULE = "audit_head only moves forward one event at a time and is never deleted"


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", Id128(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_audit_events_seq_positive")),
        sa.CheckConstraint(
            "outcome IN ('ok', 'denied', 'failed')", name=op.f("ck_audit_events_outcome_known")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_events_id")),
    )
    op.create_index("ix_audit_events_action_seq", "audit_events", ["action", "seq"])
    op.create_index("ix_audit_events_actor_seq", "audit_events", ["actor", "seq"])

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_audit_head_seq_non_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": bytes(32)}])

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )

    _create_triggers()


def _create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in IMMUTABLE_TABLES:
            # zhifu_refuse_change() comes with 0001.
            op.execute(
                f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION zhifu_refuse_change()"
            )
            # TRUNCATE skips row triggers: refuse it as a statement.
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION zhifu_refuse_change()"
            )
        op.execute(
            "CREATE FUNCTION zhifu_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.seq <> OLD.seq + 1 THEN"
            f" RAISE EXCEPTION '{HEAD_RULE}' USING ERRCODE = 'restrict_violation';"
            " END IF; RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head"
            " FOR EACH ROW EXECUTE FUNCTION zhifu_audit_head_forward()"
        )
        return
    for table in IMMUTABLE_TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}"
                f" BEGIN SELECT RAISE(ABORT, '{table} rows are immutable'); END"
            )
    op.execute(
        "CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head"
        " WHEN NEW.id <> OLD.id OR NEW.seq <> OLD.seq + 1"
        f" BEGIN SELECT RAISE(ABORT, '{HEAD_RULE}'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head"
        f" BEGIN SELECT RAISE(ABORT, '{HEAD_RULE}'); END"
    )


def _drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in IMMUTABLE_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP TRIGGER IF EXISTS audit_head_forward_only ON audit_head")
        op.execute("DROP FUNCTION IF EXISTS zhifu_audit_head_forward()")
        return
    for table in IMMUTABLE_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
    op.execute("DROP TRIGGER IF EXISTS audit_head_forward_only")
    op.execute("DROP TRIGGER IF EXISTS audit_head_no_delete")


def downgrade() -> None:
    _drop_triggers()
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_events_actor_seq", table_name="audit_events")
    op.drop_index("ix_audit_events_action_seq", table_name="audit_events")
    op.drop_table("audit_events")

"""webhooks: the transactional outbox, subscriptions, events, deliveries and their attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00

``ops_outbox`` is the platform's transactional outbox (``zhifu.ops.outbox``):
a message is written in the transaction of the change it announces and sent
after that commits. The ``webhooks_*`` tables belong to ``zhifu.webhooks``:
subscriptions of partner keys (signing secrets as envelope tokens), the events
published to them, one delivery per event and subscription, and the delivery
log (one row per attempt). Pending deliveries of a subscription are counted
through a partial index (``WHERE status = 'pending'``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhifu.store.types import Id128

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ops_outbox",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_ts", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", Id128(), nullable=True),
        sa.Column("lease_until_ts", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=256), nullable=True),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("done_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'dead')", name=op.f("ck_ops_outbox_status_known")
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_ops_outbox_attempts_non_negative")),
        sa.CheckConstraint(
            "(lease_owner IS NULL) = (lease_until_ts IS NULL)",
            name=op.f("ck_ops_outbox_lease_complete"),
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (done_ts IS NULL)",
            name=op.f("ck_ops_outbox_done_ts_iff_finished"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_outbox")),
    )
    with op.batch_alter_table("ops_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ops_outbox_status_available_ts", ["status", "available_ts"], unique=False
        )

    op.create_table(
        "webhooks_subscriptions",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("partner_key_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=False),
        sa.Column("pii_key_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("deleted_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'deleted')", name=op.f("ck_webhooks_subscriptions_status_known")
        ),
        sa.CheckConstraint(
            "(status = 'deleted') = (deleted_ts IS NOT NULL)",
            name=op.f("ck_webhooks_subscriptions_deleted_ts_iff_deleted"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_key_id"],
            ["identity_partner_keys.key_id"],
            name=op.f("fk_webhooks_subscriptions_partner_key_id_identity_partner_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks_subscriptions")),
    )
    with op.batch_alter_table("webhooks_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhooks_subscriptions_partner_key_id_status",
            ["partner_key_id", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_webhooks_subscriptions_pii_key_id"), ["pii_key_id"], unique=False
        )

    op.create_table(
        "webhooks_events",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("partner_key_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_key_id"],
            ["identity_partner_keys.key_id"],
            name=op.f("fk_webhooks_events_partner_key_id_identity_partner_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks_events")),
    )

    op.create_table(
        "webhooks_deliveries",
        sa.Column("id", Id128(), nullable=False),
        sa.Column("event_id", Id128(), nullable=False),
        sa.Column("subscription_id", Id128(), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("replay_of", Id128(), nullable=True),
        sa.Column("status", sa.String(length=9), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_attempt_ts", sa.BigInteger(), nullable=True),
        sa.Column("completed_ts", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_webhooks_deliveries_status_known"),
        ),
        sa.CheckConstraint(
            "origin IN ('event', 'replay', 'test')",
            name=op.f("ck_webhooks_deliveries_origin_known"),
        ),
        sa.CheckConstraint(
            "(origin = 'replay') = (replay_of IS NOT NULL)",
            name=op.f("ck_webhooks_deliveries_replay_of_iff_replay"),
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (completed_ts IS NULL)",
            name=op.f("ck_webhooks_deliveries_completed_ts_iff_completed"),
        ),
        sa.CheckConstraint(
            "attempts >= 0", name=op.f("ck_webhooks_deliveries_attempts_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhooks_events.id"],
            name=op.f("fk_webhooks_deliveries_event_id_webhooks_events"),
        ),
        sa.ForeignKeyConstraint(
            ["replay_of"],
            ["webhooks_deliveries.id"],
            name=op.f("fk_webhooks_deliveries_replay_of_webhooks_deliveries"),
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhooks_subscriptions.id"],
            name=op.f("fk_webhooks_deliveries_subscription_id_webhooks_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks_deliveries")),
    )
    with op.batch_alter_table("webhooks_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhooks_deliveries_subscription_id_id", ["subscription_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_webhooks_deliveries_pending",
            ["subscription_id"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

    op.create_table(
        "webhooks_attempts",
        sa.Column("delivery_id", Id128(), nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error_class", sa.String(length=64), nullable=True),
        sa.Column("response_excerpt", sa.String(length=256), nullable=True),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_webhooks_attempts_attempt_positive")),
        sa.CheckConstraint(
            "duration_ms >= 0", name=op.f("ck_webhooks_attempts_duration_non_negative")
        ),
        sa.CheckConstraint(
            "(status_code IS NULL) = (error_class IS NOT NULL)",
            name=op.f("ck_webhooks_attempts_status_code_xor_error"),
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhooks_deliveries.id"],
            name=op.f("fk_webhooks_attempts_delivery_id_webhooks_deliveries"),
        ),
        sa.PrimaryKeyConstraint("delivery_id", "attempt", name=op.f("pk_webhooks_attempts")),
    )


def downgrade() -> None:
    op.drop_table("webhooks_attempts")
    with op.batch_alter_table("webhooks_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_webhooks_deliveries_pending",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.drop_index("ix_webhooks_deliveries_subscription_id_id")

    op.drop_table("webhooks_deliveries")
    op.drop_table("webhooks_events")
    with op.batch_alter_table("webhooks_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhooks_subscriptions_pii_key_id"))
        batch_op.drop_index("ix_webhooks_subscriptions_partner_key_id_status")

    op.drop_table("webhooks_subscriptions")
    with op.batch_alter_table("ops_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_ops_outbox_status_available_ts")

    op.drop_table("ops_outbox")

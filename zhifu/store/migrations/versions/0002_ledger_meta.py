"""ledger meta: the generation counter behind the embedded account cache

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "ledger_meta",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ledger_meta")),
    )
    op.bulk_insert(meta, [{"name": "generation", "value": 0}])


def downgrade() -> None:
    op.drop_table("ledger_meta")

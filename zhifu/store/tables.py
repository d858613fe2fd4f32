"""Every table of the platform, in one MetaData that Alembic migrations follow.

Amounts are BIGINT minor units; timestamps are BIGINT microseconds since the
Unix epoch (UTC); ids are 128-bit (UUIDv7 for the platform's own rows).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from zhifu.store.types import Id128

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# --- ledger -----------------------------------------------------------------

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("code", Integer, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("owner_ref", String(128), nullable=True),
    Column("debits_pending", BigInteger, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("last_transfer_ts", BigInteger, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("closed_ts", BigInteger, nullable=True),
    CheckConstraint(
        "debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0"
        " AND credits_posted >= 0",
        name="counters_non_negative",
    ),
    # The balance flags, checked a second time by the database itself.
    CheckConstraint(
        "(flags & 1) = 0 OR debits_pending + debits_posted <= credits_posted",
        name="debits_must_not_exceed_credits",
    ),
    CheckConstraint(
        "(flags & 2) = 0 OR credits_pending + credits_posted <= debits_posted",
        name="credits_must_not_exceed_debits",
    ),
    CheckConstraint("code > 0 AND code <= 65535", name="code_range"),
)

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("debit_account_id", Id128, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("credit_account_id", Id128, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("code", Integer, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("pending_id", Id128, nullable=True),
    Column("reversal_of", Id128, nullable=True),
    Column("external_ref", String(64), nullable=True),
    Column("timeout_s", Integer, nullable=False),
    Column("expires_ts", BigInteger, nullable=True),
    Column("ts", BigInteger, nullable=False),
    Column("batch_id", Id128, nullable=False),
    Column("batch_index", Integer, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="accounts_different"),
    Index("ix_ledger_transfers_debit_ts", "debit_account_id", "ts"),
    Index("ix_ledger_transfers_credit_ts", "credit_account_id", "ts"),
    # A pending transfer is posted, voided or expired at most once.
    Index(
        "uq_ledger_transfers_pending_id",
        "pending_id",
        unique=True,
        sqlite_where=text("pending_id IS NOT NULL"),
        postgresql_where=text("pending_id IS NOT NULL"),
    ),
    Index(
        "ix_ledger_transfers_reversal_of",
        "reversal_of",
        sqlite_where=text("reversal_of IS NOT NULL"),
        postgresql_where=text("reversal_of IS NOT NULL"),
    ),
    Index(
        "ix_ledger_transfers_expires_ts",
        "expires_ts",
        sqlite_where=text("expires_ts IS NOT NULL"),
        postgresql_where=text("expires_ts IS NOT NULL"),
    ),
    UniqueConstraint("batch_id", "batch_index", name="uq_ledger_transfers_batch_position"),
)

# Ids whose transfer failed on the ledger's state: they stay failed.
ledger_rejections = Table(
    "ledger_rejections",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("result", String(48), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("ts", BigInteger, nullable=False),
)

# Balance after each transfer, for accounts with the `history` flag.
ledger_account_history = Table(
    "ledger_account_history",
    metadata,
    Column("account_id", Id128, ForeignKey("ledger_accounts.id"), primary_key=True),
    Column("ts", BigInteger, primary_key=True),
    Column("transfer_id", Id128, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
)

# One row per committed batch of transfers, with the Merkle root of its leaves.
ledger_batches = Table(
    "ledger_batches",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("committed_ts", BigInteger, nullable=False),
    Column("transfer_count", Integer, nullable=False),
    Column("merkle_root", LargeBinary(32), nullable=False),
)

# Batches committed but not yet chained into a signed block (a small queue).
ledger_unsealed_batches = Table(
    "ledger_unsealed_batches",
    metadata,
    Column("batch_id", Id128, ForeignKey("ledger_batches.id"), primary_key=True),
    Column("committed_ts", BigInteger, nullable=False),
)

# Small named counters of the ledger: ``generation`` counts the SQLite
# transactions that changed ledger accounts (the account cache's validity).
ledger_meta = Table(
    "ledger_meta",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# The hash chain: block n commits to block n-1 and to one batch's Merkle root.
ledger_blocks = Table(
    "ledger_blocks",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("batch_id", Id128, ForeignKey("ledger_batches.id"), nullable=False, unique=True),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("merkle_root", LargeBinary(32), nullable=False),
    Column("transfer_count", Integer, nullable=False),
    Column("committed_ts", BigInteger, nullable=False),
    Column("block_hash", LargeBinary(32), nullable=False, unique=True),
    Column("signature", LargeBinary(64), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("sealed_ts", BigInteger, nullable=False),
)

# --- audit trail (zhifu.ops.audit) ----------------------------------------------------

# Append-only, hash-chained security events: seq runs 1, 2, 3, ... without a gap.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", Id128, nullable=False, unique=True),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(128), nullable=True),
    Column("outcome", String(8), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("source", String(64), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    CheckConstraint("seq >= 1", name="seq_positive"),
    CheckConstraint("outcome IN ('ok', 'denied', 'failed')", name="outcome_known"),
    Index("ix_audit_events_action_seq", "action", "seq"),
    Index("ix_audit_events_actor_seq", "actor", "seq"),
)

# The chain's head: one row, locked by every append and moved forward by one.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("seq >= 0", name="seq_non_negative"),
)

# Signed statements "event seq has this hash", made from time to time.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("ts", BigInteger, nullable=False),
)

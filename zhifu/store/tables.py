"""Every table of the platform, in one MetaData that Alembic migrations follow.

Amounts are BIGINT minor units; timestamps are BIGINT microseconds since the
Unix epoch (UTC); ids are 128-bit (UUIDv7 for the platform's own rows).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
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
    # Added by 0004: the actor's role when the event was recorded.
    Column("role", String(32), nullable=True),
    CheckConstraint("seq >= 1", name="seq_positive"),
    CheckConstraint("outcome IN ('ok', 'denied', 'failed')", name="outcome_known"),
    Index("ix_audit_events_action_seq", "action", "seq"),
    Index("ix_audit_events_actor_seq", "actor", "seq"),
    Index("ix_audit_events_target_seq", "target", "seq"),
    Index("ix_audit_events_ts", "ts"),
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

# --- identity (zhifu.identity) ---------------------------------------------------------
#
# Personal data is stored only as envelope-encryption tokens (``*_enc``, see
# zhifu.security.envelope) with the master key id of the row in ``pii_key_id``;
# look-ups go through blind indexes (``*_index``, HMAC-SHA256). A subject is a
# customer or a staff member: ``subject_kind`` ('customer' | 'staff') and
# ``subject_id``.

SUBJECT_KINDS_SQL = "subject_kind IN ('customer', 'staff')"

identity_customers = Table(
    "identity_customers",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("name_enc", LargeBinary, nullable=False),
    Column("resident_id_enc", LargeBinary, nullable=False),
    Column("resident_id_index", LargeBinary(32), nullable=False, unique=True),
    Column("mobile_enc", LargeBinary, nullable=False),
    Column("mobile_index", LargeBinary(32), nullable=False, unique=True),
    Column("email_enc", LargeBinary, nullable=False),
    Column("email_index", LargeBinary(32), nullable=False, unique=True),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("password_hash", String(256), nullable=False),
    Column("password_changed_ts", BigInteger, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'disabled')", name="status_known"),
)

identity_staff = Table(
    "identity_staff",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("name_enc", LargeBinary, nullable=False),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("password_changed_ts", BigInteger, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    CheckConstraint("status IN ('active', 'disabled')", name="status_known"),
)

identity_staff_roles = Table(
    "identity_staff_roles",
    metadata,
    Column("staff_id", Id128, ForeignKey("identity_staff.id"), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("granted_ts", BigInteger, nullable=False),
    Column("granted_by", String(128), nullable=False),
    Column("approved_by", String(128), nullable=True),
)

identity_sessions = Table(
    "identity_sessions",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("subject_kind", String(8), nullable=False),
    Column("subject_id", Id128, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_seen_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("revoked_ts", BigInteger, nullable=True),
    Column("revoke_reason", String(32), nullable=True),
    Column("auth_methods", String(64), nullable=False),
    Column("step_up_ts", BigInteger, nullable=True),
    Column("step_up_methods", String(64), nullable=True),
    Column("browser_id", Id128, nullable=True),
    Column("device_id", Id128, nullable=True),
    Column("user_agent", String(256), nullable=True),
    Column("source", String(64), nullable=True),
    CheckConstraint(SUBJECT_KINDS_SQL, name="subject_kind_known"),
    Index("ix_identity_sessions_subject", "subject_kind", "subject_id"),
)

# Browsers that completed a login for a subject ("device cookies"): a login
# from one of them is not a "new browser" and passes the per-account throttle.
identity_browsers = Table(
    "identity_browsers",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("subject_kind", String(8), nullable=False),
    Column("subject_id", Id128, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_seen_ts", BigInteger, nullable=False),
    CheckConstraint(SUBJECT_KINDS_SQL, name="subject_kind_known"),
    Index("ix_identity_browsers_subject", "subject_kind", "subject_id"),
)

identity_totp = Table(
    "identity_totp",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("subject_kind", String(8), nullable=False),
    Column("subject_id", Id128, nullable=False),
    Column("secret_enc", LargeBinary, nullable=False),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("confirmed_ts", BigInteger, nullable=True),
    Column("last_used_step", BigInteger, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    CheckConstraint(SUBJECT_KINDS_SQL, name="subject_kind_known"),
    UniqueConstraint("subject_kind", "subject_id"),
)

identity_recovery_codes = Table(
    "identity_recovery_codes",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("subject_kind", String(8), nullable=False),
    Column("subject_id", Id128, nullable=False),
    Column("code_hash", LargeBinary(32), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("used_ts", BigInteger, nullable=True),
    CheckConstraint(SUBJECT_KINDS_SQL, name="subject_kind_known"),
    UniqueConstraint("subject_kind", "subject_id", "code_hash"),
)

identity_passkeys = Table(
    "identity_passkeys",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("subject_kind", String(8), nullable=False),
    Column("subject_id", Id128, nullable=False),
    Column("credential_id", LargeBinary(1023), nullable=False, unique=True),
    Column("public_key", LargeBinary(1024), nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("aaguid", String(36), nullable=False),
    Column("backed_up", Integer, nullable=False),
    Column("transports", String(128), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_used_ts", BigInteger, nullable=True),
    CheckConstraint(SUBJECT_KINDS_SQL, name="subject_kind_known"),
    Index("ix_identity_passkeys_subject", "subject_kind", "subject_id"),
)

# A customer's phone: it holds an Ed25519 private key and approves QR challenges.
identity_devices = Table(
    "identity_devices",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("customer_id", Id128, ForeignKey("identity_customers.id"), nullable=False),
    Column("public_key", LargeBinary(32), nullable=False, unique=True),
    Column("name", String(64), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_used_ts", BigInteger, nullable=True),
    Column("revoked_ts", BigInteger, nullable=True),
    Index("ix_identity_devices_customer_id", "customer_id"),
)

# One-time challenges: MFA login tickets, QR confirmations, WebAuthn ceremonies.
identity_challenges = Table(
    "identity_challenges",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("subject_kind", String(8), nullable=True),
    Column("subject_id", Id128, nullable=True),
    Column("secret_hash", LargeBinary(32), nullable=True, unique=True),
    Column("action", String(64), nullable=True),
    Column("binding", LargeBinary(32), nullable=True),
    Column("payload", Text, nullable=False),
    Column("session_id", Id128, nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("device_id", Id128, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("decided_ts", BigInteger, nullable=True),
    CheckConstraint(
        "status IN ('pending', 'approved', 'rejected', 'consumed')", name="status_known"
    ),
    Index("ix_identity_challenges_expires_ts", "expires_ts"),
)

# Failed-login counters per account, per source address and per pair.
identity_throttle = Table(
    "identity_throttle",
    metadata,
    Column("key", LargeBinary(32), primary_key=True),
    Column("scope", String(8), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("last_failure_ts", BigInteger, nullable=False),
    Column("blocked_until_ts", BigInteger, nullable=False),
    CheckConstraint("scope IN ('account', 'source', 'pair')", name="scope_known"),
    Index("ix_identity_throttle_last_failure_ts", "last_failure_ts"),
)

# API keys of partners (merchants, wallet platforms) that sign their requests.
identity_partner_keys = Table(
    "identity_partner_keys",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("key_id", String(64), nullable=False, unique=True),
    Column("partner_name", String(128), nullable=False),
    Column("algorithm", String(16), nullable=False),
    Column("secret_enc", LargeBinary, nullable=True),
    Column("public_key", LargeBinary(32), nullable=True),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("scopes", String(256), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_ts", BigInteger, nullable=True),
    CheckConstraint("algorithm IN ('hmac-sha256', 'ed25519')", name="algorithm_known"),
)

identity_partner_nonces = Table(
    "identity_partner_nonces",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("expires_ts", BigInteger, nullable=False),
    Index("ix_identity_partner_nonces_expires_ts", "expires_ts"),
)

# Maker-checker: a sensitive change waits here until a second admin decides.
identity_approvals = Table(
    "identity_approvals",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("action", String(64), nullable=False),
    Column("target", String(128), nullable=True),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("maker", String(128), nullable=False),
    Column("maker_name", String(64), nullable=False),
    Column("checker", String(128), nullable=True),
    Column("checker_name", String(64), nullable=True),
    Column("reason", String(512), nullable=True),
    Column("result", Text, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("decided_ts", BigInteger, nullable=True),
    CheckConstraint(
        "status IN ('pending', 'approved', 'rejected', 'expired', 'failed')", name="status_known"
    ),
    CheckConstraint("checker IS NULL OR checker <> maker", name="four_eyes"),
    Index("ix_identity_approvals_status_created_ts", "status", "created_ts"),
)

# --- accounts (zhifu.accounts) ---------------------------------------------------------
#
# An account row points at the ledger account that holds its money: both share
# one id. Card numbers are stored only as envelope tokens (``pan_enc``, the
# master key id of the row in ``pii_key_id``) and looked up by a blind index.

accounts_accounts = Table(
    "accounts_accounts",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("customer_id", Id128, ForeignKey("identity_customers.id"), nullable=False),
    Column("number", String(19), nullable=False, unique=True),
    Column("product", String(16), nullable=False),
    Column("account_class", String(3), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("nickname", String(32), nullable=False),
    Column("status", String(8), nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("closed_ts", BigInteger, nullable=True),
    CheckConstraint("status IN ('open', 'frozen', 'closed')", name="status_known"),
    CheckConstraint("account_class IN ('I', 'II', 'III')", name="account_class_known"),
    CheckConstraint("length(number) = 19", name="number_length"),
    CheckConstraint("(status = 'closed') = (closed_ts IS NOT NULL)", name="closed_ts_iff_closed"),
    CheckConstraint("status <> 'closed' OR NOT is_default", name="closed_is_not_default"),
    Index("ix_accounts_accounts_customer_id", "customer_id"),
    # At most one default account per customer and currency.
    Index(
        "uq_accounts_accounts_default",
        "customer_id",
        "currency",
        unique=True,
        sqlite_where=text("is_default"),
        postgresql_where=text("is_default"),
    ),
)

accounts_cards = Table(
    "accounts_cards",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("account_id", Id128, ForeignKey("accounts_accounts.id"), nullable=False),
    Column("token", String(19), nullable=False, unique=True),
    Column("pan_enc", LargeBinary, nullable=False),
    Column("pan_index", LargeBinary(32), nullable=False, unique=True),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("last4", String(4), nullable=False),
    Column("expiry_year", Integer, nullable=False),
    Column("expiry_month", Integer, nullable=False),
    Column("status", String(8), nullable=False),
    Column("replaced_by", Id128, ForeignKey("accounts_cards.id"), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'frozen', 'lost', 'closed')", name="status_known"),
    CheckConstraint("expiry_month BETWEEN 1 AND 12", name="expiry_month_range"),
    CheckConstraint("replaced_by IS NULL OR status = 'lost'", name="only_lost_is_replaced"),
    Index("ix_accounts_cards_account_id", "account_id"),
)

# --- transactional outbox (zhifu.ops.outbox) ---------------------------------------------
#
# Messages written in the database transaction of the change they announce and
# sent by a dispatcher once that transaction has committed. A dispatcher pass
# claims a message by setting ``lease_owner`` and ``lease_until_ts``.

ops_outbox = Table(
    "ops_outbox",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("key", String(128), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(8), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("available_ts", BigInteger, nullable=False),
    Column("lease_owner", Id128, nullable=True),
    Column("lease_until_ts", BigInteger, nullable=True),
    Column("last_error", String(256), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("done_ts", BigInteger, nullable=True),
    CheckConstraint("status IN ('pending', 'done', 'dead')", name="status_known"),
    CheckConstraint("attempts >= 0", name="attempts_non_negative"),
    CheckConstraint("(lease_owner IS NULL) = (lease_until_ts IS NULL)", name="lease_complete"),
    CheckConstraint("(status = 'pending') = (done_ts IS NULL)", name="done_ts_iff_finished"),
    Index("ix_ops_outbox_status_available_ts", "status", "available_ts"),
)

# --- webhooks (zhifu.webhooks) -----------------------------------------------------------
#
# A partner key's subscriptions (the signing secret only as an envelope token,
# its master key id in ``pii_key_id``), the events published to them, one
# delivery per event and subscription (a replay is a new delivery of the same
# event) and every attempt of every delivery: the delivery log.

webhooks_subscriptions = Table(
    "webhooks_subscriptions",
    metadata,
    Column("id", Id128, primary_key=True),
    Column(
        "partner_key_id", String(64), ForeignKey("identity_partner_keys.key_id"), nullable=False
    ),
    Column("url", String(1024), nullable=False),
    Column("event_types", Text, nullable=False),
    Column("secret_enc", LargeBinary, nullable=False),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("status", String(8), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("deleted_ts", BigInteger, nullable=True),
    CheckConstraint("status IN ('active', 'deleted')", name="status_known"),
    CheckConstraint(
        "(status = 'deleted') = (deleted_ts IS NOT NULL)", name="deleted_ts_iff_deleted"
    ),
    Index("ix_webhooks_subscriptions_partner_key_id_status", "partner_key_id", "status"),
)

webhooks_events = Table(
    "webhooks_events",
    metadata,
    Column("id", Id128, primary_key=True),
    Column(
        "partner_key_id", String(64), ForeignKey("identity_partner_keys.key_id"), nullable=False
    ),
    Column("event_type", String(64), nullable=False),
    # The exact JSON text that is signed and sent, the same on every attempt.
    Column("body", Text, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
)

webhooks_deliveries = Table(
    "webhooks_deliveries",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("event_id", Id128, ForeignKey("webhooks_events.id"), nullable=False),
    Column("subscription_id", Id128, ForeignKey("webhooks_subscriptions.id"), nullable=False),
    Column("origin", String(8), nullable=False),
    Column("replay_of", Id128, ForeignKey("webhooks_deliveries.id"), nullable=True),
    Column("status", String(9), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_attempt_ts", BigInteger, nullable=True),
    Column("completed_ts", BigInteger, nullable=True),
    CheckConstraint(
        "status IN ('pending', 'succeeded', 'failed', 'cancelled')", name="status_known"
    ),
    CheckConstraint("origin IN ('event', 'replay', 'test')", name="origin_known"),
    CheckConstraint("(origin = 'replay') = (replay_of IS NOT NULL)", name="replay_of_iff_replay"),
    CheckConstraint(
        "(status = 'pending') = (completed_ts IS NULL)", name="completed_ts_iff_completed"
    ),
    CheckConstraint("attempts >= 0", name="attempts_non_negative"),
    Index("ix_webhooks_deliveries_subscription_id_id", "subscription_id", "id"),
    Index(
        "ix_webhooks_deliveries_pending",
        "subscription_id",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

# One row per attempt: an HTTP status code, or the class of the network error.
webhooks_attempts = Table(
    "webhooks_attempts",
    metadata,
    Column("delivery_id", Id128, ForeignKey("webhooks_deliveries.id"), primary_key=True),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("ts", BigInteger, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error_class", String(64), nullable=True),
    Column("response_excerpt", String(256), nullable=True),
    CheckConstraint("attempt >= 1", name="attempt_positive"),
    CheckConstraint("duration_ms >= 0", name="duration_non_negative"),
    CheckConstraint(
        "(status_code IS NULL) = (error_class IS NOT NULL)", name="status_code_xor_error"
    ),
)

# --- payments (zhifu.payments) -------------------------------------------------------------
#
# A payment order and the append-only history of its transitions. The order
# names the ledger transfers that hold and settle its money; the ledger stays
# the only place money lives. An Idempotency-Key is remembered per caller
# (``scope``) with the fingerprint of the request it stood for. Spending totals
# count money moved per account, direction and Shanghai day or year, for the
# PBOC limits; they are updated in the database transaction of the debit.

payments_orders = Table(
    "payments_orders",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("initiator", String(80), nullable=False),
    Column("payer_customer_id", Id128, nullable=True),
    Column("payee_customer_id", Id128, nullable=True),
    Column("merchant_id", Id128, nullable=True),
    Column("debit_account_id", Id128, nullable=False),
    Column("credit_account_id", Id128, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("refunded_minor", BigInteger, nullable=False),
    Column("refund_of", Id128, ForeignKey("payments_orders.id"), nullable=True),
    Column("payer_label", String(64), nullable=False),
    Column("payee_label", String(64), nullable=False),
    Column("memo", String(140), nullable=False),
    Column("external_ref", String(64), nullable=True),
    Column("risk_decision", String(16), nullable=False),
    Column("risk_reason", String(256), nullable=False),
    Column("route", String(32), nullable=False),
    Column("hold_transfer_id", Id128, nullable=True),
    Column("settle_transfer_id", Id128, nullable=True),
    Column("failure_code", String(48), nullable=True),
    Column("failure_detail", String(256), nullable=True),
    Column("source_ref", String(80), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    CheckConstraint(
        "state IN ('created', 'risk_checked', 'challenged', 'authorized', 'funds_held',"
        " 'submitted', 'settled', 'failed', 'returned', 'rejected', 'cancelled')",
        name="state_known",
    ),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint(
        "refunded_minor >= 0 AND refunded_minor <= amount_minor", name="refunded_within_amount"
    ),
    CheckConstraint("debit_account_id <> credit_account_id", name="accounts_differ"),
    CheckConstraint("(kind = 'refund') = (refund_of IS NOT NULL)", name="refund_of_iff_refund"),
    Index("ix_payments_orders_payer_customer_id_id", "payer_customer_id", "id"),
    Index("ix_payments_orders_payee_customer_id_id", "payee_customer_id", "id"),
    Index("ix_payments_orders_debit_account_id_id", "debit_account_id", "id"),
    Index("ix_payments_orders_credit_account_id_id", "credit_account_id", "id"),
    Index("ix_payments_orders_merchant_id_id", "merchant_id", "id"),
    Index("ix_payments_orders_refund_of", "refund_of"),
    Index("ix_payments_orders_state_updated_ts", "state", "updated_ts"),
    # Histories, newest first (zhifu.payments.history): an account's side, a customer's side.
    Index("ix_payments_orders_debit_account_id_created_ts", "debit_account_id", "created_ts", "id"),
    Index(
        "ix_payments_orders_credit_account_id_created_ts", "credit_account_id", "created_ts", "id"
    ),
    Index(
        "ix_payments_orders_payer_customer_id_created_ts", "payer_customer_id", "created_ts", "id"
    ),
    Index(
        "ix_payments_orders_payee_customer_id_created_ts", "payee_customer_id", "created_ts", "id"
    ),
)

payments_transitions = Table(
    "payments_transitions",
    metadata,
    Column("order_id", Id128, ForeignKey("payments_orders.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("reason", String(256), nullable=False),
    CheckConstraint("seq >= 0", name="seq_non_negative"),
    CheckConstraint("(seq = 0) = (from_state IS NULL)", name="first_has_no_from_state"),
)

payments_idempotency = Table(
    "payments_idempotency",
    metadata,
    Column("scope", String(80), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("order_id", Id128, ForeignKey("payments_orders.id"), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Index("ix_payments_idempotency_created_ts", "created_ts"),
)

payments_spending = Table(
    "payments_spending",
    metadata,
    Column("account_id", Id128, ForeignKey("accounts_accounts.id"), primary_key=True),
    Column("direction", String(8), primary_key=True),
    # A Shanghai calendar day ('2026-11-25') or year ('2026').
    Column("period", String(10), primary_key=True),
    Column("total_minor", BigInteger, nullable=False),
    CheckConstraint("direction IN ('outgoing', 'incoming')", name="direction_known"),
    CheckConstraint("total_minor >= 0", name="total_non_negative"),
)

# Limits a customer chose for one account and channel; NULL keeps the bank's.
accounts_customer_limits = Table(
    "accounts_customer_limits",
    metadata,
    Column("account_id", Id128, ForeignKey("accounts_accounts.id"), primary_key=True),
    Column("channel", String(8), primary_key=True),
    Column("per_payment_minor", BigInteger, nullable=True),
    Column("daily_minor", BigInteger, nullable=True),
    Column("yearly_minor", BigInteger, nullable=True),
    Column("updated_ts", BigInteger, nullable=False),
    CheckConstraint(
        "channel IN ('counter', 'online', 'mobile', 'qr', 'card')", name="channel_known"
    ),
    CheckConstraint(
        "(per_payment_minor IS NULL OR per_payment_minor >= 0)"
        " AND (daily_minor IS NULL OR daily_minor >= 0)"
        " AND (yearly_minor IS NULL OR yearly_minor >= 0)",
        name="limits_non_negative",
    ),
)

# --- merchants (zhifu.merchants) -----------------------------------------------------------
#
# Merchants a customer onboarded (pending until staff approve them with the
# partner key of their point of sale), the QR codes issued to them (static and
# single-use dynamic), customers' one-time payment codes (only their blind
# index, never the digits), the Idempotency-Keys of the requests that made
# these, and a per-key count of unusable payment codes (the guessing throttle).
# Payments and refunds are payments_orders rows with merchant_id set.

merchants_merchants = Table(
    "merchants_merchants",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("owner_customer_id", Id128, ForeignKey("identity_customers.id"), nullable=False),
    Column("name", String(25), nullable=False),
    Column("alternate_name", String(25), nullable=True),
    Column("city", String(15), nullable=False),
    Column("alternate_city", String(15), nullable=True),
    Column("mcc", String(4), nullable=False),
    Column("country", String(2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("settlement_account_id", Id128, ForeignKey("accounts_accounts.id"), nullable=False),
    Column("partner_key_id", String(64), ForeignKey("identity_partner_keys.key_id"), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("approved_ts", BigInteger, nullable=True),
    Column("approved_by", String(80), nullable=True),
    CheckConstraint("status IN ('pending', 'active')", name="status_known"),
    CheckConstraint(
        "(status = 'active') = (partner_key_id IS NOT NULL AND approved_ts IS NOT NULL)",
        name="active_iff_approved",
    ),
    Index("ix_merchants_merchants_owner_customer_id_id", "owner_customer_id", "id"),
    Index("ix_merchants_merchants_status_id", "status", "id"),
    Index("ix_merchants_merchants_partner_key_id", "partner_key_id"),
)

merchants_qr_codes = Table(
    "merchants_qr_codes",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("merchant_id", Id128, ForeignKey("merchants_merchants.id"), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("status", String(8), nullable=False),
    Column("payload", String(512), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=True),
    Column("order_ref", String(25), nullable=True),
    Column("terminal_label", String(25), nullable=True),
    Column("expires_ts", BigInteger, nullable=True),
    Column("used_order_id", Id128, ForeignKey("payments_orders.id"), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_by", String(80), nullable=False),
    CheckConstraint("kind IN ('static', 'dynamic')", name="kind_known"),
    CheckConstraint("status IN ('active', 'used')", name="status_known"),
    CheckConstraint(
        "(kind = 'dynamic') = (amount_minor IS NOT NULL AND expires_ts IS NOT NULL)",
        name="dynamic_iff_amount_and_expiry",
    ),
    CheckConstraint("amount_minor IS NULL OR amount_minor > 0", name="amount_positive"),
    CheckConstraint("(status = 'used') = (used_order_id IS NOT NULL)", name="used_iff_order"),
    CheckConstraint("kind = 'dynamic' OR status = 'active'", name="static_never_used"),
    Index(
        "ix_merchants_qr_codes_merchant_id_kind_status_expires_ts",
        "merchant_id",
        "kind",
        "status",
        "expires_ts",
    ),
)

merchants_payment_codes = Table(
    "merchants_payment_codes",
    metadata,
    Column("id", Id128, primary_key=True),
    # The keyed blind index of the 18 digits; the digits themselves are never stored.
    Column("code_index", LargeBinary(32), nullable=False, unique=True),
    Column("customer_id", Id128, ForeignKey("identity_customers.id"), nullable=False),
    Column("account_id", Id128, ForeignKey("accounts_accounts.id"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_cap_minor", BigInteger, nullable=False),
    Column("step_up", String(32), nullable=True),
    Column("status", String(8), nullable=False),
    Column("expires_ts", BigInteger, nullable=False),
    Column("used_order_id", Id128, ForeignKey("payments_orders.id"), nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'used')", name="status_known"),
    CheckConstraint("amount_cap_minor > 0", name="cap_positive"),
    CheckConstraint("(status = 'used') = (used_order_id IS NOT NULL)", name="used_iff_order"),
    Index(
        "ix_merchants_payment_codes_customer_id_status_expires_ts",
        "customer_id",
        "status",
        "expires_ts",
    ),
    Index("ix_merchants_payment_codes_expires_ts", "expires_ts"),
)

merchants_idempotency = Table(
    "merchants_idempotency",
    metadata,
    Column("scope", String(80), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("resource", String(16), nullable=False),
    Column("resource_id", Id128, nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    CheckConstraint("resource IN ('merchant', 'qr_code', 'payment_code')", name="resource_known"),
    Index("ix_merchants_idempotency_created_ts", "created_ts"),
)

merchants_code_failures = Table(
    "merchants_code_failures",
    metadata,
    Column("partner_key_id", String(64), primary_key=True),
    Column("window_start_s", BigInteger, primary_key=True, autoincrement=False),
    Column("failures", Integer, nullable=False),
    CheckConstraint("failures > 0", name="failures_positive"),
)

# --- payees and schedules (zhifu.payments.payees, zhifu.payments.schedules) ---------------
#
# A customer's payee book. The payee's account number and name are stored only
# as envelope tokens (their master key id in ``pii_key_id``); a blind index of
# the customer, scheme, bank and number (``account_index``) refuses a second
# entry for the same account. ``scheme`` says how the payee is reached:
# ``intra_bank`` today; payees at other banks fit the same row later (their
# ``bank_code`` / ``bic`` / ``bank_name``, an IBAN in the encrypted number).
# A schedule pays one payee from one account once or again and again (Asia/
# Shanghai times). Its next run (``next_seq``, due at ``next_ts``) is claimed
# with a lease; each run's outcome (paid with its order, failed with the
# reason, skipped) is one row of ``payments_schedule_runs``.

payments_payees = Table(
    "payments_payees",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("customer_id", Id128, ForeignKey("identity_customers.id"), nullable=False),
    Column("nickname", String(32), nullable=False),
    Column("scheme", String(16), nullable=False),
    Column("bank_code", String(12), nullable=True),
    Column("bic", String(11), nullable=True),
    Column("bank_name", String(128), nullable=True),
    Column("account_number_enc", LargeBinary, nullable=False),
    Column("name_enc", LargeBinary, nullable=False),
    Column("account_index", LargeBinary(32), nullable=False),
    Column("account_last4", String(4), nullable=False),
    Column("pii_key_id", String(32), nullable=False, index=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    CheckConstraint("scheme IN ('intra_bank')", name="scheme_known"),
    UniqueConstraint("customer_id", "account_index"),
)

payments_schedules = Table(
    "payments_schedules",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("customer_id", Id128, ForeignKey("identity_customers.id"), nullable=False),
    Column("from_account_id", Id128, ForeignKey("accounts_accounts.id"), nullable=False),
    # NULL once the payee is deleted (only a finished or cancelled schedule's may be).
    Column("payee_id", Id128, ForeignKey("payments_payees.id"), nullable=True),
    Column("payee_label", String(64), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("memo", String(140), nullable=False),
    Column("frequency", String(8), nullable=False),
    Column("first_ts", BigInteger, nullable=False),
    # The last Shanghai day a run may fall on ('2027-06-30').
    Column("end_date", String(10), nullable=True),
    Column("count_max", Integer, nullable=True),
    Column("status", String(9), nullable=False),
    Column("next_seq", Integer, nullable=False),
    Column("next_ts", BigInteger, nullable=True),
    Column("failures", Integer, nullable=False),
    Column("step_up", String(16), nullable=True),
    Column("idempotency_key", String(64), nullable=False),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("lease_owner", Id128, nullable=True),
    Column("lease_until_ts", BigInteger, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    CheckConstraint("status IN ('active', 'paused', 'cancelled', 'finished')", name="status_known"),
    CheckConstraint("frequency IN ('once', 'daily', 'weekly', 'monthly')", name="frequency_known"),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("next_seq >= 1", name="next_seq_positive"),
    CheckConstraint("failures >= 0", name="failures_non_negative"),
    CheckConstraint("count_max IS NULL OR count_max >= 1", name="count_max_positive"),
    CheckConstraint("(status = 'active') = (next_ts IS NOT NULL)", name="next_ts_iff_active"),
    CheckConstraint("(lease_owner IS NULL) = (lease_until_ts IS NULL)", name="lease_complete"),
    UniqueConstraint("customer_id", "idempotency_key"),
    Index("ix_payments_schedules_status_next_ts", "status", "next_ts"),
    Index("ix_payments_schedules_payee_id", "payee_id"),
)

payments_schedule_runs = Table(
    "payments_schedule_runs",
    metadata,
    Column("schedule_id", Id128, ForeignKey("payments_schedules.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("due_ts", BigInteger, nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("order_id", Id128, ForeignKey("payments_orders.id"), nullable=True),
    Column("failure_code", String(48), nullable=True),
    Column("failure_detail", String(256), nullable=True),
    Column("ts", BigInteger, nullable=False),
    CheckConstraint("outcome IN ('paid', 'failed', 'skipped')", name="outcome_known"),
    CheckConstraint("(outcome = 'paid') = (order_id IS NOT NULL)", name="order_iff_paid"),
    CheckConstraint("seq >= 1", name="seq_positive"),
)

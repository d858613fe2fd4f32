"""Schema migrations on SQLite and PostgreSQL: up, down, up again, and the
migrated schema matches the metadata in ``zhifu.store.tables``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from factories import fund, open_accounts, open_bank
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store import migrate
from zhifu.store.engine import create_db_engine
from zhifu.store.tables import metadata

LEDGER_TABLES = {
    "ledger_accounts",
    "ledger_transfers",
    "ledger_rejections",
    "ledger_account_history",
    "ledger_batches",
    "ledger_unsealed_batches",
    "ledger_blocks",
    "ledger_meta",
}


@pytest.fixture
def bare_engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database: no migration has run."""
    engine = create_db_engine(db_url, pool_size=2)
    try:
        yield engine
    finally:
        engine.dispose()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_head_revision_exists() -> None:
    assert migrate.head_revision() is not None


def test_upgrade_downgrade_upgrade(bare_engine: Engine, signer: Ed25519Signer) -> None:
    assert migrate.current_revision(bare_engine) is None
    assert table_names(bare_engine) == set()

    migrate.upgrade(bare_engine)
    assert migrate.current_revision(bare_engine) == migrate.head_revision()
    assert table_names(bare_engine) == set(metadata.tables)
    assert set(metadata.tables) >= LEDGER_TABLES
    migrate.upgrade(bare_engine)  # already at head: nothing to do
    assert migrate.current_revision(bare_engine) == migrate.head_revision()

    # Some data, so that the downgrade drops tables that hold rows.
    ledger = LedgerService(bare_engine, signer)
    bank = open_bank(ledger)
    fund(ledger, bank, open_accounts(ledger, 2), 10)
    ledger.seal()

    migrate.downgrade(bare_engine, "base")
    assert migrate.current_revision(bare_engine) is None
    assert table_names(bare_engine) == set()

    migrate.upgrade(bare_engine)
    assert migrate.current_revision(bare_engine) == migrate.head_revision()
    assert table_names(bare_engine) == set(metadata.tables)
    assert schema_diff(bare_engine) == []

    # The schema works again, immutability triggers included.
    ledger = LedgerService(bare_engine, signer)
    bank = open_bank(ledger)
    (alice,) = open_accounts(ledger, 1)
    fund(ledger, bank, [alice], 10)
    assert ledger.seal() == 1
    assert ledger.verify().ok
    with pytest.raises(DBAPIError, match="immutable"), bare_engine.begin() as connection:
        connection.execute(text("UPDATE ledger_transfers SET amount = 1"))
    with pytest.raises(DBAPIError, match="immutable"), bare_engine.begin() as connection:
        connection.execute(text("DELETE FROM ledger_blocks"))


def test_migrated_schema_matches_the_metadata(engine: Engine) -> None:
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert schema_diff(engine) == []


def test_migrated_schema_has_the_indexes_and_constraints(engine: Engine) -> None:
    inspector = inspect(engine)
    indexes = {ix["name"]: ix for ix in inspector.get_indexes("ledger_transfers")}
    assert {
        "ix_ledger_transfers_debit_ts",
        "ix_ledger_transfers_credit_ts",
        "uq_ledger_transfers_pending_id",
        "ix_ledger_transfers_reversal_of",
        "ix_ledger_transfers_expires_ts",
    } <= set(indexes)
    assert indexes["uq_ledger_transfers_pending_id"]["unique"]
    checks = {ck["name"] for ck in inspector.get_check_constraints("ledger_accounts")}
    assert {
        "ck_ledger_accounts_counters_non_negative",
        "ck_ledger_accounts_debits_must_not_exceed_credits",
        "ck_ledger_accounts_credits_must_not_exceed_debits",
        "ck_ledger_accounts_code_range",
    } <= checks
    transfer_checks = {ck["name"] for ck in inspector.get_check_constraints("ledger_transfers")}
    assert {
        "ck_ledger_transfers_amount_positive",
        "ck_ledger_transfers_accounts_different",
    } <= transfer_checks


def test_schema_diff_notices_a_difference(engine: Engine) -> None:
    # The comparison is live: a column the metadata does not know shows up.
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE ledger_batches ADD COLUMN note VARCHAR(10)"))
    diff = schema_diff(engine)
    assert len(diff) == 1
    assert diff[0][0] == "remove_column"  # type: ignore[index]

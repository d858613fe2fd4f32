"""Shared fixtures: databases for every tier.

``db_url`` is parametrized over SQLite and PostgreSQL. PostgreSQL tests create
a scratch database on 127.0.0.1:5432 (``ZHIFU_TEST_POSTGRES_URL`` overrides the
server) and drop it afterwards. Locally they skip when the server is absent;
under ``CI=true`` they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from scratch_db import (
    create_migrated_postgres_database,
    create_postgres_database,
    drop_postgres_database,
)
from sqlalchemy import Engine

from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store import migrate
from zhifu.store.engine import create_db_engine


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'zhifu.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each engine in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zhifu.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each engine in turn with the schema at head."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'zhifu.db'}"
        engine = create_db_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
        return
    url = create_migrated_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    """A migrated engine on each database in turn."""
    engine = create_db_engine(migrated_db_url, pool_size=4)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_db_engine(sqlite_url)
    migrate.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate()


@pytest.fixture
def ledger(engine: Engine, signer: Ed25519Signer) -> LedgerService:
    """The ledger service on each database in turn."""
    return LedgerService(engine, signer)


@pytest.fixture
def sqlite_ledger(sqlite_engine: Engine, signer: Ed25519Signer) -> LedgerService:
    return LedgerService(sqlite_engine, signer)

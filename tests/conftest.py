"""Shared fixtures: databases for every tier.

``db_url`` is parametrized over SQLite and PostgreSQL. PostgreSQL tests create
a scratch database on 127.0.0.1:5432 (``ZHIFU_TEST_POSTGRES_URL`` overrides the
server) and drop it afterwards. Locally they skip when the server is absent;
under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store import migrate
from zhifu.store.engine import create_db_engine

POSTGRES_SERVER_URL = os.environ.get(
    "ZHIFU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _postgres_available() -> str | None:
    """None when the server answers, else the reason it does not."""
    engine = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except OperationalError as exc:
        return str(exc.orig)
    finally:
        engine.dispose()


_POSTGRES_PROBLEM: str | bool | None = False  # False: not probed yet


def require_postgres() -> None:
    global _POSTGRES_PROBLEM
    if _POSTGRES_PROBLEM is False:
        _POSTGRES_PROBLEM = _postgres_available()
    if _POSTGRES_PROBLEM:
        message = f"PostgreSQL at {POSTGRES_SERVER_URL} is unreachable: {_POSTGRES_PROBLEM}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)


def create_postgres_database() -> str:
    """A new empty database on the test server; returns its URL."""
    require_postgres()
    name = f"zhifu_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on each database in turn."""
    engine = create_db_engine(db_url, pool_size=4)
    migrate.upgrade(engine)
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

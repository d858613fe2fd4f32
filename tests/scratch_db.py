"""PostgreSQL scratch databases for tests (imported by conftest and by test modules).

``ZHIFU_TEST_POSTGRES_URL`` overrides the server. Locally a test that needs
PostgreSQL skips when the server is absent; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import atexit
import os
import uuid

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

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


def _admin() -> Engine:
    global _ADMIN
    if _ADMIN is None:
        _ADMIN = create_engine(
            POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
    return _ADMIN


_ADMIN: Engine | None = None
_MIGRATED_TEMPLATE: str | None = None


def _url_of(name: str) -> str:
    return make_url(POSTGRES_SERVER_URL).set(database=name).render_as_string(hide_password=False)


def create_postgres_database(*, template: str | None = None) -> str:
    """A new database on the test server (empty, or a copy of ``template``); its URL."""
    require_postgres()
    name = f"zhifu_test_{uuid.uuid4().hex[:16]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with _admin().connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    return _url_of(name)


def create_migrated_postgres_database() -> str:
    """A new database with the schema at head: a copy of a template migrated once."""
    global _MIGRATED_TEMPLATE
    if _MIGRATED_TEMPLATE is None:
        from zhifu.store import migrate
        from zhifu.store.engine import create_db_engine

        url = create_postgres_database()
        engine = create_db_engine(url, pool_size=1)
        migrate.upgrade(engine)
        engine.dispose()
        _MIGRATED_TEMPLATE = make_url(url).database
        atexit.register(drop_postgres_database, url)
    return create_postgres_database(template=_MIGRATED_TEMPLATE)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    with _admin().connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

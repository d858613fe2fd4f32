"""Engine construction for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 131_072  # page cache per connection
# Enough for every server worker thread (16) plus the committing and upkeep
# threads: a connection beyond the pool is opened for one unit of work and
# closed after it, and under load that churn (PRAGMAs, a cold page cache) cost
# the server half its CPU. The page cache fills only with pages a connection
# reads, so memory grows with the hot part of the database, not the pool.
SQLITE_POOL_SIZE = 24
SQLITE_POOL_OVERFLOW = 8
# Large pages: a batch touches one index page per account it moves money in,
# and fewer, larger pages cost less per row (measured with zhifu bench ledger).
SQLITE_PAGE_SIZE = 32_768
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 2_048  # checkpoint every 64 MiB of WAL at that page size


class WriterLock:
    """Writers of one SQLite file take turns here before ``BEGIN IMMEDIATE``.

    SQLite's own busy handler makes a waiting writer sleep and poll, with
    sleeps that grow to 100 ms: with several server processes, a writer could
    wait far longer than the writer ahead of it took. An advisory lock on a
    file beside the database (``flock``, across processes) behind a
    ``threading.RLock`` (across threads; flock alone does not separate threads
    that share a descriptor) queues writers instead, and wakes the next one as
    soon as the lock is free. It is only ever taken around a whole write
    transaction, so it cannot deadlock against SQLite's lock; a nested write
    transaction in the same thread re-enters it and meets SQLite's busy
    timeout, as before.
    """

    def __init__(self, database_path: str) -> None:
        self.path = database_path + "-writer.lock"
        self._local = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._local:
            self._depth += 1
            try:
                if self._depth == 1:
                    if self._fd is None:
                        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    if self._depth == 1 and self._fd is not None:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._depth -= 1


_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()


def writer_lock(engine: Engine) -> contextlib.AbstractContextManager[None]:
    """Held around a write transaction: the file's :class:`WriterLock` on SQLite
    (a file, not ``:memory:``), nothing on PostgreSQL."""
    lock = _WRITER_LOCKS.get(engine)
    return contextlib.nullcontext() if lock is None else lock.held()


def _normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(database_url: str, *, pool_size: int = 8) -> Engine:
    """Build the engine for ``database_url`` with the platform's durability settings."""
    url = make_url(_normalise_url(database_url))
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url.render_as_string(hide_password=False))
    if url.get_backend_name() == "postgresql":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
        )
    raise ValueError(
        f"unsupported database URL scheme {url.drivername!r}: use sqlite:/// or postgresql://"
    )


def _create_sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Pooled connections keep their page cache between units of work: a new
    # connection per batch would read every index page of a large ledger again.
    # Server workers are separate processes, each with its own engine and pool.
    engine = create_engine(url, pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_OVERFLOW)
    if path and path != ":memory:":
        _WRITER_LOCKS[engine] = WriterLock(str(Path(path).resolve()))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Manage transactions ourselves: the driver's implicit BEGIN cannot
        # take the write lock up front (BEGIN IMMEDIATE), which writers need
        # to avoid lock-upgrade deadlocks.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # takes effect on a new file
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.info.pop("zhifu_begin", "BEGIN")  # one transaction only
        connection.exec_driver_sql(mode)

    return engine


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))

"""The unit of work: one use case, one database transaction, bounded retries.

A unit of work opens a transaction, runs the use case, commits, and rolls back
on any error. Transient conflicts (SQLSTATE 40001 serialization failure, 40P01
deadlock, SQLite busy/locked) are retried up to ``ATTEMPTS_MAX`` times with
full-jitter exponential backoff, which is what PostgreSQL-compatible
distributed SQL engines require of their clients. The use case must therefore
be safe to run again from the start: it may not have side effects outside the
transaction.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from zhifu.store.engine import writer_lock

ATTEMPTS_MAX = 8
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.25
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
UNIQUE_VIOLATION_SQLSTATE = "23505"

T = TypeVar("T")


class RetriesExhaustedError(RuntimeError):
    """A unit of work kept hitting transient conflicts ``ATTEMPTS_MAX`` times."""


def is_transient(exc: BaseException, *, retry_unique_violation: bool = False) -> bool:
    """Whether ``exc`` is a conflict that a fresh attempt may not meet again."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    if retry_unique_violation and sqlstate == UNIQUE_VIOLATION_SQLSTATE:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "locked" in message or "busy" in message
    if retry_unique_violation and isinstance(orig, sqlite3.IntegrityError):
        return "unique" in str(orig).lower()
    return False


def backoff_s(attempt: int) -> float:
    """Full-jitter exponential backoff for retry number ``attempt`` (1-based)."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2**attempt)))


def run_in_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    write: bool = True,
    attempts_max: int = ATTEMPTS_MAX,
    retry_unique_violation: bool = False,
) -> T:
    """Run ``work`` in one database transaction, retrying transient conflicts.

    ``retry_unique_violation`` is for use cases that check for an existing row
    before inserting it: a concurrent insert of the same key then surfaces as a
    unique violation, and the retry sees the committed row.

    Raises:
        RetriesExhaustedError: every attempt met a transient conflict.
        Any exception raised by ``work`` (the transaction is rolled back).
    """
    last: BaseException | None = None
    for attempt in range(1, attempts_max + 1):
        try:
            with writer_lock(engine) if write else nullcontext(), engine.connect() as connection:
                if engine.dialect.name == "sqlite":
                    connection.info["zhifu_begin"] = "BEGIN IMMEDIATE" if write else "BEGIN"
                with connection.begin():
                    return work(connection)
        except Exception as exc:
            # Raw driver errors count too: the ledger writes through psycopg's
            # own cursor (COPY), whose errors SQLAlchemy never wraps.
            if not is_transient(exc, retry_unique_violation=retry_unique_violation):
                raise
            last = exc
        if attempt < attempts_max:
            time.sleep(backoff_s(attempt))
    raise RetriesExhaustedError(
        f"gave up after {attempts_max} attempts on transient database conflicts"
    ) from last

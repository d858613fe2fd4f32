"""The unit of work retries transient conflicts, whether SQLAlchemy wrapped the
driver's error or the driver raised it itself (the ledger writes with
psycopg's own cursor), and gives every other error straight back."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, text

from zhifu.store.uow import run_in_transaction


class _UniqueViolation(Exception):
    """Stands for psycopg.errors.UniqueViolation: a raw driver error with a SQLSTATE."""

    sqlstate = "23505"


class _SerializationFailure(Exception):
    sqlstate = "40001"


@pytest.mark.parametrize("error", [_UniqueViolation, _SerializationFailure])
def test_raw_driver_conflicts_are_retried(engine: Engine, error: type[Exception]) -> None:
    attempts = 0

    def work(connection: Connection) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise error("conflict")
        return int(connection.execute(text("SELECT 1")).scalar_one())

    retry_unique = error is _UniqueViolation
    assert run_in_transaction(engine, work, retry_unique_violation=retry_unique) == 1
    assert attempts == 2


def test_a_unique_violation_is_not_retried_unless_asked(engine: Engine) -> None:
    def work(connection: Connection) -> None:
        raise _UniqueViolation("duplicate")

    with pytest.raises(_UniqueViolation):
        run_in_transaction(engine, work)


def test_other_errors_are_not_retried(engine: Engine) -> None:
    attempts = 0

    def work(connection: Connection) -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("a bug, not a conflict")

    with pytest.raises(ValueError, match="a bug"):
        run_in_transaction(engine, work, retry_unique_violation=True)
    assert attempts == 1

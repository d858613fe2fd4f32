"""Online re-encryption of every encrypted column under the active master key.

Design note.

Registry. A table with encrypted columns is described by an
``EncryptedColumns``: its id column (UUIDs), its key-id column and its
encrypted columns. The owner of the table (identity today, accounts later)
calls ``register(spec)`` when its store module is imported; ``zhifu keys``
imports the owners listed in ``zhifu.cli.ENCRYPTED_COLUMN_OWNERS`` first.
The value of ``column`` in row ``row_id`` is encrypted with the context
``column_context(table.name, column, row_id)``; a column may be NULL.

Row invariant (the owner's duty). A row's key-id column names the master key
that every non-null encrypted column of the row is under, and is written in the
same statement as the tokens. An owner that changes some encrypted columns of a
row under an older key rewraps the others too (``KeyRing.rewrap``) and sets the
key id to the active one. A row with a NULL key id holds no encrypted value and
is skipped.

Rotation procedure.

1. ``zhifu keys new k2`` prints a fresh entry.
2. Add it after the active entry in every process's ring (key file or
   ``ZHIFU_MASTER_KEYS``) and restart them all, so every reader holds ``k2``
   before any writer uses it.
3. Move it before the old active entry and restart: new values go under ``k2``.
4. ``zhifu keys rotate`` re-encrypts every row under another key (``rotate``).
5. When ``zhifu keys status`` shows no row under the old key (backups included,
   or accept losing them), remove the old entry and destroy the key.

Why it is safe while the service runs. ``rotate`` walks each table in id order
(keyset pagination, so a pass reads the table once), ``chunk_rows`` rows whose
key id differs from the active one at a time. It reads a chunk in a short read
transaction, rewraps the values outside any transaction (a KMS call never holds
a lock), then writes the chunk in one short write transaction
(``run_in_transaction``), each row with a compare-and-set: ``UPDATE ... WHERE
id = :id AND key_id = :old_key_id AND column = :old_token`` (``IS NULL`` for a
NULL) for every encrypted column. Tokens are never equal by chance (a fresh
data key and nonce each), so a row that a writer changed after the read no
longer matches, its update is left as it is, and the next pass picks the row up
if it is still under an old key. A pass that finds no such row ends the table.
``PASSES_MAX`` bounds the passes: more means processes still write under an old
key, that is, step 3 did not reach every process.

Errors. A stored value that does not decrypt with the ring (a key removed too
early, damaged data) stops the rotation with ``RotationError`` naming the table,
column and row; rows done so far stay done, and running ``rotate`` again
resumes. ``chunk_rows`` outside 1..``CHUNK_ROWS_MAX`` or a malformed spec is
``ValueError``. Database errors propagate (transient conflicts are retried by
``run_in_transaction``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, func, or_, select, update

from zhifu.security.envelope import (
    DecryptionError,
    KeyRing,
    UnknownKeyError,
    column_context,
)
from zhifu.store.uow import run_in_transaction

CHUNK_ROWS_DEFAULT = 500
CHUNK_ROWS_MAX = 5000
PASSES_MAX = 16
COLUMNS_PER_TABLE_MAX = 32


class RotationError(RuntimeError):
    """Rotation cannot finish: a stored value does not decrypt with the ring (the
    message names table, column and row), an id is not a UUID, or rows are still
    written under an old key after ``PASSES_MAX`` passes."""


@dataclass(frozen=True)
class EncryptedColumns:
    """The encrypted columns of one table, and the columns rotation needs beside them.

    Raises ValueError if a named column is not in ``table``, ``columns`` is
    empty, longer than ``COLUMNS_PER_TABLE_MAX``, repeats a name or names the
    id or key-id column.
    """

    table: Table
    id_column: str
    key_id_column: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.table, Table):
            raise ValueError("an EncryptedColumns needs a sqlalchemy.Table")
        name = self.table.name
        if not isinstance(self.columns, tuple) or not self.columns:
            raise ValueError(f"{name}: columns must be a non-empty tuple of column names")
        if len(self.columns) > COLUMNS_PER_TABLE_MAX:
            raise ValueError(
                f"{name}: {len(self.columns)} encrypted columns; at most"
                f" {COLUMNS_PER_TABLE_MAX} are allowed"
            )
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"{name}: columns repeat a name")
        if {self.id_column, self.key_id_column} & set(self.columns):
            raise ValueError(f"{name}: the id and key-id columns cannot be encrypted columns")
        if self.id_column == self.key_id_column:
            raise ValueError(f"{name}: the id and key-id columns must differ")
        for column in (self.id_column, self.key_id_column, *self.columns):
            if column not in self.table.c:
                raise ValueError(f"{name} has no column {column!r}")


@dataclass(frozen=True)
class RotationReport:
    """What ``rotate`` did: rows rewritten per table, rows left under other keys per key id.

    ``remaining`` is counted after the last pass; it is empty unless a process
    wrote under an old key meanwhile.
    """

    active_key_id: str
    rows_rewritten: dict[str, int] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)

    @property
    def total_rewritten(self) -> int:
        return sum(self.rows_rewritten.values())

    @property
    def done(self) -> bool:
        """Whether no row is left under a key other than the active one."""
        return not self.remaining

    def as_dict(self) -> dict[str, object]:
        return {
            "active_key_id": self.active_key_id,
            "rows_rewritten": dict(self.rows_rewritten),
            "remaining": dict(self.remaining),
            "done": self.done,
        }


ENCRYPTED_COLUMNS: list[EncryptedColumns] = []


def register(spec: EncryptedColumns) -> EncryptedColumns:
    """Add ``spec`` to ``ENCRYPTED_COLUMNS`` (the same spec again is a no-op); returns it.

    Raises ValueError if another spec for the same table is registered.
    """
    if not isinstance(spec, EncryptedColumns):
        raise ValueError("register takes an EncryptedColumns")
    for known in ENCRYPTED_COLUMNS:
        if known.table.name == spec.table.name:
            if known == spec:
                return known
            raise ValueError(f"another spec for table {spec.table.name} is registered")
    ENCRYPTED_COLUMNS.append(spec)
    return spec


def key_usage(engine: Engine, specs: Sequence[EncryptedColumns]) -> dict[str, dict[str, int]]:
    """Rows per key id per table (rows whose key id is NULL hold no encrypted value).

    Raises ValueError if ``specs`` repeats a table.
    """
    _check_specs(specs)

    def work(connection: Connection) -> dict[str, dict[str, int]]:
        usage: dict[str, dict[str, int]] = {}
        for spec in specs:
            key_id = spec.table.c[spec.key_id_column]
            query = (
                select(key_id, func.count())
                .where(key_id.is_not(None))
                .group_by(key_id)
                .order_by(key_id)
            )
            usage[spec.table.name] = {str(k): int(n) for k, n in connection.execute(query)}
        return usage

    return run_in_transaction(engine, work, write=False)


def rows_under_other_keys(usage: dict[str, dict[str, int]], active_key_id: str) -> dict[str, int]:
    """Rows per key id, over every table, for the key ids other than ``active_key_id``."""
    remaining: dict[str, int] = {}
    for counts in usage.values():
        for key_id, count in counts.items():
            if key_id != active_key_id:
                remaining[key_id] = remaining.get(key_id, 0) + count
    return remaining


def rotate(
    engine: Engine,
    keyring: KeyRing,
    specs: Sequence[EncryptedColumns],
    *,
    chunk_rows: int = CHUNK_ROWS_DEFAULT,
    progress: Callable[[int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every row of ``specs`` under a key other than the ring's active one.

    Safe while the service runs (see the design note). ``progress`` gets the
    number of rows rewritten after each chunk.

    Raises:
        ValueError: ``chunk_rows`` is not 1 to ``CHUNK_ROWS_MAX``, or ``specs``
            repeats a table.
        RotationError: a value does not decrypt with ``keyring``, an id is not
            a UUID, or rows are still written under old keys after
            ``PASSES_MAX`` passes.
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int):
        raise ValueError("chunk_rows must be an int")
    if not 1 <= chunk_rows <= CHUNK_ROWS_MAX:
        raise ValueError(f"chunk_rows must be 1 to {CHUNK_ROWS_MAX}, got {chunk_rows}")
    _check_specs(specs)
    rewritten = {
        spec.table.name: _rotate_table(engine, keyring, spec, chunk_rows, progress)
        for spec in specs
    }
    remaining = rows_under_other_keys(key_usage(engine, specs), keyring.active_key_id)
    return RotationReport(keyring.active_key_id, rewritten, remaining)


def _check_specs(specs: Sequence[EncryptedColumns]) -> None:
    names = [spec.table.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError("specs repeat a table: give one EncryptedColumns per table")


def _rotate_table(
    engine: Engine,
    keyring: KeyRing,
    spec: EncryptedColumns,
    chunk_rows: int,
    progress: Callable[[int], None] | None,
) -> int:
    total = 0
    for _ in range(PASSES_MAX):
        found, rewritten = _one_pass(engine, keyring, spec, chunk_rows, progress)
        total += rewritten
        if found == 0:
            return total
    raise RotationError(
        f"{spec.table.name}: rows are still under old keys after {PASSES_MAX} passes; some"
        f" process still encrypts under an old key: restart every process with"
        f" {keyring.active_key_id!r} first in its key ring, then run the rotation again"
    )


def _one_pass(
    engine: Engine,
    keyring: KeyRing,
    spec: EncryptedColumns,
    chunk_rows: int,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """One walk over the table in id order: (rows found under old keys, rows rewritten)."""
    found = rewritten = 0
    active = keyring.active_key_id
    after: uuid.UUID | None = None
    while True:
        read = partial(_read_chunk, spec=spec, active_key_id=active, after=after, limit=chunk_rows)
        rows = run_in_transaction(engine, read, write=False)
        if not rows:
            return found, rewritten
        found += len(rows)
        changes = [_rewrapped(keyring, spec, row) for row in rows]
        write = partial(_write_chunk, spec=spec, active_key_id=active, changes=changes)
        done = run_in_transaction(engine, write, write=True)
        rewritten += done
        if progress is not None:
            progress(done)
        after = changes[-1].row_id
        if len(rows) < chunk_rows:
            return found, rewritten


def _read_chunk(
    connection: Connection,
    *,
    spec: EncryptedColumns,
    active_key_id: str,
    after: uuid.UUID | None,
    limit: int,
) -> list[tuple[Any, ...]]:
    table = spec.table
    id_column, key_id = table.c[spec.id_column], table.c[spec.key_id_column]
    # "< OR >" rather than "!=": a B-tree index on the key-id column serves it.
    query = (
        select(id_column, key_id, *(table.c[name] for name in spec.columns))
        .where(or_(key_id < active_key_id, key_id > active_key_id))
        .order_by(id_column)
        .limit(limit)
    )
    if after is not None:
        query = query.where(id_column > after)
    return [tuple(row) for row in connection.execute(query)]


@dataclass(frozen=True)
class _Change:
    row_id: uuid.UUID
    old_key_id: str
    old_values: dict[str, bytes | None]
    new_values: dict[str, bytes]


def _rewrapped(keyring: KeyRing, spec: EncryptedColumns, row: tuple[Any, ...]) -> _Change:
    row_id, old_key_id, *values = row
    if not isinstance(row_id, uuid.UUID):
        raise RotationError(f"{spec.table.name}.{spec.id_column} must hold UUIDs")
    old_values = dict(zip(spec.columns, values, strict=True))
    new_values: dict[str, bytes] = {}
    for name, token in old_values.items():
        if token is None:
            continue
        context = column_context(spec.table.name, name, row_id)
        try:
            new_values[name] = keyring.rewrap(bytes(token), context=context)
        except (DecryptionError, UnknownKeyError) as exc:
            raise RotationError(f"{spec.table.name}.{name} of row {row_id}: {exc}") from None
    return _Change(row_id, str(old_key_id), old_values, new_values)


def _write_chunk(
    connection: Connection, *, spec: EncryptedColumns, active_key_id: str, changes: list[_Change]
) -> int:
    """Compare-and-set each row; the number of rows that still matched what was read."""
    table = spec.table
    rewritten = 0
    for change in changes:
        unchanged = [_equals(table.c[name], value) for name, value in change.old_values.items()]
        statement = (
            update(table)
            .where(
                table.c[spec.id_column] == change.row_id,
                table.c[spec.key_id_column] == change.old_key_id,
                *unchanged,
            )
            .values({spec.key_id_column: active_key_id, **change.new_values})
        )
        rewritten += connection.execute(statement).rowcount
    return rewritten


def _equals(column: Column[Any], value: bytes | None) -> Any:
    return column.is_(None) if value is None else column == value

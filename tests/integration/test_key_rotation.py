"""Online re-encryption (``zhifu.security.rotation``) on SQLite and PostgreSQL.

A scratch table with its own MetaData stands in for the owners' tables: rows
under ``k1``, ``k2`` made active, ``rotate``, and every value reads the same
under ``k2`` alone. Also: concurrent writers (interleaved by hand, and a real
thread) lose no update, a writer stuck on the old key stops the rotation after
``PASSES_MAX`` passes, a value that does not decrypt stops it with a clear
error, the chunk limit, and ``zhifu keys rotate``/``status`` end to end.
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)

from zhifu import cli
from zhifu.cli import main
from zhifu.ids import uuid7
from zhifu.security import rotation
from zhifu.security.envelope import KeyRing, column_context
from zhifu.security.rotation import (
    CHUNK_ROWS_MAX,
    PASSES_MAX,
    EncryptedColumns,
    RotationError,
    key_usage,
    rotate,
)
from zhifu.store.engine import create_db_engine
from zhifu.store.types import Id128
from zhifu.store.uow import run_in_transaction

INDEX_KEY = bytes(range(32))
K1_KEY = bytes(range(32, 64))
K2_KEY = bytes(range(64, 96))
K9_KEY = bytes(range(96, 128))

RING_K1 = KeyRing([("index", INDEX_KEY), ("k1", K1_KEY)])
RING_K2 = KeyRing([("index", INDEX_KEY), ("k2", K2_KEY), ("k1", K1_KEY)])
RING_K2_ONLY = KeyRing([("index", INDEX_KEY), ("k2", K2_KEY)])
RING_K9 = KeyRing([("k9", K9_KEY)])

metadata = MetaData()
people = Table(
    "rotation_people",
    metadata,
    Column("id", Id128, primary_key=True),
    Column("pii_key_id", String(32), nullable=True, index=True),
    Column("name_enc", LargeBinary, nullable=True),
    Column("note_enc", LargeBinary, nullable=True),
    Column("plain", String(64), nullable=False),
)
notes = Table(
    "rotation_notes",
    metadata,
    Column("note_id", Id128, primary_key=True),
    Column("key_id", String(32), nullable=False, index=True),
    Column("body_enc", LargeBinary, nullable=False),
)
PEOPLE = EncryptedColumns(people, "id", "pii_key_id", ("name_enc", "note_enc"))
NOTES = EncryptedColumns(notes, "note_id", "key_id", ("body_enc",))

Values = dict[str, str | None]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on each database in turn, with the scratch tables."""
    engine = create_db_engine(db_url, pool_size=4)
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _tokens(ring: KeyRing, table: Table, row_id: uuid.UUID, values: Values) -> dict[str, Any]:
    return {
        column: None
        if value is None
        else ring.encrypt_text(value, context=column_context(table.name, column, row_id))
        for column, value in values.items()
    }


def add_person(
    connection: Connection, ring: KeyRing, name: str | None, note: str | None
) -> uuid.UUID:
    row_id = uuid7()
    tokens = _tokens(ring, people, row_id, {"name_enc": name, "note_enc": note})
    key_id = None if name is None and note is None else ring.active_key_id
    connection.execute(
        insert(people).values(id=row_id, pii_key_id=key_id, plain=f"plain-{name}", **tokens)
    )
    return row_id


def set_person(engine: Engine, ring: KeyRing, row_id: uuid.UUID, name: str, note: str) -> None:
    """What an owner does: write every encrypted column and the key id together."""
    tokens = _tokens(ring, people, row_id, {"name_enc": name, "note_enc": note})

    def work(connection: Connection) -> None:
        connection.execute(
            update(people)
            .where(people.c.id == row_id)
            .values(pii_key_id=ring.active_key_id, **tokens)
        )

    run_in_transaction(engine, work)


def fill_people(engine: Engine, ring: KeyRing, count: int) -> dict[uuid.UUID, Values]:
    """``count`` rows; every seventh has no note (a NULL column)."""
    expected: dict[uuid.UUID, Values] = {}

    def work(connection: Connection) -> None:
        for n in range(count):
            values: Values = {"name_enc": f"name {n}", "note_enc": None if n % 7 == 0 else f"{n}"}
            row_id = add_person(connection, ring, values["name_enc"], values["note_enc"])
            expected[row_id] = values

    run_in_transaction(engine, work)
    return expected


def read_people(engine: Engine, ring: KeyRing) -> dict[uuid.UUID, tuple[str | None, Values]]:
    """Every row: its key id and decrypted values (checking each token's own key id)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(people.c.id, people.c.pii_key_id, people.c.name_enc, people.c.note_enc)
        ).all()
    result: dict[uuid.UUID, tuple[str | None, Values]] = {}
    for row_id, key_id, *tokens in rows:
        values: Values = {}
        for column, token in zip(("name_enc", "note_enc"), tokens, strict=True):
            if token is None:
                values[column] = None
                continue
            assert ring.key_id_of(bytes(token)) == key_id
            context = column_context(people.name, column, row_id)
            values[column] = ring.decrypt_text(bytes(token), context=context)
        result[row_id] = (key_id, values)
    return result


# --- the whole procedure ------------------------------------------------------------------


def test_rotation_moves_every_row_to_the_active_key(engine: Engine) -> None:
    expected = fill_people(engine, RING_K1, 250)

    def more(connection: Connection) -> list[uuid.UUID]:
        empty = add_person(connection, RING_K1, None, None)  # no encrypted value, no key id
        for n in range(30):
            connection.execute(
                insert(notes).values(
                    note_id=(note_id := uuid7()),
                    key_id="k1",
                    body_enc=RING_K1.encrypt_text(
                        f"body {n}", context=column_context(notes.name, "body_enc", note_id)
                    ),
                )
            )
        return [empty]

    (empty,) = run_in_transaction(engine, more)
    already_k2 = fill_people(engine, RING_K2, 5)
    with engine.connect() as connection:
        k2_tokens_before = {
            row.id: (row.name_enc, row.note_enc)
            for row in connection.execute(select(people).where(people.c.pii_key_id == "k2"))
        }
    assert key_usage(engine, [PEOPLE, NOTES]) == {
        "rotation_people": {"k1": 250, "k2": 5},
        "rotation_notes": {"k1": 30},
    }

    progress: list[int] = []
    report = rotate(engine, RING_K2, [PEOPLE, NOTES], chunk_rows=40, progress=progress.append)

    assert report.active_key_id == "k2"
    assert report.rows_rewritten == {"rotation_people": 250, "rotation_notes": 30}
    assert report.remaining == {}
    assert report.done
    assert report.total_rewritten == sum(progress) == 280
    assert progress[:7] == [40] * 6 + [10]  # 250 rows in chunks of 40
    assert key_usage(engine, [PEOPLE, NOTES]) == {
        "rotation_people": {"k2": 255},
        "rotation_notes": {"k2": 30},
    }

    # The old key can go: everything reads with k2 alone, to the same plaintext.
    stored = read_people(engine, RING_K2_ONLY)
    assert stored.pop(empty) == (None, {"name_enc": None, "note_enc": None})
    assert stored == {row_id: ("k2", values) for row_id, values in (expected | already_k2).items()}
    with engine.connect() as connection:
        for row in connection.execute(select(notes)):
            context = column_context(notes.name, "body_enc", row.note_id)
            assert RING_K2_ONLY.decrypt_text(row.body_enc, context=context).startswith("body ")
        plain = connection.execute(select(people.c.plain).where(people.c.id == empty)).scalar()
        assert plain == "plain-None"  # columns rotation does not own are left alone
        # Rows already under k2 were not touched.
        for row_id, tokens in k2_tokens_before.items():
            row = connection.execute(select(people).where(people.c.id == row_id)).one()
            assert (row.name_enc, row.note_enc) == tokens

    again = rotate(engine, RING_K2, [PEOPLE, NOTES])
    assert again.rows_rewritten == {"rotation_people": 0, "rotation_notes": 0}
    assert again.done


@pytest.mark.parametrize("rows", [0, 9, 10, 11, 20])
def test_chunk_boundaries(engine: Engine, rows: int) -> None:
    expected = fill_people(engine, RING_K1, rows)
    report = rotate(engine, RING_K2, [PEOPLE], chunk_rows=10)
    assert report.rows_rewritten == {"rotation_people": rows}
    assert read_people(engine, RING_K2_ONLY) == {k: ("k2", v) for k, v in expected.items()}


# --- limits and bad input -----------------------------------------------------------------


def test_chunk_rows_limit(engine: Engine) -> None:
    expected = fill_people(engine, RING_K1, 12)
    for bad in (CHUNK_ROWS_MAX + 1, 0, -1, True, 1.5):
        with pytest.raises(ValueError, match="chunk_rows"):
            rotate(engine, RING_K2, [PEOPLE], chunk_rows=bad)  # type: ignore[arg-type]
    assert key_usage(engine, [PEOPLE]) == {"rotation_people": {"k1": 12}}  # nothing changed

    report = rotate(engine, RING_K2, [PEOPLE], chunk_rows=CHUNK_ROWS_MAX)
    assert report.rows_rewritten == {"rotation_people": 12}
    assert read_people(engine, RING_K2_ONLY) == {k: ("k2", v) for k, v in expected.items()}


def test_specs_that_repeat_a_table_are_refused(engine: Engine) -> None:
    twice = EncryptedColumns(people, "id", "pii_key_id", ("name_enc",))
    with pytest.raises(ValueError, match="repeat a table"):
        rotate(engine, RING_K2, [PEOPLE, twice])
    with pytest.raises(ValueError, match="repeat a table"):
        key_usage(engine, [PEOPLE, twice])


@pytest.mark.parametrize(
    ("id_column", "key_id_column", "columns", "message"),
    [
        ("id", "pii_key_id", (), "non-empty"),
        ("id", "pii_key_id", ["name_enc"], "non-empty tuple"),
        ("id", "pii_key_id", ("name_enc", "name_enc"), "repeat"),
        ("id", "pii_key_id", ("missing",), "no column 'missing'"),
        ("missing", "pii_key_id", ("name_enc",), "no column 'missing'"),
        ("id", "pii_key_id", ("pii_key_id",), "cannot be encrypted"),
        ("id", "id", ("name_enc",), "must differ"),
        ("id", "pii_key_id", ("name_enc",) * (rotation.COLUMNS_PER_TABLE_MAX + 1), "at most"),
    ],
)
def test_malformed_spec(id_column: str, key_id_column: str, columns: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EncryptedColumns(people, id_column, key_id_column, columns)


def test_register(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rotation, "ENCRYPTED_COLUMNS", [])
    assert rotation.register(PEOPLE) is PEOPLE
    same = EncryptedColumns(people, "id", "pii_key_id", ("name_enc", "note_enc"))
    assert rotation.register(same) is PEOPLE  # imported twice: one entry
    rotation.register(NOTES)
    assert rotation.ENCRYPTED_COLUMNS == [PEOPLE, NOTES]
    with pytest.raises(ValueError, match="another spec for table rotation_people"):
        rotation.register(EncryptedColumns(people, "id", "pii_key_id", ("name_enc",)))
    with pytest.raises(ValueError, match="EncryptedColumns"):
        rotation.register("rotation_people")  # type: ignore[arg-type]


# --- failures -----------------------------------------------------------------------------


def test_a_value_that_does_not_decrypt_stops_the_rotation(engine: Engine) -> None:
    fill_people(engine, RING_K1, 5)
    lost = run_in_transaction(engine, lambda c: add_person(c, RING_K9, "lost", "key"))
    with pytest.raises(RotationError, match=f"rotation_people.name_enc of row {lost}: .*'k9'"):
        rotate(engine, RING_K2, [PEOPLE], chunk_rows=1)
    # Rows before it in id order were done; running again after restoring k9 finishes.
    assert key_usage(engine, [PEOPLE]) == {"rotation_people": {"k2": 5, "k9": 1}}
    with_k9 = KeyRing([("index", INDEX_KEY), ("k2", K2_KEY), ("k9", K9_KEY)])
    assert rotate(engine, with_k9, [PEOPLE]).rows_rewritten == {"rotation_people": 1}
    assert read_people(engine, RING_K2_ONLY)[lost] == (
        "k2",
        {"name_enc": "lost", "note_enc": "key"},
    )


def test_a_token_moved_to_another_row_stops_the_rotation(engine: Engine) -> None:
    first, second = fill_people(engine, RING_K1, 2)

    def swap(connection: Connection) -> None:
        token = connection.execute(select(people.c.name_enc).where(people.c.id == first))
        connection.execute(
            update(people).where(people.c.id == second).values(name_enc=token.scalar_one())
        )

    run_in_transaction(engine, swap)
    with pytest.raises(RotationError, match=f"name_enc of row {second}: cannot decrypt"):
        rotate(engine, RING_K2, [PEOPLE])


def test_a_writer_still_on_the_old_key_stops_the_rotation(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    (stuck,) = fill_people(engine, RING_K1, 1)
    real_write = rotation._write_chunk
    writes = 0

    def write_then_old_process_writes(connection: Connection, **kwargs: Any) -> int:
        nonlocal writes
        writes += 1
        done = real_write(connection, **kwargs)
        # A process that was not restarted writes the row under k1 again.
        tokens = _tokens(RING_K1, people, stuck, {"name_enc": "again", "note_enc": None})
        connection.execute(
            update(people).where(people.c.id == stuck).values(pii_key_id="k1", **tokens)
        )
        return done

    monkeypatch.setattr(rotation, "_write_chunk", write_then_old_process_writes)
    with pytest.raises(RotationError, match=f"after {PASSES_MAX} passes.*restart every process"):
        rotate(engine, RING_K2, [PEOPLE])
    assert writes == PASSES_MAX


# --- concurrent writers -------------------------------------------------------------------


def test_updates_between_read_and_write_are_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row changed after rotation read it is not overwritten; it is rotated if needed."""
    expected = fill_people(engine, RING_K1, 30)
    ids = sorted(expected, key=lambda row_id: row_id.bytes)
    by_new_process, by_old_process = ids[3], ids[17]
    real_rewrapped = rotation._rewrapped
    interfered: set[uuid.UUID] = set()

    def rewrap_while_others_write(keyring: KeyRing, spec: EncryptedColumns, row: Any) -> Any:
        change = real_rewrapped(keyring, spec, row)
        if change.row_id in (by_new_process, by_old_process) and change.row_id not in interfered:
            interfered.add(change.row_id)
            ring = RING_K2 if change.row_id == by_new_process else RING_K1
            set_person(engine, ring, change.row_id, f"new {change.row_id}", "changed")
        return change

    monkeypatch.setattr(rotation, "_rewrapped", rewrap_while_others_write)
    report = rotate(engine, RING_K2, [PEOPLE], chunk_rows=10)

    assert interfered == {by_new_process, by_old_process}
    # The k2 writer's row needed nothing more; the k1 writer's row went round again.
    assert report.rows_rewritten == {"rotation_people": 29}
    assert report.done
    expected[by_new_process] = {"name_enc": f"new {by_new_process}", "note_enc": "changed"}
    expected[by_old_process] = {"name_enc": f"new {by_old_process}", "note_enc": "changed"}
    assert read_people(engine, RING_K2_ONLY) == {k: ("k2", v) for k, v in expected.items()}


@pytest.mark.slow
def test_rotation_with_a_concurrent_writer_thread_loses_no_update(engine: Engine) -> None:
    expected = fill_people(engine, RING_K1, 400)
    ids = list(expected)
    stop = threading.Event()
    first_write = threading.Event()
    failures: list[BaseException] = []
    writes = 0

    def writer() -> None:
        nonlocal writes
        chooser = random.Random(7)
        try:
            while not stop.is_set():
                row_id = chooser.choice(ids)
                name, note = f"w{writes}", os.urandom(4).hex()
                set_person(engine, RING_K2, row_id, name, note)
                expected[row_id] = {"name_enc": name, "note_enc": note}  # committed: the value
                writes += 1
                first_write.set()
        except BaseException as exc:  # noqa: BLE001 - the test asserts there is none
            failures.append(exc)
            first_write.set()

    thread = threading.Thread(target=writer, name="rotation-writer")
    thread.start()
    try:
        assert first_write.wait(30)
        writes_before = writes
        report = rotate(engine, RING_K2, [PEOPLE], chunk_rows=20)
        writes_during = writes - writes_before
    finally:
        stop.set()
        thread.join(30)
    assert not failures, failures
    assert writes_during > 0
    assert report.done
    assert 0 < report.rows_rewritten["rotation_people"] <= 400
    assert read_people(engine, RING_K2_ONLY) == {k: ("k2", v) for k, v in expected.items()}


# --- the CLI ------------------------------------------------------------------------------


def test_keys_cli_status_and_rotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the scratch table: the real owners' tables are theirs to test.
    monkeypatch.setattr(cli, "ENCRYPTED_COLUMN_OWNERS", ())
    monkeypatch.setattr(rotation, "ENCRYPTED_COLUMNS", [])
    rotation.register(PEOPLE)
    home = tmp_path / "home"
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    env = unset | {"ZHIFU_HOME": str(home), "ZHIFU_LOG_FORMAT": "json"}

    def run(ring_spec: str, *args: str) -> Any:
        result = CliRunner().invoke(main, list(args), env=env | {"ZHIFU_MASTER_KEYS": ring_spec})
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    def spec(*pairs: tuple[str, bytes]) -> str:
        import base64

        return ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in pairs)

    k1_spec = spec(("index", INDEX_KEY), ("k1", K1_KEY))
    k2_spec = spec(("index", INDEX_KEY), ("k2", K2_KEY), ("k1", K1_KEY))
    run(k1_spec, "db", "upgrade")
    engine = create_db_engine(f"sqlite:///{home / 'zhifu.db'}")
    try:
        metadata.create_all(engine)
        expected = fill_people(engine, RING_K1, 12)

        status = json.loads(run(k2_spec, "keys", "status", "--json").stdout)
        assert status == {
            "active_key_id": "k2",
            "key_ids": ["index", "k2", "k1"],
            "usage": {"rotation_people": {"k1": 12}},
            "rows_under_old_keys": 12,
            "missing_key_ids": [],
        }
        text = run(k2_spec, "keys", "status").stdout
        assert "rotation_people: k1: 12" in text
        assert "rows under older keys: 12: run 'zhifu keys rotate'" in text

        rotated = run(k2_spec, "keys", "rotate", "--chunk-rows", "5").stdout
        assert "rotation_people: 12 rows re-encrypted" in rotated
        assert "no row is left under an older key" in rotated
        only_k2 = spec(("index", INDEX_KEY), ("k2", K2_KEY))
        status = json.loads(run(only_k2, "keys", "status", "--json").stdout)
        assert status["usage"] == {"rotation_people": {"k2": 12}}
        assert status["rows_under_old_keys"] == 0
        assert read_people(engine, RING_K2_ONLY) == {k: ("k2", v) for k, v in expected.items()}

        # A key id in use that the ring lacks is flagged.
        missing = json.loads(run(spec(("k3", K1_KEY)), "keys", "status", "--json").stdout)
        assert missing["missing_key_ids"] == ["k2"]
        assert "k2: 12 (NOT IN THE RING)" in run(spec(("k3", K1_KEY)), "keys", "status").stdout
        failed = CliRunner().invoke(
            main, ["keys", "rotate"], env=env | {"ZHIFU_MASTER_KEYS": spec(("k3", K1_KEY))}
        )
        assert failed.exit_code == 1
        assert "Error: rotation_people.name_enc of row" in failed.output
        assert "Traceback" not in failed.output
    finally:
        engine.dispose()

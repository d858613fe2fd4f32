"""The security audit trail (``zhifu.ops.audit``) on SQLite and PostgreSQL.

Appending and listing, atomicity with the caller's own work, concurrent
appends from threads and OS processes, every limit, secret redaction, and
``verify`` catching rows changed behind the trail's back (the tests drop the
immutability trigger first, as an attacker with database access would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from zhifu.cli import main
from zhifu.config import load_settings
from zhifu.ops import audit
from zhifu.ops.audit import (
    ACTION_CHARS_MAX,
    ACTOR_CHARS_MAX,
    DETAILS_BYTES_MAX,
    GENESIS_PREV_HASH,
    LIST_LIMIT_MAX,
    REQUEST_ID_CHARS_MAX,
    SOURCE_CHARS_MAX,
    TARGET_CHARS_MAX,
    AuditError,
    AuditEvent,
    AuditReport,
    AuditTamperedError,
    AuditTrail,
    checkpoint_message,
    event_hash,
    record,
)
from zhifu.ops.logging import REDACTED
from zhifu.runtime import build_runtime
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import audit_checkpoints, audit_events, audit_head, ledger_meta
from zhifu.store.uow import run_in_transaction

STAFF = "staff:0190f3a4-5b6c-7d8e-9f00-112233445566"
THREADS = 6
EVENTS_PER_THREAD = 25
PROCESSES = 3
EVENTS_PER_PROCESS = 40
PROCESS_TIMEOUT_S = 120
BARRIER_TIMEOUT_S = 30


def event(**fields: Any) -> AuditEvent:
    values: dict[str, Any] = {"actor": STAFF, "action": "ledger.account.close"}
    values.update(fields)
    return AuditEvent(**values)


def trusted(*signers: Ed25519Signer) -> dict[str, bytes]:
    return {s.key_id: s.public_key_bytes for s in signers}


@pytest.fixture
def trail(engine: Engine, signer: Ed25519Signer) -> AuditTrail:
    return AuditTrail(engine, signer)


def append(trail: AuditTrail, count: int, **fields: Any) -> list[audit.AuditRecord]:
    return [trail.record_now(event(details={"n": i}, **fields)) for i in range(count)]


def problems_of(report: AuditReport, name: str) -> str:
    (check,) = [c for c in report.checks if c.name == name]
    assert not check.ok, f"{name} passed: {report.as_dict()}"
    assert check.problem_count == len(check.problems) >= 1
    return "\n".join(check.problems)


def failed(report: AuditReport) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def allow_changes(engine: Engine, table: str) -> None:
    """Drop the trigger that makes ``table``'s rows immutable."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"DROP TRIGGER {table}_immutable ON {table}"))
        else:
            connection.execute(text(f"DROP TRIGGER {table}_no_update"))
            connection.execute(text(f"DROP TRIGGER {table}_no_delete"))


def allow_head_changes(engine: Engine) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("DROP TRIGGER audit_head_forward_only ON audit_head"))
        else:
            connection.execute(text("DROP TRIGGER audit_head_forward_only"))
            connection.execute(text("DROP TRIGGER audit_head_no_delete"))


def stored_seqs(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        rows = connection.execute(select(audit_events.c.seq).order_by(audit_events.c.seq))
        return [int(row[0]) for row in rows]


def head_row(engine: Engine) -> tuple[int, bytes]:
    with engine.connect() as connection:
        row = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    return int(row.seq), bytes(row.hash)


# --- appending and listing ---------------------------------------------------------------


def test_append_and_list(trail: AuditTrail, signer: Ed25519Signer) -> None:
    first = trail.record_now(
        event(
            target="ledger-account:42",
            request_id="req-1",
            source="203.0.113.7",
            details={"reason": "customer request", "amount_minor": 0},
        )
    )
    second = trail.record_now(event(actor="system", action="identity.login", outcome="denied"))
    third = trail.record_now(event(actor="service", action="ledger.transfer.reverse"))

    assert [r.seq for r in (first, second, third)] == [1, 2, 3]
    assert first.prev_hash == GENESIS_PREV_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert first.hash == event_hash(GENESIS_PREV_HASH, 1, first)

    listed = trail.list(10)
    assert [r.seq for r in listed] == [3, 2, 1]  # newest first
    assert listed[2] == first  # every field round-trips
    assert listed[2].details == {"reason": "customer request", "amount_minor": 0}
    assert (listed[2].target, listed[2].request_id, listed[2].source) == (
        "ledger-account:42",
        "req-1",
        "203.0.113.7",
    )
    assert listed[1].outcome == "denied"
    assert [r.seq for r in trail.list(2)] == [3, 2]
    assert [r.seq for r in trail.list(10, before_seq=3)] == [2, 1]
    assert [r.seq for r in trail.list(1, before_seq=2)] == [1]
    assert [r.seq for r in trail.list(10, action_prefix="ledger.")] == [3, 1]
    assert [r.seq for r in trail.list(10, action_prefix="identity.login")] == [2]
    assert trail.list(10, action_prefix="payments.") == []

    assert first.as_dict()["hash"] == first.hash.hex()
    report = trail.verify(trusted(signer))
    assert report.ok, report.as_dict()
    assert (report.events, report.head_seq, report.checkpoints) == (3, 3, 0)
    assert [c.name for c in report.checks] == ["chain", "head", "checkpoints"]


def test_empty_trail_verifies_and_needs_no_checkpoint(
    trail: AuditTrail, signer: Ed25519Signer
) -> None:
    report = trail.verify(trusted(signer))
    assert report.ok
    assert (report.events, report.head_seq, report.checkpoints) == (0, 0, 0)
    assert trail.checkpoint() is None
    assert trail.list(LIST_LIMIT_MAX) == []


def test_action_prefix_is_a_plain_prefix_with_wildcards_escaped(trail: AuditTrail) -> None:
    trail.record_now(event(action="test.a_b"))
    trail.record_now(event(action="test.axb"))
    trail.record_now(event(action="test.acd"))
    assert [r.action for r in trail.list(10, action_prefix="test.a_")] == ["test.a_b"]
    assert len(trail.list(10, action_prefix="test.")) == 3
    assert len(trail.list(10, action_prefix="test.a")) == 3


def test_checkpoint_is_signed_and_idempotent_per_head(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer
) -> None:
    append(trail, 3)
    checkpoint = trail.checkpoint()
    assert checkpoint is not None
    assert (checkpoint.seq, checkpoint.key_id) == (3, signer.key_id)
    assert checkpoint.hash == head_row(engine)[1]
    assert audit.verify_checkpoint_signature(checkpoint, signer.public_key_bytes)
    assert trail.checkpoint() == checkpoint  # same head: the same checkpoint
    append(trail, 2)
    later = trail.checkpoint()
    assert later is not None and later.seq == 5
    report = trail.verify(trusted(signer))
    assert report.ok, report.as_dict()
    assert report.checkpoints == 2


# --- atomicity with the caller's work ----------------------------------------------------


def _meta_and_audit(name: str, fail: bool) -> Any:
    def work(connection: Connection) -> audit.AuditRecord:
        connection.execute(insert(ledger_meta).values(name=name, value=1))
        recorded = record(connection, event(action="test.meta.create", target=name))
        if fail:
            raise RuntimeError("the action failed after its audit event was written")
        return recorded

    return work


def meta_names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(select(ledger_meta.c.name))}


def test_an_action_and_its_audit_event_roll_back_together(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer
) -> None:
    with pytest.raises(RuntimeError, match="action failed"):
        run_in_transaction(engine, _meta_and_audit("audit-rollback", fail=True))
    assert "audit-rollback" not in meta_names(engine)
    assert stored_seqs(engine) == []
    assert head_row(engine) == (0, GENESIS_PREV_HASH)

    recorded = run_in_transaction(engine, _meta_and_audit("audit-commit", fail=False))
    assert recorded.seq == 1  # the rolled-back event left no gap
    assert "audit-commit" in meta_names(engine)
    assert stored_seqs(engine) == [1]
    assert trail.verify(trusted(signer)).ok


def test_many_events_in_one_transaction_and_the_list_limit(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer
) -> None:
    count = LIST_LIMIT_MAX + 1
    records = run_in_transaction(
        engine, lambda c: [record(c, event(details={"n": i})) for i in range(count)]
    )
    assert [r.seq for r in records] == list(range(1, count + 1))
    newest = trail.list(LIST_LIMIT_MAX)
    assert [r.seq for r in newest] == list(range(count, 1, -1))
    with pytest.raises(AuditError, match=f"limit must be 1 to {LIST_LIMIT_MAX}, got {count}"):
        trail.list(LIST_LIMIT_MAX + 1)
    seen: list[int] = []
    report = trail.verify(trusted(signer), seen.append)
    assert report.ok
    assert sum(seen) == count == report.events


def test_verify_streams_in_chunks_with_checkpoints_across_them(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "VERIFY_CHUNK_EVENTS", 7)
    for _ in range(4):
        append(trail, 9)
        assert trail.checkpoint() is not None
    seen: list[int] = []
    report = trail.verify(trusted(signer), seen.append)
    assert report.ok, report.as_dict()
    assert (report.events, report.checkpoints) == (36, 4)
    assert max(seen) == 7 and sum(seen) == 36

    allow_changes(engine, "audit_events")
    with engine.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 15).values(ts=1))
        connection.execute(delete(audit_events).where(audit_events.c.seq == 18))
    report = trail.verify(trusted(signer))
    chain = problems_of(report, "chain")
    assert "event 15: hash does not match its content" in chain
    assert "event 19: event 18 is missing before it" in chain
    assert "checkpoint at event 18: there is no event 18" in problems_of(report, "checkpoints")


# --- concurrency -----------------------------------------------------------------------


def check_one_gapless_chain(engine: Engine, trail: AuditTrail, signer: Ed25519Signer) -> None:
    report = trail.verify(trusted(signer))
    assert report.ok, report.as_dict()
    assert stored_seqs(engine) == list(range(1, report.events + 1))
    assert head_row(engine)[0] == report.events


def test_concurrent_appends_from_threads_make_one_chain(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer
) -> None:
    start = threading.Barrier(THREADS, timeout=BARRIER_TIMEOUT_S)
    stop = threading.Event()

    def writer(index: int) -> list[audit.AuditRecord]:
        start.wait()
        return [
            trail.record_now(event(actor=f"system:{index}", details={"i": i}))
            for i in range(EVENTS_PER_THREAD)
        ]

    def checkpointer() -> int:
        start.wait()
        made = 0
        while not stop.is_set():
            made += trail.checkpoint() is not None
            time.sleep(0.005)
        return made

    with ThreadPoolExecutor(THREADS) as pool:
        writers = [pool.submit(writer, i) for i in range(THREADS - 1)]
        checkpoints = pool.submit(checkpointer)
        try:
            recorded = [r for future in writers for r in future.result()]
        finally:
            stop.set()
        checkpoints.result()  # made while the writers ran, or raised
    assert trail.checkpoint() is not None

    total = (THREADS - 1) * EVENTS_PER_THREAD
    assert sorted(r.seq for r in recorded) == list(range(1, total + 1))
    check_one_gapless_chain(engine, trail, signer)
    # Each writer's events are in its own order within the one chain.
    for index in range(THREADS - 1):
        mine = [r for r in trail.list(LIST_LIMIT_MAX) if r.actor == f"system:{index}"]
        assert [r.details["i"] for r in reversed(mine)] == list(range(EVENTS_PER_THREAD))


CHILD = """
import pathlib, sys, time
from zhifu.ops.audit import AuditEvent, AuditTrail
from zhifu.security.signing import Ed25519Signer
from zhifu.store.engine import create_db_engine

url, count, go, name = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
trail = AuditTrail(create_db_engine(url, pool_size=1), Ed25519Signer.generate())
print("ready", flush=True)
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        raise TimeoutError("the test never said go")
    time.sleep(0.001)
for i in range(count):
    trail.record_now(AuditEvent(f"system:{name}", "test.process.append", details={"i": i}))
"""


@pytest.mark.slow
def test_concurrent_appends_from_processes_make_one_chain(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, tmp_path: Path
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(EVENTS_PER_PROCESS), str(go), f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for i in range(PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.strip() == "ready", (line, child.stderr.read() if child.stderr else "")
        go.touch()
        for child in children:
            _, stderr = child.communicate(timeout=PROCESS_TIMEOUT_S)
            assert child.returncode == 0, stderr
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()

    check_one_gapless_chain(engine, trail, signer)
    listed = trail.list(LIST_LIMIT_MAX, action_prefix="test.process.")
    assert len(listed) == PROCESSES * EVENTS_PER_PROCESS
    for i in range(PROCESSES):
        mine = [r.details["i"] for r in reversed(listed) if r.actor == f"system:p{i}"]
        assert mine == list(range(EVENTS_PER_PROCESS))


# --- tampering -------------------------------------------------------------------------


@pytest.fixture
def five(trail: AuditTrail) -> list[audit.AuditRecord]:
    """Five events, the first three under a signed checkpoint."""
    records = append(trail, 3)
    assert trail.checkpoint() is not None
    return records + append(trail, 2)


def test_database_refuses_changes_to_events_and_checkpoints(
    engine: Engine, five: list[audit.AuditRecord]
) -> None:
    statements = [
        update(audit_events).values(actor="staff:someone-else"),
        delete(audit_events).where(audit_events.c.seq == 5),
        update(audit_checkpoints).values(ts=0),
        delete(audit_checkpoints),
    ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="immutable"), engine.begin() as connection:
            connection.execute(statement)
    if engine.dialect.name == "postgresql":
        for table in ("audit_events", "audit_checkpoints"):
            with pytest.raises(DBAPIError, match="immutable"), engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {table}"))
    # The head moves forward one event at a time, and stays.
    for statement in [
        update(audit_head).values(seq=3),
        update(audit_head).values(seq=7),
        delete(audit_head),
    ]:
        with pytest.raises(DBAPIError, match="moves forward"), engine.begin() as connection:
            connection.execute(statement)
    assert stored_seqs(engine) == [1, 2, 3, 4, 5]


def test_verify_catches_an_edited_event(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    allow_changes(engine, "audit_events")
    with engine.begin() as connection:
        connection.execute(
            update(audit_events).where(audit_events.c.seq == 2).values(outcome="denied")
        )
    report = trail.verify(trusted(signer))
    assert not report.ok
    assert failed(report) == {"chain"}
    assert problems_of(report, "chain") == "event 2: hash does not match its content"


def test_verify_catches_an_edited_event_whose_hash_was_recomputed(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    allow_changes(engine, "audit_events")
    edited = five[3]  # event 4, after the checkpoint
    forged = audit.AuditRecord(**{**_fields(edited), "actor": "system"})
    with engine.begin() as connection:
        connection.execute(
            update(audit_events)
            .where(audit_events.c.seq == 4)
            .values(actor="system", hash=event_hash(edited.prev_hash, 4, forged))
        )
    report = trail.verify(trusted(signer))
    assert problems_of(report, "chain") == "event 5: prev_hash is not the hash of event 4"


def _fields(rec: audit.AuditRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in audit.AuditRecord.__dataclass_fields__}


def test_verify_catches_a_deleted_event(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    allow_changes(engine, "audit_events")
    with engine.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.seq == 3))
    report = trail.verify(trusted(signer))
    chain = problems_of(report, "chain")
    assert "event 4: event 3 is missing before it" in chain
    assert "event 4: prev_hash is not the hash of event 2" in chain
    assert "checkpoint at event 3: there is no event 3" in problems_of(report, "checkpoints")
    assert failed(report) == {"chain", "checkpoints"}


def test_verify_catches_a_deleted_last_event(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    allow_changes(engine, "audit_events")
    with engine.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.seq == 5))
    report = trail.verify(trusted(signer))
    assert failed(report) == {"head"}
    assert problems_of(report, "head") == "audit_head is at event 5 but the last event is 4"


def test_verify_catches_a_changed_or_missing_head(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    allow_head_changes(engine)
    with engine.begin() as connection:
        connection.execute(update(audit_head).values(hash=five[3].hash))
    report = trail.verify(trusted(signer))
    assert failed(report) == {"head"}
    assert problems_of(report, "head") == "audit_head's hash is not the hash of event 5"

    with engine.begin() as connection:
        connection.execute(delete(audit_head))
    report = trail.verify(trusted(signer))
    assert problems_of(report, "head") == "the audit_head row is missing"
    with pytest.raises(AuditTamperedError, match="the audit_head row is missing"):
        trail.record_now(event())
    with pytest.raises(AuditTamperedError, match="the audit_head row is missing"):
        trail.checkpoint()
    assert stored_seqs(engine) == [1, 2, 3, 4, 5]


def test_a_checkpoint_catches_a_tail_cut_off_with_the_head_rewound(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer
) -> None:
    records = append(trail, 5)
    assert trail.checkpoint() is not None
    allow_changes(engine, "audit_events")
    allow_head_changes(engine)
    with engine.begin() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.seq > 3))
        connection.execute(update(audit_head).values(seq=3, hash=records[2].hash))
    report = trail.verify(trusted(signer))
    # The chain and its head agree: only the signed checkpoint knows better.
    assert failed(report) == {"checkpoints"}
    assert problems_of(report, "checkpoints") == (
        "checkpoint at event 5: there is no event 5 (the trail was cut short?)"
    )


def test_verify_catches_a_forged_checkpoint_signature(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    allow_changes(engine, "audit_checkpoints")
    with engine.begin() as connection:
        connection.execute(update(audit_checkpoints).values(signature=bytes(64)))
        # A new checkpoint row needs no trigger dropped, but a signature is out of reach.
        connection.execute(
            insert(audit_checkpoints).values(
                seq=5, hash=five[4].hash, signature=os.urandom(64), key_id=signer.key_id, ts=1
            )
        )
    report = trail.verify(trusted(signer))
    assert failed(report) == {"checkpoints"}
    problems = problems_of(report, "checkpoints")
    assert f"checkpoint at event 3: signature does not verify with key {signer.key_id}" in problems
    assert f"checkpoint at event 5: signature does not verify with key {signer.key_id}" in problems


def test_verify_catches_a_signed_checkpoint_of_another_hash(
    trail: AuditTrail, engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    wrong = bytes(range(32))
    with engine.begin() as connection:
        connection.execute(
            insert(audit_checkpoints).values(
                seq=4,
                hash=wrong,
                signature=signer.sign(checkpoint_message(4, wrong)),
                key_id=signer.key_id,
                ts=1,
            )
        )
    report = trail.verify(trusted(signer))
    assert problems_of(report, "checkpoints") == (
        "checkpoint at event 4: its hash is not the hash of event 4"
    )


def test_verify_catches_a_checkpoint_by_an_untrusted_key(
    engine: Engine, signer: Ed25519Signer, five: list[audit.AuditRecord]
) -> None:
    stranger = Ed25519Signer.generate()
    assert AuditTrail(engine, stranger).checkpoint() is not None  # at event 5
    trail = AuditTrail(engine, signer)
    report = trail.verify(trusted(signer))
    assert failed(report) == {"checkpoints"}
    assert problems_of(report, "checkpoints") == (
        f"checkpoint at event 5: signed by key {stranger.key_id}, which is not trusted"
    )
    assert trail.verify(trusted(signer, stranger)).ok


def test_checkpoint_refuses_to_sign_over_a_broken_chain(
    trail: AuditTrail, engine: Engine, five: list[audit.AuditRecord]
) -> None:
    allow_changes(engine, "audit_events")
    with engine.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 4).values(ts=7))
    with pytest.raises(AuditTamperedError, match="event 4: hash does not match its content"):
        trail.checkpoint()
    with engine.connect() as connection:
        seqs = connection.execute(select(audit_checkpoints.c.seq)).scalars().all()
    assert list(seqs) == [3]


# --- secrets and limits ----------------------------------------------------------------


def test_details_with_secret_looking_keys_are_stored_redacted(
    trail: AuditTrail, engine: Engine
) -> None:
    secrets = ["hunter2-pass", "sk_live_abc", "123456", "6222020000000000", "s3cr3t", "tok-1"]
    details = {
        "password": secrets[0],
        "nested": {"apiKey": secrets[1], "kept": "visible"},
        "steps": [{"otp": secrets[2]}, {"note": "fine"}],
        "card_number": secrets[3],
        "_client_secret": secrets[4],
        "Authorization": f"Bearer {secrets[5]}",
    }
    built = event(details=details)
    assert not any(s in repr(built) for s in secrets)
    recorded = trail.record_now(built)
    assert recorded.details == {
        "password": REDACTED,
        "nested": {"apiKey": REDACTED, "kept": "visible"},
        "steps": [{"otp": REDACTED}, {"note": "fine"}],
        "card_number": REDACTED,
        "_client_secret": REDACTED,
        "Authorization": REDACTED,
    }
    with engine.connect() as connection:
        stored = connection.execute(select(audit_events.c.details)).scalar_one()
    assert not any(s in stored for s in secrets)
    assert "visible" in stored


TEXT_LIMITS = [
    ("actor", ACTOR_CHARS_MAX),
    ("target", TARGET_CHARS_MAX),
    ("request_id", REQUEST_ID_CHARS_MAX),
    ("source", SOURCE_CHARS_MAX),
]


@pytest.mark.parametrize(("name", "limit"), TEXT_LIMITS)
def test_text_fields_at_the_limit_and_one_past(trail: AuditTrail, name: str, limit: int) -> None:
    at_limit = trail.record_now(event(**{name: "x" * limit}))
    assert getattr(at_limit, name) == "x" * limit
    assert getattr(trail.list(1)[0], name) == "x" * limit
    with pytest.raises(AuditError, match=rf"^{name} must be 1 to {limit} .*got {limit + 1}$"):
        event(**{name: "x" * (limit + 1)})


def test_action_at_the_limit_and_one_past(trail: AuditTrail) -> None:
    action = "a." + "b" * (ACTION_CHARS_MAX - 2)
    assert trail.record_now(event(action=action)).action == action
    with pytest.raises(AuditError, match=f"action must be 1 to {ACTION_CHARS_MAX} .*got 65"):
        event(action=action + "b")
    assert trail.list(10, action_prefix=action)[0].action == action
    with pytest.raises(AuditError, match=f"action prefix must be 1 to {ACTION_CHARS_MAX}"):
        trail.list(10, action_prefix=action + "b")


@pytest.mark.parametrize("filler", ["x", "支"], ids=["ascii", "three-byte"])
def test_details_at_the_limit_and_one_past(trail: AuditTrail, filler: str) -> None:
    overhead = len(b'{"note":""}')
    room = DETAILS_BYTES_MAX - overhead
    note = filler * (room // len(filler.encode())) + "x" * (room % len(filler.encode()))
    at_limit = event(details={"note": note})
    assert len(at_limit.details_json.encode()) == DETAILS_BYTES_MAX
    assert trail.record_now(at_limit).details == {"note": note}
    with pytest.raises(
        AuditError, match=f"details must be at most {DETAILS_BYTES_MAX} bytes .*got 4097"
    ):
        event(details={"note": note + "x"})


def test_the_details_limit_applies_to_what_is_stored(trail: AuditTrail) -> None:
    # A long secret is redacted before the size is measured.
    recorded = trail.record_now(event(details={"password": "p" * (2 * DETAILS_BYTES_MAX)}))
    assert recorded.details == {"password": REDACTED}


def test_list_limit_at_the_limit_and_past(trail: AuditTrail) -> None:
    append(trail, 2)
    assert len(trail.list(LIST_LIMIT_MAX)) == 2
    assert len(trail.list(1)) == 1
    for bad in (0, LIST_LIMIT_MAX + 1, -1, True):
        with pytest.raises(AuditError, match=f"limit must be 1 to {LIST_LIMIT_MAX}"):
            trail.list(bad)
    with pytest.raises(AuditError, match="before_seq must be a positive integer"):
        trail.list(10, before_seq=0)


INVALID_EVENTS: list[tuple[dict[str, Any], str]] = [
    ({"actor": ""}, "actor must be 1 to 128 printable characters, got 0"),
    ({"actor": "staff:\n1"}, "actor must be .* got control or unprintable characters"),
    ({"actor": None}, "actor must be .* got NoneType"),
    ({"action": "Ledger.close"}, "action must be dotted lower-case"),
    ({"action": "ledger"}, "action must be dotted lower-case"),
    ({"action": "ledger..close"}, "action must be dotted lower-case"),
    ({"action": "ledger.close."}, "action must be dotted lower-case"),
    ({"action": "ledger.1close"}, "action must be dotted lower-case"),
    ({"outcome": "maybe"}, "outcome must be one of ok, denied, failed, got 'maybe'"),
    ({"target": ""}, "target must be 1 to 128 printable characters or None, got 0"),
    ({"source": 42}, "source must be .* got int"),
    ({"details": ["a"]}, "details must be a JSON object"),
    ({"details": {"x": float("nan")}}, "details must hold only JSON values"),
    ({"details": {"x": object()}}, "details must hold only JSON values"),
    ({"details": {"x": uuid.uuid4()}}, "details must hold only JSON values"),
    ({"ts": -1}, "ts must be microseconds since the Unix epoch"),
    ({"ts": True}, "ts must be microseconds since the Unix epoch"),
    ({"ts": 1.5}, "ts must be microseconds since the Unix epoch"),
    ({"id": "not-a-uuid"}, "id must be a UUID"),
]


@pytest.mark.parametrize(
    ("fields", "message"),
    INVALID_EVENTS,
    ids=[f"{next(iter(fields))}-{i}" for i, (fields, _) in enumerate(INVALID_EVENTS)],
)
def test_invalid_events_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(AuditError, match=message):
        event(**fields)


@pytest.mark.parametrize("prefix", ["", "Ledger", "ledger%", "x" * 65])
def test_invalid_action_prefixes_are_refused(trail: AuditTrail, prefix: str) -> None:
    with pytest.raises(AuditError, match="action prefix must be"):
        trail.list(10, action_prefix=prefix)


# --- the command line ------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str | None]:
    """ZHIFU_HOME on a scratch directory (SQLite), migrated with ``zhifu db upgrade``."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    env = unset | {"ZHIFU_HOME": str(tmp_path / "home"), "ZHIFU_LOG_FORMAT": "json"}
    assert cli(env, "db", "upgrade").exit_code == 0
    return env


@pytest.fixture
def cli_trail(cli_env: dict[str, str | None]) -> Iterator[AuditTrail]:
    """The trail of the CLI's home, signed with the CLI's key."""
    runtime = build_runtime(load_settings({k: v for k, v in cli_env.items() if v is not None}))
    yield AuditTrail(runtime.engine, runtime.signer)
    runtime.close()


def cli(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="zhifu")


def test_cli_audit_verify(cli_env: dict[str, str | None], cli_trail: AuditTrail) -> None:
    empty = cli(cli_env, "audit", "verify")
    assert empty.exit_code == 0, empty.output
    assert "0 events, head at event 0, 0 signed checkpoints" in empty.output

    append(cli_trail, 4)
    assert cli_trail.checkpoint() is not None
    clean = cli(cli_env, "audit", "verify")
    assert clean.exit_code == 0, clean.output
    assert "4 events, head at event 4, 1 signed checkpoints" in clean.output
    assert "FAIL" not in clean.output
    assert clean.output.strip().endswith("audit trail verified")
    report = json.loads(cli(cli_env, "audit", "verify", "--json").stdout)
    assert report["ok"] is True
    assert (report["events"], report["checkpoints"]) == (4, 1)

    allow_changes(cli_trail.engine, "audit_events")
    with cli_trail.engine.begin() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == 2).values(ts=0))
    tampered = cli(cli_env, "audit", "verify")
    assert tampered.exit_code == 1, tampered.output
    assert "FAIL chain" in tampered.output
    assert "event 2: hash does not match its content" in tampered.output
    assert tampered.output.strip().endswith("AUDIT TRAIL VERIFICATION FAILED")
    as_json = cli(cli_env, "audit", "verify", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["chain"]


def test_cli_audit_list(cli_env: dict[str, str | None], cli_trail: AuditTrail) -> None:
    assert cli(cli_env, "audit", "list").output.strip() == "no audit events"
    cli_trail.record_now(event(target="ledger-account:7", ts=1_764_000_000_123_456))
    cli_trail.record_now(
        event(actor="system", action="identity.login", outcome="denied", details={"n": 1})
    )
    result = cli(cli_env, "audit", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "2"  # newest first
    assert lines[0].split()[2:5] == ["denied", "system", "identity.login"]
    assert lines[0].endswith('-  {"n":1}')
    assert lines[1].split() == [
        "1",
        "2025-11-24T16:00:00.123456Z",
        "ok",
        STAFF,
        "ledger.account.close",
        "ledger-account:7",
    ]
    assert cli(cli_env, "audit", "list", "--limit", "1").output.splitlines() == lines[:1]
    ledger_only = cli(cli_env, "audit", "list", "--action", "ledger.")
    assert ledger_only.output.splitlines() == lines[1:]
    nothing = cli(cli_env, "audit", "list", "--action", "payments.")
    assert nothing.output.strip() == "no audit events"

    too_many = cli(cli_env, "audit", "list", "--limit", str(LIST_LIMIT_MAX + 1))
    assert too_many.exit_code == 2
    assert "--limit" in too_many.output
    bad_prefix = cli(cli_env, "audit", "list", "--action", "Ledger")
    assert bad_prefix.exit_code == 2
    assert "Invalid value for '--action': action prefix must be" in bad_prefix.output


def test_cli_audit_needs_a_migrated_database(tmp_path: Path) -> None:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    env = unset | {"ZHIFU_HOME": str(tmp_path / "bare")}
    for args in (["audit", "verify"], ["audit", "list"]):
        result = cli(env, *args)
        assert result.exit_code == 1, result.output
        assert "run 'zhifu db upgrade' first" in result.output

"""The security audit trail: who did what to which target, and how it ended.

Design note
-----------

An audit event names an ``actor`` ("service", "system", "customer:<uuid>",
"staff:<uuid>"), a dotted lower-case ``action`` ("ledger.account.close"), an
optional ``target``, an ``outcome`` ("ok", "denied" or "failed"), the
``request_id`` and ``source`` (client address) where known, and ``details``: a
JSON object. Every text field and the details have a limit (the ``*_MAX``
constants below); bad input raises :class:`AuditError` naming the field and the
limit, and nothing is written.

Secrets never land in the trail: ``details`` go through the log redactor
(:func:`zhifu.ops.logging.redact_secrets`) before anything else sees them, at
any depth, and the 4 KiB limit applies to the redacted, canonical JSON
(``sort_keys``, compact separators, UTF-8) that is stored.

Rules and invariants:

- **Append-only.** Events and checkpoints are never updated or deleted; the
  database refuses it too (migration 0003): on PostgreSQL the triggers
  ``audit_events_immutable`` and ``audit_checkpoints_immutable`` (row UPDATE
  and DELETE) and ``<table>_no_truncate``; on SQLite ``<table>_no_update`` and
  ``<table>_no_delete``.
- **A gapless hash chain.** Events are numbered ``seq`` = 1, 2, 3, ... with no
  gap, and each stores ``prev_hash`` (the hash of event ``seq - 1``; 32 zero
  bytes for event 1) and::

      hash = SHA-256(b"zhifu-audit-v1" || prev_hash || canonical_bytes(event))

  where ``canonical_bytes`` is the canonical JSON of every field, ``seq``
  included, with ``details`` as the exact stored text. Editing, removing or
  reordering an event breaks the chain at that event.
- **One head.** ``audit_head`` (one row, ``id = 1``) holds the newest event's
  ``seq`` and ``hash``. :func:`record` reads it under a lock (``SELECT ...
  FOR UPDATE`` on PostgreSQL; on SQLite the writer's ``BEGIN IMMEDIATE``
  already serialises), inserts the event and moves the head, all in the
  caller's database transaction: an action and its audit event commit or roll
  back together, and a rolled-back event leaves no gap. The trigger
  ``audit_head_forward_only`` lets the head move only forward by exactly one
  event and refuses its deletion (on SQLite ``audit_head_no_delete`` does that).
- **Signed checkpoints.** :meth:`AuditTrail.checkpoint` first re-checks the
  chain since the previous checkpoint, then signs the head with the bank's
  Ed25519 key over ``b"zhifu-audit-checkpoint-v1" || seq (8 bytes, big-endian)
  || hash``. Whoever rewrites the chain (and its head) after a checkpoint
  cannot make the checkpoint match again without the key; a trail cut short
  behind a checkpoint shows as a checkpoint without its event. The trail
  cannot prove anything about events after its newest checkpoint, so
  checkpoint regularly and keep copies of the checkpoints elsewhere.
- **Verification** (:func:`verify_trail`, ``zhifu audit verify``) recomputes
  everything from the stored rows in one snapshot, streaming events in chunks:
  the chain, the head, and every checkpoint against its event and a trusted key.

Appending serialises every transaction that records an event on the head row
until it commits: record the audit event last in a transaction, after the
action's own work and row locks, so the head is held briefly. On SQLite the
caller's transaction must be a writer's (``run_in_transaction`` with
``write=True`` opens ``BEGIN IMMEDIATE``); a deferred ``BEGIN`` may fail with
"database is locked" under contention, which ``run_in_transaction`` retries.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update

from zhifu.ids import uuid7
from zhifu.ops.logging import redact_secrets
from zhifu.ops.periodic import PeriodicTask
from zhifu.security.signing import Ed25519Signer, verify_signature
from zhifu.store.tables import audit_checkpoints, audit_events, audit_head
from zhifu.store.uow import run_in_transaction
from zhifu.verification import Check, all_ok

ACTOR_CHARS_MAX: Final = 128
ACTION_CHARS_MAX: Final = 64
TARGET_CHARS_MAX: Final = 128
ROLE_CHARS_MAX: Final = 32
REQUEST_ID_CHARS_MAX: Final = 64
SOURCE_CHARS_MAX: Final = 64
DETAILS_BYTES_MAX: Final = 4096  # of the redacted canonical JSON, UTF-8
LIST_LIMIT_MAX: Final = 1000
VERIFY_CHUNK_EVENTS: Final = 5_000
TS_MAX: Final = 2**63 - 1

Outcome = Literal["ok", "denied", "failed"]
OUTCOMES: Final = ("ok", "denied", "failed")

EVENT_DOMAIN: Final = b"zhifu-audit-v1"
CHECKPOINT_DOMAIN: Final = b"zhifu-audit-checkpoint-v1"
GENESIS_PREV_HASH: Final = bytes(32)
HEAD_ROW_ID: Final = 1

# Two or more dot-separated segments of lower-case letters, digits and '_'.
_ACTION_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
_ACTION_PREFIX_PATTERN: Final = re.compile(r"[a-z0-9_.]+")
_SEQ: Final = struct.Struct(">q")

Progress = Callable[[int], None]


class AuditError(ValueError):
    """An audit event, or an argument of the trail's API, is outside what is allowed."""


class AuditTamperedError(AuditError):
    """The stored trail does not verify where an operation relies on it (a checkpoint)."""


def _now_us() -> int:
    return time.time_ns() // 1000


# --- events ------------------------------------------------------------------------


def _check_text(name: str, value: object, chars_max: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    allowed = f"{name} must be 1 to {chars_max} printable characters"
    if optional:
        allowed += " or None"
    if not isinstance(value, str):
        raise AuditError(f"{allowed}, got {type(value).__name__}")
    if not 1 <= len(value) <= chars_max:
        raise AuditError(f"{allowed}, got {len(value)}")
    if not value.isprintable():
        raise AuditError(f"{allowed}, got control or unprintable characters")


def _check_action(action: object) -> None:
    _check_text("action", action, ACTION_CHARS_MAX, optional=False)
    if not _ACTION_PATTERN.fullmatch(str(action)):
        raise AuditError(
            f"action must be dotted lower-case like 'ledger.account.close' (segments of a-z,"
            f" 0-9 and '_', each starting with a letter), got {action!r}"
        )


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and compact separators: the stored and hashed form."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def redacted_details_json(details: object) -> str:
    """The canonical JSON of ``details`` with secret-looking keys redacted.

    Raises:
        AuditError: ``details`` is not a JSON object of JSON values, or its
            redacted form is over ``DETAILS_BYTES_MAX`` bytes.
    """
    if not isinstance(details, Mapping):
        raise AuditError(f"details must be a JSON object (a dict), got {type(details).__name__}")
    # The redactor walks the values of the key it is given: wrapping the details
    # redacts every secret-looking key among them, leading '_' or not.
    redacted = redact_secrets(None, "audit", {"details": details})["details"]
    try:
        text = canonical_json(redacted)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise AuditError(
            "details must hold only JSON values (str, int, finite float, bool, None, lists"
            f" and dicts with string keys): {exc}"
        ) from None
    if size > DETAILS_BYTES_MAX:
        raise AuditError(
            f"details must be at most {DETAILS_BYTES_MAX} bytes as canonical JSON, got {size}"
        )
    return text


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event to append; checked when built (raises :class:`AuditError`).

    ``details`` holds the redacted copy of what was passed in, so neither the
    trail nor this object's ``repr`` carries a secret.
    """

    actor: str
    action: str
    outcome: Outcome = "ok"
    target: str | None = None
    role: str | None = None
    request_id: str | None = None
    source: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid7)
    ts: int = field(default_factory=_now_us)
    details_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_text("actor", self.actor, ACTOR_CHARS_MAX, optional=False)
        _check_action(self.action)
        if self.outcome not in OUTCOMES:
            raise AuditError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        _check_text("target", self.target, TARGET_CHARS_MAX, optional=True)
        _check_text("role", self.role, ROLE_CHARS_MAX, optional=True)
        _check_text("request_id", self.request_id, REQUEST_ID_CHARS_MAX, optional=True)
        _check_text("source", self.source, SOURCE_CHARS_MAX, optional=True)
        if not isinstance(self.id, uuid.UUID):
            raise AuditError(f"id must be a UUID, got {type(self.id).__name__}")
        if isinstance(self.ts, bool) or not isinstance(self.ts, int) or not 0 <= self.ts <= TS_MAX:
            raise AuditError(
                f"ts must be microseconds since the Unix epoch, 0 to {TS_MAX}, got {self.ts!r}"
            )
        text = redacted_details_json(self.details)
        object.__setattr__(self, "details", json.loads(text))
        object.__setattr__(self, "details_json", text)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An event as stored: its place in the chain and its hashes."""

    seq: int
    id: uuid.UUID
    ts: int
    actor: str
    action: str
    target: str | None
    outcome: str
    request_id: str | None
    source: str | None
    details_json: str
    prev_hash: bytes
    hash: bytes
    role: str | None = None

    @property
    def details(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.details_json)
        return parsed

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": str(self.id),
            "ts": self.ts,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "source": self.source,
            "details": self.details,
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
        }


def canonical_bytes(seq: int, event: AuditEvent | AuditRecord) -> bytes:
    """The hashed form of an event at ``seq``: canonical JSON of every field, UTF-8.

    ``role`` (added in migration 0004) is hashed only when present, so events
    recorded before it existed keep their hashes.
    """
    fields: dict[str, Any] = {
        "seq": seq,
        "id": str(event.id),
        "ts": event.ts,
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "outcome": event.outcome,
        "request_id": event.request_id,
        "source": event.source,
        "details": event.details_json,
    }
    if event.role is not None:
        fields["role"] = event.role
    return canonical_json(fields).encode("utf-8")


def event_hash(prev_hash: bytes, seq: int, event: AuditEvent | AuditRecord) -> bytes:
    return hashlib.sha256(EVENT_DOMAIN + prev_hash + canonical_bytes(seq, event)).digest()


# --- checkpoints --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that event ``seq`` of the trail has hash ``hash``."""

    seq: int
    hash: bytes
    signature: bytes
    key_id: str
    ts: int


def checkpoint_message(seq: int, digest: bytes) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers."""
    return CHECKPOINT_DOMAIN + _SEQ.pack(seq) + digest


def verify_checkpoint_signature(checkpoint: Checkpoint, public_key: bytes) -> bool:
    return verify_signature(
        public_key, checkpoint.signature, checkpoint_message(checkpoint.seq, checkpoint.hash)
    )


# --- storage ------------------------------------------------------------------------

_EVENT_COLUMNS = (
    audit_events.c.seq,
    audit_events.c.id,
    audit_events.c.ts,
    audit_events.c.actor,
    audit_events.c.action,
    audit_events.c.target,
    audit_events.c.outcome,
    audit_events.c.request_id,
    audit_events.c.source,
    audit_events.c.details,
    audit_events.c.prev_hash,
    audit_events.c.hash,
    audit_events.c.role,
)
_CHECKPOINT_COLUMNS = (
    audit_checkpoints.c.seq,
    audit_checkpoints.c.hash,
    audit_checkpoints.c.signature,
    audit_checkpoints.c.key_id,
    audit_checkpoints.c.ts,
)


def _record_from_row(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=int(row.seq),
        id=row.id,
        ts=int(row.ts),
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        request_id=row.request_id,
        source=row.source,
        details_json=row.details,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
        role=row.role,
    )


def _checkpoint_from_row(row: Any) -> Checkpoint:
    return Checkpoint(
        seq=int(row.seq),
        hash=bytes(row.hash),
        signature=bytes(row.signature),
        key_id=row.key_id,
        ts=int(row.ts),
    )


def _head_or_none(connection: Connection, *, lock: bool = False) -> tuple[int, bytes] | None:
    query = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ROW_ID)
    if lock:
        query = query.with_for_update()  # SQLite renders nothing: BEGIN IMMEDIATE locks
    row = connection.execute(query).one_or_none()
    return None if row is None else (int(row.seq), bytes(row.hash))


def _read_head(connection: Connection, *, lock: bool = False) -> tuple[int, bytes]:
    head = _head_or_none(connection, lock=lock)
    if head is None:
        raise AuditTamperedError(
            "the audit_head row is missing: the trail cannot be extended; run 'zhifu audit verify'"
        )
    return head


def record(connection: Connection, event: AuditEvent) -> AuditRecord:
    """Append ``event`` inside the caller's open database transaction.

    The event commits or rolls back with the caller's own work; the head row
    stays locked until then (see the module note: record last).

    Raises:
        AuditTamperedError: the ``audit_head`` row is missing.
    """
    seq, prev_hash = _read_head(connection, lock=True)
    seq += 1
    digest = event_hash(prev_hash, seq, event)
    connection.execute(
        insert(audit_events).values(
            seq=seq,
            id=event.id,
            ts=event.ts,
            actor=event.actor,
            action=event.action,
            target=event.target,
            outcome=event.outcome,
            request_id=event.request_id,
            source=event.source,
            details=event.details_json,
            prev_hash=prev_hash,
            hash=digest,
            role=event.role,
        )
    )
    connection.execute(
        update(audit_head).where(audit_head.c.id == HEAD_ROW_ID).values(seq=seq, hash=digest)
    )
    return AuditRecord(
        seq=seq,
        id=event.id,
        ts=event.ts,
        actor=event.actor,
        action=event.action,
        target=event.target,
        outcome=event.outcome,
        request_id=event.request_id,
        source=event.source,
        details_json=event.details_json,
        prev_hash=prev_hash,
        hash=digest,
        role=event.role,
    )


def list_events(
    connection: Connection,
    limit: int,
    action_prefix: str | None = None,
    before_seq: int | None = None,
    *,
    actor: str | None = None,
    target: str | None = None,
    since_ts: int | None = None,
    until_ts: int | None = None,
) -> builtins.list[AuditRecord]:
    """Events newest first: at most ``limit``, optionally only actions starting with
    ``action_prefix``, only events before ``before_seq`` (the next page), of one
    ``actor``, about one ``target``, and recorded at ``since_ts <= ts < until_ts``
    (microseconds).

    Raises:
        AuditError: ``limit`` is not 1 to ``LIST_LIMIT_MAX``, ``action_prefix``
            could not start an action, ``before_seq`` is below 1, or a filter
            is past its limit.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_LIMIT_MAX:
        raise AuditError(f"limit must be 1 to {LIST_LIMIT_MAX}, got {limit!r}")
    query = select(*_EVENT_COLUMNS).order_by(audit_events.c.seq.desc()).limit(limit)
    if action_prefix is not None:
        if len(action_prefix) > ACTION_CHARS_MAX or not _ACTION_PREFIX_PATTERN.fullmatch(
            action_prefix
        ):
            raise AuditError(
                f"action prefix must be 1 to {ACTION_CHARS_MAX} characters of a-z, 0-9, '_'"
                f" and '.', got {action_prefix!r}"
            )
        query = query.where(audit_events.c.action.startswith(action_prefix, autoescape=True))
    if before_seq is not None:
        if isinstance(before_seq, bool) or not isinstance(before_seq, int) or before_seq < 1:
            raise AuditError(f"before_seq must be a positive integer, got {before_seq!r}")
        query = query.where(audit_events.c.seq < before_seq)
    if actor is not None:
        _check_text("actor", actor, ACTOR_CHARS_MAX, optional=False)
        query = query.where(audit_events.c.actor == actor)
    if target is not None:
        _check_text("target", target, TARGET_CHARS_MAX, optional=False)
        query = query.where(audit_events.c.target == target)
    for name, bound in (("since_ts", since_ts), ("until_ts", until_ts)):
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, int) or not 0 <= bound <= TS_MAX
        ):
            raise AuditError(f"{name} must be microseconds since the Unix epoch, got {bound!r}")
    if since_ts is not None:
        query = query.where(audit_events.c.ts >= since_ts)
    if until_ts is not None:
        query = query.where(audit_events.c.ts < until_ts)
    return [_record_from_row(row) for row in connection.execute(query)]


def count_events(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(audit_events)).scalar_one())


def _events_after(
    connection: Connection, after_seq: int, upto_seq: int | None = None
) -> Iterator[builtins.list[AuditRecord]]:
    """Events with ``after_seq < seq (<= upto_seq)`` in seq order, a chunk at a time."""
    while True:
        query = select(*_EVENT_COLUMNS).where(audit_events.c.seq > after_seq)
        if upto_seq is not None:
            query = query.where(audit_events.c.seq <= upto_seq)
        query = query.order_by(audit_events.c.seq).limit(VERIFY_CHUNK_EVENTS)
        chunk = [_record_from_row(row) for row in connection.execute(query)]
        if not chunk:
            return
        yield chunk
        after_seq = chunk[-1].seq


# --- verification -------------------------------------------------------------------


@dataclass(slots=True)
class AuditReport:
    """What :func:`verify_trail` found: checks ``chain``, ``head`` and ``checkpoints``."""

    checks: builtins.list[Check]
    events: int = 0
    checkpoints: int = 0
    head_seq: int = 0
    last_seq: int = 0  # of the last stored event

    @property
    def ok(self) -> bool:
        return all_ok(self.checks)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "head_seq": self.head_seq,
            "last_seq": self.last_seq,
            "checks": [c.as_dict() for c in self.checks],
        }


class _ChainWalk:
    """Follows the chain event by event from a known (seq, hash), reporting breaks."""

    def __init__(self, check: Check, after_seq: int = 0, after_hash: bytes = GENESIS_PREV_HASH):
        self.check = check
        self.last_seq = after_seq
        self.last_hash = after_hash

    def feed(self, event: AuditRecord) -> None:
        expected = self.last_seq + 1
        if event.seq < expected:
            self.check.fail(f"event {event.seq}: out of order, expected event {expected}")
        elif event.seq > expected:
            if event.seq == expected + 1:
                missing = f"event {expected} is"
            else:
                missing = f"events {expected} to {event.seq - 1} are"
            self.check.fail(f"event {event.seq}: {missing} missing before it")
        if event.prev_hash != self.last_hash:
            self.check.fail(
                f"event {event.seq}: prev_hash is not the hash of event {self.last_seq}"
            )
        if event_hash(event.prev_hash, event.seq, event) != event.hash:
            self.check.fail(f"event {event.seq}: hash does not match its content")
        # The stored hash, so that one edited event is reported once, where it is.
        self.last_seq, self.last_hash = event.seq, event.hash


def _check_checkpoint(
    checkpoint: Checkpoint,
    event_hashes: Mapping[int, bytes],
    trusted_keys: Mapping[str, bytes],
    check: Check,
) -> None:
    where = f"checkpoint at event {checkpoint.seq}"
    key = trusted_keys.get(checkpoint.key_id)
    if key is None:
        check.fail(f"{where}: signed by key {checkpoint.key_id}, which is not trusted")
    elif not verify_checkpoint_signature(checkpoint, key):
        check.fail(f"{where}: signature does not verify with key {checkpoint.key_id}")
    stored = event_hashes.get(checkpoint.seq)
    if stored is None:
        check.fail(f"{where}: there is no event {checkpoint.seq} (the trail was cut short?)")
    elif stored != checkpoint.hash:
        check.fail(f"{where}: its hash is not the hash of event {checkpoint.seq}")


def _checkpoints_between(connection: Connection, low: int, high: int) -> builtins.list[Checkpoint]:
    """Checkpoints with ``low < seq <= high``."""
    rows = connection.execute(
        select(*_CHECKPOINT_COLUMNS)
        .where(and_(audit_checkpoints.c.seq > low, audit_checkpoints.c.seq <= high))
        .order_by(audit_checkpoints.c.seq)
    )
    return [_checkpoint_from_row(row) for row in rows]


def verify_trail(
    connection: Connection,
    trusted_keys: Mapping[str, bytes],
    progress: Progress | None = None,
) -> AuditReport:
    """Recompute the chain, the head and every checkpoint; read-only.

    ``trusted_keys`` maps key ids to raw Ed25519 public keys. The caller
    should give ``connection`` one snapshot (PostgreSQL: REPEATABLE READ) so
    that concurrent appends do not show as a head mismatch.
    """
    chain, head_check, checkpoint_check = Check("chain"), Check("head"), Check("checkpoints")
    report = AuditReport([chain, head_check, checkpoint_check])
    head = _head_or_none(connection)
    report.head_seq = head[0] if head is not None else 0
    walk = _ChainWalk(chain)
    for chunk in _events_after(connection, 0):
        for event in chunk:
            walk.feed(event)
        # The checkpoints that fall in this chunk's range of seqs, gaps included.
        hashes = {event.seq: event.hash for event in chunk}
        for checkpoint in _checkpoints_between(connection, report.last_seq, chunk[-1].seq):
            report.checkpoints += 1
            _check_checkpoint(checkpoint, hashes, trusted_keys, checkpoint_check)
        report.events += len(chunk)
        report.last_seq = chunk[-1].seq
        if progress is not None:
            progress(len(chunk))
    # Checkpoints outside the events' range: beyond the last event, or below 1.
    beyond = connection.execute(
        select(*_CHECKPOINT_COLUMNS)
        .where(or_(audit_checkpoints.c.seq > walk.last_seq, audit_checkpoints.c.seq < 1))
        .order_by(audit_checkpoints.c.seq)
    )
    for row in beyond:
        report.checkpoints += 1
        _check_checkpoint(_checkpoint_from_row(row), {}, trusted_keys, checkpoint_check)
    _check_head(head, walk, head_check)
    return report


def _check_head(head: tuple[int, bytes] | None, walk: _ChainWalk, check: Check) -> None:
    if head is None:
        check.fail("the audit_head row is missing")
    elif head[0] != walk.last_seq:
        check.fail(f"audit_head is at event {head[0]} but the last event is {walk.last_seq}")
    elif head[1] != walk.last_hash:
        check.fail(f"audit_head's hash is not the hash of event {head[0]}")


def _verify_since_last_checkpoint(connection: Connection, head_seq: int, head_hash: bytes) -> None:
    """Walk the chain from the newest checkpoint up to the head before signing it.

    Raises:
        AuditTamperedError: a break in that stretch, or a head that is not its end.
    """
    last = connection.execute(
        select(*_CHECKPOINT_COLUMNS)
        .where(audit_checkpoints.c.seq < head_seq)
        .order_by(audit_checkpoints.c.seq.desc())
        .limit(1)
    ).one_or_none()
    check = Check("chain")
    if last is None:
        walk = _ChainWalk(check)
    else:
        start = _checkpoint_from_row(last)
        anchor = connection.execute(
            select(audit_events.c.hash).where(audit_events.c.seq == start.seq)
        ).scalar_one_or_none()
        if anchor is None or bytes(anchor) != start.hash:
            check.fail(f"event {start.seq} no longer matches its checkpoint")
        walk = _ChainWalk(check, start.seq, start.hash)
    for chunk in _events_after(connection, walk.last_seq, head_seq):
        for event in chunk:
            walk.feed(event)
    if (walk.last_seq, walk.last_hash) != (head_seq, head_hash):
        check.fail(f"audit_head (event {head_seq}) is not the end of the chain")
    if not check.ok:
        raise AuditTamperedError(
            f"refusing to sign a checkpoint: {check.problems[0]}; run 'zhifu audit verify'"
        )


def write_checkpoint(
    connection: Connection, signer: Ed25519Signer, now_ts: int
) -> Checkpoint | None:
    """Sign the current head and store the checkpoint; None while the trail is empty.

    A head already checkpointed returns that checkpoint.

    Raises:
        AuditTamperedError: the chain since the previous checkpoint does not verify.
    """
    head_seq, head_hash = _read_head(connection)
    if head_seq == 0:
        return None
    existing = connection.execute(
        select(*_CHECKPOINT_COLUMNS).where(audit_checkpoints.c.seq == head_seq)
    ).one_or_none()
    if existing is not None:
        return _checkpoint_from_row(existing)
    _verify_since_last_checkpoint(connection, head_seq, head_hash)
    checkpoint = Checkpoint(
        seq=head_seq,
        hash=head_hash,
        signature=signer.sign(checkpoint_message(head_seq, head_hash)),
        key_id=signer.key_id,
        ts=now_ts,
    )
    connection.execute(
        insert(audit_checkpoints).values(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            signature=checkpoint.signature,
            key_id=checkpoint.key_id,
            ts=checkpoint.ts,
        )
    )
    return checkpoint


# --- the service --------------------------------------------------------------------


class AuditTrail:
    """The audit trail's use cases over one engine, each in its own unit of work.

    To audit an action atomically with the action itself, call :func:`record`
    with the action's own connection instead of :meth:`record_now`.
    """

    def __init__(
        self, engine: Engine, signer: Ed25519Signer, *, clock: Callable[[], int] = _now_us
    ):
        self.engine = engine
        self.signer = signer
        self.clock = clock

    def record_now(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` in a unit of work of its own.

        Raises:
            AuditTamperedError: the ``audit_head`` row is missing.
            RetriesExhaustedError: the head stayed contended through every retry.
        """
        return run_in_transaction(self.engine, lambda connection: record(connection, event))

    def checkpoint(self) -> Checkpoint | None:
        """Sign and store a checkpoint of the current head (None while empty).

        Raises:
            AuditTamperedError: the chain since the previous checkpoint does not verify.
        """
        now_ts = self.clock()
        return run_in_transaction(
            self.engine,
            lambda connection: write_checkpoint(connection, self.signer, now_ts),
            retry_unique_violation=True,  # two checkpointers of one head: the loser reads it
        )

    def verify(
        self, trusted_keys: Mapping[str, bytes], progress: Progress | None = None
    ) -> AuditReport:
        """Recompute the whole trail in one snapshot (see :func:`verify_trail`)."""
        with self.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            with connection.begin():
                return verify_trail(connection, trusted_keys, progress)

    def list(
        self,
        limit: int,
        action_prefix: str | None = None,
        before_seq: int | None = None,
        **filters: Any,
    ) -> builtins.list[AuditRecord]:
        """Events newest first (see :func:`list_events` for ``filters``: actor,
        target, since_ts, until_ts); raises AuditError on bad arguments."""
        return run_in_transaction(
            self.engine,
            lambda connection: list_events(connection, limit, action_prefix, before_seq, **filters),
            write=False,
        )


CHECKPOINT_INTERVAL_S_DEFAULT = 60.0


class AuditCheckpointer:
    """Signs a checkpoint of the trail's head every ``interval_s``, in a thread.

    Tampering after the newest checkpoint can only be told by the chain itself,
    so checkpoints are frequent; copies of them kept off the database make them
    evidence.
    """

    def __init__(self, trail: AuditTrail, *, interval_s: float = CHECKPOINT_INTERVAL_S_DEFAULT):
        self.trail = trail
        self._task = PeriodicTask("audit-checkpoint", trail.checkpoint, interval_s=interval_s)

    def start(self) -> None:
        self._task.start()

    def close(self) -> None:
        self._task.close()


@dataclass(slots=True)
class AuditContext:
    """Who is acting in one request, to stamp every audit event it records.

    The API builds one per request; use cases call :meth:`event` to make their
    events. A request that fails gets the API's generic fallback event unless
    a use case made (and committed) a refusal event of its own
    (``refusal_recorded``).
    ``actor`` and ``role`` may be set once the caller is known (a login).
    """

    actor: str = "anonymous"
    role: str | None = None
    source: str | None = None
    request_id: str | None = None
    recorded: bool = False
    # A refusal event was made: the request's failure is on record (once the
    # use case commits it, which it must do before raising).
    refusal_recorded: bool = False

    def event(
        self,
        action: str,
        target: str | None = None,
        outcome: Outcome = "ok",
        *,
        actor: str | None = None,
        role: str | None = None,
        **details: Any,
    ) -> AuditEvent:
        """An event of this request; marks the request as audited."""
        self.recorded = True
        if outcome != "ok":
            self.refusal_recorded = True
        return AuditEvent(
            actor=actor or self.actor,
            role=role or self.role,
            action=action,
            target=target,
            outcome=outcome,
            request_id=self.request_id,
            source=self.source,
            details=details,
        )


SYSTEM_CONTEXT_ACTOR: Final = "system"


def system_context(actor: str = SYSTEM_CONTEXT_ACTOR) -> AuditContext:
    """The context of work started by an operator's command or a background job."""
    return AuditContext(actor=actor, role="system")

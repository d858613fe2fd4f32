"""The tamper-evident journal: signed blocks chained by hash over committed batches.

Every committed batch of transfers stores the RFC 6962 Merkle root of its
transfers, written in the same database transaction as the transfers. A sealer
then chains batches, in the order it finds them, into blocks::

    block_hash = SHA-256("zhifu-ledger-block-v1" || seq || prev_hash || batch_id
                         || merkle_root || transfer_count || committed_ts)

and signs ``block_hash`` with the bank's Ed25519 key. Sealing runs apart from
the transfer path, so concurrent writers never contend on the chain head; one
sealer at a time extends the chain (an advisory lock on PostgreSQL, the write
lock on SQLite, and the primary key on ``seq`` against a fork in any case).

A counterparty that holds a published block head can check that one transfer
is in the ledger with :func:`verify_proof`, without seeing any other transfer.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from zhifu.ledger import merkle
from zhifu.ledger.errors import JournalNotSealedError, TransferNotFoundError
from zhifu.ledger.model import encode_leaf
from zhifu.ledger.store import TRANSFER_COLUMNS, LedgerSql
from zhifu.security.signing import Ed25519Signer, verify_signature

BLOCK_DOMAIN = b"zhifu-ledger-block-v1"
GENESIS_PREV_HASH = bytes(32)
SEAL_BATCHES_MAX = 1000
SEALER_LOCK_KEY = 0x7A68_6966_7573_6C01  # PostgreSQL advisory lock key for the sealer
_HEADER = struct.Struct(">q32s16s32sIq")


@dataclass(frozen=True, slots=True)
class Block:
    seq: int
    batch_id: uuid.UUID
    prev_hash: bytes
    merkle_root: bytes
    transfer_count: int
    committed_ts: int
    block_hash: bytes
    signature: bytes
    key_id: str
    sealed_ts: int


@dataclass(frozen=True, slots=True)
class InclusionProof:
    transfer_id: uuid.UUID
    leaf_hash: bytes
    leaf_index: int
    tree_size: int
    audit_path: list[bytes]
    block: Block


def block_hash(
    seq: int,
    prev_hash: bytes,
    batch_id: uuid.UUID,
    merkle_root: bytes,
    transfer_count: int,
    committed_ts: int,
) -> bytes:
    header = _HEADER.pack(seq, prev_hash, batch_id.bytes, merkle_root, transfer_count, committed_ts)
    return hashlib.sha256(BLOCK_DOMAIN + header).digest()


BLOCK_COLUMNS = (
    "seq, batch_id, prev_hash, merkle_root, transfer_count, committed_ts, block_hash,"
    " signature, key_id, sealed_ts"
)


def block_from_row(sql: LedgerSql, row: Any) -> Block:
    return Block(
        seq=row[0],
        batch_id=sql.id_out(row[1]),
        prev_hash=bytes(row[2]),
        merkle_root=bytes(row[3]),
        transfer_count=row[4],
        committed_ts=row[5],
        block_hash=bytes(row[6]),
        signature=bytes(row[7]),
        key_id=row[8],
        sealed_ts=row[9],
    )


def head(connection: Connection) -> Block | None:
    sql = LedgerSql(connection)
    rows = sql.query(f"SELECT {BLOCK_COLUMNS} FROM ledger_blocks ORDER BY seq DESC LIMIT 1")
    return block_from_row(sql, rows[0]) if rows else None


def seal(connection: Connection, signer: Ed25519Signer, now_ts: int, limit: int) -> int:
    """Chain up to ``limit`` unsealed batches into signed blocks; returns the count."""
    sql = LedgerSql(connection)
    m = sql.mark
    if sql.postgres:
        locked = sql.query("SELECT pg_try_advisory_xact_lock(%s)", (SEALER_LOCK_KEY,))[0][0]
        if not locked:
            return 0  # another process is sealing right now
    pending = sql.query(
        "SELECT b.id, b.merkle_root, b.transfer_count, b.committed_ts"
        " FROM ledger_unsealed_batches u JOIN ledger_batches b ON b.id = u.batch_id"
        f" ORDER BY u.committed_ts, u.batch_id LIMIT {m}",
        (limit,),
    )
    if not pending:
        return 0
    last = head(connection)
    seq = last.seq if last else 0
    prev = last.block_hash if last else GENESIS_PREV_HASH
    blocks: list[tuple[Any, ...]] = []
    for row in pending:
        seq += 1
        batch_id = sql.id_out(row[0])
        root = bytes(row[1])
        digest = block_hash(seq, prev, batch_id, root, row[2], row[3])
        blocks.append(
            (
                seq,
                sql.id_in(batch_id),
                prev,
                root,
                row[2],
                row[3],
                digest,
                signer.sign(digest),
                signer.key_id,
                now_ts,
            )
        )
        prev = digest
    marks = ", ".join([m] * 10)
    raw = sql.raw()
    raw.cursor().executemany(
        f"INSERT INTO ledger_blocks ({BLOCK_COLUMNS}) VALUES ({marks})", blocks
    )
    raw.cursor().executemany(
        f"DELETE FROM ledger_unsealed_batches WHERE batch_id = {m}", [(b[1],) for b in blocks]
    )
    return len(blocks)


def batch_leaf_hashes(sql: LedgerSql, batch_id: uuid.UUID) -> list[tuple[uuid.UUID, bytes]]:
    m = sql.mark
    rows = sql.query(
        f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE batch_id = {m}"
        " ORDER BY batch_index",
        (sql.id_in(batch_id),),
    )
    transfers = [sql.transfer_from_row(row) for row in rows]
    return [(t.id, merkle.leaf_hash(encode_leaf(t))) for t in transfers]


def inclusion_proof(connection: Connection, transfer_id: uuid.UUID) -> InclusionProof:
    """The audit path of one transfer up to its signed block.

    Raises:
        TransferNotFoundError: no committed transfer has this id.
        JournalNotSealedError: its batch is not chained into a block yet.
    """
    sql = LedgerSql(connection)
    m = sql.mark
    rows = sql.query(
        f"SELECT batch_id, batch_index FROM ledger_transfers WHERE id = {m}",
        (sql.id_in(transfer_id),),
    )
    if not rows:
        raise TransferNotFoundError(f"no transfer {transfer_id}")
    batch_id, index = sql.id_out(rows[0][0]), rows[0][1]
    block_rows = sql.query(
        f"SELECT {BLOCK_COLUMNS} FROM ledger_blocks WHERE batch_id = {m}", (sql.id_in(batch_id),)
    )
    if not block_rows:
        raise JournalNotSealedError(
            f"transfer {transfer_id} is committed but its batch is not sealed yet; retry shortly"
        )
    leaves = [leaf for _, leaf in batch_leaf_hashes(sql, batch_id)]
    return InclusionProof(
        transfer_id=transfer_id,
        leaf_hash=leaves[index],
        leaf_index=index,
        tree_size=len(leaves),
        audit_path=merkle.audit_path(leaves, index),
        block=block_from_row(sql, block_rows[0]),
    )


def verify_block(block: Block, public_key: bytes) -> bool:
    """The block's hash matches its header and its signature is the key's."""
    expected = block_hash(
        block.seq,
        block.prev_hash,
        block.batch_id,
        block.merkle_root,
        block.transfer_count,
        block.committed_ts,
    )
    return expected == block.block_hash and verify_signature(
        public_key, block.signature, block.block_hash
    )


def verify_proof(proof: InclusionProof, leaf_data: bytes | None, public_key: bytes) -> bool:
    """A counterparty's check: the leaf is in the block, and the block is the bank's.

    ``leaf_data`` is the canonical encoding of the transfer the counterparty
    holds (``Transfer.leaf_bytes()``); pass None to trust ``proof.leaf_hash``.
    """
    leaf = merkle.leaf_hash(leaf_data) if leaf_data is not None else proof.leaf_hash
    if leaf != proof.leaf_hash or proof.tree_size != proof.block.transfer_count:
        return False
    return merkle.verify_inclusion(
        leaf, proof.leaf_index, proof.tree_size, proof.audit_path, proof.block.merkle_root
    ) and verify_block(proof.block, public_key)

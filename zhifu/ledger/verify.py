"""``zhifu ledger verify``: recompute every invariant from the stored rows.

Read-only. Each check reports what it found; any mismatch (a row edited
behind the application's back included) makes the report fail:

1. ``balanced``: per currency, posted debits = posted credits and pending
   debits = pending credits over all accounts.
2. ``counters``: every account's four counters equal the sums of its
   transfers (pending holds less those posted, voided or expired).
3. ``balance_flags``: no account breaks its balance flag.
4. ``transfers``: each transfer's currency is its accounts' currency, and
   each resolution points at a pending transfer with the same accounts.
5. ``merkle``: every batch's Merkle root and size match its transfers.
6. ``chain``: blocks run from 1 without a gap, each points at its
   predecessor's hash, each hash matches its header, each signature verifies
   with a trusted key, each block matches its batch, and every batch is either
   in a block or waiting in the unsealed queue.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from zhifu.ledger import merkle
from zhifu.ledger.journal import BLOCK_COLUMNS, GENESIS_PREV_HASH, block_from_row, verify_block
from zhifu.ledger.model import AccountFlags, TransferFlags, encode_leaf
from zhifu.ledger.store import ACCOUNT_COLUMNS, TRANSFER_COLUMNS, LedgerSql
from zhifu.verification import Check, all_ok

STREAM_CHUNK = 10_000

Progress = Callable[[int], None]


@dataclass(slots=True)
class VerifyReport:
    checks: list[Check]
    accounts: int = 0
    transfers: int = 0
    batches: int = 0
    blocks: int = 0
    unsealed_batches: int = 0

    @property
    def ok(self) -> bool:
        return all_ok(self.checks)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "accounts": self.accounts,
            "transfers": self.transfers,
            "batches": self.batches,
            "blocks": self.blocks,
            "unsealed_batches": self.unsealed_batches,
            "checks": [c.as_dict() for c in self.checks],
        }


def verify_ledger(
    connection: Connection,
    trusted_keys: dict[str, bytes],
    progress: Progress | None = None,
) -> VerifyReport:
    sql = LedgerSql(connection)
    balanced, counters, flags_check = Check("balanced"), Check("counters"), Check("balance_flags")
    transfers_check, merkle_check, chain = Check("transfers"), Check("merkle"), Check("chain")
    report = VerifyReport([balanced, counters, flags_check, transfers_check, merkle_check, chain])
    accounts = {
        sql.id_out(row[0]): row
        for row in sql.query(f"SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts")
    }
    report.accounts = len(accounts)
    sums = _stream_transfers(sql, accounts, report, transfers_check, merkle_check, progress)
    _check_accounts(accounts, sums, balanced, counters, flags_check)
    _check_chain(sql, trusted_keys, report, chain)
    return report


def _stream_transfers(
    sql: LedgerSql,
    accounts: dict[uuid.UUID, tuple[object, ...]],
    report: VerifyReport,
    transfers_check: Check,
    merkle_check: Check,
    progress: Progress | None,
) -> dict[uuid.UUID, list[int]]:
    """One pass over every transfer, in batch order: sums per account and Merkle roots."""
    batches = {
        sql.id_out(row[0]): (bytes(row[1]), row[2])
        for row in sql.query("SELECT id, merkle_root, transfer_count FROM ledger_batches")
    }
    report.batches = len(batches)
    # account id -> [debits_pending, debits_posted, credits_pending, credits_posted]
    sums: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    pending: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID, int]] = {}
    resolutions: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]] = []
    current: uuid.UUID | None = None
    leaves: list[bytes] = []
    seen_batches: set[uuid.UUID] = set()

    def close_batch() -> None:
        if current is None:
            return
        seen_batches.add(current)
        stored = batches.get(current)
        if stored is None:
            merkle_check.fail(f"transfers of batch {current} have no batch record")
            return
        root = merkle.merkle_root(leaves)
        if root != stored[0] or len(leaves) != stored[1]:
            merkle_check.fail(
                f"batch {current}: Merkle root or size does not match its transfers"
                f" ({len(leaves)} transfers, recorded {stored[1]})"
            )

    cursor = sql.raw().cursor()
    cursor.execute(
        f"SELECT {TRANSFER_COLUMNS} FROM ledger_transfers ORDER BY batch_id, batch_index"
    )
    count = 0
    while True:
        rows = cursor.fetchmany(STREAM_CHUNK)
        if not rows:
            break
        for row in rows:
            t = sql.transfer_from_row(row)
            if t.batch_id != current:
                close_batch()
                current, leaves = t.batch_id, []
            leaves.append(merkle.leaf_hash(encode_leaf(t)))
            for account_id in (t.debit_account_id, t.credit_account_id):
                account = accounts.get(account_id)
                if account is None:
                    transfers_check.fail(f"transfer {t.id} names unknown account {account_id}")
                elif account[1] != t.currency:
                    transfers_check.fail(
                        f"transfer {t.id} is in {t.currency}"
                        f" but account {account_id} is {account[1]}"
                    )
            if t.flags & TransferFlags.PENDING:
                sums[t.debit_account_id][0] += t.amount
                sums[t.credit_account_id][2] += t.amount
                pending[t.id] = (t.debit_account_id, t.credit_account_id, t.amount)
            elif t.pending_id is not None:
                resolutions.append((t.id, t.pending_id, t.debit_account_id, t.credit_account_id))
                if t.flags & TransferFlags.POST_PENDING:
                    sums[t.debit_account_id][1] += t.amount
                    sums[t.credit_account_id][3] += t.amount
            else:
                sums[t.debit_account_id][1] += t.amount
                sums[t.credit_account_id][3] += t.amount
        count += len(rows)
        if progress is not None:
            progress(len(rows))
    close_batch()
    cursor.close()
    report.transfers = count
    for batch_id in batches.keys() - seen_batches:
        merkle_check.fail(f"batch {batch_id} is recorded but has no transfers")
    for transfer_id, pending_id, debit_id, credit_id in resolutions:
        hold = pending.get(pending_id)
        if hold is None:
            transfers_check.fail(
                f"transfer {transfer_id} resolves {pending_id}, not a pending transfer"
            )
            continue
        if (hold[0], hold[1]) != (debit_id, credit_id):
            transfers_check.fail(
                f"transfer {transfer_id} resolves {pending_id} with other accounts"
            )
        sums[debit_id][0] -= hold[2]
        sums[credit_id][2] -= hold[2]
    return sums


def _check_accounts(
    accounts: dict[uuid.UUID, tuple[object, ...]],
    sums: dict[uuid.UUID, list[int]],
    balanced: Check,
    counters: Check,
    flags_check: Check,
) -> None:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for account_id, row in accounts.items():
        currency, flags = str(row[1]), int(row[3])  # type: ignore[call-overload]
        stored = [int(v) for v in row[5:9]]  # type: ignore[call-overload]
        expected = sums.get(account_id, [0, 0, 0, 0])
        if stored != expected:
            counters.fail(
                f"account {account_id}: counters {stored} but its transfers sum to {expected}"
                " (debits_pending, debits_posted, credits_pending, credits_posted)"
            )
        total = totals[currency]
        for i in range(4):
            total[i] += stored[i]
        dp, dpo, cp, cpo = stored
        if flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and dp + dpo > cpo:
            flags_check.fail(f"account {account_id}: debits exceed credits")
        if flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and cp + cpo > dpo:
            flags_check.fail(f"account {account_id}: credits exceed debits")
    for currency, (dp, dpo, cp, cpo) in sorted(totals.items()):
        if dpo != cpo:
            balanced.fail(f"{currency}: posted debits {dpo} != posted credits {cpo}")
        if dp != cp:
            balanced.fail(f"{currency}: pending debits {dp} != pending credits {cp}")


def _check_chain(
    sql: LedgerSql, trusted_keys: dict[str, bytes], report: VerifyReport, chain: Check
) -> None:
    batches = {
        sql.id_out(row[0]): (bytes(row[1]), row[2], row[3])
        for row in sql.query(
            "SELECT id, merkle_root, transfer_count, committed_ts FROM ledger_batches"
        )
    }
    unsealed = {
        sql.id_out(row[0]) for row in sql.query("SELECT batch_id FROM ledger_unsealed_batches")
    }
    report.unsealed_batches = len(unsealed)
    sealed: set[uuid.UUID] = set()
    prev_hash, expected_seq = GENESIS_PREV_HASH, 1
    for row in sql.query(f"SELECT {BLOCK_COLUMNS} FROM ledger_blocks ORDER BY seq"):
        block = block_from_row(sql, row)
        report.blocks += 1
        if block.seq != expected_seq:
            chain.fail(f"block {block.seq}: expected block {expected_seq} (a block is missing)")
        if block.prev_hash != prev_hash:
            chain.fail(f"block {block.seq}: does not point at the previous block's hash")
        key = trusted_keys.get(block.key_id)
        if key is None:
            chain.fail(f"block {block.seq}: signed by key {block.key_id}, which is not trusted")
        elif not verify_block(block, key):
            chain.fail(f"block {block.seq}: hash or signature does not verify")
        batch = batches.get(block.batch_id)
        if batch is None:
            chain.fail(f"block {block.seq}: its batch {block.batch_id} does not exist")
        elif batch != (block.merkle_root, block.transfer_count, block.committed_ts):
            chain.fail(f"block {block.seq}: does not match its batch {block.batch_id}")
        sealed.add(block.batch_id)
        prev_hash, expected_seq = block.block_hash, block.seq + 1
    for batch_id in batches.keys() - sealed - unsealed:
        chain.fail(f"batch {batch_id} is neither in a block nor waiting to be sealed")
    for batch_id in sealed & unsealed:
        chain.fail(f"batch {batch_id} is sealed and still queued for sealing")

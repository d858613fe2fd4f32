"""A worker process for the multi-process payment tests: pays from the hot
accounts to the payees with fresh (and some repeated) Idempotency-Keys and
prints one JSON line per attempt.

Run as ``python payments_worker_process.py URL SPEC_JSON``.
"""

from __future__ import annotations

import json
import random
import sys
import uuid

from zhifu.accounts.model import Channel
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments.model import PaymentKind
from zhifu.payments.service import Idempotency, PaymentDraft, PaymentsService
from zhifu.security.signing import Ed25519Signer
from zhifu.store.batching import TransactionBatcher
from zhifu.store.engine import create_db_engine


def main(url: str, spec: dict[str, object]) -> None:
    engine = create_db_engine(url, pool_size=2)
    ledger = LedgerService(engine, Ed25519Signer.generate())
    batcher = TransactionBatcher(engine, name="worker") if engine.dialect.name == "sqlite" else None
    service = PaymentsService(engine, ledger, bank_code=str(spec["bank_code"]), batcher=batcher)
    payers = spec["payers"]
    payees = spec["payees"]
    assert isinstance(payers, list) and isinstance(payees, list)
    rng = random.Random(int(spec["seed"]))  # type: ignore[call-overload]
    keys: list[str] = []
    for _ in range(int(spec["attempts"])):  # type: ignore[call-overload]
        payer = rng.choice(payers)
        payee = rng.choice(payees)
        amount_minor = int(spec["amount_minor"])  # type: ignore[call-overload]
        key = rng.choice(keys) if keys and rng.random() < 0.2 else uuid.uuid4().hex
        keys.append(key)
        scope = f"customer:{payer['customer_id']}"
        draft = PaymentDraft(
            PaymentKind.TRANSFER, Channel.ONLINE, scope, Money(amount_minor, "CNY")
        )
        body = f"{payer['id']}>{payee['number']}:{amount_minor}".encode()
        idempotency = Idempotency(scope, key, body.ljust(32, b"\0")[:32])
        try:
            result = service.transfer(
                uuid.UUID(payer["customer_id"]),
                uuid.UUID(payer["id"]),
                payee["number"],
                draft,
                idempotency,
            )
            outcome = {"order": str(result.order.id), "replayed": result.replayed}
        except Exception as exc:  # noqa: BLE001 - reported for the test to judge
            outcome = {"error": type(exc).__name__}
        print(json.dumps(outcome), flush=True)
    if batcher is not None:
        batcher.close()
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))

"""Several OS processes paying from the same accounts at once, on SQLite and
PostgreSQL: no account is overdrawn, no limit is passed, no payment is made
twice for one Idempotency-Key, and the ledger verifies afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from identity_factories import FakeClock
from payments_factories import PayingBank, funded
from sqlalchemy import Engine, func, select

from zhifu.accounts.model import CLASS_III_OUTGOING_DAILY_MAX_MINOR, AccountClass
from zhifu.ledger.service import LedgerService
from zhifu.store.tables import payments_idempotency, payments_orders

WORKERS = 3
ATTEMPTS = 60
AMOUNT_MINOR = 300_00  # CNY 300.00: the Class III payer can pay six a day
WORKER = Path(__file__).with_name("payments_worker_process.py")


def test_processes_never_overdraw_pass_limits_or_pay_twice(
    engine: Engine, ledger: LedgerService, migrated_db_url: str
) -> None:
    bank = PayingBank(engine, ledger, FakeClock())
    rich = funded(bank, 3_000_00)  # ten payments' worth
    capped = funded(bank, 2_000_00, account_class=AccountClass.CLASS_III)
    payees = [funded(bank, 0) for _ in range(3)]
    spec = {
        "bank_code": bank.accounts.bank_code,
        "payers": [{"id": str(a.id), "customer_id": str(a.customer_id)} for a in (rich, capped)],
        "payees": [{"number": p.number} for p in payees],
        "amount_minor": AMOUNT_MINOR,
        "attempts": ATTEMPTS,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), migrated_db_url, json.dumps({**spec, "seed": seed})],
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(WORKERS)
    ]
    lines: list[dict[str, object]] = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        lines.extend(json.loads(line) for line in out.splitlines())

    errors = Counter(str(line["error"]) for line in lines if "error" in line)
    assert set(errors) <= {
        "InsufficientFundsError",
        "LimitExceededError",
        "IdempotencyConflictError",
    }, errors
    paid = {str(line["order"]) for line in lines if "order" in line}
    with engine.connect() as connection:
        orders = connection.execute(select(payments_orders)).all()
        keys = connection.execute(select(func.count()).select_from(payments_idempotency))
        assert keys.scalar_one() == len(orders)
    assert {str(o.id) for o in orders} == paid  # every answer names a stored order, once
    by_payer = Counter(o.debit_account_id for o in orders)
    assert by_payer[rich.id] * AMOUNT_MINOR <= 3_000_00
    assert by_payer[capped.id] * AMOUNT_MINOR <= CLASS_III_OUTGOING_DAILY_MAX_MINOR
    assert by_payer[rich.id] == 10  # enough attempts to drain it exactly
    balances = [bank.ledger.get_account(a.id).balance_posted for a in (rich, capped, *payees)]
    assert sum(balances) == 5_000_00  # nothing invented or lost
    assert min(balances) >= 0
    assert bank.ledger.verify().ok

"""Property: whatever customers ask for, in any order, with retries, freezes
and reused keys, the payments keep the books exact. Each balance equals a
simple model's, the total never moves, a refused payment leaves no trace, and
one Idempotency-Key never pays twice."""

from __future__ import annotations

from typing import Any

from accounts_factories import customer_ctx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from identity_factories import FakeClock
from payments_factories import PayingBank, funded
from sqlalchemy import Engine, func, select

from zhifu.accounts import errors as accounts_errors
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments import errors as payments_errors
from zhifu.store.tables import payments_orders

ACCOUNTS = 4
FUNDING_MINOR = 50_00

# One step: (payer, payee, amount in fen, key number or None for a fresh key, freeze toggle).
steps = st.lists(
    st.tuples(
        st.integers(0, ACCOUNTS - 1),
        st.integers(0, ACCOUNTS - 1),
        st.integers(1, 30_00),
        st.one_of(st.none(), st.integers(0, 3)),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(program=steps)
def test_payments_keep_the_books_exact(
    sqlite_engine: Engine, sqlite_ledger: LedgerService, program: list[Any]
) -> None:
    bank = PayingBank(sqlite_engine, sqlite_ledger, FakeClock())
    accounts = [funded(bank, FUNDING_MINOR) for _ in range(ACCOUNTS)]
    model = [FUNDING_MINOR] * ACCOUNTS
    frozen = [False] * ACCOUNTS
    keys: dict[tuple[int, int], tuple[tuple[int, int], str]] = {}  # (payer, n) -> request, order
    with sqlite_engine.connect() as connection:
        orders_before = connection.execute(
            select(func.count()).select_from(payments_orders)
        ).scalar_one()
    paid = 0
    for index, (payer, payee, amount, key_number, toggle) in enumerate(program):
        account = accounts[payer]
        if toggle:
            ctx = customer_ctx(account.customer_id)
            if frozen[payer]:
                bank.accounts.unfreeze(account.customer_id, account.id, ctx)
            else:
                bank.accounts.freeze(account.customer_id, account.id, ctx)
            frozen[payer] = not frozen[payer]
        key = f"p{payer}-k{key_number}" if key_number is not None else f"fresh-{index}"
        if key_number is not None:
            key = f"{key}-{id(bank)}"
        earlier = keys.get((payer, key_number)) if key_number is not None else None
        amount_text = Money(amount, "CNY").to_decimal_string()
        try:
            result = bank.transfer(account, accounts[payee], amount_text, key=key)
        except payments_errors.IdempotencyConflictError:
            assert earlier is not None and earlier[0] != (payee, amount)
            continue
        except payments_errors.InvalidPaymentError:
            assert payer == payee and earlier is None
            continue
        except accounts_errors.AccountFrozenError:
            assert frozen[payer] and earlier is None
            continue
        except accounts_errors.InsufficientFundsError:
            assert model[payer] < amount and earlier is None
            continue
        if earlier is not None:
            assert result.replayed and str(result.order.id) == earlier[1]
            continue
        assert not result.replayed and not frozen[payer] and payer != payee
        model[payer] -= amount
        model[payee] += amount
        paid += 1
        if key_number is not None:
            keys[(payer, key_number)] = ((payee, amount), str(result.order.id))
    balances = [bank.ledger.get_account(a.id).balance_posted for a in accounts]
    assert balances == model
    assert sum(balances) == ACCOUNTS * FUNDING_MINOR
    with sqlite_engine.connect() as connection:
        orders_after = connection.execute(
            select(func.count()).select_from(payments_orders)
        ).scalar_one()
    assert orders_after - orders_before == paid

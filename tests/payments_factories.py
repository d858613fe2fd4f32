"""Test-data factories of the payments context: the service beside the accounts
``Bank``, drafts of customer transfers, and idempotency keys for them.

Imported directly by the tests (``from payments_factories import ...``).
"""

from __future__ import annotations

import uuid

from accounts_factories import Bank, new_key
from identity_factories import FakeClock
from sqlalchemy import Engine

from zhifu.accounts.model import Channel
from zhifu.accounts.service import AccountView
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.payments.model import PaymentKind, request_fingerprint
from zhifu.payments.service import Idempotency, PaymentDraft, PaymentResult, PaymentsService


class PayingBank(Bank):
    """The accounts ``Bank`` with the payments service over the same engine and ledger."""

    def __init__(self, engine: Engine, ledger: LedgerService, clock: FakeClock) -> None:
        super().__init__(engine, ledger, clock)
        self.payments = PaymentsService(engine, ledger, clock, bank_code=self.accounts.bank_code)

    def transfer(
        self,
        payer: AccountView,
        payee: AccountView,
        amount: str,
        *,
        key: str | None = None,
        memo: str = "",
        channel: Channel = Channel.ONLINE,
        step_up: str | None = None,
        body: dict[str, str] | None = None,
    ) -> PaymentResult:
        """A transfer from ``payer`` to ``payee`` as their customer asks for it."""
        money = Money.parse(amount, payer.currency)
        draft = PaymentDraft(
            kind=PaymentKind.TRANSFER,
            channel=channel,
            initiator=f"customer:{payer.customer_id}",
            amount=money,
            memo=memo,
            step_up=step_up,
        )
        request = body or {"to": payee.number, "amount": amount, "memo": memo}
        idempotency = Idempotency(
            f"customer:{payer.customer_id}",
            key or new_key(),
            request_fingerprint("POST", "/v1/payments", request),
        )
        return self.payments.transfer(payer.customer_id, payer.id, payee.number, draft, idempotency)


def funded(bank: PayingBank, amount_minor: int, **kwargs: object) -> AccountView:
    """A new customer's account holding ``amount_minor``."""
    account = bank.open(bank.customer(), **kwargs)  # type: ignore[arg-type]
    if amount_minor:
        bank.deposit(account, amount_minor)
    return account


def customer_of(account: AccountView) -> uuid.UUID:
    return account.customer_id

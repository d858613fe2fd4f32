"""Test-data factories of the accounts context: the service on a test engine,
customers with accounts, tellers' audit contexts, and a look at stored PANs.

Imported directly by the tests (``from accounts_factories import ...``).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from identity_factories import FakeClock, identity_service, new_keyring, register
from sqlalchemy import Engine, select

from zhifu.accounts.model import AccountClass
from zhifu.accounts.service import CARDS_TABLE, AccountsService, AccountView
from zhifu.identity.service import IdentityService
from zhifu.ledger.service import LedgerService
from zhifu.ops.audit import AuditContext
from zhifu.security.envelope import KeyRing, column_context
from zhifu.store.tables import accounts_cards

TELLER_SOURCE = "198.51.100.20"
_requests = itertools.count(1)


class Bank:
    """The identity and accounts services over one engine and ledger, one key ring."""

    def __init__(
        self,
        engine: Engine,
        ledger: LedgerService,
        clock: FakeClock,
        keyring: KeyRing | None = None,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.clock = clock
        self.keyring = keyring or new_keyring()
        self.identity: IdentityService = identity_service(engine, clock, self.keyring)
        self.accounts = AccountsService(engine, ledger, self.keyring, clock)

    def customer(self) -> uuid.UUID:
        """A newly registered customer's id."""
        return register(self.identity).id

    def open(
        self,
        customer_id: uuid.UUID,
        product: str = "current",
        account_class: AccountClass | str = AccountClass.CLASS_I,
        currency: str = "CNY",
        **kwargs: Any,
    ) -> AccountView:
        return self.accounts.open_account(
            customer_id, product, account_class, currency, customer_ctx(customer_id), **kwargs
        )

    def deposit(self, account: AccountView, amount_minor: int, key: str | None = None) -> None:
        self.accounts.cash_deposit(
            account.id, amount_minor, account.currency, key or new_key(), teller_ctx()
        )

    def withdraw(self, account: AccountView, amount_minor: int, key: str | None = None) -> None:
        self.accounts.cash_withdrawal(
            account.id, amount_minor, account.currency, key or new_key(), teller_ctx()
        )

    def stored_pan(self, card_id: uuid.UUID) -> str:
        """The card number as the vault holds it (decrypted here, for checks only)."""
        with self.engine.connect() as connection:
            token = connection.execute(
                select(accounts_cards.c.pan_enc).where(accounts_cards.c.id == card_id)
            ).scalar_one()
        context = column_context(CARDS_TABLE, "pan_enc", card_id)
        return self.keyring.decrypt_text(bytes(token), context=context)


TELLER_ID = uuid.UUID("0190f000-0000-7000-8000-00000000a11c")


def new_key() -> str:
    """A fresh idempotency key."""
    return f"key-{uuid.uuid4().hex}"


def customer_ctx(customer_id: uuid.UUID) -> AuditContext:
    actor = f"customer:{customer_id}"
    return AuditContext(
        actor=actor, role="customer", source="203.0.113.7", request_id=f"r{next(_requests)}"
    )


def teller_ctx(teller_id: uuid.UUID = TELLER_ID) -> AuditContext:
    return AuditContext(
        actor=f"staff:{teller_id}",
        role="teller",
        source=TELLER_SOURCE,
        request_id=f"t{next(_requests)}",
    )

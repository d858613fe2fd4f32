"""The payee book: the accounts a customer pays again and again.

Design note.

A payee is an account (at this bank today: scheme ``intra_bank``) with the
account holder's name as the customer typed it and a nickname of the
customer's choosing. The account number and the name are personal data of
somebody who never agreed to be in this database: they are stored only as
envelope tokens (``zhifu.security.envelope``, registered for ``zhifu keys
rotate``) and shown only masked (``****1234``, ``王*明``). A blind index of the
customer, scheme, bank and number (:func:`zhifu.payments.model.payee_index_text`)
finds a duplicate without decrypting anything; the database refuses a second
row with the same index for the customer, so a race cannot add one either.

Rules and invariants:

1. Adding a payee needs a second factor, on the bound phone when there is one
   (the API asks for it, action ``payments.payee.add``): a new payee is where
   a stolen session would send money.
2. The account must exist at this bank and not be closed; the number is
   checked (:func:`zhifu.accounts.model.parse_account_number`) before anything else.
3. A customer holds at most :data:`~zhifu.payments.model.PAYEES_PER_CUSTOMER_MAX`
   payees; the count and the insert run with the customer row locked.
4. Another customer's payee answers "not found", exactly like one that does not exist.
5. Deleting a payee deletes its encrypted data. A payee an active or paused
   schedule pays cannot be deleted (cancel the schedule first); finished and
   cancelled schedules keep their label and lose the link.
6. Paying a payee is a transfer (:meth:`PaymentsService.execute`): the payee
   is read and decrypted before the unit of work (a remote key service never
   holds a database lock), then checked again inside it by its blind index.

Each public method is one unit of work with its audit event; no event or log
line holds the number or the name, only the masked forms.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts import store as accounts_store
from zhifu.accounts.model import (
    ACCOUNT_NUMBER_LENGTH,
    ACCOUNT_NUMBER_MASK_TAIL,
    AccountStatus,
    normalise_nickname,
    parse_account_number,
)
from zhifu.ids import uuid7
from zhifu.ops.audit import AuditContext, record
from zhifu.payments import store
from zhifu.payments.errors import (
    PayeeExistsError,
    PayeeInUseError,
    PayeeNotFoundError,
    TooManyError,
)
from zhifu.payments.model import (
    PAYEES_PER_CUSTOMER_MAX,
    PayeeScheme,
    mask_payee_name,
    normalise_payee_name,
    payee_index_text,
)
from zhifu.payments.service import (
    Idempotency,
    PaymentDraft,
    PaymentResult,
    PaymentsService,
    account_label,
)
from zhifu.security.envelope import KeyRing, column_context
from zhifu.store.uow import run_in_transaction

Clock = Callable[[], int]

PAYEES_TABLE: Final = "payments_payees"
PAYEE_ACCOUNT_PURPOSE: Final = "payments.payees.account"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class PayeeView:
    """A payee as its customer sees it: the number and the name masked."""

    id: uuid.UUID
    customer_id: uuid.UUID
    nickname: str
    scheme: PayeeScheme
    bank_code: str | None
    bic: str | None
    bank_name: str | None
    account_masked: str
    name_masked: str
    created_ts: int
    updated_ts: int


@dataclass(frozen=True, slots=True)
class PayeeSecrets:
    """A payee's decrypted number, for paying it; never leaves the service layer."""

    row: Row[Any]
    account_number: str


class PayeesService:
    """A customer's payee book, and payments to its payees."""

    def __init__(
        self,
        engine: Engine,
        keyring: KeyRing,
        payments: PaymentsService,
        clock: Clock = now_us,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.payments = payments
        self.clock = clock
        self.bank_code = payments.bank_code

    # --- the book -------------------------------------------------------------------------

    def add(
        self,
        customer_id: uuid.UUID,
        account_number: str,
        name: str,
        ctx: AuditContext,
        *,
        nickname: str | None = None,
    ) -> PayeeView:
        """Add an account at this bank to the customer's payee book.

        Raises:
            InvalidAccountNumberError: a mistyped number, or another bank's.
            InvalidPayeeError: the name breaks a rule.
            InvalidNicknameError: the nickname breaks a rule.
            AccountNotFoundError: no such account at this bank.
            AccountStateError: the account is closed.
            CustomerNotFoundError: the customer is not active.
            PayeeExistsError: the book holds this account already.
            TooManyError: the book is full.
        """
        number = parse_account_number(account_number, bank_code=self.bank_code).number
        holder = normalise_payee_name(name)
        label = account_label(number)
        chosen = label if nickname is None else normalise_nickname(nickname)
        payee_id = uuid7()
        scheme = PayeeScheme.INTRA_BANK
        index_text = payee_index_text(customer_id, scheme, self.bank_code, number)
        values: dict[str, Any] = {
            "id": payee_id,
            "customer_id": customer_id,
            "nickname": chosen,
            "scheme": scheme.value,
            "bank_code": self.bank_code,
            "bic": None,
            "bank_name": None,
            "account_number_enc": self.keyring.encrypt_text(
                number, context=column_context(PAYEES_TABLE, "account_number_enc", payee_id)
            ),
            "name_enc": self.keyring.encrypt_text(
                holder, context=column_context(PAYEES_TABLE, "name_enc", payee_id)
            ),
            "account_index": self.keyring.blind_index(index_text, purpose=PAYEE_ACCOUNT_PURPOSE),
            "account_last4": number[-4:],
            "pii_key_id": self.keyring.active_key_id,
        }

        def work(connection: Connection) -> Row[Any]:
            customer = accounts_store.lock_customer(connection, customer_id)
            if customer is None or customer.status != "active":
                raise accounts_errors.CustomerNotFoundError("no such customer")
            account = accounts_store.account_by_number(connection, number)
            if account is None:
                raise accounts_errors.AccountNotFoundError(
                    f"no account {label} at this bank: check the number"
                )
            if account.status == AccountStatus.CLOSED.value:
                raise accounts_errors.AccountStateError(
                    f"account {label} is closed: it cannot be paid"
                )
            existing = store.payee_by_index(connection, customer_id, values["account_index"])
            if existing is not None:
                raise PayeeExistsError(
                    f"your payee book already holds account {label}, as {existing.nickname!r}"
                )
            if store.count_payees(connection, customer_id) >= PAYEES_PER_CUSTOMER_MAX:
                raise TooManyError(
                    f"a payee book holds at most {PAYEES_PER_CUSTOMER_MAX} payees; delete one first"
                )
            now = self.clock()
            store.insert_payee(connection, {**values, "created_ts": now, "updated_ts": now})
            record(
                connection,
                ctx.event(
                    "payments.payee.add",
                    f"payee:{payee_id}",
                    account=label,
                    scheme=scheme.value,
                ),
            )
            return self._owned(connection, customer_id, payee_id)

        # A concurrent add of the same account is a unique violation: the retry names it.
        return self._view(run_in_transaction(self.engine, work, retry_unique_violation=True))

    def list_payees(self, customer_id: uuid.UUID) -> list[PayeeView]:
        """The customer's payees, oldest first."""
        rows = run_in_transaction(
            self.engine, lambda c: store.payees_of(c, customer_id), write=False
        )
        return [self._view(row) for row in rows]

    def get(self, customer_id: uuid.UUID, payee_id: uuid.UUID) -> PayeeView:
        """Raises PayeeNotFoundError (also for another customer's payee)."""
        return self._view(self._read(customer_id, payee_id))

    def rename(
        self, customer_id: uuid.UUID, payee_id: uuid.UUID, nickname: str, ctx: AuditContext
    ) -> PayeeView:
        """Raises InvalidNicknameError, PayeeNotFoundError."""
        chosen = normalise_nickname(nickname)

        def work(connection: Connection) -> Row[Any]:
            row = self._owned(connection, customer_id, payee_id, lock=True)
            if row.nickname != chosen:
                store.update_payee(
                    connection, payee_id, {"nickname": chosen, "updated_ts": self.clock()}
                )
                record(
                    connection,
                    ctx.event("payments.payee.rename", f"payee:{payee_id}", nickname=chosen),
                )
            return self._owned(connection, customer_id, payee_id)

        return self._view(run_in_transaction(self.engine, work))

    def delete(self, customer_id: uuid.UUID, payee_id: uuid.UUID, ctx: AuditContext) -> None:
        """Delete a payee and its encrypted data.

        Raises PayeeNotFoundError, PayeeInUseError (an active or paused schedule pays it).
        """

        def work(connection: Connection) -> None:
            accounts_store.lock_customer(connection, customer_id)
            row = self._owned(connection, customer_id, payee_id, lock=True)
            live = store.live_schedules_paying(connection, payee_id)
            if live:
                raise PayeeInUseError(
                    f"{live} active or paused schedule(s) pay this payee: cancel them first"
                )
            store.delete_payee(connection, payee_id)
            record(
                connection,
                ctx.event(
                    "payments.payee.delete",
                    f"payee:{payee_id}",
                    account=f"****{row.account_last4}",
                ),
            )

        run_in_transaction(self.engine, work)

    # --- paying a payee -------------------------------------------------------------------

    def pay(
        self,
        customer_id: uuid.UUID,
        payee_id: uuid.UUID,
        from_account_id: uuid.UUID,
        draft: PaymentDraft,
        idempotency: Idempotency | None,
    ) -> PaymentResult:
        """Pay a payee from one of the customer's accounts, like a transfer.

        Raises PayeeNotFoundError (no such payee of the customer's, or it was
        deleted meanwhile), and whatever :meth:`PaymentsService.transfer` raises.
        """
        found = self.secrets(customer_id, payee_id)
        resolve = self.resolver(customer_id, found, from_account_id)
        return self.payments.execute(draft, resolve, idempotency)

    def secrets(self, customer_id: uuid.UUID, payee_id: uuid.UUID) -> PayeeSecrets:
        """The payee's row and decrypted number (outside any unit of work).

        Raises PayeeNotFoundError.
        """
        row = self._read(customer_id, payee_id)
        context = column_context(PAYEES_TABLE, "account_number_enc", payee_id)
        number = self.keyring.decrypt_text(bytes(row.account_number_enc), context=context)
        return PayeeSecrets(row, number)

    def resolver(
        self, customer_id: uuid.UUID, found: PayeeSecrets, from_account_id: uuid.UUID
    ) -> Callable[[Connection], tuple[Row[Any], Row[Any]]]:
        """The payer's and the payee's account rows, looked up inside the payment's
        unit of work: the payee must still be in the book with the same account."""
        payee_id, index = found.row.id, bytes(found.row.account_index)

        def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
            again = store.payee_of(connection, customer_id, payee_id)
            if again is None or bytes(again.account_index) != index:
                raise PayeeNotFoundError("no such payee: it was deleted")
            payer = accounts_store.account_by_id(connection, from_account_id)
            if payer is None or payer.customer_id != customer_id:
                raise accounts_errors.AccountNotFoundError("no such account")
            payee = accounts_store.account_by_number(connection, found.account_number)
            if payee is None:
                raise accounts_errors.AccountNotFoundError(
                    f"the payee's account {account_label(found.account_number)} no longer exists"
                )
            return payer, payee

        return resolve

    # --- helpers --------------------------------------------------------------------------

    def _read(self, customer_id: uuid.UUID, payee_id: uuid.UUID) -> Row[Any]:
        return run_in_transaction(
            self.engine, lambda c: self._owned(c, customer_id, payee_id), write=False
        )

    @staticmethod
    def _owned(
        connection: Connection, customer_id: uuid.UUID, payee_id: uuid.UUID, *, lock: bool = False
    ) -> Row[Any]:
        row = store.payee_of(connection, customer_id, payee_id, lock=lock)
        if row is None:
            raise PayeeNotFoundError("no such payee")
        return row

    def _view(self, row: Row[Any]) -> PayeeView:
        context = column_context(PAYEES_TABLE, "name_enc", row.id)
        name = self.keyring.decrypt_text(bytes(row.name_enc), context=context)
        return PayeeView(
            id=row.id,
            customer_id=row.customer_id,
            nickname=row.nickname,
            scheme=PayeeScheme(row.scheme),
            bank_code=row.bank_code,
            bic=row.bic,
            bank_name=row.bank_name,
            account_masked=_masked_number(row),
            name_masked=mask_payee_name(name),
            created_ts=int(row.created_ts),
            updated_ts=int(row.updated_ts),
        )


def _masked_number(row: Row[Any]) -> str:
    """The account number as :func:`mask_account_number` shows it, from the stored
    last four digits: a list of payees decrypts no number."""
    return "*" * (ACCOUNT_NUMBER_LENGTH - ACCOUNT_NUMBER_MASK_TAIL) + str(row.account_last4)

"""Accounts use cases: opening accounts, listing them with their balances,
nicknames and defaults, freezing and closing, debit cards, and teller cash.

Each public method is one use case; its database changes run in one unit of
work (``run_in_transaction``) with their audit event. The rules themselves are
:mod:`zhifu.accounts.model`'s; this module loads, decides with them, and stores.

Two stores, two transactions. The money is in the ledger, which has its own
units of work (and, on SQLite, its own cache), so a use case that touches both
cannot commit them together. Each such use case is ordered so that a crash or
a failure between the two leaves nothing a retry cannot finish:

- **Opening**: the account id is chosen first (``uuid7``, or a ``uuid5`` of the
  customer and an idempotency key). The ledger account is created with it, then
  the ``accounts_accounts`` row. A ledger account that exists with exactly the
  same fields answers ``exists``, so running the use case again with the same
  id finds it and inserts the row: it converges. What a failure can leave is an
  empty ledger account with owner ``customer:<id>`` and no row, which moves no
  money and is refused by every transfer that names no existing row.
- **Closing**: the ledger account is closed first (its own transaction checks
  again that it is settled at zero), then the row. A failure in between leaves
  a closed ledger account under an open row: money cannot reach it, and
  closing again skips the ledger step and closes the row.
- **Teller cash**: the ledger transfer's id is a ``uuid5`` of the teller and
  the idempotency key, so a retry is answered ``exists`` and moves nothing. The
  audit event is recorded right after the transfer commits (the transfer itself
  is in the ledger's signed journal either way).

Who may change what. Customers open, rename, choose the default, freeze,
unfreeze (the API asks for a step-up first) and close their own accounts, and
freeze, unfreeze (step-up), report lost and reissue their own cards. Another
customer's account or card is "not found". Staff with ``cash.manage`` take
cash deposits and pay withdrawals at the counter; staff with
``customers.read`` list a customer's accounts. Bank-initiated freezes (judicial
ones) come with the support context; they will need to record who froze an
account, so that a customer cannot lift the bank's freeze.

Concurrency. A customer's account changes run one at a time (the customer row
is locked ``FOR NO KEY UPDATE`` on PostgreSQL; SQLite has one writer), so
counting accounts and choosing the default cannot race, and the database
refuses a second default per currency anyway (a partial unique index). Status
changes and cash movements of one account also run one at a time within a
process (striped locks), so a freeze never interleaves with a withdrawal's
check and its transfer. Across PostgreSQL processes a withdrawal whose status
check ran before a freeze committed can still post after it; the payments
context will close that window with ledger holds.

Limits. PBOC daily and yearly limits need running totals per account, which
come with the payments context. Until then teller cash is checked against the
one limit that needs none: the Class III balance cap.

Card numbers are drawn at random (``random_pan``), refused by the blind index
if they exist already (then drawn again), stored only as envelope tokens, and
shown only masked. The token stands for the PAN everywhere else.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError

from zhifu.accounts import store
from zhifu.accounts.errors import (
    AccountNotFoundError,
    AccountsError,
    AccountStateError,
    CardNotFoundError,
    CardStateError,
    CustomerNotFoundError,
    IdempotencyConflictError,
    InsufficientFundsError,
    InvalidCashAmountError,
    InvalidIdempotencyKeyError,
    InvalidLimitError,
    LimitExceededError,
    LimitScope,
    QuotaExceededError,
    UnknownProductError,
    UnsupportedCurrencyError,
)
from zhifu.accounts.model import (
    ACCOUNT_SERIAL_MAX,
    BANK_CODE_DEFAULT,
    BRANCH_CODE_DEFAULT,
    DEFAULT_POLICIES,
    ISSUER_BIN_DEFAULT,
    PRODUCTS,
    AccountClass,
    AccountEvent,
    AccountStatus,
    CardEvent,
    CardExpiry,
    CardStatus,
    Channel,
    CustomerLimits,
    Direction,
    LedgerCounters,
    LimitPolicy,
    PolicyKey,
    account_transition,
    card_expiry,
    card_transition,
    check_account_opening,
    check_account_usable,
    effective_limits,
    mask_account_number,
    mask_pan,
    new_account_number,
    new_card_token,
    normalise_nickname,
    parse_account_number,
    policy_for,
    random_pan,
    reissued_card_status,
    remaining_allowance,
    spending_buckets,
    validate_customer_limits,
)
from zhifu.ids import uuid7
from zhifu.invariant import InvariantError, invariant
from zhifu.ledger.errors import AccountNotClosableError
from zhifu.ledger.model import (
    Account,
    AccountFlags,
    AccountRequest,
    AccountResult,
    Result,
    Transfer,
    TransferRequest,
)
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.ops.audit import AuditContext, record
from zhifu.payments import store as payments_store
from zhifu.security.envelope import KeyRing, column_context
from zhifu.store.uow import is_transient, run_in_transaction

T = TypeVar("T")
Clock = Callable[[], int]

# --- limits -------------------------------------------------------------------------------

# Open or frozen accounts a customer may hold at once.
ACCOUNTS_LIVE_PER_CUSTOMER_MAX: Final = 20
# Every account a customer ever held, closed ones included: bounds their list.
ACCOUNTS_PER_CUSTOMER_MAX: Final = 50
# Active or frozen cards per account (a physical and a virtual one, say).
CARDS_LIVE_PER_ACCOUNT_MAX: Final = 2
# Every card an account ever had, lost and closed ones included: bounds its list.
CARDS_PER_ACCOUNT_MAX: Final = 10
# Draws of a random card number before giving up (a clash is 1 in 10^9 a draw).
CARD_NUMBER_DRAWS_MAX: Final = 8
# One teller cash operation moves at most this many minor units (10,000,000.00 CNY).
CASH_AMOUNT_MINOR_MAX: Final = 1_000_000_000
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 64
IDEMPOTENCY_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Status changes and cash movements of one account run one at a time per process.
ACCOUNT_LOCK_STRIPES: Final = 64

# --- ledger wiring ------------------------------------------------------------------------

# Fixed: every derived id (cash accounts, cash transfers, idempotent openings) hangs off it.
ACCOUNTS_NAMESPACE: Final = uuid.UUID("a7c0b5f2-3d4e-5f60-8a1b-2c3d4e5f6a7b")
LEDGER_CODE_BANK_CASH: Final = 1001
LEDGER_CODES: Final = {"current": 2001, "savings": 2002}
TRANSFER_CODE_CASH_DEPOSIT: Final = 3001
TRANSFER_CODE_CASH_WITHDRAWAL: Final = 3002
CUSTOMER_ACCOUNT_FLAGS: Final = int(
    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.HISTORY
)
# The bank's vault: an asset, debited when cash comes in. No balance flag: the
# vault also holds cash that came from elsewhere (other branches, the central bank).
BANK_CASH_FLAGS: Final = int(AccountFlags.NONE)
BANK_CASH_OWNER: Final = "bank:cash"
PAN_PURPOSE: Final = "accounts.cards.pan"
CARDS_TABLE: Final = "accounts_cards"

invariant(set(LEDGER_CODES) == set(PRODUCTS), "every product needs a ledger code")


def now_us() -> int:
    return time.time_ns() // 1000


def bank_cash_account_id(currency: str) -> uuid.UUID:
    """The ledger id of the bank's cash account in ``currency``: the same everywhere."""
    return uuid.uuid5(ACCOUNTS_NAMESPACE, f"bank:cash:{currency}")


def cash_transfer_id(actor: str, idempotency_key: str) -> uuid.UUID:
    """The ledger transfer id of a teller's cash operation: the same on every retry."""
    return uuid.uuid5(ACCOUNTS_NAMESPACE, f"cash:{actor}:{idempotency_key}")


def opening_id(customer_id: uuid.UUID, idempotency_key: str) -> uuid.UUID:
    """The account id of an opening sent with an idempotency key."""
    return uuid.uuid5(ACCOUNTS_NAMESPACE, f"open:{customer_id}:{idempotency_key}")


def issuing_id(customer_id: uuid.UUID, idempotency_key: str) -> uuid.UUID:
    """The card id of a card issue sent with an idempotency key."""
    return uuid.uuid5(ACCOUNTS_NAMESPACE, f"card:{customer_id}:{idempotency_key}")


def check_idempotency_key(key: str | None) -> str:
    """``key`` when it is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'.

    Raises :class:`InvalidIdempotencyKeyError` saying what is allowed.
    """
    if key is None or not key:
        raise InvalidIdempotencyKeyError(
            "send an Idempotency-Key: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-', "
            "new for each operation and the same when retrying it"
        )
    if not isinstance(key, str) or not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise InvalidIdempotencyKeyError(
            f"an Idempotency-Key is 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} characters of A-Z, a-z, "
            "0-9, '_' and '-'"
        )
    return key


# --- views ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account and its ledger balances: posted, and available (less holds)."""

    id: uuid.UUID
    customer_id: uuid.UUID
    number: str
    product: str
    account_class: AccountClass
    currency: str
    nickname: str
    status: AccountStatus
    is_default: bool
    created_ts: int
    updated_ts: int
    closed_ts: int | None
    balance: Money
    available: Money

    @property
    def number_masked(self) -> str:
        return mask_account_number(self.number)


@dataclass(frozen=True, slots=True)
class CardView:
    """A debit card as anyone outside the card vault sees it: masked, by token."""

    id: uuid.UUID
    account_id: uuid.UUID
    token: str
    pan_masked: str
    expiry: CardExpiry
    status: CardStatus
    replaced_by: uuid.UUID | None
    created_ts: int
    updated_ts: int


class CashKind(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"

    @property
    def direction(self) -> Direction:
        return Direction.INCOMING if self is CashKind.DEPOSIT else Direction.OUTGOING

    @property
    def code(self) -> int:
        return (
            TRANSFER_CODE_CASH_DEPOSIT
            if self is CashKind.DEPOSIT
            else TRANSFER_CODE_CASH_WITHDRAWAL
        )


_KIND_OF_CODE: Final = {kind.code: kind for kind in CashKind}


@dataclass(frozen=True, slots=True)
class CashReceipt:
    """What the teller hands over: the transfer, and whether this was a retry."""

    transfer_id: uuid.UUID
    kind: CashKind
    account_id: uuid.UUID
    account_number_masked: str
    amount: Money
    ts: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class _NewCard:
    """A freshly drawn card, encrypted before any transaction opens."""

    values: dict[str, Any]
    pan_masked: str


class AccountsService:
    """Customers' accounts and debit cards, and teller cash, over the ledger."""

    def __init__(
        self,
        engine: Engine,
        ledger: LedgerService,
        keyring: KeyRing,
        clock: Clock = now_us,
        *,
        bank_code: str = BANK_CODE_DEFAULT,
        branch_code: str = BRANCH_CODE_DEFAULT,
        issuer_bin: str = ISSUER_BIN_DEFAULT,
        policies: Mapping[PolicyKey, LimitPolicy] | None = None,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.keyring = keyring
        self.clock = clock
        self.bank_code = bank_code
        self.branch_code = branch_code
        self.issuer_bin = issuer_bin
        self.policies = DEFAULT_POLICIES if policies is None else policies
        new_account_number(0, bank_code=bank_code, branch_code=branch_code)  # raises if bad
        random_pan(issuer_bin=issuer_bin)  # raises if the BIN is bad
        self._locks = tuple(threading.Lock() for _ in range(ACCOUNT_LOCK_STRIPES))
        self._cash_accounts_ready: set[str] = set()

    # --- helpers ------------------------------------------------------------------------

    def _tx(
        self, work: Callable[[Connection], T], *, write: bool = True, retry_unique: bool = False
    ) -> T:
        return run_in_transaction(
            self.engine, work, write=write, retry_unique_violation=retry_unique
        )

    @contextmanager
    def _guard(self, account_id: uuid.UUID) -> Iterator[None]:
        with self._locks[account_id.int % ACCOUNT_LOCK_STRIPES]:
            yield

    def _owned(
        self,
        connection: Connection,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        *,
        lock: bool = False,
    ) -> Row[Any]:
        row = store.account_by_id(connection, account_id, lock=lock)
        if row is None or row.customer_id != customer_id:
            raise AccountNotFoundError("no such account")
        return row

    def _owned_card(
        self,
        connection: Connection,
        customer_id: uuid.UUID,
        card_id: uuid.UUID,
        *,
        lock: bool = False,
    ) -> Row[Any]:
        row = store.card_with_owner(connection, card_id, lock=lock)
        if row is None or row.customer_id != customer_id:
            raise CardNotFoundError("no such card")
        return row

    def _views(self, rows: Sequence[Row[Any]]) -> list[AccountView]:
        ledger_accounts = self.ledger.lookup_accounts([row.id for row in rows])
        views = []
        for row in rows:
            ledger_account = ledger_accounts.get(row.id)
            if ledger_account is None:
                raise InvariantError(f"account {row.id} has no ledger account")
            views.append(_account_view(row, ledger_account))
        return views

    def _view(self, row: Row[Any]) -> AccountView:
        return self._views([row])[0]

    def _card_view(self, row: Row[Any]) -> CardView:
        context = column_context(CARDS_TABLE, "pan_enc", row.id)
        pan = self.keyring.decrypt_text(bytes(row.pan_enc), context=context)
        return CardView(
            id=row.id,
            account_id=row.account_id,
            token=row.token,
            pan_masked=mask_pan(pan),
            expiry=CardExpiry(int(row.expiry_year), int(row.expiry_month)),
            status=CardStatus(row.status),
            replaced_by=row.replaced_by,
            created_ts=int(row.created_ts),
            updated_ts=int(row.updated_ts),
        )

    # --- opening ------------------------------------------------------------------------

    def open_account(
        self,
        customer_id: uuid.UUID,
        product_code: str,
        account_class: AccountClass | str,
        currency: str,
        ctx: AuditContext,
        *,
        nickname: str | None = None,
        account_id: uuid.UUID | None = None,
    ) -> AccountView:
        """Open an account: the ledger account first, then the account row.

        ``account_id`` (default: a new UUIDv7) makes the call idempotent: again
        with the same id and the same product, class and currency, it answers
        the account opened before. The first open account in a currency
        becomes the customer's default for it.

        Raises:
            UnknownProductError, UnsupportedCurrencyError, InvalidNicknameError:
                the product, class, currency or nickname breaks a rule.
            CustomerNotFoundError: no such active customer.
            QuotaExceededError: the customer holds too many accounts.
            IdempotencyConflictError: ``account_id`` names another account.
        """
        klass = _account_class(account_class)
        found = check_account_opening(product_code, klass, currency)
        name = f"{found.name_en} {currency}" if nickname is None else normalise_nickname(nickname)
        account_id = account_id or uuid7()
        wanted = (customer_id, found.code, klass.value, currency)

        existing = self._tx(lambda c: self._precheck_opening(c, account_id, wanted), write=False)
        if existing is not None:
            return self._view(existing)
        request = AccountRequest(
            account_id,
            currency,
            LEDGER_CODES[found.code],
            CUSTOMER_ACCOUNT_FLAGS,
            f"customer:{customer_id}",
        )
        (outcome,) = self.ledger.create_accounts([request])
        if outcome.result not in (AccountResult.OK, AccountResult.EXISTS):
            invariant(
                outcome.result.value.startswith("exists_with_different"),
                f"the ledger refused a valid account: {outcome.result}",
            )
            raise IdempotencyConflictError(
                "this opening's id names another ledger account; use a new idempotency key"
            )

        def work(connection: Connection) -> Row[Any]:
            again = self._precheck_opening(connection, account_id, wanted, lock=True)
            if again is not None:
                return again  # opened by an earlier attempt: nothing more to do
            now = self.clock()
            is_default = store.default_account(connection, customer_id, currency) is None
            serial = secrets.randbelow(ACCOUNT_SERIAL_MAX + 1)
            number = new_account_number(
                serial, bank_code=self.bank_code, branch_code=self.branch_code
            ).number
            store.insert_account(
                connection,
                {
                    "id": account_id,
                    "customer_id": customer_id,
                    "number": number,
                    "product": found.code,
                    "account_class": klass.value,
                    "currency": currency,
                    "nickname": name,
                    "status": AccountStatus.OPEN.value,
                    "is_default": is_default,
                    "created_ts": now,
                    "updated_ts": now,
                    "closed_ts": None,
                },
            )
            record(
                connection,
                ctx.event(
                    "accounts.account.open",
                    f"account:{account_id}",
                    customer=str(customer_id),
                    number=mask_account_number(number),
                    product=found.code,
                    account_class=klass.value,
                    currency=currency,
                    is_default=is_default,
                ),
            )
            row = store.account_by_id(connection, account_id)
            invariant(row is not None, "the account just inserted is there")
            return row  # type: ignore[return-value]

        # A clash of random account numbers (or a concurrent default) is retried afresh.
        return self._view(self._tx(work, retry_unique=True))

    def _precheck_opening(
        self,
        connection: Connection,
        account_id: uuid.UUID,
        wanted: tuple[uuid.UUID, str, str, str],
        *,
        lock: bool = False,
    ) -> Row[Any] | None:
        """The row already opened with ``account_id`` (if it matches), or None when
        the customer may open one. Raises CustomerNotFoundError, QuotaExceededError,
        IdempotencyConflictError."""
        customer_id = wanted[0]
        if lock:
            customer = store.lock_customer(connection, customer_id)
            status = None if customer is None else customer.status
        else:
            status = store.customer_status(connection, customer_id)
        if status != "active":
            raise CustomerNotFoundError("no such customer")
        row = store.account_by_id(connection, account_id)
        if row is not None:
            have = (row.customer_id, row.product, row.account_class, row.currency)
            if have != wanted:
                raise IdempotencyConflictError(
                    "this idempotency key opened another account before; use a new key"
                )
            return row
        counts = store.count_accounts(connection, customer_id)
        if counts.live >= ACCOUNTS_LIVE_PER_CUSTOMER_MAX:
            raise QuotaExceededError(
                f"a customer holds at most {ACCOUNTS_LIVE_PER_CUSTOMER_MAX} open or frozen "
                "accounts; close one first"
            )
        if counts.total >= ACCOUNTS_PER_CUSTOMER_MAX:
            raise QuotaExceededError(
                f"a customer can have at most {ACCOUNTS_PER_CUSTOMER_MAX} accounts, closed ones "
                "included; ask the bank to open another"
            )
        return None

    # --- reading ----------------------------------------------------------------------

    def list_accounts(self, customer_id: uuid.UUID) -> list[AccountView]:
        """The customer's accounts, closed ones too, oldest first, with balances."""
        rows = self._tx(lambda c: store.accounts_of(c, customer_id), write=False)
        return self._views(rows)

    def get_account(self, customer_id: uuid.UUID, account_id: uuid.UUID) -> AccountView:
        """Raises AccountNotFoundError (also for another customer's account)."""
        row = self._tx(lambda c: self._owned(c, customer_id, account_id), write=False)
        return self._view(row)

    def customer_accounts(self, customer_id: uuid.UUID) -> list[AccountView]:
        """A customer's accounts, for staff. Raises CustomerNotFoundError."""

        def work(connection: Connection) -> Sequence[Row[Any]]:
            if store.customer_status(connection, customer_id) is None:
                raise CustomerNotFoundError("no such customer")
            return store.accounts_of(connection, customer_id)

        return self._views(self._tx(work, write=False))

    # --- nickname and default -------------------------------------------------------------

    def update_account(
        self,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        ctx: AuditContext,
        *,
        nickname: str | None = None,
        make_default: bool = False,
    ) -> AccountView:
        """Rename the account and/or make it the default for its currency (the
        previous default stops being one), in one unit of work.

        Raises:
            AccountsError: nothing to change.
            InvalidNicknameError: the nickname breaks a rule.
            AccountNotFoundError: no such account of the customer's.
            AccountStateError: the account is closed.
        """
        if nickname is None and not make_default:
            raise AccountsError("nothing to change: give a nickname, or is_default true")
        name = None if nickname is None else normalise_nickname(nickname)

        def work(connection: Connection) -> Row[Any]:
            store.lock_customer(connection, customer_id)
            row = self._owned(connection, customer_id, account_id, lock=True)
            if row.status == AccountStatus.CLOSED.value:
                raise AccountStateError(
                    "the account is closed: it cannot be renamed or made the default"
                )
            now = self.clock()
            target = f"account:{account_id}"
            if name is not None and name != row.nickname:
                store.update_account(connection, account_id, {"nickname": name, "updated_ts": now})
                record(connection, ctx.event("accounts.account.rename", target, nickname=name))
            if make_default and not row.is_default:
                store.clear_default(connection, customer_id, row.currency, now)
                store.update_account(
                    connection, account_id, {"is_default": True, "updated_ts": now}
                )
                record(
                    connection,
                    ctx.event("accounts.account.default", target, currency=row.currency),
                )
            return self._owned(connection, customer_id, account_id)

        return self._view(self._tx(work))

    def rename(
        self, customer_id: uuid.UUID, account_id: uuid.UUID, nickname: str, ctx: AuditContext
    ) -> AccountView:
        """See :meth:`update_account`."""
        return self.update_account(customer_id, account_id, ctx, nickname=nickname)

    def set_default(
        self, customer_id: uuid.UUID, account_id: uuid.UUID, ctx: AuditContext
    ) -> AccountView:
        """See :meth:`update_account`."""
        return self.update_account(customer_id, account_id, ctx, make_default=True)

    # --- status ---------------------------------------------------------------------------

    def freeze(
        self, customer_id: uuid.UUID, account_id: uuid.UUID, ctx: AuditContext
    ) -> AccountView:
        """Freeze an open account: money may still arrive, none may leave.

        Raises AccountNotFoundError, AccountStateError (not open).
        """
        return self._change_status(customer_id, account_id, AccountEvent.FREEZE, ctx)

    def unfreeze(
        self, customer_id: uuid.UUID, account_id: uuid.UUID, ctx: AuditContext
    ) -> AccountView:
        """Lift a freeze. The API asks the customer for a step-up first.

        Raises AccountNotFoundError, AccountStateError (not frozen).
        """
        return self._change_status(customer_id, account_id, AccountEvent.UNFREEZE, ctx)

    def _change_status(
        self,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        event: AccountEvent,
        ctx: AuditContext,
    ) -> AccountView:
        def work(connection: Connection) -> Row[Any]:
            row = self._owned(connection, customer_id, account_id, lock=True)
            after = account_transition(AccountStatus(row.status), event)
            store.update_account(
                connection, account_id, {"status": after.value, "updated_ts": self.clock()}
            )
            record(
                connection, ctx.event(f"accounts.account.{event.value}", f"account:{account_id}")
            )
            return self._owned(connection, customer_id, account_id)

        with self._guard(account_id):
            return self._view(self._tx(work))

    def close(
        self, customer_id: uuid.UUID, account_id: uuid.UUID, ctx: AuditContext
    ) -> AccountView:
        """Close an open account settled at zero (nothing pending either way); its
        cards close with it. When it was the default for its currency, the oldest
        other open or frozen account in that currency becomes the default.

        Raises:
            AccountNotFoundError: no such account of the customer's.
            AccountStateError: frozen, closed already, a balance or pending holds.
        """
        with self._guard(account_id):
            row = self._tx(lambda c: self._owned(c, customer_id, account_id), write=False)
            ledger_account = self.ledger.get_account(account_id)
            counters = _counters(row.currency, ledger_account)
            account_transition(AccountStatus(row.status), AccountEvent.CLOSE, counters)
            if ledger_account.closed_ts is None:
                try:
                    self.ledger.close_account(account_id)
                except AccountNotClosableError:
                    # Money moved since the check: say how things stand now.
                    ledger_account = self.ledger.get_account(account_id)
                    counters = _counters(row.currency, ledger_account)
                    account_transition(AccountStatus(row.status), AccountEvent.CLOSE, counters)
                    if ledger_account.closed_ts is None:
                        raise
            return self._view(
                self._tx(lambda c: self._close_row(c, customer_id, account_id, counters, ctx))
            )

    def _close_row(
        self,
        connection: Connection,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        counters: LedgerCounters,
        ctx: AuditContext,
    ) -> Row[Any]:
        store.lock_customer(connection, customer_id)
        row = self._owned(connection, customer_id, account_id, lock=True)
        # The ledger account is closed: its counters can no longer change.
        account_transition(AccountStatus(row.status), AccountEvent.CLOSE, counters)
        now = self.clock()
        cards_closed = store.close_live_cards(connection, account_id, now)
        store.update_account(
            connection,
            account_id,
            {
                "status": AccountStatus.CLOSED.value,
                "closed_ts": now,
                "is_default": False,
                "updated_ts": now,
            },
        )
        new_default = None
        if row.is_default:
            successor = store.oldest_live_account(connection, customer_id, row.currency)
            if successor is not None:
                store.update_account(
                    connection, successor.id, {"is_default": True, "updated_ts": now}
                )
                new_default = str(successor.id)
        record(
            connection,
            ctx.event(
                "accounts.account.close",
                f"account:{account_id}",
                cards_closed=cards_closed,
                new_default=new_default,
            ),
        )
        return self._owned(connection, customer_id, account_id)

    # --- cards ----------------------------------------------------------------------------

    def _draw_card(
        self, account_id: uuid.UUID, now: int, card_id: uuid.UUID | None = None
    ) -> _NewCard:
        """A new card with a random PAN and token, its PAN encrypted and indexed."""
        card_id = card_id or uuid7()
        pan = random_pan(issuer_bin=self.issuer_bin)
        expiry = card_expiry(spending_buckets(now).day)
        context = column_context(CARDS_TABLE, "pan_enc", card_id)
        values = {
            "id": card_id,
            "account_id": account_id,
            "token": new_card_token(),
            "pan_enc": self.keyring.encrypt_text(pan, context=context),
            "pan_index": self.keyring.blind_index(pan, purpose=PAN_PURPOSE),
            "pii_key_id": self.keyring.active_key_id,
            "last4": pan[-4:],
            "expiry_year": expiry.year,
            "expiry_month": expiry.month,
            "status": CardStatus.ACTIVE.value,
            "replaced_by": None,
            "created_ts": now,
            "updated_ts": now,
        }
        return _NewCard(values, mask_pan(pan))

    def _with_new_card(
        self,
        account_id: uuid.UUID,
        write: Callable[[Connection, _NewCard], T],
        card_id: uuid.UUID | None = None,
    ) -> T:
        """Run ``write`` with a freshly drawn card until its PAN and token are unused.

        The card is encrypted before the transaction opens (a remote key service
        never holds the write lock); a clash with an existing PAN or token is a
        unique violation, and the next attempt draws again.
        """
        for _ in range(CARD_NUMBER_DRAWS_MAX):
            card = self._draw_card(account_id, self.clock(), card_id)
            try:
                return self._tx(_with_card(write, card))
            except DBAPIError as exc:
                if not is_transient(exc, retry_unique_violation=True):
                    raise
        raise InvariantError(f"{CARD_NUMBER_DRAWS_MAX} random card numbers in a row were taken")

    def issue_card(
        self,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        ctx: AuditContext,
        *,
        card_id: uuid.UUID | None = None,
    ) -> CardView:
        """Issue an active debit card for an open account. ``card_id`` (default: a
        new UUIDv7; see :func:`issuing_id`) makes the call idempotent: again, it
        answers the card the first call issued.

        Raises:
            AccountNotFoundError: no such account of the customer's.
            AccountStateError: the account is frozen or closed.
            QuotaExceededError: the account has too many cards.
            IdempotencyConflictError: ``card_id`` names a card of another request.
        """

        def write(connection: Connection, card: _NewCard) -> Row[Any]:
            account = self._owned(connection, customer_id, account_id, lock=True)
            if card_id is not None:
                existing = store.card_with_owner(connection, card_id)
                if existing is not None:
                    if existing.customer_id != customer_id or existing.account_id != account_id:
                        raise IdempotencyConflictError(
                            "this Idempotency-Key was already used to issue a card for another"
                            " account; use a new key for a new card"
                        )
                    return existing
            _check_card_account(account)
            counts = store.count_cards(connection, account_id)
            if counts.live >= CARDS_LIVE_PER_ACCOUNT_MAX:
                raise QuotaExceededError(
                    f"an account has at most {CARDS_LIVE_PER_ACCOUNT_MAX} active or frozen cards"
                )
            _check_card_total(counts.total)
            store.insert_card(connection, card.values)
            record(
                connection,
                ctx.event(
                    "accounts.card.issue",
                    f"card:{card.values['id']}",
                    card=card.pan_masked,
                    account=str(account_id),
                ),
            )
            return self._owned_card(connection, customer_id, card.values["id"])

        return self._card_view(self._with_new_card(account_id, write, card_id))

    def list_cards(self, customer_id: uuid.UUID, account_id: uuid.UUID) -> list[CardView]:
        """The account's cards, lost and closed ones too. Raises AccountNotFoundError."""

        def work(connection: Connection) -> Sequence[Row[Any]]:
            self._owned(connection, customer_id, account_id)
            return store.cards_of_account(connection, account_id)

        return [self._card_view(row) for row in self._tx(work, write=False)]

    def customer_cards(self, customer_id: uuid.UUID) -> list[CardView]:
        """Every card on the customer's accounts, oldest first."""
        rows = self._tx(lambda c: store.cards_of_customer(c, customer_id), write=False)
        return [self._card_view(row) for row in rows]

    def get_card(self, customer_id: uuid.UUID, card_id: uuid.UUID) -> CardView:
        """Raises CardNotFoundError (also for another customer's card)."""
        row = self._tx(lambda c: self._owned_card(c, customer_id, card_id), write=False)
        return self._card_view(row)

    def freeze_card(
        self, customer_id: uuid.UUID, card_id: uuid.UUID, ctx: AuditContext
    ) -> CardView:
        """Raises CardNotFoundError, CardStateError (not active)."""
        return self._change_card(customer_id, card_id, CardEvent.FREEZE, ctx)

    def unfreeze_card(
        self, customer_id: uuid.UUID, card_id: uuid.UUID, ctx: AuditContext
    ) -> CardView:
        """The API asks for a step-up first. Raises CardNotFoundError, CardStateError
        (not frozen: a lost card stays blocked)."""
        return self._change_card(customer_id, card_id, CardEvent.UNFREEZE, ctx)

    def report_lost(
        self, customer_id: uuid.UUID, card_id: uuid.UUID, ctx: AuditContext
    ) -> CardView:
        """Block the card at once and for good; reissue it for a new one.

        Raises CardNotFoundError, CardStateError (lost or closed already).
        """
        return self._change_card(customer_id, card_id, CardEvent.REPORT_LOST, ctx)

    def _change_card(
        self, customer_id: uuid.UUID, card_id: uuid.UUID, event: CardEvent, ctx: AuditContext
    ) -> CardView:
        def work(connection: Connection) -> Row[Any]:
            row = self._owned_card(connection, customer_id, card_id, lock=True)
            after = card_transition(CardStatus(row.status), event)
            store.update_card(
                connection, card_id, {"status": after.value, "updated_ts": self.clock()}
            )
            record(
                connection,
                ctx.event(
                    f"accounts.card.{event.value}",
                    f"card:{card_id}",
                    card=self._card_view(row).pan_masked,
                ),
            )
            return self._owned_card(connection, customer_id, card_id)

        return self._card_view(self._tx(work))

    def reissue_card(
        self, customer_id: uuid.UUID, card_id: uuid.UUID, ctx: AuditContext
    ) -> CardView:
        """A new card (new PAN, new token, active) for the account of a card
        reported lost; the lost card stays lost and points at its replacement.

        Raises:
            CardNotFoundError: no such card of the customer's.
            CardStateError: the card is not lost, or was reissued already.
            AccountStateError: the account is frozen or closed.
            QuotaExceededError: the account has had too many cards.
        """

        def write(connection: Connection, card: _NewCard) -> Row[Any]:
            # The account first, then the card: the order closing an account locks them in.
            peek = self._owned_card(connection, customer_id, card_id)
            account = self._owned(connection, customer_id, peek.account_id, lock=True)
            old = self._owned_card(connection, customer_id, card_id, lock=True)
            reissued_card_status(CardStatus(old.status))
            if old.replaced_by is not None:
                raise CardStateError(
                    f"this card was reissued already as card {old.replaced_by}; "
                    "report that one lost if it is lost too"
                )
            _check_card_account(account)
            _check_card_total(store.count_cards(connection, old.account_id).total)
            store.insert_card(connection, card.values)
            new_id = card.values["id"]
            store.update_card(
                connection, card_id, {"replaced_by": new_id, "updated_ts": self.clock()}
            )
            record(
                connection,
                ctx.event(
                    "accounts.card.reissue",
                    f"card:{new_id}",
                    card=card.pan_masked,
                    replaces=str(card_id),
                    account=str(old.account_id),
                ),
            )
            return self._owned_card(connection, customer_id, new_id)

        account_id = self._tx(
            lambda c: self._owned_card(c, customer_id, card_id).account_id, write=False
        )
        return self._card_view(self._with_new_card(account_id, write))

    # --- teller cash ------------------------------------------------------------------------

    def cash_deposit(
        self,
        account: uuid.UUID | str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        ctx: AuditContext,
    ) -> CashReceipt:
        """Cash paid in at the counter: the bank's cash account in ``currency`` is
        debited and the customer's account credited, exactly once per teller
        (``ctx.actor``) and idempotency key. ``account`` is an account id or number.

        Raises:
            InvalidIdempotencyKeyError, InvalidCashAmountError, MoneyError: bad input.
            InvalidAccountNumberError: a mistyped account number.
            AccountNotFoundError: no such account.
            UnsupportedCurrencyError: the account holds another currency.
            AccountStateError: the account is closed.
            LimitExceededError: the Class III balance cap would be passed.
            IdempotencyConflictError: the key was used for another request.
        """
        return self._cash(CashKind.DEPOSIT, account, amount_minor, currency, idempotency_key, ctx)

    def cash_withdrawal(
        self,
        account: uuid.UUID | str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        ctx: AuditContext,
    ) -> CashReceipt:
        """Cash paid out at the counter, exactly once per teller and idempotency key.

        Raises like :meth:`cash_deposit`, and:
            AccountFrozenError: the account is frozen.
            InsufficientFundsError: more than the available balance (a key
                refused so stays refused: retry with a new key).
        """
        return self._cash(
            CashKind.WITHDRAWAL, account, amount_minor, currency, idempotency_key, ctx
        )

    def _cash(
        self,
        kind: CashKind,
        account: uuid.UUID | str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        ctx: AuditContext,
    ) -> CashReceipt:
        key = check_idempotency_key(idempotency_key)
        amount = Money(amount_minor, currency)  # MoneyError for floats, unknown currencies
        if not 0 < amount.amount_minor <= CASH_AMOUNT_MINOR_MAX:
            raise InvalidCashAmountError(
                f"a cash {kind.value} is more than zero and at most "
                f"{Money(CASH_AMOUNT_MINOR_MAX, currency).format()}"
            )
        invariant(ctx.actor != "anonymous", "teller cash needs a known actor")
        account_id = self._tx(lambda c: _account_for_cash(c, account).id, write=False)
        with self._guard(account_id):
            # Read again under the lock: a freeze may have committed while waiting.
            row = self._tx(lambda c: _account_for_cash(c, account_id), write=False)
            return self._cash_locked(kind, row, amount, key, ctx)

    def _cash_locked(
        self, kind: CashKind, row: Row[Any], amount: Money, key: str, ctx: AuditContext
    ) -> CashReceipt:
        if amount.currency != row.currency:
            raise self._refuse(
                kind,
                row,
                amount,
                ctx,
                UnsupportedCurrencyError(
                    f"account {mask_account_number(row.number)} holds {row.currency}, "
                    f"the amount is in {amount.currency}"
                ),
            )
        cash_id = self._bank_cash_account(amount.currency)
        customer_id: uuid.UUID = row.id
        request = TransferRequest(
            id=cash_transfer_id(ctx.actor, key),
            debit_account_id=cash_id if kind is CashKind.DEPOSIT else customer_id,
            credit_account_id=customer_id if kind is CashKind.DEPOSIT else cash_id,
            amount=amount.amount_minor,
            currency=amount.currency,
            code=kind.code,
            external_ref=key,
        )
        existing = self.ledger.lookup_transfers([request.id]).get(request.id)
        if existing is not None:  # a retry: answer as the first time, whatever changed since
            if not _same_transfer(existing, request):
                raise self._refuse(kind, row, amount, ctx, _conflict(key, existing))
            return self._receipt(kind, row, existing, True, ctx)
        try:
            check_account_usable(AccountStatus(row.status), kind.direction)
            if kind is CashKind.DEPOSIT:
                self._check_balance_cap(row, amount)
        except AccountsError as error:
            raise self._refuse(kind, row, amount, ctx, error) from None
        (outcome,) = self.ledger.create_transfers([request])
        if outcome.result in (Result.OK, Result.EXISTS):
            transfer = self.ledger.lookup_transfers([request.id])[request.id]
            return self._receipt(kind, row, transfer, outcome.result is Result.EXISTS, ctx)
        raise self._refuse(kind, row, amount, ctx, self._cash_error(outcome.result, row, key))

    def _cash_error(self, result: Result, row: Row[Any], key: str) -> AccountsError:
        """The error for a ledger result that refused a cash transfer."""
        if result is Result.EXCEEDS_CREDITS:
            available = Money(self.ledger.get_account(row.id).balance_available, row.currency)
            return InsufficientFundsError(
                f"insufficient funds: account {mask_account_number(row.number)} has "
                f"{available.format()} available; this Idempotency-Key now stands for the "
                "refused withdrawal, so use a new key to try another amount"
            )
        if result in (Result.DEBIT_ACCOUNT_CLOSED, Result.CREDIT_ACCOUNT_CLOSED):
            return AccountStateError("the account is closed: no money can move in or out")
        if result is Result.ID_ALREADY_FAILED or result.value.startswith("exists_with_different"):
            return IdempotencyConflictError(
                f"Idempotency-Key {key!r} was already used for another request, which was "
                "refused or differs from this one; use a new key for a new request"
            )
        if result in (Result.OVERFLOWS_CREDITS, Result.OVERFLOWS_DEBITS):
            return InvalidCashAmountError("this amount would overflow the account's counters")
        raise InvariantError(f"the ledger refused a valid cash transfer: {result}")

    def _check_balance_cap(self, row: Row[Any], amount: Money) -> None:
        """The Class III balance cap: the one limit that needs no running totals."""
        policy = policy_for(
            self.policies,
            AccountClass(row.account_class),
            Channel.COUNTER,
            Direction.INCOMING,
            row.currency,
        )
        caps = [lim for lim in effective_limits(policy, None) if lim.scope is LimitScope.BALANCE]
        if not caps:
            return
        before = Money(self.ledger.get_account(row.id).balance_posted, row.currency)
        for cap in caps:
            if before + amount > cap.limit:
                remaining = max(cap.limit - before, Money.zero(row.currency))
                raise LimitExceededError(
                    cap.scope, cap.source, cap.limit, before + amount, remaining
                )

    def _bank_cash_account(self, currency: str) -> uuid.UUID:
        """The bank's cash account in ``currency``, created on first use."""
        cash_id = bank_cash_account_id(currency)
        if currency in self._cash_accounts_ready:
            return cash_id
        request = AccountRequest(
            cash_id, currency, LEDGER_CODE_BANK_CASH, BANK_CASH_FLAGS, BANK_CASH_OWNER
        )
        (outcome,) = self.ledger.create_accounts([request])
        invariant(
            outcome.result in (AccountResult.OK, AccountResult.EXISTS),
            f"the bank's {currency} cash account {cash_id} exists differently: {outcome.result}",
        )
        self._cash_accounts_ready.add(currency)
        return cash_id

    def _receipt(
        self, kind: CashKind, row: Row[Any], transfer: Transfer, replayed: bool, ctx: AuditContext
    ) -> CashReceipt:
        amount = Money(transfer.amount, transfer.currency)
        self._tx(
            lambda c: record(
                c,
                ctx.event(
                    f"accounts.cash.{kind.value}",
                    f"account:{row.id}",
                    amount=amount.to_decimal_string(),
                    currency=amount.currency,
                    transfer=str(transfer.id),
                    replayed=replayed,
                ),
            )
        )
        return CashReceipt(
            transfer_id=transfer.id,
            kind=kind,
            account_id=row.id,
            account_number_masked=mask_account_number(row.number),
            amount=amount,
            ts=transfer.ts,
            replayed=replayed,
        )

    def _refuse(
        self, kind: CashKind, row: Row[Any], amount: Money, ctx: AuditContext, error: AccountsError
    ) -> AccountsError:
        """Record the refusal (committed before the error is raised) and return the error."""
        self._tx(
            lambda c: record(
                c,
                ctx.event(
                    f"accounts.cash.{kind.value}",
                    f"account:{row.id}",
                    "denied",
                    amount=amount.to_decimal_string(),
                    currency=amount.currency,
                    reason=error.code,
                ),
            )
        )
        return error

    # --- customer-chosen limits -------------------------------------------------------------

    def limits(self, customer_id: uuid.UUID, account_id: uuid.UUID) -> AccountLimitsView:
        """The account's outgoing limits per channel: the bank's policy, the customer's
        own lower limits, what was spent today and this year, and the largest payment
        allowed now. Raises AccountNotFoundError (also for another customer's account)."""
        now = self.clock()
        buckets = spending_buckets(now)
        periods = [buckets.day.isoformat(), str(buckets.year)]

        def work(connection: Connection) -> tuple[Row[Any], dict[str, Row[Any]], dict[str, int]]:
            row = self._owned(connection, customer_id, account_id)
            own = {r.channel: r for r in payments_store.customer_limits_of(connection, account_id)}
            totals = payments_store.spending_totals(
                connection, account_id, Direction.OUTGOING.value, periods
            )
            return row, own, totals

        row, own, totals = self._tx(work, write=False)
        currency = row.currency
        spent_today = Money(totals[periods[0]], currency)
        spent_this_year = Money(totals[periods[1]], currency)
        balance = Money(self.ledger.get_account(account_id).balance_posted, currency)
        channels = []
        for channel in Channel:
            policy = self._outgoing_policy(row, channel)
            chosen = _chosen_limits(currency, own.get(channel.value))
            remaining = remaining_allowance(policy, chosen, spent_today, spent_this_year, balance)
            channels.append(ChannelLimitsView(channel, policy, chosen, remaining))
        return AccountLimitsView(
            account_id=account_id,
            currency=currency,
            day=buckets.day,
            year=buckets.year,
            spent_today=spent_today,
            spent_this_year=spent_this_year,
            channels=tuple(channels),
        )

    def set_limits(
        self,
        customer_id: uuid.UUID,
        account_id: uuid.UUID,
        requested: ChannelLimitsRequest,
        ctx: AuditContext,
        *,
        raise_allowed: bool = False,
    ) -> AccountLimitsView:
        """Replace the customer's own limits of one channel (None: the policy's).

        They may only lower the bank's policy; zero turns the channel off.
        Raising one of them back up (or removing it) needs ``raise_allowed``,
        which the API grants after a step-up.

        Raises:
            AccountNotFoundError: no such account of the customer's.
            AccountStateError: the account is closed.
            InvalidLimitError: negative, above the policy, or a raise not allowed.
            UnsupportedCurrencyError: an amount in another currency than the account's.
        """

        def work(connection: Connection) -> None:
            row = self._owned(connection, customer_id, account_id, lock=True)
            if row.status == AccountStatus.CLOSED.value:
                raise AccountStateError("the account is closed: its limits cannot change")
            channel = requested.channel
            wanted = CustomerLimits(
                row.currency, requested.per_payment, requested.daily, requested.yearly
            )
            validate_customer_limits(self._outgoing_policy(row, channel), wanted)
            stored_row = payments_store.customer_limits(connection, account_id, channel.value)
            stored = _chosen_limits(row.currency, stored_row)
            if raises_limits(stored, wanted) and not raise_allowed:
                raise InvalidLimitError(
                    "raising a limit you set (or removing it) needs you to confirm it is you"
                    " first; lowering needs nothing"
                )
            per_payment, daily, yearly = (
                None if m is None else m.amount_minor for m in requested.amounts()
            )
            payments_store.set_customer_limits(
                connection, account_id, channel.value, (per_payment, daily, yearly), self.clock()
            )
            shown = [None if m is None else m.to_decimal_string() for m in requested.amounts()]
            record(
                connection,
                ctx.event(
                    "accounts.limits.set",
                    f"account:{account_id}",
                    channel=channel.value,
                    per_payment=shown[0],
                    daily=shown[1],
                    yearly=shown[2],
                ),
            )

        self._tx(work)
        return self.limits(customer_id, account_id)

    def _outgoing_policy(self, row: Row[Any], channel: Channel) -> LimitPolicy:
        account_class = AccountClass(row.account_class)
        return policy_for(self.policies, account_class, channel, Direction.OUTGOING, row.currency)


# --- pure helpers ---------------------------------------------------------------------------


def _account_class(value: AccountClass | str) -> AccountClass:
    try:
        return AccountClass(value)
    except ValueError:
        classes = ", ".join(c.value for c in AccountClass)
        raise UnknownProductError(
            f"unknown account class {str(value)[:8]!r}: the classes are {classes}"
        ) from None


def _with_card(
    write: Callable[[Connection, _NewCard], T], card: _NewCard
) -> Callable[[Connection], T]:
    return lambda connection: write(connection, card)


def _account_view(row: Row[Any], ledger_account: Account) -> AccountView:
    return AccountView(
        id=row.id,
        customer_id=row.customer_id,
        number=row.number,
        product=row.product,
        account_class=AccountClass(row.account_class),
        currency=row.currency,
        nickname=row.nickname,
        status=AccountStatus(row.status),
        is_default=bool(row.is_default),
        created_ts=int(row.created_ts),
        updated_ts=int(row.updated_ts),
        closed_ts=None if row.closed_ts is None else int(row.closed_ts),
        balance=Money(ledger_account.balance_posted, row.currency),
        available=Money(ledger_account.balance_available, row.currency),
    )


def _counters(currency: str, account: Account) -> LedgerCounters:
    return LedgerCounters(currency, *account.counters())


def _check_card_account(account: Row[Any]) -> None:
    status = AccountStatus(account.status)
    if status is not AccountStatus.OPEN:
        raise AccountStateError(
            f"the account is {status.value}: cards are issued for open accounts only"
        )


def _check_card_total(total: int) -> None:
    if total >= CARDS_PER_ACCOUNT_MAX:
        raise QuotaExceededError(
            f"an account can have at most {CARDS_PER_ACCOUNT_MAX} cards, lost and closed ones "
            "included; ask the bank for a new one"
        )


def _account_for_cash(connection: Connection, account: uuid.UUID | str) -> Row[Any]:
    """The account named by its id or its (typed) number. Raises
    InvalidAccountNumberError, AccountNotFoundError."""
    if isinstance(account, uuid.UUID):
        row = store.account_by_id(connection, account)
    else:
        row = store.account_by_number(connection, parse_account_number(account).number)
    if row is None:
        raise AccountNotFoundError("no such account")
    return row


def _same_transfer(existing: Transfer, request: TransferRequest) -> bool:
    return (
        existing.debit_account_id == request.debit_account_id
        and existing.credit_account_id == request.credit_account_id
        and existing.amount == request.amount
        and existing.currency == request.currency
        and existing.code == request.code
    )


def _conflict(key: str, existing: Transfer) -> IdempotencyConflictError:
    kind = _KIND_OF_CODE.get(existing.code)
    what = "another operation" if kind is None else f"a {kind.value}"
    amount = Money(existing.amount, existing.currency).format()
    return IdempotencyConflictError(
        f"Idempotency-Key {key!r} was already used for {what} of {amount}; use a new key for "
        "a new request, and the same key only to retry the same one"
    )


# --- customer-chosen limits: views and rules ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelLimitsRequest:
    """The limits a customer asks for on one channel; None keeps the policy's."""

    channel: Channel
    per_payment: Money | None = None
    daily: Money | None = None
    yearly: Money | None = None

    def amounts(self) -> tuple[Money | None, Money | None, Money | None]:
        return (self.per_payment, self.daily, self.yearly)


@dataclass(frozen=True, slots=True)
class ChannelLimitsView:
    """One channel's outgoing limits: the bank's, the customer's own (None: none
    chosen), and the largest single payment allowed now (None: no limit)."""

    channel: Channel
    policy: LimitPolicy
    chosen: CustomerLimits | None
    remaining: Money | None


@dataclass(frozen=True, slots=True)
class AccountLimitsView:
    """An account's limits on every channel, with the day's and year's spending
    (Shanghai calendar) that the daily and yearly limits count."""

    account_id: uuid.UUID
    currency: str
    day: date
    year: int
    spent_today: Money
    spent_this_year: Money
    channels: tuple[ChannelLimitsView, ...]

    def channel(self, channel: Channel) -> ChannelLimitsView:
        return next(c for c in self.channels if c.channel is channel)


def _chosen_limits(currency: str, row: Row[Any] | None) -> CustomerLimits | None:
    if row is None:
        return None

    def money(value: int | None) -> Money | None:
        return None if value is None else Money(int(value), currency)

    return CustomerLimits(
        currency,
        per_payment=money(row.per_payment_minor),
        daily=money(row.daily_minor),
        yearly=money(row.yearly_minor),
    )


def raises_limits(current: CustomerLimits | None, wanted: CustomerLimits) -> bool:
    """Whether ``wanted`` raises any limit of ``current``: a higher amount, or none
    where there was one (the bank's policy, always at least as high, applies then)."""
    if current is None:
        return False
    before, after = current.limits(), wanted.limits()
    for scope, old in before.items():
        new = after[scope]
        if old is not None and (new is None or new > old):
            return True
    return False

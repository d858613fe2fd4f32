"""The ledger's domain: accounts, transfers, result codes and batch planning.

Pure code: no I/O. The store loads the state a batch needs into a
:class:`BatchState`, :func:`plan_batch` decides every event's result and the
writes that follow, and the store applies those writes in the same database
transaction. Deciding in memory is what makes group commit fast: every touched
account is read once and written once per batch, however hot it is.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum
from typing import NamedTuple

from zhifu.invariant import invariant
from zhifu.ledger import merkle
from zhifu.money import CURRENCIES

AMOUNT_MAX = 2**63 - 1
BATCH_EVENTS_MAX = 8190
CODE_MAX = 65535
EXTERNAL_REF_LENGTH_MAX = 64
OWNER_REF_LENGTH_MAX = 128
TIMEOUT_S_MAX = 2**31 - 1
US_PER_S = 1_000_000
NIL_ID = uuid.UUID(int=0)
ZERO_ID_BYTES = bytes(16)


class AccountFlags(IntFlag):
    NONE = 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    """Customer deposits: the account can never be overdrawn."""
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2
    """Loans and receivables: the account can never go into credit."""
    HISTORY = 4
    """Keep the balance after each transfer, for fast statements and as-of balances."""


ACCOUNT_FLAGS_ALL = int(
    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
    | AccountFlags.HISTORY
)


class TransferFlags(IntFlag):
    NONE = 0
    LINKED = 1
    """This event commits or fails together with the next one."""
    PENDING = 2
    """Reserve the amount; post or void it later."""
    POST_PENDING = 4
    """Post all or part of the pending transfer ``pending_id``."""
    VOID_PENDING = 8
    """Release the pending transfer ``pending_id``."""
    EXPIRY = 16
    """Set by the ledger itself on the void that releases an expired hold."""


CLIENT_TRANSFER_FLAGS = (
    TransferFlags.LINKED
    | TransferFlags.PENDING
    | TransferFlags.POST_PENDING
    | TransferFlags.VOID_PENDING
)
# Plain ints for the hot path: IntFlag arithmetic costs a Python call per operation.
_T_LINKED = int(TransferFlags.LINKED)
_T_PENDING = int(TransferFlags.PENDING)
_T_POST_PENDING = int(TransferFlags.POST_PENDING)
_T_VOID_PENDING = int(TransferFlags.VOID_PENDING)
_T_EXPIRY = int(TransferFlags.EXPIRY)
_A_DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_A_CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_A_HISTORY = int(AccountFlags.HISTORY)
_CLIENT_FLAGS = int(CLIENT_TRANSFER_FLAGS)
_PHASE_FLAGS = _T_PENDING | _T_POST_PENDING | _T_VOID_PENDING
_RESOLVE_FLAGS = _T_POST_PENDING | _T_VOID_PENDING


class Result(StrEnum):
    """Result of one transfer event, in precedence order: the first failing check wins.

    Validation codes (up to ``code_must_not_be_zero``) depend only on the event
    itself. The codes after ``exists`` depend on the ledger's state; a transfer
    id that fails with one of those stays failed.
    """

    OK = "ok"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    RESERVED_FLAG = "reserved_flag"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "debit_account_id_must_not_be_zero"
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "credit_account_id_must_not_be_zero"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    PENDING_ID_MUST_BE_ZERO = "pending_id_must_be_zero"
    PENDING_ID_MUST_NOT_BE_ZERO = "pending_id_must_not_be_zero"
    PENDING_ID_MUST_BE_DIFFERENT = "pending_id_must_be_different"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    AMOUNT_MUST_NOT_BE_ZERO = "amount_must_not_be_zero"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    CURRENCY_MUST_NOT_BE_EMPTY = "currency_must_not_be_empty"
    REVERSAL_MUST_NOT_BE_TWO_PHASE = "reversal_must_not_be_two_phase"
    REVERSAL_OF_MUST_BE_DIFFERENT = "reversal_of_must_be_different"
    CODE_MUST_NOT_BE_ZERO = "code_must_not_be_zero"
    CODE_OUT_OF_RANGE = "code_out_of_range"
    TIMEOUT_OUT_OF_RANGE = "timeout_out_of_range"
    EXTERNAL_REF_TOO_LONG = "external_ref_too_long"
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_PENDING_ID = "exists_with_different_pending_id"
    EXISTS_WITH_DIFFERENT_TIMEOUT = "exists_with_different_timeout"
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = "exists_with_different_debit_account_id"
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = "exists_with_different_credit_account_id"
    EXISTS_WITH_DIFFERENT_AMOUNT = "exists_with_different_amount"
    EXISTS_WITH_DIFFERENT_CURRENCY = "exists_with_different_currency"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    EXISTS_WITH_DIFFERENT_REVERSAL_OF = "exists_with_different_reversal_of"
    EXISTS_WITH_DIFFERENT_EXTERNAL_REF = "exists_with_different_external_ref"
    EXISTS = "exists"
    ID_ALREADY_FAILED = "id_already_failed"
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = (
        "pending_transfer_has_different_debit_account_id"
    )
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = (
        "pending_transfer_has_different_credit_account_id"
    )
    PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY = "pending_transfer_has_different_currency"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = "pending_transfer_has_different_amount"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY = "accounts_must_have_the_same_currency"
    TRANSFER_MUST_HAVE_THE_SAME_CURRENCY_AS_ACCOUNTS = (
        "transfer_must_have_the_same_currency_as_accounts"
    )
    DEBIT_ACCOUNT_CLOSED = "debit_account_closed"
    CREDIT_ACCOUNT_CLOSED = "credit_account_closed"
    REVERSAL_TARGET_NOT_FOUND = "reversal_target_not_found"
    REVERSAL_TARGET_NOT_POSTED = "reversal_target_not_posted"
    REVERSAL_MUST_SWAP_ACCOUNTS = "reversal_must_swap_accounts"
    REVERSAL_EXCEEDS_ORIGINAL_AMOUNT = "reversal_exceeds_original_amount"
    OVERFLOWS_TIMEOUT = "overflows_timeout"
    OVERFLOWS_DEBITS = "overflows_debits"
    OVERFLOWS_CREDITS = "overflows_credits"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"


RESULT_PRECEDENCE: tuple[Result, ...] = tuple(Result)
# Failures decided by the ledger's state: the id is remembered and stays failed.
_FIRST_STATE_RESULT = list(Result).index(Result.ID_ALREADY_FAILED)
STATE_RESULTS = frozenset(list(Result)[_FIRST_STATE_RESULT + 1 :])


class AccountResult(StrEnum):
    OK = "ok"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    RESERVED_FLAG = "reserved_flag"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    CODE_MUST_NOT_BE_ZERO = "code_must_not_be_zero"
    CODE_OUT_OF_RANGE = "code_out_of_range"
    CURRENCY_UNKNOWN = "currency_unknown"
    OWNER_REF_TOO_LONG = "owner_ref_too_long"
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_CURRENCY = "exists_with_different_currency"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    EXISTS_WITH_DIFFERENT_OWNER_REF = "exists_with_different_owner_ref"
    EXISTS = "exists"


@dataclass(slots=True)
class Account:
    """An account and its four counters. Mutable only inside a batch plan."""

    id: uuid.UUID
    currency: str
    code: int
    flags: int
    owner_ref: str | None
    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0
    last_transfer_ts: int = 0
    created_ts: int = 0
    closed_ts: int | None = None

    @property
    def balance_posted(self) -> int:
        """Posted balance on the account's normal side (credit-normal when it
        may not be overdrawn, debit-normal when it may not go into credit)."""
        if self.flags & _A_CREDITS_MUST_NOT_EXCEED_DEBITS:
            return self.debits_posted - self.credits_posted
        return self.credits_posted - self.debits_posted

    @property
    def balance_available(self) -> int:
        """Posted balance less pending holds against it."""
        if self.flags & _A_CREDITS_MUST_NOT_EXCEED_DEBITS:
            return self.debits_posted - self.credits_posted - self.credits_pending
        return self.credits_posted - self.debits_posted - self.debits_pending

    def counters(self) -> tuple[int, int, int, int]:
        return (self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted)


@dataclass(frozen=True, slots=True)
class AccountRequest:
    id: uuid.UUID
    currency: str
    code: int
    flags: int = 0
    owner_ref: str | None = None


class TransferRequest(NamedTuple):
    """One event of a batch, as a client submits it.

    For ``post_pending`` and ``void_pending`` events the accounts, currency and
    amount may be left out: they are taken from the pending transfer (a post
    without an amount posts the whole hold).
    """

    id: uuid.UUID
    debit_account_id: uuid.UUID | None
    credit_account_id: uuid.UUID | None
    amount: int | None
    currency: str | None
    code: int
    flags: int = 0
    pending_id: uuid.UUID | None = None
    reversal_of: uuid.UUID | None = None
    external_ref: str | None = None
    timeout_s: int = 0


class Transfer(NamedTuple):
    """A committed transfer. Immutable, here and in the database."""

    id: uuid.UUID
    debit_account_id: uuid.UUID
    credit_account_id: uuid.UUID
    amount: int
    currency: str
    code: int
    flags: int
    pending_id: uuid.UUID | None
    reversal_of: uuid.UUID | None
    external_ref: str | None
    timeout_s: int
    expires_ts: int | None
    ts: int
    batch_id: uuid.UUID
    batch_index: int

    def leaf_bytes(self) -> bytes:
        """Canonical encoding hashed into the batch's Merkle tree."""
        return encode_leaf(self)


class TransferOutcome(NamedTuple):
    position: int  # the event's index in its batch
    id: uuid.UUID
    result: Result
    ts: int | None = None

    @property
    def ok(self) -> bool:
        return self.result is Result.OK


@dataclass(slots=True)
class Resolution:
    """How a pending transfer was resolved (posted, voided or expired)."""

    transfer_id: uuid.UUID
    flags: int


@dataclass(slots=True)
class Rejection:
    id: uuid.UUID
    result: Result
    fingerprint: bytes
    ts: int


@dataclass(slots=True)
class BatchState:
    """What the store loaded for one batch: every row the events may touch."""

    accounts: dict[uuid.UUID, Account]
    transfers: dict[uuid.UUID, Transfer]
    rejections: dict[uuid.UUID, Rejection]
    resolutions: dict[uuid.UUID, Resolution]
    reversed_amounts: dict[uuid.UUID, int]


@dataclass(slots=True)
class BatchPlan:
    """The outcome of a batch and the writes that make it so."""

    batch_id: uuid.UUID
    committed_ts: int
    outcomes: list[TransferOutcome]
    new_transfers: list[Transfer] = field(default_factory=list)
    new_rejections: list[Rejection] = field(default_factory=list)
    touched_accounts: dict[uuid.UUID, Account] = field(default_factory=dict)
    history: list[tuple[uuid.UUID, int, uuid.UUID, int, int, int, int]] = field(
        default_factory=list
    )
    merkle_root: bytes = merkle.EMPTY_ROOT


# --- encoding ----------------------------------------------------------------

_LEAF = struct.Struct(">16s16s16sq3sII16s16sIqqH")


def encode_leaf(t: Transfer) -> bytes:
    ref = (t.external_ref or "").encode()
    return (
        _LEAF.pack(
            t.id.bytes,
            t.debit_account_id.bytes,
            t.credit_account_id.bytes,
            t.amount,
            t.currency.encode("ascii"),
            t.code,
            t.flags,
            t.pending_id.bytes if t.pending_id else ZERO_ID_BYTES,
            t.reversal_of.bytes if t.reversal_of else ZERO_ID_BYTES,
            t.timeout_s,
            t.expires_ts or 0,
            t.ts,
            len(ref),
        )
        + ref
    )


def batch_merkle_root(transfers: Iterable[Transfer]) -> bytes:
    return merkle.merkle_root([merkle.leaf_hash(encode_leaf(t)) for t in transfers])


def fingerprint(request: TransferRequest) -> bytes:
    """A digest of every field of a request, to recognise an exact retry.

    Canonical: the same values give the same digest whatever their Python
    types (an IntFlag or a plain int, for instance).
    """
    digest = hashlib.sha256(b"zhifu-transfer-request-v1")
    for value in (
        request.debit_account_id,
        request.credit_account_id,
        request.pending_id,
        request.reversal_of,
    ):
        digest.update(b"\x00" * 17 if value is None else b"\x01" + value.bytes)
    for number in (request.amount, request.code, request.flags, request.timeout_s):
        encoded = b"" if number is None else str(int(number)).encode()
        digest.update(
            (b"\x00" if number is None else b"\x01") + len(encoded).to_bytes(4, "big") + encoded
        )
    for text in (request.currency, request.external_ref):
        encoded = b"" if text is None else text.encode()
        digest.update(
            (b"\x00" if text is None else b"\x01") + len(encoded).to_bytes(4, "big") + encoded
        )
    return digest.digest()


# --- validation ----------------------------------------------------------------


def validate_transfer(request: TransferRequest, *, system: bool = False) -> Result:
    """Checks that depend on the event alone, in precedence order."""
    flags = request.flags
    if request.id.int == 0:
        return Result.ID_MUST_NOT_BE_ZERO
    allowed = _CLIENT_FLAGS | (_T_EXPIRY if system else 0)
    if flags & ~allowed:
        return Result.RESERVED_FLAG
    phase = flags & _PHASE_FLAGS
    if phase and phase & (phase - 1):
        return Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if flags & _T_EXPIRY and not flags & _T_VOID_PENDING:
        return Result.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    resolving = bool(phase & _RESOLVE_FLAGS)
    if not resolving:
        if request.debit_account_id is None or request.debit_account_id.int == 0:
            return Result.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
        if request.credit_account_id is None or request.credit_account_id.int == 0:
            return Result.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO
    if (
        request.debit_account_id is not None
        and request.debit_account_id == request.credit_account_id
    ):
        return Result.ACCOUNTS_MUST_BE_DIFFERENT
    if resolving:
        if request.pending_id is None or request.pending_id.int == 0:
            return Result.PENDING_ID_MUST_NOT_BE_ZERO
        if request.pending_id == request.id:
            return Result.PENDING_ID_MUST_BE_DIFFERENT
    elif request.pending_id is not None:
        return Result.PENDING_ID_MUST_BE_ZERO
    if request.timeout_s and not flags & _T_PENDING:
        return Result.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER
    amount = request.amount
    if amount is None:
        if not resolving:
            return Result.AMOUNT_MUST_NOT_BE_ZERO
    elif amount == 0:
        return Result.AMOUNT_MUST_NOT_BE_ZERO
    elif amount < 0:
        return Result.AMOUNT_MUST_BE_POSITIVE
    if not resolving and not request.currency:
        return Result.CURRENCY_MUST_NOT_BE_EMPTY
    if request.reversal_of is not None:
        if phase:
            return Result.REVERSAL_MUST_NOT_BE_TWO_PHASE
        if request.reversal_of == request.id:
            return Result.REVERSAL_OF_MUST_BE_DIFFERENT
    code = request.code
    if code == 0:
        return Result.CODE_MUST_NOT_BE_ZERO
    if not 0 < code <= CODE_MAX:
        return Result.CODE_OUT_OF_RANGE
    if not 0 <= request.timeout_s <= TIMEOUT_S_MAX:
        return Result.TIMEOUT_OUT_OF_RANGE
    if request.external_ref is not None and len(request.external_ref) > EXTERNAL_REF_LENGTH_MAX:
        return Result.EXTERNAL_REF_TOO_LONG
    return Result.OK


def compare_existing(request: TransferRequest, existing: Transfer) -> Result:
    """``exists`` or the first field where a retry differs from the committed transfer."""
    if request.flags != existing.flags:
        return Result.EXISTS_WITH_DIFFERENT_FLAGS
    if request.pending_id != existing.pending_id:
        return Result.EXISTS_WITH_DIFFERENT_PENDING_ID
    if request.timeout_s != existing.timeout_s:
        return Result.EXISTS_WITH_DIFFERENT_TIMEOUT
    if (
        request.debit_account_id is not None
        and request.debit_account_id != existing.debit_account_id
    ):
        return Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if (
        request.credit_account_id is not None
        and request.credit_account_id != existing.credit_account_id
    ):
        return Result.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if request.amount is not None and request.amount != existing.amount:
        return Result.EXISTS_WITH_DIFFERENT_AMOUNT
    if request.currency is not None and request.currency != existing.currency:
        return Result.EXISTS_WITH_DIFFERENT_CURRENCY
    if request.code != existing.code:
        return Result.EXISTS_WITH_DIFFERENT_CODE
    if request.reversal_of != existing.reversal_of:
        return Result.EXISTS_WITH_DIFFERENT_REVERSAL_OF
    if request.external_ref != existing.external_ref:
        return Result.EXISTS_WITH_DIFFERENT_EXTERNAL_REF
    return Result.EXISTS


def validate_account(request: AccountRequest) -> AccountResult:
    if request.id.int == 0:
        return AccountResult.ID_MUST_NOT_BE_ZERO
    if request.flags & ~ACCOUNT_FLAGS_ALL:
        return AccountResult.RESERVED_FLAG
    both = _A_DEBITS_MUST_NOT_EXCEED_CREDITS | _A_CREDITS_MUST_NOT_EXCEED_DEBITS
    if request.flags & both == both:
        return AccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if request.code == 0:
        return AccountResult.CODE_MUST_NOT_BE_ZERO
    if not 0 < request.code <= CODE_MAX:
        return AccountResult.CODE_OUT_OF_RANGE
    if request.currency not in CURRENCIES:
        return AccountResult.CURRENCY_UNKNOWN
    if request.owner_ref is not None and len(request.owner_ref) > OWNER_REF_LENGTH_MAX:
        return AccountResult.OWNER_REF_TOO_LONG
    return AccountResult.OK


def compare_existing_account(request: AccountRequest, existing: Account) -> AccountResult:
    if request.flags != existing.flags:
        return AccountResult.EXISTS_WITH_DIFFERENT_FLAGS
    if request.currency != existing.currency:
        return AccountResult.EXISTS_WITH_DIFFERENT_CURRENCY
    if request.code != existing.code:
        return AccountResult.EXISTS_WITH_DIFFERENT_CODE
    if request.owner_ref != existing.owner_ref:
        return AccountResult.EXISTS_WITH_DIFFERENT_OWNER_REF
    return AccountResult.EXISTS


def expiry_transfer_id(pending_id: uuid.UUID) -> uuid.UUID:
    """The id of the void that expires ``pending_id``: the same for every sweeper."""
    digest = bytearray(hashlib.sha256(b"zhifu-ledger-expiry" + pending_id.bytes).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # UUID version 8 (custom)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return uuid.UUID(bytes=bytes(digest))


# --- planning -----------------------------------------------------------------


class _Planner:
    """Applies a batch's events to an in-memory copy of the state, in order."""

    def __init__(self, state: BatchState, batch_id: uuid.UUID, now_ts: int, system: bool):
        self.state = state
        self.batch_id = batch_id
        self.system = system
        self.plan = BatchPlan(batch_id=batch_id, committed_ts=now_ts, outcomes=[])
        last = max((a.last_transfer_ts for a in state.accounts.values()), default=0)
        # Every transfer of the batch gets a unique timestamp after the last
        # one of any account it may touch: per account, time never goes back.
        self.next_ts = max(now_ts, last + 1)
        self.now_ts = now_ts
        # Undo log for the open linked chain.
        # account id -> (its four counters, last_transfer_ts, touched before the chain)
        self._undo_accounts: dict[uuid.UUID, tuple[int, int, int, int, int, bool]] = {}
        self._undo_transfers: list[uuid.UUID] = []
        self._undo_resolutions: list[uuid.UUID] = []
        self._undo_reversed: list[tuple[uuid.UUID, int]] = []
        self._chain_start_new = 0
        self._chain_start_history = 0
        self._recording = False
        self._touched: dict[int, Account] = {}

    # -- chain bookkeeping --

    def _begin_chain(self) -> None:
        self._undo_accounts.clear()
        self._undo_transfers.clear()
        self._undo_resolutions.clear()
        self._undo_reversed.clear()
        self._chain_start_new = len(self.plan.new_transfers)
        self._chain_start_history = len(self.plan.history)

    def _touch(self, account: Account) -> None:
        """Remember the account as it was before the open linked chain changed it."""
        if account.id not in self._undo_accounts:
            self._undo_accounts[account.id] = (
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
                account.last_transfer_ts,
                id(account) in self._touched,
            )

    def _rollback_chain(self) -> None:
        accounts = self.state.accounts
        touched = self._touched
        for account_id, saved in self._undo_accounts.items():
            account = accounts[account_id]
            (
                account.debits_pending,
                account.debits_posted,
                account.credits_pending,
                account.credits_posted,
                account.last_transfer_ts,
                touched_before,
            ) = saved
            if not touched_before:
                touched.pop(id(account), None)
        for transfer_id in self._undo_transfers:
            del self.state.transfers[transfer_id]
        for pending_id in self._undo_resolutions:
            del self.state.resolutions[pending_id]
        for target, amount in self._undo_reversed:
            self.state.reversed_amounts[target] -= amount
        del self.plan.new_transfers[self._chain_start_new :]
        del self.plan.history[self._chain_start_history :]

    # -- one event --

    def apply(self, request: TransferRequest) -> Result:
        result = validate_transfer(request, system=self.system)
        if result is not Result.OK:
            return result
        state = self.state
        existing = state.transfers.get(request.id)
        if existing is not None:
            return compare_existing(request, existing)
        rejection = state.rejections.get(request.id) if state.rejections else None
        if rejection is not None:
            if rejection.fingerprint == fingerprint(request):
                return rejection.result
            return Result.ID_ALREADY_FAILED
        flags = request.flags
        if flags & _RESOLVE_FLAGS:
            return self._apply_resolution(request)
        debit = state.accounts.get(request.debit_account_id)  # type: ignore[arg-type]
        if debit is None:
            return Result.DEBIT_ACCOUNT_NOT_FOUND
        credit = state.accounts.get(request.credit_account_id)  # type: ignore[arg-type]
        if credit is None:
            return Result.CREDIT_ACCOUNT_NOT_FOUND
        currency = request.currency
        if debit.currency != credit.currency:
            return Result.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY
        if currency != debit.currency:
            return Result.TRANSFER_MUST_HAVE_THE_SAME_CURRENCY_AS_ACCOUNTS
        if debit.closed_ts is not None:
            return Result.DEBIT_ACCOUNT_CLOSED
        if credit.closed_ts is not None:
            return Result.CREDIT_ACCOUNT_CLOSED
        amount: int = request.amount  # type: ignore[assignment]
        if request.reversal_of is not None:
            result = self._check_reversal(request, amount)
            if result is not Result.OK:
                return result
        ts = self.next_ts
        expires_ts = None
        if flags & _T_PENDING:
            if request.timeout_s:
                expires_ts = ts + request.timeout_s * US_PER_S
                if expires_ts > AMOUNT_MAX:
                    return Result.OVERFLOWS_TIMEOUT
            result = self._check_limits(debit, credit, amount, 0)
            if result is not Result.OK:
                return result
            if self._recording:
                self._touch(debit)
                self._touch(credit)
            debit.debits_pending += amount
            credit.credits_pending += amount
        else:
            result = self._check_limits(debit, credit, amount, 0)
            if result is not Result.OK:
                return result
            if self._recording:
                self._touch(debit)
                self._touch(credit)
            debit.debits_posted += amount
            credit.credits_posted += amount
            if request.reversal_of is not None:
                self._record_reversal(request.reversal_of, amount)
        self._commit_transfer(
            request,
            debit,
            credit,
            amount,
            currency,
            request.pending_id,
            expires_ts,
        )
        return Result.OK

    def _check_limits(self, debit: Account, credit: Account, amount: int, released: int) -> Result:
        """Overflow and balance-flag checks for moving ``amount`` (after releasing
        ``released`` from the pending counters, for a post)."""
        debits = debit.debits_pending + debit.debits_posted - released + amount
        credits = credit.credits_pending + credit.credits_posted - released + amount
        if debits > AMOUNT_MAX:
            return Result.OVERFLOWS_DEBITS
        if credits > AMOUNT_MAX:
            return Result.OVERFLOWS_CREDITS
        if debit.flags & _A_DEBITS_MUST_NOT_EXCEED_CREDITS and debits > debit.credits_posted:
            return Result.EXCEEDS_CREDITS
        if credit.flags & _A_CREDITS_MUST_NOT_EXCEED_DEBITS and credits > credit.debits_posted:
            return Result.EXCEEDS_DEBITS
        return Result.OK

    def _check_reversal(self, request: TransferRequest, amount: int) -> Result:
        target = self.state.transfers.get(request.reversal_of)  # type: ignore[arg-type]
        if target is None:
            return Result.REVERSAL_TARGET_NOT_FOUND
        if target.flags & (_T_PENDING | _T_VOID_PENDING):
            return Result.REVERSAL_TARGET_NOT_POSTED
        if (
            target.debit_account_id != request.credit_account_id
            or target.credit_account_id != request.debit_account_id
        ):
            return Result.REVERSAL_MUST_SWAP_ACCOUNTS
        already = self.state.reversed_amounts.get(target.id, 0)
        if already + amount > target.amount:
            return Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT
        return Result.OK

    def _record_reversal(self, target_id: uuid.UUID, amount: int) -> None:
        reversed_amounts = self.state.reversed_amounts
        reversed_amounts[target_id] = reversed_amounts.get(target_id, 0) + amount
        if self._recording:
            self._undo_reversed.append((target_id, amount))

    def _apply_resolution(self, request: TransferRequest) -> Result:
        state = self.state
        pending = state.transfers.get(request.pending_id)  # type: ignore[arg-type]
        if pending is None:
            return Result.PENDING_TRANSFER_NOT_FOUND
        if not pending.flags & _T_PENDING:
            return Result.PENDING_TRANSFER_NOT_PENDING
        if (
            request.debit_account_id is not None
            and request.debit_account_id != pending.debit_account_id
        ):
            return Result.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID
        if (
            request.credit_account_id is not None
            and request.credit_account_id != pending.credit_account_id
        ):
            return Result.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID
        if request.currency is not None and request.currency != pending.currency:
            return Result.PENDING_TRANSFER_HAS_DIFFERENT_CURRENCY
        posting = bool(request.flags & _T_POST_PENDING)
        amount = pending.amount if request.amount is None else request.amount
        if amount > pending.amount:
            return Result.EXCEEDS_PENDING_TRANSFER_AMOUNT
        if not posting and amount != pending.amount:
            return Result.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT
        resolution = state.resolutions.get(pending.id)
        if resolution is not None:
            if resolution.flags & _T_POST_PENDING:
                return Result.PENDING_TRANSFER_ALREADY_POSTED
            if resolution.flags & _T_EXPIRY:
                return Result.PENDING_TRANSFER_EXPIRED
            return Result.PENDING_TRANSFER_ALREADY_VOIDED
        if (
            pending.expires_ts is not None
            and self.next_ts >= pending.expires_ts  # the ledger's time is the transfer's
            and not request.flags & _T_EXPIRY
        ):
            return Result.PENDING_TRANSFER_EXPIRED
        debit = state.accounts.get(pending.debit_account_id)
        credit = state.accounts.get(pending.credit_account_id)
        invariant(debit is not None and credit is not None, "a pending transfer's accounts exist")
        assert debit is not None and credit is not None  # for the type checker
        if posting:
            if debit.closed_ts is not None:
                return Result.DEBIT_ACCOUNT_CLOSED
            if credit.closed_ts is not None:
                return Result.CREDIT_ACCOUNT_CLOSED
            result = self._check_limits(debit, credit, amount, pending.amount)
            if result is not Result.OK:
                return result
        if self._recording:
            self._touch(debit)
            self._touch(credit)
        debit.debits_pending -= pending.amount
        credit.credits_pending -= pending.amount
        if posting:
            debit.debits_posted += amount
            credit.credits_posted += amount
        invariant(
            debit.debits_pending >= 0 and credit.credits_pending >= 0,
            "pending counters never go negative",
        )
        state.resolutions[pending.id] = Resolution(transfer_id=request.id, flags=request.flags)
        if self._recording:
            self._undo_resolutions.append(pending.id)
        self._commit_transfer(request, debit, credit, amount, pending.currency, pending.id, None)
        return Result.OK

    def _commit_transfer(
        self,
        request: TransferRequest,
        debit: Account,
        credit: Account,
        amount: int,
        currency: str,
        pending_id: uuid.UUID | None,
        expires_ts: int | None,
    ) -> None:
        ts = self.next_ts
        self.next_ts = ts + 1
        plan = self.plan
        transfer = Transfer(  # positional: this runs once per transfer
            request.id,
            debit.id,
            credit.id,
            amount,
            currency,
            request.code,
            request.flags,
            pending_id,
            request.reversal_of,
            request.external_ref,
            request.timeout_s,
            expires_ts,
            ts,
            self.batch_id,
            len(plan.new_transfers),
        )
        debit.last_transfer_ts = ts
        credit.last_transfer_ts = ts
        # Keyed by object identity: an int key hashes in C, a UUID in Python.
        self._touched[id(debit)] = debit
        self._touched[id(credit)] = credit
        self.state.transfers[request.id] = transfer
        if self._recording:
            self._undo_transfers.append(request.id)
        plan.new_transfers.append(transfer)
        if not (debit.flags | credit.flags) & _A_HISTORY:
            return
        for account in (debit, credit):
            if account.flags & _A_HISTORY:
                plan.history.append(
                    (
                        account.id,
                        ts,
                        transfer.id,
                        account.debits_pending,
                        account.debits_posted,
                        account.credits_pending,
                        account.credits_posted,
                    )
                )

    # -- the whole batch --

    def run(self, requests: Sequence[TransferRequest], chain_breaks: frozenset[int]) -> BatchPlan:
        outcomes: list[TransferOutcome] = []
        chain_start = -1  # index of the open linked chain's first event, or -1
        chain_failed = False
        last = len(requests) - 1
        ok = Result.OK
        for index, request in enumerate(requests):
            linked = bool(request.flags & _T_LINKED)
            if chain_start < 0:
                chain_failed = False
                # Only a linked chain can need undoing: a lone event changes
                # nothing unless every check has passed.
                self._recording = linked
                if linked:
                    self._begin_chain()
                    chain_start = index
            closes_chain = not linked or index == last or index in chain_breaks
            if chain_failed:
                result = Result.LINKED_EVENT_FAILED
            elif linked and closes_chain:
                result = Result.LINKED_EVENT_CHAIN_OPEN
            else:
                result = self.apply(request)
            if result is ok:
                outcomes.append(TransferOutcome(index, request.id, ok, self.next_ts - 1))
            else:
                outcomes.append(TransferOutcome(index, request.id, result))
                if not chain_failed:
                    chain_failed = True
                    if chain_start >= 0:
                        self._rollback_chain()
                        for earlier in range(chain_start, index):
                            outcomes[earlier] = TransferOutcome(
                                earlier, requests[earlier].id, Result.LINKED_EVENT_FAILED
                            )
                    self._remember_failure(request, result)
            if closes_chain:
                chain_start = -1
        self._finish(outcomes)
        return self.plan

    def _remember_failure(self, request: TransferRequest, result: Result) -> None:
        """A failure decided by the ledger's state: the id stays failed."""
        rejections = self.state.rejections
        if result in STATE_RESULTS and request.id not in rejections:
            rejection = Rejection(request.id, result, fingerprint(request), self.now_ts)
            rejections[request.id] = rejection
            self.plan.new_rejections.append(rejection)

    def _finish(self, outcomes: list[TransferOutcome]) -> None:
        plan = self.plan
        plan.outcomes = outcomes
        plan.touched_accounts = {a.id: a for a in self._touched.values()}
        plan.merkle_root = batch_merkle_root(plan.new_transfers)


def plan_batch(
    requests: Sequence[TransferRequest],
    state: BatchState,
    *,
    batch_id: uuid.UUID,
    now_ts: int,
    chain_breaks: frozenset[int] = frozenset(),
    system: bool = False,
) -> BatchPlan:
    """Decide every event's result against ``state`` and the writes that follow.

    ``chain_breaks`` holds the indexes of events that end a caller's part of a
    group-committed batch: a linked chain never runs across callers. ``state``
    is mutated into the state after the batch. ``system`` allows the flags only
    the ledger itself may set (the expiry void).
    """
    return _Planner(state, batch_id, now_ts, system).run(requests, chain_breaks)

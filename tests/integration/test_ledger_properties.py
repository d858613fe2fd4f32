"""Property tests against the real database: random batches keep every invariant.

Each example opens fresh accounts, then applies a random program of batches
(plain transfers, holds with timeouts, full and partial posts, voids, linked
chains that may fail, retried ids, amounts beyond the balance, reversals,
cross-currency and unknown-account events) and clock ticks that run the expiry
sweep. A small reference model predicts every result code and every counter;
after each step the database must agree with it, ``verify()`` must pass after
``seal()``, and debits must equal credits per currency.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from factories import account, new_id, pending, post, transfer, void
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from zhifu.ledger.model import (
    STATE_RESULTS,
    US_PER_S,
    AccountFlags,
    Result,
    TransferFlags,
    TransferRequest,
    expiry_transfer_id,
)
from zhifu.ledger.service import LedgerService
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import ledger_accounts

settings.register_profile(
    "ledger-sqlite",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ledger-postgres",
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CURRENCIES = ("CNY", "USD")
TIMEOUTS_S = (0, 0, 1, 5, 30)
TIMEOUT_S_LONGEST = max(TIMEOUTS_S)
START_US = 1_800_000_000_000_000
DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
# Per currency: a bank (no balance flag), three customers, one loan account.
ACCOUNT_FLAGS = (
    0,
    DEBITS_MUST_NOT_EXCEED_CREDITS,
    DEBITS_MUST_NOT_EXCEED_CREDITS | int(AccountFlags.HISTORY),
    DEBITS_MUST_NOT_EXCEED_CREDITS,
    CREDITS_MUST_NOT_EXCEED_DEBITS | int(AccountFlags.HISTORY),
)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING)
_VOID = int(TransferFlags.VOID_PENDING)
_EXPIRY = int(TransferFlags.EXPIRY)
_LINKED = int(TransferFlags.LINKED)


# --- the reference model ------------------------------------------------------------------------


@dataclass
class ModelTransfer:
    request: TransferRequest
    debit: uuid.UUID
    credit: uuid.UUID
    amount: int
    currency: str
    flags: int
    expires_ts: int | None = None


@dataclass
class Model:
    """What the ledger should hold for this example's accounts."""

    flags: dict[uuid.UUID, int]
    currency: dict[uuid.UUID, str]
    counters: dict[uuid.UUID, list[int]]  # debits_pending, debits_posted, credits_*
    transfers: dict[uuid.UUID, ModelTransfer] = field(default_factory=dict)
    rejections: dict[uuid.UUID, tuple[Result, TransferRequest]] = field(default_factory=dict)
    resolutions: dict[uuid.UUID, int] = field(default_factory=dict)  # pending id -> flags
    reversed_amounts: dict[uuid.UUID, int] = field(default_factory=dict)

    def predict(self, request: TransferRequest, now_us: int) -> Result:
        """Apply one valid event; the result code the ledger must answer."""
        existing = self.transfers.get(request.id)
        if existing is not None:
            return _compare_existing(request, existing)
        rejection = self.rejections.get(request.id)
        if rejection is not None:
            return rejection[0] if rejection[1] == request else Result.ID_ALREADY_FAILED
        if request.flags & (_POST | _VOID):
            return self._resolve(request, now_us)
        debit, credit = request.debit_account_id, request.credit_account_id
        if debit not in self.counters:
            return Result.DEBIT_ACCOUNT_NOT_FOUND
        if credit not in self.counters:
            return Result.CREDIT_ACCOUNT_NOT_FOUND
        assert debit is not None and credit is not None
        if self.currency[debit] != self.currency[credit]:
            return Result.ACCOUNTS_MUST_HAVE_THE_SAME_CURRENCY
        amount = request.amount
        assert amount is not None and request.currency == self.currency[debit]
        if request.reversal_of is not None:
            result = self._check_reversal(request, amount)
            if result is not Result.OK:
                return result
        result = self._check_limits(debit, credit, amount, 0)
        if result is not Result.OK:
            return result
        if request.flags & _PENDING:
            self.counters[debit][0] += amount
            self.counters[credit][2] += amount
        else:
            self.counters[debit][1] += amount
            self.counters[credit][3] += amount
            if request.reversal_of is not None:
                target = request.reversal_of
                self.reversed_amounts[target] = self.reversed_amounts.get(target, 0) + amount
        self.transfers[request.id] = ModelTransfer(
            request, debit, credit, amount, request.currency, request.flags
        )
        return Result.OK

    def _check_limits(self, debit: uuid.UUID, credit: uuid.UUID, amount: int, released: int):
        dp, dpo, _, dcpo = self.counters[debit]
        _, cdpo, cp, cpo = self.counters[credit]
        if self.flags[debit] & DEBITS_MUST_NOT_EXCEED_CREDITS and dp + dpo - released + amount > (
            dcpo
        ):
            return Result.EXCEEDS_CREDITS
        if self.flags[credit] & CREDITS_MUST_NOT_EXCEED_DEBITS and cp + cpo - released + amount > (
            cdpo
        ):
            return Result.EXCEEDS_DEBITS
        return Result.OK

    def _check_reversal(self, request: TransferRequest, amount: int) -> Result:
        target = self.transfers.get(request.reversal_of)  # type: ignore[arg-type]
        if target is None:
            return Result.REVERSAL_TARGET_NOT_FOUND
        if target.flags & (_PENDING | _VOID):
            return Result.REVERSAL_TARGET_NOT_POSTED
        if (target.debit, target.credit) != (request.credit_account_id, request.debit_account_id):
            return Result.REVERSAL_MUST_SWAP_ACCOUNTS
        if self.reversed_amounts.get(target.request.id, 0) + amount > target.amount:
            return Result.REVERSAL_EXCEEDS_ORIGINAL_AMOUNT
        return Result.OK

    def _resolve(self, request: TransferRequest, now_us: int) -> Result:
        hold = self.transfers.get(request.pending_id)  # type: ignore[arg-type]
        if hold is None:
            return Result.PENDING_TRANSFER_NOT_FOUND
        if not hold.flags & _PENDING:
            return Result.PENDING_TRANSFER_NOT_PENDING
        posting = bool(request.flags & _POST)
        amount = hold.amount if request.amount is None else request.amount
        if amount > hold.amount:
            return Result.EXCEEDS_PENDING_TRANSFER_AMOUNT
        resolved = self.resolutions.get(hold.request.id)
        if resolved is not None:
            if resolved & _POST:
                return Result.PENDING_TRANSFER_ALREADY_POSTED
            if resolved & _EXPIRY:
                return Result.PENDING_TRANSFER_EXPIRED
            return Result.PENDING_TRANSFER_ALREADY_VOIDED
        if hold.expires_ts is not None and now_us >= hold.expires_ts:
            return Result.PENDING_TRANSFER_EXPIRED
        if posting:
            result = self._check_limits(hold.debit, hold.credit, amount, hold.amount)
            if result is not Result.OK:
                return result
        self.counters[hold.debit][0] -= hold.amount
        self.counters[hold.credit][2] -= hold.amount
        if posting:
            self.counters[hold.debit][1] += amount
            self.counters[hold.credit][3] += amount
        self.resolutions[hold.request.id] = request.flags
        self.transfers[request.id] = ModelTransfer(
            request, hold.debit, hold.credit, amount, hold.currency, request.flags
        )
        return Result.OK

    def run_batch(self, requests: list[TransferRequest], now_us: int) -> list[Result]:
        """The planner's batch rules: linked chains commit or fail together."""
        results: list[Result] = []
        chain_start, chain_failed, saved = -1, False, None
        last = len(requests) - 1
        for index, request in enumerate(requests):
            is_linked = bool(request.flags & _LINKED)
            if chain_start < 0:
                chain_failed = False
                if is_linked:
                    chain_start, saved = index, self._save()
            closes = not is_linked or index == last
            if chain_failed:
                result = Result.LINKED_EVENT_FAILED
            elif is_linked and closes:
                result = Result.LINKED_EVENT_CHAIN_OPEN
            else:
                result = self.predict(request, now_us)
            if result is not Result.OK and not chain_failed:
                chain_failed = True
                if chain_start >= 0:
                    self._restore(saved)
                    for earlier in range(chain_start, index):
                        results[earlier] = Result.LINKED_EVENT_FAILED
                if result in STATE_RESULTS and request.id not in self.rejections:
                    self.rejections[request.id] = (result, request)
            results.append(result)
            if closes:
                chain_start = -1
        return results

    def _save(self) -> Any:
        return copy.deepcopy(
            (self.counters, self.transfers, self.resolutions, self.reversed_amounts)
        )

    def _restore(self, saved: Any) -> None:
        self.counters, self.transfers, self.resolutions, self.reversed_amounts = saved

    def expire(self, now_us: int) -> int:
        """The sweep: void every unresolved hold whose timeout has passed."""
        expired = [
            t
            for t in self.transfers.values()
            if t.flags & _PENDING
            and t.expires_ts is not None
            and t.expires_ts <= now_us
            and t.request.id not in self.resolutions
        ]
        for hold in expired:
            self.counters[hold.debit][0] -= hold.amount
            self.counters[hold.credit][2] -= hold.amount
            self.resolutions[hold.request.id] = _VOID | _EXPIRY
            void_id = expiry_transfer_id(hold.request.id)
            self.transfers[void_id] = ModelTransfer(
                hold.request._replace(id=void_id),
                hold.debit,
                hold.credit,
                hold.amount,
                hold.currency,
                _VOID | _EXPIRY,
            )
        return len(expired)


def _compare_existing(request: TransferRequest, existing: ModelTransfer) -> Result:
    """``exists``, or the first field in which a retry differs from the committed transfer."""
    stored = existing.request
    if request.flags != stored.flags:
        return Result.EXISTS_WITH_DIFFERENT_FLAGS
    if request.pending_id != stored.pending_id:
        return Result.EXISTS_WITH_DIFFERENT_PENDING_ID
    if request.timeout_s != stored.timeout_s:
        return Result.EXISTS_WITH_DIFFERENT_TIMEOUT
    if request.debit_account_id not in (None, existing.debit):
        return Result.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID
    if request.credit_account_id not in (None, existing.credit):
        return Result.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID
    if request.amount not in (None, existing.amount):
        return Result.EXISTS_WITH_DIFFERENT_AMOUNT
    if request.currency not in (None, existing.currency):
        return Result.EXISTS_WITH_DIFFERENT_CURRENCY
    if request.code != stored.code:
        return Result.EXISTS_WITH_DIFFERENT_CODE
    if request.reversal_of != stored.reversal_of:
        return Result.EXISTS_WITH_DIFFERENT_REVERSAL_OF
    if request.external_ref != stored.external_ref:
        return Result.EXISTS_WITH_DIFFERENT_EXTERNAL_REF
    return Result.EXISTS


# --- programs -----------------------------------------------------------------------------------

small_amounts = st.integers(min_value=1, max_value=400)
any_amount = st.one_of(small_amounts, small_amounts, st.integers(min_value=2_000, max_value=50_000))
picks = st.integers(min_value=0, max_value=10**6)

plain_transfers = st.tuples(st.just("transfer"), picks, picks, picks, any_amount)
holds = st.tuples(
    st.just("pending"), picks, picks, picks, small_amounts | any_amount, st.sampled_from(TIMEOUTS_S)
)
# The flag says whether to aim at a hold that is still open (else at any hold ever tried).
posts = st.tuples(st.just("post"), picks, st.booleans(), st.one_of(st.none(), small_amounts))
voids = st.tuples(st.just("void"), picks, st.booleans())
events = st.one_of(
    plain_transfers,
    plain_transfers,
    holds,
    holds,
    posts,
    posts,
    voids,
    st.tuples(st.just("reversal"), picks, small_amounts),
    st.tuples(st.just("retry"), picks, st.booleans()),
    st.tuples(st.just("retry"), picks, st.just(False)),
    st.tuples(st.just("unknown_account"), picks, st.booleans()),
    st.tuples(st.just("cross_currency"), picks, picks),
)
# About one event in five links to the next one.
link_flags = st.sampled_from((False, False, False, False, True))
batches = st.lists(st.tuples(events, link_flags), min_size=1, max_size=12).map(
    lambda items: ("batch", items)
)
ticks = st.tuples(st.just("tick"), st.integers(min_value=0, max_value=40))
programs = st.lists(st.one_of(batches, batches, ticks), min_size=1, max_size=8)


class ProgramRunner:
    """Turns abstract events into requests against this example's accounts."""

    def __init__(self, accounts: dict[str, list[uuid.UUID]]):
        self.accounts = accounts
        self.requests: list[TransferRequest] = []
        self.holds: list[uuid.UUID] = []
        self.batch_holds: list[uuid.UUID] = []  # holds tried earlier in the current batch
        self.posted: list[TransferRequest] = []

    def _pair(self, currency_pick: int, d: int, c: int) -> tuple[uuid.UUID, uuid.UUID, str]:
        currency = CURRENCIES[currency_pick % len(CURRENCIES)]
        ids = self.accounts[currency]
        debit = ids[d % len(ids)]
        credit = ids[c % len(ids)]
        if credit == debit:
            credit = ids[(d + 1) % len(ids)]
        return debit, credit, currency

    def request(self, event: tuple[Any, ...], is_linked: bool, model: Model) -> TransferRequest:
        """The event as a request; flags are plain ints, so that equal retries are equal."""
        kind = event[0]
        if kind == "transfer":
            debit, credit, currency = self._pair(event[1], event[2], event[3])
            made = transfer(debit, credit, event[4], currency)
        elif kind == "pending":
            debit, credit, currency = self._pair(event[1], event[2], event[3])
            made = pending(debit, credit, event[4], currency=currency, timeout_s=event[5])
            self.holds.append(made.id)
            self.batch_holds.append(made.id)
        elif kind in ("post", "void"):
            target = self._hold(event[1], event[2], model)
            made = post(target, event[3]) if kind == "post" else void(target)
        elif kind == "reversal":
            made = self._reversal(event[1], event[2], model)
        elif kind == "retry" and self.requests:
            made = self.requests[event[1] % len(self.requests)]
            if event[2] and made.amount is not None:
                made = made._replace(amount=made.amount + 1)
        elif kind == "cross_currency":
            debit = self.accounts["CNY"][event[1] % len(self.accounts["CNY"])]
            credit = self.accounts["USD"][event[2] % len(self.accounts["USD"])]
            made = transfer(debit, credit, 1, "CNY")
        else:  # an unknown account on one side (or a retry with nothing to retry)
            known = self.accounts["CNY"][event[1] % len(self.accounts["CNY"])]
            pair = (new_id(), known) if event[-1] else (known, new_id())
            made = transfer(pair[0], pair[1], 1, "CNY")
        flags = (made.flags | _LINKED) if is_linked else (made.flags & ~_LINKED)
        made = made._replace(flags=int(flags))
        if kind in ("transfer", "post"):
            self.posted.append(made)
        self.requests.append(made)
        return made

    def _hold(self, pick: int, open_only: bool, model: Model) -> uuid.UUID:
        candidates = self.holds
        if open_only:
            committed = [
                h for h in self.holds if h in model.transfers and h not in model.resolutions
            ]
            candidates = committed + self.batch_holds or self.holds
        return candidates[pick % len(candidates)] if candidates else new_id()

    def _reversal(self, pick: int, amount: int, model: Model) -> TransferRequest:
        if not self.posted:
            debit, credit, currency = self._pair(0, 0, 1)
            return transfer(debit, credit, amount, currency, reversal_of=new_id())
        target_request = self.posted[pick % len(self.posted)]
        target = model.transfers.get(target_request.id)
        if target is None:  # it failed: the reversal's target is not found
            debit, credit, currency = self._pair(0, 0, 1)
        else:
            debit, credit, currency = target.credit, target.debit, target.currency
        return transfer(debit, credit, amount, currency, reversal_of=target_request.id)


# --- checks against the database ----------------------------------------------------------------


def stored_accounts(engine: Engine) -> list[tuple[Any, ...]]:
    c = ledger_accounts.c
    statement = select(
        c.id,
        c.currency,
        c.flags,
        c.debits_pending,
        c.debits_posted,
        c.credits_pending,
        c.credits_posted,
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(statement)]


def check_database(ledger: LedgerService, model: Model) -> None:
    ledger.seal()
    report = ledger.verify()
    assert report.ok, report.as_dict()
    assert report.unsealed_batches == 0

    rows = stored_accounts(ledger.engine)
    totals: dict[str, list[int]] = {}
    for account_id, currency, flags, dp, dpo, cp, cpo in rows:
        total = totals.setdefault(currency, [0, 0, 0, 0])
        for i, value in enumerate((dp, dpo, cp, cpo)):
            total[i] += value
        assert min(dp, dpo, cp, cpo) >= 0, account_id
        if flags & DEBITS_MUST_NOT_EXCEED_CREDITS:
            assert dp + dpo <= cpo, account_id
        if flags & CREDITS_MUST_NOT_EXCEED_DEBITS:
            assert cp + cpo <= dpo, account_id
        if account_id in model.counters:
            assert [dp, dpo, cp, cpo] == model.counters[account_id], account_id
    for currency, (dp, dpo, cp, cpo) in totals.items():
        assert dpo == cpo, (currency, dpo, cpo)
        assert dp == cp, (currency, dp, cp)


def apply_batch(
    ledger: LedgerService, model: Model, requests: list[TransferRequest], now_us: int
) -> None:
    outcomes = ledger.create_transfers(requests)
    expected = model.run_batch(requests, now_us)
    mismatches = [
        (index, request, outcome.result, wanted)
        for index, (request, outcome, wanted) in enumerate(
            zip(requests, outcomes, expected, strict=True)
        )
        if outcome.result is not wanted
    ]
    assert not mismatches, mismatches
    stamps = [o.ts for o in outcomes if o.ok]
    assert all(ts is not None and ts >= now_us for ts in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for request, outcome in zip(requests, outcomes, strict=True):
        if outcome.ok and request.flags & _PENDING and request.timeout_s:
            assert outcome.ts is not None
            model.transfers[request.id].expires_ts = outcome.ts + request.timeout_s * US_PER_S


def open_example_accounts(ledger: LedgerService, model: Model) -> dict[str, list[uuid.UUID]]:
    accounts: dict[str, list[uuid.UUID]] = {}
    requests = []
    for currency in CURRENCIES:
        made = [account(currency, flags=flags) for flags in ACCOUNT_FLAGS]
        accounts[currency] = [r.id for r in made]
        requests.extend(made)
        for r in made:
            model.flags[r.id] = r.flags
            model.currency[r.id] = currency
            model.counters[r.id] = [0, 0, 0, 0]
    assert all(o.result == "ok" for o in ledger.create_accounts(requests))
    return accounts


def test_random_batches_keep_every_invariant(ledger: LedgerService, signer: Ed25519Signer) -> None:
    # One clock for every example: time never goes back within a database.
    fake_now = [START_US]
    clocked = LedgerService(ledger.engine, signer, clock=lambda: fake_now[0])
    profile = "ledger-postgres" if ledger.engine.dialect.name == "postgresql" else "ledger-sqlite"

    @settings(settings.get_profile(profile))
    @given(program=programs)
    def run(program: list[Any]) -> None:
        model = Model({}, {}, {})
        # Expire what earlier examples left behind: the sweep counts are exact below.
        fake_now[0] += (TIMEOUT_S_LONGEST + 1) * US_PER_S
        clocked.expire_pending()
        accounts = open_example_accounts(clocked, model)
        runner = ProgramRunner(accounts)
        # Seed money: every bank funds each of its customers; two holds per currency
        # give posts and voids something to aim at from the first batch on.
        seed = [
            transfer(ids[0], customer, 1_000, currency)
            for currency, ids in accounts.items()
            for customer in ids[1:4]
        ]
        for currency, ids in accounts.items():
            for debit, credit, timeout_s in ((ids[1], ids[2], 5), (ids[3], ids[0], 0)):
                hold = pending(debit, credit, 200, currency=currency, timeout_s=timeout_s)
                hold = hold._replace(flags=int(hold.flags))
                runner.holds.append(hold.id)
                seed.append(hold)
        apply_batch(clocked, model, seed, fake_now[0])
        for step in program:
            if step[0] == "tick":
                fake_now[0] += step[1] * US_PER_S
                expected = model.expire(fake_now[0])
                assert clocked.expire_pending() == expected
            else:
                runner.batch_holds = []
                requests = [runner.request(event, is_linked, model) for event, is_linked in step[1]]
                apply_batch(clocked, model, requests, fake_now[0])
            check_database(clocked, model)
        # Let every hold with a timeout run out, so the next example starts clean.
        fake_now[0] += (TIMEOUT_S_LONGEST + 1) * US_PER_S
        assert clocked.expire_pending() == model.expire(fake_now[0])
        check_database(clocked, model)

    run()

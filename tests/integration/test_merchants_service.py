"""Merchants on real SQLite and PostgreSQL: onboarding and approval, QR codes
paid by scanning (static, dynamic, expired, used, altered), payment codes
charged by a point of sale (once, even when two tills race), refunds (never
more than was paid, even when they race), the webhooks each publishes in its
own transaction, and every refusal changing nothing."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from accounts_factories import customer_ctx
from identity_factories import FakeClock
from merchants_factories import SHOP, MerchantBank, Shop, idem, staff_ctx
from payments_factories import funded
from sqlalchemy import Engine, func, select

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts.model import (
    CLASS_III_BALANCE_MAX_MINOR,
    CLASS_III_OUTGOING_DAILY_MAX_MINOR,
    AccountClass,
)
from zhifu.accounts.service import AccountView
from zhifu.ledger.service import LedgerService
from zhifu.merchants.errors import (
    CodeGuessesThrottledError,
    ForeignQrCodeError,
    InvalidMerchantError,
    MerchantNotFoundError,
    MerchantQuotaError,
    MerchantStateError,
    PaymentCodeCapError,
    PaymentCodeInvalidError,
    QrCodeExpiredError,
    QrCodeUsedError,
    RefundNotAllowedError,
)
from zhifu.merchants.model import (
    CODE_FAILURES_PER_WINDOW_MAX,
    MERCHANTS_PER_CUSTOMER_MAX,
    PAYMENT_CODE_TTL_S,
    PAYMENT_CODES_LIVE_MAX,
    PAYMENTS_PAGE_MAX,
    MerchantStatus,
    QrKind,
    QrRequest,
    build_qr_payload,
    check_qr_request,
    new_payment_code,
)
from zhifu.merchants.service import Caller, Onboarding
from zhifu.money import Money
from zhifu.ops.audit import system_context
from zhifu.payments import errors as payments_errors
from zhifu.payments.model import OrderState, PaymentKind
from zhifu.payments.service import PaymentResult
from zhifu.store.tables import (
    merchants_payment_codes,
    merchants_qr_codes,
    payments_orders,
    webhooks_events,
)

FOREIGN_PAYLOAD = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988"
    "770708123456786304A13A"
)


@pytest.fixture
def bank(engine: Engine, ledger: LedgerService) -> MerchantBank:
    return MerchantBank(engine, ledger, FakeClock())


@pytest.fixture
def shop(bank: MerchantBank) -> Shop:
    return bank.shop()


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _balance(bank: MerchantBank, account: AccountView) -> str:
    return bank.accounts.get_account(account.customer_id, account.id).balance.format()


def _events(bank: MerchantBank, shop: Shop) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, json.loads(body)["data"]) for kind, body in bank.events(shop.key_id)]


def _paid(bank: MerchantBank, shop: Shop, amount: str = "100.00") -> uuid.UUID:
    """A settled payment to ``shop`` through its static code; its order id."""
    payer = funded(bank, 1_000_00)
    code = bank.qr(shop)
    return bank.pay_qr(payer, code.payload, amount).order.id


# --- onboarding and approval ---------------------------------------------------------------


def test_a_merchant_is_pending_until_staff_approve_it(bank: MerchantBank) -> None:
    account = bank.open(bank.customer())
    merchant = bank.onboard(account, alternate_name="金龙面馆", alternate_city="上海")
    assert merchant.status is MerchantStatus.PENDING
    assert (merchant.details.currency, merchant.country) == ("CNY", "CN")
    assert merchant.partner_key_id is None
    owner = Caller.customer(account.customer_id)
    with pytest.raises(MerchantStateError, match="waiting for the bank's approval"):
        bank.merchants.create_qr_code(
            owner,
            merchant.id,
            QrRequest(QrKind.STATIC),
            idem(owner.actor, "/q", {}),
            system_context(),
        )
    key_id = bank.partner_key()
    approved = bank.merchants.approve(merchant.id, key_id, staff_ctx())
    assert (approved.status, approved.partner_key_id) == (MerchantStatus.ACTIVE, key_id)
    assert bank.merchants.approve(merchant.id, key_id, staff_ctx()) == approved  # idempotent
    with pytest.raises(MerchantStateError, match="another partner key"):
        bank.merchants.approve(merchant.id, bank.partner_key(), staff_ctx())
    assert bank.merchants.merchants_of(account.customer_id) == [approved]
    assert bank.merchants.merchant(Caller.partner(key_id), merchant.id) == approved


def test_approval_needs_a_live_key_with_the_merchant_scope(bank: MerchantBank) -> None:
    merchant = bank.onboard(bank.open(bank.customer()))
    revoked = bank.partner_key()
    bank.partners.revoke_key(revoked, system_context())
    for key_id in ("no-such-key", bank.partner_key(("payments",)), revoked):
        with pytest.raises(InvalidMerchantError, match="merchant' scope") as refused:
            bank.merchants.approve(merchant.id, key_id, staff_ctx())
        assert refused.value.field == "partner_key_id"
    with pytest.raises(MerchantNotFoundError):
        bank.merchants.approve(uuid.uuid4(), bank.partner_key(), staff_ctx())
    page = bank.merchants.merchants_page(MerchantStatus.PENDING, None, 10)
    assert [m.id for m in page.merchants] == [merchant.id]


def test_the_settlement_account_is_an_open_class_i_account_of_the_owner(
    bank: MerchantBank,
) -> None:
    owner = bank.customer()
    class_ii = bank.open(owner, account_class=AccountClass.CLASS_II)
    with pytest.raises(InvalidMerchantError, match="Class I account"):
        bank.onboard(class_ii)
    frozen = bank.open(owner)
    bank.accounts.freeze(owner, frozen.id, customer_ctx(owner))
    with pytest.raises(accounts_errors.AccountFrozenError, match="settlement account is frozen"):
        bank.onboard(frozen)
    someone_elses = bank.open(bank.customer())
    with pytest.raises(accounts_errors.AccountNotFoundError):
        bank.merchants.onboard(
            owner,
            Onboarding(settlement_account_id=someone_elses.id, **SHOP),
            idem(f"customer:{owner}", "/v1/merchants", {}),
            customer_ctx(owner),
        )
    assert bank.merchants.merchants_of(owner) == []


def test_a_customer_onboards_at_most_the_limit(bank: MerchantBank) -> None:
    account = bank.open(bank.customer())
    for _ in range(MERCHANTS_PER_CUSTOMER_MAX):
        bank.onboard(account)
    with pytest.raises(MerchantQuotaError, match=f"at most {MERCHANTS_PER_CUSTOMER_MAX}"):
        bank.onboard(account)


def test_onboarding_replays_and_conflicts(bank: MerchantBank) -> None:
    account = bank.open(bank.customer())
    first = bank.onboard(account, key="shop-1")
    assert bank.onboard(account, key="shop-1") == first
    assert len(bank.merchants.merchants_of(account.customer_id)) == 1
    with pytest.raises(payments_errors.IdempotencyConflictError):
        bank.onboard(account, key="shop-1", name="OTHER NAME")
    with pytest.raises(InvalidMerchantError, match="ISO 18245"):
        bank.onboard(account, key="shop-2", mcc="58")


def test_strangers_find_no_merchant(bank: MerchantBank, shop: Shop) -> None:
    stranger = Caller.customer(bank.customer())
    other_till = Caller.partner(bank.shop().key_id)
    for caller in (stranger, other_till):
        with pytest.raises(MerchantNotFoundError):
            bank.merchants.merchant(caller, shop.id)
        with pytest.raises(MerchantNotFoundError):
            bank.qr(shop, caller=caller)
        with pytest.raises(MerchantNotFoundError):
            bank.merchants.payments_page(caller, shop.id, None, 10)
    pending = bank.onboard(bank.open(bank.customer()))
    with pytest.raises(MerchantNotFoundError):
        bank.merchants.merchant(shop.till, pending.id)


# --- paying a scanned QR code ---------------------------------------------------------------


def test_a_static_code_is_paid_any_number_of_times(bank: MerchantBank, shop: Shop) -> None:
    code = bank.qr(shop, caller=shop.till)
    payer = funded(bank, 100_00)
    first = bank.pay_qr(payer, code.payload, "12.34").order
    second = bank.pay_qr(payer, code.payload, "0.66", from_account=False).order  # default account
    assert _balance(bank, payer) == "87.00 CNY"
    assert _balance(bank, shop.account) == "13.00 CNY"
    assert (first.kind, first.state, first.channel) == (
        PaymentKind.MERCHANT,
        OrderState.SETTLED,
        "qr",
    )
    assert (first.merchant_id, first.payee_label, first.source_ref) == (
        shop.id,
        "GOLDEN DRAGON NOODLES",
        f"qr:{code.id}",
    )
    assert first.payer_label == f"****{payer.number[-4:]}"
    events = _events(bank, shop)
    assert [kind for kind, _ in events] == ["payment.succeeded", "payment.succeeded"]
    assert events[1][1] == {
        "payment_id": str(second.id),
        "merchant_id": str(shop.id),
        "state": "settled",
        "amount_minor": 66,
        "currency": "CNY",
        "order_ref": None,
        "source": f"qr:{code.id}",
        "created_ts": second.created_ts,
    }
    with pytest.raises(InvalidMerchantError, match="enter the amount"):
        bank.pay_qr(payer, code.payload)


def test_a_dynamic_code_pays_once(bank: MerchantBank, shop: Shop) -> None:
    code = bank.qr(shop, QrKind.DYNAMIC, "36.50", order_ref="ORDER-42")
    payer, other = funded(bank, 100_00), funded(bank, 100_00)
    with pytest.raises(InvalidMerchantError, match="pay exactly that"):
        bank.pay_qr(payer, code.payload, "36.49")
    order = bank.pay_qr(payer, code.payload).order
    assert (order.amount, order.external_ref) == (Money.parse("36.50", "CNY"), "ORDER-42")
    used = bank.merchants.qr_code(shop.owner, shop.id, code.id)
    assert (used.status.value, used.used_order_id) == ("used", order.id)
    with pytest.raises(QrCodeUsedError):
        bank.pay_qr(other, code.payload, "36.50")
    assert _balance(bank, other) == "100.00 CNY"
    assert _events(bank, shop)[0][1]["order_ref"] == "ORDER-42"


def test_an_expired_dynamic_code_is_refused(bank: MerchantBank, shop: Shop) -> None:
    code = bank.qr(shop, QrKind.DYNAMIC, "5.00", ttl_s=60)
    payer = funded(bank, 10_00)
    bank.clock.advance(seconds=60)
    with pytest.raises(QrCodeExpiredError, match="ask the merchant for a new one"):
        bank.pay_qr(payer, code.payload)
    assert _count(bank.engine, payments_orders) == 0


def test_altered_and_foreign_codes_are_refused(bank: MerchantBank, shop: Shop) -> None:
    code = bank.qr(shop, QrKind.DYNAMIC, "36.50")
    cheaper = build_qr_payload(
        shop.id,
        code.id,
        shop.merchant.details,
        check_qr_request(QrRequest(QrKind.DYNAMIC, Money.parse("0.01", "CNY")), "CNY"),
    )
    forged = build_qr_payload(
        shop.id, uuid.uuid4(), shop.merchant.details, QrRequest(QrKind.STATIC)
    )
    payer = funded(bank, 100_00)
    for payload in (cheaper, forged, FOREIGN_PAYLOAD):
        with pytest.raises(ForeignQrCodeError):
            bank.pay_qr(payer, payload, "0.01" if payload != cheaper else None)
    assert _count(bank.engine, payments_orders) == 0
    assert bank.merchants.qr_code(shop.owner, shop.id, code.id).status.value == "active"


def test_a_retry_answers_the_first_payment(bank: MerchantBank, shop: Shop) -> None:
    code = bank.qr(shop)
    payer = funded(bank, 100_00)
    first = bank.pay_qr(payer, code.payload, "10.00", key="scan-1")
    again = bank.pay_qr(payer, code.payload, "10.00", key="scan-1")
    assert (again.replayed, again.order.id) == (True, first.order.id)
    assert _balance(bank, payer) == "90.00 CNY"
    with pytest.raises(payments_errors.IdempotencyConflictError):
        bank.pay_qr(payer, code.payload, "11.00", key="scan-1")
    assert len(_events(bank, shop)) == 1


def test_a_frozen_paying_account_refuses_with_its_reason(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    bank.accounts.freeze(payer.customer_id, payer.id, customer_ctx(payer.customer_id))
    with pytest.raises(accounts_errors.AccountFrozenError, match=r"your account .*frozen"):
        bank.pay_qr(payer, bank.qr(shop).payload, "1.00")
    assert _count(bank.engine, payments_orders) == 0
    assert _count(bank.engine, webhooks_events) == 0


def test_a_card_pays_a_scanned_code_until_it_is_frozen(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    ctx = customer_ctx(payer.customer_id)
    card = bank.accounts.issue_card(payer.customer_id, payer.id, ctx)
    payload = bank.qr(shop).payload
    plan = bank.merchants.scan(payload, "2.00", None)
    scope = f"customer:{payer.customer_id}"

    def pay() -> PaymentResult:
        body = {"payload": payload, "amount": "2.00", "card": str(card.id)}
        return bank.merchants.pay_scanned(
            payer.customer_id,
            plan,
            None,
            "",
            None,
            idem(scope, "/v1/qr-payments", body),
            from_card_id=card.id,
        )

    assert pay().order.debit_account_id == payer.id
    bank.accounts.freeze_card(payer.customer_id, card.id, ctx)
    with pytest.raises(accounts_errors.CardBlockedError, match="frozen"):
        pay()
    assert _count(bank.engine, payments_orders) == 1


def test_the_qr_daily_limit_at_the_limit_and_one_past(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, CLASS_III_BALANCE_MAX_MINOR, account_class=AccountClass.CLASS_III)
    payload = bank.qr(shop).payload
    limit = Money(CLASS_III_OUTGOING_DAILY_MAX_MINOR, "CNY")
    bank.pay_qr(payer, payload, limit.to_decimal_string())  # exactly the daily limit
    bank.deposit(payer, 1_00)
    with pytest.raises(accounts_errors.LimitExceededError, match="daily"):
        bank.pay_qr(payer, payload, "0.01")


def test_a_large_payment_needs_a_second_factor(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 10_000_00)
    payload = bank.qr(shop).payload
    bank.pay_qr(payer, payload, "4999.99")
    with pytest.raises(payments_errors.StepUpNeededError):
        bank.pay_qr(payer, payload, "5000.00")
    bank.pay_qr(payer, payload, "5000.00", step_up="totp")


def test_insufficient_funds_pay_nothing(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 1_00)
    with pytest.raises(accounts_errors.InsufficientFundsError):
        bank.pay_qr(payer, bank.qr(shop).payload, "1.01")
    assert _count(bank.engine, payments_orders) == 0


# --- payment codes --------------------------------------------------------------------------------


def test_a_payment_code_is_charged_once(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    new = bank.payment_code(payer)
    assert new.code is not None
    assert new.view.expires_ts == bank.clock() + PAYMENT_CODE_TTL_S * 1_000_000
    order = bank.charge(shop, new.code, "25.00", order_ref="TILL-7").order
    assert (order.payer_customer_id, order.merchant_id, order.external_ref) == (
        payer.customer_id,
        shop.id,
        "TILL-7",
    )
    assert order.source_ref == f"payment_code:{new.view.id}"
    assert order.payee_label == "GOLDEN DRAGON NOODLES"
    assert _balance(bank, payer) == "75.00 CNY"
    with pytest.raises(PaymentCodeInvalidError, match="expired, was used"):
        bank.charge(shop, new.code, "1.00")
    assert [kind for kind, _ in _events(bank, shop)] == ["payment.succeeded"]


def test_a_payment_code_is_stored_only_as_its_blind_index(bank: MerchantBank, shop: Shop) -> None:
    new = bank.payment_code(funded(bank, 1_00))
    assert new.code is not None
    with bank.engine.connect() as connection:
        rows = connection.execute(select(merchants_payment_codes)).all()
    assert len(rows) == 1
    stored = repr(tuple(rows[0]))
    assert new.code not in stored
    assert new.code.encode() not in bytes(rows[0].code_index)


def test_an_expired_payment_code_is_refused(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    new = bank.payment_code(payer)
    assert new.code is not None
    bank.clock.advance(seconds=PAYMENT_CODE_TTL_S)
    with pytest.raises(PaymentCodeInvalidError):
        bank.charge(shop, new.code, "1.00")
    assert _balance(bank, payer) == "100.00 CNY"


def test_the_cap_at_the_cap_and_one_past(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    over = bank.payment_code(payer, "50.00")
    assert over.code is not None
    with pytest.raises(PaymentCodeCapError, match=r"at most 50\.00 CNY"):
        bank.charge(shop, over.code, "50.01")
    bank.charge(shop, over.code, "50.00")  # the refusal left the code usable


def test_a_customer_has_at_most_five_live_codes(bank: MerchantBank) -> None:
    payer = funded(bank, 1_00)
    for _ in range(PAYMENT_CODES_LIVE_MAX):
        bank.payment_code(payer)
    with pytest.raises(MerchantQuotaError, match=f"at most {PAYMENT_CODES_LIVE_MAX}"):
        bank.payment_code(payer)
    bank.clock.advance(seconds=PAYMENT_CODE_TTL_S)  # the old ones expire
    bank.payment_code(payer)
    bank.clock.advance(seconds=2 * 86_400)
    assert bank.merchants.prune() == PAYMENT_CODES_LIVE_MAX + 1


def test_a_payment_code_replay_answers_without_the_digits(bank: MerchantBank) -> None:
    payer = funded(bank, 1_00)
    body = {"account_id": str(payer.id)}
    key = idem(f"customer:{payer.customer_id}", "/v1/payment-codes", body)
    cap = Money(4_999_99, "CNY")
    first = bank.merchants.create_payment_code(
        payer.customer_id, payer.id, cap, None, key, customer_ctx(payer.customer_id)
    )
    again = bank.merchants.create_payment_code(
        payer.customer_id, payer.id, cap, None, key, customer_ctx(payer.customer_id)
    )
    assert first.code is not None and not first.replayed
    assert (again.code, again.replayed, again.view) == (None, True, first.view)


def test_a_frozen_account_makes_no_payment_code(bank: MerchantBank) -> None:
    payer = funded(bank, 1_00)
    bank.accounts.freeze(payer.customer_id, payer.id, customer_ctx(payer.customer_id))
    with pytest.raises(accounts_errors.AccountFrozenError, match="cannot draw on it"):
        bank.payment_code(payer)


def test_another_tills_key_cannot_charge_this_merchant(bank: MerchantBank, shop: Shop) -> None:
    new = bank.payment_code(funded(bank, 10_00))
    assert new.code is not None
    other = bank.shop()
    with pytest.raises(MerchantNotFoundError):
        bank.charge(shop, new.code, "1.00", key_id=other.key_id)
    bank.charge(shop, new.code, "1.00")


def test_guessing_codes_is_throttled(bank: MerchantBank, shop: Shop) -> None:
    guesses = iter(range(1, 10_000))
    real = bank.payment_code(funded(bank, 10_00))
    assert real.code is not None
    for _ in range(CODE_FAILURES_PER_WINDOW_MAX):
        with pytest.raises(PaymentCodeInvalidError):
            bank.charge(shop, new_payment_code(lambda bound: next(guesses)), "1.00")
    with pytest.raises(CodeGuessesThrottledError) as throttled:
        bank.charge(shop, real.code, "1.00")  # even a real code waits
    assert throttled.value.retry_after_s >= 1
    other = bank.shop()  # another key is not throttled
    bank.charge(other, bank.payment_code(funded(bank, 10_00)).code or "", "1.00")
    bank.clock.advance(seconds=throttled.value.retry_after_s)
    bank.charge(shop, real.code, "1.00")


def test_two_tills_racing_one_code_pay_once(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    new = bank.payment_code(payer)
    assert new.code is not None
    code = new.code
    outcomes = _race(8, lambda index: bank.charge(shop, code, "10.00"))
    assert sorted(outcomes) == ["PaymentCodeInvalidError"] * 7 + ["paid"]
    assert _balance(bank, payer) == "90.00 CNY"
    assert bank.ledger.verify().ok


def _race(count: int, work: Callable[[int], object]) -> list[str]:
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            work(index)
            result = "paid"
        except Exception as error:  # noqa: BLE001 - the race's losers are counted by type
            result = type(error).__name__
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_payers_racing_one_dynamic_code_pay_once(bank: MerchantBank, shop: Shop) -> None:
    code = bank.qr(shop, QrKind.DYNAMIC, "10.00")
    payers = [funded(bank, 100_00) for _ in range(6)]
    outcomes = _race(6, lambda index: bank.pay_qr(payers[index], code.payload))
    assert sorted(outcomes) == ["QrCodeUsedError"] * 5 + ["paid"]
    assert _balance(bank, shop.account) == "10.00 CNY"


# --- refunds ----------------------------------------------------------------------------------


def test_refunds_in_parts_up_to_what_was_paid(bank: MerchantBank, shop: Shop) -> None:
    payment_id = _paid(bank, shop, "100.00")
    payer_account = bank.payments.order(payment_id).debit_account_id
    first = bank.refund(shop, payment_id, "30.00").order
    assert (first.kind, first.refund_of, first.merchant_id) == (
        PaymentKind.REFUND,
        payment_id,
        shop.id,
    )
    assert (first.debit_account_id, first.credit_account_id) == (
        shop.account.id,
        payer_account,
    )
    assert first.payer_label == "GOLDEN DRAGON NOODLES"
    assert first.memo == "changed my mind"
    bank.refund(shop, payment_id, "69.99", caller=shop.owner)
    with pytest.raises(payments_errors.RefundTooLargeError, match=r"at most 0\.01 CNY"):
        bank.refund(shop, payment_id, "0.02")
    bank.refund(shop, payment_id, "0.01")
    assert bank.payments.order(payment_id).refunded == Money.parse("100.00", "CNY")
    assert _balance(bank, shop.account) == "0.00 CNY"
    refunds = [data for kind, data in _events(bank, shop) if kind == "refund.succeeded"]
    assert [(r["refunded_minor"], r["refundable_minor"]) for r in refunds] == [
        (30_00, 70_00),
        (99_99, 1),
        (100_00, 0),
    ]


def test_a_refund_retry_refunds_once(bank: MerchantBank, shop: Shop) -> None:
    payment_id = _paid(bank, shop, "10.00")
    first = bank.refund(shop, payment_id, "4.00", key="refund-1")
    again = bank.refund(shop, payment_id, "4.00", key="refund-1")
    assert (again.replayed, again.order.id) == (True, first.order.id)
    assert bank.payments.order(payment_id).refunded == Money.parse("4.00", "CNY")
    with pytest.raises(payments_errors.IdempotencyConflictError):
        bank.refund(shop, payment_id, "5.00", key="refund-1")


def test_only_this_merchants_settled_payments_are_refunded(bank: MerchantBank, shop: Shop) -> None:
    other = bank.shop()
    theirs = _paid(bank, other, "10.00")
    with pytest.raises(payments_errors.PaymentNotFoundError):
        bank.refund(shop, theirs, "1.00")
    with pytest.raises(MerchantNotFoundError):
        bank.refund(shop, theirs, "1.00", caller=other.till)  # their key, our merchant
    refund = bank.refund(other, theirs, "1.00").order
    with pytest.raises(RefundNotAllowedError, match="only merchant payments"):
        bank.refund(other, refund.id, "0.50")
    with pytest.raises(InvalidMerchantError, match="refund it in CNY"):
        bank.merchants.refund(
            other.till,
            other.id,
            theirs,
            Money.parse("1.00", "USD"),
            "",
            None,
            None,
            idem(other.till.actor, "/r", {}),
        )


def test_a_refund_from_an_emptied_settlement_account_pays_nothing(
    bank: MerchantBank, shop: Shop
) -> None:
    payment_id = _paid(bank, shop, "10.00")
    bank.withdraw(shop.account, 10_00)
    with pytest.raises(accounts_errors.InsufficientFundsError):
        bank.refund(shop, payment_id, "10.00")
    assert bank.payments.order(payment_id).refunded == Money.zero("CNY")


def test_the_owner_needs_a_second_factor_for_a_large_refund(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 10_000_00)
    payment_id = bank.pay_qr(payer, bank.qr(shop).payload, "6000.00", step_up="totp").order.id
    with pytest.raises(payments_errors.StepUpNeededError):
        bank.refund(shop, payment_id, "5000.00", caller=shop.owner)
    bank.refund(shop, payment_id, "5000.00", caller=shop.owner, step_up="totp")
    bank.refund(shop, payment_id, "1000.00")  # the till's signed request is its authority


def test_racing_refunds_never_exceed_the_payment(bank: MerchantBank, shop: Shop) -> None:
    payment_id = _paid(bank, shop, "100.00")
    outcomes = _race(12, lambda index: bank.refund(shop, payment_id, "30.00"))
    assert sorted(outcomes) == ["RefundTooLargeError"] * 9 + ["paid"] * 3
    assert bank.payments.order(payment_id).refunded == Money.parse("90.00", "CNY")
    assert _balance(bank, shop.account) == "10.00 CNY"
    assert bank.ledger.verify().ok


# --- the merchant's payments ------------------------------------------------------------------


def test_payments_are_listed_newest_first_in_pages(bank: MerchantBank, shop: Shop) -> None:
    payer = funded(bank, 100_00)
    payload = bank.qr(shop).payload
    ids = [bank.pay_qr(payer, payload, f"{n}.00").order.id for n in range(1, 6)]
    refund = bank.refund(shop, ids[0], "1.00").order.id
    newest_first = [refund, *reversed(ids)]
    for caller in (shop.owner, shop.till):
        first = bank.merchants.payments_page(caller, shop.id, None, 4)
        assert [o.id for o in first.orders] == newest_first[:4]
        assert first.next_before == newest_first[3]
        rest = bank.merchants.payments_page(caller, shop.id, first.next_before, 4)
        assert [o.id for o in rest.orders] == newest_first[4:]
        assert rest.next_before is None
    one = bank.merchants.payment(shop.till, shop.id, ids[2])
    assert [t.to_state for t in one.transitions][-1] is OrderState.SETTLED
    other = bank.shop()
    with pytest.raises(payments_errors.PaymentNotFoundError):
        bank.merchants.payment(other.till, other.id, ids[2])
    bank.merchants.payments_page(shop.owner, shop.id, None, PAYMENTS_PAGE_MAX)
    with pytest.raises(InvalidMerchantError, match="limit"):
        bank.merchants.payments_page(shop.owner, shop.id, None, PAYMENTS_PAGE_MAX + 1)


def test_codes_are_made_by_the_owner_and_the_till(bank: MerchantBank, shop: Shop) -> None:
    static = bank.qr(shop, caller=shop.till)
    dynamic = bank.qr(shop, QrKind.DYNAMIC, "8.80")
    assert static.expires_ts is None
    assert dynamic.expires_ts == bank.clock() + 900 * 1_000_000
    assert _count(bank.engine, merchants_qr_codes) == 2
    with pytest.raises(InvalidMerchantError, match="static QR code has no amount"):
        bank.merchants.create_qr_code(
            shop.owner,
            shop.id,
            QrRequest(QrKind.STATIC, Money.parse("1.00", "CNY")),
            idem(shop.owner.actor, "/q", {}),
            system_context(),
        )

"""Merchant use cases. Each public method is one unit of work.

Payments and refunds run through :meth:`PaymentsService.execute`: one
database transaction holds the Idempotency-Key, the look-up and row lock of
the QR code, payment code or original payment (in ``resolve``), the limits,
the ledger's hold and posting, the order, and (in ``after``) the code used
up, the refunded total raised and the webhook put in the outbox. A refusal
anywhere rolls all of it back.

Records that are not payments (merchants, QR codes, payment codes) keep their
Idempotency-Keys in ``merchants_idempotency``: the same key and request
answer the first record again, another request under the key is a conflict.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, Row

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts import store as accounts_store
from zhifu.accounts.model import AccountClass, AccountStatus, Channel, Direction
from zhifu.accounts.model import check_account_usable as check_account_status
from zhifu.identity import store as identity_store
from zhifu.ids import uuid7
from zhifu.invariant import InvariantError, invariant
from zhifu.merchants import store
from zhifu.merchants.errors import (
    ForeignQrCodeError,
    InvalidMerchantError,
    MerchantNotFoundError,
    MerchantStateError,
    PaymentCodeInvalidError,
    QrCodeNotFoundError,
)
from zhifu.merchants.model import (
    MERCHANTS_PAGE_MAX,
    MERCHANTS_PER_CUSTOMER_MAX,
    OPEN_DYNAMIC_QR_CODES_PER_MERCHANT_MAX,
    PAYMENT_CODE_INDEX_PURPOSE,
    PAYMENT_CODE_TTL_S,
    PAYMENT_CODES_LIVE_MAX,
    PAYMENTS_PAGE_MAX,
    STATIC_QR_CODES_PER_MERCHANT_MAX,
    US,
    MerchantDetails,
    MerchantStatus,
    PaymentCodeStatus,
    QrKind,
    QrRequest,
    QrStatus,
    ScannedCode,
    amount_to_pay,
    build_qr_payload,
    check_code_guesses,
    check_code_usable,
    check_count_below,
    check_merchant_details,
    check_page_limit,
    check_payload_matches,
    check_qr_request,
    check_qr_usable,
    check_refundable,
    check_within_cap,
    failure_window,
    new_payment_code,
    parse_payment_code,
    scanned_code,
    unusable_code,
)
from zhifu.money import Money
from zhifu.ops.audit import AuditContext, record
from zhifu.payments import store as payments_store
from zhifu.payments.emvco import parse as parse_qr
from zhifu.payments.errors import PaymentNotFoundError
from zhifu.payments.model import OrderState, PaymentKind, check_refund, check_replay
from zhifu.payments.qr_image import decode_image
from zhifu.payments.service import (
    Idempotency,
    OrderView,
    PaymentDraft,
    PaymentResult,
    PaymentsService,
    now_us,
    order_view,
    paying_account,
)
from zhifu.security.envelope import KeyRing
from zhifu.store.uow import run_in_transaction
from zhifu.webhooks.service import publish

Clock = Callable[[], int]

PAYMENT_EVENT: Final = "payment.succeeded"
REFUND_EVENT: Final = "refund.succeeded"
MERCHANT_SCOPE: Final = "merchant"
# What a charge and a partner's refund record as the customer's or merchant's
# authorisation of the amount (PaymentDraft.step_up).
PAYMENT_CODE_FACTOR: Final = "payment_code"
PARTNER_SIGNATURE_FACTOR: Final = "partner_signature"


# --- who acts, and what they see ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    """Who acts on a merchant: its owner (a customer) or its point of sale (a
    partner key). Anybody else finds no such merchant."""

    kind: Literal["customer", "partner"]
    id: str

    @classmethod
    def customer(cls, customer_id: uuid.UUID) -> Caller:
        return cls("customer", str(customer_id))

    @classmethod
    def partner(cls, key_id: str) -> Caller:
        return cls("partner", key_id)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    def may_act_for(self, merchant: Row[Any]) -> bool:
        if self.kind == "customer":
            return str(merchant.owner_customer_id) == self.id
        return bool(merchant.partner_key_id == self.id and merchant.status == MerchantStatus.ACTIVE)


@dataclass(frozen=True, slots=True)
class MerchantView:
    id: uuid.UUID
    owner_customer_id: uuid.UUID
    details: MerchantDetails
    country: str
    settlement_account_id: uuid.UUID
    partner_key_id: str | None
    status: MerchantStatus
    created_ts: int
    approved_ts: int | None
    approved_by: str | None


@dataclass(frozen=True, slots=True)
class MerchantResult:
    merchant: MerchantView
    replayed: bool


@dataclass(frozen=True, slots=True)
class MerchantsPage:
    merchants: list[MerchantView]
    next_before: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class QrCodeView:
    id: uuid.UUID
    merchant_id: uuid.UUID
    kind: QrKind
    status: QrStatus
    payload: str
    amount: Money | None
    currency: str
    order_ref: str | None
    terminal_label: str | None
    expires_ts: int | None
    used_order_id: uuid.UUID | None
    created_ts: int


@dataclass(frozen=True, slots=True)
class QrCodeResult:
    code: QrCodeView
    replayed: bool


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """What a scanned payload asks the payer to pay, read from the payload alone.
    The payment checks it against the code the bank issued before paying."""

    payload: str
    ids: ScannedCode
    kind: QrKind
    amount: Money
    merchant_name: str
    order_ref: str | None


@dataclass(frozen=True, slots=True)
class PaymentCodeView:
    id: uuid.UUID
    account_id: uuid.UUID
    amount_cap: Money
    status: PaymentCodeStatus
    expires_ts: int
    created_ts: int


@dataclass(frozen=True, slots=True)
class NewPaymentCode:
    """A payment code; ``code`` (its digits) only in the answer that made it:
    the bank keeps only a blind index, so a replay answers without them."""

    view: PaymentCodeView
    code: str | None = dataclasses.field(default=None, repr=False)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Onboarding:
    """A customer's request to take payments as a merchant."""

    name: str
    city: str
    mcc: str
    settlement_account_id: uuid.UUID
    alternate_name: str | None = None
    alternate_city: str | None = None


@dataclass(frozen=True, slots=True)
class _Peek:
    merchant_name: str
    code_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class PaymentsPage:
    orders: list[OrderView]
    next_before: uuid.UUID | None


# --- the service -------------------------------------------------------------------------


class MerchantsService:
    """Merchants, their QR codes, customers' payment codes, and refunds."""

    def __init__(
        self,
        engine: Engine,
        payments: PaymentsService,
        keyring: KeyRing,
        clock: Clock = now_us,
        *,
        random_below: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        self.engine = engine
        self.payments = payments
        self.keyring = keyring
        self.clock = clock
        self.random_below = random_below

    # --- merchants -----------------------------------------------------------------------

    def onboard(
        self,
        customer_id: uuid.UUID,
        request: Onboarding,
        idempotency: Idempotency,
        ctx: AuditContext,
    ) -> MerchantResult:
        """Record a merchant of the customer's, pending approval by bank staff.

        The settlement account is an open Class I account of the customer's;
        the merchant takes its currency.

        Raises:
            InvalidMerchantError: a detail breaks a rule, or the account is not Class I.
            AccountNotFoundError: the account is not the customer's.
            AccountFrozenError, AccountStateError: the account is not open.
            MerchantQuotaError: the customer has MERCHANTS_PER_CUSTOMER_MAX merchants.
            IdempotencyConflictError: the key was used for another request.
        """
        details = check_merchant_details(
            MerchantDetails(
                request.name,
                request.city,
                request.mcc,
                "",
                request.alternate_name,
                request.alternate_city,
            )
        )

        def work(connection: Connection) -> MerchantResult:
            remembered = self._remembered(connection, idempotency, "merchant")
            if remembered is not None:
                return MerchantResult(self._merchant_view(connection, remembered), True)
            accounts_store.lock_customer(connection, customer_id)
            account = self._settlement_account(connection, customer_id, request)
            check_count_below(
                store.count_merchants_of_owner(connection, customer_id),
                MERCHANTS_PER_CUSTOMER_MAX,
                "merchants per customer",
            )
            now = self.clock()
            merchant_id = uuid7()
            values = {
                "id": merchant_id,
                "owner_customer_id": customer_id,
                **_details_values(dataclasses.replace(details, currency=account.currency)),
                "country": "CN",
                "settlement_account_id": account.id,
                "partner_key_id": None,
                "status": MerchantStatus.PENDING.value,
                "created_ts": now,
                "approved_ts": None,
                "approved_by": None,
            }
            store.insert_merchant(connection, values)
            self._remember(connection, idempotency, "merchant", merchant_id, now)
            record(
                connection,
                ctx.event("merchants.merchant.onboard", f"merchant:{merchant_id}", mcc=details.mcc),
            )
            return MerchantResult(self._merchant_view(connection, merchant_id), False)

        return run_in_transaction(self.engine, work, retry_unique_violation=True)

    def _settlement_account(
        self, connection: Connection, customer_id: uuid.UUID, request: Onboarding
    ) -> Row[Any]:
        account = accounts_store.account_by_id(connection, request.settlement_account_id)
        if account is None or account.customer_id != customer_id:
            raise accounts_errors.AccountNotFoundError("no such account")
        status = AccountStatus(account.status)
        if status is AccountStatus.FROZEN:
            raise accounts_errors.AccountFrozenError(
                "the settlement account is frozen: a merchant settles into an open account"
            )
        if status is not AccountStatus.OPEN:
            raise accounts_errors.AccountStateError(
                "the settlement account is closed: a merchant settles into an open account"
            )
        if account.account_class != AccountClass.CLASS_I.value:
            raise InvalidMerchantError(
                "a merchant settles into a Class I account: Class II and III accounts are"
                " limited to personal payments",
                field="settlement_account_id",
            )
        return account

    def approve(
        self, merchant_id: uuid.UUID, partner_key_id: str, ctx: AuditContext
    ) -> MerchantView:
        """Staff approve a pending merchant and name the partner key its point of
        sale signs with; from then on it takes payments. Approving it again with
        the same key answers the same; with another key is refused.

        Raises:
            MerchantNotFoundError: no such merchant.
            InvalidMerchantError: no active partner key with the merchant scope.
            MerchantStateError: already approved with another key.
        """

        def work(connection: Connection) -> MerchantView:
            merchant = store.merchant_by_id(connection, merchant_id, lock=True)
            if merchant is None:
                raise MerchantNotFoundError("no such merchant")
            if merchant.status == MerchantStatus.ACTIVE:
                if merchant.partner_key_id != partner_key_id:
                    raise MerchantStateError(
                        "the merchant is already approved with another partner key"
                    )
                return _merchant_view(merchant)
            key = identity_store.partner_key(connection, partner_key_id[:64])
            scopes = set() if key is None else set(key.scopes.split(","))
            if key is None or key.revoked_ts is not None or MERCHANT_SCOPE not in scopes:
                raise InvalidMerchantError(
                    f"partner_key_id names no active partner key with the {MERCHANT_SCOPE!r}"
                    " scope: issue the point of sale a key first",
                    field="partner_key_id",
                )
            now = self.clock()
            store.update_merchant(
                connection,
                merchant_id,
                {
                    "status": MerchantStatus.ACTIVE.value,
                    "partner_key_id": partner_key_id,
                    "approved_ts": now,
                    "approved_by": ctx.actor,
                },
            )
            record(
                connection,
                ctx.event(
                    "merchants.merchant.approve",
                    f"merchant:{merchant_id}",
                    partner_key=partner_key_id,
                ),
            )
            return self._merchant_view(connection, merchant_id)

        return run_in_transaction(self.engine, work)

    def merchants_of(self, customer_id: uuid.UUID) -> list[MerchantView]:
        """The customer's merchants, oldest first (at most MERCHANTS_PER_CUSTOMER_MAX)."""

        def work(connection: Connection) -> list[MerchantView]:
            return [_merchant_view(r) for r in store.merchants_of_owner(connection, customer_id)]

        return run_in_transaction(self.engine, work, write=False)

    def merchant(self, caller: Caller, merchant_id: uuid.UUID) -> MerchantView:
        """Raises MerchantNotFoundError for a merchant that is not the caller's."""

        def work(connection: Connection) -> MerchantView:
            return _merchant_view(_visible(connection, caller, merchant_id))

        return run_in_transaction(self.engine, work, write=False)

    def merchants_page(
        self, status: MerchantStatus | None, before: uuid.UUID | None, limit: int
    ) -> MerchantsPage:
        """Every merchant (for staff), newest first. Raises InvalidMerchantError (limit)."""
        check_page_limit(limit, MERCHANTS_PAGE_MAX)

        def work(connection: Connection) -> MerchantsPage:
            rows = store.merchants_page(
                connection, None if status is None else status.value, before, limit
            )
            views = [_merchant_view(r) for r in rows]
            return MerchantsPage(views, views[-1].id if len(views) == limit else None)

        return run_in_transaction(self.engine, work, write=False)

    # --- merchant-presented QR codes ------------------------------------------------------

    def create_qr_code(
        self,
        caller: Caller,
        merchant_id: uuid.UUID,
        request: QrRequest,
        idempotency: Idempotency,
        ctx: AuditContext,
    ) -> QrCodeResult:
        """A static or dynamic QR code of an active merchant.

        Raises:
            MerchantNotFoundError: not the caller's merchant.
            MerchantStateError: the merchant is not approved yet.
            InvalidMerchantError, InvalidPaymentError: the request breaks a rule.
            MerchantQuotaError: too many static codes, or open dynamic ones.
            IdempotencyConflictError: the key was used for another request.
        """

        def work(connection: Connection) -> QrCodeResult:
            remembered = self._remembered(connection, idempotency, "qr_code")
            if remembered is not None:
                return QrCodeResult(self._qr_view(connection, remembered), True)
            merchant = _visible(connection, caller, merchant_id, lock=True)
            _require_active(merchant)
            details = _merchant_view(merchant).details
            checked = check_qr_request(request, details.currency)
            now = self.clock()
            self._check_qr_quota(connection, merchant_id, checked.kind, now)
            code_id = uuid7()
            payload = build_qr_payload(merchant_id, code_id, details, checked)
            expires = None if checked.ttl_s is None else now + checked.ttl_s * US
            store.insert_qr_code(
                connection,
                {
                    "id": code_id,
                    "merchant_id": merchant_id,
                    "kind": checked.kind.value,
                    "status": QrStatus.ACTIVE.value,
                    "payload": payload,
                    "currency": details.currency,
                    "amount_minor": None if checked.amount is None else checked.amount.amount_minor,
                    "order_ref": checked.order_ref,
                    "terminal_label": checked.terminal_label,
                    "expires_ts": expires,
                    "used_order_id": None,
                    "created_ts": now,
                    "created_by": caller.actor,
                },
            )
            self._remember(connection, idempotency, "qr_code", code_id, now)
            record(
                connection,
                ctx.event(
                    "merchants.qr_code.create", f"qr_code:{code_id}", kind=checked.kind.value
                ),
            )
            return QrCodeResult(self._qr_view(connection, code_id), False)

        return run_in_transaction(self.engine, work, retry_unique_violation=True)

    def _check_qr_quota(
        self, connection: Connection, merchant_id: uuid.UUID, kind: QrKind, now: int
    ) -> None:
        if kind is QrKind.STATIC:
            count = store.count_qr_codes(connection, merchant_id, kind.value, None)
            check_count_below(count, STATIC_QR_CODES_PER_MERCHANT_MAX, "static QR codes")
        else:
            count = store.count_qr_codes(connection, merchant_id, kind.value, now)
            check_count_below(
                count, OPEN_DYNAMIC_QR_CODES_PER_MERCHANT_MAX, "unpaid, unexpired dynamic QR codes"
            )

    def qr_code(self, caller: Caller, merchant_id: uuid.UUID, code_id: uuid.UUID) -> QrCodeView:
        """One of the merchant's codes. Raises MerchantNotFoundError, QrCodeNotFoundError."""

        def work(connection: Connection) -> QrCodeView:
            _visible(connection, caller, merchant_id)
            row = store.qr_code_by_id(connection, code_id)
            if row is None or row.merchant_id != merchant_id:
                raise QrCodeNotFoundError("no such QR code")
            return _qr_view(row)

        return run_in_transaction(self.engine, work, write=False)

    # --- paying a scanned code ----------------------------------------------------------------

    @staticmethod
    def payload_of_image(data: bytes) -> str:
        """The text of the one QR code in an uploaded image. Raises QrImageError."""
        return decode_image(data)

    @staticmethod
    def scan(payload: str, amount_text: str | None, currency: str | None) -> ScanPlan:
        """What paying ``payload`` means, read from the payload alone (no database).

        Raises QrCodeError (a payload that breaks EMVCo's rules or whose CRC does
        not match), ForeignQrCodeError (not a zhifu code), InvalidMerchantError
        (an amount missing, different, or in another currency), MoneyError.
        """
        qr = parse_qr(payload)
        ids = scanned_code(qr)
        if qr.currency is None:
            raise ForeignQrCodeError("this QR code names a currency zhifu does not know")
        if currency is not None and currency != qr.currency:
            raise InvalidMerchantError(
                f"this QR code is paid in {qr.currency}, not {currency}", field="currency"
            )
        kind = QrKind.DYNAMIC if qr.initiation_method == "dynamic" else QrKind.STATIC
        stored = None if qr.amount_minor is None else Money(qr.amount_minor, qr.currency)
        given = None if amount_text is None else Money.parse(amount_text, qr.currency)
        return ScanPlan(
            payload=payload,
            ids=ids,
            kind=kind,
            amount=amount_to_pay(kind, stored, given),
            merchant_name=qr.merchant_name,
            order_ref=qr.additional_data.get("reference_label"),
        )

    def pay_scanned(
        self,
        customer_id: uuid.UUID,
        plan: ScanPlan,
        from_account_id: uuid.UUID | None,
        memo: str,
        step_up: str | None,
        idempotency: Idempotency,
        *,
        from_card_id: uuid.UUID | None = None,
    ) -> PaymentResult:
        """Pay a scanned QR code from one of the customer's accounts (named, or
        behind one of their debit cards, by default the default account of the
        code's currency). A dynamic code is used up
        with the payment; the merchant's point of sale gets ``payment.succeeded``.

        Raises:
            ForeignQrCodeError: no such code, or the payload was altered.
            QrCodeUsedError, QrCodeExpiredError: a dynamic code paid or expired.
            MerchantNotFoundError: the merchant is not active.
            AccountNotFoundError: no such account of the customer's, or no default one.
            CardNotFoundError, CardBlockedError: not their card, or frozen, lost or expired.
            and what PaymentsService.transfer raises (limits, funds, frozen accounts, step-up).
        """
        draft = PaymentDraft(
            kind=PaymentKind.MERCHANT,
            channel=Channel.QR,
            initiator=f"customer:{customer_id}",
            amount=plan.amount,
            memo=memo,
            merchant_id=plan.ids.merchant_id,
            external_ref=plan.order_ref,
            source_ref=f"qr:{plan.ids.code_id}",
            step_up=step_up,
            payee_label=plan.merchant_name,
        )
        partner_key: list[str] = []

        def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
            code = store.qr_code_by_id(connection, plan.ids.code_id, lock=True)
            if code is None or code.merchant_id != plan.ids.merchant_id:
                raise ForeignQrCodeError(
                    "this QR code is not one zhifu issued: ask the merchant for theirs"
                )
            check_payload_matches(code.payload, plan.payload)
            kind, stored = QrKind(code.kind), _money(code.amount_minor, code.currency)
            check_qr_usable(kind, QrStatus(code.status), code.expires_ts, self.clock())
            invariant(
                kind is plan.kind and amount_to_pay(kind, stored, plan.amount) == plan.amount,
                "a payload equal to the stored one reads the same",
            )
            merchant = store.merchant_by_id(connection, code.merchant_id)
            if merchant is None or merchant.status != MerchantStatus.ACTIVE:
                raise MerchantNotFoundError("this merchant does not take payments now")
            partner_key.append(merchant.partner_key_id)
            payer = paying_account(
                connection,
                customer_id,
                plan.amount.currency,
                self.clock(),
                account_id=from_account_id,
                card_id=from_card_id,
            )
            return payer, _account(connection, merchant.settlement_account_id)

        def after(connection: Connection, order: OrderView) -> None:
            if plan.kind is QrKind.DYNAMIC:
                marked = store.mark_qr_code_used(connection, plan.ids.code_id, order.id)
                invariant(marked == 1, "a locked, unused dynamic code is marked used once")
            publish(connection, partner_key[-1], PAYMENT_EVENT, _payment_event(order))

        return self.payments.execute(draft, resolve, idempotency, after=after)

    # --- customer-presented payment codes ---------------------------------------------------

    def create_payment_code(
        self,
        customer_id: uuid.UUID,
        account_id: uuid.UUID | None,
        cap: Money,
        step_up: str | None,
        idempotency: Idempotency,
        ctx: AuditContext,
    ) -> NewPaymentCode:
        """A one-time code the customer shows at a till, for PAYMENT_CODE_TTL_S
        seconds, charging at most ``cap`` from the account (by default the
        default account of the cap's currency). ``cap`` is checked by the
        caller (:func:`~zhifu.merchants.model.check_code_cap`), with the step-up
        a cap at or above the step-up amount needs.

        Raises:
            AccountNotFoundError: no such account of the customer's, or no default one.
            AccountFrozenError, AccountStateError: money cannot leave the account.
            InvalidMerchantError: the cap is in another currency than the account.
            MerchantQuotaError: PAYMENT_CODES_LIVE_MAX codes are live already.
            IdempotencyConflictError: the key was used for another request.
        """

        def work(connection: Connection) -> NewPaymentCode:
            remembered = self._remembered(connection, idempotency, "payment_code")
            if remembered is not None:
                return NewPaymentCode(
                    self._payment_code_view(connection, remembered), None, replayed=True
                )
            accounts_store.lock_customer(connection, customer_id)
            account = paying_account(
                connection, customer_id, cap.currency, self.clock(), account_id=account_id
            )
            _check_can_pay(account)
            if account.currency != cap.currency:
                raise InvalidMerchantError(
                    f"the account holds {account.currency}, the cap is in {cap.currency}",
                    field="amount_cap",
                )
            now = self.clock()
            live = store.count_live_payment_codes(connection, customer_id, now)
            check_count_below(live, PAYMENT_CODES_LIVE_MAX, "live payment codes")
            code = new_payment_code(self.random_below)
            code_id = uuid7()
            store.insert_payment_code(
                connection,
                {
                    "id": code_id,
                    "code_index": self._code_index(code),
                    "customer_id": customer_id,
                    "account_id": account.id,
                    "currency": account.currency,
                    "amount_cap_minor": cap.amount_minor,
                    "step_up": step_up,
                    "status": PaymentCodeStatus.ACTIVE.value,
                    "expires_ts": now + PAYMENT_CODE_TTL_S * US,
                    "used_order_id": None,
                    "created_ts": now,
                },
            )
            self._remember(connection, idempotency, "payment_code", code_id, now)
            record(
                connection,
                ctx.event("merchants.payment_code.create", f"account:{account.id}"),
            )
            return NewPaymentCode(self._payment_code_view(connection, code_id), code)

        # A retry after a unique violation makes a new code: nothing was shown yet.
        return run_in_transaction(self.engine, work, retry_unique_violation=True)

    def _code_index(self, code: str) -> bytes:
        return self.keyring.blind_index(code, purpose=PAYMENT_CODE_INDEX_PURPOSE)

    def charge(
        self,
        partner_key_id: str,
        merchant_id: uuid.UUID,
        code_text: str,
        amount: Money,
        order_ref: str | None,
        memo: str,
        idempotency: Idempotency,
    ) -> PaymentResult:
        """A point of sale charges a customer's payment code: the code is used up
        with the payment, so a code pays once however many tills present it.

        Raises:
            MerchantNotFoundError: not this key's merchant.
            PaymentCodeInvalidError: malformed, unknown, expired or used (counted
                for the throttle, except malformed), or in another currency.
            CodeGuessesThrottledError: the key presented too many unusable codes.
            PaymentCodeCapError: over the code's cap.
            and what PaymentsService.transfer raises (limits, funds, frozen accounts).
        """
        code = parse_payment_code(code_text)
        index = self._code_index(code)
        caller = Caller.partner(partner_key_id)
        peeked = run_in_transaction(
            self.engine,
            lambda c: self._peek_code(c, caller, merchant_id, index, idempotency),
            write=False,
        )
        draft = PaymentDraft(
            kind=PaymentKind.MERCHANT,
            channel=Channel.QR,
            initiator=caller.actor,
            amount=amount,
            memo=memo,
            merchant_id=merchant_id,
            external_ref=order_ref,
            source_ref=None if peeked.code_id is None else f"payment_code:{peeked.code_id}",
            step_up=PAYMENT_CODE_FACTOR,
            payee_label=peeked.merchant_name,
        )
        used: list[uuid.UUID] = []

        def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
            merchant = _visible(connection, caller, merchant_id)
            row = store.payment_code_by_index(connection, index, lock=True)
            if row is None:
                raise unusable_code()
            check_code_usable(
                PaymentCodeStatus(row.status), row.expires_ts, self.clock(), row.currency, amount
            )
            check_within_cap(amount, Money(int(row.amount_cap_minor), row.currency))
            used.append(row.id)
            payer = _account(connection, row.account_id)
            return payer, _account(connection, merchant.settlement_account_id)

        def after(connection: Connection, order: OrderView) -> None:
            marked = store.mark_payment_code_used(connection, used[-1], order.id)
            invariant(marked == 1, "a locked, unused payment code is marked used once")
            publish(connection, partner_key_id, PAYMENT_EVENT, _payment_event(order))

        try:
            return self.payments.execute(draft, resolve, idempotency, after=after)
        except PaymentCodeInvalidError:
            self._count_code_failure(partner_key_id)
            raise

    def _peek_code(
        self,
        connection: Connection,
        caller: Caller,
        merchant_id: uuid.UUID,
        index: bytes,
        idempotency: Idempotency,
    ) -> _Peek:
        """Before the payment: the merchant's name and the code's id for the order,
        after the throttle's check (skipped for a retry, which the payment answers)."""
        merchant = _visible(connection, caller, merchant_id)
        if payments_store.idempotency_record(connection, idempotency.scope, idempotency.key):
            return _Peek(merchant.name, None)
        now = self.clock()
        check_code_guesses(store.code_failures(connection, caller.id, failure_window(now)), now)
        row = store.payment_code_by_index(connection, index)
        return _Peek(merchant.name, None if row is None else row.id)

    def _count_code_failure(self, partner_key_id: str) -> None:
        now = self.clock()
        run_in_transaction(
            self.engine,
            lambda c: store.add_code_failure(c, partner_key_id, failure_window(now)),
            retry_unique_violation=True,
        )

    # --- refunds ------------------------------------------------------------------------------

    def refund(
        self,
        caller: Caller,
        merchant_id: uuid.UUID,
        payment_id: uuid.UUID,
        amount: Money,
        reason: str,
        refund_ref: str | None,
        step_up: str | None,
        idempotency: Idempotency,
    ) -> PaymentResult:
        """Give back all or part of a settled payment to the merchant, from its
        settlement account to the account that paid, any number of times up to
        what was paid. The original payment's row lock is held from the check to
        the update of its refunded total, so concurrent refunds never add up to
        more than was paid. The point of sale gets ``refund.succeeded``.

        Raises:
            MerchantNotFoundError: not the caller's merchant.
            PaymentNotFoundError: no such payment of this merchant.
            RefundNotAllowedError: not a settled merchant payment, or too old.
            RefundTooLargeError: more than remains to refund.
            MerchantQuotaError: REFUNDS_PER_PAYMENT_MAX refunds already.
            InsufficientFundsError, AccountFrozenError: the settlement account cannot pay.
            IdempotencyConflictError: the key was used for another request.
        """
        merchant_name = run_in_transaction(
            self.engine, lambda c: _visible(c, caller, merchant_id).name, write=False
        )
        draft = PaymentDraft(
            kind=PaymentKind.REFUND,
            channel=Channel.QR,
            initiator=caller.actor,
            amount=amount,
            memo=reason,
            merchant_id=merchant_id,
            external_ref=refund_ref,
            refund_of=payment_id,
            source_ref=f"refund:{payment_id}",
            step_up=PARTNER_SIGNATURE_FACTOR if caller.kind == "partner" else step_up,
            apply_limits=False,
            payer_label=merchant_name,
        )
        found: list[tuple[Row[Any], str | None]] = []

        def resolve(connection: Connection) -> tuple[Row[Any], Row[Any]]:
            merchant = _visible(connection, caller, merchant_id)
            original = payments_store.order_by_id(connection, payment_id, lock=True)
            if original is None or original.merchant_id != merchant_id:
                raise PaymentNotFoundError("no such payment of this merchant")
            check_refundable(
                PaymentKind(original.kind),
                OrderState(original.state),
                int(original.created_ts),
                self.clock(),
                store.count_refunds(connection, payment_id),
            )
            paid = Money(int(original.amount_minor), original.currency)
            if amount.currency != paid.currency:
                raise InvalidMerchantError(
                    f"the payment was in {paid.currency}; refund it in {paid.currency}",
                    field="currency",
                )
            check_refund(paid, Money(int(original.refunded_minor), paid.currency), amount)
            found.append((original, merchant.partner_key_id))
            payer = _account(connection, original.credit_account_id)
            return payer, _account(connection, original.debit_account_id)

        def after(connection: Connection, order: OrderView) -> None:
            original, partner_key_id = found[-1]
            updated = store.add_refunded(
                connection, payment_id, amount.amount_minor, order.created_ts
            )
            invariant(updated == 1, "the locked original payment is updated once")
            if partner_key_id is not None:
                refunded = int(original.refunded_minor) + amount.amount_minor
                event = _refund_event(order, refunded, int(original.amount_minor))
                publish(connection, partner_key_id, REFUND_EVENT, event)

        return self.payments.execute(draft, resolve, idempotency, after=after)

    # --- the merchant's payments ------------------------------------------------------------

    def payments_page(
        self, caller: Caller, merchant_id: uuid.UUID, before: uuid.UUID | None, limit: int
    ) -> PaymentsPage:
        """The merchant's payments and refunds, newest first, without their history.

        Raises MerchantNotFoundError, InvalidMerchantError (limit).
        """
        check_page_limit(limit, PAYMENTS_PAGE_MAX)

        def work(connection: Connection) -> PaymentsPage:
            _visible(connection, caller, merchant_id)
            rows = store.merchant_orders_page(connection, merchant_id, before, limit)
            orders = [order_view(row, ()) for row in rows]
            return PaymentsPage(orders, orders[-1].id if len(orders) == limit else None)

        return run_in_transaction(self.engine, work, write=False)

    def payment(self, caller: Caller, merchant_id: uuid.UUID, payment_id: uuid.UUID) -> OrderView:
        """One payment or refund of the merchant, with its history.

        Raises MerchantNotFoundError, PaymentNotFoundError.
        """

        def work(connection: Connection) -> OrderView:
            _visible(connection, caller, merchant_id)
            row = payments_store.order_by_id(connection, payment_id)
            if row is None or row.merchant_id != merchant_id:
                raise PaymentNotFoundError("no such payment of this merchant")
            return order_view(row, payments_store.transitions_of(connection, payment_id))

        return run_in_transaction(self.engine, work, write=False)

    # --- upkeep -----------------------------------------------------------------------------

    def prune(self, older_than_s: int = 24 * 3600) -> int:
        """Delete payment codes that expired unused more than ``older_than_s`` ago."""
        cutoff = self.clock() - older_than_s * US
        return int(run_in_transaction(self.engine, lambda c: store.prune_payment_codes(c, cutoff)))

    # --- idempotency --------------------------------------------------------------------------

    def _remembered(
        self, connection: Connection, idempotency: Idempotency, resource: str
    ) -> uuid.UUID | None:
        found = store.idempotency_record(connection, idempotency.scope, idempotency.key)
        if found is None:
            return None
        check_replay(bytes(found.fingerprint), idempotency.fingerprint, idempotency.key)
        invariant(found.resource == resource, "one request path makes one kind of record")
        resource_id: uuid.UUID = found.resource_id
        return resource_id

    def _remember(
        self,
        connection: Connection,
        idempotency: Idempotency,
        resource: str,
        resource_id: uuid.UUID,
        now: int,
    ) -> None:
        store.insert_idempotency(
            connection,
            {
                "scope": idempotency.scope,
                "key": idempotency.key,
                "fingerprint": idempotency.fingerprint,
                "resource": resource,
                "resource_id": resource_id,
                "created_ts": now,
            },
        )

    def _merchant_view(self, connection: Connection, merchant_id: uuid.UUID) -> MerchantView:
        row = store.merchant_by_id(connection, merchant_id)
        if row is None:
            raise InvariantError("a remembered merchant exists")
        return _merchant_view(row)

    def _payment_code_view(self, connection: Connection, code_id: uuid.UUID) -> PaymentCodeView:
        row = store.payment_code_by_id(connection, code_id)
        if row is None:
            raise InvariantError("a remembered payment code exists")
        return _payment_code_view(row)

    def _qr_view(self, connection: Connection, code_id: uuid.UUID) -> QrCodeView:
        row = store.qr_code_by_id(connection, code_id)
        if row is None:
            raise InvariantError("a remembered QR code exists")
        return _qr_view(row)


# --- helpers ---------------------------------------------------------------------------------


def _visible(
    connection: Connection, caller: Caller, merchant_id: uuid.UUID, *, lock: bool = False
) -> Row[Any]:
    """The merchant, if the caller may act for it. Raises MerchantNotFoundError."""
    row = store.merchant_by_id(connection, merchant_id, lock=lock)
    if row is None or not caller.may_act_for(row):
        raise MerchantNotFoundError("no such merchant")
    return row


def _require_active(merchant: Row[Any]) -> None:
    if merchant.status != MerchantStatus.ACTIVE:
        raise MerchantStateError(
            "the merchant is waiting for the bank's approval: it cannot take payments yet"
        )


def _account(connection: Connection, account_id: uuid.UUID) -> Row[Any]:
    row = accounts_store.account_by_id(connection, account_id)
    if row is None:
        raise InvariantError(f"account {account_id} named by a merchant record is missing")
    return row


def _check_can_pay(account: Row[Any]) -> None:
    try:
        check_account_status(AccountStatus(account.status), Direction.OUTGOING)
    except accounts_errors.AccountsError as error:
        raise type(error)(
            f"account ****{account.number[-4:]}: {error}; a payment code cannot draw on it"
        ) from None


def _money(amount_minor: int | None, currency: str) -> Money | None:
    return None if amount_minor is None else Money(int(amount_minor), currency)


def _details_values(details: MerchantDetails) -> dict[str, Any]:
    return {
        "name": details.name,
        "alternate_name": details.alternate_name,
        "city": details.city,
        "alternate_city": details.alternate_city,
        "mcc": details.mcc,
        "currency": details.currency,
    }


def _merchant_view(row: Row[Any]) -> MerchantView:
    return MerchantView(
        id=row.id,
        owner_customer_id=row.owner_customer_id,
        details=MerchantDetails(
            name=row.name,
            city=row.city,
            mcc=row.mcc,
            currency=row.currency,
            alternate_name=row.alternate_name,
            alternate_city=row.alternate_city,
        ),
        country=row.country,
        settlement_account_id=row.settlement_account_id,
        partner_key_id=row.partner_key_id,
        status=MerchantStatus(row.status),
        created_ts=int(row.created_ts),
        approved_ts=None if row.approved_ts is None else int(row.approved_ts),
        approved_by=row.approved_by,
    )


def _qr_view(row: Row[Any]) -> QrCodeView:
    return QrCodeView(
        id=row.id,
        merchant_id=row.merchant_id,
        kind=QrKind(row.kind),
        status=QrStatus(row.status),
        payload=row.payload,
        amount=_money(row.amount_minor, row.currency),
        currency=row.currency,
        order_ref=row.order_ref,
        terminal_label=row.terminal_label,
        expires_ts=None if row.expires_ts is None else int(row.expires_ts),
        used_order_id=row.used_order_id,
        created_ts=int(row.created_ts),
    )


def _payment_code_view(row: Row[Any]) -> PaymentCodeView:
    return PaymentCodeView(
        id=row.id,
        account_id=row.account_id,
        amount_cap=Money(int(row.amount_cap_minor), row.currency),
        status=PaymentCodeStatus(row.status),
        expires_ts=int(row.expires_ts),
        created_ts=int(row.created_ts),
    )


def _payment_event(order: OrderView) -> dict[str, Any]:
    """``payment.succeeded``: what a point of sale needs, no personal data."""
    return {
        "payment_id": str(order.id),
        "merchant_id": str(order.merchant_id),
        "state": order.state.value,
        "amount_minor": order.amount.amount_minor,
        "currency": order.amount.currency,
        "order_ref": order.external_ref,
        "source": order.source_ref,
        "created_ts": order.created_ts,
    }


def _refund_event(order: OrderView, refunded_minor: int, paid_minor: int) -> dict[str, Any]:
    """``refund.succeeded``: the refund and what remains refundable."""
    return {
        "refund_id": str(order.id),
        "payment_id": str(order.refund_of),
        "merchant_id": str(order.merchant_id),
        "state": order.state.value,
        "amount_minor": order.amount.amount_minor,
        "currency": order.amount.currency,
        "refund_ref": order.external_ref,
        "refunded_minor": refunded_minor,
        "refundable_minor": paid_minor - refunded_minor,
        "created_ts": order.created_ts,
    }

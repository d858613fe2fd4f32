"""Test-data factories of the merchants context: the service beside the paying
``PayingBank``, partner keys for points of sale, approved shops, QR codes,
payment codes, and the requests (with their Idempotency-Keys) that use them.

Imported directly by the tests (``from merchants_factories import ...``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from accounts_factories import customer_ctx, new_key
from identity_factories import FakeClock
from payments_factories import PayingBank
from sqlalchemy import Engine, select

from zhifu.accounts.service import AccountView
from zhifu.identity.partners import PartnerService
from zhifu.ledger.service import LedgerService
from zhifu.merchants.model import QrKind, QrRequest
from zhifu.merchants.service import (
    Caller,
    MerchantsService,
    MerchantView,
    NewPaymentCode,
    Onboarding,
    QrCodeView,
)
from zhifu.money import Money
from zhifu.ops.audit import AuditContext, system_context
from zhifu.payments.model import request_fingerprint
from zhifu.payments.service import Idempotency, PaymentResult
from zhifu.store.tables import webhooks_events
from zhifu.webhooks.service import WebhookService
from zhifu.webhooks.transport import RecordingTransport

SHOP = {"name": "GOLDEN DRAGON NOODLES", "city": "SHANGHAI", "mcc": "5812"}
HOOK_URL = "https://till.example.com/zhifu/webhooks"
STAFF_ACTOR = "staff:0190f000-0000-7000-8000-00000000ad01"


def idem(scope: str, path: str, body: dict[str, Any], key: str | None = None) -> Idempotency:
    """An Idempotency-Key of ``scope`` ('customer:<id>', 'partner:<key>') for a request."""
    return Idempotency(scope, key or new_key(), request_fingerprint("POST", path, body))


def staff_ctx() -> AuditContext:
    return AuditContext(actor=STAFF_ACTOR, role="admin", source="198.51.100.30")


@dataclass(frozen=True)
class Shop:
    """An approved merchant, the owner's settlement account and the key of its till."""

    merchant: MerchantView
    account: AccountView
    key_id: str

    @property
    def id(self) -> uuid.UUID:
        return self.merchant.id

    @property
    def owner(self) -> Caller:
        return Caller.customer(self.account.customer_id)

    @property
    def till(self) -> Caller:
        return Caller.partner(self.key_id)


class MerchantBank(PayingBank):
    """The paying bank with the merchants service and partner keys, one clock."""

    def __init__(self, engine: Engine, ledger: LedgerService, clock: FakeClock) -> None:
        super().__init__(engine, ledger, clock)
        self.merchants = MerchantsService(engine, self.payments, self.keyring, clock)
        self.partners = PartnerService(engine, self.keyring, clock)
        self.webhooks = WebhookService(engine, self.keyring, RecordingTransport(), clock)

    def partner_key(self, scopes: tuple[str, ...] = ("merchant", "payments")) -> str:
        issued = self.partners.create_key("Till Co", "hmac-sha256", scopes, system_context())
        return issued.key.key_id

    def onboard(self, account: AccountView, key: str | None = None, **details: Any) -> MerchantView:
        """A pending merchant of ``account``'s owner, settling into it."""
        values = {**SHOP, **details}
        body = {**values, "settlement_account_id": str(account.id)}
        request = Onboarding(settlement_account_id=account.id, **values)
        scope = f"customer:{account.customer_id}"
        result = self.merchants.onboard(
            account.customer_id,
            request,
            idem(scope, "/v1/merchants", body, key),
            customer_ctx(account.customer_id),
        )
        return result.merchant

    def shop(self, account: AccountView | None = None, **details: Any) -> Shop:
        """An approved merchant on a new (or the given) Class I account."""
        account = account or self.open(self.customer())
        merchant = self.onboard(account, **details)
        key_id = self.partner_key()
        approved = self.merchants.approve(merchant.id, key_id, staff_ctx())
        self.webhooks.create_subscription(key_id, HOOK_URL, ["payment.*", "refund.*"], staff_ctx())
        return Shop(approved, account, key_id)

    def qr(
        self,
        shop: Shop,
        kind: QrKind = QrKind.STATIC,
        amount: str | None = None,
        *,
        order_ref: str | None = None,
        ttl_s: int | None = None,
        caller: Caller | None = None,
    ) -> QrCodeView:
        caller = caller or shop.owner
        money = None if amount is None else Money.parse(amount, shop.merchant.details.currency)
        request = QrRequest(kind, money, order_ref, None, ttl_s)
        body = {"kind": kind.value, "amount": amount, "order_ref": order_ref, "ttl_s": ttl_s}
        path = f"/v1/merchants/{shop.id}/qr-codes"
        result = self.merchants.create_qr_code(
            caller, shop.id, request, idem(caller.actor, path, body), system_context()
        )
        return result.code

    def pay_qr(
        self,
        payer: AccountView,
        payload: str,
        amount: str | None = None,
        *,
        key: str | None = None,
        step_up: str | None = None,
        from_account: bool = True,
    ) -> PaymentResult:
        """The payer's customer pays a scanned payload from ``payer``."""
        plan = self.merchants.scan(payload, amount, None)
        body = {"payload": payload, "amount": amount, "from": str(payer.id)}
        scope = f"customer:{payer.customer_id}"
        return self.merchants.pay_scanned(
            payer.customer_id,
            plan,
            payer.id if from_account else None,
            "",
            step_up,
            idem(scope, "/v1/qr-payments", body, key),
        )

    def payment_code(
        self, payer: AccountView, cap: str | None = None, *, step_up: str | None = None
    ) -> NewPaymentCode:
        from zhifu.merchants.model import check_code_cap

        money = check_code_cap(
            None if cap is None else Money.parse(cap, payer.currency), payer.currency
        )
        body = {"account_id": str(payer.id), "amount_cap": cap}
        scope = f"customer:{payer.customer_id}"
        return self.merchants.create_payment_code(
            payer.customer_id,
            payer.id,
            money,
            step_up,
            idem(scope, "/v1/payment-codes", body),
            customer_ctx(payer.customer_id),
        )

    def charge(
        self,
        shop: Shop,
        code: str,
        amount: str,
        *,
        key: str | None = None,
        order_ref: str | None = None,
        key_id: str | None = None,
    ) -> PaymentResult:
        key_id = key_id or shop.key_id
        body = {"payment_code": code, "amount": amount, "order_ref": order_ref}
        path = f"/v1/partner/merchants/{shop.id}/charges"
        return self.merchants.charge(
            key_id,
            shop.id,
            code,
            Money.parse(amount, shop.merchant.details.currency),
            order_ref,
            "",
            idem(f"partner:{key_id}", path, body, key),
        )

    def refund(
        self,
        shop: Shop,
        payment_id: uuid.UUID,
        amount: str,
        *,
        caller: Caller | None = None,
        key: str | None = None,
        step_up: str | None = None,
    ) -> PaymentResult:
        caller = caller or shop.till
        body = {"amount": amount}
        path = f"/v1/partner/merchants/{shop.id}/payments/{payment_id}/refunds"
        return self.merchants.refund(
            caller,
            shop.id,
            payment_id,
            Money.parse(amount, shop.merchant.details.currency),
            "changed my mind",
            None,
            step_up,
            idem(caller.actor, path, body, key),
        )

    def events(self, key_id: str) -> list[tuple[str, str]]:
        """(type, body) of every webhook event published to ``key_id``, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(webhooks_events.c.event_type, webhooks_events.c.body)
                .where(webhooks_events.c.partner_key_id == key_id)
                .order_by(webhooks_events.c.created_ts, webhooks_events.c.id)
            ).all()
        return [(row.event_type, row.body) for row in rows]

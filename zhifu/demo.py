"""Demo data: a few ledger accounts and transfers, a demo customer with bank
accounts funded at the counter, and staff; the same ids on every run."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from zhifu.ledger.model import AccountFlags, AccountRequest, TransferFlags, TransferRequest
from zhifu.money import Money
from zhifu.runtime import Runtime

DEMO_NAMESPACE = uuid.UUID("6f7a6869-6675-4465-8d6f-000000000001")
CODE_BANK_CASH = 100
CODE_CUSTOMER_DEPOSIT = 200
CODE_CASH_DEPOSIT = 1
CODE_CUSTOMER_TRANSFER = 2
CUSTOMERS = ("li-wei", "wang-fang", "alex-chen")
CUSTOMER_FLAGS = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.HISTORY


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(DEMO_NAMESPACE, name)


def seed(runtime: Runtime) -> Iterator[str]:
    """Create the demo ledger; yields a line per step. Running it again changes nothing."""
    ledger = runtime.ledger
    accounts = [AccountRequest(demo_id("bank:cash:CNY"), "CNY", CODE_BANK_CASH, 0, "bank:cash")]
    accounts += [
        AccountRequest(
            demo_id(f"{name}:CNY"), "CNY", CODE_CUSTOMER_DEPOSIT, CUSTOMER_FLAGS, f"demo:{name}"
        )
        for name in CUSTOMERS
    ]
    created = ledger.create_accounts(accounts)
    yield f"ledger accounts: {sum(o.result == 'ok' for o in created)} created, " + (
        f"{sum(o.result == 'exists' for o in created)} already there"
    )
    cash = demo_id("bank:cash:CNY")
    transfers = [
        TransferRequest(
            demo_id(f"deposit:{name}"),
            cash,
            demo_id(f"{name}:CNY"),
            amount,
            "CNY",
            CODE_CASH_DEPOSIT,
            external_ref=f"demo-deposit-{name}",
        )
        for name, amount in zip(CUSTOMERS, (1_000_000, 250_000, 88_800), strict=True)
    ]
    transfers.append(
        TransferRequest(
            demo_id("transfer:li-wei:wang-fang"),
            demo_id("li-wei:CNY"),
            demo_id("wang-fang:CNY"),
            12_345,
            "CNY",
            CODE_CUSTOMER_TRANSFER,
            external_ref="demo-rent",
        )
    )
    transfers.append(
        TransferRequest(
            demo_id("hold:alex-chen"),
            demo_id("alex-chen:CNY"),
            demo_id("li-wei:CNY"),
            5_000,
            "CNY",
            CODE_CUSTOMER_TRANSFER,
            flags=TransferFlags.PENDING,
            external_ref="demo-hold",
        )
    )
    outcomes = ledger.create_transfers(transfers)
    yield f"transfers: {sum(o.ok for o in outcomes)} made, " + (
        f"{sum(o.result == 'exists' for o in outcomes)} already there"
    )
    sealed = ledger.seal()
    yield f"journal: {sealed} batches sealed"
    for name in CUSTOMERS:
        account = ledger.get_account(demo_id(f"{name}:CNY"))
        balance = Money.of_minor(account.balance_posted, "CNY").format()
        yield f"  {name:<10} {account.id}  balance {balance}"
    yield from seed_people(runtime)


# Demo sign-ins, printed by `zhifu demo seed`: for trying the platform on a
# laptop only. A real bank creates its first admin with `zhifu staff create`.
DEMO_CUSTOMER = {
    "name": "李伟",
    "resident_id": "11010519491231002X",
    "mobile": "13800138000",
    "email": "li.wei@example.com",
}
DEMO_CUSTOMER_PASSWORD = "demo-only plum blossom lantern"  # noqa: S105 - demo data
# A second customer, so the demo has somebody to pay.
DEMO_PAYEE = {
    "name": "王芳",
    "resident_id": "310104198805120043",
    "mobile": "13900139000",
    "email": "wang.fang@example.com",
}
DEMO_PAYEE_PASSWORD = "demo-only jade river teapot"  # noqa: S105 - demo data
DEMO_STAFF = (
    ("admin", "Demo Admin", "admin", "harbour lantern quietly 1"),
    ("checker", "Demo Checker", "admin", "river compass softly 2"),
    ("auditor", "Demo Auditor", "auditor", "meadow quill brightly 3"),
    ("teller", "Demo Teller", "teller", "orchard abacus gently 4"),
)


def seed_people(runtime: Runtime) -> Iterator[str]:
    """A demo customer and one staff member per role; running it again changes nothing."""
    from zhifu.identity.errors import AlreadyExistsError
    from zhifu.identity.service import Registration
    from zhifu.ops.audit import system_context

    ctx = system_context("system:demo")
    try:
        runtime.identity.register_customer(
            Registration(**DEMO_CUSTOMER, password=DEMO_CUSTOMER_PASSWORD), ctx
        )
        yield "customer: registered"
    except AlreadyExistsError:
        yield "customer: already there"
    yield f"  sign in with {DEMO_CUSTOMER['mobile']} / {DEMO_CUSTOMER_PASSWORD}"
    with contextlib.suppress(AlreadyExistsError):
        runtime.identity.register_customer(
            Registration(**DEMO_PAYEE, password=DEMO_PAYEE_PASSWORD), ctx
        )
    yield f"  and the payee {DEMO_PAYEE['mobile']} / {DEMO_PAYEE_PASSWORD}"
    for username, name, role, password in DEMO_STAFF:
        with contextlib.suppress(AlreadyExistsError):
            runtime.staff.create_staff(username, name, password, ctx, roles=(role,))
        yield f"  staff {username:<8} ({role:<7}) {password}"
    yield from seed_accounts(runtime)


# The demo customer's accounts: (name, product, class, currency, cash paid in, nickname).
DEMO_ACCOUNTS = (
    ("current-cny", "current", "I", "CNY", "8888.00", "日常"),
    ("savings-usd", "savings", "I", "USD", "1200.00", "Travel"),
)


def seed_accounts(runtime: Runtime) -> Iterator[str]:
    """Open the demo customer's accounts and fund them through the teller use
    case; the account ids and idempotency keys are fixed, so a second run opens
    and deposits nothing."""
    from zhifu.accounts.errors import CustomerNotFoundError
    from zhifu.accounts.model import format_digit_groups
    from zhifu.ops.audit import system_context

    customer_id = runtime.identity.customer_id_by_mobile(DEMO_CUSTOMER["mobile"])
    ctx = system_context("system:demo")
    for name, product, account_class, currency, amount, nickname in DEMO_ACCOUNTS:
        try:
            view = runtime.accounts.open_account(
                customer_id or uuid.UUID(int=0),
                product,
                account_class,
                currency,
                ctx,
                nickname=nickname,
                account_id=demo_id(f"li-wei:{name}"),
            )
        except CustomerNotFoundError:  # disabled since an earlier run
            yield "accounts: the demo customer is disabled; none opened"
            return
        money = Money.parse(amount, currency)
        receipt = runtime.accounts.cash_deposit(
            view.id, money.amount_minor, currency, f"demo-{name}", ctx
        )
        shown = runtime.accounts.get_account(view.customer_id, view.id)
        number = format_digit_groups(view.number)
        again = "  (deposited before)" if receipt.replayed else ""
        yield f"  account {number}  {product:<7} {shown.balance.format()}{again}"
    yield from seed_payment(runtime)
    runtime.ledger.seal()


def seed_payment(runtime: Runtime) -> Iterator[str]:
    """Open the payee's account and pay it once from the demo customer's CNY
    account, through the payments use case; the key is fixed, so a second run
    answers the first payment instead of paying again."""
    from zhifu.accounts.model import Channel
    from zhifu.ops.audit import system_context
    from zhifu.payments.model import PaymentKind, request_fingerprint
    from zhifu.payments.service import Idempotency, PaymentDraft

    payer_id = runtime.identity.customer_id_by_mobile(DEMO_CUSTOMER["mobile"])
    payee_id = runtime.identity.customer_id_by_mobile(DEMO_PAYEE["mobile"])
    if payer_id is None or payee_id is None:
        yield "payment: a demo customer is missing; none made"
        return
    payee = runtime.accounts.open_account(
        payee_id,
        "current",
        "I",
        "CNY",
        system_context("system:demo"),
        nickname="工资卡",
        account_id=demo_id("wang-fang:current-cny"),
    )
    amount = Money.parse("88.00", "CNY")
    body = {"to": payee.number, "amount": amount.to_decimal_string(), "memo": "午餐 lunch"}
    result = runtime.payments.transfer(
        payer_id,
        demo_id("li-wei:current-cny"),
        payee.number,
        PaymentDraft(
            PaymentKind.TRANSFER,
            Channel.ONLINE,
            f"customer:{payer_id}",
            amount,
            memo=body["memo"],
        ),
        Idempotency(
            f"customer:{payer_id}",
            "demo-lunch",
            request_fingerprint("POST", "/v1/payments", body),
        ),
    )
    again = "  (paid before)" if result.replayed else ""
    yield f"payment: {amount.format()} to {result.order.payee_label}, {result.order.state}{again}"

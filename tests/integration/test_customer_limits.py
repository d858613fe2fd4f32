"""Limits a customer sets on their own accounts, on real SQLite and PostgreSQL:
what the limits view shows (policy, own limits, spending, what is left), that
own limits only lower the bank's, that raising them needs a step-up, that zero
turns a channel off, and that payments keep them at the limit and one past."""

from __future__ import annotations

import pytest
from accounts_factories import customer_ctx
from identity_factories import FakeClock
from payments_factories import PayingBank, funded
from sqlalchemy import Engine, select

from zhifu.accounts import errors as accounts_errors
from zhifu.accounts.model import (
    CLASS_III_OUTGOING_DAILY_MAX_MINOR,
    AccountClass,
    Channel,
    CustomerLimits,
)
from zhifu.accounts.service import AccountView, ChannelLimitsRequest, raises_limits
from zhifu.ledger.service import LedgerService
from zhifu.money import Money
from zhifu.store.tables import accounts_customer_limits, audit_events


@pytest.fixture
def bank(engine: Engine, ledger: LedgerService) -> PayingBank:
    return PayingBank(engine, ledger, FakeClock())


def cny(text: str) -> Money:
    return Money.parse(text, "CNY")


def set_limits(
    bank: PayingBank,
    account: AccountView,
    channel: Channel = Channel.ONLINE,
    *,
    raise_allowed: bool = False,
    **limits: Money | None,
) -> None:
    bank.accounts.set_limits(
        account.customer_id,
        account.id,
        ChannelLimitsRequest(channel, **limits),
        customer_ctx(account.customer_id),
        raise_allowed=raise_allowed,
    )


def class_iii(bank: PayingBank) -> AccountView:
    """A Class III account holding CNY 2,000 (its balance cap), paid in from its owner's Class I."""
    owner = bank.customer()
    main = bank.open(owner)
    bank.deposit(main, 10_000_00)
    small = bank.open(owner, account_class=AccountClass.CLASS_III)
    bank.transfer(main, small, "2000.00")
    return small


# --- the view --------------------------------------------------------------------------------


def test_a_class_i_account_has_no_limits_until_its_owner_sets_some(bank: PayingBank) -> None:
    account = funded(bank, 100_00)
    view = bank.accounts.limits(account.customer_id, account.id)
    assert view.currency == "CNY"
    assert [c.channel for c in view.channels] == list(Channel)
    for channel in view.channels:
        assert (channel.chosen, channel.remaining) == (None, None)
        assert channel.policy.daily is None
    assert view.spent_today == Money.zero("CNY")


def test_the_view_shows_the_policy_spending_and_what_is_left(bank: PayingBank) -> None:
    small = class_iii(bank)
    payee = funded(bank, 0)
    bank.transfer(small, payee, "500.00")
    view = bank.accounts.limits(small.customer_id, small.id)
    online = view.channel(Channel.ONLINE)
    assert online.policy.daily == Money(CLASS_III_OUTGOING_DAILY_MAX_MINOR, "CNY")
    assert view.spent_today == cny("500.00")
    assert view.spent_this_year == cny("500.00")
    assert online.remaining == cny("1500.00")
    set_limits(bank, small, per_payment=cny("300.00"))
    view = bank.accounts.limits(small.customer_id, small.id)
    assert view.channel(Channel.ONLINE).remaining == cny("300.00")
    assert view.channel(Channel.MOBILE).remaining == cny("1500.00")
    assert view.channel(Channel.ONLINE).chosen == CustomerLimits("CNY", per_payment=cny("300.00"))


def test_another_customers_account_is_not_found(bank: PayingBank) -> None:
    account = funded(bank, 0)
    stranger = bank.customer()
    with pytest.raises(accounts_errors.AccountNotFoundError):
        bank.accounts.limits(stranger, account.id)
    with pytest.raises(accounts_errors.AccountNotFoundError):
        bank.accounts.set_limits(
            stranger,
            account.id,
            ChannelLimitsRequest(Channel.ONLINE, per_payment=cny("1.00")),
            customer_ctx(stranger),
        )
    assert (
        bank.accounts.limits(account.customer_id, account.id).channel(Channel.ONLINE).chosen is None
    )


# --- only lower ------------------------------------------------------------------------------


def test_own_limits_at_the_policy_and_one_past(bank: PayingBank) -> None:
    small = class_iii(bank)
    at_policy = Money(CLASS_III_OUTGOING_DAILY_MAX_MINOR, "CNY")
    set_limits(bank, small, daily=at_policy)
    with pytest.raises(accounts_errors.InvalidLimitError, match="can only be lowered"):
        set_limits(bank, small, daily=at_policy + Money(1, "CNY"), raise_allowed=True)
    chosen = bank.accounts.limits(small.customer_id, small.id).channel(Channel.ONLINE).chosen
    assert chosen == CustomerLimits("CNY", daily=at_policy)


def test_negative_and_foreign_amounts_are_refused(bank: PayingBank) -> None:
    account = funded(bank, 0)
    with pytest.raises(accounts_errors.InvalidLimitError, match="negative"):
        set_limits(bank, account, per_payment=cny("-0.01"))
    with pytest.raises(accounts_errors.InvalidLimitError, match="CNY"):
        set_limits(bank, account, per_payment=Money(1_00, "USD"))


def test_a_closed_account_takes_no_limits(bank: PayingBank) -> None:
    account = funded(bank, 0)
    bank.accounts.close(account.customer_id, account.id, customer_ctx(account.customer_id))
    with pytest.raises(accounts_errors.AccountStateError):
        set_limits(bank, account, daily=cny("1.00"))


# --- raising needs a step-up -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "raising"),
    [
        (None, CustomerLimits("CNY", daily=Money(1, "CNY")), False),
        (
            CustomerLimits("CNY", daily=Money(5, "CNY")),
            CustomerLimits("CNY", daily=Money(5, "CNY")),
            False,
        ),
        (
            CustomerLimits("CNY", daily=Money(5, "CNY")),
            CustomerLimits("CNY", daily=Money(4, "CNY")),
            False,
        ),
        (
            CustomerLimits("CNY", daily=Money(5, "CNY")),
            CustomerLimits("CNY", daily=Money(6, "CNY")),
            True,
        ),
        (CustomerLimits("CNY", daily=Money(5, "CNY")), CustomerLimits("CNY"), True),
        (CustomerLimits("CNY"), CustomerLimits("CNY", yearly=Money(0, "CNY")), False),
    ],
)
def test_what_counts_as_raising(
    before: CustomerLimits | None, after: CustomerLimits, raising: bool
) -> None:
    assert raises_limits(before, after) is raising


def test_raising_or_removing_an_own_limit_needs_the_step_up(bank: PayingBank) -> None:
    account = funded(bank, 0)
    set_limits(bank, account, daily=cny("100.00"))
    set_limits(bank, account, daily=cny("50.00"))  # lowering needs nothing
    with pytest.raises(accounts_errors.InvalidLimitError, match="confirm it is you"):
        set_limits(bank, account, daily=cny("50.01"))
    with pytest.raises(accounts_errors.InvalidLimitError, match="confirm it is you"):
        set_limits(bank, account)  # removing the limit raises it to the bank's
    set_limits(bank, account, daily=cny("80.00"), raise_allowed=True)
    chosen = bank.accounts.limits(account.customer_id, account.id).channel(Channel.ONLINE).chosen
    assert chosen == CustomerLimits("CNY", daily=cny("80.00"))
    set_limits(bank, account, raise_allowed=True)
    with bank.engine.connect() as connection:
        rows = connection.execute(select(accounts_customer_limits)).all()
        actions = connection.execute(
            select(audit_events.c.action).where(audit_events.c.action == "accounts.limits.set")
        ).all()
    assert rows == []  # none left: the bank's policy alone
    assert len(actions) == 4


# --- payments keep them ----------------------------------------------------------------------


def test_per_payment_and_daily_limits_at_the_limit_and_one_past(bank: PayingBank) -> None:
    payer, payee = funded(bank, 1_000_00), funded(bank, 0)
    set_limits(bank, payer, per_payment=cny("100.00"), daily=cny("150.00"))
    with pytest.raises(accounts_errors.LimitExceededError, match=r"per-payment limit of 100\.00"):
        bank.transfer(payer, payee, "100.01")
    bank.transfer(payer, payee, "100.00")
    bank.transfer(payer, payee, "50.00")  # 150.00 today: at the daily limit
    with pytest.raises(accounts_errors.LimitExceededError, match="you set"):
        bank.transfer(payer, payee, "0.01")
    view = bank.accounts.limits(payer.customer_id, payer.id)
    assert view.spent_today == cny("150.00")
    assert view.channel(Channel.ONLINE).remaining == Money.zero("CNY")
    assert view.channel(Channel.MOBILE).remaining is None
    bank.transfer(payer, payee, "0.01", channel=Channel.MOBILE)  # another channel's limits
    bank.clock.advance(seconds=24 * 3600)
    bank.transfer(payer, payee, "100.00")  # a new Shanghai day


def test_zero_turns_a_channel_off(bank: PayingBank) -> None:
    payer, payee = funded(bank, 10_00), funded(bank, 0)
    set_limits(bank, payer, Channel.MOBILE, per_payment=Money.zero("CNY"))
    with pytest.raises(accounts_errors.LimitExceededError):
        bank.transfer(payer, payee, "0.01", channel=Channel.MOBILE)
    bank.transfer(payer, payee, "0.01")
    remaining = bank.accounts.limits(payer.customer_id, payer.id).channel(Channel.MOBILE).remaining
    assert remaining == Money.zero("CNY")

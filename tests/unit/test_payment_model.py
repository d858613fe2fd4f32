"""The payment order lifecycle, its history, refunds and idempotency rules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.money import CurrencyMismatchError, Money
from zhifu.payments.errors import (
    IdempotencyConflictError,
    IllegalTransitionError,
    InvalidIdempotencyKeyError,
    RefundTooLargeError,
)
from zhifu.payments.model import (
    HOLDING_STATES,
    IDEMPOTENCY_KEY_CHARS_MAX,
    REASON_CHARS_MAX,
    TERMINAL_STATES,
    TRANSITIONS,
    OrderState,
    check_idempotency_key,
    check_refund,
    check_replay,
    holds_funds,
    record_transition,
    request_fingerprint,
    transition,
)

S = OrderState
# Written out separately from the code: the lifecycle of DESIGN.md.
EXPECTED = {
    (S.CREATED, S.RISK_CHECKED),
    (S.CREATED, S.REJECTED),
    (S.CREATED, S.CANCELLED),
    (S.RISK_CHECKED, S.AUTHORIZED),
    (S.RISK_CHECKED, S.CHALLENGED),
    (S.RISK_CHECKED, S.REJECTED),
    (S.CHALLENGED, S.AUTHORIZED),
    (S.CHALLENGED, S.REJECTED),
    (S.CHALLENGED, S.CANCELLED),
    (S.AUTHORIZED, S.FUNDS_HELD),
    (S.AUTHORIZED, S.FAILED),
    (S.AUTHORIZED, S.CANCELLED),
    (S.FUNDS_HELD, S.SUBMITTED),
    (S.FUNDS_HELD, S.SETTLED),
    (S.FUNDS_HELD, S.FAILED),
    (S.SUBMITTED, S.SETTLED),
    (S.SUBMITTED, S.FAILED),
    (S.SETTLED, S.RETURNED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair_of_states(current: OrderState, target: OrderState) -> None:
    if (current, target) in EXPECTED:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            transition(current, target)
        assert current.value in str(caught.value) and target.value in str(caught.value)
        assert caught.value.code == "illegal_transition"


def test_terminal_states_have_no_way_out() -> None:
    assert {S.FAILED, S.RETURNED, S.REJECTED, S.CANCELLED} == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert not TRANSITIONS[state]
        with pytest.raises(IllegalTransitionError, match="final"):
            transition(state, S.CREATED)


def test_money_is_held_only_between_hold_and_the_end() -> None:
    assert {s for s in S if holds_funds(s)} == HOLDING_STATES == {S.FUNDS_HELD, S.SUBMITTED}


def test_every_state_is_reachable_from_created() -> None:
    seen, frontier = {S.CREATED}, [S.CREATED]
    while frontier:
        for following in TRANSITIONS[frontier.pop()]:
            if following not in seen:
                seen.add(following)
                frontier.append(following)
    assert seen == set(S)


def test_history_records_each_step_in_order() -> None:
    history = record_transition((), S.CREATED, ts=1, actor="customer:a", reason="new")
    for ts, state in enumerate((S.RISK_CHECKED, S.AUTHORIZED, S.FUNDS_HELD, S.SETTLED), start=2):
        history = record_transition(history, state, ts=ts, actor="system", reason="ok")
    assert [t.to_state for t in history] == [
        S.CREATED,
        S.RISK_CHECKED,
        S.AUTHORIZED,
        S.FUNDS_HELD,
        S.SETTLED,
    ]
    assert [t.from_state for t in history][1:] == [t.to_state for t in history][:-1]
    assert history[0].from_state is None


def test_history_refuses_a_bad_start_a_step_back_in_time_and_long_reasons() -> None:
    with pytest.raises(IllegalTransitionError, match="starts as created"):
        record_transition((), S.SETTLED, ts=1, actor="x", reason="")
    history = record_transition((), S.CREATED, ts=10, actor="x", reason="")
    with pytest.raises(ValueError, match="earlier"):
        record_transition(history, S.RISK_CHECKED, ts=9, actor="x", reason="")
    record_transition(history, S.RISK_CHECKED, ts=10, actor="x", reason="r" * REASON_CHARS_MAX)
    with pytest.raises(ValueError, match=str(REASON_CHARS_MAX)):
        record_transition(
            history, S.RISK_CHECKED, ts=10, actor="x", reason="r" * (REASON_CHARS_MAX + 1)
        )
    with pytest.raises(IllegalTransitionError):
        record_transition(history, S.SETTLED, ts=11, actor="x", reason="")


def cny(minor: int) -> Money:
    return Money.of_minor(minor, "CNY")


def test_refunds_up_to_the_settled_amount_and_not_one_fen_more() -> None:
    assert check_refund(cny(10_000), cny(0), cny(4_000)) == cny(6_000)
    assert check_refund(cny(10_000), cny(6_000), cny(4_000)) == cny(0)
    with pytest.raises(RefundTooLargeError, match=r"40\.00 CNY"):
        check_refund(cny(10_000), cny(6_000), cny(4_001))


def test_refunds_must_be_positive_and_in_the_payment_currency() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            check_refund(cny(100), cny(0), cny(bad))
    with pytest.raises(CurrencyMismatchError):
        check_refund(cny(100), cny(0), Money.of_minor(1, "USD"))


@given(st.integers(1, 10**12), st.lists(st.integers(1, 10**9), max_size=30))
def test_refunds_never_exceed_the_payment(settled: int, requests: list[int]) -> None:
    refunded = cny(0)
    for request in requests:
        try:
            check_refund(cny(settled), refunded, cny(request))
        except RefundTooLargeError:
            assert refunded.amount_minor + request > settled
            continue
        refunded = refunded + cny(request)
    assert refunded.amount_minor <= settled


def test_idempotency_keys_at_the_limit_and_past_it() -> None:
    assert check_idempotency_key("k" * IDEMPOTENCY_KEY_CHARS_MAX)
    assert check_idempotency_key("0190f3a2-7c1e-7b4e-9a3d-2f1e0c9b8a7d")
    for bad in ("", "k" * (IDEMPOTENCY_KEY_CHARS_MAX + 1), "has space", "键", "a/b", "a\n"):
        with pytest.raises(InvalidIdempotencyKeyError, match="Idempotency-Key"):
            check_idempotency_key(bad)


def test_the_same_request_has_the_same_fingerprint_in_any_member_order() -> None:
    one = request_fingerprint("post", "/v1/payments", {"amount": "1.00", "to": "x"})
    two = request_fingerprint("POST", "/v1/payments", {"to": "x", "amount": "1.00"})
    assert one == two
    check_replay(one, two, "k1")


@pytest.mark.parametrize(
    "other",
    [
        ("POST", "/v1/payments", {"amount": "1.01", "to": "x"}),
        ("POST", "/v1/refunds", {"amount": "1.00", "to": "x"}),
        ("PUT", "/v1/payments", {"amount": "1.00", "to": "x"}),
        ("POST", "/v1/payments", {"amount": "1.00", "to": "x", "memo": ""}),
    ],
)
def test_a_different_request_with_the_same_key_is_a_conflict(
    other: tuple[str, str, dict[str, str]],
) -> None:
    first = request_fingerprint("POST", "/v1/payments", {"amount": "1.00", "to": "x"})
    with pytest.raises(IdempotencyConflictError, match="k1"):
        check_replay(first, request_fingerprint(*other), "k1")

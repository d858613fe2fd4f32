"""The routing model: which rails may carry a payment and why the others may
not, how the candidates rank, how success is learned and forgotten, and how a
circuit breaker takes a failing rail out and probes it back."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.money import Money
from zhifu.routing.model import (
    FEE_BPS_MAX,
    PRIOR_FAILURES,
    PRIOR_SUCCESSES,
    US,
    BreakerState,
    CircuitBreaker,
    OperatingHours,
    RailProfile,
    RoutingError,
    SuccessEstimator,
    decide,
)

# Tuesday 2026-11-24 10:00 in Shanghai (02:00 UTC).
TUESDAY_10 = int(datetime(2026, 11, 24, 2, 0, tzinfo=UTC).timestamp()) * US
SATURDAY_10 = TUESDAY_10 + 4 * 86_400 * US


def rail(name: str, **overrides: object) -> RailProfile:
    values: dict[str, object] = {
        "name": name,
        "currencies": frozenset({"CNY"}),
        "amount_min_minor": 1,
        "amount_max_minor": 5_000_000_00,
        "fee_fixed_minor": 0,
        "fee_bps": 0,
        "fx_spread_bps": 0,
        "settle_s": 1.0,
    }
    values.update(overrides)
    return RailProfile(**values)  # type: ignore[arg-type]


def test_the_cheapest_reliable_rail_comes_first_and_exclusions_say_why() -> None:
    rails = [
        rail("instant", fee_fixed_minor=50, settle_s=2),
        rail("cheap", fee_fixed_minor=10, settle_s=60),
        rail("usd-only", currencies=frozenset({"USD"})),
        rail("small", amount_max_minor=100_00),
        rail("hvps", hours=OperatingHours(time(8, 30), time(17, 0))),
    ]
    decision = decide(
        Money(1_000_00, "CNY"), False, rails, {}, {}, failure_cost_minor=0, now_ts=SATURDAY_10
    )
    assert [c.rail for c in decision.candidates] == ["cheap", "instant"]
    assert decision.excluded == {
        "usd-only": "does not carry CNY",
        "small": "carries 0.01 CNY to 100.00 CNY",
        "hvps": "closed at this time",
    }
    open_on_tuesday = decide(
        Money(1_000_00, "CNY"), False, rails, {}, {}, failure_cost_minor=0, now_ts=TUESDAY_10
    )
    assert open_on_tuesday.candidates[0].rail == "hvps"  # free, and open on a weekday


def test_a_likely_failure_costs_more_than_a_fee() -> None:
    rails = [rail("flaky", fee_fixed_minor=10), rail("solid", fee_fixed_minor=30)]
    flaky = SuccessEstimator()
    for _ in range(20):
        flaky.observe(False, TUESDAY_10)
    decision = decide(
        Money(100_00, "CNY"),
        False,
        rails,
        {"flaky": flaky},
        {},
        failure_cost_minor=1_000,
        now_ts=TUESDAY_10,
    )
    assert [c.rail for c in decision.candidates] == ["solid", "flaky"]
    assert decision.candidates[1].p_success < 0.5


def test_fees_and_spreads_round_up_in_the_banks_favour() -> None:
    r = rail("x", fee_fixed_minor=5, fee_bps=3, fx_spread_bps=25)
    assert r.fee_minor(100) == 5 + 1  # 0.03 rounded up
    assert r.spread_minor(100, cross_currency=True) == 1
    assert r.spread_minor(100, cross_currency=False) == 0


@pytest.mark.parametrize(("bps", "ok"), [(0, True), (FEE_BPS_MAX, True), (FEE_BPS_MAX + 1, False)])
def test_fee_basis_points_at_the_limit_and_one_past(bps: int, ok: bool) -> None:
    if ok:
        assert rail("x", fee_bps=bps).fee_bps == bps
    else:
        with pytest.raises(RoutingError, match="fee_bps"):
            rail("x", fee_bps=bps)


def test_bad_profiles_are_refused() -> None:
    with pytest.raises(RoutingError):
        rail("x", amount_min_minor=0)
    with pytest.raises(RoutingError):
        rail("x", amount_min_minor=10, amount_max_minor=9)
    with pytest.raises(RoutingError):
        OperatingHours(time(17, 0), time(8, 30))


def test_success_is_learned_and_forgotten() -> None:
    estimator = SuccessEstimator(half_life_s=60)
    prior = PRIOR_SUCCESSES / (PRIOR_SUCCESSES + PRIOR_FAILURES)
    assert estimator.probability(TUESDAY_10) == pytest.approx(prior)
    for _ in range(30):
        estimator.observe(False, TUESDAY_10)
    assert estimator.probability(TUESDAY_10) < 0.3
    later = TUESDAY_10 + 600 * US  # ten half-lives
    assert estimator.probability(later) == pytest.approx(prior, abs=0.01)


def test_a_breaker_opens_refuses_and_probes_back() -> None:
    breaker = CircuitBreaker(failures_to_open=3, open_s=30)
    for _ in range(2):
        breaker.record(False, TUESDAY_10)
    assert breaker.allows(TUESDAY_10)  # two failures: still closed
    breaker.record(False, TUESDAY_10)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows(TUESDAY_10 + 29 * US)
    assert breaker.allows(TUESDAY_10 + 30 * US)  # the one probe
    assert not breaker.allows(TUESDAY_10 + 31 * US)  # only one at a time
    breaker.record(False, TUESDAY_10 + 31 * US)
    assert breaker.state is BreakerState.OPEN  # the probe failed
    assert breaker.allows(TUESDAY_10 + 61 * US)
    breaker.record(True, TUESDAY_10 + 61 * US)
    assert breaker.state is BreakerState.CLOSED and breaker.allows(TUESDAY_10 + 62 * US)


def test_an_open_breaker_takes_its_rail_out() -> None:
    breaker = CircuitBreaker(failures_to_open=1)
    breaker.record(False, TUESDAY_10)
    decision = decide(
        Money(1_00, "CNY"),
        False,
        [rail("down"), rail("up", fee_fixed_minor=1)],
        {},
        {"down": breaker},
        failure_cost_minor=0,
        now_ts=TUESDAY_10,
    )
    assert [c.rail for c in decision.candidates] == ["up"]
    assert decision.excluded == {"down": "circuit breaker open"}


@given(
    fees=st.lists(st.integers(0, 10_000), min_size=1, max_size=6),
    amount=st.integers(1, 5_000_000_00),
)
def test_the_order_is_total_and_by_expected_cost(fees: list[int], amount: int) -> None:
    rails = [rail(f"r{i}", fee_fixed_minor=fee) for i, fee in enumerate(fees)]
    decision = decide(
        Money(amount, "CNY"), False, rails, {}, {}, failure_cost_minor=100, now_ts=TUESDAY_10
    )
    costs = [c.expected_cost_minor for c in decision.candidates]
    assert costs == sorted(costs)
    assert len(decision.candidates) == len(rails)

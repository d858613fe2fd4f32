"""The routing context's domain (pure): rail profiles, learned success rates,
circuit breakers, and the scoring and ordering of candidate routes.

Rules and invariants:

1. A rail is a candidate for a payment only if it carries the payment's
   currency, the amount is within the rail's bounds, the rail is open at the
   time (operating hours, Asia/Shanghai), and its circuit breaker lets a
   request through. The reasons others were left out are kept, so a person
   can see why a route was not taken.
2. Success is learned online per rail and segment as a Beta posterior that
   forgets: each observation first decays the counts by
   ``0.5 ** (elapsed / half_life)``, so an outage an hour ago weighs little
   and one a minute ago weighs much. With no observations the estimate is the
   prior (``PRIOR_SUCCESSES`` in ``PRIOR_SUCCESSES + PRIOR_FAILURES``).
3. A circuit breaker opens after ``failures_to_open`` consecutive failures,
   refuses requests for ``open_s``, then lets one probe through (half-open):
   a success closes it, a failure opens it again.
4. A candidate's expected cost is its fee plus the FX spread it charges plus
   ``(1 - p_success) * failure_cost``: what a failed attempt costs the bank
   (the retry elsewhere, the customer's wait). Candidates are ordered by
   expected cost, then expected time to settle, then name, so the order is
   total and stable.

All amounts are integer minor units of the payment's currency; probabilities
are floats (they are estimates, never money).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

from zhifu.money import Money

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
US: Final = 1_000_000
BPS: Final = 10_000
FEE_BPS_MAX: Final = 1_000
PRIOR_SUCCESSES: Final = 9.0
PRIOR_FAILURES: Final = 1.0
HALF_LIFE_S_DEFAULT: Final = 600.0
FAILURES_TO_OPEN_DEFAULT: Final = 5
OPEN_S_DEFAULT: Final = 30.0
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class RoutingError(ValueError):
    """A rail profile or a routing input breaks a rule; the message says which."""


@dataclass(frozen=True, slots=True)
class OperatingHours:
    """When a rail takes payments, local Asia/Shanghai time: on ``weekdays``
    (0 is Monday) from ``opens`` until ``cuts_off`` (exclusive)."""

    opens: time
    cuts_off: time
    weekdays: frozenset[int] = frozenset(range(5))

    def __post_init__(self) -> None:
        if not self.opens < self.cuts_off:
            raise RoutingError("a rail opens before its cut-off time on the same day")
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            raise RoutingError("weekdays are 0 (Monday) to 6 (Sunday), at least one")

    def is_open(self, now_ts: int) -> bool:
        local = (_EPOCH + timedelta(microseconds=now_ts)).astimezone(SHANGHAI)
        return local.weekday() in self.weekdays and self.opens <= local.time() < self.cuts_off


@dataclass(frozen=True, slots=True)
class RailProfile:
    """What a rail carries and what it costs, per currency."""

    name: str
    currencies: frozenset[str]
    amount_min_minor: int
    amount_max_minor: int
    fee_fixed_minor: int
    fee_bps: int
    fx_spread_bps: int
    settle_s: float
    hours: OperatingHours | None = None  # None: always open

    def __post_init__(self) -> None:
        if not self.name or not self.currencies:
            raise RoutingError("a rail has a name and carries at least one currency")
        if not 0 < self.amount_min_minor <= self.amount_max_minor:
            raise RoutingError(f"{self.name}: 0 < amount_min <= amount_max")
        for what, bps in (("fee_bps", self.fee_bps), ("fx_spread_bps", self.fx_spread_bps)):
            if not 0 <= bps <= FEE_BPS_MAX:
                raise RoutingError(f"{self.name}: {what} is 0 to {FEE_BPS_MAX}")
        if self.fee_fixed_minor < 0 or self.settle_s < 0:
            raise RoutingError(f"{self.name}: fees and settlement times are not negative")

    def fee_minor(self, amount_minor: int) -> int:
        """The rail's fee for an amount: fixed plus basis points, rounded up."""
        return self.fee_fixed_minor + -(-amount_minor * self.fee_bps // BPS)

    def spread_minor(self, amount_minor: int, cross_currency: bool) -> int:
        """What the rail's FX conversion costs on a cross-currency payment, rounded up."""
        return -(-amount_minor * self.fx_spread_bps // BPS) if cross_currency else 0


@dataclass(slots=True)
class SuccessEstimator:
    """A forgetting Beta posterior of one rail's success in one segment."""

    half_life_s: float = HALF_LIFE_S_DEFAULT
    successes: float = PRIOR_SUCCESSES
    failures: float = PRIOR_FAILURES
    last_ts: int | None = None

    def _decay(self, now_ts: int) -> None:
        if self.last_ts is not None and now_ts > self.last_ts:
            factor = 0.5 ** ((now_ts - self.last_ts) / US / self.half_life_s)
            # Decay toward the prior, not toward nothing: a silent rail returns to it.
            self.successes = PRIOR_SUCCESSES + (self.successes - PRIOR_SUCCESSES) * factor
            self.failures = PRIOR_FAILURES + (self.failures - PRIOR_FAILURES) * factor
        self.last_ts = now_ts if self.last_ts is None else max(self.last_ts, now_ts)

    def observe(self, success: bool, now_ts: int) -> None:
        self._decay(now_ts)
        if success:
            self.successes += 1
        else:
            self.failures += 1

    def probability(self, now_ts: int) -> float:
        """The estimated chance that the next attempt succeeds."""
        self._decay(now_ts)
        return self.successes / (self.successes + self.failures)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Takes a failing rail out, and lets one probe back in after a pause."""

    failures_to_open: int = FAILURES_TO_OPEN_DEFAULT
    open_s: float = OPEN_S_DEFAULT
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_ts: int = 0
    probing: bool = False

    def __post_init__(self) -> None:
        if self.failures_to_open < 1 or self.open_s <= 0:
            raise RoutingError("a breaker opens after at least 1 failure, for a positive time")

    def allows(self, now_ts: int) -> bool:
        """Whether a request may go to the rail now; half-open lets one probe."""
        if self.state is BreakerState.OPEN and now_ts - self.opened_ts >= self.open_s * US:
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.state is BreakerState.HALF_OPEN:
            if self.probing:
                return False
            self.probing = True
            return True
        return self.state is BreakerState.CLOSED

    def record(self, success: bool, now_ts: int) -> None:
        if success:
            self.state, self.consecutive_failures, self.probing = BreakerState.CLOSED, 0, False
            return
        self.consecutive_failures += 1
        if (
            self.state is BreakerState.HALF_OPEN
            or self.consecutive_failures >= self.failures_to_open
        ):
            self.state, self.opened_ts, self.probing = BreakerState.OPEN, now_ts, False


@dataclass(frozen=True, slots=True)
class ScoredRoute:
    """One candidate with the figures that ranked it."""

    rail: str
    fee: Money
    spread: Money
    p_success: float
    expected_cost_minor: float
    settle_s: float


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The ranked candidates, best first, and why the other rails were left out."""

    candidates: tuple[ScoredRoute, ...]
    excluded: Mapping[str, str] = field(default_factory=dict)


def decide(
    amount: Money,
    cross_currency: bool,
    rails: Iterable[RailProfile],
    estimators: Mapping[str, SuccessEstimator],
    breakers: Mapping[str, CircuitBreaker],
    *,
    failure_cost_minor: int,
    now_ts: int,
) -> RoutingDecision:
    """Rank the rails that can carry ``amount`` now (rules 1 and 4).

    ``estimators`` and ``breakers`` are keyed by rail name; a rail without one
    gets the prior and a closed breaker. Asking a breaker lets its half-open
    probe through, so call this once per attempt.
    """
    if failure_cost_minor < 0:
        raise RoutingError("the cost of a failure is not negative")
    scored: list[ScoredRoute] = []
    excluded: dict[str, str] = {}
    for rail in rails:
        reason = _exclusion(rail, amount, now_ts, breakers.get(rail.name))
        if reason is not None:
            excluded[rail.name] = reason
            continue
        estimator = estimators.get(rail.name) or SuccessEstimator()
        p = estimator.probability(now_ts)
        fee = rail.fee_minor(amount.amount_minor)
        spread = rail.spread_minor(amount.amount_minor, cross_currency)
        scored.append(
            ScoredRoute(
                rail=rail.name,
                fee=Money(fee, amount.currency),
                spread=Money(spread, amount.currency),
                p_success=p,
                expected_cost_minor=fee + spread + (1 - p) * failure_cost_minor,
                settle_s=rail.settle_s,
            )
        )
    scored.sort(key=lambda r: (r.expected_cost_minor, r.settle_s, r.rail))
    return RoutingDecision(tuple(scored), excluded)


def _exclusion(
    rail: RailProfile, amount: Money, now_ts: int, breaker: CircuitBreaker | None
) -> str | None:
    if amount.currency not in rail.currencies:
        return f"does not carry {amount.currency}"
    if not rail.amount_min_minor <= amount.amount_minor <= rail.amount_max_minor:
        low = Money(rail.amount_min_minor, amount.currency).format()
        high = Money(rail.amount_max_minor, amount.currency).format()
        return f"carries {low} to {high}"
    if rail.hours is not None and not rail.hours.is_open(now_ts):
        return "closed at this time"
    if breaker is not None and not breaker.allows(now_ts):
        return f"circuit breaker {breaker.state.value}"
    return None

"""The login throttle's pure policy: free failures, doubling delays, caps, forgetting."""

from __future__ import annotations

import pytest

from zhifu.identity.throttle import (
    FAILURES_MAX,
    FORGET_AFTER_S,
    RULES,
    ThrottleRule,
    ThrottleScope,
    delay_after,
    login_keys,
    next_state,
    throttle_key,
)

US = 1_000_000
NOW = 1_750_000_000 * US


@pytest.mark.parametrize("scope", list(ThrottleScope))
def test_no_delay_up_to_the_free_failures_and_one_second_one_past(scope: ThrottleScope) -> None:
    rule = RULES[scope]
    assert [delay_after(n, rule) for n in range(rule.free_failures + 1)] == [0] * (
        rule.free_failures + 1
    )
    assert delay_after(rule.free_failures + 1, rule) == rule.base_delay_s


def test_free_failures_of_each_scope() -> None:
    assert RULES[ThrottleScope.PAIR].free_failures == 5
    assert RULES[ThrottleScope.ACCOUNT].free_failures == 10
    assert RULES[ThrottleScope.SOURCE].free_failures == 30
    # The pair is the tightest key, the source the loosest.
    free = [RULES[s].free_failures for s in (ThrottleScope.PAIR, ThrottleScope.ACCOUNT)]
    assert free == sorted(free) and free[-1] < RULES[ThrottleScope.SOURCE].free_failures


def test_delay_doubles_with_every_further_failure() -> None:
    rule = ThrottleRule(free_failures=5, base_delay_s=1, delay_cap_s=10**9)
    assert [delay_after(5 + k, rule) for k in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]
    rule3 = ThrottleRule(free_failures=0, base_delay_s=3, delay_cap_s=10**9)
    assert [delay_after(k, rule3) for k in range(4)] == [0, 3, 6, 12]


@pytest.mark.parametrize("scope", list(ThrottleScope))
def test_delay_stops_at_the_cap(scope: ThrottleScope) -> None:
    rule = RULES[scope]
    # The first failure count whose doubled delay reaches the cap.
    over = 1
    while rule.base_delay_s * 2 ** (over - 1) < rule.delay_cap_s:
        over += 1
    assert delay_after(rule.free_failures + over - 1, rule) < rule.delay_cap_s
    assert delay_after(rule.free_failures + over, rule) == rule.delay_cap_s
    assert delay_after(rule.free_failures + over + 1, rule) == rule.delay_cap_s
    assert delay_after(FAILURES_MAX, rule) == rule.delay_cap_s


def test_caps() -> None:
    assert RULES[ThrottleScope.PAIR].delay_cap_s == 15 * 60
    assert RULES[ThrottleScope.ACCOUNT].delay_cap_s == 15 * 60
    assert RULES[ThrottleScope.SOURCE].delay_cap_s == 60 * 60
    pair = RULES[ThrottleScope.PAIR]
    assert delay_after(5 + 10, pair) == 512
    assert delay_after(5 + 11, pair) == 15 * 60


def test_next_state_counts_and_blocks() -> None:
    rule = RULES[ThrottleScope.PAIR]
    failures, last = 0, 0
    for expected in range(1, rule.free_failures + 1):
        failures, blocked = next_state(failures, last, NOW, rule)
        last = NOW
        assert failures == expected
        assert blocked == NOW  # free: blocked until now, that is, not at all
    failures, blocked = next_state(failures, last, NOW, rule)
    assert failures == rule.free_failures + 1
    assert blocked == NOW + 1 * US


def test_failures_are_forgotten_only_after_forget_after_s() -> None:
    rule = RULES[ThrottleScope.PAIR]
    at_limit = NOW + FORGET_AFTER_S * US
    # Exactly FORGET_AFTER_S later the old failures still count...
    assert next_state(8, NOW, at_limit, rule) == (9, at_limit + delay_after(9, rule) * US)
    # ...one microsecond more and they are forgotten.
    assert next_state(8, NOW, at_limit + 1, rule) == (1, at_limit + 1)
    assert FORGET_AFTER_S == 24 * 3600


def test_the_counter_saturates() -> None:
    rule = RULES[ThrottleScope.SOURCE]
    assert next_state(FAILURES_MAX - 1, NOW, NOW, rule)[0] == FAILURES_MAX
    failures, blocked = next_state(FAILURES_MAX, NOW, NOW, rule)
    assert failures == FAILURES_MAX
    assert blocked == NOW + rule.delay_cap_s * US


def test_keys_are_hashes_that_separate_scopes_and_parts() -> None:
    account = b"\x01" * 32
    key = throttle_key(ThrottleScope.PAIR, account, b"203.0.113.7")
    assert len(key) == 32
    assert b"203.0.113.7" not in key
    assert key != throttle_key(ThrottleScope.SOURCE, account, b"203.0.113.7")
    # Length-prefixed parts: moving a byte from one part to the next is another key.
    assert throttle_key(ThrottleScope.PAIR, b"ab", b"c") != throttle_key(
        ThrottleScope.PAIR, b"a", b"bc"
    )


def test_login_keys_skip_the_account_key_for_a_known_browser() -> None:
    account = b"\x02" * 32
    unknown = login_keys(account, "198.51.100.1", known_browser=False)
    known = login_keys(account, "198.51.100.1", known_browser=True)
    assert [k.scope for k in unknown] == [
        ThrottleScope.PAIR,
        ThrottleScope.ACCOUNT,
        ThrottleScope.SOURCE,
    ]
    assert [k.scope for k in known] == [ThrottleScope.PAIR, ThrottleScope.SOURCE]
    assert {k.key for k in known} < {k.key for k in unknown}
    other_source = login_keys(account, "198.51.100.2", known_browser=False)
    assert unknown[1] == other_source[1]  # one account key from every address
    assert unknown[0] != other_source[0] and unknown[2] != other_source[2]
    # Without an address, all such attempts share one source key.
    assert (
        login_keys(account, None, known_browser=False)[2]
        == login_keys(b"\x03" * 32, None, known_browser=False)[2]
    )

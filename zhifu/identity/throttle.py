"""Login throttling: growing delays, never a lock-out (pure policy, no I/O).

Design note. Failed logins are counted under three keys, each with a number of
free failures and then a delay that doubles with every further failure, up to
a cap (OWASP Authentication Cheat Sheet, "account lockout" and "device
cookies"):

- ``pair`` (account identifier + source address): the tightest. One attacker
  guessing one customer's password is slowed after 5 failures.
- ``account`` (identifier, from any address): credential stuffing against one
  account from many addresses. A browser that has logged into this account
  before (its device cookie) skips this key, so an attacker hammering the
  account cannot stop its owner from logging in from their usual browser.
- ``source`` (address, any identifier): one address trying many accounts.

One more counter, under the ``account`` rule, holds a subject's wrong
second-factor codes (TOTP and recovery codes) from every sign-in ticket and
session together (:func:`second_factor_key`). A ticket allows only a few
attempts, but whoever knows the password can get a new ticket at will: without
this counter, a stolen password would buy unlimited guesses at the code.

Nothing locks an account for good: every block ends by itself after at most
the key's cap, and a counter forgets failures older than
:data:`FORGET_AFTER_S`. Unknown identifiers are counted like real ones (by
their blind index), so the throttle's answers do not tell which accounts
exist. A correct password while a key is blocked is still refused: the check
comes before the password is even looked at.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class ThrottleScope(StrEnum):
    PAIR = "pair"
    ACCOUNT = "account"
    SOURCE = "source"


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    free_failures: int
    base_delay_s: int
    delay_cap_s: int


RULES: Final[dict[ThrottleScope, ThrottleRule]] = {
    ThrottleScope.PAIR: ThrottleRule(free_failures=5, base_delay_s=1, delay_cap_s=15 * 60),
    ThrottleScope.ACCOUNT: ThrottleRule(free_failures=10, base_delay_s=1, delay_cap_s=15 * 60),
    ThrottleScope.SOURCE: ThrottleRule(free_failures=30, base_delay_s=1, delay_cap_s=60 * 60),
}
FORGET_AFTER_S: Final = 24 * 3600
FAILURES_MAX: Final = 1_000_000  # the counter saturates here

_DOMAIN: Final = b"zhifu-throttle-v1|"


def delay_after(failures: int, rule: ThrottleRule) -> int:
    """Seconds to block after ``failures`` consecutive failures under ``rule``."""
    over = failures - rule.free_failures
    if over <= 0:
        return 0
    # 2**over overflows nothing in Python, but keep the exponent small anyway.
    delay_s: int = rule.base_delay_s * 2 ** min(over - 1, 32)
    return min(rule.delay_cap_s, delay_s)


def throttle_key(scope: ThrottleScope, *parts: bytes) -> bytes:
    """The stored key of a counter: a hash, so the table holds no address or identifier."""
    digest = hashlib.sha256(_DOMAIN + scope.value.encode())
    for part in parts:
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class ThrottleKey:
    scope: ThrottleScope
    key: bytes


def login_keys(
    account_index: bytes, source: str | None, *, known_browser: bool
) -> tuple[ThrottleKey, ...]:
    """The counters one login attempt is checked against and counted under."""
    keys = []
    source_bytes = (source or "unknown").encode()
    keys.append(
        ThrottleKey(
            ThrottleScope.PAIR, throttle_key(ThrottleScope.PAIR, account_index, source_bytes)
        )
    )
    if not known_browser:
        keys.append(
            ThrottleKey(ThrottleScope.ACCOUNT, throttle_key(ThrottleScope.ACCOUNT, account_index))
        )
    keys.append(ThrottleKey(ThrottleScope.SOURCE, throttle_key(ThrottleScope.SOURCE, source_bytes)))
    return tuple(keys)


def next_state(
    failures: int, last_failure_ts: int, now_ts: int, rule: ThrottleRule
) -> tuple[int, int]:
    """(failures, blocked_until_ts) after one more failure at ``now_ts`` (µs)."""
    if now_ts - last_failure_ts > FORGET_AFTER_S * 1_000_000:
        failures = 0
    failures = min(failures + 1, FAILURES_MAX)
    return failures, now_ts + delay_after(failures, rule) * 1_000_000


def second_factor_key(subject_kind: str, subject_id: bytes) -> ThrottleKey:
    """The counter of one subject's wrong second-factor codes, whatever the ticket or session."""
    return ThrottleKey(
        ThrottleScope.ACCOUNT,
        throttle_key(ThrottleScope.ACCOUNT, b"second-factor", subject_kind.encode(), subject_id),
    )

"""The bank's own limit policies, read from JSON (ZHIFU_LIMITS_FILE): each
entry lowers the PBOC limits of one class, channel, direction and currency;
anything else is refused with the entry's number and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zhifu.accounts.errors import InvalidLimitError, UnsupportedCurrencyError
from zhifu.accounts.model import (
    DEFAULT_POLICIES,
    POLICY_OVERRIDES_MAX,
    AccountClass,
    Channel,
    Direction,
    PolicyKey,
    build_policy_table,
    policy_overrides,
)
from zhifu.config import ConfigError, load_settings
from zhifu.money import Money
from zhifu.runtime import build_runtime

CLASS_II_ONLINE_OUT = {
    "account_class": "II",
    "channel": "online",
    "direction": "outgoing",
    "currency": "CNY",
    "per_payment": "2000.00",
    "daily": "5000.00",
}
KEY = PolicyKey(AccountClass.CLASS_II, Channel.ONLINE, Direction.OUTGOING, "CNY")


def test_an_entry_lowers_its_policy_and_leaves_the_others() -> None:
    table = build_policy_table(policy_overrides([CLASS_II_ONLINE_OUT]))
    policy = table[KEY]
    assert policy.per_payment == Money(2000_00, "CNY")
    assert policy.daily == Money(5000_00, "CNY")
    assert policy.yearly == Money(200_000_00, "CNY")  # left out: the PBOC's stays
    mobile = PolicyKey(AccountClass.CLASS_II, Channel.MOBILE, Direction.OUTGOING, "CNY")
    assert table[mobile] == DEFAULT_POLICIES[mobile]


def test_no_entry_may_raise_the_pboc_limits() -> None:
    raised = {**CLASS_II_ONLINE_OUT, "daily": "10000.01"}
    with pytest.raises(InvalidLimitError, match=r"at most 10,000\.00 CNY"):
        build_policy_table(policy_overrides([raised]))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**CLASS_II_ONLINE_OUT, "channel": "fax"}, "channel one of"),
        ({**CLASS_II_ONLINE_OUT, "per_payment": 2000}, "decimal string"),
        ({**CLASS_II_ONLINE_OUT, "per_payment": "20.001"}, "per_payment"),
        ({**CLASS_II_ONLINE_OUT, "colour": "red"}, "members"),
        ("II", "an object"),
    ],
)
def test_bad_entries_are_named(entry: Any, message: str) -> None:
    with pytest.raises(InvalidLimitError, match=f"limit policy 2: .*{message}"):
        policy_overrides([CLASS_II_ONLINE_OUT | {"channel": "mobile"}, entry])


def test_a_repeated_key_and_an_unknown_currency_are_refused() -> None:
    with pytest.raises(InvalidLimitError, match="repeats"):
        policy_overrides([CLASS_II_ONLINE_OUT, CLASS_II_ONLINE_OUT])
    usd = {**CLASS_II_ONLINE_OUT, "currency": "XTS", "per_payment": None, "daily": None}
    with pytest.raises(UnsupportedCurrencyError):
        policy_overrides([usd])


def test_at_most_so_many_entries() -> None:
    entries = [
        {"account_class": "I", "channel": "online", "direction": "outgoing", "currency": "CNY"}
    ]
    assert policy_overrides(entries * 1) != {}
    with pytest.raises(InvalidLimitError, match=f"at most {POLICY_OVERRIDES_MAX}"):
        policy_overrides(entries * (POLICY_OVERRIDES_MAX + 1))
    with pytest.raises(InvalidLimitError, match="JSON list"):
        policy_overrides({"policies": []})


def test_the_runtime_reads_the_file_and_names_it_when_it_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "limits.json"
    good.write_text(json.dumps([CLASS_II_ONLINE_OUT]), encoding="utf-8")
    env = {"ZHIFU_HOME": str(tmp_path), "ZHIFU_LIMITS_FILE": str(good)}
    runtime = build_runtime(load_settings(env))
    try:
        assert runtime.limit_policies[KEY].per_payment == Money(2000_00, "CNY")
        assert runtime.payments.policies is runtime.accounts.policies
    finally:
        runtime.close()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**CLASS_II_ONLINE_OUT, "daily": "99999.00"}]), encoding="utf-8")
    runtime = build_runtime(load_settings({**env, "ZHIFU_LIMITS_FILE": str(bad)}))
    try:
        with pytest.raises(ConfigError, match=r"ZHIFU_LIMITS_FILE .*bad.json: .*at most"):
            _ = runtime.limit_policies
    finally:
        runtime.close()

"""Password storage: the blocklist and argon2id hashing (zhifu.identity.passwords).

Hashing uses the real parameters, so each hash costs tens of milliseconds: the
tests share one hash where they can and make only a handful in all.
"""

from __future__ import annotations

import pytest
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from zhifu.identity import passwords
from zhifu.identity.errors import PasswordRejection, WeakPasswordError
from zhifu.identity.model import PASSWORD_INPUT_LENGTH_MAX, PASSWORD_LENGTH_MAX, check_password
from zhifu.identity.passwords import (
    ARGON2_HASH_LENGTH,
    ARGON2_MEMORY_COST_KIB,
    ARGON2_PARALLELISM,
    ARGON2_SALT_LENGTH,
    ARGON2_TIME_COST,
    CHINESE_CONTEXT_PASSWORDS,
    PasswordHasher,
    load_blocklist,
)

PASSWORD = "熊猫 likes bamboo 2025"


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


@pytest.fixture(scope="module")
def stored(hasher: PasswordHasher) -> str:
    return hasher.hash(PASSWORD)


# --- Blocklist ------------------------------------------------------------------


def test_blocklist_holds_zxcvbn_and_chinese_context_passwords() -> None:
    blocklist = load_blocklist()
    assert len(FREQUENCY_LISTS["passwords"]) == 30_000
    assert len(blocklist) >= 30_000
    assert {"password", "password1", "qwerty123"} <= blocklist
    assert {p.casefold() for p in CHINESE_CONTEXT_PASSWORDS} <= blocklist
    assert {"woaini1314", "5201314", "1qaz2wsx", "zhifu123", "p@ssw0rd"} <= blocklist
    assert len(CHINESE_CONTEXT_PASSWORDS) >= 30
    assert all(entry == entry.casefold() for entry in blocklist)


def test_blocklist_is_loaded_once() -> None:
    assert load_blocklist() is load_blocklist()


@pytest.mark.parametrize(
    "password", ["password1", "Password1", "PASSWORD1", "woaini1314", "WOAINI1314", "P@ssw0rd"]
)
def test_policy_with_the_real_blocklist(password: str) -> None:
    with pytest.raises(WeakPasswordError) as caught:
        check_password(password, mfa_enrolled=True, blocklist=load_blocklist())
    assert caught.value.reason is PasswordRejection.BLOCKLISTED


def test_policy_accepts_an_uncommon_passphrase() -> None:
    check_password("tangerine kettle harbour", mfa_enrolled=False, blocklist=load_blocklist())


# --- Hashing ----------------------------------------------------------------------


def test_hash_is_argon2id_with_our_parameters(stored: str) -> None:
    assert stored.startswith(
        f"$argon2id$v=19$m={ARGON2_MEMORY_COST_KIB},t={ARGON2_TIME_COST},p={ARGON2_PARALLELISM}$"
    )
    assert (ARGON2_TIME_COST, ARGON2_PARALLELISM) == (2, 1)
    # At least OWASP's minimum of 19 MiB.
    assert ARGON2_MEMORY_COST_KIB >= 19_456
    assert (ARGON2_HASH_LENGTH, ARGON2_SALT_LENGTH) == (32, 16)
    assert PASSWORD not in stored


def test_round_trip(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, PASSWORD) is True
    assert hasher.needs_rehash(stored) is False


def test_wrong_password_is_false(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.verify(stored, PASSWORD + " ") is False
    assert hasher.verify(stored, "") is False


def test_same_password_gets_a_fresh_salt(hasher: PasswordHasher, stored: str) -> None:
    assert hasher.hash(PASSWORD) != stored


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=47104,t=2,p=1$c2FsdA$bad",
        "$argon2id$v=19$m=47104,t=2,p=1$$",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
    ],
)
def test_malformed_stored_hash_is_false_and_needs_rehash(
    hasher: PasswordHasher, malformed: str
) -> None:
    assert hasher.verify(malformed, PASSWORD) is False
    assert hasher.needs_rehash(malformed) is True


def test_hash_made_with_weaker_parameters_needs_rehash(hasher: PasswordHasher) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost_kib=8)
    weak_hash = weak.hash(PASSWORD)
    assert hasher.verify(weak_hash, PASSWORD) is True
    assert hasher.needs_rehash(weak_hash) is True
    assert weak.needs_rehash(weak_hash) is False


def test_nfkc_equivalent_passwords_verify_the_same(hasher: PasswordHasher) -> None:
    full_width = hasher.hash("ｍｙ ｐｉｎ ２０２５")
    assert hasher.verify(full_width, "my pin 2025") is True
    assert hasher.verify(full_width, "ｍｙ ｐｉｎ ２０２５") is True
    assert hasher.verify(full_width, "my pin 2026") is False


def test_overlong_passwords(hasher: PasswordHasher, stored: str) -> None:
    with pytest.raises(WeakPasswordError) as caught:
        hasher.hash("x" * (PASSWORD_LENGTH_MAX + 1))
    assert caught.value.reason is PasswordRejection.TOO_LONG
    # Rejected before hashing: cheap, whatever the size.
    assert hasher.verify(stored, "x" * (PASSWORD_INPUT_LENGTH_MAX + 1)) is False


def test_dummy_verify_uses_a_hash_with_our_parameters(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash(passwords._DUMMY_HASH) is False
    hasher.dummy_verify()


def test_dummy_verify_with_other_parameters_makes_its_own_hash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost_kib=8)
    weak.dummy_verify()
    assert weak._dummy_hash is not None
    assert weak.needs_rehash(weak._dummy_hash) is False

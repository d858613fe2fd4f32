"""Password storage: argon2id hashing and the blocklist of common passwords.

Argon2id parameters (OWASP Password Storage Cheat Sheet, RFC 9106): OWASP's
minimum is 19 MiB of memory with 2 passes. Measured on the development machine
(2 CPU cores, argon2-cffi 25.1, one verification, median of 7):

    time_cost  memory_cost   verify
        2       19,456 KiB    17 ms   (OWASP minimum)
        2       47,104 KiB    65 ms   <- chosen
        2       65,536 KiB    93 ms
        3       65,536 KiB   129 ms   (RFC 9106's second recommendation, p=1)

46 MiB with 2 passes is 2.4 times OWASP's minimum in memory-hardness and keeps
a verification well under the 100 ms a login can afford, with headroom for a
busier machine; 64 MiB came too close to the budget and costs 64 MiB per
concurrent login. Parallelism stays 1: the server handles many logins at once,
so extra lanes would only compete with each other. Stored hashes carry their
parameters, so raising them later only needs :meth:`PasswordHasher.needs_rehash`
at the next successful login.
"""

from __future__ import annotations

import functools
import secrets
from typing import Final

import argon2
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from zhifu.identity.errors import PasswordRejection, WeakPasswordError
from zhifu.identity.model import (
    PASSWORD_INPUT_LENGTH_MAX,
    PASSWORD_LENGTH_MAX,
    normalise_password,
)

ARGON2_TIME_COST: Final = 2
ARGON2_MEMORY_COST_KIB: Final = 47_104
ARGON2_PARALLELISM: Final = 1
ARGON2_HASH_LENGTH: Final = 32
ARGON2_SALT_LENGTH: Final = 16

# Common passwords of Chinese users and banking customers that zxcvbn's
# (mostly English-language) list lacks or ranks low: pinyin phrases
# ('woaini' = 我爱你), number puns (5201314 ≈ 我爱你一生一世), keyboard walks,
# and the bank's own name.
CHINESE_CONTEXT_PASSWORDS: Final = (
    "1qaz2wsx",
    "1qaz@wsx",
    "1q2w3e4r",
    "qwer1234",
    "qwe123456",
    "asd123456",
    "zxc123456",
    "aa123456",
    "a123456",
    "a123456789",
    "abc123456",
    "qq123456",
    "123456aa",
    "woaini",
    "woaini1314",
    "woaini520",
    "woaiwojia",
    "iloveyou1314",
    "5201314",
    "520520520",
    "1314520",
    "13145200",
    "88888888",
    "168168168",
    "147258369",
    "wang123456",
    "zhang123456",
    "li123456",
    "p@ssw0rd",
    "password@123",
    "admin@123",
    "zhifu123",
    "zhifu@123",
    "zhifu123456",
)

# A valid argon2id hash, with the parameters above, of a random password that
# was thrown away: dummy_verify() checks against it so that a login for an
# unknown account costs the same time as one for a real account.
_DUMMY_HASH: Final = (
    "$argon2id$v=19$m=47104,t=2,p=1$3kphBbXuYCspKUr9ZkgAmg$"
    "ezLewAKFLhN+/L0LAKFHXgYWPZaHwD+cnpyWG4TCZWs"
)

_DUMMY_PASSWORD: Final = "zhifu-dummy-password"  # noqa: S105 - not a secret, only timing


@functools.cache
def load_blocklist() -> frozenset[str]:
    """zxcvbn's 30,000 most common passwords and :data:`CHINESE_CONTEXT_PASSWORDS`, casefolded."""
    common: list[str] = FREQUENCY_LISTS["passwords"]
    return frozenset(p.casefold() for p in (*common, *CHINESE_CONTEXT_PASSWORDS))


class PasswordHasher:
    """argon2id with the parameters above; passwords are NFKC-normalised first.

    Callers check a new password with :func:`zhifu.identity.model.check_password`
    before hashing it.
    """

    def __init__(
        self,
        *,
        time_cost: int = ARGON2_TIME_COST,
        memory_cost_kib: int = ARGON2_MEMORY_COST_KIB,
        parallelism: int = ARGON2_PARALLELISM,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            hash_len=ARGON2_HASH_LENGTH,
            salt_len=ARGON2_SALT_LENGTH,
            type=argon2.Type.ID,
        )
        # The fixed dummy hash only costs the same as a real one under the
        # default parameters; other parameters get their own, made on first use.
        self._dummy_hash: str | None = None if self.needs_rehash(_DUMMY_HASH) else _DUMMY_HASH

    def hash(self, password: str) -> str:
        """The PHC string of ``password`` (``$argon2id$v=19$m=...``), with a fresh salt.

        Raises :class:`WeakPasswordError` (``too_long``) for a password over
        :data:`PASSWORD_LENGTH_MAX` characters, which the policy never accepts.
        """
        normalised = normalise_password(password[: PASSWORD_INPUT_LENGTH_MAX + 1])
        if len(normalised) > PASSWORD_LENGTH_MAX:
            raise WeakPasswordError(
                f"password must be at most {PASSWORD_LENGTH_MAX} characters",
                PasswordRejection.TOO_LONG,
            )
        return self._hasher.hash(normalised)

    def verify(self, stored: str, password: str) -> bool:
        """True when ``password`` matches the ``stored`` hash; False otherwise, never raises.

        A wrong password, a malformed stored hash and a password longer than
        the policy ever allowed all give False.
        """
        if len(password) > PASSWORD_INPUT_LENGTH_MAX:
            return False
        try:
            return self._hasher.verify(stored, normalise_password(password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters (or is malformed).

        Call it after a successful :meth:`verify` and store a fresh hash of the
        password just verified when it answers True.
        """
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def dummy_verify(self) -> None:
        """Spend the time of one verification, for a login to an account that does not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        self.verify(self._dummy_hash, _DUMMY_PASSWORD)

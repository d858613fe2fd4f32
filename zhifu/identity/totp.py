"""One-time passwords (RFC 6238 TOTP, RFC 4226 HOTP) and recovery codes.

Design note. This module is pure: it does no I/O and keeps no state. The
caller (the MFA service) stores, per person, the TOTP secret, the last time
step that was accepted, and the SHA-256 hashes of the unused recovery codes.

Rules and invariants:

1. Secrets are 160 random bits (RFC 4226 section 4 recommends 160), written
   in base32 without padding, the form authenticator apps expect.
2. Codes are 6 digits over 30-second steps with HMAC-SHA1: the parameters
   every authenticator app supports; the provisioning URI states all of them
   so no app has to guess.
3. A code is accepted for the current step and one step either side
   (``TOTP_DRIFT_STEPS``), which absorbs clock skew and the seconds a person
   needs to type, while keeping a guessed code valid for at most 90 seconds.
4. A step is accepted at most once: :func:`verify_totp` refuses any step at
   or before ``last_used_step``, and the caller stores the step it returns.
   A code seen over someone's shoulder, or replayed from a log, is worthless.
5. Comparisons run in constant time (``hmac.compare_digest``) and look at
   every step of the window, so the time taken does not reveal which step (if
   any) matched.
6. What a person types is never trusted: :func:`verify_totp` and
   :func:`normalise_recovery_code` answer ``None`` for any malformed string
   instead of raising, so a login form cannot be made to fail with a 500. A
   value that is not a string at all is a bug in the caller (``TypeError``).
7. Recovery codes carry at least ``RECOVERY_CODE_ENTROPY_BITS_MIN`` bits from
   an alphabet without look-alike characters; only their hashes are stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from typing import Any, Final, Literal
from urllib.parse import quote

import pyotp

from zhifu.invariant import invariant

TOTP_DIGITS: Final = 6
TOTP_PERIOD_S: Final = 30
TOTP_DRIFT_STEPS: Final = 1
TOTP_SECRET_BYTES: Final = 20
ISSUER: Final = "zhifu"

# pyotp (and RFC 4226's dynamic truncation, which keeps 31 bits) supports
# 6 to 10 digits; RFC 6238's own test vectors use 8.
OTP_DIGITS_MIN: Final = 6
OTP_DIGITS_MAX: Final = 10
# The moving factor is an 8-byte big-endian counter (RFC 4226 section 5.2).
HOTP_COUNTER_MAX: Final = 2**64 - 1
# A typed code is at most 6 digits plus a few spaces; anything much longer
# is rejected before any work is done on it.
TOTP_CODE_INPUT_CHARS_MAX: Final = 32
# An account name is an e-mail address (at most 254 characters, RFC 5321)
# or a mobile number; the limit keeps the URI small enough for a QR code
# that a phone reads easily from a screen.
ACCOUNT_NAME_CHARS_MAX: Final = 254

RECOVERY_CODE_COUNT: Final = 10
RECOVERY_CODE_GROUPS: Final = 4
RECOVERY_CODE_GROUP_LENGTH: Final = 4
RECOVERY_CODE_LENGTH: Final = RECOVERY_CODE_GROUPS * RECOVERY_CODE_GROUP_LENGTH
RECOVERY_CODE_SEPARATOR: Final = "-"
# Lower-case letters and digits without 0/o, 1/l/i, which people misread
# when copying a code from paper: 31 symbols, log2(31) ≈ 4.95 bits each.
RECOVERY_CODE_ALPHABET: Final = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_CODE_ENTROPY_BITS_MIN: Final = 60
RECOVERY_CODE_ENTROPY_BITS: Final = RECOVERY_CODE_LENGTH * math.log2(len(RECOVERY_CODE_ALPHABET))
# Room for the grouped form with generous extra spaces; longer input is
# rejected before it is processed.
RECOVERY_CODE_INPUT_CHARS_MAX: Final = 64
RECOVERY_CODE_HASH_PREFIX: Final = b"zhifu-recovery-v1|"

invariant(
    RECOVERY_CODE_ENTROPY_BITS >= RECOVERY_CODE_ENTROPY_BITS_MIN,
    "recovery codes must carry at least RECOVERY_CODE_ENTROPY_BITS_MIN bits",
)
invariant(
    all(c not in RECOVERY_CODE_ALPHABET for c in "0o1li"),
    "the recovery code alphabet must not hold look-alike characters",
)

DigestName = Literal["sha1", "sha256", "sha512"]

# RFC 6238 allows HMAC-SHA-256 and -512 besides SHA-1; nothing weaker.
_DIGESTS: Final[dict[str, Callable[..., Any]]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}


def new_totp_secret() -> str:
    """A fresh random TOTP secret: ``TOTP_SECRET_BYTES`` bytes in base32, no padding."""
    raw = secrets.token_bytes(TOTP_SECRET_BYTES)
    # Some authenticator apps reject '=' in the otpauth URI; 20 bytes encode
    # to exactly 32 characters, so nothing is lost by stripping it anyway.
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def provisioning_uri(secret: str, account_name: str, issuer: str = ISSUER) -> str:
    """The ``otpauth://totp/...`` URI that an authenticator app scans to enrol.

    Follows Google's Key Uri Format. The issuer appears both as the label
    prefix and as the ``issuer`` parameter: older apps read only the first,
    newer ones prefer the second.

    Raises ``ValueError`` when the secret is not base32, or when the account
    name or issuer is empty, holds a colon (the label separator, which the
    format forbids in either part) or is longer than ``ACCOUNT_NAME_CHARS_MAX``.
    """
    raw_secret = _decode_secret(secret)
    for what, value in (("account name", account_name), ("issuer", issuer)):
        if not value or ":" in value or len(value) > ACCOUNT_NAME_CHARS_MAX:
            raise ValueError(
                f"the {what} must be 1 to {ACCOUNT_NAME_CHARS_MAX} characters without ':' "
                f"(got {len(value)} characters)"
            )
    # Build the URI ourselves: pyotp leaves out parameters that equal the
    # defaults, and some apps then guess wrongly; stating them costs nothing.
    label = _quote(issuer) + ":" + _quote(account_name)
    query = "&".join(
        (
            # Canonical form (upper case, no padding) whatever the caller passed.
            f"secret={base64.b32encode(raw_secret).decode('ascii').rstrip('=')}",
            f"issuer={_quote(issuer)}",
            "algorithm=SHA1",
            f"digits={TOTP_DIGITS}",
            f"period={TOTP_PERIOD_S}",
        )
    )
    return f"otpauth://totp/{label}?{query}"


def _quote(text: str) -> str:
    """Percent-encode ``text`` for a URI label or query value (spaces as %20, not '+')."""
    return quote(text, safe="")


def hotp_code(
    secret: str, counter: int, *, digits: int = TOTP_DIGITS, digest: DigestName = "sha1"
) -> str:
    """The RFC 4226 HOTP code for ``counter``, zero-padded to ``digits`` digits.

    Raises ``ValueError`` for a secret that is not base32 (or shorter than the
    112 bits pyotp requires), a counter outside 0..``HOTP_COUNTER_MAX``, a
    digit count outside ``OTP_DIGITS_MIN``..``OTP_DIGITS_MAX`` or an unknown
    digest.
    """
    if not 0 <= counter <= HOTP_COUNTER_MAX:
        raise ValueError(f"the HOTP counter must be 0 to 2**64 - 1, got {counter}")
    if not OTP_DIGITS_MIN <= digits <= OTP_DIGITS_MAX:
        raise ValueError(f"digits must be {OTP_DIGITS_MIN} to {OTP_DIGITS_MAX}, got {digits}")
    digest_function = _DIGESTS.get(digest)
    if digest_function is None:
        raise ValueError(f"digest must be one of {sorted(_DIGESTS)}, got {digest!r}")
    _decode_secret(secret)
    return pyotp.HOTP(secret, digits=digits, digest=digest_function).at(counter)


def totp_code(
    secret: str,
    at_s: int,
    *,
    digits: int = TOTP_DIGITS,
    period_s: int = TOTP_PERIOD_S,
    digest: DigestName = "sha1",
) -> str:
    """The RFC 6238 TOTP code at Unix time ``at_s``.

    Raises ``ValueError`` for a negative time or a period below one second,
    and for everything :func:`hotp_code` refuses.
    """
    if at_s < 0:
        raise ValueError(f"the time must be a non-negative Unix time in seconds, got {at_s}")
    if period_s < 1:
        raise ValueError(f"the period must be at least 1 second, got {period_s}")
    return hotp_code(secret, at_s // period_s, digits=digits, digest=digest)


def totp_step(at_s: int) -> int:
    """The TOTP time step (the HOTP counter) that Unix time ``at_s`` falls in."""
    return at_s // TOTP_PERIOD_S


def verify_totp(secret: str, code: str, *, now_s: int, last_used_step: int | None) -> int | None:
    """Check a typed TOTP code; return the time step it matched, or ``None``.

    Accepts steps ``now - TOTP_DRIFT_STEPS`` to ``now + TOTP_DRIFT_STEPS``,
    but none at or before ``last_used_step``: the caller must store the step
    returned and pass it next time, which makes each code single-use. Spaces
    in ``code`` are ignored ("123 456"); anything else that is not exactly
    ``TOTP_DIGITS`` ASCII digits gives ``None``.

    Raises ``TypeError`` when ``code`` is not a ``str``, and ``ValueError``
    when the stored ``secret`` is not valid base32 (a bug, not bad input).
    """
    if not isinstance(code, str):
        raise TypeError(f"the TOTP code must be a str, got {type(code).__name__}")
    _decode_secret(secret)
    typed = _normalise_totp_input(code)
    if typed is None:
        return None
    now_step = totp_step(now_s)
    matched: int | None = None
    # Every step of the window is computed and compared, with no early exit,
    # so the time taken is the same whichever step matched.
    for step in range(now_step - TOTP_DRIFT_STEPS, now_step + TOTP_DRIFT_STEPS + 1):
        if step < 0:
            continue
        expected = hotp_code(secret, step)
        equal = hmac.compare_digest(expected.encode("ascii"), typed.encode("ascii"))
        fresh = last_used_step is None or step > last_used_step
        # The earliest fresh match wins: a code that collides with a later
        # step by chance (one in a million) should not burn that later step.
        if equal and fresh and matched is None:
            matched = step
    return matched


def _normalise_totp_input(code: str) -> str | None:
    """The typed code without spaces, or ``None`` unless it is ``TOTP_DIGITS`` ASCII digits."""
    if len(code) > TOTP_CODE_INPUT_CHARS_MAX:
        return None
    typed = code.strip().replace(" ", "")
    # isdigit() alone accepts other scripts' digits ('٣', '³'): require ASCII.
    if len(typed) != TOTP_DIGITS or not typed.isascii() or not typed.isdigit():
        return None
    return typed


def _decode_secret(secret: str) -> bytes:
    """Decode a base32 secret (padding optional); ``ValueError`` if it is not base32."""
    if not isinstance(secret, str):
        raise TypeError(f"the TOTP secret must be a str, got {type(secret).__name__}")
    padded = secret + "=" * (-len(secret) % 8)
    try:
        return base64.b32decode(padded, casefold=True)
    except ValueError as error:  # binascii.Error is a ValueError
        raise ValueError("the TOTP secret is not valid base32") from error


def new_recovery_codes() -> list[str]:
    """``RECOVERY_CODE_COUNT`` fresh, distinct recovery codes, grouped for reading.

    Each looks like ``abcd-efgh-jkmn-pqrs``: ``RECOVERY_CODE_GROUPS`` groups of
    ``RECOVERY_CODE_GROUP_LENGTH`` characters from ``RECOVERY_CODE_ALPHABET``.
    Show them once; store only :func:`hash_recovery_code` of each.
    """
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    # With ~79 bits each, a repeat means the random source is broken.
    invariant(len(set(codes)) == RECOVERY_CODE_COUNT, "recovery codes must be distinct")
    return codes


def _new_recovery_code() -> str:
    groups = (
        "".join(secrets.choice(RECOVERY_CODE_ALPHABET) for _ in range(RECOVERY_CODE_GROUP_LENGTH))
        for _ in range(RECOVERY_CODE_GROUPS)
    )
    return RECOVERY_CODE_SEPARATOR.join(groups)


def normalise_recovery_code(text: str) -> str | None:
    """The canonical form of a typed recovery code, or ``None`` if it cannot be one.

    Upper case is folded to lower case and spaces and hyphens are dropped, so
    "ABCD EFGH-jkmn pqrs" matches "abcd-efgh-jkmn-pqrs". ``None`` when the
    result is not ``RECOVERY_CODE_LENGTH`` characters of the alphabet.

    Raises ``TypeError`` when ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"the recovery code must be a str, got {type(text).__name__}")
    # ASCII first: casefold() maps some non-ASCII letters onto ASCII ones
    # (the Kelvin sign to 'k', long s to 's'), which would let look-alike
    # input through.
    if len(text) > RECOVERY_CODE_INPUT_CHARS_MAX or not text.isascii():
        return None
    compact = text.lower().replace(" ", "").replace(RECOVERY_CODE_SEPARATOR, "")
    if len(compact) != RECOVERY_CODE_LENGTH:
        return None
    if any(character not in RECOVERY_CODE_ALPHABET for character in compact):
        return None
    return compact


def hash_recovery_code(normalised: str) -> bytes:
    """The SHA-256 digest under which a recovery code is stored (32 bytes).

    ``normalised`` must come from :func:`normalise_recovery_code`; anything
    else is a bug in the caller and raises ``InvariantError``.
    """
    invariant(
        normalise_recovery_code(normalised) == normalised,
        "hash_recovery_code takes the output of normalise_recovery_code",
    )
    # A fast hash is right here, unlike for passwords: a code holds ~79
    # random bits, so a stolen hash cannot be brute-forced however cheap each
    # guess is, and a slow hash would only make every login slower. The
    # prefix separates these digests from any other SHA-256 of the same text.
    return hashlib.sha256(RECOVERY_CODE_HASH_PREFIX + normalised.encode("ascii")).digest()

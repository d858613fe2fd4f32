"""One-time passwords and recovery codes (zhifu.identity.totp).

The HOTP vectors are RFC 4226 Appendix D; the TOTP vectors are RFC 6238
Appendix B, whose seeds are the ASCII digits "1234567890" repeated to the
digest's length (20, 32 and 64 bytes), here converted to base32.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from zhifu.identity.totp import (
    ACCOUNT_NAME_CHARS_MAX,
    HOTP_COUNTER_MAX,
    ISSUER,
    RECOVERY_CODE_ALPHABET,
    RECOVERY_CODE_COUNT,
    RECOVERY_CODE_ENTROPY_BITS,
    RECOVERY_CODE_ENTROPY_BITS_MIN,
    RECOVERY_CODE_GROUP_LENGTH,
    RECOVERY_CODE_GROUPS,
    RECOVERY_CODE_HASH_PREFIX,
    RECOVERY_CODE_INPUT_CHARS_MAX,
    RECOVERY_CODE_LENGTH,
    TOTP_CODE_INPUT_CHARS_MAX,
    TOTP_DIGITS,
    TOTP_DRIFT_STEPS,
    TOTP_PERIOD_S,
    TOTP_SECRET_BYTES,
    hash_recovery_code,
    hotp_code,
    new_recovery_codes,
    new_totp_secret,
    normalise_recovery_code,
    provisioning_uri,
    totp_code,
    totp_step,
    verify_totp,
)
from zhifu.invariant import InvariantError


def _base32(seed: bytes) -> str:
    return base64.b32encode(seed).decode("ascii").rstrip("=")


SEED_SHA1 = _base32(b"12345678901234567890")
SEED_SHA256 = _base32(b"12345678901234567890123456789012")
SEED_SHA512 = _base32(b"1234567890" * 6 + b"1234")

SECRET = SEED_SHA1
# A time in the middle of a step, so that +-1 step stays within the window.
NOW_S = 1_111_111_111
NOW_STEP = NOW_S // TOTP_PERIOD_S


# --- RFC vectors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("counter", "expected"),
    list(
        enumerate(
            [
                "755224",
                "287082",
                "359152",
                "969429",
                "338314",
                "254676",
                "287922",
                "162583",
                "399871",
                "520489",
            ]
        )
    ),
)
def test_hotp_matches_rfc_4226_appendix_d(counter: int, expected: str) -> None:
    assert hotp_code(SEED_SHA1, counter) == expected


RFC_6238_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("at_s", "sha1", "sha256", "sha512"), RFC_6238_VECTORS)
def test_totp_matches_rfc_6238_appendix_b(at_s: int, sha1: str, sha256: str, sha512: str) -> None:
    assert totp_code(SEED_SHA1, at_s, digits=8, digest="sha1") == sha1
    assert totp_code(SEED_SHA256, at_s, digits=8, digest="sha256") == sha256
    assert totp_code(SEED_SHA512, at_s, digits=8, digest="sha512") == sha512


def test_totp_defaults_are_six_digits_over_thirty_seconds() -> None:
    # The 6-digit code is the last six digits of the 8-digit one (same HMAC).
    assert totp_code(SEED_SHA1, 59) == "287082"
    assert totp_code(SEED_SHA1, 59) == hotp_code(SEED_SHA1, 1)
    assert totp_code(SEED_SHA1, 60) == hotp_code(SEED_SHA1, 2)
    assert totp_step(59) == 1
    assert totp_step(60) == 2


# --- Code generation: bad arguments ----------------------------------------------


def test_hotp_counter_limits() -> None:
    assert len(hotp_code(SECRET, HOTP_COUNTER_MAX)) == TOTP_DIGITS
    with pytest.raises(ValueError, match="counter"):
        hotp_code(SECRET, HOTP_COUNTER_MAX + 1)
    with pytest.raises(ValueError, match="counter"):
        hotp_code(SECRET, -1)


def test_code_generation_refuses_bad_parameters() -> None:
    assert len(hotp_code(SECRET, 0, digits=10)) == 10
    with pytest.raises(ValueError, match="digits"):
        hotp_code(SECRET, 0, digits=11)
    with pytest.raises(ValueError, match="digits"):
        hotp_code(SECRET, 0, digits=5)
    with pytest.raises(ValueError, match="digest"):
        hotp_code(SECRET, 0, digest="md5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time"):
        totp_code(SECRET, -1)
    with pytest.raises(ValueError, match="period"):
        totp_code(SECRET, 0, period_s=0)
    with pytest.raises(ValueError, match="base32"):
        totp_code("not base32!", 0)


# --- Secrets and the provisioning URI ---------------------------------------------


def test_new_secret_is_160_bits_of_unpadded_base32() -> None:
    secret = new_totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(base64.b32decode(secret)) == TOTP_SECRET_BYTES == 20
    assert len({new_totp_secret() for _ in range(100)}) == 100


def test_provisioning_uri_states_every_parameter() -> None:
    uri = provisioning_uri(SECRET, "li.lei@example.cn")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == f"/{ISSUER}:li.lei@example.cn"
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": [SECRET],
        "issuer": [ISSUER],
        "algorithm": ["SHA1"],
        "digits": [str(TOTP_DIGITS)],
        "period": [str(TOTP_PERIOD_S)],
    }


def test_provisioning_uri_encodes_the_label_and_canonicalises_the_secret() -> None:
    uri = provisioning_uri(SECRET.lower(), "李 雷", issuer="智付 Bank")
    assert " " not in uri
    assert "+" not in uri
    assert uri.startswith("otpauth://totp/%E6%99%BA%E4%BB%98%20Bank:%E6%9D%8E%20%E9%9B%B7?")
    assert f"secret={SECRET}&" in uri


def test_provisioning_uri_account_name_limits() -> None:
    at_limit = "a" * ACCOUNT_NAME_CHARS_MAX
    assert at_limit in provisioning_uri(SECRET, at_limit)
    with pytest.raises(ValueError, match="account name"):
        provisioning_uri(SECRET, at_limit + "a")
    with pytest.raises(ValueError, match="account name"):
        provisioning_uri(SECRET, "")
    with pytest.raises(ValueError, match="account name"):
        provisioning_uri(SECRET, "a:b")
    with pytest.raises(ValueError, match="issuer"):
        provisioning_uri(SECRET, "a", issuer="x:y")
    with pytest.raises(ValueError, match="base32"):
        provisioning_uri("1111", "a")


# --- Verification: window, replay, garbage -----------------------------------------


def _code_at_step(step: int) -> str:
    return hotp_code(SECRET, step)


def test_verify_accepts_the_current_step() -> None:
    code = totp_code(SECRET, NOW_S)
    assert verify_totp(SECRET, code, now_s=NOW_S, last_used_step=None) == NOW_STEP


@pytest.mark.parametrize("offset", [-TOTP_DRIFT_STEPS, TOTP_DRIFT_STEPS])
def test_verify_accepts_drift_at_the_limit(offset: int) -> None:
    code = _code_at_step(NOW_STEP + offset)
    assert verify_totp(SECRET, code, now_s=NOW_S, last_used_step=None) == NOW_STEP + offset


@pytest.mark.parametrize("offset", [-TOTP_DRIFT_STEPS - 1, TOTP_DRIFT_STEPS + 1])
def test_verify_refuses_drift_one_past_the_limit(offset: int) -> None:
    code = _code_at_step(NOW_STEP + offset)
    # Guard against a chance collision with a step inside the window.
    window = range(NOW_STEP - TOTP_DRIFT_STEPS, NOW_STEP + TOTP_DRIFT_STEPS + 1)
    assert all(_code_at_step(step) != code for step in window)
    assert verify_totp(SECRET, code, now_s=NOW_S, last_used_step=None) is None


def test_verify_window_follows_the_clock_at_step_edges() -> None:
    first_second = NOW_STEP * TOTP_PERIOD_S
    last_second = first_second + TOTP_PERIOD_S - 1
    previous = _code_at_step(NOW_STEP - 1)
    assert verify_totp(SECRET, previous, now_s=last_second, last_used_step=None) == NOW_STEP - 1
    # One second later the clock is in the next step and NOW_STEP - 1 is out.
    assert verify_totp(SECRET, previous, now_s=last_second + 1, last_used_step=None) is None


def test_verify_refuses_a_replayed_code() -> None:
    code = totp_code(SECRET, NOW_S)
    step = verify_totp(SECRET, code, now_s=NOW_S, last_used_step=None)
    assert step == NOW_STEP
    assert verify_totp(SECRET, code, now_s=NOW_S, last_used_step=step) is None
    # Still refused a step later, while the code is inside the drift window.
    later = NOW_S + TOTP_PERIOD_S
    assert verify_totp(SECRET, code, now_s=later, last_used_step=step) is None


def test_verify_refuses_steps_before_the_last_used_one() -> None:
    earlier = _code_at_step(NOW_STEP - 1)
    assert verify_totp(SECRET, earlier, now_s=NOW_S, last_used_step=NOW_STEP) is None
    # The next step is still fresh after the current one was used.
    later = _code_at_step(NOW_STEP + 1)
    assert verify_totp(SECRET, later, now_s=NOW_S, last_used_step=NOW_STEP) == NOW_STEP + 1


def test_verify_ignores_spaces() -> None:
    code = totp_code(SECRET, NOW_S)
    spaced = f" {code[:3]} {code[3:]} "
    assert verify_totp(SECRET, spaced, now_s=NOW_S, last_used_step=None) == NOW_STEP


def test_verify_near_the_epoch_skips_negative_steps() -> None:
    code = hotp_code(SECRET, 0)
    assert verify_totp(SECRET, code, now_s=0, last_used_step=None) == 0


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "12345",
        "1234567",
        "abcdef",
        "12345a",
        "١٢٣٤٥٦",  # Arabic-Indic digits: isdigit() but not ASCII
        "123²56",
        "12-456",
        "123\x00456",
        "1" * 10_000,
    ],
)
def test_verify_returns_none_for_garbage(garbage: str) -> None:
    assert verify_totp(SECRET, garbage, now_s=NOW_S, last_used_step=None) is None


def test_verify_input_length_limit() -> None:
    code = totp_code(SECRET, NOW_S)
    padded = code.center(TOTP_CODE_INPUT_CHARS_MAX)
    assert verify_totp(SECRET, padded, now_s=NOW_S, last_used_step=None) == NOW_STEP
    assert verify_totp(SECRET, padded + " ", now_s=NOW_S, last_used_step=None) is None


def test_verify_raises_type_error_for_non_strings() -> None:
    with pytest.raises(TypeError, match="str"):
        verify_totp(SECRET, 123456, now_s=NOW_S, last_used_step=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        verify_totp(SECRET, None, now_s=NOW_S, last_used_step=None)  # type: ignore[arg-type]


def test_verify_raises_for_a_corrupt_secret() -> None:
    with pytest.raises(ValueError, match="base32"):
        verify_totp("!!!!", "123456", now_s=NOW_S, last_used_step=None)


# --- Recovery codes ----------------------------------------------------------------

RECOVERY_CODE_PATTERN = re.compile(
    "-".join([f"[{RECOVERY_CODE_ALPHABET}]{{{RECOVERY_CODE_GROUP_LENGTH}}}"] * RECOVERY_CODE_GROUPS)
)


def test_recovery_codes_have_the_documented_shape() -> None:
    codes = new_recovery_codes()
    assert len(codes) == RECOVERY_CODE_COUNT == 10
    for code in codes:
        assert RECOVERY_CODE_PATTERN.fullmatch(code), code
        assert normalise_recovery_code(code) == code.replace("-", "")


def test_recovery_code_alphabet_has_no_look_alikes_and_enough_entropy() -> None:
    assert not set("0o1li") & set(RECOVERY_CODE_ALPHABET)
    assert len(set(RECOVERY_CODE_ALPHABET)) == len(RECOVERY_CODE_ALPHABET)
    assert RECOVERY_CODE_ENTROPY_BITS >= RECOVERY_CODE_ENTROPY_BITS_MIN >= 60


def test_recovery_codes_are_unique_and_use_the_whole_alphabet() -> None:
    codes = [code for _ in range(100) for code in new_recovery_codes()]
    assert len(set(codes)) == len(codes)
    # 16,000 characters drawn: each of the 31 symbols turns up ~500 times, so
    # a missing one means the draw is not uniform over the alphabet.
    assert set("".join(codes).replace("-", "")) == set(RECOVERY_CODE_ALPHABET)


def test_normalise_folds_case_and_drops_spaces_and_hyphens() -> None:
    expected = "abcdefghjkmnpqrs"
    for typed in (
        "abcd-efgh-jkmn-pqrs",
        "ABCD-EFGH-JKMN-PQRS",
        "abcd efgh jkmn pqrs",
        "  AbCd-EfGh jkmnpqrs ",
        "abcdefghjkmnpqrs",
        "a-b-c-d-e-f-g-h-j-k-m-n-p-q-r-s",
    ):
        assert normalise_recovery_code(typed) == expected, typed


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abcd-efgh-jkmn-pqr",  # one short
        "abcd-efgh-jkmn-pqrst",  # one long
        "abcd-efgh-jkmn-pqr0",  # '0' is not in the alphabet
        "abcd-efgh-jkmn-pqro",
        "abcd-efgh-jkmn-pqr1",
        "abcd-efgh-jkmn-pqrl",
        "abcd-efgh-jkmn-pqri",
        "abcd_efgh_jkmn_pqrs",
        "abcd-efgh-jkmn-pqr\u212a",  # Kelvin sign: casefold() would make it 'k'
        "abcd\tefgh-jkmn-pqrs",
    ],
)
def test_normalise_returns_none_for_garbage(garbage: str) -> None:
    assert normalise_recovery_code(garbage) is None


def test_normalise_input_length_limit() -> None:
    code = "abcd-efgh-jkmn-pqrs"
    at_limit = code.ljust(RECOVERY_CODE_INPUT_CHARS_MAX)
    assert normalise_recovery_code(at_limit) == code.replace("-", "")
    assert normalise_recovery_code(at_limit + " ") is None
    assert len(code.replace("-", "")) == RECOVERY_CODE_LENGTH


def test_normalise_raises_type_error_for_non_strings() -> None:
    with pytest.raises(TypeError, match="str"):
        normalise_recovery_code(b"abcd-efgh-jkmn-pqrs")  # type: ignore[arg-type]


def test_hash_recovery_code_is_domain_separated_sha256() -> None:
    normalised = "abcdefghjkmnpqrs"
    digest = hash_recovery_code(normalised)
    assert digest == hashlib.sha256(b"zhifu-recovery-v1|" + normalised.encode()).digest()
    assert RECOVERY_CODE_HASH_PREFIX == b"zhifu-recovery-v1|"
    assert digest != hashlib.sha256(normalised.encode()).digest()
    assert len(digest) == 32
    assert hash_recovery_code("abcdefghjkmnpqrt") != digest


def test_typed_code_hashes_like_the_issued_one() -> None:
    code = new_recovery_codes()[0]
    typed = code.upper().replace("-", " ")
    normalised = normalise_recovery_code(typed)
    assert normalised is not None
    assert hash_recovery_code(normalised) == hash_recovery_code(code.replace("-", ""))


def test_hash_recovery_code_refuses_unnormalised_input() -> None:
    with pytest.raises(InvariantError):
        hash_recovery_code("abcd-efgh-jkmn-pqrs")
    with pytest.raises(InvariantError):
        hash_recovery_code("ABCDEFGHJKMNPQRS")

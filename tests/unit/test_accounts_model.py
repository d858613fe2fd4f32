"""The accounts context's pure rules: Luhn, account numbers, cards, tokens,
limits, day buckets, status machines and nicknames.

Every known-valid number below is checked first by ``reference_luhn_ok``, an
independent Luhn written the textbook way (double every second digit from the
right, add the digits of each product), so a bug shared by the code and its
test data cannot hide. The limit tests sit at each limit and one minor unit
past it, for every class, channel, direction and scope.
"""

from __future__ import annotations

import itertools
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.accounts.errors import (
    AccountFrozenError,
    AccountNumberRule,
    AccountsError,
    AccountStateError,
    CardBlockedError,
    CardStateError,
    InvalidAccountNumberError,
    InvalidCardExpiryError,
    InvalidLimitError,
    InvalidNicknameError,
    InvalidPanError,
    LimitExceededError,
    LimitScope,
    LimitSource,
    PanRule,
    UnknownProductError,
    UnsupportedCurrencyError,
)
from zhifu.accounts.model import (
    ACCOUNT_CURRENCIES,
    ACCOUNT_NUMBER_LENGTH,
    ACCOUNT_SERIAL_MAX,
    ACCOUNT_TRANSITIONS,
    BANK_CODE_DEFAULT,
    CARD_EXPIRY_YEAR_MAX,
    CARD_EXPIRY_YEAR_MIN,
    CARD_TOKEN_LENGTH,
    CARD_TRANSITIONS,
    CARD_VALIDITY_YEARS_DEFAULT,
    CARD_VALIDITY_YEARS_MAX,
    CLASS_CURRENCIES,
    CLASS_II_INCOMING_DAILY_MAX_MINOR,
    CLASS_II_INCOMING_YEARLY_MAX_MINOR,
    CLASS_II_OUTGOING_DAILY_MAX_MINOR,
    CLASS_II_OUTGOING_YEARLY_MAX_MINOR,
    CLASS_III_BALANCE_MAX_MINOR,
    CLASS_III_INCOMING_DAILY_MAX_MINOR,
    CLASS_III_INCOMING_YEARLY_MAX_MINOR,
    CLASS_III_OUTGOING_DAILY_MAX_MINOR,
    CLASS_III_OUTGOING_YEARLY_MAX_MINOR,
    DEFAULT_POLICIES,
    ISSUER_BIN_DEFAULT,
    LIMIT_CHECK_ORDER,
    NICKNAME_INPUT_LENGTH_MAX,
    NICKNAME_LENGTH_MAX,
    NUMBER_TEXT_LENGTH_MAX,
    PAN_LENGTHS,
    PRODUCTS,
    TIMESTAMP_US_MAX,
    TIMESTAMP_US_MIN,
    AccountClass,
    AccountEvent,
    AccountStatus,
    CardEvent,
    CardExpiry,
    CardStatus,
    Channel,
    CustomerLimits,
    Direction,
    LedgerCounters,
    LimitPolicy,
    PolicyKey,
    account_transition,
    build_policy_table,
    card_expiry,
    card_transition,
    check_account_opening,
    check_account_usable,
    check_card_usable,
    check_limits,
    effective_limits,
    format_digit_groups,
    is_token,
    luhn_check_digit,
    luhn_valid,
    mask_account_number,
    mask_pan,
    new_account_number,
    new_card_token,
    normalise_nickname,
    pan_from_serial,
    parse_account_number,
    parse_pan,
    policy_for,
    product,
    random_pan,
    reissued_card_status,
    remaining_allowance,
    spending_buckets,
    validate_customer_limits,
)
from zhifu.invariant import InvariantError
from zhifu.money import CURRENCIES, Money

C1, C2, C3 = AccountClass.CLASS_I, AccountClass.CLASS_II, AccountClass.CLASS_III
OUT, IN = Direction.OUTGOING, Direction.INCOMING


def reference_luhn_ok(number: str) -> bool:
    """Luhn the textbook way, independent of the code under test."""
    total = 0
    for position, char in enumerate(reversed(number)):
        product_ = int(char) * (2 if position % 2 == 1 else 1)
        total += sum(int(d) for d in str(product_))
    return total % 10 == 0


def cny(amount_minor: int) -> Money:
    return Money(amount_minor, "CNY")


digits = st.text(alphabet="0123456789", min_size=1, max_size=30)


# --- Luhn ---------------------------------------------------------------------------------

# Published test card numbers (Visa, Mastercard, Discover, UnionPay 16 and 19
# digits, JCB, Amex), the ISO/IEC 7812 worked example, and the brief's UnionPay sample.
KNOWN_VALID = (
    "4111111111111111",
    "4012888888881881",
    "5555555555554444",
    "6011111111111117",
    "6200000000000005",
    "6205500000000000004",
    "3530111333300000",
    "378282246310005",
    "79927398713",
    "6212345678901265",
)


@pytest.mark.parametrize("number", KNOWN_VALID)
def test_known_valid_numbers_pass_luhn(number: str) -> None:
    assert reference_luhn_ok(number)
    assert luhn_valid(number)
    assert luhn_check_digit(number[:-1]) == number[-1]


@pytest.mark.parametrize("number", [n for n in KNOWN_VALID if len(n) in PAN_LENGTHS])
def test_known_valid_pans_parse(number: str) -> None:
    assert parse_pan(number) == number


def test_luhn_worked_example() -> None:
    assert luhn_check_digit("7992739871") == "3"


@pytest.mark.parametrize("number", ["", "0", "4111111111111112", "4111 1111", "٤١١١", "41a1"])
def test_luhn_refuses_wrong_or_malformed_numbers(number: str) -> None:
    assert not luhn_valid(number)


def test_luhn_check_digit_needs_digits() -> None:
    with pytest.raises(InvariantError):
        luhn_check_digit("")
    with pytest.raises(InvariantError):
        luhn_check_digit("12a")


@given(digits)
def test_luhn_agrees_with_the_reference(number: str) -> None:
    assert luhn_valid(number) == (len(number) >= 2 and reference_luhn_ok(number))


@given(digits)
def test_generated_check_digit_is_always_valid(payload: str) -> None:
    number = payload + luhn_check_digit(payload)
    assert luhn_valid(number)
    assert reference_luhn_ok(number)


@given(digits, st.data())
def test_every_single_digit_error_is_detected(payload: str, data: st.DataObject) -> None:
    number = payload + luhn_check_digit(payload)
    position = data.draw(st.integers(0, len(number) - 1))
    wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != number[position]]))
    assert not luhn_valid(number[:position] + wrong + number[position + 1 :])


@given(st.text(alphabet="0123456789", min_size=1, max_size=30), st.data())
def test_adjacent_transpositions_are_detected_except_09(payload: str, data: st.DataObject) -> None:
    number = payload + luhn_check_digit(payload)
    position = data.draw(st.integers(0, len(number) - 2))
    a, b = number[position], number[position + 1]
    swapped = number[:position] + b + a + number[position + 2 :]
    if a == b:
        assert swapped == number
    elif {a, b} == {"0", "9"}:
        assert luhn_valid(swapped)  # the one swap Luhn cannot see
    else:
        assert not luhn_valid(swapped)


def test_every_adjacent_pair_exhaustively() -> None:
    for a, b in itertools.product("0123456789", repeat=2):
        if a == b:
            continue
        for prefix in ("", "7", "12"):
            payload = prefix + a + b + "3"
            number = payload + luhn_check_digit(payload)
            at = len(prefix)
            swapped = number[:at] + b + a + number[at + 2 :]
            assert luhn_valid(swapped) == ({a, b} == {"0", "9"})


# --- Account numbers ----------------------------------------------------------------------


def test_new_account_number_layout() -> None:
    account = new_account_number(123, bank_code="1024", branch_code="0310")
    assert account.number == "1024031000000001232"
    assert len(account.number) == ACCOUNT_NUMBER_LENGTH
    assert (account.bank_code, account.branch_code, account.serial) == ("1024", "0310", 123)
    assert account.check_digit == account.number[-1]
    assert reference_luhn_ok(account.number)


@pytest.mark.parametrize("serial", [0, 1, ACCOUNT_SERIAL_MAX])
def test_account_serial_at_the_limits(serial: int) -> None:
    assert parse_account_number(new_account_number(serial).number).serial == serial


@pytest.mark.parametrize("serial", [-1, ACCOUNT_SERIAL_MAX + 1, True, "1"])
def test_account_serial_out_of_range(serial: object) -> None:
    with pytest.raises(InvalidAccountNumberError) as caught:
        new_account_number(serial)  # type: ignore[arg-type]
    assert caught.value.rule is AccountNumberRule.SERIAL
    assert caught.value.code == "account_number_serial"


@pytest.mark.parametrize("bank_code", ["102", "10245", "1o24", "0123", "9123", "１０２４"])
def test_bad_bank_codes(bank_code: str) -> None:
    with pytest.raises(InvalidAccountNumberError) as caught:
        new_account_number(1, bank_code=bank_code)
    assert caught.value.rule is AccountNumberRule.BANK_CODE


@pytest.mark.parametrize("branch_code", ["001", "00001", "00a1", ""])
def test_bad_branch_codes(branch_code: str) -> None:
    with pytest.raises(InvalidAccountNumberError) as caught:
        new_account_number(1, branch_code=branch_code)
    assert caught.value.rule is AccountNumberRule.BRANCH_CODE


@given(
    st.integers(0, ACCOUNT_SERIAL_MAX),
    st.from_regex(r"[1-8][0-9]{3}", fullmatch=True),
    st.from_regex(r"[0-9]{4}", fullmatch=True),
)
def test_generated_account_numbers_always_parse_back(serial: int, bank: str, branch: str) -> None:
    account = new_account_number(serial, bank_code=bank, branch_code=branch)
    assert reference_luhn_ok(account.number)
    assert parse_account_number(account.number, bank_code=bank) == account


def test_account_number_may_be_typed_grouped_or_full_width() -> None:
    account = new_account_number(42)
    grouped = format_digit_groups(account.number)
    assert grouped == "1024 0001 0000 0000 429"
    assert parse_account_number(f"  {grouped}  ") == account
    assert parse_account_number(account.number.replace("0001", "0-0-0-1")) == account
    full_width = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in grouped)
    assert parse_account_number(full_width) == account


def test_account_number_text_length_limit() -> None:
    number = new_account_number(42).number
    at_limit = number + " " * (NUMBER_TEXT_LENGTH_MAX - len(number))
    assert parse_account_number(at_limit).number == number
    with pytest.raises(InvalidAccountNumberError) as caught:
        parse_account_number(at_limit + " ")
    assert caught.value.rule is AccountNumberRule.CHARACTERS


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", AccountNumberRule.CHARACTERS),
        ("1024 0001 0000 0000 42x", AccountNumberRule.CHARACTERS),
        ("1024.0001.0000.0000.424", AccountNumberRule.CHARACTERS),
        ("102400010000000042", AccountNumberRule.LENGTH),
        ("10240001000000004240", AccountNumberRule.LENGTH),
        ("0024000100000000424", AccountNumberRule.BANK_CODE),
        ("9024000100000000424", AccountNumberRule.BANK_CODE),
        ("1024000100000000428", AccountNumberRule.CHECK_DIGIT),
        ("1024000100000000492", AccountNumberRule.CHECK_DIGIT),
    ],
)
def test_account_number_rules(text: str, rule: AccountNumberRule) -> None:
    with pytest.raises(InvalidAccountNumberError) as caught:
        parse_account_number(text)
    assert caught.value.rule is rule
    assert caught.value.code == f"account_number_{rule.value}"
    if len(text) == ACCOUNT_NUMBER_LENGTH:
        assert text not in str(caught.value)


def test_account_number_of_another_bank() -> None:
    other = new_account_number(42, bank_code="3088").number
    assert parse_account_number(other).bank_code == "3088"
    with pytest.raises(InvalidAccountNumberError) as caught:
        parse_account_number(other, bank_code=BANK_CODE_DEFAULT)
    assert caught.value.rule is AccountNumberRule.BANK_CODE
    assert BANK_CODE_DEFAULT in str(caught.value)


def test_account_number_masking() -> None:
    account = new_account_number(1234)
    assert account.masked == "*" * 15 + account.number[-4:]
    assert mask_account_number("12345") == "*****"
    assert mask_account_number("") == ""
    assert account.formatted == format_digit_groups(account.number)


# --- Card numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("length", PAN_LENGTHS)
def test_pan_from_serial_layout(length: int) -> None:
    pan = pan_from_serial(7, length=length)
    assert len(pan) == length
    assert pan.startswith(ISSUER_BIN_DEFAULT)
    assert pan[6:-1] == "7".zfill(length - 7)
    assert reference_luhn_ok(pan)
    assert ISSUER_BIN_DEFAULT.startswith("62")


@pytest.mark.parametrize("length", PAN_LENGTHS)
def test_pan_serial_at_the_limits(length: int) -> None:
    serial_max = 10 ** (length - 7) - 1
    assert parse_pan(pan_from_serial(serial_max, length=length))[6:-1] == "9" * (length - 7)
    for serial in (-1, serial_max + 1):
        with pytest.raises(InvalidPanError) as caught:
            pan_from_serial(serial, length=length)
        assert caught.value.rule is PanRule.SERIAL


@pytest.mark.parametrize("length", [15, 17, 18, 20])
def test_pan_lengths_other_than_16_and_19(length: int) -> None:
    with pytest.raises(InvalidPanError) as caught:
        pan_from_serial(1, length=length)
    assert caught.value.rule is PanRule.LENGTH
    with pytest.raises(InvalidPanError) as caught:
        random_pan(length=length)
    assert caught.value.rule is PanRule.LENGTH


@pytest.mark.parametrize("issuer_bin", ["62308", "6230888", "62a088", "023088", "923088"])
def test_bad_issuer_bins(issuer_bin: str) -> None:
    with pytest.raises(InvalidPanError) as caught:
        pan_from_serial(1, issuer_bin=issuer_bin)
    assert caught.value.rule is PanRule.ISSUER_BIN


@given(st.sampled_from(PAN_LENGTHS), st.data())
def test_generated_pans_are_always_valid(length: int, data: st.DataObject) -> None:
    serial = data.draw(st.integers(0, 10 ** (length - 7) - 1))
    issuer_bin = data.draw(st.from_regex(r"[1-8][0-9]{5}", fullmatch=True))
    pan = pan_from_serial(serial, issuer_bin=issuer_bin, length=length)
    assert reference_luhn_ok(pan)
    assert parse_pan(pan, issuer_bin=issuer_bin) == pan
    assert not is_token(pan)


@pytest.mark.parametrize("length", PAN_LENGTHS)
def test_random_pans(length: int) -> None:
    pans = {random_pan(length=length) for _ in range(50)}
    assert len(pans) > 1
    for pan in pans:
        assert len(pan) == length
        assert parse_pan(pan, issuer_bin=ISSUER_BIN_DEFAULT) == pan


def test_pan_may_be_typed_grouped() -> None:
    assert parse_pan(" 6212 3456-7890 1265 ") == "6212345678901265"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", PanRule.CHARACTERS),
        ("6212 3456 7890 126x", PanRule.CHARACTERS),
        ("6" * (NUMBER_TEXT_LENGTH_MAX + 1), PanRule.CHARACTERS),
        ("378282246310005", PanRule.LENGTH),
        ("62123456789012652", PanRule.LENGTH),
        ("621234567890126528", PanRule.LENGTH),
        ("62123456789012652800", PanRule.LENGTH),
        ("9212345678901265", PanRule.RESERVED_PREFIX),
        ("6212345678901266", PanRule.CHECK_DIGIT),
        ("6212345678901256", PanRule.CHECK_DIGIT),
    ],
)
def test_pan_rules(text: str, rule: PanRule) -> None:
    with pytest.raises(InvalidPanError) as caught:
        parse_pan(text)
    assert caught.value.rule is rule
    assert caught.value.code == f"pan_{rule.value}"
    if len(text) in PAN_LENGTHS:
        assert text not in str(caught.value)
        assert text[6:-4] not in str(caught.value)


def test_pan_of_another_issuer() -> None:
    with pytest.raises(InvalidPanError) as caught:
        parse_pan("4111111111111111", issuer_bin=ISSUER_BIN_DEFAULT)
    assert caught.value.rule is PanRule.ISSUER_BIN
    assert "411111******1111" in str(caught.value)


def test_pan_masking_shows_first_six_and_last_four() -> None:
    assert mask_pan("6212345678901265") == "621234******1265"
    assert mask_pan("6205500000000000004") == "620550*********0004"
    assert mask_pan("378282246310005") == "*" * 15
    assert mask_pan("62123456789012ab") == "*" * 16


# --- Card tokens --------------------------------------------------------------------------


def test_tokens_never_pass_luhn_and_are_recognised() -> None:
    tokens = {new_card_token() for _ in range(2000)}
    assert len(tokens) == 2000
    for token in tokens:
        assert len(token) == CARD_TOKEN_LENGTH
        assert token.startswith("9")
        assert token.isascii() and token.isdigit()
        assert is_token(token)
        assert not luhn_valid(token)
        assert not reference_luhn_ok(token)
        with pytest.raises(InvalidPanError):
            parse_pan(token)


@given(st.data())
def test_a_mistyped_token_digit_is_caught(data: st.DataObject) -> None:
    token = new_card_token()
    position = data.draw(st.integers(1, CARD_TOKEN_LENGTH - 1))
    wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != token[position]]))
    assert not is_token(token[:position] + wrong + token[position + 1 :])


@given(st.integers(0, 10**12 - 1))
def test_no_pan_is_a_token(serial: int) -> None:
    pan = pan_from_serial(serial, length=19)
    assert not is_token(pan)
    # Even a Luhn-valid 19-digit number starting with 9 is not a token.
    payload = "9" + pan[1:-1]
    assert not is_token(payload + luhn_check_digit(payload))


@pytest.mark.parametrize("text", ["", "9" * 18, "9" * 20, "8" + "0" * 18, "9" + "a" * 18])
def test_malformed_tokens(text: str) -> None:
    assert not is_token(text)


# --- Card expiry --------------------------------------------------------------------------


def test_card_expiry_from_issue_date() -> None:
    expiry = card_expiry(date(2025, 2, 28))
    assert expiry == CardExpiry(2025 + CARD_VALIDITY_YEARS_DEFAULT, 2)
    assert expiry.format() == "02/35"
    assert card_expiry(date(2025, 7, 1), 1) == CardExpiry(2026, 7)
    assert card_expiry(date(2025, 7, 1), CARD_VALIDITY_YEARS_MAX).year == 2045


@pytest.mark.parametrize("years", [0, -1, CARD_VALIDITY_YEARS_MAX + 1])
def test_card_validity_out_of_range(years: int) -> None:
    with pytest.raises(InvalidCardExpiryError):
        card_expiry(date(2025, 7, 1), years)


def test_card_expiry_year_and_month_limits() -> None:
    assert CardExpiry(CARD_EXPIRY_YEAR_MIN, 1).format() == "01/00"
    assert CardExpiry(CARD_EXPIRY_YEAR_MAX, 12).format() == "12/99"
    for year, month in ((CARD_EXPIRY_YEAR_MIN - 1, 1), (CARD_EXPIRY_YEAR_MAX + 1, 1)):
        with pytest.raises(InvalidCardExpiryError):
            CardExpiry(year, month)
    for month in (0, 13):
        with pytest.raises(InvalidCardExpiryError):
            CardExpiry(2030, month)
    with pytest.raises(InvalidCardExpiryError):
        card_expiry(date(2090, 1, 1), CARD_VALIDITY_YEARS_MAX)


def test_a_card_is_good_through_the_last_day_of_its_month() -> None:
    expiry = CardExpiry(2028, 2)
    assert expiry.last_day == date(2028, 2, 29)
    assert not expiry.is_expired(date(2028, 2, 29))
    assert expiry.is_expired(date(2028, 3, 1))
    assert CardExpiry(2027, 2).last_day == date(2027, 2, 28)


# --- Products and classes -----------------------------------------------------------------


def test_product_table() -> None:
    assert set(PRODUCTS) == {"current", "savings"}
    assert {"CNY", "USD", "EUR", "HKD", "JPY"} <= PRODUCTS["savings"].currencies
    assert {"CNY", "USD", "EUR", "HKD", "JPY"} <= PRODUCTS["current"].currencies
    assert all(code in CURRENCIES for code in ACCOUNT_CURRENCIES)
    assert CLASS_CURRENCIES[C2] == CLASS_CURRENCIES[C3] == {"CNY"}
    assert CLASS_CURRENCIES[C1] == ACCOUNT_CURRENCIES


def test_unknown_product() -> None:
    with pytest.raises(UnknownProductError) as caught:
        product("checking")
    assert "current, savings" in str(caught.value)
    assert caught.value.code == "unknown_product"


@pytest.mark.parametrize(
    ("code", "account_class", "currency", "error"),
    [
        ("current", C1, "JPY", None),
        ("savings", C1, "USD", None),
        ("current", C2, "CNY", None),
        ("savings", C2, "CNY", None),
        ("current", C3, "CNY", None),
        ("savings", C3, "CNY", UnknownProductError),
        ("loan", C1, "CNY", UnknownProductError),
        ("savings", C1, "GBP", UnsupportedCurrencyError),
        ("current", C1, "CHF", UnsupportedCurrencyError),
        ("current", C2, "USD", UnsupportedCurrencyError),
        ("current", C3, "HKD", UnsupportedCurrencyError),
    ],
)
def test_account_opening(
    code: str, account_class: AccountClass, currency: str, error: type[AccountsError] | None
) -> None:
    if error is None:
        assert check_account_opening(code, account_class, currency).code == code
    else:
        with pytest.raises(error):
            check_account_opening(code, account_class, currency)


# --- Limits -------------------------------------------------------------------------------

# (class, direction) -> (daily, yearly, balance cap) in CNY fen, straight from the rules.
PBOC = {
    (C2, IN): (CLASS_II_INCOMING_DAILY_MAX_MINOR, CLASS_II_INCOMING_YEARLY_MAX_MINOR, None),
    (C2, OUT): (CLASS_II_OUTGOING_DAILY_MAX_MINOR, CLASS_II_OUTGOING_YEARLY_MAX_MINOR, None),
    (C3, IN): (
        CLASS_III_INCOMING_DAILY_MAX_MINOR,
        CLASS_III_INCOMING_YEARLY_MAX_MINOR,
        CLASS_III_BALANCE_MAX_MINOR,
    ),
    (C3, OUT): (CLASS_III_OUTGOING_DAILY_MAX_MINOR, CLASS_III_OUTGOING_YEARLY_MAX_MINOR, None),
}
LIMITED = [(c, ch, d) for (c, d) in PBOC for ch in Channel]


def test_pboc_figures() -> None:
    assert PBOC[(C2, OUT)][:2] == (10_000_00, 200_000_00)
    assert PBOC[(C2, IN)][:2] == (10_000_00, 200_000_00)
    assert PBOC[(C3, OUT)][:2] == (2_000_00, 50_000_00)
    assert PBOC[(C3, IN)] == (5_000_00, 100_000_00, 2_000_00)


def default(account_class: AccountClass, channel: Channel, direction: Direction) -> LimitPolicy:
    return policy_for(DEFAULT_POLICIES, account_class, channel, direction, "CNY")


def check(
    policy: LimitPolicy,
    amount: int,
    *,
    today: int = 0,
    year: int = 0,
    balance_after: int = 0,
    customer: CustomerLimits | None = None,
    bound_account: bool = False,
) -> None:
    check_limits(
        policy,
        customer,
        cny(amount),
        cny(today),
        cny(year),
        cny(balance_after),
        bound_account=bound_account,
    )


@pytest.mark.parametrize(("account_class", "channel", "direction"), LIMITED)
def test_daily_limit_at_and_one_past(
    account_class: AccountClass, channel: Channel, direction: Direction
) -> None:
    daily = PBOC[(account_class, direction)][0]
    policy = default(account_class, channel, direction)
    check(policy, 100, today=daily - 100, year=daily - 100, balance_after=100)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 101, today=daily - 100, year=daily - 100, balance_after=101)
    error = caught.value
    assert (error.scope, error.source) == (LimitScope.DAILY, LimitSource.POLICY)
    assert (error.limit, error.resulting, error.remaining) == (cny(daily), cny(daily + 1), cny(100))
    assert error.code == "limit_exceeded"
    assert "1.00 CNY remain for today" in str(error)


@pytest.mark.parametrize(("account_class", "channel", "direction"), LIMITED)
def test_yearly_limit_at_and_one_past(
    account_class: AccountClass, channel: Channel, direction: Direction
) -> None:
    yearly = PBOC[(account_class, direction)][1]
    policy = default(account_class, channel, direction)
    check(policy, 100, year=yearly - 100, balance_after=100)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 101, year=yearly - 100, balance_after=101)
    error = caught.value
    assert (error.scope, error.limit, error.remaining) == (LimitScope.YEARLY, cny(yearly), cny(100))
    assert f"{cny(yearly + 1).format()}" in str(error)


@pytest.mark.parametrize("channel", Channel)
def test_class_iii_balance_cap_at_and_one_past(channel: Channel) -> None:
    policy = default(C3, channel, IN)
    check(policy, 100, balance_after=CLASS_III_BALANCE_MAX_MINOR)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 100, balance_after=CLASS_III_BALANCE_MAX_MINOR + 1)
    error = caught.value
    assert (error.scope, error.remaining) == (LimitScope.BALANCE, cny(99))
    assert "at most 0.99 CNY more can be received" in str(error)


@pytest.mark.parametrize(("account_class", "channel", "direction"), LIMITED)
def test_only_class_iii_incoming_has_a_balance_cap(
    account_class: AccountClass, channel: Channel, direction: Direction
) -> None:
    policy = default(account_class, channel, direction)
    has_cap = (account_class, direction) == (C3, IN)
    assert (policy.balance_max is not None) == has_cap
    assert policy.per_payment is None
    if not has_cap:
        check(policy, 1, balance_after=10**15)


@pytest.mark.parametrize("channel", Channel)
@pytest.mark.parametrize("direction", Direction)
@pytest.mark.parametrize("currency", sorted(ACCOUNT_CURRENCIES))
def test_class_i_has_no_default_limits(
    channel: Channel, direction: Direction, currency: str
) -> None:
    policy = policy_for(DEFAULT_POLICIES, C1, channel, direction, currency)
    big = Money(10**15, currency)
    check_limits(policy, None, big, big, big, big + big)
    assert remaining_allowance(policy, None, big, big, big) is None


@pytest.mark.parametrize("account_class", [C2, C3])
@pytest.mark.parametrize("currency", sorted(ACCOUNT_CURRENCIES - {"CNY"}))
def test_class_ii_and_iii_hold_cny_only(account_class: AccountClass, currency: str) -> None:
    with pytest.raises(UnsupportedCurrencyError):
        policy_for(DEFAULT_POLICIES, account_class, Channel.MOBILE, OUT, currency)


def test_limits_are_checked_in_the_documented_order() -> None:
    assert LIMIT_CHECK_ORDER == (
        LimitScope.PER_PAYMENT,
        LimitScope.DAILY,
        LimitScope.YEARLY,
        LimitScope.BALANCE,
    )
    policy = LimitPolicy(
        "CNY", per_payment=cny(100), daily=cny(200), yearly=cny(300), balance_max=cny(400)
    )
    broken = [
        ({"amount": 101, "today": 200, "year": 300, "balance_after": 500}, LimitScope.PER_PAYMENT),
        ({"amount": 100, "today": 101, "year": 300, "balance_after": 500}, LimitScope.DAILY),
        ({"amount": 100, "today": 0, "year": 201, "balance_after": 500}, LimitScope.YEARLY),
        ({"amount": 100, "today": 0, "year": 0, "balance_after": 401}, LimitScope.BALANCE),
    ]
    for values, scope in broken:
        with pytest.raises(LimitExceededError) as caught:
            check(policy, **values)  # type: ignore[arg-type]
        assert caught.value.scope is scope
    check(policy, 100, today=100, year=200, balance_after=400)


def test_per_payment_limit_at_and_one_past() -> None:
    policy = LimitPolicy("CNY", per_payment=cny(5_000_00))
    check(policy, 5_000_00)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 5_000_01)
    error = caught.value
    assert (error.scope, error.resulting, error.remaining) == (
        LimitScope.PER_PAYMENT,
        cny(5_000_01),
        cny(5_000_00),
    )
    assert "at most 5,000.00 CNY can be paid at once" in str(error)


def test_remaining_is_never_negative_when_already_over() -> None:
    policy = default(C2, Channel.MOBILE, OUT)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 1, today=CLASS_II_OUTGOING_DAILY_MAX_MINOR + 500)
    assert caught.value.remaining == cny(0)
    assert remaining_allowance(policy, None, cny(10**9), cny(0), cny(0)) == cny(0)


def test_bound_account_transfers_skip_the_pboc_totals_but_not_the_balance_cap() -> None:
    policy = default(C3, Channel.MOBILE, IN)
    check(policy, 1_000_00, today=10**9, year=10**9, balance_after=2_000_00, bound_account=True)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 1_000_00, balance_after=2_000_01, bound_account=True)
    assert caught.value.scope is LimitScope.BALANCE


def test_check_limits_refuses_other_currencies_and_non_positive_amounts() -> None:
    policy = default(C2, Channel.QR, OUT)
    usd = Money(1, "USD")
    with pytest.raises(UnsupportedCurrencyError):
        check_limits(policy, None, usd, cny(0), cny(0), cny(0))
    with pytest.raises(UnsupportedCurrencyError):
        check_limits(policy, None, cny(1), cny(0), cny(0), usd)
    with pytest.raises(UnsupportedCurrencyError):
        check_limits(policy, CustomerLimits("USD"), cny(1), cny(0), cny(0), cny(1))
    for amount in (0, -1):
        with pytest.raises(InvariantError):
            check(policy, amount)
    with pytest.raises(InvariantError):
        check(policy, 1, today=-1)


@given(
    st.integers(1, 30_000_00),
    st.integers(0, 300_000_00),
    st.integers(0, 300_000_00),
    st.integers(0, 5_000_00),
    st.sampled_from(sorted(PBOC)),
    st.one_of(st.none(), st.integers(0, 20_000_00)),
)
def test_check_limits_allows_exactly_up_to_the_remaining_allowance(
    amount: int,
    today: int,
    year: int,
    balance: int,
    key: tuple[AccountClass, Direction],
    customer_daily: int | None,
) -> None:
    policy = default(key[0], Channel.CARD, key[1])
    ceiling = policy.daily
    assert ceiling is not None
    customer = None
    if customer_daily is not None:
        customer = CustomerLimits("CNY", daily=cny(min(customer_daily, ceiling.amount_minor)))
    left = remaining_allowance(policy, customer, cny(today), cny(year), cny(balance))
    assert left is not None and not left.is_negative()
    try:
        check(
            policy,
            amount,
            today=today,
            year=year,
            balance_after=balance + amount,
            customer=customer,
        )
        allowed = True
    except LimitExceededError:
        allowed = False
    assert allowed == (amount <= left.amount_minor)


# --- Customer limits ----------------------------------------------------------------------


def test_customer_limits_can_lower() -> None:
    policy = default(C2, Channel.MOBILE, OUT)
    lower = CustomerLimits("CNY", per_payment=cny(500_00), daily=cny(1_000_00))
    assert validate_customer_limits(policy, lower) is lower
    same = CustomerLimits("CNY", daily=cny(CLASS_II_OUTGOING_DAILY_MAX_MINOR))
    assert validate_customer_limits(policy, same) is same
    off = CustomerLimits("CNY", daily=cny(0))
    validate_customer_limits(policy, off)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 1, customer=off)
    assert caught.value.source is LimitSource.CUSTOMER


@pytest.mark.parametrize(
    "requested",
    [
        CustomerLimits("CNY", daily=cny(CLASS_II_OUTGOING_DAILY_MAX_MINOR + 1)),
        CustomerLimits("CNY", yearly=cny(CLASS_II_OUTGOING_YEARLY_MAX_MINOR + 1)),
    ],
)
def test_customer_limits_can_never_raise(requested: CustomerLimits) -> None:
    with pytest.raises(InvalidLimitError) as caught:
        validate_customer_limits(default(C2, Channel.MOBILE, OUT), requested)
    assert "can only be lowered" in str(caught.value)
    assert caught.value.code == "invalid_limit"


def test_customer_per_payment_below_an_unlimited_policy() -> None:
    policy = default(C2, Channel.MOBILE, OUT)
    requested = CustomerLimits("CNY", per_payment=cny(10**12))
    assert validate_customer_limits(policy, requested) is requested
    with pytest.raises(UnsupportedCurrencyError):
        validate_customer_limits(policy, CustomerLimits("USD"))


def test_customer_limit_applies_when_lower_and_is_named() -> None:
    policy = default(C3, Channel.QR, OUT)
    customer = CustomerLimits("CNY", daily=cny(500_00))
    check(policy, 500_00, customer=customer)
    with pytest.raises(LimitExceededError) as caught:
        check(policy, 500_01, customer=customer)
    error = caught.value
    assert (error.source, error.limit) == (LimitSource.CUSTOMER, cny(500_00))
    assert "you set" in str(error)


def test_on_a_tie_the_policy_is_named() -> None:
    policy = default(C3, Channel.QR, OUT)
    customer = CustomerLimits("CNY", daily=cny(CLASS_III_OUTGOING_DAILY_MAX_MINOR))
    limits = effective_limits(policy, customer)
    assert [(lim.scope, lim.source) for lim in limits] == [
        (LimitScope.DAILY, LimitSource.POLICY),
        (LimitScope.YEARLY, LimitSource.POLICY),
    ]
    with pytest.raises(LimitExceededError) as caught:
        check(policy, CLASS_III_OUTGOING_DAILY_MAX_MINOR + 1, customer=customer)
    assert "this account's daily limit" in str(caught.value)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: LimitPolicy("CNY", daily=cny(-1)), InvalidLimitError),
        (lambda: LimitPolicy("CNY", daily=Money(1, "USD")), InvalidLimitError),
        (lambda: LimitPolicy("CNY", daily=100), InvalidLimitError),  # type: ignore[arg-type]
        (lambda: LimitPolicy("CHF"), UnsupportedCurrencyError),
        (lambda: CustomerLimits("CNY", yearly=cny(-1)), InvalidLimitError),
        (lambda: CustomerLimits("XAU"), UnsupportedCurrencyError),
    ],
)
def test_bad_limit_values(make: object, error: type[AccountsError]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


# --- Bank policy table --------------------------------------------------------------------


def test_bank_can_lower_a_channel() -> None:
    key = PolicyKey(C2, Channel.QR, OUT, "CNY")
    lower = LimitPolicy("CNY", per_payment=cny(1_000_00), daily=cny(5_000_00), yearly=cny(1))
    table = build_policy_table({key: lower})
    assert table[key] is lower
    assert (
        table[PolicyKey(C2, Channel.MOBILE, OUT, "CNY")]
        == DEFAULT_POLICIES[PolicyKey(C2, Channel.MOBILE, OUT, "CNY")]
    )
    assert len(table) == len(DEFAULT_POLICIES)


def test_bank_can_set_any_class_i_limit() -> None:
    key = PolicyKey(C1, Channel.ONLINE, OUT, "USD")
    policy = LimitPolicy("USD", per_payment=Money(10**12, "USD"))
    assert build_policy_table({key: policy})[key] is policy


@pytest.mark.parametrize(
    ("key", "policy", "error"),
    [
        (
            PolicyKey(C2, Channel.QR, OUT, "CNY"),
            LimitPolicy("CNY", daily=cny(CLASS_II_OUTGOING_DAILY_MAX_MINOR + 1), yearly=cny(1)),
            InvalidLimitError,
        ),
        (
            PolicyKey(C2, Channel.QR, OUT, "CNY"),
            LimitPolicy("CNY", daily=cny(1)),  # no yearly limit would raise it
            InvalidLimitError,
        ),
        (
            PolicyKey(C3, Channel.QR, IN, "CNY"),
            LimitPolicy("CNY", daily=cny(1), yearly=cny(1)),  # dropping the balance cap
            InvalidLimitError,
        ),
        (
            PolicyKey(C3, Channel.QR, IN, "CNY"),
            LimitPolicy(
                "CNY",
                daily=cny(1),
                yearly=cny(1),
                balance_max=cny(CLASS_III_BALANCE_MAX_MINOR + 1),
            ),
            InvalidLimitError,
        ),
        (
            PolicyKey(C1, Channel.QR, OUT, "CNY"),
            LimitPolicy("CNY", balance_max=cny(1)),
            InvalidLimitError,
        ),
        (
            PolicyKey(C1, Channel.QR, OUT, "CNY"),
            LimitPolicy("USD"),
            InvalidLimitError,
        ),
        (
            PolicyKey(C2, Channel.QR, OUT, "USD"),
            LimitPolicy("USD"),
            UnsupportedCurrencyError,
        ),
    ],
)
def test_bank_can_never_raise_the_pboc_limits(
    key: PolicyKey, policy: LimitPolicy, error: type[AccountsError]
) -> None:
    with pytest.raises(error):
        build_policy_table({key: policy})


def test_default_table_covers_every_allowed_combination() -> None:
    expected = {
        PolicyKey(c, ch, d, cur)
        for c, currencies in CLASS_CURRENCIES.items()
        for ch in Channel
        for d in Direction
        for cur in currencies
    }
    assert set(DEFAULT_POLICIES) == expected
    assert all(policy.currency == key.currency for key, policy in DEFAULT_POLICIES.items())


# --- Day and year buckets -----------------------------------------------------------------


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_shanghai_midnight_is_1600_utc() -> None:
    before = us(datetime(2025, 6, 14, 15, 59, 59, 999_999, tzinfo=UTC))
    assert spending_buckets(before) == (date(2025, 6, 14), 2025)
    assert spending_buckets(before + 1) == (date(2025, 6, 15), 2025)


def test_shanghai_new_year() -> None:
    before = us(datetime(2024, 12, 31, 15, 59, 59, 999_999, tzinfo=UTC))
    assert spending_buckets(before) == (date(2024, 12, 31), 2024)
    assert spending_buckets(before + 1) == (date(2025, 1, 1), 2025)
    # Still 31 December in UTC, but already the new year in Shanghai.
    assert spending_buckets(us(datetime(2024, 12, 31, 20, 0, tzinfo=UTC))).year == 2025


def test_bucket_timestamp_limits() -> None:
    assert spending_buckets(TIMESTAMP_US_MIN) == (date(1970, 1, 1), 1970)
    assert spending_buckets(TIMESTAMP_US_MAX) == (date(9999, 1, 1), 9999)
    for out_of_range in (TIMESTAMP_US_MIN - 1, TIMESTAMP_US_MAX + 1):
        with pytest.raises(InvariantError):
            spending_buckets(out_of_range)


@given(st.integers(us(datetime(1992, 1, 1, tzinfo=UTC)), TIMESTAMP_US_MAX))
def test_buckets_match_utc_plus_eight_since_china_dropped_summer_time(timestamp_us: int) -> None:
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=timestamp_us)
    local = local.astimezone(timezone(timedelta(hours=8)))
    assert spending_buckets(timestamp_us) == (local.date(), local.year)


# --- Status machines ----------------------------------------------------------------------

# Written out in full, independently of the code's table.
ACCOUNT_EXPECTED = {
    (AccountStatus.OPEN, AccountEvent.FREEZE): AccountStatus.FROZEN,
    (AccountStatus.OPEN, AccountEvent.UNFREEZE): None,
    (AccountStatus.OPEN, AccountEvent.CLOSE): AccountStatus.CLOSED,
    (AccountStatus.FROZEN, AccountEvent.FREEZE): None,
    (AccountStatus.FROZEN, AccountEvent.UNFREEZE): AccountStatus.OPEN,
    (AccountStatus.FROZEN, AccountEvent.CLOSE): None,
    (AccountStatus.CLOSED, AccountEvent.FREEZE): None,
    (AccountStatus.CLOSED, AccountEvent.UNFREEZE): None,
    (AccountStatus.CLOSED, AccountEvent.CLOSE): None,
}
CARD_EXPECTED = {
    (CardStatus.ACTIVE, CardEvent.FREEZE): CardStatus.FROZEN,
    (CardStatus.ACTIVE, CardEvent.UNFREEZE): None,
    (CardStatus.ACTIVE, CardEvent.REPORT_LOST): CardStatus.LOST,
    (CardStatus.ACTIVE, CardEvent.CLOSE): CardStatus.CLOSED,
    (CardStatus.FROZEN, CardEvent.FREEZE): None,
    (CardStatus.FROZEN, CardEvent.UNFREEZE): CardStatus.ACTIVE,
    (CardStatus.FROZEN, CardEvent.REPORT_LOST): CardStatus.LOST,
    (CardStatus.FROZEN, CardEvent.CLOSE): CardStatus.CLOSED,
    **{(CardStatus.LOST, event): None for event in CardEvent},
    **{(CardStatus.CLOSED, event): None for event in CardEvent},
}
SETTLED = LedgerCounters("CNY", 0, 12_345, 0, 12_345)


def test_expected_tables_cover_every_pair() -> None:
    assert set(ACCOUNT_EXPECTED) == set(itertools.product(AccountStatus, AccountEvent))
    assert set(CARD_EXPECTED) == set(itertools.product(CardStatus, CardEvent))
    assert {k: v for k, v in ACCOUNT_EXPECTED.items() if v} == dict(ACCOUNT_TRANSITIONS)
    assert {k: v for k, v in CARD_EXPECTED.items() if v} == dict(CARD_TRANSITIONS)


@pytest.mark.parametrize(("pair", "after"), ACCOUNT_EXPECTED.items())
def test_account_transitions(
    pair: tuple[AccountStatus, AccountEvent], after: AccountStatus | None
) -> None:
    current, event = pair
    if after is not None:
        assert account_transition(current, event, SETTLED) is after
        return
    with pytest.raises(AccountStateError) as caught:
        account_transition(current, event, SETTLED)
    message = str(caught.value)
    assert f"that is {current.value}" in message
    assert "allowed: " in message
    assert caught.value.code == "account_state"


def test_frozen_account_cannot_be_closed_and_says_why() -> None:
    with pytest.raises(AccountStateError) as caught:
        account_transition(AccountStatus.FROZEN, AccountEvent.CLOSE, SETTLED)
    assert "unfreeze it first" in str(caught.value)
    with pytest.raises(AccountStateError) as caught:
        account_transition(AccountStatus.CLOSED, AccountEvent.UNFREEZE)
    assert "this status is final" in str(caught.value)


@pytest.mark.parametrize(
    "counters",
    [
        LedgerCounters("CNY", 1, 0, 0, 0),
        LedgerCounters("CNY", 0, 0, 1, 0),
        LedgerCounters("CNY", 0, 0, 0, 1),
        LedgerCounters("CNY", 0, 1, 0, 0),
        LedgerCounters("CNY", 5, 100, 0, 105),
        LedgerCounters("CNY", 0, 100, 5, 100),
    ],
)
def test_account_closes_only_settled_at_zero(counters: LedgerCounters) -> None:
    with pytest.raises(AccountStateError) as caught:
        account_transition(AccountStatus.OPEN, AccountEvent.CLOSE, counters)
    assert "zero balance with nothing pending" in str(caught.value)


def test_account_closes_at_zero() -> None:
    never_used = LedgerCounters("JPY", 0, 0, 0, 0)
    assert account_transition(AccountStatus.OPEN, AccountEvent.CLOSE, never_used) is (
        AccountStatus.CLOSED
    )
    assert account_transition(AccountStatus.OPEN, AccountEvent.CLOSE, SETTLED) is (
        AccountStatus.CLOSED
    )
    with pytest.raises(InvariantError):
        account_transition(AccountStatus.OPEN, AccountEvent.CLOSE)


@pytest.mark.parametrize(("pair", "after"), CARD_EXPECTED.items())
def test_card_transitions(pair: tuple[CardStatus, CardEvent], after: CardStatus | None) -> None:
    current, event = pair
    if after is not None:
        assert card_transition(current, event) is after
        return
    with pytest.raises(CardStateError) as caught:
        card_transition(current, event)
    assert f"that is {current.value}" in str(caught.value)
    assert caught.value.code == "card_state"


def test_lost_card_cannot_be_unfrozen() -> None:
    with pytest.raises(CardStateError) as caught:
        card_transition(CardStatus.LOST, CardEvent.UNFREEZE)
    assert "reissue a new card" in str(caught.value)


@pytest.mark.parametrize("old", CardStatus)
def test_only_a_lost_card_is_reissued(old: CardStatus) -> None:
    if old is CardStatus.LOST:
        assert reissued_card_status(old) is CardStatus.ACTIVE
    else:
        with pytest.raises(CardStateError):
            reissued_card_status(old)


@pytest.mark.parametrize("status", AccountStatus)
@pytest.mark.parametrize("direction", Direction)
def test_account_usable(status: AccountStatus, direction: Direction) -> None:
    if status is AccountStatus.CLOSED:
        with pytest.raises(AccountStateError):
            check_account_usable(status, direction)
    elif status is AccountStatus.FROZEN and direction is OUT:
        with pytest.raises(AccountFrozenError) as caught:
            check_account_usable(status, direction)
        assert caught.value.code == "account_frozen"
    else:
        check_account_usable(status, direction)


@pytest.mark.parametrize("status", CardStatus)
def test_card_usable(status: CardStatus) -> None:
    expiry = CardExpiry(2030, 6)
    if status is CardStatus.ACTIVE:
        check_card_usable(status, expiry, date(2030, 6, 30))
        with pytest.raises(CardBlockedError) as caught:
            check_card_usable(status, expiry, date(2030, 7, 1))
        assert "06/30" in str(caught.value)
    else:
        with pytest.raises(CardBlockedError) as caught:
            check_card_usable(status, expiry, date(2025, 1, 1))
        assert caught.value.code == "card_blocked"


# --- Nicknames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a", "a"),
        ("工资卡", "工资卡"),
        ("  Rainy   day\u3000fund ", "Rainy day fund"),
        ("Cafe\u0301", "Café"),
        ("旅行 ✈️ 2025", "旅行 ✈️ 2025"),
        ("x" * NICKNAME_LENGTH_MAX, "x" * NICKNAME_LENGTH_MAX),
        ("e\u0301" * NICKNAME_LENGTH_MAX, "é" * NICKNAME_LENGTH_MAX),
        ("a" + " " * (NICKNAME_INPUT_LENGTH_MAX - 1), "a"),
    ],
)
def test_nickname_accepted(text: str, expected: str) -> None:
    assert normalise_nickname(text) == expected
    assert unicodedata.is_normalized("NFC", expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "x" * (NICKNAME_LENGTH_MAX + 1),
        "a" + " " * NICKNAME_INPUT_LENGTH_MAX,
        "line\nbreak",
        "tab\there",
        "nul\x00",
        "evil\u202etxt",
        "zero\u200bwidth",
        "para\u2029graph",
        "private\ue000",
        "family 👨\u200d👩\u200d👧",
    ],
)
def test_nickname_refused(text: str) -> None:
    with pytest.raises(InvalidNicknameError) as caught:
        normalise_nickname(text)
    assert caught.value.code == "invalid_nickname"


# --- Errors -------------------------------------------------------------------------------


def test_every_error_has_the_one_root() -> None:
    from zhifu.accounts import errors

    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, AccountsError)
        assert cls is AccountsError or "Raised" in (cls.__doc__ or "")

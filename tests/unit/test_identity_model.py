"""The identity context's pure rules: resident IDs, mobiles, e-mail, names, password policy.

Valid resident ID numbers below were computed with the ISO 7064 MOD 11-2
algorithm (11010519491231002X is the example printed in GB 11643-1999 itself).
``TODAY`` is fixed so that the birth-date limits do not move.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhifu.identity.errors import (
    IdentityError,
    InvalidEmailError,
    InvalidMobileError,
    InvalidNameError,
    InvalidResidentIdError,
    PasswordRejection,
    ResidentIdRule,
    WeakPasswordError,
)
from zhifu.identity.model import (
    EMAIL_LENGTH_MAX,
    EMAIL_LOCAL_PART_LENGTH_MAX,
    MOBILE_DIGITS_MAX,
    MOBILE_DIGITS_MIN,
    MOBILE_TEXT_LENGTH_MAX,
    NAME_LENGTH_MAX,
    PASSWORD_INPUT_LENGTH_MAX,
    PASSWORD_LENGTH_MAX,
    PASSWORD_LENGTH_MIN_WITH_MFA,
    PASSWORD_LENGTH_MIN_WITHOUT_MFA,
    PROVINCES,
    RESIDENT_ID_BIRTH_DATE_MIN,
    RESIDENT_ID_CHECK_CHARACTERS,
    ResidentId,
    check_password,
    mask_mobile,
    mask_resident_id,
    normalise_email,
    normalise_name,
    parse_mobile,
    parse_resident_id,
    password_context_words,
    resident_id_check_char,
)

TODAY = date(2025, 6, 15)


def parse(text: str) -> ResidentId:
    return parse_resident_id(text, today=TODAY)


def rejected_id(text: str, rule: ResidentIdRule) -> str:
    with pytest.raises(InvalidResidentIdError) as caught:
        parse(text)
    assert caught.value.rule is rule
    assert caught.value.code == f"resident_id_{rule.value}"
    assert isinstance(caught.value, IdentityError)
    return str(caught.value)


def with_check(first_17: str) -> str:
    return first_17 + resident_id_check_char(first_17)


# --- Resident IDs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "region", "birth", "sequence", "sex", "province"),
    [
        ("11010519491231002X", "110105", date(1949, 12, 31), "002", "female", "Beijing"),
        ("310104198506151237", "310104", date(1985, 6, 15), "123", "male", "Shanghai"),
        ("510107199202294563", "510107", date(1992, 2, 29), "456", "female", "Sichuan"),
        ("650102197603082713", "650102", date(1976, 3, 8), "271", "male", "Xinjiang"),
        ("810000199911118889", "810000", date(1999, 11, 11), "888", "female", "Hong Kong"),
        ("44030520000101003X", "440305", date(2000, 1, 1), "003", "male", "Guangdong"),
        ("330106201007070097", "330106", date(2010, 7, 7), "009", "male", "Zhejiang"),
        ("540102198808085511", "540102", date(1988, 8, 8), "551", "male", "Xizang (Tibet)"),
    ],
)
def test_valid_resident_ids_decode(
    number: str, region: str, birth: date, sequence: str, sex: str, province: str
) -> None:
    parsed = parse(number)
    assert parsed == ResidentId(
        number=number,
        region_code=region,
        birth_date=birth,
        sequence=sequence,
        sex=sex,  # type: ignore[arg-type]
        check_char=number[-1],
    )
    assert parsed.province[1] == province
    assert parsed.masked == number[:6] + "*" * 10 + number[-2:]


def test_lower_case_x_is_normalised_and_whitespace_and_full_width_are_read() -> None:
    assert parse("11010519491231002x").number == "11010519491231002X"
    assert parse("  11010519491231002X\n").number == "11010519491231002X"
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "11010519491231002X")
    assert parse(full_width).number == "11010519491231002X"


def test_province_table_is_gb_t_2260_plus_the_taiwan_residence_permit() -> None:
    ranges: tuple[range, ...] = (range(11, 16), range(21, 24), range(31, 38), range(41, 47))
    ranges += (range(50, 55), range(61, 66), range(71, 72), range(81, 84))
    expected = [code for r in ranges for code in r]
    assert sorted(int(code) for code in PROVINCES) == expected
    assert PROVINCES["54"][0] == "西藏自治区"
    assert all(len(code) == 2 and zh and en for code, (zh, en) in PROVINCES.items())


@pytest.mark.parametrize(
    "text", ["", "11010519491231002", "11010519491231002X1", "110105491231002"]
)
def test_wrong_length_is_rejected(text: str) -> None:
    message = rejected_id(text, ResidentIdRule.LENGTH)
    assert f"must be 18 characters, got {len(text)}" in message


@pytest.mark.parametrize(
    "text",
    ["1101051949123100AX", "11010519491231002Y", "A1010519491231002X", "11010519491231002-"],
)
def test_non_digit_characters_are_rejected(text: str) -> None:
    message = rejected_id(text, ResidentIdRule.CHARACTERS)
    assert "first 17 characters must be digits and the last a digit or 'X'" in message


def test_other_scripts_digits_are_not_digits() -> None:
    # Arabic-Indic digits pass str.isdigit() and survive NFKC; they are not valid here.
    rejected_id("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", ResidentIdRule.CHARACTERS)


@pytest.mark.parametrize(
    "province", ["00", "10", "16", "20", "30", "38", "47", "55", "72", "84", "99"]
)
def test_unknown_province_is_rejected(province: str) -> None:
    message = rejected_id(with_check(province + "010519491231002"), ResidentIdRule.REGION)
    assert f"'{province}' is not a province code of GB/T 2260" in message


def test_residence_permits_of_taiwan_hong_kong_and_macao_residents_are_accepted() -> None:
    for prefix in ("830000", "810000", "820000"):
        assert parse(with_check(prefix + "19900101002")).region_code == prefix


def test_county_code_is_not_checked() -> None:
    # 110199 is no county of Beijing today; a card may carry a retired code for life.
    assert parse(with_check("11019919491231002")).region_code == "110199"


@pytest.mark.parametrize("birth", ["19490230", "19930229", "19491301", "19490000", "19491232"])
def test_impossible_birth_dates_are_rejected(birth: str) -> None:
    message = rejected_id(with_check("110105" + birth + "002"), ResidentIdRule.BIRTH_DATE)
    assert "not a real calendar date" in message
    assert birth not in message


def test_birth_date_limits() -> None:
    def number(birth: date) -> str:
        return with_check("110105" + birth.strftime("%Y%m%d") + "002")

    assert date(1900, 1, 1) == RESIDENT_ID_BIRTH_DATE_MIN
    assert parse(number(date(1900, 1, 1))).birth_date == date(1900, 1, 1)
    message = rejected_id(number(date(1899, 12, 31)), ResidentIdRule.BIRTH_DATE)
    assert "birth date is before 1900-01-01" in message
    assert parse(number(TODAY)).birth_date == TODAY
    message = rejected_id(number(TODAY + timedelta(days=1)), ResidentIdRule.BIRTH_DATE)
    assert "birth date is in the future" in message
    # The example of GB 11643-1999 for a person born in 1880 is outside our range.
    rejected_id("440524188001010014", ResidentIdRule.BIRTH_DATE)


def test_today_defaults_to_the_local_date() -> None:
    tomorrow = with_check("110105" + (date.today() + timedelta(days=2)).strftime("%Y%m%d") + "002")
    with pytest.raises(InvalidResidentIdError, match="future"):
        parse_resident_id(tomorrow)


def test_wrong_check_character_names_the_expected_one() -> None:
    message = rejected_id("110105194912310025", ResidentIdRule.CHECK_CHARACTER)
    assert message == "resident ID check character should be 'X', got '5'"
    message = rejected_id("31010419850615123X", ResidentIdRule.CHECK_CHARACTER)
    assert message == "resident ID check character should be '7', got 'X'"


def test_rules_are_checked_in_order() -> None:
    # Unknown province, impossible date and wrong check character: region wins.
    rejected_id("990105194913310020", ResidentIdRule.REGION)
    # Impossible date and wrong check character: birth date wins.
    rejected_id("110105194913310020", ResidentIdRule.BIRTH_DATE)


def test_check_char_needs_17_ascii_digits() -> None:
    with pytest.raises(ValueError, match="17 ASCII digits"):
        resident_id_check_char("1101051949123100")
    with pytest.raises(ValueError, match="17 ASCII digits"):
        resident_id_check_char("1101051949123100X")


@st.composite
def valid_prefixes(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(sorted(PROVINCES)))
    county = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    birth = draw(st.dates(min_value=RESIDENT_ID_BIRTH_DATE_MIN, max_value=TODAY))
    sequence = draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    return province + county + birth.strftime("%Y%m%d") + sequence


@given(valid_prefixes(), st.sampled_from(RESIDENT_ID_CHECK_CHARACTERS))
def test_only_the_computed_check_char_is_valid(prefix: str, candidate: str) -> None:
    expected = resident_id_check_char(prefix)
    if candidate == expected:
        parsed = parse(prefix + candidate)
        assert parsed.number == prefix + candidate
        assert parsed.sex == ("male" if int(prefix[16]) % 2 else "female")
    else:
        message = rejected_id(prefix + candidate, ResidentIdRule.CHECK_CHARACTER)
        assert message == f"resident ID check character should be '{expected}', got '{candidate}'"


@given(st.text(max_size=40))
def test_mask_reveals_at_most_the_first_six_and_last_two(text: str) -> None:
    masked = mask_resident_id(text)
    assert len(masked) == len(text)
    if len(text) == 18:
        assert masked == text[:6] + "*" * 10 + text[-2:]
    else:
        assert set(masked) <= {"*"}


@given(st.from_regex(r"[0-9]{17}[0-9Xx]", fullmatch=True))
def test_error_messages_never_show_the_masked_digits(text: str) -> None:
    try:
        parse(text)
    except InvalidResidentIdError as error:
        message = str(error)
        assert text[6:16] not in message
        assert not re.search(r"[0-9]{7,}", message)


# --- Mobile numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("13812345678", "+8613812345678"),
        ("138 1234 5678", "+8613812345678"),
        ("138-1234-5678", "+8613812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        ("+86-13812345678", "+8613812345678"),
        ("0086 138 1234 5678", "+8613812345678"),
        ("8613812345678", "+8613812345678"),
        ("１３８１２３４５６７８", "+8613812345678"),
        ("19912345678", "+8619912345678"),
        ("+44 7700 900123", "+447700900123"),
        ("+1-415-555-2671", "+14155552671"),
    ],
)
def test_mobile_numbers_become_e164(text: str, e164: str) -> None:
    assert parse_mobile(text) == e164


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("12812345678", "11 digits starting 13 to 19"),
        ("1381234567", "11 digits starting 13 to 19"),
        ("138123456789", "11 digits starting 13 to 19"),
        ("+861012345678", "11 digits starting 13 to 19"),
        ("0086 10 1234 5678", "11 digits starting 13 to 19"),
        ("(138) 1234 5678", "only digits, spaces, hyphens"),
        ("138 1234 567a", "only digits, spaces, hyphens"),
        ("+0123456789", "never starts with 0"),
        ("0044 7700 900123", "'+' instead of '00'"),
        ("+1 2345 67", "8 to 15 digits"),
        ("++8613812345678", "only digits"),
    ],
)
def test_bad_mobile_numbers_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(InvalidMobileError, match=re.escape(reason)):
        parse_mobile(text)


def test_mobile_digit_limits() -> None:
    assert parse_mobile("+1" + "2" * (MOBILE_DIGITS_MIN - 1)) == "+1" + "2" * 7
    with pytest.raises(InvalidMobileError):
        parse_mobile("+1" + "2" * (MOBILE_DIGITS_MIN - 2))
    assert parse_mobile("+1" + "2" * (MOBILE_DIGITS_MAX - 1)) == "+1" + "2" * 14
    with pytest.raises(InvalidMobileError):
        parse_mobile("+1" + "2" * MOBILE_DIGITS_MAX)


def test_mobile_text_length_limit() -> None:
    padded = "13812345678".rjust(MOBILE_TEXT_LENGTH_MAX)
    assert parse_mobile(padded) == "+8613812345678"
    with pytest.raises(InvalidMobileError, match=f"at most {MOBILE_TEXT_LENGTH_MAX}"):
        parse_mobile(" " + padded)


def test_mask_mobile() -> None:
    assert mask_mobile("+8613812345678") == "+86 138****5678"
    assert mask_mobile("+447700900123") == "+44********23"
    assert mask_mobile("+12345678") == "+12****78"
    assert mask_mobile("13812345678") == "*" * 11
    assert mask_mobile("+1234") == "*****"


# --- E-mail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("  Zhang.Wei@Example.COM \n", "Zhang.Wei@example.com"),
        ("li+bank@sub.example.cn", "li+bank@sub.example.cn"),
        ("用户@例子.中国", "用户@xn--fsqu00a.xn--fiqs8s"),
        ("hans@MÜNCHEN.de", "hans@xn--mnchen-3ya.de"),
    ],
)
def test_email_is_normalised(text: str, normal: str) -> None:
    assert normalise_email(text) == normal


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "exactly one '@'"),
        ("zhang.example.com", "exactly one '@'"),
        ("a@b@example.com", "exactly one '@'"),
        ("zhang wei@example.com", "spaces or control"),
        ("zhang\x00@example.com", "spaces or control"),
        ("zhang\u202e@example.com", "spaces or control"),
        ("@example.com", "1 to 64 bytes"),
        ("zhang@", "at least one dot"),
        ("zhang@localhost", "at least one dot"),
        ("zhang@example..com", "letters, digits or inner hyphens"),
        ("zhang@example.com.", "letters, digits or inner hyphens"),
        ("zhang@-example.com", "letters, digits or inner hyphens"),
        ("zhang@exa_mple.com", "letters, digits or inner hyphens"),
        ("zhang@[192.0.2.1]", "letters, digits or inner hyphens"),
        ("zhang@" + "a" * 64 + ".com", "letters, digits or inner hyphens"),
        ("zhang@例子..中国", "internationalised domain"),
    ],
)
def test_bad_email_is_rejected(text: str, reason: str) -> None:
    with pytest.raises(InvalidEmailError, match=re.escape(reason)):
        normalise_email(text)


def test_email_local_part_limit() -> None:
    local = "a" * EMAIL_LOCAL_PART_LENGTH_MAX
    assert normalise_email(f"{local}@example.com") == f"{local}@example.com"
    with pytest.raises(InvalidEmailError, match="1 to 64 bytes"):
        normalise_email(f"a{local}@example.com")


def test_email_local_part_limit_counts_utf8_octets() -> None:
    assert normalise_email("用" * 21 + "@example.com")  # 63 octets
    with pytest.raises(InvalidEmailError, match="1 to 64 bytes"):
        normalise_email("用" * 22 + "@example.com")  # 22 characters, 66 octets


def test_email_length_limit() -> None:
    def address(last_label: int) -> str:
        return "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * last_label + ".com"

    assert len(address(57)) == EMAIL_LENGTH_MAX
    assert normalise_email(address(57)) == address(57)
    with pytest.raises(InvalidEmailError, match="at most 254"):
        normalise_email(address(58))


def test_email_length_limit_counts_the_encoded_domain() -> None:
    labels = ["中华人民共和国", "北京市朝阳区", "建国门外大街", "银行总部大楼", "上海市浦东新区"]
    domain = ".".join([*labels, "广州市天河区", "b" * 40, "中国"])
    text = "a" * 64 + "@" + domain
    assert len(text) < EMAIL_LENGTH_MAX < 65 + len(domain.encode("idna"))
    with pytest.raises(InvalidEmailError, match="at most 254 bytes"):
        normalise_email(text)


# --- Names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("张伟", "张伟"),
        ("  欧阳  娜娜 ", "欧阳 娜娜"),
        ("买买提·艾力", "买买提·艾力"),
        ("买买提・艾力", "买买提·艾力"),
        ("阿依古丽•买买提", "阿依古丽·买买提"),
        ("Mary-Jane O'Brien", "Mary-Jane O'Brien"),
        ("Seán O’Connor", "Seán O’Connor"),
        ("J. R. R. Tolkien", "J. R. R. Tolkien"),
        (unicodedata.normalize("NFD", "Zoë Åberg"), "Zoë Åberg"),
        ("Мария Иванова", "Мария Иванова"),
        ("محمد", "محمد"),
        ("देवनागरी", "देवनागरी"),
    ],
)
def test_names_are_normalised(text: str, normal: str) -> None:
    assert normalise_name(text) == normal


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "1 to 64"),
        ("   ", "1 to 64"),
        ("R2D2", "digits"),
        ("张伟３", "digits"),
        ("王〇", "digits"),
        ("Zhang\tWei", "control"),
        ("Zhang\u200bWei", "control"),
        ("Bob@Home", "letters of any script"),
        ("Happy 😀", "letters of any script"),
        ("...", "at least one letter"),
    ],
)
def test_bad_names_are_rejected(text: str, reason: str) -> None:
    with pytest.raises(InvalidNameError, match=re.escape(reason)):
        normalise_name(text)


def test_name_length_limit() -> None:
    assert normalise_name("a" * NAME_LENGTH_MAX) == "a" * NAME_LENGTH_MAX
    assert normalise_name("张" * NAME_LENGTH_MAX) == "张" * NAME_LENGTH_MAX
    with pytest.raises(InvalidNameError, match="1 to 64"):
        normalise_name("a" * (NAME_LENGTH_MAX + 1))
    with pytest.raises(InvalidNameError, match="1 to 64"):
        normalise_name("张" * (NAME_LENGTH_MAX + 1))


# --- Password policy -------------------------------------------------------------------

NO_BLOCKLIST: frozenset[str] = frozenset()
BLOCKLIST = frozenset({"password1", "woaini1314", "12345678"})


def accepted(password: str, *, mfa: bool = True, context: tuple[str, ...] = ()) -> None:
    check_password(password, mfa_enrolled=mfa, blocklist=BLOCKLIST, context_words=context)


def rejected(
    password: str,
    reason: PasswordRejection,
    *,
    mfa: bool = True,
    context: tuple[str, ...] = (),
    blocklist: frozenset[str] = BLOCKLIST,
) -> str:
    with pytest.raises(WeakPasswordError) as caught:
        check_password(password, mfa_enrolled=mfa, blocklist=blocklist, context_words=context)
    assert caught.value.reason is reason
    assert caught.value.code == f"password_{reason.value}"
    assert password not in str(caught.value)
    return str(caught.value)


def test_password_length_limits_with_mfa() -> None:
    assert PASSWORD_LENGTH_MIN_WITH_MFA == 8
    message = rejected("Tq8#zLm", PasswordRejection.TOO_SHORT)
    assert "at least 8 characters" in message
    assert "spaces and emoji" in message
    accepted("Tq8#zLm!")


def test_password_length_limits_without_mfa() -> None:
    assert PASSWORD_LENGTH_MIN_WITHOUT_MFA == 15
    message = rejected("violet tea 2go", PasswordRejection.TOO_SHORT, mfa=False)
    assert "at least 15 characters (8 with two-step verification turned on)" in message
    accepted("violet tea 2go!", mfa=False)
    accepted("violet tea 2go", mfa=True)


def test_password_length_maximum() -> None:
    assert PASSWORD_LENGTH_MAX == 128
    long_password = ("熊猫🐼 eats bamboo, ") * 10
    accepted(long_password[:PASSWORD_LENGTH_MAX])
    message = rejected(long_password[: PASSWORD_LENGTH_MAX + 1], PasswordRejection.TOO_LONG)
    assert "at most 128 characters" in message
    rejected("x" * (PASSWORD_INPUT_LENGTH_MAX * 10), PasswordRejection.TOO_LONG)


def test_password_length_counts_code_points_after_nfkc() -> None:
    accepted("我的密码是熊猫🐼")  # 8 code points
    rejected("我的密码是熊🐼", PasswordRejection.TOO_SHORT)  # 7
    # A family emoji is 5 code points joined by zero-width joiners.
    accepted("👨\u200d👩\u200d👧 abc")
    # 'ﬃ' (one code point) becomes 'ffi' (three) under NFKC.
    accepted("ﬃ lake!")
    rejected("ﬃlake", PasswordRejection.TOO_SHORT)


def test_passwords_need_no_composition() -> None:
    accepted("correct horse battery staple", mfa=False)
    accepted("月落乌啼霜满天，江枫渔火对愁眠。", mfa=False)
    accepted("  spaces   are fine  ", mfa=False)


@pytest.mark.parametrize(
    "password",
    ["password1", "Password1", "PASSWORD1", "woaini1314", "WoAiNi1314", "ｐａｓｓｗｏｒｄ１"],
)
def test_blocklisted_passwords_are_rejected_in_any_case_and_width(password: str) -> None:
    message = rejected(password, PasswordRejection.BLOCKLISTED)
    assert "common or leaked passwords" in message


@pytest.mark.parametrize(
    ("password", "context"),
    [
        ("张伟的密码很长很长", ("张伟",)),
        ("my Zhang Wei secret", ("Zhang Wei",)),
        ("my zhangwei secret", ("Zhang Wei",)),
        ("买买提 loves tea", ("买买提·艾力",)),
        ("hello liwei.zhang!", ("liwei.zhang",)),
        ("call 13812345678 now", ("13812345678",)),
        ("I love Zhifu bank", ()),
        ("我爱智付银行真的很好", ()),
    ],
)
def test_context_words_are_rejected(password: str, context: tuple[str, ...]) -> None:
    message = rejected(password, PasswordRejection.CONTAINS_PERSONAL_DATA, context=context)
    assert "name, e-mail, mobile number" in message


def test_short_context_words_are_ignored() -> None:
    # 'li' and 'an' are under four characters; a passphrase may contain them.
    accepted("reliable anchor", context=("Li", "An"))
    # Two Chinese characters are four columns wide and count.
    rejected("王五在此很长很长", PasswordRejection.CONTAINS_PERSONAL_DATA, context=("王五",))


def test_password_context_words_from_customer_details() -> None:
    words = password_context_words(
        name="Zhang Wei", email="Zhang.Wei@example.com", mobile="+8613812345678"
    )
    assert words == ("Zhang Wei", "Zhang.Wei", "13812345678")
    assert password_context_words(mobile="+447700900123") == ("447700900123",)
    assert password_context_words() == ()
    rejected("so 13812345678 ok", PasswordRejection.CONTAINS_PERSONAL_DATA, context=words)
    rejected("wei zhang.wei x", PasswordRejection.CONTAINS_PERSONAL_DATA, context=words)


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaa",
        "一一一一一一一一",
        "🐼🐼🐼🐼🐼🐼🐼🐼",
        "abababab",
        "abcabcabc",
        "1234123412",
        "12345678",
        "abcdefgh",
        "ABCDEFGH",
        "zyxwvuts",
        "87654321",
    ],
)
def test_repetitive_passwords_are_rejected(password: str) -> None:
    message = rejected(password, PasswordRejection.REPETITIVE, blocklist=NO_BLOCKLIST)
    assert "repeated" in message
    assert "consecutive letters or digits" in message


def test_repetition_is_judged_on_the_whole_password() -> None:
    accepted("abcde abcde!")
    accepted("abcdefgh1")
    accepted("aaaaaaab")
    rejected("abcdefghijklmno", PasswordRejection.REPETITIVE, mfa=False)


def test_rejections_are_checked_in_order() -> None:
    # '12345678' is both blocklisted and a sequence: the blocklist answers first.
    rejected("12345678", PasswordRejection.BLOCKLISTED)
    rejected("1234567", PasswordRejection.TOO_SHORT)
    rejected("zhifuzhifu", PasswordRejection.CONTAINS_PERSONAL_DATA)

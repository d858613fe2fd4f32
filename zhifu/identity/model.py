"""The identity context's domain: identity documents, contact details, names, passwords.

Pure code: standard library only, no I/O. Every ``parse_*`` / ``normalise_*``
function takes what a person typed and returns the one canonical form the rest
of the platform stores and compares, or raises the context's typed error with
a message that says what was wrong and what is allowed. Input is first
Unicode-normalised, so full-width digits typed with a Chinese input method
(``１３８…``) are read as ASCII digits.

Limits are named constants below; each has a test at the limit and one past it.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

from zhifu.identity.errors import (
    InvalidEmailError,
    InvalidMobileError,
    InvalidNameError,
    InvalidResidentIdError,
    InvalidUsernameError,
    PasswordRejection,
    ResidentIdRule,
    WeakPasswordError,
)

# --- Resident identity card numbers (GB 11643-1999) -------------------------

RESIDENT_ID_LENGTH: Final = 18
RESIDENT_ID_BIRTH_DATE_MIN: Final = date(1900, 1, 1)
# ISO 7064 MOD 11-2: weight of each of the first 17 digits, and the check
# character for each value of (weighted sum) % 11.
RESIDENT_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
RESIDENT_ID_CHECK_CHARACTERS: Final = "10X98765432"
# Visible characters of a masked resident ID: the region code and the last two.
RESIDENT_ID_MASK_HEAD: Final = 6
RESIDENT_ID_MASK_TAIL: Final = 2

# Province-level divisions of GB/T 2260: the first two digits of every resident
# ID. Only the province is checked: the county code (digits 3-6) stays on a card
# for life, while counties are merged, split and renumbered almost every year,
# so a table of today's counties would reject valid cards issued under an older
# edition.
PROVINCES: Final[dict[str, tuple[str, str]]] = {
    "11": ("北京市", "Beijing"),
    "12": ("天津市", "Tianjin"),
    "13": ("河北省", "Hebei"),
    "14": ("山西省", "Shanxi"),
    "15": ("内蒙古自治区", "Inner Mongolia"),
    "21": ("辽宁省", "Liaoning"),
    "22": ("吉林省", "Jilin"),
    "23": ("黑龙江省", "Heilongjiang"),
    "31": ("上海市", "Shanghai"),
    "32": ("江苏省", "Jiangsu"),
    "33": ("浙江省", "Zhejiang"),
    "34": ("安徽省", "Anhui"),
    "35": ("福建省", "Fujian"),
    "36": ("江西省", "Jiangxi"),
    "37": ("山东省", "Shandong"),
    "41": ("河南省", "Henan"),
    "42": ("湖北省", "Hubei"),
    "43": ("湖南省", "Hunan"),
    "44": ("广东省", "Guangdong"),
    "45": ("广西壮族自治区", "Guangxi"),
    "46": ("海南省", "Hainan"),
    "50": ("重庆市", "Chongqing"),
    "51": ("四川省", "Sichuan"),
    "52": ("贵州省", "Guizhou"),
    "53": ("云南省", "Yunnan"),
    "54": ("西藏自治区", "Xizang (Tibet)"),
    "61": ("陕西省", "Shaanxi"),
    "62": ("甘肃省", "Gansu"),
    "63": ("青海省", "Qinghai"),
    "64": ("宁夏回族自治区", "Ningxia"),
    "65": ("新疆维吾尔自治区", "Xinjiang"),
    "71": ("台湾省", "Taiwan"),
    "81": ("香港特别行政区", "Hong Kong"),
    "82": ("澳门特别行政区", "Macao"),
    # Not a province: the residence permits of Taiwan residents on the mainland
    # are numbered 830000... (the Hong Kong and Macao ones use 81 and 82).
    "83": ("台湾居民居住证", "Taiwan residents (residence permit)"),
}

_DIGITS: Final = frozenset("0123456789")

Sex = Literal["male", "female"]


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A valid 18-character resident identity card number and what it encodes."""

    number: str
    region_code: str
    birth_date: date
    sequence: str
    sex: Sex
    check_char: str

    @property
    def province(self) -> tuple[str, str]:
        """The province's name in Chinese and in English."""
        return PROVINCES[self.region_code[:2]]

    @property
    def masked(self) -> str:
        return mask_resident_id(self.number)


def resident_id_check_char(first_17_digits: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits of a resident ID."""
    if len(first_17_digits) != RESIDENT_ID_LENGTH - 1 or not _all_digits(first_17_digits):
        raise ValueError("a resident ID check character needs exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first_17_digits, RESIDENT_ID_WEIGHTS, strict=True))
    return RESIDENT_ID_CHECK_CHARACTERS[total % 11]


def mask_resident_id(number: str) -> str:
    """Show the region code and the last two characters; mask the birth date and the rest.

    Text that is not 18 characters long is masked completely: for a short
    string, the usual six-plus-two would reveal all of it.
    """
    if len(number) != RESIDENT_ID_LENGTH:
        return "*" * len(number)
    hidden = RESIDENT_ID_LENGTH - RESIDENT_ID_MASK_HEAD - RESIDENT_ID_MASK_TAIL
    return number[:RESIDENT_ID_MASK_HEAD] + "*" * hidden + number[-RESIDENT_ID_MASK_TAIL:]


def parse_resident_id(text: str, *, today: date | None = None) -> ResidentId:
    """Check a PRC resident identity card number (GB 11643-1999) and decode it.

    Surrounding whitespace is ignored, full-width characters are read as ASCII
    and a lower-case check character 'x' becomes 'X'. ``today`` (default: the
    local date) bounds the birth date. First-generation 15-digit numbers are
    rejected: those cards stopped being valid in 2013.

    Raises :class:`InvalidResidentIdError`, whose ``rule`` names the first rule
    broken, in this order: length, characters, region, birth date, check
    character.
    """
    number = unicodedata.normalize("NFKC", text).strip()
    if len(number) != RESIDENT_ID_LENGTH:
        raise InvalidResidentIdError(
            f"resident ID must be {RESIDENT_ID_LENGTH} characters, got {len(number)}",
            ResidentIdRule.LENGTH,
        )
    if number.endswith("x"):
        number = number[:-1] + "X"
    masked = mask_resident_id(number)
    if not _all_digits(number[:-1]) or not (_all_digits(number[-1]) or number[-1] == "X"):
        raise InvalidResidentIdError(
            f"resident ID {masked}: the first 17 characters must be digits "
            "and the last a digit or 'X'",
            ResidentIdRule.CHARACTERS,
        )
    if number[:2] not in PROVINCES:
        raise InvalidResidentIdError(
            f"resident ID {masked}: '{number[:2]}' is not a province code of GB/T 2260",
            ResidentIdRule.REGION,
        )
    birth_date = _resident_id_birth_date(number, masked, today or date.today())
    expected = resident_id_check_char(number[:-1])
    if number[-1] != expected:
        raise InvalidResidentIdError(
            f"resident ID check character should be '{expected}', got '{number[-1]}'",
            ResidentIdRule.CHECK_CHARACTER,
        )
    return ResidentId(
        number=number,
        region_code=number[:6],
        birth_date=birth_date,
        sequence=number[14:17],
        sex="male" if int(number[16]) % 2 == 1 else "female",
        check_char=number[17],
    )


def _resident_id_birth_date(number: str, masked: str, today: date) -> date:
    # The message never shows the date: digits 7-14 are what the mask hides.
    try:
        birth_date = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidResidentIdError(
            f"resident ID {masked}: digits 7-14 are not a real calendar date (YYYYMMDD)",
            ResidentIdRule.BIRTH_DATE,
        ) from None
    if birth_date < RESIDENT_ID_BIRTH_DATE_MIN:
        raise InvalidResidentIdError(
            f"resident ID {masked}: birth date is before {RESIDENT_ID_BIRTH_DATE_MIN.isoformat()}",
            ResidentIdRule.BIRTH_DATE,
        )
    if birth_date > today:
        raise InvalidResidentIdError(
            f"resident ID {masked}: birth date is in the future", ResidentIdRule.BIRTH_DATE
        )
    return birth_date


def _all_digits(text: str) -> bool:
    # str.isdigit() would accept other scripts' digits ('١', '߁'); only ASCII is valid here.
    return bool(text) and all(c in _DIGITS for c in text)


# --- Mobile numbers -----------------------------------------------------------

# Longer input is rejected before any parsing: a formatted number with its
# prefix, spaces and hyphens fits easily.
MOBILE_TEXT_LENGTH_MAX: Final = 32
# E.164: a number has at most 15 digits, country code included. The minimum
# is our choice: a few small territories have shorter numbers, but shorter
# input is far more often a typing mistake.
MOBILE_DIGITS_MIN: Final = 8
MOBILE_DIGITS_MAX: Final = 15
CHINA_COUNTRY_CODE: Final = "86"
CHINA_MOBILE_DIGITS: Final = 11
_CHINA_MOBILE: Final = re.compile(r"1[3-9][0-9]{9}", re.ASCII)
_MOBILE_SEPARATORS: Final = str.maketrans("", "", " -")
_CHINA_MOBILE_RULE: Final = "mainland China mobile numbers have 11 digits starting 13 to 19"


def parse_mobile(text: str) -> str:
    """Read a mobile number and return it in E.164 form (``+8613812345678``).

    Accepted: a mainland China mobile (11 digits starting 13-19) with or
    without a ``+86``, ``0086`` or ``86`` prefix; or any other number written
    with a leading ``+`` and 8 to 15 digits, whose country rules are not
    checked. Spaces and hyphens may separate the digits.

    Raises :class:`InvalidMobileError` saying which rule failed.
    """
    if len(text) > MOBILE_TEXT_LENGTH_MAX:
        raise InvalidMobileError(
            f"mobile number must be at most {MOBILE_TEXT_LENGTH_MAX} characters long"
        )
    compact = unicodedata.normalize("NFKC", text).strip().translate(_MOBILE_SEPARATORS)
    international = compact.startswith("+")
    digits = compact[1:] if international else compact
    if not digits:
        raise InvalidMobileError("mobile number is empty")
    if not _all_digits(digits):
        raise InvalidMobileError(
            "mobile number may hold only digits, spaces, hyphens and a leading '+'"
        )
    if international:
        if digits.startswith(CHINA_COUNTRY_CODE):
            return _china_mobile(digits[len(CHINA_COUNTRY_CODE) :])
        if digits.startswith("0"):
            raise InvalidMobileError("a country code never starts with 0")
        if not MOBILE_DIGITS_MIN <= len(digits) <= MOBILE_DIGITS_MAX:
            raise InvalidMobileError(
                f"an international number needs {MOBILE_DIGITS_MIN} to {MOBILE_DIGITS_MAX} "
                f"digits after '+', got {len(digits)}"
            )
        return "+" + digits
    if digits.startswith("00" + CHINA_COUNTRY_CODE):
        return _china_mobile(digits[len(CHINA_COUNTRY_CODE) + 2 :])
    china_length = len(CHINA_COUNTRY_CODE) + CHINA_MOBILE_DIGITS
    if digits.startswith(CHINA_COUNTRY_CODE) and len(digits) == china_length:
        return _china_mobile(digits[len(CHINA_COUNTRY_CODE) :])
    if digits.startswith("00"):
        raise InvalidMobileError("write international numbers with '+' instead of '00'")
    return _china_mobile(digits)


def _china_mobile(national: str) -> str:
    if not _CHINA_MOBILE.fullmatch(national):
        raise InvalidMobileError(
            f"{_CHINA_MOBILE_RULE}; other countries' numbers need a leading '+'"
        )
    return "+" + CHINA_COUNTRY_CODE + national


def mask_mobile(e164: str) -> str:
    """Mask a number from :func:`parse_mobile`: ``+86 138****5678`` for mainland China.

    Other numbers keep '+', their first two and last two digits. Anything not
    in E.164 form is masked completely.
    """
    digits = e164[1:]
    if not e164.startswith("+") or not _all_digits(digits):
        return "*" * len(e164)
    china = "+" + CHINA_COUNTRY_CODE
    if e164.startswith(china) and len(digits) == len(CHINA_COUNTRY_CODE) + CHINA_MOBILE_DIGITS:
        national = e164[len(china) :]
        return f"{china} {national[:3]}****{national[-4:]}"
    if len(digits) < MOBILE_DIGITS_MIN:
        return "*" * len(e164)
    return "+" + digits[:2] + "*" * (len(digits) - 4) + digits[-2:]


# --- E-mail addresses -----------------------------------------------------------

# RFC 5321 limits, in octets (UTF-8 for an internationalised local part).
EMAIL_LOCAL_PART_LENGTH_MAX: Final = 64
EMAIL_LENGTH_MAX: Final = 254
EMAIL_DOMAIN_LABEL_LENGTH_MAX: Final = 63
_DOMAIN_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", re.ASCII)


def normalise_email(text: str) -> str:
    """Return the canonical form of an e-mail address.

    Surrounding whitespace is trimmed and the address NFC-normalised. The local
    part keeps its case (RFC 5321 lets a server tell ``Li`` from ``li``); the
    domain is lower-cased and, when it is not ASCII, encoded with IDNA
    (``用户@例子.中国`` becomes ``用户@xn--fsqu00a.xn--fiqs8s``). The standard
    library's codec implements IDNA 2003, which maps a few characters (such as
    'ß') differently from IDNA 2008; such domains are rare in practice.

    Raises :class:`InvalidEmailError` when there is not exactly one '@', the
    address holds whitespace or control characters, the local part is empty or
    over 64 octets, the domain is not a dotted host name, or the whole address
    is over 254 octets.
    """
    address = unicodedata.normalize("NFC", text).strip()
    # Octets are never fewer than characters, so this only skips hopeless input early.
    if len(address) > EMAIL_LENGTH_MAX:
        raise InvalidEmailError(f"e-mail address must be at most {EMAIL_LENGTH_MAX} characters")
    if any(_is_space_or_control(c) for c in address):
        raise InvalidEmailError("e-mail address cannot contain spaces or control characters")
    if address.count("@") != 1:
        raise InvalidEmailError("e-mail address must contain exactly one '@'")
    local, domain = address.split("@")
    local_octets = len(local.encode("utf-8"))
    if not 1 <= local_octets <= EMAIL_LOCAL_PART_LENGTH_MAX:
        raise InvalidEmailError(
            f"the part before '@' must be 1 to {EMAIL_LOCAL_PART_LENGTH_MAX} bytes long"
        )
    ascii_domain = _ascii_domain(domain)
    if local_octets + 1 + len(ascii_domain) > EMAIL_LENGTH_MAX:
        raise InvalidEmailError(f"e-mail address must be at most {EMAIL_LENGTH_MAX} bytes long")
    return f"{local}@{ascii_domain}"


def _ascii_domain(domain: str) -> str:
    domain = domain.lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidEmailError(
                "the domain after '@' is not a valid internationalised domain name"
            ) from None
    labels = domain.split(".")
    if len(labels) < 2:
        raise InvalidEmailError("the domain after '@' needs at least one dot (example.com)")
    for label in labels:
        if len(label) > EMAIL_DOMAIN_LABEL_LENGTH_MAX or not _DOMAIN_LABEL.fullmatch(label):
            raise InvalidEmailError(
                "each part of the domain must be 1 to 63 letters, digits or inner hyphens"
            )
    return domain


def _is_space_or_control(char: str) -> bool:
    # Cc: control characters; Cf: invisible format characters such as the
    # right-to-left override, which can make an address look like another one.
    return char.isspace() or unicodedata.category(char) in {"Cc", "Cf", "Zs", "Zl", "Zp"}


# --- Names ------------------------------------------------------------------------

NAME_LENGTH_MAX: Final = 64
# Punctuation a name may hold besides letters and spaces. '·' (U+00B7) separates
# the parts of transliterated names of ethnic minorities (买买提·艾力) on resident
# ID cards; ’ is the typographic apostrophe (O’Brien).
NAME_PUNCTUATION: Final = frozenset(" ·-'’.")
# Look-alikes of '·' that input methods produce; read as '·' so the name matches the ID card.
_MIDDLE_DOTS: Final = str.maketrans(dict.fromkeys("・･•‧∙⋅", "·"))
_SPACES: Final = re.compile(r"\s+")


def normalise_name(text: str) -> str:
    """Return the canonical form of a person's name.

    NFC-normalised, runs of whitespace (the full-width space included) become
    one space, surrounding spaces are trimmed, and middle-dot look-alikes
    become '·'. Letters of any script (with their combining marks) are allowed,
    and spaces, '·', hyphens, apostrophes and periods; the name must hold at
    least one letter.

    Raises :class:`InvalidNameError` for control characters, digits, other
    symbols, or a length outside 1..64 characters (code points).
    """
    name = unicodedata.normalize("NFC", text)
    if any(unicodedata.category(c) in {"Cc", "Cf"} for c in name):
        raise InvalidNameError("name cannot contain control or invisible formatting characters")
    name = _SPACES.sub(" ", name).strip().translate(_MIDDLE_DOTS)
    if not 1 <= len(name) <= NAME_LENGTH_MAX:
        raise InvalidNameError(f"name must be 1 to {NAME_LENGTH_MAX} characters long")
    for char in name:
        category = unicodedata.category(char)
        if category.startswith("N"):
            raise InvalidNameError("name cannot contain digits")
        if not (category.startswith(("L", "M")) or char in NAME_PUNCTUATION):
            raise InvalidNameError(
                "name may hold letters of any script, spaces, '·', hyphens, apostrophes and periods"
            )
    if not any(unicodedata.category(c).startswith("L") for c in name):
        raise InvalidNameError("name must contain at least one letter")
    return name


# --- Password policy (NIST SP 800-63B rev. 4, OWASP ASVS 5 §6.2) -------------------

PASSWORD_LENGTH_MIN_WITH_MFA: Final = 8
PASSWORD_LENGTH_MIN_WITHOUT_MFA: Final = 15
PASSWORD_LENGTH_MAX: Final = 128
# Raw input over this many code points is too long before any normalising:
# NFKC composes at most a few code points into one, so it could never come
# down to PASSWORD_LENGTH_MAX. Bounds the work an attacker can ask for.
PASSWORD_INPUT_LENGTH_MAX: Final = 8 * PASSWORD_LENGTH_MAX
# A context word shorter than this (in display columns: a Chinese character
# counts two) is too common a fragment to forbid: 'li' or 'an' would reject
# half of all passphrases, while '张伟' or '智付' is worth forbidding.
CONTEXT_WORD_WIDTH_MIN: Final = 4
# Words that every password is checked against, whoever the customer is.
SERVICE_CONTEXT_WORDS: Final = ("zhifu", "智付")
# A password that repeats a unit of at most this many characters ('aaaaaaaa',
# 'abababab', '123123123') is repetitive.
REPEATED_UNIT_LENGTH_MAX: Final = 4
_WORD_SEPARATORS: Final = re.compile(r"[\W_]+")
_ALLOWED: Final = "any characters are allowed, including spaces and emoji"


def normalise_password(password: str) -> str:
    """NFKC, so that the same password typed on different keyboards or input methods matches."""
    return unicodedata.normalize("NFKC", password)


def check_password(
    password: str,
    *,
    mfa_enrolled: bool,
    blocklist: Container[str],
    context_words: Iterable[str] = (),
) -> None:
    """Check a new password against the policy; return None when it is acceptable.

    Length is counted in Unicode code points after NFKC normalisation: at least
    8 with multi-factor authentication, 15 without, at most 128. There are no
    composition rules. The password is compared in NFKC + casefold form with
    ``blocklist`` (which must hold casefolded entries), with the context words
    (the customer's name, e-mail local part and mobile digits; see
    :func:`password_context_words`) and with :data:`SERVICE_CONTEXT_WORDS`.

    Raises :class:`WeakPasswordError`; its ``reason`` is ``too_short``,
    ``too_long``, ``blocklisted``, ``contains_personal_data`` or
    ``repetitive``, checked in that order. The message never repeats the
    password.
    """
    normalised = normalise_password(password[: PASSWORD_INPUT_LENGTH_MAX + 1])
    length_min = PASSWORD_LENGTH_MIN_WITH_MFA if mfa_enrolled else PASSWORD_LENGTH_MIN_WITHOUT_MFA
    if len(normalised) < length_min:
        with_mfa = f" ({PASSWORD_LENGTH_MIN_WITH_MFA} with two-step verification turned on)"
        raise WeakPasswordError(
            f"password must be at least {length_min} characters"
            f"{'' if mfa_enrolled else with_mfa}; {_ALLOWED}",
            PasswordRejection.TOO_SHORT,
        )
    if len(normalised) > PASSWORD_LENGTH_MAX:
        raise WeakPasswordError(
            f"password must be at most {PASSWORD_LENGTH_MAX} characters; {_ALLOWED}",
            PasswordRejection.TOO_LONG,
        )
    folded = normalised.casefold()
    if folded in blocklist:
        raise WeakPasswordError(
            "this password appears in lists of common or leaked passwords; "
            "choose another, such as a few unrelated words",
            PasswordRejection.BLOCKLISTED,
        )
    words = _context_fragments((*SERVICE_CONTEXT_WORDS, *context_words))
    if any(word in folded for word in words):
        raise WeakPasswordError(
            "password must not contain your name, e-mail, mobile number or the bank's name",
            PasswordRejection.CONTAINS_PERSONAL_DATA,
        )
    if _is_repetitive(folded):
        raise WeakPasswordError(
            "password must not be one character or a short pattern repeated, "
            "nor a run of consecutive letters or digits",
            PasswordRejection.REPETITIVE,
        )


def password_context_words(
    *, name: str | None = None, email: str | None = None, mobile: str | None = None
) -> tuple[str, ...]:
    """Words a customer's password must not contain: name, e-mail local part, mobile.

    ``mobile`` is an E.164 number; a mainland China number contributes its 11
    national digits, which is how people write it inside a password.
    """
    words: list[str] = []
    if name:
        words.append(name)
    if email:
        words.append(email.rpartition("@")[0] or email)
    if mobile:
        digits = mobile.lstrip("+")
        china = CHINA_COUNTRY_CODE
        if digits.startswith(china) and len(digits) == len(china) + CHINA_MOBILE_DIGITS:
            digits = digits[len(china) :]
        words.append(digits)
    return tuple(words)


def _context_fragments(context_words: Iterable[str]) -> frozenset[str]:
    """Each word casefolded, whole, without separators, and split at them, if wide enough."""
    fragments: set[str] = set()
    for word in context_words:
        folded = normalise_password(word).casefold().strip()
        candidates = {folded, _WORD_SEPARATORS.sub("", folded)}
        candidates.update(_WORD_SEPARATORS.split(folded))
        fragments.update(c for c in candidates if _display_width(c) >= CONTEXT_WORD_WIDTH_MIN)
    return frozenset(fragments)


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in {"W", "F"} else 1 for c in text)


def _is_repetitive(text: str) -> bool:
    """A short unit repeated, or a run of consecutive code points ('abcdefgh', '87654321')."""
    for unit in range(1, REPEATED_UNIT_LENGTH_MAX + 1):
        if len(text) >= 2 * unit and all(text[i] == text[i - unit] for i in range(unit, len(text))):
            return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return steps in ({1}, {-1})


def mask_email(email: str) -> str:
    """The first character of the local part, then ``***``, then the domain."""
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "*" * len(email)
    return f"{local[0]}***@{domain}"


# --- staff usernames --------------------------------------------------------------------

USERNAME_LENGTH_MIN: Final = 3
USERNAME_LENGTH_MAX: Final = 32
_USERNAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)


def normalise_username(text: str) -> str:
    """A staff username: 3 to 32 of a-z, 0-9, '.', '_' and '-', starting with a
    letter or digit; upper case is folded to lower.

    Raises :class:`InvalidUsernameError` saying what is allowed.
    """
    username = text.strip().lower()
    if not USERNAME_LENGTH_MIN <= len(username) <= USERNAME_LENGTH_MAX or not _USERNAME.fullmatch(
        username
    ):
        raise InvalidUsernameError(
            f"username must be {USERNAME_LENGTH_MIN} to {USERNAME_LENGTH_MAX} characters of"
            " a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        )
    return username


# --- device and confirmation messages ------------------------------------------------------

CONFIRMATION_DOMAIN: Final = b"zhifu-confirmation-v1|"
CONFIRMATION_URI_PREFIX: Final = "zhifu://confirm"


def confirmation_message(challenge_id: bytes, nonce: str, action: str, binding: bytes) -> bytes:
    """What a bound device signs to approve one QR confirmation.

    The challenge id and the nonce (which only the QR code carries) make it
    one-time; the action and the operation digest make it good for exactly the
    operation the customer saw on the phone.
    """
    return b"|".join(
        (CONFIRMATION_DOMAIN + challenge_id, nonce.encode("ascii"), action.encode("ascii"), binding)
    )


def confirmation_uri(challenge_id: str, nonce: str) -> str:
    """The text in the QR code the customer's phone scans."""
    return f"{CONFIRMATION_URI_PREFIX}?id={challenge_id}&n={nonce}"

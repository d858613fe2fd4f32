"""EMVCo merchant-presented QR codes: parse and check a payload, or build one.

Design note
-----------
The codec follows the EMV QR Code Specification for Payment Systems,
Merchant-Presented Mode (EMV QRCPS MPM) v1.1. It is pure: text in, a value or
text out. It imports the standard library and ``zhifu.money`` only; the image
helpers at the end import the QR drawing module when they are called.

A payload is a run of data objects, each an ID (two digits), a length (two
digits) and that many characters of value. Rules the parser checks, in this
order; the first broken one raises :class:`QrCodeError` naming the field:

1. The payload is text of at most ``PAYLOAD_LENGTH_MAX`` (512) characters.
   Lengths count characters of the decoded text, not UTF-8 bytes: the
   language template's ``0104最佳运输`` is four characters long.
2. Every data object is complete (no characters left over that form no
   object), no length is ``00``, and no ID appears twice at one level.
3. The Payload Format Indicator (00) comes first; the CRC (63) comes last,
   so nothing may follow it.
4. The CRC is four upper-case hex digits: CRC-16/CCITT-FALSE (polynomial
   0x1021, initial value 0xFFFF, no reflection, no final XOR) over the UTF-8
   bytes of the payload up to and including ``6304``. ``parse(payload,
   verify_crc=False)`` reports a mismatch as ``crc_valid=False`` instead of
   raising; every other rule is still checked.
5. Each value has its length and character set: ``N`` fields are digits;
   ``ans`` fields (59, 60, the additional data 01-09, a template's GUI, ...)
   are printable ASCII, the EMV common character set, so names in other
   scripts belong in the Merchant Information—Language Template (64). Its
   names, network-specific sub-fields and the raw templates may be any text
   without control characters.
6. Mandatory: 00 (``"01"``), at least one Merchant Account Information
   object (02-51), 52 (merchant category code, 4 digits), 53 (ISO 4217
   numeric currency), 58 (country, two upper-case letters), 59 (merchant
   name, at most 25), 60 (merchant city, at most 15), 63 (CRC). Optional:
   01 (``"11"`` static or ``"12"`` dynamic), 54 (amount), 55-57 (tip or
   convenience fee), 61 (postal code), 62 (additional data), 64 (language
   template) and the templates 65-99, which are kept raw.
7. IDs 02-25 are primitive account values reserved for card networks; IDs
   26-51 are templates whose sub-field 00 is a globally unique identifier
   (a reverse domain name or an AID, at most 32 characters).
8. An amount (54, 56) is plain decimal text of at most 13 characters,
   greater than zero, with no more decimals than its currency's exponent;
   it becomes ``int`` minor units through ``zhifu.money``. An unknown
   currency number is reported as it is (``currency`` is ``None``), but then
   an amount cannot be checked and is refused.
9. A fixed convenience fee (56) appears exactly when the tip indicator (55)
   is ``02``, a percentage one (57, 0.01 to 99.99) exactly when it is ``03``.

Building (:func:`build_merchant_qr`) composes the data objects in ascending
ID order with the CRC last and then parses the result, so everything built
obeys the same rules and ``parse(build_merchant_qr(**fields))`` gives those
fields back.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar

from zhifu.money import CURRENCIES, Currency, Money, MoneyError, parse_amount_minor
from zhifu.money import currency as currency_by_code
from zhifu.payments.errors import QrCodeError

PAYLOAD_LENGTH_MAX: Final = 512
VALUE_LENGTH_MAX: Final = 99  # what two length digits can say
MERCHANT_NAME_LENGTH_MAX: Final = 25
MERCHANT_CITY_LENGTH_MAX: Final = 15
POSTAL_CODE_LENGTH_MAX: Final = 10
AMOUNT_LENGTH_MAX: Final = 13
CONVENIENCE_FEE_PERCENTAGE_LENGTH_MAX: Final = 5
GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX: Final = 32
ADDITIONAL_DATA_LENGTH_MAX: Final = 25
CONSUMER_DATA_REQUEST_LENGTH_MAX: Final = 3
ALTERNATE_NAME_LENGTH_MAX: Final = 25
ALTERNATE_CITY_LENGTH_MAX: Final = 15
_PREVIEW_LENGTH_MAX: Final = 40  # error messages echo at most this much of a value

PAYLOAD_FORMAT_INDICATOR: Final = "01"
CRC_PREFIX: Final = "6304"  # the CRC's ID and length, covered by the CRC itself
CRC_TEXT_LENGTH: Final = 4

InitiationMethod = Literal["static", "dynamic"]
TipIndicator = Literal["prompt", "convenience_fee_fixed", "convenience_fee_percentage"]

_INITIATION_CODES: Final[Mapping[str, InitiationMethod]] = MappingProxyType(
    {"11": "static", "12": "dynamic"}
)
_TIP_CODES: Final[Mapping[str, TipIndicator]] = MappingProxyType(
    {"01": "prompt", "02": "convenience_fee_fixed", "03": "convenience_fee_percentage"}
)
# Sub-fields 01-09 of the Additional Data Field Template (62), by the names
# MerchantQr.additional_data uses; other sub-fields keep their two-digit ID.
ADDITIONAL_DATA_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "01": "bill_number",
        "02": "mobile_number",
        "03": "store_label",
        "04": "loyalty_number",
        "05": "reference_label",
        "06": "customer_label",
        "07": "terminal_label",
        "08": "purpose_of_transaction",
        "09": "additional_consumer_data_request",
    }
)
_ADDITIONAL_DATA_IDS: Final = MappingProxyType({v: k for k, v in ADDITIONAL_DATA_NAMES.items()})
_CONSUMER_DATA_LETTERS: Final = frozenset("AME")  # address, mobile, e-mail
_CURRENCY_BY_NUMERIC: Final[Mapping[str, Currency]] = MappingProxyType(
    {unit.numeric: unit for unit in CURRENCIES.values()}
)

_DIGITS: Final = re.compile(r"[0-9]+")
_HEADER: Final = re.compile(r"[0-9]{4}")  # two-digit ID, two-digit length
_PRINTABLE_ASCII: Final = re.compile(r"[\x20-\x7e]+")
_COUNTRY: Final = re.compile(r"[A-Z]{2}")
_LANGUAGE: Final = re.compile(r"[A-Za-z]{2}")
_CRC_HEX: Final = re.compile(r"[0-9A-F]{4}")
_PERCENTAGE: Final = re.compile(r"[0-9]{1,2}(?:\.[0-9]{1,2})?")


# --- values ----------------------------------------------------------------------


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class MerchantAccount:
    """One Merchant Account Information object (IDs 02-51).

    IDs 02-25 are primitive: ``value`` holds the network's account text and
    ``gui`` is ``None``. IDs 26-51 are templates: ``gui`` is sub-field 00 and
    ``fields`` the other sub-fields by two-digit ID; ``value`` is ``None``.
    """

    id: str
    gui: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    value: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", _frozen(self.fields))

    @classmethod
    def primitive(cls, id: str, value: str) -> MerchantAccount:
        """A network's account value at ``id`` (02-25), e.g. a UnionPay merchant id at 15."""
        return cls(id, value=value)

    @classmethod
    def template(cls, id: str, gui: str, fields: Mapping[str, str]) -> MerchantAccount:
        """A template at ``id`` (26-51) with globally unique identifier ``gui``."""
        return cls(id, gui=gui, fields=fields)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "gui": self.gui, "fields": dict(self.fields), "value": self.value}


@dataclass(frozen=True, slots=True)
class AlternateLanguage:
    """The Merchant Information—Language Template (64).

    ``language`` is an ISO 639 two-letter code (00), ``name`` the merchant
    name (01) and ``city`` the city (02) in that language; ``rfu`` keeps
    sub-fields 03-99, which EMVCo reserves for future use, by ID.
    """

    language: str
    name: str
    city: str | None = None
    rfu: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rfu", _frozen(self.rfu))

    def as_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "name": self.name,
            "city": self.city,
            "rfu": dict(self.rfu),
        }


@dataclass(frozen=True, slots=True)
class MerchantQr:
    """A decoded merchant-presented QR code. Amounts are ``int`` minor units of ``currency``.

    ``currency`` is the ISO 4217 alphabetic code, or ``None`` when
    ``currency_numeric`` is not a known currency with minor units.
    ``additional_data`` maps the names of ``ADDITIONAL_DATA_NAMES`` (and the
    two-digit ID of any other sub-field) to values; ``unreserved_templates``
    keeps IDs 65-99 raw. ``crc_valid`` is ``False`` only from a lenient parse.
    """

    format_indicator: str
    initiation_method: InitiationMethod | None
    merchant_accounts: tuple[MerchantAccount, ...]
    merchant_category_code: str
    currency: str | None
    currency_numeric: str
    amount_minor: int | None
    tip_indicator: TipIndicator | None
    convenience_fee_fixed_minor: int | None
    convenience_fee_percentage: str | None
    country: str
    merchant_name: str
    merchant_city: str
    postal_code: str | None
    additional_data: Mapping[str, str]
    alternate_language: AlternateLanguage | None
    unreserved_templates: Mapping[str, str]
    crc: str
    crc_valid: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "additional_data", _frozen(self.additional_data))
        object.__setattr__(self, "unreserved_templates", _frozen(self.unreserved_templates))

    def amount_text(self) -> str | None:
        """The amount as decimal text with the currency's decimals ('23.72'), or ``None``."""
        return _decimal_text(self.amount_minor, self.currency)

    def as_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values; amounts also as decimal text."""
        language = self.alternate_language
        return {
            "format_indicator": self.format_indicator,
            "initiation_method": self.initiation_method,
            "merchant_accounts": [account.as_dict() for account in self.merchant_accounts],
            "merchant_category_code": self.merchant_category_code,
            "currency": self.currency,
            "currency_numeric": self.currency_numeric,
            "amount_minor": self.amount_minor,
            "amount": self.amount_text(),
            "tip_indicator": self.tip_indicator,
            "convenience_fee_fixed_minor": self.convenience_fee_fixed_minor,
            "convenience_fee_fixed": _decimal_text(self.convenience_fee_fixed_minor, self.currency),
            "convenience_fee_percentage": self.convenience_fee_percentage,
            "country": self.country,
            "merchant_name": self.merchant_name,
            "merchant_city": self.merchant_city,
            "postal_code": self.postal_code,
            "additional_data": dict(self.additional_data),
            "alternate_language": None if language is None else language.as_dict(),
            "unreserved_templates": dict(self.unreserved_templates),
            "crc": self.crc,
            "crc_valid": self.crc_valid,
        }


def _decimal_text(amount_minor: int | None, code: str | None) -> str | None:
    if amount_minor is None or code is None:
        return None
    exponent = currency_by_code(code).exponent
    whole, fraction = divmod(amount_minor, 10**exponent)
    return f"{whole}.{fraction:0{exponent}d}" if exponent else str(whole)


# --- field rules ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    """A field's name for messages, its character set and its length bounds."""

    name: str
    # N: digits; ans: printable ASCII; S: any text without control characters;
    # T: a template, whose sub-fields are checked one by one.
    charset: Literal["N", "ans", "S", "T"]
    length_min: int
    length_max: int


def _rule(name: str, charset: Literal["N", "ans", "S", "T"], low: int, high: int) -> _Rule:
    return _Rule(name, charset, low, high)


_TOP_RULES: Final[Mapping[str, _Rule]] = MappingProxyType(
    {
        "00": _rule("payload format indicator", "N", 2, 2),
        "01": _rule("point of initiation method", "N", 2, 2),
        "52": _rule("merchant category code", "N", 4, 4),
        "53": _rule("transaction currency", "N", 3, 3),
        "54": _rule("transaction amount", "ans", 1, AMOUNT_LENGTH_MAX),
        "55": _rule("tip or convenience indicator", "N", 2, 2),
        "56": _rule("convenience fee fixed", "ans", 1, AMOUNT_LENGTH_MAX),
        "57": _rule("convenience fee percentage", "ans", 1, CONVENIENCE_FEE_PERCENTAGE_LENGTH_MAX),
        "58": _rule("country code", "ans", 2, 2),
        "59": _rule("merchant name", "ans", 1, MERCHANT_NAME_LENGTH_MAX),
        "60": _rule("merchant city", "ans", 1, MERCHANT_CITY_LENGTH_MAX),
        "61": _rule("postal code", "ans", 1, POSTAL_CODE_LENGTH_MAX),
        "62": _rule("additional data field template", "T", 1, VALUE_LENGTH_MAX),
        "63": _rule("CRC", "ans", CRC_TEXT_LENGTH, CRC_TEXT_LENGTH),
        "64": _rule("merchant information language template", "T", 1, VALUE_LENGTH_MAX),
    }
)
_ADDITIONAL_RULES: Final[Mapping[str, _Rule]] = MappingProxyType(
    {
        tag: _rule(name.replace("_", " "), "ans", 1, ADDITIONAL_DATA_LENGTH_MAX)
        for tag, name in ADDITIONAL_DATA_NAMES.items()
    }
    | {"09": _rule("additional consumer data request", "ans", 1, CONSUMER_DATA_REQUEST_LENGTH_MAX)}
)
_LANGUAGE_RULES: Final[Mapping[str, _Rule]] = MappingProxyType(
    {
        "00": _rule("language preference", "ans", 2, 2),
        "01": _rule("merchant name, alternate language", "S", 1, ALTERNATE_NAME_LENGTH_MAX),
        "02": _rule("merchant city, alternate language", "S", 1, ALTERNATE_CITY_LENGTH_MAX),
    }
)


def _top_rule(tag: str) -> _Rule:
    found = _TOP_RULES.get(tag)
    if found is not None:
        return found
    number = int(tag)
    if 2 <= number <= 25:
        return _rule("merchant account information", "ans", 1, VALUE_LENGTH_MAX)
    if 26 <= number <= 51:
        return _rule("merchant account information template", "T", 1, VALUE_LENGTH_MAX)
    if 65 <= number <= 79:
        return _rule("template reserved for EMVCo", "S", 1, VALUE_LENGTH_MAX)
    return _rule("unreserved template", "S", 1, VALUE_LENGTH_MAX)


def _rule_for(path: str) -> _Rule:
    """The rule of ``path``: a top-level ID ('59') or a sub-field ('62.01')."""
    if not re.fullmatch(r"[0-9]{2}(\.[0-9]{2})?", path):
        return _rule("payload", "S", 1, PAYLOAD_LENGTH_MAX)
    parent, _, tag = path.partition(".")
    if not tag:
        return _top_rule(parent)
    if parent == "62":
        return _ADDITIONAL_RULES.get(tag) or _rule(
            "additional data field", "S", 1, VALUE_LENGTH_MAX
        )
    if parent == "64":
        return _LANGUAGE_RULES.get(tag) or _rule(
            "language template field", "S", 1, VALUE_LENGTH_MAX
        )
    if tag == "00":
        return _rule("globally unique identifier", "ans", 1, GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX)
    return _rule("payment network specific field", "S", 1, VALUE_LENGTH_MAX)


# Fields that are groups of IDs, or the whole payload, named in messages as they are.
_GROUP_SUBJECTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "payload": "payload",
        "02-51": "02-51 (merchant account information)",
        "65-99": "65-99 (reserved and unreserved templates)",
    }
)


def _error(path: str, problem: str) -> QrCodeError:
    """A QrCodeError whose message starts with the field and its name."""
    subject = _GROUP_SUBJECTS.get(path) or f"{path} ({_rule_for(path).name})"
    return QrCodeError(path, f"{subject} {problem}")


def _preview(value: str) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_LENGTH_MAX else text[: _PREVIEW_LENGTH_MAX - 3] + "..."


def _check(path: str, value: str) -> str:
    """``value`` after checking the length and character set of field ``path``."""
    rule = _rule_for(path)
    if not value:
        raise _error(path, "is empty; a field that is present must have a value")
    if rule.length_min == rule.length_max and len(value) != rule.length_max:
        raise _error(path, f"must be exactly {rule.length_max} characters long, got {len(value)}")
    if len(value) > rule.length_max:
        raise _error(
            path, f"is {len(value)} characters long; at most {rule.length_max} are allowed"
        )
    if rule.charset == "N" and not _DIGITS.fullmatch(value):
        raise _error(path, f"must be digits 0-9, got {_preview(value)}")
    if rule.charset == "ans" and not _PRINTABLE_ASCII.fullmatch(value):
        hint = "; text in other scripts goes in the language template (64)"
        raise _error(
            path,
            "must be printable ASCII (the EMV common character set, space to '~'),"
            f" got {_preview(value)}{hint if path in {'59', '60'} else ''}",
        )
    if rule.charset == "S":
        _check_no_controls(path, value)
    return value


def _check_no_controls(path: str, value: str) -> None:
    for index, char in enumerate(value):
        if unicodedata.category(char) in {"Cc", "Cs"}:
            raise _error(
                path,
                f"contains the control character U+{ord(char):04X} at position {index};"
                " only printable text is allowed",
            )


# --- CRC -------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data``: polynomial 0x1021, initial 0xFFFF, no reflection.

    The check value, of ``b"123456789"``, is 0x29B1.
    """
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def payload_crc(payload_without_crc_value: str) -> str:
    """The CRC text (4 upper-case hex digits) of a payload that ends with ``6304``."""
    return f"{crc16_ccitt_false(payload_without_crc_value.encode('utf-8')):04X}"


# --- parsing ---------------------------------------------------------------------


def _split(text: str, parent: str | None) -> list[tuple[str, str]]:
    """``text`` as (ID, value) pairs; ``parent`` is the template's ID, or None at the top."""
    elements: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        header = text[position : position + 4]
        if not _HEADER.fullmatch(header):
            raise _misaligned(text, position, parent, elements)
        tag, length = header[:2], int(header[2:])
        path = tag if parent is None else f"{parent}.{tag}"
        value = text[position + 4 : position + 4 + length]
        if length == 0:
            raise _error(path, "has length 00; a field that is present must have a value")
        if len(value) < length:
            raise _error(
                path,
                f"declares length {length} but only {len(value)} characters follow;"
                " the payload is cut short or a length is wrong",
            )
        if any(seen == tag for seen, _ in elements):
            raise _error(path, "appears twice; each ID may appear once")
        elements.append((tag, value))
        position += 4 + length
    return elements


def _misaligned(
    text: str, position: int, parent: str | None, elements: Sequence[tuple[str, str]]
) -> QrCodeError:
    """Characters that are no ID and length: most often the previous field's length is wrong."""
    found = _preview(text[position : position + 4])
    if not elements:
        where = parent or "payload"
        return _error(where, f"starts with {found}, not a two-digit ID and a two-digit length")
    previous = elements[-1][0] if parent is None else f"{parent}.{elements[-1][0]}"
    return _error(
        previous,
        f"is followed by {found} at position {position}, not a two-digit ID and a two-digit"
        f" length: either the length of {previous} ({len(elements[-1][1]):02d}) is wrong or"
        " characters follow the last field",
    )


def parse(payload: str, *, verify_crc: bool = True) -> MerchantQr:
    """Decode and check an EMVCo merchant-presented payload (the text inside the QR code).

    Raises :class:`QrCodeError`, naming the field, at the first broken rule
    of the design note. With ``verify_crc=False`` a CRC that does not match
    gives ``crc_valid=False`` instead; a CRC that is missing, misplaced or not
    four characters long still raises.
    """
    _check_payload_text(payload)
    elements = _split(payload, None)
    _check_framing(elements)
    crc = _check("63", elements[-1][1])
    crc_valid = _CRC_HEX.fullmatch(crc) is not None and crc == payload_crc(
        payload[:-CRC_TEXT_LENGTH]
    )
    if verify_crc and not crc_valid:
        raise _crc_error(payload, crc)
    for tag, value in elements:
        _check(tag, value)
    return _decode(elements, crc, crc_valid)


def _check_payload_text(payload: str) -> None:
    if not isinstance(payload, str):
        raise _error("payload", f"must be text, got {type(payload).__name__}")
    if not payload:
        raise _error("payload", "is empty")
    if len(payload) > PAYLOAD_LENGTH_MAX:
        raise _error(
            "payload",
            f"is {len(payload)} characters long; at most {PAYLOAD_LENGTH_MAX} are allowed",
        )
    for index, char in enumerate(payload):
        if unicodedata.category(char) == "Cs":
            raise _error(
                "payload",
                f"is not valid Unicode text: a lone surrogate U+{ord(char):04X}"
                f" at position {index}",
            )


def _check_framing(elements: Sequence[tuple[str, str]]) -> None:
    """00 first and 63 last."""
    tags = [tag for tag, _ in elements]
    if "00" not in tags:
        raise _error("00", "is missing; every payload starts with it")
    if tags[0] != "00":
        raise _error("00", f"must be the first field, but {tags[0]} comes before it")
    if "63" not in tags:
        raise _error("63", "is missing; every payload ends with it")
    if tags[-1] != "63":
        raise _error("63", f"must be the last field, but {tags[-1]} follows it")


def _crc_error(payload: str, crc: str) -> QrCodeError:
    expected = payload_crc(payload[:-CRC_TEXT_LENGTH])
    if _CRC_HEX.fullmatch(crc) is None:
        return _error(
            "63",
            f"must be four upper-case hexadecimal digits, got {_preview(crc)}"
            f" (the payload's CRC is {expected})",
        )
    return _error(
        "63",
        f"is {crc} but the payload's CRC-16/CCITT-FALSE is {expected}:"
        " the code is damaged or was altered",
    )


def _required(fields: Mapping[str, str], tag: str) -> str:
    value = fields.get(tag)
    if value is None:
        raise _error(tag, "is missing; it is mandatory")
    return value


def _decode(elements: Sequence[tuple[str, str]], crc: str, crc_valid: bool) -> MerchantQr:
    """The checked fields as a MerchantQr; mandatory fields are looked for in ID order."""
    fields = dict(elements)
    format_indicator = _required(fields, "00")
    if format_indicator != PAYLOAD_FORMAT_INDICATOR:
        raise _error(
            "00", f"must be {PAYLOAD_FORMAT_INDICATOR!r}, got {_preview(format_indicator)}"
        )
    initiation_method = _lookup_code("01", fields.get("01"), _INITIATION_CODES)
    merchant_accounts = _merchant_accounts(elements)
    merchant_category_code = _required(fields, "52")
    currency_numeric = _required(fields, "53")
    unit = _CURRENCY_BY_NUMERIC.get(currency_numeric)
    amount_minor = _amount("54", fields.get("54"), unit, currency_numeric)
    tip_indicator = _lookup_code("55", fields.get("55"), _TIP_CODES)
    fee_fixed, fee_percentage = _convenience_fee(fields, tip_indicator, unit, currency_numeric)
    country = _required(fields, "58")
    if _COUNTRY.fullmatch(country) is None:
        raise _error(
            "58", f"must be two upper-case letters (ISO 3166-1 alpha-2), got {_preview(country)}"
        )
    additional_data = fields.get("62")
    language = fields.get("64")
    return MerchantQr(
        format_indicator=format_indicator,
        initiation_method=initiation_method,
        merchant_accounts=merchant_accounts,
        merchant_category_code=merchant_category_code,
        currency=None if unit is None else unit.code,
        currency_numeric=currency_numeric,
        amount_minor=amount_minor,
        tip_indicator=tip_indicator,
        convenience_fee_fixed_minor=fee_fixed,
        convenience_fee_percentage=fee_percentage,
        country=country,
        merchant_name=_required(fields, "59"),
        merchant_city=_required(fields, "60"),
        postal_code=fields.get("61"),
        additional_data={} if additional_data is None else _additional_data(additional_data),
        alternate_language=None if language is None else _alternate_language(language),
        unreserved_templates={tag: value for tag, value in elements if int(tag) >= 65},
        crc=crc,
        crc_valid=crc_valid,
    )


_T = TypeVar("_T")


def _lookup_code(tag: str, value: str | None, codes: Mapping[str, _T]) -> _T | None:
    """The meaning of an optional coded field, or None when it is absent."""
    if value is None:
        return None
    found = codes.get(value)
    if found is None:
        allowed = ", ".join(f"{code!r} ({meaning})" for code, meaning in codes.items())
        raise _error(tag, f"must be one of {allowed}; got {_preview(value)}")
    return found


def _merchant_accounts(elements: Sequence[tuple[str, str]]) -> tuple[MerchantAccount, ...]:
    accounts = []
    for tag, value in elements:
        if 2 <= int(tag) <= 25:
            accounts.append(MerchantAccount.primitive(tag, value))
        elif 26 <= int(tag) <= 51:
            accounts.append(_account_template(tag, value))
    if not accounts:
        raise _error("02-51", "is missing; at least one merchant account (IDs 02-51) is mandatory")
    return tuple(accounts)


def _account_template(tag: str, value: str) -> MerchantAccount:
    fields = {sub: _check(f"{tag}.{sub}", text) for sub, text in _split(value, tag)}
    gui = fields.pop("00", None)
    if gui is None:
        raise _error(
            f"{tag}.00",
            "is missing; a merchant account template (26-51) must carry its globally unique"
            " identifier, such as a reverse domain name or an AID",
        )
    return MerchantAccount.template(tag, gui, fields)


def _amount(tag: str, text: str | None, unit: Currency | None, numeric: str) -> int | None:
    """Amount text as minor units: above zero, within the currency's decimals."""
    if text is None:
        return None
    if unit is None:
        raise _error(
            "53",
            f"is {numeric}, which is not an ISO 4217 currency with minor units;"
            f" the amount in {tag} cannot be read without one",
        )
    try:
        amount_minor = parse_amount_minor(text, unit.code)
    except MoneyError as exc:
        raise _error(tag, f"is not a valid {unit.code} amount: {exc}") from exc
    if amount_minor <= 0:
        raise _error(tag, f"must be greater than zero, got {_preview(text)}")
    return amount_minor


def _convenience_fee(
    fields: Mapping[str, str],
    tip_indicator: TipIndicator | None,
    unit: Currency | None,
    numeric: str,
) -> tuple[int | None, str | None]:
    """The fixed fee (56) and the percentage (57); each goes with its own indicator value."""
    for tag, code, wanted in (
        ("56", "02", "convenience_fee_fixed"),
        ("57", "03", "convenience_fee_percentage"),
    ):
        present = tag in fields
        if present and tip_indicator != wanted:
            raise _error(
                tag,
                f"is present, but it is allowed only when the tip or convenience indicator"
                f" (55) is {code!r} ({wanted})",
            )
        if not present and tip_indicator == wanted:
            raise _error(
                tag,
                f"is missing; it is mandatory when the tip or convenience indicator (55)"
                f" is {code!r} ({wanted})",
            )
    percentage = fields.get("57")
    if percentage is not None and not _is_percentage(percentage):
        raise _error(
            "57",
            "must be a percentage from 0.01 to 99.99 with at most two decimals,"
            f" got {_preview(percentage)}",
        )
    return _amount("56", fields.get("56"), unit, numeric), percentage


def _is_percentage(text: str) -> bool:
    return _PERCENTAGE.fullmatch(text) is not None and text.strip("0.") != ""


def _additional_data(value: str) -> dict[str, str]:
    fields = {sub: _check(f"62.{sub}", text) for sub, text in _split(value, "62")}
    request = fields.get("09")
    if request is not None and (
        not set(request) <= _CONSUMER_DATA_LETTERS or len(set(request)) != len(request)
    ):
        raise _error(
            "62.09",
            "must combine 'A' (address), 'M' (mobile number) and 'E' (e-mail), each at most"
            f" once, got {_preview(request)}",
        )
    return {ADDITIONAL_DATA_NAMES.get(sub, sub): text for sub, text in fields.items()}


def _alternate_language(value: str) -> AlternateLanguage:
    fields = {sub: _check(f"64.{sub}", text) for sub, text in _split(value, "64")}
    language = fields.pop("00", None)
    if language is None:
        raise _error("64.00", "is missing; the language template must name its language")
    if _LANGUAGE.fullmatch(language) is None:
        raise _error(
            "64.00", f"must be a two-letter ISO 639 language code, got {_preview(language)}"
        )
    name = fields.pop("01", None)
    if name is None:
        raise _error("64.01", "is missing; the language template must carry the merchant name")
    city = fields.pop("02", None)
    return AlternateLanguage(language, name, city, rfu=fields)


# --- building --------------------------------------------------------------------

_INITIATION_IDS: Final = MappingProxyType({v: k for k, v in _INITIATION_CODES.items()})
_TIP_IDS: Final = MappingProxyType({v: k for k, v in _TIP_CODES.items()})


def build_merchant_qr(
    *,
    merchant_name: str,
    merchant_city: str,
    merchant_category_code: str,
    currency: str,
    merchant_accounts: Sequence[MerchantAccount],
    amount_minor: int | None = None,
    initiation_method: InitiationMethod | None = None,
    country: str = "CN",
    postal_code: str | None = None,
    tip_indicator: TipIndicator | None = None,
    convenience_fee_fixed_minor: int | None = None,
    convenience_fee_percentage: str | None = None,
    additional_data: Mapping[str, str] | None = None,
    alternate_language: AlternateLanguage | None = None,
    unreserved_templates: Mapping[str, str] | None = None,
) -> str:
    """A complete payload, CRC included, for these fields (named as in :class:`MerchantQr`).

    ``currency`` is an ISO 4217 alphabetic code; amounts are ``int`` minor
    units of it. ``initiation_method`` defaults to ``"dynamic"`` with an
    amount and ``"static"`` without. Data objects go in ascending ID order
    (merchant accounts in the order given) with the CRC last, and the result
    is parsed before it is returned, so it obeys every rule a parsed payload
    does. Raises :class:`QrCodeError`, naming the field, for any value past
    its limit or otherwise not allowed.
    """
    unit = _build_currency(currency)
    method = initiation_method or ("dynamic" if amount_minor is not None else "static")
    objects = [
        ("00", PAYLOAD_FORMAT_INDICATOR),
        *_optional("01", _code_for("01", method, _INITIATION_IDS)),
        *(_account_object(account) for account in merchant_accounts),
        ("52", merchant_category_code),
        ("53", unit.numeric),
        *_optional("54", _amount_text("54", amount_minor, unit)),
        *_optional("55", _code_for("55", tip_indicator, _TIP_IDS)),
        *_optional("56", _amount_text("56", convenience_fee_fixed_minor, unit)),
        *_optional("57", convenience_fee_percentage),
        ("58", country),
        ("59", merchant_name),
        ("60", merchant_city),
        *_optional("61", postal_code),
        *_optional("62", _additional_data_value(additional_data or {})),
        *_optional("64", _language_value(alternate_language)),
        *_unreserved_objects(unreserved_templates or {}),
    ]
    body = "".join(_tlv(tag, value) for tag, value in objects) + CRC_PREFIX
    payload = body + payload_crc(body)
    parse(payload)
    return payload


def _tlv(path: str, value: str) -> str:
    """One data object; the value is checked first, so that its length fits two digits."""
    tag = path.rpartition(".")[2]
    return f"{tag}{len(_check(path, value)):02d}{value}"


def _template(parent: str, fields: Mapping[str, str]) -> str:
    return "".join(_tlv(f"{parent}.{sub}", fields[sub]) for sub in sorted(fields))


def _optional(tag: str, value: str | None) -> list[tuple[str, str]]:
    return [] if value is None else [(tag, value)]


def _build_currency(code: str) -> Currency:
    try:
        return currency_by_code(code)
    except MoneyError as exc:
        raise _error("53", f"cannot be {_preview(code)}: {exc}") from exc


def _code_for(tag: str, meaning: str | None, ids: Mapping[Any, str]) -> str | None:
    if meaning is None:
        return None
    found = ids.get(meaning)
    if found is None:
        allowed = ", ".join(repr(name) for name in ids)
        raise _error(tag, f"must be one of {allowed}; got {_preview(meaning)}")
    return found


def _amount_text(tag: str, amount_minor: int | None, unit: Currency) -> str | None:
    if amount_minor is None:
        return None
    try:
        return Money(amount_minor, unit.code).to_decimal_string()
    except MoneyError as exc:
        raise _error(tag, f"cannot be {amount_minor!r}: {exc}") from exc


def _is_sub_id(key: str, low: int, high: int) -> bool:
    return _DIGITS.fullmatch(key) is not None and len(key) == 2 and low <= int(key) <= high


def _account_object(account: MerchantAccount) -> tuple[str, str]:
    tag = account.id
    if not _is_sub_id(tag, 2, 51):
        raise _error("02-51", f"cannot use the ID {_preview(tag)}; merchant accounts use 02 to 51")
    if int(tag) <= 25:
        if account.value is None or account.gui is not None or account.fields:
            raise _error(tag, "is a primitive value (IDs 02-25): give value, not gui or fields")
        return tag, account.value
    if account.gui is None or account.value is not None:
        raise _error(tag, "is a template (IDs 26-51): give gui and fields, not value")
    for sub in account.fields:
        if not _is_sub_id(sub, 1, 99):
            raise _error(tag, f"cannot hold the sub-field ID {_preview(sub)}; allowed are 01-99")
    return tag, _tlv(f"{tag}.00", account.gui) + _template(tag, account.fields)


def _additional_data_value(additional_data: Mapping[str, str]) -> str | None:
    if not additional_data:
        return None
    fields = {}
    for key, value in additional_data.items():
        sub = _ADDITIONAL_DATA_IDS.get(key, key)
        if (sub in ADDITIONAL_DATA_NAMES and sub == key) or not _is_sub_id(sub, 0, 99):
            names = ", ".join(ADDITIONAL_DATA_NAMES.values())
            raise _error(
                "62",
                f"cannot hold the key {_preview(key)}; allowed are {names}, or a two-digit"
                " ID 00 or 10-99 for other sub-fields",
            )
        fields[sub] = value
    return _template("62", fields)


def _language_value(language: AlternateLanguage | None) -> str | None:
    if language is None:
        return None
    for sub in language.rfu:
        if not _is_sub_id(sub, 3, 99):
            raise _error(
                "64", f"cannot hold the sub-field ID {_preview(sub)} as RFU; allowed are 03-99"
            )
    fields = {"00": language.language, "01": language.name, **language.rfu}
    if language.city is not None:
        fields["02"] = language.city
    return _template("64", fields)


def _unreserved_objects(templates: Mapping[str, str]) -> list[tuple[str, str]]:
    for tag in templates:
        if not _is_sub_id(tag, 65, 99):
            raise _error("65-99", f"cannot use the ID {_preview(tag)}; these templates use 65-99")
    return [(tag, templates[tag]) for tag in sorted(templates)]


# --- images ----------------------------------------------------------------------


def qr_image_svg(payload: str) -> str:
    """``payload``, checked with :func:`parse`, as an SVG QR code (``zhifu.identity.qr``).

    Raises :class:`QrCodeError` for a payload that does not parse.
    """
    parse(payload)
    from zhifu.identity.qr import qr_svg

    return qr_svg(payload)


def qr_image_png(payload: str) -> bytes:
    """``payload``, checked with :func:`parse`, as a PNG QR code; raises as :func:`qr_image_svg`."""
    parse(payload)
    from zhifu.identity.qr import qr_png

    return qr_png(payload)

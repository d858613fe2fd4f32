"""Money: an exact amount in minor units of one ISO 4217 currency.

Design note
-----------
Rules every caller can rely on:

* An amount is a Python ``int`` of minor units (fen, cents, fils) together
  with an ISO 4217 alphabetic code: ``Money(123456, "CNY")`` is 1234.56 CNY.
  The number of minor-unit digits (the exponent) comes from ISO 4217 itself:
  JPY 0, CNY 2, BHD 3, CLF 4.
* A float never enters. Floats, and strings with too many decimal places for
  the currency, are refused with a typed error rather than rounded; text is
  converted with integer arithmetic only.
* Amounts stay within the SQL BIGINT range, symmetric around zero:
  ``|amount_minor| <= AMOUNT_MINOR_MAX`` (2**63 - 1), so every stored amount
  and its negation fit a signed 64-bit column. A result outside the range
  raises ``AmountOutOfRangeError``; nothing wraps or saturates.
* Amounts in different currencies never mix: adding, subtracting or ordering
  them raises ``CurrencyMismatchError``. (``==`` between currencies is simply
  false.)
* Splits use the largest-remainder method: each part is within one minor unit
  of its exact proportional share, ties go to the lower index, and the parts
  add back to the whole, which is checked with ``invariant()`` every time.

The currency table is list one of the ISO 4217 maintenance agency (SIX), as
published on ``ISO_4217_PUBLISHED``. Entries whose minor unit is "N.A." (the
precious metals XAU, XAG, XPT, XPD; XDR, XSU, XUA; the bond market units
XBA-XBD; the testing code XTS and "no currency" XXX) are not money here and
are treated as unknown currencies, as are withdrawn codes such as ANG, BGN,
CUC, HRK, SLL and ZWL. When the agency publishes an amendment, update the
table and the date together.

Every error raised here derives from ``MoneyError`` (a ``ValueError``), says
what was wrong and what is allowed, and leaves nothing changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from zhifu.invariant import invariant

ISO_4217_PUBLISHED: Final = "2026-01-01"
AMOUNT_MINOR_MAX: Final = 2**63 - 1  # the SQL BIGINT maximum
AMOUNT_TEXT_LENGTH_MAX: Final = 32  # the longest valid amount text is 21 characters
SPLIT_PARTS_MAX: Final = 10_000
SPLIT_WEIGHT_MAX: Final = AMOUNT_MINOR_MAX
_PREVIEW_LENGTH_MAX: Final = 40  # error messages echo at most this much of the input


class MoneyError(ValueError):
    """Root of the errors of this module: an amount or currency is not allowed."""


class UnknownCurrencyError(MoneyError):
    """Raised when a currency code is not a current ISO 4217 code with minor units."""


class FloatNotAllowedError(MoneyError):
    """Raised when a float is given where an amount, factor or weight is expected."""


class InvalidAmountError(MoneyError):
    """Raised when an amount is not a number of the accepted form.

    For example text such as ``'1e5'``, ``'1,000'``, ``' 12'``, ``''``,
    ``'+-1'`` or ``'NaN'``; a bool; or a value that is neither an int nor text.
    """


class TooManyDecimalsError(MoneyError):
    """Raised when amount text has more decimal places than the currency has.

    For example ``'1.234'`` for CNY (2 places) or ``'1.5'`` for JPY (none).
    """


class AmountOutOfRangeError(MoneyError):
    """Raised when an amount or a result has more than ``AMOUNT_MINOR_MAX`` minor units."""


class CurrencyMismatchError(MoneyError):
    """Raised when arithmetic or an ordering comparison mixes two currencies."""


class InvalidSplitError(MoneyError):
    """Raised when split weights or a part count are not allowed.

    Weights must be a non-empty sequence of at most ``SPLIT_PARTS_MAX`` ints,
    each between 0 and ``SPLIT_WEIGHT_MAX``, with at least one positive.
    """


class UnsupportedLocaleError(MoneyError):
    """Raised when ``Money.format`` is asked for a locale it does not know."""


@dataclass(frozen=True, slots=True)
class Currency:
    """One ISO 4217 currency.

    ``numeric`` keeps its three digits, leading zeros included ("008"), as
    card and interbank messages carry it; ``exponent`` is the number of
    minor-unit digits (CNY 2: 1 yuan = 100 fen).
    """

    code: str
    numeric: str
    exponent: int
    name: str


# ISO 4217 list one, published 2026-01-01: (alphabetic code, numeric code,
# minor-unit exponent, currency name). Codes with minor unit "N.A." are left
# out on purpose (see the module docstring).
_ISO_4217_LIST_ONE: Final[tuple[tuple[str, str, int, str], ...]] = (
    ("AED", "784", 2, "UAE Dirham"),
    ("AFN", "971", 2, "Afghani"),
    ("ALL", "008", 2, "Lek"),
    ("AMD", "051", 2, "Armenian Dram"),
    ("AOA", "973", 2, "Kwanza"),
    ("ARS", "032", 2, "Argentine Peso"),
    ("AUD", "036", 2, "Australian Dollar"),
    ("AWG", "533", 2, "Aruban Florin"),
    ("AZN", "944", 2, "Azerbaijan Manat"),
    ("BAM", "977", 2, "Convertible Mark"),
    ("BBD", "052", 2, "Barbados Dollar"),
    ("BDT", "050", 2, "Taka"),
    ("BHD", "048", 3, "Bahraini Dinar"),
    ("BIF", "108", 0, "Burundi Franc"),
    ("BMD", "060", 2, "Bermudian Dollar"),
    ("BND", "096", 2, "Brunei Dollar"),
    ("BOB", "068", 2, "Boliviano"),
    ("BOV", "984", 2, "Mvdol"),
    ("BRL", "986", 2, "Brazilian Real"),
    ("BSD", "044", 2, "Bahamian Dollar"),
    ("BTN", "064", 2, "Ngultrum"),
    ("BWP", "072", 2, "Pula"),
    ("BYN", "933", 2, "Belarusian Ruble"),
    ("BZD", "084", 2, "Belize Dollar"),
    ("CAD", "124", 2, "Canadian Dollar"),
    ("CDF", "976", 2, "Congolese Franc"),
    ("CHE", "947", 2, "WIR Euro"),
    ("CHF", "756", 2, "Swiss Franc"),
    ("CHW", "948", 2, "WIR Franc"),
    ("CLF", "990", 4, "Unidad de Fomento"),
    ("CLP", "152", 0, "Chilean Peso"),
    ("CNY", "156", 2, "Yuan Renminbi"),
    ("COP", "170", 2, "Colombian Peso"),
    ("COU", "970", 2, "Unidad de Valor Real"),
    ("CRC", "188", 2, "Costa Rican Colon"),
    ("CUP", "192", 2, "Cuban Peso"),
    ("CVE", "132", 2, "Cabo Verde Escudo"),
    ("CZK", "203", 2, "Czech Koruna"),
    ("DJF", "262", 0, "Djibouti Franc"),
    ("DKK", "208", 2, "Danish Krone"),
    ("DOP", "214", 2, "Dominican Peso"),
    ("DZD", "012", 2, "Algerian Dinar"),
    ("EGP", "818", 2, "Egyptian Pound"),
    ("ERN", "232", 2, "Nakfa"),
    ("ETB", "230", 2, "Ethiopian Birr"),
    ("EUR", "978", 2, "Euro"),
    ("FJD", "242", 2, "Fiji Dollar"),
    ("FKP", "238", 2, "Falkland Islands Pound"),
    ("GBP", "826", 2, "Pound Sterling"),
    ("GEL", "981", 2, "Lari"),
    ("GHS", "936", 2, "Ghana Cedi"),
    ("GIP", "292", 2, "Gibraltar Pound"),
    ("GMD", "270", 2, "Dalasi"),
    ("GNF", "324", 0, "Guinean Franc"),
    ("GTQ", "320", 2, "Quetzal"),
    ("GYD", "328", 2, "Guyana Dollar"),
    ("HKD", "344", 2, "Hong Kong Dollar"),
    ("HNL", "340", 2, "Lempira"),
    ("HTG", "332", 2, "Gourde"),
    ("HUF", "348", 2, "Forint"),
    ("IDR", "360", 2, "Rupiah"),
    ("ILS", "376", 2, "New Israeli Sheqel"),
    ("INR", "356", 2, "Indian Rupee"),
    ("IQD", "368", 3, "Iraqi Dinar"),
    ("IRR", "364", 2, "Iranian Rial"),
    ("ISK", "352", 0, "Iceland Krona"),
    ("JMD", "388", 2, "Jamaican Dollar"),
    ("JOD", "400", 3, "Jordanian Dinar"),
    ("JPY", "392", 0, "Yen"),
    ("KES", "404", 2, "Kenyan Shilling"),
    ("KGS", "417", 2, "Som"),
    ("KHR", "116", 2, "Riel"),
    ("KMF", "174", 0, "Comorian Franc"),
    ("KPW", "408", 2, "North Korean Won"),
    ("KRW", "410", 0, "Won"),
    ("KWD", "414", 3, "Kuwaiti Dinar"),
    ("KYD", "136", 2, "Cayman Islands Dollar"),
    ("KZT", "398", 2, "Tenge"),
    ("LAK", "418", 2, "Lao Kip"),
    ("LBP", "422", 2, "Lebanese Pound"),
    ("LKR", "144", 2, "Sri Lanka Rupee"),
    ("LRD", "430", 2, "Liberian Dollar"),
    ("LSL", "426", 2, "Loti"),
    ("LYD", "434", 3, "Libyan Dinar"),
    ("MAD", "504", 2, "Moroccan Dirham"),
    ("MDL", "498", 2, "Moldovan Leu"),
    ("MGA", "969", 2, "Malagasy Ariary"),
    ("MKD", "807", 2, "Denar"),
    ("MMK", "104", 2, "Kyat"),
    ("MNT", "496", 2, "Tugrik"),
    ("MOP", "446", 2, "Pataca"),
    ("MRU", "929", 2, "Ouguiya"),
    ("MUR", "480", 2, "Mauritius Rupee"),
    ("MVR", "462", 2, "Rufiyaa"),
    ("MWK", "454", 2, "Malawi Kwacha"),
    ("MXN", "484", 2, "Mexican Peso"),
    ("MXV", "979", 2, "Mexican Unidad de Inversion (UDI)"),
    ("MYR", "458", 2, "Malaysian Ringgit"),
    ("MZN", "943", 2, "Mozambique Metical"),
    ("NAD", "516", 2, "Namibia Dollar"),
    ("NGN", "566", 2, "Naira"),
    ("NIO", "558", 2, "Cordoba Oro"),
    ("NOK", "578", 2, "Norwegian Krone"),
    ("NPR", "524", 2, "Nepalese Rupee"),
    ("NZD", "554", 2, "New Zealand Dollar"),
    ("OMR", "512", 3, "Rial Omani"),
    ("PAB", "590", 2, "Balboa"),
    ("PEN", "604", 2, "Sol"),
    ("PGK", "598", 2, "Kina"),
    ("PHP", "608", 2, "Philippine Peso"),
    ("PKR", "586", 2, "Pakistan Rupee"),
    ("PLN", "985", 2, "Zloty"),
    ("PYG", "600", 0, "Guarani"),
    ("QAR", "634", 2, "Qatari Rial"),
    ("RON", "946", 2, "Romanian Leu"),
    ("RSD", "941", 2, "Serbian Dinar"),
    ("RUB", "643", 2, "Russian Ruble"),
    ("RWF", "646", 0, "Rwanda Franc"),
    ("SAR", "682", 2, "Saudi Riyal"),
    ("SBD", "090", 2, "Solomon Islands Dollar"),
    ("SCR", "690", 2, "Seychelles Rupee"),
    ("SDG", "938", 2, "Sudanese Pound"),
    ("SEK", "752", 2, "Swedish Krona"),
    ("SGD", "702", 2, "Singapore Dollar"),
    ("SHP", "654", 2, "Saint Helena Pound"),
    ("SLE", "925", 2, "Leone"),
    ("SOS", "706", 2, "Somali Shilling"),
    ("SRD", "968", 2, "Surinam Dollar"),
    ("SSP", "728", 2, "South Sudanese Pound"),
    ("STN", "930", 2, "Dobra"),
    ("SVC", "222", 2, "El Salvador Colon"),
    ("SYP", "760", 2, "Syrian Pound"),
    ("SZL", "748", 2, "Lilangeni"),
    ("THB", "764", 2, "Baht"),
    ("TJS", "972", 2, "Somoni"),
    ("TMT", "934", 2, "Turkmenistan New Manat"),
    ("TND", "788", 3, "Tunisian Dinar"),
    ("TOP", "776", 2, "Pa’anga"),
    ("TRY", "949", 2, "Turkish Lira"),
    ("TTD", "780", 2, "Trinidad and Tobago Dollar"),
    ("TWD", "901", 2, "New Taiwan Dollar"),
    ("TZS", "834", 2, "Tanzanian Shilling"),
    ("UAH", "980", 2, "Hryvnia"),
    ("UGX", "800", 0, "Uganda Shilling"),
    ("USD", "840", 2, "US Dollar"),
    ("USN", "997", 2, "US Dollar (Next day)"),
    ("UYI", "940", 0, "Uruguay Peso en Unidades Indexadas (UI)"),
    ("UYU", "858", 2, "Peso Uruguayo"),
    ("UYW", "927", 4, "Unidad Previsional"),
    ("UZS", "860", 2, "Uzbekistan Sum"),
    ("VED", "926", 2, "Bolívar Soberano"),
    ("VES", "928", 2, "Bolívar Soberano"),
    ("VND", "704", 0, "Dong"),
    ("VUV", "548", 0, "Vatu"),
    ("WST", "882", 2, "Tala"),
    ("XAD", "396", 2, "Arab Accounting Dinar"),
    ("XAF", "950", 0, "CFA Franc BEAC"),
    ("XCD", "951", 2, "East Caribbean Dollar"),
    ("XCG", "532", 2, "Caribbean Guilder"),
    ("XOF", "952", 0, "CFA Franc BCEAO"),
    ("XPF", "953", 0, "CFP Franc"),
    ("YER", "886", 2, "Yemeni Rial"),
    ("ZAR", "710", 2, "Rand"),
    ("ZMW", "967", 2, "Zambian Kwacha"),
    ("ZWG", "924", 2, "Zimbabwe Gold"),
)

# Codes that ISO 4217 lists with minor unit "N.A."; named only for a clearer error.
_NO_MINOR_UNIT_CODES: Final = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)

CURRENCIES: Final[Mapping[str, Currency]] = MappingProxyType(
    {
        code: Currency(code, numeric, exponent, name)
        for code, numeric, exponent, name in _ISO_4217_LIST_ONE
    }
)

invariant(len(CURRENCIES) == len(_ISO_4217_LIST_ONE), "ISO 4217 table repeats an alphabetic code")
invariant(
    len({c.numeric for c in CURRENCIES.values()}) == len(CURRENCIES),
    "ISO 4217 table repeats a numeric code",
)
invariant(
    all(0 <= c.exponent <= 4 for c in CURRENCIES.values()),
    "ISO 4217 exponents are between 0 and 4",
)

# Plain decimal text: optional '-', digits without leading zeros, optional '.' and digits.
_AMOUNT_TEXT: Final = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?")

# Group and decimal separators per supported display locale.
_LOCALE_SEPARATORS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {"en": (",", "."), "zh": (",", ".")}
)


def _lookup_currency(code: object) -> Currency:
    if isinstance(code, str):
        found = CURRENCIES.get(code)
        if found is not None:
            return found
        if code in _NO_MINOR_UNIT_CODES:
            raise UnknownCurrencyError(
                f"{code} has no minor unit in ISO 4217 and is not accepted as money; "
                "use a current ISO 4217 currency code such as 'CNY' or 'USD'"
            )
        if code.upper() in CURRENCIES and code != code.upper():
            raise UnknownCurrencyError(
                f"unknown currency {_preview(code)}: codes are uppercase, e.g. {code.upper()!r}"
            )
    raise UnknownCurrencyError(
        f"unknown currency {_preview(code)}: expected a current ISO 4217 code of 3 uppercase "
        "letters with minor units, such as 'CNY' or 'USD'"
    )


def currency(code: str) -> Currency:
    """The ISO 4217 currency with alphabetic ``code`` (uppercase, case-sensitive).

    Raises ``UnknownCurrencyError`` for anything else, including lowercase codes,
    withdrawn codes and codes without minor units (XAU, XDR, XXX, ...).
    """
    return _lookup_currency(code)


def _check_range(amount_minor: int, what: str) -> None:
    if not -AMOUNT_MINOR_MAX <= amount_minor <= AMOUNT_MINOR_MAX:
        raise AmountOutOfRangeError(
            f"{what} is out of range: allowed is -{AMOUNT_MINOR_MAX}..{AMOUNT_MINOR_MAX} "
            "minor units (SQL BIGINT)"
        )


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_LENGTH_MAX else text[: _PREVIEW_LENGTH_MAX - 3] + "..."


def _describe(value: object) -> str:
    return f"{type(value).__name__} {_preview(value)}"


def _parse_minor(text: str, unit: Currency) -> int:
    """``text`` (major units) as minor units of ``unit``, with integer arithmetic only."""
    if len(text) > AMOUNT_TEXT_LENGTH_MAX:
        raise InvalidAmountError(
            f"{unit.code} amount text is {len(text)} characters long; "
            f"at most {AMOUNT_TEXT_LENGTH_MAX} are allowed"
        )
    match = _AMOUNT_TEXT.fullmatch(text)
    if match is None:
        example = "1234" + ("." + "5678"[: unit.exponent] if unit.exponent else "")
        raise InvalidAmountError(
            f"{unit.code} amount must be plain decimal text such as {example!r}: an optional "
            "'-', digits without leading zeros, then optionally '.' and digits; no spaces, "
            f"'+', group separators or exponents; got {text!r}"
        )
    sign, whole, fraction = match.group(1), match.group(2), match.group(3) or ""
    if len(fraction) > unit.exponent:
        allowed = (
            "no decimal places"
            if unit.exponent == 0
            else f"at most {unit.exponent} decimal place{'s' if unit.exponent > 1 else ''}"
        )
        raise TooManyDecimalsError(f"{unit.code} allows {allowed}, got {text!r}")
    scale: int = 10**unit.exponent
    magnitude = int(whole) * scale + int(fraction.ljust(unit.exponent, "0") or "0")
    amount_minor = -magnitude if sign else magnitude
    _check_range(amount_minor, f"{unit.code} amount {text!r}")
    return amount_minor


@dataclass(frozen=True, slots=True)
class Money:
    """An immutable amount: ``amount_minor`` minor units of ``currency``.

    Raises, on construction: ``UnknownCurrencyError``; ``FloatNotAllowedError``
    for a float amount; ``InvalidAmountError`` for a bool or any non-int;
    ``AmountOutOfRangeError`` beyond ``AMOUNT_MINOR_MAX``.
    """

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        _lookup_currency(self.currency)
        value: object = self.amount_minor
        if isinstance(value, float):
            raise FloatNotAllowedError(
                f"amount_minor must be an int of minor units, not a float (got {value!r}); "
                "use Money.parse with decimal text for major units"
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidAmountError(
                f"amount_minor must be an int of minor units, got {_describe(value)}"
            )
        _check_range(value, f"{self.currency} amount_minor {value}")
        # An int subclass (IntEnum, ...) is stored as a plain int.
        object.__setattr__(self, "amount_minor", int(value))

    @classmethod
    def of_minor(cls, amount_minor: int, currency: str) -> Money:
        """``amount_minor`` minor units of ``currency``: ``Money.of_minor(150, "CNY")`` is 1.50."""
        return cls(amount_minor, currency)

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Decimal text in major units: ``Money.parse("1234.56", "CNY")``.

        Accepts an optional '-', digits without leading zeros, and optionally
        '.' followed by at most the currency's exponent digits ('12.' and '.5'
        are refused). Raises ``UnknownCurrencyError``, ``FloatNotAllowedError``
        (a float instead of text), ``InvalidAmountError``,
        ``TooManyDecimalsError`` or ``AmountOutOfRangeError``.
        """
        unit = _lookup_currency(currency)
        if isinstance(text, float):
            raise FloatNotAllowedError(
                f"{unit.code} amount must be decimal text such as '12.34', not a float "
                f"(got {text!r})"
            )
        if not isinstance(text, str):
            raise InvalidAmountError(
                f"{unit.code} amount must be decimal text such as '12.34', got {_describe(text)}"
            )
        return cls(_parse_minor(text, unit), unit.code)

    @classmethod
    def zero(cls, currency: str) -> Money:
        """Zero in ``currency``."""
        return cls(0, currency)

    def _same_currency(self, other: Money, operation: str) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatchError(
                f"cannot {operation} {self.currency} and {other.currency}: amounts in "
                "different currencies never mix; convert one of them first"
            )

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "add")
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "subtract")
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __mul__(self, factor: int) -> Money:
        """Money times an int. Raises ``FloatNotAllowedError`` for a float factor."""
        if isinstance(factor, float):
            raise FloatNotAllowedError(
                f"cannot multiply {self.currency} by the float {factor!r}: multiply by an int, "
                "or use split() to apportion"
            )
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise InvalidAmountError(
                f"{self.currency} amounts can only be multiplied by an int, got {_describe(factor)}"
            )
        return Money(self.amount_minor * factor, self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __abs__(self) -> Money:
        return Money(abs(self.amount_minor), self.currency)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other, "compare")
        return self.amount_minor >= other.amount_minor

    def is_zero(self) -> bool:
        return self.amount_minor == 0

    def is_positive(self) -> bool:
        return self.amount_minor > 0

    def is_negative(self) -> bool:
        return self.amount_minor < 0

    def _whole_and_fraction(self) -> tuple[int, str]:
        """The magnitude as whole major units and the fraction digits (may be '')."""
        exponent = _lookup_currency(self.currency).exponent
        scale: int = 10**exponent
        whole, fraction = divmod(abs(self.amount_minor), scale)
        return whole, str(fraction).zfill(exponent) if exponent else ""

    def to_decimal_string(self) -> str:
        """Exact major units with exactly the currency's decimals: '1234.56', '-0.01', '1500'."""
        whole, fraction = self._whole_and_fraction()
        sign = "-" if self.amount_minor < 0 else ""
        return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"

    def format(self, locale: str = "en") -> str:
        """For people: grouped digits and the code, e.g. '1,234.56 CNY', '-1,500 JPY'.

        Supported locales: 'en' and 'zh'. Raises ``UnsupportedLocaleError`` for others.
        """
        separators = _LOCALE_SEPARATORS.get(locale)
        if separators is None:
            supported = ", ".join(repr(name) for name in _LOCALE_SEPARATORS)
            raise UnsupportedLocaleError(
                f"unsupported locale {locale!r}: supported are {supported}"
            )
        group, point = separators
        whole, fraction = self._whole_and_fraction()
        digits = f"{whole:,}".replace(",", group)
        sign = "-" if self.amount_minor < 0 else ""
        number = f"{sign}{digits}{point}{fraction}" if fraction else f"{sign}{digits}"
        return f"{number} {self.currency}"

    def __str__(self) -> str:
        return f"{self.to_decimal_string()} {self.currency}"


def parse_amount_minor(value: object, currency: str) -> int:
    """An amount from the API edge as minor units of ``currency``.

    Accepts an int (already minor units, not a bool) or decimal text in major
    units ('12.34'). Raises ``UnknownCurrencyError``, ``FloatNotAllowedError``
    (any float), ``InvalidAmountError`` (anything else, or bad text),
    ``TooManyDecimalsError`` or ``AmountOutOfRangeError``.
    """
    unit = _lookup_currency(currency)
    if isinstance(value, float):
        raise FloatNotAllowedError(
            f"{unit.code} amount must be an int of minor units or decimal text such as "
            f"'12.34', not a float (got {value!r})"
        )
    if isinstance(value, str):
        return _parse_minor(value, unit)
    if isinstance(value, int) and not isinstance(value, bool):
        return Money(value, unit.code).amount_minor
    raise InvalidAmountError(
        f"{unit.code} amount must be an int of minor units or decimal text such as '12.34', "
        f"got {_describe(value)}"
    )


def _check_weights(weights: Sequence[int]) -> None:
    if len(weights) == 0:
        raise InvalidSplitError("split needs at least one weight, got none")
    if len(weights) > SPLIT_PARTS_MAX:
        raise InvalidSplitError(f"split allows at most {SPLIT_PARTS_MAX} parts, got {len(weights)}")
    for index, weight in enumerate(weights):
        if isinstance(weight, float):
            raise FloatNotAllowedError(
                f"split weights must be ints, got the float {weight!r} at index {index}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise InvalidSplitError(
                f"split weights must be ints, got {_describe(weight)} at index {index}"
            )
        if not 0 <= weight <= SPLIT_WEIGHT_MAX:
            raise InvalidSplitError(
                f"split weights must be between 0 and {SPLIT_WEIGHT_MAX}, "
                f"got {weight} at index {index}"
            )
    if not any(weights):
        raise InvalidSplitError("split needs at least one positive weight, got only zeros")


def _largest_remainder(amount: int, weights: Sequence[int]) -> list[int]:
    """Apportion ``amount`` (>= 0) by ``weights`` (>= 0, not all zero); parts sum to it."""
    weight_total = sum(weights)
    shares = [divmod(amount * weight, weight_total) for weight in weights]
    parts = [floor for floor, _ in shares]
    leftover = amount - sum(parts)
    # Each remainder is below weight_total, so fewer units are left over than there are parts.
    invariant(0 <= leftover < len(parts), "largest remainder: leftover exceeds part count")
    # Largest remainder first; equal remainders go to the lower index, so the result
    # depends only on the inputs.
    by_remainder = sorted(range(len(parts)), key=lambda index: (-shares[index][1], index))
    for index in by_remainder[:leftover]:
        parts[index] += 1
    return parts


def split(total: Money, weights: Sequence[int]) -> list[Money]:
    """Split ``total`` in proportion to ``weights`` by the largest-remainder method.

    Each part is within one minor unit of its exact share, a zero weight gets
    zero, equal remainders favour the lower index, and the parts always add
    up to ``total`` (a negative total is split by its magnitude, then negated).
    Raises ``InvalidSplitError`` for an empty, too long (> ``SPLIT_PARTS_MAX``),
    negative, too large or all-zero weight list and ``FloatNotAllowedError``
    for a float weight.
    """
    _check_weights(weights)
    magnitudes = _largest_remainder(abs(total.amount_minor), weights)
    sign = -1 if total.amount_minor < 0 else 1
    parts = [Money(sign * magnitude, total.currency) for magnitude in magnitudes]
    invariant(
        sum(part.amount_minor for part in parts) == total.amount_minor,
        f"split parts of {total} do not add up to the total",
    )
    return parts


def allocate_evenly(total: Money, parts: int) -> list[Money]:
    """Split ``total`` into ``parts`` near-equal parts; the first ones get any extra unit.

    Raises ``InvalidSplitError`` unless ``1 <= parts <= SPLIT_PARTS_MAX`` and
    ``FloatNotAllowedError`` for a float count.
    """
    if isinstance(parts, float):
        raise FloatNotAllowedError(f"parts must be an int, got the float {parts!r}")
    if isinstance(parts, bool) or not isinstance(parts, int):
        raise InvalidSplitError(f"parts must be an int, got {_describe(parts)}")
    if not 1 <= parts <= SPLIT_PARTS_MAX:
        raise InvalidSplitError(f"parts must be between 1 and {SPLIT_PARTS_MAX}, got {parts}")
    return split(total, [1] * parts)

"""The EMVCo merchant-presented QR codec (zhifu.payments.emvco).

Payloads are written by hand here with a local TLV helper, and CRCs are
computed by a bit-by-bit CRC-16/CCITT-FALSE of the test's own, so neither
depends on the code under test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zhifu.payments.emvco import (
    ADDITIONAL_DATA_LENGTH_MAX,
    ADDITIONAL_DATA_NAMES,
    ALTERNATE_CITY_LENGTH_MAX,
    ALTERNATE_NAME_LENGTH_MAX,
    AMOUNT_LENGTH_MAX,
    CONSUMER_DATA_REQUEST_LENGTH_MAX,
    CONVENIENCE_FEE_PERCENTAGE_LENGTH_MAX,
    GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX,
    MERCHANT_CITY_LENGTH_MAX,
    MERCHANT_NAME_LENGTH_MAX,
    PAYLOAD_LENGTH_MAX,
    POSTAL_CODE_LENGTH_MAX,
    VALUE_LENGTH_MAX,
    AlternateLanguage,
    MerchantAccount,
    MerchantQr,
    build_merchant_qr,
    crc16_ccitt_false,
    parse,
    payload_crc,
    qr_image_png,
    qr_image_svg,
)
from zhifu.payments.errors import PaymentError, QrCodeError

# The worked example of EMV QRCPS MPM v1.1 (Chinese names in the language template).
EMVCO_EXAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)
# The example of the Banco Central do Brasil's Pix manual (no point of initiation).
PIX_EXAMPLE = (
    "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-426655440000"
    "5204000053039865802BR5913Fulano de Tal6008BRASILIA62070503***63041D3D"
)
# A published PayNow (Singapore) charity code: static, UEN proxy.
PAYNOW_EXAMPLE = (
    "00020101021126400009SG.PAYNOW010120213200002150HWCF030115204000053037025802SG"
    "5923NATIONAL HEALTHCARE GRO6009Singapore6304DF3F"
)


def crc_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, one bit at a time: poly 0x1021, init 0xFFFF, no reflection."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def with_crc(body: str) -> str:
    """``body`` (everything before the CRC object) + ``6304`` + its CRC."""
    covered = body + "6304"
    return covered + f"{crc_bitwise(covered.encode('utf-8')):04X}"


BASE_FIELDS: dict[str, str] = {
    "00": "01",
    "01": "11",
    "26": tlv("00", "com.example.pay") + tlv("01", "8888"),
    "52": "5812",
    "53": "156",
    "58": "CN",
    "59": "NOODLE HOUSE",
    "60": "SHANGHAI",
}


def payload_of(overrides: dict[str, str | None]) -> str:
    """A payload of BASE_FIELDS with ``overrides`` (None removes a field), CRC last."""
    fields = BASE_FIELDS | overrides
    return with_crc("".join(tlv(tag, value) for tag, value in fields.items() if value is not None))


def qr_error(payload: str, **options: Any) -> QrCodeError:
    with pytest.raises(QrCodeError) as caught:
        parse(payload, **options)
    return caught.value


# A UnionPay / WeChat Pay style code, written here: a UnionPay primitive (15),
# a WeChat Pay template, an amount, and the names in Chinese in template 64.
CHINA_STYLE = with_crc(
    tlv("00", "01")
    + tlv("01", "12")
    + tlv("15", "6200000000000000")
    + tlv("30", tlv("00", "COM.QQ.WEIXIN.PAY") + tlv("01", "1234567890"))
    + tlv("52", "5812")
    + tlv("53", "156")
    + tlv("54", "88.80")
    + tlv("58", "CN")
    + tlv("59", "XIAO LONG KAN")
    + tlv("60", "CHENGDU")
    + tlv("62", tlv("01", "INV-2024-0001") + tlv("07", "T01"))
    + tlv("64", tlv("00", "ZH") + tlv("01", "小龙坎火锅") + tlv("02", "成都"))
)


# --- CRC ------------------------------------------------------------------------


def test_crc_check_value() -> None:
    assert crc_bitwise(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"123456789") == 0x29B1


@given(st.binary(max_size=600))
def test_table_crc_matches_the_bitwise_one(data: bytes) -> None:
    assert crc16_ccitt_false(data) == crc_bitwise(data)


@pytest.mark.parametrize("payload", [EMVCO_EXAMPLE, PIX_EXAMPLE, PAYNOW_EXAMPLE, CHINA_STYLE])
def test_published_crcs_are_over_the_utf8_bytes(payload: str) -> None:
    covered, crc = payload[:-4], payload[-4:]
    assert f"{crc_bitwise(covered.encode('utf-8')):04X}" == crc
    assert payload_crc(covered) == crc


# --- known-good payloads --------------------------------------------------------


def test_the_emvco_example() -> None:
    qr = parse(EMVCO_EXAMPLE)
    assert qr.format_indicator == "01"
    assert qr.initiation_method == "dynamic"
    assert qr.merchant_accounts == (
        MerchantAccount.template("29", "D15600000000", {"05": "A93FO3230Q"}),
        MerchantAccount.template("31", "D15600000001", {"03": "12345678"}),
    )
    assert (qr.merchant_category_code, qr.currency, qr.currency_numeric) == ("4111", "CNY", "156")
    assert qr.amount_minor == 2372
    assert qr.amount_text() == "23.72"
    assert qr.tip_indicator == "prompt"
    assert (qr.country, qr.merchant_name, qr.merchant_city) == ("CN", "BEST TRANSPORT", "BEIJING")
    assert qr.additional_data == {
        "store_label": "1234",
        "customer_label": "***",
        "terminal_label": "A6008667",
        "additional_consumer_data_request": "ME",
    }
    assert qr.alternate_language == AlternateLanguage("ZH", "最佳运输", "北京")
    assert qr.unreserved_templates == {"91": "0016A011223344998877070812345678"}
    assert (qr.crc, qr.crc_valid) == ("A13A", True)


def test_the_pix_example_has_no_point_of_initiation() -> None:
    qr = parse(PIX_EXAMPLE)
    assert qr.initiation_method is None
    assert qr.merchant_accounts == (
        MerchantAccount.template(
            "26", "br.gov.bcb.pix", {"01": "123e4567-e12b-12d1-a456-426655440000"}
        ),
    )
    assert (qr.currency, qr.amount_minor, qr.merchant_name) == ("BRL", None, "Fulano de Tal")
    assert qr.additional_data == {"reference_label": "***"}


def test_the_paynow_example() -> None:
    qr = parse(PAYNOW_EXAMPLE)
    assert qr.initiation_method == "static"
    assert qr.merchant_accounts[0].gui == "SG.PAYNOW"
    assert dict(qr.merchant_accounts[0].fields) == {"01": "2", "02": "200002150HWCF", "03": "1"}
    assert (qr.currency, qr.country, qr.merchant_city) == ("SGD", "SG", "Singapore")


def test_a_china_style_code_with_chinese_names() -> None:
    qr = parse(CHINA_STYLE)
    assert qr.merchant_accounts == (
        MerchantAccount.primitive("15", "6200000000000000"),
        MerchantAccount.template("30", "COM.QQ.WEIXIN.PAY", {"01": "1234567890"}),
    )
    assert qr.amount_minor == 8880
    assert qr.alternate_language == AlternateLanguage("ZH", "小龙坎火锅", "成都")
    assert qr.additional_data == {"bill_number": "INV-2024-0001", "terminal_label": "T01"}
    # The same fields build the same payload: ascending IDs, CRC last.
    assert build_merchant_qr(**build_arguments(qr)) == CHINA_STYLE


def test_as_dict_is_json_ready() -> None:
    shown = json.loads(json.dumps(parse(EMVCO_EXAMPLE).as_dict(), ensure_ascii=False))
    assert shown["amount"] == "23.72"
    assert shown["amount_minor"] == 2372
    assert shown["alternate_language"] == {
        "language": "ZH",
        "name": "最佳运输",
        "city": "北京",
        "rfu": {},
    }
    assert shown["merchant_accounts"][0] == {
        "id": "29",
        "gui": "D15600000000",
        "fields": {"05": "A93FO3230Q"},
        "value": None,
    }
    assert shown["crc_valid"] is True


def test_build_writes_the_expected_payload() -> None:
    payload = build_merchant_qr(
        merchant_name="NOODLE HOUSE",
        merchant_city="SHANGHAI",
        merchant_category_code="5812",
        currency="CNY",
        merchant_accounts=[MerchantAccount.template("26", "com.example.pay", {"01": "8888"})],
    )
    assert payload == payload_of({})
    dynamic = build_merchant_qr(
        merchant_name="NOODLE HOUSE",
        merchant_city="SHANGHAI",
        merchant_category_code="5812",
        currency="JPY",
        amount_minor=1500,
        merchant_accounts=[MerchantAccount.template("26", "com.example.pay", {"01": "8888"})],
    )
    expected = (
        tlv("00", "01")
        + tlv("01", "12")
        + tlv("26", BASE_FIELDS["26"])
        + tlv("52", "5812")
        + tlv("53", "392")
        + tlv("54", "1500")
        + tlv("58", "CN")
        + tlv("59", "NOODLE HOUSE")
        + tlv("60", "SHANGHAI")
    )
    assert dynamic == with_crc(expected)


# --- limits: at the limit, and one past -----------------------------------------


PARSE_LIMITS = [
    ("59", "59", "N" * MERCHANT_NAME_LENGTH_MAX, "N" * (MERCHANT_NAME_LENGTH_MAX + 1)),
    ("60", "60", "C" * MERCHANT_CITY_LENGTH_MAX, "C" * (MERCHANT_CITY_LENGTH_MAX + 1)),
    ("61", "61", "1" * POSTAL_CODE_LENGTH_MAX, "1" * (POSTAL_CODE_LENGTH_MAX + 1)),
    ("54", "54", "9" * (AMOUNT_LENGTH_MAX - 3) + ".99", "9" * (AMOUNT_LENGTH_MAX - 2) + ".99"),
    (
        "26",
        "26.00",
        tlv("00", "G" * GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX),
        tlv("00", "G" * (GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX + 1)),
    ),
    (
        "64",
        "64.01",
        tlv("00", "ZH") + tlv("01", "名" * ALTERNATE_NAME_LENGTH_MAX),
        tlv("00", "ZH") + tlv("01", "名" * (ALTERNATE_NAME_LENGTH_MAX + 1)),
    ),
    (
        "64",
        "64.02",
        tlv("00", "ZH") + tlv("01", "名") + tlv("02", "城" * ALTERNATE_CITY_LENGTH_MAX),
        tlv("00", "ZH") + tlv("01", "名") + tlv("02", "城" * (ALTERNATE_CITY_LENGTH_MAX + 1)),
    ),
    (
        "62",
        "62.09",
        tlv("09", "AME"[:CONSUMER_DATA_REQUEST_LENGTH_MAX]),
        tlv("09", "AMEA"),
    ),
    ("80", "80", "x" * VALUE_LENGTH_MAX, None),
] + [
    (
        "62",
        f"62.{sub}",
        tlv(sub, "L" * ADDITIONAL_DATA_LENGTH_MAX),
        tlv(sub, "L" * (ADDITIONAL_DATA_LENGTH_MAX + 1)),
    )
    for sub in ["01", "02", "03", "04", "05", "06", "07", "08"]
]


@pytest.mark.parametrize(("tag", "field", "at_limit", "past_limit"), PARSE_LIMITS)
def test_parse_limits(tag: str, field: str, at_limit: str, past_limit: str | None) -> None:
    parse(payload_of({tag: at_limit}))
    if past_limit is not None:
        error = qr_error(payload_of({tag: past_limit}))
        assert error.field == field
        assert str(error).startswith(f"{field} (")
        assert "at most" in str(error)


def test_convenience_fee_percentage_limit() -> None:
    assert CONVENIENCE_FEE_PERCENTAGE_LENGTH_MAX == 5
    qr = parse(payload_of({"55": "03", "57": "99.99"}))
    assert (qr.tip_indicator, qr.convenience_fee_percentage) == (
        "convenience_fee_percentage",
        "99.99",
    )
    assert qr_error(payload_of({"55": "03", "57": "099.99"})).field == "57"


def test_a_value_can_not_say_a_length_of_100() -> None:
    # Two length digits: the 100th character becomes the start of the next field.
    payload = payload_of({}).replace(tlv("60", "SHANGHAI"), "6099" + "x" * 100)
    assert qr_error(payload).field == "60"


def _padded_to(length: int) -> str:
    """A valid payload of exactly ``length`` characters, padded with unreserved templates."""
    base = len(payload_of({}))
    fillers: dict[str, str | None] = {}
    missing = length - base
    for tag in range(80, 100):
        if missing <= 0:
            break
        size = min(VALUE_LENGTH_MAX, missing - 4)
        if missing - 4 - size in range(1, 5):  # leave room for one more whole object
            size -= 5
        fillers[str(tag)] = "p" * size
        missing -= 4 + size
    payload = payload_of(fillers)
    assert len(payload) == length
    return payload


def test_payload_length_limit() -> None:
    parse(_padded_to(PAYLOAD_LENGTH_MAX))
    error = qr_error(_padded_to(PAYLOAD_LENGTH_MAX + 1))
    assert error.field == "payload"
    assert f"at most {PAYLOAD_LENGTH_MAX}" in str(error)


BUILD_LIMITS = [
    ("merchant_name", "59", "N" * MERCHANT_NAME_LENGTH_MAX, "N" * (MERCHANT_NAME_LENGTH_MAX + 1)),
    ("merchant_city", "60", "C" * MERCHANT_CITY_LENGTH_MAX, "C" * (MERCHANT_CITY_LENGTH_MAX + 1)),
    ("postal_code", "61", "1" * POSTAL_CODE_LENGTH_MAX, "1" * (POSTAL_CODE_LENGTH_MAX + 1)),
    ("amount_minor", "54", 10 ** (AMOUNT_LENGTH_MAX - 1) - 1, 10 ** (AMOUNT_LENGTH_MAX - 1)),
    (
        "merchant_accounts",
        "26.00",
        [MerchantAccount.template("26", "G" * GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX, {})],
        [MerchantAccount.template("26", "G" * (GLOBALLY_UNIQUE_IDENTIFIER_LENGTH_MAX + 1), {})],
    ),
    (
        "merchant_accounts",
        "26",
        [MerchantAccount.template("26", "G", {"01": "a" * 90})],
        [MerchantAccount.template("26", "G", {"01": "a" * 91})],
    ),
    (
        "additional_data",
        "62.05",
        {"reference_label": "R" * ADDITIONAL_DATA_LENGTH_MAX},
        {"reference_label": "R" * (ADDITIONAL_DATA_LENGTH_MAX + 1)},
    ),
    (
        "alternate_language",
        "64.01",
        AlternateLanguage("ZH", "名" * ALTERNATE_NAME_LENGTH_MAX),
        AlternateLanguage("ZH", "名" * (ALTERNATE_NAME_LENGTH_MAX + 1)),
    ),
    (
        "alternate_language",
        "64.02",
        AlternateLanguage("ZH", "名", "城" * ALTERNATE_CITY_LENGTH_MAX),
        AlternateLanguage("ZH", "名", "城" * (ALTERNATE_CITY_LENGTH_MAX + 1)),
    ),
    (
        "unreserved_templates",
        "80",
        {"80": "u" * VALUE_LENGTH_MAX},
        {"80": "u" * (VALUE_LENGTH_MAX + 1)},
    ),
]


def build_base(**overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "merchant_name": "NOODLE HOUSE",
        "merchant_city": "SHANGHAI",
        "merchant_category_code": "5812",
        "currency": "CNY",
        "merchant_accounts": [MerchantAccount.template("26", "com.example.pay", {"01": "8888"})],
    }
    return build_merchant_qr(**(arguments | overrides))


@pytest.mark.parametrize(("argument", "field", "at_limit", "past_limit"), BUILD_LIMITS)
def test_build_limits(argument: str, field: str, at_limit: object, past_limit: object) -> None:
    assert parse(build_base(**{argument: at_limit})).crc_valid
    with pytest.raises(QrCodeError) as caught:
        build_base(**{argument: past_limit})
    assert caught.value.field == field
    assert "at most" in str(caught.value)


def test_build_refuses_a_payload_past_the_length_limit() -> None:
    templates = {str(tag): "u" * VALUE_LENGTH_MAX for tag in range(80, 85)}
    with pytest.raises(QrCodeError) as caught:
        build_base(unreserved_templates=templates)
    assert caught.value.field == "payload"


# --- mandatory fields -----------------------------------------------------------


@pytest.mark.parametrize("tag", ["00", "52", "53", "58", "59", "60"])
def test_each_mandatory_field_missing(tag: str) -> None:
    error = qr_error(payload_of({tag: None}))
    assert error.field == tag
    assert "missing" in str(error)


def test_missing_crc() -> None:
    body = "".join(tlv(tag, value) for tag, value in BASE_FIELDS.items())
    assert qr_error(body).field == "63"
    assert qr_error(body, verify_crc=False).field == "63"


def test_missing_merchant_account() -> None:
    error = qr_error(payload_of({"26": None}))
    assert error.field == "02-51"
    assert "at least one merchant account" in str(error)


def test_template_without_globally_unique_identifier() -> None:
    assert qr_error(payload_of({"26": tlv("01", "8888")})).field == "26.00"


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (tlv("01", "名"), "64.00"),
        (tlv("00", "ZH"), "64.01"),
        (tlv("00", "Z1") + tlv("01", "名"), "64.00"),
    ],
)
def test_language_template_needs_language_and_name(template: str, field: str) -> None:
    assert qr_error(payload_of({"64": template})).field == field


def test_build_needs_a_merchant_account() -> None:
    with pytest.raises(QrCodeError) as caught:
        build_base(merchant_accounts=[])
    assert caught.value.field == "02-51"


# --- CRC, lengths, duplicates, order --------------------------------------------


def test_wrong_crc() -> None:
    damaged = EMVCO_EXAMPLE[:-4] + "A13B"
    error = qr_error(damaged)
    assert error.field == "63"
    assert "A13B" in str(error) and "A13A" in str(error)
    lenient = parse(damaged, verify_crc=False)
    assert (lenient.crc, lenient.crc_valid) == ("A13B", False)
    assert lenient.merchant_name == "BEST TRANSPORT"


def test_a_changed_value_breaks_the_crc() -> None:
    altered = EMVCO_EXAMPLE.replace("540523.72", "540599.72")
    assert qr_error(altered).field == "63"
    assert parse(altered, verify_crc=False).amount_minor == 9972


def test_lower_case_crc_is_refused() -> None:
    lowered = EMVCO_EXAMPLE[:-4] + "a13a"
    error = qr_error(lowered)
    assert error.field == "63"
    assert "upper-case" in str(error)
    assert parse(lowered, verify_crc=False).crc_valid is False


def test_crc_of_the_wrong_length() -> None:
    short = EMVCO_EXAMPLE[:-8] + "6303A13"
    assert qr_error(short).field == "63"
    assert qr_error(short, verify_crc=False).field == "63"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (EMVCO_EXAMPLE.replace("5914BEST", "5915BEST"), "59"),  # too long: eats into 60
        (EMVCO_EXAMPLE.replace("5914BEST", "5913BEST"), "59"),  # too short: 'T6' is no ID
        (payload_of({"52": "581"}), "52"),
        (payload_of({"53": "1560"}), "53"),
        (payload_of({"58": "CHN"}), "58"),
        (payload_of({"00": "1"}), "00"),
        (payload_of({}).replace("52045812", "52005812"), "52"),
    ],
)
def test_bad_length(payload: str, field: str) -> None:
    assert qr_error(payload).field == field


def test_declared_length_past_the_end() -> None:
    assert qr_error("000201" + "5930NOODLE").field == "59"


def test_non_digit_length() -> None:
    error = qr_error("000201" + "59XYNOODLE")
    assert error.field == "00"
    assert "length of 00" in str(error)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (with_crc("".join(tlv(t, v) for t, v in BASE_FIELDS.items()) + tlv("59", "TWICE")), "59"),
        (payload_of({"62": tlv("01", "A") + tlv("01", "B")}), "62.01"),
        (payload_of({"26": tlv("00", "g") + tlv("00", "h")}), "26.00"),
    ],
)
def test_duplicate_id(payload: str, field: str) -> None:
    error = qr_error(payload)
    assert error.field == field
    assert "appears twice" in str(error)


@pytest.mark.parametrize("garbage", ["X", "XYZ", "59", "5901", "5901X", "9901Z"])
def test_trailing_characters(garbage: str) -> None:
    error = qr_error(EMVCO_EXAMPLE + garbage)
    assert error.field in {"63", "59"}
    if garbage.startswith("99"):
        assert "must be the last field" in str(error)


def test_format_indicator_first() -> None:
    body = tlv("01", "11") + "".join(tlv(t, v) for t, v in BASE_FIELDS.items() if t != "01")
    error = qr_error(with_crc(body))
    assert error.field == "00"
    assert "first" in str(error)


@pytest.mark.parametrize("payload", ["", "0002"])
def test_too_little_text(payload: str) -> None:
    assert qr_error(payload).field in {"payload", "00"}


def test_not_text() -> None:
    assert qr_error(b"000201").field == "payload"  # type: ignore[arg-type]


def test_lone_surrogate() -> None:
    assert qr_error("000201" + "5902A\ud800").field == "payload"


# --- values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "amount", "field"),
    [
        ("156", "23.725", "54"),  # CNY has 2 decimals
        ("392", "1.5", "54"),  # JPY has none
        ("156", "0.00", "54"),
        ("156", "-1.00", "54"),
        ("156", "1e5", "54"),
        ("156", "12.", "54"),
        ("999", "1.00", "53"),  # an unknown currency: the amount cannot be read
    ],
)
def test_amount_refused(currency: str, amount: str, field: str) -> None:
    assert qr_error(payload_of({"53": currency, "54": amount})).field == field


def test_amount_decimals_follow_the_currency() -> None:
    assert parse(payload_of({"53": "392", "54": "1500"})).amount_minor == 1500
    assert parse(payload_of({"53": "048", "54": "1.125"})).amount_minor == 1125  # BHD
    assert parse(payload_of({"54": "23.7"})).amount_minor == 2370


def test_unknown_currency_number_is_reported_as_is() -> None:
    qr = parse(payload_of({"53": "999"}))
    assert (qr.currency, qr.currency_numeric, qr.amount_minor) == (None, "999", None)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"55": "02"}, "56"),
        ({"56": "1.00"}, "56"),
        ({"55": "03"}, "57"),
        ({"55": "01", "57": "5"}, "57"),
        ({"55": "03", "57": "0.00"}, "57"),
        ({"55": "03", "57": "5.555"}, "57"),
        ({"55": "04"}, "55"),
        ({"55": "02", "56": "1.001"}, "56"),
    ],
)
def test_tip_and_convenience_fee_refused(overrides: dict[str, str | None], field: str) -> None:
    assert qr_error(payload_of(overrides)).field == field


def test_convenience_fee_fixed() -> None:
    qr = parse(payload_of({"55": "02", "56": "1.50"}))
    assert (qr.tip_indicator, qr.convenience_fee_fixed_minor) == ("convenience_fee_fixed", 150)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"59": "小龙坎"}, "59", "language template (64)"),
        ({"52": "58A2"}, "52", "digits"),
        ({"58": "cn"}, "58", "upper-case"),
        ({"01": "13"}, "01", "'11' (static)"),
        ({"00": "02"}, "00", "'01'"),
        ({"62": tlv("09", "AX")}, "62.09", "'A' (address)"),
        ({"62": tlv("09", "AA")}, "62.09", "at most once"),
        ({"64": tlv("00", "ZH") + tlv("01", "名\x07")}, "64.01", "control character"),
        ({"26": tlv("00", "g") + tlv("01", "a\nb")}, "26.01", "control character"),
        ({"02": "4111\x001111"}, "02", "printable ASCII"),
    ],
)
def test_value_refused(overrides: dict[str, str | None], field: str, words: str) -> None:
    error = qr_error(payload_of(overrides))
    assert error.field == field
    assert words in str(error)


def test_errors_share_one_root() -> None:
    error = qr_error(payload_of({"59": None}))
    assert isinstance(error, PaymentError)
    assert error.code == "invalid_qr_code"
    assert str(error) == "59 (merchant name) is missing; it is mandatory"


def test_other_sub_fields_are_kept() -> None:
    qr = parse(
        payload_of(
            {
                "62": tlv("50", tlv("00", "SG.COM.NETS")) + tlv("03", "S1"),
                "64": tlv("00", "JA") + tlv("01", "メルペイ") + tlv("03", "rfu"),
                "70": "reserved",
            }
        )
    )
    assert qr.additional_data == {"50": "0011SG.COM.NETS", "store_label": "S1"}
    assert qr.alternate_language == AlternateLanguage("JA", "メルペイ", None, {"03": "rfu"})
    assert qr.unreserved_templates == {"70": "reserved"}


# --- building refuses what it cannot write --------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"currency": "XXX"}, "53"),
        ({"currency": "cny"}, "53"),
        ({"amount_minor": 0}, "54"),
        ({"amount_minor": -100}, "54"),
        ({"amount_minor": 1.5}, "54"),
        ({"merchant_name": ""}, "59"),
        ({"merchant_name": "小龙坎"}, "59"),
        ({"merchant_category_code": "58"}, "52"),
        ({"country": "China"}, "58"),
        ({"initiation_method": "sometimes"}, "01"),
        ({"tip_indicator": "always"}, "55"),
        ({"tip_indicator": "convenience_fee_fixed"}, "56"),
        ({"convenience_fee_percentage": "5"}, "57"),
        ({"additional_data": {"colour": "red"}}, "62"),
        ({"additional_data": {"01": "raw id of a named field"}}, "62"),
        ({"additional_data": {"additional_consumer_data_request": "AMEE"}}, "62.09"),
        ({"merchant_accounts": [MerchantAccount("52", value="x")]}, "02-51"),
        ({"merchant_accounts": [MerchantAccount("15", gui="g")]}, "15"),
        ({"merchant_accounts": [MerchantAccount("26", value="x")]}, "26"),
        ({"merchant_accounts": [MerchantAccount("26", gui="g", fields={"1": "x"})]}, "26"),
        (
            {
                "merchant_accounts": [
                    MerchantAccount.primitive("15", "a"),
                    MerchantAccount.primitive("15", "b"),
                ]
            },
            "15",
        ),
        ({"alternate_language": AlternateLanguage("ZH", "名", rfu={"01": "x"})}, "64"),
        ({"unreserved_templates": {"63": "x"}}, "65-99"),
    ],
)
def test_build_refused(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(QrCodeError) as caught:
        build_base(**overrides)
    assert caught.value.field == field


# --- images ---------------------------------------------------------------------


def test_images() -> None:
    assert qr_image_svg(EMVCO_EXAMPLE).startswith("<svg")
    assert qr_image_png(EMVCO_EXAMPLE).startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(QrCodeError):
        qr_image_svg(EMVCO_EXAMPLE[:-4] + "0000")


# --- round trip -----------------------------------------------------------------

BUILD_ARGUMENT_NAMES = (
    "merchant_name",
    "merchant_city",
    "merchant_category_code",
    "currency",
    "merchant_accounts",
    "amount_minor",
    "initiation_method",
    "country",
    "postal_code",
    "tip_indicator",
    "convenience_fee_fixed_minor",
    "convenience_fee_percentage",
    "additional_data",
    "alternate_language",
    "unreserved_templates",
)


def build_arguments(qr: MerchantQr) -> dict[str, Any]:
    return {name: getattr(qr, name) for name in BUILD_ARGUMENT_NAMES}


ans = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
text = st.characters(exclude_categories=("Cc", "Cs"))


def ans_text(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(ans, min_size=low, max_size=high)


def any_text(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(text, min_size=low, max_size=high)


two_digits = st.integers(1, 99).map(lambda n: f"{n:02d}")


@st.composite
def accounts(draw: st.DrawFn) -> list[MerchantAccount]:
    ids = draw(st.lists(st.integers(2, 51), min_size=1, max_size=3, unique=True))
    result = []
    for number in ids:
        tag = f"{number:02d}"
        if number <= 25:
            result.append(MerchantAccount.primitive(tag, draw(ans_text(1, 30))))
        else:
            fields = draw(st.dictionaries(two_digits, any_text(1, 20), max_size=2))
            result.append(MerchantAccount.template(tag, draw(ans_text(1, 20)), fields))
    return result


percentages = st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2})?", fullmatch=True).filter(
    lambda p: p.strip("0.") != ""
)
tips = st.one_of(
    st.just({}),
    st.just({"tip_indicator": "prompt"}),
    st.integers(1, 10**6).map(
        lambda fee: {"tip_indicator": "convenience_fee_fixed", "convenience_fee_fixed_minor": fee}
    ),
    percentages.map(
        lambda p: {"tip_indicator": "convenience_fee_percentage", "convenience_fee_percentage": p}
    ),
)
additional = st.dictionaries(
    st.sampled_from(list(ADDITIONAL_DATA_NAMES.values())[:8]), ans_text(1, 25), max_size=3
)
languages = st.builds(
    AlternateLanguage,
    st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
    any_text(1, ALTERNATE_NAME_LENGTH_MAX),
    st.none() | any_text(1, ALTERNATE_CITY_LENGTH_MAX),
)


@st.composite
def build_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "merchant_name": draw(ans_text(1, MERCHANT_NAME_LENGTH_MAX)),
        "merchant_city": draw(ans_text(1, MERCHANT_CITY_LENGTH_MAX)),
        "merchant_category_code": draw(st.from_regex(r"[0-9]{4}", fullmatch=True)),
        "currency": draw(st.sampled_from(["CNY", "USD", "JPY", "BHD", "EUR", "HKD", "SGD"])),
        "merchant_accounts": tuple(draw(accounts())),
        "amount_minor": draw(st.none() | st.integers(1, 10**12 - 1)),
        "initiation_method": draw(st.sampled_from(["static", "dynamic"])),
        "country": draw(st.from_regex(r"[A-Z]{2}", fullmatch=True)),
        "postal_code": draw(st.none() | ans_text(1, POSTAL_CODE_LENGTH_MAX)),
        "tip_indicator": None,
        "convenience_fee_fixed_minor": None,
        "convenience_fee_percentage": None,
        **draw(tips),
        "additional_data": draw(additional),
        "alternate_language": draw(st.none() | languages),
        "unreserved_templates": draw(
            st.dictionaries(st.integers(65, 99).map(str), any_text(1, 40), max_size=2)
        ),
    }


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(build_kwargs())
def test_round_trip(kwargs: dict[str, Any]) -> None:
    try:
        payload = build_merchant_qr(**kwargs)
    except QrCodeError as exc:
        assume(exc.field != "payload")  # past PAYLOAD_LENGTH_MAX: tested on its own
        raise
    assert len(payload) <= PAYLOAD_LENGTH_MAX
    qr = parse(payload)
    assert build_arguments(qr) == kwargs
    assert (qr.crc_valid, qr.format_indicator) == (True, "01")
    assert qr.crc == f"{crc_bitwise(payload[:-4].encode('utf-8')):04X}"
    assert build_merchant_qr(**build_arguments(qr)) == payload
    json.dumps(qr.as_dict(), ensure_ascii=False)

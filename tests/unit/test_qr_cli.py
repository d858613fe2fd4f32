"""``zhifu qr parse`` and ``zhifu qr make``, through click's CliRunner (no database).

Images too: ``qr make --png/--svg`` and ``qr parse --image``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from zhifu.cli import main
from zhifu.payments.emvco import parse
from zhifu.payments.qr_image import IMAGE_BYTES_MAX, SVG_TITLE, render_png

EMVCO_EXAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)
MAKE = [
    "qr",
    "make",
    "--merchant-name",
    "BEST TRANSPORT",
    "--city",
    "BEIJING",
    "--mcc",
    "4111",
    "--currency",
    "CNY",
    "--account-gui",
    "com.example.pay",
    "--account-id",
    "8888",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="zhifu")


def test_parse_prints_the_fields() -> None:
    result = invoke("qr", "parse", EMVCO_EXAMPLE)
    assert result.exit_code == 0, result.output
    for shown in [
        "format:",
        "initiation method:",
        "dynamic",
        "merchant account 29:",
        "D15600000000 05=A93FO3230Q",
        "merchant account 31:",
        "category code:",
        "4111",
        "CNY (156)",
        "23.72 CNY",
        "country:",
        "BEST TRANSPORT",
        "BEIJING",
        "store label:",
        "customer label:",
        "***",
        "name in ZH:",
        "最佳运输, 北京",
        "template 91:",
        "A13A (valid)",
    ]:
        assert shown in result.stdout
    assert result.stderr == ""


def test_parse_json() -> None:
    result = invoke("qr", "parse", "--json", EMVCO_EXAMPLE)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == parse(EMVCO_EXAMPLE).as_dict()


def test_parse_static_code_without_amount() -> None:
    payload = invoke(*MAKE).stdout.strip()
    result = invoke("qr", "parse", payload)
    assert result.exit_code == 0, result.output
    assert "static" in result.stdout
    assert "not given: the payer enters it" in result.stdout


def test_wrong_crc() -> None:
    damaged = EMVCO_EXAMPLE[:-4] + "A13B"
    result = invoke("qr", "parse", damaged)
    assert result.exit_code == 1
    assert "A13B (INVALID)" in result.stdout  # the fields are still shown
    assert "BEST TRANSPORT" in result.stdout
    assert "63 (CRC) is A13B but the payload's CRC-16/CCITT-FALSE is A13A" in result.stderr


def test_wrong_crc_json() -> None:
    result = invoke("qr", "parse", "--json", EMVCO_EXAMPLE[:-4] + "A13B")
    assert result.exit_code == 1
    problem = json.loads(result.stdout)
    assert problem["field"] == "63"
    assert problem["title"] == "Invalid EMVCo QR code"
    assert problem["type"] == "https://zhifu.dev/problems/invalid-qr-code"
    assert "A13A" in problem["detail"]
    assert problem["decoded"]["crc_valid"] is False
    assert problem["decoded"]["merchant_name"] == "BEST TRANSPORT"


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (EMVCO_EXAMPLE.replace("5914BEST", "5915BEST"), "59", "the length of 59 (15) is wrong"),
        (EMVCO_EXAMPLE.replace("5914BEST TRANSPORT", ""), "59", "59 (merchant name) is missing"),
        (EMVCO_EXAMPLE + "X", "63", "63 (CRC) is followed by 'X'"),
        (EMVCO_EXAMPLE.replace("540523.72", "540623.725"), "54", "at most 2 decimal places"),
    ],
)
def test_invalid_payload(payload: str, field: str, words: str) -> None:
    result = invoke("qr", "parse", payload)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert words in result.stderr
    as_json = invoke("qr", "parse", "--json", payload)
    assert as_json.exit_code == 1
    problem = json.loads(as_json.stdout)
    assert problem["field"] == field
    assert words in problem["detail"]
    assert problem["code"] == "invalid_qr_code"


def test_make_prints_a_payload_that_parses() -> None:
    result = invoke(
        *MAKE, "--amount", "23.72", "--alternate-name", "最佳运输", "--alternate-city", "北京"
    )
    assert result.exit_code == 0, result.output
    payload = result.stdout.strip()
    assert result.stdout == payload + "\n"
    qr = parse(payload)
    assert (qr.initiation_method, qr.amount_minor, qr.currency) == ("dynamic", 2372, "CNY")
    assert (qr.merchant_name, qr.merchant_city, qr.merchant_category_code) == (
        "BEST TRANSPORT",
        "BEIJING",
        "4111",
    )
    assert qr.merchant_accounts[0].gui == "com.example.pay"
    assert dict(qr.merchant_accounts[0].fields) == {"01": "8888"}
    assert qr.alternate_language is not None
    assert (qr.alternate_language.name, qr.alternate_language.city) == ("最佳运输", "北京")


def test_make_writes_images(tmp_path: Path) -> None:
    svg, png = tmp_path / "code.svg", tmp_path / "code.png"
    result = invoke(*MAKE, "--svg", str(svg), "--png", str(png))
    assert result.exit_code == 0, result.output
    assert svg.read_text(encoding="utf-8").startswith("<svg")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"wrote {svg}" in result.stderr


@pytest.mark.parametrize(
    ("extra", "option", "words"),
    [
        (["--merchant-name", "M" * 26], "'--merchant-name'", "at most 25"),
        (["--city", "C" * 16], "'--city'", "at most 15"),
        (["--mcc", "41"], "'--mcc'", "exactly 4"),
        (["--amount", "23.725"], "'--amount'", "at most 2 decimal places"),
        (["--amount", "0"], "'--amount'", "greater than zero"),
        (["--currency", "XYZ"], "'--currency'", "unknown currency"),
        (["--account-gui", "G" * 33], "'--account-gui'", "at most 32"),
        (["--country", "China"], "'--country'", "exactly 2"),
        (["--alternate-name", "名" * 26], "'--alternate-name'", "at most 25"),
    ],
)
def test_make_refuses_values_past_their_limits(extra: list[str], option: str, words: str) -> None:
    result = invoke(*MAKE, *extra)
    assert result.exit_code == 2
    assert option in result.stderr
    assert words in result.stderr


def test_make_alternate_city_needs_a_name() -> None:
    result = invoke(*MAKE, "--alternate-city", "北京")
    assert result.exit_code == 2
    assert "--alternate-city needs --alternate-name" in result.stderr


@pytest.mark.parametrize("path", [["qr"], ["qr", "parse"], ["qr", "make"]])
def test_help(path: list[str]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0
    assert f"Usage: zhifu {' '.join(path)}" in result.stdout


# --- images: 'qr make --png/--svg' and 'qr parse --image' -----------------------------


def test_make_png_then_parse_image_json(tmp_path: Path) -> None:
    png = tmp_path / "code.png"
    made = invoke(*MAKE, "--amount", "23.72", "--alternate-name", "最佳运输", "--png", str(png))
    assert made.exit_code == 0, made.output
    payload = made.stdout.strip()
    result = invoke("qr", "parse", "--image", str(png), "--json")
    assert result.exit_code == 0, result.output
    decoded = json.loads(result.stdout)
    assert decoded == parse(payload).as_dict()
    assert decoded["alternate_language"]["name"] == "最佳运输"


def test_parse_image_prints_the_fields(tmp_path: Path) -> None:
    png = tmp_path / "code.png"
    png.write_bytes(render_png(EMVCO_EXAMPLE))
    result = invoke("qr", "parse", "--image", str(png))
    assert result.exit_code == 0, result.output
    assert result.stdout == invoke("qr", "parse", EMVCO_EXAMPLE).stdout
    assert "最佳运输, 北京" in result.stdout


def test_make_svg_has_a_title(tmp_path: Path) -> None:
    svg = tmp_path / "code.svg"
    result = invoke(*MAKE, "--svg", str(svg))
    assert result.exit_code == 0, result.output
    assert f"<title>{SVG_TITLE}</title>" in svg.read_text(encoding="utf-8")
    assert result.stdout.count("\n") == 1  # the payload, as without --svg


@pytest.mark.parametrize(
    ("content", "reason", "words"),
    [
        (b"just some text", "unsupported_format", "not a PNG, JPEG, WebP or GIF image"),
        (b"", "empty", "the upload is empty"),
        (b"\x89PNG\r\n\x1a\n" + b"x" * 20, "unreadable", "truncated or corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * IMAGE_BYTES_MAX, "too_large", "2 MiB"),
    ],
)
def test_parse_image_refuses_a_bad_file(
    tmp_path: Path, content: bytes, reason: str, words: str
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(content)
    result = invoke("qr", "parse", "--image", str(upload))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"invalid QR code image {upload}: ")
    assert words in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    as_json = invoke("qr", "parse", "--image", str(upload), "--json")
    assert as_json.exit_code == 1
    problem = json.loads(as_json.stdout)
    assert problem["type"] == "https://zhifu.dev/problems/invalid-qr-image"
    assert (problem["code"], problem["reason"]) == ("invalid_qr_image", reason)
    assert words in problem["detail"]


def test_parse_image_without_a_code(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (200, 200), 255).save(blank, "PNG")
    result = invoke("qr", "parse", "--image", str(blank))
    assert result.exit_code == 1
    assert "no QR code was found in the image" in result.stderr


def test_parse_image_of_a_code_that_is_no_emvco_payload(tmp_path: Path) -> None:
    png = tmp_path / "hello.png"
    png.write_bytes(render_png("https://example.com/not-a-payment"))
    result = invoke("qr", "parse", "--image", str(png), "--json")
    assert result.exit_code == 1
    problem = json.loads(result.stdout)
    assert (problem["code"], problem["field"]) == ("invalid_qr_code", "payload")
    assert "invalid QR code: payload starts with 'http'" in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([EMVCO_EXAMPLE, "--image", "code.png"], "not both"),
        ([], "give PAYLOAD, the text inside the QR code, or --image FILE"),
        (["--image", "missing.png"], "does not exist"),
    ],
)
def test_parse_needs_exactly_one_of_payload_and_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code.png").write_bytes(render_png(EMVCO_EXAMPLE))
    result = invoke("qr", "parse", *args)
    assert result.exit_code == 2
    assert words in result.stderr


def test_help_names_the_image_options() -> None:
    assert "--image" in invoke("qr", "parse", "--help").stdout
    make_help = invoke("qr", "make", "--help").stdout
    assert "--png" in make_help
    assert "--svg" in make_help

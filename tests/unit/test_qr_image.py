"""QR code images of EMVCo payloads (zhifu.payments.qr_image): drawing and reading.

Round trips go through real images: segno draws, Pillow re-encodes
(JPEG, WebP, GIF, transparency, 16-bit grey), zxing-cpp reads. Hostile uploads
are built by hand: padded files at the byte limit, PNG headers that claim
more pixels than they hold, truncated and mutated files.
"""

from __future__ import annotations

import io
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable

import pytest
import segno
import zxingcpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from zhifu.payments.emvco import (
    PAYLOAD_LENGTH_MAX,
    MerchantAccount,
    build_merchant_qr,
    parse,
)
from zhifu.payments.errors import PaymentError, QrCodeError, QrImageError
from zhifu.payments.qr_image import (
    BORDER_DEFAULT,
    BORDER_MAX,
    BORDER_MIN,
    IMAGE_BYTES_MAX,
    IMAGE_PIXELS_MAX,
    SCALE_DEFAULT,
    SCALE_MAX,
    SCALE_MIN,
    SVG_TITLE,
    decode_image,
    render_png,
    render_svg,
)

# The worked example of EMV QRCPS MPM v1.1: Chinese names in the language template (64).
EMVCO_EXAMPLE = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678"
    "520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京"
    "540523.7253031565502016233030412340603***0708A60086670902ME"
    "91320016A0112233449988770708123456786304A13A"
)
ASCII_PAYLOAD = build_merchant_qr(
    merchant_name="BEST TRANSPORT",
    merchant_city="BEIJING",
    merchant_category_code="4111",
    currency="CNY",
    amount_minor=2372,
    merchant_accounts=[MerchantAccount.template("26", "com.example.pay", {"01": "8888"})],
)
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VERSION_40_MODULES = 177  # the largest QR symbol


def grey(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("L")


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def canvas(size: tuple[int, int], *codes: Image.Image) -> Image.Image:
    """A white picture with ``codes`` side by side from the top left, 40 px apart."""
    picture = Image.new("L", size, 255)
    left = 0
    for code in codes:
        picture.paste(code, (left, 0))
        left += code.width + 40
    return picture


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels of 8-bit grey and holds none."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def reason_of(data: bytes) -> str:
    with pytest.raises(QrImageError) as caught:
        decode_image(data)
    assert caught.value.code == "invalid_qr_image"
    assert isinstance(caught.value, PaymentError)
    return caught.value.reason


# --- drawing and reading back ---------------------------------------------------


@pytest.mark.parametrize("payload", [ASCII_PAYLOAD, EMVCO_EXAMPLE], ids=["ascii", "chinese"])
def test_png_round_trip(payload: str) -> None:
    png = render_png(payload)
    assert png.startswith(PNG_SIGNATURE)
    decoded = decode_image(png)
    assert decoded == payload
    assert parse(decoded).merchant_name == "BEST TRANSPORT"


def test_chinese_names_come_back_from_the_language_template() -> None:
    language = parse(decode_image(render_png(EMVCO_EXAMPLE))).alternate_language
    assert language is not None
    assert (language.name, language.city) == ("最佳运输", "北京")


def test_non_ascii_is_written_as_utf8_bytes_at_level_m() -> None:
    # segno would write this text in Shift_JIS kanji mode if left to choose.
    text = "日本語テキスト"
    assert segno.make(text, micro=False).mode == "kanji"
    found = zxingcpp.read_barcodes(grey(render_png(text)))
    assert len(found) == 1
    assert found[0].bytes == text.encode("utf-8")
    assert found[0].ec_level == "M"


def test_png_size_is_the_symbol_plus_the_quiet_zone() -> None:
    symbol = segno.make(ASCII_PAYLOAD, error="M", micro=False, boost_error=False)
    modules = symbol.symbol_size(scale=1, border=0)[0]
    for scale, border in [(SCALE_DEFAULT, BORDER_DEFAULT), (3, 0), (SCALE_MAX, BORDER_MAX)]:
        side = (modules + 2 * border) * scale
        assert grey(render_png(ASCII_PAYLOAD, scale=scale, border=border)).size == (side, side)
    assert render_png(ASCII_PAYLOAD) == render_png(ASCII_PAYLOAD)  # the same symbol every time


def test_light_modules_are_white_not_transparent() -> None:
    image = Image.open(io.BytesIO(render_png(ASCII_PAYLOAD)))
    assert "transparency" not in image.info
    assert image.convert("L").getpixel((0, 0)) == 255


@pytest.mark.parametrize("payload", [ASCII_PAYLOAD, EMVCO_EXAMPLE], ids=["ascii", "chinese"])
def test_svg_is_well_formed_and_self_contained(payload: str) -> None:
    svg = render_svg(payload)
    assert svg.startswith("<svg")
    root = ET.fromstring(svg)
    assert root.tag == f"{{{SVG_NAMESPACE}}}svg"
    title = root.find(f"{{{SVG_NAMESPACE}}}title")
    assert title is not None
    assert title.text == SVG_TITLE
    assert re.findall(r"https?://[^\s\"'<>]*", svg) == [SVG_NAMESPACE]
    for forbidden in ("href", "<script", "<style", "<image", "<foreignObject", "url("):
        assert forbidden not in svg
    assert root.attrib["width"] == str(grey(render_png(payload)).width)  # same size as the PNG


@pytest.mark.parametrize(
    ("image_format", "mode", "options"),
    [
        ("JPEG", "RGB", {"quality": 60}),
        ("JPEG", "L", {"quality": 90}),
        ("WEBP", "RGB", {"quality": 80}),
        ("GIF", "P", {}),
    ],
    ids=["jpeg-colour", "jpeg-grey", "webp", "gif"],
)
def test_round_trip_through_other_formats(
    image_format: str, mode: str, options: dict[str, object]
) -> None:
    image = grey(render_png(EMVCO_EXAMPLE)).convert(mode)
    assert decode_image(encode(image, image_format, **options)) == EMVCO_EXAMPLE


def test_a_code_drawn_on_transparency_reads_as_dark_on_light() -> None:
    code = grey(render_png(EMVCO_EXAMPLE))
    transparent = Image.new("RGBA", code.size, (0, 0, 0, 0))
    transparent.paste((0, 0, 0, 255), mask=code.point(lambda value: 255 - value))
    assert decode_image(encode(transparent, "PNG")) == EMVCO_EXAMPLE


def test_16_bit_grey_png() -> None:
    deep = grey(render_png(EMVCO_EXAMPLE)).convert("I").point(lambda value: value * 257)
    data = encode(deep.convert("I;16"), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert decode_image(data) == EMVCO_EXAMPLE


def test_a_code_not_in_utf8_is_read_as_zxing_reads_it() -> None:
    text = "漢字"
    symbol = segno.make(text, error="M", micro=False)
    assert symbol.mode == "kanji"  # Shift_JIS, not UTF-8
    buffer = io.BytesIO()
    symbol.save(buffer, kind="png", scale=8)
    assert decode_image(buffer.getvalue()) == text


# --- drawing limits --------------------------------------------------------------


def test_payload_length_at_the_limit_and_one_past() -> None:
    longest = "码" * PAYLOAD_LENGTH_MAX  # 1,536 UTF-8 bytes
    assert decode_image(render_png(longest, scale=2)) == longest
    render_svg("A" * PAYLOAD_LENGTH_MAX)
    for render in (render_png, render_svg):
        with pytest.raises(QrCodeError) as caught:
            render("码" * (PAYLOAD_LENGTH_MAX + 1))
        assert caught.value.field == "payload"
        assert f"is {PAYLOAD_LENGTH_MAX + 1} characters long" in str(caught.value)
        assert f"at most {PAYLOAD_LENGTH_MAX}" in str(caught.value)


def test_empty_payload_is_refused() -> None:
    with pytest.raises(QrCodeError, match="payload is empty"):
        render_png("")


@pytest.mark.parametrize("render", [render_png, render_svg])
def test_scale_and_border_at_their_bounds_and_one_past(render: Callable[..., object]) -> None:
    for scale in (SCALE_MIN, SCALE_MAX):
        render(ASCII_PAYLOAD, scale=scale)
    for border in (BORDER_MIN, BORDER_MAX):
        render(ASCII_PAYLOAD, border=border)
    refused: tuple[object, ...] = (SCALE_MIN - 1, SCALE_MAX + 1, True, 2.5)
    for bad in refused:
        with pytest.raises(QrImageError) as caught:
            render(ASCII_PAYLOAD, scale=bad)
        assert caught.value.reason == "scale_out_of_range"
        assert f"from {SCALE_MIN} to {SCALE_MAX}" in str(caught.value)
    for border in (BORDER_MIN - 1, BORDER_MAX + 1):
        with pytest.raises(QrImageError) as caught:
            render(ASCII_PAYLOAD, border=border)
        assert caught.value.reason == "border_out_of_range"
        assert f"from {BORDER_MIN} to {BORDER_MAX}" in str(caught.value)


def test_the_largest_image_drawn_is_within_the_upload_pixel_limit() -> None:
    side = (VERSION_40_MODULES + 2 * BORDER_MAX) * SCALE_MAX
    assert side * side <= IMAGE_PIXELS_MAX


# --- upload limits ---------------------------------------------------------------


def test_byte_size_at_the_limit_and_one_past() -> None:
    png = render_png(ASCII_PAYLOAD)
    # Bytes after the PNG's last chunk are ignored by the decoder, not by the limit.
    at_limit = png + b"\0" * (IMAGE_BYTES_MAX - len(png))
    assert len(at_limit) == IMAGE_BYTES_MAX
    assert decode_image(at_limit) == ASCII_PAYLOAD
    with pytest.raises(QrImageError) as caught:
        decode_image(at_limit + b"\0")
    assert caught.value.reason == "too_large"
    assert f"{IMAGE_BYTES_MAX + 1:,} bytes" in str(caught.value)
    assert "2 MiB" in str(caught.value)


def test_pixel_count_at_the_limit_decodes() -> None:
    assert IMAGE_PIXELS_MAX == 5000 * 5000
    code = grey(render_png(EMVCO_EXAMPLE))
    assert decode_image(encode(canvas((5000, 5000), code), "PNG")) == EMVCO_EXAMPLE


def test_pixel_count_one_past_the_limit_is_refused() -> None:
    assert IMAGE_PIXELS_MAX + 1 == 4901 * 5101
    code = grey(render_png(EMVCO_EXAMPLE))
    with pytest.raises(QrImageError) as caught:
        decode_image(encode(canvas((4901, 5101), code), "PNG"))
    assert caught.value.reason == "too_large"
    assert "4901 x 5101 = 25,000,001 pixels" in str(caught.value)
    assert f"at most {IMAGE_PIXELS_MAX:,}" in str(caught.value)


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [
        (IMAGE_PIXELS_MAX, 1, "unreadable"),  # passes the pixel check, then holds no pixels
        (IMAGE_PIXELS_MAX + 1, 1, "too_large"),
        (100_000, 100_000, "too_large"),  # past Pillow's own decompression-bomb limit
    ],
)
def test_pixels_are_counted_from_the_header_before_decoding(
    width: int, height: int, reason: str
) -> None:
    assert reason_of(png_header_only(width, height)) == reason


def test_a_decompression_bomb_says_what_is_allowed() -> None:
    with pytest.raises(QrImageError, match=f"far more than {IMAGE_PIXELS_MAX:,} pixels"):
        decode_image(png_header_only(100_000, 100_000))


# --- refused uploads -------------------------------------------------------------


def test_empty_upload() -> None:
    assert reason_of(b"") == "empty"


@pytest.mark.parametrize(
    "data", [b"hello, this is no image", b"\x00" * 64, b"00020101021126"], ids=str
)
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(QrImageError, match="not a PNG, JPEG, WebP or GIF image") as caught:
        decode_image(data)
    assert caught.value.reason == "unsupported_format"


@pytest.mark.parametrize(
    ("image_format", "named"),
    [("BMP", "a BMP image"), ("TIFF", "a TIFF image"), ("PDF", "a PDF document")],
)
def test_other_image_formats_are_refused(image_format: str, named: str) -> None:
    data = encode(grey(render_png(ASCII_PAYLOAD)).convert("RGB"), image_format)
    with pytest.raises(QrImageError) as caught:
        decode_image(data)
    assert caught.value.reason == "unsupported_format"
    assert f"the upload is {named}; allowed are PNG, JPEG, WebP or GIF" in str(caught.value)


def test_svg_upload_is_refused() -> None:
    with pytest.raises(QrImageError, match="SVG, HTML or other XML text") as caught:
        decode_image(render_svg(ASCII_PAYLOAD).encode("utf-8"))
    assert caught.value.reason == "unsupported_format"


@pytest.mark.parametrize(
    "data",
    [
        render_png(ASCII_PAYLOAD)[:200],
        PNG_SIGNATURE + b"garbage" * 10,
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    ],
    ids=["truncated-png", "png-garbage", "jpeg-garbage", "gif-header", "webp-header"],
)
def test_unreadable_bytes(data: bytes) -> None:
    with pytest.raises(QrImageError, match="truncated or corrupt") as caught:
        decode_image(data)
    assert caught.value.reason == "unreadable"


def test_image_without_a_code() -> None:
    with pytest.raises(QrImageError, match="no QR code was found") as caught:
        decode_image(encode(Image.new("L", (400, 300), 255), "PNG"))
    assert caught.value.reason == "no_code"


def test_a_micro_qr_code_is_not_an_emvco_code() -> None:
    buffer = io.BytesIO()
    segno.make("12345", micro=True).save(buffer, kind="png", scale=10)
    assert reason_of(buffer.getvalue()) == "no_code"


@pytest.mark.parametrize("second", ["another code", ASCII_PAYLOAD], ids=["different", "same"])
def test_two_codes_side_by_side(second: str) -> None:
    first = grey(render_png(ASCII_PAYLOAD, scale=4))
    other = grey(render_png(second, scale=4))
    picture = canvas(
        (first.width + other.width + 40, max(first.height, other.height)), first, other
    )
    with pytest.raises(QrImageError, match="holds 2 QR codes") as caught:
        decode_image(encode(picture, "PNG"))
    assert caught.value.reason == "several_codes"


def test_damaged_code() -> None:
    code = grey(render_png(EMVCO_EXAMPLE))
    width, height = code.size
    ImageDraw.Draw(code).rectangle((width * 0.3, height * 0.3, width * 0.7, height * 0.7), fill=255)
    with pytest.raises(QrImageError, match="too much of it cannot be read") as caught:
        decode_image(encode(code, "PNG"))
    assert caught.value.reason == "damaged_code"


_SEEDS = [
    render_png(EMVCO_EXAMPLE, scale=2),
    encode(grey(render_png(EMVCO_EXAMPLE, scale=2)), "JPEG"),
    encode(grey(render_png(EMVCO_EXAMPLE, scale=2)), "GIF"),
    encode(grey(render_png(EMVCO_EXAMPLE, scale=2)), "WEBP"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(_SEEDS),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=8),
)
def test_damaged_uploads_raise_only_qr_image_errors(
    seed: bytes, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(seed[: max(1, int(len(seed) * cut))])
    for where, value in flips:
        data[int(where * len(data))] = value
    try:
        text = decode_image(bytes(data))
    except QrImageError as exc:
        assert str(exc)
    else:
        assert isinstance(text, str)

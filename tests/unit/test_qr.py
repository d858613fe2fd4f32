"""QR codes for the web pages (zhifu.identity.qr).

No QR decoder is installed, so the tests check what can be checked without
one: the SVG is well-formed XML with the SVG namespace and no XML
declaration, the PNG is a PNG, both are sized for the symbol segno would
make at level M plus the quiet zone, and the limits hold at and one past.
"""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET

import pytest
import segno

from zhifu.identity.qr import (
    QR_QUIET_ZONE_MODULES,
    QR_SCALE_PX,
    QR_TEXT_CHARS_MAX,
    QR_TEXT_UTF8_BYTES_MAX,
    qr_data_uri,
    qr_png,
    qr_svg,
)

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
URI = (
    "otpauth://totp/zhifu:li.lei%40example.cn?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=zhifu"
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _expected_size_px(text: str | bytes) -> int:
    symbol = segno.make(text, error="M", micro=False, boost_error=False)
    width, height = symbol.symbol_size(scale=QR_SCALE_PX, border=QR_QUIET_ZONE_MODULES)
    assert width == height
    return int(width)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_SIGNATURE)
    # The IHDR chunk comes first: length, type, then width and height.
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_svg_is_well_formed_and_inlineable() -> None:
    svg = qr_svg(URI)
    assert svg.startswith("<svg")
    assert "<?xml" not in svg
    root = ET.fromstring(svg)
    assert root.tag == f"{{{SVG_NAMESPACE}}}svg"
    size = _expected_size_px(URI)
    assert root.attrib["width"] == str(size)
    assert root.attrib["height"] == str(size)


def test_svg_paints_the_light_modules_white() -> None:
    # A transparent background would vanish on a page in dark mode.
    assert 'fill="#fff"' in qr_svg(URI)


def test_svg_matches_segno_at_level_m_with_a_quiet_zone() -> None:
    expected = segno.make(URI, error="M", micro=False, boost_error=False).svg_inline(
        scale=QR_SCALE_PX, border=QR_QUIET_ZONE_MODULES, dark="#000", light="#fff"
    )
    # Same drawing; ours also names the SVG namespace.
    assert qr_svg(URI).replace(f' xmlns="{SVG_NAMESPACE}"', "") == expected


def test_same_text_gives_the_same_svg() -> None:
    assert qr_svg(URI) == qr_svg(URI)
    assert qr_svg(URI) != qr_svg(URI + "x")


def test_png_has_the_expected_size() -> None:
    size = _expected_size_px(URI)
    assert _png_size(qr_png(URI)) == (size, size)


def test_data_uri_holds_the_svg() -> None:
    prefix = "data:image/svg+xml;base64,"
    uri = qr_data_uri(URI)
    assert uri.startswith(prefix)
    assert base64.b64decode(uri.removeprefix(prefix), validate=True).decode() == qr_svg(URI)


def test_non_ascii_text_is_encoded_as_utf8_bytes() -> None:
    text = "智付 zhifu"
    root = ET.fromstring(qr_svg(text))
    assert root.attrib["width"] == str(_expected_size_px(text.encode("utf-8")))


def test_character_limit() -> None:
    at_limit = "a" * QR_TEXT_CHARS_MAX
    assert qr_svg(at_limit).startswith("<svg")
    with pytest.raises(ValueError, match=f"{QR_TEXT_CHARS_MAX + 1} characters; at most"):
        qr_svg(at_limit + "a")


def test_utf8_byte_limit() -> None:
    # 776 three-byte characters and 3 ASCII: 779 characters, 2331 bytes.
    at_limit = "中" * 776 + "abc"
    assert len(at_limit.encode("utf-8")) == QR_TEXT_UTF8_BYTES_MAX
    assert len(at_limit) <= QR_TEXT_CHARS_MAX
    assert qr_svg(at_limit).startswith("<svg")
    with pytest.raises(ValueError, match=f"{QR_TEXT_UTF8_BYTES_MAX + 1} bytes in UTF-8"):
        qr_svg(at_limit + "d")


def test_limits_apply_to_every_format() -> None:
    too_long = "a" * (QR_TEXT_CHARS_MAX + 1)
    with pytest.raises(ValueError, match="characters"):
        qr_png(too_long)
    with pytest.raises(ValueError, match="characters"):
        qr_data_uri(too_long)


def test_empty_text_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        qr_svg("")


def test_non_string_is_refused() -> None:
    with pytest.raises(TypeError, match="str"):
        qr_svg(b"bytes")  # type: ignore[arg-type]

"""QR codes for the web pages (TOTP enrolment and the like), drawn with segno.

Design note. Pure: text in, an image as a string or bytes out, no files.

Rules and invariants:

1. Error correction level M (about 15% of the symbol may be damaged), fixed:
   segno's automatic boost is off, so the same text always gives the same
   symbol, and M is the usual choice for a code read from a clean screen.
2. A quiet zone of ``QR_QUIET_ZONE_MODULES`` (4) modules, the minimum ISO/IEC
   18004 requires; scanners fail without it on busy pages.
3. Light modules are painted white, never left transparent, so the code
   still scans on a page in dark mode.
4. Text is limited to ``QR_TEXT_CHARS_MAX`` characters and
   ``QR_TEXT_UTF8_BYTES_MAX`` bytes in UTF-8; past either, ``ValueError``
   says which limit and by how much. Non-ASCII text is encoded as UTF-8 bytes
   (byte mode): segno would otherwise pick Shift_JIS kanji mode for some
   Chinese text, which phone scanners decode less reliably than UTF-8.
5. The SVG has no XML declaration, so it can be inlined in HTML, but keeps the
   SVG namespace, so it is also a valid standalone file or data URI.
"""

from __future__ import annotations

import base64
import io
from typing import Final

import segno

QR_TEXT_CHARS_MAX: Final = 1024
# What the largest symbol (version 40) holds in byte mode at level M; ASCII
# text within QR_TEXT_CHARS_MAX always fits.
QR_TEXT_UTF8_BYTES_MAX: Final = 2331
QR_ERROR_LEVEL: Final = "M"
QR_QUIET_ZONE_MODULES: Final = 4
# Pixels per module: a version 3 symbol (an otpauth URI) comes out at
# (29 + 8) * 5 = 185 px, easy for a phone camera to read off a screen.
QR_SCALE_PX: Final = 5
QR_DARK_COLOUR: Final = "#000"
QR_LIGHT_COLOUR: Final = "#fff"


def qr_svg(text: str) -> str:
    """``text`` as an SVG QR code: a ``<svg>`` element without an XML declaration.

    Raises ``TypeError`` for a non-``str`` and ``ValueError`` for empty text
    or text past ``QR_TEXT_CHARS_MAX`` / ``QR_TEXT_UTF8_BYTES_MAX``.
    """
    buffer = io.BytesIO()
    _make(text).save(
        buffer,
        kind="svg",
        xmldecl=False,
        svgns=True,
        nl=False,
        scale=QR_SCALE_PX,
        border=QR_QUIET_ZONE_MODULES,
        dark=QR_DARK_COLOUR,
        light=QR_LIGHT_COLOUR,
    )
    return buffer.getvalue().decode("utf-8")


def qr_png(text: str) -> bytes:
    """``text`` as a PNG QR code; raises as :func:`qr_svg` does."""
    buffer = io.BytesIO()
    _make(text).save(
        buffer,
        kind="png",
        scale=QR_SCALE_PX,
        border=QR_QUIET_ZONE_MODULES,
        dark=QR_DARK_COLOUR,
        light=QR_LIGHT_COLOUR,
    )
    return buffer.getvalue()


def qr_data_uri(text: str) -> str:
    """``text`` as a ``data:image/svg+xml;base64,...`` URI for an ``<img src>``.

    Raises as :func:`qr_svg` does.
    """
    encoded = base64.b64encode(qr_svg(text).encode("utf-8")).decode("ascii")
    return f"data:image/svg+xml;base64,{encoded}"


def _make(text: str) -> segno.QRCode:
    """The QR symbol for ``text``, after checking the limits."""
    if not isinstance(text, str):
        raise TypeError(f"QR code text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("QR code text is empty; there is nothing to encode")
    if len(text) > QR_TEXT_CHARS_MAX:
        raise ValueError(
            f"QR code text is {len(text)} characters; at most {QR_TEXT_CHARS_MAX} are allowed"
        )
    # Let segno choose the densest mode for ASCII (numeric, alphanumeric or
    # byte); anything else goes as UTF-8 bytes (see the design note).
    content: str | bytes = text
    if not text.isascii():
        content = text.encode("utf-8")
        if len(content) > QR_TEXT_UTF8_BYTES_MAX:
            raise ValueError(
                f"QR code text is {len(content)} bytes in UTF-8; "
                f"at most {QR_TEXT_UTF8_BYTES_MAX} are allowed"
            )
    return segno.make(content, error=QR_ERROR_LEVEL, micro=False, boost_error=False)

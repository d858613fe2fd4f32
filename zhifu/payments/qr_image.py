"""QR code images of EMVCo payloads: draw one as PNG or SVG, or read one from an upload.

Design note
-----------
Pure: text or bytes in, text or bytes out; no files, no network. The payload
is neither checked nor parsed here: check it with :func:`zhifu.payments.emvco.parse`
before drawing it, and after reading it, since an uploaded image may hold any
text at all.

Drawing (segno):

1. Error correction level M (about 15% of the symbol may be damaged), fixed:
   segno's automatic boost is off, so a payload always gives the same symbol.
2. A payload that is not plain ASCII (a Chinese name in the language
   template, 64) is written as UTF-8 in byte mode, without an ECI header,
   as wallets expect: segno would otherwise pick ISO 8859-1 or Shift_JIS
   kanji mode for some texts, and the CRC of the payload covers its UTF-8
   bytes. Plain ASCII lets segno pick the densest mode.
3. The payload is at most ``PAYLOAD_LENGTH_MAX`` (512) characters, EMVCo's
   limit, so at most 2,048 UTF-8 bytes: any such payload fits the largest
   symbol (version 40 holds 2,331 bytes at level M). Past the limit, or
   empty, it raises :class:`QrCodeError` for the field ``payload``, as
   :func:`~zhifu.payments.emvco.parse` does.
4. ``scale`` is pixels per module, ``SCALE_MIN`` to ``SCALE_MAX``;
   ``border``, the quiet zone, is ``BORDER_MIN`` to ``BORDER_MAX`` modules
   and defaults to ``BORDER_DEFAULT`` (4), the minimum ISO/IEC 18004 asks
   for: give less only where the page around the code is light already.
   Past either bound :class:`QrImageError` says which. The largest image
   (version 40 at ``SCALE_MAX`` with ``BORDER_MAX``) stays under
   ``IMAGE_PIXELS_MAX``, so :func:`decode_image` reads all that is drawn here.
5. Dark modules are black and light ones white, never transparent, so a code
   still scans on a page in dark mode.
6. The SVG is self-contained: no XML declaration (it can be inlined in
   HTML), the SVG namespace, a ``<title>`` for screen readers, and no
   scripts, styles, links or other external references.

Reading (Pillow and zxing-cpp). An upload is hostile until shown otherwise;
the checks run in this order and the first that fails raises
:class:`QrImageError` with its ``reason``:

1. ``empty`` without a byte; ``too_large`` past ``IMAGE_BYTES_MAX`` bytes.
2. ``unsupported_format`` unless the first bytes are those of a PNG, JPEG,
   WebP or GIF image. Pillow is then allowed to open that one format only,
   so no other decoder (and none that runs an outside program) sees the
   bytes.
3. ``too_large`` when the width times the height in the header passes
   ``IMAGE_PIXELS_MAX``, checked before a single pixel is decoded.
4. ``unreadable`` when the (first) frame does not decode: truncated or
   corrupt. Transparent pixels count as light.
5. zxing-cpp looks for QR codes (model 2, which EMVCo uses): ``no_code``
   when it finds none, ``damaged_code`` when it finds one whose error
   correction fails, ``several_codes`` when it reads more than one.
6. The text is the symbol's bytes read as UTF-8; bytes that are not UTF-8
   (a code written in kanji mode or with an ECI for another character set)
   are read as zxing-cpp reads them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import segno
import zxingcpp
from PIL import Image, UnidentifiedImageError

from zhifu.payments.emvco import PAYLOAD_LENGTH_MAX
from zhifu.payments.errors import QrCodeError, QrImageError, QrImageReason

ERROR_CORRECTION_LEVEL: Final = "M"
SCALE_MIN: Final = 1
SCALE_MAX: Final = 20
# Pixels per module of a code printed at a till: a version 10 symbol (a
# payload of about 200 characters) comes out at (57 + 8) * 8 = 520 px.
SCALE_DEFAULT: Final = 8
BORDER_MIN: Final = 0
BORDER_MAX: Final = 16
BORDER_DEFAULT: Final = 4  # the quiet zone ISO/IEC 18004 asks for
SVG_TITLE: Final = "Payment QR code (EMVCo)"
DARK_COLOUR: Final = "#000"
LIGHT_COLOUR: Final = "#fff"

IMAGE_BYTES_MAX: Final = 2 * 1024 * 1024
# 25 megapixels: a phone photo (12 MP) fits, and so does the largest code
# render_png draws, (177 + 2 * 16) * 20 = 4,180 px square, 17.5 MP. Decoded
# as 8-bit grey it takes 25 MB of memory.
IMAGE_PIXELS_MAX: Final = 25_000_000
_UPLOAD_FORMATS_TEXT: Final = "PNG, JPEG, WebP or GIF"
_QR_MODEL_2: Final = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCodeModel2)


# --- drawing ---------------------------------------------------------------------


def render_png(payload: str, *, scale: int = SCALE_DEFAULT, border: int = BORDER_DEFAULT) -> bytes:
    """``payload`` as a black-on-white PNG QR code at level M.

    Raises :class:`QrCodeError` (field ``payload``) for an empty payload or
    one past ``PAYLOAD_LENGTH_MAX`` characters, and :class:`QrImageError`
    for ``scale`` or ``border`` out of bounds.
    """
    symbol = _symbol(payload, scale, border)
    buffer = io.BytesIO()
    symbol.save(
        buffer, kind="png", scale=scale, border=border, dark=DARK_COLOUR, light=LIGHT_COLOUR
    )
    return buffer.getvalue()


def render_svg(payload: str, *, scale: int = SCALE_DEFAULT, border: int = BORDER_DEFAULT) -> str:
    """``payload`` as a self-contained ``<svg>`` element (no XML declaration); raises as
    :func:`render_png` does."""
    symbol = _symbol(payload, scale, border)
    buffer = io.BytesIO()
    symbol.save(
        buffer,
        kind="svg",
        xmldecl=False,
        svgns=True,
        nl=False,
        title=SVG_TITLE,
        scale=scale,
        border=border,
        dark=DARK_COLOUR,
        light=LIGHT_COLOUR,
    )
    return buffer.getvalue().decode("utf-8")


def _symbol(payload: str, scale: int, border: int) -> segno.QRCode:
    """The QR symbol of ``payload``, after checking it and the drawing options."""
    if not isinstance(payload, str):
        raise QrCodeError("payload", f"payload must be text, got {type(payload).__name__}")
    if not payload:
        raise QrCodeError("payload", "payload is empty; there is nothing to draw")
    if len(payload) > PAYLOAD_LENGTH_MAX:
        raise QrCodeError(
            "payload",
            f"payload is {len(payload)} characters long; at most {PAYLOAD_LENGTH_MAX} are allowed",
        )
    _check_bound("scale_out_of_range", "scale", scale, (SCALE_MIN, SCALE_MAX), "pixels per module")
    _check_bound(
        "border_out_of_range", "border", border, (BORDER_MIN, BORDER_MAX), "modules of quiet zone"
    )
    if payload.isascii():
        return segno.make(payload, error=ERROR_CORRECTION_LEVEL, micro=False, boost_error=False)
    return segno.make(
        payload,
        error=ERROR_CORRECTION_LEVEL,
        mode="byte",
        encoding="utf-8",
        eci=False,
        micro=False,
        boost_error=False,
    )


def _check_bound(
    reason: QrImageReason, name: str, value: int, bounds: tuple[int, int], unit: str
) -> None:
    low, high = bounds
    # bool is an int, but scale=True is a mistake, not a scale of 1.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise QrImageError(
            reason, f"{name} must be a whole number from {low} to {high} ({unit}), got {value!r}"
        )


# --- reading ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Format:
    """An image format uploads may use: its name for people and for Pillow."""

    name: str
    pillow_name: str


_PNG: Final = _Format("PNG", "PNG")
_JPEG: Final = _Format("JPEG", "JPEG")
_WEBP: Final = _Format("WebP", "WEBP")
_GIF: Final = _Format("GIF", "GIF")


def _upload_format(data: bytes) -> _Format | None:
    """The allowed format whose signature ``data`` starts with, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if data.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _WEBP
    if data[:6] in {b"GIF87a", b"GIF89a"}:
        return _GIF
    return None


def _refused_format_name(data: bytes) -> str | None:
    """What a refused upload looks like, for the message, when it is a well-known format."""
    if data.startswith(b"BM"):
        return "a BMP image"
    if data[:4] in {b"II*\x00", b"MM\x00*"}:
        return "a TIFF image"
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if data[4:8] == b"ftyp":
        return "a HEIC or AVIF image (an ISO media file)"
    if data.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "a JPEG XL image"
    if data.lstrip()[:1] == b"<":
        return "SVG, HTML or other XML text"
    return None


def decode_image(data: bytes) -> str:
    """The text of the one QR code in an uploaded PNG, JPEG, WebP or GIF image.

    The text is not checked: run :func:`zhifu.payments.emvco.parse` on it.
    Raises :class:`QrImageError`, with the ``reason`` of the design note's
    first failed check, for an empty or too large upload, another format,
    bytes that do not decode, and an image without exactly one readable QR
    code.
    """
    image = _open_upload(data)
    found = zxingcpp.read_barcodes(_grey(image), formats=_QR_MODEL_2, return_errors=True)
    readable = [barcode for barcode in found if barcode.valid and barcode.error is None]
    if len(readable) > 1:
        raise QrImageError(
            "several_codes",
            f"the image holds {len(readable)} QR codes; upload an image of exactly one,"
            " cropped to the code you want read",
        )
    if not readable:
        if found:
            raise QrImageError(
                "damaged_code",
                "the image holds a QR code, but too much of it cannot be read; upload a"
                " sharper, evenly lit picture of the whole code, quiet zone included",
            )
        raise QrImageError(
            "no_code",
            "no QR code was found in the image; upload a picture of the whole code, with"
            " a light margin around it, straight on and in focus",
        )
    return _text(readable[0])


def _open_upload(data: bytes) -> Image.Image:
    """The upload's first frame, decoded, after the size, format and pixel checks."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"an upload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise QrImageError("empty", f"the upload is empty; send a {_UPLOAD_FORMATS_TEXT} image")
    if len(data) > IMAGE_BYTES_MAX:
        raise QrImageError(
            "too_large",
            f"the image is {len(data):,} bytes; at most {IMAGE_BYTES_MAX:,} bytes"
            f" ({IMAGE_BYTES_MAX // (1024 * 1024)} MiB) are allowed",
        )
    upload_format = _upload_format(data)
    if upload_format is None:
        looks_like = _refused_format_name(data)
        raise QrImageError(
            "unsupported_format",
            f"the upload is not a {_UPLOAD_FORMATS_TEXT} image, the only formats allowed"
            if looks_like is None
            else f"the upload is {looks_like}; allowed are {_UPLOAD_FORMATS_TEXT} images",
        )
    try:
        image = Image.open(io.BytesIO(data), formats=[upload_format.pillow_name])
    except Image.DecompressionBombError as exc:  # a header far past Pillow's own limit
        raise _too_many_pixels(None) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _unreadable(upload_format) from exc
    width, height = image.size
    if width * height > IMAGE_PIXELS_MAX:
        raise _too_many_pixels((width, height))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _unreadable(upload_format) from exc
    return image


def _too_many_pixels(size: tuple[int, int] | None) -> QrImageError:
    if size is None:
        found = f"far more than {IMAGE_PIXELS_MAX:,} pixels"
    else:
        found = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels"
    return QrImageError(
        "too_large",
        f"the image has {found}; at most {IMAGE_PIXELS_MAX:,} are allowed"
        " (for example 5000 x 5000): scale it down or crop it to the QR code",
    )


def _unreadable(upload_format: _Format) -> QrImageError:
    return QrImageError(
        "unreadable",
        f"the upload starts like a {upload_format.name} image but cannot be decoded: it is"
        f" truncated or corrupt; send a complete {_UPLOAD_FORMATS_TEXT} image",
    )


def _grey(image: Image.Image) -> Image.Image:
    """8-bit grey, transparent pixels white (light), 16-bit grey brought down to 8."""
    if image.mode in {"I", "I;16", "I;16B", "I;16L"}:
        image = image.convert("I").point(lambda value: value / 256)
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, LIGHT_COLOUR)
        image = Image.alpha_composite(white, rgba)
    return image.convert("L")


def _text(barcode: zxingcpp.Barcode) -> str:
    try:
        return barcode.bytes.decode("utf-8")
    except UnicodeDecodeError:
        return barcode.text

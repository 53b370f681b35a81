"""Turn an image file into WebP thumbnails.

Pure: a path in, bytes out; nothing here knows about S3 or the database.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

# HEIC/HEIF through pillow-heif; AVIF is built into Pillow.
register_heif_opener()

# Pillow's format names for the MIME types we accept.
PILLOW_FORMATS = {
    "image/jpeg": {"JPEG", "MPO"},
    "image/png": {"PNG"},
    "image/webp": {"WEBP"},
    "image/gif": {"GIF"},
    "image/heic": {"HEIF"},
    "image/heif": {"HEIF"},
    "image/avif": {"AVIF", "HEIF"},
}
WEBP_QUALITY = 82


class InvalidImage(Exception):
    """The file cannot become thumbnails; the message is shown to its owner."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class Thumbnail:
    name: str
    width: int
    height: int
    data: bytes


def make_thumbnails(
    path: Path, sizes: list[int], max_pixels: int, expected_type: str, description: str
) -> tuple[ImageInfo, list[Thumbnail]]:
    """Thumbnails no larger than each size on their longest side.

    Raises InvalidImage for anything that is not a sound image of the
    expected type: wrong format, too many pixels, truncated or corrupt data.
    """
    if not sizes:
        raise ValueError("make_thumbnails needs at least one size")
    limit = f"the limit is {max_pixels / 1_000_000:g} megapixels"
    # Pillow refuses images beyond twice its own cap before ours is consulted;
    # a cap set higher than Pillow's must raise Pillow's too.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        # Our own pixel cap, checked below, replaces Pillow's warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            # Pillow refuses outright, from the header, beyond twice its own
            # cap (about 179 megapixels), before ours can see the dimensions.
            raise InvalidImage(f"The image is too large; {limit}.") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise InvalidImage(f"The file is not a readable {description}.") from None
    with image:
        if image.format not in PILLOW_FORMATS.get(expected_type, set()):
            raise InvalidImage(f"The file is not a {description}.")
        # Only the header has been read so far: refuse bombs before decoding.
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImage(f"The image is {width}×{height} pixels; {limit}.")
        oriented_width, oriented_height = _oriented_size(image, width, height)
        info = ImageInfo(format=image.format or "", width=oriented_width, height=oriented_height)
        try:
            thumbnails = _render(image, sorted(set(sizes), reverse=True))
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            raise InvalidImage(f"The {description} is truncated or corrupt.") from None
    by_size = {int(t.name): t for t in thumbnails}
    return info, [by_size[size] for size in sizes if size in by_size]


def _render(image: Image.Image, sizes_descending: list[int]) -> list[Thumbnail]:
    # JPEG can decode at 1/2, 1/4 or 1/8 scale: far less work and memory for a
    # photo that ends up small. draft() keeps both sides at least as large as
    # asked, so ask for the largest thumbnail's own shape, not a square.
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", _fit(image.size, sizes_descending[0]))
    image.seek(0)  # animations: the first frame
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return _shrink(_to_display_mode(image), sizes_descending, _rgb_icc_profile(image))


def make_pdf_preview(path: Path, sizes: list[int]) -> list[Thumbnail]:
    """Thumbnails of a PDF's first page, or none when it cannot be rendered.

    A PDF that PDFium cannot open (encrypted, damaged) is still a PDF: it
    simply gets no preview.
    """
    sizes_descending = sorted(set(sizes), reverse=True)
    try:
        document = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError:
        return []
    try:
        if len(document) == 0:
            return []
        page = document[0]
        width, height = page.get_size()  # in points
        # Render straight at the largest thumbnail's size, never above 4×.
        scale = min(4.0, sizes_descending[0] / max(width, height, 1))
        image = page.render(scale=scale, fill_color=(255, 255, 255, 255)).to_pil()
    except pdfium.PdfiumError:
        return []
    finally:
        document.close()
    thumbnails = _shrink(image.convert("RGB"), sizes_descending, None)
    by_size = {int(t.name): t for t in thumbnails}
    return [by_size[size] for size in sizes if size in by_size]


def _shrink(
    current: Image.Image, sizes_descending: list[int], icc_profile: bytes | None
) -> list[Thumbnail]:
    thumbnails = []
    for size in sizes_descending:
        # In place: each smaller size is made from the previous one, already
        # encoded, rather than from the original.
        current.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        thumbnails.append(
            Thumbnail(
                name=str(size),
                width=current.width,
                height=current.height,
                data=_encode_webp(current, icc_profile),
            )
        )
    return thumbnails


def _fit(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """`size` scaled so its longest side is `longest`, keeping its shape."""
    width, height = size
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_display_mode(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image has transparency; CMYK, palettes, 16-bit..."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale down to 8 bits, as convert() would clip (and
        # then match every clipped pixel against a transparent colour).
        grey = image.point(lambda value: value / 256).convert("L")
        transparent = image.info.get("transparency")
        if transparent is None:
            return grey.convert("RGB")
        opacity = [255] * 65536
        opacity[transparent] = 0
        alpha = image.convert("I").point(opacity, "L")
        return Image.merge("RGBA", (grey, grey, grey, alpha))
    # Transparency is an alpha band, or a tRNS entry in a palette, greyscale
    # or RGB image.
    if "A" in image.getbands() or "transparency" in image.info:
        return image if image.mode == "RGBA" else image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def _rgb_icc_profile(image: Image.Image) -> bytes | None:
    """The image's ICC profile if it describes RGB, as every thumbnail is RGB.

    A CMYK or greyscale profile on RGB pixels makes viewers show wrong colours
    or ignore it; bytes 16 to 20 of a profile name its colour space.
    """
    profile = image.info.get("icc_profile")
    return profile if profile and profile[16:20] == b"RGB " else None


def _encode_webp(image: Image.Image, icc_profile: bytes | None) -> bytes:
    buffer = io.BytesIO()
    # No exif= argument: EXIF (and GPS in it) never reaches a thumbnail.
    options = {"icc_profile": icc_profile} if icc_profile else {}
    image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=4, **options)
    return buffer.getvalue()


def _oriented_size(image: Image.Image, width: int, height: int) -> tuple[int, int]:
    """The size as displayed: EXIF orientations 5 to 8 swap the sides."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return width, height
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)

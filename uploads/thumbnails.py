"""Turn an image file into WebP thumbnails.

Pure: a path in, bytes out; nothing here knows about S3 or the database.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

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
    with warnings.catch_warnings():
        # Our own pixel cap, checked below, replaces Pillow's warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
            raise InvalidImage(f"The file is not a readable {description}.") from None
    with image:
        if image.format not in PILLOW_FORMATS.get(expected_type, set()):
            raise InvalidImage(f"The file is not a {description}.")
        # Only the header has been read so far: refuse bombs before decoding.
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImage(
                f"The image is {width}×{height} pixels; the limit is "
                f"{max_pixels / 1_000_000:g} megapixels."
            )
        oriented_width, oriented_height = _oriented_size(image, width, height)
        info = ImageInfo(format=image.format or "", width=oriented_width, height=oriented_height)
        try:
            thumbnails = _render(image, sorted(set(sizes), reverse=True))
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
            raise InvalidImage(f"The {description} is truncated or corrupt.") from None
    by_size = {int(t.name): t for t in thumbnails}
    return info, [by_size[size] for size in sizes if size in by_size]


def _render(image: Image.Image, sizes_descending: list[int]) -> list[Thumbnail]:
    largest = sizes_descending[0]
    # JPEG can decode at 1/2, 1/4 or 1/8 scale: far less work and memory for a
    # photo that ends up small. draft() keeps at least the requested size.
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB", (largest, largest))
    icc_profile = image.info.get("icc_profile")
    image.seek(0)  # animations: the first frame
    image.load()
    upright = ImageOps.exif_transpose(image)
    upright = _to_display_mode(upright)
    thumbnails = []
    current = upright
    for size in sizes_descending:
        # Each smaller size is made from the previous result, not the original.
        current = current.copy()
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


def _to_display_mode(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image has transparency; CMYK, palettes, 16-bit..."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        return image if image.mode == "RGBA" else image.convert("RGBA")
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale down to 8 bits before converting.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGB")


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

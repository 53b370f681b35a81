"""What kinds of file users may upload, and what a file really is.

The declared content type comes from the browser and is only a claim: the
type sniffed from the first bytes decides.
"""

from __future__ import annotations

from pathlib import Path

import filetype

# Every type this product knows how to handle, with the extension its S3 key
# gets and the name shown to users. UPLOAD_ALLOWED_TYPES picks among these.
KNOWN_TYPES: dict[str, tuple[str, str]] = {
    "image/jpeg": (".jpg", "JPEG image"),
    "image/png": (".png", "PNG image"),
    "image/webp": (".webp", "WebP image"),
    "image/gif": (".gif", "GIF image"),
    "image/heic": (".heic", "HEIC image"),
    "image/heif": (".heif", "HEIF image"),
    "image/avif": (".avif", "AVIF image"),
    "application/pdf": (".pdf", "PDF document"),
}

# Types whose bytes are indistinguishable enough that either claim is honest.
# An animated PNG is a PNG to every reader, whatever the sniffer calls it.
_SAME_KIND = {"image/heif": "image/heic", "image/apng": "image/png"}

# Brands of HEVC-coded HEIF the filetype package does not know: cameras write
# "heix" (10-bit), and "hevc"/"hevx" mark image sequences such as bursts.
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}


def extension_for(content_type: str) -> str:
    return KNOWN_TYPES[content_type][0]


def describe(content_type: str) -> str:
    known = KNOWN_TYPES.get(content_type)
    return known[1] if known else content_type


def is_image(content_type: str) -> bool:
    return content_type.startswith("image/")


def sniff(path: Path) -> str | None:
    """The MIME type the file's own bytes say it is, or None if unknown."""
    kind = filetype.guess_mime(str(path))
    if isinstance(kind, str):
        return kind
    return "image/heic" if _ftyp_brands(path) & _HEIC_BRANDS else None


def _ftyp_brands(path: Path) -> set[bytes]:
    """The major and compatible brands of an ISO media file's leading ftyp box."""
    with path.open("rb") as file:
        head = file.read(256)
    if head[4:8] != b"ftyp":
        return set()
    box = head[8 : int.from_bytes(head[:4], "big")]
    # The major brand, a minor version number, then the compatible brands.
    return {box[:4]} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}


def matches(declared: str, detected: str | None) -> bool:
    if detected is None:
        return False
    return _SAME_KIND.get(declared, declared) == _SAME_KIND.get(detected, detected)

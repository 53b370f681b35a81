"""Real files for tests, made at test time with Pillow and pillow-heif.

Every helper returns bytes and is deterministic: no randomness, no clock, so
a failing test fails the same way twice. Colours are chosen so a test can tell
what it is looking at (red above blue is upright; blue above red is not).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image, ImageCms, ImageDraw
from pillow_heif import register_heif_opener

register_heif_opener()

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)


def photo(size: tuple[int, int] = (640, 480)) -> Image.Image:
    """An RGB picture with gradients and shapes, so encoders have work to do."""
    width, height = size
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    blue = Image.radial_gradient("L").resize(size)
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=(250, 200, 40))
    draw.rectangle((width // 10, height // 10, width // 5, height // 5), fill=(10, 80, 20))
    return image


def red_over_blue(size: tuple[int, int] = (300, 400)) -> Image.Image:
    """Red top half, blue bottom half: shows at a glance which way is up."""
    width, height = size
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, width, height // 2))
    return image


def save(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Testcam"
    exif[ExifTags.Base.Model] = "Pocket 1"
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 12.5)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (4.0, 53.0, 42.0)
    return exif


def jpeg(
    size: tuple[int, int] = (640, 480), *, gps: bool = True, icc_profile: bytes | None = None
) -> bytes:
    """A photo-like JPEG, by default carrying EXIF with a GPS position."""
    options: dict[str, object] = {"quality": 90}
    if gps:
        options["exif"] = exif_with_gps()
    if icc_profile:
        options["icc_profile"] = icc_profile
    return save(photo(size), "JPEG", **options)


def rotated_photo(format: str = "JPEG", upright_size: tuple[int, int] = (300, 400)) -> bytes:
    """A portrait photo stored sideways, as phones do, with EXIF orientation 6.

    Displayed correctly it is `upright_size` with red above blue; the stored
    pixels are that picture turned a quarter anticlockwise.
    """
    stored = red_over_blue(upright_size).transpose(Image.Transpose.ROTATE_90)
    return save(stored, format, exif=exif_with_gps(orientation=6))


def cmyk_jpeg(size: tuple[int, int] = (200, 100), icc_profile: bytes | None = None) -> bytes:
    """Pure red in CMYK (no cyan, full magenta and yellow, no black)."""
    options: dict[str, object] = {"quality": 95}
    if icc_profile:
        options["icc_profile"] = icc_profile
    return save(Image.new("CMYK", size, (0, 255, 255, 0)), "JPEG", **options)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def cmyk_profile() -> bytes:
    """The 128-byte header of an ICC profile for CMYK data; enough to be recognised."""
    header = bytearray(128)
    header[0:4] = (128).to_bytes(4, "big")
    header[12:16] = b"prtr"
    header[16:20] = b"CMYK"
    header[20:24] = b"Lab "
    header[36:40] = b"acsp"
    return bytes(header)


def truncated_jpeg() -> bytes:
    """The first half of a sound JPEG, as left by an interrupted upload."""
    data = jpeg((800, 600), gps=False)
    return data[: len(data) // 2]


def png_rgba(size: tuple[int, int] = (400, 300)) -> bytes:
    """Opaque red on the left half, fully transparent on the right."""
    width, height = size
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((*RED, 255), (0, 0, width // 2, height))
    return save(image, "PNG")


def png_palette_transparent(size: tuple[int, int] = (400, 300)) -> bytes:
    """A palette PNG: index 0 transparent (right half), index 1 red (left half)."""
    width, height = size
    image = Image.new("P", size, 0)
    image.putpalette([0, 0, 0, *RED])
    image.paste(1, (0, 0, width // 2, height))
    return save(image, "PNG", transparency=0)


def png_grey16(size: tuple[int, int] = (400, 300), *, transparent_white: bool = False) -> bytes:
    """16-bit greyscale: left half 0x8080 (mid grey), right half 0xFFFF (white).

    With `transparent_white`, a tRNS chunk makes the white half transparent.
    """
    width, height = size
    image = Image.new("I;16", size, 0xFFFF)
    image.paste(0x8080, (0, 0, width // 2, height))
    return save(image, "PNG", **({"transparency": 0xFFFF} if transparent_white else {}))


def png_transparent_colour(mode: str, size: tuple[int, int] = (400, 300)) -> bytes:
    """A greyscale ("L") or "RGB" PNG whose black is transparent by a tRNS chunk.

    The left half is opaque (white, or red), the right half black.
    """
    width, height = size
    image = Image.new(mode, size, 0)
    image.paste(255 if mode == "L" else RED, (0, 0, width // 2, height))
    return save(image, "PNG", transparency=0 if mode == "L" else (0, 0, 0))


def webp(size: tuple[int, int] = (640, 480)) -> bytes:
    return save(photo(size), "WEBP", quality=85)


def animated_gif(size: tuple[int, int] = (320, 240)) -> bytes:
    """Three frames: red, then green, then blue."""
    frames = [Image.new("RGB", size, colour) for colour in (RED, GREEN, BLUE)]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_png(size: tuple[int, int] = (320, 240)) -> bytes:
    """An APNG of two frames, red then green; still a PNG to anything that reads PNG."""
    frames = [Image.new("RGB", size, colour) for colour in (RED, GREEN)]
    return save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def heic(size: tuple[int, int] = (640, 480)) -> bytes:
    return save(photo(size), "HEIF", quality=80)


def avif(size: tuple[int, int] = (640, 480)) -> bytes:
    return save(photo(size), "AVIF", quality=80)


def with_major_brand(isobmff: bytes, brand: bytes) -> bytes:
    """The same HEIF/AVIF file with another major brand in its ftyp box."""
    assert isobmff[4:8] == b"ftyp" and len(brand) == 4
    return isobmff[:8] + brand + isobmff[12:]


def html_as_jpeg() -> bytes:
    """What a file named photo.jpg may really hold."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>Not a photo</title></head>"
        b"<body><script>alert(document.cookie)</script></body></html>\n"
    )


def png_bomb(width: int = 20_000, height: int = 20_000, *, pixel_data: bool = True) -> bytes:
    """A valid, all-black 1-bit PNG of width×height that is small on disk.

    Written chunk by chunk with zlib so it takes little time and memory even
    when the picture would take gigabytes decoded. Without pixel data the file
    is a bare header: only a reader that stops at the header can call it too large.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    chunks = [_png_chunk(b"IHDR", header)]
    if pixel_data:
        row = bytes(1 + (width + 7) // 8)  # filter byte "none", then black pixels
        rows_per_block = max(1, 1_000_000 // len(row))
        compressor = zlib.compressobj(9)
        compressed = []
        for start in range(0, height, rows_per_block):
            compressed.append(compressor.compress(row * min(rows_per_block, height - start)))
        compressed.append(compressor.flush())
        chunks.append(_png_chunk(b"IDAT", b"".join(compressed)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pdf() -> bytes:
    """A minimal, valid one-page PDF saying "Hello", with a correct xref table."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        _pdf_stream(b"BT /F1 24 Tf 40 40 Td (Hello) Tj ET"),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _pdf_stream(content: bytes) -> bytes:
    return b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)

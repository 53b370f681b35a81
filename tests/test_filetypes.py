"""uploads/filetypes.py: what the bytes say a file is, and whether the claim holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import images
from uploads.filetypes import describe, extension_for, matches, sniff


def sniffed(tmp_path: Path, data: bytes) -> str | None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return sniff(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (images.jpeg, "image/jpeg"),
        (images.cmyk_jpeg, "image/jpeg"),
        (images.png_rgba, "image/png"),
        (images.png_grey16, "image/png"),
        (images.webp, "image/webp"),
        (images.animated_gif, "image/gif"),
        (images.heic, "image/heic"),
        (images.avif, "image/avif"),
        (images.pdf, "application/pdf"),
    ],
    ids=["jpeg", "cmyk-jpeg", "png", "png-16-bit", "webp", "gif", "heic", "avif", "pdf"],
)
def test_file_is_sniffed_from_its_bytes(
    tmp_path: Path, data: Callable[[], bytes], expected: str
) -> None:
    assert sniffed(tmp_path, data()) == expected


@pytest.mark.parametrize("brand", [b"heix", b"hevc"])
def test_heic_with_a_brand_filetype_does_not_know_is_sniffed_as_heic(
    tmp_path: Path, brand: bytes
) -> None:
    assert sniffed(tmp_path, images.with_major_brand(images.heic(), brand)) == "image/heic"


def test_other_iso_media_files_are_not_taken_for_heic(tmp_path: Path) -> None:
    # A Canon CR3 raw file starts with an ftyp box of brand "crx ".
    raw = b"\x00\x00\x00\x14ftypcrx \x00\x00\x00\x01crx " + bytes(64)

    assert sniffed(tmp_path, raw) is None


def test_html_named_jpg_is_not_sniffed_as_an_image(tmp_path: Path) -> None:
    detected = sniffed(tmp_path, images.html_as_jpeg())

    assert not matches("image/jpeg", detected)


@pytest.mark.parametrize(
    "data", [b"", b"hello, world\n", bytes(100)], ids=["empty", "text", "zeros"]
)
def test_unknown_bytes_sniff_as_nothing(tmp_path: Path, data: bytes) -> None:
    assert sniffed(tmp_path, data) is None


def test_truncated_jpeg_still_sniffs_as_jpeg(tmp_path: Path) -> None:
    # Sniffing reads the first bytes only; thumbnails find the damage.
    assert sniffed(tmp_path, images.truncated_jpeg()) == "image/jpeg"


def test_animated_png_is_accepted_as_png(tmp_path: Path) -> None:
    detected = sniffed(tmp_path, images.animated_png())

    assert detected == "image/apng"
    assert matches("image/png", detected)


@pytest.mark.parametrize(
    ("declared", "detected"),
    [
        ("image/jpeg", "image/jpeg"),
        ("application/pdf", "application/pdf"),
        ("image/heic", "image/heic"),
        ("image/heif", "image/heic"),
        ("image/heic", "image/heif"),
        ("image/heif", "image/heif"),
        ("image/png", "image/apng"),
    ],
)
def test_honest_claims_match(declared: str, detected: str) -> None:
    assert matches(declared, detected)


@pytest.mark.parametrize(
    ("declared", "detected"),
    [
        ("image/jpeg", None),
        ("image/jpeg", "image/png"),
        ("image/png", "image/jpeg"),
        ("image/avif", "image/heic"),
        ("image/heic", "image/avif"),
        ("image/jpeg", "image/apng"),
        ("application/pdf", "image/jpeg"),
        ("image/jpeg", "application/pdf"),
    ],
)
def test_false_claims_do_not_match(declared: str, detected: str | None) -> None:
    assert not matches(declared, detected)


def test_known_types_have_an_extension_and_a_name() -> None:
    assert extension_for("image/jpeg") == ".jpg"
    assert describe("image/heic") == "HEIC image"


def test_unknown_type_is_described_by_itself() -> None:
    assert describe("video/mp4") == "video/mp4"

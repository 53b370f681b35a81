"""uploads/thumbnails.py with real images made at test time: no S3, no database."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests import images
from uploads.filetypes import describe
from uploads.thumbnails import (
    ImageInfo,
    InvalidImage,
    Thumbnail,
    make_pdf_preview,
    make_thumbnails,
)

SIZES = [256, 1024]
MAX_PIXELS = 50_000_000


def thumbnails_of(
    tmp_path: Path,
    data: bytes,
    content_type: str = "image/jpeg",
    sizes: list[int] = SIZES,
    max_pixels: int = MAX_PIXELS,
) -> tuple[ImageInfo, list[Thumbnail]]:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return make_thumbnails(path, sizes, max_pixels, content_type, describe(content_type))


def decoded(thumbnail: Thumbnail) -> Image.Image:
    image = Image.open(io.BytesIO(thumbnail.data))
    image.load()
    return image


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple), f"{image.mode} pixel {value!r}"
    return value


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return len(pixel) == len(expected) and all(
        abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True)
    )


# Sizes


def test_large_photo_gets_each_size_on_its_longest_side(tmp_path: Path) -> None:
    info, made = thumbnails_of(tmp_path, images.jpeg((2000, 1500)))

    assert info == ImageInfo(format="JPEG", width=2000, height=1500)
    assert [(t.name, t.width, t.height) for t in made] == [("256", 256, 192), ("1024", 1024, 768)]


def test_thumbnails_come_back_in_the_order_asked(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.jpeg((2000, 1500)), sizes=[1024, 256])

    assert [t.name for t in made] == ["1024", "256"]


def test_small_image_is_never_upscaled(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.jpeg((200, 120)))

    assert [(t.width, t.height) for t in made] == [(200, 120), (200, 120)]


def test_image_between_the_sizes_is_reduced_only_for_the_smaller(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.jpeg((640, 480)))

    assert [(t.width, t.height) for t in made] == [(256, 192), (640, 480)]


def test_wide_panorama_keeps_its_shape(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.jpeg((4000, 1000)))

    assert [(t.width, t.height) for t in made] == [(256, 64), (1024, 256)]


def test_recorded_size_is_the_size_of_the_encoded_thumbnail(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.jpeg((1500, 1000)))

    for thumbnail in made:
        assert decoded(thumbnail).size == (thumbnail.width, thumbnail.height)


def test_sizes_are_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        thumbnails_of(tmp_path, images.jpeg(), sizes=[])


# Output


def test_thumbnails_are_webp(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.jpeg((1500, 1000)))

    for thumbnail in made:
        assert thumbnail.data[:4] == b"RIFF" and thumbnail.data[8:12] == b"WEBP"
        assert decoded(thumbnail).format == "WEBP"


def test_exif_and_gps_position_are_not_copied_to_thumbnails(tmp_path: Path) -> None:
    original = images.jpeg()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the GPS is there

    _, made = thumbnails_of(tmp_path, original)

    for thumbnail in made:
        image = decoded(thumbnail)
        assert "exif" not in image.info and "xmp" not in image.info
        assert not image.getexif()
        assert b"Testcam" not in thumbnail.data


@pytest.mark.parametrize(
    ("format", "content_type"),
    [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("AVIF", "image/avif"), ("PNG", "image/png")],
)
def test_exif_rotated_photo_comes_out_upright(
    tmp_path: Path, format: str, content_type: str
) -> None:
    info, made = thumbnails_of(tmp_path, images.rotated_photo(format), content_type)

    # Stored 400×300 and sideways; shown 300×400 with red above blue.
    assert (info.width, info.height) == (300, 400)
    assert [(t.width, t.height) for t in made] == [(192, 256), (300, 400)]
    for thumbnail in made:
        image = decoded(thumbnail).convert("RGB")
        assert close_to(pixel(image, (image.width // 2, 5)), images.RED)
        assert close_to(pixel(image, (image.width // 2, image.height - 5)), images.BLUE)


# Colour modes


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.cmyk_jpeg())

    image = decoded(made[0])
    assert image.mode == "RGB"
    assert close_to(pixel(image, (10, 10)), images.RED)


def test_cmyk_colour_profile_is_not_attached_to_rgb_thumbnails(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.cmyk_jpeg(icc_profile=images.cmyk_profile()))

    assert "icc_profile" not in decoded(made[0]).info


def test_rgb_colour_profile_is_kept(tmp_path: Path) -> None:
    profile = images.srgb_profile()

    _, made = thumbnails_of(tmp_path, images.jpeg(icc_profile=profile))

    assert decoded(made[0]).info["icc_profile"] == profile


def test_rgba_png_keeps_its_transparency(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.png_rgba(), "image/png")

    image = decoded(made[0])
    assert image.mode == "RGBA"
    assert close_to(pixel(image, (10, 10)), (*images.RED, 255))
    assert pixel(image, (image.width - 10, 10))[3] == 0


def test_palette_png_with_transparent_index_becomes_rgba(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.png_palette_transparent(), "image/png")

    image = decoded(made[0])
    assert image.mode == "RGBA"
    assert close_to(pixel(image, (10, 10)), (*images.RED, 255))
    assert pixel(image, (image.width - 10, 10))[3] == 0


@pytest.mark.parametrize(("mode", "opaque"), [("L", (255, 255, 255)), ("RGB", images.RED)])
def test_png_with_a_transparent_colour_keeps_its_transparency(
    tmp_path: Path, mode: str, opaque: tuple[int, int, int]
) -> None:
    _, made = thumbnails_of(tmp_path, images.png_transparent_colour(mode), "image/png")

    image = decoded(made[0])
    assert image.mode == "RGBA"
    assert close_to(pixel(image, (10, 10)), (*opaque, 255))
    assert pixel(image, (image.width - 10, 10))[3] == 0


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    _, made = thumbnails_of(tmp_path, images.png_grey16(), "image/png")

    image = decoded(made[0])
    assert image.mode == "RGB"
    assert close_to(pixel(image, (10, 10)), (128, 128, 128), tolerance=2)
    assert close_to(pixel(image, (image.width - 10, 10)), (255, 255, 255), tolerance=2)


def test_16_bit_greyscale_with_a_transparent_colour_keeps_its_transparency(
    tmp_path: Path,
) -> None:
    _, made = thumbnails_of(tmp_path, images.png_grey16(transparent_white=True), "image/png")

    image = decoded(made[0])
    assert image.mode == "RGBA"
    assert close_to(pixel(image, (10, 10)), (128, 128, 128, 255), tolerance=2)
    assert pixel(image, (image.width - 10, 10))[3] == 0


# Formats


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(images.animated_gif, "image/gif"), (images.animated_png, "image/png")],
    ids=["gif", "apng"],
)
def test_animation_gives_its_first_frame(
    tmp_path: Path, data: Callable[..., bytes], content_type: str
) -> None:
    _, made = thumbnails_of(tmp_path, data(), content_type)

    for thumbnail in made:
        image = decoded(thumbnail).convert("RGB")
        assert close_to(pixel(image, (image.width // 2, image.height // 2)), images.RED)


@pytest.mark.parametrize(
    ("data", "content_type", "format"),
    [
        (images.heic, "image/heic", "HEIF"),
        (images.heic, "image/heif", "HEIF"),
        (images.avif, "image/avif", "AVIF"),
        (images.webp, "image/webp", "WEBP"),
    ],
    ids=["heic", "heic-declared-heif", "avif", "webp"],
)
def test_modern_formats_are_decoded(
    tmp_path: Path, data: Callable[..., bytes], content_type: str, format: str
) -> None:
    info, made = thumbnails_of(tmp_path, data((640, 480)), content_type)

    assert info == ImageInfo(format=format, width=640, height=480)
    assert [(t.width, t.height) for t in made] == [(256, 192), (640, 480)]
    # The same picture as the source: the yellow disc in the middle.
    middle = pixel(decoded(made[0]).convert("RGB"), (128, 96))
    assert close_to(middle, (250, 200, 40), tolerance=20)


def test_heic_from_a_camera_with_the_10_bit_brand_is_decoded(tmp_path: Path) -> None:
    data = images.with_major_brand(images.heic(), b"heix")

    info, _ = thumbnails_of(tmp_path, data, "image/heic")

    assert info.format == "HEIF"


# Refusals


def test_decompression_bomb_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    # Only a header and no pixel data: decoding would fail as truncated, so
    # the size message shows the refusal came first.
    bomb = images.png_bomb(8000, 8000, pixel_data=False)

    with pytest.raises(InvalidImage) as refused:
        thumbnails_of(tmp_path, bomb, "image/png")

    assert str(refused.value) == "The image is 8000×8000 pixels; the limit is 50 megapixels."


def test_huge_decompression_bomb_is_refused_as_too_large(tmp_path: Path) -> None:
    # 20000×20000 (400 megapixels) in about 50 kB: beyond Pillow's own hard
    # cap, which refuses it while reading the header.
    bomb = images.png_bomb(20_000, 20_000)
    assert len(bomb) < 100_000

    with pytest.raises(InvalidImage) as refused:
        thumbnails_of(tmp_path, bomb, "image/png")

    assert str(refused.value) == "The image is too large; the limit is 50 megapixels."


def test_image_over_the_configured_pixel_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage) as refused:
        thumbnails_of(tmp_path, images.jpeg((640, 480)), max_pixels=300_000)

    assert str(refused.value) == "The image is 640×480 pixels; the limit is 0.3 megapixels."


def test_truncated_jpeg_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=r"^The JPEG image is truncated or corrupt\.$"):
        thumbnails_of(tmp_path, images.truncated_jpeg())


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (images.png_rgba, "image/png"),
        (images.heic, "image/heic"),
        (images.avif, "image/avif"),
        (images.webp, "image/webp"),
    ],
    ids=["png", "heic", "avif", "webp"],
)
def test_truncated_image_is_invalid(
    tmp_path: Path, data: Callable[..., bytes], content_type: str
) -> None:
    whole = data()

    with pytest.raises(InvalidImage):
        thumbnails_of(tmp_path, whole[: len(whole) // 2], content_type)


def test_html_named_as_jpeg_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=r"^The file is not a readable JPEG image\.$"):
        thumbnails_of(tmp_path, images.html_as_jpeg())


def test_image_of_another_type_than_expected_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=r"^The file is not a JPEG image\.$"):
        thumbnails_of(tmp_path, images.png_rgba(), "image/jpeg")


def test_pdf_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage):
        thumbnails_of(tmp_path, images.pdf(), "image/png")


def test_a_pdf_gets_a_preview_of_its_first_page(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(images.pdf())  # a 200×100 pt page

    previews = make_pdf_preview(path, [256, 1024])

    assert [(t.name, t.width, t.height) for t in previews] == [
        ("256", 256, 128),
        ("1024", 800, 400),  # rendered at 4× at most, never upscaled after
    ]
    page = Image.open(io.BytesIO(previews[0].data))
    assert page.format == "WEBP"
    assert page.convert("RGB").getpixel((5, 5)) == (255, 255, 255)  # white paper


def test_a_pdf_that_cannot_be_rendered_gets_no_preview(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\nthis is not really a PDF\n%%EOF\n")
    assert make_pdf_preview(path, [256]) == []

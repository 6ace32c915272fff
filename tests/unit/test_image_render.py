"""Rendering and the pixel-count check, on real images (Pillow in this process)."""

from __future__ import annotations

import io

from PIL import Image

from streams.jobs import image_samples as samples
from streams.jobs.image_render import RenderOptions, inspect, metadata_left, render
from streams.jobs.image_screen import Reason, ScreenLimits, Upload


def test_the_sample_photo_really_carries_gps_icc_xmp_and_a_comment() -> None:
    left = metadata_left(samples.photo_jpeg(300, 200))
    assert {"exif", "exif tags", "icc_profile", "xmp", "comment"} <= set(left)


def test_render_applies_orientation_and_strips_every_kind_of_metadata() -> None:
    data = samples.photo_jpeg(1200, 800, orientation=6)  # 6: rotate 90 degrees clockwise
    inspected = inspect(data, Upload("p.jpg", "image/jpeg"), ScreenLimits())
    assert inspected.finding is None
    assert (inspected.width, inspected.height) == (800, 1200)
    out = render(data, RenderOptions())
    assert [(r.size, r.format) for r in out] == [
        (size, fmt) for size in ("large", "medium", "thumbnail") for fmt in ("jpeg", "webp")
    ]
    sizes = {r.size: (r.width, r.height) for r in out}
    assert sizes == {"large": (800, 1200), "medium": (533, 800), "thumbnail": (133, 200)}
    for r in out:
        assert metadata_left(r.data) == [], r.name
        with Image.open(io.BytesIO(r.data)) as back:
            assert back.format == r.format.upper()
            assert back.size == (r.width, r.height)
            # the red marker was the top-left corner; rotated clockwise it is top-right
            red, green, _ = back.convert("RGB").getpixel((back.width - 2, 1))  # type: ignore[misc]
            assert red > 150 and green < 90, (r.name, red, green)


def test_quality_settings_change_the_output() -> None:
    data = samples.photo_jpeg(600, 400, orientation=1)
    low = render(data, RenderOptions(sizes=(("m", 400),), jpeg_quality=20, webp_quality=20))
    high = render(data, RenderOptions(sizes=(("m", 400),), jpeg_quality=95, webp_quality=95))
    assert all(len(lo.data) < len(hi.data) for lo, hi in zip(low, high, strict=True))


def test_transparent_png_becomes_jpeg_on_white_and_webp_with_alpha() -> None:
    out = render(samples.png_image(64, 64), RenderOptions(sizes=(("t", 32),)))
    modes = {}
    for r in out:
        with Image.open(io.BytesIO(r.data)) as back:
            modes[r.format] = back.mode
    assert modes == {"jpeg": "RGB", "webp": "RGBA"}


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = samples.png_bomb()
    assert len(bomb) < 200_000
    inspected = inspect(bomb, Upload("b.png", "image/png"), ScreenLimits())
    assert inspected.finding is not None
    assert inspected.finding.reason == Reason.DECOMPRESSION_BOMB


def test_the_pixel_limit_is_a_setting() -> None:
    data = samples.png_image(100, 100)
    small = inspect(data, Upload("a.png", "image/png"), ScreenLimits(max_pixels=9_999))
    ok = inspect(data, Upload("a.png", "image/png"), ScreenLimits(max_pixels=10_000))
    assert small.finding is not None and small.finding.reason == Reason.DECOMPRESSION_BOMB
    assert ok.finding is None


def test_a_truncated_header_is_undecodable() -> None:
    data = samples.png_image(10, 10)[:20]
    inspected = inspect(data, Upload("a.png", "image/png"), ScreenLimits())
    assert inspected.finding is not None and inspected.finding.reason == Reason.UNDECODABLE

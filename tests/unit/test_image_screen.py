"""Screening verdicts on real sample files (pure: no decoder, no I/O)."""

from __future__ import annotations

import hashlib

import pytest

from streams.jobs import image_samples as samples
from streams.jobs.image_screen import Reason, ScreenLimits, Upload, screen, sniff

LIMITS = ScreenLimits()
JPEG = samples.photo_jpeg(320, 240)


def verdict(data: bytes, filename: str = "cat.jpg", content_type: str = "image/jpeg", **kw: object):
    return screen(data, Upload(filename, content_type, **kw), LIMITS)  # type: ignore[arg-type]


def test_a_real_jpeg_passes_with_its_sha256() -> None:
    result = verdict(JPEG, size_bytes=len(JPEG), sha256=hashlib.sha256(JPEG).hexdigest())
    assert result.finding is None
    assert result.format is not None and result.format.name == "jpeg"
    assert result.sha256 == hashlib.sha256(JPEG).hexdigest()


@pytest.mark.parametrize(
    ("data", "filename", "content_type", "reason"),
    [
        (samples.pe_executable(), "cat.jpg", "image/jpeg", Reason.EXECUTABLE),
        (b"\x7fELF\x02\x01\x01" + b"\0" * 64, "cat.png", "image/png", Reason.EXECUTABLE),
        (b"\xcf\xfa\xed\xfe" + b"\0" * 64, "cat.png", "image/png", Reason.EXECUTABLE),
        (b"#!/bin/sh\nrm -rf /\n", "cat.gif", "image/gif", Reason.EXECUTABLE),
        (samples.html_page(), "cat.png", "image/png", Reason.SCRIPT),
        (b'<?xml version="1.0"?>\n<svg onload="x()">', "cat.webp", "image/webp", Reason.SCRIPT),
        (JPEG + b"<script>alert(1)</script>", "cat.jpg", "image/jpeg", Reason.SCRIPT),
        (JPEG + b"<?php system($_GET['c']); ?>", "cat.jpg", "image/jpeg", Reason.SCRIPT),
        (JPEG, "cat.php.jpg", "image/jpeg", Reason.BLOCKED_EXTENSION),
        (JPEG, "cat.jpg.EXE", "image/jpeg", Reason.BLOCKED_EXTENSION),
        (JPEG, "cat.svg", "image/svg+xml", Reason.BLOCKED_EXTENSION),
        (JPEG, "cat.png", "image/png", Reason.TYPE_MISMATCH),
        (JPEG, "cat.jpg", "image/png", Reason.TYPE_MISMATCH),
        (JPEG, "cat", "image/jpeg", Reason.TYPE_MISMATCH),
        (samples.png_image(8, 8), "cat.jpg", "image/jpeg", Reason.TYPE_MISMATCH),
        (b"BM" + b"\0" * 100, "cat.bmp", "image/bmp", Reason.UNSUPPORTED_TYPE),
        (b"PK\x03\x04" + b"\0" * 100, "cat.jpg", "image/jpeg", Reason.UNSUPPORTED_TYPE),
    ],
)
def test_hostile_or_mislabelled_uploads_are_found(
    data: bytes, filename: str, content_type: str, reason: Reason
) -> None:
    result = verdict(data, filename, content_type)
    assert result.finding is not None, filename
    assert result.finding.reason == reason, result.finding


def test_too_large_is_found_before_reading_the_content() -> None:
    limits = ScreenLimits(max_bytes=1000)
    result = screen(b"MZ" + b"\0" * 1000, Upload("cat.exe", "image/jpeg"), limits)
    assert result.finding is not None and result.finding.reason == Reason.TOO_LARGE
    assert result.sha256 is None  # a truncated read has no meaningful digest


def test_declared_checksum_and_size_must_match() -> None:
    bad_sum = verdict(JPEG, sha256="0" * 64)
    bad_size = verdict(JPEG, size_bytes=len(JPEG) + 1)
    assert bad_sum.finding is not None and bad_sum.finding.reason == Reason.CHECKSUM_MISMATCH
    assert bad_size.finding is not None and bad_size.finding.reason == Reason.SIZE_MISMATCH


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert verdict(JPEG, "CAT.JPEG", "Image/JPEG; q=0.9").finding is None


def test_sniff_knows_the_four_formats() -> None:
    webp = b"RIFF\x10\0\0\0WEBPVP8 "
    found = [sniff(d) for d in (JPEG, samples.png_image(4, 4), b"GIF89a....", webp)]
    assert [f.name if f else None for f in found] == ["jpeg", "png", "gif", "webp"]
    assert sniff(b"<html>") is None


def test_markup_inside_image_data_past_the_head_is_not_a_finding() -> None:
    # short tags only count in the first KiB: compressed data may contain "<svg " by chance
    data = JPEG[:2000] + b"<svg " + JPEG[2000:]
    assert verdict(data).finding is None

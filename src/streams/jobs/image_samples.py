"""Sample uploads for tests, benchmarks and the demo: real images and real hostile files.

``photo_jpeg`` is a camera-like JPEG: noise (so it compresses like a photo), an EXIF block
with a make, an orientation and GPS coordinates, an ICC profile, XMP and a comment: every
kind of metadata the job must strip. ``png_bomb`` is a real decompression bomb (a 1-bit
PNG of 30,000 x 30,000 pixels in about 100 kB); ``pe_executable`` starts like a Windows
program; ``html_page`` is a web page with a script.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image, ImageCms

GPS_LATITUDE = (48.0, 51.0, 29.0)


def photo_jpeg(width: int = 1200, height: int = 800, *, orientation: int = 6) -> bytes:
    """A noisy RGB JPEG carrying EXIF (with GPS and ``orientation``), ICC, XMP, a comment."""
    im = Image.merge(
        "RGB",
        [Image.effect_noise((width, height), sigma).convert("L") for sigma in (30, 50, 70)],
    )
    im.paste((200, 30, 30), (0, 0, width // 4, height // 4))  # a marker: the top-left corner
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "StreamsCam"
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    im.save(
        buf,
        "JPEG",
        quality=90,
        exif=exif,
        icc_profile=icc,
        comment=b"shot at home",
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">author: ada</x:xmpmeta>',
    )
    return buf.getvalue()


def png_image(width: int = 640, height: int = 480) -> bytes:
    """A plain RGBA PNG with transparency."""
    im = Image.new("RGBA", (width, height), (20, 120, 200, 128))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit grayscale PNG of ``side`` x ``side`` zero pixels (tiny compressed)."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def pe_executable() -> bytes:
    """The first bytes of a Windows PE program (DOS stub and PE header)."""
    stub = b"MZ" + b"\x90\x00\x03\x00" + b"\x00" * 54 + struct.pack("<I", 0x80)
    stub += b"This program cannot be run in DOS mode.\r\r\n$".ljust(0x80 - len(stub), b"\0")
    return stub + b"PE\0\0" + b"\x4c\x01" + b"\0" * 4000


def html_page() -> bytes:
    """A web page with a script, as a browser would render it."""
    return b"<!DOCTYPE html>\n<html><body><script>fetch('/steal?c='+document.cookie)</script>"

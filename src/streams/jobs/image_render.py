"""The CPU-heavy half of the image job, run in worker processes (pure functions of bytes).

``inspect`` screens the bytes (``image_screen``) and then reads only the image header to
refuse decompression bombs: the pixel count (width x height, read before any pixel is
decoded) must stay within ``max_pixels``; Pillow's own bomb guard is set to the same limit.

``render`` decodes the first frame, applies the EXIF orientation, converts an embedded ICC
profile to sRGB, and writes every size in every format from pixels alone: no EXIF, XMP,
ICC profile or comment is carried over (``info`` is emptied and nothing is passed to the
encoders). ``metadata_left`` re-reads an output and lists what is still there; ``render``
refuses to return an output for which it is not empty.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from streams.jobs.image_screen import (
    Finding,
    Reason,
    Screened,
    ScreenLimits,
    Upload,
    screen,
)

MEDIA_TYPES = {"jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"jpeg": "jpg", "webp": "webp"}
_PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
_ORIENTATION_TAG = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)  # orientations that swap width and height
_METADATA_KEYS = ("exif", "xmp", "XML:com.adobe.xmp", "icc_profile", "comment", "photoshop")


@dataclass(frozen=True)
class RenderOptions:
    """Sizes as (name, longest edge in pixels), largest first; output formats; qualities."""

    sizes: tuple[tuple[str, int], ...] = (("large", 1600), ("medium", 800), ("thumbnail", 200))
    formats: tuple[str, ...] = ("jpeg", "webp")
    jpeg_quality: int = 85
    webp_quality: int = 80


@dataclass(frozen=True)
class Rendition:
    size: str
    format: str
    width: int
    height: int
    data: bytes

    @property
    def name(self) -> str:
        """``thumbnail.webp``: the rendition's file name."""
        return f"{self.size}.{EXTENSIONS[self.format]}"


@dataclass(frozen=True)
class Inspected:
    """Screening verdict plus the image's size in pixels once its EXIF orientation is
    applied (0 x 0 when the header was not read)."""

    screened: Screened
    width: int = 0
    height: int = 0

    @property
    def finding(self) -> Finding | None:
        return self.screened.finding


def inspect(data: bytes, upload: Upload, limits: ScreenLimits) -> Inspected:
    """Screen ``data`` and check its pixel count from the header (no decoding)."""
    screened = screen(data, upload, limits)
    if screened.finding is not None or screened.format is None:
        return Inspected(screened)
    Image.MAX_IMAGE_PIXELS = limits.max_pixels

    def found(reason: Reason, detail: str) -> Inspected:
        return Inspected(Screened(screened.sha256, screened.size_bytes, screened.format,
                                  Finding(reason, detail)))  # fmt: skip

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[screened.format.name.upper()]) as im:
                width, height = im.size
                if im.getexif().get(_ORIENTATION_TAG, 1) in _QUARTER_TURNS:
                    width, height = height, width
    except Image.DecompressionBombError as exc:
        return found(Reason.DECOMPRESSION_BOMB, str(exc))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return found(Reason.UNDECODABLE, f"the image header cannot be read ({exc})")
    if width * height > limits.max_pixels:
        detail = f"{width}x{height} = {width * height} pixels, more than {limits.max_pixels}"
        return found(Reason.DECOMPRESSION_BOMB, detail)
    return Inspected(screened, width, height)


def _to_srgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        target = ImageCms.createProfile("sRGB")
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(im, source, target, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # an unreadable profile is dropped below, like every other metadata
    return converted if converted is not None else im


def _pixels(data: bytes, longest_edge: int) -> Image.Image:
    """The first frame, oriented, in sRGB, as RGB or RGBA, with empty ``info``."""
    with Image.open(io.BytesIO(data)) as src:
        if src.format == "JPEG":
            src.draft("RGB", (longest_edge, longest_edge))  # decode at a reduced scale
        oriented = ImageOps.exif_transpose(src)
        oriented = _to_srgb(oriented)
        has_alpha = oriented.mode in ("RGBA", "LA", "PA") or "transparency" in oriented.info
        out = oriented.convert("RGBA" if has_alpha else "RGB")
    out.info = {}
    return out


def _encode(im: Image.Image, fmt: str, options: RenderOptions) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        if im.mode == "RGBA":
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
            im = flat
        im.save(buf, "JPEG", quality=options.jpeg_quality, optimize=True, progressive=True)
    else:
        im.save(buf, _PIL_FORMATS[fmt], quality=options.webp_quality, method=4)
    return buf.getvalue()


def metadata_left(data: bytes) -> list[str]:
    """What metadata an encoded image still carries (EXIF tags, XMP, ICC, comments)."""
    with Image.open(io.BytesIO(data)) as im:
        left = [key for key in _METADATA_KEYS if im.info.get(key)]
        if len(im.getexif()):
            left.append("exif tags")
        if im.format == "JPEG":
            app = getattr(im, "applist", [])
            left += [marker for marker, _ in app if marker not in ("APP0",)]
    return sorted(set(left))


def render(data: bytes, options: RenderOptions) -> list[Rendition]:
    """Every size in every format; raises RuntimeError if an output kept metadata."""
    largest = max(edge for _, edge in options.sizes)
    current = _pixels(data, largest)
    out: list[Rendition] = []
    for size, edge in sorted(options.sizes, key=lambda s: -s[1]):
        current = current.copy()
        current.thumbnail((edge, edge), Image.Resampling.LANCZOS, reducing_gap=3.0)
        current.info = {}
        for fmt in options.formats:
            encoded = _encode(current, fmt, options)
            left = metadata_left(encoded)
            if left:
                raise RuntimeError(f"{size}.{fmt} still carries metadata: {', '.join(left)}")
            out.append(Rendition(size, fmt, current.width, current.height, encoded))
    return out

"""Screening an upload before any decoder sees it (pure: bytes and declared metadata in).

``screen`` runs the cheap checks in a fixed order and returns the first ``Finding``:

1. ``too_large``: more than ``max_bytes`` (5 MB by default; the caller reads at most one
   byte more, see ``BlobStore.get``);
2. ``blocked_extension``: any dotted part of the file name is blocked (``cat.php.jpg``,
   ``cat.jpg.exe``);
3. ``executable``: the bytes start like a PE (``MZ``), ELF, Mach-O (thin or fat) binary or a
   script with a shebang (``#!``);
4. ``script``: markup or script in the file: an HTML/SVG/XML-script tag in its first KiB
   (an HTML page renamed ``.png``), ``<script``, ``<?php``, ``<iframe`` or ``javascript:``
   anywhere (a polyglot with a payload appended). Long tokens only past the first KiB, so
   compressed image data does not match by chance;
5. ``unsupported_type``: the magic bytes are none of JPEG, PNG, GIF, WebP;
6. ``type_mismatch``: the sniffed format disagrees with the declared content type or with
   the extension;
7. ``checksum_mismatch`` / ``size_mismatch``: the bytes differ from what the uploader
   declared (SHA-256, size).

Pixel-count limits (decompression bombs) need the image header and live in
``image_render``; ClamAV in ``image_clamd``. The SHA-256 of the bytes is always computed.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
HEAD_BYTES = 1024

_BLOCKED = "exe dll com scr bat cmd msi ps1 vbs vbe js jse mjs wsf hta jar sh bash zsh php"
DEFAULT_BLOCKED_EXTENSIONS = frozenset(
    f"{_BLOCKED} phtml php5 pl py rb cgi asp aspx jsp htm html xhtml shtml svg svgz swf".split()
)


class Reason(enum.StrEnum):
    TOO_LARGE = "too_large"
    BLOCKED_EXTENSION = "blocked_extension"
    EXECUTABLE = "executable"
    SCRIPT = "script"
    UNSUPPORTED_TYPE = "unsupported_type"
    TYPE_MISMATCH = "type_mismatch"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    DECOMPRESSION_BOMB = "decompression_bomb"
    UNDECODABLE = "undecodable"
    MALWARE = "malware"


@dataclass(frozen=True)
class Finding:
    """Why an upload is quarantined: a reason code and a human sentence."""

    reason: Reason
    detail: str


@dataclass(frozen=True)
class ImageFormat:
    name: str
    media_types: frozenset[str]
    extensions: frozenset[str]


FORMATS: dict[str, ImageFormat] = {
    f.name: f
    for f in (
        ImageFormat("jpeg", frozenset({"image/jpeg", "image/jpg", "image/pjpeg"}),
                    frozenset({"jpg", "jpeg", "jpe", "jfif"})),
        ImageFormat("png", frozenset({"image/png"}), frozenset({"png"})),
        ImageFormat("gif", frozenset({"image/gif"}), frozenset({"gif"})),
        ImageFormat("webp", frozenset({"image/webp"}), frozenset({"webp"})),
    )
}  # fmt: skip

_EXECUTABLE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows PE executable (MZ)"),
    (b"\x7fELF", "an ELF executable"),
    (b"\xfe\xed\xfa\xce", "a Mach-O executable"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal binary"),
    (b"#!", "a script with a shebang line"),
)
_HEAD_MARKUP = re.compile(
    rb"<\s*(?:!doctype\s+html|html|head|body|svg|script|iframe|object|embed)[\s>/]",
    re.IGNORECASE,
)
_ANYWHERE = re.compile(rb"<script[\s>/]|<\?php|<iframe[\s>/]|javascript\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class ScreenLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    blocked_extensions: frozenset[str] = field(default=DEFAULT_BLOCKED_EXTENSIONS)


@dataclass(frozen=True)
class Upload:
    """What the uploader declared about the bytes."""

    filename: str
    content_type: str
    size_bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Screened:
    """The screening verdict: the bytes' SHA-256 (None when too large to read), the sniffed
    format, or a finding."""

    sha256: str | None
    size_bytes: int
    format: ImageFormat | None
    finding: Finding | None


def sniff(data: bytes) -> ImageFormat | None:
    """The image format of ``data`` by its magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return FORMATS["jpeg"]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return FORMATS["png"]
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return FORMATS["gif"]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return FORMATS["webp"]
    return None


def extensions(filename: str) -> list[str]:
    """Every dotted part after the first, lower-cased: ``a.PHP.jpg`` -> ``["php", "jpg"]``."""
    return [part.lower() for part in filename.split(".")[1:] if part]


def media_type(content_type: str) -> str:
    """``image/JPEG; q=1`` -> ``image/jpeg``."""
    return content_type.split(";", 1)[0].strip().lower()


def _signature(data: bytes) -> Finding | None:
    for magic, what in _EXECUTABLE_MAGIC:
        if data.startswith(magic):
            return Finding(Reason.EXECUTABLE, f"the content is {what}")
    head = _HEAD_MARKUP.search(data, 0, HEAD_BYTES)
    found = head or _ANYWHERE.search(data)
    if found:
        token = found.group(0).decode("ascii", "replace").strip()
        return Finding(Reason.SCRIPT, f"markup or script in the content ({token!r})")
    return None


def _type_check(data: bytes, upload: Upload) -> tuple[ImageFormat | None, Finding | None]:
    fmt = sniff(data)
    if fmt is None:
        return None, Finding(Reason.UNSUPPORTED_TYPE, "the content is not JPEG, PNG, GIF or WebP")
    declared = media_type(upload.content_type)
    if declared not in fmt.media_types:
        detail = f"the content is {fmt.name}, declared as {declared}"
        return fmt, Finding(Reason.TYPE_MISMATCH, detail)
    ext = (extensions(upload.filename) or [""])[-1]
    if ext not in fmt.extensions:
        detail = f"the content is {fmt.name}, the file name ends in .{ext or '(none)'}"
        return fmt, Finding(Reason.TYPE_MISMATCH, detail)
    return fmt, None


def _declared_check(data: bytes, digest: str, upload: Upload) -> Finding | None:
    if upload.sha256 is not None and upload.sha256.lower() != digest:
        return Finding(Reason.CHECKSUM_MISMATCH, "SHA-256 differs from the declared one")
    if upload.size_bytes is not None and upload.size_bytes != len(data):
        detail = f"{len(data)} bytes, declared {upload.size_bytes}"
        return Finding(Reason.SIZE_MISMATCH, detail)
    return None


def screen(data: bytes, upload: Upload, limits: ScreenLimits) -> Screened:
    """Screen ``data`` (see the module docstring for the order of the checks)."""
    if len(data) > limits.max_bytes:
        too_large = Finding(Reason.TOO_LARGE, f"more than {limits.max_bytes} bytes")
        return Screened(None, len(data), None, too_large)
    digest = hashlib.sha256(data).hexdigest()

    def verdict(fmt: ImageFormat | None, finding: Finding | None) -> Screened:
        return Screened(digest, len(data), fmt, finding)

    blocked = [e for e in extensions(upload.filename) if e in limits.blocked_extensions]
    if blocked:
        detail = f"file name has the blocked extension .{blocked[0]}"
        return verdict(None, Finding(Reason.BLOCKED_EXTENSION, detail))
    finding = _signature(data)
    if finding is not None:
        return verdict(None, finding)
    fmt, finding = _type_check(data, upload)
    if finding is None:
        finding = _declared_check(data, digest, upload)
    return verdict(fmt, finding)

"""Blobs: where jobs read uploads and write what they produce, behind a narrow protocol.

Events carry references to blobs (a URI), never the bytes: Kafka records stay small and the
bytes are written once. A ``BlobStore`` maps keys (``uploads/img-1``, ``images/img-1/
thumbnail.webp``) to bytes and to URIs that events can carry. ``FilesystemBlobStore`` keeps
them as files under a root directory (default ``$STREAMS_HOME/blobs``); an object store
(S3, GCS) implements the same five methods.

Keys are relative POSIX paths of ``[A-Za-z0-9._-]`` segments; ``..`` and absolute paths are
refused (``BlobKeyError``), so a key or URI taken from an event cannot escape the root.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
BLOB_SCHEME = "blob"


class BlobKeyError(ValueError):
    """A key or URI that does not name a blob of this store."""


class BlobNotFound(LookupError):
    """No blob under that key."""


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its key, a URI for events, its size in bytes."""

    key: str
    uri: str
    size_bytes: int


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key; raises BlobKeyError otherwise."""
    parts = key.split("/")
    if not key or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise BlobKeyError(f"invalid blob key {key!r}: relative path of [A-Za-z0-9._-] segments")
    return key


class BlobStore(Protocol):
    """Keys to bytes. Methods are blocking: call them from a thread (``asyncio.to_thread``)."""

    def key_for_uri(self, uri: str) -> str:
        """The key a URI of this store names; raises BlobKeyError for a foreign URI."""
        ...

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The blob's bytes (at most ``max_bytes + 1`` read, so a caller sees "too large"
        without reading everything); raises BlobNotFound."""
        ...

    def put(self, key: str, data: bytes) -> BlobRef:
        """Store ``data`` under ``key`` atomically (a reader sees the old or the new bytes)."""
        ...

    def move(self, key: str, new_key: str) -> BlobRef:
        """Rename a blob (quarantine); raises BlobNotFound when ``key`` is absent."""
        ...

    def exists(self, key: str) -> bool: ...


class FilesystemBlobStore:
    """Blobs as files under ``root``; URIs are ``file://`` URLs of those files.

    ``key_for_uri`` also accepts ``blob:<key>`` (a store-neutral reference).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def key_for_uri(self, uri: str) -> str:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme == BLOB_SCHEME:
            return check_key(urllib.parse.unquote(parts.path))
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise BlobKeyError(f"{uri!r} is not a file:// or blob: URI of this store")
        path = Path(urllib.parse.unquote(parts.path))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            raise BlobKeyError(f"{uri!r} is outside the blob root {self.root}") from None
        return check_key(relative.as_posix())

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        try:
            with self.path(key).open("rb") as f:
                return f.read() if max_bytes is None else f.read(max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def put(self, key: str, data: bytes) -> BlobRef:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return BlobRef(key, target.as_uri(), len(data))

    def move(self, key: str, new_key: str) -> BlobRef:
        source, target = self.path(key), self.path(new_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return BlobRef(new_key, target.as_uri(), target.stat().st_size)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

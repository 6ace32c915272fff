"""Archive files: rows as JSON lines, written durably, verified before rows are touched.

``write_verified`` writes the batch to a temporary file, fsyncs it, renames it into place
(with a ``.sha256`` sidecar), then reads it back and checks the digest, the row count and
the keys. Only after that returns may the caller mark or delete the rows; any mismatch
raises ``ArchiveError`` (retryable: nothing was marked). Writing the same batch again (a
redelivery after a crash) overwrites the same file with the same content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.errors import Retryable


class ArchiveError(Retryable):
    """The archive file could not be written or did not verify."""


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part)[:150]


def archive_path(root: Path, policy: str, run_id: str, rule: str, batch: int) -> Path:
    return root / _safe(policy) / _safe(run_id) / f"{_safe(rule)}-{batch:06d}.jsonl"


def encode_rows(rows: Sequence[Mapping[str, Any]]) -> bytes:
    lines = [json.dumps(dict(r), sort_keys=True, default=str) for r in rows]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def write_verified(path: Path, rows: Sequence[Mapping[str, Any]], key: str) -> str:
    """Write ``rows`` to ``path`` and verify it; returns the file's SHA-256 (hex)."""
    data = encode_rows(rows)
    digest = hashlib.sha256(data).hexdigest()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        path.with_suffix(path.suffix + ".sha256").write_text(f"{digest}  {path.name}\n")
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ArchiveError(f"cannot write archive {path}: {exc}") from exc
    verify(path, digest, [r[key] for r in rows], key)
    return digest


def verify(path: Path, digest: str, keys: Sequence[Any], key: str) -> None:
    """Raise ArchiveError unless ``path`` holds exactly ``keys`` with SHA-256 ``digest``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(f"cannot read back archive {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ArchiveError(f"archive {path}: SHA-256 {actual} != written {digest}")
    found = [json.loads(line)[key] for line in data.decode().splitlines() if line]
    if found != list(keys):
        raise ArchiveError(f"archive {path}: holds {len(found)} rows, expected {len(keys)}")

"""Deleting many keys from faust's memory store, and giving their memory back.

faust's memory ``Store`` keeps, beside its ``data`` dict, a private map from every key it
recovered from the changelog to that key's partition (``_key_partition``, used after a
recovery to drop the keys of partitions that moved away). Deleting through the store's
mapping API leaves that entry, and with it the key object, alive; and a Python dict never
shrinks when entries are deleted from it. The ledger deletes hundreds of thousands of
recovered keys when it merges tiny done-marker batches, so it forgets them in both maps and
then rebuilds the two dicts at their new size. Any other store (a plain dict in unit tests)
is only popped from.

Even then glibc keeps most of the freed heap (half a million small objects freed in the middle
of it: ~40 MB in a trial with 1M keys recovered in 2-hash batches), so ``shrink`` ends with
``malloc_trim(0)``, which hands free pages back to the system (a no-op without glibc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any


def forget_keys(store: MutableMapping[Any, Any], keys: Iterable[Any]) -> int:
    """Delete ``keys`` from ``store`` and from faust's key-to-partition map; returns how many
    were in the store."""
    partitions: dict[Any, int] | None = getattr(store, "_key_partition", None)
    gone = 0
    for key in keys:
        if store.pop(key, None) is not None:
            gone += 1
        if partitions is not None:
            partitions.pop(key, None)
    return gone


def shrink(store: MutableMapping[Any, Any]) -> None:
    """Rebuild the store's dicts at their current size (after many deletions)."""
    data = getattr(store, "data", None)
    if isinstance(data, dict):
        store.data = dict(data)  # type: ignore[attr-defined]
    partitions = getattr(store, "_key_partition", None)
    if isinstance(partitions, dict):
        store._key_partition = dict(partitions)  # type: ignore[attr-defined]
    release_memory()


def release_memory() -> bool:
    """Ask the C allocator to return free heap pages to the system; False if it cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return trim

"""Deleting many keys from faust's memory store, and giving their memory back.

faust's memory ``Store`` keeps, beside its ``data`` dict, a private map from every key it
recovered from the changelog to that key's partition (``_key_partition``, used after a
recovery to drop the keys of partitions that moved away). Deleting through the store's
mapping API leaves that entry, and with it the key object, alive; and a Python dict never
shrinks when entries are deleted from it. The ledger deletes hundreds of thousands of
recovered keys when it merges tiny done-marker batches, so it forgets them in both maps and
then rebuilds the two dicts at their new size. Any other store (a plain dict in unit tests)
is only popped from.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
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

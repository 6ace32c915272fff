"""faust's read-offset filter, bypassed for our topics.

faust drops fetched records below its per-partition "read offset"; after a seek back that
filter raced with records still in flight and swallowed the re-fetched ones (a partition
stalled). Our own in-sequence admission (``worker/sequencer.py``) drops duplicates, so for
our topics the filter reports "nothing read yet".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, MutableMapping
from typing import Protocol, cast

from streams.worker.tp import TP


class UnfilteredReadOffsets(defaultdict[TP, int | None]):
    """faust's read offsets, reporting "nothing read yet" for the given topics."""

    def __init__(self, topics: Collection[str]) -> None:
        super().__init__(lambda: None)
        self._topics = topics

    def __getitem__(self, tp: TP) -> int | None:
        if tp.topic in self._topics:
            return None
        return super().__getitem__(tp)


class _FilteringConsumer(Protocol):
    _read_offset: MutableMapping[TP, int | None]


def unfilter_read_offsets(consumer: object, topics: Collection[str]) -> None:
    """Bypass ``consumer``'s (faust's) read-offset filter for ``topics``."""
    cast(_FilteringConsumer, consumer)._read_offset = UnfilteredReadOffsets(topics)

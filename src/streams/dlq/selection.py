"""The selected records of a DLQ, streamed: what list, export, stats and the API share.

Yields ``(record, tenant, state)`` one at a time (bounded memory): records marked in the
resolved-state topic are left out unless ``include_resolved``; the tenant is decoded from
the value only when asked for or when the filter needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from streams.dlq.filters import DlqFilter
from streams.dlq.kafka_io import StateStore
from streams.dlq.reader import DlqReader
from streams.dlq.records import DlqRecord
from streams.dlq.replay import source_of
from streams.dlq.tenants import TenantLookup
from streams.settings import Settings

__all__ = ["Selected", "select"]

Selected = tuple[DlqRecord, str | None, str | None]


def select(
    settings: Settings,
    reader: DlqReader,
    store: Any,
    selection: DlqFilter,
    *,
    include_resolved: bool = False,
    want_tenant: bool = False,
    on_read: Callable[[int], None] = lambda n: None,
    hidden: list[int] | None = None,
) -> Iterator[Selected]:
    """Every selected record of ``reader``'s topic; ``on_read(n)`` every 500 read."""
    states = StateStore(settings).load(reader.topic)
    tenants = TenantLookup(store)
    pending = 0
    for record in reader.scan(reader.partitions()):
        pending += 1
        if pending >= 500:
            on_read(pending)
            pending = 0
        state = states.get(source_of(record))
        if state is not None and not include_resolved:
            if hidden is not None:
                hidden[0] += 1
            continue
        tenant = tenants.of(record) if (want_tenant or selection.needs_tenant) else None
        if selection.matches(record, tenant):
            yield record, tenant, state
    on_read(pending)

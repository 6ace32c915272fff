"""The tenant of a DLQ record: ``envelope.tenant_id`` inside its Avro value.

Decoding costs a schema lookup and an Avro read, so callers ask only when a tenant filter
or a tenant statistic needs it. An undecodable value has no tenant (None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.dlq.records import DlqRecord

if TYPE_CHECKING:
    from streams.serde import SchemaStore

__all__ = ["TenantLookup"]


class TenantLookup:
    def __init__(self, store: SchemaStore | None) -> None:
        self.store = store

    def of(self, record: DlqRecord) -> str | None:
        if self.store is None or record.value is None:
            return None
        try:
            _writer, body = self.store.decode(record.value)
        except Exception:  # an undecodable value has no tenant; never break a read
            return None
        envelope: Any = body.get("envelope") if isinstance(body, dict) else None
        tenant = envelope.get("tenant_id") if isinstance(envelope, dict) else None
        return str(tenant) if tenant else None

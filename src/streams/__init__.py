"""streams: a Kafka-native background-job pipeline.

``import streams`` stays cheap: the publisher (and confluent-kafka, pydantic, fastavro
behind it) loads on first use of ``streams.Publisher``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.errors import BatchPublishError
    from streams.publish.outgoing import PublishResult
    from streams.publish.publisher import Publisher

__all__ = ["BatchPublishError", "PublishResult", "Publisher"]

_LAZY = {
    "Publisher": "streams.publish.publisher",
    "PublishResult": "streams.publish.outgoing",
    "BatchPublishError": "streams.errors",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
